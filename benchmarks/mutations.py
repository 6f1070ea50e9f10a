"""Do the tests catch known bugs? Put each bug of a list into a copy of the tree, one at a time, run
the tests of the code it breaks there, and print which bugs the tests catch and which survive.

    python -m benchmarks.mutations                                 # this python (all extras: torch, numba)
    python -m benchmarks.mutations --python /work/venv-min/bin/python   # the [test] extra alone: no torch
    python -m benchmarks.mutations --only avg_pool2d_pads_with_one --list

Each mutation is one exact replacement (file, old text, new text); the old text must occur exactly
once in its file, else the script stops naming both, so the list cannot rot silently
(tests/test_mutations.py checks this on every test run). The copy holds the files git tracks and
the untracked ones it does not ignore, so uncommitted work is tested as it stands; `tinygen.kernels`
is linked to the copy's kernels/ (an editable install would otherwise import the checkout's), and
the script checks that the copy's modules are the ones imported. First every distinct test
selection runs on the unmutated copy: a selection that fails there marks its mutations "baseline
fails" instead of counting them as caught. A run stops at its first failure (-x).

"caught": a test failed (or the tests could not even be collected); "survived": the selected tests
ran and passed; "not run": the python lacks a module the mutated code needs (Numba for the Numba
kernels), or every selected test skipped, so the mutation says nothing about that configuration.
"""

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple  # pytest arguments: test files, -k expressions
    env: tuple = ()  # (variable, value) pairs the test run needs
    bug: str = ""
    needs: tuple = ()  # modules without which the mutated code never runs (e.g. numba for cpu_numba.py)


MUTATIONS = (
    Mutation("div_backward_sign", "tinygen/ops.py",
             "gb = -grad_out * a / (b * b)", "gb = grad_out * a / (b * b)",
             ("tests/test_ops.py", "-k", "div"),
             bug="a sign flip in Div's gradient for the divisor"),
    Mutation("getitem_repeated_indices", "tinygen/ops.py",
             "xp.add.at(grad, ctx.index, grad_out)", "grad[ctx.index] = grad_out",
             ("tests/test_ops.py", "-k", "getitem"),
             bug="GetItem's backward assigns instead of accumulating: a repeated index counts once"),
    Mutation("conv2d_numba_im2col_column", "kernels/conv2d/cpu_numba.py",
             "row[d0 + ox] = src[s0 + ox * step]", "row[d0 + ox] = src[s0 + ox * step + 1]",
             ("tests/kernels/test_conv2d_numba.py",),
             bug="the Numba im2col reads every window one column to the right", needs=("numba",)),
    Mutation("conv2d_numba_pad_border", "kernels/conv2d/cpu_numba.py",
             "for ix in range(left + width, pitch):", "for ix in range(left + width + 1, pitch):",
             ("tests/kernels/test_conv2d_numba.py",),
             bug="the Numba padding leaves the first column right of each row unwritten", needs=("numba",)),
    Mutation("conv2d_cuda_im2col_bound", "kernels/conv2d/conv2d.cu",
             "iy < H && ix < W;", "iy < H && ix <= W;",
             ("tests/kernels/test_conv2d_cupy.py",),
             bug="the CUDA im2col reads one column past each row instead of the zero padding"),
    Mutation("group_norm_reference_backward_divisor", "kernels/normalization/reference.py",
             "xhat * (dxhat * xhat).mean(axis=2, keepdims=True)",
             "xhat * (dxhat * xhat).sum(axis=2, keepdims=True) / x[0, 0].size",
             ("tests/test_functional.py", "tests/kernels/test_normalization.py", "-k", "group_norm"),
             bug="GroupNorm's reference backward divides by the spatial size, not the group's C/G times it"),
    Mutation("group_norm_numba_backward_divisor", "kernels/normalization/cpu_numba.py",
             "a, b = sum_dxhat / (Cg * S), sum_dxhat_xhat / (Cg * S)", "a, b = sum_dxhat / S, sum_dxhat_xhat / S",
             ("tests/test_functional.py", "tests/kernels/test_normalization.py", "-k", "group_norm"),
             bug="GroupNorm's Numba backward divides by the spatial size, not the group's C/G times it",
             needs=("numba",)),
    Mutation("adam_reference_bias_correction", "kernels/optim/reference.py",
             "p -= (lr / (1 - beta1**step)) * m / denom", "p -= lr * m / denom",
             ("tests/test_optim.py", "tests/kernels/test_optim_kernels.py"),
             bug="Adam's update (reference) without the first moment's bias correction"),
    Mutation("adam_numba_bias_correction", "kernels/optim/cpu_numba.py",
             "lr / (1 - beta1**step), math.sqrt(1 - beta2**step)", "lr, math.sqrt(1 - beta2**step)",
             ("tests/test_optim.py", "tests/kernels/test_optim_kernels.py"),
             bug="Adam's update (Numba) without the first moment's bias correction", needs=("numba",)),
    Mutation("avg_pool2d_pads_with_one", "tinygen/nn/functional.py",
             'padding, 1, 0.0, "avg_pool2d")', 'padding, 1, 1.0, "avg_pool2d")',
             ("tests/test_functional.py", "-k", "avg_pool"),
             bug="avg_pool2d pads with 1.0 instead of 0.0"),
    Mutation("group_norm_cuda_plain_add", "kernels/normalization/normalization.cu",
             "atomicAdd(&acc[2 * group], s1);", "acc[2 * group] += s1;",
             ("tests/kernels/test_normalization_cupy.py",), env=(("TINYGEN_TEST_FAKE_GPU", "1"),),
             bug="GroupNorm's CUDA forward sums a group with a plain += instead of atomicAdd (a race)"),
)


