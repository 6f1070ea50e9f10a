"""What the emulated GPU of tests/fake_cupy.py catches about threads that share memory.

Each emulated thread runs on its own copy of the launch's arrays, as they were at the launch, and
the copies are merged when all have run (tests/cuda_emulation.h says why). These tests pin what
that catches: a plain read-modify-write that several threads race on (the `+=` where atomicAdd
belongs) fails the launch with DataRaceError instead of adding up as threads run in turn on one
memory would; a plain store beside atomicAdd on one location fails too; while atomicAdd's sums,
identical stores, and an output that is also the input stay right. The last test mutates the
GroupNorm kernels themselves (every atomicAdd made a plain `+=`) and needs the emulator to refuse
them. Each needs a C++ compiler (it compiles CUDA C for the CPU), not a GPU, and no
TINYGEN_TEST_FAKE_GPU: the fake RawModule is used directly.

What it cannot catch: threads that need another's write within a launch run on the launch-time
values (wrong results a test may or may not see, never an error); memory a kernel reaches through
pointers stored in an array (the optimizers' tables) is shared by all threads, so races there
show nothing; a grid of a few threads touches only some pairs of locations a GPU's would. On a
GPU, `benchmarks/gpu_check.py` runs these kernel tests under compute-sanitizer's racecheck.
"""

import os
import re

import numpy as np
import pytest

import fake_cupy
import tinygen.kernels.normalization

pytestmark = pytest.mark.skipif(fake_cupy.compiler() is None, reason="no C++ compiler to run CUDA C on the CPU")

SOURCE = r"""
#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)
extern "C" __global__ void sum_atomic(const double* x, double* total, long long n) {
    double s = 0.0;
    GRID_STRIDE(i, n) s += x[i];
    atomicAdd(total, s);
}
extern "C" __global__ void sum_plain(const double* x, double* total, long long n) {
    double s = 0.0;
    GRID_STRIDE(i, n) s += x[i];
    *total += s;
}
extern "C" __global__ void each_atomic(const double* x, double* total, long long n) {
    GRID_STRIDE(i, n) atomicAdd(total, x[i]);
}
extern "C" __global__ void zero_then_add(const double* x, double* total, long long n) {
    *total = 0.0;
    GRID_STRIDE(i, n) atomicAdd(total, x[i]);
}
extern "C" __global__ void store_or_add(double* total) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *total = 1.0;
    else atomicAdd(total, 1.0);
}
extern "C" __global__ void flag_any(const double* x, int* flag, long long n) {
    GRID_STRIDE(i, n) if (x[i] > 0.0) *flag = 1;
}
extern "C" __global__ void twice(const float* x, float* y, long long n) {
    GRID_STRIDE(i, n) y[i] = 2.0f * x[i];
}
"""


@pytest.fixture(scope="module")
def module():
    return fake_cupy.RawModule(code=SOURCE, options=("--std=c++17",))


def launch(module, name, *args):
    module.get_function(name)((64,), (256,), args)


def test_atomic_sums_are_whole(module):
    x = np.random.default_rng(0).standard_normal(1000)
    for name in ("sum_atomic", "each_atomic"):  # each_atomic: thousands of entries in one thread's log
        total = fake_cupy.asarray(np.array([1.5]))
        launch(module, name, fake_cupy.asarray(x), total, np.int64(x.size))
        np.testing.assert_allclose(total.get(), [1.5 + x.sum()], rtol=1e-12)


def test_a_plain_read_modify_write_across_threads_is_a_race(module):
    total = fake_cupy.asarray(np.zeros(1))
    with pytest.raises(fake_cupy.DataRaceError, match=r"sum_plain \(block 0, thread 0\) and sum_plain \(block 0, "
                                                        r"thread 1\) stored different values to argument 1, element 0"):
        launch(module, "sum_plain", fake_cupy.asarray(np.arange(10.0)), total, np.int64(10))
    assert total.get()[0] == 0  # a failed launch leaves the memory as it was


def test_a_plain_store_beside_atomic_additions_is_a_race(module):
    total = fake_cupy.asarray(np.array([7.0]))
    with pytest.raises(fake_cupy.DataRaceError, match="stored to argument 1, element 0 and added to it with atomicAdd"):
        launch(module, "zero_then_add", fake_cupy.asarray(np.ones(10)), total, np.int64(10))
    with pytest.raises(fake_cupy.DataRaceError, match=r"store_or_add \(block 0, thread 0\) stored to argument 0, "
                                                        r"element 0, which other threads of store_or_add add to"):
        launch(module, "store_or_add", total)
    assert total.get()[0] == 7


def test_equal_stores_and_in_place_outputs_are_not_races(module):
    flag = fake_cupy.asarray(np.zeros(1, np.int32))
    launch(module, "flag_any", fake_cupy.asarray(np.ones(10)), flag, np.int64(10))
    assert flag.get()[0] == 1
    x = np.arange(11, dtype=np.float32)
    a = fake_cupy.asarray(x)
    launch(module, "twice", a, a, np.int64(x.size))  # y is x: one copy per thread, aliasing kept
    np.testing.assert_array_equal(a.get(), 2 * x)


def plain_sums(source):
    """The CUDA C with every `atomicAdd(&target, value);` made `target += value;`."""
    mutated, count = re.subn(r"atomicAdd\(&([^,]+), ([^;]+)\);", r"\1 += \2;", source)
    assert count > 0, "no atomicAdd left to mutate"
    return mutated


def test_group_norm_sums_without_atomics_are_refused():
    """The mutation issue 28 found surviving: GroupNorm's sums with `+=` for atomicAdd. Two channels
    of one group, two parts per row: several threads add to each group's sums."""
    path = os.path.join(os.path.dirname(tinygen.kernels.normalization.__file__), "normalization.cu")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    x, g = np.random.default_rng(1).standard_normal((2, 2, 2, 8))
    rows, C, S, Cg, parts = 4, 2, 8, 2, 2
    sizes = tuple(np.int64(v) for v in (rows, C, S, Cg, parts))
    acc, chan = np.zeros(4), np.zeros(4)
    dev = fake_cupy.asarray
    right = fake_cupy.RawModule(code=source, options=("--std=c++17",))
    wrong = fake_cupy.RawModule(code=plain_sums(source), options=("--std=c++17",))
    forward = (dev(x), dev(acc), *sizes)
    backward = (dev(g), dev(x), dev(np.ones(2)), dev(np.zeros((2, 1))), dev(np.ones((2, 1))), dev(acc), dev(chan),
                *sizes)
    for name, args in (("gn_sums_forward_f64", forward), ("gn_sums_backward_f64", backward)):
        right.get_function(name)((4,), (256,), args)
        with pytest.raises(fake_cupy.DataRaceError, match=name):
            wrong.get_function(name)((4,), (256,), args)
    shifted = x.reshape(2, 16) - x.reshape(2, 16)[:, :1]  # the forward's sums, shifted by each group's first value
    np.testing.assert_allclose(forward[1].get(), np.stack([shifted.sum(1), (shifted ** 2).sum(1)], 1).ravel())
