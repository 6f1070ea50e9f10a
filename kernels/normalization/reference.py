"""Group normalization and SiLU: the plain array spec of the fused kernels in `cpu_numba.py`.

Written with `xp` (NumPy, or CuPy for GPU arrays), so it also runs on the GPU. Shapes: x is
(N, C, *spatial) with any number of spatial dims (none included), C divisible by G =
num_groups; a group is C/G channels of one sample, M = (C/G) * prod(spatial) values.

GroupNorm (Wu & He, 2018), per sample n and group g:

    mean = (1/M) sum x,    var = (1/M) sum (x - mean)^2,    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd,                                y = xhat * weight[c] + bias[c]

backward, with dy = grad_out and dxhat = dy * weight[c]:

    grad_bias[c]   = sum over n and space of dy
    grad_weight[c] = sum over n and space of dy * xhat
    grad_x         = rstd * (dxhat - mean_group(dxhat) - xhat * mean_group(dxhat * xhat))

(the last line is the gradient of the normalisation: the two means remove the components of
dxhat along the directions mean and var change in). `mean` and `rstd`, (N, G), are what the
forward pass hands the backward one.

BatchNorm in training (Ioffe & Szegedy, 2015) is the same normalisation with one group per
channel c spanning every sample: mean and var over (N, *spatial) of channel c, var biased
(the running variance the caller keeps is the unbiased one), and the same backward with the
means over (N, *spatial). Its forward returns (y, mean, var).

ReLU: y = max(x, 0) (NaN stays NaN); its derivative is 1 where y > 0 and 0 elsewhere, 0 included,
so the backward pass needs only the output.

LeakyReLU (the GANs' activation): y = x for x > 0, slope * x below; its derivative is 1 above 0,
slope below and 0 at 0 (the convention of relu'(0) = 0 that composing it from relus gave).

SiLU (the swish of the DDPM UNet): y = x * sigmoid(x), dy/dx = s * (1 + x * (1 - s)) with
s = sigmoid(x), computed from e = exp(-|x|) <= 1 so that nothing overflows: s = 1 / (1 + e)
for x >= 0 and e / (1 + e) below.
"""

from tinygen.backend import get_array_module


def group_norm_forward(x, weight, bias, num_groups, eps):
    """(y, mean, rstd): y like x; mean and rstd (N, G) in x's dtype. weight, bias: (C,)."""
    xp = get_array_module(x)
    n, c = x.shape[:2]
    g = x.reshape(n, num_groups, -1)
    mean = g.mean(axis=2)
    centered = g - mean[..., None]
    rstd = 1 / xp.sqrt((centered * centered).mean(axis=2) + eps)
    xhat = (centered * rstd[..., None]).reshape(n, c, -1)
    y = xhat * weight[:, None] + bias[:, None]
    return y.reshape(x.shape), mean, rstd


def group_norm_backward(grad_out, x, weight, mean, rstd, num_groups):
    """(grad_x like x, grad_weight (C,), grad_bias (C,)) from the forward pass's mean and rstd."""
    n, c = x.shape[:2]
    xhat = (x.reshape(n, num_groups, -1) - mean[..., None]) * rstd[..., None]  # (N, G, M)
    dy = grad_out.reshape(n, c, -1)
    grad_bias = dy.sum(axis=(0, 2))
    grad_weight = (dy * xhat.reshape(n, c, -1)).sum(axis=(0, 2))
    dxhat = (dy * weight[:, None]).reshape(n, num_groups, -1)
    grad_x = rstd[..., None] * (
        dxhat - dxhat.mean(axis=2, keepdims=True) - xhat * (dxhat * xhat).mean(axis=2, keepdims=True)
    )
    return grad_x.reshape(x.shape), grad_weight, grad_bias


def _channel_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(a, x):
    """A (C,) array shaped to broadcast against x (N, C, *spatial)."""
    return a.reshape((1, -1) + (1,) * (x.ndim - 2))


def batch_norm_forward(x, weight, bias, eps):
    """(y like x, mean (C,), var (C,)) with the batch's statistics per channel; weight, bias (C,)."""
    xp = get_array_module(x)
    axes = _channel_axes(x)
    mean = x.mean(axis=axes)
    centered = x - _per_channel(mean, x)
    var = (centered * centered).mean(axis=axes)
    xhat = centered * _per_channel(1 / xp.sqrt(var + eps), x)
    return xhat * _per_channel(weight, x) + _per_channel(bias, x), mean, var


def batch_norm_backward(grad_out, x, weight, mean, var, eps):
    """(grad_x like x, grad_weight (C,), grad_bias (C,)) from the forward pass's mean and var."""
    xp = get_array_module(x)
    axes = _channel_axes(x)
    rstd = _per_channel(1 / xp.sqrt(var + eps), x)
    xhat = (x - _per_channel(mean, x)) * rstd
    grad_bias = grad_out.sum(axis=axes)
    grad_weight = (grad_out * xhat).sum(axis=axes)
    dxhat = grad_out * _per_channel(weight, x)
    grad_x = rstd * (dxhat - dxhat.mean(axis=axes, keepdims=True) - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))
    return grad_x, grad_weight, grad_bias


def _sigmoid(x):
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))
    r = 1 / (1 + e)
    return xp.where(x >= 0, r, e * r)


def silu_forward(x):
    """x * sigmoid(x)."""
    return x * _sigmoid(x)


def silu_backward(grad_out, x):
    """grad_out * d silu / dx at x."""
    s = _sigmoid(x)
    return grad_out * (s * (1 + x * (1 - s)))


def leaky_relu_forward(x, negative_slope):
    """x where x > 0, negative_slope * x elsewhere."""
    return get_array_module(x).where(x > 0, x, x * negative_slope)


def leaky_relu_backward(grad_out, x, negative_slope):
    """grad_out * (1 where x > 0, negative_slope where x < 0, 0 at 0)."""
    xp = get_array_module(x)
    return xp.where(x > 0, grad_out, xp.where(x < 0, grad_out * negative_slope, 0 * grad_out))


def relu_forward(x):
    """max(x, 0), NaN kept."""
    return get_array_module(x).maximum(x, 0)


def relu_backward(grad_out, y):
    """grad_out where the output y > 0, else 0 (times 0: a NaN gradient stays NaN)."""
    return grad_out * (y > 0)
