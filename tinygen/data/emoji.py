"""Emoji: 32 x 32 colour images in 9 categories, shipped inside tinygen (``emoji32.npz``).

Built by ``python -m tinygen.data.build_emoji ../shared/data/emoji`` (see that module for the
rule) from the 64 x 64 Noto Color Emoji (Apache License 2.0) and Twemoji (CC BY 4.0) images of
the ``emoji-datasource`` 16.0.0 packages: each emoji composited over white and area-averaged to
32 x 32. The licence notices are beside this file: ``LICENSE-noto-Apache-2.0.txt`` and
``NOTICE-emoji.md`` (the Twemoji attribution).

- Labels are the Unicode top-level categories (`EMOJI_CLASSES`). The five skin-tone swatches of
  the "Component" category are left out, and so are the skin-tone variants (a person emoji in
  five recolourings, 3,750 of the 7,572 files): kept, they made the file 6.6 MB and "People &
  Body" 60 % of the set.
- The test split holds about 10 % of the emoji, chosen by base emoji (the code points without
  skin-tone modifiers): both artworks of one emoji are on the same side.
- The file's SHA-256 is pinned (`EMOJI_SHA256`) and checked on every load.

>>> train = Emoji()
>>> train.images.shape[1:], train.images.dtype, len(train.classes)
((3, 32, 32), dtype('uint8'), 9)
"""

import hashlib
import os

import numpy as np

from tinygen.data.images import ImageArrays
from tinygen.errors import DatasetFormatError
from tinygen.serialization import _CORRUPT_ERRORS

EMOJI_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "emoji32.npz")
EMOJI_SHA256 = "e46cc8ba299a4bf1e28dfe6fddc9f516ea43857e5a9566cab547aa4302f241e5"
EMOJI_CLASSES = [
    "Activities", "Animals & Nature", "Flags", "Food & Drink", "Objects",
    "People & Body", "Smileys & Emotion", "Symbols", "Travel & Places",
]


class Emoji(ImageArrays):
    """The shipped emoji set's training or test split: uint8 (N, 3, 32, 32), labels 0-8."""

    def __init__(self, train=True, path=EMOJI_PATH, sha256=EMOJI_SHA256):
        self.train = bool(train)
        images, labels, classes = load_emoji(self.train, path, sha256)
        super().__init__(images, labels, classes, source=f"emoji {'train' if self.train else 'test'}")


def load_emoji(train=True, path=EMOJI_PATH, sha256=EMOJI_SHA256):
    """(images uint8 (N, 3, 32, 32), labels int64 (N,), classes) of one split of the file `path`.

    The file must have the SHA-256 `sha256`; a missing, changed or unreadable file raises
    `DatasetFormatError` naming it.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as err:
        raise DatasetFormatError(f"{path}: the shipped emoji set cannot be read ({err}); reinstall tinygen") from err
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DatasetFormatError(
            f"{path}: SHA-256 {digest}, expected {sha256}: the file is not the shipped emoji set; "
            "reinstall tinygen or rebuild it with `python -m tinygen.data.build_emoji ../shared/data/emoji`"
        )
    split = "train" if train else "test"
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels, classes = archive[f"{split}_images"], archive[f"{split}_labels"], archive["classes"]
    except (KeyError, *_CORRUPT_ERRORS) as err:
        raise DatasetFormatError(f"{path}: the emoji set cannot be read ({type(err).__name__}: {err})") from err
    # stored (N, H, W, C): interleaved colours compress better than planes
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels.astype(np.int64), classes.tolist()
