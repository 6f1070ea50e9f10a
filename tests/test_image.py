"""Reading and writing images.

- read_png on files written by `encode` below, a small PNG encoder independent of tinygen.image
  (written from the W3C specification): every colour type at every legal bit depth, interlaced
  or not, a random filter type on each row, sizes from 1x1 up with widths that are not multiples
  of 8, PLTE and tRNS, IDAT split over several chunks, ancillary chunks to skip. Each file is
  checked against the pixels it was made from and, where Pillow is installed, against Pillow.
- read_png against Pillow on every file of ../shared/data/emoji (skipped where it is missing).
- Every kind of damage raises DatasetFormatError naming the file.
- save_png writes grey, grey + alpha, RGB and RGBA that read_png and Pillow read back; make_grid
  lays images out as torchvision does.
- read_image: PNG itself, other formats through Pillow, told apart by their first bytes; without
  Pillow, a JPEG raises an error naming the extra to install.
"""

import os
import re
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygen
from tinygen.errors import ArgumentError, BackendUnavailableError, DatasetFormatError, DTypeError, ShapeError
from tinygen.image import PNG_SIGNATURE, encode_png, make_grid, read_image, read_png, save_png
from tinygen.kernels import png as png_kernels

EMOJI = Path(__file__).resolve().parents[2] / "shared" / "data" / "emoji"

# --- an independent PNG encoder (W3C PNG specification, second edition) -----------------------

DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # table 11.1
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
PASSES = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]  # x0, y0, dx, dy


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def pack_row(values, depth):
    """A scanline's bytes from its samples: big-endian at 16 bits, high bits first below 8."""
    if depth >= 8:
        return b"".join(int(v).to_bytes(depth // 8, "big") for v in values)
    bits = "".join(format(int(v), f"0{depth}b") for v in values)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def filter_row(row, prev, kind, bpp):
    """Filter type `kind` applied to `row` (bytes), with `prev` the unfiltered row above."""
    out = bytearray([kind])
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        p = a + b - c
        paeth = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else b if abs(p - b) <= abs(p - c) else c
        out.append((x - (0, a, b, (a + b) // 2, paeth)[kind]) % 256)
    return bytes(out)


def encode(samples, colour, depth, interlace=False, filters=None, palette=None, trns=None,
           ancillary=False, idat_pieces=1, seed=0):
    """PNG bytes of `samples`, (H, W, channels) integers below 2**depth. `filters`: "random" (a filter
    type drawn for each row) or a fixed type; `ancillary` adds chunks a reader must skip."""
    rng = np.random.default_rng(seed)
    height, width, channels = samples.shape
    bpp = max(1, depth * channels // 8)
    data = bytearray()
    for x0, y0, dx, dy in PASSES if interlace else [(0, 0, 1, 1)]:
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue  # an empty pass has no bytes
        prev = bytes(len(pack_row(sub[0].reshape(-1), depth)))
        for line in sub:
            row = pack_row(line.reshape(-1), depth)
            kind = int(rng.integers(0, 5)) if filters == "random" else filters or 0
            data += filter_row(row, prev, kind, bpp)
            prev = row
    stream = zlib.compress(bytes(data), int(rng.integers(0, 10)))
    cuts = sorted(rng.integers(0, len(stream) + 1, idat_pieces - 1)) if idat_pieces > 1 else []
    pieces = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)])]
    out = PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(interlace)))
    if ancillary:
        out += chunk(b"gAMA", struct.pack(">I", 45455)) + chunk(b"tEXt", b"Comment\0made by test_image.py")
    if palette is not None:
        out += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if ancillary:
        out += chunk(b"zzZz", b"an unknown ancillary chunk")
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += b"".join(chunk(b"IDAT", piece) for piece in pieces)
    if ancillary:
        out += chunk(b"tIME", bytes(7))
    return out + chunk(b"IEND", b"")


