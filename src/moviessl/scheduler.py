"""Run a graph of jobs on a few worker processes, each job at one torch thread (or a few).

Small models use two threads poorly (the demo's jobs are tiny CPU models); two independent jobs side
by side at one thread each keep both cores busy. :func:`run_jobs` starts a job as soon as the jobs it
depends on are finished, on ``workers`` persistent processes (``spawn``: torch and Lightning are
imported once per worker, not once per job), and prints a line when a job starts, finishes or fails
(and a "running" line after a minute without one, :data:`HEARTBEAT_S`), each with the time left.

``workers`` is also the number of cores the jobs share: a job at ``t`` torch threads takes
``min(t, workers)`` of them, and jobs start side by side only while their threads fit, so a run at 2
threads per job on 2 cores never puts 4 threads on them. A job whose own preset pins its thread count
(``Job.threads``, e.g. the tiny task heads at 1) runs at that count whatever the run's; two such jobs
share the 2 cores while the 2-thread jobs run alone. Jobs start in list order: a job that does not
fit yet is not overtaken by smaller ones behind it (the graph's critical path comes first in the
demo's list).

A job is finished when its ``done`` file exists (the file a stage writes last, e.g. a run's
``summary.json``): finished jobs are never run again, so an interrupted graph resumes where it
stopped. ``workers=1`` runs everything in this process, in dependency order (tests, debugging), each
job at its own ``Job.threads`` or else ``threads`` torch threads.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .utils import progress
from .utils.io import atomic_write_json

log = logging.getLogger("moviessl")


@dataclass
class Job:
    name: str  # unique; shown in the progress lines
    fn: str  # "package.module:function", imported in the worker
    kwargs: dict[str, Any] = field(default_factory=dict)  # picklable
    deps: tuple[str, ...] = ()
    done: str | None = None  # a file that exists once the job has finished (None: always run)
    cost: float = 10.0  # expected seconds at one thread (time-left estimates; rescaled per kind as jobs finish)
    threads: int | None = None  # torch threads the job runs at whatever the run's (None: the run's)
    # values the done file (JSON) must hold, e.g. {"seeds": 4}: a job asked for more (or fewer) seeds
    # than it finished with is not done
    done_facts: dict[str, Any] = field(default_factory=dict)

    def is_done(self) -> bool:
        if self.done is None or not Path(self.done).is_file():
            return False
        if not self.done_facts:
            return True
        try:
            held = json.loads(Path(self.done).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(held, dict) and all(held.get(k) == v for k, v in self.done_facts.items())


def call(fn: str, kwargs: dict) -> Any:
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


def _die_with_parent(parent: int | None = None) -> None:
    """Linux: SIGKILL this worker when the scheduling process dies (killed, or stopped with Ctrl-C),
    so an interrupted demo leaves no job running that a rerun would start a second time.
    ``parent``: the pid that started the worker; one that died before the death signal was set
    (between fork and prctl) sent none, so the worker ends itself then.

    SIGKILL, not SIGTERM: a job under Lightning has Lightning's SIGTERM handler, which only notes the
    signal (a prediction loop never looks; a training loop raises ``SIGTERMException``, a
    ``SystemExit`` that the pool's worker loop catches and sends back), so the worker lived on and
    then waited forever for a job from a scheduler that was gone. Nothing is lost: finished work is
    on disk, written atomically, as SIGTERM's default action (no clean-up either) left it."""
    import signal

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux / no glibc: workers then end with their job
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def _set_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # what moviessl.training.cpu_threads honours
    import torch

    torch.set_num_threads(threads)


@contextlib.contextmanager
def _stopped_on_interrupt(pool: ProcessPoolExecutor, grace_s: float = 5.0):
    """Ends the pool's running jobs when the block is interrupted (Ctrl-C, or SIGTERM, which the CLI
    raises as an interrupt): leaving the pool's block waits for every running job, hours for a
    pretraining. Each worker is sent SIGTERM, then SIGKILL after ``grace_s`` (a prediction loop does
    not stop for SIGTERM); finished work is on disk, written atomically, and a rerun resumes."""
    try:
        yield
    except BaseException:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
        raise


def _init_worker(threads: int, parent: int | None = None) -> None:
    _die_with_parent(parent)
    _set_threads(threads)
    logging.getLogger().setLevel(logging.WARNING)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (a job's own process pools)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed_call(fn: str, kwargs: dict, threads: int, progress_file: str | None = None) -> dict:
    """Run one job at ``threads`` torch threads; its wall and CPU seconds, start (epoch s), threads.
    ``progress_file``: where the job reports how far it has got (:mod:`moviessl.utils.progress`)."""
    _set_threads(threads)
    start, t, cpu = time.time(), time.perf_counter(), _cpu_seconds()
    progress.start(progress_file)
    try:
        call(fn, kwargs)
    finally:
        progress.stop()
    return {
        "start": start,
        "wall": time.perf_counter() - t,
        "cpu": _cpu_seconds() - cpu,
        "pid": os.getpid(),
        "threads": threads,
    }


def _run_in_worker(name: str, fn: str, kwargs: dict, threads: int, progress_file: str) -> tuple[str, dict]:
    # which process runs the job: if it dies (the OOM killer), the scheduler can name the job
    Path(progress_file + ".pid").write_text(str(os.getpid()))
    try:
        return name, _timed_call(fn, kwargs, threads, progress_file)
    except BaseException as e:
        if _loads_again(e):
            raise
        # the scheduler could not load this error from the pipe (an ``__init__`` that needs other
        # arguments than the ``args`` it keeps): concurrent.futures then takes the whole pool for
        # broken and kills the jobs running beside this one. Its type and message go in one that
        # loads; its traceback comes along as the cause's text, as every worker error's does.
        raise RuntimeError(f"{type(e).__name__}: {e}") from e


def _died(pid_file: str, procs: dict) -> str | None:
    """How the worker process that ran a job died, from the pid it wrote at the job's start and the
    pool's processes: "killed by SIGKILL", say; None if it did not die of a signal of its own (the
    pool ends the others with SIGTERM once one has died) or cannot be told."""
    import signal

    try:
        proc = procs.get(int(Path(pid_file).read_text()))
    except (OSError, ValueError):
        return None
    if proc is None:
        return None
    if proc.exitcode is None:  # the pool's own thread may be reaping it this moment
        proc.join(timeout=2.0)
    code = proc.exitcode
    if code is None or code >= 0 or -code == signal.SIGTERM:
        return None
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def _broken_pool_error(dead: dict[str, str], lost: list[str]) -> RuntimeError:
    """The error a run ends with when a worker process died (concurrent.futures' BrokenProcessPool
    says only that "a process ... was terminated abruptly", for every running job)."""
    who = "; ".join(f"{n} ({how})" for n, how in dead.items()) or "one of them, which cannot be told"
    oom = " -- out of memory? (`dmesg` names the OOM killer's victims)" if "SIGKILL" in who else ""
    return RuntimeError(
        f"a worker process died: {who}{oom}; the jobs running then ended with it "
        f"({', '.join(lost)}); rerun the same command to resume"
    )


def _loads_again(e: BaseException) -> bool:
    """Whether ``e`` survives the trip from a worker to the scheduler (pickled, then loaded)."""
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
    except Exception:  # noqa: BLE001 -- any failure to pickle or load it is the answer
        return False
    return True


# a running job's own pace replaces its cost estimate once it has reported this share of the work it
# had left when it started (all of it, unless resumed) done
TRUST_PACE_AFTER = 0.2
# with jobs running and no line for this long, a "running" line says what runs and the time left
HEARTBEAT_S = 60.0
# a job resumed with at least this share of its work done does not calibrate its kind's speed
CALIBRATE_RESUMED_BELOW = 0.5


def _fmt(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 60}m{s % 60:02d}s"


def _found_done(report: dict) -> float:
    """The share of its work a job's first progress report found done (a resumed job's), in [0, 1]."""
    return min(max(report["first_fraction"], 0.0), 1.0)


def _why(e: BaseException) -> str:
    """An error on one line for a progress line: its type and its message's first line."""
    first = str(e).strip().splitlines()
    return f"{type(e).__name__}: {first[0]}" if first else type(e).__name__


def kind(name: str) -> str:
    """A job's kind for time-left calibration: its name's first two words ('backbone cvrl r0' ->
    'backbone cvrl', 'finetune srl backbone=...' -> 'finetune srl'): the same code at the same
    settings, whose cost estimates are off by the same factor on a given machine."""
    return " ".join(name.split()[:2])


class _Progress:
    """Progress lines with the time left.

    The time left is a simulation of the rest of the graph as :func:`run_jobs` schedules it (list
    order, dependencies, the cores each job takes), each job lasting its ``cost`` times a speed
    factor measured on the finished jobs of its kind (before one of its kind has finished, of its
    stage, else of all kinds), and each running job what its estimate has left of it. Dividing the total cost by the
    cores instead is wrong at both ends of a run: early, one long job on one core is the critical
    path; late, a job that has run for minutes is counted again in full."""

    def __init__(self, jobs: list[Job], workers: int, timings: Path | None, cores: Callable[[Job], int] = lambda j: 1):
        if timings is not None and timings.name == "profile.json":
            # the profile is written beside the timings file under this name: one would overwrite the other
            raise ValueError(f"{timings}: the timings file may not be named profile.json (the profile's name)")
        self.jobs, self.workers, self.timings_path, self.cores = jobs, workers, timings, cores
        self.by_name = {j.name: j for j in jobs}
        self.timings: dict[str, float] = json.loads(timings.read_text()) if timings and timings.is_file() else {}
        # per job: start (epoch s), wall and CPU seconds, worker pid -- benchmarks/demo_profile.py
        self.profile_path = timings.with_name("profile.json") if timings else None
        self.profile: dict[str, dict] = (
            json.loads(self.profile_path.read_text()) if self.profile_path and self.profile_path.is_file() else {}
        )
        self.t0 = time.perf_counter()
        self.by_kind: dict[str, list[float]] = {}  # kind -> [expected, actual] seconds of its finished jobs
        # a resumed run calibrates its time-left estimate on the jobs earlier invocations timed too
        cost = {j.name: j.cost for j in jobs}
        for name, seconds in self.timings.items():
            if name in cost:
                held = self.profile.get(name, {})
                # against the cost the job had when it was timed: a job now asked for more seeds costs more
                self.record(name, held.get("cost", cost[name]), seconds, held.get("done_before", 0.0))
        self.finished = 0

    def record(self, name: str, expected: float, actual: float, done_before: float = 0.0) -> None:
        """A finished job: its cost and the seconds it took; ``done_before``: the share of its work it
        found done when it started (a resumed job: its seconds cover only the rest, so only that share
        of its cost is compared with them; a job resumed past :data:`CALIBRATE_RESUMED_BELOW` is left
        out, as its seconds are then mostly start-up and scoring, not the work its cost stands for)."""
        if done_before >= CALIBRATE_RESUMED_BELOW:
            return
        e = self.by_kind.setdefault(kind(name), [0.0, 0.0])
        e[0] += expected * (1.0 - done_before)
        e[1] += actual

    def seconds(self, job: Job) -> float:
        """The job's expected wall time on this machine."""
        e, a = self.by_kind.get(kind(job.name), (0.0, 0.0))
        if e > 0:
            return job.cost * a / e
        # a kind not timed yet takes its stage's speed (the first word: 'finetune mask_ablation' runs the
        # fine-tuning loop 'finetune srl' timed), else all kinds': those are mostly backbone pretraining,
        # whose costs are off by another factor than a fine-tuning head's
        stage = job.name.split()[:1]
        for pool in ([v for k, v in self.by_kind.items() if k.split()[:1] == stage], list(self.by_kind.values())):
            e, a = (sum(v) for v in zip(*pool)) if pool else (0.0, 0.0)
            if e > 0:
                return job.cost * a / e
        return job.cost

    def remaining(self, job: Job, ran: float, report: dict | None = None, now: float | None = None) -> float:
        """Seconds a running job still needs: from its cost (what its estimate has not used up; past its
        estimate, a tenth of it) and, once it reports its fraction done (:mod:`moviessl.utils.progress`),
        from its own pace since its first report. The pace takes over as the reported progress grows:
        fully after :data:`TRUST_PACE_AFTER` of the job (early paces include start-up and are noisy).
        A resumed job (its first report past 0) has, by its cost, only the share it found not done
        ahead of it, as :meth:`record` compares its seconds with that share alone, and its pace takes
        over after that share of what it had left (resumed past 80%, 20% of the whole job was more
        than it had to do: the cost's guess never left the estimate).
        A job that reported all of its work and still runs has a tenth of its estimate left."""
        est = self.seconds(job)
        if not report:
            return max(est - ran, 0.1 * est)
        f, f0 = min(report["fraction"], 1.0), _found_done(report)
        todo = est * (1.0 - f0)
        by_cost = max(todo - ran, 0.1 * todo)
        if f <= f0:
            mixed = by_cost
        else:
            now = time.time() if now is None else now
            by_pace = max((report["t"] - report["first_t"]) * (1.0 - f) / (f - f0) - (now - report["t"]), 0.0)
            w = min(1.0, (f - f0) / (TRUST_PACE_AFTER * (1.0 - f0)))
            mixed = w * by_pace + (1.0 - w) * by_cost
        # all it reports is done, and it still runs (a probe, scoring, export): as a job past its
        # estimate, a tenth of it, not nothing
        return max(mixed, 0.1 * est) if f >= 1.0 else mixed

    def left(
        self, pending: list[Job], running: dict[str, float] | None = None, reports: dict[str, dict] | None = None
    ) -> float:
        """Seconds until the last job ends: ``pending`` jobs (in list order) after the ``running`` ones
        ({name: seconds it has run so far}; ``reports``: their progress reports, where they made one);
        a dependency that is neither is finished."""
        running, by_name, reports = running or {}, self.by_name, reports or {}
        later, done = {j.name for j in pending} | set(running), set()
        active = []  # (end, name)
        for name, ran in running.items():
            active.append((self.remaining(by_name[name], ran, reports.get(name)), name))
        free = self.workers - sum(self.cores(by_name[n]) for n in running)
        queue, t = list(pending), 0.0
        while queue or active:
            for j in [q for q in queue if all(d in done or d not in later for d in q.deps)]:
                if self.cores(j) > free:
                    break  # run_jobs' rule: a job that does not fit yet is not overtaken
                queue.remove(j)
                free -= self.cores(j)
                active.append((t + self.seconds(j), j.name))
            if not active:
                break  # what is left cannot start (a cycle run_jobs reports itself)
            active.sort()
            t, name = active.pop(0)
            free += self.cores(by_name[name])
            done.add(name)
        return t

    def line(
        self,
        verb: str,
        job: Job | None,
        pending: list[Job],
        running: dict[str, float],
        extra: str = "",
        reports: dict[str, dict] | None = None,
    ) -> None:
        """One progress line; ``job=None``: the "running" line, which lists the running jobs with how
        long each has run and the share of its work it reported done."""
        if job is not None:
            what = f"{verb} {job.name}{extra}"
        else:
            reports = reports or {}
            jobs = []
            for name, ran in running.items():
                pct = f", {100 * min(reports[name]['fraction'], 1.0):.0f}%" if name in reports else ""
                jobs.append(f"{name} ({_fmt(ran)}{pct})")
            what = f"{verb} {'; '.join(jobs)}"
        print(
            f"[{self.finished}/{len(self.jobs)}] {what} | elapsed "
            f"{_fmt(time.perf_counter() - self.t0)} | ~{_fmt(self.left(pending, running, reports))} left",
            flush=True,
        )

    def finish(self, job: Job, run: dict, done_before: float = 0.0) -> None:
        """A job ended after ``run["wall"]`` seconds; ``done_before``: the share of its work it found
        done when it started (a resumed job, whose seconds cover only the rest)."""
        seconds = run["wall"]
        self.finished += 1
        # a job resumed at 90% that ran for the last 10% must not make its kind look ten times faster
        self.record(job.name, job.cost, seconds, done_before)
        self.timings[job.name] = round(seconds, 1)
        self.profile[job.name] = {k: round(v, 2) if isinstance(v, float) else v for k, v in run.items()}
        self.profile[job.name]["cost"] = job.cost
        if done_before > 0:
            self.profile[job.name]["done_before"] = round(done_before, 4)
        if self.timings_path is not None:
            atomic_write_json(self.timings_path, self.timings)
            atomic_write_json(self.profile_path, self.profile)


PROGRESS_PREFIX = "moviessl-progress-"
OWNER_FILE = ".owner"  # held under flock by the run that made the folder, for as long as it runs
STALE_AFTER_S = 60.0  # a folder younger than this may be one whose run has not locked it yet


@contextlib.contextmanager
def progress_folder() -> Any:
    """A temporary folder for the jobs' progress reports, removed at the end of the run. A run that
    is SIGKILLed (the OOM killer, ``kill -9``) cannot remove its own, so each run holds an ``flock``
    on a file in its folder (the kernel drops it with the process) and removes the folders of runs
    whose lock is free, that is, of runs that are gone (``fcntl``: Linux and macOS)."""
    import fcntl

    for old in Path(tempfile.gettempdir()).glob(PROGRESS_PREFIX + "*"):
        try:
            if time.time() - old.stat().st_mtime < STALE_AFTER_S:
                continue
            with open(old / OWNER_FILE, "rb") as f:  # no owner file: a folder this sweep does not know
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(old, ignore_errors=True)
        except OSError:  # held (BlockingIOError), gone meanwhile, not ours to read: left as it is
            continue
    folder = Path(tempfile.mkdtemp(prefix=PROGRESS_PREFIX))
    try:
        with open(folder / OWNER_FILE, "wb") as owner:
            fcntl.flock(owner, fcntl.LOCK_EX)
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_jobs(
    jobs: list[Job],
    workers: int = 2,
    threads: int = 1,
    timings: str | os.PathLike | None = None,
    on_start: Callable[[Job], None] | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> dict[str, float]:
    """Run every unfinished job after its dependencies; returns {job name: seconds} of this call.

    ``workers`` processes share ``workers`` cores; each job runs at ``job.threads`` or else ``threads``
    torch threads and takes that many cores (at most all of them). A job that fails stops the graph:
    a "failed" line names it and its error at once, running jobs finish (the time left counts only
    them), nothing new starts, the error is raised. With ``workers > 1``, a job reports
    how far it has got to a file of its own (:mod:`moviessl.utils.progress`), and after
    ``heartbeat_s`` without a line a "running" line gives the time left again."""
    by_name = {j.name: j for j in jobs}
    if len(by_name) < len(jobs):  # keyed by name, the second ran in the first's place, its failure unseen
        from collections import Counter

        twice = sorted(n for n, k in Counter(j.name for j in jobs).items() if k > 1)
        raise ValueError(f"job names must be unique: {twice} given more than once")
    for j in jobs:
        missing = [d for d in j.deps if d not in by_name]
        if missing:
            raise ValueError(f"job {j.name} depends on unknown jobs {missing}")

    def n_threads(j: Job) -> int:
        return max(1, j.threads or threads)

    def cores(j: Job) -> int:
        return min(n_threads(j), workers) if workers > 1 else 1

    prog = _Progress(jobs, max(1, workers), Path(timings) if timings else None, cores)
    finished = {j.name for j in jobs if j.is_done()}
    for j in jobs:
        if j.name in finished:
            prog.finished += 1
    pending = [j for j in jobs if j.name not in finished]
    ran: dict[str, float] = {}

    def ready() -> list[Job]:
        return [j for j in pending if all(d in finished for d in j.deps)]

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
                prog.line("start", j, pending, {j.name: 0.0})
                if on_start:
                    on_start(j)
                try:
                    run = _timed_call(j.fn, j.kwargs, n_threads(j))
                except Exception as e:  # an interrupt is not a failure of the job
                    prog.line("failed", j, [], {}, f" ({_why(e)})")
                    raise
                ran[j.name] = run["wall"]
                finished.add(j.name)
                prog.finish(j, run)
                prog.line("done ", j, pending, {}, f" ({_fmt(run['wall'])})")
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
    started: dict[str, float] = {}
    error: BaseException | None = None

    def waiting() -> list[Job]:
        """The jobs still to start: none once a job has failed (nothing new starts then)."""
        return pending if error is None else []

    def since() -> dict[str, float]:
        now = time.perf_counter()
        return {n: now - started[n] for n in running}

    # progress reports live only as long as the run: a temporary folder, not the run's output
    scoped = contextlib.ExitStack()
    reports_dir = scoped.enter_context(progress_folder())
    report_file = {j.name: str(reports_dir / f"job{k}.json") for k, j in enumerate(jobs)}

    def reports() -> dict[str, dict]:
        held = {n: progress.read(report_file[n]) for n in running}
        return {n: r for n, r in held.items() if r is not None}

    init = dict(initializer=_init_worker, initargs=(threads, os.getpid()))
    last_line = time.perf_counter()
    procs: dict[int, Any] = {}  # pid -> the pool's process, for how one died
    broken: list[str] = []  # the jobs running when a worker process died (the pool breaks as a whole)
    dead: dict[str, str] = {}
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, **init) as pool, _stopped_on_interrupt(pool):
            while (pending and error is None) or running:
                for j in ready() if error is None else []:
                    if sum(cores(by_name[n]) for n in running) + cores(j) > workers:
                        break  # in list order: a job that does not fit yet is not overtaken
                    pending.remove(j)
                    if on_start:
                        on_start(j)
                    args = (j.name, j.fn, j.kwargs, n_threads(j), report_file[j.name])
                    running[j.name] = pool.submit(_run_in_worker, *args)
                    started[j.name] = time.perf_counter()
                    procs.update(getattr(pool, "_processes", None) or {})  # concurrent.futures' own
                    prog.line("start", j, pending, since(), reports=reports())
                    last_line = time.perf_counter()
                time.sleep(0.2)
                for name, res in list(running.items()):
                    if not res.done():
                        continue
                    del running[name]
                    try:
                        _, run = res.result()
                    except BaseException as e:  # noqa: BLE001 -- re-raised below, after the running jobs
                        if isinstance(e, BrokenProcessPool):
                            if not broken:  # the pool breaks as a whole: every job running now is lost
                                broken.extend([name, *running])
                            procs.update(getattr(pool, "_processes", None) or {})
                            how = _died(report_file[name] + ".pid", procs)
                            if how:
                                dead[name] = how
                            e = RuntimeError(how and f"its worker process was {how}" or "its worker process ended")
                        error = error or e
                        # said now, not when the running jobs end (a pretraining: hours), with the job's
                        # name, which the error raised from the worker does not carry
                        more = "; the running jobs finish, no other starts" if running and not broken else ""
                        prog.line("failed", by_name[name], [], since(), f" ({_why(e)}){more}", reports())
                        last_line = time.perf_counter()
                        continue
                    ran[name] = run["wall"]
                    finished.add(name)
                    # where its first progress report stood: the share a resumed job found done
                    rep = progress.read(report_file[name])
                    prog.finish(by_name[name], run, _found_done(rep) if rep else 0.0)
                    prog.line("done ", by_name[name], waiting(), since(), f" ({_fmt(run['wall'])})", reports())
                    last_line = time.perf_counter()
                if running and time.perf_counter() - last_line >= heartbeat_s:
                    prog.line("running", None, waiting(), since(), reports=reports())
                    last_line = time.perf_counter()
                if error is None and pending and not running and not ready():
                    raise ValueError(f"dependency cycle among {[j.name for j in pending]}")
    finally:
        scoped.close()
    if broken:
        raise _broken_pool_error(dead, broken) from error
    if error is not None:
        raise error
    return ran
