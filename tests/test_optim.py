"""Tests for tinygen.optim (SGD, Adam, AdamW, EMA) and tinygen.nn.utils.clip_grad_norm_.

Three oracles: the first steps written out by hand with numbers, `torch.optim` over longer runs
in float64, and the optimizer itself (a copy restored from a state dict must continue exactly
like the original).
"""

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygen import backend, optim
from tinygen.errors import ArgumentError, StateDictError
from tinygen.nn.module import Module
from tinygen.nn.parameter import Parameter
from tinygen.nn.utils import clip_grad_norm_
from tinygen.tensor import Tensor

# Every test here runs on the CPU and, where a GPU is visible, again on it (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("device")


def param(values, dtype=np.float64):
    return Parameter(np.array(values, dtype=dtype))


def set_grad(p, values):
    p.grad = Tensor(np.array(values, dtype=np.float64))


def write(t, values):
    """``t.data[...] = values`` in place, the values made on t's device first (CuPy takes no NumPy arrays)."""
    t.data[...] = Tensor(np.array(values, dtype=t.dtype), device=t.device).data


# --- first three steps, by hand -------------------------------------------------------------
# One parameter p_0 = 1.0 and the gradients g_1 = 1.0, g_2 = 2.0, g_3 = -1.0.

GRADS = (1.0, 2.0, -1.0)


def sgd_plain():
    # p = p - 0.1 g
    p1 = 1.0 - 0.1 * 1.0  # 0.9
    p2 = p1 - 0.1 * 2.0  # 0.7
    p3 = p2 - 0.1 * -1.0  # 0.8
    return p1, p2, p3


def sgd_momentum():
    # b_1 = g_1; b_t = 0.9 b_{t-1} + g_t; p = p - 0.1 b
    b1 = 1.0
    b2 = 0.9 * b1 + 2.0  # 2.9
    b3 = 0.9 * b2 + -1.0  # 1.61
    return 1.0 - 0.1 * b1, 1.0 - 0.1 * b1 - 0.1 * b2, 1.0 - 0.1 * b1 - 0.1 * b2 - 0.1 * b3  # .9 .61 .449


def sgd_dampening():
    # b_1 = g_1 (no dampening on the first step); b_t = 0.9 b_{t-1} + (1 - 0.5) g_t
    b1 = 1.0
    b2 = 0.9 * 1.0 + 0.5 * 2.0  # 1.9
    b3 = 0.9 * 1.9 + 0.5 * -1.0  # 1.21
    return 0.9, 0.9 - 0.1 * b2, 0.9 - 0.1 * b2 - 0.1 * b3  # 0.9, 0.71, 0.589


def sgd_nesterov():
    # b as for momentum (1, 2.9, 1.61); step = g + 0.9 b
    p1 = 1.0 - 0.1 * (1.0 + 0.9 * 1.0)  # 0.81
    p2 = p1 - 0.1 * (2.0 + 0.9 * 2.9)  # 0.349
    p3 = p2 - 0.1 * (-1.0 + 0.9 * 1.61)  # 0.3041
    return p1, p2, p3


def sgd_weight_decay():
    # g' = g + 0.1 p; p = p - 0.1 g'
    p1 = 1.0 - 0.1 * (1.0 + 0.1 * 1.0)  # 0.89
    p2 = p1 - 0.1 * (2.0 + 0.1 * p1)  # 0.6811
    p3 = p2 - 0.1 * (-1.0 + 0.1 * p2)  # 0.774289
    return p1, p2, p3


def adam_plain():
    # lr 0.1, betas (0.9, 0.999), eps 1e-8.
    # t=1: m = 0.1 * 1 = 0.1, v = 0.001 * 1 = 0.001; m_hat = 0.1 / 0.1 = 1, v_hat = 0.001 / 0.001 = 1
    p1 = 1.0 - 0.1 * 1.0 / (math.sqrt(1.0) + 1e-8)  # 0.900000001
    # t=2: m = 0.9 * 0.1 + 0.1 * 2 = 0.29, v = 0.999 * 0.001 + 0.001 * 4 = 0.004999
    #      m_hat = 0.29 / (1 - 0.81), v_hat = 0.004999 / (1 - 0.998001)
    p2 = p1 - 0.1 * (0.29 / 0.19) / (math.sqrt(0.004999 / 0.001999) + 1e-8)  # 0.803483...
    # t=3: m = 0.9 * 0.29 - 0.1 = 0.161, v = 0.999 * 0.004999 + 0.001 * 1 = 0.005994001
    #      m_hat = 0.161 / (1 - 0.729), v_hat = 0.005994001 / (1 - 0.997002999)
    p3 = p2 - 0.1 * (0.161 / 0.271) / (math.sqrt(0.005994001 / 0.002997001) + 1e-8)  # 0.761472...
    return p1, p2, p3


