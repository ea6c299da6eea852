"""What limits event relations on SynthMovies: the training data, or what the features say? (issue 13)

    python -m benchmarks.relation_from_verbs runs/demo_full [--backbones cvrl supervised modist]

SynthMovies' relation of a pair is a function of the two events' verbs (``synth.world.RELATIONS``),
so a classifier needs both verbs. This fits the simplest such classifier on the *train* clips of a
finished ``moviessl demo`` folder: a lookup table (pair, earlier verb, later verb) -> majority train
label, falling back to the pair's majority label (the pair-prior baseline) for a combination not
seen in training. It is scored on the valid clips with VidSitu's relation metrics, reading the verbs
three ways:

- the true verbs (SynthMovies' ground truth): can 240 training clips teach the relation function?
- no verbs: the pair prior itself (the demo's ``baseline=pair_prior`` row);
- the verbs the demo's verb heads predict (top-1 of each run's ``predictions.pkl`` on frozen
  backbone features): what a relation head could reach if its features told it the verb as well as
  the verb head reads it. Mean ± SE over the pretraining runs' per-run means.

Prints a Markdown table and writes ``OUT/relation_from_verbs.json`` beside the demo's results.
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np


def lookup_table(train, truth: dict) -> dict:
    """(pair, earlier verb, later verb) -> Counter of train labels (the single train annotation)."""
    from moviessl.tasks.vidsitu.relation import IGNORE, PAIR_INDEX, pair_labels

    table: dict = defaultdict(Counter)
    for v, recs in train.records.items():
        verbs = [e["verb"] for e in truth[v]["events"]]
        for p, j in enumerate(pair_labels(recs[0]) if recs else ()):
            if j != IGNORE:
                a, b = PAIR_INDEX[p]
                table[(p, verbs[a], verbs[b])][j] += 1
    return table


def score(table: dict, prior: list[int], valid, truth: dict, verbs_of) -> dict:
    """VidSitu relation metrics of the table's predictions on ``valid``; ``verbs_of(vseg)`` -> 5 verbs."""
    from moviessl.eval.vidsitu import evaluate
    from moviessl.tasks.vidsitu.relation import LABELS, PAIR_INDEX

    entries, seen, right = [], 0, 0
    for i, v in enumerate(valid.vseg_ids):
        verbs, labels = verbs_of(v), []
        right += sum(x == e["verb"] for x, e in zip(verbs, truth[v]["events"]))
        for p, (a, b) in enumerate(PAIR_INDEX):
            c = table.get((p, verbs[a], verbs[b]))
            seen += bool(c)
            labels.append(c.most_common(1)[0][0] if c else prior[p])
        n = min(3, len(valid.records[v]))
        entries.append(
            {"ann_idx": i, "pred_evrels_ev": [[LABELS[j]] * n for j in labels], "pred_scores_ev": [[1.0] * n] * 4}
        )
    n = len(valid.vseg_ids)
    return {**evaluate("relation", entries, valid), "combinations_seen": seen / (4 * n), "verbs_right": right / (5 * n)}


def predicted_verbs(pred_file: Path, valid) -> dict:
    """vseg -> the verb head's top-1 verb per event (a VidSitu verb submission)."""
    preds = pickle.loads(pred_file.read_bytes())
    return {valid.vseg_ids[p["ann_idx"]]: [p["pred_vbs_ev"][k][0] for k in range(5)] for p in preds}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo", help="a finished `moviessl demo` folder (synth/ and finetune/verb/)")
    ap.add_argument("--backbones", nargs="+", default=["random", "supervised", "cvrl", "modist"])
    a = ap.parse_args(argv)

    from moviessl.data.vidsitu import load_split
    from moviessl.tasks.vidsitu.relation import pair_majority

    demo = Path(a.demo)
    root = demo / "synth" / "vidsitu"
    truth = json.loads((root / "ground_truth.json").read_text())
    train, valid = load_split(root, "train"), load_split(root, "valid")
    table, prior = lookup_table(train, truth), pair_majority(train)
    rows = {
        "true verbs": score(table, prior, valid, truth, lambda v: [e["verb"] for e in truth[v]["events"]]),
        "no verbs (pair prior)": score(table, prior, valid, truth, lambda v: [None] * 5),
    }
    for b in a.backbones:
        per_run = []
        for run in sorted((demo / "finetune" / "verb" / f"{b}_none").glob("r*")):
            runs = [
                score(table, prior, valid, truth, predicted_verbs(f, valid).get)
                for f in sorted(run.glob("seed*/predictions.pkl"))
            ]
            if runs:
                per_run.append({k: float(np.mean([r[k] for r in runs])) for k in runs[0]})
        if per_run:
            agg = {}
            for k in per_run[0]:
                x = np.array([r[k] for r in per_run])
                agg[k] = float(x.mean())
                agg[f"{k}_se"] = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
            rows[f"verbs predicted by the verb head ({b}, {len(per_run)} pretraining runs)"] = agg
    print("| verbs the lookup table reads | verbs right | Mean-Acc | Top1-Acc | valid combinations seen in train |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        cell = {
            k: f"{r[k]:.2f}" + (f" ± {r[k + '_se']:.2f}" if k + "_se" in r else "") for k in ("mean_acc", "top1_acc")
        }
        right = f"{100 * r['verbs_right']:.1f}%"
        print(f"| {name} | {right} | {cell['mean_acc']} | {cell['top1_acc']} | {100 * r['combinations_seen']:.1f}% |")
    (demo / "relation_from_verbs.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.relation_from_verbs")
