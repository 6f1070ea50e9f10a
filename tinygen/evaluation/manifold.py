"""Sample quality and diversity beyond FD: k-NN manifolds, class histogram, memorisation.

Precision and recall (Kynkäänniemi et al. 2019) estimate each set's manifold in feature space as
the union of balls around its points, each ball reaching the point's k-th nearest neighbour in
its own set (k = 3):

    precision = share of generated points inside the real manifold    (are the samples realistic?)
    recall    = share of real points inside the generated manifold     (is the data's variety covered?)

Coverage (Naeem et al. 2020) uses the real balls only, which makes it robust to generated outliers
(one far-off sample gets a huge ball that inflates recall):

    coverage  = share of real points whose ball holds at least one generated point.

As in the papers' code, "inside" is `distance <= radius` for precision/recall and `<` for coverage.
NOTE: precision alone can be fooled. Measured: 300 images of uniform noise all land in one small
region of the LeNet feature space, among the real 8s (the network calls every one an 8), so their
precision is 1.0; their recall and coverage are about 0, their FD is 57 times the floor and the
class histogram shows one digit. Read the metrics together.
The n_real x n_fake distances are computed in row blocks, so 10,000 x 10,000 never sits in memory.

`class_histogram` counts the digits the feature network sees in the samples (a collapsed GAN draws
few classes); `nearest_distances` measures, in pixel space, how far each sample is from its nearest
training image (a model that memorised its data sits at 0; real test digits give the scale).

>>> rng = np.random.default_rng(0)
>>> real = rng.normal(size=(200, 2))
>>> precision_recall_coverage(real, real)
{'precision': 1.0, 'recall': 1.0, 'coverage': 1.0}
>>> precision_recall_coverage(real, real + 100)["precision"]
0.0
"""

import numpy as np

from tinygen.errors import ArgumentError, ShapeError

NEAREST_K = 3
BLOCK_SIZE = 1000  # rows of a distance block: 1000 x 10,000 float64 is 80 MB


def _check_features(features, name, k=None):
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] < 1:
        raise ShapeError(f"{name} must be a 2-d array (n, d), got shape {features.shape}")
    if k is not None and features.shape[0] < k + 1:
        raise ArgumentError(f"{name}: k-NN radii with k = {k} need at least {k + 1} points, got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise ArgumentError(f"{name} hold non-finite values (NaN or inf)")
    return features


def _squared_distances(a, b, b_sq):
    """|a_i - b_j|^2 for a block a (m, d) against b (n, d) with b_sq = |b_j|^2: (m, n), >= 0."""
    d2 = (a * a).sum(1)[:, None] + b_sq[None, :] - 2 * (a @ b.T)
    return np.maximum(d2, 0, out=d2)


def knn_radii_squared(features, k=NEAREST_K, block_size=BLOCK_SIZE):
    """The squared distance from each point (n, d) to its k-th nearest *other* point: (n,)."""
    features = _check_features(features, "features", k)
    n, sq = len(features), (features * features).sum(1)
    radii = np.empty(n)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        d2 = _squared_distances(features[start:stop], features, sq)  # (b, n)
        d2[np.arange(stop - start), np.arange(start, stop)] = np.inf  # a point is not its own neighbour
        radii[start:stop] = np.partition(d2, k - 1, axis=1)[:, k - 1]
    return radii


def precision_recall_coverage(real, fake, k=NEAREST_K, block_size=BLOCK_SIZE):
    """Precision, recall (Kynkäänniemi et al.) and coverage (Naeem et al.) of `fake` against `real`.

    real (n_real, d) and fake (n_fake, d) are feature vectors, each set with more than k points.
    Returns {"precision": float, "recall": float, "coverage": float}, each in [0, 1].
    """
    real, fake = _check_features(real, "real features", k), _check_features(fake, "fake features", k)
    if real.shape[1] != fake.shape[1]:
        raise ShapeError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    real_r2 = knn_radii_squared(real, k, block_size)  # (n_real,) squared radii of the real balls
    fake_r2 = knn_radii_squared(fake, k, block_size)  # (n_fake,)
    fake_sq = (fake * fake).sum(1)
    in_real = np.zeros(len(fake), dtype=bool)  # fake j inside some real ball   -> precision
    in_fake = np.zeros(len(real), dtype=bool)  # real i inside some fake ball   -> recall
    covered = np.zeros(len(real), dtype=bool)  # real i's ball holds some fake  -> coverage
    for start in range(0, len(real), block_size):
        stop = min(start + block_size, len(real))
        d2 = _squared_distances(real[start:stop], fake, fake_sq)  # (b, n_fake)
        in_real |= (d2 <= real_r2[start:stop, None]).any(axis=0)
        in_fake[start:stop] = (d2 <= fake_r2[None, :]).any(axis=1)
        covered[start:stop] = d2.min(axis=1) < real_r2[start:stop]
    return {"precision": float(in_real.mean()), "recall": float(in_fake.mean()), "coverage": float(covered.mean())}


def class_histogram(labels, num_classes=10, min_share=0.01):
    """How the predicted classes of the samples spread over the digits.

    Returns {"counts": int64 (num_classes,), "classes_present": int, "largest_share": float,
    "smallest_share": float}. NOTE: a class counts as present from `min_share` (1%, a tenth of
    a fair share) of the samples, so a few misclassified blobs do not make a dropped digit look
    covered. A perfectly balanced generator has shares of 0.1 each (MNIST's own range from 0.09 to 0.11).

    >>> class_histogram(np.array([0, 0, 1, 1]))["classes_present"]
    2
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or labels.dtype.kind not in "iu":
        raise ShapeError(f"labels must be a non-empty 1-d integer array, got {labels.dtype} of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ArgumentError(f"labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    counts = np.bincount(labels, minlength=num_classes)
    shares = counts / labels.size
    return {
        "counts": counts,
        "classes_present": int((shares >= min_share).sum()),
        "largest_share": float(shares.max()),
        "smallest_share": float(shares.min()),
    }


def nearest_distances(samples, reference, exclude=None, block_size=256):
    """Pixel L2 distance from each sample to its nearest reference image: float64 (n,).

    samples (n, ...) and reference (m, ...) are images of one shape in one scale (here [0, 1],
    28 x 28, so distances lie in [0, 28]). `exclude` (n,), optional, names for each sample a
    reference index that may not count (the sample itself, when the samples are reference
    images). Candidates come from float32 products in blocks of `block_size` samples (256 x
    60,000 is 61 MB); the winner's distance is then recomputed exactly in float64, so an exact
    copy of a reference image gives 0, not float32 rounding.
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(len(samples), -1)  # (n, 784)
    reference = np.asarray(reference, dtype=np.float32).reshape(len(reference), -1)  # (m, 784)
    if samples.shape[1] != reference.shape[1] or len(reference) < 1 + (exclude is not None):
        raise ShapeError(f"samples {samples.shape} and reference {reference.shape} must be images of one size, "
                         "with enough reference images")
    ref_sq = (reference * reference).sum(1)
    nearest = np.empty(len(samples), dtype=np.int64)
    for start in range(0, len(samples), block_size):
        stop = min(start + block_size, len(samples))
        d2 = _squared_distances(samples[start:stop], reference, ref_sq)  # (b, m) float32
        if exclude is not None:
            d2[np.arange(stop - start), np.asarray(exclude[start:stop])] = np.inf
        nearest[start:stop] = d2.argmin(axis=1)
    diff = samples.astype(np.float64) - reference[nearest].astype(np.float64)
    return np.sqrt((diff * diff).sum(1))
