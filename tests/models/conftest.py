"""Real digits for the short training runs of the model families."""

import pytest

from tinygen.data import MNIST


@pytest.fixture(scope="module")
def mnist():
    """2,000 real training digits, float32 (N, 1, 28, 28) in [0, 1]: the first 2,000 of the subset
    shipped inside tinygen, which are the first 2,000 of the full training file."""
    images, _ = MNIST().arrays()
    return images[:2000]
