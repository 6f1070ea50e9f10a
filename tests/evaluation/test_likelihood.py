"""Likelihoods: binarisation, the Gaussian pieces against math.erfc and numerical integration, the
VAE's ELBO/IWAE against the model's own loss and the IWAE theorem, and the DDPM bound against
hand-written terms, closed-form expectations for an untrained network and its t-subsampled estimate."""

import math

import numpy as np
import pytest

import tinygen
from tinygen import backend
from tinygen.data import MNIST
from tinygen.errors import ArgumentError, DTypeError, ShapeError
from tinygen.evaluation import likelihood as L
from tinygen.models.diffusion import DDPM, Config
from tinygen.models.vae import VAE, ConvVAE, ConvVAEConfig, VAEConfig, discretized_logistic_log_prob
from tinygen.tensor import Tensor, no_grad

D = 784
TINY_DDPM = dict(T=10, channels=(8, 16), groups=4)
F64 = dict(rtol=1e-12, atol=1e-12)  # two float64 evaluations of one formula, blocked differently


def mnist_test_digits(n):
    """The first n embedded MNIST test digits: uint8 (n, 28, 28) and float64 (n, 1, 28, 28) in [0, 1]."""
    u = MNIST(train=False).images[:n]
    return u, u[:, None].astype(np.float64) / 255


# --- binarisation ------------------------------------------------------------------------------


def test_binarize_is_seeded_has_the_pixel_mean_and_leaves_global_generators_alone():
    p = np.random.default_rng(1).random((50, 1, 28, 28)).astype(np.float32)
    np_state, tg_state = np.random.get_state()[1].copy(), backend.get_rng_state()
    x = L.binarize(p, seed=3)
    assert x.dtype == np.float32 and x.shape == p.shape and set(np.unique(x)) == {0.0, 1.0}
    np.testing.assert_array_equal(x, L.binarize(Tensor(p), seed=3))
    assert not np.array_equal(x, L.binarize(p, seed=4))
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert str(backend.get_rng_state()) == str(tg_state)
    # E[x_bin] = p: the mean over 39,200 pixels within 4 standard errors
    assert abs(x.mean() - p.mean()) < 4 * np.sqrt((p * (1 - p)).mean() / p.size)
    ends = np.concatenate([np.zeros((1, 1, 28, 28)), np.ones((1, 1, 28, 28))])
    np.testing.assert_array_equal(L.binarize(ends), ends)  # 0 and 1 are kept


@pytest.mark.parametrize("bad, error", [
    (np.full((1, 1, 28, 28), 1.5), ArgumentError),
    (np.zeros((1, 1, 28, 28), np.uint8), DTypeError),
    (np.zeros((1, 28, 28)), ShapeError),
])
def test_binarize_rejects_bad_images(bad, error):
    with pytest.raises(error):
        L.binarize(bad)


# --- the Gaussian pieces ---------------------------------------------------------------------


def test_log_normal_sf_against_math_erfc_and_the_far_tail():
    z = np.linspace(-8, 37, 9001)  # math.erfc(z / sqrt 2) underflows a little past z = 38
    ref = np.array([math.log(0.5 * math.erfc(v / math.sqrt(2))) for v in z])
    np.testing.assert_allclose(L.log_normal_sf(z), ref, rtol=1e-14, atol=1e-15)
    # beyond: the asymptotic series log Q = -z^2/2 - log(z sqrt(2 pi)) + log(1 - 1/z^2 + 3/z^4 - 15/z^6 + ...)
    z = np.array([40.0, 100.0, 1e3])
    series = -z**2 / 2 - np.log(z * math.sqrt(2 * math.pi)) + np.log(1 - z**-2 + 3 * z**-4 - 15 * z**-6)
    np.testing.assert_allclose(L.log_normal_sf(z), series, rtol=1e-14, atol=1e-10)
    assert L.log_normal_sf(np.inf) == -np.inf and L.log_normal_sf(-np.inf) == 0


