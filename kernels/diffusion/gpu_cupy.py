"""The diffusion noise steps on the GPU with CuPy: the functions of `reference.py`, same signatures, each
one CUDA kernel, one pass over memory, the Gaussian noise made inside from the reference's stream.

Only `tinygen.kernels.diffusion.implementation()` imports this module, and only for CuPy arrays
(``TINYGEN_KERNELS=auto`` or ``cupy``), so importing tinygen never imports CuPy; CuPy itself is
reached through `tinygen.backend.load_cupy` on the first call. Read `reference.py` first (the
math, the conventions on shapes, dtypes and coefficients, the definition of the generator), then
`diffusion.cu` (shipped beside this file; compiled once per process by `cupy.RawModule`, cached
on disk by CuPy), which says how the work is laid out.

The kernels draw z from Philox4x32-10 + Box-Muller exactly as `reference.normal` defines them, so
for one seed and offset the GPU and the CPU draw the same noise (the integers bit for bit; each
normal within a few float32 ulps, from the float32 logf/sqrtf/sincospif). The steps are compiled
with ``--fmad=false`` and evaluated in the reference's order of operations: for a given z the
float32 results are the reference's.

Coefficients: the per-sample coefficients (numbers, NumPy arrays or CuPy arrays of shape (B,))
are cast to the images' dtype, as `reference.per_sample` does, and stacked into one (K, B) array
on the GPU: one small host-to-device copy per call when they come from the host (a sampler's
schedule tables), none when they are on the GPU already. Nothing here reads a GPU array on the
CPU, so a sampling loop makes no host round trip.

Every output comes from `_empty` unless the caller passes `out=` (the tests poison `_empty`
with NaN, to prove that every element is written); `out` may be an input (an in-place step):
each element is read and written by the same thread.
"""

import os

import numpy as np

from tinygen.backend import is_device_array, load_cupy
from tinygen.kernels.gpu_runtime import CudaSource, cuda_suffix, grid_blocks

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "diffusion.cu")
BLOCK = 256  # threads per block; each thread makes 4 elements
BLOCKS_PER_SM = 16  # a grid-stride loop needs no more blocks than keep every SM busy

_source = CudaSource(SOURCE, ("--std=c++17", "--fmad=false"))


def _kernel(name, dtype):
    """The kernel `name` for `dtype`."""
    return _source.function(f"{name}_{cuda_suffix(dtype, name)}")


def _launch(kernel, groups, args):
    """Run a grid-stride kernel over `groups` threads' worth of work (4 elements each)."""
    kernel((grid_blocks(groups, BLOCK, BLOCKS_PER_SM),), (BLOCK,), args)


def _empty(shape, dtype):
    """Every output buffer of this module is allocated here (the tests poison it with NaN)."""
    return load_cupy().empty(shape, dtype)


def _output(out, shape, dtype):
    return _empty(shape, dtype) if out is None else out


def _coefficients(x, *coefficients):
    """The per-sample coefficients as one (K, B) array of x's dtype on x's GPU (reference.per_sample's cast)."""
    cupy = load_cupy()
    B = x.shape[0]
    if not any(is_device_array(c) for c in coefficients):  # from the host: one copy of K * B numbers
        host = np.empty((len(coefficients), B), x.dtype)
        for row, coef in zip(host, coefficients):
            row[...] = np.asarray(coef, dtype=x.dtype)
        return cupy.asarray(host)
    c = cupy.empty((len(coefficients), B), x.dtype)
    for k, coef in enumerate(coefficients):
        c[k] = cupy.asarray(coef, dtype=x.dtype)
    return c


def _ddim_coefficients(x, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma):
    """(b, a, a', direction, sigma) per sample, direction = sqrt(max(1 - a'^2 - sigma^2, 0)) computed
    in x's dtype exactly as reference.ddim_step computes it."""
    cupy = load_cupy()
    c = _coefficients(x, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_t, sqrt_alpha_bar_prev, 0, sigma)
    c[3] = cupy.sqrt(cupy.maximum(1 - c[2] * c[2] - c[4] * c[4], 0))
    return c


