"""The evaluation protocol behind `tinygen eval`: samples in, a table of metrics beside the floor out.

1. Samples: an .npz with an array "samples" of shape (n, C, H, W), the reference's shape, uint8 in
   0..255 or float in [0, 1] (what `tinygen sample --npz` writes; plain `np.savez(path, samples=x)`
   works too), or n images drawn from a checkpoint. The protocol's n (`Reference.protocol_n`) is
   10,000 for MNIST; for any other dataset it is the size of its held-out split, all there is
   (emoji: the test split).
2. Reference (`reference`): MNIST with the full files: the 10,000 test images (FD, KID and the k-NN
   metrics) and the 60,000 training images (nearest-training-image distances). Without them, the
   embedded subset: FD against the shipped statistics of the full test set, KID and the k-NN
   metrics against the 1,000 embedded test images, the 15,000 embedded training images for the
   distances. Any other dataset (`tinygen.data.load_dataset`: emoji, cifar10, folder, npz): its
   held-out images for FD, KID and the k-NN metrics, its training images for the distances.
   The features are the dataset's feature network's: the shipped LeNet for MNIST, the shipped
   ConvFeatureNet for emoji, one you trained (`train_feature_net --data ...`) for the others.
3. Metrics (`evaluate`): FD; KID (unbiased, so comparable across n where FD is not); precision,
   recall, coverage (k = 3); the class histogram under the feature network; the median pixel
   distance to the nearest training image. Samples from a checkpoint are drawn by `sample_in_batches`.
4. Floor (`floor`): the same metrics for as many real training images as samples (drawn with the
   seed), against the same reference: what a perfect generator would score at this n. Their
   nearest-training-image distance leaves the image itself out.
5. Likelihoods (`likelihood_metrics`, checkpoints of VAEs and DDPMs only): bounds on the test
   images' log-likelihood from `tinygen.evaluation.likelihood`; they have no floor.
"""

import dataclasses
import inspect
import os
import re
from fractions import Fraction

import numpy as np

from tinygen import backend
from tinygen.data import MNIST
from tinygen.errors import ArgumentError, DatasetFormatError
from tinygen.evaluation.features import (
    IMAGE_SHAPE,
    WEIGHTS_SHA256,
    as_images,
    features_and_logits,
    load_feature_net,
    load_test_statistics,
    shipped_feature_net,
)
from tinygen.evaluation.frechet import frechet_distance, statistics
from tinygen.evaluation.kid import SUBSET_SIZE, SUBSETS, kernel_distance
from tinygen.evaluation.manifold import NEAREST_K, class_histogram, nearest_distances, precision_recall_coverage
from tinygen.progress import Progress
from tinygen.serialization import _CORRUPT_ERRORS, load, save

PROTOCOL_N = 10_000  # MNIST's; `Reference.protocol_n` is each dataset's
SAMPLES_KEY = "samples"
MNIST_DATA = ("embedded", "mnist")

# metric name -> what it means: the last column of `tinygen eval`'s table, "meaning" in its JSON.
METRICS = {
    "fd": "Fréchet distance to the test set in the feature network's features (lower is better)",
    "kid": f"KID: unbiased MMD^2 to the test set, cubic kernel, subsets of {SUBSET_SIZE} (lower is better; "
           "about 0, of either sign, for real images)",
    "precision": f"share of samples inside the test images' {NEAREST_K}-NN manifold (realism)",
    "recall": f"share of test images inside the samples' {NEAREST_K}-NN manifold (variety)",
    "coverage": f"share of test images whose {NEAREST_K}-NN ball holds a sample",
    "classes_present": "classes the feature network predicts for at least 1% of the samples",
    "largest_class_share": "share of the most frequent predicted class",
    "smallest_class_share": "share of the least frequent predicted class",
    "nearest_train_l2_median": "median pixel L2 distance to the nearest training image (0: copies)",
}


# The same for the likelihood bounds (`likelihood_metrics`); {K} and {S} stand for the number in the name.
LIKELIHOOD_METRICS = {
    "test_elbo_nats": "VAE: mean ELBO of the test images (binarised for a Bernoulli decoder), nats (higher is better)",
    "test_iwae_k{K}_nats": "VAE: mean IWAE bound L_K, K = {K}, of the test images (binarised for a Bernoulli decoder), "
                           "nats (higher is better)",
    "test_iwae_k{K}_bits_per_dim": "VAE (logistic decoder): the IWAE bound L_K, K = {K}, on -log p of the 8-bit test "
                                   "images, bits/dim (lower is better)",
    "test_bits_per_dim": "DDPM: mean variational bound (Ho et al. eq. 5) on -log p, bits/dim (lower is better)",
    "test_bits_per_dim_t{S}": "DDPM: the same bound estimated from {S} random timesteps per image, bits/dim "
                              "(lower is better)",
}


