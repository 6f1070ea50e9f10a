"""VAE and ConvVAE: shapes, parameter counts, the KL term against closed form and Monte Carlo,
the Bernoulli term by hand, the loss and gradients against PyTorch, a short run on real MNIST,
determinism under a seed, and exact resumption from a state dict."""

import numpy as np
import pytest

import tinygen
from helpers import random_batches, requires_torch
from tinygen.errors import ArgumentError, ShapeError
from tinygen.models.vae import VAE, ConvVAE, ConvVAEConfig, VAEConfig, bernoulli_nll, gaussian_kl

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
@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_mlp_vae_loss_and_gradients_match_torch(prior):
    import torch

    tinygen.set_default_dtype(np.float64)  # restored by conftest
    tinygen.manual_seed(0)
    vae = VAE(VAEConfig(prior=prior, pseudo_inputs=7))
    if prior == "vamp":  # pseudo-images partly outside [0, 1], so that the clamp acts
        vae.net.pseudo_inputs.data[...] = np.random.default_rng(0).uniform(-0.2, 1.2, (7, 1, 28, 28))
    x = tinygen.rand(8, 1, 28, 28)
    eps = tinygen.randn(8, 20)
    recon, kl = vae.negative_elbo_terms(x, eps)
    loss = (recon + kl).mean()
    loss.backward()

    w = {name: torch.tensor(p.numpy(), requires_grad=True) for name, p in vae.net.named_parameters()}
    tx, teps = torch.tensor(x.numpy()).reshape(8, 784), torch.tensor(eps.numpy())
    lin = lambda v, name: torch.nn.functional.linear(v, w[name + ".weight"], w[name + ".bias"])  # noqa: E731

    def encode(v):
        h = torch.relu(lin(v, "encoder.1"))
        return lin(h, "to_mu"), lin(h, "to_logvar")

    mu, logvar = encode(tx)
    z = mu + torch.exp(0.5 * logvar) * teps
    logits = lin(torch.relu(lin(z, "decoder.0")), "decoder.2")
    t_recon = torch.nn.functional.binary_cross_entropy_with_logits(logits, tx, reduction="none").sum(1)
    if prior == "standard":
        t_kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), 1)
    else:  # log q(z | x) − log (1/K) Σ_k q(z | u_k), with torch's own Normal
        normal = torch.distributions.Normal
        mu_k, logvar_k = encode(torch.clamp(w["pseudo_inputs"], 0, 1).reshape(7, 784))
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
