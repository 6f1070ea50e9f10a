"""What the distributed tests run on every rank, under mpiexec (not collected as a test).

    mpiexec -n 2 python -m mpi4py tests/distributed/mpi_worker.py MODE OUT SPEC_JSON

MODE
  train     for each model of SPEC {"models": {name: overrides}, "steps": K}: a real
            `trainer.train(..., distributed=True)` run into OUT/name; each rank then saves its
            model's final state dict, flattened, to OUT/name/rank{r}.npz
  resume    the `tinygen` command: SPEC["model"] for SPEC["steps"] steps into OUT/whole, and the
            same run stopped at SPEC["stop"] and resumed into OUT/parts
  fail      a vae run whose rank 1 raises RuntimeError in its third train_step, after creating
            OUT.raised (launch it under `python -m mpi4py`, which turns the unhandled exception
            into MPI_Abort)
  cli-fail  the same through `tinygen train --distributed`, whose rank 1 raises an
            ArgumentError (launch it without `-m mpi4py`: the command's abort_on_error aborts)
"""

import json
import os
import sys

import numpy as np


def flat_arrays(node, key="", out=None):
    """Every array of a nested state dict, by a flat key ("generator/0.weight", ...)."""
    out = {} if out is None else out
    if isinstance(node, dict):
        for k, v in node.items():
            flat_arrays(v, f"{key}/{k}", out)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            flat_arrays(v, f"{key}/{i}", out)
    elif isinstance(node, np.ndarray):
        out[key] = node
    return out


def inject_failure(rank, error, marker):
    """Make the vae's third train_step on `rank` raise `error`, after creating the file `marker`."""
    from tinygen import distributed
    from tinygen.models import MODELS

    if distributed.rank() != rank:
        return
    original, calls = MODELS["vae"].train_step, []

    def train_step(self, images, labels=None):
        calls.append(1)
        if len(calls) == 3:
            open(marker, "w").close()  # the launcher may drop the traceback when the job is aborted
            raise error
        return original(self, images, labels)

    MODELS["vae"].train_step = train_step


def main(mode, out, spec):
    from tinygen import cli, distributed, trainer

    rank = distributed.rank()
    if mode == "train":
        for name, overrides in spec["models"].items():
            built = []
            build_model = trainer.build_model

            def capture(*args, **kwargs):
                built.append(build_model(*args, **kwargs))
                return built[-1]

            trainer.build_model = capture
            try:
                trainer.train(name, os.path.join(out, name), steps=spec["steps"], overrides=overrides, log_every=1,
                              checkpoint_every=spec["steps"], distributed=True, progress=False)
            finally:
                trainer.build_model = build_model
            np.savez(os.path.join(out, name, f"rank{rank}.npz"), **flat_arrays(built[0].state_dict()))
    elif mode == "resume":
        common = ["train", spec["model"], "--distributed", "--checkpoint-every", "1", "--sample-every", "1000"]
        whole, parts = os.path.join(out, "whole"), os.path.join(out, "parts")
        assert cli.main(common + ["--steps", str(spec["steps"]), "--batch-size", "4", "--out", whole]) == 0
        assert cli.main(common + ["--steps", str(spec["stop"]), "--batch-size", "4", "--out", parts]) == 0
        assert cli.main(common + ["--steps", str(spec["steps"]), "--out", parts, "--resume"]) == 0
    elif mode == "fail":
        inject_failure(1, RuntimeError("injected failure on rank 1"), out + ".raised")
        trainer.train("vae", out, steps=1000, overrides={"batch_size": 8}, distributed=True, progress=False)
    elif mode == "cli-fail":
        from tinygen.errors import ArgumentError

        inject_failure(1, ArgumentError("injected failure on rank 1"), out + ".raised")
        sys.exit(cli.main(["train", "vae", "--distributed", "--steps", "1000", "--batch-size", "8", "--out", out]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
