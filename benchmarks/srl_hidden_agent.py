"""Does a contextualizer name the agents that an event's own frames do not show? (issue 13, Table 1)

    python -m benchmarks.srl_hidden_agent SYNTH/vidsitu ROW [ROW ...]

SynthMovies marks the events whose agent cannot be identified from that event's frames but can
from its neighbours' (``hidden``: the roles-that-need-context knob, the paper's §5 argument for
context) and the events that are degraded (off screen, low contrast, blur, occlusion). The SRL
metric (CIDEr over every role of every event) mixes those few events with the many whose agent is
in plain view. This scores, on the valid clips, the one role where context should matter: the
agent (the event's first annotated role, whose generating character is known), per event group --
how often the predicted phrase names the agent's colour, its shape, the whole phrase exactly, and
the colour of *any* character of the clip (does the decoder know who is in the scene at all?).

Each ROW is a fine-tuning folder of ``moviessl finetune vidsitu --task srl`` -- a folder of
``seed*/predictions.pkl`` or a folder of such replicates (``r*/seed*``, as the demo and
``benchmarks.txe_width`` lay them out); a row's value is the mean ± SE over its replicates of each
replicate's mean over seeds. References: the train agents' most frequent colour and shape, and with
``--features F`` (the stored event features the rows read) a linear probe from one event's feature
to its agent's colour and shape (train events -> valid events): whether the features carry the
identity at all; with ``--pixels`` the same probe on a hand-made pixel feature of the event's frames
(colour histograms of all pixels and of the pixels that change, at 64 px as the backbone reads
them), and each histogram alone: whether the identity is in the pixels the backbone sees, and
whether a frame-wide summary keeps it or only one that looks at what moves; with ``--context DIR ...``
the same probe on the outputs of pretrained MaskPred TxEs (and an untrained one) over those features:
whether the contextualizer keeps an event's own agent while it adds its neighbours'. Prints Markdown
tables; ``--json`` writes the numbers. ``--save-pixel-features DIR`` writes that pixel feature in the features layout
(``--videos FOLDER``: of unlabelled videos, for MaskPred) -- event features that carry identity;
``--save-backbone-features DIR --backbone CKPT --stage S`` writes the backbone's map after S,
motion-weighted, instead: a learned event feature read where the identity still is.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np

from moviessl.utils.io import atomic_write_json

GROUPS = ("visible", "hidden", "degraded")
SCORES = ("colour", "shape", "exact", "cast colour")
STAGES = ("res2", "res3", "res4", "res5")  # Slow-D's stages after the stem


def event_group(ev: dict) -> str:
    """One of GROUPS for a ground-truth event: hidden agent, degraded, or in plain view."""
    return "hidden" if ev.get("hidden") else ("degraded" if ev.get("degraded") else "visible")


def agent_targets(data_root: Path) -> tuple[dict, dict]:
    """(ann_idx, event key) -> (agent's character, agent's role, the cast's colours), and the group of
    each such event.
    Events without an agent are left out."""
    from moviessl.data.vidsitu import load_split, roles_in_order

    split = load_split(data_root / "vidsitu_annotations", "valid")
    truth = json.loads((data_root / "ground_truth.json").read_text())
    targets, groups = {}, {}
    for ix, vseg in enumerate(split.vseg_ids):
        gt = truth[vseg]
        chars = {c["id"]: c for c in gt["characters"]}
        rec = split.records[vseg][0]
        for k, ev in enumerate(gt["events"]):
            key = f"Ev{k + 1}"
            if ev.get("agent") is None or key not in rec:
                continue
            targets[ix, key] = (
                chars[ev["agent"]],
                roles_in_order(rec[key])[0][0],
                {c["colour"] for c in chars.values()},
            )
            groups[ix, key] = event_group(ev)
    return targets, groups


def agent_accuracy(pred_file: Path, targets: dict, groups: dict) -> dict[tuple[str, str], float]:
    """(group, score) -> % of the group's events whose predicted agent role names the agent's colour,
    its shape, or is exactly its phrase."""
    preds = {p["ann_idx"]: p["vb_output"] for p in pickle.loads(pred_file.read_bytes())}
    hits: dict[tuple[str, str], list[bool]] = {(g, s): [] for g in GROUPS for s in SCORES}
    for (ix, key), (char, role, cast) in targets.items():
        got = str(preds.get(ix, {}).get(key, {}).get(role, ""))
        words, g = got.split(), groups[ix, key]
        hits[g, "colour"].append(char["colour"] in words)
        hits[g, "shape"].append(char["shape"] in words)
        hits[g, "exact"].append(got == char["phrase"])
        hits[g, "cast colour"].append(bool(cast & set(words)))
    return {k: 100.0 * float(np.mean(h)) if h else float("nan") for k, h in hits.items()}


def replicate_predictions(row: Path) -> list[list[Path]]:
    """A fine-tuning row's ``seed*/predictions.pkl`` files, one list per replicate (``r*``; the row
    itself when it has none)."""
    reps = sorted(p for p in row.glob("r*") if p.is_dir()) or [row]
    out = []
    for rep in reps:
        files = sorted(rep.glob("seed*/predictions.pkl"))
        if not files:
            raise SystemExit(f"{rep}: no seed*/predictions.pkl")
        out.append(files)
    return out


def row_accuracy(row: Path, targets: dict, groups: dict) -> dict[str, tuple[float, float, int]]:
    """``"group score"`` -> mean ± SE over replicates (each the mean over its seeds), replicate count."""
    from moviessl.eval.stats import mean_se

    per_rep = []
    for files in replicate_predictions(row):
        seeds = [agent_accuracy(f, targets, groups) for f in files]
        per_rep.append({k: float(np.mean([s[k] for s in seeds])) for k in seeds[0]})
    return {f"{g} {s}": (*mean_se([r[g, s] for r in per_rep]), len(per_rep)) for g, s in per_rep[0]}


def pixel_features(clip: Path, n_events: int | None = None, side: int = 64, bins: int = 4) -> np.ndarray:
    """(n_events, 2 * bins**3): per 2-s event, the RGB histogram of its frames' pixels and the
    histogram weighted by how much each pixel changes from the previous frame (what moves: the agent
    of most verbs), each normalised; frames scaled to ``side`` px on the short side. ``n_events``
    defaults to the whole 2-s events the clip holds (as feature extraction counts them)."""
    import av

    with av.open(str(clip)) as c:
        st = c.streams.video[0]
        fps = float(st.average_rate)
        w, h = st.codec_context.width, st.codec_context.height
        k = side / min(w, h)
        fr = [f.to_ndarray(format="rgb24", width=round(w * k), height=round(h * k)) for f in c.decode(video=0)]
    frames = np.stack(fr).astype(np.int64)
    code = (frames // (256 // bins)) @ np.array([bins * bins, bins, 1])  # (T, H, W) colour bin
    change = np.abs(np.diff(frames, axis=0)).sum(-1)  # (T-1, H, W)
    out = []
    per = int(round(2.0 * fps))
    for e in range(len(frames) // per if n_events is None else n_events):
        sl = slice(e * per, (e + 1) * per)
        a = np.bincount(code[sl].ravel(), minlength=bins**3).astype(np.float64)
        m = np.bincount(code[1:][sl].ravel(), weights=change[sl].ravel(), minlength=bins**3)
        out.append(np.concatenate([a / max(a.sum(), 1), m / max(m.sum(), 1e-9)]))
    return np.stack(out)


def backbone_pooled(
    clips: list[Path], checkpoint: Path, stage: str = "res5", vidsitu: bool = True
) -> dict[str, np.ndarray]:
    """Per clip, its events through a backbone as ``moviessl extract`` feeds them (same clips, event
    centres, resize and crop: a VidSitu clip's 5 events, or every whole 2-s event of an unlabelled
    video with ``vidsitu=False``), the map after ``stage`` pooled two ways: over the whole map (at
    res5: what extraction stores) and weighted by how much each map cell's pixels change between
    frames (what moves). Whether the identity the stored feature lacks is in the map, where the
    agent is, or not in it at all; an earlier stage has finer cells (at 64 px: res5 2x2, res4 4x4,
    res3 8x8). (E, 2, D) per clip: frame-wide, motion-weighted."""
    import torch

    from moviessl.checkpoint import build_from_checkpoint, load_checkpoint
    from moviessl.features.extract import event_centers_for, event_clip
    from moviessl.video import VideoReader, normalize

    obj = load_checkpoint(checkpoint, stage="backbone")
    inp, model = obj["meta"]["input"], build_from_checkpoint(obj).eval()
    out = {}
    with torch.no_grad():
        for clip in clips:
            with VideoReader(clip) as r:
                centers = event_centers_for(r.duration_s, 2.0, vidsitu)
                x = torch.from_numpy(np.stack([event_clip(r, c, inp)[0] for c in centers]))
            fmap = model.stem(normalize(x.float().div_(255.0)))
            for name in STAGES[: STAGES.index(stage) + 1]:
                fmap = getattr(model, name)(fmap)  # -> (E, D, T', H', W')
            change = x.float().diff(dim=2).abs().sum(1, keepdim=True)  # (E, 1, T-1, S, S)
            w = torch.nn.functional.adaptive_avg_pool3d(change, fmap.shape[2:]) + 1e-6
            out[clip.stem] = np.stack(
                [fmap.mean((2, 3, 4)).numpy(), ((fmap * w).sum((2, 3, 4)) / w.sum((2, 3, 4))).numpy()], axis=1
            )
    return out


def load_txe(run: Path, untrained: bool = False):
    """The TxE of a MaskPred run folder (``checkpoints/last.ckpt``) or of a fine-tuned task model
    (``.pt``), in eval mode; with ``untrained`` a freshly initialised one of the same shape and input
    statistics (seed 0): what pretraining changes."""
    import torch

    if run.suffix == ".pt":
        import moviessl

        txe = moviessl.load(run).model.encoder.txe
        if txe is None or untrained:
            raise SystemExit(f"{run}: no TxE" if txe is None else "an untrained TxE needs a MaskPred run folder")
        return txe.eval()
    from moviessl.context.module import MaskPredModule

    mod = MaskPredModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    if untrained:
        torch.manual_seed(0)
        fresh = MaskPredModule(**mod.hparams)
        fresh.txe.input_norm.load_state_dict(mod.txe.input_norm.state_dict())
        mod = fresh
    return mod.eval().txe


def context_outputs(context: Path, features: Path, random: bool = False) -> dict[str, np.ndarray]:
    """Per clip of ``features``, a pretrained MaskPred TxE's outputs with nothing masked (the
    contextualized events a task head reads) -- with ``random`` an untrained TxE of the same shape
    and input normalisation instead: what pretraining changes. (E, D) per clip."""
    import torch

    from moviessl.features.store import FeatureStore

    store, txe = FeatureStore(str(features)), load_txe(context, untrained=random)
    with torch.no_grad():
        return {v: txe(torch.tensor(store.load(v))[None])[0].numpy() for v in store.ids}


def references(
    root: Path,
    features: Path | None,
    pixels: bool = False,
    backbone: Path | None = None,
    stage: str = "res5",
    contexts: list[Path] | None = None,
) -> dict[str, dict[str, float]]:
    """Per reference: ``"group score"`` -> % of valid events (colour, shape, cast colour): the train
    agents' most frequent value, and linear probes of the event features, the pixel feature, a
    backbone's pooled map (``backbone_pooled``) and the outputs of MaskPred TxEs on the event
    features (``context_outputs``: an untrained one, then each of ``contexts``), each if asked for."""
    from moviessl.synth.headroom import fit_logreg

    truth = json.loads((root / "ground_truth.json").read_text())
    rows: dict[str, list] = {"train": [], "valid": []}
    video = root / "vsitu_video_trimmed_dir"
    pooled = (
        backbone_pooled([video / f"{v}.mp4" for v, gt in truth.items() if gt.get("split") in rows], backbone, stage)
        if backbone
        else {}
    )
    contexts = contexts or []
    ctx = [context_outputs(contexts[0], features, random=True)] if contexts else []
    ctx += [context_outputs(c, features) for c in contexts]
    for vseg, gt in truth.items():
        chars = {c["id"]: c for c in gt["characters"]}
        if gt.get("split") not in rows:
            continue
        feats = np.load(features / f"{vseg}_feats.npy") if features else None
        pix = pixel_features(video / f"{vseg}.mp4", len(gt["events"])) if pixels else None
        for k, ev in enumerate(gt["events"]):
            if ev.get("agent") is None:
                continue
            g = event_group(ev)
            cast = {c["colour"] for c in chars.values()}
            x = (
                None if feats is None else feats[k],
                None if pix is None else pix[k],
                pooled[vseg][k] if pooled else None,
                [c[vseg][k] for c in ctx],
            )
            rows[gt["split"]].append((dict(chars[ev["agent"]], cast=cast), g, x))
    out: dict[str, dict[str, float]] = {"most frequent train value": {}}
    half = len(rows["train"][0][2][1]) // 2 if pixels else 0  # pixel_features: all pixels, then what moves
    probes = {"linear probe of the event feature": (0, slice(None))} if features else {}
    if pixels:  # both histograms, then each alone: is the identity in the colours or in what moves?
        probes["linear probe of a pixel colour feature"] = (1, slice(None))
        probes["  - its all-pixel histogram alone"] = (1, slice(0, half))
        probes["  - its moving-pixel histogram alone"] = (1, slice(half, None))
    if backbone:  # a backbone's map after ``stage``, pooled over the frame and over what moves
        probes[f"linear probe of the backbone's {stage} map, frame-wide mean"] = (2, 0)
        probes[f"linear probe of the backbone's {stage} map, motion-weighted mean"] = (2, 1)
    for j, c in enumerate(["an untrained TxE (same input normalisation)", *contexts] if contexts else []):
        probes[f"linear probe of the outputs of {c}"] = (3, j)  # nothing masked, as a task head reads them
    out.update({name: {} for name in probes})
    group = np.array([g for _, g, _ in rows["valid"]])
    for attr in ("colour", "shape"):
        values = sorted({c[attr] for split in rows.values() for c, _, _ in split})
        ytr = np.array([values.index(c[attr]) for c, _, _ in rows["train"]])
        yva = np.array([values.index(c[attr]) for c, _, _ in rows["valid"]])
        guesses = {"most frequent train value": np.full_like(yva, np.bincount(ytr).argmax())}
        for name, (i, cols) in probes.items():
            Xtr = np.stack([x[i][cols] for _, _, x in rows["train"]]).astype(np.float64)
            Xva = np.stack([x[i][cols] for _, _, x in rows["valid"]]).astype(np.float64)
            guesses[name] = fit_logreg(Xtr, ytr, len(values))(Xva)
        for ref, guess in guesses.items():
            for g in GROUPS:
                out[ref][f"{g} {attr}"] = float(100 * np.mean(guess[group == g] == yva[group == g]))
                if attr == "colour":  # the guessed colour is one of the clip's cast
                    cast = [values[y] in c["cast"] for (c, gg, _), y in zip(rows["valid"], guess) if gg == g]
                    out[ref][f"{g} cast colour"] = float(100 * np.mean(cast))
    return out


def save_features(
    root: Path, out: Path, clips: list[Path] | None = None, backbone: Path | None = None, stage: str = "res5"
) -> dict:
    """Write an event feature of every clip of ``root`` (or of every unlabelled video in ``clips``)
    in the features layout, ``out/{id}_feats.npy`` + ``index.json``: ``pixel_features``, or with
    ``backbone`` its map after ``stage``, motion-weighted (``backbone_pooled``; its frame-wide res5
    mean is what ``moviessl extract`` stores)."""
    out.mkdir(parents=True, exist_ok=True)
    videos, unlabelled = {}, clips is not None
    if not unlabelled:
        truth = json.loads((root / "ground_truth.json").read_text())
        clips = sorted((root / "vsitu_video_trimmed_dir").glob("*.mp4"))
    pooled = backbone_pooled(clips, backbone, stage, vidsitu=not unlabelled) if backbone else {}
    dim = 0
    for clip in clips:
        x = pooled[clip.stem][:, 1] if backbone else pixel_features(clip, None if unlabelled else 5)
        x = x.astype(np.float32)
        dim = x.shape[1]
        np.save(out / f"{clip.stem}_feats.npy", x)
        videos[clip.stem] = {"status": "ok", "num_events": len(x)}
        if not unlabelled:  # each clip's split, so MaskPred pretraining leaves the valid clips out
            videos[clip.stem]["split"] = truth[clip.stem]["split"]
    layout = "lvu" if unlabelled else "vidsitu"
    index = {"format": "moviessl-features", "stride_s": 2.0, "dim": dim, "layout": layout, "videos": videos}
    atomic_write_json(out / "index.json", index)  # last: a folder with an index is complete
    return {"saved": str(out), "videos": len(videos)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root", help="a SynthMovies vidsitu folder (ground_truth.json + vidsitu_annotations)")
    ap.add_argument("rows", nargs="*", help="SRL fine-tuning folders (at least one unless --save-*-features)")
    ap.add_argument("--features", default=None, help="the rows' event features, for the probe reference")
    ap.add_argument("--pixels", action="store_true", help="also probe a pixel colour feature of the clips")
    ap.add_argument(
        "--backbone",
        default=None,
        help="a backbone checkpoint: also probe its map after --stage, pooled over the frame and over what moves",
    )
    ap.add_argument("--stage", default="res5", choices=STAGES, help="with --backbone")
    ap.add_argument(
        "--context",
        nargs="+",
        default=[],
        metavar="DIR",
        help="with --features: also probe the outputs of these pretrain-context folders' MaskPred TxEs on "
        "those features (and of an untrained TxE): does the contextualizer keep each event's own agent?",
    )
    ap.add_argument("--json", default=None)
    save = ap.add_mutually_exclusive_group()
    save.add_argument(
        "--save-pixel-features",
        default=None,
        metavar="DIR",
        help="write the pixel feature of every clip as DIR/{id}_feats.npy ((5, 128), + index.json with splits) "
        "and stop: event features that carry the agent's colour, for the task heads",
    )
    save.add_argument(
        "--save-backbone-features",
        default=None,
        metavar="DIR",
        help="the same with the --backbone's map after --stage, motion-weighted, as the event feature",
    )
    ap.add_argument(
        "--videos",
        default=None,
        metavar="FOLDER",
        help="with --save-*-features: the unlabelled videos of FOLDER (*.mp4 in it or in FOLDER/videos) "
        "instead of data_root's clips, every whole 2-s event, for MaskPred pretraining",
    )
    a = ap.parse_args(argv)
    root = Path(a.data_root)
    if not (root / "ground_truth.json").is_file():
        ap.error(f"{root}: no ground_truth.json (a SynthMovies vidsitu folder is needed)")
    if a.save_backbone_features and not a.backbone:
        ap.error("--save-backbone-features needs --backbone CKPT")
    if a.save_pixel_features or a.save_backbone_features:
        clips = None
        if a.videos:
            d = Path(a.videos)
            clips = sorted(d.glob("*.mp4")) or sorted((d / "videos").glob("*.mp4"))
            if not clips:
                ap.error(f"{d}: no *.mp4 videos (nor in {d / 'videos'})")
        if a.save_pixel_features:
            return save_features(root, Path(a.save_pixel_features), clips)
        return save_features(root, Path(a.save_backbone_features), clips, Path(a.backbone), a.stage)
    if a.context and not a.features:
        ap.error("--context needs --features (the event features the TxEs read)")
    if not a.rows:
        ap.error("give at least one SRL fine-tuning folder (ROW)")
    for r in a.rows:
        if not any(Path(r).glob("seed*/predictions.pkl")) and not any(Path(r).glob("r*/seed*/predictions.pkl")):
            ap.error(f"{r}: no seed*/predictions.pkl (nor r*/seed*/predictions.pkl)")
    targets, groups = agent_targets(root)
    n = {g: sum(v == g for v in groups.values()) for g in GROUPS}
    res = {"events": n, "rows": {r: row_accuracy(Path(r), targets, groups) for r in a.rows}}
    heads = " | ".join(f"{g} agents ({n[g]} events): {' / '.join(SCORES)}" for g in GROUPS)
    print(f"| row | {heads} | replicates |")
    print("|---|" + "---|" * (len(GROUPS) + 1))
    for r, v in res["rows"].items():
        cells = " | ".join(
            " / ".join(f"{v[f'{g} {s}'][0]:.1f} ± {v[f'{g} {s}'][1]:.1f}" for s in SCORES) for g in GROUPS
        )
        print(f"| {r} | {cells} | {v[f'{GROUPS[0]} {SCORES[0]}'][2]} |")
    res["references"] = references(
        root,
        Path(a.features) if a.features else None,
        a.pixels,
        Path(a.backbone) if a.backbone else None,
        a.stage,
        [Path(c) for c in a.context],
    )
    print("\n| reference (no decoder) | " + " | ".join(f"{g}: colour / shape / cast colour" for g in GROUPS) + " |")
    print("|---|" + "---|" * len(GROUPS))
    for ref, v in res["references"].items():
        cells = [" / ".join(f"{v[f'{g} {s}']:.1f}" for s in ("colour", "shape", "cast colour")) for g in GROUPS]
        print(f"| {ref} | " + " | ".join(cells) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.srl_hidden_agent")
