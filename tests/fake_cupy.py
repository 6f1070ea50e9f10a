"""A stand-in for CuPy on a machine without a GPU: NumPy arrays behind CuPy's rules, CUDA C run on the CPU.

tinygen's GPU paths (devices, `.to("cuda")`, the kernels' CuPy wrappers) can then run, and be
tested, where no GPU is. `installed()` puts this module in ``sys.modules["cupy"]`` for the
duration of a `with` block (and resets tinygen's cached CuPy); tests use it through the
``fake_gpu`` fixture, `benchmarks/gpu_check.py --dry-run` for its dry run.

- `ndarray` wraps a NumPy array, and ``type(a).__module__`` is ``"cupy"``, so tinygen takes it for a
  GPU array. As with CuPy, arithmetic, functions and indexing that mix it with a NumPy array raise
  `TypeError`, and ``np.asarray(a)`` raises (CuPy refuses implicit copies to the host). Copies to
  the host (`get`, `asnumpy`, `item`, `float`, `bool`, `tolist`) are counted in
  ``transfers["to_host"]`` and copies from it (`asarray`, `array` of host data) in
  ``transfers["to_device"]``: a test can assert that a loop makes no host round trip.
- `RawModule` compiles CUDA C with the host's C++ compiler against `cuda_emulation.h` and runs a
  kernel as a small grid (`EMULATED_GRID` blocks of `EMULATED_BLOCK` threads, whatever the launch
  asks for) of calls one after another. A grid-stride kernel must cover all its work with any grid,
  so this checks that too; kernels with shared memory or __syncthreads are not supported. Arguments
  must be arrays or NumPy scalars (their C types), as the real launch wants; every launch is
  counted in `launches` by kernel name.
- Races: each emulated thread runs on its own copy of the launch's arrays as they were at the
  launch (arrays that overlap share one copy); when all have run, their stores are merged into
  the arrays and every atomicAdd's addition is added, in the order the threads ran. A thread
  never sees another's writes, as nothing orders them on a GPU within a launch. Two threads that
  store different values to one location (a plain `+=` where atomicAdd belongs), or a plain store
  and atomicAdd on one location, fail the launch with `DataRaceError`, naming the kernel, the
  threads, the argument and the element; the arrays are then left as they were.
  tests/kernels/test_cuda_emulation.py shows each case.

What the race emulation cannot catch: a race between work items that one emulated thread runs in
turn but a GPU would give to different threads (a few threads share a grid-stride loop; a GPU's
thousands meet pairs these never do); stores of equal values (harmless on a GPU too); a thread
that needs another's write within a launch (it reads the launch-time value: a wrong result a test
may see, never an error); anything in memory a kernel reaches through pointers stored in an
array (kernels/optim's tables: all threads share it, so its races show nothing); what atomicAdd
returns (the launch-time value plus the thread's own earlier additions, never another's; only
atomicAdd on double is emulated). Reads and writes out of an array's bounds are not caught here
(a forgotten element is, where the tests poison the outputs with NaN); on a GPU,
`benchmarks/gpu_check.py` runs the kernel tests under compute-sanitizer's memcheck.

Not emulated: streams, events and timing (they exist and do nothing), several GPUs (there is one,
id 0), memory pools, and CuPy's own kernels (everything else runs in NumPy).
"""

import contextlib
import ctypes
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
import weakref
from collections import Counter

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__version__ = "0.0+fake (NumPy)"

EMULATED_GRID = 2  # blocks of an emulated launch (at most the launch's own)
EMULATED_BLOCK = 3  # threads per block of an emulated launch (at most the launch's own)
HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_emulation.h")

transfers = Counter()  # "to_host" / "to_device": copies between the host and the fake GPU
launches = Counter()  # kernel name -> launches of RawModule kernels


