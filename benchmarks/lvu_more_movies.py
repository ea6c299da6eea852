"""Does the Object Transformer learn LVU's tasks when there are more movies? (issue 14)

    python -m benchmarks.lvu_more_movies --backbone runs/demo_full/backbone/supervised/r0/model.pt \\
        --out runs/lvu200 [--movies 200] [--seeds 3] [--override 'train.epochs_grid=[10,30,90]']

The demo's SynthMovies has 30 LVU movies (18 train / 6 val / 6 test): one test movie is 16.7 points
of top-1, and the majority class scores 0 or 33 by luck. This generates the demo preset's LVU movies
alone at a larger count (the same generator and knobs; the action, VidSitu and pool parts cut to a
token size because only ``lvu/`` is read) and runs two rows of the Table 5 analogue on them: the OT
(supervised RoI features + masked-instance pretraining) and the scene-only model on pooled
supervised event features, each task ``--seeds`` runs, next to the constant / majority baseline and
the oracle of the generating variables (``lvu_table.md`` under ``OUT/lvu``). Resumable: rerun to
continue.

Controls for the OT row (issue 14), each against the default on the same movies: ``--no-ot-init``
(no masked-instance pretraining), ``--roi-short-side 112`` (RoI features at SynthMovies' native size
instead of the backbone's 64 px), ``--override model.overrides.input_norm=false`` (raw instance
features; ``--pretrain-override`` the same to pretrain on them). ``--synth DIR`` reuses generated
movies, ``--rows ot:none`` and ``--tasks like_ratio,view_count`` cut the table. Also printed: how the
regression predictions correlate with the targets, and what the RoI features and the teacher's
targets look like.

The whole table (``--rows paper``: the paper's six rows; ``all``: every instance x scene pair) also
needs ``--cvrl`` and ``--modist`` backbones and, for the scene pathway "ours", a MaskPred TxE:
``--contextualizer`` a finished one, or ``--context-features DIR`` (repeatable) to pretrain one here as
the demo does (its main variant, seed 0) on the CVRL event features of these LVU movies plus the given
folders, e.g. a demo's CVRL features of its VidSitu-style clips and unlabeled pool::

    python -m benchmarks.lvu_more_movies --backbone runs/demo_full/backbone/supervised/r0/model.pt \
        --cvrl runs/demo_full/backbone/cvrl/r0/model.pt --modist runs/demo_full/backbone/modist/r0/model.pt \
        --context-features runs/demo_full/features/cvrl/r0/vidsitu \
        --context-features runs/demo_full/features/cvrl/r0/pool --rows paper,ot:sup --out runs/lvu200
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path


def regression_fit(finetune: Path, lvu_root: Path) -> dict:
    """Per row and regression task: the Pearson r of each run's per-movie prediction (mean over its
    spans) with the target, and the prediction's SD next to the target's, per split (mean over runs).
    An MSE above the constant's with r near 0 means no signal; with r > 0, over-dispersion."""
    import numpy as np

    from moviessl.data.lvu import read_labels

    out: dict = {}
    for task in ("like_ratio", "view_count"):
        for d in sorted(finetune.glob(f"*/{task}")):
            for split in ("val", "test"):
                y = dict(read_labels(lvu_root, task, split))
                rs, sds = [], []
                for run in sorted(d.glob("seed*/predictions_%s.json" % split)):
                    p = json.loads(run.read_text())
                    ids = sorted(p)
                    pred = np.array([np.mean(p[v]) for v in ids])
                    target = np.array([float(y[v]) for v in ids])
                    rs.append(float(np.corrcoef(pred, target)[0, 1]))
                    sds.append(float(pred.std()))
                if rs:
                    out.setdefault(d.parent.name, {}).setdefault(task, {})[split] = {
                        "r": round(float(np.mean(rs)), 3),
                        "r_range": [round(min(rs), 3), round(max(rs), 3)],
                        "sd_pred": round(float(np.mean(sds)), 3),
                        "sd_target": round(float(target.std()), 3),
                    }
    return out


