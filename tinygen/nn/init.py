"""Weight initialisers with PyTorch's names and formulas (`torch.nn.init`).

Each one fills a tensor in place (its array is overwritten, the tensor object and its dtype stay)
with draws from `tinygen.backend.generator()`, so `manual_seed` makes initialisation repeatable.
Nothing is recorded for autograd. Each returns the tensor it filled.

The scaled initialisers keep the variance of activations (He et al. 2015, Glorot & Bengio 2010):

    kaiming:  std = gain / sqrt(fan),                  fan = fan_in or fan_out (`mode`)
    xavier:   std = gain * sqrt(2 / (fan_in + fan_out))

and a uniform U(-b, b) has std b / sqrt(3), so the uniform versions use b = sqrt(3) * std.

>>> from tinygen.tensor import zeros
>>> w = zeros(3, 4)
>>> _ = constant_(w, 0.5)
>>> float(w.sum())
6.0
"""

import math
import warnings

import numpy as np

from tinygen import backend
from tinygen.errors import ArgumentError
from tinygen.tensor import Tensor


def _fill(tensor, values):
    """Overwrite `tensor`'s array with `values` (a NumPy array), keeping array module and dtype."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"init functions fill a tinygen Tensor, got {type(tensor).__name__}")
    xp = backend.get_array_module(tensor.data)
    tensor.data[...] = xp.asarray(values, dtype=tensor.dtype)
    tensor._bump_version()
    return tensor


def _shape_of(tensor):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"init functions fill a tinygen Tensor, got {type(tensor).__name__}")
    return tensor.shape


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with draws from U(a, b)."""
    if not a <= b:
        raise ArgumentError(f"uniform_ needs a <= b, got a={a}, b={b}")
    return _fill(tensor, backend.generator().uniform(a, b, _shape_of(tensor)))


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with draws from N(mean, std^2)."""
    if not std >= 0:
        raise ArgumentError(f"normal_ needs std >= 0, got std={std}")
    return _fill(tensor, backend.generator().normal(mean, std, _shape_of(tensor)))


def constant_(tensor, val):
    return _fill(tensor, np.full(_shape_of(tensor), val))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def calculate_gain(nonlinearity, param=None):
    """The factor that keeps activations' variance for `nonlinearity` (PyTorch's table).

    | nonlinearity                     | gain                          |
    | -------------------------------- | ----------------------------- |
    | linear, conv*, sigmoid           | 1                             |
    | tanh                             | 5/3                           |
    | relu                             | sqrt(2)                       |
    | leaky_relu (slope `param`=0.01)  | sqrt(2 / (1 + slope^2))       |
    | selu                             | 3/4                           |

    >>> calculate_gain("relu") == math.sqrt(2)
    True
    """
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ArgumentError(f"negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ArgumentError(f"unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) with PyTorch's rule: dims 1 and 0 times the receptive field.

    A Linear weight (out, in) has fan_in = in; a Conv2d weight (Cout, Cin, kh, kw) has
    fan_in = Cin*kh*kw. A ConvTranspose2d weight is stored (Cin, Cout, kh, kw), so the same rule
    gives it fan_in = Cout*kh*kw: PyTorch does exactly this, and so do we, to match its inits.
    """
    shape = _shape_of(tensor)
    if len(shape) < 2:
        raise ArgumentError(
            f"fan in and fan out cannot be computed for a tensor with fewer than 2 dimensions, got shape {shape}"
        )
    receptive_field = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive_field, shape[0] * receptive_field


def _calculate_correct_fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ArgumentError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _empty(tensor, what):
    """PyTorch warns and does nothing for a tensor with no elements; so do we."""
    if 0 in _shape_of(tensor):
        warnings.warn(f"initializing a zero-element tensor is a no-op ({what})", stacklevel=3)
        return True
    return False


def xavier_uniform_(tensor, gain=1.0):
    """U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-b, b) with b = sqrt(3) * gain / sqrt(fan) (He et al. 2015); `a` is the leaky slope.

    NOTE: PyTorch's Linear and Conv layers call this with a=sqrt(5), which gives
    b = sqrt(6 / (1 + 5)) / sqrt(fan_in) = 1 / sqrt(fan_in).
    """
    if _empty(tensor, "kaiming_uniform_"):
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, std^2) with std = gain / sqrt(fan) (He et al. 2015)."""
    if _empty(tensor, "kaiming_normal_"):
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return normal_(tensor, 0.0, std)
