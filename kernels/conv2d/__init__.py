"""2-D convolution kernels, and the one dispatcher that picks which implementation runs.

`implementation()` maps `tinygen.backend.kernel_backend()` (the ``TINYGEN_KERNELS`` knob) to a
module; every function below forwards to it, so the choice is made on each call and a test can
check which module ran. Every implementation module has the same functions with the same
signatures as `reference.py`, the plain NumPy spec (read it for the shapes and the maths).
"""

from tinygen.backend import kernel_backend
from tinygen.errors import BackendUnavailableError
from tinygen.kernels.conv2d import reference

# Output-size arithmetic is the same for every backend: no dispatch.
from tinygen.kernels.conv2d.reference import conv_output_size, conv_transpose_output_size


def implementation():
    """The module holding the conv kernels of the current kernel backend."""
    backend = kernel_backend()
    if backend == "numpy":
        return reference
    raise BackendUnavailableError(f"no conv2d kernels for kernel backend {backend!r}")


def im2col(x, kernel_size, stride, padding, dilation):
    return implementation().im2col(x, kernel_size, stride, padding, dilation)


def col2im(cols, input_shape, stride, padding, dilation):
    return implementation().col2im(cols, input_shape, stride, padding, dilation)


def conv2d_forward(x, w, stride, padding, dilation):
    return implementation().conv2d_forward(x, w, stride, padding, dilation)


def conv2d_backward_input(grad_out, w, input_hw, stride, padding, dilation):
    return implementation().conv2d_backward_input(grad_out, w, input_hw, stride, padding, dilation)


def conv2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
    return implementation().conv2d_backward_weight(
        x, grad_out, kernel_hw, stride, padding, dilation
    )


def conv_transpose2d_forward(x, w, stride, padding, output_padding, dilation):
    return implementation().conv_transpose2d_forward(
        x, w, stride, padding, output_padding, dilation
    )


def conv_transpose2d_backward_input(grad_out, w, stride, padding, dilation, input_hw=None):
    return implementation().conv_transpose2d_backward_input(
        grad_out, w, stride, padding, dilation, input_hw
    )


def conv_transpose2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
    return implementation().conv_transpose2d_backward_weight(
        x, grad_out, kernel_hw, stride, padding, dilation
    )
