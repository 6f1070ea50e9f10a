"""Which kernels run: the one knob, and the one seam between the ops and the kernel families.

Each folder of kernels/ is a family: `reference.py` (the plain NumPy spec, which also runs on
CuPy arrays through `xp`), `cpu_numba.py` and `gpu_cupy.py`, the same functions with the same
arguments. Its `__init__.py` makes one `KernelFamily` and forwards each function through
`KernelFamily.function`, which picks the implementation, imports it on the first request (so
that importing tinygen imports neither Numba nor CuPy) and counts the call in `calls`, keyed by
(module, function), e.g. ``calls["cpu_numba", "conv2d_forward"]``: a test can check which module
really ran.

The knob is ``TINYGEN_KERNELS``: ``auto`` (the default), ``numpy``, ``numba`` or ``cupy``, read in
one place (`_knob`) and checked by `requested_kernels`. ``auto`` runs the Numba kernels on NumPy
arrays when Numba can be imported, and the CUDA kernels on CuPy arrays. Asking for a backend that cannot run here raises
`BackendUnavailableError`; nothing falls back silently. The choice is made once for each
setting of the knob and array module, and remembered: a call then costs one lookup.
`kernel_info()` says what runs, with which threads.
"""

import importlib
import os
from collections import Counter

import numpy as np

from tinygen.backend import device_of, get_array_module, is_device_array
from tinygen.errors import BackendUnavailableError, DeviceMismatchError
from tinygen.kernels import cpu_runtime

KERNEL_BACKENDS = ("auto", "numpy", "numba", "cupy")
KERNEL_MODULES = {"numpy": "reference", "numba": "cpu_numba", "cupy": "gpu_cupy"}  # each family's files


def _knob():
    """``TINYGEN_KERNELS`` as set (None when unset): the only place that reads it."""
    return os.environ.get("TINYGEN_KERNELS")


def requested_kernels():
    """The value of the one knob, ``TINYGEN_KERNELS`` (default ``auto``), checked.

    An unknown name raises `BackendUnavailableError`.
    """
    choice = (_knob() or "auto").strip().lower() or "auto"
    if choice not in KERNEL_BACKENDS:
        raise BackendUnavailableError(
            f"TINYGEN_KERNELS={choice!r} is not a kernel backend this tinygen provides; "
            f"choose one of {', '.join(KERNEL_BACKENDS)}"
        )
    return choice


def kernel_backend(provides=("numpy",), xp=np, choice=None):
    """The kernel set a family of kernels should run on arrays of module `xp`: ``"numpy"``,
    ``"numba"`` or ``"cupy"``, for the knob's `choice` (default: `requested_kernels()`).

    `provides` names the backends the calling family implements (``kernels/conv2d`` passes
    ``("numpy", "numba", "cupy")``). On NumPy arrays ``auto`` picks Numba when it is installed
    and the family has Numba kernels, else the NumPy reference; on CuPy arrays (`xp` is cupy)
    it picks the family's CUDA kernels, else the NumPy reference, which runs on CuPy arrays
    through `xp`. A named backend must be installed and match the arrays' device or this
    raises `BackendUnavailableError`; it is returned even where the family lacks it, so that
    the family raises rather than silently running something else.

    NOTE: the default, ``("numpy",)``, is a family with only the NumPy reference: ``auto``
    keeps it on NumPy, ``TINYGEN_KERNELS=numba`` makes it refuse.
    """
    choice = requested_kernels() if choice is None else choice
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
        if cpu_runtime.load_numba() is None:
            raise BackendUnavailableError(
                f"TINYGEN_KERNELS=numba, but Numba cannot be imported ({cpu_runtime._numba_error}); "
                f"install it with: pip install tinygen[cpu]   (or unset TINYGEN_KERNELS)"
            )
        return "numba"
    return "numba" if "numba" in provides and cpu_runtime.load_numba() is not None else "numpy"


_chosen = {}  # (family package or "matmul", the knob as set, array module) -> what runs there


class KernelFamily:
    """One folder of kernels/, e.g. ``KernelFamily("tinygen.kernels.conv2d", ("numpy", "numba",
    "cupy"))``: `provides` names the backends it has files for.

    `host_only` marks a family that works on host memory whatever the arrays' device (PNG
    decoding, on a file's bytes): under ``TINYGEN_KERNELS=cupy`` it runs as under ``auto``.
    """

    def __init__(self, package, provides, host_only=False):
        self.package, self.provides, self.host_only = package, tuple(provides), host_only
        self.calls = Counter()  # (module name, function name) -> number of calls forwarded there

    def implementation(self, xp=np):
        """The module holding this family's kernels for the current knob and arrays of module `xp`."""
        key = (self.package, _knob(), xp)
        module = _chosen.get(key)
        if module is None:
            choice = requested_kernels()
            if self.host_only and choice == "cupy":
                choice = "auto"
            chosen = kernel_backend(self.provides, xp, choice)
            if chosen not in self.provides:
                raise BackendUnavailableError(
                    f"no {self.package.rsplit('.', 1)[-1]} kernels for kernel backend {chosen!r}"
                )
            module = _chosen[key] = importlib.import_module(f"{self.package}.{KERNEL_MODULES[chosen]}")
        return module

    def function(self, name, *arrays):
        """The function `name` of the implementation for `arrays` (all on one device), counted in
        `calls`. No arrays, or None: the implementation for NumPy arrays."""
        xp = get_array_module(*arrays)
        if xp is not np and not all(is_device_array(a) for a in arrays):
            found = ", ".join(f"{tuple(a.shape)} on {device_of(a)}" for a in arrays)
            raise DeviceMismatchError(f"{name}: the arrays live on different devices: {found}")
        module = self.implementation(xp)
        self.calls[module.__name__.rsplit(".", 1)[-1], name] += 1
        return getattr(module, name)


def matmul(a, b):
    """`a @ b` for tinygen's own products (ops.MatMul): under the Numba kernels' threading policy
    while those run on NumPy arrays (`cpu_runtime.matmul`), plain `a @ b` otherwise (NumPy kernels,
    CuPy arrays, no OpenBLAS to steer). Decided once for each setting of the knob."""
    if type(a) is not np.ndarray or type(b) is not np.ndarray:
        return a @ b
    key = ("matmul", _knob(), np)
    policy = _chosen.get(key)
    if policy is None:
        try:
            numba_kernels = kernel_backend(provides=("numpy", "numba")) == "numba"
        except BackendUnavailableError:  # the kernels themselves will say so; a product needs no kernels
            numba_kernels = False
        policy = _chosen[key] = numba_kernels and cpu_runtime.blas_pool() is not None
    return cpu_runtime.matmul(a, b) if policy else a @ b


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
    numba = cpu_runtime.load_numba() if info["requested"] in ("auto", "numba") else None
    if numba is not None:
        blas = ("OpenBLAS, one thread on each tinygen thread" if cpu_runtime.blas_pool()
                else "NumPy's BLAS, its own threads")
        info.update(numba=numba.__version__, threading_layer=numba.threading_layer(),
                    threads=numba.get_num_threads(), blas=blas)
    elif cpu_runtime._numba_error is not None:
        info["numba_error"] = str(cpu_runtime._numba_error)
    return info
