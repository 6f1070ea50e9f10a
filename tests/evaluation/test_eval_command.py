"""`tinygen eval`: malformed sample files raise the documented errors; real digits score near the
floor and noise far from it; a checkpoint is sampled and evaluated; the JSON holds what it says."""

import builtins
import json

import numpy as np
import pytest

from tinygen import cli, trainer
from tinygen.data import MNIST
from tinygen.errors import ArgumentError, DatasetFormatError, DTypeError, ShapeError
from tinygen.evaluation import METRICS, WEIGHTS_SHA256, evaluate, load_samples, reference
from tinygen.serialization import save


@pytest.fixture(scope="module")
def real_images():
    """300 embedded training digits drawn at random, uint8 (300, 1, 28, 28)."""
    train = MNIST()
    return train.images[np.random.default_rng(1).choice(len(train), 300, replace=False), None]


def write_npy(path):
    with open(path, "wb") as f:  # a lone .npy under an .npz name (np.save would append .npy)
        np.save(f, np.zeros((5, 1, 28, 28), np.uint8))


@pytest.mark.parametrize(
    ("write", "error", "match"),
    [
        (None, DatasetFormatError, "no such sample file"),
        (lambda p: p.write_bytes(b"not a zip at all"), DatasetFormatError, r"not an .npz file .*starts with b'not a '"),
        (lambda p: p.write_bytes(b"PK\x03\x04 cut short"), DatasetFormatError, "not a readable .npz"),
        (lambda p: np.savez(p, images=np.zeros((5, 1, 28, 28), np.uint8)), DatasetFormatError, r"no 'samples' array \(found 'images'\)"),
        (write_npy, DatasetFormatError, r"a lone .npy array, not an .npz archive"),
        (lambda p: np.savez(p, samples=np.zeros((5, 28, 28), np.uint8)), ShapeError, r"shape \(n, 1, 28, 28\).*\(5, 28, 28\)"),
        (lambda p: np.savez(p, samples=np.zeros((5, 1, 28, 28), np.int32)), DTypeError, "int32"),
        (lambda p: np.savez(p, samples=np.full((5, 1, 28, 28), 1.5, np.float32)), ArgumentError, r"\[0, 1\]"),
        (lambda p: save({"samples": np.zeros((5, 1, 28, 28), np.float32) - 1}, p), ArgumentError, r"\[0, 1\]"),
    ],
)
def test_malformed_sample_files_raise_errors_naming_the_file(tmp_path, capsys, write, error, match):
    path = tmp_path / "bad_samples.npz"
    if write is not None:
        write(path)
    with pytest.raises(error, match=match) as info:
        load_samples(path)
    assert "bad_samples.npz" in str(info.value)
    assert cli.main(["eval", "--samples", str(path)]) == 2
    assert "bad_samples.npz" in capsys.readouterr().err


def test_an_unreadable_sample_file_is_named(tmp_path, monkeypatch):
    path = tmp_path / "locked.npz"
    np.savez(path, samples=np.zeros((5, 1, 28, 28), np.uint8))
    real_open = builtins.open

    def denied(file, *args, **kwargs):  # chmod does not stop root, who may run the tests
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(DatasetFormatError, match=r"locked.npz: cannot read the sample file \(Permission denied\)"):
        load_samples(path)


def test_too_few_samples_for_knn_are_refused(tmp_path, capsys):
    path = tmp_path / "three.npz"
    np.savez(path, samples=np.zeros((3, 1, 28, 28), np.uint8))
    assert cli.main(["eval", "--samples", str(path)]) == 2
    assert "3 images are too few" in capsys.readouterr().err


def test_real_digits_score_near_the_floor_and_noise_far_from_it(tmp_path, capsys, real_images):
    real_path, noise_path = tmp_path / "real.npz", tmp_path / "noise.npz"
    save({"samples": real_images}, real_path)  # the format `tinygen sample --npz --npz-dtype uint8` writes
    noise = np.random.default_rng(0).random(real_images.shape, dtype=np.float32)
    np.savez(noise_path, samples=noise)  # plain NumPy works too
    results = {}
    for name, path in (("real", real_path), ("noise", noise_path)):
        out = tmp_path / f"{name}.json"
        assert cli.main(["eval", "--samples", str(path), "--json", str(out), "--seed", "3"]) == 0
        printed = capsys.readouterr().out
        assert "n = 300, not the protocol's 10,000" in printed and "embedded" in printed
        table = printed[printed.index("\nmetric"):]
        assert all(f"{metric} " in line and line.rstrip().endswith(METRICS[metric])  # each row says what it means
                   for metric, line in zip(METRICS, table.splitlines()[2:]))
        results[name] = json.loads(out.read_text())

    real = results["real"]
    assert set(real) == {"source", "seed", "feature_net_sha256", "protocol_n", "reference", "metrics"}
    assert real["seed"] == 3 and real["feature_net_sha256"] == WEIGHTS_SHA256
    assert [row["metric"] for row in real["metrics"]] == list(METRICS)
    rows = {name: {row["metric"]: row for row in r["metrics"]} for name, r in results.items()}
    for row in real["metrics"]:
        assert set(row) == {"metric", "value", "n", "floor", "floor_n", "meaning"} and row["n"] == row["floor_n"] == 300
        assert row["meaning"] == METRICS[row["metric"]]
    real, noise = rows["real"], rows["noise"]
    fd_floor = real["fd"]["floor"]  # FD at n = 300 varies by about 1.5x between draws of real digits
    assert real["fd"]["value"] < 2 * fd_floor and noise["fd"]["value"] > 20 * fd_floor
    for metric in ("precision", "recall", "coverage"):
        assert abs(real[metric]["value"] - real[metric]["floor"]) < 0.1
    # NOTE: the noise images all land in one small region among the real 8s of feature space, so
    # their precision is high (1.0 here); recall, coverage and the class histogram expose them.
    for metric in ("recall", "coverage"):
        assert noise[metric]["value"] < 0.05
    assert noise["classes_present"]["value"] <= 2
    assert real["classes_present"]["value"] == 10
    assert real["nearest_train_l2_median"]["value"] == 0  # these are training images: "memorised"
    assert real["nearest_train_l2_median"]["floor"] > 3  # other real digits are far from every training image


