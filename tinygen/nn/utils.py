"""Training utilities that act on parameters' gradients, named as in `torch.nn.utils`."""

import math

import numpy as np

from tinygen import backend
from tinygen.errors import ArgumentError
from tinygen.kernels import optim as optim_kernels
from tinygen.tensor import Tensor


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together, in place, so that their joint norm is at most `max_norm`.

    The norm is taken over every gradient as if they were one long vector,

        total = (sum over all gradient entries of |g|^norm_type)^(1 / norm_type)
        total = max |g|                                        (norm_type = inf)

    and when clip = max_norm / (total + 1e-6) is below 1 every gradient is multiplied by clip
    (the 1e-6 guards against dividing by zero, as in PyTorch). Parameters whose `.grad` is None
    are ignored. Returns the total norm before clipping, as a Python float.

    NOTE: a non-finite total (a NaN or inf in some gradient) is handled as PyTorch does by
    default: it is returned and the gradients are scaled anyway, by 0 for inf (so an inf entry
    becomes NaN) and by NaN for NaN; the optimizer step then spoils the weights, which is loud.
    Pass ``error_if_nonfinite=True`` to raise `ArgumentError` instead and leave the gradients.

    >>> from tinygen import tensor
    >>> p = tensor([0.0, 0.0], requires_grad=True)
    >>> p.grad = tensor([3.0, 4.0])
    >>> clip_grad_norm_([p], max_norm=1.0)
    5.0
    >>> p.grad.numpy().round(5)  # scaled by 1 / (5 + 1e-6)
    array([0.6, 0.8], dtype=float32)
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm >= 0:
        raise ArgumentError(f"max_norm must be a number >= 0, got {max_norm!r}")
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) or not norm_type > 0:
        raise ArgumentError(f"norm_type must be a number > 0 or math.inf, got {norm_type!r}")
    norm_type = float(norm_type)

    grads = [p.grad.data for p in params if p.grad is not None]
    if not grads:
        return 0.0
    xp = backend.get_array_module(*grads)
    if xp is not np:  # on the GPU: the norm on the device, then one wait for it (not one per gradient)
        if norm_type == 2:  # one kernel per gradient, one reduction (kernels/optim)
            total = math.sqrt(float(optim_kernels.sum_of_squares(grads)))
        elif math.isinf(norm_type):
            total = float(xp.stack([xp.abs(g).max() for g in grads if g.size]).max()) if any(g.size for g in grads) else 0.0
        else:
            total = float(sum((xp.abs(g) ** norm_type).sum(dtype=np.float64) for g in grads) ** (1.0 / norm_type))
    elif math.isinf(norm_type):
        total = max(float(xp.abs(g).max()) if g.size else 0.0 for g in grads)
    else:
        total = sum(float((xp.abs(g) ** norm_type).sum()) for g in grads) ** (1.0 / norm_type)

    if error_if_nonfinite and not math.isfinite(total):
        raise ArgumentError(
            f"the total {norm_type}-norm of the gradients is {total}, so they cannot be clipped; "
            "pass error_if_nonfinite=False to scale them anyway"
        )
    clip = max_norm / (total + 1e-6)
    if clip < 1 or math.isnan(clip):
        if xp is np:
            for g in grads:
                g *= clip  # in place: the parameters' .grad arrays themselves
        else:
            optim_kernels.scale_many(grads, clip)  # the same, in one launch
    return total
