"""The CUDA C sources compile for an H100 (sm_90) with nvcc, and define every kernel the wrappers launch.

A machine without a GPU can still hold nvcc (this project's development machine does): the test
compiles each .cu to PTX, as `cupy.RawModule` compiles it at run time (same options), and checks
the PTX's entry points against the names gpu_cupy.py asks for. Skipped where nvcc is not on PATH.
About 1 s a file.
"""

import itertools
import re
import shutil
import subprocess

import pytest

from tinygen.kernels.conv2d import gpu_cupy as conv_gpu
from tinygen.kernels.diffusion import gpu_cupy as diffusion_gpu
from tinygen.kernels.normalization import gpu_cupy as normalization_gpu
from tinygen.kernels.optim import gpu_cupy as optim_gpu

NVCC = shutil.which("nvcc")

# source, nvcc options (RawModule's), the kernels the wrappers launch
SOURCES = {
    "conv2d": (conv_gpu.SOURCE, ["-std=c++17"],
               [f"{k}_{t}_{i}" for k, t, i in itertools.product(("im2col", "col2im"), ("f32", "f64"), ("i32", "i64"))]),
    "diffusion": (diffusion_gpu.SOURCE, ["-std=c++17", "--fmad=false"],
                  [f"step_{k}_{t}" for k, t in itertools.product(("q_sample", "p_mean", "p_sample", "ddim_mean", "ddim"),
                                                                  ("f32", "f64"))]
                  + [f"noise_{k}_{t}" for k, t in itertools.product(("normal", "q_sample", "p_sample", "ddim"),
                                                                   ("f32", "f64"))]),
    "normalization": (normalization_gpu.SOURCE, ["-std=c++17"],
                      [f"{a}_{d}_{t}" for a, d, t in itertools.product(("silu", "relu", "leaky_relu"), ("forward", "backward"),
                                                                       ("f32", "f64"))]
                      + [f"gn_{k}_{t}" for k, t in itertools.product(("sums_forward", "stats", "forward", "sums_backward",
                                                                      "backward_input", "backward_params"), ("f32", "f64"))]),
    "optim": (optim_gpu.SOURCE, ["-std=c++17", "--fmad=false"], [f"{k}_{t}" for k, t in itertools.product(("adam", "ema", "sum_squares", "scale"), ("f32", "f64"))]),
}


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_cuda_source_compiles_for_sm90_and_defines_the_kernels(name, tmp_path):
    source, options, kernels = SOURCES[name]
    ptx = tmp_path / f"{name}.ptx"
    result = subprocess.run([NVCC, "-arch=sm_90", "--ptx", *options, "-Werror", "all-warnings", "-o", str(ptx), source],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"nvcc failed on {source}:\n{result.stderr}"
    entries = set(re.findall(r"\.visible \.entry (\w+)\(", ptx.read_text()))
    assert entries == set(kernels), f"missing {sorted(set(kernels) - entries)}, unexpected {sorted(entries - set(kernels))}"
