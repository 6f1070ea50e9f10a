"""Where arrays live and which kernels run: the one place that decides.

- `get_array_module(*arrays)` returns the module (NumPy, or CuPy for GPU arrays) that one body
  of code should call, chainer-style, so that every op serves both kinds of array. CuPy is only
  imported when a CuPy array is actually seen; importing tinygen never touches it.
- `kernel_backend()` resolves the one knob, ``TINYGEN_KERNELS`` (``auto``, ``numpy``, ``numba``
  or ``cupy``; read only by `requested_kernels`), for a family of kernels and the arrays at
  hand. ``auto`` runs the Numba kernels on NumPy arrays when Numba can be imported (checked
  once; Numba is imported then, never when tinygen is imported), and the CUDA kernels on CuPy
  arrays. Asking for a backend that cannot run here raises `BackendUnavailableError`;
  nothing falls back silently. `kernel_info()` says what runs, with which threads.
- `manual_seed` / `generator` hold the one random generator every tinygen op draws from.
- Devices: `device("cpu")` (NumPy arrays) or `device("cuda[:i]")` (CuPy arrays on GPU i);
  `load_cupy()` imports CuPy on the first request for ``cuda`` and raises
  `BackendUnavailableError` saying whether CuPy is missing or no GPU is visible (`import cupy`
  succeeds on a machine without a GPU: `cupy.is_available()` decides); `to_device` moves an
  array; the default device of new tensors is ``TINYGEN_DEVICE`` (read only by
  `requested_device`) or what `set_default_device` set.

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
   of `ops.MatMul` while they are in use runs single-threaded in OpenBLAS, on the calling thread
   and a small thread pool whose threads sleep on a queue (`run_split`): the conv kernels' batch
   chunks (im2col, product, col2im each), or `split_matmul`'s slabs of one product (`matmul`);
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

import importlib
import os
import sys

import numpy as np

from tinygen.errors import ArgumentError, BackendUnavailableError, DTypeError

KERNEL_BACKENDS = ("auto", "numpy", "numba", "cupy")


def get_array_module(*arrays):
    """Return `numpy`, or `cupy` if any of `arrays` is a CuPy array."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            return sys.modules["cupy"]  # a CuPy array exists, so CuPy is already imported
    return np


def is_device_array(a):
    """Whether `a` is a CuPy (GPU) array. Never imports CuPy."""
    return type(a).__module__.split(".")[0] == "cupy"


# --- devices ------------------------------------------------------------------------------


class device:
    """Where a tensor's array lives: ``device("cpu")`` (NumPy) or ``device("cuda")``, ``device("cuda:1")``
    (CuPy, on that GPU), PyTorch's spelling.

    NOTE: a ``cuda`` device without an index means the current GPU, and compares equal to any
    ``cuda:i`` (so ``tensor.device == "cuda"`` holds on every GPU); strings compare as devices.

    >>> device("cuda:1"), device("cpu") == "cpu", device("cuda") == "cuda:0"
    (device(type='cuda', index=1), True, True)
    """

    __slots__ = ("type", "index")

    def __init__(self, spec, index=None):
        if isinstance(spec, device):
            spec, index = spec.type, spec.index if index is None else index
        if not isinstance(spec, str):
            raise ArgumentError(f"a device is 'cpu', 'cuda' or 'cuda:INDEX', got {spec!r}")
        kind, _, number = spec.strip().lower().partition(":")
        if number:
            if index is not None or not number.isdigit():
                raise ArgumentError(f"a device is 'cpu', 'cuda' or 'cuda:INDEX', got {spec!r}")
            index = int(number)
        if kind not in ("cpu", "cuda"):
            raise ArgumentError(f"unknown device {spec!r}; tinygen runs on 'cpu' and 'cuda' (CuPy)")
        if index is not None and (not isinstance(index, (int, np.integer)) or index < 0):
            raise ArgumentError(f"a device index is an integer >= 0, got {index!r}")
        if kind == "cpu" and index not in (None, 0):
            raise ArgumentError(f"the cpu device has no index {index}")
        object.__setattr__(self, "type", kind)
        object.__setattr__(self, "index", None if kind == "cpu" or index is None else int(index))

    def __setattr__(self, name, value):
        raise AttributeError("a device is immutable")

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except ArgumentError:
                return False
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and (self.index is None or other.index is None or self.index == other.index)

    def __hash__(self):
        return hash(self.type)

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type={self.type!r}{index})"


