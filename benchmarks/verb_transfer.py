"""Do the backbones' event features carry the verb on VidSitu-style clips? (issue 13)

    python -m benchmarks.verb_transfer runs/demo_full [--backbones random supervised cvrl modist]
        [--in-domain runs/verb_in_domain [--in-domain-override trainer.max_steps=2400 ...]]

Verb prediction, and through it relations (a function of the two events' verbs in SynthMovies), can
only work if the frozen event features say which verb an event shows. This reads a finished
``moviessl demo`` folder and measures, per pretraining run of each backbone:

- **probe, VidSitu events**: a multinomial logistic regression (``synth.headroom.fit_logreg``,
  standardised features, L2 1e-2) from the stored event features (``features/B/rR/vidsitu``) to the
  *true* verb of each event (SynthMovies' ground truth; stricter than VidSitu's Acc@1, which accepts
  any annotator's verb), fit on the train clips' events and scored on the valid clips' events, all
  and clean (not degraded) ones, next to the majority verb;
- **the supervised backbone's own classifier** (its Lightning checkpoint's ``classifier``) on the
  same stored VidSitu features, and on features of the first ``--action-clips`` held-out *action*
  clips extracted by the same ``moviessl extract`` code: a drop between the two is a domain gap
  between the pretraining clips and the VidSitu-style clips, not an extraction fault; and the same
  classifier's accuracy on all VidSitu events of both splits grouped by cast size, director, period,
  scene, degradation, cue and hidden agent (is the gap local to some rendering?);
- with ``--in-domain OUT``: the ceiling of learning the verbs *in domain* -- every 2-s event of the
  VidSitu-style train clips cut into its own clip labelled with its true verb, a supervised backbone
  trained on them with the demo's recipe (cpu preset, ``moviessl.demo.job_backbone``), and its
  classifier / a linear probe on the valid events (resumable; ~20 min on 2 cores); dotted overrides
  of that recipe with ``--in-domain-override`` (e.g. a longer budget); ``--backbones`` with no names
  skips the per-backbone measurements.

Prints Markdown tables; writes ``verb_transfer.json`` into the ``--in-domain`` folder if given, else DEMO.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def event_data(features: Path, truth: dict, split: str, verb_index: dict):
    """Stored event features (``moviessl extract``'s folder of a VidSitu root) of ``split`` with each
    event's true verb; ``flags``: per event, "clean" (not degraded) and "cue" (shows its verb's prop,
    SynthMovies' ``verb_context_p``)."""
    X, y, clean, cue = [], [], [], []
    for v, g in truth.items():
        if g["split"] != split:
            continue
        f = np.load(features / f"{v}_feats.npy")
        for k, e in enumerate(g["events"]):
            X.append(f[k])
            y.append(verb_index[e["verb"]])
            clean.append(not e.get("degraded"))
            cue.append(bool(e.get("cue")))
    return np.asarray(X, np.float64), np.asarray(y), {"clean": np.asarray(clean), "cue": np.asarray(cue)}


def classifier_of(run_dir: Path):
    import torch

    sd = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    W, b = sd["classifier.1.weight"].numpy(), sd["classifier.1.bias"].numpy()
    # output k is label id class_ids[k] (k itself for a backbone exported before class_ids was recorded)
    meta = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=False).get("meta", {})
    ids = np.asarray(meta.get("class_ids", range(len(b))))
    return lambda X: ids[(X @ W.T + b).argmax(1)]


def action_clip_accuracy(demo: Path, run_dir: Path, n: int, classify) -> float:
    """The classifier on extracted event features of the first ``n`` held-out action clips (every
    event of a clip shows its action)."""
    from moviessl.features.extract import extract

    actions = demo / "synth" / "actions"
    rows = [line.split() for line in (actions / "val.csv").read_text().splitlines()[:n]]
    with tempfile.TemporaryDirectory() as tmp:
        lst = Path(tmp) / "clips.txt"
        lst.write_text("".join(f"{actions / p}\n" for p, _ in rows))
        extract(
            run_dir / "model.pt", lst, Path(tmp) / "f", stride_s=2.0, num_workers=0, accelerator="cpu", progress=False
        )
        hits = [classify(np.load(Path(tmp) / "f" / f"{Path(p).stem}_feats.npy")) == int(label) for p, label in rows]
    return float(100 * np.mean(np.concatenate(hits)))


