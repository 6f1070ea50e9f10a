"""`tinygen.nn.Module`: registration, naming, modes, state_dict and dtype casts.

Where PyTorch is installed, names, state_dict keys and reprs are checked against the PyTorch twin
of the same model, which is the behaviour these methods copy.
"""

import copy

import re

import numpy as np
import pytest

import tinygen
from tinygen import nn
from tinygen.errors import StateDictError
from tinygen.nn import Module, Parameter

# Every test here runs on the CPU and, where a GPU is visible, again on it (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("device")


class Affine(Module):
    """A hand-written module: one parameter, one persistent and one non-persistent buffer."""

    def __init__(self, n):
        super().__init__()
        self.scale = Parameter(np.ones(n, dtype=np.float32))
        self.register_buffer("shift", tinygen.zeros(n))
        self.register_buffer("cache", tinygen.zeros(n), persistent=False)
        self.note = "a plain attribute"

    def forward(self, x):
        return x * self.scale + self.shift


class Tied(Module):
    """The same Linear reached under two names, and a parameter shared with it."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 3)
        self.decoder = self.encoder
        self.extra = nn.Linear(3, 2)
        self.extra.weight = Parameter(np.zeros((2, 3), dtype=np.float32))
        self.alias = self.encoder.weight

    def forward(self, x):
        return self.extra(self.decoder(self.encoder(x)))


def small_model():
    return nn.Sequential(
        nn.Linear(4, 5),
        nn.Sequential(nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(0.5)),
        nn.Linear(5, 2, bias=False),
    )


# --- registration and naming -----------------------------------------------------------------


def test_attribute_assignment_registers_parameters_buffers_and_children():
    m = Affine(3)
    assert list(m._parameters) == ["scale"]
    assert list(m._buffers) == ["shift", "cache"]
    assert m.note == "a plain attribute" and "note" not in m._parameters
    assert [n for n, _ in m.named_buffers()] == ["shift", "cache"]
    assert list(m.state_dict()) == ["scale", "shift"]  # the non-persistent buffer stays out
    assert m.scale is m._parameters["scale"]
    with pytest.raises(AttributeError, match="nothere"):
        m.nothere


def test_nested_sequential_names_like_pytorch():
    model = small_model()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.0.weight", "1.0.bias", "2.weight"]
    assert [n for n, _ in model.named_buffers()] == ["1.0.running_mean", "1.0.running_var", "1.0.num_batches_tracked"]
    assert [n for n, _ in model.named_modules()] == ["", "0", "1", "1.0", "1.1", "1.2", "2"]
    assert [n for n, _ in model.named_children()] == ["0", "1", "2"]
    assert [n for n, _ in model.named_parameters(prefix="net")][0] == "net.0.weight"
    assert [n for n, _ in model[1].named_parameters(recurse=False)] == []
    assert list(model.modules())[0] is model
    assert [type(c).__name__ for c in model.children()] == ["Linear", "Sequential", "Linear"]


def small_torch_twin(torch):
    """`small_model` in PyTorch."""
    tn = torch.nn
    return tn.Sequential(
        tn.Linear(4, 5), tn.Sequential(tn.BatchNorm1d(5), tn.ReLU(), tn.Dropout(0.5)), tn.Linear(5, 2, bias=False)
    )


def test_names_and_state_dict_keys_match_pytorch():
    torch = pytest.importorskip("torch")
    twin = small_torch_twin(torch)
    model = small_model()
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in twin.named_parameters()]
    assert [n for n, _ in model.named_buffers()] == [n for n, _ in twin.named_buffers()]
    assert [n for n, _ in model.named_modules()] == [n for n, _ in twin.named_modules()]
    assert list(model.state_dict()) == list(twin.state_dict())
    for name, value in twin.state_dict().items():
        assert model.state_dict()[name].shape == tuple(value.shape)


def test_sequential_slice_keeps_the_parents_names():
    # A slice holds the same modules under the same names, so its state_dict keys are the parent's
    # and a checkpoint of the parent loads into the slice (the names are not renumbered 0, 1, ...).
    model = small_model()
    tail = model[1:]
    assert [n for n, _ in tail.named_children()] == ["1", "2"]
    assert list(tail.state_dict()) == [k for k in model.state_dict() if not k.startswith("0.")]
    assert list(tail) == list(model)[1:]
    assert [n for n, _ in model[::2].named_children()] == ["0", "2"]
    assert [n for n, _ in model[::-1].named_children()] == ["2", "1", "0"]
    assert [n for n, _ in model[-2:].named_children()] == ["1", "2"]
    assert len(model[5:]) == 0
    assert tail[0] is model[1] and tail[-1] is model[2]  # integers count positions, not names
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("0.")}
    tail.load_state_dict(state)
    # append takes the next free number; PyTorch's str(len) = "2" would replace the slice's last module
    tail.append(nn.Tanh())
    assert [n for n, _ in tail.named_children()] == ["1", "2", "3"]


def test_sequential_slice_names_match_pytorch():
    torch = pytest.importorskip("torch")
    twin = small_torch_twin(torch)
    model = small_model()
    for index in (slice(1, None), slice(None, 2), slice(None, None, 2), slice(None, None, -1), slice(-2, None),
                  slice(5, None), slice(-1, 0, -1)):
        assert list(model[index].state_dict()) == list(twin[index].state_dict()), index
        assert [n for n, _ in model[index].named_modules()] == [n for n, _ in twin[index].named_modules()], index
    for index in range(-3, 3):
        assert type(model[index]).__name__ == type(twin[index]).__name__, index
        assert type(model[1:][index // 2]).__name__ == type(twin[1:][index // 2]).__name__, index
    for index in (3, -4):
        with pytest.raises(IndexError):
            twin[index]
        with pytest.raises(IndexError, match=str(index)):
            model[index]


def test_shared_parameters_are_listed_once():
    m = Tied()
    names = [n for n, _ in m.named_parameters()]
    # the module's own parameters come first, so the shared weight is listed as "alias"
    assert names == ["alias", "encoder.bias", "extra.weight", "extra.bias"]
    assert len(list(m.parameters())) == 4
    assert m.num_parameters() == 9 + 3 + 6 + 2
    assert [n for n, _ in m.named_modules()] == ["", "encoder", "extra"]
    assert [n for n, _ in m.named_children()] == ["encoder", "extra"]
    # state_dict lists a shared tensor under each of its names, as PyTorch does
    assert list(m.state_dict()) == [
        "alias", "encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias", "extra.weight", "extra.bias"
    ]


def test_shared_parameter_names_match_pytorch():
    torch = pytest.importorskip("torch")

    class TorchTied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(3, 3)
            self.decoder = self.encoder
            self.extra = torch.nn.Linear(3, 2)
            self.extra.weight = torch.nn.Parameter(torch.zeros(2, 3))
            self.alias = self.encoder.weight

    twin, m = TorchTied(), Tied()
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in twin.named_parameters()]
    assert list(m.state_dict()) == list(twin.state_dict())
    assert [n for n, _ in m.named_modules()] == [n for n, _ in twin.named_modules()]


def test_reassigning_keeps_order_and_moves_between_kinds():
    lin = nn.Linear(2, 3)
    new_weight = Parameter(np.zeros((3, 2), dtype=np.float32))
    lin.weight = new_weight
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    assert lin.weight is new_weight
    lin.bias = None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    assert lin.bias is None and "bias" not in lin.state_dict()
    m = Affine(2)
    m.shift = tinygen.ones(2)  # a Tensor assigned to a buffer name replaces the buffer
    assert np.array_equal(m.state_dict()["shift"], [1, 1])
    m.note = nn.ReLU()  # a Module replaces a plain attribute
    assert "note" in m._modules and "note" not in m.__dict__
    del m.note
    assert "note" not in m._modules
    with pytest.raises(AttributeError):
        m.note


def test_registration_errors():
    m = Affine(2)
    with pytest.raises(TypeError, match="scale"):
        m.scale = tinygen.ones(2)  # a plain Tensor is not a Parameter
    with pytest.raises(TypeError, match="shift"):
        m.shift = np.ones(2)
    with pytest.raises(TypeError, match="Tensor or None"):
        m.register_buffer("b", np.zeros(2))
    with pytest.raises(KeyError, match="a.b"):
        m.register_buffer("a.b", tinygen.zeros(2))
    with pytest.raises(KeyError, match="note"):
        m.register_parameter("note", None)
    with pytest.raises(TypeError, match="Parameter or None"):
        m.register_parameter("w", tinygen.zeros(2))
    with pytest.raises(TypeError, match="int"):
        m.add_module("child", 3)

    class Forgot(Module):
        def __init__(self):
            self.w = Parameter([1.0])

    with pytest.raises(AttributeError, match="super"):
        Forgot()


def test_forward_must_be_defined():
    with pytest.raises(NotImplementedError, match="Module"):
        Module()(1)


def test_deepcopy_gives_independent_parameters():
    model = small_model()
    twin = copy.deepcopy(model)
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in model.named_parameters()]
    twin[0].weight.data[...] = 0
    assert not np.all(model[0].weight.data == 0)


# --- modes, gradients, apply ---------------------------------------------------------------


def test_train_eval_recurse_and_return_self():
    model = small_model()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())
    model[1].eval()  # a subtree alone
    assert model.training and model[0].training and not model[1][2].training
    with pytest.raises(tinygen.ArgumentError, match="'yes'"):
        model.train("yes")


def test_zero_grad_sets_grad_to_none():
    tinygen.manual_seed(0)
    model = small_model()
    model(tinygen.randn(6, 4)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.data == 0) for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_requires_grad_freezes_parameters():
    model = small_model().requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())
    assert model.num_parameters(trainable_only=True) == 0
    assert model.num_parameters() == 4 * 5 + 5 + 5 + 5 + 5 * 2


def test_apply_visits_children_before_parents():
    visited = []
    small_model().apply(lambda m: visited.append(type(m).__name__))
    assert visited == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Sequential", "Linear", "Sequential"]


# --- dtype ---------------------------------------------------------------------------------


def test_double_and_float_cast_in_place_and_keep_identity():
    tinygen.manual_seed(0)
    model = small_model()
    model(tinygen.randn(6, 4)).sum().backward()
    params = list(model.parameters())
    counter = model[1][0].num_batches_tracked
    assert model.double() is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in params)
    assert model[1][0].running_mean.dtype == np.float64
    assert counter.dtype == np.int64 and model[1][0].num_batches_tracked is counter
    assert model(tinygen.randn(6, 4, dtype=np.float64)).dtype == np.float64
    model.float()
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert all(b.dtype in (np.float32, np.int64) for b in model.buffers())


def test_parameters_use_the_default_dtype():
    previous = tinygen.get_default_dtype()
    try:
        tinygen.set_default_dtype(np.float64)
        model = nn.Sequential(nn.Linear(2, 3), nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Embedding(4, 2))
        assert all(p.dtype == np.float64 for p in model.parameters())
        assert model[2].running_var.dtype == np.float64
    finally:
        tinygen.set_default_dtype(previous)
    assert all(p.dtype == previous for p in small_model().parameters())


# --- state_dict ----------------------------------------------------------------------------


def trained_model(seed):
    """A model whose parameters and BatchNorm statistics differ from a fresh one's."""
    tinygen.manual_seed(seed)
    model = small_model()
    for _ in range(3):
        model(tinygen.randn(8, 4) * 3 + 1)
    return model


