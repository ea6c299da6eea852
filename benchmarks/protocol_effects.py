"""Issue 13's protocol fixes, measured one at a time on the same features and the same seeds.

    python -m benchmarks.protocol_effects --demo runs/demo_base --out runs/protocol [--seeds 3] [--workers 2]

``--demo`` is a finished ``moviessl demo`` folder of the version *before* the fixes (its features of
the VidSitu-style clips and its MaskPred TxEs); every row here fine-tunes on those features with
fine-tuning seeds 0..K-1, switching one fix at a time through the settings that keep the old
behaviour for exactly this purpose (``data.input_norm=batch``, ``relation.pair_identity=false``,
``*.txe_lr_scale``, MaskPred with ``--include-eval-splits`` / ``maskpred.input_norm=false``). The
first column of each group is the old protocol (it reproduces the old demo's numbers), the last the
new one. Writes OUT/effects.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OLD = ["data.input_norm=batch", "relation.pair_identity=false"]


def groups(demo: Path, exp: Path) -> list[tuple[str, list[tuple[str, dict]]]]:
    """(question, [(row label, finetune kwargs)])."""
    feats = {b: str(exp / f"feats_{b}_vidsitu") for b in ("random", "supervised", "cvrl", "modist")}
    ctx_old = str(demo / "context" / "cvrl_contrastive_mask1-3" / "model.pt")  # pretrained on train + valid + LVU
    ctx_new = str(exp / "context_cvrl_new" / "model.pt")  # train + LVU, normalised inputs
    ctx_noleak = str(exp / "context_cvrl_noleak_raw" / "model.pt")  # train + LVU, raw inputs (the old normalisation)

    def row(task, b, ctx, *ov):
        return dict(task=task, features=feats[b], contextualizer=ctx, overrides=list(ov))

    return [
        (
            "relation: the head is told its pair (old normalisation, TxE lr x1)",
            [
                ("CVRL, no TxE, pair not given (old)", row("relation", "cvrl", "none", *OLD)),
                ("CVRL, no TxE, pair given", row("relation", "cvrl", "none", "data.input_norm=batch")),
                ("MoDist, no TxE, pair not given (old)", row("relation", "modist", "none", *OLD)),
                ("MoDist, no TxE, pair given", row("relation", "modist", "none", "data.input_norm=batch")),
                ("CVRL, scratch TxE, pair not given (old)", row("relation", "cvrl", "scratch", *OLD)),
                ("CVRL, scratch TxE, pair given", row("relation", "cvrl", "scratch", "data.input_norm=batch")),
            ],
        ),
        (
            "input normalisation: fixed train statistics vs BatchNorm / raw TxE input (pair given, TxE lr x1)",
            [
                ("verb, CVRL, BatchNorm (old)", row("verb", "cvrl", "none", "data.input_norm=batch")),
                ("verb, CVRL, fixed statistics", row("verb", "cvrl", "none")),
                ("verb, MoDist, BatchNorm (old)", row("verb", "modist", "none", "data.input_norm=batch")),
                ("verb, MoDist, fixed statistics", row("verb", "modist", "none")),
                (
                    "relation, CVRL scratch TxE, raw input (old)",
                    row("relation", "cvrl", "scratch", "data.input_norm=batch"),
                ),
                ("relation, CVRL scratch TxE, fixed statistics", row("relation", "cvrl", "scratch")),
                ("srl, CVRL no TxE, BatchNorm (old)", row("srl", "cvrl", "none", "data.input_norm=batch")),
                ("srl, CVRL no TxE, fixed statistics", row("srl", "cvrl", "none")),
                ("srl, CVRL scratch TxE, raw input (old)", row("srl", "cvrl", "scratch", "data.input_norm=batch")),
                ("srl, CVRL scratch TxE, fixed statistics", row("srl", "cvrl", "scratch")),
            ],
        ),
        (
            "leakage: MaskPred pretrained with the valid clips (old) vs without (raw inputs both)",
            [
                (
                    "relation, CVRL MaskPred incl. valid (old)",
                    row("relation", "cvrl", ctx_old, "data.input_norm=batch"),
                ),
                ("relation, CVRL MaskPred without valid", row("relation", "cvrl", ctx_noleak, "data.input_norm=batch")),
                ("srl, CVRL MaskPred incl. valid (old)", row("srl", "cvrl", ctx_old, "data.input_norm=batch")),
                ("srl, CVRL MaskPred without valid", row("srl", "cvrl", ctx_noleak, "data.input_norm=batch")),
            ],
        ),
        (
            "TxE fine-tuning rate (new normalisation, pair given, MaskPred without valid)",
            [
                ("relation, scratch TxE, lr x1 (old)", row("relation", "cvrl", "scratch", "relation.txe_lr_scale=1.0")),
                ("relation, scratch TxE, lr x0.1", row("relation", "cvrl", "scratch", "relation.txe_lr_scale=0.1")),
                ("relation, MaskPred TxE, lr x1 (old)", row("relation", "cvrl", ctx_new, "relation.txe_lr_scale=1.0")),
                ("relation, MaskPred TxE, lr x0.1", row("relation", "cvrl", ctx_new, "relation.txe_lr_scale=0.1")),
                ("relation, MaskPred TxE, frozen", row("relation", "cvrl", ctx_new, "relation.txe_lr_scale=0.0")),
                ("srl, scratch TxE, lr x1 (old)", row("srl", "cvrl", "scratch", "srl.txe_lr_scale=1.0")),
                ("srl, scratch TxE, lr x0.1", row("srl", "cvrl", "scratch", "srl.txe_lr_scale=0.1")),
                ("srl, MaskPred TxE, lr x1 (old)", row("srl", "cvrl", ctx_new, "srl.txe_lr_scale=1.0")),
                ("srl, MaskPred TxE, lr x0.1", row("srl", "cvrl", ctx_new, "srl.txe_lr_scale=0.1")),
                ("srl, MaskPred TxE, frozen", row("srl", "cvrl", ctx_new, "srl.txe_lr_scale=0.0")),
            ],
        ),
    ]


def job_row(
    data_root: str, out: str, seeds: int, task: str, features: str, contextualizer: str, overrides: list
) -> None:
    from moviessl.tasks.vidsitu.runner import run_finetune

    run_finetune(
        task,
        data_root,
        features=features,
        contextualizer=contextualizer,
        seeds=seeds,
        out=out,
        overrides=["trainer.progress_bar=false", *overrides],
        resume=True,
    )


def job_context(features: list[str], out: str, overrides: list[str], include_eval: bool) -> None:
    from moviessl.config import load_config
    from moviessl.context.pretrain import pretrain_context

    pretrain_context(
        features,
        out,
        load_config("context", "cpu", ["trainer.progress_bar=false", *overrides]),
        resume=True,
        include_eval_splits=include_eval,
    )


def main(argv=None) -> int:
    from moviessl.scheduler import Job, run_jobs
    from moviessl.utils.io import json_float

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", required=True, help="a finished demo folder of the version before the fixes")
    ap.add_argument("--exp", required=True, help="folder with feats_<backbone> (the demo's VidSitu features + splits)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    demo, exp, out = Path(a.demo), Path(a.exp), Path(a.out)
    data_root = str(demo / "synth" / "vidsitu")
    lvu = str(demo / "features" / "cvrl" / "lvu")
    jobs = [
        Job(
            "context cvrl new",
            "benchmarks.protocol_effects:job_context",
            dict(
                features=[lvu, str(exp / "feats_cvrl_vidsitu")],
                out=str(exp / "context_cvrl_new"),
                overrides=[],
                include_eval=False,
            ),
            done=str(exp / "context_cvrl_new" / "model.pt"),
            cost=60,
        ),
        Job(
            "context cvrl noleak raw",
            "benchmarks.protocol_effects:job_context",
            dict(
                features=[lvu, str(exp / "feats_cvrl_vidsitu")],
                out=str(exp / "context_cvrl_noleak_raw"),
                overrides=["maskpred.input_norm=false"],
                include_eval=False,
            ),
            done=str(exp / "context_cvrl_noleak_raw" / "model.pt"),
            cost=60,
        ),
    ]
    table = []
    for q, rows in groups(demo, exp):
        for label, kw in rows:
            d = out / f"{len(table):02d}"
            deps = tuple(j.name for j in jobs[:2] if j.done == kw["contextualizer"])  # its MaskPred TxE, if made here
            jobs.append(
                Job(
                    label,
                    "benchmarks.protocol_effects:job_row",
                    dict(data_root=data_root, out=str(d), seeds=a.seeds, **kw),
                    deps,
                    str(d / "summary.json"),
                    30 if kw["task"] == "srl" else 5,
                )
            )
            table.append((q, label, d, kw["task"]))
    run_jobs(jobs, workers=a.workers, timings=out / "timings.json")
    res, lines, last_q = [], [], None
    main_metric = {"verb": "acc@1", "srl": "cider", "relation": "mean_acc"}
    for q, label, d, task in table:
        s = json.loads((d / "summary.json").read_text())["summary"]
        res.append({"question": q, "row": label, "task": task, "summary": s})
        if q != last_q:
            lines += ["", f"**{q}**", "", "| row | main metric | other |", "|---|---|---|"]
            last_q = q
        m = main_metric[task]
        # a summary.json's null mean / se (n 0: no finite run) reads back as NaN, shown as before
        ms = {k: (json_float(v["mean"]), json_float(v["se"])) for k, v in s.items()}
        other = ", ".join(f"{k} {mean:.2f} ± {se:.2f}" for k, (mean, se) in ms.items() if k != m)
        lines.append(f"| {label} | {m} {ms[m][0]:.2f} ± {ms[m][1]:.2f} (n={s[m]['n']}) | {other} |")
    (out / "effects.json").write_text(json.dumps(res, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.protocol_effects")
