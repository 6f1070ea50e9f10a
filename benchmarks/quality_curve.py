"""Sample quality against training time: one model trained in stages, scored after each stage.

    python -m benchmarks.quality_curve --model vae --steps 2000,10000,30000,60000
    python -m benchmarks.quality_curve --model gan --steps 20,40 --n 200 --runs /tmp/curve   # a smoke test
    python -m benchmarks.quality_curve --model ddpm --steps 2000,4000,8000 --sampler ddim100 --device cuda --batch-size 2000

Where a family misses its quality bar under its default budget, the question is whether more
training would close the gap. This trains `tinygen train MODEL` (seed 0, the embedded subset or,
with --train-data mnist, the 60,000 images of --data-dir; the model's default configuration, or
with the batch size and learning rate of --train-batch-size and --lr) to each step count of
--steps in turn, resuming the same run, and after each stage draws n samples
from the checkpoint as `benchmarks.quality` does (GANs with batch norm in eval mode, the MLP GAN
from its weights' average, VAE decoder means, the DDPM's EMA weights with --sampler) and scores
them with `tinygen.evaluation` against the MNIST files of --data-dir: FD, precision, recall,
coverage and the digits present, beside the floor (n real training images). The training time of
each point is the run's own clock (`elapsed_s` in its metrics.jsonl, summed over the stages).
--device cuda trains and samples on a GPU (`tinygen train --device`); the scoring stays on the CPU.
A run folder trained with other settings or on other data is refused.

NOTE: a stage only raises the run's target step count; the models with a learning-rate schedule
tied to `steps` (the DDPM's cosine decay) then continue a schedule stretched to the new target,
so a point of the curve is not the run that would have had that budget from the start. The GANs
and the VAEs train at a constant learning rate and are unaffected.

Prints a Markdown table; writes every number to --out (default RUNS/MODEL/curve.json) after each point.
"""

import argparse
import json
import os
import sys
import time

from benchmarks import machine
from benchmarks.quality import SEED, checked_device, describe_sampler, device_label, duration, parse_samplers, report_training_data, training_seconds
from tinygen import evaluation, models, trainer
from tinygen.evaluation import PROTOCOL_N
from tinygen.serialization import load


