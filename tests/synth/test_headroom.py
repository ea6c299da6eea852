"""The headroom module's pixel statistics at every valid SynthMovies frame size."""

from __future__ import annotations

import numpy as np
import pytest

from moviessl.synth.headroom import pixel_event_features, pixel_movie_features


@pytest.mark.parametrize("size", [32, 36, 52, 64, 66, 112])
def test_pixel_features_at_any_valid_size(size):
    """Any even size >= 32 is a valid dataset (``--size``): the event statistics' 4x4 motion cells
    crashed where the small map's side is not a multiple of 4 (36, 52, ...), and their length must
    not depend on the size (the transfer row fits on 64-px action clips, reads the movies' events)."""
    frames = np.random.default_rng(0).integers(0, 255, (60, size, size, 3), dtype=np.uint8)
    f = pixel_event_features(frames)
    assert f.shape == (39,) and np.isfinite(f).all()
    assert np.isfinite(pixel_movie_features(frames[::30])).all()


def test_main_on_a_folder_that_is_not_synthmovies_is_one_line(tmp_path, capsys):
    """It ended in a FileNotFoundError traceback."""
    from moviessl.synth.headroom import main

    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nowhere")])
    assert e.value.code == 2
    assert "not a SynthMovies folder" in capsys.readouterr().err
    (tmp_path / "vidsitu").mkdir()  # annotations without the folder's record of how it was made
    (tmp_path / "vidsitu" / "ground_truth.json").write_text("{}")
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no synth_meta.json" in capsys.readouterr().err


def test_verb_headroom_cuts_events_at_the_movies_frame_rate(tmp_path, monkeypatch):
    """The 2-s events of the VidSitu-style clips were cut at 60 frames whatever synth_meta.json's fps."""
    import json

    from moviessl.synth import headroom as H

    (tmp_path / "vidsitu").mkdir()
    events = [{"verb": "walk.01", "degraded": False}] * 5
    gt = {"v0": {"events": events, "genre": 0, "writer": 0, "split": "train"}}
    (tmp_path / "vidsitu" / "ground_truth.json").write_text(json.dumps(gt))
    (tmp_path / "synth_meta.json").write_text(json.dumps({"fps": 15}))
    monkeypatch.setattr(H, "_decode", lambda path, **kw: np.zeros((150, 8, 8, 3), np.uint8))  # 10 s at 15 fps
    cut = []

    def spy(frames):
        cut.append(len(frames))
        if len(cut) == 5:
            raise KeyboardInterrupt  # enough: the five events are cut
        return np.zeros(4)

    monkeypatch.setattr(H, "pixel_event_features", spy)
    with pytest.raises(KeyboardInterrupt):
        H.headroom(tmp_path, progress=False)
    assert cut == [30] * 5


def test_hidden_agent_headroom_counts_the_patient_of_a_hidden_neighbour(tmp_path):
    """Only the agent of a hidden event is a silhouette; its patient is drawn as ever. The
    'from neighbours' share left out every hidden neighbour, so an agent shown as the patient of
    the event before was counted as not shown."""
    import json

    from moviessl.synth.headroom import structure_headroom

    (tmp_path / "actions").mkdir()
    (tmp_path / "vidsitu").mkdir()
    acts = {f"a{i}": {"split": split, "verb": "walk.01", "events": [{}]} for i, split in enumerate(("train", "val"))}
    (tmp_path / "actions" / "ground_truth.json").write_text(json.dumps(acts))
    events = [
        {"verb": "push.01", "agent": 1, "patient": 0, "degraded": None, "hidden": True},  # 0 is seen, pushed
        {"verb": "fall.01", "agent": 0, "patient": None, "degraded": None, "hidden": True},  # 0 falls, a silhouette
        {"verb": "wait.01", "agent": 2, "patient": None, "degraded": None},
    ]
    gt = {"v0": {"split": "valid", "characters": [{}, {}, {}], "events": events}}
    gt["v1"] = {"split": "train", "characters": [{}, {}, {}], "events": events}
    (tmp_path / "vidsitu" / "ground_truth.json").write_text(json.dumps(gt))
    ha = structure_headroom(tmp_path)["hidden_agent"]
    # event 1's agent is event 0's patient; event 0's agent (1) is in no neighbour. Own frames: a hidden
    # event shows only its silhouette and its patient, so the agent is any character but the patient
    # (1 / 2 for the push) or any character (1 / 3 for the fall)
    assert ha["hidden"] == 2 and ha["neighbours"] == 50.0 and abs(ha["own_frames"] - 100 * (1 / 2 + 1 / 3) / 2) < 1e-9


