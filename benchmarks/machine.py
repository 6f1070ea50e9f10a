"""What machine a benchmark ran on, printed beside every number it reports."""

import os
import platform

import numpy as np

import tinygen
from tinygen.kernels.dispatch import kernel_info


def cpu_name():
    """The CPU model from /proc/cpuinfo where there is one, else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe():
    info = kernel_info()
    kernels = info["backend"]
    if info["numba"]:
        kernels += f" (Numba {info['numba']}, {info['threading_layer']}, {info['threads']} threads)"
    return (
        f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}; tinygen {tinygen.__version__}, kernels={kernels}"
    )