@st.composite
def png_cases(draw):
    """(PNG bytes, expected pixels, colour type, bit depth, transparency?) over every legal combination."""
    colour = draw(st.sampled_from(sorted(DEPTHS)))
    depth = draw(st.sampled_from(DEPTHS[colour]))
    height, width = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    entries = draw(st.integers(1, 2**depth if depth < 8 else 256)) if colour == 3 else None
    top = entries if colour == 3 else 2**depth
    if draw(st.booleans()):
        samples = rng.integers(0, top, (height, width, CHANNELS[colour]))
    else:  # few distinct values: flat areas, and Paeth's ties
        samples = rng.choice(np.unique([0, top // 2, top - 1]), (height, width, CHANNELS[colour]))
    palette = trns = None
    transparent = colour in (0, 2, 3) and draw(st.booleans())
    if colour == 3:
        palette = rng.integers(0, 256, (entries, 3))
        if transparent:
            trns = rng.integers(0, 256, draw(st.integers(0, entries))).astype(np.uint8).tobytes()
    elif colour in (2, 6) and draw(st.booleans()):
        palette = rng.integers(0, 256, (draw(st.integers(1, 256)), 3))  # a suggested palette, to ignore
    if transparent and colour != 3:  # the key: a colour in the image, or (rarely hit) any value
        if draw(st.booleans()):
            key = samples[rng.integers(height), rng.integers(width)]
        else:
            key = rng.integers(0, top, CHANNELS[colour])
        trns = b"".join(int(v).to_bytes(2, "big") for v in key)
    data = encode(samples, colour, depth, interlace=draw(st.booleans()), filters="random", palette=palette,
                  trns=trns, ancillary=draw(st.booleans()), idat_pieces=draw(st.integers(1, 3)), seed=seed)
    return data, expected_pixels(samples, colour, depth, palette, trns), colour, depth, bool(trns)


def expected_pixels(samples, colour, depth, palette, trns):
    """What read_png must return for these samples (the module docstring's table)."""
    dtype, top = (np.uint16, 65535) if depth == 16 else (np.uint8, 255)
    if colour == 3:
        pixels = palette[samples[..., 0]]
        if trns:  # an empty tRNS gives no entry an alpha: RGB
            alpha = np.full(len(palette), 255)
            alpha[:len(trns)] = list(trns)
            pixels = np.concatenate([pixels, alpha[samples[..., 0]][..., None]], axis=-1)
        return pixels.astype(np.uint8)
    pixels = samples * (255 // (2**depth - 1)) if colour == 0 and depth < 8 else samples
    if trns is not None:
        key = [int.from_bytes(trns[i:i + 2], "big") for i in range(0, len(trns), 2)]
        alpha = np.where((samples == key).all(axis=-1), 0, top)
        pixels = np.concatenate([pixels, alpha[..., None]], axis=-1)
    return (pixels[..., 0] if pixels.shape[-1] == 1 else pixels).astype(dtype)


def assert_same_as_pillow(Image, path, ours, colour, depth, transparent):
    """Pillow's reading of a PNG, mapped onto read_png's layout, equals `ours`.

    Where Pillow differs by design: at 16 bits it keeps only grey, giving the high bytes of the
    other colour types, and grey + alpha as RGBA. Where it differs by a bug (Pillow 9 to 11 at
    least): it compares a tRNS key at 2, 4 or 16 bits with its 8-bit samples (scaled, or the high
    bytes), so that no pixel or the wrong ones turn transparent; there the colour channels alone
    are compared.
    """
    key_comparable = not (transparent and colour in (0, 2) and depth in (2, 4, 16))
    if not key_comparable:
        ours = ours[..., 0] if colour == 0 else ours[..., :3]  # drop the alpha that the key made
    with Image.open(path) as image:
        image.load()
        mode, keyed = image.mode, image.info.get("transparency", b"") != b"" and key_comparable
        if mode == "P":
            if not keyed:
                image.info.pop("transparency", None)  # an empty one: Pillow would warn, and ignore it
            image = image.convert("RGBA" if keyed else "RGB")
        elif mode in ("1", "L") and keyed:
            image = image.convert("LA")
        elif mode == "1":
            image = image.convert("L")
        elif mode == "RGB" and keyed:
            image = image.convert("RGBA")
        theirs = np.asarray(image)
    if depth == 16 and mode != "I;16":
        ours = (ours >> 8).astype(np.uint8)
        if colour == 4:
            ours = ours[..., [0, 0, 0, 1]]  # (H, W, 2) grey + alpha -> Pillow's RGBA
    assert (theirs.shape, theirs.dtype) == (ours.shape, ours.dtype), (mode, theirs.shape, theirs.dtype, ours.shape, ours.dtype)
    np.testing.assert_array_equal(theirs, ours)


# --- read_png on generated files --------------------------------------------------------------


@settings(max_examples=150)
@given(case=png_cases())
def test_read_png_decodes_every_kind_of_png(tmp_path_factory, case):
    data, expected, colour, depth, transparent = case
    path = tmp_path_factory.mktemp("png") / "generated.png"
    path.write_bytes(data)
    pixels = read_png(path)
    assert pixels.dtype == expected.dtype and pixels.shape == expected.shape, (pixels.dtype, pixels.shape)
    np.testing.assert_array_equal(pixels, expected)
    try:
        from PIL import Image
    except ImportError:
        return
    assert_same_as_pillow(Image, path, pixels, colour, depth, transparent)


@pytest.mark.parametrize("colour", sorted(DEPTHS))
def test_every_depth_interlaced_and_not(tmp_path, colour):
    # the hypothesis test draws these at random; here each combination is made once, 13x11 (Adam7's
    # seven passes all non-empty, widths not a multiple of 8), every row filter in turn
    rng = np.random.default_rng(colour)
    for depth in DEPTHS[colour]:
        for interlace in (False, True):
            for kind in range(5):
                palette = rng.integers(0, 256, (2**min(depth, 8), 3)) if colour == 3 else None
                top = len(palette) if colour == 3 else 2**depth
                samples = rng.integers(0, top, (11, 13, CHANNELS[colour]))
                path = tmp_path / f"c{colour}d{depth}i{int(interlace)}f{kind}.png"
                path.write_bytes(encode(samples, colour, depth, interlace, filters=kind, palette=palette))
                expected = expected_pixels(samples, colour, depth, palette, None)
                np.testing.assert_array_equal(read_png(path), expected, path.name)


def test_one_pixel_images(tmp_path):
    for colour in sorted(DEPTHS):
        for depth in DEPTHS[colour]:
            for interlace in (False, True):
                samples = np.full((1, 1, CHANNELS[colour]), 1)
                palette = np.array([[0, 0, 0], [10, 20, 30]]) if colour == 3 else None
                path = tmp_path / f"c{colour}d{depth}i{int(interlace)}.png"
                path.write_bytes(encode(samples, colour, depth, interlace, palette=palette))
                pixels = read_png(path)
                assert pixels.shape == (1, 1, *expected_pixels(samples, colour, depth, palette, None).shape[2:])
                np.testing.assert_array_equal(pixels, expected_pixels(samples, colour, depth, palette, None))


def test_sixteen_bits_come_back_in_native_byte_order(tmp_path):
    samples = np.array([[[0x0102], [0xFFFE]]])
    path = tmp_path / "g16.png"
    path.write_bytes(encode(samples, 0, 16))
    pixels = read_png(path)
    assert pixels.dtype == np.uint16 and pixels.dtype.isnative and pixels.tolist() == [[0x0102, 0xFFFE]]


def test_transparency(tmp_path):
    grey = np.array([[[0], [1], [3]]])  # 2-bit grey, key 1: scaled 0, 85, 255
    path = tmp_path / "g.png"
    path.write_bytes(encode(grey, 0, 2, trns=b"\x00\x01"))
    assert read_png(path).tolist() == [[[0, 255], [85, 0], [255, 255]]]
    rgb = np.array([[[1, 2, 3], [1, 2, 4]]])
    path.write_bytes(encode(rgb, 2, 8, trns=b"\x00\x01\x00\x02\x00\x03"))
    assert read_png(path).tolist() == [[[1, 2, 3, 0], [1, 2, 4, 255]]]
    palette = np.array([[9, 9, 9], [7, 7, 7], [5, 5, 5]])
    path.write_bytes(encode(np.array([[[0], [1], [2]]]), 3, 8, palette=palette, trns=b"\x10"))  # entries 1, 2: opaque
    assert read_png(path).tolist() == [[[9, 9, 9, 16], [7, 7, 7, 255], [5, 5, 5, 255]]]
    path.write_bytes(encode(np.array([[[1, 2, 3, 4]]]), 6, 8, trns=b"\x00\x01\x00\x02\x00\x03"))
    assert read_png(path).tolist() == [[[1, 2, 3, 4]]]  # tRNS has no place in RGBA: ignored, as libpng does


def test_the_requested_unfilter_kernel_runs(tmp_path, monkeypatch):
    path = tmp_path / "p.png"
    path.write_bytes(encode(np.arange(48).reshape(4, 4, 3), 2, 8, filters=4))
    for knob, module in (("numpy", "reference"), ("numba", "cpu_numba")):
        if knob == "numba":
            pytest.importorskip("numba")
        monkeypatch.setenv("TINYGEN_KERNELS", knob)
        before = png_kernels.calls[module, "unfilter"]
        np.testing.assert_array_equal(read_png(path), np.arange(48).reshape(4, 4, 3))
        assert png_kernels.calls[module, "unfilter"] == before + 1


# --- read_png on real files -------------------------------------------------------------------


def test_read_png_matches_pillow_on_every_emoji():
    Image = pytest.importorskip("PIL.Image")
    if not EMOJI.is_dir():
        pytest.skip(f"{EMOJI} is missing")
    paths = sorted(EMOJI.rglob("*.png"))
    assert len(paths) == 7572
    start, kinds = time.perf_counter(), set()
    for path in paths:
        pixels = read_png(path)
        kinds.add(pixels.shape[2:])
        assert_same_as_pillow(Image, path, pixels, None, 8, False)  # the colour type matters at 16 bits only
    assert kinds == {(2,), (4,)}  # grey + alpha; RGBA, and palettes (all with tRNS) as RGBA
    print(f"{len(paths)} emoji read and compared with Pillow in {time.perf_counter() - start:.1f} s")


# --- damaged files --------------------------------------------------------------------------------


def png(*chunks_, signature=PNG_SIGNATURE):
    return signature + b"".join(chunk(kind, body) for kind, body in chunks_)


def ihdr(width=2, height=2, depth=8, colour=0, compression=0, filtering=0, interlace=0):
    return b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, compression, filtering, interlace)


def idat(raw):
    return b"IDAT", zlib.compress(bytes(raw))


GOOD = [ihdr(), idat([0, 1, 2, 0, 3, 4]), (b"IEND", b"")]  # 2x2 grey
END = (b"IEND", b"")


def damaged_files():
    """(name, file bytes, what the error says) for every kind of damage read_png must refuse."""
    good = png(*GOOD)
    at = good.index(b"IDAT")
    flipped = bytearray(good)
    flipped[at + 6] ^= 1
    yield "signature", b"GIF89a" + good[6:], "not a PNG file"
    yield "empty", b"", "not a PNG file"
    yield "crc", bytes(flipped), "CRC mismatch in the b'IDAT' chunk"
    yield "truncated chunk", good[:at + 8], "the b'IDAT' chunk at byte 33 is truncated"
    yield "no iend", good[:-12], "no IEND chunk"
    yield "trailing", good + b"\x00", "1 bytes after the IEND chunk"
    yield "chunk type", png(ihdr(), (b"ID4T", b""), *GOOD[1:]), "not four ASCII letters"
    yield "first chunk", png(GOOD[1], GOOD[0], END), "the first chunk is b'IDAT'"
    yield "ihdr length", png((b"IHDR", GOOD[0][1] + b"\0"), *GOOD[1:]), "not a 13-byte IHDR"
    yield "zero width", png(ihdr(width=0), *GOOD[1:]), "size 0x2"
    yield "colour type", png(ihdr(colour=5), *GOOD[1:]), "colour type 5"
    yield "rgb depth", png(ihdr(colour=2, depth=4), *GOOD[1:]), "bit depth 4 with colour type 2"
    yield "palette depth", png(ihdr(colour=3, depth=16), *GOOD[1:]), "bit depth 16 with colour type 3"
    yield "grey depth", png(ihdr(depth=3), *GOOD[1:]), "bit depth 3 with colour type 0"
    yield "compression", png(ihdr(compression=1), *GOOD[1:]), "compression method 1"
    yield "filter method", png(ihdr(filtering=1), *GOOD[1:]), "filter method 1"
    yield "interlace", png(ihdr(interlace=2), *GOOD[1:]), "interlace method 2"
    yield "two ihdr", png(ihdr(), ihdr(), *GOOD[1:]), "a second IHDR"
    yield "critical", png(ihdr(), (b"ABCD", b""), *GOOD[1:]), "unknown critical chunk b'ABCD'"
    yield "no idat", png(ihdr(), END), "no IDAT chunk"
    apart = (b"IDAT", GOOD[1][1][:5]), (b"tEXt", b"a\0b"), (b"IDAT", GOOD[1][1][5:])
    yield "idat apart", png(ihdr(), *apart, END), "not consecutive"
    yield "iend body", png(*GOOD[:2], (b"IEND", b"x")), "the IEND chunk has 1 bytes"
    yield "zlib", png(ihdr(), (b"IDAT", b"not zlib"), END), "does not inflate"
    yield "zlib cut", png(ihdr(), (b"IDAT", GOOD[1][1][:-6]), END), "truncated: its zlib stream stops"
    yield "short data", png(ihdr(), idat([0, 1, 2]), END), "inflates to 3 bytes, expected 6"
    yield "long data", png(ihdr(), idat([0, 1, 2, 0, 3, 4, 0]), END), "more than the 6 bytes"
    yield "filter type", png(ihdr(), idat([0, 1, 2, 5, 3, 4]), END), "row 1 has filter type 5"
    yield "interlaced filter", png(ihdr(interlace=1), idat([0, 1, 9, 0, 0, 2, 3]), END), "row 0 of pass 6 has filter type 9"
    yield "no palette", png(ihdr(colour=3), idat([0, 1, 2, 0, 3, 4]), END), "without a PLTE chunk"
    palette = ihdr(colour=3), (b"PLTE", bytes(6))
    yield "palette index", png(*palette, idat([0, 0, 1, 0, 2, 0]), END), \
        "pixel (y=1, x=0) has palette index 2, but PLTE has 2"
    yield "plte length", png(ihdr(colour=3), (b"PLTE", bytes(4)), *GOOD[1:]), "PLTE chunk has 4 bytes"
    yield "plte too long", png(ihdr(colour=3), (b"PLTE", bytes(771)), *GOOD[1:]), "PLTE chunk has 771 bytes"
    yield "plte in grey", png(ihdr(), (b"PLTE", bytes(3)), *GOOD[1:]), "a PLTE chunk in a grey image"
    yield "two plte", png(*palette, (b"PLTE", bytes(6)), *GOOD[1:]), "a PLTE chunk after PLTE"
    yield "plte after idat", png(ihdr(colour=3), GOOD[1], (b"PLTE", bytes(6)), END), "a PLTE chunk after IDAT"
    yield "trns length", png(ihdr(), (b"tRNS", bytes(6)), *GOOD[1:]), "the tRNS chunk has 6 bytes; colour type 0 takes 2"
    yield "trns entries", png(*palette, (b"tRNS", bytes(3)), *GOOD[1:]), "3 alpha values, but PLTE has 2 entries"
    yield "trns before plte", png(ihdr(colour=3), (b"tRNS", bytes(1)), (b"PLTE", bytes(6)), *GOOD[1:]), "no PLTE before it"
    yield "trns after idat", png(ihdr(), GOOD[1], (b"tRNS", bytes(2)), END), "a tRNS chunk after IDAT"


@pytest.mark.parametrize("name, data, message", list(damaged_files()), ids=[case[0] for case in damaged_files()])
def test_damaged_files_are_refused_naming_the_file(tmp_path, name, data, message):
    path = tmp_path / f"{name.replace(' ', '_')}.png"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match=re.escape(message)) as info:
        read_png(path)
    assert str(info.value).startswith(f"{path}: ")


def test_the_undamaged_file_of_those_reads():
    assert read_png_bytes(png(*GOOD)).tolist() == [[1, 2], [3, 4]]


def read_png_bytes(data):
    from tinygen.image import decode_png

    return decode_png(data, "memory")


def test_a_missing_file(tmp_path):
    with pytest.raises(DatasetFormatError, match=f"{tmp_path / 'missing.png'}: cannot be read"):
        read_png(tmp_path / "missing.png")


# --- save_png ---------------------------------------------------------------------------------

images_uint8 = st.tuples(st.integers(1, 17), st.integers(1, 17), st.sampled_from([(), (2,), (3,), (4,)])).flatmap(
    lambda s: hnp.arrays(np.uint8, s[:2] + s[2])
)


def parse_chunks(data):
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
    parsed = parse_chunks(encode_png(pixels))
    assert [kind for kind, _, _ in parsed] == [b"IHDR", b"IDAT", b"IEND"] and all(ok for _, _, ok in parsed)
    width, height, depth, colour, *rest = struct.unpack(">IIBBBBB", parsed[0][1])
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    assert (height, width, depth, colour, rest) == (pixels.shape[0], pixels.shape[1], 8, colour_type, [0, 0, 0])
    rows = np.frombuffer(zlib.decompress(parsed[1][1]), np.uint8).reshape(height, -1)
    assert (rows[:, 0] == 0).all()  # filter type 0 on every row
    np.testing.assert_array_equal(rows[:, 1:], pixels.reshape(height, -1))


def test_floats_are_clipped_and_rounded(tmp_path):
    path = tmp_path / "f.png"
    save_png(path, np.array([[-1.0, 0.0, 0.5, 1.0, 2.0, np.inf, 0.3 / 255, 0.5 / 255]], np.float32))
    assert read_png(path).tolist() == [[0, 0, 128, 255, 255, 255, 0, 1]]


def test_pillow_reads_what_save_png_writes(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    pixels = np.random.default_rng(0).integers(0, 256, (9, 13, 4), dtype=np.uint8)
    for array, mode in ((pixels, "RGBA"), (pixels[..., :3], "RGB"), (pixels[..., :2], "LA"), (pixels[..., 0], "L")):
        save_png(tmp_path / "p.png", array)
        with Image.open(tmp_path / "p.png") as image:
            assert image.mode == mode
            np.testing.assert_array_equal(np.asarray(image), array)


@pytest.mark.parametrize(
    "array, error, message",
    [
        (np.zeros((4, 4, 5), np.uint8), ShapeError, r"got shape \(4, 4, 5\)"),
        (np.zeros((4, 4, 1), np.uint8), ShapeError, r"got shape \(4, 4, 1\)"),
        (np.zeros((0, 3)), ShapeError, r"got shape \(0, 3\)"),
        (np.zeros(5), ShapeError, r"got shape \(5,\)"),
        (np.zeros((2, 2), np.int32), DTypeError, r"got dtype int32 \(shape \(2, 2\)\)"),
        (np.zeros((2, 2), np.uint16), DTypeError, r"got dtype uint16"),
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


# --- make_grid --------------------------------------------------------------------------------


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
    for shape in ((4, 2, 5, 5), (4, 4, 5, 5), (0, 5, 5)):
        with pytest.raises(ShapeError, match=rf"got \({', '.join(map(str, shape))}\)"):
            make_grid(np.zeros(shape))
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


# --- read_image -------------------------------------------------------------------------------


def test_read_image_reads_png_itself(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # no Pillow: PNG needs none
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    save_png(tmp_path / "named.jpg", pixels)  # the first bytes decide, not the name
    np.testing.assert_array_equal(read_image(tmp_path / "named.jpg"), pixels)


def pillow_file(Image, path, array, fmt, **kwargs):
    Image.fromarray(array).save(path, format=fmt, **kwargs)
    return path


def test_read_image_reads_other_formats_through_pillow(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (10, 7, 3), dtype=np.uint8)
    for fmt in ("BMP", "TIFF", "WEBP"):  # lossless: the pixels come back exactly
        if fmt == "WEBP" and not _pillow_has("WEBP"):
            continue
        kwargs = {"lossless": True} if fmt == "WEBP" else {}
        path = pillow_file(Image, tmp_path / f"image.{fmt.lower()}.png", rgb, fmt, **kwargs)  # a misleading name
        np.testing.assert_array_equal(read_image(path), rgb)
    jpeg = pillow_file(Image, tmp_path / "photo.png", rgb, "JPEG", quality=90)
    pixels = read_image(jpeg)
    assert pixels.shape == (10, 7, 3) and pixels.dtype == np.uint8
    with Image.open(jpeg) as image:
        np.testing.assert_array_equal(pixels, np.asarray(image))
    grey = pillow_file(Image, tmp_path / "grey.jpg", rgb[..., 0], "JPEG")
    assert read_image(grey).shape == (10, 7)
    bits = pillow_file(Image, tmp_path / "bits.bmp", rgb[..., 0] > 127, "BMP")  # mode "1"
    np.testing.assert_array_equal(read_image(bits), np.where(rgb[..., 0] > 127, 255, 0))
    sixteen = Image.fromarray(rng.integers(0, 65536, (4, 5)).astype(np.uint16))  # mode I;16
    sixteen.save(tmp_path / "sixteen.tiff")
    out = read_image(tmp_path / "sixteen.tiff")
    assert out.dtype == np.uint16 and out.dtype.isnative
    np.testing.assert_array_equal(out, np.asarray(sixteen))


def test_a_gif_with_transparency_comes_back_rgba(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    image = Image.new("P", (3, 2))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putdata([0, 1, 0, 1, 1, 0])
    image.save(tmp_path / "a.gif", transparency=1)
    pixels = read_image(tmp_path / "a.gif")
    assert pixels.shape == (2, 3, 4)
    assert pixels[0, 0].tolist() == [255, 0, 0, 255] and pixels[0, 1, 3] == 0


def _pillow_has(fmt):
    from PIL import features

    return features.check(fmt.lower())


def test_undecodable_files_name_the_file(tmp_path):
    pytest.importorskip("PIL.Image")
    (tmp_path / "notes.txt").write_bytes(b"not an image at all")
    with pytest.raises(DatasetFormatError, match=f"{tmp_path / 'notes.txt'}: Pillow cannot decode it"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(10))
    with pytest.raises(DatasetFormatError, match=f"{tmp_path / 'cut.jpg'}: Pillow cannot decode it"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(DatasetFormatError, match="cannot be read"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "bad.png").write_bytes(png(*GOOD)[:-20])  # a PNG's signature: read_png, and its error
    with pytest.raises(DatasetFormatError, match=f"{tmp_path / 'bad.png'}: the b'IDAT' chunk at byte 33 is truncated"):
        read_image(tmp_path / "bad.png")


@pytest.mark.parametrize("start, kind", [(b"\xff\xd8\xff\xe0", "JPEG"), (b"GIF89a", "GIF"), (b"BM", "BMP"),
                                         (b"RIFF\0\0\0\0WEBPVP8 ", "WebP"), (b"II*\x00", "TIFF")])
def test_without_pillow_other_formats_name_the_extra(tmp_path, monkeypatch, start, kind):
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now raises ImportError
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    path = tmp_path / "photo.png"  # named .png, but not one
    path.write_bytes(start + bytes(32))
    with pytest.raises(BackendUnavailableError, match=rf"photo.png: a {kind} file; .*pip install 'tinygen\[images\]'"):
        read_image(path)
    path.write_bytes(b"hello, world")
    with pytest.raises(DatasetFormatError, match=r"photo.png: not a PNG file .*pip install 'tinygen\[images\]'"):
        read_image(path)


def test_the_decode_benchmark_runs(tmp_path, capsys):
    from benchmarks import png_decode

    (tmp_path / "a").mkdir()
    save_png(tmp_path / "a" / "x.png", np.zeros((3, 4, 4), np.uint8))  # found recursively
    png_decode.main(["--root", str(tmp_path), "--repeats", "1"])
    out = capsys.readouterr().out
    assert "1 PNG files under" in out and "TINYGEN_KERNELS=numpy (reference)" in out