def test_prop_cue_headroom_reads_no_cue_through_a_degradation(tmp_path):
    """A degraded event's prop cue is covered (occlusion), faded (low contrast), smeared (blur) or not
    drawn (offscreen) with its verb; the 'prop cue only' share counted every cued event as read."""
    import json

    from moviessl.synth.headroom import structure_headroom

    (tmp_path / "actions").mkdir()
    (tmp_path / "vidsitu").mkdir()
    acts = {f"a{i}": {"split": split, "verb": "walk.01", "events": [{}]} for i, split in enumerate(("train", "val"))}
    (tmp_path / "actions" / "ground_truth.json").write_text(json.dumps(acts))
    train = [{"verb": "wait.01", "agent": 0, "patient": None, "degraded": None}]
    valid = [
        {"verb": "run.02", "agent": 0, "patient": None, "degraded": None, "cue": True},  # read from its cue
        {"verb": "jump.01", "agent": 0, "patient": None, "degraded": "occlusion", "cue": True},  # the cue is covered
        {"verb": "wait.01", "agent": 0, "patient": None, "degraded": None, "cue": False},  # the majority verb
        {"verb": "spin.01", "agent": 0, "patient": None, "degraded": None, "cue": False},
    ]
    gt = {
        "v0": {"split": "train", "characters": [{}], "events": train},
        "v1": {"split": "valid", "characters": [{}], "events": valid},
    }
    (tmp_path / "vidsitu" / "ground_truth.json").write_text(json.dumps(gt))
    vc = structure_headroom(tmp_path)["verb_context"]
    assert vc["vidsitu_cue_only"] == 50.0 and vc["vidsitu_chance"] == 25.0


