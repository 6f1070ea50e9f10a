"""Learning on real data: an MLP and a small CNN trained on MNIST with tinygen.

    python -m benchmarks.mnist_classifier                 # both models, 3 epochs each
    python -m benchmarks.mnist_classifier --model cnn --epochs 3

Prints, per model, the training loss per epoch, the test accuracy and the seconds per epoch
(median over epochs; the machine and the kernel backend are printed with them). The IDX files
are read from ../shared/data/mnist (override with --data-dir).
"""

import argparse
import json
import os
import time

import numpy as np

import tinygen
from benchmarks import machine
from tinygen import nn, optim
from tinygen.data import load_mnist
from tinygen.nn import functional as F

DEFAULT_DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 16, 14, 14)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, 7, 7)
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


MODELS = {"mlp": mlp, "cnn": cnn}


def as_inputs(images):
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), standardised with MNIST's mean and std."""
    return ((images.astype(np.float32) / 255 - 0.1307) / 0.3081)[:, None]


def train_steps(model, opt, images, labels, steps, batch_size, rng):
    """Run `steps` Adam steps on shuffled mini-batches; return the loss of every step."""
    losses, order, pos = [], rng.permutation(len(images)), 0
    model.train()
    for _ in range(steps):
        if pos + batch_size > len(order):
            order, pos = rng.permutation(len(images)), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        loss = F.cross_entropy(model(tinygen.Tensor(images[idx])), labels[idx].astype(np.int64))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@tinygen.no_grad()
def accuracy(model, images, labels, batch_size=1000):
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(tinygen.Tensor(images[i : i + batch_size]))
        correct += int((logits.data.argmax(1) == labels[i : i + batch_size]).sum())
    return correct / len(images)


def run(name, epochs, batch_size, lr, seed, data):
    (x_train, y_train), (x_test, y_test) = data
    tinygen.manual_seed(seed)
    model = MODELS[name]()
    opt = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    steps = len(x_train) // batch_size
    epoch_seconds, epoch_losses = [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        losses = train_steps(model, opt, x_train, y_train, steps, batch_size, rng)
        epoch_seconds.append(time.perf_counter() - start)
        epoch_losses.append(float(np.mean(losses)))
        print(f"{name} epoch {epoch + 1}: mean loss {epoch_losses[-1]:.4f}, {epoch_seconds[-1]:.1f} s", flush=True)
    return {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "train_loss_per_epoch": epoch_losses,
        "test_accuracy": accuracy(model, x_test, y_test),
        "seconds_per_epoch_median": float(np.median(epoch_seconds)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    train, test = load_mnist(args.data_dir, train=True), load_mnist(args.data_dir, train=False)
    data = ((as_inputs(train[0]), train[1]), (as_inputs(test[0]), test[1]))
    print(f"machine: {machine.describe()}")
    names = list(MODELS) if args.model == "all" else [args.model]
    results = [run(name, args.epochs, args.batch_size, args.lr, args.seed, data) for name in names]
    print("\n| model | params | epochs | test accuracy | s/epoch (median) |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['parameters']:,} | {r['epochs']} | {100 * r['test_accuracy']:.2f}% | {r['seconds_per_epoch_median']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
