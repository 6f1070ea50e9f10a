"""Test configuration shared by every test under tests/: hypothesis profiles, fixtures.

Hypothesis is configured here, once (STYLE.md item 12). Two profiles:
- "dev" (the default): few examples, no deadline (a first Numba call compiles for seconds);
- "ci" (when the CI environment variable is set): hypothesis's default number of examples,
  derandomized so a CI run is reproducible, and printing the blob that replays a failure.
A test that is expensive per example sets `@settings(max_examples=...)` itself; the rest of the
profile (deadline, derandomize) still applies to it.

`helpers.py` (check_op, gradcheck) and `strategies.py` are imported as top-level modules:
pyproject's `pythonpath` puts tests/ on sys.path, so no __init__.py files are needed.

Devices (STYLE.md item 11): the `device` fixture runs a module's tests on ``cpu`` and then on
``cuda`` (a module opts in with ``pytestmark = pytest.mark.usefixtures("device")``): it makes
that device the default one, so every tensor the tests make lands there and the tests need no
change. The ``cuda`` cases are marked ``gpu`` and skip cleanly where no GPU is visible, unless
``TINYGEN_TEST_FAKE_GPU=1`` runs them on the stand-in of `fake_cupy.py` (NumPy arrays with
CuPy's rules; CUDA C compiled for the CPU). The `gpu` fixture gives the CUDA kernels' tests a
CuPy: the real one on a GPU, else that stand-in where a C++ compiler exists, else a skip.

Data: `mnist_idx_dir` is a folder of the four MNIST IDX files made from the subset shipped inside
tinygen (`helpers.write_mnist_idx`), so the tests of reading MNIST from a folder run everywhere
instead of skipping where ../shared/data/mnist is absent. Only the tests of the full files
themselves (their SHA-256 and counts, rebuilding the subset from them, the feature network on all
10,000 test digits) still need that folder.
"""

import contextlib
import importlib
import os

# Before any test module imports torch. With torch imported before Numba's pool starts (the first
# kernel call), the Numba kernels ran about 50 times slower on this project's 2-core machine (a
# GroupNorm forward: 0.6 ms alone, 30-40 ms after `import torch`), and tinygen's own threading
# policy (kernels/cpu_runtime.py), applied when its pool starts, came too late to help; with the
# policy set before torch loads they ran at full speed. tests/models/test_diffusion.py: 75 s
# without this line, 6 s with it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
from hypothesis import settings

import fake_cupy
import helpers
import tinygen
from tinygen import backend
from tinygen.errors import BackendUnavailableError

autograd = importlib.import_module("tinygen.tensor")  # the module (tinygen.tensor is also a function)

settings.register_profile("dev", deadline=None, max_examples=20)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def torch():
    """The torch module; the test is skipped where PyTorch is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture(scope="session")
def mnist_idx_dir(tmp_path_factory):
    """A folder holding the embedded MNIST subset as the four IDX files (as `--data-dir` takes)."""
    return str(helpers.write_mnist_idx(tmp_path_factory.mktemp("mnist_idx")))


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Undo changes a test makes to tinygen's globals (default dtype and device, grad mode)."""
    dtype, device, grad_enabled = tinygen.get_default_dtype(), backend._default_device, autograd._grad_mode.enabled
    yield
    backend.set_default_dtype(dtype)
    backend._default_device = device
    autograd._grad_mode.enabled = grad_enabled


_gpu_reason = []  # cached: [None] where CuPy sees a GPU, else [why not]


def gpu_unavailable():
    """None where CuPy sees a GPU here, else the reason (BackendUnavailableError's message)."""
    if not _gpu_reason:
        try:
            backend.load_cupy()
            _gpu_reason.append(None)
        except BackendUnavailableError as err:
            _gpu_reason.append(str(err))
    return _gpu_reason[0]


def fake_gpu_requested():
    return os.environ.get("TINYGEN_TEST_FAKE_GPU", "") not in ("", "0")


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    """The device a module's tests run on, made the default device for them: "cpu", then "cuda"."""
    if request.param == "cpu":
        yield "cpu"
        return
    with contextlib.ExitStack() as stack:
        if fake_gpu_requested():
            stack.enter_context(fake_cupy.installed())
        elif gpu_unavailable():
            pytest.skip(f"no GPU: {gpu_unavailable()}")
        previous = backend._default_device
        backend.set_default_device("cuda")
        try:
            yield "cuda"
        finally:
            backend._default_device = previous


@pytest.fixture(autouse=True)
def _cpu_only(request):
    """Skip the cuda case of a test marked ``cpu_only`` (it works on NumPy arrays themselves)."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("device") == "cuda" and request.node.get_closest_marker("cpu_only"):
        pytest.skip("CPU only: the test works on NumPy arrays themselves")


@pytest.fixture(scope="module")
def gpu():
    """The cupy module for the CUDA kernels' tests: CuPy on a GPU, else fake_cupy (needs a C++ compiler)."""
    if gpu_unavailable() is None:
        yield backend.load_cupy()
        return
    if fake_cupy.compiler() is None:
        pytest.skip(f"no GPU ({gpu_unavailable()}), and no C++ compiler to run the CUDA kernels on the CPU")
    with fake_cupy.installed() as fake:
        yield fake
