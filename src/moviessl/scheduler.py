"""Run a graph of jobs on a few worker processes, each job at one torch thread (or a few).

Small models use two threads poorly (the demo's jobs are tiny CPU models); two independent jobs side
by side at one thread each keep both cores busy. :func:`run_jobs` starts a job as soon as the jobs it
depends on are finished, on ``workers`` persistent processes (``spawn``: torch and Lightning are
imported once per worker, not once per job), and prints one line per job with the time left.

``workers`` is also the number of cores the jobs share: a job at ``t`` torch threads takes
``min(t, workers)`` of them, and jobs start side by side only while their threads fit, so a run at 2
threads per job on 2 cores never puts 4 threads on them. A job whose own preset pins its thread count
(``Job.threads``, e.g. the tiny task heads at 1) runs at that count whatever the run's; two such jobs
share the 2 cores while the 2-thread jobs run alone. Jobs start in list order: a job that does not
fit yet is not overtaken by smaller ones behind it (the graph's critical path comes first in the
demo's list).

A job is finished when its ``done`` file exists (the file a stage writes last, e.g. a run's
``summary.json``): finished jobs are never run again, so an interrupted graph resumes where it
stopped. ``workers=1`` runs everything in this process, in dependency order (tests, debugging), at
``threads`` torch threads.
"""

from __future__ import annotations

import importlib
import json
import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .utils.io import atomic_write_json

log = logging.getLogger("moviessl")


@dataclass
class Job:
    name: str  # unique; shown in the progress lines
    fn: str  # "package.module:function", imported in the worker
    kwargs: dict[str, Any] = field(default_factory=dict)  # picklable
    deps: tuple[str, ...] = ()
    done: str | None = None  # a file that exists once the job has finished (None: always run)
    cost: float = 10.0  # expected seconds at one thread on an idle core (time-left estimates)
    threads: int | None = None  # torch threads the job runs at whatever the run's (None: the run's)

    def is_done(self) -> bool:
        return self.done is not None and Path(self.done).is_file()


def call(fn: str, kwargs: dict) -> Any:
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the scheduling process dies (killed, or stopped with Ctrl-C),
    so an interrupted demo leaves no job running that a rerun would start a second time."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux / no glibc: workers then end with their job
        pass


def _set_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # what moviessl.training.cpu_threads honours
    import torch

    torch.set_num_threads(threads)


