"""The diffusion noise steps on the CPU with Numba: the functions of `reference.py`, same signatures,
each one parallel pass over memory.

Only `tinygen.kernels.diffusion.implementation()` imports this module, and only when the kernel
backend is ``numba`` (``TINYGEN_KERNELS=numba``, or ``auto`` with Numba installed), so importing
tinygen never imports Numba. Read `reference.py` first: the math, the conventions on shapes,
dtypes and coefficients, and the definition of the generator are there; this file only lays the
same work out for the machine.

Layout
------
Every step is elementwise with one coefficient set per sample, so the work is the flat C-order
index range of the images, cut into tasks spread over Numba's threads (`prange`). A task walks
its range sample by sample (`_run`), and for each sample's run of pixels calls `_segment`, the
one place that holds the step formulas: the coefficients are hoisted, the innermost loop runs
over contiguous pixels with no index arithmetic, and LLVM vectorizes it (AVX-512 here). The
per-sample coefficients are computed in NumPy by the wrappers, in the images' dtype, exactly as
the reference computes them, and the step is evaluated in the reference's order of operations
with ``fastmath=False`` (no reassociation, no fused multiply-add): for a given z the results
are the reference's, bit for bit in practice.

The *_noise kernels and `normal` make z inside each task (`_noise_task`): a block of 256
Philox counters (1024 normals) at a time into a small float32 buffer that stays in L1, then the
step reads it instead of a z array. Philox4x32-10 (ten rounds of 32 x 32 -> 64-bit products on
uint64 lanes) and Box-Muller vectorize as one loop over counters; the transcendental functions
are Cephes' single-precision polynomials (S. Moshier, Cephes Math Library, logf.c and sinf.c),
plain arithmetic, since a libm call would keep the loop scalar:

- ln u1, u1 = n / 2^24 with an integer n in 1..2^24 (exact in float32): n = m 2^e with
  m in [sqrt(1/2), sqrt(2)), ln u1 = (e - 24) ln 2 + ln m, ln m a degree-9 polynomial in m - 1
  (logf.c); m and e are read from n's float32 bits (`_float_bits`, `_bits_float`);
- cos and sin of 2 pi u2, u2 = k / 2^24: the nearest quarter turn j = round(k / 2^22) is taken out
  exactly in integers, leaving x = 2 pi (k - j 2^22) / 2^24 in [-pi/4, pi/4), where sinf.c's
  polynomials hold; the quarter turns rotate (cos x, sin x) by j * 90 degrees.

Each normal is within a few float32 ulps of the reference's (which is the exact value rounded
once); the tests bound it. Every element's value depends only on (seed, its index), so the
results do not depend on the number of threads or on the task cut. Small steps run on the
calling thread alone (`PARALLEL_MIN`, `PARALLEL_MIN_NOISE`).

Measured (`benchmarks/kernels.py`, float32, 2-core AMD EPYC Zen 4 shared with a training run,
so the second core was mostly taken: read these as one core's numbers): the generator makes
0.8-0.9 ns per normal (process CPU time 0.79 ns per normal; NumPy's float32 standard_normal
7.7 ns, torch.randn 2.5 ns), so the steps with noise inside run at about 1 ns per pixel
(10-13 GB/s), bound by the generator. Without the generator, q_sample and p_sample_step on
(64, 3, 64, 64) moved 83-97 GB/s, 81-95% of a parallel copy of arrays of that size (about
100 GB/s, in cache); on (16, 3, 256, 256) 42-43 GB/s, 60-65% of a same-size copy, whose two
arrays fit in the 32 MB L3 while the step's three or four do not (a copy of arrays beyond
the caches made 36 GB/s then). A first call compiles for a few seconds per dtype (2.6 s for
the first float32 noise step), once: the kernels are cached on disk.

Buffers
-------
Every output comes from `_empty` (`np.empty`) unless the caller passes `out=`, and the kernels
write each of its elements; the tests replace `_empty` with a NaN-filling allocator to prove it.
Inputs are made C-contiguous at the entrance (a no-op for the arrays tinygen passes), so each
kernel is compiled for contiguous arrays only. Every compiled function is
`@njit(cache=True, fastmath=False)`, compiled on first call per dtype and cached on disk.
Threading: tinygen's one policy, from `tinygen.kernels.cpu_runtime` (Numba's pool set to sleep when idle
before it starts), as for the conv kernels.
"""

