"""benchmarks/gpu_check.py without a GPU: the dry run's control flow, budget and report, and the
compute-sanitizer part's search, command and reading of the reports.

The dry run uses tests/fake_cupy.py as CuPy (the CUDA kernels compiled for the CPU with g++, or the
NumPy reference kernels without a compiler) and PyTorch on the CPU, on tiny shapes; this checks
that a GPU machine's one run will get through every part and write its report, not any speed.
About 30 s (the DDPM rows and the PyTorch subprocess dominate). The compute-sanitizer tests run a
stand-in executable that records its arguments and writes the reports given to it; the reports are
in compute-sanitizer's format (racecheck: "RACECHECK SUMMARY: N hazards displayed (E errors, W
warnings)"; memcheck: "ERROR SUMMARY: N errors"), a few seconds in all.
"""

import json
import os
import subprocess
import sys
import time

import pytest

import fake_cupy
from benchmarks import gpu_check

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_check.py")


def test_dry_run_measures_every_row_and_writes_the_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "TINYGEN_KERNELS", "TINYGEN_DEVICE")}
    result = subprocess.run([sys.executable, SCRIPT, "--dry-run", "--no-tests", "--budget", "300", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "DRY RUN" in out and "GPU cuda:0: fake GPU" in out and "## results" in out
    assert "## CUDA kernel tests under compute-sanitizer\n  skipped: dry run" in out
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["sanitizer"] == {"skipped": "dry run (no GPU to sanitize)"}
    assert (tmp_path / "gpu_check.txt").read_text().startswith("# tinygen GPU check (DRY RUN")
    rows = {(r["section"], r["name"]): r for r in report["rows"]}
    expected = {"noise": 5, "conv": 6, "ddpm": 2}
    for section, count in expected.items():
        assert sum(s == section for s, _ in rows) == count, sorted(rows)
    if fake_cupy.compiler() is not None:  # the emulated CUDA kernels ran: no row may have failed
        failed = {k: r["error"] for k, r in rows.items() if "error" in r}
        assert not failed, failed
    fused = rows["noise", "p_sample_step_noise (fused, RNG in-kernel)"]
    assert fused["tinygen_s"] > 0 and "fraction_of_copy" in fused and "met" in fused
    for name in ("c1", "t5", "c6"):
        assert rows["conv", name]["rate_value"] > 0
    assert rows["ddpm", "UNet train step"]["tinygen_s"] > 0
    sampling = rows["ddpm", "sampling 5 steps"]
    assert sampling["tinygen_s"] > 0 and sampling.get("finite") is True  # the full run, not an estimate
    if report["torch"].get("times"):
        assert {"p_sample_step_noise", "c1", "c1_tf32", "ddpm_train", "ddpm_sample"} <= set(report["torch"]["times"])
        assert "torch/tinygen" in out and "targets met:" in out


# --- compute-sanitizer ---------------------------------------------------------------------------------------


def executable(path, text="#!/bin/sh\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_compute_sanitizer_is_found_on_path_then_in_the_toolkits_then_in_the_wheels(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "cupy_cuda_path", lambda: None)
    monkeypatch.setattr(gpu_check, "TOOLKIT_DIRS", [str(tmp_path / "opt" / "cuda-*" / "bin")])
    env = {"PATH": str(tmp_path / "nothing")}
    path, why = gpu_check.find_sanitizer(environ=env, site_dirs=[str(tmp_path / "site")])
    assert path is None and "not on PATH" in why and "nvidia/cu13/bin" in why
    wheel = executable(tmp_path / "site" / "nvidia" / "cu13" / "bin" / "compute-sanitizer")
    assert gpu_check.find_sanitizer(environ=env, site_dirs=[str(tmp_path / "site")]) == (wheel, None)
    for version in ("9.2", "13.0", "12.4"):
        executable(tmp_path / "opt" / f"cuda-{version}" / "bin" / "compute-sanitizer")
    newest = str(tmp_path / "opt" / "cuda-13.0" / "bin" / "compute-sanitizer")
    assert gpu_check.find_sanitizer(environ=env, site_dirs=[str(tmp_path / "site")]) == (newest, None)
    home = executable(tmp_path / "home" / "bin" / "compute-sanitizer")
    env["CUDA_HOME"] = str(tmp_path / "home")
    assert gpu_check.find_sanitizer(environ=env, site_dirs=[]) == (home, None)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "compute-sanitizer").write_text("not executable")
    env["PATH"] = os.pathsep.join([str(tmp_path / "bin"), str(tmp_path / "nothing")])
    assert gpu_check.find_sanitizer(environ=env, site_dirs=[]) == (home, None)
    on_path = executable(tmp_path / "nothing" / "compute-sanitizer")
    assert gpu_check.find_sanitizer(environ=env, site_dirs=[]) == (on_path, None)
    assert gpu_check.find_sanitizer(explicit=str(tmp_path / "bin" / "compute-sanitizer")) == (
        None, f"--sanitizer {tmp_path / 'bin' / 'compute-sanitizer'} is not an executable file")
    assert gpu_check.find_sanitizer(explicit=home) == (home, None)


def test_the_sanitized_command_runs_the_gpu_kernel_tests_with_cupys_pool_off(tmp_path):
    cmd = gpu_check.sanitizer_command("/cuda/bin/compute-sanitizer", "memcheck", "/out/m.log", ["tests/kernels"],
                                      ["/shadow"])
    assert cmd[:cmd.index(sys.executable)] == [
        "/cuda/bin/compute-sanitizer", "--tool", "memcheck", "--target-processes", "application-only",
        "--report-api-errors", "no", "--print-limit", "100", "--log-file", "/out/m.log"]
    target = cmd[cmd.index(sys.executable) + 1:]
    assert target[:2] == ["-c", gpu_check.NO_POOL_PYTEST]
    assert target[2:] == ["-o", "pythonpath=/shadow . tests", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rfE",
                          "--tb=short", "tests/kernels"]
    # The -c program: CuPy's allocator set to None (no pool), then pytest with the arguments after it.
    (tmp_path / "cupy.py").write_text("import types\n"
                                      "cuda = types.SimpleNamespace(set_allocator=lambda a: print('allocator', a))\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", gpu_check.NO_POOL_PYTEST, "--version"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("allocator None"), result.stdout + result.stderr
    assert "pytest" in result.stdout + result.stderr


MEMCHECK_ERRORS = """========= COMPUTE-SANITIZER
========= Invalid __global__ write of size 4 bytes
=========     at im2col_f32_i32+0x2b0 in conv2d.cu:60
=========     by thread (255,0,0) in block (3,0,0)
=========     Address 0x7f3c00001000 is out of bounds
=========
========= Invalid __global__ write of size 4 bytes
=========     at im2col_f32_i32+0x2b0 in conv2d.cu:60
=========     by thread (0,0,0) in block (4,0,0)
=========     Address 0x7f3c00001400 is out of bounds
=========
========= Invalid __global__ read of size 8 bytes
=========     at gn_stats_f64+0x90
=========
========= ERROR SUMMARY: 3 errors
"""
RACECHECK_HAZARD = """========= COMPUTE-SANITIZER
========= Error: Race reported between Write access at 0x1a0 in reduce(float*)
=========     and Read access at 0x1f0 in reduce(float*) [16 hazards]
=========
========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)
"""


@pytest.mark.parametrize("text, errors, warnings, reports", [
    ("========= COMPUTE-SANITIZER\n========= ERROR SUMMARY: 0 errors\n", 0, 0, {}),
    ("========= COMPUTE-SANITIZER\n========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n",
     0, 0, {}),
    (MEMCHECK_ERRORS, 3, 0,
     {"Invalid __global__ write of size 4 bytes": 2, "Invalid __global__ read of size 8 bytes": 1}),
    (RACECHECK_HAZARD, 1, 0, {"Error: Race reported between Write access at 0x.. in reduce(float*)": 1}),
    (MEMCHECK_ERRORS.replace("========= ERROR SUMMARY: 3 errors\n", ""), None, None,  # cut short
     {"Invalid __global__ write of size 4 bytes": 2, "Invalid __global__ read of size 8 bytes": 1}),
    ("========= ERROR SUMMARY: 1 error\nprogram output\n========= ERROR SUMMARY: 2 errors\n", 3, 0, {}),  # 2 processes
    ("", None, None, {}),  # the target never started
], ids=["clean memcheck", "clean racecheck", "memcheck errors", "racecheck hazard", "cut short", "two summaries",
        "empty"])
def test_sanitizer_reports_are_counted(text, errors, warnings, reports):
    assert gpu_check.parse_sanitizer_log(text) == dict(errors=errors, warnings=warnings, reports=reports)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="looks for the killed grandchild in /proc")
def test_a_command_past_its_time_is_killed_with_its_children():
    child = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); "
             "time.sleep(60)")
    t0 = time.perf_counter()
    output, rc = gpu_check.run_capped([sys.executable, "-c", child], 3, dict(os.environ))
    assert rc == "timeout" and time.perf_counter() - t0 < 30 and "(stopped after 3 s: the budget)" in output
    grandchild = int(output.split()[0])
    for _ in range(50):  # gone, or a zombie waiting for init to reap it
        try:
            with open(f"/proc/{grandchild}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the grandchild {grandchild} (sleep 60) still runs")
    assert gpu_check.run_capped([sys.executable, "-c", "print('done')"], 30, dict(os.environ)) == ("done\n", 0)


