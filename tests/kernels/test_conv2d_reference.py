"""The NumPy reference conv kernels against naive loop definitions, their adjoints, and PyTorch.

The oracles here are written straight from the definitions, sharing no code with the kernels:
- conv2d: each output pixel is a sum over (ci, ky, kx) of input * weight, taps outside the input
  reading zero (that is what padding means);
- conv_transpose2d: each input pixel scatters a copy of the weight into the output.
Gradients are checked twice: against naive loop gradients, and through the adjoint identities
<conv(x, w), g> = <x, backward_input(g, w)> = <w, backward_weight(x, g)> (conv is linear in each).
"""

import doctest
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from tinygen.kernels import cpu_runtime, dispatch
from tinygen.kernels import conv2d
from tinygen.kernels.conv2d import reference

SETTINGS = settings(max_examples=100, deadline=None)


# --- naive definitions (float64, loops over pixels and taps, matmuls over channels) ---------------


def naive_conv2d(x, w, stride, padding, dilation):
    """y[n, co, oy, ox] = sum_{ci, ky, kx} x[n, ci, oy*s - p + ky*d, ...] * w[co, ci, ky, kx]."""
    y = np.zeros(naive_conv2d_shape(x.shape, w.shape, stride, padding, dilation))
    for oy, ox, iy, ix, ky, kx in conv_taps(x.shape, y.shape, w.shape, stride, padding, dilation):
        y[:, :, oy, ox] += x[:, :, iy, ix] @ w[:, :, ky, kx].T  # (N, Cin) @ (Cin, Cout)
    return y


def naive_conv2d_grads(x, w, grad_out, stride, padding, dilation):
    """d<y, grad_out>/dx and /dw, differentiating naive_conv2d's loop line by line."""
    grad_x, grad_w = np.zeros_like(x), np.zeros_like(w)
    taps = conv_taps(x.shape, grad_out.shape, w.shape, stride, padding, dilation)
    for oy, ox, iy, ix, ky, kx in taps:
        grad_x[:, :, iy, ix] += grad_out[:, :, oy, ox] @ w[:, :, ky, kx]  # (N, Cout) @ (Cout, Cin)
        grad_w[:, :, ky, kx] += grad_out[:, :, oy, ox].T @ x[:, :, iy, ix]  # (Cout, N) @ (N, Cin)
    return grad_x, grad_w


def naive_conv2d_shape(x_shape, w_shape, stride, padding, dilation):
    # The last window's last tap, (Ho-1)*s + d*(k-1), must lie inside the padded input.
    N, _, H, W = x_shape
    Cout, _, kh, kw = w_shape
    Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return N, Cout, Ho, Wo


def conv_taps(x_shape, y_shape, w_shape, stride, padding, dilation):
    """Every (output pixel, input pixel, tap) triple of a conv whose tap lands inside the input."""
    (H, W), (Ho, Wo), (kh, kw) = x_shape[2:], y_shape[2:], w_shape[2:]
    for oy in range(Ho):
        for ox in range(Wo):
            for ky in range(kh):
                for kx in range(kw):
                    iy = oy * stride[0] - padding[0] + ky * dilation[0]
                    ix = ox * stride[1] - padding[1] + kx * dilation[1]
                    if 0 <= iy < H and 0 <= ix < W:  # outside: a zero of the padding
                        yield oy, ox, iy, ix, ky, kx


def naive_conv_transpose2d(x, w, stride, padding, output_padding, dilation):
    """Input pixel (iy, ix) adds x[n, :, iy, ix] @ w[:, :, ky, kx] at (iy*s - p + ky*d, ...)."""
    N, _, H, W = x.shape
    _, Cout, kh, kw = w.shape
    Ho = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    Wo = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    y = np.zeros((N, Cout, Ho, Wo))
    for iy in range(H):
        for ix in range(W):
            for ky in range(kh):
                for kx in range(kw):
                    oy = iy * stride[0] - padding[0] + ky * dilation[0]
                    ox = ix * stride[1] - padding[1] + kx * dilation[1]
                    if 0 <= oy < Ho and 0 <= ox < Wo:  # scattered into the cropped padding: lost
                        # (N, Cin) @ (Cin, Cout)
                        y[:, :, oy, ox] += x[:, :, iy, ix] @ w[:, :, ky, kx]
    return y


