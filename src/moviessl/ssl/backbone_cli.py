"""``moviessl pretrain-backbone`` and ``moviessl probe-backbone``.

    moviessl pretrain-backbone --method cvrl --data train.csv --out runs/cvrl [--val val.csv] [--resume]
                               [--preset cpu|paper|FILE.yaml] [key=value ...]
    moviessl probe-backbone --data train.csv --val val.csv runs/cvrl/model.pt [probe.key=value ...]

(argparse needs the positional CKPT and the overrides together: options before them or after both.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import BadInputError

log = logging.getLogger("moviessl")


def _split_for_probe(items, fraction: float, seed: int):
    """Deterministic, class-stratified hold-out of labelled items (when no --val is given)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, (_, y) in enumerate(items):
        by_class.setdefault(int(y), []).append(i)
    val = set()
    for idx in by_class.values():
        idx = list(rng.permutation(idx))
        val.update(idx[: int(round(len(idx) * fraction))])
    return [it for i, it in enumerate(items) if i not in val], [it for i, it in enumerate(items) if i in val]


def _repair_last_ckpt(out: Path) -> None:
    """Make ``last.ckpt`` the newest readable checkpoint before ``--resume``.

    A kill -9 can land while Lightning writes ``last.ckpt`` (truncated file) or between writing
    ``stepN.ckpt`` and updating ``last.ckpt`` (stale by one interval). Either way the newest readable
    checkpoint is copied over it, so a resume loses at most one checkpoint interval."""
    import re

    import torch

    ck = out / "checkpoints"
    if not ck.is_dir():
        return

    def step_of(p: Path) -> int | None:
        try:
            return int(torch.load(p, map_location="cpu", weights_only=False)["global_step"])
        except Exception:
            return None

    last = ck / "last.ckpt"
    last_step = step_of(last) if last.is_file() else None
    cands = sorted(((int(m.group(1)), p) for p in ck.glob("step*.ckpt") if (m := re.match(r"step(\d+)", p.stem))),
                   reverse=True)
    for step, p in cands:
        if last_step is not None and step <= last_step:
            return
        if step_of(p) is not None:
            log.warning("last.ckpt is %s; resuming from %s", "stale" if last_step is not None else "unreadable", p.name)
            shutil.copyfile(p, last)
            return


def world_size_of(tcfg: Mapping[str, Any]) -> int | None:
    d = tcfg.get("devices", 1)
    if isinstance(d, int):
        return d * int(tcfg.get("num_nodes", 1) or 1)
    if isinstance(d, (list, tuple)):
        return len(d) * int(tcfg.get("num_nodes", 1) or 1)
    return None


