"""Evaluating generated images: a fixed feature network per dataset and the metrics computed in its space.

features.py           the feature networks (MNIST's LeNet, ConvFeatureNet for any (C, H, W); shipped
                      weights SHA-256 checked), `features`
frechet.py            Fréchet distance between Gaussians fitted to two feature sets
kid.py                KID: the unbiased MMD^2 between two feature sets (cubic polynomial kernel)
manifold.py           k-NN precision / recall / coverage, class histogram, nearest-training-image distance
protocol.py           the `tinygen eval` protocol: sample files, reference sets, the real-data floor
likelihood.py         test-set likelihood bounds: VAE ELBO / IWAE, DDPM bits/dim
train_feature_net.py  trains a feature network and writes its weights (and MNIST's test-set statistics)
                      (run by hand, never imported here)

The protocol (the README's "Evaluating samples"): 10,000 generated images against the 10,000 MNIST
test images (for other data: as many as its held-out images, against them), every number printed
beside the same number for real training images (the floor).
"""

# NOTE: the function `features` is not re-exported: `tinygen.evaluation.features` stays the module
# (use `from tinygen.evaluation.features import features`).
from tinygen.evaluation.features import (
    EMOJI_WEIGHTS_SHA256,
    WEIGHTS_SHA256,
    ConvFeatureNet,
    LeNet,
    classify,
    load_feature_net,
    load_test_statistics,
    sha256_of,
    shipped_feature_net,
)
from tinygen.evaluation.frechet import frechet_distance, frechet_distance_of_features, sqrtm_psd, statistics
from tinygen.evaluation.kid import kernel_distance
from tinygen.evaluation.manifold import class_histogram, nearest_distances, precision_recall_coverage
from tinygen.evaluation.protocol import (
    LIKELIHOOD_METRICS,
    METRICS,
    PROTOCOL_N,
    Reference,
    evaluate,
    floor,
    format_table,
    likelihood_metrics,
    load_samples,
    load_split,
    reference,
    report,
    sample_in_batches,
    summary,
)
