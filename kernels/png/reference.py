"""PNG's row filters undone in NumPy: the spec of `cpu_numba.py`, and the path that runs without Numba.

A PNG stores each row of bytes x behind a filter-type byte; the encoder replaced every byte by its
difference from a prediction made of bytes already decoded (W3C PNG specification, section 9):

    a = the byte bpp places to the left (the same sample of the previous pixel), 0 before the row starts
    b = the byte above, in the previous row (0 in the first row)
    c = the byte above a (0 where a or b is)

    type 0 None:    x = f
    type 1 Sub:     x = f + a
    type 2 Up:      x = f + b
    type 3 Average: x = f + floor((a + b) / 2)        (a + b without overflow, 9 bits)
    type 4 Paeth:   x = f + paeth(a, b, c), where with p = a + b - c, paeth is the one of a, b, c
                    closest to p, ties going to a, then to b

with every sum taken modulo 256. `bpp` is the number of bytes of one pixel, rounded up to 1.

Which of these vectorize? None and Up at once over a row; Sub along the row, lane by lane, as a
cumulative sum (uint8 arithmetic wraps modulo 256, as the spec asks). Average and Paeth need the
byte to their left fully decoded first: a Python loop over a row's pixels. Instead, the rows from
the first Average or Paeth row to the last one run as a wavefront. A pixel (r, p) needs only (r, p-1),
(r-1, p) and (r-1, p-1), all on earlier anti-diagonals r + p, so the pixels of one anti-diagonal
are decoded together, whatever their rows' filters. Storing the block skewed, pixel (r, p) at
column r + p, makes each anti-diagonal one column of the array, a basic slice. That is rows + pixels - 1
vectorized steps instead of rows * pixels scalar ones (`python -m benchmarks.png_decode` times both
kernels on real files).
"""

import numpy as np

# Rows per wavefront: its skewed arrays hold (rows + 1) x (rows + pixels + 1) pixels, so a tall
# photo goes in blocks (13 MB for a block of 3-byte pixels 4,000 wide), each costing
# rows + pixels - 1 steps.
WAVEFRONT_ROWS = 256


def unfilter(filtered, out, bpp):
    """Undo the filters of `filtered`, (H, 1 + S) uint8, each row its filter type (0..4) then S bytes,
    writing the H x S decoded bytes to `out`, (H, S) uint8. S is a multiple of `bpp`.

    The filter types must be 0..4: `tinygen.image` checks them before calling.

    >>> f = np.array([[1, 10, 5, 5], [2, 1, 1, 1]], np.uint8)   # Sub, then Up; bpp = 1
    >>> out = np.empty((2, 3), np.uint8); unfilter(f, out, 1); out.tolist()
    [[10, 15, 20], [11, 16, 21]]
    """
    types = filtered[:, 0]
    serial = np.flatnonzero(types >= 3)  # Average and Paeth rows
    if not serial.size:
        _rows(filtered, out, None, bpp)
        return
    first, last = serial[0], serial[-1] + 1
    _rows(filtered[:first], out[:first], None, bpp)
    for start in range(first, last, WAVEFRONT_ROWS):
        stop = min(start + WAVEFRONT_ROWS, last)
        _wavefront(filtered[start:stop], out[start:stop], out[start - 1] if start else None, bpp)
    _rows(filtered[last:], out[last:], out[last - 1], bpp)


def _rows(filtered, out, prev, bpp):
    """Rows of types 0, 1 and 2 only, one at a time; `prev` is the decoded row above (None: zeros)."""
    for r in range(filtered.shape[0]):
        kind, row = filtered[r, 0], filtered[r, 1:]
        if kind == 0 or (kind == 2 and prev is None):  # Up in the first row adds zeros
            out[r] = row
        elif kind == 1:  # (S,) -> (pixels, bpp): a running sum down each lane, modulo 256
            out[r] = np.cumsum(row.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        else:
            np.add(row, prev, out=out[r])
        prev = out[r]


def _wavefront(filtered, out, prev, bpp):
    """Rows of any types, one anti-diagonal of pixels at a time; `prev` is the decoded row above."""
    height, pixels = filtered.shape[0], (filtered.shape[1] - 1) // bpp
    # z[1 + r, 2 + r + p] holds pixel (r, p), in int16 so that a + b - 2c needs no care; row 0 holds
    # the row above, columns 0 and 1 stay zero (the "pixel" left of column 0, and above-left of it).
    z = np.zeros((height + 1, height + pixels + 1, bpp), np.int16)
    f = np.zeros_like(z)
    rows, cols = np.arange(height)[:, None], np.arange(pixels) + np.arange(height)[:, None] + 2
    f[rows + 1, cols] = filtered[:, 1:].reshape(height, pixels, bpp)
    if prev is not None:
        z[0, 1:pixels + 1] = prev.reshape(pixels, bpp)
    kinds = filtered[:, 0, None].astype(np.intp)  # (H, 1): broadcast over the bpp lanes
    zero = np.zeros((height, bpp), np.int16)
    for k in range(height + pixels - 1):  # anti-diagonal k: pixels (r, k - r) for r in lo..hi-1
        lo, hi = max(0, k - pixels + 1), min(height, k + 1)
        a = z[lo + 1:hi + 1, k + 1]  # left
        b = z[lo:hi, k + 1]  # above
        c = z[lo:hi, k]  # above-left
        up, left = b - c, a - c
        pa, pb, pc = np.abs(up), np.abs(left), np.abs(up + left)  # |p - a|, |p - b|, |p - c|; p = a + b - c
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        predicted = np.choose(kinds[lo:hi], (zero[lo:hi], a, b, (a + b) >> 1, paeth))
        z[lo + 1:hi + 1, k + 2] = (f[lo + 1:hi + 1, k + 2] + predicted) & 255
    out[...] = z[rows + 1, cols].reshape(height, pixels * bpp)
