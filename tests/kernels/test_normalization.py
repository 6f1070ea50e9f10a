"""The fused GroupNorm, BatchNorm (training), ReLU, LeakyReLU and SiLU kernels (kernels/normalization/) and their dispatch.

The oracles:
- the NumPy reference against central finite differences (its backward functions are the
  gradients of its forward functions), in float64 on hypothesis-drawn shapes: any number of
  spatial dims (none included), sides of 1, odd sizes, 1 to 3 groups of 1 to 3 channels;
- the Numba kernels against the reference on the same draws, float32 and float64, outputs
  poisoned (NaN-filled) before each call, so an element a kernel never writes fails;
- group statistics far from zero (|mean| >> std), where a one-pass variance would cancel;
- the dispatcher: which module ran under each TINYGEN_KERNELS.
tests/test_functional.py checks F.group_norm, F.batch_norm, F.leaky_relu and F.silu (these ops) against torch and by
finite differences through autograd, under the default kernels.
"""

import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from helpers import assert_kernel_output, poisoned_allocator
from strategies import make_array, shapes
from tinygen.kernels import cpu_runtime
from tinygen.errors import BackendUnavailableError, DTypeError
from tinygen.kernels import normalization
from tinygen.kernels.normalization import reference

DTYPES = (np.float32, np.float64)


def group_norm_problem(data, dtype=np.float64):
    """(x, weight, bias, groups, eps) with x (N, C, *spatial), C = groups * per_group."""
    groups, per_group = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    shape = (data.draw(st.integers(1, 3)), groups * per_group) + data.draw(shapes(0, 3, max_side=5))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    offset = data.draw(st.sampled_from([0.0, 3.0]))  # 3: group means away from zero
    x = (make_array(rng, shape) + offset).astype(dtype)
    weight, bias = (make_array(rng, shape[1:2]).astype(dtype) for _ in range(2))
    return x, weight, bias, groups, data.draw(st.sampled_from([1e-5, 0.1]))


def batch_norm_problem(data, dtype=np.float64):
    """(x, weight, bias, None, eps) with x (N, C, *spatial), at least two values per channel."""
    shape = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))) + data.draw(shapes(0, 3, max_side=5))
    if shape[0] * int(np.prod(shape[2:])) < 2:
        shape = (2,) + shape[1:]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = (make_array(rng, shape) + data.draw(st.sampled_from([0.0, 3.0]))).astype(dtype)
    weight, bias = (make_array(rng, shape[1:2]).astype(dtype) for _ in range(2))
    return x, weight, bias, None, data.draw(st.sampled_from([1e-5, 0.1]))


def elementwise_problem(data, kernels, dtype):
    """(x, grad_out, rng) for the elementwise kernels: 0-d to 4-d, or flat runs of up to three of
    the parallel loop's blocks and a partial last one."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shape = data.draw(st.one_of(shapes(0, 4), st.integers(1, 3 * kernels.BLOCK + 7).map(lambda n: (n,))))
    return make_array(rng, shape).astype(dtype), rng.standard_normal(shape).astype(dtype), rng


def directional_derivative(f, args, i, v, eps=1e-6):
    """d/dt sum(f(args with args[i] + t v) * r) at t = 0 by central differences, r = f's cotangent."""
    plus, minus = list(args), list(args)
    plus[i], minus[i] = args[i] + eps * v, args[i] - eps * v
    return (f(*plus) - f(*minus)) / (2 * eps)


# --- the reference's backward is the gradient of its forward --------------------------------------