# --- cases drawn with hypothesis ---------------------------------------------------------------


@dataclass
class Case:
    x: np.ndarray  # (N, Cin, H, W)
    w: np.ndarray  # conv: (Cout, Cin, kh, kw); transposed: (Cin, Cout, kh, kw)
    stride: tuple
    padding: tuple
    dilation: tuple
    output_padding: tuple  # transposed only; (0, 0) for a conv

    @property
    def kernel_hw(self):
        return self.w.shape[2:]

    def astype(self, dtype):
        return Case(self.x.astype(dtype), self.w.astype(dtype), self.stride, self.padding,
                    self.dilation, self.output_padding)


@st.composite
def conv_cases(draw, transposed=False):
    """Small NCHW problems, size-1 and odd sizes included, with at least one output pixel."""
    N, Cin, Cout = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    size, kernel, stride, padding, dilation, output_padding = [], [], [], [], [], []
    for _ in range(2):  # height, then width: drawn independently, so non-square is common
        k, s, p, d = (draw(st.integers(1, 4)), draw(st.integers(1, 3)),
                      draw(st.integers(0, 2)), draw(st.integers(1, 3)))
        if transposed:
            op = draw(st.integers(0, max(s, d) - 1))  # PyTorch's rule: op < max(stride, dilation)
            n = draw(st.integers(1, 9))
            assume((n - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1)
        else:
            op = 0
            smallest = max(1, d * (k - 1) + 1 - 2 * p)  # input that holds exactly one window
            assume(smallest <= 9)
            n = draw(st.integers(smallest, 9))
        for values, v in zip((size, kernel, stride, padding, dilation, output_padding),
                             (n, k, s, p, d, op)):
            values.append(v)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w_shape = (Cin, Cout, *kernel) if transposed else (Cout, Cin, *kernel)
    return Case(rng.standard_normal((N, Cin, *size)), rng.standard_normal(w_shape), tuple(stride),
                tuple(padding), tuple(dilation), tuple(output_padding))


# --- comparison helpers ------------------------------------------------------------------------


def assert_matches(out, expected, dtype=np.float64):
    """Shape, then dtype, then values: relative error ||out - expected|| / ||expected||."""
    assert out.shape == expected.shape
    assert out.dtype == dtype
    scale = np.linalg.norm(expected)
    error = np.linalg.norm(out - expected) / scale if scale > 0 else np.linalg.norm(out)
    assert error < (1e-5 if dtype == np.float32 else 1e-12), f"relative error {error:.3g}"


def dot(a, b):
    assert a.shape == b.shape
    return float(np.vdot(a, b))


# --- conv2d --------------------------------------------------------------------------------------


@SETTINGS
@given(conv_cases())
def test_conv2d_forward_matches_naive(c):
    y = reference.conv2d_forward(c.x, c.w, c.stride, c.padding, c.dilation)
    assert_matches(y, naive_conv2d(c.x, c.w, c.stride, c.padding, c.dilation))


@SETTINGS
@given(conv_cases(), st.data())
def test_conv2d_backward_matches_naive_gradient(c, data):
    y = naive_conv2d(c.x, c.w, c.stride, c.padding, c.dilation)
    g = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal(y.shape)
    grad_x = reference.conv2d_backward_input(g, c.w, c.x.shape[2:], c.stride, c.padding, c.dilation)
    grad_w = reference.conv2d_backward_weight(c.x, g, c.kernel_hw, c.stride, c.padding, c.dilation)
    naive_grad_x, naive_grad_w = naive_conv2d_grads(c.x, c.w, g, c.stride, c.padding, c.dilation)
    assert_matches(grad_x, naive_grad_x)
    assert_matches(grad_w, naive_grad_w)
    # Adjoint identities with the naive forward: <conv(x, w), g> = <x, grad_x> = <w, grad_w>.
    assert dot(y, g) == pytest.approx(dot(c.x, grad_x), rel=1e-10, abs=1e-10)
    assert dot(y, g) == pytest.approx(dot(c.w, grad_w), rel=1e-10, abs=1e-10)


@SETTINGS
@given(conv_cases(), st.data())
def test_im2col_and_col2im_are_adjoint(c, data):
    cols = reference.im2col(c.x, c.kernel_hw, c.stride, c.padding, c.dilation)
    N, _, Ho, Wo = naive_conv2d_shape(c.x.shape, c.w.shape, c.stride, c.padding, c.dilation)
    assert cols.shape == (N, c.x.shape[1], *c.kernel_hw, Ho, Wo)
    v = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal(cols.shape)
    back = reference.col2im(v, c.x.shape, c.stride, c.padding, c.dilation)
    assert back.shape == c.x.shape
    assert dot(cols, v) == pytest.approx(dot(c.x, back), rel=1e-10, abs=1e-10)


# --- conv_transpose2d ----------------------------------------------------------------------------


@SETTINGS
@given(conv_cases(transposed=True))
def test_conv_transpose2d_forward_matches_naive_scatter(c):
    y = reference.conv_transpose2d_forward(c.x, c.w, c.stride, c.padding, c.output_padding,
                                           c.dilation)
    assert_matches(y, naive_conv_transpose2d(c.x, c.w, c.stride, c.padding, c.output_padding,
                                             c.dilation))


@SETTINGS
@given(conv_cases(transposed=True), st.data())
def test_conv_transpose2d_backward_is_adjoint_of_naive(c, data):
    y = naive_conv_transpose2d(c.x, c.w, c.stride, c.padding, c.output_padding, c.dilation)
    g = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal(y.shape)
    grad_x = reference.conv_transpose2d_backward_input(g, c.w, c.x.shape[2:], c.stride, c.padding,
                                                       c.dilation)
    grad_w = reference.conv_transpose2d_backward_weight(c.x, g, c.kernel_hw, c.stride, c.padding,
                                                        c.dilation)
    assert grad_x.shape == c.x.shape and grad_w.shape == c.w.shape
    assert dot(y, g) == pytest.approx(dot(c.x, grad_x), rel=1e-10, abs=1e-10)
    assert dot(y, g) == pytest.approx(dot(c.w, grad_w), rel=1e-10, abs=1e-10)
    if all(op < s for op, s in zip(c.output_padding, c.stride)):  # then H follows from the sizes
        no_hw = reference.conv_transpose2d_backward_input(g, c.w, None, c.stride, c.padding, c.dilation)
        assert_matches(no_hw, grad_x)


def test_conv_transpose2d_backward_input_needs_input_hw_when_output_padding_reaches_stride():
    # stride 1, dilation 2, output_padding 1: inputs of height 3 and 4 (op 1 and 0) both give 6.
    x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    y = reference.conv_transpose2d_forward(x, w, (1, 1), (0, 0), (1, 1), (2, 2))
    assert y.shape == (1, 1, 6, 6)
    uncropped = reference.conv_transpose2d_backward_input(y, w, None, (1, 1), (0, 0), (2, 2))
    assert uncropped.shape == (1, 1, 4, 4)
    cropped = reference.conv_transpose2d_backward_input(y, w, (3, 3), (1, 1), (0, 0), (2, 2))
    assert_matches(cropped, uncropped[:, :, :3, :3])


# --- float32 stays float32 -----------------------------------------------------------------------


@SETTINGS
@given(conv_cases(), st.data())
def test_float32_conv2d_stays_float32_and_accurate(c, data):
    y64 = naive_conv2d(c.x, c.w, c.stride, c.padding, c.dilation)
    g = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal(y64.shape)
    grad_x64, grad_w64 = naive_conv2d_grads(c.x, c.w, g, c.stride, c.padding, c.dilation)
    c32, g32 = c.astype(np.float32), g.astype(np.float32)
    assert_matches(reference.conv2d_forward(c32.x, c32.w, c.stride, c.padding, c.dilation),
                   y64, np.float32)
    assert_matches(reference.conv2d_backward_input(g32, c32.w, c.x.shape[2:], c.stride, c.padding,
                                                   c.dilation), grad_x64, np.float32)
    assert_matches(reference.conv2d_backward_weight(c32.x, g32, c.kernel_hw, c.stride, c.padding,
                                                    c.dilation), grad_w64, np.float32)


@SETTINGS
@given(conv_cases(transposed=True), st.data())
def test_float32_conv_transpose2d_stays_float32_and_accurate(c, data):
    y64 = naive_conv_transpose2d(c.x, c.w, c.stride, c.padding, c.output_padding, c.dilation)
    g = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal(y64.shape)
    grad_x64 = reference.conv_transpose2d_backward_input(g, c.w, c.x.shape[2:], c.stride, c.padding,
                                                         c.dilation)
    grad_w64 = reference.conv_transpose2d_backward_weight(c.x, g, c.kernel_hw, c.stride, c.padding,
                                                          c.dilation)  # adjoint-tested above
    c32, g32 = c.astype(np.float32), g.astype(np.float32)
    assert_matches(reference.conv_transpose2d_forward(c32.x, c32.w, c.stride, c.padding,
                                                      c.output_padding, c.dilation),
                   y64, np.float32)
    assert_matches(reference.conv_transpose2d_backward_input(g32, c32.w, c.x.shape[2:], c.stride,
                                                             c.padding, c.dilation),
                   grad_x64, np.float32)
    assert_matches(reference.conv_transpose2d_backward_weight(c32.x, g32, c.kernel_hw, c.stride,
                                                              c.padding, c.dilation),
                   grad_w64, np.float32)


# --- PyTorch as a second oracle ------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@SETTINGS
@given(c=conv_cases(), data=st.data())
def test_conv2d_matches_torch(torch, c, data):
    x, w = torch.tensor(c.x, requires_grad=True), torch.tensor(c.w, requires_grad=True)
    y = torch.nn.functional.conv2d(x, w, stride=c.stride, padding=c.padding, dilation=c.dilation)
    g = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal(y.shape)
    y.backward(torch.tensor(g))
    assert_matches(reference.conv2d_forward(c.x, c.w, c.stride, c.padding, c.dilation),
                   y.detach().numpy())
    assert_matches(reference.conv2d_backward_input(g, c.w, c.x.shape[2:], c.stride, c.padding,
                                                   c.dilation), x.grad.numpy())
    assert_matches(reference.conv2d_backward_weight(c.x, g, c.kernel_hw, c.stride, c.padding,
                                                    c.dilation), w.grad.numpy())


@SETTINGS
@given(c=conv_cases(transposed=True), data=st.data())
def test_conv_transpose2d_matches_torch(torch, c, data):
    x, w = torch.tensor(c.x, requires_grad=True), torch.tensor(c.w, requires_grad=True)
    y = torch.nn.functional.conv_transpose2d(x, w, stride=c.stride, padding=c.padding,
                                             output_padding=c.output_padding, dilation=c.dilation)
    g = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal(y.shape)
    y.backward(torch.tensor(g))
    assert_matches(reference.conv_transpose2d_forward(c.x, c.w, c.stride, c.padding,
                                                      c.output_padding, c.dilation),
                   y.detach().numpy())
    assert_matches(reference.conv_transpose2d_backward_input(g, c.w, c.x.shape[2:], c.stride,
                                                             c.padding, c.dilation),
                   x.grad.numpy())
    assert_matches(reference.conv_transpose2d_backward_weight(c.x, g, c.kernel_hw, c.stride,
                                                              c.padding, c.dilation),
                   w.grad.numpy())


# --- the dispatcher and the docstrings -----------------------------------------------------------


@pytest.mark.parametrize("knob", [None, "auto", "numpy"])
def test_dispatcher_runs_the_reference_for_numpy(monkeypatch, knob):
    # auto (or no knob) means the reference only where Numba is missing: simulate that here;
    # test_conv2d_numba.py checks that auto runs the Numba kernels where Numba is installed.
    monkeypatch.setattr(cpu_runtime, "load_numba", lambda: None)
    monkeypatch.setattr(dispatch, "_chosen", {})  # forget the choices made while Numba was there
    if knob is None:
        monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    else:
        monkeypatch.setenv("TINYGEN_KERNELS", knob)
    assert conv2d.implementation() is reference
    x, w = np.arange(2 * 3 * 5 * 4.0).reshape(2, 3, 5, 4), np.ones((2, 3, 2, 3))
    args = ((2, 1), (1, 1), (1, 2))  # stride, padding, dilation
    before = conv2d.calls["reference", "conv2d_forward"]
    np.testing.assert_array_equal(conv2d.conv2d_forward(x, w, *args),
                                  reference.conv2d_forward(x, w, *args))
    assert conv2d.calls["reference", "conv2d_forward"] == before + 1


def test_reference_docstring_examples_run():
    assert doctest.testmod(reference).failed == 0
