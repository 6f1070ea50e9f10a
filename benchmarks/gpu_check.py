"""The one run a GPU machine needs: the GPU tests, then tinygen's CUDA kernels and DDPM against the NumPy
reference on CuPy and against PyTorch (cuDNN), in one go, within a wall-clock budget.

    python benchmarks/gpu_check.py                 # on a GPU machine: about 6-8 minutes (--budget 480)
    python benchmarks/gpu_check.py --dry-run       # anywhere: NumPy in place of CuPy, tiny shapes, < 4 min

In order, each part skipped with a note once the budget (seconds, counted from the start) runs short:
1. the machine: GPU, CuPy, CUDA, and how tinygen was made importable;
2. the GPU tests in subprocesses (pytest -m gpu: first tests/kernels, the CUDA kernels against
   the reference, then the rest, the device-parametrized suites on ``cuda``), their summaries;
   then the CUDA kernel tests again under compute-sanitizer (when one is found: --sanitizer, PATH,
   the CUDA toolkit, NVIDIA's wheels; else a line saying where it looked), racecheck then
   memcheck, CuPy's memory pool off, sharing at most --sanitizer-budget seconds (150) of what the
   budget leaves: each tool's error count and its reports, grouped. memcheck catches reads and
   writes out of an array's bounds and misaligned ones; racecheck checks shared memory only, which
   tinygen's kernels do not use, so its zero says nothing about a race on global memory (a plain
   `+=` where atomicAdd belongs): the emulated GPU's tests catch those (tests/fake_cupy.py);
3. the kernels, each the median of repeated calls timed with CUDA events, beside the same work
   done by the NumPy reference on CuPy arrays (the kernels' `reference.py` through ``xp``) and by
   PyTorch eager:
   - "noise": the fused DDPM reverse step with its Gaussian noise drawn in the kernel
     (p_sample_step_noise), the forward noising (q_sample_noise), the step with z given and the
     generator alone (normal), on 256x3x256x256 float32, in GB/s (bytes read and written once)
     and in % of a device-to-device copy measured in the same run (and of the nominal 2.97 TB/s
     of an H100); PyTorch: the same expression with torch.randn_like;
   - "conv": forward + backward-input + backward-weight of the MNIST layers c1..c6 / t5, in
     TFLOP/s; PyTorch: F.conv2d / F.conv_transpose2d and autograd, cuDNN with TF32 off (full
     float32, as tinygen's products), and, for information, with TF32 on (PyTorch's default);
4. the DDPM (tinygen's default UNet): one training step at batch 128 (data on the GPU), and
   1000-step ancestral sampling of 256 images (the per-step time of a short run first; the full
   run when the budget allows it, else that estimate, flagged "est."), beside PyTorch twins
   (benchmarks/torch_twins.py: the same networks with the weights copied, moved to the GPU).
PyTorch runs in a subprocess (`--torch-worker`), after tinygen's kernels, so the two never share
the GPU at the same time. Targets (the issue's): noise step >= 80% of copy bandwidth with the RNG
included; conv fwd+bwd within 2x of cuDNN; DDPM train step and sampling no slower than PyTorch.

The printed report and a JSON of every number go to --out DIR (default: $OUT, when set) as
gpu_check.txt and gpu_check.json. A part that fails prints its error and the run goes on.

On a bare machine: tinygen needs no install (when `tinygen.kernels` cannot be imported, a folder of
symbolic links lays the checkout out as the installed package, first on the path of this process
and of its subprocesses), and pytest and hypothesis, when missing, are installed from the wheels in
.ci/gpu-wheels (no network) into a temporary folder.

--dry-run runs the same code on this CPU machine with tests/fake_cupy.py as CuPy (NumPy arrays;
the CUDA kernels compiled for the CPU with g++ and run as an emulated grid) and PyTorch on the
CPU, on tiny shapes: it checks the control flow, the budget and the table, not the speed.
"""

import argparse
import contextlib
import glob
import importlib.util
import io
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELS = os.path.join(ROOT, ".ci", "gpu-wheels")
COPY_NOMINAL = 2.97e12  # bytes/s: an H100's measured device copy (read + written), GPU-NOTES.md
FP32_PEAK = 51e12  # FLOP/s: an H100's measured float32 matmul (TF32: about 410), GPU-NOTES.md
NOISE_TARGET = 0.80  # the fused noise step: at least 80% of copy bandwidth, RNG included
CONV_TARGET = 2.0  # conv fwd+bwd: at most 2x cuDNN's time

# (name, N, Cin, Cout, size, kernel, stride, padding, transposed): the MNIST layers of the issue
CONV_SHAPES = [
    ("c1", 128, 1, 32, 28, 3, 1, 1, False),
    ("c2", 128, 32, 64, 14, 3, 1, 1, False),
    ("c3", 128, 64, 64, 7, 3, 1, 1, False),
    ("c4", 128, 64, 128, 14, 4, 2, 1, False),
    ("t5", 128, 64, 32, 7, 4, 2, 1, True),
    ("c6", 32, 64, 64, 32, 3, 1, 1, False),
]


# --- the settings of a run ----------------------------------------------------------------------------


def settings(dry_run):
    """Shapes and repeat counts: the issue's on a GPU, tiny ones for the dry run."""
    if dry_run:
        return dict(noise_shape=(4, 3, 16, 16), conv_divisor=32, repeats=3, warmup=1, fused_shape=(4, 8, 6, 6), fused_groups=2,
                    ddpm=dict(channels=(8, 16), groups=4), train_batch=4, train_steps=2,
                    sample_n=4, sample_T=5, probe_T=3)
    return dict(noise_shape=(256, 3, 256, 256), conv_divisor=1, repeats=20, warmup=3, fused_shape=(128, 64, 28, 28),
                fused_groups=8,
                ddpm=dict(), train_batch=128, train_steps=20, sample_n=256, sample_T=1000, probe_T=20)


class Budget:
    """Seconds left of the run's wall-clock budget."""

    def __init__(self, seconds):
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self):
        return self.seconds - (time.perf_counter() - self.start)

    def elapsed(self):
        return time.perf_counter() - self.start


class Tee(io.TextIOBase):
    """stdout, also kept in memory for gpu_check.txt."""

    def __init__(self, stream):
        self.stream, self.kept = stream, io.StringIO()

    def write(self, text):
        self.stream.write(text)
        self.stream.flush()
        self.kept.write(text)
        return len(text)


# --- making tinygen, pytest and hypothesis importable on a bare machine ---------------------------------


