"""NumPy value oracles: the forward of every function in tinygen.nn.functional, every layer's
functional core, the convolution primitives and the VAE's likelihood terms, written as plainly
as possible.

Each oracle is the textbook formula or a naive loop over output elements, window taps or
slices, computed in float64 and returned in the dtype tinygen gives (the floating inputs'). None
calls tinygen, and none reuses the composition the op itself uses: pooling walks its windows
and leaves out-of-range taps out instead of padding, the convolutions sum tap by tap, the
normalisations loop over their groups, the softmax family sums each slice with math.fsum.
Where PyTorch defines a convention (nearest source indices, count_include_pad, weighted means,
fully masked attention rows), the oracle spells PyTorch's rule out element by element.
"""

import math

import numpy as np

# --- helpers --------------------------------------------------------------------------------


def _pair(v):
    return (v, v) if np.ndim(v) == 0 else tuple(v)


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _dtype(*arrays):
    """The dtype tinygen's result has: the floating inputs' common dtype (float32 at least)."""
    return np.result_type(*(np.asarray(a).dtype for a in arrays if a is not None and np.asarray(a).dtype.kind == "f"),
                          np.float32)


def _reduce(loss, reduction):
    """mean, sum (math.fsum) or none of an elementwise loss."""
    if reduction == "none":
        return loss
    total = math.fsum(loss.ravel())
    return np.float64(total / loss.size if reduction == "mean" else total)


def _log_sigmoid(t):
    """log sigma(t) = -log(1 + e^-t), as log(e^0 + e^-t) so that no exponential overflows."""
    return -np.logaddexp(0.0, -t)


# --- linear and convolution -----------------------------------------------------------------


def linear(x, w, b=None):
    """y[..., o] = sum_i x[..., i] w[o, i] + b[o], summed term by term."""
    xs, ws = _f64(x), _f64(w)
    y = np.zeros(xs.shape[:-1] + (ws.shape[0],))
    for o in range(ws.shape[0]):
        for i in range(ws.shape[1]):
            y[..., o] += xs[..., i] * ws[o, i]
        if b is not None:
            y[..., o] += b[o]
    return y.astype(_dtype(x, w, b))


def conv_output_size(n, k, s, p, d):
    """floor((n + 2p - d (k - 1) - 1) / s) + 1 output pixels along one dimension."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """y[n, o, i, j] = b[o] + sum_{c, a, e} w[o, c, a, e] x[n, c, i sh - ph + a dh, j sw - pw + e dw],
    taps that fall outside the image left out (zero padding): a loop over output pixels and taps."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    xs, ws = _f64(x), _f64(w)
    n, _, h, wd = xs.shape
    cout, _, kh, kw = ws.shape
    ho, wo = conv_output_size(h, kh, sh, ph, dh), conv_output_size(wd, kw, sw, pw, dw)
    y = np.zeros((n, cout, ho, wo))
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for e in range(kw):
                    r, c = i * sh - ph + a * dh, j * sw - pw + e * dw
                    if 0 <= r < h and 0 <= c < wd:
                        y[:, :, i, j] += xs[:, :, r, c] @ ws[:, :, a, e].T  # (N, Cin) @ (Cin, Cout)
    if b is not None:
        y += _f64(b)[None, :, None, None]
    return y.astype(_dtype(x, w, b))


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1):
    """The scatter form: input pixel (i, j) adds x[n, c, i, j] w[c, o, a, e] to output pixel
    (i sh - ph + a dh, j sw - pw + e dw) when that lies inside the output, whose size is
    (H - 1) s - 2 p + d (k - 1) + output_padding + 1."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    oph, opw = _pair(output_padding)
    xs, ws = _f64(x), _f64(w)
    n, _, h, wd = xs.shape
    _, cout, kh, kw = ws.shape
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    y = np.zeros((n, cout, ho, wo))
    for i in range(h):
        for j in range(wd):
            for a in range(kh):
                for e in range(kw):
                    r, c = i * sh - ph + a * dh, j * sw - pw + e * dw
                    if 0 <= r < ho and 0 <= c < wo:
                        y[:, :, r, c] += xs[:, :, i, j] @ ws[:, :, a, e]  # (N, Cin) @ (Cin, Cout)
    if b is not None:
        y += _f64(b)[None, :, None, None]
    return y.astype(_dtype(x, w, b))


def unfold(x, kernel_size, dilation=1, padding=0, stride=1):
    """cols[n, (c kh + a) kw + e, i Wo + j] = x[n, c, i sh - ph + a dh, j sw - pw + e dw], 0 outside
    the image; x may be of any dtype, which the result keeps."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)
    x = np.asarray(x)
    n, ch, h, wd = x.shape
    ho, wo = conv_output_size(h, kh, sh, ph, dh), conv_output_size(wd, kw, sw, pw, dw)
    cols = np.zeros((n, ch * kh * kw, ho * wo), dtype=x.dtype)
    for c in range(ch):
        for a in range(kh):
            for e in range(kw):
                for i in range(ho):
                    for j in range(wo):
                        r, s = i * sh - ph + a * dh, j * sw - pw + e * dw
                        if 0 <= r < h and 0 <= s < wd:
                            cols[:, (c * kh + a) * kw + e, i * wo + j] = x[:, c, r, s]
    return cols


