"""Where does a contextualizer gain or lose on SRL? Per-role CIDEr and how mentions link (issue 13, Table 1)

    python -m benchmarks.srl_breakdown SYNTH/vidsitu ROW [ROW ...] [--json FILE]

SRL CIDEr pools every role of every event; LEA scores how a prediction's mentions corefer (two
mentions whose predicted phrases are identical are linked). A MaskPred TxE can raise one and lower
the other. This splits both, on the valid clips, for each ROW (a fine-tuning folder of ``moviessl
finetune vidsitu --task srl``: ``seed*/predictions.pkl``, or replicates ``r*/seed*`` as the demo and
``benchmarks.txe_width`` lay them out):

- CIDEr per scored role (VidSitu's ``cider_arg`` is their mean; each role scored on its own items,
  as VidSitu's evaluator groups them), and each role's share of the overall CIDEr (``from R``: the
  sum of its items' scores in the one overall CIDEr call over all items, whose mean the overall CIDEr
  is): the shares add up to the overall CIDEr, so a difference between rows splits by role exactly;
  and the share of every role but the scene (``from all but AScn``, with its own paired SE);
- LEA's precision and recall (the mean over the reference annotators, as LEA itself): linking too
  many mentions costs precision, too few recall;
- how often two mentions of one clip get one phrase: over the pairs of scored-role mentions of a
  clip (first annotator's roles), the share whose predicted phrases are identical (``pred shared``),
  the share whose reference phrases are (``ref shared``), of the pairs the reference links the
  share the prediction links (``links kept``), and of the pairs the prediction links the share the
  reference links (``links right``); per role pair kind: the same role across events (``same
  role``) or different roles;
- how many distinct phrases a clip's prediction uses, against its reference's.

A row's value is the mean ± SE over its replicates of each replicate's mean over seeds; with
several rows, each row's difference from the first, paired by replicate when their counts match.
Prints Markdown tables; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
from pathlib import Path

import numpy as np

from benchmarks.srl_hidden_agent import replicate_predictions
from moviessl.data.vidsitu import SCORED_ROLES as ROLES
from moviessl.utils.io import atomic_write_json

LINKS = ("pred shared", "ref shared", "links kept", "links right")
SCENE = "AScn"  # the scene role: where no feature reads the scene, its share is a guess (docs/results.md)
REST = f"from all but {SCENE}"


def mention_phrases(pred: dict, record: dict) -> list[tuple[str, str, str, str]]:
    """(event, role, predicted phrase, reference phrase) of every scored-role mention of one clip,
    over the roles of the reference ``record`` (one annotator's)."""
    from moviessl.data.vidsitu import EVENTS, arg_mapper

    out = []
    for ev in EVENTS:
        for raw, phrase in record[ev]["Args"].items():
            short = arg_mapper(raw)
            if short in ROLES:
                out.append((ev, short, str(pred.get(ev, {}).get(short, "")), phrase))
    return out


def link_stats(by_idx: dict[int, dict], split) -> dict[str, float]:
    """The link shares of the module docstring (percent), over every clip's mention pairs, and the
    mean distinct phrases per clip of the prediction and of the reference."""
    counts = {f"{k} {s}": [0, 0] for k in LINKS for s in ("same role", "other role")}
    distinct_pred, distinct_ref = [], []
    for ann_idx, pred in by_idx.items():
        ments = mention_phrases(pred, split.records[split.vseg_ids[ann_idx]][0])
        distinct_pred.append(len({m[2] for m in ments}))
        distinct_ref.append(len({m[3] for m in ments}))
        for a, b in itertools.combinations(ments, 2):
            kind = "same role" if a[1] == b[1] else "other role"
            p, r = a[2] == b[2], a[3] == b[3]
            for name, hit, den in (
                ("pred shared", p, True),
                ("ref shared", r, True),
                ("links kept", p, r),
                ("links right", r, p),
            ):
                c = counts[f"{name} {kind}"]
                c[0] += bool(hit and den)
                c[1] += bool(den)
    out = {k: 100.0 * n / d if d else float("nan") for k, (n, d) in counts.items()}
    out["distinct phrases"] = float(np.mean(distinct_pred))
    out["distinct phrases, reference"] = float(np.mean(distinct_ref))
    return out


def cider_by_role(by_idx: dict[int, dict], split, refs: dict) -> dict[str, float]:
    """Each role's share of the overall CIDEr (percent): its items' scores summed, over the number
    of items, all from one CIDEr call over every item (the overall score's document frequencies)."""
    from pycocoevalcap.cider.cider import Cider

    from moviessl.eval.vidsitu import srl_items

    hyps, gts, _, role_of = srl_items(by_idx, split, refs, "predictions")
    _, items = Cider().compute_score(gts, hyps)  # one score per item, in the order of gts' keys
    per = dict(zip(gts, np.asarray(items, dtype=float)))
    return {f"from {r}": 100.0 * sum(v for k, v in per.items() if role_of[k] == r) / len(per) for r in ROLES}


def seed_breakdown(pred_file: Path, split, refs: dict) -> dict[str, float]:
    """Every number of one seed's predictions."""
    from moviessl.eval.vidsitu import evaluate

    preds = pickle.loads(pred_file.read_bytes())
    by_idx = {p["ann_idx"]: p["vb_output"] for p in preds}
    m = evaluate("srl", preds, split, details=True, source=str(pred_file))
    out = {k: m[k] for k in ("cider", "lea", "lea_precision", "lea_recall")}
    out.update({f"{r} cider": m.get(f"{r}_cider", float("nan")) for r in ROLES})
    out.update(shares := cider_by_role(by_idx, split, refs))
    out[REST] = sum(v for k, v in shares.items() if k != f"from {SCENE}")
    out.update(link_stats(by_idx, split))
    return out


def row_breakdown(row: Path, split) -> list[dict[str, float]]:
    """One dict per replicate: the mean over its seeds."""
    from moviessl.eval.vidsitu import srl_references

    refs = srl_references(split)
    reps = []
    for files in replicate_predictions(row):
        seeds = [seed_breakdown(f, split, refs) for f in files]
        reps.append({k: float(np.mean([s[k] for s in seeds])) for k in seeds[0]})
    return reps


def summary(rows: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """Per row and number: mean, SE, n; for rows after the first, ``diff`` from the first (paired by
    replicate where the counts match) with its SE."""
    from moviessl.eval.stats import mean_se

    names = list(rows)
    base = rows[names[0]]
    out = {}
    for name, reps in rows.items():
        res = {}
        for k in reps[0]:
            vals = [r[k] for r in reps]
            m, se = mean_se(vals)
            res[k] = {"mean": m, "se": se, "n": len(vals)}
            if name != names[0]:
                b = [r[k] for r in base]
                if len(b) == len(vals):
                    dm, dse = mean_se(np.subtract(vals, b))
                    res[k]["diff"], res[k]["diff_se"], res[k]["paired"] = dm, dse, True
                else:
                    bm, bse = mean_se(b)
                    res[k]["diff"], res[k]["diff_se"], res[k]["paired"] = m - bm, float(np.hypot(se, bse)), False
        out[name] = res
    return out


def table(res: dict[str, dict[str, dict]], keys: list[str]) -> str:
    names = list(res)
    lines = ["| row | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{res[n][k]['mean']:.2f} ± {res[n][k]['se']:.2f}" for k in keys) + " |")
    for n in names[1:]:
        cells = []
        for k in keys:
            d = res[n][k]
            z = d["diff"] / d["diff_se"] if d["diff_se"] > 0 else float("nan")
            cells.append(f"{d['diff']:+.2f} ± {d['diff_se']:.2f} ({z:+.1f})")
        paired = " (paired)" if res[n][keys[0]]["paired"] else ""
        lines.append(f"| {n} - {names[0]}{paired} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root", help="the VidSitu-style folder the rows were scored on (its valid split)")
    ap.add_argument("rows", nargs="+", help="SRL fine-tuning folders; the others are compared with the first")
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args(argv)
    from moviessl.data.vidsitu import load_split

    split = load_split(Path(a.data_root) / "vidsitu_annotations", "valid")
    res = summary({r: row_breakdown(Path(r), split) for r in a.rows})
    keys = list(next(iter(res.values())))
    groups = (
        ["cider", *(f"{r} cider" for r in ROLES)],
        ["cider", *(f"from {r}" for r in ROLES), REST],
        ["lea", "lea_precision", "lea_recall", "distinct phrases", "distinct phrases, reference"],
        [k for k in keys if k.endswith("role")],
    )
    for g in groups:
        print(table(res, g) + "\n")
    if a.json:
        atomic_write_json(Path(a.json), res)
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.srl_breakdown")