def paired_differences(a: Path, b: Path, lvu_root: Path) -> dict:
    """Row ``a`` against row ``b`` (two finetune folders of per-task runs), per task and split: the
    difference of their means (+ = ``a`` better) with two SEs, the runs' (as in the table) and the
    movies' (each movie's score averaged over the runs, SE of the per-movie difference). The second
    holds which movies the split drew, which the runs' SE leaves out."""
    import numpy as np

    from moviessl.data.lvu import is_regression, read_labels
    from moviessl.eval.lvu import video_prediction
    from moviessl.eval.stats import mean_se

    def scores(d: Path, task: str, split: str) -> np.ndarray:  # runs x movies
        y = dict(read_labels(lvu_root, task, split))
        out = []
        for run in sorted(d.glob(f"seed*/predictions_{split}.json")):
            p = json.loads(run.read_text())
            pred = {v: video_prediction(task, p[v]) for v in sorted(p)}
            if is_regression(task):
                out.append([-((pred[v] - float(y[v])) ** 2) for v in pred])  # negated: higher is better
            else:
                out.append([100.0 * (int(np.argmax(pred[v])) == int(y[v])) for v in pred])
        return np.array(out)

    res: dict = {}
    for task_dir in sorted(a.iterdir()):
        if not (b / task_dir.name).is_dir():
            continue
        for split in ("val", "test"):
            sa, sb = scores(task_dir, task_dir.name, split), scores(b / task_dir.name, task_dir.name, split)
            if not (len(sa) and len(sb)):
                continue
            diff, se_movies = mean_se(sa.mean(0) - sb.mean(0))
            se_runs = float(np.hypot(mean_se(sa.mean(1))[1], mean_se(sb.mean(1))[1]))
            res.setdefault(task_dir.name, {})[split] = {
                "diff": round(diff, 4),
                "se_runs": round(se_runs, 4),
                "se_movies": round(se_movies, 4),
            }
    return res


def instance_diagnostics(inst_dir: Path, teacher: Path) -> dict:
    """What the OT row reads: the share of the RoI features' squared norm in their common mean
    vector, and how varied the masked-instance teacher's targets are on them (share of tokens whose
    top class is the most common one, distinct top classes, mean entropy / ln C)."""
    import numpy as np
    import torch

    from moviessl.context.instance_masking import load_teacher_head
    from moviessl.features.instances import InstanceStore

    store = InstanceStore(inst_dir)
    x = np.concatenate([store.load(v).feat for v in store.ids]).astype(np.float64)
    out = {"tokens": len(x), "common_share": round(float((x.mean(0) ** 2).sum() / (x**2).sum(1).mean()), 3)}
    if teacher.is_file():
        w, b = load_teacher_head(teacher)
        z = torch.from_numpy(x).float() @ w.t() + b
        top = torch.bincount(z.argmax(-1), minlength=z.shape[1])
        p = z.softmax(-1)
        ent = -(p * p.clamp_min(1e-12).log()).sum(-1).mean() / np.log(z.shape[1])
        out.update(
            teacher_mode_share=round(float(top.max() / len(z)), 3),
            teacher_top_classes=f"{int((top > 0).sum())}/{z.shape[1]}",
            teacher_entropy=round(float(ent), 3),
        )
    return out


def parse_rows(spec: str) -> list[tuple[str, str]]:
    """``--rows``: ``instance:scene`` pairs and the keywords ``paper`` / ``all``, in order, once each."""
    from moviessl.tasks.lvu.table import ALL_ROWS, PAPER_ROWS

    rows: list[tuple[str, str]] = []
    for part in spec.split(","):
        named = {"paper": PAPER_ROWS, "all": ALL_ROWS}.get(part)
        rows += list(named) if named else [tuple(part.split(":"))]  # type: ignore[list-item]
    return list(dict.fromkeys(rows))


