"""Where a VAE's FD comes from: its decoder means at prior draws against those at real images' codes.

    python -m benchmarks.vae_prior_gap --checkpoint runs/vae/checkpoint.npz --data-dir ../shared/data/mnist

A VAE's samples are the decoder means sigmoid(f(z)) at z ~ p(z). They can be poor for two
reasons: the decoder cannot draw sharp digits from any z, or the prior's draws fall where no
image's code lies. This scores three sets of n images in the `tinygen eval` feature space (FD
against the 10,000 test images):

- the model's samples, as `tinygen eval --checkpoint` draws them (z from the model's prior);
- reconstructions: the decoder means at z = mu(x), the posterior means of n training images;
- the same n training images themselves (the floor).

If the reconstructions score near the floor and the samples far from it, the decoder is fine and
the prior is the problem. For the MLP VAE with the standard prior N(0, I) this was the case (see
the README); it is why `VAEConfig.prior` defaults to the VampPrior.
"""

import argparse

import numpy as np

from tinygen import evaluation, trainer
from tinygen.data import MNIST
from tinygen.evaluation import PROTOCOL_N, frechet_distance, load_feature_net, load_test_statistics, statistics
from tinygen.evaluation.features import features
from tinygen.models.vae import VAE
from tinygen.tensor import Tensor, no_grad


def reconstructions(model, images, batch_size=500):
    """Decoder means sigmoid(f(mu(x))) (n, 1, 28, 28) float32 for images x (n, 1, 28, 28) in [0, 1]."""
    out = []
    with no_grad():
        for start in range(0, len(images), batch_size):
            mu, _ = model.encode(Tensor(images[start:start + batch_size]).to(model.device))
            out.append(model.decode(mu).sigmoid().numpy())
    return np.concatenate(out).astype(np.float32)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.vae_prior_gap", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a VAE or ConvVAE checkpoint of `tinygen train`")
    p.add_argument("--data-dir", required=True, help="the folder of the MNIST IDX files (the training images)")
    p.add_argument("--n", type=int, default=PROTOCOL_N, help=f"images per set (default {PROTOCOL_N:,})")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and of the training images drawn")
    args = p.parse_args(argv)

    model, _, step = trainer.load_checkpoint(args.checkpoint)
    if not isinstance(model, VAE):
        p.error(f"{args.checkpoint} holds a {type(model).__name__}, not a VAE or ConvVAE")
    if args.n < 2:
        p.error(f"--n must be at least 2 (a covariance needs two images), got {args.n}")
    train = MNIST(args.data_dir, train=True).images
    idx = np.sort(np.random.default_rng(args.seed).choice(len(train), size=min(args.n, len(train)), replace=False))
    real = train[idx][:, None].astype(np.float32) / 255
    model.net.eval()
    sets = {
        f"samples: decoder means at z ~ p(z), prior {model.config.prior!r}":
            evaluation.sample_in_batches(model, args.n, seed=args.seed),
        "reconstructions: decoder means at z = mu(x), x a training image": reconstructions(model, real),
        "the training images x themselves (floor)": real,
    }
    net, (mu_t, sigma_t, _) = load_feature_net(), load_test_statistics()
    print(f"{type(model).__name__} at step {step:,}, {args.checkpoint}; n = {len(real):,}, "
          "FD against the 10,000 test images")
    print("| images | FD |\n| --- | --- |")
    for name, images in sets.items():
        fd = frechet_distance(*statistics(features(images, net=net)), mu_t, sigma_t)
        print(f"| {name} | {fd:.2f} |")


if __name__ == "__main__":
    main()
