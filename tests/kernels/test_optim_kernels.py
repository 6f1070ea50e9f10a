"""Adam's update: the Numba kernel (kernels/optim/cpu_numba.py) against the NumPy reference.

In place, so there is no output to poison: instead p, m and v start from drawn values (NaN
nowhere), and every element of all three must match the reference's, on sizes that cross the
vector loop's tails, float32 and float64, with
coupled (Adam) and decoupled (AdamW) weight decay, at the first and at later steps, and on a
strided parameter (updated through a copy, then written back). tests/test_optim.py checks the
optimizers themselves against hand-computed updates and torch.optim.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from helpers import assert_kernel_output
from strategies import adam_problem
from tinygen.kernels import dispatch
from tinygen.kernels import optim as optim_kernels
from tinygen.kernels.optim import reference

pytest.importorskip("numba")
from tinygen.kernels.optim import cpu_numba  # noqa: E402


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_adam_kernel_matches_reference(data):
    p, g, m, v, args = adam_problem(data)
    expected = [a.astype(np.float64) for a in (p, m, v)]
    reference.adam_update(expected[0], g.astype(np.float64), expected[1], expected[2], *args)
    cpu_numba.adam_update(p, g, m, v, *args)
    for got, want, what in zip((p, m, v), expected, "pmv"):
        assert_kernel_output(got, want.astype(p.dtype), what=what)


def test_adam_kernel_updates_strided_arrays_in_place():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((6, 4)).T  # (4, 6), a transposed view
    g, m, v = rng.standard_normal((4, 6)), np.zeros((4, 6)), np.zeros((4, 6))
    expected = p.copy(), m.copy(), v.copy()
    reference.adam_update(expected[0], g, expected[1], expected[2], 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False)
    cpu_numba.adam_update(p, g, m, v, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False)
    for got, want in zip((p, m, v), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("knob", ["numpy", "numba"])
def test_the_requested_kernel_runs(monkeypatch, knob):
    monkeypatch.setenv("TINYGEN_KERNELS", knob)
    module = "reference" if knob == "numpy" else "cpu_numba"
    before = optim_kernels.calls[module, "adam_update"]
    p = np.ones(3)
    optim_kernels.adam_update(p, np.ones(3), np.zeros(3), np.zeros(3), 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False)
    assert optim_kernels.calls[module, "adam_update"] == before + 1
    np.testing.assert_allclose(p, 0.9)  # the first step moves each weight by lr against the gradient's sign
    assert dispatch.kernel_backend(provides=optim_kernels.kernels.provides) == knob
