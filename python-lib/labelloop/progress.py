"""Progress of long work (CLI commands, recipes, scenario steps): a bar with rate and ETA on a
terminal, periodic log lines otherwise. `Progress` is the one implementation: `progress` is
it for a `with` block, `track` for a loop over an iterable (a recipe's `ctx.progress`)."""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import click

LOG = logging.getLogger("labelloop.progress")

DEFAULT_INTERVAL = 5.0  # seconds between two log lines when stderr is not a terminal


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("LABELLOOP_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _amount(n: float, unit: str) -> str:
    if unit == "bytes":
        for size, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if n >= size:
                return f"{n / size:.1f} {suffix}"
        return f"{n:.0f} B"
    return f"{n:,.0f} {unit}"


def _rate(done: float, seconds: float, unit: str) -> str:
    return f"{_amount(done / seconds, unit)}/s" if seconds > 0 else f"- {unit}/s"


class Progress:
    """`update(n)` as work advances; what it shows depends on where stderr goes.

    Off a terminal a line is logged (to `log`) every `interval` seconds
    (`LABELLOOP_PROGRESS_INTERVAL`, default 5), and with `steps` also at each `1/steps` of a
    known total.
    """

    def __init__(self, label: str, total: int | None, unit: str = "rows",
                 bar: bool | None = None, interval: float | None = None,
                 log: logging.Logger | None = None, steps: int = 0):
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.started = time.monotonic()
        self.log = log or LOG
        self._last_line = self.started
        self._interval = _interval() if interval is None else interval
        self._step = -(-total // steps) if total and steps else 0
        self._next_step = self._step
        self._lines = 0  # log lines written: short work ends without any
        self._bar = None
        if total is not None and (bar if bar is not None else sys.stderr.isatty()):
            self._bar = click.progressbar(length=total, label=label, file=sys.stderr,
                                          show_eta=True, show_percent=total is not None,
                                          item_show_func=self._rate_text)
            self._bar.__enter__()

    def _rate_text(self, _item: Any = None) -> str:
        return _rate(self.done, time.monotonic() - self.started, self.unit)

    def update(self, n: int) -> None:
        """`n` more units done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        stepped = bool(self._step) and self.done >= self._next_step
        if stepped:
            self._next_step = (self.done // self._step + 1) * self._step
        if stepped or now - self._last_line >= self._interval:
            self._last_line = now
            self._lines += 1
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """`label: done/total (pct), rate, ETA`."""
        elapsed = (now or time.monotonic()) - self.started
        text = f"{self.label}: {_amount(self.done, self.unit)}"
        if self.total:
            text += f" of {_amount(self.total, self.unit)} ({100 * self.done / self.total:.0f}%)"
        text += f", {_rate(self.done, elapsed, self.unit)}"
        if self.total and self.done and elapsed > 0:
            left = (self.total - self.done) * elapsed / self.done
            text += f", ETA {left:.0f}s"
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        elif self._lines:
            elapsed = time.monotonic() - self.started
            self.log.info("%s: %s done in %.1fs (%s)", self.label,
                          _amount(self.done, self.unit), elapsed,
                          _rate(self.done, elapsed, self.unit))


@contextmanager
def progress(label: str, total: int | None, unit: str = "rows",
             bar: bool | None = None) -> Iterator[Callable[[int], None]]:
    """A `Progress` for a `with` block; yields its `update(n)`."""
    p = Progress(label, total, unit, bar)
    try:
        yield p.update
    finally:
        p.close()


def track(iterable: Iterable, label: str = "working", total: int | None = None, *,
          log: logging.Logger | None = None, bar: bool | None = None, unit: str = "items",
          steps: int = 10) -> Iterator:
    """The items of `iterable`, each one advancing a `Progress` (a line at each tenth of a
    known total off a terminal); `total` defaults to the iterable's length if it has one."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    p = Progress(label, total, unit, bar, log=log, steps=steps)
    try:
        for item in iterable:
            yield item
            p.update(1)
    finally:
        p.close()


def tracker(log: logging.Logger, bar: bool | None = None) -> Callable[..., Iterator]:
    """`track` logging to `log`: a recipe's or a step's `ctx.progress(iterable, label,
    total=None)`."""
    return functools.partial(track, log=log, bar=bar)


class CountingReader:
    """A binary file whose reads advance a progress `update(n)` (n bytes)."""

    def __init__(self, raw: Any, update: Callable[[int], None]):
        self._raw, self._update = raw, update

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._update(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        self._update(n or 0)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")