CPU = device("cpu")

_cupy = None  # the cupy module once it has been found usable (installed, and a GPU visible)


def load_cupy():
    """The `cupy` module, imported on the first request for the GPU; never when tinygen is imported.

    Raises `BackendUnavailableError` saying which is wrong: CuPy cannot be imported, or it can
    but sees no GPU (`import cupy` succeeds without one; `cupy.is_available()` does not).
    """
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as err:  # not installed, or built for another CUDA or NumPy
        raise BackendUnavailableError(
            f"device 'cuda' needs CuPy, which cannot be imported ({err}); "
            f"install it with: pip install 'tinygen[gpu]' (CuPy for CUDA 12), or run on device 'cpu'"
        ) from None
    try:
        available = bool(cupy.is_available())
        reason = "cupy.is_available() is False"
    except Exception as err:  # a broken driver install can raise instead of answering
        available, reason = False, f"cupy.is_available() raised {type(err).__name__}: {err}"
    if not available:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        raise BackendUnavailableError(
            f"CuPy {getattr(cupy, '__version__', '?')} is installed, but no GPU is visible ({reason}{hint}): "
            f"device 'cuda' needs an NVIDIA GPU and its driver; run on device 'cpu'"
        )
    _cupy = cupy
    return cupy


class CudaSource:
    """The kernels of one CUDA C file (a family's .cu, shipped beside its gpu_cupy.py), compiled by
    `cupy.RawModule` with `options` on the first request: once per process, and cached on disk by
    CuPy. `function(name)` returns a kernel, looked up once (a lookup is a driver call)."""

    def __init__(self, path, options):
        self.path, self.options = path, tuple(options)
        self.reset()

    def reset(self):
        """Forget the compiled module (tests/fake_cupy.py, when it swaps the CuPy in use)."""
        self._module, self._functions = None, {}

    def function(self, name):
        if name not in self._functions:
            if self._module is None:
                with open(self.path, encoding="utf-8") as f:
                    self._module = load_cupy().RawModule(code=f.read(), options=self.options)
            self._functions[name] = self._module.get_function(name)
        return self._functions[name]


def cuda_suffix(dtype, what="this kernel"):
    """"f32" or "f64": how the .cu files name a kernel's float32 and float64 instances. Other dtypes
    (float16, integers: e.g. unfold or relu of such a tensor) raise `DTypeError`, naming the dtype."""
    suffix = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}.get(np.dtype(dtype))
    if suffix is None:
        raise DTypeError(
            f"{what}: the CUDA kernels are compiled for float32 and float64 only, got dtype {np.dtype(dtype)}; "
            f"cast the tensor (.float()) or run the NumPy reference on the GPU with TINYGEN_KERNELS=numpy"
        )
    return suffix


def check_numba_dtype(what, *arrays):
    """Raise `DTypeError` naming the dtype where Numba cannot compile a kernel for an array's dtype
    (float16: Numba has no CPU float16 type, and failed deep inside its compiler)."""
    for a in arrays:
        if a.dtype == np.float16 or a.dtype.kind not in "biufc":
            raise DTypeError(
                f"{what}: the Numba kernels take float32 and float64 (unfold also integers and bools), got dtype "
                f"{a.dtype}; cast the tensor (.float()) or run the NumPy reference with TINYGEN_KERNELS=numpy"
            )


_sm_counts = {}  # GPU id -> multiprocessor count


