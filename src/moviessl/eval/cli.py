"""``moviessl evaluate vidsitu --task {verb,srl,relation} --pred FILE --data-root ROOT [--split valid]``
``moviessl evaluate lvu --task T --pred FILE --data-root LVU_ROOT [--split val|test] [--out FILE]``

Prints exactly one JSON object (values in percent) on stdout; a malformed submission or
annotation is one ``moviessl: error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys


def _run_vidsitu(args: argparse.Namespace) -> int:
    from ..utils.io import atomic_write_json, ensure_out_file, json_dumps
    from .vidsitu import evaluate_files

    if args.out:
        ensure_out_file(args.out, "--out file")
    res = evaluate_files(
        args.task, args.pred, args.data_root, split=args.split, split_file=args.split_file, details=args.details
    )
    if args.out:
        atomic_write_json(args.out, res)
    sys.stdout.write(json_dumps(res) + "\n")
    return 0


def _run_lvu(args: argparse.Namespace) -> int:
    from ..utils.io import atomic_write_json, ensure_out_file, json_dumps
    from .lvu import evaluate_files

    if args.out:
        ensure_out_file(args.out, "--out file")
    res = evaluate_files(args.task, args.pred, args.data_root, split=args.split)
    if args.out:
        atomic_write_json(args.out, res)
    sys.stdout.write(json_dumps(res) + "\n")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a submission with official benchmark semantics",
        description="Score prediction files exactly as the benchmark's own evaluator.",
    )
    ds = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    v = ds.add_parser(
        "vidsitu",
        help="VidSitu verb / semantic-role / event-relation submissions",
        description="VidSitu metrics (percent): verb acc@1 acc@5 recall@5; srl cider cider_verb "
        "cider_arg rouge_l lea; relation mean_acc top1_acc.",
    )
    v.add_argument("--task", required=True, choices=["verb", "srl", "relation", "vb", "vb_arg", "evrel"])
    v.add_argument("--pred", required=True, help="submission: VidSitu's pickled list of dicts, or the same as .json")
    v.add_argument(
        "--data-root",
        required=True,
        help="the released vidsitu_annotations folder (or a folder holding it, e.g. a SynthMovies root)",
    )
    v.add_argument("--split", default="valid", help="split name used for the annotation file names (default: valid)")
    v.add_argument(
        "--split-file",
        default=None,
        help="use this segment list instead of split_files/vseg_split_<split>_lb.json (ann_idx refers to it)",
    )
    v.add_argument("--details", action="store_true", help="also report the evaluator's secondary numbers")
    v.add_argument("--out", default=None, help="also write the JSON object to this file")
    v.set_defaults(func=_run_vidsitu)

    from ..data.lvu import LVU_TASKS

    lv = ds.add_parser(
        "lvu",
        help="LVU's nine long-form tasks (per-span outputs summed / averaged per video)",
        description="LVU's protocol: per video, span softmax probabilities summed then argmax (top-1 %), or span "
        'predictions averaged (MSE on LVU\'s centred scale). Prints {"top1"|"mse": value, "n": videos}.',
    )
    lv.add_argument("--task", required=True, choices=list(LVU_TASKS))
    lv.add_argument(
        "--pred",
        required=True,
        help="JSON (or pickle) mapping youtube_id -> list of per-span outputs (class probabilities, or one "
        "centred number for like_ratio / view_count)",
    )
    lv.add_argument("--data-root", required=True, help="the folder holding lvu_1.0/ (or lvu_1.0 itself)")
    lv.add_argument("--split", default="val", choices=["val", "test", "train"], help="label split (default: val)")
    lv.add_argument("--out", default=None, help="also write the JSON object to this file")
    lv.set_defaults(func=_run_lvu)