# --- pooling and resampling -----------------------------------------------------------------


def _pool(x, kernel_size, stride, padding, dilation, combine):
    """Apply `combine(list of in-image values, window size)` to every window of every (n, c)."""
    kh, kw = _pair(kernel_size)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    (ph, pw), (dh, dw) = _pair(padding), _pair(dilation)
    xs = _f64(x)
    n, ch, h, wd = xs.shape
    ho, wo = conv_output_size(h, kh, sh, ph, dh), conv_output_size(wd, kw, sw, pw, dw)
    y = np.zeros((n, ch, ho, wo))
    for b in range(n):
        for c in range(ch):
            for i in range(ho):
                for j in range(wo):
                    taps = [xs[b, c, i * sh - ph + a * dh, j * sw - pw + e * dw]
                            for a in range(kh) for e in range(kw)
                            if 0 <= i * sh - ph + a * dh < h and 0 <= j * sw - pw + e * dw < wd]
                    y[b, c, i, j] = combine(taps, kh * kw)
    return y.astype(_dtype(x))


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """The sum of each window's in-image values over kh kw: padding counts as zeros in the mean
    (PyTorch's count_include_pad=True)."""
    return _pool(x, kernel_size, stride, padding, 1, lambda taps, size: math.fsum(taps) / size)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1):
    """The largest in-image value of each (dilated) window; -inf for a window of padding only."""
    return _pool(x, kernel_size, stride, padding, dilation, lambda taps, size: max(taps, default=-math.inf))


