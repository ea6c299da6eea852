"""Semantic roles: item selection, CIDEr/ROUGE-L (hand-computed), CIDEr-verb/-arg, LEA, shuffling."""

import math

import numpy as np
import pytest

from moviessl.data.vidsitu import load_split
from moviessl.errors import BadInputError
from moviessl.eval import evaluate

V0, V1 = "v_abcdefghijk_seg_0_10", "v_a_b-c_d_e-f_seg_20_30"
UNSCORED = [("Arg3 (thing)", "x"), ("ArgM (manner)", "slowly"), ("ArgM (direction)", "away")]


def one_segment(release, rec, tmp_path, roles, verbs=("drive.01", "drive.01", "sit.01", "sit.01", "sit.01"), n=3):
    release(tmp_path, "valid", [V0], records=[rec(V0, verbs=verbs, roles=roles) for _ in range(n)])
    return load_split(tmp_path, "valid")


def srl(sp, vb_output, **kw):
    return evaluate("srl", [{"ann_idx": 0, "vb_output": vb_output}], sp, details=True, **kw)


def test_hand_computed_cider_rouge(release, rec, tmp_path):
    roles = [[("Arg0 (driver)", "a man")], [("Arg1 (vehicle)", "a car")], UNSCORED, UNSCORED, []]
    sp = one_segment(release, rec, tmp_path, roles)
    out = srl(
        sp,
        {
            "Ev1": {"vb_id": "drive.01", "Arg0": "a man", "Arg3": "x"},
            "Ev2": {"Arg1": "a dog"},
            "Ev3": {"Arg3": "x", "AMnr": "slowly"},
            "Ev4": {},
            "Ev5": {},
        },
    )
    assert out["num_items"] == 2.0  # Arg3 / AMnr / ADir are never scored
    # N = 2 items. df: "a" 2 -> idf 0; "man", "car", ("a","man"), ("a","car") 1 -> idf log 2.
    # item 1: unigram and bigram cosines 1, no 3/4-grams -> 10 * (1 + 1 + 0 + 0) / 4 = 5
    # item 2: "a" weighs 0 and "dog" is not in the refs -> 0.       corpus = 2.5
    assert out["cider"] == pytest.approx(250.0)
    assert out["cider_verb"] == pytest.approx(250.0)  # both items under drive.01: the same call
    assert out["cider_arg"] == 0.0  # two 1-item groups: log 1 = 0 zeroes every weight
    assert out["Arg0_cider"] == 0.0 and out["Arg1_cider"] == 0.0
    # ROUGE-L: item 1 = 1; item 2 LCS 1 of 2 -> P = R = 1/2 -> F = 1/2 (beta 1.2)
    assert out["rouge_l"] == pytest.approx(75.0)
    # singletons both sides -> LEA 1
    assert out["lea"] == pytest.approx(100.0)


def test_single_item_verb_groups_score_zero(release, rec, tmp_path):
    roles = [[("Arg0 (driver)", "a man")], [("Arg1 (vehicle)", "a car")], [], [], []]
    sp = one_segment(release, rec, tmp_path, roles, verbs=("drive.01", "park.01", "sit.01", "sit.01", "sit.01"))
    out = srl(sp, {"Ev1": {"Arg0": "a man"}, "Ev2": {"Arg1": "a dog"}, "Ev3": {}, "Ev4": {}, "Ev5": {}})
    assert out["cider"] == pytest.approx(250.0)
    assert out["cider_verb"] == 0.0 and out["num_verb_groups"] == 2.0


def test_missing_role_scores_empty_string(release, rec, tmp_path):
    roles = [[("Arg0 (driver)", "a man")], [("Arg1 (vehicle)", "a car")], [], [], []]
    sp = one_segment(release, rec, tmp_path, roles)
    out = srl(sp, {"Ev1": {"Arg0": "a man"}, "Ev2": {}, "Ev3": {}, "Ev4": {}, "Ev5": {}})
    assert out["rouge_l"] == pytest.approx(50.0)  # "" splits to [""]: no overlap with "a car"
    # Ev2_Arg1 is a missing system mention: R = 1/2, P = 1 -> F = 2/3
    assert out["lea"] == pytest.approx(100 * 2 / 3)
    # no tokenisation: case and punctuation count
    out2 = srl(sp, {"Ev1": {"Arg0": "A man."}, "Ev2": {"Arg1": "a car"}, "Ev3": {}, "Ev4": {}, "Ev5": {}})
    assert out2["rouge_l"] == pytest.approx(50.0)


