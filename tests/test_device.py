"""Devices: `tinygen.device`, `.to` / `.cpu` / `.cuda`, the default device, the errors, no host round trips.

Runs on any machine: the GPU is the stand-in of tests/fake_cupy.py (the `fake_gpu` fixture),
NumPy arrays with CuPy's rules (mixing them with NumPy arrays raises, implicit copies to the host
raise, copies both ways are counted), so these tests check tinygen's device plumbing itself; the
CUDA kernels run there as CUDA C compiled for the CPU when a C++ compiler exists. What CuPy on a
real GPU does is checked by the ``gpu``-marked tests on a GPU machine (benchmarks/gpu_check.py).
"""

import importlib.util
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import fake_cupy
import tinygen
from tinygen import backend, cli, models, nn, optim
from tinygen.errors import ArgumentError, BackendUnavailableError, DeviceMismatchError


@pytest.fixture
def fake_gpu(monkeypatch):
    """The fake GPU as cupy, transfer counts cleared; the CUDA kernels need a C++ compiler, else
    the NumPy reference kernels run on the fake GPU's arrays."""
    if fake_cupy.compiler() is None:
        monkeypatch.setenv("TINYGEN_KERNELS", "numpy")
    with fake_cupy.installed() as fake:
        fake.transfers.clear()
        yield fake