def adam_l2():
    # Adam, weight_decay 0.1 added to the gradient: g' = g + 0.1 p, then the moments of g'.
    g1 = 1.0 + 0.1 * 1.0  # 1.1
    m1, v1 = 0.1 * g1, 0.001 * g1**2
    p1 = 1.0 - 0.1 * (m1 / 0.1) / (math.sqrt(v1 / 0.001) + 1e-8)  # 1 - 0.1 * 1.1 / 1.1 = 0.9
    g2 = 2.0 + 0.1 * p1
    m2, v2 = 0.9 * m1 + 0.1 * g2, 0.999 * v1 + 0.001 * g2**2
    p2 = p1 - 0.1 * (m2 / 0.19) / (math.sqrt(v2 / 0.001999) + 1e-8)
    g3 = -1.0 + 0.1 * p2
    m3, v3 = 0.9 * m2 + 0.1 * g3, 0.999 * v2 + 0.001 * g3**2
    p3 = p2 - 0.1 * (m3 / 0.271) / (math.sqrt(v3 / 0.002997001) + 1e-8)
    return p1, p2, p3


def adamw_decoupled():
    # AdamW, weight_decay 0.1: p = p * (1 - 0.1 * 0.1) first, then Adam's step on the plain
    # gradient, so m and v (and the step sizes) are those of adam_plain.
    p1 = 1.0 * 0.99 - 0.1 * 1.0 / (1.0 + 1e-8)  # 0.89
    p2 = p1 * 0.99 - 0.1 * (0.29 / 0.19) / (math.sqrt(0.004999 / 0.001999) + 1e-8)
    p3 = p2 * 0.99 - 0.1 * (0.161 / 0.271) / (math.sqrt(0.005994001 / 0.002997001) + 1e-8)
    return p1, p2, p3


HAND_CASES = {
    "sgd": (lambda ps: optim.SGD(ps, lr=0.1), sgd_plain),
    "sgd-momentum": (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), sgd_momentum),
    "sgd-dampening": (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5), sgd_dampening),
    "sgd-nesterov": (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True), sgd_nesterov),
    "sgd-weight-decay": (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=0.1), sgd_weight_decay),
    "adam": (lambda ps: optim.Adam(ps, lr=0.1), adam_plain),
    "adam-l2": (lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.1), adam_l2),
    "adamw": (lambda ps: optim.AdamW(ps, lr=0.1, weight_decay=0.1), adamw_decoupled),
}


@pytest.mark.parametrize("case", sorted(HAND_CASES))
def test_first_three_steps_match_hand_computation(case):
    make, hand = HAND_CASES[case]
    p = param([1.0])
    opt = make([p])
    got = []
    for g in GRADS:
        set_grad(p, [g])
        opt.step()
        got.append(p.item())
    np.testing.assert_allclose(got, hand(), rtol=1e-12, atol=1e-15)


def test_hand_numbers_written_in_comments():
    # the decimal values quoted above, so a slip in a formula shows up as a disagreement here
    np.testing.assert_allclose(sgd_momentum(), (0.9, 0.61, 0.449))
    np.testing.assert_allclose(sgd_dampening(), (0.9, 0.71, 0.589))
    np.testing.assert_allclose(sgd_nesterov(), (0.81, 0.349, 0.3041))
    np.testing.assert_allclose(sgd_weight_decay(), (0.89, 0.6811, 0.774289))
    np.testing.assert_allclose(adam_plain()[0], 0.900000001, rtol=1e-12)


def test_adam_state_after_two_steps_by_hand():
    p = param([1.0])
    opt = optim.Adam([p], lr=0.1)
    for g in GRADS[:2]:
        set_grad(p, [g])
        opt.step()
    state = opt.state[p]
    assert state["step"] == 2
    np.testing.assert_allclose(backend.to_numpy(state["exp_avg"]), [0.9 * 0.1 + 0.1 * 2.0], rtol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(state["exp_avg_sq"]), [0.999 * 0.001 + 0.001 * 4.0], rtol=1e-15)


def test_sgd_with_autograd_gradients():
    # loss = 0.5 p^2, so dloss/dp = p and each step multiplies p by (1 - 0.1)
    p = param([2.0, -4.0])
    opt = optim.SGD([p], lr=0.1)
    for expected in ([1.8, -3.6], [1.62, -3.24], [1.458, -2.916]):
        opt.zero_grad()
        loss = (p * p).sum() * 0.5
        loss.backward()
        opt.step()
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-14)


def test_step_returns_closure_loss():
    p = param([3.0])

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    opt = optim.SGD([p], lr=0.25)
    loss = opt.step(closure)
    assert loss.item() == 9.0
    assert p.data[0] == 3.0 - 0.25 * 6.0


# --- against torch.optim ----------------------------------------------------------------------


def quadratic(rng, shape):
    """A random convex quadratic 0.5 x'Ax - b'x on arrays of `shape`: its gradient function."""
    n = int(np.prod(shape))
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = q @ np.diag(rng.uniform(0.1, 2.0, n)) @ q.T
    b = rng.standard_normal(n)
    return lambda x: (a @ x.ravel() - b).reshape(shape)


