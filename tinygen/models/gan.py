"""Generative adversarial networks (Goodfellow et al. 2014): an MLP GAN and a DCGAN.

A generator G maps noise z ~ p_z = N(0, I) to an image; a discriminator D maps an image to the
logit of the probability that it came from the data rather than from G. They play the minimax game
(Goodfellow et al. 2014, eq. 1)

    min_G max_D V(D, G) = E_{x ~ p_data}[log D(x)] + E_{z ~ p_z}[log(1 − D(G(z)))].

Both losses are binary cross-entropies on D's logits (`F.binary_cross_entropy_with_logits`, which
never takes the log of 0), written out in `discriminator_loss` and `generator_loss` below:

- D ascends V: it minimises BCE(D(x), 1) + BCE(D(G(z)), 0) = −log D(x) − log(1 − D(G(z))).
- G, in the non-saturating form of section 3 of the paper, maximises log D(G(z)) instead of
  minimising log(1 − D(G(z))): it minimises BCE(D(G(z)), 1) = −log D(G(z)). Early in training D
  rejects fakes confidently, log(1 − D(G(z))) is flat there, and G would get no gradient; −log D(G(z))
  has the same fixed point and strong gradients exactly then.

At the equilibrium D(·) = 1/2 everywhere: loss_d = 2 log 2 ≈ 1.386 and loss_g = log 2 ≈ 0.693.

`MLPGAN` follows the classic Keras MNIST GAN (fully connected layers, LeakyReLU 0.2, BatchNorm
after each hidden activation of G), with two additions: against mode collapse D also sees the
standard deviation of its batch (`MinibatchStdDev`, Karras et al. 2018), and samples come from a
moving average of G's weights (`GAN.sample`, Yazıcı et al. 2019). `DCGAN` follows Radford et
al. (2016): strided (transposed) convolutions instead of pooling, BatchNorm in both networks
except G's output and D's input, ReLU in G, LeakyReLU in D, weights from N(0, 0.02²). Both are trained by `GAN.train_step`, which
is Algorithm 1 of Goodfellow et al. with k = 1 discriminator step per generator step, and Adam
(lr 2e-4, β₁ 0.5) as in the DCGAN paper.

Images are (C, H, W) = (`image_channels`, `image_size`, `image_size`) from the config, 1×28×28
(MNIST) by default: the MLP GAN takes any shape (it sees C·H·W numbers), the DCGAN 28, 32 or 64
pixels (`DCGAN` gives the layout of each).

>>> import tinygen
>>> _ = tinygen.manual_seed(0)
>>> gan = MLPGAN(GANConfig(batch_size=8))
>>> losses = gan.train_step(tinygen.rand(8, 1, 28, 28))
>>> sorted(losses)
['d_fake', 'd_real', 'loss_d', 'loss_g']
>>> gan.sample(4).shape
(4, 1, 28, 28)
"""

import copy
from dataclasses import dataclass

import numpy as np

import tinygen
from tinygen import nn, optim
from tinygen.errors import ArgumentError, ShapeError
from tinygen.models.checks import CONV_STAGES, check_count, check_image_config, check_images, image_shape
from tinygen.nn import functional as F
from tinygen.tensor import Tensor, no_grad

BN_RECALIBRATION = (20, 500)  # batches x images of noise that set the averaged G's BatchNorm statistics


