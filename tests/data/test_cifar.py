"""CIFAR10 on binary batches that the tests write, malformed files, and a download served locally."""

import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest

from tinygen.data import CIFAR10, download_cifar10
from tinygen.data import cifar as cifar_module
from tinygen.errors import ArgumentError, DatasetFormatError, DownloadError

TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]


def records(seed, n):
    """(bytes of n records, images (n, 3, 32, 32), labels (n,)) drawn from `seed`."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    data = np.concatenate([labels[:, None], images.reshape(n, 3072)], axis=1)  # label, then R, G, B planes
    return data.tobytes(), images, labels


def write_cifar(folder, n=3, meta=None):
    """The six batch files (n records each) in `folder`; returns {name: (images, labels)}."""
    os.makedirs(folder, exist_ok=True)
    written = {}
    for seed, name in enumerate(TRAIN + ["test_batch.bin"]):
        data, images, labels = records(seed, n + seed)
        with open(os.path.join(folder, name), "wb") as file:
            file.write(data)
        written[name] = images, labels
    if meta is not None:
        with open(os.path.join(folder, "batches.meta.txt"), "w") as file:
            file.write(meta)
    return written


def test_reads_both_splits_in_record_order(tmp_path):
    written = write_cifar(tmp_path)
    train, test = CIFAR10(tmp_path), CIFAR10(tmp_path, train=False)
    np.testing.assert_array_equal(train.images, np.concatenate([written[name][0] for name in TRAIN]))
    np.testing.assert_array_equal(train.labels, np.concatenate([written[name][1] for name in TRAIN]))
    assert len(train) == 3 + 4 + 5 + 6 + 7 and train.labels.dtype == np.int64
    np.testing.assert_array_equal(test.images, written["test_batch.bin"][0])
    assert test.classes[:3] == ["airplane", "automobile", "bird"] and len(test.classes) == 10
    x, y = test.__getitems__(np.array([0]))
    assert x.shape == (1, 3, 32, 32) and np.allclose(x[0, 1] * 255, written["test_batch.bin"][0][0, 1])  # green plane


def test_reads_the_extracted_subfolder_and_its_class_names(tmp_path):
    names = "\n".join(f"class{i}" for i in range(10)) + "\n\n"
    write_cifar(tmp_path / "cifar-10-batches-bin", meta=names)
    assert CIFAR10(tmp_path, train=False).classes == [f"class{i}" for i in range(10)]


@pytest.mark.parametrize("damage", ["short", "empty", "label"])
def test_a_malformed_batch_names_its_file(tmp_path, damage):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    data = bytearray(path.read_bytes())
    if damage == "short":
        data = data[:-1]
    elif damage == "empty":
        data = b""
    else:
        data[3073] = 10  # the second record's label
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetFormatError, match="data_batch_3.bin"):
        CIFAR10(tmp_path)


def test_missing_files_and_bad_class_names_are_named(tmp_path):
    write_cifar(tmp_path, meta="a\nb\n")
    with pytest.raises(DatasetFormatError, match="batches.meta.txt"):
        CIFAR10(tmp_path, train=False)
    os.remove(tmp_path / "data_batch_4.bin")
    with pytest.raises(DatasetFormatError, match="data_batch_4.bin"):
        CIFAR10(tmp_path)
    with pytest.raises(DatasetFormatError, match="download"):
        CIFAR10(tmp_path / "nothing")
    with pytest.raises(ArgumentError, match="is a file"):
        CIFAR10(tmp_path / "test_batch.bin")


def fake_tarball(tmp_path):
    """A cifar-10-binary.tar.gz holding small batches, its bytes."""
    source = tmp_path / "source"
    write_cifar(source / "cifar-10-batches-bin", meta="\n".join("abcdefghij"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(source / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    return buffer.getvalue()


class Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_keeps_only_the_published_archive(tmp_path, monkeypatch):
    payload = fake_tarball(tmp_path)
    urls = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: urls.append(url) or Response(payload))
    with pytest.raises(DatasetFormatError, match="nothing was kept"):  # the real hash does not match the fake
        CIFAR10(tmp_path / "root", download=True)
    assert urls == [cifar_module.CIFAR10_URL] and not (tmp_path / "root" / "cifar-10-batches-bin").exists()
    monkeypatch.setattr(cifar_module, "CIFAR10_SHA256", (len(payload), hashlib.sha256(payload).hexdigest()))
    data = CIFAR10(tmp_path / "root", train=False, download=True)
    assert len(data) == 8 and data.classes == list("abcdefghij")
    assert sorted(os.listdir(tmp_path / "root" / "cifar-10-batches-bin")) == sorted(TRAIN + ["test_batch.bin", "batches.meta.txt"])
    CIFAR10(tmp_path / "root", download=True)  # present: no second download
    assert len(urls) == 2


def test_download_without_network_raises_download_error(tmp_path, monkeypatch):
    def refuse(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(DownloadError, match="cifar-10-binary.tar.gz"):
        download_cifar10(tmp_path)
