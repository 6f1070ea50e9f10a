"""Data-parallel training over MPI (mpi4py): K processes, one model replica each, gradients averaged.

    mpiexec -n 2 python -m mpi4py -m tinygen train vae --distributed --out runs/vae2

Each of the K ranks holds the whole model and trains on its own shard of every global batch
(`ShardedLoader`: rank r takes rows r·B .. (r+1)·B − 1 of the K·B examples one process would see
with batch K·B). After `loss.backward()` every rank has the gradient of its own batch mean; the
mean over the global batch is the average of those K means (the shards have equal size), so
`allreduce_gradients` sums them with one `MPI_Allreduce` and divides by K, and every rank then
takes the same optimizer step from the same weights: the replicas stay identical.

- **Tensor fusion.** All gradients of an optimizer are packed into one contiguous buffer and
  reduced by one `Allreduce` (one message latency per step instead of one per tensor), then
  unpacked as views of that buffer. The buffers come from `xp = get_array_module(...)`, so the
  same code can hand CuPy arrays to a CUDA-aware MPI later; tinygen never imports CuPy here.
- **Where the averaging happens.** `DistributedOptimizer` wraps a model's optimizer: `step()`
  first averages the gradients. A model that changes its gradients between `backward()` and
  `step()` (the DDPM clips their norm) calls `optimizer.synchronize()` first, which averages
  them at that point (a no-op for a plain `Optimizer`); the following `step()` does not average
  twice. So clipping sees the global batch's gradient, exactly as in one process.
- **Randomness.** Rank 0 keeps the stream `manual_seed(seed)` started (so a 1-rank run is the
  ordinary run); rank r > 0 draws from its own stream, seeded by `rank_seed(seed, r)`, so the
  ranks' latents and noise are independent. A K-rank run therefore equals one process training
  on the combined batch whose random draws for rows r·B .. (r+1)·B − 1 come from stream r; the
  tests build exactly that process and compare parameters and losses after real steps.
- **BatchNorm** (the GANs) normalises with each rank's own batch statistics, as PyTorch's DDP
  does without SyncBatchNorm: with B per rank it behaves like batch B, not K·B. The running
  statistics are averaged over the ranks after every step (`DataParallel.after_step`), so they
  stay identical; they then equal what one process would get updating them with the mean of
  the K shards' statistics ("ghost batch norm" with batch B), not with the K·B batch's.
  The MLP GAN's minibatch standard deviation (`models.gan.MinibatchStdDev`) is likewise each
  rank's own: the spread of its B rows.
- **Failures.** A rank that raises while the others wait in a collective would hang the job.
  Run under `python -m mpi4py` (an unhandled exception or a non-zero exit calls `MPI_Abort`),
  or wrap the work in `abort_on_error()`, which prints the error with the rank and aborts all.

`init()` imports mpi4py on first use; `import tinygen` never needs it (`pip install
'tinygen[mpi]'` adds mpi4py, which needs an MPI library: the `mpich` wheel or the system's).
"""

import contextlib
import sys
import time
import traceback

import numpy as np

from tinygen import backend
from tinygen.data.loader import DataLoader, Dataset, _check_int
from tinygen.errors import ArgumentError, BackendUnavailableError, TinygenError
from tinygen.nn.module import Module
from tinygen.optim import EMA, Optimizer
from tinygen.tensor import Tensor

_comm = None  # MPI.COMM_WORLD once init() ran


def init():
    """Initialise MPI (once; importing mpi4py.MPI does) and return the world communicator."""
    global _comm
    if _comm is None:
        try:
            from mpi4py import MPI
        except ImportError as err:  # not installed, or no MPI library for it to load
            raise BackendUnavailableError(
                f"distributed training needs mpi4py and an MPI library ({err}); "
                "install them with: pip install 'tinygen[mpi]' mpich"
            ) from err
        _comm = MPI.COMM_WORLD
    return _comm


def rank():
    """This process's rank, 0 .. world_size() − 1 (0 when run without mpiexec)."""
    return init().Get_rank()


def world_size():
    """The number of processes in the job (1 when run without mpiexec)."""
    return init().Get_size()