@dataclass
class GANConfig:
    """Hyperparameters of `MLPGAN`; `steps` × `batch_size` is the default `tinygen train gan` run."""

    image_channels: int = 1  # C: 1 grey, 3 RGB (any C >= 1)
    image_size: int = 28  # H = W (any size >= 1)
    latent_dim: int = 100  # dim of z ~ N(0, I)
    # NOTE: the Keras example's generator is 256 → 512 → 1024; this project's specification (and
    # PyTorch-GAN's first three blocks) uses 128 → 256 → 512, a third of the parameters.
    g_hidden: tuple = (128, 256, 512)
    d_hidden: tuple = (512, 256)
    negative_slope: float = 0.2  # LeakyReLU(alpha=0.2)
    # Keras' BatchNormalization(momentum=0.8) keeps running = 0.8 running + 0.2 batch, which is
    # PyTorch's (and tinygen's) momentum=0.2; Keras' default epsilon is 1e-3 (PyTorch's is 1e-5).
    bn_momentum: float = 0.2
    bn_eps: float = 1e-3
    # NOTE: not in the Keras example. Without it this GAN crowds into a few digits (mostly 1s):
    # after the default 60,000 steps FD 447 with the largest digit 36% of the samples, against
    # FD 66 and 14% with it (`benchmarks.quality_curve`, README). See `MinibatchStdDev`.
    minibatch_std: bool = True  # D sees the spread of its batch before its last layer
    # NOTE: not in the Keras example either: samples come from an exponential moving average of
    # G's weights (`GAN.sample`); None samples from G itself.
    ema_decay: float = 0.999
    lr: float = 2e-4
    betas: tuple = (0.5, 0.999)
    batch_size: int = 32  # the Keras example's (in 150 s trials, batch 64 collapsed to mostly 1s)
    steps: int = 60000
    # A checkpoint written before a field existed is rebuilt with the field's value of that time.
    LEGACY = {"minibatch_std": False, "ema_decay": None}

    def __post_init__(self):
        check_image_config(self)


@dataclass
class DCGANConfig:
    """Hyperparameters of `DCGAN`; `width` is the channel count of G's last and D's first layer."""

    image_channels: int = 1  # C: 1 grey, 3 RGB (any C >= 1)
    image_size: int = 28  # H = W: 28, 32 or 64 (see `DCGAN`)
    latent_dim: int = 100
    width: int = 64  # w; at 28 pixels G: 2w x 7 x 7 -> w x 14 x 14 -> C x 28 x 28; D: C -> w -> 2w channels
    negative_slope: float = 0.2
    init_std: float = 0.02  # Radford et al.: all weights from N(0, 0.02^2)
    # NOTE: not in Radford et al.'s MNIST-sized layout: G refines each of its 7×7 and 14×14 stages with
    # a 3×3 convolution (-> BN -> ReLU) before upsampling further (the README gives the FD with and
    # without them: `benchmarks.quality_curve --model dcgan`).
    refine: bool = True
    minibatch_std: bool = True  # D sees the spread of its batch before its last layer, as `MLPGAN`'s
    # None: samples come from G itself. With decay 0.999 the average scored a worse FD than G
    # after the default 4,000 steps: G still improves fast there and the average lags it.
    ema_decay: float = None
    lr: float = 2e-4
    betas: tuple = (0.5, 0.999)
    batch_size: int = 64
    steps: int = 4000
    # A checkpoint written before a field existed is rebuilt with the field's value of that time.
    LEGACY = {"refine": False, "minibatch_std": False}

    def __post_init__(self):
        check_image_config(self, CONV_STAGES)


# --- the two losses ---------------------------------------------------------------------------


def discriminator_loss(real_logits, fake_logits):
    """−(1/m) Σ [log D(x⁽ⁱ⁾) + log(1 − D(G(z⁽ⁱ⁾)))], from D's logits: D ascends V(D, G).

    >>> round(discriminator_loss(tinygen.zeros(3, 1), tinygen.zeros(3, 1)).item(), 4)  # 2 log 2
    1.3863
    """
    # BCE(l, 1) = −log σ(l) and BCE(l, 0) = −log(1 − σ(l)), with σ(l) = D(·)
    return (F.binary_cross_entropy_with_logits(real_logits, tinygen.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, tinygen.zeros_like(fake_logits)))


def generator_loss(fake_logits):
    """−(1/m) Σ log D(G(z⁽ⁱ⁾)): the non-saturating generator loss (G maximises log D(G(z))).

    >>> round(generator_loss(tinygen.zeros(3, 1)).item(), 4)  # log 2
    0.6931
    """
    return F.binary_cross_entropy_with_logits(fake_logits, tinygen.ones_like(fake_logits))


