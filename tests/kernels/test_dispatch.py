"""The seam between the ops and the kernel families (tinygen.kernels.dispatch): the choice of an
implementation is made once for each setting of TINYGEN_KERNELS and array module, then only
looked up; a family refuses a backend it has no files for; MatMul's threading is decided alike."""

import numpy as np
import pytest

from tinygen.errors import BackendUnavailableError
from tinygen.kernels import dispatch, normalization
from tinygen.kernels.normalization import reference


@pytest.fixture
def choices(monkeypatch):
    """A fresh memory of choices, and the list of (provides, choice) that `kernel_backend` resolved."""
    monkeypatch.setattr(dispatch, "_chosen", {})
    resolved = []
    original = dispatch.kernel_backend

    def counting(provides=("numpy",), xp=np, choice=None):
        resolved.append((tuple(provides), choice))
        return original(provides, xp, choice)

    monkeypatch.setattr(dispatch, "kernel_backend", counting)
    return resolved


def test_the_implementation_is_chosen_once_per_knob_setting(monkeypatch, choices):
    x = np.array([-1.0, 2.0], np.float32)
    monkeypatch.setenv("TINYGEN_KERNELS", "numpy")
    before = normalization.calls["reference", "relu_forward"]
    for _ in range(3):
        np.testing.assert_array_equal(normalization.relu_forward(x), reference.relu_forward(x))
    assert normalization.calls["reference", "relu_forward"] == before + 3
    assert choices == [(("numpy", "numba", "cupy"), "numpy")]  # decided at the first call only
    monkeypatch.setenv("TINYGEN_KERNELS", "auto")
    normalization.relu_forward(x)
    normalization.relu_forward(x)
    assert choices == [(("numpy", "numba", "cupy"), "numpy"), (("numpy", "numba", "cupy"), "auto")]


def test_matmuls_threading_is_decided_once_per_knob_setting(monkeypatch, choices):
    a = np.arange(6.0).reshape(2, 3)
    monkeypatch.setenv("TINYGEN_KERNELS", "numpy")
    for _ in range(3):
        np.testing.assert_array_equal(dispatch.matmul(a, a.T), a @ a.T)
    assert len(choices) == 1


def test_a_family_refuses_a_backend_it_has_no_kernels_for(monkeypatch, choices):
    family = dispatch.KernelFamily("tinygen.kernels.normalization", ("numpy",))
    monkeypatch.setenv("TINYGEN_KERNELS", "numba")
    if dispatch.cpu_runtime.load_numba() is None:
        pytest.skip("Numba is not installed: TINYGEN_KERNELS=numba raises before the family is asked")
    with pytest.raises(BackendUnavailableError, match="no normalization kernels for kernel backend 'numba'"):
        family.function("relu_forward", np.ones(2))
    monkeypatch.setenv("TINYGEN_KERNELS", "numpy")
    assert family.implementation() is reference


def test_a_refused_choice_is_not_remembered(monkeypatch, choices):
    monkeypatch.setenv("TINYGEN_KERNELS", "fortran")
    for _ in range(2):
        with pytest.raises(BackendUnavailableError, match="fortran"):
            normalization.relu_forward(np.ones(2))
    assert dispatch._chosen == {}
