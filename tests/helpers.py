"""The comparison helper and the gradient checker every op test uses.

- `gradcheck(fn, *inputs)`: a directional finite-difference check in float64 (HIPS/autograd
  style): two extra forward passes per input instead of one per element.
- `check_op(tg_fn, torch_fn, *arrays)`: one line per op: shape and dtype, then values, then
  gradients, against the NumPy oracle, the finite differences, and PyTorch when it is installed.
- `assert_standard_normal(z)`: moments, tails and a Kolmogorov-Smirnov test of a large draw
  (no SciPy: the normal CDF comes from `math.erf`).
- `write_mnist_idx(folder)`: the MNIST subset shipped inside tinygen written as the four IDX files,
  for the tests of `--data mnist --data-dir`, which then run on any machine (conftest's
  `mnist_idx_dir` fixture), not only where the full files sit in ../shared/data/mnist.

`torch` is the torch module, or None where PyTorch is not installed; `requires_torch` marks a
test that cannot run without it. check_op skips its PyTorch comparison by itself.
"""

import contextlib
import math
import os
import struct

import numpy as np
import pytest

from tinygen import backend
from tinygen.data import MNIST_FILES, load_embedded_mnist
from tinygen.tensor import Tensor, no_grad

try:
    import torch
except ModuleNotFoundError:  # the NumPy and finite-difference oracles still run; a broken torch fails
    torch = None

requires_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

# Tolerances for comparing two implementations of the same op in one dtype (different summation
# orders, different but equivalent formulas). The absolute part is scaled by the largest |value|.
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-7, atol=1e-10),
}


def assert_close(actual, expected, what, rtol=None, atol=None):
    """Shape, dtype, then values of `actual` against `expected` (arrays or tensors)."""
    actual, expected = _as_numpy(actual), _as_numpy(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    if actual.dtype.kind not in "fc":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    tol = TOLERANCES[actual.dtype]
    rtol = tol["rtol"] if rtol is None else rtol
    atol = tol["atol"] if atol is None else atol
    finite = expected[np.isfinite(expected)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=what)


def gradcheck(fn, *inputs, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0, wrt=None):
    """Check the gradients of `fn` at `inputs` along random directions, in float64.

    `fn` takes tensors and returns a tensor. Floating-point `inputs` (arrays or tensors) are
    differentiated, those listed in `wrt` if it is given (indices); the others are passed as
    constant tensors. With a random output cotangent r and L(x) = sum(fn(x) * r), backward gives
    g = dL/dx; for a random direction v per input the central difference
    (L(x + eps v) - L(x - eps v)) / 2 eps must equal sum(g * v). Keep inputs away from kinks.
    """
    rng = np.random.default_rng(seed)
    arrays = [_as_numpy(x) for x in inputs]
    wrt = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"] if wrt is None else list(wrt)
    arrays = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays]
    leaves = [Tensor(a.copy(), requires_grad=i in wrt) for i, a in enumerate(arrays)]
    out = fn(*leaves)
    assert out.dtype == np.float64, f"float64 inputs gave a {out.dtype} output"
    assert out.requires_grad, "the output does not require grad: it is not connected to the inputs"
    r = rng.standard_normal(out.shape)
    out.backward(r)
    scale = float(np.abs(out.numpy() * r).sum())  # the round-off of L is about 1e-16 * scale

    def loss(i, step):
        with no_grad():
            shifted = [Tensor(a + step if j == i else a) for j, a in enumerate(arrays)]
            return float((fn(*shifted).numpy() * r).sum())

    for i in wrt:
        grad = leaves[i].grad
        grad = np.zeros_like(arrays[i]) if grad is None else grad.numpy()
        assert grad.shape == arrays[i].shape, f"input {i}: grad shape {grad.shape}, expected {arrays[i].shape}"
        assert grad.dtype == np.float64, f"input {i}: grad dtype {grad.dtype}, expected float64"
        v = rng.standard_normal(arrays[i].shape)
        numeric = (loss(i, eps * v) - loss(i, -eps * v)) / (2 * eps)
        analytic = float(np.sum(grad * v))
        assert abs(numeric - analytic) <= atol * (1 + scale) + rtol * abs(analytic), (
            f"input {i} of shape {arrays[i].shape}: directional derivative {analytic!r} from backward, "
            f"{numeric!r} from finite differences"
        )


