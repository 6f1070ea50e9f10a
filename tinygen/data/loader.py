"""Datasets and the DataLoader that cuts them into batches, with PyTorch's names.

A `Dataset` is anything with ``__len__`` and ``__getitem__``. One that can also fetch a whole
batch at once defines ``__getitems__(indices)`` (as in PyTorch), and `DataLoader` then gathers
each batch with one fancy-indexing call instead of one call per example: `TensorDataset` and
`MNIST` do. Batches are NumPy arrays: a tuple of arrays when the examples are tuples.

The order is a pure function of ``(seed, epoch)``: with ``shuffle=True`` epoch ``e`` visits the
examples in the order ``np.random.default_rng([seed, e]).permutation(n)``. A run stopped after
batch ``b`` of epoch ``e`` therefore resumes exactly with ``loader.batches(e, start=b + 1)``.

>>> loader = DataLoader(TensorDataset(np.arange(10), np.arange(10) % 2), batch_size=4)
>>> len(loader)
3
>>> [x.tolist() for x, y in loader]
[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
>>> loader = DataLoader(TensorDataset(np.arange(10)), batch_size=4, shuffle=True, drop_last=True, seed=0)
>>> epoch0 = [x.tolist() for (x,) in loader.batches(0)]
>>> [x.tolist() for (x,) in loader.batches(0, start=1)] == epoch0[1:]
True
"""

import numpy as np

from tinygen.backend import generator
from tinygen.errors import ArgumentError, ShapeError, UnsupportedTypeError


class Dataset:
    """Base class of datasets: a subclass defines ``__len__`` and ``__getitem__(index)``."""

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


class TensorDataset(Dataset):
    """Example ``i`` is ``tuple(a[i] for a in arrays)``; the arrays share their first dimension.

    >>> ds = TensorDataset(np.zeros((3, 2)), np.array([7, 8, 9]))
    >>> len(ds), int(ds[2][1])
    (3, 9)
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ArgumentError("TensorDataset needs at least one array")
        arrays = tuple(a.numpy() if hasattr(a, "numpy") else np.asarray(a) for a in arrays)  # Tensors too
        shapes = [a.shape for a in arrays]
        if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
            raise ShapeError(f"TensorDataset needs arrays with one shared first dimension, got shapes {shapes}")
        self.arrays = arrays

    def __len__(self):
        return self.arrays[0].shape[0]

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)

    def __getitems__(self, indices):
        return tuple(a[indices] for a in self.arrays)  # one gather per array for the whole batch


class DataLoader:
    """Iterate over `dataset` in batches of `batch_size` (the last one shorter unless `drop_last`).

    `seed` fixes the shuffled orders; left as None it is drawn once from tinygen's generator
    (so `tinygen.manual_seed` fixes it too) and kept in ``loader.seed``. Iterating the loader
    runs epoch ``loader.epoch`` and then advances it; `batches(epoch, start)` runs any epoch from
    any batch without touching the counter.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise UnsupportedTypeError(f"DataLoader needs a dataset with __len__ and __getitem__, got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = _check_int("batch_size", batch_size, minimum=1)
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ArgumentError(f"{name} must be True or False, got {flag!r}")
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed = int(generator().integers(2**63)) if seed is None else _check_int("seed", seed, minimum=0)
        self.epoch = 0

    def __len__(self):
        """The number of batches in one epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch):
        """The indices of the examples in the order epoch `epoch` visits them."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def batches(self, epoch, start=0):
        """The batches of epoch `epoch`, beginning with batch number `start` (to resume a run)."""
        epoch = _check_int("epoch", epoch, minimum=0)
        start = _check_int("start", start, minimum=0)
        if start > len(self):
            raise ArgumentError(f"start must be at most the {len(self)} batches of an epoch, got {start}")
        order = self.order(epoch)
        return (self._fetch(order[b * self.batch_size:(b + 1) * self.batch_size]) for b in range(start, len(self)))

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.batches(epoch)

    def _fetch(self, indices):
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(indices)
        examples = [self.dataset[int(i)] for i in indices]
        if isinstance(examples[0], tuple):  # (x, y) examples -> (X, Y) batch
            return tuple(np.stack(field) for field in zip(*examples))
        return np.stack(examples)


def _check_int(name, value, minimum):
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value < minimum:
        raise ArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
