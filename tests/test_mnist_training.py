"""Learning on real data: a few hundred steps on an MNIST subset must more than halve the
classifiers' loss (the short version of `python -m benchmarks.mnist_classifier`, same models, same
loop), and a GAN's and a VAE's samples must move measurably towards the test digits.
"""

import numpy as np
import pytest

import tinygen
from benchmarks import mnist_classifier
from tinygen import evaluation, optim
from tinygen.data import MNIST
from tinygen.evaluation.features import features
from tinygen.models import MODELS
from tinygen.nn import functional as F


@pytest.fixture(scope="module")
def mnist_subset():
    """From the subset shipped inside tinygen: its first 6,000 training digits (the full training
    file's first 6,000) and its 1,000 test digits (the first 100 of each digit in the test file)."""
    train, test = MNIST(train=True), MNIST(train=False)
    return (mnist_classifier.as_inputs(train.images[:6000]), train.labels[:6000]), (
        mnist_classifier.as_inputs(test.images), test.labels)


@pytest.mark.slow
@pytest.mark.parametrize("name, steps", [("mlp", 300), ("cnn", 200)])
def test_loss_falls_by_more_than_half(mnist_subset, name, steps):
    (images, labels), (test_images, test_labels) = mnist_subset
    tinygen.manual_seed(0)
    model = mnist_classifier.MODELS[name]()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    before = held_out_loss(model, test_images, test_labels)
    losses = mnist_classifier.train_steps(model, opt, images, labels, steps, 64, np.random.default_rng(0))
    after = held_out_loss(model, test_images, test_labels)
    assert np.isfinite(losses).all()
    assert before > 2.0  # ln 10 ≈ 2.30 for an untrained 10-way classifier
    assert after < before / 2, f"{name}: test loss went from {before:.3f} to {after:.3f}"
    assert mnist_classifier.accuracy(model, test_images, test_labels) > 0.85


@tinygen.no_grad()
def held_out_loss(model, images, labels):
    model.eval()
    return F.cross_entropy(model(tinygen.Tensor(images)), labels.astype(np.int64)).item()


@pytest.mark.slow
@pytest.mark.parametrize("name, steps, factor", [("gan", 1000, 0.85), ("vae", 300, 0.5)])
def test_samples_get_measurably_better(name, steps, factor):
    """FD (LeNet features) of 500 samples against the shipped statistics of the 10,000 test digits,
    before and after `steps` steps on the embedded MNIST subset; the GAN's factor is the milder one
    because its first thousand steps are its slow ones."""
    tinygen.manual_seed(0)
    model = MODELS[name]()
    images = MNIST().images[:6000, None].astype(np.float32) / 255
    mu, sigma, _ = evaluation.load_test_statistics()

    def fd():
        return evaluation.frechet_distance(*evaluation.statistics(features(model.sample(500))), mu, sigma)

    before = fd()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        model.train_step(tinygen.Tensor(images[rng.integers(0, len(images), model.config.batch_size)]))
    after = fd()
    assert after < factor * before, f"{name}: FD went from {before:.1f} to {after:.1f} in {steps} steps"
