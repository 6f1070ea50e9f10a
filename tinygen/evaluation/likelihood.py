"""Likelihoods of test images: the VAE's ELBO and IWAE bound, the DDPM's variational bound in bits/dim.

All values are per image, float64, in nats (or bits per dimension): Monte-Carlo estimates of lower
bounds on log p(x) (of upper bounds on -log p(x)); larger ELBO/IWAE and smaller bits/dim are better.

- VAE (Kingma & Welling 2014), with the model's decoder likelihood (`VAE.reconstruction_nll`):
  a Bernoulli on logits l = f_theta(z), normalised on *binary* images (binarise grey ones with
  `binarize`), or the discretised logistic of 8-bit images (likelihood="logistic"), normalised on
  the grid k/255, where -bound / (D ln 2) is a bound in bits/dim (`vae_bits_per_dim`):
      ELBO(x) = E_{q(z|x)}[log p(x | z)] - KL(q(z | x) || p(z))                             (eq. 3)
  estimated with ONE reparameterised sample z = mu + sigma * eps for the reconstruction term, as
  the model trains; the KL in closed form for p(z) = N(0, I) (-1/2 sum_j (1 + log sigma_j^2 -
  mu_j^2 - sigma_j^2)), and as log q(z | x) - log p(z) at the same z for the VampPrior.
- IWAE (Burda, Grosse & Salakhutdinov 2016, eq. 8), z_1..z_K ~ q(z | x) independently:
      L_K(x) = log (1/K) sum_k w_k,   w_k = p(x | z_k) p(z_k) / q(z_k | x),
  computed as logsumexp_k(log w_k) - log K. E[L_K] <= E[L_{K+1}] <= log p(x) (their Theorem 1),
  and L_1 is a one-sample ELBO estimate with a Monte-Carlo KL.
- DDPM (Ho, Jain & Abbeel 2020, eq. 5), on 8-bit images scaled to [-1, 1] as in training:
      L = L_T + sum_{t=2}^T L_{t-1} + L_0,
      L_T     = KL(q(x_T | x_0) || N(0, I)),
      L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)),   x_t ~ q(x_t | x_0),
      L_0     = -log p_theta(x_0 | x_1)  (the discretised Gaussian decoder of their section 3.3),
  and bits/dim = L / (D ln 2), D = C H W sub-pixels (784 for MNIST; 3072 for 3 x 32 x 32, each
  colour channel of each pixel a dimension with its own decoder bin, as in Ho et al.'s CIFAR-10
  bits/dim). -log p(x_0) <= E[L], so this is an upper bound on the negative log-likelihood of
  the discrete data (a valid probability over the 256^D images: no density on [0, 1] and no
  dequantisation correction). p_theta's mean comes from eps_theta (eq. 11, optionally with
  x0_hat clipped, `model_mean`), its variance is beta_t or beta~_t (`model_variance`). Every term costs one network call on x_t ~ q(x_t | x_0), so the
  full bound costs T calls per batch; `t_subsample` gives an unbiased estimate from fewer.

NOTE: every image draws its own random numbers from np.random.default_rng([seed, i]), i its index
in the array given: results do not depend on batch_size or chunk_size, and the global generators
(tinygen's and NumPy's) are never touched.

>>> images = np.full((2, 1, 28, 28), 0.5)
>>> x = binarize(images, seed=0)
>>> np.unique(x).tolist(), x.dtype
([0.0, 1.0], dtype('float64'))
>>> bool(np.array_equal(x, binarize(images, seed=0)))
True
"""

import contextlib
import math

import numpy as np

from tinygen.errors import ArgumentError, DTypeError, ShapeError
from tinygen.models.diffusion import DDPM
from tinygen.models.vae import VAE
from tinygen.tensor import Tensor, no_grad

LOG_2PI = math.log(2 * math.pi)
DECODE_BUDGET = 4096 * 784  # sub-pixels `vae_iwae` decodes at a time by default: 4096 MNIST digits

# --- dynamic binarisation -----------------------------------------------------------------------


