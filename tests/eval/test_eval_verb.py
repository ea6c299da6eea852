"""Verb prediction: Acc@K and Rec@5 (recall_macro_1_th_9) on hand-built cases."""

import pytest

from moviessl.data.vidsitu import load_split
from moviessl.errors import BadInputError
from moviessl.eval import evaluate

FILL = [f"f{i}.01" for i in range(10)]  # single-vote filler verbs: never positives for Rec@5


def gt10(*verbs):
    """A 10-annotator list starting with ``verbs``, padded with distinct fillers."""
    return list(verbs) + FILL[: 10 - len(verbs)]


def split_with(release, tmp_path, vbid):
    vsegs = list(vbid)
    release(tmp_path, "valid", vsegs, records=[], vbid=vbid)
    return load_split(tmp_path, "valid")


def test_doc_toy_case(release, tmp_path, caplog):
    # vidsitu.md §4.6: GT [a, a, b, c, ...], prediction [b, x, y, z, w] -> Acc@1 = 1; only `a` is a
    # positive for recall and it is missed.
    v = "v_abcdefghijk_seg_0_10"
    sp = split_with(release, tmp_path, {v: [gt10("a.01", "a.01", "b.01", "c.01")] * 5})
    preds = [
        {
            "ann_idx": 0,
            "pred_vbs_ev": [["b.01", "x.01", "y.01", "z.01", "w.01"]] * 5,
            "pred_scores_ev": [[0.5, 0.2, 0.1, 0.1, 0.1]] * 5,
        }
    ]
    with caplog.at_level("WARNING"):
        out = evaluate("verb", preds, sp, details=True)
    assert "Rec@5 is undefined on this split" in caplog.text  # reported as 0.0, said so
    assert out["acc@1"] == 100.0 and out["acc@5"] == 100.0
    assert out["seg_acc@1"] == 100.0  # every event of the segment right at rank 1
    assert out["recall_th_0"] == 0.0 and out["num_verbs_th_0"] == 1.0  # `a`: 5 positives, 0 hits
    assert out["recall@5"] == 0.0 and out["num_verbs_th_9"] == 0.0  # fewer than 10 positives


def test_topk_truncation_and_first_ten(release, tmp_path):
    v = "v_abcdefghijk_seg_0_10"
    gt = gt10("a.01") + ["late.01", "late.01"]  # annotators 11-12 are ignored
    sp = split_with(release, tmp_path, {v: [gt] * 5})
    preds = [
        {
            "ann_idx": 0,
            "pred_vbs_ev": [
                ["x.01", "y.01", "a.01", "z.01", "w.01"],  # hit at rank 3
                ["late.01", "x.01"],  # GT beyond the 10th never counts
                ["x.01", "y.01", "z.01", "w.01", "q.01", "a.01"],  # rank 6 is cut (top-5 only)
                ["a.01"],  # hit at rank 1
                ["f3.01", "a.01"],  # single-vote filler still counts for Acc
            ],
        }
    ]
    out = evaluate("verb", preds, sp, details=True)
    assert out["acc@1"] == pytest.approx(100 * 2 / 5)
    assert out["acc@2"] == pytest.approx(100 * 2 / 5)
    assert out["acc@3"] == pytest.approx(100 * 3 / 5)
    assert out["acc@5"] == pytest.approx(100 * 3 / 5)
    assert out["seg_acc@5"] == 0.0
    # late.01 has 2 votes in the 12-long list but only the first 10 are GT: no positives at all
    assert out["num_verbs_th_0"] == 0.0


def test_recall_macro_threshold(release, tmp_path, caplog):
    # talk.01 has >= 2 votes in all 10 events (10 positives, > 9) -> counted at threshold 9;
    # run.02 has 2 votes in 3 events only -> counted at thresholds <= 2 only.
    vbid = {}
    for s in range(2):
        evs = []
        for k in range(5):
            verbs = ["talk.01"] * 3 + (["run.02", "run.02"] if (s, k) in {(0, 0), (0, 1), (1, 4)} else [])
            evs.append(gt10(*verbs))
        vbid[f"v_seg{s}xxxxxxx_seg_{10 * s}_{10 * s + 10}"] = evs
    sp = split_with(release, tmp_path, vbid)
    # a miss names both positives at ranks 6 and 7: only the top 5 count, for recall as for Acc@K
    hit, miss = ["talk.01", "run.02"], [f"nope{i}.01" for i in range(5)] + ["talk.01", "run.02"]
    # talk.01 hit in 7 of 10 events; run.02 hit in 2 of its 3 (events (0,0), (0,1) hit, (1,4) miss)
    p0 = [hit, hit, hit, hit, hit]
    p1 = [hit, hit, miss, miss, miss]
    preds = [{"ann_idx": 1, "pred_vbs_ev": p1}, {"ann_idx": 0, "pred_vbs_ev": p0}]  # shuffled order
    with caplog.at_level("WARNING"):
        out = evaluate("verb", preds, sp, details=True)
    assert out["recall@5"] == pytest.approx(70.0)
    assert out["num_verbs_th_9"] == 1.0 and out["num_verbs_th_3"] == 1.0 and out["num_verbs_th_2"] == 2.0
    assert out["recall_th_2"] == pytest.approx(100 * (0.7 + 2 / 3) / 2)
    assert out["recall_th_3"] == pytest.approx(70.0)
    assert set(evaluate("verb", preds, sp)) == {"acc@1", "acc@5", "recall@5"}
    assert "Rec@5 is undefined" not in caplog.text