# --- training, sampling, checkpoints: shared by both architectures ----------------------------


class MinibatchStdDev(nn.Module):
    """One more input for D: how varied its batch is (Karras et al. 2018, section 3).

    (B, F) -> (B, F + 1). The extra feature is one number s for the whole batch, repeated on every
    row: the standard deviation of each feature over the B rows, averaged over the F features,

        s = (1/F) Σ_f sqrt(Var_b[x_bf] + eps)      (Var with 1/B, as in the paper).

    D scores each batch on its own (real and fake are separate batches in `train_step`), so a
    generator that has collapsed onto a few images gives batches with a small s, which D learns to
    reject: the generator's gradient then pushes its samples apart. It is a composition of
    primitive ops, so its gradient comes from autograd. A simplification of the minibatch
    discrimination of Salimans et al. (2016), with no parameters.

    >>> x = tinygen.tensor([[0.0, 1.0], [2.0, 1.0]])
    >>> MinibatchStdDev(eps=0.0)(x).numpy()  # per-feature stds 1 and 0: s = 0.5
    array([[0. , 1. , 0.5],
           [2. , 1. , 0.5]], dtype=float32)
    """

    def __init__(self, eps=1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        if x.ndim != 2:
            raise ShapeError(f"MinibatchStdDev takes features (B, F), got shape {tuple(x.shape)}")
        var = ((x - x.mean(0, keepdim=True)) ** 2).mean(0)  # (F,): Var_b[x_bf]
        s = (var + self.eps).sqrt().mean().reshape(1, 1)  # (1, 1)
        return tinygen.cat([x, s.expand(x.shape[0], 1)], 1)  # (B, F) -> (B, F + 1)

    def extra_repr(self):
        return f"eps={self.eps}"


class GAN:
    """What MLPGAN and DCGAN share: the alternating updates, sampling and the state dict.

    A subclass sets `Config` and builds `self.generator` (z (B, latent_dim) -> images
    (B, C, H, W) in [0, 1]) and `self.discriminator` (images -> logits (B, 1)) in
    `_build_networks`. `self.image_shape` is (C, H, W), from the config.
    """

    Config = None

    def __init__(self, config=None):
        self.config = self.Config() if config is None else config
        if not isinstance(self.config, self.Config):
            raise ArgumentError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        self.image_shape = image_shape(self.config)  # (C, H, W)
        self.generator, self.discriminator = self._build_networks(self.config)
        c = self.config
        self.opt_g = optim.Adam(self.generator.parameters(), lr=c.lr, betas=tuple(c.betas))
        self.opt_d = optim.Adam(self.discriminator.parameters(), lr=c.lr, betas=tuple(c.betas))
        self.step = 0
        self.ema = None if c.ema_decay is None else optim.EMA(self.generator, decay=c.ema_decay)
        self._averaged = None  # (step, the averaged generator of that step), made by `averaged`

    def _build_networks(self, config):
        raise NotImplementedError

    @property
    def device(self):
        """The device of the networks (and of their optimizers' state)."""
        return next(self.generator.parameters()).device

    def to(self, device):
        """Move both networks to `device` (their Adam states follow on the next step); returns self."""
        self.generator.to(device)
        self.discriminator.to(device)
        self._averaged = None  # remade on the new device when next sampled
        return self

    def noise(self, n):
        """n draws of z ~ N(0, I), shape (n, latent_dim), from the seeded generator, on the networks' device."""
        return tinygen.randn(n, self.config.latent_dim, device=self.device)

    # Goodfellow et al. (2014), Algorithm 1, with k = 1 and the non-saturating generator loss:
    #   (1) sample z⁽¹⁾..z⁽ᵐ⁾ ~ p_z and x⁽¹⁾..x⁽ᵐ⁾ ~ p_data; update D by ascending
    #           ∇_θd (1/m) Σᵢ [log D(x⁽ⁱ⁾) + log(1 − D(G(z⁽ⁱ⁾)))]
    #   (2) sample a fresh z⁽¹⁾..z⁽ᵐ⁾ ~ p_z; update G by descending (non-saturating form)
    #           ∇_θg −(1/m) Σᵢ log D(G(z⁽ⁱ⁾))
    # "Ascending"/"descending" are both Adam steps on the BCE losses above.
    def train_step(self, images, labels=None):
        """One D update then one G update on a batch of real images (B, C, H, W) in [0, 1].

        Returns {"loss_d", "loss_g", "d_real": mean D(x), "d_fake": mean D(G(z))}, the
        probabilities seen by the discriminator step (before its update). `labels` is ignored:
        these GANs are unconditional.
        """
        # B >= 2: BatchNorm needs two values per channel; a batch from the host is copied to the networks' device
        x = check_images(images, self.image_shape, min_batch=2).to(self.device)
        m = x.shape[0]
        G, D = self.generator, self.discriminator
        G.train()
        D.train()

        # (1) discriminator step; G's output is a constant here (no graph through G).
        with no_grad():
            fake = G(self.noise(m))
        real_logits, fake_logits = D(x), D(fake)  # separate batches: D's BatchNorm sees each alone
        loss_d = discriminator_loss(real_logits, fake_logits)
        self.opt_d.zero_grad()
        loss_d.backward()
        self.opt_d.step()

        # (2) generator step; D is frozen so backward skips its weight gradients (only dD/dinput).
        D.requires_grad_(False)
        try:
            loss_g = generator_loss(D(G(self.noise(m))))
            self.opt_g.zero_grad()
            loss_g.backward()
            self.opt_g.step()
        finally:
            D.requires_grad_(True)
        if self.ema is not None:
            self.ema.update(G)

        self.step += 1
        return {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "d_real": real_logits.detach().sigmoid().mean().item(),
            "d_fake": fake_logits.detach().sigmoid().mean().item(),
        }

    @no_grad()
    def sample(self, n, use_ema=True):
        """n images G(z), z ~ N(0, I): a float32 array (n, C, H, W) in [0, 1].

        The generator runs in eval mode, so its BatchNorm layers normalise with their running
        statistics, not with this batch's: a sample does not depend on the others drawn with it.

        With `config.ema_decay` set (and `use_ema`), the generator is the exponential moving
        average of G's weights over training (Yazıcı et al. 2019), which smooths the oscillation of
        the last iterate. Its BatchNorm statistics are recomputed for the averaged weights, as SWA
        does (Izmailov et al. 2018): G's running statistics belong to G's weights, not to their
        average. See `averaged`. `use_ema=False` samples from G itself.
        """
        check_count(n)
        G = self.averaged() if use_ema and self.ema is not None else self.generator
        was_training = G.training
        G.eval()
        try:
            images = G(self.noise(n))
        finally:
            G.train(was_training)
        return images.numpy().astype(np.float32)

    @no_grad()
    def averaged(self):
        """The averaged generator of this step: EMA weights, BatchNorm statistics recomputed.

        The statistics are the mean over `BN_RECALIBRATION` batches of noise (batch means and
        unbiased variances), drawn from a stream of their own seeded by the step:
        the seeded generator's draws, and so the samples, do not depend on whether this ran.
        Computed once per step and kept (not as an attribute of type Module: data-parallel ranks
        average the BatchNorm statistics of those after every step).
        """
        if self._averaged is not None and self._averaged[0] == self.step:
            return self._averaged[1]
        G = copy.deepcopy(self.generator)
        self.ema.copy_to(G)
        norms = [m for m in G.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
        momenta = [m.momentum for m in norms]
        rng, dtype = np.random.default_rng(self.step), next(G.parameters()).dtype
        batches, size = BN_RECALIBRATION
        G.train()  # a copy: an error here leaves no half-recomputed generator behind
        for m in norms:
            m.reset_running_stats()
        for i in range(batches):
            for m in norms:  # running = the mean over batches 1..i+1 (momentum None, without its counter read)
                m.momentum = 1.0 / (i + 1)
            z = rng.standard_normal((size, self.config.latent_dim)).astype(dtype)
            G(Tensor(z).to(self.device))
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        self._averaged = (self.step, G)
        return G

    def state_dict(self):
        """Both networks (weights and BatchNorm statistics), both Adam states, the step count and,
        with `ema_decay`, the average of G's weights."""
        state = {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state):
        """Restore what `state_dict()` returned, so that training continues exactly."""
        expected = {"generator", "discriminator", "opt_g", "opt_d", "step"} | ({"ema"} if self.ema is not None else set())
        if not isinstance(state, dict) or set(state) != expected:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ArgumentError(f"a {type(self).__name__} state dict has the keys {sorted(expected)}, got {keys}")
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self._averaged = None


class MLPGAN(GAN):
    """The fully connected GAN of the Keras MNIST example, on images of D = C·H·W numbers (784 for MNIST).

    G: z (100) -> [Linear -> LeakyReLU(0.2) -> BatchNorm] x 3 (128, 256, 512) -> Linear(D) -> sigmoid
         -> (C, H, W)
    D: image -> Flatten (D) -> [Linear -> LeakyReLU(0.2)] x 2 (512, 256) -> MinibatchStdDev (257)
         -> Linear(1): a logit   (without the MinibatchStdDev when config.minibatch_std is False)

    NOTE: the Keras example ends G with tanh on images scaled to [-1, 1]; here images are in
    [0, 1], so G ends with a sigmoid (σ(2a) = (tanh(a) + 1) / 2: the same family of outputs).
    As in that example BatchNorm comes after the activation, and D has no normalisation.
    Weights keep PyTorch's default initialisation. The minibatch standard deviation and the
    averaged generator are this project's additions (`GANConfig.minibatch_std`, `ema_decay`).
    """

    Config = GANConfig

    def _build_networks(self, c):
        n_pixels = int(np.prod(self.image_shape))  # D = C·H·W
        g_layers, width = [], c.latent_dim
        for hidden in c.g_hidden:
            g_layers += [nn.Linear(width, hidden), nn.LeakyReLU(c.negative_slope),
                         nn.BatchNorm1d(hidden, eps=c.bn_eps, momentum=c.bn_momentum)]
            width = hidden
        g_layers += [nn.Linear(width, n_pixels), nn.Sigmoid(),
                     nn.Unflatten(1, self.image_shape)]  # (B, D) -> (B, C, H, W)
        d_layers, width = [nn.Flatten()], n_pixels  # (B, C, H, W) -> (B, D)
        for hidden in c.d_hidden:
            d_layers += [nn.Linear(width, hidden), nn.LeakyReLU(c.negative_slope)]
            width = hidden
        if c.minibatch_std:
            d_layers.append(MinibatchStdDev())  # (B, width) -> (B, width + 1)
            width += 1
        d_layers.append(nn.Linear(width, 1))
        return nn.Sequential(*g_layers), nn.Sequential(*d_layers)


class DCGAN(GAN):
    """A deep convolutional GAN (Radford et al. 2016) for C×S×S images, S = 28, 32 or 64, w = `width` (64).

    G starts from a b×b map and doubles it n times with stride-2 transposed convolutions; D mirrors
    it with stride-2 convolutions. Going away from the image, each stage doubles the channels:

        S = 28: b = 7, n = 2   G: 2w×7×7 -> w×14×14 -> C×28×28          (the MNIST layout)
        S = 32: b = 4, n = 3   G: 4w×4×4 -> 2w×8×8 -> w×16×16 -> C×32×32
        S = 64: b = 4, n = 4   G: 8w×4×4 -> 4w×8×8 -> 2w×16×16 -> w×32×32 -> C×64×64
                               (Radford et al.'s 64×64 generator, there with w = 128)

    with widths m_1 > ... > m_n = w, m_i = 2^(n−i) w (the feature maps from b×b up to S/2):

    G: z -> Linear -> (m_1, b, b) -> BN -> ReLU -> [Conv(m_1->m_1, k3 p1) -> BN -> ReLU]
         -> for each next width m: ConvT(k4 s2 p1) -> (m, 2×size) -> BN -> ReLU -> [Conv(m->m, k3 p1) -> BN -> ReLU]
         -> ConvT(w->C, k4 s2 p1) -> (C, S, S) -> sigmoid
    D: (C, S, S) -> Conv(C->w, k4 s2 p1) -> (w, S/2, S/2) -> LeakyReLU(0.2)
         -> for each next width m (2w, 4w, ...): Conv(k4 s2 p1) -> (m, ½×size) -> BN -> LeakyReLU(0.2)
         -> (m_1, b, b) -> Flatten (m_1 b²) -> [MinibatchStdDev] (m_1 b² + 1) -> Linear -> 1 logit

    At 1×28×28 these are the layers, names and shapes of the DCGAN before colour images, so its
    checkpoints load unchanged. The paper's guidelines: strided convolutions learn their own up-
    and downsampling (no pooling); BatchNorm everywhere except G's output and D's input layer; ReLU
    in G, LeakyReLU in D. A layer followed by BatchNorm has no bias (BN's shift replaces it). Weights
    are drawn from N(0, 0.02²) and BatchNorm scales from N(1, 0.02²), as in the PyTorch DCGAN
    example; biases start at 0.

    NOTE: the bracketed layers are this project's additions (`DCGANConfig.refine`, `minibatch_std`;
    both False give the plain layout of earlier checkpoints). The README's DCGAN curve gives the FD
    with and without them.
    """

    Config = DCGANConfig

    def _build_networks(self, c):
        C, S = c.image_channels, c.image_size
        b, n = CONV_STAGES[S]  # the smallest map b×b and the number of stride-2 stages
        widths = [c.width * 2 ** (n - 1 - i) for i in range(n)]  # m_1..m_n: [2w, w] at 28, [4w, 2w, w] at 32

        def refine(channels):  # a 3×3 convolution that keeps the size: (B, m, h, h) -> (B, m, h, h)
            if not c.refine:
                return []
            return [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]

        g_layers = [
            nn.Linear(c.latent_dim, widths[0] * b * b, bias=False),
            nn.Unflatten(1, (widths[0], b, b)),  # (B, m_1*b*b) -> (B, m_1, b, b)
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
            *refine(widths[0]),
        ]
        for m_in, m_out in zip(widths, widths[1:]):
            g_layers += [
                # (B, m_in, h, h) -> (B, m_out, 2h, 2h)
                nn.ConvTranspose2d(m_in, m_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(m_out),
                nn.ReLU(),
                *refine(m_out),
            ]
        g_layers += [
            nn.ConvTranspose2d(widths[-1], C, 4, stride=2, padding=1),  # (B, w, S/2, S/2) -> (B, C, S, S)
            nn.Sigmoid(),
        ]
        d_layers = [
            nn.Conv2d(C, widths[-1], 4, stride=2, padding=1),  # (B, C, S, S) -> (B, w, S/2, S/2)
            nn.LeakyReLU(c.negative_slope),
        ]
        for m_in, m_out in zip(widths[::-1], widths[-2::-1]):
            d_layers += [
                # (B, m_in, h, h) -> (B, m_out, h/2, h/2)
                nn.Conv2d(m_in, m_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(m_out),
                nn.LeakyReLU(c.negative_slope),
            ]
        features = widths[0] * b * b
        d_layers += [
            nn.Flatten(),  # (B, m_1, b, b) -> (B, m_1*b*b)
            *([MinibatchStdDev()] if c.minibatch_std else []),  # -> (B, m_1*b*b + 1)
            nn.Linear(features + int(c.minibatch_std), 1),
        ]
        generator, discriminator = nn.Sequential(*g_layers), nn.Sequential(*d_layers)
        for module in list(generator.modules()) + list(discriminator.modules()):
            _dcgan_init_(module, c.init_std)
        return generator, discriminator


def _dcgan_init_(module, std):
    """N(0, std²) weights for (transposed) convolutions and linear layers, N(1, std²) BN scales, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, std)
        nn.init.zeros_(module.bias)

