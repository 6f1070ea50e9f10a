"""Layers and losses as functions, with PyTorch's names and argument order.

`conv2d`, `conv_transpose2d` and `unfold` call primitives backed by the kernels in
`tinygen.kernels.conv2d` (the pooling functions too, through `Unfold`); `pad` calls `Pad`;
`leaky_relu`, `silu`, `group_norm` and `batch_norm` call fused primitives with hand-written
backwards (`tinygen.kernels.normalization`); everything else is composed from tensor operations,
so its gradient comes from autograd. Arguments are checked here, where the user enters, and a bad
one raises an error naming the argument, the value found and the value expected.
"""

import math

import numpy as np

from tinygen import backend, ops
from tinygen.errors import ArgumentError, DTypeError, ShapeError
from tinygen.kernels.conv2d import conv_output_size, conv_transpose_output_size
from tinygen.tensor import Tensor, apply

# --- argument checks ------------------------------------------------------------------------


def _pair(value, name, minimum):
    """Normalise an int or (int, int) argument to a pair and check its range."""
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)  # a float is reported below
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise ArgumentError(f"{name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ArgumentError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_tensor(x, name, ndim=None, floating=True):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tinygen Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ShapeError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if floating and x.dtype.kind != "f":
        raise DTypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")


def _check_conv(input, weight, bias, in_channels_axis, bias_channels):
    _check_tensor(input, "input", 4)
    _check_tensor(weight, "weight", 4)
    if input.shape[1] != weight.shape[in_channels_axis]:
        raise ShapeError(
            f"input has {input.shape[1]} channels (shape {tuple(input.shape)}) but weight of shape "
            f"{tuple(weight.shape)} expects {weight.shape[in_channels_axis]}"
        )
    if bias is not None:
        _check_tensor(bias, "bias", 1)
        if bias.shape[0] != bias_channels:
            raise ShapeError(f"bias has shape {tuple(bias.shape)}, expected ({bias_channels},)")
    if input.dtype != weight.dtype:
        raise DTypeError(f"input is {input.dtype} but weight is {weight.dtype}")


def _add_channel_bias(y, bias):
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


def _check_output_size(input_hw, kernel_hw, stride, padding, dilation, what):
    out = tuple(conv_output_size(n, k, s, p, d) for n, k, s, p, d in zip(input_hw, kernel_hw, stride, padding, dilation))
    if min(out) < 1:
        raise ShapeError(
            f"{what}: input of size {tuple(input_hw)} with kernel {tuple(kernel_hw)}, stride {stride}, "
            f"padding {padding}, dilation {dilation} gives output size {out}; it must be at least 1"
        )
    return out


def _no_groups(groups):
    if groups != 1:
        raise ArgumentError(f"groups={groups} is not supported; tinygen convolutions have groups=1")


# --- linear and convolution -----------------------------------------------------------------


def linear(input, weight, bias=None):
    """y = x W^T + b, with weight of shape (out_features, in_features)."""
    _check_tensor(input, "input")
    _check_tensor(weight, "weight", 2)
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"input of shape {tuple(input.shape)} does not match weight of shape "
            f"{tuple(weight.shape)}: the last dimension must be {weight.shape[1]}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ShapeError(f"bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},) for weight of shape "
                         f"{tuple(weight.shape)}")
    out = input @ weight.T
    return out if bias is None else out + bias


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation of (N, Cin, H, W) with weight (Cout, Cin, kh, kw)."""
    _no_groups(groups)
    _check_conv(input, weight, bias, 1, weight.shape[0] if weight.ndim == 4 else None)
    stride, padding, dilation = _pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation, "dilation", 1)
    _check_output_size(input.shape[2:], weight.shape[2:], stride, padding, dilation, "conv2d")
    y = apply(ops.Conv2d, input, weight, stride=stride, padding=padding, dilation=dilation)
    return _add_channel_bias(y, bias)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The adjoint of conv2d: (N, Cin, H, W) with weight (Cin, Cout, kh, kw) -> (N, Cout, Ho, Wo),
    Ho = (H - 1) stride - 2 padding + dilation (kh - 1) + output_padding + 1."""
    _no_groups(groups)
    _check_conv(input, weight, bias, 0, weight.shape[1] if weight.ndim == 4 else None)
    stride, padding, dilation = _pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation, "dilation", 1)
    output_padding = _pair(output_padding, "output_padding", 0)
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= max(s, d):
            raise ArgumentError(
                f"output_padding {output_padding} must be smaller than stride {stride} or dilation {dilation}"
            )
    out_hw = tuple(map(conv_transpose_output_size, input.shape[2:], weight.shape[2:], stride, padding, output_padding, dilation))
    if min(out_hw) < 1:
        raise ShapeError(f"conv_transpose2d: input of size {tuple(input.shape[2:])} gives output size {out_hw}")
    y = apply(
        ops.ConvTranspose2d, input, weight, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation
    )
    return _add_channel_bias(y, bias)


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Extract sliding windows: (N, C, H, W) -> (N, C * kh * kw, L), as torch.nn.functional.unfold."""
    _check_tensor(input, "input", 4, floating=False)
    kernel_size = _pair(kernel_size, "kernel_size", 1)
    stride, padding, dilation = _pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation, "dilation", 1)
    _check_output_size(input.shape[2:], kernel_size, stride, padding, dilation, "unfold")
    cols = apply(ops.Unfold, input, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)
    n, c, kh, kw, ho, wo = cols.shape
    return cols.reshape(n, c * kh * kw, ho * wo)  # (N, C, kh, kw, Ho, Wo) -> (N, C*kh*kw, L)


# --- pooling and resampling -----------------------------------------------------------------


def pool_arguments(kernel_size, stride, padding, dilation, what):
    """Check pooling arguments and return them as pairs; stride defaults to kernel_size.

    Shared by the pooling functions and the pooling layers (which check at construction).
    """
    kernel_size = _pair(kernel_size, "kernel_size", 1)
    stride = kernel_size if stride is None else _pair(stride, "stride", 1)
    padding, dilation = _pair(padding, "padding", 0), _pair(dilation, "dilation", 1)
    if any(2 * p > k for p, k in zip(padding, kernel_size)):
        raise ArgumentError(f"{what}: padding {padding} must be at most half of kernel_size {kernel_size}")
    return kernel_size, stride, padding, dilation


def _windows(input, kernel_size, stride, padding, dilation, pad_value, what):
    """(N, C, H, W) -> (N, C, kh*kw, Ho, Wo): every pooling window along axis 2."""
    _check_tensor(input, "input", 4)
    kernel_size, stride, padding, dilation = pool_arguments(kernel_size, stride, padding, dilation, what)
    ho, wo = _check_output_size(input.shape[2:], kernel_size, stride, padding, dilation, what)
    if any(padding):
        (ph, pw) = padding
        input = apply(ops.Pad, input, widths=((0, 0), (0, 0), (ph, ph), (pw, pw)), value=pad_value)
    cols = apply(ops.Unfold, input, kernel_size=kernel_size, stride=stride, padding=(0, 0), dilation=dilation)
    n, c = input.shape[:2]
    return cols.reshape(n, c, kernel_size[0] * kernel_size[1], ho, wo)  # (N, C, kh*kw, Ho, Wo)


def avg_pool2d(input, kernel_size, stride=None, padding=0):
    """Mean over each window; zero padding counts in the mean (count_include_pad=True)."""
    return _windows(input, kernel_size, stride, padding, 1, 0.0, "avg_pool2d").mean(2)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1):
    """Maximum over each window (padding is -inf). NOTE: tied maxima share the gradient."""
    return _windows(input, kernel_size, stride, padding, dilation, -np.inf, "max_pool2d").amax(2)


def interpolate(input, size=None, scale_factor=None, mode="nearest"):
    """Resize (N, C, H, W) by nearest neighbour, with PyTorch's source indices: floor(dst * (in / out))
    for `size`, floor(dst / scale_factor) for `scale_factor`, in float32 (see `_nearest_source`)."""
    _check_tensor(input, "input", 4)
    if mode != "nearest":
        raise ArgumentError(f"interpolate supports mode='nearest' only, got {mode!r}")
    if (size is None) == (scale_factor is None):
        raise ArgumentError("interpolate needs exactly one of size and scale_factor")
    h, w = input.shape[2:]
    if size is not None:
        out_h, out_w = _pair(size, "size", 1)
        sh = sw = None
    else:
        sh, sw = (scale_factor, scale_factor) if np.isscalar(scale_factor) else scale_factor
        if sh <= 0 or sw <= 0:
            raise ArgumentError(f"scale_factor must be positive, got {scale_factor!r}")
        out_h, out_w = int(math.floor(h * sh)), int(math.floor(w * sw))
        if min(out_h, out_w) < 1:
            raise ShapeError(
                f"interpolate: input of size {(h, w)} with scale_factor {scale_factor!r} gives output size "
                f"{(out_h, out_w)}; it must be at least 1"
            )
    rows, cols = _nearest_source(h, out_h, sh), _nearest_source(w, out_w, sw)
    fh, fw = out_h // h, out_w // w
    repeats = fh * h == out_h and fw * w == out_w
    if repeats and (rows == np.arange(out_h) // fh).all() and (cols == np.arange(out_w) // fw).all():
        n, c = input.shape[:2]  # integer upsampling: a broadcast, no gather
        x = input.reshape(n, c, h, 1, w, 1).expand(n, c, h, fh, w, fw)
        return x.reshape(n, c, out_h, out_w)  # (N, C, H, fh, W, fw) -> (N, C, H*fh, W*fw)
    return input[:, :, rows[:, None], cols[None, :]]


def _nearest_source(n_in, n_out, scale_factor):
    """The input index each output index copies, as PyTorch's 'nearest' computes it.

    NOTE: PyTorch reads floor(dst * scale) in float32, with scale = 1 / scale_factor or, for a
    size, in / out; not the exact floor(dst * in / out): 5 pixels scaled by 1.7 give 8, and dst 5
    reads 2 (5 / 1.7 = 2.94), not 3; 26 rows resized to 22 read row 12 at dst 11, not 13 (the
    float32 product rounds 11 * 26/22 = 13 down). Sizes equal to in or 2 * in are exact copies.
    """
    dst = np.arange(n_out)
    if n_out in (n_in, 2 * n_in):
        return dst * n_in // n_out
    scale = np.float32(n_in) / np.float32(n_out) if scale_factor is None else np.float32(1.0 / scale_factor)
    src = np.floor(dst.astype(np.float32) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


# --- activations ----------------------------------------------------------------------------


def relu(input):
    return input.relu()


def leaky_relu(input, negative_slope=0.01):
    """x for x > 0, negative_slope * x below (one fused primitive, `ops.LeakyRelu`; derivative 0 at 0)."""
    return apply(ops.LeakyRelu, input.to(dtype=np.result_type(input.dtype, np.float32)), negative_slope=negative_slope)


def sigmoid(input):
    return input.sigmoid()


def tanh(input):
    return input.tanh()


def silu(input):
    """x * sigmoid(x), the swish activation of the DDPM UNet (one fused primitive, `ops.SiLU`)."""
    # The kernels take float32 and float64: integers and float16 are promoted as NumPy would with float32.
    return apply(ops.SiLU, input.to(dtype=np.result_type(input.dtype, np.float32)))


def softplus(input):
    """log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): no overflow for large |x|.

    NOTE: written so the kink conventions cancel at x = 0: max(x, 0) as clamp (derivative 1 at 0)
    and -|x| as -clamp(x, min=0) - relu(-x) (derivative -1 at 0) give softplus'(0) = 1 - 1/2 = 1/2,
    where relu(x) + log1p(exp(-abs(x))) would give 0.
    """
    positive = input.clamp(min=0)
    return positive + (-positive - (-input).relu()).exp().log1p()


def softmax(input, dim):
    return input.softmax(dim)


def log_softmax(input, dim):
    return input.log_softmax(dim)


def logsumexp(input, dim, keepdim=False):
    return input.logsumexp(dim, keepdim)


# --- attention -----------------------------------------------------------------------------


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """softmax(Q K^T scale + M) V over the last two dimensions (Vaswani et al. 2017, eq. 1), as
    torch.nn.functional.scaled_dot_product_attention: query (..., L, E), key (..., S, E) and value
    (..., S, Ev) -> (..., L, Ev), the leading (batch, head) dimensions broadcast.

    scale defaults to 1 / sqrt(E). attn_mask broadcasts to (..., L, S): a boolean mask keeps the
    scores where it is True (a False one gets weight 0), a float mask is added to the scores.
    is_causal masks position j > i (the lower-triangular mask, L x S). dropout_p zeroes attention
    weights with that probability (inverted dropout), always, as PyTorch does: pass 0 in eval.
    Composed from matmul, softmax and dropout, so its gradient comes from autograd.
    NOTE: a query whose every key is masked gets the weights 0 and the output 0, as PyTorch (2.5
    on) gives, not the nan of 0 / 0.

    >>> q = Tensor(np.eye(2, dtype=np.float32)[None])  # (1, L=2, E=2)
    >>> v = Tensor(np.array([[[1.0], [3.0]]], np.float32))  # (1, S=2, Ev=1)
    >>> scaled_dot_product_attention(q, q, v, is_causal=True).numpy().ravel().tolist()  # doctest: +ELLIPSIS
    [1.0, 2.3395...]
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(t, name)
        if t.ndim < 2:
            raise ShapeError(f"scaled_dot_product_attention: {name} must have at least 2 dimensions (..., length, "
                             f"features), got shape {tuple(t.shape)}")
    if query.shape[-1] != key.shape[-1]:
        raise ShapeError(f"scaled_dot_product_attention: query {tuple(query.shape)} and key {tuple(key.shape)} "
                         f"must have the same feature size E (last dimension)")
    if key.shape[-2] != value.shape[-2]:
        raise ShapeError(f"scaled_dot_product_attention: key {tuple(key.shape)} and value {tuple(value.shape)} "
                         f"must have the same length S (second-to-last dimension)")
    if not 0 <= dropout_p <= 1:
        raise ArgumentError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}")
    if is_causal and attn_mask is not None:
        raise ArgumentError("scaled_dot_product_attention: pass attn_mask or is_causal=True, not both")
    L, S = query.shape[-2], key.shape[-2]
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    # the scale goes onto Q (L E numbers), not onto the scores (L S numbers): a smaller product and gradient
    scores = (query * scale) @ key.transpose(-2, -1)  # (..., L, E) @ (..., E, S) -> (..., L, S)
    if is_causal:
        attn_mask = np.tril(np.ones((L, S), dtype=bool))
    if attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
        mask = mask if hasattr(mask, "dtype") else np.asarray(mask)
        try:
            fits = np.broadcast_shapes(tuple(mask.shape), tuple(scores.shape)) == tuple(scores.shape)
        except ValueError:
            fits = False
        if not fits:  # as torch: the mask broadcasts to the scores, it does not add dimensions to them
            raise ShapeError(f"scaled_dot_product_attention: attn_mask of shape {tuple(mask.shape)} does not "
                             f"broadcast to the scores' shape {tuple(scores.shape)} (..., L, S)")
        if mask.dtype == bool:  # True: take part; False: -inf before the softmax, weight 0 after it
            xp = backend.get_array_module(scores.data)
            mask = xp.where(backend.to_device(mask, scores.device), 0.0, -math.inf).astype(scores.dtype)
            scores = scores + Tensor(mask, device=scores.device)
        elif mask.dtype.kind == "f":
            scores = scores + (attn_mask if isinstance(attn_mask, Tensor) else Tensor(mask, device=scores.device))
        else:
            raise DTypeError(f"scaled_dot_product_attention: attn_mask must be boolean or floating, got dtype "
                             f"{mask.dtype}")
    weights = scores.softmax(-1) if attn_mask is None else _masked_softmax(scores)  # (..., L, S), rows sum to 1
    if dropout_p:
        weights = dropout(weights, dropout_p, training=True)
    return weights @ value  # (..., L, S) @ (..., S, Ev) -> (..., L, Ev)