def test_normal_kl_against_numerical_integration():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m1, m2 = rng.normal(size=2)
        v1, v2 = np.exp(rng.normal(size=2))
        s1 = math.sqrt(v1)
        x = np.linspace(m1 - 14 * s1, m1 + 14 * s1, 400_001)
        log_q = -0.5 * (x - m1) ** 2 / v1 - 0.5 * math.log(2 * math.pi * v1)
        log_p = -0.5 * (x - m2) ** 2 / v2 - 0.5 * math.log(2 * math.pi * v2)
        integral = np.trapezoid(np.exp(log_q) * (log_q - log_p), x)
        assert L.normal_kl(m1, v1, m2, v2) == pytest.approx(integral, rel=1e-8, abs=1e-12)


def _bin_mass_reference(x, mean, std):
    """P(bin of x) for N(mean, std^2) with math.erfc, taken on the side where it does not cancel."""
    a = -math.inf if x < -1 + 1e-9 else (x - 1 / 255 - mean) / std
    b = math.inf if x > 1 - 1e-9 else (x + 1 / 255 - mean) / std
    Q = lambda z: 0.5 * math.erfc(z / math.sqrt(2))  # noqa: E731
    if a >= 0:
        return Q(a) - Q(b)
    if b <= 0:
        return Q(-b) - Q(-a)
    return 1 - Q(-a) - Q(b)


GRID = np.arange(256) / 127.5 - 1  # uint8 k -> 2 k / 255 - 1


@pytest.mark.parametrize("mean, std", [(0.0, 0.01), (-0.93, 0.004), (0.5, 0.2), (1.3, 0.05), (-1.0, 1e-3), (0.2, 3.0)])
def test_discretized_gaussian_against_math_erfc_and_quadrature(mean, std):
    got = L.discretized_gaussian_log_likelihood(GRID, mean, std)
    ref = np.array([_bin_mass_reference(x, mean, std) for x in GRID])
    seen = ref > 1e-300
    np.testing.assert_allclose(got[seen], np.log(ref[seen]), rtol=1e-12, atol=1e-12)
    assert np.isfinite(got).all()  # even where erfc underflows, the log-space tails stay finite
    # Simpson's rule on the density over each bin, the two outer bins cut at 40 standard deviations
    pdf = lambda x: np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))  # noqa: E731
    for k in (0, 1, 127, 200, 254, 255):
        lo = min(-1, mean) - 40 * std if k == 0 else GRID[k] - 1 / 255
        hi = max(1, mean) + 40 * std if k == 255 else GRID[k] + 1 / 255
        x = np.linspace(lo, hi, 200_001)
        w = np.full(len(x), 2.0)
        w[1::2], w[0], w[-1] = 4.0, 1.0, 1.0
        mass = (w * pdf(x)).sum() * (x[1] - x[0]) / 3
        if mass > 1e-200:
            assert got[k] == pytest.approx(math.log(mass), abs=1e-9)


@pytest.mark.parametrize("mean", [-3.0, -1.0, -0.999, -0.5, 0.0, 0.37, 1.0, 2.5])
@pytest.mark.parametrize("std", [1e-3, 0.01, 0.3, 10.0])
def test_discretized_gaussian_probabilities_sum_to_one(mean, std):
    p = np.exp(L.discretized_gaussian_log_likelihood(GRID, mean, std))
    assert (p >= 0).all() and abs(p.sum() - 1) < 1e-12


def test_discretized_gaussian_far_tail_is_finite_and_matches_the_tail_probability():
    # the bin of -1 under N(1, 0.01^2): 200 standard deviations away, log Q(a) with a = 199.6
    got = float(L.discretized_gaussian_log_likelihood(-1.0, 1.0, 0.01))
    a = (2 - 1 / 255) / 0.01
    assert got == pytest.approx(-a * a / 2 - math.log(a * math.sqrt(2 * math.pi)), abs=1e-4)


