"""The training loop and the `tinygen` command: files, resume after a kill, divergence, errors."""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinygen import backend, cli, trainer
from tinygen.errors import ArgumentError, CheckpointError, TinygenError
from tinygen.image import read_png
from tinygen.kernels.dispatch import kernel_info
from tinygen.models import MODELS
from tinygen.serialization import load, save


def model_arrays(path):
    """Every array of a checkpoint's model state, by flat key."""
    flat = {}

    def walk(node, key):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}/{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{key}/{i}")
        elif isinstance(node, np.ndarray):
            flat[key] = node

    walk(load(path)["model"], "model")
    return flat


def assert_same_state(path_a, path_b):
    a, b = model_arrays(path_a), model_arrays(path_b)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_train_writes_checkpoint_metrics_config_and_grids(tmp_path):
    out = tmp_path / "run"
    path = trainer.train("vae", str(out), steps=12, checkpoint_every=4, sample_every=6, log_every=2)
    assert path == str(out / "checkpoint.npz")
    state = load(path)
    assert state["step"] == 12 and state["run"]["model"] == "vae"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [2, 4, 6, 8, 10, 12]
    assert all(np.isfinite(m["loss"]) and m["steps_per_s"] > 0 for m in lines)
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "vae" and config["steps"] == 12 and config["config"]["latent_dim"] == 20
    assert config["config"]["prior"] == "vamp"  # a fresh run gets today's defaults, not those of Config.LEGACY
    assert sorted(os.listdir(out / "samples")) == ["final.png", "step_000006.png"]
    grid = read_png(out / "samples" / "final.png")
    assert grid.shape == (8 * 30 + 2, 8 * 30 + 2) and grid.dtype == np.uint8


def test_resume_follows_the_uninterrupted_trajectory(tmp_path):
    whole = trainer.train("vae", str(tmp_path / "whole"), steps=12, checkpoint_every=4)
    trainer.train("vae", str(tmp_path / "parts"), steps=8, checkpoint_every=4)
    parts = trainer.train("vae", str(tmp_path / "parts"), steps=12, checkpoint_every=4, resume=True)
    assert_same_state(whole, parts)
    steps = [json.loads(line)["step"] for line in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [8, 10, 12]  # every 10th step, and the last step of each invocation


@pytest.mark.parametrize("name, before, overrides", [
    ("gan", {"minibatch_std": False}, {"batch_size": 8}),  # D without the layer
    ("dcgan", {"refine": False, "minibatch_std": False}, {"batch_size": 8, "width": 4}),
    ("vae", {"prior": "standard"}, {}),  # no pseudo-inputs
])
def test_a_run_saved_before_a_setting_existed_loads_and_resumes_as_it_was(tmp_path, name, before, overrides):
    """A checkpoint from before a setting existed (`GANConfig.minibatch_std`, `DCGANConfig.refine`,
    `VAEConfig.prior`) has no weights for it: it is rebuilt with the setting's old value
    (`Config.LEGACY`), not today's default."""
    out = tmp_path / "old"
    path = trainer.train(name, str(out), steps=2, overrides={**overrides, **before}, sample_every=2)
    state = load(path)
    for field in before:  # as written then
        del state["run"]["overrides"][field], state["run"]["config"][field]
    save(state, path)
    model, run, step = trainer.load_checkpoint(path)
    assert step == 2
    for field, value in before.items():
        assert getattr(model.config, field) == value and field not in run["overrides"]
    trainer.train(name, str(out), steps=3, resume=True, sample_every=3)
    model, run, step = trainer.load_checkpoint(path)
    assert step == 3
    for field, value in before.items():
        assert getattr(model.config, field) == value and run["config"][field] == value
        assert getattr(MODELS[name].Config(), field) != value  # new runs get today's default


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL at a random moment, resume, and land exactly where an uninterrupted run lands."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tinygen", "train", "vae", "--steps", "100000", "--checkpoint-every", "5",
           "--sample-every", "100000", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.npz").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(0.3)  # kill somewhere after the first checkpoint, possibly mid-step or mid-write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = load(out / "checkpoint.npz")["step"]
    assert step % 5 == 0 and step >= 5
    resumed = trainer.train("vae", str(out), steps=step + 7, checkpoint_every=5, resume=True)
    whole = trainer.train("vae", str(tmp_path / "whole"), steps=step + 7, checkpoint_every=5)
    assert_same_state(whole, resumed)
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged)), "metrics after the checkpoint were logged twice"


