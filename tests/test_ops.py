"""Every primitive in tinygen/ops.py, and the composites on Tensor, against their oracles.

Each op is checked by `check_op`: shape and dtype, values against NumPy, gradients by a float64
directional gradient check, and values and gradients against PyTorch when it is installed.
Shapes are drawn by hypothesis (broadcast pairs, size-1 and odd sides); values stay away from the
kinks, whose conventions are tested separately and explicitly.
"""

import operator

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tinygen as tg
from tinygen import ops
from tinygen.kernels.conv2d import conv_output_size
from tinygen.tensor import apply, unbroadcast

from helpers import check_op, gradcheck, requires_torch, torch
from strategies import (
    arrays,
    broadcastable_shapes,
    conv_grid,
    conv_id,
    conv_params,
    make_array,
    matmul_shapes,
    reduction_dims,
    shapes,
)

TF = None if torch is None else torch.nn.functional

# Every test here runs on the CPU and, where a GPU is visible, again on it (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("device")


def rng(seed=0):
    return np.random.default_rng(seed)


# --- binary ---------------------------------------------------------------------------------

# name: (operator, NumPy oracle, kind of a, kind of b)
BINARY = {
    "add": (operator.add, np.add, "normal", "normal"),
    "sub": (operator.sub, np.subtract, "normal", "normal"),
    "mul": (operator.mul, np.multiply, "normal", "normal"),
    "div": (operator.truediv, np.divide, "normal", "nonzero"),
    "pow": (operator.pow, np.power, "positive", "normal"),  # tensor exponent, positive base
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_ops_broadcast(name, data):
    fn, np_fn, kind_a, kind_b = BINARY[name]
    (shape_a, shape_b), _ = data.draw(broadcastable_shapes(2))
    a, b = data.draw(arrays(shape_a, kind_a)), data.draw(arrays(shape_b, kind_b))
    check_op(fn, fn, a, b, np_fn=np_fn)


@pytest.mark.parametrize(
    "fn",
    [lambda x: x**2, lambda x: x**3.0, lambda x: x**0.5, lambda x: x**-1.5, lambda x: 2.0**x, lambda x: 1.5 / x],
    ids=["square", "cube", "sqrt", "negative-power", "rpow", "rdiv"],
)
def test_pow_and_div_with_constants(fn):
    check_op(fn, fn, make_array(rng(), (3, 4), "positive"), np_fn=fn)


def test_pow_gradients_at_zero_are_the_limits_as_in_torch():
    """NOTE: d(a^b)/da = 0 where b = 0 and d(a^b)/db = 0 where a = 0, b >= 0 (the formulas give nan)."""
    a = tg.tensor(np.array([0.0, 0.0, 2.0]), requires_grad=True)
    b = tg.tensor(np.array([0.0, 2.0, 0.0]), requires_grad=True)
    (a**b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 0.0, 0.0])  # b * a^(b-1): 0 * 0^-1, 2 * 0, 0 * 2^-1
    np.testing.assert_array_equal(b.grad.numpy(), [0.0, 0.0, np.log(2.0)])
    x = tg.tensor(np.array([0.0, 3.0]), requires_grad=True)
    (x**0.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0])
    torch = pytest.importorskip("torch")
    ta, tb = (torch.tensor(v.numpy(), requires_grad=True) for v in (a, b))
    (ta**tb).sum().backward()
    np.testing.assert_array_equal(ta.grad.numpy(), a.grad.numpy())
    np.testing.assert_array_equal(tb.grad.numpy(), b.grad.numpy())


@given(data=st.data())
def test_matmul(data):
    shape_a, shape_b = data.draw(matmul_shapes())
    a, b = data.draw(arrays(shape_a)), data.draw(arrays(shape_b))
    check_op(operator.matmul, operator.matmul, a, b, np_fn=np.matmul)


# --- unary ----------------------------------------------------------------------------------