def grid_blocks(total, block, blocks_per_sm):
    """Blocks of `block` threads for a grid-stride kernel over `total` work items on the current GPU:
    one item per thread where they fit, at most `blocks_per_sm` blocks per multiprocessor."""
    cupy = load_cupy()
    gpu = cupy.cuda.runtime.getDevice()
    if gpu not in _sm_counts:
        _sm_counts[gpu] = cupy.cuda.Device(gpu).attributes["MultiProcessorCount"]
    return max(1, min(-(-total // block), _sm_counts[gpu] * blocks_per_sm))


def device_of(array):
    """The `device` an array lives on: cpu for NumPy arrays and scalars, cuda:i for CuPy arrays."""
    if is_device_array(array):
        return device("cuda", array.device.id)
    return CPU


def _check_gpu_index(cupy, index):
    count = cupy.cuda.runtime.getDeviceCount()
    if index is not None and index >= count:
        raise BackendUnavailableError(f"device 'cuda:{index}' does not exist: {count} GPU(s) visible (cuda:0..cuda:{count - 1})")


def to_device(array, dev):
    """`array` (NumPy or CuPy) on device `dev`: itself when it is already there, else a copy."""
    dev = device(dev)
    if dev.type == "cpu":
        return array.get() if is_device_array(array) else array
    cupy = load_cupy()
    if is_device_array(array) and (dev.index is None or array.device.id == dev.index):
        return array
    _check_gpu_index(cupy, dev.index)
    with cupy.cuda.Device(dev.index if dev.index is not None else cupy.cuda.runtime.getDevice()):
        return cupy.array(array, copy=True) if is_device_array(array) else cupy.asarray(array)


def to_numpy(array):
    """`array` as a NumPy array (a copy from the GPU; CPU arrays and scalars as they are)."""
    return array.get() if is_device_array(array) else np.asarray(array)


def empty(shape, dtype, dev):
    """An uninitialised array on device `dev`."""
    dev = device(dev)
    if dev.type == "cpu":
        return np.empty(shape, dtype)
    cupy = load_cupy()
    if dev.index is None:
        return cupy.empty(shape, dtype)
    _check_gpu_index(cupy, dev.index)
    with cupy.cuda.Device(dev.index):
        return cupy.empty(shape, dtype)


def requested_device():
    """The value of ``TINYGEN_DEVICE`` (default ``cpu``), checked; the only place that reads it."""
    spec = os.environ.get("TINYGEN_DEVICE", "cpu").strip() or "cpu"
    try:
        return device(spec)
    except ArgumentError as err:
        raise ArgumentError(f"TINYGEN_DEVICE={spec!r}: {err}") from None


_default_device = None  # resolved from TINYGEN_DEVICE on first use, or set by set_default_device


def get_default_device():
    """The device of new tensors (`tensor`, `zeros`, `randn`, layers' parameters...): ``cpu`` unless
    ``TINYGEN_DEVICE`` or `set_default_device` says otherwise."""
    global _default_device
    if _default_device is None:
        dev = requested_device()
        if dev.type == "cuda":
            try:
                load_cupy()
            except BackendUnavailableError as err:
                raise BackendUnavailableError(f"TINYGEN_DEVICE={dev}: {err}") from None
        _default_device = dev
    return _default_device


def set_default_device(dev):
    """Make `dev` ("cpu", "cuda", "cuda:i" or a `device`) the device of new tensors.

    Asking for ``cuda`` where CuPy is missing or no GPU is visible raises
    `BackendUnavailableError` here, at once.
    """
    global _default_device
    dev = device(dev)
    if dev.type == "cuda":
        _check_gpu_index(load_cupy(), dev.index)
    _default_device = dev


def gpu_info():
    """The visible GPUs, for `tinygen info`: (list of dicts, None) or ([], the reason there are none).

    Never raises; imports CuPy (only `tinygen info` and the benchmarks call this).
    """
    try:
        cupy = load_cupy()
    except BackendUnavailableError as err:
        return [], str(err)
    gpus = []
    try:
        runtime = cupy.cuda.runtime
        for i in range(runtime.getDeviceCount()):
            props = runtime.getDeviceProperties(i)
            name = props["name"]
            gpus.append(dict(
                index=i, name=name.decode() if isinstance(name, bytes) else str(name),
                memory_gib=props["totalGlobalMem"] / 2**30,
                compute_capability=f"{props['major']}.{props['minor']}",
            ))
        versions = dict(cupy=cupy.__version__, cuda_runtime=runtime.runtimeGetVersion(), driver=runtime.driverGetVersion())
    except Exception as err:  # a driver problem shows up here
        return gpus, f"{type(err).__name__}: {err}"
    for g in gpus:
        g.update(versions)
    return gpus, None


# --- kernel choice --------------------------------------------------------------------------


def requested_kernels():
    """The value of the one knob, ``TINYGEN_KERNELS`` (default ``auto``), checked.

    This is the only place that reads it. An unknown name raises `BackendUnavailableError`.
    """
    choice = os.environ.get("TINYGEN_KERNELS", "auto").strip().lower() or "auto"
    if choice not in KERNEL_BACKENDS:
        raise BackendUnavailableError(
            f"TINYGEN_KERNELS={choice!r} is not a kernel backend this tinygen provides; "
            f"choose one of {', '.join(KERNEL_BACKENDS)}"
        )
    return choice


def kernel_backend(provides=("numpy",), xp=np):
    """The kernel set a family of kernels should run on arrays of module `xp`: ``"numpy"``,
    ``"numba"`` or ``"cupy"``.

    `provides` names the backends the calling family implements (``kernels/conv2d`` passes
    ``("numpy", "numba", "cupy")``). On NumPy arrays ``auto`` picks Numba when it is installed
    and the family has Numba kernels, else the NumPy reference; on CuPy arrays (`xp` is cupy)
    it picks the family's CUDA kernels, else the NumPy reference, which runs on CuPy arrays
    through `xp`. A named backend must be installed and match the arrays' device or this
    raises `BackendUnavailableError`; it is returned even where the family lacks it, so that
    the family's dispatcher raises rather than silently running something else.

    NOTE: the default, ``("numpy",)``, is a family with only the NumPy reference: ``auto``
    keeps it on NumPy, ``TINYGEN_KERNELS=numba`` makes its dispatcher refuse.
    """
    choice = requested_kernels()
    if xp is not np:  # CuPy arrays: the GPU kernels, or the NumPy reference on CuPy
        if choice == "numba":
            raise BackendUnavailableError(
                "TINYGEN_KERNELS=numba runs CPU kernels, but these arrays are on the GPU (CuPy); "
                "use auto or cupy (CUDA kernels) or numpy (the NumPy reference on CuPy arrays)"
            )
        if choice == "cupy" or (choice == "auto" and "cupy" in provides):
            return "cupy"
        return "numpy"
    if choice == "cupy":
        raise BackendUnavailableError(
            "TINYGEN_KERNELS=cupy runs CUDA kernels on CuPy arrays, but these are NumPy arrays (device cpu); "
            "move the tensors to the GPU (.to('cuda')) or unset TINYGEN_KERNELS"
        )
    if choice == "numpy":
        return "numpy"
    if choice == "numba":
        if load_numba() is None:
            raise BackendUnavailableError(
                f"TINYGEN_KERNELS=numba, but Numba cannot be imported ({_numba_error}); "
                f"install it with: pip install tinygen[cpu]   (or unset TINYGEN_KERNELS)"
            )
        return "numba"
    return "numba" if "numba" in provides and load_numba() is not None else "numpy"


KERNEL_MODULES = {"numpy": "reference", "numba": "cpu_numba", "cupy": "gpu_cupy"}  # each family's files


def kernel_module(package, provides, xp=np):
    """The module of the kernel family `package` (e.g. "tinygen.kernels.conv2d", whose backends are
    `provides`) that runs on arrays of module `xp` under `kernel_backend`: its reference.py,
    cpu_numba.py or gpu_cupy.py, imported on the first request, so that importing tinygen imports
    neither Numba nor CuPy. A backend the family lacks raises rather than running another."""
    chosen = kernel_backend(provides=provides, xp=xp)
    if chosen not in provides:
        raise BackendUnavailableError(f"no {package.rsplit('.', 1)[-1]} kernels for kernel backend {chosen!r}")
    return importlib.import_module(f"{package}.{KERNEL_MODULES[chosen]}")


# The threading policy for Numba's pool, applied once, before the pool starts (see load_numba).
NUMBA_THREADING_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
NUMBA_THREADING_LAYERS = ["omp", "tbb", "workqueue"]

_numba = None  # the numba module once imported; False when it cannot be
_numba_error = None


def load_numba():
    """The `numba` module, or None where it cannot be imported. Imported once, on first use.

    Importing tinygen never imports Numba: only the first kernel call that may run Numba
    kernels (or `kernel_info`) gets here. The threading policy is applied before Numba's
    thread pool starts; see the module docstring of `tinygen.kernels.conv2d.cpu_numba`.
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
    """`a @ b` for tinygen's own products (ops.MatMul): under the same threading policy as the
    Numba kernels while those run (`split_matmul` for 2-D floats, single-threaded OpenBLAS
    otherwise), plain `a @ b` when they do not (NumPy kernels, CuPy arrays, no OpenBLAS)."""
    if type(a) is not np.ndarray or type(b) is not np.ndarray:
        return a @ b
    try:
        numba_kernels = kernel_backend(provides=("numpy", "numba")) == "numba"
    except BackendUnavailableError:  # the kernels themselves will say so; a product needs no kernels
        numba_kernels = False
    blas = blas_pool() if numba_kernels else None
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


def kernel_info():
    """What runs the kernels here, for `tinygen info` and the benchmarks: a dict of plain values.

    requested: the ``TINYGEN_KERNELS`` knob; backend: what it resolves to for kernels that have
    a Numba version (None, with the reason in `error`, when it cannot be honoured); numba:
    Numba's version; threading_layer and threads: Numba's pool; blas: how the kernels' BLAS
    products are threaded; numba_error: why Numba cannot be imported, if it cannot. Never raises.
    """
    info = dict(requested=None, backend=None, error=None, numba=None, numba_error=None,
                threading_layer=None, threads=None, blas=None)
    try:
        info["requested"] = requested_kernels()
        # for CPU (NumPy) arrays; CuPy arrays run the CUDA kernels unless TINYGEN_KERNELS=numpy
        info["backend"] = "cupy" if info["requested"] == "cupy" else kernel_backend(provides=("numpy", "numba"))
    except BackendUnavailableError as err:
        info["error"] = str(err)
    numba = load_numba() if info["requested"] in ("auto", "numba") else None
    if numba is not None:
        blas = "OpenBLAS, one thread on each tinygen thread" if blas_pool() else "NumPy's BLAS, its own threads"
        info.update(numba=numba.__version__, threading_layer=numba.threading_layer(),
                    threads=numba.get_num_threads(), blas=blas)
    elif _numba_error is not None:
        info["numba_error"] = str(_numba_error)
    return info


# --- dtypes -------------------------------------------------------------------------------

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_default_dtype = np.dtype(np.float32)


def get_default_dtype():
    """The dtype of new floating-point tensors (float32 unless changed)."""
    return _default_dtype


def set_default_dtype(dtype):
    """Make `dtype` (float32 or float64) the dtype of new floating-point tensors."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise ArgumentError(f"default dtype must be float32 or float64, got {dtype}")
    _default_dtype = dtype


# --- randomness ---------------------------------------------------------------------------

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator behind randn, rand, dropout and every weight initialisation."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ArgumentError(f"manual_seed takes a non-negative integer, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator():
    """The current NumPy random generator (replaced by each `manual_seed`)."""
    return _generator


def get_rng_state():
    """The generator's state as plain Python data (JSON-friendly), for checkpoints."""
    return _generator.bit_generator.state


def set_rng_state(state):
    """Restore a state from `get_rng_state`, so a resumed run draws the same numbers."""
    try:
        _generator.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as err:
        raise ArgumentError(f"not a random generator state of {type(_generator.bit_generator).__name__}: {err}") from err


class fork_rng:
    """Context manager: draw from a generator seeded with `seed`, then restore the outer one.

    Lets a training run draw its sample grids from a fixed seed without moving the training
    run's own random stream (so a resumed run stays on the uninterrupted trajectory).
    """

    def __init__(self, seed):
        self.seed = seed

    def __enter__(self):
        self._outer = _generator
        return manual_seed(self.seed)

    def __exit__(self, *exc):
        global _generator
        _generator = self._outer