def test_raw_role_keys_score_missing_with_a_warning(release, rec, tmp_path, caplog):
    roles = [[("Arg0 (driver)", "a man")], [("Arg1 (vehicle)", "a car")], [], [], []]
    sp = one_segment(release, rec, tmp_path, roles)
    missing = srl(sp, {"Ev1": {"Arg0": "a man"}, "Ev2": {}, "Ev3": {}, "Ev4": {}, "Ev5": {}})
    with caplog.at_level("WARNING"):
        raw = srl(sp, {"Ev1": {"Arg0": "a man"}, "Ev2": {"Arg1 (vehicle)": "a car"}, "Ev3": {}, "Ev4": {}, "Ev5": {}})
    # the reference reads short names only: the raw key is a missing role, scored as such
    assert raw["rouge_l"] == missing["rouge_l"] and raw["lea"] == missing["lea"]
    assert "1 role keys are raw annotation names (first: 'Arg1 (vehicle)')" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        srl(sp, {"Ev1": {"Arg0": "a man", "ArgM (manner)": "x"}, "Ev2": {}, "Ev3": {}, "Ev4": {}, "Ev5": {}})
    assert "raw annotation names" not in caplog.text  # an unscored role is nobody's loss


def test_lea_doc_toy_and_identical_empty_strings(release, rec, tmp_path):
    roles = [[("Arg0 (agent)", "the man"), ("Arg1 (thing)", "a ball")], [("Arg0 (agent)", "the man")], [], [], []]
    sp = one_segment(release, rec, tmp_path, roles)
    rest = {"Ev3": {}, "Ev4": {}, "Ev5": {}}
    out = srl(sp, {"Ev1": {"Arg0": "he", "Arg1": "a ball"}, "Ev2": {"Arg0": "the man"}, **rest})
    assert out["lea"] == pytest.approx(100 / 3)  # vidsitu.md §4.6
    # two "" predictions corefer with each other: here that is exactly the key clustering
    out = srl(sp, {"Ev1": {"Arg0": "", "Arg1": "a ball"}, "Ev2": {"Arg0": ""}, **rest})
    assert out["lea"] == pytest.approx(100.0)
    # a prediction without Ev1 is skipped by the coreference scorer (no mentions at all -> 0)
    out = srl(sp, {"Ev2": {"Arg0": "the man"}})
    assert out["lea"] == 0.0 and out["rouge_l"] > 0


def test_all_empty_references_group_scores_zero(release, rec, tmp_path):
    # ALoc references are all "": pycocoevalcap's CIDEr would crash on that group alone
    roles = [
        [("Arg0 (driver)", "a man"), ("ArgM (location)", "")],
        [("Arg1 (vehicle)", "a car")],
        [("Scene of the Event", "street")],
        [],
        [],
    ]
    sp = one_segment(release, rec, tmp_path, roles)
    out = srl(
        sp,
        {
            "Ev1": {"Arg0": "a man", "ALoc": ""},
            "Ev2": {"Arg1": "a car"},
            "Ev3": {"AScn": "street"},
            "Ev4": {},
            "Ev5": {},
        },
    )
    assert out["num_items"] == 4.0
    assert out["ALoc_cider"] == 0.0 and math.isfinite(out["cider"])
    assert out["ALoc_rouge"] == 100.0  # pycocoevalcap ROUGE: [""] vs [""] is an LCS of 1
    # a role the prediction lacks is scored as "" (the reference's hypo_lst = [""]), not as some
    # other non-matching string: against these "" references it scores as the "" prediction did
    # (test_missing_role_scores_empty_string's "a car" reference could not tell the two apart)
    no_aloc = {"Ev1": {"Arg0": "a man"}, "Ev2": {"Arg1": "a car"}, "Ev3": {"AScn": "street"}, "Ev4": {}, "Ev5": {}}
    lacking = srl(sp, no_aloc)
    assert lacking["num_items"] == 4.0 and lacking["ALoc_rouge"] == 100.0


