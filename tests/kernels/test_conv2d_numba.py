"""The Numba conv kernels (kernels/conv2d/cpu_numba.py) against the NumPy reference, and the dispatch.

Skipped as a whole where Numba is not installed (the NumPy path is covered by
test_conv2d_reference.py). The oracles:
- the NumPy reference, function by function, on hypothesis-drawn shapes, strides, paddings,
  dilations, output paddings, dtypes and odd sizes, through *both* Numba paths (the im2col +
  BLAS "gemm" path and the "direct" loops, forced per test by `DIRECT_MAX_CHANNELS`);
- the reference's gradients through autograd: `F.conv2d` / `F.conv_transpose2d` backward under
  ``TINYGEN_KERNELS=numba`` against the same under ``TINYGEN_KERNELS=numpy``.

Poisoned outputs: every buffer cpu_numba writes comes from its `_empty`; the autouse fixture
below swaps it for an allocator that fills the buffer with NaN, so an element a kernel forgets
to write is NaN and fails the comparison (the kernels' own zero-initialised scratch arrays,
`np.zeros` inside the compiled code, are part of their algorithm and stay zeros).
"""

import contextlib
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

pytest.importorskip("numba")

from helpers import assert_kernel_output, poisoned_allocator  # noqa: E402
from strategies import conv_case as draw_case  # noqa: E402
from tinygen.kernels import cpu_runtime, dispatch  # noqa: E402
from tinygen.errors import BackendUnavailableError, DTypeError  # noqa: E402
from tinygen.kernels import conv2d  # noqa: E402
from tinygen.kernels.conv2d import cpu_numba, reference  # noqa: E402
from tinygen.nn import functional as F  # noqa: E402
from tinygen.tensor import Tensor  # noqa: E402

SCRATCH = cpu_numba._scratch  # the real one: the fixture below replaces it while the tests run
PATHS = ("gemm", "gemm-batched", "direct")  # gemm-batched: chunks of several samples, and a remainder


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def poisoned_outputs():
    """cpu_numba's allocator replaced by one that fills every new buffer with NaN (counted)."""
    with poisoned_allocator(cpu_numba) as allocated:
        yield allocated


@contextlib.contextmanager
def forced_path(path, stride):
    """Make the conv calls in the block take `path` (one of PATHS; direct needs stride 1),
    checking that they did. "gemm" runs the chunk sizes the shapes give (one sample each for
    the small batches drawn here), "gemm-batched" chunks of as many samples as fit (a power of
    two, so an odd batch also leaves a smaller last chunk)."""
    saved = cpu_numba.DIRECT_MAX_CHANNELS, cpu_numba.MIN_CHUNKS, cpu_numba.CHUNK_BYTES
    before = dict(cpu_numba.paths)
    cpu_numba.DIRECT_MAX_CHANNELS = 10**9 if path == "direct" else 0
    if path == "gemm-batched":
        cpu_numba.MIN_CHUNKS, cpu_numba.CHUNK_BYTES = 1, 2**62
    try:
        yield
    finally:
        cpu_numba.DIRECT_MAX_CHANNELS, cpu_numba.MIN_CHUNKS, cpu_numba.CHUNK_BYTES = saved
    taken = "direct" if path == "direct" and tuple(stride) == (1, 1) else "gemm"
    assert cpu_numba.paths[taken] > before.get(taken, 0), f"no call took the {taken} path"
    other = "direct" if taken == "gemm" else "gemm"
    assert cpu_numba.paths[other] == before.get(other, 0), f"a call took the {other} path"


@contextlib.contextmanager
def kernels(name):
    """TINYGEN_KERNELS=name inside the block (hypothesis tests cannot take `monkeypatch`)."""
    saved = os.environ.get("TINYGEN_KERNELS")
    os.environ["TINYGEN_KERNELS"] = name
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TINYGEN_KERNELS"]
        else:
            os.environ["TINYGEN_KERNELS"] = saved


def assert_matches(out, expected, what="output", terms=None):
    """`assert_kernel_output` at its float32 / float64 tolerances (`terms`: see there)."""
    assert_kernel_output(out, expected, what=what, terms=terms)


