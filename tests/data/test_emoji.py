"""The shipped emoji set: pinned by SHA-256, split by base emoji, rebuilt byte for byte from the source."""

import collections
import csv
import hashlib
import os

import numpy as np
import pytest

from tinygen.data import EMOJI_CLASSES, EMOJI_SHA256, Emoji, load_dataset
from tinygen.data import emoji as emoji_module
from tinygen.data.build_emoji import base_emoji, base_keys, is_test, main
from tinygen.errors import DatasetFormatError

SOURCE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "emoji")
needs_source = pytest.mark.skipif(not os.path.isdir(SOURCE), reason="../shared/data/emoji not present")


def test_the_shipped_file_is_the_pinned_one():
    with open(emoji_module.EMOJI_PATH, "rb") as file:
        assert hashlib.sha256(file.read()).hexdigest() == EMOJI_SHA256
    folder = os.path.dirname(emoji_module.EMOJI_PATH)
    assert os.path.isfile(os.path.join(folder, "LICENSE-noto-Apache-2.0.txt"))
    with open(os.path.join(folder, "NOTICE-emoji.md"), encoding="utf-8") as file:
        assert "CC BY 4.0" in file.read()


@pytest.mark.parametrize("train", [True, False])
def test_both_splits_are_rgb_32_with_every_category(train):
    data = Emoji(train=train)
    assert data.images.dtype == np.uint8 and data.images.shape[1:] == (3, 32, 32)
    assert data.classes == EMOJI_CLASSES and len(data.classes) == 9
    assert np.bincount(data.labels, minlength=9).min() > 0 and data.labels.max() == 8
    corners = data.images[:, :, 0, 0]
    assert (corners == 255).mean() > 0.5  # most emoji leave their corner transparent: white after compositing
    x, y = data.__getitems__(np.arange(4))
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64


def test_no_base_emoji_straddles_the_split():
    with np.load(emoji_module.EMOJI_PATH, allow_pickle=False) as archive:
        train, test = archive["train_unified"].tolist(), archive["test_unified"].tolist()
        sources = {split: collections.Counter(archive[f"{split}_source"].tolist()) for split in ("train", "test")}
    assert not {base_emoji(u) for u in train} & {base_emoji(u) for u in test}
    assert all(is_test(base_emoji(u)) for u in test) and not any(is_test(base_emoji(u)) for u in train)
    # each emoji is there in both artworks, on one side
    assert all(count == 2 for count in collections.Counter(train + test).values())
    assert sources["train"]["noto"] == sources["train"]["twemoji"] and sources["test"]["noto"] == sources["test"]["twemoji"]
    assert 0.08 < len(test) / (len(train) + len(test)) < 0.14


def test_skin_tone_variants_share_their_base():
    assert base_emoji("1F44B-1F3FD") == "1F44B"
    assert base_emoji("1F575-1F3FB-200D-2640-FE0F") == base_emoji("1F575-FE0F-200D-2640-FE0F") == "1F575-200D-2640"
    rows = [
        dict(unified="1F46C", skin_tone="", name="TWO MEN HOLDING HANDS"),
        dict(unified="1F468-1F3FB-200D-1F91D-200D-1F468-1F3FC", skin_tone="1F3FB-1F3FC", name="TWO MEN HOLDING HANDS"),
        dict(unified="1F44B-1F3FD", skin_tone="1F3FD", name="WAVING HAND SIGN"),
    ]
    assert base_keys(rows) == ["1F46C", "1F46C", "1F44B"]


@needs_source
def test_every_skin_tone_variant_of_the_source_lands_beside_its_base():
    with open(os.path.join(SOURCE, "emoji.csv"), newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    keys = base_keys(rows)
    sides = {key: is_test(key) for row, key in zip(rows, keys) if not row["skin_tone"]}
    toned = [key for row, key in zip(rows, keys) if row["skin_tone"]]
    assert len(toned) == 3750 and set(toned) <= set(sides)  # every variant has an untoned base in the set
    named = {row["name"]: is_test(key) for row, key in zip(rows, keys) if not row["skin_tone"]}
    assert all(is_test(key) == named[row["name"]] for row, key in zip(rows, keys) if row["skin_tone"])


def test_a_changed_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "emoji32.npz"
    data = bytearray(open(emoji_module.EMOJI_PATH, "rb").read())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetFormatError, match="emoji32.npz.*SHA-256"):
        Emoji(path=path)
    with pytest.raises(DatasetFormatError, match="absent.npz"):
        Emoji(path=tmp_path / "absent.npz")


def test_load_dataset_resizes_emoji():
    data = load_dataset("emoji", train=False, image_size=16, channels=1)
    assert data.images.shape == (len(Emoji(train=False)), 1, 16, 16)


@needs_source
def test_the_build_reproduces_the_shipped_file_byte_for_byte(tmp_path):
    out = tmp_path / "emoji32.npz"
    main([SOURCE, "--out", str(out)])
    assert out.read_bytes() == open(emoji_module.EMOJI_PATH, "rb").read()
    assert (tmp_path / "LICENSE-noto-Apache-2.0.txt").read_bytes() == open(os.path.join(SOURCE, "LICENSE-noto-Apache-2.0.txt"), "rb").read()
