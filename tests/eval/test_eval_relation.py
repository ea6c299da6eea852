"""Event relations: majority masking, Top-1 and mean per-class accuracy."""

import pytest

from moviessl.data.vidsitu import load_split
from moviessl.errors import BadInputError
from moviessl.eval import evaluate

V = "v_abcdefghijk_seg_0_10"


def build(release, rec, tmp_path, gts, extra=()):
    """gts[pair] = 3 GT labels (one per record, file order) for pairs Ev1-3, Ev2-3, Ev3-4, Ev3-5."""
    recs = [rec(V, evrels=[gts[p][i] for p in range(4)]) for i in range(3)] + [rec(V, evrels=e) for e in extra]
    release(tmp_path, "valid", [V], records=recs)
    return load_split(tmp_path, "valid")


def test_doc_toy_and_mask(release, rec, tmp_path):
    gts = [
        ["Causes", "Causes", "NoRel"],  # positions 0, 1 scored
        ["NoRel", "NoRel", "NoRel"],  # all 3 scored
        ["Causes", "Enables", "NoRel"],  # 1-1-1: masked out
        ["Enables", "Enables", "Causes"],
    ]  # positions 0, 1 scored
    # a 4th record (not among the first 3 in file order) must be ignored
    sp = build(release, rec, tmp_path, gts, extra=[["Reaction To"] * 4])
    pred = [
        ["Causes", "Enables", "NoRel"],  # 1 of 2 (position 2 ignored)
        ["NoRel", "NoRel", "Null"],  # 2 of 3, Null always wrong
        ["Causes", "Enables", "NoRel"],  # masked: perfect but not counted
        ["Enables", "Causes", "Causes"],
    ]  # 1 of 2
    out = evaluate(
        "relation", [{"ann_idx": 0, "pred_evrels_ev": pred, "pred_scores_ev": [[0.9] * 3] * 4}], sp, details=True
    )
    assert out["top1_acc"] == pytest.approx(100 * 4 / 7)
    assert out["mean_acc"] == pytest.approx(100 * (1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert out["num_scored"] == 7.0
    assert out["acc_Causes"] == 50.0 and out["acc_NoRel"] == pytest.approx(200 / 3)


def test_class_only_in_masked_pair_is_skipped(release, rec, tmp_path):
    # "Reaction To" is the Counter top label of a masked 1-1-1 pair only: the reference divides by
    # zero there; it must not enter the mean.
    gts = [["Reaction To", "Enables", "NoRel"], ["NoRel"] * 3, ["NoRel"] * 3, ["Causes", "Causes", "Causes"]]
    sp = build(release, rec, tmp_path, gts)
    pred = [["NoRel"] * 3, ["NoRel"] * 3, ["NoRel", "Causes", "Causes"], ["Causes"] * 3]
    out = evaluate("relation", [{"ann_idx": 0, "pred_evrels_ev": pred}], sp, details=True)
    assert out["mean_acc"] == pytest.approx(100 * (4 / 6 + 1) / 2)
    assert out["top1_acc"] == pytest.approx(100 * 7 / 9)
    assert "acc_Reaction_To" not in out


def test_all_masked_is_an_error(release, rec, tmp_path):
    sp = build(release, rec, tmp_path, [["Causes", "Enables", "NoRel"]] * 4)
    with pytest.raises(BadInputError, match="majority"):
        evaluate("relation", [{"ann_idx": 0, "pred_evrels_ev": [["NoRel"] * 3] * 4}], sp)


def test_wrong_lengths_and_labels(release, rec, tmp_path):
    sp = build(release, rec, tmp_path, [["NoRel"] * 3] * 4)
    with pytest.raises(BadInputError, match=r"pred_evrels_ev\[2\] \(Ev3-Ev4\) has 2 labels, expected 3"):
        evaluate(
            "relation", [{"ann_idx": 0, "pred_evrels_ev": [["NoRel"] * 3] * 2 + [["NoRel"] * 2, ["NoRel"] * 3]}], sp
        )
    with pytest.raises(BadInputError, match="must hold 4 lists"):
        evaluate("relation", [{"ann_idx": 0, "pred_evrels_ev": [["NoRel"] * 3] * 5}], sp)
    with pytest.raises(BadInputError, match="label 4"):
        evaluate("relation", [{"ann_idx": 0, "pred_evrels_ev": [[4, 4, 4]] * 4}], sp)
