"""2-D convolution on the GPU with CuPy: the functions of `reference.py`, same signatures, on CuPy arrays.

Only `tinygen.kernels.conv2d.implementation()` imports this module, and only for CuPy arrays
(``TINYGEN_KERNELS=auto`` or ``cupy``), so importing tinygen never imports CuPy; CuPy itself is
reached through `tinygen.backend.load_cupy` on the first call. Read `reference.py` first: the
layouts, the im2col idea and the adjoint identities are the same; this file lays the work out as
the Numba kernels' gemm path does (`cpu_numba.py`), with the gathers in CUDA C (`conv2d.cu`,
shipped beside this file, compiled once per process by `cupy.RawModule` and cached on disk by
CuPy) and the products in cuBLAS through `cupy.matmul`:

    forward:          y_t (Cout, N*P) = w (Cout, K) @ cols (K, N*P),   then y_t -> (N, Cout, P)
    backward weight:  gw (Cout, K)    = g_t (Cout, N*P) @ cols.T,      g_t = grad_out as (Cout, N*P)
    backward input:   gcols (K, N*P)  = w.T (K, Cout) @ g_t,           then col2im(gcols)

(K = Cin*kh*kw, P = Ho*Wo; `cols` is im2col in the (K, N*P) layout, `knp=1` in conv2d.cu.) The
swaps between (N, Cout, P) and (Cout, N, P) are CuPy copies. Transposed convolution reuses the
three functions, wired by `reference.transposed` as for the reference.

Every array a kernel writes comes from `_empty` (the tests replace it with a NaN-filling
allocator, to prove that every element is written). No host round trip: nothing here reads a
GPU array on the CPU. NOTE: float32 products run in full float32 (CuPy's default cuBLAS math
mode, not TF32), as the NumPy reference does.
"""

import os

import numpy as np

from tinygen.backend import load_cupy
from tinygen.kernels.gpu_runtime import CudaSource, cuda_suffix, grid_blocks
from tinygen.kernels.conv2d.reference import conv_output_size, transposed

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv2d.cu")
BLOCK = 256  # threads per block
BLOCKS_PER_SM = 32  # a grid-stride loop needs no more blocks than keep every SM busy

_source = CudaSource(SOURCE, ("--std=c++17",))


def _kernel(name, dtype, total):
    """The kernel `name` for `dtype` and the index width `total` needs, and that index type."""
    width = "i32" if total < 2**32 else "i64"
    return _source.function(f"{name}_{cuda_suffix(dtype, name)}_{width}"), (np.uint32 if width == "i32" else np.uint64)


def _launch(kernel, total, args):
    """Run a grid-stride kernel over `total` elements, with as many blocks as keep the GPU busy."""
    kernel((grid_blocks(total, BLOCK, BLOCKS_PER_SM),), (BLOCK,), args)


def _empty(shape, dtype):
    """Every output buffer of this module is allocated here (the tests poison it with NaN)."""
    return load_cupy().empty(shape, dtype)


def _contiguous(a):
    return load_cupy().ascontiguousarray(a)


def _gather(x, kernel_hw, out_hw, stride, padding, dilation, knp):
    """im2col of x (N, C, H, W) into (N, C, kh, kw, Ho, Wo) (knp=0) or (C, kh, kw, N, Ho, Wo) (knp=1)."""
    x = _contiguous(x)
    N, C, H, W = x.shape
    (kh, kw), (Ho, Wo) = kernel_hw, out_hw
    shape = (N, C, kh, kw, Ho, Wo) if not knp else (C, kh, kw, N, Ho, Wo)
    cols = _empty(shape, x.dtype)
    total = cols.size
    if total:
        kernel, I = _kernel("im2col", x.dtype, max(total, x.size))
        sizes = (N, C, H, W, kh, kw, *stride, *padding, *dilation, Ho, Wo)
        _launch(kernel, total, (x, cols, *(I(v) for v in sizes), np.int32(knp)))
    return cols


def _scatter(cols, input_shape, stride, padding, dilation, knp):
    """col2im: the adjoint of `_gather`, into a new (N, C, H, W) array."""
    cols = _contiguous(cols)
    N, C, H, W = input_shape
    if knp:
        _, kh, kw, _, Ho, Wo = cols.shape
    else:
        _, _, kh, kw, Ho, Wo = cols.shape
    x = _empty((N, C, H, W), cols.dtype)
    total = x.size
    if total:
        kernel, I = _kernel("col2im", cols.dtype, max(total, cols.size))
        sizes = (N, C, H, W, kh, kw, *stride, *padding, *dilation, Ho, Wo)
        _launch(kernel, total, (cols, x, *(I(v) for v in sizes), np.int32(knp)))
    return x


