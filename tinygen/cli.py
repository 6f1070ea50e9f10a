"""The `tinygen` command: train, sample, eval, info, export.

    tinygen train ddpm                       # the embedded MNIST subset, default settings
    tinygen train vae --data mnist --data-dir ../shared/data/mnist --epochs 5
    tinygen train dcgan --data emoji         # 32x32 colour emoji, shipped in the package
    tinygen train ddpm --data folder --data-dir ~/pictures --image-size 32 --conditional
    tinygen train gan --out runs/gan --resume
    tinygen sample --checkpoint runs/ddpm/checkpoint.npz --sampler ddim --steps 50 --out grid.png
    tinygen sample --checkpoint runs/ddpm/checkpoint.npz --labels 0,3,5 --guidance 2
    tinygen eval --samples samples.npz --data-dir ../shared/data/mnist --json eval.json
    tinygen eval --checkpoint runs/vae/checkpoint.npz --n 10000
    tinygen export runs/ddpm/checkpoint.npz --out ddpm.safetensors   # for PyTorch: docs/interop.md
    tinygen info

Also runs as `python -m tinygen`. Errors a user can cause print one line and exit with status 2.
"""

import argparse
import contextlib
import inspect
import json
import os
import platform
import sys

import numpy as np

import tinygen
from tinygen import backend, distributed, evaluation, image, models, progress, pretrained, trainer
from tinygen.data import DATASETS
from tinygen.errors import TinygenError
from tinygen.evaluation import PROTOCOL_N
from tinygen.kernels.dispatch import kernel_info
from tinygen.safetensors import export_model
from tinygen.serialization import save


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except TinygenError as err:
        print(f"tinygen: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, trainer.TrainingDivergedError) else 2
    except KeyboardInterrupt:
        print("\ntinygen: interrupted; the last checkpoint is kept (resume with --resume)", file=sys.stderr)
        return 130


def build_parser():
    parser = argparse.ArgumentParser(prog="tinygen", description="GANs, VAEs and diffusion models from scratch.")
    parser.add_argument("--version", action="version", version=f"tinygen {tinygen.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a model; checkpoints, metrics and sample grids go to --out",
                            description="Train a model; checkpoints, metrics and sample grids go to --out. Progress "
                            "goes to stderr: a live line on a terminal, else a line every "
                            f"{progress.EVERY:g} s ({progress.EVERY_VARIABLE}=SECONDS sets it).")
    p.add_argument("model", choices=list(models.MODELS))
    p.add_argument("--data", choices=DATASETS,
                   help="embedded: the MNIST subset shipped in the package (default); emoji: 32x32 colour emoji shipped "
                        "in the package; mnist: the IDX files in --data-dir; cifar10: its binary batches in --data-dir; "
                        "folder: the images under --data-dir (classes from its subfolders); npz: the file --data-dir")
    p.add_argument("--data-dir", help="the folder (mnist, cifar10, folder) or file (npz) that --data reads")
    p.add_argument("--download", action="store_true",
                   help="mnist, cifar10: fetch missing files into --data-dir (SHA-256 checked)")
    p.add_argument("--image-size", type=int, help="centre-crop and resize the images to SxS (default: as they are)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="convert the images to grey (1) or RGB (3)")
    p.add_argument("--conditional", action="store_true",
                   help="ddpm: learn p(x | class) from the data's labels, sampled with classifier-free guidance")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help=f"training steps (default: {_config_defaults('steps')})")
    length.add_argument("--epochs", type=int, help="passes over the data instead of --steps")
    p.add_argument("--batch-size", type=int, help=f"images per step (default: {_config_defaults('batch_size')})")
    p.add_argument("--lr", type=float, help=f"learning rate (default: {_config_defaults('lr')}; "
                   "ddpm: the peak of its warm-up and cosine decay)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the data order and the noise (default 0)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: TINYGEN_DEVICE, else cpu); cuda needs tinygen[gpu]")
    p.add_argument("--out", help="run folder (default runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: a tenth of the run, "
                   f"at most {trainer.CHECKPOINT_EVERY})")
    p.add_argument("--sample-every", type=int, help="steps between sample grids (default: a tenth of the run)")
    p.add_argument("--distributed", action="store_true",
                   help="be one rank of a data-parallel run: mpiexec -n K python -m mpi4py -m tinygen train ... "
                        "--distributed (--batch-size is per rank; needs tinygen[mpi])")
    p.set_defaults(run=run_train)

    p = commands.add_parser("sample", help="draw samples from a checkpoint into a PNG grid and/or an .npz")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a run's checkpoint (tinygen train ... --out RUN writes RUN/checkpoint.npz)")
    source.add_argument("--pretrained", choices=list(pretrained.PRETRAINED),
                        help="weights shipped in the package: " + "; ".join(
                            f"{name}: {entry.about}" for name, entry in pretrained.PRETRAINED.items()))
    p.add_argument("--n", type=int, default=64, help="images to draw (default 64)")
    p.add_argument("--out", default="grid.png", help="PNG grid to write ('' for none)")
    p.add_argument("--npz", help="also write the raw samples, shape (n, C, H, W), to this .npz; until then "
                   "NPZ.partial holds the batches done, and the same command continues from it")
    p.add_argument("--batch-size", type=int, default=500, help="images sampled per call (default 500)")
    p.add_argument("--npz-dtype", choices=["uint8", "float32"], default="float32",
                   help="float32 in [0, 1] or uint8 in [0, 255] (default float32)")
    p.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp"],
                   help="diffusion models: ancestral (ddpm), ddim, or dpmpp (DPM-Solver++(2M))")
    p.add_argument("--steps", type=int, help=_sampling_steps_help())
    p.add_argument("--eta", type=float, help=f"ddim: 0 deterministic, 1 like ddpm (default {_sample_default('eta'):g})")
    p.add_argument("--labels", help="class-conditional DDPM: comma-separated classes, e.g. 0,3,5, one grid row of "
                   "n / (number of labels) images each (default: one row per class)")
    p.add_argument("--guidance", type=float, help="class-conditional DDPM: classifier-free guidance weight w "
                   f"(eps = (1 + w) eps(x, c) - w eps(x); default {_sample_default('guidance'):g}, no guidance)")
    p.add_argument("--no-ema", action="store_true", help="sample from the trained weights themselves, not their "
                   "exponential moving average (the DDPM, and GANs with ema_decay)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: TINYGEN_DEVICE, else cpu); cuda needs tinygen[gpu]")
    p.set_defaults(run=run_sample)

    p = commands.add_parser("eval", help="FD, precision/recall/coverage and more for samples, beside real data's floor")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--samples", help="an .npz holding 'samples' (n, C, H, W) of the --data images' shape, "
                        "as tinygen sample --npz writes")
    source.add_argument("--checkpoint", help="draw --n samples from this checkpoint and evaluate them")
    source.add_argument("--pretrained", choices=list(pretrained.PRETRAINED),
                        help="draw --n samples from these shipped weights and evaluate them")
    p.add_argument("--n", type=int,
                   help=f"samples to evaluate (default: all in --samples; from --checkpoint the protocol's n: "
                        f"{PROTOCOL_N:,} for MNIST, the held-out images' number for other data)")
    p.add_argument("--batch-size", type=int, default=500, help="--checkpoint: images sampled per call")
    p.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp"],
                   help="diffusion models: ancestral (ddpm), ddim, or dpmpp (DPM-Solver++(2M))")
    p.add_argument("--steps", type=int, help=_sampling_steps_help())
    p.add_argument("--eta", type=float, help=f"ddim: 0 deterministic, 1 like ddpm (default {_sample_default('eta'):g})")
    p.add_argument("--guidance", type=float, help="class-conditional DDPM: classifier-free guidance weight w "
                   "(its classes are drawn in the training data's proportions)")
    p.add_argument("--no-ema", action="store_true", help="--checkpoint: sample from the trained weights themselves, "
                   "not their exponential moving average (the DDPM, and GANs with ema_decay)")
    p.add_argument("--data", choices=["embedded", "mnist", "emoji", "cifar10", "folder", "npz"],
                   help="the dataset whose held-out images are the reference: embedded (the MNIST subset in the "
                        "package; default), mnist (--data-dir), emoji (in the package), cifar10, folder, npz (--data-dir)")
    p.add_argument("--data-dir", help="what --data reads (without --data: the MNIST IDX files, --data mnist)")
    p.add_argument("--test-dir", help="folder, npz (which have no split): the held-out images, a folder or an .npz "
                   "of images the model did not train on (--data-dir holds the training images)")
    p.add_argument("--image-size", type=int, help="cifar10, folder, npz: resize the reference images to SxS")
    p.add_argument("--channels", type=int, choices=[1, 3], help="cifar10, folder, npz: convert them to grey or RGB")
    p.add_argument("--feature-net", help="the feature network's file for data other than MNIST and emoji "
                   "(python -m tinygen.evaluation.train_feature_net --data ... --out FILE); default: the shipped one")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling, the floor's images and the bounds")
    p.add_argument("--device", help="--checkpoint: sample and run the likelihood bounds' networks on cpu, cuda or cuda:N "
                   "(default: TINYGEN_DEVICE, else cpu)")
    p.add_argument("--likelihood-n", type=int, default=1000,
                   help="--checkpoint, VAE/DDPM: test images for the likelihood bounds (default 1000; 0 skips)")
    p.add_argument("--iwae-k", type=int, default=100, help="VAE: importance samples K of the IWAE bound (default 100)")
    p.add_argument("--t-subsample", type=int, default=50,
                   help="DDPM: timesteps per image estimating bits/dim (default 50; 0: all T, exact but T network calls)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(run=run_eval)

    p = commands.add_parser("info", help="version, backends, kernels and threads")
    p.set_defaults(run=run_info)

    p = commands.add_parser("export", help="write a checkpoint's weights for other frameworks, under PyTorch's names")
    p.add_argument("checkpoint", help="a run's checkpoint.npz")
    p.add_argument("--format", choices=["safetensors"], default="safetensors",
                   help="safetensors: what PyTorch, JAX and the model hubs read (default)")
    p.add_argument("--out", help="the file to write (default: CHECKPOINT with the extension .safetensors)")
    p.add_argument("--no-ema", action="store_true", help="the trained weights themselves, not their exponential "
                   "moving average (the DDPM, and GANs with ema_decay)")
    p.set_defaults(run=run_export)
    return parser


def _config_defaults(field):
    """`field`'s default in each model's Config, for the help: 'gan 60000, dcgan 4000, ...'."""
    return ", ".join(f"{name} {getattr(cls.Config(), field):g}" for name, cls in models.MODELS.items())


def _sample_default(option):
    """The default of a diffusion model's `sample` option (sampler, eta, guidance, ...)."""
    return inspect.signature(models.DDPM.sample).parameters[option].default


def _sampling_steps_help():
    steps = {"ddim": models.DDPM.DDIM_STEPS, "dpmpp": models.DDPM.DPMPP_STEPS}
    default = _sample_default("sampler")
    others = "".join(f"{count} with {name}, " for name, count in steps.items() if name != default)
    return (f"diffusion models: sampling steps (default: {steps[default]} with the default sampler, {default}, "
            f"{others}or T if fewer; ddpm runs all T, {models.DDPM.Config().T} by default)")


def _data_of(args):
    """The dataset `--data` names: embedded without it, refused when --data-dir comes alone."""
    if args.data is None and args.data_dir is not None:
        raise tinygen.ArgumentError(f"--data-dir {args.data_dir} needs --data to say what it holds "
                                    f"({', '.join(d for d in DATASETS if d not in ('embedded', 'emoji'))})")
    return args.data or "embedded"


def run_train(args):
    overrides = {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr)) if v is not None}
    out = args.out or os.path.join("runs", args.model)
    data = _data_of(args)
    # distributed: an error on one rank aborts every rank instead of leaving them waiting
    with distributed.abort_on_error() if args.distributed else contextlib.nullcontext():
        path = trainer.train(
            args.model, out, steps=args.steps, epochs=args.epochs, overrides=overrides, seed=args.seed,
            data=data, data_dir=args.data_dir, download=args.download, image_size=args.image_size,
            channels=args.channels, conditional=args.conditional, resume=args.resume,
            checkpoint_every=args.checkpoint_every, sample_every=args.sample_every, distributed=args.distributed,
            device=args.device,
        )
    if args.distributed and distributed.rank() != 0:
        return 0
    print(f"checkpoint: {path}\nsamples: {os.path.join(out, 'samples', 'final.png')}\nmetrics: {os.path.join(out, trainer.METRICS)}")
    return 0


