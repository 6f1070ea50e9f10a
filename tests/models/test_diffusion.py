"""The DDPM: schedule tables, the forward process, the samplers against hand-unrolled loops,
the UNet's shapes and gradients, a short real run and resuming from a checkpoint."""

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygen
from helpers import gradcheck, requires_torch, torch
from tinygen import backend
from tinygen.data import MNIST
from tinygen.errors import ArgumentError, DTypeError, ShapeError
from tinygen.kernels import diffusion as kernels
from tinygen.kernels.diffusion.reference import normal
from tinygen.kernels.dispatch import kernel_info
from tinygen.models.diffusion import DDPM, AttentionBlock, Config, Schedule, UNet
from tinygen.serialization import load
from tinygen.tensor import Tensor, no_grad

TINY = dict(channels=(8, 16), groups=4)  # a UNet of a few thousand parameters


def tiny_model(**overrides):
    """A tiny DDPM whose zero-initialised convolutions are randomised, so eps_theta is not 0."""
    model = DDPM(Config(**{**TINY, **overrides}))
    rng = np.random.default_rng(0)
    for name, p in model.net.named_parameters():
        if not p.data.any():
            p.data[...] = 0.1 * rng.standard_normal(p.shape)
    model.ema = tinygen.optim.EMA(model.net, decay=model.config.ema_decay)
    return model


# --- the schedule --------------------------------------------------------------------------


def test_linear_schedule_tables_and_closed_forms():
    s = Schedule(Config(T=1000))
    t = np.arange(1, 1001)
    np.testing.assert_allclose(s.betas, 1e-4 + (0.02 - 1e-4) * (t - 1) / 999, rtol=1e-12)
    assert np.all(np.diff(s.alpha_bar) < 0) and 0 < s.alpha_bar[-1] < s.alpha_bar[0] < 1  # monotone
    np.testing.assert_allclose(s.alpha_bar, [np.prod(1 - s.betas[:k]) for k in t], rtol=1e-12)
    np.testing.assert_allclose(s.sqrt_alpha_bar**2 + s.sqrt_one_minus_alpha_bar**2, 1, rtol=1e-12)
    np.testing.assert_allclose(s.inv_sqrt_alpha, 1 / np.sqrt(1 - s.betas), rtol=1e-12)
    np.testing.assert_allclose(s.eps_coef, s.betas / np.sqrt(1 - s.alpha_bar), rtol=1e-12)
    # beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t: 0 at t = 1, between beta_{t-1}-ish and beta_t after
    assert s.posterior_variance[0] == 0
    np.testing.assert_allclose(s.posterior_variance[1:], (1 - s.alpha_bar[:-1]) / (1 - s.alpha_bar[1:]) * s.betas[1:],
                               rtol=1e-12)
    assert np.all(s.posterior_variance <= s.betas)
    assert s.alpha_bar[-1] < 1e-4  # x_T is nearly pure noise


def test_cosine_schedule_matches_nichol_and_dhariwal():
    T, s_ = 1000, 0.008
    s = Schedule(Config(T=T, schedule="cosine"))

    def alpha_bar(t):  # eq. 17, written out
        return math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2 / math.cos(s_ / (1 + s_) * math.pi / 2) ** 2

    for t in (1, 10, 250, 500, 900):
        assert s.alpha_bar[t - 1] == pytest.approx(alpha_bar(t), rel=1e-9)
    assert s.alpha_bar[499] == pytest.approx(0.4938, abs=1e-4)  # cos^2(pi/2 0.504) / cos^2(pi/2 0.0079)
    assert s.betas.max() == pytest.approx(0.999)  # the last beta is clipped
    assert np.all(np.diff(s.alpha_bar) < 0)


# --- the forward process q(x_t | x_0) --------------------------------------------------------


def test_q_sample_has_the_closed_form_mean_and_variance():
    # Many copies of one 2x2 image at three timesteps, all in one batch (per-sample coefficients).
    s = Schedule(Config())
    rng = np.random.default_rng(0)
    x0 = np.array([[[[-1.0, 0.5], [0.0, 1.0]]]])  # (1, 1, 2, 2)
    ts, n = np.array([0, 300, 999]), 20000
    t = np.repeat(ts, n)  # (3n,)
    x0s = np.broadcast_to(x0, (3 * n, 1, 2, 2)).copy()
    eps = rng.standard_normal(x0s.shape)
    x_t = kernels.q_sample(x0s, eps, s.sqrt_alpha_bar[t], s.sqrt_one_minus_alpha_bar[t]).reshape(3, n, 2, 2)
    for k, ti in enumerate(ts):
        var = 1 - s.alpha_bar[ti]
        mean = np.sqrt(s.alpha_bar[ti]) * x0[0, 0]
        np.testing.assert_allclose(x_t[k].mean(0), mean, atol=5 * math.sqrt(var / n) + 1e-12)
        np.testing.assert_allclose(x_t[k].var(0), var, rtol=0.05, atol=1e-6)


