"""`Module`: the base class of every layer and model, with PyTorch's bookkeeping.

A module owns three ordered dictionaries, filled by plain attribute assignment in `__init__`:

- `_parameters`: `Parameter`s (learnable; listed by `parameters()` for the optimizer),
- `_buffers`: other tensors that belong to the state (BatchNorm's running statistics),
- `_modules`: child modules.

`self.weight = Parameter(...)` lands in `_parameters` because `__setattr__` looks at the type of
the value, exactly as in PyTorch; `self.weight` is found again by `__getattr__`, which Python
only calls when the normal lookup fails. Everything else (`parameters`, `state_dict`, `train`,
`repr`) walks these dictionaries, and names nested entries with dots: ``"encoder.0.weight"``.

>>> from tinygen.nn.parameter import Parameter
>>> class Scale(Module):
...     def __init__(self):
...         super().__init__()
...         self.gain = Parameter([2.0])
...     def forward(self, x):
...         return x * self.gain
>>> [name for name, _ in Scale().named_parameters()]
['gain']
"""

from collections import OrderedDict, namedtuple

import numpy as np

from tinygen import backend
from tinygen.backend import get_array_module
from tinygen.errors import ArgumentError, StateDictError
from tinygen.nn.parameter import Parameter
from tinygen.tensor import Tensor, _to_arguments

# What load_state_dict returns (PyTorch's `_IncompatibleKeys`): two lists of dotted names.
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _check_name(name, kind):
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a string, got {type(name).__name__}")
    if name == "" or "." in name:
        raise KeyError(f"{kind} name must be non-empty and contain no '.', got {name!r}")


