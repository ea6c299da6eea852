"""``moviessl extract``: videos -> per-event backbone features (+ TxE outputs), resumable.
``moviessl extract-instances``: videos + per-second boxes (tracks JSON files or LVU's instance
metadata) -> RoI features per box (LVU's OT).

moviessl extract --backbone CKPT --videos (DIR|LIST|VidSitu root|LVU root) --out DIR
                 [--stride 2] [--fp16] [--contextualizer CKPT] [--channels-last] [--compile] [--resize squash]
moviessl extract-instances --backbone CKPT --videos (DIR|LVU root) --tracks (DIR|PKL) --out DIR [--short-side S]
                           [--devices N] [--num-workers W]
"""

from __future__ import annotations

import argparse

from ..errors import BadInputError
from ..utils import plural


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "extract",
        help="extract per-event backbone features ({id}_feats.npy + index.json); resumable",
        description="Per video, a (num_events, D) array of pooled backbone features, one event every --stride "
        "seconds (VidSitu segments: their 5 events), in VidSitu's layout plus index.json. Rerunning "
        "skips finished videos; bad videos are skipped and listed in the index.",
    )
    p.add_argument("--backbone", required=True, help="backbone checkpoint (moviessl pretrain-backbone's model.pt)")
    p.add_argument(
        "--videos",
        required=True,
        help=(
            "a video file, a folder of videos / frame folders (not its subfolders), a list file, a VidSitu root "
            "or an LVU root"
        ),
    )
    p.add_argument("--out", required=True, help="feature folder (one job at a time; a rerun resumes or extends it)")
    p.add_argument(
        "--stride", type=float, default=2.0, help="seconds between events (default 2; 1 for 1/2/3-s TxE tokens)"
    )
    p.add_argument("--fp16", action="store_true", help="store float16 arrays (half the disk)")
    p.add_argument(
        "--contextualizer",
        default=None,
        metavar="CKPT",
        help="TxE checkpoint (pretrain-context's model.pt): also write {id}_ctx.npy (a folder made with one is "
        "extended only with it)",
    )
    p.add_argument("--batch-events", type=int, default=16, help="event clips per backbone forward")
    p.add_argument(
        "--chunk-events",
        type=int,
        default=64,
        help="a film is committed every this many events (rounded up to a multiple of --batch-events); "
        "a killed job resumes inside the film and loses at most one chunk per decoding worker",
    )
    _add_launch_args(p)
    p.add_argument("--retry-bad", action="store_true", help="retry videos listed as bad by an earlier run")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NTHWC layout for the backbone (default: as it was pretrained, its config's model.channels_last)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the backbone (default: as it was pretrained, model.compile)",
    )
    p.add_argument(
        "--resize",
        choices=("crop", "squash"),
        default=None,
        help="crop: the backbone's short side, then a centre crop; squash: the whole frame to crop x crop, "
        "as VidSitu's loader (for the paper's VidSitu features); default: the mode a verb-finetuned "
        "backbone was tuned with, else crop",
    )
    p.set_defaults(func=_run)

    i = subparsers.add_parser(
        "extract-instances",
        help="RoI features of tracked boxes per second (LVU's Object Transformer inputs); resumable",
        description="For every second with boxes in --tracks, the backbone's clip around it and a RoIAlign "
        "(7x7, max-pooled, PySlowFast's AVA head pooling) of each box on the last feature map; writes <id>.npz "
        "(sec, shot, track, box, feat) + index.json. Boxes: TRACKS/<id>.json files (format: "
        "moviessl.data.lvu.read_tracks), or LVU's released boxes and track ids, an instance_meta_<task>.pkl "
        "or the instance_meta/ folder (all its tasks' videos).",
    )
    i.add_argument("--backbone", required=True, help="backbone checkpoint (moviessl pretrain-backbone's model.pt)")
    i.add_argument("--videos", required=True, help="folder of videos (or an LVU root with videos/)")
    i.add_argument(
        "--tracks",
        required=True,
        help="folder of <id>.json tracks files (SynthMovies' lvu/tracks), or LVU's instance_meta/ folder "
        "or one of its instance_meta_<task>.pkl files",
    )
    i.add_argument("--out", required=True, help="instance feature folder")
    i.add_argument(
        "--short-side",
        type=int,
        default=None,
        help="frames resized to this short side, uncropped (default: the backbone's)",
    )
    i.add_argument("--resolution", type=int, default=7, help="RoIAlign output bins per side (7)")
    i.add_argument("--pool", default="max", choices=["max", "avg"], help="pooling over the bins (PySlowFast: max)")
    i.add_argument("--batch-seconds", type=int, default=8, help="seconds (clips) per backbone forward")
    _add_launch_args(i)
    i.add_argument("--retry-bad", action="store_true", help="retry videos listed as bad by an earlier run")
    i.add_argument(
        "--device",
        default=None,
        help="cpu | cuda | cuda:N | mps: one device (shorthand for --accelerator and --devices)",
    )
    i.set_defaults(func=_run_instances)