# name: (function of a tinygen or torch tensor, NumPy oracle, kind of input)
UNARY = {
    "neg": (operator.neg, np.negative, "normal"),
    "exp": (lambda x: x.exp(), np.exp, "normal"),
    "log": (lambda x: x.log(), np.log, "positive"),
    "log1p": (lambda x: x.log1p(), np.log1p, "positive"),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, "positive"),
    "abs": (lambda x: x.abs(), np.abs, "nonzero"),
    "relu": (lambda x: x.relu(), lambda a: np.maximum(a, 0), "nonzero"),
    "sigmoid": (lambda x: x.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), "normal"),
    "tanh": (lambda x: x.tanh(), np.tanh, "normal"),
    "clamp": (lambda x: x.clamp(-0.5, 1.0), lambda a: np.clip(a, -0.5, 1.0), "nonzero"),
    "clamp-min": (lambda x: x.clamp(min=0.5), lambda a: np.maximum(a, 0.5), "nonzero"),
    "clamp-max": (lambda x: x.clamp(max=-0.5), lambda a: np.minimum(a, -0.5), "nonzero"),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_ops(name, data):
    fn, np_fn, kind = UNARY[name]
    x = data.draw(arrays(data.draw(shapes()), kind))
    check_op(fn, fn, x, np_fn=np_fn)


def test_log1p_near_minus_one():
    check_op(lambda x: x.log1p(), lambda x: x.log1p(), np.array([-0.9, -0.5, 1e-9, 2.0]), np_fn=np.log1p)


def test_sigmoid_tails_do_not_overflow():
    x = tg.tensor(np.array([-800.0, -40.0, 0.0, 40.0, 800.0]), requires_grad=True)
    y = x.sigmoid()
    y.sum().backward()
    assert np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(x.grad.numpy()))
    np.testing.assert_allclose(y.numpy(), [0.0, 4.248354255291589e-18, 0.5, 1.0, 1.0], rtol=1e-12)


@pytest.mark.parametrize("src, dst", [(np.float32, np.float64), (np.float64, np.float32)])
def test_cast_gradient_has_the_input_dtype(src, dst):
    x = tg.tensor(np.array([1.5, -2.0, 3.25], dtype=src), requires_grad=True)
    y = x.to(dst)
    assert y.dtype == dst and y.requires_grad
    (y * tg.tensor(np.array([1.0, 2.0, 3.0], dtype=dst))).sum().backward()
    assert x.grad.dtype == src
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0, 3.0])


def test_cast_in_a_float64_chain():
    gradcheck(lambda x: x.to(np.float32).to(np.float64) * x, make_array(rng(), (2, 3)), eps=1e-3, rtol=1e-3)


def test_cast_to_integer_leaves_the_graph():
    x = tg.tensor([1.7, -2.2], requires_grad=True)
    y = x.long()
    assert y.dtype == np.int64 and not y.requires_grad
    assert y.tolist() == [1, -2]


# --- reductions -----------------------------------------------------------------------------


def _torch_dim(dim, ndim):
    return tuple(range(ndim)) if dim is None else dim


@given(data=st.data())
def test_sum_dim_keepdim_sweep(data):
    shape = data.draw(shapes())
    dim, keepdim = data.draw(reduction_dims(len(shape))), data.draw(st.booleans())
    check_op(
        lambda x: x.sum(dim, keepdim=keepdim),
        lambda x: x.sum(_torch_dim(dim, x.ndim), keepdim=keepdim),
        data.draw(arrays(shape)),
        np_fn=lambda a: np.sum(a, axis=dim, keepdims=keepdim),
    )


@given(data=st.data())
def test_max_dim_keepdim_sweep(data):
    shape = data.draw(shapes())
    dim, keepdim = data.draw(reduction_dims(len(shape))), data.draw(st.booleans())
    check_op(
        lambda x: apply(ops.Max, x, axis=_axes(dim, x.ndim), keepdim=keepdim),
        lambda x: torch.amax(x, _torch_dim(dim, x.ndim), keepdim=keepdim),
        data.draw(arrays(shape, "distinct")),
        np_fn=lambda a: np.max(a, axis=dim, keepdims=keepdim),
    )


