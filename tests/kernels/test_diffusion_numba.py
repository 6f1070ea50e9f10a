"""The Numba noise-step kernels (kernels/diffusion/cpu_numba.py) against the NumPy reference.

Skipped as a whole where Numba is not installed (the NumPy path is covered by
test_diffusion_reference.py). The oracles:
- the reference, function by function, on hypothesis-drawn shapes (1-D to 4-D, sides of 1 and
  odd sides, and long flat runs that cross the kernels' task and buffer boundaries), float32 and
  float64, per-sample and scalar coefficients, seeds and offsets;
- for the generator, the reference's numbers (each within a few float32 ulps) and the normal law
  itself (`helpers.assert_standard_normal`: moments, tails, Kolmogorov-Smirnov);
- the model: a DDPM training step and a sampler under ``TINYGEN_KERNELS=numba`` against the same
  under ``TINYGEN_KERNELS=numpy``, with one seed.

Poisoned outputs: every buffer cpu_numba allocates comes from its `_empty`, which the autouse
fixture below replaces with an allocator that fills it with NaN, and the tests also pass
NaN-filled `out=` arrays, so an element a kernel forgets to write is NaN and fails.
"""

import contextlib
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import example, given, settings

pytest.importorskip("numba")

from helpers import assert_kernel_output, assert_standard_normal, poisoned_allocator  # noqa: E402
from strategies import noise_step_problems as step_problems, noise_step_terms  # noqa: E402
from tinygen.kernels import diffusion  # noqa: E402
from tinygen.kernels.diffusion import cpu_numba, reference  # noqa: E402

DTYPES = (np.float32, np.float64)
PATHS = ("serial", "parallel")
NOISE_STEPS = ("q_sample_noise", "p_sample_step_noise", "ddim_step_noise")
STEPS = ("q_sample", "p_sample_step", "ddim_step") + NOISE_STEPS + ("normal",)
# |kernel - reference| <= Z_TOL * max(1, |z|) for every normal: the reference is the exact value
# rounded to float32, the kernel's float32 polynomials stay within 4.3 units of 2^-24 of it
# (measured over 3e7 numbers), so twice that.
Z_TOL = 5e-7


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def poisoned_outputs():
    """cpu_numba's allocator replaced by one that fills every new buffer with NaN (counted)."""
    with poisoned_allocator(cpu_numba) as allocated:
        yield allocated


@contextlib.contextmanager
def forced_path(path):
    """Make the calls in the block run on one thread ("serial") or over the pool ("parallel"),
    whatever their size (the kernels pick by size: `PARALLEL_MIN`, `PARALLEL_MIN_NOISE`)."""
    saved = cpu_numba.PARALLEL_MIN, cpu_numba.PARALLEL_MIN_NOISE
    cpu_numba.PARALLEL_MIN = cpu_numba.PARALLEL_MIN_NOISE = 0 if path == "parallel" else 2**63
    try:
        yield
    finally:
        cpu_numba.PARALLEL_MIN, cpu_numba.PARALLEL_MIN_NOISE = saved


@contextlib.contextmanager
def threads(n):
    """Numba's thread count set to n inside the block, put back after."""
    import numba

    saved = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(saved)


assert_matches = assert_kernel_output


def assert_normals_match(z, expected, what="normals"):
    """Every kernel normal within Z_TOL * max(1, |z|) of the reference's."""
    assert z.shape == expected.shape and z.dtype == expected.dtype, what
    assert np.isfinite(z).all(), f"{what}: an element was never written (NaN poison left)"
    d = np.abs(z.astype(np.float64) - expected) / np.maximum(1, np.abs(expected))
    assert d.size == 0 or d.max() <= Z_TOL, f"{what}: {d.max() / 2**-24:.1f} units of 2^-24 from the reference"


def poisoned_like(x):
    return np.full_like(x, np.nan)


# Without noise the kernels follow the reference's operations in its order (fastmath=False): the
# results agree to the last bits; with noise, z itself agrees to a few float32 ulps.
STEP_TOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-13}
NOISE_TOL = 2e-6


# --- every kernel against the reference ------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=40)
@given(step_problems())
def test_steps_with_z_given_match_reference(path, problem):
    with forced_path(path):
        check_steps_with_z_given(*problem[:-2])