def _sampling_options(args, run):
    """The diffusion sampler's options given on the command line; refused for other models."""
    given = (("sampler", args.sampler), ("steps", args.steps), ("eta", args.eta),
             ("guidance", getattr(args, "guidance", None)))
    options = {k: v for k, v in given if v is not None}
    if options and run["model"] != "ddpm":
        raise tinygen.ArgumentError(f"{', '.join('--' + k for k in options)} only apply to diffusion models, not {run['model']!r}")
    if args.no_ema:
        if (run.get("config") or {}).get("ema_decay") is None:
            raise tinygen.ArgumentError(f"--no-ema: this {run['model']} keeps no average of its weights; "
                                        "it samples from its trained weights already")
        options["use_ema"] = False
    return options


def _load_model(args):
    """(model, run, step, SHA-256 of its file) of --checkpoint or --pretrained."""
    if args.checkpoint is not None:
        model, run, step = trainer.load_checkpoint(args.checkpoint, device=args.device)
        return model, run, step, evaluation.sha256_of(args.checkpoint)
    if args.no_ema:
        raise tinygen.ArgumentError(f"--no-ema: the pretrained {args.pretrained} is one set of weights "
                                    f"({pretrained.PRETRAINED[args.pretrained].about})")
    entry = pretrained.PRETRAINED[args.pretrained]
    model, run = pretrained.load_weights(pretrained.path_of(args.pretrained), sha256=entry.sha256, device=args.device)
    for name, value in entry.sample_options.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return model, run, model.step, entry.sha256


