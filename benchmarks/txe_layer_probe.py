"""Where in a TxE is an event's own agent (or verb) lost? A linear probe at every stage (issue 13)

    python -m benchmarks.txe_layer_probe SYNTH/vidsitu FEATURES [RUN ...] [--target verb|scene] [--json OUT.json]

Each RUN is a MaskPred run folder (``moviessl pretrain-context``: ``checkpoints/last.ckpt``) or a
fine-tuned VidSitu task model (``seed*/model.pt`` with a TxE); FEATURES are the event features it
reads. For every valid and train event of SynthMovies with an agent, the TxE's hidden state is taken
after each stage -- the standardised input, the input projection, the embedding (+ position,
LayerNorm), each block, the output -- and a linear probe (train events -> valid events,
``synth.headroom.fit_logreg``) reads the agent's colour from it. Twice: with full attention (as a task
head reads the TxE) and with each event attending only to itself (the TxE's own-event map, no
neighbours). Where the two part, the neighbours' values are what costs the event its own content.
Valid events are grouped as ``benchmarks.srl_hidden_agent`` groups them (agent visible / hidden /
degraded), and the visible ones again by whether an adjacent event's agent has the same colour (if
it does not, mixing in the neighbours adds a *different* colour). With the first RUN, the same
probes of an untrained TxE of its shape and input statistics. Prints Markdown: mean ± SE over runs.

``--target verb`` reads the event's true verb instead (Table 3: a relation is a function of the two
events' verbs in SynthMovies), for every event, grouped into clean and degraded events.
``--target scene`` reads the event's scene class (the SRL scene role, AScn: a clip's events share
its scene, so context can only add to it), grouped the same way.

With no RUN, only the stored FEATURES are probed (what a backbone's features hold before any TxE: the
same numbers as the "input (standardised)" stage, since the probe standardises its input itself).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.srl_hidden_agent import event_group, load_txe
from moviessl.utils.io import atomic_write_json

# visible agents split by whether an adjacent event's agent has the same colour
GROUPS = ("visible", "visible, adjacent same", "visible, adjacent other", "hidden", "degraded")
VERB_GROUPS = ("all", "clean", "degraded")  # --target verb or scene


@torch.no_grad()
def stages(txe, x: torch.Tensor, self_only: bool) -> dict[str, torch.Tensor]:
    """Hidden states (B, N, d) of a :class:`moviessl.models.txe.TxE` after each stage (eval mode)."""
    out = {"input (standardised)": txe.input_norm(x)}
    h = txe.input_proj(out["input (standardised)"])
    out["input projection"] = h
    h = txe.embed_norm(h + txe.pos_embed[: x.shape[1]])
    out["embedding (+ position, LayerNorm)"] = h
    mask = torch.eye(x.shape[1], dtype=torch.bool)[None, None] if self_only else None
    for i, blk in enumerate(txe.blocks):
        h = blk(h, mask)
        out[f"block {i + 1}"] = h
    out["output"] = txe.final_norm(h)
    return out


def event_rows(root: Path, features: Path, target: str = "agent") -> dict[str, list]:
    """Per split: (vseg, event index, label, group) of every event with an agent (``target`` agent:
    its colour), or of every event (verb: its true verb, scene: its scene class; group clean or
    degraded)."""
    truth = json.loads((root / "ground_truth.json").read_text())
    rows: dict[str, list] = {"train": [], "valid": []}
    for vseg, gt in truth.items():
        if gt.get("split") not in rows or not (features / f"{vseg}_feats.npy").is_file():
            continue
        chars, evs = {c["id"]: c for c in gt["characters"]}, gt["events"]
        if target in ("verb", "scene"):
            rows[gt["split"]] += [
                (vseg, k, e[target], "degraded" if e.get("degraded") else "clean") for k, e in enumerate(evs)
            ]
            continue
        colour = [None if e.get("agent") is None else chars[e["agent"]]["colour"] for e in evs]
        for k, ev in enumerate(evs):
            if colour[k] is None:
                continue
            g = event_group(ev)
            if g == "visible":
                same = colour[k] in [colour[j] for j in (k - 1, k + 1) if 0 <= j < len(evs)]
                g = GROUPS[1] if same else GROUPS[2]
            rows[gt["split"]].append((vseg, k, colour[k], g))
    return rows


def probe_run(txe, rows: dict[str, list], features: Path, self_only: bool) -> dict[str, dict[str, float]]:
    """Stage -> group -> % of valid events whose label (agent colour or verb) the probe reads right;
    ``txe`` None: the stored features alone (one stage, "features")."""
    from moviessl.synth.headroom import fit_logreg

    cache: dict[str, dict[str, np.ndarray]] = {}
    for vseg in {r[0] for split in rows.values() for r in split}:
        x = torch.tensor(np.load(features / f"{vseg}_feats.npy"), dtype=torch.float32)[None]
        hidden = {"features": x} if txe is None else stages(txe, x, self_only)
        cache[vseg] = {name: t[0].numpy() for name, t in hidden.items()}
    values = sorted({r[2] for split in rows.values() for r in split})
    ytr = np.array([values.index(r[2]) for r in rows["train"]])
    yva = np.array([values.index(r[2]) for r in rows["valid"]])
    grp = np.array([r[3] for r in rows["valid"]])
    if set(grp) <= set(VERB_GROUPS):
        masks = {"all": np.ones(len(grp), bool), **{g: grp == g for g in VERB_GROUPS[1:]}}
    else:
        masks = {g: grp == g for g in GROUPS[1:]}
        masks["visible"] = masks[GROUPS[1]] | masks[GROUPS[2]]
    out = {}
    for name in next(iter(cache.values())):
        Xtr = np.stack([cache[v][name][k] for v, k, _, _ in rows["train"]]).astype(np.float64)
        Xva = np.stack([cache[v][name][k] for v, k, _, _ in rows["valid"]]).astype(np.float64)
        hit = fit_logreg(Xtr, ytr, len(values))(Xva) == yva
        out[name] = {g: 100.0 * float(hit[m].mean()) for g, m in masks.items() if m.any()}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="the SynthMovies VidSitu-style folder (ground_truth.json)")
    ap.add_argument("features", help="the event features the TxEs read")
    ap.add_argument("runs", nargs="*", help="MaskPred run folders or fine-tuned task models (.pt); none: the features")
    ap.add_argument("--target", choices=("agent", "verb", "scene"), default="agent", help="what the probe reads")
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args(argv)
    from moviessl.eval.stats import mean_se

    torch.set_grad_enabled(False)
    root, features, runs = Path(a.root), Path(a.features), [Path(r) for r in a.runs]
    rows = event_rows(root, features, a.target)
    groups = GROUPS if a.target == "agent" else VERB_GROUPS
    txes = {"trained": [load_txe(r) for r in runs]} if runs else {"no TxE": [None]}
    if runs and runs[0].suffix != ".pt":
        txes["untrained"] = [load_txe(runs[0], untrained=True)]
    res: dict = {}
    for kind, models in txes.items():
        for mode in ("full", "self-only") if runs else ("stored",):
            per_run = [probe_run(t, rows, features, mode == "self-only") for t in models]
            res[f"{kind}, {mode} attention" if runs else "stored features"] = {
                s: {g: mean_se([r[s][g] for r in per_run]) for g in per_run[0][s]} for s in per_run[0]
            }
    n = {g: sum(r[3] == g for r in rows["valid"]) for g in groups[1:]}
    n[groups[0]] = n[GROUPS[1]] + n[GROUPS[2]] if a.target == "agent" else len(rows["valid"])
    what = {"agent": "Agent colour", "verb": "True verb", "scene": "Scene class"}[a.target]
    over = f"{len(runs)} runs, mean ± SE" if runs else "the stored features, no TxE"
    print(f"{what} by linear probe, % of valid events ({over}); events per group: "
          + ", ".join(f"{g} {n[g]}" for g in groups))  # fmt: skip
    for key, table in res.items():
        print(f"\n**{key}**\n\n| stage | " + " | ".join(groups) + " |\n|---|" + "---|" * len(groups))
        for stage, by_group in table.items():
            cells = (f"{by_group[g][0]:.1f} ± {by_group[g][1]:.1f}" if g in by_group else "-" for g in groups)
            print(f"| {stage} | " + " | ".join(cells) + " |")  # a group with no valid event: -
    if a.json:
        atomic_write_json(a.json, {"runs": [str(r) for r in runs], "target": a.target, "events": n, "probes": res})
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.txe_layer_probe")
