"""The device rules: which arrays one operation may combine, and where its result lives.

What it guards: an op whose inputs live on different devices (a NumPy array and a CuPy array on
a GPU, or arrays on two GPUs) would either fail deep inside CuPy with a message about memory
pointers, or silently copy a whole batch across the bus on every step. PyTorch refuses such
mixes at the entrance ("Expected all tensors to be on the same device") and allows one
exception, a 0-d CPU tensor beside GPU tensors, which it treats as a number. tinygen does the
same: `on_one_device` checks the arrays of every op (`tinygen.tensor.apply` calls it when not all
are NumPy arrays) and raises `DeviceMismatchError` naming each input's shape and device; an
index array from the host is copied to a GPU tensor's device, the other way round refused
(`index_for`); `already_on` decides whether `Tensor.to` has anything to move.
"""

import sys

import numpy as np

from tinygen import backend
from tinygen.errors import DeviceMismatchError


def on_one_device(what, arrays):
    """`arrays` if they all live on one device; a 0-d CPU array beside GPU arrays is moved to
    their GPU (a number, as PyTorch allows); anything else raises `DeviceMismatchError`."""
    if all(isinstance(a, np.generic) or backend.is_device_array(a) for a in arrays):
        return arrays  # GPU arrays and NumPy scalars (numbers, passed to the GPU kernels as arguments)
    devices = [backend.device_of(a) for a in arrays]
    gpus = {d.index for d in devices if d.type == "cuda"}
    if len(gpus) == 1 and all(d.type == "cuda" or a.ndim == 0 for d, a in zip(devices, arrays)):
        return [backend.to_device(a, next(d for d in devices if d.type == "cuda")) for a in arrays]
    found = ", ".join(f"{tuple(a.shape)} on {d}" for a, d in zip(arrays, devices))
    raise DeviceMismatchError(
        f"{what}: expected every input on one device, got {found}; move them with .to(device) first"
    )


def already_on(array, device):
    """Whether `array` lives on `device` (``cuda`` without an index: on the current GPU)."""
    if device.type == "cpu":
        return not backend.is_device_array(array)
    if not backend.is_device_array(array):
        return False
    if device.index is None:
        return array.device.id == sys.modules["cupy"].cuda.runtime.getDevice()
    return array.device.id == device.index


def index_for(index, data):
    """`index` (its tensors already replaced by their arrays) for indexing the array `data`: on a
    GPU array, index arrays and lists from the CPU are copied to its device; a GPU index array
    for a CPU array is refused."""
    parts = index if isinstance(index, tuple) else (index,)
    gpu = backend.is_device_array(data)
    out = []
    for i in parts:
        if gpu and (isinstance(i, (np.ndarray, list)) and not isinstance(i, np.generic)):
            i = backend.to_device(np.asarray(i), backend.device_of(data))
        elif not gpu and backend.is_device_array(i):
            raise DeviceMismatchError(f"cannot index a tensor on cpu with an index array on {backend.device_of(i)}")
        out.append(i)
    return tuple(out) if isinstance(index, tuple) else out[0]
