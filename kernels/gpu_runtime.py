"""The GPU kernels' runtime: the CUDA C sources each family's gpu_cupy.py compiles, and launch sizes.

`CudaSource` compiles a family's .cu file with `cupy.RawModule` on the first request (once per
process; CuPy caches the binary on disk) and looks each kernel up once; `cuda_suffix` names a
dtype's instance (the .cu files instantiate every kernel for float32 and float64);
`grid_blocks` sizes a grid-stride launch from the GPU's multiprocessor count, read once per GPU.
CuPy itself comes from `tinygen.backend.load_cupy`, on the first request for the GPU.
"""

import numpy as np

from tinygen.backend import load_cupy
from tinygen.errors import DTypeError


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


_sm_counts = {}  # GPU id -> multiprocessor count


def grid_blocks(total, block, blocks_per_sm):
    """Blocks of `block` threads for a grid-stride kernel over `total` work items on the current GPU:
    one item per thread where they fit, at most `blocks_per_sm` blocks per multiprocessor."""
    cupy = load_cupy()
    gpu = cupy.cuda.runtime.getDevice()
    if gpu not in _sm_counts:
        _sm_counts[gpu] = cupy.cuda.Device(gpu).attributes["MultiProcessorCount"]
    return max(1, min(-(-total // block), _sm_counts[gpu] * blocks_per_sm))