def test_a_fresh_run_does_not_keep_the_metrics_of_one_killed_before_its_first_checkpoint(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": 123.0}) + "\n")
    trainer.train("vae", str(out), steps=2, log_every=1)
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_drops_a_metrics_line_cut_off_by_a_kill(tmp_path):
    out = tmp_path / "run"
    trainer.train("vae", str(out), steps=4, checkpoint_every=2, log_every=1)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # the kill came in the middle of a write
    trainer.train("vae", str(out), steps=6, checkpoint_every=2, log_every=1, resume=True)
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("name, value", [("steps", 0), ("steps", -5), ("epochs", 0), ("checkpoint_every", 0),
                                         ("sample_every", -1), ("steps", 2.5)])
def test_run_lengths_and_intervals_must_be_positive_integers(tmp_path, name, value):
    with pytest.raises(ArgumentError, match=f"{name} must be a positive integer, got {value!r}"):
        trainer.train("vae", str(tmp_path / "run"), **{name: value})
    assert not (tmp_path / "run" / "config.json").exists()


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = trainer.models.MODELS["vae"].train_step
    calls = []

    def train_step(self, images, labels):
        calls.append(1)
        losses = original(self, images, labels)
        return {**losses, "loss": float("nan")} if len(calls) == 5 else losses

    monkeypatch.setattr(trainer.models.MODELS["vae"], "train_step", train_step)
    out = tmp_path / "nan"
    with pytest.raises(trainer.TrainingDivergedError, match=r"diverged at step 5: loss=nan.*checkpoint\.npz"):
        trainer.train("vae", str(out), steps=20, checkpoint_every=2)
    assert load(out / "checkpoint.npz")["step"] == 4


def test_runs_are_never_overwritten_and_resume_checks_its_input(tmp_path):
    out = str(tmp_path / "run")
    trainer.train("vae", out, steps=2)
    with pytest.raises(ArgumentError, match="already holds a run"):
        trainer.train("vae", out, steps=2)
    with pytest.raises(ArgumentError, match="holds a 'vae' run, not 'gan'"):
        trainer.train("gan", out, steps=4, resume=True)
    with pytest.raises(ArgumentError, match="do not pass lr"):
        trainer.train("vae", out, steps=4, resume=True, overrides={"lr": 0.1})
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        trainer.train("vae", str(tmp_path / "empty"), resume=True)
    with pytest.raises(ArgumentError, match="vae has no setting width"):
        trainer.build_model("vae", {"width": 3})


def test_command_line_train_sample_info(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "convvae", "--steps", "3", "--batch-size", "16", "--out", str(out)]) == 0
    ckpt = str(out / "checkpoint.npz")
    npz = tmp_path / "samples.npz"
    assert cli.main(["sample", "--checkpoint", ckpt, "--n", "5", "--out", str(tmp_path / "g.png"),
                     "--npz", str(npz), "--npz-dtype", "uint8"]) == 0
    samples = load(npz)["samples"]
    assert samples.shape == (5, 1, 28, 28) and samples.dtype == np.uint8
    assert read_png(tmp_path / "g.png").shape == (2 * 30 + 2, 3 * 30 + 2)  # 5 images: 2 rows of 3
    assert cli.main(["sample", "--checkpoint", ckpt, "--sampler", "ddim"]) == 2
    assert "only apply to diffusion models" in capsys.readouterr().err
    assert cli.main(["sample", "--checkpoint", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert cli.main(["sample", "--checkpoint", ckpt, "--out", str(tmp_path / "nodir" / "g.png")]) == 2
    assert f"--out {tmp_path / 'nodir' / 'g.png'}: the folder {tmp_path / 'nodir'} does not exist" in capsys.readouterr().err
    assert cli.main(["info"]) == 0
    assert f"kernels: {kernel_info()['backend']}" in capsys.readouterr().out


class Killed(Exception):
    pass


def test_sampling_killed_between_batches_continues_where_it_stopped(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "vae", "--steps", "2", "--batch-size", "8", "--out", str(out)]) == 0
    ckpt, whole, resumed = str(out / "checkpoint.npz"), tmp_path / "whole.npz", tmp_path / "resumed.npz"
    command = ["sample", "--checkpoint", ckpt, "--n", "7", "--batch-size", "3", "--out", ""]
    assert cli.main(command + ["--npz", str(whole)]) == 0
    assert not os.path.exists(f"{whole}.partial")  # removed once the samples are saved

    model_class = type(trainer.load_checkpoint(ckpt)[0])
    sample, calls = model_class.sample, []

    def killed_at_the_third_batch(self, n, **options):
        calls.append(n)
        if len(calls) == 3:
            raise Killed
        return sample(self, n, **options)

    monkeypatch.setattr(model_class, "sample", killed_at_the_third_batch)
    with pytest.raises(Killed):
        cli.main(command + ["--npz", str(resumed)])
    assert load(f"{resumed}.partial")["samples"].shape == (6, 1, 28, 28) and not resumed.exists()
    monkeypatch.setattr(model_class, "sample", sample)
    assert cli.main(command + ["--npz", str(resumed)]) == 0  # draws the last image only
    np.testing.assert_array_equal(load(resumed)["samples"], load(whole)["samples"])
    assert not os.path.exists(f"{resumed}.partial")

    save(load(f"{whole}") | {"settings": {}}, f"{resumed}.partial")  # another draw's file is refused, not mixed in
    assert cli.main(command + ["--npz", str(resumed), "--seed", "1"]) == 2
    assert "holds samples drawn with other settings" in capsys.readouterr().err


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_trains_on_mnist_idx_files(tmp_path, model, mnist_idx_dir):
    out = tmp_path / model
    small = {"channels": [8, 16], "groups": 4} if model == "ddpm" else {}  # its grid samples 50 steps
    trainer.train(model, str(out), steps=2, overrides={"batch_size": 8, **small}, data="mnist",
                  data_dir=mnist_idx_dir, sample_every=2)
    run = json.loads((out / "config.json").read_text())
    assert run["data"] == "mnist" and run["steps"] == 2 and run["config"]["steps"] == 2
    assert load(out / "checkpoint.npz")["step"] == 2


def test_python_dash_m_tinygen_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "tinygen", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("tinygen ")


def write_colour_npz(path, n=12, size=32, classes=3):
    """n RGB images (n, 3, size, size) uint8, each a flat colour of its class, with labels and names."""
    labels = np.arange(n) % classes
    colours = np.array([[230, 40, 40], [40, 200, 60], [40, 60, 220]], np.uint8)[labels]  # (n, 3)
    images = np.broadcast_to(colours[:, :, None, None], (n, 3, size, size)).copy()
    np.savez(path, images=images, labels=labels, classes=np.array(["red", "green", "blue"][:classes]))
    return images, labels


def test_data_dir_without_data_is_refused_and_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "vae", "--data-dir", str(tmp_path), "--out", str(out)]) == 2
    assert f"--data-dir {tmp_path} needs --data" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_that_fails_before_its_first_step_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TinygenError, match="missing"):
        trainer.train("vae", str(out), data="folder", data_dir=str(tmp_path / "missing"))
    assert not out.exists()
    with pytest.raises(ArgumentError, match="no conditional form"):
        trainer.train("vae", str(out), data="emoji", conditional=True)
    assert not out.exists()
    out.mkdir()  # a folder that was there before stays
    with pytest.raises(ArgumentError, match="batch_size 64 is larger than the 12 training images"):
        write_colour_npz(tmp_path / "few.npz")
        trainer.train("dcgan", str(out), data="npz", data_dir=str(tmp_path / "few.npz"))
    assert out.is_dir()


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_the_data_decides_the_image_shape_and_a_resumed_run_keeps_it(tmp_path, model):
    write_colour_npz(tmp_path / "colour.npz", n=16)
    out = tmp_path / model
    trainer.train(model, str(out), steps=2, overrides={"batch_size": 8}, data="npz", data_dir=str(tmp_path / "colour.npz"),
                  image_size=28, sample_every=2)
    run = json.loads((out / "config.json").read_text())
    implied = {"likelihood": "logistic"} if model == "vae" else {}  # a bound in bits/dim on 8-bit colour
    assert run["data_settings"] == {"image_channels": 3, "image_size": 28, **implied}
    assert run["classes"] == ["red", "green", "blue"]
    assert read_png(out / "samples" / "final.png").shape == (8 * 30 + 2, 8 * 30 + 2, 3)
    trainer.train(model, str(out), steps=3, resume=True, sample_every=3)
    loaded, _, step = trainer.load_checkpoint(str(out / "checkpoint.npz"))
    assert step == 3 and loaded.sample(2).shape == (2, 3, 28, 28)
    with pytest.raises(ArgumentError, match="image_size=32 disagrees with the data"):
        trainer.train(model, str(tmp_path / "clash"), overrides={"image_size": 32}, data="npz",
                      data_dir=str(tmp_path / "colour.npz"), image_size=28)