def _add_launch_args(p) -> None:
    """Where an extraction job runs: decoding workers, devices, nodes (Lightning's DDP), precision."""
    p.add_argument("--num-workers", type=int, default=2, help="decoding processes per device")
    p.add_argument("--accelerator", default="auto", help="cpu | gpu | auto")
    p.add_argument("--devices", default="1", help="devices per node (int, 'auto' or a list); >1 shards videos with DDP")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument(
        "--ddp-timeout-s",
        type=float,
        default=None,
        help="with --devices/--num-nodes > 1: how long ranks that finish first wait for the others at the end "
        "(default: Lightning's 30 min; the videos are split by size, so the wait is about one long film at most)",
    )
    p.add_argument(
        "--precision",
        default="32-true",
        help="backbone inference precision, e.g. bf16-mixed or 16-mixed on GPUs, or bf16-true (weights in bf16)",
    )


def _run_instances(args) -> int:
    from .instances import extract_instances

    s = extract_instances(
        args.backbone,
        args.videos,
        args.tracks,
        args.out,
        short_side=args.short_side,
        resolution=args.resolution,
        pool=args.pool,
        batch_seconds=args.batch_seconds,
        device=args.device,
        num_workers=args.num_workers,
        accelerator=args.accelerator,
        devices=_devices(args.devices),
        num_nodes=args.num_nodes,
        precision=args.precision,
        ddp_timeout_s=args.ddp_timeout_s,
        retry_bad=args.retry_bad,
    )
    if not s:  # a rank other than 0: rank 0 merges and reports
        return 0
    _none_ok(args.out, s["counts"])
    print(f"{args.out}: {plural(s['counts']['ok'], 'video')} ok, {s['counts']['bad']} bad (listed in index.json)")
    return 0


def _none_ok(out, counts) -> None:
    """A job whose every input was bad failed, though it skipped and listed them as a batch job does."""
    if counts.get("bad") and not counts.get("ok"):
        raise BadInputError(
            out, f"none of the {counts['bad']} video(s) could be used (each is listed with its problem in index.json)"
        )


def _devices(s: str):
    s = str(s)
    if s.isdigit():
        return int(s)
    if s.startswith("["):
        import json

        try:
            return json.loads(s)
        except ValueError:
            pass  # left as given: extract's check names --devices in one line
    return s


def _run(args) -> int:
    from .extract import extract

    summary = extract(
        args.backbone,
        args.videos,
        args.out,
        stride_s=args.stride,
        fp16=args.fp16,
        contextualizer=args.contextualizer,
        batch_events=args.batch_events,
        num_workers=args.num_workers,
        accelerator=args.accelerator,
        devices=_devices(args.devices),
        num_nodes=args.num_nodes,
        strategy="auto",
        precision=args.precision,
        retry_bad=args.retry_bad,
        chunk_events=args.chunk_events,
        channels_last=args.channels_last,
        compile=args.compile,
        resize=args.resize,
        ddp_timeout_s=args.ddp_timeout_s,
    )
    if summary:
        c, t = summary["counts"], summary["timing"]
        _none_ok(args.out, c)
        extra = ""
        if c.get("missing_events"):
            n, v = c["missing_events"], c["with_missing_events"]
            extra = f"; {n} events in damaged stretches of {v} video(s) marked missing"
        if c.get("unfinished"):
            extra += f"; {c['unfinished']} film(s) unfinished (a rank could not read its part): rerun to finish"
        rate = f", {t['events'] / t['wall_s']:.1f} events/s" if t.get("events") and t.get("wall_s") else ""
        print(f"{args.out}: {plural(c['ok'], 'video')} ok, {c['bad']} bad (listed in index.json){extra}{rate}")
    return 0