import math

import numpy as np

from tinygen.kernels.cpu_runtime import load_numba

# Through the backend, never a bare `import numba`: it applies tinygen's threading policy before
# Numba's thread pool starts, whoever imports this module first.
numba = load_numba()
if numba is None:
    raise ImportError("the Numba diffusion kernels need Numba: pip install tinygen[cpu]")
from llvmlite import ir  # noqa: E402  (comes with Numba)
from numba.extending import intrinsic  # noqa: E402

prange = numba.prange

_jit = dict(cache=True, fastmath=False, nogil=True)

# What `_segment` computes on a run of one sample's pixels (c: that sample's coefficients).
NORMAL = 0  # out = z
Q_SAMPLE = 1  # out = c0 x + c1 z                                  (z is eps)
Q_SAMPLE_Z = 2  # out = c0 x + c1 z, and out2 = z                   (q_sample_noise returns eps)
P_MEAN = 3  # out = c1 (x - c0 e)
P_SAMPLE = 4  # out = c1 (x - c0 e) + c2 z
DDIM_MEAN = 5  # out = c2 ((x - c0 e) / c1) + c3 e
DDIM = 6  # out = c2 ((x - c0 e) / c1) + c3 e + c4 z

BLOCK = 4096  # elements per task of the steps without a generator
SUB = 256  # Philox counters (4 normals each) per buffer fill
TASK = 8 * SUB  # counters per task of the steps with the generator
# Below these sizes (elements) one thread runs the whole step: waking Numba's sleeping pool costs
# ~7 us, more than the second thread saves (measured, 2 busy cores: 100k elements took 12 us on one
# thread, 17 us on two; 16k normals 16 us on one, 22 us on two).
PARALLEL_MIN = 2**17
PARALLEL_MIN_NOISE = 2**14


def _empty(shape, dtype):
    """Every output buffer of this module is allocated here (the tests poison it with NaN)."""
    return np.empty(shape, dtype)


# --- Philox4x32-10 and Box-Muller in float32 ------------------------------------------------------


@intrinsic
def _float_bits(typingctx, x):
    """The bits of a float32 as a uint32 (an LLVM bitcast: free, and vectorizes)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return numba.types.uint32(numba.types.float32), codegen


@intrinsic
def _bits_float(typingctx, x):
    """The float32 whose bits are the uint32 x."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return numba.types.float32(numba.types.uint32), codegen


_U = np.uint64  # every integer of the generator is a uint64 (Numba would turn uint64 + int64 into a float)
_M0, _M1 = _U(0xD2511F53), _U(0xCD9E8D57)  # reference.PHILOX_M
_W0, _W1 = _U(0x9E3779B9), _U(0xBB67AE85)  # reference.PHILOX_W
_LOW32, _32, _8 = _U(0xFFFFFFFF), _U(32), _U(8)
_F = np.float32
# Cephes logf.c: ln(1 + x) = x - x^2/2 + x^3 P(x) on [sqrt(1/2) - 1, sqrt(2) - 1], ln 2 = C1 + C2
_LOG_P = tuple(_F(v) for v in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                               1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                               3.3333331174e-1))
_LN2_C1, _LN2_C2 = _F(0.693359375), _F(-2.12194440e-4)
_SQRT_2 = _F(math.sqrt(2))
# Cephes sinf.c on [-pi/4, pi/4]: sin x = x + x^3 S(x^2), cos x = 1 - x^2/2 + x^4 C(x^2)
_SIN_S = (_F(-1.9515295891e-4), _F(8.3321608736e-3), _F(-1.6666654611e-1))
_COS_C = (_F(2.443315711809948e-5), _F(-1.388731625493765e-3), _F(4.166664568298827e-2))
_TURN = _F(2 * math.pi / 2**24)  # radians per step of u2 * 2^24


@numba.njit(inline="always", **_jit)
def _philox(c0, c1, k0, k1):
    """Philox4x32-10 of the counter (c0, c1, 0, 0) with the key (k0, k1): see reference.philox4x32."""
    c2, c3 = _U(0), _U(0)
    for r in range(10):
        if r > 0:
            k0, k1 = (k0 + _W0) & _LOW32, (k1 + _W1) & _LOW32
        p0, p1 = _M0 * c0, _M1 * c2  # 32 x 32 -> 64 bits, exact in a uint64
        c0, c1, c2, c3 = (p1 >> _32) ^ c1 ^ k0, p1 & _LOW32, (p0 >> _32) ^ c3 ^ k1, p0 & _LOW32
    return c0, c1, c2, c3