def nearest_source(n_in, n_out, scale_factor=None):
    """PyTorch's nearest-neighbour source index of each output index, one at a time: dst itself
    when n_out = n_in, dst // 2 when n_out = 2 n_in, else min(floor(dst * scale), n_in - 1) with
    the float32 scale 1 / scale_factor (or n_in / n_out when a size is given)."""
    if scale_factor is None:
        scale = np.float32(np.float32(n_in) / np.float32(n_out))
    else:
        scale = np.float32(1.0 / scale_factor)
    out = []
    for dst in range(n_out):
        if n_out == n_in:
            out.append(dst)
        elif n_out == 2 * n_in:
            out.append(dst // 2)
        else:
            out.append(min(int(math.floor(np.float32(dst) * scale)), n_in - 1))
    return out


def interpolate(x, size=None, scale_factor=None):
    """y[n, c, i, j] = x[n, c, rows[i], cols[j]] with PyTorch's 'nearest' source indices; the
    output size is `size`, or floor(in * scale_factor)."""
    x = np.asarray(x)
    h, w = x.shape[2:]
    if size is not None:
        (out_h, out_w), (fh, fw) = _pair(size), (None, None)
    else:
        fh, fw = _pair(scale_factor)
        out_h, out_w = int(math.floor(h * fh)), int(math.floor(w * fw))
    rows, cols = nearest_source(h, out_h, fh), nearest_source(w, out_w, fw)
    y = np.empty(x.shape[:2] + (out_h, out_w), dtype=x.dtype)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            y[:, :, i, j] = x[:, :, r, c]
    return y


# --- activations ----------------------------------------------------------------------------


def relu(x):
    """max(x, 0)."""
    return np.where(x > 0, x, 0).astype(x.dtype)


def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, negative_slope x elsewhere."""
    xs = _f64(x)
    return np.where(xs > 0, xs, negative_slope * xs).astype(_dtype(x))


def sigmoid(x):
    """1 / (1 + e^-x) (e^-x = inf gives 0)."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-_f64(x)))).astype(_dtype(x))


def tanh(x):
    """(e^x - e^-x) / (e^x + e^-x), as 1 - 2 / (e^2x + 1) so that no infinity is divided by another."""
    with np.errstate(over="ignore"):
        return (1.0 - 2.0 / (np.exp(2.0 * _f64(x)) + 1.0)).astype(_dtype(x))


def silu(x):
    """x sigmoid(x)."""
    xs = _f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        return (xs / (1.0 + np.exp(-xs))).astype(_dtype(x))


def softplus(x):
    """log(1 + e^x), as log(e^0 + e^x)."""
    return np.logaddexp(0.0, _f64(x)).astype(_dtype(x))


def _along(x, dim, fn, keepdim=True):
    """Apply `fn` (a list of floats -> a list of floats, or one float) to every 1-D slice along `dim`."""
    xs = np.moveaxis(_f64(x), dim, -1)
    rows = xs.reshape(-1, xs.shape[-1])
    out = np.array([fn(list(row)) for row in rows], dtype=np.float64)
    if out.ndim == 1:  # one number per slice
        out = out.reshape(xs.shape[:-1])
        return np.expand_dims(out, dim) if keepdim else out
    return np.moveaxis(out.reshape(xs.shape), -1, dim)


def _lse(values):
    """log sum_i e^(v_i) = m + log sum_i e^(v_i - m), m = max v (m itself when it is infinite)."""
    m = max(values)
    if math.isinf(m):
        return m
    return m + math.log(math.fsum(math.exp(v - m) for v in values))


def _softmax_row(values):
    lse = _lse(values)
    return [math.exp(v - lse) for v in values]


def _log_softmax_row(values):
    lse = _lse(values)
    return [v - lse for v in values]


def softmax(x, dim):
    """e^(x_i) / sum_j e^(x_j) along dim."""
    return _along(x, dim, _softmax_row).astype(_dtype(x))


def log_softmax(x, dim):
    """x_i - log sum_j e^(x_j) along dim."""
    return _along(x, dim, _log_softmax_row).astype(_dtype(x))


def logsumexp(x, dim, keepdim=False):
    """log sum_j e^(x_j) along dim."""
    return _along(x, dim, _lse, keepdim).astype(_dtype(x))


# --- attention -----------------------------------------------------------------------------


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, scale=None):
    """out[..., i, :] = sum_j w_ij v[..., j, :] with w_i = softmax_j(scale q_i . k_j + m_ij) over
    the keys j that the mask lets through (a True entry of a boolean mask, j <= i when causal; a
    float mask is added, m = 0 without one); a query with no such key gets w = 0. One query at a time."""
    qs, ks, vs = _f64(q), _f64(k), _f64(v)
    (L, E), S = qs.shape[-2:], ks.shape[-2]
    scale = 1 / math.sqrt(E) if scale is None else scale
    batch = np.broadcast_shapes(qs.shape[:-2], ks.shape[:-2], vs.shape[:-2])
    qs, ks = np.broadcast_to(qs, batch + qs.shape[-2:]), np.broadcast_to(ks, batch + ks.shape[-2:])
    vs = np.broadcast_to(vs, batch + vs.shape[-2:])
    if is_causal:
        attn_mask = np.array([[j <= i for j in range(S)] for i in range(L)])
    mask = None if attn_mask is None else np.broadcast_to(np.asarray(attn_mask), batch + (L, S))
    out = np.zeros(batch + (L, vs.shape[-1]))
    for b in np.ndindex(*batch):
        for i in range(L):
            scores = {}
            for j in range(S):
                m = 0.0 if mask is None or mask.dtype == bool else float(mask[b + (i, j)])
                if mask is None or mask.dtype != bool or mask[b + (i, j)]:
                    scores[j] = scale * math.fsum(qs[b + (i, e)] * ks[b + (j, e)] for e in range(E)) + m
            finite = [s for s in scores.values() if s != -math.inf]
            if not finite:
                continue  # nothing to attend to: weights 0, output 0
            top = max(finite)
            total = math.fsum(math.exp(s - top) for s in scores.values())
            for j, s in scores.items():
                out[b + (i,)] += math.exp(s - top) / total * vs[b + (j,)]
    return out.astype(_dtype(q, k, v))