@settings(max_examples=60)
@given(data=st.data())
def test_reference_group_norm_backward_is_the_gradient(data):
    x, weight, bias, groups, eps = group_norm_problem(data)
    rng = np.random.default_rng(0)
    r = rng.standard_normal(x.shape)
    y, mean, rstd = reference.group_norm_forward(x, weight, bias, groups, eps)
    grads = reference.group_norm_backward(r, x, weight, mean, rstd, groups)

    def loss(x_, w_, b_):
        return float((reference.group_norm_forward(x_, w_, b_, groups, eps)[0] * r).sum())

    for i, arg in enumerate((x, weight, bias)):
        v = rng.standard_normal(arg.shape)
        expected = directional_derivative(loss, (x, weight, bias), i, v)
        assert abs(float((grads[i] * v).sum()) - expected) <= 1e-5 * max(1.0, abs(expected))


@settings(max_examples=60)
@given(data=st.data())
def test_reference_batch_norm_backward_is_the_gradient(data):
    x, weight, bias, _, eps = batch_norm_problem(data)
    rng = np.random.default_rng(0)
    r = rng.standard_normal(x.shape)
    _, mean, var = reference.batch_norm_forward(x, weight, bias, eps)
    grads = reference.batch_norm_backward(r, x, weight, mean, var, eps)

    def loss(x_, w_, b_):
        return float((reference.batch_norm_forward(x_, w_, b_, eps)[0] * r).sum())

    for i, arg in enumerate((x, weight, bias)):
        v = rng.standard_normal(arg.shape)
        expected = directional_derivative(loss, (x, weight, bias), i, v)
        assert abs(float((grads[i] * v).sum()) - expected) <= 1e-5 * max(1.0, abs(expected))


def test_reference_batch_norm_statistics():
    x = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    _, mean, var = reference.batch_norm_forward(x, np.ones(3), np.zeros(3), 0.0)
    np.testing.assert_allclose(mean, x.transpose(1, 0, 2).reshape(3, -1).mean(axis=1))
    np.testing.assert_allclose(var, x.transpose(1, 0, 2).reshape(3, -1).var(axis=1))  # biased


