"""`benchmarks.kernels` and `benchmarks.train_step` measure what they name: the PyTorch side does
the same work each timed call as tinygen's. Tiny shapes, no timing asserted."""

import numpy as np
import pytest

from benchmarks import kernels


class RecordingTorch:
    """torch, remembering every tensor `from_numpy` makes (the benchmark's leaves)."""

    def __init__(self, torch):
        self.torch, self.made = torch, []

    def __getattr__(self, name):
        return getattr(self.torch, name)

    def from_numpy(self, array):
        tensor = self.torch.from_numpy(array)
        self.made.append(tensor)
        return tensor


def _grads_after(step, torch_proxy):
    step()
    return [None if t.grad is None else t.grad.clone() for t in torch_proxy.made]


@pytest.mark.parametrize("op", ["group_norm", "silu"])
def test_torch_fused_steps_do_not_accumulate_gradients(op):
    # A backward into a leaf whose .grad is set adds into it: one more pass over x than tinygen
    # does, which made PyTorch's GroupNorm and SiLU rows slower than PyTorch is.
    torch = pytest.importorskip("torch")
    proxy = RecordingTorch(torch)
    _, arrays = kernels.fused_problem(op, (4, 16, 5, 5))
    step = kernels.torch_fused_step(proxy, op, arrays)
    first, second = _grads_after(step, proxy), _grads_after(step, proxy)
    assert any(g is not None for g in first)
    for a, b in zip(first, second):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a)


@pytest.mark.parametrize("shape", kernels.CONV_SHAPES, ids=[s[0] for s in kernels.CONV_SHAPES])
def test_torch_conv_steps_do_not_accumulate_gradients(shape):
    torch = pytest.importorskip("torch")
    proxy = RecordingTorch(torch)
    step = kernels.torch_step(proxy, kernels.conv_problem(shape, batch_divisor=64))
    first, second = _grads_after(step, proxy), _grads_after(step, proxy)
    for a, b in zip(first, second):
        if a is not None:
            torch.testing.assert_close(b, a)


def test_fused_rows_count_the_arrays_they_touch():
    # GB/s count each array once: (x, y; dy, x, dx) forward + backward, Adam (p, g, m, v; p, m, v)
    assert kernels.FUSED_ARRAYS == {"group_norm": 5, "silu": 5, "adam": 7}
    shape, arrays = kernels.fused_problem("silu", (128, 32, 28, 28), batch_divisor=8)
    assert shape == (16, 32, 28, 28) and all(a.dtype == np.float32 for a in arrays)