def check_steps_with_z_given(dtype, x, eps, z, ddim, ddpm):
    a, b = ddim[0], ddim[1]
    tol = STEP_TOL[np.dtype(dtype)]
    assert_matches(cpu_numba.q_sample(x, eps, a, b), reference.q_sample(x, eps, a, b), tol, "q_sample")
    assert_matches(cpu_numba.q_sample(x, eps, a, b, out=poisoned_like(x)), reference.q_sample(x, eps, a, b), tol,
                   "q_sample, out=")
    for noise in (z, None):
        sigma = ddpm[2] if noise is not None else 0.0
        expected = reference.p_sample_step(x, eps, *ddpm[:2], sigma, noise)
        assert_matches(cpu_numba.p_sample_step(x, eps, *ddpm[:2], sigma, noise), expected, tol, "p_sample_step")
        assert_matches(cpu_numba.p_sample_step(x, eps, *ddpm[:2], sigma, noise, out=poisoned_like(x)), expected, tol,
                       "p_sample_step, out=")
        sigma = ddim[3] if noise is not None else 0.0
        expected = reference.ddim_step(x, eps, *ddim[:3], sigma, noise)
        assert_matches(cpu_numba.ddim_step(x, eps, *ddim[:3], sigma, noise), expected, tol, "ddim_step")
        assert_matches(cpu_numba.ddim_step(x, eps, *ddim[:3], sigma, noise, out=poisoned_like(x)), expected, tol,
                       "ddim_step, out=")


CANCELLING = (  # a one-pixel p_sample_step whose terms cancel to -1.2e-4 (drawn once by CI)
    np.float32, np.array([0.34797692], np.float32), np.array([0.14510751], np.float32),
    np.array([0.30172408], np.float32), (np.array([0.90061039]), np.array([0.43462733]), np.array([1.0]), np.array([0.0])),
    (np.array([0.18890092]), np.array([1.11035805]), np.array([0.24693777])), 32002, 8,
)


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=40)
@given(step_problems())
@example(problem=CANCELLING)
def test_steps_with_noise_inside_match_reference(path, problem):
    with forced_path(path):
        check_steps_with_noise_inside(*problem)


