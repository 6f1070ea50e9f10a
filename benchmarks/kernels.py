"""How fast the kernels are, against this machine's peak, the NumPy reference and PyTorch.

    python -m benchmarks.kernels                                   # the full run (minutes)
    python -m benchmarks.kernels --quick                           # a smoke run: small batches
    python -m benchmarks.kernels --json kernels.json --png kernel_ratios.png

Measured in one run, in this order:
1. the machine: FMA peak (a Numba loop of independent multiply-add chains on every thread, in a
   fresh process compiled for the CPU's widest vectors: see `fma_peak`),
   BLAS sgemm GFLOP/s (NumPy's BLAS on a large float32 product: the practical ceiling a conv
   built on it can reach), and copy bandwidth (a large parallel array copy, bytes read + written);
2. PyTorch's side of every row, in a fresh spawned process (see the NOTE below): as many threads
   as Numba's pool has here (`tinygen_threads`), its own defaults otherwise;
3. one section per kernel family, each a list of rows (see `SECTIONS`), the median time over
   repeats after warm-ups, and the ratios time(numpy) / time(numba) and time(torch) / time(numba)
   (above 1: Numba is faster):
   - "conv": forward + backward-input + backward-weight of each layer shape c1..c6 / t5
     (issue 5), in float32, for the Numba kernels, the NumPy reference and PyTorch (autograd
     backward); GFLOP/s and % of the FMA peak;
   - "fused": GroupNorm and SiLU forward + backward on DDPM UNet activations, and Adam's update
     of a 1024 x 784 weight, for the Numba kernels, the NumPy reference and PyTorch (autograd
     backward; torch.optim.Adam.step); GB/s counting each array once, % of a parallel copy of
     arrays of one operand's size (as for the noise steps) and of the large copy;
   - "noise": the diffusion steps q_sample and p_sample_step (issue 5) on (128, 1, 28, 28),
     (64, 3, 64, 64) and (16, 3, 256, 256) float32 batches with per-sample coefficients, with z
     passed in and with z drawn inside (q_sample_noise, p_sample_step_noise; PyTorch: torch.randn
     and then the same expression on tensors); GB/s counting the bytes read and written once,
     % of a parallel copy of arrays of the same size (measured here, per shape), and Gaussian
     generation alone in ns per number (Numba's in-kernel `normal`, NumPy's float32
     `standard_normal`, `torch.randn`). Numba runs twice: into a preallocated `out=` (the
     kernel's own bandwidth: GB/s and % of copy) and allocating its result, as NumPy and PyTorch
     do (the ratios);
4. Numba compile time, separately: the first conv and noise-step calls of a fresh process with an
   empty cache, then of a second process reading the cache (`--quick` skips the empty-cache run).

The kernels are called through their modules (the same functions the dispatcher forwards to),
so TINYGEN_KERNELS=numpy or cupy, which would not change what is timed, is refused;
Numba's threading policy is tinygen's own (`tinygen.kernels.cpu_runtime`), exactly what a user
gets with no environment variables set. Benchmarks are not tests: nothing here asserts a time.

NOTE: this process never imports torch. Numba and torch loaded in one process share one GNU
OpenMP runtime, whichever came first, with its wait policy: with torch first, Numba's kernels
ran next to torch's spinning pool (see benchmarks/train_step.py for the measured cost), with
Numba first, torch ran on tinygen's passive pool, which is not torch's default either.
"""

import argparse
import functools
import importlib.util
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from benchmarks import machine
from tinygen import image
from tinygen.kernels import cpu_runtime, dispatch
from tinygen.kernels.conv2d import conv_output_size, conv_transpose_output_size, reference
from tinygen.kernels.diffusion import reference as noise_reference

# --- timing -------------------------------------------------------------------------------------


def median_time(fn, repeats, warmups=2):
    """Median wall time of fn() in seconds, after `warmups` untimed calls."""
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference_time(fn, repeats, warmups=2):
    """`median_time` of a NumPy-reference call, then a pause while OpenBLAS's threads stop spinning.

    The reference's products run on OpenBLAS's own pool, whose threads spin for about a tenth
    of a second after each product; a Numba kernel timed right after shared the cores with them
    (c1: 14.8 ms instead of 7.7). tinygen's kernels never start that pool
    (`tinygen.kernels.cpu_runtime`), so the pause gives each row's Numba timing the machine a user
    of the kernels gets.
    """
    seconds = median_time(fn, repeats, warmups)
    time.sleep(BLAS_SPIN_S)
    return seconds


BLAS_SPIN_S = 0.3


# --- the machine --------------------------------------------------------------------------------

def _fma_chains(numba, lanes):
    """A kernel whose threads each run `lanes` independent a = a*m + c chains.

    `lanes` is a compile-time constant (a closure variable), so LLVM unrolls the inner loop and
    keeps the chains in vector registers; fastmath "contract" lets it fuse the multiply and the
    add into one FMA instruction (the conv kernels themselves use fastmath=False).
    """

    @numba.njit(parallel=True, fastmath={"contract"})
    def kernel(iterations, out, m, c):
        for t in numba.prange(out.shape[0]):
            acc = np.empty(lanes, np.float32)
            for j in range(lanes):
                acc[j] = j * np.float32(1e-3)
            for _ in range(iterations):
                for j in range(lanes):
                    acc[j] = acc[j] * m + c
            total = np.float32(0)
            for j in range(lanes):
                total += acc[j]
            out[t] = total

    return kernel