SHAPES = [(5,), (3, 4), (2,)]

sgd_options = st.fixed_dictionaries(
    {
        "lr": st.floats(1e-3, 0.3),
        "momentum": st.sampled_from([0.0, 0.5, 0.9]),
        "dampening": st.sampled_from([0.0, 0.3]),
        "weight_decay": st.sampled_from([0.0, 0.05]),
        "nesterov": st.booleans(),
    }
).map(lambda o: {**o, "nesterov": o["nesterov"] and o["momentum"] > 0 and o["dampening"] == 0})

adam_options = st.fixed_dictionaries(
    {
        "lr": st.floats(1e-4, 0.1),
        "betas": st.sampled_from([(0.9, 0.999), (0.5, 0.999), (0.0, 0.99), (0.8, 0.9)]),
        "eps": st.sampled_from([1e-8, 1e-3]),
        "weight_decay": st.sampled_from([0.0, 0.1]),
    }
)

OPTIMIZERS = {"SGD": sgd_options, "Adam": adam_options, "AdamW": adam_options}


def run_against_torch(name, options, group2_lr, seed, steps=20):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    grad_fns = [quadratic(rng, s) for s in SHAPES]
    starts = [rng.standard_normal(s) for s in SHAPES]

    ours = [param(x) for x in starts]
    theirs = [torch.nn.Parameter(torch.tensor(x)) for x in starts]
    # group 0: params 0 and 1 with the drawn options; group 1: param 2 with another lr
    our_opt = getattr(optim, name)([{"params": ours[:2]}, {"params": ours[2:], "lr": group2_lr}], **options)
    torch_opt = getattr(torch.optim, name)(
        [{"params": theirs[:2]}, {"params": theirs[2:], "lr": group2_lr}], **options
    )
    for step in range(steps):
        for i, (p, t, grad_fn) in enumerate(zip(ours, theirs, grad_fns)):
            if i == 0 and step in (5, 6):  # no gradient: both must skip the parameter
                p.grad, t.grad = None, None
                continue
            g = grad_fn(p.data)
            p.grad, t.grad = Tensor(g), torch.tensor(g)
        our_opt.step()
        torch_opt.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-12)

    # the state dicts have the same layout and the same numbers
    our_sd, torch_sd = our_opt.state_dict(), torch_opt.state_dict()
    assert [g["params"] for g in our_sd["param_groups"]] == [g["params"] for g in torch_sd["param_groups"]]
    for g_ours, g_torch in zip(our_sd["param_groups"], torch_sd["param_groups"]):
        assert {k: g_torch[k] for k in g_ours} == g_ours
    torch_state = {
        i: {k: v for k, v in s.items() if v is not None} for i, s in torch_sd["state"].items()
    }
    assert {i: sorted(s) for i, s in our_sd["state"].items()} == {i: sorted(s) for i, s in torch_state.items()}
    for i, s in our_sd["state"].items():
        for k, v in s.items():
            np.testing.assert_allclose(v, np.asarray(torch_state[i][k]), rtol=1e-10, atol=1e-12)


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@settings(deadline=None, max_examples=12)
@given(data=st.data())
def test_matches_torch_over_20_steps(name, data):
    options = data.draw(OPTIMIZERS[name], label="options")
    group2_lr = data.draw(st.floats(1e-3, 0.05), label="group2_lr")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    run_against_torch(name, options, group2_lr, seed)


@pytest.mark.cpu_only
def test_matches_torch_with_default_options():
    run_against_torch("Adam", {}, 0.01, seed=0)
    run_against_torch("AdamW", {}, 0.01, seed=1)


# --- float32 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
        lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
        lambda ps: optim.AdamW(ps, lr=0.01),
    ],
    ids=["SGD", "Adam", "AdamW"],
)
def test_float32_parameters_stay_float32(make):
    p32, p64 = param([1.0, -2.0, 0.5], np.float32), param([1.0, -2.0, 0.5])
    opt32, opt64 = make([p32]), make([p64])
    for g in ([0.3, -1.0, 2.0], [1.0, 0.1, -0.5], [-0.2, 0.0, 1.5]):
        p32.grad = Tensor(np.array(g, dtype=np.float64))  # a float64 gradient must not promote p
        set_grad(p64, g)
        opt32.step()
        opt64.step()
    assert p32.data.dtype == np.float32
    for value in opt32.state[p32].values():
        if isinstance(value, np.ndarray) or backend.is_device_array(value):
            assert value.dtype == np.float32
    np.testing.assert_allclose(p32.numpy(), p64.numpy(), rtol=1e-5)


# --- parameters, groups, zero_grad ----------------------------------------------------------


