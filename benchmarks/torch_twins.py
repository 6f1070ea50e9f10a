"""PyTorch twins of tinygen's models: the same networks, weights copied, and the same training step.

`benchmarks.train_step` times each tinygen model beside its twin, so the ratio only means something
if both do the same work. A twin is built from a tinygen model (`twin(model)`), never from its own
hyperparameters, so it follows the model's config:

- the Sequential networks (GAN generators and discriminators, VAE encoders and decoders) go
  through `to_torch`, a layer-by-layer converter;
- the DDPM's UNet is written out below, block for block as in `tinygen/models/diffusion.py`
  (its residual blocks, the self-attention blocks at `attn_resolutions`, the class embedding),
  with the same attribute names, so that tinygen's state dict loads into it with `strict=True`.

Every twin works at the model's image shape (C, H, W) from its config, and the VAE twin with
either decoder likelihood (Bernoulli, or the discretised logistic of 8-bit images).

Each `train_step` mirrors its tinygen counterpart line for line (losses, optimizer settings,
the order of the updates); `tests/test_torch_twins.py` checks, in float64 with the same random
draws, that both give the same outputs, losses and updated weights. Every random draw of a twin
goes through one method (`noise`, `negative_elbo_terms(eps=...)`, `draw`), which the tests replace.
Each twin also has tinygen's `sample(n, ...)` (for `benchmarks.quality`): the GAN generator (or
its weights' average) in eval mode, the VAE's decoder means, the DDPM's ancestral, DDIM and
DPM-Solver++(2M) samplers from the EMA weights, with class labels and classifier-free guidance for a
conditional one.
"""

import copy
import math

import numpy as np
import torch
import torch.nn.functional as TF
from torch import nn as tnn

from tinygen import nn
from tinygen.models.diffusion import DDPM, Schedule
from tinygen.models.gan import BN_RECALIBRATION, GAN, MinibatchStdDev
from tinygen.models.vae import BIN, LOG_2PI, LOG_SCALE_MIN, VAE

# --- converting tinygen layers -------------------------------------------------------------

