"""Event-level pretraining commands.

    moviessl pretrain-context --features FEATS [--features FEATS2 ...] --out OUT
                              [--preset cpu|paper] [--resume] [k=v ...]
    moviessl pretrain-ot --instances DIR [--instance-meta PKL|DIR] --teacher CKPT --out OUT
                         [--preset cpu|paper] [--resume] [k=v ...]

FEATS: folders written by ``moviessl extract`` or VidSitu's released ``vsitu_vid_feats/<model>/``.
DIR: instance features (``moviessl extract-instances``) or LVU's released ``features/`` (with one
``instance_meta_<task>.pkl``, or the ``instance_meta/`` folder for every task's movies).
"""

from __future__ import annotations

from ..utils import plural


def add_parser(subparsers) -> None:
    from ..cli import add_overrides_arg

    p = subparsers.add_parser(
        "pretrain-context",
        help="pretrain the TxE contextualizer by event mask prediction on cached features",
        description="Pretrain the TxE contextualizer by event mask prediction (span masks, a [MASK] token, a "
        "contrastive loss against a queue of distractors) on feature folders.",
    )
    p.add_argument(
        "--features",
        action="append",
        required=True,
        metavar="DIR",
        help="feature folder (moviessl extract output or VidSitu's vsitu_vid_feats/<model>); repeatable",
    )
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    p.add_argument(
        "--vidsitu-root",
        default=None,
        help="VidSitu annotations: leave out their non-train segments from folders without split info "
        "(e.g. VidSitu's released features)",
    )
    p.add_argument(
        "--include-eval-splits",
        action="store_true",
        help="also pretrain on evaluation-split videos (default: left out, as the paper does)",
    )
    add_overrides_arg(p)
    p.set_defaults(func=_run)

    o = subparsers.add_parser(
        "pretrain-ot",
        help="pretrain LVU's Object Transformer by masked instances on unlabeled long videos",
        description="LVU's masked-instance pretraining: whole tracks masked, distillation of a short-term action "
        "head's logits, span compatibility; writes OUT/model.pt (stage 'ot') for `finetune lvu --init`.",
    )
    o.add_argument("--instances", required=True, help="moviessl extract-instances folder, or LVU's features/ folder")
    o.add_argument(
        "--instance-meta",
        default=None,
        help="with LVU's features/: one of its instance_meta_<task>.pkl files, or the instance_meta/ folder "
        "(every task's movies)",
    )
    o.add_argument(
        "--teacher",
        default=None,
        help="the short-term action head (required unless masking.action_weight=0): a moviessl supervised run's "
        "checkpoints/last.ckpt (its model.pt holds no classifier), a moviessl backbone with a head, or a PySlowFast "
        "checkpoint (head.projection)",
    )
    o.add_argument("--out", required=True, help="run folder")
    o.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    add_overrides_arg(o)
    o.set_defaults(func=_run_ot)


def _run_ot(args) -> int:
    from ..config import load_config
    from ..errors import BadInputError
    from ..features.instances import open_instances
    from ..tasks.lvu.runner import is_instance_folder
    from .instance_masking import pretrain_ot

    if args.instance_meta is not None and is_instance_folder(args.instances):
        # its boxes are the tracks it was extracted from: the metadata was read by nobody, exit 0
        raise BadInputError(
            "--instance-meta",
            f"goes with LVU's features/; {args.instances} is a `moviessl extract-instances` folder, whose boxes "
            "are the tracks it was extracted from",
        )
    cfg = load_config("ot_pretrain", args.preset, args.overrides)
    path = pretrain_ot(
        open_instances(args.instances, args.instance_meta), args.out, cfg, args.teacher, resume=args.resume
    )
    print(path)
    return 0


def _run(args) -> int:
    from ..config import load_config
    from ..dist import speaks_for_job
    from .pretrain import pretrain_context

    cfg = load_config("context", args.preset, args.overrides)
    path = pretrain_context(
        args.features,
        args.out,
        cfg,
        resume=args.resume,
        include_eval_splits=args.include_eval_splits,
        vidsitu_root=args.vidsitu_root,
    )
    # the job's other processes return as soon as training ends, while its leader writes model.pt: one
    # that read it then failed on the earlier run's file (a torn copy) though the job finished, or
    # read nothing the console shows
    if path.is_file() and speaks_for_job():
        from ..checkpoint import load_checkpoint

        meta = load_checkpoint(path, stage="context")["meta"]
        skipped = int(meta.get("skipped_files", 0))
        note = f"; {skipped} bad feature file(s) skipped (listed in the log)" if skipped else ""
        print(f"{path}: TxE trained on {plural(int(meta.get('num_videos', 0)), 'video')}{note}")
    return 0
