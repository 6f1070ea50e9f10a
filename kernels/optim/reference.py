"""Adam's update (Kingma & Ba, 2015, Algorithm 1, with PyTorch's placement of eps), in place: the
plain array spec of the fused kernel in `cpu_numba.py`. Written with `xp`, so it also runs on CuPy.

For a parameter p with gradient g, moments m and v, at step t (1, 2, ...):

    g = g + weight_decay * p          (Adam: an L2 term in the gradient), or
    p = p * (1 - lr * weight_decay)   (AdamW: decoupled decay, before the step)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g^2
    p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
"""

import math

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