def _init_worker(threads: int) -> None:
    _die_with_parent()
    _set_threads(threads)
    logging.getLogger().setLevel(logging.WARNING)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (a job's own process pools)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed_call(fn: str, kwargs: dict, threads: int) -> dict:
    """Run one job at ``threads`` torch threads; its wall and CPU seconds, start (epoch s), threads."""
    _set_threads(threads)
    start, t, cpu = time.time(), time.perf_counter(), _cpu_seconds()
    call(fn, kwargs)
    return {
        "start": start,
        "wall": time.perf_counter() - t,
        "cpu": _cpu_seconds() - cpu,
        "pid": os.getpid(),
        "threads": threads,
    }


def _run_in_worker(name: str, fn: str, kwargs: dict, threads: int) -> tuple[str, dict]:
    return name, _timed_call(fn, kwargs, threads)


def _fmt(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 60}m{s % 60:02d}s"


class _Progress:
    def __init__(self, jobs: list[Job], workers: int, timings: Path | None):
        if timings is not None and timings.name == "profile.json":
            # the profile is written beside the timings file under this name: one would overwrite the other
            raise ValueError(f"{timings}: the timings file may not be named profile.json (the profile's name)")
        self.jobs, self.workers, self.timings_path = jobs, workers, timings
        self.timings: dict[str, float] = json.loads(timings.read_text()) if timings and timings.is_file() else {}
        # per job: start (epoch s), wall and CPU seconds, worker pid -- benchmarks/demo_profile.py
        self.profile_path = timings.with_name("profile.json") if timings else None
        self.profile: dict[str, dict] = (
            json.loads(self.profile_path.read_text()) if self.profile_path and self.profile_path.is_file() else {}
        )
        self.t0 = time.perf_counter()
        self.expected_done = self.actual_done = 0.0
        # a resumed run calibrates its time-left estimate on the jobs earlier invocations timed too
        cost = {j.name: j.cost for j in jobs}
        for name, seconds in self.timings.items():
            if name in cost:
                self.expected_done += cost[name]
                self.actual_done += seconds
        self.finished = 0

    def left(self, remaining: list[Job]) -> float:
        speed = self.actual_done / self.expected_done if self.expected_done > 0 else 1.0
        return sum(j.cost for j in remaining) * speed / self.workers

    def line(self, verb: str, job: Job, remaining: list[Job], extra: str = "") -> None:
        print(
            f"[{self.finished}/{len(self.jobs)}] {verb} {job.name}{extra} | elapsed "
            f"{_fmt(time.perf_counter() - self.t0)} | ~{_fmt(self.left(remaining))} left",
            flush=True,
        )

    def finish(self, job: Job, run: dict) -> None:
        seconds = run["wall"]
        self.finished += 1
        self.expected_done += job.cost
        self.actual_done += seconds
        self.timings[job.name] = round(seconds, 1)
        self.profile[job.name] = {k: round(v, 2) if isinstance(v, float) else v for k, v in run.items()}
        if self.timings_path is not None:
            atomic_write_json(self.timings_path, self.timings)
            atomic_write_json(self.profile_path, self.profile)


def run_jobs(
    jobs: list[Job],
    workers: int = 2,
    threads: int = 1,
    timings: str | os.PathLike | None = None,
    on_start: Callable[[Job], None] | None = None,
) -> dict[str, float]:
    """Run every unfinished job after its dependencies; returns {job name: seconds} of this call.

    ``workers`` processes share ``workers`` cores; each job runs at ``job.threads`` or else ``threads``
    torch threads and takes that many cores (at most all of them). A job that fails stops the graph:
    running jobs finish, nothing new starts, the error is raised."""
    by_name = {j.name: j for j in jobs}
    for j in jobs:
        missing = [d for d in j.deps if d not in by_name]
        if missing:
            raise ValueError(f"job {j.name} depends on unknown jobs {missing}")
    prog = _Progress(jobs, max(1, workers), Path(timings) if timings else None)
    finished = {j.name for j in jobs if j.is_done()}
    for j in jobs:
        if j.name in finished:
            prog.finished += 1
    pending = [j for j in jobs if j.name not in finished]
    ran: dict[str, float] = {}

    def ready() -> list[Job]:
        return [j for j in pending if all(d in finished for d in j.deps)]

    def n_threads(j: Job) -> int:
        return max(1, j.threads or threads)

    if workers <= 1:
        import torch

        saved = os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
        try:
            while pending:
                batch = ready()
                if not batch:
                    raise ValueError(f"dependency cycle among {[j.name for j in pending]}")
                j = batch[0]
                pending.remove(j)
                prog.line("start", j, pending + [j])
                if on_start:
                    on_start(j)
                run = _timed_call(j.fn, j.kwargs, n_threads(j))
                ran[j.name] = run["wall"]
                finished.add(j.name)
                prog.finish(j, run)
                prog.line("done ", j, pending, f" ({_fmt(run['wall'])})")
        finally:
            if saved[0] is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved[0]
            torch.set_num_threads(saved[1])
        return ran

    # concurrent.futures' workers are not daemonic (unlike multiprocessing.Pool's), so a job may start
    # processes of its own (SynthMovies renders on a pool)
    ctx = mp.get_context("spawn")
    running: dict[str, Any] = {}
    error: BaseException | None = None

    def cores(j: Job) -> int:
        return min(n_threads(j), workers)

    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        while (pending and error is None) or running:
            for j in ready() if error is None else []:
                if sum(cores(by_name[n]) for n in running) + cores(j) > workers:
                    break  # in list order: a job that does not fit yet is not overtaken
                pending.remove(j)
                if on_start:
                    on_start(j)
                running[j.name] = pool.submit(_run_in_worker, j.name, j.fn, j.kwargs, n_threads(j))
                prog.line("start", j, pending + [by_name[n] for n in running])
            time.sleep(0.2)
            for name, res in list(running.items()):
                if not res.done():
                    continue
                del running[name]
                try:
                    _, run = res.result()
                except BaseException as e:  # noqa: BLE001 -- re-raised below, after the running jobs
                    error = error or e
                    continue
                ran[name] = run["wall"]
                finished.add(name)
                prog.finish(by_name[name], run)
                prog.line("done ", by_name[name], pending + [by_name[n] for n in running], f" ({_fmt(run['wall'])})")
            if error is None and pending and not running and not ready():
                raise ValueError(f"dependency cycle among {[j.name for j in pending]}")
    if error is not None:
        raise error
    return ran
