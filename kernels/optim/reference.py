"""Adam's update (Kingma & Ba, 2015, Algorithm 1, with PyTorch's placement of eps), in place: the
plain array spec of the fused kernels in `cpu_numba.py` and `gpu_cupy.py`; the EMA's update and
the sum of squares that clip_grad_norm_ takes, the spec of `gpu_cupy.py`'s. Written with `xp`,
so it also runs on CuPy.

For a parameter p with gradient g, moments m and v, at step t (1, 2, ...):

    g = g + weight_decay * p          (Adam: an L2 term in the gradient), or
    p = p * (1 - lr * weight_decay)   (AdamW: decoupled decay, before the step)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g^2
    p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
"""

import math

import numpy as np

from tinygen.backend import get_array_module


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """Update p, m and v (arrays of one shape and dtype) in place for step number `step`."""
    xp = get_array_module(p)
    if weight_decay != 0:
        if decoupled:
            p *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    denom = xp.sqrt(v) / math.sqrt(1 - beta2**step) + eps
    p -= (lr / (1 - beta1**step)) * m / denom


def adam_update_many(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, decoupled):
    """`adam_update` on each (p, g, m, v, step) of the lists (one CUDA launch for all in gpu_cupy.py)."""
    for p, g, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)


def ema_update(shadow, p, decay):
    """shadow = decay shadow + (1 - decay) p, in place, written as shadow + (1 - decay) (p - shadow):
    less rounding when decay is close to 1. p is cast to shadow's dtype."""
    shadow += (1 - decay) * (p.astype(shadow.dtype, copy=False) - shadow)


def ema_update_many(shadows, params, decay):
    """`ema_update` on each (shadow, p) of the lists."""
    for shadow, p in zip(shadows, params):
        ema_update(shadow, p, decay)


def scale_many(arrays, factor):
    """Every array multiplied by `factor` (a Python float, cast to each array's dtype), in place."""
    for a in arrays:
        a *= factor


def sum_of_squares(arrays):
    """The sum of the squares of every element of `arrays`, in float64: a 0-d array of their module
    (on the GPU it stays there: reading it is the caller's one wait)."""
    xp = get_array_module(*arrays)
    return sum((xp.square(a, dtype=np.float64).sum() for a in arrays), xp.zeros((), np.float64))
