"""Optimizer kernels (Adam's update, the EMA's, clip_grad_norm_'s sum of squares and scaling) and the
dispatcher that picks which implementation runs.

`implementation(xp)` maps `tinygen.backend.kernel_backend()` to `reference` (array code, NumPy
or CuPy), `cpu_numba` (NumPy arrays) or `gpu_cupy` (a CUDA kernel, CuPy arrays), each imported on
first use only. Calls are counted in `calls`, keyed by (module, function).
"""

from collections import Counter

import numpy as np

from tinygen.backend import device_of, get_array_module, kernel_module

PROVIDES = ("numpy", "numba", "cupy")

calls = Counter()  # (module name, function name) -> number of calls forwarded there


def implementation(xp=np):
    """The module holding these kernels for the current kernel backend, for arrays of module `xp`."""
    return kernel_module(__name__, PROVIDES, xp)


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    module = implementation(get_array_module(p))
    calls[module.__name__.rsplit(".", 1)[-1], "adam_update"] += 1
    return module.adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)


def _per_device(arrays):
    """(module, indices) for each device the arrays live on (one group in the common case): a group of
    parameters split over the CPU and a GPU is updated as two calls, each by its own kernels."""
    groups = {}
    for i, a in enumerate(arrays):
        groups.setdefault(device_of(a), []).append(i)
    for indices in groups.values():
        module = implementation(get_array_module(arrays[indices[0]]))
        yield module, indices


def adam_update_many(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, decoupled):
    """adam_update on each (p, g, m, v, step) of the lists: one launch on the GPU, a loop elsewhere."""
    for module, idx in _per_device(params):
        calls[module.__name__.rsplit(".", 1)[-1], "adam_update_many"] += 1
        module.adam_update_many(*([lst[i] for i in idx] for lst in (params, grads, exp_avgs, exp_avg_sqs, steps)),
                                lr, beta1, beta2, eps, weight_decay, decoupled)


def ema_update_many(shadows, params, decay):
    """ema_update on each (shadow, p) of the lists: one launch on the GPU, a loop elsewhere."""
    for module, idx in _per_device(shadows):
        calls[module.__name__.rsplit(".", 1)[-1], "ema_update_many"] += 1
        module.ema_update_many([shadows[i] for i in idx], [params[i] for i in idx], decay)


def scale_many(arrays, factor):
    """Every array times `factor`, in place: one launch on the GPU, a loop elsewhere."""
    for module, idx in _per_device(arrays):
        calls[module.__name__.rsplit(".", 1)[-1], "scale_many"] += 1
        module.scale_many([arrays[i] for i in idx], factor)


def sum_of_squares(arrays):
    module = implementation(get_array_module(*arrays))
    calls[module.__name__.rsplit(".", 1)[-1], "sum_of_squares"] += 1
    return module.sum_of_squares(arrays)
