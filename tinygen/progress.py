"""Progress of a long loop (training steps, denoising steps) on stderr, in one of two modes.

On a terminal, one live line, redrawn at most five times a second. Elsewhere (a notebook, nohup,
a log file), where a redrawn line would pile up or show nothing, one plain line on the first update,
then one every `every` seconds (default 30, or ``TINYGEN_PROGRESS_EVERY``), and one at the end:

    ddpm 1200/24000 steps   5.0% | loss 0.0312 | 3.41 steps/s | elapsed 05:51 | ETA 1:51:20

    >>> import io
    >>> ticks = iter(range(0, 1000, 10))          # a clock that advances 10 s per reading
    >>> log = io.StringIO()
    >>> bar = Progress(4, "demo", file=log, live=False, every=15, clock=lambda: next(ticks))
    >>> for _ in range(4):
    ...     bar.update(loss=0.5)
    >>> print(log.getvalue(), end="")
    demo 1/4 steps  25.0% | loss 0.5 | 0.10 steps/s | elapsed 00:10 | ETA 00:30
    demo 3/4 steps  75.0% | loss 0.5 | 0.10 steps/s | elapsed 00:30 | ETA 00:10
    demo 4/4 steps 100.0% | loss 0.5 | 0.10 steps/s | elapsed 00:40 | ETA 00:00
"""

import math
import operator
import os
import sys
import time

from tinygen.errors import ArgumentError

EVERY = 30.0  # default seconds between lines when the stream is not a terminal
EVERY_VARIABLE = "TINYGEN_PROGRESS_EVERY"  # sets it
LIVE_REFRESH = 0.2  # seconds between redraws of the live line


class Progress:
    """`total` units of work (`unit`: steps, images) reported on `file` (default sys.stderr).

    `live`: redraw one line (default: whether `file` is a terminal); otherwise a line every `every`
    seconds. `clock` gives seconds (tests pass a fake one); the rate counts from the Progress's
    creation and from `initial` units (a resumed run's steps), so the ETA covers what is left.
    """

    def __init__(self, total, desc="", unit="steps", file=None, live=None, every=None, clock=time.monotonic,
                 initial=0):
        if not total > 0:
            raise ArgumentError(f"a Progress needs a positive total, got {total!r}")
        self.total, self.desc, self.unit = total, desc, unit
        self.file = sys.stderr if file is None else file
        self.live = bool(getattr(self.file, "isatty", lambda: False)()) if live is None else live
        self.every = _every_from_environment() if every is None else every
        self.clock = clock
        self.done = self._start_done = initial
        self.values = {}
        self._start = self._last_write = clock()
        self._written = None  # `done` at the last line written, None before the first

    def update(self, n=1, **values):
        """Advance by n units (a fraction too: one denoising step of a batch); `values` (the
        losses) are shown until the next update that gives some."""
        self.done += n
        if values:
            self.values = values
        now = self.clock()
        interval = LIVE_REFRESH if self.live else self.every
        if self._written is None or now - self._last_write >= interval or self.done >= self.total:
            self._write(now)

    def close(self):
        """Show the last state if it is not shown yet, and end the live line."""
        if self._written is not None and self._written != self.done:
            self._write(self.clock())
        if self.live and self._written is not None:
            self.file.write("\n")
            self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def line(self, now):
        """The report at clock time `now`: done/total, values, rate, elapsed and time left."""
        elapsed = now - self._start
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        # done may be fractional: the images of a batch half way through its denoising steps
        done = str(int(self.done)) if self.done == int(self.done) else f"{float(self.done):.1f}"
        parts = [f"{self.desc} {done}/{self.total} {self.unit} {100 * float(self.done) / self.total:5.1f}%".lstrip()]
        if self.values:
            parts.append(" ".join(f"{k} {v:.4g}" for k, v in self.values.items()))
        parts += [f"{rate:.2f} {self.unit}/s", f"elapsed {_clock(elapsed)}", f"ETA {_clock(eta)}"]
        return " | ".join(parts)

    def _write(self, now):
        text = self.line(now)
        self.file.write(f"\r{text}\033[K" if self.live else text + "\n")  # \033[K: clear the rest of the line
        self.file.flush()
        self._written, self._last_write = self.done, now


def track(iterable, progress=None, total=None, desc="sampling"):
    """Yield the items of `iterable` (a sampler's timesteps), reporting after each one.

    progress None: nothing. True: a `Progress` of `total` (default: the iterable's length) steps
    on stderr, closed at the end. A callable: called as progress(done, total) after each item, so
    a caller can count several calls' steps in one Progress (`evaluation.sample_in_batches`).
    """
    if progress is None or progress is False:
        yield from iterable
        return
    total = operator.length_hint(iterable) if total is None else total
    bar = Progress(total, desc) if progress is True else None
    try:
        for done, item in enumerate(iterable, 1):
            yield item
            if bar is None:
                progress(done, total)
            else:
                bar.update()
    finally:
        if bar is not None:
            bar.close()


def _every_from_environment():
    value = os.environ.get(EVERY_VARIABLE, str(EVERY))
    try:
        every = float(value)
    except ValueError:
        every = math.nan
    if not every > 0:
        raise ArgumentError(f"{EVERY_VARIABLE}={value!r}: give the seconds between progress lines, a number > 0")
    return every


def _clock(seconds):
    """h:mm:ss, or mm:ss under an hour; --:-- while the rate is unknown."""
    if not math.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