@functools.cache
def _parallel_copy(numba):
    @numba.njit(parallel=True)
    def kernel(src, dst):
        chunk = (src.size + 63) // 64
        for i in numba.prange(64):
            lo, hi = min(src.size, i * chunk), min(src.size, (i + 1) * chunk)
            s, d = src[lo:hi], dst[lo:hi]  # step-less slices: known contiguous, so the copy vectorizes
            for k in range(hi - lo):
                d[k] = s[k]

    return kernel


def tinygen_threads():
    """The threads the Numba kernels run on here (NUMBA_NUM_THREADS, else every core): PyTorch gets
    as many, so that a ratio compares the kernels, not the thread counts. Without Numba, every core."""
    numba = cpu_runtime.load_numba()
    return numba.get_num_threads() if numba is not None else os.cpu_count()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: benchmarks/ is not installed
FMA_PROBE = """
import sys
from benchmarks.kernels import fma_peak_here
print(*fma_peak_here(bool(int(sys.argv[1])), int(sys.argv[2])))
"""


def fma_peak(quick):
    """{"gflops": float32 GFLOP/s of independent FMA chains on every Numba thread (best over chain
    counts), "vector_bits": the width of the FMA instructions that ran}, or None without Numba.

    Measured in a fresh process whose Numba compiles for 512-bit vectors where the CPU has AVX-512
    (`wide_vector_features`): LLVM's tuning for Intel's AVX-512 server cores prefers 256-bit
    vectors, so in this process the loop ran ymm FMAs at half those cores' peak, below what
    OpenBLAS's sgemm reaches (a "peak" of 227 GFLOP/s beside sgemm's 306 on a 2-core Xeon).
    """
    numba = cpu_runtime.load_numba()
    if numba is None:
        return None
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "")
                                                                   .split(os.pathsep) if p]))
    features = wide_vector_features()
    if features:
        env["NUMBA_CPU_FEATURES"] = features
    done = subprocess.run([sys.executable, "-c", FMA_PROBE, str(int(quick)), str(numba.get_num_threads())],
                          env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    gflops, bits = done.stdout.split()
    return dict(gflops=float(gflops), vector_bits=int(bits))


def wide_vector_features():
    """NUMBA_CPU_FEATURES for this CPU with LLVM's preference for 256-bit vectors turned off, where the
    CPU has AVX-512 and the user has not set NUMBA_CPU_FEATURES; else None (Numba's own choice)."""
    if os.environ.get("NUMBA_CPU_FEATURES"):
        return None
    import llvmlite.binding as llvm  # Numba's own dependency

    features = llvm.get_host_cpu_features()
    return features.flatten() + ",-prefer-256-bit" if features.get("avx512f") else None


def fma_peak_here(quick, threads):
    """(GFLOP/s, vector bits) of the FMA loop in this process, on `threads` Numba threads."""
    numba = cpu_runtime.load_numba()
    numba.set_num_threads(threads)
    out = np.zeros(threads, np.float32)
    m, c = np.float32(0.9999), np.float32(1e-4)
    best, bits = 0.0, 0
    for lanes in (64, 128, 256):  # enough chains to hide FMA latency, few enough for the registers
        kernel = _fma_chains(numba, lanes)
        kernel(1, out, m, c)  # compile
        iterations = int((2e9 if quick else 2e10) / lanes / threads)
        seconds = min(_timed(lambda: kernel(iterations, out, m, c)) for _ in range(3))
        gflops = 2 * lanes * iterations * threads / seconds / 1e9
        if gflops > best:
            best, bits = gflops, fma_vector_bits(kernel)
    return best, bits


def fma_vector_bits(kernel):
    """The widest register (512: zmm, 256: ymm, 128: xmm) of the x86 FMA instructions in a compiled
    kernel's assembly; 0 where it has none (or is not x86)."""
    asm = "\n".join(kernel.inspect_asm().values()).lower()
    widths = {"zmm": 512, "ymm": 256, "xmm": 128}
    found = [bits for register, bits in widths.items() if re.search(r"vfn?m(add|sub)\w*\s+[^\n]*%" + register, asm)]
    return max(found, default=0)


def sgemm_gflops(quick):
    n = 1024 if quick else 4096
    a, b = np.ones((n, n), np.float32), np.ones((n, n), np.float32)
    return 2 * n**3 / median_time(lambda: a @ b, 1 if quick else 3, warmups=1) / 1e9


def copy_bandwidth(quick):
    """GB/s of a large float32 copy, counting the bytes read and the bytes written."""
    n = (16 if quick else 64) * 2**20  # elements: 64 MiB (quick) or 256 MiB per array
    src, dst = np.ones(n, np.float32), np.empty(n, np.float32)
    candidates = [lambda: np.copyto(dst, src)]
    numba = cpu_runtime.load_numba()
    if numba is not None:
        copy = _parallel_copy(numba)
        copy(src[:64], dst[:64])  # compile
        candidates.append(lambda: copy(src, dst))
    return max(2 * src.nbytes / median_time(fn, 3 if quick else 5, warmups=1) / 1e9 for fn in candidates)


def same_size_copy_gbs(n, repeats, warmups):
    """GB/s (read + written) of copying n float32 numbers, the better of np.copyto and a parallel
    copy: the bandwidth ceiling of a kernel over arrays of n elements, in whichever cache they fit
    (the large copy's ceiling is DRAM's, which a kernel on cached arrays exceeds)."""
    src, dst = np.ones(n, np.float32), np.empty(n, np.float32)
    copies = [lambda: np.copyto(dst, src)]
    numba = cpu_runtime.load_numba()
    if numba is not None:
        copy = _parallel_copy(numba)
        copies.append(lambda: copy(src, dst))
    return max(8 * n / median_time(fn, repeats, warmups) / 1e9 for fn in copies)


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- conv section ----------------------------------------------------------------------------------

# (name, N, Cin, Cout, H=W, kernel, stride, padding, transposed), from issue 5.
CONV_SHAPES = [
    ("c1", 128, 1, 32, 28, 3, 1, 1, False),
    ("c2", 128, 32, 64, 14, 3, 1, 1, False),
    ("c3", 128, 64, 64, 7, 3, 1, 1, False),
    ("c4", 128, 64, 128, 14, 4, 2, 1, False),
    ("t5", 128, 64, 32, 7, 4, 2, 1, True),
    ("c6", 32, 64, 64, 32, 3, 1, 1, False),
]


def conv_problem(shape, batch_divisor=1, seed=0):
    """Arrays and parameters of one layer: x, w, grad_out (float32) and the conv arguments."""
    name, n, cin, cout, size, k, s, p, transposed = shape
    n = max(1, n // batch_divisor)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, size, size), dtype=np.float32)
    w = rng.standard_normal((cin, cout, k, k) if transposed else (cout, cin, k, k), dtype=np.float32)
    if transposed:
        out = conv_transpose_output_size(size, k, s, p, 0, 1)
        # Each input pixel scatters Cout*k*k products.
        flops = 2 * n * cin * size * size * cout * k * k
    else:
        out = conv_output_size(size, k, s, p, 1)
        flops = 2 * n * cout * out * out * cin * k * k
    g = rng.standard_normal((n, cout, out, out), dtype=np.float32)
    describe = f"{n}, {cin}→{cout}, {size}²→{out}², k{k} s{s} p{p}" + (" (transposed)" if transposed else "")
    return dict(name=name, x=x, w=w, g=g, args=((s, s), (p, p), (1, 1)), transposed=transposed,
                flops=3 * flops, describe=describe)  # 3: forward, backward-input, backward-weight


def tinygen_step(module, prob):
    """forward + backward-input + backward-weight with one kernel module (reference or cpu_numba)."""
    x, w, g, (stride, padding, dilation) = prob["x"], prob["w"], prob["g"], prob["args"]
    k = w.shape[2:]
    if prob["transposed"]:
        def step():
            module.conv_transpose2d_forward(x, w, stride, padding, (0, 0), dilation)
            module.conv_transpose2d_backward_input(g, w, x.shape[2:], stride, padding, dilation)
            module.conv_transpose2d_backward_weight(x, g, k, stride, padding, dilation)
    else:
        def step():
            module.conv2d_forward(x, w, stride, padding, dilation)
            module.conv2d_backward_input(g, w, x.shape[2:], stride, padding, dilation)
            module.conv2d_backward_weight(x, g, k, stride, padding, dilation)
    return step


def torch_step(torch, prob):
    """The same layer in PyTorch: functional forward, autograd backward with grad_out = g."""
    x = torch.from_numpy(prob["x"]).requires_grad_(True)
    w = torch.from_numpy(prob["w"]).requires_grad_(True)
    g = torch.from_numpy(prob["g"])
    stride, padding, dilation = prob["args"]
    conv = torch.nn.functional.conv_transpose2d if prob["transposed"] else torch.nn.functional.conv2d

    def step():
        x.grad = w.grad = None
        conv(x, w, stride=stride, padding=padding, dilation=dilation).backward(g)

    return step


def conv_torch_times(torch, quick, repeats, warmups):
    """PyTorch's seconds per layer shape (run in the PyTorch process)."""
    return {shape[0]: median_time(torch_step(torch, conv_problem(shape, batch_divisor=8 if quick else 1)), repeats,
                                  warmups) for shape in CONV_SHAPES}


def conv_section(args, peaks, theirs):
    """One row per layer shape: times, GFLOP/s, % of peak and the ratios (see the module docstring)."""
    from_numba = None
    if cpu_runtime.load_numba() is not None:  # else the Numba columns stay empty
        from tinygen.kernels.conv2d import cpu_numba as from_numba
    rows = []
    for shape in CONV_SHAPES:
        prob = conv_problem(shape, batch_divisor=8 if args.quick else 1)
        times = {"numpy": reference_time(tinygen_step(reference, prob), args.repeats, args.warmups)}
        if from_numba is not None:
            times["numba"] = median_time(tinygen_step(from_numba, prob), args.repeats, args.warmups)
        if theirs is not None:
            times["torch"] = theirs["conv"][prob["name"]]
        fast = times.get("numba")
        gflops = prob["flops"] / fast / 1e9 if fast else None
        rows.append(dict(
            name=prob["name"], shape=prob["describe"], gflop=prob["flops"] / 1e9,
            ms={k: 1e3 * v for k, v in times.items()},
            gflops=gflops,
            percent_of_peak=100 * gflops / peaks["fma_gflops"] if gflops and peaks.get("fma_gflops") else None,
            speedup_vs_numpy=times["numpy"] / fast if fast else None,
            ratio_vs_torch=times["torch"] / fast if fast and "torch" in times else None,
            torch_gflops=prob["flops"] / times["torch"] / 1e9 if "torch" in times else None,
        ))
        print(f"  {prob['name']}: " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in times.items()), flush=True)
    return rows


def conv_table(rows):
    lines = ["| layer | shape (N, Cin→Cout, H×W, k s p) | Numba ms | NumPy ms | PyTorch ms | Numba GFLOP/s "
             "| % of FMA peak | × NumPy | × PyTorch |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["name"], r["shape"], _fmt(r["ms"].get("numba")), _fmt(r["ms"]["numpy"]), _fmt(r["ms"].get("torch")),
            _fmt(r["gflops"]), _fmt(r["percent_of_peak"], "{:.0f}%"), _fmt(r["speedup_vs_numpy"], "{:.2f}×"),
            _fmt(r["ratio_vs_torch"], "{:.2f}×")))
    rest = [r["ratio_vs_torch"] for r in rows if r["name"] != "c1" and r["ratio_vs_torch"]]
    if rest:
        lines.append(f"\nc2–c6 geometric mean vs PyTorch: {_geomean(rest):.2f}×"
                     + (f"; c1 vs PyTorch: {rows[0]['ratio_vs_torch']:.2f}×" if rows[0]["ratio_vs_torch"] else ""))
    return "\n".join(lines)


