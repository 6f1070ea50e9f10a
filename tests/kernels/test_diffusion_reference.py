"""The NumPy reference noise steps against hand-computed values and per-sample float64 loops.

The oracles share no code with the kernels: `naive_*` loop over the samples and apply each
sample's scalar coefficients in float64, straight from the formulas in the docstrings
(Ho et al. 2020, eq. 4 and Algorithm 2; Song et al. 2021, eq. 12).
"""

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from strategies import shapes
from tinygen.errors import ArgumentError, BackendUnavailableError, DTypeError, ShapeError
from tinygen.kernels import diffusion
from tinygen.kernels.diffusion import reference

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-13, atol=1e-13)}


# --- naive definitions, one sample at a time in float64 ---------------------------------------


def naive_q_sample(x0, eps, a, b):
    return np.stack([a[i] * x0[i].astype(np.float64) + b[i] * eps[i] for i in range(len(x0))])


def naive_p_sample_step(x, eps, coef_eps, inv_sqrt_alpha, sigma, z):
    return np.stack([inv_sqrt_alpha[i] * (x[i].astype(np.float64) - coef_eps[i] * eps[i]) + sigma[i] * z[i]
                     for i in range(len(x))])


def naive_ddim_step(x, eps, sab, somab, sab_prev, sigma, z):
    out = []
    for i in range(len(x)):
        x0_hat = (x[i].astype(np.float64) - somab[i] * eps[i]) / sab[i]
        direction = math.sqrt(max(1 - sab_prev[i] ** 2 - sigma[i] ** 2, 0.0))
        out.append(sab_prev[i] * x0_hat + direction * eps[i] + sigma[i] * z[i])
    return np.stack(out)


@st.composite
def step_problems(draw):
    """Images of a drawn shape (B, ...) and dtype, with per-sample coefficients in float64."""
    shape = draw(shapes(min_dims=1, max_dims=4, max_side=5))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    B = shape[0]
    arrays = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]  # x, eps, z
    alpha_bar = rng.uniform(0.01, 0.99, B)
    alpha_bar_prev = np.minimum(alpha_bar / rng.uniform(0.5, 0.999, B), 1.0)  # abar_prev > abar_t
    return dtype, arrays, alpha_bar, alpha_bar_prev, rng.uniform(0, 0.3, B)


def assert_matches(actual, expected, dtype):
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {np.dtype(dtype)}"
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, **TOL[dtype])


# --- the three kernels against the loops -----------------------------------------------------


@settings(max_examples=50)
@given(step_problems())
def test_q_sample_matches_per_sample_formula(problem):
    dtype, (x0, eps, _), alpha_bar, _, _ = problem
    a, b = np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar)
    assert_matches(diffusion.q_sample(x0, eps, a, b), naive_q_sample(x0, eps, a, b), dtype)


@settings(max_examples=50)
@given(step_problems())
def test_p_sample_step_matches_per_sample_formula(problem):
    dtype, (x, eps, z), alpha_bar, _, sigma = problem
    coef_eps, inv_sqrt_alpha = 1 - alpha_bar, 1 / np.sqrt(alpha_bar)  # any numbers will do
    out = diffusion.p_sample_step(x, eps, coef_eps, inv_sqrt_alpha, sigma, z)
    assert_matches(out, naive_p_sample_step(x, eps, coef_eps, inv_sqrt_alpha, sigma, z), dtype)


@settings(max_examples=50)
@given(step_problems())
def test_ddim_step_matches_per_sample_formula(problem):
    dtype, (x, eps, z), alpha_bar, alpha_bar_prev, eta = problem
    sab, somab, sab_prev = np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar), np.sqrt(alpha_bar_prev)
    # Song et al. eq. 16 with eta in [0, 0.3]: sigma^2 <= 1 - abar_prev
    sigma = eta * np.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))
    out = diffusion.ddim_step(x, eps, sab, somab, sab_prev, sigma, z)
    assert_matches(out, naive_ddim_step(x, eps, sab, somab, sab_prev, sigma, z), dtype)


@settings(max_examples=20)
@given(step_problems())
def test_ddim_step_is_a_p_sample_step_with_folded_coefficients(problem):
    # x' = a (x - c eps) + sigma z with a = sqrt(abar')/sqrt(abar), c = sqrt(1 - abar) - sqrt(1 - abar' - sigma^2) / a.
    # An identity of the math, checked in float64: in float32 the folded c cancels digits.
    _, arrays, alpha_bar, alpha_bar_prev, sigma = problem
    x, eps, z = (a.astype(np.float64) for a in arrays)
    sigma = np.minimum(sigma, 0.9 * np.sqrt(1 - alpha_bar_prev))
    a = np.sqrt(alpha_bar_prev / alpha_bar)
    c = np.sqrt(1 - alpha_bar) - np.sqrt(1 - alpha_bar_prev - sigma**2) / a
    ddim = diffusion.ddim_step(x, eps, np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar), np.sqrt(alpha_bar_prev), sigma, z)
    np.testing.assert_allclose(ddim, diffusion.p_sample_step(x, eps, c, a, sigma, z), rtol=1e-10, atol=1e-10)


# --- hand-computed values, dtypes, scalars, no noise ----------------------------------------------