def test_seed5_permutation_selects_references(release, rec, tmp_path):
    # Segment 0 (3 records, no scored roles) consumes the first permutation; segment 1 has 4
    # records whose Arg0 differ: the one at shuffled index 3 is dropped.
    recs = [rec(V0, roles=[UNSCORED] * 5) for _ in range(3)]
    recs += [rec(V1, roles=[[("Arg0 (agent)", f"p{i}")], [], [], [], []]) for i in range(4)]
    release(tmp_path, "valid", [V0, V1], records=recs)
    sp = load_split(tmp_path, "valid")
    np.random.seed(5)
    np.random.permutation(3)
    perm = list(np.random.permutation(4))
    dropped = perm[3]
    assert dropped == 1  # seeding once: a fresh seed per segment would drop record 3 instead
    state = np.random.get_state()[1].copy()
    scores = {}
    for i in range(4):
        preds = [
            {"ann_idx": 1, "vb_output": {"Ev1": {"Arg0": f"p{i}"}, "Ev2": {}, "Ev3": {}, "Ev4": {}, "Ev5": {}}},
            {"ann_idx": 0, "vb_output": {}},
        ]
        scores[i] = evaluate("srl", preds, sp)["rouge_l"]
    assert scores == {i: (0.0 if i == dropped else 100.0) for i in range(4)}
    assert (np.random.get_state()[1] == state).all()  # the global RNG is left alone


def test_malformed_vb_output(release, rec, tmp_path):
    sp = one_segment(release, rec, tmp_path, [[("Arg0 (a)", "x")], [], [], [], []])
    with pytest.raises(BadInputError, match="unknown event 'Ev6'"):
        srl(sp, {"Ev6": {}})
    with pytest.raises(BadInputError, match="lacks Ev3"):
        srl(sp, {"Ev1": {}, "Ev2": {}, "Ev4": {}, "Ev5": {}})
    with pytest.raises(BadInputError, match=r"Ev1.Arg0: phrase must be a string"):
        srl(sp, {"Ev1": {"Arg0": 3}, "Ev2": {}, "Ev3": {}, "Ev4": {}, "Ev5": {}})
    with pytest.raises(BadInputError, match="short names"):
        srl(sp, {"Ev1": {"Args": {}}, "Ev2": {}, "Ev3": {}, "Ev4": {}, "Ev5": {}})


@pytest.mark.parametrize("task", ["srl", "relation"])
def test_fewer_than_three_annotators_is_bad_ground_truth(release, rec, tmp_path, task):
    """The reference's valid loader asserts >= 3 records per segment; with 2 everywhere, scoring
    would silently average over 2 annotators (LEA) or break the 3-entry relation format."""
    sp = one_segment(release, rec, tmp_path, [[("Arg0 (a)", "x")], [], [], [], []], n=2)
    entry = {"ann_idx": 0, "vb_output": {ev: {} for ev in ("Ev1", "Ev2", "Ev3", "Ev4", "Ev5")}}
    entry["pred_evrels_ev"] = [["NoRel"] * 3] * 4
    with pytest.raises(BadInputError, match=r"has 2 annotation records; VidSitu's evaluation needs at least 3"):
        evaluate(task, [entry], sp)


def test_a_reference_event_without_args_is_bad_ground_truth(release, rec, tmp_path):
    """One annotator's event verb-only (no Args / Arg_List, which the reader accepts for noann
    files) in an SRL-annotated file: LEA reads every reference record's roles of all five events,
    and this ended in a KeyError traceback. The first record's Ev2 holds only an unscored role, so
    no CIDEr item looks the role up in the other records first."""
    roles = [[("Arg0 (talker)", "man")], [("Arg3 (x)", "y")], [], [], []]
    recs = [rec(V0, roles=roles) for _ in range(3)]
    del recs[1]["Ev2"]["Args"], recs[1]["Ev2"]["Arg_List"]
    ann = release(tmp_path, "valid", [V0], records=recs)
    sp = load_split(tmp_path, "valid")
    vb_output = {ev: {"Arg0": "man"} for ev in ("Ev1", "Ev2", "Ev3", "Ev4", "Ev5")}
    with pytest.raises(BadInputError) as e:
        srl(sp, vb_output)
    msg = str(e.value)
    assert msg.startswith(str(ann / "vseg_ann_files" / "vsann_valid_lb.json") + ": ")
    assert "record 2 of 3 (file order) has no Args on Ev2" in msg and "\n" not in msg
    # a fourth record that the seed-5 selection drops may be verb-only: nothing of it is read
    full = [rec(V0, roles=roles) for _ in range(4)]
    release(tmp_path, "valid", [V0], records=full)
    ok = srl(load_split(tmp_path, "valid"), vb_output)
    dropped = int(np.random.RandomState(5).permutation(4)[3])
    del full[dropped]["Ev2"]["Args"], full[dropped]["Ev2"]["Arg_List"]
    release(tmp_path, "valid", [V0], records=full)
    assert srl(load_split(tmp_path, "valid"), vb_output) == ok


