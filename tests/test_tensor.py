"""The Tensor API: creation and dtypes, backward and gradient accumulation, the graph's lifetime,
grad modes, conversions, shapes, indexing, joining, comparisons and operators with constants."""

import threading
import warnings

import numpy as np
import pytest

import tinygen as tg
from tinygen import ArgumentError, DTypeError, ShapeError

from helpers import check_op, gradcheck, requires_torch, torch

# Every test here runs on the CPU and, where a GPU is visible, again on it (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("device")


# --- creation and dtypes --------------------------------------------------------------------


def test_python_floats_become_float32():
    assert tg.tensor([1.0, 2.0]).dtype == np.float32
    assert tg.tensor(3.5).dtype == np.float32
    assert tg.Tensor([[1.0]]).dtype == np.float32


def test_python_ints_become_int64_and_bools_bool():
    assert tg.tensor([1, 2, 3]).dtype == np.int64
    assert tg.tensor([True, False]).dtype == np.bool_


def test_numpy_arrays_keep_their_dtype():
    assert tg.tensor(np.zeros(3)).dtype == np.float64
    assert tg.tensor(np.zeros(3, dtype=np.float32)).dtype == np.float32
    assert tg.tensor(np.zeros(3, dtype=np.int32)).dtype == np.int32


def test_explicit_dtype_wins():
    assert tg.tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert tg.tensor([1.0], dtype=tg.float64).dtype == np.float64


@pytest.mark.cpu_only
def test_tensor_copies_but_Tensor_shares():
    a = np.zeros(3)
    tg.tensor(a).data[0] = 1.0
    assert a[0] == 0.0
    tg.Tensor(a).data[1] = 1.0
    assert a[1] == 1.0


def test_unsupported_data_raises_dtype_error():
    with pytest.raises(DTypeError, match="bool, integer or float"):
        tg.tensor(["a", "b"])


@pytest.mark.parametrize("make", [tg.zeros, tg.ones, tg.randn, tg.rand])
def test_creation_functions(make):
    t = make(2, 3)
    assert t.shape == (2, 3) and t.dtype == np.float32 and not t.requires_grad
    assert make((2, 3)).shape == (2, 3)
    assert make(4, dtype=np.float64).dtype == np.float64
    assert make(2, requires_grad=True).requires_grad


def test_creation_values():
    assert tg.zeros(2).tolist() == [0.0, 0.0]
    assert tg.ones(1, 2).tolist() == [[1.0, 1.0]]
    assert tg.full((2,), 7.0).tolist() == [7.0, 7.0]
    assert [tg.full(2, v).dtype for v in (7.0, 7, True)] == [np.float32, np.int64, np.bool_]  # torch's
    assert tg.full(2, 7, dtype="float64").dtype == np.float64
    assert tg.full(3, 1.5).shape == (3,)
    assert tg.arange(4).tolist() == [0, 1, 2, 3] and tg.arange(4).dtype == np.int64
    assert tg.arange(1, 2, 0.5).tolist() == [1.0, 1.5] and tg.arange(1, 2, 0.5).dtype == np.float32
    x = tg.randn(2, 3, dtype=np.float64)
    assert tg.zeros_like(x).dtype == np.float64 and tg.ones_like(x).shape == (2, 3)
    assert tg.zeros_like(x, dtype=np.float32).dtype == np.float32
    assert tg.randn_like(x).dtype == np.float64
    r = tg.rand(1000).numpy()
    assert r.min() >= 0 and r.max() < 1


def test_arange_step_zero_and_randn_of_ints():
    with pytest.raises(ArgumentError, match="step"):
        tg.arange(0, 3, 0)
    with pytest.raises(DTypeError, match="int64"):
        tg.randn(2, dtype=np.int64)


def test_default_dtype_float64():
    tg.set_default_dtype(np.float64)  # restored by the conftest fixture
    assert tg.tensor([1.0]).dtype == np.float64 and tg.zeros(2).dtype == np.float64
    with pytest.raises(ArgumentError, match="float32 or float64"):
        tg.set_default_dtype(np.int32)


