"""Does a wider TxE make MaskPred pretraining pay on the VidSitu tasks? (issue 13, Tables 1 and 3)

    python -m benchmarks.txe_width OUT --data-root S/vidsitu --features F/vidsitu \
        --unlabelled F/lvu F/pool [--widths 128 512] [--txe-lr 0.1 1.0] [--runs 3] [--seeds 4] [--workers 2] \
        [--maskpred KEY=VALUE ...] [--finetune KEY=VALUE ...]

MaskPred's fill-in retrieval rises with the TxE's width (128 -> 256 -> 512: 43 -> 47 -> 50%, where
the mean of the two neighbours scores 51%; ``benchmarks.maskpred_fillin``), and the demo's TxE is
128 wide. This reruns the claims a TxE takes part in at each width in ``--widths``, with the
demo's own jobs and protocol (:mod:`moviessl.demo`) on one backbone's event features:

- ``--runs`` MaskPred pretraining runs per width (seeds 0..R-1; the demo's main variant, cpu preset,
  on the train clips + the unlabelled folders, never the valid clips), each scored by fill-in;
- the TxE learning-rate rule of the demo, per width: the scale with the lowest held-out train loss
  of a *scratch* TxE of that width, used for the scratch and the MaskPred TxE alike;
- SRL and relations with no TxE, a scratch TxE and the MaskPred TxE of each width, and the pair
  prior: every row ``--runs`` x ``--seeds`` fine-tuning runs (replicate r: seeds ``r*S .. r*S+S-1``;
  MaskPred replicate r fine-tunes TxE r), mean ± SE over the replicate means (the demo's rule: the
  MaskPred rows carry their pretraining spread);
- with ``--txe-lr``, the scratch and MaskPred rows of every width also at each fixed TxE scale (the
  issue's frozen / low-rate controls; a fixed scale equal to the rule's choice is the rule's row, not
  trained twice once the tuning is known).

A TxE of width w has ``dim=w, mlp_dim=2w, heads=max(4, w/64)`` (128 is the cpu preset's ``txe_cpu``).
``--finetune`` overrides every tuning and fine-tuning run (``srl.X`` / ``relation.X`` only that task's),
e.g. ``srl.memory=self_input``.

Resumable (the demo's scheduler: every finished job is kept). Writes ``OUT/txe_width.json`` and
prints Markdown tables: the rows, then each claim with its difference, combined SE and z.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from moviessl.utils.io import atomic_write_json, json_float

METRICS = {"srl": ("cider", "lea", "rouge_l"), "relation": ("mean_acc", "top1_acc")}
TUNE_GRID = (0.1, 0.3, 1.0)  # the demo's full-profile grid


def width_overrides(w: int, prefix: str) -> list[str]:
    """The TxE of width ``w`` (``prefix``: ``model.txe_overrides`` for MaskPred, ``txe.overrides``
    for a scratch TxE of a VidSitu task)."""
    return [f"{prefix}.dim={w}", f"{prefix}.mlp_dim={2 * w}", f"{prefix}.heads={max(4, w // 64)}"]


def row_names(widths: list[int], lrs: list[float] = ()) -> list[tuple[str, int | None, float | None]]:
    """(txe, width, TxE lr scale) of every fine-tuned row: no TxE once, then scratch and MaskPred per
    width at the tuned scale (None) and at each fixed scale in ``lrs``."""
    return [("none", None, None)] + [
        (t, w, lr) for w in widths for lr in (None, *lrs) for t in ("scratch", "maskpred")
    ]  # fmt: skip


def tag(txe: str, w: int | None, lr: float | None = None) -> str:
    return txe if w is None else f"{txe}_w{w}" + ("" if lr is None else f"_lr{lr:g}")


def tuned_scale(out: Path, task: str, w: int) -> float | None:
    f = out / "tune" / task / f"w{w}" / "tuning.json"
    return float(json.loads(f.read_text())["best"]) if f.is_file() else None


def row_dir(out: Path, task: str, txe: str, w: int | None, lr: float | None) -> Path:
    """A fixed-scale row equal to the tuned scale is the tuned row (not trained twice)."""
    if lr is not None and tuned_scale(out, task, w) == lr:
        lr = None
    return out / "finetune" / task / tag(txe, w, lr)


def task_overrides(task: str, overrides) -> list[str]:
    """The overrides of ``overrides`` that apply to ``task``: its own section's and every shared one."""
    return [o for o in overrides if o.split(".", 1)[0] not in METRICS or o.startswith(f"{task}.")]


