"""SynthMovies: layout, exact schemas (vidsitu.md / lvu.md), determinism, resume, and that context
(not pixels) is what recovers degraded events."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from moviessl.cli import main as cli_main
from moviessl.data.cliplist import read_clip_list
from moviessl.data.lvu import LVU_TASKS, read_labels
from moviessl.errors import BadInputError
from moviessl.synth import SynthPreset, generate, plot, render_clip
from moviessl.synth import world as W
from moviessl.synth.render import render_plan

VINFO_KEYS = {
    "vid_uid",
    "genres",
    "duration",
    "name",
    "text",
    "start",
    "end",
    "vid_seg_int",
    "movie_name",
    "upload_year",
    "clip_name",
    "imdb_id",
    "year_rel",
}
EVENT_KEYS = {"vid_uid", "vid_seg_int", "Verb", "VerbID", "Arg_List", "Args"}
EVS = [f"Ev{k}" for k in range(1, 6)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "tiny", "tiny", seed=0, progress=False)


def _decode(path):
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        rate = float(c.streams.video[0].average_rate)
    return np.stack(frames), rate


def _arg_mapper(raw):
    try:
        from moviessl.data.vidsitu import arg_mapper

        return arg_mapper(raw)
    except ImportError:  # reader not there yet: the rules of vidsitu.md 2.4
        if raw == "Scene of the Event":
            return "AScn"
        tok = raw.split()[0]
        if re.fullmatch(r"Arg[0-5]", tok):
            return tok
        for key, short in (
            ("direction", "ADir"),
            ("purpose", "APrp"),
            ("manner", "AMnr"),
            ("location", "ALoc"),
            ("goal", "AGol"),
        ):
            if tok == "ArgM" and key in raw:
                return short
        raise ValueError(raw)


def test_layout_and_counts(tiny):
    meta = json.loads((tiny / "synth_meta.json").read_text())
    assert meta["status"] == "complete" and meta["preset"] == "tiny" and meta["seed"] == 0
    assert meta["counts"]["vidsitu"] == {"train": 8, "valid": 4}
    assert sum(meta["counts"]["actions"].values()) == 24 and sum(meta["counts"]["lvu"].values()) == 3
    readme = (tiny / "README.md").read_text()
    assert "8 train / 4 valid" in readme and "LVU genre:" in readme and "action clips per verb:" in readme
    for sub in ("actions/videos", "vidsitu/vsitu_video_trimmed_dir", "lvu/videos", "lvu/tracks"):
        assert any((tiny / sub).iterdir()), sub
    assert not list(tiny.rglob(".*.tmp*")), "temporary files left behind"


def test_vidsitu_videos_decode_as_10s_30fps(tiny):
    split = json.loads((tiny / "vidsitu/vidsitu_annotations/split_files/vseg_split_valid_lb.json").read_text())
    frames, rate = _decode(tiny / "vidsitu/vsitu_video_trimmed_dir" / f"{split[0]}.mp4")
    assert frames.shape == (300, 64, 64, 3) and rate == 30
    assert frames.std() > 10  # not blank


def test_vidsitu_schema(tiny):
    ann = tiny / "vidsitu" / "vidsitu_annotations"
    gt = json.loads((tiny / "vidsitu/ground_truth.json").read_text())
    for split, n_rec in (("train", 1), ("valid", 3)):
        ids = json.loads((ann / f"split_files/vseg_split_{split}_lb.json").read_text())
        assert isinstance(ids, list) and all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids)
        for vseg in ids:
            yid, _, bounds = vseg[2:].rpartition("_seg_")
            s, e = map(int, bounds.split("_"))
            assert vseg.startswith("v_") and len(yid) == 11 and e == s + 10
            assert (tiny / "vidsitu/vsitu_video_trimmed_dir" / f"{vseg}.mp4").is_file()
        vinfo = json.loads((ann / f"vinfo_files/vinfo_{split}_lb.json").read_text())
        assert [v["vid_seg_int"] for v in vinfo] == ids
        records = json.loads((ann / f"vseg_ann_files/vsann_{split}_lb.json").read_text())
        by_seg: dict[str, list] = {}
        for r in records:
            assert set(r) == set(EVS)
            by_seg.setdefault(r["Ev1"]["vid_seg_int"], []).append(r)
        assert set(by_seg) == set(ids) and all(len(v) == n_rec for v in by_seg.values())
        for info in vinfo:
            vseg = info["vid_seg_int"]
            assert (
                VINFO_KEYS <= set(info)
                and info["end"] - info["start"] == 10
                and info["name"] == vseg[2:].rpartition("_seg_")[0]
            )
            true_verbs = [ev["verb"] for ev in gt[vseg]["events"]]
            if split == "valid":
                assert set(info["vb_lst"]) == set(info["vbid_lst"]) == set(info["vb_to_use"]) == set(EVS)
                for k, ev in enumerate(EVS):
                    ids10 = info["vbid_lst"][ev]
                    assert len(ids10) == 10 and all(re.fullmatch(r"[a-z_]+\.\d\d", v) for v in ids10)
                    assert len(info["vb_lst"][ev]) == 10
                    assert Counter(ids10).most_common(1)[0][0] == info["vb_to_use"][ev] == true_verbs[k]
            else:
                assert "vbid_lst" not in info
            for rec in by_seg[vseg]:
                phrase_of = {}  # coreference: one phrase per character within a record
                for k, ev in enumerate(EVS):
                    e = rec[ev]
                    assert EVENT_KEYS <= set(e) and e["vid_seg_int"] == vseg and e["vid_uid"] == info["vid_uid"]
                    assert e["VerbID"] == true_verbs[k] and e["Verb"] == true_verbs[k].split(".")[0]
                    assert ("EvRel" in e) == (ev != "Ev3")
                    if ev != "Ev3":
                        assert e["EvRel"] in W.RELATION_LABELS
                    assert set(e["Args"]) == set(e["Arg_List"])
                    assert sorted(int(p) for p in e["Arg_List"].values()) == list(range(1, len(e["Args"]) + 1))
                    shorts = [_arg_mapper(r) for r in e["Args"]]
                    assert "AScn" in shorts and ("Arg0" in shorts or "Arg1" in shorts)
                    g = gt[vseg]["events"][k]
                    for raw, kind in W.VERB_BY_ID[e["VerbID"]].roles:
                        if kind in ("agent", "patient", "recipient"):
                            c = g["agent"] if kind == "agent" else g["patient"]
                            assert phrase_of.setdefault(c, e["Args"][raw]) == e["Args"][raw]
                if split == "valid":  # all 3 records share verbs and therefore role keys
                    assert [set(rec[ev]["Args"]) for ev in EVS] == [set(by_seg[vseg][0][ev]["Args"]) for ev in EVS]


def test_vidsitu_reader_loads_output(tiny):
    vidsitu = pytest.importorskip("moviessl.data.vidsitu")
    for split, n in (("train", 8), ("valid", 4)):
        sp = vidsitu.load_split(tiny / "vidsitu" / "vidsitu_annotations", split)
        assert len(sp.vseg_ids) == n and all(len(sp.records[v]) == (1 if split == "train" else 3) for v in sp.vseg_ids)


def test_relations_follow_the_plot():
    rng = np.random.default_rng(1)
    labels = Counter()
    for _ in range(300):
        meta = plot.plan_movie_meta(rng)
        p = plot.plan_vidsitu_clip(rng, meta, plot.sample_characters(rng, meta["n_chars"]), 0.0)
        ev = p["events"]
        assert "relation" not in ev[2]
        for k in (0, 1, 3, 4):
            a, b = (ev[k], ev[2]) if k < 2 else (ev[2], ev[k])
            assert ev[k]["relation"] == W.relation(a, b)
            if ev[k]["relation"] != "NoRel":
                rule = W.RELATIONS[(a["verb"], b["verb"])]
                assert b["agent"] == (a["agent"] if rule[1] == "A" else a["patient"])
            labels[ev[k]["relation"]] += 1
    assert all(labels[r] > 40 for r in W.RELATION_LABELS), labels  # every class well represented
    assert labels["NoRel"] < 0.7 * sum(labels.values())


def test_valid_has_some_no_majority_pairs(tmp_path):
    root = generate(
        tmp_path / "s",
        SynthPreset(size=32, n_actions=0, n_vidsitu_train=1, n_vidsitu_valid=40, n_lvu=0, workers=1),
        progress=False,
    )
    recs = json.loads((root / "vidsitu/vidsitu_annotations/vseg_ann_files/vsann_valid_lb.json").read_text())
    by = {}
    for r in recs:
        by.setdefault(r["Ev1"]["vid_seg_int"], []).append(r)
    n3 = sum(len({r[ev]["EvRel"] for r in rs}) == 3 for rs in by.values() for ev in ("Ev1", "Ev2", "Ev4", "Ev5"))
    n1 = sum(len({r[ev]["EvRel"] for r in rs}) == 1 for rs in by.values() for ev in ("Ev1", "Ev2", "Ev4", "Ev5"))
    assert 1 <= n3 < 40 and n1 > 80  # mostly agreement, a few masked (1-1-1) pairs


def test_lvu_schema(tiny):
    lvu = tiny / "lvu"
    gt = json.loads((lvu / "ground_truth.json").read_text())
    splits = Counter(g["split"] for g in gt.values())
    assert splits == {"train": 1, "val": 1, "test": 1}
    for task, spec in LVU_TASKS.items():
        for split in ("train", "val", "test"):
            lines = (lvu / "lvu_1.0" / task / f"{split}.csv").read_text().splitlines()
            assert lines[0] == spec["header"]
            rows = read_labels(lvu, task, split)
            assert len(rows) == len(lines) - 1 == splits[split]
            for (yid, label), line in zip(rows, lines[1:]):
                f = line.split()
                assert f[-2] == yid and f[-1].startswith("tt") and gt[yid]["split"] == split
                if spec["type"] == "classification":
                    assert label == gt[yid]["labels"][task] and 0 <= label < spec["num_classes"] and len(f) == 4
                elif task == "like_ratio":
                    like, dislike = gt[yid]["labels"][task]
                    assert label == pytest.approx(10 * like / (like + dislike) - 9.138220535629456)
                else:
                    assert label == pytest.approx(np.log(gt[yid]["labels"][task]) - 11.76425435683139)
    for yid, g in gt.items():
        tr = json.loads((lvu / "tracks" / f"{yid}.json").read_text())
        frames, rate = _decode(lvu / "videos" / f"{yid}.mp4")
        n_sec = len(g["events"]) * 2
        assert len(frames) == n_sec * 30 and len(tr["seconds"]) == n_sec and 20 <= n_sec <= 24
        vis = 0
        for s in tr["seconds"]:
            assert len(s["boxes"]) == len(s["track_ids"]) and set(s["track_ids"]) <= set(range(len(g["characters"])))
            for b in s["boxes"]:
                assert 0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1
            vis += len(s["boxes"])
        assert vis >= n_sec  # characters are on screen most of the time


def test_lvu_labels_come_from_visible_variables():
    rng = np.random.default_rng(5)
    for _ in range(20):
        m = plot.plan_lvu_movie(rng, 80)
        evs = m["events"]
        counts = Counter(ev["scene"] for ev in evs)
        assert counts[W.SCENES[m["labels"]["scene"]]] == max(counts.values())
        speech = Counter(ev["verb"] for ev in evs if ev["verb"] in W.SPEECH_VERBS)
        assert speech  # the way of speaking is on screen
        inter = [ev for ev in evs if {ev["agent"], ev["patient"]} == {0, 1}]
        assert len(inter) >= 3  # so is the relationship of the two main characters
    # and the labels name what is on screen: over 200 events, the labelled way of speaking's verb is
    # (mostly) the commonest speech verb, and the labelled relationship's verbs are (mostly) those of
    # the main pair's events more often than any other relationship's (genres' verbs blur single movies)
    way_ok = rel_ok = 0
    for _ in range(20):
        m = plot.plan_lvu_movie(rng, 400)
        evs, labels = m["events"], m["labels"]
        speech = Counter(ev["verb"] for ev in evs if ev["verb"] in W.SPEECH_VERBS)
        way_ok += speech.most_common(1)[0][0] == W.SPEAKING_VERB[W.WAYS_SPEAKING[labels["way_speaking"]]]
        inter = [ev["verb"] for ev in evs if {ev["agent"], ev["patient"]} == {0, 1}]
        score = {r: sum(v in W.REL_VERBS[r] for v in inter) for r in W.RELATIONSHIPS}
        want = W.RELATIONSHIPS[labels["relationship"]]
        rel_ok += score[want] > max(n for r, n in score.items() if r != want)
    assert way_ok >= 13 and rel_ok >= 13, (way_ok, rel_ok)


def test_actions_cliplist(tiny):
    classes = json.loads((tiny / "actions/classes.json").read_text())
    assert classes == list(W.VERB_IDS)
    gt = json.loads((tiny / "actions/ground_truth.json").read_text())
    seen = 0
    for split in ("train", "val"):
        for path, label in read_clip_list(tiny / "actions" / f"{split}.csv"):
            assert path.is_file() and gt[path.stem]["verb"] == classes[label] and gt[path.stem]["split"] == split
            seen += 1
    assert seen == 24
    frames, _ = _decode(next((tiny / "actions/videos").iterdir()))
    assert frames.shape[0] == 60


def test_deterministic_any_pool_size_and_resume(tmp_path):
    cfg = SynthPreset(
        size=32, n_actions=3, action_durations=(1.0,), n_vidsitu_train=2, n_vidsitu_valid=1, n_lvu=1, lvu_seconds=(6, 6)
    )
    a = generate(tmp_path / "a", cfg, seed=3, workers=1, progress=False)
    b = generate(tmp_path / "b", cfg, seed=3, workers=2, progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        if rel.suffix == ".mp4":
            assert np.array_equal(_decode(a / rel)[0], _decode(b / rel)[0]), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    c = generate(tmp_path / "c", cfg, seed=4, workers=1, progress=False)
    assert (c / "vidsitu/ground_truth.json").read_bytes() != (a / "vidsitu/ground_truth.json").read_bytes()
    # resume: a deleted video comes back identical, the others are not rewritten
    vid = next((a / "actions/videos").iterdir())
    other = sorted((a / "vidsitu/vsitu_video_trimmed_dir").iterdir())[0]
    before, mtime = vid.read_bytes(), other.stat().st_mtime_ns
    vid.unlink()
    orphan = vid.parent / f".{vid.stem}.k1ll3d.tmp.mp4"  # a killed run's writer's temporary file
    orphan.write_bytes(b"half a video")
    generate(a, cfg, seed=3, workers=1, progress=False)
    assert vid.read_bytes() == before and other.stat().st_mtime_ns == mtime
    assert not orphan.exists()
    with pytest.raises(BadInputError, match="another preset"):
        generate(a, cfg, seed=5, progress=False)
    # a folder written before a knob existed (its config lacks it) resumes when the knob is off...
    meta = json.loads((a / "synth_meta.json").read_text())
    del meta["config"]["action_film_p"]
    (a / "synth_meta.json").write_text(json.dumps(meta))
    generate(a, cfg, seed=3, workers=1, progress=False)
    # ...and is another dataset when it is on
    with pytest.raises(BadInputError, match="another preset"):
        generate(a, cfg, seed=3, progress=False, action_film_p=0.5)


def test_a_second_run_into_a_folder_being_written_is_one_line(tmp_path):
    """Two runs into one folder: the second took the first's folder for a killed run's and removed
    its videos in flight (their temporary files), and the first died on the missing file. The
    second is now one line naming the holder, before it touches the folder."""
    import fcntl
    import os

    from moviessl.features.store import JOB_LOCK

    cfg = SynthPreset(size=32, n_actions=1, action_durations=(1.0,), n_vidsitu_train=1, n_vidsitu_valid=1, n_lvu=1)
    out = generate(tmp_path / "s", cfg, seed=0, workers=1, progress=False)
    assert not (out / JOB_LOCK).exists()
    in_flight = out / "lvu" / "videos" / ".film.w0rk1ng.tmp.mp4"  # the first run's writer's
    in_flight.write_bytes(b"half a video")
    fd = os.open(out / JOB_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 4242 on node7, since then")
        with pytest.raises(BadInputError, match=r"another moviessl job is writing to this folder \(pid 4242 on node7"):
            generate(out, cfg, seed=0, workers=1, progress=False)
    finally:
        os.close(fd)
    assert in_flight.read_bytes() == b"half a video"


def test_cli(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    assert cli_main(["synth", "--preset", "tiny", "--out", str(tmp_path / "junk")]) == 2
    assert "not empty" in capsys.readouterr().err
    # a structure knob from the command line reaches the data (and its record)
    assert cli_main(["synth", "--preset", "tiny", "--out", str(tmp_path / "f"), "--action-film-p", "1"]) == 0
    assert json.loads((tmp_path / "f" / "synth_meta.json").read_text())["config"]["action_film_p"] == 1.0
    acts = json.loads((tmp_path / "f" / "actions" / "ground_truth.json").read_text())
    assert all(a.get("filmed") for a in acts.values())


def test_render_clip_ground_truth():
    c = render_clip("action", seed=2, size=64, verb="run.02")
    assert c.frames.shape == (60, 64, 64, 3) and c.plan["events"][0]["verb"] == "run.02"
    vis = c.boxes[:, 0, 4] > 0
    assert vis.all()
    xs = (c.boxes[:, 0, 0] + c.boxes[:, 0, 2]) / 2
    assert abs(xs[-1] - xs[0]) > 0.4  # running covers ground
    w = render_clip("action", seed=2, size=64, verb="walk.01")
    xw = (w.boxes[:, 0, 0] + w.boxes[:, 0, 2]) / 2
    assert 0.1 < abs(xw[-1] - xw[0]) < 0.35  # walking: the same direction, less than half as far


def test_render_clip_degrades_as_the_presets_do():
    """``render_clip("lvu")`` degraded 20% of a movie's events (the VidSitu share) where the presets
    and docs/synthmovies.md degrade 0.1 of LVU movies' events; its default is now each kind's."""
    from moviessl.synth.generate import PRESETS

    for seed in range(2):
        got = render_clip("lvu", seed=seed, size=32, duration_s=30.0).plan
        want = plot.plan_lvu_movie(np.random.default_rng([seed, 7]), 30.0, PRESETS["demo"].lvu_degrade_fraction)
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
    rng = np.random.default_rng(0)
    deg = [ev["degraded"] is not None for _ in range(300) for ev in plot.plan_lvu_movie(rng, 10.0)["events"]]
    assert 0.07 < np.mean(deg) < 0.13  # the LVU share, not the VidSitu one
    v = render_clip("vidsitu", seed=1, size=32).plan
    meta_rng = np.random.default_rng([1, 7])
    meta = plot.plan_movie_meta(meta_rng)
    chars = plot.sample_characters(meta_rng, meta["n_chars"])
    want = plot.plan_vidsitu_clip(meta_rng, meta, chars, PRESETS["demo"].degrade_fraction)
    assert json.dumps(v, sort_keys=True) == json.dumps(want, sort_keys=True)


def _event_frames(plan, size=48, seed=0):
    return [f for f, _ in render_plan(plan, size, 30.0, seed)]


@pytest.mark.parametrize("kind", plot.DEGRADATIONS)
def test_degraded_frames_carry_no_verb(kind):
    """Swap the verb of a degraded event: its frames barely change. Swap a clean one: they do."""
    rng = np.random.default_rng(11)
    chars = plot.sample_characters(rng, 3)
    base = plot.plan_vidsitu_clip(rng, dict(genre="Comedy", writer=0, director=0, year=9 - 1, n_chars=3), chars, 0.0)
    diffs = {}
    for deg in (None, kind):
        out = []
        for verb in ("run.02", "jump.01", "spin.01", "grow.01"):
            p = json.loads(json.dumps(base))
            ev = p["events"][1]
            ev.update(verb=verb, patient=None, degraded=deg)
            ev.pop("object", None)
            out.append(_event_frames(p)[1].astype(np.float32))
        diffs[deg] = np.mean([np.abs(out[i] - out[j]).mean() for i in range(4) for j in range(i + 1, 4)])
    assert diffs[None] > 4.0, diffs
    assert diffs[kind] < 0.15 * diffs[None], diffs


def test_context_recovers_degraded_verbs_pixels_do_not():
    """Context: the plot grammar predicts a degraded event from its neighbours' ground truth far
    above chance. Pixels: a pixel-statistics classifier on the degraded events stays near chance,
    while the same classifier on clean events is well above it (so the probe itself works)."""
    from moviessl.synth.headroom import context_posterior, fit_logreg, pixel_event_features

    rng = np.random.default_rng(0)
    clips = []
    for _ in range(600):
        meta = plot.plan_movie_meta(rng)
        clips.append(plot.plan_vidsitu_clip(rng, meta, plot.sample_characters(rng, meta["n_chars"]), 0.3))
    hits = n = 0
    for p in clips:
        for k, ev in enumerate(p["events"]):
            if ev["degraded"] and 0 < k < 4:
                post = context_posterior(p, k)
                hits += W.VERB_IDS[int(np.argmax(post))] == ev["verb"]
                n += 1
    ctx_acc = hits / n
    assert n > 200 and ctx_acc > 6.0 / len(W.VERBS), ctx_acc  # > 6x chance (chance ~3%)

    # pixels: 4 visually distinct verbs, 60 events each, clean vs degraded
    verbs = ("run.02", "jump.01", "spin.01", "grow.01")
    feats = {False: [], True: []}
    ys = []
    for i in range(160):
        verb = verbs[i % 4]
        c = render_clip("action", seed=100 + i, size=32, verb=verb)
        p = json.loads(json.dumps(c.plan))
        p["events"][0]["degraded"] = plot.DEGRADATIONS[(i // 4) % 4]
        feats[False].append(pixel_event_features(c.frames))
        feats[True].append(pixel_event_features(np.concatenate(_event_frames(p, size=32, seed=i))))
        ys.append(i % 4)
    ys = np.array(ys)
    acc = {}
    for deg, X in feats.items():
        X = np.stack(X)
        clf = fit_logreg(X[:120], ys[:120], 4)
        acc[deg] = float((clf(X[120:]) == ys[120:]).mean())
    assert acc[False] > 0.6, acc
    assert acc[True] < 0.45, acc  # chance is 0.25 on 40 test events


def test_action_film_knob_films_some_clips_and_leaves_the_rest_unchanged():
    """``action_film_p`` draws from its own stream: a clip it does not film is exactly the clip
    without the knob, and a filmed one keeps its verb and actors, adds only non-acting bystanders,
    and is rendered in a movie scene (no studio) with the movies' look."""
    from moviessl.synth.generate import plan_actions

    base = SynthPreset(n_actions=40, action_repeat_s=4.0, verb_context_p=0.5)
    off = plan_actions(base, seed=3)
    on = plan_actions(SynthPreset(**{**base.__dict__, "action_film_p": 0.5}), seed=3)
    filmed = [b for b in on if b["plan"].get("filmed")]
    assert 5 < len(filmed) < 35
    for a, b in zip(off, on):
        pa, pb = a["plan"], b["plan"]
        if not pb.get("filmed"):
            assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
            continue
        n = len(pa["characters"])
        assert pb["characters"][:n] == pa["characters"] and n <= len(pb["characters"]) <= n + 2
        assert [(e["verb"], e["agent"], e["patient"]) for e in pb["events"]] == [
            (e["verb"], e["agent"], e["patient"]) for e in pa["events"]
        ]
        assert len({(c["shape"], c["colour"]) for c in pb["characters"]}) == len(pb["characters"])
        assert "studio" not in pb["shots"][0] and pb["shots"][0]["scene_inst"]["scene"] in W.SCENES
        assert pb["year_style"] is not None and {e["scene"] for e in pb["events"]} == {
            pb["shots"][0]["scene_inst"]["scene"]
        }
    frames = [f for f, _ in render_plan(filmed[0]["plan"], 32, 30.0, 0)]
    assert sum(len(f) for f in frames) == round(4.0 * 30)