def importable_tinygen():
    """Make `import tinygen` (with tinygen.kernels) work here and in subprocesses; returns (how, path
    entries to put first for subprocesses)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    try:
        if importlib.util.find_spec("tinygen.kernels") is not None:
            import tinygen

            return f"tinygen from {os.path.dirname(tinygen.__file__)}", []
    except ImportError:
        pass
    for name in [m for m in sys.modules if m == "tinygen" or m.startswith("tinygen.")]:
        del sys.modules[name]
    # The checkout laid out as the installed package: tinygen/* and tinygen/kernels -> kernels/
    shadow = tempfile.mkdtemp(prefix="tinygen-shadow-")
    package = os.path.join(shadow, "tinygen")
    os.mkdir(package)
    for entry in os.listdir(os.path.join(ROOT, "tinygen")):
        os.symlink(os.path.join(ROOT, "tinygen", entry), os.path.join(package, entry))
    os.symlink(os.path.join(ROOT, "kernels"), os.path.join(package, "kernels"))
    sys.path.insert(0, shadow)
    return f"tinygen from the checkout, through links in {shadow} (not installed)", [shadow]


def importable_test_tools():
    """Path entries that give subprocesses pytest and hypothesis (installed from .ci/gpu-wheels if
    missing); (entries, note) or (None, why not)."""
    missing = [m for m in ("pytest", "hypothesis") if importlib.util.find_spec(m) is None]
    if not missing:
        return [], "pytest and hypothesis installed"
    if not os.path.isdir(WHEELS):
        return None, f"{', '.join(missing)} not installed, and no wheels in {WHEELS}"
    target = tempfile.mkdtemp(prefix="tinygen-test-tools-")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", WHEELS,
                             "--target", target, "pytest", "hypothesis"], capture_output=True, text=True)
    if result.returncode != 0:
        wheels = [os.path.join(WHEELS, w) for w in sorted(os.listdir(WHEELS)) if w.endswith(".whl")]
        return wheels, f"pip could not install the wheels ({result.stderr.strip()[-200:]}); importing them as zips"
    return [target], f"{', '.join(missing)} installed from {WHEELS} into {target}"


def subprocess_env(extra_paths, **extra):
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([*extra_paths, ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


# --- timing ----------------------------------------------------------------------------------------------


def gpu_time(xp, fn, repeats, warmup, budget=None):
    """Median seconds of fn() over `repeats` calls after `warmup`, each timed by CUDA events around it
    (fewer repeats when one call is long: at most ~5 s of repeats, and within the budget)."""
    for _ in range(warmup):
        fn()
    xp.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start, end = xp.cuda.Event(), xp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(xp.cuda.get_elapsed_time(start, end) / 1e3)
        if sum(times) > 5 or (budget is not None and budget.left() < 30):
            break
    return statistics.median(times)


def wall_time(fn, repeats, warmup, sync, budget=None):
    """Median wall seconds of fn() (which waits for its own results, or `sync` does)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if sum(times) > 10 or (budget is not None and budget.left() < 30):
            break
    return statistics.median(times)


def attempt(rows, section, name, fn):
    """Run one measurement; a failure becomes a row holding its error, and the run goes on."""
    try:
        row = fn()
    except Exception as err:  # noqa: BLE001  (one failing row must not end a one-shot GPU run)
        row = dict(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=4))
        print(f"  {section} {name}: FAILED: {row['error']}")
    row.update(section=section, name=name)
    rows.append(row)
    return row


# --- 2. the GPU tests ---------------------------------------------------------------------------------------


def pytest_args(paths, first_paths):
    """pytest's arguments for the GPU tests in `paths`.

    `first_paths` go before the checkout on the test process's path (pyproject's ``pythonpath``
    puts the checkout first, whose tinygen/ lacks tinygen/kernels when tinygen is not installed).
    """
    args = ["-q", "-m", "gpu", "-p", "no:cacheprovider", "-rfE", "--tb=short", *paths]
    if first_paths:
        args[:0] = ["-o", "pythonpath=" + " ".join([*first_paths, ".", "tests"])]
    return args


def run_capped(cmd, seconds, env):
    """cmd run in the checkout for at most `seconds`: (its stdout and stderr, its return code or
    "timeout"). A command past its time is killed with every process it started (pytest under
    compute-sanitizer is two processes, and the target would go on using the GPU)."""
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", start_new_session=True) as process:
        try:
            return process.communicate(timeout=seconds)[0], process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.communicate()[0] + f"\n(stopped after {seconds:.0f} s: the budget)", "timeout"


def pytest_summary(output):
    """pytest's last summary line in `output` (else its last line), and its FAILED/ERROR lines."""
    lines = [line for line in output.splitlines() if line.strip()]
    summary = next((line for line in reversed(lines) if " in " in line and ("passed" in line or "failed" in line
                                                                              or "error" in line or "skipped" in line)),
                   lines[-1] if lines else "(no output)")
    return summary.strip("= "), [line for line in lines if line.startswith(("FAILED", "ERROR"))]


def run_tests(seconds, paths, env, first_paths, log=None):
    """pytest -m gpu on `paths` in a subprocess: its summary and failures, at most `seconds` long;
    its whole output also goes to the file `log` (when given), a run stopped by the budget included."""
    cmd = [sys.executable, "-m", "pytest", *pytest_args(paths, first_paths)]
    t0 = time.perf_counter()
    output, rc = run_capped(cmd, max(10, seconds), env)
    if log:
        with open(log, "w") as f:
            f.write(" ".join(cmd) + "\n" + output)
    lines = [line for line in output.splitlines() if line.strip()]
    summary, failures = pytest_summary(output)
    print(f"  pytest -m gpu {' '.join(paths)}: {summary}  ({time.perf_counter() - t0:.0f} s)")
    for line in failures[:30]:
        print(f"    {line[:200]}")
    if rc not in (0, 5) and not failures:  # 5: nothing collected
        for line in lines[-15:]:
            print(f"    | {line[:200]}")
    return dict(paths=paths, rc=rc, summary=summary, failures=failures,
                seconds=time.perf_counter() - t0, tail=lines[-40:])


# --- 2b. the CUDA kernel tests under compute-sanitizer --------------------------------------------------------

MIN_TOOL_SECONDS = 20  # a tool with less time left is skipped: CuPy's import and compiles alone take seconds
SANITIZER_TOOLS = ("racecheck", "memcheck")  # racecheck costs little without shared memory: first
# Where a CUDA toolkit keeps compute-sanitizer, after PATH, $CUDA_HOME and $CUDA_PATH and CuPy's CUDA path
TOOLKIT_DIRS = ["/usr/local/cuda/bin", "/usr/local/cuda-*/bin", "/opt/cuda/bin"]
# ... and NVIDIA's pip wheels, under a site-packages folder
WHEEL_DIRS = [os.path.join("nvidia", "cu13", "bin"), os.path.join("nvidia", "cuda_nvcc", "bin")]
# pytest with CuPy's memory pool off: each array its own cudaMalloc, whose end memcheck knows (in the
# pool, a kernel that runs past an array's end lands in the pool's next block unseen)
NO_POOL_PYTEST = "import sys, cupy, pytest; cupy.cuda.set_allocator(None); sys.exit(pytest.main(sys.argv[1:]))"
_SANITIZER_LINE = re.compile(r"^========= (\S.*)$", re.M)
_NOT_A_REPORT = re.compile(r"COMPUTE-SANITIZER|(ERROR|RACECHECK|LEAK) SUMMARY|Target application|Process ID|"
                           r"errors? (were|was) not printed|This tool|Please use")


