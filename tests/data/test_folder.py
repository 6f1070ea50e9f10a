"""ImageFolder: classes from subfolders, pixels to one shape, errors naming the file, the decoding cache."""

import os

import numpy as np
import pytest

from tinygen import image
from tinygen.data import ImageFolder
from tinygen.data.folder import find_images
from tinygen.errors import ArgumentError, DatasetFormatError
from tinygen.image import save_png


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("TINYGEN_CACHE", str(folder))
    return folder


@pytest.fixture
def count_reads(monkeypatch):
    """The number of calls to tinygen.image.read_image, counted as they happen."""
    calls = []
    read = image.read_image

    def counting(path):
        calls.append(os.fspath(path))
        return read(path)

    monkeypatch.setattr(image, "read_image", counting)
    return calls


def write(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(path, np.asarray(pixels, np.uint8))
    return path


def test_classes_come_from_the_first_level_subfolders(tmp_path):
    root = tmp_path / "pets"
    write(root / "dog" / "b.png", np.full((4, 4), 200))
    write(root / "cat" / "x.PNG", np.full((4, 4), 10))
    write(root / "dog" / "deep" / "a.png", np.full((4, 4), 100))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    write(root / ".hidden" / "h.png", np.zeros((4, 4)))
    data = ImageFolder(root)
    assert data.files == ["cat/x.PNG", "dog/b.png", "dog/deep/a.png"]
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 1, 1]
    assert data.images.shape == (3, 1, 4, 4) and data.images.dtype == np.uint8
    assert data.images[:, 0, 0, 0].tolist() == [10, 200, 100]
    x, y = data.__getitems__(np.array([2, 0]))
    assert x.shape == (2, 1, 4, 4) and x.dtype == np.float32 and y.tolist() == [1, 0]


def test_a_flat_folder_has_no_labels(tmp_path):
    write(tmp_path / "a.png", np.zeros((3, 3, 3)))
    write(tmp_path / "b.png", np.full((3, 3, 3), 255))
    data = ImageFolder(tmp_path)
    assert data.labels is None and data.classes is None and data.images.shape == (2, 3, 3, 3)
    assert data.__getitems__(np.arange(2))[1].tolist() == [0, 0]


def test_images_beside_class_folders_are_an_error(tmp_path):
    write(tmp_path / "loose.png", np.zeros((3, 3)))
    write(tmp_path / "cls" / "a.png", np.zeros((3, 3)))
    with pytest.raises(DatasetFormatError, match="loose.png"):
        ImageFolder(tmp_path)


def test_an_empty_folder_names_its_root(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DatasetFormatError, match="no images found") as err:
        ImageFolder(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)
    with pytest.raises(ArgumentError, match="not a folder"):
        ImageFolder(tmp_path / "missing")


@pytest.mark.parametrize("name, content", [("bad.png", b"\x89PNG\r\n\x1a\n broken"), ("bad.jpg", b"\xff\xd8 not a jpeg")])
def test_a_broken_image_names_its_file(tmp_path, name, content):
    if name.endswith(".jpg"):
        pytest.importorskip("PIL")
    write(tmp_path / "good.png", np.zeros((3, 3)))
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DatasetFormatError, match=name):
        ImageFolder(tmp_path)


def test_sizes_that_differ_ask_for_image_size(tmp_path):
    write(tmp_path / "a.png", np.zeros((4, 4)))
    write(tmp_path / "b.png", np.zeros((6, 8)))
    with pytest.raises(DatasetFormatError, match="image_size"):
        ImageFolder(tmp_path)
    data = ImageFolder(tmp_path, image_size=2)
    assert data.images.shape == (2, 1, 2, 2)


