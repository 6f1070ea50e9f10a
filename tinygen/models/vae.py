"""Variational autoencoders (Kingma & Welling 2014): an MLP VAE and a convolutional VAE.

A latent z ~ p(z) generates an image through a decoder p_θ(x | z); an encoder
q_φ(z | x) = N(μ_φ(x), diag σ²_φ(x)) approximates the posterior. Both are trained by maximising the
evidence lower bound (ELBO, eq. 3 of the paper) on log p_θ(x):

    log p_θ(x) >= ELBO(x) = E_{q_φ(z|x)}[log p_θ(x | z)] − KL(q_φ(z | x) ‖ p(z)).

- Decoder, `likelihood` in the config:
  "bernoulli" (the default): a Bernoulli per pixel with logits l = f_θ(z), so with p = σ(l)
      log p_θ(x | z) = Σ_pixels [x log p + (1 − x) log(1 − p)] = −BCE_with_logits(l, x) summed.
      NOTE: by default the targets x are the [0, 1] grey levels themselves ("continuous"
      Bernoulli targets, as the PyTorch VAE example does). That is not a normalised likelihood
      for grey levels, so the ELBO is only comparable to published numbers (about −100 nats on
      binarised MNIST) with `binarize=True`, which draws x_bin ~ Bernoulli(x) afresh for every
      batch (dynamic binarisation) and evaluates the bound on binary images.
  "logistic": for 8-bit images, colour or grey, x = k/255 with k in 0..255 per sub-pixel (each
      colour channel of each pixel). The decoder gives a location μ and a log-scale log s per
      sub-pixel (2C output channels), and x has the mass of a logistic Logistic(μ, s) on its bin
      of width Δ = 1/255 (Salimans et al. 2017, PixelCNN++, eq. 2, with one mixture component):
          P(x) = σ((x + Δ/2 − μ)/s) − σ((x − Δ/2 − μ)/s),
      the bins of 0 and 1 reaching to −∞ and +∞, so the 256 probabilities of a sub-pixel sum
      to 1 and log p_θ(x | z) = Σ_sub-pixels log P(x) <= 0 is a log-probability of the image:
      the ELBO is a true lower bound on log p(x) of the 8-bit data, and −ELBO / (C·H·W ln 2) a
      true upper bound in bits/dim. Why the logistic rather than the discretised Gaussian of Ho
      et al.: its CDF is the sigmoid, so the bin mass is a composition of tinygen's primitives
      (no erf) and its gradient comes from autograd; and it is the likelihood behind published
      bits/dim of 8-bit colour images (PixelCNN++; the IAF VAE of Kingma et al. 2016). A learned
      scale per sub-pixel lets the decoder be sure of flat backgrounds and unsure at edges.
      See `discretized_logistic_log_prob` for the form computed. Images are quantised to the
      8-bit grid (round(255 x)/255) before the bound, and samples are the locations μ clipped
      to [0, 1].
- Expectation: one sample (L = 1 in the paper) with the reparameterisation trick
      z = μ + σ ⊙ ε,  ε ~ N(0, I),  σ = exp(½ log σ²),
  so the sample is a differentiable function of φ and the noise carries no parameter.
- The prior p(z), `prior` in the config:
  "standard": N(0, I), as in the paper. The KL between two Gaussians is then in closed form (the
      paper's Appendix B), summed over the J latents:
          KL(N(μ, σ²) ‖ N(0, I)) = −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²).
  "vamp" (the default): the VampPrior of Tomczak & Welling (2018), a mixture of the encoder's own
      posteriors at K learned pseudo-inputs u_1..u_K (images, trained with everything else):
          p_λ(z) = (1/K) Σ_k q_φ(z | u_k).
      The KL has no closed form; it is estimated with the same z as the first term,
          KL ≈ log q_φ(z | x) − log p_λ(z),
      unbiased, as the reconstruction term is. Samples pick a k at random and draw z ~ q_φ(z | u_k).
  Why the default is "vamp": a VAE's samples are decoder means at z ~ p(z), and with N(0, I) they
  fall where no training image's code lies. Trained with N(0, I) on the 60,000 training images for
  60,000 steps, the MLP VAE's samples scored FD 328.5, but the decoder means at the posterior means
  of 10,000 training images (z = μ_φ(x), reconstructions) 32.0: the decoder was fine, the prior
  was not (`python -m benchmarks.vae_prior_gap`, README). The learned prior puts its mass where
  the posteriors are.

The training loss is −ELBO per image in nats: summed over the C·H·W sub-pixels (784 for MNIST)
and the latents, averaged over the batch (`recon` + `kl`). Adam with lr 1e-3.

Images are (C, H, W) = (`image_channels`, `image_size`, `image_size`) from the config, 1×28×28 by
default: the MLP VAE takes any shape, the ConvVAE 28, 32 or 64 pixels (`ConvVAE`).

>>> import tinygen
>>> _ = tinygen.manual_seed(0)
>>> vae = VAE()
>>> losses = vae.train_step(tinygen.rand(8, 1, 28, 28))
>>> sorted(losses)
['kl', 'loss', 'recon']
>>> vae.sample(4).shape
(4, 1, 28, 28)
>>> colour = VAE(VAEConfig(image_channels=3, image_size=16, likelihood="logistic", pseudo_inputs=10))
>>> sorted(colour.train_step(tinygen.rand(8, 3, 16, 16)))
['kl', 'loss', 'recon']
>>> colour.sample(2).shape
(2, 3, 16, 16)
"""