def find_sanitizer(explicit=None, environ=None, site_dirs=None):
    """The compute-sanitizer to run: `explicit` (a path, checked), else the first found on PATH, in
    $CUDA_HOME/bin or $CUDA_PATH/bin, CuPy's CUDA path, TOOLKIT_DIRS, or NVIDIA's wheels under
    `site_dirs` (default sys.path). Returns (path, None), or (None, where it looked)."""
    environ = os.environ if environ is None else environ
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit, None
        return None, f"--sanitizer {explicit} is not an executable file"
    name = "compute-sanitizer"
    found = shutil.which(name, path=environ.get("PATH", ""))
    if found:
        return found, None
    dirs = [os.path.join(environ[v], "bin") for v in ("CUDA_HOME", "CUDA_PATH") if environ.get(v)]
    cuda_path = cupy_cuda_path()
    if cuda_path:
        dirs.append(os.path.join(cuda_path, "bin"))
    for pattern in TOOLKIT_DIRS:
        versions = sorted(glob.glob(pattern), key=lambda d: [int(n) for n in re.findall(r"\d+", d)], reverse=True)
        dirs += versions if "*" in pattern else [pattern]  # the newest toolkit first
    dirs += [os.path.join(site, sub) for site in (sys.path if site_dirs is None else site_dirs) if site
             for sub in WHEEL_DIRS]
    for d in dirs:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path, None
    return None, f"not on PATH, nor in $CUDA_HOME, $CUDA_PATH, CuPy's CUDA path, {', '.join(TOOLKIT_DIRS)}, or " \
                 f"NVIDIA's wheels ({' or '.join(WHEEL_DIRS)} under site-packages)"


def cupy_cuda_path():
    """CuPy's idea of the CUDA toolkit's folder, or None (no CuPy, or it knows none)."""
    try:
        import cupy

        return cupy.cuda.get_cuda_path()
    except Exception:  # noqa: BLE001  (an old CuPy without it, or none at all: look elsewhere)
        return None


def sanitizer_command(sanitizer, tool, log_file, paths, first_paths):
    """compute-sanitizer with `tool` around pytest -m gpu on `paths` (CuPy's pool off); its report goes
    to `log_file`. Only the pytest process is instrumented, and CUDA API calls that return an error
    are not counted (CuPy probes some), only the kernels' accesses and the hardware's exceptions."""
    return [sanitizer, "--tool", tool, "--target-processes", "application-only", "--report-api-errors", "no",
            "--print-limit", "100", "--log-file", log_file,
            sys.executable, "-c", NO_POOL_PYTEST, *pytest_args(paths, first_paths)]


def parse_sanitizer_log(text):
    """What a compute-sanitizer report says: errors and warnings (racecheck's hazards, or memcheck's
    ERROR SUMMARY; None where no summary was written: a run cut short), and the reports, each headline
    with addresses blanked, counted: {"errors", "warnings", "reports": {headline: count}}."""
    races = re.findall(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?, (\d+) warnings?\)", text)
    summaries = re.findall(r"ERROR SUMMARY: (\d+) errors?", text)
    if races:
        errors, warnings = sum(int(e) for e, _ in races), sum(int(w) for _, w in races)
    elif summaries:
        errors, warnings = sum(int(n) for n in summaries), 0
    else:
        errors = warnings = None
    reports = {}
    for line in _SANITIZER_LINE.findall(text):
        if not _NOT_A_REPORT.search(line):
            headline = re.sub(r"0x[0-9a-fA-F]+", "0x..", line.strip())
            reports[headline] = reports.get(headline, 0) + 1
    return dict(errors=errors, warnings=warnings, reports=reports)


