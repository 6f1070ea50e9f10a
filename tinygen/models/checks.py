"""Argument checks shared by the model families' public methods."""

import numpy as np

from tinygen.errors import ArgumentError


def check_count(n):
    """`sample(n)`'s n: a positive integer (not a bool, a float or a string)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ArgumentError(f"the number of samples must be a positive integer, got {n!r}")
