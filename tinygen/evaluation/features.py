"""The feature networks of the evaluation metrics: classifiers trained with tinygen, one per dataset.

FID (Heusel et al. 2017) measures samples in the feature space of an ImageNet Inception network;
for 28x28 digits the field uses a small MNIST classifier instead. Ours:

    (N, 1, 28, 28) -> standardise ((x - 0.1307) / 0.3081)
    -> Conv 5x5, 1 -> 32   -> (N, 32, 24, 24) -> ReLU -> MaxPool 2 -> (N, 32, 12, 12)
    -> Conv 5x5, 32 -> 64  -> (N, 64, 8, 8)   -> ReLU -> MaxPool 2 -> (N, 64, 4, 4)
    -> Flatten (N, 1024) -> Linear 1024 -> 128 -> ReLU -> features (N, 128)
    -> Linear 128 -> 10 -> class logits

NOTE: no padding, so the shapes shrink 28 -> 24 -> 12 -> 8 -> 4 and the network has 184,586
parameters (0.74 MB of float32; with "same" padding the 7x7x64 -> 128 layer alone would be 1.6 MB).
The features are the 128 penultimate activations *after* the ReLU (as FID takes Inception's pool3
activations after their ReLU), so they are non-negative and some units may be zero on every image:
their covariance can be singular, which `frechet.py` handles.

The weights (`lenet_mnist.npz`, written by `python -m tinygen.evaluation.train_feature_net`) ship
inside the package; `WEIGHTS_SHA256` pins them, so every number computed with them says which
network measured it. `load_feature_net` refuses a file with another hash.

Other datasets (colour, other sizes) get a `ConvFeatureNet`, the same idea for (C, H, W) images and
K classes, trained by `python -m tinygen.evaluation.train_feature_net --data NAME`; its file holds
its configuration (shape, classes, the per-channel pixel mean and deviation it standardises with).
The one for `emoji` ships as `convnet_emoji.npz`, pinned by `EMOJI_WEIGHTS_SHA256`; for other data
(cifar10, your folders) you train one and pass its file to `tinygen eval --feature-net`.

>>> net = LeNet()
>>> net.num_parameters()
184586
>>> features(np.zeros((3, 1, 28, 28), np.uint8), net=net).shape
(3, 128)
>>> conv = ConvFeatureNet(3, 32, 10)
>>> conv.num_parameters(), features(np.zeros((2, 3, 32, 32), np.uint8), net=conv).shape
(188810, (2, 128))
"""

import hashlib
import os

import numpy as np

from tinygen import nn
from tinygen.errors import ArgumentError, CheckpointError, DTypeError, ShapeError
from tinygen.serialization import load
from tinygen.tensor import Tensor, no_grad

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS_PATH = os.path.join(HERE, "lenet_mnist.npz")
# SHA-256 of the bytes of lenet_mnist.npz, printed by train_feature_net.py when it wrote the file.
WEIGHTS_SHA256 = "ba9d7a41eb735e2c4791e0dc848035438354f517ca4b6e3a86ae0481b6e8c053"
# Mean and covariance of the features of the 10,000 MNIST test images, written beside the weights.
TEST_STATS_PATH = os.path.join(HERE, "mnist_test_stats.npz")

FEATURE_DIM = 128
NUM_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the training pixels in [0, 1]
CONV_ARCHITECTURE = "tinygen.evaluation.features.ConvFeatureNet"
EMOJI_WEIGHTS_PATH = os.path.join(HERE, "convnet_emoji.npz")
# SHA-256 of the bytes of convnet_emoji.npz, printed by train_feature_net.py --data emoji when it wrote the file.
EMOJI_WEIGHTS_SHA256 = "cd2fa384513b881aa04843dd0b9b565e8992caba0ca70fbc5afc8a8a13cb29da"
# dataset name -> (weights file, SHA-256) of the networks that ship with tinygen
SHIPPED_FEATURE_NETS = {
    "embedded": (WEIGHTS_PATH, WEIGHTS_SHA256),
    "mnist": (WEIGHTS_PATH, WEIGHTS_SHA256),
    "emoji": (EMOJI_WEIGHTS_PATH, EMOJI_WEIGHTS_SHA256),
}


class LeNet(nn.Module):
    """conv5x5 32 -> ReLU -> pool2 -> conv5x5 64 -> ReLU -> pool2 -> FC 128 -> ReLU -> FC 10."""

    image_shape = IMAGE_SHAPE
    classes = [str(digit) for digit in range(NUM_CLASSES)]

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5)  # (N, 1, 28, 28) -> (N, 32, 24, 24)
        self.conv2 = nn.Conv2d(32, 64, 5)  # (N, 32, 12, 12) -> (N, 64, 8, 8)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 4 * 4, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def embed(self, x):
        """The 128 features (after the ReLU) of images x (N, 1, 28, 28) in [0, 1]."""
        h = (x - MNIST_MEAN) / MNIST_STD
        h = self.pool(self.conv1(h).relu())  # (N, 32, 12, 12)
        h = self.pool(self.conv2(h).relu())  # (N, 64, 4, 4)
        h = h.reshape(h.shape[0], 64 * 4 * 4)  # (N, 64, 4, 4) -> (N, 1024)
        return self.fc1(h).relu()  # (N, 128)

    def forward(self, x):
        """Class logits (N, 10)."""
        return self.fc2(self.embed(x))