def sanitizer_version(sanitizer):
    """compute-sanitizer's "Version ..." line."""
    try:
        output = subprocess.run([sanitizer, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return f"(--version failed: {err})"
    return next((line.strip() for line in output.splitlines() if "Version" in line), output.strip()[:80])


def run_sanitizer(sanitizer, seconds, paths, env, first_paths, folder, tools=SANITIZER_TOOLS):
    """The tests in `paths` under each of `tools` in turn, sharing `seconds`: per tool its errors and
    warnings, reports, pytest's summary, seconds; the reports are kept in `folder` as
    sanitizer_<tool>.log. Prints a line per tool."""
    t_start, runs = time.perf_counter(), []
    for i, tool in enumerate(tools):
        share = (seconds - (time.perf_counter() - t_start)) / (len(tools) - i)
        log_file = os.path.join(folder, f"sanitizer_{tool}.log")
        if share < MIN_TOOL_SECONDS:
            print(f"  {tool}: skipped, out of budget")
            runs.append(dict(tool=tool, skipped="out of budget"))
            continue
        if os.path.exists(log_file):
            os.unlink(log_file)
        t0 = time.perf_counter()
        output, rc = run_capped(sanitizer_command(sanitizer, tool, log_file, paths, first_paths), share, env)
        elapsed = time.perf_counter() - t0
        text = ""
        if os.path.exists(log_file):
            with open(log_file, errors="replace") as f:
                text = f.read()
        found = parse_sanitizer_log(text)
        summary, failures = pytest_summary(output)
        run = dict(tool=tool, rc=rc, seconds=elapsed, pytest=summary, failures=failures, log=log_file, **found)
        runs.append(run)
        if found["errors"] is None:
            verdict = (f"no summary ({'stopped by the budget' if rc == 'timeout' else f'exit code {rc}'}); "
                       f"{sum(found['reports'].values())} reports before that")
        else:
            verdict = f"{found['errors']} errors" + (f", {found['warnings']} warnings" if tool == "racecheck" else "")
        print(f"  {tool}: {verdict}; pytest: {summary}  ({elapsed:.0f} s)")
        for headline, count in sorted(found["reports"].items(), key=lambda kv: -kv[1])[:10]:
            print(f"    {count} x {headline[:180]}")
        for line in failures[:10]:
            print(f"    {line[:200]}")
    return runs


# --- 3. the kernels -------------------------------------------------------------------------------------------


def noise_rows(xp, cfg, budget, rows):
    """The diffusion steps: the CUDA kernels, the reference on CuPy, and a device copy for the ceiling."""
    from tinygen.kernels.diffusion import gpu_cupy, reference

    shape = cfg["noise_shape"]
    n = math.prod(shape)
    x, eps, z = (xp.asarray(_host_normal(shape, seed)) for seed in (1, 2, 3))
    coef = [xp.asarray(_host_uniform(shape[0], k)) for k in range(3)]  # per-sample, on the GPU (as a sampler could)
    out, out2 = xp.empty_like(x), xp.empty_like(x)
    reps, warm = cfg["repeats"], cfg["warmup"]

    def copy_row():
        t = gpu_time(xp, lambda: out.__setitem__(Ellipsis, x), reps, warm, budget)
        bw = 2 * x.nbytes / t
        return dict(shape=list(shape), tinygen_s=t, rate=bw, unit="GB/s", rate_value=bw / 1e9,
                    ceiling=f"{100 * bw / COPY_NOMINAL:.0f}% of 2.97 TB/s nominal")

    copy = attempt(rows, "noise", "device copy (the ceiling)", copy_row)
    copy_bw = copy.get("rate")

    cases = [
        ("p_sample_step_noise (fused, RNG in-kernel)", 3,
         lambda: gpu_cupy.p_sample_step_noise(x, eps, *coef, 1234, 0, out=out),
         lambda: reference.p_sample_step_noise(x, eps, *coef, 1234, 0), "p_sample_step_noise"),
        ("q_sample_noise (forward noising, RNG in-kernel)", 3,
         lambda: gpu_cupy.q_sample_noise(x, coef[0], coef[1], 1234, 0, out=(out, out2)),
         lambda: reference.q_sample_noise(x, coef[0], coef[1], 1234, 0), "q_sample_noise"),
        ("p_sample_step (z given)", 4,
         lambda: gpu_cupy.p_sample_step(x, eps, *coef, z, out=out),
         lambda: reference.p_sample_step(x, eps, *coef, z), "p_sample_step"),
        ("normal (generator alone)", 1,
         lambda: gpu_cupy.normal(shape, 1234, 0, out=out),
         lambda: xp.asarray(reference.normal(shape, 1234, 0)), "normal"),
    ]
    for name, arrays, ours, theirs, torch_key in cases:
        def row(ours=ours, theirs=theirs, arrays=arrays, torch_key=torch_key):
            t = gpu_time(xp, ours, reps, warm, budget)
            bw = arrays * x.nbytes / t
            r = dict(shape=list(shape), tinygen_s=t, rate=bw, unit="GB/s", rate_value=bw / 1e9, torch_key=torch_key)
            if copy_bw:
                r["fraction_of_copy"] = bw / copy_bw
                r["ceiling"] = f"{100 * bw / copy_bw:.0f}% of copy, {100 * bw / COPY_NOMINAL:.0f}% of 2.97 TB/s"
            if budget.left() > 60:  # the reference draws its normals on the host: seconds per call at full size
                big = n > 10**7  # one call: its first includes compiling CuPy's kernels for the reference's ops
                r["reference_s"] = gpu_time(xp, theirs, 1 if big else reps, 0 if big else warm, budget)
            if name.startswith("p_sample_step_noise"):
                r["target"] = f">= {100 * NOISE_TARGET:.0f}% of copy"
                r["met"] = bool(copy_bw) and bw >= NOISE_TARGET * copy_bw
            return r

        attempt(rows, "noise", name, row)


def _host_normal(shape, seed):
    import numpy as np

    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _host_uniform(n, seed):
    import numpy as np

    return np.random.default_rng(100 + seed).uniform(0.1, 0.9, n).astype(np.float32)


def conv_problem(shape, divisor):
    """x, w, g (float32, NumPy), the conv arguments and the flops of forward + both backwards."""
    import numpy as np

    from tinygen.kernels.conv2d import conv_output_size, conv_transpose_output_size

    name, n, cin, cout, size, k, s, p, transposed = shape
    n = max(1, n // divisor)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, cin, size, size), dtype=np.float32)
    w = rng.standard_normal((cin, cout, k, k) if transposed else (cout, cin, k, k), dtype=np.float32)
    if transposed:
        out = conv_transpose_output_size(size, k, s, p, 0, 1)
        flops = 2 * n * cin * size * size * cout * k * k
    else:
        out = conv_output_size(size, k, s, p, 1)
        flops = 2 * n * cout * out * out * cin * k * k
    g = rng.standard_normal((n, cout, out, out), dtype=np.float32)
    describe = f"{n},{cin}->{cout},{size}²->{out}²,k{k}s{s}p{p}" + ("T" if transposed else "")
    return dict(name=name, x=x, w=w, g=g, args=((s, s), (p, p), (1, 1)), transposed=transposed, flops=3 * flops,
                describe=describe, k=(k, k))


def conv_step(module, prob, xp):
    """forward + backward-input + backward-weight through one kernel module, on GPU arrays."""
    x, w, g = (xp.asarray(prob[k]) for k in ("x", "w", "g"))
    stride, padding, dilation = prob["args"]
    if prob["transposed"]:
        def step():
            module.conv_transpose2d_forward(x, w, stride, padding, (0, 0), dilation)
            module.conv_transpose2d_backward_input(g, w, x.shape[2:], stride, padding, dilation)
            module.conv_transpose2d_backward_weight(x, g, prob["k"], stride, padding, dilation)
    else:
        def step():
            module.conv2d_forward(x, w, stride, padding, dilation)
            module.conv2d_backward_input(g, w, x.shape[2:], stride, padding, dilation)
            module.conv2d_backward_weight(x, g, prob["k"], stride, padding, dilation)
    return step


def conv_rows(xp, cfg, budget, rows):
    from tinygen.kernels.conv2d import gpu_cupy, reference

    for shape in CONV_SHAPES:
        prob = conv_problem(shape, cfg["conv_divisor"])

        def row(prob=prob):
            t = gpu_time(xp, conv_step(gpu_cupy, prob, xp), cfg["repeats"], cfg["warmup"], budget)
            r = dict(shape=prob["describe"], tinygen_s=t, rate=prob["flops"] / t, unit="TFLOP/s",
                     rate_value=prob["flops"] / t / 1e12, torch_key=prob["name"], target=f"<= {CONV_TARGET:g}x cuDNN",
                     ceiling=f"{100 * prob['flops'] / t / FP32_PEAK:.1f}% of 51 TFLOP/s fp32")
            if budget.left() > 60:
                r["reference_s"] = gpu_time(xp, conv_step(reference, prob, xp), max(3, cfg["repeats"] // 4), 1, budget)
            return r

        attempt(rows, "conv", prob["name"], row)


def fused_rows(xp, cfg, budget, rows):
    """GroupNorm and SiLU (forward + backward) and one Adam step over the DDPM's parameters: the
    CUDA kernels against the reference's array code on CuPy (the many-launch version they replace)."""
    import numpy as np

    from tinygen.kernels.normalization import gpu_cupy as norm_gpu, reference as norm_ref
    from tinygen.kernels.optim import gpu_cupy as optim_gpu, reference as optim_ref

    shape, G = tuple(cfg["fused_shape"]), cfg["fused_groups"]
    x, g = xp.asarray(_host_normal(shape, 4)), xp.asarray(_host_normal(shape, 5))
    w, b = xp.ones(shape[1], np.float32), xp.zeros(shape[1], np.float32)
    reps, warm = cfg["repeats"], cfg["warmup"]

    def group_norm(module):
        y, mean, rstd = module.group_norm_forward(x, w, b, G, 1e-5)
        module.group_norm_backward(g, x, w, mean, rstd, G)

    def silu(module):
        module.silu_forward(x)
        module.silu_backward(g, x)

    params = [xp.asarray(_host_normal(s, 6)) for s in cfg["adam_shapes"]]
    grads = [xp.asarray(_host_normal(s, 7)) for s in cfg["adam_shapes"]]
    moments = [(xp.zeros_like(p), xp.zeros_like(p)) for p in params]
    total = sum(p.nbytes for p in params)

    def adam(module):  # the call optim.Adam makes: every tensor of the group at once
        module.adam_update_many(params, grads, [m for m, _ in moments], [v for _, v in moments], [10] * len(params),
                                1e-4, 0.9, 0.999, 1e-8, 0.0, False)

    cases = [(f"GroupNorm fwd+bwd, {G} groups", str(list(shape)), group_norm, 5 * x.nbytes, "fused_gn"),
             ("SiLU fwd+bwd", str(list(shape)), silu, 5 * x.nbytes, "fused_silu"),
             ("Adam step", f"{len(params)} tensors, {total // 4:,} parameters", adam, 7 * total, "fused_adam")]
    for name, describe, fn, nbytes, key in cases:
        module = optim_gpu if key == "fused_adam" else norm_gpu
        ref = optim_ref if key == "fused_adam" else norm_ref

        def row(fn=fn, module=module, ref=ref, nbytes=nbytes, describe=describe, key=key):
            t = gpu_time(xp, lambda: fn(module), reps, warm, budget)
            r = dict(shape=describe, tinygen_s=t, rate=nbytes / t, unit="GB/s", rate_value=nbytes / t / 1e9,
                     torch_key=key)
            if budget.left() > 60:
                r["reference_s"] = gpu_time(xp, lambda: fn(ref), reps, warm, budget)
            return r

        attempt(rows, "fused", name, row)


# --- 4. the DDPM -----------------------------------------------------------------------------------------------


def ddpm_config(cfg, T):
    from tinygen.models.diffusion import Config

    return Config(T=T, batch_size=cfg["train_batch"], **cfg["ddpm"])


def ddpm_rows(xp, cfg, budget, rows, torch_results):
    import numpy as np

    import tinygen
    from tinygen.models import DDPM

    sync = xp.cuda.Device().synchronize

    def train_row():
        tinygen.manual_seed(0)
        model = DDPM(ddpm_config(cfg, 1000)).to("cuda")
        images = tinygen.tensor(np.random.default_rng(0).random((cfg["train_batch"], 1, 28, 28), dtype=np.float32),
                                device="cuda")
        t0 = time.perf_counter()
        model.train_step(images)  # the first step compiles CuPy's kernels (cached on disk after)
        first = time.perf_counter() - t0
        t = wall_time(lambda: model.train_step(images), cfg["train_steps"], cfg["warmup"], sync, budget)
        return dict(shape=f"batch {cfg['train_batch']}, {model.net.num_parameters():,} parameters", tinygen_s=t,
                    first_call_s=first, torch_key="ddpm_train", target="<= PyTorch eager")

    attempt_or_retry(rows, "ddpm", "UNet train step", train_row)

    def sample_row():
        n, T = cfg["sample_n"], cfg["sample_T"]
        tinygen.manual_seed(0)
        probe = DDPM(ddpm_config(cfg, cfg["probe_T"])).to("cuda")
        probe.sample(n, sampler="ddpm")  # warm-up
        t0 = time.perf_counter()
        probe.sample(n, sampler="ddpm")
        per_step = (time.perf_counter() - t0) / cfg["probe_T"]
        r = dict(shape=f"{n} images, {T} steps", per_step_s=per_step, torch_key="ddpm_sample",
                 target="<= PyTorch eager")
        if per_step * T < 0.5 * budget.left():
            model = DDPM(ddpm_config(cfg, T)).to("cuda")
            t0 = time.perf_counter()
            samples = model.sample(n, sampler="ddpm")
            r["tinygen_s"] = time.perf_counter() - t0
            r["finite"] = bool(np.isfinite(samples).all())
        else:
            r["tinygen_s"], r["estimated"] = per_step * T, True
        return r

    attempt_or_retry(rows, "ddpm", f"sampling {cfg['sample_T']} steps", sample_row)


def profile_train_step(xp, cfg, budget, steps=5, top=14):
    """cProfile over `steps` DDPM training steps on the GPU: where the host's time goes (a launch-bound
    step is host time). Prints the functions with the most own time; returns those lines."""
    import cProfile
    import pstats

    import numpy as np

    import tinygen
    from tinygen.models import DDPM

    tinygen.manual_seed(0)
    model = DDPM(ddpm_config(cfg, 1000)).to("cuda")
    images = tinygen.tensor(np.random.default_rng(0).random((cfg["train_batch"], 1, 28, 28), dtype=np.float32),
                            device="cuda")
    model.train_step(images)
    xp.cuda.Device().synchronize()
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for _ in range(steps):
        model.train_step(images)
    xp.cuda.Device().synchronize()
    profiler.disable()
    wall = (time.perf_counter() - t0) / steps
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    lines = [f"{steps} steps, {1e3 * wall:.1f} ms a step under the profiler; {stats.total_calls / steps:,.0f} "
             f"Python calls a step"]
    lines += [line for line in out.getvalue().splitlines() if line.strip() and "function calls" not in line][-top - 1:]
    for line in lines:
        print("  " + line[:160])
    return lines


@contextlib.contextmanager
def reference_fused_ops():
    """The normalization and optimizer families on the reference's array code for CuPy arrays (their
    CUDA kernels bypassed), the conv and diffusion kernels unchanged."""
    from tinygen.kernels import normalization, optim
    from tinygen.kernels.normalization import reference as normalization_reference
    from tinygen.kernels.optim import reference as optim_reference

    saved = normalization.implementation, optim.implementation
    normalization.implementation = lambda xp=None: normalization_reference
    optim.implementation = lambda xp=None: optim_reference
    try:
        yield
    finally:
        normalization.implementation, optim.implementation = saved


def attempt_or_retry(rows, section, name, fn):
    """`attempt`; where it fails, once more with the fused ops on the reference (flagged in the name),
    so that a failing new kernel does not cost a one-shot GPU run its DDPM numbers."""
    row = attempt(rows, section, name, fn)
    if "error" in row:
        with reference_fused_ops():
            attempt(rows, section, name + " (GroupNorm/SiLU/Adam on the reference)", fn)


# --- PyTorch, in its own process ---------------------------------------------------------------------------------


def torch_worker(spec_path):
    """Run PyTorch's side of every row (the spec: a JSON file) and print the seconds as one JSON line."""
    import numpy as np
    import torch

    with open(spec_path) as f:
        spec = json.load(f)
    cfg = spec["cfg"]
    dev = torch.device("cuda" if torch.cuda.is_available() and not spec["dry_run"] else "cpu")
    deadline = time.perf_counter() + spec["seconds"]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn, repeats, warmup):
        for _ in range(warmup):
            fn()
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
            if sum(times) > 5 or time.perf_counter() > deadline - 10:
                break
        return statistics.median(times)

    result = dict(device=str(dev), torch=torch.__version__,
                  cudnn=torch.backends.cudnn.version() if dev.type == "cuda" else None,
                  gpu=torch.cuda.get_device_name(0) if dev.type == "cuda" else None, times={}, errors={})
    reps, warm = cfg["repeats"], cfg["warmup"]

    def record(key, fn):
        if time.perf_counter() > deadline - 10:
            result["errors"][key] = "skipped: out of time"
            return
        try:
            result["times"][key] = fn()
        except Exception as err:  # noqa: BLE001
            result["errors"][key] = f"{type(err).__name__}: {err}"

    # noise: the reference's expressions, torch.randn_like for the noise
    shape = tuple(cfg["noise_shape"])
    g = torch.Generator(device=dev).manual_seed(0)
    x, eps, z = (torch.randn(shape, generator=g, device=dev) for _ in range(3))
    per_sample = (-1,) + (1,) * (len(shape) - 1)
    c0, c1, c2 = (torch.rand(shape[0], generator=g, device=dev).view(per_sample) for _ in range(3))
    record("p_sample_step_noise", lambda: timed(lambda: c1 * (x - c0 * eps) + c2 * torch.randn_like(x), reps, warm))
    record("q_sample_noise", lambda: timed(lambda: (lambda e: (c0 * x + c1 * e, e))(torch.randn_like(x)), reps, warm))
    record("p_sample_step", lambda: timed(lambda: c1 * (x - c0 * eps) + c2 * z, reps, warm))
    record("normal", lambda: timed(lambda: torch.randn_like(x), reps, warm))
    del x, eps, z

    # conv: cuDNN (its fastest algorithms: benchmark mode), forward and autograd backward; TF32 off
    # (full float32, as tinygen's products), then on (PyTorch's default for convolutions)
    torch.backends.cudnn.benchmark = True
    for shape in CONV_SHAPES:
        prob = conv_problem(shape, cfg["conv_divisor"])
        xt = torch.from_numpy(prob["x"]).to(dev).requires_grad_(True)
        wt = torch.from_numpy(prob["w"]).to(dev).requires_grad_(True)
        gt = torch.from_numpy(prob["g"]).to(dev)
        stride, padding, dilation = prob["args"]
        conv = torch.nn.functional.conv_transpose2d if prob["transposed"] else torch.nn.functional.conv2d

        def step(xt=xt, wt=wt, gt=gt, conv=conv, stride=stride, padding=padding, dilation=dilation):
            xt.grad = wt.grad = None
            conv(xt, wt, stride=stride, padding=padding, dilation=dilation).backward(gt)

        for tf32 in (False, True):
            torch.backends.cudnn.allow_tf32 = tf32
            record(prob["name"] + ("_tf32" if tf32 else ""), lambda step=step: timed(step, reps, warm))
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False  # the DDPM as PyTorch eager runs it by default

    # fused: GroupNorm and SiLU forward + autograd backward, and torch.optim.Adam (foreach on a GPU)
    shape, G = tuple(cfg["fused_shape"]), cfg["fused_groups"]
    xf = torch.randn(shape, generator=g, device=dev).requires_grad_(True)
    gf = torch.randn(shape, generator=g, device=dev)
    wf = torch.ones(shape[1], device=dev, requires_grad=True)
    bf = torch.zeros(shape[1], device=dev, requires_grad=True)

    def gn_step():
        xf.grad = wf.grad = bf.grad = None
        torch.nn.functional.group_norm(xf, G, wf, bf, 1e-5).backward(gf)

    def silu_step():
        xf.grad = None
        torch.nn.functional.silu(xf).backward(gf)

    params = [torch.randn(s, generator=g, device=dev, requires_grad=True) for s in cfg["adam_shapes"]]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, device=dev)
    adam = torch.optim.Adam(params, lr=1e-4)
    record("fused_gn", lambda: timed(gn_step, reps, warm))
    record("fused_silu", lambda: timed(silu_step, reps, warm))
    record("fused_adam", lambda: timed(adam.step, reps, warm))
    del xf, gf, params, adam

    # the DDPM: twins of tinygen models with the same seed and config, moved to the device
    import tinygen
    from benchmarks import torch_twins
    from benchmarks.torch_twins import DDPMTwin
    from tinygen.models import DDPM

    def timestep_embedding(t, dim, dtype):
        """torch_twins.timestep_embedding with its frequencies made on t's device (a GPU here)."""
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64, device=t.device) / half)
        args = t.to(torch.float64)[:, None] * freqs[None, :]  # (B, half)
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1).to(dtype)

    torch_twins.timestep_embedding = timestep_embedding  # what UNet.forward calls

    def moved_twin(T):
        tinygen.manual_seed(0)
        twin = DDPMTwin(DDPM(ddpm_config(cfg, T)))
        twin.net.to(dev)
        twin.sqrt_alpha_bar = twin.sqrt_alpha_bar.to(dev)
        twin.sqrt_one_minus_alpha_bar = twin.sqrt_one_minus_alpha_bar.to(dev)
        twin.ema_shadow = [s.to(dev) for s in twin.ema_shadow]
        twin.ema_buffers = [b.to(dev) for b in twin.ema_buffers]
        twin.draw = lambda x0: (torch.randint(0, T, (x0.shape[0],), device=dev), torch.randn_like(x0), None)
        return twin

    def train():
        twin = moved_twin(1000)
        images = torch.from_numpy(np.random.default_rng(0).random((cfg["train_batch"], 1, 28, 28), dtype=np.float32))
        images = images.to(dev)
        return timed(lambda: twin.train_step(images), cfg["train_steps"], cfg["warmup"])

    record("ddpm_train", train)

    @torch.no_grad()
    def sample(twin, n):
        """DDPM.sample(n, sampler="ddpm") on the device: Algorithm 2, sigma_t^2 = beta_t, x0_hat clipped."""
        s, net = twin.schedule, twin.ema_net()
        x = torch.randn(n, 1, 28, 28, device=dev)
        sigmas = np.sqrt(s.betas)
        for i in reversed(range(s.T)):
            eps = net(x, torch.full((n,), int(i), dtype=torch.int64, device=dev))
            a, b = float(s.sqrt_alpha_bar[i]), float(s.sqrt_one_minus_alpha_bar[i])
            x0_hat = ((x - b * eps) / a).clamp(-1, 1)
            eps = (x - a * x0_hat) / b
            x = float(s.inv_sqrt_alpha[i]) * (x - float(s.eps_coef[i]) * eps)
            if i > 0:
                x = x + float(sigmas[i]) * torch.randn_like(x)
        return ((x.clamp(-1, 1) + 1) / 2).cpu().numpy()

    def sampling():
        twin = moved_twin(cfg["sample_T"])
        sample(moved_twin(cfg["probe_T"]), cfg["sample_n"])  # warm-up: cuDNN's algorithm search
        sync()
        t0 = time.perf_counter()
        sample(twin, cfg["sample_n"])
        sync()
        return time.perf_counter() - t0

    record("ddpm_sample", sampling)
    print("TORCH-RESULT " + json.dumps(result))


