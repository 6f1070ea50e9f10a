"""Does a change leave training where it was? Train a model for a few steps at an older commit and at
the working tree, from the same seed and data, and compare every array of the two checkpoints.

    python -m benchmarks.same_trajectory --commit 1301d87 --model vae --steps 300

The older commit is checked out into a temporary git worktree and run with its own tinygen (and its
own kernels/) first on the path. Identical arrays mean the change moved neither the networks, their initialisation,
the data order nor any arithmetic of the step, so the older runs' published numbers still hold.
One thread each (NUMBA/OMP/OPENBLAS), so thread counts cannot reorder a sum.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_arrays(path):
    """The model's arrays in the checkpoint `path`, by their keys in the .npz: `tinygen.save` writes
    one entry per array, named by its path of keys ("model/generator/0.weight")."""
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files if key.startswith("model/")}


def train(tree, model, steps, out):
    env = dict(os.environ, PYTHONPATH=tree, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "tinygen", "train", model, "--steps", str(steps), "--out", out],
                   cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    return model_arrays(os.path.join(out, "checkpoint.npz"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", required=True, help="the older commit to compare with")
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = os.path.join(tmp, "old")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", old_tree, args.commit], cwd=ROOT, check=True)
        # tinygen.kernels is kernels/ at the top, mapped by the editable install to this checkout's: a link
        # inside the older tinygen/ makes that tree import its own kernels
        os.symlink(os.path.join(os.pardir, "kernels"), os.path.join(old_tree, "tinygen", "kernels"))
        try:
            old = train(old_tree, args.model, args.steps, os.path.join(tmp, "old-run"))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", old_tree], cwd=ROOT, check=True)
        new = train(ROOT, args.model, args.steps, os.path.join(tmp, "new-run"))
    differ = sorted(k for k in old.keys() & new.keys() if not np.array_equal(old[k], new[k]))
    only = sorted(old.keys() ^ new.keys())
    print(f"{args.model}, {args.steps} steps, {args.commit} against the working tree: {len(old)} and {len(new)} arrays, "
          f"{len(only)} in one checkpoint only, {len(differ)} that differ")
    for key in only + differ:
        print(f"  {key}")
    return 0 if not only and not differ else 1


if __name__ == "__main__":
    sys.exit(main())
