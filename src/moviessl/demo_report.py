"""The demo's outputs: ``results.json`` (stable, machine-read), ``results.md`` (tables shaped like
the paper's, mean ± SE) and PNG plots (bar charts with error bars, training curves)."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from .utils.io import atomic_write, atomic_write_json, atomic_write_text, json_float

METRICS = {
    "verb": [("acc@1", "Acc@1"), ("acc@5", "Acc@5"), ("recall@5", "Recall@5")],
    "srl": [
        ("cider", "CIDEr"),
        ("cider_verb", "CIDEr-verb"),
        ("cider_arg", "CIDEr-arg"),
        ("rouge_l", "ROUGE-L"),
        ("lea", "LEA"),
    ],
    "relation": [("mean_acc", "Mean-Acc"), ("top1_acc", "Top1-Acc")],
    "mask_ablation": [
        ("cider", "CIDEr"),
        ("cider_verb", "CIDEr-verb"),
        ("cider_arg", "CIDEr-arg"),
        ("rouge_l", "ROUGE-L"),
        ("lea", "LEA"),
    ],
}
TITLES = {
    "verb": "Table 4 analogue: verb prediction (frozen backbone features + MLP head)",
    "srl": "Table 1 analogue: semantic role prediction (TxD)",
    "relation": "Table 3 analogue: event relation prediction",
    "mask_ablation": "Table 2 analogue: ablating TxE mask prediction (CVRL backbone)",
}
MAIN_METRIC = {"verb": "acc@1", "srl": "cider", "relation": "mean_acc", "mask_ablation": "cider"}
PRETTY_BACKBONE = {"random": "- (random init)", "supervised": "Sup", "cvrl": "CVRL", "modist": "MoDist"}
PRETTY_TXE = {"none": "-", "scratch": "N (scratch)", "maskpred": "MaskPred"}

STAND_IN = (
    "CPU-sized stand-in for the paper's scale: SynthMovies instead of K400/VidSitu/LVU, a tiny Slow-D "
    "(slowd_cpu, 64x64, 16x4 clips) pretrained for a few hundred steps, a ~0.4 M-parameter TxE, and heads "
    "on frozen features (the paper fine-tunes the backbone end to end for verbs)."
)
PRETTY_BASELINE = {"pair_prior": "pair prior (each pair's majority train class; no model)"}


def parse_setting(setting: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in setting.split(","))


def _cell(stat: dict | None, n: int | None = None) -> str:
    """``mean ± SE``; a single run has no SE, so it shows its value alone; a row none of whose runs
    gave a finite value (``n`` 0, its mean null in results.json) shows n/a, as its plot does, with the
    count of those runs."""
    if stat is None:
        return "n/a"
    if not math.isfinite(json_float(stat.get("mean"))):
        bad = int(stat.get("n_nonfinite") or 0)
        return f"n/a ({bad} non-finite)" if bad else "n/a"
    n = stat.get("n", 2) if n is None else n
    return f"{stat['mean']:.2f}" if n < 2 else f"{stat['mean']:.2f} ± {stat['se']:.2f}"


def _index(rows: Iterable[dict]) -> dict[str, dict[str, dict[str, dict]]]:
    idx: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        idx[r["table"]][r["setting"]][r["metric"]] = r
    return idx


def markdown_tables(rows: list[dict]) -> str:
    idx = _index(rows)
    parts = []
    for table in ("verb", "srl", "relation", "mask_ablation"):
        if table not in idx:
            continue
        cols = METRICS[table]
        if table == "mask_ablation":
            head = ["mask size", "loss"]
        elif table == "verb":
            head = ["backbone pretrain"]
        else:
            head = ["backbone pretrain", "TxE"]
        lines = [
            f"**{TITLES[table]}**",
            "",
            "| " + " | ".join(head + [c[1] for c in cols]) + " | n (pretrain) |",
            "|" + "---|" * (len(head) + len(cols) + 1),
        ]
        for setting, metrics in idx[table].items():
            key = row_key(table, setting)
            n = max((m["n"] for m in metrics.values()), default=0)
            npre = max((m.get("n_pretrain", 1) for m in metrics.values()), default=1)
            lines.append("| " + " | ".join(key + [_cell(metrics.get(c[0])) for c in cols]) + f" | {n} ({npre}) |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def row_key(table: str, setting: str) -> list[str]:
    """A setting's key columns in ``table``'s Markdown table (and, wrapped, its bar's label)."""
    s = parse_setting(setting)
    width = 1 if table == "verb" else 2
    if "baseline" in s:
        return [PRETTY_BASELINE.get(s["baseline"], s["baseline"])] + ["-"] * (width - 1)
    if table == "mask_ablation":
        return ["{" + ", ".join(str(i) for i in _mask_list(s.get("mask", "1-3"))) + "}", s.get("loss", "contrastive")]
    if table == "verb":
        return [PRETTY_BACKBONE.get(s["backbone"], s["backbone"])]
    lr = f" (TxE lr x{s['txe_lr']})" if "txe_lr" in s else ""
    return [PRETTY_BACKBONE.get(s["backbone"], s["backbone"]), PRETTY_TXE.get(s["txe"], s["txe"]) + lr]


def _bar_label(table: str, setting: str) -> str:
    """The table's name of the row on lines of at most 15 characters (a bar is 1.1 in wide at 7 pt:
    the setting strings, ``maskpred,txe_lr=0.1``, overran their neighbours); the pair prior by its
    name, not the table's explanation of it."""
    import textwrap

    key = [k.split(" (")[0] if "baseline=" in setting else k for k in row_key(table, setting) if k != "-"]
    if table == "mask_ablation":
        key[0] = f"mask {key[0]}"
    return "\n".join(textwrap.fill(k, 15, break_on_hyphens=False) for k in key)


def _mask_list(label: str) -> list[int]:
    lo, _, hi = label.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def probe_table(probes: dict[str, Any]) -> str:
    if not probes:
        return ""
    lines = [
        "**Backbone linear probe / k-NN on the action clips (val, %; mean ± SE over pretraining seeds)**",
        "",
        "| backbone | linear probe top-1 | k-NN top-1 | pretraining runs | training loss at the end (chance) |",
        "|---|---|---|---|---|",
    ]
    for b, p in probes.items():
        lin, knn = _cell(p["linear_top1"], p["n"]), _cell(p["knn_top1"], p["n"])
        pre = "-"
        if p.get("pretext_loss"):  # above chance: the pretext task was not solved (summary.json's pretext)
            pre = f"{_cell(p['pretext_loss'], p['n'])} ({p['chance_loss']:.2f})"
            pre += "" if p["pretext_loss"]["mean"] < p["chance_loss"] else " **not below chance**"
        lines.append(f"| {PRETTY_BACKBONE.get(b, b)} | {lin} | {knn} | {p['n']} | {pre} |")
    lines += [
        "",
        "The training loss at the end: mean over the last tenth of each run's steps; chance: the loss of",
        "outputs that ignore their input. A backbone whose loss ends above it has not solved its pretext",
        "task: it tells a clip's positive from its negatives no better than a constant embedding would.",
    ]
    return "\n".join(lines)


def bar_plot(rows: list[dict], table: str, png: Path) -> Path | None:
    # a Figure of its own, not pyplot: matplotlib.use("Agg") switched the caller's backend (a
    # notebook's inline plots), and pyplot's registry held every figure until closed
    from matplotlib.figure import Figure

    metric = MAIN_METRIC[table]
    sel = [r for r in rows if r["table"] == table and r["metric"] == metric]
    if not sel:
        return None
    labels = [_bar_label(table, r["setting"]) for r in sel]
    # as the table's cells (_cell): a single run has no SE, so no error bar (an SE of 0 drew a cap at
    # its mean); a row without a finite mean (no finite run: null in results.json) is marked n/a
    means = [json_float(r["mean"]) for r in sel]
    errs = [json_float(r["se"]) if int(r.get("n") or 0) >= 2 else math.nan for r in sel]
    fig = Figure(figsize=(max(4.0, 1.1 * len(sel)), 3.4))
    ax = fig.subplots()
    ax.bar(
        range(len(sel)),
        means,
        yerr=errs,
        capsize=4,
        color=[
            "#4c72b0" if "maskpred" in r["setting"] else "#8c8c8c" if "random" in r["setting"] else "#55a868"
            for r in sel
        ],
    )
    for i, m in enumerate(means):
        if not math.isfinite(m):
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7)
    ax.set_xlim(-0.6, len(sel) - 0.4)  # (a last row without a mean was outside the axes, label and all)
    ax.set_xticks(range(len(sel)))
    ax.set_xticklabels(labels, fontsize=7)
    name = dict(METRICS[table])[metric]  # as the table's column
    ax.set_ylabel(name if "cider" in metric.lower() else f"{name} (%)")  # CIDEr is no percentage
    p = max(int(r.get("n_pretrain") or 0) for r in sel)
    over = f"SE over {p} pretraining runs" if p > 1 else f"SE over {max(int(r['n']) for r in sel)} seeds"
    # two lines: on one, a plot of few rows (the relation table's 4 in) cut its title off
    ax.set_title(TITLES[table].split(":")[0] + f" — {name}\nmean ± {over}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=110))
    return png


def curves_plot(out: Path, png: Path) -> Path | None:
    """Training losses of the pretraining runs on one figure (backbones left, TxE right): a colour
    per method, a line style per replicate, the legend below the axes. (A legend entry per line in
    the axes covered most of the full profile's 21 TxE curves, and the 10 default colours came round
    again, so two methods shared one.)"""
    # a Figure of its own, not pyplot: matplotlib.use("Agg") switched the caller's backend (a
    # notebook's inline plots), and pyplot's registry held every figure until closed
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .training import read_metrics_csv

    panels = [
        ("backbone pretraining", sorted(p for p in (out / "backbone").glob("*/r*/logs") if p.is_dir())),
        ("TxE MaskPred pretraining", sorted(p for p in (out / "context").glob("*/r*/logs") if p.is_dir())),
    ]
    if not any(files for _, files in panels):
        return None
    styles = ("-", "--", ":", "-.")
    # constrained layout makes room for the legends below the axes (tight_layout leaves them out)
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (title, files) in zip(axes, panels):
        methods = list(dict.fromkeys(f.parent.parent.name for f in files))
        cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
        colour = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
        reps: dict[str, str] = {}
        for f in files:
            series = read_metrics_csv(f)
            key = next((k for k in ("train/loss", "train/loss_step", "loss") if k in series), None)
            if key is None:
                continue
            xs, ys = zip(*series[key])
            method, rep = f.parent.parent.name, f.parent.name
            ls = reps.setdefault(rep, styles[len(reps) % len(styles)])
            mark = "o" if len(xs) == 1 else None  # a line of no length draws nothing: a marker shows the step
            ax.plot(xs, ys, lw=1.1, color=colour[method], ls=ls, marker=mark, ms=4, label=f"{method}/{rep}")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            drawn = list(dict.fromkeys(line.get_label().rsplit("/", 1)[0] for line in ax.lines))
            handles = [Line2D([], [], color=colour[m], label=m) for m in drawn]
            if len(reps) > 1:
                handles += [Line2D([], [], color="0.3", ls=ls, label=rep) for rep, ls in reps.items()]
            ax.legend(
                handles=handles,
                fontsize=7,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.18),
                ncol=2,
                frameon=False,
            )
    atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=110))
    return png


