"""Group and batch normalization and SiLU on the CPU with Numba: the functions of `reference.py`, fused.

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
- `batch_norm_forward` / `batch_norm_backward` (training mode): the same passes, one task per
  channel over all samples; the weight and bias gradients are then whole per task.
- `relu_*`, `leaky_relu_*`: one pass each (NumPy's relu: two and one; composed leaky relu:
  seven and six).
- `silu_forward` / `silu_backward`: one pass each, sigmoid from one exp as in the reference;
  in float32 that exp is our own vectorizable `_exp_neg32`, not libm's scalar expf.

Every array returned comes from `_empty` (the tests poison it with NaN). Compiled with
``cache=True, fastmath=False`` for float32 and float64, like the conv kernels; only the row sums may
reassociate their adds (`_sum_jit`).
"""

import numpy as np

from tinygen.kernels.cpu_runtime import check_numba_dtype, load_numba

numba = load_numba()  # through cpu_runtime: it applies tinygen's threading policy first
if numba is None:
    raise ImportError("the Numba normalization kernels need Numba: pip install tinygen[cpu]")
prange = numba.prange

# error_model="numpy": a float division by zero gives inf/nan as in NumPy instead of raising, so
# the loops carry no zero test and LLVM vectorizes them (Adam's update: 4.3x faster).
_jit = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")
BLOCK = 1 << 14  # elements per parallel task of the elementwise kernels (`_elementwise`)


def _empty(shape, dtype):
    """Every array this module returns is allocated here (the tests poison it with NaN)."""
    return np.empty(shape, dtype)


# The reductions: float64 sums over one row of float32 or float64 values. In strict order each
# add waits for the one before (4 cycles a value); "reassoc" lets LLVM keep vectors of partial
# sums instead (a (250, 32, 28, 28) float32 GroupNorm's mean: 2.4x faster, then bound by memory).
# The order is fixed when the loop compiles, not by the threads: no result depends on the thread
# count. Plain calls, not Numba-inlined: inlined, they would take their caller's flags.
_sum_jit = dict(_jit, fastmath={"reassoc"})


@numba.njit(**_sum_jit)
def _row_sum(row):
    t = 0.0
    for j in range(row.shape[0]):
        t += row[j]
    return t


@numba.njit(**_sum_jit)
def _row_sum_squares(row, shift):
    """sum (row - shift)^2."""
    t = 0.0
    for j in range(row.shape[0]):
        v = row[j] - shift
        t += v * v
    return t


@numba.njit(**_sum_jit)
def _row_gradient_sums(d, row, mu, r):
    """(sum d, sum d * xhat) with xhat = (row - mu) r: the bias and weight gradients' sums."""
    sum_dy, sum_dy_xhat = 0.0, 0.0
    for j in range(row.shape[0]):
        sum_dy += d[j]
        sum_dy_xhat += d[j] * ((row[j] - mu) * r)
    return sum_dy, sum_dy_xhat


@numba.njit(**_jit)
def _group_forward(xs, weight, bias, eps, ys):
    """One group: xs, ys (Cg, S), weight and bias (Cg,); returns (mean, rstd), from float64 sums."""
    Cg, S = xs.shape
    flat = xs.reshape(Cg * S)  # the group is contiguous: one row, long loops even where S is 7 x 7
    mu = _row_sum(flat) / (Cg * S)
    r = 1.0 / np.sqrt(_row_sum_squares(flat, mu) / (Cg * S) + eps)
    for c in range(Cg):
        scale, shift = r * weight[c], bias[c]
        src, dst = xs[c], ys[c]
        for s in range(S):
            # (x - mu) first: folding mu into the shift, x*scale + (bias - mu*scale), cancels
            # when |mu| >> std (float64 x lost 1e-12 relative)
            dst[s] = (src[s] - mu) * scale + shift
    return mu, r


@numba.njit(parallel=True, **_jit)
def _group_norm_forward(x, weight, bias, eps, y, mean, rstd):
    """x, y (N, G, Cg, S); weight, bias (G, Cg); mean, rstd (N, G). One task per (n, g); its
    loops in `_group_forward` (see the note above `_silu_forward_run`)."""
    N, G = x.shape[0], x.shape[1]
    for q_ in prange(N * G):
        q = np.int64(q_)  # prange's index is unsigned; int64 keeps the index arithmetic integer
        n, g = q // G, q % G
        mean[n, g], rstd[n, g] = _group_forward(x[n, g], weight[g], bias[g], eps, y[n, g])


