"""Seconds per training step of every tinygen model, beside its PyTorch twin in the same run.

    python -m benchmarks.train_step                                  # all five models, batch 128
    python -m benchmarks.train_step --models gan,ddpm --repeats 20 --json steps.json

For each model (default config, `tinygen.models.MODELS`): the median wall time of `train_step`
over --repeats calls, after warm-up calls (at least --warmup of them and --warmup-seconds), on
random uniform images in [0, 1] of shape (B, 1, 28, 28), float32, with int64 labels. Then, when
PyTorch is installed, the same for the model's twin (`benchmarks/torch_twins.py`: the same
networks with the weights copied, the same losses, optimizer and updates), timed the same way with
torch.set_num_threads(--torch-threads: by default as many threads as tinygen's Numba kernels had)
and torch's defaults otherwise.
ratio = torch time / tinygen time: above 1, tinygen is faster.

NOTE: each measurement runs in a fresh process (spawned, not forked): tinygen's without torch
imported, the twin's without Numba's thread pool started. In one process, Numba and torch share
one GNU OpenMP runtime, whichever was loaded first, with that one's wait policy: with torch
imported first, Numba's kernels ran on torch's spinning runtime and tinygen's DCGAN step took
4x as long (448 vs 114 ms at batch 32, back to back on a loaded machine); with Numba's pool
started first, torch runs on tinygen's passive runtime, which is not torch's default.
NOTE: torch's default OpenMP threads spin while they wait. With another busy process on this
2-core machine, its two threads got one core between them and the twin's MLP-GAN step (batch
16) took 1.1 s instead of 9 ms (1 thread, or OMP_WAIT_POLICY=PASSIVE). Measure on a quiet
machine: the load average before the run is printed and saved with the results.
"""

import argparse
import importlib.util
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import tinygen
from benchmarks import machine
from tinygen.models import MODELS


def time_steps(step, warmup, repeats, warmup_s):
    """Seconds of each of `repeats` calls of step(), after untimed calls: at least `warmup`, for `warmup_s` s."""
    start, done = time.perf_counter(), 0
    while done < warmup or time.perf_counter() - start < warmup_s:
        step()
        done += 1
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return seconds