def plan(
    out: Path,
    data_root: Path,
    features: Path,
    unlabelled: list[Path],
    widths,
    runs,
    seeds,
    lrs=(),
    maskpred=(),
    finetune=(),
) -> list:
    from moviessl.demo import MAIN_VARIANT, MASK_LABELS, QUIET
    from moviessl.scheduler import Job

    loss, mask = MAIN_VARIANT
    jobs = []
    for w in widths:
        for r in range(runs):
            c = out / "context" / f"w{w}" / f"r{r}"
            ov = [
                *QUIET,
                f"maskpred.loss={'l2' if loss == 'l2' else 'infonce'}",
                f"maskpred.mask_sizes={MASK_LABELS[mask]}",
                f"seed={r}",
                *width_overrides(w, "model.txe_overrides"),
                *maskpred,
            ]
            jobs.append(Job(f"context w{w} r{r}", "moviessl.demo:job_context",
                            dict(features=[str(features), *map(str, unlabelled)], out=str(c), overrides=ov),
                            (), str(c / "model.pt"), 60.0 * (w / 128) ** 1.5))  # fmt: skip
        for task in METRICS:
            t = out / "tune" / task / f"w{w}"
            jobs.append(Job(f"tune {task} w{w}", "moviessl.demo:job_tune",
                            dict(task=task, data_root=str(data_root), features=str(features), out=str(t),
                                 values=list(TUNE_GRID), seeds=2,
                                 overrides=[*QUIET, *width_overrides(w, "txe.overrides"),
                                            *task_overrides(task, finetune)]),
                            (), str(t / "tuning.json"), {"srl": 25.0, "relation": 8.0}[task] * 6 * w / 128,
                            threads=1))  # fmt: skip
    for task in METRICS:
        for txe, w, lr in row_names(widths, lrs):
            if row_dir(out, task, txe, w, lr).name != tag(txe, w, lr):
                continue  # the tuned row
            for r in range(runs):
                d = out / "finetune" / task / tag(txe, w, lr) / f"r{r}"
                ov, deps, ctx, lr_from = [*QUIET, f"seed={r * seeds}", *task_overrides(task, finetune)], [], txe, None
                if txe == "scratch":
                    ov += width_overrides(w, "txe.overrides")
                if txe == "maskpred":
                    ctx = str(out / "context" / f"w{w}" / f"r{r}" / "model.pt")
                    deps.append(f"context w{w} r{r}")
                if txe != "none" and lr is None:
                    lr_from = str(out / "tune" / task / f"w{w}" / "tuning.json")
                    deps.append(f"tune {task} w{w}")
                elif lr is not None:
                    ov.append(f"{task}.txe_lr_scale={lr}")
                cost = {"srl": 25.0, "relation": 3.0 if txe == "none" else 8.0}[task] * seeds * (w or 128) / 128
                jobs.append(Job(f"finetune {task} {tag(txe, w, lr)} r{r}", "moviessl.demo:job_finetune",
                                dict(task=task, data_root=str(data_root), features=str(features), contextualizer=ctx,
                                     out=str(d), seeds=seeds, overrides=ov, txe_lr_from=lr_from),
                                tuple(deps), str(d / "summary.json"), cost, threads=1))  # fmt: skip
    d = out / "finetune" / "relation" / "pair_prior"
    jobs.append(Job("baseline relation pair_prior", "moviessl.demo:job_baseline",
                    dict(task="relation", baseline="pair_prior", data_root=str(data_root), out=str(d)),
                    (), str(d / "summary.json"), 2.0, threads=1))  # fmt: skip
    return jobs


def fillin_scores(out: Path, features: Path, widths, runs) -> dict:
    """Fill-in retrieval of every MaskPred TxE (``benchmarks.maskpred_fillin --from``), cached."""
    from benchmarks import maskpred_fillin

    res = {}
    for w in widths:
        for r in range(runs):
            c = out / "context" / f"w{w}" / f"r{r}"
            f = out / "fillin" / f"w{w}" / f"r{r}"
            if not (f / "fillin.json").is_file():
                maskpred_fillin.main(["--vidsitu-features", str(features), "--out", str(f), "--from", str(c)])
            res[f"w{w} r{r}"] = json.loads((f / "fillin.json").read_text())["trained"]
    return res


def replicate_means(row: Path, task: str, runs: int) -> dict[str, list[float]]:
    """Per metric: each replicate's mean over its fine-tuning seeds."""
    vals: dict[str, list[float]] = {m: [] for m in METRICS[task]}
    for r in range(runs):
        s = json.loads((row / f"r{r}" / "summary.json").read_text())["summary"]
        for m in vals:
            vals[m].append(json_float(s[m]["mean"]))
    return vals