def meaning(name):
    """What the metric `name` measures, from `METRICS` or `LIKELIHOOD_METRICS`.

    >>> meaning("test_iwae_k100_bits_per_dim")
    'VAE (logistic decoder): the IWAE bound L_K, K = 100, on -log p of the 8-bit test images, bits/dim (lower is better)'
    """
    if name in METRICS:
        return METRICS[name]
    for pattern, text in LIKELIHOOD_METRICS.items():
        match = re.fullmatch(pattern.replace("{K}", r"(?P<K>\d+)").replace("{S}", r"(?P<S>\d+)"), name)
        if match:
            return text.format(**match.groupdict())
    raise KeyError(f"no meaning for the metric {name!r}: add it to METRICS or LIKELIHOOD_METRICS")


def load_samples(path, shape=IMAGE_SHAPE):
    """The images in the .npz `path`, as float32 (n, C, H, W) in [0, 1], (C, H, W) = `shape` (the reference's).

    A missing or unreadable file, or one without a "samples" array, raises `DatasetFormatError`;
    a wrong dtype `DTypeError`, a shape other than (n, *shape) `ShapeError` naming both shapes,
    values outside [0, 1] `ArgumentError`; every message names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetFormatError(f"{path}: no such sample file")
    try:
        file = open(path, "rb")
    except OSError as err:
        raise DatasetFormatError(f"{path}: cannot read the sample file ({err.strerror or err})") from err
    with file:  # opened once: its first bytes name what it is, then NumPy reads it from the start
        head = file.read(6)
        if head == b"\x93NUMPY":
            raise DatasetFormatError(f"{path}: a lone .npy array, not an .npz archive; save the samples with "
                                     f"np.savez(path, {SAMPLES_KEY}=images)")
        if not head.startswith(b"PK"):  # an .npz is a zip archive of .npy files
            raise DatasetFormatError(f"{path}: not an .npz file (a zip archive of .npy arrays); it starts with {head!r}")
        file.seek(0)
        try:
            with np.load(file, allow_pickle=False) as archive:
                if SAMPLES_KEY not in archive.files:
                    keys = ", ".join(repr(k) for k in archive.files if not k.startswith("__")) or "none"
                    raise DatasetFormatError(
                        f"{path}: no {SAMPLES_KEY!r} array (found {keys}); write the samples with "
                        f"`tinygen sample --npz` or np.savez(path, {SAMPLES_KEY}=images)"
                    )
                samples = archive[SAMPLES_KEY]
        except DatasetFormatError:
            raise
        except (TypeError, *_CORRUPT_ERRORS) as err:
            raise DatasetFormatError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from err
    return as_images(samples, where=f"{path}: {SAMPLES_KEY!r}", shape=shape)


@dataclasses.dataclass
class Reference:
    """The real data that samples are measured against (see the module docstring, item 2)."""

    description: dict  # what each part is, for the table and the JSON
    test_stats: tuple  # (mu (128,), sigma (128, 128), n) of the test features, for FD
    test_features: np.ndarray  # (m, 128) float64, for KID and the k-NN metrics (precision, recall, coverage)
    test_images: np.ndarray  # (m, C, H, W) uint8, for the likelihood bounds
    train_images: np.ndarray  # (N, C, H, W) float32 in [0, 1], for the floor and nearest images
    data: str = "embedded"  # the dataset's name (tinygen.data.load_dataset)
    protocol_n: int = PROTOCOL_N  # the samples the protocol scores: MNIST 10,000, else the held-out images
    feature_net_sha256: str = WEIGHTS_SHA256  # of the network whose features these are

    @property
    def shape(self):
        """(C, H, W) of the images."""
        return self.train_images.shape[1:]


def load_split(data, root=None, train=True, image_size=None, channels=None):
    """One split of a dataset (`tinygen.data.load_dataset`): uint8 images (N, C, H, W), labels (N,) or None, classes or None."""
    from tinygen.data import load_dataset  # NOTE: here, not at the top: MNIST's protocol does not need it

    dataset = load_dataset(data, root=root, train=train, image_size=image_size, channels=channels)
    images = dataset.images
    if images.ndim == 3:
        images = images[:, None]  # MNIST keeps (N, 28, 28): -> (N, 1, 28, 28)
    labels = None if dataset.labels is None else np.asarray(dataset.labels, dtype=np.int64)
    return images, labels, getattr(dataset, "classes", None)


def reference(data_dir=None, net=None, data=None, image_size=None, channels=None, test_dir=None):
    """The reference of dataset `data` (default: mnist when `data_dir` is given, else embedded).

    MNIST: the full files in `data_dir` or the embedded subset (module docstring, item 2), in the
    features of `net` (default: the shipped LeNet). Any other dataset: its held-out and training
    splits, read with `image_size` and `channels` by `tinygen.data.load_dataset(data, data_dir)`,
    in the features of `net` (default: the network that ships for it; for data without one, give
    yours). The network's input shape must be the images'. `folder` and `npz` have no split:
    `data_dir` holds the training images, and `test_dir` (a folder, or an .npz file) the held-out
    ones, read the same way.
    """
    data = data or ("mnist" if data_dir is not None else "embedded")
    if (test_dir is None) == (data in ("folder", "npz")):
        raise ArgumentError(f"a {data} reference needs a test_dir of held-out images (folder and npz have no split)"
                            if test_dir is None else f"test_dir is for folder and npz data, which have no split, not {data}")
    if data not in MNIST_DATA:
        return _dataset_reference(data, data_dir, net, image_size, channels, test_dir)
    if data == "mnist" and data_dir is None:
        raise ArgumentError("the mnist reference needs data_dir, the folder holding the MNIST IDX files")
    if data == "embedded" and data_dir is not None:
        raise ArgumentError("the embedded reference takes no data_dir")
    net = load_feature_net() if net is None else net
    test, train = MNIST(root=data_dir, train=False), MNIST(root=data_dir, train=True)
    test_features, _ = features_and_logits(test.images[:, None], net=net)  # (m, 28, 28) -> (m, 1, 28, 28)
    if data_dir is None:
        mu, sigma, n = load_test_statistics()
        description = {
            "fd": f"the {n:,} MNIST test images (statistics shipped with tinygen)",
            "precision_recall": f"the {len(test):,} embedded MNIST test images (embedded subset; "
                                "pass --data-dir for all 10,000)",
            "nearest_train": f"the {len(train):,} embedded MNIST training images",
        }
    else:
        mu, sigma = statistics(test_features)
        n = len(test_features)
        description = {
            "fd": f"the {n:,} MNIST test images in {data_dir}",
            "precision_recall": f"the {len(test):,} MNIST test images in {data_dir}",
            "nearest_train": f"the {len(train):,} MNIST training images in {data_dir}",
        }
    train_images = train.images[:, None].astype(np.float32) / 255  # (N, 28, 28) -> (N, 1, 28, 28)
    test_images = test.images[:, None]  # (m, 28, 28) -> (m, 1, 28, 28) uint8
    return Reference(description, (mu, sigma, n), test_features, test_images, train_images, data=data,
                     feature_net_sha256=getattr(net, "sha256", WEIGHTS_SHA256))


def _dataset_reference(data, data_dir, net, image_size, channels, test_dir):
    """`reference` for every dataset but MNIST: the held-out split is the test set, and its size the protocol's n."""
    net = shipped_feature_net(data) if net is None else net
    if test_dir is None:
        test_images, _, _ = load_split(data, data_dir, False, image_size, channels)
    else:  # folder, npz: the held-out images are a second folder or file
        test_images, _, _ = load_split(data, test_dir, True, image_size, channels)
    train_images, _, _ = load_split(data, data_dir, True, image_size, channels)
    if tuple(test_images.shape[1:]) != tuple(net.image_shape):
        raise ArgumentError(f"the feature network takes images of shape {tuple(net.image_shape)}, but the {data} images "
                            f"have shape {tuple(test_images.shape[1:])}: train one for them (train_feature_net --data {data})")
    test_features, _ = features_and_logits(test_images, net=net)
    where = data if data_dir is None else f"{data} {data_dir}"
    held_out = f"the {len(test_images):,} held-out " + (f"{where} images" if test_dir is None else f"{data} images in {test_dir}")
    description = {
        "fd": held_out,
        "precision_recall": f"{held_out} (KID too)",
        "nearest_train": f"the {len(train_images):,} {where} training images",
    }
    return Reference(description, (*statistics(test_features), len(test_images)), test_features, test_images,
                     train_images.astype(np.float32) / 255, data=data, protocol_n=len(test_images),
                     feature_net_sha256=getattr(net, "sha256", None))


