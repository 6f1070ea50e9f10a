"""`Tensor` and reverse-mode automatic differentiation: the engine, in one file.

A `Tensor` wraps an array (`.data`: a NumPy array on the ``cpu`` device, or a CuPy array on a
``cuda`` device). Every operation on tensors that require gradients goes through `apply`, which
runs the primitive's forward on the arrays and records a `Node`: the primitive that ran, its input
tensors (`ctx.parents`) and whatever its backward needs (`ctx.save_for_backward`). The nodes form
a directed acyclic graph; `loss.backward()` walks it once in reverse topological order, calls each
node's `backward(ctx, grad_out)` and adds the results into the inputs' gradients (the chain rule:
dL/dx = sum over the uses of x of dL/dy * dy/dx). A gradient of a broadcast shape is summed down
to its input's shape there, once for every op (`unbroadcast`).

Read this file top to bottom: grad mode, `Node` and `apply`, `unbroadcast`, `Tensor` (its
`backward`, then the operators), the creation functions. The primitives, forward and backward
side by side on raw arrays, are in tinygen/ops.py; everything defined here in terms of them
(`mean`, `var`, `softmax`, `logsumexp`, ...) gets its gradient for free. Three rules the
operators follow live in their own modules: dtype promotion (tinygen/dtypes.py), the version
counters that guard saved tensors (tinygen/version_counter.py) and the device rules
(tinygen/devices.py).
"""

import builtins
import functools
import threading
from collections import namedtuple

import numpy as np

from tinygen import backend, devices, ops
from tinygen.dtypes import is_number, number_dtype, result_type
from tinygen.errors import ArgumentError, DeviceMismatchError, DTypeError, ShapeError
from tinygen.version_counter import VersionCounter, check_saved_versions, saved_versions, share_with_view


class _GradMode(threading.local):
    """Whether operations are recorded, per thread (as PyTorch's grad mode): `no_grad` in one
    thread leaves the others recording."""

    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled():
    """Whether operations are being recorded for backward (in this thread)."""
    return _grad_mode.enabled


class no_grad:
    """Context manager and decorator that stops recording operations (inference, updates).

    >>> x = tensor([1.0, 2.0], requires_grad=True)
    >>> with no_grad():
    ...     y = x * 2
    >>> y.requires_grad
    False
    """

    def __enter__(self):
        self._prev = _grad_mode.enabled
        _grad_mode.enabled = False

    def __exit__(self, *exc):
        _grad_mode.enabled = self._prev

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        return wrapper


# --- the graph ------------------------------------------------------------------------------


class Node:
    """One node of the graph, and the `ctx` its op's forward and backward receive: the op that
    ran, its input tensors (`parents`), which of them need a gradient (`needs_input_grad`) and the
    arrays the forward kept for the backward (`save_for_backward`)."""

    def __init__(self, op, parents):
        self.op, self.parents = op, parents
        self.needs_input_grad = tuple(p.requires_grad for p in parents)
        self.saved_tensors = ()

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays


def apply(op, *inputs, **params):
    """Run the op on tensors: `op.forward(ctx, *arrays, **params)` on the inputs' arrays, the
    result wrapped in a Tensor. If an input requires a gradient (and grad mode is on), the result
    keeps the node in `_ctx`, linking it into the graph that `backward()` walks.

    An op is a class with two static methods, `forward(ctx, *arrays, **params) -> array` and
    `backward(ctx, grad_out) -> grad or tuple of grads` (one per input, `None` where
    `ctx.needs_input_grad` is False): the primitives of tinygen/ops.py, or a `Function`.
    """
    ctx = Node(op, inputs)
    arrays = [t.data for t in inputs]
    for a in arrays:
        if type(a) is not np.ndarray:  # not all on the CPU: check that they share a device
            arrays = devices.on_one_device(op.__name__, arrays)
            break
    out = op.forward(ctx, *arrays, **params)
    requires_grad = _grad_mode.enabled and any(ctx.needs_input_grad)
    result = Tensor._from_array(out, requires_grad=requires_grad)
    share_with_view(result, inputs, arrays)  # a view of an input (reshape, indexing) shares its version
    if requires_grad:
        result._ctx = ctx
        ctx.saved_versions = saved_versions(ctx, inputs, arrays, result) if ctx.saved_tensors else ()
    return result