@numba.njit(inline="always", **_jit)
def _log_u1(w):
    """ln u1 for u1 = (w >> 8 + 1) / 2^24 (w a 32-bit word): Cephes logf on n = (w >> 8) + 1."""
    n = _F(np.int32((w >> _8) + _U(1)))  # 1..2^24, exact
    bits = _float_bits(n)
    e = _F(np.int32(bits >> np.uint32(23)) - np.int32(127 + 24))  # n = m 2^(e + 24), u1 = m 2^e
    m = _bits_float((bits & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000))  # in [1, 2)
    if m > _SQRT_2:  # to [sqrt(1/2), sqrt(2))
        m = m * _F(0.5)
        e = e + _F(1)
    x = m - _F(1)
    z = x * x
    y = _LOG_P[0]
    for p in _LOG_P[1:]:
        y = y * x + p
    y = y * x * z + _LN2_C2 * e - _F(0.5) * z
    return x + y + _LN2_C1 * e


@numba.njit(inline="always", **_jit)
def _box_muller(w0, w1):
    """Two float32 normals from two 32-bit words: r cos(2 pi u2), r sin(2 pi u2), as reference.box_muller."""
    r = np.sqrt(_F(-2) * _log_u1(w0))
    k = np.int64(w1 >> _8)  # u2 = k / 2^24
    j = (k + (1 << 21)) >> 22  # the nearest quarter turn, 0..4
    x = _F(k - (j << 22)) * _TURN  # the rest, in [-pi/4, pi/4): exact integers, one rounding
    z = x * x
    s = x + x * z * ((_SIN_S[0] * z + _SIN_S[1]) * z + _SIN_S[2])
    c = _F(1) - _F(0.5) * z + z * z * ((_COS_C[0] * z + _COS_C[1]) * z + _COS_C[2])
    j = j & 3  # (cos, sin)(x + j pi/2) = (c, s), (-s, c), (-c, -s), (s, -c)
    cos_, sin_ = (s, c) if j & 1 else (c, s)
    if j == 1 or j == 2:
        cos_ = -cos_
    if j >= 2:
        sin_ = -sin_
    return r * cos_, r * sin_


@numba.njit(**_jit)
def _fill_normals(z, first, count, k0, k1):
    """z[4 q + l] = normal number 4 (first + q) + l of the stream with key (k0, k1), q < count."""
    for q in range(count):
        c = first + _U(q)
        w0, w1, w2, w3 = _philox(c & _LOW32, c >> _32, k0, k1)
        z[4 * q], z[4 * q + 1] = _box_muller(w0, w1)
        z[4 * q + 2], z[4 * q + 3] = _box_muller(w2, w3)


# --- the steps ------------------------------------------------------------------------------------


@numba.njit(inline="always", **_jit)
def _segment(kind, c, s, x, e, z, out, out2):
    """The step `kind` on one run of sample s's pixels (1-D contiguous slices of equal length),
    with that sample's coefficients c[:, s], in the reference's order of operations."""
    n = out.shape[0]
    if kind == NORMAL:
        for k in range(n):
            out[k] = z[k]
    elif kind == Q_SAMPLE:  # x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, eps = z
        a, b = c[0, s], c[1, s]
        for k in range(n):
            out[k] = a * x[k] + b * z[k]
    elif kind == Q_SAMPLE_Z:
        a, b = c[0, s], c[1, s]
        for k in range(n):
            out[k] = a * x[k] + b * z[k]
            out2[k] = z[k]
    elif kind == P_MEAN:  # x_{t-1} = (x_t - coef_eps eps) / sqrt(alpha_t) + sigma z
        coef, inv = c[0, s], c[1, s]
        for k in range(n):
            out[k] = inv * (x[k] - coef * e[k])
    elif kind == P_SAMPLE:
        coef, inv, sigma = c[0, s], c[1, s], c[2, s]
        for k in range(n):
            out[k] = inv * (x[k] - coef * e[k]) + sigma * z[k]
    elif kind == DDIM_MEAN:  # x' = sqrt(abar') x0_hat + direction eps + sigma z
        b, a, a_prev, direction = c[0, s], c[1, s], c[2, s], c[3, s]
        for k in range(n):
            out[k] = a_prev * ((x[k] - b * e[k]) / a) + direction * e[k]
    else:  # DDIM
        b, a, a_prev, direction, sigma = c[0, s], c[1, s], c[2, s], c[3, s], c[4, s]
        for k in range(n):
            out[k] = a_prev * ((x[k] - b * e[k]) / a) + direction * e[k] + sigma * z[k]