def compiler():
    """The C++ compiler RawModule uses (``CXX`` or g++), or None where there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


# --- arrays -------------------------------------------------------------------------------------


def _unwrap(obj):
    """The NumPy arrays inside `obj` (a fake array, or lists/tuples/dicts of them); a NumPy array with
    dimensions there is refused, as CuPy refuses them."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, np.ndarray):
        raise TypeError(f"Unsupported type {type(obj)} (fake CuPy: a NumPy array mixed with GPU arrays)")
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj):
    """NumPy results as fake GPU arrays (a NumPy scalar as a 0-d array, as CuPy returns them)."""
    if isinstance(obj, np.ndarray):
        return ndarray(obj)
    if isinstance(obj, np.generic):
        return ndarray(np.asarray(obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_wrap(o) for o in obj)
    return obj


def _call(func, args, kwargs):
    """func on the unwrapped arguments; a result that is an argument's array comes back as that argument."""
    out = kwargs.get("out")
    candidates = list(args) + list(kwargs.values()) + (list(out) if isinstance(out, tuple) else [])
    mine = {id(a._a): a for a in candidates if isinstance(a, ndarray)}
    result = func(*_unwrap(args), **_unwrap(kwargs))
    if isinstance(result, np.ndarray) and id(result) in mine:
        return mine[id(result)]
    if isinstance(result, tuple):
        return tuple(mine[id(r)] if id(r) in mine else _wrap(r) for r in result)
    return _wrap(result)


_owners = weakref.WeakValueDictionary()  # id of a NumPy array that owns its memory -> the fake array of it


class _Pointer:
    def __init__(self, ptr):
        self.ptr = ptr


class _DeviceRef:
    id = 0


class ndarray(NDArrayOperatorsMixin):
    """A fake GPU array: a NumPy array in `_a`, with CuPy's refusals."""

    __array_priority__ = 1100

    def __init__(self, a):
        self._a = a
        if a.base is None:
            _owners[id(a)] = self

    @property
    def base(self):
        """The fake array that owns this view's memory, as CuPy's (and NumPy's) base: the same object
        for every view of it, where a new wrapper of the NumPy base would be a stranger each time."""
        base = self._a.base
        if base is None:
            return None
        owner = _owners.get(id(base))
        return owner if owner is not None and owner._a is base else _wrap(base)

    # attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    device = property(lambda self: _DeviceRef())
    data = property(lambda self: _Pointer(self._a.ctypes.data))

    def __getattr__(self, name):  # methods (reshape, sum, astype, ...) run on the NumPy array
        if name == "_a" or name.startswith("__"):  # no __array_interface__: NumPy would read the array through it
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *args, **kwargs: _call(attr, args, kwargs)
        return _wrap(attr)

    # CuPy refuses implicit conversion to NumPy
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array "
            "explicitly. (fake CuPy)"
        )

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _call(func, args, kwargs)

    def __getitem__(self, index):
        return _wrap(self._a[_unwrap(index)])

    def __setitem__(self, index, value):
        self._a[_unwrap(index)] = _unwrap(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in self._a)

    # copies to the host, counted
    def get(self, stream=None):
        transfers["to_host"] += 1
        return self._a.copy()

    def item(self):
        transfers["to_host"] += 1
        return self._a.item()

    def tolist(self):
        transfers["to_host"] += 1
        return self._a.tolist()

    def __bool__(self):
        transfers["to_host"] += 1
        return bool(self._a)

    def __float__(self):
        transfers["to_host"] += 1
        return float(self._a)

    def __int__(self):
        transfers["to_host"] += 1
        return int(self._a)

    def __index__(self):
        transfers["to_host"] += 1
        return self._a.__index__()

    def __repr__(self):
        return f"array({np.array2string(self._a, separator=', ')}, fake GPU)"

    def __copy__(self):
        return ndarray(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray(self._a.copy())


ndarray.__module__ = "cupy"  # what tinygen.backend looks at


class _Ufunc:
    """A NumPy ufunc that refuses NumPy arrays, as CuPy's do."""

    def __init__(self, ufunc):
        self._ufunc = ufunc

    def __call__(self, *args, **kwargs):
        return _call(self._ufunc, args, kwargs)

    def __getattr__(self, name):
        method = getattr(self._ufunc, name)
        return (lambda *args, **kwargs: _call(method, args, kwargs)) if callable(method) else method


# --- the module's functions -----------------------------------------------------------------------


def is_available():
    return True


def asarray(a, dtype=None, order=None, blocking=False):
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else ndarray(a._a.astype(dtype))
    transfers["to_device"] += 1
    return ndarray(np.array(a, dtype=dtype, copy=True))


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(a, ndarray):
        return ndarray(np.array(a._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    transfers["to_device"] += 1
    return ndarray(np.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asnumpy(a, stream=None):
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)} (fake CuPy: ascontiguousarray takes GPU arrays)")
    b = np.ascontiguousarray(a._a, dtype=dtype)
    return a if b is a._a else ndarray(b)


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def __getattr__(name):
    """Everything else is NumPy's, run on the unwrapped arrays (NumPy arrays refused)."""
    attr = getattr(np, name)
    if isinstance(attr, np.ufunc):
        return _Ufunc(attr)
    if isinstance(attr, type) or not callable(attr):
        return attr  # dtypes (cupy.float32), constants
    return lambda *args, **kwargs: _call(attr, args, kwargs)


lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(
    as_strided=lambda x, shape=None, strides=None: ndarray(np.lib.stride_tricks.as_strided(x._a, shape, strides))
))


# --- cupy.cuda: one fake GPU ----------------------------------------------------------------------


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise RuntimeError(f"fake CuPy has one GPU, id 0, not {self.id}")
        self.attributes = {"MultiProcessorCount": 2}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass

    def use(self):
        pass


class Event:
    def __init__(self, *args, **kwargs):
        self.time = None

    def record(self, stream=None):
        self.time = time.perf_counter()

    def synchronize(self):
        pass


class _Stream:
    def synchronize(self):
        pass


def _properties(i):
    return {"name": b"fake GPU (NumPy on the CPU)", "totalGlobalMem": 0, "major": 0, "minor": 0,
            "multiProcessorCount": 2}


cuda = types.SimpleNamespace(
    Device=Device,
    Event=Event,
    get_current_stream=lambda: _Stream(),
    get_elapsed_time=lambda start, end: 1e3 * (end.time - start.time),
    runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 1, getDevice=lambda: 0, getDeviceProperties=_properties,
        runtimeGetVersion=lambda: 0, driverGetVersion=lambda: 0,
    ),
)


