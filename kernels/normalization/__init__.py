"""Group and batch normalization, ReLU, LeakyReLU and SiLU kernels: `reference.py` (array code:
NumPy, or CuPy through `xp`), `cpu_numba.py` (NumPy arrays) and `gpu_cupy.py` (CUDA kernels, CuPy
arrays), the same functions with the same arguments. `gpu_cupy` has no BatchNorm kernel: there
it is the reference's array code, by name. ``numba`` on CuPy arrays raises.

Every function below forwards to the implementation `kernels` picks
(`tinygen.kernels.dispatch.KernelFamily`) and counts the call in `calls`, keyed by (module,
function), as in `tinygen.kernels.conv2d`.
"""

from tinygen.kernels.dispatch import KernelFamily

kernels = KernelFamily(__name__, ("numpy", "numba", "cupy"))
calls, implementation = kernels.calls, kernels.implementation


def group_norm_forward(x, weight, bias, num_groups, eps):
    return kernels.function("group_norm_forward", x)(x, weight, bias, num_groups, eps)


def group_norm_backward(grad_out, x, weight, mean, rstd, num_groups):
    return kernels.function("group_norm_backward", x)(grad_out, x, weight, mean, rstd, num_groups)


def batch_norm_forward(x, weight, bias, eps):
    return kernels.function("batch_norm_forward", x)(x, weight, bias, eps)


def batch_norm_backward(grad_out, x, weight, mean, var, eps):
    return kernels.function("batch_norm_backward", x)(grad_out, x, weight, mean, var, eps)


def relu_forward(x):
    return kernels.function("relu_forward", x)(x)


def relu_backward(grad_out, y):
    return kernels.function("relu_backward", y)(grad_out, y)


def leaky_relu_forward(x, negative_slope):
    return kernels.function("leaky_relu_forward", x)(x, negative_slope)


def leaky_relu_backward(grad_out, x, negative_slope):
    return kernels.function("leaky_relu_backward", x)(grad_out, x, negative_slope)


def silu_forward(x):
    return kernels.function("silu_forward", x)(x)


def silu_backward(grad_out, x):
    return kernels.function("silu_backward", x)(grad_out, x)
