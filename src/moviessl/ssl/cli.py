"""``moviessl pretrain-backbone`` and ``moviessl probe-backbone``.

    moviessl pretrain-backbone --method cvrl --data train.csv --out runs/cvrl [--val val.csv] [--resume]
                               [--preset cpu|paper|FILE.yaml] [key=value ...]
    moviessl probe-backbone --data train.csv --val val.csv runs/cvrl/model.pt [probe.key=value ...]

(argparse needs the positional CKPT and the overrides together: options before them or after both.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..utils.io import json_dumps
    from .pretrain import pretrain
    from .registry import list_methods

    cfg = load_config("backbone", args.preset, args.overrides, variant=args.method, variants=list_methods())
    s = pretrain(args.method, args.data, args.out, cfg, val=args.val, resume=args.resume, run_probe=not args.no_probe)
    if s:
        print(json_dumps(s.get("probe", {"method": s["method"], "skipped_videos": s["skipped_videos"]})))
        if s.get("probe_skipped"):
            print(f"moviessl: note: probe skipped ({s['probe_skipped']})", file=sys.stderr)
        print(f"moviessl: wrote {Path(args.out) / 'model.pt'}", file=sys.stderr)
    return 0


# what probe-backbone reads of the backbone config; the model and its clip geometry come from the checkpoint
PROBE_SETTINGS = ("probe.", "data.num_workers", "data.frame_cache", "data.cache_dir")


def _cmd_probe(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..dist import job_leader
    from ..errors import BadInputError
    from ..utils.io import atomic_write_json, ensure_out_file, json_dumps
    from .probe import probe_checkpoint
    from .registry import list_methods

    cfg = load_config("backbone", args.preset, args.overrides, variants=list_methods())
    for key in (o.split("=", 1)[0].strip() for o in args.overrides):
        if not any(key == s or (s.endswith(".") and key.startswith(s)) for s in PROBE_SETTINGS):
            # e.g. data.crop=256 for a test crop at 256 px was silently the checkpoint's crop
            raise BadInputError(
                key,
                "probe-backbone does not use this setting: the model and its clip geometry come from the "
                f"checkpoint; it reads {', '.join(s + '*' if s.endswith('.') else s for s in PROBE_SETTINGS)}",
            )
    if args.out:
        ensure_out_file(args.out, "--out file")
    if not job_leader():
        # a frozen backbone's probe is one process's work (no process group ever forms): under torchrun
        # or srun every process ran all of it, each on the first GPU, and wrote --out in turn
        return 0
    res = probe_checkpoint(
        args.checkpoint,
        args.data,
        args.val,
        cfg.probe,
        # the preset's data.frame_cache / data.cache_dir hold here too: the paper preset decodes on the
        # fly, where a frame cache of the probe's videos (at 256 px) would take terabytes of disk
        cache_dir=args.cache_dir or cfg.data.cache_dir,
        use_cache=cfg.data.frame_cache and not args.no_cache,
        num_workers=cfg.data.num_workers,
    )
    if args.out:
        atomic_write_json(args.out, res)
    print(json_dumps(res))
    return 0


def add_parser(subparsers) -> None:
    from ..cli import add_overrides_arg
    from .registry import list_methods

    p = subparsers.add_parser(
        "pretrain-backbone",
        help="pretrain Slow-D with CVRL, MoDist or labels (or export a random init)",
        description="Pretrain the Slow-D backbone (paper §3.2) on a clip list ('path label' or 'path').",
    )
    p.add_argument("--method", required=True, choices=list_methods())
    p.add_argument(
        "--data",
        required=True,
        help=(
            "clip list: 'path label' or 'path' lines (relative to the list), or Kinetics' own annotations/train.csv; "
            "decoded frames (the cpu preset) and MoDist's optical flow are cached in <list folder>/.moviessl_cache "
            "for later runs (OUT/cache where that folder is not writable; data.cache_dir elsewhere, "
            "data.frame_cache=false decodes on the fly)"
        ),
    )
    p.add_argument("--out", required=True, help="run folder (model.pt, checkpoints/, logs/, curves.png, probe.json)")
    p.add_argument(
        "--val",
        default=None,
        help=(
            "labelled clip list for the final probe (default: hold out probe.val_fraction of --data for the probe; "
            "a supervised backbone does not train on it, a self-supervised one pretrains on all of --data)"
        ),
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    p.add_argument("--no-probe", action="store_true", help="skip the linear probe / k-NN at the end")
    add_overrides_arg(p)
    p.set_defaults(func=_cmd_pretrain)

    q = subparsers.add_parser(
        "probe-backbone",
        help="linear probe + k-NN of a frozen backbone checkpoint",
        description="Frozen, L2-normalised features; linear probe and k-NN top-1 and top-5; prints one JSON object.",
    )
    q.add_argument("checkpoint", help="backbone checkpoint (model.pt)")
    q.add_argument("--data", required=True, help="labelled training clip list (or Kinetics' annotations/train.csv)")
    q.add_argument("--val", required=True, help="labelled validation clip list (or Kinetics' annotations/val.csv)")
    q.add_argument("--out", default=None, help="also write the JSON here")
    q.add_argument(
        "--cache-dir",
        default=None,
        help="decoded-frame cache (default data.cache_dir, else <data folder>/.moviessl_cache)",
    )
    q.add_argument(
        "--no-cache",
        action="store_true",
        help="decode clips on the fly instead of caching frames (as data.frame_cache=false)",
    )
    add_overrides_arg(q)
    q.set_defaults(func=_cmd_probe)
