"""Argument checks shared by the model families' public methods."""

import numpy as np

from tinygen.errors import ArgumentError


def check_count(n):
    """`sample(n)`'s n: a positive integer (not a bool, a float or a string)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ArgumentError(f"the number of samples must be a positive integer, got {n!r}")


def check_unit_range(data, what="images must lie in [0, 1]"):
    """Pixels in [0, 1]: one check (one wait for a GPU batch), then the range found in the message."""
    if bool(((data < 0) | (data > 1)).any()):
        raise ArgumentError(f"{what}, found values in [{float(data.min())}, {float(data.max())}]")
