"""MLPGAN and DCGAN: shapes, parameter counts, the two losses by hand, a short run on real MNIST,
determinism under a seed, exact resumption from a state dict (networks, Adam states, the average
of G's weights) and sampling from that average; every shape (C in {1, 3}, 28, 32 and 64 pixels)
and checkpoints written before colour images."""

import math
import os

import numpy as np
import pytest

import tinygen
from hypothesis import given, settings, strategies as st

from helpers import assert_computes_as_saved, gradcheck, random_batches
from strategies import arrays
from tinygen.errors import ArgumentError, ShapeError
from tinygen.models import gan as gan_module
from tinygen.models.gan import (DCGAN, DCGANConfig, GANConfig, MLPGAN, MinibatchStdDev, discriminator_loss,
                                generator_loss)

MODELS = [MLPGAN, DCGAN]


@pytest.mark.parametrize("cls", MODELS)
def test_network_shapes_and_sample_range(cls):
    tinygen.manual_seed(0)
    gan = cls()
    z = gan.noise(5)
    assert z.shape == (5, 100)
    fake = gan.generator(z)
    assert fake.shape == (5, 1, 28, 28)
    assert gan.discriminator(fake).shape == (5, 1)
    samples = gan.sample(7)
    assert samples.shape == (7, 1, 28, 28) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1


def test_parameter_counts():
    g, d = MLPGAN().generator, MLPGAN().discriminator
    bn = lambda n: 2 * n  # noqa: E731  BatchNorm: a scale and a shift per feature
    assert g.num_parameters() == (
        (100 * 128 + 128) + bn(128) + (128 * 256 + 256) + bn(256) + (256 * 512 + 512) + bn(512) + (512 * 784 + 784)
    )  # 581,520
    # the minibatch standard deviation adds one input (and weight) to D's last layer
    assert d.num_parameters() == (784 * 512 + 512) + (512 * 256 + 256) + (256 + 1 + 1)  # 533,506
    assert MLPGAN(GANConfig(minibatch_std=False)).discriminator.num_parameters() == 533505
    g, d = DCGAN().generator, DCGAN().discriminator
    # G: Linear without bias (BN follows), Conv3x3 128->128 (refine), ConvT 128->64, Conv3x3 64->64
    # (refine), all without bias; ConvT 64->1 with bias
    plain_g = 100 * 128 * 7 * 7 + bn(128) + 128 * 64 * 4 * 4 + bn(64) + (64 * 1 * 4 * 4 + 1)  # 759,681
    assert g.num_parameters() == plain_g + 128 * 128 * 9 + bn(128) + 64 * 64 * 9 + bn(64)  # 944,385
    # D: Conv 1->64 with bias, Conv 64->128 without bias (BN follows), minibatch std, Linear 6273->1
    plain_d = (64 * 16 + 64) + 128 * 64 * 16 + bn(128) + (128 * 7 * 7 + 1)  # 138,689
    assert d.num_parameters() == plain_d + 1
    legacy = DCGAN(DCGANConfig(**DCGANConfig.LEGACY))
    assert (legacy.generator.num_parameters(), legacy.discriminator.num_parameters()) == (plain_g, plain_d)


def test_dcgan_initialisation_follows_radford():
    tinygen.manual_seed(0)
    gan = DCGAN()
    w = gan.discriminator[2].weight.numpy()  # Conv 64->128: 131,072 draws from N(0, 0.02^2)
    assert abs(w.mean()) < 1e-3 and abs(w.std() - 0.02) < 1e-3
    bn = gan.generator[2].weight.numpy()
    assert abs(bn.mean() - 1) < 0.01 and 0.01 < bn.std() < 0.03
    assert (gan.generator[-2].bias.numpy() == 0).all()  # the last ConvT's


