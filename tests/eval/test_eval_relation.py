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


def test_truth_is_the_first_three_records_in_file_order_not_the_srl_references(release, rec, tmp_path):
    """``EvlFn_EvRel`` (VidSitu's ``vidsitu_code/evl_fns.py``) compares entry i with ``EvRel`` of
    record i of the first 3 in file order; the seed-5 shuffle is the SRL evaluator's alone. A lone
    segment's seed-5 permutation is the identity (so ``test_doc_toy_and_mask`` cannot tell them
    apart): the second segment here has 4 records and draws [3, 0, 2, 1], whose SRL references are
    records 3, 0, 2."""
    import numpy as np

    rs = np.random.RandomState(5)
    rs.permutation(3)
    assert list(rs.permutation(4)) == [3, 0, 2, 1]
    v1 = "v_a_b-c_d_e-f_seg_20_30"
    recs = [rec(V) for _ in range(3)]  # NoRel everywhere
    # V1, pair Ev1-Ev3: file order Causes, Causes, NoRel (+ NoRel); shuffled 3, 0, 2: NoRel, Causes, NoRel
    recs += [rec(v1, evrels=[lab] + ["NoRel"] * 3) for lab in ("Causes", "Causes", "NoRel", "NoRel")]
    release(tmp_path, "valid", [V, v1], records=recs)
    sp = load_split(tmp_path, "valid")
    preds = [
        {"ann_idx": 0, "pred_evrels_ev": [["NoRel"] * 3] * 4},
        {"ann_idx": 1, "pred_evrels_ev": [["Causes", "Causes", "NoRel"]] + [["NoRel"] * 3] * 3},
    ]
    out = evaluate("relation", preds, sp, details=True)
    # 7 NoRel pairs x 3 positions all right + V1's Ev1-Ev3: majority Causes, positions 0 and 1, both right
    assert out["num_scored"] == 23.0
    assert out["top1_acc"] == 100.0 and out["acc_Causes"] == 100.0