def _axes(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    return tuple(d % ndim for d in ((dim,) if isinstance(dim, int) else dim))


# --- movement -------------------------------------------------------------------------------


@given(data=st.data())
def test_reshape(data):
    shape = data.draw(shapes())
    size = int(np.prod(shape))
    target = data.draw(st.sampled_from([(-1,), shape[::-1], (1,) + shape + (1,), (size, 1), (1, -1)]))
    check_op(lambda x: x.reshape(target), lambda x: x.reshape(target), data.draw(arrays(shape)),
             np_fn=lambda a: a.reshape(target))


@given(data=st.data())
def test_permute(data):
    shape = data.draw(shapes())
    order = tuple(data.draw(st.permutations(range(len(shape)))))
    check_op(lambda x: x.permute(order), lambda x: x.permute(order), data.draw(arrays(shape)),
             np_fn=lambda a: a.transpose(order))


@given(data=st.data())
def test_expand(data):
    shape = data.draw(shapes(max_side=3))
    target = tuple(data.draw(st.integers(1, 3)) if n == 1 else n for n in shape)
    target = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2))) + target
    check_op(lambda x: x.expand(target), lambda x: x.expand(target), data.draw(arrays(shape)),
             np_fn=lambda a: np.broadcast_to(a, target))


@given(data=st.data())
def test_getitem_basic(data):
    shape = data.draw(shapes(min_dims=1))
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    # torch rejects negative slice steps, so NumPy is the value oracle here
    check_op(lambda x: x[index], None, data.draw(arrays(shape)), np_fn=lambda a: a[index])


@given(data=st.data())
def test_getitem_integer_array_repeats_accumulate(data):
    shape = data.draw(shapes(min_dims=1))
    idx = np.asarray(data.draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=1, max_size=6)))
    check_op(lambda x, i: x[i], lambda x, i: x[i], data.draw(arrays(shape)), idx, np_fn=lambda a, i: a[i])


@given(data=st.data())
def test_getitem_mixed_advanced(data):
    shape = data.draw(shapes(min_dims=2))
    rows = data.draw(arrays((3,), "normal")).argsort() % shape[0]
    cols = np.arange(shape[-1])[::-1] % shape[-1]
    fn = lambda x: x[rows[:, None], ..., cols[None, :]]  # noqa: E731
    check_op(fn, None, data.draw(arrays(shape)), np_fn=fn)


@given(data=st.data())
def test_getitem_boolean_mask(data):
    shape = data.draw(shapes(min_dims=1))
    mask = data.draw(arrays(shape)) > 0
    check_op(lambda x, m: x[m], lambda x, m: x[m], data.draw(arrays(shape)), mask, np_fn=lambda a, m: a[m])


@given(data=st.data())
def test_pad(data):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    widths = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in shape)
    flat = [w for pair in reversed(widths) for w in pair]  # torch: last dim first
    check_op(
        lambda x: apply(ops.Pad, x, widths=widths, value=0.5),
        lambda x: TF.pad(x, flat, value=0.5),
        data.draw(arrays(shape)),
        np_fn=lambda a: np.pad(a, widths, constant_values=0.5),
    )


@given(data=st.data())
def test_cat(data):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    parts = []
    for n in sizes:
        part_shape = list(shape)
        part_shape[axis] = n
        parts.append(data.draw(arrays(tuple(part_shape))))
    check_op(lambda *ts: tg.cat(ts, axis), lambda *ts: torch.cat(ts, axis), *parts,
             np_fn=lambda *a: np.concatenate(a, axis))


# --- convolution ----------------------------------------------------------------------------


def _conv_arrays(p, transposed, seed=0):
    g = rng(seed)
    x = g.standard_normal((p["N"], p["Cin"], p["H"], p["W"]))
    w_shape = (p["Cin"], p["Cout"]) if transposed else (p["Cout"], p["Cin"])
    return x, g.standard_normal(w_shape + p["kernel"])


def check_unfold(p):
    x, _ = _conv_arrays(p, False)
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"])
    n, c = x.shape[:2]
    check_op(
        lambda t: apply(ops.Unfold, t, kernel_size=p["kernel"], **kw),
        lambda t: TF.unfold(t, p["kernel"], **kw).reshape(n, c, *p["kernel"], *_conv_out(p)),
        x,
    )


def check_conv2d(p):
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"])
    check_op(lambda x, w: apply(ops.Conv2d, x, w, **kw), lambda x, w: TF.conv2d(x, w, **kw), *_conv_arrays(p, False))


def check_conv_transpose2d(p):
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"], output_padding=p["output_padding"])
    check_op(
        lambda x, w: apply(ops.ConvTranspose2d, x, w, **kw),
        lambda x, w: TF.conv_transpose2d(x, w, **kw),
        *_conv_arrays(p, True),
    )


