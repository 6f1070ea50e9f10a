"""Train an evaluation feature network (MNIST's LeNet, or a ConvFeatureNet for any dataset) and write it.

    python -m tinygen.evaluation.train_feature_net --data-dir ../shared/data/mnist
    python -m tinygen.evaluation.train_feature_net --data emoji
    python -m tinygen.evaluation.train_feature_net --data cifar10 --data-dir ~/cifar10 --out cifar_net.npz

MNIST (the default, --data mnist):

Trains `features.LeNet` with tinygen on the 60,000 training images (seed 0, Adam, batch 64,
lr 1e-3 on a cosine schedule to 0, 6 epochs, each image shifted by up to 2 pixels at random),
measures the accuracy on the 10,000 test images and, if it reaches --min-accuracy (99.0%), writes

    lenet_mnist.npz         the weights, float32, through tinygen.save (no pickle)
    mnist_test_stats.npz    mean (128,) and covariance (128, 128), float64, of the features of
                            the 10,000 test images, with the SHA-256 of the weights they came from

and prints the SHA-256 of the weights, to be recorded as `WEIGHTS_SHA256` in features.py.
The test set is used once, after training (no model selection on it). Run by hand; nothing in
tinygen imports this module. NOTE: the .npz holds zip timestamps, so a rerun writes a file with
a new SHA-256 even where the weights come out bit-identical; the shipped file is the reference.
The shipped weights: 99.42% test accuracy, 258 s of training on the project's 2-core machine.

Any other dataset (emoji, cifar10, folder, npz; `tinygen.data.load_dataset`): trains a
`features.ConvFeatureNet` on the training split's images with their labels as classes (seed 0,
Adam, batch 64, lr 1e-3 on a cosine schedule, --epochs, default 20, shifts of up to 2 pixels and
horizontal flips at random), reports the accuracy on the held-out split, and writes the weights
with the network's configuration (shape, class names, the per-channel pixel mean and deviation of
the training images) to --out. The default --out for emoji is the shipped `convnet_emoji.npz`;
its SHA-256 goes into `EMOJI_WEIGHTS_SHA256` in features.py. No statistics file: `tinygen eval`
computes the held-out images' features itself. Pass a file trained for your own data to
`tinygen eval --data ... --feature-net FILE`. The shipped emoji network: 65.12% accuracy on the
410 held-out emoji (9 categories; the largest alone is 21%), 69 s of training on the project's
2-core machine.
"""

import argparse
import math
import os
import sys
import time

import numpy as np

import tinygen
from tinygen import optim
from tinygen.data import load_mnist
from tinygen.errors import ArgumentError, TinygenError
from tinygen.evaluation.features import (
    CONV_ARCHITECTURE,
    EMOJI_WEIGHTS_PATH,
    TEST_STATS_PATH,
    WEIGHTS_PATH,
    ConvFeatureNet,
    LeNet,
    features_and_logits,
    sha256_of,
)
from tinygen.evaluation.protocol import load_split
from tinygen.evaluation.frechet import statistics
from tinygen.kernels.dispatch import kernel_info
from tinygen.nn import functional as F
from tinygen.serialization import save


def shifted(images, max_shift, rng, mode="constant"):
    """Each image (B, C, H, W) moved by its own (dy, dx) in [-max_shift, max_shift]^2; the edge filled
    with zeros (`mode` "constant", MNIST's black background) or the nearest edge pixel ("edge")."""
    if max_shift == 0:
        return images
    s, (h, w) = max_shift, images.shape[-2:]
    padded = np.pad(images, ((0, 0), (0, 0), (s, s), (s, s)), mode=mode)  # (B, C, H + 2s, W + 2s)
    offsets = rng.integers(0, 2 * s + 1, size=(len(images), 2))
    return np.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)])


def flipped(images, rng):
    """Each image (B, C, H, W) mirrored left-right with probability 1/2."""
    flip = rng.random(len(images)) < 0.5
    return np.where(flip[:, None, None, None], images[..., ::-1], images)


