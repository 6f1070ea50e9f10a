"""Denoising diffusion probabilistic models (Ho et al. 2020), with DDIM and DPM-Solver++ sampling and guidance.

The forward process adds Gaussian noise to an image x_0 in T small steps with variances beta_t,

    q(x_t | x_{t-1}) = N(x_t; sqrt(1 - beta_t) x_{t-1}, beta_t I),                 t = 1..T,

and composing the steps gives every x_t in closed form (alpha_t = 1 - beta_t,
alpha_bar_t = alpha_1 ... alpha_t):

    q(x_t | x_0) = N(x_t; sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,     eps ~ N(0, I).

With alpha_bar_T close to 0, x_T is almost pure noise. A network eps_theta(x_t, t) learns to
predict the noise eps that was added (Algorithm 1, the "simple" loss, eq. 14):

    L = E_{x_0, t, eps} || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t) ||^2,

and sampling runs the chain backwards from x_T ~ N(0, I) (Algorithm 2):

    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_t) + sigma_t z,

with sigma_t^2 = beta_t or the posterior variance beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t
of q(x_{t-1} | x_t, x_0). DDIM (Song et al. 2021) reuses the same trained network to jump along a
sub-sequence of S << T timesteps; its eta interpolates between a deterministic sampler (eta = 0)
and DDPM's (eta = 1). DPM-Solver++(2M) (Lu et al. 2022) follows the same deterministic path (the
probability-flow ODE, of which DDIM with eta = 0 is the first-order solver) to second order in
log-SNR; see `DDPM._sample_dpmpp`. Classifier-free guidance (Ho & Salimans 2022) trains one network
both with class labels and, a fraction p_uncond of the time, with a "null" label, and samples with
eps = (1 + w) eps_theta(x, c) - w eps_theta(x, null).

NOTE: arrays are indexed by t - 1: `schedule.betas[0]` is beta_1, and the network sees the index
t - 1 in 0..T-1. The noise updates run in `tinygen.kernels.diffusion` (through its dispatcher) on
raw arrays: neither x_t in training nor any sampling step needs a gradient. As in Ho et al.'s
released code, the samplers clip each step's predicted x_0 to [-1, 1] (`clip_x0`, see `DDPM._eps`).
NOTE: the Gaussian noise (eps in training; x_T and every z in sampling) is drawn inside those
kernels from their counter-based generator (`kernels.normal`), with one seed per call drawn from
tinygen's generator: `manual_seed` and a resumed run's restored generator state reproduce it, and
the NumPy and Numba kernels draw the same numbers (to float32 rounding).

>>> import tinygen
>>> _ = tinygen.manual_seed(0)
>>> model = DDPM(Config(T=50, channels=(8, 16), groups=4, batch_size=4))
>>> images = tinygen.rand(4, 1, 28, 28)
>>> sorted(model.train_step(images, np.zeros(4, np.int64)))
['grad_norm', 'loss']
>>> model.sample(2, sampler="ddim", steps=5).shape
(2, 1, 28, 28)
>>> model.sample(2, sampler="dpmpp", steps=5).shape
(2, 1, 28, 28)
>>> rgb = DDPM(Config.for_shape(3, 32, T=50, channels=(8, 16), groups=4, num_classes=2))  # attention at 16x16
>>> _ = rgb.train_step(tinygen.rand(2, 3, 32, 32), np.array([0, 1]))
>>> rgb.sample(2, steps=3, labels=[0, 1], guidance=2.0).shape
(2, 3, 32, 32)
"""

import copy
import math
from dataclasses import dataclass

import numpy as np

from tinygen import backend, nn, optim
from tinygen.errors import ArgumentError, DTypeError, ShapeError
from tinygen.kernels import diffusion as kernels
from tinygen.models.checks import check_count, check_unit_range
from tinygen.nn import functional as F
from tinygen.progress import track
from tinygen.tensor import Tensor, cat, no_grad


