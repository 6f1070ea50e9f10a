"""Where arrays live and which kernels run: the one place that decides.

- `get_array_module(*arrays)` returns the module (NumPy, or CuPy for GPU arrays) that one body
  of code should call, chainer-style, so that every op serves both kinds of array. CuPy is only
  imported when a CuPy array is actually seen; importing tinygen never touches it.
- `kernel_backend()` reads the one knob, ``TINYGEN_KERNELS``, that picks the convolution
  kernels. Asking for a backend that cannot run here raises `BackendUnavailableError`; nothing
  falls back silently.
- `manual_seed` / `generator` hold the one random generator every tinygen op draws from.
"""

import os
import sys

import numpy as np

from tinygen.errors import ArgumentError, BackendUnavailableError

KERNEL_BACKENDS = ("auto", "numpy")


def get_array_module(*arrays):
    """Return `numpy`, or `cupy` if any of `arrays` is a CuPy array."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            return sys.modules["cupy"]  # a CuPy array exists, so CuPy is already imported
    return np


def kernel_backend():
    """The kernel set to use, from ``TINYGEN_KERNELS`` (default ``auto``): ``"numpy"`` for now.

    ``auto`` picks the fastest installed backend; a named backend must be available or this
    raises. Only the NumPy references exist so far, so ``auto`` resolves to ``"numpy"``.
    """
    choice = os.environ.get("TINYGEN_KERNELS", "auto").strip().lower() or "auto"
    if choice not in KERNEL_BACKENDS:
        raise BackendUnavailableError(
            f"TINYGEN_KERNELS={choice!r} is not a kernel backend this tinygen provides; "
            f"choose one of {', '.join(KERNEL_BACKENDS)}"
        )
    return "numpy"


# --- dtypes -------------------------------------------------------------------------------

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_default_dtype = np.dtype(np.float32)


def get_default_dtype():
    """The dtype of new floating-point tensors (float32 unless changed)."""
    return _default_dtype


def set_default_dtype(dtype):
    """Make `dtype` (float32 or float64) the dtype of new floating-point tensors."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise ArgumentError(f"default dtype must be float32 or float64, got {dtype}")
    _default_dtype = dtype


# --- randomness ---------------------------------------------------------------------------

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator behind randn, rand, dropout and every weight initialisation."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ArgumentError(f"manual_seed takes a non-negative integer, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator():
    """The current NumPy random generator (replaced by each `manual_seed`)."""
    return _generator


def get_rng_state():
    """The generator's state as plain Python data (JSON-friendly), for checkpoints."""
    return _generator.bit_generator.state


def set_rng_state(state):
    """Restore a state from `get_rng_state`, so a resumed run draws the same numbers."""
    try:
        _generator.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as err:
        raise ArgumentError(f"not a random generator state of {type(_generator.bit_generator).__name__}: {err}") from err


class fork_rng:
    """Context manager: draw from a generator seeded with `seed`, then restore the outer one.

    Lets a training run draw its sample grids from a fixed seed without moving the training
    run's own random stream (so a resumed run stays on the uninterrupted trajectory).
    """

    def __init__(self, seed):
        self.seed = seed

    def __enter__(self):
        self._outer = _generator
        return manual_seed(self.seed)

    def __exit__(self, *exc):
        global _generator
        _generator = self._outer