def evaluate(images, ref, net=None, exclude=None):
    """The metrics of `images` (n, C, H, W) against `ref`: {name: value}, names as in `METRICS`.

    `net` is the feature network of `ref` (default: the shipped LeNet). `exclude` (n,) optional:
    the index in `ref.train_images` of each image, when the images are training images (the
    floor), so that an image is not its own nearest training image.
    """
    net = load_feature_net() if net is None else net
    if tuple(net.image_shape) != tuple(ref.shape):
        raise ArgumentError(f"the feature network takes images of shape {tuple(net.image_shape)}, "
                            f"the reference's are {tuple(ref.shape)}")
    images = as_images(images, shape=ref.shape)
    if len(images) < NEAREST_K + 1:
        raise ArgumentError(f"{len(images)} images are too few: k-NN precision/recall with k = {NEAREST_K} "
                            f"need at least {NEAREST_K + 1} (the protocol uses {ref.protocol_n:,})")
    feats, logits = features_and_logits(images, net=net)
    mu, sigma = statistics(feats)
    metrics = {"fd": frechet_distance(mu, sigma, *ref.test_stats[:2])}
    metrics["kid"] = kernel_distance(ref.test_features, feats, SUBSET_SIZE, SUBSETS)
    metrics.update(precision_recall_coverage(ref.test_features, feats))
    hist = class_histogram(logits.argmax(1), num_classes=len(net.classes))
    metrics["classes_present"] = hist["classes_present"]
    metrics["largest_class_share"] = hist["largest_share"]
    metrics["smallest_class_share"] = hist["smallest_share"]
    metrics["nearest_train_l2_median"] = float(np.median(nearest_distances(images, ref.train_images, exclude)))
    return metrics


