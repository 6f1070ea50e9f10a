"""NPZImages: both layouts, labels and class names, and an error naming the file for every malformed input."""

import numpy as np
import pytest

from tinygen.data import NPZImages
from tinygen.errors import DatasetFormatError


def test_channels_first_and_last_give_the_same_images(tmp_path):
    nchw = np.random.default_rng(0).integers(0, 256, (4, 3, 5, 6), dtype=np.uint8)
    np.savez(tmp_path / "first.npz", images=nchw, labels=np.array([0, 2, 1, 2]))
    np.savez_compressed(tmp_path / "last.npz", images=nchw.transpose(0, 2, 3, 1), labels=np.array([0, 2, 1, 2], np.uint8))
    first, last = NPZImages(tmp_path / "first.npz"), NPZImages(tmp_path / "last.npz")
    np.testing.assert_array_equal(first.images, nchw)
    np.testing.assert_array_equal(last.images, nchw)
    assert first.labels.dtype == np.int64 and last.labels.tolist() == [0, 2, 1, 2]
    assert first.classes == ["0", "1", "2"]
    x, y = last.__getitems__(np.array([1]))
    assert x.shape == (1, 3, 5, 6) and x.dtype == np.float32 and y.tolist() == [2]


def test_grey_without_labels_and_the_ambiguous_layout(tmp_path):
    np.savez(tmp_path / "grey.npz", images=np.zeros((2, 7, 7), np.uint8))
    grey = NPZImages(tmp_path / "grey.npz")
    assert grey.images.shape == (2, 1, 7, 7) and grey.labels is None and grey.classes is None
    np.savez(tmp_path / "ambiguous.npz", images=np.zeros((2, 3, 8, 3), np.uint8))
    assert NPZImages(tmp_path / "ambiguous.npz").images.shape == (2, 3, 8, 3)  # axis 1 of size 3: channels first
    np.savez(tmp_path / "one.npz", images=np.zeros((2, 8, 8, 1), np.uint8))
    assert NPZImages(tmp_path / "one.npz").images.shape == (2, 1, 8, 8)


def test_class_names_from_the_file(tmp_path):
    np.savez(tmp_path / "c.npz", images=np.zeros((2, 1, 2, 2), np.uint8), labels=[1, 0], classes=np.array(["cat", "dog", "eel"]))
    data = NPZImages(tmp_path / "c.npz")
    assert data.classes == ["cat", "dog", "eel"] and data.labels.tolist() == [1, 0]


GOOD = np.zeros((3, 1, 4, 4), np.uint8)
MALFORMED = {
    "no images": dict(pictures=GOOD),
    "float images": dict(images=GOOD.astype(np.float32)),
    "two channels": dict(images=np.zeros((3, 2, 4, 4), np.uint8)),
    "neither layout": dict(images=np.zeros((3, 4, 4, 4), np.uint8)),
    "five axes": dict(images=np.zeros((3, 1, 4, 4, 1), np.uint8)),
    "no images at all": dict(images=np.zeros((0, 1, 4, 4), np.uint8)),
    "float labels": dict(images=GOOD, labels=np.zeros(3)),
    "too few labels": dict(images=GOOD, labels=np.zeros(2, np.int64)),
    "negative labels": dict(images=GOOD, labels=np.array([0, -1, 0])),
    "classes without labels": dict(images=GOOD, classes=np.array(["a"])),
    "too few classes": dict(images=GOOD, labels=np.array([0, 1, 2]), classes=np.array(["a", "b"])),
    "object array": dict(images=np.array([GOOD, None], dtype=object)),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_raise_naming_the_file(tmp_path, case):
    path = tmp_path / "broken.npz"
    np.savez(path, **MALFORMED[case])
    with pytest.raises(DatasetFormatError, match="broken.npz"):
        NPZImages(path)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", "npy"])
def test_files_that_are_not_npz_raise_naming_the_file(tmp_path, content):
    path = tmp_path / "odd.npz"
    if content == "npy":
        with open(path, "wb") as file:
            np.save(file, GOOD)
    else:
        path.write_bytes(content)
    with pytest.raises(DatasetFormatError, match="odd.npz"):
        NPZImages(path)


def test_a_truncated_file_and_a_missing_one_raise_naming_the_file(tmp_path):
    np.savez_compressed(tmp_path / "whole.npz", images=np.random.default_rng(0).integers(0, 256, (50, 3, 8, 8), dtype=np.uint8))
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match="cut.npz"):
        NPZImages(tmp_path / "cut.npz")
    with pytest.raises(DatasetFormatError, match="absent.npz"):
        NPZImages(tmp_path / "absent.npz")
