"""load_dataset: every name, the shared image_size / channels, and errors that list the choices."""

import numpy as np
import pytest

from tinygen.data import DATASETS, MNIST, ImageArrays, load_dataset
from tinygen.errors import ArgumentError
from tinygen.image import save_png


def test_mnist_names_keep_the_mnist_dataset():
    data = load_dataset("embedded")
    assert isinstance(data, MNIST) and data.images.shape == (15000, 28, 28) and data.classes[9] == "9"
    assert len(load_dataset("embedded", train=False)) == 1000


def test_image_size_and_channels_apply_to_mnist():
    data = load_dataset("embedded", train=False, image_size=14, channels=3)
    assert isinstance(data, ImageArrays) and data.images.shape == (1000, 3, 14, 14)
    source = MNIST(train=False).images[:, None].astype(np.float64)
    expected = np.floor(source.reshape(1000, 1, 14, 2, 14, 2).mean(axis=(3, 5)) + 0.5)
    np.testing.assert_array_equal(data.images[:, 2], expected[:, 0])
    assert data.labels.tolist() == MNIST(train=False).labels.tolist()


def test_npz_and_folder_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGEN_CACHE", str(tmp_path / "cache"))
    np.savez(tmp_path / "set.npz", images=np.full((2, 8, 8, 3), 90, np.uint8), labels=[0, 1])
    data = load_dataset("npz", root=tmp_path / "set.npz", image_size=4, channels=1)
    assert data.images.shape == (2, 1, 4, 4) and (data.images == 90).all() and data.labels.tolist() == [0, 1]
    (tmp_path / "imgs").mkdir()
    save_png(tmp_path / "imgs" / "a.png", np.zeros((6, 6), np.uint8))
    folder = load_dataset("folder", root=tmp_path / "imgs", image_size=3, channels=3)
    assert folder.images.shape == (1, 3, 3, 3)


def test_cifar10_by_name(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (tmp_path / name).write_bytes(np.concatenate([[3], rng.integers(0, 256, 3072)]).astype(np.uint8).tobytes())
    data = load_dataset("cifar10", root=tmp_path, train=False, channels=1)
    assert data.images.shape == (1, 1, 32, 32) and data.labels.tolist() == [3] and data.classes[3] == "cat"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="imagenet"), "embedded, mnist, emoji, cifar10, folder, npz"),
        (dict(name="folder"), "needs root"),
        (dict(name="npz"), "needs root"),
        (dict(name="cifar10"), "needs root"),
        (dict(name="emoji", root="somewhere"), "takes no root"),
        (dict(name="embedded", root="somewhere"), "takes no root"),
        (dict(name="folder", root="x", train=False), "no test split"),
        (dict(name="emoji", download=True), "download is for"),
        (dict(name="emoji", image_size=0), "image_size"),
        (dict(name="emoji", channels=2), "channels"),
    ],
)
def test_wrong_requests_raise_argument_errors(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        load_dataset(**kwargs)


def test_the_names_are_those_of_the_command():
    assert DATASETS == ("embedded", "mnist", "emoji", "cifar10", "folder", "npz")
