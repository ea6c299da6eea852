"""``moviessl finetune vidsitu --task {verb,srl,relation} ...``: K seeded runs, predictions, metrics, summary."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

# the clip settings of --videos (data.num_frames, stride, resize): --features are already the clips' features
CLIP_KEYS = ("data.num_frames", "data.stride", "data.resize")
# all a model-free baseline reads of its config: which segments it counts and which it scores
BASELINE_KEYS = ("data.train_split", "data.eval_split", "data.split_file")


def check_overrides_read(task: str, overrides: Sequence[str], contextualizer: str | None, features: str | None) -> None:
    """One line naming the first dotted override this run would not read. The presets hold every
    task's section, the scratch TxE's and the clip settings, so a setting of another task
    (``--task verb srl.epochs=1``), a scratch TxE's with none or a pretrained one (which keeps its
    own architecture), a TxE rate with no TxE, or a backbone rate or clip setting with --features
    was valid config that trained with the setting ignored, exit 0. Only what the user typed is
    checked: the library's callers (the demo) share one override list across the three tasks."""
    from ...errors import BadInputError
    from . import TASKS

    ctx = "none" if contextualizer is None else str(contextualizer)
    for ov in overrides:
        key = ov.partition("=")[0].strip()
        head, _, rest = key.partition(".")
        sub = rest.partition(".")[0]
        why = None
        if head in TASKS and head != task:
            why = f"--task {task} reads only the {task} settings, not the {head} ones"
        elif head == "txe" and ctx != "scratch":
            why = "builds the TxE of --contextualizer scratch; " + (
                "--contextualizer none has no TxE" if ctx == "none" else f"{ctx} keeps its own architecture"
            )
        elif head == task and sub == "txe_lr_scale" and ctx == "none":
            why = "the TxE's rate: --contextualizer none has no TxE"
        elif head == task and sub == "backbone_lr_scale" and features is not None:
            why = "the backbone's rate: --features are the backbone's outputs, no backbone is trained"
        elif features is not None and any(key == k or key.startswith(k + ".") for k in CLIP_KEYS):
            why = "a clip setting of --videos: --features are the clips' features already"
        if why:
            raise BadInputError(key, f"{why}; the run would not read it")


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
                ("--predict", args.predict is not None),
            )
            if given
        ]
        if unused:
            raise BadInputError(None, f"--baseline scores a model-free baseline; {', '.join(unused)} would not be used")
        for ov in args.overrides:  # its config too: any other setting was accepted and the same numbers written
            key = ov.partition("=")[0].strip()
            if key not in BASELINE_KEYS:
                raise BadInputError(
                    key, f"--baseline scores a model-free baseline, reading only {', '.join(BASELINE_KEYS)}"
                )
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
    check_overrides_read(args.task, args.overrides, args.contextualizer, args.features)
    if args.predict is not None:  # "" too: `--predict "$SPLIT"` with SPLIT unset trained the runs
        return _predict(args)
    res = run_finetune(args.task, args.data_root, **_run_args(args), resume=args.resume)
    sys.stdout.write(res["table"])
    sys.stdout.write(json_dumps({k: v["mean"] for k, v in res["summary"].items()}) + "\n")
    if res.get("partial") and speaks_for_job():  # every rank has the summary; the job says it once
        print(f"moviessl: warning: {res['partial']} (see summary.md)", file=sys.stderr)
    return 0


def _run_args(args: argparse.Namespace) -> dict:
    """What trains the runs, given alike to the training and to ``--predict`` (which must find them)."""
    keys = ("features", "videos", "backbone", "contextualizer", "seeds", "out", "preset", "overrides", "tokenizer")
    return {k: getattr(args, k) for k in keys}


def _predict(args: argparse.Namespace) -> int:
    from ...dist import job_leader
    from ...errors import BadInputError
    from ...utils.io import json_dumps
    from .runner import run_predict

    if not args.predict.strip():
        raise BadInputError("--predict", "give a split name (e.g. testsrl); it is empty")
    if args.resume:
        raise BadInputError(None, "--predict trains nothing; --resume would not be used")
    if not job_leader():  # no training, so no process group: one process predicts and writes
        return 0
    res = run_predict(args.task, args.data_root, args.predict, **_run_args(args))
    sys.stdout.write(res["table"])
    if res["partial"]:
        print(f"moviessl: warning: {res['partial']}", file=sys.stderr)
    line = {k: v["mean"] for k, v in res["summary"].items()} if res["scored"] else {}
    sys.stdout.write(json_dumps(line | {"predictions": [r["predictions"] for r in res["runs"]]}) + "\n")
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
    v.add_argument(
        "--predict",
        metavar="SPLIT",
        help="train nothing: each finished run of this same command predicts SPLIT (e.g. testsrl, a test split "
        "without released ground truth) with its model.pt -> seedS/predictions_SPLIT.pkl (the whole split: "
        "data.split_file is not applied)",
    )
    add_overrides_arg(v)
    v.set_defaults(func=_run_vidsitu)
