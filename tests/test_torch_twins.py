"""The PyTorch twins that `benchmarks.train_step` times do the same work as the tinygen models.

In float64, with the weights copied (`benchmarks.torch_twins`) and the same random draws, each
twin's networks give tinygen's outputs (default configs, as benchmarked), and two training steps
(small configs) give the same losses and leave the same weights, BatchNorm statistics and EMA:
on MNIST's 1x28x28 and on colour 3x32x32 images (the VAEs with the discretised logistic, the
DDPM with attention and classes), where the twin's guided DDIM and DPM-Solver++(2M) samplers
also draw tinygen's images. Skipped where PyTorch is not installed.
"""

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tinygen  # noqa: E402  (after the skip)
from benchmarks import torch_twins  # noqa: E402
from helpers import assert_close  # noqa: E402
from tinygen import backend  # noqa: E402
from tinygen.kernels import diffusion as noise_kernels  # noqa: E402
from tinygen.models import DDPM, DCGAN, MLPGAN, VAE, ConvVAE  # noqa: E402
from tinygen.models.diffusion import Config as DDPMConfig  # noqa: E402
from tinygen.models.gan import DCGANConfig, GANConfig  # noqa: E402
from tinygen.models.vae import ConvVAEConfig, VAEConfig  # noqa: E402
from tinygen.tensor import Tensor  # noqa: E402

B = 4  # batch size: at least 2 for BatchNorm
COLOUR = dict(image_channels=3, image_size=32)  # the shape of the emoji set


@pytest.fixture(autouse=True)
def float64():
    """float64 tinygen models, seeded (conftest puts the default dtype back)."""
    tinygen.set_default_dtype(np.float64)
    tinygen.manual_seed(0)


def as_array(x):
    return x.numpy() if isinstance(x, Tensor) else x.detach().numpy()


def randomise_zero_weights(model, rng):
    """Give the zero-initialised layers (the UNet's output conv, each residual block's second conv,
    each attention block's projection) weights, so that every block changes what it computes."""
    for p in model.net.parameters():
        if not p.data.any():
            p.data[...] = rng.standard_normal(p.shape) * 0.1


# --- the networks, default configs --------------------------------------------------------------


@pytest.mark.parametrize("shape", [{}, COLOUR], ids=["mnist", "colour"])
@pytest.mark.parametrize("cls", [MLPGAN, DCGAN])
def test_gan_networks_match(cls, shape):
    model, rng = cls(cls.Config(**shape)), np.random.default_rng(1)
    twin = torch_twins.twin(model)
    z, x = rng.standard_normal((B, model.config.latent_dim)), rng.random((B, *model.image_shape))
    assert_close(as_array(twin.generator(torch.from_numpy(z))), model.generator(Tensor(z)), "G(z)")
    assert_close(as_array(twin.discriminator(torch.from_numpy(x))), model.discriminator(Tensor(x)), "D(x)")


@pytest.mark.parametrize("shape", [{}, dict(COLOUR, likelihood="logistic")], ids=["mnist", "colour"])
@pytest.mark.parametrize("cls", [VAE, ConvVAE])
def test_vae_networks_match(cls, shape):
    model, rng = cls(cls.Config(**shape)), np.random.default_rng(1)
    twin = torch_twins.twin(model)
    x, z = rng.random((B, *model.image_shape)), rng.standard_normal((B, model.config.latent_dim))
    for ours, theirs, what in zip(model.encode(Tensor(x)), twin.encode(torch.from_numpy(x)), ("mu", "logvar")):
        assert_close(as_array(theirs), ours, what)
    assert_close(as_array(twin.decode(torch.from_numpy(z))), model.decode(Tensor(z)), "decoder logits")


UNETS = {
    "mnist": lambda: DDPMConfig(),
    "mnist-classes": lambda: DDPMConfig(num_classes=10),
    # attention at 16x16 and at the lowest resolution 8x8 (so the middle block's too), two heads
    "colour-attention-classes": lambda: DDPMConfig.for_shape(3, 32, channels=(8, 16, 16), groups=4,
                                                             attn_resolutions=(16, 8), attn_heads=2, num_classes=10),
}


@pytest.mark.parametrize("name", UNETS)
def test_unet_matches(name):
    model, rng = DDPM(UNETS[name]()), np.random.default_rng(1)
    num_classes = model.config.num_classes
    randomise_zero_weights(model, rng)  # else the output conv makes every output 0, each attention the identity
    twin = torch_twins.twin(model)
    x, t = rng.standard_normal((B, *model.config.shape)), np.array([0, 1, 500, model.config.T - 1])
    labels = None if num_classes is None else np.array([0, 3, 9, num_classes])  # the last: the null class
    ours = model.net(Tensor(x), t, labels)
    theirs = twin.net(torch.from_numpy(x), torch.from_numpy(t), None if labels is None else torch.from_numpy(labels))
    assert np.abs(ours.numpy()).max() > 1e-3
    assert_close(as_array(theirs), ours, "eps_theta(x_t, t)")


