"""The NumPy reference noise steps against hand-computed values and per-sample float64 loops,
and its counter-based Gaussian generator against a scalar Python Philox and the normal law.

The oracles share no code with the kernels: `naive_*` loop over the samples and apply each
sample's scalar coefficients in float64, straight from the formulas in the docstrings
(Ho et al. 2020, eq. 4 and Algorithm 2; Song et al. 2021, eq. 12); `naive_normal` runs
Philox4x32-10 one counter at a time on Python integers (Salmon et al. 2011, checked against
Random123's known answers) and Box-Muller with `math`; `assert_standard_normal` tests the
moments, tails and the Kolmogorov-Smirnov distance of large draws.
"""

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from helpers import assert_standard_normal
from strategies import shapes
from tinygen.kernels import cpu_runtime, dispatch
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
    assert_matches(reference.q_sample(x0, eps, a, b), naive_q_sample(x0, eps, a, b), dtype)


@settings(max_examples=50)
@given(step_problems())
def test_p_sample_step_matches_per_sample_formula(problem):
    dtype, (x, eps, z), alpha_bar, _, sigma = problem
    coef_eps, inv_sqrt_alpha = 1 - alpha_bar, 1 / np.sqrt(alpha_bar)  # any numbers will do
    out = reference.p_sample_step(x, eps, coef_eps, inv_sqrt_alpha, sigma, z)
    assert_matches(out, naive_p_sample_step(x, eps, coef_eps, inv_sqrt_alpha, sigma, z), dtype)


@settings(max_examples=50)
@given(step_problems())
def test_ddim_step_matches_per_sample_formula(problem):
    dtype, (x, eps, z), alpha_bar, alpha_bar_prev, eta = problem
    sab, somab, sab_prev = np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar), np.sqrt(alpha_bar_prev)
    # Song et al. eq. 16 with eta in [0, 0.3]: sigma^2 <= 1 - abar_prev
    sigma = eta * np.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))
    out = reference.ddim_step(x, eps, sab, somab, sab_prev, sigma, z)
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
    ddim = reference.ddim_step(x, eps, np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar), np.sqrt(alpha_bar_prev), sigma, z)
    np.testing.assert_allclose(ddim, reference.p_sample_step(x, eps, c, a, sigma, z), rtol=1e-10, atol=1e-10)


# --- hand-computed values, dtypes, scalars, no noise ----------------------------------------------


