"""KID: the unbiased MMD^2 against a naive double loop, about 0 (and sometimes below) for one
distribution, growing with the shift between two, and the subset average of the paper's code."""

import numpy as np
import pytest

from tinygen.errors import ArgumentError, ShapeError
from tinygen.evaluation.kid import kernel_distance, mmd2_unbiased


def naive_mmd2(x, y):
    """The U-statistic term by term, with k(a, b) = (a . b / d + 1)^3."""
    d = x.shape[1]

    def k(a, b):
        return (sum(float(p) * float(q) for p, q in zip(a, b)) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


@pytest.mark.parametrize(("m", "n", "d"), [(2, 2, 1), (7, 5, 3), (12, 20, 6)])
def test_mmd2_matches_the_naive_loop(m, n, d):
    rng = np.random.default_rng(m * 100 + n)
    x, y = rng.normal(size=(m, d)), rng.normal(0.3, 1.2, size=(n, d))
    assert mmd2_unbiased(x, y) == pytest.approx(naive_mmd2(x, y), rel=1e-10, abs=1e-12)
    assert kernel_distance(x, y) == pytest.approx(naive_mmd2(x, y), rel=1e-10, abs=1e-12)  # small n: all points


def test_one_distribution_gives_about_zero_and_can_be_negative():
    rng = np.random.default_rng(0)
    values = [kernel_distance(rng.normal(size=(100, 16)), rng.normal(size=(100, 16))) for _ in range(20)]
    scale = kernel_distance(rng.normal(size=(100, 16)), rng.normal(0.5, 1, size=(100, 16)))
    assert abs(np.mean(values)) < 0.02 * scale  # unbiased: the mean of the estimates is about 0
    assert min(values) < 0 < max(values)  # and single estimates fall on both sides of it


def test_kid_grows_with_the_shift():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8))
    kids = [kernel_distance(x, rng.normal(shift, 1, size=(200, 8))) for shift in (0.25, 0.5, 1.0)]
    assert 0 < kids[0] < kids[1] < kids[2]


def test_large_sets_average_subsets_drawn_with_the_seed():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(50, 4)), rng.normal(0.2, 1, size=(30, 4))
    draw = np.random.default_rng(7)
    expected = np.mean([mmd2_unbiased(x[draw.choice(50, 20, replace=False)], y[draw.choice(30, 20, replace=False)])
                        for _ in range(3)])
    assert kernel_distance(x, y, subset_size=20, subsets=3, seed=7) == pytest.approx(expected, rel=1e-12)
    # subsets of min(subset_size, n1, n2) points: here all 30 of y each time
    draw = np.random.default_rng(0)
    expected = np.mean([mmd2_unbiased(x[draw.choice(50, 30, replace=False)], y[draw.choice(30, 30, replace=False)])
                        for _ in range(4)])
    assert kernel_distance(x, y, subset_size=40, subsets=4) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "error", "match"),
    [
        (np.zeros((5, 3)), np.zeros((5, 4)), {}, ShapeError, r"differ in dimension"),
        (np.zeros(5), np.zeros((5, 1)), {}, ShapeError, r"2-d array"),
        (np.zeros((1, 3)), np.zeros((5, 3)), {}, ArgumentError, "at least 2 points"),
        (np.full((3, 2), np.nan), np.zeros((3, 2)), {}, ArgumentError, "non-finite"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"subsets": 0}, ArgumentError, "subsets must be a positive integer"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"subset_size": 1}, ArgumentError, "subsets of at least 2 points"),
    ],
)
def test_bad_input_raises_named_errors(a, b, kwargs, error, match):
    with pytest.raises(error, match=match):
        kernel_distance(a, b, **kwargs)