class ConvFeatureNet(nn.Module):
    """The feature network for (C, S, S) images and K classes, three 3x3 stages and two dense layers:

        (N, C, S, S) -> standardise per channel ((x - mean_c) / std_c)
        -> Conv 3x3 pad 1, C -> 32  -> ReLU -> MaxPool 2 -> (N, 32, S/2, S/2)
        -> Conv 3x3 pad 1, 32 -> 64 -> ReLU -> MaxPool 2 -> (N, 64, S/4, S/4)
        -> Conv 3x3 pad 1, 64 -> 64 -> ReLU -> MaxPool 2 -> (N, 64, S/8, S/8)
        -> Flatten -> Linear -> 128 -> ReLU -> features (N, 128) -> Linear 128 -> K -> class logits

    (the pools round down, S/8 = S // 8). As in `LeNet`, the features are the 128 activations after
    the ReLU. At S = 32 the network has 188,810 parameters for K = 10 (0.76 MB of float32).
    """

    def __init__(self, in_channels, image_size, num_classes, mean=None, std=None, classes=None):
        super().__init__()
        if image_size < 8:
            raise ArgumentError(f"ConvFeatureNet needs images of at least 8x8 (three 2x2 pools), got {image_size}")
        if num_classes < 2:
            raise ArgumentError(f"ConvFeatureNet is trained as a classifier and needs at least 2 classes, got {num_classes}")
        self.image_shape = (in_channels, image_size, image_size)
        self.mean = tuple(float(m) for m in (mean if mean is not None else [0.5] * in_channels))
        self.std = tuple(float(s) for s in (std if std is not None else [0.25] * in_channels))
        if len(self.mean) != in_channels or len(self.std) != in_channels or min(self.std) <= 0:
            raise ArgumentError(f"mean {self.mean} and std {self.std} need one value per channel ({in_channels}), std > 0")
        self.classes = list(classes) if classes is not None else [str(k) for k in range(num_classes)]
        if len(self.classes) != num_classes:
            raise ArgumentError(f"{len(self.classes)} class names for {num_classes} classes")
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.flat = 64 * (image_size // 8) ** 2
        self.fc1 = nn.Linear(self.flat, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, num_classes)

    def config(self):
        """The constructor's arguments, as plain values (saved beside the weights)."""
        c, s, _ = self.image_shape
        return {"in_channels": c, "image_size": s, "num_classes": len(self.classes), "mean": list(self.mean),
                "std": list(self.std), "classes": list(self.classes)}

    def embed(self, x):
        """The 128 features (after the ReLU) of images x (N, C, S, S) in [0, 1]."""
        c = self.image_shape[0]
        h = (x - np.array(self.mean, np.float32).reshape(1, c, 1, 1)) / np.array(self.std, np.float32).reshape(1, c, 1, 1)
        h = self.pool(self.conv1(h).relu())  # (N, 32, S/2, S/2)
        h = self.pool(self.conv2(h).relu())  # (N, 64, S/4, S/4)
        h = self.pool(self.conv3(h).relu())  # (N, 64, S/8, S/8)
        h = h.reshape(h.shape[0], self.flat)  # (N, 64, S/8, S/8) -> (N, 64 (S/8)^2)
        return self.fc1(h).relu()  # (N, 128)

    def forward(self, x):
        """Class logits (N, K)."""
        return self.fc2(self.embed(x))


def sha256_of(path):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_feature_net(path=WEIGHTS_PATH, sha256=WEIGHTS_SHA256):
    """The feature network in `path` (default: the shipped MNIST LeNet) in eval mode, after checking
    that the file has the SHA-256 `sha256`.

    A file written for a `ConvFeatureNet` (its "architecture") gives one, built from its "config";
    any other, a LeNet. The network's `sha256` attribute holds the file's hash. A missing file, a
    file with another hash (retrained or damaged weights) or one that is not a feature network's
    state raises `CheckpointError` naming the file. `sha256=None` skips the check (for a network
    you trained, and for the training script, which computes the hash). The file is hashed on
    every call (a few ms).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"cannot load the feature network {path!r}: no such file "
                              "(it ships inside tinygen; reinstall, or run python -m tinygen.evaluation.train_feature_net)")
    found = sha256_of(path)
    if sha256 is not None:
        if found != sha256:
            raise CheckpointError(
                f"feature network {path!r} has SHA-256 {found}, expected {sha256}: the metrics are only "
                "comparable when measured with the same network (retrained weights need WEIGHTS_SHA256 updated "
                "in tinygen/evaluation/features.py)"
            )
    state = load(path)
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise CheckpointError(f"{path!r}: not a feature network file (no 'state_dict')")
    if state.get("architecture") == CONV_ARCHITECTURE:
        config = state.get("config")
        try:
            net = ConvFeatureNet(**config)
        except (TypeError, ArgumentError) as err:
            raise CheckpointError(f"{path!r}: a ConvFeatureNet file with an unusable config {config!r} ({err})") from err
    else:
        net = LeNet()
    net.load_state_dict(state["state_dict"])
    net.eval()
    net.sha256 = found
    return net


def shipped_feature_net(data):
    """The feature network that ships for the dataset `data` (embedded, mnist, emoji), its hash checked."""
    if data not in SHIPPED_FEATURE_NETS:
        raise ArgumentError(f"no feature network ships for {data!r} (only for {', '.join(SHIPPED_FEATURE_NETS)}): "
                            f"train one with python -m tinygen.evaluation.train_feature_net --data {data} "
                            "and pass its file with --feature-net")
    return load_feature_net(*SHIPPED_FEATURE_NETS[data])


def as_images(images, where="images", shape=IMAGE_SHAPE):
    """`images` (n, C, H, W) with (C, H, W) = `shape`, uint8 in 0..255 or float in [0, 1], as float32 in [0, 1].

    Raises `DTypeError` (another dtype), `ShapeError` (another shape, or n = 0) or `ArgumentError`
    (float values outside [0, 1] or not finite); `where` names the images in the message.
    """
    expected = "(n, {}, {}, {})".format(*shape)
    if isinstance(images, Tensor):
        images = images.numpy()
    if not isinstance(images, np.ndarray):
        raise DTypeError(f"{where} must be a NumPy array {expected}, got {type(images).__name__}")
    if images.dtype != np.uint8 and images.dtype.kind != "f":
        raise DTypeError(f"{where} must be uint8 in 0..255 or float in [0, 1], got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != tuple(shape) or images.shape[0] < 1:
        raise ShapeError(f"{where} must have shape {expected} with n >= 1, got {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255
    if not np.isfinite(images).all():
        raise ArgumentError(f"{where} hold non-finite values (NaN or inf)")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 1:
        raise ArgumentError(f"{where} must lie in [0, 1], found values in [{lo:g}, {hi:g}]")
    return images.astype(np.float32, copy=False)


@no_grad()
def features_and_logits(images, net=None, batch_size=500):
    """The features (n, 128) float64 and class logits (n, K) float64 of `images` (n, *net.image_shape)."""
    net = load_feature_net() if net is None else net
    images = as_images(images, shape=net.image_shape)
    net.eval()
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        h = net.embed(Tensor(images[i : i + batch_size]))
        feats.append(h.numpy().astype(np.float64))
        logits.append(net.fc2(h).numpy().astype(np.float64))
    return np.concatenate(feats), np.concatenate(logits)


def features(images, net=None, batch_size=500):
    """The 128 post-ReLU penultimate activations of `images` (n, *net.image_shape): float64 (n, 128).

    `images` are uint8 in 0..255 or float in [0, 1]; `net` defaults to the shipped network.
    """
    return features_and_logits(images, net, batch_size)[0]


def classify(images, net=None, batch_size=500):
    """The predicted class of each image, int64 (n,)."""
    return features_and_logits(images, net, batch_size)[1].argmax(1)


def load_test_statistics(path=TEST_STATS_PATH):
    """(mu (128,), sigma (128, 128), n) of the features of the 10,000 MNIST test images (float64).

    The file records the SHA-256 of the network that computed them; it must be `WEIGHTS_SHA256`.
    """
    state = load(path)
    if not isinstance(state, dict) or not {"mu", "sigma", "n", "feature_net_sha256"} <= state.keys():
        raise CheckpointError(f"{path!r}: not a feature-statistics file (needs mu, sigma, n, feature_net_sha256)")
    if state["feature_net_sha256"] != WEIGHTS_SHA256:
        raise CheckpointError(
            f"{path!r} holds statistics computed with the feature network {state['feature_net_sha256']}, "
            f"but the shipped network is {WEIGHTS_SHA256}; rerun python -m tinygen.evaluation.train_feature_net"
        )
    mu, sigma = np.asarray(state["mu"], np.float64), np.asarray(state["sigma"], np.float64)
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM):
        raise CheckpointError(f"{path!r}: mu {mu.shape} and sigma {sigma.shape} should be (128,) and (128, 128)")
    return mu, sigma, int(state["n"])