def test_losses_against_hand_computation():
    # D(x) = 0.8 and D(G(z)) = 0.3 everywhere: logits log(p / (1 - p))
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    real = tinygen.full((4, 1), logit(0.8), dtype=np.float64, requires_grad=True)
    fake = tinygen.full((4, 1), logit(0.3), dtype=np.float64, requires_grad=True)
    loss_d = discriminator_loss(real, fake)
    assert loss_d.item() == pytest.approx(-math.log(0.8) - math.log(1 - 0.3), rel=1e-12)
    loss_g = generator_loss(fake)
    assert loss_g.item() == pytest.approx(-math.log(0.3), rel=1e-12)  # non-saturating: -log D(G(z))
    # gradients wrt the logits: d/dl [-log σ(l)] = σ(l) - 1, d/dl [-log(1 - σ(l))] = σ(l); mean over 4
    loss_d.backward()
    np.testing.assert_allclose(real.grad.numpy(), (0.8 - 1) / 4, rtol=1e-12)
    np.testing.assert_allclose(fake.grad.numpy(), 0.3 / 4, rtol=1e-12)


def test_losses_stay_finite_for_confident_discriminators():
    huge = tinygen.full((2, 1), 200.0)
    assert math.isfinite(discriminator_loss(huge, -huge).item())  # ~ 0
    assert generator_loss(-huge).item() == pytest.approx(200.0)  # -log σ(-200) = 200, no log(0)


