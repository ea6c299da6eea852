"""benchmarks.scene_readable: the filmed action clips' scene lists and the jobs it plans (no training)."""

import json

import pytest
from benchmarks.scene_readable import SCENES, plan, scene_lists

from moviessl.errors import BadInputError


def _actions(root, clips):
    (root / "actions").mkdir(parents=True)
    truth = {
        name: {"split": split, "filmed": filmed, "events": [{"scene": scene}, {"scene": scene}]}
        for name, split, filmed, scene in clips
    }
    (root / "actions" / "ground_truth.json").write_text(json.dumps(truth))


def test_the_lists_hold_the_filmed_clips_labelled_by_their_scene(tmp_path):
    _actions(tmp_path / "s", [("a0", "train", True, "prison"), ("a1", "train", False, "studio"),
                              ("a2", "val", True, "airport"), ("a3", "train", True, "office")])  # fmt: skip
    lists = scene_lists(tmp_path / "s" / "actions", tmp_path / "out")
    videos = (tmp_path / "s" / "actions" / "videos").resolve()
    assert lists["train"].read_text().splitlines() == [
        f"{videos / 'a0.mp4'} {SCENES.index('prison')}",
        f"{videos / 'a3.mp4'} {SCENES.index('office')}",
    ]  # the studio clip is left out
    assert lists["val"].read_text().splitlines() == [f"{videos / 'a2.mp4'} {SCENES.index('airport')}"]
    assert len(SCENES) == 6 and "studio" not in SCENES


def test_a_folder_without_filmed_clips_is_refused(tmp_path):
    _actions(tmp_path / "s", [("a0", "train", False, "studio"), ("a1", "val", False, "studio")])
    with pytest.raises(BadInputError, match="action-film-p"):
        scene_lists(tmp_path / "s" / "actions", tmp_path / "out")


def test_the_reference_learns_the_scene_lists_and_the_others_the_action_clips(tmp_path):
    lists = {"train": tmp_path / "l" / "train.csv", "val": tmp_path / "l" / "val.csv"}
    jobs = {j.name: j for j in plan(tmp_path / "s", tmp_path / "o", ["cvrl", "random"], lists)}
    assert set(jobs) == {f"{k} {b} r0{s}" for b in ("scene", "cvrl", "random")
                         for k, s in (("backbone", ""), ("extract", " vidsitu"))}  # fmt: skip
    ref, cvrl = jobs["backbone scene r0"].kwargs, jobs["backbone cvrl r0"].kwargs
    assert ref["method"] == "supervised" and (ref["data"], ref["val"]) == (str(lists["train"]), str(lists["val"]))
    assert cvrl["method"] == "cvrl" and cvrl["data"] == str(tmp_path / "s" / "actions" / "train.csv")
    assert ref["seed"] == cvrl["seed"] == 0 and ref["overrides"] == cvrl["overrides"]  # one recipe
    ex = jobs["extract scene r0 vidsitu"]
    assert ex.deps == ("backbone scene r0",) and ex.kwargs["videos"] == str(tmp_path / "s" / "vidsitu")
    assert ex.kwargs["backbone"] == str(tmp_path / "o" / "backbone" / "scene" / "r0" / "model.pt")


def test_a_recipe_override_tags_the_methods_folders_and_leaves_the_reference_as_it_is(tmp_path):
    lists = {"train": tmp_path / "l" / "train.csv", "val": tmp_path / "l" / "val.csv"}
    plain = {j.name: j for j in plan(tmp_path / "s", tmp_path / "o", ["cvrl"], lists)}
    tagged = {j.name: j for j in plan(tmp_path / "s", tmp_path / "o", ["cvrl"], lists, ["augment.jitter_p=0"], "nc")}
    assert set(tagged) == {"backbone scene r0", "extract scene r0 vidsitu", "backbone cvrl_nc r0",
                           "extract cvrl_nc r0 vidsitu"}  # fmt: skip
    assert tagged["backbone scene r0"].kwargs == plain["backbone scene r0"].kwargs  # one reference for both
    cvrl = tagged["backbone cvrl_nc r0"].kwargs
    assert cvrl["overrides"] == [*plain["backbone cvrl r0"].kwargs["overrides"], "augment.jitter_p=0"]
    assert cvrl["out"] == str(tmp_path / "o" / "backbone" / "cvrl_nc" / "r0")
    # another action-clip folder (--uniform-cast): every backbone trains there, features still of SYNTH
    other = {j.name: j for j in plan(tmp_path / "s", tmp_path / "o", ["cvrl"], lists, actions=tmp_path / "u")}
    assert other["backbone cvrl r0"].kwargs["data"] == str(tmp_path / "u" / "train.csv")
    assert other["backbone scene r0"].kwargs["data"] == str(lists["train"])
    assert other["extract cvrl r0 vidsitu"].kwargs["videos"] == str(tmp_path / "s" / "vidsitu")
