"""Do the backbones' event features carry the verb on VidSitu-style clips? (issue 13)

    python -m benchmarks.verb_transfer runs/demo_full [--backbones random supervised cvrl modist]

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
  between the pretraining clips and the VidSitu-style clips, not an extraction fault.

Prints Markdown tables; writes ``DEMO/verb_transfer.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def event_data(demo: Path, backbone: str, run: str, truth: dict, split: str, verb_index: dict):
    X, y, clean = [], [], []
    for v, g in truth.items():
        if g["split"] != split:
            continue
        f = np.load(demo / "features" / backbone / run / "vidsitu" / f"{v}_feats.npy")
        for k, e in enumerate(g["events"]):
            X.append(f[k])
            y.append(verb_index[e["verb"]])
            clean.append(not e.get("degraded"))
    return np.asarray(X, np.float64), np.asarray(y), np.asarray(clean)


def classifier_of(run_dir: Path):
    import torch

    sd = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    W, b = sd["classifier.1.weight"].numpy(), sd["classifier.1.bias"].numpy()
    return lambda X: (X @ W.T + b).argmax(1)


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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo", help="a finished `moviessl demo` folder")
    ap.add_argument("--backbones", nargs="+", default=["random", "supervised", "cvrl", "modist"])
    ap.add_argument("--action-clips", type=int, default=60)
    a = ap.parse_args(argv)

    from moviessl.synth.headroom import fit_logreg

    demo = Path(a.demo)
    truth = json.loads((demo / "synth" / "vidsitu" / "ground_truth.json").read_text())
    verbs = json.loads((demo / "synth" / "synth_meta.json").read_text())["verbs"]
    vi = {v: i for i, v in enumerate(verbs)}
    res: dict = {"probe": {}, "supervised_classifier": {}}
    for b in a.backbones:
        for run in sorted(p.name for p in (demo / "features" / b).glob("r*")):
            Xtr, ytr, _ = event_data(demo, b, run, truth, "train", vi)
            Xva, yva, clean = event_data(demo, b, run, truth, "valid", vi)
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
    print("| backbone run | probe, all valid events | clean events | majority verb |")
    print("|---|---|---|---|")
    for k, r in res["probe"].items():
        print(f"| {k} | {r['all']:.1f} | {r['clean']:.1f} | {r['majority']:.1f} |")
    if res["supervised_classifier"]:
        print("\n| supervised run | its classifier on VidSitu valid events | on held-out action clips |")
        print("|---|---|---|")
        for k, r in res["supervised_classifier"].items():
            print(f"| {k} | {r['vidsitu_events']:.1f} | {r['action_clips']:.1f} |")
    (demo / "verb_transfer.json").write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