import math
from dataclasses import dataclass

import numpy as np

import tinygen
from tinygen import backend, nn, optim
from tinygen.errors import ArgumentError
from tinygen.models.checks import CONV_STAGES, check_count, check_image_config, check_images, image_shape
from tinygen.nn import functional as F
from tinygen.tensor import Tensor, no_grad

PRIORS = ("vamp", "standard")
LIKELIHOODS = ("bernoulli", "logistic")
LOG_2PI = math.log(2 * math.pi)
BIN = 1 / 255  # Δ, the step of the 8-bit grid {0, 1/255, ..., 1}
# NOTE: the logistic's log-scale is clamped from below, as in PixelCNN++ (there -7 on [-1, 1]):
# at s = e^-8 (a twelfth of a bin) a bin centred on μ already holds 99.4% of the mass, and a
# smaller s would only bring 1/s nearer to overflow in float32.
LOG_SCALE_MIN = -8.0


@dataclass
class VAEConfig:
    """Hyperparameters of the MLP `VAE`: the sizes of the PyTorch VAE example (400 ReLU units;
    the paper's MLPs, Appendix C, use tanh hidden units)."""

    image_channels: int = 1  # C: 1 grey, 3 RGB (any C >= 1)
    image_size: int = 28  # H = W (any size >= 1)
    hidden: int = 400
    latent_dim: int = 20  # J, the dimension of z
    prior: str = "vamp"  # "vamp": the VampPrior; "standard": N(0, I) (see the module's docstring)
    pseudo_inputs: int = 500  # K of the VampPrior (the paper's for MNIST)
    # "bernoulli": Bernoulli pixels (MNIST); "logistic": the discretised logistic of 8-bit images,
    # whose ELBO is a bound in bits/dim (see the module's docstring)
    likelihood: str = "bernoulli"
    binarize: bool = False  # True: train on x_bin ~ Bernoulli(x), drawn per batch (Bernoulli only)
    lr: float = 1e-3
    batch_size: int = 128
    # NOTE: the K = 500 pseudo-inputs go through the encoder at every step, which makes a step
    # about 4 times as long as with N(0, I): 20,000 steps take 1.3 times as long as 60,000 did.
    steps: int = 20000
    # A checkpoint written before a field existed is rebuilt with the field's value of that time.
    LEGACY = {"prior": "standard"}

    def __post_init__(self):
        _check_vae_config(self)


@dataclass
class ConvVAEConfig:
    """Hyperparameters of `ConvVAE`: stride-2 convolutions (32, 64 channels at 28 pixels) each way."""

    image_channels: int = 1  # C: 1 grey, 3 RGB (any C >= 1)
    image_size: int = 28  # H = W: 28, 32 or 64 (see `ConvVAE`)
    # the channels of the first stages from the image; sizes with more stages double the last
    channels: tuple = (32, 64)
    latent_dim: int = 16
    prior: str = "vamp"
    # fewer than the MLP VAE's: the pseudo-inputs go through the convolutional encoder at every
    # step, and with 500 a step took 3.2 times as long as with N(0, I)
    pseudo_inputs: int = 100
    likelihood: str = "bernoulli"
    binarize: bool = False
    lr: float = 1e-3
    batch_size: int = 128
    steps: int = 5000
    LEGACY = {"prior": "standard"}

    def __post_init__(self):
        _check_vae_config(self, CONV_STAGES)
        channels, stages = self.channels, CONV_STAGES[self.image_size][1]
        if (not isinstance(channels, (tuple, list)) or not 1 <= len(channels) <= stages
                or not all(isinstance(m, (int, np.integer)) and not isinstance(m, bool) and m >= 1 for m in channels)):
            raise ArgumentError(f"ConvVAEConfig: channels must be 1 to {stages} positive integers at {self.image_size} "
                                f"pixels (one per stride-2 stage), got {channels!r}")


