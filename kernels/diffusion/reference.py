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

The *_noise variants (`q_sample_noise`, `p_sample_step_noise`, `ddim_step_noise`) take a
`seed` and an `offset` instead of the array z and draw it themselves from `normal`, a
counter-based Gaussian generator, so that a fast kernel can make the whole step one pass over
memory. Each is defined as the z-taking function above with z = normal(x.shape, seed, offset,
x.dtype); `q_sample_noise` also returns that z, the regression target eps of the training loss.

The generator, `normal(shape, seed, offset)`
-------------------------------------------
Element k (C order) of the result is normal number j = offset + k of the stream `seed`:
a pure function of (seed, j), so any split of the work over threads, and any cut of one draw
into several calls with consecutive offsets, gives the same numbers. Number j is lane j % 4 of
counter c = j // 4:

1. Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3",
   SC'11; the generator of cuRAND, JAX and Random123) maps the counter words
   (c mod 2^32, c div 2^32, 0, 0) and the key words (seed mod 2^32, seed div 2^32) to four
   32-bit words w0..w3 (ten rounds of two 32 x 32 -> 64-bit products, see `philox4x32`);
2. Box-Muller (Box & Muller 1958) turns each pair (w0, w1), (w2, w3) into two normals: with
   the top 24 bits of each word, u1 = (w0 >> 8 + 1) / 2^24 in (0, 1] and u2 = (w1 >> 8) / 2^24
   in [0, 1), r = sqrt(-2 ln u1) and lanes 0, 1 are r cos(2 pi u2), r sin(2 pi u2).

NOTE: the normals are float32 numbers whatever dtype is asked for (float64 gets them converted
exactly), so a float32 and a float64 run with one seed see the same noise. Here every value is
the float32 nearest to the exact Box-Muller value (evaluated in float64, rounded once); the
kernels evaluate it in float32 and land within a few float32 ulps of it (their tests say how
close). The 24-bit u1 bounds |z| by sqrt(2 ln 2^24) = 5.77: a tail of probability 8e-9 is cut.