def test_parameter_without_grad_is_skipped():
    a, b = param([1.0]), param([2.0])
    opt = optim.Adam([a, b], lr=0.1)
    set_grad(a, [1.0])
    opt.step()
    assert b.data[0] == 2.0 and b not in opt.state
    assert list(opt.state_dict()["state"]) == [0]


def test_param_groups_fill_in_defaults():
    a, b = param([1.0]), param([1.0])
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "momentum": 0.9}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert [g["momentum"] for g in opt.param_groups] == [0.0, 0.9]
    set_grad(a, [1.0])
    set_grad(b, [1.0])
    opt.step()
    assert (a.data[0], b.data[0]) == (0.9, 0.5)


def test_accepts_module_parameters_generator():
    class Tiny(Module):
        def __init__(self):
            super().__init__()
            self.w = param([1.0, 2.0])

    model = Tiny()
    opt = optim.SGD(model.parameters(), lr=0.5)
    set_grad(model.w, [1.0, 1.0])
    opt.step()
    np.testing.assert_array_equal(model.w.numpy(), [0.5, 1.5])


def test_zero_grad():
    p = param([1.0, 2.0])
    opt = optim.SGD([p], lr=0.1)
    set_grad(p, [3.0, 4.0])
    grad = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad and np.array_equal(p.grad.numpy(), [0.0, 0.0])
    opt.zero_grad()
    assert p.grad is None
    opt.zero_grad()  # no gradient at all is fine


# --- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda ps: optim.SGD(ps, lr=-0.1), r"lr must be >= 0.0, got -0.1"),
        (lambda ps: optim.SGD(ps, lr=float("nan")), r"lr must be >= 0.0, got nan"),
        (lambda ps: optim.SGD(ps, lr="0.1"), r"lr must be a number, got '0.1'"),
        (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.5), r"momentum must be >= 0.0, got -0.5"),
        (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), r"weight_decay must be >= 0.0, got -1"),
        (lambda ps: optim.SGD(ps, lr=0.1, dampening=2.0), r"dampening must be >= 0.0 and <= 1.0, got 2.0"),
        (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), r"nesterov momentum needs momentum > 0 .* momentum=0.0"),
        (
            lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
            r"nesterov .* dampening = 0, got .*dampening=0.1",
        ),
        (lambda ps: optim.Adam(ps, lr=-1e-3), r"lr must be >= 0.0, got -0.001"),
        (lambda ps: optim.Adam(ps, betas=(1.0, 0.999)), r"betas\[0\] must be >= 0.0 and < 1.0, got 1.0"),
        (lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), r"betas\[1\] must be >= 0.0 and < 1.0, got -0.1"),
        (lambda ps: optim.Adam(ps, betas=0.9), r"betas must be a pair \(beta1, beta2\), got 0.9"),
        (lambda ps: optim.AdamW(ps, eps=-1e-8), r"eps must be >= 0.0, got -1e-08"),
        (lambda ps: optim.AdamW(ps, weight_decay=-0.01), r"weight_decay must be >= 0.0, got -0.01"),
        (lambda ps: optim.Adam([{"params": ps, "lr": -2.0}]), r"lr must be >= 0.0, got -2.0"),
    ],
)
def test_bad_options_raise(make, match):
    with pytest.raises(ArgumentError, match=match):
        make([param([1.0])])


