"""The three model families, one file each, with the papers' math on the page.

Every model class follows one small protocol, so the `tinygen` command can train, checkpoint,
resume and sample any of them the same way:

- `Model.Config`: a dataclass of hyperparameters with sensible defaults, including the image
  shape (`image_channels`, `image_size`; 1 and 28, MNIST's, unless the data says otherwise), the
  default training length (`steps`), `batch_size` and `lr`; `Model(config)` builds networks and
  optimizers.
- `train_step(images, labels) -> dict[str, float]`: one training iteration on a batch (images a
  float32 Tensor (B, C, H, W) in [0, 1], labels an int64 array (B,)); it runs the optimizer
  update(s) itself (a GAN alternates its discriminator and generator) and returns the losses.
- `sample(n, **options) -> numpy float32 array (n, C, H, W) in [0, 1]`, drawing from
  `tinygen.backend.generator()` (seeded by `tinygen.manual_seed`).
- `state_dict()` / `load_state_dict(state)`: everything needed to resume (networks, optimizer
  states, EMA weights, step counters), as nested dicts of arrays and numbers for `tinygen.save`.
- `to(device)` / `device`: move the networks to "cpu" or "cuda" (their optimizer and EMA state
  follow on the next step); `train_step` copies a batch from the host to that device itself.
"""

from tinygen.models.diffusion import DDPM
from tinygen.models.gan import DCGAN, MLPGAN
from tinygen.models.vae import VAE, ConvVAE

# The names `tinygen train NAME` accepts.
MODELS = {"gan": MLPGAN, "dcgan": DCGAN, "vae": VAE, "convvae": ConvVAE, "ddpm": DDPM}
