"""The shipped feature network: its file and SHA-256, its accuracy, its test-set statistics, its inputs."""

import os
import shutil

import numpy as np
import pytest

from tinygen.data import MNIST, load_mnist
from tinygen.errors import ArgumentError, CheckpointError, DTypeError, ShapeError
from tinygen.evaluation import features as fnet
from tinygen.evaluation.frechet import statistics
from tinygen.serialization import load

FULL_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")
needs_full_mnist = pytest.mark.skipif(
    not os.path.exists(os.path.join(FULL_MNIST, "t10k-images-idx3-ubyte.gz")), reason="full MNIST not in ../shared"
)


def test_shipped_weights_match_their_sha256_and_are_small_float32():
    assert fnet.sha256_of(fnet.WEIGHTS_PATH) == fnet.WEIGHTS_SHA256
    assert os.path.getsize(fnet.WEIGHTS_PATH) <= 1_000_000
    state = load(fnet.WEIGHTS_PATH)["state_dict"]
    assert {v.dtype for v in state.values()} == {np.dtype(np.float32)}
    assert sorted(state) == sorted(fnet.LeNet().state_dict())


def test_a_changed_weights_file_is_refused_naming_it(tmp_path):
    copy = tmp_path / "lenet_copy.npz"
    shutil.copyfile(fnet.WEIGHTS_PATH, copy)
    assert fnet.load_feature_net(copy).training is False  # intact copy: same hash, loads in eval mode
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"lenet_copy\.npz.*SHA-256"):
        fnet.load_feature_net(copy)
    with pytest.raises(CheckpointError, match=r"missing\.npz.*no such file"):
        fnet.load_feature_net(tmp_path / "missing.npz")


def test_features_are_128_post_relu_float64_for_uint8_and_float_input():
    images = MNIST(train=False).images[:50, None]  # uint8 (50, 1, 28, 28)
    from_uint8 = fnet.features(images)
    from_float = fnet.features(images.astype(np.float64) / 255, batch_size=7)
    assert from_uint8.shape == (50, 128) and from_uint8.dtype == np.float64
    assert from_uint8.min() >= 0  # after the ReLU
    np.testing.assert_allclose(from_uint8, from_float, rtol=1e-5, atol=1e-5)


def test_accuracy_on_the_embedded_test_images():
    test = MNIST(train=False)
    accuracy = (fnet.classify(test.images[:, None]) == test.labels).mean()
    assert accuracy >= 0.985


@needs_full_mnist
def test_accuracy_and_statistics_on_the_full_test_set():
    images, labels = load_mnist(FULL_MNIST, train=False)
    feats, logits = fnet.features_and_logits(images[:, None])
    assert (logits.argmax(1) == labels).mean() >= 0.99
    mu, sigma, n = fnet.load_test_statistics()
    assert n == 10_000
    mu_now, sigma_now = statistics(feats)
    # The features are float32: another correct summation order (the BLAS kernels of another
    # CPU, the conv kernels' chunking) moves them by ~1e-7 relative, so the shipped statistics
    # must agree to ~1e-6 of their own scale (moving an FD by ~1e-4), not to float64 precision.
    np.testing.assert_allclose(mu, mu_now, rtol=1e-6, atol=1e-6 * np.abs(mu).max())
    np.testing.assert_allclose(sigma, sigma_now, rtol=1e-6, atol=1e-6 * np.abs(sigma).max())


def test_shipped_statistics_are_float64_and_name_the_network():
    mu, sigma, n = fnet.load_test_statistics()
    assert mu.shape == (128,) and sigma.shape == (128, 128) and mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, sigma.T)
    assert load(fnet.TEST_STATS_PATH)["feature_net_sha256"] == fnet.WEIGHTS_SHA256


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (np.zeros((2, 1, 28, 28), np.int64), DTypeError, "uint8 in 0..255 or float"),
        (np.zeros((2, 28, 28), np.uint8), ShapeError, r"\(2, 28, 28\)"),
        (np.zeros((0, 1, 28, 28), np.float32), ShapeError, "n >= 1"),
        (np.full((2, 1, 28, 28), 255.0, np.float32), ArgumentError, r"\[0, 1\].*255"),
        (np.full((2, 1, 28, 28), np.nan, np.float32), ArgumentError, "non-finite"),
        ([[0.0]], DTypeError, "NumPy array"),
    ],
)
def test_bad_images_raise_named_errors(images, error, match):
    with pytest.raises(error, match=match):
        fnet.features(images)
