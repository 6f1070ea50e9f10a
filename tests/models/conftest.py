"""Real digits for the short training runs of the model families."""

import os

import numpy as np
import pytest

DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")


@pytest.fixture(scope="module")
def mnist():
    """2,000 real training digits, float32 (N, 1, 28, 28) in [0, 1]."""
    if not os.path.isdir(DATA_DIR):
        pytest.skip(f"MNIST IDX files not found at {DATA_DIR}")
    from tinygen.data import load_mnist

    images, _ = load_mnist(DATA_DIR, train=True)
    return images[:2000, None].astype(np.float32) / 255