def test_crop_and_area_resize_of_a_known_pattern(tmp_path):
    pattern = np.zeros((6, 10, 3), np.uint8)  # wide: the crop keeps columns 2..7
    pattern[:, 2:8] = np.kron(np.array([[0, 90, 180], [30, 120, 210], [60, 150, 240]]), np.ones((2, 2)))[..., None]
    pattern[:, :2] = pattern[:, 8:] = 255  # outside the crop
    write(tmp_path / "p.png", pattern)
    data = ImageFolder(tmp_path, image_size=3)
    assert data.images[0, 0].tolist() == [[0, 90, 180], [30, 120, 210], [60, 150, 240]]
    data = ImageFolder(tmp_path, image_size=2, channels=1)  # 1.5 x 1.5 areas
    weights = np.array([[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    cells = np.array([[0, 90, 180], [30, 120, 210], [60, 150, 240]], np.float64)
    assert data.images.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(data.images[0, 0], np.floor(weights @ cells @ weights.T + 0.5))


def test_alpha_grey_and_16_bit_files_become_one_shape(tmp_path, monkeypatch):
    decoded = {
        "rgba.png": np.array([[[255, 0, 0, 0], [0, 0, 255, 255]]] * 2, np.uint8),  # (2, 2, 4)
        "grey16.png": np.full((2, 2), 65535, np.uint16),
        "greyalpha.png": np.dstack([np.zeros((2, 2), np.uint8), np.full((2, 2), 51, np.uint8)]),
    }
    for name in decoded:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(image, "read_image", lambda path: decoded[os.path.basename(path)])
    data = ImageFolder(tmp_path, cache=False)  # a colour file makes every image RGB
    assert data.images.shape == (3, 3, 2, 2)
    assert data.images[0, :, 0, 0].tolist() == [255] * 3  # grey16: full white
    assert data.images[1, :, 0, 0].tolist() == [204] * 3  # greyalpha: black at alpha 0.2 over white
    assert data.images[2, :, 0].T.tolist() == [[255, 255, 255], [0, 0, 255]]  # transparent red is white
    grey = ImageFolder(tmp_path, channels=1, cache=False)
    assert grey.images.shape == (3, 1, 2, 2) and grey.images[2, 0, 0].tolist() == [255, 29]  # 0.114 x 255


def test_every_listed_extension_is_found_in_any_case(tmp_path):
    for name in ("a.png", "b.JPG", "c.jpeg", "d.Bmp", "e.gif", "f.webp", "g.tif", "h.txt"):
        (tmp_path / name).write_bytes(b"")
    assert find_images(tmp_path) == ["a.png", "b.JPG", "c.jpeg", "d.Bmp", "e.gif", "f.webp"]


def test_a_second_load_reads_the_cache_not_the_files(tmp_path, cache, count_reads):
    root = tmp_path / "set"
    for i in range(3):
        write(root / f"{i}.png", np.full((4, 4, 3), 40 * i))
    first = ImageFolder(root)
    assert len(count_reads) == 3 and os.path.dirname(first.cache_path) == str(cache)
    second = ImageFolder(root)
    assert len(count_reads) == 3 and second.cache_path == first.cache_path
    np.testing.assert_array_equal(second.images, first.images)
    assert second.labels is None and second.classes is None
    assert not any(name.startswith(".") for name in os.listdir(root))  # nothing written into the data folder


def test_the_cache_is_invalidated_by_changes_and_settings(tmp_path, count_reads):
    root = tmp_path / "set"
    write(root / "a" / "0.png", np.full((4, 4), 10))
    write(root / "b" / "1.png", np.full((4, 4), 20))
    ImageFolder(root)
    assert len(count_reads) == 2
    ImageFolder(root, image_size=2)  # another size: decoded again
    assert len(count_reads) == 4
    ImageFolder(root, channels=3)
    assert len(count_reads) == 6
    write(root / "b" / "1.png", np.full((4, 4), 99))  # a file replaced
    stat = os.stat(root / "b" / "1.png")
    os.utime(root / "b" / "1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    data = ImageFolder(root)
    assert len(count_reads) == 8 and data.images[1, 0, 0, 0] == 99
    write(root / "b" / "2.png", np.full((4, 4), 30))  # a file added
    data = ImageFolder(root)
    assert len(count_reads) == 11 and data.labels.tolist() == [0, 1, 1]
    os.remove(root / "a" / "0.png")  # a file removed
    data = ImageFolder(root)
    assert len(count_reads) == 13 and data.classes == ["b"]


def test_a_damaged_cache_file_is_decoded_again(tmp_path, count_reads):
    write(tmp_path / "set" / "a.png", np.zeros((2, 2)))
    first = ImageFolder(tmp_path / "set")
    with open(first.cache_path, "wb") as file:
        file.write(b"garbage")
    again = ImageFolder(tmp_path / "set")
    assert len(count_reads) == 2 and again.images.shape == (1, 1, 2, 2)
    ImageFolder(tmp_path / "set")
    assert len(count_reads) == 2  # the rewritten cache is read


def test_cache_false_neither_reads_nor_writes(tmp_path, cache, count_reads):
    write(tmp_path / "set" / "a.png", np.zeros((2, 2)))
    ImageFolder(tmp_path / "set", cache=False)
    ImageFolder(tmp_path / "set", cache=False)
    assert len(count_reads) == 2 and not cache.exists()


def test_files_written_by_pillow_in_other_modes_and_formats(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.arange(16).reshape(4, 4) * 17  # red fading in over white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a_rgba.png")
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(tmp_path / "b_grey16.png")
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8).repeat(2, 0).repeat(2, 1), "P")
    palette.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    palette.save(tmp_path / "c_palette.png", transparency=0)  # entry 0 (blue) fully transparent
    Image.fromarray(np.full((4, 4, 3), 120, np.uint8)).save(tmp_path / "d_flat.jpg", quality=95)
    data = ImageFolder(tmp_path)
    assert data.images.shape == (4, 3, 4, 4)
    alpha = rgba[..., 3] / 255
    np.testing.assert_array_equal(data.images[0, 1], np.floor(255 * (1 - alpha) + 0.5))  # green: white * (1 - a)
    assert (data.images[0, 0] == np.floor(200 * alpha + 255 * (1 - alpha) + 0.5)).all()
    assert (data.images[1] == round(40000 * 255 / 65535)).all()
    assert data.images[2, :, 0, 0].tolist() == [255, 255, 255] and data.images[2, :, 0, 2].tolist() == [0, 255, 0]
    assert np.abs(data.images[3].astype(int) - 120).max() <= 2  # JPEG is lossy