def test_action_transfer_headroom_reads_the_action_clips(tiny):
    """The method-free transfer number: a pixel classifier fit on the action train clips' first
    event, read on the events given (here the action val clips; the tiny preset is too small for
    its accuracy to mean anything, so only its bookkeeping is checked)."""
    from moviessl.synth.headroom import _decode as decode
    from moviessl.synth.headroom import action_transfer, pixel_event_features

    acts = json.loads((tiny / "actions" / "ground_truth.json").read_text())
    val = [(k, a) for k, a in acts.items() if a["split"] == "val"]
    X = np.stack([pixel_event_features(decode(tiny / "actions" / "videos" / f"{k}.mp4", limit=60)) for k, _ in val])
    y = np.array([W.VERB_INDEX[a["verb"]] for _, a in val])
    res = action_transfer(tiny, X, y)
    assert res["n"] == len(val) and res["filmed"] == 0.0
    assert res["action_clips"] == sum(a["split"] == "train" for a in acts.values())
    assert 0.0 <= res["pixel_from_actions"] <= 100.0


def test_cli_negative_seed_is_one_line(tmp_path, capsys):
    """A negative seed is bad input (numpy's seeded streams refuse it): one line, exit 2, and the
    output folder is left untouched."""
    assert cli_main(["synth", "--preset", "tiny", "--out", str(tmp_path / "s"), "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert "seed" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("size", [34, 66])
def test_blur_renders_at_any_valid_size(size):
    """Every even size >= 32 is accepted, also one that the blur's 4x4 blocks do not divide."""
    rng = np.random.default_rng(5)
    chars = plot.sample_characters(rng, 2)
    plan = plot.plan_vidsitu_clip(rng, dict(genre="Comedy", writer=0, director=0, year=3, n_chars=2), chars, 0.0)
    plan["events"][2]["degraded"] = "blur"
    frames = _event_frames(plan, size=size)[2]
    assert frames.shape == (60, size, size, 3)


@pytest.mark.parametrize("knob", ["action_size", "pool_size"])
def test_odd_clip_sizes_are_bad_input(tmp_path, knob):
    with pytest.raises(BadInputError, match=knob):
        generate(tmp_path / "x", "tiny", progress=False, **{knob: 33})


def test_action_film_draws_from_a_stream_of_its_own():
    """The film knob's draws are independent of the VidSitu clips' structure knobs: it once shared their
    stream, so action clip i was filmed exactly when VidSitu clip i's Ev1 showed its prop cue."""
    from moviessl.synth.generate import plan_actions, plan_vidsitu

    cfg = SynthPreset(n_actions=40, n_vidsitu_train=40, n_vidsitu_valid=0, verb_context_p=0.5, action_film_p=0.5)
    acts, clips = plan_actions(cfg, 0), plan_vidsitu(cfg, 0)
    same = [bool(a["plan"].get("filmed")) == c["plan"]["events"][0]["cue"] for a, c in zip(acts, clips)]
    assert not all(same)


def test_a_character_that_left_the_frame_has_no_box():
    """Boxes are 0 where a detector would see nothing: a fleeing agent that runs past the frame's edge
    is not visible there (it was flagged visible with a zero-width box at the edge)."""
    rng = np.random.default_rng(1)
    chars = plot.sample_characters(rng, 2)
    ev = plot.make_event(rng, "flee.01", 0, 1, 2)
    plot.layout_events(rng, [ev], 2, 2.0)
    ev.update(pos=[0.72, 0.5], dir=1, shot=0, scene="office", degraded=None)  # runs right, past the edge
    plan = dict(
        kind="vidsitu",
        characters=chars,
        events=[ev],
        shots=[dict(scene_inst=plot.sample_scene(rng, "office"), cam=0.0)],
        director=0,
        year_style=None,
    )
    boxes = np.concatenate([b for _, b in render_plan(plan, 32, 30.0, 0)])
    vis = boxes[..., 4] > 0
    assert vis[0, 0] and not vis[-1, 0]  # on screen at the start, gone at the end
    on = boxes[vis]
    assert (on[:, 2] > on[:, 0]).all() and (on[:, 3] > on[:, 1]).all()
    assert (boxes[~vis] == 0).all()


@pytest.mark.parametrize(
    "knob,value",
    [
        ("action_val_every", 0),  # ZeroDivisionError in the action splits
        ("n_actions", -1),  # silently no action clip
        ("fps", 0.0),  # ZeroDivisionError
        ("fps", 12.5),  # the encoder writes 12 fps: the videos' timing is not the plans'
        ("action_durations", ()),  # "a cannot be empty" in numpy
        ("action_durations", (-1.0,)),
        ("lvu_seconds", (1, 1)),  # a 0-s movie: "cannot convert float NaN to integer"
        ("lvu_seconds", (24, 20)),  # "low >= high"
    ],
)
def test_preset_fields_out_of_range_are_bad_input(tmp_path, knob, value):
    """Every preset field reachable through ``generate(..., **overrides)`` is checked before the
    folder is touched; these ended in tracebacks deep in the plans or made a silently empty split."""
    from moviessl.synth.generate import PRESETS, resolve_preset

    with pytest.raises(BadInputError, match=knob):
        generate(tmp_path / "x", "tiny", progress=False, **{knob: value})
    assert not (tmp_path / "x").exists()
    for name in PRESETS:  # the shipped presets are valid
        resolve_preset(name)


def test_action_clips_last_action_repeat_s_even_below_one_event():
    """``action_repeat_s``: "action clips last this long". One shorter than an event (2-3 s) gave
    clips of a whole event; the one event is now cut to it. Where it spans several events (the
    demo's 10 s) the clips are as before; a repeat of less than one frame is bad input."""
    from moviessl.synth.generate import plan_actions

    for repeat, durations in ((1.0, (2.0, 2.5, 3.0)), (10.0, (2.0, 2.5, 3.0)), (4.0, (2.0,))):
        acts = plan_actions(SynthPreset(n_actions=12, action_durations=durations, action_repeat_s=repeat), 0)
        assert all(sum(ev["dur"] for ev in a["plan"]["events"]) == pytest.approx(repeat) for a in acts)
    one = plan_actions(SynthPreset(n_actions=4, action_durations=(2.0,), action_repeat_s=1.0), 0)
    assert all(len(a["plan"]["events"]) == 1 for a in one)
    frames = [f for f, _ in render_plan(one[0]["plan"], 32, 30.0, 0)]
    assert sum(len(f) for f in frames) == 30
    with pytest.raises(BadInputError, match="action_repeat_s"):
        generate("/nonexistent/never", "tiny", progress=False, action_repeat_s=0.01)


def test_a_synth_meta_that_is_not_an_object_is_one_line(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "synth_meta.json").write_text("[]")
    assert cli_main(["synth", "--preset", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "synth_meta.json" in err and "JSON object" in err and "Traceback" not in err


def test_two_writers_of_one_video_do_not_collide(tmp_path):
    """The pool workers of a killed run finish the video they are on, so a rerun can write the same
    video at the same time. Both must end well: with one shared temporary name the first rename took
    the other's file away (FileNotFoundError in the rerun)."""
    from moviessl.synth.render import encode_video

    path = tmp_path / "v.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (60, 32, 32, 3), dtype=np.uint8)

    def chunks():
        yield frames, 0
        yield frames, 1  # by now packets of the first chunk are in this writer's file
        encode_video(path, iter([(frames, 9)]), 30.0, 32, preset="ultrafast")  # the other one finishes first
        yield frames, 2

    assert encode_video(path, chunks(), 30.0, 32, preset="ultrafast") == [0, 1, 2]
    assert len(_decode(path)[0]) == 180
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temporary file left


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux only (PR_SET_PDEATHSIG)")
def test_render_workers_end_when_generate_is_killed(tmp_path):
    """A killed generate's pool workers used to render on (and write) beside the rerun."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pids = tmp_path / "pids"
    pids.mkdir()
    code = (
        "import os, sys, time\n"
        "import moviessl.synth\n"
        "G = sys.modules['moviessl.synth.generate']  # the package's `generate` is the function\n"
        "def slow(job):\n"
        "    open(os.path.join(%r, str(os.getpid())), 'w').close()\n"
        "    time.sleep(60)\n"
        "G._render_job = slow\n"
        "G.generate(%r, G.SynthPreset(size=32, n_actions=2, action_durations=(1.0,), n_vidsitu_train=0,\n"
        "           n_vidsitu_valid=0, n_lvu=0), workers=2, progress=False)\n"
    ) % (str(pids), str(tmp_path / "out"))
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    # spawned workers import torch: on a loaded machine that took over 30 s
    for _ in range(1800):
        if len(list(pids.iterdir())) == 2 or proc.poll() is not None:
            break
        time.sleep(0.1)
    workers = [int(p.name) for p in pids.iterdir()]
    assert len(workers) == 2, f"{len(workers)} render workers started (generate's exit code: {proc.poll()})"
    proc.kill()  # SIGKILL: no clean-up in the generating process
    proc.wait()
    alive = []
    for _ in range(100):
        alive = []
        for w in workers:
            try:
                os.kill(w, 0)
                alive.append(w)
            except ProcessLookupError:
                pass
        if not alive:
            break
        time.sleep(0.1)
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive, "render workers outlived the killed generate"


@pytest.mark.parametrize(
    "flag,value", [("--degrade-fraction", "20"), ("--verb-context-p", "-0.5"), ("--pool-ratio", "nan")]
)
def test_cli_out_of_range_knobs_are_one_line(tmp_path, capsys, flag, value):
    """A share outside [0, 1] (a percentage, a sign slip) or a NaN ratio was written into the dataset's
    record and silently acted as 0 or 1 (a NaN also made the folder unresumable)."""
    assert cli_main(["synth", "--preset", "tiny", "--out", str(tmp_path / "s"), flag, value]) == 2
    err = capsys.readouterr().err
    assert flag[2:].replace("-", "_") in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_generation_reports_its_frames_for_the_time_left(tmp_path, monkeypatch):
    """Each rendered video adds its frames to the job's fraction done (the demo's time left went by
    the cost table alone for SynthMovies' generation)."""
    from moviessl.utils import progress

    seen = []
    monkeypatch.setattr(progress, "report", lambda done, total, force=False: seen.append((done, total)))
    cfg = SynthPreset(
        size=32, n_actions=2, action_durations=(1.0,), n_vidsitu_train=1, n_vidsitu_valid=1, n_lvu=1, lvu_seconds=(6, 6)
    )
    generate(tmp_path / "a", cfg, seed=3, workers=2, progress=False)
    assert len(seen) == 1 + 2 + 2 + 1 and len({t for _, t in seen}) == 1  # the start, one per video, one total
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and dones[0] == 0 < dones[1] < dones[-1] == seen[0][1]
    vid = next((tmp_path / "a" / "actions" / "videos").iterdir())  # resumed: the written videos count as done
    vid.unlink()
    seen.clear()
    generate(tmp_path / "a", cfg, seed=3, workers=1, progress=False)
    assert len(seen) == 2 and 0 < seen[0][0] < seen[1][0] == seen[0][1]


def test_rendered_megapixels_is_what_a_preset_writes(tiny):
    """The demo prices SynthMovies' generation by it (the time left): the pixel-frames of the videos
    written, within the draw of LVU's lengths, and the pool priced at its own frame side."""
    from moviessl.synth.generate import PRESETS, rendered_megapixels

    written = 0
    for path in tiny.rglob("*.mp4"):
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            written += s.frames * s.codec_context.width * s.codec_context.height
    assert written / 1e6 == pytest.approx(rendered_megapixels(PRESETS["tiny"]), rel=0.15)
    with_pool = dataclasses.replace(PRESETS["tiny"], pool_ratio=2.0, pool_size=32)
    assert rendered_megapixels(with_pool) - rendered_megapixels(PRESETS["tiny"]) == pytest.approx(
        16 * 10 * 30 * 32 * 32 / 1e6
    )
