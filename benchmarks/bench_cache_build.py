"""Building a cold MoDist flow cache: in the main process vs in loader workers.

    python -m benchmarks.bench_cache_build [--clips 12] [--seconds 10] [--workers 0,2]

What ``moviessl pretrain-backbone --method modist`` does before its first step with the paper
preset (frames decoded on the fly, optical flow by OpenCV's DIS-medium at short side 128, cached per
video): ``ClipDataset.prepare(num_workers=W)``. Clips: ``--clips`` Kinetics-like 10-s 340x256 30-fps
H.264 files from ``moviessl.video.filmgen`` (written once into ``benchmarks/out/``). Each setting
starts from an empty cache folder; reports seconds per clip and the speed-up over ``W = 0``. OpenCV's
own threads are left as they are (DIS parallelises inside a frame pair), so the speed-up is what
the workers add on top of that, on this machine's cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    from moviessl.config import load_config, to_dict
    from moviessl.ssl.data import ClipDataset
    from moviessl.ssl.pretrain import flow_cache_for
    from moviessl.video.filmgen import make_film

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", default="0,2")
    args = ap.parse_args(argv)
    root = Path(__file__).parent / "out" / f"k400like_{args.clips}x{args.seconds:g}s"
    clips = [root / f"c{i:03d}.mp4" for i in range(args.clips)]
    for i, p in enumerate(clips):
        if not p.is_file():
            root.mkdir(parents=True, exist_ok=True)
            make_film(p, args.seconds, width=340, height=256, audio=False, seed=i)
    cfg = load_config("backbone", "paper", variant="modist")
    out: dict = {"clips": args.clips, "seconds": args.seconds, "cpus": os.cpu_count(), "flow": to_dict(cfg.flow)}
    base = None
    for w in (int(x) for x in args.workers.split(",")):
        cache = root / f"cache_w{w}"
        shutil.rmtree(cache, ignore_errors=True)
        ds = ClipDataset(
            [(p, 0) for p in clips], "pair", short_side=cfg.data.short_side, flow_cache=flow_cache_for(cfg, cache)
        )
        t = time.perf_counter()
        ds.prepare(progress=False, num_workers=w)
        dt = time.perf_counter() - t
        base = base or dt
        out[f"workers_{w}"] = {
            "s": round(dt, 2),
            "s_per_clip": round(dt / args.clips, 3),
            "speedup": round(base / dt, 2),
        }
        assert len(ds) == args.clips, ds.bad
        shutil.rmtree(cache, ignore_errors=True)
    print(out)
    return out


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.bench_cache_build")
