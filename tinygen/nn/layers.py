"""Layers: `Module`s that hold parameters and call `tinygen.nn.functional` in `forward`.

Names, arguments, parameter names and shapes, and default initialisations are PyTorch's, so a
PyTorch model's `state_dict` loads into its tinygen twin and both compute the same thing. Every
parameter is created with the default dtype (`tinygen.get_default_dtype()`, float32 unless set),
and every constructor checks its arguments, raising `ArgumentError` with the value it got.

The default initialisations (`reset_parameters`), as in PyTorch:

| layer                   | weight                                    | bias                       |
| ----------------------- | ----------------------------------------- | -------------------------- |
| Linear, Conv2d,         | kaiming_uniform_(a=sqrt(5)), which is     | U(-1/sqrt(fan_in),         |
| ConvTranspose2d         | U(-1/sqrt(fan_in), 1/sqrt(fan_in))        |    1/sqrt(fan_in))         |
| BatchNorm, GroupNorm,   | 1                                         | 0                          |
| LayerNorm               |                                           |                            |
| Embedding               | N(0, 1)                                   |                            |

fan_in follows `init._calculate_fan_in_and_fan_out`: in_features for Linear, Cin*kh*kw for
Conv2d, and Cout*kh*kw for ConvTranspose2d (whose weight is stored (Cin, Cout, kh, kw)).
"""

import math
import numbers

import numpy as np

from tinygen import backend
from tinygen.errors import ArgumentError, ShapeError
from tinygen.nn import functional as F
from tinygen.nn import init
from tinygen.nn.module import Module
from tinygen.nn.parameter import Parameter
from tinygen.tensor import Tensor

# --- argument checks ------------------------------------------------------------------------


def _positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _probability(value, name):
    if not _is_number(value) or not 0 <= value <= 1:
        raise ArgumentError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _positive_float(value, name):
    if not _is_number(value) or not value > 0:
        raise ArgumentError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _new_parameter(*shape):
    """A parameter of the default dtype, zero-filled until `reset_parameters` initialises it."""
    return Parameter(np.zeros(shape, dtype=backend.get_default_dtype()))


def _bias_bound_init_(bias, weight):
    """PyTorch's default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the weight's fan_in."""
    fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
    init.uniform_(bias, -bound, bound)


# --- linear and convolution -----------------------------------------------------------------


class Linear(Module):
    """y = x W^T + b, weight (out_features, in_features), on the last dimension of x."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self.weight = _new_parameter(self.out_features, self.in_features)
        if bias:
            self.bias = _new_parameter(self.out_features)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            _bias_bound_init_(self.bias, self.weight)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _ConvNd(Module):
    """What Conv2d and ConvTranspose2d share: argument checks, init and repr."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, output_padding,
                 bias, transposed):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = F._pair(kernel_size, "kernel_size", 1)
        self.stride = F._pair(stride, "stride", 1)
        self.padding = F._pair(padding, "padding", 0)
        self.dilation = F._pair(dilation, "dilation", 1)
        self.output_padding = F._pair(output_padding, "output_padding", 0)
        self.transposed = transposed
        # Conv2d: (Cout, Cin, kh, kw); ConvTranspose2d: (Cin, Cout, kh, kw), as in PyTorch.
        channels = (self.in_channels, self.out_channels) if transposed else (self.out_channels, self.in_channels)
        self.weight = _new_parameter(*channels, *self.kernel_size)
        if bias:
            self.bias = _new_parameter(self.out_channels)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            _bias_bound_init_(self.bias, self.weight)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv2d(_ConvNd):
    """2-D cross-correlation, weight (out_channels, in_channels, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, 0, bias,
                         transposed=False)

    def forward(self, input):
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation)


class ConvTranspose2d(_ConvNd):
    """Transposed convolution (the adjoint of Conv2d), weight (in_channels, out_channels, kh, kw).

    Output size per spatial dim: (H - 1) stride - 2 padding + dilation (k - 1) + output_padding + 1.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 bias=True, dilation=1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, output_padding,
                         bias, transposed=True)
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):
                raise ArgumentError(
                    f"output_padding {self.output_padding} must be smaller than stride {self.stride} "
                    f"or dilation {self.dilation}"
                )

    def forward(self, input):
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, 1, self.dilation)


# --- normalisation --------------------------------------------------------------------------