def run_torch(cfg, dry_run, budget, env):
    """PyTorch's times in a subprocess (at most a share of the budget left): {key: seconds}, info."""
    if importlib.util.find_spec("torch") is None:
        return dict(times={}, errors={"all": "PyTorch is not installed"})
    seconds = max(30.0, min(150.0, budget.left() - 60))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(dict(cfg=cfg, dry_run=dry_run, seconds=seconds), f)
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker", f.name]
    t0 = time.perf_counter()
    try:
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=seconds + 30)
        line = next((line for line in result.stdout.splitlines() if line.startswith("TORCH-RESULT ")), None)
        if line is None:
            tail = (result.stdout + result.stderr).strip().splitlines()[-8:]
            return dict(times={}, errors={"all": "the PyTorch worker gave no result: " + " | ".join(tail)})
        out = json.loads(line[len("TORCH-RESULT "):])
    except subprocess.TimeoutExpired:
        return dict(times={}, errors={"all": f"the PyTorch worker ran past {seconds + 30:.0f} s"})
    finally:
        os.unlink(f.name)
    out["seconds"] = time.perf_counter() - t0
    return out


# --- the report --------------------------------------------------------------------------------------------


def fmt_ms(seconds):
    if seconds is None:
        return "-"
    return f"{1e3 * seconds:.3f}" if seconds < 0.01 else f"{1e3 * seconds:.1f}" if seconds < 10 else f"{seconds:.2f} s"


