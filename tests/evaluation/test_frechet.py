"""Fréchet distance: zero on itself, the closed form for commuting covariances, and its matrix
square roots against independent computations (Denman–Beavers, the SVD of a factor, torch's
general eigenvalues, SciPy's sqrtm where installed) on SPD and singular covariances."""

import numpy as np
import pytest

from tinygen.errors import ArgumentError, ShapeError
from tinygen.evaluation.frechet import frechet_distance, frechet_distance_of_features, sqrtm_psd, statistics


def random_spd(rng, d, rank=None):
    """A random symmetric PSD matrix (d, d) of the given rank (default full: SPD)."""
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1 * np.eye(d))


def random_psd_and_root(rng, d, rank):
    """A = X X^T of rank `rank` and its PSD root U S U^T from the SVD X = U S V^T (no eigh)."""
    x = rng.normal(size=(d, rank))
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return x @ x.T, (u * s) @ u.T


def denman_beavers(a, iterations=50):
    """A^{1/2} of a nonsingular A: Y <- (Y + Z^{-1}) / 2, Z <- (Z + Y^{-1}) / 2 from Y = A, Z = I."""
    y, z = a.copy(), np.eye(len(a))
    for _ in range(iterations):
        y, z = (y + np.linalg.inv(z)) / 2, (z + np.linalg.inv(y)) / 2
    return y


def test_fd_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32))
    assert frechet_distance_of_features(x, x) == pytest.approx(0, abs=1e-6)
    relu_like = np.maximum(x, 0)
    relu_like[:, :5] = 0  # dead units: a singular covariance
    assert frechet_distance_of_features(relu_like, relu_like) == pytest.approx(0, abs=1e-6)
    few = rng.normal(size=(20, 64))  # fewer samples than dimensions: rank 19
    assert frechet_distance_of_features(few, few) == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_fd_matches_the_closed_form_for_commuting_covariances(seed):
    """S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T commute: FD = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2."""
    rng = np.random.default_rng(seed)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0, 3, size=d), rng.uniform(0, 3, size=d)
    a[:3] = 0  # singular too
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10, abs=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8, abs=1e-8)


def test_fd_of_sampled_gaussians_approaches_the_true_distance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200_000, 2)) * [1.0, 2.0]  # N(0, diag(1, 4))
    y = rng.normal(size=(200_000, 2)) * [3.0, 2.0] + [1.0, 0.0]  # N((1, 0), diag(9, 4))
    assert frechet_distance_of_features(x, y) == pytest.approx(1 + (1 - 3) ** 2, abs=0.05)


@pytest.mark.parametrize("rank", [None, 5])
def test_fd_is_symmetric(rank):
    rng = np.random.default_rng(2)
    s1, s2 = random_spd(rng, 12, rank), random_spd(rng, 12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_sqrtm_psd_against_denman_beavers_on_spd(seed):
    a = random_spd(np.random.default_rng(seed), 24)
    root = sqrtm_psd(a)
    np.testing.assert_allclose(root, denman_beavers(a), atol=1e-9)
    np.testing.assert_allclose(root, root.T)


@pytest.mark.parametrize("rank", [1, 6, 23])
def test_sqrtm_psd_against_the_svd_of_a_factor_on_singular(rank):
    a, expected = random_psd_and_root(np.random.default_rng(rank), 24, rank)
    root = sqrtm_psd(a)
    np.testing.assert_allclose(root @ root, a, atol=1e-10)
    # NOTE: on the null space the eigenvalues are rounding noise of size 1e-15, whose clipped
    # square roots (up to 3e-8) differ between methods; hence the absolute tolerance.
    np.testing.assert_allclose(root, expected, atol=1e-6)
    assert np.linalg.eigvalsh(root).min() > -1e-7  # the PSD root, not another one


@pytest.mark.parametrize("ranks", [(None, None), (4, None), (7, 9)])
def test_fd_against_torch_eigenvalues_of_the_product(torch, ranks):
    """tr((S1 S2)^{1/2}) from torch's general (non-symmetric) eigenvalues of S1 S2."""
    rng = np.random.default_rng(3)
    d = 20
    s1, s2 = random_spd(rng, d, ranks[0]), random_spd(rng, d, ranks[1])
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    eig = torch.linalg.eigvals(torch.from_numpy(s1 @ s2)).numpy()
    trace_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7, abs=1e-7)


@pytest.mark.parametrize("rank", [None, 8])
def test_fd_against_scipy_sqrtm(rank):
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(4)
    s1, s2 = random_spd(rng, 16, rank), random_spd(rng, 16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    covmean = linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean.real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_statistics_are_float64_mean_and_unbiased_covariance():
    x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]], dtype=np.float32)
    mu, sigma = statistics(x)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, [2.0, 2.0])
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False))


def test_bad_inputs_raise_named_errors():
    with pytest.raises(ShapeError, match="2-d"):
        statistics(np.zeros(5))
    with pytest.raises(ArgumentError, match="at least 2"):
        statistics(np.zeros((1, 3)))
    with pytest.raises(ArgumentError, match="non-finite"):
        statistics(np.array([[0.0], [np.nan]]))
    with pytest.raises(ShapeError, match="mu1"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ShapeError, match="square"):
        sqrtm_psd(np.zeros((2, 3)))
