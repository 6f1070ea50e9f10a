"""Optimizer kernels (Adam's update) and the dispatcher that picks which implementation runs.

As in `tinygen.kernels.normalization`: `reference` (array code, NumPy or CuPy) or `cpu_numba`
by `tinygen.backend.kernel_backend()`; on CuPy arrays the reference runs (there is no CUDA
kernel here), under ``auto``, ``numpy`` and ``cupy`` alike. Calls are counted in `calls`.
"""

from collections import Counter

import numpy as np

from tinygen.backend import get_array_module, kernel_backend
from tinygen.kernels.optim import reference

PROVIDES = ("numpy", "numba")

calls = Counter()  # (module name, function name) -> number of calls forwarded there


def implementation(xp=np):
    """The module holding these kernels for the current kernel backend, for arrays of module `xp`."""
    if kernel_backend(provides=PROVIDES, xp=xp) == "numba":
        from tinygen.kernels.optim import cpu_numba  # imports Numba: only on this path

        return cpu_numba
    return reference  # "numpy", or "cupy" on CuPy arrays; "cupy" on NumPy arrays raised


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    module = implementation(get_array_module(p))
    calls[module.__name__.rsplit(".", 1)[-1], "adam_update"] += 1
    return module.adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)
