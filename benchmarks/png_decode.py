"""Seconds to decode a folder of PNG files with `tinygen.image.read_png`, with and without Numba.

    python -m benchmarks.png_decode                                  # ../shared/data/emoji, 3 runs
    python -m benchmarks.png_decode --root path/to/pngs --repeats 5

Every ``*.png`` under --root (recursively, sorted) is read once untimed (Numba compiles, the files
enter the page cache), then decoded --repeats times under ``TINYGEN_KERNELS=numba`` (the unfilter
in `kernels/png/cpu_numba.py`) and ``TINYGEN_KERNELS=numpy`` (`kernels/png/reference.py`); the
median wall time of each is printed, with Pillow's (``np.asarray(Image.open(path))``, palette
images converted as `read_png` returns them) beside it when Pillow is installed. A backend that
cannot run here (Numba missing) is reported as such.
"""

import argparse
import glob
import os
import statistics
import time

import numpy as np

from benchmarks import machine
from tinygen.errors import BackendUnavailableError
from tinygen.image import read_png
from tinygen.kernels import png as png_kernels

DEFAULT_ROOT = os.path.join("..", "shared", "data", "emoji")


def decode_all(paths):
    for path in paths:
        read_png(path)


def pillow_all(paths):
    from PIL import Image

    for path in paths:
        with Image.open(path) as image:
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            np.asarray(image)


def median_seconds(run, paths, repeats):
    run(paths)  # untimed: compiles, fills the page cache
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(paths)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="folder searched recursively for *.png (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per decoder; the median is reported")
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(os.path.join(args.root, "**", "*.png"), recursive=True))
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if not paths:
        parser.error(f"no *.png files under {args.root}")
    print(f"machine: {machine.describe()}")
    print(f"{len(paths)} PNG files under {args.root}; median of {args.repeats} runs, load average {os.getloadavg()[0]:.2f}")
    saved = os.environ.get("TINYGEN_KERNELS")
    try:
        for knob in ("numba", "numpy"):
            os.environ["TINYGEN_KERNELS"] = knob
            try:
                module = png_kernels.implementation().__name__.rsplit(".", 1)[-1]
            except BackendUnavailableError as err:
                print(f"read_png, TINYGEN_KERNELS={knob}: not run ({err})")
                continue
            median, runs = median_seconds(decode_all, paths, args.repeats)
            print(f"read_png, TINYGEN_KERNELS={knob} ({module}): {median:.2f} s "
                  f"({1e3 * median / len(paths):.3f} ms a file; runs {', '.join(f'{s:.2f}' for s in runs)})")
    finally:
        if saved is None:
            os.environ.pop("TINYGEN_KERNELS", None)
        else:
            os.environ["TINYGEN_KERNELS"] = saved
    try:
        import PIL
    except ImportError:
        print("Pillow: not installed")
        return
    median, runs = median_seconds(pillow_all, paths, args.repeats)
    print(f"Pillow {PIL.__version__}: {median:.2f} s ({1e3 * median / len(paths):.3f} ms a file; "
          f"runs {', '.join(f'{s:.2f}' for s in runs)})")


if __name__ == "__main__":
    main()
