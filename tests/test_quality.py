"""`benchmarks.quality` and `benchmarks.quality_curve`: training time from the metrics across a
resume, reuse and refusal of run folders, and one tiny end-to-end run of each (the first beside
its PyTorch twin where torch is installed)."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest

from benchmarks import quality
from tinygen import backend, image, trainer
from tinygen.serialization import load
from tinygen.tensor import Tensor

def test_elapsed_seconds_continue_across_a_resume(tmp_path):
    out = tmp_path / "vae"
    trainer.train("vae", str(out), steps=8, checkpoint_every=4, log_every=2)
    first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trainer.train("vae", str(out), steps=12, checkpoint_every=4, log_every=2, resume=True)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    elapsed = [m["elapsed_s"] for m in lines]
    assert [m["step"] for m in lines] == [2, 4, 6, 8, 10, 12]
    assert elapsed[:4] == [m["elapsed_s"] for m in first] and elapsed == sorted(elapsed) and elapsed[0] > 0
    assert quality.training_seconds(str(out), 12) == (elapsed[-1], "elapsed_s of the last line of metrics.jsonl")


def test_training_time_of_old_metrics_is_unknown(tmp_path):
    out = tmp_path / "vae"
    trainer.train("vae", str(out), steps=4, log_every=2)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (out / "metrics.jsonl").write_text("".join(json.dumps({k: v for k, v in m.items() if k != "elapsed_s"}) + "\n"
                                               for m in lines))
    seconds, source = quality.training_seconds(str(out), 4)
    assert seconds is None and source.startswith("unknown") and "never resumed" in source
    # resuming such a run writes no elapsed_s: its total cannot be known
    trainer.train("vae", str(out), steps=6, log_every=2, resume=True)
    assert "elapsed_s" not in json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


def test_a_folder_holding_another_run_is_refused(tmp_path):
    trainer.train("vae", str(tmp_path / "vae"), steps=3)
    with pytest.raises(SystemExit, match="holds another run"):
        quality.ensure_trained("vae", str(tmp_path / "vae"), 5, full=False)


def test_train_data_mnist_trains_on_the_files_and_keeps_runs_apart(tmp_path, capsys, mnist_idx_dir):
    out = str(tmp_path / "vae")
    quality.ensure_trained("vae", out, 2, full=False, data_dir=mnist_idx_dir)
    run = load(os.path.join(out, trainer.CHECKPOINT))["run"]
    assert (run["data"], run["data_dir"], run["steps"]) == ("mnist", mnist_idx_dir, 2)
    assert quality.ensure_trained("vae", out, 2, full=False, data_dir=mnist_idx_dir)["how"].startswith("reused")
    with pytest.raises(SystemExit, match="holds another run.*on embedded"):
        quality.ensure_trained("vae", out, 2, full=False)  # the same folder, the embedded subset asked for
    from benchmarks import quality_curve

    with pytest.raises(SystemExit):
        quality_curve.main(["--model", "vae", "--steps", "2", "--runs", str(tmp_path), "--data-dir", mnist_idx_dir])
    assert "trained on mnist data" in capsys.readouterr().err
    no_folder = ["--train-data", "mnist", "--data-dir", "", "--runs", str(tmp_path / "none")]
    with pytest.raises(SystemExit):
        quality.main(["--models", "vae"] + no_folder)
    assert "--train-data mnist trains on the MNIST files of --data-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quality_curve.main(["--model", "vae", "--steps", "2"] + no_folder)
    assert "--train-data mnist trains on the MNIST files of --data-dir" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["ddim0", "ddim1001", "dpmpp", "dpmpp0", "dpmpp1001", "dpm20", "ancestral", ""])
def test_bad_samplers_are_refused(text):
    with pytest.raises(ValueError):
        quality.parse_samplers(text)


def test_a_tiny_ddpm_run_has_a_row_per_sampler_dpmpp_included(tmp_path, capsys, monkeypatch):
    """Issue 24's table: the DDPM with every sampler, DPM-Solver++ beside DDIM (and beside the twin's,
    where torch is installed), each with its sampling time."""
    with_torch = importlib.util.find_spec("torch") is not None
    monkeypatch.setattr(trainer, "write_grid", lambda model, path, **options: None)  # the run's final grid
    out = tmp_path / "results.json"
    argv = ["--models", "ddpm", "--steps-scale", "0.00025", "--n", "6", "--batch-size", "6", "--data-dir", "",
            "--likelihood-n", "0", "--ddpm-samplers", "dpmpp3,ddim2", "--runs", str(tmp_path / "runs"),
            "--out", str(out)] + (["--torch"] if with_torch else [])
    assert quality.main(argv) == 0
    table = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    ours = [row for row in rows if row["model"] == "ddpm"]
    assert [row["sampler_options"] for row in ours] == [{"sampler": "dpmpp", "steps": 3},
                                                        {"sampler": "ddim", "steps": 2, "eta": 0.0}]
    assert ours[0]["sampler"] == "DPM-Solver++(2M) 3 steps, even in log-SNR, EMA weights"
    batch = quality.budget("ddpm", 0.00025)[1]  # one step of the default batch
    assert f"| ddpm | DPM-Solver++(2M) 3 steps, even in log-SNR, EMA weights | 1 × {batch} (×0.00025) |" in table
    assert all(row["sample_seconds"] > 0 and np.isfinite(row["metrics"]["fd"]) for row in ours)
    grids = sorted(p.name for p in (tmp_path / "runs").glob("ddpm-*steps/quality/*.png"))
    assert grids == ["ddim2-n6-seed0-step1-batch6-cpu.png", "dpmpp3-n6-seed0-step1-batch6-cpu.png"]
    theirs = [row for row in rows if row["model"] == "ddpm (torch)"]
    assert [row["sampler"] for row in theirs] == ([row["sampler"] for row in ours] if with_torch else [])
    for row in theirs:
        samples = np.load(row["samples"].split("(")[-1].rstrip(")"))["samples"]
        assert samples.shape == (6, 1, 28, 28) and row["sample_seconds"] > 0


@pytest.mark.parametrize("with_torch", [False, True])
def test_a_tiny_run_writes_the_table_and_json(tmp_path, capsys, with_torch):
    if with_torch and importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed")
    out = tmp_path / "results.json"
    argv = ["--models", "vae", "--steps-scale", "0.0006", "--n", "20", "--data-dir", "", "--likelihood-n", "5",
            "--iwae-k", "3", "--runs", str(tmp_path / "runs"), "--out", str(out)] + (["--torch"] if with_torch else [])
    assert quality.main(argv) == 0
    table = capsys.readouterr().out
    assert "| real training images (floor) |" in table and "| vae | decoder means" in table
    assert "12 × 128 (×0.0006)" in table and "FD (n = 20)" in table
    report = json.loads(out.read_text())
    rows = {row["model"]: row for row in report["rows"]}
    assert report["n"] == 20 and len(report["feature_net_sha256"]) == 64
    assert rows["vae"]["training"]["how"] == "trained by this command" and rows["vae"]["train_seconds"] > 0
    assert set(rows["vae"]["likelihood"]) == {"test_elbo_nats", "test_iwae_k3_nats"}
    assert ("vae (torch)" in rows) == with_torch
    grids = list((tmp_path / "runs").glob("vae-*steps/quality/default-n20-seed0-step12-batch500-cpu.png"))
    assert len(grids) == 1 and image.read_png(str(grids[0])).shape == (2 + 2 * 30, 2 + 10 * 30)
    if with_torch:
        assert rows["vae (torch)"]["n"] == 20 and rows["vae (torch)"]["likelihood"]["test_elbo_nats"]["n"] == 5
    # a second run reuses the finished training run and the saved samples
    assert quality.main(argv) == 0
    again = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    assert again["vae"]["training"]["how"] == "reused (finished before this command)"
    assert again["vae"]["metrics"] == rows["vae"]["metrics"]
    assert again["vae"]["sample_seconds"] == rows["vae"]["sample_seconds"]
    assert all(again[m]["samples"].startswith("saved by an earlier run") for m in again if "vae" in m)
    # another batch size draws other samples (tinygen's and the twin's)
    assert quality.main(argv + ["--batch-size", "7"]) == 0
    third = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    assert all(third[m]["samples"].startswith("drawn by this command") for m in third if "vae" in m)


def test_saved_samples_are_reused_only_when_drawn_the_same_way(tmp_path, monkeypatch):
    model, folder, cpu = trainer.build_model("vae"), str(tmp_path), backend.device("cpu")

    def how(batch_size=4, device=cpu):
        return quality.tinygen_samples(model, folder, "default", 8, batch_size, 0, {}, 3, False, device)[2]

    assert how().startswith("drawn by this command")
    assert how().startswith("saved by an earlier run")
    assert how(batch_size=3).startswith("drawn")  # the random draws come in another order: other samples
    # this model samples on the CPU; only the key says cuda, as for a GPU run into the same folder
    assert how(device=backend.device("cuda:0")).startswith("drawn")
    assert how().startswith("saved") and how(batch_size=3).startswith("saved")  # kept side by side
    monkeypatch.setattr(quality.machine, "describe", lambda: "another machine, kernels=numpy")
    assert how().startswith("drawn")  # the seconds are that machine's


def test_the_curve_resumes_one_run_and_scores_each_stage(tmp_path, capsys):
    from benchmarks import quality_curve

    argv = ["--model", "vae", "--steps", "3,6", "--n", "20", "--data-dir", "", "--runs", str(tmp_path),
            "--device", "cpu"]
    assert quality_curve.main(argv) == 0
    report = json.loads((tmp_path / "vae" / "curve.json").read_text())
    assert report["device"] == "cpu"
    assert [p["step"] for p in report["points"]] == [3, 6] and report["floor"]["n"] == 20
    assert all(math.isfinite(p["metrics"]["fd"]) and p["training_s"] > 0 for p in report["points"])
    table = capsys.readouterr().out
    assert "| 3 |" in table and "| 6 |" in table and "NOTE: n = 20" in table
    with pytest.raises(SystemExit):
        quality_curve.main(["--model", "vae", "--steps", "6,3", "--runs", str(tmp_path)])


@pytest.mark.parametrize("argv, message", [
    (["--model", "vae", "--sampler", "ddpm"], "--sampler applies to the DDPM only, not vae"),
    (["--model", "ddpm", "--sampler", "ddpm,ddim20"], "--sampler: one sampler per curve, got 'ddpm,ddim20'"),
])
def test_curve_takes_one_sampler_and_only_for_the_ddpm(tmp_path, capsys, argv, message):
    from benchmarks import quality_curve

    with pytest.raises(SystemExit):
        quality_curve.main(argv + ["--steps", "2", "--runs", str(tmp_path)])
    assert message in capsys.readouterr().err


def test_the_curve_trains_with_another_batch_size_and_learning_rate(tmp_path, capsys):
    from benchmarks import quality_curve

    argv = ["--model", "vae", "--steps", "2", "--n", "20", "--data-dir", "", "--runs", str(tmp_path),
            "--train-batch-size", "16", "--lr", "0.002"]
    assert quality_curve.main(argv) == 0
    assert "configuration changed from its default: {'batch_size': 16, 'lr': 0.002}" in capsys.readouterr().out
    report = json.loads((tmp_path / "vae" / "curve.json").read_text())
    assert report["overrides"] == {"batch_size": 16, "lr": 0.002}
    model, _, _ = trainer.load_checkpoint(str(tmp_path / "vae" / trainer.CHECKPOINT))
    assert (model.config.batch_size, model.config.lr) == (16, 0.002)
    with pytest.raises(SystemExit):  # the same folder with the default settings
        quality_curve.main(argv[:-4] + ["--steps", "2,4"])
    assert "trained with the settings {'batch_size': 16, 'lr': 0.002}, not {}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quality_curve.main(argv[:-1] + ["0"])
    assert "--lr positive" in capsys.readouterr().err


def test_a_device_without_a_gpu_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(quality.backend, "load_cupy", _no_cupy)
    with pytest.raises(SystemExit):
        quality.main(["--models", "vae", "--device", "cuda", "--data-dir", "", "--runs", str(tmp_path)])
    assert "--device cuda: no CuPy here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quality.main(["--models", "vae", "--device", "tpu", "--data-dir", "", "--runs", str(tmp_path)])
    assert "unknown device 'tpu'" in capsys.readouterr().err
    from benchmarks import quality_curve

    with pytest.raises(SystemExit):
        quality_curve.main(["--model", "ddpm", "--steps", "2", "--device", "cuda", "--data-dir", "",
                            "--runs", str(tmp_path)])
    assert "--device cuda: no CuPy here" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def _no_cupy():
    raise quality.backend.BackendUnavailableError("no CuPy here")


def test_vae_prior_gap_scores_samples_reconstructions_and_the_floor(tmp_path, capsys, mnist_idx_dir):
    from benchmarks import vae_prior_gap

    path = trainer.train("vae", str(tmp_path / "vae"), steps=2)
    vae_prior_gap.main(["--checkpoint", path, "--data-dir", mnist_idx_dir, "--n", "100"])
    rows = [line.strip("| ").split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    fds = {name.split(":")[0]: float(fd) for name, fd in rows[2:]}  # after the header and its rule
    assert list(fds) == ["samples", "reconstructions", "the training images x themselves (floor)"]
    assert fds["the training images x themselves (floor)"] < fds["reconstructions"]  # two steps: grey blobs
    model, _, _ = trainer.load_checkpoint(path)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    mu, _ = model.encode(Tensor(x))
    np.testing.assert_allclose(vae_prior_gap.reconstructions(model, x, batch_size=2),
                               model.decode(mu).sigmoid().numpy(), rtol=1e-6)
    gan = trainer.train("gan", str(tmp_path / "gan"), steps=1, overrides={"batch_size": 8})
    with pytest.raises(SystemExit):
        vae_prior_gap.main(["--checkpoint", gan, "--data-dir", mnist_idx_dir])
    assert "holds a MLPGAN, not a VAE" in capsys.readouterr().err


# --- other datasets: emoji, the runs of `tinygen train`, the class-conditional DDPM -------------

EMOJI_SMOKE = ["--data", "emoji", "--steps-scale", "0.0005", "--n", "20", "--likelihood-n", "5", "--iwae-k", "3",
               "--t-subsample", "2", "--ddpm-samplers", "ddim2"]


def test_emoji_trains_both_implementations_alike_and_scores_them_in_its_features(tmp_path, capsys, monkeypatch):
    """The logistic ConvVAE and the conditional DDPM with attention on emoji, each beside its twin, built
    from the tinygen run's saved config (the data's settings), trained on the same batches and labels."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed")
    # the run's final grid (63 DDIM-50 samples of the 32x32 UNet) took 21 of this test's 33 s; not tested here
    monkeypatch.setattr(trainer, "write_grid", lambda model, path, **options: None)
    out = tmp_path / "results.json"
    argv = EMOJI_SMOKE + ["--models", "convvae,ddpm", "--conditional", "--guidance", "1", "--torch", "--steps", "ddpm=1",
                          "--runs", str(tmp_path / "runs"), "--out", str(out)]
    assert quality.main(argv) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    rows = {row["model"]: row for row in report["rows"]}
    assert report["protocol_n"] == 410 and report["n"] == 20 and report["feature_net"] == "ConvFeatureNet"
    assert report["data"] == {"data": "emoji", "data_dir": None, "image_size": None, "channels": None, "conditional": True}
    assert "FD (n = 20) | KID |" in table and "held-out" in report["reference"]["fd"]
    for name in ("convvae", "ddpm"):
        steps = 1 if name == "ddpm" else 2
        run = load(os.path.join(tmp_path, "runs", f"{name}-{steps}steps", trainer.CHECKPOINT))["run"]
        assert run["config"]["image_channels"] == 3 and run["config"]["image_size"] == 32
        ours, theirs = rows[name], rows[f"{name} (torch)"]
        assert ours["n"] == theirs["n"] == 20 and np.isfinite(theirs["metrics"]["kid"])
        # two steps from the same weights on the same batches: the same bound, to float32 rounding
        for key, value in ours["likelihood"].items():
            assert theirs["likelihood"][key]["value"] == pytest.approx(value["value"], rel=1e-3), key
    assert run["conditional"] and run["config"]["num_classes"] == 9 and tuple(run["config"]["attn_resolutions"]) == (16,)
    assert set(rows["convvae"]["likelihood"]) == {"test_elbo_nats", "test_iwae_k3_nats", "test_iwae_k3_bits_per_dim"}
    assert rows["ddpm"]["sampler_options"] == {"sampler": "ddim", "steps": 2, "eta": 0.0, "guidance": 1.0,
                                               "labels": "20 drawn from the training labels"}
    assert "classes in the training set's proportions, guidance 1" in rows["ddpm (torch)"]["sampler"]
    assert "the logistic's locations" in rows["convvae"]["sampler"]
    samples = np.load(rows["ddpm (torch)"]["samples"].split("(")[-1].rstrip(")"))["samples"]
    assert samples.shape == (20, 3, 32, 32)


