"""Image datasets as arrays, and the pixel steps that bring any image to a dataset's shape.

`ImageArrays` is the `Dataset` behind every image set but MNIST: uint8 ``.images`` (N, C, H, W),
int64 ``.labels`` (N,) or None, ``.classes`` (list of str) or None. An example is
``(image, label)``: float32 (C, H, W) in [0, 1] and an int64 (0 when the set has no labels).

The pixel steps work on float64 arrays (N, C, H, W) in [0, 255], so a chain of them rounds once
(`to_uint8`, halves up; on this scale the mean of whole numbers that ends in .5 is exact):

- `decoded_to_float`: a decoded file (H, W), (H, W, 2), (H, W, 3) or (H, W, 4), uint8 or
  uint16, to (1 or 3, H, W), alpha composited over white (``colour * a + 255 * (1 - a)``, a in [0, 1]);
- `center_crop`: the largest centred square, its top-left corner at ``((H - s) // 2, (W - s) // 2)``;
- `resize`: a square side ``n`` to ``m``. Downscaling averages areas: each output pixel is the
  mean of the input area it covers, an exact ``k x k`` box mean when ``n = k m``, else each input
  pixel weighted by its overlap. Upscaling is bilinear with pixel centres at ``i + 1/2``
  (PyTorch's ``interpolate(mode="bilinear", align_corners=False)``). Both run separably by rows
  and columns;
- `convert_channels`: grey to RGB copies the plane; RGB to grey is the ITU-R BT.601 luma
  ``0.299 R + 0.587 G + 0.114 B`` (as Pillow's ``convert("L")``).

>>> images = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4) * 10
>>> reshape_images(images, image_size=2)[0, 0].tolist()     # 2 x 2 box means, rounded half up
[[25, 45], [105, 125]]
"""

import numpy as np

from tinygen.data.loader import Dataset
from tinygen.errors import ArgumentError, DatasetFormatError, ShapeError

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601: grey = 0.299 R + 0.587 G + 0.114 B
_CHUNK = 1024  # images converted at a time by reshape_images, to bound the float64 copy


class ImageArrays(Dataset):
    """A dataset held as arrays: `images` uint8 (N, C, H, W), C 1 or 3, `labels` (N,) or None.

    `classes` names the labels (label ``i`` is ``classes[i]``); `source` says where the images
    come from, for the repr and the error messages.
    """

    def __init__(self, images, labels=None, classes=None, source="arrays"):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ShapeError(f"{source}: images must be uint8 (N, C, H, W) with C 1 or 3, got {images.dtype} {images.shape}")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.dtype.kind not in "iu" or labels.shape != images.shape[:1]:
                raise ShapeError(f"{source}: labels must be {images.shape[0]} integers, got {labels.dtype} {labels.shape}")
            labels = labels.astype(np.int64)
            if classes is not None and labels.size and not 0 <= labels.min() <= labels.max() < len(classes):
                raise ArgumentError(f"{source}: labels must lie in 0..{len(classes) - 1} for {len(classes)} classes")
        self.images, self.labels = images, labels
        self.classes = None if classes is None else [str(name) for name in classes]
        self.source = source

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, index):
        label = np.int64(0) if self.labels is None else self.labels[index]
        return self.images[index].astype(np.float32) / 255, label  # (C, H, W)

    def __getitems__(self, indices):
        images = self.images[indices].astype(np.float32) / 255  # (B, C, H, W)
        labels = np.zeros(len(images), np.int64) if self.labels is None else self.labels[indices]
        return images, labels

    def arrays(self):
        """The whole set: images float32 (N, C, H, W) in [0, 1] and labels int64 (N,)."""
        return self.__getitems__(slice(None))

    def reshape(self, image_size=None, channels=None):
        """Resize (centre-cropped square, `image_size`) and convert (`channels`) `.images` in place."""
        self.images = reshape_images(self.images, image_size, channels)
        return self

    def __repr__(self):
        n, c, h, w = self.images.shape
        classes = "no labels" if self.labels is None else f"{len(self.classes or ())} classes"
        return f"{type(self).__name__}({n} images {c}x{h}x{w}, {classes}, {self.source})"


