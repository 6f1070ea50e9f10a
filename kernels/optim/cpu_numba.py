"""Adam's update on the CPU with Numba: `reference.adam_update`, one pass over p, g, m and v.

NumPy's version makes nine passes over the parameter's size, each into a temporary; for the
MLP GAN's 1.1 M parameters that took 4.5 ms of a 29 ms training step. Here every element is
read and written once, with the scalars folded into per-step constants of the arrays' dtype,
so that float32 parameters are updated in float32 arithmetic, as NumPy does. The operations are
the reference's in a different grouping, so results agree to rounding, not bit for bit. One
thread: the loop vectorizes and runs at 47 GB/s (0.46 ms for 800 k float32 parameters, against
2.7 ms for NumPy's; `python -m benchmarks.kernels` has the row); a parallel version was slower.
"""

import math

import numpy as np

from tinygen.kernels.cpu_runtime import load_numba
from tinygen.kernels.optim import reference

numba = load_numba()  # through cpu_runtime: it applies tinygen's threading policy first
if numba is None:
    raise ImportError("the Numba optimizer kernels need Numba: pip install tinygen[cpu]")

# error_model="numpy": a float division by zero gives inf/nan as in NumPy instead of raising, so
# the loops carry no zero test and LLVM vectorizes them (Adam's update: 4.3x faster).
_jit = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")


# No Numba kernels for these: the reference's array code, by name (the EMA's three NumPy passes and
# clip_grad_norm_'s sums are a small part of a CPU training step).
ema_update_many = reference.ema_update_many
scale_many = reference.scale_many
sum_of_squares = reference.sum_of_squares


@numba.njit(**_jit)
def _adam(p, g, m, v, c):
    """p, g, m, v flat; c holds the step's constants, in the arrays' dtype."""
    decay, l2, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, root_bc2, eps = c
    for i in range(p.shape[0]):
        gi = g[i] + l2 * p[i]
        mi = beta1 * m[i] + one_minus_beta1 * gi
        vi = beta2 * v[i] + one_minus_beta2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step_size * mi / (np.sqrt(vi) / root_bc2 + eps)


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """As `reference.adam_update`: p, m and v updated in place."""
    arrays = [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in (p, m, v)]  # strided: a copy
    decay = 1 - lr * weight_decay if decoupled else 1.0
    l2 = 0.0 if decoupled else weight_decay
    constants = tuple(p.dtype.type(c) for c in (decay, l2, beta1, 1 - beta1, beta2, 1 - beta2,
                                               lr / (1 - beta1**step), math.sqrt(1 - beta2**step), eps))
    g = np.ascontiguousarray(g, p.dtype).reshape(-1)
    _adam(arrays[0].reshape(-1), g, arrays[1].reshape(-1), arrays[2].reshape(-1), constants)
    for copy, original in zip(arrays, (p, m, v)):
        if copy is not original:
            original[...] = copy


def adam_update_many(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, decoupled):
    """`adam_update` on each (p, g, m, v, step) of the lists."""
    for p, g, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)
