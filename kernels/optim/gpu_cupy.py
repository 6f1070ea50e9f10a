"""The optimizers' kernels on the GPU with CuPy: `reference.py`'s functions, one CUDA kernel per parameter.

The reference's array code makes about a dozen CuPy kernels per parameter (each a launch of a few
microseconds, and a pass over memory); for the DDPM UNet's 90 parameter tensors that was over
a thousand launches per training step. Here each parameter is one launch of `optim.cu` (shipped
beside this file, compiled once per process by `cupy.RawModule`, cached on disk by CuPy), which
reads p, g, m and v once and writes p, m and v in place, with the reference's operations in its
order (no fused multiply-adds): the results are the reference's. The EMA's update is one launch
per parameter too, and clip_grad_norm_'s sum of squares one per gradient and one reduction.

Only `tinygen.kernels.optim.implementation()` imports this module, for CuPy arrays, so importing
tinygen never imports CuPy.
"""

import math
import os

import numpy as np

from tinygen.backend import load_cupy

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim.cu")
BLOCK = 256  # threads per block
BLOCKS_PER_SM = 8  # a grid-stride loop needs no more blocks than keep every SM busy
PER_THREAD = 16  # sum_of_squares: about this many elements per thread
DECAY_KINDS = {None: 0, "l2": 1, "decoupled": 2}  # optim.cu's WEIGHT_DECAY_*

_module = None  # the compiled RawModule, built on first use
_sm_count = {}  # device id -> multiprocessor count


def _kernel(name, dtype):
    """The compiled kernel `name` for `dtype` (the module compiles once per process)."""
    global _module
    cupy = load_cupy()
    if _module is None:
        with open(SOURCE, encoding="utf-8") as f:
            _module = cupy.RawModule(code=f.read(), options=("--std=c++17", "--fmad=false"))
    suffix = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}[np.dtype(dtype)]
    return _module.get_function(f"{name}_{suffix}")


def _empty(shape, dtype):
    """Every buffer this module fills is allocated here (the tests poison it with NaN)."""
    return load_cupy().empty(shape, dtype)


def _blocks(n):
    cupy = load_cupy()
    device = cupy.cuda.runtime.getDevice()
    if device not in _sm_count:
        _sm_count[device] = cupy.cuda.Device(device).attributes["MultiProcessorCount"]
    return max(1, min(-(-n // BLOCK), _sm_count[device] * BLOCKS_PER_SM))


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """As `reference.adam_update`: p, m and v (C-contiguous CuPy arrays of one dtype) updated in place."""
    cupy = load_cupy()
    for name, a in (("p", p), ("m", m), ("v", v)):
        if not a.flags.c_contiguous or a.dtype != p.dtype or a.shape != p.shape:
            raise ValueError(f"adam_update updates {name} in place: it must be a C-contiguous {p.dtype} array of "
                             f"shape {p.shape}, got {a.dtype} {a.shape} (contiguous: {a.flags.c_contiguous})")
    g = cupy.ascontiguousarray(g, dtype=p.dtype)
    kind = None if weight_decay == 0 else "decoupled" if decoupled else "l2"
    T = p.dtype.type
    constants = (1 - lr * weight_decay, weight_decay, beta1, 1 - beta1, beta2, 1 - beta2,
                 lr / (1 - beta1**step), math.sqrt(1 - beta2**step), eps)
    if p.size:
        _kernel("adam", p.dtype)((_blocks(p.size),), (BLOCK,),
                                 (p, g, m, v, np.int64(p.size), np.int32(DECAY_KINDS[kind]), *map(T, constants)))


def ema_update(shadow, p, decay):
    """As `reference.ema_update`: shadow (a C-contiguous CuPy array) moved towards p in place."""
    cupy = load_cupy()
    if not shadow.flags.c_contiguous:
        raise ValueError(f"ema_update updates the shadow in place: it must be C-contiguous, got strides {shadow.strides}")
    p = cupy.ascontiguousarray(p, dtype=shadow.dtype)
    if shadow.size:
        _kernel("ema", shadow.dtype)((_blocks(shadow.size),), (BLOCK,),
                                     (shadow, p, np.int64(shadow.size), shadow.dtype.type(1 - decay)))


def sum_of_squares(arrays):
    """As `reference.sum_of_squares`: a 0-d float64 CuPy array, from one kernel per array writing
    per-thread partial sums into one buffer, and one reduction over the buffer."""
    cupy = load_cupy()
    arrays = [cupy.ascontiguousarray(a) for a in arrays if a.size]
    blocks = [max(1, min(-(-a.size // (BLOCK * PER_THREAD)), _blocks(a.size))) for a in arrays]
    partials = _empty(BLOCK * sum(blocks), np.float64)  # every element written: one per thread
    start = 0
    for a, b in zip(arrays, blocks):
        slots = BLOCK * b  # one partial sum per thread
        _kernel("sum_squares", a.dtype)((b,), (BLOCK,), (a, np.int64(a.size), partials[start:start + slots],
                                                         np.int64(slots)))
        start += slots
    return partials.sum()