# --- samplers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddpm_sampling_matches_algorithm_2_unrolled_by_hand(clip_x0):
    tinygen.manual_seed(0)
    model = tiny_model(T=3)
    tinygen.manual_seed(5)
    out = model.sample(2, sampler="ddpm", use_ema=False, clip_x0=clip_x0)

    # By hand: beta = 1e-4, 0.01005, 0.02; one seed from the generator, then the counter-based stream
    # gives x_T (its first 2*28*28 numbers), z at t = 3 (the next ones), then z at t = 2.
    betas = [1e-4, (1e-4 + 0.02) / 2, 0.02]
    tinygen.manual_seed(5)
    seed = int(backend.generator().integers(2**63))
    size = 2 * 28 * 28
    x = normal((2, 1, 28, 28), seed).astype(np.float64)
    for t in (3, 2, 1):
        beta, alpha_bar = betas[t - 1], np.prod([1 - b for b in betas[:t]])
        alpha_bar_prev = np.prod([1 - b for b in betas[:t - 1]])
        eps = model.net(Tensor(x.astype(np.float32)), np.full(2, t - 1)).numpy().astype(np.float64)
        z = normal(x.shape, seed, offset=(3 - t + 1) * size) if t > 1 else 0.0
        if clip_x0:  # the posterior mean of q(x_{t-1} | x_t, x_0) at the clipped x_0 (Ho et al., eq. 7)
            x0_hat = np.clip((x - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar), -1, 1)
            mean = (math.sqrt(alpha_bar_prev) * beta * x0_hat
                    + math.sqrt(1 - beta) * (1 - alpha_bar_prev) * x) / (1 - alpha_bar)
        else:  # Algorithm 2 as printed
            mean = (x - beta / math.sqrt(1 - alpha_bar) * eps) / math.sqrt(1 - beta)
        x = mean + math.sqrt(beta) * z
    if clip_x0:
        assert x.min() >= -1 - 1e-9 and x.max() <= 1 + 1e-9  # the last step returns clip(x0_hat) itself
    np.testing.assert_allclose(out, (np.clip(x, -1, 1) + 1) / 2, atol=1e-5)
    assert out.dtype == np.float32 and out.shape == (2, 1, 28, 28)


def test_ddim_with_all_steps_and_eta_1_is_ddpm_with_the_posterior_variance():
    tinygen.manual_seed(0)
    model = tiny_model(T=20)
    s = model.schedule
    np.testing.assert_array_equal(model.ddim_timesteps(20), np.arange(20))
    # sigma_t(eta = 1)^2 = beta~_t for consecutive steps (Song et al., below eq. 16)
    sigma = model.ddim_sigma(s.alpha_bar, s.alpha_bar_prev, 1.0)
    np.testing.assert_allclose(sigma**2, s.posterior_variance, rtol=1e-10, atol=1e-15)
    # and one DDIM step equals one DDPM step with sigma^2 = beta~_t, the same z
    rng = np.random.default_rng(1)
    x, eps, z = (rng.standard_normal((3, 1, 4, 4)) for _ in range(3))
    for i in (1, 7, 19):
        c = lambda v: np.full(3, v)  # noqa: E731
        ddim = kernels.ddim_step(x, eps, c(s.sqrt_alpha_bar[i]), c(s.sqrt_one_minus_alpha_bar[i]),
                                 c(math.sqrt(s.alpha_bar[i - 1])), c(sigma[i]), z)
        ddpm = kernels.p_sample_step(x, eps, c(s.eps_coef[i]), c(s.inv_sqrt_alpha[i]),
                                     c(math.sqrt(s.posterior_variance[i])), z)
        np.testing.assert_allclose(ddim, ddpm, rtol=1e-10, atol=1e-12)
    # so the whole chains agree: both draw x_T and then z for t = T..2 from the same generator
    tinygen.manual_seed(3)
    a = model.sample(2, sampler="ddim", steps=20, eta=1.0, use_ema=False)
    tinygen.manual_seed(3)
    b = model.sample(2, sampler="ddpm", variance="posterior", use_ema=False)
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("options", [dict(sampler="ddim", steps=4), dict(sampler="ddim", steps=4, eta=0.5),
                                     dict(sampler="ddpm")])