def rank_seed(seed, rank):
    """The seed of rank `rank`'s random stream in a run seeded with `seed` (rank 0: `seed`)."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint64)[0])


# --- fused collectives ----------------------------------------------------------------------


def _groups(arrays):
    """Indices of `arrays` grouped by dtype, in first-seen order: one fused buffer per dtype."""
    groups = {}
    for i, a in enumerate(arrays):
        groups.setdefault(np.dtype(a.dtype), []).append(i)
    return groups.items()


def _mpi():
    from mpi4py import MPI  # init() has succeeded, so this import does too

    return MPI


def allreduce_gradients(params, average=True, comm=None):
    """Sum (average=True: average) the `.grad` of every parameter over all ranks, in place.

    One `Allreduce` per dtype (one in practice) on a buffer holding every gradient back to back,
    followed by one count per parameter of the ranks that had a gradient for it. A parameter
    without a gradient contributes zeros and keeps `.grad = None`; that every rank has the same
    set of gradients is checked from those counts (after the reduction, so all ranks raise
    together rather than deadlocking). The gradients afterwards are views of the buffer.
    Returns the number of bytes reduced (0 on a single rank, where nothing needs doing).
    """
    comm = init() if comm is None else comm
    params = [p for p in params if isinstance(p, Tensor)]
    k, nbytes = comm.Get_size(), 0
    if k == 1:
        return 0  # one rank: its gradients are the mean already
    for dtype, index in _groups([p.data for p in params]):
        group = [params[i] for i in index]
        grads = [p.grad.data if p.grad is not None else None for p in group]
        xp = backend.get_array_module(*[g for g in grads if g is not None], *[p.data for p in group])
        sizes = [p.data.size for p in group]
        total = sum(sizes)
        buffer = xp.zeros(total + len(group), dtype)  # [g_1 | g_2 | ... | count_1 .. count_n]
        offset = 0
        for g, n in zip(grads, sizes):
            if g is not None:
                buffer[offset:offset + n] = g.reshape(-1)
            offset += n
        buffer[total:] = xp.asarray([g is not None for g in grads], dtype=dtype)
        comm.Allreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)
        counts = buffer[total:]
        if bool(((counts != 0) & (counts != k)).any()):
            bad = [i for i, c in enumerate(counts.tolist()) if c not in (0, k)]
            raise ArgumentError(
                f"allreduce_gradients: parameters {bad} have a gradient on some ranks only "
                f"({[int(counts[i]) for i in bad]} of {k}); every rank must run the same backward"
            )
        grad_part = buffer[:total]
        if average and k > 1:
            grad_part /= k
        offset = 0
        for p, g, n in zip(group, grads, sizes):
            if g is not None:
                p.grad = Tensor(grad_part[offset:offset + n].reshape(p.shape))
            offset += n
        nbytes += buffer.nbytes
    return nbytes


def broadcast_arrays(arrays, root=0, comm=None):
    """Overwrite each array in place with root's copy: one `Bcast` per dtype on a packed buffer."""
    comm = init() if comm is None else comm
    arrays = list(arrays)
    for dtype, index in _groups(arrays):
        group = [arrays[i] for i in index]
        xp = backend.get_array_module(*group)
        buffer = xp.concatenate([a.reshape(-1) for a in group]) if comm.Get_rank() == root else \
            xp.empty(sum(a.size for a in group), dtype)
        comm.Bcast(buffer, root=root)
        offset = 0
        for a in group:
            a[...] = buffer[offset:offset + a.size].reshape(a.shape)
            offset += a.size


def broadcast_parameters(module, root=0, comm=None):
    """Give every rank root's parameters and buffers of `module` (a Module, or an iterable of tensors)."""
    if isinstance(module, Module):
        tensors = list(module.parameters()) + [b for b in module.buffers() if b is not None]
    else:
        tensors = list(module)
    broadcast_arrays([t.data for t in tensors], root=root, comm=comm)
    for t in tensors:
        t._bump_version()


def allreduce_mean(arrays, comm=None):
    """Replace each array in place by its mean over the ranks: one float64 `Allreduce` for all."""
    comm = init() if comm is None else comm
    arrays = list(arrays)
    if not arrays or comm.Get_size() == 1:
        return
    xp = backend.get_array_module(*arrays)
    buffer = xp.concatenate([xp.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])
    comm.Allreduce(_mpi().IN_PLACE, buffer, op=_mpi().SUM)
    buffer /= comm.Get_size()
    offset = 0
    for a in arrays:
        a[...] = buffer[offset:offset + a.size].reshape(a.shape)
        offset += a.size


# --- the optimizer wrapper -------------------------------------------------------------------