EMPTY = {ev: {} for ev in ("Ev1", "Ev2", "Ev3", "Ev4", "Ev5")}


def test_items_and_verb_groups_come_from_the_first_shuffled_reference(release, rec, tmp_path):
    """VidSitu's ``prepare_hyp_gts`` (``vidsitu_code/evl_fns.py``) reads the scored role keys and the
    CIDEr-verb group of each event from ``gt_vseg_assgns[0]``: the first record after the seed-5
    shuffle, not the first in file order. Every other fixture here has a single segment, whose seed-5
    permutation is the identity (3 or 4 records), so file order passed unseen; segment V1 comes
    second and draws [2, 0, 1]: its first reference is file record 2."""
    rs = np.random.RandomState(5)
    rs.permutation(3)
    assert list(rs.permutation(3)) == [2, 0, 1]
    recs = [rec(V0, roles=[UNSCORED] * 5) for _ in range(3)]
    wide = [[("Arg0 (driver)", "a man"), ("ArgM (location)", "on a road")], [("Arg1 (car)", "a car")], [], [], []]
    recs += [rec(V1, verbs=("ride.01", "park.01") + ("sit.01",) * 3, roles=wide) for _ in range(2)]
    # file record 2 of V1: one role fewer on Ev1 and another verb on Ev1 / Ev2
    narrow = [[("Arg0 (driver)", "a man")], [("Arg1 (car)", "a car")], [], [], []]
    recs.append(rec(V1, verbs=("drive.01",) * 2 + ("sit.01",) * 3, roles=narrow))
    release(tmp_path, "valid", [V0, V1], records=recs)
    sp = load_split(tmp_path, "valid")
    preds = [
        {"ann_idx": 0, "vb_output": EMPTY},
        {"ann_idx": 1, "vb_output": {**EMPTY, "Ev1": {"Arg0": "a man"}, "Ev2": {"Arg1": "a car"}}},
    ]
    out = evaluate("srl", preds, sp, details=True)
    assert out["num_items"] == 2.0  # Ev1 Arg0 and Ev2 Arg1: record 2 has no ALoc to score
    assert out["num_verb_groups"] == 1.0  # both under drive.01, record 2's verb on both events
    assert "ALoc_cider" not in out
    assert out["rouge_l"] == 100.0


def test_lea_is_scored_against_the_same_three_shuffled_references(release, rec, tmp_path):
    """LEA is one F1 per reference annotator of ``gts_orig`` (VidSitu's ``evl_fns.py``): the 3
    records left after the seed-5 shuffle and the drop of shuffled index 3, the same as CIDEr's.
    V1 comes second and draws [3, 0, 2, 1]: file record 1 is dropped, so its annotation (the man of
    Ev1 and Ev2 written differently: no coreference) must not count, although it is among the
    first 3 in file order."""
    rs = np.random.RandomState(5)
    rs.permutation(3)
    assert list(rs.permutation(4)) == [3, 0, 2, 1]
    recs = [rec(V0, roles=[UNSCORED] * 5) for _ in range(3)]
    for i in range(4):
        second = "a man" if i == 1 else "the man"
        recs.append(rec(V1, roles=[[("Arg0 (agent)", "the man")], [("Arg0 (agent)", second)], [], [], []]))
    release(tmp_path, "valid", [V0, V1], records=recs)
    sp = load_split(tmp_path, "valid")
    preds = [
        {"ann_idx": 0, "vb_output": EMPTY},
        {"ann_idx": 1, "vb_output": {**EMPTY, "Ev1": {"Arg0": "he"}, "Ev2": {"Arg0": "he"}}},
    ]
    out = evaluate("srl", preds, sp, details=True)
    # V0 has no scored role (no mention either side); V1's prediction corefers the two mentions,
    # as records 3, 0 and 2 do: F1 1 for each, where record 1 would give 0 (singleton keys)
    assert [out[f"lea_annotator{j}"] for j in range(3)] == [100.0] * 3
    assert out["lea"] == 100.0