def test_state_dict_round_trip_into_a_fresh_model():
    model = trained_model(0).eval()
    state = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["1.0.num_batches_tracked"].dtype == np.int64 and state["1.0.num_batches_tracked"] == 3
    fresh = trained_model(1).eval()
    x = tinygen.randn(5, 4)
    assert not np.allclose(fresh(x).numpy(), model(x).numpy())
    result = fresh.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(fresh(x).numpy(), model(x).numpy())
    for key, value in fresh.state_dict().items():
        np.testing.assert_array_equal(value, state[key])


def test_state_dict_holds_copies():
    model = small_model()
    state = model.state_dict()
    state["0.weight"][...] = 7
    assert not np.any(model[0].weight.data == 7)
    model.load_state_dict(state)
    state["0.weight"][...] = 8  # loading copied the values in, it did not keep the array
    assert np.all(model[0].weight.data == 7)


def test_load_state_dict_accepts_tensors_and_keeps_dtype():
    model = small_model()
    weight = model[0].weight
    state = {k: tinygen.tensor(v.astype(np.float64) + 1) for k, v in trained_model(3).state_dict().items()}
    model.load_state_dict(state)
    assert model[0].weight is weight and weight.dtype == np.float32
    np.testing.assert_allclose(weight.numpy(), state["0.weight"].numpy(), rtol=1e-6)
    assert model[1][0].num_batches_tracked.dtype == np.int64
    assert model[1][0].num_batches_tracked.item() == 4


