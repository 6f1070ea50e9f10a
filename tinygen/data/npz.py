"""`NPZImages`: images (and labels) from one NumPy ``.npz`` file, such as ``tinygen sample --npz`` writes.

The file holds (read with ``allow_pickle=False``):

- ``images``: uint8, (N, C, H, W) or (N, H, W, C) with C 1 or 3, or (N, H, W) for grey. The
  layout rule: channels-first when axis 1 has size 1 or 3, else channels-last when axis 3 has
  size 1 or 3. So an array that fits both, e.g. (N, 3, 32, 3), is read as (N, C, H, W);
- ``labels`` (optional): N integers >= 0;
- ``classes`` (optional, only with labels): the class names, a 1-D str array with more names than
  the largest label; without it the classes are named ``"0"``, ``"1"``, ...

Anything else (a missing file, not an .npz, no ``images``, a wrong dtype or shape, labels of the
wrong count or sign) raises `DatasetFormatError` naming the file.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "set.npz")
>>> np.savez(path, images=np.zeros((5, 8, 8, 3), np.uint8), labels=np.arange(5) % 2)
>>> data = NPZImages(path)
>>> data.images.shape, data.classes
((5, 3, 8, 8), ['0', '1'])
"""

import os
import zipfile

import numpy as np

from tinygen.data.images import ImageArrays
from tinygen.errors import DatasetFormatError
from tinygen.serialization import _CORRUPT_ERRORS


class NPZImages(ImageArrays):
    """The images, labels and class names of the .npz file `path` (see the module docstring)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        images, labels, classes = read_npz_images(self.path)
        super().__init__(images, labels, classes, source=self.path)


def read_npz_images(path):
    """(images uint8 (N, C, H, W), labels int64 or None, classes or None) from the file `path`."""
    if not os.path.isfile(path):
        raise DatasetFormatError(f"{path}: {'a folder, expected an .npz file' if os.path.isdir(path) else 'no such file'}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, *_CORRUPT_ERRORS) as err:  # a ValueError for a pickle
        raise DatasetFormatError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetFormatError(f"{path}: a single .npy array, expected an .npz with an 'images' entry")
    try:
        with archive:
            entries = {name: archive[name] for name in ("images", "labels", "classes") if name in archive.files}
    except (zipfile.BadZipFile, *_CORRUPT_ERRORS) as err:  # a ValueError also when an entry needs pickle
        raise DatasetFormatError(f"{path}: an entry cannot be read ({type(err).__name__}: {err})") from err
    if "images" not in entries:
        raise DatasetFormatError(f"{path}: no 'images' entry")
    images = channels_first(entries["images"], path)
    labels, classes = entries.get("labels"), entries.get("classes")
    if labels is None:
        if classes is not None:
            raise DatasetFormatError(f"{path}: a 'classes' entry but no 'labels'")
        return images, None, None
    if labels.dtype.kind not in "iu" or labels.shape != images.shape[:1]:
        raise DatasetFormatError(f"{path}: 'labels' must be {len(images)} integers (N,), got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DatasetFormatError(f"{path}: 'labels' holds a negative value {labels.min()}")
    count = int(labels.max(initial=-1)) + 1
    if classes is None:
        return images, labels, [str(i) for i in range(count)]
    if classes.dtype.kind != "U" or classes.ndim != 1 or len(classes) < count:
        raise DatasetFormatError(
            f"{path}: 'classes' must be a 1-D str array of at least {count} names, got {classes.dtype} {classes.shape}"
        )
    return images, labels, classes.tolist()


def channels_first(images, path):
    """`images` as (N, C, H, W) by the layout rule of the module docstring."""
    if images.dtype != np.uint8:
        raise DatasetFormatError(f"{path}: 'images' must be uint8, got {images.dtype} {images.shape}")
    if images.ndim == 3:
        images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or 0 in images.shape:
        raise DatasetFormatError(
            f"{path}: 'images' must be (N, C, H, W), (N, H, W, C) with C 1 or 3, or (N, H, W), "
            f"all non-empty, got shape {images.shape}"
        )
    return np.ascontiguousarray(images)
