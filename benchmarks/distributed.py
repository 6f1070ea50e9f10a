"""Data-parallel scaling of every model on this machine, and what the allreduce would cost across machines.

    python -m benchmarks.distributed                                   # all five models
    python -m benchmarks.distributed --models vae,ddpm --batch-size 32 --steps 20 --json dist.json

For each model (default config, --batch-size images per rank) and each layout of the cores,

    1 rank  x T threads            (T = all cores: the ordinary single-process run)
    1 rank  x 1 thread
    K ranks x 1 thread each        (K = --ranks, default: the number of cores)

it launches `mpiexec -n RANKS python -m mpi4py -m benchmarks.distributed --worker ...` with
NUMBA_NUM_THREADS = OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = threads per rank, and every rank
times `train_step` + `DataParallel.after_step` (the full data-parallel step of
`tinygen train --distributed`) on random images, after --warmup untimed steps. Reported:

- steps/s (1 / the median step, the slowest rank's) and images/s (ranks x --batch-size a step);
- scaling efficiency = images/s on K ranks / (K x images/s on 1 rank x 1 thread) (weak scaling:
  each rank keeps its batch), and the speed-up over 1 rank using all the cores;
- the bytes the gradient Allreduce moves per step (one fused buffer per optimizer: the GANs
  have two) and its time per step inside the step (that includes waiting for the slower rank),
  (medians), and the same Allreduce timed alone (20 calls after a barrier: the communication
  itself); one rank reduces nothing;
- a paper estimate for K machines joined by a 10 / 25 / 100 Gbit/s network: a ring allreduce
  sends and receives 2 (K - 1) / K x bytes per rank, so it takes at least that / bandwidth
  (latency and the reduction's arithmetic ignored).

NOTE: on one machine MPICH moves the buffers through shared memory, and a rank waiting in a
collective busy-polls its core: with 2 ranks on 2 cores shared with other work, the waits
steal time from the computation. Measure on a quiet machine; the load average is printed.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

GBIT = 1e9 / 8  # bytes per second in one Gbit/s


def ring_allreduce_seconds(nbytes, ranks, gbit_per_s):
    """Lower bound of a ring allreduce of `nbytes` over `ranks` machines: 2 (K - 1) / K x bytes / bandwidth."""
    return 2 * (ranks - 1) / ranks * nbytes / (gbit_per_s * GBIT)


def worker(args):
    """One rank: time the data-parallel steps of each model; rank 0 writes the JSON."""
    import tinygen
    from benchmarks import machine
    from tinygen import distributed
    from tinygen.models import MODELS
    from tinygen.nn import Module
    from tinygen.tensor import Tensor

    comm = distributed.init()
    rank, size = comm.Get_rank(), comm.Get_size()
    from mpi4py import MPI

    results = []
    for name in args.models.split(","):
        tinygen.manual_seed(args.seed)
        model = MODELS[name](MODELS[name].Config(batch_size=args.batch_size))
        dp = distributed.DataParallel()
        dp.prepare(model, args.seed)
        nets = [v for v in vars(model).values() if isinstance(v, Module) and v is not getattr(model, "ema_net", None)]
        params = int(sum(p.numel() for net in nets for p in net.parameters()))
        rng = np.random.default_rng([args.seed, rank])
        x = Tensor(rng.random((args.batch_size, 1, 28, 28), dtype=np.float32))
        y = rng.integers(0, 10, args.batch_size).astype(np.int64)

        def step():
            return dp.after_step(model, model.train_step(x, y))

        for _ in range(args.warmup):
            step()
        comm.Barrier()
        step_s, reduce_s, nbytes = [], [], 0
        for _ in range(args.steps):  # the ranks run in lockstep (each step ends in collectives)
            before, start = dp.allreduce_stats(), time.perf_counter()
            step()
            step_s.append(time.perf_counter() - start)
            after = dp.allreduce_stats()
            reduce_s.append(after[1] - before[1])
            nbytes += after[0] - before[0]
        # medians: one busy moment of another process on the machine should not decide the number
        step_s = comm.allreduce(float(np.median(step_s)), op=MPI.MAX)
        reduce_s = comm.allreduce(float(np.median(reduce_s)), op=MPI.MAX)
        # the same reductions alone: one buffer per optimizer, as large as its fused gradients
        buffers = [np.zeros(sum(p.data.size + 1 for p in o.parameters()), np.float32) for o in dp.optimizers]
        comm.Barrier()
        alone = time.perf_counter()
        for _ in range(20):
            for b in buffers:
                comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)
        alone = comm.allreduce(time.perf_counter() - alone, op=MPI.MAX) / 20
        results.append({"model": name, "parameters": params, "steps_per_s": 1 / step_s,
                        "allreduce_bytes_per_step": nbytes / args.steps, "allreduce_s_per_step": reduce_s,
                        "allreduce_alone_s": alone, "gradient_bytes": 4 * params})
    if rank == 0:
        with open(args.json, "w") as f:
            json.dump({"ranks": size, "machine": machine.describe(), "results": results}, f)


def launch(mpiexec, ranks, threads, args, out):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "benchmarks.distributed", "--worker",
           "--models", args.models, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--seed", str(args.seed), "--json", out]
    subprocess.run(cmd, check=True, env=env, cwd=root)
    with open(out) as f:
        return json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gan,dcgan,vae,convvae,ddpm")
    parser.add_argument("--batch-size", type=int, default=32, help="images per rank and step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (the median step is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (Numba compiles, caches warm)")
    parser.add_argument("--ranks", type=int, default=os.cpu_count(), help="the multi-rank layout's ranks, 1 thread each")
    parser.add_argument("--estimate-ranks", default="2,8", help="machine counts of the network estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    from tinygen.models import MODELS

    # at least one warm-up step: the first one loads (or compiles) the Numba kernels
    if any(n not in MODELS for n in args.models.split(",")) or args.batch_size < 2 or min(args.steps, args.ranks,
                                                                                        args.warmup) < 1:
        parser.error(f"--models from {', '.join(MODELS)}; --batch-size >= 2; --steps, --ranks and --warmup >= 1")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.access(mpiexec, os.X_OK) else shutil.which("mpiexec")
    if mpiexec is None:
        parser.error("no mpiexec beside this Python or on PATH: pip install 'tinygen[mpi]' mpich")
    cores = os.cpu_count()
    layouts = [(1, cores), (1, 1), (args.ranks, 1)] if cores > 1 else [(1, 1), (args.ranks, 1)]
    print(f"load average (1 min) before the run: {os.getloadavg()[0]:.2f}; {cores} cores; "
          f"batch {args.batch_size} per rank, {args.warmup} warm-up + {args.steps} timed steps", flush=True)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ranks, threads in layouts:
            runs[ranks, threads] = launch(mpiexec, ranks, threads, args, os.path.join(tmp, f"{ranks}x{threads}.json"))
            print(f"{ranks} rank(s) x {threads} thread(s): done", flush=True)
    print(f"machine: {runs[layouts[0]]['machine']}")
    base, full, multi = runs[1, 1]["results"], runs[layouts[0]]["results"], runs[args.ranks, 1]["results"]

    print("\n| model | params | ranks x threads | steps/s | images/s | efficiency vs 1x1 | speed-up vs 1 rank, all cores "
          "| allreduce KB/step | in-step allreduce ms | allreduce alone ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, name in enumerate(args.models.split(",")):
        one = base[i]["steps_per_s"] * args.batch_size
        for (ranks, threads), run in runs.items():
            r = run["results"][i]
            images = r["steps_per_s"] * args.batch_size * ranks
            eff = images / (ranks * one)
            speedup = images / (full[i]["steps_per_s"] * args.batch_size)
            print(f"| {name} | {r['parameters']:,} | {ranks} x {threads} | {r['steps_per_s']:.2f} | {images:.0f} | "
                  f"{eff:.2f} | {speedup:.2f} | {r['allreduce_bytes_per_step'] / 1e3:.0f} | "
                  f"{1e3 * r['allreduce_s_per_step']:.2f} | {1e3 * r['allreduce_alone_s']:.2f} |")

    ks = [int(k) for k in args.estimate_ranks.split(",")]
    print("\nPaper estimate, gradient allreduce across machines (ring: 2(K-1)/K x bytes / bandwidth), ms per step:")
    print("| model | params | bytes/step | " + " | ".join(f"K={k} @ {g} Gbit/s" for k in ks for g in (10, 25, 100))
          + " | compute ms/step (1 rank, all cores) |")
    print("|---|---|---|" + "---|" * (3 * len(ks)) + "---|")
    estimates = []
    for i, name in enumerate(args.models.split(",")):
        nbytes = multi[i]["allreduce_bytes_per_step"] or 4 * multi[i]["parameters"]  # float32 gradients
        cells = [1e3 * ring_allreduce_seconds(nbytes, k, g) for k in ks for g in (10, 25, 100)]
        estimates.append({"model": name, "bytes": nbytes, "ms": cells})
        print(f"| {name} | {multi[i]['parameters']:,} | {nbytes / 1e6:.2f} MB | " + " | ".join(f"{c:.2f}" for c in cells)
              + f" | {1e3 / full[i]['steps_per_s']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": {f"{r}x{t}": v for (r, t), v in runs.items()},
                       "estimates": estimates}, f, indent=2)


if __name__ == "__main__":
    main()