def test_hand_computed_values():
    x = np.array([[1.0, -2.0], [0.5, 4.0]])  # B = 2, one row per sample
    eps = np.array([[0.5, 1.0], [-1.0, 2.0]])
    z = np.array([[2.0, 0.0], [1.0, -1.0]])
    # q_sample: 0.6 x + 0.8 eps for sample 0, 1.0 x + 0.0 eps for sample 1
    np.testing.assert_allclose(diffusion.q_sample(x, eps, np.array([0.6, 1.0]), np.array([0.8, 0.0])),
                               [[1.0, -0.4], [0.5, 4.0]])
    # p_sample_step: 2 (x - 0.5 eps) + 0.1 z, then 1 (x - 1 eps) + 0 z
    np.testing.assert_allclose(
        diffusion.p_sample_step(x, eps, np.array([0.5, 1.0]), np.array([2.0, 1.0]), np.array([0.1, 0.0]), z),
        [[1.7, -5.0], [1.5, 2.0]],
    )
    # ddim_step to abar' = 1 (the last step) is the predicted x_0 = (x - 0.8 eps) / 0.6
    out = diffusion.ddim_step(x, eps, np.array([0.6, 0.6]), np.array([0.8, 0.8]), np.array([1.0, 1.0]),
                              np.zeros(2), None)
    np.testing.assert_allclose(out, (x - 0.8 * eps) / 0.6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_is_kept_whatever_the_coefficients_dtype(dtype):
    x = np.ones((3, 1, 2, 2), dtype)
    coef = np.array([0.5, 0.25, 0.125], np.float64)  # float64 tables with float32 images
    assert diffusion.q_sample(x, x, coef, coef).dtype == dtype
    assert diffusion.p_sample_step(x, x, coef, coef, coef, x).dtype == dtype
    assert diffusion.ddim_step(x, x, coef, coef, coef, coef, x).dtype == dtype


def test_scalar_coefficients_apply_to_every_sample():
    rng = np.random.default_rng(0)
    x, eps = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_array_equal(diffusion.q_sample(x, eps, 0.6, 0.8),
                                  diffusion.q_sample(x, eps, np.full(2, 0.6), np.full(2, 0.8)))


def test_no_noise_when_sigma_is_zero_and_inputs_untouched():
    rng = np.random.default_rng(1)
    x, eps = rng.standard_normal((3, 1, 5, 5)), rng.standard_normal((3, 1, 5, 5))
    before = x.copy(), eps.copy()
    coefs = np.array([0.1, 0.2, 0.3]), np.array([1.1, 1.2, 1.3]), np.zeros(3)
    np.testing.assert_array_equal(diffusion.p_sample_step(x, eps, *coefs, None),
                                  diffusion.p_sample_step(x, eps, *coefs, np.zeros_like(x)))
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(eps, before[1])


# --- errors at the entrance --------------------------------------------------------------------


def test_bad_arguments_raise_naming_the_problem():
    x = np.zeros((2, 1, 3, 3), np.float32)
    c = np.ones(2)
    with pytest.raises(ShapeError, match="eps has shape"):
        diffusion.q_sample(x, np.zeros((2, 1, 3, 4), np.float32), c, c)
    with pytest.raises(DTypeError, match="eps is float64"):
        diffusion.q_sample(x, x.astype(np.float64), c, c)
    with pytest.raises(DTypeError, match="float32 or float64"):
        diffusion.q_sample(x.astype(np.int64), x.astype(np.int64), c, c)
    with pytest.raises(ShapeError, match=r"one per sample, got shape \(3,\)"):
        diffusion.q_sample(x, x, np.ones(3), c)
    with pytest.raises(ArgumentError, match="z is None but sigma is not 0"):
        diffusion.p_sample_step(x, x, c, c, np.array([0.0, 0.1]), None)
    with pytest.raises(ShapeError, match="batch dimension"):
        diffusion.q_sample(np.ones((), np.float32), np.ones((), np.float32), 1.0, 1.0)
    with pytest.raises(TypeError, match="must be an array"):
        diffusion.ddim_step([[1.0]], np.ones((1, 1)), 1.0, 0.0, 1.0, 0.0)


# --- the dispatcher and the docstrings -----------------------------------------------------------


@pytest.mark.parametrize("knob", [None, "auto", "numpy"])
def test_dispatcher_runs_the_reference_for_numpy(monkeypatch, knob):
    if knob is None:
        monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    else:
        monkeypatch.setenv("TINYGEN_KERNELS", knob)
    assert diffusion.implementation() is reference
    names = ("q_sample", "p_sample_step", "ddim_step")
    before = [diffusion.calls["reference", name] for name in names]
    x, c = np.ones((2, 1)), np.ones(2)
    np.testing.assert_array_equal(diffusion.q_sample(x, x, c, c), reference.q_sample(x, x, c, c))
    diffusion.p_sample_step(x, x, c, c, c, x)
    diffusion.ddim_step(x, x, c, c, c, 0 * c, None)
    assert [diffusion.calls["reference", name] for name in names] == [n + 1 for n in before]


@pytest.mark.parametrize("knob", ["fortran", "numba"])
def test_dispatcher_refuses_a_backend_without_diffusion_kernels(monkeypatch, knob):
    # "numba" is refused whether or not Numba is installed: no silent fallback to the reference
    monkeypatch.setenv("TINYGEN_KERNELS", knob)
    with pytest.raises(BackendUnavailableError, match=knob):
        diffusion.q_sample(np.ones((1, 1)), np.ones((1, 1)), 1.0, 0.0)


def test_reference_docstring_examples_run():
    assert doctest.testmod(reference).failed == 0
