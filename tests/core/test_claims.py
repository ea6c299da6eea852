import math
import re

import pytest

from moviessl.claims import BEGIN, CLAIMS, END, Claim, claims_markdown, evaluate_claims, readme_summary, update_readme
from moviessl.errors import BadInputError


def _row(table, setting, metric, mean, se, n=10):
    return {"table": table, "setting": setting, "metric": metric, "mean": mean, "se": se, "n": n}


def test_claim_arithmetic_and_verdicts():
    c = Claim("x", "Table 9", "a beats b", "t", "A", "B", "m")
    rows = [_row("t", "A", "m", 12.0, 0.6), _row("t", "B", "m", 10.0, 0.8)]
    (r,) = evaluate_claims(rows, [c])
    assert r["diff"] == 2.0 and r["se"] == 1.0 and r["z"] == 2.0 and r["holds"] is False  # 2 SE: not beyond
    rows[0]["mean"] = 12.01
    assert evaluate_claims(rows, [c])[0]["holds"] is True
    rows[0]["mean"] = 11.9
    assert evaluate_claims(rows, [c])[0]["holds"] is False
    rows[0]["mean"] = 8.0  # the wrong direction never holds
    assert evaluate_claims(rows, [c])[0]["z"] == -2.0
    assert evaluate_claims(rows[:1], [c])[0]["holds"] is None  # a missing row: not tested
    # a baseline in another table
    c2 = Claim("y", "Table 3", "model beats prior", "rel", "A", "prior", "m", b_table="rel_base")
    r2 = evaluate_claims([_row("rel", "A", "m", 5.0, 0.0), _row("rel_base", "prior", "m", 4.0, 0.0)], [c2])[0]
    assert r2["holds"] is True and math.isinf(r2["z"])
    # no spread on either side: a tie is z 0 (not +inf, which would "hold"), a deficit -inf
    for a_mean, z in ((4.0, 0.0), (3.0, -math.inf)):
        rows3 = [_row("rel", "A", "m", a_mean, 0.0), _row("rel_base", "prior", "m", 4.0, 0.0)]
        r3 = evaluate_claims(rows3, [c2])[0]
        assert r3["z"] == z and r3["holds"] is False


def test_a_single_trained_run_leaves_a_claim_unresolved():
    """`demo --seeds 1` with one pretraining run: both sides' SE were 0, so any positive difference
    had z = inf and "holds". A deterministic baseline (the pair prior, n_pretrain 0) is still a side."""
    c = Claim("x", "Table 9", "a beats b", "t", "A", "B", "m")
    one = [{**_row("t", "A", "m", 30.01, 0.0, n=1), "n_pretrain": 1}, {**_row("t", "B", "m", 30.0, 0.0, n=1)}]
    (r,) = evaluate_claims(one, [c])
    assert r["holds"] is None and r["z"] is None and r["diff"] == 0.01 and r["why"] == "one run"
    assert "| +0.01 (one run) | - | - | n/a |" in claims_markdown([r])
    prior = [_row("t", "A", "m", 31.0, 0.4, n=2), {**_row("t", "B", "m", 30.0, 0.0, n=1), "n_pretrain": 0}]
    assert evaluate_claims(prior, [c])[0]["holds"] is True


def test_markdown_and_readme_block(tmp_path):
    rows = [_row(c.table, c.a, c.metric, 50.0, 1.0) for c in CLAIMS] + [
        _row(c.b_table or c.table, c.b, c.metric, 40.0, 1.0) for c in CLAIMS
    ]
    claims = evaluate_claims(rows)
    md = claims_markdown(claims)
    assert md.count("\n| ") == len(CLAIMS) + 1 and "**holds**" in md  # header + one line per claim
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold text\n{END}\noutro\n")
    assert update_readme(readme, claims, "results.json")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old text" not in text
    assert readme_summary(claims, "results.json") in text and not update_readme(readme, claims, "results.json")
    # called directly too: a README without the block is an error, not a silent no-op
    readme.write_text("intro\n")
    with pytest.raises(BadInputError, match="no generated claims block"):
        update_readme(readme, claims, "results.json")


def test_compare_marks_a_verdict_that_flips_as_fragile(tmp_path, capsys):
    import json

    from moviessl.claims import compare_claims, main

    a = [_rec("x", 2.5, True), _rec("y", 3.0, True), _rec("z", None, None)]
    b = [_rec("x", 1.5, False), _rec("y", 2.2, True), _rec("z", 0.3, False)]
    got = {r["id"]: r for r in compare_claims({"1 thread": a, "2 threads": b})}
    assert got["x"]["fragile"] and got["x"]["z"] == {"1 thread": 2.5, "2 threads": 1.5}
    assert not got["y"]["fragile"] and not got["z"]["fragile"]  # untested on one run: not a flip
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps({"claims": a}))
    pb.write_text(json.dumps({"claims": b}))
    assert main([str(pa), "--compare", str(pb)]) == 0
    out = capsys.readouterr().out
    assert out.count("**fragile**") == 1 and "+2.50" in out and "+1.50" in out