def _class_rows(args, model):
    """The class of every sample, one grid row per class, for a class-conditional model (else None):
    the classes of --labels, or all of them, each with max(1, n // classes) samples."""
    classes = getattr(model.config, "num_classes", None)
    if args.labels is None:
        return None if classes is None else np.repeat(np.arange(classes), max(1, args.n // classes))
    if classes is None:
        raise tinygen.ArgumentError("--labels applies to class-conditional models (tinygen train ddpm --conditional); "
                                    "this checkpoint's model has no classes")
    try:
        labels = [int(label) for label in args.labels.split(",")]
    except ValueError:
        raise tinygen.ArgumentError(f"--labels takes comma-separated class indices, e.g. 0,3,5; got {args.labels!r}") from None
    bad = [label for label in labels if not 0 <= label < classes]
    if bad:
        raise tinygen.ArgumentError(f"--labels {args.labels}: this model has classes 0..{classes - 1}; "
                                    f"{', '.join(map(str, bad))} is not one")
    return np.repeat(np.array(labels, np.int64), max(1, args.n // len(labels)))


def _check_output_folder(path, flag):
    """Refuse an output file whose folder does not exist before any work, not after it."""
    folder = os.path.dirname(path)
    if path and folder and not os.path.isdir(folder):
        raise tinygen.ArgumentError(f"{flag} {path}: the folder {folder} does not exist")


def run_sample(args):
    _check_output_folder(args.out, "--out")
    model, run, step, digest = _load_model(args)
    options = _sampling_options(args, run)
    for name in ("n", "batch_size"):
        if getattr(args, name) < 1:
            raise tinygen.ArgumentError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    labels = _class_rows(args, model)
    n, nrow = (args.n, int(np.ceil(np.sqrt(args.n)))) if labels is None else (len(labels), len(labels) // len(set(labels)))
    if labels is not None:
        options["labels"] = labels
        names = run.get("classes") or []
        rows = ", ".join(f"{k} {names[k]}" if k < len(names) else str(k) for k in dict.fromkeys(labels.tolist()))
        print(f"rows: {rows} ({nrow} samples each)")
    # With --npz, a killed run (hours of DDPM sampling on a CPU) continues from NPZ.partial
    partial = args.npz + ".partial" if args.npz else None
    key = dict(checkpoint=digest, model=run["model"], step=step) if args.npz else None
    samples = evaluation.sample_in_batches(model, n, args.batch_size, args.seed, options, progress=sys.stderr,
                                           partial=partial, key=key)  # (n, C, H, W) float32 in [0, 1]
    if args.out:
        image.save_png(args.out, image.make_grid(samples, nrow=nrow))
        print(f"grid: {args.out}")
    if args.npz:
        data = samples if args.npz_dtype == "float32" else np.round(samples * 255).astype(np.uint8)
        save({"samples": data, "model": run["model"], "step": step, "seed": args.seed, "options": options}, args.npz)
        print(f"samples: {args.npz} ({data.dtype}, shape {data.shape})")
        if os.path.exists(partial):
            os.remove(partial)
    return 0


def run_eval(args):
    _check_output_folder(args.json or "", "--json")
    data = args.data or ("mnist" if args.data_dir else "embedded")
    if data == "mnist" and not args.data_dir:
        raise tinygen.ArgumentError("--data mnist needs --data-dir, the folder holding the MNIST IDX files")
    if data == "embedded" and args.data_dir:
        raise tinygen.ArgumentError("--data embedded takes no --data-dir (leave out --data to use the files)")
    for name in ("n", "batch_size", "likelihood_n", "iwae_k", "t_subsample"):
        value, least = getattr(args, name), 0 if name in ("likelihood_n", "t_subsample") else 1
        if value is not None and value < least:
            raise tinygen.ArgumentError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    if (args.test_dir is None) == (data in ("folder", "npz")):
        raise tinygen.ArgumentError(f"--data {data} has no split: give --test-dir, held-out images the model did not "
                                    "train on" if args.test_dir is None else "--test-dir is for --data folder and npz")
    if data in ("embedded", "mnist") and (args.feature_net, args.image_size, args.channels) != (None, None, None):
        raise tinygen.ArgumentError("--feature-net, --image-size and --channels do not apply to MNIST: its protocol "
                                    "uses the shipped LeNet on the 28x28 grey digits")
    # the shipped network checks its SHA-256 first; one you trained is not pinned
    net = (evaluation.load_feature_net(args.feature_net, sha256=None) if args.feature_net is not None
           else evaluation.shipped_feature_net(data))
    extra = {}
    if args.samples:
        if any(v is not None for v in (args.sampler, args.steps, args.eta, args.guidance)) or args.no_ema:
            raise tinygen.ArgumentError("--sampler, --steps, --eta, --guidance and --no-ema apply to --checkpoint only")
        ref = evaluation.reference(args.data_dir, net=net, data=data, image_size=args.image_size,
                                   channels=args.channels, test_dir=args.test_dir)
        samples, source = evaluation.load_samples(args.samples, shape=ref.shape), args.samples
        if args.n is not None:
            if args.n > len(samples):
                raise tinygen.ArgumentError(f"--n {args.n}: {args.samples} holds only {len(samples)} samples")
            samples = samples[: args.n]
    else:
        model, run, step, _ = _load_model(args)
        options = _sampling_options(args, run)
        if run["model"] == "ddpm" and args.likelihood_n and args.t_subsample >= model.schedule.T:
            raise tinygen.ArgumentError(f"--t-subsample {args.t_subsample}: this DDPM has T = {model.schedule.T} "
                                        f"timesteps; give 1..{model.schedule.T - 1}, or 0 for all T")
        ref = evaluation.reference(args.data_dir, net=net, data=data, image_size=args.image_size,
                                   channels=args.channels, test_dir=args.test_dir)
        shape = (model.config.image_channels, model.config.image_size, model.config.image_size)
        if shape != tuple(ref.shape):  # before any sampling
            raise tinygen.ArgumentError(f"{args.checkpoint or args.pretrained} draws images of shape {shape}, "
                                        f"but the --data {data} reference's are {tuple(ref.shape)}: "
                                        "evaluate it on the data it was trained on")
        n = ref.protocol_n if args.n is None else args.n
        settings = ", ".join([run["model"]] + [f"{k}={v}" for k, v in options.items()])
        if getattr(model.config, "num_classes", None) is not None:
            options["labels"] = _training_proportions(data, args, n)
            settings += ", classes in the training data's proportions"
        samples = evaluation.sample_in_batches(model, n, args.batch_size, args.seed, options, progress=sys.stderr)
        source = f"{args.checkpoint or 'the pretrained ' + args.pretrained} (step {step}, {settings})"
        extra = evaluation.likelihood_metrics(model, run["model"], ref.test_images[: args.likelihood_n], seed=args.seed,
                                              iwae_k=args.iwae_k, t_subsample=args.t_subsample,
                                              use_ema=options.get("use_ema", True))

    metrics = evaluation.evaluate(samples, ref, net=net)
    floor_metrics, floor_n = evaluation.floor(ref, len(samples), seed=args.seed, net=net)
    rows = evaluation.report(metrics, len(samples), floor_metrics, floor_n, extra)

    print(f"samples: {source}")
    for part, what in ref.description.items():
        print(f"reference ({part}): {what}")
    print(f"floor: {floor_n:,} real training images (seed {args.seed}) measured the same way")
    print(f"feature network: {type(net).__name__}, "
          + (f"SHA-256 {ref.feature_net_sha256[:16]}..." if args.feature_net is None else
             f"{args.feature_net} (SHA-256 {ref.feature_net_sha256[:16]}..., not pinned)"))
    if extra:
        print(f"likelihood bounds: the first {min(args.likelihood_n, len(ref.test_images)):,} of those test images "
              f"(seed {args.seed}); no floor")
    if len(samples) != ref.protocol_n:
        print(f"NOTE: n = {len(samples):,}, not the protocol's {ref.protocol_n:,}: FD grows as n shrinks, "
              "so compare it only with numbers at the same n (KID is unbiased)")
    print()
    print(evaluation.format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(evaluation.summary(source, rows, ref, args.seed), f, indent=2)
            f.write("\n")
        print(f"\njson: {args.json}")
    return 0


def _training_proportions(data, args, n):
    """n classes for a class-conditional model's samples, drawn with --seed from the training
    images' labels, so that the samples' classes come in the proportions the test images have."""
    from tinygen.evaluation.protocol import load_split  # NOTE: here: only conditional models need it

    _, labels, _ = load_split(data, args.data_dir, True, args.image_size, args.channels)
    if labels is None:
        raise tinygen.ArgumentError(f"{args.checkpoint or args.pretrained} is class-conditional, but --data {data} "
                                    "has no labels to draw its classes from")
    return np.random.default_rng(args.seed).choice(labels, size=n)


def run_info(args):
    info = kernel_info()
    print(f"tinygen {tinygen.__version__} (Python {platform.python_version()}, NumPy {np.__version__})")
    print(f"kernels: {info['backend'] or 'unavailable'} (TINYGEN_KERNELS={info['requested'] or os.environ.get('TINYGEN_KERNELS')})")
    if info["error"]:
        print(f"  {info['error']}")
    if info["numba"]:
        print(f"numba: {info['numba']}, threading layer {info['threading_layer']}, {info['threads']} threads")
        print(f"BLAS in kernels: {info['blas']}")
    elif info["numba_error"]:
        print(f"numba: not available ({info['numba_error']}); pip install 'tinygen[cpu]' for the fast kernels")
    print(f"cores: {os.cpu_count()}")
    gpus, why_not = backend.gpu_info()
    for g in gpus:
        print(f"gpu cuda:{g['index']}: {g['name']}, {g['memory_gib']:.1f} GiB, compute capability "
              f"{g['compute_capability']} (CuPy {g['cupy']}, CUDA runtime {g['cuda_runtime']}, driver {g['driver']})")
    if why_not:
        print(f"gpu: {'error: ' if gpus else 'none: '}{why_not}")
    try:
        print(f"default device: {backend.get_default_device()} (TINYGEN_DEVICE={os.environ.get('TINYGEN_DEVICE', 'unset')})")
    except tinygen.TinygenError as err:
        print(f"default device: unavailable: {err}")
    print(f"models: {', '.join(models.MODELS)}")
    return 0


def run_export(args):
    out = args.out or os.path.splitext(args.checkpoint)[0] + ".safetensors"
    _check_output_folder(out, "--out")
    model, run, step = trainer.load_checkpoint(args.checkpoint, device="cpu")
    if args.no_ema and getattr(model, "ema", None) is None:
        raise tinygen.ArgumentError(f"--no-ema: this {run['model']} keeps no average of its weights; "
                                    "it exports its trained weights already")
    tensors = export_model(model, out, use_ema=not args.no_ema)
    which = "trained weights" if args.no_ema or getattr(model, "ema", None) is None else "EMA weights"
    size = sum(a.nbytes for a in tensors.values())
    print(f"weights: {out} ({run['model']}, step {step}, {which}: {len(tensors)} tensors, {size:,} bytes)")
    return 0