class TorchMinibatchStdDev(tnn.Module):
    """`tinygen.models.gan.MinibatchStdDev`: (B, F) -> (B, F + 1), the batch's mean per-feature std appended."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        s = (x.var(0, unbiased=False) + self.eps).sqrt().mean()
        return torch.cat([x, s.expand(x.shape[0], 1)], 1)


# tinygen layer class -> the torch layer with the same hyperparameters (weights are copied after)
_LAYERS = {
    MinibatchStdDev: lambda m: TorchMinibatchStdDev(m.eps),
    nn.Linear: lambda m: tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None),
    nn.Conv2d: lambda m: tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                    m.dilation, bias=m.bias is not None),
    nn.ConvTranspose2d: lambda m: tnn.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                                      m.padding, m.output_padding, bias=m.bias is not None,
                                                      dilation=m.dilation),
    nn.BatchNorm1d: lambda m: tnn.BatchNorm1d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats),
    nn.BatchNorm2d: lambda m: tnn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats),
    nn.GroupNorm: lambda m: tnn.GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine),
    nn.Embedding: lambda m: tnn.Embedding(m.num_embeddings, m.embedding_dim),
    nn.Dropout: lambda m: tnn.Dropout(m.p),
    nn.ReLU: lambda m: tnn.ReLU(),
    nn.LeakyReLU: lambda m: tnn.LeakyReLU(m.negative_slope),
    nn.Sigmoid: lambda m: tnn.Sigmoid(),
    nn.Tanh: lambda m: tnn.Tanh(),
    nn.SiLU: lambda m: tnn.SiLU(),
    nn.Softplus: lambda m: tnn.Softplus(),
    nn.Identity: lambda m: tnn.Identity(),
    nn.Flatten: lambda m: tnn.Flatten(m.start_dim, m.end_dim),
    nn.Unflatten: lambda m: tnn.Unflatten(m.dim, m.unflattened_size),
    nn.Upsample: lambda m: tnn.Upsample(m.size, m.scale_factor, m.mode),
    nn.AvgPool2d: lambda m: tnn.AvgPool2d(m.kernel_size, m.stride, m.padding),  # both count the zero padding
    nn.MaxPool2d: lambda m: tnn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation),
}


def to_torch(module):
    """The torch equivalent of a tinygen layer or `nn.Sequential` of layers, weights copied, in train mode.

    >>> twin = to_torch(nn.Sequential(nn.Linear(3, 2), nn.LeakyReLU(0.2)))
    >>> twin
    Sequential(
      (0): Linear(in_features=3, out_features=2, bias=True)
      (1): LeakyReLU(negative_slope=0.2)
    )
    """
    if isinstance(module, nn.Sequential):
        twin = tnn.Sequential(*[to_torch(layer) for layer in module])
    elif type(module) in _LAYERS:
        twin = _LAYERS[type(module)](module)
    else:
        raise TypeError(f"to_torch has no PyTorch equivalent for {type(module).__name__}; add it to _LAYERS")
    return copy_weights(module, twin)


def copy_weights(module, twin):
    """Copy a tinygen module's parameters and buffers into its torch twin, in tinygen's float dtype.

    The state dicts must have the same names and shapes (`strict=True`): that also checks that
    the twin's structure mirrors the tinygen module's. Returns `twin`, in `module`'s train/eval mode.
    """
    state = module.state_dict()
    floats = [a.dtype for a in state.values() if a.dtype.kind == "f"]
    if floats:
        twin.to(torch.float64 if floats[0] == np.float64 else torch.float32)
    twin.load_state_dict({name: torch.from_numpy(np.array(a)) for name, a in state.items()}, strict=True)
    return twin.train(module.training)


# --- GAN: Goodfellow et al. Algorithm 1, k = 1, as in tinygen/models/gan.py -------------------


def ema_decay(decay, warmup, t):
    """`tinygen.optim.EMA`'s decay at its update t (t updates before it): with the warm-up,
    min(decay, (1 + t) / (10 + t)), TensorFlow's ExponentialMovingAverage with num_updates=t."""
    return min(decay, (1 + t) / (10 + t)) if warmup else decay


