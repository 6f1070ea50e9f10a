"""The models and the command line on a real GPU: forwards agree with the CPU, training and sampling run.

`test_device.py` checks the device plumbing (no host round trips, moves, errors) on the stand-in
of `fake_cupy.py`, on any machine. What only a real CuPy can show is checked here: cuBLAS, the
CUDA kernels and CuPy's own kernels give the CPU's numbers through whole networks, and every
family trains, samples and is evaluated on the GPU. Every test here is marked ``gpu`` and skips
where CuPy sees no GPU (CI has none), unless ``TINYGEN_TEST_FAKE_GPU=1`` runs them on the stand-in;
benchmarks/gpu_check.py runs them on a GPU machine.
"""

import json
import os

import numpy as np
import pytest

import tinygen
import fake_cupy
from tinygen import backend, cli, models, trainer
from tinygen.errors import BackendUnavailableError

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _gpu():
    """CuPy on a GPU; the stand-in of fake_cupy.py when TINYGEN_TEST_FAKE_GPU=1 (as conftest's device fixture)."""
    if os.environ.get("TINYGEN_TEST_FAKE_GPU", "") not in ("", "0"):
        with fake_cupy.installed():
            yield
        return
    try:
        backend.load_cupy()
    except BackendUnavailableError as err:
        pytest.skip(f"no GPU: {err}")
    yield


SMALL = {"ddpm": dict(T=20, channels=(8, 16), groups=4, batch_size=8), "vae": {}, "convvae": {}, "gan": {}, "dcgan": {}}


def networks(model):
    """The model's networks (nn.Module), by the attribute names the families use."""
    return [getattr(model, name) for name in ("net", "generator", "discriminator") if hasattr(model, name)]


def forward(model, x, rng):
    """A deterministic forward pass through every network of `model` (eval mode, no dropout)."""
    for net in networks(model):
        net.eval()
    with tinygen.no_grad():
        if isinstance(model, models.DDPM):
            t = rng.integers(0, model.config.T, size=x.shape[0])
            return [model.net(tinygen.tensor(2 * x - 1, device=model.device), t)]
        if isinstance(model, models.gan.GAN):
            z = rng.standard_normal((x.shape[0], model.config.latent_dim), dtype=np.float32)
            return [model.generator(tinygen.tensor(z, device=model.device)),
                    model.discriminator(tinygen.tensor(x, device=model.device))]
        mu, logvar = model.encode(tinygen.tensor(x, device=model.device))
        return [mu, logvar, model.decode(mu)]


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_on_the_gpu_matches_the_cpu(name):
    cls = models.MODELS[name]
    tinygen.manual_seed(0)
    on_cpu = cls(cls.Config(**SMALL[name]))
    on_gpu = cls(cls.Config(**SMALL[name]))
    on_gpu.load_state_dict(on_cpu.state_dict())
    on_gpu.to("cuda")
    x = np.random.default_rng(1).random((16, 1, 28, 28), dtype=np.float32)
    ours = forward(on_gpu, x, np.random.default_rng(2))
    theirs = forward(on_cpu, x, np.random.default_rng(2))
    for got, want in zip(ours, theirs):
        assert got.device == "cuda"
        assert relative_error(got.numpy(), want.numpy()) < 1e-5


@pytest.mark.parametrize("name", sorted(SMALL))
def test_training_on_the_gpu_follows_the_cpu_and_samples(name):
    """A few steps from the same weights and seed on both devices: the losses agree (the same
    noise is drawn on both: tinygen's generator is on the host, the diffusion noise is Philox in
    both kernels), and sampling on the GPU gives finite images in [0, 1]."""
    cls = models.MODELS[name]
    images = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    losses = {}
    for device in ("cpu", "cuda"):
        tinygen.manual_seed(0)
        model = cls(cls.Config(**SMALL[name])).to(device)
        losses[device] = [model.train_step(images, np.zeros(8, np.int64)) for _ in range(3)]
    for cpu_step, gpu_step in zip(losses["cpu"], losses["cuda"]):
        for key in cpu_step:
            assert np.isfinite(gpu_step[key])
            assert gpu_step[key] == pytest.approx(cpu_step[key], rel=1e-3, abs=1e-4), key
    tinygen.manual_seed(0)
    samples = model.sample(5, **({"sampler": "ddpm"} if name == "ddpm" else {}))
    assert isinstance(samples, np.ndarray) and samples.shape == (5, 1, 28, 28) and samples.dtype == np.float32
    assert np.isfinite(samples).all() and samples.min() >= 0 and samples.max() <= 1


