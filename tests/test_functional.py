"""Every function in tinygen.nn.functional against two oracles, then the error paths.

`check` does it from one line: the forward value against the plain NumPy oracle of
tests/oracles.py (always, with or without PyTorch), values and gradients against
torch.nn.functional where PyTorch is installed, and the directional gradient check on float64
copies. A wrong forward (a pad value, an eps in the wrong place, a clamp) fails the NumPy oracle,
which the gradient check, agreeing with whatever the forward computes, cannot catch.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import tinygen as tg
from tinygen import ArgumentError, DTypeError, ShapeError
from tinygen.nn import functional as F

import oracles as O
from helpers import check_op, gradcheck, torch
from strategies import arrays, attention_shapes, conv_params, make_array, pool_params, shapes

# Every test here runs on the CPU and, where a GPU is visible, again on it (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("device")

TF = None if torch is None else torch.nn.functional
f32 = np.float32


def check(tg_fn, np_fn, torch_fn, *arrays, **kwargs):
    """`check_op` with its NumPy oracle required: every op here is checked against tests/oracles.py."""
    assert np_fn is not None, "every functional op needs its NumPy oracle"
    return check_op(tg_fn, torch_fn, *arrays, np_fn=np_fn, **kwargs)


def draw_dtype(data):
    return data.draw(st.sampled_from([f32, np.float64]), label="dtype")


def draw_array(data, shape, kind="normal", dtype=f32):
    return data.draw(arrays(tuple(shape), kind, dtype))


def optional(array, include):
    """() or (array,): the trailing optional arguments passed to both frameworks."""
    return (array,) if include else ()


# --- linear and convolution -----------------------------------------------------------------


@given(data=st.data())
def test_linear(data):
    batch = data.draw(shapes(max_dims=2, max_side=3))
    fin, fout, dtype = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)), draw_dtype(data)
    x, w = draw_array(data, batch + (fin,), dtype=dtype), draw_array(data, (fout, fin), dtype=dtype)
    b = optional(draw_array(data, (fout,), dtype=dtype), data.draw(st.booleans()))
    check(F.linear, O.linear, TF and TF.linear, x, w, *b)


def _conv_inputs(p, transposed, bias, seed):
    g = np.random.default_rng(seed)
    w_shape = ((p["Cin"], p["Cout"]) if transposed else (p["Cout"], p["Cin"])) + p["kernel"]
    x = make_array(g, (p["N"], p["Cin"], p["H"], p["W"]), dtype=f32)
    return (x, make_array(g, w_shape, dtype=f32)) + optional(make_array(g, (p["Cout"],), dtype=f32), bias)


@settings(max_examples=30)
@given(p=conv_params(), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_conv2d(p, bias, seed):
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"])
    check(lambda x, w, *b: F.conv2d(x, w, *b, **kw), lambda x, w, *b: O.conv2d(x, w, *b, **kw),
          lambda x, w, *b: TF.conv2d(x, w, *b, **kw), *_conv_inputs(p, False, bias, seed))


@settings(max_examples=30)
@given(p=conv_params(transposed=True), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_transpose2d(p, bias, seed):
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"], output_padding=p["output_padding"])
    check(lambda x, w, *b: F.conv_transpose2d(x, w, *b, **kw), lambda x, w, *b: O.conv_transpose2d(x, w, *b, **kw),
          lambda x, w, *b: TF.conv_transpose2d(x, w, *b, **kw), *_conv_inputs(p, True, bias, seed))


def test_conv_arguments_as_ints():
    x, w, b = _conv_inputs(dict(N=2, Cin=3, Cout=2, H=7, W=6, kernel=(3, 3)), False, True, 0)
    check(lambda x, w, b: F.conv2d(x, w, b, 2, 1, 2), lambda x, w, b: O.conv2d(x, w, b, 2, 1, 2),
          lambda x, w, b: TF.conv2d(x, w, b, 2, 1, 2), x, w, b)
    wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3))
    check(lambda x, w: F.conv_transpose2d(x, w, None, 2, 1, 1), lambda x, w: O.conv_transpose2d(x, w, None, 2, 1, 1),
          lambda x, w: TF.conv_transpose2d(x, w, None, 2, 1, 1), x, wt)


@settings(max_examples=30)
@given(p=conv_params(), seed=st.integers(0, 2**16))
def test_unfold(p, seed):
    kw = dict(dilation=p["dilation"], padding=p["padding"], stride=p["stride"])
    check(lambda x: F.unfold(x, p["kernel"], **kw), lambda x: O.unfold(x, p["kernel"], **kw),
          lambda x: TF.unfold(x, p["kernel"], **kw), _conv_inputs(p, False, False, seed)[0])


# --- pooling and resampling -----------------------------------------------------------------


@given(p=pool_params(), seed=st.integers(0, 2**16), dtype=st.sampled_from([f32, np.float64]))
def test_avg_pool2d(p, seed, dtype):
    x = make_array(np.random.default_rng(seed), (p["N"], p["C"], p["H"], p["W"]), dtype=dtype)
    args = (p["kernel"], p["stride"], p["padding"])
    check(lambda t: F.avg_pool2d(t, *args), lambda a: O.avg_pool2d(a, *args), lambda t: TF.avg_pool2d(t, *args), x)


@given(p=pool_params(dilation=True), seed=st.integers(0, 2**16))
def test_max_pool2d(p, seed):
    # A window holding padding only has max -inf, and torch then sends its gradient to an unrelated
    # pixel; tinygen sends it to the padding (nowhere). Compare where every window sees the input.
    for n, k, s, pad, d in zip((p["H"], p["W"]), p["kernel"], p["stride"] or p["kernel"], p["padding"], p["dilation"]):
        starts = range(-pad, n + pad - d * (k - 1), s)
        assume(all(any(0 <= o + j * d < n for j in range(k)) for o in starts))
    # distinct values: no ties, where tinygen splits the gradient and torch picks one element
    x = make_array(np.random.default_rng(seed), (p["N"], p["C"], p["H"], p["W"]), "distinct", f32)
    args = (p["kernel"], p["stride"], p["padding"], p["dilation"])
    check(lambda t: F.max_pool2d(t, *args), lambda a: O.max_pool2d(a, *args), lambda t: TF.max_pool2d(t, *args), x)


def test_pool_arguments_as_ints():
    x = make_array(np.random.default_rng(0), (2, 3, 7, 6), "distinct", f32)
    check(lambda t: F.avg_pool2d(t, 3, 2, 1), lambda a: O.avg_pool2d(a, 3, 2, 1), lambda t: TF.avg_pool2d(t, 3, 2, 1), x)
    check(lambda t: F.max_pool2d(t, 2), lambda a: O.max_pool2d(a, 2), lambda t: TF.max_pool2d(t, 2), x)


@given(data=st.data())
def test_interpolate_nearest_integer_scale(data):
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))) + data.draw(shapes(2, 2, max_side=4))
    scale = data.draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    out = check(lambda t: F.interpolate(t, scale_factor=scale), lambda a: O.interpolate(a, scale_factor=scale),
                lambda t: TF.interpolate(t, scale_factor=scale), draw_array(data, shape, dtype=draw_dtype(data)))
    sh, sw = (scale, scale) if isinstance(scale, int) else scale
    assert out.shape == shape[:2] + (shape[2] * sh, shape[3] * sw)


@given(data=st.data())
def test_interpolate_nearest_to_any_size(data):
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))) + data.draw(shapes(2, 2, max_side=6))
    size = data.draw(st.one_of(st.integers(1, 9), st.tuples(st.integers(1, 9), st.integers(1, 9))))
    check(lambda t: F.interpolate(t, size=size), lambda a: O.interpolate(a, size=size),
          lambda t: TF.interpolate(t, size=size), draw_array(data, shape))


def test_interpolate_to_a_size_reads_torchs_float32_source_rows():
    """26 rows to 22: dst 11 reads row 12 (floor of the float32 product 11 * (26 / 22)), not 13."""
    x = tg.tensor(np.arange(26, dtype=np.float32).reshape(1, 1, 26, 1))
    np.testing.assert_array_equal(F.interpolate(x, size=(22, 1)).numpy()[0, 0, 9:13, 0], [10, 11, 12, 14])
    for n_in, n_out in [(26, 22), (6, 74), (14, 46), (39, 33), (7, 5)]:  # the first four: the exact formula differs
        x = np.arange(n_in, dtype=np.float32).reshape(1, 1, n_in, 1)
        np.testing.assert_array_equal(F.interpolate(tg.tensor(x), size=(n_out, 1)).numpy(),
                                      O.interpolate(x, size=(n_out, 1)))
    torch = pytest.importorskip("torch")
    for n_in, n_out in [(26, 22), (6, 74), (14, 46), (39, 33), (7, 5)]:  # the first four: the exact formula differs
        x = np.arange(n_in, dtype=np.float32).reshape(1, 1, n_in, 1)
        expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=(n_out, 1)).numpy()
        np.testing.assert_array_equal(F.interpolate(tg.tensor(x), size=(n_out, 1)).numpy(), expected)


@given(data=st.data())
def test_interpolate_nearest_fractional_scale(data):
    # torch reads floor(dst / scale_factor) here, not floor(dst * in / out): 1.7 and 2.4 tell them apart
    shape = (1, 2) + data.draw(shapes(2, 2, min_side=2, max_side=6))
    factor = st.one_of(st.sampled_from([0.5, 1.7, 2.4, 3.2]), st.floats(0.5, 3.5).map(lambda s: round(s, 2)))
    scale = data.draw(st.one_of(factor, st.tuples(factor, factor)))
    check(lambda t: F.interpolate(t, scale_factor=scale), lambda a: O.interpolate(a, scale_factor=scale),
          lambda t: TF.interpolate(t, scale_factor=scale), draw_array(data, shape))


# --- activations ----------------------------------------------------------------------------

# name: (tinygen function, NumPy oracle, torch function name, kind of input)
ACTIVATIONS = {
    "relu": (F.relu, O.relu, "relu", "nonzero"),
    "leaky_relu": (F.leaky_relu, O.leaky_relu, "leaky_relu", "nonzero"),
    "leaky_relu-0.2": (lambda x: F.leaky_relu(x, 0.2), lambda a: O.leaky_relu(a, 0.2), None, "nonzero"),
    "sigmoid": (F.sigmoid, O.sigmoid, "sigmoid", "normal"),
    "tanh": (F.tanh, O.tanh, "tanh", "normal"),
    "silu": (F.silu, O.silu, "silu", "normal"),
    "softplus": (F.softplus, O.softplus, "softplus", "normal"),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(data=st.data())
def test_activations(name, data):
    fn, np_fn, torch_name, kind = ACTIVATIONS[name]
    scale = data.draw(st.sampled_from([1.0, 10.0]))  # 10: the tails (softplus above torch's threshold 20)
    dtype = draw_dtype(data)
    x = draw_array(data, data.draw(shapes()), kind, dtype) * dtype(scale)
    torch_fn = (lambda t: TF.leaky_relu(t, 0.2)) if torch_name is None else getattr(TF, torch_name, None)
    check(fn, np_fn, torch_fn, x)


@pytest.mark.parametrize("fn", [F.softplus, F.silu, F.sigmoid, F.tanh], ids=lambda f: f.__name__)
def test_smooth_activations_are_smooth_at_zero(fn):
    # composed from relu and abs, whose derivatives at 0 are conventions: the sum must not show it
    check(fn, getattr(O, fn.__name__), getattr(TF, fn.__name__, None), np.array([0.0, -0.0, 1e-3], dtype=f32))
    gradcheck(fn, np.zeros(3))


@pytest.mark.parametrize(
    "fn, expected",
    [
        (F.relu, [0.0, 0.0, 100.0, np.inf]),
        (F.leaky_relu, [-np.inf, -1.0, 100.0, np.inf]),
        (F.softplus, [0.0, 3.720076e-44, 100.0, np.inf]),
        (F.sigmoid, [0.0, 3.720076e-44, 1.0, 1.0]),
        (F.tanh, [-1.0, -1.0, 1.0, 1.0]),
        (F.silu, [np.nan, -3.720076e-42, 100.0, np.inf]),  # -inf * 0, as in torch
    ],
    ids=["relu", "leaky_relu", "softplus", "sigmoid", "tanh", "silu"],
)
def test_activations_at_infinity(fn, expected):
    with np.errstate(invalid="ignore"):  # silu: -inf * 0
        out = fn(tg.tensor(np.array([-np.inf, -100.0, 100.0, np.inf], dtype=f32))).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-40)  # e^-100 is a float32 denormal


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_and_log_softmax(name, data):
    shape = data.draw(shapes(min_dims=1))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    check(lambda t: getattr(F, name)(t, dim), lambda a: getattr(O, name)(a, dim), lambda t: getattr(TF, name)(t, dim),
          draw_array(data, shape) * f32(5))


def test_logsumexp():
    x = make_array(np.random.default_rng(0), (3, 4), dtype=f32)
    check(lambda t: F.logsumexp(t, 1), lambda a: O.logsumexp(a, 1), lambda t: torch.logsumexp(t, 1), x)
    check(lambda t: F.logsumexp(t, 0, keepdim=True), lambda a: O.logsumexp(a, 0, keepdim=True),
          lambda t: torch.logsumexp(t, 0, keepdim=True), x)


# --- attention -----------------------------------------------------------------------------


@given(data=st.data(), mask=st.sampled_from(["none", "bool", "float", "causal"]), scaled=st.booleans())
def test_scaled_dot_product_attention(data, mask, scaled):
    """Values and gradients of query, key, value (and of a float mask) in float64, against
    torch's scaled_dot_product_attention: a bool mask may leave a query nothing to attend to."""
    q_shape, k_shape, v_shape, mask_shape = data.draw(attention_shapes())
    q, k, v = (draw_array(data, s, dtype=np.float64) for s in (q_shape, k_shape, v_shape))
    scale = data.draw(st.floats(0.1, 2.0)) if scaled else None
    if mask == "bool":
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        m = rng.random(mask_shape) < 0.7
        extra, fixed = (), dict(attn_mask=m)
        fixed_torch = dict(attn_mask=torch.from_numpy(m)) if torch else {}
    elif mask == "float":
        extra, fixed, fixed_torch = (draw_array(data, mask_shape, dtype=np.float64),), {}, {}
    else:
        extra, fixed = (), dict(is_causal=mask == "causal")
        fixed_torch = fixed
    check(lambda *t: F.scaled_dot_product_attention(*t[:3], *t[3:], scale=scale, **fixed),
          lambda *a: O.scaled_dot_product_attention(*a[:3], *a[3:], scale=scale, **fixed),
          lambda *t: TF.scaled_dot_product_attention(*t[:3], *t[3:], scale=scale, **fixed_torch), q, k, v, *extra)