@pytest.fixture
def no_cupy(monkeypatch):
    """`import cupy` fails, as where CuPy is not installed."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_default_device", None)


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


# --- importing, and asking for a GPU that is not there ----------------------------------------------


def test_importing_and_using_tinygen_on_the_cpu_never_imports_cupy():
    code = (
        "import sys, tinygen\n"
        "from tinygen.nn import functional as F\n"
        "x = tinygen.randn(2, 1, 5, 5, requires_grad=True)\n"
        "F.conv2d(x, tinygen.randn(3, 1, 3, 3)).sum().backward()\n"
        "print(x.device, sorted(m for m in sys.modules if m.split('.')[0] in ('cupy', 'cupyx')))\n"
    )
    result = run_python(code, TINYGEN_DEVICE="cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cpu []"


def test_cuda_without_cupy_says_cupy_is_missing(no_cupy, monkeypatch):
    with pytest.raises(BackendUnavailableError, match=r"needs CuPy, which cannot be imported.*tinygen\[gpu\]"):
        tinygen.zeros(2).to("cuda")
    with pytest.raises(BackendUnavailableError, match="needs CuPy"):
        tinygen.set_default_device("cuda")
    with pytest.raises(BackendUnavailableError, match="needs CuPy"):
        tinygen.zeros(2, device="cuda")
    monkeypatch.setenv("TINYGEN_DEVICE", "cuda")
    monkeypatch.setattr(backend, "_default_device", None)  # read on first use: make this the first
    with pytest.raises(BackendUnavailableError, match="TINYGEN_DEVICE=cuda: device 'cuda' needs CuPy"):
        tinygen.zeros(2)
    assert backend.gpu_info() == ([], backend.gpu_info()[1]) and "needs CuPy" in backend.gpu_info()[1]


@pytest.mark.parametrize("answer", ["false", "raises"])
def test_cuda_without_a_visible_gpu_says_no_gpu_is_visible(no_cupy, monkeypatch, answer):
    stub = types.ModuleType("cupy")
    stub.__version__ = "13.9"

    def is_available():
        if answer == "raises":
            raise RuntimeError("cudaErrorNoDevice")
        return False

    stub.is_available = is_available
    monkeypatch.setitem(sys.modules, "cupy", stub)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(BackendUnavailableError, match=r"CuPy 13\.9 is installed, but no GPU is visible") as err:
        tinygen.ones(3).cuda()
    assert "CUDA_VISIBLE_DEVICES=''" in str(err.value)
    if answer == "raises":
        assert "cudaErrorNoDevice" in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is None, reason="CuPy is not installed")
def test_real_cupy_with_no_visible_gpu_is_refused():
    code = ("import tinygen\n"
            "try:\n    tinygen.zeros(2).to('cuda')\n"
            "except tinygen.BackendUnavailableError as err:\n    print(err)\n")
    result = run_python(code, CUDA_VISIBLE_DEVICES="", TINYGEN_DEVICE="cpu")
    assert result.returncode == 0, result.stderr
    assert "no GPU is visible" in result.stdout and "cupy.is_available() is False" in result.stdout


def test_device_spellings():
    assert str(tinygen.device("cuda:1")) == "cuda:1" and tinygen.device("CUDA").type == "cuda"
    assert tinygen.device("cpu") == "cpu" and tinygen.device("cuda") == "cuda:3" and tinygen.device("cuda:0") != "cuda:1"
    assert tinygen.device("cpu") != "cuda" and tinygen.device(tinygen.device("cuda"), 2).index == 2
    assert len({tinygen.device("cuda:0"), tinygen.device("cuda")}) == 1
    for bad in ("gpu", "cuda:-1", "cuda:x", "cpu:1", 3):
        with pytest.raises(ArgumentError):
            tinygen.device(bad)


def test_tinygen_device_is_read_once_and_checked(monkeypatch):
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("TINYGEN_DEVICE", "tpu")
    with pytest.raises(ArgumentError, match="TINYGEN_DEVICE='tpu'"):
        tinygen.get_default_device()
    monkeypatch.setenv("TINYGEN_DEVICE", "cpu")
    assert tinygen.get_default_device() == "cpu" and tinygen.zeros(1).device == "cpu"


# --- tensors on the (fake) GPU -------------------------------------------------------------------------


def test_to_cpu_cuda_and_gradients_across_devices(fake_gpu):
    x = tinygen.tensor([[1.0, -2.0], [3.0, 4.0]], requires_grad=True)
    assert x.to("cpu") is x and x.cpu() is x
    g = x.to("cuda")
    assert g.device == "cuda:0" and g.is_cuda and not x.is_cuda and not g.is_leaf
    assert g.cuda() is g and g.to(tinygen.device("cuda", 0)) is g
    assert "device='cuda:0'" in repr(g)
    y = (g * g).relu().sum()
    assert y.device == "cuda"
    y.backward()
    assert x.grad.device == "cpu"  # back through the copy, to the leaf's device
    np.testing.assert_array_equal(x.grad.numpy(), [[2.0, -4.0], [6.0, 8.0]])
    both = x.to("cuda", np.float64)
    assert both.device == "cuda" and both.dtype == np.float64
    assert x.to(both).device == "cuda" and x.to(both).dtype == np.float64
    assert g.cpu().device == "cpu" and isinstance(g.numpy(), np.ndarray)


def test_mixing_devices_raises_naming_both(fake_gpu):
    a, b = tinygen.ones(2, 3), tinygen.ones(2, 3, device="cuda")
    for op in (lambda: a + b, lambda: b * a, lambda: b @ a.T, lambda: tinygen.cat([a, b])):
        with pytest.raises(DeviceMismatchError, match=r"\(2, 3\) on cpu.*|\(2, 3\) on cuda:0"):
            op()
    with pytest.raises(DeviceMismatchError, match="cannot assign a tensor on cpu into a tensor on cuda"):
        b[0] = a[0]
    with pytest.raises(DeviceMismatchError, match="index a tensor on cpu with an index array on cuda"):
        a[b.long()]
    # numbers, 0-d CPU tensors and NumPy arrays are constants: they follow the tensor to its device
    assert (b + tinygen.tensor(2.0)).device == "cuda"
    assert (b * np.arange(3.0)).device == "cuda" and (np.float32(2) * b).device == "cuda"


def test_numbers_beside_gpu_tensors_are_not_copied_to_the_gpu(fake_gpu):
    x = tinygen.randn(4, 5, device="cuda", requires_grad=True)
    fake_gpu.transfers.clear()
    y = ((x * 2 + 1) / 3 - 0.5) ** 2
    y.mean().backward()
    assert fake_gpu.transfers["to_device"] == 0 and fake_gpu.transfers["to_host"] == 0


def test_creation_functions_and_the_default_device(fake_gpu):
    for t in (tinygen.zeros(2, device="cuda"), tinygen.ones(2, device="cuda"), tinygen.full(2, 3.0, device="cuda"),
              tinygen.rand(2, device="cuda"), tinygen.arange(3, device="cuda"), tinygen.tensor([1, 2], device="cuda")):
        assert t.device == "cuda"
    tinygen.manual_seed(5)
    on_gpu = tinygen.randn(3, 4, device="cuda").numpy()
    tinygen.manual_seed(5)
    np.testing.assert_array_equal(tinygen.randn(3, 4).numpy(), on_gpu)  # one generator, on every device
    tinygen.set_default_device("cuda")
    cpu = tinygen.zeros(2, device="cpu")
    assert tinygen.zeros(2).device == "cuda" and tinygen.tensor(np.ones(2)).device == "cuda"
    assert nn.Linear(3, 2).weight.device == "cuda"
    assert tinygen.Tensor(cpu).device == "cpu" and cpu.detach().device == "cpu" and (cpu < 1).device == "cpu"
    assert tinygen.zeros_like(cpu).device == "cpu" and tinygen.randn_like(cpu).device == "cpu"
    tinygen.set_default_device("cpu")
    assert tinygen.zeros(2).device == "cpu"


def test_indexing_a_gpu_tensor_with_host_indices(fake_gpu):
    x = tinygen.arange(12.0, device="cuda").reshape(3, 4).to(np.float32)
    x.requires_grad = True
    picked = x[np.array([2, 0, 2]), [1, 1, 3]]
    assert picked.device == "cuda"
    np.testing.assert_array_equal(picked.numpy(), [9.0, 1.0, 11.0])
    picked.sum().backward()
    assert x.grad.device == "cuda" and x.grad.numpy()[2].tolist() == [0.0, 1.0, 0.0, 1.0]
    with tinygen.no_grad():
        x[np.array([0])] = np.full((1, 4), 7.0, np.float32)
    assert x.numpy()[0].tolist() == [7.0] * 4


def test_module_to_moves_parameters_in_place_and_the_optimizer_and_ema_follow(fake_gpu, tmp_path):
    tinygen.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    params = list(model.parameters())
    opt, ema = optim.Adam(model.parameters(), lr=0.1), optim.EMA(model, decay=0.5)
    x = tinygen.randn(8, 3)

    def step(device):
        loss = model(x.to(device)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        return loss.item()

    step("cpu")
    assert model.to("cuda") is model and list(model.parameters()) == params  # the same objects
    assert all(p.device == "cuda" for p in model.parameters()) and model[1].running_mean.device == "cuda"
    step("cuda")
    assert all(backend.is_device_array(v) for s in opt.state.values() for k, v in s.items() if k != "step")
    assert all(backend.is_device_array(v) for v in ema.shadow.values())
    assert all(isinstance(v, np.ndarray) for v in model.state_dict().values())
    tinygen.save({"opt": opt.state_dict(), "ema": ema.state_dict()}, tmp_path / "state.npz")  # GPU arrays saved
    saved = tinygen.load(tmp_path / "state.npz")
    opt.load_state_dict(saved["opt"])
    ema.load_state_dict(saved["ema"])
    assert all(backend.is_device_array(v) for s in opt.state.values() for k, v in s.items() if k != "step")
    model.cpu()
    step("cpu")  # and back
    assert all(isinstance(v, np.ndarray) for s in opt.state.values() for k, v in s.items() if k != "step")
    ema.copy_to(model)
    assert model[0].weight.device == "cpu"


def test_clip_grad_norm_on_the_gpu_waits_once(fake_gpu):
    params = [tinygen.ones(3, device="cuda", requires_grad=True) for _ in range(4)]
    for p in params:
        p.grad = tinygen.full(3, 2.0, device="cuda")
    fake_gpu.transfers.clear()
    total = nn.utils.clip_grad_norm_(params, 1.0)
    assert total == pytest.approx(np.sqrt(12 * 4.0)) and fake_gpu.transfers["to_host"] == 1
    assert np.linalg.norm(np.concatenate([p.grad.numpy() for p in params])) == pytest.approx(1.0, rel=1e-5)


def test_adam_and_ema_update_parameters_split_over_the_cpu_and_the_gpu(fake_gpu):
    """One optimizer group holding a CPU and a GPU parameter: each device's kernels update its own."""
    results = []
    for devices in (("cpu", "cpu"), ("cpu", "cuda")):
        params = [nn.Parameter(tinygen.tensor(np.array([1.0, -2.0], np.float32), device=d)) for d in devices]
        model = nn.Module()
        model.a, model.b = params
        ema = optim.EMA(model, decay=0.5)
        opt = optim.Adam(params, lr=0.1)
        for _ in range(2):
            for p in params:
                p.grad = tinygen.tensor(np.array([0.5, -1.0], np.float32), device=p.device)
            opt.step()
            ema.update(model)
        assert [p.device for p in params] == list(devices)
        results.append([p.numpy() for p in params] + [backend.to_numpy(ema.shadow[n]) for n in ("a", "b")])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=1e-6)