def test_sampling_is_deterministic_under_a_seed(options):
    tinygen.manual_seed(0)
    model = tiny_model(T=8)
    tinygen.manual_seed(11)
    a = model.sample(3, **options)
    tinygen.manual_seed(11)
    b = model.sample(3, **options)
    tinygen.manual_seed(12)
    c = model.sample(3, **options)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1


def test_classifier_free_guidance_combines_conditional_and_null_predictions():
    tinygen.manual_seed(0)
    model = tiny_model(T=10, num_classes=3)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    labels = np.array([0, 2])
    cond = model.net(Tensor(x), np.full(2, 4), labels).numpy()
    null = model.net(Tensor(x), np.full(2, 4), np.full(2, 3)).numpy()
    guided = model._eps(model.net, x, 4, labels, 2.0, clip_x0=False)
    np.testing.assert_allclose(guided, 3 * cond - 2 * null, rtol=1e-4, atol=1e-5)
    assert not np.allclose(cond, null)  # the class embedding matters
    out = model.sample(2, sampler="ddim", steps=3, labels=labels, guidance=2.0)
    assert out.shape == (2, 1, 28, 28)


def test_sampling_arguments_are_checked():
    model = DDPM(Config(T=10, **TINY))
    with pytest.raises(ArgumentError, match="sampler"):
        model.sample(1, sampler="euler")
    with pytest.raises(ArgumentError, match="all T=10 steps"):
        model.sample(1, sampler="ddpm", steps=5)
    with pytest.raises(ArgumentError, match="steps must be in 1..10"):
        model.sample(1, sampler="ddim", steps=11)
    with pytest.raises(ArgumentError, match="without num_classes"):
        model.sample(1, labels=[0])
    for n in (0, -1, 2.5, "3", True):
        with pytest.raises(ArgumentError, match=f"positive integer, got {n!r}"):
            model.sample(n)
    for eta in (-0.5, 1.5, float("nan"), "1"):
        with pytest.raises(ArgumentError, match=r"eta must be a number in \[0, 1\]"):
            model.sample(1, sampler="ddim", steps=2, eta=eta)
    with pytest.raises(ArgumentError, match="eta=0.5 applies to sampler='ddim'"):
        model.sample(1, sampler="ddpm", eta=0.5)
    with pytest.raises(ArgumentError, match="guidance=2.0 needs labels"):
        model.sample(1, guidance=2.0)
    with pytest.raises(ArgumentError, match="channels"):
        Config(channels=(8, 12), groups=8)


def test_config_refuses_shapes_the_unet_cannot_halve_and_unknown_attention():
    with pytest.raises(ArgumentError, match=r"image_size 30 does not halve 2 times: 3 resolutions .* divisible by 4"):
        Config(image_size=30)
    with pytest.raises(ArgumentError, match=r"image_size 28 does not halve 3 times: 4 resolutions .* divisible by 8"):
        Config(channels=(8, 8, 8, 8))
    with pytest.raises(ArgumentError, match=r"attn_resolutions \[16\] are not among the UNet's resolutions \(28, 14, 7\)"):
        Config(attn_resolutions=(16,))
    with pytest.raises(ArgumentError, match="attn_heads=3 must divide the width 64"):
        Config(image_size=32, attn_resolutions=(16,), attn_heads=3)
    with pytest.raises(ArgumentError, match="image_channels and image_size must be positive"):
        Config(image_channels=0)
    assert Config(image_size=32, channels=(8, 8, 8, 8), groups=4).resolutions == (32, 16, 8, 4)
    assert Config(image_size=5, channels=(8,), groups=4).resolutions == (5,)  # one level: any size