def binarize(images, seed=0):
    """x_bin ~ Bernoulli(x) per pixel for grey levels x in [0, 1]; an array of 0.0/1.0, same dtype.

    "Dynamic" binarisation (Salakhutdinov & Murray 2008 drew one fixed binarisation; Burda et al.
    2016 redraw per use): here from a Generator of its own, np.random.default_rng(seed), so one
    seed always gives the same binary test set.
    """
    x = _check_unit_images(images, "images")
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape) < x).astype(x.dtype)  # P(u < x) = x for u ~ U[0, 1)


# --- VAE: ELBO and IWAE -------------------------------------------------------------------------


@no_grad()
def vae_elbo(model, x, batch_size=100, seed=0):
    """ELBO(x) per image in nats, float64 (N,), for a `VAE` or `ConvVAE` and images x (N, C, H, W).

    x: floats in [0, 1] or uint8 levels k (read as k / 255), of the model's (C, H, W). One
    reparameterised sample z = mu + sigma * eps for E_q[log p(x | z)]; the KL in closed form
    for the standard prior N(0, I), and log q(z | x) - log p(z) at the same z for the VampPrior.
    Only for binary x (see `binarize`) is the Bernoulli term a normalised log-likelihood
    comparable with published numbers (about -100 nats on binarised MNIST); the logistic takes
    8-bit x only (floats off the grid k/255 are refused).
    """
    model = _check_vae(model)
    x = _vae_images(model, x)
    batch_size = _check_positive_int(batch_size, "batch_size")
    out = np.empty(len(x))
    with _eval_mode(model.net):
        prior = _prior(model)
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            mu, logvar = _encode(model, xb)  # (B, J) each
            gens = _image_generators(seed, start, len(xb))
            eps = np.stack([g.standard_normal(mu.shape[1]) for g in gens])  # (B, J)
            z = mu + np.exp(0.5 * logvar) * eps
            log_px = _log_likelihood(model, _decode(model, z), xb)  # (B,)
            if prior is None:
                # KL(N(mu, sigma^2) || N(0, I)) = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)
                kl = -0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum(1)
            else:
                kl = -0.5 * (eps**2 + logvar + LOG_2PI).sum(1) - _log_prior(prior, z)
            out[start:start + len(xb)] = log_px - kl
    return out


