"""Build the MNIST subset shipped inside tinygen, ``tinygen/data/mnist_subset.npz``.

    python -m tinygen.data.build_subset --idx-dir ../shared/data/mnist

The rule: the first 1,500 training images of each digit (15,000) and the first 100 test images
of each digit (1,000), kept in file order. The IDX files must be the published ones (checked with
`verify_mnist` first). Beside the uint8 images and labels, the archive records where each image
comes from (``train_indices``, ``test_indices``: positions in the IDX files), the rule, and the
names and SHA-256 of the source files, so anyone can trace and rebuild it.

The archive is what `np.savez_compressed` writes, with fixed zip timestamps: the same arrays
give the same bytes (for a given zlib), so a rebuild does not change the committed file.
"""

import argparse
import os
import zipfile

import numpy as np

from tinygen.data.idx import load_mnist
from tinygen.data.mnist import EMBEDDED_PATH, MNIST_SHA256, verify_mnist
from tinygen.errors import ArgumentError
from tinygen.serialization import write_atomically

TRAIN_PER_CLASS = 1500
TEST_PER_CLASS = 100
RULE = "the first {train} training and the first {test} test images of each digit 0-9, in file order"


def first_per_class(labels, k):
    """Positions of the first `k` examples of each label 0..9, in file order.

    >>> first_per_class(np.array([1, 0, 1, 1, 0, 2, 3, 4, 5, 6, 7, 8, 9]), 1).tolist()
    [0, 1, 5, 6, 7, 8, 9, 10, 11, 12]
    """
    chosen = [np.flatnonzero(labels == digit)[:k] for digit in range(10)]
    short = [digit for digit, positions in enumerate(chosen) if len(positions) < k]
    if short:
        raise ArgumentError(f"fewer than {k} examples of digit(s) {short}")
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def build_subset(idx_dir, train_per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS):
    """The arrays of the subset (a dict of name -> array), cut from the IDX files in `idx_dir`."""
    verify_mnist(idx_dir)
    entries = {}
    for split, train, k in (("train", True, train_per_class), ("test", False, test_per_class)):
        images, labels = load_mnist(idx_dir, train)
        indices = first_per_class(labels, k)
        entries[f"{split}_images"] = images[indices]  # uint8 (10 k, 28, 28)
        entries[f"{split}_labels"] = labels[indices]
        entries[f"{split}_indices"] = indices
    entries["rule"] = np.array(RULE.format(train=train_per_class, test=test_per_class))
    entries["source_files"] = np.array(list(MNIST_SHA256))
    entries["source_sha256"] = np.array([sha256 for _, sha256 in MNIST_SHA256.values()])
    return entries


def write_subset(path, entries):
    """Write `entries` as a compressed .npz with fixed timestamps, atomically."""
    def write(file):
        with zipfile.ZipFile(file, mode="w") as archive:
            for name, array in entries.items():
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(info, mode="w") as entry:
                    np.lib.format.write_array(entry, array, allow_pickle=False)

    write_atomically(path, write)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinygen.data.build_subset", description=__doc__.splitlines()[0])
    parser.add_argument("--idx-dir", required=True, help="folder with the four MNIST IDX files (raw or .gz)")
    parser.add_argument("--out", default=EMBEDDED_PATH, help="where to write the .npz (default: inside the package)")
    args = parser.parse_args(argv)
    entries = build_subset(args.idx_dir)
    write_subset(args.out, entries)
    print(
        f"wrote {args.out}: {len(entries['train_labels'])} training and {len(entries['test_labels'])} "
        f"test images, {os.path.getsize(args.out)} bytes"
    )


if __name__ == "__main__":
    main()
