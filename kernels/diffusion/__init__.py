"""Diffusion noise-step kernels, and the one dispatcher that picks which implementation runs.

`kernels` (a `tinygen.kernels.dispatch.KernelFamily`) picks the implementation for the
``TINYGEN_KERNELS`` knob and the images' array module; every function below checks its arguments
once, here at the entrance, forwards to that implementation and counts the call in `calls`, keyed
by (module, function), e.g. ``calls["reference", "q_sample"]``, so a test can check which module
really ran. Every implementation module has the same functions with the
same signatures as `reference.py`, the plain NumPy spec (read it for the math, the conventions
on shapes and dtypes, and the counter-based generator behind `normal` and the *_noise steps):
`reference` (NumPy; on CuPy arrays too, through `xp`), `cpu_numba` or `gpu_cupy` (CUDA kernels,
picked by ``auto`` for CuPy arrays), each imported on first use only, so importing tinygen never
imports Numba or CuPy. The images decide the device; `normal`, which has none, takes `device=`
(default ``cpu``) or the device of its `out`. Every function takes an optional `out=`: an array
of the result's shape and dtype, C-contiguous, on the images' device, to write the result into
(for `q_sample_noise`, a pair (x_t, eps)); the steps are elementwise, so `out` may be one of the
input arrays (an in-place step), but must not overlap one otherwise: the fast kernels write each
element as they go, so an `out` shifted against an input would read values already overwritten
(`_check_overlap` refuses it).
"""

import math

import numpy as np

from tinygen import backend as _backend
from tinygen.backend import device_of, get_array_module, is_device_array
from tinygen.errors import ArgumentError, DeviceMismatchError, DTypeError, ShapeError
from tinygen.kernels.dispatch import KernelFamily

kernels = KernelFamily(__name__, ("numpy", "numba", "cupy"))
calls, implementation = kernels.calls, kernels.implementation


