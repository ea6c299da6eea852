"""benchmarks.action_knobs (the 2 x 2 over the action clips' knobs) and the verb target of
benchmarks.txe_layer_probe: what they plan and read, without training anything."""

import json
from dataclasses import asdict

from benchmarks.action_knobs import CONDITIONS, EVAL_SETS, NO_EXTRAS, plan
from benchmarks.txe_layer_probe import event_rows

from moviessl.synth.generate import PRESETS, resolve_preset


def _preset(job) -> dict:
    kw = job.kwargs
    return asdict(resolve_preset(kw["preset"], **kw["overrides"]))


def test_the_four_folders_differ_only_in_the_action_clips_knobs(tmp_path):
    jobs = {j.name: j for j in plan(tmp_path, None, pretrain_seeds=2, seeds=3)}
    assert all(set(j.deps) <= set(jobs) for j in jobs.values())
    cfg = {c: _preset(jobs[f"synth {c}"]) for c in CONDITIONS}
    demo = asdict(PRESETS["demo"])
    action_knobs = {"action_repeat_s", "verb_context_p"}
    # the knobs at the demo preset's own values, one at a time
    assert {k for k in demo if demo[k] != cfg["off"][k]} - set(NO_EXTRAS) == action_knobs | {"hidden_agent_p"}
    for c, knobs in (("repeat", {"action_repeat_s"}), ("cue", {"verb_context_p"})):
        assert {k for k in cfg[c] if cfg[c][k] != cfg["off"][k]} == knobs
        assert all(cfg[c][k] == demo[k] for k in knobs)
    assert {k: v for k, v in cfg["on"].items() if k not in NO_EXTRAS} == {
        k: v for k, v in demo.items() if k not in NO_EXTRAS
    }


def test_every_backbone_is_scored_on_both_evaluation_sets(tmp_path):
    synth_off = tmp_path / "given"
    jobs = plan(tmp_path / "out", synth_off, pretrain_seeds=1, seeds=2)
    assert "synth off" not in {j.name for j in jobs}  # the given folder is used as it is
    heads = [j for j in jobs if j.name.startswith("finetune")]
    assert len(heads) == (len(CONDITIONS) + 1) * len(EVAL_SETS) * 2  # + random init; verb and relation
    roots = {j.kwargs["data_root"] for j in heads}
    assert roots == {str(synth_off / "vidsitu"), str(tmp_path / "out" / "synth" / "on" / "vidsitu")}
    backbone = {j.name: j.kwargs for j in jobs if j.name.startswith("backbone")}
    assert backbone["backbone cue r0"]["data"] == str(tmp_path / "out" / "synth" / "cue" / "actions" / "train.csv")
    assert backbone["backbone random r0"]["method"] == "random"


def test_the_layer_probe_reads_every_events_verb_scene_or_each_agents_colour(tmp_path):
    chars = [{"id": "c0", "colour": "red"}]
    truth = {
        "v1": {
            "split": "train",
            "characters": chars,
            "events": [{"verb": "run.02", "agent": "c0", "scene": "office"}, {"verb": "jump.01", "scene": "office"}],
        },
        "v2": {
            "split": "valid",
            "characters": chars,
            "events": [{"verb": "walk.01", "agent": "c0", "degraded": 1, "scene": "prison"}],
        },
        "v3": {"split": "valid", "characters": chars, "events": [{"verb": "fall.01"}]},  # no features: left out
    }
    (tmp_path / "ground_truth.json").write_text(json.dumps(truth))
    for v in ("v1", "v2"):
        (tmp_path / f"{v}_feats.npy").write_bytes(b"")
    verbs = event_rows(tmp_path, tmp_path, "verb")
    assert verbs == {"train": [("v1", 0, "run.02", "clean"), ("v1", 1, "jump.01", "clean")],
                     "valid": [("v2", 0, "walk.01", "degraded")]}  # fmt: skip
    scenes = event_rows(tmp_path, tmp_path, "scene")
    assert scenes == {"train": [("v1", 0, "office", "clean"), ("v1", 1, "office", "clean")],
                      "valid": [("v2", 0, "prison", "degraded")]}  # fmt: skip
    agents = event_rows(tmp_path, tmp_path)
    assert agents["train"] == [("v1", 0, "red", "visible, adjacent other")]
    assert agents["valid"] == [("v2", 0, "red", "degraded")]


def test_a_subset_with_another_recipe_makes_only_the_folders_it_reads(tmp_path):
    jobs = plan(tmp_path, tmp_path / "given", 1, 2, backbones=("repeat",), backbone_overrides=("trainer.max_steps=9",))
    names = {j.name for j in jobs}
    assert {n for n in names if n.startswith("synth")} == {"synth repeat", "synth on"}  # trained + the on set
    assert {n for n in names if n.startswith("backbone")} == {"backbone repeat r0"}
    (bb,) = [j for j in jobs if j.name == "backbone repeat r0"]
    assert bb.kwargs["overrides"][-1] == "trainer.max_steps=9"


def test_the_layer_probe_with_no_run_reads_the_stored_features(tmp_path):
    import numpy as np
    from benchmarks.txe_layer_probe import main

    scenes = ["office", "hotel", "prison"]
    truth, rng = {}, np.random.default_rng(0)
    feats = {"carry": tmp_path / "carry", "blind": tmp_path / "blind"}
    for d in feats.values():
        d.mkdir()
    for i in range(24):
        s = scenes[i % 3]
        vseg = f"v{i}"
        truth[vseg] = {"split": "valid" if i >= 18 else "train", "characters": [],
                       "events": [{"verb": "run.02", "scene": s}] * 2}  # fmt: skip
        onehot = np.eye(8, dtype=np.float32)[scenes.index(s)]
        noise = rng.normal(0, 0.1, (2, 8)).astype(np.float32)
        np.save(feats["carry"] / f"{vseg}_feats.npy", onehot + noise)  # the scene in the features
        np.save(feats["blind"] / f"{vseg}_feats.npy", noise)  # nothing of it
    (tmp_path / "ground_truth.json").write_text(json.dumps(truth))
    acc = {}
    for name, d in feats.items():
        res = main([str(tmp_path), str(d), "--target", "scene", "--json", str(tmp_path / f"{name}.json")])
        assert list(res) == ["stored features"] and list(res["stored features"]) == ["features"]
        acc[name] = res["stored features"]["features"]["all"][0]
        assert json.loads((tmp_path / f"{name}.json").read_text())["runs"] == []
    assert acc["carry"] == 100.0 and acc["blind"] < 100.0
