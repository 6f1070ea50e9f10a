"""The DDPM's samplers against the exact answer, and DPM-Solver++ as a sampler.

For Gaussian data x_0 ~ N(mu, s^2 I) the optimal noise predictor eps*(x_t, t) and the probability-flow
ODE's solution from a given x_T are closed forms (written out in benchmarks/sampler_order.py, whose
`GaussianDDPM` puts eps* in place of the network by overriding `DDPM._eps`, the one place where every
sampler asks for eps_theta). With it, DDIM (eta = 0) and DPM-Solver++(2M) converge to the exact answer
at their orders, 1 and 2, and the ancestral sampler draws the data's mean and variance.
"""

import math

import numpy as np
import pytest

import tinygen
from benchmarks.sampler_order import SHAPE, GaussianDDPM, exact_answer, sampler_errors, slope
from tinygen import backend, cli, trainer
from tinygen.errors import ArgumentError
from tinygen.kernels.diffusion.reference import normal
from tinygen.models.diffusion import DDPM, Config
from tinygen.serialization import load
from tinygen.tensor import Tensor

MU, S = 0.1, 0.2  # the data: x_0 ~ N(MU, S^2 I); MU +- 4.5 S stays inside the sampler's output range [-1, 1]


def sampler_error(model, sampler, steps):
    """RMS distance of 8 images from the exact answer (the target: see benchmarks/sampler_order.py)."""
    return sampler_errors(model, sampler, steps)[0]


# --- convergence to the exact answer, at each sampler's order -----------------------------------


# The steps are where each error is in its asymptotic range. Below 20 steps DPM-Solver++'s steps are
# about 1 in lambda, the width over which x0* turns from mu to the data, and its error changes sign
# between 5 and 10 steps; from about 100 steps on it meets the floor of the integer timesteps (near
# t = 1 neighbouring t are up to 0.39 apart in lambda, steps that cannot shrink). DDIM converges from
# about 20 steps to its own floor, all T steps. benchmarks/sampler_order.py prints the whole range.
@pytest.mark.parametrize("sampler, steps, order", [("ddim", (20, 40, 80, 160), 1), ("dpmpp", (20, 40, 80), 2)])
def test_the_deterministic_samplers_converge_to_the_exact_answer_at_their_orders(sampler, steps, order):
    model = GaussianDDPM(MU, S)
    errors = [sampler_error(model, sampler, k) for k in steps]
    assert all(e1 < e0 for e0, e1 in zip(errors, errors[1:])), errors
    assert -order - 0.3 < slope(steps, errors) < -order + 0.3, (errors, slope(steps, errors))


def test_dpmpp_beats_ddim_at_equal_steps_and_both_approach_the_odes_x0():
    model = GaussianDDPM(MU, S)
    for k in (20, 40):
        assert sampler_error(model, "dpmpp", k) < sampler_error(model, "ddim", k) / 10
    # the target (x0* at t = 1) is the ODE's x_0 but for the last, fixed step from t = 1 to 0
    target, x0 = exact_answer(model, 8, 0)
    z = (x0 - MU) / S
    sigma_1 = math.sqrt((1 - model.schedule.alpha_bar[0]) / model.schedule.alpha_bar[0])  # b_1 / a_1
    np.testing.assert_allclose(target - x0, -z * S * (1 - S / math.sqrt(S**2 + sigma_1**2)), atol=1e-12)
    assert np.abs(target - x0).max() < 2e-3


def test_ancestral_samples_have_the_datas_mean_and_variance():
    # N independent coordinates of N(MU, S^2): the sample mean has standard error S / sqrt(N), the sample
    # variance S^2 sqrt(2 / (N - 1)); 4 standard errors fail a correct sampler with probability 6e-5.
    n = 512
    N = n * math.prod(SHAPE)
    model = GaussianDDPM(MU, S)
    tinygen.manual_seed(0)
    x = 2 * model.sample(n, sampler="ddpm", use_ema=False, clip_x0=False).astype(np.float64) - 1
    mean_tol, var_tol = 4 * S / math.sqrt(N), 4 * S**2 * math.sqrt(2 / (N - 1))
    assert abs(x.mean() - MU) < mean_tol
    assert abs(x.var(ddof=1) - S**2) < var_tol
    # With eps* the chain is linear, x_{t-1} = A_t x_t + B_t + sigma_t z, so its exact moments follow by
    # recursion from N(0, 1). Ancestral sampling with sigma_t^2 = beta_t is itself not exact: check that
    # its own bias is well inside the tolerance, so that the test above could see a wrong sampler.
    s, mean, var = model.schedule, 0.0, 1.0
    for i in reversed(range(s.T)):
        a, b = s.sqrt_alpha_bar[i], s.sqrt_one_minus_alpha_bar[i]
        k = s.eps_coef[i] * b / (a * a * S * S + b * b)  # eps_coef eps* = k (x - a mu)
        mean = s.inv_sqrt_alpha[i] * ((1 - k) * mean + k * a * MU)
        var = s.inv_sqrt_alpha[i] ** 2 * (1 - k) ** 2 * var + (s.betas[i] if i > 0 else 0.0)
    assert abs(mean - MU) < mean_tol / 4 and abs(var - S**2) < var_tol / 4


