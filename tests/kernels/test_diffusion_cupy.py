"""The CUDA noise-step kernels (kernels/diffusion/gpu_cupy.py + diffusion.cu) against the NumPy reference.

Every test takes the `gpu` fixture (tests/conftest.py): CuPy on a GPU; where there is none, the
stand-in of tests/fake_cupy.py, which runs the same CUDA C compiled for the CPU as a small
emulated grid (so the Philox stream, the per-sample coefficients, the float4 and scalar paths
and the grid-stride coverage are checked on any machine with a C++ compiler, and two threads
storing different values to one element fail the launch; fake_cupy.py says what the emulation
cannot catch). The oracles:
- the reference, function by function, on hypothesis-drawn shapes (1-D to 4-D, sides of 1 and
  odd sides that divide no block size, and long flat runs), float32 and float64, per-sample and
  scalar coefficients, seeds and offsets (every lane of a Philox counter);
- for the generator, the reference's numbers (each within a few float32 ulps: the same
  Philox4x32-10 integers, Box-Muller in float32) and the normal law itself;
- the model: a DDPM training step and both samplers on the GPU against the same on the CPU with
  the NumPy kernels, with one seed: the same noise, so the same numbers to float32 rounding.

Poisoned outputs: every buffer gpu_cupy allocates comes from its `_empty`, which the module
fixture replaces with a NaN-filling allocator, and the tests also pass NaN-filled `out=` arrays.
"""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings

import tinygen
from helpers import assert_kernel_output, assert_standard_normal, host, poisoned_allocator
from strategies import noise_step_problems as step_problems, noise_step_terms
from tinygen import backend, models
from tinygen.errors import DeviceMismatchError
from tinygen.kernels import diffusion
from tinygen.kernels.diffusion import gpu_cupy, reference

pytestmark = pytest.mark.gpu

DTYPES = (np.float32, np.float64)
# |kernel - reference| <= Z_TOL * max(1, |z|) for every normal: the reference is the exact value
# rounded to float32; the kernel's float32 logf, sqrtf and sincospif (1 ulp each) and two
# products stay within a few units of 2^-24 of it.
Z_TOL = 5e-7
# Without noise the kernels follow the reference's operations in its order, without fused
# multiply-adds (--fmad=false): the results agree to the last bits; with noise, z itself agrees
# to a few float32 ulps.
STEP_TOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-13}
NOISE_TOL = 2e-6


@pytest.fixture(autouse=True, scope="module")
def poisoned_outputs(gpu):
    """gpu_cupy's allocator replaced by one that fills every new buffer with NaN (counted)."""
    with poisoned_allocator(gpu_cupy, gpu.empty) as allocated:
        yield allocated


def assert_matches(out, expected, tol, what="output", terms=None):
    """A GPU array against a NumPy one: `assert_kernel_output` on its copy on the host."""
    assert_kernel_output(host(out), expected, tol, what, terms)


def assert_normals_match(z, expected, what="normals"):
    """Every kernel normal (a GPU array) within Z_TOL * max(1, |z|) of the reference's."""
    z = host(z)
    assert z.shape == expected.shape and z.dtype == expected.dtype, what
    assert np.isfinite(z).all(), f"{what}: an element was never written (NaN poison left)"
    d = np.abs(z.astype(np.float64) - expected) / np.maximum(1, np.abs(expected))
    assert d.size == 0 or d.max() <= Z_TOL, f"{what}: {d.max() / 2**-24:.1f} units of 2^-24 from the reference"


def poisoned(gpu, shape, dtype):
    out = gpu.empty(shape, dtype)
    out.fill(np.nan)
    return out


# --- every kernel against the reference ------------------------------------------------------------


