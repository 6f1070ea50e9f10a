"""Build the emoji set shipped inside tinygen, ``tinygen/data/emoji32.npz``.

    python -m tinygen.data.build_emoji ../shared/data/emoji

The source folder is the 64 x 64 emoji collection described by its README (``emoji.csv``,
``noto/``, ``twemoji/``); its PNG files must hash to `SOURCE_SHA256` (the README's check).
The rule:

- keep the rows of ``emoji.csv`` whose ``skin_tone`` is empty and whose category is not
  "Component" (the five skin-tone swatches), in file order;
- decode each PNG with `tinygen.image.read_png`, composite it over white (grey + alpha files as
  grey RGB), and average each 2 x 2 block to 32 x 32 (one rounding, halves up; `tinygen.data.images`);
- label it with its category's index in `EMOJI_CLASSES`;
- put it in the test split when `is_test(base)`: the SHA-256 of its base emoji's code points
  (`base_keys`: the ``unified`` string without skin-tone modifiers and FE0F selectors) is 0
  modulo 10, so one emoji's two artworks and its skin-tone variants always fall on one side.
  The split is drawn over every row, variants included, before they are left out.

The archive holds ``{train,test}_{images,labels,unified,source}``, ``classes``, ``rule`` and
``source_sha256``. It is written as `build_subset.write_subset` writes (deflate, fixed zip
dates), so the same source gives the same bytes (for a given zlib), and the Noto licence is
copied beside it.
"""

import argparse
import csv
import hashlib
import os
import shutil

import numpy as np

from tinygen.data.build_subset import write_subset
from tinygen.data.emoji import EMOJI_CLASSES, EMOJI_PATH
from tinygen.data.images import convert_channels, decoded_to_float, resize, to_uint8
from tinygen.errors import DatasetFormatError
from tinygen.image import read_png

SOURCE_SHA256 = "c7694c64a94d095d8e170b3868929e9a779500923488bbbefc991c88f82bf62c"
SKIN_TONES = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}  # the Fitzpatrick modifiers U+1F3FB..U+1F3FF
# NOTE: the emoji presentation selector U+FE0F is dropped too: a base such as 1F575-FE0F-200D-2640-FE0F
# (woman detective) loses its first FE0F in the toned forms (1F575-1F3FB-200D-2640-FE0F).
IGNORED = SKIN_TONES | {"FE0F"}
LICENSE_NAME = "LICENSE-noto-Apache-2.0.txt"
RULE = (
    "emoji.csv rows without skin tone and outside 'Component', in file order; composited over white, "
    "2x2 area mean to 32x32; test split: sha256(code points without skin tones and FE0F) % 10 == 0"
)


def base_emoji(unified):
    """The code points of `unified` without skin-tone modifiers and presentation selectors (FE0F).

    >>> base_emoji("1F9D1-1F3FB-200D-1F91D-200D-1F9D1-1F3FC"), base_emoji("1F575-FE0F-200D-2640-FE0F")
    ('1F9D1-200D-1F91D-200D-1F9D1', '1F575-200D-2640')
    """
    return "-".join(point for point in unified.upper().split("-") if point not in IGNORED)


def base_keys(rows):
    """The base emoji of each row of ``emoji.csv``: `base_emoji` of its code points.

    Six multi-person emoji are the exception: toned, they are spelt person by person
    (1F468-1F3FB-200D-1F91D-200D-1F468-1F3FC, two men holding hands), untoned as one code point
    (1F46C). A toned row whose base is no untoned row's takes that of the untoned row with its name.
    """
    untoned = {base_emoji(row["unified"]) for row in rows if not row["skin_tone"]}
    by_name = {row["name"]: base_emoji(row["unified"]) for row in rows if not row["skin_tone"]}
    keys = []
    for row in rows:
        key = base_emoji(row["unified"])
        keys.append(key if key in untoned else by_name.get(row["name"], key))
    return keys


def is_test(base):
    """Whether the emoji of base code points `base` (see `base_keys`) belongs to the test split."""
    return int(hashlib.sha256(base.encode("ascii")).hexdigest(), 16) % 10 == 0


def source_sha256(folder):
    """The README's check: SHA-256 of ``sha256sum`` lines of noto/ and twemoji/'s PNG files, sorted by path."""
    paths = sorted(f"{sub}/{name}" for sub in ("noto", "twemoji") for name in os.listdir(os.path.join(folder, sub)) if name.endswith(".png"))
    lines = []
    for path in paths:
        with open(os.path.join(folder, path), "rb") as file:
            lines.append(f"{hashlib.sha256(file.read()).hexdigest()}  {path}\n")
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def build_emoji(folder):
    """The arrays of the shipped set (a dict of name -> array), from the collection in `folder`."""
    digest = source_sha256(folder)
    if digest != SOURCE_SHA256:
        raise DatasetFormatError(f"{folder}: its PNG files hash to {digest}, expected {SOURCE_SHA256} (the README's check)")
    with open(os.path.join(folder, "emoji.csv"), newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    splits = {"train": [], "test": []}
    for row, base in zip(rows, base_keys(rows)):
        if not row["skin_tone"] and row["category"] != "Component":
            splits["test" if is_test(base) else "train"].append(row)
    entries = {}
    for split, chosen in splits.items():
        images = []
        for row in chosen:
            path = os.path.join(folder, row["file"])
            x = convert_channels(decoded_to_float(read_png(path), path), 3)  # (3, 64, 64) over white; grey files too
            images.append(to_uint8(resize(x, 32)).transpose(1, 2, 0))  # (32, 32, 3)
        entries[f"{split}_images"] = np.stack(images)  # (N, 32, 32, 3): interleaved colours compress better
        entries[f"{split}_labels"] = np.array([EMOJI_CLASSES.index(row["category"]) for row in chosen], np.uint8)
        entries[f"{split}_unified"] = np.array([row["unified"] for row in chosen])
        entries[f"{split}_source"] = np.array([row["source"] for row in chosen])
    entries["classes"] = np.array(EMOJI_CLASSES)
    entries["rule"] = np.array(RULE)
    entries["source_sha256"] = np.array(SOURCE_SHA256)
    return entries


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinygen.data.build_emoji", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the 64x64 emoji collection (emoji.csv, noto/, twemoji/)")
    parser.add_argument("--out", default=EMOJI_PATH, help="where to write the .npz (default: inside the package)")
    args = parser.parse_args(argv)
    entries = build_emoji(args.folder)
    write_subset(args.out, entries)
    shutil.copyfile(os.path.join(args.folder, LICENSE_NAME), os.path.join(os.path.dirname(os.path.abspath(args.out)), LICENSE_NAME))
    with open(args.out, "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    print(
        f"wrote {args.out}: {len(entries['train_labels'])} training and {len(entries['test_labels'])} test images, "
        f"{os.path.getsize(args.out)} bytes, SHA-256 {digest}"
    )


if __name__ == "__main__":
    main()
