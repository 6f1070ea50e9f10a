"""2-D convolution kernels: `reference.py` (the plain NumPy spec: read it for the shapes and the
maths), `cpu_numba.py` and `gpu_cupy.py`, the same functions with the same arguments.

Every function below forwards to the implementation `kernels` picks for its arrays and the
``TINYGEN_KERNELS`` knob (`tinygen.kernels.dispatch.KernelFamily`), and counts the call in
`calls`, keyed by (module, function), e.g. ``calls["cpu_numba", "conv2d_forward"]``: a test can
check which module really ran. On CuPy arrays ``auto`` picks `gpu_cupy`.
"""

from tinygen.kernels.dispatch import KernelFamily

# Output-size arithmetic is the same for every backend: no dispatch.
from tinygen.kernels.conv2d.reference import conv_output_size, conv_transpose_output_size

kernels = KernelFamily(__name__, ("numpy", "numba", "cupy"))
calls, implementation = kernels.calls, kernels.implementation


def im2col(x, kernel_size, stride, padding, dilation):
    return kernels.function("im2col", x)(x, kernel_size, stride, padding, dilation)


def col2im(cols, input_shape, stride, padding, dilation):
    return kernels.function("col2im", cols)(cols, input_shape, stride, padding, dilation)


def conv2d_forward(x, w, stride, padding, dilation):
    return kernels.function("conv2d_forward", x, w)(x, w, stride, padding, dilation)


def conv2d_backward_input(grad_out, w, input_hw, stride, padding, dilation):
    return kernels.function("conv2d_backward_input", grad_out, w)(grad_out, w, input_hw, stride, padding, dilation)


def conv2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
    return kernels.function("conv2d_backward_weight", x, grad_out)(x, grad_out, kernel_hw, stride, padding, dilation)


def conv_transpose2d_forward(x, w, stride, padding, output_padding, dilation):
    return kernels.function("conv_transpose2d_forward", x, w)(x, w, stride, padding, output_padding, dilation)


def conv_transpose2d_backward_input(grad_out, w, input_hw, stride, padding, dilation):
    return kernels.function("conv_transpose2d_backward_input", grad_out, w)(
        grad_out, w, input_hw, stride, padding, dilation
    )


def conv_transpose2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
    return kernels.function("conv_transpose2d_backward_weight", x, grad_out)(
        x, grad_out, kernel_hw, stride, padding, dilation
    )
