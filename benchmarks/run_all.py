"""Run every benchmark and write one JSON record (machine, date, numbers).

    make bench            # == python -m benchmarks.run_all [--only decode,slowd,maskpred]

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

BENCHES = {
    "decode": "benchmarks.bench_decode",
    "slowd": "benchmarks.bench_slowd",
    "maskpred": "benchmarks.bench_maskpred",
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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ",".join(BENCHES))
    args = ap.parse_args(argv)
    record = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "results": {},
    }
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        print(f"== {name}", flush=True)
        record["results"][name] = importlib.import_module(BENCHES[name]).main([])
    out = Path(__file__).parent / "out" / f"{record['date'][:10]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
