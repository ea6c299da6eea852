"""Run every benchmark and write one JSON record (machine, date, numbers).

    make bench    # == python -m benchmarks.run_all [--only NAME,...] (names: BENCHES below)

Results go to benchmarks/out/<date>.json and are printed; docs/benchmarks.md keeps the curated
numbers with machine and date.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
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
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ",".join(BENCHES))
    args = ap.parse_args(argv)
    record = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_before": _loadavg(),
        "results": {},
    }
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        print(f"== {name}", flush=True)
        module, *bench_args = BENCHES[name].split()
        record["results"][name] = importlib.import_module(module).main(bench_args)
    record["load_after"] = _loadavg()
    out = Path(__file__).parent / "out" / f"{record['date'][:10]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