def inputs(batch_size, seed):
    """A batch as the data loader gives it: images uniform in [0, 1) float32 (B, 1, 28, 28), int64 labels (B,)."""
    rng = np.random.default_rng(seed)
    return rng.random((batch_size, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch_size).astype(np.int64)


def build(name, seed):
    """The model `name` with its default config, seeded: the same weights in every process."""
    tinygen.manual_seed(seed)
    return MODELS[name]()


def measure_tinygen(name, batch_size, warmup, repeats, warmup_s, seed):
    """Run in a fresh process: the seconds of each timed `train_step`, the parameter count and the
    threads the kernels ran on (Numba's pool; every core where the kernels are NumPy's)."""
    from tinygen.kernels import dispatch

    model = build(name, seed)
    images, labels = inputs(batch_size, seed)
    x = tinygen.Tensor(images)
    nets = [model.generator, model.discriminator] if hasattr(model, "generator") else [model.net]
    seconds = time_steps(lambda: model.train_step(x, labels), warmup, repeats, warmup_s)
    return {"parameters": int(sum(p.numel() for net in nets for p in net.parameters())), "seconds": seconds,
            "threads": dispatch.kernel_info()["threads"] or os.cpu_count()}


def measure_torch(name, batch_size, warmup, repeats, warmup_s, seed, threads):
    """Run in a fresh process: the seconds of each timed step of the twin, torch's version and threads."""
    import torch  # here only: the tinygen process never imports it

    from benchmarks import torch_twins
    from tinygen.kernels import cpu_runtime

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    twin = torch_twins.twin(build(name, seed))  # the tinygen model's starting weights
    images, labels = inputs(batch_size, seed)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    seconds = time_steps(lambda: twin.train_step(x, y), warmup, repeats, warmup_s)
    if cpu_runtime._numba is not None:  # building the model must not start Numba's pool (see the NOTE above)
        raise RuntimeError("Numba was loaded in the PyTorch process: the timings are not torch's own")
    return {"seconds": seconds, "torch": torch.__version__, "threads": torch.get_num_threads()}


def in_fresh_process(function, *args):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per model (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (Numba compiles, caches warm)")
    parser.add_argument("--warmup-seconds", type=float, default=1.0,
                        help="and keep warming up for at least this long (fast steps: many warm-up calls)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int,
                        help="PyTorch's threads (default: as many as tinygen's kernels ran on, so the ratio "
                             "compares implementations, not thread counts)")
    parser.add_argument("--no-torch", action="store_true", help="time tinygen only")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    threads = 1 if args.torch_threads is None else args.torch_threads
    # at least one warm-up step: the first one loads (or compiles) the Numba kernels
    if min(args.batch_size - 1, args.repeats, threads, args.warmup) < 1 or args.warmup_seconds < 0:
        parser.error("--batch-size must be >= 2 (BatchNorm), --repeats, --torch-threads and --warmup >= 1, "
                     "--warmup-seconds >= 0")
    with_torch = not args.no_torch and importlib.util.find_spec("torch") is not None

    load = os.getloadavg()[0]
    report = {"machine": machine.describe(), "load_average_1min": load, "torch": None, "torch_threads": None,
              "tinygen_threads": None,
              "batch_size": args.batch_size, "warmup": args.warmup, "warmup_seconds": args.warmup_seconds,
              "repeats": args.repeats, "seed": args.seed, "results": []}
    print(f"machine: {report['machine']}")
    print(f"load average (1 min) before the run: {load:.2f}" + (
        " -- other work is running: expect slow, noisy times (torch's spinning threads most)" if load > 0.5 else ""))
    print(f"batch {args.batch_size}; per model and side, in a fresh process: at least {args.warmup} warm-up steps "
          f"and {args.warmup_seconds:g} s, then the median of {args.repeats} steps", flush=True)
    for name in names:
        steps = (name, args.batch_size, args.warmup, args.repeats, args.warmup_seconds, args.seed)
        ours = in_fresh_process(measure_tinygen, *steps)
        report["tinygen_threads"] = ours["threads"]
        r = {"model": name, "parameters": ours["parameters"], "tinygen_seconds": ours["seconds"],
             "tinygen_median_s": float(np.median(ours["seconds"]))}
        line = f"{name}: tinygen {1e3 * r['tinygen_median_s']:.1f} ms ({ours['threads']} threads)"
        if with_torch:
            theirs = in_fresh_process(measure_torch, *steps, args.torch_threads or ours["threads"])
            report["torch"], report["torch_threads"] = theirs["torch"], theirs["threads"]
            r.update(torch_seconds=theirs["seconds"], torch_median_s=float(np.median(theirs["seconds"])))
            r["ratio"] = r["torch_median_s"] / r["tinygen_median_s"]
            line += f", torch {1e3 * r['torch_median_s']:.1f} ms ({theirs['threads']} threads), ratio {r['ratio']:.2f}"
        report["results"].append(r)
        print(line, flush=True)

    print(f"tinygen: {report['tinygen_threads']} threads; "
          + (f"torch: {report['torch']}, {report['torch_threads']} threads" if with_torch
             else "torch: not installed (or --no-torch): tinygen only"))
    print("\n| model | params | tinygen ms/step | torch ms/step | ratio (torch/tinygen, >1: tinygen faster) |")
    print("|---|---|---|---|---|")
    for r in report["results"]:
        theirs = f"{1e3 * r['torch_median_s']:.1f} | {r['ratio']:.2f}" if with_torch else "- | -"
        print(f"| {r['model']} | {r['parameters']:,} | {1e3 * r['tinygen_median_s']:.1f} | {theirs} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