def by_group(demo: Path, run: str, truth: dict, verbs: list[str], classify) -> dict:
    """The supervised classifier's accuracy on every VidSitu event of both splits, per rendering group."""
    from collections import defaultdict

    hits: dict = defaultdict(list)
    for v, g in truth.items():
        pred = classify(np.load(demo / "features" / "supervised" / run / "vidsitu" / f"{v}_feats.npy"))
        for k, e in enumerate(g["events"]):
            ok = verbs[pred[k]] == e["verb"]
            for key in (
                f"cast {len(g['characters'])}",
                f"director {g['director']}",
                f"period {g['year']}",
                f"scene {e.get('scene')}",
                f"degraded {e.get('degraded')}",
                f"cue {bool(e.get('cue'))}",
                f"hidden agent {bool(e.get('hidden'))}",
            ):
                hits[key].append(ok)
    return {k: [float(100 * np.mean(h)), len(h)] for k, h in sorted(hits.items())}


def in_domain(demo: Path, out: Path, truth: dict, verb_index: dict, overrides: list[str] = ()) -> dict:
    """Train the demo's supervised recipe (+ ``overrides``) on the VidSitu-style events themselves;
    score on valid."""
    import csv

    import av

    from moviessl.demo import QUIET, job_backbone
    from moviessl.features.extract import extract
    from moviessl.synth.headroom import fit_logreg
    from moviessl.synth.render import encode_video

    root = demo / "synth" / "vidsitu"
    fps = json.loads((demo / "synth" / "synth_meta.json").read_text())["fps"]
    n = int(round(2 * fps))
    lists: dict = {"train": [], "valid": []}
    for v, g in truth.items():
        clips = [out / "events" / f"{v}_ev{k + 1}.mp4" for k in range(len(g["events"]))]
        if not all(c.is_file() for c in clips):
            with av.open(str(root / "vsitu_video_trimmed_dir" / f"{v}.mp4")) as c:
                frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
            for k, clip in enumerate(clips):
                encode_video(clip, [(frames[n * k : n * (k + 1)], None)], fps, frames.shape[1], preset="ultrafast")
        lists[g["split"]] += [f"events/{c.name} {verb_index[e['verb']]}" for c, e in zip(clips, g["events"])]
    for split, lines in lists.items():
        (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
    bb = out / "backbone"
    job_backbone("supervised", str(out / "train.csv"), str(out / "valid.csv"), str(bb), [*QUIET, *overrides], 0)
    (out / "all.txt").write_text("".join(f"{out / line.split()[0]}\n" for s in lists.values() for line in s))
    extract(
        bb / "model.pt", out / "all.txt", out / "feats", stride_s=2.0, num_workers=0, accelerator="cpu", progress=False
    )

    def load(split):
        X = [np.load(out / "feats" / f"{Path(line.split()[0]).stem}_feats.npy")[0] for line in lists[split]]
        return np.asarray(X, np.float64), np.array([int(line.split()[1]) for line in lists[split]])

    (Xtr, ytr), (Xva, yva) = load("train"), load("valid")
    classify = classifier_of(bb)
    with open(bb / "logs" / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    return {
        "overrides": list(overrides),
        "train_loss_last": float(np.mean(losses[-5:])),  # the last few logged steps
        "classifier_valid": float(100 * np.mean(classify(Xva) == yva)),
        "classifier_train": float(100 * np.mean(classify(Xtr) == ytr)),
        "probe_valid": float(100 * np.mean(fit_logreg(Xtr, ytr, len(verb_index), l2=1e-2)(Xva) == yva)),
        "majority_valid": float(100 * np.mean(yva == np.bincount(ytr).argmax())),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo", help="a finished `moviessl demo` folder")
    ap.add_argument("--backbones", nargs="*", default=["random", "supervised", "cvrl", "modist"])
    ap.add_argument("--action-clips", type=int, default=60)
    ap.add_argument("--in-domain", default=None, help="folder for the in-domain ceiling run (see above)")
    ap.add_argument("--in-domain-override", action="append", default=[], help="dotted override of its recipe")
    a = ap.parse_args(argv)

    from moviessl.synth.headroom import fit_logreg

    demo = Path(a.demo)
    truth = json.loads((demo / "synth" / "vidsitu" / "ground_truth.json").read_text())
    verbs = json.loads((demo / "synth" / "synth_meta.json").read_text())["verbs"]
    vi = {v: i for i, v in enumerate(verbs)}
    res: dict = {"probe": {}, "supervised_classifier": {}, "supervised_by_group": {}}
    for b in a.backbones:
        for run in sorted(p.name for p in (demo / "features" / b).glob("r*")):
            feats = demo / "features" / b / run / "vidsitu"
            Xtr, ytr, _ = event_data(feats, truth, "train", vi)
            Xva, yva, flags = event_data(feats, truth, "valid", vi)
            clean = flags["clean"]
            hit = fit_logreg(Xtr, ytr, len(verbs), l2=1e-2)(Xva) == yva
            majority = yva == np.bincount(ytr).argmax()
            res["probe"][f"{b} {run}"] = {
                "all": float(100 * hit.mean()),
                "clean": float(100 * hit[clean].mean()),
                "majority": float(100 * majority.mean()),
            }
            if b == "supervised":
                classify = classifier_of(demo / "backbone" / b / run)
                res["supervised_classifier"][run] = {
                    "vidsitu_events": float(100 * np.mean(classify(Xva) == yva)),
                    "action_clips": action_clip_accuracy(demo, demo / "backbone" / b / run, a.action_clips, classify),
                }
                res["supervised_by_group"][run] = by_group(demo, run, truth, verbs, classify)
    print("| backbone run | probe, all valid events | clean events | majority verb |")
    print("|---|---|---|---|")
    for k, r in res["probe"].items():
        print(f"| {k} | {r['all']:.1f} | {r['clean']:.1f} | {r['majority']:.1f} |")
    if res["supervised_classifier"]:
        print("\n| supervised run | its classifier on VidSitu valid events | on held-out action clips |")
        print("|---|---|---|")
        for k, r in res["supervised_classifier"].items():
            print(f"| {k} | {r['vidsitu_events']:.1f} | {r['action_clips']:.1f} |")
        groups = {k for r in res["supervised_by_group"].values() for k in r}
        print("\n| group (all VidSitu events) | " + " | ".join(res["supervised_by_group"]) + " | events |")
        print("|---|" + "---|" * (len(res["supervised_by_group"]) + 1))
        for k in sorted(groups):
            cells = [f"{r[k][0]:.1f}" for r in res["supervised_by_group"].values()]
            print(f"| {k} | " + " | ".join(cells) + f" | {next(iter(res['supervised_by_group'].values()))[k][1]} |")
    if a.in_domain:
        Path(a.in_domain).mkdir(parents=True, exist_ok=True)
        res["in_domain"] = r = in_domain(demo, Path(a.in_domain), truth, vi, a.in_domain_override)
        keys = ("classifier_valid", "classifier_train", "probe_valid", "majority_valid", "train_loss_last")
        print(
            "\n| trained in domain (VidSitu-style train events) | "
            + " | ".join(k.replace("_", ", ") for k in keys)
            + " |"
        )
        print("|---|" + "---|" * len(keys))
        print("| supervised | " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |")
    (Path(a.in_domain) if a.in_domain else demo).joinpath("verb_transfer.json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.verb_transfer")