@pytest.mark.parametrize("cls, batch_size, steps", [(MLPGAN, 32, 40), (DCGAN, 16, 12)])
def test_short_run_on_mnist(mnist, cls, batch_size, steps):
    tinygen.manual_seed(0)
    gan = cls(cls.Config(batch_size=batch_size))
    history = [gan.train_step(x) for x in random_batches(mnist, batch_size, steps)]
    for key in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert all(np.isfinite(h[key]) for h in history), key
    assert all(0 <= h["d_fake"] <= 1 and 0 <= h["d_real"] <= 1 for h in history)
    # after some D steps the discriminator tells real digits from fakes
    late = history[steps // 2:]
    assert np.mean([h["d_real"] for h in late]) > np.mean([h["d_fake"] for h in late]) + 0.1
    # the D loss falls from its chance value 2 log 2 as D learns
    assert np.mean([h["loss_d"] for h in late]) < 2 * math.log(2)
    assert gan.step == steps
    assert all(p.requires_grad for p in gan.discriminator.parameters())  # unfrozen after the G step


def test_generator_step_leaves_the_discriminator_alone(monkeypatch):
    """Only opt_d moves D, and the G step adds nothing to D's gradients (D is frozen during it)."""
    tinygen.manual_seed(0)
    gan = MLPGAN(GANConfig(batch_size=8))
    snapshots = {}
    d_params = list(gan.discriminator.parameters())
    original_d_step, original_g_step = gan.opt_d.step, gan.opt_g.step

    def d_step():
        original_d_step()
        snapshots["after_d_step"] = [(p.numpy().copy(), p.grad.numpy().copy()) for p in d_params]

    def g_step():
        snapshots["at_g_step"] = [p.grad.numpy().copy() for p in d_params]
        original_g_step()

    monkeypatch.setattr(gan.opt_d, "step", d_step)
    monkeypatch.setattr(gan.opt_g, "step", g_step)
    gan.train_step(tinygen.rand(8, 1, 28, 28))
    for p, (value, grad), grad_at_g in zip(d_params, snapshots["after_d_step"], snapshots["at_g_step"]):
        np.testing.assert_array_equal(grad_at_g, grad)
        np.testing.assert_array_equal(p.numpy(), value)


@pytest.mark.parametrize("cls", MODELS)
def test_same_seed_same_losses(cls):
    runs = []
    for _ in range(2):
        tinygen.manual_seed(3)
        gan = cls(cls.Config(batch_size=8))
        x = tinygen.rand(8, 1, 28, 28)
        runs.append([gan.train_step(x) for _ in range(2)] + [gan.sample(2).tolist()])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("cls", MODELS)
def test_resume_from_state_dict_is_exact(cls, tmp_path):
    tinygen.manual_seed(0)
    config = cls.Config(batch_size=8)
    x = [tinygen.rand(8, 1, 28, 28) for _ in range(5)]
    original = cls(config)
    for batch in x[:3]:
        original.train_step(batch)
    path = tmp_path / "gan.npz"
    tinygen.save(original.state_dict(), path)

    tinygen.manual_seed(99)  # different initial weights, overwritten by the checkpoint
    restored = cls(config)
    restored.load_state_dict(tinygen.load(path))
    assert restored.step == 3
    for batch in x[3:]:
        tinygen.manual_seed(7)
        expected = original.train_step(batch)
        tinygen.manual_seed(7)
        assert restored.train_step(batch) == expected  # bit for bit: weights, BN stats, Adam moments
    tinygen.manual_seed(1)
    expected = original.sample(3)
    tinygen.manual_seed(1)
    np.testing.assert_array_equal(restored.sample(3), expected)


def test_sampling_uses_batchnorm_running_statistics():
    """In eval mode a sample does not depend on the others in its batch."""
    tinygen.manual_seed(0)
    gan = DCGAN(DCGANConfig(batch_size=8))
    gan.train_step(tinygen.rand(8, 1, 28, 28))
    tinygen.manual_seed(5)
    four = gan.sample(4)
    tinygen.manual_seed(5)
    one = gan.sample(1)  # the same first z (the generator draws in order)
    np.testing.assert_allclose(one[0], four[0], rtol=1e-5, atol=1e-6)
    assert gan.generator.training  # sample() restores training mode


def test_samples_come_from_the_averaged_generator():
    """sample() runs G with the EMA weights; its BatchNorm statistics are those of the recalibration
    noise (a stream of its own), so they neither touch the seeded generator nor depend on G's."""
    tinygen.manual_seed(0)
    gan = MLPGAN(GANConfig(batch_size=8, g_hidden=(16, 32), ema_decay=0.5))
    for _ in range(3):
        gan.train_step(tinygen.rand(8, 1, 28, 28))
    tinygen.manual_seed(5)
    first = gan.sample(4)
    averaged = gan.averaged()
    for name, p in averaged.named_parameters():
        np.testing.assert_array_equal(p.numpy(), gan.ema.shadow[name])
        assert not np.array_equal(p.numpy(), dict(gan.generator.named_parameters())[name].numpy())
    # the first BatchNorm's statistics: mean over the batches of noise of each batch's mean and
    # unbiased variance of its input, Linear -> LeakyReLU of z
    rng, (batches, size) = np.random.default_rng(gan.step), gan_module.BN_RECALIBRATION
    zs = rng.standard_normal((batches, size, 100)).astype(np.float32)
    w, b = (p.numpy().astype(np.float64) for p in averaged[0].parameters())
    h = zs @ w.T + b
    h = np.where(h > 0, h, 0.2 * h)
    np.testing.assert_allclose(averaged[2].running_mean.numpy(), h.mean(1).mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(averaged[2].running_var.numpy(), h.var(1, ddof=1).mean(0), rtol=1e-4)
    assert gan.averaged() is averaged  # computed once per step
    tinygen.manual_seed(5)
    np.testing.assert_array_equal(gan.sample(4), first)  # the same draws with or without recalibration
    tinygen.manual_seed(5)
    z = gan.noise(4)
    gan.generator.eval()
    averaged.eval()
    np.testing.assert_allclose(averaged(z).numpy(), first, rtol=1e-6)
    tinygen.manual_seed(5)
    np.testing.assert_allclose(gan.generator(z).numpy(), gan.sample(4, use_ema=False), rtol=1e-6)


def test_ema_decay_none_samples_from_g_and_saves_no_average():
    tinygen.manual_seed(0)
    gan = DCGAN(DCGANConfig(batch_size=8))
    assert gan.ema is None and "ema" not in gan.state_dict()
    gan.train_step(tinygen.rand(8, 1, 28, 28))
    tinygen.manual_seed(5)
    samples = gan.sample(3)
    tinygen.manual_seed(5)
    np.testing.assert_array_equal(gan.sample(3, use_ema=False), samples)
    with pytest.raises(ArgumentError, match="'ema'"):
        MLPGAN(GANConfig(batch_size=8)).load_state_dict(gan.state_dict())


def test_errors_name_the_problem():
    gan = MLPGAN()
    with pytest.raises(ShapeError, match=r"\(B, 1, 28, 28\).*\(4, 784\)"):
        gan.train_step(tinygen.rand(4, 784))
    with pytest.raises(ShapeError, match="B >= 2"):
        gan.train_step(tinygen.rand(1, 1, 28, 28))
    with pytest.raises(ArgumentError, match=r"\[0, 1\], found values in \[0.0, 255.0\]"):
        gan.train_step(tinygen.tensor(np.array([0.0, 255.0], np.float32)).reshape(2, 1, 1, 1).expand(2, 1, 28, 28))
    with pytest.raises(ArgumentError, match="positive integer"):
        gan.sample(0)
    with pytest.raises(ArgumentError, match="GANConfig"):
        MLPGAN(DCGANConfig())
    with pytest.raises(ArgumentError, match="keys"):
        gan.load_state_dict({"generator": {}})


@settings(deadline=None, max_examples=25)
@given(shape=st.tuples(st.integers(2, 5), st.integers(1, 6)), data=st.data())
def test_minibatch_std_dev_value_and_gradient(shape, data):
    x = data.draw(arrays(shape))
    out = MinibatchStdDev()(tinygen.tensor(x)).numpy()
    s = np.sqrt(x.var(axis=0) + 1e-8).mean()  # NumPy's var divides by B, as the paper's
    np.testing.assert_allclose(out, np.concatenate([x, np.full((shape[0], 1), s)], axis=1), rtol=1e-12)
    gradcheck(lambda t: MinibatchStdDev()(t), x)


def test_minibatch_std_dev_sees_a_collapsed_batch():
    """Identical rows (a generator that collapsed) give s = sqrt(eps); varied rows a large s."""
    same = np.tile(np.random.default_rng(0).standard_normal((1, 8)), (6, 1))
    assert MinibatchStdDev()(tinygen.tensor(same)).numpy()[:, -1] == pytest.approx(1e-4, rel=1e-3)
    varied = np.random.default_rng(1).standard_normal((6, 8))
    assert MinibatchStdDev()(tinygen.tensor(varied)).numpy()[0, -1] > 0.5
    with pytest.raises(ShapeError, match=r"\(B, F\).*\(2, 3, 4\)"):
        MinibatchStdDev()(tinygen.zeros(2, 3, 4))


# --- any image shape ---------------------------------------------------------------------------


@settings(deadline=None, max_examples=12)
@given(cls=st.sampled_from(MODELS), channels=st.sampled_from([1, 3]), size=st.sampled_from([28, 32, 64]))
def test_every_gan_trains_at_every_shape(cls, channels, size):
    # (no averaged G for the MLP: its BatchNorm recalibration runs 10,000 images through G, seconds at 64 x 64)
    small = dict(g_hidden=(4,), d_hidden=(4,), ema_decay=None) if cls is MLPGAN else dict(width=2)
    tinygen.manual_seed(0)
    gan = cls(cls.Config(image_channels=channels, image_size=size, latent_dim=3, batch_size=2, **small))
    x = tinygen.rand(2, channels, size, size)
    history = [gan.train_step(x) for _ in range(2)]
    assert all(np.isfinite(list(h.values())).all() for h in history)
    assert gan.discriminator(x).shape == (2, 1)
    samples = gan.sample(3)
    assert samples.shape == (3, channels, size, size) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1


def test_dcgan_stages_per_size():
    """G from b x b with widths 2^(n-1) w .. w: 28: 2w@7 -> w@14; 32: 4w@4 -> 2w@8 -> w@16; 64: from 8w@4."""
    for size, widths, base in [(28, [2, 1], 7), (32, [4, 2, 1], 4), (64, [8, 4, 2, 1], 4)]:
        gan = DCGAN(DCGANConfig(image_channels=3, image_size=size, width=4))
        up = [m for m in gan.generator if isinstance(m, tinygen.nn.ConvTranspose2d)]
        assert [m.weight.shape[0] for m in up] == [4 * w for w in widths]  # ConvT weights are (in, out, k, k)
        assert up[-1].weight.shape[1] == 3
        assert gan.generator[1].unflattened_size == (4 * widths[0], base, base)
        down = [m for m in gan.discriminator if isinstance(m, tinygen.nn.Conv2d)]
        assert [m.weight.shape[0] for m in down] == [4 * w for w in widths[::-1]] and down[0].weight.shape[1] == 3
        assert gan.discriminator[-1].weight.shape == (1, 4 * widths[0] * base * base + 1)  # + the batch's std


def test_parameter_counts_at_32x32x3():
    bn = lambda n: 2 * n  # noqa: E731
    g = DCGAN(DCGANConfig(image_channels=3, image_size=32)).generator
    # Linear 100 -> 256*4*4 and three ConvT 256 -> 128 -> 64 -> 3, refined at 4, 8 and 16 pixels
    assert g.num_parameters() == (100 * 256 * 16 + bn(256) + 256 * 256 * 9 + bn(256)
                                  + 256 * 128 * 16 + bn(128) + 128 * 128 * 9 + bn(128)
                                  + 128 * 64 * 16 + bn(64) + 64 * 64 * 9 + bn(64) + (64 * 3 * 16 + 3))  # 1,843,971
    d = DCGAN(DCGANConfig(image_channels=3, image_size=32)).discriminator
    assert d.num_parameters() == ((3 * 64 * 16 + 64) + 64 * 128 * 16 + bn(128) + 128 * 256 * 16 + bn(256)
                                  + (256 * 16 + 2))  # 663,362
    D = 3 * 32 * 32
    mlp = MLPGAN(GANConfig(image_channels=3, image_size=32))
    assert mlp.generator.num_parameters() == 581520 - (512 * 784 + 784) + (512 * D + D)
    assert mlp.discriminator.num_parameters() == 533506 - 784 * 512 + D * 512


# --- checkpoints written before colour images -------------------------------------------------

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "gan_vae_before_issue23.ckpt")


@pytest.mark.parametrize("name, cls", [("gan", MLPGAN), ("dcgan", DCGAN), ("dcgan_legacy", DCGAN)])
def test_checkpoint_of_before_loads_and_computes_the_same(name, cls):
    """tests/models/data/gan_vae_before_issue23.ckpt holds tiny models saved by the code of commit
    1301d87 (before image_channels/image_size), each with one seeded sample and the losses of one
    seeded step after saving. Rebuilt from their saved settings, they load and compute the same."""
    assert_computes_as_saved(cls, tinygen.load(FIXTURE)[name])


def test_shape_settings_are_checked():
    with pytest.raises(ArgumentError, match="DCGANConfig: image_size must be one of 28, 32, 64.*got 16"):
        DCGANConfig(image_size=16)
    with pytest.raises(ArgumentError, match="GANConfig: image_size must be a positive integer, got True"):
        GANConfig(image_size=True)
    assert GANConfig(image_size=16).image_size == 16  # the MLP GAN takes any size
    gan = MLPGAN(GANConfig(image_channels=3, image_size=8, g_hidden=(4,), d_hidden=(4,)))
    with pytest.raises(ShapeError, match=r"\(B, 3, 8, 8\) with B >= 2, got \(2, 1, 8, 8\)"):
        gan.train_step(tinygen.rand(2, 1, 8, 8))
