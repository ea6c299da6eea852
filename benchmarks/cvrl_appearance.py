"""What lets CVRL skip the motion? An intervention on the appearance two clips of a video share (issue 13).

    python -m benchmarks.cvrl_appearance OUT --synth S [--methods cvrl] [--steps 1200] [--runs 3]
        [--reuse B] [--workers 2]

On SynthMovies' action clips CVRL (Qian et al., CVPR 2021) reads the verb where a clip shows its
verb's cue (studio background and prop) and not at all where it does not, while MoDist reads both
(``benchmarks.backbone_budget``). One reading: CVRL's positives are two clips of one video, which
share the characters' shapes, colours, sizes and textures and the studio's colours, so instance
discrimination is solved by appearance, without the motion that defines the verb. Randomising the
colour of each view did not change that. This removes the shared appearance altogether: the same
action clips (the same plans: verb, positions, directions, timing, and render seeds as ``S``'s),
rendered with **one cast for every video** (character 0 always a big plain red circle, character 1 a
big plain blue triangle), one studio colour pair, one camera style, and no cue (``verb_context_p=0``).
Telling two such videos apart takes their motion (and their layout: positions and directions are
still per video).

For each method in ``--methods`` (default CVRL) it pretrains ``--runs`` backbones on these clips with
the demo's recipe (``demo.backbone_job``: cpu preset, ``trainer.max_steps=--steps``) and, on ``S``'s
own action clips, the same method and random init (or reuses ``B``'s: a ``benchmarks.backbone_budget``
output folder with ``backbone/random`` and ``backbone/{method}_s{steps}``). Every backbone is probed
(linear, train -> val, one centre clip per video, ``backbone_budget.action_probe_by_cue``) on both
clip sets: the uniform-cast clips, and ``S``'s clips split by cue. If shared appearance is what lets
CVRL skip the motion, CVRL pretrained on the uniform cast reads the verb on the uniform clips (and on
``S``'s clips without the cue) above random init, where CVRL pretrained on ``S`` does not. Each
backbone then gets the demo's Table 4 row: its VidSitu-style event features and the verb head
without a TxE for ``--seeds`` seeds (Acc@1; the movie events mostly lack the cue), and a linear probe
from its event features to the true verb (``backbone_budget.vidsitu_probe``). Writes
``OUT/cvrl_appearance.json`` and prints Markdown tables (mean ± SE over runs, z against random init).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np

from benchmarks.backbone_budget import action_probe_by_cue, vidsitu_probe

# the one cast of every uniform video: (shape, colour, size, texture) of character 0, 1, and of a filmed
# clip's bystanders 2, 3 (``action_film_p``)
CAST = (
    ("circle", "red", "big", "plain"),
    ("triangle", "blue", "big", "plain"),
    ("square", "green", "small", "plain"),
    ("diamond", "yellow", "small", "plain"),
)
STUDIO = [0, 1]  # BG_PALETTE indices: the studio's top and bottom colour in every video


def uniform_plan(plan: dict, keep_setting: bool = False) -> dict:
    """``plan`` with the one cast, studio and camera style; verb, layout and timing kept.
    ``keep_setting``: only the cast changed (the clip's background, camera, look and cue kept)."""
    from moviessl.synth import world as W

    chars = []
    for ch in plan["characters"]:
        shape, colour, size, texture = CAST[ch["id"]]
        c = dict(ch, shape=shape, colour=colour, size=size, texture=texture)
        c["phrase"] = W.character_phrase(c)
        chars.append(c)
    if keep_setting:
        return dict(plan, characters=chars)
    return dict(plan, characters=chars, shots=[dict(plan["shots"][0], studio=list(STUDIO))], director=0)


def make_uniform_actions(synth: Path, root: Path, workers: int, keep_setting: bool = False) -> Path:
    """Render ``synth``'s action clips with one cast into ``root`` (resumable: written videos are kept);
    ``keep_setting``: with each clip's own background, camera, look and cue (filmed clips allowed)."""
    from moviessl.errors import BadInputError
    from moviessl.synth.generate import _render_job, action_render_jobs, plan_actions, resolve_preset, write_actions

    done = root / ".done"
    made = {"source": str(synth.resolve()), "keep_setting": keep_setting}
    if done.is_file():
        try:
            was = json.loads(done.read_text())
        except json.JSONDecodeError:
            was = None  # an older run's marker, which recorded neither
        if was != made:
            raise BadInputError(root, f"holds clips rendered otherwise ({was}, asked {made}): use another folder")
        return root
    meta = json.loads((synth / "synth_meta.json").read_text())
    cfg = resolve_preset(meta["preset"], **dict(meta["config"], **({} if keep_setting else {"verb_context_p": 0.0})))
    if cfg.action_film_p > 0 and not keep_setting:
        raise SystemExit("filmed action clips (action_film_p > 0) have movie casts; not supported here")
    actions = plan_actions(cfg, meta["seed"])
    for a in actions:
        a["plan"] = uniform_plan(a["plan"], keep_setting)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    jobs = action_render_jobs(cfg, meta["seed"], actions, root / "videos")
    todo = [j for j in jobs if not Path(j["path"]).exists()]
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(max(1, workers)) as pool:
        for _ in pool.imap_unordered(_render_job, todo, chunksize=4):
            pass
    write_actions(root, actions)
    done.write_text(json.dumps(made) + "\n")
    return root


def plan(out: Path, synth: Path, uniform: Path, methods, steps: int, runs: int, seeds: int, reuse: Path | None):
    """The backbones (random init; each method on ``synth``'s clips and on the uniform cast), each
    followed by the demo's VidSitu verb head (``backbone_budget.verb_jobs``). Returns
    ``{(backbone, run): (backbone folder, features folder, verb folder)}`` and the jobs; with ``reuse``, the jobs that
    ``benchmarks.backbone_budget`` ran there (same names, same recipe) point at its finished folders."""
    from benchmarks.backbone_budget import setting, verb_jobs
    from moviessl.demo import QUIET, backbone_job

    backbones = {"random": ("random", synth / "actions")}  # name -> (method, clips it is pretrained on)
    for m in methods:
        backbones[f"{m} on S"] = (m, synth / "actions")
        backbones[f"{m} on uniform cast"] = (m, uniform)
    dirs, jobs = {}, []
    for b, (m, clips) in backbones.items():
        for r in range(runs):
            tag = b.replace(" ", "_")
            root, name = out, tag
            if reuse is not None and clips == synth / "actions":
                root, name = reuse, setting(m, steps)
            d, f, v = (root / "backbone" / name / f"r{r}", root / "features" / name / f"r{r}" / "vidsitu",
                       root / "finetune" / "verb" / name / f"r{r}")  # fmt: skip
            dirs[(b, r)] = (d, f, v)
            ov = [*QUIET] + ([f"trainer.max_steps={steps}"] if m != "random" else [])
            jobs += [
                backbone_job(f"backbone {tag} r{r}", m, clips, d, ov, r),
                *verb_jobs(f"{tag} r{r}", d, f, v, synth, seeds),
            ]
    return dirs, jobs


def summarize(rows: dict) -> dict:
    """Per backbone: mean ± SE over runs of each probe and of the verb head's Acc@1 (each run's mean
    over seeds, the demo's rule), and its z against random init (combined SE)."""
    from moviessl.eval.stats import mean_se

    keys = ("uniform", "cue", "no_cue", "vidsitu_probe", "verbs")
    cells: dict = {}
    for r in rows.values():
        c = cells.setdefault(r["backbone"], {k: [] for k in keys})
        for k in keys:
            c[k].append(r[k])
    out = {b: {k: tuple(mean_se(v)) for k, v in c.items()} for b, c in cells.items()}
    base = out.get("random")
    for b, c in out.items():
        c["z_vs_random"] = {}
        for k in keys:
            se = float(np.hypot(c[k][1], base[k][1])) if base else 0.0
            c["z_vs_random"][k] = (c[k][0] - base[k][0]) / se if b != "random" and se > 0 else None
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--synth", required=True, help="the SynthMovies folder whose action clips are re-cast")
    ap.add_argument("--methods", nargs="+", default=["cvrl"])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=4, help="verb-head fine-tuning seeds per backbone")
    ap.add_argument("--reuse", default=None, help="a benchmarks.backbone_budget folder with the S-trained runs")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)

    from moviessl.scheduler import run_jobs
    from moviessl.utils.io import atomic_write_json

    out, synth = Path(a.out), Path(a.synth).resolve()
    # one line, not a traceback from deep in the renderer or the scheduler (checked before any work)
    if not (synth / "synth_meta.json").is_file():
        raise SystemExit(f"{a.synth}: not a SynthMovies folder (no synth_meta.json; make one with moviessl synth)")
    if a.reuse and not Path(a.reuse).is_dir():
        raise SystemExit(f"{a.reuse}: no such folder (--reuse takes a benchmarks.backbone_budget output folder)")
    out.mkdir(parents=True, exist_ok=True)
    uniform = make_uniform_actions(synth, out / "uniform" / "actions", a.workers)
    reuse = Path(a.reuse) if a.reuse else None
    dirs, jobs = plan(out, synth, uniform, a.methods, a.steps, a.runs, a.seeds, reuse)
    run_jobs(jobs, workers=a.workers, threads=1, timings=out / "timings.json")

    rows = {}
    for (b, r), (d, f, v) in dirs.items():
        tag = b.replace(" ", "_")
        own = action_probe_by_cue(d, synth)  # cached in the backbone's folder (a reused run's: done there)
        uni = action_probe_by_cue(d, synth, actions=uniform, cached=out / "probes" / tag / f"r{r}_uniform.json")
        verbs = json.loads((v / "summary.json").read_text())["summary"]["acc@1"]["mean"]
        probe = vidsitu_probe(f, synth)["all"]
        rows[f"{b} r{r}"] = dict(backbone=b, run=r, uniform=uni["all"], cue=own["cue"], no_cue=own["no_cue"],
                                 vidsitu_probe=probe, verbs=verbs)  # fmt: skip
    res = {"rows": rows, "cells": summarize(rows), "cast": CAST, "steps": a.steps}
    atomic_write_json(out / "cvrl_appearance.json", res)

    cols = ("uniform", "cue", "no_cue", "vidsitu_probe", "verbs")
    head = "action probe: uniform-cast clips | S's cue clips | S's no-cue clips | VidSitu probe | verbs Acc@1"
    print(f"| backbone run | {head} |\n|---|---|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + " |")
    print(f"\n| backbone (mean ± SE over {a.runs} runs; z vs random init) | {head} |\n|---|---|---|---|---|---|")
    for b, c in res["cells"].items():
        z = c["z_vs_random"]
        cell = lambda k: f"{c[k][0]:.1f} ± {c[k][1]:.1f}" + ("" if z[k] is None else f" ({z[k]:+.1f})")  # noqa: E731
        print(f"| {b} | " + " | ".join(cell(k) for k in cols) + " |")
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.cvrl_appearance")
