"""A full release-layout fixture through evaluate_files and `moviessl evaluate vidsitu`."""

import json
import os
import pickle

import pytest

from moviessl.cli import main
from moviessl.errors import BadInputError
from moviessl.eval import evaluate_files, load_submission

VSEGS = ["v_abcdefghijk_seg_0_10", "v_a_b-c_d_e-f_seg_20_30", "v_zzzzzzzzzzz_seg_100_110", "v_--__--__--_seg_5_15"]
REL = ["Causes", "Reaction To", "Enables", "NoRel"]


@pytest.fixture
def root(tmp_path, release, rec):
    vbid, records = {}, []
    for s, v in enumerate(VSEGS):
        vbid[v] = [[f"v{s}{k}.01"] * 4 + [f"w{k}.01"] * 3 + [f"u{j}.01" for j in range(3)] for k in range(5)]
        roles = [
            [("Arg0 (agent)", "the man"), ("Arg1 (thing)", f"ball {s}"), ("Scene of the Event", "a park")],
            [("Arg0 (agent)", "the man"), ("ArgM (location)", "on the grass")],
            [("Arg0 (agent)", "a woman in red"), ("ArgM (manner)", "fast")],
            [("Arg1 (thing)", "the dog"), ("Arg2 (to)", "the man")],
            [("Arg0 (agent)", "the dog")],
        ]
        n = 4 if s == 1 else 3
        for i in range(n):
            rs = [[(raw, p if i == 0 else f"{p} {i}") for raw, p in r] for r in roles]
            evrels = [REL[(s + p + (i == 2)) % 4] for p in range(4)]
            records.append(rec(v, verbs=[f"v{s}{k}.01" for k in range(5)], roles=rs, evrels=evrels))
    # interleave the segments' records, as in the released files
    records.sort(key=lambda r: (int(r["Ev1"]["Arg_List"]["Arg0 (agent)"]), r["Ev1"]["Args"]["Arg0 (agent)"]))
    return release(tmp_path / "data", "valid", VSEGS, records=records, vbid=vbid).parent


def perfect_verb(reverse=False):
    preds = [
        {
            "ann_idx": i,
            "pred_vbs_ev": [[f"v{i}{k}.01", f"w{k}.01", "a.01", "b.01", "c.01"] for k in range(5)],
            "pred_scores_ev": [[0.5, 0.2, 0.1, 0.1, 0.1]] * 5,
        }
        for i in range(len(VSEGS))
    ]
    return preds[::-1] if reverse else preds


def srl_preds():
    return [
        {
            "ann_idx": i,
            "vb_output": {
                "Ev1": {"vb_id": f"v{i}0.01", "Arg0": "the man", "Arg1": "ball", "AScn": "a park"},
                "Ev2": {"Arg0": "the man", "ALoc": "on grass"},
                "Ev3": {"Arg0": "a woman"},
                "Ev4": {"Arg1": "the dog", "Arg2": "the man"},
                "Ev5": {"Arg0": "the dog"},
            },
        }
        for i in range(len(VSEGS))
    ]


def relation_preds():
    return [
        {"ann_idx": i, "pred_evrels_ev": [[REL[(i + p) % 4]] * 3 for p in range(4)], "pred_scores_ev": [[1.0] * 3] * 4}
        for i in range(len(VSEGS))
    ]


def dump(tmp_path, name, obj):
    p = tmp_path / name
    if name.endswith(".json"):
        p.write_text(json.dumps(obj))
    else:
        p.write_bytes(pickle.dumps(obj))
    return p


