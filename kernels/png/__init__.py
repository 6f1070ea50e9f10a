"""Undoing PNG's row filters, the hot loop of `tinygen.image.read_png`, and the dispatcher that picks
which implementation runs.

`implementation()` maps `tinygen.backend.kernel_backend()` to `reference` (NumPy) or `cpu_numba`,
each imported on first use only. Calls are counted in `calls`, keyed by (module, function).

NOTE: decoding works on the bytes of a file, on the CPU, before any array reaches a device. Under
``TINYGEN_KERNELS=cupy`` (CUDA kernels for arrays on the GPU) it therefore runs as under ``auto``,
so that a GPU training run can still read its images.
"""

import importlib
from collections import Counter

import numpy as np

from tinygen.backend import kernel_module, load_numba, requested_kernels

PROVIDES = ("numpy", "numba")

calls = Counter()  # (module name, function name) -> number of calls forwarded there


def implementation():
    """The module holding these kernels for the current kernel backend."""
    if requested_kernels() == "cupy":  # as auto would choose on NumPy arrays
        return importlib.import_module(f"{__name__}.{'cpu_numba' if load_numba() is not None else 'reference'}")
    return kernel_module(__name__, PROVIDES, np)


def unfilter(filtered, out, bpp):
    """Write to `out`, (H, S) uint8, the bytes of `filtered`, (H, 1 + S) uint8, each row led by its
    filter type 0..4, with the filters undone; `bpp` bytes per pixel (see `reference`)."""
    module = implementation()
    calls[module.__name__.rsplit(".", 1)[-1], "unfilter"] += 1
    module.unfilter(filtered, out, bpp)
