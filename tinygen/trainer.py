"""The training loop behind `tinygen train`: data, steps, checkpoints, metrics, sample grids.

A run lives in one folder:

    config.json      what was asked for (model, its Config, seed, data), written once
    checkpoint.npz   the latest complete state, replaced atomically (tinygen.save)
    metrics.jsonl    one JSON object per logged step (losses, steps/s, elapsed_s)
    samples/         step_000500.png, ... and final.png: grids from a fixed sampling seed

The checkpoint holds the model's `state_dict()` (networks, optimizers, EMA), the step, the
random generator's state and nothing else that changes: the data order of epoch e is a pure
function of (seed, e). So a run killed at any moment resumes from its last checkpoint with
`resume=True` and follows exactly the trajectory of a run that was never interrupted; sample
grids draw from a separate, fixed-seed generator so they do not move that trajectory.

A metrics line's `steps_per_s` is the rate since this invocation started; `elapsed_s` is the
wall time of the training loop up to that step's update (the checkpoint and grid written at that
step come after it), summed over every invocation of the run: a resumed run starts from the
`elapsed_s` of the last line it keeps, so the work redone after a kill is not counted. It is
absent from the lines of a run resumed from a metrics file without it.
"""

import dataclasses
import json
import math
import numbers
import os
import shutil
import time

import numpy as np

from tinygen import backend, image, models
from tinygen.data import DataLoader, load_dataset
from tinygen.distributed import DataParallel
from tinygen.errors import ArgumentError, CheckpointError, TinygenError
from tinygen.progress import Progress
from tinygen.serialization import load, save
from tinygen.tensor import Tensor

CHECKPOINT = "checkpoint.npz"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT_EVERY = 500  # at most, steps between checkpoints (default: a tenth of the run)


class TrainingDivergedError(TinygenError, RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def build_model(name, overrides=None):
    """The model class registered as `name`, built from its Config with `overrides` applied."""
    if name not in models.MODELS:
        raise ArgumentError(f"unknown model {name!r}; choose one of {', '.join(models.MODELS)}")
    cls = models.MODELS[name]
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(overrides or {}) - fields)
    if unknown:
        raise ArgumentError(f"{name} has no setting {', '.join(unknown)}; its settings are {', '.join(sorted(fields))}")
    return cls(cls.Config(**(overrides or {})))


def data_settings(model_name, dataset, data, conditional=False, overrides=None):
    """The model settings that the training images decide, and the defaults they imply.

    Decided: their channels and size, and, for a class-conditional DDPM, its number of classes
    (the dataset's labels). Implied, for settings the run does not override: the DDPM's widths
    and attention for that shape (`Config.for_shape`), and, off MNIST, the VAEs' discretised
    logistic decoder, whose bound is in bits/dim of the 8-bit images (the Bernoulli decoder is a
    likelihood of the binarised digits only).
    """
    images, _ = dataset.__getitems__([0])  # (1, C, H, W) float32
    c, h, w = images.shape[1:]
    if h != w:
        raise ArgumentError(f"the models take square images; the data's are {h}x{w}: pass --image-size S "
                            f"to centre-crop and resize them to SxS")
    settings = {"image_channels": int(c), "image_size": int(h)}
    if model_name == "ddpm":
        given = {k: v for k, v in (overrides or {}).items() if k not in ("image_channels", "image_size")}
        shaped = models.MODELS["ddpm"].Config.for_shape(int(c), int(h), **given)  # checks them together
        settings.update(channels=list(shaped.channels), attn_resolutions=list(shaped.attn_resolutions))
    if model_name in ("vae", "convvae") and data not in ("embedded", "mnist"):
        settings["likelihood"] = "logistic"
    if conditional:
        if model_name != "ddpm":
            raise ArgumentError(f"--conditional trains a class-conditional DDPM (with classifier-free guidance); "
                                f"{model_name} has no conditional form")
        classes = getattr(dataset, "classes", None)
        if getattr(dataset, "labels", None) is None or not classes:
            raise ArgumentError("--conditional needs labelled data (classes from the first-level subfolders of a "
                                "folder, the categories of emoji, the digits of mnist); this data has no labels")
        settings["num_classes"] = len(classes)
    return settings