def test_eval_checkpoint_samples_and_evaluates_with_likelihood_bounds(tmp_path, capsys):
    ckpt = trainer.train("vae", str(tmp_path / "run"), steps=2, sample_every=100)
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "--checkpoint", ckpt, "--n", "40", "--batch-size", "16", "--likelihood-n", "20",
                     "--iwae-k", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "step 2" in result["source"] and result["metrics"][0]["n"] == 40
    rows = {row["metric"]: row for row in result["metrics"]}
    assert list(rows)[-2:] == ["test_elbo_nats", "test_iwae_k5_nats"]
    assert rows["test_elbo_nats"]["meaning"].startswith("VAE: mean ELBO")
    assert "K = 5," in rows["test_iwae_k5_nats"]["meaning"]
    printed = capsys.readouterr()
    assert rows["test_iwae_k5_nats"]["meaning"] in printed.out and "sampling 40/40" in printed.err
    for name in ("test_elbo_nats", "test_iwae_k5_nats"):
        assert rows[name]["n"] == 20 and rows[name]["floor"] is None
        assert -784 * np.log(2) * 2 < rows[name]["value"] < 0  # an untrained decoder: about 784 log 2 nats
    assert cli.main(["eval", "--checkpoint", ckpt, "--n", "40", "--sampler", "ddim"]) == 2
    assert "only apply to diffusion models" in capsys.readouterr().err


def test_eval_ddpm_checkpoint_reports_bits_per_dim(tmp_path, capsys):
    overrides = {"T": 50, "channels": (8, 16), "groups": 4, "batch_size": 4}
    ckpt = trainer.train("ddpm", str(tmp_path / "run"), steps=1, overrides=overrides, sample_every=100)
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "--checkpoint", ckpt, "--n", "8", "--steps", "3", "--likelihood-n", "4",
                     "--t-subsample", "3", "--json", str(out)]) == 0
    rows = {row["metric"]: row for row in json.loads(out.read_text())["metrics"]}
    assert rows["test_bits_per_dim_t3"]["n"] == 4 and rows["test_bits_per_dim_t3"]["value"] > 0
    assert "from 3 random timesteps per image" in rows["test_bits_per_dim_t3"]["meaning"]
    assert rows["test_bits_per_dim_t3"]["meaning"] in capsys.readouterr().out


def test_an_impossible_t_subsample_is_refused_before_any_sampling(tmp_path, capsys, monkeypatch):
    overrides = {"T": 50, "channels": (8, 16), "groups": 4, "batch_size": 4}
    ckpt = trainer.train("ddpm", str(tmp_path / "run"), steps=1, overrides=overrides, sample_every=100)
    monkeypatch.setattr(cli.evaluation, "sample_in_batches", lambda *args, **kwargs: pytest.fail("sampled"))
    assert cli.main(["eval", "--checkpoint", ckpt, "--n", "8", "--t-subsample", "50"]) == 2
    assert "--t-subsample 50: this DDPM has T = 50 timesteps; give 1..49, or 0 for all T" in capsys.readouterr().err


def test_eval_argument_errors(tmp_path, capsys, real_images):
    path = tmp_path / "s.npz"
    np.savez(path, samples=real_images[:10])
    for argv, message in [
        (["--data", "mnist"], "--data mnist needs --data-dir"),
        (["--n", "11"], "holds only 10 samples"),
        (["--steps", "5"], "apply to --checkpoint only"),
        (["--json", str(tmp_path / "missing" / "e.json")], f"the folder {tmp_path / 'missing'} does not exist"),
    ]:
        assert cli.main(["eval", "--samples", str(path), *argv]) == 2
        assert message in capsys.readouterr().err


def test_evaluate_on_the_reference_itself_is_perfect():
    ref = reference()
    test = MNIST(train=False).images[:, None]
    metrics = evaluate(test, ref)
    assert metrics["precision"] == metrics["recall"] == metrics["coverage"] == 1.0
    assert metrics["classes_present"] == 10