# --- the VAE: ELBO and IWAE --------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_vae():
    """A tiny MLP VAE (hidden 64, J = 8) after 200 Adam steps on binarised embedded MNIST (~2 s)."""
    tinygen.manual_seed(0)
    vae = VAE(VAEConfig(hidden=64, latent_dim=8, binarize=True))
    train = MNIST().images
    rng = np.random.default_rng(0)
    for _ in range(200):
        vae.train_step(Tensor(train[rng.integers(0, len(train), 64)][:, None].astype(np.float32) / 255))
    return vae


@pytest.fixture(scope="module")
def binary_test_digits():
    return L.binarize(mnist_test_digits(100)[1], seed=0)


def test_iwae_bounds_the_elbo_and_rises_with_K(trained_vae, binary_test_digits):
    x = binary_test_digits
    elbo = L.vae_elbo(trained_vae, x).mean()
    iwae = {K: L.vae_iwae(trained_vae, x, K=K).mean() for K in (1, 5, 50)}
    assert iwae[1] < iwae[5] < iwae[50] < 0  # Burda et al. 2016, Theorem 1 (in the mean)
    assert elbo < iwae[5]
    assert -400 < elbo < -100  # a few hundred steps of a tiny VAE: far from -100, far from 784 log 2


def test_iwae_with_one_sample_is_an_elbo_estimate(trained_vae, binary_test_digits):
    # Same seed: the same z, so IWAE(1) - ELBO = KL - (log q(z|x) - log p(z)), a zero-mean difference
    d = L.vae_iwae(trained_vae, binary_test_digits, K=1) - L.vae_elbo(trained_vae, binary_test_digits)
    assert abs(d.mean()) < 4 * d.std() / math.sqrt(len(d))
    assert d.std() > 0


