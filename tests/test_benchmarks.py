"""`benchmarks.kernels` and `benchmarks.train_step` measure what they name: the PyTorch side does
the same work each timed call as tinygen's. Tiny shapes, no timing asserted."""

import json

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


def test_kernels_gives_torch_as_many_threads_as_numba(monkeypatch):
    # PyTorch ran on 2 threads whatever Numba's pool had (NUMBA_NUM_THREADS=1: 1 thread against 2)
    pytest.importorskip("torch")
    numba = pytest.importorskip("numba")
    calls = []

    def fake_fresh_process(function, *args):
        calls.append(args)
        return dict(torch="fake", threads=args[-1])

    monkeypatch.setattr(kernels, "fma_peak", lambda quick: None)
    for name in ("sgemm_gflops", "copy_bandwidth"):
        monkeypatch.setattr(kernels, name, lambda quick: 1.0)
    monkeypatch.setattr(kernels, "SECTIONS", [])
    monkeypatch.setattr(kernels, "compile_times", lambda quick: None)
    monkeypatch.setattr(kernels, "in_fresh_process", fake_fresh_process)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        kernels.main(["--quick"])
    finally:
        numba.set_num_threads(before)
    assert len(calls) == 1 and calls[0][-1] == 1


def test_train_step_gives_torch_as_many_threads_as_tinygen(tmp_path, monkeypatch):
    # --torch-threads defaulted to 2 whatever tinygen's kernels ran on
    pytest.importorskip("torch")
    pytest.importorskip("numba")
    from benchmarks import train_step

    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")  # read by the spawned processes
    out = tmp_path / "steps.json"
    train_step.main(["--models", "vae", "--batch-size", "2", "--repeats", "1", "--warmup", "1",
                     "--warmup-seconds", "0", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["tinygen_threads"] == report["torch_threads"] == 1
    assert report["results"][0]["tinygen_median_s"] > 0 and report["results"][0]["torch_median_s"] > 0


def test_train_step_refuses_zero_torch_threads():
    from benchmarks import train_step

    with pytest.raises(SystemExit):
        train_step.main(["--models", "vae", "--torch-threads", "0"])


@pytest.mark.parametrize("module, argv", [
    ("kernels", ["--quick", "--warmups", "0"]), ("kernels", ["--quick", "--repeats", "0"]),
    ("train_step", ["--models", "vae", "--warmup", "0"]), ("distributed", ["--models", "vae", "--warmup", "0"]),
])
def test_benchmarks_refuse_to_time_the_first_call(module, argv, monkeypatch):
    # With no warm-up the first timed call loads or compiles the Numba kernels: train_step's
    # MLP VAE step measured 2.7 s instead of milliseconds.
    import importlib

    bench = importlib.import_module(f"benchmarks.{module}")
    for name in ("fma_peak", "sgemm_gflops", "copy_bandwidth"):  # kernels: nothing slow before the check
        monkeypatch.setattr(bench, name, lambda quick: None, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2  # argparse's usage error


@pytest.mark.parametrize("choice", ["numpy", "cupy"])
def test_kernels_refuses_a_kernel_choice_it_would_not_time(choice, monkeypatch, capsys):
    # Its rows call the Numba modules directly: under TINYGEN_KERNELS=numpy its header said
    # "kernels=numpy" above Numba's times.
    monkeypatch.setenv("TINYGEN_KERNELS", choice)
    with pytest.raises(SystemExit) as exit_info:
        kernels.main(["--quick"])
    assert exit_info.value.code == 2
    assert f"TINYGEN_KERNELS={choice}" in capsys.readouterr().err


def test_fma_peak_runs_512_bit_fmas_where_the_cpu_has_them(monkeypatch):
    # LLVM tunes Intel's AVX-512 server cores for 256-bit vectors: the FMA loop ran ymm FMAs at half
    # their peak, and the README's 2-core Xeon measured a "peak" of 227 GFLOP/s beside sgemm's 306.
    pytest.importorskip("numba")
    import llvmlite.binding as llvm

    host = llvm.get_host_cpu_features()
    if not all(host.get(f) for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd")):
        pytest.skip("needs a CPU that runs Skylake-X's AVX-512")
    monkeypatch.delenv("NUMBA_CPU_FEATURES", raising=False)
    monkeypatch.setenv("NUMBA_CPU_NAME", "skylake-avx512")  # read by the measuring process
    peak = kernels.fma_peak(quick=True)
    assert peak["vector_bits"] == 512 and peak["gflops"] > 0


def test_fused_rows_are_measured_against_a_copy_of_their_own_size(monkeypatch):
    # Against the large (DRAM) copy alone, Adam's 3 MB arrays ran at 208% of "the copy peak" (--quick):
    # a ceiling a kernel exceeds is not its ceiling. Every call "takes" 1 ms here: only the arithmetic.
    import argparse

    monkeypatch.setattr(kernels, "median_time", lambda fn, repeats, warmups=2: 1e-3)
    monkeypatch.setattr(kernels, "BLAS_SPIN_S", 0.0)
    monkeypatch.setattr(kernels, "FUSED_ROWS", [("s2", "silu", (128, 128, 7, 7)), ("a1", "adam", (1000,))])
    args = argparse.Namespace(quick=True, repeats=1, warmups=1)
    rows = kernels.fused_section(args, dict(copy_gbs=1.0), None)
    if rows[0]["gbs"] is None:
        pytest.skip("Numba is not installed: no Numba column to compare")
    for row, n, arrays in zip(rows, (16 * 128 * 7 * 7, 1000), (5, 7)):
        assert row["copy_gbs"] == pytest.approx(8 * n / 1e-3 / 1e9)  # n floats read + written in 1 ms
        assert row["percent_of_copy"] == pytest.approx(100 * arrays * 4 / 8)


def test_same_trajectory_finds_the_checkout_training_as_its_head_does(tmp_path, capsys):
    """`benchmarks.same_trajectory` against HEAD on a clean checkout (as CI's): the same arrays."""
    import os
    import subprocess

    from benchmarks import same_trajectory

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    assert same_trajectory.main(["--commit", "HEAD", "--model", "vae", "--steps", "2"]) == 0
    assert "0 in one checkpoint only, 0 that differ" in capsys.readouterr().out
    import tinygen

    path = str(tmp_path / "state.npz")
    tinygen.save({"model": {"net": {"w": np.zeros(3), "layers": [np.ones(2)]}}, "rng": np.ones(4), "step": 3}, path)
    assert sorted(same_trajectory.model_arrays(path)) == ["model/net/layers/0", "model/net/w"]
