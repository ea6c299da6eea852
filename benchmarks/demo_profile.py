"""Where a demo run's time goes: per stage, job seconds, CPU seconds, and how busy the cores were.

    python -m benchmarks.demo_profile runs/demo [--log runs/demo.log] [--cores 2] [--png docs/img/demo_profile.png]
    python -m benchmarks.demo_profile runs/demo --log runs/demo.log --time-left


Reads the scheduler's ``profile.json`` (each job's start, wall and CPU seconds); for a run made
before that file existed, the job start / end times are recovered from the demo's progress lines
(``--log``, 1-s resolution, no CPU time: a job is then counted as one busy core). Prints a Markdown
table (stage, jobs, job-seconds, CPU-seconds, share) and the run's wall time, and draws the jobs on
their workers over time (one colour per stage) beside the stage shares.

``--time-left`` checks the progress lines' "~X left" against the time the run really took from each
line on (the log of one uninterrupted invocation): the relative error of the estimate at 10%, 20%, ...
90% of the run's wall time, and the worst over the lines in the first 90% (the last minutes' errors
are relative to a few seconds and say little). ``--time-left --replay PROFILE`` checks this checkout's
estimator instead of the logged one: it rebuilds the demo's job graph for PROFILE and, at every job
start and end in ``profile.json``, asks ``moviessl.scheduler`` for the time left from what had
finished, what was running (and for how long) and what was waiting.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

LEFT = re.compile(r"\| elapsed (\d+)m(\d+)s \| ~(\d+)m(\d+)s left")
LINE = re.compile(r"\[\d+/\d+\] (start|done ) (.+?)(?: \((\d+)m(\d+)s\))? \| elapsed (\d+)m(\d+)s")


def stage_of(job: str) -> str:
    """'backbone cvrl r0' -> 'backbone cvrl'; 'finetune srl backbone=...' -> 'finetune srl'; ..."""
    w = job.split()
    if w[0] in ("backbone", "finetune", "tune") and len(w) > 1:
        return f"{w[0]} {w[1]}"
    if w[0] == "lvu":
        return "lvu table"
    return w[0]


def from_log(log: Path) -> dict[str, dict]:
    """Job start / wall from the demo's progress lines (``moviessl.scheduler``)."""
    start, jobs, last = {}, {}, 0
    for m in LINE.finditer(log.read_text(errors="replace")):
        verb, name, mm, ss, em, es = m.groups()
        t = last = int(em) * 60 + int(es)
        if verb == "start":
            start[name] = t
        elif name in start:
            wall = int(mm) * 60 + int(ss)
            jobs[name] = {"start": t - wall, "wall": float(wall), "cpu": None}
    # one worker prints no "done" lines: a job ended when the next one started
    open_ = sorted((t, n) for n, t in start.items() if n not in jobs)
    for (t, n), nxt in zip(open_, [t for t, _ in open_[1:]] + [last]):
        if nxt > t:
            jobs[n] = {"start": t, "wall": float(nxt - t), "cpu": None}
    return jobs


def logged_time_left(log: Path) -> list[tuple[int, int]]:
    """(elapsed, estimated left) of each progress line of one invocation's log."""
    return [
        (int(a) * 60 + int(b), int(c) * 60 + int(d)) for a, b, c, d in LEFT.findall(log.read_text(errors="replace"))
    ]


def time_left_errors(pts: list[tuple[float, float]], log: Path | str = "the log") -> dict:
    """(estimated - true) / true time left at each (elapsed, estimated left), the last point being the end."""
    if len(pts) < 2:
        raise SystemExit(f"{log}: fewer than two progress lines with a time-left estimate")
    end = pts[-1][0]  # the last line is the last job's "done", printed when the run ends
    rows = [(t, est, end - t) for t, est in pts if end - t > 0]
    if not rows:  # every line at the end (a run shorter than their 1-s resolution): nothing to check
        raise SystemExit(f"{log}: no progress line before the run's end (every line at the last one's time)")
    at = {}
    for q in range(1, 10):
        t, est, true = min(rows, key=lambda r: abs(r[0] - q * end / 10))
        at[f"{10 * q}%"] = {"elapsed_s": t, "estimate_s": est, "true_s": true, "error": (est - true) / true}
    early = [(est - true) / true for t, est, true in rows if t <= 0.9 * end]
    return {"wall_s": end, "lines": len(rows), "at": at, "worst_first_90": max(early, key=abs) if early else None}


def replay_time_left(demo: Path, profile: str, workers: int = 2) -> list[tuple[float, float]]:
    """(elapsed, estimated left) at every job start and end of a recorded run, this checkout's estimator."""
    from moviessl.demo import PROFILES, demo_backbones, demo_rows, plan_jobs
    from moviessl.scheduler import _Progress

    rec = json.loads((demo / "profile.json").read_text())
    prof = PROFILES[profile]
    backbones = demo_backbones()
    rows = demo_rows(backbones, prof)
    jobs = plan_jobs(demo, demo / "synth", prof, backbones, rows, prof.finetune_seeds, "synth" not in rec)
    missing = [j.name for j in jobs if j.name not in rec]
    if missing:
        raise SystemExit(
            f"{demo}/profile.json: {len(missing)} of the {profile} profile's jobs not recorded, e.g. {missing[0]}"
        )
    t0 = min(r["start"] for r in rec.values())
    span = {j.name: (rec[j.name]["start"] - t0, rec[j.name]["start"] - t0 + rec[j.name]["wall"]) for j in jobs}
    out = []
    for t in sorted({x for se in span.values() for x in se}):
        p = _Progress(jobs, workers, None, lambda j: min(j.threads or 1, workers))
        for j in jobs:
            if span[j.name][1] <= t:
                # the cost the job had when it was timed (another --seeds changes it), as _Progress does
                cost = rec[j.name].get("cost", j.cost)
                p.record(j.name, cost, rec[j.name]["wall"], rec[j.name].get("done_before", 0.0))
        running = {j.name: t - span[j.name][0] for j in jobs if span[j.name][0] <= t < span[j.name][1]}
        out.append((t, p.left([j for j in jobs if span[j.name][0] > t], running)))
    return out


