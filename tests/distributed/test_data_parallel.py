"""Data-parallel training on 2 MPI ranks (`tinygen.distributed`), launched with mpiexec.

The oracle: after K real optimizer steps, a 2-rank run with batch B per rank must hold the same
parameters (and optimizer states, and report the same losses) as ONE process that trains on the
combined batch of 2B, built the way `tinygen.distributed` promises to be equivalent:
- its random draws for rows r·B .. (r+1)·B − 1 come from rank r's stream (`SplitGenerator`);
- its BatchNorm layers normalise each half with that half's own statistics and average the
  running statistics (`ghost_batch_norm`): BatchNorm is per rank, as in DDP without SyncBatchNorm.
Everything else (data order, averaging, clipping, Adam) is the ordinary single-process code.

Skipped when mpi4py, mpiexec or a working MPI runtime is missing. Each rank runs one thread.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import tinygen
from tinygen import backend, distributed, trainer
from tinygen.data import DataLoader
from tinygen.errors import ArgumentError
from tinygen.models import diffusion, gan
from tinygen.nn import functional as F
from tinygen.serialization import load
from tinygen.tensor import Tensor

from mpi_worker import flat_arrays  # the script beside this file (pytest puts its folder on sys.path)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "mpi_worker.py")

RANKS, PER_RANK, STEPS, SEED = 2, 4, 3, 0
# Small configs: the equivalence does not depend on width, and 2 ranks share 2 busy cores.
SMALL = {
    "gan": {"latent_dim": 8, "g_hidden": [16, 32], "d_hidden": [32, 16]},
    "dcgan": {"latent_dim": 8, "width": 4},
    "vae": {"hidden": 32, "latent_dim": 4},
    "convvae": {"channels": [4, 8], "latent_dim": 4},
    # grad_clip small enough to clip every step: clipping must see the averaged gradient
    "ddpm": {"channels": [8, 16], "groups": 4, "T": 50, "warmup_steps": 1, "grad_clip": 0.05},
}


# --- launching ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _find_mpiexec():
    """(path, None) of an mpiexec that starts 2 mpi4py ranks here, or (None, why not)."""
    try:
        import mpi4py  # noqa: F401  (not mpi4py.MPI: this process must not start MPI)
    except ImportError as err:
        return None, f"mpi4py cannot be imported ({err}); pip install 'tinygen[mpi]' mpich"
    candidates = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), shutil.which("mpiexec")]
    path = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if path is None:
        return None, "no mpiexec beside the Python or on PATH (pip install mpich)"
    try:
        probe = subprocess.run([path, "-n", "2", sys.executable, "-c", "import sys; from mpi4py import MPI; "
                                "sys.exit(f'world size {MPI.COMM_WORLD.Get_size()}' if MPI.COMM_WORLD.Get_size() != 2 else 0)"],
                               capture_output=True, text=True, timeout=120, env=_env())
    except subprocess.TimeoutExpired:
        return None, f"{path} -n 2 did not finish in 120 s"
    if probe.returncode != 0:
        return None, f"{path} cannot start 2 mpi4py ranks here: {(probe.stderr or probe.stdout).strip()[-300:]}"
    return path, None


@pytest.fixture(scope="module")
def mpiexec():
    path, why = _find_mpiexec()
    if path is None:
        pytest.skip(why)
    return path


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def launch(mpiexec, mode, out, spec=None, via_mpi4py=True, timeout=300):
    """Run the worker on RANKS ranks; returns (CompletedProcess, seconds)."""
    cmd = [mpiexec, "-n", str(RANKS), sys.executable] + (["-m", "mpi4py"] if via_mpi4py else [])
    cmd += [WORKER, mode, str(out), json.dumps(spec or {})]
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT)
    return result, time.monotonic() - start


# --- the single-process reference --------------------------------------------------------------


class SplitGenerator:
    """One process's random draws that equal K ranks' draws side by side.

    A draw of shape (K·B, ...) is the K generators' (B, ...) draws stacked along dim 0. A scalar
    draw (a seed for a kernel's own noise stream) is made on every generator; rank 0's value is
    returned and all K are kept in `scalars`, for the kernel wrapper to split on.
    """

    def __init__(self, generators):
        self.generators, self.scalars = generators, None

    def _draw(self, method, size, *args, **kwargs):
        if size is None:
            self.scalars = [getattr(g, method)(*args, **kwargs) for g in self.generators]
            return self.scalars[0]
        size = (size,) if np.isscalar(size) else tuple(size)
        k = len(self.generators)
        if size[0] % k:
            raise AssertionError(f"a draw of shape {size} does not split over {k} ranks")
        part = (size[0] // k,) + size[1:]
        return np.concatenate([getattr(g, method)(*args, size=part, **kwargs) for g in self.generators])

    def standard_normal(self, size=None, dtype=np.float64):
        return self._draw("standard_normal", size, dtype=dtype)

    def random(self, size=None, dtype=np.float64):
        return self._draw("random", size, dtype=dtype)

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        return self._draw("integers", size, low, high, dtype=dtype, endpoint=endpoint)

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self._draw("normal", size, loc, scale)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._draw("uniform", size, low, high)


def ghost_batch_norm(original, k):
    """F.batch_norm that, in training, normalises each of k equal parts of the batch on its own
    and moves the running statistics as the mean of the k parts' updates (what K ranks do)."""

    def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
        if not training:
            return original(input, running_mean, running_var, weight, bias, training, momentum, eps)
        n, outs, means, variances = input.shape[0] // k, [], [], []
        for r in range(k):
            rm = None if running_mean is None else running_mean.data.copy()
            rv = None if running_var is None else running_var.data.copy()
            outs.append(original(input[r * n:(r + 1) * n], rm, rv, weight, bias, True, momentum, eps))
            means.append(rm)
            variances.append(rv)
        for running, parts in ((running_mean, means), (running_var, variances)):
            if running is not None:
                running.data[...] = np.mean(np.stack(parts).astype(np.float64), axis=0)
        return tinygen.cat(outs, dim=0)

    return batch_norm


def ghost_minibatch_std(original, k):
    """MinibatchStdDev.forward on each of k equal parts of the batch on its own (what K ranks do)."""

    def forward(self, x):
        n = x.shape[0] // k
        return tinygen.cat([original(self, x[r * n:(r + 1) * n]) for r in range(k)], dim=0)

    return forward


def split_noise_kernel(original, split, k):
    """The DDPM's q_sample_noise over k parts of the batch, part r from rank r's seed."""

    def q_sample_noise(x0, a, b, seed, offset=0, out=None):
        n = x0.shape[0] // k
        parts = [original(x0[r * n:(r + 1) * n], a[r * n:(r + 1) * n], b[r * n:(r + 1) * n], int(split.scalars[r]))
                 for r in range(k)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return q_sample_noise


def reference_run(name, monkeypatch):
    """One process, batch RANKS × PER_RANK, STEPS steps: (model, [losses per step])."""
    backend.manual_seed(SEED)
    model = trainer.build_model(name, {**SMALL[name], "batch_size": RANKS * PER_RANK})
    model.config.steps = STEPS  # as the trainer sets it (the DDPM's learning-rate schedule)
    streams = [backend.generator()] + [np.random.default_rng(distributed.rank_seed(SEED, r)) for r in range(1, RANKS)]
    split = SplitGenerator(streams)
    monkeypatch.setattr(backend, "_generator", split)
    monkeypatch.setattr(F, "batch_norm", ghost_batch_norm(F.batch_norm, RANKS))
    monkeypatch.setattr(gan.MinibatchStdDev, "forward", ghost_minibatch_std(gan.MinibatchStdDev.forward, RANKS))
    if hasattr(diffusion.kernels, "q_sample_noise"):
        monkeypatch.setattr(diffusion.kernels, "q_sample_noise", split_noise_kernel(diffusion.kernels.q_sample_noise, split, RANKS))
    loader = DataLoader(trainer.load_dataset("embedded"), batch_size=RANKS * PER_RANK, shuffle=True, drop_last=True, seed=SEED)
    losses = []
    for step, (images, labels) in zip(range(STEPS), loader.batches(0)):
        losses.append(model.train_step(Tensor(images), labels))
    return model, losses


# --- the tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_rank_runs(mpiexec, tmp_path_factory):
    """One mpiexec launch trains all five models on 2 ranks; returns (folder, seconds)."""
    out = tmp_path_factory.mktemp("ranks2")
    spec = {"models": {name: {**overrides, "batch_size": PER_RANK} for name, overrides in SMALL.items()}, "steps": STEPS}
    result, seconds = launch(mpiexec, "train", out, spec)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, seconds


@pytest.mark.parametrize("name", sorted(SMALL))
def test_two_ranks_match_one_process_on_the_combined_batch(two_rank_runs, name, monkeypatch):
    out, _ = two_rank_runs
    model, losses = reference_run(name, monkeypatch)
    logged = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == list(range(1, STEPS + 1))  # rank 0 alone logs: no line twice
    for step, (want, got) in enumerate(zip(losses, logged), 1):
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, rtol=2e-5, atol=1e-6, err_msg=f"{name} step {step} {key}")
    ours = flat_arrays(load(out / name / "checkpoint.npz")["model"])
    theirs = flat_arrays(model.state_dict())
    assert ours.keys() == theirs.keys()
    for key in ours:  # weights, BatchNorm statistics, Adam moments, EMA weights
        # float32 rounding differs (two half-batch means averaged vs one mean), and Adam's first
        # steps amplify it where |g| is near eps: within 2e-4 of each array's largest entry
        # (measured: at most 4e-5, on the DDPM's zero-initialised convolutions; without the
        # ghost BatchNorm or with clipping before averaging the error is above 0.8)
        scale = float(np.abs(theirs[key]).max()) if theirs[key].size else 0.0
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-4, atol=2e-4 * scale, err_msg=f"{name} {key}")
    assert load(out / name / "checkpoint.npz")["step"] == STEPS