# --- RawModule: CUDA C compiled for the CPU ------------------------------------------------------

_CTYPES = {
    np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double,
    np.dtype(np.int32): ctypes.c_int32, np.dtype(np.uint32): ctypes.c_uint32,
    np.dtype(np.int64): ctypes.c_int64, np.dtype(np.uint64): ctypes.c_uint64,
}
_build_dir = None


class RawModule:
    """`cupy.RawModule(code=...)`: the source compiled once into a shared library and loaded."""

    def __init__(self, code=None, options=(), name_expressions=None, path=None, backend="nvrtc", **kwargs):
        global _build_dir
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("fake CuPy's RawModule needs a C++ compiler (g++, or CXX)")
        flags = ["-std=c++17" if o.startswith(("--std", "-std")) else None for o in options]
        flags = ["-O2", "-shared", "-fPIC", "-fno-strict-aliasing", "-ffp-contract=off", "-Wno-unknown-pragmas",
                 *[f for f in flags if f]]
        with open(HEADER, encoding="utf-8") as f:
            header = f.read()
        key = hashlib.sha256((header + code + " ".join(flags)).encode()).hexdigest()[:16]
        _build_dir = _build_dir or tempfile.mkdtemp(prefix="tinygen-fake-cupy-")
        library = os.path.join(_build_dir, f"module-{key}.so")
        if not os.path.exists(library):
            source = os.path.join(_build_dir, f"module-{key}.cpp")
            with open(source, "w", encoding="utf-8") as f:
                f.write(code)
            subprocess.run([cxx, *flags, "-include", HEADER, source, "-o", library], check=True,
                           capture_output=True, text=True)
        self._lib = ctypes.CDLL(library)
        self._set = self._lib.tinygen_emu_set
        self._set.argtypes = [ctypes.c_uint] * 4
        self._atomics = self._lib.tinygen_emu_atomics
        self._atomics.argtypes = [ctypes.POINTER(ctypes.POINTER(ctypes.c_uint64)),
                                  ctypes.POINTER(ctypes.POINTER(ctypes.c_double))]
        self._atomics.restype = ctypes.c_uint64
        self._uses_atomics = "atomicAdd" in code

    def atomics(self):
        """The atomicAdd log of the thread that ran last: (addresses as int64, values), copied."""
        addresses, values = ctypes.POINTER(ctypes.c_uint64)(), ctypes.POINTER(ctypes.c_double)()
        n = self._atomics(ctypes.byref(addresses), ctypes.byref(values)) if self._uses_atomics else 0
        if n == 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        return (np.ctypeslib.as_array(addresses, (n,)).astype(np.int64),
                np.ctypeslib.as_array(values, (n,)).copy())

    def get_function(self, name):
        return RawKernel(self, name)


