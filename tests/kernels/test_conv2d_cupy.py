"""The CUDA conv kernels (kernels/conv2d/gpu_cupy.py + conv2d.cu) against the NumPy reference, and the dispatch.

Every test takes the `gpu` fixture (tests/conftest.py): CuPy on a GPU; where there is none, the
stand-in of tests/fake_cupy.py, which runs the same CUDA C compiled for the CPU as a small
emulated grid (so the kernels' indexing and grid-stride coverage are checked on any machine with
a C++ compiler, and two threads storing different values to one element fail the launch; their
speed only on a GPU, by benchmarks/gpu_check.py, which also runs these tests under
compute-sanitizer's memcheck for out-of-bounds accesses, which the emulation does not see). The
oracles:
- the NumPy reference, function by function, on hypothesis-drawn shapes, strides, paddings,
  dilations, output paddings, float32 and float64, and odd sizes that divide no block size;
- the reference's gradients through autograd: `F.conv2d` / `F.conv_transpose2d` forward and
  backward on the GPU against the same on the CPU.

Poisoned outputs: every buffer gpu_cupy writes comes from its `_empty`; the module fixture below
swaps it for an allocator that fills the buffer with NaN, so an element a kernel forgets to
write is NaN and fails the comparison.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fake_cupy
from helpers import assert_kernel_output, poisoned_allocator
from strategies import conv_case as draw_case
from tinygen import backend
from tinygen.errors import BackendUnavailableError, DeviceMismatchError, DTypeError
from tinygen.kernels import conv2d
from tinygen.kernels.conv2d import gpu_cupy, reference
from tinygen.nn import functional as F
from tinygen.tensor import Tensor

pytestmark = pytest.mark.gpu

# The MNIST layers of the benchmark (batch cut to 4 here: the shapes' arithmetic is what matters):
# (N, Cin, Cout, size, kernel, stride, padding)
MNIST_LAYERS = {"c1": (4, 1, 32, 28, 3, 1, 1), "c2": (4, 32, 64, 14, 3, 1, 1), "c3": (4, 64, 64, 7, 3, 1, 1),
                "c4": (4, 64, 128, 14, 4, 2, 1), "c6": (2, 64, 64, 32, 3, 1, 1)}


@pytest.fixture(autouse=True, scope="module")
def poisoned_outputs(gpu):
    """gpu_cupy's allocator replaced by one that fills every new buffer with NaN (counted)."""
    with poisoned_allocator(gpu_cupy, gpu.empty) as allocated:
        yield allocated


def assert_matches(out, expected, what="output", terms=None):
    """A GPU array against a NumPy one: `assert_kernel_output` on its copy on the host."""
    assert backend.is_device_array(out), f"{what}: a {type(out).__name__}, not a GPU array"
    assert_kernel_output(out.get(), expected, what=what, terms=terms)


def assert_like_reference(gpu, name, a, b, *args, **kwargs):
    """gpu_cupy.NAME on a and b copied to the GPU against reference.NAME(a, b, ...); returns the
    reference's. Every element is a sum of products of a's and b's elements, so the reference on
    |a| and |b| gives the sums of the terms' magnitudes, which the error is measured against
    where terms cancel."""
    out = getattr(gpu_cupy, name)(gpu.asarray(a), gpu.asarray(b), *args, **kwargs)
    expected = getattr(reference, name)(a, b, *args, **kwargs)
    assert_matches(out, expected, name, terms=getattr(reference, name)(np.abs(a), np.abs(b), *args, **kwargs))
    return expected


# --- every kernel against the reference ---------------------------------------------------------


@settings(max_examples=40)
@given(data=st.data())
def test_im2col_and_col2im_match_reference(gpu, data):
    p, x, _, rng = draw_case(data)
    args = (p["stride"], p["padding"], p["dilation"])
    cols = gpu_cupy.im2col(gpu.asarray(x), p["kernel"], *args)
    assert_matches(cols, reference.im2col(x, p["kernel"], *args), "im2col")
    v = rng.standard_normal(cols.shape).astype(x.dtype)
    assert_matches(gpu_cupy.col2im(gpu.asarray(v), x.shape, *args), reference.col2im(v, x.shape, *args), "col2im")


@settings(max_examples=40)
@given(data=st.data())
def test_conv2d_kernels_match_reference(gpu, data):
    p, x, w, rng = draw_case(data)
    args = (p["stride"], p["padding"], p["dilation"])
    expected = assert_like_reference(gpu, "conv2d_forward", x, w, *args)
    g = rng.standard_normal(expected.shape).astype(x.dtype)
    assert_like_reference(gpu, "conv2d_backward_input", g, w, x.shape[2:], *args)
    assert_like_reference(gpu, "conv2d_backward_weight", x, g, p["kernel"], *args)