@settings(max_examples=30)
@given(problem=step_problems())
def test_steps_with_z_given_match_reference(gpu, problem):
    dtype, x, eps, z, ddim, ddpm, _, _ = problem
    a, b = ddim[0], ddim[1]
    tol = STEP_TOL[np.dtype(dtype)]
    xg, eg, zg = gpu.asarray(x), gpu.asarray(eps), gpu.asarray(z)
    expected = reference.q_sample(x, eps, a, b)
    assert_matches(gpu_cupy.q_sample(xg, eg, a, b), expected, tol, "q_sample")
    assert_matches(gpu_cupy.q_sample(xg, eg, a, b, out=poisoned(gpu, x.shape, dtype)), expected, tol, "q_sample, out=")
    for noise, noise_g in ((z, zg), (None, None)):
        sigma = ddpm[2] if noise is not None else 0.0
        expected = reference.p_sample_step(x, eps, *ddpm[:2], sigma, noise)
        assert_matches(gpu_cupy.p_sample_step(xg, eg, *ddpm[:2], sigma, noise_g), expected, tol, "p_sample_step")
        assert_matches(gpu_cupy.p_sample_step(xg, eg, *ddpm[:2], sigma, noise_g, out=poisoned(gpu, x.shape, dtype)),
                       expected, tol, "p_sample_step, out=")
        sigma = ddim[3] if noise is not None else 0.0
        expected = reference.ddim_step(x, eps, *ddim[:3], sigma, noise)
        assert_matches(gpu_cupy.ddim_step(xg, eg, *ddim[:3], sigma, noise_g), expected, tol, "ddim_step")


CANCELLING = (  # a one-pixel q_sample whose terms cancel to -4.9e-4 (drawn once by hypothesis)
    np.float32, np.array([[0.29314715]], np.float32), np.array([[0.766837]], np.float32),
    np.array([[-0.40023282]], np.float32),
    (np.array([0.77538166]), np.array([0.63149289]), np.array([0.81239846]), np.array([0.11117836])),
    (np.array([0.39878328]), np.array([1.28968745]), np.array([0.11117836])), 285166, 1,
)


@settings(max_examples=30)
@given(problem=step_problems())
@example(problem=CANCELLING)
def test_steps_with_noise_inside_match_reference(gpu, problem):
    dtype, x, eps, _, ddim, ddpm, seed, offset = problem
    xg, eg = gpu.asarray(x), gpu.asarray(eps)
    z = reference.normal(x.shape, seed, offset, dtype)
    terms = noise_step_terms(x, eps, z, ddim, ddpm)
    assert_normals_match(gpu_cupy.normal(x.shape, seed, offset, dtype), z, "normal")
    assert_normals_match(gpu_cupy.normal(x.shape, seed, offset, dtype, out=poisoned(gpu, x.shape, dtype)), z,
                         "normal, out=")

    x_t, e = gpu_cupy.q_sample_noise(xg, ddim[0], ddim[1], seed, offset)
    assert_normals_match(e, z, "q_sample_noise's eps")
    assert_matches(x_t, reference.q_sample(x, z, ddim[0], ddim[1]), NOISE_TOL, "q_sample_noise", terms["q_sample"])
    pair = poisoned(gpu, x.shape, dtype), poisoned(gpu, x.shape, dtype)
    x_t, e = gpu_cupy.q_sample_noise(xg, ddim[0], ddim[1], seed, offset, out=pair)
    assert x_t is pair[0] and e is pair[1]
    assert_normals_match(e, z, "q_sample_noise's eps, out=")
    assert_matches(x_t, reference.q_sample(x, z, ddim[0], ddim[1]), NOISE_TOL, "q_sample_noise, out=",
                   terms["q_sample"])

    expected = reference.p_sample_step(x, eps, *ddpm, z)
    assert_matches(gpu_cupy.p_sample_step_noise(xg, eg, *ddpm, seed, offset), expected, NOISE_TOL,
                   "p_sample_step_noise", terms["p_sample_step"])
    expected = reference.ddim_step(x, eps, *ddim, z)
    assert_matches(gpu_cupy.ddim_step_noise(xg, eg, *ddim, seed, offset, out=poisoned(gpu, x.shape, dtype)), expected,
                   NOISE_TOL, "ddim_step_noise, out=", terms["ddim_step"])


