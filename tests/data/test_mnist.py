"""MNIST: the embedded subset is real MNIST and rebuilds exactly; downloads keep only the published files."""

import gzip
import hashlib
import io
import os
import re
import shutil
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest

from tinygen.data import MNIST, MNIST_FILES, MNIST_SHA256, DataLoader, download_mnist, load_embedded_mnist, load_mnist, verify_mnist
from tinygen.data import mnist as mnist_module
from tinygen.data.build_subset import build_subset, write_subset
from tinygen.errors import ArgumentError, DatasetFormatError, DownloadError

DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")
needs_mnist = pytest.mark.skipif(not os.path.isdir(DATA_DIR), reason="MNIST IDX files not present")


# --- the embedded subset --------------------------------------------------------------------

@pytest.mark.parametrize("train, per_class", [(True, 1500), (False, 100)])
def test_embedded_subset_has_the_documented_counts(train, per_class):
    ds = MNIST(train=train)
    assert len(ds) == 10 * per_class and ds.images.shape == (10 * per_class, 28, 28) and ds.images.dtype == np.uint8
    assert np.bincount(ds.labels, minlength=10).tolist() == [per_class] * 10
    image, label = ds[3]
    assert image.shape == (1, 28, 28) and image.dtype == np.float32 and label.dtype == np.int64
    x, y = ds.arrays()
    assert x.shape == (len(ds), 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0 and 0.1 < x.mean() < 0.16  # MNIST's mean pixel is 33.3 / 255
    np.testing.assert_array_equal(x[3], image)


def test_embedded_subset_records_its_source():
    with np.load(mnist_module.EMBEDDED_PATH, allow_pickle=False) as archive:
        assert archive["source_files"].tolist() == list(MNIST_SHA256)
        assert archive["source_sha256"].tolist() == [sha for _, sha in MNIST_SHA256.values()]
        assert "first 1500 training and the first 100 test images of each digit" in str(archive["rule"])
        for split, total in (("train", 60000), ("test", 10000)):
            indices = archive[f"{split}_indices"]
            assert np.all(np.diff(indices) > 0) and 0 <= indices[0] and indices[-1] < total


def test_a_batch_of_the_embedded_subset():
    x, y = next(iter(DataLoader(MNIST(), batch_size=16, shuffle=True, seed=0)))
    assert x.shape == (16, 1, 28, 28) and x.dtype == np.float32 and y.shape == (16,) and y.dtype == np.int64


@needs_mnist
@pytest.mark.parametrize("train", [True, False])
def test_embedded_subset_is_real_mnist(train):
    images, labels = load_mnist(DATA_DIR, train)
    with np.load(mnist_module.EMBEDDED_PATH, allow_pickle=False) as archive:
        indices = archive[f"{'train' if train else 'test'}_indices"]
    ds = MNIST(train=train)
    np.testing.assert_array_equal(ds.images, images[indices])
    np.testing.assert_array_equal(ds.labels, labels[indices])


@needs_mnist
def test_builder_reproduces_the_shipped_subset(tmp_path):
    entries = build_subset(DATA_DIR)
    with np.load(mnist_module.EMBEDDED_PATH, allow_pickle=False) as shipped:
        assert sorted(shipped.files) == sorted(entries)
        for name, array in entries.items():
            assert shipped[name].dtype == array.dtype, name
            np.testing.assert_array_equal(shipped[name], array, err_msg=name)
    write_subset(tmp_path / "a.npz", entries)
    write_subset(tmp_path / "b.npz", entries)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()  # no timestamps inside


def damaged_copies():
    good = open(mnist_module.EMBEDDED_PATH, "rb").read()
    yield "truncated", good[: len(good) // 2]
    yield "random bytes", bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
    yield "a lone .npy", _npy_bytes(np.zeros(3))
    buffer = io.BytesIO()
    np.savez(buffer, train_images=np.zeros((2, 28, 28), np.float32), train_labels=np.zeros(2, np.uint8))
    yield "float images", buffer.getvalue()
    buffer = io.BytesIO()
    np.savez(buffer, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.array([1, 12], np.uint8))
    yield "label 12", buffer.getvalue()
    buffer = io.BytesIO()
    np.savez(buffer, test_images=np.zeros((2, 28, 28), np.uint8))
    yield "no train arrays", buffer.getvalue()


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_a_damaged_subset_raises_a_named_error(tmp_path):
    for what, payload in damaged_copies():
        path = tmp_path / "mnist_subset.npz"
        path.write_bytes(payload)
        with pytest.raises(DatasetFormatError, match=re.escape(str(path))):
            load_embedded_mnist(True, path=str(path))
            pytest.fail(f"{what}: no error")
    with pytest.raises(DatasetFormatError, match="cannot be read"):
        load_embedded_mnist(True, path=str(tmp_path / "missing.npz"))


def test_download_needs_a_root():
    with pytest.raises(ArgumentError, match="needs a root"):
        MNIST(download=True)


# --- full MNIST and its checksums ----------------------------------------------------------

@needs_mnist
def test_full_mnist_from_a_folder():
    ds = MNIST(DATA_DIR, train=False)
    assert len(ds) == 10000 and repr(ds).startswith("MNIST(test, 10000 images")
    assert [str(p).rsplit(os.sep, 1)[1] for p in verify_mnist(DATA_DIR)] == [name + ".gz" for name in MNIST_SHA256]


@needs_mnist
def test_verify_names_the_file_and_both_hashes(tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(os.path.join(DATA_DIR, name + ".gz"), tmp_path)
    verify_mnist(tmp_path, train=False)
    labels = bytearray(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[100] ^= 1  # one label changes: still a valid IDX file, no longer MNIST
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    good = MNIST_SHA256["t10k-labels-idx1-ubyte"][1]
    with pytest.raises(DatasetFormatError) as info:
        verify_mnist(tmp_path, train=False)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and good in message
    assert hashlib.sha256(bytes(labels)).hexdigest() in message
    with pytest.raises(DatasetFormatError, match="train-images-idx3-ubyte.*no such file"):
        verify_mnist(tmp_path)


# --- downloading (urlopen replaced: these tests never touch the network) ----------------------

def fake_mnist():
    """Small stand-ins for the four files: {name: uncompressed IDX bytes}."""
    rng = np.random.default_rng(0)
    files = {}
    for name in MNIST_SHA256:
        n = 12 if name.startswith("train") else 5
        if "images" in name:
            files[name] = struct.pack(">4B3I", 0, 0, 8, 3, n, 28, 28) + rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes()
        else:
            files[name] = struct.pack(">4BI", 0, 0, 8, 1, n) + rng.integers(0, 10, n, dtype=np.uint8).tobytes()
    return files


@pytest.fixture
def server(monkeypatch):
    """Publish the fake files' hashes and serve them through a fake urlopen; records the calls."""
    files = fake_mnist()
    for name, content in files.items():
        monkeypatch.setitem(MNIST_SHA256, name, (len(content), hashlib.sha256(content).hexdigest()))
    state = {"calls": [], "payloads": {name + ".gz": gzip.compress(content) for name, content in files.items()}, "down": set()}

    def urlopen(url, timeout=None):
        state["calls"].append((url, timeout))
        mirror = url.rsplit("/", 1)[0] + "/"
        if mirror in state["down"]:
            raise urllib.error.URLError("no route to host")
        return io.BytesIO(state["payloads"][url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    state["files"] = files
    return state


def test_download_writes_verified_files(server, tmp_path):
    root = tmp_path / "new" / "mnist"
    ds = MNIST(root, train=True, download=True)
    assert len(ds) == 12 and sorted(os.listdir(root)) == sorted(name + ".gz" for name in MNIST_SHA256)
    assert all(timeout == 30 for _, timeout in server["calls"]) and len(server["calls"]) == 4
    assert all(url.startswith(mnist_module.MNIST_MIRRORS[0]) for url, _ in server["calls"])
    assert verify_mnist(root)
    MNIST(root, train=False, download=True)  # everything is there: nothing is fetched again
    assert len(server["calls"]) == 4


def test_a_corrupt_download_leaves_nothing_behind(server, tmp_path):
    name = "t10k-images-idx3-ubyte"
    bad = bytearray(server["files"][name])
    bad[-1] ^= 0xFF
    server["payloads"][name + ".gz"] = gzip.compress(bytes(bad))
    with pytest.raises(DatasetFormatError) as info:
        download_mnist(tmp_path)
    message = str(info.value)
    assert name in message and MNIST_SHA256[name][1] in message and hashlib.sha256(bad).hexdigest() in message
    assert all(url in message for url in (mirror + name + ".gz" for mirror in mnist_module.MNIST_MIRRORS))
    assert sorted(os.listdir(tmp_path)) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_a_payload_that_is_not_gzip_is_refused(server, tmp_path):
    server["payloads"]["train-images-idx3-ubyte.gz"] = server["files"]["train-images-idx3-ubyte"]  # not gzipped
    with pytest.raises(DatasetFormatError, match="not a valid gzip file"):
        download_mnist(tmp_path)
    assert os.listdir(tmp_path) == []


def test_mirrors_are_tried_in_order(server, tmp_path):
    server["down"].add(mnist_module.MNIST_MIRRORS[0])
    assert len(download_mnist(tmp_path / "a")) == 4
    assert [url.startswith(mnist_module.MNIST_MIRRORS[1]) for url, _ in server["calls"]] == [False, True] * 4
    server["down"].add(mnist_module.MNIST_MIRRORS[1])
    with pytest.raises(DownloadError, match="train-images-idx3-ubyte.gz: could not be downloaded.*no route to host") as info:
        download_mnist(tmp_path / "b")
    assert isinstance(info.value, OSError) and os.listdir(tmp_path / "b") == []


@needs_mnist
def test_download_of_the_real_files(monkeypatch, tmp_path):
    def urlopen(url, timeout=None):
        return open(os.path.join(DATA_DIR, url.rsplit("/", 1)[1]), "rb")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    for name in MNIST_FILES[True]:  # the large training files are already there: only the test files come
        os.symlink(os.path.abspath(os.path.join(DATA_DIR, name + ".gz")), tmp_path / (name + ".gz"))
    assert len(download_mnist(tmp_path)) == 2
    assert len(MNIST(tmp_path, train=False)) == 10000