@settings(max_examples=40)
@given(data=st.data())
def test_conv_transpose2d_kernels_match_reference(gpu, data):
    p, x, w, rng = draw_case(data, transposed=True)
    stride, padding, dilation, output_padding = p["stride"], p["padding"], p["dilation"], p["output_padding"]
    expected = assert_like_reference(gpu, "conv_transpose2d_forward", x, w, stride, padding, output_padding, dilation)
    g = rng.standard_normal(expected.shape).astype(x.dtype)
    assert_like_reference(gpu, "conv_transpose2d_backward_input", g, w, x.shape[2:], stride, padding,
                          dilation)
    assert_like_reference(gpu, "conv_transpose2d_backward_weight", x, g, p["kernel"], stride, padding, dilation)


@pytest.mark.parametrize("layer", sorted(MNIST_LAYERS))
def test_mnist_layers_match_reference(gpu, layer):
    n, cin, cout, size, k, s, p = MNIST_LAYERS[layer]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, cin, size, size)).astype(np.float32)
    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    args = ((s, s), (p, p), (1, 1))
    y = reference.conv2d_forward(x, w, *args)
    assert_matches(gpu_cupy.conv2d_forward(gpu.asarray(x), gpu.asarray(w), *args), y, "forward")
    assert_matches(gpu_cupy.conv2d_backward_input(gpu.asarray(y), gpu.asarray(w), x.shape[2:], *args),
                   reference.conv2d_backward_input(y, w, x.shape[2:], *args), "backward input")
    assert_matches(gpu_cupy.conv2d_backward_weight(gpu.asarray(x), gpu.asarray(y), (k, k), *args),
                   reference.conv2d_backward_weight(x, y, (k, k), *args), "backward weight")


def test_poisoned_allocator_is_what_the_kernels_use(gpu, poisoned_outputs):
    # The NaN fixture can only catch an unwritten element if the outputs come from it.
    before = len(poisoned_outputs)
    y = gpu_cupy.conv2d_forward(gpu.ones((1, 2, 4, 4)), gpu.ones((3, 2, 3, 3)), (1, 1), (1, 1), (1, 1))
    assert len(poisoned_outputs) > before and tuple(y.shape) in poisoned_outputs
    assert bool(gpu.isnan(gpu_cupy._empty((2,), np.float32)).all())


def test_non_contiguous_inputs(gpu):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 6, 2))
    w = rng.standard_normal((4, 3, 2, 2))
    args = ((1, 2), (1, 0), (2, 1))
    xg = gpu.asarray(x).transpose(3, 1, 0, 2)  # (2, 3, 6, 5), a strided view
    wg = gpu.asarray(w)[:, :, ::-1]
    expected = reference.conv2d_forward(x.transpose(3, 1, 0, 2), w[:, :, ::-1], *args)
    assert_matches(gpu_cupy.conv2d_forward(xg, wg, *args), expected)


# --- through autograd: the GPU against the CPU ---------------------------------------------------


@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
@settings(max_examples=25)
@given(data=st.data())
def test_autograd_on_the_gpu_matches_the_cpu(gpu, transposed, data):
    p, x, w, rng = draw_case(data, transposed)
    b = rng.standard_normal(w.shape[1] if transposed else w.shape[0]).astype(x.dtype)
    kwargs = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"])
    if transposed:
        kwargs["output_padding"] = p["output_padding"]
    fn = F.conv_transpose2d if transposed else F.conv2d

    def run(device, magnitudes=False):
        """[y, grad x, grad w, grad b]; magnitudes=True: on |x|, |w|, |b| with |g|, the sums of
        the terms' magnitudes (each output is a sum of products)."""
        f = np.abs if magnitudes else np.asarray
        leaves = [Tensor(f(a).copy(), requires_grad=True, device=device) for a in (x, w, b)]
        y = fn(*leaves, **kwargs)
        y.backward(f(np.random.default_rng(7).standard_normal(y.shape).astype(y.dtype)))
        assert y.device == device and all(t.grad.device == device for t in leaves)
        return [y.data] + [t.grad.data for t in leaves]

    names = ("y", "grad x", "grad w", "grad b")
    for name, gpu_value, cpu_value, terms in zip(names, run("cuda"), run("cpu"), run("cpu", magnitudes=True)):
        assert_matches(gpu_value, cpu_value, name, terms=terms)


# --- dispatch ---------------------------------------------------------------------------------------


def test_dispatcher_runs_the_cuda_kernels_on_gpu_arrays(gpu, monkeypatch):
    x, w = gpu.ones((1, 2, 5, 5), np.float32), gpu.ones((3, 2, 3, 3), np.float32)
    for knob in ("auto", "cupy", None):
        if knob is None:
            monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
        else:
            monkeypatch.setenv("TINYGEN_KERNELS", knob)
        before = conv2d.calls["gpu_cupy", "conv2d_forward"]
        assert conv2d.implementation(gpu) is gpu_cupy
        y = conv2d.conv2d_forward(x, w, (1, 1), (0, 0), (1, 1))
        assert conv2d.calls["gpu_cupy", "conv2d_forward"] == before + 1 and backend.is_device_array(y)


def test_dispatcher_runs_the_reference_on_gpu_arrays_for_numpy(gpu, monkeypatch):
    monkeypatch.setenv("TINYGEN_KERNELS", "numpy")
    x, w = np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32)
    before = conv2d.calls["reference", "conv2d_forward"]
    y = conv2d.conv2d_forward(gpu.asarray(x), gpu.asarray(w), (1, 1), (0, 0), (1, 1))
    assert conv2d.calls["reference", "conv2d_forward"] == before + 1
    assert_matches(y, reference.conv2d_forward(x, w, (1, 1), (0, 0), (1, 1)))


