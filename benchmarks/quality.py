"""Sample quality of every model family after its documented training budget, in one table.

    python -m benchmarks.quality                                    # all five models, n = 10,000
    python -m benchmarks.quality --models vae,ddpm --ddpm-samplers ddim20 --torch
    python -m benchmarks.quality --models ddpm --ddpm-samplers ddpm,dpmpp10,dpmpp20,ddim20,ddim100  # every sampler
    python -m benchmarks.quality --steps-scale 0.002 --n 200 --runs /tmp/q   # a smoke test
    python -m benchmarks.quality --models ddpm --device cuda --batch-size 2000  # train and sample on a GPU
    python -m benchmarks.quality --data emoji --models convvae,dcgan --steps dcgan=2000 --torch
    python -m benchmarks.quality --data emoji --models ddpm --conditional --guidance 1 --steps ddpm=3000 \
        --run ddpm=runs/ddpm-emoji --ddpm-samplers ddim50 --torch     # score a finished `tinygen train` run

For each model of --models:

1. Training: `tinygen.trainer.train(name, RUNS/name)` with the model's default budget, exactly
   `tinygen train NAME` (seed 0, the embedded subset; `--train-data mnist`: `tinygen train NAME
   --data mnist --data-dir DIR`, all 60,000 training images; `--data NAME`: `tinygen train MODEL
   --data NAME [--data-dir DIR --image-size S --channels C --conditional]` on any dataset of
   `tinygen.data.DATASETS`, whose images decide the model's shape and the settings they imply,
   `trainer.data_settings`). `--steps MODEL=N` changes a model's budget. A folder that already
   holds the finished run (its checkpoint at the final step) is reused, an unfinished one
   resumed; one holding any other run is refused. `--run MODEL=FOLDER` names a run folder of your
   own (`tinygen train ... --out FOLDER`): it must hold a run of that model on the same data; its
   settings are taken as they are (the table notes those that differ from a fresh run's), its
   budget unless --steps says otherwise, and its samples and twin go to RUNS/MODEL, not into it.
   The training time is the `elapsed_s` of the run's last metrics line:
   the training loop's wall time summed over resumed invocations, with the checkpoints and
   sample grids written along the way (not the final ones, written after the last update). A
   run whose metrics predate that field has an unknown training time, and the table says so.
   `--device cuda` trains (and samples) on a GPU: the same budget and seeds as on the CPU.
   `--steps-scale f` shrinks every budget to f x steps (smoke tests; the runs go to
   RUNS/NAME-STEPSsteps, write only their final sample grid, and the table labels the budget).
2. Sampling: n images in batches with `tinygen.evaluation.sample_in_batches`, as `tinygen eval
   --checkpoint` draws them: GANs with their batch norm in eval mode (the MLP GAN from the
   average of its weights, `GAN.sample`), VAEs' decoder means (sigmoid(f(z)), or the discretised
   logistic's locations) at z from their prior, the DDPM from its EMA weights with every sampler of --ddpm-samplers (`ddpm`: ancestral
   over all T = 1000 steps; `ddimS`: DDIM with S steps, eta = 0; `dpmppS`: DPM-Solver++(2M) with
   S steps, its timesteps even in log-SNR, `DDPM.dpmpp_timesteps`). The samples are saved in
   RUNS/NAME/quality/ with the seconds they took, beside a PNG grid of the first 100, and reused
   by a run that would draw the same ones in the same time: the same checkpoint step, sampler,
   n, seed, --batch-size (it orders the random draws), device, machine and kernels.
   A class-conditional DDPM (--conditional) samples n labels drawn with the seed from its training
   images' labels (so the classes come in the data's proportions), guided by --guidance.
3. Evaluation: `tinygen.evaluation` (the protocol of `tinygen eval`): FD, KID, precision, recall,
   coverage, class histogram, nearest-training-image distance against the reference (the MNIST
   files of --data-dir: the 10,000 test and 60,000 training images; for --data NAME its held-out
   images in its feature network, the shipped one or --feature-net, at its protocol n), likelihood
   bounds for the VAEs and the DDPM, and the floor: the same metrics for n real training images.
4. With --torch (where PyTorch is installed): the model's PyTorch twin (`benchmarks.torch_twins`,
   the same networks from the same initial weights, built from the tinygen run's saved config) is
   trained with the same budget, optimizer and learning rate on the same images in the same order
   (and labels), in a fresh process, and samples n images the same way (`twin.sample`); the
   samples are saved as .npz and evaluated by the same tinygen code, and its trained weights are
   loaded into the tinygen model for the likelihoods.

The Markdown table goes to stdout, every value (with n, the seeds, the feature network's SHA-256
and the machine) to the JSON of --out, rewritten after every row.

NOTE: the twin runs in a spawned process, as in `benchmarks.train_step`: torch's OpenMP threads
and tinygen's Numba kernels must not share a process (whichever runtime loads first sets the
other's wait policy, and the loser runs several times slower). This process never imports torch.
That process sets OMP_WAIT_POLICY=PASSIVE unless the environment sets it (tinygen's Numba pool
waits passively too): with torch's default spinning waits and another job on this 2-core machine,
the VAE twin's 120 smoke-test steps took 43 s on 2 threads instead of 1 s.
NOTE: the twin's training time is its loop alone; tinygen's includes writing checkpoints and the
64-image sample grids of `tinygen train` (one every tenth of the run).
NOTE: the cost on a 2-core CPU is dominated by the DDPM: every sampling step is one UNet call per
image, so 10,000 images take 10,000 x 1000 calls with the ancestral sampler, 100 and 20 times
fewer with DDIM 100 and 20, 50 and 100 times fewer with DPM-Solver++ 20 and 10 (see the README
for the measured rates).
"""