@pytest.mark.parametrize("data", [[1, 2], [True], np.arange(3)])
def test_requires_grad_only_on_floats(data):
    with pytest.raises(DTypeError, match="floating-point"):
        tg.tensor(data, requires_grad=True)
    with pytest.raises(DTypeError, match="floating-point"):
        tg.Tensor(data, requires_grad=True)


def test_sizes_must_be_integers():
    with pytest.raises(ArgumentError, match="integers"):
        tg.zeros(2.5)
    with pytest.raises(ArgumentError, match="integers"):
        tg.ones(True, 2)


# --- backward and .grad -----------------------------------------------------------------------


def test_gradient_accumulates_across_uses():
    x = tg.tensor([2.0, 3.0], requires_grad=True)
    (x * x + x + x).sum().backward()  # d/dx (x^2 + 2x) = 2x + 2
    assert x.grad.tolist() == [6.0, 8.0]


def test_gradient_accumulates_across_backward_calls():
    x = tg.tensor([1.0, -1.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    assert x.grad.tolist() == [6.0, 6.0]
    x.grad = None
    (x * 2).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_leaf_grads_do_not_share_memory():
    x = tg.tensor([1.0], requires_grad=True)
    y = tg.tensor([1.0], requires_grad=True)
    (x + y).sum().backward()
    x.grad.data += 1
    assert y.grad.tolist() == [1.0]


def test_backward_with_explicit_gradient():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).backward(tg.tensor([1.0, 10.0]))
    assert x.grad.tolist() == [2.0, 40.0]
    x.grad = None
    (x * 2).backward(np.array([1.0, 1.0]))
    assert x.grad.dtype == np.float32


def test_backward_on_non_scalar_without_gradient_raises():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ShapeError, match=r"one element.*\(2,\)"):
        (x * 2).backward()


def test_backward_with_wrong_gradient_shape_raises():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ShapeError, match=r"\(3,\).*\(2,\)"):
        (x * 2).backward(np.ones(3))


def test_backward_on_one_element_non_scalar_is_allowed():
    x = tg.tensor([[3.0]], requires_grad=True)
    (x * x).backward()
    assert x.grad.tolist() == [[6.0]]


def test_backward_without_requires_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.tensor([1.0]).sum().backward()


def test_backward_through_a_10000_node_chain():
    x = tg.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001**10_000], rtol=1e-3)


def test_a_diamond_graph_is_walked_once_per_node():
    x = tg.tensor([2.0], requires_grad=True, dtype=np.float64)
    a = x * 3
    b, c = a * a, a.exp()
    (b + c).sum().backward()  # d/dx = 3 (2a + e^a), a = 6
    np.testing.assert_allclose(x.grad.numpy(), [3 * (12 + np.exp(6.0))])


def test_saved_buffers_are_freed_and_a_second_backward_raises():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    z = (y * y).sum()
    z.backward()
    assert y._ctx.saved_tensors is None and z._ctx.saved_tensors is None
    with pytest.raises(RuntimeError, match="retain_graph"):
        z.backward()


def test_retain_graph_allows_a_second_backward():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    z = (x.exp() * x).sum()
    z.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)


def test_intermediate_tensors_get_no_grad():
    x = tg.tensor([1.0], requires_grad=True)
    y = x * 2
    (y * 3).sum().backward()
    assert y.grad is None and not y.is_leaf and x.is_leaf


def test_constants_are_not_connected():
    x = tg.tensor([1.0], requires_grad=True)
    c = tg.tensor([5.0])
    (x * c).sum().backward()
    assert c.grad is None and x.grad.tolist() == [5.0]


class ScaledShift(tg.Function):
    """a * x + b for x (N, C) and b (C,): a user-defined op, as with torch.autograd.Function. Its
    backward returns b's gradient in the broadcast shape (N, C): the engine sums it down."""

    @staticmethod
    def forward(ctx, x, b, a):
        ctx.a = a
        return a * x + b

    @staticmethod
    def backward(ctx, grad_out):
        return ctx.a * grad_out, grad_out