def test_dispatcher_refuses_numba_on_gpu_arrays_and_cupy_on_cpu_arrays(gpu, monkeypatch):
    monkeypatch.setenv("TINYGEN_KERNELS", "numba")
    with pytest.raises(BackendUnavailableError, match="numba runs CPU kernels.*GPU"):
        conv2d.conv2d_forward(gpu.ones((1, 1, 3, 3)), gpu.ones((1, 1, 3, 3)), (1, 1), (0, 0), (1, 1))
    monkeypatch.setenv("TINYGEN_KERNELS", "cupy")
    with pytest.raises(BackendUnavailableError, match="cupy runs CUDA kernels on CuPy arrays.*NumPy"):
        conv2d.conv2d_forward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3)), (1, 1), (0, 0), (1, 1))


def test_dispatcher_refuses_arrays_on_two_devices(gpu):
    with pytest.raises(DeviceMismatchError, match=r"conv2d_forward.*cuda.*cpu"):
        conv2d.conv2d_forward(gpu.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3)), (1, 1), (0, 0), (1, 1))


def test_dtypes_without_cuda_kernels_are_refused_naming_them(gpu, monkeypatch):
    """unfold takes any dtype (F.unfold checks floating=False), and Tensor.relu sends float16 to the
    kernels: the .cu files hold float32 and float64 only, and the lookup failed with a bare
    KeyError: dtype('int64'); now a DTypeError names the kernel and the dtype."""
    monkeypatch.delenv("TINYGEN_KERNELS", raising=False)
    with pytest.raises(DTypeError, match="im2col: the CUDA kernels .* got dtype int64"):
        F.unfold(Tensor(gpu.ones((1, 1, 4, 4), np.int64)), 2)
    with pytest.raises(DTypeError, match="relu_forward: the CUDA kernels .* got dtype float16"):
        Tensor(gpu.ones((3,), np.float16)).relu()
    with pytest.raises(DTypeError, match="col2im.*float16"):
        conv2d.col2im(gpu.ones((1, 1, 2, 2, 3, 3), np.float16), (1, 1, 4, 4), (1, 1), (0, 0), (1, 1))


# One emulated thread of the 32-bit im2col, with an H100's grid stride (132 SMs x 32 blocks x 256
# threads), on total = N C kh kw Ho Wo = 2^32 - 2^12 < 2^32, so gpu_cupy picks the i32 kernel: the
# thread whose last element is total - 1 must stop there. Run in a child process (a thread that
# wraps never returns) over a sparse 16 GB mapping for cols, of which it touches a few pages.
WRAP_SCRIPT = """
import ctypes, mmap, sys
import numpy as np
import fake_cupy
from tinygen.kernels.conv2d import gpu_cupy
module = fake_cupy.RawModule(code=open(gpu_cupy.SOURCE).read(), options=("--std=c++17",))
kh = kw = 64
Ho, Wo = 1023, 1025
H, W = Ho + kh - 1, Wo + kw - 1
total = kh * kw * Ho * Wo
with fake_cupy.installed():
    assert total == 2**32 - 2**12 and gpu_cupy._kernel("im2col", np.float32, total)[1] is np.uint32
x = np.ones((H, W), np.float32)
try:
    cols = np.frombuffer(mmap.mmap(-1, total * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                                   | getattr(mmap, "MAP_NORESERVE", 0x4000)), np.float32)
except (OSError, ValueError, OverflowError) as err:
    sys.exit(f"SKIP: no 16 GB sparse mapping here ({err})")
block, grid = 256, 132 * 32
tid = (total - 1) % (grid * block)
module._set(tid // block, tid % block, grid, block)
function = module._lib.im2col_f32_i32
function.restype = None
function(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(cols.ctypes.data),
         *(ctypes.c_uint(v) for v in (1, 1, H, W, kh, kw, 1, 1, 0, 0, 1, 1, Ho, Wo)), ctypes.c_int(0))
assert cols[total - 1] == 1 and cols[tid] == 1, "the thread's first and last elements"
"""


@pytest.mark.skipif(fake_cupy.compiler() is None, reason="no C++ compiler to run the CUDA C on the CPU")
def test_32bit_grid_stride_loop_stops_instead_of_wrapping_past_2_to_the_32():
    """t += stride in unsigned 32 bits passed 2^32 and wrapped to an index below total: on an H100,
    an im2col with total in [2^32 - 1,081,344, 2^32) never finished (the emulated thread ran for ever)."""
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    try:
        result = subprocess.run([sys.executable, "-c", WRAP_SCRIPT], capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("the 32-bit im2col thread was still looping after 60 s: its index wrapped past 2^32")
    if result.returncode != 0 and "SKIP:" in result.stderr:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr


def test_cuda_sources_ship_beside_the_wrappers():
    assert os.path.isfile(gpu_cupy.SOURCE) and gpu_cupy.SOURCE.endswith("conv2d.cu")
