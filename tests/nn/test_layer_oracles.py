"""Every layer of tinygen.nn against the plain NumPy oracles of tests/oracles.py, without PyTorch.

Each layer gets random parameters (through `load_state_dict`), a hypothesis-drawn input and
configuration, and its forward value, in float32 and float64, must match the oracle applied to
the same parameters; the batch norms' running statistics must match the oracle's updates too.
tests/nn/test_layers.py compares the same layers with PyTorch, where it is installed.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import oracles as O
import tinygen
from tinygen import nn

from helpers import assert_close
from strategies import conv_params, make_array, pool_params, shapes

# Every test here runs on the CPU and, where a GPU is visible, again on it (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("device")

DTYPES = st.sampled_from([np.float32, np.float64])
NORM_TOL = dict(rtol=1e-4, atol=1e-4)  # a handful of values normalised in float32


def build(make, dtype, rng, **state):
    """The layer `make()` of `dtype`, every parameter (and buffer in `state`) random normal."""
    tinygen.set_default_dtype(dtype)
    layer = make()
    values = {name: make_array(rng, p.shape, dtype=dtype) for name, p in layer.named_parameters()}
    values.update(state)
    layer.load_state_dict(values, strict=False)
    return layer, {name: p.numpy() for name, p in layer.named_parameters()}


def run(layer, x):
    return layer(tinygen.tensor(x))


def seeds():
    return st.integers(0, 2**32 - 1).map(np.random.default_rng)


@given(batch=shapes(0, 2, max_side=3), fin=st.integers(1, 4), fout=st.integers(1, 4), bias=st.booleans(),
       dtype=DTYPES, rng=seeds())
def test_linear(batch, fin, fout, bias, dtype, rng):
    layer, p = build(lambda: nn.Linear(fin, fout, bias=bias), dtype, rng)
    x = make_array(rng, batch + (fin,), dtype=dtype)
    assert_close(run(layer, x), O.linear(x, p["weight"], p.get("bias")), "Linear")


@settings(max_examples=15)
@given(data=st.data(), transposed=st.booleans(), bias=st.booleans(), dtype=DTYPES, rng=seeds())
def test_conv2d_and_conv_transpose2d(data, transposed, bias, dtype, rng):
    c = data.draw(conv_params(transposed=transposed))
    kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], bias=bias)
    if transposed:
        layer, p = build(lambda: nn.ConvTranspose2d(c["Cin"], c["Cout"], c["kernel"],
                                                    output_padding=c["output_padding"], **kw), dtype, rng)
    else:
        layer, p = build(lambda: nn.Conv2d(c["Cin"], c["Cout"], c["kernel"], **kw), dtype, rng)
    x = make_array(rng, (c["N"], c["Cin"], c["H"], c["W"]), dtype=dtype)
    args = (x, p["weight"], p.get("bias"), c["stride"], c["padding"])
    expected = O.conv_transpose2d(*args, c["output_padding"], c["dilation"]) if transposed else O.conv2d(*args, c["dilation"])
    assert_close(run(layer, x), expected, type(layer).__name__)


@st.composite
def batch_norm_cases(draw):
    two_d = draw(st.booleans())
    c = draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(3, 2)] if two_d else [(), (3,), (1,)]))
    n = draw(st.integers(2, 4))
    momentum = draw(st.sampled_from([0.1, 0.5, None]))
    return two_d, (n, c) + spatial, momentum, draw(st.booleans()), draw(st.booleans())


@given(case=batch_norm_cases(), eps=st.sampled_from([1e-5, 0.1]), dtype=DTYPES, rng=seeds())
def test_batch_norm(case, eps, dtype, rng):
    """Two training steps (output and running statistics; momentum None: the cumulative average,
    1/t at step t), then eval: the running statistics normalise, or the batch's without them."""
    two_d, shape, momentum, affine, track = case
    cls = nn.BatchNorm2d if two_d else nn.BatchNorm1d
    layer, p = build(lambda: cls(shape[1], eps=eps, momentum=momentum, affine=affine, track_running_stats=track),
                     dtype, rng)
    w, b = p.get("weight"), p.get("bias")
    mean, var = np.zeros(shape[1]), np.ones(shape[1])
    for step in (1, 2):
        x = make_array(rng, shape, dtype=dtype) * 2 + step
        assert_close(run(layer, x), O.batch_norm_train(x, w, b, eps), f"training step {step}", **NORM_TOL)
        if track:
            mean, var = O.batch_norm_running(mean, var, x, 1 / step if momentum is None else momentum)
            np.testing.assert_allclose(layer.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(layer.running_var.numpy(), var, rtol=1e-5, atol=1e-6)
    layer.eval()
    x = make_array(rng, shape, dtype=dtype)
    expected = O.batch_norm_eval(x, mean.astype(dtype), var.astype(dtype), w, b, eps) if track else \
        O.batch_norm_train(x, w, b, eps)
    assert_close(run(layer, x), expected, "eval", **NORM_TOL)


@given(groups=st.integers(1, 3), per_group=st.integers(1, 3), spatial=shapes(0, 2, max_side=3), affine=st.booleans(),
       eps=st.sampled_from([1e-5, 0.5]), dtype=DTYPES, rng=seeds())
def test_group_norm(groups, per_group, spatial, affine, eps, dtype, rng):
    c = groups * per_group
    layer, p = build(lambda: nn.GroupNorm(groups, c, eps=eps, affine=affine), dtype, rng)
    x = make_array(rng, (2, c) + spatial, dtype=dtype)
    assert_close(run(layer, x), O.group_norm(x, groups, p.get("weight"), p.get("bias"), eps), "GroupNorm", **NORM_TOL)


@given(lead=shapes(0, 2, max_side=3), normalized=shapes(1, 2, min_side=2, max_side=3), affine=st.booleans(),
       bias=st.booleans(), eps=st.sampled_from([1e-5, 0.5]), dtype=DTYPES, rng=seeds())
def test_layer_norm(lead, normalized, affine, bias, eps, dtype, rng):
    layer, p = build(lambda: nn.LayerNorm(normalized, eps=eps, elementwise_affine=affine, bias=bias), dtype, rng)
    x = make_array(rng, lead + normalized, dtype=dtype)
    assert_close(run(layer, x), O.layer_norm(x, normalized, p.get("weight"), p.get("bias"), eps), "LayerNorm",
                 **NORM_TOL)


@given(shape=shapes(), p=st.sampled_from([0.0, 0.3, 0.7, 1.0]), dtype=DTYPES, rng=seeds())
def test_dropout(shape, p, dtype, rng):
    layer, _ = build(lambda: nn.Dropout(p), dtype, rng)
    x = make_array(rng, shape, "nonzero", dtype)
    out = run(layer, x).numpy()
    assert_close(out, O.dropout(x, p, out != 0), "Dropout in training")
    layer.eval()
    assert_close(run(layer, x), x, "Dropout in eval")


@given(rows=st.integers(1, 5), dim=st.integers(1, 4), idx_shape=shapes(0, 2, max_side=4), dtype=DTYPES, rng=seeds())
def test_embedding(rows, dim, idx_shape, dtype, rng):
    layer, p = build(lambda: nn.Embedding(rows, dim), dtype, rng)
    idx = rng.integers(0, rows, idx_shape)
    assert_close(run(layer, idx), O.embedding(idx, p["weight"]), "Embedding")


@given(shape=shapes(1, 4), data=st.data(), dtype=DTYPES, rng=seeds())
def test_flatten_and_unflatten(shape, data, dtype, rng):
    start = data.draw(st.integers(-len(shape), len(shape) - 1))
    end = data.draw(st.integers(start % len(shape), len(shape) - 1))
    s, e = start % len(shape), end
    merged = int(np.prod(shape[s:e + 1]))
    x = make_array(rng, shape, dtype=dtype)
    flat = run(nn.Flatten(start, end), x)
    assert_close(flat, x.reshape(shape[:s] + (merged,) + shape[e + 1:]), "Flatten")
    assert_close(nn.Unflatten(s, shape[s:e + 1])(flat), x, "Unflatten")


@given(n=st.integers(1, 2), c=st.integers(1, 2), hw=shapes(2, 2, max_side=4), dtype=DTYPES, rng=seeds(),
       resize=st.one_of(st.integers(1, 3).map(lambda f: dict(scale_factor=f)),
                        st.sampled_from([1.5, 2.4]).map(lambda f: dict(scale_factor=f)),
                        st.tuples(st.integers(1, 7), st.integers(1, 7)).map(lambda s: dict(size=s))))
def test_upsample(n, c, hw, dtype, rng, resize):
    x = make_array(rng, (n, c) + hw, dtype=dtype)
    assert_close(run(nn.Upsample(**resize), x), O.interpolate(x, **resize), f"Upsample({resize})")


@given(p=pool_params(dilation=True), dtype=DTYPES, rng=seeds())
def test_pooling(p, dtype, rng):
    x = make_array(rng, (p["N"], p["C"], p["H"], p["W"]), dtype=dtype)
    avg = nn.AvgPool2d(p["kernel"], p["stride"], p["padding"])
    assert_close(run(avg, x), O.avg_pool2d(x, p["kernel"], p["stride"], p["padding"]), "AvgPool2d")
    mx = nn.MaxPool2d(p["kernel"], p["stride"], p["padding"], p["dilation"])
    assert_close(run(mx, x), O.max_pool2d(x, p["kernel"], p["stride"], p["padding"], p["dilation"]), "MaxPool2d")


# layer: NumPy oracle
ACTIVATIONS = {
    "ReLU": (nn.ReLU, O.relu),
    "LeakyReLU": (nn.LeakyReLU, O.leaky_relu),
    "LeakyReLU(0.2)": (lambda: nn.LeakyReLU(0.2), lambda a: O.leaky_relu(a, 0.2)),
    "Sigmoid": (nn.Sigmoid, O.sigmoid),
    "Tanh": (nn.Tanh, O.tanh),
    "SiLU": (nn.SiLU, O.silu),
    "Softplus": (nn.Softplus, O.softplus),
    "Identity": (lambda: nn.Identity(3, unused=True), lambda a: a),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(shape=shapes(), scale=st.sampled_from([1.0, 30.0]), dtype=DTYPES, rng=seeds())
def test_activations(name, shape, scale, dtype, rng):
    make, oracle = ACTIVATIONS[name]
    x = make_array(rng, shape, "nonzero", dtype) * dtype(scale)
    assert_close(run(make(), x), oracle(x), name)


@given(batch=st.integers(1, 3), dtype=DTYPES, rng=seeds())
def test_sequential_and_module_list_compose_their_members(batch, dtype, rng):
    """Sequential is its members' oracles in order; ModuleList has no forward, its members apply one by one."""
    model, p = build(lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Softplus()), dtype, rng)
    x = make_array(rng, (batch, 3), dtype=dtype)
    hidden = O.tanh(O.linear(x, p["0.weight"], p["0.bias"]))
    expected = O.softplus(O.linear(hidden, p["2.weight"], p["2.bias"]))
    assert_close(run(model, x), expected, "Sequential")
    layers = nn.ModuleList([model[0], model[1]])
    h = tinygen.tensor(x)
    for layer in layers:
        h = layer(h)
    assert_close(h, hidden, "ModuleList members in turn")