def test_bad_params_raise():
    p = param([1.0])
    with pytest.raises(ArgumentError, match="appears twice"):
        optim.SGD([p, p], lr=0.1)
    with pytest.raises(ArgumentError, match="appears twice"):
        optim.Adam([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ArgumentError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ArgumentError, match="got a single Tensor"):
        optim.Adam(p)
    with pytest.raises(ArgumentError, match=r"params\[1\] is ndarray"):
        optim.Adam([p, np.ones(2)])
    with pytest.raises(ArgumentError, match="needs a 'params' entry"):
        optim.Adam([{"lr": 0.1}])
    with pytest.raises(ArgumentError, match="leaf tensors"):
        optim.Adam([p * 2])


# --- state_dict ---------------------------------------------------------------------------------

RESTORE_CASES = {
    "SGD": lambda ps, lr: optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adam": lambda ps, lr: optim.Adam(ps, lr=lr, betas=(0.5, 0.99), weight_decay=0.01),
    "AdamW": lambda ps, lr: optim.AdamW(ps, lr=lr),
}


def two_groups(make, values, lr):
    ps = [param(v) for v in values]
    return ps, make([{"params": ps[:1]}, {"params": ps[1:], "lr": lr / 2}], lr)


def continue_both(pairs, rng, steps=5):
    """Give each (params, optimizer) the same gradients for `steps` steps."""
    for _ in range(steps):
        grads = [rng.standard_normal(p.shape) for p in pairs[0][0]]
        for ps, opt in pairs:
            for p, g in zip(ps, grads):
                p.grad = Tensor(g.copy())
            opt.step()


@pytest.mark.parametrize("name", sorted(RESTORE_CASES))
def test_restored_optimizer_continues_exactly(name, tmp_path):
    make, rng = RESTORE_CASES[name], np.random.default_rng(0)
    ps, opt = two_groups(make, [[1.0, 2.0], [[0.5, -0.5, 3.0]]], lr=0.05)
    continue_both([(ps, opt)], rng, steps=4)
    sd = opt.state_dict()
    snapshot = copy.deepcopy(sd["state"])

    # fresh optimizers with other options, over copies of the parameters (param() copies)
    (copy0, restored0), (copy1, restored1) = [two_groups(make, [p.numpy() for p in ps], lr=0.9) for _ in range(2)]
    restored0.load_state_dict(sd)

    serialization = pytest.importorskip("tinygen.serialization")
    serialization.save(sd, tmp_path / "opt.ckpt")
    restored1.load_state_dict(serialization.load(tmp_path / "opt.ckpt"))

    for r in (restored0, restored1):
        assert [g["lr"] for g in r.param_groups] == [0.05, 0.025]
    continue_both([(ps, opt), (copy0, restored0), (copy1, restored1)], rng)
    for c in (copy0, copy1):
        for p, q in zip(ps, c):
            np.testing.assert_array_equal(p.numpy(), q.numpy())
    # the snapshot did not change while the optimizer went on
    for i, s in snapshot.items():
        for k, v in s.items():
            np.testing.assert_array_equal(backend.to_numpy(sd["state"][i][k]), backend.to_numpy(v))


def test_state_dict_layout():
    a, b = param([1.0]), param([2.0, 3.0])
    opt = optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    set_grad(b, [1.0, 1.0])
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"] == [
        {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "params": [0]},
        {"lr": 0.5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "params": [1]},
    ]
    assert list(sd["state"]) == [1] and sd["state"][1]["step"] == 1
    assert sorted(sd["state"][1]) == ["exp_avg", "exp_avg_sq", "step"]


def test_load_state_dict_casts_and_copies():
    p64 = param([1.0, 2.0])
    opt64 = optim.SGD([p64], lr=0.1, momentum=0.9)
    set_grad(p64, [1.0, 1.0])
    opt64.step()
    sd = opt64.state_dict()

    p32 = param([1.0, 2.0], np.float32)
    opt32 = optim.SGD([p32], lr=0.1, momentum=0.9)
    opt32.load_state_dict(sd)
    buf = opt32.state[p32]["momentum_buffer"]
    assert buf.dtype == np.float32
    sd["state"][0]["momentum_buffer"][:] = 100.0
    np.testing.assert_array_equal(backend.to_numpy(buf), [1.0, 1.0])


def test_load_state_dict_errors():
    a, b = param([1.0]), param([2.0, 3.0])
    opt2 = optim.Adam([{"params": [a]}, {"params": [b]}])
    set_grad(a, [1.0])
    set_grad(b, [1.0, 1.0])
    opt2.step()
    sd2 = opt2.state_dict()

    single = optim.Adam([param([0.0]), param([0.0, 0.0])])
    with pytest.raises(StateDictError, match="has 2 parameter groups, but this optimizer has 1"):
        single.load_state_dict(sd2)

    short = optim.Adam([{"params": [param([0.0])]}, {"params": []}])
    with pytest.raises(StateDictError, match=r"param_groups\[1\] of the state dict has 1 parameters, but .* has 0"):
        short.load_state_dict(sd2)

    swapped = optim.Adam([{"params": [param([0.0, 0.0])]}, {"params": [param([0.0])]}])
    match = r"state\[0\]\['exp_avg'\] has shape \(1,\), but the parameter has shape \(2,\)"
    with pytest.raises(StateDictError, match=match):
        swapped.load_state_dict(sd2)

    sgd = optim.SGD([{"params": [param([0.0])]}, {"params": [param([0.0, 0.0])]}], lr=0.1)
    with pytest.raises(StateDictError, match=r"lacks the options \['dampening', 'momentum', 'nesterov'\]"):
        sgd.load_state_dict(sd2)

    same = optim.Adam([{"params": [param([0.0])]}, {"params": [param([0.0, 0.0])]}], lr=0.7)
    with pytest.raises(StateDictError, match="exactly the keys 'state' and 'param_groups'"):
        same.load_state_dict({"state": {}})
    with pytest.raises(StateDictError, match="state for parameter 7"):
        same.load_state_dict({**sd2, "state": {7: sd2["state"][0]}})
    with pytest.raises(StateDictError, match=r"entries \['momentum_buffer'\] that Adam does not keep"):
        same.load_state_dict({**sd2, "state": {0: {"momentum_buffer": np.zeros(1)}}})
    bad_lr = [{**sd2["param_groups"][0], "lr": -1.0}, sd2["param_groups"][1]]
    with pytest.raises(StateDictError, match=r"param_groups\[0\] of the state dict: lr must be >= 0.0, got -1.0"):
        same.load_state_dict({**sd2, "param_groups": bad_lr})
    # nothing was changed by the failed loads
    assert [g["lr"] for g in same.param_groups] == [0.7, 0.7] and same.state == {}


