"""The VidSitu reader (released layout) and the SRL target-text helpers."""

import json

import pytest

from moviessl.data import vidsitu as vs
from moviessl.errors import BadInputError

A, B = "v_abcdefghijk_seg_0_10", "v_x_y-z__abc_seg_30_40"


def event(vseg, verb="talk.01", roles=(), positions=None, evrel=None):
    pos = positions or [str(i + 1) for i in range(len(roles))]
    ev = {
        "vid_uid": vseg.rpartition("_seg_")[0],
        "vid_seg_int": vseg,
        "Verb": "talk",
        "VerbID": verb,
        "Arg_List": {raw: p for (raw, _), p in zip(roles, pos)},
        "Args": dict(roles),
    }
    if evrel:
        ev["EvRel"] = evrel
    return ev


def record(vseg, tag=""):
    return {
        f"Ev{k}": event(vseg, roles=[("Arg0 (talker)", f"man{tag}")], evrel=None if k == 3 else "NoRel")
        for k in range(1, 6)
    }


def write(tmp_path, split="valid", vsegs=(A, B), records=None, vinfo=None, ann_name=None):
    ann = tmp_path / "vidsitu_annotations"
    for d in ("split_files", "vinfo_files", "vseg_ann_files"):
        (ann / d).mkdir(parents=True, exist_ok=True)
    (ann / "split_files" / f"vseg_split_{split}_lb.json").write_text(json.dumps(list(vsegs)))
    if vinfo is not None:
        (ann / "vinfo_files" / f"vinfo_{split}_lb.json").write_text(json.dumps(vinfo))
    if records is not None:
        (ann / "vseg_ann_files" / (ann_name or f"vsann_{split}_lb.json")).write_text(
            records if isinstance(records, str) else json.dumps(records)
        )
    return ann


def test_load_split_order_and_grouping(tmp_path):
    recs = [record(B, "b0"), record(A, "a0"), record(B, "b1"), record(A, "a1"), record(A, "a2")]
    vinfo = [
        {"vid_seg_int": B, "genres": "Drama"},
        {"vid_seg_int": A, "vbid_lst": {f"Ev{k}": ["talk.01"] * 10 for k in range(1, 6)}},
    ]
    ann = write(tmp_path, records=recs, vinfo=vinfo)
    sp = vs.load_split(tmp_path, "valid")  # the parent folder resolves to vidsitu_annotations
    assert sp.root == ann and len(sp) == 2
    assert sp.vseg_ids == [A, B] and sp.ann_idx == {A: 0, B: 1}
    assert [r["Ev1"]["Args"]["Arg0 (talker)"] for r in sp.records[A]] == ["mana0", "mana1", "mana2"]
    assert [r["Ev1"]["Args"]["Arg0 (talker)"] for r in sp.records[B]] == ["manb0", "manb1"]
    assert sp.vinfo[B]["genres"] == "Drama" and sp.files["ann"].name == "vsann_valid_lb.json"


def test_annotation_files_with_a_byte_order_mark(tmp_path):
    """JSON saved with a byte-order mark by an editor loads as the released files do."""
    ann = write(tmp_path, records=[record(A), record(B)])
    for f in ann.rglob("*.json"):
        f.write_text(f.read_text(), encoding="utf-8-sig")
    sp = vs.load_split(tmp_path, "valid")
    assert sp.vseg_ids == [A, B] and len(sp.records[A]) == 1


def test_noann_test_split_and_missing_files(tmp_path):
    write(tmp_path, split="testsrl", records=[record(A)], ann_name="vsann_testsrl_noann_lb.json")
    sp = vs.load_split(tmp_path / "vidsitu_annotations", "testsrl")
    assert list(sp.records) == [A] and sp.vinfo == {}
    with pytest.raises(BadInputError, match="vseg_split_testvb_lb.json: file not found"):
        vs.load_split(tmp_path, "testvb")
    with pytest.raises(BadInputError, match="not a VidSitu annotation folder"):
        vs.load_split(tmp_path / "vidsitu_annotations" / "split_files", "valid")


def test_split_file_override(tmp_path):
    write(tmp_path, records=[record(A), record(B)])
    f = tmp_path / "no_lvu.json"
    f.write_text(json.dumps([B]))
    sp = vs.load_split(tmp_path, "valid", split_file=f)
    assert sp.vseg_ids == [B] and set(sp.records) == {A, B}


@pytest.mark.parametrize(
    "records,msg",
    [
        ("[{", "vsann_valid_lb.json: invalid JSON"),
        ([{"Ev1": {}, "Ev2": {}}], "record 0: expected an object with keys Ev1..Ev5"),
        ([{f"Ev{k}": {"VerbID": "a.01"} for k in range(1, 6)}], "record 0: Ev1 has no string 'vid_seg_int'"),
    ],
)
def test_malformed_annotation_files(tmp_path, records, msg):
    write(tmp_path, records=records)
    with pytest.raises(BadInputError, match=msg):
        vs.load_split(tmp_path, "valid")