def test_attention_without_a_mask_is_the_softmax_of_scaled_scores():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 6))
    s = q @ k.transpose(0, 2, 1) / np.sqrt(3)
    w = np.exp(s - s.max(-1, keepdims=True))
    expected = (w / w.sum(-1, keepdims=True)) @ v
    out = F.scaled_dot_product_attention(tg.tensor(q), tg.tensor(k), tg.tensor(v))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)


def test_attention_dropout_is_unbiased():
    # inverted dropout on the weights: E[output] is the output without dropout; p = 1 drops everything
    rng = np.random.default_rng(1)
    q, k, v = (tg.tensor(rng.standard_normal((1, 3, 2))) for _ in range(3))
    plain = F.scaled_dot_product_attention(q, k, v).numpy()
    tg.manual_seed(0)
    draws = np.stack([F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy() for _ in range(4000)])
    assert not np.allclose(draws[0], plain)
    np.testing.assert_allclose(draws.mean(0), plain, atol=6 * draws.std(0).max() / np.sqrt(len(draws)))
    assert not F.scaled_dot_product_attention(q, k, v, dropout_p=1.0).numpy().any()


def test_attention_arguments_are_checked():
    q, k, v = tg.randn(2, 4, 3), tg.randn(2, 5, 3), tg.randn(2, 5, 6)
    with pytest.raises(ShapeError, match=r"query \(2, 4, 3\) and key \(2, 5, 2\).*feature size"):
        F.scaled_dot_product_attention(q, tg.randn(2, 5, 2), v)
    with pytest.raises(ShapeError, match=r"key \(2, 5, 3\) and value \(2, 4, 6\).*length S"):
        F.scaled_dot_product_attention(q, k, tg.randn(2, 4, 6))
    with pytest.raises(ShapeError, match="at least 2 dimensions"):
        F.scaled_dot_product_attention(tg.randn(3), k, v)
    with pytest.raises(ShapeError, match=r"attn_mask of shape \(5, 4\)"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((5, 4), bool))
    with pytest.raises(ShapeError, match=r"attn_mask of shape \(3, 2, 4, 5\) does not broadcast to the scores' shape \(2, 4, 5\)"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((3, 2, 4, 5), bool))
    with pytest.raises(DTypeError, match="int64"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((4, 5), np.int64))
    with pytest.raises(ArgumentError, match="not both"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((4, 5), bool), is_causal=True)
    with pytest.raises(ArgumentError, match="dropout_p"):
        F.scaled_dot_product_attention(q, k, v, dropout_p=1.5)


