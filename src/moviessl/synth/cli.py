"""``moviessl synth --preset {tiny,demo,demo_control,large} --out DIR [--seed N] [--<structure-knob> V ...]``."""

from __future__ import annotations

import argparse
import time

STRUCTURE_KNOBS = {
    "action_repeat_s": "action clips last this long, the action repeated (K400: 10 s)",
    "verb_context_p": "share of events showing their verb's prop cue",
    "hidden_agent_p": "share of clean movie events whose agent is a silhouette",
    "pool_ratio": "unlabelled movie clips, in labelled VidSitu train events",
    "action_film_p": "share of action clips filmed like movie shots",
    "scene_fixtures": "pieces of its class's furniture in every movie room",
}
COUNT_KNOBS = ("scene_fixtures",)  # whole numbers


def add_parser(subparsers) -> argparse.ArgumentParser:
    from .generate import PRESETS

    p = subparsers.add_parser(
        "synth",
        help="generate the SynthMovies benchmark (VidSitu / LVU / action-clip layouts)",
        description="Render SynthMovies to real H.264 files with annotations in the released formats. "
        "Deterministic for a seed; rerun into the same folder to resume.",
    )
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="tiny (tests), demo (make demo), large")
    p.add_argument(
        "--out", required=True, help="output folder (empty, or a previous run of the same preset/seed to resume)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: the preset's, 2 for demo/large)")
    p.add_argument("--degrade-fraction", type=float, default=None, help="fraction of VidSitu events visually degraded")
    p.add_argument("--size", type=int, default=None, help="frame side in pixels (even)")
    for knob, what in STRUCTURE_KNOBS.items():  # docs/synthmovies.md, "Structure knobs"
        kind = int if knob in COUNT_KNOBS else float
        p.add_argument(f"--{knob.replace('_', '-')}", type=kind, default=None, help=f"structure knob: {what}")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from .generate import generate

    over = {}
    if args.degrade_fraction is not None:
        over["degrade_fraction"] = args.degrade_fraction
    if args.size is not None:
        over["size"] = args.size
    over.update({k: getattr(args, k) for k in STRUCTURE_KNOBS if getattr(args, k) is not None})
    t = time.time()
    root = generate(args.out, args.preset, seed=args.seed, workers=args.workers, **over)
    print(
        f"SynthMovies ({args.preset}, seed {args.seed}) written to {root} in {time.time() - t:.1f} s; "
        f"see {root / 'README.md'}"
    )
    return 0