def check(root, mutations):
    """Stop, naming the mutation and the file, unless every old text occurs exactly once."""
    problems = []
    for m in mutations:
        path = os.path.join(root, m.path)
        if not os.path.isfile(path):
            problems.append(f"{m.name}: {m.path} does not exist")
            continue
        with open(path, encoding="utf-8") as f:
            count = f.read().count(m.old)
        if count != 1:
            problems.append(f"{m.name}: {m.old!r} occurs {count} times in {m.path}, not once")
    if problems:
        raise SystemExit("stale mutations (update benchmarks/mutations.py):\n  " + "\n  ".join(problems))


def tree_files(root):
    """The files of the working tree that git tracks or would track (not ignored), relative paths."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             check=True, capture_output=True).stdout.decode()
    return sorted(p for p in set(listing.split("\0")) if p and os.path.isfile(os.path.join(root, p)))


def copy_tree(root, dest):
    """Copy the working tree's files into `dest`, and link dest/tinygen/kernels to dest/kernels (the
    package maps tinygen.kernels to the top-level kernels/; a copy must import its own)."""
    for rel in tree_files(root):
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, rel), target)
    os.symlink(os.path.join("..", "kernels"), os.path.join(dest, "tinygen", "kernels"))
    return dest


def check_imports(python, tree):
    """Stop unless `python`, run in `tree`, imports tinygen and its kernels from `tree` itself."""
    code = "import tinygen, tinygen.kernels.conv2d as k; print(tinygen.__file__); print(k.__file__)"
    done = subprocess.run([python, "-c", code], cwd=tree, capture_output=True, text=True)
    paths = done.stdout.split()
    real = os.path.realpath(tree) + os.sep
    if done.returncode or len(paths) != 2 or not all(os.path.realpath(p).startswith(real) for p in paths):
        raise SystemExit(f"{python} in the copy {tree} imports {paths or done.stderr.strip()}, not the copy's modules")


def run_tests(python, tree, tests, env, timeout):
    """Run pytest on `tests` in `tree`: (status, tests run, tests skipped, first failure, seconds)."""
    report = os.path.join(tree, ".mutation-junit.xml")
    if os.path.exists(report):
        os.remove(report)
    command = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=tree, env=dict(os.environ, **dict(env)), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timed out", 0, 0, "", time.perf_counter() - start
    seconds = time.perf_counter() - start
    ran, skipped, failure = 0, 0, ""
    if os.path.exists(report):
        results = ET.parse(report).getroot()
        for suite in results.iter("testsuite"):
            skipped += int(suite.get("skipped", 0))
            ran += int(suite.get("tests", 0)) - int(suite.get("skipped", 0))
        for case in results.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failure = f"{case.get('classname', '')}::{case.get('name', '')}"
                break
    last_line = (done.stdout.strip() or done.stderr.strip() or "no output").splitlines()[-1]
    if done.returncode == 1:
        status = "caught"
    elif done.returncode == 2:
        status, failure = "caught (collection error)", failure or last_line
    elif done.returncode == 5 or (done.returncode == 0 and ran == 0):
        status = "not run"
    elif done.returncode == 0:
        status = "survived"
    else:
        status, failure = f"error (pytest exit {done.returncode})", last_line
    return status, ran, skipped, failure, seconds


def selection(m):
    return " ".join(m.tests) + "".join(f" [{k}={v}]" for k, v in m.env)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the python running the tests (default: this one)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these mutations only")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests, run nothing")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds one pytest run may take")
    args = parser.parse_args(argv)
    mutations = MUTATIONS
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTATIONS})
        if unknown:
            parser.error(f"unknown mutation(s) {unknown}; known: {[m.name for m in MUTATIONS]}")
        mutations = tuple(m for m in MUTATIONS if m.name in args.only)
    check(ROOT, mutations)
    if args.list:
        for m in mutations:
            print(f"{m.name}: {m.bug}\n  {m.path}: {m.old!r} -> {m.new!r}\n  tests: {selection(m)}")
        return 0

    probe = ("import sys, importlib.util as u; print(sys.version.split()[0]); "
             "print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))")
    modules = sorted({"torch", "numba"}.union(*(m.needs for m in mutations)))
    version, found = subprocess.run([args.python, "-c", probe, *modules], capture_output=True, text=True,
                                    check=True).stdout.split("\n")[:2]
    present = set(found.split())
    print(f"{args.python}: Python {version}, {', '.join(m if m in present else 'no ' + m for m in modules)}; "
          f"{os.cpu_count()} cores, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinygen-mutations-") as tmp:
        tree = copy_tree(ROOT, os.path.join(tmp, "tree"))
        check_imports(args.python, tree)
        missing = {m.name: sorted(set(m.needs) - present) for m in mutations}
        baseline = {}
        for m in mutations:
            key = (m.tests, m.env)
            if missing[m.name]:
                continue
            if key not in baseline:
                baseline[key] = run_tests(args.python, tree, m.tests, m.env, args.timeout)
                status, ran, skipped, failure, seconds = baseline[key]
                print(f"baseline {selection(m)}: {ran} ran, {skipped} skipped, "
                      f"{'passed' if status == 'survived' else status} {failure} ({seconds:.0f} s)", flush=True)
        for m in mutations:
            path = os.path.join(tree, m.path)
            with open(path, encoding="utf-8") as f:
                original = f.read()
            if missing[m.name]:
                rows.append((m, f"not run (no {', '.join(missing[m.name])})", 0, 0, "", 0.0))
                continue
            base = baseline[(m.tests, m.env)][0]
            if base not in ("survived", "not run"):
                rows.append((m, "baseline fails", 0, 0, "", 0.0))
                continue
            with open(path, "w", encoding="utf-8") as f:
                f.write(original.replace(m.old, m.new, 1))
            try:
                rows.append((m, *run_tests(args.python, tree, m.tests, m.env, args.timeout)))
            finally:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original)
            print(f"{m.name}: {rows[-1][1]} ({rows[-1][-1]:.0f} s)", flush=True)

    print("\n| mutation | file | tests | ran (skipped) | result | first failing test | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for m, status, ran, skipped, failure, seconds in rows:
        print(f"| {m.name} | {m.path} | {selection(m)} | {ran} ({skipped}) | {status} | {failure} | {seconds:.0f} |")
    survived = [m.name for m, status, *_ in rows if status == "survived"]
    print(f"\n{len(survived)} of {len(rows)} survived" + (f": {', '.join(survived)}" if survived else ""))
    return 1 if survived or any(row[1].startswith(("error", "baseline", "timed")) for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
