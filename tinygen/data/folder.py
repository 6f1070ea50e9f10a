"""`ImageFolder`: every image under a folder, as torchvision's ImageFolder, decoded once and cached."""

import hashlib
import json
import os
import warnings

import numpy as np

from tinygen import image
from tinygen.data.images import (
    ImageArrays,
    center_crop,
    check_image_options,
    convert_channels,
    decoded_to_float,
    resize,
    to_uint8,
)
from tinygen.errors import ArgumentError, CheckpointError, DatasetFormatError
from tinygen.serialization import load, save

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
CACHE_FORMAT_VERSION = 1  # bump when the decoding or resizing changes, so old cache files are not reused


class ImageFolder(ImageArrays):
    """The images under `root`, found recursively, as uint8 (N, C, H, W).

    - Files: every file whose name ends in .png, .jpg, .jpeg, .bmp, .gif or .webp (any case),
      in sorted order of their paths relative to `root`; hidden files and folders (a leading
      ``.``) are skipped, linked folders followed. PNG is decoded by tinygen, the rest by Pillow (`tinygen.image.read_image`).
    - Labels: when the images sit in first-level subfolders, as torchvision's ImageFolder,
      ``root/cat/x.png`` and ``root/dog/sub/y.png``, the subfolder names sorted are `classes`
      and an image's label is its subfolder's index. A flat folder (images only directly in
      `root`) has ``labels`` and ``classes`` None. Images both directly in `root` and in
      subfolders raise `DatasetFormatError`: such a file has no class.
    - Pixels: alpha is composited over white; 16-bit files are scaled to 8 bits; each image is
      centre-cropped to a square and resized to `image_size` (area mean down, bilinear up: see
      `tinygen.data.images`). `image_size` None keeps the crop's size, which must then be the same
      for every image (else a `DatasetFormatError` suggesting `image_size`). `channels` 1 gives
      grey (BT.601 luma), 3 gives RGB; None gives RGB if any image has colour, else grey.
    - Errors: no images under `root` raises `DatasetFormatError` naming `root`; a file that
      cannot be decoded raises `DatasetFormatError` naming the file.

    The cache: decoding thousands of files takes a while, so the decoded arrays are saved to
    ``$TINYGEN_CACHE/folder-<key>.npz`` (default ``$XDG_CACHE_HOME/tinygen`` or
    ``~/.cache/tinygen``; never inside `root`, which may be read-only), written atomically by
    `tinygen.serialization.save` (no pickle). The key is the SHA-256 of the absolute `root`,
    each file's (relative path, size, mtime_ns), `image_size`, `channels` and a format version:
    adding, removing, replacing or touching a file, or asking for another size or channel
    count, makes a new key, so a stale cache is never read (old entries stay until you delete
    the folder). A cache file that cannot be read is decoded again and rewritten; a cache
    folder that cannot be written gives a warning. ``cache=False`` neither reads nor writes it.
    """

    def __init__(self, root, image_size=None, channels=None, cache=True):
        check_image_options(image_size, channels)
        self.root = os.path.abspath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise ArgumentError(f"ImageFolder: {self.root} is not a folder")
        files = find_images(self.root)
        if not files:
            raise DatasetFormatError(
                f"{self.root}: no images found (looked recursively for {', '.join(IMAGE_EXTENSIONS)})"
            )
        stats = [os.stat(os.path.join(self.root, name)) for name in files]
        key = cache_key(self.root, [(name, s.st_size, s.st_mtime_ns) for name, s in zip(files, stats)], image_size, channels)
        path = os.path.join(cache_dir(), f"folder-{key}.npz") if cache else None
        cached = _read_cache(path) if path and os.path.exists(path) else None
        if cached is None:
            images, labels, classes = decode_folder(self.root, files, image_size, channels)
            if path:
                _write_cache(path, images, labels, classes, self.root)
        else:
            images, labels, classes = cached
        self.files, self.cache_path = files, path
        super().__init__(images, labels, classes, source=self.root)


def find_images(root):
    """Paths relative to `root` (with ``/``) of the image files under it, sorted."""
    found = []
    for folder, subfolders, names in os.walk(root, followlinks=True):  # as torchvision: linked folders count
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative = os.path.relpath(folder, root)
        for name in names:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(name if relative == "." else f"{relative}/{name}".replace(os.sep, "/"))
    return sorted(found)


def labels_of(root, files):
    """(labels int64 (N,), classes) from the first-level subfolders, or (None, None) for a flat folder."""
    top = [name for name in files if "/" not in name]
    if len(top) == len(files):
        return None, None
    if top:
        raise DatasetFormatError(
            f"{root}: {len(top)} image(s) directly in the folder (e.g. {top[0]}) beside images in "
            "subfolders; with subfolders as classes, such images have no class: move them into a "
            "subfolder, or point at a folder that holds only images"
        )
    folders = [name.split("/", 1)[0] for name in files]
    classes = sorted(set(folders))
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[name] for name in folders], np.int64), classes


def decode_folder(root, files, image_size, channels):
    """Decode and shape every file: (images uint8 (N, C, S, S), labels or None, classes or None)."""
    labels, classes = labels_of(root, files)
    decoded = []
    for name in files:
        path = os.path.join(root, name)
        x = center_crop(decoded_to_float(image.read_image(path), path))
        decoded.append(x if image_size is None else resize(x, image_size))
    first_of_size = {}  # (S, S) -> the first file of that size
    for name, x in zip(files, decoded):
        first_of_size.setdefault(x.shape[1:], name)
    if len(first_of_size) > 1:
        sizes = sorted(first_of_size)
        examples = ", ".join(f"{first_of_size[size]} {size[0]}x{size[1]}" for size in sizes[:3])
        raise DatasetFormatError(
            f"{root}: the images have {len(sizes)} sizes after centre-cropping to squares ({examples}); "
            "pass image_size (--image-size) to resize them all to one size"
        )
    target = channels or (3 if any(x.shape[0] == 3 for x in decoded) else 1)
    images = np.stack([to_uint8(convert_channels(x, target)) for x in decoded])  # (N, C, S, S)
    return images, labels, classes


def cache_dir():
    """``$TINYGEN_CACHE``, else ``$XDG_CACHE_HOME/tinygen``, else ``~/.cache/tinygen``."""
    if os.environ.get("TINYGEN_CACHE"):
        return os.environ["TINYGEN_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tinygen")


def cache_key(root, entries, image_size, channels):
    """The hex SHA-256 naming the cache file of one folder, file list and setting."""
    description = {
        "format_version": CACHE_FORMAT_VERSION,
        "root": root,
        "files": entries,
        "image_size": None if image_size is None else int(image_size),
        "channels": None if channels is None else int(channels),
    }
    return hashlib.sha256(json.dumps(description).encode("utf-8")).hexdigest()


def _read_cache(path):
    try:
        entry = load(path)
        return entry["images"], entry["labels"], entry["classes"]
    except (CheckpointError, KeyError, TypeError):
        return None  # damaged or foreign: decode again, and overwrite it


def _write_cache(path, images, labels, classes, root):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save({"root": root, "images": images, "labels": labels, "classes": classes}, path)
    except (OSError, CheckpointError) as err:
        warnings.warn(f"ImageFolder: could not write the decoding cache {path} ({err}); the next run decodes {root} again", stacklevel=3)
