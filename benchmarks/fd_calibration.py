"""What a Fréchet distance in tinygen's LeNet feature space means: FD of known corruptions of real digits.

    python -m benchmarks.fd_calibration --data-dir ../shared/data/mnist

Each row corrupts 10,000 real MNIST *training* images in one known way and gives their FD against
the 10,000 test images (the `tinygen eval` protocol, n = 10,000), beside the uncorrupted floor:
Gaussian pixel noise of sigma 0.05 (clipped to [0, 1]), a 1-pixel box blur (the mean of each 3x3
neighbourhood), the same images with one digit class replaced by the others, and uniform noise.
Issue 4 states its FD targets with this calibration in mind (noise 0.05 about 4, one class
dropped about 10, blur about 150, uniform noise about 550, floor about 1); the table shows how
this feature space scales against it.
"""

import argparse

import numpy as np

from tinygen.data import MNIST
from tinygen.evaluation import frechet_distance, load_feature_net, load_test_statistics, statistics
from tinygen.evaluation.features import features


def blur(images):
    """The mean over each pixel's 3x3 neighbourhood (zero outside the image): (n, 1, 28, 28) floats."""
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return sum(padded[:, :, i:i + 28, j:j + 28] for i in range(3) for j in range(3)) / 9


def corruptions(images, labels, rng):
    """name -> (10,000, 1, 28, 28) float images in [0, 1]."""
    n = 10_000
    real = images[:n]
    others = images[n:][labels[n:] != 0]  # replacements for the zeros, from images not used above
    dropped = real.copy()
    zeros = np.flatnonzero(labels[:n] == 0)
    dropped[zeros] = others[: len(zeros)]
    return {
        "real training images (floor)": real,
        "Gaussian pixel noise, sigma 0.05": np.clip(real + 0.05 * rng.standard_normal(real.shape), 0, 1),
        "digit 0 replaced by the other digits": dropped,
        "1-pixel blur (3x3 mean)": blur(real),
        "uniform noise": rng.random(real.shape),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="the folder of the MNIST IDX files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    train = MNIST(args.data_dir, train=True)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(train.images))
    images = train.images[order][:, None].astype(np.float64) / 255
    labels = np.asarray(train.labels)[order]
    net, (mu, sigma, _) = load_feature_net(), load_test_statistics()
    print("| corruption of 10,000 training images | FD vs the 10,000 test images |\n| --- | --- |")
    for name, corrupted in corruptions(images, labels, rng).items():
        fd = frechet_distance(*statistics(features(corrupted, net=net)), mu, sigma)
        print(f"| {name} | {fd:.2f} |", flush=True)


if __name__ == "__main__":
    main()