def test_for_shape_defaults():
    assert Config.for_shape(1, 28) == Config()  # the MNIST defaults, untouched
    rgb = Config.for_shape(3, 32, num_classes=5)
    assert (rgb.shape, rgb.channels, rgb.attn_resolutions, rgb.num_classes) == ((3, 32, 32), (32, 64, 128), (16,), 5)
    assert Config.for_shape(3, 64).channels == (32, 64, 128, 128) and Config.for_shape(3, 64).attn_resolutions == (16,)
    assert Config.for_shape(3, 32, attn_resolutions=()).attn_resolutions == ()  # overrides win
    assert Config.for_shape(3, 32, channels=(8, 16), groups=4).attn_resolutions == (16,)  # 32/16: still at 16
    assert Config.for_shape(3, 64, channels=(8, 16), groups=4).attn_resolutions == ()  # 64/32: no 16x16 level
    assert Config.for_shape(1, 30).resolutions == (30, 15) and Config.for_shape(1, 15).resolutions == (15,)


# --- the UNet -------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [None, 10])
@pytest.mark.parametrize("channels", [(8,), (8, 16), (8, 16, 16)])
@pytest.mark.parametrize("batch", [1, 3])
def test_unet_output_has_the_input_shape(num_classes, channels, batch):
    net = UNet(Config(channels=channels, groups=4, num_classes=num_classes))
    labels = None if num_classes is None else np.arange(batch) % num_classes
    out = net(tinygen.randn(batch, 1, 28, 28), np.arange(batch) * 100, labels)
    assert out.shape == (batch, 1, 28, 28) and out.dtype == np.float32


@pytest.mark.parametrize("shape, attn", [((1, 8), ()), ((3, 8), (4,)), ((2, 8), (8, 4))])
def test_unet_is_differentiable_end_to_end(shape, attn):
    tinygen.set_default_dtype(np.float64)  # restored by conftest
    tinygen.manual_seed(0)
    (c, size) = shape
    net = UNet(Config(channels=(4, 8), groups=2, num_classes=3, image_channels=c, image_size=size,
                      attn_resolutions=attn, attn_heads=2))
    rng = np.random.default_rng(0)
    for p in net.parameters():
        if not p.data.any():
            p.data[...] = 0.3 * rng.standard_normal(p.shape)  # zero-initialised convs would hide paths
    t, labels = np.array([3, 500]), np.array([1, 3])
    x = rng.standard_normal((2, c, size, size))
    gradcheck(lambda x: net(x, t, labels), x)
    # and every parameter gets a gradient
    net(Tensor(x), t, labels).sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not np.abs(p.grad.numpy()).sum() > 0]
    assert missing == []


def test_unet_places_attention_at_the_chosen_resolutions():
    net = UNet(Config(image_size=32, channels=(8, 16, 16), groups=4, attn_resolutions=(16, 8)))
    kinds = [type(m).__name__ for m in (*net.down_attn, net.mid_attn, *net.up_attn)]
    assert kinds == ["Identity", "AttentionBlock", "AttentionBlock",  # down: 32, 16, 8
                     "AttentionBlock",  # middle, at 8
                     "AttentionBlock", "AttentionBlock", "Identity"]  # up: 8, 16, 32


@requires_torch
@pytest.mark.parametrize("heads", [1, 2])
def test_attention_block_matches_a_torch_twin(heads):
    # Ho et al.'s block written in torch: GroupNorm, 1x1 qkv, softmax(q k^T / sqrt(d)) v per head, 1x1 proj, residual
    tinygen.set_default_dtype(np.float64)  # restored by conftest
    block = AttentionBlock(8, groups=4, heads=heads)
    rng = np.random.default_rng(heads)
    for p in block.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    x = rng.standard_normal((2, 8, 3, 5))
    w = {name: torch.from_numpy(p.numpy()) for name, p in block.named_parameters()}
    tx = torch.from_numpy(x)
    h = torch.nn.functional.group_norm(tx, 4, w["norm.weight"], w["norm.bias"], eps=1e-5)
    qkv = torch.nn.functional.conv2d(h, w["qkv.weight"], w["qkv.bias"]).reshape(2, 3, heads, 8 // heads, 15)
    q, k, v = (qkv[:, i].transpose(-2, -1) for i in range(3))  # (B, heads, HW, d)
    a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8 // heads), -1) @ v
    expected = tx + torch.nn.functional.conv2d(a.transpose(-2, -1).reshape(2, 8, 3, 5), w["proj.weight"], w["proj.bias"])
    out = block(Tensor(x))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)
    gradcheck(lambda t: block(t), x)


# --- any image shape ------------------------------------------------------------------------


