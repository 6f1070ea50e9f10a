"""2-D convolution kernels, and the one dispatcher that picks which implementation runs.

`implementation()` maps `tinygen.backend.kernel_backend()` (the ``TINYGEN_KERNELS`` knob) to a
module: `reference` (NumPy) or `cpu_numba` (imported on first use only, so importing tinygen
never imports Numba). Every function below forwards to it, so the choice is made on each call,
and counts the call in `calls`, keyed by (module, function), e.g.
``calls["cpu_numba", "conv2d_forward"]``: a test can check which module really ran. Every
implementation module has the same functions with the same signatures as `reference.py`, the
plain NumPy spec (read it for the shapes and the maths).
"""

from collections import Counter

from tinygen.backend import kernel_backend
from tinygen.errors import BackendUnavailableError
from tinygen.kernels.conv2d import reference

# Output-size arithmetic is the same for every backend: no dispatch.
from tinygen.kernels.conv2d.reference import conv_output_size, conv_transpose_output_size

PROVIDES = ("numpy", "numba")  # the kernel backends with conv2d kernels

calls = Counter()  # (module name, function name) -> number of calls forwarded there


def implementation():
    """The module holding the conv kernels of the current kernel backend."""
    backend = kernel_backend(provides=PROVIDES)
    if backend == "numpy":
        return reference
    if backend == "numba":
        from tinygen.kernels.conv2d import cpu_numba  # imports Numba: only on this path

        return cpu_numba
    raise BackendUnavailableError(f"no conv2d kernels for kernel backend {backend!r}")


def _dispatch(name):
    module = implementation()
    calls[module.__name__.rsplit(".", 1)[-1], name] += 1
    return getattr(module, name)


def im2col(x, kernel_size, stride, padding, dilation):
    return _dispatch("im2col")(x, kernel_size, stride, padding, dilation)


def col2im(cols, input_shape, stride, padding, dilation):
    return _dispatch("col2im")(cols, input_shape, stride, padding, dilation)


def conv2d_forward(x, w, stride, padding, dilation):
    return _dispatch("conv2d_forward")(x, w, stride, padding, dilation)


def conv2d_backward_input(grad_out, w, input_hw, stride, padding, dilation):
    return _dispatch("conv2d_backward_input")(grad_out, w, input_hw, stride, padding, dilation)


def conv2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
    return _dispatch("conv2d_backward_weight")(
        x, grad_out, kernel_hw, stride, padding, dilation
    )


def conv_transpose2d_forward(x, w, stride, padding, output_padding, dilation):
    return _dispatch("conv_transpose2d_forward")(
        x, w, stride, padding, output_padding, dilation
    )


def conv_transpose2d_backward_input(grad_out, w, stride, padding, dilation, input_hw=None):
    return _dispatch("conv_transpose2d_backward_input")(
        grad_out, w, stride, padding, dilation, input_hw
    )


def conv_transpose2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
    return _dispatch("conv_transpose2d_backward_weight")(
        x, grad_out, kernel_hw, stride, padding, dilation
    )