def q_sample(x0, eps, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, out=None):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, coefficients per sample (B,)."""
    _check_images("q_sample", x0=x0, eps=eps)
    _check_coefficients("q_sample", x0, sqrt_alpha_bar_t=sqrt_alpha_bar_t,
                        sqrt_one_minus_alpha_bar_t=sqrt_one_minus_alpha_bar_t)
    _check_out("q_sample", x0.shape, x0.dtype, type(x0), out=out)
    _check_overlap("q_sample", {"out": out}, x0=x0, eps=eps)
    return kernels.function("q_sample", x0)(x0, eps, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, out)


def p_sample_step(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, z=None, out=None):
    """x_{t-1} = inv_sqrt_alpha (x_t - coef_eps eps_pred) + sigma z (DDPM Algorithm 2, one step)."""
    _check_images("p_sample_step", x_t=x_t, eps_pred=eps_pred, z=z)
    _check_coefficients("p_sample_step", x_t, coef_eps=coef_eps, inv_sqrt_alpha=inv_sqrt_alpha, sigma=sigma)
    _check_noise("p_sample_step", sigma, z)
    _check_out("p_sample_step", x_t.shape, x_t.dtype, type(x_t), out=out)
    _check_overlap("p_sample_step", {"out": out}, x_t=x_t, eps_pred=eps_pred, z=z)
    return kernels.function("p_sample_step", x_t)(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, z, out)


def ddim_step(x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, z=None,
              out=None):
    """One DDIM step (Song et al. 2021, eq. 12) from t to t' with sqrt(alpha_bar_t') = sqrt_alpha_bar_prev."""
    _check_images("ddim_step", x_t=x_t, eps_pred=eps_pred, z=z)
    _check_coefficients(
        "ddim_step", x_t, sqrt_alpha_bar_t=sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t=sqrt_one_minus_alpha_bar_t,
        sqrt_alpha_bar_prev=sqrt_alpha_bar_prev, sigma=sigma,
    )
    _check_noise("ddim_step", sigma, z)
    _check_out("ddim_step", x_t.shape, x_t.dtype, type(x_t), out=out)
    _check_overlap("ddim_step", {"out": out}, x_t=x_t, eps_pred=eps_pred, z=z)
    return kernels.function("ddim_step", x_t)(
        x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, z, out
    )


# --- the same steps, z drawn inside from the counter-based generator (seed, offset) -------------


def q_sample_noise(x0, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, seed, offset=0, out=None):
    """(x_t, eps): q_sample with eps = normal(x0.shape, seed, offset, x0.dtype), and that eps."""
    _check_images("q_sample_noise", x0=x0)
    _check_coefficients("q_sample_noise", x0, sqrt_alpha_bar_t=sqrt_alpha_bar_t,
                        sqrt_one_minus_alpha_bar_t=sqrt_one_minus_alpha_bar_t)
    _check_stream("q_sample_noise", seed, offset, x0.size)
    if out is not None:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(f"q_sample_noise: out must be a pair of arrays (x_t, eps), got {type(out).__name__}")
        _check_out("q_sample_noise", x0.shape, x0.dtype, type(x0), **{"out[0]": out[0], "out[1]": out[1]})
        if out[0] is out[1]:
            raise ArgumentError("q_sample_noise: out[0] and out[1] are one array; x_t and eps need two")
        _check_overlap("q_sample_noise", {"out[0]": out[0]}, x0=x0, **{"out[1]": out[1]})
        _check_overlap("q_sample_noise", {"out[1]": out[1]}, x0=x0)
    return kernels.function("q_sample_noise", x0)(x0, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, seed, offset, out)


def p_sample_step_noise(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, seed, offset=0, out=None):
    """p_sample_step with z = normal(x_t.shape, seed, offset, x_t.dtype), drawn inside the kernel."""
    _check_images("p_sample_step_noise", x_t=x_t, eps_pred=eps_pred)
    _check_coefficients("p_sample_step_noise", x_t, coef_eps=coef_eps, inv_sqrt_alpha=inv_sqrt_alpha, sigma=sigma)
    _check_stream("p_sample_step_noise", seed, offset, x_t.size)
    _check_out("p_sample_step_noise", x_t.shape, x_t.dtype, type(x_t), out=out)
    _check_overlap("p_sample_step_noise", {"out": out}, x_t=x_t, eps_pred=eps_pred)
    return kernels.function("p_sample_step_noise", x_t)(
        x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, seed, offset, out
    )


def ddim_step_noise(x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, seed,
                    offset=0, out=None):
    """ddim_step with z = normal(x_t.shape, seed, offset, x_t.dtype), drawn inside the kernel."""
    _check_images("ddim_step_noise", x_t=x_t, eps_pred=eps_pred)
    _check_coefficients(
        "ddim_step_noise", x_t, sqrt_alpha_bar_t=sqrt_alpha_bar_t,
        sqrt_one_minus_alpha_bar_t=sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev=sqrt_alpha_bar_prev, sigma=sigma,
    )
    _check_stream("ddim_step_noise", seed, offset, x_t.size)
    _check_out("ddim_step_noise", x_t.shape, x_t.dtype, type(x_t), out=out)
    _check_overlap("ddim_step_noise", {"out": out}, x_t=x_t, eps_pred=eps_pred)
    return kernels.function("ddim_step_noise", x_t)(
        x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, seed, offset, out
    )


def normal(shape, seed, offset=0, dtype=np.float32, out=None, device=None):
    """Standard normals of `shape`, float32 numbers (given as `dtype`): element k is number offset + k
    of the counter-based stream `seed` (Philox4x32-10 + Box-Muller; see reference.py). They are
    made on `device` (default: the device of `out`, else ``cpu``); on a GPU, by the GPU."""
    shape = (shape,) if _is_int(shape) else shape
    if not isinstance(shape, (tuple, list)) or not all(_is_int(n) and n >= 0 for n in shape):
        raise ArgumentError(f"normal: shape must be a tuple of non-negative integers, got {shape!r}")
    shape = tuple(int(n) for n in shape)
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise DTypeError(f"normal: dtype must be float32 or float64, got {np.dtype(dtype)}")
    _check_stream("normal", seed, offset, math.prod(shape))
    device = None if device is None else _backend.device(device)
    if out is not None and device is not None and device_of(out) != device:
        raise DeviceMismatchError(f"normal: out lives on {device_of(out)}, but device={device} was asked for")
    gpu = device is not None and device.type == "cuda"
    _check_out("normal", shape, np.dtype(dtype), type(out) if gpu or is_device_array(out) else np.ndarray, out=out)
    if out is None and gpu:  # the implementations make the numbers on the current GPU or into out
        out = _backend.empty(shape, np.dtype(dtype), device)
    return kernels.function("normal", out)(shape, seed, offset, dtype, out)


# --- argument checks (once, for every implementation) ---------------------------------------


def _check_images(what, **arrays):
    """All given arrays (None skipped) have the first one's shape (B, ...) and float dtype."""
    (first_name, first), *rest = arrays.items()
    for name, a in rest:
        if a is not None and hasattr(first, "shape") and is_device_array(a) != is_device_array(first):
            raise DeviceMismatchError(f"{what}: {name} lives on {device_of(a)}, but {first_name} on {device_of(first)}")
    for name, a in arrays.items():
        if a is None:
            continue
        if not hasattr(a, "dtype") or not hasattr(a, "shape"):
            raise TypeError(f"{what}: {name} must be an array, got {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise DTypeError(f"{what}: {name} must be float32 or float64, got dtype {a.dtype}")
        if a.ndim < 1:
            raise ShapeError(f"{what}: {name} must have a batch dimension, got shape {a.shape}")
    for name, a in rest:
        if a is None:
            continue
        if a.shape != first.shape:
            raise ShapeError(f"{what}: {name} has shape {a.shape}, but {first_name} has shape {first.shape}")
        if a.dtype != first.dtype:
            raise DTypeError(f"{what}: {name} is {a.dtype}, but {first_name} is {first.dtype}")


def _check_coefficients(what, x, **coefficients):
    """Each coefficient is a number or a float array of shape (B,), B = x.shape[0]."""
    for name, c in coefficients.items():
        if is_device_array(c) and not is_device_array(x):
            raise DeviceMismatchError(f"{what}: {name} lives on {device_of(c)}, but the images on cpu")
        c = c if hasattr(c, "dtype") and hasattr(c, "shape") else np.asarray(c)
        if c.dtype.kind not in "fiu":
            raise DTypeError(f"{what}: {name} must be numeric, got dtype {c.dtype}")
        if c.ndim != 0 and c.shape != (x.shape[0],):
            raise ShapeError(
                f"{what}: {name} must be a number or have shape ({x.shape[0]},), one per sample, "
                f"got shape {c.shape}"
            )


def _check_noise(what, sigma, z):
    if z is None and bool((get_array_module(sigma).asarray(sigma) != 0).any()):
        raise ArgumentError(f"{what}: z is None but sigma is not 0: pass the Gaussian noise z")


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_stream(what, seed, offset, size):
    """seed: an integer in [0, 2^64); offset: an integer >= 0 with offset + size <= 2^64."""
    if not _is_int(seed):
        raise TypeError(f"{what}: seed must be an integer, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**64:
        raise ArgumentError(f"{what}: seed must be in [0, 2**64), got {seed}")
    if not _is_int(offset):
        raise TypeError(f"{what}: offset must be an integer, got {type(offset).__name__}")
    if int(offset) < 0:
        raise ArgumentError(f"{what}: offset must be >= 0, got {offset}")
    if int(offset) + size > 2**64:
        raise ArgumentError(f"{what}: offset {offset} + {size} numbers run past the stream's 2**64 numbers")


def _check_out(what, shape, dtype, array_type, **outs):
    """Each given out (None skipped) is an `array_type` of the result's shape and dtype, C-contiguous
    and writeable."""
    for name, out in outs.items():
        if out is None:
            continue
        if type(out) is not array_type:
            if is_device_array(out) != (array_type.__module__.split(".")[0] == "cupy"):
                where = "on the GPU (CuPy)" if array_type.__module__.split(".")[0] == "cupy" else "on the CPU (NumPy)"
                raise DeviceMismatchError(f"{what}: {name} lives on {device_of(out)}, but the result is made {where}")
            raise TypeError(f"{what}: {name} must be a {array_type.__name__}, got {type(out).__name__}")
        if out.shape != shape:
            raise ShapeError(f"{what}: {name} has shape {out.shape}, the result has shape {shape}")
        if out.dtype != dtype:
            raise DTypeError(f"{what}: {name} is {out.dtype}, the result is {dtype}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ArgumentError(f"{what}: {name} must be C-contiguous and writeable")


def _extent(a):
    """[lo, hi): the byte addresses that array `a` (NumPy or CuPy) can touch."""
    lo = hi = a.data.ptr if is_device_array(a) else a.__array_interface__["data"][0]
    if a.size == 0:
        return lo, lo
    for n, step in zip(a.shape, a.strides):
        if step > 0:
            hi += (n - 1) * step
        else:
            lo += (n - 1) * step
    return lo, hi + a.itemsize


def _check_overlap(what, outs, **inputs):
    """Each given out is an input itself (an in-place step: the same memory, shape and strides) or
    shares no memory with it. The fast kernels write element by element, so an out shifted against
    an input (e.g. buffer[1:] for buffer[:-1]) would read elements it has already overwritten."""
    for out_name, out in outs.items():
        if out is None:
            continue
        out_lo, out_hi = _extent(out)
        for name, a in inputs.items():
            if a is None or not hasattr(a, "strides"):
                continue
            lo, hi = _extent(a)
            same = lo == out_lo and a.shape == out.shape and a.strides == out.strides
            if not same and lo < out_hi and out_lo < hi:
                raise ArgumentError(
                    f"{what}: {out_name} overlaps {name} without being the same array; pass {name} itself "
                    f"for an in-place step, or an out of its own"
                )
