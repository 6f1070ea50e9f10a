"""Fréchet distance between two sets of features (the "FID" of Heusel et al. 2017, eq. 6).

Each set is summarised by the Gaussian with its mean and covariance, and the distance is the
squared 2-Wasserstein (Fréchet) distance between the two Gaussians (Dowson & Landau 1982):

    FD = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}).

NOTE: the usual implementations compute tr((S_1 S_2)^{1/2}) with scipy.linalg.sqrtm, a Schur
method for general matrices that returns complex results (and warns) when S_1 S_2 is singular.
S_1^{1/2} S_2 S_1^{1/2} is similar to S_1 S_2 (same eigenvalues, so the same trace of the square
root) but symmetric positive semi-definite, so here both square roots come from `numpy.linalg.eigh`
with rounding-negative eigenvalues clipped to 0: real on singular covariances (fewer samples than
dimensions, dead ReLU features), and NumPy alone.

FD is biased upwards at small n (the covariance estimates are noisy), so values are comparable only
at equal n; the protocol uses n = 10,000 generated images against the 10,000 test images.

>>> rng = np.random.default_rng(0)
>>> a = rng.normal(size=(500, 4))
>>> round(frechet_distance(*statistics(a), *statistics(a)), 9)
0.0
>>> round(frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2)), 9)  # 2 + 2 (1 + 4 - 2*2)
4.0
"""

import numpy as np

from tinygen.errors import ArgumentError, ShapeError


def statistics(features):
    """The mean (d,) and the unbiased covariance (d, d) of features (n, d), in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ShapeError(f"features must be a 2-d array (n, d), got shape {features.shape}")
    if features.shape[0] < 2:
        raise ArgumentError(f"a covariance needs at least 2 feature vectors, got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise ArgumentError("features hold non-finite values (NaN or inf)")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def sqrtm_psd(matrix):
    """The symmetric positive semi-definite square root of a symmetric PSD matrix, via eigh.

    S = V diag(lambda) V^T  ->  S^{1/2} = V diag(sqrt(max(lambda, 0))) V^T. Eigenvalues that
    rounding made slightly negative are clipped to 0, so a singular S gives a real root.

    >>> sqrtm_psd(np.array([[4.0, 0.0], [0.0, 0.0]]))
    array([[2., 0.],
           [0., 0.]])
    """
    matrix = _check_square(matrix, "matrix")
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)  # symmetrise away rounding
    return (vectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """FD between N(mu1, sigma1) and N(mu2, sigma2), a float >= 0 (the module docstring's formula)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = _check_square(sigma1, "sigma1"), _check_square(sigma2, "sigma2")
    d = sigma1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma2.shape != (d, d):
        raise ShapeError(
            f"need mu1, mu2 of shape (d,) and sigma1, sigma2 of shape (d, d); got mu1 {mu1.shape}, "
            f"sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}"
        )
    root1 = sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1  # S_1^{1/2} S_2 S_1^{1/2}: symmetric PSD
    # tr(M^{1/2}) is the sum of the square roots of M's eigenvalues: the eigenvectors are not needed.
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    # NOTE: FD is a squared distance, >= 0; rounding can leave about -1e-12 for equal inputs.
    return float(max(fd, 0.0))


def frechet_distance_of_features(features1, features2):
    """FD between the Gaussians fitted to two feature sets (n1, d) and (n2, d)."""
    return frechet_distance(*statistics(features1), *statistics(features2))


def _check_square(matrix, name):
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ShapeError(f"{name} must be a square matrix (d, d), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ArgumentError(f"{name} holds non-finite values (NaN or inf)")
    return matrix