# --- DPM-Solver++ as a sampler of a real network ------------------------------------------------


def tiny_model(**overrides):
    """A tiny DDPM (8 x 8 images) whose zero-initialised convolutions are randomised, so eps_theta is not 0."""
    model = DDPM(Config(**{"image_size": 8, "channels": (8, 16), "groups": 4, **overrides}))
    rng = np.random.default_rng(0)
    for _, p in model.net.named_parameters():
        if not p.data.any():
            p.data[...] = backend.to_device(0.1 * rng.standard_normal(p.shape), p.device)
    model.ema = tinygen.optim.EMA(model.net, decay=model.config.ema_decay)
    return model


def test_dpmpp_timesteps_are_evenly_spaced_in_log_snr():
    model = DDPM(Config(T=1000, channels=(8,), groups=4))
    lam = model.schedule.lambdas
    assert np.all(np.diff(lam) < 0)  # lambda_t falls with t
    for steps in (1, 2, 5, 10, 20, 100, 999, 1000):
        taus = model.dpmpp_timesteps(steps)
        assert len(taus) == steps and taus[-1] == 999 and np.all(np.diff(taus) > 0)
        assert steps == 1 or taus[0] == 0
    assert list(model.dpmpp_timesteps(1000)) == list(range(1000))
    # at 10 steps none collide, and every step is within rounding of (lambda_1 - lambda_T) / 9
    h = np.diff(lam[model.dpmpp_timesteps(10)[::-1]])
    np.testing.assert_allclose(h, (lam[0] - lam[-1]) / 9, rtol=0.1)
    with pytest.raises(ArgumentError, match="DPM-Solver\\+\\+ steps must be in 1..1000"):
        model.dpmpp_timesteps(0)


@pytest.mark.parametrize("clip_x0", [False, True])
def test_dpmpp_with_two_steps_is_ddim_with_two_steps(clip_x0):
    # Both step from T to t = 1 first-order (DPM-Solver++'s first-order step is DDIM's), then return x_0 at t = 1.
    tinygen.manual_seed(0)
    model = tiny_model(T=30)
    assert list(model.dpmpp_timesteps(2)) == list(model.ddim_timesteps(2)) == [0, 29]
    tinygen.manual_seed(4)
    a = model.sample(3, sampler="dpmpp", steps=2, use_ema=False, clip_x0=clip_x0)
    tinygen.manual_seed(4)
    b = model.sample(3, sampler="ddim", steps=2, use_ema=False, clip_x0=clip_x0)
    np.testing.assert_allclose(a, b, atol=2e-6)
    tinygen.manual_seed(4)
    c = model.sample(3, sampler="dpmpp", steps=6, use_ema=False, clip_x0=clip_x0)
    assert not np.allclose(a, c, atol=1e-3)  # with more steps the second-order updates make a difference


def test_dpmpp_is_algorithm_2_of_lu_et_al_unrolled_by_hand():
    # Three steps on a random network: x_T -> t_1 (first order), t_1 -> t_2 = 1 (the 2M update with
    # D_2 = (1 + 1 / (2 r)) x_theta(t_1) - 1 / (2 r) x_theta(T)), then x_0 = x_theta(x_1, 1).
    tinygen.manual_seed(0)
    model = tiny_model(T=30)
    s = model.schedule
    T1, t1, t2 = model.dpmpp_timesteps(3)[::-1]  # indices: T - 1 > t_1 > t_2 = 0
    assert (T1, t2) == (29, 0) and 0 < t1 < 29
    tinygen.manual_seed(6)
    out = model.sample(2, sampler="dpmpp", steps=3, use_ema=False, clip_x0=False)

    tinygen.manual_seed(6)
    x = normal((2, 1, 8, 8), int(backend.generator().integers(2**63))).astype(np.float64)
    alpha, sigma = s.sqrt_alpha_bar, s.sqrt_one_minus_alpha_bar
    lam = np.log(alpha / sigma)

    def x_theta(x, i):
        eps = model.net(Tensor(x.astype(np.float32)), np.full(2, i)).numpy().astype(np.float64)
        return (x - sigma[i] * eps) / alpha[i]

    d_T = x_theta(x, T1)
    h1 = lam[t1] - lam[T1]
    x = sigma[t1] / sigma[T1] * x - alpha[t1] * (np.exp(-h1) - 1) * d_T
    d_1 = x_theta(x, t1)
    h2 = lam[t2] - lam[t1]
    r = h1 / h2
    x = sigma[t2] / sigma[t1] * x - alpha[t2] * (np.exp(-h2) - 1) * ((1 + 1 / (2 * r)) * d_1 - 1 / (2 * r) * d_T)
    x = x_theta(x, t2)
    np.testing.assert_allclose(out, (np.clip(x, -1, 1) + 1) / 2, atol=1e-5)


