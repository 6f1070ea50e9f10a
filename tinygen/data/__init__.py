"""Data: the IDX reader, datasets, the DataLoader, and MNIST (embedded, from files, or downloaded).

idx.py           read_idx, load_mnist: the validated IDX reader
loader.py        Dataset, TensorDataset, DataLoader
mnist.py         MNIST, the embedded subset, verify_mnist, download_mnist
build_subset.py  builds mnist_subset.npz from the IDX files (run by hand, never imported here)
images.py        ImageArrays (the dataset of uint8 (N, C, H, W) images) and the crop/resize/convert steps
folder.py        ImageFolder: the images under a folder, decoded once and cached
npz.py           NPZImages: images (and labels) of one .npz file
cifar.py         CIFAR10: the binary batches, read or downloaded
emoji.py         Emoji: the 32x32 emoji set shipped as emoji32.npz (licences beside it)
build_emoji.py   builds emoji32.npz from ../shared/data/emoji (run by hand, never imported here)
datasets.py      load_dataset(name, root, train, image_size, channels, download): every dataset by name
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
from tinygen.data.images import ImageArrays, reshape_images
from tinygen.data.folder import ImageFolder
from tinygen.data.npz import NPZImages
from tinygen.data.cifar import CIFAR10, CIFAR10_SHA256, download_cifar10
from tinygen.data.emoji import EMOJI_CLASSES, EMOJI_SHA256, Emoji
from tinygen.data.datasets import DATASETS, load_dataset
