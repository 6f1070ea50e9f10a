"""PNG's row filters undone with Numba: `reference.unfilter`, one pass over the bytes in the spec's order.

Every byte is decoded from its filtered value and its three neighbours a (left), b (above) and c
(above-left), as the formulas in `reference` say; the filter type is read once per row, so each
row's inner loop has one predictor and no branch on the type. One thread: a 64x64 RGBA image is
16 KB, and the files are decoded one at a time.
"""

import numpy as np

from tinygen.kernels.cpu_runtime import load_numba

numba = load_numba()  # through cpu_runtime: it applies tinygen's threading policy first
if numba is None:
    raise ImportError("the Numba PNG kernels need Numba: pip install tinygen[cpu]")


# One compiled version, for C-contiguous uint8 arrays, compiled (or loaded from the cache) at import:
# read_png passes a read-only `filtered` (a view of zlib's bytes), and Numba would otherwise compile
# a second version for writable ones, seconds more for a test run.
_BYTES = numba.types.Array(numba.types.uint8, 2, "C")
_SIGNATURE = numba.types.void(numba.types.Array(numba.types.uint8, 2, "C", readonly=True), _BYTES, numba.types.intp)


@numba.njit([_SIGNATURE], cache=True, nogil=True)
def _unfilter(filtered, out, bpp):
    height, size = out.shape
    for r in range(height):
        kind, f, x = filtered[r, 0], filtered[r, 1:], out[r]
        above = out[r - 1] if r > 0 else np.zeros(size, np.uint8)  # the first row's "above" is zeros
        if kind == 0:
            x[:] = f
        elif kind == 1:
            x[:bpp] = f[:bpp]
            for i in range(bpp, size):
                x[i] = f[i] + x[i - bpp]  # uint8 sums wrap modulo 256
        elif kind == 2:
            for i in range(size):
                x[i] = f[i] + above[i]
        elif kind == 3:
            for i in range(bpp):
                x[i] = f[i] + (above[i] >> 1)
            for i in range(bpp, size):
                x[i] = f[i] + np.uint8((np.int32(x[i - bpp]) + np.int32(above[i])) >> 1)
        else:
            for i in range(bpp):  # a = c = 0: Paeth predicts b
                x[i] = f[i] + above[i]
            for i in range(bpp, size):
                a, b, c = np.int32(x[i - bpp]), np.int32(above[i]), np.int32(above[i - bpp])
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                if pa <= pb and pa <= pc:
                    x[i] = f[i] + np.uint8(a)
                elif pb <= pc:
                    x[i] = f[i] + np.uint8(b)
                else:
                    x[i] = f[i] + np.uint8(c)


def unfilter(filtered, out, bpp):
    """As `reference.unfilter`: `out`, (H, S) uint8, gets the decoded bytes of `filtered`, (H, 1 + S)."""
    target = out if out.flags.c_contiguous else np.empty(out.shape, np.uint8)  # strided: through a copy
    _unfilter(np.ascontiguousarray(filtered), target, bpp)
    if target is not out:
        out[...] = target