@no_grad()
def vae_iwae(model, x, K=5000, batch_size=100, seed=0, chunk_size=None):
    """The importance-weighted bound L_K(x) on log p(x) per image in nats, float64 (N,).

    L_K = logsumexp_k(log p(x | z_k) + log p(z_k) - log N(z_k; mu, sigma^2)) - log K with
    z_k = mu + sigma * eps_k and p(z) the model's prior (N(0, I), or the VampPrior's mixture); x as
    for `vae_elbo`. The K samples are decoded `chunk_size` per image at a time (by default
    DECODE_BUDGET // (batch_size D), D = C H W: 4096 // batch_size for MNIST), so memory holds
    (batch_size, chunk_size, D) decoder outputs, never (B, K, D); the log-weights (B, K) are kept
    and reduced once, so chunking does not change the result. The first sample of each image is
    the one `vae_elbo` uses with the same seed.
    """
    model = _check_vae(model)
    x = _vae_images(model, x)
    K, batch_size = _check_positive_int(K, "K"), _check_positive_int(batch_size, "batch_size")
    if chunk_size is not None:
        chunk_size = _check_positive_int(chunk_size, "chunk_size")
    out = np.empty(len(x))
    with _eval_mode(model.net):
        prior = _prior(model)
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            B, chunk = len(xb), chunk_size or max(1, DECODE_BUDGET // (len(xb) * xb[0].size))
            mu, logvar = _encode(model, xb)  # (B, J) each
            sigma, J = np.exp(0.5 * logvar), mu.shape[1]
            gens = _image_generators(seed, start, B)
            log_w = np.empty((B, K))
            for k0 in range(0, K, chunk):
                k = min(chunk, K - k0)
                eps = np.stack([g.standard_normal((k, J)) for g in gens])  # (B, k, J)
                z = mu[:, None] + sigma[:, None] * eps  # (B, k, J)
                decoded = _decode(model, z.reshape(B * k, J))  # (B*k, C', H, W)
                targets = np.broadcast_to(xb[:, None], (B, k) + xb.shape[1:]).reshape((B * k,) + xb.shape[1:])
                log_px = _log_likelihood(model, decoded, targets).reshape(B, k)  # (B*k,) -> (B, k)
                log_pz = _log_prior(prior, z.reshape(B * k, J)).reshape(B, k)  # log p(z)
                log_qz = -0.5 * (eps**2 + logvar[:, None] + LOG_2PI).sum(2)  # log N(z; mu, sigma^2)
                log_w[:, k0:k0 + k] = log_px + log_pz - log_qz
            out[start:start + B] = _logsumexp(log_w, axis=1) - math.log(K)
    return out


@no_grad()
def vae_bits_per_dim(model, x, K=5000, batch_size=100, seed=0, chunk_size=None):
    """The IWAE bound in bits per dimension per image, float64 (N,): -L_K(x) / (D ln 2), D = C H W.

    An upper bound on -log2 p(x) / D wherever the decoder's likelihood is normalised on x: for
    likelihood="logistic", 8-bit x (uint8, or floats k / 255) -- the bits/dim of 8-bit images
    published for PixelCNN++ and Ho et al.'s DDPM; for the Bernoulli, binary x (see `binarize`),
    whose bits count binary dimensions and do not compare with 8-bit numbers. Other x is refused.
    Arguments as for `vae_iwae`.
    """
    model = _check_vae(model)
    x = _vae_images(model, x)
    if model.config.likelihood == "bernoulli" and not np.isin(x, (0.0, 1.0)).all():
        raise ArgumentError("bits/dim of a Bernoulli VAE are a bound on binary images only: binarize x first "
                            "(the logistic likelihood, likelihood='logistic', bounds the 8-bit images themselves)")
    return -vae_iwae(model, x, K, batch_size, seed, chunk_size) / (x[0].size * math.log(2))


def _vae_images(model, images):
    """The images x of a VAE's bound as float64 (N, C, H, W) in [0, 1], for the model's (C, H, W):
    floats as given, uint8 levels k as k / 255. The logistic needs the 8-bit grid: floats more
    than 1e-3 of a level away from it are refused, the others snapped to k / 255 in float64 (so
    float32 k / 255, within 1e-5 of a level, gives the bound of the uint8 images)."""
    x = images.numpy() if isinstance(images, Tensor) else np.asarray(images)
    if x.dtype == np.uint8:
        x = x / 255.0
    x = _check_unit_images(x, "x", model.image_shape).astype(np.float64, copy=False)
    if model.config.likelihood == "logistic":
        levels = np.rint(x * 255)
        off = np.abs(x * 255 - levels).max()
        if off > 1e-3:
            raise ArgumentError(f"x must be 8-bit images (uint8, or floats k / 255) for the logistic likelihood, "
                                f"found values {off:.3g} of a level off the grid")
        x = levels / 255
    return x


def _encode(model, x):
    """mu, log sigma^2 of q(z | x) as float64 arrays (B, J), from the model's own encoder."""
    mu, logvar = model.encode(_input(model.net, x))
    return mu.numpy().astype(np.float64), logvar.numpy().astype(np.float64)


def _prior(model):
    """None for the standard prior N(0, I); for the VampPrior, its components' mu_k, log sigma_k^2
    (K, J) in float64: the encoder at the pseudo-inputs."""
    if model.config.prior == "standard":
        return None
    return _encode(model, model.pseudo_images().numpy())


def _log_prior(prior, z):
    """log p(z) in float64 for latents z (n, J), `prior` from `_prior`.

    VampPrior: log (1/K) sum_k N(z; mu_k, sigma_k^2). The squared distances (n, K) come from
    sum_j (z_j - mu_kj)^2 / sigma_kj^2 = z^2 . (1/sigma_k^2) - 2 z . (mu_k / sigma_k^2) + sum_j mu_kj^2 / sigma_kj^2,
    three matrix products, so that no (n, K, J) array is made.
    """
    if prior is None:
        return -0.5 * (z**2 + LOG_2PI).sum(1)  # log N(z; 0, I)
    mu, logvar = prior
    inv_var = np.exp(-logvar)  # (K, J)
    sq = (z**2) @ inv_var.T - 2 * z @ (mu * inv_var).T + (mu**2 * inv_var).sum(1)  # (n, K)
    log_n = -0.5 * (sq + logvar.sum(1) + z.shape[1] * LOG_2PI)  # log N(z; mu_k, sigma_k^2)
    return _logsumexp(log_n, axis=1) - math.log(len(mu))


def _decode(model, z):
    """The decoder's output for latents z (n, J) as a float64 array (n, C', H, W): Bernoulli logits
    (C' = C), or the logistic's locations and log-scales (C' = 2C)."""
    return model.decode(_input(model.net, z)).numpy().astype(np.float64)


def _log_likelihood(model, out, x):
    """log p(x | z) per row (n,) for decoder outputs `out` (n, C', H, W) and images x (n, C, H, W):
    the model's own likelihood (`VAE.reconstruction_nll`, Bernoulli or discretised logistic),
    evaluated on the host in float64."""
    return -model.reconstruction_nll(Tensor(out, device="cpu"), Tensor(x, device="cpu")).numpy()


def _logsumexp(a, axis):
    """log sum exp(a) along `axis`, shifted by the maximum so that no exp overflows."""
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


# --- Gaussians: KL, the normal tail, the discretised decoder ----------------------------------

# The error function from Cephes (S. L. Moshier, Cephes Math Library 2.8, ndtr.c), rational
# approximations with double-precision accuracy (Cephes reports erf's peak relative error as
# 3.7e-16 on [0, 1]; its erfc, 5.7e-14, comes from rounding exp(-x^2), which the log form skips):
#     erf(x)  = x T(x^2) / U(x^2)                 0 <= x < 1
#     erfc(x) = exp(-x^2) P(x) / Q(x)             1 <= x < 8
#     erfc(x) = exp(-x^2) R(x) / S(x)             8 <= x
# (U, Q and S monic). Written as log erfc(x) = -x^2 + log(P/Q), the tail never underflows: log Q(z)
# stays exact where erfc itself is 0 in double precision (z > 38).
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)
_ERF_U = (3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_ERFC_Q = (1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
           6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)
_ERFC_S = (2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
           1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)


def _polevl(x, coefs, monic=False):
    """Horner's rule, coefficients from the highest power; `monic` prepends a leading 1."""
    y = x + coefs[0] if monic else np.full_like(x, coefs[0])
    for c in coefs[1:]:
        y = y * x + c
    return y


def _log_erfc(x):
    """log erfc(x) for x >= 0 (float64 array): log(1 - erf(x)) below 1, the log form above."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # branches np.where drops
        small = np.log1p(-x * _polevl(x * x, _ERF_T) / _polevl(x * x, _ERF_U, monic=True))
        mid = np.log(_polevl(x, _ERFC_P) / _polevl(x, _ERFC_Q, monic=True))
        large = np.log(_polevl(x, _ERFC_R) / _polevl(x, _ERFC_S, monic=True))
        return np.where(x < 1, small, np.where(np.isinf(x), -np.inf, -x * x + np.where(x < 8, mid, large)))


def log_normal_sf(z):
    """log Q(z) = log P(Z > z), Z ~ N(0, 1), float64, with Q(z) = erfc(z / sqrt 2) / 2 (Cephes' erf).

    Accurate to about 1e-15 relative in Q for every z, including the far tail (z = +inf gives -inf).

    >>> float(np.exp(log_normal_sf(0.0))), round(float(log_normal_sf(40.0)), 6)
    (0.5, -804.608442)
    """
    z = np.asarray(z, dtype=np.float64)
    log_tail = math.log(0.5) + _log_erfc(np.abs(z) / math.sqrt(2))  # log Q(|z|)
    return np.where(z >= 0, log_tail, np.log1p(-np.exp(log_tail)))  # Q(z) = 1 - Q(-z)


def normal_kl(mean1, var1, mean2, var2):
    """KL(N(mean1, var1) || N(mean2, var2)) elementwise, in nats:

        1/2 (log(var2 / var1) + var1 / var2 - 1 + (mean1 - mean2)^2 / var2).

    >>> float(normal_kl(0.0, 1.0, 0.0, 1.0)), float(normal_kl(1.0, 1.0, 0.0, 1.0))
    (0.0, 0.5)
    """
    mean1, var1, mean2, var2 = (np.asarray(a, dtype=np.float64) for a in (mean1, var1, mean2, var2))
    return 0.5 * (np.log(var2 / var1) + var1 / var2 - 1 + (mean1 - mean2) ** 2 / var2)


def discretized_gaussian_log_likelihood(x, mean, std):
    """log P(x) per pixel for the 8-bit decoder of Ho et al. (2020), eq. 13, elementwise float64.

    x lies on the grid {-1, -1 + 2/255, ..., 1} (uint8 k -> k / 127.5 - 1); P(x) is the mass of
    N(mean, std^2) on x's bin [x - 1/255, x + 1/255], the bins of -1 and 1 extended to -inf and
    +inf, so the 256 probabilities sum to 1. Each bin's mass is taken from the side of 0 where
    it is a difference of two small tail probabilities, computed in log space: no cancellation
    against 1, no underflow to log 0 (a bin 100 standard deviations away has a finite log P).
    NOTE: Ho et al.'s code uses the tanh approximation of the normal CDF (error ~1e-4) and clamps
    P at 1e-12; here the CDF is Cephes' (see `log_normal_sf`) and nothing is clamped, so every
    value is a proper log-probability.

    >>> grid = np.arange(256) / 127.5 - 1
    >>> p = np.exp(discretized_gaussian_log_likelihood(grid, 0.3, 0.05))
    >>> round(float(p.sum()), 6)
    1.0
    """
    x, mean, std = (np.asarray(a, dtype=np.float64) for a in (x, mean, std))
    half = 1 / 255  # half a bin: the grid step is 2/255
    lo = np.where(x < -1 + half, -np.inf, (x - half - mean) / std)  # standardised bin edges a < b
    hi = np.where(x > 1 - half, np.inf, (x + half - mean) / std)
    with np.errstate(invalid="ignore", divide="ignore"):  # -inf - (-inf) in the branches np.where drops
        # a >= 0: P = Q(a) - Q(b) = Q(a) (1 - Q(b)/Q(a));  b <= 0: P = Q(-b) - Q(-a), the mirror image;
        # a < 0 < b: P = 1 - Q(-a) - Q(b), at least ~ min(b, -a) phi(0)
        upper = log_normal_sf(lo) + np.log1p(-np.exp(log_normal_sf(hi) - log_normal_sf(lo)))
        lower = log_normal_sf(-hi) + np.log1p(-np.exp(log_normal_sf(-lo) - log_normal_sf(-hi)))
        middle = np.log1p(-np.exp(log_normal_sf(-lo)) - np.exp(log_normal_sf(hi)))
    return np.where(lo >= 0, upper, np.where(hi <= 0, lower, middle))


# --- DDPM: the variational bound (Ho et al. 2020, eq. 5) --------------------------------------


def model_variance(schedule, variance="beta"):
    """sigma_t^2 of p_theta(x_{t-1} | x_t) for t = 1..T (index t - 1), float64 (T,).

    "beta": sigma_t^2 = beta_t, Algorithm 2's default (DDPM.sample's variance="beta", Ho et al.'s
    "fixedlarge"); "posterior": sigma_t^2 = beta~_t, the variance of q(x_{t-1} | x_t, x_0)
    ("fixedsmall"). With beta~_t the variance part of every KL vanishes, so the bound is tighter
    for an eps_theta that predicts well (for a poor one the larger beta_t can give the smaller
    bound: the mean error is divided by sigma_t^2).
    NOTE: at t = 1 (the decoder L_0) both use beta~_2, as the released code of Ho et al. and of
    Nichol & Dhariwal does ("to get a better decoder log likelihood"): beta~_1 = 0, and DDPM.sample
    adds no noise at t = 1, so sigma_1 is no sampling choice. A T = 1 model uses beta_1.
    """
    if variance not in ("beta", "posterior"):
        raise ArgumentError(f"variance must be 'beta' or 'posterior', got {variance!r}")
    sigma2 = schedule.betas.copy() if variance == "beta" else schedule.posterior_variance.copy()
    sigma2[0] = schedule.posterior_variance[1] if schedule.T >= 2 else schedule.betas[0]
    return sigma2


def posterior_mean(schedule, x0, x_t, t):
    """mu~_t(x_t, x_0) of q(x_{t-1} | x_t, x_0) (eq. 7), for timesteps t (B,) in 1..T:

        mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t.
    """
    s, i = schedule, np.asarray(t) - 1
    c0 = np.sqrt(s.alpha_bar_prev[i]) * s.betas[i] / (1 - s.alpha_bar[i])
    ct = np.sqrt(s.alphas[i]) * (1 - s.alpha_bar_prev[i]) / (1 - s.alpha_bar[i])
    return _per_image(c0) * x0 + _per_image(ct) * x_t


def model_mean(schedule, x_t, eps, t, clip_x0=True):
    """mu_theta(x_t, t) = mu~_t(x_t, x0_hat), x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (eq. 15).

    Without clipping this is Algorithm 2's (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)
    (eq. 11); with clip_x0, x0_hat is clipped to [-1, 1] first, as DDPM.sample and Ho et al.'s
    released bound (clip_denoised=True) do. Either is a valid p_theta, so either gives a bound.
    """
    i = np.asarray(t) - 1
    x0_hat = (x_t - _per_image(schedule.sqrt_one_minus_alpha_bar[i]) * eps) / _per_image(schedule.sqrt_alpha_bar[i])
    if clip_x0:
        x0_hat = np.clip(x0_hat, -1, 1)
    return posterior_mean(schedule, x0_hat, x_t, t)


def prior_term(schedule, x0):
    """L_T = KL(q(x_T | x_0) || N(0, I)) = KL(N(sqrt(abar_T) x_0, 1 - abar_T) || N(0, 1)) summed, (B,) nats."""
    a = schedule.alpha_bar[-1]
    return _sum_pixels(normal_kl(math.sqrt(a) * x0, 1 - a, 0.0, 1.0))


def vb_term(net, schedule, x0, t, noise, variance="beta", clip_x0=True):
    """One term of eq. 5 per image (B,) in nats, from one network call: L_{t-1} at timesteps t (B,).

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (x0 and noise float64 (B, C, H, W), x0 in
    [-1, 1] on the 8-bit grid). Where t = 1 the term is the decoder's L_0 = -log p_theta(x_0 | x_1),
    a discretised Gaussian with mean mu_theta(x_1, 1) = x0_hat and variance sigma_1^2 (see
    `model_variance`); where t >= 2 it is KL(N(mu~_t, beta~_t) || N(mu_theta, sigma_t^2)) summed
    over the pixels. Call it under no_grad, with `net` in eval mode.
    """
    t = np.asarray(t, dtype=np.int64)
    i = t - 1
    x_t = _per_image(schedule.sqrt_alpha_bar[i]) * x0 + _per_image(schedule.sqrt_one_minus_alpha_bar[i]) * noise
    eps = net(_input(net, x_t), i, None).numpy().astype(np.float64)  # eps_theta(x_t, t)
    mean, var = model_mean(schedule, x_t, eps, t, clip_x0), _per_image(model_variance(schedule, variance)[i])
    out = np.empty(len(t))
    first = t == 1
    if first.any():  # L_0 = -log N_disc(x_0; mu_theta(x_1, 1), sigma_1^2)
        out[first] = -_sum_pixels(discretized_gaussian_log_likelihood(x0[first], mean[first], np.sqrt(var[first])))
    if (~first).any():  # L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))
        rest = ~first
        true_mean = posterior_mean(schedule, x0[rest], x_t[rest], t[rest])
        true_var = _per_image(schedule.posterior_variance[i[rest]])
        out[rest] = _sum_pixels(normal_kl(true_mean, true_var, mean[rest], var[rest]))
    return out


@no_grad()
def ddpm_vb_terms(model, images_uint8, batch_size=100, seed=0, use_ema=True, variance="beta", clip_x0=True):
    """Every term of eq. 5 per image, in nats: a float64 array (N, T + 1), T network calls per batch.

    Column 0 is L_0 (the decoder), column t - 1 is L_{t-1} for t = 2..T, column T is L_T; the
    sum of a row is the bound L on -log p(x_0) (`ddpm_bits_per_dim` divides it by D ln 2). Image i
    draws the noise of x_1, ..., x_T in that order from np.random.default_rng([seed, i]).
    """
    model = _check_ddpm(model)
    x0 = _scale_uint8(images_uint8, model.config.shape)
    batch_size = _check_positive_int(batch_size, "batch_size")
    model_variance(model.schedule, variance)  # checks `variance` before any network call
    T = model.schedule.T
    terms = np.empty((len(x0), T + 1))
    with _sampling_net(model, use_ema) as net:
        for start in range(0, len(x0), batch_size):
            xb = x0[start:start + batch_size]
            gens = _image_generators(seed, start, len(xb))
            for t in range(1, T + 1):
                noise = np.stack([g.standard_normal(xb.shape[1:]) for g in gens])  # (B, C, H, W)
                ts = np.full(len(xb), t)
                terms[start:start + len(xb), t - 1] = vb_term(net, model.schedule, xb, ts, noise, variance, clip_x0)
            terms[start:start + len(xb), T] = prior_term(model.schedule, xb)
    return terms


@no_grad()
def ddpm_bits_per_dim(model, images_uint8, batch_size=100, seed=0, use_ema=True, t_subsample=None,
                      variance="beta", clip_x0=True):
    """The bound of eq. 5 in bits per dimension per image, float64 (N,): L / (D ln 2), D = C H W.

    t_subsample=None sums all T terms (T network calls per batch; see `ddpm_vb_terms`). An int
    n in 1..T-1 gives an unbiased Monte-Carlo ESTIMATE instead, n + 1 network calls per batch:
    L_T and L_0 exactly, and the middle sum as (T - 1)/n sum_j L_{t_j - 1} over n timesteps t_j
    drawn per image uniformly from {2..T} without replacement (E over t_j gives the full sum).
    `variance` ("beta" or "posterior") picks sigma_t^2 (see `model_variance`); `clip_x0` the mean
    (see `model_mean`). The EMA weights are evaluated unless use_ema=False, in eval mode.
    """
    model = _check_ddpm(model)
    T = model.schedule.T
    if t_subsample is None:
        terms = ddpm_vb_terms(model, images_uint8, batch_size, seed, use_ema, variance, clip_x0)
        return terms.sum(1) / (_dims(model) * math.log(2))
    n = _check_positive_int(t_subsample, "t_subsample")
    if n > T - 1:
        raise ArgumentError(f"t_subsample must be in 1..T-1 = 1..{T - 1} (None sums all T terms), got {n}")
    x0, batch_size = _scale_uint8(images_uint8, model.config.shape), _check_positive_int(batch_size, "batch_size")
    model_variance(model.schedule, variance)
    total = np.empty(len(x0))
    with _sampling_net(model, use_ema) as net:
        for start in range(0, len(x0), batch_size):
            xb = x0[start:start + batch_size]
            B, gens = len(xb), _image_generators(seed, start, len(xb))
            ts = np.stack([g.choice(T - 1, size=n, replace=False) + 2 for g in gens])  # (B, n) in 2..T
            est = prior_term(model.schedule, xb)
            for j in range(-1, n):  # j = -1: L_0 at t = 1 for every image
                t = np.ones(B, np.int64) if j < 0 else ts[:, j]
                noise = np.stack([g.standard_normal(xb.shape[1:]) for g in gens])  # (B, C, H, W)
                term = vb_term(net, model.schedule, xb, t, noise, variance, clip_x0)
                est += term if j < 0 else (T - 1) / n * term
            total[start:start + B] = est
    return total / (_dims(model) * math.log(2))


@contextlib.contextmanager
def _sampling_net(model, use_ema):
    """The DDPM's network (the EMA copy, filled from the averages, unless use_ema=False) in eval mode."""
    net = model.ema_net if use_ema else model.net
    if use_ema:
        model.ema.copy_to(net)
    with _eval_mode(net):
        yield net


# --- helpers and argument checks --------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(net):
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


def _image_generators(seed, start, count):
    """One Generator per image, default_rng([seed, i]) for i = start..start+count-1."""
    return [np.random.default_rng([seed, i]) for i in range(start, start + count)]


def _input(net, a):
    """The float64 host array `a` as a network input: cast to the parameters' dtype, on their device
    (the network runs where the model is, a GPU included; the bounds' float64 math stays on the host)."""
    p = next(net.parameters())
    return Tensor(a.astype(p.dtype, copy=False), device=p.device)


def _per_image(a):
    """Per-image coefficients (B,) -> (B, 1, 1, 1), to broadcast over (B, C, H, W)."""
    return np.asarray(a, dtype=np.float64).reshape(-1, 1, 1, 1)


def _sum_pixels(a):
    """(B, C, H, W) -> (B,): the sum over every dimension of an image."""
    return a.reshape(len(a), -1).sum(1)


def _dims(model):
    """D = C H W, the dimensions (sub-pixels) of one image of the DDPM's shape."""
    return math.prod(model.config.shape)


def _scale_uint8(images, shape):
    """uint8 (N, C, H, W), or (N, H, W) when C = 1, for the model's (C, H, W) `shape` -> float64
    (N, C, H, W) in [-1, 1]: 2 (k / 255) - 1, the scaling DDPM.train_step applies to the loader's k / 255."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DTypeError(f"images_uint8 must be uint8 levels 0..255, got dtype {images.dtype}")
    given = images.shape
    if images.ndim == 3 and shape[0] == 1:
        images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    if images.ndim != 4 or images.shape[1:] != tuple(shape) or len(images) < 1:
        grey = f"(N, {shape[1]}, {shape[2]}) or " if shape[0] == 1 else ""
        raise ShapeError(f"images_uint8 must have shape {grey}(N, {', '.join(map(str, shape))}), the (C, H, W) of "
                         f"the model, got {given}")
    return 2 * (images.astype(np.float64) / 255) - 1


def _check_unit_images(images, name, shape=None):
    """A float array (N, C, H, W) with values in [0, 1], from an array or a Tensor; (C, H, W) = `shape` if given."""
    x = images.numpy() if isinstance(images, Tensor) else np.asarray(images)
    if x.dtype.kind != "f":
        raise DTypeError(f"{name} must be float32 or float64 in [0, 1], got dtype {x.dtype}")
    if x.ndim != 4 or len(x) < 1 or (shape is not None and x.shape[1:] != tuple(shape)):
        expected = "(N, C, H, W)" if shape is None else f"(N, {', '.join(map(str, shape))}), the (C, H, W) of the model"
        raise ShapeError(f"{name} must have shape {expected}, got {x.shape}")
    lo, hi = float(x.min()), float(x.max())
    if not (0 <= lo and hi <= 1):
        raise ArgumentError(f"{name} must lie in [0, 1], found values in [{lo}, {hi}]")
    return x


def _check_positive_int(n, name):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ArgumentError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def _check_vae(model):
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a tinygen VAE or ConvVAE, got {type(model).__name__}")
    return model


def _check_ddpm(model):
    if not isinstance(model, DDPM):
        raise TypeError(f"model must be a tinygen DDPM, got {type(model).__name__}")
    return model