def _rec(i, z, holds):
    return {"id": i, "paper": "Table 9", "statement": f"claim {i}", "z": z, "holds": holds}


def test_cli_writes_the_readme_block_naming_the_run(tmp_path):
    import json

    from moviessl.claims import main

    rows = [_row(c.table, c.a, c.metric, 50.0, 1.0) for c in CLAIMS] + [
        _row(c.b_table or c.table, c.b, c.metric, 40.0, 1.0) for c in CLAIMS
    ]
    res, readme = tmp_path / "results.json", tmp_path / "README.md"
    res.write_text(json.dumps({"rows": rows}))
    readme.write_text(f"{BEGIN}\n{END}\n")
    assert main([str(res), "--readme", str(readme), "--source", "quick profile, 2026-11-30"]) == 0
    assert "On SynthMovies (quick profile, 2026-11-30), " in readme.read_text()


def test_readme_block_marks_a_claim_whose_verdict_flips_on_a_compared_run(tmp_path):
    import json

    from moviessl.claims import main

    def rec(i, diff, holds):
        return {**_rec(i, diff, holds), "diff": diff, "se": 1.0, "metric": "m"}

    res, res2, readme = tmp_path / "full.json", tmp_path / "t2.json", tmp_path / "README.md"
    res.write_text(json.dumps({"claims": [rec("x", 2.5, True), rec("y", 3.0, True), rec("z", 0.5, False)]}))
    res2.write_text(json.dumps({"claims": [rec("x", 1.5, False), rec("y", 2.2, True), rec("z", 0.3, False)]}))
    readme.write_text(f"{BEGIN}\n{END}\n")
    assert main([str(res), "--readme", str(readme), "--compare", str(res2), "--names", "2 threads"]) == 0
    text = readme.read_text()
    assert "2 of 3 of the paper's claims hold" in text and text.count("**fragile**") == 1
    x = next(line for line in text.splitlines() if "claim x" in line)
    assert x.endswith("z = +2.50) — **fragile**: does not hold on 2 threads (z = +1.50)")


def test_a_results_md_claims_table_reads_back_at_its_printed_precision(tmp_path):
    from moviessl.claims import claims_from_markdown, main

    rows = [_row(c.table, c.a, c.metric, 50.0 + i, 1.0) for i, c in enumerate(CLAIMS[:-1])] + [
        _row(c.b_table or c.table, c.b, c.metric, 49.0 - i / 3, 1.3) for i, c in enumerate(CLAIMS)
    ]
    claims = evaluate_claims(rows)  # the last claim's a row is missing: n/a
    back = claims_from_markdown("# title\n\n" + claims_markdown(claims) + "\n\nmore text\n")
    assert [c["id"] for c in back] == [c["id"] for c in claims]
    for c, b in zip(claims, back):
        assert b["holds"] == c["holds"] and (c["z"] is None) == (b["z"] is None)
        if c["z"] is not None:
            assert abs(b["z"] - c["z"]) <= 0.005 and abs(b["diff"] - c["diff"]) <= 0.005
    assert sum(b["holds"] is True for b in back) == sum(c["holds"] is True for c in claims) > 0
    md = tmp_path / "results.md"
    md.write_text(claims_markdown(claims))
    assert main([str(md), "--compare", str(md)]) == 0  # a results.md is accepted where a results.json is
    bad = claims_markdown(claims).replace(CLAIMS[0].statement, "a claim nobody made")
    try:
        claims_from_markdown(bad)
    except ValueError as e:
        assert "a claim nobody made" in str(e)
    else:
        raise AssertionError("an unknown claim row was accepted")
    # a verdict other than the three written is refused, not read by its words ("no longer holds" held)
    held = next(c for c in claims if c["holds"])
    line = next(x for x in claims_markdown(claims).splitlines() if held["statement"] in x)
    with pytest.raises(ValueError, match="unknown verdict 'no longer holds'"):
        claims_from_markdown(line.replace("**holds**", "no longer holds"))