# --- the public functions: reference.py's signatures -----------------------------------------


def im2col(x, kernel_size, stride, padding, dilation):
    """Gather every conv window of x (N, C, H, W) into cols (N, C, kh, kw, Ho, Wo), a new array."""
    H, W = x.shape[2:]
    Ho = conv_output_size(H, kernel_size[0], stride[0], padding[0], dilation[0])
    Wo = conv_output_size(W, kernel_size[1], stride[1], padding[1], dilation[1])
    return _gather(x, kernel_size, (Ho, Wo), stride, padding, dilation, knp=0)


def col2im(cols, input_shape, stride, padding, dilation):
    """Adjoint of im2col: add each entry of cols (N, C, kh, kw, Ho, Wo) back onto its input pixel."""
    return _scatter(cols, tuple(input_shape), stride, padding, dilation, knp=0)


def conv2d_forward(x, w, stride, padding, dilation):
    """y (N, Cout, Ho, Wo) = x (N, Cin, H, W) convolved with w (Cout, Cin, kh, kw); no bias."""
    cupy = load_cupy()
    N, _, H, W = x.shape
    Cout, Cin, kh, kw = w.shape
    Ho = conv_output_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = conv_output_size(W, kw, stride[1], padding[1], dilation[1])
    cols = _gather(x, (kh, kw), (Ho, Wo), stride, padding, dilation, knp=1)  # (Cin, kh, kw, N, Ho, Wo)
    y_t = cupy.matmul(_contiguous(w).reshape(Cout, -1), cols.reshape(Cin * kh * kw, N * Ho * Wo))  # (Cout, N*P)
    y = _empty((N, Cout, Ho, Wo), x.dtype)
    y[...] = y_t.reshape(Cout, N, Ho, Wo).transpose(1, 0, 2, 3)  # (Cout, N, Ho, Wo) -> (N, Cout, Ho, Wo)
    return y


def _grad_t(grad_out):
    """grad_out (N, Cout, Ho, Wo) as the matrix (Cout, N*Ho*Wo)."""
    N, Cout, Ho, Wo = grad_out.shape
    g_t = _empty((Cout, N, Ho, Wo), grad_out.dtype)
    g_t[...] = grad_out.transpose(1, 0, 2, 3)
    return g_t.reshape(Cout, N * Ho * Wo)


def conv2d_backward_input(grad_out, w, input_hw, stride, padding, dilation):
    """grad_x (N, Cin, H, W) from grad_out (N, Cout, Ho, Wo) and w (Cout, Cin, kh, kw)."""
    cupy = load_cupy()
    N, Cout, Ho, Wo = grad_out.shape
    _, Cin, kh, kw = w.shape
    gcols = cupy.matmul(_contiguous(w).reshape(Cout, -1).T, _grad_t(grad_out))  # (K, N*P)
    gcols = gcols.reshape(Cin, kh, kw, N, Ho, Wo)
    return _scatter(gcols, (N, Cin, *input_hw), stride, padding, dilation, knp=1)


def conv2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
    """grad_w (Cout, Cin, kh, kw) from x (N, Cin, H, W) and grad_out (N, Cout, Ho, Wo)."""
    cupy = load_cupy()
    N, Cout, Ho, Wo = grad_out.shape
    Cin = x.shape[1]
    kh, kw = kernel_hw
    # the windows of grad_out's Ho x Wo outputs (the crop of reference.conv2d_backward_weight is built in)
    cols = _gather(x, (kh, kw), (Ho, Wo), stride, padding, dilation, knp=1)  # (Cin, kh, kw, N, Ho, Wo)
    gw = cupy.matmul(_grad_t(grad_out), cols.reshape(Cin * kh * kw, N * Ho * Wo).T)  # (Cout, K)
    return gw.reshape(Cout, Cin, kh, kw)


conv_transpose2d_forward, conv_transpose2d_backward_input, conv_transpose2d_backward_weight = transposed(
    conv2d_forward, conv2d_backward_input, conv2d_backward_weight
)