def _key(seed, offset):
    """(k0, k1, first counter, lane): the Philox key words of `seed` and where number `offset` sits."""
    seed, offset = int(seed), int(offset)
    return np.uint32(seed & 0xFFFFFFFF), np.uint32(seed >> 32), np.uint64(offset // 4), np.int32(offset % 4)


def _vectorizable(dtype, lane, per_sample, *arrays):
    """Whether a thread's 4 elements load and store as one float4: float32, 16-byte aligned arrays,
    lane 0 and samples of a multiple of 4 elements (so 4 elements never straddle two samples)."""
    return np.int32(
        dtype == np.float32 and lane == 0 and per_sample % 4 == 0 and all(a.data.ptr % 16 == 0 for a in arrays)
    )


def _step(name, c, x, e, z, out):
    """The step `name` with z read from memory (or none), into out or a new array."""
    cupy = load_cupy()
    x, e, z = cupy.ascontiguousarray(x), cupy.ascontiguousarray(e), cupy.ascontiguousarray(z)
    out = _output(out, x.shape, x.dtype)
    n = x.size
    if n:
        per_sample = n // x.shape[0]
        vec = _vectorizable(x.dtype, 0, per_sample, x, e, z, out)
        _launch(_kernel(f"step_{name}", x.dtype), (n + 3) // 4,
                (x, e, z, out, c, np.int64(n), np.int64(per_sample), np.int64(x.shape[0]), vec))
    return out


def _noise(name, c, x, e, out, out2, seed, offset):
    """The step `name` with z made inside the kernel from the stream (seed, offset)."""
    n = out.size
    if not n:
        return
    k0, k1, first, lane = _key(seed, offset)
    per_sample = n // c.shape[1]
    vec = _vectorizable(out.dtype, lane, per_sample, x, e, out, out2)
    _launch(_kernel(f"noise_{name}", out.dtype), (int(lane) + n + 3) // 4,
            (x, e, out, out2, c, np.int64(n), np.int64(per_sample), np.int64(c.shape[1]), k0, k1, first, lane, vec))


# --- the public functions: reference.py's signatures ----------------------------------------


def q_sample(x0, eps, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, out=None):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, per sample."""
    c = _coefficients(x0, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t)
    return _step("q_sample", c, x0, x0, eps, out)


def p_sample_step(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, z=None, out=None):
    """x_{t-1} = inv_sqrt_alpha (x_t - coef_eps eps_theta) + sigma z (z None: no noise term)."""
    c = _coefficients(x_t, coef_eps, inv_sqrt_alpha, sigma)
    return _step("p_mean" if z is None else "p_sample", c, x_t, eps_pred, x_t if z is None else z, out)


def ddim_step(x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, z=None,
              out=None):
    """One DDIM step (Song et al. 2021, eq. 12); z None: no noise term."""
    c = _ddim_coefficients(x_t, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma)
    return _step("ddim_mean" if z is None else "ddim", c, x_t, eps_pred, x_t if z is None else z, out)


def q_sample_noise(x0, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, seed, offset=0, out=None):
    """(x_t, eps): q_sample with eps = normal(x0.shape, seed, offset, x0.dtype), and that eps."""
    cupy = load_cupy()
    x0 = cupy.ascontiguousarray(x0)
    c = _coefficients(x0, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t)
    x_t = _output(None if out is None else out[0], x0.shape, x0.dtype)
    eps = _output(None if out is None else out[1], x0.shape, x0.dtype)
    _noise("q_sample", c, x0, x0, x_t, eps, seed, offset)
    return x_t, eps


def p_sample_step_noise(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, seed, offset=0, out=None):
    """p_sample_step with z = normal(x_t.shape, seed, offset, x_t.dtype), made inside the kernel."""
    cupy = load_cupy()
    x_t, eps_pred = cupy.ascontiguousarray(x_t), cupy.ascontiguousarray(eps_pred)
    c = _coefficients(x_t, coef_eps, inv_sqrt_alpha, sigma)
    out = _output(out, x_t.shape, x_t.dtype)
    _noise("p_sample", c, x_t, eps_pred, out, out, seed, offset)
    return out


def ddim_step_noise(x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, seed,
                    offset=0, out=None):
    """ddim_step with z = normal(x_t.shape, seed, offset, x_t.dtype), made inside the kernel."""
    cupy = load_cupy()
    x_t, eps_pred = cupy.ascontiguousarray(x_t), cupy.ascontiguousarray(eps_pred)
    c = _ddim_coefficients(x_t, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma)
    out = _output(out, x_t.shape, x_t.dtype)
    _noise("ddim", c, x_t, eps_pred, out, out, seed, offset)
    return out


def normal(shape, seed, offset=0, dtype=np.float32, out=None):
    """Standard normals of `shape` on the current GPU (or into `out`, a CuPy array): element k is
    number offset + k of the stream `seed` (reference.normal)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    out = _output(out, shape, np.dtype(dtype))
    c = load_cupy().zeros((1, 1), out.dtype)  # one "sample"; NORMAL uses no coefficient
    flat = out.reshape(-1)
    if flat.size:
        _noise("normal", c, flat, flat, flat, flat, seed, offset)
    return out
