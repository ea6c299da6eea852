"""``moviessl finetune vidsitu --task {verb,srl,relation} ...``: K seeded runs, predictions, metrics, summary."""

from __future__ import annotations

import argparse
import sys


def _run_vidsitu(args: argparse.Namespace) -> int:
    from ...dist import job_leader, speaks_for_job
    from ...errors import BadInputError
    from ...utils.io import json_dumps
    from .runner import run_baseline, run_finetune

    if args.baseline:
        unused = [
            flag
            for flag, given in (
                ("--features", args.features),
                ("--videos", args.videos),
                ("--backbone", args.backbone),
                ("--contextualizer", args.contextualizer not in (None, "none")),
                ("--tokenizer", args.tokenizer),
                ("--seeds", args.seeds != 1),
                ("--resume", args.resume),
            )
            if given
        ]
        if unused:
            raise BadInputError(None, f"--baseline scores a model-free baseline; {', '.join(unused)} would not be used")
        if not job_leader():
            # no training, so no process group: under torchrun or srun every process scored the baseline
            # and wrote its predictions, metrics and summary over the leader's
            return 0
        res = run_baseline(
            args.task, args.data_root, args.baseline, args.out, preset=args.preset, overrides=args.overrides
        )
        sys.stdout.write(res["table"])
        sys.stdout.write(json_dumps({k: v["mean"] for k, v in res["summary"].items()}) + "\n")
        return 0
    if args.backbone and args.features:
        raise BadInputError(
            None, "--backbone is used with --videos only (--features are already the backbone's outputs)"
        )
    res = run_finetune(
        args.task,
        args.data_root,
        features=args.features,
        videos=args.videos,
        backbone=args.backbone,
        contextualizer=args.contextualizer,
        seeds=args.seeds,
        out=args.out,
        preset=args.preset,
        overrides=args.overrides,
        tokenizer=args.tokenizer,
        resume=args.resume,
    )
    sys.stdout.write(res["table"])
    sys.stdout.write(json_dumps({k: v["mean"] for k, v in res["summary"].items()}) + "\n")
    if res.get("partial") and speaks_for_job():  # every rank has the summary; the job says it once
        print(f"moviessl: warning: {res['partial']} (see summary.md)", file=sys.stderr)
    return 0


def add_parser(datasets) -> None:
    """``finetune vidsitu`` under the ``finetune`` command's dataset subparsers."""
    from ...cli import add_overrides_arg
    from . import TASKS

    v = datasets.add_parser(
        "vidsitu",
        help="VidSitu verb prediction / semantic roles (TxD) / event relations",
        description="Trains --seeds runs; writes per run predictions.pkl (VidSitu submission), "
        "metrics.json, model.pt, and summary.json + summary.md (mean ± standard error).",
    )
    v.add_argument("--task", required=True, choices=list(TASKS))
    v.add_argument("--data-root", required=True, help="the vidsitu_annotations folder (or a folder holding it)")
    src = v.add_mutually_exclusive_group()
    src.add_argument(
        "--features", help="event features: {vseg}_feats.npy of shape (5, D) (moviessl extract or VidSitu's)"
    )
    src.add_argument("--videos", help="videos or frame folders named by segment id (needs --backbone)")
    v.add_argument(
        "--backbone",
        help="stage-'backbone' checkpoint (with --videos): verb fine-tunes it end to end, "
        "srl/relation extract frozen features with it",
    )
    v.add_argument(
        "--baseline",
        choices=sorted({b for t in TASKS.values() for b in t.baselines}),
        help="score a model-free baseline instead of training (relation: pair_prior = each pair's majority class)",
    )
    v.add_argument(
        "--contextualizer",
        default="none",
        help="none | scratch | a stage-'context' checkpoint (MaskPred TxE, fine-tuned) (default: none)",
    )
    v.add_argument("--seeds", type=int, default=1, help="number of runs (seeds seed..seed+K-1; the paper uses 10)")
    v.add_argument("--out", required=True, help="output folder")
    v.add_argument("--tokenizer", help="SRL: a HuggingFace tokenizer.json to use instead of training one")
    v.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    add_overrides_arg(v)
    v.set_defaults(func=_run_vidsitu)