def _check_vae_config(c, sizes=None):
    name = type(c).__name__
    check_image_config(c, sizes)
    if c.prior not in PRIORS:
        raise ArgumentError(f"{name}: prior must be one of {PRIORS}, got {c.prior!r}")
    if c.prior == "vamp" and (not isinstance(c.pseudo_inputs, (int, np.integer)) or c.pseudo_inputs < 1):
        raise ArgumentError(f"{name}: the VampPrior needs a positive integer of pseudo_inputs, got {c.pseudo_inputs!r}")
    if c.likelihood not in LIKELIHOODS:
        raise ArgumentError(f"{name}: likelihood must be one of {LIKELIHOODS}, got {c.likelihood!r}")
    if c.binarize and c.likelihood != "bernoulli":
        raise ArgumentError(f"{name}: binarize=True draws binary images for a Bernoulli decoder; "
                            f"the {c.likelihood} likelihood takes the 8-bit images themselves")


# --- the two terms of the ELBO -----------------------------------------------------------------


def bernoulli_nll(logits, x):
    """−log p(x | z) per image (B,) for Bernoulli pixels with logits l: Σ_pixels BCE(l, x).

    −log p = −Σ [x log σ(l) + (1 − x) log(1 − σ(l))], computed from the logits so no log(0) occurs.

    >>> round(bernoulli_nll(tinygen.zeros(1, 1, 28, 28), tinygen.ones(1, 1, 28, 28)).item(), 2)  # 784 log 2
    543.43
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))


def discretized_logistic_log_prob(x, mean, log_scale):
    """log P(x) elementwise for 8-bit values x = k/255 under Logistic(μ, s) discretised to bins of Δ = 1/255.

    P(x) = σ(b) − σ(a) with the bin's standardised edges a = (x − Δ/2 − μ)/s and b = (x + Δ/2 − μ)/s;
    the bin of 0 reaches down to −∞ (σ(a) = 0), the bin of 1 up to +∞ (σ(b) = 1), so the 256
    probabilities sum to 1 (Salimans et al. 2017, eq. 2). Computed as

        log P(x) = log σ(b) + log σ(−a) + log(1 − e^(−Δ/s)),

    because σ(b) − σ(a) = σ(b) σ(−a) (1 − e^(a − b)) and b − a = Δ/s; with log σ(t) = −softplus(−t)
    no term overflows or cancels, where the difference of two probabilities near 1 would lose
    every digit in a far tail. The bin of 0 keeps log σ(b) only, the bin of 1 log σ(−a) only.
    A composition of primitives: its gradient comes from autograd. The arguments broadcast; s = exp(log_scale).

    >>> grid = tinygen.tensor(np.arange(256) / 255)  # the 256 values of one sub-pixel, float64
    >>> p = discretized_logistic_log_prob(grid, 0.3, tinygen.tensor(np.full(256, -3.0))).exp()
    >>> round(p.sum().item(), 12)
    1.0
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    inv_scale = (-log_scale).exp()  # 1/s
    lower = (x - BIN / 2 - mean) * inv_scale  # a
    upper = (x + BIN / 2 - mean) * inv_scale  # b
    above_0 = (x > BIN / 2).to(x.dtype)  # 1 where k > 0: the bin has a lower edge
    below_1 = (x < 1 - BIN / 2).to(x.dtype)  # 1 where k < 255: the bin has an upper edge
    log_width = (-(-BIN * inv_scale).exp()).log1p()  # log(1 − e^(−Δ/s))
    return -below_1 * F.softplus(-upper) - above_0 * F.softplus(lower) + above_0 * below_1 * log_width