import argparse
import dataclasses
import importlib.util
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from benchmarks import machine
from tinygen import backend, evaluation, image, models, optim, trainer
from tinygen.data import DATASETS, DataLoader, load_dataset
from tinygen.errors import TinygenError
from tinygen.evaluation import PROTOCOL_N
from tinygen.kernels import cpu_runtime
from tinygen.serialization import load, save

SEED = 0  # the training seed of `tinygen train` (and of the twins' initial weights and data order)
GAN_SAMPLER = "G(z), batch norm in eval mode (running statistics)"
GAN_EMA_SAMPLER = "G(z) with the EMA of G's weights (decay {decay:g}), batch norm recomputed for them, eval mode"
VAE_SAMPLER = "decoder means sigmoid(f(z)), z ~ {prior}"
VAE_LOGISTIC_SAMPLER = "decoder means (the logistic's locations, clipped to [0, 1]), z ~ {prior}"
MNIST_DATA = ("embedded", "mnist")


# --- what to run -------------------------------------------------------------------------------


def parse_samplers(text, T=1000):
    """"ddpm,ddim100,dpmpp20" -> [(label, sample() options)]: ancestral over all T steps, DDIM S steps
    with eta 0, or DPM-Solver++(2M) S steps.

    >>> parse_samplers("ddpm,ddim20,dpmpp10")  # doctest: +NORMALIZE_WHITESPACE
    [('ddpm', {'sampler': 'ddpm'}), ('ddim20', {'sampler': 'ddim', 'steps': 20, 'eta': 0.0}),
     ('dpmpp10', {'sampler': 'dpmpp', 'steps': 10})]
    """
    samplers = []
    for label in (part.strip() for part in text.split(",")):
        if label == "ddpm":
            samplers.append((label, {"sampler": "ddpm"}))
        elif label.startswith("ddim") and label[4:].isdigit() and 1 <= int(label[4:]) <= T:
            samplers.append((label, {"sampler": "ddim", "steps": int(label[4:]), "eta": 0.0}))
        elif label.startswith("dpmpp") and label[5:].isdigit() and 1 <= int(label[5:]) <= T:
            samplers.append((label, {"sampler": "dpmpp", "steps": int(label[5:])}))
        else:
            raise ValueError(f"unknown DDPM sampler {label!r}: use ddpm (ancestral, all {T} steps), ddimS (DDIM) "
                             f"or dpmppS (DPM-Solver++(2M)), S in 1..{T}")
    if not samplers:
        raise ValueError("--ddpm-samplers names no sampler")
    return samplers


def describe_sampler(name, options, config=None):
    """How the model `name` with `config` (default: its default Config) draws samples with `options`."""
    config = models.MODELS[name].Config() if config is None else config
    if name in ("gan", "dcgan"):
        decay = config.ema_decay
        return GAN_SAMPLER if decay is None else GAN_EMA_SAMPLER.format(decay=decay)
    if name in ("vae", "convvae"):
        prior = "N(0, I)" if config.prior == "standard" else f"the VampPrior (K = {config.pseudo_inputs})"
        return (VAE_SAMPLER if config.likelihood == "bernoulli" else VAE_LOGISTIC_SAMPLER).format(prior=prior)
    if options["sampler"] == "ddpm":
        text = "ancestral (Algorithm 2), all T steps"
    elif options["sampler"] == "ddim":
        text = f"DDIM {options['steps']} steps, eta {options['eta']:g}"
    else:
        text = f"DPM-Solver++(2M) {options['steps']} steps, even in log-SNR"
    if options.get("labels") is not None:
        text += f", classes in the training set's proportions, guidance {options.get('guidance', 0.0):g}"
    return text + ", EMA weights"


def report_training_data(data_dir):
    """What the models train on: `tinygen train`'s default, or the MNIST files of `data_dir`."""
    return "the embedded subset (15,000 images)" if data_dir is None else f"the 60,000 MNIST training images in {data_dir}"


# what a run saved before colour data holds for the data options it did not have
RUN_DEFAULTS = {"image_size": None, "channels": None, "conditional": False}


def data_spec(data="embedded", data_dir=None, image_size=None, channels=None, conditional=False):
    """The data options of `tinygen train` (`trainer.train`'s arguments) as a dict, as a run saves them.

    >>> data_spec()
    {'data': 'embedded', 'data_dir': None, 'image_size': None, 'channels': None, 'conditional': False}
    """
    return {"data": data, "data_dir": data_dir, "image_size": image_size, "channels": channels,
            "conditional": bool(conditional)}


def describe_data(spec):
    """What the models train on, in words."""
    if spec["data"] in MNIST_DATA and spec["image_size"] is None and spec["channels"] is None:
        text = report_training_data(spec["data_dir"] if spec["data"] == "mnist" else None)
    else:
        text = f"the {spec['data']} training images" + (f" in {spec['data_dir']}" if spec["data_dir"] else "")
        if spec["image_size"] is not None or spec["channels"] is not None:
            text += f" (--image-size {spec['image_size']}, --channels {spec['channels']})"
    return text + (", the DDPM class-conditional on their labels" if spec["conditional"] else "")


def load_data(spec):
    """The training images of `spec`, as `tinygen train` loads them."""
    return load_dataset(spec["data"], spec["data_dir"], image_size=spec["image_size"], channels=spec["channels"])


def fresh_config(name, spec, steps, dataset=None):
    """The Config of a fresh `tinygen train NAME` run of `steps` on `spec`'s data (`trainer.data_settings`)."""
    dataset = load_data(spec) if dataset is None else dataset
    settings = trainer.data_settings(name, dataset, spec["data"], spec["conditional"])
    return models.MODELS[name].Config(**settings, steps=steps)


