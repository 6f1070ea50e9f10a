"""The CPU kernels' runtime: Numba, imported once with tinygen's threading policy, and the BLAS
products of the kernels on tinygen's own threads.

Every cpu_numba.py gets Numba through `load_numba`, never a bare `import numba`, so that the
policy below is applied before Numba's thread pool starts, whoever asks first. Importing tinygen
never imports Numba: only the first kernel call that may run Numba kernels (or `kernel_info`)
gets here. `check_numba_dtype` refuses, at a kernel's entrance, the dtypes Numba cannot compile.

Threading policy (one, applied by tinygen itself: a user sets no environment variable)
-------------------------------------------------------------------------------------
Two thread pools meet in a training step: Numba's (the conv loops) and OpenBLAS's (NumPy's
products). Each spins after its work: GNU OpenMP, Numba's default layer, for 300,000 rounds;
OpenBLAS (0.3.31, as NumPy ships it) for about 2**28 cycles, a tenth of a second, without
yielding. On 2 cores the idle pool's spinning thread takes a core from the busy one, so that
each parallel region waits for its slowest thread. tinygen therefore:
1. starts Numba's pool itself (`load_numba`), preferring the ``omp`` layer (safe for calls from
   several threads, unlike ``workqueue``), with ``OMP_WAIT_POLICY=PASSIVE`` in the environment
   just while the OpenMP runtime reads it (so GNU OpenMP sleeps at once: GOMP_SPINCOUNT 0),
   then puts the environment back; variables the user did set win;
2. never lets OpenBLAS's pool run between the kernels: every product of the Numba kernels and
   of `ops.MatMul` while they are in use (`tinygen.kernels.dispatch.matmul` decides, once per
   setting of the knob) runs single-threaded in OpenBLAS, on the calling thread and a small
   thread pool whose threads sleep on a queue (`run_split`): the conv kernels' batch chunks
   (im2col, product, col2im each), or `split_matmul`'s slabs of one product (`matmul`);
   OpenBLAS's count is set to 1 only for the duration.

Conv forward + backward-input + backward-weight, float32, ms, median of 7 (AMD EPYC Zen 4,
2 cores; c1 128x1->32x28x28 k3, c2 128x32->64x14x14 k3, c4 128x64->128 14x14 k4 s2,
c6 32x64->64x32x32 k3); "quiet": no other load; "busy": another training process on the
machine (busy: median of 3 runs; quiet: one run, the machine being shared):

| pools                                       | quiet: c1 |   c2 |    c4 |    c6 | busy: c1 |  c2 |  c4 |  c6 |
| ------------------------------------------- | --------- | ---- | ----- | ----- | -------- | --- | --- | --- |
| Numba's defaults (spin) + OpenBLAS's pool   |      51.8 | 67.8 | 111.7 | 118.2 |      112 | 535 | 163 | 269 |
| OMP_WAIT_POLICY=PASSIVE + OpenBLAS's pool   |       9.2 | 35.7 |  62.3 |  77.9 |       32 | 720 | 288 | 961 |
| ``workqueue`` layer + OpenBLAS's pool       |       9.5 | 35.7 |  61.4 |  77.6 |        – |   – |   – |   – |
| passive + products on the calling thread    |       8.9 | 42.6 |  68.9 | 102.3 |       11 |  54 |  87 | 111 |
| passive + products split (chosen)           |       7.3 | 32.3 |  46.3 |  64.3 |       12 |  53 |  90 | 113 |

Busy, a loop of 3 x (a 128x784 @ 784x1024 product as a Linear layer makes, then c2 forward and
backward) took 316-324 ms with the product on OpenBLAS's pool and 145 ms with `matmul`: hence 2.
"""

import os

import numpy as np

from tinygen.errors import DTypeError

# The threading policy for Numba's pool, applied once, before the pool starts (see load_numba).
NUMBA_THREADING_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
NUMBA_THREADING_LAYERS = ["omp", "tbb", "workqueue"]

_numba = None  # the numba module once imported; False when it cannot be
_numba_error = None


def load_numba():
    """The `numba` module, or None where it cannot be imported. Imported once, on first use.

    Importing tinygen never imports Numba: only the first kernel call that may run Numba
    kernels (or `kernel_info`) gets here. The threading policy is applied before Numba's
    thread pool starts (see above).
    """
    global _numba, _numba_error
    if _numba is None:
        try:
            import numba
        except ImportError as err:  # not installed, or installed against another NumPy
            _numba, _numba_error = False, err
        else:
            _numba = _start_numba_threads(numba)
    return _numba or None


def _start_numba_threads(numba):
    """Apply tinygen's threading policy to Numba's pool and start the pool now.

    The variables a user set by hand win: tinygen only fills in the ones left unset.
    """
    if "NUMBA_THREADING_LAYER" not in os.environ and "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
        numba.config.THREADING_LAYER_PRIORITY = list(NUMBA_THREADING_LAYERS)
    saved = {name: os.environ.get(name) for name in NUMBA_THREADING_ENV}
    for name, value in NUMBA_THREADING_ENV.items():
        os.environ.setdefault(name, value)
    try:
        # The OpenMP runtime reads its variables once, when Numba loads it: start the pool now,
        # then put the environment back, so that nothing else in the process sees the change.
        from numba.np.ufunc import parallel

        parallel._launch_threads()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return numba


