"""A control where CVRL must succeed (issue 13): action clips whose appearance carries the class.

    python -m benchmarks.cvrl_control --out runs/cvrl_control [--seeds 2] [--workers 2] [key=value ...]

SynthMovies action clips with ``verb_context_p=1``: every clip shows its verb's studio background and
prop cue (the representation bias of Kinetics, Li et al. ECCV 2018), so a representation that groups
clips by appearance also groups them by verb; 10-s clips (``action_repeat_s=10``) give CVRL's
temporal sampler the room K400 gives it. CVRL and a random-init reference are pretrained with the
backbone cpu preset (the demo's: same steps, batch and augmentation; the overrides given apply to
both) for ``--seeds`` independent seeds, then frozen and probed (linear and kNN top-1 on the held-out
action clips, ``ssl.probe``). CVRL learns if its probe is above the random-init probe beyond 2
combined standard errors. Writes OUT/control.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

METHODS = ("random", "cvrl")
DATA = dict(
    n_actions=600,
    n_vidsitu_train=4,
    n_vidsitu_valid=2,
    n_lvu=3,
    lvu_seconds=(20, 24),
    action_repeat_s=10.0,
    verb_context_p=1.0,
    action_size=64,
)


def main(argv=None) -> int:
    from moviessl.demo import backbone_job
    from moviessl.scheduler import Job, run_jobs
    from moviessl.utils.io import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="backbone config overrides for both methods")
    a = ap.parse_args(argv)
    out = Path(a.out)
    synth = out / "synth"
    jobs = [
        Job(
            "synth",
            "moviessl.demo:job_synth",
            dict(root=str(synth), preset="demo_control", overrides=DATA),
            (),
            str(synth / ".demo_done"),
            60,
        )
    ]
    for m in METHODS:
        for s in range(a.seeds):
            jobs.append(
                backbone_job(
                    f"{m} s{s}",
                    m,
                    synth / "actions",
                    out / m / f"s{s}",
                    ["trainer.progress_bar=false", *a.overrides],
                    s,
                    ("synth",),
                )
            )
    run_jobs(jobs, workers=a.workers, timings=out / "timings.json")
    probes = {m: [json.loads((out / m / f"s{s}" / "probe.json").read_text()) for s in range(a.seeds)] for m in METHODS}
    res, lines = summarize(probes)
    res["data"] = DATA
    res["seeds"] = a.seeds
    res["overrides"] = a.overrides
    atomic_write_json(out / "control.json", res, indent=1)
    print("\n".join(lines))
    return 0


def summarize(probes: dict[str, list[dict]]) -> tuple[dict, list[str]]:
    """Per backbone: mean ± SE of the probes' top-1 over seeds, and CVRL - random with the combined
    SE. A probe's null (a non-finite top-1, as ``json_ready`` writes it) counts as NaN."""
    from moviessl.eval.stats import mean_se
    from moviessl.utils.io import json_float

    res: dict = {}
    for m in METHODS:
        res[m] = {
            k: dict(zip(("mean", "se"), mean_se([json_float(p[k]) for p in probes[m]])))
            for k in ("linear_top1", "knn_top1")
        }
        res[m]["runs"] = probes[m]
    lines = ["| backbone | linear probe top-1 | kNN top-1 |", "|---|---|---|"]
    for m in METHODS:
        lines.append(
            f"| {m} | {res[m]['linear_top1']['mean']:.2f} ± {res[m]['linear_top1']['se']:.2f} "
            f"| {res[m]['knn_top1']['mean']:.2f} ± {res[m]['knn_top1']['se']:.2f} |"
        )
    for k in ("linear_top1", "knn_top1"):
        c, r = res["cvrl"][k], res["random"][k]
        se = math.hypot(c["se"], r["se"])
        diff = c["mean"] - r["mean"]
        res[f"cvrl_minus_random_{k}"] = {"diff": diff, "se": se, "z": diff / se if se > 0 else None}
        lines.append(f"\nCVRL - random ({k}): {diff:+.2f} ± {se:.2f}" + (f" (z = {diff / se:.1f})" if se else ""))
    return res, lines


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.cvrl_control")