def build_parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality_curve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=sorted(models.MODELS))
    p.add_argument("--steps", required=True, help="increasing step counts, comma-separated (e.g. 2000,10000,60000)")
    p.add_argument("--runs", default=os.path.join("runs", "curve"), help="folder of the run (default runs/curve)")
    p.add_argument("--n", type=int, default=PROTOCOL_N, help=f"samples per point (default {PROTOCOL_N:,})")
    p.add_argument("--batch-size", type=int, default=500, help="images per sample() call (default 500)")
    p.add_argument("--sampler", help="DDPM only: one sampler, ddpm or ddimS (default ddim20)")
    p.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "mnist"),
                   help="the MNIST IDX files (default ../shared/data/mnist; '' for the embedded reference)")
    p.add_argument("--train-data", choices=("embedded", "mnist"), default="embedded",
                   help="train on the embedded subset (default) or on the 60,000 training images of --data-dir")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and the floor")
    p.add_argument("--train-batch-size", type=int, help="the model's training batch size (default: its own)")
    p.add_argument("--lr", type=float, help="the model's learning rate (default: its own)")
    p.add_argument("--device", help="where the model trains and samples: cpu, cuda or cuda:N "
                   "(default: TINYGEN_DEVICE, else cpu)")
    p.add_argument("--out", help="the JSON results (default RUNS/MODEL/curve.json)")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--steps: comma-separated integers, got {args.steps!r}")
    if not steps or steps[0] < 1 or any(b <= a for a, b in zip(steps, steps[1:])):
        parser.error(f"--steps must be positive and increasing, got {args.steps!r}")
    if args.n < 4:
        parser.error("--n must be at least 4 (k-NN with k = 3)")
    if (args.train_batch_size is not None and args.train_batch_size < 1) or (args.lr is not None and not args.lr > 0):
        parser.error("--train-batch-size must be at least 1 and --lr positive")
    overrides = {k: v for k, v in (("batch_size", args.train_batch_size), ("lr", args.lr)) if v is not None}
    if args.sampler is not None and args.model != "ddpm":
        parser.error(f"--sampler applies to the DDPM only, not {args.model}")
    try:
        samplers = parse_samplers(args.sampler or "ddim20") if args.model == "ddpm" else [("", {})]
    except ValueError as err:
        parser.error(str(err))
    if len(samplers) != 1:
        parser.error(f"--sampler: one sampler per curve, got {args.sampler!r}")
    options = samplers[0][1]
    data_dir = args.data_dir or None
    if data_dir is not None and not os.path.isdir(data_dir):
        parser.error(f"--data-dir {data_dir!r} is no folder: give the folder of the MNIST IDX files")
    if args.train_data == "mnist" and data_dir is None:
        parser.error("--train-data mnist trains on the MNIST files of --data-dir: give that folder")
    train_dir = data_dir if args.train_data == "mnist" else None
    device = checked_device(parser, args.device)
    out_dir = os.path.join(args.runs, args.model)
    out = args.out or os.path.join(out_dir, "curve.json")

    print(f"machine: {machine.describe()}; load average (1 min) {os.getloadavg()[0]:.2f}")
    print(f"device of the model: {device_label(device)}")
    print(f"training data: {report_training_data(train_dir)}")
    if overrides:
        print(f"NOTE: the model's configuration changed from its default: {overrides}")
    net = evaluation.load_feature_net()
    ref = evaluation.reference(data_dir, net=net)
    floor, floor_n = evaluation.floor(ref, args.n, seed=args.seed, net=net)
    sampler = describe_sampler(args.model, options)
    report = {"command": ["python", "-m", "benchmarks.quality_curve"] + list(sys.argv[1:] if argv is None else argv),
              "machine": machine.describe(), "device": device_label(device), "model": args.model, "sampler": sampler, "n": args.n,
              "training_data": report_training_data(train_dir), "overrides": overrides,
              "feature_net_sha256": evaluation.WEIGHTS_SHA256, "reference": ref.description,
              "floor": {"n": floor_n, **floor}, "points": []}
    if args.n != PROTOCOL_N:
        print(f"NOTE: n = {args.n:,}, not the protocol's {PROTOCOL_N:,}: compare only with numbers at the same n")
    print("\n| step | training time | FD | precision | recall | coverage | digits present |\n|---|---|---|---|---|---|---|")
    print(f"| floor ({floor_n:,} real training images) | - | {floor['fd']:.2f} | {floor['precision']:.3f} | "
          f"{floor['recall']:.3f} | {floor['coverage']:.3f} | {floor['classes_present']} |", flush=True)
    checkpoint = os.path.join(out_dir, trainer.CHECKPOINT)
    if os.path.exists(checkpoint):
        run = load(checkpoint)["run"]
        if (run["data"], run["data_dir"]) != (args.train_data, train_dir):
            parser.error(f"{out_dir} holds a run trained on {run['data']} data ({run['data_dir']}), not "
                         f"--train-data {args.train_data}: choose another --runs")
        if run.get("overrides", {}) != overrides:
            parser.error(f"{out_dir} holds a run trained with the settings {run.get('overrides', {})}, not "
                         f"{overrides}: choose another --runs")
    for target in steps:
        if not os.path.exists(checkpoint):
            trainer.train(args.model, out_dir, steps=target, overrides=overrides, seed=SEED, data=args.train_data,
                          data_dir=train_dir, sample_every=None, progress=False, device=device)
        elif int(load(checkpoint)["step"]) < target:
            trainer.train(args.model, out_dir, steps=target, resume=True, sample_every=None, progress=False,
                          device=device)
        model, run, step = trainer.load_checkpoint(checkpoint, device=device)
        seconds, _ = training_seconds(out_dir, target)
        start = time.perf_counter()
        samples = evaluation.sample_in_batches(model, args.n, args.batch_size, args.seed, options)
        sample_seconds = time.perf_counter() - start
        m = evaluation.evaluate(samples, ref, net=net)
        report["points"].append({"step": step, "training_s": seconds, "sample_s": sample_seconds, "metrics": m})
        with open(out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, default=float)
        print(f"| {step:,} | {duration(seconds)} | {m['fd']:.2f} | {m['precision']:.3f} | {m['recall']:.3f} | "
              f"{m['coverage']:.3f} | {m['classes_present']} |", flush=True)
    print(f"\n{args.model}, samples: {sampler}; n = {args.n:,}; JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