def sample_in_batches(model, n, batch_size=500, seed=0, options=None, progress=None, partial=None, key=None):
    """n samples (n, C, H, W) float32 in [0, 1] from `model`, `batch_size` per `model.sample` call.

    The draws start from `manual_seed(seed)`; `options` go to every call (a diffusion model's
    sampler, steps, eta, guidance), except `labels`, the (n,) classes of a class-conditional
    model, which each call gets its batch's share of. `progress`, True (stderr) or a text file,
    shows the images done with an ETA (`tinygen.progress.Progress`), advanced after every
    denoising step of a diffusion model and after every batch of the others.

    `partial`, a path: after every batch the samples so far and the generator's state are saved
    there (atomically), and a call that finds the file continues after its last batch, with the
    numbers an uninterrupted call would have drawn; so a killed run (10,000 ancestral DDPM
    samples take hours on a CPU) loses one batch at most. `key`, a dict of plain values that
    identify the draw (the checkpoint, say): a file saved under another key, n, batch size, seed
    or options is refused, not mixed in. The caller removes the file when it is done with it.
    """
    options = dict(options or {})
    labels = options.pop("labels", None)  # a class-conditional model's (n,) classes, cut per batch
    settings = dict(key or {}, n=n, batch_size=batch_size, seed=seed, options=options)
    if labels is not None:
        settings["labels"] = np.asarray(labels).tolist()
    backend.manual_seed(seed)
    batches, done = [], 0
    if partial is not None and os.path.exists(partial):
        state = load(partial)
        if state.get("settings") != settings:
            raise ArgumentError(f"{partial} holds samples drawn with other settings ({state.get('settings')}, "
                                f"not {settings}); remove it, or draw with its settings to continue it")
        batches, done = [state["samples"]], len(state["samples"])
        backend.set_rng_state(state["rng"])
    bar = Progress(n, "sampling", unit="images", file=None if progress is True else progress, initial=done) \
        if progress else None
    per_step = bar is not None and "progress" in inspect.signature(model.sample).parameters  # a diffusion model
    while done < n:
        k = min(batch_size, n - done)
        # each of a call's `steps` denoising steps does k / steps of its images' work (exact, so they sum to k)
        hook = {"progress": lambda step, steps: bar.update(Fraction(k, steps))} if per_step else {}
        batches.append(model.sample(k, **options, **hook, **({} if labels is None else {"labels": labels[done:done + k]})))
        done += len(batches[-1])
        if partial is not None and done < n:
            batches = [np.concatenate(batches)]
            save({"samples": batches[0], "rng": backend.get_rng_state(), "settings": settings}, partial)
        if bar is not None and not per_step:
            bar.update(k)
    if bar is not None:
        bar.close()
    return np.concatenate(batches)