Every function returns a new array, or, given `out=` (an array of the result's shape and dtype;
for `q_sample_noise` a pair), writes the result there and returns `out`; inputs are left alone.
`xp = get_array_module(...)` keeps the step bodies ready for CuPy arrays.
"""

import math

import numpy as np

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


def q_sample(x0, eps, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, out=None):
    """Forward noising, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, per sample.

    >>> import numpy as np
    >>> q_sample(np.ones((2, 1)), np.ones((2, 1)), np.array([0.6, 1.0]), np.array([0.8, 0.0]))
    array([[1.4],
           [1. ]])
    """
    return _into(out, per_sample(sqrt_alpha_bar_t, x0) * x0 + per_sample(sqrt_one_minus_alpha_bar_t, x0) * eps)


def p_sample_step(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, z=None, out=None):
    """One ancestral step, x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t)
    + sigma_t z, with coef_eps = beta_t / sqrt(1 - alpha_bar_t) and inv_sqrt_alpha = 1 / sqrt(alpha_t).

    `z` may be None only when every sigma is 0.

    >>> import numpy as np
    >>> p_sample_step(np.array([[3.0]]), np.array([[1.0]]), 1.0, 2.0, 0.5, np.array([[4.0]]))
    array([[6.]])
    """
    mean = per_sample(inv_sqrt_alpha, x_t) * (x_t - per_sample(coef_eps, x_t) * eps_pred)
    if z is None:
        return _into(out, mean)
    return _into(out, mean + per_sample(sigma, x_t) * z)


def ddim_step(x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, z=None,
              out=None):
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
    x_prev = sqrt_alpha_bar_prev * x0_hat + direction * eps_pred
    if z is None:
        return _into(out, x_prev)
    return _into(out, x_prev + sigma * z)


def _into(out, result):
    """`result`, or `result` written into `out` (then `out` is returned)."""
    if out is None:
        return result
    out[...] = get_array_module(out).asarray(result)  # a NumPy result into a CuPy out: copied to the GPU
    return out


# --- the same steps with z drawn from the counter-based generator ---------------------------------


def q_sample_noise(x0, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, seed, offset=0, out=None):
    """(x_t, eps): `q_sample` with eps = normal(x0.shape, seed, offset, x0.dtype), and that eps.

    `out`, if given, is a pair of arrays (x_t, eps) to write into.

    >>> import numpy as np
    >>> x_t, eps = q_sample_noise(np.zeros((2, 3), np.float32), 0.6, 0.8, seed=7)
    >>> bool(np.array_equal(x_t, np.float32(0.8) * eps)), bool(np.array_equal(eps, normal((2, 3), 7)))
    (True, True)
    """
    eps = get_array_module(x0).asarray(normal(x0.shape, seed, offset, x0.dtype))  # made on the CPU, then on x0's device
    x_t = q_sample(x0, eps, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t)
    if out is None:
        return x_t, eps
    return _into(out[0], x_t), _into(out[1], eps)


def p_sample_step_noise(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, seed, offset=0, out=None):
    """`p_sample_step` with z = normal(x_t.shape, seed, offset, x_t.dtype)."""
    z = get_array_module(x_t).asarray(normal(x_t.shape, seed, offset, x_t.dtype))
    return p_sample_step(x_t, eps_pred, coef_eps, inv_sqrt_alpha, sigma, z, out)


def ddim_step_noise(x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, seed,
                    offset=0, out=None):
    """`ddim_step` with z = normal(x_t.shape, seed, offset, x_t.dtype)."""
    z = get_array_module(x_t).asarray(normal(x_t.shape, seed, offset, x_t.dtype))
    return ddim_step(x_t, eps_pred, sqrt_alpha_bar_t, sqrt_one_minus_alpha_bar_t, sqrt_alpha_bar_prev, sigma, z, out)


# --- the generator: Philox4x32-10, then Box-Muller (see the module docstring) --------------------

PHILOX_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))  # the two round multipliers
PHILOX_W = (np.uint64(0x9E3779B9), np.uint64(0xBB67AE85))  # key increments: golden ratio, sqrt(3) - 1
PHILOX_ROUNDS = 10
_LOW32, _32 = np.uint64(0xFFFFFFFF), np.uint64(32)


def philox4x32(counter, key, rounds=PHILOX_ROUNDS):
    """Philox4x32-R (Salmon et al. 2011): the four 32-bit output words for four counter words
    (integers or arrays, broadcast together) and a key of two 32-bit words; uint32 arrays.

    A round multiplies words 0 and 2 by M0 and M1 (32 x 32 -> 64 bits) and mixes the halves
    with words 1 and 3 and the key; the key grows by (W0, W1) between rounds.
    Known answers from Random123's tests/kat_vectors:

    >>> [f"{int(w):08x}" for w in philox4x32((0, 0, 0, 0), (0, 0))]
    ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']
    >>> counter, key = (0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0)
    >>> [f"{int(w):08x}" for w in philox4x32(counter, key)]
    ['d16cfe09', '94fdcceb', '5001e420', '24126ea1']
    """
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counter)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for r in range(rounds):
        if r > 0:
            k0, k1 = (k0 + PHILOX_W[0]) & _LOW32, (k1 + PHILOX_W[1]) & _LOW32
        p0, p1 = PHILOX_M[0] * c0, PHILOX_M[1] * c2  # exact: both factors are below 2^32
        c0, c1, c2, c3 = (p1 >> _32) ^ c1 ^ k0, p1 & _LOW32, (p0 >> _32) ^ c3 ^ k1, p0 & _LOW32
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))


def box_muller(w0, w1):
    """Two float32 normals per pair of 32-bit words: r cos(2 pi u2), r sin(2 pi u2), r = sqrt(-2 ln u1),
    with u1 = (w0 >> 8 + 1) / 2^24 in (0, 1] and u2 = (w1 >> 8) / 2^24 in [0, 1); evaluated in
    float64 and rounded once.

    >>> z0, z1 = box_muller(np.uint32([0xFFFFFFFF, 0]), np.uint32([0, 0x40000000]))  # u1 = 1, then 2^-24, 1/4
    >>> [abs(round(float(v), 4)) for v in (*z0, *z1)]  # r = 0; then r = sqrt(2 ln 2^24), theta = pi / 2
    [0.0, 0.0, 0.0, 5.7681]
    """
    u1 = ((np.asarray(w0, np.uint32) >> 8).astype(np.float64) + 1) * 2.0**-24
    u2 = (np.asarray(w1, np.uint32) >> 8).astype(np.float64) * 2.0**-24
    r = np.sqrt(-2 * np.log(u1))
    theta = 2 * np.pi * u2
    return (r * np.cos(theta)).astype(np.float32), (r * np.sin(theta)).astype(np.float32)


def normal(shape, seed, offset=0, dtype=np.float32, out=None):
    """Standard normals of `shape`: element k is number offset + k of the counter-based stream `seed`.

    A pure function of (seed, offset + k): equal seeds give equal numbers, and consecutive
    draws (offset, then offset + the first draw's size) continue one stream.

    >>> a = normal((2, 3), seed=1)
    >>> a.dtype, bool(np.array_equal(a.ravel()[2:], normal(4, seed=1, offset=2)))
    (dtype('float32'), True)
    """
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    size, seed, offset = math.prod(shape), int(seed), int(offset)
    first, lane = offset // 4, offset % 4  # counter of number `offset`, and its lane
    count = (lane + size + 3) // 4  # counters covering numbers offset .. offset + size - 1
    c = np.uint64(first) + np.arange(count, dtype=np.uint64)
    w = philox4x32((c & _LOW32, c >> _32, 0, 0), (seed & 0xFFFFFFFF, seed >> 32))
    z = np.empty((count, 4), np.float32)  # z[c, l]: number 4 (first + c) + l
    z[:, 0], z[:, 1] = box_muller(w[0], w[1])
    z[:, 2], z[:, 3] = box_muller(w[2], w[3])
    return _into(out, z.reshape(-1)[lane : lane + size].reshape(shape).astype(dtype))
