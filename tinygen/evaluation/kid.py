"""Kernel distance between two feature sets: KID (Bińkowski, Sutherland, Arbel & Gretton 2018).

KID is the squared maximum mean discrepancy (MMD) between the two feature distributions under the
cubic polynomial kernel

    k(x, y) = (x . y / d + 1)^3,        d = the feature dimension,

estimated without bias (their eq. 2, the U-statistic of Gretton et al. 2012): for X (m, d), Y (n, d),

    MMD^2_u = 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(n(n-1)) sum_{i != j} k(y_i, y_j)
              - 2/(mn) sum_{i, j} k(x_i, y_j).

Unlike FD it has no bias at small n: its expectation is the true MMD^2 at every n (so two draws of
one distribution give about 0, sometimes below 0). As in the paper's code and clean-fid, large sets
are compared through `subsets` random subsets of `subset_size` points from each set (drawn without
replacement, with a Generator of their own), and the mean over the subsets is returned; when both
sets have at most `subset_size` points there is one subset: all of them, and no randomness.

>>> rng = np.random.default_rng(0)
>>> a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
>>> round(kernel_distance(a, b), 2), round(kernel_distance(a, b + 1), 1)  # one distribution; shifted by 1
(0.01, 8.7)
"""

import numpy as np

from tinygen.errors import ArgumentError, ShapeError

SUBSET_SIZE = 1000  # clean-fid's and the paper's code's largest subset
SUBSETS = 100


def polynomial_kernel(x, y):
    """k(x_i, y_j) = (x_i . y_j / d + 1)^3 for x (m, d) and y (n, d): float64 (m, n)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x, y):
    """The unbiased MMD^2 estimate (module docstring) with the cubic kernel; x (m, d), y (n, d), m, n >= 2."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))  # i != j: the diagonal left out
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kernel_distance(features1, features2, subset_size=SUBSET_SIZE, subsets=SUBSETS, seed=0):
    """KID between feature sets (n1, d) and (n2, d): the mean unbiased MMD^2 over subsets (a float).

    With n1, n2 <= `subset_size` it is the one estimate on all points. Otherwise each of the
    `subsets` draws takes min(subset_size, n1, n2) points from each set, without replacement,
    from np.random.default_rng(seed).
    """
    x, y = _check(features1, "features1"), _check(features2, "features2")
    if x.shape[1] != y.shape[1]:
        raise ShapeError(f"the feature sets differ in dimension: {x.shape} and {y.shape}")
    for value, name in ((subset_size, "subset_size"), (subsets, "subsets")):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
    if max(len(x), len(y)) <= subset_size:
        return mmd2_unbiased(x, y)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ArgumentError(f"KID needs subsets of at least 2 points, got {size} (subset_size {subset_size})")
    rng = np.random.default_rng(seed)
    estimates = [
        mmd2_unbiased(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(estimates))


def _check(features, name):
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] < 1:
        raise ShapeError(f"{name} must be a 2-d array (n, d), got shape {features.shape}")
    if len(features) < 2:
        raise ArgumentError(f"{name}: the unbiased MMD needs at least 2 points per set, got {len(features)}")
    if not np.isfinite(features).all():
        raise ArgumentError(f"{name} hold non-finite values (NaN or inf)")
    return features