def test_lea_is_scored_per_annotator_and_rouge_grouped_by_verb_and_role(release, rec, tmp_path):
    """Three annotators who disagree on coreference (every other test gives 3 identical records,
    so scoring all against one annotator, or only the first, passed), and verb groups that differ
    from role groups (so rouge_verb and rouge_arg are told apart)."""
    arg0 = "Arg0 (agent)"
    phrases = [("the man", "the man", "the man"), ("the man", "the man", "a dog"), ("the man", "a boy", "a dog")]
    recs = [
        rec(
            V0, verbs=("drive.01", "drive.01", "sit.01", "sit.01", "sit.01"), roles=[[(arg0, p)] for p in ph] + [[], []]
        )
        for ph in phrases
    ]
    release(tmp_path, "valid", [V0], records=recs)
    sp = load_split(tmp_path, "valid")
    out = srl(sp, {"Ev1": {"Arg0": "the man"}, "Ev2": {"Arg0": "the man"}, "Ev3": {"Arg0": "y"}, "Ev4": {}, "Ev5": {}})
    # system clusters {Ev1, Ev2}, {Ev3}. Key all-one {1,2,3}: R = 3 * 1/3 / 3, P = (2 * 1 + 0) / 3 -> F = 4/9.
    # Key {1,2},{3}: F = 1. Key all singletons: R = 1/3 (only Ev3), P = 1/3 -> F = 1/3.
    f1s = sorted(out[f"lea_annotator{j}"] for j in range(3))
    assert f1s == pytest.approx([100 / 3, 400 / 9, 100.0])
    assert out["lea"] == pytest.approx(100 * 16 / 27)
    # precision and recall, each the mean over annotators: P 2/3, 1, 1/3; R 1/3, 1, 1/3
    assert out["lea_precision"] == pytest.approx(100 * (2 / 3 + 1 + 1 / 3) / 3)
    assert out["lea_recall"] == pytest.approx(100 * (1 / 3 + 1 + 1 / 3) / 3)
    # ROUGE-L per item (best reference): Ev1 1, Ev2 1 ("the man" is a reference), Ev3 0
    assert out["rouge_l"] == pytest.approx(200 / 3)
    assert out["rouge_arg"] == pytest.approx(200 / 3)  # one role group: Arg0 = all three items
    assert out["rouge_verb"] == pytest.approx(50.0)  # drive.01 {Ev1, Ev2} = 1, sit.01 {Ev3} = 0
    assert out["Arg0_rouge"] == pytest.approx(200 / 3)


def test_lea_system_mentions_are_each_annotators_own_roles(release, rec, tmp_path):
    """VidSitu's ``get_coref_dct_for_pred(hypo, gts1)`` builds the system clusters over the roles of
    the annotator being scored against, not of the first one. In the other cases every annotator
    had the same roles, so using the first annotator's passed: here annotators 2 and 3 add Ev1's
    Arg1, which the prediction fills (a lone 3-record segment's seed-5 order is the file order)."""
    man = [("Arg0 (agent)", "the man")]
    a = rec(V0, roles=[man, man, [], [], []])
    b = [rec(V0, roles=[[*man, ("Arg1 (thing)", "a ball")], man, [], [], []]) for _ in range(2)]
    release(tmp_path, "valid", [V0], records=[a, *b])
    sp = load_split(tmp_path, "valid")
    out = srl(sp, {"Ev1": {"Arg0": "he", "Arg1": "he"}, "Ev2": {"Arg0": "he"}, "Ev3": {}, "Ev4": {}, "Ev5": {}})
    # annotator 1: key {E1A0, E2A0}, system (its roles only) {E1A0, E2A0} -> F = 1
    # annotators 2, 3: key {E1A0, E2A0}, {E1A1}; system {E1A0, E1A1, E2A0} ("he" x 3):
    #   R = (2 * 1/1 + 1 * 0) / 3 = 2/3; P = 3 * (1 of 3 links) / 3 = 1/3 -> F = 4/9
    #   (over annotator 1's roles the system would be {E1A0, E2A0}: P = 1, F = 4/5)
    assert [out[f"lea_annotator{j}"] for j in range(3)] == pytest.approx([100.0, 400 / 9, 400 / 9])
    assert out["lea"] == pytest.approx(100 * 17 / 27)
