"""Pictures in and out: `read_png` decodes any standard PNG and `save_png` writes one, with zlib and
NumPy alone; `read_image` reads other formats through Pillow; `make_grid` tiles a batch of images.

The PNG format, in brief (W3C PNG specification, second edition)
---------------------------------------------------------------
A file is an 8-byte signature, ``89 50 4E 47 0D 0A 1A 0A``, then chunks, each
``length (4 bytes, big-endian) | type (4 ASCII letters) | data | CRC-32 of type and data``.
A type whose first letter is upper case is *critical*: a reader that does not know it must
refuse the file. A lower-case one is *ancillary* and may be skipped (text, gamma, timestamps).
The critical chunks, in this order:

- IHDR, 13 bytes: width and height (4 bytes each, at least 1), bit depth, colour type, and three
  methods: compression 0 (zlib), filter 0 (the five filters below), interlace 0 (none) or 1 (Adam7);
- PLTE, for palette images: 1 to 256 RGB triples (in an RGB image, an optional hint to ignore);
- IDAT, one or more in a row: together, one zlib stream holding the image data;
- IEND, empty: the end.

    colour type     samples per pixel   bit depths          read_png returns
    0 grey          1                   1, 2, 4, 8, 16      (H, W)
    2 RGB           3                   8, 16               (H, W, 3)
    3 palette       1, an index         1, 2, 4, 8          (H, W, 3), or (H, W, 4) with tRNS
    4 grey + alpha  2                   8, 16               (H, W, 2)
    6 RGBA          4                   8, 16               (H, W, 4)

The ancillary tRNS chunk, between PLTE and IDAT, gives palette entries an alpha (one byte per
entry; 255 for the entries past its end), or names the one grey value or RGB colour (2 bytes a
sample) that is fully transparent: grey then comes out as (H, W, 2), RGB as (H, W, 4).
Grey at 1, 2 or 4 bits is scaled to 0..255 (a 2-bit 3 is 255); 16-bit files give uint16
(native byte order), all others uint8.

The inflated data is rows of samples, big-endian at 16 bits, packed most significant bits first
at 1, 2 and 4 bits, each row starting on a byte boundary and led by a filter-type byte: the row
holds differences from a prediction made of the bytes to its left, above and above-left (None,
Sub, Up, Average, Paeth: `tinygen.kernels.png.reference` has the formulas). Adam7 interlacing
sends the image as seven smaller images, each with its own rows and filters, so that a viewer can
show a coarse picture early. Pass i holds the pixels (x0 + j dx, y0 + k dy):

    pass      1     2     3     4     5     6     7
    x0, y0   0, 0  4, 0  0, 4  2, 0  0, 2  1, 0  0, 1
    dx, dy   8, 8  8, 8  4, 8  4, 4  2, 4  2, 2  1, 2

A pass with no pixels (pass 2 of an image 4 pixels wide) has no bytes at all, not even filter bytes.

`read_png` checks all of it: the signature, every CRC, the chunks' order and lengths, the IHDR
values, the zlib stream, the data's length, the filter types and the palette indices. A damaged
file raises `DatasetFormatError` naming the file and the problem. `save_png` writes 8-bit grey,
grey + alpha, RGB or RGBA, filter type 0 on every row, not interlaced.

>>> import os, tempfile
>>> grid = make_grid(np.zeros((3, 1, 4, 4)), nrow=2, padding=1)   # 2 x 2 cells, 1 pixel apart
>>> grid.shape
(11, 11)
>>> path = os.path.join(tempfile.mkdtemp(), "grid.png")
>>> save_png(path, grid)
>>> bool((read_png(path) == np.where(grid == 1.0, 255, 0)).all())
True
"""

import io
import os
import struct
import zlib

import numpy as np

from tinygen.errors import ArgumentError, BackendUnavailableError, DatasetFormatError, DTypeError, ShapeError
from tinygen.kernels import png as png_kernels
from tinygen.serialization import write_atomically

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # colour type -> legal depths
SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))  # x0, y0, dx, dy
_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels of the array save_png is given -> colour type
# Other formats, by their first bytes, for the message when Pillow is missing (WebP: RIFF....WEBP).
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"),
          (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"RIFF", "WebP"))
