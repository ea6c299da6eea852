"""The ``scene_fixtures`` knob: every room gets its class's furniture, placed its own way."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moviessl.cli import main as cli_main
from moviessl.errors import BadInputError
from moviessl.synth import SynthPreset, generate
from moviessl.synth import world as W
from moviessl.synth.generate import plan_actions, plan_lvu, plan_vidsitu
from moviessl.synth.render import build_canvas, fixture_mask


def _strip(item):
    """A plan as JSON without the fixtures (the only thing the knob may add)."""
    item = json.loads(json.dumps(item))
    for shot in item["plan"].get("shots", []):
        shot.get("scene_inst", {}).pop("fixtures", None)
    return json.dumps(item, sort_keys=True)


def test_fixtures_are_added_from_a_stream_of_their_own():
    """With the knob on, every plan is the plan without it plus the fixtures: no other draw moves."""
    base = SynthPreset(n_actions=30, n_vidsitu_train=12, n_vidsitu_valid=4, n_lvu=3, lvu_seconds=(20, 24))
    base = SynthPreset(**{**base.__dict__, "action_film_p": 0.5, "verb_context_p": 0.5, "hidden_agent_p": 0.3})
    on = SynthPreset(**{**base.__dict__, "scene_fixtures": 5})
    for planner in (plan_actions, plan_vidsitu, plan_lvu):
        a, b = planner(base, 2), planner(on, 2)
        assert [_strip(x) for x in a] == [_strip(x) for x in b]
        assert all("fixtures" not in s.get("scene_inst", {}) for x in a for s in x["plan"]["shots"])


def test_every_room_is_furnished_once_and_studios_not():
    cfg = SynthPreset(n_actions=30, n_lvu=4, lvu_seconds=(60, 90), action_film_p=0.5, scene_fixtures=4)
    acts = plan_actions(cfg, 0)
    assert any(a["plan"].get("filmed") for a in acts) and not all(a["plan"].get("filmed") for a in acts)
    for a in acts:
        for shot in a["plan"]["shots"]:
            assert ("fixtures" in shot.get("scene_inst", {})) == bool(a["plan"].get("filmed"))
    returns = 0
    for m in plan_lvu(cfg, 0):
        rooms = {id(s["scene_inst"]): s["scene_inst"] for s in m["plan"]["shots"]}
        returns += len(m["plan"]["shots"]) - len(rooms)  # shots that return to a room see its furniture
        for room in rooms.values():
            fx = room["fixtures"]
            assert len(fx) == 4 and all(f["colour"] != room["c1"] for f in fx)  # not the wall's colour
            assert [f["x"] for f in fx] == sorted(f["x"] for f in fx)
    assert returns > 0
    # two rooms of one class are arranged differently
    rooms = [x["plan"]["shots"][0]["scene_inst"] for x in plan_vidsitu(cfg, 0)]
    by_class = {}
    for r in rooms:
        by_class.setdefault(r["scene"], []).append(r)
    pairs = [v for v in by_class.values() if len(v) > 1]
    assert pairs and all(v[0]["fixtures"] != v[1]["fixtures"] for v in pairs)


def test_each_class_has_a_silhouette_of_its_own():
    """At the size a 64-px backbone sees a fixture (about 16 x 20 px), no two classes' pieces overlap
    much: the class is in the shape, not in the colour (drawn from the shared palette)."""
    v, u = np.mgrid[0:20, 0:16].astype(np.float32)
    masks = {k: fixture_mask(k, (u + 0.5) / 16, (v + 0.5) / 20) for k in W.SCENE_FIXTURES.values()}
    assert len(masks) == len(W.SCENES)
    for a in masks:
        assert 0.2 < masks[a].mean() < 0.8, a
        for b in masks:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.6, (a, b, iou)
    with pytest.raises(ValueError, match="sofa"):
        fixture_mask("sofa", u, v)


def test_fixtures_are_drawn_on_the_wall_above_the_floor_line():
    cfg = SynthPreset(n_vidsitu_train=6, n_vidsitu_valid=0, scene_fixtures=3)
    room = plan_vidsitu(cfg, 1)[0]["plan"]["shots"][0]["scene_inst"]
    bare = {k: v for k, v in room.items() if k != "fixtures"}
    M = np.eye(3, dtype=np.float32)
    S = 64
    with_f, without = build_canvas(dict(scene_inst=room), S, M), build_canvas(dict(scene_inst=bare), S, M)
    changed = np.any(with_f != without, axis=2)
    assert changed.any()
    rows = np.nonzero(changed.any(axis=1))[0] % S
    assert rows.max() < int(0.78 * S) and rows.min() >= int(0.78 * S) - int(0.45 * S) - 1
    # every piece is there (the columns it spans), in each vertical repeat of the wall
    for f in room["fixtures"]:
        x0 = int(f["x"] * 3 * S) % (3 * S)
        assert changed[:S, x0 : x0 + 3].any() and changed[S:, x0 : x0 + 3].any()


@pytest.mark.parametrize("value", [-1, 1.5, True, 65])
def test_a_bad_count_is_bad_input(tmp_path, value):
    with pytest.raises(BadInputError, match="scene_fixtures"):
        generate(tmp_path / "x", "tiny", progress=False, scene_fixtures=value)
    assert not (tmp_path / "x").exists()


def test_cli_knob_reaches_the_videos(tmp_path):
    out = tmp_path / "f"
    assert cli_main(["synth", "--preset", "tiny", "--out", str(out), "--scene-fixtures", "3"]) == 0
    assert json.loads((out / "synth_meta.json").read_text())["config"]["scene_fixtures"] == 3
    # the same seed without the knob: the action (studio) clips are the same files, the movies are not
    ref = tmp_path / "g"
    assert cli_main(["synth", "--preset", "tiny", "--out", str(ref)]) == 0
    name = sorted((out / "actions" / "videos").iterdir())[0].name
    assert (out / "actions" / "videos" / name).read_bytes() == (ref / "actions" / "videos" / name).read_bytes()
    movies = [d / "vidsitu" / "vsitu_video_trimmed_dir" for d in (out, ref)]
    movie = sorted(movies[0].iterdir())[0].name
    assert (movies[0] / movie).read_bytes() != (movies[1] / movie).read_bytes()


def test_a_folder_whose_clips_are_not_its_plans_is_one_line(tmp_path, capsys):
    """The furniture row re-plans the clips from synth_meta.json; a folder whose annotations are not
    those plans (edited, or another generator's) is bad input, and the command says so in one line."""
    from moviessl.synth.headroom import main, structure_headroom

    out = generate(tmp_path / "s", "tiny", progress=False, scene_fixtures=2)
    gt_file = out / "vidsitu" / "ground_truth.json"
    gt = json.loads(gt_file.read_text())
    gt_file.write_text(json.dumps(dict(reversed(gt.items()))))  # key order is not the plans' business
    structure_headroom(out)
    old = next(iter(gt))  # a clip renamed (video and annotation): not a clip the record plans
    gt["v_renamed_seg_0_10"] = gt.pop(old)
    gt_file.write_text(json.dumps(gt))
    videos = out / "vidsitu" / "vsitu_video_trimmed_dir"
    (videos / f"{old}.mp4").rename(videos / "v_renamed_seg_0_10.mp4")
    with pytest.raises(BadInputError, match="not the clips its synth_meta.json plans"):
        structure_headroom(out)
    with pytest.raises(SystemExit) as e:
        main([str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "not the clips its synth_meta.json plans" in err and "Traceback" not in err
