"""moviessl.scheduler: dependency order, resume from done files, failures, jobs with processes of their own."""

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from moviessl.scheduler import Job, run_jobs

# The job functions below run in spawned workers, which import this module by name (spawn passes
# the parent's sys.path, which pytest has given this folder).
MOD = Path(__file__).stem


def job_touch(done: str, needs: list[str]) -> None:
    missing = [n for n in needs if not Path(n).is_file()]
    if missing:
        raise RuntimeError(f"started before its dependencies finished: {missing}")
    Path(done).write_text("ok")


def job_fail(done: str) -> None:
    raise ValueError("this job fails")


def _square(x: int) -> int:
    return x * x


def job_with_pool(done: str) -> None:
    with mp.get_context("spawn").Pool(2) as pool:
        assert pool.map(_square, [1, 2, 3]) == [1, 4, 9]
    Path(done).write_text("ok")


def diamond(tmp: Path) -> list[Job]:
    f = {n: str(tmp / f"{n}.done") for n in "abcd"}
    deps = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    return [
        Job(n, f"{MOD}:job_touch", dict(done=f[n], needs=[f[d] for d in deps[n]]), deps[n], f[n], 1.0) for n in "abcd"
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_dependency_order_and_resume(tmp_path, workers):
    ran = run_jobs(diamond(tmp_path), workers=workers, timings=tmp_path / "timings.json")
    assert set(ran) == set("abcd")
    assert set(json.loads((tmp_path / "timings.json").read_text())) == set("abcd")
    prof = json.loads((tmp_path / "profile.json").read_text())
    assert set(prof) == set("abcd") and all(p["wall"] >= 0 and p["cpu"] >= 0 for p in prof.values())
    assert prof["d"]["start"] >= prof["b"]["start"] + prof["b"]["wall"] - 0.01  # d started after b ended
    (tmp_path / "c.done").unlink()  # an interrupted run: only the unfinished job runs again
    assert set(run_jobs(diamond(tmp_path), workers=workers)) == {"c"}


def test_failure_stops_dependents_and_is_raised(tmp_path):
    jobs = diamond(tmp_path)
    jobs[1] = Job("b", f"{MOD}:job_fail", dict(done=str(tmp_path / "b.done")), ("a",), str(tmp_path / "b.done"))
    with pytest.raises(ValueError, match="this job fails"):
        run_jobs(jobs, workers=2)
    assert (tmp_path / "a.done").is_file() and not (tmp_path / "d.done").exists()


def test_a_job_may_start_processes_of_its_own(tmp_path):
    # SynthMovies renders on a process pool; a daemonic worker could not start it
    done = tmp_path / "pool.done"
    run_jobs([Job("pool", f"{MOD}:job_with_pool", dict(done=str(done)), (), str(done))], workers=2)
    assert done.read_text() == "ok"


def test_unknown_dependency_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        run_jobs([Job("x", f"{MOD}:job_touch", dict(done="", needs=[]), ("nope",))], workers=1)


def test_a_timings_file_named_like_the_profile_is_refused(tmp_path):
    job = Job("x", f"{MOD}:job_touch", dict(done=str(tmp_path / "x"), needs=[]), done=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="profile.json"):
        run_jobs([job], workers=1, timings=tmp_path / "profile.json")
    assert not (tmp_path / "x").exists()


def job_sleep(done: str) -> None:
    import time

    Path(done).write_text(str(os.getpid()))
    time.sleep(60)


def _start_scheduling(code: str, pidfile: Path):
    """``python -c code`` (a scheduler whose job writes its pid to ``pidfile``) -> (process, job pid)."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(300):
        if pidfile.is_file() and pidfile.read_text():
            break
        time.sleep(0.1)
    return proc, int(pidfile.read_text())


def _gone(pid: int, why: str) -> None:
    """Fails with ``why`` unless process ``pid`` ends within 10 s (it is killed then)."""
    import signal
    import time

    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(why)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux only (PR_SET_PDEATHSIG)")
@pytest.mark.parametrize("job", ["job_sleep", "job_sleep_as_lightning"])
def test_workers_end_when_the_scheduler_is_killed(tmp_path, job):
    """``job_sleep_as_lightning``: the death signal was SIGTERM, which Lightning's handler turns into an
    exception the worker's loop catches and sends back: the worker then waited, forever, for a next job
    from a scheduler that was gone (and a prediction loop, which never looks, ran on to its end)."""
    pidfile = tmp_path / "worker.pid"
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from moviessl.scheduler import Job, run_jobs\n"
        "run_jobs([Job('s', %r, dict(done=%r))], workers=2)\n"
    ) % (str(Path(__file__).parent), f"{MOD}:{job}", str(pidfile))
    proc, worker = _start_scheduling(code, pidfile)
    proc.kill()  # SIGKILL: no clean-up in the scheduling process
    proc.wait()
    _gone(worker, "the worker outlived the killed scheduler")


def _start_after_parent_died(parent: int) -> None:
    import time

    from moviessl.scheduler import _die_with_parent

    _die_with_parent(parent)
    time.sleep(30)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux only (PR_SET_PDEATHSIG)")
def test_a_worker_whose_parent_died_before_its_death_signal_was_set_ends_itself():
    """A parent that dies between fork and prctl sends no death signal: the worker ran on."""
    import multiprocessing
    import signal

    p = multiprocessing.get_context("fork").Process(target=_start_after_parent_died, args=(os.getpid() + 10**6,))
    p.start()
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    p = multiprocessing.get_context("fork").Process(target=_start_after_parent_died, args=(os.getpid(),))
    p.start()
    p.join(1)
    assert p.is_alive()  # its parent is alive: it runs on
    p.terminate()
    p.join()


def test_time_left_after_a_resume_uses_the_earlier_jobs_times(tmp_path):
    from moviessl.scheduler import _Progress

    jobs = [Job(f"j{i}", "x:y", {}, cost=10.0) for i in range(4)]
    timings = tmp_path / "timings.json"
    timings.write_text(json.dumps({"j0": 40.0, "j1": 40.0, "gone": 1.0}))  # 4x slower than the cost says
    p = _Progress(jobs, workers=2, timings=timings)
    assert p.left(jobs[2:]) == 40.0  # 2 jobs x 10 s x 4 / 2 workers
    assert _Progress(jobs, workers=2, timings=None).left(jobs[2:]) == 10.0


def test_time_left_follows_the_schedule_not_the_total_over_the_cores():
    from moviessl.scheduler import _Progress

    long = Job("long", "x:y", {}, cost=100.0)
    short = [Job(f"short{i}", "x:y", {}, cost=10.0) for i in range(4)]
    p = _Progress([long, *short], workers=2, timings=None)
    assert p.left([long, *short]) == 100.0  # the long job is the critical path (total / cores: 70)
    assert p.left(short, {"long": 60.0}) == 40.0  # the running job counts with what it has left
    assert p.left(short, {"long": 150.0}) == 30.0  # past its estimate: 10% of it left, then 3 shorts follow
    after = Job("after", "x:y", {}, deps=("long",), cost=10.0)
    p = _Progress([long, *short, after], workers=2, timings=None)
    assert p.left([long, *short, after]) == 110.0  # a dependant waits for its dependency
    wide = Job("wide", "x:y", {}, cost=10.0, threads=2)
    p = _Progress([long, wide], workers=2, timings=None, cores=lambda j: j.threads or 1)
    assert p.left([wide], {"long": 0.0}) == 110.0  # a 2-core job waits until both cores are free


def test_time_left_calibrates_each_kind_of_job_on_its_own_finished_jobs(tmp_path):
    from moviessl.scheduler import _Progress

    jobs = [Job(n, "x:y", {}, cost=10.0) for n in ("backbone a r0", "backbone a r1", "extract a r0", "extract a r1")]
    timings = tmp_path / "timings.json"
    timings.write_text(json.dumps({"backbone a r0": 30.0, "extract a r0": 10.0}))
    p = _Progress(jobs, workers=1, timings=timings)
    assert p.seconds(jobs[1]) == 30.0 and p.seconds(jobs[3]) == 10.0  # each kind at its own speed
    assert p.seconds(Job("context a r0", "x:y", {}, cost=10.0)) == 20.0  # a new kind: all kinds' speed
    # a new kind of a timed stage: that stage's speed (a mask-ablation row runs the SRL fine-tuning
    # loop; all kinds' speed, mostly backbones', put the furnished full demo's time left 25% high)
    assert p.seconds(Job("extract b r0", "x:y", {}, cost=10.0)) == 10.0
    assert p.left(jobs[1:2] + jobs[3:]) == 40.0  # one worker: one after the other


def job_threads(done: str, seconds: float) -> None:
    import time

    import torch

    Path(done).write_text(f"{torch.get_num_threads()} {os.environ['OMP_NUM_THREADS']}")
    time.sleep(seconds)


def test_threads_per_job_fit_the_cores(tmp_path):
    # 2 cores at 2 threads per job: the 2-thread jobs run alone (never 4 threads on 2 cores); the jobs
    # that pin 1 thread run side by side
    f = {n: tmp_path / f"{n}.done" for n in ("a", "b", "c", "d")}
    jobs = [
        Job("a", f"{MOD}:job_threads", dict(done=str(f["a"]), seconds=0.6), done=str(f["a"])),
        Job("b", f"{MOD}:job_threads", dict(done=str(f["b"]), seconds=0.6), done=str(f["b"])),
        Job("c", f"{MOD}:job_threads", dict(done=str(f["c"]), seconds=2.0), ("a", "b"), str(f["c"]), threads=1),
        Job("d", f"{MOD}:job_threads", dict(done=str(f["d"]), seconds=2.0), ("a", "b"), str(f["d"]), threads=1),
    ]
    handed = {}  # when the scheduler handed each job to the pool (a worker may start later under load)
    run_jobs(
        jobs,
        workers=2,
        threads=2,
        timings=tmp_path / "timings.json",
        on_start=lambda j: handed.update({j.name: time.time()}),
    )
    assert {n: f[n].read_text() for n in f} == {"a": "2 2", "b": "2 2", "c": "1 1", "d": "1 1"}
    prof = json.loads((tmp_path / "profile.json").read_text())
    span = {n: (p["start"], p["start"] + p["wall"]) for n, p in prof.items()}
    assert span["b"][0] >= span["a"][1] - 0.05 or span["a"][0] >= span["b"][1] - 0.05  # a, b never overlap
    assert handed["d"] < span["c"][1] and handed["c"] < span["d"][1]  # c, d were started side by side
    assert prof["a"]["threads"] == 2 and prof["c"]["threads"] == 1
    # in this process (workers=1) each job gets its own thread count too, and the caller's is restored
    import torch

    before = torch.get_num_threads()
    for n in f.values():
        n.unlink()
    run_jobs(jobs, workers=1, threads=2)
    assert {n: f[n].read_text() for n in f} == {"a": "2 2", "b": "2 2", "c": "1 1", "d": "1 1"}
    assert torch.get_num_threads() == before


def test_a_done_file_must_hold_the_jobs_facts(tmp_path):
    """A fine-tuning job done with 2 seeds is not done when 4 are asked for (the demo's --seeds 4
    rerun kept the 2-seed tables); an unreadable done file is not done either."""
    done = tmp_path / "summary.json"
    job = Job("ft", "x:y", done=str(done), done_facts={"seeds": 4})
    assert not job.is_done()
    done.write_text(json.dumps({"seeds": 2}))
    assert not job.is_done() and Job("ft", "x:y", done=str(done)).is_done()
    done.write_text(json.dumps({"seeds": 4, "summary": {}}))
    assert job.is_done()
    done.write_text('{"seeds": 4')
    assert not job.is_done()


def job_reporting(done: str, seconds: float) -> None:
    from moviessl.utils import progress

    for k in range(4):
        with progress.part(k, 4):
            time.sleep(seconds / 4)
    Path(done).write_text("ok")


def test_a_running_job_reports_its_progress_and_a_running_line_gives_the_time_left(tmp_path, capsys):
    jobs = [
        Job("slow one", f"{MOD}:job_reporting", dict(done=str(tmp_path / "a"), seconds=3.0), (), str(tmp_path / "a"))
    ]
    run_jobs(jobs, workers=2, heartbeat_s=0.5)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "] running slow one (" in ln]
    assert lines, "no running line while the only job ran"
    shares = [int(ln.split("%)")[0].rsplit(", ", 1)[1]) for ln in lines if "%)" in ln]
    assert shares and all(0 < s <= 100 for s in shares) and shares == sorted(shares)
    assert all(ln.endswith("left") for ln in lines)


def test_time_left_of_a_running_job_follows_its_own_pace_once_it_reports(tmp_path):
    from moviessl.scheduler import TRUST_PACE_AFTER, _Progress

    job = Job("lvu table r0", "x:y", {}, cost=100.0)
    p = _Progress([job], workers=1, timings=None)
    assert p.left([], {job.name: 50.0}) == 50.0  # no report: what its cost has left
    now = 1000.0
    # half done 10 s after its first report (made at 0%), reported just now: 10 s more at that pace
    half = dict(fraction=0.5, first_fraction=0.0, first_t=now - 10.0, t=now)
    assert p.remaining(job, 50.0, half, now) == pytest.approx(10.0)
    # a report 4 s old: 4 of those 10 s have passed since
    assert p.remaining(job, 54.0, half, now + 4.0) == pytest.approx(6.0)
    # a resumed job whose first report said 40%: its pace counts from there (10 s for 10%)
    resumed = dict(fraction=0.5, first_fraction=0.4, first_t=now - 10.0, t=now)
    # 10 s x 5 by pace; by cost, the 60% it had to do (60 s) less the 50 s it has run; the pace
    # weighs the 10% done against TRUST_PACE_AFTER of the 60% it had to do
    w = 0.1 / (TRUST_PACE_AFTER * 0.6)
    assert p.remaining(job, 50.0, resumed, now) == pytest.approx(w * 50.0 + (1 - w) * 10.0)
    # early, the pace and the cost are mixed: 10% observed is half of TRUST_PACE_AFTER
    early = dict(fraction=TRUST_PACE_AFTER / 2, first_fraction=0.0, first_t=now - 10.0, t=now)
    by_pace = 10.0 * (1 - TRUST_PACE_AFTER / 2) / (TRUST_PACE_AFTER / 2)
    assert p.remaining(job, 50.0, early, now) == pytest.approx(0.5 * by_pace + 0.5 * 50.0)
    t = time.time()  # left() reads the clock
    fresh = dict(fraction=0.5, first_fraction=0.0, first_t=t - 10.0, t=t)
    assert p.left([], {job.name: 50.0}, {job.name: fresh}) == pytest.approx(10.0, abs=0.5)


def test_a_job_that_reported_all_its_work_but_still_runs_has_some_time_left():
    """Work after the last reported step (a probe, scoring, export) read as no time left."""
    from moviessl.scheduler import _Progress

    job = Job("backbone cvrl r0", "x:y", {}, cost=100.0)
    p = _Progress([job], workers=1, timings=None)
    now = 1000.0
    done = dict(fraction=1.0, first_fraction=0.0, first_t=now - 50.0, t=now)
    assert p.remaining(job, 50.0, done, now) == pytest.approx(10.0)


def job_resumed(done: str, first_step: int, steps: int, seconds: float) -> None:
    """Training steps ``first_step..steps`` as a run resumed from a checkpoint reports them."""
    from moviessl.utils import progress

    for s in range(first_step, steps + 1):
        progress.report(s, steps, force=True)
        time.sleep(seconds / (steps - first_step + 1))
    Path(done).write_text("ok")


def test_a_resumed_job_calibrates_its_kind_on_the_work_it_did_not_on_its_whole_cost(tmp_path):
    """A job resumed at 25% ran for three quarters of its work: compared with its whole cost, its
    kind looked a quarter faster than it is (at 90%, ten times: the time left of a resumed demo
    collapsed). One resumed past half its work is left out (start-up and scoring dominate its time)."""
    from moviessl.scheduler import _Progress

    def job(name, first_step):
        done = str(tmp_path / name.replace(" ", "_"))
        kw = dict(done=done, first_step=first_step, steps=8, seconds=1.2)
        return Job(name, f"{MOD}:job_resumed", kw, (), done, 10.0)

    jobs = [job("backbone a r0", 2), job("backbone b r0", 6)]
    timings = tmp_path / "timings.json"
    run_jobs(jobs, workers=2, timings=timings)
    wall = json.loads(timings.read_text())["backbone a r0"]
    later = [Job("backbone a r1", "x:y", {}, cost=10.0), Job("backbone b r1", "x:y", {}, cost=10.0)]
    p = _Progress(jobs + later, workers=2, timings=timings)
    assert p.seconds(later[0]) == pytest.approx(wall / 0.75)  # 10 s of cost took wall / 0.75 here
    assert p.seconds(later[1]) == pytest.approx(wall / 0.75)  # b's own time says nothing: all kinds'
    prof = json.loads((tmp_path / "profile.json").read_text())
    assert prof["backbone a r0"]["done_before"] == 0.25 and prof["backbone b r0"]["done_before"] == 0.75


def job_seeds(done: str, seeds: int, seconds_per_seed: float) -> None:
    time.sleep(seeds * seconds_per_seed)
    Path(done).write_text(json.dumps({"seeds": seeds}))


def test_time_left_after_a_rerun_with_more_seeds_uses_what_the_timed_jobs_cost_then(tmp_path):
    """`demo --seeds 4` after a 2-seed run: the 2-seed jobs' seconds were set against the 4-seed
    cost the jobs have now, so every fine-tuning job was estimated at half its time."""
    from moviessl.scheduler import _Progress

    def job(name, seeds):
        done = str(tmp_path / f"{name.split()[-1]}.json")
        kw = dict(done=done, seeds=seeds, seconds_per_seed=0.3)
        return Job(name, f"{MOD}:job_seeds", kw, (), done, 1.0 * seeds, done_facts={"seeds": seeds})

    timings = tmp_path / "timings.json"
    run_jobs([job("finetune srl a", 2)], workers=1, timings=timings)
    wall = json.loads(timings.read_text())["finetune srl a"]
    again = [job("finetune srl a", 4), job("finetune srl b", 4)]
    assert not again[0].is_done()
    p = _Progress(again, workers=1, timings=timings)
    assert p.seconds(again[1]) == pytest.approx(2 * wall)  # 4 seeds: twice what 2 took


def job_sleep_deaf(done: str) -> None:
    """A job that does not stop for SIGTERM (as Lightning's prediction loop, which only notes it)."""
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(done).write_text(str(os.getpid()))
    time.sleep(60)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux only")
def test_a_terminated_scheduler_ends_its_running_jobs_instead_of_waiting_for_them(tmp_path):
    """The CLI raises SIGTERM as an interrupt; leaving the pool's block then waited for every running
    job to finish (hours for a pretraining) before the command ended. The jobs are ended now, a job
    deaf to SIGTERM too."""
    import time

    pidfile = tmp_path / "worker.pid"
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from moviessl.cli import _sigterm_as_interrupt\n"
        "from moviessl.errors import Terminated\n"
        "from moviessl.scheduler import Job, run_jobs\n"
        "try:\n"
        "    with _sigterm_as_interrupt():\n"
        "        run_jobs([Job('s', %r, dict(done=%r))], workers=2)\n"
        "except Terminated:\n"
        "    sys.exit(143)\n"
    ) % (str(Path(__file__).parent), f"{MOD}:job_sleep_deaf", str(pidfile))
    proc, worker = _start_scheduling(code, pidfile)
    t0 = time.perf_counter()
    proc.terminate()
    try:
        assert proc.wait(timeout=30) == 143
    finally:
        proc.kill()
    assert time.perf_counter() - t0 < 20
    _gone(worker, "the job outlived the terminated scheduler")


def job_sleep_for(done: str, seconds: float) -> None:
    time.sleep(seconds)
    Path(done).write_text("ok")


def test_a_failed_job_is_named_at_once_and_the_jobs_that_will_not_start_leave_the_time_left(tmp_path, capsys):
    """A job that failed beside a running one said nothing until that one ended (a pretraining:
    hours) and the error came without the job's name; meanwhile the time left still counted every
    job waiting behind it, none of which will start."""
    slow = str(tmp_path / "slow")
    jobs = [
        Job("slow one", f"{MOD}:job_sleep_for", dict(done=slow, seconds=6.0), (), slow, 6.0),
        Job("bad one", f"{MOD}:job_fail", dict(done=str(tmp_path / "bad")), (), str(tmp_path / "bad"), 1.0),
        Job("after", f"{MOD}:job_touch", dict(done=str(tmp_path / "c"), needs=[]), (), str(tmp_path / "c"), 1000.0),
    ]
    with pytest.raises(ValueError, match="this job fails"):
        run_jobs(jobs, workers=2, heartbeat_s=0.5)
    out = capsys.readouterr().out.splitlines()
    failed = [ln for ln in out if "] failed bad one" in ln]
    assert failed and "ValueError: this job fails" in failed[0]
    after = out[out.index(failed[0]) :]
    assert [ln for ln in after if "] running slow one" in ln], "no running line after the failure"
    left = [int(m) * 60 + int(s) for m, s in (ln.rsplit("~", 1)[1].split()[0][:-1].split("m") for ln in after)]
    assert all(s < 100 for s in left), after  # "after" (1000 s) never starts once a job has failed
    assert not (tmp_path / "c").exists()


def test_a_failed_job_is_named_when_jobs_run_in_this_process(tmp_path, capsys):
    jobs = [Job("bad one", f"{MOD}:job_fail", dict(done=str(tmp_path / "bad")), (), str(tmp_path / "bad"), 1.0)]
    with pytest.raises(ValueError, match="this job fails"):
        run_jobs(jobs, workers=1)
    assert any("] failed bad one (ValueError: this job fails)" in ln for ln in capsys.readouterr().out.splitlines())


def job_sleep_as_lightning(done: str) -> None:
    """A job under Lightning's fit: its SIGTERM handler only notes the signal, and the loop then
    ends the run with ``SIGTERMException`` (a ``SystemExit``) at its next step."""
    import signal

    noted = []
    signal.signal(signal.SIGTERM, lambda signum, frame: noted.append(signum))
    Path(done).write_text(str(os.getpid()))
    for _ in range(600):
        if noted:
            raise SystemExit
        time.sleep(0.1)


class TwoArgError(Exception):
    """An error whose ``__init__`` needs other arguments than the ``args`` it keeps (some libraries'
    are so): pickled, it does not load again."""

    def __init__(self, code: int, what: str):
        super().__init__(f"{code}: {what}")


def job_fail_unpicklable(done: str) -> None:
    raise TwoArgError(5, "this job fails oddly")


def test_a_job_failing_with_an_error_that_does_not_unpickle_leaves_the_running_jobs_be(tmp_path, capsys):
    """The parent could not load such an error from the worker: concurrent.futures took the pool for
    broken, killed the job running beside it (its work since its last checkpoint lost) and raised
    BrokenProcessPool for both, the error's message gone."""
    slow = str(tmp_path / "slow")
    jobs = [
        Job("slow one", f"{MOD}:job_sleep_for", dict(done=slow, seconds=4.0), (), slow, 4.0),
        Job("odd one", f"{MOD}:job_fail_unpicklable", dict(done=str(tmp_path / "odd")), (), str(tmp_path / "odd")),
    ]
    with pytest.raises(RuntimeError, match="TwoArgError: 5: this job fails oddly"):
        run_jobs(jobs, workers=2)
    assert Path(slow).read_text() == "ok"  # the running job finished
    assert not [ln for ln in capsys.readouterr().out.splitlines() if "] failed slow one" in ln]


def test_two_jobs_of_one_name_are_refused(tmp_path):
    """Jobs are keyed by name: the second of two took the first's place among the running jobs, and
    the first's failure (or its end) was never seen -- a graph with a job failed reported success."""
    ok = str(tmp_path / "ok")
    jobs = [
        Job("same", f"{MOD}:job_fail", dict(done=str(tmp_path / "bad")), (), str(tmp_path / "bad")),
        Job("same", f"{MOD}:job_touch", dict(done=ok, needs=[]), (), ok),
    ]
    with pytest.raises(ValueError, match="same"):
        run_jobs(jobs, workers=2)


def test_a_resumed_running_job_is_estimated_by_its_cost_on_the_work_it_has_left():
    """A job resumed at 90% (a demo stopped and rerun: a backbone from its checkpoint) was estimated,
    by its cost, as if it had all of its work ahead (its estimate less the seconds it had run), and
    its pace could take over only up to half (20% of the job past its first report is more than it
    had to do): ~830 s left of a job with ~50 s to go. By its cost, it has the share it had to do,
    and its pace takes over after 20% of that share."""
    from moviessl.scheduler import _Progress

    job = Job("backbone cvrl r0", "x:y", {}, cost=1000.0)
    p = _Progress([job], workers=1, timings=None)
    now = 1000.0
    # first report at 90% 20 s ago, now at 93%: 47 s more at that pace
    resumed = dict(fraction=0.93, first_fraction=0.9, first_t=now - 20.0, t=now)
    left = p.remaining(job, 30.0, resumed, now)
    assert left < 100.0  # at most the 10% it had to do, by its cost
    # by its cost: 100 s of work ahead when it started, 30 s of them run; by its pace: 46.7 s, which
    # is all of the estimate: 3% done is more than 20% of the 10% it had to do
    assert left == pytest.approx(20.0 * 0.07 / 0.03)
    # 1% done, half of those 20%: the two mixed
    early = dict(fraction=0.91, first_fraction=0.9, first_t=now - 20.0, t=now)
    assert p.remaining(job, 30.0, early, now) == pytest.approx(0.5 * 20.0 * 0.09 / 0.01 + 0.5 * 70.0)
    # its first report only: the cost of the work it has left
    first = dict(fraction=0.9, first_fraction=0.9, first_t=now, t=now)
    assert p.remaining(job, 5.0, first, now) == pytest.approx(95.0)


def test_a_killed_runs_progress_folder_is_removed_by_the_next_run(tmp_path, monkeypatch):
    """A SIGKILLed demo (the OOM killer, ``kill -9``) cannot remove its temporary progress folder, and
    every such run left one in the temporary directory for good. The next run removes the folders of
    runs that are gone (their owner lock is free), and only those: a live run's, one made a moment
    ago (not yet locked) and one this sweep does not know are left."""
    import fcntl
    import subprocess
    import sys
    import tempfile

    from moviessl.scheduler import OWNER_FILE, PROGRESS_PREFIX, progress_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = (
        "import sys, time, tempfile; tempfile.tempdir = sys.argv[1]\n"
        "from moviessl.scheduler import progress_folder\n"
        "with progress_folder() as d:\n    print(d, flush=True); time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    killed = Path(child.stdout.readline().strip())
    assert killed.is_dir()
    child.kill()
    child.wait()
    held, fresh, foreign = (tmp_path / f"{PROGRESS_PREFIX}{k}" for k in ("held", "fresh", "foreign"))
    for d in (held, fresh, foreign):
        d.mkdir()
    for d in (held, fresh):
        (d / OWNER_FILE).touch()
    lock = open(held / OWNER_FILE, "rb")  # a live run's lock (another open file: flock conflicts)
    fcntl.flock(lock, fcntl.LOCK_EX)
    for d in (killed, held, foreign):
        os.utime(d, (time.time() - 3600, time.time() - 3600))
    with progress_folder() as mine:
        assert mine.is_dir() and mine.parent == tmp_path
        assert not killed.exists() and held.is_dir() and fresh.is_dir() and foreign.is_dir()
    assert not mine.exists()
    lock.close()


def job_killed(done: str) -> None:
    import signal

    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does


def test_a_worker_killed_by_the_system_is_named_with_its_job(tmp_path, capsys):
    """A worker process killed outright (the OOM killer) broke the pool: every running job failed
    with concurrent.futures' "A process in the process pool was terminated abruptly", the run ended
    with that BrokenProcessPool, and nothing said which job's process died, nor how."""
    slow = str(tmp_path / "slow")
    jobs = [
        Job("slow one", f"{MOD}:job_sleep_for", dict(done=slow, seconds=30.0), (), slow, 30.0),
        Job("greedy one", f"{MOD}:job_killed", dict(done=str(tmp_path / "g")), (), str(tmp_path / "g")),
    ]
    with pytest.raises(RuntimeError) as e:
        run_jobs(jobs, workers=2)
    said = str(e.value)
    assert "a worker process died: greedy one (killed by SIGKILL)" in said and "dmesg" in said
    assert "rerun the same command to resume" in said
    # the pool ends the jobs running beside the dead one (named as lost); a loaded machine may start
    # the greedy one's worker only once the slow one is done
    assert ("slow one" in said) != Path(slow).exists()
    lines = capsys.readouterr().out.splitlines()
    assert [ln for ln in lines if "] failed greedy one (RuntimeError: its worker process was killed by SIGKILL)" in ln]
    assert not [ln for ln in lines if "the running jobs finish" in ln]
