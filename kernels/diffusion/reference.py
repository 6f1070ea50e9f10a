"""The diffusion noise steps in plain NumPy: the readable spec every faster kernel is checked against.

A diffusion model spends its non-network time in three elementwise updates over a batch of
images, each with one coefficient per sample (samples in a training batch sit at different
timesteps t, so every coefficient is an array of shape (B,), broadcast over the other axes):

    q_sample        x_t     = sqrt_alpha_bar_t x_0 + sqrt_one_minus_alpha_bar_t eps
                    (the closed form of q(x_t | x_0), Ho et al. 2020, eq. 4)

    p_sample_step   x_{t-1} = inv_sqrt_alpha (x_t - coef_eps eps_theta) + sigma z
                    (Algorithm 2 of Ho et al. 2020, with inv_sqrt_alpha = 1 / sqrt(alpha_t) and
                    coef_eps = beta_t / sqrt(1 - alpha_bar_t))

    ddim_step       x_prev  = sqrt_alpha_bar_prev x0_hat
                              + sqrt(1 - alpha_bar_prev - sigma^2) eps_theta + sigma z,
                    x0_hat  = (x_t - sqrt_one_minus_alpha_bar_t eps_theta) / sqrt_alpha_bar_t
                    (Song et al. 2021, eq. 12)

Conventions shared by every implementation (the dispatcher in `__init__.py` checks them once):

- arrays `x_0`, `x_t`, `eps`, `eps_pred`, `z` have one shape (B, ...) and one float dtype;
- each coefficient is an array of shape (B,) (or a number, the same for every sample), any
  float dtype: it is cast to the images' dtype, so float32 images stay float32 and float64 stay
  float64 (the output dtype is always the images' dtype);
- the Gaussian noise `z` is passed in, drawn by the caller; it may be None only where every
  sigma is 0 (the last step of a sampler, or DDIM with eta = 0).

NOTE: the fast kernels (issue 5) will add variants that draw z inside the kernel from a
counter-based generator (a seed and an offset instead of the array z), so that the whole step is
one pass over memory. The math is exactly the one here; only where z comes from differs, so
those variants are checked against these functions with the same z regenerated outside.

Every function returns a new array and leaves its inputs alone. `xp = get_array_module(...)`
keeps the bodies ready for CuPy arrays.
"""

from tinygen.backend import get_array_module


def per_sample(coef, x):
    """A coefficient of shape (B,) (or a number) as an array that broadcasts against x (B, ...).

    >>> import numpy as np
    >>> per_sample(np.array([1.0, 2.0]), np.zeros((2, 1, 3, 3), np.float32)).shape
    (2, 1, 1, 1)
    """
    xp = get_array_module(x)
    coef = xp.asarray(coef, dtype=x.dtype)
    if coef.ndim == 0:
        return coef
    return coef.reshape(coef.shape + (1,) * (x.ndim - 1))  # (B,) -> (B, 1, ..., 1)


def q_sample(x0, eps, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t):
    """Forward noising, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, per sample.

    >>> import numpy as np
    >>> q_sample(np.ones((2, 1)), np.ones((2, 1)), np.array([0.6, 1.0]), np.array([0.8, 0.0]))
    array([[1.4],
           [1. ]])
    """
    return per_sample(sqrt_alpha_bar_t, x0) * x0 + per_sample(sqrt_one_minus_alpha_bar_t, x0) * eps


def p_sample_step(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, z=None):
    """One ancestral step, x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t)
    + sigma_t z, with coef_eps = beta_t / sqrt(1 - alpha_bar_t) and inv_sqrt_alpha = 1 / sqrt(alpha_t).

    `z` may be None only when every sigma is 0.

    >>> import numpy as np
    >>> p_sample_step(np.array([[3.0]]), np.array([[1.0]]), 1.0, 2.0, 0.5, np.array([[4.0]]))
    array([[6.]])
    """
    mean = per_sample(inv_sqrt_alpha, x_t) * (x_t - per_sample(coef_eps, x_t) * eps_pred)
    if z is None:
        return mean
    return mean + per_sample(sigma, x_t) * z


def ddim_step(x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, z=None):
    """One DDIM step from t to an earlier t' (Song et al. 2021, eq. 12):

        x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_bar_t)     "predicted x_0"
        x_t'   = sqrt(alpha_bar_t') x0_hat
                 + sqrt(1 - alpha_bar_t' - sigma^2) eps_theta                     "direction to x_t"
                 + sigma z                                                        "random noise"

    sigma = 0 is the deterministic DDIM sampler; `z` may be None only when every sigma is 0.
    sigma^2 must not exceed 1 - alpha_bar_t' (the sampler's eta <= 1 guarantees it).

    >>> import numpy as np
    >>> ddim_step(np.array([[1.0]]), np.array([[1.0]]), 0.6, 0.8, 1.0, 0.0)  # t' = 0: x0_hat
    array([[0.33333333]])
    """
    xp = get_array_module(x_t)
    x0_hat = (x_t - per_sample(sqrt_one_minus_alpha_bar_t, x_t) * eps_pred) / per_sample(sqrt_alpha_bar_t, x_t)
    sqrt_alpha_bar_prev = per_sample(sqrt_alpha_bar_prev, x_t)
    sigma = per_sample(sigma, x_t)
    # max(., 0): 1 - alpha_bar_t' - sigma^2 is exactly 0 at eta = 1, t' = 0, but may round below it
    direction = xp.sqrt(xp.maximum(1 - sqrt_alpha_bar_prev * sqrt_alpha_bar_prev - sigma * sigma, 0))
    out = sqrt_alpha_bar_prev * x0_hat + direction * eps_pred
    if z is None:
        return out
    return out + sigma * z
