"""Where arrays live: the array module, the devices, the default dtype and the random generator.

- `get_array_module(*arrays)` returns the module (NumPy, or CuPy for GPU arrays) that one body
  of code should call, chainer-style, so that every op serves both kinds of array. CuPy is only
  imported when a CuPy array is actually seen; importing tinygen never touches it.
- Devices: `device("cpu")` (NumPy arrays) or `device("cuda[:i]")` (CuPy arrays on GPU i);
  `load_cupy()` imports CuPy on the first request for ``cuda`` and raises
  `BackendUnavailableError` saying whether CuPy is missing or no GPU is visible (`import cupy`
  succeeds on a machine without a GPU: `cupy.is_available()` decides); `to_device` moves an
  array; the default device of new tensors is ``TINYGEN_DEVICE`` (read only by
  `requested_device`) or what `set_default_device` set.
- `get_default_dtype` / `set_default_dtype`: the dtype of new floating-point tensors.
- `manual_seed` / `generator` hold the one random generator every tinygen op draws from.

Which kernels run on these arrays (the ``TINYGEN_KERNELS`` knob, Numba's threads, the CUDA
sources) is decided beside the kernels, in `tinygen.kernels.dispatch`.
"""

import os
import sys

import numpy as np

from tinygen.errors import ArgumentError, BackendUnavailableError

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
