"""The pretrained weights the package ships: pinned, loadable, drawing images; and the command that makes them."""

import hashlib

import numpy as np
import pytest

import tinygen
from tinygen import cli, pretrained, trainer
from tinygen.errors import ArgumentError, CheckpointError
from tinygen.image import read_png
from tinygen.serialization import load, save

SMALL = {"channels": [8, 16], "groups": 4}


@pytest.mark.parametrize("name", list(pretrained.PRETRAINED))
def test_every_shipped_file_has_its_pinned_digest_and_draws_images_of_its_runs_shape(name):
    entry = pretrained.PRETRAINED[name]
    with open(pretrained.path_of(name), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == entry.sha256
    model = pretrained.load_pretrained(name)
    labels = None if model.config.num_classes is None else [0, model.config.num_classes - 1]
    images = model.sample(2, steps=2, labels=labels)
    assert images.shape == (2, model.config.image_channels, model.config.image_size, model.config.image_size)
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddpm")
    return trainer.train("ddpm", str(out), steps=3, overrides=SMALL, sample_every=100)


@pytest.mark.parametrize("use_ema", [True, False])
def test_build_keeps_the_sampling_weights_rounded_to_float16(small_run, tmp_path, use_ema):
    out = tmp_path / "weights.npz"
    worst, digest = pretrained.build(small_run, str(out), use_ema=use_ema)
    assert 0.0 < worst <= pretrained.HALF_TOLERANCE and digest == hashlib.sha256(out.read_bytes()).hexdigest()
    state = load(small_run)["model"]
    expected = state["ema"]["shadow"] | state["ema"]["buffers"] if use_ema else state["model"]
    model, run = pretrained.load_weights(str(out), sha256=digest)
    assert run["model"] == "ddpm" and model.step == 3
    loaded = model.net.state_dict()
    assert loaded.keys() == expected.keys()
    stored = load(str(out))["weights"]
    assert sum(a.dtype == np.float16 for a in stored.values()) > len(stored) // 2
    for key, value in expected.items():
        assert loaded[key].dtype == np.float32
        if stored[key].dtype == np.float16:
            np.testing.assert_array_equal(loaded[key], value.astype(np.float16).astype(np.float32), err_msg=key)
        else:  # float16 would have lost it
            scale = np.abs(value).max()
            assert np.abs(value.astype(np.float16).astype(np.float32) - value).max() > pretrained.HALF_TOLERANCE * scale
            np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    # its EMA holds the same weights: sampling with or without it draws the same images
    tinygen.manual_seed(0)
    a = model.sample(2, steps=2, use_ema=True)
    tinygen.manual_seed(0)
    b = model.sample(2, steps=2, use_ema=False)
    assert a.shape == (2, 1, 28, 28)
    np.testing.assert_array_equal(a, b)


def test_the_wrong_digest_another_file_and_another_model_are_refused(small_run, tmp_path):
    out = tmp_path / "weights.npz"
    pretrained.build(small_run, str(out))
    with pytest.raises(CheckpointError, match=f"{out}: SHA-256 .* expected 00"):
        pretrained.load_weights(str(out), sha256="00" * 32)
    with pytest.raises(CheckpointError, match="not a file of pretrained weights"):
        pretrained.load_weights(small_run)
    with pytest.raises(CheckpointError, match="no such file"):
        pretrained.load_weights(str(tmp_path / "missing.npz"))
    vae = trainer.train("vae", str(tmp_path / "vae"), steps=1, sample_every=100)
    with pytest.raises(ArgumentError, match="a vae run; pretrained weights are made of DDPM runs"):
        pretrained.build(vae, str(tmp_path / "vae.npz"))
    with pytest.raises(ArgumentError, match="no pretrained weights named 'cifar-ddpm'; there are mnist-ddpm, emoji-ddpm"):
        pretrained.load_pretrained("cifar-ddpm")


def test_the_command_samples_the_pretrained_weights_into_a_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert cli.main(["sample", "--pretrained", "emoji-ddpm", "--n", "9", "--steps", "2", "--out", str(out)]) == 0
    grid = read_png(out)
    assert grid.ndim == 3 and grid.shape[2] == 3  # one row per emoji category, in colour
    assert cli.main(["sample", "--pretrained", "emoji-ddpm", "--no-ema", "--out", str(out)]) == 2
    assert "--no-ema: the pretrained emoji-ddpm is one set of weights" in capsys.readouterr().err


def test_python_dash_m_tinygen_pretrained_writes_the_file(small_run, tmp_path, capsys):
    out = tmp_path / "w.npz"
    assert pretrained.main([small_run, str(out), "--no-ema"]) == 0
    printed = capsys.readouterr().out
    assert f"SHA-256 {hashlib.sha256(out.read_bytes()).hexdigest()}" in printed
    assert load(str(out))["source"] == {"weights": "trained", "step": 3}
    save({"format": "something else"}, str(tmp_path / "other.npz"))
    with pytest.raises(CheckpointError, match="not a file of pretrained weights"):
        pretrained.load_weights(str(tmp_path / "other.npz"))


def test_eval_scores_the_pretrained_weights_against_their_data(tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["eval", "--pretrained", "emoji-ddpm", "--data", "emoji", "--n", "12", "--steps", "2",
            "--likelihood-n", "0", "--json", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "samples: the pretrained emoji-ddpm (step 3000, ddpm, sampler=dpmpp, steps=2" in printed
    assert out.exists()
    assert cli.main(["eval", "--pretrained", "emoji-ddpm", "--n", "12"]) == 2  # MNIST's reference: 1x28x28
    assert "emoji-ddpm draws images of shape (3, 32, 32), but the --data embedded" in capsys.readouterr().err
