"""Pretrained weights in the package: a picture from tinygen before any training.

    tinygen sample --pretrained mnist-ddpm --out digits.png
    model = tinygen.load_pretrained("mnist-ddpm"); images = model.sample(16, sampler="ddim", steps=50)

Each entry of `PRETRAINED` is one file in ``tinygen/weights/``, a `tinygen.save` file holding

- ``run``: the settings of the training run (`tinygen train`'s run record), which rebuild its model;
- ``weights``: the sampling network's parameters in float16, half the size of float32 (the
  network computes in float32: the weights are cast back when they load); a tensor that float16
  would change by more than `HALF_TOLERANCE` of its largest value (one of numbers too small for
  float16, say) stays in float32;
- ``source``: which weights they are (the EMA's or the trained ones) and the step they were taken at.

The file is pinned by its SHA-256, checked before anything in it is read, so a damaged or swapped
file is refused instead of drawing wrong pictures. `python -m tinygen.pretrained CHECKPOINT OUT`
writes such a file from a run's checkpoint; docs/pretrained.md gives, for every entry, the command
that trained it, its training budget and what `tinygen eval` measures of it.

Only the DDPM's weights are shipped, and only the DDPM's sampling network is taken: the optimizer's
state (twice the weights' size) is what resuming needs, not sampling.
"""

import argparse
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from tinygen import backend, optim, trainer
from tinygen.errors import ArgumentError, CheckpointError
from tinygen.evaluation.features import sha256_of
from tinygen.serialization import load, save

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
FORMAT = "tinygen-pretrained-1"
HALF_TOLERANCE = 1e-3  # of a tensor's largest |value|: float16's step is 2^-11 of its scale


@dataclass(frozen=True)
class Pretrained:
    file: str  # in WEIGHTS_DIR
    sha256: str
    about: str  # one line for `tinygen sample --help` and errors
    sample_options: dict = field(default_factory=dict)  # what `tinygen sample --pretrained` uses unless told


PRETRAINED = {
    "mnist-ddpm": Pretrained(
        file="mnist-ddpm.npz",
        sha256="1e5ef814c10fbfb227071d5a6208fb560e23a5e0a8af0e949a01b7c05f4b4d88",
        about="DDPM on 28x28 MNIST digits (tinygen train ddpm, its default 4,000 steps), EMA weights",
        sample_options={"sampler": "dpmpp", "steps": 20},
    ),
    "emoji-ddpm": Pretrained(
        file="emoji-ddpm.npz",
        sha256="303dbd9601ca03868714e2149255155c6037674aebf625829dc982f04968f108",
        about="class-conditional DDPM on 32x32 colour emoji (tinygen train ddpm --data emoji --conditional), "
              "trained weights",
        sample_options={"sampler": "dpmpp", "steps": 20, "guidance": 2.0},
    ),
}


def load_pretrained(name, device=None):
    """The DDPM of the shipped weights `name` (a key of `PRETRAINED`), ready to `sample`, on `device`
    (default: the default device); its EMA holds the same weights, so `use_ema` makes no difference."""
    if name not in PRETRAINED:
        raise ArgumentError(f"no pretrained weights named {name!r}; there are {', '.join(PRETRAINED)}")
    model, _ = load_weights(path_of(name), sha256=PRETRAINED[name].sha256, device=device)
    return model


def path_of(name):
    """Where the shipped weights `name` lie."""
    return os.path.join(WEIGHTS_DIR, PRETRAINED[name].file)


def load_weights(path, sha256=None, device=None):
    """(model, run) from a file `build` wrote; with `sha256`, refused unless the file has that digest."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file of pretrained weights")
    if sha256 is not None:
        digest = sha256_of(path)
        if digest != sha256:
            raise CheckpointError(f"{path}: SHA-256 {digest}, expected {sha256}: the file is damaged or not the "
                                  "one this tinygen version ships; reinstall tinygen")
    state = load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT or not {"run", "weights", "source"} <= state.keys():
        raise CheckpointError(f"{path}: not a file of pretrained weights (python -m tinygen.pretrained writes them)")
    run = state["run"]
    model = trainer.build_model(run["model"], trainer._saved_overrides(run))
    model.net.load_state_dict(state["weights"])  # float16 -> the network's float32
    model.ema = optim.EMA(model.net, decay=model.config.ema_decay)
    model.step = int(state["source"]["step"])
    model.to(backend.device(device) if device is not None else backend.get_default_device())
    return model, run


def build(checkpoint, out, use_ema=True):
    """Write the sampling weights of the DDPM run `checkpoint` to `out`, in float16 where that changes
    no weight by more than HALF_TOLERANCE of its tensor's largest; returns the largest such change
    and the file's SHA-256."""
    state = load(checkpoint)
    run = trainer._run_of(state, checkpoint)
    if run["model"] != "ddpm":
        raise ArgumentError(f"{checkpoint}: a {run['model']} run; pretrained weights are made of DDPM runs")
    model_state = state["model"]
    weights = model_state["ema"]["shadow"] | model_state["ema"]["buffers"] if use_ema else model_state["model"]
    half, worst = {}, 0.0
    for name, array in weights.items():
        array, rounded = np.asarray(array), None
        scale = float(np.abs(array).max(initial=0.0))
        if array.dtype.kind == "f" and scale < np.finfo(np.float16).max:
            rounded = array.astype(np.float16)
            change = float(np.abs(rounded.astype(array.dtype) - array).max()) / scale if scale > 0 else 0.0
        # a tensor float16 would change by more than HALF_TOLERANCE of its largest value (one of
        # numbers below float16's range, or beyond it) stays as it is
        if rounded is not None and change <= HALF_TOLERANCE:
            half[name], worst = rounded, max(worst, change)
        else:
            half[name] = array
    keep = {k: run[k] for k in ("model", "seed", "data", "overrides", "data_settings", "classes", "steps", "config")
            if k in run}
    save({"format": FORMAT, "run": keep, "weights": half,
          "source": {"weights": "ema" if use_ema else "trained", "step": int(state["step"])}}, out)
    return worst, sha256_of(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinygen.pretrained",
                                     description="Write a DDPM run's sampling weights in float16, as tinygen ships them.")
    parser.add_argument("checkpoint", help="a DDPM run's checkpoint.npz")
    parser.add_argument("out", help="the weights file to write, e.g. tinygen/weights/mnist-ddpm.npz")
    parser.add_argument("--no-ema", action="store_true", help="take the trained weights, not their EMA")
    args = parser.parse_args(argv)
    worst, digest = build(args.checkpoint, args.out, use_ema=not args.no_ema)
    print(f"{args.out}: {os.path.getsize(args.out):,} bytes, SHA-256 {digest}; "
          f"float16 changes a weight by at most {worst:.2e} of its tensor's largest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