# --- noise-step section ----------------------------------------------------------------------------

# (name prefix, shape) of the image batches, from issue 5.
NOISE_SHAPES = [("1", (128, 1, 28, 28)), ("2", (64, 3, 64, 64)), ("3", (16, 3, 256, 256))]
# (row name, function, z drawn inside, float32 arrays read + written per element)
NOISE_OPS = [("q", "q_sample", False, 3), ("p", "p_sample_step", False, 4),
             ("qr", "q_sample_noise", True, 3), ("pr", "p_sample_step_noise", True, 3)]
NOISE_SEED = 1234  # the generator's seed in every timed call
NOISE_REPEATS = 5  # noise rows: this many times --repeats (each call is short)


def noise_problem(shape, batch_divisor=1, seed=0):
    """x, eps, z (float32 images) and coef (3, B) float64 per-sample coefficients, as the model passes them."""
    shape = (max(1, shape[0] // batch_divisor),) + shape[1:]
    rng = np.random.default_rng(seed)
    x, eps, z = (rng.standard_normal(shape, dtype=np.float32) for _ in range(3))
    return dict(shape=shape, x=x, eps=eps, z=z, coef=rng.uniform(0.1, 0.9, (3, shape[0])))


def noise_step(module, function, prob, out=False):
    """One call of `function` of a kernel module (reference or cpu_numba); out=True: into preallocated outputs."""
    x, e, z, (c0, c1, c2) = prob["x"], prob["eps"], prob["z"], prob["coef"]
    buf = (np.empty_like(x), np.empty_like(x)) if out else (None, None)
    calls = {
        "q_sample": lambda: module.q_sample(x, e, c0, c1, out=buf[0]),
        "p_sample_step": lambda: module.p_sample_step(x, e, c0, c1, c2, z, out=buf[0]),
        "q_sample_noise": lambda: module.q_sample_noise(x, c0, c1, NOISE_SEED, out=buf if out else None),
        "p_sample_step_noise": lambda: module.p_sample_step_noise(x, e, c0, c1, c2, NOISE_SEED, out=buf[0]),
    }
    return calls[function]


def torch_noise_step(torch, function, prob):
    """The same step in PyTorch eager: the reference's expression on tensors, torch.randn for z."""
    x, e, z = (torch.from_numpy(prob[k]) for k in ("x", "eps", "z"))
    per_sample = (-1,) + (1,) * (x.dim() - 1)  # (B,) -> (B, 1, ..., 1)
    c0, c1, c2 = (torch.from_numpy(c.astype(np.float32)).view(per_sample) for c in prob["coef"])

    def q_sample_noise():
        eps = torch.randn(x.shape)
        return c0 * x + c1 * eps, eps

    calls = {
        "q_sample": lambda: c0 * x + c1 * e,
        "p_sample_step": lambda: c1 * (x - c0 * e) + c2 * z,
        "q_sample_noise": q_sample_noise,
        "p_sample_step_noise": lambda: c1 * (x - c0 * e) + c2 * torch.randn(x.shape),
    }
    return calls[function]


def noise_torch_times(torch, quick, repeats, warmups):
    """PyTorch's seconds per (op, shape) and per Gaussian number (run in the PyTorch process)."""
    steps, normal = {}, {}
    for key, shape in NOISE_SHAPES:
        prob = noise_problem(shape, batch_divisor=8 if quick else 1)
        for name, function, _, _ in NOISE_OPS:
            steps[name + key] = median_time(torch_noise_step(torch, function, prob), repeats, warmups)
        buf = torch.empty(prob["x"].size)
        normal[key] = median_time(lambda: torch.randn(buf.shape, out=buf), repeats, warmups) / buf.numel()
    return dict(steps=steps, normal=normal)


def noise_section(args, peaks, theirs):
    """One row per (op, shape): times in microseconds, GB/s, % of copy and the ratios; then one
    Gaussian-generation row per shape in ns per number (see the module docstring)."""
    from_numba = None
    if cpu_runtime.load_numba() is not None:  # else the Numba columns stay empty
        from tinygen.kernels.diffusion import cpu_numba as from_numba
    repeats = NOISE_REPEATS * args.repeats
    rows = []
    for key, shape in NOISE_SHAPES:
        prob = noise_problem(shape, batch_divisor=8 if args.quick else 1)
        n = prob["x"].size
        copy_gbs = same_size_copy_gbs(n, repeats, args.warmups)
        for name, function, rng, arrays in NOISE_OPS:
            times = {"numpy": reference_time(noise_step(noise_reference, function, prob), repeats, args.warmups)}
            if from_numba is not None:
                times["numba_out"] = median_time(noise_step(from_numba, function, prob, out=True), repeats,
                                                 args.warmups)
                times["numba"] = median_time(noise_step(from_numba, function, prob), repeats, args.warmups)
            if theirs is not None:
                times["torch"] = theirs["noise"]["steps"][name + key]
            nbytes = 4 * arrays * n
            gbs = nbytes / times["numba_out"] / 1e9 if "numba_out" in times else None
            fast = times.get("numba")
            rows.append(dict(
                kind="step", name=name + key, function=function, rng=rng, shape=prob["shape"], bytes=nbytes,
                us={k: 1e6 * v for k, v in times.items()}, gbs=gbs, copy_gbs=copy_gbs,
                percent_of_copy=100 * gbs / copy_gbs if gbs and copy_gbs else None,
                percent_of_peak_copy=100 * gbs / peaks["copy_gbs"] if gbs else None,
                speedup_vs_numpy=times["numpy"] / fast if fast else None,
                ratio_vs_torch=times["torch"] / fast if fast and "torch" in times else None,
                torch_gbs=nbytes / times["torch"] / 1e9 if "torch" in times else None,
            ))
            print(f"  {name + key} {function} {prob['shape']}: "
                  + ", ".join(f"{k} {1e6 * v:.0f} us" for k, v in times.items()), flush=True)
        buf = np.empty_like(prob["x"])
        rng = np.random.default_rng(0)
        ns = {"numpy": median_time(lambda: rng.standard_normal(buf.shape, dtype=np.float32, out=buf), repeats,
                                   args.warmups) / n * 1e9}
        if from_numba is not None:
            ns["numba"] = median_time(lambda: from_numba.normal(buf.shape, NOISE_SEED, out=buf), repeats,
                                      args.warmups) / n * 1e9
        if theirs is not None:
            ns["torch"] = theirs["noise"]["normal"][key] * 1e9
        rows.append(dict(kind="normal", name="n" + key, shape=prob["shape"], ns_per_number=ns))
        print(f"  normal {prob['shape']}: " + ", ".join(f"{k} {v:.2f} ns" for k, v in ns.items()), flush=True)
    return rows


def noise_table(rows):
    lines = ["| row | step | shape | Numba µs (out=) | Numba µs | NumPy µs | PyTorch µs | Numba GB/s | copy GB/s "
             "| % of copy | % of large copy | PyTorch GB/s | × NumPy | × PyTorch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "step":
            continue
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["name"], r["function"], "×".join(map(str, r["shape"])), _fmt(r["us"].get("numba_out"), "{:.0f}"),
            _fmt(r["us"].get("numba"), "{:.0f}"), _fmt(r["us"]["numpy"], "{:.0f}"),
            _fmt(r["us"].get("torch"), "{:.0f}"),
            _fmt(r["gbs"]), _fmt(r["copy_gbs"]), _fmt(r["percent_of_copy"], "{:.0f}%"),
            _fmt(r["percent_of_peak_copy"], "{:.0f}%"), _fmt(r["torch_gbs"]),
            _fmt(r["speedup_vs_numpy"], "{:.2f}×"), _fmt(r["ratio_vs_torch"], "{:.2f}×")))
    lines += ["", "| Gaussian numbers | shape | Numba `normal` ns/number | NumPy `standard_normal` (float32) | "
              "`torch.randn` |", "|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "normal":
            ns = r["ns_per_number"]
            lines.append(f"| {r['name']} | {'×'.join(map(str, r['shape']))} | {_fmt(ns.get('numba'), '{:.2f}')} "
                         f"| {_fmt(ns['numpy'], '{:.2f}')} | {_fmt(ns.get('torch'), '{:.2f}')} |")
    lines.append("\ncopy GB/s: arrays of the images' size, the better of np.copyto and a parallel copy; large copy: "
                 "the peaks' copy (arrays beyond the caches). GB/s count each array read or written once.")
    return "\n".join(lines)


# --- the fused kernels: GroupNorm, SiLU, Adam's update ---------------------------------------------

# (row, op, shape): group norm and SiLU on the default DDPM UNet's largest and smallest activations
# at batch 128 (32 and 128 channels, 8 groups); Adam on the MLP GAN's largest weight (1024 x 784).
FUSED_ROWS = [("g1", "group_norm", (128, 32, 28, 28)), ("g2", "group_norm", (128, 128, 7, 7)),
              ("s1", "silu", (128, 32, 28, 28)), ("s2", "silu", (128, 128, 7, 7)),
              ("a1", "adam", (1024 * 784,))]
FUSED_ARRAYS = {"group_norm": 5, "silu": 5, "adam": 7}  # arrays read or written once, forward + backward
GROUPS = 8


def fused_problem(op, shape, batch_divisor=1, seed=0):
    """The float32 arrays one row works on."""
    shape = (max(1, shape[0] // batch_divisor),) + shape[1:] if op != "adam" else shape
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape, dtype=np.float32) for _ in range(3)]
    if op == "group_norm":
        arrays += [rng.standard_normal(shape[1], dtype=np.float32) for _ in range(2)]  # weight, bias
    if op == "adam":
        arrays[2] = np.abs(arrays[2])  # v >= 0
    return shape, arrays


def fused_step(module, op, arrays):
    """Forward + backward (GroupNorm, SiLU) or one update (Adam) with one kernel module."""
    if op == "group_norm":
        x, g, _, w, b = arrays

        def step():
            _, mean, rstd = module.group_norm_forward(x, w, b, GROUPS, 1e-5)
            module.group_norm_backward(g, x, w, mean, rstd, GROUPS)
    elif op == "silu":
        x, g, _ = arrays

        def step():
            module.silu_forward(x)
            module.silu_backward(g, x)
    else:
        p, grad, v = arrays
        m = np.zeros_like(p)

        def step():
            module.adam_update(p, grad, m, v, 10, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    return step


def torch_fused_step(torch, op, arrays):
    """The same in PyTorch eager: F.group_norm / F.silu forward + autograd backward, or
    torch.optim.Adam's step (its default implementation) on one parameter."""
    if op == "adam":
        p = torch.nn.Parameter(torch.from_numpy(arrays[0].copy()))
        p.grad = torch.from_numpy(arrays[1])
        optimizer = torch.optim.Adam([p], lr=1e-3)
        return optimizer.step
    x = torch.from_numpy(arrays[0]).requires_grad_()
    g = torch.from_numpy(arrays[1])
    if op == "silu":
        def step():
            x.grad = None  # else backward adds into the last call's x.grad: one more pass than ours
            torch.nn.functional.silu(x).backward(g)
        return step
    w, b = (torch.from_numpy(a).requires_grad_() for a in arrays[3:])

    def step():
        x.grad = w.grad = b.grad = None  # as above: a fresh gradient each call, no accumulation
        torch.nn.functional.group_norm(x, GROUPS, w, b).backward(g)
    return step


def fused_torch_times(torch, quick, repeats, warmups):
    return {row: median_time(torch_fused_step(torch, op, fused_problem(op, shape, 8 if quick else 1)[1]),
                             repeats, warmups)
            for row, op, shape in FUSED_ROWS}


def fused_section(args, peaks, theirs):
    """One row per (op, shape): times in microseconds, GB/s (each array once), % of a copy of arrays
    of the same size and of the large copy, the ratios to the NumPy reference and to PyTorch."""
    from tinygen.kernels.normalization import reference as norm_reference
    from tinygen.kernels.optim import reference as optim_reference

    modules = {"numpy": {"group_norm": norm_reference, "silu": norm_reference, "adam": optim_reference}}
    if cpu_runtime.load_numba() is not None:
        from tinygen.kernels.normalization import cpu_numba as norm_numba
        from tinygen.kernels.optim import cpu_numba as optim_numba

        modules["numba"] = {"group_norm": norm_numba, "silu": norm_numba, "adam": optim_numba}
    rows = []
    for row, op, shape in FUSED_ROWS:
        shape, arrays = fused_problem(op, shape, 8 if args.quick else 1)
        times = {name: (reference_time if name == "numpy" else median_time)(fused_step(m[op], op, arrays),
                                                                            args.repeats, args.warmups)
                 for name, m in modules.items()}
        if theirs is not None:
            times["torch"] = theirs["fused"][row]
        nbytes = 4 * FUSED_ARRAYS[op] * int(np.prod(shape))
        fast = times.get("numba")
        gbs = nbytes / fast / 1e9 if fast else None
        copy_gbs = same_size_copy_gbs(int(np.prod(shape)), args.repeats, args.warmups)
        rows.append(dict(name=row, op=op, shape=shape, bytes=nbytes, us={k: 1e6 * v for k, v in times.items()},
                         gbs=gbs, copy_gbs=copy_gbs, percent_of_copy=100 * gbs / copy_gbs if gbs else None,
                         percent_of_peak_copy=100 * gbs / peaks["copy_gbs"] if gbs else None,
                         speedup_vs_numpy=times["numpy"] / fast if fast else None,
                         ratio_vs_torch=times["torch"] / fast if fast and "torch" in times else None))
        print(f"  {row} {op} {shape}: " + ", ".join(f"{k} {1e6 * v:.0f} us" for k, v in times.items()), flush=True)
    return rows


def fused_table(rows):
    lines = ["| row | op (forward + backward; Adam: one update) | shape | Numba µs | NumPy µs | PyTorch µs "
             "| Numba GB/s | copy GB/s | % of copy | % of large copy | × NumPy | × PyTorch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["name"], r["op"], "×".join(map(str, r["shape"])), _fmt(r["us"].get("numba"), "{:.0f}"),
            _fmt(r["us"]["numpy"], "{:.0f}"), _fmt(r["us"].get("torch"), "{:.0f}"), _fmt(r["gbs"]),
            _fmt(r["copy_gbs"]), _fmt(r["percent_of_copy"], "{:.0f}%"), _fmt(r["percent_of_peak_copy"], "{:.0f}%"), _fmt(r["speedup_vs_numpy"], "{:.2f}×"),
            _fmt(r["ratio_vs_torch"], "{:.2f}×")))
    lines.append("\nGB/s: forward + backward arrays (x, y; dy, x, dx) or Adam's (p, g, m, v read; p, m, v "
                 "written), each counted once; copy GB/s: arrays of one operand's size, as for the noise steps.")
    return "\n".join(lines)


# Sections run in this order: (name, rows function, table function, PyTorch times function).
SECTIONS = [("conv", conv_section, conv_table, conv_torch_times),
            ("noise", noise_section, noise_table, noise_torch_times),
            ("fused", fused_section, fused_table, fused_torch_times)]


# --- PyTorch, in a process of its own ---------------------------------------------------------------


def torch_times(quick, repeats, warmups, threads):
    """Run in a fresh spawned process: PyTorch's times for every section, its version and threads."""
    import torch  # here only: the tinygen process never imports it

    torch.set_num_threads(threads)
    result = {name: torch_section(torch, quick, repeats * (NOISE_REPEATS if name == "noise" else 1), warmups)
              for name, _, _, torch_section in SECTIONS}
    if cpu_runtime._numba is not None:  # nothing above may start Numba's pool (see the module docstring's NOTE)
        raise RuntimeError("Numba was loaded in the PyTorch process: the timings are not torch's own")
    return dict(result, torch=torch.__version__, threads=torch.get_num_threads())


def in_fresh_process(function, *args):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# --- compile time, in fresh processes ------------------------------------------------------------

COMPILE_PROBE = """
import time
start = time.perf_counter()
import numpy as np
from tinygen.kernels.conv2d import cpu_numba as k
imported = time.perf_counter()
def first(cin, cout):
    x = np.ones((2, cin, 8, 8), np.float32); w = np.ones((cout, cin, 3, 3), np.float32)
    t = time.perf_counter()
    y = k.conv2d_forward(x, w, (1, 1), (1, 1), (1, 1))
    k.conv2d_backward_input(y, w, (8, 8), (1, 1), (1, 1), (1, 1))
    k.conv2d_backward_weight(x, y, (3, 3), (1, 1), (1, 1), (1, 1))
    return time.perf_counter() - t
def first_noise_steps():
    from tinygen.kernels.diffusion import cpu_numba as d
    x, c = np.ones((2, 1, 8, 8), np.float32), np.full(2, 0.5)
    t = time.perf_counter()
    d.q_sample_noise(x, c, c, 1)
    d.p_sample_step(x, x, c, c, c, x)
    return time.perf_counter() - t
print(imported - start, first(4, 8), first(1, 8), first_noise_steps())
"""


def compile_times(quick):
    """Seconds for import, the first conv fwd+bwd (gemm path, then direct path) and the first noise
    steps (q_sample_noise, then p_sample_step: both diffusion kernels, float32), per process."""
    if cpu_runtime.load_numba() is None:
        return None
    result = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = ["cached"] if quick else ["empty cache", "cached"]
        if quick:  # fill the cache untimed
            subprocess.run([sys.executable, "-c", COMPILE_PROBE], env=env, check=True, capture_output=True)
        for run in runs:
            done = subprocess.run([sys.executable, "-c", COMPILE_PROBE], env=env, check=True,
                                  capture_output=True, text=True)
            imported, gemm, direct, noise = map(float, done.stdout.split())
            result[run] = dict(import_s=imported, first_gemm_conv_s=gemm, first_direct_conv_s=direct,
                               first_noise_steps_s=noise)
    return result


# --- the chart -------------------------------------------------------------------------------------

# A 3x5 pixel font, just for the chart's labels.
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "x": "000101010101000",
    "c": "000111100100111", "t": "010111010010011", " ": "000000000000000",
    "n": "000110101101101", "u": "000101101101111", "m": "000111111101101", "p": "000111101111100",
    "y": "000101111001111", "o": "000111101101111", "r": "000111100100100", "h": "100100111101101",
    "q": "000111101111001",
}
NUMPY_COLOUR, TORCH_COLOUR = (70, 130, 200), (220, 120, 40)


def _text(img, x, y, s, scale=2, colour=(0, 0, 0)):
    for ch in s:
        glyph = _GLYPHS.get(ch, _GLYPHS[" "])
        for i, bit in enumerate(glyph):
            if bit == "1":
                r, c = divmod(i, 3)
                img[y + r * scale : y + (r + 1) * scale, x + c * scale : x + (c + 1) * scale] = colour
        x += 4 * scale


def ratio_chart(rows, path):
    """Bars of time(numpy)/time(numba) (blue) and time(torch)/time(numba) (orange) per row (the conv
    layers, then the noise steps: q/p without, qr/pr with the generator inside, 1-3 the shapes), on
    a log2 axis from 1/8 to 32; the black line is 1× (equal speed): a bar above it is Numba winning."""
    height, top, per_row, bar = 260, 20, 70, 24
    img = np.full((height + 40, 40 + per_row * len(rows), 3), 255, np.uint8)
    lo, hi = -3.0, 5.0  # log2 of the axis ends

    def y_of(ratio):
        return int(top + (hi - np.clip(np.log2(ratio), lo, hi)) / (hi - lo) * (height - top))

    for v in (0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32):
        img[y_of(v), 30:, :] = (0, 0, 0) if v == 1 else (220, 220, 220)
        _text(img, 0, y_of(v) - 5, f"{v:g}".lstrip("0")[:3], scale=2 if v >= 1 else 1)
    for j, (label, colour) in enumerate((("numpy", NUMPY_COLOUR), ("torch", TORCH_COLOUR))):
        x = img.shape[1] - 150 + j * 75  # legend: what each bar's time is divided by
        img[4:14, x : x + 10] = colour
        _text(img, x + 14, 4, label)
    for i, r in enumerate(rows):
        x0 = 40 + i * per_row
        for j, (key, colour) in enumerate((("speedup_vs_numpy", NUMPY_COLOUR), ("ratio_vs_torch", TORCH_COLOUR))):
            if r.get(key):
                y1, y0 = sorted((y_of(r[key]), y_of(1)))
                img[y1 : max(y0, y1 + 1), x0 + j * (bar + 4) : x0 + j * (bar + 4) + bar] = colour
        _text(img, x0 + 12, height + 12, r["name"], scale=3)
    image.save_png(path, img)


# --- main ------------------------------------------------------------------------------------------


def _fmt(v, pattern="{:.1f}"):
    return "–" if v is None else pattern.format(v)


def _geomean(values):
    return float(np.exp(np.mean(np.log(values))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batches / 8, one repeat: checks the script runs")
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement (default 7, --quick 1)")
    parser.add_argument("--warmups", type=int, default=2,
                        help="untimed calls before timing (default 2; at least 1: the first call loads or compiles)")
    parser.add_argument("--json", help="write every number to this JSON file")
    parser.add_argument("--png", help="draw the ratio chart into this PNG file")
    args = parser.parse_args(argv)
    args.repeats = (1 if args.quick else 7) if args.repeats is None else args.repeats
    if args.repeats < 1 or args.warmups < 1:  # a first call times Numba loading (or compiling) its kernels
        parser.error(f"--repeats and --warmups must be >= 1, not {args.repeats} and {args.warmups}")
    if dispatch.requested_kernels() not in ("auto", "numba"):  # the rows call the modules, not the dispatcher
        parser.error(f"this benchmark times the Numba kernels beside the NumPy reference whatever "
                     f"TINYGEN_KERNELS says; with TINYGEN_KERNELS={dispatch.requested_kernels()} its header "
                     f"would name kernels it does not time: unset TINYGEN_KERNELS")

    info = dispatch.kernel_info()
    description = machine.describe() + f"; BLAS products: {info['blas']}"
    load = os.getloadavg()[0]
    print(f"machine: {description}")
    print(f"load average (1 min) before the run: {load:.2f}"
          + (" -- other work is running: expect slow, noisy times" if load > 0.5 else ""))
    fma = fma_peak(args.quick) or {}
    peaks = dict(fma_gflops=fma.get("gflops"), fma_vector_bits=fma.get("vector_bits"),
                 blas_sgemm_gflops=sgemm_gflops(args.quick), copy_gbs=copy_bandwidth(args.quick))
    print(f"peaks: FMA {_fmt(peaks['fma_gflops'])} GFLOP/s (float32, all threads, "
          f"{_fmt(peaks['fma_vector_bits'], '{}')}-bit FMAs); BLAS sgemm "
          f"{peaks['blas_sgemm_gflops']:.1f} GFLOP/s (practical ceiling); copy {peaks['copy_gbs']:.1f} GB/s "
          f"(read + write)", flush=True)
    theirs = None
    if importlib.util.find_spec("torch") is not None:
        threads = tinygen_threads()
        print(f"PyTorch, in a fresh process, {threads} threads (as Numba's) ...", flush=True)
        theirs = in_fresh_process(torch_times, args.quick, args.repeats, args.warmups, threads)
        description += f"; PyTorch {theirs['torch']}, {theirs['threads']} threads (own process)"

    results = dict(machine=description, kernel_info=info, torch=None if theirs is None else theirs["torch"],
                   load_average_1min=load, quick=args.quick, repeats=args.repeats, warmups=args.warmups,
                   peaks=peaks, sections={})
    tables = []
    for name, section, table, _ in SECTIONS:
        print(f"{name}:", flush=True)
        rows = section(args, peaks, theirs)
        results["sections"][name] = rows
        tables.append(table(rows))
    results["compile"] = compile_times(args.quick)

    print()
    print(f"machine: {description}")
    print(f"peaks: FMA {_fmt(peaks['fma_gflops'])} GFLOP/s, BLAS sgemm {peaks['blas_sgemm_gflops']:.1f} GFLOP/s, "
          f"copy {peaks['copy_gbs']:.1f} GB/s; medians of {args.repeats} after {args.warmups} warm-ups"
          + f" ({NOISE_REPEATS * args.repeats} for the noise rows)" + (" (--quick: batches / 8)" if args.quick else ""))
    for text in tables:
        print()
        print(text)
    if results["compile"]:
        print()
        for run, t in results["compile"].items():
            print(f"compile, {run}: import {t['import_s']:.2f} s, first conv fwd+bwd {t['first_gemm_conv_s']:.2f} s "
                  f"(im2col + BLAS), then {t['first_direct_conv_s']:.2f} s (direct loops); first noise steps "
                  f"{t['first_noise_steps_s']:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.png:
        steps = [r for r in results["sections"]["noise"] if r["kind"] == "step"]
        ratio_chart(results["sections"]["conv"] + steps, args.png)
    return results


if __name__ == "__main__":
    main()