class RawKernel:
    def __init__(self, module, name):
        self.module, self.name = module, name
        self._function = getattr(module._lib, name)  # AttributeError for an unknown name, as CuPy raises
        self._function.restype = None

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        grid, block = tuple(grid), tuple(block)
        if not all(isinstance(v, (int, np.integer)) and v >= 1 for v in grid + block):
            raise ValueError(f"{self.name}: grid {grid} and block {block} must be positive integers")
        converted = []
        for i, a in enumerate(args):
            if isinstance(a, ndarray):
                if not a._a.flags.c_contiguous:
                    raise ValueError(f"{self.name}: argument {i} is not C-contiguous (the kernel would read garbage)")
                converted.append(ctypes.c_void_p(a._a.ctypes.data))
            elif isinstance(a, np.generic) and a.dtype in _CTYPES:
                converted.append(_CTYPES[a.dtype](a.item()))
            else:
                raise TypeError(f"{self.name}: argument {i} is a {type(a).__name__}; pass GPU arrays or NumPy "
                                f"scalars of the kernel's C types (fake CuPy checks what CuPy would guess)")
        launches[self.name] += 1
        blocks, threads = min(grid[0], EMULATED_GRID), min(block[0], EMULATED_BLOCK)
        regions = _regions([(i, a._a.ctypes.data, a._a.nbytes, a._a.itemsize) for i, a in enumerate(args)
                            if isinstance(a, ndarray) and a._a.nbytes])
        for b in range(blocks):
            for t in range(threads):
                pointers = {}
                for region in regions:
                    pointers.update(region.fresh_copy())
                self.module._set(b, t, blocks, threads)
                self._function(*(pointers.get(i, c) for i, c in enumerate(converted)))
                addresses, values = self.module.atomics()
                for region in regions:
                    region.collect(f"{self.name} (block {b}, thread {t})", addresses, values)
        for region in regions:
            region.check(self.name)
        for region in regions:  # only once every region is checked: a launch that fails changes nothing
            region.write()


class DataRaceError(RuntimeError):
    """Two threads of one emulated launch wrote one location: different values with plain stores,
    or a plain store and an atomicAdd."""


_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _regions(arrays):
    """The memory of a launch's arrays, (argument index, pointer, bytes, itemsize), as `_Region`s:
    arrays that overlap (an output that is also an input) share one."""
    groups = []
    for a in sorted(arrays, key=lambda a: a[1]):
        if groups and a[1] < max(p + n for _, p, n, _ in groups[-1]):
            groups[-1].append(a)
        else:
            groups.append([a])
    return [_Region(group) for group in groups]


def _doubles(words, offsets):
    """The doubles at byte `offsets` of the array `words` (any alignment)."""
    return words.view(np.uint8)[offsets[:, None] + np.arange(8)].view(np.float64).ravel()


