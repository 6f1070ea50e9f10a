"""make_grid lays images out as torchvision does; save_png writes valid PNGs that decode to the same pixels."""

import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygen
from tinygen.errors import ArgumentError, DatasetFormatError, DTypeError, ShapeError
from tinygen.image import PNG_SIGNATURE, encode_png, make_grid, read_png, save_png

images_uint8 = st.tuples(st.integers(1, 17), st.integers(1, 17), st.sampled_from([(), (3,)])).flatmap(
    lambda s: hnp.arrays(np.uint8, s[:2] + s[2])
)


def chunks(data):
    """[(type, data, crc_ok)] parsed independently of tinygen.image."""
    assert data[:8] == PNG_SIGNATURE
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        out.append((kind, body, crc == zlib.crc32(kind + body)))
        pos += 12 + length
    return out


@given(pixels=images_uint8)
def test_round_trip_is_exact(tmp_path_factory, pixels):
    path = tmp_path_factory.mktemp("png") / "a.png"
    save_png(path, pixels)
    out = read_png(path)
    assert out.dtype == np.uint8 and out.shape == pixels.shape
    np.testing.assert_array_equal(out, pixels)


@given(pixels=images_uint8)
def test_the_file_is_a_valid_png(pixels):
    parsed = chunks(encode_png(pixels))
    assert [kind for kind, _, _ in parsed] == [b"IHDR", b"IDAT", b"IEND"] and all(ok for _, _, ok in parsed)
    width, height, depth, colour, *rest = struct.unpack(">IIBBBBB", parsed[0][1])
    assert (height, width, depth, colour, rest) == (pixels.shape[0], pixels.shape[1], 8, 2 if pixels.ndim == 3 else 0, [0, 0, 0])
    rows = np.frombuffer(zlib.decompress(parsed[1][1]), np.uint8).reshape(height, -1)
    assert (rows[:, 0] == 0).all()  # filter type 0 on every row
    np.testing.assert_array_equal(rows[:, 1:], pixels.reshape(height, -1))


def test_floats_are_clipped_and_rounded(tmp_path):
    path = tmp_path / "f.png"
    save_png(path, np.array([[-1.0, 0.0, 0.5, 1.0, 2.0, np.inf, 0.3 / 255, 0.5 / 255]], np.float32))
    assert read_png(path).tolist() == [[0, 0, 128, 255, 255, 255, 0, 1]]


def test_with_pillow_when_it_is_installed(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    pixels = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    for array in (pixels, pixels[..., 0]):
        save_png(tmp_path / "p.png", array)
        with Image.open(tmp_path / "p.png") as image:
            np.testing.assert_array_equal(np.asarray(image), array)


@pytest.mark.parametrize(
    "array, error, message",
    [
        (np.zeros((4, 4, 4), np.uint8), ShapeError, r"got shape \(4, 4, 4\)"),
        (np.zeros((0, 3)), ShapeError, r"got shape \(0, 3\)"),
        (np.zeros(5), ShapeError, r"got shape \(5,\)"),
        (np.zeros((2, 2), np.int32), DTypeError, r"got dtype int32 \(shape \(2, 2\)\)"),
        (np.zeros((2, 2), bool), DTypeError, "got dtype bool"),
        (np.array([[0.0, np.nan]]), ArgumentError, r"float64 image \(1, 2\) contains NaN"),
    ],
)
def test_bad_images_are_refused_and_the_old_file_kept(tmp_path, array, error, message):
    path = tmp_path / "old.png"
    save_png(path, np.zeros((2, 2), np.uint8))
    before = path.read_bytes()
    with pytest.raises(error, match=message):
        save_png(path, array)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["old.png"]


def corrupt(data):
    """(name, bytes, expected message) for files read_png must refuse."""
    idat = data.index(b"IDAT")
    flipped = bytearray(data)
    flipped[idat + 6] ^= 1
    yield "CRC", bytes(flipped), "CRC mismatch in the b'IDAT' chunk"
    yield "truncated", data[:-20], "truncated"
    yield "signature", b"GIF89a" + data[6:], "not a PNG file"
    yield "trailing", data + b"\x00", "1 bytes after the IEND chunk"
    header = struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0)
    sub = zlib.compress(bytes([1, 0, 0, 0, 0, 0]))  # row 0 uses filter 1 ("Sub")
    yield "filter", PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", sub) + _chunk(b"IEND", b""), "row 0 uses filter type 1"
    sixteen = struct.pack(">IIBBBBB", 2, 2, 16, 0, 0, 0, 0)
    yield "depth", PNG_SIGNATURE + _chunk(b"IHDR", sixteen) + _chunk(b"IEND", b""), "bit depth 16"
    palette = PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"PLTE", b"\0\0\0") + _chunk(b"IEND", b"")
    yield "palette", palette, "unsupported critical chunk b'PLTE'"
    short = PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0\0")) + _chunk(b"IEND", b"")
    yield "short", short, "inflates to 2 bytes, expected 6"


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_damaged_or_unsupported_files_are_refused(tmp_path):
    for name, payload, message in corrupt(encode_png(np.arange(60, dtype=np.uint8).reshape(6, 10))):
        path = tmp_path / f"{name}.png"
        path.write_bytes(payload)
        with pytest.raises(DatasetFormatError, match=message) as info:
            read_png(path)
        assert str(path) in str(info.value), name
    with pytest.raises(DatasetFormatError, match="cannot be read"):
        read_png(tmp_path / "missing.png")