def test_hand_computed_values():
    x = np.array([[1.0, -2.0], [0.5, 4.0]])  # B = 2, one row per sample
    eps = np.array([[0.5, 1.0], [-1.0, 2.0]])
    z = np.array([[2.0, 0.0], [1.0, -1.0]])
    # q_sample: 0.6 x + 0.8 eps for sample 0, 1.0 x + 0.0 eps for sample 1
    np.testing.assert_allclose(reference.q_sample(x, eps, np.array([0.6, 1.0]), np.array([0.8, 0.0])),
                               [[1.0, -0.4], [0.5, 4.0]])
    # p_sample_step: 2 (x - 0.5 eps) + 0.1 z, then 1 (x - 1 eps) + 0 z
    np.testing.assert_allclose(
        reference.p_sample_step(x, eps, np.array([0.5, 1.0]), np.array([2.0, 1.0]), np.array([0.1, 0.0]), z),
        [[1.7, -5.0], [1.5, 2.0]],
    )
    # ddim_step to abar' = 1 (the last step) is the predicted x_0 = (x - 0.8 eps) / 0.6
    out = reference.ddim_step(x, eps, np.array([0.6, 0.6]), np.array([0.8, 0.8]), np.array([1.0, 1.0]),
                              np.zeros(2), None)
    np.testing.assert_allclose(out, (x - 0.8 * eps) / 0.6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_is_kept_whatever_the_coefficients_dtype(dtype):
    x = np.ones((3, 1, 2, 2), dtype)
    coef = np.array([0.5, 0.25, 0.125], np.float64)  # float64 tables with float32 images
    assert reference.q_sample(x, x, coef, coef).dtype == dtype
    assert reference.p_sample_step(x, x, coef, coef, coef, x).dtype == dtype
    assert reference.ddim_step(x, x, coef, coef, coef, coef, x).dtype == dtype


def test_scalar_coefficients_apply_to_every_sample():
    rng = np.random.default_rng(0)
    x, eps = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_array_equal(reference.q_sample(x, eps, 0.6, 0.8),
                                  reference.q_sample(x, eps, np.full(2, 0.6), np.full(2, 0.8)))


def test_no_noise_when_sigma_is_zero_and_inputs_untouched():
    rng = np.random.default_rng(1)
    x, eps = rng.standard_normal((3, 1, 5, 5)), rng.standard_normal((3, 1, 5, 5))
    before = x.copy(), eps.copy()
    coefs = np.array([0.1, 0.2, 0.3]), np.array([1.1, 1.2, 1.3]), np.zeros(3)
    np.testing.assert_array_equal(reference.p_sample_step(x, eps, *coefs, None),
                                  reference.p_sample_step(x, eps, *coefs, np.zeros_like(x)))
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


def test_seed_offset_and_out_are_checked_at_the_entrance():
    x, c = np.zeros((2, 3), np.float32), np.ones(2)
    with pytest.raises(TypeError, match="seed must be an integer, got float"):
        diffusion.q_sample_noise(x, c, c, 1.5)
    with pytest.raises(TypeError, match="seed must be an integer, got bool"):
        diffusion.normal(3, True)
    with pytest.raises(ArgumentError, match=r"seed must be in \[0, 2\*\*64\), got -1"):
        diffusion.p_sample_step_noise(x, x, c, c, c, -1)
    with pytest.raises(ArgumentError, match="seed must be in"):
        diffusion.normal(3, 2**64)
    with pytest.raises(ArgumentError, match="offset must be >= 0, got -4"):
        diffusion.ddim_step_noise(x, x, c, c, c, c, 0, offset=-4)
    with pytest.raises(TypeError, match="offset must be an integer"):
        diffusion.normal(3, 0, offset=1.0)
    with pytest.raises(ArgumentError, match="run past"):
        diffusion.normal(3, 0, offset=2**64 - 2)
    diffusion.normal(3, 2**64 - 1, offset=2**64 - 3)  # the last numbers of the last stream
    with pytest.raises(ShapeError, match=r"out has shape \(3, 2\)"):
        diffusion.q_sample(x, x, c, c, out=np.empty((3, 2), np.float32))
    with pytest.raises(DTypeError, match="out is float64"):
        diffusion.p_sample_step_noise(x, x, c, c, c, 0, out=np.empty((2, 3)))
    with pytest.raises(ArgumentError, match="C-contiguous"):
        diffusion.ddim_step(x, x, c, c, c, 0 * c, out=np.empty((3, 2), np.float32).T)
    with pytest.raises(TypeError, match="pair of arrays"):
        diffusion.q_sample_noise(x, c, c, 0, out=np.empty_like(x))
    with pytest.raises(ArgumentError, match="one array"):
        out = np.empty_like(x)
        diffusion.q_sample_noise(x, c, c, 0, out=(out, out))
    with pytest.raises(ArgumentError, match="shape must be a tuple"):
        diffusion.normal((2, -1), 0)
    with pytest.raises(DTypeError, match="float32 or float64"):
        diffusion.normal(3, 0, dtype=np.int32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_receives_the_result_and_may_be_an_input(dtype):
    rng = np.random.default_rng(2)
    x, eps, z = (rng.standard_normal((3, 2, 5)).astype(dtype) for _ in range(3))
    c = rng.uniform(0.1, 1, (3, 3))
    expected = reference.p_sample_step(x, eps, *c, z)
    out = np.full_like(x, np.nan)
    assert reference.p_sample_step(x, eps, *c, z, out=out) is out
    np.testing.assert_array_equal(out, expected)
    reference.p_sample_step(x, eps, *c, z, out=x)  # in place
    np.testing.assert_array_equal(x, expected)
    pair = np.empty_like(x), np.empty_like(x)
    x_t, e = reference.q_sample_noise(eps, c[0], c[1], 5, 7, out=pair)
    assert x_t is pair[0] and e is pair[1]
    np.testing.assert_array_equal(e, reference.normal(x.shape, 5, 7, dtype))
    np.testing.assert_array_equal(reference.normal(x.shape, 5, 7, dtype, out=np.empty_like(x)), e)



def test_an_out_overlapping_an_input_is_refused_unless_it_is_that_input():
    """The fast kernels write element by element: an out shifted by one element against x read x
    values it had already overwritten (Numba's q_sample was off by up to 3.3 where the reference
    was exact). Every backend refuses it at the entrance; in place (out is x) stays allowed."""
    rng = np.random.default_rng(3)
    buffer = rng.standard_normal(4 * 100 + 4).astype(np.float32)
    x, shifted = buffer[:400].reshape(4, 100), buffer[4:].reshape(4, 100)
    eps, c = rng.standard_normal((4, 100)).astype(np.float32), np.full(4, 0.5)
    with pytest.raises(ArgumentError, match="out overlaps x0 without being the same array"):
        diffusion.q_sample(x, eps, c, c, out=shifted)
    with pytest.raises(ArgumentError, match="out overlaps eps_pred"):
        diffusion.p_sample_step(eps, x, c, c, c, eps, out=shifted)
    with pytest.raises(ArgumentError, match="out overlaps z"):
        diffusion.ddim_step(eps, eps, c, c, c, 0 * c, x, out=shifted)
    with pytest.raises(ArgumentError, match="out overlaps x_t"):
        diffusion.p_sample_step_noise(x, eps, c, c, c, 0, out=shifted)
    with pytest.raises(ArgumentError, match="out overlaps x_t"):
        diffusion.ddim_step_noise(x, eps, c, c, c, 0 * c, 0, out=shifted)
    with pytest.raises(ArgumentError, match=r"out\[0\] overlaps x0"):
        diffusion.q_sample_noise(x, c, c, 0, out=(shifted, np.empty_like(x)))
    with pytest.raises(ArgumentError, match=r"out\[0\] overlaps out\[1\]"):
        diffusion.q_sample_noise(eps, c, c, 0, out=(x, shifted))
    expected = reference.q_sample(x, eps, c, c)
    assert diffusion.q_sample(x, eps, c, c, out=x) is x  # in place
    np.testing.assert_array_equal(x, expected)
    apart = buffer[:200].reshape(2, 100), buffer[200:400].reshape(2, 100)  # one buffer, no shared element
    np.testing.assert_array_equal(diffusion.q_sample(apart[0], apart[0], 1.0, 1.0, out=apart[1]), 2 * apart[0])


# --- the counter-based generator -------------------------------------------------------------------

# Random123, tests/kat_vectors: "philox4x32 10" counter (4 words), key (2 words) -> result (4 words)
PHILOX_KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def naive_philox4x32_10(counter, key):
    """Philox4x32-10 on Python integers, one counter, as written in Salmon et al. (2011), section 5."""
    m0, m1, w0, w1, mask = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 0xFFFFFFFF
    x0, x1, x2, x3 = counter
    k0, k1 = key
    for round_ in range(10):
        hi0, lo0 = divmod(m0 * x0, 2**32)
        hi1, lo1 = divmod(m1 * x2, 2**32)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
        k0, k1 = (k0 + w0) & mask, (k1 + w1) & mask
    return x0, x1, x2, x3


def naive_normal(j, seed):
    """Normal number j of stream `seed`, straight from reference.py's module docstring."""
    w = naive_philox4x32_10((j // 4 % 2**32, j // 4 // 2**32, 0, 0), (seed % 2**32, seed // 2**32))
    pair, lane = divmod(j % 4, 2)
    u1, u2 = ((w[2 * pair] >> 8) + 1) / 2**24, (w[2 * pair + 1] >> 8) / 2**24
    r = math.sqrt(-2 * math.log(u1))
    return r * (math.sin if lane else math.cos)(2 * math.pi * u2)


@pytest.mark.parametrize("counter, key, expected", PHILOX_KNOWN_ANSWERS)
def test_philox_matches_random123_known_answers(counter, key, expected):
    assert naive_philox4x32_10(counter, key) == expected
    assert tuple(int(w) for w in reference.philox4x32(counter, key)) == expected


@settings(max_examples=30)
@given(shape=shapes(min_dims=1, max_dims=3, max_side=5), seed=st.integers(0, 2**64 - 1),
       offset=st.one_of(st.integers(0, 50), st.integers(0, 2**64 - 200)))
def test_normal_matches_the_scalar_definition(shape, seed, offset):
    z = reference.normal(shape, seed, offset)
    assert z.shape == shape and z.dtype == np.float32
    expected = [naive_normal(offset + k, seed) for k in range(z.size)]
    np.testing.assert_allclose(z.ravel(), expected, rtol=1e-6, atol=1e-7)  # the float32 nearest, up to ties


def test_normal_is_a_pure_function_of_seed_and_index():
    whole = reference.normal((6, 7), seed=3, offset=5)
    np.testing.assert_array_equal(whole, reference.normal((6, 7), seed=3, offset=5))
    flat = whole.ravel()
    # any cut into consecutive draws, any shape: the same numbers
    for cuts in ([0, 42], [0, 1, 42], [0, 3, 4, 9, 17, 42], [0, 13, 14, 15, 16, 42]):
        parts = [reference.normal(b - a, 3, 5 + a) for a, b in zip(cuts, cuts[1:])]
        np.testing.assert_array_equal(np.concatenate(parts), flat)
    np.testing.assert_array_equal(reference.normal((2, 3, 7), 3, 5).ravel(), flat)
    np.testing.assert_array_equal(reference.normal((0, 4), 3).shape, (0, 4))
    # float64 is the same float32 numbers, converted
    np.testing.assert_array_equal(reference.normal((6, 7), 3, 5, np.float64), whole.astype(np.float64))


def test_normal_differs_across_seeds_and_offsets():
    base = reference.normal(4096, seed=0)
    for other in (reference.normal(4096, 1), reference.normal(4096, 2**32), reference.normal(4096, 0, offset=1),
                  reference.normal(4096, 0, offset=4096)):
        assert np.mean(base == other) < 0.01
        assert abs(np.corrcoef(base, other)[0, 1]) < 5 / math.sqrt(4096)


@pytest.mark.parametrize("seed, offset", [(0, 0), (2**64 - 1, 3), (12345, 2**40 + 1)])
def test_normal_is_standard_normal(seed, offset):
    z = reference.normal(10**6, seed, offset)
    assert_standard_normal(z, f"seed {seed}, offset {offset}")
    # neighbours (the two normals of one Box-Muller pair, the lanes of one counter) are uncorrelated
    for lag in (1, 2, 3, 4):
        r = np.corrcoef(z[:-lag], z[lag:])[0, 1]
        assert abs(r) < 5 / math.sqrt(z.size), f"lag {lag}: correlation {r:.3g}"
    assert np.abs(z).max() <= math.sqrt(2 * math.log(2**24)) + 1e-6  # the 24-bit u1 bound, see reference.py


@settings(max_examples=20)
@given(step_problems(), st.integers(0, 2**64 - 1), st.integers(0, 1000))
def test_noise_steps_are_the_steps_with_z_from_normal(problem, seed, offset):
    dtype, (x, eps, _), alpha_bar, alpha_bar_prev, sigma = problem
    z = reference.normal(x.shape, seed, offset, dtype)
    a, b = np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar)
    x_t, e = reference.q_sample_noise(x, a, b, seed, offset)
    np.testing.assert_array_equal(e, z)
    np.testing.assert_array_equal(x_t, reference.q_sample(x, z, a, b))
    np.testing.assert_array_equal(reference.p_sample_step_noise(x, eps, b, a, sigma, seed, offset),
                                  reference.p_sample_step(x, eps, b, a, sigma, z))
    sab_prev = np.sqrt(alpha_bar_prev)
    np.testing.assert_array_equal(reference.ddim_step_noise(x, eps, a, b, sab_prev, 0.5 * sigma, seed, offset),
                                  reference.ddim_step(x, eps, a, b, sab_prev, 0.5 * sigma, z))


# --- the dispatcher and the docstrings -----------------------------------------------------------


@pytest.mark.parametrize("knob", [None, "auto", "numpy"])
def test_dispatcher_runs_the_reference_for_numpy(monkeypatch, knob):
    # auto (or no knob) means the reference only where Numba is missing: simulate that here;
    # test_diffusion_numba.py checks that auto runs the Numba kernels where Numba is installed.
    monkeypatch.setattr(cpu_runtime, "load_numba", lambda: None)
    monkeypatch.setattr(dispatch, "_chosen", {})  # forget the choices made while Numba was there
    if knob is None:
        monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    else:
        monkeypatch.setenv("TINYGEN_KERNELS", knob)
    assert diffusion.implementation() is reference
    names = ("q_sample", "p_sample_step", "ddim_step", "q_sample_noise", "p_sample_step_noise", "ddim_step_noise",
             "normal")
    before = [diffusion.calls["reference", name] for name in names]
    x, c = np.ones((2, 1)), np.ones(2)
    np.testing.assert_array_equal(diffusion.q_sample(x, x, c, c), reference.q_sample(x, x, c, c))
    diffusion.p_sample_step(x, x, c, c, c, x)
    diffusion.ddim_step(x, x, c, c, c, 0 * c, None)
    diffusion.q_sample_noise(x, c, c, 1)
    diffusion.p_sample_step_noise(x, x, c, c, c, 1, 2)
    diffusion.ddim_step_noise(x, x, c, c, c, 0 * c, seed=1, offset=2)
    np.testing.assert_array_equal(diffusion.normal((2, 1), 1), reference.normal((2, 1), 1))
    assert [diffusion.calls["reference", name] for name in names] == [n + 1 for n in before]


def test_dispatcher_refuses_an_unknown_backend(monkeypatch):
    monkeypatch.setenv("TINYGEN_KERNELS", "fortran")
    with pytest.raises(BackendUnavailableError, match="fortran"):
        diffusion.q_sample(np.ones((1, 1)), np.ones((1, 1)), 1.0, 0.0)


def test_numba_asked_for_but_missing_raises_with_no_fallback(monkeypatch):
    monkeypatch.setattr(cpu_runtime, "load_numba", lambda: None)  # as if `import numba` failed
    monkeypatch.setattr(dispatch, "_chosen", {})
    monkeypatch.setenv("TINYGEN_KERNELS", "numba")
    with pytest.raises(BackendUnavailableError, match="numba"):
        diffusion.q_sample_noise(np.ones((1, 1)), 1.0, 0.0, seed=0)


def test_reference_docstring_examples_run():
    assert doctest.testmod(reference).failed == 0
