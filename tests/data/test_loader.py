"""TensorDataset and DataLoader: every example once per epoch, orders fixed by (seed, epoch), resumable."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygen
from tinygen.data import DataLoader, Dataset, TensorDataset
from tinygen.errors import ArgumentError, ShapeError


class Squares(Dataset):
    """A dataset with __getitem__ only: the loader must fetch and stack example by example."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return np.full((2,), index, np.float32), index * index


class CountingDataset(TensorDataset):
    def __init__(self, *arrays):
        super().__init__(*arrays)
        self.calls = {"getitem": 0, "getitems": 0}

    def __getitem__(self, index):
        self.calls["getitem"] += 1
        return super().__getitem__(index)

    def __getitems__(self, indices):
        self.calls["getitems"] += 1
        return super().__getitems__(indices)


def test_tensor_dataset_indexes_every_array():
    x, y = np.arange(12.0).reshape(6, 2), np.arange(6)
    ds = TensorDataset(x, y)
    assert len(ds) == 6
    xi, yi = ds[4]
    np.testing.assert_array_equal(xi, [8.0, 9.0])
    assert yi == 4
    assert len(TensorDataset(tinygen.tensor([[1.0], [2.0]]))) == 2  # a Tensor is accepted too


@pytest.mark.parametrize("arrays", [(np.zeros((3, 2)), np.zeros(4)), (np.zeros(3), np.float32(1.0))])
def test_tensor_dataset_needs_one_first_dimension(arrays):
    with pytest.raises(ShapeError, match=r"shared first dimension, got shapes \[\(3,?.*\), \("):
        TensorDataset(*arrays)
    with pytest.raises(ArgumentError, match="at least one array"):
        TensorDataset()


@given(n=st.integers(0, 40), batch_size=st.integers(1, 12), shuffle=st.booleans(), drop_last=st.booleans())
def test_every_example_once_per_epoch(n, batch_size, shuffle, drop_last):
    loader = DataLoader(TensorDataset(np.arange(n)), batch_size, shuffle=shuffle, drop_last=drop_last, seed=1)
    batches = [x for (x,) in loader]
    assert len(batches) == len(loader) == (n // batch_size if drop_last else -(-n // batch_size))
    assert all(len(b) == batch_size for b in batches[:-1]) and all(1 <= len(b) <= batch_size for b in batches)
    seen = np.concatenate(batches) if batches else np.zeros(0, int)
    if drop_last:
        assert len(seen) == n - n % batch_size and len(set(seen.tolist())) == len(seen)
    else:
        assert sorted(seen.tolist()) == list(range(n))
    if not shuffle:
        assert seen.tolist() == list(range(len(seen)))


def test_order_is_a_function_of_seed_and_epoch():
    loader = DataLoader(TensorDataset(np.arange(50)), batch_size=7, shuffle=True, seed=123)
    for epoch in (0, 1, 5):
        np.testing.assert_array_equal(loader.order(epoch), np.random.default_rng([123, epoch]).permutation(50))
    assert not np.array_equal(loader.order(0), loader.order(1))
    twin = DataLoader(TensorDataset(np.arange(50)), batch_size=7, shuffle=True, seed=123)
    first, second = [x for (x,) in loader], [x for (x,) in loader]  # __iter__ advances the epoch
    assert loader.epoch == 2
    for got, want in zip(first + second, list(twin.batches(0)) + list(twin.batches(1))):
        np.testing.assert_array_equal(got, want[0])


@given(start=st.integers(0, 8), epoch=st.integers(0, 3))
def test_batches_resume_at_any_batch(start, epoch):
    loader = DataLoader(TensorDataset(np.arange(30), np.arange(30) * 2), batch_size=4, shuffle=True, seed=9)
    full = list(loader.batches(epoch))
    resumed = list(loader.batches(epoch, start=start))
    assert len(resumed) == len(full) - start
    for (x, y), (fx, fy) in zip(resumed, full[start:]):
        np.testing.assert_array_equal(x, fx)
        np.testing.assert_array_equal(y, 2 * x)
    assert loader.epoch == 0  # batches() leaves the counter alone


def test_unseeded_loader_draws_its_seed_from_tinygen():
    tinygen.manual_seed(7)
    a = DataLoader(TensorDataset(np.arange(5)), shuffle=True)
    tinygen.manual_seed(7)
    b = DataLoader(TensorDataset(np.arange(5)), shuffle=True)
    assert a.seed == b.seed and isinstance(a.seed, int)


def test_array_datasets_are_gathered_one_batch_at_a_time():
    ds = CountingDataset(np.arange(20.0).reshape(10, 2), np.arange(10))
    batches = list(DataLoader(ds, batch_size=4, shuffle=True, seed=0))
    assert ds.calls == {"getitem": 0, "getitems": 3}
    x, y = batches[0]
    assert x.shape == (4, 2) and y.shape == (4,)
    np.testing.assert_array_equal(x[:, 0], 2 * y)


def test_item_datasets_are_stacked():
    (x, y), (x2, y2) = DataLoader(Squares(5), batch_size=3)
    assert x.shape == (3, 2) and x.dtype == np.float32 and y.tolist() == [0, 1, 4] and y2.tolist() == [9, 16]
    (single,) = DataLoader(np.arange(3), batch_size=3)  # an array is a dataset of its rows
    assert single.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"batch_size": 2.0}, "batch_size must be an integer >= 1, got 2.0"),
        ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),
        ({"shuffle": "yes"}, "shuffle must be True or False, got 'yes'"),
        ({"drop_last": 1}, "drop_last must be True or False, got 1"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        DataLoader(TensorDataset(np.arange(4)), **kwargs)


def test_bad_dataset_and_resume_point():
    with pytest.raises(TypeError, match="__len__ and __getitem__, got int"):
        DataLoader(5)
    loader = DataLoader(TensorDataset(np.arange(10)), batch_size=4)
    with pytest.raises(ArgumentError, match="at most the 3 batches"):
        loader.batches(0, start=4)
    with pytest.raises(ArgumentError, match="epoch must be an integer >= 0"):
        loader.batches(-1)
    assert list(loader.batches(0, start=3)) == []
