"""The NumPy value oracles beyond nn.functional: the convolution primitives over the whole
parameter grid, the Tensor methods whose other tests lean on PyTorch or on a few hand-written
values, the VAE's likelihood terms; and the table that says which test checks each op and layer
against its oracle, kept complete by a test.

Everything here runs without PyTorch. tests/oracles.py holds the oracles themselves.
"""

import inspect
import operator
import pathlib

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import oracles as O
import tinygen as tg
from tinygen import nn
from tinygen.models import vae
from tinygen.nn import functional as F
from tinygen.nn import layers

from helpers import assert_close
from strategies import broadcastable_shapes, conv_grid, conv_id, make_array, reduction_dims, shapes

# Every test here runs on the CPU and, where a GPU is visible, again on it (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("device")

DTYPES = st.sampled_from([np.float32, np.float64])


def seeds():
    return st.integers(0, 2**32 - 1).map(np.random.default_rng)


# --- the convolution primitives over the grid (tests/test_ops.py compares them with torch) ----


def _conv_arrays(p, transposed, dtype):
    g = np.random.default_rng(0)
    w_shape = ((p["Cin"], p["Cout"]) if transposed else (p["Cout"], p["Cin"])) + p["kernel"]
    return make_array(g, (p["N"], p["Cin"], p["H"], p["W"]), dtype=dtype), make_array(g, w_shape, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", conv_grid(), ids=conv_id)
def test_conv2d_and_unfold_grid(p, dtype):
    x, w = _conv_arrays(p, False, dtype)
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"])
    assert_close(F.conv2d(tg.tensor(x), tg.tensor(w), **kw), O.conv2d(x, w, **kw), f"conv2d {conv_id(p)}")
    assert_close(F.unfold(tg.tensor(x), p["kernel"], **kw), O.unfold(x, p["kernel"], **kw), f"unfold {conv_id(p)}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", conv_grid(transposed=True), ids=conv_id)
def test_conv_transpose2d_grid(p, dtype):
    x, w = _conv_arrays(p, True, dtype)
    kw = dict(stride=p["stride"], padding=p["padding"], output_padding=p["output_padding"], dilation=p["dilation"])
    assert_close(F.conv_transpose2d(tg.tensor(x), tg.tensor(w), **kw), O.conv_transpose2d(x, w, **kw),
                 f"conv_transpose2d {conv_id(p)}")


@pytest.mark.cpu_only  # the CUDA kernels take float32 and float64 only, and say so
def test_unfold_keeps_integer_dtypes():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert_close(F.unfold(tg.tensor(x), (2, 3), padding=1, stride=(2, 1)), O.unfold(x, (2, 3), padding=1, stride=(2, 1)),
                 "unfold of int64")


# --- Tensor methods -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
@given(data=st.data(), dtype=DTYPES, rng=seeds())
def test_softmax_family(name, data, dtype, rng):
    shape = data.draw(shapes(min_dims=1))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = make_array(rng, shape, dtype=dtype) * dtype(10)
    if name == "logsumexp":
        keepdim = data.draw(st.booleans())
        assert_close(tg.tensor(x).logsumexp(dim, keepdim), O.logsumexp(x, dim, keepdim), name)
    else:
        assert_close(getattr(tg.tensor(x), name)(dim), getattr(O, name)(x, dim), name)


COMPARISONS = [operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne]


@pytest.mark.parametrize("op", COMPARISONS, ids=lambda op: op.__name__)
@given(data=st.data(), rng=seeds())
def test_comparisons(op, data, rng):
    (sa, sb), _ = data.draw(broadcastable_shapes(2))
    a, b = (np.round(make_array(rng, s), 0) for s in (sa, sb))  # rounded: ties are common
    assert_close(op(tg.tensor(a), tg.tensor(b)), op(a, b), op.__name__)
    assert_close(op(tg.tensor(a), 0.0), op(a, 0.0), f"{op.__name__} with a number")


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@given(data=st.data(), rng=seeds())
def test_argmax_argmin(name, data, rng):
    shape = data.draw(shapes(min_dims=1))
    x = make_array(rng, shape, "distinct")
    assert_close(getattr(tg.tensor(x), name)(), getattr(np, name)(x), f"{name} of all")
    dim, keepdim = data.draw(st.integers(-len(shape), len(shape) - 1)), data.draw(st.booleans())
    assert_close(getattr(tg.tensor(x), name)(dim, keepdim), getattr(np, name)(x, axis=dim, keepdims=keepdim), name)


# name: (function of a tinygen tensor or NumPy array x and a number c, kind of x)
WITH_NUMBERS = {
    "radd": (lambda x, c: c + x, "normal"),
    "rsub": (lambda x, c: c - x, "normal"),
    "rmul": (lambda x, c: c * x, "normal"),
    "rtruediv": (lambda x, c: c / x, "nonzero"),
    "rpow": (lambda x, c: abs(c) ** x, "normal"),
    "pow-number": (lambda x, c: x ** c, "positive"),
    "truediv-number": (lambda x, c: x / c, "normal"),
    "neg": (lambda x, c: -x, "normal"),
    "pos": (lambda x, c: +x, "normal"),
}


@pytest.mark.parametrize("name", sorted(WITH_NUMBERS))
@given(shape=shapes(), c=st.sampled_from([-2.5, 0.5, 3.0]), dtype=DTYPES, rng=seeds())
def test_operators_with_numbers_keep_the_tensor_dtype(name, shape, c, dtype, rng):
    fn, kind = WITH_NUMBERS[name]
    x = make_array(rng, shape, kind, dtype)
    assert_close(fn(tg.tensor(x), c), np.asarray(fn(x, dtype(c))).astype(dtype), name)


@given(data=st.data(), dtype=DTYPES, rng=seeds())
def test_reductions(data, dtype, rng):
    shape = data.draw(shapes())
    dim, keepdim = data.draw(reduction_dims(len(shape))), data.draw(st.booleans())
    x = make_array(rng, shape, "distinct", dtype)
    t = tg.tensor(x)
    for name in ("sum", "mean", "amax", "amin"):
        assert_close(getattr(t, name)(dim, keepdim=keepdim), getattr(np, name)(x, axis=dim, keepdims=keepdim), name)


@given(data=st.data(), dtype=DTYPES, rng=seeds())
def test_matmul(data, dtype, rng):
    n, k, m = (data.draw(st.integers(1, 4)) for _ in range(3))
    (ba, bb), _ = data.draw(broadcastable_shapes(2, max_dims=2, max_side=3))
    a, b = make_array(rng, ba + (n, k), dtype=dtype), make_array(rng, bb + (k, m), dtype=dtype)
    expected = np.zeros(np.broadcast_shapes(ba, bb) + (n, m))
    for i in range(n):  # the dot products one by one
        for j in range(m):
            expected[..., i, j] = sum(a[..., i, p].astype(np.float64) * b[..., p, j] for p in range(k))
    assert_close(tg.tensor(a) @ tg.tensor(b), expected.astype(dtype), "matmul")


@given(data=st.data(), rng=seeds())
def test_movement(data, rng):
    shape = data.draw(shapes(min_dims=1))
    x = make_array(rng, shape)
    t = tg.tensor(x)
    d0, d1 = (data.draw(st.integers(-len(shape), len(shape) - 1)) for _ in range(2))
    assert_close(t.transpose(d0, d1), np.swapaxes(x, d0, d1), "transpose")
    assert_close(t.unsqueeze(d0), np.expand_dims(x, d0), "unsqueeze")
    assert_close(t.squeeze(), np.squeeze(x), "squeeze")
    if shape[d0] == 1:
        assert_close(t.squeeze(d0), np.squeeze(x, d0), "squeeze(dim)")
    start, end = sorted((d0 % len(shape), d1 % len(shape)))
    assert_close(t.flatten(start, end), x.reshape(shape[:start] + (-1,) + shape[end + 1:]), "flatten")
    assert_close(tg.stack([t, t * 2], dim=d0 % (len(shape) + 1)), np.stack([x, x * 2], axis=d0 % (len(shape) + 1)),
                 "stack")
    index = data.draw(hnp.basic_indices(shape, allow_ellipsis=True))
    y, expected = tg.tensor(x), x.copy()
    y[index] = 7.5
    expected[index] = 7.5
    assert_close(y, expected, "setitem")


@given(shape=shapes(), dtype=st.sampled_from([np.float32, np.float64, np.int64]), rng=seeds())
def test_casts(shape, dtype, rng):
    x = make_array(rng, shape, dtype=dtype) if dtype != np.int64 else rng.integers(-5, 5, shape)
    t = tg.tensor(x)
    assert_close(t.float(), x.astype(np.float32), "float")
    assert_close(t.double(), x.astype(np.float64), "double")
    assert_close(t.long(), x.astype(np.int64), "long")


# --- the VAE's likelihood terms ----------------------------------------------------------------


@given(shape=shapes(1, 3), rng=seeds())
def test_discretized_logistic_log_prob(shape, rng):
    x = rng.integers(0, 256, shape) / 255
    x.flat[0] = rng.choice([0.0, 1.0])  # an edge bin, reaching to -inf or +inf
    mean, log_scale = rng.uniform(-0.2, 1.2, shape), rng.uniform(-6, 0.5, shape)
    out = vae.discretized_logistic_log_prob(tg.tensor(x), tg.tensor(mean), tg.tensor(log_scale))
    assert_close(out, O.discretized_logistic_log_prob(x, mean, log_scale), "discretized logistic", rtol=1e-9)


@given(b=st.integers(1, 3), k=st.integers(1, 3), j=st.integers(1, 4), rng=seeds())
def test_gaussian_log_density_kl_and_bernoulli_nll(b, k, j, rng):
    z, mu, logvar = rng.standard_normal((b, 1, j)), rng.standard_normal((k, j)), rng.standard_normal((k, j))
    assert_close(vae.gaussian_log_density(tg.tensor(z), tg.tensor(mu), tg.tensor(logvar)),
                 O.gaussian_log_density(z, mu, logvar), "gaussian_log_density")
    assert_close(vae.gaussian_kl(tg.tensor(mu), tg.tensor(logvar)), O.gaussian_kl(mu, logvar), "gaussian_kl")
    logits, pixels = rng.standard_normal((b, 1, 2, j)) * 5, rng.uniform(0, 1, (b, 1, 2, j))
    assert_close(vae.bernoulli_nll(tg.tensor(logits), tg.tensor(pixels)), O.bernoulli_nll(logits, pixels),
                 "bernoulli_nll")


# --- coverage: which test checks each op and layer against its NumPy oracle --------------------

FUNCTIONAL = {
    "linear": ["test_functional.py::test_linear"],
    "conv2d": ["test_functional.py::test_conv2d", "test_oracles.py::test_conv2d_and_unfold_grid"],
    "conv_transpose2d": ["test_functional.py::test_conv_transpose2d", "test_oracles.py::test_conv_transpose2d_grid"],
    "unfold": ["test_functional.py::test_unfold", "test_oracles.py::test_conv2d_and_unfold_grid"],
    "avg_pool2d": ["test_functional.py::test_avg_pool2d", "test_functional.py::test_pool_arguments_as_ints"],
    "max_pool2d": ["test_functional.py::test_max_pool2d", "test_functional.py::test_pool_arguments_as_ints"],
    "interpolate": ["test_functional.py::test_interpolate_nearest_integer_scale",
                    "test_functional.py::test_interpolate_nearest_to_any_size",
                    "test_functional.py::test_interpolate_nearest_fractional_scale"],
    "relu": ["test_functional.py::test_activations"],
    "leaky_relu": ["test_functional.py::test_activations"],
    "sigmoid": ["test_functional.py::test_activations"],
    "tanh": ["test_functional.py::test_activations"],
    "silu": ["test_functional.py::test_activations"],
    "softplus": ["test_functional.py::test_activations"],
    "softmax": ["test_functional.py::test_softmax_and_log_softmax", "test_oracles.py::test_softmax_family"],
    "log_softmax": ["test_functional.py::test_softmax_and_log_softmax", "test_oracles.py::test_softmax_family"],
    "logsumexp": ["test_functional.py::test_logsumexp", "test_oracles.py::test_softmax_family"],
    "scaled_dot_product_attention": ["test_functional.py::test_scaled_dot_product_attention"],
    "batch_norm": ["test_functional.py::test_batch_norm_training_forward_and_backward",
                   "test_functional.py::test_batch_norm_eval_uses_running_statistics",
                   "test_functional.py::test_batch_norm_updates_running_statistics"],
    "group_norm": ["test_functional.py::test_group_norm"],
    "layer_norm": ["test_functional.py::test_layer_norm"],
    "dropout": ["test_functional.py::test_dropout_values"],
    "embedding": ["test_functional.py::test_embedding"],
    "pad": ["test_functional.py::test_pad"],
    "mse_loss": ["test_functional.py::test_mse_loss"],
    "binary_cross_entropy_with_logits": ["test_functional.py::test_binary_cross_entropy_with_logits"],
    "cross_entropy": ["test_functional.py::test_cross_entropy"],
    "gaussian_nll_loss": ["test_functional.py::test_gaussian_nll_loss",
                          "test_functional.py::test_gaussian_nll_loss_eps_clamp_passes_the_gradient"],
}

LAYERS = {
    "Linear": ["nn/test_layer_oracles.py::test_linear"],
    "Conv2d": ["nn/test_layer_oracles.py::test_conv2d_and_conv_transpose2d"],
    "ConvTranspose2d": ["nn/test_layer_oracles.py::test_conv2d_and_conv_transpose2d"],
    "BatchNorm1d": ["nn/test_layer_oracles.py::test_batch_norm"],
    "BatchNorm2d": ["nn/test_layer_oracles.py::test_batch_norm"],
    "GroupNorm": ["nn/test_layer_oracles.py::test_group_norm"],
    "LayerNorm": ["nn/test_layer_oracles.py::test_layer_norm"],
    "Dropout": ["nn/test_layer_oracles.py::test_dropout"],
    "Embedding": ["nn/test_layer_oracles.py::test_embedding"],
    "Sequential": ["nn/test_layer_oracles.py::test_sequential_and_module_list_compose_their_members"],
    "ModuleList": ["nn/test_layer_oracles.py::test_sequential_and_module_list_compose_their_members"],
    "Flatten": ["nn/test_layer_oracles.py::test_flatten_and_unflatten"],
    "Unflatten": ["nn/test_layer_oracles.py::test_flatten_and_unflatten"],
    "Upsample": ["nn/test_layer_oracles.py::test_upsample"],
    "AvgPool2d": ["nn/test_layer_oracles.py::test_pooling"],
    "MaxPool2d": ["nn/test_layer_oracles.py::test_pooling"],
    "ReLU": ["nn/test_layer_oracles.py::test_activations"],
    "LeakyReLU": ["nn/test_layer_oracles.py::test_activations"],
    "Sigmoid": ["nn/test_layer_oracles.py::test_activations"],
    "Tanh": ["nn/test_layer_oracles.py::test_activations"],
    "SiLU": ["nn/test_layer_oracles.py::test_activations"],
    "Softplus": ["nn/test_layer_oracles.py::test_activations"],
    "Identity": ["nn/test_layer_oracles.py::test_activations"],
}

# public functions of nn.functional that are not ops: the pooling argument check the layers share
NOT_OPS = {"pool_arguments"}


def _defined_in(module, kind):
    return {name for name, obj in vars(module).items()
            if not name.startswith("_") and kind(obj) and getattr(obj, "__module__", None) == module.__name__}


def test_every_op_and_layer_has_an_oracle_test():
    assert _defined_in(F, inspect.isfunction) - NOT_OPS == set(FUNCTIONAL)
    assert _defined_in(layers, lambda o: inspect.isclass(o) and issubclass(o, nn.Module)) == set(LAYERS)
    here = pathlib.Path(__file__).parent
    for name, tests in {**FUNCTIONAL, **LAYERS}.items():
        for test in tests:
            path, function = test.split("::")
            source = (here / path).read_text()
            assert f"def {function}(" in source, f"{name}: {test} does not exist"
            assert "oracles as O" in source, f"{name}: {path} does not use the NumPy oracles"