@numba.njit(**_jit)
def _group_backward(dy, xs, weight, mu, r, dx, dw, db):
    """One group: dy, xs, dx (Cg, S); weight, dw, db (Cg,): this sample's weight and bias
    gradients."""
    Cg, S = xs.shape
    sum_dxhat, sum_dxhat_xhat = 0.0, 0.0
    for c in range(Cg):
        db[c], dw[c] = _row_gradient_sums(dy[c], xs[c], mu, r)
        sum_dxhat += weight[c] * db[c]
        sum_dxhat_xhat += weight[c] * dw[c]
    a, b = sum_dxhat / (Cg * S), sum_dxhat_xhat / (Cg * S)
    for c in range(Cg):
        d, row, out = dy[c], xs[c], dx[c]
        wc = weight[c]
        for s in range(S):
            out[s] = r * (d[s] * wc - a - (row[s] - mu) * r * b)


@numba.njit(parallel=True, **_jit)
def _group_norm_backward(dy, x, weight, mean, rstd, dx, dw_n, db_n):
    """dy, x, dx (N, G, Cg, S); weight (G, Cg); mean, rstd (N, G); dw_n, db_n (N, G, Cg): the
    per-sample weight and bias gradients. One task per (n, g), as the forward."""
    N, G = x.shape[0], x.shape[1]
    for q_ in prange(N * G):
        q = np.int64(q_)
        n, g = q // G, q % G
        _group_backward(dy[n, g], x[n, g], weight[g], np.float64(mean[n, g]), np.float64(rstd[n, g]), dx[n, g],
                        dw_n[n, g], db_n[n, g])


@numba.njit(parallel=True, **_jit)
def _batch_norm_forward(x, weight, bias, eps, y, mean, var):
    """x, y (N, C, S); weight, bias, mean, var (C,). One task per channel, float64 sums."""
    N, C, S = x.shape
    for c in prange(C):
        total = 0.0
        for n in range(N):
            total += _row_sum(x[n, c])
        mu = total / (N * S)
        total = 0.0
        for n in range(N):
            total += _row_sum_squares(x[n, c], mu)
        v = total / (N * S)
        mean[c], var[c] = mu, v
        scale, shift = weight[c] / np.sqrt(v + eps), bias[c]
        for n in range(N):
            src, dst = x[n, c], y[n, c]
            for s in range(S):
                dst[s] = (src[s] - mu) * scale + shift  # (x - mu) first, as in `_group_forward`


@numba.njit(parallel=True, **_jit)
def _batch_norm_backward(dy, x, weight, mean, var, eps, dx, dw, db):
    """dy, x, dx (N, C, S); weight, mean, var, dw, db (C,). One task per channel."""
    N, C, S = x.shape
    for c in prange(C):
        mu, r = np.float64(mean[c]), 1.0 / np.sqrt(np.float64(var[c]) + eps)
        sum_dy, sum_dy_xhat = 0.0, 0.0
        for n in range(N):
            row_dy, row_dy_xhat = _row_gradient_sums(dy[n, c], x[n, c], mu, r)
            sum_dy += row_dy
            sum_dy_xhat += row_dy_xhat
        db[c], dw[c] = sum_dy, sum_dy_xhat
        wc = weight[c]
        a, b = wc * db[c] / (N * S), wc * dw[c] / (N * S)
        for n in range(N):
            d, row, out = dy[n, c], x[n, c], dx[n, c]
            for s in range(S):
                out[s] = r * (d[s] * wc - a - (row[s] - mu) * r * b)


@numba.extending.intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE 754 bit pattern is the uint32 `bits` (LLVM's bitcast)."""
    if bits != numba.types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(numba.types.float32))

    return numba.types.float32(bits), codegen


@numba.njit(inline="always", cache=True)
def _pow2_neg32(k):
    """2^-k for 0 <= k <= 126 (normal float32s), from its exponent bits 127 - k."""
    return _float32_from_bits(np.uint32((np.uint32(127) - k) << np.uint32(23)))


