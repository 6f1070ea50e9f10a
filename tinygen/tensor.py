"""`Tensor` and reverse-mode automatic differentiation.

A `Tensor` wraps an array (`.data`: a NumPy array, or a CuPy array on a GPU). Every operation on
tensors that require gradients records a `Function` node: the primitive that ran, its input
tensors (`ctx.parents`) and whatever its backward needs (`ctx.save_for_backward`). The nodes form
a directed acyclic graph; `loss.backward()` walks it once in reverse topological order, calls each
node's `backward(ctx, grad_out)` and adds the results into the inputs' gradients (the chain rule:
dL/dx = sum over the uses of x of dL/dy * dy/dx).

Only the primitives in `tinygen/ops.py` have hand-written backward passes. Everything defined here
in terms of them (`mean`, `var`, `softmax`, `logsumexp`, ...) gets its gradient for free.
"""

import builtins
import functools
from collections import namedtuple

import numpy as np

from tinygen import backend
from tinygen.errors import ArgumentError, DTypeError, ShapeError

_grad_enabled = True


def is_grad_enabled():
    """Whether operations are being recorded for backward."""
    return _grad_enabled


class no_grad:
    """Context manager and decorator that stops recording operations (inference, updates).

    >>> x = tensor([1.0, 2.0], requires_grad=True)
    >>> with no_grad():
    ...     y = x * 2
    >>> y.requires_grad
    False
    """

    def __enter__(self):
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        return wrapper