def check_op(tg_fn, torch_fn, *arrays, np_fn=None, grad=True, numeric_grad=True, wrt=None, rtol=None, atol=None):
    """Run `tg_fn` on `arrays` and compare it with every oracle; returns tinygen's output tensor.

    `arrays` are NumPy arrays; floating ones are differentiated (or those whose indices are in
    `wrt`), integer and boolean ones are passed as constant tensors. `tg_fn` takes tinygen
    tensors, `torch_fn` torch tensors (or None), `np_fn` NumPy arrays (or None). In order:
    1. shape and dtype of the output, then its values, against `np_fn` and against torch;
    2. gradients: `gradcheck` in float64 (unless `numeric_grad=False`), and against torch's
       autograd at the inputs' own dtype with the same output cotangent.
    Tolerances default to TOLERANCES for the output's dtype (float32: float32 tolerances).
    """
    arrays = [np.asarray(a) for a in arrays]
    wrt = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"] if wrt is None else list(wrt)
    grad = grad and bool(wrt)
    leaves = [Tensor(a.copy(), requires_grad=grad and i in wrt) for i, a in enumerate(arrays)]
    out = tg_fn(*leaves)
    assert isinstance(out, Tensor), f"tinygen returned {type(out).__name__}, not a Tensor"
    if np_fn is not None:
        assert_close(out, np.asarray(np_fn(*arrays)), "value vs NumPy", rtol, atol)

    if torch is not None and torch_fn is not None:
        torch_leaves = [torch.from_numpy(a.copy()).requires_grad_(grad and i in wrt) for i, a in enumerate(arrays)]
        torch_out = torch_fn(*torch_leaves)
        assert_close(out, torch_out.detach().numpy(), "value vs torch", rtol, atol)
        if grad:
            r = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
            out.backward(r)
            torch_out.backward(torch.from_numpy(r.copy()))
            for i in wrt:
                expected = torch_leaves[i].grad
                expected = np.zeros_like(arrays[i]) if expected is None else expected.numpy()
                actual = leaves[i].grad
                actual = np.zeros_like(arrays[i]) if actual is None else actual.numpy()
                assert_close(actual, expected, f"gradient of input {i} vs torch", rtol, atol)

    if grad and numeric_grad:
        gradcheck(tg_fn, *arrays, wrt=wrt)
    return out


def _as_numpy(x):
    if isinstance(x, Tensor):
        return x.numpy()
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return np.asarray(x)


def random_batches(images, batch_size, count, seed=0):
    """`count` Tensors of `batch_size` images drawn with replacement from a float array."""
    rng = np.random.default_rng(seed)
    return [Tensor(images[rng.integers(0, len(images), batch_size)]) for _ in range(count)]


def idx_bytes(array, code=0x08):
    """The bytes of an IDX file holding `array`: magic (0, 0, type code, ndim), big-endian sizes, data."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist_idx(folder):
    """Write the embedded MNIST subset (15,000 training and 1,000 test digits, real MNIST) into
    `folder` as the four uncompressed IDX files that `load_mnist` and `MNIST(root)` read; returns
    `folder`."""
    for train in (True, False):
        images, labels = load_embedded_mnist(train)
        for name, array in zip(MNIST_FILES[train], (images, labels)):
            with open(os.path.join(folder, name), "wb") as f:
                f.write(idx_bytes(array))
    return folder


def normal_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2, vectorised: math.erf on a grid of 24,001 points in [-6, 6],
    linearly interpolated (error below 1e-8, since |Phi''| <= 0.25 and the step is 5e-4)."""
    grid = np.linspace(-6.0, 6.0, 24001)
    table = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in grid])
    return np.interp(x, grid, table, left=0.0, right=1.0)


