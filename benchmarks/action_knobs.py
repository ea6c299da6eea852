"""Which action-clip knob lowers the supervised backbone on VidSitu-style verbs? (issue 13)

    python -m benchmarks.action_knobs OUT [--synth-off DIR] [--pretrain-seeds 3] [--seeds 4] [--workers 2]
        [--backbones off repeat cue on random] [--backbone-override trainer.max_steps=1200 ...]

SynthMovies' structure knobs change the clips the backbones pretrain on in two ways: ``action_repeat_s``
(10-s action clips, the action repeated, as in K400) and ``verb_context_p`` (a share of clips shows
its verb's prop cue in a studio that correlates with the verb, K400's representation bias). With both
on (the ``demo`` preset) the supervised backbone's event features predict VidSitu-style verbs worse
than with both off (``demo_control``). This separates the two in a 2 x 2 design that changes only the
action clips and holds the evaluation data fixed:

- four SynthMovies folders, ``off`` (``demo_control``), ``repeat`` (10-s clips only), ``cue`` (cues
  only) and ``on`` (both; the ``demo`` preset without its pool and LVU movies, which do not change
  the other clips: every part is drawn from its own random stream);
- the supervised backbone pretrained on each folder's action clips with the demo's recipe
  (``moviessl.demo.job_backbone``, the cpu preset, seeds 0..P-1), plus the random-init reference;
- every backbone's event features extracted from **both** evaluation sets -- the ``off`` folder's
  VidSitu-style clips (no cue, no hidden agent) and the ``on`` folder's (the demo's) -- and the
  demo's verb and relation heads fine-tuned on them (``--seeds`` seeds per backbone run), with the
  pair prior on each set.

The ``off``/off-set and ``on``/on-set cells are the control and full demo runs' rows, rerun by the
same code (same seeds: they should match those runs' numbers). ``--backbones`` trains a subset (the
evaluation sets' folders are made whatever it is); ``--backbone-override`` changes the backbones'
recipe (e.g. a longer budget: is a knob's effect one of training time?). Prints Markdown tables (mean ± SE over
the pretraining runs of the mean over fine-tuning seeds, as the demo reports) and writes
``OUT/action_knobs.json``. Resumable: every job is cached in OUT (``moviessl.scheduler``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# condition -> the action-clip knobs (everything else: the demo_control preset)
CONDITIONS = {
    "off": {},
    "repeat": {"action_repeat_s": 10.0},
    "cue": {"verb_context_p": 0.5},
    "on": {},  # the demo preset itself (its VidSitu clips are the "on" evaluation set)
}
EVAL_SETS = ("off", "on")  # whose VidSitu-style clips the heads are trained and scored on
NO_EXTRAS = {"pool_ratio": 0.0, "n_lvu": 0}  # the unlabelled pool and LVU movies: not read here


def synth_job(root: Path, cond: str):
    from moviessl.scheduler import Job

    preset = "demo" if cond == "on" else "demo_control"
    return Job(
        f"synth {cond}",
        "moviessl.demo:job_synth",
        dict(root=str(root), preset=preset, overrides={**CONDITIONS[cond], **NO_EXTRAS}),
        done=str(root / ".demo_done"),
        cost=120.0,
    )


BACKBONES = (*CONDITIONS, "random")  # the random-init reference reads the off folder (it trains nothing)


def plan(
    out: Path,
    synth_off: Path | None,
    pretrain_seeds: int,
    seeds: int,
    backbones: tuple[str, ...] = BACKBONES,
    backbone_overrides: tuple[str, ...] = (),
) -> list:
    from moviessl.demo import PROFILES, QUIET, backbone_job
    from moviessl.scheduler import Job

    prof = PROFILES["full"]
    synth = {c: out / "synth" / c for c in CONDITIONS}
    if synth_off is not None:
        synth["off"] = synth_off
    given = {"off"} if synth_off is not None else set()
    needed = {*EVAL_SETS, *(b for b in backbones if b in CONDITIONS)} - given
    jobs = [synth_job(synth[c], c) for c in CONDITIONS if c in needed]
    done_synth = {c: () if c in given else (f"synth {c}",) for c in CONDITIONS}
    trained = [(c, "supervised", synth[c]) for c in CONDITIONS if c in backbones]
    trained += [("random", "random", synth["off"])] if "random" in backbones else []
    ft_ov = prof.vidsitu_overrides + QUIET
    for name, method, root in trained:
        cond = "off" if name == "random" else name
        for r in range(pretrain_seeds):
            d = out / "backbone" / name / f"r{r}"
            ov = prof.backbone_overrides + QUIET + list(backbone_overrides)
            jobs.append(backbone_job(f"backbone {name} r{r}", method, root / "actions", d, ov, r, done_synth[cond]))
            for ev in EVAL_SETS:
                f = out / "features" / name / f"r{r}" / ev
                jobs.append(
                    Job(
                        f"extract {name} r{r} {ev}",
                        "moviessl.demo:job_extract",
                        dict(backbone=str(d / "model.pt"), videos=str(synth[ev] / "vidsitu"), out=str(f)),
                        (f"backbone {name} r{r}", *done_synth[ev]),
                        str(f / "index.json"),
                        25.0,
                    )
                )
                for task in ("verb", "relation"):
                    t = out / "finetune" / task / f"{name}_{ev}" / f"r{r}"
                    jobs.append(
                        Job(
                            f"finetune {task} {name} r{r} {ev}",
                            "moviessl.demo:job_finetune",
                            dict(
                                task=task,
                                data_root=str(synth[ev] / "vidsitu"),
                                features=str(f),
                                contextualizer="none",
                                out=str(t),
                                seeds=seeds,
                                overrides=ft_ov,
                            ),
                            (f"extract {name} r{r} {ev}",),
                            str(t / "summary.json"),
                            6.0 * seeds,
                            threads=1,
                            done_facts={"seeds": seeds},
                        )
                    )
    for ev in EVAL_SETS:
        d = out / "finetune" / "relation" / f"pair_prior_{ev}"
        jobs.append(
            Job(
                f"baseline pair_prior {ev}",
                "moviessl.demo:job_baseline",
                dict(task="relation", baseline="pair_prior", data_root=str(synth[ev] / "vidsitu"), out=str(d)),
                done_synth[ev],
                str(d / "summary.json"),
                2.0,
                threads=1,
            )
        )
    return jobs


def collect(out: Path, pretrain_seeds: int) -> dict:
    from moviessl.demo import aggregate
    from moviessl.eval.stats import mean_se

    res: dict = {"verb": {}, "relation": {}, "pair_prior": {}, "probe": {}}
    names = list(BACKBONES)
    for task, metric in (("verb", "acc@1"), ("relation", "mean_acc")):
        for name in names:
            for ev in EVAL_SETS:
                files = [
                    out / "finetune" / task / f"{name}_{ev}" / f"r{r}" / "summary.json" for r in range(pretrain_seeds)
                ]
                summ = [json.loads(p.read_text()) for p in files if p.is_file()]
                if summ:
                    agg = aggregate(summ)
                    res[task][f"{name}/{ev}"] = agg[metric]
    for ev in EVAL_SETS:
        p = out / "finetune" / "relation" / f"pair_prior_{ev}" / "summary.json"
        if p.is_file():
            res["pair_prior"][ev] = json.loads(p.read_text())["summary"]
    for name in CONDITIONS:  # the backbone's own held-out action clips (each condition's clips)
        ps = [out / "backbone" / name / f"r{r}" / "probe.json" for r in range(pretrain_seeds)]
        ps = [json.loads(p.read_text()) for p in ps if p.is_file()]
        if ps:
            res["probe"][name] = {k: dict(zip(("mean", "se"), mean_se([p[k] for p in ps]))) for k in ("linear_top1",)}
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--synth-off", type=Path, default=None, help="an existing demo_control SynthMovies folder")
    ap.add_argument("--pretrain-seeds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=4, help="fine-tuning seeds per backbone run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES), help="the backbones trained")
    ap.add_argument("--backbone-override", action="append", default=[], help="KEY=VALUE for the backbones' recipe")
    a = ap.parse_args(argv)
    from moviessl.scheduler import run_jobs

    a.out.mkdir(parents=True, exist_ok=True)
    jobs = plan(a.out, a.synth_off, a.pretrain_seeds, a.seeds, tuple(a.backbones), tuple(a.backbone_override))
    run_jobs(jobs, workers=a.workers, timings=a.out / "timings.json")
    res = collect(a.out, a.pretrain_seeds)
    (a.out / "action_knobs.json").write_text(json.dumps(res, indent=1))
    for task in ("verb", "relation"):
        print(f"\n| {task} | " + " | ".join(f"{ev} eval set" for ev in EVAL_SETS) + " |")
        print("|---|" + "---|" * len(EVAL_SETS))
        for name in BACKBONES:
            cells = [res[task].get(f"{name}/{ev}") for ev in EVAL_SETS]
            print(f"| {name} | " + " | ".join(f"{c['mean']:.2f} ± {c['se']:.2f}" if c else "-" for c in cells) + " |")
    if res["pair_prior"]:
        print(
            "\npair prior (relation mean_acc): "
            + ", ".join(f"{ev} {s['mean_acc']['mean']:.2f}" for ev, s in res["pair_prior"].items())
        )
    for name, p in res["probe"].items():
        print(f"probe on own action val clips, {name}: {p['linear_top1']['mean']:.2f} ± {p['linear_top1']['se']:.2f}")
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.action_knobs")