@settings(max_examples=40)
@given(data=st.data())
def test_reference_silu_backward_is_the_gradient(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = make_array(rng, data.draw(shapes(0, 4))) * data.draw(st.sampled_from([1.0, 10.0]))
    r, v = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    expected = directional_derivative(lambda x_: float((reference.silu_forward(x_) * r).sum()), (x,), 0, v)
    got = float((reference.silu_backward(r, x) * v).sum())
    assert abs(got - expected) <= 1e-6 * max(1.0, abs(expected))


def test_reference_group_norm_statistics():
    x = np.arange(2 * 4 * 3, dtype=np.float64).reshape(2, 4, 3)
    y, mean, rstd = reference.group_norm_forward(x, np.ones(4), np.zeros(4), 2, 0.0)
    np.testing.assert_allclose(mean, [[2.5, 8.5], [14.5, 20.5]])
    np.testing.assert_allclose(rstd, 1 / np.full((2, 2), np.arange(6.0).std()))
    np.testing.assert_allclose(y.reshape(2, 2, 6).mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(y.reshape(2, 2, 6).std(axis=2), 1)


# --- the Numba kernels against the reference -------------------------------------------------------

# skipped only where Numba is absent: an installed Numba that fails to import fails these tests
numba_only = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="Numba is not installed")


@pytest.fixture(scope="module")
def cpu_numba():
    pytest.importorskip("numba")
    from tinygen.kernels.normalization import cpu_numba

    with poisoned_allocator(cpu_numba) as allocated:
        yield cpu_numba, allocated


@numba_only
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_numba_group_norm_matches_reference(cpu_numba, dtype, data):
    kernels, _ = cpu_numba
    x, weight, bias, groups, eps = group_norm_problem(data, dtype)
    expected = reference.group_norm_forward(x.astype(np.float64), weight.astype(np.float64),
                                            bias.astype(np.float64), groups, eps)
    got = kernels.group_norm_forward(x, weight, bias, groups, eps)
    for out, ref, what in zip(got, expected, ("y", "mean", "rstd")):
        assert_kernel_output(out, ref.astype(dtype), what=what)
    g = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    expected = reference.group_norm_backward(g.astype(np.float64), x.astype(np.float64), weight.astype(np.float64),
                                             *(a.astype(np.float64) for a in expected[1:]), groups)
    got = kernels.group_norm_backward(g, x, weight, *got[1:], groups)
    for out, ref, terms, what in zip(got, expected, grad_terms(g, x, weight, groups, eps), ("grad_x", "grad_weight", "grad_bias")):
        assert_kernel_output(out, ref.astype(dtype), what=what, terms=terms)


def grad_terms(g, x, weight, groups, eps):
    """The magnitudes of the terms each gradient element sums (float64): grad_x's three terms
    cancel exactly in a group of two values (it is then ~eps), leaving no relative accuracy."""
    g, x, weight = (a.astype(np.float64) for a in (g, x, weight))
    n, c = x.shape[:2]
    _, mean, rstd = reference.group_norm_forward(x, weight, 0 * weight, groups, eps)
    xhat = (x.reshape(n, groups, -1) - mean[..., None]) * rstd[..., None]
    dy = g.reshape(n, c, -1)
    dxhat = np.abs(dy * weight[:, None]).reshape(n, groups, -1)
    gx = rstd[..., None] * (dxhat + dxhat.mean(axis=2, keepdims=True) + np.abs(xhat) * (dxhat * np.abs(xhat)).mean(axis=2, keepdims=True))
    return gx.reshape(x.shape), np.abs(dy * xhat.reshape(n, c, -1)).sum(axis=(0, 2)), np.abs(dy).sum(axis=(0, 2))


@numba_only
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_numba_batch_norm_matches_reference(cpu_numba, dtype, data):
    kernels, _ = cpu_numba
    x, weight, bias, _, eps = batch_norm_problem(data, dtype)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, weight, bias))
    expected = reference.batch_norm_forward(x64, w64, b64, eps)
    got = kernels.batch_norm_forward(x, weight, bias, eps)
    for out, ref, what in zip(got, expected, ("y", "mean", "var")):
        assert_kernel_output(out, ref.astype(dtype), what=what)
    g = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    expected = reference.batch_norm_backward(g.astype(np.float64), x64, w64, *expected[1:], eps)
    got = kernels.batch_norm_backward(g, x, weight, *got[1:], eps)
    # the terms of grad_x as for group norm, with the channel over all samples as the group
    n, c = x.shape[:2]
    as_groups = [a.reshape(n, c, -1).transpose(1, 0, 2).reshape(1, c, -1) for a in (g, x)]
    terms = grad_terms(*as_groups[:1], as_groups[1], weight, c, eps)
    terms = (terms[0].reshape(c, n, -1).transpose(1, 0, 2).reshape(x.shape),) + terms[1:]
    for out, ref, term, what in zip(got, expected, terms, ("grad_x", "grad_weight", "grad_bias")):
        assert_kernel_output(out, ref.astype(dtype), what=what, terms=term)


@numba_only
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_numba_silu_matches_reference(cpu_numba, dtype, data):
    kernels, _ = cpu_numba
    x, g, rng = elementwise_problem(data, kernels, dtype)
    x *= data.draw(st.sampled_from([1.0, 10.0]))
    assert_kernel_output(kernels.silu_forward(x), reference.silu_forward(x.astype(np.float64)).astype(dtype))
    assert_kernel_output(kernels.silu_backward(g, x),
                         reference.silu_backward(g.astype(np.float64), x.astype(np.float64)).astype(dtype))


@numba_only
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_numba_leaky_relu_matches_reference(cpu_numba, dtype, data):
    kernels, _ = cpu_numba
    x, g, rng = elementwise_problem(data, kernels, dtype)
    x[rng.random(x.shape) < 0.1] = 0  # the kink, where the derivative is 0 by convention
    slope = data.draw(st.sampled_from([0.01, 0.2, 1.5]))
    assert_kernel_output(kernels.leaky_relu_forward(x, slope), reference.leaky_relu_forward(x, slope))
    got = kernels.leaky_relu_backward(g, x, slope)
    assert_kernel_output(got, reference.leaky_relu_backward(g, x, slope))
    assert not got[x == 0].any()