@numba.njit(**_jit)
def _run(kind, c, x, e, z, out, out2, lo, hi, z_at):
    """The step on the flat elements lo..hi-1, sample by sample; element i's noise is z[i - z_at]."""
    per_sample = out.shape[0] // c.shape[1]
    i = lo
    while i < hi:
        s = i // per_sample
        end = min(hi, (s + 1) * per_sample)
        # step-less slices: known contiguous, so the loops in _segment vectorize
        _segment(kind, c, s, x[i:end], e[i:end], z[i - z_at : end - z_at], out[i:end], out2[i:end])
        i = end


@numba.njit(parallel=True, **_jit)
def _steps(kind, c, x, e, z, out, out2):
    """The step on every element, z read from memory: tasks of BLOCK elements over the threads.
    (`_run` over all elements is the same on one thread.)"""
    n = out.shape[0]
    for t_ in prange((n + BLOCK - 1) // BLOCK):
        t = np.int64(t_)  # prange's index is unsigned; int64 keeps the index arithmetic integer
        _run(kind, c, x, e, z, out, out2, t * BLOCK, min(n, (t + 1) * BLOCK), 0)


@numba.njit(**_jit)
def _noise_task(kind, c, x, e, out, out2, k0, k1, first, lane, q_lo, q_hi):
    """The step on the elements whose noise comes from counters q_lo..q_hi-1 (counted from `first`):
    element i's z is normal number 4 first + lane + i of the stream with key (k0, k1), made SUB
    counters at a time into a buffer."""
    n = out.shape[0]
    z = np.empty(4 * SUB, np.float32)
    for q in range(q_lo, q_hi, SUB):
        count = min(q_hi - q, SUB)
        _fill_normals(z, first + _U(q), count, k0, k1)
        z_at = 4 * q - lane  # the element whose noise is z[0]
        _run(kind, c, x, e, z, out, out2, max(z_at, 0), min(z_at + 4 * count, n), z_at)


@numba.njit(parallel=True, **_jit)
def _noise_steps(kind, c, x, e, out, out2, k0, k1, first, lane):
    """The step on every element, z made in place: tasks of TASK counters over the threads.
    (`_noise_task` over all counters is the same on one thread.)"""
    counters = (lane + out.shape[0] + 3) // 4
    for t_ in prange((counters + TASK - 1) // TASK):
        t = np.int64(t_)
        _noise_task(kind, c, x, e, out, out2, k0, k1, first, lane, t * TASK, min(counters, (t + 1) * TASK))


# --- helpers in Python ------------------------------------------------------------------------


def _flat(a):
    """a as a flat C-contiguous array (a view when it already is contiguous)."""
    return np.ascontiguousarray(a).reshape(-1)


def _output(out, shape, dtype):
    """A flat view of `out`, or of a new buffer, and the array to return."""
    if out is None:
        out = _empty(shape, dtype)
    elif not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    return out.reshape(-1), out


def _coefficients(x, *coefficients):
    """The per-sample coefficients as one (len(coefficients), B) array of x's dtype: a number
    applies to every sample; each is cast to x's dtype first, as `reference.per_sample` does."""
    c = np.empty((len(coefficients), x.shape[0]), x.dtype)
    for row, coef in zip(c, coefficients):
        row[...] = np.asarray(coef, dtype=x.dtype)
    return c


def _ddim_coefficients(x, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma):
    """(b, a, a', direction, sigma) per sample, direction = sqrt(max(1 - a'^2 - sigma^2, 0)) computed
    in x's dtype exactly as reference.ddim_step computes it."""
    c = _coefficients(x, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_t, sqrt_alpha_bar_prev, 0, sigma)
    c[3] = np.sqrt(np.maximum(1 - c[2] * c[2] - c[4] * c[4], 0))
    return c


def _key(seed, offset):
    """(k0, k1, first counter, lane): the Philox key words of `seed` and where number `offset` sits."""
    seed, offset = int(seed), int(offset)
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32), np.uint64(offset // 4), offset % 4


def _step(kind, c, x, e, z, out):
    """The step `kind` with z read from memory, into out (or a new array), on one or all threads."""
    x, e = np.ascontiguousarray(x), np.ascontiguousarray(e)
    flat_out, out = _output(out, x.shape, x.dtype)
    args = (kind, c, x.reshape(-1), e.reshape(-1), _flat(z), flat_out, flat_out)
    if x.size >= PARALLEL_MIN:
        _steps(*args)
    elif x.size:
        _run(*args, 0, x.size, 0)
    return out


def _noise(kind, c, x, e, out, out2, seed, offset):
    """The step `kind` with z made inside, on flat arrays, on one or all threads."""
    n = out.shape[0]
    k0, k1, first, lane = _key(seed, offset)
    if n >= PARALLEL_MIN_NOISE:
        _noise_steps(kind, c, x, e, out, out2, k0, k1, first, lane)
    elif n:
        _noise_task(kind, c, x, e, out, out2, k0, k1, first, lane, 0, (lane + n + 3) // 4)


def _noise_step(kind, c, x, e, seed, offset, out):
    x, e = np.ascontiguousarray(x), np.ascontiguousarray(e)
    flat_out, out = _output(out, x.shape, x.dtype)
    _noise(kind, c, x.reshape(-1), e.reshape(-1), flat_out, flat_out, seed, offset)
    return out


# --- the public functions: reference.py's signatures ----------------------------------------


def q_sample(x0, eps, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, out=None):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, per sample."""
    c = _coefficients(x0, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t)
    return _step(Q_SAMPLE, c, x0, x0, eps, out)


def p_sample_step(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, z=None, out=None):
    """x_{t-1} = inv_sqrt_alpha (x_t - coef_eps eps_theta) + sigma z (z None: no noise term)."""
    c = _coefficients(x_t, coef_eps, inv_sqrt_alpha, sigma)
    return _step(P_MEAN if z is None else P_SAMPLE, c, x_t, eps_pred, x_t if z is None else z, out)


def ddim_step(x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, z=None,
              out=None):
    """One DDIM step (Song et al. 2021, eq. 12); z None: no noise term."""
    c = _ddim_coefficients(x_t, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma)
    return _step(DDIM_MEAN if z is None else DDIM, c, x_t, eps_pred, x_t if z is None else z, out)


def q_sample_noise(x0, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, seed, offset=0, out=None):
    """(x_t, eps): q_sample with eps = normal(x0.shape, seed, offset, x0.dtype), and that eps."""
    c = _coefficients(x0, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t)
    x0 = np.ascontiguousarray(x0)
    flat_x_t, x_t = _output(None if out is None else out[0], x0.shape, x0.dtype)
    flat_eps, eps = _output(None if out is None else out[1], x0.shape, x0.dtype)
    flat_x0 = x0.reshape(-1)
    _noise(Q_SAMPLE_Z, c, flat_x0, flat_x0, flat_x_t, flat_eps, seed, offset)
    return x_t, eps


def p_sample_step_noise(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, seed, offset=0, out=None):
    """p_sample_step with z = normal(x_t.shape, seed, offset, x_t.dtype), made inside the kernel."""
    c = _coefficients(x_t, coef_eps, inv_sqrt_alpha, sigma)
    return _noise_step(P_SAMPLE, c, x_t, eps_pred, seed, offset, out)


def ddim_step_noise(x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, seed,
                    offset=0, out=None):
    """ddim_step with z = normal(x_t.shape, seed, offset, x_t.dtype), made inside the kernel."""
    c = _ddim_coefficients(x_t, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma)
    return _noise_step(DDIM, c, x_t, eps_pred, seed, offset, out)


def normal(shape, seed, offset=0, dtype=np.float32, out=None):
    """Standard normals of `shape`: element k is number offset + k of the stream `seed` (reference.normal)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    flat_out, out = _output(out, shape, np.dtype(dtype))
    c = np.zeros((1, 1), flat_out.dtype)  # one "sample": NORMAL uses no coefficient
    _noise(NORMAL, c, flat_out, flat_out, flat_out, flat_out, seed, offset)
    return out
