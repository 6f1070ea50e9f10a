"""VAE and ConvVAE: shapes, parameter counts, the KL term against closed form and Monte Carlo,
the Bernoulli term by hand, the loss and gradients against PyTorch, a short run on real MNIST,
determinism under a seed, exact resumption from a state dict; every shape (C in {1, 3}, 28, 32
and 64 pixels), the discretised logistic (normalised, exact in the far tail, gradient-checked),
and checkpoints written before colour images."""

import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygen
from helpers import assert_computes_as_saved, gradcheck, random_batches, requires_torch
from tinygen.errors import ArgumentError, ShapeError
from tinygen.models.vae import (VAE, ConvVAE, ConvVAEConfig, VAEConfig, bernoulli_nll, discretized_logistic_log_prob,
                                gaussian_kl)

MODELS = [VAE, ConvVAE]


@pytest.mark.parametrize("cls, latent_dim", [(VAE, 20), (ConvVAE, 16)])
def test_shapes_and_sample_range(cls, latent_dim):
    tinygen.manual_seed(0)
    vae = cls()
    mu, logvar = vae.encode(tinygen.rand(5, 1, 28, 28))
    assert mu.shape == logvar.shape == (5, latent_dim)
    assert vae.decode(mu).shape == (5, 1, 28, 28)
    samples = vae.sample(6)
    assert samples.shape == (6, 1, 28, 28) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1
    # decoder means, not binary draws
    assert len(np.unique(samples)) > 2
    elbo = vae.elbo(tinygen.rand(3, 1, 28, 28))
    assert elbo.shape == (3,) and elbo.dtype == np.float64 and (elbo < 0).all()


def test_parameter_counts():
    linear = lambda i, o: i * o + o  # noqa: E731
    assert VAE(VAEConfig(prior="standard")).net.num_parameters() == (
        linear(784, 400) + 2 * linear(400, 20) + linear(20, 400) + linear(400, 784)
    )  # 652,824, as the PyTorch VAE example
    conv = lambda i, o: i * o * 4 * 4 + o  # noqa: E731  weights and bias of a 4x4 (transposed) conv
    assert ConvVAE(ConvVAEConfig(prior="standard")).net.num_parameters() == (
        conv(1, 32) + conv(32, 64) + 2 * linear(64 * 7 * 7, 16)  # encoder and the μ, log σ² heads
        + linear(16, 64 * 7 * 7) + conv(64, 32) + conv(32, 1)  # decoder
    )
    for cls in MODELS:  # the VampPrior adds its K pseudo-images
        K = cls.Config().pseudo_inputs
        assert cls().net.num_parameters() == cls(cls.Config(prior="standard")).net.num_parameters() + K * 784


def test_kl_against_closed_form_and_monte_carlo():
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(2, 3)), rng.normal(scale=0.5, size=(2, 3))
    kl = gaussian_kl(tinygen.tensor(mu), tinygen.tensor(logvar)).numpy()
    # KL(N(m, s²) ‖ N(0, 1)) = log(1 / s) + (s² + m²) / 2 − 1/2 per dimension
    s = np.exp(0.5 * logvar)
    np.testing.assert_allclose(kl, (np.log(1 / s) + (s**2 + mu**2) / 2 - 0.5).sum(1), rtol=1e-12)
    # Monte Carlo: E_q[log q(z) − log p(z)] with z ~ q
    n = 200_000
    z = mu[:, None] + s[:, None] * rng.standard_normal((2, n, 3))
    log_q = (-0.5 * ((z - mu[:, None]) / s[:, None]) ** 2 - np.log(s[:, None]) - 0.5 * np.log(2 * np.pi)).sum(2)
    log_p = (-0.5 * z**2 - 0.5 * np.log(2 * np.pi)).sum(2)
    terms = log_q - log_p
    stderr = terms.std(1) / np.sqrt(n)
    assert (np.abs(terms.mean(1) - kl) < 4 * stderr).all()


def test_bernoulli_nll_by_hand():
    rng = np.random.default_rng(1)
    logits, x = rng.normal(size=(2, 1, 28, 28)), rng.random((2, 1, 28, 28))
    p = 1 / (1 + np.exp(-logits))
    expected = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum((1, 2, 3))
    np.testing.assert_allclose(bernoulli_nll(tinygen.tensor(logits), tinygen.tensor(x)).numpy(), expected, rtol=1e-10)


