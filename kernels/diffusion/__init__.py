"""Diffusion noise-step kernels, and the one dispatcher that picks which implementation runs.

`implementation()` maps `tinygen.backend.kernel_backend()` (the ``TINYGEN_KERNELS`` knob) to a
module; every function below checks its arguments once, here at the entrance, forwards to that
module and counts the call in `calls`, keyed by (module, function), e.g.
``calls["reference", "q_sample"]``, so the choice is made on each call and a test can check which
module really ran. Every implementation module has the same functions with the same signatures
as `reference.py`, the plain NumPy spec (read it for the math and the conventions on shapes and
dtypes). Only the reference exists so far: ``TINYGEN_KERNELS=numba`` makes these functions raise.
"""

from collections import Counter

import numpy as np

from tinygen.backend import get_array_module, kernel_backend
from tinygen.errors import ArgumentError, BackendUnavailableError, DTypeError, ShapeError
from tinygen.kernels.diffusion import reference

PROVIDES = ("numpy",)  # the kernel backends with diffusion kernels

calls = Counter()  # (module name, function name) -> number of calls forwarded there


def implementation():
    """The module holding the diffusion kernels of the current kernel backend."""
    backend = kernel_backend(provides=PROVIDES)
    if backend == "numpy":
        return reference
    raise BackendUnavailableError(f"no diffusion kernels for kernel backend {backend!r}")


def _dispatch(name):
    module = implementation()
    calls[module.__name__.rsplit(".", 1)[-1], name] += 1
    return getattr(module, name)


def q_sample(x0, eps, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, coefficients per sample (B,)."""
    _check_images("q_sample", x0=x0, eps=eps)
    _check_coefficients("q_sample", x0, sqrt_alpha_bar_t=sqrt_alpha_bar_t,
                        sqrt_one_minus_alpha_bar_t=sqrt_one_minus_alpha_bar_t)
    return _dispatch("q_sample")(x0, eps, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t)


def p_sample_step(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, z=None):
    """x_{t-1} = inv_sqrt_alpha (x_t - coef_eps eps_pred) + sigma z (DDPM Algorithm 2, one step)."""
    _check_images("p_sample_step", x_t=x_t, eps_pred=eps_pred, z=z)
    _check_coefficients("p_sample_step", x_t, coef_eps=coef_eps, inv_sqrt_alpha=inv_sqrt_alpha, sigma=sigma)
    _check_noise("p_sample_step", sigma, z)
    return _dispatch("p_sample_step")(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, z)


def ddim_step(x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, z=None):
    """One DDIM step (Song et al. 2021, eq. 12) from t to t' with sqrt(alpha_bar_t') = sqrt_alpha_bar_prev."""
    _check_images("ddim_step", x_t=x_t, eps_pred=eps_pred, z=z)
    _check_coefficients(
        "ddim_step", x_t, sqrt_alpha_bar_t=sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t=sqrt_one_minus_alpha_bar_t,
        sqrt_alpha_bar_prev=sqrt_alpha_bar_prev, sigma=sigma,
    )
    _check_noise("ddim_step", sigma, z)
    return _dispatch("ddim_step")(
        x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, z
    )


# --- argument checks (once, for every implementation) ---------------------------------------


def _check_images(what, **arrays):
    """All given arrays (None skipped) have the first one's shape (B, ...) and float dtype."""
    (first_name, first), *rest = arrays.items()
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
        c = get_array_module(x).asarray(c)
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
