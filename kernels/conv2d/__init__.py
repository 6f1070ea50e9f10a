"""2-D convolution kernels, and the one dispatcher that picks which implementation runs.

`implementation(xp)` maps `tinygen.backend.kernel_backend()` (the ``TINYGEN_KERNELS`` knob and
the arrays' module `xp`) to a module: `reference` (NumPy; on CuPy arrays too, through `xp`),
`cpu_numba` or `gpu_cupy` (each imported on first use only, so importing tinygen never imports
Numba or CuPy). On CuPy arrays ``auto`` picks `gpu_cupy`. Every function below forwards to it,
so the choice is made on each call, and counts the call in `calls`, keyed by (module, function),
e.g. ``calls["cpu_numba", "conv2d_forward"]``: a test can check which module really ran. Every
implementation module has the same functions with the same signatures as `reference.py`, the
plain NumPy spec (read it for the shapes and the maths).
"""

from collections import Counter

import numpy as np

from tinygen.backend import device_of, get_array_module, is_device_array, kernel_module
from tinygen.errors import DeviceMismatchError

# Output-size arithmetic is the same for every backend: no dispatch.
from tinygen.kernels.conv2d.reference import conv_output_size, conv_transpose_output_size

PROVIDES = ("numpy", "numba", "cupy")  # the kernel backends with conv2d kernels

calls = Counter()  # (module name, function name) -> number of calls forwarded there


def implementation(xp=np):
    """The module holding the conv kernels of the current kernel backend, for arrays of module `xp`."""
    return kernel_module(__name__, PROVIDES, xp)


def _dispatch(name, *arrays):
    """The function `name` of the implementation for `arrays` (all on one device), counted in `calls`."""
    xp = get_array_module(*arrays)
    if xp is not np and not all(is_device_array(a) for a in arrays):
        found = ", ".join(f"{tuple(a.shape)} on {device_of(a)}" for a in arrays)
        raise DeviceMismatchError(f"{name}: the arrays live on different devices: {found}")
    module = implementation(xp)
    calls[module.__name__.rsplit(".", 1)[-1], name] += 1
    return getattr(module, name)


def im2col(x, kernel_size, stride, padding, dilation):
    return _dispatch("im2col", x)(x, kernel_size, stride, padding, dilation)


def col2im(cols, input_shape, stride, padding, dilation):
    return _dispatch("col2im", cols)(cols, input_shape, stride, padding, dilation)


def conv2d_forward(x, w, stride, padding, dilation):
    return _dispatch("conv2d_forward", x, w)(x, w, stride, padding, dilation)


def conv2d_backward_input(grad_out, w, input_hw, stride, padding, dilation):
    return _dispatch("conv2d_backward_input", grad_out, w)(grad_out, w, input_hw, stride, padding, dilation)


def conv2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
    return _dispatch("conv2d_backward_weight", x, grad_out)(
        x, grad_out, kernel_hw, stride, padding, dilation
    )


def conv_transpose2d_forward(x, w, stride, padding, output_padding, dilation):
    return _dispatch("conv_transpose2d_forward", x, w)(
        x, w, stride, padding, output_padding, dilation
    )


def conv_transpose2d_backward_input(grad_out, w, stride, padding, dilation, input_hw=None):
    return _dispatch("conv_transpose2d_backward_input", grad_out, w)(
        grad_out, w, stride, padding, dilation, input_hw
    )


def conv_transpose2d_backward_weight(x, grad_out, kernel_hw, stride, padding, dilation):
    return _dispatch("conv_transpose2d_backward_weight", x, grad_out)(
        x, grad_out, kernel_hw, stride, padding, dilation
    )
