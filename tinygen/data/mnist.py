"""MNIST as a `Dataset`: the subset shipped inside tinygen, the full IDX files, or a download.

- ``MNIST()`` reads the embedded subset, ``mnist_subset.npz`` beside this file: the first 1,500
  training images of each digit (15,000) and the first 100 test images of each digit (1,000),
  cut from the real IDX files by ``python -m tinygen.data.build_subset``. It works offline.
- ``MNIST(root)`` reads the four IDX files (raw or gzipped) in the folder `root`.
- ``MNIST(root, download=True)`` first fetches the files `root` lacks, and keeps a file only if
  its uncompressed content has the published size and SHA-256 (`MNIST_SHA256`).

An example is ``(image, label)``: float32 (1, 28, 28) in [0, 1] and an int64. ``.images`` (uint8,
(N, 28, 28)) and ``.labels`` (int64, (N,)) hold the whole split; ``arrays()`` gives it in the
example format, for a training loop that indexes arrays itself.

>>> train = MNIST()
>>> len(train), len(MNIST(train=False))
(15000, 1000)
>>> image, label = train[0]
>>> image.shape, image.dtype, int(label)
((1, 28, 28), dtype('float32'), 5)
"""

import gzip
import hashlib
import io
import os
import urllib.request
import zlib

import numpy as np

from tinygen.data.idx import MNIST_FILES, _find, _open, load_mnist
from tinygen.data.loader import Dataset
from tinygen.errors import ArgumentError, DatasetFormatError, DownloadError
from tinygen.serialization import _CORRUPT_ERRORS, write_atomically

# Uncompressed size in bytes and SHA-256 of the uncompressed content of each canonical file.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": (47_040_016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (60_008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (7_840_016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (10_008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
# Public mirrors serving the gzipped files, tried in order (yann.lecun.com no longer serves them).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MAX_DOWNLOAD_BYTES = 64 << 20  # the largest gzipped file is about 10 MB
EMBEDDED_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_subset.npz")


class MNIST(Dataset):
    """The MNIST digits: the embedded subset (`root` None) or the IDX files in `root`."""

    classes = [str(digit) for digit in range(10)]  # label i is the digit i

    def __init__(self, root=None, train=True, download=False):
        self.root, self.train = root, bool(train)
        if root is None:
            if download:
                raise ArgumentError("MNIST(download=True) needs a root folder to download into")
            images, labels = load_embedded_mnist(self.train)
        else:
            if download:
                download_mnist(root)
            images, labels = load_mnist(root, self.train)
        self.images = images  # uint8 (N, 28, 28)
        self.labels = labels.astype(np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index][None].astype(np.float32) / 255, self.labels[index]  # (1, 28, 28)

    def __getitems__(self, indices):
        return self.images[indices][:, None].astype(np.float32) / 255, self.labels[indices]  # (B, 1, 28, 28)

    def arrays(self):
        """The whole split: images float32 (N, 1, 28, 28) in [0, 1] and labels int64 (N,)."""
        return self.__getitems__(slice(None))

    def __repr__(self):
        source = "embedded subset" if self.root is None else repr(os.fspath(self.root))
        return f"MNIST({'train' if self.train else 'test'}, {len(self)} images, {source})"


def load_embedded_mnist(train=True, path=EMBEDDED_PATH):
    """Images uint8 (N, 28, 28) and labels uint8 (N,) of the subset shipped with tinygen."""
    split = "train" if train else "test"
    keys = (f"{split}_images", f"{split}_labels")
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = (archive[key] for key in keys)
    except (KeyError, TypeError, AttributeError, *_CORRUPT_ERRORS) as err:  # TypeError: a lone .npy
        raise DatasetFormatError(
            f"{path}: the embedded MNIST subset cannot be read ({type(err).__name__}: {err}); "
            "reinstall tinygen or rebuild it with `python -m tinygen.data.build_subset`"
        ) from err
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetFormatError(f"{path}: {keys[0]} should be uint8 (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1] or labels.max(initial=0) > 9:
        raise DatasetFormatError(
            f"{path}: {keys[1]} should be {images.shape[0]} uint8 labels in 0..9, got {labels.dtype} {labels.shape}"
        )
    return images, labels


def verify_mnist(root, train=None):
    """Check the IDX files in `root` (raw or .gz) against `MNIST_SHA256`; return their paths.

    `train` None checks all four files, True or False those of one split. A missing file or a
    wrong size or hash raises `DatasetFormatError` naming the file and both hashes.
    """
    names = MNIST_FILES[True] + MNIST_FILES[False] if train is None else MNIST_FILES[bool(train)]
    paths = []
    for name in names:
        path = _find(root, name)
        digest, count = hashlib.sha256(), 0
        try:
            with _open(path) as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    count += len(chunk)
        except (OSError, EOFError, zlib.error) as err:
            raise DatasetFormatError(f"{path}: cannot be read ({err})") from err
        problem = _mismatch(name, count, digest.hexdigest())
        if problem:
            raise DatasetFormatError(f"{path}: {problem}")
        paths.append(path)
    return paths


def download_mnist(root, timeout=30):
    """Download into `root` each of the four gzipped files it lacks; return the new paths.

    Each file is tried at every mirror in `MNIST_MIRRORS`; it is written (atomically, as
    ``name.gz``) only once its uncompressed content matches `MNIST_SHA256`. Content that does not
    raises `DatasetFormatError`; no mirror answering raises `DownloadError` (an `OSError`).
    """
    os.makedirs(root, exist_ok=True)
    return [
        _download(name, root, timeout)
        for name in MNIST_SHA256
        if not any(os.path.exists(os.path.join(root, name + ext)) for ext in ("", ".gz"))
    ]


def _download(name, root, timeout):
    failures, mismatches = [], []
    for mirror in MNIST_MIRRORS:
        url = f"{mirror}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read(MAX_DOWNLOAD_BYTES + 1)
        except (OSError, ValueError) as err:  # URLError, HTTPError and timeouts are OSErrors
            failures.append(f"{url}: {err}")
            continue
        problem = _check_download(name, payload)
        if problem:
            mismatches.append(f"{url}: {problem}")
            continue
        path = os.path.join(root, name + ".gz")
        write_atomically(path, lambda file: file.write(payload))
        return path
    if mismatches:
        raise DatasetFormatError(f"{name}.gz: no mirror served the published file, nothing was kept: " + "; ".join(mismatches + failures))
    raise DownloadError(f"{name}.gz: could not be downloaded (timeout {timeout} s): " + "; ".join(failures))


def _check_download(name, payload):
    """None if the gzipped `payload` holds the published content of `name`, else what is wrong."""
    size, _ = MNIST_SHA256[name]
    if len(payload) > MAX_DOWNLOAD_BYTES:
        return f"the download is over the {MAX_DOWNLOAD_BYTES}-byte cap"
    try:
        content = gzip.GzipFile(fileobj=io.BytesIO(payload)).read(size + 1)  # a byte more shows a longer file
    except (OSError, EOFError, zlib.error) as err:
        return f"not a valid gzip file ({err})"
    return _mismatch(name, len(content), hashlib.sha256(content).hexdigest())


def _mismatch(name, size, sha256):
    """None if (size, sha256) are the published ones for `name`, else what differs."""
    expected_size, expected_sha256 = MNIST_SHA256[name]
    if (size, sha256) == (expected_size, expected_sha256):
        return None
    return (
        f"uncompressed content of {size} bytes has SHA-256 {sha256}, "
        f"expected {expected_size} bytes with SHA-256 {expected_sha256}"
    )
