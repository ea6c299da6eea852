"""Instance or scene features for the Object Transformer held in RAM vs read on demand (LVU-sized input).

    python -m benchmarks.bench_instances [--videos 400] [--boxes 240] [--dim 2304] [--cache-mb 256]
                                         [--format moviessl|release|scene] [--events 60]

What ``moviessl pretrain-ot`` and the LVU tasks do before and during training: one
:class:`~moviessl.context.ot_spans.SpanVideo` per film, then random 60-s spans as training items.
The instance folder (``--videos`` films x ``--boxes`` boxes of ``--dim``-d float32 features, LVU's
2304-d RoI width; written once into ``benchmarks/out/``, as ``extract-instances`` writes it or, with
``--format release``, as LVU releases it: ``features/<id>.npz`` of pickled dicts plus an
``instance_meta`` pkl) is loaded in a fresh process each time,
either eagerly (every film's features in RAM, as before) or lazily (``load(id, lazy=True)``: boxes in
RAM, features read when a span needs them, at most ``--cache-mb`` MB kept per process). Reports the
peak RSS after loading and after ``--items`` random span items, seconds to load, ms per item, and
whether the items are the same in both modes. Files are in the page cache after the first run, so
the per-item time is the decode and copy cost, not the disk's. ``--format scene``: OT++'s scene
pathway instead, a ``moviessl extract`` folder of ``--videos`` films x ``--events`` 2-s events of
``--dim``-d features (``{id}_feats.npy``), each film loaded whole (eager) or by
:func:`moviessl.tasks.lvu.data.scene_arrays` (lazy). ``--format scene-ctx``: that folder
contextualised at run time by a ``txe_paper`` TxE (random weights; ``finetune lvu
--contextualizer``): held in RAM (eager, the earlier way: each task of ``--task all`` and each
rank made them again) or cached on disk and read on demand (lazy; its first run makes the cache and
is reported as ``lazy_pass``, the second reads it, as every later task and rank does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np
from benchmarks.sysinfo import peak_rss_mb as rss
import moviessl.features.instances as ins
from moviessl.context.ot_spans import RandomSpans, SpanVideo
from moviessl.features.store import FeatureStore
from moviessl.tasks.lvu.data import load_inputs, scene_arrays
root, mode, items, cache_mb, meta, fmt = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), *sys.argv[5:7]
ins.set_feature_cache(cache_mb)
base = rss()
t = time.perf_counter()
if fmt == "scene-ctx":  # meta: the TxE checkpoint; the cache beside it
    from pathlib import Path
    cache = Path(meta).parent / "cache" if mode == "lazy" else None
    scene = scene_arrays(root, "feats", meta, cache_dir=cache, progress=False)[0]
    videos = list(load_inputs(scene=scene).videos.values())
elif fmt == "scene":
    if mode == "lazy":
        scene = scene_arrays(root, "feats")[0]
    else:
        fs = FeatureStore(root, num_events=None)
        scene = {v: fs.load(v) for v in fs.ids}
    videos = list(load_inputs(scene=scene).videos.values())
else:
    store = ins.open_instances(root, meta or None)
    videos = [SpanVideo(v, inst=store.load(v, lazy=(mode == "lazy"))) for v in store.ids]
load_s = time.perf_counter() - t
key = "inst" if fmt in ("moviessl", "release") else "scene"
after_load = rss()
np.random.seed(0)
data = RandomSpans(videos, None, items)
t = time.perf_counter()
digest = 0.0
for i in range(items):
    digest += float(data[i]["x"][key].sum(dtype=np.float64))
item_ms = 1000 * (time.perf_counter() - t) / items
print(json.dumps({"load_s": round(load_s, 2), "rss_start_mb": round(base), "rss_after_load_mb": round(after_load),
                  "rss_after_items_mb": round(rss()), "item_ms": round(item_ms, 2), "digest": digest}))
"""


def _write_scene(root: Path, videos: int, events: int, dim: int) -> None:
    """A ``moviessl extract`` folder: ``{id}_feats.npy`` (events, dim) float32 + ``index.json``."""
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = {}
    for i in range(videos):
        vid = f"v{i:05d}"
        np.save(root / f"{vid}_feats.npy", rng.standard_normal((events, dim), dtype=np.float32))
        entries[vid] = {"num_events": events, "status": "ok"}
    index = {"format": "moviessl-features", "stride_s": 2.0, "dim": dim, "videos": entries}
    (root / "index.json").write_text(json.dumps(index))


