"""The shipped emoji feature network: its file, its accuracy on the held-out split, and its
calibration (benchmarks.fd_calibration --data emoji): corruptions of real images score worse than
the real images' floor, the severe ones by far."""

import os

import numpy as np
import pytest

from benchmarks.fd_calibration import dataset_calibration
from tinygen import cli
from tinygen.data import EMOJI_CLASSES, load_dataset
from tinygen.evaluation import features as fnet
from tinygen.serialization import load


@pytest.fixture(scope="module")
def emoji_net():
    return fnet.shipped_feature_net("emoji")


def test_shipped_emoji_network_is_pinned_small_and_float32(emoji_net):
    assert fnet.sha256_of(fnet.EMOJI_WEIGHTS_PATH) == fnet.EMOJI_WEIGHTS_SHA256 == emoji_net.sha256
    assert os.path.getsize(fnet.EMOJI_WEIGHTS_PATH) < 1_000_000
    state = load(fnet.EMOJI_WEIGHTS_PATH)
    assert {v.dtype for v in state["state_dict"].values()} == {np.dtype(np.float32)}
    assert isinstance(emoji_net, fnet.ConvFeatureNet) and emoji_net.image_shape == (3, 32, 32)
    assert emoji_net.classes == EMOJI_CLASSES and state["dataset"] == "emoji"


def test_emoji_network_accuracy_on_the_held_out_split_is_the_recorded_one(emoji_net):
    test = load_dataset("emoji", train=False)
    accuracy = (fnet.classify(test.images, net=emoji_net) == test.labels).mean()
    assert accuracy == pytest.approx(load(fnet.EMOJI_WEIGHTS_PATH)["test_accuracy"], abs=1 / len(test))
    assert accuracy > 3 * np.bincount(test.labels).max() / len(test)  # far above the largest class's share


def test_corruptions_score_worse_than_the_floor(emoji_net):
    rows, ref = dataset_calibration("emoji", draws=5, net=emoji_net)  # the benchmark's table
    assert ref.protocol_n == len(load_dataset("emoji", train=False))
    assert [name.split(",")[0].split(" (")[0] for name in list(rows)[1:5]] == [
        "Gaussian pixel noise", "Gaussian pixel noise", "1-pixel blur", "category 'People & Body'"]
    (floor_fd, floor_kid), (mild, mild_kid), (noise, noise_kid), (blur, blur_kid), (missing, missing_kid), (uniform, _) = [
        (fds.mean(), kids.mean()) for fds, kids in rows.values()]
    assert floor_fd < mild < blur < missing  # the order of severity, with the milder noise
    assert floor_fd < noise < missing  # sigma 0.05 noise scores about as the blur does (above it, here)
    # KID: the mild noise lies within the floor's spread over draws (about +-25); the rest above it
    assert floor_kid < min(noise_kid, blur_kid, missing_kid) and max(noise_kid, blur_kid) < missing_kid
    assert uniform > 20 * floor_fd


def test_eval_with_the_emoji_protocol(tmp_path, capsys):
    test = load_dataset("emoji", train=False)
    path = tmp_path / "held_out.npz"
    np.savez(path, samples=test.images)  # the held-out images themselves: a perfect score
    assert cli.main(["eval", "--samples", str(path), "--data", "emoji"]) == 0
    printed = capsys.readouterr().out
    assert "NOTE" not in printed and f"the {len(test):,} held-out emoji images" in printed
    assert f"ConvFeatureNet, SHA-256 {fnet.EMOJI_WEIGHTS_SHA256[:16]}" in printed
    rows = {line.split()[0]: line.split()[1:] for line in printed[printed.index("\nmetric"):].splitlines()[2:]}
    assert rows["fd"][0] == "0.0000" and float(rows["fd"][2]) > 1  # value, n, floor
    assert rows["precision"][0] == rows["recall"][0] == rows["coverage"][0] == "1.0000"
