"""Hypothesis strategies shared by the tests: shapes, arrays away from kinks, conv parameters.

Shapes come from hypothesis (they shrink to the smallest failing case, and size-1 and odd sizes
are common). Values come from a NumPy generator seeded by hypothesis: gradient checks need
continuous random data away from the kinks (0 for relu and abs, ties for max), which hypothesis's
own float strategies deliberately hit.
"""

import itertools

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygen.kernels.conv2d import conv_output_size, conv_transpose_output_size
from tinygen.kernels.diffusion import reference


def shapes(min_dims=0, max_dims=4, min_side=1, max_side=5):
    """Array shapes, 0-d included by default; sides of 1 and odd sides are common."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4):
    """`BroadcastableShapes(input_shapes, result_shape)`: shapes that broadcast together."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims, max_side=max_side)


# --- values ---------------------------------------------------------------------------------

KINDS = ("normal", "nonzero", "positive", "distinct", "unit")


def make_array(rng, shape, kind="normal", dtype=np.float64):
    """Random values of one `kind`:

    - normal: N(0, 1);
    - nonzero: N(0, 1) moved at least 0.05 away from every multiple of 0.5, so away from the
      kinks of relu and abs at 0 and of clamp at +-0.5, +-1, and safe to divide by;
    - positive: in [0.1, 3), for log, sqrt and the base of pow;
    - distinct: no two values within 0.5 / size of each other, so max has no ties;
    - unit: in (0.05, 0.95), for probabilities.
    """
    size = int(np.prod(shape))
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "nonzero":
        x = np.floor(2 * rng.standard_normal(shape)) / 2 + rng.uniform(0.05, 0.45, shape)
    elif kind == "positive":
        x = rng.uniform(0.1, 3.0, shape)
    elif kind == "distinct":
        x = ((rng.permutation(size) + rng.uniform(0.25, 0.75, size)) * 3 / max(size, 1) - 1.5).reshape(shape)
    elif kind == "unit":
        x = rng.uniform(0.05, 0.95, shape)
    else:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")
    return np.asarray(x, dtype=dtype)


def arrays(shape, kind="normal", dtype=np.float64):
    """A strategy for one array of `shape` with values of `kind` (see `make_array`)."""
    return st.integers(0, 2**32 - 1).map(lambda seed: make_array(np.random.default_rng(seed), shape, kind, dtype))


def reduction_dims(ndim):
    """A `dim` argument for a reduction over `ndim` axes: None, one axis (negative too) or a tuple."""
    if ndim == 0:
        return st.none()
    one = st.integers(-ndim, ndim - 1)
    several = st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)
    return st.one_of(st.none(), one, several)


@st.composite
def matmul_shapes(draw):
    """Operand shapes for a @ b: 1-D or matrices, with broadcasting batch dimensions."""
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    (batch_a, batch_b), _ = draw(broadcastable_shapes(2, max_dims=2, max_side=3))
    a = (k,) if draw(st.booleans()) else batch_a + (n, k)
    b = (k,) if draw(st.booleans()) else batch_b + (k, m)
    return a, b


# --- convolution parameters -----------------------------------------------------------------


def conv_input_range(kernel, stride, padding, dilation, output_padding=0, transposed=False, max_size=7):
    """(smallest, largest) input size along one spatial dim giving at least one output pixel."""
    size = 1
    if transposed:
        while conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation) < 1:
            size += 1
    else:
        while conv_output_size(size, kernel, stride, padding, dilation) < 1:
            size += 1
    return size, max(size, max_size)