def budget(name, scale, steps=None):
    """(steps, batch_size) of `tinygen train NAME`: `steps` (default: the model's), times `scale` (at least 1)."""
    config = models.MODELS[name].Config()
    steps = config.steps if steps is None else steps
    return (steps if scale == 1 else max(1, round(steps * scale))), config.batch_size


def parse_assignments(text, what):
    """"vae=5000,ddpm=3000" -> {"vae": "5000", "ddpm": "3000"}, each name a model of tinygen.models.

    >>> parse_assignments("dcgan=2000", "--steps")
    {'dcgan': '2000'}
    """
    pairs = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in models.MODELS or not value.strip():
            raise ValueError(f"{what}: give MODEL=VALUE with MODEL one of {', '.join(models.MODELS)}, got {part!r}")
        pairs[name.strip()] = value.strip()
    return pairs


def checked_device(parser, spec):
    """The device --device names (default: the default device); a missing CuPy or GPU is a parser
    error now, not a failure after the floor's evaluation."""
    try:
        device = backend.device(spec) if spec else backend.get_default_device()
        if device.type == "cuda":
            backend.load_cupy()
    except TinygenError as err:
        parser.error(f"--device {spec}: {err}")
    return device


def device_label(dev):
    """`dev` as a table names it: "cpu", or "cuda:0 (NVIDIA H200)"."""
    if dev.type != "cuda":
        return str(dev)
    gpus, _ = backend.gpu_info()
    index = dev.index or 0
    return f"cuda:{index} ({gpus[index]['name']})" if index < len(gpus) else str(dev)


def run_folder(runs, name, steps, scale):
    return os.path.join(runs, name if scale == 1 else f"{name}-{steps}steps")


# --- 1. training -------------------------------------------------------------------------------


def saved_steps(out):
    """The step budget of the run saved in the folder `out`, or None where it holds none."""
    path = os.path.join(out, trainer.CHECKPOINT)
    return int(load(path)["run"]["steps"]) if os.path.exists(path) else None


def ensure_trained(name, out, steps, full, device=None, data_dir=None, spec=None, explicit=False):
    """Train, resume or reuse the run of `name` in `out`; returns what was done and the training time.

    `full`: the default budget, trained exactly as `tinygen train NAME`; a shrunk one (smoke tests)
    writes only the final sample grid (the default, one grid per tenth of the run, would be a grid
    at every step of a 10-step run). `device`: where it trains (`tinygen train --device`).
    `spec` (`data_spec`): the data it trains on; without it `data_dir`: the MNIST files there
    (`--data mnist --data-dir`), or None for the embedded subset. A run found in `out` must be
    `tinygen train NAME` with the seed, data and steps asked for; its configuration must be what
    a fresh run would get today, unless `explicit` (a folder named with --run), where the
    settings that differ are returned as "settings_differ" and the run is used as it is.
    """
    spec = data_spec("embedded" if data_dir is None else "mnist", data_dir) if spec is None else spec
    path = os.path.join(out, trainer.CHECKPOINT)
    data, where = spec["data"], "--run" if explicit else "--runs"
    started, differ = time.perf_counter(), {}
    if not os.path.exists(path):
        how = "trained by this command"
        trainer.train(name, out, steps=steps, seed=SEED, data=data, data_dir=spec["data_dir"],
                      image_size=spec["image_size"], channels=spec["channels"], conditional=spec["conditional"],
                      sample_every=None if full else steps, progress=sys.stderr.isatty(), device=device)
    else:
        state = load(path)
        run, done = state["run"], int(state["step"])
        expected = {"model": name, "seed": SEED, **spec, "overrides": {}, "steps": steps}
        found = {key: run.get(key, RUN_DEFAULTS.get(key)) for key in expected}
        if found != expected:
            raise SystemExit(f"{out} holds another run ({found}), not `tinygen train {name}` with {steps} steps on {data} "
                             f"({expected}); choose another {where}")
        config = _as_json(dataclasses.asdict(fresh_config(name, spec, steps)))
        saved = _as_json(run.get("config", {}))
        differ = {k: {"run": saved.get(k), "fresh": v} for k, v in config.items() if saved.get(k) != v}
        if differ and not explicit:
            raise SystemExit(f"{out} holds a {name} run with another configuration than a fresh run's today "
                             f"({', '.join(sorted(differ))} differ); choose another --runs")
        if done < steps:
            how = f"resumed from step {done:,} by this command"
            trainer.train(name, out, resume=True, progress=sys.stderr.isatty(), device=device)
        else:
            how = "reused (finished before this command)"
    seconds, source = training_seconds(out, steps)
    return {"checkpoint": path, "how": how, "seconds": seconds, "time_source": source,
            "this_command_s": time.perf_counter() - started, "settings_differ": differ}


def _as_json(obj):
    """`obj` as it reads back from JSON (tuples become lists), to compare a saved config with a new one."""
    return json.loads(json.dumps(obj))


def training_seconds(out, steps):
    """(seconds or None, where the number comes from), from the run's metrics.jsonl."""
    path = os.path.join(out, trainer.METRICS)
    lines = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
    if not lines or lines[-1]["step"] != steps:
        return None, f"unknown: {path} has no line for the final step {steps}"
    last = lines[-1]
    if "elapsed_s" in last:
        return float(last["elapsed_s"]), "elapsed_s of the last line of metrics.jsonl"
    guess = steps / last["steps_per_s"]
    return None, (f"unknown: metrics.jsonl predates elapsed_s; steps / steps_per_s of its last line gives "
                  f"{guess:.0f} s, the true time only if the run was never resumed")