def gaussian_log_density(z, mu, logvar):
    """log N(z; μ, diag σ²) summed over the last axis: −½ Σ_j ((z_j − μ_j)² / σ_j² + log σ_j² + log 2π).

    The arguments broadcast against each other, so z (B, 1, J) and μ, log σ² (K, J) give (B, K).

    >>> zero = tinygen.zeros(1, 2)
    >>> round(gaussian_log_density(zero, zero, zero).item(), 4)  # two latents: 2 × (−½ log 2π) = −log 2π
    -1.8379
    """
    d = z - mu
    return -0.5 * (d * d * (-logvar).exp() + logvar + LOG_2PI).sum(-1)


def gaussian_kl(mu, logvar):
    """KL(N(μ, diag σ²) ‖ N(0, I)) per row (B,): −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²).

    >>> gaussian_kl(tinygen.zeros(1, 20), tinygen.zeros(1, 20)).item() == 0  # q = p
    True
    """
    return -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum(1)


class VAE:
    """The MLP VAE: x (D = C·H·W, 784 for MNIST) -> 400 -> ReLU -> (μ, log σ²) (20 each);
    z (20) -> 400 -> ReLU -> D Bernoulli logits (or 2D: the logistic's μ and log s).

    Subclasses change the networks only (`_build_networks`); the ELBO, training, sampling and
    checkpoints are shared.
    """

    Config = VAEConfig

    def __init__(self, config=None):
        self.config = self.Config() if config is None else config
        if not isinstance(self.config, self.Config):
            raise ArgumentError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        c = self.config
        self.image_shape = image_shape(c)  # (C, H, W)
        # the decoder's channels: a Bernoulli logit per sub-pixel, or the logistic's μ and log s
        self.output_channels = c.image_channels * (2 if c.likelihood == "logistic" else 1)
        encoder, features, decoder = self._build_networks(c)
        self.net = nn.Module()
        self.net.encoder = encoder  # x (B, C, H, W) -> h (B, features)
        self.net.to_mu = nn.Linear(features, c.latent_dim)  # h -> μ (B, J)
        self.net.to_logvar = nn.Linear(features, c.latent_dim)  # h -> log σ² (B, J)
        self.net.decoder = decoder  # z (B, J) -> (B, output_channels, H, W)
        if c.prior == "vamp":
            # the pseudo-inputs u_k, images (K, C, H, W); they start as faint noise, N(0.05, 0.01²),
            # as in the paper's MNIST runs, and `pseudo_images` clamps them to [0, 1]
            self.net.pseudo_inputs = nn.Parameter(tinygen.zeros(c.pseudo_inputs, *self.image_shape).data)
            nn.init.normal_(self.net.pseudo_inputs, 0.05, 0.01)
        self.optimizer = optim.Adam(self.net.parameters(), lr=c.lr)
        self.step = 0

    @property
    def device(self):
        """The device of the networks (and of the optimizer's state)."""
        return next(self.net.parameters()).device

    def to(self, device):
        """Move the networks to `device` (the Adam state follows on the next step); returns self."""
        self.net.to(device)
        return self

    def _build_networks(self, c):
        C, H, W = self.image_shape
        encoder = nn.Sequential(
            nn.Flatten(),  # (B, C, H, W) -> (B, C*H*W)
            nn.Linear(C * H * W, c.hidden),
            nn.ReLU(),
        )
        decoder = nn.Sequential(
            nn.Linear(c.latent_dim, c.hidden),
            nn.ReLU(),
            nn.Linear(c.hidden, self.output_channels * H * W),
            nn.Unflatten(1, (self.output_channels, H, W)),  # (B, C'*H*W) -> (B, C', H, W)
        )
        return encoder, c.hidden, decoder

    # --- the model ------------------------------------------------------------------------------

    def encode(self, x):
        """The parameters of q_φ(z | x): μ and log σ², each (B, J)."""
        h = self.net.encoder(x)
        return self.net.to_mu(h), self.net.to_logvar(h)

    def decode(self, z):
        """The decoder's output f_θ(z): the Bernoulli logits (B, C, H, W), or for the logistic the
        locations μ (channels 0..C−1) and log-scales log s (channels C..2C−1), (B, 2C, H, W)."""
        return self.net.decoder(z)

    def reconstruction_nll(self, out, x):
        """−log p_θ(x | z) per image (B,) in nats, from the decoder output `out` = f_θ(z) and the
        images x (B, C, H, W)."""
        if self.config.likelihood == "bernoulli":
            return bernoulli_nll(out, x)
        C = self.config.image_channels
        log_scale = out[:, C:].clamp(min=LOG_SCALE_MIN)
        return -discretized_logistic_log_prob(x, out[:, :C], log_scale).sum((1, 2, 3))

    def decoder_mean(self, out):
        """The image the decoder output stands for, in [0, 1]: the Bernoulli means σ(l), or the
        logistic's locations μ clipped to [0, 1]."""
        if self.config.likelihood == "bernoulli":
            return out.sigmoid()
        return out[:, :self.config.image_channels].clamp(0.0, 1.0)

    def pseudo_images(self):
        """The VampPrior's pseudo-inputs u_k clamped to [0, 1] (the paper's hardtanh): (K, C, H, W)."""
        return self.net.pseudo_inputs.clamp(0.0, 1.0)

    def log_prior(self, z):
        """log p(z) per row (B,) of latents z (B, J).

        standard: log N(z; 0, I). vamp: log (1/K) Σ_k q(z | u_k) = logsumexp_k log N(z; μ_k, σ_k²) − log K.
        """
        if self.config.prior == "standard":
            return -0.5 * (z * z + LOG_2PI).sum(1)
        mu_k, logvar_k = self.encode(self.pseudo_images())  # (K, J) each
        B, J = z.shape
        log_q_k = gaussian_log_density(z.reshape(B, 1, J), mu_k, logvar_k)  # (B, K): log q(z_b | u_k)
        return log_q_k.logsumexp(1) - math.log(mu_k.shape[0])

    def negative_elbo_terms(self, x, eps=None):
        """Per image: (−E_q[log p(x|z)], KL(q(z|x) ‖ p(z))), each (B,), their sum −ELBO(x) in nats.

        The first is estimated with one z = μ + σ ⊙ ε; the KL is in closed form for the standard
        prior and estimated with the same z for the VampPrior. `eps` (B, J) is the noise ε; None
        draws it from N(0, I) with the seeded generator.
        """
        mu, logvar = self.encode(x)
        if eps is None:
            eps = tinygen.randn(*mu.shape, dtype=mu.dtype, device=mu.device)
        z = mu + (0.5 * logvar).exp() * eps  # z = μ + σ ⊙ ε, σ = exp(½ log σ²)
        if self.config.prior == "standard":
            kl = gaussian_kl(mu, logvar)
        else:
            log_q = -0.5 * (eps * eps + logvar + LOG_2PI).sum(1)  # log N(z; μ, σ²), as (z − μ)/σ = ε
            kl = log_q - self.log_prior(z)
        return self.reconstruction_nll(self.decode(z), x), kl

    def _targets(self, images):
        """The images the bound is computed on: as given, x_bin ~ Bernoulli(x) if `binarize`, or
        for the logistic quantised to the 8-bit grid, round(255 x) / 255."""
        x = check_images(images, self.image_shape).to(self.device)  # a batch from the host goes to the networks' device
        if self.config.binarize:
            x = (tinygen.rand(*x.shape, dtype=x.dtype, device=x.device) < x).to(x.dtype)
        elif self.config.likelihood == "logistic":
            xp = backend.get_array_module(x.data)
            x = Tensor(xp.rint(x.data * 255) / 255, device=x.device)
        return x

    # --- the protocol ---------------------------------------------------------------------------

    def train_step(self, images, labels=None):
        """One Adam step on −ELBO averaged over the batch (B, C, H, W) in [0, 1].

        Returns {"loss": −ELBO, "recon": −E_q[log p(x|z)], "kl": KL(q(z|x) ‖ p(z))}, each in nats
        per image (batch means); loss = recon + kl. `labels` is ignored.
        """
        x = self._targets(images)
        self.net.train()
        recon, kl = self.negative_elbo_terms(x)
        recon, kl = recon.mean(), kl.mean()
        loss = recon + kl
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}

    @no_grad()
    def elbo(self, images):
        """ELBO(x) per image in nats, a float64 array (B,), for evaluation (no gradients).

        A one-sample estimate of the expectation (ε drawn from the seeded generator), so it is
        unbiased for the ELBO; the images are binarised (`binarize=True`) or quantised (the
        logistic) first, as in training.
        """
        recon, kl = self.negative_elbo_terms(self._targets(images))
        return -(recon.numpy() + kl.numpy()).astype(np.float64)

    @no_grad()
    def sample(self, n):
        """n decoder means at z ~ p(z) (`decoder_mean`): a float32 array (n, C, H, W) in [0, 1].

        Standard prior: z ~ N(0, I). VampPrior: k uniform in 0..K−1, then z ~ q(z | u_k).
        NOTE: these are the decoder's means, not draws from p_θ(x | z): a draw adds independent
        noise to every sub-pixel (salt and pepper for the Bernoulli).
        """
        check_count(n)
        if self.config.prior == "standard":
            z = tinygen.randn(n, self.config.latent_dim, device=self.device)
        else:
            mu_k, logvar_k = self.encode(self.pseudo_images())  # (K, J) each
            k = backend.generator().integers(0, mu_k.shape[0], n)
            eps = tinygen.randn(n, self.config.latent_dim, dtype=mu_k.dtype, device=self.device)
            z = mu_k[k] + (0.5 * logvar_k[k]).exp() * eps
        return self.decoder_mean(self.decode(z)).numpy().astype(np.float32)

    def state_dict(self):
        """The networks, the Adam state and the step count."""
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step}

    def load_state_dict(self, state):
        """Restore what `state_dict()` returned, so that training continues exactly."""
        expected = {"net", "optimizer", "step"}
        if not isinstance(state, dict) or set(state) != expected:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ArgumentError(f"a {type(self).__name__} state dict has the keys {sorted(expected)}, got {keys}")
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])


