"""benchmarks.srl_breakdown: SRL CIDEr split by role (exactly) and how a prediction's mentions link."""

from __future__ import annotations

import math
import pickle

import pytest
from benchmarks.srl_breakdown import cider_by_role, link_stats, main

from moviessl.data.vidsitu import load_split
from moviessl.eval import evaluate
from moviessl.eval.vidsitu import srl_references

V0 = "v_abc_seg_00_10"
SCN = "Scene of the Event"


@pytest.fixture
def split(release, rec, tmp_path):
    man, dog, hotel = ("Arg0 (agent)", "the man"), ("Arg0 (agent)", "a dog"), (SCN, "in a hotel")
    roles = [[man, hotel], [man, hotel], [dog, hotel], [], []]
    release(tmp_path, "valid", [V0], records=[rec(V0, roles=roles) for _ in range(3)])
    return load_split(tmp_path, "valid")


PRED = {
    "Ev1": {"Arg0": "the man", "AScn": "in a hotel"},
    "Ev2": {"Arg0": "the man", "AScn": "at an airport"},
    "Ev3": {"Arg0": "the man", "AScn": "in a hotel"},
    "Ev4": {},
    "Ev5": {},
}


def test_link_shares_count_pairs_of_one_clips_mentions(split):
    s = link_stats({0: PRED}, split)
    # same role: Arg0 pairs (1,2) both linked, (1,3) and (2,3) linked only by the prediction;
    # AScn pairs (1,3) both linked, (1,2) and (2,3) only by the reference
    assert s["pred shared same role"] == pytest.approx(100 * 4 / 6)
    assert s["ref shared same role"] == pytest.approx(100 * 4 / 6)
    assert s["links kept same role"] == 50.0 and s["links right same role"] == 50.0
    # Arg0 x AScn: no phrase shared on either side, so the link shares have no pairs
    assert s["pred shared other role"] == 0.0 and s["ref shared other role"] == 0.0
    assert math.isnan(s["links kept other role"]) and math.isnan(s["links right other role"])
    assert s["distinct phrases"] == 3 and s["distinct phrases, reference"] == 3


def test_the_roles_shares_add_up_to_the_overall_cider(split):
    shares = cider_by_role({0: PRED}, split, srl_references(split))
    overall = evaluate("srl", [{"ann_idx": 0, "vb_output": PRED}], split)["cider"]
    assert sum(shares.values()) == pytest.approx(overall)
    assert shares["from AScn"] > 0 and shares["from Arg1"] == 0.0  # no Arg1 item
    # every Arg0 phrase wrong, every scene right: the whole score is the scene's (items kept with their role)
    only_scene = {ev: {**r, "Arg0": "zzz"} if r else r for ev, r in PRED.items()}
    only_scene["Ev2"]["AScn"] = "in a hotel"
    shares = cider_by_role({0: only_scene}, split, srl_references(split))
    overall = evaluate("srl", [{"ann_idx": 0, "vb_output": only_scene}], split)["cider"]
    assert shares["from Arg0"] == 0.0 and shares["from AScn"] == pytest.approx(overall) and overall > 0


def test_rows_are_compared_with_the_first_paired_by_replicate(split, tmp_path, capsys):
    right = {**PRED, "Ev2": {"Arg0": "the man", "AScn": "in a hotel"}, "Ev3": {"Arg0": "a dog", "AScn": "in a hotel"}}
    rows = {"a": [PRED, PRED], "b": [right, PRED]}  # row b: one replicate right, one as row a
    for row, reps in rows.items():
        for r, pred in enumerate(reps):
            d = tmp_path / row / f"r{r}" / "seed0"
            d.mkdir(parents=True)
            (d / "predictions.pkl").write_bytes(pickle.dumps([{"ann_idx": 0, "vb_output": pred}]))
    res = main([str(tmp_path), str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "out.json")])
    a, b = res[str(tmp_path / "a")], res[str(tmp_path / "b")]
    assert a["cider"]["se"] == 0.0 and b["cider"]["n"] == 2
    assert b["cider"]["paired"] and b["cider"]["diff"] == pytest.approx(b["cider"]["mean"] - a["cider"]["mean"])
    assert b["cider"]["diff"] > 0 and b["lea"]["diff"] > 0
    for row in (a, b):  # every role but the scene, and the scene: the whole score
        assert row["from all but AScn"]["mean"] + row["from AScn"]["mean"] == pytest.approx(row["cider"]["mean"])
    # row b's gain is its right Arg0 phrases and its right scene, each in its own share
    assert b["from all but AScn"]["diff"] > 0 and b["from AScn"]["diff"] > 0
    assert "| b - a (paired) |" in capsys.readouterr().out.replace(str(tmp_path) + "/", "")
    assert (tmp_path / "out.json").is_file()