@numba_only
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_numba_relu_matches_reference(cpu_numba, dtype, data):
    kernels, _ = cpu_numba
    x, g, rng = elementwise_problem(data, kernels, dtype)
    x[rng.random(x.shape) < 0.1] = 0
    y = kernels.relu_forward(x)
    assert_kernel_output(y, reference.relu_forward(x))
    assert_kernel_output(kernels.relu_backward(g, y), reference.relu_backward(g, y))


@numba_only
def test_numba_relu_keeps_nan_and_clears_negative_infinity(cpu_numba):
    kernels, _ = cpu_numba
    x = np.array([np.nan, -np.inf, -1.0, 0.0, 2.0, np.inf], np.float32)
    y = kernels.relu_forward(x)
    np.testing.assert_array_equal(y, reference.relu_forward(x))  # NaN where NaN; [nan, 0, 0, 0, 2, inf]
    g = np.array([1.0, 1.0, np.nan, 1.0, 1.0, 1.0], np.float32)
    np.testing.assert_array_equal(kernels.relu_backward(g, y), reference.relu_backward(g, y))


def test_reference_leaky_relu_derivative():
    x = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(reference.leaky_relu_forward(x, 0.2), [-0.4, 0.0, 3.0])
    np.testing.assert_array_equal(reference.leaky_relu_backward(np.ones(3), x, 0.2), [0.2, 0.0, 1.0])


@numba_only
def test_float32_exp_is_within_two_ulps(cpu_numba):
    kernels, _ = cpu_numba
    rng = np.random.default_rng(3)
    a = np.concatenate([np.linspace(0, 110, 20_001), rng.exponential(3, 20_000), [0.0, 87.3, 103.9, 104.0, 1e30, np.inf]])
    a = a.astype(np.float32)
    got = np.array([kernels._exp_neg32(v) for v in a], dtype=np.float32)
    exact = np.exp(-a.astype(np.float64))
    normal = exact >= np.finfo(np.float32).tiny
    ulps = np.abs(got[normal] - exact[normal]) / (exact[normal] * 2.0**-23)
    assert ulps.max() < 2, f"{ulps.max():.2f} ulps at a = {a[normal][ulps.argmax()]}"
    assert np.abs(got[~normal] - exact[~normal]).max() <= 2.0**-149  # denormals and 0, within one unit
    assert got[-1] == got[-2] == 0.0


@numba_only
def test_numba_group_norm_keeps_its_accuracy_far_from_zero(cpu_numba):
    kernels, _ = cpu_numba
    x = (1e4 + np.random.default_rng(2).standard_normal((2, 4, 8, 8))).astype(np.float32)
    y, mean, rstd = kernels.group_norm_forward(x, np.ones(4, np.float32), np.zeros(4, np.float32), 2, 1e-5)
    exact = reference.group_norm_forward(x.astype(np.float64), np.ones(4), np.zeros(4), 2, 1e-5)
    np.testing.assert_allclose(y, exact[0], atol=2e-3)  # float32 x holds 1e4 + z to ~5e-4: z to 1e-3
    np.testing.assert_allclose(rstd, exact[2], rtol=1e-5)


@numba_only
def test_numba_norms_subtract_the_mean_before_scaling(cpu_numba):
    # One value per group: x - mean is exactly 0 and y exactly the bias. Folding the mean into
    # the shift, x*scale + (bias - mean*scale), left 1e-12 relative errors in float64 (CI drew it).
    kernels, _ = cpu_numba
    x = np.array([[3.1], [-2.7]])
    w, b = np.array([0.8]), np.array([0.3])
    np.testing.assert_array_equal(kernels.group_norm_forward(x, w, b, 1, 1e-5)[0], [[0.3], [0.3]])
    x = np.full((2, 1, 3), 1e6) + np.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(kernels.batch_norm_forward(x, w, b, 1e-5)[0],
                               reference.batch_norm_forward(x, w, b, 1e-5)[0], rtol=1e-12, atol=1e-12)