# --- normalisation --------------------------------------------------------------------------


# Normalising a handful of values is ill-conditioned in float32 (the outputs are nearly +-1 whatever
# the input, so the input gradient is a difference of nearly equal terms): looser float32 tolerances.
NORM_TOL = dict(rtol=1e-3, atol=1e-4)
EPS = st.sampled_from([1e-5, 0.5])  # 0.5: where eps goes (inside the square root, or not) shows


@st.composite
def norm_inputs(draw, min_dims=2, max_dims=4):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    spatial = draw(shapes(min_dims - 2, max_dims - 2, max_side=4))
    return (n, c) + spatial


@given(data=st.data())
def test_batch_norm_training_forward_and_backward(data):
    shape = data.draw(norm_inputs())
    if shape[0] * int(np.prod(shape[2:])) < 2:
        shape = (2,) + shape[1:]
    affine = data.draw(st.booleans())
    c = shape[1]
    extra = (draw_array(data, (c,)), draw_array(data, (c,))) if affine else ()
    eps = data.draw(EPS)
    check(lambda x, *wb: F.batch_norm(x, None, None, *wb, training=True, eps=eps),
          lambda x, *wb: O.batch_norm_train(x, *wb, eps=eps),
          lambda x, *wb: TF.batch_norm(x, None, None, *wb, training=True, eps=eps), draw_array(data, shape), *extra,
          **NORM_TOL)