def test_load_state_dict_reports_every_problem_at_once_and_changes_nothing():
    model = trained_model(0)
    before = model.state_dict()
    bad = trained_model(1).state_dict()
    del bad["0.bias"], bad["1.0.running_var"]
    bad["0.weight"] = np.zeros((4, 5), dtype=np.float32)  # transposed
    bad["2.weight"] = np.zeros((2, 6), dtype=np.float32)
    bad["3.weight"] = np.zeros(1)
    bad["decoder.bias"] = np.zeros(1)
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    for key in ("'0.bias'", "'1.0.running_var'", "'3.weight'", "'decoder.bias'"):
        assert key in message
    assert "'0.weight'" in message and "(5, 4)" in message and "(4, 5)" in message
    assert "'2.weight'" in message and "(2, 5)" in message and "(2, 6)" in message
    assert message.index("missing") < message.index("'0.bias'") < message.index("unexpected")
    assert isinstance(info.value, KeyError)  # StateDictError is also a KeyError, as in PyTorch
    # the keys that were fine ("1.0.weight", "1.0.running_mean", ...) were not loaded either
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_load_state_dict_non_strict():
    model = trained_model(0)
    source = trained_model(1).state_dict()
    partial = {k: v for k, v in source.items() if k.startswith("0.")}
    partial["head.weight"] = np.zeros(3)
    result = model.load_state_dict(partial, strict=False)
    assert isinstance(result, nn.IncompatibleKeys)
    assert result.unexpected_keys == ["head.weight"]
    assert result.missing_keys == [k for k in source if not k.startswith("0.")]
    missing, unexpected = result  # a namedtuple, like PyTorch's
    assert unexpected == ["head.weight"]
    np.testing.assert_array_equal(model[0].weight.numpy(), source["0.weight"])
    before = model.state_dict()
    partial["0.bias"] = np.zeros(7, dtype=np.float32)
    with pytest.raises(StateDictError, match=r"'0.bias'.*\(5,\).*\(7,\)"):
        model.load_state_dict(partial, strict=False)  # a wrong shape still raises
    np.testing.assert_array_equal(model[0].weight.numpy(), before["0.weight"])