# --- clip_grad_norm_ --------------------------------------------------------------------------


def grads_3_4_12():
    a, b, c = param([0.0, 0.0]), param([[0.0]]), param([5.0])
    set_grad(a, [3.0, -4.0])
    set_grad(b, [[12.0]])
    return [a, b, c]  # c has no gradient and is ignored


@pytest.mark.parametrize(
    "norm_type, total",
    [(2.0, math.sqrt(9 + 16 + 144)), (1, 3 + 4 + 12), (math.inf, 12.0), (3, (27 + 64 + 1728) ** (1 / 3))],
)
def test_clip_grad_norm_by_hand(norm_type, total):
    params = grads_3_4_12()
    out = clip_grad_norm_(params, max_norm=1.0, norm_type=norm_type)
    assert isinstance(out, float)
    assert out == pytest.approx(total, rel=1e-14)
    scale = 1.0 / (total + 1e-6)
    np.testing.assert_allclose(params[0].grad.numpy(), [3.0 * scale, -4.0 * scale], rtol=1e-14)
    np.testing.assert_allclose(params[1].grad.numpy(), [[12.0 * scale]], rtol=1e-14)
    assert params[2].grad is None


def test_clip_grad_norm_leaves_small_gradients_alone():
    params = grads_3_4_12()
    grad_arrays = [p.grad.data for p in params[:2]]
    assert clip_grad_norm_(params, max_norm=13.5) == pytest.approx(13.0)
    np.testing.assert_array_equal(params[0].grad.numpy(), [3.0, -4.0])
    assert all(p.grad.data is g for p, g in zip(params, grad_arrays))  # in place, same arrays
    assert clip_grad_norm_(param([1.0]), max_norm=1.0) == 0.0  # a single tensor without grad


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
def test_clip_grad_norm_nonfinite_follows_torch_default():
    p = param([0.0, 0.0])
    set_grad(p, [math.inf, 1.0])
    assert clip_grad_norm_([p], max_norm=1.0) == math.inf
    assert np.isnan(p.grad.data[0]) and p.grad.data[1] == 0.0  # scaled by 1 / inf = 0

    set_grad(p, [math.nan, 1.0])
    assert math.isnan(clip_grad_norm_([p], max_norm=1.0))
    assert np.isnan(p.grad.data).all()

    set_grad(p, [math.inf, 1.0])
    with pytest.raises(ArgumentError, match="total 2.0-norm of the gradients is inf"):
        clip_grad_norm_([p], max_norm=1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(p.grad.numpy(), [math.inf, 1.0])


def test_clip_grad_norm_bad_arguments():
    with pytest.raises(ArgumentError, match="max_norm must be a number >= 0, got -1.0"):
        clip_grad_norm_(grads_3_4_12(), max_norm=-1.0)
    with pytest.raises(ArgumentError, match="norm_type must be a number > 0 or math.inf, got 0"):
        clip_grad_norm_(grads_3_4_12(), max_norm=1.0, norm_type=0)


def test_clip_grad_norm_keeps_float32():
    p = param([0.0, 0.0], np.float32)
    p.grad = Tensor(np.array([30.0, 40.0], dtype=np.float32))
    assert clip_grad_norm_([p], 5.0) == pytest.approx(50.0)
    assert p.grad.data.dtype == np.float32
    np.testing.assert_allclose(p.grad.numpy(), [3.0, 4.0], rtol=1e-6)


@settings(deadline=None, max_examples=30)
@given(
    norm_type=st.sampled_from([0.5, 1.0, 2.0, 3.0, math.inf]),
    max_norm=st.floats(1e-3, 10.0),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 1.0, 10.0]),
)
def test_clip_grad_norm_matches_torch(norm_type, max_norm, seed, scale):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    grads = [scale * rng.standard_normal(s) for s in [(4,), (2, 3), (1,)]]
    ours = [param(np.zeros_like(g)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for p, t, g in zip(ours, theirs, grads):
        p.grad, t.grad = Tensor(g.copy()), torch.tensor(g)
    total = clip_grad_norm_(ours, max_norm, norm_type)
    torch_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total == pytest.approx(torch_total.item(), rel=1e-12)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-15)


# --- EMA --------------------------------------------------------------------------------------


class TinyModel(Module):
    def __init__(self, dtype=np.float64):
        super().__init__()
        self.weight = param([1.0, 2.0], dtype)
        self.inner = Module()
        self.inner.bias = param([[-1.0]], dtype)
        self.register_buffer("running", Tensor(np.array([0.0], dtype=dtype)))


def test_ema_update_by_hand_and_copy_to():
    model = TinyModel()
    ema = optim.EMA(model, decay=0.9, warmup=False)
    assert sorted(ema.shadow) == ["inner.bias", "weight"]

    write(model.weight, [3.0, 4.0])
    write(model.inner.bias, [[1.0]])
    write(model.running, [7.0])
    ema.update(model)
    # shadow = 0.9 * shadow + 0.1 * param
    shadow = backend.to_numpy(ema.shadow["weight"])
    np.testing.assert_allclose(shadow, [0.9 * 1.0 + 0.1 * 3.0, 0.9 * 2.0 + 0.1 * 4.0])  # 1.2, 2.2
    np.testing.assert_allclose(backend.to_numpy(ema.shadow["inner.bias"]), [[0.9 * -1.0 + 0.1 * 1.0]])  # -0.8

    write(model.weight, [0.0, 0.0])
    ema.update(model)
    np.testing.assert_allclose(backend.to_numpy(ema.shadow["weight"]), [0.9 * 1.2, 0.9 * 2.2], rtol=1e-14)  # 1.08, 1.98
    assert ema.num_updates == 2

    target = TinyModel()
    ema.copy_to(target)
    np.testing.assert_allclose(target.weight.numpy(), [1.08, 1.98], rtol=1e-14)
    np.testing.assert_allclose(target.inner.bias.numpy(), [[0.9 * -0.8 + 0.1 * 1.0]], rtol=1e-14)
    np.testing.assert_array_equal(target.running.numpy(), [7.0])  # buffers: the latest value, copied
    target.weight.data[:] = 99.0  # copy_to copied: the averages are not aliased
    assert backend.to_numpy(ema.shadow["weight"])[0] == pytest.approx(1.08)


@pytest.mark.cpu_only
def test_ema_keeps_float32_and_matches_the_formula_in_float64():
    model32, model64 = TinyModel(np.float32), TinyModel()
    ema32, ema64 = optim.EMA(model32, decay=0.99, warmup=False), optim.EMA(model64, decay=0.99, warmup=False)
    rng = np.random.default_rng(0)
    expected = np.array([1.0, 2.0])
    for _ in range(10):
        w = rng.standard_normal(2)
        model32.weight.data[:] = w
        model64.weight.data[:] = w
        ema32.update(model32)
        ema64.update(model64)
        expected = 0.99 * expected + 0.01 * w
    assert ema32.shadow["weight"].dtype == np.float32
    np.testing.assert_allclose(ema64.shadow["weight"], expected, rtol=1e-13)
    np.testing.assert_allclose(ema32.shadow["weight"], expected, rtol=1e-5)


def test_ema_state_dict_round_trip_and_errors(tmp_path):
    model = TinyModel()
    ema = optim.EMA(model, decay=0.5, warmup=False)
    write(model.weight, [3.0, 4.0])
    ema.update(model)
    sd = ema.state_dict()

    other = optim.EMA(TinyModel(), decay=0.9)
    other.load_state_dict(sd)
    serialization = pytest.importorskip("tinygen.serialization")
    serialization.save(sd, tmp_path / "ema.ckpt")
    third = optim.EMA(TinyModel(), decay=0.9)
    third.load_state_dict(serialization.load(tmp_path / "ema.ckpt"))
    for e in (other, third):
        assert (e.decay, e.warmup, e.num_updates) == (0.5, False, 1)
        np.testing.assert_array_equal(backend.to_numpy(e.shadow["weight"]), [2.0, 3.0])

    with pytest.raises(StateDictError, match=r"'shadow': missing \['weight'\], unexpected \['w'\]"):
        other.load_state_dict({**sd, "shadow": {"w": np.zeros(2), "inner.bias": np.zeros((1, 1))}})
    with pytest.raises(StateDictError, match=r"shadow\['weight'\] has shape \(3,\), expected \(2,\)"):
        other.load_state_dict({**sd, "shadow": {**sd["shadow"], "weight": np.zeros(3)}})
    with pytest.raises(StateDictError, match="decay must be >= 0.0 and <= 1.0, got 1.5"):
        other.load_state_dict({**sd, "decay": 1.5})
    with pytest.raises(StateDictError, match="warmup must be True or False, got 'yes'"):
        other.load_state_dict({**sd, "warmup": "yes"})
    with pytest.raises(StateDictError, match=r"exactly the keys .* got \['decay', 'shadow'\]"):
        other.load_state_dict({"decay": 0.5, "shadow": sd["shadow"]})


def test_ema_bad_arguments():
    with pytest.raises(ArgumentError, match="decay must be >= 0.0 and <= 1.0, got 1.5"):
        optim.EMA(TinyModel(), decay=1.5)
    with pytest.raises(ArgumentError, match="warmup must be True or False, got 1"):
        optim.EMA(TinyModel(), warmup=1)
    ema = optim.EMA(TinyModel())

    class Other(Module):
        def __init__(self):
            super().__init__()
            self.weight = param([1.0, 2.0, 3.0])

    with pytest.raises(ArgumentError, match=r"EMA.update: the model's parameters differ .* missing \['inner.bias'\]"):
        ema.update(Other())
    wrong_shape = TinyModel()
    wrong_shape.weight = param([1.0, 2.0, 3.0])
    with pytest.raises(ArgumentError, match=r"EMA.copy_to: 'weight' has shape \(3,\) in the model, \(2,\) in the EMA"):
        ema.copy_to(wrong_shape)


def test_ema_with_real_layers():
    from tinygen import nn

    def make():
        return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))

    model, sampler = make(), make()
    ema = optim.EMA(model, decay=0.75, warmup=False)
    assert {"0.weight", "0.bias", "1.weight", "1.bias"} <= set(ema.shadow)
    assert {"1.running_mean", "1.running_var"} <= set(ema.buffers)
    start = model[0].weight.numpy().copy()
    model[0].weight.data += 4.0
    write(model[1].running_mean, [1.0, 2.0])
    ema.update(model)
    ema.copy_to(sampler)
    np.testing.assert_allclose(sampler[0].weight.numpy(), start + 0.25 * 4.0, rtol=1e-6)
    np.testing.assert_array_equal(sampler[1].running_mean.numpy(), [1.0, 2.0])