def pretrain(method: str, data: str | os.PathLike, out: str | os.PathLike, cfg, *, val: str | os.PathLike | None = None,
             resume: bool = False, run_probe: bool = True, progress: bool = True) -> dict[str, Any]:
    """Pretrain (or, for ``random``, just initialise) a Slow-D backbone; export ``OUT/model.pt``.

    Returns a summary dict (also ``OUT/summary.json``); the probe result is ``OUT/probe.json``."""
    import torch

    from ..config import save_config, to_dict
    from ..data.cliplist import read_clip_list
    from ..training import cpu_threads, fit, seed_everything
    from ..utils.io import atomic_write_json
    from .backbone import METHODS, ClipDataset, build_module
    from .clipcache import FrameCache, default_cache_dir
    from .probe import probe_model

    if method not in METHODS:
        raise BadInputError("--method", f"unknown method {method!r} ({'|'.join(METHODS)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = to_dict(cfg)
    save_config(c, out)
    seed_everything(int(c.get("seed", 0)))
    if str(c["trainer"].get("accelerator")) == "cpu" or not torch.cuda.is_available():
        cpu_threads()
    d = c["data"]
    items = read_clip_list(data)
    if not items:
        raise BadInputError(data, "clip list is empty")
    labelled = all(y is not None for _, y in items)
    probe_train, probe_val = items, None
    if val is not None:
        probe_val = read_clip_list(val)
    elif labelled and run_probe:
        probe_train, probe_val = _split_for_probe(items, float(c["probe"].get("val_fraction", 0.2)), int(c.get("seed", 0)))
    # without --val, the probe's held-out videos are held out of pretraining too (no label leak for supervised)
    train_items = probe_train if (val is None and probe_val is not None) else items
    num_classes = (max(int(y) for _, y in items) + 1) if labelled else None

    cache_dir = Path(d["cache_dir"]) if d.get("cache_dir") else default_cache_dir(data, out)
    frame_cache = FrameCache(cache_dir, int(d["short_side"])) if d.get("frame_cache", True) else None
    module = build_module(method, c, num_classes=num_classes)

    bad: dict[str, str] = {}
    if method != "random":
        flow_cache = None
        if method == "modist":
            from .flow import FlowCache, FlowParams

            f = c["flow"]
            flow_cache = FlowCache(cache_dir, FlowParams(algorithm=str(f["algorithm"]), short_side=int(f["short_side"]),
                                                         bound=float(f["bound"]), mode=str(f["mode"]),
                                                         dis_preset=str(f.get("dis_preset", "fast"))))
        mode = "single" if method == "supervised" else "pair"
        sampler = d.get("pair_sampler") or ("shift" if method == "modist" else "cvrl")
        fl = c.get("flow", {})
        ds = ClipDataset(train_items, mode, num_frames=int(d["num_frames"]), stride=int(d["stride"]),
                         short_side=int(d["short_side"]), frame_cache=frame_cache, flow_cache=flow_cache,
                         flow_frames=int(fl.get("num_frames", 16)), flow_stride=int(fl.get("stride", 4)),
                         pair_sampler=sampler, power=float(d.get("power", 1.0)), shift_s=d.get("shift_s", (0.5, 10.0)))
        ds.prepare(progress=progress)
        bad.update(ds.bad)
        bs = int(d["batch_size"])
        if len(ds) < bs:
            raise BadInputError(data, f"only {len(ds)} usable videos, fewer than data.batch_size={bs}")
        ws = world_size_of(c["trainer"])
        if method == "modist" and ws and int(c["modist"]["queue_size"]) % (2 * bs * ws):
            raise BadInputError("modist.queue_size", f"{c['modist']['queue_size']} is not a multiple of the global "
                                f"number of keys per step 2 x {bs} x {ws}")
        nw = int(d.get("num_workers", 0))
        dl = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True, num_workers=nw,
                                         persistent_workers=nw > 0, pin_memory=torch.cuda.is_available())
        if resume:
            _repair_last_ckpt(out)
        trainer = fit(module, c["trainer"], out, train_dataloaders=dl, resume=resume,
                      curve_keys=("train/loss", "lr"))
        if not trainer.is_global_zero:
            return {}
        for i in sorted(module._skipped):  # indices into the dataset's (post-caching) item list
            bad.setdefault(str(ds.items[i][0]) if i < len(ds.items) else str(i), "skipped while training")
    summary: dict[str, Any] = {"method": method, "out": str(out), "skipped_videos": len(bad)}
    module.export(out / "model.pt", extra_meta={"data": str(Path(data).resolve()), "num_videos": len(train_items),
                                                "skipped_videos": len(bad)})
    if bad:
        atomic_write_json(out / "bad_videos.json", bad)
    if run_probe and probe_val is not None:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        res = probe_model(module.backbone, module.export_input(), probe_train, probe_val, c["probe"],
                          frame_cache=frame_cache, device=dev, progress=progress)
        res.update(method=method, checkpoint=str(out / "model.pt"))
        atomic_write_json(out / "probe.json", res)
        summary["probe"] = res
    atomic_write_json(out / "summary.json", summary)
    return summary


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from ..config import load_config

    cfg = load_config("backbone", args.preset, args.overrides, variant=args.method)
    s = pretrain(args.method, args.data, args.out, cfg, val=args.val, resume=args.resume, run_probe=not args.no_probe)
    if s:
        print(json.dumps(s.get("probe", {"method": s["method"], "skipped_videos": s["skipped_videos"]})))
        print(f"moviessl: wrote {Path(args.out) / 'model.pt'}", file=sys.stderr)
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from ..config import load_config
    from .probe import probe_checkpoint

    cfg = load_config("backbone", args.preset, args.overrides)
    res = probe_checkpoint(args.checkpoint, args.data, args.val, cfg["probe"], cache_dir=args.cache_dir,
                           use_cache=not args.no_cache)
    if args.out:
        from ..utils.io import atomic_write_json

        atomic_write_json(args.out, res)
    print(json.dumps(res))
    return 0


def add_parser(subparsers) -> None:
    from ..cli import add_overrides_arg

    p = subparsers.add_parser("pretrain-backbone", help="pretrain Slow-D with CVRL, MoDist or labels (or export a random init)",
                              description="Pretrain the Slow-D backbone (paper §3.2) on a clip list ('path label' or 'path').")
    p.add_argument("--method", required=True, choices=["cvrl", "modist", "supervised", "random"])
    p.add_argument("--data", required=True, help="clip list CSV ('path label' or 'path', relative to the CSV)")
    p.add_argument("--out", required=True, help="run folder (model.pt, checkpoints/, logs/, curves.png, probe.json)")
    p.add_argument("--val", default=None, help="labelled clip list for the final probe (default: hold out probe.val_fraction of --data)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    p.add_argument("--no-probe", action="store_true", help="skip the linear probe / k-NN at the end")
    add_overrides_arg(p)
    p.set_defaults(func=_cmd_pretrain)

    q = subparsers.add_parser("probe-backbone", help="linear probe + k-NN of a frozen backbone checkpoint",
                              description="Frozen, L2-normalised features; linear probe and k-NN top-1; prints one JSON object.")
    q.add_argument("checkpoint", help="backbone checkpoint (model.pt)")
    q.add_argument("--data", required=True, help="labelled training clip list")
    q.add_argument("--val", required=True, help="labelled validation clip list")
    q.add_argument("--out", default=None, help="also write the JSON here")
    q.add_argument("--cache-dir", default=None, help="decoded-frame cache (default <data folder>/.moviessl_cache)")
    q.add_argument("--no-cache", action="store_true", help="decode clips on the fly instead of caching frames")
    add_overrides_arg(q)
    q.set_defaults(func=_cmd_probe)