@settings(deadline=None, max_examples=10)
@given(c=st.sampled_from([1, 3]), size=st.sampled_from([28, 32, 64]), data=st.data())
def test_build_train_and_sample_at_any_shape(c, size, data):
    """Two training steps and a few DDIM steps (guided when class-conditional) at (c, size, size),
    with widths and attention placements drawn; the samples have the config's shape and range."""
    widths = data.draw(st.sampled_from([(4,), (4, 8), (4, 8, 8)]), label="channels")
    resolutions = [size // 2**i for i in range(len(widths))]
    attn = data.draw(st.lists(st.sampled_from([r for r in resolutions if r <= 32] or [None]), unique=True, max_size=2)
                     .map(lambda rs: tuple(r for r in rs if r is not None)), label="attn_resolutions")
    num_classes = data.draw(st.sampled_from([None, 3]), label="num_classes")
    tinygen.manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    model = DDPM(Config(T=20, image_channels=c, image_size=size, channels=widths, groups=2, attn_resolutions=attn,
                        attn_heads=data.draw(st.sampled_from([1, 2]), label="heads"), num_classes=num_classes))
    labels = None if num_classes is None else np.array([0, 2])
    for _ in range(2):
        out = model.train_step(tinygen.rand(2, c, size, size), labels)
        assert np.isfinite(out["loss"]) and out["loss"] > 0
    guided = {} if num_classes is None else dict(labels=[1, 2], guidance=1.5)
    x = model.sample(2, sampler="ddim", steps=3, **guided)
    assert x.shape == (2, c, size, size) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    with pytest.raises(ShapeError, match=rf"\(B, {c}, {size}, {size}\), the \(C, H, W\) of the model's config"):
        model.train_step(tinygen.rand(2, 4 - c, size, size), labels)


def test_colour_sampling_draws_every_channel_from_its_own_noise():
    # ancestral sampling at (3, 8, 8): the channels differ, and the stream covers n C H W numbers per step
    model = tiny_model(T=5, image_channels=3, image_size=8, attn_resolutions=(4,))
    tinygen.manual_seed(0)
    x = model.sample(2, sampler="ddpm")
    assert x.shape == (2, 3, 8, 8)
    assert not np.allclose(x[:, 0], x[:, 1]) and not np.allclose(x[0], x[1])


def test_a_checkpoint_written_before_colour_images_loads_and_computes_the_same():
    """tests/models/data/ddpm_before_issue23.ckpt was written by the DDPM before image_channels,
    image_size and attn_resolutions existed (commit 1301d87; a conditional UNet of widths (2, 4)
    trained 2 steps), with its eps_theta on a probe input: today's code rebuilds the same network
    from the run's settings and computes the same eps_theta."""
    path = os.path.join(os.path.dirname(__file__), "data", "ddpm_before_issue23.ckpt")
    state = load(path)
    assert "image_channels" not in state["run"]["config"] and "attn_resolutions" not in state["run"]["config"]
    model = DDPM(Config(**state["run"]["overrides"]))  # as trainer.load_checkpoint builds it
    model.load_state_dict(state["model"])
    assert model.config.shape == (1, 28, 28) and model.config.attn_resolutions == ()
    probe = state["probe"]
    with no_grad():
        eps = model.net(Tensor(probe["x"]), probe["t"], probe["labels"]).numpy()
    assert_as_probed(eps, probe["eps"])
    assert model.sample(1, steps=2, labels=[1], guidance=1.0).shape == (1, 1, 28, 28)
    # the MNIST default: the 1,461,953 parameters of the README's network
    assert DDPM().net.num_parameters() == 1_461_953


def test_trainer_loads_a_checkpoint_written_before_colour_images():
    from tinygen import trainer  # _saved_overrides: the run's settings, and Config.LEGACY where a default changed
    model, run, step = trainer.load_checkpoint(os.path.join(os.path.dirname(__file__), "data", "ddpm_before_issue23.ckpt"))
    assert step == 2 and model.config.shape == (1, 28, 28) and model.config.channels == (2, 4)
    probe = load(os.path.join(os.path.dirname(__file__), "data", "ddpm_before_issue23.ckpt"))["probe"]
    with no_grad():
        eps = model.net(Tensor(probe["x"]), probe["t"], probe["labels"]).numpy()
    assert_as_probed(eps, probe["eps"])


def assert_as_probed(eps, probed):
    """The probe was computed by the Numba kernels: they give it to the bit; the NumPy reference
    kernels (no Numba installed) sum in another order, to float32 rounding."""
    if kernel_info()["backend"] == "numba":
        np.testing.assert_array_equal(eps, probed)
    else:
        np.testing.assert_allclose(eps, probed, rtol=1e-5, atol=1e-6 * np.abs(probed).max())


# --- training -------------------------------------------------------------------------------


def test_train_step_checks_images():
    model = DDPM(Config(T=10, **TINY))
    with pytest.raises(ShapeError, match=r"\(B, 1, 28, 28\).*got \(2, 28, 28\)"):
        model.train_step(tinygen.rand(2, 28, 28))
    with pytest.raises(ShapeError, match=r"got \(2, 1, 32, 32\)"):
        model.train_step(tinygen.rand(2, 1, 32, 32))
    with pytest.raises(DTypeError, match="uint8"):
        model.train_step(np.zeros((2, 1, 28, 28), np.uint8))
    with pytest.raises(ArgumentError, match=r"\[0, 1\], found values in \[0.0, 255.0\]"):
        model.train_step(np.full((2, 1, 28, 28), 255.0, np.float32) * (np.arange(2) > 0)[:, None, None, None])
    with pytest.raises(ArgumentError, match="needs labels"):
        DDPM(Config(T=10, num_classes=10, **TINY)).train_step(tinygen.rand(2, 1, 28, 28))


@pytest.fixture(scope="module")
def mnist_2000():
    """The first 2,000 digits of the shipped subset (those of the full training file) and their labels."""
    images, labels = MNIST().arrays()
    return images[:2000], labels[:2000]


def test_loss_is_finite_and_falls_on_real_digits(mnist_2000):
    images, labels = mnist_2000
    tinygen.manual_seed(0)
    model = DDPM(Config(warmup_steps=10, num_classes=10, **TINY))
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(50):
        idx = rng.integers(0, len(images), 16)
        out = model.train_step(Tensor(images[idx]), labels[idx])
        losses.append(out["loss"])
    assert np.isfinite(losses).all()
    assert np.mean(losses[:5]) > 0.8  # eps_theta starts at 0: the loss starts at E[eps^2] = 1
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses
    assert model.step == 50 and model.ema.num_updates == 50


def test_learning_rate_warms_up_then_decays_to_zero_on_a_cosine():
    model = DDPM(Config(lr=1e-3, warmup_steps=10, steps=110, **TINY))
    rates = []
    for step in range(112):
        model.step = step
        rates.append(model.learning_rate())
    assert rates[0] == pytest.approx(1e-4 * 0.5 * (1 + math.cos(0.0)))  # 1/10 of the way up
    assert rates[9] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 9 / 110)))
    assert rates[55] == pytest.approx(0.5e-3)  # half way: cos(pi / 2) = 0
    assert rates[110] == rates[111] == 0.0
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))  # falls monotonically after warm-up


