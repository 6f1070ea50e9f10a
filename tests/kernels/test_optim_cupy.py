"""Adam's update on the GPU (kernels/optim/gpu_cupy.py + optim.cu) against the NumPy reference.

The `gpu` fixture (tests/conftest.py) gives CuPy on a GPU, else the stand-in of tests/fake_cupy.py,
which runs the same CUDA C compiled for the CPU as a small emulated grid. The emulation gives each
thread its own copy of a launch's arrays to expose races, but p, g, m and v reach the kernels
through a table of pointers, which all emulated threads share: a race on them would not show here
(sum_of_squares' partial sums, a plain argument, are covered). In place, so there is
no output buffer to poison: p, m and v start from drawn values and every element of all three
must match the reference's, on sizes that divide no block size, float32 and float64, Adam and
AdamW weight decay, at the first and at later steps.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygen
from helpers import assert_kernel_output, poisoned_allocator
from strategies import adam_problem
from tinygen import backend, optim
from tinygen.kernels import optim as optim_kernels
from tinygen.kernels.optim import gpu_cupy, reference

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True, scope="module")
def poisoned_outputs(gpu):
    """gpu_cupy's allocator (sum_of_squares' partial sums) replaced by one that fills with NaN."""
    with poisoned_allocator(gpu_cupy, gpu.empty) as allocated:
        yield allocated


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_adam_kernel_matches_reference(gpu, data):
    p, g, m, v, args = adam_problem(data)
    expected = [a.copy() for a in (p, m, v)]
    reference.adam_update(expected[0], g, expected[1], expected[2], *args)
    on_gpu = [gpu.asarray(a) for a in (p, m, v)]
    gpu_cupy.adam_update(on_gpu[0], gpu.asarray(g), on_gpu[1], on_gpu[2], *args)
    for got, want, what in zip(on_gpu, expected, "pmv"):
        assert_kernel_output(got.get(), want, what=what)


def test_adam_kernel_refuses_a_strided_parameter(gpu):
    p = gpu.asarray(np.ones((4, 6))).T
    with pytest.raises(ValueError, match="C-contiguous"):
        gpu_cupy.adam_update(p, p, p, p, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False)


def test_adam_on_gpu_tensors_runs_the_cuda_kernel(gpu, monkeypatch):
    """optim.Adam on a parameter on the GPU dispatches to gpu_cupy (under auto), and steps as on the CPU."""
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    before = optim_kernels.calls["gpu_cupy", "adam_update_many"]
    results = []
    for device in ("cpu", "cuda"):
        p = tinygen.tensor(np.array([1.0, -2.0, 3.0], np.float32), requires_grad=True, device=device)
        opt = optim.AdamW([p], lr=0.1, weight_decay=0.01)
        for _ in range(3):
            p.grad = tinygen.tensor(np.array([0.5, 0.25, -1.0], np.float32), device=device)
            opt.step()
        results.append(p.numpy())
    assert optim_kernels.calls["gpu_cupy", "adam_update_many"] == before + 3
    np.testing.assert_allclose(results[1], results[0], rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_ema_kernel_matches_reference(gpu, data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    n = data.draw(st.one_of(st.integers(1, 40), st.integers(1000, 3000)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shadow, p = rng.standard_normal(n).astype(dtype), rng.standard_normal(n)  # p float64: cast to the shadow's dtype
    decay = data.draw(st.sampled_from([0.0, 0.9, 0.9999]))
    expected = shadow.copy()
    reference.ema_update(expected, p, decay)
    on_gpu = gpu.asarray(shadow)
    gpu_cupy.ema_update(on_gpu, gpu.asarray(p), decay)
    assert_kernel_output(on_gpu.get(), expected, what="shadow")


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_sum_of_squares_matches_reference(gpu, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    sizes = data.draw(st.lists(st.one_of(st.integers(0, 40), st.integers(1000, 70000)), min_size=1, max_size=4))
    arrays = [rng.standard_normal(n).astype(data.draw(st.sampled_from([np.float32, np.float64]))) for n in sizes]
    arrays[0] = arrays[0][::2]  # a strided one: copied contiguous first
    got = gpu_cupy.sum_of_squares([gpu.asarray(a) for a in arrays])
    assert backend.is_device_array(got) and got.shape == () and got.dtype == np.float64
    want = float(reference.sum_of_squares(arrays))
    assert float(got) == pytest.approx(want, rel=1e-12, abs=1e-300)


def drawn_tensors(data, rng, dtypes=(np.float32, np.float64)):
    """A list of 1 to 5 arrays of drawn sizes (empty ones included) and dtypes, for the `*_many` kernels."""
    sizes = data.draw(st.lists(st.one_of(st.integers(0, 40), st.integers(1000, 3000)), min_size=1, max_size=5))
    return [rng.standard_normal(n).astype(data.draw(st.sampled_from(dtypes))) for n in sizes]


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_adam_many_kernel_matches_reference(gpu, data):
    """One launch per dtype over several tensors, each at its own step: the reference's numbers."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    ps = drawn_tensors(data, rng)
    gs = [rng.standard_normal(p.size).astype(p.dtype) for p in ps]
    ms = [rng.standard_normal(p.size).astype(p.dtype) for p in ps]
    vs = [rng.random(p.size).astype(p.dtype) for p in ps]
    steps = [data.draw(st.integers(1, 1000)) for _ in ps]
    args = (data.draw(st.sampled_from([1e-3, 0.1])), 0.9, 0.999, 1e-8, data.draw(st.sampled_from([0.0, 1e-2])),
            data.draw(st.booleans()))
    expected = [[a.copy() for a in arrays] for arrays in (ps, ms, vs)]
    reference.adam_update_many(*expected[:1], gs, *expected[1:], steps, *args)
    on_gpu = [[gpu.asarray(a) for a in arrays] for arrays in (ps, ms, vs)]
    gpu_cupy.adam_update_many(on_gpu[0], [gpu.asarray(g) for g in gs], *on_gpu[1:], steps, *args)
    for got_list, want_list, what in zip(on_gpu, expected, "pmv"):
        for k, (got, want) in enumerate(zip(got_list, want_list)):
            assert_kernel_output(got.get(), want, what=f"{what}[{k}]")


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_ema_many_and_scale_many_match_reference(gpu, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    shadows = drawn_tensors(data, rng)
    params = [rng.standard_normal(s.size) for s in shadows]  # float64: cast to each shadow's dtype
    decay, factor = data.draw(st.sampled_from([0.0, 0.9, 0.9999])), data.draw(st.sampled_from([0.5, 1e-3, 0.0]))
    expected = [s.copy() for s in shadows]
    reference.ema_update_many(expected, params, decay)
    reference.scale_many(expected, factor)
    on_gpu = [gpu.asarray(s) for s in shadows]
    gpu_cupy.ema_update_many(on_gpu, [gpu.asarray(p) for p in params], decay)
    gpu_cupy.scale_many(on_gpu, factor)
    for k, (got, want) in enumerate(zip(on_gpu, expected)):
        assert_kernel_output(got.get(), want, what=f"shadow[{k}]")


def test_scale_many_scales_a_strided_array_too(gpu):
    a, b = gpu.asarray(np.ones((3, 4))), gpu.asarray(np.ones((4, 3))).T
    gpu_cupy.scale_many([a, b], 0.25)
    np.testing.assert_array_equal(a.get(), np.full((3, 4), 0.25))
    np.testing.assert_array_equal(b.get(), np.full((3, 4), 0.25))