def train(
    model_name,
    out,
    steps=None,
    epochs=None,
    overrides=None,
    seed=0,
    data="embedded",
    data_dir=None,
    download=False,
    image_size=None,
    channels=None,
    conditional=False,
    resume=False,
    checkpoint_every=None,
    sample_every=None,
    log_every=10,
    progress=None,
    distributed=False,
    device=None,
):
    """Train `model_name` into the folder `out`; returns the path of the final checkpoint.

    `data` names a dataset of `tinygen.data.load_dataset` (embedded, mnist, emoji, cifar10, folder,
    npz), read from `data_dir` where it needs files; `image_size` and `channels` centre-crop,
    resize and convert its images. The images decide the model's image_channels and image_size,
    and `conditional=True` trains a class-conditional DDPM on the dataset's labels.

    `overrides` sets fields of the model's Config (batch_size, lr, ...). With `resume=True` the
    model, its Config, the seed and the data come from `out`'s checkpoint and config; `steps`
    may raise the target. Without it, a folder that already holds a checkpoint is refused, so
    no saved run is overwritten by accident, and a fresh run that stops before its first step
    leaves no folder behind.

    `distributed=True` makes this process one rank of a data-parallel run launched by mpiexec
    (`tinygen.distributed`): batch_size is per rank, each rank trains on its share of every
    global batch, gradients are averaged, and only rank 0 reads and writes the run folder. The
    run resumes only on as many ranks as it was started on.

    `device` ("cpu", "cuda", "cuda:N"; default: the default device, ``TINYGEN_DEVICE``) is where
    the model trains; a run may resume on another device. Data-parallel runs train on the CPU.

    Progress (step/total, the losses, steps/s, ETA) goes to stderr unless `progress=False`: a live
    line on a terminal, elsewhere a line every `tinygen.progress.EVERY` seconds (``TINYGEN_PROGRESS_EVERY``).
    """
    for name, value in (("steps", steps), ("epochs", epochs), ("checkpoint_every", checkpoint_every),
                        ("sample_every", sample_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
    created = not os.path.exists(out)
    try:
        return _train(model_name, out, steps, epochs, overrides, seed, data, data_dir, download, image_size, channels,
                      conditional, resume, checkpoint_every, sample_every, log_every, progress, distributed, device)
    except BaseException:
        if created and not os.path.exists(os.path.join(out, CHECKPOINT)):
            shutil.rmtree(out, ignore_errors=True)  # nothing saved: a failed start leaves no folder behind
        raise


def _train(model_name, out, steps, epochs, overrides, seed, data, data_dir, download, image_size, channels,
           conditional, resume, checkpoint_every, sample_every, log_every, progress, distributed, device):
    dp = DataParallel() if distributed else None
    root = dp is None or dp.rank == 0  # the rank that writes files
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(out, CHECKPOINT)
    state = None
    if resume:  # distributed: rank 0 reads the run folder and tells the others
        state = _read_checkpoint(ckpt_path) if dp is None else dp.on_root(_read_checkpoint, ckpt_path)
        run = _run_of(state, ckpt_path)
        if run["model"] != model_name:
            raise ArgumentError(f"{out} holds a {run['model']!r} run, not {model_name!r}")
        if overrides:
            raise ArgumentError(f"--resume takes the settings from {ckpt_path}; do not pass {', '.join(overrides)}")
        if run.get("ranks") != (dp.world_size if dp else None):
            how = f"on {run['ranks']} ranks: resume it with mpiexec -n {run['ranks']} and --distributed" \
                if run.get("ranks") else "in one process: resume it without --distributed"
            raise ArgumentError(f"{out} holds a run trained {how}")
    else:
        if os.path.exists(ckpt_path) if dp is None else dp.on_root(os.path.exists, ckpt_path):
            raise ArgumentError(f"{out} already holds a run ({ckpt_path}); pass --resume to continue it or choose another --out")
        run = {"model": model_name, "seed": seed, "data": data, "data_dir": data_dir, "image_size": image_size,
               "channels": channels, "conditional": bool(conditional), "overrides": dict(overrides or {})}
        if dp:
            run["ranks"] = dp.world_size

    # runs saved before colour data have no image_size, channels or conditional: MNIST as it was
    dataset = load_dataset(run["data"], run["data_dir"], download=download, image_size=run.get("image_size"),
                           channels=run.get("channels"))
    if state is None:
        run["data_settings"] = data_settings(model_name, dataset, run["data"], run["conditional"], run["overrides"])
        run["classes"] = list(getattr(dataset, "classes", None) or [])  # names for the grids' rows
        decided = run["data_settings"]
        clash = [k for k, v in run["overrides"].items()
                 if k in ("image_channels", "image_size", "num_classes") and k in decided and v != decided[k]]
        if clash:
            given = ", ".join(f"{k}={run['overrides'][k]}" for k in clash)
            raise ArgumentError(f"{given} disagrees with the data ({', '.join(f'{k}={decided[k]}' for k in clash)}); "
                                "the images decide it")
    backend.manual_seed(run["seed"])
    # a fresh run gets today's defaults; a resumed one is rebuilt as it was saved (`_saved_overrides`)
    model = build_model(model_name, _saved_overrides(run) if resume else {**run["data_settings"], **run["overrides"]})
    device = backend.device(device) if device is not None else backend.get_default_device()
    if dp and device.type != "cpu":
        raise ArgumentError(f"--distributed trains on the CPU (MPI); it cannot run on device {device}")
    model.to(device)  # each step copies its batch there (train_step)
    if dp is None:
        loader = DataLoader(dataset, batch_size=model.config.batch_size, shuffle=True, drop_last=True, seed=run["seed"])
    else:  # this rank's share of each global batch of world_size x batch_size images
        loader = dp.loader(dataset, model.config.batch_size, run["seed"])
    if len(loader) == 0:
        raise ArgumentError(f"batch_size {model.config.batch_size} is larger than the {len(dataset)} training images")
    if epochs is not None:
        steps = epochs * len(loader)
    run["steps"] = steps if steps is not None else run.get("steps", model.config.steps)
    steps = run["steps"]
    model.config.steps = steps  # learning-rate schedules (the DDPM's cosine decay) end with the run
    run["config"] = dataclasses.asdict(model.config)
    if dp:
        dp.prepare(model, run["seed"])  # equal replicas, gradient-averaging optimizers, one random stream per rank

    step, elapsed_before = 0, 0.0  # elapsed_before: loop seconds of the steps before this invocation
    if state is not None:
        model.load_state_dict(state["model"])
        backend.set_rng_state(state["rng"] if dp is None else state["rng"][dp.rank])  # distributed: one per rank
        step = int(state["step"])
        if root:
            elapsed_before = _truncate_metrics(os.path.join(out, METRICS), step)
    if root:
        _write_json(os.path.join(out, CONFIG), run)  # for people; the checkpoint carries its own copy

    checkpoint_every = checkpoint_every or max(1, min(CHECKPOINT_EVERY, steps // 10))
    sample_every = sample_every or max(1, steps // 10)
    # a live line on a terminal, else a line every TINYGEN_PROGRESS_EVERY seconds (nohup, notebooks, log files)
    bar = Progress(steps, model_name, initial=step) if root and progress is not False else None
    # a fresh run starts a fresh metrics file: lines of a run killed before its first checkpoint go
    metrics = open(os.path.join(out, METRICS) if root else os.devnull, "w" if state is None else "a", encoding="utf-8")
    start, start_step = time.perf_counter(), step
    try:
        while step < steps:
            epoch, index = divmod(step, len(loader))
            for images, labels in loader.batches(epoch, start=index):
                losses = model.train_step(Tensor(images), labels)
                if dp:
                    losses = dp.after_step(model, losses)  # the global batch's, equal on every rank
                step += 1
                bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
                if bad:
                    raise TrainingDivergedError(
                        f"training diverged at step {step}: {', '.join(f'{k}={v}' for k, v in bad.items())}; "
                        f"the last good checkpoint is {ckpt_path}"
                    )
                seconds = time.perf_counter() - start
                rate = (step - start_step) / max(seconds, 1e-9)
                if step % log_every == 0 or step == steps:
                    line = {"step": step, **losses, "steps_per_s": rate}
                    if elapsed_before is not None:
                        line["elapsed_s"] = elapsed_before + seconds
                    metrics.write(json.dumps(line) + "\n")
                    metrics.flush()
                if step % checkpoint_every == 0 or step == steps:
                    rng = backend.get_rng_state() if dp is None else dp.rng_states()  # (every rank takes part)
                    if root:
                        save({"model": model.state_dict(), "step": step, "rng": rng, "run": run}, ckpt_path)
                if root and (step % sample_every == 0 or step == steps):
                    write_grid(model, os.path.join(out, "samples", "final.png" if step == steps else f"step_{step:06d}.png"))
                if bar is not None:
                    bar.update(1, **losses)
                if step == steps:
                    break
    finally:
        metrics.close()
        if bar is not None:
            bar.close()
    if dp:
        dp.barrier()  # rank 0's files are complete when train returns on any rank
    return ckpt_path


def write_grid(model, path, n=64, seed=1234, **options):
    """Sample n images from a fixed seed (outside the training stream) and save them as a grid;
    a class-conditional model draws one row per class instead, n // classes images each."""
    classes = getattr(model.config, "num_classes", None)
    nrow = int(math.ceil(math.sqrt(n)))
    if classes is not None and "labels" not in options:
        nrow = max(1, n // classes)
        options["labels"] = np.repeat(np.arange(classes), nrow)
        n = len(options["labels"])
    with backend.fork_rng(seed):
        samples = model.sample(n, **options)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save_png(path, image.make_grid(samples, nrow=nrow))
    return samples


def load_checkpoint(path, device=None):
    """Rebuild a run's model from its checkpoint alone, on `device` (default: the default device);
    returns (model, run, step)."""
    state = load(path)
    run = _run_of(state, path)
    model = build_model(run["model"], _saved_overrides(run))
    model.load_state_dict(state["model"])
    model.to(backend.device(device) if device is not None else backend.get_default_device())
    return model, run, int(state["step"])


def _read_checkpoint(path):
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    return load(path)


def _saved_overrides(run):
    """The settings that rebuild a saved run's model: those its data decided (`data_settings`), the
    run's overrides, and each setting that the model's Config gained after the run was saved
    (`Config.LEGACY`, absent from the run's saved config) at its value of before, so that an older
    checkpoint loads into the network it trained."""
    overrides = {**run.get("data_settings", {}), **run["overrides"]}
    config = getattr(models.MODELS.get(run["model"]), "Config", None)
    saved = run.get("config") or {}
    for field, before in getattr(config, "LEGACY", {}).items():
        overrides.setdefault(field, saved.get(field, before))
    return overrides


def _run_of(state, path):
    run = state.get("run") if isinstance(state, dict) else None
    if not isinstance(run, dict) or not {"model", "seed", "data", "overrides"} <= run.keys() or "model" not in state:
        raise CheckpointError(f"{path}: a tinygen checkpoint, but not of a training run (no model and run settings)")
    return run


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _truncate_metrics(path, step):
    """Drop metric lines logged after the checkpoint we resume from (that work is redone).

    Returns the `elapsed_s` of the last line kept (0.0 when none is kept), or None when that
    line has none (a metrics file written before the field existed).
    """
    if not os.path.exists(path):
        return 0.0
    with open(path, encoding="utf-8") as f:
        # a line without its newline is the partial write of a killed run: dropped with the redone steps
        lines = [line for line in f if line.endswith("\n") and line.strip() and json.loads(line)["step"] <= step]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(path + ".tmp", path)
    return json.loads(lines[-1]).get("elapsed_s") if lines else 0.0

