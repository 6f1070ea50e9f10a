"""The primitive ops: the only operations with hand-written backward passes.

Each primitive is a class with two static methods side by side, `forward(ctx, *arrays, **params)`
and `backward(ctx, grad_out)`, on raw arrays (NumPy or CuPy: `xp = get_array_module(x)`);
`tinygen.tensor.apply(op, *tensors)` runs one and records it in the graph. This module knows
arrays, not tensors: it imports nothing from tinygen.tensor. A binary op's backward returns its
gradients in the broadcast shape; the engine sums each down to its input's shape. Everything
else in tinygen (mean, var, softmax, layer norm, the losses, pooling) is composed from these, so
its gradient follows from the chain rule and is covered by the same gradient checks. GroupNorm,
BatchNorm, LeakyRelu and SiLU could be composed too, and were: they are primitives because the DDPM UNet
and the DCGAN spend much of their step in them, and one fused kernel beats ten NumPy passes.

| group       | primitives                                                   |
| ----------- | ------------------------------------------------------------ |
| binary      | Add, Sub, Mul, Div, Pow, MatMul (NumPy broadcasting)          |
| unary       | Neg, Exp, Log, Log1p, Sqrt, Abs, Relu, Sigmoid, Tanh, Clamp, Cast |
| reduction   | Sum, Max                                                     |
| movement    | Reshape, Permute, Expand, GetItem, Pad, Cat, ToDevice        |
| convolution | Unfold, Conv2d, ConvTranspose2d (kernels in tinygen.kernels)  |
| fused       | GroupNorm, BatchNorm (training), LeakyRelu, SiLU (kernels in tinygen.kernels.normalization) |

Conventions at the kinks (NOTE: tested in tests/test_ops.py): relu'(0) = 0, abs'(0) = 0, clamp
passes the gradient where min <= x <= max (boundaries included), and a maximum shared by several
elements splits the gradient equally among them (as torch.amax does).
"""

import numpy as np

from tinygen.kernels import conv2d as conv_kernels
from tinygen.kernels import normalization as norm_kernels
from tinygen import backend
from tinygen.backend import get_array_module
from tinygen.kernels.dispatch import matmul

# --- binary ---------------------------------------------------------------------------------


class Add:
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, grad_out


class Sub:
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, -grad_out


class Mul:
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        ga = grad_out * b if ctx.needs_input_grad[0] else None
        gb = grad_out * a if ctx.needs_input_grad[1] else None
        return ga, gb


class Div:
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        ga = grad_out / b if ctx.needs_input_grad[0] else None
        gb = -grad_out * a / (b * b) if ctx.needs_input_grad[1] else None
        return ga, gb


class Pow:
    """a ** b; d/da = b a^(b-1), d/db = a^b log(a) (only computed when b requires grad)."""

    @staticmethod
    def forward(ctx, a, b):
        out = a**b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        a, b, out = ctx.saved_tensors
        xp = get_array_module(a)
        ga = gb = None
        # NOTE: as torch, d(a^b)/da = 0 where b = 0 and d(a^b)/db = 0 where a = 0 and b >= 0 (the
        # limits), where the formulas give 0 * 0^-1 and 0 * log 0 = nan: there a^1 and log 1 stand in
        if ctx.needs_input_grad[0]:
            ga = grad_out * b * a ** xp.where(b == 0, 1, b - 1)
        if ctx.needs_input_grad[1]:
            gb = grad_out * out * xp.log(xp.where((a == 0) & (b >= 0), 1, a))
        return ga, gb