def fmt_ratio(a, b):
    return "-" if not a or not b else f"{b / a:.2f}x"


def table(rows, torch):
    """The rows as a fixed-width table; the ratios are other / tinygen (above 1: tinygen is faster)."""
    header = ["section", "row", "shape", "tinygen ms", "rate", "ceiling", "ref-on-CuPy ms", "ref/tinygen",
              "torch ms", "torch/tinygen", "target", "met"]
    lines = []
    for r in rows:
        if "error" in r:
            lines.append([r["section"], r["name"], "", "FAILED", r["error"][:80], "", "", "", "", "", "", ""])
            continue
        theirs = torch.get("times", {}).get(r.get("torch_key"))
        if r["section"] == "conv" and theirs:
            r["torch_s"], r["torch_tf32_s"] = theirs, torch["times"].get(r["torch_key"] + "_tf32")
            r["met"] = r["tinygen_s"] <= CONV_TARGET * theirs
        elif r["section"] == "ddpm" and theirs:
            r["torch_s"] = theirs
            r["met"] = r["tinygen_s"] <= theirs
        elif theirs:
            r["torch_s"] = theirs
        rate = f"{r['rate_value']:.1f} {r['unit']}" if "rate_value" in r else ""
        if "first_call_s" in r:
            rate = f"first call {r['first_call_s']:.1f} s"
        if r.get("estimated"):
            rate = f"est. from {fmt_ms(r['per_step_s'])} ms/step"
        met = {True: "yes", False: "NO"}.get(r.get("met"), "")
        lines.append([r["section"], r["name"], str(r.get("shape", "")), fmt_ms(r.get("tinygen_s")), rate,
                      r.get("ceiling", ""), fmt_ms(r.get("reference_s")), fmt_ratio(r.get("tinygen_s"), r.get("reference_s")),
                      fmt_ms(r.get("torch_s")), fmt_ratio(r.get("tinygen_s"), r.get("torch_s")), r.get("target", ""), met])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = [" | ".join(str(x).ljust(w) for x, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


# --- main ----------------------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="NumPy in place of CuPy (tests/fake_cupy.py), tiny shapes")
    parser.add_argument("--budget", type=float, help="wall-clock seconds for everything (default 480; dry run 240)")
    parser.add_argument("--tests-budget", type=float, default=200, help="at most this many seconds of GPU tests")
    parser.add_argument("--no-tests", action="store_true", help="skip the pytest runs (and compute-sanitizer's)")
    parser.add_argument("--sanitizer", metavar="PATH", help="the compute-sanitizer to run (default: found on PATH, "
                        "in the CUDA toolkit or NVIDIA's wheels)")
    parser.add_argument("--sanitizer-budget", type=float, default=150,
                        help="at most this many seconds of CUDA kernel tests under compute-sanitizer, all tools")
    parser.add_argument("--no-sanitizer", action="store_true", help="skip the compute-sanitizer runs")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_check.json/.txt (default $OUT)")
    parser.add_argument("--torch-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    how, extra_paths = importable_tinygen()
    if args.torch_worker:
        return torch_worker(args.torch_worker)

    budget = Budget(args.budget or (240 if args.dry_run else 480))
    cfg = settings(args.dry_run)
    tee = Tee(sys.stdout)
    report = dict(dry_run=args.dry_run, budget_s=budget.seconds, settings=cfg, tests=[], rows=[])
    with contextlib.redirect_stdout(tee), contextlib.ExitStack() as stack:
        import numpy as np

        import tinygen
        from tinygen import backend
        from tinygen.models import DDPM

        cfg["adam_shapes"] = [list(p.shape) for p in DDPM(ddpm_config(cfg, 1000)).net.parameters()]
        print(f"# tinygen GPU check{' (DRY RUN: NumPy in place of CuPy, tiny shapes)' if args.dry_run else ''}")
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}, Python {platform.python_version()}, NumPy {np.__version__}, "
              f"tinygen {tinygen.__version__} ({how}); budget {budget.seconds:.0f} s")
        if args.dry_run:
            spec = importlib.util.spec_from_file_location("fake_cupy", os.path.join(ROOT, "tests", "fake_cupy.py"))
            fake = importlib.util.module_from_spec(spec)
            sys.modules["fake_cupy"] = fake
            spec.loader.exec_module(fake)
            stack.enter_context(fake.installed())
            if fake.compiler() is None:
                os.environ["TINYGEN_KERNELS"] = "numpy"
                print("no C++ compiler: the CUDA kernels cannot be emulated; TINYGEN_KERNELS=numpy")
        gpus, why_not = backend.gpu_info()
        report["machine"] = dict(gpus=gpus, why_not=why_not, python=platform.python_version(), numpy=np.__version__,
                                 tinygen_import=how)
        for g in gpus:
            print(f"GPU cuda:{g['index']}: {g['name']}, {g['memory_gib']:.1f} GiB, cc {g['compute_capability']}, "
                  f"CuPy {g['cupy']}, CUDA runtime {g['cuda_runtime']}, driver {g['driver']}")
        if not gpus:
            print(f"no GPU: {why_not}")
            return 2
        xp = backend.load_cupy()

        # 2. the GPU tests
        print("\n## GPU tests")
        tools, note = ([], "skipped (--no-tests)") if args.no_tests else importable_test_tools()
        print(f"  {note}")
        if tools is not None and not args.no_tests:
            env = subprocess_env([*extra_paths, *tools])
            if args.out:
                os.makedirs(args.out, exist_ok=True)
            for part, paths in enumerate((["tests/kernels"], ["tests", "--ignore=tests/kernels"]), 1):
                reserve = 60 if args.dry_run else 200  # seconds kept for the benchmarks
                seconds = min(args.tests_budget - sum(t["seconds"] for t in report["tests"]), budget.left() - reserve)
                if seconds < 20:
                    print(f"  pytest -m gpu {' '.join(paths)}: skipped, out of budget")
                    continue
                log = os.path.join(args.out, f"pytest_{part}.log") if args.out else None
                report["tests"].append(run_tests(seconds, paths, env, extra_paths, log))

        # 2b. the CUDA kernel tests under compute-sanitizer
        print("\n## CUDA kernel tests under compute-sanitizer")
        report["sanitizer"] = sanitize(args, budget, tools, extra_paths)

        # 3. the kernels, 4. the DDPM, with PyTorch's side in between
        print("\n## kernels")
        attempt_section(lambda: noise_rows(xp, cfg, budget, report["rows"]), "noise", budget)
        attempt_section(lambda: conv_rows(xp, cfg, budget, report["rows"]), "conv", budget)
        attempt_section(lambda: fused_rows(xp, cfg, budget, report["rows"]), "fused", budget)
        print("\n## PyTorch (subprocess)")
        torch = run_torch(cfg, args.dry_run, budget, subprocess_env(extra_paths)) if budget.left() > 60 else \
            dict(times={}, errors={"all": "skipped: out of budget"})
        report["torch"] = torch
        print(f"  {torch.get('torch', 'no PyTorch')} on {torch.get('gpu') or torch.get('device', '-')}, "
              f"cuDNN {torch.get('cudnn')}: {len(torch.get('times', {}))} rows"
              + (f"; errors: {torch['errors']}" if torch.get("errors") else ""))
        print("\n## DDPM")
        attempt_section(lambda: ddpm_rows(xp, cfg, budget, report["rows"], torch), "ddpm", budget)
        print("\n## where a DDPM training step's host time goes")
        attempt_section(lambda: report.__setitem__("profile", profile_train_step(xp, cfg, budget)), "profile", budget)

        print("\n## results (ratios: the other's time / tinygen's; above 1 tinygen is faster)\n")
        print(table(report["rows"], torch))
        tf32 = [f"{r['name']} {fmt_ms(r['torch_tf32_s'])}" for r in report["rows"] if r.get("torch_tf32_s")]
        if tf32:
            print(f"\ncuDNN with TF32 on (PyTorch's default for convolutions), ms: {', '.join(tf32)}")
        met = [r for r in report["rows"] if "met" in r]
        print(f"\ntargets met: {sum(bool(r['met']) for r in met)} of {len(met)}"
              + "".join(f"\n  NOT MET: {r['section']} {r['name']} ({r.get('target')})" for r in met if not r["met"]))
        failed = [t for t in report["tests"] if t["rc"] not in (0, 5)]
        print(f"tests: {'; '.join(t['summary'] for t in report['tests']) or 'not run'}"
              + (f" -- {len(failed)} pytest run(s) not clean" if failed else ""))
        checked = [r for r in report["sanitizer"].get("runs", []) if "skipped" not in r]
        print("compute-sanitizer: " + ("; ".join(f"{r['tool']} {'cut short' if r['errors'] is None else r['errors']}"
                                                  f"{'' if r['errors'] is None else ' errors'}" for r in checked)
                                       or report["sanitizer"].get("skipped", "not run")))
        report["elapsed_s"] = budget.elapsed()
        print(f"elapsed {budget.elapsed():.0f} s of {budget.seconds:.0f}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
            json.dump(report, f, indent=2, default=str)
        with open(os.path.join(args.out, "gpu_check.txt"), "w") as f:
            f.write(tee.kept.getvalue())
        print(f"wrote {os.path.join(args.out, 'gpu_check.json')} and gpu_check.txt")
    return 0


def sanitize(args, budget, test_tools, extra_paths):
    """The compute-sanitizer part of main (`test_tools`: the path entries that give pytest, or None):
    {"skipped": why} or {"path", "version", "runs"}."""
    if args.dry_run:
        why = "dry run (no GPU to sanitize)"
    elif args.no_tests or args.no_sanitizer:
        why = "--no-tests" if args.no_tests else "--no-sanitizer"
    elif test_tools is None:
        why = "no pytest"
    else:
        why = None
    sanitizer, not_found = (None, None) if why else find_sanitizer(args.sanitizer)
    seconds = min(args.sanitizer_budget, budget.left() - 200)  # seconds kept for the benchmarks
    if why is None and sanitizer is None:
        why = f"compute-sanitizer {not_found}"
    elif why is None and seconds < 40:
        why = "out of budget"
    if why:
        print(f"  skipped: {why}")
        return dict(skipped=why)
    version = sanitizer_version(sanitizer)
    print(f"  {sanitizer} ({version}), {', '.join(SANITIZER_TOOLS)} on pytest -m gpu tests/kernels, CuPy's pool off; "
          f"racecheck sees shared memory only, which tinygen's kernels do not use")
    folder = args.out or tempfile.mkdtemp(prefix="tinygen-sanitizer-")
    os.makedirs(folder, exist_ok=True)
    env = subprocess_env([*extra_paths, *test_tools])
    runs = run_sanitizer(sanitizer, seconds, ["tests/kernels"], env, extra_paths, folder)
    return dict(path=sanitizer, version=version, runs=runs)


def attempt_section(fn, name, budget):
    if budget.left() < 40:
        print(f"  {name}: skipped, out of budget")
        return
    try:
        fn()
    except Exception as err:  # noqa: BLE001
        print(f"  {name}: FAILED: {type(err).__name__}: {err}")
        traceback.print_exc(limit=4, file=sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