def test_ddim_and_guided_sampling_on_the_gpu():
    tinygen.manual_seed(0)
    model = models.DDPM(models.DDPM.Config(T=20, channels=(8, 16), groups=4, num_classes=10)).to("cuda")
    model.train_step(np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32), np.arange(4))
    for options in (dict(sampler="ddim", steps=5), dict(sampler="ddim", steps=5, eta=1.0),
                    dict(sampler="ddpm", labels=np.arange(3), guidance=2.0)):
        samples = model.sample(3, **options)
        assert samples.shape == (3, 1, 28, 28) and np.isfinite(samples).all(), options


def test_the_commands_on_the_gpu(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["train", "vae", "--steps", "3", "--device", "cuda", "--out", out, "--checkpoint-every", "2",
                     "--sample-every", "100", "--batch-size", "16"]) == 0
    checkpoint = os.path.join(out, "checkpoint.npz")
    model, run, step = trainer.load_checkpoint(checkpoint, device="cuda")
    assert step == 3 and model.device == "cuda"
    assert cli.main(["sample", "--checkpoint", checkpoint, "--n", "4", "--device", "cuda",
                     "--out", str(tmp_path / "grid.png"), "--npz", str(tmp_path / "s.npz")]) == 0
    assert cli.main(["eval", "--checkpoint", checkpoint, "--n", "200", "--device", "cuda", "--likelihood-n", "20",
                     "--iwae-k", "5", "--json", str(tmp_path / "eval.json")]) == 0
    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    assert "gpu cuda:0:" in text and os.path.getsize(tmp_path / "eval.json") > 0


def test_likelihood_bounds_run_their_networks_on_the_gpu():
    """The VAE's ELBO and IWAE bound and the DDPM's bits/dim with the model on the GPU: the networks
    run there, the float64 math on the host, and the numbers are the CPU's to float32 rounding."""
    from tinygen.evaluation import likelihood

    images = np.random.default_rng(0).random((6, 1, 28, 28))
    x = likelihood.binarize(images, seed=0)
    for name, bound in (("vae", lambda m: likelihood.vae_elbo(m, x, seed=1)),
                        ("convvae", lambda m: likelihood.vae_iwae(m, x, K=8, seed=1)),
                        ("ddpm", lambda m: likelihood.ddpm_bits_per_dim(m, (images * 255).astype(np.uint8), seed=1))):
        cls = models.MODELS[name]
        tinygen.manual_seed(0)
        on_cpu = cls(cls.Config(**SMALL[name]))
        on_gpu = cls(cls.Config(**SMALL[name]))
        on_gpu.load_state_dict(on_cpu.state_dict())
        on_gpu.to("cuda")
        got, want = bound(on_gpu), bound(on_cpu)
        assert on_gpu.device == "cuda" and np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-4, err_msg=name)


def test_the_quality_benchmark_trains_and_samples_on_the_gpu(tmp_path, capsys):
    from benchmarks import quality

    out = tmp_path / "results.json"
    argv = ["--models", "vae", "--device", "cuda", "--steps-scale", "0.0002", "--n", "20", "--data-dir", "",
            "--likelihood-n", "5", "--iwae-k", "3", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    assert quality.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["device"].startswith("cuda:0") and "device of tinygen's models: cuda:0" in capsys.readouterr().out
    rows = {row["model"]: row for row in report["rows"]}
    assert np.isfinite(rows["vae"]["metrics"]["fd"]) and rows["vae"]["likelihood"]["test_elbo_nats"]["n"] == 5