def test_dpmpp_samples_with_labels_guidance_and_the_ema_deterministically():
    tinygen.manual_seed(0)
    model = tiny_model(T=20, num_classes=3)
    model.train_step(np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32), np.array([0, 1]))
    options = dict(sampler="dpmpp", steps=4, labels=[0, 2], guidance=2.0)
    tinygen.manual_seed(7)
    a = model.sample(2, **options)
    tinygen.manual_seed(7)
    b = model.sample(2, **options)
    np.testing.assert_array_equal(a, b)
    tinygen.manual_seed(7)
    assert not np.array_equal(a, model.sample(2, **{**options, "guidance": 0.0}))
    tinygen.manual_seed(7)
    assert not np.array_equal(a, model.sample(2, **options, use_ema=False))
    assert a.dtype == np.float32 and a.shape == (2, 1, 8, 8) and a.min() >= 0 and a.max() <= 1
    with pytest.raises(ArgumentError, match="eta=0.5 applies to sampler='ddim'"):
        model.sample(1, sampler="dpmpp", eta=0.5)
    with pytest.raises(ArgumentError, match="DPM-Solver\\+\\+ steps must be in 1..20"):
        model.sample(1, sampler="dpmpp", steps=21)
    with pytest.raises(ArgumentError, match="'ddpm', 'ddim' or 'dpmpp'"):
        model.sample(1, sampler="euler")


def test_dpmpp_on_the_device_draws_the_cpus_images(device):
    options = dict(sampler="dpmpp", steps=5, labels=[0, 1], guidance=1.0, use_ema=False)
    previous = backend.get_default_device()
    backend.set_default_device("cpu")  # the reference, made and sampled on the CPU
    try:
        tinygen.manual_seed(0)
        model = tiny_model(T=20, num_classes=2)
        tinygen.manual_seed(3)
        on_cpu = model.sample(2, **options)
    finally:
        backend.set_default_device(previous)
    model.to(device)
    tinygen.manual_seed(3)
    there = model.sample(2, **options)
    assert model.device.type == backend.device(device).type
    np.testing.assert_allclose(there, on_cpu, atol=1e-4)


def test_the_sample_command_runs_dpmpp(tmp_path):
    np.savez(tmp_path / "grey.npz", images=np.random.default_rng(0).integers(0, 256, (8, 1, 8, 8), dtype=np.uint8))
    out = tmp_path / "ddpm"
    trainer.train("ddpm", str(out), steps=1, overrides={"channels": [4, 8], "groups": 4, "T": 20, "batch_size": 4},
                  data="npz", data_dir=str(tmp_path / "grey.npz"))
    npz = tmp_path / "s.npz"
    command = ["sample", "--checkpoint", str(out / "checkpoint.npz"), "--n", "2", "--out", "", "--npz", str(npz)]
    assert cli.main(command + ["--sampler", "dpmpp", "--steps", "3"]) == 0
    saved = load(npz)
    model, _, _ = trainer.load_checkpoint(str(out / "checkpoint.npz"))
    backend.manual_seed(0)
    np.testing.assert_array_equal(saved["samples"], model.sample(2, sampler="dpmpp", steps=3))
    assert saved["options"]["sampler"] == "dpmpp"


def test_the_benchmark_prints_each_samplers_errors_and_local_slopes(capsys):
    from benchmarks import sampler_order

    sampler_order.main(["--steps", "20,40", "--n", "2"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[:2] for row in rows] == [["ddim", "20"], ["ddim", "40"], ["dpmpp", "20"], ["dpmpp", "40"]]
    assert len(rows[0]) == 4 and len(rows[1]) == 5  # the first row of each sampler has no slope
    assert float(rows[1][4]) < -0.5 and float(rows[3][4]) < -1.5
