"""The pixel steps of tinygen.data.images: alpha over white, 16-bit scaling, crop, area resize, luma."""

import numpy as np
import pytest

from tinygen.data.images import (
    ImageArrays,
    area_weights,
    center_crop,
    convert_channels,
    decoded_to_float,
    reshape_images,
    resize,
    to_uint8,
)
from tinygen.errors import ArgumentError, DatasetFormatError, ShapeError


def test_alpha_is_composited_over_white():
    rgba = np.array([[[255, 0, 0, 128], [10, 20, 30, 0], [10, 20, 30, 255]]], np.uint8)  # (1, 3, 4)
    out = to_uint8(decoded_to_float(rgba, "x.png"))  # (3, 1, 3)
    # red at alpha 128/255: R = 255, G = B = 255 (1 - 128/255) = 127; alpha 0 is white; alpha 255 the colour
    assert out[:, 0].T.tolist() == [[255, 127, 127], [255, 255, 255], [10, 20, 30]]
    grey_alpha = np.array([[[0, 51]]], np.uint8)  # black at alpha 0.2 -> 0.8 white
    assert to_uint8(decoded_to_float(grey_alpha, "g.png")).tolist() == [[[204]]]


def test_16_bit_pixels_scale_to_8_bits_by_rounding():
    values = np.array([[0, 128, 257, 32767, 32768, 65535]], np.uint16)
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5)
    assert to_uint8(decoded_to_float(values, "w.png"))[0].tolist() == [expected[0].tolist()]


@pytest.mark.parametrize("pixels", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 5), np.uint8), np.zeros((0, 4), np.uint8)])
def test_decoded_pixels_of_a_wrong_kind_name_the_file(pixels):
    with pytest.raises(DatasetFormatError, match="odd.png"):
        decoded_to_float(pixels, "odd.png")


def test_center_crop_takes_the_middle_square():
    x = np.arange(2 * 5).reshape(2, 5)
    assert center_crop(x).tolist() == [[1, 2], [6, 7]]  # left = (5 - 2) // 2 = 1
    assert center_crop(x.T).shape == (2, 2)


def test_integral_downscaling_is_the_exact_box_mean():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 12, 12))
    expected = x.reshape(2, 3, 4, 3, 4, 3).mean(axis=(3, 5))
    np.testing.assert_array_equal(resize(x, 4), expected)


def test_non_integral_downscaling_weighs_each_pixel_by_its_overlap():
    # 3 -> 2: output 0 covers [0, 1.5): pixel 0 whole, pixel 1 half; weights 2/3 and 1/3
    x = np.array([[0.0, 3.0, 6.0], [3.0, 6.0, 9.0], [6.0, 9.0, 12.0]])
    out = resize(x, 2)
    along = np.array([[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    np.testing.assert_allclose(out, along @ x @ along.T)
    np.testing.assert_allclose(out, [[2.0, 6.0], [6.0, 10.0]])
    weights = area_weights(7, 3)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)  # an average
    np.testing.assert_allclose(weights.sum(axis=0), 3 / 7)  # every input pixel counts equally


def test_downscaling_keeps_the_mean_of_a_pattern():
    checker = (np.indices((10, 10)).sum(axis=0) % 2).astype(np.float64)  # mean 0.5
    np.testing.assert_allclose(resize(checker, 5), 0.5)  # 2 x 2 blocks hold two of each
    # 2.5 x 2.5 areas are not balanced: the corner one weighs the 3 x 3 corner by 1, 1, 1/2 along each axis...
    out = resize(checker, 4)
    np.testing.assert_allclose(out[0, 0], (checker[:3, :3] * np.outer([1, 1, 0.5], [1, 1, 0.5])).sum() / 6.25)
    np.testing.assert_allclose(out.mean(), 0.5)  # ...and every input pixel weighs the same, so the mean stays


def test_upscaling_is_bilinear_as_pytorch(torch):
    x = np.random.default_rng(1).random((1, 3, 5, 5))
    expected = torch.nn.functional.interpolate(torch.tensor(x), size=(12, 12), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resize(x, 12), expected.numpy(), atol=1e-12)


def test_integral_downscaling_is_area_as_pytorch(torch):
    x = np.random.default_rng(2).random((1, 3, 12, 12))
    expected = torch.nn.functional.interpolate(torch.tensor(x), size=(3, 3), mode="area")
    np.testing.assert_allclose(resize(x, 3), expected.numpy(), atol=1e-12)


def test_grey_is_bt601_luma_and_grey_to_rgb_copies():
    rgb = np.array([200.0, 100.0, 50.0]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(convert_channels(rgb, 1), 0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert convert_channels(rgb, 1).shape == (1, 1, 1, 1)
    assert convert_channels(np.full((1, 1, 2, 2), 30.0), 3).shape == (1, 3, 2, 2)


def test_reshape_images_rounds_once_and_leaves_matching_arrays_alone():
    images = np.random.default_rng(3).integers(0, 256, (3, 3, 8, 6), dtype=np.uint8)
    assert reshape_images(images) is images
    out = reshape_images(images, image_size=3, channels=1)  # crop 6x6 rows 1..6, then 2x2 means, then luma
    crop = images[:, :, 1:7].astype(np.float64)
    expected = np.einsum("c,nchw->nhw", [0.299, 0.587, 0.114], crop.reshape(3, 3, 3, 2, 3, 2).mean(axis=(3, 5)))
    np.testing.assert_array_equal(out[:, 0], np.floor(expected + 0.5).astype(np.uint8))


@pytest.mark.parametrize("image_size, channels", [(0, None), (2.0, None), (True, None), (None, 2), (None, True)])
def test_bad_image_options_raise(image_size, channels):
    with pytest.raises(ArgumentError):
        reshape_images(np.zeros((1, 1, 4, 4), np.uint8), image_size, channels)


def test_image_arrays_give_float_batches_and_zero_labels_without_labels():
    data = ImageArrays(np.full((4, 3, 2, 2), 255, np.uint8))
    x, y = data.__getitems__(np.array([0, 2]))
    assert x.shape == (2, 3, 2, 2) and x.dtype == np.float32 and (x == 1).all()
    assert y.dtype == np.int64 and y.tolist() == [0, 0]
    with pytest.raises(ShapeError):
        ImageArrays(np.zeros((4, 2, 2, 2), np.uint8))
    with pytest.raises(ArgumentError):
        ImageArrays(np.zeros((2, 1, 2, 2), np.uint8), np.array([0, 2]), ["a", "b"])