@st.composite
def conv_params(draw, transposed=False, max_kernel=4, max_stride=3, max_padding=2, max_dilation=3):
    """Small NCHW convolution problems, every spatial parameter drawn per dimension.

    Returns a dict: N, Cin, Cout, H, W, kernel, stride, padding, dilation, output_padding (pairs).
    `output_padding` is (0, 0) for a plain conv, and below max(stride, dilation) for a transposed
    one (PyTorch's rule). The input size is chosen so that there is at least one output pixel.
    """
    p = dict(N=draw(st.integers(1, 2)), Cin=draw(st.integers(1, 3)), Cout=draw(st.integers(1, 3)))
    names = ("kernel", "stride", "padding", "dilation", "output_padding", "size")
    per_dim = {name: [] for name in names}
    for _ in range(2):  # height, then width, drawn independently (non-square is common)
        k, s = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_stride))
        pad, d = draw(st.integers(0, max_padding)), draw(st.integers(1, max_dilation))
        op = draw(st.integers(0, max(s, d) - 1)) if transposed else 0
        lo, hi = conv_input_range(k, s, pad, d, op, transposed)
        for name, value in zip(names, (k, s, pad, d, op, draw(st.integers(lo, hi)))):
            per_dim[name].append(value)
    p.update({name: tuple(values) for name, values in per_dim.items()})
    p["H"], p["W"] = p.pop("size")
    return p


def conv_grid(transposed=False, kernels=(1, 2, 3), strides=(1, 2, 3), paddings=(0, 1, 2), dilations=(1, 2)):
    """Every (kernel, stride, padding, dilation, output_padding) on a small grid, as square pairs
    with a non-square input: the sweep behind the parametrized conv gradient checks."""
    cases = []
    for k, s, pad, d in itertools.product(kernels, strides, paddings, dilations):
        for op in range(max(s, d)) if transposed else (0,):
            h, _ = conv_input_range(k, s, pad, d, op, transposed)
            cases.append(dict(N=2, Cin=2, Cout=3, H=h, W=h + 2, kernel=(k, k), stride=(s, s),
                              padding=(pad, pad), dilation=(d, d), output_padding=(op, op)))
    return cases


def conv_id(p):
    """A readable test id for a conv_grid case."""
    return "k{}-s{}-p{}-d{}-op{}-{}x{}".format(p["kernel"][0], p["stride"][0], p["padding"][0], p["dilation"][0],
                                               p["output_padding"][0], p["H"], p["W"])


@st.composite
def pool_params(draw, dilation=False):
    """Pooling problems: kernel, stride (None: the kernel), padding <= kernel / 2, dilation,
    and an input (N, C, H, W) with at least one output pixel. Pairs, per dimension."""
    p = dict(N=draw(st.integers(1, 2)), C=draw(st.integers(1, 3)))
    kernel, stride, padding, dil, size = [], [], [], [], []
    for _ in range(2):
        k = draw(st.integers(1, 3))
        s, pad, d = draw(st.integers(1, 3)), draw(st.integers(0, k // 2)), draw(st.integers(1, 2)) if dilation else 1
        lo, hi = conv_input_range(k, s, pad, d)
        for values, value in zip((kernel, stride, padding, dil, size), (k, s, pad, d, draw(st.integers(lo, hi)))):
            values.append(value)
    p.update(kernel=tuple(kernel), padding=tuple(padding), dilation=tuple(dil), H=size[0], W=size[1])
    p["stride"] = None if draw(st.booleans()) else tuple(stride)  # (one output pixel for any stride)
    return p


@st.composite
def noise_step_problems(draw):
    """(dtype, x, eps, z, coefficient sets, seed, offset) for one drawn batch.

    Shapes: small 1-D to 4-D ones (size 1, odd sides), or (B, P) runs long enough to cross the
    kernels' task (8192 normals) and buffer (1024 normals) boundaries. Each coefficient is per
    sample (B,) or one number for the batch.
    """
    shape = draw(st.one_of(shapes(min_dims=1, max_dims=4, max_side=5),
                           st.tuples(st.integers(1, 40), st.integers(1, 900))), label="shape")
    dtype = draw(st.sampled_from((np.float32, np.float64)), label="dtype")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="data seed"))
    B = shape[0]
    x, eps, z = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    scalar = draw(st.booleans(), label="scalar coefficients")

    def coef(lo, hi):
        return float(rng.uniform(lo, hi)) if scalar else rng.uniform(lo, hi, B)

    alpha_bar = coef(0.01, 0.99)
    alpha_bar_prev = np.minimum(alpha_bar / rng.uniform(0.5, 0.999), 1.0)
    sigma = coef(0.0, 0.3)
    ddim = (np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar), np.sqrt(alpha_bar_prev),
            np.minimum(sigma, 0.9 * np.sqrt(1 - alpha_bar_prev)))
    ddpm = (1 - np.asarray(alpha_bar), 1 / np.sqrt(alpha_bar), sigma)  # coef_eps, inv_sqrt_alpha, sigma
    seed = draw(st.integers(0, 2**64 - 1), label="seed")
    offset = draw(st.one_of(st.integers(0, 9), st.integers(0, 2**64 - 2 * x.size - 1)), label="offset")
    return dtype, x, eps, z, ddim, ddpm, seed, offset