@numba_only
def test_numba_kernels_write_only_through_the_poisoned_allocator(cpu_numba):
    kernels, allocated = cpu_numba
    y, mean, rstd = kernels.group_norm_forward(np.ones((2, 4, 3)), np.ones(4), np.zeros(4), 2, 1e-5)
    assert {(2, 4, 3), (2, 2)} <= set(allocated)
    assert np.isnan(kernels._empty((2,), np.float32)).all()


# --- dispatch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("knob", ["numpy", "numba"])
def test_the_requested_kernels_run(monkeypatch, knob):
    if knob == "numba" and cpu_runtime.load_numba() is None:
        monkeypatch.setenv("TINYGEN_KERNELS", knob)
        with pytest.raises(BackendUnavailableError, match="Numba"):
            normalization.silu_forward(np.ones(3))
        return
    monkeypatch.setenv("TINYGEN_KERNELS", knob)
    module = "reference" if knob == "numpy" else "cpu_numba"
    before = dict(normalization.calls)
    normalization.silu_forward(np.ones(3))
    normalization.group_norm_forward(np.ones((1, 2, 3)), np.ones(2), np.zeros(2), 1, 1e-5)
    assert normalization.calls[module, "silu_forward"] == before.get((module, "silu_forward"), 0) + 1
    assert normalization.calls[module, "group_norm_forward"] == before.get((module, "group_norm_forward"), 0) + 1


@numba_only
def test_the_fused_ops_reach_the_numba_kernels_by_default(monkeypatch):
    """Through autograd (functional -> ops -> dispatcher), not the dispatcher alone: no silent fallback."""
    from tinygen import nn
    from tinygen.tensor import Tensor

    monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    x = Tensor(np.linspace(-1, 1, 2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3), requires_grad=True)
    before = dict(normalization.calls)
    F = nn.functional
    y = F.silu(x) + F.leaky_relu(x, 0.1) + x.relu() + F.group_norm(x, 2) + F.batch_norm(x, None, None, training=True)
    y.sum().backward()
    for name in ("silu", "leaky_relu", "relu", "group_norm", "batch_norm"):
        for part in ("forward", "backward"):
            key = ("cpu_numba", f"{name}_{part}")
            assert normalization.calls[key] == before.get(key, 0) + 1, key


def test_cupy_kernels_are_refused_for_numpy_arrays(monkeypatch):
    monkeypatch.setenv("TINYGEN_KERNELS", "cupy")
    with pytest.raises(BackendUnavailableError, match="CuPy arrays"):
        normalization.silu_forward(np.ones(3))


def test_numba_refuses_float16_naming_it(monkeypatch):
    """A float16 tensor's relu reaches the kernels (Relu sends every float dtype there): Numba has no
    float16 and failed deep in its compiler (NotImplementedError: float16); now a DTypeError names it."""
    pytest.importorskip("numba")
    from tinygen.tensor import Tensor

    monkeypatch.setenv("TINYGEN_KERNELS", "numba")
    x = np.array([-1.0, 0.5, 2.0], np.float16)
    with pytest.raises(DTypeError, match="relu_forward: the Numba kernels .* got dtype float16"):
        Tensor(x).relu()
    with pytest.raises(DTypeError, match="silu_backward.*float16"):
        normalization.silu_backward(x, x)
    monkeypatch.setenv("TINYGEN_KERNELS", "numpy")  # the reference, as the message says, runs it
    np.testing.assert_array_equal(Tensor(x).relu().numpy(), np.maximum(x, 0))