# --- 2. sampling (tinygen) ---------------------------------------------------------------------


def tinygen_samples(model, folder, label, n, batch_size, seed, options, step, fresh, device):
    """n samples and the seconds they took to draw: from the file saved by an earlier call, or drawn now.

    `device`: where `model` is. A saved file is reused only if drawn the same way: the samples depend
    on the batch size (one random stream, drawn batch after batch) and the device (CuPy's generator
    is not NumPy's), the seconds also on the machine and its kernels. The device and batch size are
    in the file's name, so the samples of a CPU and a GPU run are kept side by side.
    The first 100 samples are also saved as a 10 x 10 grid beside them (the same name, .png), to look at.
    """
    key = {"label": label, "n": n, "seed": seed, "step": step, "options": options, "batch_size": batch_size,
           "device": device_label(device), "machine": machine.describe()}
    name = f"{label}-n{n}-seed{seed}-step{step}-batch{batch_size}-{str(device).replace(':', '')}"
    path = os.path.join(folder, name + ".npz")
    saved = load(path) if os.path.exists(path) and not fresh else None
    reuse = saved is not None and _as_json(saved.get("key")) == _as_json(key)
    if reuse:
        samples, seconds, how = saved["samples"], float(saved["seconds"]), f"saved by an earlier run ({path})"
    else:
        start = time.perf_counter()
        samples = evaluation.sample_in_batches(model, n, batch_size, seed, options, progress=sys.stderr)
        seconds, how = time.perf_counter() - start, f"drawn by this command ({path})"
        os.makedirs(folder, exist_ok=True)
        save({"samples": samples, "seconds": seconds, "key": key}, path)
    grid = path[:-len(".npz")] + ".png"
    if not os.path.exists(grid) or not reuse:
        image.save_png(grid, image.make_grid(samples[:100], nrow=10))
    return samples, seconds, how


# --- 4. the PyTorch twins (run in a spawned process) ---------------------------------------------


def twin_state(twin):
    """The twin's trained networks (and EMA), for torch.save."""
    if hasattr(twin, "generator"):
        return {"generator": twin.generator.state_dict(), "discriminator": twin.discriminator.state_dict(),
                "ema_shadow": twin.ema_shadow, "step": twin.step}
    state = {"net": twin.net.state_dict()}
    if hasattr(twin, "ema_shadow"):
        state.update(ema_shadow=twin.ema_shadow, ema_buffers=twin.ema_buffers, step=twin.step)
    return state


def load_twin_state(twin, state):
    if hasattr(twin, "generator"):
        twin.generator.load_state_dict(state["generator"])
        twin.discriminator.load_state_dict(state["discriminator"])
        twin.ema_shadow, twin.step = state["ema_shadow"], state["step"]
        return
    twin.net.load_state_dict(state["net"])
    if hasattr(twin, "ema_shadow"):
        twin.ema_shadow, twin.ema_buffers, twin.step = state["ema_shadow"], state["ema_buffers"], state["step"]


def tinygen_weights(twin):
    """What the tinygen model needs for the likelihood bounds, as NumPy arrays (None for a GAN):
    the VAE's networks, the DDPM's EMA weights."""
    if hasattr(twin, "generator"):
        return None
    if hasattr(twin, "ema_shadow"):
        names = [n for n, _ in twin.net.named_parameters()] + [n for n, _ in twin.net.named_buffers()]
        return dict(zip(names, [t.numpy().copy() for t in twin.ema_shadow + twin.ema_buffers]))
    return {k: v.numpy().copy() for k, v in twin.net.state_dict().items()}


