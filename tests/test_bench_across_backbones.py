"""benchmarks.across_backbones: claims over several backbone replicates' txe_width records."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.across_backbones import main

from moviessl.errors import BadInputError

ROOT = Path(__file__).resolve().parents[1]


def _txe_width(folder, diffs, ses=None):
    """A txe_width.json with one SRL and one relation claim of the given differences."""
    folder.mkdir(parents=True)
    ses = ses or [1.0] * len(diffs)
    claims = [
        {"task": t, "metric": m, "a": "maskpred_w128", "b": "scratch_w128", "diff": d, "se": s, "z": d / s}
        for (t, m), d, s in zip((("srl", "cider"), ("relation", "mean_acc")), diffs, ses)
    ]
    (folder / "txe_width.json").write_text(json.dumps({"rows": {}, "claims": claims}))
    return str(folder)


def test_the_mean_over_backbones_has_the_spread_of_the_backbones_not_their_own_se(tmp_path):
    p = [_txe_width(tmp_path / f"p{i}", [d, -1.0], [0.5, 0.5]) for i, d in enumerate((4.0, 1.0, -2.0))]
    res = main(p)
    srl = res["srl cider: maskpred_w128 - scratch_w128"]
    # mean 1.0; sample SD of (4, 1, -2) = 3; SE = 3 / sqrt(3)
    assert srl["mean"] == pytest.approx(1.0) and srl["se"] == pytest.approx(math.sqrt(3.0))
    assert srl["z"] == pytest.approx(1.0 / math.sqrt(3.0)) and srl["holds"] is False
    assert (srl["beyond +2"], srl["beyond -2"]) == (1, 1)  # each backbone's own z: +8, +2 (not beyond), -4
    assert [b["diff"] for b in srl["backbones"]] == [4.0, 1.0, -2.0]
    rel = res["relation mean_acc: maskpred_w128 - scratch_w128"]
    assert rel["mean"] == -1.0 and rel["se"] == 0.0 and rel["z"] is None and rel["holds"] is None  # no spread


def test_a_claim_holds_across_backbones_only_beyond_two_of_their_se(tmp_path):
    p = [_txe_width(tmp_path / f"p{i}", [d, 0.0]) for i, d in enumerate((3.0, 3.2, 2.8, 3.0))]
    srl = main(p)["srl cider: maskpred_w128 - scratch_w128"]
    assert srl["k"] == 4 and srl["holds"] is True and srl["z"] > 2
    one = main(p[:1])["srl cider: maskpred_w128 - scratch_w128"]
    assert one["se"] is None and one["holds"] is None  # one backbone: no spread over backbones


def test_the_breakdown_is_read_per_backbone_in_the_folders_order(tmp_path):
    p = [_txe_width(tmp_path / f"p{i}", [0.0, 0.0]) for i in range(2)]
    recs = []
    for i, d in enumerate((5.0, 1.0)):
        cell = {"mean": 0.0, "se": 0.1, "n": 10, "diff": d, "diff_se": 0.5, "paired": True}
        keys = ("cider", "from AScn", "from all but AScn")
        rec = {"scratch_w128": {k: {"mean": 0.0, "se": 0.1, "n": 10} for k in keys},
               "maskpred_w128": {k: dict(cell) for k in keys}}  # fmt: skip
        recs.append(tmp_path / f"bd{i}.json")
        recs[-1].write_text(json.dumps(rec))
    res = main([*p, "--breakdown", *map(str, recs), "--json", str(tmp_path / "out.json")])
    rest = res["srl cider from all but AScn: maskpred_w128 - scratch_w128"]
    assert [b["diff"] for b in rest["backbones"]] == [5.0, 1.0] and rest["mean"] == 3.0 and rest["se"] == 2.0
    # the overall CIDEr stays the txe_width claim (its own SE), not the breakdown's paired one
    assert res["srl cider: maskpred_w128 - scratch_w128"]["backbones"][0] == {"diff": 0.0, "se": 1.0, "z": 0.0}
    assert json.loads((tmp_path / "out.json").read_text()).keys() == res.keys()


def test_folders_run_with_other_rows_are_refused_naming_the_file(tmp_path):
    a = _txe_width(tmp_path / "a", [1.0, 1.0])
    b = tmp_path / "b"
    b.mkdir()
    (b / "txe_width.json").write_text(json.dumps({"rows": {}, "claims": []}))
    with pytest.raises(BadInputError, match=r"b/txe_width.json: has no claim 'srl cider"):
        main([a, str(b)])
    (b / "txe_width.json").write_text(json.dumps({"rows": {}}))
    with pytest.raises(BadInputError, match=r"b/txe_width.json: has no list of claims"):
        main([a, str(b)])


def test_the_command_line_gives_one_line_and_exit_2_for_a_missing_record(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks.across_backbones", str(tmp_path / "nothing")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"benchmarks.across_backbones: error: {tmp_path / 'nothing' / 'txe_width.json'}: "
        "no such file (expected benchmarks.txe_width's record)"
    ]


BAD_BREAKDOWNS = [[1, 2], {"scratch_w128": 3}, {}, {"scratch_w128": {}, "maskpred_w128": {"from AScn": 1}}]


@pytest.mark.parametrize("record", BAD_BREAKDOWNS)
def test_a_breakdown_that_is_not_srl_breakdowns_table_is_refused_naming_the_file(tmp_path, record):
    p = [_txe_width(tmp_path / "p0", [0.0, 0.0])]
    bd = tmp_path / "bd.json"
    bd.write_text(json.dumps(record))
    with pytest.raises(BadInputError, match=r"bd.json: (is not a table of rows|has no difference 'from AScn')"):
        main([*p, "--breakdown", str(bd)])