class MatMul:
    """Batched matrix product with NumPy's rules for 1-D operands and batch broadcasting."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return matmul(a, b)  # a @ b, on tinygen's BLAS threads while Numba kernels run

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        xp = get_array_module(a)
        # Treat a 1-D a as a row (1, k) and a 1-D b as a column (k, 1), restoring the
        # dimension the product removed, so the 2-D formulas below apply throughout.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = grad_out
        if b.ndim == 1:  # first: for 1-D @ 1-D, g is 0-d and gets its column axis, then its row
            g = xp.expand_dims(g, -1)
        if a.ndim == 1:
            g = xp.expand_dims(g, -2)
        ga = gb = None
        if ctx.needs_input_grad[0]:  # dL/dA = dL/dC B^T, less the row axis a 1-D a was given
            ga = matmul(g, xp.swapaxes(b2, -1, -2))
            ga = ga[..., 0, :] if a.ndim == 1 else ga
        if ctx.needs_input_grad[1]:  # dL/dB = A^T dL/dC, less the column axis a 1-D b was given
            gb = matmul(xp.swapaxes(a2, -1, -2), g)
            gb = gb[..., 0] if b.ndim == 1 else gb
        return ga, gb


# --- unary ----------------------------------------------------------------------------------


class Neg:
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, grad_out):
        return -grad_out


class Exp:
    @staticmethod
    def forward(ctx, x):
        out = get_array_module(x).exp(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        return grad_out * out


class Log:
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).log(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out / x


class Log1p:
    """log(1 + x), accurate for small x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).log1p(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out / (1 + x)


class Sqrt:
    @staticmethod
    def forward(ctx, x):
        out = get_array_module(x).sqrt(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        return grad_out / (2 * out)


class Abs:
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).abs(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * get_array_module(x).sign(x)  # NOTE: abs'(0) = sign(0) = 0


class Relu:
    """max(x, 0): floating x through the fused kernels (tinygen.kernels.normalization), which save
    only the output (relu' is 1 where y > 0); other dtypes (no gradient) through `xp.maximum`."""

    @staticmethod
    def forward(ctx, x):
        if x.dtype.kind != "f":
            return get_array_module(x).maximum(x, 0)
        y = norm_kernels.relu_forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        (y,) = ctx.saved_tensors
        return norm_kernels.relu_backward(grad_out, y)  # NOTE: relu'(0) = 0


class Sigmoid:
    @staticmethod
    def forward(ctx, x):
        # With e = exp(-|x|) <= 1, never overflowing: sigmoid(x) = 1 / (1 + e) for x >= 0 and
        # e / (1 + e) for x < 0, so both tails keep their relative accuracy (one exp, not the
        # two of exp(-logaddexp(0, -x)): SiLU in the diffusion UNet makes this a hot op).
        xp = get_array_module(x)
        e = xp.exp(-xp.abs(x))
        r = 1 / (1 + e)
        out = xp.where(x >= 0, r, e * r)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        return grad_out * out * (1 - out)


class Tanh:
    @staticmethod
    def forward(ctx, x):
        out = get_array_module(x).tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        return grad_out * (1 - out * out)


class Clamp:
    @staticmethod
    def forward(ctx, x, min=None, max=None):
        xp = get_array_module(x)
        inside = xp.ones(x.shape, dtype=bool)
        if min is not None:
            inside &= x >= min
        if max is not None:
            inside &= x <= max
        ctx.save_for_backward(inside)
        return xp.clip(x, min, max)

    @staticmethod
    def backward(ctx, grad_out):
        (inside,) = ctx.saved_tensors
        return grad_out * inside  # NOTE: the boundaries pass the gradient, as in PyTorch


class Cast:
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out.astype(ctx.dtype)


# --- reductions -----------------------------------------------------------------------------


class Sum:
    @staticmethod
    def forward(ctx, x, axis, keepdim):
        ctx.shape, ctx.axis = x.shape, axis
        return x.sum(axis=axis, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad_out):
        xp = get_array_module(grad_out)
        g = xp.expand_dims(grad_out, ctx.axis) if grad_out.ndim < len(ctx.shape) else grad_out
        return xp.broadcast_to(g, ctx.shape)


class Max:
    @staticmethod
    def forward(ctx, x, axis, keepdim):
        ctx.axis, ctx.keepdim = axis, keepdim
        out = x.max(axis=axis, keepdims=True)
        is_max = x == out
        # NOTE: ties share the gradient equally; count[i] = how many elements share max i.
        ctx.save_for_backward(is_max, is_max.sum(axis=axis, keepdims=True).astype(x.dtype))
        return out if keepdim else out.squeeze(axis)

    @staticmethod
    def backward(ctx, grad_out):
        is_max, count = ctx.saved_tensors
        g = grad_out if ctx.keepdim else get_array_module(grad_out).expand_dims(grad_out, ctx.axis)
        return g * is_max / count


# --- movement -------------------------------------------------------------------------------


class Reshape:
    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out.reshape(ctx.shape)


class Permute:
    @staticmethod
    def forward(ctx, x, order):
        ctx.order = order
        return x.transpose(order)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out.transpose(tuple(int(i) for i in np.argsort(ctx.order)))


class Expand:
    @staticmethod
    def forward(ctx, x, shape):
        return get_array_module(x).broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out  # summed down to x's shape by the engine (tinygen.tensor.unbroadcast)


class GetItem:
    """x[index] for any NumPy index: ints, slices, None, Ellipsis, integer and boolean arrays."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.dtype, ctx.index = x.shape, x.dtype, index
        return x[index]

    @staticmethod
    def backward(ctx, grad_out):
        xp = get_array_module(grad_out)
        grad = xp.zeros(ctx.shape, dtype=ctx.dtype)
        if _is_basic_index(ctx.index):
            grad[ctx.index] = grad_out  # a basic index selects each element at most once
        elif xp is np or hasattr(xp.add, "at"):
            xp.add.at(grad, ctx.index, grad_out)  # an index array may repeat elements
        else:  # CuPy before ufunc.at
            import cupyx

            cupyx.scatter_add(grad, ctx.index, grad_out)
        return grad


def _is_basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice)) for p in parts)


class Pad:
    """Constant padding; `widths` holds (before, after) for every axis."""

    @staticmethod
    def forward(ctx, x, widths, value):
        ctx.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape))
        return get_array_module(x).pad(x, widths, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out[ctx.slices]


class Cat:
    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.axis = axis
        ctx.splits = [int(n) for n in np.cumsum([a.shape[axis] for a in arrays])[:-1]]
        return get_array_module(*arrays).concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad_out):
        return tuple(get_array_module(grad_out).split(grad_out, ctx.splits, axis=ctx.axis))


class ToDevice:
    """The same values on another device (a copy); the gradient is copied back to the input's."""

    @staticmethod
    def forward(ctx, x, device):
        ctx.device = backend.device_of(x)
        return backend.to_device(x, device)

    @staticmethod
    def backward(ctx, grad_out):
        return backend.to_device(grad_out, ctx.device)


# --- convolution ----------------------------------------------------------------------------
# stride, padding, dilation, output_padding arrive as (h, w) pairs, validated by
# tinygen.nn.functional; the arithmetic lives in tinygen.kernels.conv2d.


class Unfold:
    """im2col: (N, C, H, W) -> (N, C, kh, kw, Ho, Wo), every kernel window laid out."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation):
        ctx.shape, ctx.params = x.shape, (stride, padding, dilation)
        return conv_kernels.im2col(x, kernel_size, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_out):
        return conv_kernels.col2im(grad_out, ctx.shape, *ctx.params)


class Conv2d:
    @staticmethod
    def forward(ctx, x, w, stride, padding, dilation):
        ctx.save_for_backward(x, w)
        ctx.params = (stride, padding, dilation)
        return conv_kernels.conv2d_forward(x, w, *ctx.params)

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = conv_kernels.conv2d_backward_input(grad_out, w, x.shape[2:], *ctx.params)
        if ctx.needs_input_grad[1]:
            gw = conv_kernels.conv2d_backward_weight(x, grad_out, w.shape[2:], *ctx.params)
        return gx, gw


class ConvTranspose2d:
    @staticmethod
    def forward(ctx, x, w, stride, padding, output_padding, dilation):
        ctx.save_for_backward(x, w)
        ctx.params = (stride, padding, dilation)
        return conv_kernels.conv_transpose2d_forward(x, w, stride, padding, output_padding, dilation)

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = conv_kernels.conv_transpose2d_backward_input(grad_out, w, x.shape[2:], *ctx.params)
        if ctx.needs_input_grad[1]:
            gw = conv_kernels.conv_transpose2d_backward_weight(x, grad_out, w.shape[2:], *ctx.params)
        return gx, gw


# --- fused ------------------------------------------------------------------------------------
# The maths is in tinygen/kernels/normalization/reference.py.


class GroupNorm:
    """x (N, C, *) normalised per sample over groups of C / num_groups channels, then scaled and
    shifted per channel: weight and bias are (C,) arrays of x's dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps):
        y, mean, rstd = norm_kernels.group_norm_forward(x, weight, bias, num_groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.num_groups = num_groups
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean, rstd = ctx.saved_tensors
        return norm_kernels.group_norm_backward(grad_out, x, weight, mean, rstd, ctx.num_groups)


class BatchNorm:
    """x (N, C, *) normalised per channel by the batch's own statistics (training mode), then
    scaled and shifted: weight and bias are (C,) arrays of x's dtype. `running`, if given, is
    (running_mean, running_var, momentum), either array possibly None: the arrays are moved towards the batch's mean and
    unbiased variance in place, running = (1 - momentum) running + momentum batch, as
    torch.nn.functional.batch_norm does inside its kernel."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, running=None):
        y, mean, var = norm_kernels.batch_norm_forward(x, weight, bias, eps)
        if running is not None:
            running_mean, running_var, momentum = running
            if running_mean is not None:
                running_mean *= 1 - momentum
                running_mean += momentum * mean
            if running_var is not None:
                count = x.size // x.shape[1]
                running_var *= 1 - momentum
                running_var += momentum * var * (count / (count - 1))
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean, var = ctx.saved_tensors
        return norm_kernels.batch_norm_backward(grad_out, x, weight, mean, var, ctx.eps)


class LeakyRelu:
    """x for x > 0, negative_slope * x below (floating x); NOTE: derivative 0 at x = 0, like relu."""

    @staticmethod
    def forward(ctx, x, negative_slope):
        ctx.save_for_backward(x)
        ctx.negative_slope = negative_slope
        return norm_kernels.leaky_relu_forward(x, negative_slope)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return norm_kernels.leaky_relu_backward(grad_out, x, ctx.negative_slope)


class SiLU:
    """x * sigmoid(x), floating x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return norm_kernels.silu_forward(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return norm_kernels.silu_backward(grad_out, x)