class GANTwin:
    """The twin of `MLPGAN` and `DCGAN`: one D step, then one G step with D frozen."""

    def __init__(self, model):
        c = self.config = model.config
        self.generator, self.discriminator = to_torch(model.generator), to_torch(model.discriminator)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=c.lr, betas=tuple(c.betas))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=c.lr, betas=tuple(c.betas))
        self.dtype = next(self.generator.parameters()).dtype
        # `GAN.sample`'s average of G's weights, with BatchNorm statistics recomputed for it (`GAN.averaged`)
        self.ema_shadow = None if model.ema is None else \
            [torch.from_numpy(model.ema.shadow[name].copy()) for name, _ in self.generator.named_parameters()]
        self.ema_warmup, self.ema_updates = (False, 0) if model.ema is None else \
            (model.ema.warmup, model.ema.num_updates)
        self.step, self._averaged = model.step, None

    def noise(self, n):
        return torch.randn(n, self.config.latent_dim, dtype=self.dtype)  # z ~ N(0, I)

    def train_step(self, images, labels=None):
        x, m = images, images.shape[0]
        G, D = self.generator, self.discriminator
        G.train()
        D.train()

        with torch.no_grad():
            fake = G(self.noise(m))
        real_logits, fake_logits = D(x), D(fake)
        loss_d = (TF.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + TF.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        self.opt_d.zero_grad()
        loss_d.backward()
        self.opt_d.step()

        D.requires_grad_(False)
        try:
            fake_logits_g = D(G(self.noise(m)))
            loss_g = TF.binary_cross_entropy_with_logits(fake_logits_g, torch.ones_like(fake_logits_g))
            self.opt_g.zero_grad()
            loss_g.backward()
            self.opt_g.step()
        finally:
            D.requires_grad_(True)
        if self.ema_shadow is not None:
            with torch.no_grad():
                decay = ema_decay(self.config.ema_decay, self.ema_warmup, self.ema_updates)
                for shadow, p in zip(self.ema_shadow, G.parameters()):
                    shadow.lerp_(p, 1 - decay)
            self.ema_updates += 1
        self.step += 1
        return {
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "d_real": real_logits.detach().sigmoid().mean().item(),
            "d_fake": fake_logits.detach().sigmoid().mean().item(),
        }

    @torch.no_grad()
    def averaged(self):
        """`GAN.averaged`: G with the averaged weights and BatchNorm statistics recomputed for them."""
        if self._averaged is not None and self._averaged[0] == self.step:
            return self._averaged[1]
        G = copy.deepcopy(self.generator).train()
        for p, shadow in zip(G.parameters(), self.ema_shadow):
            p.copy_(shadow)
        norms = [m for m in G.modules() if isinstance(m, tnn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # the cumulative average, as torch.optim.swa_utils.update_bn
        rng = np.random.default_rng(self.step)
        batches, size = BN_RECALIBRATION
        for _ in range(batches):
            G(torch.from_numpy(rng.standard_normal((size, self.config.latent_dim))).to(self.dtype))
        self._averaged = (self.step, G.eval())
        return G

    @torch.no_grad()
    def sample(self, n):
        """n images G(z) (n, C, H, W) float32 in [0, 1], as `GAN.sample`: G in eval mode (BatchNorm's
        running statistics), the averaged G where the model has `ema_decay`."""
        G = self.generator if self.ema_shadow is None else self.averaged()
        was_training = G.training
        G.eval()
        try:
            images = G(self.noise(n))
        finally:
            G.train(was_training)
        return images.numpy().astype(np.float32)


# --- VAE: one Adam step on -ELBO, as in tinygen/models/vae.py ---------------------------------


class VAETwin:
    """The twin of `VAE` and `ConvVAE`: the same four networks (and pseudo-inputs), the same ELBO."""

    def __init__(self, model):
        self.config = model.config
        self.net = tnn.Module()
        self.net.encoder = to_torch(model.net.encoder)  # x (B, C, H, W) -> h (B, features)
        self.net.to_mu = to_torch(model.net.to_mu)  # h -> mu (B, J)
        self.net.to_logvar = to_torch(model.net.to_logvar)  # h -> log sigma^2 (B, J)
        self.net.decoder = to_torch(model.net.decoder)  # z (B, J) -> logits (B, C, H, W) or mu, log s (B, 2C, H, W)
        if self.config.prior == "vamp":  # the pseudo-inputs u_k (K, C, H, W)
            self.net.pseudo_inputs = tnn.Parameter(torch.from_numpy(model.net.pseudo_inputs.numpy().copy()))
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)

    def encode(self, x):
        h = self.net.encoder(x)
        return self.net.to_mu(h), self.net.to_logvar(h)

    def decode(self, z):
        return self.net.decoder(z)

    def pseudo_images(self):
        """The pseudo-inputs clamped to [0, 1] (K, C, H, W), as `VAE.pseudo_images`."""
        return self.net.pseudo_inputs.clamp(0.0, 1.0)

    def log_prior(self, z):
        """log p(z) (B,): log N(z; 0, I), or log (1/K) sum_k N(z; mu_k, sigma_k^2) at the pseudo-inputs."""
        if self.config.prior == "standard":
            return -0.5 * (z * z + LOG_2PI).sum(1)
        mu_k, logvar_k = self.encode(self.pseudo_images())  # (K, J)
        d = z[:, None] - mu_k[None]  # (B, K, J)
        log_q_k = -0.5 * (d * d * (-logvar_k).exp() + logvar_k + LOG_2PI).sum(2)
        return torch.logsumexp(log_q_k, 1) - math.log(mu_k.shape[0])

    def negative_elbo_terms(self, x, eps=None):
        """(-log p(x | z) with z = mu + sigma * eps, KL(q(z | x) || p(z))), each (B,)."""
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn_like(mu)
        z = mu + (0.5 * logvar).exp() * eps
        recon = self.reconstruction_nll(self.decode(z), x)
        if self.config.prior == "standard":
            kl = -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum(1)
        else:  # log q(z | x) - log p(z), one sample
            kl = -0.5 * (eps * eps + logvar + LOG_2PI).sum(1) - self.log_prior(z)
        return recon, kl

    def reconstruction_nll(self, out, x):
        """-log p(x | z) (B,) from the decoder output: Bernoulli logits, or the logistic's mu and log s."""
        if self.config.likelihood == "bernoulli":
            return TF.binary_cross_entropy_with_logits(out, x, reduction="none").sum((1, 2, 3))
        C = self.config.image_channels
        log_scale = out[:, C:].clamp(min=LOG_SCALE_MIN)
        return -discretized_logistic_log_prob(x, out[:, :C], log_scale).sum((1, 2, 3))

    def decoder_mean(self, out):
        """sigmoid(l) for the Bernoulli, the logistic's locations mu clipped to [0, 1], as `VAE.decoder_mean`."""
        if self.config.likelihood == "bernoulli":
            return torch.sigmoid(out)
        return out[:, :self.config.image_channels].clamp(0.0, 1.0)

    def train_step(self, images, labels=None):
        x = images
        if self.config.binarize:
            x = (torch.rand_like(x) < x).to(x.dtype)  # x_bin ~ Bernoulli(x)
        elif self.config.likelihood == "logistic":
            x = torch.round(x * 255) / 255  # onto the 8-bit grid, as `VAE._targets` (both round half to even)
        self.net.train()
        recon, kl = self.negative_elbo_terms(x)
        recon, kl = recon.mean(), kl.mean()
        loss = recon + kl
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}

    @torch.no_grad()
    def sample(self, n):
        """n decoder means at z ~ p(z): float32 (n, C, H, W) in [0, 1], as `VAE.sample`."""
        dtype = next(self.net.parameters()).dtype
        eps = torch.randn(n, self.config.latent_dim, dtype=dtype)
        if self.config.prior == "standard":
            z = eps
        else:  # a pseudo-input k at random, then z ~ q(z | u_k)
            mu_k, logvar_k = self.encode(self.pseudo_images())
            k = torch.randint(0, mu_k.shape[0], (n,))
            z = mu_k[k] + (0.5 * logvar_k[k]).exp() * eps
        return self.decoder_mean(self.decode(z)).numpy().astype(np.float32)


def softplus(t):
    """log(1 + e^t) as tinygen computes it, max(t, 0) + log(1 + e^-|t|) (torch's switches to t above 20)."""
    return t.clamp(min=0) + torch.log1p(torch.exp(-t.abs()))


def discretized_logistic_log_prob(x, mean, log_scale):
    """`tinygen.models.vae.discretized_logistic_log_prob`, line for line: log P(x) of 8-bit x = k/255
    under Logistic(mu, s) on bins of width 1/255, the bins of 0 and 1 reaching to -inf and +inf."""
    inv_scale = (-log_scale).exp()  # 1/s
    lower = (x - BIN / 2 - mean) * inv_scale  # a
    upper = (x + BIN / 2 - mean) * inv_scale  # b
    above_0 = (x > BIN / 2).to(x.dtype)  # 1 where k > 0: the bin has a lower edge
    below_1 = (x < 1 - BIN / 2).to(x.dtype)  # 1 where k < 255: the bin has an upper edge
    log_width = torch.log1p(-torch.exp(-BIN * inv_scale))  # log(1 - e^(-Delta/s))
    return -below_1 * softplus(-upper) - above_0 * softplus(lower) + above_0 * below_1 * log_width


# --- DDPM: the UNet of tinygen/models/diffusion.py, and Algorithm 1 ---------------------------


def timestep_embedding(t, dim, dtype):
    """[sin(t w_i), cos(t w_i)], w_i = 10000^(-i / (dim/2)): (B,) -> (B, dim), computed in float64."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = t.to(torch.float64)[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1).to(dtype)


class ResBlock(tnn.Module):
    def __init__(self, in_channels, out_channels, emb_dim, groups, dropout):
        super().__init__()
        self.norm1 = tnn.GroupNorm(groups, in_channels)
        self.conv1 = tnn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = tnn.Linear(emb_dim, out_channels)
        self.norm2 = tnn.GroupNorm(groups, out_channels)
        self.dropout = tnn.Dropout(dropout)
        self.conv2 = tnn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = tnn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else tnn.Identity()

    def forward(self, x, emb):
        h = self.conv1(TF.silu(self.norm1(x)))
        h = h + self.emb(TF.silu(emb))[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        h = self.conv2(self.dropout(TF.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(tnn.Module):
    """GroupNorm -> 1x1 conv to q, k, v -> softmax(Q K^T / sqrt(d)) V per head -> 1x1 conv, added to x."""

    def __init__(self, channels, groups, heads=1):
        super().__init__()
        self.heads = heads
        self.norm = tnn.GroupNorm(groups, channels)
        self.qkv = tnn.Conv2d(channels, 3 * channels, 1)
        self.proj = tnn.Conv2d(channels, channels, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)  # (B, 3C, H, W) -> (B, 3, h, d, HW)
        qkv = qkv.transpose(-2, -1)  # (B, 3, h, HW, d)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # each (B, h, HW, d)
        h = TF.scaled_dot_product_attention(q, k, v)  # (B, h, HW, d)
        h = h.transpose(-2, -1).reshape(B, C, H, W)  # (B, h, d, HW) -> (B, C, H, W)
        return x + self.proj(h)


class UNet(tnn.Module):
    """eps_theta(x_t, t, c), built from a diffusion `Config` exactly as tinygen's `UNet`."""

    def __init__(self, config):
        super().__init__()
        widths, groups, dropout = config.channels, config.groups, config.dropout
        attn = [r in config.attn_resolutions for r in config.resolutions]  # per level, from the top

        def attention(level, width):  # tnn.Identity holds no weights, as tinygen's
            return AttentionBlock(width, groups, config.attn_heads) if attn[level] else tnn.Identity()
        self.time_dim = 2 * max(1, widths[0] // 2)
        emb_dim = 4 * widths[0]
        self.num_classes = config.num_classes
        self.time_mlp = tnn.Sequential(tnn.Linear(self.time_dim, emb_dim), tnn.SiLU(), tnn.Linear(emb_dim, emb_dim))
        if config.num_classes is not None:
            self.class_emb = tnn.Embedding(config.num_classes + 1, emb_dim)  # + the "null" class
        self.inc = tnn.Conv2d(config.image_channels, widths[0], 3, padding=1)
        self.down, self.down_attn, self.downsample = tnn.ModuleList(), tnn.ModuleList(), tnn.ModuleList()
        c = widths[0]
        for i, width in enumerate(widths):
            self.down.append(ResBlock(c, width, emb_dim, groups, dropout))
            self.down_attn.append(attention(i, width))
            if i < len(widths) - 1:
                self.downsample.append(tnn.Conv2d(width, width, 3, stride=2, padding=1))
            c = width
        self.mid = ResBlock(c, c, emb_dim, groups, dropout)
        self.mid_attn = attention(len(widths) - 1, c)
        self.up, self.up_attn, self.upsample = tnn.ModuleList(), tnn.ModuleList(), tnn.ModuleList()
        for i in reversed(range(len(widths))):
            self.up.append(ResBlock(c + widths[i], widths[i], emb_dim, groups, dropout))
            self.up_attn.append(attention(i, widths[i]))
            c = widths[i]
            if i > 0:
                self.upsample.append(tnn.Sequential(tnn.Upsample(scale_factor=2.0),
                                                    tnn.Conv2d(c, widths[i - 1], 3, padding=1)))
                c = widths[i - 1]
        self.out = tnn.Sequential(tnn.GroupNorm(groups, c), tnn.SiLU(),
                                 tnn.Conv2d(c, config.image_channels, 3, padding=1))

    def forward(self, x, t, labels=None):
        """x (B, C, H, W), integer timesteps t (B,) in 0..T-1, labels (B,) or None -> (B, C, H, W)."""
        emb = self.time_mlp(timestep_embedding(t, self.time_dim, x.dtype))  # (B, emb_dim)
        if self.num_classes is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.num_classes)
            emb = emb + self.class_emb(labels)
        h = self.inc(x)
        skips = []
        for i, (block, attn) in enumerate(zip(self.down, self.down_attn)):
            h = attn(block(h, emb))
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid_attn(self.mid(h, emb))
        for i, (block, attn) in enumerate(zip(self.up, self.up_attn)):
            h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))  # (B, C_up + C_skip, H, W)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.out(h)


