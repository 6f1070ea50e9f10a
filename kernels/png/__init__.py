"""Undoing PNG's row filters, the hot loop of `tinygen.image.read_png`: `reference.py` (NumPy) and
`cpu_numba.py`, the same function with the same arguments. `unfilter` forwards to the one
`kernels` picks (`tinygen.kernels.dispatch.KernelFamily`) and counts the call in `calls`, keyed by
(module, function).

NOTE: decoding works on the bytes of a file, on the CPU, before any array reaches a device. Under
``TINYGEN_KERNELS=cupy`` (CUDA kernels for arrays on the GPU) it therefore runs as under ``auto``
(`host_only`), so that a GPU training run can still read its images.
"""

from tinygen.kernels.dispatch import KernelFamily

kernels = KernelFamily(__name__, ("numpy", "numba"), host_only=True)
calls, implementation = kernels.calls, kernels.implementation


def unfilter(filtered, out, bpp):
    """Write to `out`, (H, S) uint8, the bytes of `filtered`, (H, 1 + S) uint8, each row led by its
    filter type 0..4, with the filters undone; `bpp` bytes per pixel (see `reference`)."""
    kernels.function("unfilter", filtered)(filtered, out, bpp)