def _txe_checkpoint(folder: Path, dim: int) -> Path:
    """A stage-"context" ``txe_paper`` TxE over ``dim``-d events (random weights: the cost is the same)."""
    import torch

    from moviessl.checkpoint import arch_spec, save_checkpoint
    from moviessl.models.txe import build_txe

    path = folder / "model.pt"
    if not path.is_file():
        torch.manual_seed(0)
        txe = build_txe("txe_paper", in_dim=dim)
        arch = arch_spec("moviessl.models.txe:build_txe", preset="txe_paper", in_dim=dim)
        save_checkpoint(path, stage="context", arch=arch, state_dict=txe.state_dict(), meta={"in_dim": dim})
    return path


def _write(root: Path, videos: int, boxes: int, dim: int, release: bool) -> None:
    import pickle

    import numpy as np

    from moviessl.data.lvu import VideoInstances
    from moviessl.features.instances import _save_npz

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    meta: dict = {}
    for i in range(videos):
        vid = f"v{i:05d}"
        sec = np.sort(rng.integers(0, 150, boxes))  # LVU clips: 1-3 min
        xy = np.sort(rng.uniform(0, 1, (boxes, 2, 2)).astype(np.float32), 1)  # [(x1, y1), (x2, y2)]
        box = xy.reshape(boxes, 4)
        feat = rng.standard_normal((boxes, dim), dtype=np.float32)
        track = rng.integers(0, 6, boxes)
        if not release:
            _save_npz(root / f"{vid}.npz", VideoInstances(sec, sec // 8, track, box, feat))
            continue
        a: dict = {}
        meta[vid] = {}
        for s, b, f, t in zip(sec.tolist(), box, feat, track.tolist()):
            key = ",".join(f"{v:.6f}" for v in b)  # LVU's box keys are such strings
            a.setdefault(s, {})[key] = f
            meta[vid].setdefault(s, {})[key] = [s // 8, t]
        np.savez(root / f"{vid}.npz", a=np.array(a, dtype=object))
    if release:
        (root / "instance_meta.pkl").write_bytes(pickle.dumps(meta))
        return
    index = {
        "format": "moviessl-instances",
        "dim": dim,
        "videos": {f"v{i:05d}": {"status": "ok"} for i in range(videos)},
    }
    (root / "index.json").write_text(json.dumps(index))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=400)
    ap.add_argument("--boxes", type=int, default=240)
    ap.add_argument("--dim", type=int, default=2304)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--cache-mb", type=float, default=256)
    ap.add_argument("--format", choices=("moviessl", "release", "scene", "scene-ctx"), default="moviessl")
    ap.add_argument("--events", type=int, default=60, help="--format scene: events per film (LVU: 1-3 min)")
    args = ap.parse_args(argv)
    release, scene = args.format == "release", args.format in ("scene", "scene-ctx")
    rows = args.events if scene else args.boxes
    name = "scene" if scene else args.format
    root = Path(__file__).parent / "out" / f"instances_{name}_{args.videos}x{rows}x{args.dim}"
    done = root / ("instance_meta.pkl" if release else "index.json")
    if not done.is_file():
        if scene:
            _write_scene(root, args.videos, args.events, args.dim)
        else:
            _write(root, args.videos, args.boxes, args.dim, release)
    out: dict = {
        "format": args.format,
        "videos": args.videos,
        ("events" if scene else "boxes"): rows,
        "dim": args.dim,
        "features_mb": round(args.videos * rows * args.dim * 4 / 2**20),
        "cache_mb": args.cache_mb,
    }
    meta = str(done) if release else ""
    if args.format == "scene-ctx":
        meta = str(_txe_checkpoint(root.with_name(root.name + "_txe"), args.dim))
        shutil.rmtree(Path(meta).parent / "cache", ignore_errors=True)
    for k, mode in enumerate(("eager", "lazy", "eager", "lazy")):  # twice: the first pass warms the page cache
        cmd = [sys.executable, "-c", CHILD, str(root), mode, str(args.items), str(args.cache_mb), meta, args.format]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])
        if res.returncode:
            raise RuntimeError(res.stderr[-2000:])
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
        if k == 1 and args.format == "scene-ctx":
            out["lazy_pass"] = out["lazy"]
    if "lazy_pass" in out:
        out["lazy_pass"].pop("digest")
    out["same_items"] = out["eager"].pop("digest") == out["lazy"].pop("digest")
    print(out)
    return out


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.bench_instances")