class _BatchNorm(Module):
    """Batch normalisation over dim 1 (Ioffe & Szegedy 2015), with running statistics.

    In training the batch's mean and biased variance normalise, and the running statistics move
    towards the batch's (unbiased variance): running = (1 - momentum) running + momentum batch.
    With momentum=None they are the cumulative average over all batches (momentum 1/t at step t).
    In eval the running statistics normalise. With track_running_stats=False there are none, and
    batch statistics are used in both modes.
    """

    _input_ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        self.eps = _positive_float(eps, "eps")
        self.momentum = None if momentum is None else _probability(momentum, "momentum")
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dtype = backend.get_default_dtype()
        if self.affine:
            self.weight = _new_parameter(self.num_features)
            self.bias = _new_parameter(self.num_features)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(self.num_features, dtype=dtype)))
            self.register_buffer("running_var", Tensor(np.ones(self.num_features, dtype=dtype)))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, input):
        if not isinstance(input, Tensor) or input.ndim not in self._input_ndims:
            raise ShapeError(
                f"{type(self).__name__} expects input with {' or '.join(map(str, self._input_ndims))} "
                f"dimensions, got shape {tuple(getattr(input, 'shape', ()))}"
            )
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / int(self.num_batches_tracked.item())
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(
            input,
            self.running_mean if self.track_running_stats else None,
            self.running_var if self.track_running_stats else None,
            self.weight,
            self.bias,
            training=use_batch_stats,
            momentum=0.0 if momentum is None else momentum,
            eps=self.eps,
        )

    def extra_repr(self):
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """BatchNorm over (N, C) or (N, C, L) inputs."""

    _input_ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """BatchNorm over (N, C, H, W) inputs."""

    _input_ndims = (4,)


class GroupNorm(Module):
    """Normalise groups of num_channels / num_groups channels (Wu & He 2018); per-channel affine."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        self.num_groups = _positive_int(num_groups, "num_groups")
        self.num_channels = _positive_int(num_channels, "num_channels")
        if self.num_channels % self.num_groups:
            raise ArgumentError(f"num_groups={num_groups} must divide num_channels={num_channels}")
        self.eps = _positive_float(eps, "eps")
        self.affine = bool(affine)
        if self.affine:
            self.weight = _new_parameter(self.num_channels)
            self.bias = _new_parameter(self.num_channels)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, input):
        if input.ndim < 2 or input.shape[1] != self.num_channels:
            raise ShapeError(
                f"GroupNorm expects input (N, {self.num_channels}, ...), got shape {tuple(input.shape)}"
            )
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class LayerNorm(Module):
    """Normalise over the trailing `normalized_shape` dims (Ba et al. 2016); elementwise affine."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
        try:
            shape = tuple(shape)
        except TypeError:
            raise ArgumentError(f"normalized_shape must be an int or a tuple of ints, got {normalized_shape!r}") from None
        if not shape:
            raise ArgumentError(f"normalized_shape must not be empty, got {normalized_shape!r}")
        self.normalized_shape = tuple(_positive_int(n, "normalized_shape entries") for n in shape)
        self.eps = _positive_float(eps, "eps")
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = _new_parameter(*self.normalized_shape)
            if bias:
                self.bias = _new_parameter(*self.normalized_shape)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        s = f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        return s + f", bias={self.bias is not None}"


# --- regularisation and lookup --------------------------------------------------------------


