"""Variational autoencoders (Kingma & Welling 2014): an MLP VAE and a convolutional VAE.

A latent z ~ p(z) generates an image through a decoder p_θ(x | z); an encoder
q_φ(z | x) = N(μ_φ(x), diag σ²_φ(x)) approximates the posterior. Both are trained by maximising the
evidence lower bound (ELBO, eq. 3 of the paper) on log p_θ(x):

    log p_θ(x) >= ELBO(x) = E_{q_φ(z|x)}[log p_θ(x | z)] − KL(q_φ(z | x) ‖ p(z)).

- Decoder: a Bernoulli per pixel with logits l = f_θ(z), so with p = σ(l)
      log p_θ(x | z) = Σ_pixels [x log p + (1 − x) log(1 − p)] = −BCE_with_logits(l, x) summed.
  NOTE: by default the targets x are the [0, 1] grey levels themselves ("continuous" Bernoulli
  targets, as the PyTorch VAE example does). That is not a normalised likelihood for grey
  levels, so the ELBO is only comparable to published numbers (about −100 nats on binarised
  MNIST) with `binarize=True`, which draws x_bin ~ Bernoulli(x) afresh for every batch
  (dynamic binarisation) and evaluates the bound on binary images.
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

The training loss is −ELBO per image in nats: summed over the 784 pixels and the latents,
averaged over the batch (`recon` + `kl`). Adam with lr 1e-3.

>>> import tinygen
>>> _ = tinygen.manual_seed(0)
>>> vae = VAE()
>>> losses = vae.train_step(tinygen.rand(8, 1, 28, 28))
>>> sorted(losses)
['kl', 'loss', 'recon']
>>> vae.sample(4).shape
(4, 1, 28, 28)
"""

import math
from dataclasses import dataclass

import numpy as np

import tinygen
from tinygen import backend, nn, optim
from tinygen.errors import ArgumentError, DTypeError, ShapeError
from tinygen.models.checks import check_count, check_unit_range
from tinygen.nn import functional as F
from tinygen.tensor import Tensor, no_grad

IMAGE_SHAPE = (1, 28, 28)  # (C, H, W) of an MNIST digit
PRIORS = ("vamp", "standard")
LOG_2PI = math.log(2 * math.pi)


@dataclass
class VAEConfig:
    """Hyperparameters of the MLP `VAE`: the sizes of the PyTorch VAE example (400 ReLU units;
    the paper's MLPs, Appendix C, use tanh hidden units)."""

    hidden: int = 400
    latent_dim: int = 20  # J, the dimension of z
    prior: str = "vamp"  # "vamp": the VampPrior; "standard": N(0, I) (see the module's docstring)
    pseudo_inputs: int = 500  # K of the VampPrior (the paper's for MNIST)
    binarize: bool = False  # True: train on x_bin ~ Bernoulli(x), drawn per batch
    lr: float = 1e-3
    batch_size: int = 128
    # NOTE: the K = 500 pseudo-inputs go through the encoder at every step, which makes a step
    # about 4 times as long as with N(0, I): 20,000 steps take 1.3 times as long as 60,000 did.
    steps: int = 20000
    # A checkpoint written before a field existed is rebuilt with the field's value of that time.
    LEGACY = {"prior": "standard"}


@dataclass
class ConvVAEConfig:
    """Hyperparameters of `ConvVAE`: two stride-2 convolutions (32, 64 channels) each way."""

    channels: tuple = (32, 64)
    latent_dim: int = 16
    prior: str = "vamp"
    # fewer than the MLP VAE's: the pseudo-inputs go through the convolutional encoder at every
    # step, and with 500 a step took 3.2 times as long as with N(0, I)
    pseudo_inputs: int = 100
    binarize: bool = False
    lr: float = 1e-3
    batch_size: int = 128
    steps: int = 5000
    LEGACY = {"prior": "standard"}


# --- the two terms of the ELBO -----------------------------------------------------------------