def check_steps_with_noise_inside(dtype, x, eps, _, ddim, ddpm, seed, offset):
    z = reference.normal(x.shape, seed, offset, dtype)
    assert_normals_match(cpu_numba.normal(x.shape, seed, offset, dtype), z, "normal")
    assert_normals_match(cpu_numba.normal(x.shape, seed, offset, dtype, out=poisoned_like(x)), z, "normal, out=")

    terms = noise_step_terms(x, eps, z, ddim, ddpm)
    x_t, e = cpu_numba.q_sample_noise(x, ddim[0], ddim[1], seed, offset)
    assert_normals_match(e, z, "q_sample_noise's eps")
    assert_matches(x_t, reference.q_sample(x, z, ddim[0], ddim[1]), NOISE_TOL, "q_sample_noise", terms["q_sample"])
    pair = poisoned_like(x), poisoned_like(x)
    x_t, e = cpu_numba.q_sample_noise(x, ddim[0], ddim[1], seed, offset, out=pair)
    assert x_t is pair[0] and e is pair[1]
    assert_normals_match(e, z, "q_sample_noise's eps, out=")
    assert_matches(x_t, reference.q_sample(x, z, ddim[0], ddim[1]), NOISE_TOL, "q_sample_noise, out=",
                   terms["q_sample"])

    expected = reference.p_sample_step(x, eps, *ddpm, z)
    assert_matches(cpu_numba.p_sample_step_noise(x, eps, *ddpm, seed, offset), expected, NOISE_TOL,
                   "p_sample_step_noise", terms["p_sample_step"])
    assert_matches(cpu_numba.p_sample_step_noise(x, eps, *ddpm, seed, offset, out=poisoned_like(x)), expected,
                   NOISE_TOL, "p_sample_step_noise, out=", terms["p_sample_step"])
    expected = reference.ddim_step(x, eps, *ddim, z)
    assert_matches(cpu_numba.ddim_step_noise(x, eps, *ddim, seed, offset), expected, NOISE_TOL, "ddim_step_noise",
                   terms["ddim_step"])
    assert_matches(cpu_numba.ddim_step_noise(x, eps, *ddim, seed, offset, out=poisoned_like(x)), expected,
                   NOISE_TOL, "ddim_step_noise, out=", terms["ddim_step"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_steps(dtype):
    rng = np.random.default_rng(1)
    x, eps = (rng.standard_normal((4, 3, 33)).astype(dtype) for _ in range(2))
    c = rng.uniform(0.1, 1, (3, 4))
    expected = reference.p_sample_step_noise(x, eps, *c, 9, 3)
    assert cpu_numba.p_sample_step_noise(x, eps, *c, 9, 3, out=x) is x
    assert_matches(x, expected, NOISE_TOL)
    expected = reference.q_sample_noise(eps, c[0], c[1], 9)
    x_t, e = cpu_numba.q_sample_noise(eps, c[0], c[1], 9, out=(eps, x))  # x_t over its input
    assert_matches(x_t, expected[0], NOISE_TOL)
    assert_normals_match(e, expected[1])


def test_empty_and_single_element_arrays():
    for shape in [(0,), (3, 0), (1,), (1, 1, 1, 1)]:
        x = np.ones(shape, np.float32)
        c = np.full(shape[0], 0.5)
        assert cpu_numba.q_sample(x, x, c, c).shape == shape
        x_t, e = cpu_numba.q_sample_noise(x, c, c, 4, 1)
        assert x_t.shape == e.shape == shape
        assert_normals_match(e, reference.normal(shape, 4, 1))
        assert cpu_numba.normal(shape, 4).shape == shape


def test_poisoned_allocator_is_what_the_kernels_use(poisoned_outputs):
    # The NaN fixture can only catch an unwritten element if the outputs come from it.
    before = len(poisoned_outputs)
    x = np.ones((2, 7), np.float32)
    cpu_numba.q_sample_noise(x, 1.0, 1.0, 0)
    cpu_numba.ddim_step(x, x, 1.0, 0.5, 1.0, 0.0)
    assert poisoned_outputs[before:] == [(2, 7)] * 3
    assert np.isnan(cpu_numba._empty((2,), np.float32)).all()


# --- the generator ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, offset", [(0, 0), (2**64 - 1, 1), (987654321, 2**40 + 3)])
def test_normal_matches_reference_and_is_standard_normal(seed, offset):
    z = cpu_numba.normal(10**6, seed, offset)
    assert_normals_match(z, reference.normal(10**6, seed, offset))
    assert_standard_normal(z, f"seed {seed}, offset {offset}")
    for lag in (1, 2, 3, 4):  # the two normals of a Box-Muller pair, the lanes of a counter
        r = np.corrcoef(z[:-lag], z[lag:])[0, 1]
        assert abs(r) < 5 / math.sqrt(z.size), f"lag {lag}: correlation {r:.3g}"


def test_normal_extremes_match_reference():
    """Both ends of u1 and every quarter turn of u2: through philox, the words hit them all
    within a few million numbers; compare the largest |z| and the smallest r explicitly."""
    z = cpu_numba.normal(4 * 10**6, 5)
    expected = reference.normal(4 * 10**6, 5)
    assert_normals_match(z, expected)
    big = np.argsort(np.abs(expected))[-20:]
    np.testing.assert_allclose(z[big], expected[big], rtol=Z_TOL)


def test_same_seed_same_numbers_whatever_the_thread_count():
    rng = np.random.default_rng(3)
    x, eps = (rng.standard_normal((9, 3, 41, 37)).astype(np.float32) for _ in range(2))
    c = rng.uniform(0.1, 1, (4, 9))
    results = []
    for n in (1, 2):
        with threads(n):
            results.append([cpu_numba.normal(50_001, 11, 3), *cpu_numba.q_sample_noise(x, c[0], c[1], 11, 7),
                            cpu_numba.p_sample_step_noise(x, eps, *c[:3], 11, 7),
                            cpu_numba.ddim_step_noise(x, eps, *c, 11, 7)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_consecutive_draws_continue_one_stream():
    whole = cpu_numba.normal(30_000, 21, 2)
    for cuts in ([0, 30_000], [0, 1, 8191, 8193, 30_000], [0, 1023, 1025, 20_000, 29_999, 30_000]):
        parts = [cpu_numba.normal(b - a, 21, 2 + a) for a, b in zip(cuts, cuts[1:])]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(cpu_numba.normal((100, 300), 21, 2).ravel(), whole)
    np.testing.assert_array_equal(cpu_numba.normal(30_000, 21, 2, np.float64), whole.astype(np.float64))


def test_different_seeds_and_offsets_give_different_numbers():
    base = cpu_numba.normal(4096, 0)
    for other in (cpu_numba.normal(4096, 1), cpu_numba.normal(4096, 2**32), cpu_numba.normal(4096, 0, 1),
                  cpu_numba.normal(4096, 0, 4096)):
        assert np.mean(base == other) < 0.01
        assert abs(np.corrcoef(base, other)[0, 1]) < 5 / math.sqrt(4096)


# --- the dispatcher ----------------------------------------------------------------------------------


def call_every_function():
    """Each dispatcher function once, on a (2, 3) float32 batch."""
    x, c = np.ones((2, 3), np.float32), np.full(2, 0.5)
    return dict(
        q_sample=diffusion.q_sample(x, x, c, c),
        p_sample_step=diffusion.p_sample_step(x, x, c, c, c, x),
        ddim_step=diffusion.ddim_step(x, x, c, c, c, 0 * c),
        q_sample_noise=diffusion.q_sample_noise(x, c, c, 1)[0],
        p_sample_step_noise=diffusion.p_sample_step_noise(x, x, c, c, c, 1, 6),
        ddim_step_noise=diffusion.ddim_step_noise(x, x, c, c, c, 0.1 * c, seed=1, offset=6),
        normal=diffusion.normal((2, 3), 1),
    )


@pytest.mark.parametrize("knob", ["numba", "auto", None])
def test_dispatcher_runs_numba_when_asked_or_by_default(monkeypatch, knob):
    if knob is None:
        monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    else:
        monkeypatch.setenv("TINYGEN_KERNELS", knob)
    assert diffusion.implementation() is cpu_numba
    before = {name: (diffusion.calls["cpu_numba", name], diffusion.calls["reference", name]) for name in STEPS}
    fast = call_every_function()
    after = {name: (diffusion.calls["cpu_numba", name], diffusion.calls["reference", name]) for name in STEPS}
    assert after == {name: (n + 1, m) for name, (n, m) in before.items()}
    monkeypatch.setenv("TINYGEN_KERNELS", "numpy")
    slow = call_every_function()
    for name in STEPS:
        assert_matches(fast[name], slow[name], NOISE_TOL, name)


# --- through the model: the NumPy and the Numba path draw the same noise --------------------------


def test_ddpm_runs_the_same_on_numpy_and_numba_kernels(monkeypatch):
    import tinygen
    from tinygen.models.diffusion import DDPM, Config

    images = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    results = {}
    for knob in ("numpy", "numba"):
        monkeypatch.setenv("TINYGEN_KERNELS", knob)
        before = diffusion.calls["cpu_numba", "q_sample_noise"], diffusion.calls["cpu_numba", "ddim_step_noise"]
        tinygen.manual_seed(0)
        model = DDPM(Config(T=20, channels=(8, 16), groups=4, warmup_steps=1))
        losses = [model.train_step(tinygen.Tensor(images))["loss"] for _ in range(2)]
        sample = model.sample(2, sampler="ddim", steps=4, eta=1.0, use_ema=False)
        after = diffusion.calls["cpu_numba", "q_sample_noise"], diffusion.calls["cpu_numba", "ddim_step_noise"]
        assert (after > before) == (knob == "numba"), f"{knob}: the Numba noise kernels ran {after} {before}"
        results[knob] = losses, sample
    np.testing.assert_allclose(results["numba"][0], results["numpy"][0], rtol=1e-4)
    np.testing.assert_allclose(results["numba"][1], results["numpy"][1], atol=1e-4)


# --- in a fresh process: bounds ------------------------------------------------------------------


def test_no_kernel_reads_or_writes_out_of_bounds():
    """Every kernel on awkward sizes and offsets, compiled with Numba's bounds checks (a fresh cache)."""
    code = """
import numpy as np
from tinygen.kernels.diffusion import cpu_numba as k, reference as r
rng = np.random.default_rng(0)
for smallest_parallel, shape in [(n, shape) for n in (0, 2**63)
                                 for shape in [(1,), (3,), (2, 5), (1, 4097), (3, 2731), (700, 3), (2, 1, 3, 3)]]:
    k.PARALLEL_MIN = k.PARALLEL_MIN_NOISE = smallest_parallel  # both paths
    for dtype in (np.float32, np.float64):
        x, e, z = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
        c = rng.uniform(0.1, 0.9, (4, shape[0]))
        for offset in (0, 1, 2, 3, 4097):
            assert np.allclose(k.normal(shape, 1, offset, dtype), r.normal(shape, 1, offset, dtype), atol=1e-5)
            k.q_sample_noise(x, c[0], c[1], 1, offset)
            k.p_sample_step_noise(x, e, *c[:3], 1, offset)
            k.ddim_step_noise(x, e, *c, 1, offset)
        k.q_sample(x, e, c[0], c[1])
        k.p_sample_step(x, e, *c[:3], z)
        k.p_sample_step(x, e, *c[:2], 0.0)
        k.ddim_step(x, e, *c, z)
        k.ddim_step(x, e, *c[:3], 0.0)
print("ok")
"""
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    with tempfile.TemporaryDirectory() as cache:
        environ.update(NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=cache)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