class DistributedOptimizer:
    """An optimizer whose `step()` first averages the gradients over all ranks.

    Wraps any `tinygen.optim.Optimizer`; `param_groups`, `state`, `zero_grad`, `state_dict` and
    `load_state_dict` are the wrapped optimizer's, so a checkpoint is the same as without MPI.
    `synchronize()` averages at once, for code that clips or inspects gradients before `step()`;
    the next `step()` then does not average again. `allreduce_bytes` and `allreduce_seconds`
    add up what the reductions moved and how long they took (waiting for slower ranks included).
    """

    def __init__(self, optimizer, comm=None):
        if not isinstance(optimizer, Optimizer):
            raise ArgumentError(f"DistributedOptimizer wraps a tinygen Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.comm = init() if comm is None else comm
        self._synchronized = False
        self.allreduce_bytes, self.allreduce_seconds, self.allreduce_calls = 0, 0.0, 0

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def parameters(self):
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def synchronize(self):
        """Average the gradients over the ranks now (once per step)."""
        if not self._synchronized:
            start = time.perf_counter()
            self.allreduce_bytes += allreduce_gradients(self.parameters(), average=True, comm=self.comm)
            self.allreduce_seconds += time.perf_counter() - start
            self.allreduce_calls += 1
            self._synchronized = True

    def step(self, closure=None):
        if closure is not None:
            raise ArgumentError("DistributedOptimizer.step takes no closure: compute the loss, backward, then step()")
        self.synchronize()
        self._synchronized = False
        return self.optimizer.step()

    def zero_grad(self, set_to_none=True):
        self._synchronized = False
        self.optimizer.zero_grad(set_to_none)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)


# --- data ------------------------------------------------------------------------------------


class ShardedLoader(DataLoader):
    """Rank `rank`'s share of every global batch of `world_size` × `batch_size` examples.

    Global batch b of epoch e holds the examples a `DataLoader(dataset, world_size * batch_size,
    shuffle, drop_last=True, seed=seed)` yields as its batch b; this rank gets its rows
    rank·B .. (rank+1)·B − 1. The K ranks together see exactly what one process sees with the
    batch K·B, each example once per epoch, and every rank has the same number of batches. The
    seed must be given: every rank has to agree on the order.

    >>> from tinygen.data import TensorDataset
    >>> ds = TensorDataset(np.arange(10))
    >>> [[x.tolist() for (x,) in ShardedLoader(ds, 2, rank=r, world_size=2, shuffle=False, seed=0)] for r in (0, 1)]
    [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]
    """

    def __init__(self, dataset, batch_size, rank, world_size, shuffle=True, seed=None):
        if seed is None:
            raise ArgumentError("ShardedLoader needs a seed: every rank must shuffle the same way")
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=True, seed=seed)
        self.world_size = _check_int("world_size", world_size, minimum=1)
        self.rank = _check_int("rank", rank, minimum=0)
        if self.rank >= self.world_size:
            raise ArgumentError(f"rank must be in 0..{self.world_size - 1}, got {rank}")

    def __len__(self):
        return len(self.dataset) // (self.batch_size * self.world_size)

    def batches(self, epoch, start=0):
        epoch = _check_int("epoch", epoch, minimum=0)
        start = _check_int("start", start, minimum=0)
        if start > len(self):
            raise ArgumentError(f"start must be at most the {len(self)} batches of an epoch, got {start}")
        order, b, k = self.order(epoch), self.batch_size, self.world_size
        first = self.rank * b  # this rank's rows inside each global batch of k * b
        return (self._fetch(order[g * k * b + first:g * k * b + first + b]) for g in range(start, len(self)))


class Shard(Dataset):
    """Every `world_size`-th example of `dataset`, starting at `rank` (for evaluation on K ranks).

    >>> from tinygen.data import TensorDataset
    >>> [x.tolist() for (x,) in (Shard(TensorDataset(np.arange(5)), r, 2)[:] for r in (0, 1))]
    [[0, 2, 4], [1, 3]]
    """

    def __init__(self, dataset, rank, world_size):
        world_size = _check_int("world_size", world_size, minimum=1)
        rank = _check_int("rank", rank, minimum=0)
        if rank >= world_size:
            raise ArgumentError(f"rank must be in 0..{world_size - 1}, got {rank}")
        self.dataset, self.indices = dataset, np.arange(rank, len(dataset), world_size)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.__getitems__(np.arange(len(self))[index])
        return self.dataset[int(self.indices[index])]

    def __getitems__(self, indices):
        indices = self.indices[np.asarray(indices, dtype=np.int64)]
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(indices)
        examples = [self.dataset[int(i)] for i in indices]
        if isinstance(examples[0], tuple):  # (x, y) examples -> (X, Y) batch, as DataLoader gathers them
            return tuple(np.stack(field) for field in zip(*examples))
        return np.stack(examples)


def shard(dataset, rank=None, world_size=None):
    """This rank's `Shard` of `dataset`; rank and world_size default to the MPI job's."""
    comm = init() if rank is None or world_size is None else None
    return Shard(dataset, comm.Get_rank() if rank is None else rank, comm.Get_size() if world_size is None else world_size)


# --- what the trainer uses ------------------------------------------------------------------