# --- the models: training and sampling make no host round trips -----------------------------------------

SMALL = {"ddpm": dict(T=10, channels=(8, 16), groups=4, batch_size=4), "vae": {}, "convvae": {}, "gan": {}, "dcgan": {}}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_models_train_and_sample_on_the_gpu_without_host_round_trips(fake_gpu, name):
    cls = models.MODELS[name]
    tinygen.manual_seed(0)
    model = cls(cls.Config(**SMALL[name])).to("cuda")
    assert model.device == "cuda"
    images = tinygen.tensor(np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32))  # on the host
    model.train_step(images, np.zeros(4, np.int64))
    fake_gpu.transfers.clear()
    losses = model.train_step(images, np.zeros(4, np.int64))
    # one wait per number returned (loss.item() and the like), nothing else read back
    assert fake_gpu.transfers["to_host"] == len(losses), dict(fake_gpu.transfers)
    fake_gpu.transfers.clear()
    samples = model.sample(3, **({"sampler": "ddpm"} if name == "ddpm" else {}))
    assert isinstance(samples, np.ndarray) and samples.shape == (3, 1, 28, 28) and samples.dtype == np.float32
    assert fake_gpu.transfers["to_host"] == 1, dict(fake_gpu.transfers)  # the samples themselves, at the end
    if name == "ddpm" and fake_cupy.compiler() is not None:
        # per step at most the time embedding and the step's coefficients go to the GPU, never the noise
        assert fake_gpu.transfers["to_device"] <= 2 * SMALL[name]["T"] + 1