def _conv_out(p):
    return tuple(
        conv_output_size(n, k, s, pad, d)
        for n, k, s, pad, d in zip((p["H"], p["W"]), p["kernel"], p["stride"], p["padding"], p["dilation"])
    )


@pytest.mark.parametrize("p", conv_grid(), ids=conv_id)
def test_unfold_grid(p):
    check_unfold(p)


@pytest.mark.parametrize("p", conv_grid(), ids=conv_id)
def test_conv2d_grid(p):
    check_conv2d(p)


@pytest.mark.parametrize("p", conv_grid(transposed=True), ids=conv_id)
def test_conv_transpose2d_grid(p):
    check_conv_transpose2d(p)


@settings(max_examples=30)
@given(p=conv_params())
def test_unfold_drawn(p):
    check_unfold(p)


@settings(max_examples=30)
@given(p=conv_params())
def test_conv2d_drawn(p):
    check_conv2d(p)


@settings(max_examples=30)
@given(p=conv_params(transposed=True))
def test_conv_transpose2d_drawn(p):
    check_conv_transpose2d(p)


# --- the conventions at the kinks (NOTE in tinygen/ops.py) ------------------------------------


def _grad(fn, values):
    x = tg.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)
    fn(x).sum().backward()
    return x.grad.tolist()


def test_relu_derivative_at_zero_is_zero():
    assert _grad(lambda x: x.relu(), [-1.0, 0.0, 2.0]) == [0.0, 0.0, 1.0]


def test_abs_derivative_at_zero_is_zero():
    assert _grad(lambda x: x.abs(), [-1.0, 0.0, 2.0]) == [-1.0, 0.0, 1.0]


def test_clamp_boundaries_pass_the_gradient():
    assert _grad(lambda x: x.clamp(-0.5, 0.5), [-1.0, -0.5, 0.0, 0.5, 1.0]) == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert _grad(lambda x: x.clamp(min=0.0), [-1.0, 0.0, 1.0]) == [0.0, 1.0, 1.0]
    assert _grad(lambda x: x.clamp(max=0.0), [-1.0, 0.0, 1.0]) == [1.0, 1.0, 0.0]


def test_max_ties_split_the_gradient_equally():
    assert _grad(lambda x: x.amax(), [1.0, 3.0, 3.0, 2.0, 3.0]) == pytest.approx([0, 1 / 3, 1 / 3, 0, 1 / 3])
    assert _grad(lambda x: x.amax(1), [[1.0, 1.0], [2.0, 0.0]]) == [[0.5, 0.5], [1.0, 0.0]]
    assert _grad(lambda x: x.amax(0, keepdim=True), [[1.0, 5.0], [1.0, 0.0]]) == [[0.5, 1.0], [0.5, 0.0]]
    assert _grad(lambda x: x.amin(), [2.0, 1.0, 1.0]) == [0.0, 0.5, 0.5]


@requires_torch
def test_max_ties_match_torch_amax():
    values = np.array([[1.0, 4.0, 4.0], [2.0, 2.0, 2.0]])
    check_op(lambda x: x.amax(1), lambda x: torch.amax(x, 1), values, numeric_grad=False)


# --- unbroadcast ----------------------------------------------------------------------------


@given(data=st.data())
def test_unbroadcast_is_the_adjoint_of_broadcasting(data):
    input_shapes, result_shape = data.draw(broadcastable_shapes(2))
    grad = data.draw(arrays(result_shape))
    for shape in input_shapes:
        x = data.draw(arrays(shape))
        reduced = unbroadcast(grad, shape)
        assert reduced.shape == shape
        # <broadcast(x), grad> = <x, unbroadcast(grad)> for every x: the defining identity
        np.testing.assert_allclose(np.sum(np.broadcast_to(x, result_shape) * grad), np.sum(x * reduced), atol=1e-12)


# --- composites on Tensor -------------------------------------------------------------------


@given(data=st.data())
def test_mean(data):
    shape = data.draw(shapes())
    dim, keepdim = data.draw(reduction_dims(len(shape))), data.draw(st.booleans())
    check_op(
        lambda x: x.mean(dim, keepdim=keepdim),
        lambda x: x.mean(_torch_dim(dim, x.ndim), keepdim=keepdim),
        data.draw(arrays(shape)),
        np_fn=lambda a: np.mean(a, axis=dim, keepdims=keepdim),
    )


