"""Optimizer kernels (Adam's update, the EMA's, clip_grad_norm_'s sum of squares and scaling):
`reference.py` (array code, NumPy or CuPy), `cpu_numba.py` (NumPy arrays) and `gpu_cupy.py` (a
CUDA kernel, CuPy arrays), the same functions with the same arguments.

Every function below forwards to the implementation `kernels` picks
(`tinygen.kernels.dispatch.KernelFamily`) and counts the call in `calls`, keyed by (module,
function). The *_many functions take lists of arrays that may live on several devices: each
device's group is one call to its own kernels (one launch on a GPU, a loop elsewhere).
"""

from tinygen.backend import device_of
from tinygen.kernels.dispatch import KernelFamily

kernels = KernelFamily(__name__, ("numpy", "numba", "cupy"))
calls, implementation = kernels.calls, kernels.implementation


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    return kernels.function("adam_update", p)(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)


def _per_device(name, arrays):
    """(function, indices) for each device the arrays live on (one group in the common case): a group
    of parameters split over the CPU and a GPU is updated as two calls, each by its own kernels."""
    groups = {}
    for i, a in enumerate(arrays):
        groups.setdefault(device_of(a), []).append(i)
    for indices in groups.values():
        yield kernels.function(name, arrays[indices[0]]), indices


def adam_update_many(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, decoupled):
    """adam_update on each (p, g, m, v, step) of the lists."""
    for function, idx in _per_device("adam_update_many", params):
        function(*([lst[i] for i in idx] for lst in (params, grads, exp_avgs, exp_avg_sqs, steps)),
                 lr, beta1, beta2, eps, weight_decay, decoupled)


def ema_update_many(shadows, params, decay):
    """ema_update on each (shadow, p) of the lists."""
    for function, idx in _per_device("ema_update_many", shadows):
        function([shadows[i] for i in idx], [params[i] for i in idx], decay)


def scale_many(arrays, factor):
    """Every array times `factor`, in place."""
    for function, idx in _per_device("scale_many", arrays):
        function([arrays[i] for i in idx], factor)


def sum_of_squares(arrays):
    return kernels.function("sum_of_squares", *arrays)(arrays)