FAKE_SANITIZER = """#!{python}
import json, os, sys, time
args = sys.argv[1:]
if args == ["--version"]:
    print("NVIDIA (R) Compute Sanitizer\\nCopyright (c) 2020-2026 NVIDIA Corporation\\nVersion 2099.1.0")
    sys.exit(0)
tool, log = args[args.index("--tool") + 1], args[args.index("--log-file") + 1]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(args) + "\\n")
with open(log, "w") as f:
    f.write(json.loads(os.environ["FAKE_LOGS"])[tool])
if tool in os.environ.get("FAKE_HANG", ""):
    time.sleep(60)
print("FAILED tests/kernels/test_conv2d_cupy.py::test_im2col - AssertionError" if "ERROR SUMMARY: 3" in
      open(log).read() else "", flush=True)
print("= 7 passed in 0.50s =")
"""


@pytest.fixture
def fake_sanitizer(tmp_path, monkeypatch):
    """A stand-in compute-sanitizer: FAKE_LOGS (JSON: tool -> report) written to its --log-file,
    its arguments appended to FAKE_CALLS, pytest's summary printed; FAKE_HANG: tools that hang."""
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_LOGS", json.dumps({"racecheck": RACECHECK_HAZARD, "memcheck": MEMCHECK_ERRORS}))
    return executable(tmp_path / "bin" / "compute-sanitizer", FAKE_SANITIZER.format(python=sys.executable))


