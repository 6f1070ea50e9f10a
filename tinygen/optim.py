"""Optimizers (`SGD`, `Adam`, `AdamW`) and an exponential moving average of weights (`EMA`).

An optimizer holds references to parameters and, after `loss.backward()` has filled their
`.grad`, `step()` moves each parameter against its gradient. The update rules are PyTorch's,
operation for operation, so a run matches `torch.optim` to rounding error:

    opt = Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for x in batches:
        opt.zero_grad()
        loss = model(x).mean()
        loss.backward()
        opt.step()

Layout shared with PyTorch:

- `param_groups`: a list of dicts, each with ``"params"`` (a list of tensors) and the options
  (``"lr"``, ...) for those tensors. `params` may be an iterable of tensors (one group) or of
  dicts, e.g. ``[{"params": gen.parameters()}, {"params": disc.parameters(), "lr": 1e-4}]``;
  options a dict leaves out come from the constructor's arguments.
- `state`: per parameter, a dict of Python numbers and arrays (``"step"``, ``"exp_avg"``, ...).
- `state_dict()`: ``{"state": {index: {name: value}}, "param_groups": [{..., "params": [index]}]}``
  where parameters are numbered 0, 1, ... in group order, so it holds no tensors and can be
  saved with `tinygen.serialization.save`.

Updates work in place on the raw arrays (`p.data`), never through tensor operations, so nothing
is recorded for autograd; each updated parameter's version goes up, so a backward through a graph
built before the step raises instead of using the changed weights (as in PyTorch). Arithmetic stays in the parameter's dtype: a float32 model keeps
float32 parameters and float32 state. `xp = backend.get_array_module(...)` lets the same code
update NumPy and CuPy arrays.
"""

import numpy as np

from tinygen import backend
from tinygen.errors import ArgumentError, StateDictError
from tinygen.kernels import optim as optim_kernels
from tinygen.tensor import Tensor


def _check_number(name, value, low, high=None, high_open=False):
    """Raise ArgumentError unless low <= value (< or <=) high; NaN fails every test."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArgumentError(f"{name} must be a number, got {value!r}")
    ok = value >= low
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        upper = "" if high is None else (f" and < {high}" if high_open else f" and <= {high}")
        raise ArgumentError(f"{name} must be >= {low}{upper}, got {value!r}")


def _as_param_array(value, param, where):
    """A fresh copy of a loaded state array, in the parameter's dtype and array module."""
    if isinstance(value, Tensor):
        value = value.data
    if not hasattr(value, "shape"):
        raise StateDictError(f"{where} should be an array, got {type(value).__name__}")
    if tuple(value.shape) != tuple(param.shape):
        raise StateDictError(
            f"{where} has shape {tuple(value.shape)}, but the parameter has shape {tuple(param.shape)}"
        )
    xp = backend.get_array_module(param.data)
    if xp is np and backend.get_array_module(value) is not np:
        value = value.get()  # a CuPy array loaded for a NumPy parameter
    return xp.array(value, dtype=param.dtype)  # xp.array copies


def _same_device(a, b):
    """Whether two arrays live on one device (both NumPy, or both CuPy on one GPU)."""
    if type(a) is not type(b):
        return False
    return type(a) is np.ndarray or a.device.id == b.device.id


