"""Version counters: the guard on the arrays a backward pass saved.

What it guards: `Mul.backward` multiplies by the inputs the forward saw. If one of them is changed
in place between the forward and `backward()` (``t[0] = 5``, an optimizer step, an init), the
gradient comes out wrong, silently. PyTorch keeps a version counter on every tensor's memory for
this: each in-place change bumps it, every node records the versions of what it saved, and
backward raises when one differs. tinygen does the same: a tensor and its views (reshape,
indexing) and detached copies share one `VersionCounter`; `Tensor._bump_version` counts a change;
`saved_versions` records what a node saved at the forward and `check_saved_versions` compares it
at the backward, naming the op, the tensor and both versions.
"""


class VersionCounter:
    """How often a tensor's data, shared with its views and detached copies, changed in place."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


def memory_owner(array):
    """The array that owns `array`'s memory (itself unless it is a view)."""
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def share_with_view(result, inputs, arrays):
    """If `result` (an op's output) is a view of an input's memory (reshape, indexing) or that
    input's array itself, it shares that input's version counter."""
    view = result.data.base is not None  # (result.data: the op's output, or that output made an array)
    for a in arrays:
        view = view or a is result.data
    if not view:
        return
    root = memory_owner(result.data)
    for t, a in zip(inputs, arrays):
        if root is memory_owner(a):
            result._version_counter = t._version_counter
            return


def saved_versions(ctx, inputs, arrays, result):
    """((input index, or -1 for the output), version) of each tensor whose array `ctx` saved for
    its backward, at the forward."""
    watched, out = [], result.data
    for s in ctx.saved_tensors:
        if s is out:
            watched.append((-1, result._version_counter.value))
            continue
        for i, a in enumerate(arrays):
            if s is a:
                watched.append((i, inputs[i]._version_counter.value))
    return tuple(watched)


def check_saved_versions(ctx, node):
    """Raise if a tensor that `ctx`'s backward saved was changed in place after the forward
    (`node`: the tensor `ctx` made)."""
    for i, expected in ctx.saved_versions:
        t = node if i < 0 else ctx.parents[i]
        if t._version != expected:
            what = "its output" if i < 0 else f"its input {i}"
            raise RuntimeError(
                f"{ctx.op.__name__}.backward needs {what} (shape {tuple(t.shape)}, {t.dtype}) as the forward "
                f"saw it, but it was modified in place since (version {t._version}, expected {expected}); "
                f"modify a copy (tinygen.tensor(t)), or modify it after backward()"
            )