def noise_step_terms(x, eps, z, ddim, ddpm):
    """The elementwise sums of |term| that q_sample, p_sample_step and ddim_step add up, for
    `assert_kernel_output(terms=...)`: a one-pixel batch whose terms cancel to nearly 0 leaves no
    relative accuracy to check, so the error is measured against these instead."""

    def c(coef):  # |coefficient|, broadcast per sample
        return np.abs(reference.per_sample(coef, x))

    a, b, a_prev, sigma_ddim = ddim
    coef_eps, inv_sqrt_alpha, sigma_ddpm = ddpm
    return {
        "q_sample": c(a) * np.abs(x) + c(b) * np.abs(z),
        "p_sample_step": c(inv_sqrt_alpha) * (np.abs(x) + c(coef_eps) * np.abs(eps)) + c(sigma_ddpm) * np.abs(z),
        "ddim_step": c(np.asarray(a_prev) / a) * (np.abs(x) + c(b) * np.abs(eps)) + np.abs(eps) + c(sigma_ddim) * np.abs(z),
    }


def conv_case(data, transposed=False):
    """(params, x, w, rng) for one drawn conv problem (`data` is hypothesis's st.data()), float32
    or float64; w is (Cin, Cout, ...) when transposed; rng (seeded by hypothesis) draws the
    gradients."""
    p = data.draw(conv_params(transposed=transposed), label="params")
    dtype = data.draw(st.sampled_from((np.float32, np.float64)), label="dtype")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    channels = (p["Cin"], p["Cout"]) if transposed else (p["Cout"], p["Cin"])
    x = rng.standard_normal((p["N"], p["Cin"], p["H"], p["W"])).astype(dtype)
    w = rng.standard_normal((*channels, *p["kernel"])).astype(dtype)
    return p, x, w, rng


def adam_problem(data):
    """(p, g, m, v, args) for Adam's kernels: float32 or float64 arrays of a size with odd tails (1-40)
    or long runs (1000-3000), v >= 0, and args = (step, lr, beta1, beta2, eps, weight_decay,
    decoupled) with Adam's and AdamW's weight decay, at the first and at later steps."""
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    n = data.draw(st.one_of(st.integers(1, 40), st.integers(1000, 3000)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    p, g, m = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = rng.random(n).astype(dtype)
    args = (data.draw(st.integers(1, 1000)), data.draw(st.sampled_from([1e-3, 0.1])), 0.9, 0.999, 1e-8,
            data.draw(st.sampled_from([0.0, 1e-2])), data.draw(st.booleans()))
    return p, g, m, v, args


@st.composite
def attention_shapes(draw):
    """(query, key, value, mask) shapes for scaled_dot_product_attention: (..., L, E), (..., S, E),
    (..., S, Ev) with 0-2 leading (batch, head) dimensions that broadcast, and a mask shape that
    broadcasts to the scores (..., L, S) (trailing dimensions only, or with the scores' batch dimensions)."""
    batch = draw(broadcastable_shapes(num_shapes=3, max_dims=2, max_side=3))
    L, S, E, Ev = (draw(st.integers(1, 5)) for _ in range(4))
    bq, bk, bv = batch.input_shapes
    scores = np.broadcast_shapes(bq, bk)  # the batch dimensions of Q K^T (the mask's may not exceed them)
    mask = draw(st.sampled_from([(L, S), (1, S), (L, 1), (*scores, L, S)]))
    return (*bq, L, E), (*bk, S, E), (*bv, S, Ev), mask