class Dropout(Module):
    """In training, zero each element with probability p and scale the rest by 1/(1-p); in eval, identity."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = _probability(p, "dropout probability p")

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Embedding(Module):
    """A table of num_embeddings vectors of size embedding_dim, looked up by integer index."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.num_embeddings = _positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = _positive_int(embedding_dim, "embedding_dim")
        self.weight = _new_parameter(self.num_embeddings, self.embedding_dim)
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)

    def forward(self, input):
        return F.embedding(input, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


# --- containers -----------------------------------------------------------------------------


class Sequential(Module):
    """Modules applied one after the other; children are named "0", "1", ... (or by an OrderedDict).

    A slice keeps the children's names, as PyTorch's does, so its state_dict keys are the parent's;
    an integer counts positions, whatever the names.

    >>> model = Sequential(Linear(2, 3), ReLU(), Linear(3, 1))
    >>> len(model), type(model[1]).__name__
    (3, 'ReLU')
    >>> list(model[1:].state_dict())
    ['2.weight', '2.bias']
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, module in modules[0].items():
                self.add_module(name, _check_module(module, name))
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), _check_module(module, i))

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(dict(list(self._modules.items())[index]))
        return self._modules[_key(self, index)]

    def append(self, module):
        # NOTE: a slice keeps its parent's names ("1", "2"), so str(len) may be taken; PyTorch's append
        # then silently replaces that entry. Take the next free number instead.
        number = len(self)
        while str(number) in self._modules:
            number += 1
        self.add_module(str(number), _check_module(module, len(self)))
        return self

    def forward(self, input):
        for module in self._modules.values():
            input = module(input)
        return input


class ModuleList(Module):
    """A list of modules whose parameters the parent sees; it has no forward of its own."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return self._modules[_key(self, index)]

    def __setitem__(self, index, module):
        self._modules[_key(self, index)] = _check_module(module, index)

    def append(self, module):
        self.add_module(str(len(self)), _check_module(module, len(self)))
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self


def _check_module(module, where):
    if not isinstance(module, Module):
        raise TypeError(f"entry {where!r} is a {type(module).__name__}, not a Module")
    return module


def _key(container, index):
    """The name ("0", "1", ...) of entry `index` (negative allowed) of a Sequential or ModuleList."""
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise TypeError(f"{type(container).__name__} indices must be integers or slices, got {index!r}")
    n = len(container)
    if not -n <= index < n:
        raise IndexError(f"index {index} is out of range for a {type(container).__name__} of length {n}")
    return list(container._modules)[index % n]


# --- shape --------------------------------------------------------------------------------


class Flatten(Module):
    """Merge dims start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ArgumentError(f"{name} must be an integer, got {value!r}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split dim `dim` into `unflattened_size`: Unflatten(1, (C, H, W)) undoes Flatten()."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
            raise ArgumentError(f"dim must be an integer, got {dim!r}")
        if not isinstance(unflattened_size, (tuple, list)) or not unflattened_size or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and (n >= 1 or n == -1)
            for n in unflattened_size
        ) or list(unflattened_size).count(-1) > 1:
            raise ArgumentError(
                f"unflattened_size must be a non-empty tuple of positive ints (one -1 allowed), "
                f"got {unflattened_size!r}"
            )
        self.dim, self.unflattened_size = int(dim), tuple(int(n) for n in unflattened_size)

    def forward(self, input):
        if not -input.ndim <= self.dim < input.ndim:
            raise ShapeError(f"Unflatten dim {self.dim} is out of range for input of shape {tuple(input.shape)}")
        d = self.dim % input.ndim
        return input.reshape(input.shape[:d] + self.unflattened_size + input.shape[d + 1 :])

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Upsample(Module):
    """Nearest-neighbour resize of (N, C, H, W) to `size` or by `scale_factor`."""

    def __init__(self, size=None, scale_factor=None, mode="nearest"):
        super().__init__()
        if mode != "nearest":
            raise ArgumentError(f"Upsample supports mode='nearest' only, got {mode!r}")
        if (size is None) == (scale_factor is None):
            raise ArgumentError(f"Upsample needs exactly one of size and scale_factor, got size={size!r}, "
                                f"scale_factor={scale_factor!r}")
        if size is not None:
            F._pair(size, "size", 1)
        else:
            factors = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,)
            for f in factors:
                _positive_float(f, "scale_factor")
            scale_factor = tuple(float(f) for f in factors) if len(factors) > 1 else float(factors[0])
        self.size, self.scale_factor, self.mode = size, scale_factor, mode

    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode)

    def extra_repr(self):
        if self.scale_factor is not None:
            return f"scale_factor={self.scale_factor}, mode={self.mode!r}"
        return f"size={self.size}, mode={self.mode!r}"


# --- pooling --------------------------------------------------------------------------------


class AvgPool2d(Module):
    """Mean over each window (zero padding counted); stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        F.pool_arguments(kernel_size, stride, padding, 1, "AvgPool2d")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(Module):
    """Maximum over each window (padding is -inf); stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__()
        F.pool_arguments(kernel_size, stride, padding, dilation, "MaxPool2d")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation

    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"


# --- activations ----------------------------------------------------------------------------


class ReLU(Module):
    def forward(self, input):
        return F.relu(input)


class LeakyReLU(Module):
    """max(x, 0) + negative_slope * min(x, 0)."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        if not _is_number(negative_slope):
            raise ArgumentError(f"negative_slope must be a number, got {negative_slope!r}")
        self.negative_slope = negative_slope

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    def forward(self, input):
        return F.sigmoid(input)


class Tanh(Module):
    def forward(self, input):
        return F.tanh(input)


class SiLU(Module):
    """x * sigmoid(x)."""

    def forward(self, input):
        return F.silu(input)


class Softplus(Module):
    """log(1 + e^x) (beta = 1)."""

    def forward(self, input):
        return F.softplus(input)


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments, as in PyTorch."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input