def bernoulli_nll(logits, x):
    """−log p(x | z) per image (B,) for Bernoulli pixels with logits l: Σ_pixels BCE(l, x).

    −log p = −Σ [x log σ(l) + (1 − x) log(1 − σ(l))], computed from the logits so no log(0) occurs.

    >>> round(bernoulli_nll(tinygen.zeros(1, 1, 28, 28), tinygen.ones(1, 1, 28, 28)).item(), 2)  # 784 log 2
    543.43
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))


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
    """The MLP VAE: x (784) -> 400 -> ReLU -> (μ, log σ²) (20 each); z (20) -> 400 -> ReLU -> 784 logits.

    Subclasses change the networks only (`_build_networks`); the ELBO, training, sampling and
    checkpoints are shared.
    """

    Config = VAEConfig

    def __init__(self, config=None):
        self.config = self.Config() if config is None else config
        if not isinstance(self.config, self.Config):
            raise ArgumentError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        c = self.config
        if c.prior not in PRIORS:
            raise ArgumentError(f"prior must be one of {PRIORS}, got {c.prior!r}")
        if c.prior == "vamp" and (not isinstance(c.pseudo_inputs, (int, np.integer)) or c.pseudo_inputs < 1):
            raise ArgumentError(f"the VampPrior needs a positive integer of pseudo_inputs, got {c.pseudo_inputs!r}")
        encoder, features, decoder = self._build_networks(c)
        self.net = nn.Module()
        self.net.encoder = encoder  # x (B, 1, 28, 28) -> h (B, features)
        self.net.to_mu = nn.Linear(features, c.latent_dim)  # h -> μ (B, J)
        self.net.to_logvar = nn.Linear(features, c.latent_dim)  # h -> log σ² (B, J)
        self.net.decoder = decoder  # z (B, J) -> logits (B, 1, 28, 28)
        if c.prior == "vamp":
            # the pseudo-inputs u_k, images (K, 1, 28, 28); they start as faint noise, N(0.05, 0.01²),
            # as in the paper's MNIST runs, and `pseudo_images` clamps them to [0, 1]
            self.net.pseudo_inputs = nn.Parameter(tinygen.zeros(c.pseudo_inputs, *IMAGE_SHAPE).data)
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
        n_pixels = int(np.prod(IMAGE_SHAPE))
        encoder = nn.Sequential(
            nn.Flatten(),  # (B, 1, 28, 28) -> (B, 784)
            nn.Linear(n_pixels, c.hidden),
            nn.ReLU(),
        )
        decoder = nn.Sequential(
            nn.Linear(c.latent_dim, c.hidden),
            nn.ReLU(),
            nn.Linear(c.hidden, n_pixels),
            nn.Unflatten(1, IMAGE_SHAPE),  # (B, 784) -> (B, 1, 28, 28)
        )
        return encoder, c.hidden, decoder

    # --- the model ------------------------------------------------------------------------------

    def encode(self, x):
        """The parameters of q_φ(z | x): μ and log σ², each (B, J)."""
        h = self.net.encoder(x)
        return self.net.to_mu(h), self.net.to_logvar(h)

    def decode(self, z):
        """The Bernoulli logits l = f_θ(z) of p_θ(x | z), shape (B, 1, 28, 28)."""
        return self.net.decoder(z)

    def pseudo_images(self):
        """The VampPrior's pseudo-inputs u_k clamped to [0, 1] (the paper's hardtanh): (K, 1, 28, 28)."""
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
        return bernoulli_nll(self.decode(z), x), kl

    def _targets(self, images):
        """The images the bound is computed on: as given, or x_bin ~ Bernoulli(x) if `binarize`."""
        x = _check_images(images).to(self.device)  # a batch from the host is copied to the networks' device
        if self.config.binarize:
            x = (tinygen.rand(*x.shape, dtype=x.dtype, device=x.device) < x).to(x.dtype)
        return x

    # --- the protocol ---------------------------------------------------------------------------

    def train_step(self, images, labels=None):
        """One Adam step on −ELBO averaged over the batch (B, 1, 28, 28) in [0, 1].

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
        unbiased for the ELBO; with `binarize=True` the images are binarised first, as in training.
        """
        recon, kl = self.negative_elbo_terms(self._targets(images))
        return -(recon.numpy() + kl.numpy()).astype(np.float64)

    @no_grad()
    def sample(self, n):
        """n decoder means σ(f_θ(z)), z ~ p(z): a float32 array (n, 1, 28, 28) in [0, 1].

        Standard prior: z ~ N(0, I). VampPrior: k uniform in 0..K−1, then z ~ q(z | u_k).
        NOTE: these are the Bernoulli means E[x | z] (grey levels), not binary draws from
        p_θ(x | z): a draw is mostly salt-and-pepper noise around the mean.
        """
        check_count(n)
        if self.config.prior == "standard":
            z = tinygen.randn(n, self.config.latent_dim, device=self.device)
        else:
            mu_k, logvar_k = self.encode(self.pseudo_images())  # (K, J) each
            k = backend.generator().integers(0, mu_k.shape[0], n)
            eps = tinygen.randn(n, self.config.latent_dim, dtype=mu_k.dtype, device=self.device)
            z = mu_k[k] + (0.5 * logvar_k[k]).exp() * eps
        return self.decode(z).sigmoid().numpy().astype(np.float32)

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
    """A convolutional VAE, channels (c₁, c₂) = (32, 64):

    encoder: (1, 28, 28) -> Conv(1->c₁, k4 s2 p1) -> (c₁, 14, 14) -> ReLU -> Conv(c₁->c₂, k4 s2 p1)
             -> (c₂, 7, 7) -> ReLU -> Flatten -> Linear heads -> μ, log σ² (J = 16 each)
    decoder: z -> Linear -> ReLU -> (c₂, 7, 7) -> ConvT(c₂->c₁, k4 s2 p1) -> (c₁, 14, 14) -> ReLU
             -> ConvT(c₁->1, k4 s2 p1) -> (1, 28, 28) logits
    """

    Config = ConvVAEConfig

    def _build_networks(self, c):
        c1, c2 = c.channels
        encoder = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1),  # (B, 1, 28, 28) -> (B, c1, 14, 14)
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),  # -> (B, c2, 7, 7)
            nn.ReLU(),
            nn.Flatten(),  # (B, c2, 7, 7) -> (B, c2*7*7)
        )
        decoder = nn.Sequential(
            nn.Linear(c.latent_dim, c2 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (c2, 7, 7)),  # (B, c2*7*7) -> (B, c2, 7, 7)
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),  # -> (B, c1, 14, 14)
            nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1),  # -> (B, 1, 28, 28) logits
        )
        return encoder, c2 * 7 * 7, decoder


# --- argument checks --------------------------------------------------------------------------


def _check_images(images):
    """A float Tensor (B, 1, 28, 28) with values in [0, 1] (they are Bernoulli means/targets)."""
    if isinstance(images, np.ndarray):
        images = Tensor(images)
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a tinygen Tensor (B, 1, 28, 28), got {type(images).__name__}")
    if images.dtype.kind != "f":
        raise DTypeError(f"images must be float32 or float64 in [0, 1], got dtype {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE or images.shape[0] < 1:
        raise ShapeError(f"images must have shape (B, 1, 28, 28), got {tuple(images.shape)}")
    check_unit_range(images.data, "images must lie in [0, 1] (Bernoulli targets)")
    return images