def write_report(
    out: str | os.PathLike,
    rows: list[dict],
    *,
    probes: dict,
    runs: dict,
    seeds: int,
    profile: str,
    wall_s: float,
    synth: Path,
    jobs_s: float | None = None,
    claims: list[dict] | None = None,
    pretrain_seeds: int = 1,
    lvu: dict | None = None,
    threads: int = 1,
) -> dict:
    from .claims import claims_markdown, claims_to_json
    from .synth.generate import describe

    out = Path(out)
    plots = out / "plots"
    made = [p for p in (bar_plot(rows, t, plots / f"{t}.png") for t in METRICS) if p]
    c = curves_plot(out, plots / "training_curves.png")
    if c:
        made.append(c)
    if lvu:
        made.append(Path(lvu["plot"]))
    md = markdown_tables(rows)
    pt = probe_table(probes)
    cm = claims_markdown(claims) if claims else ""
    cost = f"this invocation {wall_s / 60:.1f} min" + (f", all jobs {jobs_s / 60:.1f} min" if jobs_s else "")
    spread = (
        f"mean ± standard error over {pretrain_seeds} independent pretraining runs (backbone and TxE) of the "
        f"mean over {seeds} fine-tuning seeds each, so the SE holds both sources of variance"
        if pretrain_seeds > 1
        else f"mean ± standard error over {seeds} fine-tuning seeds of one pretraining run"
    )
    header = (
        f"# moviessl demo results (profile `{profile}`; time: {cost})\n\n"
        f"> {STAND_IN}\n\nValues in percent (CIDEr and LVU's regression errors are not), {spread}. "
        f"Data: {describe(synth)}.\n"
    )
    body = "\n".join(p for p in (cm, md, lvu and lvu["markdown"], pt) if p).replace("\n**", "\n\n**").strip()
    text = header + "\n" + body + "\n\nPlots: " + ", ".join(str(p.relative_to(out)) for p in made) + "\n"
    atomic_write_text(out / "results.md", text)
    obj = {
        "claims": claims_to_json(claims or []),
        "lvu_claims": lvu["claims"] if lvu else None,
        "rows": rows,
        "profile": profile,
        "seeds": seeds,
        "pretrain_seeds": pretrain_seeds,
        "threads_per_job": threads,
        "wall_time_s": round(wall_s, 1),
        "jobs_time_s": round(jobs_s, 1) if jobs_s else None,
        "stand_in": STAND_IN,
        "backbone_probe": probes,
        "runs": runs,
        "plots": [str(p.relative_to(out)) for p in made],
    }
    atomic_write_json(out / "results.json", obj)
    return {"markdown": header + "\n" + body, "rows": rows, "plots": made}
