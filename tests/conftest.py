"""Test configuration shared by every test under tests/: hypothesis profiles, fixtures.

Hypothesis is configured here, once (STYLE.md item 12). Two profiles:
- "dev" (the default): few examples, no deadline (a first Numba call compiles for seconds);
- "ci" (when the CI environment variable is set): hypothesis's default number of examples,
  derandomized so a CI run is reproducible, and printing the blob that replays a failure.
A test that is expensive per example sets `@settings(max_examples=...)` itself; the rest of the
profile (deadline, derandomize) still applies to it.

`helpers.py` (check_op, gradcheck) and `strategies.py` are imported as top-level modules:
pyproject's `pythonpath` puts tests/ on sys.path, so no __init__.py files are needed.
"""

import importlib
import os

import pytest
from hypothesis import settings

import tinygen
from tinygen import backend

autograd = importlib.import_module("tinygen.tensor")  # the module (tinygen.tensor is also a function)

settings.register_profile("dev", deadline=None, max_examples=20)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def torch():
    """The torch module; the test is skipped where PyTorch is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Undo changes a test makes to tinygen's globals (default dtype, grad mode)."""
    dtype, grad_enabled = tinygen.get_default_dtype(), autograd._grad_enabled
    yield
    backend.set_default_dtype(dtype)
    autograd._grad_enabled = grad_enabled