def floor(ref, n, seed=0, net=None):
    """`evaluate` for min(n, N) real training images drawn with `seed`: (metrics, the n used)."""
    n = min(n, len(ref.train_images))
    idx = np.sort(np.random.default_rng(seed).choice(len(ref.train_images), size=n, replace=False))
    return evaluate(ref.train_images[idx], ref, net=net, exclude=idx), n


def likelihood_metrics(model, model_name, test_images, seed=0, iwae_k=100, t_subsample=50, use_ema=True):
    """Likelihood bounds on `test_images` (m, C, H, W) uint8: {name: (mean, m)}; {} for a GAN.

    VAE / ConvVAE: the ELBO and the IWAE bound with K = `iwae_k` samples, with a Bernoulli decoder
    on the test images binarised once with `seed` (it is a normalised likelihood on binary images
    only), with the discretised logistic on the 8-bit images themselves, and then also the IWAE
    bound in bits/dim, -L_K / (C H W ln 2), comparable with the DDPM's. DDPM: the bound of Ho et
    al. eq. 5 in bits/dim on the 8-bit images, estimated from `t_subsample` random timesteps per
    image (0 or None: all T terms, T network calls per batch), of its EMA weights, or of its
    trained weights with `use_ema=False`.
    """
    from tinygen.evaluation import likelihood  # NOTE: imported here: `eval --samples` never needs it

    m = len(test_images)
    if m == 0:
        return {}
    if model_name in ("vae", "convvae"):
        bernoulli = model.config.likelihood == "bernoulli"
        x = likelihood.binarize(test_images.astype(np.float64) / 255, seed=seed) if bernoulli else test_images
        iwae = likelihood.vae_iwae(model, x, K=iwae_k, seed=seed)  # (m,) nats
        metrics = {
            "test_elbo_nats": (float(likelihood.vae_elbo(model, x, seed=seed).mean()), m),
            f"test_iwae_k{iwae_k}_nats": (float(iwae.mean()), m),
        }
        if not bernoulli:  # vae_bits_per_dim's -L_K / (D ln 2), from the L_K above rather than a second run
            metrics[f"test_iwae_k{iwae_k}_bits_per_dim"] = (float(-iwae.mean() / (test_images[0].size * np.log(2))), m)
        return metrics
    if model_name == "ddpm":
        bpd = likelihood.ddpm_bits_per_dim(model, test_images, seed=seed, t_subsample=t_subsample or None,
                                           use_ema=use_ema)
        return {f"test_bits_per_dim_t{t_subsample}" if t_subsample else "test_bits_per_dim": (float(bpd.mean()), m)}
    return {}


def report(metrics, n, floor_metrics, floor_n, extra=None):
    """Rows {metric, value, n, floor, floor_n, meaning} for the JSON; `extra` adds rows without a floor."""
    rows = [{"metric": name, "value": value, "n": n, "floor": floor_metrics.get(name), "floor_n": floor_n}
            for name, value in metrics.items()]
    for name, (value, count) in (extra or {}).items():
        rows.append({"metric": name, "value": value, "n": count, "floor": None, "floor_n": None})
    for row in rows:
        row["meaning"] = meaning(row["metric"])
    return rows


def format_table(rows):
    """The rows as an aligned text table: metric, value, n, floor (real training images), its n, meaning.

    KID is printed with 3 significant digits (real images give values near 0, of either sign).
    """
    def fmt(value, metric=None):
        if value is None:
            return "-"
        if isinstance(value, int):
            return f"{value:d}"
        return f"{value:.3g}" if metric == "kid" else f"{value:.4f}"

    lines = [("metric", "value", "n", "floor (real)", "n", "meaning")]
    lines += [(r["metric"], fmt(r["value"], r["metric"]), fmt(r["n"]), fmt(r["floor"], r["metric"]), fmt(r["floor_n"]),
               r["meaning"]) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(6)]
    left = (0, 5)  # the names and meanings are text, the rest numbers
    return "\n".join(
        "  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        for line in lines
    )


def summary(source, rows, ref, seed):
    """The JSON object `tinygen eval --json` writes."""
    return {
        "source": source,
        "seed": seed,
        "feature_net_sha256": ref.feature_net_sha256,
        "protocol_n": ref.protocol_n,
        "reference": ref.description,
        "metrics": rows,
    }