@requires_torch
@pytest.mark.parametrize("prior, likelihood, shape", [("standard", "bernoulli", (1, 28, 28)),
                                                      ("vamp", "bernoulli", (1, 28, 28)),
                                                      ("vamp", "logistic", (3, 8, 8))])
def test_mlp_vae_loss_and_gradients_match_torch(prior, likelihood, shape):
    import torch

    tinygen.set_default_dtype(np.float64)  # restored by conftest
    tinygen.manual_seed(0)
    D = int(np.prod(shape))
    vae = VAE(VAEConfig(image_channels=shape[0], image_size=shape[1], prior=prior, pseudo_inputs=7,
                        likelihood=likelihood))
    if prior == "vamp":  # pseudo-images partly outside [0, 1], so that the clamp acts
        vae.net.pseudo_inputs.data[...] = np.random.default_rng(0).uniform(-0.2, 1.2, (7,) + shape)
    x = tinygen.rand(8, *shape)
    if likelihood == "logistic":  # 8-bit levels, the two edge bins among them
        x = tinygen.tensor(np.concatenate([np.zeros((1,) + shape), np.ones((1,) + shape),
                                           np.random.default_rng(1).integers(0, 256, (6,) + shape) / 255]))
    eps = tinygen.randn(8, 20)
    recon, kl = vae.negative_elbo_terms(x, eps)
    loss = (recon + kl).mean()
    loss.backward()

    w = {name: torch.tensor(p.numpy(), requires_grad=True) for name, p in vae.net.named_parameters()}
    tx, teps = torch.tensor(x.numpy()).reshape(8, D), torch.tensor(eps.numpy())
    lin = lambda v, name: torch.nn.functional.linear(v, w[name + ".weight"], w[name + ".bias"])  # noqa: E731

    def encode(v):
        h = torch.relu(lin(v, "encoder.1"))
        return lin(h, "to_mu"), lin(h, "to_logvar")

    mu, logvar = encode(tx)
    z = mu + torch.exp(0.5 * logvar) * teps
    out = lin(torch.relu(lin(z, "decoder.0")), "decoder.2")
    if likelihood == "bernoulli":
        t_recon = torch.nn.functional.binary_cross_entropy_with_logits(out, tx, reduction="none").sum(1)
    else:  # the logistic's mass on each bin, its CDF differenced as PixelCNN++'s code does
        mean, log_s = out.reshape(8, 2, shape[0], -1)[:, 0].reshape(8, D), out.reshape(8, 2, shape[0], -1)[:, 1]
        s = torch.exp(torch.clamp(log_s.reshape(8, D), min=-8))
        upper = torch.where(tx < 1, torch.sigmoid((tx + 0.5 / 255 - mean) / s), torch.ones_like(tx))
        lower = torch.where(tx > 0, torch.sigmoid((tx - 0.5 / 255 - mean) / s), torch.zeros_like(tx))
        t_recon = -torch.log(upper - lower).sum(1)
    if prior == "standard":
        t_kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), 1)
    else:  # log q(z | x) − log (1/K) Σ_k q(z | u_k), with torch's own Normal
        normal = torch.distributions.Normal
        mu_k, logvar_k = encode(torch.clamp(w["pseudo_inputs"], 0, 1).reshape(7, D))
        log_q = normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
        log_q_k = normal(mu_k[None], torch.exp(0.5 * logvar_k[None])).log_prob(z[:, None]).sum(2)  # (8, 7)
        t_kl = log_q - (torch.logsumexp(log_q_k, 1) - np.log(7))
    t_loss = (t_recon + t_kl).mean()
    t_loss.backward()

    np.testing.assert_allclose(recon.numpy(), t_recon.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(kl.numpy(), t_kl.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert loss.item() == pytest.approx(t_loss.item(), rel=1e-12)
    for name, p in vae.net.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), w[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_train_step_reports_the_elbo_terms():
    tinygen.manual_seed(0)
    vae = VAE()
    x = tinygen.rand(4, 1, 28, 28)
    tinygen.manual_seed(1)
    recon, kl = vae.negative_elbo_terms(x)  # before the update
    tinygen.manual_seed(1)
    elbo = vae.elbo(x)
    np.testing.assert_allclose(elbo, -(recon.numpy() + kl.numpy()), rtol=1e-6)
    tinygen.manual_seed(1)
    out = vae.train_step(x)
    assert out["recon"] == pytest.approx(recon.mean().item(), rel=1e-6)
    assert out["kl"] == pytest.approx(kl.mean().item(), rel=1e-6)
    assert out["loss"] == pytest.approx(out["recon"] + out["kl"], rel=1e-6)
    assert out["loss"] == pytest.approx(-elbo.mean(), rel=1e-6)


@pytest.mark.parametrize("cls, batch_size, steps", [(VAE, 64, 150), (ConvVAE, 32, 60)])
def test_loss_falls_on_mnist(mnist, cls, batch_size, steps):
    tinygen.manual_seed(0)
    vae = cls(cls.Config(batch_size=batch_size))
    held_out = tinygen.Tensor(mnist[-200:])
    tinygen.manual_seed(1)
    before = -vae.elbo(held_out).mean()
    history = [vae.train_step(x) for x in random_batches(mnist[:-200], batch_size, steps)]
    losses = np.array([h["loss"] for h in history])
    assert np.isfinite(losses).all()
    assert before > 400  # an untrained decoder: about 784 log 2 = 543 nats minus what the grey levels give
    assert losses[-10:].mean() < 0.7 * losses[:5].mean(), f"loss {losses[:5].mean():.1f} -> {losses[-10:].mean():.1f}"
    tinygen.manual_seed(1)
    after = -vae.elbo(held_out).mean()
    assert after < 0.7 * before
    # the KL is >= 0; the VampPrior's one-sample estimate of it only in expectation
    assert np.mean([h["kl"] for h in history]) > 0
    if vae.config.prior == "standard":
        assert all(h["kl"] >= 0 for h in history)


def test_binarize_draws_binary_targets():
    tinygen.manual_seed(0)
    vae = VAE(VAEConfig(binarize=True))
    x = vae._targets(tinygen.full((64, 1, 28, 28), 0.3))
    values = x.numpy()
    assert set(np.unique(values)) == {0.0, 1.0}
    assert abs(values.mean() - 0.3) < 0.01  # x_bin ~ Bernoulli(0.3)


@pytest.mark.parametrize("cls", MODELS)
def test_same_seed_same_losses(cls):
    runs = []
    for _ in range(2):
        tinygen.manual_seed(3)
        vae = cls()
        x = tinygen.rand(8, 1, 28, 28)
        runs.append([vae.train_step(x) for _ in range(2)] + [vae.sample(2).tolist()])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("cls", MODELS)
def test_resume_from_state_dict_is_exact(cls, tmp_path):
    tinygen.manual_seed(0)
    x = [tinygen.rand(8, 1, 28, 28) for _ in range(5)]
    original = cls()
    for batch in x[:3]:
        original.train_step(batch)
    path = tmp_path / "vae.npz"
    tinygen.save(original.state_dict(), path)

    tinygen.manual_seed(99)
    restored = cls()
    restored.load_state_dict(tinygen.load(path))
    assert restored.step == 3
    for batch in x[3:]:
        tinygen.manual_seed(7)
        expected = original.train_step(batch)
        tinygen.manual_seed(7)
        assert restored.train_step(batch) == expected


def test_vamp_prior_against_numpy():
    tinygen.set_default_dtype(np.float64)  # restored by conftest
    tinygen.manual_seed(0)
    vae = VAE(VAEConfig(hidden=16, latent_dim=3, pseudo_inputs=5))
    u = np.clip(vae.net.pseudo_inputs.numpy(), 0, 1)
    np.testing.assert_array_equal(vae.pseudo_images().numpy(), u)
    mu_k, logvar_k = (a.numpy() for a in vae.encode(tinygen.tensor(u)))  # (5, 3) each
    z = np.random.default_rng(0).normal(size=(4, 3))
    # (1/K) Σ_k Π_j N(z_j; μ_kj, σ_kj²), written out
    s2 = np.exp(logvar_k)
    dens = np.exp(-((z[:, None] - mu_k) ** 2) / (2 * s2)) / np.sqrt(2 * np.pi * s2)  # (4, 5, 3)
    expected = np.log(dens.prod(2).mean(1))
    np.testing.assert_allclose(vae.log_prior(tinygen.tensor(z)).numpy(), expected, rtol=1e-12)
    standard = VAE(VAEConfig(hidden=16, latent_dim=3, prior="standard"))
    np.testing.assert_allclose(standard.log_prior(tinygen.tensor(z)).numpy(),
                               (-0.5 * z**2 - 0.5 * np.log(2 * np.pi)).sum(1), rtol=1e-12)
    # the KL term: log q(z | x) − log p(z) at z = μ + σ ε
    x, eps = tinygen.rand(4, 1, 28, 28), np.random.default_rng(1).normal(size=(4, 3))
    _, kl = vae.negative_elbo_terms(x, tinygen.tensor(eps))
    mu, logvar = (a.numpy() for a in vae.encode(x))
    z = mu + np.exp(0.5 * logvar) * eps
    log_q = (-0.5 * eps**2 - 0.5 * logvar - 0.5 * np.log(2 * np.pi)).sum(1)
    np.testing.assert_allclose(kl.numpy(), log_q - vae.log_prior(tinygen.tensor(z)).numpy(), rtol=1e-12)


def test_vamp_samples_decode_a_pseudo_inputs_posterior():
    tinygen.manual_seed(0)
    vae = VAE(VAEConfig(hidden=16, latent_dim=3, pseudo_inputs=5))
    tinygen.manual_seed(4)
    samples = vae.sample(6)
    tinygen.manual_seed(4)
    k = tinygen.backend.generator().integers(0, 5, 6)  # the order of the draws: k, then ε
    eps = tinygen.randn(6, 3).numpy()
    mu_k, logvar_k = (a.numpy() for a in vae.encode(vae.pseudo_images()))
    z = mu_k[k] + np.exp(0.5 * logvar_k[k]) * eps
    np.testing.assert_allclose(samples, vae.decode(tinygen.tensor(z)).sigmoid().numpy(), rtol=1e-6)


def test_errors_name_the_problem():
    vae = VAE()
    with pytest.raises(ShapeError, match=r"\(B, 1, 28, 28\).*\(4, 784\)"):
        vae.train_step(tinygen.rand(4, 784))
    with pytest.raises(ArgumentError, match=r"\[0, 1\]"):
        vae.train_step(tinygen.randn(4, 1, 28, 28) * 3)
    with pytest.raises(ArgumentError, match="positive integer"):
        vae.sample(-1)
    with pytest.raises(ArgumentError, match="VAEConfig"):
        VAE(ConvVAEConfig())
    with pytest.raises(ArgumentError, match="prior must be one of.*'gaussian'"):
        VAE(VAEConfig(prior="gaussian"))
    with pytest.raises(ArgumentError, match="pseudo_inputs, got 0"):
        VAE(VAEConfig(pseudo_inputs=0))
    with pytest.raises(ArgumentError, match="keys"):
        vae.load_state_dict({"net": {}})


# --- any image shape ---------------------------------------------------------------------------


@settings(deadline=None, max_examples=12)
@given(cls=st.sampled_from(MODELS), channels=st.sampled_from([1, 3]), size=st.sampled_from([28, 32, 64]),
       likelihood=st.sampled_from(["bernoulli", "logistic"]), prior=st.sampled_from(["vamp", "standard"]))
def test_every_vae_trains_at_every_shape(cls, channels, size, likelihood, prior):
    small = dict(hidden=8) if cls is VAE else dict(channels=(2, 3))
    config = cls.Config(image_channels=channels, image_size=size, latent_dim=2, prior=prior, pseudo_inputs=3,
                        likelihood=likelihood, batch_size=2, **small)
    tinygen.manual_seed(0)
    vae = cls(config)
    x = tinygen.rand(2, channels, size, size)
    losses = [vae.train_step(x) for _ in range(2)]
    assert all(np.isfinite(list(h.values())).all() for h in losses)
    out = vae.decode(tinygen.zeros(1, 2))
    assert out.shape == (1, channels * (2 if likelihood == "logistic" else 1), size, size)
    samples = vae.sample(3)
    assert samples.shape == (3, channels, size, size) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1
    assert (vae.elbo(x) < 0).all()  # log p(x | z) <= 0 for both likelihoods on their targets


def test_conv_vae_stages_per_size():
    """28: 28 -> 14 -> 7 with (c1, c2); 32: ... -> 4 with 2 c2 added; 64: ... -> 4 with 2 c2 and 4 c2."""
    for size, widths, last in [(28, [3, 5], 7), (32, [3, 5, 10], 4), (64, [3, 5, 10, 20], 4)]:
        vae = ConvVAE(ConvVAEConfig(image_channels=3, image_size=size, channels=(3, 5), prior="standard"))
        convs = [m for m in vae.net.encoder if isinstance(m, tinygen.nn.Conv2d)]
        assert [m.weight.shape[0] for m in convs] == widths and convs[0].weight.shape[1] == 3
        assert vae.net.to_mu.weight.shape == (16, widths[-1] * last * last)
        h = vae.net.encoder[:-1](tinygen.zeros(1, 3, size, size))
        assert h.shape == (1, widths[-1], last, last)
    # channels given for every stage are used as they are
    vae = ConvVAE(ConvVAEConfig(image_size=32, channels=(2, 4, 6), prior="standard"))
    assert [m.weight.shape[0] for m in vae.net.encoder if isinstance(m, tinygen.nn.Conv2d)] == [2, 4, 6]


def test_parameter_counts_at_32x32x3():
    linear = lambda i, o: i * o + o  # noqa: E731
    conv = lambda i, o: i * o * 4 * 4 + o  # noqa: E731
    D = 3 * 32 * 32
    mlp = VAE(VAEConfig(image_channels=3, image_size=32, likelihood="logistic", prior="standard"))
    assert mlp.net.num_parameters() == (
        linear(D, 400) + 2 * linear(400, 20) + linear(20, 400) + linear(400, 2 * D)  # μ and log s per sub-pixel
    )  # 3,717,384
    assert ConvVAE(ConvVAEConfig(image_channels=3, image_size=32, prior="standard")).net.num_parameters() == (
        conv(3, 32) + conv(32, 64) + conv(64, 128) + 2 * linear(128 * 4 * 4, 16)
        + linear(16, 128 * 4 * 4) + conv(128, 64) + conv(64, 32) + conv(32, 3)
    )


# --- the discretised logistic ------------------------------------------------------------------

GRID = np.arange(256) / 255  # the 8-bit levels k / 255


@settings(deadline=None, max_examples=30)
@given(mean=st.floats(-0.5, 1.5), log_scale=st.floats(-7.5, 1.0))
def test_discretized_logistic_sums_to_one_and_is_the_bin_mass(mean, log_scale):
    log_p = discretized_logistic_log_prob(tinygen.tensor(GRID), mean, tinygen.tensor(np.full(256, log_scale))).numpy()
    assert log_p.dtype == np.float64 and (log_p <= 0).all()
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-12)
    # the mass of Logistic(μ, s) on each bin, the CDF σ differenced directly
    s, half = np.exp(log_scale), 0.5 / 255
    cdf = lambda t: 1 / (1 + np.exp(-(t - mean) / s))  # noqa: E731
    with np.errstate(over="ignore"):  # exp(+large) = inf gives σ = 0, as it should
        upper = np.where(GRID < 1, cdf(GRID + half), 1.0)
        lower = np.where(GRID > 0, cdf(GRID - half), 0.0)
    np.testing.assert_allclose(np.exp(log_p), upper - lower, rtol=1e-9, atol=1e-15)


def test_discretized_logistic_far_tail_is_finite_and_exact():
    # 0.8 / e^-6 ≈ 323 scales from μ: the bin mass is ~e^-323, a difference of two ones in float64
    x, mean, log_scale = tinygen.tensor(np.array([0.9])), 0.1, tinygen.tensor(np.array([-6.0]))
    log_p = discretized_logistic_log_prob(x, mean, log_scale).item()
    s = np.exp(-6.0)
    a, b = (0.9 - 0.5 / 255 - mean) / s, (0.9 + 0.5 / 255 - mean) / s
    # σ(b) − σ(a) = σ(−a) − σ(−b) = e^-a (1 − e^(a−b)) (1 + O(e^-a))
    assert log_p == pytest.approx(-a + np.log1p(-np.exp(a - b)), rel=1e-12)


def test_discretized_logistic_gradients():
    rng = np.random.default_rng(0)
    x = np.concatenate([[0.0, 1.0], rng.integers(0, 256, 10) / 255])  # both edge bins and inner ones
    mean, log_scale = rng.uniform(-0.2, 1.2, 12), rng.uniform(-6, 0.5, 12)
    gradcheck(lambda m, s: discretized_logistic_log_prob(x, m, s), mean, log_scale)
    # the whole reconstruction term of a logistic VAE, the clamp of log s included (away from its kink)
    vae = VAE(VAEConfig(image_channels=2, image_size=3, likelihood="logistic", prior="standard", hidden=4))
    targets = rng.integers(0, 256, (2, 2, 3, 3)) / 255
    out = np.concatenate([rng.uniform(0, 1, (2, 2, 3, 3)), rng.uniform(-7.5, 0, (2, 2, 3, 3))], axis=1)
    gradcheck(lambda o: vae.reconstruction_nll(o, tinygen.tensor(targets)), out)


def test_logistic_vae_trains_on_the_8_bit_grid_and_samples_its_locations():
    tinygen.manual_seed(0)
    vae = VAE(VAEConfig(image_channels=3, image_size=4, likelihood="logistic", hidden=8, latent_dim=2,
                        pseudo_inputs=3))
    x = tinygen.tensor(np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32))
    targets = vae._targets(x).numpy()
    np.testing.assert_array_equal(targets, (np.rint(x.numpy() * 255) / 255).astype(np.float32))
    tinygen.manual_seed(1)
    recon, kl = vae.negative_elbo_terms(vae._targets(x))
    tinygen.manual_seed(1)
    assert vae.train_step(x)["recon"] == pytest.approx(recon.mean().item(), rel=1e-6)
    # the decoder mean: the locations μ (the first C channels) clipped to [0, 1]; log s is not used
    out = np.random.default_rng(1).uniform(-1, 2, (2, 6, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(vae.decoder_mean(tinygen.tensor(out)).numpy(), np.clip(out[:, :3], 0, 1))
    samples = vae.sample(5)
    assert samples.shape == (5, 3, 4, 4) and samples.min() >= 0 and samples.max() <= 1


# --- checkpoints written before colour images -------------------------------------------------

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "gan_vae_before_issue23.ckpt")


@pytest.mark.parametrize("name", ["vae", "convvae"])
def test_checkpoint_of_before_loads_and_computes_the_same(name):
    """tests/models/data/gan_vae_before_issue23.ckpt holds tiny models saved by the code of commit
    1301d87 (before image_channels/image_size), each with one seeded sample and the losses of one
    seeded step after saving. Rebuilt from their saved settings, they load and compute the same."""
    assert_computes_as_saved(MODELS[0] if name == "vae" else MODELS[1], tinygen.load(FIXTURE)[name])


def test_shape_settings_are_checked():
    with pytest.raises(ArgumentError, match="image_size must be one of 28, 32, 64.*got 48"):
        ConvVAEConfig(image_size=48)
    with pytest.raises(ArgumentError, match="image_channels must be a positive integer, got 0"):
        VAEConfig(image_channels=0)
    with pytest.raises(ArgumentError, match=r"channels must be 1 to 2 positive integers at 28 pixels.*\(4, 8, 16\)"):
        ConvVAEConfig(channels=(4, 8, 16))
    with pytest.raises(ArgumentError, match="likelihood must be one of"):
        VAEConfig(likelihood="gaussian")
    with pytest.raises(ArgumentError, match="binarize=True"):
        ConvVAEConfig(likelihood="logistic", binarize=True)
    vae = VAE(VAEConfig(image_channels=3, image_size=8, hidden=4))
    with pytest.raises(ShapeError, match=r"\(B, 3, 8, 8\).*\(2, 1, 28, 28\)"):
        vae.train_step(tinygen.rand(2, 1, 28, 28))
