"""benchmarks.cvrl_appearance: the re-cast action clips keep every plan's verb, layout and timing and
give every video one appearance; the summary's z against random init. Nothing is trained here."""

import json

import av
import numpy as np
import pytest
from benchmarks.cvrl_appearance import CAST, STUDIO, make_uniform_actions, plan, summarize

from moviessl.errors import BadInputError
from moviessl.synth.generate import generate


def test_the_recast_clips_are_the_same_clips_with_one_cast_and_no_cue(tmp_path):
    synth = generate(tmp_path / "s", "tiny", seed=0, workers=1, progress=False, n_lvu=0, verb_context_p=0.5)
    root = make_uniform_actions(synth, tmp_path / "u", workers=1)
    for split in ("train", "val"):  # same videos, labels and splits
        assert (root / f"{split}.csv").read_text() == (synth / "actions" / f"{split}.csv").read_text()
    old = json.loads((synth / "actions" / "ground_truth.json").read_text())
    new = json.loads((root / "ground_truth.json").read_text())
    assert new.keys() == old.keys()
    assert any(e.get("cue") for g in old.values() for e in g["events"])  # the source shows the cue somewhere
    looks = set()
    for name, g in new.items():
        strip = lambda evs: [{k: v for k, v in e.items() if k != "cue"} for e in evs]  # noqa: E731
        assert strip(g["events"]) == strip(old[name]["events"]) and not any(e.get("cue") for e in g["events"])
        assert [c["id"] for c in g["characters"]] == [c["id"] for c in old[name]["characters"]]
        looks |= {(c["id"], c["shape"], c["colour"], c["size"], c["texture"]) for c in g["characters"]}
        assert g["shots"][0]["studio"] == STUDIO and g["director"] == 0
    assert looks <= {(k, *CAST[k]) for k in range(len(CAST))}
    assert len({(c["shape"], c["colour"]) for g in old.values() for c in g["characters"]}) > len(CAST)
    # real video files, as long as the source's
    for name in list(new)[:3]:
        with (
            av.open(str(root / "videos" / f"{name}.mp4")) as a,
            av.open(str(synth / "actions" / "videos" / f"{name}.mp4")) as b,
        ):
            assert a.streams.video[0].frames == b.streams.video[0].frames > 0
    assert make_uniform_actions(synth, tmp_path / "u", workers=1) == root  # done: nothing redone
    with pytest.raises(BadInputError, match=r"u: holds clips rendered otherwise .*'keep_setting': True"):
        make_uniform_actions(synth, tmp_path / "u", workers=1, keep_setting=True)  # not the clips asked for


def test_the_summary_compares_each_backbone_with_random_init():
    rows = {}
    for r, (u, c, n) in enumerate([(10.0, 50.0, 5.0), (12.0, 54.0, 7.0)]):
        rows[f"random r{r}"] = dict(backbone="random", run=r, uniform=u, cue=c, no_cue=n, vidsitu_probe=c, verbs=u)
        rows[f"cvrl r{r}"] = dict(
            backbone="cvrl", run=r, uniform=u + 20, cue=c, no_cue=n + 1, vidsitu_probe=c, verbs=u - 2
        )
    cells = summarize(rows)
    assert cells["random"]["uniform"] == (11.0, 1.0) and cells["random"]["z_vs_random"]["uniform"] is None
    z = cells["cvrl"]["z_vs_random"]
    assert np.isclose(z["uniform"], 20 / np.sqrt(2)) and z["cue"] == 0.0 and np.isclose(z["no_cue"], 1 / np.sqrt(2))
    assert np.isclose(z["verbs"], -2 / np.sqrt(2))


def test_the_runs_on_s_are_read_from_the_budget_benchmark_and_only_the_recast_ones_are_new(tmp_path):
    out, synth, uniform, reuse = tmp_path / "o", tmp_path / "s", tmp_path / "o" / "u", tmp_path / "b"
    dirs, jobs = plan(out, synth, uniform, ["cvrl"], 1200, 2, 3, reuse)
    assert set(dirs) == {(b, r) for b in ("random", "cvrl on S", "cvrl on uniform cast") for r in (0, 1)}
    assert dirs[("random", 1)][0] == reuse / "backbone" / "random" / "r1"
    assert dirs[("cvrl on S", 0)] == (
        reuse / "backbone" / "cvrl_s1200" / "r0",
        reuse / "features" / "cvrl_s1200" / "r0" / "vidsitu",
        reuse / "finetune" / "verb" / "cvrl_s1200" / "r0",
    )
    assert dirs[("cvrl on uniform cast", 0)][0] == out / "backbone" / "cvrl_on_uniform_cast" / "r0"
    by = {j.name: j for j in jobs}
    assert all(set(j.deps) <= set(by) for j in jobs)
    new = by["backbone cvrl_on_uniform_cast r1"].kwargs
    assert (
        new["data"] == str(uniform / "train.csv") and "trainer.max_steps=1200" in new["overrides"] and new["seed"] == 1
    )
    assert by["backbone cvrl_on_S r1"].kwargs["data"] == str(synth / "actions" / "train.csv")
    assert by["verb cvrl_on_uniform_cast r0"].kwargs["data_root"] == str(synth / "vidsitu")  # the movie events of S
    assert by["verb cvrl_on_uniform_cast r0"].kwargs["seeds"] == 3


def test_a_missing_synth_or_reuse_folder_is_one_line_before_any_work(tmp_path):
    from benchmarks.cvrl_appearance import main

    with pytest.raises(SystemExit, match="not a SynthMovies folder"):
        main([str(tmp_path / "out"), "--synth", str(tmp_path / "nothing")])
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "synth_meta.json").write_text("{}")
    with pytest.raises(SystemExit, match="--reuse takes"):
        main([str(tmp_path / "out"), "--synth", str(tmp_path / "s"), "--reuse", str(tmp_path / "none")])
    assert not (tmp_path / "out").exists()


def test_keeping_the_setting_changes_only_the_cast_filmed_clips_included(tmp_path):
    synth = generate(
        tmp_path / "s", "tiny", seed=0, workers=1, progress=False, n_lvu=0, verb_context_p=0.5, action_film_p=0.5
    )
    with pytest.raises(SystemExit, match="filmed"):  # the studio re-cast cannot keep a movie scene
        make_uniform_actions(synth, tmp_path / "studio", workers=1)
    root = make_uniform_actions(synth, tmp_path / "u", workers=1, keep_setting=True)
    old = json.loads((synth / "actions" / "ground_truth.json").read_text())
    new = json.loads((root / "ground_truth.json").read_text())
    assert any(g.get("filmed") for g in old.values()) and any(len(g["characters"]) > 2 for g in old.values())
    for name, g in new.items():
        looks = {(c["id"], c["shape"], c["colour"], c["size"], c["texture"]) for c in g["characters"]}
        assert looks <= {(k, *CAST[k]) for k in range(len(CAST))}
        setting = lambda d: {k: v for k, v in d.items() if k != "characters"}  # noqa: E731
        assert setting(g) == setting(old[name])
    name = next(n for n, g in old.items() if g.get("filmed"))
    videos = (root / "videos", synth / "actions" / "videos")
    with av.open(str(videos[0] / f"{name}.mp4")) as a, av.open(str(videos[1] / f"{name}.mp4")) as b:
        fa, fb = (next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int) for c in (a, b))
    assert fa.shape == fb.shape and np.abs(fa - fb).mean() > 0  # re-rendered with the new cast
