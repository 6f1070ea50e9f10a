"""The feature network of the evaluation metrics: a LeNet-style MNIST classifier trained with tinygen.

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

>>> net = LeNet()
>>> net.num_parameters()
184586
>>> features(np.zeros((3, 1, 28, 28), np.uint8), net=net).shape
(3, 128)
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


class LeNet(nn.Module):
    """conv5x5 32 -> ReLU -> pool2 -> conv5x5 64 -> ReLU -> pool2 -> FC 128 -> ReLU -> FC 10."""

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


def sha256_of(path):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_feature_net(path=WEIGHTS_PATH, sha256=WEIGHTS_SHA256):
    """The shipped LeNet in eval mode, after checking that `path` has the SHA-256 `sha256`.

    A missing file, a file with another hash (retrained or damaged weights) or one that is not
    a LeNet state raises `CheckpointError` naming the file. `sha256=None` skips the check (for
    the training script, which computes the hash). The file is hashed on every call (a few ms).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"cannot load the feature network {path!r}: no such file "
                              "(it ships inside tinygen; reinstall, or run python -m tinygen.evaluation.train_feature_net)")
    if sha256 is not None:
        found = sha256_of(path)
        if found != sha256:
            raise CheckpointError(
                f"feature network {path!r} has SHA-256 {found}, expected {sha256}: the metrics are only "
                "comparable when measured with the same network (retrained weights need WEIGHTS_SHA256 updated "
                "in tinygen/evaluation/features.py)"
            )
    state = load(path)
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise CheckpointError(f"{path!r}: not a feature network file (no 'state_dict')")
    net = LeNet()
    net.load_state_dict(state["state_dict"])
    net.eval()
    return net


def as_images(images, where="images"):
    """`images` (n, 1, 28, 28), uint8 in 0..255 or float in [0, 1], as float32 in [0, 1].

    Raises `DTypeError` (another dtype), `ShapeError` (another shape, or n = 0) or `ArgumentError`
    (float values outside [0, 1] or not finite); `where` names the images in the message.
    """
    if isinstance(images, Tensor):
        images = images.numpy()
    if not isinstance(images, np.ndarray):
        raise DTypeError(f"{where} must be a NumPy array (n, 1, 28, 28), got {type(images).__name__}")
    if images.dtype != np.uint8 and images.dtype.kind != "f":
        raise DTypeError(f"{where} must be uint8 in 0..255 or float in [0, 1], got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE or images.shape[0] < 1:
        raise ShapeError(f"{where} must have shape (n, 1, 28, 28) with n >= 1, got {images.shape}")
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
    """The features (n, 128) float64 and class logits (n, 10) float64 of `images`, in batches."""
    images = as_images(images)
    net = load_feature_net() if net is None else net
    net.eval()
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        h = net.embed(Tensor(images[i : i + batch_size]))
        feats.append(h.numpy().astype(np.float64))
        logits.append(net.fc2(h).numpy().astype(np.float64))
    return np.concatenate(feats), np.concatenate(logits)


def features(images, net=None, batch_size=500):
    """The 128 post-ReLU penultimate activations of `images` (n, 1, 28, 28): float64 (n, 128).

    `images` are uint8 in 0..255 or float in [0, 1]; `net` defaults to the shipped network.
    """
    return features_and_logits(images, net, batch_size)[0]


def classify(images, net=None, batch_size=500):
    """The predicted digit of each image, int64 (n,)."""
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