@given(
    n=st.integers(1, 11), nrow=st.integers(1, 5), padding=st.integers(0, 3),
    h=st.integers(1, 5), w=st.integers(1, 5), channels=st.sampled_from([None, 1, 3]),
)
def test_grid_layout(n, nrow, padding, h, w, channels):
    shape = (n, h, w) if channels is None else (n, channels, h, w)
    images = np.random.default_rng(n).uniform(0.0, 0.9, shape).astype(np.float32)
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=1.0)
    cols, rows = min(nrow, n), -(-n // min(nrow, n))
    assert grid.shape[:2] == (rows * (h + padding) + padding, cols * (w + padding) + padding)
    assert grid.shape[2:] == ((3,) if channels == 3 else ()) and grid.dtype == np.float32
    covered = np.zeros(grid.shape[:2], bool)
    for i in range(n):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        cell = grid[top:top + h, left:left + w]
        want = images[i] if channels is None else images[i].transpose(1, 2, 0).squeeze(-1 if channels == 1 else ())
        np.testing.assert_array_equal(cell, want)
        covered[top:top + h, left:left + w] = True
    assert (grid[~covered] == 1.0).all()  # the padding and the empty cells


def test_grid_arguments(tmp_path):
    assert make_grid(tinygen.zeros(2, 1, 3, 3), nrow=2, padding=0).shape == (3, 6)  # a Tensor too
    assert make_grid(np.zeros((1, 2, 2)), padding=1, pad_value=0.25)[0, 0] == 0.25
    with pytest.raises(ShapeError, match=r"got \(4, 2, 5, 5\)"):
        make_grid(np.zeros((4, 2, 5, 5)))
    with pytest.raises(ShapeError, match=r"got \(0, 5, 5\)"):
        make_grid(np.zeros((0, 5, 5)))
    with pytest.raises(DTypeError, match="got dtype uint8"):
        make_grid(np.zeros((4, 5, 5), np.uint8))
    for kwargs in ({"nrow": 0}, {"nrow": 2.5}, {"padding": -1}):
        with pytest.raises(ArgumentError, match=f"{next(iter(kwargs))} must be an integer"):
            make_grid(np.zeros((4, 5, 5)), **kwargs)


def test_a_grid_of_real_digits(tmp_path):
    from tinygen.data import MNIST

    images, labels = MNIST(train=False).arrays()
    grid = make_grid(images[:16], nrow=4)
    save_png(tmp_path / "digits.png", grid)
    pixels = read_png(tmp_path / "digits.png")
    assert pixels.shape == (4 * 30 + 2, 4 * 30 + 2)
    np.testing.assert_array_equal(pixels[2:30, 2:30], np.rint(images[0, 0] * 255))  # uint8 -> [0, 1] -> uint8
