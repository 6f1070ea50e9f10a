"""Progress on stderr (tinygen.progress): its lines and cadence in both modes, the sampler's hook,
sampling in batches, the trainer's lines, and the defaults that --help prints."""

import inspect
import io
import json
import re

import numpy as np
import pytest

from tinygen import backend, cli, evaluation, models, progress, trainer
from tinygen.errors import ArgumentError
from tinygen.progress import Progress, track

LINE = re.compile(
    r"^(?P<desc>\S+) (?P<done>[\d.]+)/(?P<total>\d+) (?P<unit>\w+) +(?P<percent>[\d.]+)%"
    r"(?: \| (?P<values>[^|]+))? \| (?P<rate>[\d.]+) (?P=unit)/s \| elapsed (?P<elapsed>[\d:]+) \| ETA (?P<eta>[\d:-]+)$"
)


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def seconds(clock_text):
    """'1:02:03' or '02:03' -> seconds."""
    total = 0
    for part in clock_text.split(":"):
        total = 60 * total + int(part)
    return total


def parsed(text):
    lines = text.splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return [m.groupdict() for m in matches]


def test_lines_when_not_a_terminal_come_every_so_many_seconds_with_step_losses_rate_and_eta():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(100, "ddpm", file=out, every=30, clock=clock)
    assert not bar.live  # a StringIO is not a terminal
    written_at = []
    for step in range(1, 101):
        clock.now += 2.5  # 0.4 steps/s
        before = out.getvalue().count("\n")
        bar.update(loss=1 / step, grad=2.0)
        if out.getvalue().count("\n") > before:
            written_at.append(step)
    bar.close()
    # the first update, then the first update >= 30 s after the last line (12 steps of 2.5 s), then the end
    assert written_at == [1, 13, 25, 37, 49, 61, 73, 85, 97, 100]
    assert "\r" not in out.getvalue() and "\033" not in out.getvalue()
    lines = parsed(out.getvalue())
    for step, line in zip(written_at, lines):
        assert (line["desc"], int(line["done"]), int(line["total"]), line["unit"]) == ("ddpm", step, 100, "steps")
        assert float(line["percent"]) == pytest.approx(step, abs=0.05)
        assert line["values"] == f"loss {1 / step:.4g} grad 2"
        assert float(line["rate"]) == pytest.approx(0.4)
        assert seconds(line["elapsed"]) == int(2.5 * step)
        assert seconds(line["eta"]) == int((100 - step) / 0.4)


def test_close_shows_the_last_state_once():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(10, "gan", file=out, every=30, clock=clock)
    for _ in range(4):  # stopped early (an interrupt): steps 2..4 fell between lines
        clock.now += 1
        bar.update()
    bar.close()
    bar.close()
    assert [int(line["done"]) for line in parsed(out.getvalue())] == [1, 4]
    assert [line["eta"] for line in parsed(out.getvalue())] == ["00:09", "00:06"]


def test_a_terminal_gets_one_live_line_redrawn_at_most_every_refresh(monkeypatch):
    monkeypatch.setattr(progress, "LIVE_REFRESH", 0.25)  # and clock steps of 1/16 s: exact in binary
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(50, "vae", file=out, live=True, every=30, clock=clock)
    for _ in range(50):
        clock.now += progress.LIVE_REFRESH / 4
        bar.update(loss=0.5)
    bar.close()
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    frames = [frame.removesuffix("\033[K") for frame in text.rstrip("\n").split("\r")[1:]]
    assert all(f.endswith("\033[K") for f in text.rstrip("\n").split("\r")[1:])
    done = [int(line["done"]) for line in parsed("\n".join(frames))]
    assert done == [1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 49, 50]  # every 4th update, and the end


def test_rate_and_eta_of_a_resumed_run_count_from_where_it_resumed():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(1000, "ddpm", file=out, every=30, clock=clock, initial=900)
    clock.now += 10
    bar.update(10)
    (line,) = parsed(out.getvalue())
    assert int(line["done"]) == 910 and float(line["rate"]) == 1.0 and seconds(line["eta"]) == 90


def test_the_environment_sets_the_cadence(monkeypatch):
    monkeypatch.setenv(progress.EVERY_VARIABLE, "2.5")
    assert Progress(3, file=io.StringIO()).every == 2.5
    monkeypatch.delenv(progress.EVERY_VARIABLE)
    assert Progress(3, file=io.StringIO()).every == progress.EVERY
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv(progress.EVERY_VARIABLE, bad)
        with pytest.raises(ArgumentError, match=f"{progress.EVERY_VARIABLE}='{bad}'"):
            Progress(3)