def run_twin(name, run, steps, n, batch_size, samplers, folder, threads, seed):
    """In a fresh process: train the twin of `name` for `steps` (or load it), sample n images per sampler.

    `run` is the tinygen run's record (a checkpoint's "run"): the twin starts from the weights that
    its seed and saved config give the tinygen model, and trains on its data in its order.
    Returns None when the model has no twin, else the training seconds, for each sampler the .npz
    path and the seconds, the weights for the likelihoods, torch's version and threads.
    """
    # Passive OpenMP waits, as tinygen's Numba pool: read when torch loads its OpenMP runtime, below
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch  # here only: the tinygen process never imports it

    from benchmarks import torch_twins

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    spec = {k: run.get(k, RUN_DEFAULTS.get(k)) for k in data_spec()}
    dataset = load_data(spec)  # the run's images, as trainer.train loads them
    backend.manual_seed(run["seed"])  # the tinygen model's initial weights, as in its run
    model = trainer.build_model(name, run["config"])  # every setting as the run saved it (its data's included)
    model.config.steps = steps  # as trainer.train does: the DDPM's learning rate decays to 0 at the run's end
    try:
        twin = torch_twins.twin(model)
    except TypeError:
        return None
    os.makedirs(folder, exist_ok=True)
    info_path, state_path = os.path.join(folder, "twin.json"), os.path.join(folder, "twin.pt")
    key = {"model": name, "steps": steps, "batch_size": model.config.batch_size, "seed": run["seed"],
           "torch": torch.__version__, "data": spec, "config": _as_json(dataclasses.asdict(model.config))}
    info = None
    if os.path.exists(info_path) and os.path.exists(state_path):
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
    if info is not None and info["key"] == key:
        load_twin_state(twin, torch.load(state_path))
        how = "reused (trained before this command)"
    else:
        for old in os.listdir(folder):  # samples of an earlier twin
            os.remove(os.path.join(folder, old))
        loader = DataLoader(dataset, batch_size=model.config.batch_size, shuffle=True, drop_last=True,
                            seed=run["seed"])
        step, start = 0, time.perf_counter()
        while step < steps:  # the data order of the tinygen run (trainer.train)
            epoch, index = divmod(step, len(loader))
            for images, labels in loader.batches(epoch, start=index):
                losses = twin.train_step(torch.from_numpy(images), torch.from_numpy(labels))
                step += 1
                if not all(math.isfinite(v) for v in losses.values()):
                    raise RuntimeError(f"the {name} twin diverged at step {step}: {losses}")
                if step == steps:
                    break
        info = {"key": key, "train_seconds": time.perf_counter() - start, "threads": torch.get_num_threads(),
                "omp_wait_policy": os.environ["OMP_WAIT_POLICY"]}
        torch.save(twin_state(twin), state_path)
        with open(info_path, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
        how = "trained by this command"
    drawn = {}
    for label, options in samplers:
        # the batch size orders the random draws, the threads set the seconds (the folder is this run's twin)
        path = os.path.join(folder, f"{label}-n{n}-seed{seed}-batch{batch_size}-threads{torch.get_num_threads()}.npz")
        if os.path.exists(path):
            with np.load(path) as saved:
                drawn[label] = {"path": path, "seconds": float(saved["seconds"]), "how": "saved by an earlier run"}
            continue
        torch.manual_seed(seed)
        options = dict(options)
        labels = options.pop("labels", None)  # a conditional model's (n,) classes, cut per batch as sample_in_batches
        start, batches, done = time.perf_counter(), [], 0
        while done < n:
            k = min(batch_size, n - done)
            batches.append(twin.sample(k, **options, **({} if labels is None else {"labels": labels[done:done + k]})))
            done += len(batches[-1])
        seconds = time.perf_counter() - start
        np.savez(path, samples=np.concatenate(batches), seconds=seconds)
        drawn[label] = {"path": path, "seconds": seconds, "how": "drawn by this command"}
    if cpu_runtime._numba is not None:  # see the module's NOTE
        raise RuntimeError("Numba was loaded in the PyTorch process: the twin's timings are not torch's own")
    return {"how": how, "train_seconds": info["train_seconds"], "threads": info["threads"], "samples": drawn,
            "weights": tinygen_weights(twin), "torch": torch.__version__,
            "omp_wait_policy": info.get("omp_wait_policy")}


def in_fresh_process(function, *args):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def model_with_twin_weights(name, weights, config):
    """The tinygen model `name` with the settings `config` (a dict), holding a twin's trained
    weights (the DDPM's EMA as its EMA)."""
    model = trainer.build_model(name, config)
    model.net.load_state_dict(weights)
    if hasattr(model, "ema"):
        model.ema = optim.EMA(model.net, decay=model.config.ema_decay)  # shadow = the twin's EMA weights
    return model


# --- 3. evaluation and the table -----------------------------------------------------------------


def likelihoods(model, name, ref, args):
    """The likelihood bounds of a VAE or DDPM ({} for a GAN or --likelihood-n 0), and their seconds."""
    start = time.perf_counter()
    extra = evaluation.likelihood_metrics(model, name, ref.test_images[:args.likelihood_n], seed=args.seed,
                                          iwae_k=args.iwae_k, t_subsample=args.t_subsample)
    return {k: {"value": v, "n": m} for k, (v, m) in extra.items()}, time.perf_counter() - start


def evaluate_row(row, samples, ref, net):
    start = time.perf_counter()
    row["metrics"] = evaluation.evaluate(samples, ref, net=net)
    row["eval_seconds"] = time.perf_counter() - start
    row["n"] = len(samples)
    m = row["metrics"]
    sample = f", sampled in {duration(row['sample_seconds'])} ({row['n'] / row['sample_seconds']:.1f} images/s)" \
        if row.get("sample_seconds") else ""
    print(f"{row['model']} [{row['sampler']}]{sample}, evaluated in {row['eval_seconds']:.1f} s: FD {m['fd']:.2f}, "
          f"precision {m['precision']:.3f}, recall {m['recall']:.3f}, coverage {m['coverage']:.3f}", flush=True)
    return row


def duration(seconds):
    if seconds is None:
        return "unknown"
    if seconds < 1:
        return f"{seconds:.2g} s"
    if seconds < 100:
        return f"{seconds:.1f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def markdown(rows, n, likelihood_names, protocol_n=PROTOCOL_N):
    fd = "FD" if n == protocol_n else f"FD (n = {n:,})"
    head = ["model", "sampler", "budget (steps × batch)", "train time", "sample time", "n", fd, "KID", "precision",
            "recall", "coverage", "classes", "largest/smallest share", "NN-dist", "ELBO", "IWAE", "bits/dim"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("no_twin"):
            lines.append(f"| {r['model']} | no twin |" + " - |" * (len(head) - 2))
            continue
        m, lk = r["metrics"], r.get("likelihood", {})
        cells = [
            r["model"], r["sampler"], r.get("budget_label", "-"),
            "-" if "train_seconds" not in r else duration(r["train_seconds"]) + ("†" if r["train_seconds"] is None else ""),
            duration(r["sample_seconds"]) if r.get("sample_seconds") is not None else "-",
            f"{r['n']:,}", f"{m['fd']:.2f}", f"{m['kid']:.3g}", f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['coverage']:.3f}",
            str(m["classes_present"]), f"{m['largest_class_share']:.3f}/{m['smallest_class_share']:.3f}",
            f"{m['nearest_train_l2_median']:.2f}",
        ]
        for kind in ("elbo", "iwae", "bits"):
            name = next((name for name in likelihood_names[kind] if name in lk), None)
            cells.append(f"{lk[name]['value']:.2f}" if name is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def likelihood_columns(args):
    """The likelihood metrics of each column of the table: the first a row has is shown."""
    ddpm_bits = f"test_bits_per_dim_t{args.t_subsample}" if args.t_subsample else "test_bits_per_dim"
    return {"elbo": ["test_elbo_nats"], "iwae": [f"test_iwae_k{args.iwae_k}_nats"],
            "bits": [ddpm_bits, f"test_iwae_k{args.iwae_k}_bits_per_dim"]}  # the DDPM's, the logistic VAE's


def write_json(path, report):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# --- the command ---------------------------------------------------------------------------------


def build_parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(models.MODELS), help=f"comma-separated, from {', '.join(models.MODELS)}")
    p.add_argument("--runs", help="folder of the training runs (default runs/quality, for --data NAME runs/quality-NAME)")
    p.add_argument("--run", action="append", default=[], metavar="MODEL=FOLDER",
                   help="use the run in FOLDER (`tinygen train MODEL ... --out FOLDER`, finished or not) for MODEL; "
                        "repeatable")
    p.add_argument("--steps", default="", metavar="MODEL=N,...", help="training steps of these models (default: "
                   "each model's default, or a --run folder's own budget)")
    p.add_argument("--n", type=int, help=f"samples per model and sampler (default: the protocol's, {PROTOCOL_N:,} for "
                   "MNIST, the held-out images' number for other data)")
    p.add_argument("--batch-size", type=int, default=500, help="images per sample() call (default 500)")
    p.add_argument("--data", choices=DATASETS, help="train on this dataset (tinygen.data.load_dataset) and score against "
                   "its held-out images; embedded and mnist are --train-data's (default: MNIST as --train-data says)")
    p.add_argument("--data-dir", help="MNIST: the IDX files of the reference (default ../shared/data/mnist; '' for the "
                   "embedded subset and shipped statistics); --data cifar10/folder/npz: where the data is")
    p.add_argument("--train-data", choices=MNIST_DATA,
                   help="train on the embedded subset (15,000 images, `tinygen train`'s default) or on the "
                        "60,000 training images of --data-dir")
    p.add_argument("--test-dir", help="--data folder/npz: the held-out images (a folder, or an .npz file)")
    p.add_argument("--feature-net", help="--data NAME: a feature network you trained (train_feature_net --data NAME) "
                   "for data without a shipped one")
    p.add_argument("--image-size", type=int, help="--data NAME: centre-crop and resize its images to this size")
    p.add_argument("--channels", type=int, choices=(1, 3), help="--data NAME: convert its images to grey or RGB")
    p.add_argument("--conditional", action="store_true", help="train the DDPM class-conditional on the data's labels")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance w of a --conditional DDPM")
    p.add_argument("--ddpm-samplers", default="ddpm,ddim100,ddim20",
                   help="ddpm (ancestral, all T steps), ddimS (DDIM, S steps, eta 0) and/or dpmppS (DPM-Solver++(2M), "
                        "S steps, even in log-SNR); default ddpm,ddim100,ddim20")
    p.add_argument("--likelihood-n", type=int, default=1000, help="test images for the likelihood bounds (0 skips)")
    p.add_argument("--iwae-k", type=int, default=100, help="importance samples K of the VAE's IWAE bound")
    p.add_argument("--t-subsample", type=int, default=50, help="DDPM bits/dim: timesteps per image (0: all T)")
    p.add_argument("--device", help="where tinygen's models train, sample and run the likelihood bounds' networks: "
                   "cpu, cuda or cuda:N (default: TINYGEN_DEVICE, else cpu)")
    p.add_argument("--steps-scale", type=float, default=1.0, help="train steps x this (smoke tests; labelled)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling, the floor and the bounds")
    p.add_argument("--torch", action="store_true", help="also each model's PyTorch twin, same budget, same run")
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--resample", action="store_true", help="draw the tinygen samples again even if saved")
    p.add_argument("--out", help="the JSON results (default RUNS/results.json)")
    return p


def parse_data(parser, args):
    """(data spec of the training runs, keyword arguments of `evaluation.reference`, feature network
    or None for MNIST's LeNet) from the command line; parser errors before any work."""
    mnist = args.data in (None, *MNIST_DATA)
    if args.data in MNIST_DATA and args.train_data not in (None, args.data):
        parser.error(f"--data {args.data} and --train-data {args.train_data} disagree: give one of them")
    if mnist:
        given = [f for f in ("test_dir", "feature_net", "image_size", "channels") if getattr(args, f) is not None]
        if given:
            parser.error(f"{', '.join('--' + f.replace('_', '-') for f in given)} apply to --data NAME other than "
                         "MNIST, whose protocol is the shipped LeNet on the 28x28 digits")
        data_dir = os.path.join("..", "shared", "data", "mnist") if args.data_dir is None else args.data_dir or None
        if data_dir is not None and not os.path.isdir(data_dir):
            parser.error(f"--data-dir {data_dir!r} is no folder: give the folder of the MNIST IDX files, "
                         "or --data-dir '' for the embedded reference")
        train_data = args.data or args.train_data or "embedded"
        if train_data == "mnist" and data_dir is None:
            parser.error("--train-data mnist trains on the MNIST files of --data-dir: give that folder")
        spec = data_spec(train_data, data_dir if train_data == "mnist" else None, conditional=args.conditional)
        return spec, {"data_dir": data_dir}, None
    if args.train_data is not None:
        parser.error(f"--train-data picks MNIST's training images; --data {args.data} trains on its own")
    data_dir = args.data_dir or None
    spec = data_spec(args.data, data_dir, args.image_size, args.channels, args.conditional)
    try:
        net = evaluation.shipped_feature_net(args.data) if args.feature_net is None else \
            evaluation.load_feature_net(args.feature_net, sha256=None)  # one you trained is not pinned
    except TinygenError as err:
        parser.error(f"--data {args.data}: {err}")
    return spec, {"data_dir": data_dir, "data": args.data, "image_size": args.image_size, "channels": args.channels,
                  "test_dir": args.test_dir}, net


def class_labels(dataset, n, seed):
    """n class labels drawn with `seed` from the training images' labels: the classes in their proportions."""
    return np.random.default_rng(seed).choice(np.asarray(dataset.labels, np.int64), size=n).tolist()


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names or any(n not in models.MODELS for n in names):
        parser.error(f"--models: choose from {', '.join(models.MODELS)}, got {args.models!r}")
    try:
        samplers = parse_samplers(args.ddpm_samplers)
        steps_given = {k: int(v) for k, v in parse_assignments(args.steps, "--steps").items()}
        folders = {}
        for text in args.run:
            folders.update(parse_assignments(text, "--run"))
    except ValueError as err:
        parser.error(str(err))
    if any(v < 1 for v in steps_given.values()):
        parser.error(f"--steps must be positive, got {args.steps!r}")
    unused = sorted((set(steps_given) | set(folders)) - set(names))
    if unused:
        parser.error(f"--steps/--run name {', '.join(unused)}, which --models leaves out")
    if (args.n is not None and args.n < 4) or args.batch_size < 1 or args.likelihood_n < 0 or args.iwae_k < 1 \
            or args.t_subsample < 0:
        parser.error("--n must be at least 4 (k-NN with k = 3), --batch-size and --iwae-k at least 1, "
                     "--likelihood-n and --t-subsample at least 0")
    if not 0 < args.steps_scale <= 1 or args.torch_threads < 1:
        parser.error("--steps-scale must be in (0, 1] and --torch-threads at least 1")
    if args.guidance and not (args.conditional and "ddpm" in names):
        parser.error("--guidance applies to the class-conditional DDPM: give --conditional and ddpm in --models")
    spec, ref_options, net = parse_data(parser, args)
    device = checked_device(parser, args.device)
    with_torch = args.torch and importlib.util.find_spec("torch") is not None
    runs = args.runs or os.path.join("runs", "quality" if spec["data"] in MNIST_DATA else f"quality-{spec['data']}")
    out = args.out or os.path.join(runs, "results.json")
    try:
        net = evaluation.load_feature_net() if net is None else net
        ref = evaluation.reference(net=net, **ref_options)
    except TinygenError as err:
        parser.error(f"the reference: {err}")
    n = ref.protocol_n if args.n is None else args.n
    os.makedirs(runs, exist_ok=True)

    load_average = os.getloadavg()[0]
    print(f"machine: {machine.describe()}")
    print(f"device of tinygen's models: {device_label(device)}")
    print(f"training data: {describe_data(spec)}")
    print(f"load average (1 min) before the run: {load_average:.2f}")
    if args.steps_scale != 1:
        print(f"NOTE: --steps-scale {args.steps_scale:g}: every training budget is shrunk; smoke numbers, "
              "not the documented budgets")
    if args.torch and not with_torch:
        print("NOTE: --torch, but PyTorch is not installed: no twins")
    for part, what in ref.description.items():
        print(f"reference ({part}): {what}")
    if n != ref.protocol_n:
        print(f"NOTE: n = {n:,}, not the protocol's {ref.protocol_n:,}: FD grows as n shrinks, "
              "so compare it only with numbers at the same n (KID is unbiased)")
    report = {
        "command": ["python", "-m", "benchmarks.quality"] + list(sys.argv[1:] if argv is None else argv),
        "machine": machine.describe(), "device": device_label(device), "load_average_1min": load_average,
        "feature_net": type(net).__name__, "feature_net_sha256": ref.feature_net_sha256,
        "protocol_n": ref.protocol_n, "n": n, "steps_scale": args.steps_scale, "reference": ref.description,
        "training_data": describe_data(spec), "data": spec,
        "seeds": {"training": SEED, "sampling": args.seed, "floor": args.seed, "likelihood": args.seed,
                  "torch": args.seed},
        "likelihood": {"test_images": min(args.likelihood_n, len(ref.test_images)), "iwae_k": args.iwae_k,
                       "t_subsample": args.t_subsample,
                       "images": "the first test images of the reference, binarised with the seed for a Bernoulli "
                                 "VAE decoder, the 8-bit images for the discretised logistic and the DDPM"},
        "sample_batch_size": args.batch_size, "torch": None, "torch_threads": None, "rows": [],
    }

    start = time.perf_counter()
    floor_metrics, floor_n = evaluation.floor(ref, n, seed=args.seed, net=net)
    floor_row = {"model": "real training images (floor)", "implementation": "data", "sampler": "-", "n": floor_n,
                 "metrics": floor_metrics, "eval_seconds": time.perf_counter() - start}
    print(f"floor: {floor_n:,} real training images (seed {args.seed}), evaluated in {floor_row['eval_seconds']:.1f} s: "
          f"FD {floor_metrics['fd']:.2f}, KID {floor_metrics['kid']:.3g}", flush=True)
    report["rows"].append(floor_row)
    write_json(out, report)

    notes = set()
    for name in names:
        own_spec = dict(spec, conditional=spec["conditional"] and name == "ddpm")  # --conditional is the DDPM's
        explicit = name in folders
        steps, batch = budget(name, args.steps_scale, steps_given.get(name, saved_steps(folders[name]) if explicit else None))
        label = f"{steps:,} × {batch}" + (f" (×{args.steps_scale:g})" if args.steps_scale != 1 else "")
        folder = folders[name] if explicit else run_folder(runs, name, steps, args.steps_scale)
        work = os.path.join(runs, name) if explicit else folder  # samples and the twin: not into a folder of yours
        print(f"\n{name}: {label} in {folder}", flush=True)
        training = ensure_trained(name, folder, steps, full=args.steps_scale == 1, device=device, spec=own_spec,
                                  explicit=explicit)
        print(f"{name}: {training['how']}; training time {duration(training['seconds'])} ({training['time_source']})")
        if training["seconds"] is None:
            notes.add("† " + training["time_source"])
        if training["settings_differ"]:
            differ = ", ".join(f"{k}={v['run']!r} (fresh: {v['fresh']!r})" for k, v in training["settings_differ"].items())
            print(f"NOTE: {folder} was trained with settings other than a fresh run's today: {differ}; "
                  "its twin gets the run's")
            notes.add(f"{name}: the run in {folder} has {differ}; its twin the same")
        model, run, step = trainer.load_checkpoint(training["checkpoint"], device=device)
        extra, extra_s = likelihoods(model, name, ref, args)
        if extra:
            print(f"{name}: likelihood bounds in {extra_s:.1f} s: "
                  + ", ".join(f"{k} {v['value']:.3f}" for k, v in extra.items()), flush=True)
        own = samplers if name == "ddpm" else [("default", {})]
        if getattr(model.config, "num_classes", None) is not None:  # a conditional DDPM: labels and guidance
            labels = class_labels(load_data(own_spec), n, args.seed)
            own = [(f"{sampler}-w{args.guidance:g}", dict(options, labels=labels, guidance=args.guidance))
                   for sampler, options in own]
        for sampler, options in own:
            samples, seconds, how = tinygen_samples(model, os.path.join(work, "quality"), sampler, n,
                                                    args.batch_size, args.seed, options, step, args.resample, device)
            row = {"model": name, "implementation": "tinygen", "sampler": describe_sampler(name, options, model.config),
                   "sampler_options": _without_labels(options),
                   "budget": {"steps": steps, "batch_size": batch, "scale": args.steps_scale},
                   "budget_label": label, "training": training, "train_seconds": training["seconds"],
                   "sample_seconds": seconds, "samples": how, "likelihood": extra, "likelihood_seconds": extra_s}
            report["rows"].append(evaluate_row(row, samples, ref, net))
            write_json(out, report)
        if not with_torch:
            continue
        twin_folder = os.path.join(work, "torch-twin")
        result = in_fresh_process(run_twin, name, run, steps, n, args.batch_size, own, twin_folder,
                                  args.torch_threads, args.seed)
        if result is None:
            print(f"{name}: no twin")
            report["rows"].append({"model": f"{name} (torch)", "implementation": "torch", "no_twin": True})
            continue
        report["torch"], report["torch_threads"] = result["torch"], result["threads"]
        report["torch_omp_wait_policy"] = result["omp_wait_policy"]
        print(f"{name} (torch {result['torch']}, {result['threads']} threads, OMP_WAIT_POLICY="
              f"{result['omp_wait_policy']}): {result['how']}, training loop {duration(result['train_seconds'])}")
        extra, extra_s = {}, 0.0
        if result["weights"] is not None:
            extra, extra_s = likelihoods(model_with_twin_weights(name, result["weights"], run["config"]), name, ref, args)
        for sampler, options in own:
            drawn = result["samples"][sampler]
            row = {"model": f"{name} (torch)", "implementation": "torch",
                   "sampler": describe_sampler(name, options, model.config), "sampler_options": _without_labels(options),
                   "budget": {"steps": steps, "batch_size": batch, "scale": args.steps_scale},
                   "budget_label": label, "training": {"how": result["how"], "time_source": "the twin's training loop"},
                   "train_seconds": result["train_seconds"], "sample_seconds": drawn["seconds"],
                   "samples": f"{drawn['how']} ({drawn['path']})", "likelihood": extra, "likelihood_seconds": extra_s}
            report["rows"].append(evaluate_row(row, evaluation.load_samples(drawn["path"], shape=ref.shape), ref, net))
            write_json(out, report)
        notes.add("the torch twins' train time is their training loop alone (tinygen's includes its "
                  "checkpoints and sample grids); their likelihoods are computed by tinygen's code on their weights")

    columns = likelihood_columns(args)
    m = report["likelihood"]["test_images"]
    print(f"\nfeature network: {type(net).__name__}, SHA-256 {ref.feature_net_sha256}")
    print(f"seeds: training {SEED}, sampling / floor / likelihood bounds {args.seed}; "
          f"training data: {report['training_data']}; "
          f"GANs sample as their sampler column says, VAEs their decoder means, the DDPM from its EMA weights")
    if m:
        print(f"ELBO and IWAE (K = {args.iwae_k}): nats, the first {m:,} test images (binarised for a Bernoulli decoder, "
              f"8-bit for the discretised logistic; higher is better); bits/dim: the DDPM's bound (Ho et al.) on the "
              f"8-bit test images, " + (f"{args.t_subsample} timesteps per image" if args.t_subsample else "all T terms")
              + ", or the logistic VAE's IWAE bound (lower is better)")
    print()
    print(markdown(report["rows"], n, columns, ref.protocol_n))
    for note in sorted(notes):
        print(f"\n{note}")
    print(f"\njson: {out}")
    return 0


def _without_labels(options):
    """Sampler options for the JSON, a conditional model's n labels summarised by their number."""
    if options.get("labels") is None:
        return options
    return dict({k: v for k, v in options.items() if k != "labels"}, labels=f"{len(options['labels'])} drawn "
                "from the training labels")


if __name__ == "__main__":
    sys.exit(main())
