"""Group normalization and SiLU on the CPU with Numba: the functions of `reference.py`, fused.

Composed from tinygen's primitive ops, GroupNorm costs about ten passes over the activations
forward and fifteen backward, and SiLU four and five, each a single-threaded NumPy loop into a
fresh array: in the default DDPM UNet's training step they took half of the time the
convolutions took. Here each is two or three passes, parallel over (sample, group) pairs or
over blocks of the flat array:

- `group_norm_forward`: per (n, g), one pass for the mean, one for the variance about it (two
  passes, not E[x^2] - mean^2, which cancels catastrophically when |mean| >> std), one writing
  y; sums in float64.
- `group_norm_backward`: per (n, g), one pass summing dy and dy*xhat per channel (the weight
  and bias gradients, kept per sample and added over samples in order afterwards, so that no
  result depends on the thread count) and dxhat, dxhat*xhat per group; one pass writing dx.
- `silu_forward` / `silu_backward`: one pass each, sigmoid from one exp as in the reference.

Every array returned comes from `_empty` (the tests poison it with NaN). Compiled with
``cache=True, fastmath=False`` for float32 and float64, like the conv kernels.
"""

import numpy as np

from tinygen.backend import load_numba

numba = load_numba()  # through the backend: it applies tinygen's threading policy first
if numba is None:
    raise ImportError("the Numba normalization kernels need Numba: pip install tinygen[cpu]")
prange = numba.prange

_jit = dict(cache=True, fastmath=False, nogil=True)
BLOCK = 1 << 14  # elements per parallel task of the elementwise SiLU kernels


def _empty(shape, dtype):
    """Every array this module returns is allocated here (the tests poison it with NaN)."""
    return np.empty(shape, dtype)


@numba.njit(parallel=True, **_jit)
def _group_norm_forward(x, weight, bias, eps, y, mean, rstd):
    """x, y (N, G, Cg, S); weight, bias (G, Cg); mean, rstd (N, G)."""
    N, G, Cg, S = x.shape
    for q_ in prange(N * G):
        q = np.int64(q_)  # prange's index is unsigned; int64 keeps the index arithmetic integer
        n, g = q // G, q % G
        xs = x[n, g]
        total = 0.0
        for c in range(Cg):
            for s in range(S):
                total += xs[c, s]
        mu = total / (Cg * S)
        square = 0.0
        for c in range(Cg):
            for s in range(S):
                d = xs[c, s] - mu
                square += d * d
        r = 1.0 / np.sqrt(square / (Cg * S) + eps)
        mean[n, g], rstd[n, g] = mu, r
        for c in range(Cg):
            scale = r * weight[g, c]
            shift = bias[g, c] - mu * scale
            src, dst = xs[c], y[n, g, c]
            for s in range(S):
                dst[s] = src[s] * scale + shift


@numba.njit(parallel=True, **_jit)
def _group_norm_backward(dy, x, weight, mean, rstd, dx, dw_n, db_n):
    """dy, x, dx (N, G, Cg, S); weight (G, Cg); mean, rstd (N, G); dw_n, db_n (N, G, Cg): the
    per-sample weight and bias gradients."""
    N, G, Cg, S = x.shape
    for q_ in prange(N * G):
        q = np.int64(q_)
        n, g = q // G, q % G
        mu, r = np.float64(mean[n, g]), np.float64(rstd[n, g])
        sum_dxhat, sum_dxhat_xhat = 0.0, 0.0
        for c in range(Cg):
            d, xs = dy[n, g, c], x[n, g, c]
            sum_dy, sum_dy_xhat = 0.0, 0.0
            for s in range(S):
                xhat = (xs[s] - mu) * r
                sum_dy += d[s]
                sum_dy_xhat += d[s] * xhat
            db_n[n, g, c], dw_n[n, g, c] = sum_dy, sum_dy_xhat
            sum_dxhat += weight[g, c] * sum_dy
            sum_dxhat_xhat += weight[g, c] * sum_dy_xhat
        m = Cg * S
        a, b = sum_dxhat / m, sum_dxhat_xhat / m
        for c in range(Cg):
            d, xs, out = dy[n, g, c], x[n, g, c], dx[n, g, c]
            wc = weight[g, c]
            for s in range(S):
                xhat = (xs[s] - mu) * r
                out[s] = r * (d[s] * wc - a - xhat * b)


@numba.njit(inline="always", cache=True)
def _sigmoid(v):
    e = np.exp(-abs(v))
    s = 1 / (1 + e)
    return s if v >= 0 else e * s


@numba.njit(parallel=True, **_jit)
def _silu_forward(x, y):
    """y = x * sigmoid(x), flat arrays, in blocks of BLOCK elements."""
    n = x.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            y[i] = x[i] * _sigmoid(x[i])


@numba.njit(parallel=True, **_jit)
def _silu_backward(dy, x, dx):
    """dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x); flat arrays."""
    n = x.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            s = _sigmoid(x[i])
            dx[i] = dy[i] * (s * (1 + x[i] * (1 - s)))


def _grouped(a, num_groups):
    """(N, C, *spatial) as a contiguous (N, G, C/G, S) array (no copy when a is contiguous)."""
    n, c = a.shape[:2]
    return np.ascontiguousarray(a).reshape(n, num_groups, c // num_groups, -1)


def group_norm_forward(x, weight, bias, num_groups, eps):
    """(y, mean, rstd) as in the reference."""
    n, c = x.shape[:2]
    xg = _grouped(x, num_groups)
    w = np.ascontiguousarray(weight, x.dtype).reshape(num_groups, -1)
    b = np.ascontiguousarray(bias, x.dtype).reshape(num_groups, -1)
    y, mean, rstd = _empty(x.shape, x.dtype), _empty((n, num_groups), x.dtype), _empty((n, num_groups), x.dtype)
    _group_norm_forward(xg, w, b, eps, y.reshape(xg.shape), mean, rstd)
    return y, mean, rstd


def group_norm_backward(grad_out, x, weight, mean, rstd, num_groups):
    """(grad_x, grad_weight, grad_bias) as in the reference."""
    n, c = x.shape[:2]
    xg, dyg = _grouped(x, num_groups), _grouped(grad_out.astype(x.dtype, copy=False), num_groups)
    w = np.ascontiguousarray(weight, x.dtype).reshape(num_groups, -1)
    dx = _empty(x.shape, x.dtype)
    dw_n, db_n = _empty((n, num_groups, c // num_groups), x.dtype), _empty((n, num_groups, c // num_groups), x.dtype)
    _group_norm_backward(dyg, xg, w, np.ascontiguousarray(mean), np.ascontiguousarray(rstd), dx.reshape(xg.shape),
                         dw_n, db_n)
    grad_weight, grad_bias = _empty((c,), x.dtype), _empty((c,), x.dtype)
    np.sum(dw_n.reshape(n, c), axis=0, out=grad_weight)  # sample by sample, in order
    np.sum(db_n.reshape(n, c), axis=0, out=grad_bias)
    return dx, grad_weight, grad_bias


def silu_forward(x):
    """x * sigmoid(x)."""
    y = _empty(x.shape, x.dtype)
    _silu_forward(np.ascontiguousarray(x).reshape(-1), y.reshape(-1))
    return y


def silu_backward(grad_out, x):
    """grad_out * d silu / dx at x."""
    dx = _empty(x.shape, x.dtype)
    _silu_backward(np.ascontiguousarray(grad_out, x.dtype).reshape(-1), np.ascontiguousarray(x).reshape(-1),
                   dx.reshape(-1))
    return dx
