"""Do the backbones read the scene? (issue 13: the SRL scene role, AScn)

    python -m benchmarks.scene_readable SYNTH OUT [--backbones cvrl supervised random] [--workers 2]
        [--backbone-override KEY=VALUE ... --tag NAME] [--uniform-cast]

About 40% of the demo's SRL CIDEr is the scene role, and the demo's backbones do not read it. SynthMovies
draws the movies' scenes as background patterns; its action clips are filmed in a studio unless
``action_film_p`` > 0 films a share of them in the movies' scenes (the K400 property it stands for:
clips shot in real places). SYNTH must have such filmed clips (``moviessl synth --action-film-p P``).
This asks, on one seed of the demo's recipes:

- **can the network read the scene at all?** ``scene``: slowd_cpu trained with the demo's supervised
  recipe on the filmed action clips' *scene* labels (a label-trained reference, not a pretraining
  method): the readability of the scenes at the backbone's input size;
- **does a pretraining method learn it?** each backbone in ``--backbones`` pretrained with the demo's
  recipe (:func:`moviessl.demo.job_backbone`, cpu preset, seed 0) on SYNTH's action clips.

Every backbone is then probed for the scene class (a linear probe and k-NN, ``moviessl.ssl.probe``) on
the filmed action clips (train -> val: in domain), and its event features of SYNTH/vidsitu by a linear
probe (train -> valid events, as ``benchmarks.txe_layer_probe`` with no run). Chance is 1/6.

``--backbone-override`` changes the methods' recipe (not the reference's), e.g. the augmentation; their
folders are then ``backbone/B_NAME/r0`` (``--tag NAME``, required with it), so one OUT keeps the
reference and every recipe beside each other.

``--uniform-cast`` tests why a method does or does not learn the scene: every backbone (the reference
too) trains on SYNTH's action clips re-rendered with one cast for every video
(``benchmarks.cvrl_appearance``'s, bystanders included), each clip's background, camera, look and cue
kept, so the cast no longer tells two videos apart (OUT/uniform_cast; give it an OUT of its own).

Resumable (``moviessl.scheduler``: a backbone or feature folder already in OUT is kept, so the demo's
own ``backbone/B/r0`` folders can be reused). Prints Markdown, writes ``OUT/scene_readable.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moviessl.errors import BadInputError
from moviessl.synth import world as W
from moviessl.utils.io import atomic_write_json, atomic_write_text

SCENES = sorted(W.SCENES)
LABEL_TRAINED = "scene"


def scene_lists(actions: Path, out: Path) -> dict[str, Path]:
    """``OUT/scene_lists/{train,val}.csv``: the filmed clips of an action-clip folder (absolute paths),
    labelled by the index of their scene in :data:`SCENES`."""
    truth_file = actions / "ground_truth.json"
    truth = json.loads(truth_file.read_text())
    rows: dict[str, list[str]] = {"train": [], "val": []}
    for name, gt in truth.items():
        if gt.get("filmed") and gt.get("split") in rows:
            video = (actions / "videos" / f"{name}.mp4").resolve()
            rows[gt["split"]].append(f"{video} {SCENES.index(gt['events'][0]['scene'])}")
    if not all(rows.values()):
        raise BadInputError(truth_file, "no filmed action clip in train or val: generate with --action-film-p > 0")
    lists = {}
    for split, lines in rows.items():
        lists[split] = out / "scene_lists" / f"{split}.csv"
        atomic_write_text(lists[split], "\n".join(lines) + "\n")
    return lists


def folder(b: str, tag: str | None) -> str:
    """A backbone's folder name: a method's recipe with overrides is tagged; the reference never is."""
    return b if b == LABEL_TRAINED or not tag else f"{b}_{tag}"


def plan(
    synth: Path,
    out: Path,
    backbones: list[str],
    lists: dict[str, Path],
    overrides: list[str] = (),
    tag: str | None = None,
    actions: Path | None = None,
) -> list:
    """The backbones (the label-trained ``scene`` one first), pretrained on ``actions`` (default SYNTH's
    action clips), and their event features of SYNTH's VidSitu-style clips."""
    actions = actions or synth / "actions"
    from moviessl.demo import EXTRACT_S, QUIET, backbone_job
    from moviessl.scheduler import Job

    jobs = []
    for m in [LABEL_TRAINED, *backbones]:
        b, ref = folder(m, tag), m == LABEL_TRAINED
        d = out / "backbone" / b / "r0"
        recipe = list(QUIET) + ([] if ref else list(overrides))
        job = backbone_job(f"backbone {b} r0", "supervised" if ref else m, actions, d, recipe, 0)
        if ref:
            job.kwargs.update(data=str(lists["train"]), val=str(lists["val"]))
        f = out / "features" / b / "r0" / "vidsitu"
        jobs += [job, Job(f"extract {b} r0 vidsitu", "moviessl.demo:job_extract",
                          dict(backbone=str(d / "model.pt"), videos=str(synth / "vidsitu"), out=str(f)),
                          (job.name,), str(f / "index.json"), EXTRACT_S["vidsitu"])]  # fmt: skip
    return jobs


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("synth", help="a SynthMovies folder with filmed action clips (--action-film-p > 0)")
    ap.add_argument("out")
    ap.add_argument("--backbones", nargs="*", default=["cvrl", "supervised", "random"])
    ap.add_argument("--backbone-override", nargs="*", default=[], help="the methods' recipe (KEY=VALUE)")
    ap.add_argument("--tag", help="folder suffix of the methods' backbones (required with --backbone-override)")
    ap.add_argument("--uniform-cast", action="store_true", help="train on the action clips with one cast")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    if a.backbone_override and not a.tag:
        ap.error("--backbone-override needs --tag (the overridden backbones get folders of their own)")
    from benchmarks.cvrl_appearance import make_uniform_actions
    from benchmarks.txe_layer_probe import event_rows, probe_run
    from moviessl.config import load_config
    from moviessl.scheduler import run_jobs
    from moviessl.ssl.probe import probe_checkpoint

    synth, out = Path(a.synth), Path(a.out)
    actions = synth / "actions"
    if a.uniform_cast:
        actions = make_uniform_actions(synth, out / "uniform_cast", a.workers, keep_setting=True)
    lists = scene_lists(actions, out)
    names = [folder(m, a.tag) for m in [LABEL_TRAINED, *a.backbones]]
    jobs = plan(synth, out, a.backbones, lists, a.backbone_override, a.tag, actions)
    run_jobs(jobs, workers=a.workers, threads=1, timings=out / "timings.json")
    probe_cfg = load_config("backbone", "cpu").probe  # the demo backbones' own probe
    res = {}
    for b in names:
        ckpt, feats = out / "backbone" / b / "r0" / "model.pt", out / "features" / b / "r0" / "vidsitu"
        p = probe_checkpoint(ckpt, lists["train"], lists["val"], probe_cfg, progress=False)
        events = probe_run(None, event_rows(synth / "vidsitu", feats, "scene"), feats, False)["features"]
        res[b] = {"actions_linear": p["linear_top1"], "actions_knn": p["knn_top1"], "vidsitu": events}
    n = {s: len(lists[s].read_text().splitlines()) for s in lists}
    print(f"Scene class (6, chance 16.7%), % right; filmed action clips {n['train']} train / {n['val']} val\n")
    print("| backbone | action clips, linear | action clips, k-NN | VidSitu valid events | clean | degraded |")
    print("|---|---|---|---|---|---|")
    for b, r in res.items():
        v = r["vidsitu"]
        name = "scene labels (reference)" if b == LABEL_TRAINED else b
        print(f"| {name} | {r['actions_linear']:.1f} | {r['actions_knn']:.1f} | {v['all']:.1f} | "
              f"{v.get('clean', float('nan')):.1f} | {v.get('degraded', float('nan')):.1f} |")  # fmt: skip
    record = {"synth": str(synth), "actions": str(actions), "lists": n, "overrides": a.backbone_override}
    record["backbones"] = res
    atomic_write_json(out / f"scene_readable{'_' + a.tag if a.tag else ''}.json", record)
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.scene_readable")