def test_a_function_subclass_runs_and_its_broadcast_gradient_is_summed_down():
    rng = np.random.default_rng(0)
    x, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    gradcheck(lambda x, b: ScaledShift.apply(x, b, a=2.5), x, b)
    y = ScaledShift.apply(tg.tensor(x), tg.tensor(b, requires_grad=True), a=2.5)
    assert y._ctx.op is ScaledShift and y._ctx.needs_input_grad == (False, True)


class WrongShape(tg.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out.T


def test_a_gradient_that_does_not_sum_to_the_input_shape_raises_naming_the_op():
    x = tg.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"WrongShape.backward returned a gradient of shape \(3, 2\) for an input "
                                           r"of shape \(2, 3\)"):
        WrongShape.apply(x).sum().backward()


def test_the_primitives_need_nothing_from_the_engine():
    """tinygen/ops.py works on arrays: it imports nothing from tinygen.tensor (no import circle)."""
    import ast
    import inspect

    from tinygen import ops

    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(ops)))
                if isinstance(node, ast.ImportFrom)}
    assert "tinygen.tensor" not in imported and imported >= {"tinygen.backend"}


# --- leaving the graph and grad modes ------------------------------------------------------------


def test_detach_shares_data_outside_the_graph():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf and d._ctx is None
    y = x.detach()
    y.data[0] = 5.0
    assert x.tolist() == [5.0, 2.0]


def test_no_grad_context_manager():
    x = tg.tensor([1.0], requires_grad=True)
    with tg.no_grad():
        y = x * 2
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    assert (x * 2).requires_grad


def test_no_grad_nests_and_restores_on_exceptions():
    with tg.no_grad():
        with tg.no_grad():
            pass
        assert not tg.is_grad_enabled()
    with pytest.raises(ZeroDivisionError):
        with tg.no_grad():
            1 / 0
    assert tg.is_grad_enabled()


def test_no_grad_is_per_thread():
    seen = []
    with tg.no_grad():
        worker = threading.Thread(target=lambda: seen.append(tg.is_grad_enabled()))
        worker.start()
        worker.join()
        assert not tg.is_grad_enabled()
    assert seen == [True]  # as torch: another thread keeps recording


def test_no_grad_as_decorator():
    @tg.no_grad()
    def double(t):
        """Doubles."""
        return t * 2

    x = tg.tensor([1.0], requires_grad=True)
    assert not double(x).requires_grad
    assert tg.is_grad_enabled()
    assert double.__doc__ == "Doubles." and double.__name__ == "double"


def test_manual_seed_reproducibility():
    tg.manual_seed(123)
    a, b = tg.randn(5).numpy(), tg.rand(3).numpy()
    tg.manual_seed(123)
    np.testing.assert_array_equal(tg.randn(5).numpy(), a)
    np.testing.assert_array_equal(tg.rand(3).numpy(), b)
    tg.manual_seed(124)
    assert not np.array_equal(tg.randn(5).numpy(), a)
    with pytest.raises(ArgumentError, match="non-negative integer"):
        tg.manual_seed(-1)


# --- conversions and attributes -----------------------------------------------------------------


@pytest.mark.cpu_only
def test_item_numpy_tolist():
    x = tg.tensor([[1.5, 2.0]])
    assert tg.tensor([[4.0]]).item() == 4.0 and isinstance(tg.tensor([4]).item(), int)
    assert x.tolist() == [[1.5, 2.0]]
    assert isinstance(x.numpy(), np.ndarray) and x.numpy() is x.data
    assert float(tg.tensor(2.5)) == 2.5 and int(tg.tensor([3])) == 3
    with pytest.raises(ShapeError, match=r"one element.*\(1, 2\)"):
        x.item()


