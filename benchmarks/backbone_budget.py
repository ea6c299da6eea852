"""Does a larger backbone pretraining budget put the verb into the event features? (issue 13)

    python -m benchmarks.backbone_budget runs/budget [--synth S] [--methods cvrl supervised]
        [--steps 600 2400] [--runs 3] [--seeds 4] [--workers 2]

The demo pretrains every backbone for 600 steps of 16 action clips; at that budget no backbone's
VidSitu-style event features let a linear probe beat the majority verb, and a supervised model
trained *in domain* does not either, while the same recipe at 2400 steps does
(``benchmarks.verb_transfer --in-domain``). This measures the open half: does the demo's own
pretraining (on the action clips, as in the demo) at a larger budget transfer to the movie events?

For every method and budget (``trainer.max_steps``; everything else the demo's cpu recipe) and the
random-init reference, on one SynthMovies (``demo`` preset unless ``--synth``), it runs the demo's
own jobs (:mod:`moviessl.demo`: backbone, extraction of the VidSitu-style clips, the verb head with
no TxE for ``--seeds`` seeds) on the demo's scheduler (resumable), then reports per pretraining run:

- the backbone's linear probe on held-out action clips (its ``probe.json``, as in the demo), and a
  probe of our own scored separately on the action clips that show their verb's cue (SynthMovies'
  ``verb_context_p``: the verb's studio background and prop) and on those that do not;
- a linear probe from the stored VidSitu event features to the *true* verb (train events -> valid
  events; ``benchmarks.verb_transfer.event_data``), all events and split by cue, beside the
  majority verb;
- the verb head's VidSitu Acc@1 (the demo's Table 4 metric), mean ± SE over fine-tuning seeds;

and per backbone and budget the verb head's Acc@1 as the demo's Table 4 reports it (mean ± SE over
the pretraining runs of each run's mean over seeds; 3 runs x 4 seeds, the full profile's protocol)
with its z against random init. Writes ``OUT/backbone_budget.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from moviessl.utils.io import atomic_write_json, json_float


def setting(method: str, steps: int) -> str:
    return "random" if method == "random" else f"{method}_s{steps}"


def plan(out: Path, synth: Path, methods: list[str], steps: list[int], runs: int, seeds: int, make_synth: bool):
    from moviessl.demo import QUIET, backbone_job
    from moviessl.scheduler import Job

    jobs = []
    if make_synth:
        jobs.append(
            Job("synth", "moviessl.demo:job_synth", dict(root=str(synth), preset="demo", overrides={}),
                done=str(synth / ".demo_done"), cost=300.0)
        )  # fmt: skip
    dep = ("synth",) if make_synth else ()
    cells = [("random", 0)] + [(m, s) for m in methods if m != "random" for s in steps]
    for m, s in cells:
        name = setting(m, s)
        for r in range(runs):
            b = out / "backbone" / name / f"r{r}"
            f = out / "features" / name / f"r{r}" / "vidsitu"
            v = out / "finetune" / "verb" / name / f"r{r}"
            ov = [*QUIET] + ([f"trainer.max_steps={s}"] if m != "random" else [])
            jobs += [
                backbone_job(f"backbone {name} r{r}", m, synth / "actions", b, ov, r, dep),
                *verb_jobs(f"{name} r{r}", b, f, v, synth, seeds),
            ]
    return cells, jobs


def verb_jobs(tag: str, backbone: Path, features: Path, verb: Path, synth: Path, seeds: int) -> list:
    """The demo's jobs after a backbone (``backbone {tag}``): extract the VidSitu-style clips' event
    features, then train the verb head without a TxE for ``seeds`` seeds (Table 4's row)."""
    from moviessl.demo import QUIET
    from moviessl.scheduler import Job

    return [
        Job(f"extract {tag}", "moviessl.demo:job_extract",
            dict(backbone=str(backbone / "model.pt"), videos=str(synth / "vidsitu"), out=str(features)),
            (f"backbone {tag}",), str(features / "index.json"), 40.0),
        Job(f"verb {tag}", "moviessl.demo:job_finetune",
            dict(task="verb", data_root=str(synth / "vidsitu"), features=str(features), contextualizer="none",
                 out=str(verb), seeds=seeds, overrides=list(QUIET)),
            (f"extract {tag}",), str(verb / "summary.json"), 4.0 * seeds),
    ]  # fmt: skip


def action_probe_by_cue(
    backbone_dir: Path, synth: Path, actions: Path | None = None, cached: Path | None = None
) -> dict:
    """Linear probe (``fit_logreg``) on the backbone's features of one centre clip per action video,
    train -> val, scored separately on val clips that show their verb's cue (the ``verb_context_p``
    knob: the verb's studio background and prop icon) and on clips that do not. A backbone whose
    action accuracy comes from the cue reads the verb on cue clips only, and the movie events have
    no studio background. ``actions``: another action-clip folder (default ``synth/actions``).
    Cached in ``cached`` (default ``backbone_dir/action_probe_by_cue.json``)."""
    cached = cached or backbone_dir / "action_probe_by_cue.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from moviessl.checkpoint import build_from_checkpoint, load_checkpoint
    from moviessl.data.cliplist import read_clip_list
    from moviessl.ssl.clipcache import FrameCache, default_cache_dir
    from moviessl.ssl.probe import extract_features
    from moviessl.synth.headroom import fit_logreg

    actions = actions or synth / "actions"
    obj = load_checkpoint(backbone_dir / "model.pt", stage="backbone")
    model, meta = build_from_checkpoint(obj), obj["meta"]["input"]
    cache = FrameCache(default_cache_dir(actions / "train.csv"), int(meta["short_side"]))
    feats = {}
    for split in ("train", "val"):
        items = read_clip_list(actions / f"{split}.csv")
        X, y, _ = extract_features(model, items, meta, batch_size=32, frame_cache=cache, progress=False)
        feats[split] = (X.astype(np.float64), y, [Path(p).stem for p, _ in items])
    truth = json.loads((actions / "ground_truth.json").read_text())
    Xtr, ytr, _ = feats["train"]
    Xva, yva, names = feats["val"]
    hit = fit_logreg(Xtr, ytr, int(max(ytr.max(), yva.max()) + 1), l2=1e-2)(Xva) == yva
    cue = np.array([any(e.get("cue") for e in truth[n]["events"]) for n in names])
    res = {
        "all": float(100 * hit.mean()),
        "cue": float(100 * hit[cue].mean()) if cue.any() else None,
        "no_cue": float(100 * hit[~cue].mean()) if (~cue).any() else None,
        "n_cue": int(cue.sum()),
        "n_no_cue": int((~cue).sum()),
    }
    atomic_write_json(cached, res)
    return res


def vidsitu_probe(features: Path, synth: Path) -> dict:
    """Linear probe (``fit_logreg``) from stored VidSitu-style event features (``features``: the
    extraction of ``synth/vidsitu``) to each event's *true* verb, train events -> valid events: all
    events and split by whether the event shows its verb's cue, beside the majority train verb."""
    from benchmarks.verb_transfer import event_data
    from moviessl.synth.headroom import fit_logreg

    truth = json.loads((synth / "vidsitu" / "ground_truth.json").read_text())
    verbs = json.loads((synth / "synth_meta.json").read_text())["verbs"]
    vi = {v: i for i, v in enumerate(verbs)}
    Xtr, ytr, _ = event_data(features, truth, "train", vi)
    Xva, yva, flags = event_data(features, truth, "valid", vi)
    hit = fit_logreg(Xtr, ytr, len(verbs), l2=1e-2)(Xva) == yva
    cue = flags["cue"]
    return {
        "all": float(100 * hit.mean()),
        "cue": float(100 * hit[cue].mean()) if cue.any() else None,
        "no_cue": float(100 * hit[~cue].mean()) if (~cue).any() else None,
        "majority": float(100 * np.mean(yva == np.bincount(ytr).argmax())),
    }


def report(out: Path, cells: list[tuple[str, int]], runs: int) -> dict:
    synth = out / "synth"
    res: dict = {}
    for m, s in cells:
        name = setting(m, s)
        for r in range(runs):
            run = f"r{r}"
            probe = vidsitu_probe(out / "features" / name / run / "vidsitu", synth)
            summ = json.loads((out / "backbone" / name / run / "summary.json").read_text())
            verb = json.loads((out / "finetune" / "verb" / name / run / "summary.json").read_text())["summary"]
            by_cue = action_probe_by_cue(out / "backbone" / name / run, synth)
            res[f"{name} {run}"] = {
                "action_probe_cue": by_cue["cue"],
                "action_probe_no_cue": by_cue["no_cue"],
                "method": m,
                "steps": s,
                "action_probe": summ.get("probe", {}).get("linear_top1"),
                "vidsitu_probe": probe["all"],
                "vidsitu_probe_cue": probe["cue"],
                "vidsitu_probe_no_cue": probe["no_cue"],
                "majority": probe["majority"],
                "verb_acc1": verb["acc@1"],
            }
    return {"runs": res, "cells": cells_summary(res)}


def cells_summary(runs: dict) -> dict:
    """Per backbone and budget: mean ± SE over pretraining runs of each run's mean over fine-tuning
    seeds (the demo's rule), and the z of the verb-head difference to random init (combined SE)."""
    from moviessl.eval.stats import mean_se

    cells: dict = {}
    for r in runs.values():
        c = cells.setdefault(setting(r["method"], r["steps"]), {"steps": r["steps"], "acc": [], "probe": []})
        c["acc"].append(json_float(r["verb_acc1"]["mean"]))
        c["probe"].append(json_float(r["vidsitu_probe"]))
    out = {k: {"steps": c["steps"], "verb_acc1": mean_se(c["acc"]), "vidsitu_probe": mean_se(c["probe"])}
           for k, c in cells.items()}  # fmt: skip
    base = out.get("random")
    for k, c in out.items():
        c["z_vs_random"] = None
        if base is not None and k != "random":
            se = float(np.hypot(c["verb_acc1"][1], base["verb_acc1"][1]))
            c["z_vs_random"] = (c["verb_acc1"][0] - base["verb_acc1"][0]) / se if se > 0 else None
    return out


def _f(x: float | None) -> str:
    """A percentage to one decimal; "-" where the split is empty (e.g. no cue clips with the knob at 0)."""
    return "-" if x is None else f"{x:.1f}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--synth", default=None, help="an existing SynthMovies folder (default: generate OUT/synth)")
    ap.add_argument("--methods", nargs="+", default=["cvrl", "supervised"])
    ap.add_argument("--steps", nargs="+", type=int, default=[600, 2400])
    ap.add_argument("--runs", type=int, default=3, help="pretraining runs per cell")
    ap.add_argument("--seeds", type=int, default=4, help="verb-head fine-tuning seeds per pretraining run")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)

    from moviessl.scheduler import run_jobs

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    synth = out / "synth"
    if a.synth and not synth.exists():
        synth.symlink_to(Path(a.synth).resolve())
    cells, jobs = plan(out, synth, a.methods, a.steps, a.runs, a.seeds, make_synth=a.synth is None)
    run_jobs(jobs, workers=a.workers, threads=1, timings=out / "timings.json")
    res = report(out, cells, a.runs)
    print(
        "| backbone run | steps | action-clip probe | action clips with cue / without (own probe) "
        "| VidSitu probe, true verb: all, cue / no-cue events | majority verb | verb head Acc@1 |"
    )
    print("|---|---|---|---|---|---|---|")
    for k, r in res["runs"].items():
        ap_ = _f(r["action_probe"])
        acc = r["verb_acc1"]
        print(
            f"| {k} | {r['steps']} | {ap_} | {_f(r['action_probe_cue'])} / {_f(r['action_probe_no_cue'])} "
            f"| {r['vidsitu_probe']:.1f}, {_f(r['vidsitu_probe_cue'])} / {_f(r['vidsitu_probe_no_cue'])} "
            f"| {r['majority']:.1f} "
            f"| {acc['mean']:.1f} ± {acc['se']:.1f} |"
        )
    print(f"\n| backbone | steps | verb head Acc@1 (mean ± SE over {a.runs} runs) | z vs random | VidSitu probe |")
    print("|---|---|---|---|---|")
    for k, c in res["cells"].items():
        z = "-" if c["z_vs_random"] is None else f"{c['z_vs_random']:+.2f}"
        acc, probe = c["verb_acc1"], c["vidsitu_probe"]
        print(f"| {k} | {c['steps']} | {acc[0]:.2f} ± {acc[1]:.2f} | {z} | {probe[0]:.1f} ± {probe[1]:.1f} |")
    atomic_write_json(out / "backbone_budget.json", res)
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.backbone_budget")