def _masked_softmax(scores):
    """softmax over the last axis of scores that may hold -inf (masked), 0 on a row that is all -inf."""
    xp = backend.get_array_module(scores.data)
    top = scores.data.max(-1, keepdims=True)
    dead = top == -math.inf  # a row with nothing to attend to
    shift = xp.where(dead, 0, top).astype(scores.dtype)  # as softmax's shift by the row's max, 0 on a dead row
    e = (scores - Tensor(shift, device=scores.device)).exp()  # exp(-inf) = 0: the masked weights
    return e / (e.sum(-1, keepdim=True) + Tensor(dead.astype(scores.dtype), device=scores.device))  # 0 / 1 on a dead row


# --- normalisation and regularisation -------------------------------------------------------


def _affine(x, weight, bias, shape):
    if weight is not None:
        x = x * weight.reshape(shape)
    if bias is not None:
        x = x + bias.reshape(shape)
    return x


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalise each channel (dim 1) by batch statistics in training, running ones in eval.

    In training the running statistics (arrays or tensors, updated in place) move towards the
    batch's: running = (1 - momentum) running + momentum batch, with the unbiased variance.
    """
    _check_tensor(input, "input", (2, 3, 4))
    c = input.shape[1]
    _check_per_channel("batch_norm", input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    shape = (1, c) + (1,) * (input.ndim - 2)
    if training:
        if input.numel() // c < 2:
            raise ShapeError(f"batch_norm in training needs more than one value per channel, got shape {tuple(input.shape)}")
        running = [t.data if isinstance(t, Tensor) else t for t in (running_mean, running_var)]
        input, weight, bias = _norm_arguments(input, weight, bias)
        return apply(ops.BatchNorm, input, weight, bias, eps=eps,
                     running=None if running[0] is None and running[1] is None else (*running, momentum))
    if running_mean is None or running_var is None:
        raise ArgumentError("batch_norm in eval mode needs running_mean and running_var")
    x = (input - Tensor(running_mean).reshape(shape)) / (Tensor(running_var).reshape(shape) + eps).sqrt()
    return _affine(x, weight, bias, shape)


def _check_per_channel(op, input, **vectors):
    """Each given vector (weight, bias, running statistics) holds one value per channel of input."""
    c = input.shape[1]
    for name, t in vectors.items():
        if t is not None and tuple(t.shape) != (c,):
            raise ShapeError(f"{op}: {name} has shape {tuple(t.shape)}, expected ({c},) for the {c} channels "
                             f"of input {tuple(input.shape)}")


def _norm_arguments(input, weight, bias):
    """input, weight and bias as tensors of one floating dtype (at least float32), the missing
    weight as ones and bias as zeros (constants)."""
    xp = backend.get_array_module(input.data)
    dtype = xp.result_type(*(t.dtype for t in (input, weight, bias) if t is not None), np.float32)
    c = input.shape[1]
    weight = Tensor(xp.ones(c, dtype)) if weight is None else weight
    bias = Tensor(xp.zeros(c, dtype)) if bias is None else bias
    return (t.to(dtype=dtype) for t in (input, weight, bias))


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise each group of C / num_groups channels over the group and the spatial dims."""
    _check_tensor(input, "input", (2, 3, 4, 5))
    n, c = input.shape[:2]
    if num_groups < 1 or c % num_groups:
        raise ArgumentError(f"num_groups={num_groups} must divide the {c} channels")
    _check_per_channel("group_norm", input, weight=weight, bias=bias)
    return apply(ops.GroupNorm, *_norm_arguments(input, weight, bias), num_groups=num_groups, eps=eps)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing dimensions given by `normalized_shape`."""
    _check_tensor(input, "input")
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(normalized_shape)
    if tuple(input.shape[input.ndim - k :]) != normalized_shape or k == 0:
        raise ShapeError(f"layer_norm over {normalized_shape} does not match input shape {tuple(input.shape)}")
    dims = tuple(range(input.ndim - k, input.ndim))
    x = (input - input.mean(dims, keepdim=True)) / (input.var(dims, keepdim=True, correction=0) + eps).sqrt()
    return _affine(x, weight, bias, normalized_shape)


def dropout(input, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1 / (1 - p) (inverted dropout)."""
    if not 0 <= p <= 1:
        raise ArgumentError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0
    keep = backend.generator().random(input.shape) >= p  # drawn on the CPU, as randn (see tinygen.tensor)
    return input * Tensor((keep / (1 - p)).astype(input.dtype), device=input.device)


