"""benchmarks/gpu_check.py --dry-run: the GPU check's control flow, budget and report, on this CPU machine.

The dry run uses tests/fake_cupy.py as CuPy (the CUDA kernels compiled for the CPU with g++, or the
NumPy reference kernels without a compiler) and PyTorch on the CPU, on tiny shapes; this checks
that a GPU machine's one run will get through every part and write its report, not any speed.
About 30 s (the DDPM rows and the PyTorch subprocess dominate).
"""

import json
import os
import subprocess
import sys

import fake_cupy

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_check.py")


def test_dry_run_measures_every_row_and_writes_the_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "TINYGEN_KERNELS", "TINYGEN_DEVICE")}
    result = subprocess.run([sys.executable, SCRIPT, "--dry-run", "--no-tests", "--budget", "300", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "DRY RUN" in out and "GPU cuda:0: fake GPU" in out and "## results" in out
    report = json.loads((tmp_path / "gpu_check.json").read_text())
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