def run_cli(capsys, *argv):
    rc = main(["evaluate", "vidsitu", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_all_tasks_pickle_json_and_cli(root, tmp_path, capsys):
    for task, preds, keys in [
        ("verb", perfect_verb(True), {"acc@1", "acc@5", "recall@5"}),
        ("srl", srl_preds(), {"cider", "cider_verb", "cider_arg", "rouge_l", "lea"}),
        ("relation", relation_preds(), {"mean_acc", "top1_acc"}),
    ]:
        pkl = dump(tmp_path, f"{task}.pkl", preds)
        js = dump(tmp_path, f"{task}.json", preds)
        a = evaluate_files(task, pkl, root / "vidsitu_annotations", "valid")
        assert set(a) == keys
        assert evaluate_files(task, js, root, "valid") == a  # the folder holding vidsitu_annotations works too
        rc, out, err = run_cli(
            capsys, "--task", task, "--pred", str(pkl), "--data-root", str(root / "vidsitu_annotations")
        )
        assert rc == 0 and err == ""
        assert out.count("\n") == 1 and json.loads(out) == a
        if task == "verb":
            assert a == {"acc@1": 100.0, "acc@5": 100.0, "recall@5": 0.0}  # no verb reaches 10 positives
        if task == "relation":
            # GT pair p of segment s: REL[(s+p)%4] from records 0 and 1 (majority), record 2 differs
            assert a == {"mean_acc": 100.0, "top1_acc": 100.0}
        if task == "srl":
            assert 0 < a["cider"] and 0 < a["rouge_l"] < 100 and a["lea"] == pytest.approx(100.0)


def test_details_flag_and_out_file(root, tmp_path, capsys):
    pkl = dump(tmp_path, "v.pkl", perfect_verb())
    rc, out, _ = run_cli(
        capsys,
        "--task",
        "vb",
        "--pred",
        str(pkl),
        "--data-root",
        str(root),
        "--details",
        "--out",
        str(tmp_path / "res.json"),
    )
    res = json.loads(out)
    assert rc == 0 and res["num_events"] == 20.0 and "recall_th_0" in res
    assert json.loads((tmp_path / "res.json").read_text()) == res


def test_split_file_subset(root, tmp_path):
    sub = tmp_path / "sub.json"
    sub.write_text(json.dumps(VSEGS[2:]))
    preds = [dict(p, ann_idx=p["ann_idx"] - 2) for p in relation_preds()[2:]]
    # ann_idx now refers to the filtered list; predictions for segments 2, 3 are perfect
    assert evaluate_files("relation", dump(tmp_path, "r.json", preds), root, split_file=sub) == {
        "mean_acc": 100.0,
        "top1_acc": 100.0,
    }


def test_duplicates_keep_first(root, tmp_path):
    preds = perfect_verb() + [{"ann_idx": 0, "pred_vbs_ev": "garbage"}]
    assert evaluate_files("verb", dump(tmp_path, "v.json", preds), root)["acc@1"] == 100.0
    wrong_first = [{"ann_idx": 0, "pred_vbs_ev": [["nope.01"]] * 5}] + perfect_verb()
    assert evaluate_files("verb", dump(tmp_path, "v2.json", wrong_first), root)["acc@1"] == 75.0


@pytest.mark.parametrize(
    "preds,msg",
    [
        (perfect_verb()[:3], r"missing ann_idx 3 \(1 of 4 segments"),
        (perfect_verb() + [{"ann_idx": 4, "pred_vbs_ev": []}], "entry 4: ann_idx 4 is outside the split"),
        ([{"ann_idx": "0"}] + perfect_verb(), "entry 0: ann_idx must be an integer"),
        ([{"ann_idx": 0, "pred_vbs_ev": [["a.01"]] * 4}] + perfect_verb(), "ann_idx 0 .*must hold 5 lists"),
        (
            [{"ann_idx": 1, "pred_vbs_ev": [["a.01"], ["b.01"], "c.01", ["d"], ["e"]]}] + perfect_verb(),
            r"pred_vbs_ev\[2\] \(Ev3\)",
        ),
        ([{"pred_vbs_ev": []}], "entry 0: no 'ann_idx'"),
        ([{"ann_idx": 0, "vb_output": {}}], "no 'pred_vbs_ev'"),
        ({"ann_idx": 0}, "list of dicts"),
    ],
)
def test_cli_malformed_submissions_exit_2(root, tmp_path, capsys, preds, msg):
    p = dump(tmp_path, "bad.json", preds)
    rc, out, err = run_cli(capsys, "--task", "verb", "--pred", str(p), "--data-root", str(root))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"moviessl: error: {p}: ")
    import re

    assert re.search(msg, err), err


def test_cli_bad_files_exit_2(root, tmp_path, capsys):
    rc, _, err = run_cli(capsys, "--task", "srl", "--pred", str(tmp_path / "none.pkl"), "--data-root", str(root))
    assert rc == 2 and "submission file not found" in err
    (tmp_path / "trunc.pkl").write_bytes(pickle.dumps(srl_preds())[:40])
    rc, _, err = run_cli(capsys, "--task", "srl", "--pred", str(tmp_path / "trunc.pkl"), "--data-root", str(root))
    assert rc == 2 and "not a readable submission pickle" in err
    rc, _, err = run_cli(
        capsys, "--task", "srl", "--pred", str(dump(tmp_path, "s.pkl", srl_preds())), "--data-root", str(tmp_path)
    )
    assert rc == 2 and "not a VidSitu annotation folder" in err
    rc, _, err = run_cli(
        capsys,
        "--task",
        "verb",
        "--pred",
        str(dump(tmp_path, "s.pkl", srl_preds())),
        "--data-root",
        str(root),
        "--split",
        "train",
    )
    assert rc == 2 and "vseg_split_train_lb.json: file not found" in err


def corrupt_frame_length(obj, top: int) -> bytes:
    """A protocol-4 pickle of ``obj`` whose FRAME length has its top byte set to ``top``: 0x40 asks
    for exabytes (MemoryError from a file), 0x80 overflows (OverflowError)."""
    data = bytearray(pickle.dumps(obj, protocol=4))
    assert data[2] == pickle.FRAME[0]  # PROTO 4, then FRAME + 8-byte little-endian length
    data[10] = top
    return bytes(data)


@pytest.mark.parametrize("top", [0x40, 0x80])
def test_corrupted_pickle_length_is_one_line_exit_2(root, tmp_path, capsys, top):
    p = tmp_path / "corrupt.pkl"
    p.write_bytes(corrupt_frame_length(perfect_verb(), top))
    rc, out, err = run_cli(capsys, "--task", "verb", "--pred", str(p), "--data-root", str(root))
    assert rc == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith(f"moviessl: error: {p}: not a readable submission pickle")
    assert "corrupted pickle" in err


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    p = dump(tmp_path, "evil.pkl", [{"ann_idx": 0, "pred_vbs_ev": _Evil()}])
    with pytest.raises(BadInputError, match="refusing to load"):
        load_submission(p)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_values_in_pickles_load(tmp_path, protocol):
    """At every protocol: 0-2 write an array's bytes with _codecs.encode, 5 with numpy's _frombuffer,
    which the submission reader's own allowed list lacked (refused as code)."""
    import numpy as np

    sub = [{"ann_idx": np.int64(0), "pred_scores_ev": np.arange(3.0), "x": np.float32(1.5)}]
    p = tmp_path / "np.pkl"
    p.write_bytes(pickle.dumps(sub, protocol=protocol))
    got = load_submission(p)
    assert got[0]["ann_idx"] == 0 and float(got[0]["x"]) == 1.5 and list(got[0]["pred_scores_ev"]) == [0, 1, 2]


@pytest.mark.parametrize("reader", ["submission", "lvu predictions", "vidsitu split", "lvu tracks"])
def test_json_nested_too_deep_is_one_line(tmp_path, reader):
    """Python's json module recurses per nesting level: a file nested ~100k deep raised
    RecursionError, a traceback, where any other invalid JSON is one line naming the file."""
    from moviessl.data.lvu import read_tracks
    from moviessl.data.vidsitu import _read_json
    from moviessl.eval.lvu import load_predictions

    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    read = {
        "submission": load_submission,
        "lvu predictions": load_predictions,
        "vidsitu split": _read_json,
        "lvu tracks": read_tracks,
    }[reader]
    with pytest.raises(BadInputError, match="JSON"):
        read(path)


@pytest.mark.parametrize("reader", ["submission", "lvu predictions", "vidsitu split", "lvu tracks", "summary"])
def test_json_integer_past_pythons_digit_limit_is_one_line(tmp_path, reader):
    """Python refuses to convert an integer of more than 4300 digits (int_max_str_digits) and json
    raises that as a plain ValueError, not a JSONDecodeError: the VidSitu annotation and LVU tracks
    readers ended in a traceback, and the submission and prediction readers called the JSON file
    "not a readable pickle"."""
    from moviessl.data.lvu import read_tracks
    from moviessl.data.vidsitu import _read_json
    from moviessl.eval.lvu import load_predictions
    from moviessl.tasks.tables import read_summary

    path = tmp_path / "big.json"
    number = "1" * 5000
    path.write_text(f'{{"seconds": [{number}]}}' if reader in ("lvu tracks", "summary") else f"[{number}]")
    read = {
        "submission": load_submission,
        "lvu predictions": load_predictions,
        "vidsitu split": _read_json,
        "lvu tracks": read_tracks,
        "summary": read_summary,
    }[reader]
    with pytest.raises(BadInputError, match=r"(JSON|summary).*Exceeds the limit \(4300 digits\)") as e:
        read(path)
    assert "pickle" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("task", ["verb", "relation"])
def test_numpy_array_predictions_score_as_lists(root, tmp_path, task):
    """A model's top-k indexed into a vocabulary array is a numpy array of strings; VidSitu's
    evaluator slices and iterates it as a list, and the reader lets arrays through, yet the
    checks refused it ("must hold 5 lists ..., got ndarray")."""
    import numpy as np

    preds = perfect_verb() if task == "verb" else relation_preds()
    key = "pred_vbs_ev" if task == "verb" else "pred_evrels_ev"
    as_arrays = [{**p, key: np.array(p[key])} for p in preds]
    as_rows = [{**p, key: [np.array(row) for row in p[key]]} for p in preds]
    want = evaluate_files(task, dump(tmp_path, "lists.pkl", preds), root)
    assert evaluate_files(task, dump(tmp_path, "arrays.pkl", as_arrays), root) == want
    assert evaluate_files(task, dump(tmp_path, "rows.pkl", as_rows), root) == want