def embedding(input, weight):
    """Rows of `weight` (num_embeddings, dim) picked by the integer indices in `input`."""
    idx = input.data if isinstance(input, Tensor) else np.asarray(input)
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"embedding indices must be integers, got dtype {idx.dtype}")
    if _out_of_range(idx, weight.shape[0]):
        raise ArgumentError(
            f"embedding index out of range: found values in [{int(idx.min())}, {int(idx.max())}], "
            f"the table has {weight.shape[0]} rows"
        )
    return weight[idx]


def _out_of_range(idx, n):
    """Whether an index array holds a value outside [0, n): one check (one wait for a GPU array)."""
    return bool(idx.size) and bool(((idx < 0) | (idx >= n)).any())


def pad(input, pad, mode="constant", value=0.0):
    """Constant padding with PyTorch's order: (left, right, top, bottom, ...) from the last dim."""
    if mode != "constant":
        raise ArgumentError(f"pad supports mode='constant' only, got {mode!r}")
    if any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) for p in pad):
        raise ArgumentError(f"pad widths must be integers, got {tuple(pad)}")
    if len(pad) % 2 or len(pad) // 2 > input.ndim or any(p < 0 for p in pad):
        raise ArgumentError(f"pad must hold non-negative (before, after) pairs for at most {input.ndim} dims, got {pad}")
    widths = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        widths[input.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    return apply(ops.Pad, input, widths=tuple(widths), value=value)


# --- losses ---------------------------------------------------------------------------------


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ArgumentError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_same_shape(input, target, what):
    if tuple(input.shape) != tuple(target.shape):
        raise ShapeError(f"{what}: input shape {tuple(input.shape)} and target shape {tuple(target.shape)} differ")


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def mse_loss(input, target, reduction="mean"):
    target = _as_tensor(target)
    _check_same_shape(input, target, "mse_loss")
    diff = input - target
    return _reduce(diff * diff, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], computed from the logits x as
    (1 - t) x + (1 + (p - 1) t) softplus(-x), which never takes the log of 0."""
    target = _as_tensor(target)
    _check_same_shape(input, target, "binary_cross_entropy_with_logits")
    log_weight = 1 if pos_weight is None else 1 + (pos_weight - 1) * target
    loss = (1 - target) * input + log_weight * softplus(-input)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def cross_entropy(input, target, weight=None, reduction="mean", label_smoothing=0.0):
    """Negative log-likelihood of class indices `target` (N,) under logits `input` (N, C).

    With `weight`, 'mean' divides by the summed weights of the targets, as PyTorch does.
    """
    _check_tensor(input, "input", 2)
    idx = target.data if isinstance(target, Tensor) else np.asarray(target)
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"cross_entropy targets must be integer class indices, got dtype {idx.dtype}")
    if idx.shape != input.shape[:1]:
        raise ShapeError(f"cross_entropy: target shape {idx.shape} must be ({input.shape[0]},)")
    n, c = input.shape
    if _out_of_range(idx, c):
        raise ArgumentError(f"cross_entropy: targets must be in [0, {c - 1}], found [{int(idx.min())}, {int(idx.max())}]")
    if not 0 <= label_smoothing <= 1:
        raise ArgumentError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    logp = input.log_softmax(1)
    w = None if weight is None else _as_tensor(weight)
    nll = -logp[backend.get_array_module(input.data).arange(n), idx]
    if w is not None:
        nll = nll * w[idx]
    if label_smoothing:
        smooth = -(logp * w.reshape(1, c)).sum(1) if w is not None else -logp.sum(1)
        nll = (1 - label_smoothing) * nll + label_smoothing / c * smooth
    if reduction == "mean" and w is not None:
        return nll.sum() / w[idx].sum()
    return _reduce(nll, reduction)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """0.5 (log max(var, eps) + (input - target)^2 / max(var, eps)) [+ 0.5 log 2 pi].

    As in PyTorch, the clamp of var to eps does not block its gradient.
    """
    target, var = _as_tensor(target), _as_tensor(var)
    _check_same_shape(input, target, "gaussian_nll_loss")
    if (var.data < 0).any():
        raise ArgumentError("gaussian_nll_loss: var has negative entries")
    var = var + (var.clamp(min=eps) - var).detach()
    loss = 0.5 * (var.log() + (input - target) ** 2 / var)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)