PILLOW_HINT = "pip install 'tinygen[images]'"


def make_grid(images, nrow=8, padding=2, pad_value=1.0):
    """Tile float images (N, H, W), (N, 1, H, W) or (N, 3, H, W) into one picture, as torchvision.

    `nrow` images per row; `padding` pixels of `pad_value` around and between them. Returns
    (H', W') for grey images and (H', W', 3) for RGB ones, ready for `save_png`.
    """
    images = images.numpy() if hasattr(images, "numpy") else np.asarray(images)  # a Tensor too
    shape = images.shape
    if images.ndim == 3:
        images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or 0 in images.shape:
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


# --- writing --------------------------------------------------------------------------------


def save_png(path, array):
    """Write a grey (H, W), grey + alpha (H, W, 2), RGB (H, W, 3) or RGBA (H, W, 4) image to `path`,
    atomically.

    uint8 pixels are written as they are; float pixels are clipped to [0, 1] and scaled to
    0..255, rounding halves up (as torchvision's `save_image`).
    """
    array = np.asarray(array)
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (2, 3, 4))) or 0 in array.shape:
        raise ShapeError(
            f"save_png takes a grey (H, W), grey + alpha (H, W, 2), RGB (H, W, 3) or RGBA (H, W, 4) image "
            f"with H, W >= 1, got shape {array.shape}"
        )
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise ArgumentError(f"save_png: the {array.dtype} image {array.shape} contains NaN")
        array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise DTypeError(f"save_png takes uint8 or float pixels, got dtype {array.dtype} (shape {array.shape})")
    png = encode_png(array)
    write_atomically(path, lambda file: file.write(png))


