"""The IDX format of MNIST, read and checked before it is trusted.

IDX (LeCun et al.) is a tiny big-endian format: a 4-byte magic number ``0 0 T D`` (T the element
type, D the number of dimensions), D 4-byte sizes, then the elements in C order. `read_idx`
checks the magic, the sizes and the length of the file against each other before it reads the
body, caps how much a gzipped file may decompress to, and raises `DatasetFormatError` naming the
file otherwise.
"""

import gzip
import math
import os
import struct

import numpy as np

from tinygen.errors import DatasetFormatError

# IDX element type codes -> big-endian NumPy dtypes.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_IDX_BYTES = 1 << 30  # refuse bodies over 1 GiB (a gzip bomb or a corrupt header)

MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _open(path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path, max_bytes=MAX_IDX_BYTES):
    """Read an IDX file (raw or gzipped) into a NumPy array in native byte order.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.idx")
    >>> _ = open(path, "wb").write(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6]))
    >>> read_idx(path)
    array([[1, 2, 3],
           [4, 5, 6]], dtype=uint8)
    """
    path = os.fspath(path)
    try:
        with _open(path) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES or head[3] == 0:
                raise DatasetFormatError(f"{path}: not an IDX file (magic bytes {head.hex() or 'missing'})")
            dtype, ndim = IDX_DTYPES[head[2]], head[3]
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DatasetFormatError(f"{path}: truncated header ({ndim} dimensions announced)")
            shape = struct.unpack(f">{ndim}I", dims_raw)
            nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
            if nbytes > max_bytes:
                raise DatasetFormatError(f"{path}: header announces shape {shape} ({nbytes} bytes), over the {max_bytes}-byte cap")
            body = f.read(nbytes + 1)  # one byte more reveals trailing garbage
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        if isinstance(err, FileNotFoundError):
            raise DatasetFormatError(f"{path}: no such file") from err
        raise DatasetFormatError(f"{path}: cannot be read ({err})") from err
    if len(body) < nbytes:
        raise DatasetFormatError(f"{path}: truncated: shape {shape} needs {nbytes} bytes of data, found {len(body)}")
    if len(body) > nbytes:
        raise DatasetFormatError(f"{path}: data continues past the {nbytes} bytes that shape {shape} needs")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(root, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(root, candidate)
        if os.path.exists(path):
            return path
    raise DatasetFormatError(f"{os.path.join(root, name)}[.gz]: no such file in {root!r}")


def load_mnist(root, train=True):
    """MNIST images (N, 28, 28) uint8 and labels (N,) uint8 from the IDX files in `root`."""
    image_file, label_file = (_find(root, name) for name in MNIST_FILES[bool(train)])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DatasetFormatError(f"{image_file}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1] or labels.dtype != np.uint8 or labels.max(initial=0) > 9:
        raise DatasetFormatError(
            f"{label_file}: expected {images.shape[0]} uint8 labels in 0..9 to match {image_file}, "
            f"got {labels.dtype} {labels.shape}"
        )
    return images, labels
