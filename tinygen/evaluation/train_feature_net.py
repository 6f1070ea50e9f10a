"""Train the evaluation feature network on MNIST and write the files that ship with tinygen.

    python -m tinygen.evaluation.train_feature_net --data-dir ../shared/data/mnist

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
from tinygen.evaluation.features import TEST_STATS_PATH, WEIGHTS_PATH, LeNet, features_and_logits, sha256_of
from tinygen.evaluation.frechet import statistics
from tinygen.nn import functional as F
from tinygen.serialization import save


def shifted(images, max_shift, rng):
    """Each image (B, 1, 28, 28) moved by its own (dy, dx) in [-max_shift, max_shift]^2, zeros filled in."""
    if max_shift == 0:
        return images
    s = max_shift
    padded = np.pad(images, ((0, 0), (0, 0), (s, s), (s, s)))  # (B, 1, 28 + 2s, 28 + 2s)
    offsets = rng.integers(0, 2 * s + 1, size=(len(images), 2))
    return np.stack([padded[i, :, y : y + 28, x : x + 28] for i, (y, x) in enumerate(offsets)])


def train(x_train, y_train, epochs, batch_size, lr, max_shift, seed, log=print):
    """Train a LeNet on images (N, 1, 28, 28) float32 in [0, 1]; return it in eval mode."""
    tinygen.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = LeNet()
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
            x = shifted(x_train[idx], max_shift, rng)
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
    parser.add_argument("--data-dir", required=True, help="folder with the four MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--shift", type=int, default=2, help="largest random shift in pixels (0: no augmentation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-accuracy", type=float, default=0.99, help="write nothing below this test accuracy")
    parser.add_argument("--out", default=WEIGHTS_PATH, help="weights file (default: the shipped one)")
    parser.add_argument("--stats-out", default=TEST_STATS_PATH, help="test-set statistics file (default: the shipped one)")
    args = parser.parse_args(argv)

    (train_images, train_labels), (test_images, test_labels) = (load_mnist(args.data_dir, train=t) for t in (True, False))
    x_train = train_images[:, None].astype(np.float32) / 255  # (N, 28, 28) uint8 -> (N, 1, 28, 28) in [0, 1]
    y_train = train_labels.astype(np.int64)
    start = time.perf_counter()
    net = train(x_train, y_train, args.epochs, args.batch_size, args.lr, args.shift, args.seed)
    seconds = time.perf_counter() - start
    feats, logits = features_and_logits(test_images[:, None], net=net)  # uint8 (N, 1, 28, 28) accepted
    accuracy = float((logits.argmax(1) == test_labels).mean())
    print(f"training: {seconds:.0f} s ({tinygen.backend.kernel_info()['backend']} kernels); "
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


if __name__ == "__main__":
    sys.exit(main())