def encode_png(pixels):
    """The bytes of a PNG file holding the uint8 image `pixels`, (H, W), (H, W, 2), (H, W, 3) or (H, W, 4)."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
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


# --- reading --------------------------------------------------------------------------------


def read_png(path):
    """Decode the PNG file at `path`: (H, W) grey, (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4)
    RGBA, uint8, or uint16 for 16-bit files (see the module docstring for the whole mapping).

    A file that cannot be read, or is not a valid PNG, raises `DatasetFormatError` naming the file.
    """
    path = os.fspath(path)
    return decode_png(_read_file(path), path)


def decode_png(data, name="<bytes>"):
    """`read_png` for the bytes of a PNG file; `name` is the file the errors name."""
    chunks = _read_chunks(data, name)
    width, height, depth, colour, interlace = _read_header(chunks[0], name)
    palette, transparency, idat = _read_other_chunks(chunks[1:], colour, name)
    bits = depth * SAMPLES[colour]  # per pixel
    passes = []  # (pass number, x0, y0, dx, dy, pixels per row, rows, bytes per row) of each non-empty pass
    for number, (x0, y0, dx, dy) in enumerate(ADAM7 if interlace else ((0, 0, 1, 1),), 1):
        pass_width, pass_height = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_width > 0 and pass_height > 0:
            passes.append((number, x0, y0, dx, dy, pass_width, pass_height, (pass_width * bits + 7) // 8))
    raw = _inflate(idat, sum(h * (1 + stride) for *_, h, stride in passes), name)

    samples = np.empty((height, width, SAMPLES[colour]), np.uint16 if depth == 16 else np.uint8)
    start = 0
    for number, x0, y0, dx, dy, pass_width, pass_height, stride in passes:
        filtered = raw[start:start + pass_height * (1 + stride)].reshape(pass_height, 1 + stride)
        start += filtered.size
        bad = np.flatnonzero(filtered[:, 0] > 4)
        if bad.size:
            where = f"row {bad[0]} of pass {number}" if interlace else f"row {bad[0]}"
            raise DatasetFormatError(f"{name}: {where} has filter type {filtered[bad[0], 0]}; PNG's are 0 to 4")
        rows = np.empty((pass_height, stride), np.uint8)
        png_kernels.unfilter(filtered, rows, max(1, bits // 8))
        samples[y0::dy, x0::dx] = _unpack(rows, pass_width, depth, SAMPLES[colour])
    return _pixels(samples, depth, colour, palette, transparency, name)


def _read_file(path):
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as err:
        raise DatasetFormatError(f"{path}: cannot be read ({err})") from err


def _read_chunks(data, name):
    """[(type, data), ...] up to and including IEND, each chunk's type and CRC checked."""
    if not data.startswith(PNG_SIGNATURE):
        raise DatasetFormatError(f"{name}: not a PNG file (starts with {data[:8]!r})")
    chunks, pos = [], len(PNG_SIGNATURE)
    while not chunks or chunks[-1][0] != b"IEND":
        if pos + 12 > len(data):
            raise DatasetFormatError(f"{name}: truncated at byte {pos} (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if not kind.isalpha():  # bytes.isalpha: ASCII letters only
            raise DatasetFormatError(f"{name}: the chunk at byte {pos} has type {kind!r}, not four ASCII letters")
        if length > 2**31 - 1:
            raise DatasetFormatError(f"{name}: the {kind!r} chunk at byte {pos} claims {length} bytes (at most 2^31 - 1)")
        body, end = data[pos + 8:pos + 8 + length], pos + 12 + length
        if end > len(data):
            raise DatasetFormatError(f"{name}: the {kind!r} chunk at byte {pos} is truncated")
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(kind + body) != crc:
            raise DatasetFormatError(f"{name}: CRC mismatch in the {kind!r} chunk at byte {pos}")
        chunks.append((kind, body))
        pos = end
    if pos != len(data):
        raise DatasetFormatError(f"{name}: {len(data) - pos} bytes after the IEND chunk")
    return chunks


def _read_header(chunk, name):
    """(width, height, bit depth, colour type, interlace) from the IHDR chunk, each value checked."""
    kind, body = chunk
    if kind != b"IHDR" or len(body) != 13:
        raise DatasetFormatError(f"{name}: the first chunk is {kind!r} of {len(body)} bytes, not a 13-byte IHDR")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    problems = []
    if not 1 <= width <= 2**31 - 1 or not 1 <= height <= 2**31 - 1:
        problems.append(f"size {width}x{height} (each side 1 to 2^31 - 1)")
    if colour not in BIT_DEPTHS:
        problems.append(f"colour type {colour} (PNG's are 0, 2, 3, 4, 6)")
    elif depth not in BIT_DEPTHS[colour]:
        problems.append(f"bit depth {depth} with colour type {colour} (allowed: {', '.join(map(str, BIT_DEPTHS[colour]))})")
    if compression != 0:
        problems.append(f"compression method {compression} (only 0)")
    if filtering != 0:
        problems.append(f"filter method {filtering} (only 0)")
    if interlace not in (0, 1):
        problems.append(f"interlace method {interlace} (0 or 1)")
    if problems:
        raise DatasetFormatError(f"{name}: invalid IHDR: {'; '.join(problems)}")
    return width, height, depth, colour, interlace


def _read_other_chunks(chunks, colour, name):
    """(palette (n, 3) uint8 or None, tRNS bytes or None, the IDAT data joined) from the chunks after
    IHDR, their order and lengths checked; unknown ancillary chunks are skipped."""
    palette = transparency = None
    idat, idat_done = [], False
    for kind, body in chunks:
        if kind == b"IDAT":
            if idat_done:
                raise DatasetFormatError(f"{name}: the IDAT chunks are not consecutive")
            idat.append(body)
            continue
        idat_done = bool(idat)
        if kind == b"PLTE":
            if palette is not None or idat or transparency is not None:
                before = "PLTE" if palette is not None else "tRNS" if transparency is not None else "IDAT"
                raise DatasetFormatError(f"{name}: a PLTE chunk after {before}")
            if colour in (0, 4):
                raise DatasetFormatError(f"{name}: a PLTE chunk in a grey image (colour type {colour})")
            if len(body) % 3 or not 3 <= len(body) <= 768:
                raise DatasetFormatError(f"{name}: the PLTE chunk has {len(body)} bytes, not 3 to 768 in RGB triples")
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"tRNS":
            if transparency is not None or idat:
                raise DatasetFormatError(f"{name}: a tRNS chunk after {'tRNS' if transparency is not None else 'IDAT'}")
            expected = {0: 2, 2: 6}.get(colour)
            if colour == 3 and (palette is None or len(body) > len(palette)):
                entries = "no PLTE before it" if palette is None else f"PLTE has {len(palette)} entries"
                raise DatasetFormatError(f"{name}: the tRNS chunk has {len(body)} alpha values, but {entries}")
            if expected is not None and len(body) != expected:
                raise DatasetFormatError(
                    f"{name}: the tRNS chunk has {len(body)} bytes; colour type {colour} takes {expected}"
                )
            # NOTE: as libpng does, a tRNS chunk is ignored where it is empty (no palette entry gets an
            # alpha) and in images with an alpha channel (types 4 and 6, where the spec forbids it).
            transparency = body if colour in (0, 2, 3) else b""
        elif kind == b"IHDR":
            raise DatasetFormatError(f"{name}: a second IHDR chunk")
        elif kind == b"IEND":
            if body:
                raise DatasetFormatError(f"{name}: the IEND chunk has {len(body)} bytes; it is empty")
        elif kind[:1].isupper():  # an unknown critical chunk: the image cannot be decoded without it
            raise DatasetFormatError(f"{name}: unknown critical chunk {kind!r}")
    if colour == 3 and palette is None:
        raise DatasetFormatError(f"{name}: a palette image (colour type 3) without a PLTE chunk")
    if not idat:
        raise DatasetFormatError(f"{name}: no IDAT chunk (no image data)")
    return palette, transparency or None, b"".join(idat)


def _inflate(idat, expected, name):
    """The IDAT stream inflated, as a uint8 array of exactly `expected` bytes."""
    stream = zlib.decompressobj()
    try:
        raw = stream.decompress(idat, min(expected + 1, 2**62))  # one byte more than expected: too many
        if len(raw) == expected and not stream.eof:  # only the stream's end (and checksum) may be left
            raw += stream.decompress(stream.unconsumed_tail, 1)
    except zlib.error as err:
        raise DatasetFormatError(f"{name}: the image data does not inflate ({err})") from err
    if len(raw) > expected:
        raise DatasetFormatError(f"{name}: the image data inflates to more than the {expected} bytes the IHDR implies")
    if not stream.eof:
        raise DatasetFormatError(
            f"{name}: the image data is truncated: its zlib stream stops after {len(raw)} of {expected} bytes"
        )
    if len(raw) != expected:
        raise DatasetFormatError(f"{name}: the image data inflates to {len(raw)} bytes, expected {expected}")
    # NOTE: bytes after the zlib stream's end (stream.unused_data) are ignored, as libpng does.
    return np.frombuffer(raw, np.uint8)


def _unpack(rows, width, depth, channels):
    """(rows, width, channels) samples from unfiltered rows of bytes: uint8, or uint16 at 16 bits."""
    height = rows.shape[0]
    if depth == 8:
        return rows.reshape(height, width, channels)
    if depth == 16:  # big-endian in the file
        return rows.view(">u2").astype(np.uint16).reshape(height, width, channels)
    shifts = np.arange(8 - depth, -1, -depth, dtype=np.uint8)  # the samples of a byte, high bits first
    samples = (rows[:, :, None] >> shifts) & np.uint8(2**depth - 1)  # (rows, bytes, 8 / depth)
    return samples.reshape(height, -1)[:, :width, None]  # the last byte's spare bits dropped


def _pixels(samples, depth, colour, palette, transparency, name):
    """The array `read_png` returns, from the (H, W, samples per pixel) samples."""
    top = np.uint16(65535) if depth == 16 else np.uint8(255)
    if colour == 3:
        index = samples[..., 0]
        if index.max() >= len(palette):
            y, x = np.argwhere(index >= len(palette))[0]
            raise DatasetFormatError(
                f"{name}: pixel (y={y}, x={x}) has palette index {index[y, x]}, but PLTE has {len(palette)} entries"
            )
        if transparency is None:
            return palette[index]
        alpha = np.full(len(palette), 255, np.uint8)
        alpha[:len(transparency)] = np.frombuffer(transparency, np.uint8)
        return np.concatenate([palette, alpha[:, None]], axis=1)[index]  # (n, 4) RGBA table -> (H, W, 4)
    if colour in (4, 6):
        return samples
    if transparency is not None:  # the one key colour becomes transparent, every other pixel opaque
        key = np.frombuffer(transparency, ">u2").astype(np.uint16)
        alpha = np.where((samples == key).all(axis=-1, keepdims=True), samples.dtype.type(0), top)
    if colour == 0 and depth < 8:
        samples = samples * np.uint8(255 // (2**depth - 1))  # 1 -> 255, 3 -> 255, 15 -> 255
    if transparency is not None:
        return np.concatenate([samples, alpha], axis=-1)
    return samples[..., 0] if colour == 0 else samples


# --- other formats --------------------------------------------------------------------------


def read_image(path):
    """Read the image at `path` into the arrays `read_png` returns: PNG by `read_png`, every other
    format (JPEG, BMP, GIF, WebP, TIFF...) through Pillow where it is installed (the ``images``
    extra: pip install 'tinygen[images]').

    The format is told by the file's first bytes, not its name. Pillow's modes map onto read_png's
    layouts: palette images give RGB (RGBA with transparency), 1-bit images grey 0 or 255, CMYK and
    YCbCr RGB, 16-bit grey uint16. As torchvision's loader, an EXIF orientation is not applied;
    animations give their first frame. A file that cannot be read or decoded raises
    `DatasetFormatError` naming it; a non-PNG file where Pillow is missing raises
    `BackendUnavailableError` naming the extra.
    """
    path = os.fspath(path)
    data = _read_file(path)
    if data.startswith(PNG_SIGNATURE):
        return decode_png(data, path)
    try:
        from PIL import Image
    except ImportError:
        kind = next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)
        if kind == "WebP" and data[8:12] != b"WEBP":
            kind = None
        if kind is None:
            raise DatasetFormatError(
                f"{path}: not a PNG file (starts with {data[:8]!r}); tinygen reads PNG itself, and other formats "
                f"through Pillow, which is not installed: {PILLOW_HINT}"
            ) from None
        raise BackendUnavailableError(
            f"{path}: a {kind} file; tinygen reads PNG itself, and {kind} through Pillow, "
            f"which is not installed: {PILLOW_HINT}"
        ) from None
    return _decode_with_pillow(Image, data, path)


def _decode_with_pillow(Image, data, path):
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode, transparent = image.mode, image.info.get("transparency", b"") != b""  # b"": an empty tRNS
            if mode in ("P", "PA"):
                if not transparent:
                    image.info.pop("transparency", None)  # an empty one: Pillow would warn, and ignore it
                image = image.convert("RGBA" if transparent or mode == "PA" else "RGB")
            elif mode in ("L", "1") and transparent:
                image = image.convert("LA")
            elif mode == "1":
                image = image.convert("L")  # False, True -> 0, 255
            elif mode == "RGB" and transparent:
                image = image.convert("RGBA")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                image = image.convert("RGB")
            elif mode in ("La", "RGBa"):  # premultiplied alpha
                image = image.convert(mode.upper())
            pixels = np.asarray(image)
    except Exception as err:  # Pillow raises many kinds: UnidentifiedImageError, OSError, SyntaxError...
        raise DatasetFormatError(f"{path}: Pillow cannot decode it ({type(err).__name__}: {err})") from err
    if mode.startswith("I;16"):
        return pixels.astype(np.uint16)  # Pillow's 16-bit grey, in whichever byte order, to native
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise DatasetFormatError(
            f"{path}: Pillow reads it in mode {mode!r} ({pixels.dtype}), which has no uint8 layout here"
        )
    return pixels
