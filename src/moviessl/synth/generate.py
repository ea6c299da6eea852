"""``generate(out, preset, seed)``: write a whole SynthMovies dataset in the released layouts.

Plans (all generating variables, all annotations) are drawn in the parent process from seeded
streams, so annotation bytes depend only on (preset, seed); videos are rendered and encoded by a
process pool (each job has its own seed and single-threaded x264, so frame content is identical
whatever the pool size). Re-running into the same folder resumes: finished videos are kept.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import numbers
import os
import string
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..data.lvu import LVU_TASKS
from ..errors import BadInputError
from ..scheduler import _die_with_parent
from ..utils import progress as job_progress
from ..utils.io import atomic_write_json, atomic_write_text, ensure_out_dir
from . import plot as P
from . import render as R
from . import world as W

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SynthPreset:
    size: int = 112  # frame side (square), pixels; even
    fps: float = 30.0
    n_actions: int = 900  # single-event action clips ("Kinetics")
    action_durations: tuple = (2.0, 2.5, 3.0)
    action_val_every: int = 5  # every 5th action clip goes to val
    n_vidsitu_train: int = 240  # 10-s VidSitu-style clips
    n_vidsitu_valid: int = 60
    degrade_fraction: float = 0.2  # VidSitu events that only context can recover
    n_lvu: int = 30  # LVU-style long movies
    lvu_seconds: tuple = (60, 90)
    lvu_degrade_fraction: float = 0.1
    lvu_split: tuple = (0.6, 0.2, 0.2)  # train / val / test
    crf: int = 23
    x264_preset: str = "ultrafast"
    workers: int = 2
    # -- the structure of real data each level of the hierarchy relies on (docs/synthmovies.md,
    # "Structure knobs"); 0 turns a knob off and leaves the data exactly as without it
    action_repeat_s: float = 0.0  # action clips last this long (K400: 10 s), the action repeated; 0: one event
    verb_context_p: float = 0.0  # share of events with their verb's prop cue (+ studio, in action clips)
    hidden_agent_p: float = 0.0  # share of clean movie events whose agent is only a silhouette
    pool_ratio: float = 0.0  # unlabelled movie clips for TxE pretraining, in labelled VidSitu train events
    action_film_p: float = 0.0  # share of action clips filmed like movie shots (scene, cast, camera), not in a studio
    scene_fixtures: int = 0  # pieces of its class's furniture in every scene instance (room), each placed its own way
    # -- rendering only
    action_size: int = 0  # action clips' frame side (0: size); the backbone reads 64 px anyway
    pool_size: int = 0  # the pool's frame side (0: size)


PRESETS: dict[str, SynthPreset] = {
    # tests: seconds on one core; LVU movies are shortened to 20-24 s (documented)
    "tiny": SynthPreset(
        size=64,
        n_actions=24,
        action_durations=(2.0,),
        n_vidsitu_train=8,
        n_vidsitu_valid=4,
        n_lvu=3,
        lvu_seconds=(20, 24),
        workers=1,
    ),
    # make demo: the structure knobs on (docs/synthmovies.md); clips only the backbone reads at 64 px
    "demo": SynthPreset(
        action_repeat_s=10.0,
        verb_context_p=0.5,
        hidden_agent_p=0.3,
        pool_ratio=4.6,
        action_size=64,
        pool_size=64,
    ),
    # the demo's control: every structure knob at 0 (same rendering)
    "demo_control": SynthPreset(action_size=64, pool_size=64),
    # real experiments
    "large": SynthPreset(
        size=128,
        n_actions=20000,
        n_vidsitu_train=6000,
        n_vidsitu_valid=1000,
        n_lvu=600,
        lvu_seconds=(60, 180),
        x264_preset="veryfast",
    ),
}

_YID_ALPHABET = string.ascii_letters + string.digits + "-_"


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _job_seed(seed: int, *stream: int) -> int:
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0])


def _youtube_id(rng) -> str:
    return "".join(rng.choice(list(_YID_ALPHABET), 11))


# ------------------------------------------------------------------------------------------
# Worker
# ------------------------------------------------------------------------------------------


def _render_job(job: dict) -> tuple[str, int]:
    path = Path(job["path"])
    boxes = R.encode_video(
        path,
        R.render_plan(job["plan"], job["size"], job["fps"], job["seed"]),
        job["fps"],
        job["size"],
        crf=job["crf"],
        preset=job["x264"],
    )
    if job.get("tracks"):
        atomic_write_json(
            job["tracks"], _tracks(job["plan"], np.concatenate(boxes), job["fps"], job["size"], job["yid"]), indent=None
        )
    return job["path"], sum(len(b) for b in boxes)


def _tracks(plan: dict, boxes: np.ndarray, fps: float, size: int, yid: str) -> dict:
    """Per-second character boxes (LVU's instance pathway): the middle frame of every second. A hidden
    agent's silhouette gets a track of its own (id: characters + event index), as a tracker that cannot
    re-identify it would give it -- its character's id would say who the silhouette is."""
    frames_of = [int(round(ev["dur"] * fps)) for ev in plan["events"]]
    shot_of_frame = np.concatenate([[ev["shot"]] * n for ev, n in zip(plan["events"], frames_of)])
    event_of_frame = np.repeat(np.arange(len(frames_of)), frames_of)
    n_chars = boxes.shape[1]
    any_hidden = any(ev.get("hidden") for ev in plan["events"])  # without (the knob at 0): the file as before
    secs = []
    for t in range(int(len(boxes) / fps)):
        f = min(int((t + 0.5) * fps), len(boxes) - 1)
        vis = np.nonzero(boxes[f, :, 4] > 0)[0]
        k = int(event_of_frame[f])
        ev = plan["events"][k]
        hidden = ev["agent"] if ev.get("hidden") else None
        secs.append(
            dict(
                t=t,
                shot=int(shot_of_frame[f]),
                track_ids=[n_chars + k if c == hidden else int(c) for c in vis],
                boxes=[[round(float(v), 4) for v in boxes[f, c, :4]] for c in vis],
            )
        )
    return dict(
        youtube_id=yid,
        fps=fps,
        width=size,
        height=size,
        duration_s=len(boxes) / fps,
        box_format="x1,y1,x2,y2 normalised to [0,1]",
        track_id="character index, stable within the movie"
        + ("; a hidden agent's silhouette: characters + event index" if any_hidden else ""),
        seconds=secs,
    )


# ------------------------------------------------------------------------------------------
# Plans of every split
# ------------------------------------------------------------------------------------------


def plan_actions(cfg: SynthPreset, seed: int) -> list[dict]:
    rng = _rng(seed, 1)
    order = rng.permutation(cfg.n_actions) % len(W.VERBS)  # balanced classes
    out = []
    for i in range(cfg.n_actions):
        verb = W.VERB_IDS[order[i]]
        dur = float(rng.choice(cfg.action_durations))
        repeat = _rng(seed, 16, i) if cfg.action_repeat_s > 0 else None  # its own stream, as action_film_p's
        plan = P.plan_action_clip(rng, verb, dur, cfg.action_repeat_s, cfg.action_durations, repeat)
        P.add_structure(_rng(seed, 11, i), plan, cfg.verb_context_p)
        if cfg.action_film_p > 0:
            film = _rng(seed, 15, i)  # its own stream: 12 is the VidSitu clips' structure stream (10 + 2)
            if film.random() < cfg.action_film_p:
                P.film_action_clip(film, plan)
        if cfg.scene_fixtures > 0:  # its own stream (after filming: a filmed clip's room is furnished)
            P.furnish_scenes(_rng(seed, 31, i), plan, cfg.scene_fixtures)
        out.append(
            dict(
                name=f"act_{i:06d}",
                verb=verb,
                split="val" if i % cfg.action_val_every == cfg.action_val_every - 1 else "train",
                plan=plan,
            )
        )
    return out


def plan_vidsitu(cfg: SynthPreset, seed: int, stream: int = 2, want=None) -> list[dict]:
    rng = _rng(seed, stream)
    clips = []
    want = want or [("train", cfg.n_vidsitu_train), ("valid", cfg.n_vidsitu_valid)]
    for split, n in want:
        while sum(c["split"] == split for c in clips) < n:
            meta = P.plan_movie_meta(rng)
            chars = P.sample_characters(rng, meta["n_chars"])
            yid = _youtube_id(rng)
            movie = dict(
                yid=yid,
                duration=float(rng.integers(1500, 9000)),
                movie_name=f"Synth Movie {len(clips):04d}",
                imdb_id=f"tt9{rng.integers(0, 10**6):06d}",
                year_rel=1930 + 10 * meta["year"] + int(rng.integers(10)),
                upload_year=int(rng.integers(2008, 2021)),
                vid_uid=None,
                meta=meta,
            )
            start = int(rng.integers(0, 400))
            for _ in range(int(rng.integers(1, 4))):
                if sum(c["split"] == split for c in clips) >= n:
                    break
                plan = P.plan_vidsitu_clip(rng, meta, chars, cfg.degrade_fraction)
                P.add_structure(_rng(seed, 10 + stream, len(clips)), plan, cfg.verb_context_p, cfg.hidden_agent_p)
                if cfg.scene_fixtures > 0:
                    P.furnish_scenes(_rng(seed, 30 + stream, len(clips)), plan, cfg.scene_fixtures)
                vseg = f"v_{yid}_seg_{start}_{start + 10}"
                clips.append(
                    dict(
                        vseg=vseg,
                        split=split,
                        start=start,
                        movie=movie,
                        plan=plan,
                        vid_uid="".join(rng.choice(list("0123456789abcdef"), 32)),
                    )
                )
                start += 10 + int(rng.integers(0, 200))
    return clips


def plan_lvu(cfg: SynthPreset, seed: int) -> list[dict]:
    rng = _rng(seed, 3)
    movies = []
    # every split gets at least one movie once there are three
    n_val = max(1, int(round(cfg.n_lvu * cfg.lvu_split[1]))) if cfg.n_lvu >= 2 else 0
    n_test = max(1, int(round(cfg.n_lvu * cfg.lvu_split[2]))) if cfg.n_lvu >= 3 else 0
    n_train = cfg.n_lvu - n_val - n_test
    for i in range(cfg.n_lvu):
        dur = 2 * int(rng.integers(cfg.lvu_seconds[0] // 2, cfg.lvu_seconds[1] // 2 + 1))
        plan = P.plan_lvu_movie(rng, dur, cfg.lvu_degrade_fraction)
        P.add_structure(_rng(seed, 13, i), plan, cfg.verb_context_p, cfg.hidden_agent_p)
        if cfg.scene_fixtures > 0:
            P.furnish_scenes(_rng(seed, 33, i), plan, cfg.scene_fixtures)
        split = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
        movies.append(dict(yid=_youtube_id(rng), imdb_id=f"tt8{rng.integers(0, 10**6):06d}", split=split, plan=plan))
    return movies


def n_pool_clips(cfg: SynthPreset) -> int:
    """How many unlabelled clips the pool holds: ``pool_ratio`` x the labelled train clips."""
    return int(round(cfg.pool_ratio * cfg.n_vidsitu_train))


def plan_pool(cfg: SynthPreset, seed: int) -> list[dict]:
    """Unlabelled 10-s movie clips for TxE pretraining, ``pool_ratio`` x the labelled train events
    (the paper pretrains TxE on LVU, 4.6x VidSitu; §4.1). Drawn like the VidSitu clips, from their own
    movies and stream; no annotation is written."""
    n = n_pool_clips(cfg)
    return plan_vidsitu(cfg, seed, stream=4, want=[("pool", n)]) if n > 0 else []


# ------------------------------------------------------------------------------------------
# Annotation writers
# ------------------------------------------------------------------------------------------


def _verb_name(vid: str) -> str:
    return vid.rsplit(".", 1)[0].replace("_", " ")


def _annotator_record(clip: dict, ann_rng, j: int, evrels: list[str | None]) -> dict:
    """Annotator j's record of the clip (VidSitu vseg_ann format). j = 0 uses the canonical phrases;
    others paraphrase each character consistently within the record (so coreference holds)."""
    plan = clip["plan"]
    chars = plan["characters"]
    variant = [0 if j == 0 else int(ann_rng.choice(4, p=[0.6, 0.15, 0.15, 0.1])) for _ in chars]
    scene_v = 0 if j == 0 else int(ann_rng.integers(3))
    rec = {}
    for k, ev in enumerate(plan["events"]):
        v = W.VERB_BY_ID[ev["verb"]]
        arg_list, args = {}, {}
        for pos, (raw, kind) in enumerate(v.roles, start=1):
            if kind == "agent":
                phrase = W.character_phrase(chars[ev["agent"]], variant[ev["agent"]])
            elif kind in ("patient", "recipient"):
                phrase = W.character_phrase(chars[ev["patient"]], variant[ev["patient"]])
            elif kind == "object":
                phrase = ("the " if j == 0 or ann_rng.random() < 0.7 else "a ") + ev["object"]
            elif kind == "scene":
                phrase = W.SCENE_PHRASES[ev["scene"]][scene_v]
            else:
                phrase = ev[kind]
            arg_list[raw] = str(pos)
            args[raw] = phrase
        e = dict(
            vid_uid=clip["vid_uid"],
            vid_seg_int=clip["vseg"],
            Verb=_verb_name(ev["verb"]),
            VerbID=ev["verb"],
            Arg_List=arg_list,
            Args=args,
        )
        if evrels[k] is not None:
            e["EvRel"] = evrels[k]
        rec[f"Ev{k + 1}"] = e
    return rec


def _noisy_relation(rng, true: str, keep: float) -> str:
    if rng.random() < keep:
        return true
    return str(rng.choice([r for r in W.RELATION_LABELS if r != true]))


def write_vidsitu(root: Path, clips: list[dict], seed: int) -> dict:
    ann_root = root / "vidsitu_annotations"
    rng = _rng(seed, 22)
    gt, counts = {}, {}
    for split in ("train", "valid"):
        sc = [c for c in clips if c["split"] == split]
        atomic_write_json(
            ann_root / "split_files" / f"vseg_split_{split}_lb.json", [c["vseg"] for c in sc], indent=None
        )
        vinfo, records = [], []
        for c in sc:
            m = c["movie"]
            info = dict(
                vid_uid=c["vid_uid"],
                genres=c["plan"]["genre"].replace("-", ", "),
                duration=m["duration"],
                name=m["yid"],
                text=f"{m['movie_name']} ({m['year_rel']}): a {c['plan']['genre'].lower()} with "
                f"{len(c['plan']['characters'])} characters.",
                start=float(c["start"]),
                end=float(c["start"] + 10),
                vid_seg_int=c["vseg"],
                movie_name=m["movie_name"],
                upload_year=m["upload_year"],
                clip_name=f"{m['movie_name']} - clip {c['start']}",
                imdb_id=m["imdb_id"],
                year_rel=m["year_rel"],
            )
            events = c["plan"]["events"]
            true_rel = [ev.get("relation") for ev in events]
            if split == "train":
                rels = [None if r is None else _noisy_relation(rng, r, 0.9) for r in true_rel]
                records.append(_annotator_record(c, rng, 0, rels))
            else:
                vb_lst, vbid_lst = {}, {}
                for k, ev in enumerate(events):
                    # 10 annotators: the true verb is the plurality (5-9 votes), near-synonyms the rest
                    n_true = int(rng.integers(5, 10))
                    syn = W.VERB_BY_ID[ev["verb"]].syn
                    ids = [ev["verb"]] * n_true + [str(rng.choice(syn)) for _ in range(10 - n_true)]
                    ids = [ids[i] for i in rng.permutation(10)]
                    vbid_lst[f"Ev{k + 1}"] = ids
                    vb_lst[f"Ev{k + 1}"] = [_verb_name(i) for i in ids]
                info.update(
                    vb_lst=vb_lst,
                    vbid_lst=vbid_lst,
                    vb_to_use={f"Ev{k + 1}": ev["verb"] for k, ev in enumerate(events)},
                )
                # 3 SRL/relation annotators; about 1 pair in 12 is a three-way disagreement (masked)
                per_ann = [[None if r is None else _noisy_relation(rng, r, 0.85) for r in true_rel] for _ in range(3)]
                for k, r in enumerate(true_rel):
                    if r is not None and rng.random() < 0.08:
                        three = [r] + [
                            str(x) for x in rng.choice([x for x in W.RELATION_LABELS if x != r], 2, replace=False)
                        ]
                        for j in range(3):
                            per_ann[j][k] = three[j]
                for j in range(3):
                    records.append(_annotator_record(c, rng, j, per_ann[j]))
            vinfo.append(info)
            gt[c["vseg"]] = dict(
                split=split,
                youtube_id=c["movie"]["yid"],
                **{k: c["plan"][k] for k in ("genre", "writer", "director")},
                year=c["plan"]["year_style"]["year"],
                scene=events[0]["scene"],
                characters=c["plan"]["characters"],
                events=events,
                shots=c["plan"]["shots"],
                year_style=c["plan"]["year_style"],
            )
        atomic_write_json(ann_root / "vinfo_files" / f"vinfo_{split}_lb.json", vinfo, indent=None)
        atomic_write_json(ann_root / "vseg_ann_files" / f"vsann_{split}_lb.json", records, indent=None)
        counts[split] = len(sc)
    atomic_write_json(root / "ground_truth.json", gt, indent=None)
    return counts


LVU_CLASS_NAMES = {
    "relationship": W.RELATIONSHIPS,
    "way_speaking": W.WAYS_SPEAKING,
    "scene": W.SCENES,
    "director": W.DIRECTOR_NAMES,
    "writer": W.WRITER_NAMES,
    "year": W.YEARS,
    "genre": W.GENRES,
}


def write_lvu(root: Path, movies: list[dict]) -> dict:
    for task in LVU_TASKS:
        for split in ("train", "val", "test"):
            lines = [LVU_TASKS[task]["header"]]
            for m in movies:
                if m["split"] != split:
                    continue
                lab = m["plan"]["labels"][task]
                if LVU_TASKS[task]["type"] == "regression":
                    fields = list(lab) if isinstance(lab, (list, tuple)) else [lab]
                else:
                    fields = [lab, LVU_CLASS_NAMES[task][lab]]
                lines.append(" ".join(str(f) for f in [*fields, m["yid"], m["imdb_id"]]))
            atomic_write_text(root / "lvu_1.0" / task / f"{split}.csv", "\n".join(lines) + "\n")
    gt = {m["yid"]: dict(split=m["split"], imdb_id=m["imdb_id"], **m["plan"]) for m in movies}
    atomic_write_json(root / "ground_truth.json", gt, indent=None)
    return Counter(m["split"] for m in movies)


def write_actions(root: Path, actions: list[dict]) -> dict:
    atomic_write_json(root / "classes.json", list(W.VERB_IDS))
    for split in ("train", "val"):
        lines = [f"videos/{a['name']}.mp4 {W.VERB_INDEX[a['verb']]}" for a in actions if a["split"] == split]
        atomic_write_text(root / f"{split}.csv", "\n".join(lines) + ("\n" if lines else ""))
    atomic_write_json(
        root / "ground_truth.json",
        {a["name"]: dict(split=a["split"], verb=a["verb"], **a["plan"]) for a in actions},
        indent=None,
    )
    return Counter(a["split"] for a in actions)


# ------------------------------------------------------------------------------------------
# README
# ------------------------------------------------------------------------------------------


def _hist(counter: Counter, keys=None, width=30) -> list[str]:
    keys = list(keys) if keys is not None else sorted(counter)
    top = max([counter.get(k, 0) for k in keys] + [1])
    return [
        f"    {str(k):<28} {counter.get(k, 0):>6}  {'#' * int(round(width * counter.get(k, 0) / top))}" for k in keys
    ]


def write_readme(root: Path, preset: str, seed: int, cfg: SynthPreset, actions, clips, movies) -> None:
    L = [
        f"# SynthMovies ({preset}, seed {seed})",
        "",
        "Generated by `moviessl synth`; see moviessl's docs/synthmovies.md for the world, the plot grammar and the",
        "file formats. Everything here is synthetic; ground_truth.json files hold the generating variables.",
        "",
        f"- frames {cfg.size}x{cfg.size} at {cfg.fps:g} fps, H.264 (crf {cfg.crf}, {cfg.x264_preset})",
        f"- action clips: {len(actions)} ({sum(a['split'] == 'train' for a in actions)} train / "
        f"{sum(a['split'] == 'val' for a in actions)} val), {len(W.VERBS)} verb classes",
        f"- VidSitu-style clips: {sum(c['split'] == 'train' for c in clips)} train / "
        f"{sum(c['split'] == 'valid' for c in clips)} valid "
        f"from {len({c['movie']['yid'] for c in clips})} movies; degraded events: "
        f"{sum(ev['degraded'] is not None for c in clips for ev in c['plan']['events'])} of {5 * len(clips)}",
        f"- LVU-style movies: {len(movies)} "
        f"({', '.join(f'{s} {n}' for s, n in Counter(m['split'] for m in movies).items())}), "
        f"{sum(len(m['plan']['events']) * 2 for m in movies) / 60:.1f} min in total",
        "",
        "```",
    ]
    L.append("action clips per verb:")
    L += _hist(Counter(a["verb"] for a in actions), W.VERB_IDS)
    for split in ("train", "valid"):
        evs = [ev for c in clips if c["split"] == split for ev in c["plan"]["events"]]
        L.append(f"VidSitu {split} events per verb:")
        L += _hist(Counter(ev["verb"] for ev in evs), W.VERB_IDS)
        L.append(f"VidSitu {split} relations to Ev3 (true, before annotator noise):")
        L += _hist(Counter(ev["relation"] for ev in evs if ev.get("relation")), W.RELATION_LABELS)
        L.append(f"VidSitu {split} degradations:")
        L += _hist(Counter(ev["degraded"] or "none" for ev in evs), ("none",) + P.DEGRADATIONS)
    for task, names in LVU_CLASS_NAMES.items():
        L.append(f"LVU {task}:")
        L += _hist(Counter(names[m["plan"]["labels"][task]] for m in movies), names)
    like = [10 * m["plan"]["labels"]["like_ratio"][0] / sum(m["plan"]["labels"]["like_ratio"]) for m in movies]
    views = [np.log(m["plan"]["labels"]["view_count"]) for m in movies]
    if movies:
        L.append(f"LVU like_ratio (10*like/(like+dislike)): mean {np.mean(like):.3f} sd {np.std(like):.3f}")
        L.append(f"LVU log(view_count): mean {np.mean(views):.3f} sd {np.std(views):.3f}")
    L.append("```")
    atomic_write_text(root / "README.md", "\n".join(L) + "\n")


def rendered_megapixels(cfg: SynthPreset) -> float:
    """The pixel-frames a preset renders and encodes, in millions, on average over its draws: action
    clips (at ``action_size``), VidSitu's 10-s clips, LVU's movies and the pool (at ``pool_size``).
    Rendering and x264 scale with it, so it prices a generation job for a time-left estimate."""
    action_s = cfg.action_repeat_s or sum(cfg.action_durations) / len(cfg.action_durations)
    lvu_s = cfg.lvu_seconds[0] // 2 + cfg.lvu_seconds[1] // 2  # the mean of plan_lvu's even lengths
    clip_s = 10.0  # a VidSitu or pool clip: 5 events of 2 s (plot.plan_vidsitu_clip)
    n_pool = n_pool_clips(cfg)
    px = cfg.size**2
    frames_px = (
        cfg.n_actions * action_s * (cfg.action_size or cfg.size) ** 2
        + (cfg.n_vidsitu_train + cfg.n_vidsitu_valid) * clip_s * px
        + cfg.n_lvu * lvu_s * px
        + n_pool * clip_s * (cfg.pool_size or cfg.size) ** 2
    )
    return frames_px * cfg.fps / 1e6


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------


def describe(root: str | os.PathLike) -> str:
    """A SynthMovies folder in one line for a report: its path, preset and seed, and every knob its
    ``synth_meta.json`` sets beyond that preset (a demo on ``--synth`` with ``scene_fixtures=6`` says so;
    a folder generated before a knob existed lacks it, and its default is off). A folder without
    readable metadata is named by its path alone."""
    try:
        meta = json.loads((Path(root) / "synth_meta.json").read_text())
        preset, seed, config = meta["preset"], meta["seed"], dict(meta["config"])
        base = PRESETS.get(preset)  # inside: a damaged file's preset may be unhashable (a list)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return str(root)
    ref = json.loads(json.dumps(asdict(base))) if base else {}  # tuples -> lists, as the metadata holds them
    beyond = [f"{k}={v}" for k, v in config.items() if k in ref and ref[k] != v]
    return f"{root} (SynthMovies preset `{preset}`, seed {seed}" + (
        f"; beyond the preset: {', '.join(beyond)})" if beyond else ")"
    )


def resolve_preset(preset: str | SynthPreset, **overrides) -> SynthPreset:
    if isinstance(preset, SynthPreset):
        cfg = preset
    elif preset in PRESETS:
        cfg = PRESETS[preset]
    else:
        raise BadInputError(None, f"unknown synth preset '{preset}' (choose from {', '.join(PRESETS)})")
    cfg = replace(cfg, **overrides) if overrides else cfg
    if cfg.size % 2 or cfg.size < 32:
        raise BadInputError(None, f"synth size must be even and >= 32, got {cfg.size}")
    for knob in ("degrade_fraction", "lvu_degrade_fraction", "verb_context_p", "hidden_agent_p", "action_film_p"):
        v = getattr(cfg, knob)  # shares: outside [0, 1] (e.g. a percentage) would silently act as 0 or 1
        if not (isinstance(v, numbers.Real) and 0.0 <= v <= 1.0):
            raise BadInputError(None, f"synth {knob} must be a share in [0, 1], got {v}")
    v = cfg.scene_fixtures
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v <= 64:
        raise BadInputError(None, f"synth scene_fixtures must be a whole number in [0, 64], got {v!r}")
    for knob in ("pool_ratio", "action_repeat_s"):
        v = getattr(cfg, knob)
        if not (isinstance(v, numbers.Real) and 0.0 <= v < float("inf")):
            raise BadInputError(None, f"synth {knob} must be a finite number >= 0, got {v}")
    for knob in ("action_size", "pool_size"):  # 0: the frame size; else the same rule (x264's 4:2:0 wants even)
        v = getattr(cfg, knob)
        if v and (v % 2 or v < 32):
            raise BadInputError(None, f"synth {knob} must be 0 or even and >= 32, got {v}")
    # the other fields (Python API only): each ended in a traceback deep in the plans or the encoder
    # (ZeroDivisionError, NaN to int, "a cannot be empty") or silently made an empty split
    for knob in ("n_actions", "n_vidsitu_train", "n_vidsitu_valid", "n_lvu"):
        v = getattr(cfg, knob)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise BadInputError(None, f"synth {knob} must be a whole number >= 0, got {v!r}")
    v = cfg.action_val_every
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise BadInputError(None, f"synth action_val_every must be a whole number >= 1, got {v!r}")
    # the encoder writes a whole frame rate (int(round(fps))): another rate would not be the plans' timing
    if not (isinstance(cfg.fps, numbers.Real) and 0 < cfg.fps < float("inf") and float(cfg.fps).is_integer()):
        raise BadInputError(None, f"synth fps must be a whole number of frames per second > 0, got {cfg.fps!r}")
    durs = cfg.action_durations
    if not (
        isinstance(durs, (tuple, list))
        and durs
        and all(isinstance(d, numbers.Real) and 0 < d < float("inf") for d in durs)
    ):
        raise BadInputError(None, f"synth action_durations must be one or more durations > 0 s, got {durs!r}")
    lvu = cfg.lvu_seconds  # a movie is 2-s events: its length is drawn among the even seconds in this range
    if not (
        isinstance(lvu, (tuple, list))
        and len(lvu) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in lvu)
        and 2 <= lvu[0] <= lvu[1]
    ):
        raise BadInputError(None, f"synth lvu_seconds must be two whole seconds 2 <= shortest <= longest, got {lvu!r}")
    if 0 < cfg.action_repeat_s * cfg.fps < 1:  # an action clip of no frame
        raise BadInputError(None, f"synth action_repeat_s must be 0 or at least one frame, got {cfg.action_repeat_s}")
    return cfg


def generate(
    out: str | os.PathLike,
    preset: str | SynthPreset = "tiny",
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    **overrides,
) -> Path:
    """Write a SynthMovies dataset to ``out`` (see the layout in docs/design.md) and return ``out``.

    ``preset`` is "tiny" (tests, seconds), "demo" (make demo, <= 2 min on 2 cores) or "large", or a
    :class:`SynthPreset`; keyword ``overrides`` replace preset fields (e.g. ``degrade_fraction=0.5``).
    Deterministic for (preset, overrides, seed). Resumes an interrupted run into the same folder.
    """
    cfg = resolve_preset(preset, **overrides)
    # numpy's seeded streams take only non-negative integers; checked before the folder is touched
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise BadInputError(None, f"synth seed must be an integer >= 0, got {seed!r}")
    name = preset if isinstance(preset, str) else "custom"
    root = Path(out)
    workers = cfg.workers if workers is None else workers
    config = {k: v for k, v in asdict(cfg).items() if k != "workers"}  # the pool size does not change the data
    meta = dict(
        format_version=FORMAT_VERSION,
        preset=name,
        seed=int(seed),
        config=config,
        fps=cfg.fps,
        size=cfg.size,
        verbs=list(W.VERB_IDS),
    )
    meta = json.loads(json.dumps(meta))  # tuples -> lists, as read back
    meta_path = ensure_out_dir(root) / "synth_meta.json"
    from ..features.extract import run_lock  # (torch with it: only once the settings are checked)

    # one run per folder: a second one into a folder being written took it for a killed run's and
    # removed the first one's videos in flight, which then died on its missing temporary file
    with run_lock(root):
        return _generate(root, meta, meta_path, cfg, name, seed, workers, progress)


def action_render_jobs(cfg: SynthPreset, seed: int, actions: list[dict], videos: Path) -> list[dict]:
    """The render jobs of :func:`plan_actions`' clips (``_render_job``'s arguments), written to
    ``videos``; each clip's render seed follows its index, so a re-planned copy renders alike."""
    common = dict(size=cfg.action_size or cfg.size, fps=cfg.fps, crf=cfg.crf, x264=cfg.x264_preset)
    return [
        dict(path=str(videos / f"{a['name']}.mp4"), plan=a["plan"], seed=_job_seed(seed, 1, i), **common)
        for i, a in enumerate(actions)
    ]


def _generate(
    root: Path, meta: dict, meta_path: Path, cfg: SynthPreset, name: str, seed: int, workers: int, progress: bool
) -> Path:
    """:func:`generate`'s work, under the folder's job lock."""
    from ..features.store import JOB_LOCK

    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise BadInputError(meta_path, f"unreadable ({e})") from None
        if not isinstance(old, dict):
            raise BadInputError(meta_path, f"expected a JSON object, got {type(old).__name__}")
        keys = ("format_version", "seed", "config")  # the pool size is not part of the data
        # a knob added later is absent from older folders' config; its default (0: off) leaves the
        # data as they were, so such a folder is the same data and can be resumed
        defaults = json.loads(json.dumps(asdict(SynthPreset())))
        if isinstance(old.get("config"), dict):
            old["config"] = {**{k: defaults[k] for k in meta["config"] if k in defaults}, **old["config"]}
        same = {k: old.get(k) for k in keys} == {k: meta[k] for k in keys}
        if not same:
            raise BadInputError(root, "already holds SynthMovies of another preset/seed/version; use an empty folder")
        # a killed run's writers' temporary videos (each writer names its own, so no rerun replaces them)
        for t in root.rglob(".*.tmp.mp4"):
            t.unlink(missing_ok=True)
    elif any(p.name != JOB_LOCK for p in root.iterdir()):
        raise BadInputError(root, "folder is not empty and holds no synth_meta.json; use an empty folder")
    atomic_write_json(meta_path, dict(meta, status="incomplete"))

    actions, clips, movies = plan_actions(cfg, seed), plan_vidsitu(cfg, seed), plan_lvu(cfg, seed)
    pool_clips = plan_pool(cfg, seed)
    common = dict(size=cfg.size, fps=cfg.fps, crf=cfg.crf, x264=cfg.x264_preset)
    jobs = [
        dict(
            path=str(root / "lvu" / "videos" / f"{m['yid']}.mp4"),
            plan=m["plan"],
            seed=_job_seed(seed, 3, i),
            yid=m["yid"],
            tracks=str(root / "lvu" / "tracks" / f"{m['yid']}.json"),
            **common,
        )
        for i, m in enumerate(movies)
    ]
    jobs += [
        dict(
            path=str(root / "vidsitu" / "vsitu_video_trimmed_dir" / f"{c['vseg']}.mp4"),
            plan=c["plan"],
            seed=_job_seed(seed, 2, i),
            **common,
        )
        for i, c in enumerate(clips)
    ]
    jobs += action_render_jobs(cfg, seed, actions, root / "actions" / "videos")
    jobs += [
        dict(
            path=str(root / "pool" / "videos" / f"{c['vseg']}.mp4"),
            plan=c["plan"],
            seed=_job_seed(seed, 4, i),
            **{**common, "size": cfg.pool_size or cfg.size},
        )
        for i, c in enumerate(pool_clips)
    ]
    todo = [j for j in jobs if not (Path(j["path"]).exists() and (not j.get("tracks") or Path(j["tracks"]).exists()))]
    n_frames = lambda j: sum(round(ev["dur"] * cfg.fps) for ev in j["plan"]["events"])  # noqa: E731
    total = sum(n_frames(j) for j in todo)
    if len(todo) < len(jobs):
        log.info("resuming: %d of %d videos already written", len(jobs) - len(todo), len(jobs))

    from ..utils.progress import bar as tqdm

    bar = tqdm(total=total, unit="frame", unit_scale=True, desc=f"synth {name}", disable=not progress, smoothing=0.1)
    # the scheduler's time left (nothing outside a scheduled job): frames of every video, those an
    # earlier run wrote done from the start, so a resumed job's first report says how far it was
    whole = sum(n_frames(j) for j in jobs)
    done = whole - total
    job_progress.report(done, whole)

    def rendered(n: int) -> None:
        nonlocal done
        done += n
        bar.update(n)
        job_progress.report(done, whole)

    try:
        if workers <= 1 or len(todo) <= 1:
            for j in todo:
                rendered(_render_job(j)[1])
        else:
            # fork where there is one: workers need only numpy + PyAV, and spawn would re-run the
            # parent's __main__ (breaks for `python -`, notebooks)
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            # workers end with this process (Linux): a killed run leaves none rendering on beside a rerun
            with ctx.Pool(workers, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
                for _, n in pool.imap_unordered(_render_job, todo, chunksize=1):
                    rendered(n)
    finally:
        bar.close()

    counts = dict(
        actions=dict(write_actions(root / "actions", actions)),
        vidsitu=write_vidsitu(root / "vidsitu", clips, seed),
        lvu=dict(write_lvu(root / "lvu", movies)),
    )
    if pool_clips:
        gt = {c["vseg"]: c["plan"] for c in pool_clips}
        atomic_write_json(root / "pool" / "ground_truth.json", gt, indent=None)
        counts["pool"] = {"clips": len(pool_clips), "events": sum(len(c["plan"]["events"]) for c in pool_clips)}
    write_readme(root, name, seed, cfg, actions, clips, movies)
    atomic_write_json(meta_path, dict(meta, status="complete", counts=counts))
    return root