# --- the training steps, small configs ----------------------------------------------------------

SMALL = {
    "gan": lambda: MLPGAN(GANConfig(latent_dim=8, g_hidden=(16, 32), d_hidden=(32, 16))),
    "dcgan": lambda: DCGAN(DCGANConfig(latent_dim=8, width=4, ema_decay=0.5)),
    "vae": lambda: VAE(VAEConfig(hidden=32, latent_dim=4, pseudo_inputs=5)),
    "vae-standard": lambda: VAE(VAEConfig(hidden=32, latent_dim=4, prior="standard")),
    "convvae": lambda: ConvVAE(ConvVAEConfig(channels=(4, 8), latent_dim=4, pseudo_inputs=5)),
    "ddpm": lambda: DDPM(DDPMConfig(T=50, channels=(4, 8, 8), groups=4, warmup_steps=2)),
    # with labels and the null class, and a clipping that acts
    "ddpm-cond": lambda: DDPM(DDPMConfig(T=50, channels=(4, 8), groups=2, num_classes=3, p_uncond=0.5,
                                         grad_clip=1e-3, warmup_steps=2, ema_decay=0.5)),
    # 3x32x32, as the emoji runs: the VAEs with the discretised logistic, the DDPM with attention and classes
    # (the GANs without the averaged G, whose BatchNorm recalibration the MNIST cases check at any shape)
    "gan-colour": lambda: MLPGAN(GANConfig(**COLOUR, latent_dim=8, g_hidden=(16, 32), d_hidden=(32, 16),
                                           ema_decay=None)),
    "dcgan-colour": lambda: DCGAN(DCGANConfig(**COLOUR, latent_dim=8, width=4)),
    "vae-colour": lambda: VAE(VAEConfig(**COLOUR, hidden=32, latent_dim=4, pseudo_inputs=5, likelihood="logistic")),
    "convvae-colour": lambda: ConvVAE(ConvVAEConfig(**COLOUR, channels=(4, 8), latent_dim=4, pseudo_inputs=5,
                                                    likelihood="logistic")),
    "ddpm-colour": lambda: DDPM(DDPMConfig.for_shape(3, 32, T=50, channels=(4, 8, 8), groups=2, attn_resolutions=(16, 8),
                                                     attn_heads=2, num_classes=3, p_uncond=0.5, warmup_steps=2,
                                                     ema_decay=0.5)),
}


class FixedDraws:
    """Stands in for tinygen's random generator in `DDPM.train_step`: returns the given draws
    (the timesteps t, the seed of eps's counter-based stream, the label-dropout uniforms u)."""

    def __init__(self, t, seed, u):
        self.t, self.seed, self.u = t, seed, u

    def integers(self, low, high=None, size=None):
        if high is None and size is None:  # the seed
            assert low == 2**63
            return self.seed
        assert low == 0 and high > self.t.max() and size == len(self.t)
        return self.t

    def random(self, size):
        return self.u


def same_draws(model, twin, rng, monkeypatch):
    """Make the next train_step of `model` and of `twin` draw the same noise (fresh from `rng`)."""
    if isinstance(model, (MLPGAN, DCGAN)):  # z for the D step, then z for the G step
        zs = [rng.standard_normal((B, model.config.latent_dim)) for _ in range(2)]
        ours, theirs = [Tensor(z) for z in zs], [torch.from_numpy(z) for z in zs]
        model.noise = lambda n: ours.pop(0)
        twin.noise = lambda n: theirs.pop(0)
    elif isinstance(model, VAE):  # the reparameterisation noise eps
        eps = rng.standard_normal((B, model.config.latent_dim))
        model.negative_elbo_terms = functools.partial(type(model).negative_elbo_terms, model, eps=Tensor(eps))
        twin.negative_elbo_terms = functools.partial(type(twin).negative_elbo_terms, twin, eps=torch.from_numpy(eps))
    else:  # t, eps (the normals of one seed, from the kernels the model runs) and the label-dropout uniforms
        t, seed, u = rng.integers(0, model.config.T, B), int(rng.integers(2**63)), rng.random(B)
        eps = noise_kernels.normal((B, *model.config.shape), seed, dtype=np.float64)
        monkeypatch.setattr(backend, "generator", lambda: FixedDraws(t, seed, u))
        twin.draw = lambda x0: (torch.from_numpy(t), torch.from_numpy(eps),
                                torch.from_numpy(u) if model.config.num_classes is not None else None)


def module_pairs(model, twin):
    if isinstance(model, (MLPGAN, DCGAN)):
        return [("generator", model.generator, twin.generator), ("discriminator", model.discriminator, twin.discriminator)]
    return [("net", model.net, twin.net)]