@pytest.mark.parametrize("name", sorted(SMALL))
def test_parameters_stay_identical_across_ranks(two_rank_runs, name):
    out, _ = two_rank_runs
    rank0, rank1 = np.load(out / name / "rank0.npz"), np.load(out / name / "rank1.npz")
    assert sorted(rank0.files) == sorted(rank1.files) and rank0.files
    for key in rank0.files:
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=f"{name} {key}")


def test_a_distributed_run_resumes_on_its_trajectory(mpiexec, tmp_path):
    """The command: gan (two optimizers, BatchNorm) for 4 steps, and 2 + resumed 2: the same state."""
    result, _ = launch(mpiexec, "resume", tmp_path, {"model": "gan", "steps": 4, "stop": 2})
    assert result.returncode == 0, result.stderr[-3000:]
    whole, parts = load(tmp_path / "whole" / "checkpoint.npz"), load(tmp_path / "parts" / "checkpoint.npz")
    assert whole["step"] == parts["step"] == 4 and len(parts["rng"]) == RANKS  # one random stream per rank
    a, b = flat_arrays(whole["model"]), flat_arrays(parts["model"])
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    steps = [json.loads(line)["step"] for line in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # once each: only rank 0 writes
    assert json.loads((tmp_path / "parts" / "config.json").read_text())["ranks"] == RANKS
    with pytest.raises(ArgumentError, match="trained on 2 ranks: resume it with mpiexec -n 2"):
        trainer.train("gan", str(tmp_path / "parts"), steps=6, resume=True)  # in one process: refused


@pytest.mark.parametrize("via_mpi4py", [True, False], ids=["python-m-mpi4py", "tinygen-command"])
def test_a_failing_rank_brings_the_job_down(mpiexec, tmp_path, via_mpi4py):
    """Rank 1 raises in its third step while rank 0 waits in the gradient Allreduce: no hang."""
    mode = "fail" if via_mpi4py else "cli-fail"
    result, _ = launch(mpiexec, mode, tmp_path / "run", via_mpi4py=via_mpi4py, timeout=120)  # the timeout is the no-hang check
    assert (tmp_path / "run.raised").exists(), result.stderr[-3000:]  # rank 1 did raise
    assert result.returncode != 0
    if not via_mpi4py:  # python -m mpi4py's traceback may be cut off by the abort; ours waits for it
        assert "tinygen: error on rank 1 of 2: injected failure on rank 1; aborting all ranks" in result.stderr