def test_a_conditional_ddpm_samples_one_row_per_class(tmp_path, capsys):
    write_colour_npz(tmp_path / "colour.npz")
    out = tmp_path / "ddpm"
    small = {"batch_size": 4, "channels": [4, 8], "groups": 4, "T": 20}
    trainer.train("ddpm", str(out), steps=2, overrides=small, data="npz", data_dir=str(tmp_path / "colour.npz"),
                  conditional=True, sample_every=2)
    run = json.loads((out / "config.json").read_text())
    assert run["data_settings"]["num_classes"] == 3 and run["data_settings"]["attn_resolutions"] == [16]
    assert run["config"]["channels"] == [4, 8]  # the run's overrides win over the shape's defaults
    assert read_png(out / "samples" / "final.png").shape == (3 * 34 + 2, 21 * 34 + 2, 3)  # 3 rows of 64 // 3
    ckpt, npz, grid = str(out / "checkpoint.npz"), tmp_path / "s.npz", tmp_path / "g.png"
    command = ["sample", "--checkpoint", ckpt, "--steps", "3", "--out", str(grid), "--npz", str(npz)]
    assert cli.main(command + ["--n", "4", "--labels", "2,0", "--guidance", "1.5"]) == 0
    assert "rows: 2 blue, 0 red (2 samples each)" in capsys.readouterr().out
    assert load(npz)["samples"].shape == (4, 3, 32, 32) and read_png(grid).shape == (2 * 34 + 2, 2 * 34 + 2, 3)
    assert cli.main(command + ["--n", "6"]) == 0  # no --labels: every class
    assert "rows: 0 red, 1 green, 2 blue (2 samples each)" in capsys.readouterr().out
    assert cli.main(command + ["--labels", "0,3"]) == 2
    assert "classes 0..2; 3 is not one" in capsys.readouterr().err
    assert cli.main(command + ["--labels", "red"]) == 2
    assert "comma-separated class indices" in capsys.readouterr().err


