"""`load_dataset`: one entrance to every dataset, by name, as ``tinygen train --data`` picks one.

| name | what | root |
| --- | --- | --- |
| ``embedded`` | the MNIST subset shipped inside tinygen | must be None |
| ``mnist`` | MNIST from its IDX files (``download=True`` fetches them) | folder |
| ``emoji`` | the 32 x 32 emoji set shipped inside tinygen | must be None |
| ``cifar10`` | CIFAR-10's binary version (``download=True`` fetches it) | folder |
| ``folder`` | `ImageFolder`: every image under a folder, no split | folder |
| ``npz`` | `NPZImages`: ``images`` (and ``labels``) of one .npz file, no split | file |

`image_size` and `channels` apply to every dataset: images are centre-cropped to a square,
resized (area mean down, bilinear up: emoji at 64 is the 32-pixel set upscaled, so blurrier
than the source art) and converted (grey by BT.601 luma). Without them, ``embedded`` and
``mnist`` give the `MNIST` dataset as before (``.images`` (N, 28, 28)); with either, every
dataset is an `ImageArrays` with ``.images`` (N, C, H, W).

``folder`` and ``npz`` have no split: ``train=False`` raises `ArgumentError` rather than
returning the training images as a test set. ``download`` is for ``mnist`` and ``cifar10`` only.
"""

import os

from tinygen.data.cifar import CIFAR10
from tinygen.data.emoji import Emoji
from tinygen.data.folder import ImageFolder
from tinygen.data.images import ImageArrays, check_image_options
from tinygen.data.mnist import MNIST
from tinygen.data.npz import NPZImages
from tinygen.errors import ArgumentError

DATASETS = ("embedded", "mnist", "emoji", "cifar10", "folder", "npz")
_NEEDS_ROOT = {"mnist": "a folder with the MNIST IDX files", "cifar10": "a folder with the CIFAR-10 binary files",
               "folder": "a folder of images", "npz": "an .npz file"}


def load_dataset(name, root=None, train=True, image_size=None, channels=None, download=False):
    """The dataset `name` (one of `DATASETS`), from `root` where it needs one (see the module docstring)."""
    if name not in DATASETS:
        raise ArgumentError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    check_image_options(image_size, channels)
    if name in _NEEDS_ROOT and root is None:
        raise ArgumentError(f"dataset {name!r} needs root (--data-dir): {_NEEDS_ROOT[name]}")
    if name not in _NEEDS_ROOT and root is not None:
        raise ArgumentError(f"dataset {name!r} is shipped inside tinygen and takes no root (--data-dir), got {os.fspath(root)!r}")
    if download and name not in ("mnist", "cifar10"):
        raise ArgumentError(f"download is for mnist and cifar10 only, not {name!r}")
    if name in ("folder", "npz") and not train:
        raise ArgumentError(f"dataset {name!r} has no test split: load it with train=True and hold out images yourself")
    if name in ("embedded", "mnist"):
        mnist = MNIST(None if name == "embedded" else root, train=train, download=download)
        if image_size is None and channels is None:
            return mnist
        data = ImageArrays(mnist.images[:, None], mnist.labels, mnist.classes, source=repr(mnist))  # (N, 1, 28, 28)
        return data.reshape(image_size, channels)
    if name == "folder":
        return ImageFolder(root, image_size=image_size, channels=channels)
    if name == "emoji":
        data = Emoji(train=train)
    elif name == "cifar10":
        data = CIFAR10(root, train=train, download=download)
    else:
        data = NPZImages(root)
    return data.reshape(image_size, channels)