class DDPMTwin:
    """The twin of `DDPM.train_step`: eps-prediction loss, lr warm-up and cosine decay, clipping, Adam, EMA."""

    def __init__(self, model):
        c = self.config = model.config
        self.net = copy_weights(model.net, UNet(c))
        s = self.schedule = Schedule(c)
        self.sqrt_alpha_bar = torch.from_numpy(s.sqrt_alpha_bar)  # float64, cast per batch as tinygen's kernel
        self.sqrt_one_minus_alpha_bar = torch.from_numpy(s.sqrt_one_minus_alpha_bar)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        # the EMA and the step count (which sets the warm-up) continue from the model's; Adam starts afresh
        self.ema_shadow = [torch.from_numpy(model.ema.shadow[name].copy()) for name, _ in self.net.named_parameters()]
        self.ema_buffers = [torch.from_numpy(model.ema.buffers[name].copy()) for name, _ in self.net.named_buffers()]
        self.ema_warmup, self.ema_updates = model.ema.warmup, model.ema.num_updates
        self.step = model.step

    def draw(self, x0):
        """The step's random draws: t (B,) int64, eps like x0, and u (B,) in [0, 1) for label dropout."""
        B = x0.shape[0]
        t = torch.randint(0, self.config.T, (B,))  # t ~ Uniform({1, ..., T}), as indices t - 1
        eps = torch.randn_like(x0)  # eps ~ N(0, I)
        u = torch.rand(B, dtype=torch.float64) if self.config.num_classes is not None else None
        return t, eps, u

    def train_step(self, images, labels=None):
        c = self.config
        x0 = 2 * images - 1  # [0, 1] -> [-1, 1]
        t, eps, u = self.draw(x0)
        shape = (-1,) + (1,) * (x0.ndim - 1)  # (B,) -> (B, 1, 1, 1)
        x_t = (self.sqrt_alpha_bar[t].to(x0.dtype).view(shape) * x0
               + self.sqrt_one_minus_alpha_bar[t].to(x0.dtype).view(shape) * eps)
        y = None
        if c.num_classes is not None:
            y = labels.clone()
            y[u < c.p_uncond] = c.num_classes  # drop to the null class
        loss = TF.mse_loss(self.net(x_t, t, y), eps)

        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        self.optimizer.zero_grad()
        loss.backward()
        grad_norm = tnn.utils.clip_grad_norm_(self.net.parameters(), c.grad_clip or math.inf)
        self.optimizer.step()
        with torch.no_grad():  # EMA: shadow += (1 - decay) (theta - shadow); buffers copied
            decay = ema_decay(c.ema_decay, self.ema_warmup, self.ema_updates)
            for shadow, p in zip(self.ema_shadow, self.net.parameters()):
                shadow.lerp_(p, 1 - decay)
            for saved, b in zip(self.ema_buffers, self.net.buffers()):
                saved.copy_(b)
        self.ema_updates += 1
        self.step += 1
        return {"loss": loss.item(), "grad_norm": grad_norm.item()}

    def learning_rate(self):
        """`DDPM.learning_rate`: a linear warm-up over `warmup_steps`, then a cosine decay to 0 at `steps`."""
        c = self.config
        warmup = min(1.0, (self.step + 1) / max(c.warmup_steps, 1))
        progress = min(1.0, self.step / max(c.steps, 1))
        return c.lr * warmup * 0.5 * (1 + math.cos(math.pi * progress))

    # --- sampling, as DDPM.sample (variance beta_t; x0_hat clipped; labels and guidance) --------

    def ema_net(self):
        """A copy of the UNet holding the EMA weights (and the latest buffers), in eval mode."""
        net = copy.deepcopy(self.net).eval()
        with torch.no_grad():
            for p, shadow in zip(net.parameters(), self.ema_shadow):
                p.copy_(shadow)
            for b, saved in zip(net.buffers(), self.ema_buffers):
                b.copy_(saved)
        return net

    def initial_noise(self, n, dtype):
        """x_T ~ N(0, I), (n, C, H, W): the sampler's first draw (the tests replace it)."""
        return torch.randn(n, *self.config.shape, dtype=dtype)

    @torch.no_grad()
    def sample(self, n, sampler="ddim", steps=None, eta=0.0, labels=None, guidance=0.0):
        """n images (n, C, H, W) float32 in [0, 1] from the EMA weights: "ddpm" (Algorithm 2, all T
        steps, sigma_t^2 = beta_t), "ddim" (`steps` timesteps, default `DDPM.DDIM_STEPS`, with `eta`)
        or "dpmpp" (DPM-Solver++(2M), `steps` timesteps, default `DDPM.DPMPP_STEPS`), each step's
        x0_hat clipped to [-1, 1] as tinygen's `DDPM._eps` does. `labels` (n,) pick the classes of a
        class-conditional model, `guidance` w > 0 applies classifier-free guidance."""
        if sampler not in ("ddpm", "ddim", "dpmpp"):
            raise ValueError(f"sampler must be 'ddpm', 'ddim' or 'dpmpp', got {sampler!r}")
        if sampler == "dpmpp" and eta != 0:
            raise ValueError(f"eta={eta} applies to sampler='ddim'; DPM-Solver++(2M) is deterministic")
        if guidance != 0 and labels is None:
            raise ValueError(f"guidance={guidance} needs labels (classifier-free guidance of a conditional model)")
        if labels is not None:
            if self.config.num_classes is None:
                raise ValueError("labels given, but this DDPM has no num_classes")
            labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        s, net = self.schedule, self.ema_net()
        dtype = next(net.parameters()).dtype
        x = self.initial_noise(n, dtype)  # x_T ~ N(0, I)
        if sampler == "ddpm":
            sigmas = np.sqrt(s.betas)
            for i in reversed(range(s.T)):  # i = t - 1
                eps = self._eps(net, x, i, labels, guidance)
                x = float(s.inv_sqrt_alpha[i]) * (x - float(s.eps_coef[i]) * eps)
                if i > 0:  # z = 0 at t = 1
                    x = x + float(sigmas[i]) * torch.randn_like(x)
        elif sampler == "ddim":
            # tinygen's own timestep sub-sequence and sigma (Song et al. eq. 16): they read self.schedule only
            taus = DDPM.ddim_timesteps(self, min(DDPM.DDIM_STEPS, s.T) if steps is None else steps)
            for k in reversed(range(len(taus))):
                i, prev = taus[k], taus[k - 1] if k > 0 else -1  # prev = -1: alpha_bar_0 = 1
                alpha_bar_prev = float(s.alpha_bar[prev]) if prev >= 0 else 1.0
                sigma = float(DDPM.ddim_sigma(self, s.alpha_bar[i], alpha_bar_prev, eta))
                eps = self._eps(net, x, i, labels, guidance)
                # Song et al. (2021), eq. 12
                x0_hat = (x - float(s.sqrt_one_minus_alpha_bar[i]) * eps) / float(s.sqrt_alpha_bar[i])
                direction = math.sqrt(max(1 - alpha_bar_prev - sigma * sigma, 0.0))
                x = math.sqrt(alpha_bar_prev) * x0_hat + direction * eps
                if sigma > 0:
                    x = x + sigma * torch.randn_like(x)
        else:
            x = self._sample_dpmpp(net, x, labels, guidance, steps)
        return ((x.clamp(-1, 1) + 1) / 2).numpy().astype(np.float32)  # [-1, 1] -> [0, 1]

    def _sample_dpmpp(self, net, x, labels, guidance, steps):
        """DPM-Solver++(2M), Lu et al. (2022), Algorithm 2, as `DDPM._sample_dpmpp`: along tinygen's
        timesteps t_0 = T > ... > t_{M-1} = 1 (`DDPM.dpmpp_timesteps`, which reads self.schedule only),
        with alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t), lambda_t = log(alpha_t / sigma_t),
        h_i = lambda_{t_i} - lambda_{t_{i-1}} and r_i = h_{i-1} / h_i,

            D_i = (1 + 1 / (2 r_i)) x_theta(x_{t_{i-1}}, t_{i-1}) - 1 / (2 r_i) x_theta(x_{t_{i-2}}, t_{i-2})
            x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i,

        the first step first order (D_1 = x_theta(x_T, T)), and the last, to sigma = 0, returning
        x_theta(x_1, 1)."""
        s = self.schedule
        alpha, sigma, lam = s.sqrt_alpha_bar, s.sqrt_one_minus_alpha_bar, s.lambdas  # alpha_t, sigma_t, lambda_t
        taus = DDPM.dpmpp_timesteps(self, min(DDPM.DPMPP_STEPS, s.T) if steps is None else steps)
        x0_prev = h_prev = None  # x_theta(x_{t_{i-2}}, t_{i-2}) and h_{i-1}
        for k in reversed(range(len(taus))):
            i = taus[k]  # t_{i-1}, as an index
            eps = self._eps(net, x, i, labels, guidance)
            x0 = (x - float(sigma[i]) * eps) / float(alpha[i])  # x_theta(x_{t_{i-1}}, t_{i-1})
            if k == 0:  # the last step, to sigma = 0
                return x0
            prev = taus[k - 1]  # t_i, as an index
            h = float(lam[prev] - lam[i])  # h_i
            if x0_prev is None:  # D_1 = x_theta(x_T, T)
                D = x0
            else:
                r = h_prev / h  # r_i
                D = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
            x = float(sigma[prev] / sigma[i]) * x - float(alpha[prev] * math.expm1(-h)) * D
            x0_prev, h_prev = x0, h

    def _eps(self, net, x, i, labels=None, guidance=0.0):
        """eps_theta(x_t, t, c) at index i = t - 1, guided, (1 + w) eps_theta(x, c) - w eps_theta(x, null),
        and re-derived from x0_hat clipped to [-1, 1] (`DDPM._eps`)."""
        n = x.shape[0]
        ts = torch.full((n,), int(i), dtype=torch.int64)
        if labels is None or guidance == 0:
            eps = net(x, ts, labels)
        else:
            null = torch.full((n,), self.config.num_classes, dtype=torch.int64)
            both = net(torch.cat([x, x]), torch.cat([ts, ts]), torch.cat([labels, null]))  # (2n, C, H, W)
            eps = (1 + guidance) * both[:n] - guidance * both[n:]
        a, b = float(self.schedule.sqrt_alpha_bar[i]), float(self.schedule.sqrt_one_minus_alpha_bar[i])
        x0_hat = ((x - b * eps) / a).clamp(-1, 1)
        return (x - a * x0_hat) / b


def twin(model):
    """The PyTorch twin of a tinygen model from `tinygen.models.MODELS`, starting from its weights."""
    if isinstance(model, GAN):
        return GANTwin(model)
    if isinstance(model, VAE):
        return VAETwin(model)
    if isinstance(model, DDPM):
        return DDPMTwin(model)
    raise TypeError(f"no PyTorch twin for {type(model).__name__}")
