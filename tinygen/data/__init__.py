"""Data: the IDX reader, datasets, the DataLoader, and MNIST (embedded, from files, or downloaded).

idx.py           read_idx, load_mnist: the validated IDX reader
loader.py        Dataset, TensorDataset, DataLoader
mnist.py         MNIST, the embedded subset, verify_mnist, download_mnist
build_subset.py  builds mnist_subset.npz from the IDX files (run by hand, never imported here)
"""

from tinygen.data.idx import MNIST_FILES, load_mnist, read_idx
from tinygen.data.loader import DataLoader, Dataset, TensorDataset
from tinygen.data.mnist import (
    MNIST,
    MNIST_MIRRORS,
    MNIST_SHA256,
    download_mnist,
    load_embedded_mnist,
    verify_mnist,
)
