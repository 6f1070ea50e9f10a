"""The IDX reader: real MNIST reads exactly, and every malformed file is named in the error."""

import gzip
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import idx_bytes
from tinygen.data import MNIST
from tinygen.data.mnist import EMBEDDED_PATH
from tinygen.data.idx import load_mnist, read_idx
from tinygen.errors import DatasetFormatError

DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")


def write(tmp_path, name, payload, gz=False):
    path = tmp_path / name
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    kind=st.sampled_from([(0x08, np.uint8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)]),
    gz=st.booleans(),
)
def test_round_trip(tmp_path_factory, shape, kind, gz):
    code, dtype = kind
    array = (np.arange(np.prod(shape)) - 3).reshape(shape).astype(dtype)
    path = write(tmp_path_factory.mktemp("idx"), "a.idx", idx_bytes(array, code), gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == tuple(shape)
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "not an IDX file"),
        (b"\x01\x00\x08\x01", "not an IDX file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "not an IDX file"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
        (idx_bytes(np.zeros((4, 3), np.uint8))[:-2], "truncated: shape \\(4, 3\\) needs 12 bytes of data, found 10"),
        (idx_bytes(np.zeros((4, 3), np.uint8)) + b"\x00", "continues past the 12 bytes"),
        (b"\x00\x00\x0e\x02\xff\xff\xff\xff\xff\xff\xff\xff", "over the .*-byte cap"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_malformed_files_are_named(tmp_path, payload, message, gz):
    path = write(tmp_path, "bad-idx", payload, gz)
    with pytest.raises(DatasetFormatError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_and_corrupt_gzip(tmp_path):
    with pytest.raises(DatasetFormatError, match="no such file"):
        read_idx(tmp_path / "missing.idx")
    path = write(tmp_path, "cut.gz", gzip.compress(idx_bytes(np.zeros((50, 50), np.uint8)))[:40])
    with pytest.raises(DatasetFormatError, match="cut.gz"):
        read_idx(path)


def test_load_mnist_checks_labels_match_images(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(DatasetFormatError, match="expected 3 uint8 labels"):
        load_mnist(tmp_path, train=False)
    with pytest.raises(DatasetFormatError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, train=True)


@pytest.mark.skipif(not os.path.isdir(DATA_DIR), reason="MNIST IDX files not present")
def test_real_mnist_is_read_exactly():
    # The checks published with the data (../shared/data/mnist/README.md).
    images, labels = load_mnist(DATA_DIR, train=True)
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert round(float(images.mean()), 3) == 33.318
    _, test_labels = load_mnist(DATA_DIR, train=False)
    assert np.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_the_embedded_subset_written_as_idx_files_reads_back(mnist_idx_dir):
    # the folder that the tests of --data-dir train from (conftest.py)
    for train in (True, False):
        from_files, embedded = MNIST(mnist_idx_dir, train=train), MNIST(train=train)
        np.testing.assert_array_equal(from_files.images, embedded.images)
        np.testing.assert_array_equal(from_files.labels, embedded.labels)


def test_the_embedded_subset_starts_with_the_full_training_file():
    # so the tests that train on its first 2,000 or 6,000 digits train on those of the full file
    with np.load(EMBEDDED_PATH, allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive["train_indices"][:6000], np.arange(6000))