class DataParallel:
    """One rank's view of a data-parallel run, as `tinygen.trainer.train(distributed=True)` uses it:

        dp = DataParallel()
        loader = dp.loader(dataset, batch_size, seed)    # this rank's shard of each global batch
        dp.prepare(model, seed)                          # equal replicas, averaging optimizers
        for images, labels in loader.batches(epoch):
            losses = dp.after_step(model, model.train_step(Tensor(images), labels))
    """

    def __init__(self, comm=None):
        self.comm = init() if comm is None else comm
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.optimizers = []

    def loader(self, dataset, batch_size, seed, shuffle=True):
        """This rank's `ShardedLoader` (batch_size is per rank)."""
        return ShardedLoader(dataset, batch_size, self.rank, self.world_size, shuffle=shuffle, seed=seed)

    def prepare(self, model, seed):
        """Make the replicas start equal and average their gradients; give this rank its random stream.

        Broadcasts rank 0's networks (and EMA weights) to all ranks, wraps every optimizer the
        model holds as an attribute (GANs: opt_d and opt_g; VAEs and the DDPM: optimizer) in a
        `DistributedOptimizer`, and reseeds ranks r > 0 with `rank_seed(seed, r)`.
        """
        for name, value in list(vars(model).items()):
            if isinstance(value, Module):
                broadcast_parameters(value, comm=self.comm)
            elif isinstance(value, EMA):
                broadcast_arrays(list(value.shadow.values()) + list(value.buffers.values()), comm=self.comm)
            elif isinstance(value, Optimizer):
                wrapped = DistributedOptimizer(value, comm=self.comm)
                setattr(model, name, wrapped)
                self.optimizers.append(wrapped)
            elif isinstance(value, DistributedOptimizer):
                self.optimizers.append(value)
        if not self.optimizers:
            raise ArgumentError(f"{type(model).__name__} holds no optimizer attribute to distribute")
        if self.rank > 0:
            backend.manual_seed(rank_seed(seed, self.rank))

    def after_step(self, model, losses):
        """Average the float buffers (BatchNorm running statistics, and an EMA's copy of them) and the
        losses over the ranks.

        One `Allreduce` for all. Returns the losses of the global batch (the mean of the ranks'
        batch means), which are the same on every rank, so all ranks stop together on a NaN.
        """
        buffers = [b.data for value in vars(model).values() if isinstance(value, Module)
                   for b in value.buffers() if b is not None and b.dtype.kind == "f"]
        buffers += [a for value in vars(model).values() if isinstance(value, EMA)
                    for a in value.buffers.values() if a.dtype.kind == "f"]
        values = np.array([losses[k] for k in losses], dtype=np.float64)
        allreduce_mean(buffers + [values], comm=self.comm)
        return dict(zip(losses, values.tolist()))

    def on_root(self, fn, *args):
        """fn(*args) run on rank 0 alone; its result on every rank, or its TinygenError raised on every rank."""
        result = error = None
        if self.rank == 0:
            try:
                result = fn(*args)
            except TinygenError as err:
                error = err
        result, error = self.comm.bcast((result, error), root=0)
        if error is not None:
            raise error
        return result

    def barrier(self):
        """Wait until every rank gets here."""
        self.comm.Barrier()

    def rng_states(self):
        """Every rank's random generator state, in rank order (all ranks call it; all get the list)."""
        return self.comm.allgather(backend.get_rng_state())

    def allreduce_stats(self):
        """(bytes, seconds, calls) of gradient reductions so far, summed over this rank's optimizers."""
        return (sum(o.allreduce_bytes for o in self.optimizers), sum(o.allreduce_seconds for o in self.optimizers),
                sum(o.allreduce_calls for o in self.optimizers))


@contextlib.contextmanager
def abort_on_error(comm=None):
    """An exception on this rank prints one line naming the rank and aborts every rank.

    Without it a rank that fails leaves the others waiting in their next collective forever.
    A `TinygenError` prints its message; anything else prints its traceback (it is a bug).
    `MPI_Abort` ends the whole job with status 130 after Ctrl-C, 1 otherwise; a clean
    `sys.exit(0)` passes through.
    """
    comm = init() if comm is None else comm
    try:
        yield
    except BaseException as err:
        if isinstance(err, SystemExit) and not err.code:
            raise
        where = f"rank {comm.Get_rank()} of {comm.Get_size()}"
        if isinstance(err, TinygenError):
            print(f"tinygen: error on {where}: {err}; aborting all ranks", file=sys.stderr)
        elif isinstance(err, KeyboardInterrupt):
            print(f"\ntinygen: interrupted on {where}; aborting all ranks (resume with --resume)", file=sys.stderr)
        else:
            traceback.print_exc()
            print(f"tinygen: {type(err).__name__} on {where}; aborting all ranks", file=sys.stderr)
        sys.stderr.flush()
        time.sleep(0.5)  # MPICH's mpiexec can drop output still in flight when the abort kills the job
        comm.Abort(130 if isinstance(err, KeyboardInterrupt) else 1)
