"""The protocol on data other than MNIST: a ConvFeatureNet trained by train_feature_net on colour
images (written by the tests as npz files), and `tinygen eval --data npz` scoring against them."""

import json

import numpy as np
import pytest

from tinygen import cli, trainer
from tinygen.data import MNIST
from tinygen.errors import ArgumentError, CheckpointError, ShapeError
from tinygen.evaluation import features as fnet
from tinygen.evaluation import load_samples, reference, train_feature_net
from tinygen.serialization import load

COLOURS = np.array([[0.9, 0.1, 0.1], [0.1, 0.7, 0.1], [0.1, 0.2, 0.9]])  # the ink of classes 0, 1, 2


def colour_digits(images, labels):
    """Grey digits (n, 28, 28) of classes 0-2 as 16x16 RGB, ink in the class's colour on white: uint8 (n, 3, 16, 16)."""
    ink = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.float64) / 255  # (n, 32, 32)
    ink = ink.reshape(len(ink), 16, 2, 16, 2).mean(axis=(2, 4))  # 2x2 means: (n, 16, 16)
    rgb = 1 - ink[:, None] * (1 - COLOURS[labels][:, :, None, None])  # (n, 3, 16, 16)
    return np.round(rgb * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    """Training and held-out npz files of coloured digits 0-2, and a feature network trained on them."""
    folder = tmp_path_factory.mktemp("colour")
    paths = {}
    for split, train, n in (("train", True, 600), ("test", False, 150)):
        mnist = MNIST(train=train)
        keep = np.flatnonzero(mnist.labels < 3)[:n]
        labels = mnist.labels[keep].astype(np.int64)
        paths[split] = folder / f"{split}.npz"
        np.savez(paths[split], images=colour_digits(mnist.images[keep], labels), labels=labels,
                 classes=np.array(["zero", "one", "two"]))
    paths["net"] = folder / "net.npz"
    code = train_feature_net.main(["--data", "npz", "--data-dir", str(paths["train"]), "--test-dir", str(paths["test"]),
                                   "--epochs", "2", "--out", str(paths["net"])])
    assert code == 0
    return paths


def test_the_trained_network_reloads_with_its_configuration(colour_data, tmp_path):
    state = load(colour_data["net"])
    assert state["architecture"] == fnet.CONV_ARCHITECTURE and state["test_accuracy"] > 0.9
    net = fnet.load_feature_net(colour_data["net"], sha256=None)
    assert isinstance(net, fnet.ConvFeatureNet) and not net.training
    assert net.image_shape == (3, 16, 16) and net.classes == ["zero", "one", "two"]
    assert net.sha256 == fnet.sha256_of(colour_data["net"])
    images = np.load(colour_data["test"])["images"][:20]
    feats, logits = fnet.features_and_logits(images, net=net)
    assert feats.shape == (20, 128) and logits.shape == (20, 3) and feats.min() >= 0
    with pytest.raises(ShapeError, match=r"shape \(n, 3, 16, 16\).*\(20, 1, 28, 28\)"):
        fnet.features(np.zeros((20, 1, 28, 28), np.uint8), net=net)
    with pytest.raises(CheckpointError, match=r"net\.npz.*SHA-256"):
        fnet.load_feature_net(colour_data["net"], sha256="0" * 64)
    again = tmp_path / "again.npz"  # the seed decides the initial weights too: a rerun gives the same network
    assert train_feature_net.main(["--data", "npz", "--data-dir", str(colour_data["train"]), "--test-dir",
                                   str(colour_data["test"]), "--epochs", "2", "--out", str(again)]) == 0
    for name, value in state["state_dict"].items():
        np.testing.assert_array_equal(load(again)["state_dict"][name], value)


def test_eval_scores_colour_samples_against_the_held_out_images(colour_data, tmp_path, capsys):
    ref_args = ["--data", "npz", "--data-dir", str(colour_data["train"]), "--test-dir", str(colour_data["test"]),
                "--feature-net", str(colour_data["net"])]
    real_images = np.load(colour_data["train"])["images"][::2][:150]  # (150, 3, 16, 16): as many as held out
    noise = np.random.default_rng(0).random(real_images.shape, dtype=np.float32)
    results = {}
    for name, samples in (("real", real_images), ("noise", noise)):
        np.savez(tmp_path / f"{name}.npz", samples=samples)
        out = tmp_path / f"{name}.json"
        assert cli.main(["eval", "--samples", str(tmp_path / f"{name}.npz"), *ref_args, "--json", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "NOTE" not in printed  # n = 150 is this reference's protocol n, its held-out images
        assert "ConvFeatureNet" in printed and "not pinned" in printed
        results[name] = json.loads(out.read_text())
    assert results["real"]["protocol_n"] == 150
    assert results["real"]["feature_net_sha256"] == fnet.sha256_of(colour_data["net"])
    rows = {name: {row["metric"]: row for row in r["metrics"]} for name, r in results.items()}
    real, noise = rows["real"], rows["noise"]
    # FD at n = 150 in 128 dimensions varies by 2-3x between draws of real images, and between networks
    # trained from other initial weights: wide margins; noise lands 40-200x away
    assert real["fd"]["value"] < 4 * real["fd"]["floor"] and 20 * real["fd"]["value"] < noise["fd"]["value"]
    assert abs(real["kid"]["value"]) < noise["kid"]["value"] / 50 and abs(real["kid"]["floor"]) < noise["kid"]["value"] / 50
    assert real["classes_present"]["value"] == 3 and noise["coverage"]["value"] < 0.1
    assert real["nearest_train_l2_median"]["value"] == 0  # training images: "copies"

    np.savez(tmp_path / "few.npz", samples=real_images[:40])
    assert cli.main(["eval", "--samples", str(tmp_path / "few.npz"), *ref_args]) == 0
    assert "NOTE: n = 40, not the protocol's 150" in capsys.readouterr().out


def test_samples_of_another_shape_are_refused_naming_both(colour_data, tmp_path, capsys):
    path = tmp_path / "grey.npz"
    np.savez(path, samples=np.zeros((10, 1, 28, 28), np.uint8))
    with pytest.raises(ShapeError, match=r"grey\.npz.*shape \(n, 3, 16, 16\).*got \(10, 1, 28, 28\)"):
        load_samples(path, shape=(3, 16, 16))
    argv = ["eval", "--samples", str(path), "--data", "npz", "--data-dir", str(colour_data["train"]),
            "--test-dir", str(colour_data["test"]), "--feature-net", str(colour_data["net"])]
    assert cli.main(argv) == 2
    assert "(n, 3, 16, 16)" in capsys.readouterr().err


def test_a_network_for_other_images_is_refused(colour_data):
    net = fnet.load_feature_net(colour_data["net"], sha256=None)  # takes (3, 16, 16)
    with pytest.raises(ArgumentError, match=r"shape \(3, 16, 16\).*have shape \(3, 8, 8\)"):
        reference(str(colour_data["train"]), net=net, data="npz", image_size=8, test_dir=str(colour_data["test"]))


def test_eval_argument_errors_for_other_data(colour_data, tmp_path, capsys):
    path = tmp_path / "s.npz"
    np.savez(path, samples=np.zeros((10, 1, 28, 28), np.uint8))
    for argv, message in [
        (["--data", "npz", "--data-dir", str(colour_data["train"])], "--data npz has no split: give --test-dir"),
        (["--test-dir", str(colour_data["test"])], "--test-dir is for --data folder and npz"),
        (["--feature-net", str(colour_data["net"])], "do not apply to MNIST"),
        (["--data", "cifar10", "--data-dir", str(tmp_path)], "no feature network ships for 'cifar10'"),
    ]:
        assert cli.main(["eval", "--samples", str(path), *argv]) == 2
        assert message in capsys.readouterr().err


def test_train_feature_net_refuses_unlabelled_data_and_a_missing_test_split(tmp_path, capsys):
    path = tmp_path / "flat.npz"
    np.savez(path, images=np.zeros((10, 3, 16, 16), np.uint8))
    argv = ["--data", "npz", "--data-dir", str(path), "--out", str(tmp_path / "net.npz")]
    assert train_feature_net.main(argv) == 2
    assert "--test-dir" in capsys.readouterr().err
    assert train_feature_net.main([*argv, "--test-dir", str(path)]) == 2
    assert "have no labels" in capsys.readouterr().err
    assert not (tmp_path / "net.npz").exists()


@pytest.mark.parametrize("model_name", ["vae", "ddpm"])
def test_eval_checkpoint_of_colour_data_reports_bits_per_dim(colour_data, tmp_path, model_name):
    overrides = {"likelihood": "logistic"} if model_name == "vae" else {"T": 20, "channels": (8, 16), "groups": 4}
    ckpt = trainer.train(model_name, str(tmp_path / "run"), steps=1, overrides=dict(overrides, batch_size=8),
                         data="npz", data_dir=str(colour_data["train"]), sample_every=100)
    out = tmp_path / "eval.json"
    sampling = ["--steps", "2", "--t-subsample", "3"] if model_name == "ddpm" else []
    assert cli.main(["eval", "--checkpoint", ckpt, "--data", "npz", "--data-dir", str(colour_data["train"]),
                     "--test-dir", str(colour_data["test"]), "--feature-net", str(colour_data["net"]), "--n", "12",
                     "--likelihood-n", "6", "--iwae-k", "3", "--json", str(out), *sampling]) == 0
    rows = {row["metric"]: row for row in json.loads(out.read_text())["metrics"]}
    assert rows["fd"]["n"] == 12
    name = "test_iwae_k3_bits_per_dim" if model_name == "vae" else "test_bits_per_dim_t3"
    assert rows[name]["n"] == 6 and 0 < rows[name]["value"] < 16  # a barely trained model: a few bits per 8-bit value
    if model_name == "vae":  # the same bound in nats: -L_K = bits/dim * D ln 2, D = 3 * 16 * 16
        assert rows["test_iwae_k3_nats"]["value"] == pytest.approx(-rows[name]["value"] * 768 * np.log(2))


def test_a_checkpoint_of_another_shape_is_refused_before_sampling(tmp_path, capsys, monkeypatch):
    ckpt = trainer.train("vae", str(tmp_path / "run"), steps=1, sample_every=100)  # MNIST: (1, 28, 28)
    monkeypatch.setattr(cli.evaluation, "sample_in_batches", lambda *args, **kwargs: pytest.fail("sampled"))
    assert cli.main(["eval", "--checkpoint", ckpt, "--data", "emoji"]) == 2
    assert "draws images of shape (1, 28, 28), but the --data emoji reference's are (3, 32, 32)" in capsys.readouterr().err
