"""2-D convolution in plain NumPy: the readable spec every faster kernel is checked against.

Layout is NCHW throughout: an input `x` is (N, C, H, W), a conv weight `w` is
(Cout, Cin, kh, kw), and `stride`, `padding`, `dilation` are pairs (sh, sw), (ph, pw), (dh, dw).
Every function takes and returns raw arrays; the output dtype is the input dtype (float32 stays
float32). `xp = get_array_module(x)` keeps the bodies ready for CuPy arrays.

The im2col idea
---------------
A convolution output pixel (oy, ox) is a dot product between the weight and one window of the
zero-padded input, whose tap (ky, kx) sits at

    x_pad[oy*sh + ky*dh, ox*sw + kx*dw].

`im2col` gathers every window at once into `cols` of shape (N, Cin, kh, kw, Ho, Wo), with

    cols[n, c, ky, kx, oy, ox] = x_pad[n, c, oy*sh + ky*dh, ox*sw + kx*dw].

Both indices are linear in (ky, oy) and (kx, ox), so this is a *strided view* of x_pad (no loop):
the ky axis steps dh rows, the oy axis steps sh rows. The convolution is then one tensor
contraction (a BLAS matrix product) over (Cin, kh, kw):

    y[n, co, oy, ox] = sum_{c, ky, kx} w[co, c, ky, kx] * cols[n, c, ky, kx, oy, ox].

The conv functions copy the view straight into the product's layout, a matrix (Cin*kh*kw,
N*Ho*Wo) (`_gemm_cols`), so that the product is `w.reshape(Cout, -1) @ cols` with no further
copy of the large matrix; `im2col` itself keeps the (N, Cin, kh, kw, Ho, Wo) layout of `unfold`.

Backward
--------
The conv is linear in x and in w, so both gradients are adjoints:
- d/dw: contract grad_out (N, Cout, Ho, Wo) with the same `cols` over (N, Ho, Wo).
- d/dx: contract w with grad_out over Cout to get gradient columns (Cin, kh, kw, N, Ho, Wo), then
  `col2im`, the adjoint of im2col, adds each column entry back onto the input pixel it was read
  from. Windows overlap, so one pixel may receive several contributions; we loop over the kh*kw
  taps, inside which no two (oy, ox) hit the same pixel, so a vectorised `+=` is exact.

Transposed convolution
----------------------
`conv_transpose2d` (x (N, Cin, H, W), w (Cin, Cout, kh, kw) as in PyTorch) is *defined* as the
adjoint of conv2d w.r.t. its input: each input pixel scatters a copy of w into the output. So
    conv_transpose2d_forward        = conv2d_backward_input   (x plays grad_out),
    conv_transpose2d_backward_input = conv2d_forward          (grad_out plays x),
    conv_transpose2d_backward_weight = conv2d_backward_weight with x and grad_out swapped,
and this file implements them by calling those three, with no code of their own.
"""

from tinygen.backend import get_array_module


