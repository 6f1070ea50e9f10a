"""Dtype promotion: which dtype an operation on mixed operands computes in.

What it guards: ``x * 0.5`` for a float32 tensor `x` must stay float32, and ``images / 255`` of a
uint8 batch must give floats, not wrap around. NumPy's own rules answer differently (a Python
float makes it float64, an int64 array beside a float32 one gives float64), and would double the
memory and halve the speed of every float32 model. PyTorch ranks the operands instead: tensors
with dimensions decide, 0-d tensors and then Python numbers count only if they bring a higher
category (bool < integer < float). tinygen follows PyTorch's rules, so a model written for
PyTorch computes in the same dtypes here; `result_type` says what they give, and
tests/test_tensor.py checks it against `torch.result_type` on every pair of dtypes.
"""

import numpy as np

from tinygen import backend


def is_number(x):
    """A Python bool, int or float (NumPy scalars count as 0-d arrays, as in PyTorch)."""
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def number_dtype(x):
    """The dtype of a Python number: bool, int64, or the default float dtype."""
    if isinstance(x, bool):
        return np.dtype(bool)
    return np.dtype(np.int64) if isinstance(x, int) else backend.get_default_dtype()


def promote_types(a, b):
    """PyTorch's promote_types: an integer or bool beside a float gives that float (int64 +
    float32 -> float32, where NumPy says float64); otherwise NumPy's rule (uint8 + int8 -> int16,
    float32 + float64 -> float64, bool + int -> int)."""
    if a == b:
        return a
    if (a.kind == "f") != (b.kind == "f"):
        return a if a.kind == "f" else b
    return np.promote_types(a, b)


def _combine_categories(higher, lower):
    """The dtype of a higher-priority group of operands, met by a lower-priority one's: the lower
    group counts only if it brings a higher category (bool < integer < float)."""
    if higher is None or lower is None:
        return lower if higher is None else higher
    if higher.kind == "f":
        return higher
    if higher.kind == "b" or lower.kind == "f":
        return promote_types(higher, lower)
    return higher


def result_type(*operands):
    """The dtype PyTorch gives an elementwise op on `operands` (tensors and Python numbers).

    Operands rank by priority: tensors with dimensions, then 0-d tensors, then numbers (bool,
    int64, or the default float dtype). A lower rank changes the dtype only by bringing a higher
    category (bool < integer < float): ``float32 tensor + float64 0-d tensor`` is float32,
    ``int64 tensor * 0.5`` and ``float32 tensor + int64 tensor`` are float32, ``uint8 tensor + 1``
    stays uint8. (NumPy would give float64, float64, float64 and uint8.)
    """
    groups = [None, None, None]  # dtypes of tensors with dimensions, 0-d tensors, numbers
    for x in operands:
        if is_number(x):
            rank, dtype = 2, number_dtype(x)
        else:
            rank, dtype = (0 if x.ndim else 1), np.dtype(x.dtype)
        groups[rank] = dtype if groups[rank] is None else promote_types(groups[rank], dtype)
    return _combine_categories(groups[0], _combine_categories(groups[1], groups[2]))
