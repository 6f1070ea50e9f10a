"""2-D convolution on the CPU with Numba: the functions of `reference.py`, same signatures, faster.

Only `tinygen.kernels.conv2d.implementation()` imports this module, and only when the kernel
backend is ``numba`` (``TINYGEN_KERNELS=numba``, or ``auto`` with Numba installed), so importing
tinygen never imports Numba. Every compiled function is `@njit(cache=True, fastmath=False)`:
compiled on its first call for each dtype (float32, float64) and cached on disk for the next
process. Read `reference.py` first: the layouts, the im2col idea and the adjoint identities are
the same; this file only changes how the work is laid out for the machine.

Two paths (`paths` counts which one each call took)
--------------------------------------------------
- **gemm** (most layers): im2col writes the windows as a matrix cols (K, n*Ho*Wo),
  K = Cin*kh*kw, rows ordered (c, ky, kx) and columns (n, oy, ox), so that the convolution of
  n samples is *one* BLAS product:

      forward:          y_t (Cout, n*P) = w (Cout, K) @ cols (K, n*P),     then y_t -> (n, Cout, P)
      backward weight:  gw (Cout, K)   += g_t (Cout, n*P) @ cols.T,        g_t = grad_out as (Cout, n*P)
      backward input:   gcols (K, n*P)  = w.T (K, Cout) @ g_t,             then col2im(gcols)

  (P = Ho*Wo.) The batch is cut into chunks of n samples (`_chunks`: a power of two, small
  enough that a chunk's cols and outputs fit in one core's L2 cache, CHUNK_BYTES), and each of
  tinygen's threads runs whole chunks, im2col -> product -> swap or col2im, with
  single-threaded OpenBLAS (`tinygen.kernels.cpu_runtime.run_split`). So the k*k-times-larger
  cols matrix is written and read back within L2, never through memory, and the products keep their
  efficiency (a chunk's product is hundreds to thousands of columns wide). im2col and col2im
  read and write a zero-padded copy of the chunk (`_im2col_padded`), so their loops test no
  bounds. The weight gradient keeps one partial sum per chunk and adds them in chunk order,
  so no result depends on the thread count. Measured by `python -m benchmarks.kernels`
  (2-core Xeon, fwd + both backwards, ms, whole-batch products before -> chunks): c2 25.6 ->
  24.1, c3 22.1 -> 13.1, c4 42.2 -> 34.2, t5 15.3 -> 14.0, c6 80.2 -> 48.9.
- **direct** (stride 1 and a single output channel, e.g. a final 32 -> 1 layer; for the forward
  pass also a single input channel, e.g. the 1 -> 32 first layer of an MNIST model): with
  Cout = 1 the product is a matrix-vector product, memory-bound on a cols matrix Cin*kh*kw
  times larger than the input. Loops over the zero-padded input are faster: each plane is
  flattened with the padded row pitch Wp, so that for stride 1 every tap is one shift of one
  long contiguous run (output pixel j = oy*Wp + ox reads input j + ky*dh*Wp + kx*dw; the
  Wp - Wo extra columns are computed and thrown away), and the backward-input pass is the same
  gather with the flipped kernel over grad_out padded by the kernel's reach. The innermost loop
  runs over independent outputs, so LLVM vectorizes it without reassociating any sum
  (``fastmath=False`` forbids that). The weight gradient is a reduction: it keeps one partial
  sum per lane of a short block and per batch chunk, and adds them in a fixed order at the
  end, so its result does not depend on the number of threads.

  Measured (1 thread, N = 32, 28x28, k3 p1, ms, direct vs gemm): 1 -> 32 forward 0.32 vs 0.38,
  backward-input 0.62 vs 0.41, backward-weight 1.04 vs 0.47; 32 -> 1 forward 0.59 vs 6.9,
  backward-input 0.30 vs 13.0, backward-weight 0.96 vs 5.8. Hence the rule in `_direct`.

Transposed convolution reuses the three conv functions, wired by `reference.transposed` as for the
reference.

Buffers
-------
Every array a kernel writes comes from `_empty` (`np.empty`: the arrays a function returns) or
`_scratch` (the intermediates that die with the call: cols, the GEMM's output, swapped and
padded copies), and every kernel writes each of its elements; the tests replace both with a
NaN-filling allocator to prove it. `_scratch` hands out views of one reusable buffer per role
and thread, grown to the largest request, because a fresh `np.empty` of tens of megabytes comes
back from the operating system as untouched pages, and the first write to each page faults:
that cost 2-4 ms per call on c3/c4-sized layers, as much as the layer's GEMM (measured with
`python -m benchmarks.kernels`, before and after). The price is memory held for the life of
the thread: a few chunk-sized matrices (a few MB) and the direct path's padded planes.
Inputs are made C-contiguous at the entrance (a no-op for the arrays tinygen passes), so each
kernel is compiled for contiguous arrays only: two signatures each, float32 and float64.
Threading: tinygen's one policy is in `tinygen.kernels.cpu_runtime` (Numba's pool set to sleep when idle
before it starts; the chunks of the gemm path on tinygen's own threads, `run_split`).
"""