def test_labels_and_guidance_need_a_conditional_model(tmp_path, capsys):
    out = tmp_path / "vae"
    trainer.train("vae", str(out), steps=1, overrides={"batch_size": 8}, sample_every=1)
    ckpt = str(out / "checkpoint.npz")
    assert cli.main(["sample", "--checkpoint", ckpt, "--labels", "1", "--out", ""]) == 2
    assert "has no classes" in capsys.readouterr().err
    assert cli.main(["sample", "--checkpoint", ckpt, "--guidance", "2", "--out", ""]) == 2
    assert "--guidance only apply to diffusion models" in capsys.readouterr().err


def test_eval_of_a_conditional_ddpm_draws_classes_as_the_training_data_has_them(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ddpm"
    small = {"batch_size": 4, "channels": [4, 8], "groups": 4, "T": 20}
    trainer.train("ddpm", str(out), steps=1, overrides=small, data="emoji", conditional=True, sample_every=1)
    model_class, drawn = MODELS["ddpm"], []
    sample = model_class.sample

    @functools.wraps(sample)  # keeps sample's signature, which --help reads its defaults from
    def recording(self, n, **options):
        drawn.extend(options["labels"].tolist())
        assert options["guidance"] == 1.5
        return sample(self, n, **options)

    monkeypatch.setattr(model_class, "sample", recording)
    command = ["eval", "--checkpoint", str(out / "checkpoint.npz"), "--data", "emoji", "--n", "40", "--steps", "2",
               "--guidance", "1.5", "--likelihood-n", "0"]
    assert cli.main(command) == 0
    assert "classes in the training data's proportions" in capsys.readouterr().out
    from tinygen.data import Emoji
    expected = np.random.default_rng(0).choice(Emoji(train=True).labels, size=40)
    assert drawn == expected.tolist() and len(set(drawn)) > 3


def test_no_ema_samples_from_the_trained_weights_where_a_model_averages_them(tmp_path, capsys):
    out = tmp_path / "gan"
    trainer.train("gan", str(out), steps=3, overrides={"batch_size": 8}, sample_every=3)
    ckpt, npz = str(out / "checkpoint.npz"), tmp_path / "s.npz"
    command = ["sample", "--checkpoint", ckpt, "--n", "4", "--out", "", "--npz", str(npz)]
    assert cli.main(command) == 0
    averaged = load(npz)["samples"]
    assert cli.main(command + ["--no-ema"]) == 0
    model, _, _ = trainer.load_checkpoint(ckpt)
    backend.manual_seed(0)
    np.testing.assert_array_equal(load(npz)["samples"], model.sample(4, use_ema=False))
    assert not np.array_equal(load(npz)["samples"], averaged)
    trainer.train("vae", str(tmp_path / "vae"), steps=1, overrides={"batch_size": 8}, sample_every=1)
    assert cli.main(["sample", "--checkpoint", str(tmp_path / "vae" / "checkpoint.npz"), "--no-ema", "--out", ""]) == 2
    assert "keeps no average of its weights" in capsys.readouterr().err