def test_iteration_gives_rows_and_refuses_0d_tensors():
    x = tg.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert [row.tolist() for row in x] == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(TypeError, match="0-d"):
        list(tg.tensor(1.0))  # NumPy-style indexing made this an empty list


def test_attributes():
    x = tg.zeros(2, 3, 4)
    assert x.shape == (2, 3, 4) and x.ndim == 3 and x.dim() == 3 and x.numel() == 24
    assert x.size() == (2, 3, 4) and x.size(-1) == 4 and len(x) == 2
    assert x.device == tg.get_default_device() and x.T.shape == (4, 3, 2)
    with pytest.raises(TypeError, match="0-d"):
        len(tg.tensor(1.0))


@pytest.mark.cpu_only
def test_repr():
    assert repr(tg.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert "dtype=float64" in repr(tg.tensor(np.zeros(1)))
    assert "requires_grad=True" in repr(tg.tensor([1.0], requires_grad=True))


# --- shapes ---------------------------------------------------------------------------------


def test_reshape_and_view():
    x = tg.arange(6)
    assert x.reshape(2, 3).shape == (2, 3) and x.reshape((3, -1)).shape == (3, 2)
    assert x.view(-1, 1).shape == (6, 1) and x.reshape(2, 3).reshape(-1).shape == (6,)
    assert tg.zeros(0, 3).reshape(-1).shape == (0,)


@pytest.mark.parametrize("shape", [(4, -1), (-1, -1), (7,), (2, -2)])
def test_reshape_errors_name_the_shapes(shape):
    x = tg.zeros(2, 3)
    with pytest.raises(ShapeError, match=r"\(2, 3\).*" + r"\(" + str(shape[0])):
        x.reshape(shape)
    with pytest.raises(ShapeError, match=r"\(2, 3\)"):
        x.view(*shape)


def test_flatten_squeeze_unsqueeze_transpose():
    x = tg.zeros(2, 1, 3, 1)
    assert x.flatten().shape == (6,) and x.flatten(1).shape == (2, 3) and x.flatten(1, 2).shape == (2, 3, 1)
    assert x.squeeze().shape == (2, 3) and x.squeeze(1).shape == (2, 3, 1) and x.squeeze(0).shape == x.shape
    assert x.unsqueeze(0).shape == (1, 2, 1, 3, 1) and x.unsqueeze(-1).shape == (2, 1, 3, 1, 1)
    assert x.transpose(0, 2).shape == (3, 1, 2, 1)
    assert tg.tensor(1.0).flatten().shape == (1,)


def test_shape_argument_errors():
    x = tg.zeros(2, 3)
    with pytest.raises(ArgumentError, match="permutation"):
        x.permute(0, 0)
    with pytest.raises(ArgumentError, match="out of range"):
        x.sum(2)
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(4, 3\)"):
        x.expand(4, 3)
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(1, 3\)"):
        x.expand(1, 3)
    with pytest.raises(ArgumentError, match=r"dim \(1, -1\) names a dimension twice"):
        x.sum((1, -1))
    with pytest.raises(ArgumentError, match="start_dim 1 comes after end_dim 0"):
        tg.zeros(2, 3, 4).flatten(1, 0)
    with pytest.raises(ShapeError, match=r"zero-dimensional.*\[\(\), \(\)\]"):
        tg.cat([tg.tensor(1.0), tg.tensor(2.0)])
    assert x.transpose(1, -1).shape == (2, 3) and tg.zeros(2, 3, 4).flatten(1, 1).shape == (2, 3, 4)


def test_expand_with_minus_one():
    assert tg.zeros(3, 1).expand(-1, 4).shape == (3, 4)
    assert tg.zeros(3, 1).expand(2, 3, 4).shape == (2, 3, 4)


# --- indexing -------------------------------------------------------------------------------


def test_basic_indexing():
    x = tg.arange(12).reshape(3, 4)
    assert x[1].tolist() == [4, 5, 6, 7]
    assert x[1, 2].item() == 6 and x[-1, -1].item() == 11
    assert x[:, 1:3].tolist() == [[1, 2], [5, 6], [9, 10]]
    assert x[::2, ::-1].tolist() == [[3, 2, 1, 0], [11, 10, 9, 8]]
    assert x[None, ..., 0].shape == (1, 3)


def test_advanced_indexing_with_repeats_accumulates():
    x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    idx = tg.tensor([0, 2, 0, 0])
    y = x[idx]
    assert y.tolist() == [1.0, 3.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [3.0, 0.0, 1.0]
    x.grad = None
    x[[1, 1]].sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 0.0]


def test_advanced_indexing_2d():
    x = tg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x[tg.tensor([1, 1]), tg.tensor([0, 0])]
    assert y.tolist() == [3.0, 3.0]
    y.sum().backward()
    assert x.grad.tolist() == [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]


def test_boolean_mask_indexing():
    x = tg.tensor([[1.0, -2.0], [-3.0, 4.0]], requires_grad=True)
    mask = x > 0
    assert mask.dtype == np.bool_
    y = x[mask]
    assert y.tolist() == [1.0, 4.0]
    (y * tg.tensor([2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [[2.0, 0.0], [0.0, 3.0]]


def test_setitem_on_plain_tensors():
    x = tg.zeros(3)
    x[1] = 5.0
    x[tg.tensor([0, 2])] = tg.tensor([1.0, 2.0])
    assert x.tolist() == [1.0, 5.0, 2.0]


def test_setitem_on_tensors_requiring_grad_needs_no_grad():
    x = tg.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        x[0] = 1.0
    with tg.no_grad():
        x[0] = 1.0
    assert x.tolist() == [1.0, 0.0, 0.0]


# --- in-place changes of saved tensors -------------------------------------------------------
# Each scenario builds a graph, changes a tensor in place, then calls backward; it runs on
# tinygen and on torch alike, and returns the leaf whose gradient is compared.


def _saved_input_changed(lib):
    w, a = lib.tensor([1.0, 2.0, 3.0], requires_grad=True), lib.tensor([1.0, 1.0, 1.0])
    y = (w * a).sum()  # Mul saved a
    a[0] = 100.0
    y.backward()
    return w


def _unsaved_input_changed(lib):
    w, a = lib.tensor([1.0, 2.0, 3.0], requires_grad=True), lib.tensor([1.0, 1.0, 1.0])
    y = (w + a).sum()  # Add saved nothing: its gradient does not depend on a
    a[0] = 100.0
    y.backward()
    return w


def _changed_through_detach(lib):
    w, a = lib.tensor([1.0, 2.0, 3.0], requires_grad=True), lib.tensor([1.0, 1.0, 1.0])
    y = (w * a).sum()
    a.detach()[1] = 7.0
    y.backward()
    return w


def _changed_through_a_view(lib):
    w, a = lib.tensor([1.0, 2.0, 3.0], requires_grad=True), lib.tensor([[1.0, 1.0, 1.0]])
    y = (w * a).sum()
    a[0, 1:][0] = 7.0
    y.backward()
    return w


def _saved_output_changed(lib):
    w = lib.tensor([1.0, 2.0], requires_grad=True)
    e = w.exp()  # Exp saved its output
    with lib.no_grad():
        e[0] = 0.0
    e.sum().backward()
    return w


def _optimizer_step_between(lib):
    lib.manual_seed(0)
    layer = lib.nn.Linear(3, 2)
    x = lib.ones(4, 3, requires_grad=True)
    y = layer(x).sum()
    for p in layer.parameters():
        p.grad = lib.ones_like(p)
    lib.optim.SGD(layer.parameters(), lr=0.1).step()  # in place on the weight the product saved
    y.backward()
    return x


def _changed_after_backward(lib):
    w, a = lib.tensor([1.0, 2.0, 3.0], requires_grad=True), lib.tensor([1.0, 1.0, 1.0])
    (w * a).sum().backward()
    a[0] = 100.0
    return w


@pytest.mark.parametrize("scenario, raises", [
    (_saved_input_changed, True), (_unsaved_input_changed, False), (_changed_through_detach, True),
    (_changed_through_a_view, True), (_saved_output_changed, True), (_optimizer_step_between, True),
    (_changed_after_backward, False),
])
def test_backward_refuses_saved_tensors_changed_in_place(scenario, raises):
    if raises:
        with pytest.raises(RuntimeError, match="modified in place"):
            scenario(tg)
    else:
        np.testing.assert_allclose(scenario(tg).grad.numpy(), [1.0, 1.0, 1.0])
    if torch is not None:  # PyTorch draws the same line
        if raises:
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                scenario(torch)
        else:
            np.testing.assert_allclose(scenario(torch).grad.numpy(), scenario(tg).grad.numpy())


def test_versions_count_in_place_changes_shared_with_views():
    a = tg.zeros(2, 3)
    view, detached, copy = a.reshape(6), a.detach(), tg.tensor(a)
    assert a._version == 0
    a[0, 0] = 1.0
    view[1] = 2.0
    detached[1, 1] = 3.0
    assert a._version == view._version == detached._version == 3
    assert copy._version == 0 and copy.tolist() == [[0.0] * 3] * 2


def test_init_load_state_dict_and_optimizers_count_as_in_place_changes():
    layer = tg.nn.Linear(2, 2)
    before = layer.weight._version
    tg.nn.init.zeros_(layer.weight)
    layer.load_state_dict(layer.state_dict())
    layer.weight.grad = tg.ones(2, 2)
    tg.optim.Adam(layer.parameters()).step()
    assert layer.weight._version == before + 3


# --- cat and stack --------------------------------------------------------------------------


def test_cat_and_stack():
    a, b = tg.ones(2, 3), tg.zeros(1, 3)
    assert tg.cat([a, b]).shape == (3, 3) and tg.cat((a, a), dim=-1).shape == (2, 6)
    assert tg.stack([a, a]).shape == (2, 2, 3) and tg.stack([a, a], dim=2).shape == (2, 3, 2)
    assert tg.stack([tg.tensor(1.0), tg.tensor(2.0)]).tolist() == [1.0, 2.0]


def test_cat_and_stack_gradients():
    check_op(lambda a, b: tg.stack([a, b, a], dim=1), None, np.ones((2, 3)), np.zeros((2, 3)),
             np_fn=lambda a, b: np.stack([a, b, a], axis=1))


def test_cat_and_stack_errors():
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(2, 4\)"):
        tg.cat([tg.zeros(2, 3), tg.zeros(2, 4)])
    with pytest.raises(ShapeError, match="cat"):
        tg.cat([tg.zeros(2, 3), tg.zeros(3)])
    with pytest.raises(ShapeError, match=r"stack needs equal shapes.*\(2, 3\).*\(3, 2\)"):
        tg.stack([tg.zeros(2, 3), tg.zeros(3, 2)])
    with pytest.raises(ArgumentError, match="at least one"):
        tg.cat([])
    with pytest.raises(ArgumentError, match="at least one"):
        tg.stack([])
    with pytest.raises(ArgumentError, match="out of range"):
        tg.cat([tg.zeros(2)], dim=1)


# --- comparisons and reductions giving indices ------------------------------------------------


def test_comparisons_give_boolean_tensors_outside_the_graph():
    x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    assert (x < 2).tolist() == [True, False, False]
    assert (x <= 2).tolist() == [True, True, False]
    assert (x > 2).tolist() == [False, False, True]
    assert (x >= 2).tolist() == [False, True, True]
    assert (x == 2).tolist() == [False, True, False]
    assert (x != 2).tolist() == [True, False, True]
    assert (x == tg.tensor([1.0, 0.0, 3.0])).tolist() == [True, False, True]
    assert (2 < x).tolist() == [False, False, True]  # reflected: x > 2
    c = x > 1
    assert c.dtype == np.bool_ and not c.requires_grad


def test_argmax_argmin():
    x = tg.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    assert x.argmax().item() == 3 and x.argmin().item() == 4
    assert x.argmax(1).tolist() == [1, 0] and x.argmin(0, keepdim=True).tolist() == [[0, 1, 0]]


@pytest.mark.parametrize("array", [np.array([[0, 5, 3], [7, 0, 255]], np.uint8),
                                   np.array([[True, False, True], [True, True, False]])])
def test_min_and_argmin_of_unsigned_and_bool_match_numpy(array):
    # min was -(-x).max(): -x wraps unsigned ints and raises for bool
    x = tg.tensor(array)
    assert x.min().item() == array.min() and x.argmin().item() == array.argmin()
    values, indices = x.min(1)
    assert values.tolist() == array.min(1).tolist() and indices.tolist() == array.argmin(1).tolist()
    assert x.amin(0, keepdim=True).tolist() == array.min(0, keepdims=True).tolist()
    assert x.min().dtype == array.dtype and not x.min().requires_grad


def test_logsumexp_of_infinite_rows_matches_torch():
    # the shift was the row max, so an all -inf row gave -inf - -inf = nan
    x = tg.tensor([[-np.inf, -np.inf], [np.inf, 0.0], [1.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and quietly, as torch: log(0) = -inf is the answer
        got = x.logsumexp(1).tolist()
    assert got[0] == -np.inf and got[1] == np.inf
    assert got[2] == pytest.approx(np.logaddexp(1.0, 2.0))
    y = tg.tensor([1.0, 2.0], requires_grad=True)
    y.logsumexp(0).backward()
    np.testing.assert_allclose(y.grad.tolist(), np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum(), rtol=1e-6)


def test_tensors_hash_by_identity():
    a, b = tg.tensor([1.0]), tg.tensor([1.0])
    assert len({a, b}) == 2


# --- dtype preservation ---------------------------------------------------------------------


@pytest.mark.parametrize("scalar", [2, 2.5, True])
def test_float32_with_python_scalars_stays_float32(scalar):
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    for y in (x + scalar, scalar + x, x - scalar, scalar - x, x * scalar, scalar * x, x / scalar, scalar / x,
              x**scalar, scalar**x):
        assert y.dtype == np.float32


def test_float32_gradients_stay_float32():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    w = tg.tensor([[0.5, 1.0], [2.0, -1.0]], requires_grad=True)
    y = ((w @ x).exp() * 2.5 + x.sigmoid() / 3).sum() + x.mean() * 0.1 + (w**2).var() + x.logsumexp(0)
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_float64_is_kept():
    x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * 2.5 + 1).exp().mean()
    assert y.dtype == np.float64
    y.backward()
    assert x.grad.dtype == np.float64


def test_int_tensors_with_python_ints_stay_int64():
    x = tg.tensor([1, 2])
    assert (x + 1).dtype == np.int64 and (2 * x).dtype == np.int64 and (x * 1.5).dtype.kind == "f"


# --- operators with constants on either side --------------------------------------------------


@pytest.mark.parametrize(
    "fn, expected",
    [
        (lambda x, c: c + x, lambda a, c: c + a),
        (lambda x, c: c - x, lambda a, c: c - a),
        (lambda x, c: c * x, lambda a, c: c * a),
        (lambda x, c: c / x, lambda a, c: c / a),
        (lambda x, c: c**x, lambda a, c: c**a),
    ],
    ids=["radd", "rsub", "rmul", "rtruediv", "rpow"],
)
@pytest.mark.parametrize("constant", [2.0, 3, np.array([1.5, 2.0, 0.5])], ids=["float", "int", "ndarray"])
def test_reflected_operators_with_constants_on_the_left(fn, expected, constant):
    x = np.array([0.5, 1.0, 2.0])
    out = check_op(lambda t: fn(t, constant), None, x, np_fn=lambda a: expected(a, constant))
    assert isinstance(out, tg.Tensor)


def test_reflected_matmul_with_an_ndarray_on_the_left():
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    out = check_op(lambda t: m @ t, None, np.array([[0.5], [-1.0]]), np_fn=lambda a: m @ a)
    assert isinstance(out, tg.Tensor)


def test_neg_and_pos():
    x = tg.tensor([1.0, -2.0], requires_grad=True)
    assert (-x).tolist() == [-1.0, 2.0] and (+x) is x


# --- dtype promotion (PyTorch's rules) ------------------------------------------------------

DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64")
NUMBERS = (True, 3, 0.5)


def _operands(lib, dtype):
    """A tensor with dimensions and a 0-d one of `dtype`, in tinygen or torch."""
    values = np.array([1, 2, 3], dtype=dtype)
    if lib is tg:
        return tg.tensor(values), tg.tensor(values[0])
    return torch.from_numpy(values), torch.from_numpy(values[:1].copy()).reshape(())


@requires_torch
@pytest.mark.parametrize("left", DTYPES)
def test_result_type_matches_torch(left):
    for right in DTYPES:
        for a, ta in zip(_operands(tg, left), _operands(torch, left)):
            for b, tb in list(zip(_operands(tg, right), _operands(torch, right))) + [(n, n) for n in NUMBERS]:
                expected = str(torch.result_type(ta, tb)).removeprefix("torch.")
                assert str(tg.result_type(a, b)) == expected, (left, a.ndim, right, b)
                assert str((a + b).dtype) == str((ta + tb).dtype).removeprefix("torch."), (left, a.ndim, right, b)
                assert str((b * a).dtype) == str((tb * ta).dtype).removeprefix("torch."), (left, a.ndim, right, b)
                if "bool" not in (left, right) or left == right == "bool":  # torch refuses some bool divisions
                    assert str((a / b).dtype) == str((ta / tb).dtype).removeprefix("torch."), (left, right, b)


@pytest.mark.parametrize("make, expected", [
    (lambda: tg.ones(2) + tg.arange(2), "float32"),  # NumPy: float64
    (lambda: tg.arange(2) * 0.5, "float32"),  # NumPy: float64
    (lambda: tg.ones(2) + tg.tensor(2.0, dtype="float64"), "float32"),  # a 0-d tensor counts less
    (lambda: tg.arange(2, dtype="int32") + tg.tensor(2.0, dtype="float64"), "float64"),  # ... unless it brings a float
    (lambda: tg.ones(2) + tg.ones(2, dtype="float64"), "float64"),
    (lambda: tg.tensor([1, 2], dtype="uint8") + 1, "uint8"),
    (lambda: tg.arange(3) / tg.arange(1, 4), "float32"),  # true division of integers
    (lambda: tg.tensor([True]) + 1, "int64"),
    (lambda: 2 ** tg.arange(3), "int64"),
    (lambda: tg.cat([tg.ones(2), tg.arange(2)]), "float32"),
])
def test_binary_ops_promote_as_pytorch(make, expected):
    assert str(make().dtype) == expected


def test_promotion_stays_in_the_graph():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    w = tg.tensor([3.0, 4.0], dtype="float64", requires_grad=True)
    y = x * w  # float64: the float32 x is cast in the graph
    assert y.dtype == np.float64
    (y * tg.arange(2)).sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.tolist() == [0.0, 4.0]
    assert w.grad.dtype == np.float64 and w.grad.tolist() == [0.0, 2.0]
    z = tg.tensor([1.0, 2.0], requires_grad=True)
    (z * tg.tensor(3.0, dtype="float64")).sum().backward()  # float32 result, float32 gradient
    assert z.grad.dtype == np.float32 and z.grad.tolist() == [3.0, 3.0]


def test_matmul_of_two_dtypes_raises_as_pytorch():
    with pytest.raises(DTypeError, match="float32 and float64"):
        tg.ones(2, 2) @ tg.ones(2, 2, dtype="float64")
    with pytest.raises(DTypeError, match="float64 and float32"):
        np.ones((2, 2)) @ tg.ones(2, 2)