def test_malformed_events_name_the_entry(tmp_path):
    bad = record(A)
    bad["Ev4"]["Args"]["ArgM (temporal)"] = "later"
    bad["Ev4"]["Arg_List"]["ArgM (temporal)"] = "2"
    write(tmp_path, records=[record(A), bad])
    with pytest.raises(BadInputError, match=r"record 1 \(v_abcdefghijk_seg_0_10\) Ev4: unknown ArgM type"):
        vs.load_split(tmp_path, "valid")
    bad = record(B)
    del bad["Ev2"]["Arg_List"]["Arg0 (talker)"]
    write(tmp_path, records=[bad])
    with pytest.raises(BadInputError, match="Ev2: Args and Arg_List name different roles"):
        vs.load_split(tmp_path, "valid")
    bad = record(B)
    bad["Ev5"]["Arg_List"]["Arg0 (talker)"] = "first"
    write(tmp_path, records=[bad])
    with pytest.raises(BadInputError, match="Arg_List position of 'Arg0 \\(talker\\)' is not an integer"):
        vs.load_split(tmp_path, "valid")
    bad = record(B)
    bad["Ev1"]["EvRel"] = "Because"
    write(tmp_path, records=[bad])
    with pytest.raises(BadInputError, match="unknown EvRel 'Because'"):
        vs.load_split(tmp_path, "valid")


def test_duplicate_vinfo_is_an_error(tmp_path):
    write(tmp_path, vinfo=[{"vid_seg_int": A}, {"vid_seg_int": A}])
    with pytest.raises(BadInputError, match="vinfo_valid_lb.json: entry 1: duplicate segment"):
        vs.load_split(tmp_path, "valid")


def test_parse_vseg_id():
    assert vs.parse_vseg_id("v_-_seg_x_Ab3_seg_120_130") == ("v_-_seg_x_Ab3", "-_seg_x_Ab3", 120, 130)
    assert vs.parse_vseg_id(A) == ("v_abcdefghijk", "abcdefghijk", 0, 10)
    with pytest.raises(BadInputError):
        vs.parse_vseg_id("v_abcdefghijk_0_10")
    with pytest.raises(BadInputError):
        vs.parse_vseg_id("v_abcdefghijk_seg_0_ten")


@pytest.mark.parametrize(
    "raw,short",
    [
        ("Arg0 (talker)", "Arg0"),
        ("Arg5", "Arg5"),
        ("Scene of the Event", "AScn"),
        ("ArgM (location)", "ALoc"),
        ("ArgM (manner)", "AMnr"),
        ("ArgM (purpose)", "APrp"),
        ("ArgM (direction)", "ADir"),
        ("ArgM (goal)", "AGol"),
        ("ArgM (direction or goal)", "ADir"),
    ],
)
def test_arg_mapper(raw, short):
    assert vs.arg_mapper(raw) == short


def test_arg_mapper_rejects_unknown():
    for raw in ("ArgM (temporal)", "Scene", "Arg6 (x)", "scene of the event"):
        with pytest.raises(ValueError):
            vs.arg_mapper(raw)


def test_roles_in_order_and_target_text():
    ev = event(
        A,
        verb="throw.01",
        roles=[
            ("Arg1 (thing thrown)", "a red ball"),
            ("Scene of the Event", "park"),
            ("Arg0 (thrower)", "the boy"),
            ("ArgM (manner)", "hard"),
        ],
        positions=["2", 10, "1", "3"],
    )  # int-like strings and ints; "10" must sort after "3"
    assert vs.roles_in_order(ev) == [("Arg0", "the boy"), ("Arg1", "a red ball"), ("AMnr", "hard"), ("AScn", "park")]
    assert vs.srl_role_text(ev) == " <Arg0> the boy <Arg1> a red ball <AMnr> hard <AScn> park"
    # equal positions keep the file's order (the reference's stable sort), not the roles' names
    tie = event(
        A, verb="give.01", roles=[("Arg2 (to)", "her"), ("Arg0 (giver)", "he"), ("Arg1", "it")], positions=[1, 1, 0]
    )
    assert vs.roles_in_order(tie) == [("Arg1", "it"), ("Arg2", "her"), ("Arg0", "he")]
    assert vs.srl_target(ev) == "throw.01 <Arg0> the boy <Arg1> a red ball <AMnr> hard <AScn> park"
    assert vs.parse_srl_output(vs.srl_target(ev)) == {
        "vb_id": "throw.01",
        "Arg0": "the boy",
        "Arg1": "a red ball",
        "AMnr": "hard",
        "AScn": "park",
    }


def test_parse_srl_output_quirks():
    assert vs.parse_srl_output("<Arg0> man") == {}  # no verb id first
    assert vs.parse_srl_output("run.02") == {"vb_id": "run.02", "": ""}  # reference keeps the "" key
    assert vs.parse_srl_output("run.02 <Arg0> <Arg1> x <Arg5> y") == {
        "vb_id": "run.02",
        "Arg0": "",
        "Arg1": "x <Arg5> y",
    }
    assert vs.parse_srl_output("run.02 <Arg0> a <Arg0> b") == {"vb_id": "run.02", "Arg0": "b"}


def test_constants():
    assert vs.EVENTS == ("Ev1", "Ev2", "Ev3", "Ev4", "Ev5")
    assert vs.RELATION_IDS == {"Null": 0, "Causes": 1, "Reaction To": 2, "Enables": 3, "NoRel": 4}
    assert vs.PAIRS == (("Ev1", "Ev3"), ("Ev2", "Ev3"), ("Ev3", "Ev4"), ("Ev3", "Ev5"))
    assert vs.SCORED_ROLES == ("Arg0", "Arg1", "Arg2", "ALoc", "AScn")


@pytest.mark.parametrize("pos", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_arg_list_position_is_one_line(tmp_path, pos):
    # Python's json reads Infinity / NaN; int(Infinity) raised OverflowError, which escaped as a
    # traceback instead of the line naming the file, record, event and role.
    bad = record(B)
    bad["Ev3"]["Arg_List"]["Arg0 (talker)"] = pos
    write(tmp_path, records=[bad])
    with pytest.raises(BadInputError, match=r"Ev3: Arg_List position of 'Arg0 \(talker\)' is not an integer"):
        vs.load_split(tmp_path, "valid")