def test_a_run_of_tinygen_train_is_reused_with_its_own_budget(tmp_path, capsys):
    folder = str(tmp_path / "mine")
    trainer.train("dcgan", folder, steps=2, data="emoji")
    before = sorted(os.listdir(folder))
    argv = EMOJI_SMOKE[:2] + ["--models", "dcgan", "--n", "20", "--run", f"dcgan={folder}", "--runs", str(tmp_path / "q")]
    assert quality.main(argv) == 0
    report = json.loads((tmp_path / "q" / "results.json").read_text())
    row = report["rows"][1]
    assert row["training"]["how"] == "reused (finished before this command)" and row["budget"]["steps"] == 2
    assert row["training"]["settings_differ"] == {}
    assert sorted(os.listdir(folder)) == before  # nothing written into a run folder of yours
    assert list((tmp_path / "q" / "dcgan" / "quality").glob("default-n20-*.npz"))  # the samples beside the table
    with pytest.raises(SystemExit, match="holds another run"):  # --steps that are not the run's
        quality.main(argv + ["--steps", "dcgan=3"])
    with pytest.raises(SystemExit, match="holds another run.*on embedded"):  # the run is of emoji, not MNIST's
        quality.ensure_trained("dcgan", folder, 2, full=False, explicit=True)


def test_an_own_run_with_other_settings_is_used_and_noted_a_default_folder_refused(tmp_path, monkeypatch):
    folder = str(tmp_path / "vae")
    trainer.train("vae", folder, steps=2, data="emoji")
    spec = quality.data_spec("emoji")
    assert quality.ensure_trained("vae", folder, 2, full=False, spec=spec)["settings_differ"] == {}
    fresh = quality.fresh_config

    def other_default(name, spec, steps, dataset=None):  # as if the default had changed since the run
        config = fresh(name, spec, steps, dataset)
        config.hidden = 8
        return config

    monkeypatch.setattr(quality, "fresh_config", other_default)
    found = quality.ensure_trained("vae", folder, 2, full=False, spec=spec, explicit=True)
    assert found["settings_differ"] == {"hidden": {"run": 400, "fresh": 8}}
    with pytest.raises(SystemExit, match="another configuration than a fresh run's today.*hidden"):
        quality.ensure_trained("vae", folder, 2, full=False, spec=spec)


@pytest.mark.parametrize("argv, message", [
    (["--data", "emoji", "--models", "ddpm", "--guidance", "1"], "--guidance applies to the class-conditional DDPM"),
    (["--models", "vae", "--image-size", "32"], "--image-size apply to --data NAME other than MNIST"),
    (["--data", "emoji", "--train-data", "mnist"], "--train-data picks MNIST's training images"),
    (["--data", "mnist", "--train-data", "embedded"], "--data mnist and --train-data embedded disagree"),
    (["--models", "vae", "--run", "gan=somewhere"], "--steps/--run name gan, which --models leaves out"),
    (["--models", "vae", "--steps", "vae"], "--steps: give MODEL=VALUE"),
    (["--data", "cifar10", "--data-dir", "x"], "no feature network ships for 'cifar10'"),
])
def test_data_options_are_refused_before_any_work(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        quality.main(argv + ["--runs", str(tmp_path / "runs")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_class_labels_follow_the_training_proportions():
    class Data:
        labels = np.array([0] * 90 + [1] * 10)

    labels = quality.class_labels(Data, 2000, seed=0)
    assert labels == quality.class_labels(Data, 2000, seed=0) and set(labels) == {0, 1}
    assert 0.85 < labels.count(0) / 2000 < 0.95