def test_a_split_without_degraded_events_writes_strict_json(tmp_path, monkeypatch, capsys):
    """With `--degrade-fraction 0` no valid event is degraded: the degraded row's accuracies were
    the mean of nothing, NaN, which `headroom.json` held as the bare word NaN (not JSON: jq and
    JavaScript refuse the file) and the table printed as 'nan'. Such a row now has None and '-'."""
    import json

    from moviessl.synth import headroom as H

    (tmp_path / "vidsitu").mkdir()
    (tmp_path / "synth_meta.json").write_text(json.dumps({"fps": 15}))
    events = [{"verb": v, "degraded": None} for v in ("walk.01", "run.02", "walk.01", "jump.01", "run.02")]
    gt = {f"v{i}": {"events": events, "genre": 0, "writer": 0, "split": s} for i, s in enumerate(("train", "valid"))}
    (tmp_path / "vidsitu" / "ground_truth.json").write_text(json.dumps(gt))
    rng = np.random.default_rng(0)
    monkeypatch.setattr(H, "_decode", lambda path, **kw: rng.integers(0, 255, (150, 32, 32, 3), np.uint8))
    monkeypatch.setattr(H, "oracle_verb", lambda plan, k: plan["events"][k]["verb"])

    def stop(root, X, y, progress=False):  # the verb rows are made: the LVU half is not this test's
        raise _Stop

    class _Stop(Exception):
        pass

    monkeypatch.setattr(H, "action_transfer", stop)
    got = {}
    real = H.verb_rows
    monkeypatch.setattr(H, "verb_rows", lambda *a: got.setdefault("verb", real(*a)))
    with pytest.raises(_Stop):
        H.headroom(tmp_path, progress=False)
    rows = got["verb"]
    assert rows["degraded"] == {"n": 0, "chance": None, "pixel": None, "oracle": None}
    assert rows["clean"]["n"] == rows["all"]["n"] == 5 and rows["all"]["oracle"] == 100.0
    json.loads(json.dumps(rows, allow_nan=False))
    monkeypatch.setattr(H, "headroom", lambda root, n: {"verb": rows, "lvu": {}, "n_plans": n})
    assert H.main([str(tmp_path)]) == 0
    json.loads((tmp_path / "headroom.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert "| degraded events | 0 | - | - | - |" in capsys.readouterr().out


def test_no_plans_is_one_line_before_the_decoding(tmp_path, monkeypatch, capsys):
    """`--plans 0` decoded every video, then ended in a ValueError traceback (the majority of no
    plans) or a NaN chance row; a count below 1 is now one line, exit 2, before any work."""
    from moviessl.synth import headroom as H

    (tmp_path / "vidsitu").mkdir()
    (tmp_path / "vidsitu" / "ground_truth.json").write_text("{}")
    (tmp_path / "synth_meta.json").write_text("{}")
    monkeypatch.setattr(H, "headroom", lambda root, n: pytest.fail("ran with no plans"))
    for n in ("0", "-3"):
        with pytest.raises(SystemExit) as e:
            H.main([str(tmp_path), "--plans", n])
        assert e.value.code == 2 and "--plans" in capsys.readouterr().err


def test_verb_rows_and_ridge_against_hand_computed_values():
    """The headroom table's accuracies per row (chance = the train majority verb) and the ridge fit
    its LVU regression rows use: ``(Z'Z + l2 n I) w = Z'(y - mean y)`` on standardised inputs, so on
    y = 3x + 2 with l2 = 1 the slope is halved about the means."""
    from moviessl.synth.headroom import fit_ridge, verb_rows

    y, pred, orc = np.array([1, 1, 0, 2]), np.array([1, 0, 0, 1]), np.array([1, 1, 0, 0])
    rows = verb_rows(y, pred, orc, np.array([False, False, True, True]), major=1)
    assert rows == {
        "all": {"n": 4, "chance": 50.0, "pixel": 50.0, "oracle": 75.0},
        "clean": {"n": 2, "chance": 100.0, "pixel": 50.0, "oracle": 100.0},
        "degraded": {"n": 2, "chance": 0.0, "pixel": 50.0, "oracle": 50.0},
    }
    x = np.arange(4.0)[:, None]
    np.testing.assert_allclose(fit_ridge(x, 3 * x[:, 0] + 2, l2=1.0)(x), [4.25, 5.75, 7.25, 8.75], rtol=1e-5)
    np.testing.assert_allclose(fit_ridge(x, 3 * x[:, 0] + 2, l2=0.0)(np.array([[10.0]])), [32.0], rtol=1e-5)


@pytest.mark.parametrize("n_lvu", [0, 1])
def test_a_folder_without_action_clips_or_lvu_eval_movies_has_a_headroom(tmp_path, capsys, n_lvu):
    """`generate(..., n_actions=0)` (or `n_lvu=0`) is a valid SynthMovies folder, but its headroom
    ended in a ValueError traceback (np.stack of no action clips / no movies); a folder whose one
    LVU movie is train has no val+test movie to score. The transfer row is now absent (null), no
    LVU table is printed without movies, and an LVU row with nothing to score is null / '-'."""
    import json

    from moviessl.synth import SynthPreset, generate
    from moviessl.synth.headroom import main

    cfg = SynthPreset(
        size=32, n_actions=0, n_vidsitu_train=3, n_vidsitu_valid=2, n_lvu=n_lvu, lvu_seconds=(4, 4), workers=1
    )
    root = generate(tmp_path / "s", cfg, progress=False)
    assert main([str(root), "--plans", "3"]) == 0
    res = json.loads((root / "headroom.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    out = capsys.readouterr().out
    assert res["transfer"] is None and "action train clips" not in out
    if n_lvu == 0:
        assert res["lvu"] == {} and "LVU task" not in out
    else:
        assert all(r["n_eval"] == 0 and r["chance"] is r["pixel"] is r["oracle"] is None for r in res["lvu"].values())
        assert "| genre | 0 | - | - | - |" in out
    assert res["structure"]["verb_context"]["actions_chance"] == 0.0


def test_chance_on_the_plans_is_not_picked_on_the_plans_it_scores(tmp_path, monkeypatch):
    """The '500 plans' column's chance took the majority class (and the mean) of the very plans it
    scored, so the sampling luck of those plans read as skill (genre 27.8% on the demo's plans,
    four equally likely genres). It is now the majority / mean of as many other plans, as the
    rendered rows' chance is the train split's; the scored plans and their oracle are unchanged."""
    import json

    from moviessl.synth import headroom as H
    from moviessl.synth import plot

    rng = np.random.default_rng(0)
    (tmp_path / "vidsitu").mkdir()
    (tmp_path / "lvu").mkdir()
    (tmp_path / "actions").mkdir()
    (tmp_path / "actions" / "ground_truth.json").write_text("{}")
    config = {"lvu_seconds": [6, 6], "lvu_degrade_fraction": 0.1}
    (tmp_path / "synth_meta.json").write_text(json.dumps({"fps": 30, "config": config}))
    gt = {}
    for i, split in enumerate(("train", "valid")):
        meta = plot.plan_movie_meta(rng)
        p = plot.plan_vidsitu_clip(rng, meta, plot.sample_characters(rng, meta["n_chars"]), 0.2)
        gt[f"v{i}"] = dict(
            split=split, genre=p["genre"], writer=p["writer"], characters=p["characters"], events=p["events"]
        )
    (tmp_path / "vidsitu" / "ground_truth.json").write_text(json.dumps(gt))
    lgt = {f"m{i}": dict(split=s, **plot.plan_lvu_movie(rng, 6.0)) for i, s in enumerate(("train", "val"))}
    (tmp_path / "lvu" / "ground_truth.json").write_text(json.dumps(lgt))
    monkeypatch.setattr(H, "_decode", lambda path, **kw: rng.integers(0, 255, (300, 32, 32, 3), np.uint8))
    base = plot.plan_lvu_movie(rng, 6.0)
    genres = iter([0, 1, 2, 2])  # the two scored plans, then two others whose majority is genre 2

    def scripted(rng, duration_s, degrade_fraction):
        p = json.loads(json.dumps(base))
        p["labels"]["genre"] = next(genres)
        return p

    monkeypatch.setattr(H.P, "plan_lvu_movie", scripted)
    res = H.headroom(tmp_path, n_plans=2, progress=False)
    assert res["lvu"]["genre"]["chance_plans"] == 0.0  # genre 2 on plans of genres 0 and 1 (was 50.0)
    assert res["lvu"]["genre"]["oracle_plans"] in (0.0, 50.0, 100.0)