def conv_output_size(size, kernel, stride, padding, dilation):
    """Output length of a convolution along one spatial dim.

    The last tap of the last window, (out-1)*stride + dilation*(kernel-1), must stay inside the
    padded input of length size + 2*padding.

    >>> conv_output_size(28, 3, 2, 1, 1)
    14
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation):
    """Output length of a transposed convolution along one spatial dim (PyTorch's formula).

    Several conv input sizes give the same conv output size; `output_padding` picks which one the
    transposed conv produces (it only adds rows/columns at the end).

    >>> conv_transpose_output_size(14, 3, 2, 1, 1, 1)
    28
    """
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _windows(x, kernel_size, stride, padding, dilation):
    """Every conv window of x (N, C, H, W) as a strided view (N, C, kh, kw, Ho, Wo) of padded x."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    Ho = conv_output_size(H, kh, sh, ph, dh)
    Wo = conv_output_size(W, kw, sw, pw, dw)
    x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # (N, C, H + 2ph, W + 2pw), contiguous
    sN, sC, sH, sW = x_pad.strides  # bytes per step along each axis
    # windows[n, c, ky, kx, oy, ox] = x_pad[n, c, oy*sh + ky*dh, ox*sw + kx*dw]: a view, no copy.
    # NOTE: CuPy has its own as_strided; a GPU kernel may prefer a gather, but the spec is this.
    # The view aliases x_pad (overlapping windows share entries): copy it, never write through it.
    return xp.lib.stride_tricks.as_strided(
        x_pad, shape=(N, C, kh, kw, Ho, Wo), strides=(sN, sC, dh * sH, dw * sW, sh * sH, sw * sW)
    )


def im2col(x, kernel_size, stride, padding, dilation):
    """Gather every conv window of x (N, C, H, W) into cols (N, C, kh, kw, Ho, Wo), a new array."""
    return get_array_module(x).ascontiguousarray(_windows(x, kernel_size, stride, padding, dilation))


def _gemm_cols(x, kernel_size, stride, padding, dilation, out_hw=None):
    """im2col in the layout of one matrix product: (C*kh*kw, N*Ho*Wo), rows (c, ky, kx) and
    columns (n, oy, ox); only the first `out_hw` windows if given. The copy that makes it is the
    only one: the products below take it as it is (in im2col's own layout, np.tensordot copied
    it a second time to transpose it: the forward pass took 24.8 ms on c2 instead of 10.7)."""
    windows = _windows(x, kernel_size, stride, padding, dilation)
    if out_hw is not None:
        windows = windows[..., : out_hw[0], : out_hw[1]]
    windows = windows.transpose(1, 2, 3, 0, 4, 5)
    C, kh, kw, N, Ho, Wo = windows.shape
    return get_array_module(x).ascontiguousarray(windows).reshape(C * kh * kw, N * Ho * Wo)


def _channels_first(a):
    """(N, C, Ho, Wo) -> (C, N*Ho*Wo), a new contiguous array."""
    N, C = a.shape[:2]
    return get_array_module(a).ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(C, -1)


def col2im(cols, input_shape, stride, padding, dilation):
    """Adjoint of im2col: add each entry of cols (N, C, kh, kw, Ho, Wo) back onto its input pixel.

    Returns an array of `input_shape` (N, C, H, W). Ho, Wo are taken from `cols`, so an input
    larger than the windows reach (possible when stride > 1) simply gets zeros at the end.
    """
    xp = get_array_module(cols)
    return xp.ascontiguousarray(_col2im_cf(cols.transpose(1, 2, 3, 0, 4, 5), input_shape, stride, padding,
                                           dilation).transpose(1, 0, 2, 3))


def _col2im_cf(cols, input_shape, stride, padding, dilation):
    """col2im for cols in the product's layout (C, kh, kw, N, Ho, Wo); returns (C, N, H, W)."""
    xp = get_array_module(cols)
    C, kh, kw, N, Ho, Wo = cols.shape
    H, W = input_shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    x_pad = xp.zeros((C, N, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for ky in range(kh):
        for kx in range(kw):
            # Tap (ky, kx) of window (oy, ox) read x_pad[oy*sh + ky*dh, ox*sw + kx*dw]; for a fixed
            # tap these pixels are all distinct, so this += never drops a duplicate index.
            rows = slice(ky * dh, ky * dh + (Ho - 1) * sh + 1, sh)  # Ho rows
            columns = slice(kx * dw, kx * dw + (Wo - 1) * sw + 1, sw)  # Wo columns
            x_pad[:, :, rows, columns] += cols[:, ky, kx]  # (C, N, Ho, Wo)
    return x_pad[:, :, ph : ph + H, pw : pw + W]  # crop the padding: its gradient goes nowhere


def conv2d_forward(x, w, stride, padding, dilation):
    """y (N, Cout, Ho, Wo) = x (N, Cin, H, W) convolved with w (Cout, Cin, kh, kw); no bias.

    One product: y_t (Cout, N*Ho*Wo) = w (Cout, Cin*kh*kw) @ cols (Cin*kh*kw, N*Ho*Wo)."""
    xp = get_array_module(x, w)
    N, Cout = x.shape[0], w.shape[0]
    cols = _gemm_cols(x, w.shape[2:], stride, padding, dilation)
    y_t = (w.reshape(Cout, -1) @ cols).reshape(Cout, N, -1)  # (Cout, N, Ho*Wo)
    Ho = conv_output_size(x.shape[2], w.shape[2], stride[0], padding[0], dilation[0])
    return xp.ascontiguousarray(y_t.transpose(1, 0, 2)).reshape(N, Cout, Ho, -1)


def conv2d_backward_input(grad_out, w, input_hw, stride, padding, dilation):
    """grad_x (N, Cin, H, W) from grad_out (N, Cout, Ho, Wo) and w (Cout, Cin, kh, kw).

    gcols (Cin*kh*kw, N*Ho*Wo) = w.T @ grad_out as (Cout, N*Ho*Wo), then col2im. `input_hw` =
    (H, W) is needed because with stride > 1 several input sizes give the same Ho.
    """
    xp = get_array_module(grad_out, w)
    N, Cout, Ho, Wo = grad_out.shape
    Cin, kh, kw = w.shape[1:]
    gcols = (w.reshape(Cout, -1).T @ _channels_first(grad_out)).reshape(Cin, kh, kw, N, Ho, Wo)
    gx = _col2im_cf(gcols, (N, Cin, *input_hw), stride, padding, dilation)  # (Cin, N, H, W)
    return xp.ascontiguousarray(gx.transpose(1, 0, 2, 3))


def conv2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
    """grad_w (Cout, Cin, kh, kw) = grad_out as (Cout, N*Ho*Wo) @ cols.T, from x (N, Cin, H, W)."""
    Cout, Cin = grad_out.shape[1], x.shape[1]
    # Only the first Ho x Wo windows: a no-op for a conv; conv_transpose2d_backward_weight needs
    # the crop when output_padding >= stride, where its grad_out has more windows than pixels.
    cols = _gemm_cols(x, kernel_hw, stride, padding, dilation, out_hw=grad_out.shape[2:])
    return (_channels_first(grad_out) @ cols.T).reshape(Cout, Cin, *kernel_hw)


def transposed(conv2d_forward, conv2d_backward_input, conv2d_backward_weight):
    """The transposed convolution's three functions, built from a convolution's three: the adjoint
    wiring, written once for every implementation (each module passes its own conv functions).

    A transposed convolution is the gradient of a convolution with respect to its input, so its
    forward is that convolution's backward-input, its backward-input the convolution's forward,
    and its backward-weight the convolution's backward-weight with input and output swapped.
    """

    def conv_transpose2d_forward(x, w, stride, padding, output_padding, dilation):
        """y (N, Cout, Ho, Wo) = transposed conv of x (N, Cin, H, W) with w (Cin, Cout, kh, kw).

        Ho = (H-1)*sh - 2*ph + dh*(kh-1) + output_padding[0] + 1, likewise Wo. This is the gradient
        of conv2d (weight w, which has the conv layout (Cout_conv=Cin, Cin_conv=Cout, kh, kw)) w.r.t.
        a conv input of size (Ho, Wo), at grad_out = x.
        """
        H, W = x.shape[2:]
        kh, kw = w.shape[2:]
        Ho = conv_transpose_output_size(H, kh, stride[0], padding[0], output_padding[0], dilation[0])
        Wo = conv_transpose_output_size(W, kw, stride[1], padding[1], output_padding[1], dilation[1])
        return conv2d_backward_input(x, w, (Ho, Wo), stride, padding, dilation)

    def conv_transpose2d_backward_input(grad_out, w, input_hw, stride, padding, dilation):
        """grad_x (N, Cin, H, W) from grad_out (N, Cout, Ho, Wo) and w (Cin, Cout, kh, kw); `input_hw`
        = (H, W) in the place it has in conv2d_backward_input, or None.

        The adjoint of a scatter is a gather: conv2d of grad_out with w. That conv gives
        H + output_padding // stride rows, i.e. H whenever output_padding < stride; only when
        output_padding >= stride (allowed if dilation > stride) the sizes alone do not determine H,
        and `input_hw` crops the surplus rows/columns (None: no crop).
        """
        grad_x = conv2d_forward(grad_out, w, stride, padding, dilation)  # (N, Cin, >=H, >=W)
        if input_hw is not None and tuple(grad_x.shape[2:]) != tuple(input_hw):
            grad_x = get_array_module(grad_x).ascontiguousarray(grad_x[:, :, : input_hw[0], : input_hw[1]])
        return grad_x

    def conv_transpose2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
        """grad_w (Cin, Cout, kh, kw) from x (N, Cin, H, W) and grad_out (N, Cout, Ho, Wo).

        In the underlying conv, grad_out is the input and x the output gradient; conv2d_backward_weight
        then returns the conv layout (Cout_conv, Cin_conv, ...) = (Cin, Cout, kh, kw), as wanted.
        """
        return conv2d_backward_weight(grad_out, x, kernel_hw, stride, padding, dilation)

    return conv_transpose2d_forward, conv_transpose2d_backward_input, conv_transpose2d_backward_weight


conv_transpose2d_forward, conv_transpose2d_backward_input, conv_transpose2d_backward_weight = transposed(
    conv2d_forward, conv2d_backward_input, conv2d_backward_weight
)
