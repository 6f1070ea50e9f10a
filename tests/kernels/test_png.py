"""Undoing PNG's row filters: the NumPy reference (kernels/png/reference.py) and the Numba kernel
(kernels/png/cpu_numba.py) against the specification's byte-by-byte loop, written out below.

Inputs are drawn by hypothesis: 1 to 12 rows of 1 to 12 pixels of 1 to 8 bytes, a filter type per
row, and bytes either uniform or from a three-value set (so that Paeth's ties, where its order of
preference decides, are frequent). The output array is poisoned beforehand, twice with different
values, so that a byte the kernel never writes shows up as a difference. The dispatcher: the
module TINYGEN_KERNELS names runs, and counts its call.
"""

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygen.kernels import cpu_runtime
from tinygen.kernels import png as png_kernels
from tinygen.kernels.png import reference


def spec_unfilter(filtered, bpp):
    """W3C PNG specification, section 9.2/9.4, one byte at a time on Python ints."""
    height, size = filtered.shape[0], filtered.shape[1] - 1
    out = [[0] * size for _ in range(height)]
    for r in range(height):
        kind = int(filtered[r, 0])
        for i in range(size):
            a = out[r][i - bpp] if i >= bpp else 0
            b = out[r - 1][i] if r > 0 else 0
            c = out[r - 1][i - bpp] if r > 0 and i >= bpp else 0
            if kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predicted = a if pa <= pb and pa <= pc else b if pb <= pc else c
            else:
                predicted = (0, a, b, (a + b) // 2)[kind]
            out[r][i] = (int(filtered[r, 1 + i]) + predicted) % 256
    return np.array(out, np.uint8).reshape(height, size)


@st.composite
def filtered_rows(draw):
    """(filtered (H, 1 + S) uint8 with valid filter types, bpp)."""
    height, pixels, bpp = draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.sampled_from([1, 2, 3, 4, 6, 8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        body = rng.integers(0, 256, (height, pixels * bpp), dtype=np.uint8)
    else:
        body = rng.choice(np.array([0, 1, 255], np.uint8), (height, pixels * bpp))
    types = np.array(draw(st.lists(st.integers(0, 4), min_size=height, max_size=height)), np.uint8)
    return np.concatenate([types[:, None], body], axis=1), bpp


def unfilter_poisoned(kernel, filtered, bpp):
    outputs = []
    for poison in (0, 255):
        out = np.full((filtered.shape[0], filtered.shape[1] - 1), poison, np.uint8)
        kernel(filtered, out, bpp)
        outputs.append(out)
    np.testing.assert_array_equal(outputs[0], outputs[1], err_msg="a byte was left unwritten")
    return outputs[0]


@settings(max_examples=150)
@given(case=filtered_rows())
def test_reference_matches_the_specification(case):
    filtered, bpp = case
    np.testing.assert_array_equal(unfilter_poisoned(reference.unfilter, filtered, bpp), spec_unfilter(filtered, bpp))


@settings(max_examples=150)
@given(case=filtered_rows())
def test_numba_matches_the_reference(case):
    pytest.importorskip("numba")
    from tinygen.kernels.png import cpu_numba

    filtered, bpp = case
    expected = unfilter_poisoned(reference.unfilter, filtered, bpp)
    np.testing.assert_array_equal(unfilter_poisoned(cpu_numba.unfilter, filtered, bpp), expected)


@pytest.mark.parametrize("kind", range(5))
def test_a_whole_image_of_one_filter(kind):
    # 64 x 64 RGBA, as the emoji: the wavefront's widest anti-diagonals, each filter alone
    rng = np.random.default_rng(kind)
    filtered = rng.integers(0, 256, (64, 1 + 256), dtype=np.uint8)
    filtered[:, 0] = kind
    np.testing.assert_array_equal(unfilter_poisoned(reference.unfilter, filtered, 4), spec_unfilter(filtered, 4))


def test_numba_writes_strided_outputs_and_reads_strided_inputs():
    pytest.importorskip("numba")
    from tinygen.kernels.png import cpu_numba

    rng = np.random.default_rng(1)
    filtered = rng.integers(0, 256, (5, 1 + 12), dtype=np.uint8)
    filtered[:, 0] = [4, 3, 1, 2, 4]
    expected = spec_unfilter(filtered, 3)
    out = np.zeros((12, 5), np.uint8).T  # (5, 12), a transposed view
    wide = np.zeros((5, 2 * 13), np.uint8)
    wide[:, ::2] = filtered
    cpu_numba.unfilter(wide[:, ::2], out, 3)
    np.testing.assert_array_equal(out, expected)


def test_tall_images_go_through_the_wavefront_in_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    filtered = rng.integers(0, 256, (300, 1 + 3 * 20), dtype=np.uint8)  # two blocks of 256 rows, and a part
    filtered[:, 0] = rng.choice([0, 1, 2, 3, 4, 4, 4], 300)
    expected = spec_unfilter(filtered, 3)
    np.testing.assert_array_equal(unfilter_poisoned(reference.unfilter, filtered, 3), expected)
    monkeypatch.setattr(reference, "WAVEFRONT_ROWS", 7)  # blocks that start and end anywhere
    np.testing.assert_array_equal(unfilter_poisoned(reference.unfilter, filtered, 3), expected)


@pytest.mark.parametrize("knob", ["numpy", "numba", "auto", "cupy"])
def test_the_requested_kernel_runs(monkeypatch, knob):
    has_numba = cpu_runtime.load_numba() is not None
    if knob == "numba" and not has_numba:
        pytest.skip("Numba is not installed")
    # NOTE: cupy asks for CUDA kernels on GPU arrays; PNG decoding, on the CPU, runs as under auto
    module = "reference" if knob == "numpy" or not has_numba else "cpu_numba"
    monkeypatch.setenv("TINYGEN_KERNELS", knob)
    before = png_kernels.calls[module, "unfilter"]
    out = np.empty((1, 3), np.uint8)
    png_kernels.unfilter(np.array([[1, 10, 5, 5]], np.uint8), out, 1)
    assert png_kernels.calls[module, "unfilter"] == before + 1
    assert out.tolist() == [[10, 15, 20]]


def test_the_reference_docstring_examples_run():
    result = doctest.testmod(reference)
    assert result.attempted > 0 and result.failed == 0
