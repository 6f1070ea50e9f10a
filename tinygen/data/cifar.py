"""CIFAR-10 from its binary version (Krizhevsky 2009), read or downloaded into a folder.

The binary version is ``cifar-10-batches-bin/`` with ``data_batch_1.bin`` .. ``data_batch_5.bin``
(training, 10,000 images each) and ``test_batch.bin`` (10,000), and ``batches.meta.txt`` (the ten
class names, one a line). Each record is 3,073 bytes: the label (0-9), then the 32 x 32 red
plane, the green plane and the blue plane, each row by row. So a file is an (n, 3073) uint8
array, and ``record[1:].reshape(3, 32, 32)`` is the image in (C, H, W).

``CIFAR10(root)`` reads the files from `root` or from ``root/cifar-10-batches-bin``.
``download=True`` first fetches ``cifar-10-binary.tar.gz`` (`CIFAR10_URL`) when the files are
missing, keeps it only if its size and SHA-256 are the published ones (`CIFAR10_SHA256`), and
extracts the seven files into ``root/cifar-10-batches-bin``.

A missing file, a size that is not a whole number of records, a label outside 0-9 or a
``batches.meta.txt`` without ten names raise `DatasetFormatError` naming the file.
"""

import hashlib
import io
import os
import tarfile
import urllib.request
import zlib

import numpy as np

from tinygen.data.images import ImageArrays
from tinygen.errors import ArgumentError, DatasetFormatError, DownloadError
from tinygen.serialization import write_atomically

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
# Published size and SHA-256 of cifar-10-binary.tar.gz (its MD5 on the page: c32a1d4ab5d03f1284b67883e8d87530).
CIFAR10_SHA256 = (170_052_171, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd")
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_FILES = {True: [f"data_batch_{i}.bin" for i in range(1, 6)], False: ["test_batch.bin"]}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RECORD_BYTES = 1 + 3 * 32 * 32


class CIFAR10(ImageArrays):
    """CIFAR-10's training (50,000) or test (10,000) split: uint8 (N, 3, 32, 32), labels 0-9."""

    def __init__(self, root, train=True, download=False):
        self.root, self.train = os.fspath(root), bool(train)
        if download and _find_folder(self.root, self.train) is None:
            download_cifar10(self.root)
        folder = _find_folder(self.root, self.train)
        if folder is None:
            inner = os.path.join(self.root, CIFAR10_FOLDER)
            where = inner if os.path.isdir(inner) else self.root
            missing = [name for name in CIFAR10_FILES[self.train] if not os.path.isfile(os.path.join(where, name))]
            raise DatasetFormatError(
                f"{where}: CIFAR-10 binary file(s) missing: {', '.join(missing)} (looked in {self.root} and its "
                f"{CIFAR10_FOLDER}/); pass download=True (--download) to fetch them"
            )
        parts = [read_cifar_batch(os.path.join(folder, name)) for name in CIFAR10_FILES[self.train]]
        images = np.concatenate([images for images, _ in parts])
        labels = np.concatenate([labels for _, labels in parts])
        super().__init__(images, labels, read_cifar_classes(folder), source=folder)


def read_cifar_batch(path):
    """(images uint8 (n, 3, 32, 32), labels int64 (n,)) of one binary batch file."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as err:
        raise DatasetFormatError(f"{path}: cannot be read ({err})") from err
    if not data or len(data) % RECORD_BYTES:
        raise DatasetFormatError(
            f"{path}: {len(data)} bytes is not a whole, non-zero number of {RECORD_BYTES}-byte records "
            "(1 label byte + 3 x 32 x 32 pixels)"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        bad = int(np.flatnonzero(labels > 9)[0])
        raise DatasetFormatError(f"{path}: record {bad} has label {labels[bad]}, expected 0-9")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels  # R, G, B planes = (C, H, W)


def read_cifar_classes(folder):
    """The ten class names from ``batches.meta.txt`` in `folder`, else `CIFAR10_CLASSES`."""
    path = os.path.join(folder, "batches.meta.txt")
    if not os.path.exists(path):
        return list(CIFAR10_CLASSES)
    try:
        with open(path, encoding="utf-8") as file:
            names = [line.strip() for line in file if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{path}: cannot be read ({err})") from err
    if len(names) != 10:
        raise DatasetFormatError(f"{path}: {len(names)} class names, expected 10 (one a line)")
    return names


def download_cifar10(root, timeout=60, url=CIFAR10_URL):
    """Fetch the tarball, check its size and SHA-256, and extract the binary files into `root`.

    Returns the folder ``root/cifar-10-batches-bin``. A download that does not match
    `CIFAR10_SHA256` raises `DatasetFormatError` and keeps nothing; no answer raises
    `DownloadError`. Only the seven expected files are extracted, each written atomically.
    """
    size, sha256 = CIFAR10_SHA256
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read(size + 1)
    except (OSError, ValueError) as err:  # URLError, HTTPError and timeouts are OSErrors
        raise DownloadError(f"{url}: could not be downloaded (timeout {timeout} s): {err}") from err
    digest = hashlib.sha256(payload).hexdigest()
    if (len(payload), digest) != (size, sha256):
        raise DatasetFormatError(
            f"{url}: the download of {len(payload)} bytes has SHA-256 {digest}, expected {size} bytes "
            f"with SHA-256 {sha256}; nothing was kept"
        )
    folder = os.path.join(root, CIFAR10_FOLDER)
    os.makedirs(folder, exist_ok=True)
    wanted = CIFAR10_FILES[True] + CIFAR10_FILES[False] + ["batches.meta.txt"]
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
            for name in wanted:
                member = archive.getmember(f"{CIFAR10_FOLDER}/{name}")
                content = archive.extractfile(member).read()
                write_atomically(os.path.join(folder, name), lambda file, content=content: file.write(content))
    except (KeyError, AttributeError, tarfile.TarError, EOFError, zlib.error) as err:
        raise DatasetFormatError(f"{url}: the archive lacks or cannot extract {CIFAR10_FOLDER}/ files ({err})") from err
    return folder


def _find_folder(root, train):
    """`root` or ``root/cifar-10-batches-bin``, whichever holds the split's files, else None."""
    if not os.path.isdir(root) and os.path.exists(root):
        raise ArgumentError(f"CIFAR10: root {root} is a file, expected the folder of the binary batches")
    for folder in (root, os.path.join(root, CIFAR10_FOLDER)):
        if all(os.path.isfile(os.path.join(folder, name)) for name in CIFAR10_FILES[train]):
            return folder
    return None