@pytest.mark.parametrize("per_sample", [784, 785, 3])
@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4 * 1000 + 1])
def test_float4_and_scalar_paths_agree_with_reference(gpu, per_sample, misaligned, offset):
    """The float4 path (float32, aligned, lane 0, samples of 4k elements) and the scalar path
    (anything else: an odd sample size, a misaligned view, an offset not on a counter)."""
    rng = np.random.default_rng(per_sample + offset)
    B = 5
    x, eps = (rng.standard_normal((B, per_sample)).astype(np.float32) for _ in range(2))
    c = rng.uniform(0.1, 1.0, (3, B))

    def on_gpu(a):
        if not misaligned:
            return gpu.asarray(a)
        flat = gpu.empty(a.size + 1, a.dtype)
        flat[1:] = gpu.asarray(a.ravel())
        return flat[1:].reshape(a.shape)  # contiguous, 4 bytes past a 16-byte boundary

    z = reference.normal(x.shape, 11, offset)
    expected = reference.p_sample_step(x, eps, *c, z)
    assert_matches(gpu_cupy.p_sample_step_noise(on_gpu(x), on_gpu(eps), *c, 11, offset), expected, NOISE_TOL)
    x_t, e = gpu_cupy.q_sample_noise(on_gpu(x), c[0], c[1], 11, offset)
    assert_normals_match(e, z)
    assert_matches(gpu_cupy.q_sample(on_gpu(x), on_gpu(z), c[0], c[1]), reference.q_sample(x, z, c[0], c[1]),
                   STEP_TOL[np.dtype(np.float32)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_steps(gpu, dtype):
    rng = np.random.default_rng(1)
    x, eps = (rng.standard_normal((4, 3, 33)).astype(dtype) for _ in range(2))
    c = rng.uniform(0.1, 1, (3, 4))
    expected = reference.p_sample_step_noise(x, eps, *c, 9, 3)
    xg, eg = gpu.asarray(x), gpu.asarray(eps)
    assert gpu_cupy.p_sample_step_noise(xg, eg, *c, 9, 3, out=xg) is xg
    assert_matches(xg, expected, NOISE_TOL)
    expected = reference.q_sample_noise(eps, c[0], c[1], 9)
    x_t, e = gpu_cupy.q_sample_noise(eg, c[0], c[1], 9, out=(eg, gpu.empty_like(eg)))  # x_t over its input
    assert_matches(x_t, expected[0], NOISE_TOL)
    assert_normals_match(e, expected[1])


def test_coefficients_on_the_gpu(gpu):
    rng = np.random.default_rng(2)
    x, eps = (rng.standard_normal((3, 10)).astype(np.float32) for _ in range(2))
    c = rng.uniform(0.1, 1, (3, 3))
    expected = reference.p_sample_step_noise(x, eps, *c, 5, 0)
    out = gpu_cupy.p_sample_step_noise(gpu.asarray(x), gpu.asarray(eps), *(gpu.asarray(v) for v in c), 5, 0)
    assert_matches(out, expected, NOISE_TOL)


def test_empty_and_single_element_arrays(gpu):
    for shape in [(0,), (3, 0), (1,), (1, 1, 1, 1)]:
        x = gpu.ones(shape, np.float32)
        c = np.full(shape[0], 0.5)
        assert gpu_cupy.q_sample(x, x, c, c).shape == shape
        x_t, e = gpu_cupy.q_sample_noise(x, c, c, 4, 1)
        assert x_t.shape == e.shape == shape
        assert_normals_match(e, reference.normal(shape, 4, 1))
        assert gpu_cupy.normal(shape, 4).shape == shape


def test_poisoned_allocator_is_what_the_kernels_use(gpu, poisoned_outputs):
    before = len(poisoned_outputs)
    x = gpu.ones((2, 7), np.float32)
    gpu_cupy.q_sample_noise(x, 1.0, 1.0, 0)
    gpu_cupy.ddim_step(x, x, 1.0, 0.5, 1.0, 0.0)
    assert poisoned_outputs[before:] == [(2, 7)] * 3


# --- the generator ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, offset", [(0, 0), (2**64 - 1, 1), (987654321, 2**40 + 3)])
def test_normal_matches_reference_and_is_standard_normal(gpu, seed, offset):
    z = gpu_cupy.normal(10**6, seed, offset)
    assert_normals_match(z, reference.normal(10**6, seed, offset))
    z = host(z)
    assert_standard_normal(z, f"seed {seed}, offset {offset}")
    for lag in (1, 2, 3, 4):  # the two normals of a Box-Muller pair, the lanes of a counter
        r = np.corrcoef(z[:-lag], z[lag:])[0, 1]
        assert abs(r) < 5 / math.sqrt(z.size), f"lag {lag}: correlation {r:.3g}"


def test_consecutive_draws_continue_one_stream(gpu):
    whole = host(gpu_cupy.normal(1001, 3, 5))
    parts = [host(gpu_cupy.normal(n, 3, 5 + start)) for start, n in ((0, 7), (7, 994))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


# --- dispatch and the model ------------------------------------------------------------------------


def test_dispatcher_runs_the_cuda_kernels_on_gpu_arrays_and_makes_normals_on_the_asked_device(gpu, monkeypatch):
    monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    x = gpu.ones((2, 3), np.float32)
    before = diffusion.calls["gpu_cupy", "q_sample_noise"]
    x_t, eps = diffusion.q_sample_noise(x, np.ones(2), np.ones(2), seed=1)
    assert diffusion.calls["gpu_cupy", "q_sample_noise"] == before + 1
    assert backend.is_device_array(x_t) and backend.is_device_array(eps)
    z = diffusion.normal((2, 3), 1, device="cuda")
    assert backend.is_device_array(z)
    np.testing.assert_array_equal(host(z), host(eps))
    assert isinstance(diffusion.normal((2, 3), 1), np.ndarray)  # cpu unless asked
    monkeypatch.setenv("TINYGEN_KERNELS", "numpy")  # the reference, on the GPU's arrays
    before = diffusion.calls["reference", "q_sample_noise"]
    x_t, eps = diffusion.q_sample_noise(x, np.ones(2), np.ones(2), seed=1)
    assert diffusion.calls["reference", "q_sample_noise"] == before + 1 and backend.is_device_array(x_t)


def test_dispatcher_refuses_arrays_on_two_devices(gpu):
    x = gpu.ones((2, 3), np.float32)
    with pytest.raises(DeviceMismatchError, match="eps_pred lives on cpu"):
        diffusion.p_sample_step(x, np.ones((2, 3), np.float32), 1.0, 1.0, 0.0)
    with pytest.raises(DeviceMismatchError, match="out lives on cpu"):
        diffusion.normal((2, 3), 1, out=np.empty((2, 3), np.float32), device="cuda")
    with pytest.raises(DeviceMismatchError, match="out.*lives on cuda"):
        diffusion.q_sample(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), 1.0, 1.0, out=x)


def test_ddpm_on_the_gpu_matches_the_cpu(gpu, monkeypatch):
    """One training step and both samplers, with one seed: the same noise on both devices."""
    results = {}
    for device in ("cpu", "cuda"):
        monkeypatch.setenv("TINYGEN_KERNELS", "numpy" if device == "cpu" else "auto")
        tinygen.manual_seed(0)
        model = models.DDPM(models.DDPM.Config(T=12, channels=(8, 16), groups=4, batch_size=4)).to(device)
        images = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
        losses = model.train_step(tinygen.tensor(images))
        assert model.net.inc.weight.grad.device == device
        ddpm = model.sample(3, sampler="ddpm")
        ddim = model.sample(3, sampler="ddim", steps=4, eta=0.5)
        assert isinstance(ddpm, np.ndarray) and isinstance(ddim, np.ndarray)
        results[device] = (losses, ddpm, ddim)
    (cpu_losses, *cpu_samples), (gpu_losses, *gpu_samples) = results["cpu"], results["cuda"]
    assert gpu_losses["loss"] == pytest.approx(cpu_losses["loss"], rel=1e-5)
    for ours, theirs in zip(gpu_samples, cpu_samples):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
