"""Argument checks shared by the model families' public methods, and the image shapes they accept."""

import numpy as np

from tinygen.errors import ArgumentError, DTypeError, ShapeError
from tinygen.tensor import Tensor

# The image sizes of the convolutional networks, each with the size of their smallest feature map
# and the number of stride-2 stages between the two (every stage halves or doubles the size):
# 28 -> 14 -> 7 as MNIST's DCGAN; 32 -> 16 -> 8 -> 4 and 64 -> 32 -> 16 -> 8 -> 4 as Radford et
# al.'s DCGAN, whose generator starts from 4 x 4.
CONV_STAGES = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


def check_count(n):
    """`sample(n)`'s n: a positive integer (not a bool, a float or a string)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ArgumentError(f"the number of samples must be a positive integer, got {n!r}")


def check_unit_range(data, what="images must lie in [0, 1]"):
    """Pixels in [0, 1]: one check (one wait for a GPU batch), then the range found in the message."""
    if bool(((data < 0) | (data > 1)).any()):
        raise ArgumentError(f"{what}, found values in [{float(data.min())}, {float(data.max())}]")


def check_image_config(config, sizes=None):
    """A config's `image_channels` and `image_size`: positive integers, the size one of `sizes` if given.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Config:
    ...     image_channels: int = 3
    ...     image_size: int = 48
    >>> check_image_config(Config(), sizes=CONV_STAGES)
    Traceback (most recent call last):
    tinygen.errors.ArgumentError: Config: image_size must be one of 28, 32, 64 for this network, got 48
    """
    name = type(config).__name__
    for field in ("image_channels", "image_size"):
        value = getattr(config, field)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ArgumentError(f"{name}: {field} must be a positive integer, got {value!r}")
    if sizes is not None and config.image_size not in sizes:
        raise ArgumentError(f"{name}: image_size must be one of {', '.join(map(str, sizes))} for this network, "
                            f"got {config.image_size}")


def image_shape(config):
    """(C, H, W) of the images a model's config describes: (image_channels, image_size, image_size)."""
    return (int(config.image_channels), int(config.image_size), int(config.image_size))


def check_images(images, shape, min_batch=1):
    """A float Tensor (B, C, H, W) with (C, H, W) = `shape`, B >= min_batch and values in [0, 1].

    A NumPy array is wrapped in a Tensor. The errors name the expected and the given shape.
    """
    expected = f"(B, {', '.join(map(str, shape))})"
    if isinstance(images, np.ndarray):
        images = Tensor(images)
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a tinygen Tensor {expected}, got {type(images).__name__}")
    if images.dtype.kind != "f":
        raise DTypeError(f"images must be float32 or float64 in [0, 1], got dtype {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape) or images.shape[0] < min_batch:
        batch = f" with B >= {min_batch}" if min_batch > 1 else ""
        raise ShapeError(f"images must have shape {expected}{batch}, got {tuple(images.shape)}")
    check_unit_range(images.data)
    return images