# --- normalisation --------------------------------------------------------------------------


def _normalise(values, eps):
    """(v - mean) / sqrt(biased variance + eps) of a 1-D array, with fsum sums."""
    mean = math.fsum(values) / values.size
    var = math.fsum((values - mean) ** 2) / values.size
    return (values - mean) / math.sqrt(var + eps)


def batch_norm_train(x, weight=None, bias=None, eps=1e-5):
    """Per channel c: (x - mean_c) / sqrt(var_c + eps) w_c + b_c, with the batch's mean and biased
    variance over every axis but 1."""
    xs = _f64(x)
    y = np.empty_like(xs)
    for c in range(xs.shape[1]):
        y[:, c] = _normalise(xs[:, c].ravel(), eps).reshape(xs[:, c].shape)
        y[:, c] = y[:, c] * (1.0 if weight is None else weight[c]) + (0.0 if bias is None else bias[c])
    return y.astype(_dtype(x, weight, bias))


def batch_norm_running(running_mean, running_var, x, momentum):
    """The running statistics after one training step: (1 - momentum) running + momentum batch,
    the batch variance unbiased (divided by count - 1)."""
    xs = _f64(x)
    mean, var = np.empty(xs.shape[1]), np.empty(xs.shape[1])
    for c in range(xs.shape[1]):
        values = xs[:, c].ravel()
        mean[c] = math.fsum(values) / values.size
        var[c] = math.fsum((values - mean[c]) ** 2) / (values.size - 1)
    return ((1 - momentum) * _f64(running_mean) + momentum * mean, (1 - momentum) * _f64(running_var) + momentum * var)