@pytest.mark.cpu_only
def test_ema_warmup_uses_min_of_decay_and_1_plus_t_over_10_plus_t():
    # TensorFlow's ExponentialMovingAverage(decay, num_updates=t), t the updates before this one
    model = TinyModel()
    ema = optim.EMA(model, decay=0.5)
    assert ema.warmup
    rng = np.random.default_rng(0)
    expected, decays = np.array([1.0, 2.0]), []
    for t in range(12):
        decays.append(ema.current_decay())
        w = rng.standard_normal(2)
        model.weight.data[:] = w
        ema.update(model)
        expected = min(0.5, (1 + t) / (10 + t)) * expected + (1 - min(0.5, (1 + t) / (10 + t))) * w
        np.testing.assert_allclose(ema.shadow["weight"], expected, rtol=1e-13)
    assert decays[:3] == [0.1, 2 / 11, 3 / 12] and decays[7] < 0.5 and decays[8:] == [0.5] * 4  # 9 / 18 at t = 8
    # after n updates the start keeps the product of the decays, 9! n! / (n + 9)!: 1 / 10 after one
    start = TinyModel()
    fresh = optim.EMA(start, decay=0.999)
    write(start.weight, [0.0, 0.0])
    for _ in range(30):
        fresh.update(start)
    weight = math.factorial(9) * math.factorial(30) / math.factorial(39)
    np.testing.assert_allclose(fresh.shadow["weight"], [weight, 2 * weight], rtol=1e-10)