def summarize(jobs: dict[str, dict], cores: int) -> dict:
    t0 = min(j["start"] for j in jobs.values())
    t1 = max(j["start"] + j["wall"] for j in jobs.values())
    per = defaultdict(lambda: {"jobs": 0, "wall": 0.0, "cpu": 0.0})
    for name, j in jobs.items():
        s = per[stage_of(name)]
        s["jobs"] += 1
        s["wall"] += j["wall"]
        s["cpu"] += j["cpu"] if j["cpu"] is not None else j["wall"]
    busy = sum(s["cpu"] for s in per.values())
    span = t1 - t0
    return {
        "span_s": span,
        "job_seconds": sum(s["wall"] for s in per.values()),
        "cpu_seconds": busy,
        "busy_share": busy / (span * cores) if span > 0 else None,
        "cpu_measured": all(j["cpu"] is not None for j in jobs.values()),
        "stages": dict(sorted(per.items(), key=lambda kv: -kv[1]["wall"])),
    }


def markdown(s: dict, cores: int) -> str:
    lines = ["| stage | jobs | job-seconds | CPU-seconds | share of job time |", "|---|---|---|---|---|"]
    for name, st in s["stages"].items():
        share = 100 * st["wall"] / s["job_seconds"]
        lines.append(f"| {name} | {st['jobs']} | {st['wall']:.0f} | {st['cpu']:.0f} | {share:.1f}% |")
    cpu = "CPU time measured" if s["cpu_measured"] else "no CPU time in the log: one busy core per running job"
    lines.append(
        f"\nWall {s['span_s'] / 60:.1f} min; jobs {s['job_seconds'] / 60:.1f} min; "
        f"cores busy {100 * (s['busy_share'] or 0):.0f}% of {cores} ({cpu})."
    )
    return "\n".join(lines)


def plot(jobs: dict[str, dict], s: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moviessl.utils.io import atomic_write

    stages = list(s["stages"])
    colour = {st: plt.cm.tab20(i % 20) for i, st in enumerate(stages)}
    t0 = min(j["start"] for j in jobs.values())
    lanes: list[float] = []  # end time of each lane's last job: a job goes to the first free lane
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    for name, j in sorted(jobs.items(), key=lambda kv: kv[1]["start"]):
        a = (j["start"] - t0) / 60
        lane = next((i for i, end in enumerate(lanes) if end <= a + 1e-6), len(lanes))
        if lane == len(lanes):
            lanes.append(0.0)
        lanes[lane] = a + j["wall"] / 60
        ax.barh(lane, j["wall"] / 60, left=a, color=colour[stage_of(name)], edgecolor="white", linewidth=0.3)
    ax.set_xlabel("minutes")
    ax.set_ylabel("worker")
    ax.set_yticks(range(len(lanes)))
    ax.set_title(f"jobs over time (wall {s['span_s'] / 60:.0f} min)")
    share = [s["stages"][st]["wall"] / 60 for st in stages]
    bx.barh(range(len(stages)), share, color=[colour[st] for st in stages])
    bx.set_yticks(range(len(stages)))
    bx.set_yticklabels(stages, fontsize=7)
    bx.invert_yaxis()
    bx.set_xlabel("job-minutes")
    bx.set_title("per stage")
    fig.tight_layout()
    try:
        # to a temporary file renamed into place: a run killed mid-write left a truncated PNG at --png
        atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo", help="a demo output folder")
    ap.add_argument("--log", default=None, help="the demo's stdout, for runs without profile.json")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--png", default=None, help="write the plot here (default: DEMO/plots/profile.png)")
    ap.add_argument("--time-left", action="store_true", help="check the progress lines' time-left estimates (--log)")
    ap.add_argument("--replay", default=None, metavar="PROFILE", help="with --time-left: this checkout's estimator")
    a = ap.parse_args(argv)
    demo = Path(a.demo)
    log = Path(a.log or f"{demo}.log")
    if not demo.is_dir():
        ap.error(f"{demo}: not a demo output folder")
    if (a.time_left and not a.replay or not (demo / "profile.json").is_file()) and not log.is_file():
        ap.error(f"{log}: no such log (the demo's stdout; give it with --log)")  # was a traceback
    if a.time_left:
        e = time_left_errors(replay_time_left(demo, a.replay) if a.replay else logged_time_left(log), log)
        print("| at | elapsed | estimated left | true left | error |\n|---|---|---|---|---|")
        for q, r in e["at"].items():
            t, est, true, err = r["elapsed_s"], r["estimate_s"], r["true_s"], 100 * r["error"]
            print(f"| {q} | {t:.0f} s | {est:.0f} s | {true:.0f} s | {err:+.0f}% |")
        worst = 100 * e["worst_first_90"]
        print(f"\nWall {e['wall_s']:.0f} s, {e['lines']} lines; worst error in the first 90%: {worst:+.0f}%")
        return 0
    prof = demo / "profile.json"
    jobs = json.loads(prof.read_text()) if prof.is_file() else from_log(log)
    if not jobs:
        raise SystemExit(f"{demo}: no profile.json and no job lines in the log")
    s = summarize(jobs, a.cores)
    print(markdown(s, a.cores))
    plot(jobs, s, Path(a.png) if a.png else demo / "plots" / "profile.png")
    (demo / "profile_summary.json").write_text(json.dumps(s, indent=1))
    return 0


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.demo_profile")