@given(data=st.data())
def test_var_and_std_with_correction(data):
    shape = data.draw(shapes(min_dims=1))
    dim, keepdim = data.draw(reduction_dims(len(shape))), data.draw(st.booleans())
    correction = data.draw(st.sampled_from([0, 1, 2]))
    count = int(np.prod([shape[a] for a in _axes(dim, len(shape))]))
    x = data.draw(arrays(shape))
    kw = dict(keepdim=keepdim, correction=correction)
    if count > correction:
        check_op(lambda t: t.var(dim, **kw), lambda t: t.var(_torch_dim(dim, t.ndim), **kw), x,
                 np_fn=lambda a: np.var(a, axis=dim, keepdims=keepdim, ddof=correction))
    if count > max(correction, 1):  # std'(0) is infinite: one value per reduction has var 0
        check_op(lambda t: t.std(dim, **kw), lambda t: t.std(_torch_dim(dim, t.ndim), **kw), x,
                 np_fn=lambda a: np.std(a, axis=dim, keepdims=keepdim, ddof=correction))


@pytest.mark.parametrize("reduce", ["amax", "amin"])
@given(data=st.data())
def test_amax_amin(reduce, data):
    shape = data.draw(shapes())
    dim, keepdim = data.draw(reduction_dims(len(shape))), data.draw(st.booleans())
    check_op(
        lambda x: getattr(x, reduce)(dim, keepdim=keepdim),
        lambda x: getattr(torch, reduce)(x, _torch_dim(dim, x.ndim), keepdim=keepdim),
        data.draw(arrays(shape, "distinct")),
        np_fn=lambda a: getattr(np, reduce)(a, axis=dim, keepdims=keepdim),
    )


@pytest.mark.parametrize("reduce", ["max", "min"])
@given(data=st.data())
def test_max_min_with_dim_give_values_and_indices(reduce, data):
    shape = data.draw(shapes(min_dims=1))
    dim, keepdim = data.draw(st.integers(-len(shape), len(shape) - 1)), data.draw(st.booleans())
    x = data.draw(arrays(shape, "distinct"))
    check_op(lambda t: getattr(t, reduce)(dim, keepdim).values, lambda t: getattr(t, reduce)(dim, keepdim).values, x,
             np_fn=lambda a: getattr(np, reduce)(a, axis=dim, keepdims=keepdim))
    check_op(lambda t: getattr(t, reduce)(dim, keepdim).indices, lambda t: getattr(t, reduce)(dim, keepdim).indices, x,
             np_fn=lambda a: getattr(np, "arg" + reduce)(a, axis=dim, keepdims=keepdim), grad=False)


@pytest.mark.parametrize("reduce", ["max", "min"])
def test_max_min_without_dim_is_the_extreme_element(reduce):
    x = tg.tensor([[3.0, -1.0], [7.0, 2.0]])
    assert getattr(x, reduce)().item() == (7.0 if reduce == "max" else -1.0)


@pytest.mark.parametrize("name", ["logsumexp", "log_softmax", "softmax"])
@given(data=st.data())
def test_softmax_family(name, data):
    shape = data.draw(shapes(min_dims=1))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    kw = dict(keepdim=data.draw(st.booleans())) if name == "logsumexp" else {}
    check_op(lambda x: getattr(x, name)(dim, **kw), lambda x: getattr(x, name)(dim, **kw), data.draw(arrays(shape)))


@pytest.mark.parametrize("name", ["logsumexp", "log_softmax", "softmax"])
def test_softmax_family_is_stable_with_huge_inputs(name):
    x = np.array([[1000.0, 999.0, -1000.0], [-1000.0, -1001.0, -1000.5]])
    out = check_op(lambda t: getattr(t, name)(1), lambda t: getattr(t, name)(1), x)
    assert np.all(np.isfinite(out.numpy()))
    if name == "logsumexp":
        np.testing.assert_allclose(out.numpy(), [1000 + np.log1p(np.exp(-1.0)), -1000 + np.log(1 + np.exp(-1) + np.exp(-0.5))],
                                   rtol=1e-15)