@dataclass
class Config:
    """Hyperparameters of the DDPM and its training run.

    The defaults are sized for MNIST (1 x 28 x 28) on 2 CPU cores: channels (32, 64, 128) make a
    UNet of 1,461,953 parameters, trained for 4,000 steps of batch 64 with Adam (warm-up, then a
    cosine decay of the learning rate to 0) and sampled from an EMA of the weights with decay
    0.999 after `optim.EMA`'s warm-up (decay_t = min(0.999, (1 + t) / (10 + t)): at step t it
    averages over roughly the last t / 9 steps, up to ~1,000). The README gives the measured time of this
    default run and what its samples look like. `Config.for_shape` gives the defaults for other
    image shapes.

    The UNet's shape: `channels` lists its widths, one per resolution, from the image's down
    (Ho et al.'s ch * ch_mult, lucidrains' dim * dim_mults: (32, 64, 128) is ch = 32 with
    ch_mult (1, 2, 4)); their number is the number of resolutions, so image_size must be
    divisible by 2^(len(channels) - 1) (three widths: 28/14/7 or 32/16/8; four: 32/16/8/4 or
    64/32/16/8); other sizes are refused. `attn_resolutions` lists the resolutions (side lengths
    in pixels) that get a self-attention block after each residual block, as Ho et al.'s (16,)
    at 32 x 32; the middle block gets one when the lowest resolution is listed. The settings
    added with colour images (image_channels, image_size, attn_resolutions, attn_heads) default
    to the network of before, so checkpoints written before them rebuild the same UNet.
    """

    T: int = 1000  # number of diffusion steps
    schedule: str = "linear"  # "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)
    beta_start: float = 1e-4  # beta_1 of the linear schedule
    beta_end: float = 0.02  # beta_T of the linear schedule
    cosine_s: float = 0.008  # offset s of the cosine schedule
    image_channels: int = 1  # C of the (C, H, W) images: 1 grey, 3 RGB
    image_size: int = 28  # H = W
    channels: tuple = (32, 64, 128)  # UNet widths, one per resolution (28x28, 14x14, 7x7 at image_size 28)
    attn_resolutions: tuple = ()  # resolutions with self-attention, e.g. (16,) at image_size 32
    attn_heads: int = 1  # heads of each attention block (Ho et al.: 1); must divide the widths it sees
    groups: int = 8  # GroupNorm groups (must divide every width)
    dropout: float = 0.0
    num_classes: int | None = None  # class-conditional (with a "null" class for guidance) when set
    p_uncond: float = 0.1  # probability of training with the null class
    lr: float = 1e-3
    warmup_steps: int = 200  # linear learning-rate warm-up, then a cosine decay to 0 at `steps`
    grad_clip: float | None = 1.0  # max gradient norm (None: no clipping)
    batch_size: int = 64
    steps: int = 4000
    ema_decay: float = 0.999

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if self.T < 1:
            raise ArgumentError(f"T must be at least 1, got {self.T}")
        if self.schedule not in ("linear", "cosine"):
            raise ArgumentError(f"schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if self.image_channels < 1 or self.image_size < 1:
            raise ArgumentError(f"image_channels and image_size must be positive, got {self.image_channels} and "
                                f"{self.image_size}")
        if not self.channels or any(c < 1 or c % self.groups for c in self.channels):
            raise ArgumentError(f"channels must be one or more widths, each divisible by groups={self.groups}; "
                                f"got {self.channels}")
        levels = len(self.channels)
        if self.image_size % 2 ** (levels - 1):
            raise ArgumentError(
                f"image_size {self.image_size} does not halve {levels - 1} times: {levels} resolutions "
                f"(channels={self.channels}) need a size divisible by {2 ** (levels - 1)}; use fewer widths "
                f"or another image_size"
            )
        unknown = sorted(set(self.attn_resolutions) - set(self.resolutions))
        if unknown:
            raise ArgumentError(f"attn_resolutions {unknown} are not among the UNet's resolutions "
                                f"{self.resolutions} (image_size {self.image_size}, {levels} widths)")
        for r, width in zip(self.resolutions, self.channels):
            if r in self.attn_resolutions and (self.attn_heads < 1 or width % self.attn_heads):
                raise ArgumentError(f"attn_heads={self.attn_heads} must divide the width {width} of the "
                                    f"attention at resolution {r}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ArgumentError(f"num_classes must be None or at least 1, got {self.num_classes}")
        if not 0 <= self.p_uncond <= 1:
            raise ArgumentError(f"p_uncond must be a probability, got {self.p_uncond}")

    @property
    def resolutions(self):
        """The side length at each width of `channels`: (28, 14, 7) for the MNIST default."""
        return tuple(self.image_size // 2**i for i in range(len(self.channels)))

    @property
    def shape(self):
        """The (C, H, W) of the images the model trains on and samples."""
        return (self.image_channels, self.image_size, self.image_size)

    @classmethod
    def for_shape(cls, image_channels, image_size, **overrides):
        """The defaults for (image_channels, image_size, image_size) images; `overrides` win.

        Widths 32, 64, 128 (and 128 again at a fourth resolution from 64 pixels up, so that the
        lowest is 8 x 8 or less), as many as the size halves into (three at 28 or 32, fewer at
        sizes that do not halve twice), and from 32 pixels up self-attention at 16 x 16 where the
        UNet has that resolution, as Ho et al.'s CIFAR-10 UNet (whose widths are 128/256/256/256).
        28 x 28 gives the MNIST defaults.

        >>> c = Config.for_shape(3, 32)
        >>> c.shape, c.channels, c.resolutions, c.attn_resolutions
        ((3, 32, 32), (32, 64, 128), (32, 16, 8), (16,))
        >>> Config.for_shape(3, 64).resolutions
        (64, 32, 16, 8)
        >>> Config.for_shape(1, 28) == Config()
        True
        """
        levels = 4 if image_size >= 64 and image_size % 8 == 0 else 3 if image_size % 4 == 0 else \
            2 if image_size % 2 == 0 else 1
        fields = {"image_channels": image_channels, "image_size": image_size, "channels": (32, 64, 128, 128)[:levels],
                  **overrides}
        resolutions = [image_size // 2**i for i in range(len(fields["channels"]))]  # of the widths given, if any
        if "attn_resolutions" not in overrides and image_size >= 32 and 16 in resolutions:
            fields["attn_resolutions"] = (16,)
        return cls(**fields)


class Schedule:
    """The tables of the forward process, float64, named after the paper's symbols (index t - 1).

    >>> s = Schedule(Config(T=1000))
    >>> round(float(s.betas[0]), 6), round(float(s.betas[-1]), 6)
    (0.0001, 0.02)
    >>> round(float(s.alpha_bar[-1]), 6)  # x_T is nearly pure noise
    4e-05
    """

    def __init__(self, config):
        T = config.T
        if config.schedule == "linear":
            betas = np.linspace(config.beta_start, config.beta_end, T, dtype=np.float64)
        else:
            # Nichol & Dhariwal (2021), eq. 17: alpha_bar_t = f(t) / f(0),
            # f(t) = cos^2(pi/2 (t/T + s) / (1 + s)), and beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}
            # clipped at 0.999 so that the last steps (alpha_bar near 0) stay finite.
            f = np.cos(np.pi / 2 * (np.arange(T + 1) / T + config.cosine_s) / (1 + config.cosine_s)) ** 2
            betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
        self.T = T
        self.betas = betas  # \beta_t
        self.alphas = 1 - betas  # \alpha_t = 1 - \beta_t
        self.alpha_bar = np.cumprod(self.alphas)  # \bar\alpha_t = \prod_{s=1}^t \alpha_s
        self.alpha_bar_prev = np.append(1.0, self.alpha_bar[:-1])  # \bar\alpha_{t-1}, \bar\alpha_0 = 1
        self.sqrt_alpha_bar = np.sqrt(self.alpha_bar)  # \sqrt{\bar\alpha_t}
        self.sqrt_one_minus_alpha_bar = np.sqrt(1 - self.alpha_bar)  # \sqrt{1 - \bar\alpha_t}
        self.inv_sqrt_alpha = 1 / np.sqrt(self.alphas)  # 1 / \sqrt{\alpha_t}
        self.eps_coef = betas / self.sqrt_one_minus_alpha_bar  # \beta_t / \sqrt{1 - \bar\alpha_t}
        # \tilde\beta_t = (1 - \bar\alpha_{t-1}) / (1 - \bar\alpha_t) \beta_t, the variance of q(x_{t-1} | x_t, x_0)
        self.posterior_variance = (1 - self.alpha_bar_prev) / (1 - self.alpha_bar) * betas
        # \lambda_t = \log(\alpha_t / \sigma_t), half the log-SNR (Lu et al. 2022), with DPM-Solver's \alpha_t =
        # \sqrt{\bar\alpha_t} and \sigma_t = \sqrt{1 - \bar\alpha_t}; it falls as t grows
        self.lambdas = np.log(self.sqrt_alpha_bar / self.sqrt_one_minus_alpha_bar)


# --- the network eps_theta(x_t, t, c) -------------------------------------------------------


def timestep_embedding(t, dim, dtype, device=None):
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim), as the Transformer's positions:
    [sin(t w_i), cos(t w_i)] with w_i = 10000^(-i / (dim/2)), i = 0..dim/2 - 1. Computed on the CPU
    (t comes from the host) and placed on `device` (default: the default device)."""
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)  # w_i
    args = np.asarray(t, dtype=np.float64)[:, None] * freqs[None, :]  # (B, half)
    return Tensor(np.concatenate([np.sin(args), np.cos(args)], axis=1).astype(dtype), device=device)  # (B, dim)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, + the projected time embedding, GroupNorm -> SiLU ->
    (dropout) -> conv3x3, added to the input (through a 1x1 conv when the width changes)."""

    def __init__(self, in_channels, out_channels, emb_dim, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (as Ho et al.)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb)).reshape(emb.shape[0], -1, 1, 1)  # (B, C) -> (B, C, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H W positions of a feature map, as in Ho et al.'s UNet:
    GroupNorm -> 1x1 conv to queries, keys and values -> softmax(Q K^T / sqrt(d)) V per head ->
    1x1 conv, added to the input. `heads` splits the C channels into heads of C / heads (Ho et
    al. use one head: heads=1). The output conv starts at zero, so the block starts as the identity."""

    def __init__(self, channels, groups, heads=1):
        super().__init__()
        if channels % heads:
            raise ArgumentError(f"heads={heads} must divide the attention block's {channels} channels")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)  # (B, 3C, H, W) -> (B, 3, h, d, HW)
        qkv = qkv.transpose(-2, -1)  # (B, 3, h, HW, d): one row of d features per position
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # each (B, h, HW, d)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, h, HW, d): each position a mix of all H W
        h = h.transpose(-2, -1).reshape(B, C, H, W)  # (B, h, d, HW) -> (B, C, H, W)
        return x + self.proj(h)


class UNet(nn.Module):
    """eps_theta(x_t, t, c) for (B, C, H, W) images: one residual block per resolution on the way
    down (28 -> 14 -> 7 by default, stride-2 convs) and up (nearest upsampling + conv), with the
    down path's outputs concatenated onto the up path's inputs (skip connections), and a
    self-attention block after the residual blocks at `config.attn_resolutions`."""

    def __init__(self, config):
        super().__init__()
        widths, groups, dropout = config.channels, config.groups, config.dropout
        attn = [r in config.attn_resolutions for r in config.resolutions]  # per level, from the top

        def attention(level, width):  # nn.Identity holds no weights: a level without attention saves none
            return AttentionBlock(width, groups, config.attn_heads) if attn[level] else nn.Identity()

        self.time_dim = 2 * max(1, widths[0] // 2)  # sinusoids come in (sin, cos) pairs
        emb_dim = 4 * widths[0]
        self.num_classes = config.num_classes
        self.time_mlp = nn.Sequential(nn.Linear(self.time_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if config.num_classes is not None:
            # one extra row: the "null" class index num_classes, for classifier-free guidance
            self.class_emb = nn.Embedding(config.num_classes + 1, emb_dim)
        self.inc = nn.Conv2d(config.image_channels, widths[0], 3, padding=1)
        self.down, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = widths[0]
        for i, width in enumerate(widths):
            self.down.append(ResBlock(c, width, emb_dim, groups, dropout))
            self.down_attn.append(attention(i, width))
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
            c = width
        self.mid = ResBlock(c, c, emb_dim, groups, dropout)
        self.mid_attn = attention(len(widths) - 1, c)
        self.up, self.up_attn, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(widths))):
            self.up.append(ResBlock(c + widths[i], widths[i], emb_dim, groups, dropout))
            self.up_attn.append(attention(i, widths[i]))
            c = widths[i]
            if i > 0:
                up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c, widths[i - 1], 3, padding=1))
                self.upsample.append(up)
                c = widths[i - 1]
        self.out = nn.Sequential(nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv2d(c, config.image_channels, 3, padding=1))
        nn.init.zeros_(self.out[2].weight)  # the first prediction is eps_theta = 0
        nn.init.zeros_(self.out[2].bias)

    def forward(self, x, t, labels=None):
        """x (B, C, H, W), integer timesteps t (B,) in 0..T-1, labels (B,) or None -> (B, C, H, W)."""
        emb = self.time_mlp(timestep_embedding(t, self.time_dim, x.dtype, x.device))  # (B, emb_dim)
        if self.num_classes is not None:
            if labels is None:
                labels = np.full(x.shape[0], self.num_classes)  # unconditional: the null class
            labels = labels.astype(np.int64) if hasattr(labels, "astype") else np.asarray(labels, dtype=np.int64)
            emb = emb + self.class_emb(Tensor(labels, device=x.device))
        elif labels is not None:
            raise ArgumentError("labels given to a UNet built without num_classes")
        h = self.inc(x)
        skips = []
        for i, (block, attn) in enumerate(zip(self.down, self.down_attn)):
            h = attn(block(h, emb))
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid_attn(self.mid(h, emb))
        for i, (block, attn) in enumerate(zip(self.up, self.up_attn)):
            h = attn(block(cat([h, skips.pop()], dim=1), emb))  # (B, C_up + C_skip, H, W)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.out(h)


# --- the model: training (Algorithm 1) and sampling (Algorithm 2, DDIM, DPM-Solver++) ----------


class DDPM:
    """A DDPM on (C, H, W) images (`Config.shape`; 1 x 28 x 28 digits by default), following the
    protocol of `tinygen.models`."""

    Config = Config
    DDIM_STEPS = 50  # sample()'s DDIM steps when none are given (T if fewer)
    DPMPP_STEPS = 20  # sample()'s DPM-Solver++ steps when none are given (T if fewer)

    def __init__(self, config=None):
        self.config = config = Config() if config is None else config
        self.schedule = Schedule(config)
        self.net = UNet(config)
        self.optimizer = optim.Adam(self.net.parameters(), lr=config.lr)
        self.ema = optim.EMA(self.net, decay=config.ema_decay)
        self.ema_net = copy.deepcopy(self.net)  # sampling network, filled from the EMA weights
        self.step = 0

    @property
    def device(self):
        """The device of the networks (and of the optimizer's and the EMA's state)."""
        return self.net.inc.weight.device

    def to(self, device):
        """Move the network and the sampling network to `device` (the Adam state and the EMA follow
        on their next use); returns self."""
        self.net.to(device)
        self.ema_net.to(device)
        return self

    # --- training ---------------------------------------------------------------------------

    def train_step(self, images, labels=None):
        """Algorithm 1 of Ho et al. (2020) on one batch: one Adam step on the eps-prediction loss."""
        x0 = images.data if isinstance(images, Tensor) else images
        x0 = x0 if hasattr(x0, "ndim") else np.asarray(x0)
        if x0.dtype.kind != "f":
            raise DTypeError(f"images must be float32 or float64 in [0, 1], got dtype {x0.dtype}")
        shape = self.config.shape
        if x0.ndim != 4 or tuple(x0.shape[1:]) != shape or x0.shape[0] < 1:
            raise ShapeError(f"images must have shape (B, {', '.join(map(str, shape))}), the (C, H, W) of the model's "
                             f"config and the shape the sampler draws, got {tuple(x0.shape)}")
        check_unit_range(x0)
        x0 = backend.to_device(x0, self.device)  # a batch from the host is copied to the network's device
        x0 = 2 * x0.astype(self.net.inc.weight.dtype, copy=False) - 1  # [0, 1] -> [-1, 1], the model's dtype
        B, rng, s = x0.shape[0], backend.generator(), self.schedule
        t = rng.integers(0, s.T, size=B)  # t ~ Uniform({1, ..., T}), as indices t - 1
        # eps ~ N(0, I), made inside the kernel from a stream seeded by tinygen's generator
        x_t, eps = kernels.q_sample_noise(x0, s.sqrt_alpha_bar[t], s.sqrt_one_minus_alpha_bar[t],
                                          seed=int(rng.integers(2**63)))
        y = None
        if self.config.num_classes is not None:
            if labels is None:
                raise ArgumentError("a class-conditional DDPM needs labels in train_step")
            y = np.asarray(labels).astype(np.int64)  # a copy: the null class is written into it
            if y.shape != (B,) or y.min() < 0 or y.max() >= self.config.num_classes:
                raise ArgumentError(f"labels must be {B} class indices in 0..{self.config.num_classes - 1}, "
                                    f"got shape {y.shape}")
            y[rng.random(B) < self.config.p_uncond] = self.config.num_classes  # drop to the null class
        loss = F.mse_loss(self.net(Tensor(x_t), t, y), Tensor(eps))  # ||eps - eps_theta(x_t, t)||^2

        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.synchronize()  # data-parallel runs average the gradients here, before clipping
        grad_norm = nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip or math.inf)
        self.optimizer.step()
        self.ema.update(self.net)
        self.step += 1
        return {"loss": loss.item(), "grad_norm": grad_norm}

    def learning_rate(self):
        """The learning rate of the current step: a linear warm-up over `warmup_steps`, then a
        cosine decay to 0 at `steps` (the trainer sets `steps` to the run's length)."""
        c = self.config
        warmup = min(1.0, (self.step + 1) / max(c.warmup_steps, 1))
        progress = min(1.0, self.step / max(c.steps, 1))
        return c.lr * warmup * 0.5 * (1 + math.cos(math.pi * progress))

    # --- sampling ---------------------------------------------------------------------------

    @no_grad()
    def sample(self, n, sampler="ddim", steps=None, eta=0.0, labels=None, guidance=0.0, use_ema=True,
               variance="beta", clip_x0=True, progress=None):
        """n images (n, C, H, W) float32 in [0, 1] (`Config.shape`), from x_T ~ N(0, I) run backwards.

        sampler "ddpm": Algorithm 2 over all T steps, sigma_t^2 = beta_t (variance="beta") or
        beta~_t (variance="posterior"). sampler "ddim": `steps` timesteps (default 50, or T if fewer) with `eta`.
        sampler "dpmpp": DPM-Solver++(2M), `steps` timesteps evenly spaced in log-SNR (default 20, or T).
        labels (n,) pick the classes of a class-conditional model (None: unconditional), and
        guidance = w > 0 applies classifier-free guidance. The EMA weights sample unless
        use_ema=False; clip_x0 clips each step's predicted x_0 to [-1, 1] (see `_eps`).
        progress=True shows the denoising steps with an ETA on stderr; a callable is called as
        progress(done, total) after each step (`tinygen.progress.track`).

        NOTE: DDIM with 50 steps is the default because every step is one network evaluation:
        with the NumPy kernels on 2 CPU cores, DDPM's 1000 steps for 64 images take minutes.
        Every sampler costs one network evaluation per step (of a doubled batch with guidance).
        """
        check_count(n)
        if sampler not in ("ddpm", "ddim", "dpmpp"):
            raise ArgumentError(f"sampler must be 'ddpm', 'ddim' or 'dpmpp', got {sampler!r}")
        if not (isinstance(eta, (int, float, np.floating)) and 0 <= eta <= 1):
            raise ArgumentError(f"eta must be a number in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta!r}")
        if sampler == "ddpm" and eta != 0:
            raise ArgumentError(f"eta={eta} applies to sampler='ddim'; the ancestral sampler's noise is sigma_t^2 = "
                                f"beta_t or beta~_t (variance)")
        if sampler == "dpmpp" and eta != 0:
            raise ArgumentError(f"eta={eta} applies to sampler='ddim'; DPM-Solver++(2M) is deterministic")
        if guidance != 0 and labels is None:
            raise ArgumentError(f"guidance={guidance} needs labels (classifier-free guidance of a class-conditional "
                                f"model); without them it would change nothing")
        if sampler == "ddpm" and steps not in (None, self.schedule.T):
            raise ArgumentError(f"ancestral sampling runs all T={self.schedule.T} steps, got steps={steps}; "
                                f"use sampler='ddim' for fewer")
        if variance not in ("beta", "posterior"):
            raise ArgumentError(f"variance must be 'beta' or 'posterior', got {variance!r}")
        if labels is not None:
            if self.config.num_classes is None:
                raise ArgumentError("labels given, but this DDPM was trained without num_classes")
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (n,) or labels.min() < 0 or labels.max() >= self.config.num_classes:
                raise ArgumentError(f"labels must be {n} class indices in 0..{self.config.num_classes - 1}")
        net = self.ema_net if use_ema else self.net
        if use_ema:
            self.ema.copy_to(net)
        was_training = net.training
        net.eval()  # no dropout while sampling
        dtype = self.net.inc.weight.dtype
        # One counter-based stream per call: x_T is its block 0 and step j's z its block j (j = 1, 2, ...),
        # each block n*C*H*W numbers long.
        seed = int(backend.generator().integers(2**63))
        x = kernels.normal((n, *self.config.shape), seed, 0, dtype, device=self.device)  # x_T ~ N(0, I), on the GPU there
        xp = backend.get_array_module(x)
        if sampler == "ddpm":
            x = self._sample_ddpm(net, x, labels, guidance, variance, clip_x0, seed, progress)
        elif sampler == "ddim":
            x = self._sample_ddim(net, x, labels, guidance, steps, eta, clip_x0, seed, progress)
        else:
            x = self._sample_dpmpp(net, x, labels, guidance, steps, clip_x0, progress)
        net.train(was_training)
        return backend.to_numpy(((xp.clip(x, -1, 1) + 1) / 2).astype(np.float32))  # [-1, 1] -> [0, 1], on the host

    def _eps(self, net, x, i, labels, guidance, clip_x0):
        """eps_theta(x_t, t, c) at index i = t - 1, guided: (1 + w) eps_theta(x, c) - w eps_theta(x, null).

        NOTE: with clip_x0, as in Ho et al.'s released sampler (clip_denoised=True), the x_0 that
        eps implies, x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), is clipped to
        the data range [-1, 1] and eps is re-derived from it. Early in sampling x0_hat is divided
        by sqrt(alpha_bar_T) ~ 0.006, so small errors of eps_theta throw it far outside [-1, 1]
        and, unclipped, a network trained for minutes gives saturated noise. With the re-derived
        eps, Algorithm 2's step is exactly the posterior mean mu~_t(x_t, clip(x0_hat)) (eq. 7).
        """
        n, xp = x.shape[0], backend.get_array_module(x)
        ts = np.full(n, i)  # on the host: the time embedding is made there
        if labels is None or guidance == 0:
            eps = net(Tensor(x), ts, labels).data
        else:
            null = np.full(n, self.config.num_classes)
            both = net(Tensor(xp.concatenate([x, x])), np.concatenate([ts, ts]), np.concatenate([labels, null])).data
            eps = (1 + guidance) * both[:n] - guidance * both[n:]  # both: (2n, C, H, W)
        if clip_x0:
            a, b = float(self.schedule.sqrt_alpha_bar[i]), float(self.schedule.sqrt_one_minus_alpha_bar[i])
            x0_hat = xp.clip((x - b * eps) / a, -1, 1)
            eps = (x - a * x0_hat) / b
        return eps

    def _sample_ddpm(self, net, x, labels, guidance, variance, clip_x0, seed, progress=None):
        """Algorithm 2: for t = T..1, x_{t-1} = (x_t - beta_t/sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z."""
        s, n = self.schedule, x.shape[0]
        sigmas = np.sqrt(s.betas if variance == "beta" else s.posterior_variance)
        for i in track(reversed(range(s.T)), progress):  # i = t - 1
            eps = self._eps(net, x, i, labels, guidance, clip_x0)
            coef_eps, inv_sqrt_alpha = np.full(n, s.eps_coef[i]), np.full(n, s.inv_sqrt_alpha[i])
            if i > 0:  # z ~ N(0, I): block T - i of the stream
                x = kernels.p_sample_step_noise(x, eps, coef_eps, inv_sqrt_alpha, np.full(n, sigmas[i]), seed,
                                                (s.T - i) * x.size)
            else:  # z = 0 at t = 1
                x = kernels.p_sample_step(x, eps, coef_eps, inv_sqrt_alpha, np.zeros(n))
        return x

    def ddim_timesteps(self, steps):
        """The sub-sequence tau_1 < ... < tau_S of indices 0..T-1, evenly spaced, ending at T-1."""
        if not 1 <= steps <= self.schedule.T:
            raise ArgumentError(f"DDIM steps must be in 1..{self.schedule.T}, got {steps}")
        # from T-1 down, so that even one step starts at x_T; np.unique sorts them ascending
        return np.unique(np.round(np.linspace(self.schedule.T - 1, 0, steps)).astype(np.int64))

    def ddim_sigma(self, alpha_bar_t, alpha_bar_prev, eta):
        """Song et al. (2021), eq. 16: sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)."""
        return eta * np.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) * np.sqrt(1 - alpha_bar_t / alpha_bar_prev)

    def _sample_ddim(self, net, x, labels, guidance, steps, eta, clip_x0, seed, progress=None):
        """DDIM (Song et al. 2021, eq. 12) along tau: x_{tau_i} -> x_{tau_{i-1}}, the last step to x_0."""
        s, n = self.schedule, x.shape[0]
        taus = self.ddim_timesteps(min(self.DDIM_STEPS, s.T) if steps is None else steps)
        for k in track(reversed(range(len(taus))), progress):
            i, prev = taus[k], taus[k - 1] if k > 0 else -1  # prev = -1: alpha_bar_0 = 1
            alpha_bar_prev = s.alpha_bar[prev] if prev >= 0 else 1.0
            sigma = self.ddim_sigma(s.alpha_bar[i], alpha_bar_prev, eta)
            eps = self._eps(net, x, i, labels, guidance, clip_x0)
            coefs = (np.full(n, s.sqrt_alpha_bar[i]), np.full(n, s.sqrt_one_minus_alpha_bar[i]),
                     np.full(n, math.sqrt(alpha_bar_prev)), np.full(n, sigma))
            if sigma > 0:  # z ~ N(0, I): block len(taus) - k of the stream (with all T steps, DDPM's blocks)
                x = kernels.ddim_step_noise(x, eps, *coefs, seed, (len(taus) - k) * x.size)
            else:
                x = kernels.ddim_step(x, eps, *coefs)
        return x

    def dpmpp_timesteps(self, steps):
        """S indices 0..T-1, ascending from 0 to T-1, evenly spaced in lambda_t = log(alpha_t / sigma_t).

        NOTE: the network was trained at integer t only, so each target lambda is mapped to the nearest
        trained timestep (t interpolated linearly in lambda, then rounded), and the solver uses that
        timestep's own lambda_t, alpha_t and sigma_t: the steps are uneven by the rounding, which the
        2M update allows for through r_i, and every network call sees the coefficients of its own t.
        Where rounding merges targets (near t = 1, where lambda_t moves fastest, at many steps), the
        indices are pushed apart to consecutive ones, so that `steps` calls are `steps` timesteps.

        >>> DDPM(Config(T=1000, channels=(8,), groups=4)).dpmpp_timesteps(10)
        array([  0,   5,  22,  73, 202, 410, 603, 757, 886, 999])
        """
        T = self.schedule.T
        if not 1 <= steps <= T:
            raise ArgumentError(f"DPM-Solver++ steps must be in 1..{T}, got {steps}")
        lam = self.schedule.lambdas  # lambda_1 > ... > lambda_T
        targets = np.linspace(lam[-1], lam[0], steps)[::-1]  # lambda_1 down to lambda_T, evenly (one step: lambda_T)
        # np.interp needs increasing abscissae: lambda from lambda_T up, with its indices T-1 down to 0
        taus = np.round(np.interp(targets, lam[::-1], np.arange(T - 1, -1, -1))).astype(np.int64)
        k = np.arange(steps)
        # strictly increasing: each at least one above the one before, and at most T - steps + k
        return np.minimum(k + np.maximum.accumulate(taus - k), T - steps + k)

    def _sample_dpmpp(self, net, x, labels, guidance, steps, clip_x0, progress=None):
        """DPM-Solver++(2M), Lu et al. (2022), Algorithm 2, in the data-prediction form.

        With alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t) and lambda_t = log(alpha_t / sigma_t),
        the probability-flow ODE's exact solution from t_{i-1} to t_i is (eq. 9 of DPM-Solver++)

            x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}}
                      + sigma_{t_i} int_{lambda_{t_{i-1}}}^{lambda_{t_i}} e^lambda x_theta(x_lambda, lambda) dlambda,

        x_theta(x_t, t) = (x_t - sigma_t eps_theta(x_t, t)) / alpha_t being the predicted x_0. Along the
        timesteps t_0 = T > t_1 > ... > t_M, with h_i = lambda_{t_i} - lambda_{t_{i-1}} and r_i = h_{i-1} / h_i,

            D_i = (1 + 1 / (2 r_i)) x_theta(x_{t_{i-1}}, t_{i-1}) - 1 / (2 r_i) x_theta(x_{t_{i-2}}, t_{i-2})
            x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i

        (x_theta extrapolated linearly in lambda from the last two predictions: second order). The first
        step has no earlier prediction and takes D_1 = x_theta(x_T, T): first order, which is DDIM's step.
        The timesteps are `dpmpp_timesteps` (the last one t = 1), then one last step to t = 0, where
        sigma = 0 and lambda = infinity (h_M = infinity, r_M = 0): there too D_M = x_theta(x_{t_{M-1}},
        t_{M-1}) (first order), so x_0 = D_M, as DDIM's last step. `steps` network calls in all.
        """
        s = self.schedule
        alpha, sigma, lam = s.sqrt_alpha_bar, s.sqrt_one_minus_alpha_bar, s.lambdas  # alpha_t, sigma_t, lambda_t
        taus = self.dpmpp_timesteps(min(self.DPMPP_STEPS, s.T) if steps is None else steps)
        x0_prev = h_prev = None  # x_theta(x_{t_{i-2}}, t_{i-2}) and h_{i-1}
        for k in track(reversed(range(len(taus))), progress):
            i = taus[k]  # t_{i-1}, as an index
            eps = self._eps(net, x, i, labels, guidance, clip_x0)
            x0 = (x - float(sigma[i]) * eps) / float(alpha[i])  # x_theta(x_{t_{i-1}}, t_{i-1})
            if k == 0:  # the last step, to sigma = 0: x_0 = D_M
                x = x0
                continue
            prev = taus[k - 1]  # t_i, as an index
            h = float(lam[prev] - lam[i])  # h_i
            if x0_prev is None:  # the first step: D_1 = x_theta(x_T, T)
                D = x0
            else:
                r = h_prev / h  # r_i
                D = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev  # D_i
            x = float(sigma[prev] / sigma[i]) * x - float(alpha[prev] * math.expm1(-h)) * D
            x0_prev, h_prev = x0, h
        return x

    # --- checkpoints ------------------------------------------------------------------------

    def state_dict(self):
        return {
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state):
        expected = {"model", "ema", "optimizer", "step"}
        if not isinstance(state, dict) or set(state) != expected:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ArgumentError(f"a DDPM state dict has the keys {sorted(expected)}, got {keys}")
        self.net.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