class Function:
    """One node of the graph: a primitive op with `forward` and `backward` on raw arrays.

    Subclasses define two static methods, like `torch.autograd.Function`:
    `forward(ctx, *arrays, **params) -> array` and `backward(ctx, grad_out) -> grad or tuple of
    grads` (one per input, `None` where `ctx.needs_input_grad` is False). `apply` runs forward on
    the inputs' arrays and, if any input requires a gradient, links the result into the graph.
    """

    def __init__(self, *parents):
        self.parents = parents
        self.needs_input_grad = tuple(p.requires_grad for p in parents)
        self.saved_tensors = ()

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays

    @classmethod
    def apply(cls, *inputs, **params):
        ctx = cls(*inputs)
        out = cls.forward(ctx, *(t.data for t in inputs), **params)
        requires_grad = _grad_enabled and any(ctx.needs_input_grad)
        result = Tensor(out, requires_grad=requires_grad)
        if requires_grad:
            result._ctx = ctx
        return result


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

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise DTypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None

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
        return "cpu" if backend.get_array_module(self.data) is np else "cuda"

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

    def __repr__(self):
        body = np.array2string(np.asarray(self.numpy()), separator=", ", prefix="tensor(")
        extras = ""
        if self.dtype not in (backend.get_default_dtype(), np.dtype(np.int64), np.dtype(bool)):
            extras += f", dtype={self.dtype}"
        if self.requires_grad:
            extras += ", requires_grad=True"
        return f"tensor({body}{extras})"

    # --- leaving the graph --------------------------------------------------------------

    def detach(self):
        """The same data (shared, not copied) as a tensor outside the graph."""
        return Tensor(self.data)

    def numpy(self):
        """The data as a NumPy array (shared with the tensor on the CPU)."""
        xp = backend.get_array_module(self.data)
        return self.data if xp is np else xp.asnumpy(self.data)

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
        gradient = _as_array(gradient, dtype=self.dtype)
        if gradient.shape != self.shape:
            raise ShapeError(f"gradient has shape {gradient.shape}, expected {self.shape}")

        grads = {id(self): gradient}
        for node in reversed(self._topological_order()):
            grad = grads.pop(id(node), None)
            if grad is None:
                continue
            ctx = node._ctx
            if ctx is None:  # a leaf: accumulate (copy so no two .grad share memory)
                node.grad = Tensor(grad.copy() if node.grad is None else node.grad.data + grad)
                continue
            if ctx.saved_tensors is None:
                raise RuntimeError(
                    "trying to backward through the graph a second time: its saved buffers "
                    "were freed; pass retain_graph=True to the first backward()"
                )
            input_grads = type(ctx).backward(ctx, grad)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, g in zip(ctx.parents, input_grads):
                if g is None or not parent.requires_grad:
                    continue
                if g.shape != parent.shape:
                    raise RuntimeError(
                        f"{type(ctx).__name__}.backward returned a gradient of shape {g.shape} "
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

    def _wrap(self, other):
        """Turn a Python number or array operand into a constant tensor of a matching dtype."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (bool, int, float)) and not isinstance(other, np.generic):
            kind = self.dtype.kind
            if isinstance(other, float) and kind != "f":
                dtype = backend.get_default_dtype()
            else:
                dtype = self.dtype if kind in "fiu" else None
            return Tensor(backend.get_array_module(self.data).asarray(other, dtype=dtype))
        return Tensor(other)

    def __add__(self, other):
        return ops.Add.apply(self, self._wrap(other))

    def __radd__(self, other):
        return ops.Add.apply(self._wrap(other), self)

    def __sub__(self, other):
        return ops.Sub.apply(self, self._wrap(other))

    def __rsub__(self, other):
        return ops.Sub.apply(self._wrap(other), self)

    def __mul__(self, other):
        return ops.Mul.apply(self, self._wrap(other))

    def __rmul__(self, other):
        return ops.Mul.apply(self._wrap(other), self)

    def __truediv__(self, other):
        return ops.Div.apply(self, self._wrap(other))

    def __rtruediv__(self, other):
        return ops.Div.apply(self._wrap(other), self)

    def __pow__(self, exponent):
        return ops.Pow.apply(self, self._wrap(exponent))

    def __rpow__(self, base):
        return ops.Pow.apply(self._wrap(base), self)

    def __matmul__(self, other):
        return ops.MatMul.apply(self, self._wrap(other))

    def __rmatmul__(self, other):
        return ops.MatMul.apply(self._wrap(other), self)

    def __neg__(self):
        return ops.Neg.apply(self)

    def __pos__(self):
        return self

    # comparisons give boolean tensors outside the graph
    def __lt__(self, other):
        return Tensor(self.data < self._wrap(other).data)

    def __le__(self, other):
        return Tensor(self.data <= self._wrap(other).data)

    def __gt__(self, other):
        return Tensor(self.data > self._wrap(other).data)

    def __ge__(self, other):
        return Tensor(self.data >= self._wrap(other).data)

    def __eq__(self, other):
        return Tensor(self.data == self._wrap(other).data)

    def __ne__(self, other):
        return Tensor(self.data != self._wrap(other).data)

    __hash__ = object.__hash__  # tensors are hashed by identity, as in PyTorch

    def matmul(self, other):
        return self @ other

    def pow(self, exponent):
        return self**exponent

    # --- elementwise ------------------------------------------------------------------

    def exp(self):
        return ops.Exp.apply(self)

    def log(self):
        return ops.Log.apply(self)

    def log1p(self):
        return ops.Log1p.apply(self)

    def sqrt(self):
        return ops.Sqrt.apply(self)

    def abs(self):
        return ops.Abs.apply(self)

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise ArgumentError("clamp needs at least one of min and max")
        return ops.Clamp.apply(self, min=min, max=max)

    def relu(self):
        return ops.Relu.apply(self)

    def sigmoid(self):
        return ops.Sigmoid.apply(self)

    def tanh(self):
        return ops.Tanh.apply(self)

    # --- reductions ---------------------------------------------------------------------

    def sum(self, dim=None, keepdim=False):
        return ops.Sum.apply(self, axis=_dims(dim, self.ndim), keepdim=keepdim)

    def mean(self, dim=None, keepdim=False):
        axes = _dims(dim, self.ndim)
        count = int(np.prod([self.shape[a] for a in axes])) if self.ndim else 1
        return self.sum(axes, keepdim) / count

    def amax(self, dim=None, keepdim=False):
        """Maximum over `dim`. NOTE: ties share the gradient equally (as torch.amax)."""
        return ops.Max.apply(self, axis=_dims(dim, self.ndim), keepdim=keepdim)

    def amin(self, dim=None, keepdim=False):
        return -(-self).amax(dim, keepdim)

    def max(self, dim=None, keepdim=False):
        """With no `dim`, the largest element; with `dim`, `(values, indices)` as in PyTorch."""
        if dim is None:
            return self.amax()
        return MaxResult(self.amax(dim, keepdim), self.argmax(dim, keepdim))

    def min(self, dim=None, keepdim=False):
        if dim is None:
            return self.amin()
        return MaxResult(self.amin(dim, keepdim), self.argmin(dim, keepdim))

    def argmax(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor(self.data.argmax())
        (axis,) = _dims(dim, self.ndim)
        return Tensor(self.data.argmax(axis=axis, keepdims=keepdim))

    def argmin(self, dim=None, keepdim=False):
        return (-self).argmax(dim, keepdim)

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
        shift = self.amax(dim, keepdim=True).detach()
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
        return ops.Reshape.apply(self, shape=new_shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        start, end = _dims((start_dim, end_dim), self.ndim)
        return self.reshape(self.shape[:start] + (-1,) + self.shape[end + 1 :])

    def unsqueeze(self, dim):
        (axis,) = _dims(dim, self.ndim + 1)
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def squeeze(self, dim=None):
        axes = _dims(dim, self.ndim)
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if not (i in axes and n == 1)))

    def permute(self, *dims):
        dims = _dims(_size(dims), self.ndim)
        if sorted(dims) != list(range(self.ndim)):
            raise ArgumentError(f"permute needs a permutation of 0..{self.ndim - 1}, got {dims}")
        return ops.Permute.apply(self, order=dims)

    def transpose(self, dim0, dim1):
        a, b = _dims((dim0, dim1), self.ndim)
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
        return ops.Expand.apply(self, shape=shape)

    def __getitem__(self, index):
        return ops.GetItem.apply(self, index=_index_arrays(index))

    def __setitem__(self, index, value):
        if self.requires_grad and _grad_enabled:
            raise RuntimeError(
                "in-place assignment to a tensor that requires grad would break its gradient; "
                "do it under no_grad() or build a new tensor"
            )
        self.data[_index_arrays(index)] = value.data if isinstance(value, Tensor) else value

    # --- dtype ----------------------------------------------------------------------------

    def to(self, dtype):
        """A copy with another dtype; differentiable between floating-point dtypes."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f" and dtype != self.dtype:  # integer or bool: outside the graph
            return Tensor(self.data.astype(dtype))
        return self if dtype == self.dtype else ops.Cast.apply(self, dtype=dtype)

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def long(self):
        return self.to(np.int64)


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


def _index_arrays(index):
    """Replace tensors inside an index by their arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


# --- creation -------------------------------------------------------------------------------


def tensor(data, dtype=None, requires_grad=False):
    """A new tensor holding a copy of `data` (nested lists, numbers, arrays or a tensor)."""
    if isinstance(data, Tensor):
        data = data.data
    arr = _as_array(data, dtype)
    if arr is data or getattr(arr, "base", None) is not None:
        arr = arr.copy()
    return Tensor(arr, requires_grad=requires_grad)


def _float_dtype(dtype):
    dtype = backend.get_default_dtype() if dtype is None else np.dtype(dtype)
    return dtype


def zeros(*size, dtype=None, requires_grad=False):
    return Tensor(np.zeros(_size(size), dtype=_float_dtype(dtype)), requires_grad=requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return Tensor(np.ones(_size(size), dtype=_float_dtype(dtype)), requires_grad=requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    arr = np.full(_size((size,)), fill_value, dtype=_float_dtype(dtype))
    return Tensor(arr, requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def randn(*size, dtype=None, requires_grad=False):
    """Samples of N(0, 1) from the generator seeded by `manual_seed`."""
    dtype = _float_dtype(dtype)
    if dtype.kind != "f":
        raise DTypeError(f"randn makes floating-point tensors, got dtype {dtype}")
    arr = backend.generator().standard_normal(_size(size), dtype=dtype)
    return Tensor(arr, requires_grad=requires_grad)


def rand(*size, dtype=None, requires_grad=False):
    """Samples of U[0, 1) from the generator seeded by `manual_seed`."""
    dtype = _float_dtype(dtype)
    if dtype.kind != "f":
        raise DTypeError(f"rand makes floating-point tensors, got dtype {dtype}")
    return Tensor(backend.generator().random(_size(size), dtype=dtype), requires_grad=requires_grad)


def randn_like(t):
    return randn(t.shape, dtype=t.dtype)


def arange(start, end=None, step=1, dtype=None):
    """Evenly spaced values in [start, end): int64 for integer arguments, as in PyTorch."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ArgumentError("arange step must not be zero")
    integral = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    if dtype is None:
        dtype = np.int64 if integral else backend.get_default_dtype()
    return Tensor(np.arange(start, end, step, dtype=np.dtype(dtype)))


def cat(tensors, dim=0):
    """Join tensors along an existing dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ArgumentError("cat needs at least one tensor")
    (axis,) = _dims(dim, tensors[0].ndim)
    for t in tensors[1:]:
        if t.ndim != tensors[0].ndim or any(
            a != b for i, (a, b) in enumerate(zip(t.shape, tensors[0].shape)) if i != axis
        ):
            raise ShapeError(
                f"cat along dim {axis} needs equal shapes elsewhere, got "
                f"{[tuple(x.shape) for x in tensors]}"
            )
    return ops.Cat.apply(*tensors, axis=axis)


def stack(tensors, dim=0):
    """Join equally shaped tensors along a new dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ArgumentError("stack needs at least one tensor")
    if any(t.shape != tensors[0].shape for t in tensors):
        raise ShapeError(f"stack needs equal shapes, got {[tuple(t.shape) for t in tensors]}")
    return cat([t.unsqueeze(dim) for t in tensors], dim)


from tinygen import ops  # noqa: E402  (ops needs Function and Tensor from this module)