class Function:
    """Base class of an op you define, like `torch.autograd.Function`: give the subclass the two
    static methods `apply` expects, then call ``MyOp.apply(*tensors, **params)``."""

    @classmethod
    def apply(cls, *inputs, **params):
        return apply(cls, *inputs, **params)


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`: the adjoint of NumPy broadcasting `shape` up to grad.shape.

    Broadcasting copies values along new leading axes and along axes of size 1; the gradient of a
    copy is the sum of the gradients of its copies.
    """
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _as_array(data, dtype=None):
    """An array for `Tensor(data)`: Python floats become the default dtype, arrays keep theirs."""
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.get_array_module(data)
    from_python = not hasattr(data, "dtype")
    arr = xp.asarray(data, dtype=None if dtype is None else np.dtype(dtype))
    if dtype is None and from_python and arr.dtype == np.float64:
        arr = arr.astype(backend.get_default_dtype())
    if arr.dtype.kind not in "biuf":
        raise DTypeError(f"tensors hold bool, integer or float data, got dtype {arr.dtype}")
    return arr


def _dims(dim, ndim):
    """Normalise a `dim` argument (None, int or sequence, negatives allowed) to a tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise ArgumentError(f"dim {d} is out of range for a tensor with {ndim} dimensions")
        out.append(int(d) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ArgumentError(f"dim {dim} names a dimension twice")
    return tuple(out)


MaxResult = namedtuple("MaxResult", ["values", "indices"])


class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    >>> x = tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    >>> y = (x * x).sum()
    >>> y.backward()
    >>> x.grad
    tensor([[2., 4.],
            [6., 8.]])
    """

    __array_priority__ = 1000  # NumPy defers `ndarray + Tensor` to Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        arr = _as_array(data, dtype)
        if device is not None:
            arr = backend.to_device(arr, device)
        elif type(arr) is np.ndarray and not isinstance(data, Tensor):
            # NOTE: new data (numbers, lists, NumPy arrays) goes to the default device, as
            # torch.tensor does; the array of a Tensor or a CuPy array stays where it is.
            default = backend.get_default_device()
            if default.type != "cpu":
                arr = backend.to_device(arr, default)
        self.data = arr
        if requires_grad and self.data.dtype.kind != "f":
            raise DTypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None
        self._version_counter = VersionCounter()

    @classmethod
    def _from_array(cls, arr, requires_grad=False):
        """A tensor holding `arr` where it is: the results of operations, never moved to the default device."""
        t = cls.__new__(cls)
        t.data = arr if type(arr) is np.ndarray or backend.is_device_array(arr) else _as_array(arr)
        if requires_grad and t.data.dtype.kind != "f":
            raise DTypeError(f"only floating-point tensors can require gradients, got {t.data.dtype}")
        t.requires_grad = bool(requires_grad)
        t.grad = None
        t._ctx = None
        t._version_counter = VersionCounter()
        return t

    @property
    def _version(self):
        """How many in-place changes this tensor's data has had (shared with its views)."""
        return self._version_counter.value

    def _bump_version(self):
        """Record an in-place change of the data (what `t[i] = v`, optimizers and init do)."""
        self._version_counter.value += 1

    # --- attributes ---------------------------------------------------------------------

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def device(self):
        """The `tinygen.device` holding the data: ``cpu`` or ``cuda:i``."""
        return backend.device_of(self.data)

    @property
    def is_cuda(self):
        return backend.is_device_array(self.data)

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[_dims(dim, self.ndim)[0]]

    def dim(self):
        return self.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        """The sub-tensors along dim 0 (a 0-d tensor has none to give: TypeError, as in PyTorch)."""
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self):
        body = np.array2string(np.asarray(self.numpy()), separator=", ", prefix="tensor(")
        extras = ""
        if self.dtype not in (backend.get_default_dtype(), np.dtype(np.int64), np.dtype(bool)):
            extras += f", dtype={self.dtype}"
        if self.requires_grad:
            extras += ", requires_grad=True"
        if self.is_cuda:
            extras += f", device='{self.device}'"
        return f"tensor({body}{extras})"

    # --- leaving the graph --------------------------------------------------------------

    def detach(self):
        """The same data (shared, not copied, with its version counter) as a tensor outside the graph."""
        out = Tensor._from_array(self.data)
        out._version_counter = self._version_counter
        return out

    def numpy(self):
        """The data as a NumPy array (shared with the tensor on the CPU, a copy from the GPU)."""
        return backend.to_numpy(self.data)

    def item(self):
        if self.data.size != 1:
            raise ShapeError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    # --- backward -----------------------------------------------------------------------

    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires a gradient.

        `gradient` is dL/d(self); it may be omitted for a tensor with one element (L = self).
        The graph is walked iteratively, so arbitrarily deep graphs work. Saved buffers are
        freed afterwards unless `retain_graph=True`; a second backward then raises.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        xp = backend.get_array_module(self.data)
        if gradient is None:
            if self.data.size != 1:
                raise ShapeError(
                    f"backward() without a gradient needs a tensor with one element, "
                    f"got shape {self.shape}; pass gradient= of that shape"
                )
            gradient = xp.ones_like(self.data)
        gradient = backend.to_device(_as_array(gradient, dtype=self.dtype), self.device)
        if gradient.shape != self.shape:
            raise ShapeError(f"gradient has shape {gradient.shape}, expected {self.shape}")

        grads = {id(self): gradient}
        for node in reversed(self._topological_order()):
            grad = grads.pop(id(node), None)
            if grad is None:
                continue
            ctx = node._ctx
            if ctx is None:  # a leaf: accumulate (copy so no two .grad share memory)
                node.grad = Tensor._from_array(grad.copy() if node.grad is None else node.grad.data + grad)
                continue
            if ctx.saved_tensors is None:
                raise RuntimeError(
                    "trying to backward through the graph a second time: its saved buffers "
                    "were freed; pass retain_graph=True to the first backward()"
                )
            check_saved_versions(ctx, node)
            input_grads = ctx.op.backward(ctx, grad)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, g in zip(ctx.parents, input_grads):
                if g is None or not parent.requires_grad:
                    continue
                if g.shape != parent.shape and g.ndim >= parent.ndim:
                    # NOTE: the input was broadcast: sum its gradient down (as PyTorch's engine does)
                    g = unbroadcast(g, parent.shape)
                if g.shape != parent.shape:
                    raise RuntimeError(
                        f"{ctx.op.__name__}.backward returned a gradient of shape {g.shape} "
                        f"for an input of shape {parent.shape}"
                    )
                if g.dtype != parent.dtype:
                    g = g.astype(parent.dtype)
                key = id(parent)
                grads[key] = g if key not in grads else grads[key] + g
            if not retain_graph:
                ctx.saved_tensors = None

    def _topological_order(self):
        """Nodes that lead to self, inputs before outputs; an explicit stack, no recursion."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                stack.extend((p, False) for p in node._ctx.parents if p.requires_grad)
        return order

    # --- arithmetic (broadcasting; gradients un-broadcast in ops) ---------------------------

    def __add__(self, other):
        return apply(ops.Add, *_promoted(self, other))

    def __radd__(self, other):
        return apply(ops.Add, *_promoted(other, self))

    def __sub__(self, other):
        return apply(ops.Sub, *_promoted(self, other))

    def __rsub__(self, other):
        return apply(ops.Sub, *_promoted(other, self))

    def __mul__(self, other):
        return apply(ops.Mul, *_promoted(self, other))

    def __rmul__(self, other):
        return apply(ops.Mul, *_promoted(other, self))

    def __truediv__(self, other):
        return apply(ops.Div, *_promoted(self, other, floating=True))

    def __rtruediv__(self, other):
        return apply(ops.Div, *_promoted(other, self, floating=True))

    def __pow__(self, exponent):
        return apply(ops.Pow, *_promoted(self, exponent))

    def __rpow__(self, base):
        return apply(ops.Pow, *_promoted(base, self))

    def __matmul__(self, other):
        return apply(ops.MatMul, *_same_dtype("matmul", self, other))

    def __rmatmul__(self, other):
        return apply(ops.MatMul, *_same_dtype("matmul", other, self))

    def __neg__(self):
        return apply(ops.Neg, self)

    def __pos__(self):
        return self

    # comparisons (in the promoted dtype, as PyTorch) give boolean tensors outside the graph
    def __lt__(self, other):
        a, b = _promoted(self, other)
        return Tensor._from_array(a.data < b.data)

    def __le__(self, other):
        a, b = _promoted(self, other)
        return Tensor._from_array(a.data <= b.data)

    def __gt__(self, other):
        a, b = _promoted(self, other)
        return Tensor._from_array(a.data > b.data)

    def __ge__(self, other):
        a, b = _promoted(self, other)
        return Tensor._from_array(a.data >= b.data)

    def __eq__(self, other):
        a, b = _promoted(self, other)
        return Tensor._from_array(a.data == b.data)

    def __ne__(self, other):
        a, b = _promoted(self, other)
        return Tensor._from_array(a.data != b.data)

    __hash__ = object.__hash__  # tensors are hashed by identity, as in PyTorch

    def matmul(self, other):
        return self @ other

    def pow(self, exponent):
        return self**exponent

    # --- elementwise ------------------------------------------------------------------

    def exp(self):
        return apply(ops.Exp, self)

    def log(self):
        return apply(ops.Log, self)

    def log1p(self):
        return apply(ops.Log1p, self)

    def sqrt(self):
        return apply(ops.Sqrt, self)

    def abs(self):
        return apply(ops.Abs, self)

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise ArgumentError("clamp needs at least one of min and max")
        return apply(ops.Clamp, self, min=min, max=max)

    def relu(self):
        return apply(ops.Relu, self)

    def sigmoid(self):
        return apply(ops.Sigmoid, self)

    def tanh(self):
        return apply(ops.Tanh, self)

    # --- reductions ---------------------------------------------------------------------

    def sum(self, dim=None, keepdim=False):
        return apply(ops.Sum, self, axis=_dims(dim, self.ndim), keepdim=keepdim)

    def mean(self, dim=None, keepdim=False):
        axes = _dims(dim, self.ndim)
        count = int(np.prod([self.shape[a] for a in axes])) if self.ndim else 1
        return self.sum(axes, keepdim) / count

    def amax(self, dim=None, keepdim=False):
        """Maximum over `dim`. NOTE: ties share the gradient equally (as torch.amax)."""
        return apply(ops.Max, self, axis=_dims(dim, self.ndim), keepdim=keepdim)

    def amin(self, dim=None, keepdim=False):
        if self.dtype.kind != "f":  # integer or bool: outside the graph, and -x would wrap unsigned ints
            return Tensor._from_array(self.data.min(axis=_dims(dim, self.ndim), keepdims=keepdim))
        return -(-self).amax(dim, keepdim)

    def max(self, dim=None, keepdim=False):
        """With no `dim`, the largest element; with `dim`, `(values, indices)` as in PyTorch.

        NOTE: the values are `amax`'s, so tied maxima share the gradient; PyTorch's max(dim) gives
        it all to the index it returns (its max() with no dim shares it, as here)."""
        if dim is None:
            return self.amax()
        return MaxResult(self.amax(dim, keepdim), self.argmax(dim, keepdim))

    def min(self, dim=None, keepdim=False):
        if dim is None:
            return self.amin()
        return MaxResult(self.amin(dim, keepdim), self.argmin(dim, keepdim))

    def argmax(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor._from_array(self.data.argmax())
        (axis,) = _dims(dim, self.ndim)
        return Tensor._from_array(self.data.argmax(axis=axis, keepdims=keepdim))

    def argmin(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor._from_array(self.data.argmin())
        (axis,) = _dims(dim, self.ndim)
        return Tensor._from_array(self.data.argmin(axis=axis, keepdims=keepdim))

    def var(self, dim=None, keepdim=False, correction=1):
        """Variance over `dim`, dividing by (count - correction): unbiased by default."""
        axes = _dims(dim, self.ndim)
        count = int(np.prod([self.shape[a] for a in axes])) if self.ndim else 1
        centered = self - self.mean(axes, keepdim=True)
        return (centered * centered).sum(axes, keepdim) / builtins.max(count - correction, 0)

    def std(self, dim=None, keepdim=False, correction=1):
        return self.var(dim, keepdim, correction).sqrt()

    def logsumexp(self, dim, keepdim=False):
        """log(sum(exp(x))) over `dim`, shifted by the maximum so exp cannot overflow."""
        top = self.amax(dim, keepdim=True).data
        xp = backend.get_array_module(top)
        # NOTE: an infinite max shifts by 0 (as torch), since -inf - -inf would be nan
        shift = Tensor._from_array(xp.where(xp.isfinite(top), top, xp.zeros_like(top)))
        with np.errstate(divide="ignore"):  # log(0) = -inf for an all -inf row is the answer, not a mistake
            out = (self - shift).exp().sum(dim, keepdim=True).log() + shift
        return out if keepdim else out.squeeze(dim)

    def log_softmax(self, dim):
        return self - self.logsumexp(dim, keepdim=True)

    def softmax(self, dim):
        shifted = (self - self.amax(dim, keepdim=True).detach()).exp()
        return shifted / shifted.sum(dim, keepdim=True)

    # --- shape and movement ---------------------------------------------------------------

    def reshape(self, *shape):
        new_shape = _reshape_target(self.shape, _size(shape))
        if new_shape == self.shape:
            return self
        return apply(ops.Reshape, self, shape=new_shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        (start,), (end,) = _dims(start_dim, self.ndim), _dims(end_dim, self.ndim)
        if start > end:
            raise ArgumentError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                                f"for a tensor with {self.ndim} dimensions")
        return self.reshape(self.shape[:start] + (-1,) + self.shape[end + 1 :])

    def unsqueeze(self, dim):
        (axis,) = _dims(dim, self.ndim + 1)
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def squeeze(self, dim=None):
        axes = _dims(dim, self.ndim)
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if not (i in axes and n == 1)))

    def permute(self, *dims):
        dims = tuple(_dims(d, self.ndim)[0] for d in _size(dims))
        if sorted(dims) != list(range(self.ndim)):
            raise ArgumentError(f"permute needs a permutation of 0..{self.ndim - 1}, got {dims}")
        return apply(ops.Permute, self, order=dims)

    def transpose(self, dim0, dim1):
        (a,), (b,) = _dims(dim0, self.ndim), _dims(dim1, self.ndim)
        order = list(range(self.ndim))
        order[a], order[b] = order[b], order[a]
        return self.permute(*order)

    def expand(self, *shape):
        shape = _size(shape)
        shape = tuple(
            n if s == -1 else s
            for n, s in zip((1,) * (len(shape) - self.ndim) + self.shape, shape)
        )
        try:
            expandable = np.broadcast_shapes(self.shape, shape) == shape  # (2,) to (1,) broadcasts, wrongly
        except ValueError:
            expandable = False
        if not expandable:
            raise ShapeError(f"cannot expand shape {self.shape} to {shape}")
        return apply(ops.Expand, self, shape=shape)

    def __getitem__(self, index):
        return apply(ops.GetItem, self, index=devices.index_for(_unwrapped(index), self.data))

    def __setitem__(self, index, value):
        if self.requires_grad and _grad_mode.enabled:
            raise RuntimeError(
                "in-place assignment to a tensor that requires grad would break its gradient; "
                "do it under no_grad() or build a new tensor"
            )
        if isinstance(value, Tensor):
            if value.device != self.device:
                raise DeviceMismatchError(f"cannot assign a tensor on {value.device} into a tensor on {self.device}")
            value = value.data
        elif hasattr(value, "shape") and backend.is_device_array(self.data):
            value = backend.to_device(value, self.device)  # a NumPy array of values: a constant
        self.data[devices.index_for(_unwrapped(index), self.data)] = value
        self._bump_version()

    # --- device and dtype -----------------------------------------------------------------

    def to(self, *args, device=None, dtype=None):
        """This tensor on another device and/or with another dtype, as PyTorch's `to`:
        ``t.to("cuda")``, ``t.to(np.float64)``, ``t.to("cuda", np.float32)``, ``t.to(other_tensor)``.

        Returns self when nothing changes; else a new tensor, differentiable (the gradient
        goes back to this tensor's device and, between floating-point dtypes, its dtype).
        """
        device, dtype = _to_arguments(args, device, dtype)
        out = self
        if device is not None and not devices.already_on(out.data, device):
            out = apply(ops.ToDevice, out, device=device)
        if dtype is not None:
            if dtype.kind != "f" and dtype != out.dtype:  # integer or bool: outside the graph
                out = Tensor._from_array(out.data.astype(dtype))
            elif dtype != out.dtype:
                out = apply(ops.Cast, out, dtype=dtype)
        return out

    def cpu(self):
        """This tensor on the CPU (self if it is there already)."""
        return self.to("cpu")

    def cuda(self, index=None):
        """This tensor on GPU `index` (default: the current one)."""
        return self.to(backend.device("cuda", index))

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def long(self):
        return self.to(np.int64)


# --- operands: dtype promotion (tinygen.dtypes) and argument forms --------------------------


def _as_operand(x, like):
    """A tensor for a binary operand: numbers and arrays become constants on `like`'s device."""
    if isinstance(x, Tensor) or is_number(x):
        return x
    return Tensor(x, device=like.device)


def _cast(x, dtype, like):
    """Operand `x` (a tensor or a number) as a tensor of `dtype`; casts between floating-point
    dtypes stay in the graph (the gradient is cast back)."""
    if is_number(x):
        return _constant(x, dtype, like)
    if x.dtype == dtype:
        return x
    return apply(ops.Cast, x, dtype=dtype) if x.dtype.kind == "f" else Tensor._from_array(x.data.astype(dtype))


def _constant(number, dtype, like):
    """A number as a constant tensor of `dtype` beside the tensor `like`."""
    constant = Tensor._from_array(np.asarray(number, dtype=dtype))
    if backend.is_device_array(like.data):
        # NOTE: beside a GPU tensor a number stays a NumPy scalar (np.generic) in the constant's
        # .data: CuPy passes it to its kernels as an argument, with no copy to the GPU.
        constant.data = constant.data[()]
    return constant


def _promoted(a, b, floating=False):
    """Operands `a` and `b` (one of them a Tensor) as tensors of their `result_type` (a floating
    one where `floating`: true division of integers gives the default float dtype, as in PyTorch).

    NOTE: numbers and raw arrays become constants on the tensor's device (a NumPy array beside a
    GPU tensor is copied there); another Tensor must already be on it.
    """
    # the common cases, kept fast: two tensors of one dtype; a float tensor and an int or float
    if isinstance(a, Tensor):
        if isinstance(b, Tensor):
            if a.dtype == b.dtype and (a.dtype.kind == "f" or not floating):
                return a, b
        elif a.dtype.kind == "f" and type(b) in (int, float):
            return a, _constant(b, a.dtype, a)
    elif b.dtype.kind == "f" and type(a) in (int, float):
        return _constant(a, b.dtype, b), b
    like = a if isinstance(a, Tensor) else b
    a, b = _as_operand(a, like), _as_operand(b, like)
    dtype = result_type(a, b)
    if floating and dtype.kind != "f":
        dtype = backend.get_default_dtype()
    return _cast(a, dtype, like), _cast(b, dtype, like)


def _same_dtype(what, a, b):
    """Operands of an op that does not promote (matmul, as in PyTorch): one dtype, or an error."""
    like = a if isinstance(a, Tensor) else b
    a, b = _as_operand(a, like), _as_operand(b, like)
    if is_number(a) or is_number(b):
        raise ArgumentError(f"{what} needs two tensors, got a number")
    if a.dtype != b.dtype:
        raise DTypeError(f"{what} needs operands of one dtype, got {a.dtype} and {b.dtype}; cast one with .to(dtype)")
    return a, b


def _to_arguments(args, device=None, dtype=None):
    """(device or None, dtype or None) from the arguments of `Tensor.to` / `Module.to`: devices
    (a `tinygen.device`, "cpu", "cuda", "cuda:1"), dtypes, or a tensor (its device and dtype)."""
    for arg in args:
        if isinstance(arg, Tensor):
            device, dtype = arg.device, arg.dtype
        elif isinstance(arg, backend.device) or (isinstance(arg, str) and arg.split(":")[0].strip().lower() in ("cpu", "cuda")):
            device = arg
        else:
            dtype = arg
    return (None if device is None else backend.device(device)), (None if dtype is None else np.dtype(dtype))


def _size(args):
    """Accept both f(2, 3) and f((2, 3)) for shapes, as PyTorch does."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    for n in args:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise ArgumentError(f"sizes must be integers, got {args}")
    return tuple(int(n) for n in args)


def _reshape_target(old, shape):
    """Resolve one -1 in `shape` and check that the element count is unchanged."""
    total = int(np.prod(old))
    known = int(np.prod([n for n in shape if n != -1]))
    if shape.count(-1) == 1 and known > 0 and total % known == 0:
        shape = tuple(total // known if n == -1 else n for n in shape)
    if any(n < 0 for n in shape) or int(np.prod(shape)) != total:
        raise ShapeError(f"cannot reshape a tensor of shape {old} into {shape}")
    return shape


def _unwrapped(index):
    """`index` with its tensors replaced by their arrays."""
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index.data if isinstance(index, Tensor) else index


# --- creation -------------------------------------------------------------------------------


def tensor(data, dtype=None, requires_grad=False, device=None):
    """A new tensor holding a copy of `data` (nested lists, numbers, arrays or a tensor).

    It is placed on `device`; without one, a tensor's or CuPy array's data stays on its device
    and everything else goes to the default device (`tinygen.set_default_device`).
    """
    if isinstance(data, Tensor):
        data = data.data
    arr = _as_array(data, dtype)
    if arr is data or getattr(arr, "base", None) is not None:
        arr = arr.copy()
    return Tensor(arr, requires_grad=requires_grad, device=device)


def _float_dtype(dtype):
    dtype = backend.get_default_dtype() if dtype is None else np.dtype(dtype)
    return dtype


def _filled(size, value, dtype, device):
    """A new array of `size` filled with `value`, made on its device (no copy from the host)."""
    dev = backend.get_default_device() if device is None else backend.device(device)
    if dev.type == "cpu":
        return np.zeros(size, dtype) if value == 0 else np.full(size, value, dtype)
    arr = backend.empty(size, dtype, dev)
    arr.fill(value)
    return arr


def zeros(*size, dtype=None, requires_grad=False, device=None):
    return Tensor._from_array(_filled(_size(size), 0, _float_dtype(dtype), device), requires_grad=requires_grad)


def ones(*size, dtype=None, requires_grad=False, device=None):
    return Tensor._from_array(_filled(_size(size), 1, _float_dtype(dtype), device), requires_grad=requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False, device=None):
    """A tensor of `size` filled with `fill_value`; without a dtype, the value's, as in PyTorch:
    bool, int64 for an int, the default float dtype for a float."""
    if dtype is None and is_number(fill_value):
        dtype = number_dtype(fill_value)
    arr = _filled(_size((size,)), fill_value, _float_dtype(dtype), device)
    return Tensor._from_array(arr, requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad=False, device=None):
    return zeros(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, device=device or t.device)


def ones_like(t, dtype=None, requires_grad=False, device=None):
    return ones(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, device=device or t.device)


# NOTE: randn and rand draw on the CPU from the one generator and copy to the device, so a seed
# gives the same numbers (and the same initial weights) on every device. The bulk noise of the
# diffusion models is drawn on the device, inside the kernels of tinygen.kernels.diffusion.


def randn(*size, dtype=None, requires_grad=False, device=None):
    """Samples of N(0, 1) from the generator seeded by `manual_seed`."""
    dtype = _float_dtype(dtype)
    if dtype.kind != "f":
        raise DTypeError(f"randn makes floating-point tensors, got dtype {dtype}")
    arr = backend.generator().standard_normal(_size(size), dtype=dtype)
    return Tensor(arr, requires_grad=requires_grad, device=device)


def rand(*size, dtype=None, requires_grad=False, device=None):
    """Samples of U[0, 1) from the generator seeded by `manual_seed`."""
    dtype = _float_dtype(dtype)
    if dtype.kind != "f":
        raise DTypeError(f"rand makes floating-point tensors, got dtype {dtype}")
    arr = backend.generator().random(_size(size), dtype=dtype)
    return Tensor(arr, requires_grad=requires_grad, device=device)


def randn_like(t):
    return randn(t.shape, dtype=t.dtype, device=t.device)


def arange(start, end=None, step=1, dtype=None, device=None):
    """Evenly spaced values in [start, end): int64 for integer arguments, as in PyTorch."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ArgumentError("arange step must not be zero")
    integral = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    if dtype is None:
        dtype = np.int64 if integral else backend.get_default_dtype()
    return Tensor(np.arange(start, end, step, dtype=np.dtype(dtype)), device=device)


def cat(tensors, dim=0):
    """Join tensors along an existing dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ArgumentError("cat needs at least one tensor")
    if any(t.ndim == 0 for t in tensors):
        raise ShapeError(f"cat joins tensors along a dimension; zero-dimensional ones have none, got shapes "
                         f"{[tuple(x.shape) for x in tensors]} (stack them instead)")
    (axis,) = _dims(dim, tensors[0].ndim)
    for t in tensors[1:]:
        if t.ndim != tensors[0].ndim or any(
            a != b for i, (a, b) in enumerate(zip(t.shape, tensors[0].shape)) if i != axis
        ):
            raise ShapeError(
                f"cat along dim {axis} needs equal shapes elsewhere, got "
                f"{[tuple(x.shape) for x in tensors]}"
            )
    dtype = result_type(*tensors)  # as torch.cat: float32 beside int64 gives float32
    return apply(ops.Cat, *(_cast(t, dtype, t) for t in tensors), axis=axis)


def stack(tensors, dim=0):
    """Join equally shaped tensors along a new dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ArgumentError("stack needs at least one tensor")
    if any(t.shape != tensors[0].shape for t in tensors):
        raise ShapeError(f"stack needs equal shapes, got {[tuple(t.shape) for t in tensors]}")
    return cat([t.unsqueeze(dim) for t in tensors], dim)