def train(x_train, y_train, epochs, batch_size, lr, max_shift, seed, log=print, net=None, flip=False):
    """Train `net` (default a new LeNet) on images (N, C, H, W) float32 in [0, 1] with int labels (N,).

    Each batch is shifted by up to `max_shift` pixels (zeros filled in for a LeNet, edge pixels for
    another network: colour images have no black background) and, with `flip`, mirrored at
    random. Returns the network in eval mode.
    """
    tinygen.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = LeNet() if net is None else net
    fill = "constant" if isinstance(net, LeNet) else "edge"
    opt = optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = len(x_train) // batch_size
    total, step = epochs * steps_per_epoch, 0
    net.train()
    for epoch in range(epochs):
        start, losses = time.perf_counter(), []
        order = rng.permutation(len(x_train))
        for b in range(steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            for group in opt.param_groups:  # cosine decay from lr to 0 over the whole run
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            x = shifted(x_train[idx], max_shift, rng, fill)
            if flip:
                x = flipped(x, rng)
            loss = F.cross_entropy(net(tinygen.Tensor(x)), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
        log(f"epoch {epoch + 1}/{epochs}: mean loss {np.mean(losses):.4f}, {time.perf_counter() - start:.1f} s")
    net.eval()
    return net


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mnist", help="mnist (default), emoji, cifar10, folder or npz")
    parser.add_argument("--data-dir", help="mnist: folder with the four IDX files; cifar10, folder, npz: what "
                        "tinygen.data.load_dataset reads")
    parser.add_argument("--test-dir", help="folder, npz (which have no split): the held-out images, to measure the accuracy on")
    parser.add_argument("--image-size", type=int, help="other data: resize the images to SxS first")
    parser.add_argument("--channels", type=int, choices=[1, 3], help="other data: convert to grey or RGB first")
    parser.add_argument("--epochs", type=int, help="passes over the training images (default: mnist 6, other 20)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--shift", type=int, default=2, help="largest random shift in pixels (0: no augmentation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-accuracy", type=float, help="write nothing below this test accuracy (default: mnist 0.99)")
    parser.add_argument("--out", help="weights file (default: the shipped one for mnist and emoji)")
    parser.add_argument("--stats-out", default=TEST_STATS_PATH, help="mnist: test-set statistics file (default: the shipped one)")
    args = parser.parse_args(argv)
    if args.data != "mnist":
        try:
            return train_conv_net(args)
        except TinygenError as err:
            print(f"train_feature_net: error: {err}", file=sys.stderr)
            return 2
    if args.data_dir is None:
        parser.error("--data mnist needs --data-dir, the folder of the four MNIST IDX files")
    args.epochs = 6 if args.epochs is None else args.epochs
    args.min_accuracy = 0.99 if args.min_accuracy is None else args.min_accuracy
    args.out = args.out or WEIGHTS_PATH

    (train_images, train_labels), (test_images, test_labels) = (load_mnist(args.data_dir, train=t) for t in (True, False))
    x_train = train_images[:, None].astype(np.float32) / 255  # (N, 28, 28) uint8 -> (N, 1, 28, 28) in [0, 1]
    y_train = train_labels.astype(np.int64)
    start = time.perf_counter()
    net = train(x_train, y_train, args.epochs, args.batch_size, args.lr, args.shift, args.seed)
    seconds = time.perf_counter() - start
    feats, logits = features_and_logits(test_images[:, None], net=net)  # uint8 (N, 1, 28, 28) accepted
    accuracy = float((logits.argmax(1) == test_labels).mean())
    print(f"training: {seconds:.0f} s ({kernel_info()['backend']} kernels); "
          f"test accuracy {100 * accuracy:.2f}% on {len(test_labels)} images")
    if accuracy < args.min_accuracy:
        print(f"test accuracy below {100 * args.min_accuracy:.1f}%: nothing written", file=sys.stderr)
        return 1

    save({
        "state_dict": net.state_dict(),
        "architecture": "tinygen.evaluation.features.LeNet",
        "test_accuracy": accuracy,
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "schedule": "cosine",
                  "shift": args.shift, "seed": args.seed, "seconds": round(seconds, 1)},
    }, args.out)
    sha256 = sha256_of(args.out)
    mu, sigma = statistics(feats)
    save({"mu": mu, "sigma": sigma, "n": len(feats), "feature_net_sha256": sha256,
          "source": "the 10,000 MNIST test images (t10k-images-idx3-ubyte)"}, args.stats_out)
    for path in (args.out, args.stats_out):
        print(f"wrote {path} ({os.path.getsize(path):,} bytes)")
    print(f"SHA-256 of {os.path.basename(args.out)}: {sha256}")
    print("record it as WEIGHTS_SHA256 in tinygen/evaluation/features.py")
    return 0


def train_conv_net(args):
    """`main` for every dataset but MNIST: a ConvFeatureNet on the training split, scored on the held-out one."""
    out = args.out or (EMOJI_WEIGHTS_PATH if args.data == "emoji" else None)
    if out is None:
        raise ArgumentError(f"--data {args.data}: give --out, the file to write the network to (only emoji's ships)")
    options = dict(root=args.data_dir, image_size=args.image_size, channels=args.channels)
    train_images, train_labels, classes = load_split(args.data, train=True, **options)
    if (args.test_dir is None) == (args.data in ("folder", "npz")):
        raise ArgumentError(f"--data {args.data} has no split: give --test-dir, held-out images to measure the accuracy on"
                            if args.test_dir is None else "--test-dir is for --data folder and npz")
    if args.test_dir is None:
        test_images, test_labels, _ = load_split(args.data, train=False, **options)
    else:
        test_images, test_labels, _ = load_split(args.data, train=True, **dict(options, root=args.test_dir))
    if train_labels is None or test_labels is None:
        raise ArgumentError(f"--data {args.data}: its images have no labels, and a feature network is trained as a "
                            "classifier (a folder needs one subfolder per class)")
    num_classes = len(classes) if classes else int(max(train_labels.max(), test_labels.max())) + 1
    x_train = train_images.astype(np.float32) / 255  # uint8 (N, C, H, W) -> float32 in [0, 1]
    _, c, h, w = x_train.shape
    if h != w:
        raise ArgumentError(f"--data {args.data}: ConvFeatureNet takes square images, got {h}x{w}; give --image-size")
    mean, std = x_train.mean(axis=(0, 2, 3)), x_train.std(axis=(0, 2, 3))  # per channel
    tinygen.manual_seed(args.seed)  # the initial weights too come from the seed
    net = ConvFeatureNet(c, h, num_classes, mean=mean, std=np.maximum(std, 1e-3), classes=classes)
    epochs = 20 if args.epochs is None else args.epochs
    start = time.perf_counter()
    net = train(x_train, train_labels.astype(np.int64), epochs, args.batch_size, args.lr, args.shift, args.seed,
                net=net, flip=True)
    seconds = time.perf_counter() - start
    logits = features_and_logits(test_images, net=net)[1]
    accuracy = float((logits.argmax(1) == test_labels).mean())
    chance = float(np.bincount(train_labels, minlength=num_classes).max() / len(train_labels))
    print(f"training: {seconds:.0f} s on {len(x_train):,} images ({kernel_info()['backend']} kernels); "
          f"held-out accuracy {100 * accuracy:.2f}% on {len(test_labels):,} images "
          f"(the most frequent class alone: {100 * chance:.2f}%)")
    if args.min_accuracy is not None and accuracy < args.min_accuracy:
        print(f"held-out accuracy below {100 * args.min_accuracy:.1f}%: nothing written", file=sys.stderr)
        return 1
    save({
        "state_dict": net.state_dict(),
        "architecture": CONV_ARCHITECTURE,
        "config": net.config(),
        "dataset": args.data,
        "test_accuracy": accuracy,
        "train": {"epochs": epochs, "batch_size": args.batch_size, "lr": args.lr, "schedule": "cosine",
                  "shift": args.shift, "flip": True, "seed": args.seed, "seconds": round(seconds, 1),
                  "images": len(x_train)},
    }, out)
    print(f"wrote {out} ({os.path.getsize(out):,} bytes)")
    print(f"SHA-256 of {os.path.basename(out)}: {sha256_of(out)}")
    if args.data == "emoji" and os.path.abspath(out) == EMOJI_WEIGHTS_PATH:
        print("record it as EMOJI_WEIGHTS_SHA256 in tinygen/evaluation/features.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
