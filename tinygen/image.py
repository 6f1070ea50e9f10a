"""Pictures out: `make_grid` tiles a batch of images, `save_png` writes a PNG with zlib alone.

A PNG file (W3C PNG specification) is an 8-byte signature and a list of chunks, each
``length (4 bytes, big-endian) | type (4 letters) | data | CRC-32 of type and data``. `save_png`
writes three: IHDR (width, height, bit depth 8, colour type 0 grey or 2 RGB, no interlace), one
IDAT (the zlib-compressed rows, each led by its filter byte, 0 = "None"), and an empty IEND.
`read_png` decodes exactly such files, checking every CRC, so tests need no image library.

>>> import os, tempfile
>>> grid = make_grid(np.zeros((3, 1, 4, 4)), nrow=2, padding=1)   # 2 x 2 cells, 1 pixel apart
>>> grid.shape
(11, 11)
>>> path = os.path.join(tempfile.mkdtemp(), "grid.png")
>>> save_png(path, grid)
>>> bool((read_png(path) == np.where(grid == 1.0, 255, 0)).all())
True
"""

import os
import struct
import zlib

import numpy as np

from tinygen.errors import ArgumentError, DatasetFormatError, DTypeError, ShapeError
from tinygen.serialization import write_atomically

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (0 greyscale, 2 RGB)


def make_grid(images, nrow=8, padding=2, pad_value=1.0):
    """Tile float images (N, H, W), (N, 1, H, W) or (N, 3, H, W) into one picture, as torchvision.

    `nrow` images per row; `padding` pixels of `pad_value` around and between them. Returns
    (H', W') for grey images and (H', W', 3) for RGB ones, ready for `save_png`.
    """
    images = images.numpy() if hasattr(images, "numpy") else np.asarray(images)  # a Tensor too
    shape = images.shape
    if images.ndim == 3:
        images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    if images.ndim != 4 or images.shape[1] not in _COLOUR_TYPES or 0 in images.shape:
        raise ShapeError(f"make_grid takes images of shape (N, H, W), (N, 1, H, W) or (N, 3, H, W), got {shape}")
    if images.dtype.kind != "f":
        raise DTypeError(f"make_grid takes float images in [0, 1], got dtype {images.dtype}")
    if not isinstance(nrow, (int, np.integer)) or isinstance(nrow, bool) or nrow < 1:
        raise ArgumentError(f"nrow must be an integer >= 1, got {nrow!r}")
    if not isinstance(padding, (int, np.integer)) or isinstance(padding, bool) or padding < 0:
        raise ArgumentError(f"padding must be an integer >= 0, got {padding!r}")
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value, images.dtype)
    for i, image in enumerate(images):
        row, col = divmod(i, cols)
        top, left = padding + row * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = image
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)  # (C, H', W') -> (H', W') or (H', W', 3)


def save_png(path, array):
    """Write a grey (H, W) or RGB (H, W, 3) image to `path`, atomically.

    uint8 pixels are written as they are; float pixels are clipped to [0, 1] and scaled to
    0..255, rounding halves up (as torchvision's `save_image`).
    """
    array = np.asarray(array)
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or 0 in array.shape:
        raise ShapeError(f"save_png takes a grey (H, W) or RGB (H, W, 3) image with H, W >= 1, got shape {array.shape}")
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise ArgumentError(f"save_png: the {array.dtype} image {array.shape} contains NaN")
        array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise DTypeError(f"save_png takes uint8 or float pixels, got dtype {array.dtype} (shape {array.shape})")
    png = encode_png(array)
    write_atomically(path, lambda file: file.write(png))


def encode_png(pixels):
    """The bytes of a PNG file holding the uint8 image `pixels`, (H, W) or (H, W, 3)."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3
    rows = np.zeros((height, 1 + width * channels), np.uint8)  # column 0: each row's filter byte, 0
    rows[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def read_png(path):
    """Decode a PNG written by `save_png` (8-bit grey or RGB, filter 0, no interlace) to uint8.

    Every chunk's CRC is checked; anything else (other bit depths, palettes, interlacing,
    filters other than 0, damaged data) raises `DatasetFormatError` naming the file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as err:
        raise DatasetFormatError(f"{path}: cannot be read ({err})") from err
    chunks = _read_chunks(data, path)
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise DatasetFormatError(f"{path}: the first chunk is {chunks[0][0]!r}, not a 13-byte IHDR")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 8 or colour not in (0, 2) or (compression, filtering, interlace) != (0, 0, 0) or not width or not height:
        raise DatasetFormatError(
            f"{path}: unsupported PNG {width}x{height}, bit depth {depth}, colour type {colour}, "
            f"interlace {interlace}: this reader decodes the 8-bit grey or RGB files save_png writes"
        )
    for kind, _ in chunks[1:]:
        if kind not in (b"IDAT", b"IEND") and kind[:1].isupper():  # an uppercase first letter: critical
            raise DatasetFormatError(f"{path}: unsupported critical chunk {kind!r}")
    channels = 1 if colour == 0 else 3
    stride = 1 + width * channels
    try:
        raw = zlib.decompressobj().decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"), height * stride + 1)
    except zlib.error as err:
        raise DatasetFormatError(f"{path}: the image data does not inflate ({err})") from err
    if len(raw) != height * stride:
        raise DatasetFormatError(f"{path}: the image data inflates to {len(raw)} bytes, expected {height * stride}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride)
    filtered = np.flatnonzero(rows[:, 0])
    if filtered.size:
        row = filtered[0]
        raise DatasetFormatError(f"{path}: row {row} uses filter type {rows[row, 0]}; this reader undoes only filter 0")
    pixels = rows[:, 1:].reshape((height, width) if channels == 1 else (height, width, 3))
    return pixels.copy()


def _read_chunks(data, path):
    """[(type, data), ...] up to and including IEND, each chunk's CRC checked."""
    if not data.startswith(PNG_SIGNATURE):
        raise DatasetFormatError(f"{path}: not a PNG file (starts with {data[:8]!r})")
    chunks, pos = [], len(PNG_SIGNATURE)
    while not chunks or chunks[-1][0] != b"IEND":
        if pos + 12 > len(data):
            raise DatasetFormatError(f"{path}: truncated at byte {pos} (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body, end = data[pos + 8:pos + 8 + length], pos + 12 + length
        if end > len(data):
            raise DatasetFormatError(f"{path}: the {kind!r} chunk at byte {pos} is truncated")
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(kind + body) != crc:
            raise DatasetFormatError(f"{path}: CRC mismatch in the {kind!r} chunk at byte {pos}")
        chunks.append((kind, body))
        pos = end
    if pos != len(data):
        raise DatasetFormatError(f"{path}: {len(data) - pos} bytes after the IEND chunk")
    return chunks