class _Region:
    """Memory that arrays of one launch cover, in words of their smallest element: the real memory
    (which no thread writes: it keeps the launch-time contents until `write`), the threads' plain
    stores merged so far and which thread stored each word (made at the first store), and the
    atomic additions."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.start = min(p for _, p, _, _ in arrays)
        end = max(p + n for _, p, n, _ in arrays)
        common = math.gcd(*(size for *_, size in arrays), *(p - self.start for _, p, _, _ in arrays))
        self.word = next(w for w in (8, 4, 2, 1) if common % w == 0)
        raw = (ctypes.c_uint8 * (end - self.start)).from_address(self.start)
        self.memory = np.frombuffer(raw, np.uint8).view(_WORDS[self.word])
        self.merged = self.owner = None
        self.writers = []  # names of the threads that ran, indexed by `owner`
        self.atomic_offsets, self.atomic_values = [], []  # per thread, in the order the threads ran
        self.copy = None

    def where(self, word):
        byte = self.start + int(word) * self.word
        i, p, _, size = next(a for a in self.arrays if a[1] <= byte < a[1] + a[2])
        return f"argument {i}, element {(byte - p) // size}"

    def words_of_doubles(self, offsets):
        return ((offsets[:, None] + np.arange(0, 8, self.word)) // self.word).ravel()

    def fresh_copy(self):
        """The launch-time contents copied for the next thread: {argument index: its pointer there}."""
        self.copy = self.memory.copy()
        return {i: ctypes.c_void_p(self.copy.ctypes.data + p - self.start) for i, p, _, _ in self.arrays}

    def collect(self, thread, addresses, values):
        """Merge the plain stores of the thread that ran on `fresh_copy` and keep its atomic additions
        (`addresses` in any region's copy; `values`); DataRaceError where threads clash."""
        stored = np.flatnonzero(self.copy != self.memory)
        base = self.copy.ctypes.data
        inside = (addresses >= base) & (addresses < base + self.copy.nbytes) if addresses.size else None
        if inside is not None and inside.any():
            offsets, values = addresses[inside] - base, values[inside]
            # The copy holds the launch-time value plus the thread's additions, in its order, where
            # it added: anything else there is a plain store beside the atomics.
            unique, inverse = np.unique(offsets, return_inverse=True)
            expected = _doubles(self.memory, unique)
            np.add.at(expected, inverse, values)
            mixed = expected.view(np.uint64) != _doubles(self.copy, unique).view(np.uint64)
            if mixed.any():
                word = unique[mixed.argmax()] // self.word
                raise DataRaceError(f"{thread} stored to {self.where(word)} and added to it with atomicAdd")
            stored = np.setdiff1d(stored, self.words_of_doubles(offsets), assume_unique=False)
            self.atomic_offsets.append(offsets)
            self.atomic_values.append(values)
        if stored.size:
            if self.owner is None:
                self.merged, self.owner = np.empty_like(self.memory), np.full(self.memory.size, -1, np.int32)
            clash = (self.owner[stored] >= 0) & (self.copy[stored] != self.merged[stored])
            if clash.any():
                word = stored[clash.argmax()]
                raise DataRaceError(f"{self.writers[self.owner[word]]} and {thread} stored different values to "
                                    f"{self.where(word)}: a race (a read-modify-write that needs atomicAdd?)")
            self.merged[stored] = self.copy[stored]
            self.owner[stored] = len(self.writers)
        self.writers.append(thread)
        self.copy = None

    def check(self, kernel):
        """DataRaceError where one thread stored to a location that others add to with atomicAdd."""
        if self.atomic_offsets and self.owner is not None:
            both = np.intersect1d(self.words_of_doubles(np.concatenate(self.atomic_offsets)),
                                  np.flatnonzero(self.owner >= 0))
            if both.size:
                raise DataRaceError(f"{self.writers[self.owner[both[0]]]} stored to {self.where(both[0])}, which "
                                    f"other threads of {kernel} add to with atomicAdd")

    def write(self):
        """The merged stores into the real memory, then every thread's atomic additions."""
        if self.owner is not None:
            written = self.owner >= 0
            self.memory[written] = self.merged[written]
        if self.atomic_offsets:
            offsets, values = np.concatenate(self.atomic_offsets), np.concatenate(self.atomic_values)
            unique, inverse = np.unique(offsets, return_inverse=True)
            sums = _doubles(self.memory, unique)
            np.add.at(sums, inverse, values)  # in the order the threads ran, as one memory would have added
            self.memory.view(np.uint8)[unique[:, None] + np.arange(8)] = sums.view(np.uint8).reshape(-1, 8)


# --- installing it as cupy --------------------------------------------------------------------------


def _reset_tinygen():
    """Forget the CuPy (and compiled modules) tinygen has cached."""
    from tinygen import backend
    from tinygen.kernels import gpu_runtime

    backend._cupy = None
    gpu_runtime._sm_counts.clear()
    for family in ("conv2d", "diffusion", "normalization", "optim"):
        module = sys.modules.get(f"tinygen.kernels.{family}.gpu_cupy")
        if module is not None:
            module._source.reset()


@contextlib.contextmanager
def installed():
    """This module as ``cupy`` inside the block; the real one (or none) again after it."""
    # The real CuPy's modules (cupy.*, and cupyx, which CuPy registers to load lazily) leave
    # sys.modules for the block: one of them loaded under the fake would fail to import.
    real = {name: module for name, module in sys.modules.items()
            if name == "cupy" or name.startswith(("cupy.", "cupyx"))}
    for name in real:
        del sys.modules[name]
    sys.modules["cupy"] = sys.modules[__name__]
    _reset_tinygen()
    try:
        yield sys.modules[__name__]
    finally:
        for name in [n for n in sys.modules if n == "cupy" or n.startswith(("cupy.", "cupyx"))]:
            del sys.modules[name]
        sys.modules.update(real)
        _reset_tinygen()