def test_cli_readme_without_the_block_or_missing_is_an_error_not_a_silent_no_op(tmp_path, capsys):
    import json

    import pytest

    from moviessl.claims import main

    res = tmp_path / "results.json"
    res.write_text(json.dumps({"rows": []}))
    plain = tmp_path / "README.md"
    plain.write_text("# a README without the generated block\n")
    for readme, said in ((plain, "no generated claims block"), (tmp_path / "missing.md", "unreadable README")):
        with pytest.raises(SystemExit) as e:
            main([str(res), "--readme", str(readme)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert str(readme) in err and said in err and "Traceback" not in err
    assert plain.read_text() == "# a README without the generated block\n"


def test_cli_names_without_compare_is_an_error(tmp_path, capsys):
    """--names names the compared runs: given without --compare it was dropped, exit 0."""
    import json

    import pytest

    from moviessl.claims import main

    res = tmp_path / "results.json"
    res.write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit) as e:
        main([str(res), "--names", "2 threads"])
    assert e.value.code == 2 and "give --compare too" in capsys.readouterr().err


def test_a_side_without_a_finite_value_leaves_a_claim_unresolved():
    """summarize keeps a metric no run gave a finite value of as n 0, mean NaN (the pair prior's row
    is copied from it): the claim was "does not hold" with a - b = nan and z = +0.00."""
    c = Claim("x", "Table 9", "a beats b", "t", "A", "B", "m")
    nan = {**_row("t", "B", "m", math.nan, math.nan, n=0), "n_pretrain": 0, "n_nonfinite": 4}
    # results.json holds that row's mean and SE as null (strict JSON): read back, the same claim
    for b in (nan, {**nan, "n_pretrain": 3, "n": 12, "se": 0.5}, {**nan, "mean": None, "se": None}):
        (r,) = evaluate_claims([_row("t", "A", "m", 31.0, 0.4, n=4), b], [c])
        assert r["holds"] is None and r["z"] is None and r["diff"] is None and r["why"] == "no finite run"
        assert "| - | - | - | n/a |" in claims_markdown([r])


def test_cli_a_name_given_twice_is_an_error_not_a_dropped_run(tmp_path, capsys):
    """Runs are keyed by name: `--names x x` (or a name equal to the first run's path) kept one of
    them, and a verdict flip on the dropped run went unreported."""
    import json

    import pytest

    from moviessl.claims import main

    files = []
    for i, holds in enumerate((True, True, False)):
        f = tmp_path / f"r{i}.json"
        f.write_text(json.dumps({"claims": [_rec("x", 2.5 if holds else 1.0, holds)]}))
        files.append(str(f))
    for names in (["t2", "t2"], [files[0], "t2"]):
        with pytest.raises(SystemExit) as e:
            main([files[0], "--compare", files[1], files[2], "--names", *names])
        assert e.value.code == 2 and "each run needs its own name" in capsys.readouterr().err
    assert main([files[0], "--compare", files[1], files[2], "--names", "t2", "t3"]) == 0
    assert "**fragile**" in capsys.readouterr().out


def _strict(text: str):
    """json.loads as jq and JavaScript read JSON: NaN / Infinity (Python's extension) refused."""
    import json

    def refuse(word):
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def test_a_claim_of_zero_se_is_written_as_strict_json_and_read_back_as_infinite(tmp_path, capsys):
    """Both sides without spread (the pair prior against seeds that all gave one value) make z
    infinite: results.json held the bare word Infinity, which jq and JSON.parse refuse. It is null
    with a why; the claims CLI reads it back as the infinite z it was."""
    from moviessl.claims import main
    from moviessl.demo_report import write_report

    c = next(c for c in CLAIMS if c.b == "baseline=pair_prior")
    rows = [
        {**_row(c.table, c.a, c.metric, 40.0, 0.0, n=3), "n_pretrain": 1},
        {**_row(c.table, c.b, c.metric, 30.0, 0.0, n=1), "n_pretrain": 0},
    ]
    claims = evaluate_claims(rows, [c])
    assert claims[0]["z"] == math.inf and claims[0]["holds"] is True
    write_report(
        tmp_path, rows, probes={}, runs={}, seeds=3, profile="quick", wall_s=1.0, synth=tmp_path, claims=claims
    )
    held = _strict((tmp_path / "results.json").read_text())["claims"][0]
    assert held["z"] is None and held["holds"] is True and held["why"] == "SE 0: z infinite"
    assert "| +10.00 | 0.00 | +inf | **holds** |" in (tmp_path / "results.md").read_text()  # shown as before
    assert main([str(tmp_path / "results.json")]) == 0
    assert "z = +inf)" in capsys.readouterr().out


def test_the_claims_tool_reads_and_prints_utf8_under_an_ascii_locale(tmp_path):
    """The README and a results.md are UTF-8 (``±``, ``—``, ``é``) but were read in the locale's
    encoding: under LC_ALL=C with PYTHONUTF8=0 `python -m moviessl.claims docs/demo_results.md` was
    "not a readable results.md (UnicodeDecodeError ...)", `--readme README.md` "unreadable README",
    and the printed summary's ``±`` a UnicodeEncodeError traceback."""
    import os
    import subprocess
    import sys

    rows = [_row(c.table, c.a, c.metric, 50.0, 1.0) for c in CLAIMS] + [
        _row(c.b_table or c.table, c.b, c.metric, 40.0, 1.0) for c in CLAIMS
    ]
    md, readme = tmp_path / "results.md", tmp_path / "README.md"
    md.write_text("# Résultats — démo\n\n" + claims_markdown(evaluate_claims(rows)) + "\n", encoding="utf-8")
    readme.write_text(f"# moviessl — café\n\n{BEGIN}\n{END}\n", encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"}
    for extra in (["--readme", str(readme)], []):
        done = subprocess.run(
            [sys.executable, "-m", "moviessl.claims", str(md), *extra], env=env, capture_output=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-600:]
    assert "# moviessl — café" in readme.read_text(encoding="utf-8") and "±" in readme.read_text(encoding="utf-8")
    assert b"\\xb1" in done.stdout


def test_a_claims_record_gives_each_sides_runs_and_its_difference_to_three_places():
    """No test read ``n_a`` / ``n_b`` (each side's runs) or a difference with more than one decimal:
    ``n_a`` taken from ``b`` and a difference rounded to 0.1 passed. By hand: 12.3456 - 10.1 = 2.2456,
    SE sqrt(0.3^2 + 0.4^2) = 0.5, z = 4.4912."""
    c = Claim("x", "Table 9", "a beats b", "t", "A", "B", "m")
    (r,) = evaluate_claims([_row("t", "A", "m", 12.3456, 0.3, n=4), _row("t", "B", "m", 10.1, 0.4, n=6)], [c])
    assert (r["diff"], r["se"], r["z"], r["holds"]) == (2.246, 0.5, 4.49, True)
    assert (r["n_a"], r["n_b"]) == (4, 6)


def test_a_side_with_a_mean_but_no_finite_se_leaves_a_claim_unresolved():
    """The finite check reads the SE too: without it a NaN SE (a results.json edited, or a
    summary of another tool) failed ``se > 0`` and made z infinite, so any positive difference
    "held"; a null SE was a TypeError."""
    c = Claim("x", "Table 9", "a beats b", "t", "A", "B", "m")
    for se in (math.nan, None):
        rows = [_row("t", "A", "m", 31.0, se, n=4), {**_row("t", "B", "m", 30.0, 0.0, n=1), "n_pretrain": 0}]
        (r,) = evaluate_claims(rows, [c])
        assert r["holds"] is None and r["z"] is None and r["why"] == "no finite standard error"


def test_each_claim_puts_the_side_its_statement_says_wins_as_a_on_its_tables_main_metric():
    """The claims' rows were pinned by no test: a claim with ``a`` and ``b`` swapped (testing
    "CVRL beats MoDist" under the statement "MoDist beats CVRL") or read on another metric
    passed. Each statement names the winner before "beat(s)": that side's setting is ``a``, the
    loser's is ``b``; the metric is the one the table's plot shows (``MAIN_METRIC``)."""
    from moviessl.demo_report import MAIN_METRIC

    words = {  # a statement's words -> the setting key=value they name
        "CVRL": "backbone=cvrl",
        "MoDist": "backbone=modist",
        "random-init": "backbone=random",
        "supervised": "backbone=supervised",
        "MaskPred TxE": "txe=maskpred",
        "scratch TxE": "txe=scratch",
        "backbone features": "txe=none",
        "pair prior": "baseline=pair_prior",
        "contrastive": "loss=contrastive",
        "L2": "loss=l2",
        "{1,2,3}": "mask=1-3",
        "{1,2,3,4}": "mask=1-4",
        "{1}": "mask=1",
    }

    def named(text):  # the longest phrase first: "{1,2,3,4}" is not "{1,2,3}"
        for w in sorted(words, key=len, reverse=True):
            if w in text:
                return words[w]
        raise AssertionError(f"no known side in {text!r}")

    for c in CLAIMS:
        said = re.sub(r" \([^()]*\)$", "", c.statement)  # not the trailing "(CVRL backbone)": both sides'
        winner, loser = re.split(r" beats? ", said, maxsplit=1)
        win, lose = named(winner), named(loser)
        assert win in c.a.split(",") and win not in c.b.split(","), c.id
        assert lose in c.b.split(",") and lose not in c.a.split(","), c.id
        assert c.metric == MAIN_METRIC[c.table], c.id