def test_state_dict_round_trip_resumes_identically(tmp_path):
    images = np.random.default_rng(0).random((6, 4, 1, 28, 28)).astype(np.float32)  # 6 batches of 4
    labels = np.arange(24).reshape(6, 4) % 10

    def run(model, batches):
        return [model.train_step(Tensor(images[k]), labels[k])["loss"] for k in batches]

    tinygen.manual_seed(0)
    config = Config(T=50, warmup_steps=2, num_classes=10, **TINY)
    model = DDPM(config)
    run(model, range(3))
    path = os.path.join(tmp_path, "ddpm.ckpt")
    tinygen.save(model.state_dict(), path)
    assert set(model.state_dict()) == {"model", "ema", "optimizer", "step"}
    with pytest.raises(ArgumentError, match=r"a DDPM state dict has the keys \['ema', 'model', 'optimizer', 'step'\], "
                                            r"got \['net', 'optimizer', 'step'\]"):
        DDPM(config).load_state_dict({"net": {}, "optimizer": {}, "step": 0})

    tinygen.manual_seed(99)
    resumed = DDPM(config)  # fresh weights, replaced by the checkpoint
    resumed.load_state_dict(tinygen.load(path))
    tinygen.manual_seed(1)
    expected = run(model, range(3, 6))
    tinygen.manual_seed(1)
    assert run(resumed, range(3, 6)) == expected
    assert resumed.step == model.step == 6
    for (name, a), b in zip(model.net.state_dict().items(), resumed.net.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    for name, a in model.ema.shadow.items():
        np.testing.assert_array_equal(a, resumed.ema.shadow[name], err_msg=name)
    tinygen.manual_seed(2)
    a = model.sample(2, steps=3)
    tinygen.manual_seed(2)
    np.testing.assert_array_equal(a, resumed.sample(2, steps=3))