def report(out: Path, widths, runs, lrs=()) -> dict:
    from moviessl.eval.stats import mean_se

    rows: dict = {}
    for task in METRICS:
        for txe, w, lr in row_names(widths, lrs):
            reps = replicate_means(row_dir(out, task, txe, w, lr), task, runs)
            rows[f"{task} {tag(txe, w, lr)}"] = {m: [*mean_se(v), v] for m, v in reps.items()}
    prior = json.loads((out / "finetune" / "relation" / "pair_prior" / "summary.json").read_text())["summary"]
    rows["relation pair_prior"] = {m: [json_float(prior[m]["mean"]), 0.0, []] for m in METRICS["relation"]}
    tuned = {f"{task} w{w}": tuned_scale(out, task, w) for task in METRICS for w in widths}

    def claim(task: str, metric: str, a: str, b: str) -> dict:
        (ma, sa, _), (mb, sb, _) = rows[f"{task} {a}"][metric], rows[f"{task} {b}"][metric]
        se = float(np.hypot(sa, sb))
        return dict(task=task, metric=metric, a=a, b=b, diff=ma - mb, se=se, z=(ma - mb) / se if se > 0 else None)

    claims = []
    for w in widths:
        claims += [claim("srl", "cider", f"maskpred_w{w}", f"scratch_w{w}"),
                   claim("srl", "lea", f"maskpred_w{w}", f"scratch_w{w}"),
                   claim("srl", "cider", f"maskpred_w{w}", "none"),
                   claim("relation", "mean_acc", f"maskpred_w{w}", f"scratch_w{w}"),
                   claim("relation", "mean_acc", f"maskpred_w{w}", "none"),
                   claim("relation", "mean_acc", f"maskpred_w{w}", "pair_prior")]  # fmt: skip
        for lr in lrs:
            claims += [claim(t, m, f"maskpred_w{w}_lr{lr:g}", f"scratch_w{w}_lr{lr:g}")
                       for t, m in (("srl", "cider"), ("srl", "lea"), ("relation", "mean_acc"))]  # fmt: skip
    for lo, hi in zip(widths, widths[1:]):
        claims += [claim(t, m, f"{x}_w{hi}", f"{x}_w{lo}") for t, m in (("srl", "cider"), ("relation", "mean_acc"))
                   for x in ("maskpred", "scratch")]  # fmt: skip
    return {"rows": rows, "claims": claims, "txe_lr_scale": tuned}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--data-root", required=True, help="the VidSitu-style folder the features were extracted from")
    ap.add_argument("--features", required=True, help="event features of those clips (one backbone)")
    ap.add_argument("--unlabelled", nargs="*", default=[], help="unlabelled feature folders for MaskPred")
    ap.add_argument("--widths", nargs="+", type=int, default=[128, 512])
    ap.add_argument("--runs", type=int, default=3, help="MaskPred pretraining runs (replicates) per width")
    ap.add_argument("--seeds", type=int, default=4, help="fine-tuning seeds per replicate")
    ap.add_argument(
        "--txe-lr",
        type=float,
        nargs="*",
        default=[],
        help="also every TxE row at these fixed TxE learning-rate scales (besides the tuned one)",
    )
    ap.add_argument(
        "--maskpred",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides of every MaskPred pretraining run (e.g. maskpred.replace=0.8 maskpred.swap=0.1)",
    )
    ap.add_argument(
        "--finetune",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides of every tuning and fine-tuning run (srl.X / relation.X: that task's only)",
    )
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    if any(w < 4 or w % max(4, w // 64) for w in a.widths):
        ap.error(f"--widths: each must be divisible by its head count max(4, w/64), got {a.widths}")

    from moviessl.scheduler import run_jobs

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    feats, unl = Path(a.features), [Path(u) for u in a.unlabelled]
    jobs = plan(out, Path(a.data_root), feats, unl, a.widths, a.runs, a.seeds, a.txe_lr, a.maskpred, a.finetune)
    run_jobs(jobs, workers=a.workers, threads=1, timings=out / "timings.json")
    res = report(out, a.widths, a.runs, a.txe_lr)
    res["fillin"] = fillin_scores(out, feats, a.widths, a.runs)
    n = a.runs * a.seeds
    print(f"| task | row | metric: mean ± SE over {a.runs} replicates ({n} runs) |")
    print("|---|---|---|")
    for k, v in res["rows"].items():
        task, name = k.split(" ", 1)
        print(f"| {task} | {name} | " + ", ".join(f"{m} {x[0]:.2f} ± {x[1]:.2f}" for m, x in v.items()) + " |")
    print("\n| task | a | b | metric | diff | SE | z | beyond 2 SE |")
    print("|---|---|---|---|---|---|---|---|")
    for c in res["claims"]:
        z = "-" if c["z"] is None else f"{c['z']:+.2f}"
        holds = "yes" if c["z"] is not None and c["z"] > 2 else "no"
        print(
            f"| {c['task']} | {c['a']} | {c['b']} | {c['metric']} | {c['diff']:+.2f} | {c['se']:.2f} | {z} | {holds} |"
        )
    print("\nTxE learning-rate scale (the rule, per width):", res["txe_lr_scale"])
    print(
        "fill-in (TxE / neighbour mean):",
        {k: f"{v['txe']:.3f} / {v['neighbour_mean']:.3f}" for k, v in res["fillin"].items()},
    )
    atomic_write_json(out / "txe_width.json", res)
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.txe_width")