def assert_like_reference(name, a, b, *args, **kwargs):
    """cpu_numba.NAME(a, b, ...) against reference.NAME(a, b, ...), returned. Every element is a sum
    of products of a's and b's elements, so the reference on |a| and |b| gives the sums of the
    terms' magnitudes, which the error is measured against where terms cancel."""
    out = getattr(cpu_numba, name)(a, b, *args, **kwargs)
    expected = getattr(reference, name)(a, b, *args, **kwargs)
    assert_matches(out, expected, name, terms=getattr(reference, name)(np.abs(a), np.abs(b), *args, **kwargs))
    return out


# --- every kernel against the reference, on both paths -------------------------------------------


@settings(max_examples=60)
@given(data=st.data())
def test_im2col_and_col2im_match_reference(data):
    p, x, _, rng = draw_case(data)
    args = (p["stride"], p["padding"], p["dilation"])
    cols = cpu_numba.im2col(x, p["kernel"], *args)
    assert_matches(cols, reference.im2col(x, p["kernel"], *args))
    v = rng.standard_normal(cols.shape).astype(x.dtype)
    assert_matches(cpu_numba.col2im(v, x.shape, *args), reference.col2im(v, x.shape, *args))


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=60)
@given(data=st.data())
def test_conv2d_kernels_match_reference(path, data):
    p, x, w, rng = draw_case(data)
    args = (p["stride"], p["padding"], p["dilation"])
    with forced_path(path, p["stride"]):
        y = assert_like_reference("conv2d_forward", x, w, *args)
        g = rng.standard_normal(y.shape).astype(x.dtype)
        assert_like_reference("conv2d_backward_input", g, w, x.shape[2:], *args)
        assert_like_reference("conv2d_backward_weight", x, g, p["kernel"], *args)


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=60)
@given(data=st.data())
def test_conv_transpose2d_kernels_match_reference(path, data):
    p, x, w, rng = draw_case(data, transposed=True)
    stride, padding, dilation, output_padding = p["stride"], p["padding"], p["dilation"], p["output_padding"]
    with forced_path(path, stride):
        y = assert_like_reference("conv_transpose2d_forward", x, w, stride, padding, output_padding, dilation)
        g = rng.standard_normal(y.shape).astype(x.dtype)
        assert_like_reference("conv_transpose2d_backward_input", g, w, x.shape[2:], stride, padding, dilation)
        if all(op < s for op, s in zip(output_padding, stride)):  # H follows from the sizes alone
            assert_like_reference("conv_transpose2d_backward_input", g, w, None, stride, padding, dilation)
        assert_like_reference("conv_transpose2d_backward_weight", x, g, p["kernel"], stride, padding, dilation)


@pytest.mark.parametrize("path", PATHS)
def test_larger_layers_match_reference(path):
    """Shapes like the benchmark's, shrunk: many channels, a batch, stride 2 with k4 p1; batches
    of 6 and 7 so that gemm-batched's chunks (4 + 2, 4 + 2 + 1) leave smaller last chunks of
    several samples, for the convolution and the transposed convolution."""
    rng = np.random.default_rng(0)
    for (n, cin, cout, size, k, s, p) in [(4, 1, 8, 28, 3, 1, 1), (3, 16, 24, 14, 3, 1, 1),
                                          (2, 8, 16, 14, 4, 2, 1), (2, 12, 1, 9, 3, 1, 0), (3, 1, 4, 10, 3, 2, 1),
                                          (6, 3, 5, 7, 3, 1, 1), (7, 2, 3, 6, 4, 2, 1)]:
        x = rng.standard_normal((n, cin, size, size)).astype(np.float32)
        w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
        args = ((s, s), (p, p), (1, 1))
        with forced_path(path, (s, s)):
            y = cpu_numba.conv2d_forward(x, w, *args)
            assert_matches(y, reference.conv2d_forward(x, w, *args))
            assert_matches(cpu_numba.conv2d_backward_input(y, w, x.shape[2:], *args),
                           reference.conv2d_backward_input(y, w, x.shape[2:], *args))
            assert_matches(cpu_numba.conv2d_backward_weight(x, y, (k, k), *args),
                           reference.conv2d_backward_weight(x, y, (k, k), *args))
            if n >= 6:  # the same layer transposed: (cout -> cin), on y
                wt = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
                t_args = ((s, s), (p, p), (0, 0), (1, 1))
                z = cpu_numba.conv_transpose2d_forward(y, wt, *t_args)
                assert_matches(z, reference.conv_transpose2d_forward(y, wt, *t_args))
                hw = y.shape[2:]
                assert_matches(cpu_numba.conv_transpose2d_backward_input(z, wt, hw, (s, s), (p, p), (1, 1)),
                               reference.conv_transpose2d_backward_input(z, wt, hw, (s, s), (p, p), (1, 1)))
                assert_matches(cpu_numba.conv_transpose2d_backward_weight(y, z, (k, k), (s, s), (p, p), (1, 1)),
                               reference.conv_transpose2d_backward_weight(y, z, (k, k), (s, s), (p, p), (1, 1)))