def pretrain_txe(out: Path, lvu_root: Path, cvrl: str, extra: list[str]) -> Path:
    """The demo's MaskPred TxE (main variant, seed 0, cpu preset) on the CVRL event features of the
    LVU movies (extracted where the table reads them) plus ``extra`` folders; cached in ``out``."""
    from moviessl.demo import MAIN_VARIANT, MASK_LABELS, QUIET, job_context, job_extract

    events = out / "lvu" / "events" / "cvrl"
    if not (events / "index.json").is_file():
        job_extract(cvrl, str(lvu_root), str(events))
    loss, mask = MAIN_VARIANT
    ctx = out / "context" / f"cvrl_{loss}_mask{mask}"
    if not (ctx / "model.pt").is_file():
        ov = [*QUIET, "maskpred.loss=infonce", f"maskpred.mask_sizes={MASK_LABELS[mask]}", "seed=0"]
        job_context([str(events), *extra], str(ctx), ov)
    return ctx / "model.pt"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--backbone",
        required=True,
        help="a supervised backbone's model.pt (its checkpoints/last.ckpt is the OT teacher)",
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--movies", type=int, default=200, help="LVU movies, split 60/20/20 (the demo has 30)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--override",
        action="append",
        default=[],
        help="dotted LVU config override, e.g. 'train.epochs_grid=[10,30,90]' (repeatable)",
    )
    ap.add_argument(
        "--pretrain-override", action="append", default=[], help="dotted OT pretraining override (repeatable)"
    )
    ap.add_argument("--synth", help="generate (or reuse) the movies here instead of OUT/synth")
    ap.add_argument(
        "--rows",
        default="ot:none,none:sup",
        help="instance:scene pairs, comma-separated; 'paper' = the paper's six rows, 'all' = every pair",
    )
    ap.add_argument("--cvrl", help="a CVRL backbone's model.pt (rows cvrl:*, *:ours)")
    ap.add_argument("--modist", help="a MoDist backbone's model.pt (rows modist:*)")
    ap.add_argument("--contextualizer", help="a MaskPred TxE (model.pt) on CVRL features, for scene 'ours'")
    ap.add_argument(
        "--context-features",
        action="append",
        default=[],
        help="CVRL feature folder to pretrain the TxE on besides these LVU movies' (repeatable)",
    )
    ap.add_argument("--tasks", help="comma-separated LVU tasks (default: all nine)")
    ap.add_argument(
        "--compare",
        action="append",
        default=[],
        help="A:B -- two finetune row folders (under OUT/lvu/finetune, e.g. none_ours:none_sup, or paths): "
        "their per-task differences with the runs' and the movies' SE (repeatable)",
    )
    ap.add_argument(
        "--roi-short-side", type=int, default=None, help="frame size for RoI features (default: the backbone's)"
    )
    ap.add_argument(
        "--no-ot-init", action="store_true", help="the OT row from scratch (no masked-instance pretraining)"
    )
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from moviessl.synth import generate
    from moviessl.tasks.lvu.table import INSTANCE_BACKBONE, SCENE_BACKBONE, roi_side, run_lvu_table
    from moviessl.training import quiet_lightning

    rows = parse_rows(a.rows)
    backbones = {k: v for k, v in (("supervised", a.backbone), ("cvrl", a.cvrl), ("modist", a.modist)) if v}
    need = {INSTANCE_BACKBONE[i] for i, _ in rows if i != "none"} | {SCENE_BACKBONE[s] for _, s in rows if s != "none"}
    if need - set(backbones):
        ap.error("rows " + a.rows + " need " + ", ".join(f"--{b}" for b in sorted(need - set(backbones))))
    if any(s == "ours" for _, s in rows) and not (a.contextualizer or a.context_features):
        ap.error("scene 'ours' needs --contextualizer or --context-features")
    if any(p.count(":") != 1 for p in a.compare):
        ap.error("--compare takes A:B (two finetune row folders)")
    quiet_lightning()
    out = Path(a.out)
    t0 = time.perf_counter()
    synth = Path(a.synth) if a.synth else out / "synth"
    generate(
        synth,
        preset="demo",
        seed=0,
        progress=False,
        n_lvu=a.movies,
        n_actions=10,
        n_vidsitu_train=4,
        n_vidsitu_valid=2,
        pool_ratio=0.0,
    )
    t_synth = time.perf_counter() - t0
    ctx = a.contextualizer
    if any(s == "ours" for _, s in rows) and not ctx:
        ctx = pretrain_txe(out, synth / "lvu", a.cvrl, a.context_features)
    res = run_lvu_table(
        out / "lvu",
        synth,
        backbones,
        ctx,
        seeds=a.seeds,
        rows=rows,
        tasks=a.tasks.split(",") if a.tasks else None,
        overrides=a.override,
        pretrain_overrides=a.pretrain_override,
        roi_short_side=a.roi_short_side,
        ot_init=not a.no_ot_init,
    )
    print(res["markdown"])
    fit = regression_fit(out / "lvu" / "finetune", synth / "lvu")
    print("regressions, prediction vs target:", json.dumps(fit))
    compared = {}
    for pair in a.compare:
        x, y = (Path(p) if Path(p).is_dir() else out / "lvu" / "finetune" / p for p in pair.split(":"))
        compared[pair] = paired_differences(x, y, synth / "lvu")
        print(f"{pair} (+ = the first better; MSE negated):", json.dumps(compared[pair]))
    inputs = {}
    inst_dir = out / "lvu" / "instances" / f"supervised_{roi_side(a.backbone, a.roi_short_side)}px"
    if inst_dir.is_dir():
        inputs = instance_diagnostics(inst_dir, Path(a.backbone).parent / "checkpoints" / "last.ckpt")
        print("instance features and teacher targets:", json.dumps(inputs))
    timings = {"synth": round(t_synth, 1), **res["timings"]}
    print(json.dumps(timings))
    return {
        "timings": timings,
        "claims": res["claims"],
        "regression_fit": fit,
        "compared": compared,
        "instances": inputs,
    }


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.lvu_more_movies")