def test_load_state_dict_from_pytorch():
    torch = pytest.importorskip("torch")
    tn = torch.nn
    twin = tn.Sequential(
        tn.Linear(4, 5), tn.Sequential(tn.BatchNorm1d(5), tn.ReLU(), tn.Dropout(0.5)), tn.Linear(5, 2, bias=False)
    ).eval()
    twin[1][0].running_mean.uniform_(-1, 1)
    model = small_model().eval()
    model.load_state_dict(twin.state_dict())  # torch tensors convert through np.asarray
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(tinygen.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


# --- repr ----------------------------------------------------------------------------------


def test_repr_nests_children():
    assert repr(small_model()) == (
        "Sequential(\n"
        "  (0): Linear(in_features=4, out_features=5, bias=True)\n"
        "  (1): Sequential(\n"
        "    (0): BatchNorm1d(5, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "    (1): ReLU()\n"
        "    (2): Dropout(p=0.5)\n"
        "  )\n"
        "  (2): Linear(in_features=5, out_features=2, bias=False)\n"
        ")"
    )
    assert repr(Affine(2)) == "Affine()"


def test_repr_matches_pytorch():
    torch = pytest.importorskip("torch")

    def build(n):
        return n.Sequential(
            n.Conv2d(3, 8, 3, stride=2, padding=1),
            n.ConvTranspose2d(8, 4, (3, 2), stride=2, output_padding=1, dilation=2, bias=False),
            n.LayerNorm((4, 5)),
            n.Embedding(10, 3),
            n.Flatten(),
            n.Unflatten(1, (2, 3)),
            n.Upsample(scale_factor=2),
            n.Upsample(size=(3, 4)),
            n.AvgPool2d(2),
            n.LeakyReLU(0.2),
            n.Sequential(n.SiLU(), n.Tanh(), n.Sigmoid(), n.Identity(), n.ReLU()),
            n.Linear(2, 3),
        )

    ours, theirs = repr(build(nn)), repr(build(torch.nn))
    if "bias=" not in repr(torch.nn.LayerNorm(4)):  # PyTorch 2.11 printed no bias in LayerNorm's repr; 2.13 does
        ours = re.sub(r"(LayerNorm\(.*), bias=True\)", r"\1)", ours)
    assert ours == theirs


# --- docstrings ----------------------------------------------------------------------------


@pytest.mark.parametrize("module", [nn.module, nn.init, nn.layers], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    import doctest

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