def check_numba_dtype(what, *arrays):
    """Raise `DTypeError` naming the dtype where Numba cannot compile a kernel for an array's dtype
    (float16: Numba has no CPU float16 type, and failed deep inside its compiler)."""
    for a in arrays:
        if a.dtype == np.float16 or a.dtype.kind not in "biufc":
            raise DTypeError(
                f"{what}: the Numba kernels take float32 and float64 (unfold also integers and bools), got dtype "
                f"{a.dtype}; cast the tensor (.float()) or run the NumPy reference with TINYGEN_KERNELS=numpy"
            )


# BLAS products run on tinygen's own threads, each with single-threaded OpenBLAS, while the Numba
# kernels are in use: OpenBLAS's own pool spins after every product, on the cores Numba needs.
_blas = None  # (pool, set_blas_threads, workers) once looked up; False where it cannot be
BLAS_SPLIT_FLOPS = 2e6  # smaller products run on the calling thread alone


def blas_pool():
    """(pool, set_blas_threads, workers), or None without Numba or an OpenBLAS >= 0.3.27.

    `pool` is a thread pool of `workers` threads (Numba's maximum thread count minus one).
    `set_blas_threads(n)` is OpenBLAS's `openblas_set_num_threads_local`: it sets the thread
    count of the products started from then on and returns the previous count, so that the
    caller can put it back. (Despite its name it is not per thread in OpenBLAS 0.3.31: a
    count set on one thread holds on every thread, which is why `run_split` sets it once
    around all of its tasks.)
    """
    global _blas
    if _blas is None:
        set_threads = _openblas_set_num_threads_local()
        numba = load_numba()
        if set_threads is None or numba is None:
            _blas = False
        else:
            from concurrent.futures import ThreadPoolExecutor

            workers = max(1, numba.config.NUMBA_NUM_THREADS - 1)
            _blas = (ThreadPoolExecutor(workers, thread_name_prefix="tinygen-blas"), set_threads, workers)
    return _blas or None


def run_split(task, count):
    """task(i) for i in range(count), in contiguous runs of i side by side on tinygen's threads,
    with OpenBLAS at one thread, so that every product a task makes is single-threaded.

    The runs are one per Numba thread (at most `count`); the calling thread takes the first,
    the pool the others. OpenBLAS's count is set to 1 for the duration and put back after the
    last run ends, so no product can start on OpenBLAS's own pool. Which thread runs task i
    must not change its result: a task writes its own part of an output. Where `blas_pool()` is
    None the tasks run in order on the calling thread.
    """
    blas = blas_pool()
    if blas is None or count <= 1:
        for i in range(count):
            task(i)
        return
    pool, set_blas_threads, workers = blas
    parts = min(_numba.get_num_threads(), workers + 1, count)
    cuts = [i * count // parts for i in range(parts + 1)]

    def run(lo, hi):
        for i in range(lo, hi):
            task(i)

    previous = set_blas_threads(1)
    try:
        futures = [pool.submit(run, lo, hi) for lo, hi in zip(cuts[1:-1], cuts[2:])]
        try:
            run(cuts[0], cuts[1])
        finally:
            for f in futures:
                f.result()
    finally:
        set_blas_threads(previous)


def split_matmul(a, b, out=None):
    """a @ b for 2-D NumPy arrays, as single-threaded BLAS products side by side (`run_split`).

    The larger side of the output (rows or columns) is cut into one slab per Numba thread. Each
    output element is computed by one single-threaded product, so the result does not depend on
    the split. Plain `np.matmul` where `blas_pool()` is None.
    """
    M, K, N = a.shape[0], a.shape[1], b.shape[1]
    if out is None:
        out = np.empty((M, N), np.result_type(a, b))
    if blas_pool() is None:
        return np.matmul(a, b, out=out)
    parts = _numba.get_num_threads() if 2.0 * M * N * K >= BLAS_SPLIT_FLOPS else 1
    cuts = [i * max(M, N) // parts for i in range(parts + 1)]
    slabs = [(a, b[:, i:j], out[:, i:j]) if N >= M else (a[i:j], b, out[i:j]) for i, j in zip(cuts, cuts[1:])]
    run_split(lambda i: np.matmul(*slabs[i][:2], out=slabs[i][2]), len(slabs))
    return out



def matmul(a, b):
    """`a @ b` for NumPy arrays under the policy above, where `blas_pool()` exists: `split_matmul`
    for 2-D floats, single-threaded OpenBLAS on the calling thread otherwise."""
    blas = blas_pool()
    if blas is None:
        return a @ b
    if a.ndim == 2 and b.ndim == 2 and a.dtype.kind == "f" and b.dtype.kind == "f":
        return split_matmul(a, b)
    previous = blas[1](1)  # other shapes: on the calling thread, still away from OpenBLAS's pool
    try:
        return a @ b
    finally:
        blas[1](previous)


def _openblas_set_num_threads_local():
    """`openblas_set_num_threads_local` of the OpenBLAS NumPy loaded, through ctypes, or None."""
    import ctypes
    import glob

    numpy_dir = os.path.dirname(np.__file__)
    candidates = glob.glob(os.path.join(numpy_dir, os.pardir, "numpy.libs", "*openblas*"))  # Linux, Windows wheels
    candidates += glob.glob(os.path.join(numpy_dir, ".dylibs", "*openblas*"))  # macOS wheels
    try:
        with open("/proc/self/maps") as maps:  # whatever is loaded (conda, system OpenBLAS)
            candidates += sorted({line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1]})
    except OSError:
        pass
    for path in candidates:
        try:
            function = ctypes.CDLL(path).openblas_set_num_threads_local  # already loaded: same handle
        except (OSError, AttributeError):
            continue
        function.restype, function.argtypes = ctypes.c_int, [ctypes.c_int]
        return function
    return None
