"""Run every benchmark and write one JSON record (machine, date, numbers).

    make bench    # == python -m benchmarks.run_all [--only NAME,...] (names: BENCHES below)

Results go to benchmarks/out/<date>T<time>.json (rewritten after each benchmark) and are printed;
docs/benchmarks.md keeps the curated numbers with machine and date. A benchmark that fails is
recorded as ``{"error": ...}``, the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
import sys
import traceback
from pathlib import Path

BENCHES = {  # name: module [its arguments]
    "decode": "benchmarks.bench_decode",
    "slowd": "benchmarks.bench_slowd",
    "maskpred": "benchmarks.bench_maskpred",
    "augment": "benchmarks.bench_augment",  # the CVRL view pair at the demo's batch, each colour op alone
    "loader": "benchmarks.bench_loader",  # a paper-geometry CVRL pair item: square cut vs whole-frame crop
    "cache_build": "benchmarks.bench_cache_build",  # a cold MoDist flow cache: main process vs loader workers
    "flow_store": "benchmarks.bench_flow_store",  # MoDist's flow cache as npy / png / jpeg: bytes, read time, error
    "ddp_queue": "benchmarks.bench_ddp_queue",  # DDP step with a 512 MB queue, broadcast vs left to the ranks
    "batched_seeds": "benchmarks.bench_batched_seeds",  # K seeds as one vmap-ed model vs K models
    "instances": "benchmarks.bench_instances",  # OT instance features in RAM vs read on demand: peak RSS, ms per span
    # scene features through the TxE at run time: in RAM vs cached once on disk (the pass, a later task's read)
    "scene_ctx": "benchmarks.bench_instances --format scene-ctx --videos 100 --dim 2048",
    "film": "benchmarks.bench_film",  # long 720p films: events/s split, peak RSS at 2 lengths, kill -9 resume (~10 min)
}
OUT = Path(__file__).parent / "out"


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _loadavg() -> list[float] | None:
    """1/5/15-min load averages (``uptime``): on a shared machine, the context of every number."""
    from benchmarks.sysinfo import loadavg

    return loadavg()


def _record_path(date: str) -> Path:
    """``OUT/<date>T<hh-mm-ss>.json``, a name no earlier record has: two runs on one day (e.g. ``--only
    decode``, then ``--only slowd``) must not overwrite each other's numbers."""
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = date[:19].replace(":", "-")
    for k in range(1, 1000):
        path = OUT / (f"{stamp}.json" if k == 1 else f"{stamp}_{k}.json")
        try:
            path.open("x").close()  # claimed at once: a run started in the same second takes the next name
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{OUT}: no free name for a record of {date}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ",".join(BENCHES))
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:  # before any benchmark runs, not a KeyError after the first ones
        ap.error(f"--only: no benchmark named {', '.join(unknown)} (names: {', '.join(BENCHES)})")
    record = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_before": _loadavg(),
        "results": {},
    }
    out = _record_path(record["date"])
    failed: set[str] = set()
    import torch

    threads = torch.get_num_threads()
    for name in names:
        print(f"== {name}", flush=True)
        module, *bench_args = BENCHES[name].split()
        try:
            record["results"][name] = importlib.import_module(module).main(bench_args)
        except (Exception, SystemExit) as e:  # one failing benchmark must not lose the others' numbers
            if not isinstance(e, SystemExit):
                traceback.print_exc()
            record["results"][name] = {"error": f"{type(e).__name__}: {e}"}
            failed.add(name)
            print(f"== {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        finally:
            # augment, loader and batched_seeds set 1 thread for themselves: a later one (e.g. slowd
            # after `--only augment,slowd`) must run at the threads the record's machine states
            torch.set_num_threads(threads)
        record["load_after"] = _loadavg()
        out.write_text(json.dumps(record, indent=2))  # after each one: a kill keeps the finished ones
    record["failed"] = [n for n in names if n in failed]
    out.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    if failed:
        print(f"failed: {', '.join(record['failed'])} (their errors are in {out})", file=sys.stderr)
    return record


if __name__ == "__main__":
    raise SystemExit(1 if main()["failed"] else 0)
