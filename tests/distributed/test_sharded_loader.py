"""Sharding the data over ranks (`ShardedLoader`, `shard`): no MPI needed, ranks are arguments."""

import numpy as np
import pytest

from tinygen.data import DataLoader, TensorDataset
from tinygen.distributed import ShardedLoader, rank_seed, shard
from tinygen.errors import ArgumentError


@pytest.mark.parametrize("n, batch, ranks", [(100, 4, 2), (103, 5, 3), (16, 8, 2), (7, 1, 4)])
def test_the_ranks_shares_make_up_the_global_batches(n, batch, ranks):
    ds = TensorDataset(np.arange(n), np.arange(n) % 10)
    whole = DataLoader(ds, batch_size=ranks * batch, shuffle=True, drop_last=True, seed=5)
    shards = [ShardedLoader(ds, batch, rank=r, world_size=ranks, seed=5) for r in range(ranks)]
    assert all(len(s) == len(whole) == n // (ranks * batch) for s in shards)
    for epoch in (0, 3):
        for start in (0, len(whole) // 2):
            expected = [x for x, _ in whole.batches(epoch, start)]
            parts = [[x for x, _ in s.batches(epoch, start)] for s in shards]
            assert len(expected) == len(whole) - start
            for b, x in enumerate(expected):
                np.testing.assert_array_equal(np.concatenate([p[b] for p in parts]), x)


def test_sharded_loader_checks_its_arguments():
    ds = TensorDataset(np.arange(10))
    with pytest.raises(ArgumentError, match="needs a seed"):
        ShardedLoader(ds, 2, rank=0, world_size=2)
    with pytest.raises(ArgumentError, match=r"rank must be in 0\.\.1, got 2"):
        ShardedLoader(ds, 2, rank=2, world_size=2, seed=0)
    with pytest.raises(ArgumentError, match="start must be at most the 2 batches"):
        next(ShardedLoader(ds, 2, rank=0, world_size=2, seed=0).batches(0, start=3))


def test_shard_is_a_strided_split():
    ds = TensorDataset(np.arange(11))
    parts = [shard(ds, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 3]
    assert sorted(int(p[i][0]) for p in parts for i in range(len(p))) == list(range(11))
    (x,) = DataLoader(parts[1], batch_size=4).batches(0).__next__()
    assert x.tolist() == [1, 4, 7, 10]


def test_rank_streams_are_the_seed_for_rank_0_and_distinct_otherwise():
    assert rank_seed(7, 0) == 7
    seeds = {rank_seed(7, r) for r in range(1, 64)} | {rank_seed(8, r) for r in range(1, 64)}
    assert len(seeds) == 126 and 7 not in seeds
