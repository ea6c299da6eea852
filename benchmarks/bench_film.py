"""Long-film extraction benchmark: events/s of ``moviessl extract`` on 720p H.264 films with audio,
split into decode / pre-processing / backbone, peak RSS at two film lengths, and a kill -9 resume check.

    python -m benchmarks.bench_film                         # cpu preset, 10- and 20-min films, kill test
    python -m benchmarks.bench_film --minutes 2,4 --presets cpu,paper --paper-seconds 20
    python -m benchmarks.bench_film --minutes 10 --presets cpu --no-kill-test --devices 1,2   # one film on N ranks

Films are generated once (``moviessl.video.filmgen.make_film``: 1280x720, 30 fps, x264 ultrafast,
AAC audio) into ``--workdir`` and reused. Each extraction runs in a fresh child process (so its
peak memory is its own) while this process samples the resident memory of the child and its
DataLoader workers every 0.1 s; ``rss_peak_mb`` is the peak of their sum. Backbones are random
initialisations built from the backbone preset's model and input settings (speed and memory do
not depend on the weights). The kill test starts an extraction, SIGKILLs the whole process group
once half of the film's events are computed (mid-chunk: the commits are every ``--chunk-events``),
reruns it, and compares the arrays with an uninterrupted run bit for bit; ``recomputed_events`` =
events computed before the kill but not committed = the work done twice (less than one chunk per
decoding worker by design). ``--devices 1,2``: ``moviessl extract --devices N --accelerator cpu``
on the first film, one process per rank (``OMP_NUM_THREADS=1``), wall time and each rank's events
(a film too large for one rank is split by chunk over all of them), arrays compared with N = 1.

``main()`` returns the numbers; ``make bench`` (``run_all``) runs it with the defaults: 10- and 20-min
films, the kill test and the paper preset.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.sysinfo import loadavg

ROOT = Path(__file__).resolve().parents[1]


# --- memory of a process tree -----------------------------------------------------------------


PROC = Path("/proc")  # Linux's; elsewhere (macOS) ps(1) is asked


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir(PROC):
        if d.isdigit():
            try:
                stat = (PROC / d / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def _rss_mb(pid: int) -> float:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _ps_tree_rss_mb(pid: int) -> tuple[float, float]:
    """(summed RSS of ``pid`` and its descendants, ``pid``'s own) in MB from ``ps`` (KB on Linux and macOS)."""
    out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid=", "-o", "rss="], capture_output=True, text=True)
    table = {}
    for line in out.stdout.splitlines():
        try:
            p, pp, kb = (int(v) for v in line.split())
        except ValueError:
            continue
        table[p] = (pp, kb / 1024.0)
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(c for c, (pp, _) in table.items() if pp == p)
    return sum(table.get(p, (0, 0.0))[1] for p in tree), table.get(pid, (0, 0.0))[1]


class TreeRSS(threading.Thread):
    """Samples the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int, every_s: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.every_s, self.peak, self.peak_main, self.stop = pid, every_s, 0.0, 0.0, False

    def run(self) -> None:
        while not self.stop:
            if not PROC.is_dir():  # else the thread died on os.listdir and the peak read 0 MB
                total, main = _ps_tree_rss_mb(self.pid)
            else:
                todo, tree = [self.pid], []
                while todo:
                    p = todo.pop()
                    tree.append(p)
                    todo.extend(_children(p))
                total, main = sum(_rss_mb(p) for p in tree), _rss_mb(self.pid)
            self.peak = max(self.peak, total)
            self.peak_main = max(self.peak_main, main)
            time.sleep(self.every_s)


# --- one extraction in a child process ----------------------------------------------------------


def child(args: list[str]) -> None:
    """``--child BACKBONE VIDEO OUT WORKERS CHUNK``: run extract() and print its summary as JSON.

    Events computed so far are counted in ``OUT.progress`` (beside the feature folder), so the kill
    test can kill at a given point and measure the work lost."""
    from moviessl.features import extract as ex

    extract = ex.extract
    bb, video, out, workers, chunk = args
    counter, orig = Path(out + ".progress"), ex.FeatureExtractor.predict_step

    def counted(self, batch, batch_idx=0):
        r = orig(self, batch, batch_idx)
        if batch.get("kind") == "clips":
            self._bench_n = getattr(self, "_bench_n", 0) + len(batch["clips"])
            counter.write_text(str(self._bench_n))
        return r

    ex.FeatureExtractor.predict_step = counted
    s = extract(bb, video, out, num_workers=int(workers), accelerator="cpu", chunk_events=int(chunk))
    print("SUMMARY " + json.dumps(s), flush=True)


def run_extract(backbone: Path, video: Path, out: Path, workers: int, chunk: int, kill_at: float | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "benchmarks.bench_film", "--child", str(backbone), str(video), str(out)]
    cmd += [str(workers), str(chunk)]
    t0 = time.perf_counter()
    # stderr to a file, not a pipe: the kill test polls without reading, and a full pipe would stall the child
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
    )
    mon = TreeRSS(proc.pid)
    mon.start()
    killed = None
    if kill_at is not None:  # SIGKILL the whole process group once this fraction of the events is computed
        part, counter = out / ".partial" / video.stem, Path(str(out) + ".progress")
        while proc.poll() is None:
            try:
                plan = json.loads((part / "plan.json").read_text())
                done = int(counter.read_text())
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            if done >= kill_at * plan["num_events"]:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                committed = len(list(part.glob("c*.npz")))
                killed = {
                    "events_computed_at_kill": int(counter.read_text()),
                    "committed_chunks": committed,
                    "committed_events": committed * plan["chunk_events"],
                    "chunks": -(-plan["num_events"] // plan["chunk_events"]),
                    "chunk_events": plan["chunk_events"],
                }
                break
            time.sleep(0.01)
    stdout, _ = proc.communicate()
    mon.stop = True
    mon.join()
    wall = time.perf_counter() - t0
    summary = None
    for line in stdout.splitlines():
        if line.startswith("SUMMARY "):
            summary = json.loads(line[8:])
    err.seek(0)
    tail = err.read()[-3000:]
    err.close()
    if killed is None and (proc.returncode or summary is None):
        # else _rates() turns the missing timing into 1e9 events/s, recorded as a measurement
        raise RuntimeError(f"extraction of {video.name} failed (exit {proc.returncode}):\n{tail}")
    return {
        "summary": summary,
        "rc": proc.returncode,
        "wall_s": round(wall, 2),
        "rss_peak_mb": round(mon.peak, 1),
        "rss_peak_main_mb": round(mon.peak_main, 1),
        "killed": killed,
    }


def run_ddp(backbone: Path, video: Path, out: Path, devices: int, workers: int, chunk: int) -> dict:
    """``moviessl extract --devices N`` on CPU: wall time and the events each rank computed."""
    import re

    from moviessl.dist import fresh_launch_env

    env = {**fresh_launch_env(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    exe = Path(sys.executable).with_name("moviessl")
    cmd = [str(exe), "extract", "--backbone", str(backbone), "--videos", str(video), "--out", str(out)]
    cmd += ["--accelerator", "cpu", "--devices", str(devices), "--num-workers", str(workers)]
    cmd += ["--chunk-events", str(chunk)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    ranks = {int(r): int(n) for r, n in re.findall(r"rank (\d+)/\d+: .*; (\d+) events", p.stderr)}
    return {"devices": devices, "rc": p.returncode, "wall_s": round(wall, 2), "events_per_rank": ranks}


# --- setup --------------------------------------------------------------------------------------


def make_backbone(path: Path, preset: str) -> Path:
    """A random-init backbone with the preset's model and input settings."""
    import torch

    from moviessl.checkpoint import arch_spec, save_checkpoint
    from moviessl.config import load_config
    from moviessl.models import build_slowd

    if path.is_file():
        return path
    cfg = load_config("backbone", preset)
    torch.manual_seed(0)
    kw = {"preset": cfg.model.preset, **dict(cfg.model.overrides)}
    m = build_slowd(**kw)
    d = cfg.data
    inp = {"num_frames": d.num_frames, "stride": d.stride, "short_side": d.short_side, "crop": d.crop}
    save_checkpoint(
        path,
        stage="backbone",
        arch=arch_spec("moviessl.models.slowd:build_slowd", **kw),
        state_dict=m.state_dict(),
        meta={"input": inp, "method": "random", "out_dim": m.out_dim},
    )
    return path


def make_film_cached(workdir: Path, seconds: float) -> tuple[Path, float]:
    from moviessl.video.filmgen import make_film

    path = workdir / f"film_{int(seconds)}s.mp4"
    if path.is_file():
        return path, 0.0
    t0 = time.perf_counter()
    tmp = path.with_name(".tmp_" + path.name)
    make_film(tmp, seconds)
    tmp.rename(path)
    return path, time.perf_counter() - t0


def _rates(r: dict) -> dict:
    s = r["summary"] or {}
    t = s.get("timing", {})
    ev = max(1, t.get("events", 0))
    return {
        "events": t.get("events", 0),
        "events_per_s": round(ev / max(t.get("wall_s", 1e-9), 1e-9), 2),
        "decode_ms_per_event": round(1000 * t.get("decode_s", 0) / ev, 1),
        "preprocess_ms_per_event": round(1000 * t.get("preprocess_s", 0) / ev, 1),
        "backbone_ms_per_event": round(1000 * t.get("backbone_s", 0) / ev, 1),
        "extract_wall_s": t.get("wall_s"),
        "process_wall_s": r["wall_s"],
        "rss_peak_mb": r["rss_peak_mb"],
        "rss_peak_main_mb": r["rss_peak_main_mb"],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", default="10,20", help="film lengths for the cpu preset (memory vs length)")
    ap.add_argument("--presets", default="cpu,paper")
    ap.add_argument("--paper-seconds", type=float, default=30.0, help="film length for the paper preset (slow on CPU)")
    ap.add_argument("--workers", type=int, default=1, help="decoding workers (DataLoader)")
    ap.add_argument("--chunk-events", type=int, default=64)
    ap.add_argument("--no-kill-test", action="store_true")
    ap.add_argument("--workdir", default=str(ROOT / "benchmarks" / "out" / "films"))
    ap.add_argument("--devices", default="", help="e.g. 1,2: the first cpu film on N CPU processes (DDP)")
    ap.add_argument("--child", nargs=5, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return {}
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    res: dict = {"workers": args.workers, "chunk_events": args.chunk_events, "film": "1280x720 30 fps H.264 + AAC"}
    res["load_before"] = loadavg()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        runs = []
        if "cpu" in presets:
            bb = make_backbone(workdir / "backbone_cpu.pt", "cpu")
            for m in [float(x) for x in args.minutes.split(",") if x.strip()]:
                film, gen_s = make_film_cached(workdir, m * 60)
                r = run_extract(bb, film, tmp / f"cpu_{m}", args.workers, args.chunk_events)
                runs.append({"preset": "cpu", "minutes": m, "film_gen_s": round(gen_s, 1), **_rates(r)})
                print(json.dumps(runs[-1]), flush=True)
            if not args.no_kill_test:
                m = float(args.minutes.split(",")[0])
                film, _ = make_film_cached(workdir, m * 60)
                out = tmp / "killed"
                k = run_extract(bb, film, out, args.workers, args.chunk_events, kill_at=0.5)
            if not args.no_kill_test and k["killed"] is None:
                # a film of one chunk has no partial results to resume (e.g. --minutes 2: 60 events at
                # the default 64), and a short film can finish between two looks at its progress
                res["kill_test"] = {
                    "minutes": m,
                    "skipped": "the extraction ended before it was killed at half "
                    f"its events: use a longer film or fewer --chunk-events than {args.chunk_events}",
                }
                print(json.dumps(res["kill_test"]), flush=True)
            elif not args.no_kill_test:
                r2 = run_extract(bb, film, out, args.workers, args.chunk_events)
                ref = np.load(tmp / f"cpu_{m}" / f"{film.stem}_feats.npy")
                got = np.load(out / f"{film.stem}_feats.npy")
                t = r2["summary"]["timing"]
                kk = k["killed"]
                res["kill_test"] = {
                    "minutes": m,
                    "events": int(ref.shape[0]),
                    **kk,
                    "killed_after_s": k["wall_s"],
                    "rerun_computed_events": t["events"],
                    # work done twice: computed by the killed run but not committed (< one chunk per worker)
                    "recomputed_events": kk["events_computed_at_kill"] - kk["committed_events"],
                    "rerun_is_exactly_the_rest": t["events"] == int(ref.shape[0]) - kk["committed_events"],
                    "identical": bool(np.array_equal(ref, got)),
                }
                print(json.dumps(res["kill_test"]), flush=True)
            devices = [int(x) for x in args.devices.split(",") if x.strip()]
            if devices:
                film, _ = make_film_cached(workdir, float(args.minutes.split(",")[0]) * 60)
                ddp, ref = [], None
                for n in devices:
                    r = run_ddp(bb, film, tmp / f"ddp{n}", n, args.workers, args.chunk_events)
                    got = np.load(tmp / f"ddp{n}" / f"{film.stem}_feats.npy")
                    ref = got if ref is None else ref
                    r["max_abs_diff_vs_first"] = float(np.abs(got - ref).max())
                    ddp.append(r)
                    print(json.dumps(r), flush=True)
                res["ddp"] = ddp
        if "paper" in presets:
            bb = make_backbone(workdir / "backbone_paper.pt", "paper")
            film, gen_s = make_film_cached(workdir, args.paper_seconds)
            r = run_extract(bb, film, tmp / "paper", args.workers, args.chunk_events)
            runs.append({"preset": "paper", "minutes": round(args.paper_seconds / 60, 2), **_rates(r)})
            print(json.dumps(runs[-1]), flush=True)
    res["runs"] = runs
    res["load_after"] = loadavg()
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    def _print_main() -> None:
        out = main()
        if out:
            print(json.dumps(out, indent=2))

    run_main(_print_main, "benchmarks.bench_film")