def check_image_options(image_size, channels):
    """Raise `ArgumentError` unless `image_size` is None or an int >= 1 and `channels` None, 1 or 3."""
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size < 1):
        raise ArgumentError(f"image_size must be None or an integer >= 1, got {image_size!r}")
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ArgumentError(f"channels must be None, 1 (grey) or 3 (RGB), got {channels!r}")


def reshape_images(images, image_size=None, channels=None):
    """uint8 (N, C, H, W) centre-cropped and resized to `image_size`, converted to `channels`.

    None keeps the size (no crop either) or the channels; nothing to do returns `images` itself.
    """
    check_image_options(image_size, channels)
    n, c, h, w = images.shape
    size = None if image_size is None or (h == w == image_size) else int(image_size)
    channels = None if channels == c else channels
    if size is None and channels is None:
        return images
    out_size = (h, w) if size is None else (size, size)
    out = np.empty((n, channels or c, *out_size), np.uint8)
    for start in range(0, n, _CHUNK):
        x = images[start:start + _CHUNK].astype(np.float64)
        if size is not None:
            x = resize(center_crop(x), size)
        out[start:start + _CHUNK] = to_uint8(convert_channels(x, channels or c))
    return out


def decoded_to_float(pixels, path):
    """A decoded image (H, W), (H, W, 2), (H, W, 3) or (H, W, 4), uint8 or uint16, as float64
    (1, H, W) or (3, H, W) in [0, 255], its alpha composited over white."""
    scale = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(pixels.dtype)
    if scale is None:
        raise DatasetFormatError(f"{path}: decoded to dtype {pixels.dtype}, expected uint8 or uint16")
    x = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4) or 0 in x.shape:
        raise DatasetFormatError(f"{path}: decoded to shape {pixels.shape}, expected (H, W) or (H, W, 2|3|4)")
    x = x.astype(np.float64) if scale == 255 else x * 255.0 / scale  # 16 bits to the 8-bit scale
    if x.shape[2] in (2, 4):
        alpha = x[:, :, -1:] / 255
        x = x[:, :, :-1] * alpha + 255 * (1.0 - alpha)  # over white: colour * a + 255 * (1 - a)
    return x.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)


def center_crop(x):
    """The largest centred square of (..., H, W)."""
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return x[..., top:top + s, left:left + s]


def resize(x, size):
    """Square float images (..., n, n) to (..., size, size): area mean down, bilinear up."""
    n = x.shape[-1]
    if n == size:
        return x
    if n % size == 0:
        k = n // size  # an exact k x k box mean
        return x.reshape(*x.shape[:-2], size, k, size, k).mean(axis=(-3, -1))
    weights = area_weights(n, size) if n > size else bilinear_weights(n, size)  # (size, n)
    return np.einsum("ih,...hw,jw->...ij", weights, x, weights)


def area_weights(n, m):
    """(m, n): output pixel i covers input [i n/m, (i+1) n/m); each input pixel weighs its overlap.

    >>> area_weights(3, 2).tolist()
    [[0.6666666666666666, 0.3333333333333333, 0.0], [0.0, 0.3333333333333333, 0.6666666666666666]]
    """
    edges = np.arange(m + 1) * n / m
    lo = np.maximum(edges[:-1, None], np.arange(n)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(1, n + 1)[None, :])
    return np.clip(hi - lo, 0.0, None) * (m / n)


def bilinear_weights(n, m):
    """(m, n): linear interpolation at the input coordinate (i + 1/2) n/m - 1/2, clamped to the edges."""
    source = np.clip((np.arange(m) + 0.5) * n / m - 0.5, 0.0, n - 1)
    left = np.floor(source).astype(np.int64)
    right = np.minimum(left + 1, n - 1)
    frac = source - left
    weights = np.zeros((m, n))
    np.add.at(weights, (np.arange(m), left), 1.0 - frac)
    np.add.at(weights, (np.arange(m), right), frac)
    return weights


def convert_channels(x, channels):
    """(..., C, H, W) to `channels`: grey to RGB copies the plane, RGB to grey is BT.601 luma."""
    c = x.shape[-3]
    if c == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=-3)
    return np.einsum("c,...chw->...hw", np.array(LUMA_WEIGHTS), x)[..., None, :, :]


def to_uint8(x):
    """Float pixels in [0, 255] to uint8, rounding halves up."""
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)