def train_both(name, monkeypatch):
    """The model `name` of SMALL and its twin, after two training steps on the same batches and draws."""
    model, rng = SMALL[name](), np.random.default_rng(1)
    if isinstance(model, DDPM):
        randomise_zero_weights(model, rng)  # so that the attention blocks get gradients from the first step
    twin = torch_twins.twin(model)
    shape = model.config.shape if isinstance(model, DDPM) else model.image_shape
    for step in range(2):
        x, labels = rng.random((B, *shape)), rng.integers(0, 3, B)
        if step == 0 and getattr(model.config, "likelihood", None) == "logistic":
            x[0, 0, :2, 0] = [0.0, 1.0]  # the edge bins, which reach to -inf and +inf
        same_draws(model, twin, rng, monkeypatch)
        ours = model.train_step(Tensor(x), labels)
        theirs = twin.train_step(torch.from_numpy(x), torch.from_numpy(labels))
        assert sorted(theirs) == sorted(ours)
        for key in ours:
            assert_close(np.float64(theirs[key]), np.float64(ours[key]), f"step {step}: {key}")
    return model, twin


@pytest.mark.parametrize("name", SMALL)
def test_train_steps_match(name, monkeypatch):
    model, twin = train_both(name, monkeypatch)
    for what, ours, theirs in module_pairs(model, twin):
        theirs = theirs.state_dict()
        for key, value in ours.state_dict().items():
            assert_close(theirs[key].numpy(), value, f"{what}.{key} after two steps")
    if isinstance(model, DDPM):
        for (key, _), shadow in zip(twin.net.named_parameters(), twin.ema_shadow):
            assert_close(shadow.numpy(), model.ema.shadow[key], f"EMA of {key}")
    if isinstance(model, (MLPGAN, DCGAN)) and model.ema is not None:
        for (key, _), shadow in zip(twin.generator.named_parameters(), twin.ema_shadow):
            assert_close(shadow.numpy(), model.ema.shadow[key], f"EMA of {key}")
        ours, theirs = model.averaged().state_dict(), twin.averaged().state_dict()
        for key, value in ours.items():
            assert_close(theirs[key].numpy(), value, f"averaged generator's {key}")


class SeedOnly:
    """tinygen's generator in `DDPM.sample`: its one draw is the seed of the sampler's noise stream."""

    def __init__(self, seed):
        self.seed = seed

    def integers(self, high):
        assert high == 2**63
        return self.seed


def test_guided_ode_samples_match(monkeypatch):
    """After training, the twin's deterministic samplers, DDIM (eta 0) and DPM-Solver++(2M), from tinygen's
    x_T give tinygen's images, class-conditional without guidance and with it. Four DPM-Solver++ steps are
    a first-order first step, two 2M steps and the last step to t = 0."""
    model, twin = train_both("ddpm-colour", monkeypatch)
    n, seed, labels = 3, 12345, np.array([0, 2, 1])
    x_T = noise_kernels.normal((n, *model.config.shape), seed, 0, np.float64)  # tinygen's draw of x_T
    monkeypatch.setattr(backend, "generator", lambda: SeedOnly(seed))
    twin.initial_noise = lambda k, dtype: torch.from_numpy(x_T)
    drawn = {}
    for sampler in ("ddim", "dpmpp"):
        for guidance in (0.0, 2.0):
            ours = model.sample(n, sampler=sampler, steps=4, labels=labels, guidance=guidance)
            theirs = twin.sample(n, sampler=sampler, steps=4, labels=labels, guidance=guidance)
            assert ours.shape == (n, 3, 32, 32) and 0 < ours.std()
            assert_close(theirs, ours, f"{sampler} samples, guidance {guidance}", rtol=1e-5, atol=1e-6)
            drawn[sampler, guidance] = ours
    assert np.abs(drawn["dpmpp", 0.0] - drawn["ddim", 0.0]).max() > 1e-3  # two samplers, not one twice


def test_dpmpp_twin_refuses_eta():
    twin = torch_twins.twin(SMALL["ddpm"]())
    with pytest.raises(ValueError, match="deterministic"):
        twin.sample(1, sampler="dpmpp", steps=2, eta=0.5)


def test_a_gan_twin_state_keeps_the_average_of_g():
    """`benchmarks.quality` saves a trained twin and reloads it: the averaged G must come back too."""
    from benchmarks import quality

    model = SMALL["gan"]()
    twin = torch_twins.twin(model)
    for _ in range(2):
        twin.train_step(torch.rand(B, 1, 28, 28, dtype=torch.float64))
    state = quality.twin_state(twin)
    restored = torch_twins.twin(SMALL["gan"]())
    quality.load_twin_state(restored, state)
    assert restored.step == 2 and quality.tinygen_weights(restored) is None
    torch.manual_seed(0)
    expected = twin.sample(3)
    torch.manual_seed(0)
    np.testing.assert_array_equal(restored.sample(3), expected)


def test_to_torch_refuses_unknown_layers():
    class Custom(tinygen.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="Custom"):
        torch_twins.to_torch(tinygen.nn.Sequential(tinygen.nn.ReLU(), Custom()))
