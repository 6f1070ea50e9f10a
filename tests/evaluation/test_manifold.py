"""k-NN precision / recall / coverage on constructed sets, against a brute-force reference; the class
histogram; nearest-training-image distances."""

import numpy as np
import pytest

from tinygen.errors import ArgumentError, ShapeError
from tinygen.evaluation.manifold import (
    class_histogram,
    knn_radii_squared,
    nearest_distances,
    precision_recall_coverage,
)


def brute_force(real, fake, k=3):
    """The three metrics from the full distance matrices, as the papers define them."""
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    d = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # (n_real, n_fake)
    r_real, r_fake = radii(real), radii(fake)
    return {
        "precision": (d <= r_real[:, None]).any(axis=0).mean(),
        "recall": (d <= r_fake[None, :]).any(axis=1).mean(),
        "coverage": (d.min(axis=1) < r_real).mean(),
    }


def clusters(rng, centres, n_each, d=8):
    return np.concatenate([rng.normal(size=(n_each, d)) + c for c in centres])


def test_identical_sets_score_one():
    x = np.random.default_rng(0).normal(size=(300, 16))
    assert precision_recall_coverage(x, x.copy()) == {"precision": 1.0, "recall": 1.0, "coverage": 1.0}


def test_far_apart_sets_score_zero():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(200, 16)), rng.normal(size=(150, 16)) + 50
    assert precision_recall_coverage(real, fake) == {"precision": 0.0, "recall": 0.0, "coverage": 0.0}


def test_a_dropped_mode_costs_recall_and_coverage_not_precision():
    """Real: two far-apart clusters of 100; fake: a copy of one of them."""
    rng = np.random.default_rng(2)
    real = clusters(rng, [0.0, 100.0], 100)
    scores = precision_recall_coverage(real, real[:100].copy())
    assert scores == {"precision": 1.0, "recall": 0.5, "coverage": 0.5}


def test_coverage_ignores_an_outlier_that_inflates_recall():
    """One fake point far away gets a huge k-NN ball (25: the distance to the other fakes) that
    swallows the real data: recall jumps, coverage (real balls only) does not."""
    rng = np.random.default_rng(3)
    real = rng.normal(size=(200, 2))
    fake = np.concatenate([rng.normal(size=(30, 2)) * 0.01 + [5.0, 0.0], [[-20.0, 0.0]]])
    scores = precision_recall_coverage(real, fake)
    assert scores["recall"] == 1.0 and scores["coverage"] == 0.0


@pytest.mark.parametrize("block_size", [1, 7, 1000])
def test_blockwise_metrics_match_brute_force(block_size):
    rng = np.random.default_rng(4)
    real = clusters(rng, [0.0, 3.0], 60, d=5)
    fake = clusters(rng, [0.5, 6.0], 45, d=5)
    got = precision_recall_coverage(real, fake, block_size=block_size)
    expected = brute_force(real, fake)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1 and 0 < got["coverage"] < 1


def test_knn_radius_is_the_kth_nearest_other_point():
    x = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    np.testing.assert_allclose(knn_radii_squared(x, k=3, block_size=2), np.array([6.0, 5.0, 3.0, 5.0, 9.0]) ** 2)
    np.testing.assert_allclose(knn_radii_squared(x, k=1), np.array([1.0, 1.0, 2.0, 3.0, 4.0]) ** 2)


def test_too_few_points_or_mismatched_dimensions_raise():
    with pytest.raises(ArgumentError, match="at least 4 points, got 3"):
        precision_recall_coverage(np.zeros((10, 2)), np.zeros((3, 2)))
    with pytest.raises(ShapeError, match="dimension"):
        precision_recall_coverage(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ShapeError, match="2-d"):
        precision_recall_coverage(np.zeros(10), np.zeros((10, 3)))


def test_class_histogram():
    labels = np.array([3] * 90 + [7] * 9 + [1])  # 1 is 1% of 100: present; the other 7 digits absent
    hist = class_histogram(labels)
    assert hist["counts"].tolist() == [0, 1, 0, 90, 0, 0, 0, 9, 0, 0]
    assert hist["classes_present"] == 3
    assert hist["largest_share"] == 0.9 and hist["smallest_share"] == 0.0
    balanced = class_histogram(np.arange(1000) % 10)
    assert balanced["classes_present"] == 10 and balanced["largest_share"] == balanced["smallest_share"] == 0.1
    with pytest.raises(ArgumentError, match="0..9"):
        class_histogram(np.array([10]))


@pytest.mark.parametrize("block_size", [1, 3, 256])
def test_nearest_distances_are_exact_and_can_leave_the_image_itself_out(block_size):
    rng = np.random.default_rng(5)
    reference = rng.random((40, 1, 28, 28)).astype(np.float32)
    samples = rng.random((9, 1, 28, 28)).astype(np.float32)
    full = np.linalg.norm(samples.reshape(9, 1, -1).astype(np.float64) - reference.reshape(1, 40, -1), axis=-1)
    np.testing.assert_allclose(nearest_distances(samples, reference, block_size=block_size), full.min(1), rtol=1e-6)
    copies = reference[[4, 17, 4]]
    assert nearest_distances(copies, reference, block_size=block_size).tolist() == [0.0, 0.0, 0.0]
    left_out = nearest_distances(copies, reference, exclude=np.array([4, 17, 4]), block_size=block_size)
    own = np.linalg.norm(copies.reshape(3, 1, -1).astype(np.float64) - reference.reshape(1, 40, -1), axis=-1)
    own[[0, 1, 2], [4, 17, 4]] = np.inf
    np.testing.assert_allclose(left_out, own.min(1), rtol=1e-6)