@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_elbo_and_iwae_against_the_model_and_brute_force(prior):
    tinygen.manual_seed(1)
    vae = VAE(VAEConfig(hidden=16, latent_dim=3, prior=prior, pseudo_inputs=6))
    vae.net.double()
    _, x = mnist_test_digits(4)
    x = L.binarize(x, seed=1)
    eps = np.stack([np.random.default_rng([7, i]).standard_normal((5, 3)) for i in range(4)])  # (B, K, J)
    with no_grad():
        recon, kl = vae.negative_elbo_terms(Tensor(x), eps=Tensor(eps[:, 0]))
        np.testing.assert_allclose(L.vae_elbo(vae, x, seed=7), -(recon.numpy() + kl.numpy()), **F64)
        mu, logvar = (a.numpy() for a in vae.encode(Tensor(x)))
        log_w = np.empty((4, 5))
        for k in range(5):
            z = mu + np.exp(0.5 * logvar) * eps[:, k]
            nll, _ = vae.negative_elbo_terms(Tensor(x), eps=Tensor(eps[:, k]))
            log_pz = log_prior(vae, z)
            log_qz = (-0.5 * eps[:, k] ** 2 - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(1)
            log_w[:, k] = -nll.numpy() + log_pz - log_qz
    expected = np.log(np.exp(log_w - log_w.max(1, keepdims=True)).mean(1)) + log_w.max(1)
    np.testing.assert_allclose(L.vae_iwae(vae, x, K=5, seed=7), expected, **F64)


def log_prior(vae, z):
    """log p(z) (B,) for latents z (B, J), by the definition of the model's prior, in float64."""
    if vae.config.prior == "standard":
        return (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(1)
    mu_k, logvar_k = (a.numpy() for a in vae.encode(vae.pseudo_images()))  # (K, J)
    s2 = np.exp(logvar_k)
    dens = np.exp(-((z[:, None] - mu_k) ** 2) / (2 * s2)) / np.sqrt(2 * math.pi * s2)  # (B, K, J)
    return np.log(dens.prod(2).mean(1))  # log (1/K) sum_k N(z; mu_k, sigma_k^2)


@pytest.mark.parametrize("cls, config", [(VAE, VAEConfig(hidden=32, latent_dim=4)),
                                         (VAE, VAEConfig(hidden=32, latent_dim=4, prior="standard")),
                                         (ConvVAE, ConvVAEConfig(channels=(4, 8), latent_dim=4, pseudo_inputs=20))])
def test_chunking_and_batching_do_not_change_the_results(cls, config):
    tinygen.manual_seed(0)
    vae = cls(config)
    vae.net.double()  # float64, so that differently blocked matmuls agree to round-off
    x = L.binarize(mnist_test_digits(10)[1], seed=0)
    whole = L.vae_iwae(vae, x, K=37, batch_size=10, chunk_size=37)
    assert whole.shape == (10,) and whole.dtype == np.float64 and np.isfinite(whole).all()
    np.testing.assert_allclose(L.vae_iwae(vae, x, K=37, batch_size=3, chunk_size=5), whole, **F64)
    np.testing.assert_allclose(L.vae_elbo(vae, x, batch_size=3), L.vae_elbo(vae, x, batch_size=10), **F64)
    assert vae.net.training  # the mode is restored after evaluation


def test_vae_functions_check_their_arguments(trained_vae):
    x = np.zeros((2, 1, 28, 28))
    with pytest.raises(ArgumentError, match="K"):
        L.vae_iwae(trained_vae, x, K=0)
    with pytest.raises(ArgumentError, match="batch_size"):
        L.vae_elbo(trained_vae, x, batch_size=0)
    with pytest.raises(TypeError, match="VAE"):
        L.vae_elbo(DDPM(Config(**TINY_DDPM)), x)
    with pytest.raises(ArgumentError, match=r"\[0, 1\]"):
        L.vae_elbo(trained_vae, x - 1)


def test_logistic_bounds_against_the_exact_likelihood_of_a_one_pixel_vae():
    """A VAE of one grey pixel and one latent: p(x) = integral of N(z; 0, 1) P(x | z) dz by quadrature.
    The 256 levels' p(x) sum to 1 (a distribution over 8-bit images), E[ELBO] < log p(x), and the
    IWAE bound with K = 500 is log p(x) to within its Monte-Carlo error."""
    tinygen.manual_seed(0)
    vae = VAE(VAEConfig(image_size=1, latent_dim=1, hidden=8, prior="standard", likelihood="logistic"))
    vae.net.double()
    with no_grad():
        for p in vae.net.decoder.parameters():  # a decoder whose location and scale vary with z
            p.data *= 3
        z = np.linspace(-10, 10, 20001)
        out = vae.decode(Tensor(z[:, None])).numpy()[:, :, 0, 0]  # (n, 2): μ(z), log s(z)
        levels = Tensor(np.arange(256)[None] / 255)
        log_pxz = discretized_logistic_log_prob(levels, Tensor(out[:, :1]), Tensor(np.maximum(out[:, 1:], -8))).numpy()
    weights = np.exp(-z**2 / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])  # N(z; 0, 1) dz
    p_x = (weights[:, None] * np.exp(log_pxz)).sum(0)  # (256,)
    assert p_x.sum() == pytest.approx(1, abs=1e-9)
    k = np.array([0, 40, 128, 255], np.uint8)
    x = np.repeat(k, 200).reshape(800, 1, 1, 1)  # 200 independent estimates per level
    elbo = L.vae_elbo(vae, x).reshape(4, 200)
    iwae = L.vae_iwae(vae, x, K=500).reshape(4, 200)
    log_p = np.log(p_x[k])
    assert (elbo.mean(1) < log_p).all()
    assert (np.abs(iwae.mean(1) - log_p) < 0.02).all()
    assert (iwae.mean(1) < log_p + 4 * iwae.std(1) / math.sqrt(200)).all()
    np.testing.assert_allclose(L.vae_bits_per_dim(vae, x, K=500), -iwae.reshape(-1) / math.log(2), **F64)


@pytest.mark.parametrize("cls, config", [
    (VAE, VAEConfig(image_channels=3, image_size=8, likelihood="logistic", hidden=8, latent_dim=3, pseudo_inputs=4)),
    (ConvVAE, ConvVAEConfig(image_channels=3, image_size=32, likelihood="logistic", channels=(2,), latent_dim=3,
                            pseudo_inputs=4)),
])
def test_logistic_bounds_of_colour_images(cls, config):
    tinygen.manual_seed(0)
    vae = cls(config)
    vae.net.double()
    shape = (3, config.image_size, config.image_size)
    u = np.random.default_rng(0).integers(0, 256, (5,) + shape).astype(np.uint8)
    x = u / 255
    with no_grad():  # the model's own −ELBO with the noise vae_elbo draws for image i
        eps = np.stack([np.random.default_rng([7, i]).standard_normal(3) for i in range(5)])
        recon, kl = vae.negative_elbo_terms(Tensor(x), eps=Tensor(eps))
    np.testing.assert_allclose(L.vae_elbo(vae, u, seed=7), -(recon.numpy() + kl.numpy()), **F64)
    np.testing.assert_allclose(L.vae_elbo(vae, x.astype(np.float32), seed=7), L.vae_elbo(vae, u, seed=7), **F64)
    whole = L.vae_iwae(vae, u, K=9, batch_size=5, chunk_size=9)
    np.testing.assert_allclose(L.vae_iwae(vae, u, K=9, batch_size=2, chunk_size=4), whole, **F64)
    bpd = L.vae_bits_per_dim(vae, u, K=9)
    np.testing.assert_allclose(bpd, -whole / (np.prod(shape) * math.log(2)), **F64)
    assert (bpd > 0).all()  # a probability of a discrete image is at most 1
    with pytest.raises(ArgumentError, match="8-bit images.*off the grid"):
        L.vae_elbo(vae, np.minimum(x + 0.4 / 255, 1))
    with pytest.raises(ShapeError, match=rf"\(N, 3, {config.image_size}, {config.image_size}\).*\(5, 1, 28, 28\)"):
        L.vae_elbo(vae, np.zeros((5, 1, 28, 28)))


def test_bits_per_dim_of_a_bernoulli_vae_need_binary_images(trained_vae, binary_test_digits):
    with pytest.raises(ArgumentError, match="binary images only"):
        L.vae_bits_per_dim(trained_vae, mnist_test_digits(2)[1])
    bpd = L.vae_bits_per_dim(trained_vae, binary_test_digits[:3], K=5)
    np.testing.assert_allclose(bpd, -L.vae_iwae(trained_vae, binary_test_digits[:3], K=5) / (784 * math.log(2)), **F64)


# --- the DDPM bound -----------------------------------------------------------------------------


def tiny_ddpm(randomize=True, **overrides):
    """A tiny DDPM; `randomize` fills its zero-initialised convolutions so that eps_theta is not 0."""
    tinygen.manual_seed(0)
    model = DDPM(Config(**{**TINY_DDPM, **overrides}))
    if randomize:
        rng = np.random.default_rng(0)
        for _, p in model.net.named_parameters():
            if not p.data.any():
                p.data[...] = 0.1 * rng.standard_normal(p.shape)
        model.ema = tinygen.optim.EMA(model.net, decay=model.config.ema_decay)
    return model


def test_vb_term_against_the_terms_written_out():
    model = tiny_ddpm()
    model.net.double()
    s, net = model.schedule, model.net
    u, _ = mnist_test_digits(3)
    x0 = u[:, None] / 127.5 - 1
    noise = np.random.default_rng(0).standard_normal(x0.shape)
    with no_grad():
        for t in (1, 2, 6, 10):
            ab, beta, alpha = s.alpha_bar[t - 1], s.betas[t - 1], 1 - s.betas[t - 1]
            x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise
            eps = net(Tensor(x_t), np.full(3, t - 1)).numpy()
            mean = (x_t - beta / math.sqrt(1 - ab) * eps) / math.sqrt(alpha)  # Algorithm 2's mean
            got = L.vb_term(net, s, x0, np.full(3, t), noise, variance="beta", clip_x0=False)
            if t == 1:  # -log of the decoder's bin masses, with math.erfc; sigma_1^2 = beta~_2
                std = math.sqrt((1 - s.alpha_bar[0]) / (1 - s.alpha_bar[1]) * s.betas[1])
                ref = [-sum(math.log(_bin_mass_reference(x, m, std))
                            for x, m in zip(x0[b].ravel(), mean[b].ravel())) for b in range(3)]
            else:  # q's mean is Algorithm 2's formula with the true noise; beta~ from its definition
                true_mean = (x_t - beta / math.sqrt(1 - ab) * noise) / math.sqrt(alpha)
                var_q = (1 - s.alpha_bar[t - 2]) / (1 - ab) * beta
                kl = 0.5 * (math.log(beta / var_q) + var_q / beta - 1 + (true_mean - mean) ** 2 / beta)
                ref = kl.reshape(3, -1).sum(1)
            np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_model_mean_without_clipping_is_algorithm_2():
    s = tiny_ddpm(randomize=False).schedule
    rng = np.random.default_rng(0)
    x_t, eps, t = rng.standard_normal((4, 1, 28, 28)), rng.standard_normal((4, 1, 28, 28)), np.array([1, 2, 5, 10])
    c = (s.betas / s.sqrt_one_minus_alpha_bar)[t - 1].reshape(-1, 1, 1, 1)
    expected = (x_t - c * eps) * s.inv_sqrt_alpha[t - 1].reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(L.model_mean(s, x_t, eps, t, clip_x0=False), expected, rtol=1e-12, atol=1e-12)


def test_full_bound_is_the_sum_of_its_terms_finite_and_positive():
    model = tiny_ddpm()
    u, _ = mnist_test_digits(6)
    terms = L.ddpm_vb_terms(model, u, batch_size=4, seed=2)
    bpd = L.ddpm_bits_per_dim(model, u, batch_size=4, seed=2)
    assert terms.shape == (6, 11) and bpd.shape == (6,) and bpd.dtype == np.float64
    np.testing.assert_allclose(bpd, terms.sum(1) / (D * math.log(2)), rtol=1e-15)
    assert np.isfinite(terms).all() and (terms >= 0).all() and (bpd > 0).all()
    # batching does not change an image's value (a float32 network: to its round-off)
    np.testing.assert_allclose(L.ddpm_bits_per_dim(model, u[:, None], batch_size=6, seed=2), bpd, rtol=1e-6)


def test_terms_use_each_images_own_noise_in_order_of_t():
    # column t - 1 is vb_term at t with the t-th draw of image i's generator default_rng([seed, i])
    model = tiny_ddpm()
    model.net.double()  # float64, so that batches of 4 and of 6 agree to round-off
    u, _ = mnist_test_digits(6)
    terms = L.ddpm_vb_terms(model, u, batch_size=4, seed=2, use_ema=False)
    x0 = u[:, None] / 127.5 - 1
    gens = [np.random.default_rng([2, i]) for i in range(6)]
    noise = np.stack([[g.standard_normal((1, 28, 28)) for _ in range(3)][-1] for g in gens])
    with no_grad():
        term3 = L.vb_term(model.net, model.schedule, x0, np.full(6, 3), noise)
    np.testing.assert_allclose(terms[:, 2], term3, rtol=1e-12)
    np.testing.assert_allclose(terms[:, 10], L.prior_term(model.schedule, x0), rtol=1e-15)
    assert model.net.training  # the mode is restored after evaluation


def colour_images(n, shape, seed=0):
    """uint8 (n, C, H, W) images, smooth enough to look like pictures: a random colour per image
    plus a gradient across it."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    ramp = np.linspace(0, 1, h)[:, None] * np.linspace(0, 1, w)[None, :]
    base = rng.random((n, c, 1, 1)) * 0.6 + 0.4 * ramp
    return np.round(255 * base).astype(np.uint8)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 8, 8), (3, 16, 16)])
def test_untrained_network_matches_the_closed_form_expectation(shape):
    # The initial UNet outputs eps_theta = 0, so x0_hat = x_t / sqrt(abar_t) and, unclipped,
    # mu_theta - mu~_t = c_t sqrt(1 - abar_t) / sqrt(abar_t) eps with c_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t):
    #   E[L_{t-1}] = D/2 (log(s2 / beta~) + beta~/s2 - 1 + c_t^2 (1 - abar_t) / abar_t / s2),  s2 = sigma_t^2,
    # and L_T = D/2 (-log(1 - abar_T) + (1 - abar_T) - 1) + abar_T/2 sum x_0^2 exactly, D = C H W sub-pixels.
    model = tiny_ddpm(randomize=False, image_channels=shape[0], image_size=shape[1])
    s, n, D = model.schedule, 16, math.prod(shape)
    u = mnist_test_digits(n)[0] if shape == (1, 28, 28) else colour_images(n, shape)
    x0 = u.reshape(n, *shape) / 127.5 - 1
    for variance in ("beta", "posterior"):
        terms = L.ddpm_vb_terms(model, u, seed=0, variance=variance, clip_x0=False)
        s2 = L.model_variance(s, variance)
        for t in range(2, s.T + 1):
            i = t - 1
            ab, var_q = s.alpha_bar[i], s.posterior_variance[i]
            c = math.sqrt(s.alpha_bar[i - 1]) * s.betas[i] / (1 - ab)
            quad = c**2 * (1 - ab) / ab / s2[i]  # per sub-pixel, times eps^2
            expected = D / 2 * (math.log(s2[i] / var_q) + var_q / s2[i] - 1 + quad)
            stderr = quad / 2 * math.sqrt(2 * D) / math.sqrt(n)  # Var(sum eps^2) = 2 D
            assert abs(terms[:, i].mean() - expected) < 5 * stderr + 1e-9, (variance, t)
        ab = s.alpha_bar[-1]
        prior = D / 2 * (-math.log(1 - ab) + (1 - ab) - 1) + ab / 2 * (x0**2).reshape(n, -1).sum(1)
        np.testing.assert_allclose(terms[:, -1], prior, rtol=1e-12)
    bpd = L.ddpm_bits_per_dim(model, u)
    np.testing.assert_allclose(bpd, L.ddpm_vb_terms(model, u).sum(1) / (D * math.log(2)), rtol=1e-12)
    assert ((1 < bpd) & (bpd < 20)).all()  # about 6.8: near the 8 bits/dim of a uniform model


def test_decoder_term_is_discretised_over_every_sub_pixel():
    # L_0 = -sum over the C H W sub-pixels of log P(x_0 | x_1): with eps_theta = 0 and x_1 drawn from
    # image i's first normal draws, each colour channel of each pixel has its own bin
    model = tiny_ddpm(randomize=False, image_channels=3, image_size=8)
    u = colour_images(3, (3, 8, 8), seed=1)
    x0 = u / 127.5 - 1
    s = model.schedule
    noise = np.stack([np.random.default_rng([4, i]).standard_normal((3, 8, 8)) for i in range(3)])
    x1 = s.sqrt_alpha_bar[0] * x0 + s.sqrt_one_minus_alpha_bar[0] * noise
    mean = np.clip(x1 / s.sqrt_alpha_bar[0], -1, 1)  # mu~_1(x_1, x0_hat) = x0_hat: abar_0 = 1
    std = math.sqrt(L.model_variance(s, "beta")[0])
    expected = -L.discretized_gaussian_log_likelihood(x0, mean, std).reshape(3, -1).sum(1)
    assert expected.shape == (3,)
    np.testing.assert_allclose(L.ddpm_vb_terms(model, u, seed=4)[:, 0], expected, rtol=1e-9)


def test_t_subsample_is_an_unbiased_estimate_of_the_full_sum():
    model = tiny_ddpm()
    u, _ = mnist_test_digits(8)
    full = np.concatenate([L.ddpm_bits_per_dim(model, u, seed=s) for s in range(2)])
    est = np.concatenate([L.ddpm_bits_per_dim(model, u, seed=s, t_subsample=3) for s in range(16)])
    assert np.isfinite(est).all() and (est > 0).all()
    stderr = math.sqrt(est.var() / len(est) + full.var() / len(full))
    assert abs(est.mean() - full.mean()) < 4 * stderr
    assert est.std() > full.std()  # an estimate, noisier than the sum


def test_t_subsample_estimator_is_unbiased_for_fixed_terms(monkeypatch):
    # With L_{t-1} replaced by a function of t alone, the estimator's mean over the draws of t must
    # be L_T + L_0 + sum_{t=2}^T L_{t-1} (no network runs: vb_term is the only caller of it)
    fake = lambda net, schedule, x0, t, noise, variance, clip_x0: np.where(t == 1, 1000.0, t**2.0)  # noqa: E731
    monkeypatch.setattr(L, "vb_term", fake)
    model = tiny_ddpm(randomize=False)
    u, _ = mnist_test_digits(8)
    prior = L.prior_term(model.schedule, u[:, None] / 127.5 - 1)
    n, T = 3, model.schedule.T
    est = np.stack([L.ddpm_bits_per_dim(model, u, seed=s, t_subsample=n) for s in range(1000)]) * D * math.log(2)
    est -= prior + 1000
    values = np.arange(2, T + 1) ** 2.0
    # sampling n of N = T - 1 values without replacement: Var(mean) = (N - n) / (N - 1) var / n
    std = (T - 1) * math.sqrt((T - 1 - n) / (T - 2) * values.var() / n)
    assert abs(est.mean() - values.sum()) < 4 * std / math.sqrt(est.size)
    assert est.std() == pytest.approx(std, rel=0.1)


def test_ddpm_functions_check_their_arguments():
    model = tiny_ddpm(randomize=False)
    u, x = mnist_test_digits(2)
    with pytest.raises(ArgumentError, match="t_subsample"):
        L.ddpm_bits_per_dim(model, u, t_subsample=10)  # T - 1 = 9 at most
    with pytest.raises(ArgumentError, match="t_subsample"):
        L.ddpm_bits_per_dim(model, u, t_subsample=0)
    with pytest.raises(ArgumentError, match="variance"):
        L.ddpm_bits_per_dim(model, u, variance="large")
    with pytest.raises(DTypeError, match="uint8"):
        L.ddpm_bits_per_dim(model, x)
    with pytest.raises(ShapeError, match=r"\(N, 28, 28\) or \(N, 1, 28, 28\).*got \(2, 14, 28\)"):
        L.ddpm_bits_per_dim(model, u[:, :14])
    with pytest.raises(ShapeError, match=r"\(N, 1, 28, 28\).*got \(2, 3, 28, 28\)"):
        L.ddpm_bits_per_dim(model, np.repeat(u[:, None], 3, axis=1))
    rgb = tiny_ddpm(randomize=False, image_channels=3, image_size=8)
    with pytest.raises(ShapeError, match=r"must have shape \(N, 3, 8, 8\), the \(C, H, W\) of the model, got \(2, 8, 8\)"):
        L.ddpm_bits_per_dim(rgb, colour_images(2, (3, 8, 8))[:, 0])  # no (N, H, W) shorthand for colour
    with pytest.raises(TypeError, match="DDPM"):
        L.ddpm_bits_per_dim(VAE(), u)
    assert model.net.training and model.ema_net.training  # untouched by the failed calls