@given(data=st.data())
def test_batch_norm_eval_uses_running_statistics(data):
    shape = data.draw(norm_inputs())
    c = shape[1]
    mean, var = draw_array(data, (c,)), draw_array(data, (c,), "positive")
    affine = data.draw(st.booleans())
    extra = (draw_array(data, (c,)), draw_array(data, (c,))) if affine else ()
    eps = data.draw(EPS)
    check(lambda x, *wb: F.batch_norm(x, mean, var, *wb, training=False, eps=eps),
          lambda x, *wb: O.batch_norm_eval(x, mean, var, *wb, eps=eps),
          lambda x, *wb: TF.batch_norm(x, torch.from_numpy(mean), torch.from_numpy(var), *wb, training=False, eps=eps),
          draw_array(data, shape), *extra, **NORM_TOL)


@pytest.mark.cpu_only
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (3, 2, 4, 5)])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["arrays", "tensors"])
def test_batch_norm_updates_running_statistics(shape, as_tensor):
    g = np.random.default_rng(0)
    c = shape[1]
    ours_mean, ours_var = np.zeros(c, f32), np.ones(c, f32)
    expected_mean, expected_var = np.zeros(c), np.ones(c)
    running = (tg.Tensor(ours_mean), tg.Tensor(ours_var)) if as_tensor else (ours_mean, ours_var)
    if torch is not None:
        theirs_mean, theirs_var = torch.zeros(c), torch.ones(c)
    for step in range(3):
        x = make_array(g, shape, dtype=f32) * 2 + step
        out = F.batch_norm(tg.tensor(x), *running, training=True, momentum=0.3)
        np.testing.assert_allclose(out.numpy(), O.batch_norm_train(x), rtol=1e-4, atol=1e-5)
        expected_mean, expected_var = O.batch_norm_running(expected_mean, expected_var, x, 0.3)
        if torch is not None:
            expected = TF.batch_norm(torch.from_numpy(x), theirs_mean, theirs_var, training=True, momentum=0.3)
            np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours_mean, expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours_var, expected_var, rtol=1e-5, atol=1e-6)  # unbiased batch variance
    if torch is not None:
        np.testing.assert_allclose(ours_mean, theirs_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours_var, theirs_var.numpy(), rtol=1e-5, atol=1e-6)
    frozen = ours_mean.copy()
    F.batch_norm(tg.tensor(x), *running, training=False)
    np.testing.assert_array_equal(ours_mean, frozen)  # eval mode leaves them alone


@given(data=st.data())
def test_group_norm(data):
    groups, per_group = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    c = groups * per_group
    shape = (data.draw(st.integers(1, 2)), c) + data.draw(shapes(0, 2, max_side=4))
    if per_group * int(np.prod(shape[2:])) < 2:  # one value per group: var 0, no gradient to check
        shape = shape + (2,)
    affine = data.draw(st.booleans())
    extra = (draw_array(data, (c,)), draw_array(data, (c,))) if affine else ()
    eps = data.draw(EPS)
    check(lambda x, *wb: F.group_norm(x, groups, *wb, eps=eps), lambda x, *wb: O.group_norm(x, groups, *wb, eps=eps),
          lambda x, *wb: TF.group_norm(x, groups, *wb, eps=eps), draw_array(data, shape), *extra, **NORM_TOL)


@given(data=st.data())
def test_layer_norm(data):
    shape = data.draw(shapes(1, 4, max_side=4))
    k = data.draw(st.integers(1, len(shape)))
    normalized = shape[len(shape) - k:]
    if int(np.prod(normalized)) < 2:
        shape, normalized = shape + (3,), normalized + (3,)
    affine = data.draw(st.booleans())
    extra = (draw_array(data, normalized), draw_array(data, normalized)) if affine else ()
    eps = data.draw(EPS)
    check(lambda x, *wb: F.layer_norm(x, normalized, *wb, eps=eps), lambda x, *wb: O.layer_norm(x, normalized, *wb, eps=eps),
          lambda x, *wb: TF.layer_norm(x, normalized, *wb, eps=eps), draw_array(data, shape), *extra, **NORM_TOL)