class Optimizer:
    """Base class: parameter groups, `zero_grad`, `state_dict` and `load_state_dict`.

    A subclass sets `_state_arrays` (the per-parameter arrays it keeps, shaped like the
    parameter) and `_state_numbers`, checks its options in `_check_options`, and implements
    `step()`.
    """

    _state_arrays = ()
    _state_numbers = ()

    def __init__(self, params, defaults):
        self._check_options(defaults)
        self.defaults = dict(defaults)
        self.state = {}  # parameter -> {name: array or number}; tensors hash by identity
        self.param_groups = []
        if isinstance(params, Tensor):
            raise ArgumentError(
                "params should be an iterable of tensors or of dicts, got a single Tensor; "
                "wrap it in a list: [p]"
            )
        if isinstance(params, dict):
            raise ArgumentError("params should be an iterable of tensors or of dicts, got one dict; wrap it in a list")
        groups = list(params)
        if not groups:
            raise ArgumentError("the optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def _check_options(self, options):
        """Raise ArgumentError for an out-of-range option; subclasses override."""

    def add_param_group(self, group):
        """Add a dict ``{"params": tensors, option: value, ...}``; missing options take the defaults."""
        if not isinstance(group, dict):
            raise ArgumentError(f"a parameter group should be a dict, got {type(group).__name__}")
        if "params" not in group:
            raise ArgumentError(f"a parameter group needs a 'params' entry, got keys {sorted(group)}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise ArgumentError(f"the optimizer can only optimize Tensors, but params[{i}] is {type(p).__name__}")
            if not p.is_leaf:
                raise ArgumentError(f"the optimizer can only optimize leaf tensors, but params[{i}] is computed")
            if p.dtype.kind != "f":
                raise ArgumentError(f"the optimizer can only optimize float tensors, params[{i}] has {p.dtype}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if id(p) in seen:
                raise ArgumentError(
                    f"params[{i}] (shape {tuple(p.shape)}) appears twice in the optimizer's parameters; "
                    "each parameter may belong to one group once"
                )
            seen.add(id(p))
        new = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._check_options(new)
        new["params"] = params
        self.param_groups.append(new)

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: set `.grad` to None (default, frees memory) or fill it with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data[...] = 0
                    p.grad._bump_version()

    def step(self, closure=None):
        raise NotImplementedError

    def synchronize(self):
        """Say that the gradients are complete, before anything clips or reads them; then `step()`.

        A no-op here. `tinygen.distributed.DistributedOptimizer` averages the gradients over
        the ranks at this point, so that code which clips before stepping (the DDPM) clips the
        global batch's gradient.
        """

    def _grads(self, group):
        """(parameter, gradient array in the parameter's dtype, state) for each p with a .grad."""
        for p in group["params"]:
            if p.grad is None:
                continue  # NOTE: a parameter without a gradient is skipped entirely, state included
            grad = p.grad.data
            if grad.shape != p.shape:
                raise ArgumentError(f"a gradient has shape {grad.shape}, but its parameter has shape {p.shape}")
            state = self.state.setdefault(p, {})
            for name in self._state_arrays:  # the state follows a parameter moved by Module.to
                if name in state and not _same_device(state[name], p.data):
                    state[name] = backend.to_device(state[name], p.device)
            yield p, grad.astype(p.dtype, copy=False), state

    # --- saving and restoring -----------------------------------------------------------

    def state_dict(self):
        """A snapshot ``{"state": {index: {...}}, "param_groups": [{..., "params": [index]}]}``.

        Parameters are numbered in the order of the groups, as in PyTorch. Arrays are copied, so
        later steps leave the snapshot unchanged.
        """
        index, groups = {}, []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index[id(p)] = len(index)
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if self.state.get(p):
                    state[index[id(p)]] = {
                        name: value.copy() if hasattr(value, "copy") else value
                        for name, value in self.state[p].items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore options and state saved by `state_dict()` (from this kind of optimizer).

        The saved groups must match this optimizer's groups in number and size; saved parameter
        i becomes this optimizer's i-th parameter. State arrays are copied and cast to the
        parameter's dtype. Nothing changes unless every check passes.
        """
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise StateDictError(f"an optimizer state dict has exactly the keys 'state' and 'param_groups', got {keys}")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise StateDictError(
                f"the state dict has {len(saved_groups)} parameter groups, "
                f"but this optimizer has {len(self.param_groups)}"
            )
        by_index = {}
        new_groups = []
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(saved, dict) or "params" not in saved:
                raise StateDictError(f"param_groups[{g}] of the state dict has no 'params' list")
            if len(saved["params"]) != len(group["params"]):
                raise StateDictError(
                    f"param_groups[{g}] of the state dict has {len(saved['params'])} parameters, "
                    f"but this optimizer's group {g} has {len(group['params'])}"
                )
            missing = sorted(set(group) - set(saved))
            if missing:
                raise StateDictError(
                    f"param_groups[{g}] of the state dict lacks the options {missing}; "
                    f"was it saved by a different optimizer than {type(self).__name__}?"
                )
            options = {k: v for k, v in saved.items() if k != "params"}
            try:
                self._check_options(options)
            except ArgumentError as err:
                raise StateDictError(f"param_groups[{g}] of the state dict: {err}") from None
            by_index.update(zip(saved["params"], group["params"]))
            new_groups.append({**options, "params": group["params"]})

        new_state = {}
        for i, saved in dict(state_dict["state"]).items():
            if i not in by_index:
                raise StateDictError(f"the state dict has state for parameter {i!r}, which no group lists")
            p = by_index[i]
            unknown = sorted(set(saved) - set(self._state_arrays) - set(self._state_numbers))
            if unknown:
                raise StateDictError(
                    f"state[{i}] has entries {unknown} that {type(self).__name__} does not keep "
                    f"(it keeps {sorted(self._state_arrays + self._state_numbers)})"
                )
            new_state[p] = {}
            for name, value in saved.items():
                if name in self._state_arrays:
                    new_state[p][name] = _as_param_array(value, p, f"state[{i}][{name!r}]")
                else:
                    new_state[p][name] = int(value) if name == "step" else float(value)
        self.param_groups = new_groups
        self.state = new_state


class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum (heavy ball or Nesterov).

    For each parameter p with gradient g, as in `torch.optim.SGD`:

        g = g + weight_decay * p                              # L2 penalty
        b = g                                  (first step)   # momentum buffer
        b = momentum * b + (1 - dampening) * g (later steps)
        g = g + momentum * b  if nesterov  else  b
        p = p - lr * g

    Sutskever et al. (2013) write momentum as v = mu*v - lr*g, p = p + v; PyTorch's form puts lr
    outside the buffer, which is the same while lr is fixed.

    >>> from tinygen import tensor
    >>> p = tensor([1.0], requires_grad=True)
    >>> p.grad = tensor([2.0])
    >>> SGD([p], lr=0.1).step()
    >>> p
    tensor([0.8], requires_grad=True)
    """

    _state_arrays = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _check_options(self, options):
        _check_number("lr", options["lr"], 0.0)
        _check_number("momentum", options["momentum"], 0.0)
        _check_number("dampening", options["dampening"], 0.0, 1.0)
        _check_number("weight_decay", options["weight_decay"], 0.0)
        if options["nesterov"] and (options["momentum"] <= 0 or options["dampening"] != 0):
            raise ArgumentError(
                "nesterov momentum needs momentum > 0 and dampening = 0, got "
                f"momentum={options['momentum']!r}, dampening={options['dampening']!r}"
            )

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure() if one is given."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), float(group["momentum"])
            dampening, weight_decay = float(group["dampening"]), float(group["weight_decay"])
            for p, g, state in self._grads(group):
                if weight_decay != 0:
                    g = g + weight_decay * p.data
                if momentum != 0:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.copy()
                    else:
                        buf *= momentum
                        buf += (1 - dampening) * g
                    g = g + momentum * buf if group["nesterov"] else buf
                p.data -= lr * g
                p._bump_version()
        return loss


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with weight decay as an L2 term added to the gradient.

    Algorithm 1 of the paper, per parameter p with gradient g at step t = 1, 2, ...:

        g = g + weight_decay * p             # L2 penalty (coupled: it goes through m and v)
        m = beta1 * m + (1 - beta1) * g      # first moment estimate,  m_0 = 0
        v = beta2 * v + (1 - beta2) * g^2    # second moment estimate, v_0 = 0
        m_hat = m / (1 - beta1^t)            # bias correction: m and v start at 0
        v_hat = v / (1 - beta2^t)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    computed as PyTorch does, p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps),
    which is the same expression with eps in the same place. For weight decay that does not
    pass through the adaptive scaling, use `AdamW`.
    """

    _state_arrays = ("exp_avg", "exp_avg_sq")
    _state_numbers = ("step",)
    _decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _check_options(self, options):
        _check_number("lr", options["lr"], 0.0)
        betas = options["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ArgumentError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        _check_number("betas[0]", betas[0], 0.0, 1.0, high_open=True)
        _check_number("betas[1]", betas[1], 0.0, 1.0, high_open=True)
        _check_number("eps", options["eps"], 0.0)
        _check_number("weight_decay", options["weight_decay"], 0.0)

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure() if one is given."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
            beta1, beta2 = float(group["betas"][0]), float(group["betas"][1])
            params, grads, states = [], [], []
            for p, g, state in self._grads(group):
                xp = backend.get_array_module(p.data)
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = xp.zeros_like(p.data)  # m_0
                    state["exp_avg_sq"] = xp.zeros_like(p.data)  # v_0
                state["step"] += 1
                params.append(p.data)
                grads.append(g)
                states.append(state)
                p._bump_version()  # the kernel below updates p.data in place
            if params:
                # The update above, in place, in one pass over every parameter of the group
                # (kernels/optim/reference.py states it in NumPy; on a GPU it is one launch)
                optim_kernels.adam_update_many(params, grads, [s["exp_avg"] for s in states],
                                               [s["exp_avg_sq"] for s in states], [s["step"] for s in states], lr,
                                               beta1, beta2, eps, weight_decay, self._decoupled_weight_decay)
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019, Algorithm 2).

    An L2 term in Adam's gradient is divided by sqrt(v_hat) like the rest of the gradient, so
    weights with large gradients are barely decayed. AdamW instead shrinks every weight by the
    same factor before the Adam step, which uses the plain gradient:

        p = p - lr * weight_decay * p
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    NOTE: the paper writes the decay as eta_t * lambda * p, with eta_t a schedule multiplier and
    no learning rate alpha in it; PyTorch (and this class) use lr * weight_decay, so the decay
    per step changes when lr does. The default weight_decay=1e-2 is PyTorch's.
    """

    _decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class EMA:
    """An exponential moving average of a model's parameters, as diffusion models sample from.

    Ho et al. (2020) and most diffusion and GAN work keep, next to the trained weights theta,

        shadow = decay * shadow + (1 - decay) * theta      after every optimizer step,

    and sample with the shadow weights, which are smoother than the last iterate. Buffers
    (running statistics and the like) are not averaged; the latest values are copied.

    With `warmup` (the default), update t (t = 0, 1, ... updates before it) uses

        decay_t = min(decay, (1 + t) / (10 + t)),

    TensorFlow's `ExponentialMovingAverage(decay, num_updates=t)`, which diffusers' `EMAModel`
    also uses (without its `use_ema_warmup`; it counts t from one update later and copies the
    weights at its first). The shadow starts at the model's weights when the EMA is made; with a
    fixed decay that start keeps the weight decay^n after n updates (0.999^1200 = 0.30: an early
    grid of a diffusion model sampled from it is still mostly its random initialisation), with
    the warm-up the product of the decay_t, 9! n! / (n + 9)!, which is 7e-23 at n = 1,200; the
    average then spans roughly the last t / 9 updates, until decay_t reaches `decay` (at
    t = 8,990 for 0.999).
    `warmup=False` keeps the decay fixed, as EMAs saved before the warm-up existed did: their
    state dicts load with it off, so that a resumed run averages as it began.

        ema = EMA(model, decay=0.9999)
        for batch in data:
            ...; opt.step(); ema.update(model)
        ema.copy_to(sampling_model)  # a second instance of the same architecture

    The shadow arrays are stored in each parameter's dtype and array module.
    """

    def __init__(self, model, decay=0.9999, warmup=True):
        _check_number("decay", decay, 0.0, 1.0)
        if not isinstance(warmup, bool):
            raise ArgumentError(f"warmup must be True or False, got {warmup!r}")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {name: p.data.copy() for name, p in model.named_parameters()}
        self.buffers = {name: b.data.copy() for name, b in model.named_buffers()}

    def _match(self, model, what):
        """The model's named parameters and buffers, after checking they match the EMA's."""
        params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
        for kind, ours, theirs in (("parameters", self.shadow, params), ("buffers", self.buffers, buffers)):
            missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
            if missing or unexpected:
                raise ArgumentError(
                    f"{what}: the model's {kind} differ from the EMA's: "
                    f"missing {missing}, unexpected {unexpected}"
                )
            for name, t in theirs.items():
                if tuple(t.shape) != tuple(ours[name].shape):
                    raise ArgumentError(
                        f"{what}: {name!r} has shape {tuple(t.shape)} in the model, "
                        f"{tuple(ours[name].shape)} in the EMA"
                    )
        return params, buffers

    def _follow(self, params, buffers):
        """Move the averages to the devices of the model's tensors (after a `Module.to`)."""
        for ours, theirs in ((self.shadow, params), (self.buffers, buffers)):
            for name, t in theirs.items():
                if not _same_device(ours[name], t.data):
                    ours[name] = backend.to_device(ours[name], t.device)

    def update(self, model):
        """Move the averages towards `model`'s current parameters; copy its buffers."""
        params, buffers = self._match(model, "EMA.update")
        self._follow(params, buffers)
        # shadow + (1 - decay) (theta - shadow) == decay shadow + (1 - decay) theta, with less rounding
        # when decay is close to 1; in place, every parameter at once (kernels/optim/reference.py)
        optim_kernels.ema_update_many([self.shadow[name] for name in params], [p.data for p in params.values()],
                                      self.current_decay())
        for name, b in buffers.items():
            self.buffers[name][...] = b.data
        self.num_updates += 1

    def current_decay(self):
        """The decay the next `update` uses: min(decay, (1 + t) / (10 + t)) after t updates with
        the warm-up, `decay` without it.

        >>> from tinygen import nn
        >>> ema = EMA(nn.Linear(2, 2), decay=0.999)
        >>> ema.current_decay()  # the first update keeps a tenth of the starting weights
        0.1
        >>> ema.num_updates = 8990
        >>> ema.current_decay()
        0.999
        """
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    def copy_to(self, model):
        """Write the averaged parameters (and the buffers) into `model`, in place."""
        params, buffers = self._match(model, "EMA.copy_to")
        self._follow(params, buffers)
        for name, p in params.items():
            p.data[...] = self.shadow[name]
            p._bump_version()
        for name, b in buffers.items():
            b.data[...] = self.buffers[name]
            b._bump_version()

    def state_dict(self):
        """``{"decay", "warmup", "num_updates", "shadow": {name: array}, "buffers": {name: array}}``, copied."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": {name: a.copy() for name, a in self.shadow.items()},
            "buffers": {name: a.copy() for name, a in self.buffers.items()},
        }

    def load_state_dict(self, state_dict):
        """Restore what `state_dict()` returned; names and shapes must match this EMA's. A state dict
        saved before the warm-up existed (no "warmup") loads with the warm-up off: it averaged without."""
        expected = {"decay", "warmup", "num_updates", "shadow", "buffers"}
        if not isinstance(state_dict, dict) or set(state_dict) not in (expected, expected - {"warmup"}):
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise StateDictError(f"an EMA state dict has exactly the keys {sorted(expected)} (\"warmup\" may be "
                                 f"missing from one saved before it existed), got {keys}")
        warmup = state_dict.get("warmup", False)
        if not isinstance(warmup, (bool, np.bool_)):
            raise StateDictError(f"EMA state dict: warmup must be True or False, got {warmup!r}")
        try:
            _check_number("decay", state_dict["decay"], 0.0, 1.0)
        except ArgumentError as err:
            raise StateDictError(f"EMA state dict: {err}") from None
        loaded = {}
        for kind in ("shadow", "buffers"):
            ours, theirs = getattr(self, kind), dict(state_dict[kind])
            missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
            if missing or unexpected:
                raise StateDictError(f"EMA state dict {kind!r}: missing {missing}, unexpected {unexpected}")
            loaded[kind] = {}
            for name, value in theirs.items():
                value = value.data if isinstance(value, Tensor) else value
                if tuple(value.shape) != tuple(ours[name].shape):
                    raise StateDictError(
                        f"EMA state dict {kind}[{name!r}] has shape {tuple(value.shape)}, "
                        f"expected {tuple(ours[name].shape)}"
                    )
                xp = backend.get_array_module(ours[name])
                if xp is np and backend.get_array_module(value) is not np:
                    value = value.get()
                loaded[kind][name] = xp.array(value, dtype=ours[name].dtype)
        self.decay = float(state_dict["decay"])
        self.warmup = bool(warmup)
        self.num_updates = int(state_dict["num_updates"])
        self.shadow, self.buffers = loaded["shadow"], loaded["buffers"]