class ConvVAE(VAE):
    """A convolutional VAE for C×S×S images, S = 28, 32 or 64, with the stages of `DCGAN`:

        S = 28: 28 -> 14 -> 7            channels (c₁, c₂) = (32, 64)   (the MNIST layout)
        S = 32: 32 -> 16 -> 8 -> 4       channels (c₁, c₂, 2c₂)
        S = 64: 64 -> 32 -> 16 -> 8 -> 4 channels (c₁, c₂, 2c₂, 4c₂)

    `channels` gives the first stages' widths from the image; a size with more stages doubles
    the last. With stage widths m_1..m_n and the smallest map b×b (7 or 4):

    encoder: (C, S, S) -> Conv(C->m_1, k4 s2 p1) -> (m_1, S/2, S/2) -> ReLU -> ... -> Conv(m_{n−1}->m_n, k4 s2 p1)
             -> (m_n, b, b) -> ReLU -> Flatten -> Linear heads -> μ, log σ² (J = 16 each)
    decoder: z -> Linear -> ReLU -> (m_n, b, b) -> ConvT(m_n->m_{n−1}, k4 s2 p1) -> ReLU -> ...
             -> ConvT(m_1->C', k4 s2 p1) -> (C', S, S): C' = C logits, or 2C (the logistic's μ, log s)

    At 1×28×28 with the Bernoulli these are the layers, names and shapes from before colour
    images, so its checkpoints load unchanged.
    """

    Config = ConvVAEConfig

    def _build_networks(self, c):
        C, S = c.image_channels, c.image_size
        b, n = CONV_STAGES[S]
        widths = list(c.channels)
        widths += [widths[-1] * 2 ** i for i in range(1, n - len(widths) + 1)]  # m_1..m_n
        enc_layers = []
        for m_in, m_out in zip([C] + widths, widths):
            # (B, m_in, h, h) -> (B, m_out, h/2, h/2)
            enc_layers += [nn.Conv2d(m_in, m_out, 4, stride=2, padding=1), nn.ReLU()]
        encoder = nn.Sequential(*enc_layers, nn.Flatten())  # (B, m_n, b, b) -> (B, m_n*b*b)
        dec_layers = [
            nn.Linear(c.latent_dim, widths[-1] * b * b),
            nn.ReLU(),
            nn.Unflatten(1, (widths[-1], b, b)),  # (B, m_n*b*b) -> (B, m_n, b, b)
        ]
        for m_in, m_out in zip(widths[::-1], widths[-2::-1]):
            # (B, m_in, h, h) -> (B, m_out, 2h, 2h)
            dec_layers += [nn.ConvTranspose2d(m_in, m_out, 4, stride=2, padding=1), nn.ReLU()]
        # (B, m_1, S/2, S/2) -> (B, C', S, S)
        dec_layers.append(nn.ConvTranspose2d(widths[0], self.output_channels, 4, stride=2, padding=1))
        return encoder, widths[-1] * b * b, nn.Sequential(*dec_layers)
