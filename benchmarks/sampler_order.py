"""The DDPM's deterministic samplers against the exact answer: error and order of convergence.

    python -m benchmarks.sampler_order
    python -m benchmarks.sampler_order --steps 5,10,20,40,80,160,320,1000 --mu 0.1 --s 0.2

For Gaussian data x_0 ~ N(mu, s^2 I) everything is closed form. With x_t = a x_0 + b eps
(a = sqrt(alpha_bar_t), b = sqrt(1 - alpha_bar_t)), x_t ~ N(a mu, (a^2 s^2 + b^2) I), and the noise
predictor that minimises the training loss is the posterior mean

    eps*(x_t, t) = E[eps | x_t] = b (x_t - a mu) / (a^2 s^2 + b^2).

The probability-flow ODE moves every x_t along its own quantile of that Gaussian: with
z = (x_T - a_T mu) / sqrt(a_T^2 s^2 + b_T^2), its solution is x_t = a_t mu + z sqrt(a_t^2 s^2 + b_t^2)
(in DDIM's variables x/a and sigma = b/a the ODE reads d(x/a)/d(sigma) = eps*, which this solves).
The samplers never call the network below t = 1: DDIM's and DPM-Solver++'s last step both return
the x_0 predicted at t = 1, x0*(x_1) = (x_1 - b_1 eps*(x_1, 1)) / a_1, a fixed map. So with eps* in
place of the network both converge, as their steps grow, to x0*(x_1) at the ODE's exact x_1 (the
"target"); that lies within |z| s (1 - s / sqrt(s^2 + b_1^2 / a_1^2)), about |z| beta_1 / (2 s), of
the ODE's x_0 = mu + s z, which the table shows too.

`GaussianDDPM` injects eps* by overriding `DDPM._eps`, the one place where every sampler asks for
eps_theta(x_t, t), so the samplers run exactly as `DDPM.sample` runs them (in float64, on the default
linear schedule, T = 1000). For each sampler the table gives the RMS error against the target and
against the ODE's x_0, and the local slope of log(error) over log(steps) between neighbouring rows:
-1 for a first-order method, -2 for a second-order one. tests/models/test_samplers_exact.py asserts
the slopes over the steps where each error is in its asymptotic range; docs/samplers.md shows the
table and why it bends at its ends.
"""

import argparse
import math

import numpy as np

import tinygen
from tinygen import backend
from tinygen.kernels.diffusion.reference import normal
from tinygen.models.diffusion import DDPM, Config

SHAPE = (1, 4, 4)  # 16 independent coordinates per image


class GaussianDDPM(DDPM):
    """A DDPM whose samplers see the optimal predictor eps*(x_t, t) of N(mu, s^2 I) data, not a network
    (on images of SHAPE; its tiny UNet is built but never called)."""

    def __init__(self, mu, s, **config):
        super().__init__(Config(image_size=SHAPE[1], channels=(4,), groups=4, **config))
        self.mu, self.s = mu, s
        self.net.double()  # the samplers compute in the network's dtype: float64 keeps rounding far below the errors

    def _eps(self, net, x, i, labels, guidance, clip_x0):
        a, b = float(self.schedule.sqrt_alpha_bar[i]), float(self.schedule.sqrt_one_minus_alpha_bar[i])
        return b * (x - a * self.mu) / (a * a * self.s**2 + b * b)


def exact_answer(model, n, seed):
    """(target, x0): x0*(x_1) at the ODE's exact x_1, and the ODE's x_0, from the x_T that
    `model.sample(n, ...)` draws after `tinygen.manual_seed(seed)`. Each (n, *SHAPE) float64."""
    sch, mu, s = model.schedule, model.mu, model.s
    tinygen.manual_seed(seed)
    x_T = normal((n, *SHAPE), int(backend.generator().integers(2**63))).astype(np.float64)  # as sample() draws it
    a_T, b_T = sch.sqrt_alpha_bar[-1], sch.sqrt_one_minus_alpha_bar[-1]
    a_1, b_1 = sch.sqrt_alpha_bar[0], sch.sqrt_one_minus_alpha_bar[0]
    z = (x_T - a_T * mu) / math.sqrt(a_T**2 * s**2 + b_T**2)
    x_1 = a_1 * mu + z * math.sqrt(a_1**2 * s**2 + b_1**2)
    target = (x_1 - b_1 * b_1 * (x_1 - a_1 * mu) / (a_1**2 * s**2 + b_1**2)) / a_1
    return target, mu + s * z


def sampler_errors(model, sampler, steps, n=8, seed=0):
    """RMS distances of the sampler's images (back in [-1, 1]) from the target and from the ODE's x_0."""
    target, x0 = exact_answer(model, n, seed)
    tinygen.manual_seed(seed)
    x = 2 * model.sample(n, sampler=sampler, steps=steps, use_ema=False, clip_x0=False).astype(np.float64) - 1
    return float(np.sqrt(np.mean((x - target) ** 2))), float(np.sqrt(np.mean((x - x0) ** 2)))


def slope(steps, errors):
    """The least-squares slope of log(error) against log(steps): -p for a method of order p."""
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="5,10,20,40,80,160,320,1000", help="comma-separated step counts")
    parser.add_argument("--mu", type=float, default=0.1, help="the data's mean (default 0.1)")
    parser.add_argument("--s", type=float, default=0.2, help="the data's standard deviation (default 0.2)")
    parser.add_argument("--n", type=int, default=8, help=f"images of {SHAPE} drawn (default 8)")
    args = parser.parse_args(argv)
    steps = [int(k) for k in args.steps.split(",")]
    model = GaussianDDPM(args.mu, args.s)
    print(f"x_0 ~ N({args.mu}, {args.s}^2 I), {args.n} images of {SHAPE}, linear schedule, T = {model.schedule.T}, "
          f"float64; RMS errors")
    print(f"{'sampler':8} {'steps':>6} {'vs target':>11} {'vs ODE x_0':>11} {'local slope':>12}")
    for sampler in ("ddim", "dpmpp"):
        previous = None  # (steps, error against the target) of the row above
        for k in steps:
            target_error, x0_error = sampler_errors(model, sampler, k, n=args.n)
            local = "" if previous is None else f"{slope([previous[0], k], [previous[1], target_error]):.2f}"
            print(f"{sampler:8} {k:6d} {target_error:11.3e} {x0_error:11.3e} {local:>12}")
            previous = (k, target_error)


if __name__ == "__main__":
    main()