def test_ema_warmup_is_saved_and_a_state_dict_from_before_it_loads_without_it(tmp_path):
    from tinygen import serialization

    model = TinyModel()
    ema = optim.EMA(model, decay=0.999)
    for _ in range(3):
        ema.update(model)
    serialization.save(ema.state_dict(), tmp_path / "ema.ckpt")
    resumed = optim.EMA(TinyModel(), decay=0.999, warmup=False)
    resumed.load_state_dict(serialization.load(tmp_path / "ema.ckpt"))
    assert (resumed.warmup, resumed.num_updates, resumed.current_decay()) == (True, 3, 4 / 13)
    before = {k: v for k, v in ema.state_dict().items() if k != "warmup"}  # as EMAs saved before the warm-up
    old = optim.EMA(TinyModel(), decay=0.999)
    old.load_state_dict(before)
    assert (old.warmup, old.num_updates, old.current_decay()) == (False, 3, 0.999)


def test_ema_warmup_leaves_the_trained_weights_bit_for_bit_as_they_were(tmp_path):
    # The average only reads the weights: one run with and one without the warm-up train the same
    # network and optimizer state, array for array (as benchmarks.same_trajectory compares them);
    # only the average differs.
    from tinygen import serialization
    from tinygen.models.diffusion import DDPM, Config

    arrays = []
    for warmup in (True, False):
        backend.manual_seed(0)
        model = DDPM(Config(T=20, image_size=8, channels=(4, 8), groups=4, batch_size=2))
        model.ema = optim.EMA(model.net, decay=model.config.ema_decay, warmup=warmup)
        images = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
        for _ in range(3):
            model.train_step(images)
        serialization.save(model.state_dict(), tmp_path / f"{warmup}.npz")
        with np.load(tmp_path / f"{warmup}.npz", allow_pickle=False) as archive:
            arrays.append({key: archive[key] for key in archive.files})
    with_warmup, without = arrays
    assert with_warmup.keys() == without.keys()
    trained = [key for key in with_warmup if key.startswith(("model/", "optimizer/"))]
    assert len(trained) > len(dict(model.net.named_parameters()))
    for key in trained:
        np.testing.assert_array_equal(with_warmup[key], without[key], err_msg=key)
    averaged = [key for key in with_warmup if key.startswith("ema/shadow/")]
    assert any(not np.array_equal(with_warmup[key], without[key]) for key in averaged)