def assert_standard_normal(z, what="draw"):
    """Fail if a large draw z (any shape) is unlikely to come from N(0, 1).

    Each check is a 5-sigma band (or a 0.1% critical value), so that a correct generator
    fails with probability below ~1e-3 over all checks: mean and variance, skewness and excess
    kurtosis (standard errors sqrt(6/n), sqrt(24/n)), the frequencies of |z| > 2 and > 3
    (binomial), and the Kolmogorov-Smirnov statistic D = sup |F_n - Phi| against its
    asymptotic critical value 1.95 / sqrt(n) at level 0.001.
    """
    z = np.asarray(z, np.float64).ravel()
    n = z.size
    mean, var = z.mean(), z.var()
    assert abs(mean) < 5 / math.sqrt(n), f"{what}: mean {mean:.3g} (n = {n})"
    assert abs(var - 1) < 5 * math.sqrt(2 / n), f"{what}: variance {var:.5f} (n = {n})"
    u = (z - mean) / math.sqrt(var)
    skew, kurt = (u**3).mean(), (u**4).mean() - 3
    assert abs(skew) < 5 * math.sqrt(6 / n), f"{what}: skewness {skew:.3g} (n = {n})"
    assert abs(kurt) < 5 * math.sqrt(24 / n), f"{what}: excess kurtosis {kurt:.3g} (n = {n})"
    for k in (2, 3):
        p = math.erfc(k / math.sqrt(2))  # P(|z| > k)
        count = int((np.abs(z) > k).sum())
        assert abs(count - n * p) < 5 * math.sqrt(n * p * (1 - p)), f"{what}: {count} of {n} beyond {k} sigma"
    s = np.sort(z)
    cdf = normal_cdf(s)
    d = max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max())
    assert d < 1.95 / math.sqrt(n), f"{what}: Kolmogorov-Smirnov D = {d:.3g} >= {1.95 / math.sqrt(n):.3g}"
    return dict(mean=mean, var=var, skew=skew, kurtosis=kurt, ks=d)


@contextlib.contextmanager
def poisoned_allocator(module, empty=np.empty):
    """Replace `module._empty` (the allocator a kernel module makes its outputs with), and its
    `_scratch` where it has one, by one that fills every new buffer with NaN (integers: -2**31) and records its shape, so that an element a
    kernel never writes cannot pass; yields the list of recorded shapes."""
    allocated = []

    def nan_empty(shape, dtype):
        out = empty(shape, dtype)
        out.fill(np.nan if np.dtype(dtype).kind == "f" else -(2**31))
        allocated.append(tuple(out.shape))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "_empty", nan_empty)
        if hasattr(module, "_scratch"):  # reusable intermediates: a fresh poisoned one every time
            mp.setattr(module, "_scratch", lambda role, shape, dtype: nan_empty(shape, dtype))
        yield allocated


def assert_kernel_output(out, expected, tol=None, what="output", terms=None):
    """A fast kernel's NumPy output against the reference's: shape, dtype, every element written
    (no NaN poison left), then ||out - expected|| / ||expected|| below tol (default 1e-5 for
    float32, 1e-12 for float64).

    `terms`, where given, is the elementwise sum of the magnitudes of the terms the kernel adds
    up: the error is then relative to the larger of ||expected|| and ||terms||, since terms that
    cancel (a one-pixel batch whose result is near 0) leave no relative accuracy to check.
    """
    assert out.shape == expected.shape, f"{what}: shape {out.shape}, expected {expected.shape}"
    assert out.dtype == expected.dtype, f"{what}: dtype {out.dtype}, expected {expected.dtype}"
    assert np.isfinite(out).all(), f"{what}: an element was never written (NaN poison left)"
    if tol is None:
        tol = 1e-5 if out.dtype == np.float32 else 1e-12
    scale = max(np.linalg.norm(expected), 0.0 if terms is None else np.linalg.norm(terms))
    error = np.linalg.norm(out - expected) / scale if scale > 0 else np.linalg.norm(out)
    assert error < tol, f"{what}: relative error {error:.3g}"


def host(a):
    """A GPU array's copy on the host, after checking that it is a GPU array (CuPy or the stand-in)."""
    assert backend.is_device_array(a), f"a {type(a).__name__}, not a GPU array"
    return a.get()


def assert_computes_as_saved(cls, case):
    """A model of class `cls` rebuilt from a fixture `case` (its saved overrides and state, one seeded
    sample and the losses of one seeded step, written by older code) samples and trains the same."""
    import tinygen

    backend.manual_seed(99)
    model = cls(cls.Config(**case["overrides"]))
    model.load_state_dict(case["state"])
    backend.manual_seed(1)
    np.testing.assert_allclose(model.sample(1), case["samples"], rtol=1e-6, atol=1e-7)
    x = tinygen.tensor(np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32))
    backend.manual_seed(2)
    assert model.train_step(x) == pytest.approx(case["losses"], rel=1e-6)