def batch_norm_eval(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    """Per channel c: (x - running_mean_c) / sqrt(running_var_c + eps) w_c + b_c."""
    xs = _f64(x)
    y = np.empty_like(xs)
    for c in range(xs.shape[1]):
        y[:, c] = (xs[:, c] - running_mean[c]) / math.sqrt(float(running_var[c]) + eps)
        y[:, c] = y[:, c] * (1.0 if weight is None else weight[c]) + (0.0 if bias is None else bias[c])
    return y.astype(_dtype(x, weight, bias))


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Per sample n and group g of C / G channels: (x - mean) / sqrt(var + eps) over the group's
    channels and positions (biased variance), then w_c x + b_c per channel."""
    xs = _f64(x)
    y = np.empty_like(xs)
    per = xs.shape[1] // num_groups
    for n in range(xs.shape[0]):
        for g in range(num_groups):
            block = xs[n, g * per:(g + 1) * per]
            y[n, g * per:(g + 1) * per] = _normalise(block.ravel(), eps).reshape(block.shape)
    for c in range(xs.shape[1]):
        y[:, c] = y[:, c] * (1.0 if weight is None else weight[c]) + (0.0 if bias is None else bias[c])
    return y.astype(_dtype(x, weight, bias))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """(x - mean) / sqrt(var + eps) over the trailing normalized_shape dims (biased variance), then
    w x + b elementwise over those dims."""
    shape = (normalized_shape,) if np.ndim(normalized_shape) == 0 else tuple(normalized_shape)
    xs = _f64(x)
    rows = xs.reshape(-1, int(np.prod(shape)))
    y = np.stack([_normalise(row, eps) for row in rows]).reshape(xs.shape)
    if weight is not None:
        y = y * _f64(weight)
    if bias is not None:
        y = y + _f64(bias)
    return y.astype(_dtype(x, weight, bias))


def dropout(x, p, keep):
    """Inverted dropout given which elements are kept: x / (1 - p) where keep, 0 elsewhere."""
    kept = _f64(x) / (1 - p) if p < 1 else np.zeros(np.shape(x))  # p = 1 keeps nothing
    return np.where(keep, kept, 0.0).astype(_dtype(x))


def embedding(idx, weight):
    """out[..., :] = weight[idx[...], :], one index at a time."""
    idx = np.asarray(idx)
    out = np.empty(idx.shape + weight.shape[1:], dtype=weight.dtype)
    for pos in np.ndindex(*idx.shape):
        out[pos] = weight[int(idx[pos])]
    return out


def pad(x, widths, value=0.0):
    """PyTorch's order, (left, right, top, bottom, ...) from the last dim: an array of `value` of
    the padded size with x written at the offsets (before-widths)."""
    x = np.asarray(x)
    before, after = [0] * x.ndim, [0] * x.ndim
    for i in range(len(widths) // 2):
        before[x.ndim - 1 - i], after[x.ndim - 1 - i] = widths[2 * i], widths[2 * i + 1]
    out = np.full(tuple(n + b + a for n, b, a in zip(x.shape, before, after)), value, dtype=x.dtype)
    out[tuple(slice(b, b + n) for b, n in zip(before, x.shape))] = x
    return out


# --- losses ---------------------------------------------------------------------------------


def mse_loss(x, t, reduction="mean"):
    """(x - t)^2, reduced."""
    return np.asarray(_reduce((_f64(x) - _f64(t)) ** 2, reduction)).astype(_dtype(x, t))


def binary_cross_entropy_with_logits(x, t, weight=None, reduction="mean", pos_weight=None):
    """-w [p t log sigma(x) + (1 - t) log(1 - sigma(x))] with log(1 - sigma(x)) = log sigma(-x), reduced."""
    xs, ts = _f64(x), _f64(t)
    pw = 1.0 if pos_weight is None else _f64(pos_weight)
    loss = -(pw * ts * _log_sigmoid(xs) + (1 - ts) * _log_sigmoid(-xs))
    if weight is not None:
        loss = loss * _f64(weight)
    return np.asarray(_reduce(loss, reduction)).astype(_dtype(x, t))


def cross_entropy(x, target, weight=None, reduction="mean", label_smoothing=0.0):
    """Row by row: log p = x - logsumexp(x); loss_i = (1 - s) w[t_i] (-log p[t_i]) + s / C sum_c
    w[c] (-log p[c]); 'mean' divides the sum by sum_i w[t_i] (by N without weights), as PyTorch."""
    xs = _f64(x)
    n, c = xs.shape
    w = np.ones(c) if weight is None else _f64(weight)
    loss = np.empty(n)
    for i in range(n):
        lse = _lse(list(xs[i]))
        logp = [xs[i, k] - lse for k in range(c)]
        t = int(target[i])
        smooth = -math.fsum(w[k] * logp[k] for k in range(c))
        loss[i] = (1 - label_smoothing) * w[t] * -logp[t] + label_smoothing / c * smooth
    if reduction == "mean":
        total = np.float64(math.fsum(loss) / math.fsum(w[int(t)] for t in target))
        return np.asarray(total).astype(_dtype(x))
    return np.asarray(_reduce(loss, reduction)).astype(_dtype(x))


def gaussian_nll_loss(x, t, var, full=False, eps=1e-6, reduction="mean"):
    """1/2 (log v + (x - t)^2 / v) [+ 1/2 log 2 pi] with v = max(var, eps), reduced."""
    v = np.maximum(_f64(var), eps)
    loss = 0.5 * (np.log(v) + (_f64(x) - _f64(t)) ** 2 / v) + (0.5 * math.log(2 * math.pi) if full else 0.0)
    return np.asarray(_reduce(loss, reduction)).astype(_dtype(x, t, var))


# --- the VAE's likelihood terms (tinygen.models.vae) -------------------------------------------


def bernoulli_nll(logits, x):
    """-sum over (C, H, W) of x log sigma(l) + (1 - x) log(1 - sigma(l)), per image."""
    loss = binary_cross_entropy_with_logits(_f64(logits), _f64(x), reduction="none")
    return np.array([math.fsum(row.ravel()) for row in loss]).astype(_dtype(logits, x))


def discretized_logistic_log_prob(x, mean, log_scale):
    """log(F(x + 1/510) - F(x - 1/510)) for 8-bit x = k/255, F the CDF sigma((t - mu) / s) of
    Logistic(mu, s = e^log_scale), F = 0 below the bin of 0 and 1 above the bin of 255. The
    difference is taken on the side of the mean where the two CDF values are small (F(b) - F(a) =
    (1 - F(a)) - (1 - F(b))), so it loses no digits in a far tail."""
    x, mean, log_scale = np.broadcast_arrays(_f64(x), _f64(mean), _f64(log_scale))
    out = np.empty(x.shape)
    for pos in np.ndindex(*x.shape):
        k = round(float(x[pos]) * 255)
        s = math.exp(float(log_scale[pos]))
        a = -math.inf if k == 0 else (x[pos] - 0.5 / 255 - mean[pos]) / s
        b = math.inf if k == 255 else (x[pos] + 0.5 / 255 - mean[pos]) / s

        def cdf(t):  # sigma(t)
            return 1 / (1 + math.exp(-t)) if t >= 0 else math.exp(t) / (1 + math.exp(t))

        if a + b > 0:  # both edges above the mean: 1 - F is small there
            mass = cdf(-a) - cdf(-b)
        else:
            mass = cdf(b) - cdf(a)
        out[pos] = math.log(mass)
    return out


def gaussian_log_density(z, mu, logvar):
    """sum_j -1/2 ((z_j - mu_j)^2 / sigma_j^2 + log sigma_j^2 + log 2 pi), the arguments broadcast."""
    z, mu, logvar = np.broadcast_arrays(_f64(z), _f64(mu), _f64(logvar))
    out = np.empty(z.shape[:-1])
    for pos in np.ndindex(*out.shape):
        out[pos] = math.fsum(-0.5 * ((z[pos + (j,)] - mu[pos + (j,)]) ** 2 / math.exp(logvar[pos + (j,)])
                                     + logvar[pos + (j,)] + math.log(2 * math.pi)) for j in range(z.shape[-1]))
    return out


def gaussian_kl(mu, logvar):
    """KL(N(mu, sigma^2) || N(0, 1)) summed over dim 1: log(1 / sigma) + (sigma^2 + mu^2) / 2 - 1/2 per entry."""
    sigma = np.exp(0.5 * _f64(logvar))
    per = np.log(1 / sigma) + (sigma**2 + _f64(mu) ** 2) / 2 - 0.5
    return np.array([math.fsum(row) for row in per])