@numba.njit(inline="always", cache=True)
def _exp_neg32(a):
    """exp(-a) for float32 a >= 0, in float32 arithmetic that LLVM vectorizes (Numba's np.exp is a
    scalar libm call: it made SiLU 7x slower than this). Cephes' expf: a = k ln2 - t with
    |t| <= ln2/2 (ln2 in two parts, so k ln2 is exact), exp(-t) by its degree-7 minimax
    polynomial, times 2^-k as two powers of two built from their bits: 2^-(k//2) is normal and
    its product exact, so the one rounding is the last product's, into the denormals too (a table
    of 2^-k, one gather per value, made SiLU 1.7x slower). Within 2 float32 ulps of exp(-a) over
    the normal range, one unit of 2^-149 below it; the test is in tests/kernels/test_normalization.py."""
    a = min(a, np.float32(104.0))  # exp(-104) < 2^-150: 0 in float32, as is everything beyond
    k = np.uint32(a * np.float32(1.4426950408889634) + np.float32(0.5))  # round(a / ln2), at most 150
    kf = np.float32(k)
    t = (kf * np.float32(0.693359375) - a) + kf * np.float32(-2.12194440e-4)  # k ln2 - a
    p = ((((np.float32(1.9875691500e-4) * t + np.float32(1.3981999507e-3)) * t + np.float32(8.3334519073e-3)) * t
          + np.float32(4.1665795894e-2)) * t + np.float32(1.6666665459e-1)) * t + np.float32(5.0000001201e-1)
    half = k >> np.uint32(1)
    return (p * (t * t) + t + np.float32(1.0)) * _pow2_neg32(half) * _pow2_neg32(k - half)


@numba.njit(inline="always", cache=True)
def _silu32(v):
    """(silu(v), silu'(v)) for float32 v in float32 arithmetic: s = sigmoid(v) from e = exp(-|v|)
    as in the reference, silu = v s, silu' = s (1 + v (1 - s))."""
    one = np.float32(1.0)
    e = _exp_neg32(abs(v))
    r = one / (one + e)
    s = r if v >= 0 else e * r
    return v * s, s * (one + v * (one - s))


@numba.njit(inline="always", cache=True)
def _silu64(v):
    """`_silu32` for float64 v (np.exp: float64 needs libm's accuracy)."""
    e = np.exp(-abs(v))
    r = 1.0 / (1.0 + e)
    s = r if v >= 0 else e * r
    return v * s, s * (1.0 + v * (1.0 - s))


def _silu(v):
    """(silu(v), silu'(v)) in v's precision: `_silu32` or `_silu64`, picked when Numba compiles
    the caller (a plain Python function that only Numba calls: the overload below is its body)."""
    raise NotImplementedError("only compiled callers use _silu")


@numba.extending.overload(_silu, inline="always")
def _silu_for(v):
    return (lambda v: _silu32(v)) if v == numba.types.float32 else (lambda v: _silu64(v))


# The elementwise ops. Each op's loop is its own compiled function, run on one block of BLOCK
# elements at a time by `_elementwise`, which spreads the blocks over the threads: the same loop
# written inline in the prange body was not vectorized (SiLU forward on 3.2 M floats: 2.2 ms,
# and 1.5 ms so). Every loop takes (a, b, slope, out): forward ops read x = a, backward ops
# grad_out = a and x (or y, for ReLU) = b.


@numba.njit(**_jit)
def _silu_forward_run(a, b, slope, out):
    for i in range(a.shape[0]):
        out[i] = _silu(a[i])[0]


@numba.njit(**_jit)
def _silu_backward_run(a, b, slope, out):
    for i in range(a.shape[0]):
        out[i] = a[i] * _silu(b[i])[1]


@numba.njit(**_jit)
def _relu_forward_run(a, b, slope, out):
    for i in range(a.shape[0]):
        v = a[i]
        out[i] = 0 if v <= 0 else v  # NaN fails v <= 0 and stays


@numba.njit(**_jit)
def _relu_backward_run(a, b, slope, out):
    for i in range(a.shape[0]):
        out[i] = a[i] if b[i] > 0 else a[i] * 0  # b = y: y > 0 exactly where x > 0


@numba.njit(**_jit)
def _leaky_relu_forward_run(a, b, slope, out):
    for i in range(a.shape[0]):
        v = a[i]
        out[i] = v if v > 0 else v * slope