def test_a_progress_needs_a_positive_total():
    with pytest.raises(ArgumentError, match="positive total, got 0"):
        Progress(0)


def test_track_passes_items_through_and_reports_each(capsys):
    assert list(track(iter("abc"))) == ["a", "b", "c"]
    calls = []
    assert list(track(reversed(range(4)), lambda done, total: calls.append((done, total)))) == [3, 2, 1, 0]
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert list(track(range(5), True, desc="sampling")) == list(range(5))
    lines = parsed(capsys.readouterr().err)
    assert (lines[0]["desc"], lines[0]["done"], lines[-1]["done"], lines[-1]["total"]) == ("sampling", "1", "5", "5")


@pytest.fixture(scope="module")
def ddpm():
    backend.manual_seed(0)
    return models.DDPM(models.DDPM.Config(T=12, channels=[8, 8], attn_resolutions=[], groups=4))


@pytest.mark.parametrize("options, steps", [({"sampler": "ddpm"}, 12), ({"sampler": "ddim", "steps": 5}, 5)])
def test_ddpm_sample_reports_each_denoising_step_and_draws_the_same(ddpm, options, steps):
    calls = []
    backend.manual_seed(3)
    with_hook = ddpm.sample(2, **options, progress=lambda done, total: calls.append((done, total)))
    backend.manual_seed(3)
    np.testing.assert_array_equal(with_hook, ddpm.sample(2, **options))
    assert calls == [(k, steps) for k in range(1, steps + 1)]


def test_sampling_in_batches_advances_per_denoising_step(ddpm):
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(progress.EVERY_VARIABLE, "1e-9")  # a line at every update
        evaluation.sample_in_batches(ddpm, 5, 2, 0, {"steps": 4}, progress=out)
    lines = parsed(out.getvalue())
    # batches of 2, 2, 1 images, each over 4 steps: every step does a quarter of its batch
    expected = np.cumsum([2 / 4] * 4 + [2 / 4] * 4 + [1 / 4] * 4)
    assert [float(line["done"]) for line in lines] == pytest.approx(np.round(expected, 1))
    assert {(line["desc"], line["total"], line["unit"]) for line in lines} == {("sampling", "5", "images")}
    assert lines[-1]["done"] == "5" and lines[-1]["percent"] == "100.0"


def test_sampling_in_batches_advances_per_batch_for_one_shot_models():
    backend.manual_seed(0)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(progress.EVERY_VARIABLE, "1e-9")
        evaluation.sample_in_batches(models.VAE(), 7, 3, 0, progress=out)
    assert [line["done"] for line in parsed(out.getvalue())] == ["3", "6", "7"]


def test_training_reports_losses_to_stderr_that_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(progress.EVERY_VARIABLE, "1e-9")
    trainer.train("vae", str(tmp_path / "run"), steps=6, overrides={"batch_size": 8}, log_every=1)
    lines = parsed(capsys.readouterr().err)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["desc"], int(line["done"]), line["total"]) for line in lines] == [("vae", k, "6") for k in range(1, 7)]
    for line, logged in zip(lines, metrics):
        losses = {k: v for k, v in logged.items() if k not in ("step", "steps_per_s", "elapsed_s")}
        assert line["values"] == " ".join(f"{k} {v:.4g}" for k, v in losses.items())

    trainer.train("vae", str(tmp_path / "quiet"), steps=2, overrides={"batch_size": 8}, progress=False)
    assert capsys.readouterr().err == ""


def help_text(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare with single spaces


def test_train_help_prints_each_models_defaults(capsys):
    text = help_text(["train", "--help"], capsys)
    for field, flag in (("steps", "--steps"), ("batch_size", "--batch-size"), ("lr", "--lr")):
        shown = ", ".join(f"{name} {getattr(cls.Config(), field):g}" for name, cls in models.MODELS.items())
        assert shown in text, field
    assert f"at most {trainer.CHECKPOINT_EVERY}" in text and progress.EVERY_VARIABLE in text
    assert "the model's own" not in text


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_sampling_help_prints_the_samplers_defaults(command, capsys):
    text = help_text([command, "--help"], capsys)
    assert f"default: {models.DDPM.DDIM_STEPS} with the default sampler, ddim" in text
    assert f"{models.DDPM.Config().T} by default" in text
    eta = re.search(r"--eta ETA ddim: [^(]*\(default ([^)]*)\)", text).group(1)
    assert float(eta) == inspect.signature(models.DDPM.sample).parameters["eta"].default
