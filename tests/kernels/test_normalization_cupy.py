"""The CUDA GroupNorm and activation kernels (kernels/normalization/gpu_cupy.py + normalization.cu)
against the NumPy reference.

The `gpu` fixture (tests/conftest.py) gives CuPy on a GPU, else the stand-in of tests/fake_cupy.py,
which runs the same CUDA C compiled for the CPU as a small emulated grid: the grid-stride loops,
the row parts and the atomic sums are then checked on any machine with a C++ compiler. Each
emulated thread works on its own copy of the arrays, so the sums would come out short, or the
launch fail with DataRaceError, with a plain `+=` in place of atomicAdd (test_cuda_emulation.py
makes that mutation and needs it refused); fake_cupy.py says what the emulation cannot catch. The
draws are those of tests/kernels/test_normalization.py (shapes with any number of spatial dims,
sides of 1, odd sizes, group means away from zero), float32 and float64; every buffer gpu_cupy
allocates is poisoned with NaN first, so an element a kernel never writes fails.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from helpers import assert_kernel_output, host, poisoned_allocator
from strategies import make_array, shapes
from test_normalization import DTYPES, grad_terms, group_norm_problem
from tinygen.kernels import normalization
from tinygen.kernels.normalization import gpu_cupy, reference

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True, scope="module")
def poisoned_outputs(gpu):
    with poisoned_allocator(gpu_cupy, gpu.empty) as allocated:
        yield allocated


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_group_norm_matches_reference(gpu, dtype, data):
    x, weight, bias, groups, eps = group_norm_problem(data, dtype)
    wide = [a.astype(np.float64) for a in (x, weight, bias)]
    expected = reference.group_norm_forward(*wide, groups, eps)
    got = gpu_cupy.group_norm_forward(gpu.asarray(x), gpu.asarray(weight), gpu.asarray(bias), groups, eps)
    for out, ref, what in zip(got, expected, ("y", "mean", "rstd")):
        assert_kernel_output(host(out), ref.astype(dtype), what=what)
    g = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    expected = reference.group_norm_backward(g.astype(np.float64), wide[0], wide[1],
                                             *(host(a).astype(np.float64) for a in got[1:]), groups)
    got = gpu_cupy.group_norm_backward(gpu.asarray(g), gpu.asarray(x), gpu.asarray(weight), *got[1:], groups)
    for out, ref, terms, what in zip(got, expected, grad_terms(g, x, weight, groups, eps),
                                     ("grad_x", "grad_weight", "grad_bias")):
        assert_kernel_output(host(out), ref.astype(dtype), what=what, terms=terms)


@pytest.mark.parametrize("name", ["silu", "relu", "leaky_relu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_activations_match_reference(gpu, name, dtype, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = data.draw(st.one_of(shapes(0, 4), st.integers(1, 3 * gpu_cupy.BLOCK + 7).map(lambda n: (n,))))
    x, g = make_array(rng, shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    slope = (0.2,) if name == "leaky_relu" else ()
    forward, backward = getattr(gpu_cupy, name + "_forward"), getattr(gpu_cupy, name + "_backward")
    y = forward(gpu.asarray(x), *slope)
    want = getattr(reference, name + "_forward")(x, *slope)
    assert_kernel_output(host(y), want, what="y")
    saved = want if name == "relu" else x  # ReLU's backward takes the output
    dx = backward(gpu.asarray(g), gpu.asarray(saved), *slope)
    assert_kernel_output(host(dx), getattr(reference, name + "_backward")(g, saved, *slope), what="grad_x")


def test_activations_keep_nan_and_infinities(gpu):
    x = np.array([np.nan, -np.inf, np.inf, -1.0, 0.0, 2.0], np.float32)
    np.testing.assert_array_equal(host(gpu_cupy.relu_forward(gpu.asarray(x))), reference.relu_forward(x))
    with np.errstate(invalid="ignore", over="ignore"):  # exp: within an ulp of the reference's, not equal
        np.testing.assert_allclose(host(gpu_cupy.silu_forward(gpu.asarray(x))), reference.silu_forward(x), rtol=1e-6)
        np.testing.assert_array_equal(host(gpu_cupy.leaky_relu_forward(gpu.asarray(x), 0.2)),
                                      reference.leaky_relu_forward(x, 0.2))


def test_group_norm_keeps_its_accuracy_far_from_zero(gpu):
    x = (1e4 + np.random.default_rng(2).standard_normal((2, 4, 8, 8))).astype(np.float32)
    y, mean, rstd = gpu_cupy.group_norm_forward(gpu.asarray(x), gpu.asarray(np.ones(4, np.float32)),
                                                gpu.asarray(np.zeros(4, np.float32)), 2, 1e-5)
    exact = reference.group_norm_forward(x.astype(np.float64), np.ones(4), np.zeros(4), 2, 1e-5)
    np.testing.assert_allclose(host(y), exact[0], atol=2e-3)  # float32 x holds 1e4 + z to ~5e-4: z to 1e-3
    np.testing.assert_allclose(host(rstd), exact[2], rtol=1e-5)


def test_one_value_groups_give_the_bias_exactly(gpu):
    x = gpu.asarray(np.array([[3.1], [-2.7]]))
    y = gpu_cupy.group_norm_forward(x, gpu.asarray(np.array([0.8])), gpu.asarray(np.array([0.3])), 1, 1e-5)[0]
    np.testing.assert_array_equal(host(y), [[0.3], [0.3]])


def test_gpu_arrays_dispatch_to_the_cuda_kernels(gpu, monkeypatch):
    monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    assert normalization.implementation(gpu) is gpu_cupy
    assert gpu_cupy.batch_norm_forward is reference.batch_norm_forward  # no CUDA kernel: the reference, by name
    monkeypatch.setenv("TINYGEN_KERNELS", "numpy")
    assert normalization.implementation(gpu) is reference
