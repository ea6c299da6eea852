"""``moviessl finetune lvu --task {relationship,...,view_count,all} ...``: K seeded runs per task,
per-span predictions, LVU's metrics on val and test, mean ± SE summaries."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path


def _run_lvu(args: argparse.Namespace) -> int:
    from ...dist import speaks_for_job
    from ...errors import BadInputError
    from ...features.extract import run_lock
    from ...utils.io import ensure_out_dir, json_dumps
    from .runner import contextualize_tasks, is_instance_folder, run_finetune
    from .task import TASKS

    if args.instances is None and args.scene_features is None:
        raise BadInputError(None, "give --instances DIR, --scene-features DIR or both")
    tasks = [args.task] if args.task in TASKS else list(TASKS)  # "all"
    release = args.instances is not None and not is_instance_folder(args.instances)
    if len(tasks) > 1 and release and args.instance_meta is not None and not Path(args.instance_meta).is_dir():
        # each task's file lists its own videos and boxes: one file would serve every task its boxes
        raise BadInputError(
            "--instance-meta", "with --task all give the folder that holds every instance_meta_<task>.pkl"
        )
    # --task all: its scene cache and summary are the top folder's, its tasks' runs in folders below
    top = run_lock(ensure_out_dir(args.out)) if len(tasks) > 1 else contextlib.nullcontext()
    with top:
        if len(tasks) > 1 and args.contextualizer is not None and args.scene_features is not None:
            # one pass of the TxE over every task's films before the first task starts the other ranks
            contextualize_tasks(
                tasks,
                args.data_root,
                args.scene_features,
                args.contextualizer,
                args.out,
                args.preset,
                args.overrides,
                seeds=args.seeds,
                instances=args.instances,
                instance_meta=args.instance_meta,
            )
        means, summaries, tables = {}, {}, {}
        for task in tasks:
            res = run_finetune(
                task,
                args.data_root,
                instances=args.instances,
                instance_meta=args.instance_meta,
                scene_features=args.scene_features,
                scene_kind=args.scene_kind,
                contextualizer=args.contextualizer,
                init=args.init,
                seeds=args.seeds,
                out=Path(args.out) / task if len(tasks) > 1 else args.out,
                preset=args.preset,
                overrides=args.overrides,
                resume=args.resume,
                scene_cache=args.out,  # one pass of --contextualizer's TxE for every task
            )
            sys.stdout.write(res["table"])
            if res.get("partial") and speaks_for_job():  # every rank has the summary; the job says it once
                print(f"moviessl: warning: {task}: {res['partial']} (see summary.md)", file=sys.stderr)
            means[task] = {k: v["mean"] for k, v in res["summary"].items()}
            summaries[task], tables[task] = res["summary"], res["table"]
        if len(tasks) > 1:  # one record of the whole table beside the per-task folders
            from ...utils.io import atomic_write_json, atomic_write_text

            atomic_write_json(Path(args.out) / "summary.json", {"tasks": summaries})
            md = [f"## {task}\n\n{tables[task]}" for task in tasks]
            atomic_write_text(
                Path(args.out) / "summary.md", "# LVU, every task (mean ± standard error)\n\n" + "\n".join(md)
            )
    sys.stdout.write(json_dumps(means if len(tasks) > 1 else means[tasks[0]]) + "\n")
    return 0


def add_parser(datasets) -> None:
    """``finetune lvu`` under the ``finetune`` command's dataset subparsers."""
    from ...cli import add_overrides_arg
    from .task import TASKS

    p = datasets.add_parser(
        "lvu",
        help="LVU's nine long-form tasks with the Object Transformer (OT / OT++ / scene only)",
        description="Trains --seeds runs per task; writes per run predictions_{val,test}.json (the `moviessl "
        "evaluate lvu` format), metrics.json, model.pt, and summary.json + summary.md (mean ± standard error) "
        "and videos.json (the labelled videos used and those without inputs, by split); "
        "with --task all one subfolder per task and a summary.json + summary.md of every task.",
    )
    p.add_argument("--task", required=True, choices=[*TASKS, "all"])
    p.add_argument("--data-root", required=True, help="the folder holding lvu_1.0/ (or lvu_1.0 itself)")
    p.add_argument(
        "--instances",
        default=None,
        help="instance (RoI) features: a `moviessl extract-instances` folder, or LVU's released features/",
    )
    p.add_argument(
        "--instance-meta",
        default=None,
        help="with LVU's features/: its instance_meta_<task>.pkl, or the instance_meta/ folder holding one per "
        "task (default: DATA_ROOT/instance_meta/)",
    )
    p.add_argument(
        "--scene-features", default=None, help="scene tokens: a `moviessl extract` folder (OT++'s scene pathway)"
    )
    p.add_argument(
        "--scene-kind",
        default="auto",
        choices=["auto", "ctx", "feats"],
        help="read {id}_ctx.npy (TxE outputs) or {id}_feats.npy (pooled backbone); auto: ctx if extracted with one",
    )
    p.add_argument(
        "--contextualizer", default=None, help="a stage-'context' TxE checkpoint: contextualise the scene features here"
    )
    p.add_argument("--init", default=None, help="a pretrained Object Transformer (`moviessl pretrain-ot` model.pt)")
    p.add_argument("--seeds", type=int, default=1, help="number of runs (seeds seed..seed+K-1; the paper uses 5)")
    p.add_argument("--out", required=True, help="output folder (one subfolder per task with --task all)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    add_overrides_arg(p)
    p.set_defaults(func=_run_lvu)
