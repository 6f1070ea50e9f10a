"""The optimizers' kernels on the GPU with CuPy: `reference.py`'s functions, each one launch for all tensors.

The reference's array code makes about a dozen CuPy kernels per parameter for Adam, three for the
EMA and four for a gradient norm; a DDPM UNet has about a hundred parameter tensors, so that was
over two thousand launches per training step, and the step is bound by launches. Here each
function is one launch of `optim.cu` (shipped beside this file, compiled once per process by
`cupy.RawModule`, cached on disk by CuPy) over every tensor it is given, per dtype: the tensors
are described by a small table of pointers and sizes, copied to the GPU with the call (optim.cu
says how a thread finds its tensor). Adam reads p, g, m and v once and writes p, m and v in
place, with the reference's operations in its order (no fused multiply-adds): the results are
the reference's. The `*_many` functions take lists; the others are their one-tensor forms, with
the reference's signatures.

Only `tinygen.kernels.optim.implementation()` imports this module, for CuPy arrays, so importing
tinygen never imports CuPy. Nothing here reads a GPU array on the host.
"""

import math
import os

import numpy as np

from tinygen.backend import load_cupy
from tinygen.kernels.gpu_runtime import CudaSource, cuda_suffix, grid_blocks

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim.cu")
BLOCK = 256  # threads per block
BLOCKS_PER_SM = 8  # a grid-stride loop needs no more blocks than keep every SM busy
PER_THREAD = 16  # sum_of_squares: about this many elements per partial sum
DECAY_KINDS = {None: 0, "l2": 1, "decoupled": 2}  # optim.cu's WEIGHT_DECAY_*

_source = CudaSource(SOURCE, ("--std=c++17", "--fmad=false"))


def _kernel(name, dtype):
    """The kernel `name` for `dtype`."""
    return _source.function(f"{name}_{cuda_suffix(dtype, name)}")


def _empty(shape, dtype):
    """Every buffer this module fills is allocated here (the tests poison it with NaN)."""
    return load_cupy().empty(shape, dtype)


def _blocks(n):
    return grid_blocks(n, BLOCK, BLOCKS_PER_SM)


def _table(columns, numbers=()):
    """The tensors' table on the GPU: per tensor its start in the joint index space, its size, the
    pointers of `columns` (lists of arrays, the first one's sizes counted) and the bits of the
    doubles in `numbers` (lists of floats); returns (table, count, total).

    NOTE: the table holds bare pointers: the caller keeps every array alive until the launch.
    """
    sizes = np.array([a.size for a in columns[0]], np.int64)
    table = np.empty((len(sizes), 2 + len(columns) + len(numbers)), np.int64)
    table[:, 1] = sizes
    table[:, 0] = np.cumsum(sizes) - sizes
    for k, arrays in enumerate(columns):
        table[:, 2 + k] = [a.data.ptr for a in arrays]
    for k, values in enumerate(numbers):
        table[:, 2 + len(columns) + k] = np.asarray(values, np.float64).view(np.int64)
    return load_cupy().asarray(table), np.int32(len(sizes)), int(sizes.sum())


def _in_place(name, a, like):
    if not a.flags.c_contiguous or a.dtype != like.dtype or a.shape != like.shape:
        raise ValueError(f"{name} is updated in place: it must be a C-contiguous {like.dtype} array of shape "
                         f"{like.shape}, got {a.dtype} {a.shape} (contiguous: {a.flags.c_contiguous})")


def _by_dtype(arrays):
    """Indices of the non-empty `arrays`, grouped by dtype (one launch per dtype)."""
    groups = {}
    for i, a in enumerate(arrays):
        if a.size:
            groups.setdefault(a.dtype, []).append(i)
    return groups.items()


def adam_update_many(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, decoupled):
    """`adam_update` on each (p, g, m, v, step) of the lists: one launch per dtype."""
    cupy = load_cupy()
    kind = None if weight_decay == 0 else "decoupled" if decoupled else "l2"
    for dtype, idx in _by_dtype(params):
        for i in idx:
            _in_place("p", params[i], params[i])
            _in_place("m", exp_avgs[i], params[i])
            _in_place("v", exp_avg_sqs[i], params[i])
        ps = [params[i] for i in idx]
        gs = [cupy.ascontiguousarray(grads[i], dtype=dtype) for i in idx]  # kept alive through the launch
        table, count, total = _table([ps, gs, [exp_avgs[i] for i in idx], [exp_avg_sqs[i] for i in idx]],
                                     [[lr / (1 - beta1 ** steps[i]) for i in idx],
                                      [math.sqrt(1 - beta2 ** steps[i]) for i in idx]])
        T = dtype.type
        constants = (1 - lr * weight_decay, weight_decay, beta1, 1 - beta1, beta2, 1 - beta2, eps)
        _kernel("adam", dtype)((_blocks(total),), (BLOCK,),
                               (table, count, np.int64(total), np.int32(DECAY_KINDS[kind]), *map(T, constants)))


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """As `reference.adam_update`: p, m and v (C-contiguous CuPy arrays of one dtype) updated in place."""
    adam_update_many([p], [g], [m], [v], [step], lr, beta1, beta2, eps, weight_decay, decoupled)


def ema_update_many(shadows, params, decay):
    """`ema_update` on each (shadow, p) of the lists: one launch per dtype."""
    cupy = load_cupy()
    for dtype, idx in _by_dtype(shadows):
        for i in idx:
            _in_place("the shadow", shadows[i], shadows[i])
        ps = [cupy.ascontiguousarray(params[i], dtype=dtype) for i in idx]  # kept alive through the launch
        table, count, total = _table([[shadows[i] for i in idx], ps])
        _kernel("ema", dtype)((_blocks(total),), (BLOCK,), (table, count, np.int64(total), dtype.type(1 - decay)))


def ema_update(shadow, p, decay):
    """As `reference.ema_update`: shadow (a C-contiguous CuPy array) moved towards p in place."""
    ema_update_many([shadow], [p], decay)


def sum_of_squares(arrays):
    """As `reference.sum_of_squares`: a 0-d float64 CuPy array, from one kernel per dtype writing
    partial sums into one buffer, and one reduction over the buffer."""
    cupy = load_cupy()
    arrays = [cupy.ascontiguousarray(a) for a in arrays]
    launches = []
    for dtype, idx in _by_dtype(arrays):
        table, count, total = _table([[arrays[i] for i in idx]])
        blocks = max(1, min(-(-total // (BLOCK * PER_THREAD)), _blocks(total)))
        launches.append((dtype, table, count, total, blocks))
    partials = _empty(BLOCK * sum(b for *_, b in launches), np.float64)  # every element written
    start = 0
    for dtype, table, count, total, blocks in launches:
        slots = BLOCK * blocks  # one partial sum per thread
        _kernel("sum_squares", dtype)((blocks,), (BLOCK,), (table, count, np.int64(total),
                                                            partials[start:start + slots], np.int64(slots)))
        start += slots
    return partials.sum()


def scale_many(arrays, factor):
    """As `reference.scale_many`: every array multiplied by `factor` in place, one launch per dtype for
    the C-contiguous ones (a strided one is scaled by CuPy itself)."""
    strided = [a for a in arrays if not a.flags.c_contiguous]
    for a in strided:
        a *= factor
    arrays = [a for a in arrays if a.flags.c_contiguous]
    for dtype, idx in _by_dtype(arrays):
        table, count, total = _table([[arrays[i] for i in idx]])
        _kernel("scale", dtype)((_blocks(total),), (BLOCK,), (table, count, np.int64(total), dtype.type(factor)))