@numba.njit(**_jit)
def _leaky_relu_backward_run(a, b, slope, out):
    for i in range(a.shape[0]):
        v = b[i]
        out[i] = a[i] if v > 0 else (a[i] * slope if v < 0 else a[i] * 0)


SILU_FORWARD, SILU_BACKWARD, RELU_FORWARD, RELU_BACKWARD, LEAKY_RELU_FORWARD, LEAKY_RELU_BACKWARD = range(6)
_NAMES = ("silu_forward", "silu_backward", "relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward")


@numba.njit(parallel=True, **_jit)
def _elementwise(op, a, b, slope, out):
    """out = op(a, b) on flat arrays, block by block (op: one of the codes above)."""
    n = out.shape[0]
    for block in prange((n + BLOCK - 1) // BLOCK):
        lo = block * BLOCK
        hi = min(n, lo + BLOCK)
        args = a[lo:hi], b[lo:hi], slope, out[lo:hi]
        if op == SILU_FORWARD:
            _silu_forward_run(*args)
        elif op == SILU_BACKWARD:
            _silu_backward_run(*args)
        elif op == RELU_FORWARD:
            _relu_forward_run(*args)
        elif op == RELU_BACKWARD:
            _relu_backward_run(*args)
        elif op == LEAKY_RELU_FORWARD:
            _leaky_relu_forward_run(*args)
        else:
            _leaky_relu_backward_run(*args)


def _apply(op, a, b, slope=0.0):
    """A new array like b (in b's dtype) = op(a, b) through `_elementwise`."""
    check_numba_dtype(_NAMES[op], b)
    out = _empty(b.shape, b.dtype)
    _elementwise(op, np.ascontiguousarray(a, b.dtype).reshape(-1), np.ascontiguousarray(b).reshape(-1),
                 b.dtype.type(slope), out.reshape(-1))
    return out


def _grouped(a, num_groups):
    """(N, C, *spatial) as a contiguous (N, G, C/G, S) array (no copy when a is contiguous)."""
    check_numba_dtype("group_norm", a)
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


def batch_norm_forward(x, weight, bias, eps):
    """(y, mean, var) as in the reference."""
    n, c = x.shape[:2]
    x3 = np.ascontiguousarray(x).reshape(n, c, -1)
    y, mean, var = _empty(x.shape, x.dtype), _empty((c,), x.dtype), _empty((c,), x.dtype)
    _batch_norm_forward(x3, np.ascontiguousarray(weight, x.dtype), np.ascontiguousarray(bias, x.dtype), eps,
                        y.reshape(x3.shape), mean, var)
    return y, mean, var


def batch_norm_backward(grad_out, x, weight, mean, var, eps):
    """(grad_x, grad_weight, grad_bias) as in the reference."""
    n, c = x.shape[:2]
    x3 = np.ascontiguousarray(x).reshape(n, c, -1)
    dy = np.ascontiguousarray(grad_out, x.dtype).reshape(x3.shape)
    dx, dw, db = _empty(x.shape, x.dtype), _empty((c,), x.dtype), _empty((c,), x.dtype)
    _batch_norm_backward(dy, x3, np.ascontiguousarray(weight, x.dtype), np.ascontiguousarray(mean),
                         np.ascontiguousarray(var), eps, dx.reshape(x3.shape), dw, db)
    return dx, dw, db


def silu_forward(x):
    """x * sigmoid(x)."""
    return _apply(SILU_FORWARD, x, x)


def silu_backward(grad_out, x):
    """grad_out * d silu / dx at x."""
    return _apply(SILU_BACKWARD, grad_out, x)


def leaky_relu_forward(x, negative_slope):
    """As in the reference, one pass."""
    return _apply(LEAKY_RELU_FORWARD, x, x, negative_slope)


def leaky_relu_backward(grad_out, x, negative_slope):
    """As in the reference, one pass."""
    return _apply(LEAKY_RELU_BACKWARD, grad_out, x, negative_slope)


def relu_forward(x):
    """As in the reference, one pass (float32 and float64)."""
    return _apply(RELU_FORWARD, x, x)


def relu_backward(grad_out, y):
    """As in the reference, one pass."""
    return _apply(RELU_BACKWARD, grad_out, y)
