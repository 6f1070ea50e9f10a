"""GroupNorm, SiLU, ReLU and LeakyReLU on the GPU with CuPy: `reference.py`'s functions, same signatures.

A UNet training step on a GPU is bound by kernel launches: the reference's array code makes about
a dozen CuPy kernels per GroupNorm, twenty per GroupNorm backward and four per SiLU. Here the
activations are one launch each way and a GroupNorm three forward and three backward, from
`normalization.cu` (shipped beside this file, compiled once per process by `cupy.RawModule`,
cached on disk by CuPy; it says how the work is laid out). BatchNorm has no CUDA kernel: it is
the reference's array code, as the module's attributes below say.

Only `tinygen.kernels.normalization.implementation()` imports this module, for CuPy arrays, so
importing tinygen never imports CuPy. Every output comes from `_empty` (the tests poison it with
NaN, so that an element a kernel never writes cannot pass). Nothing here reads a GPU array on
the host.
"""

import os

import numpy as np

from tinygen.backend import load_cupy
from tinygen.kernels.gpu_runtime import CudaSource, cuda_suffix, grid_blocks
from tinygen.kernels.normalization import reference

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "normalization.cu")
BLOCK = 256  # threads per block
BLOCKS_PER_SM = 16  # a grid-stride loop needs no more blocks than keep every SM busy
PART = 16  # GroupNorm's sums: about this many elements of a row per thread, at most MAX_PARTS threads a row
MAX_PARTS = 256

batch_norm_forward = reference.batch_norm_forward  # no CUDA kernel: the reference's array code on CuPy
batch_norm_backward = reference.batch_norm_backward

_source = CudaSource(SOURCE, ("--std=c++17",))


def _launch(name, dtype, total, args):
    """Run the grid-stride kernel `name` for `dtype` over `total` work items."""
    kernel = _source.function(f"{name}_{cuda_suffix(dtype, name)}")
    kernel((grid_blocks(total, BLOCK, BLOCKS_PER_SM),), (BLOCK,), args)


def _empty(shape, dtype):
    """Every output buffer of this module is allocated here (the tests poison it with NaN)."""
    return load_cupy().empty(shape, dtype)


def _contiguous(a, dtype=None):
    return load_cupy().ascontiguousarray(a, dtype=dtype)


# --- the activations -------------------------------------------------------------------------------------


def _forward(name, x, slope=0.0):
    shape, x = x.shape, _contiguous(x)  # NOTE: ascontiguousarray makes a 0-d array 1-d
    y = _empty(shape, x.dtype)
    if x.size:
        _launch(f"{name}_forward", x.dtype, x.size, (x, y, np.int64(x.size), x.dtype.type(slope)))
    return y


def _backward(name, grad_out, x, slope=0.0):
    shape, x = x.shape, _contiguous(x)
    g = _contiguous(grad_out, x.dtype)
    dx = _empty(shape, x.dtype)
    if x.size:
        _launch(f"{name}_backward", x.dtype, x.size, (g, x, dx, np.int64(x.size), x.dtype.type(slope)))
    return dx


def silu_forward(x):
    """x * sigmoid(x)."""
    return _forward("silu", x)


def silu_backward(grad_out, x):
    """grad_out * d silu / dx at x."""
    return _backward("silu", grad_out, x)


def relu_forward(x):
    """max(x, 0), NaN kept."""
    return _forward("relu", x)


def relu_backward(grad_out, y):
    """grad_out where the output y > 0, else 0 (times 0: a NaN gradient stays NaN)."""
    return _backward("relu", grad_out, y)


def leaky_relu_forward(x, negative_slope):
    """x where x > 0, negative_slope * x elsewhere."""
    return _forward("leaky_relu", x, negative_slope)


def leaky_relu_backward(grad_out, x, negative_slope):
    """grad_out * (1 where x > 0, negative_slope where x < 0, 0 at 0)."""
    return _backward("leaky_relu", grad_out, x, negative_slope)


# --- GroupNorm -------------------------------------------------------------------------------------------


def _layout(x, num_groups):
    """(N, C, S, Cg, M, parts): S the spatial size, Cg channels and M values per group, parts per row."""
    N, C = x.shape[:2]
    S = x.size // (N * C)
    parts = max(1, min(S // PART, MAX_PARTS))
    return N, C, S, C // num_groups, (C // num_groups) * S, parts


def group_norm_forward(x, weight, bias, num_groups, eps):
    """(y, mean, rstd): y like x; mean and rstd (N, G) in x's dtype. weight, bias: (C,)."""
    if x.size == 0:
        return reference.group_norm_forward(x, weight, bias, num_groups, eps)
    cupy = load_cupy()
    x = _contiguous(x)
    weight, bias = _contiguous(weight, x.dtype), _contiguous(bias, x.dtype)
    N, C, S, Cg, M, parts = _layout(x, num_groups)
    groups, rows = N * num_groups, N * C
    acc = cupy.zeros(2 * groups, np.float64)
    mean, rstd, y = _empty((N, num_groups), x.dtype), _empty((N, num_groups), x.dtype), _empty(x.shape, x.dtype)
    _launch("gn_sums_forward", x.dtype, rows * parts,
            (x, acc, np.int64(rows), np.int64(C), np.int64(S), np.int64(Cg), np.int64(parts)))
    _launch("gn_stats", x.dtype, groups, (x, acc, mean, rstd, np.int64(groups), np.int64(M), np.float64(eps)))
    _launch("gn_forward", x.dtype, x.size,
            (x, weight, bias, mean, rstd, y, np.int64(x.size), np.int64(C), np.int64(S), np.int64(M)))
    return y, mean, rstd


def group_norm_backward(grad_out, x, weight, mean, rstd, num_groups):
    """(grad_x like x, grad_weight (C,), grad_bias (C,)) from the forward pass's mean and rstd."""
    if x.size == 0:
        return reference.group_norm_backward(grad_out, x, weight, mean, rstd, num_groups)
    cupy = load_cupy()
    x = _contiguous(x)
    g, weight = _contiguous(grad_out, x.dtype), _contiguous(weight, x.dtype)
    mean, rstd = _contiguous(mean, x.dtype), _contiguous(rstd, x.dtype)
    N, C, S, Cg, M, parts = _layout(x, num_groups)
    groups, rows = N * num_groups, N * C
    sums = cupy.zeros(2 * groups + 2 * C, np.float64)  # per group, then per channel: one memset
    acc, chan = sums[: 2 * groups], sums[2 * groups:]
    dx, gw, gb = _empty(x.shape, x.dtype), _empty((C,), x.dtype), _empty((C,), x.dtype)
    _launch("gn_sums_backward", x.dtype, rows * parts,
            (g, x, weight, mean, rstd, acc, chan, np.int64(rows), np.int64(C), np.int64(S), np.int64(Cg),
             np.int64(parts)))
    _launch("gn_backward_input", x.dtype, x.size,
            (g, x, weight, mean, rstd, acc, dx, np.int64(x.size), np.int64(C), np.int64(S), np.int64(M)))
    _launch("gn_backward_params", x.dtype, C, (chan, gw, gb, np.int64(C)))
    return dx, gw, gb