import threading
from collections import Counter

import numpy as np

from tinygen.kernels.cpu_runtime import check_numba_dtype, load_numba, run_split
from tinygen.kernels.conv2d.reference import conv_output_size, transposed

# Through cpu_runtime, never a bare `import numba`: it applies tinygen's threading policy before
# Numba's thread pool starts, whoever imports this module first.
numba = load_numba()
if numba is None:
    raise ImportError("the Numba conv kernels need Numba: pip install tinygen[cpu]")
prange = numba.prange

# The gemm path works through the batch in chunks whose matrices fit in a core's L2 cache, in
# at least MIN_CHUNKS chunks wherever the batch allows (work for 8 threads).
CHUNK_BYTES = 2 << 20
MIN_CHUNKS = 8

# A conv with this few output channels (forward: or input channels) takes the direct loops.
DIRECT_MAX_CHANNELS = 1

paths = Counter()  # "gemm" / "direct": which path each conv call took (tests assert on it)

_jit = dict(cache=True, fastmath=False, nogil=True)


def _empty(shape, dtype):
    """Every array this module returns is allocated here (the tests poison it with NaN)."""
    return np.empty(shape, dtype)


_scratch_buffers = threading.local()  # role -> flat uint8 buffer, one set per thread


def _scratch(role, shape, dtype):
    """An uninitialised (shape, dtype) array for an intermediate that dies with the call: a view
    of this thread's reusable buffer for `role`, grown when too small (the tests poison it)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    buffer = getattr(_scratch_buffers, role, None)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = np.empty(nbytes, np.uint8)
        setattr(_scratch_buffers, role, buffer)
    return buffer[:nbytes].view(dtype).reshape(shape)


# --- compiled kernels -------------------------------------------------------------------------


@numba.njit(inline="always", cache=True)
def _valid_range(kx, size, out_size, stride, padding, dilation):
    """[lo, hi): the outputs o whose tap k reads inside the input, 0 <= o*s - p + k*d < size."""
    first = padding - kx * dilation  # o*s >= first
    lo = min(out_size, max(0, -((-first) // stride)))  # ceil(first / stride); // floors, as Python's
    last = size + padding - kx * dilation  # o*s < last
    hi = min(out_size, max(lo, -((-last) // stride)))
    return lo, hi


@numba.njit(parallel=True, **_jit)
def _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw):
    """cols[row(n, c, ky, kx), oy, ox] = x[n, c, oy*sh - ph + ky*dh, ox*sw - pw + kx*dw] (0 outside).

    cols is (N*C*kh*kw, Ho, Wo), rows ordered (n, c, ky, kx): the public (N, C, kh, kw, Ho, Wo)
    layout of `im2col` (the conv functions use `_im2col_padded`, chunk by chunk).
    """
    N, C, H, W = x.shape
    Ho, Wo = cols.shape[1], cols.shape[2]
    for r_ in prange(N * C * kh * kw):  # r walks (n, c, ky, kx): reads x plane by plane
        r = np.int64(r_)  # prange's index is unsigned; int64 keeps the index arithmetic integer
        kx = r % kw
        ky = (r // kw) % kh
        c = (r // (kw * kh)) % C
        n = r // (kw * kh * C)
        dst = cols[r]
        lo, hi = _valid_range(kx, W, Wo, sw, pw, dw)
        off = kx * dw - pw  # output column ox reads input column ox*sw + off
        for oy in range(Ho):
            out = dst[oy]
            iy = oy * sh - ph + ky * dh
            if iy < 0 or iy >= H:
                for ox in range(Wo):
                    out[ox] = 0
                continue
            for ox in range(lo):
                out[ox] = 0
            for ox in range(hi, Wo):
                out[ox] = 0
            src = x[n, c, iy]
            if sw == 1:  # step-less slices are known contiguous: the copy vectorizes
                run, shifted = out[lo:hi], src[lo + off : hi + off]
                for i in range(hi - lo):
                    run[i] = shifted[i]
            else:
                for ox in range(lo, hi):
                    out[ox] = src[ox * sw + off]


@numba.njit(parallel=True, **_jit)
def _col2im(cols, x, kh, kw, sh, sw, ph, pw, dh, dw):
    """x[n, c] = sum over taps of cols scattered back: the adjoint of `_im2col` (same layout).

    One parallel iteration owns one (n, c) plane, so no two threads add to the same pixel; the
    taps are added in (ky, kx) order, as in the reference.
    """
    N, C, H, W = x.shape
    Ho, Wo = cols.shape[1], cols.shape[2]
    for p_ in prange(N * C):
        p = np.int64(p_)  # prange's index is unsigned; int64 keeps the index arithmetic integer
        plane = x[p // C, p % C]
        for iy in range(H):
            for ix in range(W):
                plane[iy, ix] = 0
        for ky in range(kh):
            for kx in range(kw):
                src = cols[(p * kh + ky) * kw + kx]
                lo, hi = _valid_range(kx, W, Wo, sw, pw, dw)
                off = kx * dw - pw
                for oy in range(Ho):
                    iy = oy * sh - ph + ky * dh
                    if iy < 0 or iy >= H:
                        continue
                    dst = plane[iy]
                    if sw == 1:  # as in _im2col: step-less slices vectorize
                        shifted, run = dst[lo + off : hi + off], src[oy, lo:hi]
                        for i in range(hi - lo):
                            shifted[i] += run[i]
                    else:
                        for ox in range(lo, hi):
                            dst[ox * sw + off] += src[oy, ox]


@numba.njit(**_jit)
def _swap01(a, out):
    """out[j, i, :] = a[i, j, :] for a (I, J, P): (N, C, P) <-> (C, N, P), rows of P at a time.
    On the calling thread: it runs on one chunk of the batch (see `_chunked`)."""
    I, J, P = a.shape
    for i in range(I):
        for j in range(J):
            src = a[i, j]
            dst = out[j, i]
            for k in range(np.uint64(P)):  # unsigned: no wraparound test, as in `_im2col_padded`
                dst[k] = src[k]


@numba.njit(inline="always", cache=True)
def _pad_plane(src, dst, H, W, Hp, Wp, ph, pw):
    """One plane of `_pad`, flattened: src (H*W), dst (Hp*Wp). Flat unsigned indices, as in
    `_im2col_padded`: 1.6-3x faster than row slices on 7 x 7 to 32 x 32 planes."""
    width, pitch, left = np.uint64(W), np.uint64(Wp), np.uint64(pw)
    for iy in range(Hp):
        base = np.uint64(iy) * pitch
        if iy < ph or iy >= ph + H:
            for ix in range(pitch):
                dst[base + ix] = 0
            continue
        row = np.uint64(iy - ph) * width
        for ix in range(left):
            dst[base + ix] = 0
        for ix in range(width):
            dst[base + left + ix] = src[row + ix]
        for ix in range(left + width, pitch):
            dst[base + ix] = 0


@numba.njit(parallel=True, **_jit)
def _pad(x, out, ph, pw):
    """out (N, C, Hp, Wp) = x placed at (ph, pw), zeros around (Hp >= H + ph, Wp >= W + pw)."""
    N, C, H, W = x.shape
    Hp, Wp = out.shape[2], out.shape[3]
    src, dst = x.reshape(N * C, H * W), out.reshape(N * C, Hp * Wp)
    for p in prange(N * C):
        _pad_plane(src[p], dst[p], H, W, Hp, Wp, ph, pw)


@numba.njit(**_jit)
def _pad_serial(x, out, ph, pw):
    """`_pad` on the calling thread (for one chunk of the batch; see `_chunks`)."""
    N, C, H, W = x.shape
    Hp, Wp = out.shape[2], out.shape[3]
    src, dst = x.reshape(N * C, H * W), out.reshape(N * C, Hp * Wp)
    for p in range(N * C):
        _pad_plane(src[p], dst[p], H, W, Hp, Wp, ph, pw)


@numba.njit(**_jit)
def _im2col_padded(xp, cols, offsets, pitch, Ho, Wo, sh, sw):
    """cols[c*T + t, (i*Ho + oy)*Wo + ox] = xp[i, c, oy*sh*pitch + ox*sw + offsets[t]]: the GEMM
    layout of im2col for a chunk, read from its zero-padded planes xp (n, C, rows*pitch), so that
    no window leaves its plane and the loops test no bounds (tiny planes, e.g. 7 x 7, spent most
    of their time on those tests). Unsigned indices spare Numba's negative-index wraparound: the
    copies then take 0.20 ms instead of 0.31 (slices) or 0.36 (signed) on a 16 x 64 x 7 x 7 chunk."""
    n, C = xp.shape[0], xp.shape[1]
    T, P, width, step = offsets.shape[0], Ho * Wo, np.uint64(Wo), np.uint64(sw)
    for c in range(C):
        for t in range(T):
            row = cols[c * T + t]
            for i in range(n):
                src = xp[i, c]
                for oy in range(Ho):
                    s0 = np.uint64(oy * sh * pitch + offsets[t])
                    d0 = np.uint64(i * P + oy * Wo)
                    for ox in range(width):
                        row[d0 + ox] = src[s0 + ox * step]


@numba.njit(**_jit)
def _col2im_padded(cols, xp, offsets, pitch, Ho, Wo, sh, sw):
    """The adjoint of `_im2col_padded`: xp (n, C, rows*pitch) zeroed, then every entry of cols
    added back onto the padded pixel it came from, plane by plane, taps in order."""
    n, C, L = xp.shape
    T, P, width, step = offsets.shape[0], Ho * Wo, np.uint64(Wo), np.uint64(sw)
    for i in range(n):
        for c in range(C):
            dst = xp[i, c]
            for j in range(L):
                dst[j] = 0
            for t in range(T):
                row = cols[c * T + t]
                for oy in range(Ho):
                    s0 = np.uint64(oy * sh * pitch + offsets[t])
                    d0 = np.uint64(i * P + oy * Wo)
                    for ox in range(width):
                        dst[s0 + ox * step] += row[d0 + ox]


@numba.njit(**_jit)
def _crop(xp, x, ph, pw):
    """x (n, C, H, W) = the planes xp (n, C, Hp, Wp) without their padding: the inverse of `_pad`."""
    n, C, H, W = x.shape
    for i in range(n):
        for c in range(C):
            for iy in range(H):
                dst, src = x[i, c, iy], xp[i, c, iy + ph, pw : pw + W]
                for ix in range(W):
                    dst[ix] = src[ix]


@numba.njit(parallel=True, **_jit)
def _direct_gather(src, w, offsets, pitch, y):
    """y[n, co, oy, ox] = sum over c and taps t of w[co, c, t] * src[n, c, oy*pitch + ox + offsets[t]].

    src (N, C, rows*pitch) holds zero-padded planes flattened with row pitch `pitch`, so that for
    stride 1 every tap is one shift of one long contiguous run: all Ho*pitch flat outputs are
    computed (the pitch - Wo extra columns are thrown away). Taps go three at a time, so the
    plane buffer is loaded and stored once per three products. One parallel iteration computes
    one output plane (n, co).
    """
    N, C = src.shape[0], src.shape[1]
    Cout, T = w.shape[0], w.shape[2]
    Ho, Wo = y.shape[2], y.shape[3]
    L = Ho * pitch
    for q_ in prange(N * Cout):
        q = np.int64(q_)  # prange's index is unsigned; int64 keeps the index arithmetic integer
        n = q // Cout
        co = q % Cout
        buf = np.zeros(L, dtype=y.dtype)
        for c in range(C):
            plane = src[n, c]
            t = 0
            while t + 3 <= T:
                w0, w1, w2 = w[co, c, t], w[co, c, t + 1], w[co, c, t + 2]
                # Slices: one index check each, none per element, so the loop vectorizes.
                s0 = plane[offsets[t] : offsets[t] + L]
                s1 = plane[offsets[t + 1] : offsets[t + 1] + L]
                s2 = plane[offsets[t + 2] : offsets[t + 2] + L]
                for j in range(L):  # independent outputs: vectorized
                    buf[j] += w0 * s0[j] + w1 * s1[j] + w2 * s2[j]
                t += 3
            while t < T:
                wv = w[co, c, t]
                s0 = plane[offsets[t] : offsets[t] + L]
                for j in range(L):
                    buf[j] += wv * s0[j]
                t += 1
        out = y[n, co]
        for oy in range(Ho):
            row = out[oy]
            run = buf[oy * pitch : oy * pitch + Wo]
            for ox in range(Wo):
                row[ox] = run[ox]


_BLOCK = 64  # columns of the weight-gradient accumulator: a few vector registers wide


@numba.njit(parallel=True, **_jit)
def _direct_backward_weight(xp, gp, offsets, partial):
    """partial[chunk, co, c, t] = sum over the chunk's samples n and over j of
    gp[n, co, j] * xp[n, c, j + offsets[t]] (flat layouts as in `_direct_gather`).

    A reduction: to vectorize it without reassociating (no fastmath), each of _BLOCK columns
    keeps its own running sum (acc[t, :]); the columns are added at the end, and the chunks by
    the caller, both in a fixed order, so the result does not depend on the thread count.
    """
    N, Cout, L = gp.shape
    nchunk, _, C, T = partial.shape
    for q_ in prange(nchunk * Cout * C):
        q = np.int64(q_)  # prange's index is unsigned; int64 keeps the index arithmetic integer
        c = q % C
        co = (q // C) % Cout
        chunk = q // (C * Cout)
        acc = np.zeros((T, _BLOCK), dtype=partial.dtype)
        for n in range(chunk * N // nchunk, (chunk + 1) * N // nchunk):
            g = gp[n, co]
            x = xp[n, c]
            for j0 in range(0, L, _BLOCK):
                width = min(_BLOCK, L - j0)
                gs = g[j0 : j0 + width]
                for t in range(T):
                    xs = x[j0 + offsets[t] : j0 + offsets[t] + width]
                    lanes = acc[t]
                    for k in range(width):  # independent lanes: vectorized
                        lanes[k] += gs[k] * xs[k]
        for t in range(T):
            s = acc[t, 0]
            for k in range(1, _BLOCK):
                s += acc[t, k]
            partial[chunk, co, c, t] = s


# --- helpers in Python ------------------------------------------------------------------------


def _contiguous(*arrays, what="conv2d"):
    """The arrays as C-contiguous arrays of one common dtype (no copy when they already are); a
    dtype Numba cannot compile for (float16) raises `DTypeError`."""
    check_numba_dtype(what, *arrays)
    dtype = np.result_type(*arrays)
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]


def _direct(cin, cout, stride, forward=False):
    """Whether a conv takes the direct loops (see the module docstring for the measurements).

    Backward, only a small Cout: then the gemm path's cols (Cin*kh*kw rows) dwarf the data.
    Forward, also a small Cin (the direct loop beats BLAS's K = kh*kw product slightly there).
    """
    small = min(cin, cout) if forward else cout
    return small <= DIRECT_MAX_CHANNELS and tuple(stride) == (1, 1)


def _taps(kernel_hw, dilation, pitch, flip=False):
    """Flat offsets ky*dh*pitch + kx*dw of the taps (ky, kx) in order (reversed if `flip`)."""
    (kh, kw), (dh, dw) = kernel_hw, dilation
    ky, kx = np.divmod(np.arange(kh * kw, dtype=np.int64), kw)
    if flip:
        ky, kx = kh - 1 - ky, kw - 1 - kx
    return ky * dh * pitch + kx * dw


def _input_plane(x, out_hw, kernel_hw, padding, dilation):
    """x zero-padded and flattened for the direct kernels: (flat x, pitch, tap offsets).

    Holds the padded input and every window, plus one row, so that the last windows' flat runs
    may overhang the last row (into columns thrown away) without leaving the buffer.
    """
    (H, W), (Ho, Wo), (kh, kw), (ph, pw), (dh, dw) = x.shape[2:], out_hw, kernel_hw, padding, dilation
    pitch = max(W + 2 * pw, Wo + (kw - 1) * dw)
    rows = max(H + 2 * ph, Ho + (kh - 1) * dh) + 1
    return _pad_to(x, rows, pitch, ph, pw, "pad"), pitch, _taps(kernel_hw, dilation, pitch)


def _pad_to(a, hp, wp, top, left, role):
    """a (N, C, H, W) placed at (top, left) in a zeroed (N, C, hp, wp) scratch array, returned flat."""
    N, C = a.shape[:2]
    out = _scratch(role, (N, C, hp, wp), a.dtype)
    _pad(a, out, top, left)
    return out.reshape(N, C, hp * wp)


def _chunks(N, column_bytes):
    """(n0, n1) runs of the batch for the gemm path: a power of two samples each, as many as keep
    a chunk's matrices within CHUNK_BYTES (at least one sample, at most N / MIN_CHUNKS).
    `column_bytes` is the size of one sample's columns of cols and of the channels-first output
    or gradient together. Fixed by the shapes alone, so no result depends on the thread count."""
    size = 1
    while size * 2 * MIN_CHUNKS <= N and size * 2 * column_bytes <= CHUNK_BYTES:
        size *= 2
    return [(n0, min(N, n0 + size)) for n0 in range(0, N, size)]


def _padded(x, padding, role):
    """A chunk x (n, C, H, W) zero-padded by `padding` into a scratch array (n, C, Hp, Wp)."""
    (n, C, H, W), (ph, pw) = x.shape, padding
    xp = _scratch(role, (n, C, H + 2 * ph, W + 2 * pw), x.dtype)
    _pad_serial(x, xp, ph, pw)
    return xp


def _chunk_cols(x, kernel_hw, out_hw, stride, padding, dilation):
    """im2col of a chunk x (n, Cin, H, W) in the GEMM layout, a scratch array (Cin*kh*kw, n*Ho*Wo):
    rows (c, ky, kx), columns (n, oy, ox)."""
    n, C = x.shape[:2]
    (kh, kw), (Ho, Wo) = kernel_hw, out_hw
    xp = _padded(x, padding, "pad")
    pitch = xp.shape[3]
    cols = _scratch("cols", (C * kh * kw, n * Ho * Wo), x.dtype)
    _im2col_padded(xp.reshape(n, C, -1), cols, _taps(kernel_hw, dilation, pitch), pitch, Ho, Wo, *stride)
    return cols


def _chunk_col2im(gcols, x, kernel_hw, out_hw, stride, padding, dilation):
    """x (n, Cin, H, W), a chunk of the batch, = col2im of gcols (Cin*kh*kw, n*Ho*Wo) (the GEMM layout)."""
    (n, C, H, W), (ph, pw) = x.shape, padding
    xp = _scratch("pad", (n, C, H + 2 * ph, W + 2 * pw), x.dtype)
    pitch = xp.shape[3]
    _col2im_padded(gcols, xp.reshape(n, C, -1), _taps(kernel_hw, dilation, pitch), pitch, *out_hw, *stride)
    _crop(xp, x, ph, pw)


def _channels_first(g):
    """A chunk g (n, C, P) as (C, n*P): a view when n = 1, else a swapped scratch copy."""
    n, C, P = g.shape
    if n == 1:
        return g.reshape(C, P)
    out = _scratch("swap", (C, n, P), g.dtype)
    _swap01(g, out)
    return out.reshape(C, n * P)


# --- the public functions: reference.py's signatures ----------------------------------------


def im2col(x, kernel_size, stride, padding, dilation):
    """Gather every conv window of x (N, C, H, W) into cols (N, C, kh, kw, Ho, Wo), a new array."""
    (x,) = _contiguous(x, what="im2col")
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    Ho, Wo = conv_output_size(H, kh, sh, ph, dh), conv_output_size(W, kw, sw, pw, dw)
    cols = _empty((N * C * kh * kw, Ho, Wo), x.dtype)
    _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw)
    return cols.reshape(N, C, kh, kw, Ho, Wo)


def col2im(cols, input_shape, stride, padding, dilation):
    """Adjoint of im2col: add each entry of cols (N, C, kh, kw, Ho, Wo) back onto its input pixel."""
    (cols,) = _contiguous(cols, what="col2im")
    N, C, kh, kw, Ho, Wo = cols.shape
    x = _empty((N, C, *input_shape[2:]), cols.dtype)
    _col2im(cols.reshape(N * C * kh * kw, Ho, Wo), x, kh, kw, *stride, *padding, *dilation)
    return x


def conv2d_forward(x, w, stride, padding, dilation):
    """y (N, Cout, Ho, Wo) = x (N, Cin, H, W) convolved with w (Cout, Cin, kh, kw); no bias."""
    x, w = _contiguous(x, w)
    N, Cin, H, W = x.shape
    Cout, _, kh, kw = w.shape
    Ho = conv_output_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = conv_output_size(W, kw, stride[1], padding[1], dilation[1])
    if _direct(Cin, Cout, stride, forward=True):
        paths["direct"] += 1
        xp, pitch, offsets = _input_plane(x, (Ho, Wo), (kh, kw), padding, dilation)
        y = _empty((N, Cout, Ho, Wo), x.dtype)
        _direct_gather(xp, w.reshape(Cout, Cin, -1), offsets, pitch, y)
        return y
    paths["gemm"] += 1
    y = _empty((N, Cout, Ho, Wo), x.dtype)
    w_m, chunks = w.reshape(Cout, -1), _chunks(N, Ho * Wo * (Cin * kh * kw + Cout) * x.dtype.itemsize)

    def chunk(i):
        n0, n1 = chunks[i]
        cols = _chunk_cols(x[n0:n1], (kh, kw), (Ho, Wo), stride, padding, dilation)  # (K, n*P)
        if n1 - n0 == 1:
            np.matmul(w_m, cols, out=y[n0].reshape(Cout, -1))
        else:
            y_t = np.matmul(w_m, cols, out=_scratch("gemm", (Cout, cols.shape[1]), x.dtype))
            _swap01(y_t.reshape(Cout, n1 - n0, -1), y[n0:n1].reshape(n1 - n0, Cout, -1))

    run_split(chunk, len(chunks))
    return y


def conv2d_backward_input(grad_out, w, input_hw, stride, padding, dilation):
    """grad_x (N, Cin, H, W) from grad_out (N, Cout, Ho, Wo) and w (Cout, Cin, kh, kw)."""
    grad_out, w = _contiguous(grad_out, w)
    N, Cout, Ho, Wo = grad_out.shape
    _, Cin, kh, kw = w.shape
    gx = _empty((N, Cin, *input_hw), grad_out.dtype)
    if _direct(Cin, Cout, stride):
        paths["direct"] += 1
        # Stride 1: input pixel (iy, ix) gathers grad_out[iy + ph - ky*dh, ix + pw - kx*dw] * w[:, :, ky, kx]
        # over the taps, a correlation of grad_out, zero-padded by the kernel's reach, with the
        # flipped kernel. Plane coordinates: grad_out sits at ((kh-1)*dh, (kw-1)*dw), and input
        # pixel (iy, ix) is flat index (iy + ph)*pitch + ix + pw, folded into the tap offsets.
        (H, W), (ph, pw), (dh, dw) = input_hw, padding, dilation
        reach_h, reach_w = (kh - 1) * dh, (kw - 1) * dw
        pitch = max(Wo + 2 * reach_w, W + pw + reach_w)  # a tap never wraps into the next row
        rows = max(reach_h + Ho, H + ph + reach_h) + 1
        gp = _pad_to(grad_out, rows, pitch, reach_h, reach_w, "pad")
        offsets = ph * pitch + pw + _taps((kh, kw), dilation, pitch, flip=True)
        w_t = np.ascontiguousarray(w.reshape(Cout, Cin, -1).transpose(1, 0, 2))  # (Cin, Cout, taps)
        _direct_gather(gp, w_t, offsets, pitch, gx)
        return gx
    paths["gemm"] += 1
    w_t, chunks = w.reshape(Cout, -1).T, _chunks(N, Ho * Wo * (Cin * kh * kw + Cout) * gx.itemsize)

    def chunk(i):
        n0, n1 = chunks[i]
        g_t = _channels_first(grad_out[n0:n1].reshape(n1 - n0, Cout, -1))  # (Cout, n*P)
        gcols = np.matmul(w_t, g_t, out=_scratch("gemm", (w_t.shape[0], g_t.shape[1]), gx.dtype))
        _chunk_col2im(gcols, gx[n0:n1], (kh, kw), (Ho, Wo), stride, padding, dilation)

    run_split(chunk, len(chunks))
    return gx


def conv2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
    """grad_w (Cout, Cin, kh, kw) from x (N, Cin, H, W) and grad_out (N, Cout, Ho, Wo).

    As in the reference, only the Ho x Wo windows of grad_out are used (fewer than x holds when
    this serves conv_transpose2d_backward_weight with output_padding >= stride).
    """
    x, grad_out = _contiguous(x, grad_out)
    N, Cin = x.shape[:2]
    _, Cout, Ho, Wo = grad_out.shape
    kh, kw = kernel_hw
    if _direct(Cin, Cout, stride):
        paths["direct"] += 1
        xp, pitch, offsets = _input_plane(x, (Ho, Wo), kernel_hw, padding, dilation)
        gp = _pad_to(grad_out, Ho, pitch, 0, 0, "pad2")  # the same row pitch, zeros right of each row
        # Chunks of the batch give parallel work when Cout*Cin is small; their number depends on
        # the shapes only, so the sum's order (and result) does not depend on the thread count.
        nchunk = max(1, min(N, 16 // (Cout * Cin)))
        partial = _empty((nchunk, Cout, Cin, kh * kw), x.dtype)
        _direct_backward_weight(xp, gp, offsets, partial)
        gw = partial.sum(axis=0) if nchunk > 1 else partial[0]
        return gw.reshape(Cout, Cin, kh, kw)
    paths["gemm"] += 1
    chunks = _chunks(N, Ho * Wo * (Cin * kh * kw + Cout) * x.dtype.itemsize)
    partial = _scratch("partial", (len(chunks), Cout, Cin * kh * kw), x.dtype)  # one sum per chunk

    def chunk(i):
        n0, n1 = chunks[i]
        cols = _chunk_cols(x[n0:n1], kernel_hw, (Ho, Wo), stride, padding, dilation)  # (K, n*P)
        g_t = _channels_first(grad_out[n0:n1].reshape(n1 - n0, Cout, -1))  # (Cout, n*P)
        np.matmul(g_t, cols.T, out=partial[i])

    run_split(chunk, len(chunks))
    gw = _empty((Cout, Cin, kh, kw), x.dtype)
    np.sum(partial, axis=0, out=gw.reshape(Cout, -1))  # chunk by chunk, in order
    return gw


conv_transpose2d_forward, conv_transpose2d_backward_input, conv_transpose2d_backward_weight = transposed(
    conv2d_forward, conv2d_backward_input, conv2d_backward_weight
)