def test_poisoned_allocator_is_what_the_kernels_use(poisoned_outputs):
    # The NaN fixture can only catch an unwritten element if the outputs come from it.
    before = len(poisoned_outputs)
    y = cpu_numba.conv2d_forward(np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3)), (1, 1), (1, 1), (1, 1))
    assert len(poisoned_outputs) > before and y.shape in poisoned_outputs
    assert np.isnan(cpu_numba._empty((2,), np.float32)).all()
    assert np.isnan(cpu_numba._scratch("cols", (2,), np.float32)).all()


def test_non_contiguous_and_integer_inputs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 6, 2)).transpose(3, 1, 0, 2)  # (2, 3, 6, 5), a strided view
    w = rng.standard_normal((4, 3, 2, 2))[:, :, ::-1]
    args = ((1, 2), (1, 0), (2, 1))
    assert_matches(cpu_numba.conv2d_forward(x, w, *args), reference.conv2d_forward(x, w, *args))
    xi = np.arange(2 * 3 * 5 * 4).reshape(2, 3, 5, 4)  # unfold accepts integer tensors
    np.testing.assert_array_equal(cpu_numba.im2col(xi, (2, 3), *args), reference.im2col(xi, (2, 3), *args))


def test_chunks_are_powers_of_two_fixed_by_the_shapes():
    assert cpu_numba._chunks(128, 100) == [(n, n + 16) for n in range(0, 128, 16)]  # 8 chunks at least
    assert cpu_numba._chunks(128, cpu_numba.CHUNK_BYTES // 3) == [(n, n + 2) for n in range(0, 128, 2)]
    assert cpu_numba._chunks(5, 100) == [(n, n + 1) for n in range(5)]
    assert cpu_numba._chunks(0, 100) == []


def test_scratch_buffers_are_reused_per_role_and_grown():
    a = SCRATCH("test-role", (3, 4), np.float32)
    b = SCRATCH("test-role", (2, 5), np.float64)
    c = SCRATCH("test-role", (2, 2), np.float32)
    assert (a.shape, a.dtype, b.shape, b.dtype) == ((3, 4), np.float32, (2, 5), np.float64)
    assert not np.shares_memory(a, b)  # grown: a new buffer
    assert np.shares_memory(b, c) and c.flags.c_contiguous  # reused


@pytest.mark.parametrize("path", ["gemm", "direct"])
def test_weight_gradient_does_not_depend_on_the_thread_count(path):
    import numba

    rng = np.random.default_rng(2)
    # gemm: several chunks of the batch; direct: 1 -> 1 channels, the batch cut into chunks
    x_shape, g_shape = ((40, 3, 9, 9), (40, 4, 9, 9)) if path == "gemm" else ((7, 1, 9, 9), (7, 1, 9, 9))
    x, g = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(g_shape).astype(np.float32)
    if path == "gemm":
        assert len(cpu_numba._chunks(40, 81 * (27 + 4) * 4)) > 2
    threads, results = numba.get_num_threads(), []
    try:
        for n in sorted({1, threads}):
            numba.set_num_threads(n)
            with forced_path(path, (1, 1)):
                results.append(cpu_numba.conv2d_backward_weight(x, g, (3, 3), (1, 1), (1, 1), (1, 1)))
    finally:
        numba.set_num_threads(threads)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("shape", [(64, 96, 700), (700, 96, 64), (3, 5, 7)], ids=["wide", "tall", "tiny"])
def test_products_split_over_threads_match_numpy_and_put_blas_threads_back(shape):
    m, k, n = shape
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    blas = cpu_runtime.blas_pool()
    if blas is not None:
        before = blas[1](2)  # OpenBLAS's thread count, now 2 (if it has 2)
        two = blas[1](2) == 2
    out = cpu_runtime.split_matmul(a, b.T.copy().T)  # a column-major b: BLAS reads it transposed
    assert_matches(out, a @ b)
    if blas is not None:
        restored = blas[1](before)
        assert restored == 2 or not two, "the kernel did not put OpenBLAS's thread count back"


@pytest.mark.parametrize("shapes", [((40, 30), (30, 50)), ((30,), (30, 5)), ((2, 3, 4), (4, 5)), ((4,), (4,))])
def test_tinygens_own_products_follow_the_policy_under_numba(monkeypatch, shapes):
    rng = np.random.default_rng(4)
    a, b = (rng.standard_normal(s) for s in shapes)
    split = []
    original = cpu_runtime.split_matmul
    monkeypatch.setattr(cpu_runtime, "split_matmul", lambda *args, **kw: split.append(1) or original(*args, **kw))
    for knob, expect_split in (("numba", a.ndim == b.ndim == 2), ("numpy", False)):
        monkeypatch.setenv("TINYGEN_KERNELS", knob)
        split.clear()
        out = dispatch.matmul(a, b)
        assert_matches(np.asarray(out), np.asarray(a @ b), f"{knob} {shapes}")
        assert bool(split) == (expect_split and cpu_runtime.blas_pool() is not None)
    monkeypatch.setenv("TINYGEN_KERNELS", "numba")
    xt = Tensor(a, requires_grad=True)
    (xt @ Tensor(b)).sum().backward()  # ops.MatMul, forward and backward, through dispatch.matmul
    assert_matches(xt.grad.numpy(), np.broadcast_to(b.sum(axis=-1), a.shape) if b.ndim == 2 else b * np.ones_like(a))


# --- against the reference's gradients through autograd ------------------------------------------


def run_layer(fn, x, w, b, grad_out_seed, magnitudes=False):
    """(y, dx, dw, db) of sum(fn(x, w, b) * r) for a random cotangent r, through tinygen's autograd.

    magnitudes=True runs it on |x|, |w|, |b| and |r|: every output is a sum of products, so this
    gives the sums of their terms' magnitudes (`assert_kernel_output`'s `terms`)."""
    if magnitudes:
        x, w, b = np.abs(x), np.abs(w), np.abs(b)
    xt, wt, bt = (Tensor(a.copy(), requires_grad=True) for a in (x, w, b))
    y = fn(xt, wt, bt)
    r = np.random.default_rng(grad_out_seed).standard_normal(y.shape).astype(x.dtype)
    if magnitudes:
        r = np.abs(r)
    (y * Tensor(r)).sum().backward()
    return y.numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
@settings(max_examples=40)
@given(data=st.data())
def test_autograd_gradients_match_the_numpy_backend(transposed, data):
    p, x, w, rng = draw_case(data, transposed=transposed)
    b = rng.standard_normal(p["Cout"]).astype(x.dtype)
    if transposed:
        def fn(xt, wt, bt):
            return F.conv_transpose2d(xt, wt, bt, stride=p["stride"], padding=p["padding"],
                                      output_padding=p["output_padding"], dilation=p["dilation"])
    else:
        def fn(xt, wt, bt):
            return F.conv2d(xt, wt, bt, stride=p["stride"], padding=p["padding"], dilation=p["dilation"])
    before = sum(n for (module, _), n in conv2d.calls.items() if module == "cpu_numba")
    with kernels("numba"):
        fast = run_layer(fn, x, w, b, 0)
    assert sum(n for (module, _), n in conv2d.calls.items() if module == "cpu_numba") >= before + 3
    with kernels("numpy"):
        slow = run_layer(fn, x, w, b, 0)
        # a one-pixel 1x1 conv's grad w is one dot product, whose terms can cancel (relative error 1.3e-5)
        terms = run_layer(fn, x, w, b, 0, magnitudes=True)
    for name, a, e, t in zip(("y", "grad x", "grad w", "grad b"), fast, slow, terms):
        assert_matches(a, e, name, terms=t)


# --- the dispatcher --------------------------------------------------------------------------------


CONV_ONCE = (np.arange(2 * 3 * 5 * 4.0).reshape(2, 3, 5, 4), np.ones((2, 3, 2, 3)), (2, 1), (1, 1), (1, 2))


def conv_once():
    """One conv2d_forward through the dispatcher."""
    return conv2d.conv2d_forward(*CONV_ONCE)


@pytest.mark.parametrize("knob", ["numba", "auto", None])
def test_dispatcher_runs_numba_when_asked_or_by_default(monkeypatch, knob):
    if knob is None:
        monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    else:
        monkeypatch.setenv("TINYGEN_KERNELS", knob)
    assert conv2d.implementation() is cpu_numba
    before = conv2d.calls["cpu_numba", "conv2d_forward"], conv2d.calls["reference", "conv2d_forward"]
    y = conv_once()
    after = conv2d.calls["cpu_numba", "conv2d_forward"], conv2d.calls["reference", "conv2d_forward"]
    assert after == (before[0] + 1, before[1])
    assert_matches(y, reference.conv2d_forward(*CONV_ONCE))


def test_dispatcher_runs_the_reference_for_numpy(monkeypatch):
    monkeypatch.setenv("TINYGEN_KERNELS", "numpy")
    assert conv2d.implementation() is reference
    before = conv2d.calls["reference", "conv2d_forward"], conv2d.calls["cpu_numba", "conv2d_forward"]
    conv_once()
    after = conv2d.calls["reference", "conv2d_forward"], conv2d.calls["cpu_numba", "conv2d_forward"]
    assert after == (before[0] + 1, before[1])


def test_unfold_takes_integers_and_refuses_float16_naming_it(monkeypatch):
    """F.unfold takes any dtype: integers and bools run on Numba as on the reference; float16 failed
    deep in Numba's compiler (NotImplementedError: float16), now a DTypeError names it."""
    monkeypatch.setenv("TINYGEN_KERNELS", "numba")
    x = np.arange(2 * 3 * 5 * 4).reshape(2, 3, 5, 4)
    np.testing.assert_array_equal(F.unfold(Tensor(x), 2, padding=1).numpy(),
                                  reference.im2col(x, (2, 2), (1, 1), (1, 1), (1, 1)).reshape(2, 12, -1))
    with pytest.raises(DTypeError, match="im2col: the Numba kernels .* got dtype float16"):
        F.unfold(Tensor(x.astype(np.float16)), 2)
    with pytest.raises(DTypeError, match="col2im.*float16"):
        conv2d.col2im(np.ones((1, 1, 2, 2, 3, 3), np.float16), (1, 1, 4, 4), (1, 1), (0, 0), (1, 1))


def test_unknown_backend_raises(monkeypatch):
    monkeypatch.setenv("TINYGEN_KERNELS", "fortran")
    with pytest.raises(BackendUnavailableError, match="fortran"):
        conv_once()


def test_missing_numba_raises_when_asked_and_falls_back_to_numpy_under_auto(monkeypatch):
    monkeypatch.setattr(cpu_runtime, "load_numba", lambda: None)  # as if `import numba` failed
    monkeypatch.setattr(cpu_runtime, "_numba_error", ImportError("No module named 'numba'"))
    monkeypatch.setattr(dispatch, "_chosen", {})  # forget the choices made while Numba was there
    monkeypatch.setenv("TINYGEN_KERNELS", "numba")
    with pytest.raises(BackendUnavailableError, match=r"pip install tinygen\[cpu\]"):
        conv_once()
    info = dispatch.kernel_info()  # reports instead of raising
    assert info["backend"] is None and "pip install tinygen[cpu]" in info["error"]
    monkeypatch.setenv("TINYGEN_KERNELS", "auto")
    assert conv2d.implementation() is reference
    info = dispatch.kernel_info()
    assert info["backend"] == "numpy" and info["numba"] is None and "No module named" in info["numba_error"]


def test_a_family_without_numba_kernels_stays_on_numpy_under_auto(monkeypatch):
    monkeypatch.setenv("TINYGEN_KERNELS", "auto")
    assert dispatch.kernel_backend() == "numpy"  # the default: a family with only the reference
    assert dispatch.kernel_backend(provides=("numpy", "numba")) == "numba"
    monkeypatch.setenv("TINYGEN_KERNELS", "numba")
    assert dispatch.kernel_backend() == "numba"  # named: returned, so that family's dispatcher refuses


def test_kernel_info_names_the_pool(monkeypatch):
    import numba

    monkeypatch.setenv("TINYGEN_KERNELS", "auto")
    info = dispatch.kernel_info()
    assert info["backend"] == "numba" and info["numba"] == numba.__version__
    assert info["threading_layer"] in ("omp", "tbb", "workqueue")
    assert info["threads"] == numba.get_num_threads() >= 1


# --- in a fresh process: lazy import, threading policy -------------------------------------------


def run_python(code, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_importing_tinygen_and_running_numpy_kernels_never_imports_numba():
    code = ("import sys, numpy as np, tinygen\n"
            "assert 'numba' not in sys.modules\n"
            "from tinygen.nn import functional as F\n"
            "F.conv2d(tinygen.randn(1, 2, 5, 5), tinygen.randn(3, 2, 3, 3))\n"
            "assert 'numba' not in sys.modules, 'numba imported under TINYGEN_KERNELS=numpy'\n")
    run_python(code, TINYGEN_KERNELS="numpy")


def test_threading_policy_reaches_the_openmp_pool_and_leaves_the_environment_alone():
    code = ("import ctypes, os\n"
            "from tinygen.kernels import dispatch\n"
            "info = dispatch.kernel_info()\n"
            "assert 'OMP_WAIT_POLICY' not in os.environ, 'the policy leaked into the environment'\n"
            "print(info['threading_layer'])\n"
            "if info['threading_layer'] == 'omp':\n"
            "    ctypes.CDLL('libgomp.so.1').omp_display_env(1)\n")
    done = run_python(code)
    if done.stdout.strip() != "omp":
        pytest.skip(f"Numba runs the {done.stdout.strip()} threading layer here, not GNU OpenMP")
    # GNU OpenMP spins 300,000 times before sleeping unless told otherwise: the policy says sleep.
    assert "GOMP_SPINCOUNT = '0'" in done.stderr, done.stderr


def test_no_kernel_reads_or_writes_out_of_bounds():
    """Every kernel on a grid of geometries, compiled with Numba's bounds checks (a fresh cache)."""
    code = """
import numpy as np
from strategies import conv_grid
from tinygen.kernels.conv2d import cpu_numba as k, reference as r
rng = np.random.default_rng(0)
for transposed in (False, True):
    for p in conv_grid(transposed=transposed):
        for limit in (0, 10**9):  # the gemm path, then the direct path where stride is 1
            k.DIRECT_MAX_CHANNELS = limit
            s, pad, d, op = p["stride"], p["padding"], p["dilation"], p["output_padding"]
            # The smallest input size on either side; one input or output channel (direct paths).
            for cin, cout, hw in ((p["Cin"], p["Cout"], (p["H"], p["W"])), (1, 3, (p["W"], p["H"])),
                                  (3, 1, (p["W"], p["H"]))):
                x = rng.standard_normal((p["N"], cin, *hw))
                if transposed:
                    w = rng.standard_normal((cin, cout, *p["kernel"]))
                    y = k.conv_transpose2d_forward(x, w, s, pad, op, d)
                    assert np.allclose(y, r.conv_transpose2d_forward(x, w, s, pad, op, d))
                    k.conv_transpose2d_backward_input(y, w, x.shape[2:], s, pad, d)
                    k.conv_transpose2d_backward_weight(x, y, p["kernel"], s, pad, d)
                else:
                    w = rng.standard_normal((cout, cin, *p["kernel"]))
                    y = k.conv2d_forward(x, w, s, pad, d)
                    assert np.allclose(y, r.conv2d_forward(x, w, s, pad, d))
                    k.conv2d_backward_input(y, w, x.shape[2:], s, pad, d)
                    k.conv2d_backward_weight(x, y, p["kernel"], s, pad, d)
                    k.col2im(k.im2col(x, p["kernel"], s, pad, d), x.shape, s, pad, d)
print("ok")
"""
    tests_dir = os.path.dirname(os.path.dirname(__file__))  # for strategies.py
    with tempfile.TemporaryDirectory() as cache:
        done = run_python(code, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=cache,
                          PYTHONPATH=os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    assert done.stdout.strip() == "ok"