def test_nine_annotators_minimum(release, tmp_path):
    v = "v_abcdefghijk_seg_0_10"
    sp = split_with(release, tmp_path, {v: [["a.01"] * 8] * 5})
    with pytest.raises(BadInputError, match="at least 9"):
        evaluate("verb", [{"ann_idx": 0, "pred_vbs_ev": [["a.01"]] * 5}], sp)


def test_null_vbid_lst_is_missing_ground_truth(release, tmp_path):
    # A vinfo entry written with "vbid_lst": null (a hand-built file with no verbs for a segment)
    # loads as "no vbid_lst"; scoring it ended in a TypeError traceback instead of the line that
    # names the vinfo file and the segment.
    import json

    v = "v_abcdefghijk_seg_0_10"
    split_with(release, tmp_path, {v: [gt10("a.01")] * 5})
    path = tmp_path / "vidsitu_annotations" / "vinfo_files" / "vinfo_valid_lb.json"
    info = json.loads(path.read_text())
    info[0]["vbid_lst"] = None
    path.write_text(json.dumps(info))
    sp = load_split(tmp_path, "valid")
    with pytest.raises(BadInputError, match=rf"vinfo_valid_lb\.json: segment {v} \(ann_idx 0\) has no vbid_lst"):
        evaluate("verb", [{"ann_idx": 0, "pred_vbs_ev": [["a.01"]] * 5}], sp)


def test_an_empty_or_folder_vinfo_is_not_called_missing(release, tmp_path):
    """A vinfo file holding [] (or a folder in its place) was reported as "not found", which sends a
    user looking for a file that is there."""
    import shutil

    v = "v_abcdefghijk_seg_0_10"
    split_with(release, tmp_path, {v: [gt10("a.01")] * 5})
    path = tmp_path / "vidsitu_annotations" / "vinfo_files" / "vinfo_valid_lb.json"
    pred = [{"ann_idx": 0, "pred_vbs_ev": [["a.01"]] * 5}]
    path.write_text("[]")
    with pytest.raises(BadInputError, match=r"vinfo_valid_lb\.json: holds no entries"):
        evaluate("verb", pred, load_split(tmp_path, "valid"))
    path.unlink()
    path.mkdir()
    with pytest.raises(BadInputError, match=r"vinfo_valid_lb\.json: is a folder, not the file"):
        evaluate("verb", pred, load_split(tmp_path, "valid"))
    shutil.rmtree(path)
    with pytest.raises(BadInputError, match=r"vinfo_valid_lb\.json: not found"):
        evaluate("verb", pred, load_split(tmp_path, "valid"))


def test_the_tenth_annotator_and_the_fifth_guess_count(release, tmp_path):
    """Per_Ev_Top_K (VidSitu's ``evl_fns.py``) compares ``pred[:5]`` with ``vbid_lst[:10]``. The
    other cases hit at ranks 1-3 and against the first annotators only, so scoring 4 guesses or 9
    annotators passed them: here one event's only match is the 10th annotator's verb, another's the
    5th guess."""
    v = "v_abcdefghijk_seg_0_10"
    gt = FILL[:9] + ["tenth.01", "late.01"]  # the 10th annotator counts, the 11th does not
    sp = split_with(release, tmp_path, {v: [gt] * 5})
    guesses = ["x.01", "y.01", "z.01", "w.01"]
    preds = [
        {
            "ann_idx": 0,
            "pred_vbs_ev": [
                ["tenth.01"],  # hit at rank 1 (annotator 10)
                guesses + ["f0.01"],  # hit at rank 5 only
                ["late.01"] + guesses,  # the 11th annotator: a miss
                guesses + ["v.01", "f0.01"],  # rank 6: a miss
                guesses + ["tenth.01"],  # rank 5, annotator 10
            ],
        }
    ]
    out = evaluate("verb", preds, sp, details=True)
    assert out["acc@1"] == pytest.approx(100 * 1 / 5)
    assert out["acc@4"] == pytest.approx(100 * 1 / 5)
    assert out["acc@5"] == pytest.approx(100 * 3 / 5)


def test_rec5_counts_only_verbs_with_more_than_nine_positive_events(release, tmp_path):
    """``recall_macro_1_th_9``: the macro recall over verbs with > 9 positive events (named by >= 2
    of 10 annotators). In the other cases the only verb with 9 or more had 10, so reading the
    threshold-8 list as Rec@5 passed: run.02 here is a positive in 9 events, talk.01 in 10."""
    vbid = {}
    for s in range(2):
        evs = []
        for k in range(5):
            run = ["run.02", "run.02"] if (s, k) != (1, 4) else []
            evs.append(gt10("talk.01", "talk.01", *run))
        vbid[f"v_seg{s}xxxxxxx_seg_{10 * s}_{10 * s + 10}"] = evs
    sp = split_with(release, tmp_path, vbid)
    preds = [{"ann_idx": s, "pred_vbs_ev": [["talk.01"]] * 5} for s in range(2)]  # talk always, run never
    out = evaluate("verb", preds, sp, details=True)
    assert out["num_verbs_th_9"] == 1.0 and out["num_verbs_th_8"] == 2.0
    assert out["recall@5"] == 100.0  # talk.01 alone: 10 of 10
    assert out["recall_th_8"] == 50.0  # (1 + 0) / 2 with run.02's 9 events