class Module:
    """Base class for layers and models: subclass it, assign parts in `__init__`, write `forward`."""

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these dictionaries to exist already.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- registration ---------------------------------------------------------------------

    def _require_init(self):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign parts before Module.__init__() is called; "
                f"call super().__init__() first in {type(self).__name__}.__init__"
            )

    def register_parameter(self, name, param):
        """Add a `Parameter` (or None: a declared but absent parameter, such as bias=False)."""
        self._require_init()
        _check_name(name, "parameter")
        if name in self.__dict__ or name in self._buffers or name in self._modules:
            raise KeyError(f"attribute {name!r} already exists and is not a parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot register a {type(param).__name__} as parameter {name!r} "
                f"(a Parameter or None is expected)"
            )
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Add a tensor that is state but not learnable; non-persistent ones stay out of state_dict."""
        self._require_init()
        _check_name(name, "buffer")
        if name in self.__dict__ or name in self._parameters or name in self._modules:
            raise KeyError(f"attribute {name!r} already exists and is not a buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"cannot register a {type(tensor).__name__} as buffer {name!r} (a Tensor or None is expected)"
            )
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name, module):
        """Add a child module (or None)."""
        self._require_init()
        _check_name(name, "module")
        if name in self.__dict__ or name in self._parameters or name in self._buffers:
            raise KeyError(f"attribute {name!r} already exists and is not a module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"cannot add a {type(module).__name__} as child module {name!r}")
        self._modules[name] = module

    def __setattr__(self, name, value):
        # NOTE: the type of the value decides where it goes, as in PyTorch: a Parameter is a
        # parameter, a Module a child, and a Tensor assigned to a buffer's name replaces the buffer.
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            self._require_init()
            self._forget(name, keep=self._parameters)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign a {type(value).__name__} as parameter {name!r} "
                    f"(a Parameter or None is expected)"
                )
            params[name] = None
        elif isinstance(value, Module):
            self._require_init()
            self._forget(name, keep=self._modules)
            self._modules[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign a {type(value).__name__} as child module {name!r} (a Module or None is expected)"
                )
            self._modules[name] = None
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"cannot assign a {type(value).__name__} as buffer {name!r} (a Tensor or None is expected)"
                )
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name, keep):
        """Remove `name` from every registry but `keep`, before it is (re)registered in `keep`.

        An entry already in `keep` stays in place, so replacing a parameter keeps the order.
        """
        self.__dict__.pop(name, None)
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not keep:
                registry.pop(name, None)
        if keep is not self._buffers:
            self._non_persistent_buffers.discard(name)

    def __getattr__(self, name):
        # Only called when normal lookup fails. `__dict__.get` (not self._parameters) keeps this
        # safe before __init__ has run, e.g. inside copy.deepcopy.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    # --- walking the tree -------------------------------------------------------------------

    def named_modules(self, prefix="", remove_duplicate=True, _memo=None):
        """(name, module) for self ("" or `prefix`) and every descendant, depth first."""
        memo = set() if _memo is None else _memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            child_prefix = f"{prefix}.{name}" if prefix else name
            yield from child.named_modules(child_prefix, remove_duplicate, memo)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        """(name, module) for the direct children, each module once."""
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self):
        for _, child in self.named_children():
            yield child

    def _named_members(self, registry, prefix, recurse, remove_duplicate):
        """(dotted name, tensor) from `registry` of self and, if `recurse`, of every descendant."""
        modules = self.named_modules(prefix, remove_duplicate) if recurse else [(prefix, self)]
        seen = set()
        for module_prefix, module in modules:
            for name, member in getattr(module, registry).items():
                if member is None:
                    continue
                if remove_duplicate:
                    if id(member) in seen:
                        continue  # a shared tensor is listed once, under its first name
                    seen.add(id(member))
                yield (f"{module_prefix}.{name}" if module_prefix else name), member

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, Parameter) pairs: ``"0.weight"``, ``"encoder.1.bias"``; shared ones once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def num_parameters(self, trainable_only=False):
        """How many numbers the parameters hold (shared parameters counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- modes and gradients ------------------------------------------------------------------

    def train(self, mode=True):
        """Set the `training` flag of self and every descendant (Dropout, BatchNorm read it)."""
        if not isinstance(mode, bool):
            raise ArgumentError(f"train(mode) takes a bool, got {mode!r}")
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Switch gradient recording of every parameter on or off (freeze a GAN's discriminator)."""
        for param in self.parameters():
            param.requires_grad = bool(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Clear the gradients: `.grad = None` (or zero-filled arrays with set_to_none=False)."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.data[...] = 0

    def apply(self, fn):
        """Call `fn(module)` on every child (recursively) and then on self, as PyTorch does."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- device and dtype -----------------------------------------------------------------------

    def to(self, *args, device=None, dtype=None):
        """Move every parameter and buffer (and gradient) to a device and/or cast the floating-point
        ones to a dtype, in place, as PyTorch's `Module.to`: ``model.to("cuda")``,
        ``model.to(np.float64)``, ``model.to("cuda", np.float32)``. Returns self.

        The Parameter objects stay the same (only their arrays move), so an optimizer built on
        `parameters()` keeps updating them; its state follows on its next step (see
        `tinygen.optim.Optimizer`).
        """
        device, dtype = _to_arguments(args, device, dtype)
        if device is not None:
            for tensor in list(self.parameters()) + list(self.buffers()):
                tensor.data = backend.to_device(tensor.data, device)
                if tensor.grad is not None:
                    tensor.grad.data = backend.to_device(tensor.grad.data, device)
        if dtype is not None:
            self._cast_floating(dtype)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=None):
        return self.to(backend.device("cuda", index))


    def _cast_floating(self, dtype):
        # Cast the arrays in place of the same Parameter objects, so an optimizer built on
        # model.parameters() keeps updating the model. Integer buffers (counters) are left alone.
        dtype = np.dtype(dtype)
        for tensor in list(self.parameters()) + list(self.buffers()):
            if tensor.dtype.kind == "f" and tensor.dtype != dtype:
                tensor.data = tensor.data.astype(dtype)
                if tensor.grad is not None:
                    tensor.grad.data = tensor.grad.data.astype(dtype)
        return self

    def float(self):
        return self._cast_floating(np.float32)

    def double(self):
        return self._cast_floating(np.float64)

    # --- state ----------------------------------------------------------------------------------

    def _state_tensors(self):
        """name -> tensor for every parameter and persistent buffer, in PyTorch's order.

        As in PyTorch, a shared tensor appears under each of its names.
        """
        state = OrderedDict()
        for prefix, module in self.named_modules(remove_duplicate=False):
            dot = prefix + "." if prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    state[dot + name] = param
            for name, buf in module._buffers.items():
                if buf is not None and name not in module._non_persistent_buffers:
                    state[dot + name] = buf
        return state

    def state_dict(self):
        """An ordered dict of dotted name -> NumPy array (a copy) for parameters and persistent buffers."""
        return OrderedDict((name, t.numpy().copy()) for name, t in self._state_tensors().items())

    def load_state_dict(self, state_dict, strict=True):
        """Copy the arrays (or Tensors) of `state_dict` into this module's tensors, keeping their dtype.

        Everything is checked before anything changes. Missing and unexpected keys are errors
        when `strict`; a value whose shape differs from the tensor's always is. All problems are
        reported together in one `StateDictError`. Returns `(missing_keys, unexpected_keys)`.
        """
        own = self._state_tensors()
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        values, wrong_shape, not_numeric = {}, [], []
        for name, tensor in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            array = value.data if isinstance(value, Tensor) else np.asarray(value)
            if array.dtype.kind not in "biuf":
                not_numeric.append(f"{name!r} (dtype {array.dtype})")
            elif tuple(array.shape) != tuple(tensor.shape):
                wrong_shape.append(
                    f"{name!r}: the model has shape {tuple(tensor.shape)}, the state_dict {tuple(array.shape)}"
                )
            values[name] = array

        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(repr(k) for k in missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(repr(k) for k in unexpected))
        if wrong_shape:
            problems.append("wrong shapes: " + "; ".join(wrong_shape))
        if not_numeric:
            problems.append("values that are not numeric arrays: " + ", ".join(not_numeric))
        if problems:
            raise StateDictError(
                f"error(s) in loading state_dict for {type(self).__name__}, nothing was loaded:\n  "
                + "\n  ".join(problems)
            )

        for name, array in values.items():
            target = own[name].data
            target[...] = get_array_module(target).asarray(array)  # casts to target's dtype
            own[name]._bump_version()
        return IncompatibleKeys(missing, unexpected)

    # --- printing -------------------------------------------------------------------------------

    def extra_repr(self):
        """The arguments shown between the parentheses of this module's repr."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        children = [f"({name}): {_indent(repr(child), 2)}" for name, child in self._modules.items()]
        body = lines + children
        if not body:
            return f"{type(self).__name__}()"
        if len(lines) == 1 and not children:
            return f"{type(self).__name__}({extra})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(body) + "\n)"


def _indent(text, spaces):
    """Indent every line of `text` but the first (children's reprs nest inside the parent's)."""
    lines = text.split("\n")
    return "\n".join(lines[:1] + [" " * spaces + line for line in lines[1:]])