def test_the_gpu_check_runs_racecheck_then_memcheck_and_reports_what_they_found(fake_sanitizer, tmp_path, capsys):
    args = gpu_check.argparse.Namespace(dry_run=False, no_tests=False, no_sanitizer=False, sanitizer=fake_sanitizer,
                                        sanitizer_budget=100, out=str(tmp_path / "out"))
    result = gpu_check.sanitize(args, gpu_check.Budget(1000), [], [])
    out = capsys.readouterr().out
    assert result["path"] == fake_sanitizer and result["version"] == "Version 2099.1.0"
    race, mem = result["runs"]
    assert race["tool"] == "racecheck" and (race["errors"], race["warnings"]) == (1, 0)
    assert mem["tool"] == "memcheck" and mem["errors"] == 3 and mem["rc"] == 0
    assert mem["reports"]["Invalid __global__ write of size 4 bytes"] == 2
    assert mem["pytest"] == "7 passed in 0.50s"
    assert mem["failures"] == ["FAILED tests/kernels/test_conv2d_cupy.py::test_im2col - AssertionError"]
    assert mem["log"] == str(tmp_path / "out" / "sanitizer_memcheck.log")
    assert "  racecheck: 1 errors, 0 warnings; pytest: 7 passed in 0.50s" in out
    assert "  memcheck: 3 errors; pytest: 7 passed in 0.50s" in out
    assert "    2 x Invalid __global__ write of size 4 bytes" in out
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [c[c.index("--tool") + 1] for c in calls] == ["racecheck", "memcheck"]
    assert all(c[c.index(sys.executable):][1:3] == ["-c", gpu_check.NO_POOL_PYTEST] for c in calls)


def test_a_sanitizer_run_cut_short_keeps_its_reports_and_says_so(fake_sanitizer, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_HANG", "memcheck")
    monkeypatch.setenv("FAKE_LOGS", json.dumps({"memcheck": MEMCHECK_ERRORS.split("========= ERROR SUMMARY")[0]}))
    monkeypatch.setattr(gpu_check, "MIN_TOOL_SECONDS", 1)
    memcheck, = gpu_check.run_sanitizer(fake_sanitizer, 3, ["tests/kernels"], dict(os.environ), [], str(tmp_path),
                                        tools=("memcheck",))
    assert memcheck["rc"] == "timeout" and memcheck["errors"] is None
    assert sum(memcheck["reports"].values()) == 3
    assert "memcheck: no summary (stopped by the budget); 3 reports before that" in capsys.readouterr().out
    ran = gpu_check.run_sanitizer(fake_sanitizer, 0.5, ["tests/kernels"], dict(os.environ), [], str(tmp_path))
    assert ran == [dict(tool="racecheck", skipped="out of budget"), dict(tool="memcheck", skipped="out of budget")]


def test_without_compute_sanitizer_the_gpu_check_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "find_sanitizer", lambda explicit: (None, "not on PATH, nor ..."))
    args = gpu_check.argparse.Namespace(dry_run=False, no_tests=False, no_sanitizer=False, sanitizer=None,
                                        sanitizer_budget=100, out=str(tmp_path))
    assert gpu_check.sanitize(args, gpu_check.Budget(1000), [], []) == {
        "skipped": "compute-sanitizer not on PATH, nor ..."}
    assert "  skipped: compute-sanitizer not on PATH, nor ..." in capsys.readouterr().out