def test_layer_norm_with_an_int_shape():
    x = make_array(np.random.default_rng(0), (3, 5), dtype=f32)
    check(lambda t: F.layer_norm(t, 5), lambda a: O.layer_norm(a, 5), lambda t: TF.layer_norm(t, (5,)), x)


# --- dropout --------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(p):
    tg.manual_seed(0)
    n = 200_000
    x = tg.ones(n, requires_grad=True)
    y = F.dropout(x, p)
    values = y.numpy()
    zeroed = np.mean(values == 0)
    assert abs(zeroed - p) < 5 * np.sqrt(p * (1 - p) / n)  # within 5 standard deviations
    np.testing.assert_allclose(values[values != 0], 1 / (1 - p), rtol=1e-6)  # inverted dropout's scaling
    assert y.dtype == np.float32
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), values)  # the same mask and scale


@given(data=st.data(), p=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), training=st.booleans())
def test_dropout_values(data, p, training):
    """The deterministic part: given which elements survive (nonzero inputs stay nonzero), each
    output is x / (1 - p) or 0, the oracle's; in eval, or with p = 0, the output is x."""
    x = draw_array(data, data.draw(shapes()), "nonzero", draw_dtype(data))
    tg.manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    out = F.dropout(tg.tensor(x), p, training).numpy()
    keep = out != 0
    if not training or p == 0:
        assert keep.all()
    if training and p == 1:
        assert not keep.any()
    keep_p = p if training else 0.0
    np.testing.assert_allclose(out, O.dropout(x, keep_p, keep), rtol=1e-6)
    assert out.dtype == x.dtype


def test_dropout_in_eval_and_edge_probabilities():
    x = tg.randn(4, 5)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert np.all(F.dropout(x, 1.0).numpy() == 0)


def test_dropout_is_reproducible_with_manual_seed():
    x = tg.ones(100)
    tg.manual_seed(7)
    a = F.dropout(x, 0.5).numpy()
    tg.manual_seed(7)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), a)


# --- embedding and pad ----------------------------------------------------------------------


@given(data=st.data())
def test_embedding(data):
    rows, dim = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4))
    idx_shape = data.draw(shapes(0, 2, max_side=4))
    idx = np.asarray(data.draw(arrays(idx_shape, "unit")) * rows, dtype=np.int64)  # repeats are likely
    check(F.embedding, O.embedding, TF and TF.embedding, idx, draw_array(data, (rows, dim), dtype=draw_dtype(data)))


@given(data=st.data())
def test_pad(data):
    shape = data.draw(shapes(1, 4, max_side=3))
    pad = tuple(data.draw(st.lists(st.integers(0, 2), min_size=2, max_size=2 * len(shape)).filter(lambda p: len(p) % 2 == 0)))
    value = data.draw(st.sampled_from([0.0, -1.5]))
    check(lambda t: F.pad(t, pad, value=value), lambda a: O.pad(a, pad, value), lambda t: TF.pad(t, pad, value=value),
          draw_array(data, shape))


# --- losses ---------------------------------------------------------------------------------

REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=st.data())
def test_mse_loss(reduction, data):
    shape = data.draw(shapes())
    check(lambda x, t: F.mse_loss(x, t, reduction=reduction), lambda x, t: O.mse_loss(x, t, reduction),
          lambda x, t: TF.mse_loss(x, t, reduction=reduction), draw_array(data, shape), draw_array(data, shape))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=st.data(), use_weight=st.booleans(), use_pos_weight=st.booleans())
def test_binary_cross_entropy_with_logits(reduction, data, use_weight, use_pos_weight):
    shape = data.draw(shapes(1, 3))
    logits = draw_array(data, shape) * f32(3)
    logits.flat[:: 3] = np.where(logits.flat[:: 3] > 0, 100, -100)  # saturated logits
    weight = draw_array(data, shape[-1:], "positive") if use_weight else None
    pos_weight = draw_array(data, shape[-1:], "positive") if use_pos_weight else None

    def ours(x, t):
        constant = lambda a: None if a is None else tg.Tensor(a)  # noqa: E731
        return F.binary_cross_entropy_with_logits(x, t, constant(weight), reduction, constant(pos_weight))

    def theirs(x, t):
        constant = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
        return TF.binary_cross_entropy_with_logits(x, t, constant(weight), reduction=reduction,
                                                   pos_weight=constant(pos_weight))

    def oracle(x, t):
        return O.binary_cross_entropy_with_logits(x, t, weight, reduction, pos_weight)

    out = check(ours, oracle, theirs, logits, draw_array(data, shape, "unit"))
    assert np.all(np.isfinite(out.numpy()))


def test_binary_cross_entropy_with_huge_logits_is_finite():
    x = tg.tensor(np.array([-100.0, 100.0, -1000.0, 1000.0], dtype=f32), requires_grad=True)
    t = tg.tensor(np.array([1.0, 0.0, 0.0, 1.0], dtype=f32))
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [100.0, 100.0, 0.0, 0.0])
    loss.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [-1.0, 1.0, 0.0, 0.0])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@given(data=st.data(), use_weight=st.booleans())
