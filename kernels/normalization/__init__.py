"""Group and batch normalization, ReLU, LeakyReLU and SiLU kernels, and the dispatcher that picks which implementation runs.

`implementation(xp)` maps `tinygen.backend.kernel_backend()` to `reference` (array code: NumPy,
or CuPy through `xp`), `cpu_numba` (NumPy arrays) or `gpu_cupy` (CUDA kernels, CuPy arrays), each
imported on first use only. `gpu_cupy` has no BatchNorm kernel: there it is the reference's
array code, by name. ``numba`` on CuPy arrays raises, in `kernel_backend`. Calls are counted
in `calls`, keyed by (module, function), as in `tinygen.kernels.conv2d`.
"""

from collections import Counter

import numpy as np

from tinygen.backend import get_array_module, kernel_module

PROVIDES = ("numpy", "numba", "cupy")

calls = Counter()  # (module name, function name) -> number of calls forwarded there


def implementation(xp=np):
    """The module holding these kernels for the current kernel backend, for arrays of module `xp`."""
    return kernel_module(__name__, PROVIDES, xp)


def _dispatch(name, x):
    module = implementation(get_array_module(x))
    calls[module.__name__.rsplit(".", 1)[-1], name] += 1
    return getattr(module, name)


def group_norm_forward(x, weight, bias, num_groups, eps):
    return _dispatch("group_norm_forward", x)(x, weight, bias, num_groups, eps)


def group_norm_backward(grad_out, x, weight, mean, rstd, num_groups):
    return _dispatch("group_norm_backward", x)(grad_out, x, weight, mean, rstd, num_groups)


def batch_norm_forward(x, weight, bias, eps):
    return _dispatch("batch_norm_forward", x)(x, weight, bias, eps)


def batch_norm_backward(grad_out, x, weight, mean, var, eps):
    return _dispatch("batch_norm_backward", x)(grad_out, x, weight, mean, var, eps)


def relu_forward(x):
    return _dispatch("relu_forward", x)(x)


def relu_backward(grad_out, y):
    return _dispatch("relu_backward", y)(grad_out, y)


def leaky_relu_forward(x, negative_slope):
    return _dispatch("leaky_relu_forward", x)(x, negative_slope)


def leaky_relu_backward(grad_out, x, negative_slope):
    return _dispatch("leaky_relu_backward", x)(grad_out, x, negative_slope)


def silu_forward(x):
    return _dispatch("silu_forward", x)(x)


def silu_backward(grad_out, x):
    return _dispatch("silu_backward", x)(grad_out, x)