# --- the command line ---------------------------------------------------------------------------------------


def test_info_lists_the_gpus(fake_gpu, capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "gpu cuda:0: fake GPU (NumPy on the CPU)" in out and "default device: cpu" in out


def test_info_says_why_there_is_no_gpu(no_cupy, capsys):
    assert cli.main(["info"]) == 0
    assert "gpu: none: device 'cuda' needs CuPy" in capsys.readouterr().out


def test_train_on_a_missing_gpu_is_a_clear_error(no_cupy, tmp_path, capsys):
    assert cli.main(["train", "vae", "--steps", "2", "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    assert "tinygen: error: device 'cuda' needs CuPy" in capsys.readouterr().err


def test_train_on_the_gpu_and_resume_on_the_cpu(fake_gpu, tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "vae", "--out", out, "--checkpoint-every", "2", "--sample-every", "100"]
    assert cli.main([*args, "--steps", "2", "--device", "cuda", "--batch-size", "8"]) == 0
    assert cli.main([*args[:4], "--steps", "3", "--resume", "--device", "cpu"]) == 0
    model, run, step = tinygen.trainer.load_checkpoint(os.path.join(out, "checkpoint.npz"), device="cuda")
    assert step == 3 and model.device == "cuda"
    assert cli.main(["sample", "--checkpoint", os.path.join(out, "checkpoint.npz"), "--n", "4", "--device", "cuda",
                     "--out", str(tmp_path / "grid.png")]) == 0
    capsys.readouterr()