def test_cross_entropy(reduction, label_smoothing, data, use_weight):
    n, c = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    target = np.asarray(data.draw(arrays((n,), "unit")) * c, dtype=np.int64)
    weight = draw_array(data, (c,), "positive") if use_weight else None
    kw = dict(reduction=reduction, label_smoothing=label_smoothing)

    def ours(x, t):
        return F.cross_entropy(x, t, None if weight is None else tg.Tensor(weight), **kw)

    def theirs(x, t):
        return TF.cross_entropy(x, t, None if weight is None else torch.from_numpy(weight), **kw)

    check(ours, lambda x, t: O.cross_entropy(x, t, weight, **kw), theirs, draw_array(data, (n, c)) * f32(3), target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(data=st.data(), full=st.booleans())
def test_gaussian_nll_loss(reduction, data, full):
    shape = data.draw(shapes(1, 3))
    check(lambda x, t, v: F.gaussian_nll_loss(x, t, v, full=full, reduction=reduction),
          lambda x, t, v: O.gaussian_nll_loss(x, t, v, full, reduction=reduction),
          lambda x, t, v: TF.gaussian_nll_loss(x, t, v, full=full, reduction=reduction),
          draw_array(data, shape), draw_array(data, shape), draw_array(data, shape, "positive"))


def test_gaussian_nll_loss_eps_clamp_passes_the_gradient():
    # var below eps is raised to eps for the value, but its gradient still flows (as in torch)
    var = np.array([0.0, 1e-8, 1e-3, 0.5], dtype=f32)
    x, t = np.array([0.1, -0.2, 0.3, 0.4], dtype=f32), np.zeros(4, dtype=f32)
    for eps in (1e-6, 1e-2):
        check(lambda a, b, v: F.gaussian_nll_loss(a, b, v, eps=eps), lambda a, b, v: O.gaussian_nll_loss(a, b, v, eps=eps),
              lambda a, b, v: TF.gaussian_nll_loss(a, b, v, eps=eps), x, t, var, numeric_grad=False)
    v = tg.tensor(var, requires_grad=True)
    F.gaussian_nll_loss(tg.tensor(x), tg.tensor(t), v, reduction="sum").backward()
    assert np.all(v.grad.numpy() != 0)


# --- error paths ----------------------------------------------------------------------------


def z(*shape, dtype=f32):
    return tg.Tensor(np.zeros(shape, dtype=dtype))


def i64(*shape):
    return tg.Tensor(np.zeros(shape, dtype=np.int64))


# (id, call, error type, message pattern)
ERRORS = [
    ("linear-in-features", lambda: F.linear(z(2, 3), z(4, 5)), ShapeError, r"\(2, 3\).*\(4, 5\).*5"),
    ("linear-weight-ndim", lambda: F.linear(z(2, 3), z(3)), ShapeError, r"weight must have 2 dimensions.*\(3,\)"),
    ("linear-int-input", lambda: F.linear(i64(2, 3), z(4, 3)), DTypeError, "input must be float32 or float64.*int64"),
    ("linear-bias", lambda: F.linear(z(2, 3), z(4, 3), z(3)), ShapeError, r"bias has shape \(3,\), expected \(4,\)"),
    ("conv2d-ndim", lambda: F.conv2d(z(1, 3, 5), z(2, 3, 3, 3)), ShapeError, r"input must have 4 dimensions.*\(1, 3, 5\)"),
    ("conv2d-weight-ndim", lambda: F.conv2d(z(1, 3, 5, 5), z(2, 3, 3)), ShapeError, r"weight must have 4 dimensions"),
    ("conv2d-channels", lambda: F.conv2d(z(1, 3, 5, 5), z(2, 4, 3, 3)), ShapeError, r"3 channels.*expects 4"),
    ("conv2d-int-input", lambda: F.conv2d(i64(1, 3, 5, 5), z(2, 3, 3, 3)), DTypeError, "int64"),
    ("conv2d-mixed-dtypes", lambda: F.conv2d(z(1, 3, 5, 5), z(2, 3, 3, 3, dtype=np.float64)), DTypeError,
     "float32.*float64"),
    ("conv2d-stride-0", lambda: F.conv2d(z(1, 3, 5, 5), z(2, 3, 3, 3), stride=0), ArgumentError, r"stride must be >= 1, got 0"),
    ("conv2d-negative-padding", lambda: F.conv2d(z(1, 3, 5, 5), z(2, 3, 3, 3), padding=(1, -1)), ArgumentError,
     r"padding must be >= 0, got \(1, -1\)"),
    ("conv2d-dilation-0", lambda: F.conv2d(z(1, 3, 5, 5), z(2, 3, 3, 3), dilation=0), ArgumentError, "dilation must be >= 1"),
    ("conv2d-stride-triple", lambda: F.conv2d(z(1, 3, 5, 5), z(2, 3, 3, 3), stride=(1, 1, 1)), ArgumentError, "pair of ints"),
    ("conv2d-float-stride", lambda: F.conv2d(z(1, 3, 5, 5), z(2, 3, 3, 3), stride=1.5), ArgumentError, "pair of ints"),
    ("conv2d-kernel-too-large", lambda: F.conv2d(z(1, 1, 4, 4), z(1, 1, 7, 7), padding=1), ShapeError,
     r"input of size \(4, 4\) with kernel \(7, 7\).*padding \(1, 1\).*output size \(0, 0\)"),
    ("conv2d-dilated-kernel-too-large", lambda: F.conv2d(z(1, 1, 5, 9), z(1, 1, 3, 3), dilation=3), ShapeError,
     r"\(5, 9\).*dilation \(3, 3\).*\(-1, 3\)"),
    ("conv2d-groups", lambda: F.conv2d(z(1, 4, 5, 5), z(2, 2, 3, 3), groups=2), ArgumentError, "groups=2"),
    ("conv2d-bias-shape", lambda: F.conv2d(z(1, 3, 5, 5), z(2, 3, 3, 3), z(3)), ShapeError, r"bias.*\(3,\).*\(2,\)"),
    ("conv_transpose2d-channels", lambda: F.conv_transpose2d(z(1, 3, 4, 4), z(2, 1, 3, 3)), ShapeError, r"3 channels.*expects 2"),
    ("conv_transpose2d-output-padding", lambda: F.conv_transpose2d(z(1, 2, 3, 3), z(2, 1, 3, 3), stride=2, output_padding=2),
     ArgumentError, r"output_padding \(2, 2\) must be smaller than stride \(2, 2\) or dilation \(1, 1\)"),
    ("conv_transpose2d-negative-output-padding", lambda: F.conv_transpose2d(z(1, 2, 3, 3), z(2, 1, 3, 3), output_padding=-1),
     ArgumentError, "output_padding must be >= 0"),
    ("conv_transpose2d-output-too-small", lambda: F.conv_transpose2d(z(1, 2, 1, 1), z(2, 1, 1, 1), padding=1), ShapeError,
     r"\(1, 1\).*output size \(-1, -1\)"),
    ("conv_transpose2d-groups", lambda: F.conv_transpose2d(z(1, 2, 3, 3), z(2, 1, 3, 3), groups=2), ArgumentError, "groups"),
    ("conv_transpose2d-bias", lambda: F.conv_transpose2d(z(1, 2, 3, 3), z(2, 1, 3, 3), z(2)), ShapeError, r"\(2,\).*\(1,\)"),
    ("unfold-ndim", lambda: F.unfold(z(3, 5, 5), 2), ShapeError, "4 dimensions"),
    ("unfold-kernel-too-large", lambda: F.unfold(z(1, 1, 3, 3), 4), ShapeError, r"unfold.*\(3, 3\).*kernel \(4, 4\)"),
    ("unfold-stride-0", lambda: F.unfold(z(1, 1, 3, 3), 2, stride=0), ArgumentError, "stride"),
    ("avg_pool2d-ndim", lambda: F.avg_pool2d(z(4, 4), 2), ShapeError, r"4 dimensions.*\(4, 4\)"),
    ("avg_pool2d-padding", lambda: F.avg_pool2d(z(1, 1, 4, 4), 2, padding=2), ArgumentError,
     r"padding \(2, 2\) must be at most half of kernel_size \(2, 2\)"),
    ("avg_pool2d-kernel-too-large", lambda: F.avg_pool2d(z(1, 1, 2, 5), 3), ShapeError, r"avg_pool2d.*\(2, 5\).*\(0, 1\)"),
    ("avg_pool2d-stride-0", lambda: F.avg_pool2d(z(1, 1, 4, 4), 2, stride=0), ArgumentError, "stride"),
    ("max_pool2d-int", lambda: F.max_pool2d(i64(1, 1, 4, 4), 2), DTypeError, "int64"),
    ("max_pool2d-kernel-too-large", lambda: F.max_pool2d(z(1, 1, 4, 4), 3, dilation=2), ShapeError, r"max_pool2d.*\(4, 4\)"),
    ("max_pool2d-kernel-0", lambda: F.max_pool2d(z(1, 1, 4, 4), 0), ArgumentError, "kernel_size must be >= 1"),
    ("interpolate-mode", lambda: F.interpolate(z(1, 1, 2, 2), scale_factor=2, mode="bilinear"), ArgumentError, "'bilinear'"),
    ("interpolate-both", lambda: F.interpolate(z(1, 1, 2, 2), size=4, scale_factor=2), ArgumentError, "exactly one"),
    ("interpolate-neither", lambda: F.interpolate(z(1, 1, 2, 2)), ArgumentError, "exactly one"),
    ("interpolate-scale", lambda: F.interpolate(z(1, 1, 2, 2), scale_factor=-1), ArgumentError, "positive, got -1"),
    ("interpolate-no-output", lambda: F.interpolate(z(1, 1, 1, 3), scale_factor=0.5), ShapeError,
     r"\(1, 3\).*0.5.*output size \(0, 1\)"),
    ("interpolate-size-0", lambda: F.interpolate(z(1, 1, 2, 2), size=(0, 2)), ArgumentError, "size must be >= 1"),
    ("interpolate-ndim", lambda: F.interpolate(z(1, 2, 2), size=4), ShapeError, "4 dimensions"),
    ("batch_norm-ndim", lambda: F.batch_norm(z(5), None, None, training=True), ShapeError, r"dimensions.*\(5,\)"),
    ("batch_norm-eval-without-stats", lambda: F.batch_norm(z(2, 3), None, None), ArgumentError, "running_mean"),
    ("batch_norm-one-value", lambda: F.batch_norm(z(1, 3), None, None, training=True), ShapeError,
     r"more than one value per channel.*\(1, 3\)"),
    ("batch_norm-running-mean-size", lambda: F.batch_norm(z(4, 3), np.zeros(2, f32), np.ones(2, f32), training=True),
     ShapeError, r"running_mean.*\(2,\).*3 channels"),
    ("batch_norm-weight-size", lambda: F.batch_norm(z(4, 3), None, None, z(4), training=True), ShapeError,
     r"weight.*\(4,\).*3 channels"),
    ("batch_norm-int", lambda: F.batch_norm(i64(4, 3), None, None, training=True), DTypeError, "int64"),
    ("group_norm-groups", lambda: F.group_norm(z(2, 6, 3), 4), ArgumentError, "num_groups=4 must divide the 6 channels"),
    ("group_norm-zero-groups", lambda: F.group_norm(z(2, 6, 3), 0), ArgumentError, "num_groups=0"),
    ("group_norm-ndim", lambda: F.group_norm(z(6), 2), ShapeError, "dimensions"),
    ("group_norm-weight", lambda: F.group_norm(z(2, 4, 3), 2, z(3)), ShapeError,
     r"group_norm: weight has shape \(3,\), expected \(4,\) for the 4 channels"),
    ("group_norm-bias", lambda: F.group_norm(z(2, 4, 3), 2, None, z(4, 1)), ShapeError, r"group_norm: bias has shape \(4, 1\)"),
    ("layer_norm-shape", lambda: F.layer_norm(z(2, 3, 4), (3,)), ShapeError, r"\(3,\).*\(2, 3, 4\)"),
    ("layer_norm-int", lambda: F.layer_norm(i64(2, 3), 3), DTypeError, "int64"),
    ("dropout-p", lambda: F.dropout(z(3), 1.5), ArgumentError, r"\[0, 1\], got 1.5"),
    ("dropout-negative-p", lambda: F.dropout(z(3), -0.1), ArgumentError, "got -0.1"),
    ("embedding-out-of-range", lambda: F.embedding(tg.tensor([0, 5]), z(5, 2)), ArgumentError,
     r"out of range.*\[0, 5\].*5 rows"),
    ("embedding-negative", lambda: F.embedding(tg.tensor([-1, 2]), z(5, 2)), ArgumentError, "out of range"),
    ("embedding-float-indices", lambda: F.embedding(tg.tensor([0.0, 1.0]), z(5, 2)), DTypeError, "integers.*float32"),
    ("pad-odd", lambda: F.pad(z(2, 2), (1,)), ArgumentError, r"pairs.*\(1,\)"),
    ("pad-float", lambda: F.pad(z(2, 2), (1.7, 0)), ArgumentError, r"integers, got \(1.7, 0\)"),
    ("pad-negative", lambda: F.pad(z(2, 2), (1, -1)), ArgumentError, "non-negative"),
    ("pad-too-many", lambda: F.pad(z(2), (1, 1, 1, 1)), ArgumentError, "at most 1 dims"),
    ("pad-mode", lambda: F.pad(z(2, 2), (1, 1), mode="reflect"), ArgumentError, "'reflect'"),
    ("mse-reduction", lambda: F.mse_loss(z(3), z(3), reduction="avg"), ArgumentError, "'mean', 'sum' or 'none', got 'avg'"),
    ("mse-shape", lambda: F.mse_loss(z(3), z(4)), ShapeError, r"mse_loss.*\(3,\).*\(4,\)"),
    ("bce-shape", lambda: F.binary_cross_entropy_with_logits(z(3), z(3, 1)), ShapeError, r"\(3,\).*\(3, 1\)"),
    ("bce-reduction", lambda: F.binary_cross_entropy_with_logits(z(3), z(3), reduction="max"), ArgumentError, "'max'"),
    ("cross_entropy-float-target", lambda: F.cross_entropy(z(2, 3), z(2)), DTypeError, "integer class indices.*float32"),
    ("cross_entropy-class-range", lambda: F.cross_entropy(z(2, 3), tg.tensor([0, 3])), ArgumentError, r"\[0, 2\].*\[0, 3\]"),
    ("cross_entropy-negative-class", lambda: F.cross_entropy(z(2, 3), tg.tensor([-1, 0])), ArgumentError, r"\[-1, 0\]"),
    ("cross_entropy-target-shape", lambda: F.cross_entropy(z(2, 3), tg.tensor([0, 1, 2])), ShapeError, r"\(3,\).*\(2,\)"),
    ("cross_entropy-input-ndim", lambda: F.cross_entropy(z(2, 3, 4), tg.tensor([0, 1])), ShapeError, "2 dimensions"),
    ("cross_entropy-smoothing", lambda: F.cross_entropy(z(2, 3), tg.tensor([0, 1]), label_smoothing=1.5), ArgumentError,
     "label_smoothing"),
    ("cross_entropy-reduction", lambda: F.cross_entropy(z(2, 3), tg.tensor([0, 1]), reduction="avg"), ArgumentError, "'avg'"),
    ("cross_entropy-weighted-reduction", lambda: F.cross_entropy(z(2, 3), tg.tensor([0, 1]), z(3), reduction="avg"),
     ArgumentError, "'avg'"),
    ("gaussian-negative-var", lambda: F.gaussian_nll_loss(z(2), z(2), tg.tensor([1.0, -1.0])), ArgumentError, "negative"),
    ("gaussian-shape", lambda: F.gaussian_nll_loss(z(2), z(3), z(2)), ShapeError, r"\(2,\).*\(3,\)"),
    ("gaussian-reduction", lambda: F.gaussian_nll_loss(z(2), z(2), z(2) + 1, reduction="x"), ArgumentError, "'x'"),
    ("softmax-dim", lambda: F.softmax(z(2, 3), 2), ArgumentError, "dim 2 is out of range"),
    ("conv2d-not-a-tensor", lambda: F.conv2d(np.zeros((1, 1, 3, 3)), z(1, 1, 1, 1)), TypeError, "tinygen Tensor"),
]


@pytest.mark.parametrize("call, error, match", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_arguments_raise_the_documented_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_error_types_are_also_builtin_errors():
    assert issubclass(ShapeError, ValueError) and issubclass(ArgumentError, ValueError)
    assert issubclass(DTypeError, TypeError)


def test_batch_norm_shape_errors_leave_running_statistics_alone():
    mean = np.zeros(2, f32)
    with pytest.raises(ShapeError):
        F.batch_norm(z(4, 3), mean, np.ones(2, f32), training=True)
    np.testing.assert_array_equal(mean, 0)
