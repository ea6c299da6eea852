"""How far a running job has got, for :mod:`moviessl.scheduler`'s time-left estimate.

A job the scheduler runs in a worker process has a progress file (:func:`start`); :func:`report`
writes the fraction of the job done there: training steps (a Lightning callback,
:class:`moviessl.training.ReportProgress`), seeds of a fine-tuning job, cells of the LVU table.
The scheduler reads the file to tell how long the job still needs from its own pace rather than
from the cost table alone (a job's pace on this machine is better evidence than a cost set on
another). Nested runs narrow the range: inside ``part(i, n)``, ``report(done, total)`` means
``(i + done / total) / n`` of the enclosing range, so K seeds of a training run report 0..1 once over
the whole job (:func:`share` for unequal parts); inside :func:`muted`, nothing is reported (stages
whose share of the job is unknown).
Outside a scheduled job every call does nothing. :func:`bar` is the progress bar a person reads.

The file holds ``{"fraction", "first_fraction", "first_t", "t"}`` (epoch seconds): the pace is
measured from the first report on, not from the job's start, so set-up before the first step does
not count as work done at that pace."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .io import atomic_write_json

MIN_INTERVAL_S = 1.0  # at most one write a second: a training step can take milliseconds

_path: Path | None = None
_range = (0.0, 1.0)  # the part of the job the current report() calls cover
_muted = 0
_state: dict[str, float] = {}
_last_write = 0.0
_reports = 0  # reports made in this job (a part with none inside is left out of the pace)


def start(path: str | Path | None) -> None:
    """Begin a job: its reports go to ``path`` (None: reports do nothing). A worker process runs many
    jobs one after another, so everything the last one left is reset."""
    global _path, _range, _muted, _state, _last_write, _reports
    _path, _range, _muted, _state, _last_write, _reports = (Path(path) if path else None), (0.0, 1.0), 0, {}, 0.0, 0


def stop() -> None:
    start(None)


def active() -> bool:
    """Whether reports go anywhere (a scheduled job): a caller can skip computing them otherwise."""
    return _path is not None and not _muted


def report(done: float, total: float, force: bool = False) -> None:
    """``done`` of ``total`` units of the current part are finished (written at once with ``force``,
    else at most once every :data:`MIN_INTERVAL_S`)."""
    global _reports
    if _path is None or _muted or not total or total <= 0:
        return
    lo, hi = _range
    f = lo + (hi - lo) * min(max(float(done) / float(total), 0.0), 1.0)
    now = time.time()
    if not _state:
        _state.update(first_fraction=f, first_t=now, fraction=f, t=now)
    # never backwards: a part that restarts its count (a second run inside one seed) keeps the last value
    _state["fraction"], _state["t"] = max(_state["fraction"], f), now
    _reports += 1
    if force or now - _last_write >= MIN_INTERVAL_S or f >= hi:
        _write()


def _write() -> None:
    global _last_write
    _last_write = _state["t"]
    try:
        atomic_write_json(_path, dict(_state))
    except OSError:  # an estimate must never fail the job
        pass


@contextmanager
def part(i: int, n: int) -> Iterator[None]:
    """The ``i``-th of ``n`` equal parts of the current range (:func:`share`)."""
    n = max(int(n), 1)
    with share(i / n, (i + 1) / n):
        yield


@contextmanager
def share(start: float, stop: float) -> Iterator[None]:
    """The part ``[start, stop)`` (fractions) of the current range; reports its end when it finishes.

    A part that reported nothing inside (a seed or an LVU cell a resumed job finds finished, or
    work with no reports of its own) is left out of the pace: its share and its time are moved past
    the baseline, so a resumed job's skipped parts do not count as work done in no time."""
    global _range
    saved = _range
    lo, hi = saved
    _range = (lo + (hi - lo) * start, lo + (hi - lo) * stop)
    before, entered = _reports, time.time()
    try:
        yield
        _range = saved
        was = dict(_state)
        report(stop, 1.0, force=True)
        if was and _reports == before + 1 and _state:  # only the end report: nothing paced inside
            _state["first_fraction"] += _state["fraction"] - was["fraction"]
            _state["first_t"] += _state["t"] - max(entered, was["t"])
            _write()
    finally:
        _range = saved


@contextmanager
def muted() -> Iterator[None]:
    """No reports from inside (a stage whose share of the job is not known)."""
    global _muted
    _muted += 1
    try:
        yield
    finally:
        _muted -= 1


def read(path: str | Path) -> dict[str, float] | None:
    """A job's last report, or None (no report yet, or a file that is not one)."""
    try:
        held = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    keys = ("fraction", "first_fraction", "first_t", "t")
    if not isinstance(held, dict) or not all(isinstance(held.get(k), (int, float)) for k in keys):
        return None
    return held


def bar(iterable=None, **kwargs):
    """A tqdm bar (``tqdm.auto``'s) redrawn every 0.5 s on a terminal and every 30 s into a file (a
    batch job's log), each line with its rate and time left: at tqdm's 0.1-s default a fast loop
    over a dataset (a cold frame cache over Kinetics) wrote a line per item into the log. A
    notebook's widget keeps tqdm's default. ``mininterval`` given wins. Only the process that speaks
    for a multi-process job draws one (:func:`moviessl.dist.speaks_for_job`): every rank drew its own
    over the others' on one console."""
    from tqdm import std
    from tqdm.auto import tqdm
    from tqdm.autonotebook import tqdm as widget  # std.tqdm outside a notebook

    if widget is std.tqdm:
        kwargs.setdefault("mininterval", 0.5 if sys.stderr.isatty() else 30.0)
        # tqdm's monitor redraws a bar idle past maxinterval (10 s): into a file, stale lines in between
        kwargs.setdefault("maxinterval", max(10.0, kwargs["mininterval"]))
    from ..dist import speaks_for_job

    if not speaks_for_job():
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


class BarAwareHandler(logging.StreamHandler):
    """The command's log lines (stderr) through ``tqdm.write`` while a bar is drawn: a line logged then
    (a video ``extract`` skips, a bad clip met in training) was written where the bar's line ended,
    ``extract: ... videos 0/3]WARNING moviessl.features: skipping ...``; tqdm clears the bars, writes
    the line on a line of its own and draws them again below it. Without a bar, the plain handler.

    Only in the process that installed it: a forked child (a DataLoader worker, a decoding pool)
    inherits the handler and tqdm's list of bars as they stood at the fork, and its ``tqdm.write``
    drew that copy again (stale counts) below its line, over the parent's live bars, until the parent
    next refreshed, and took tqdm's write lock, which a thread of the parent may have held at the
    fork. A child writes its lines plainly."""

    def __init__(self, stream=None):
        super().__init__(stream)
        self._pid = os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import std

        if os.getpid() != self._pid or not getattr(std.tqdm, "_instances", None):
            return super().emit(record)
        try:
            std.tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
