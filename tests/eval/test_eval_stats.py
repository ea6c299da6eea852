import math

import pytest

from moviessl.eval.stats import format_table, mean_se, summarize


def test_mean_se_values():
    m, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5
    # sample std = sqrt(5/3); se = that / 2
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)
    assert mean_se([7.5]) == (7.5, 0.0)
    with pytest.raises(ValueError):
        mean_se([])


def test_summarize_and_table():
    rows = [
        {"seed": 0, "cider": 40.0, "lea": 30.0, "name": "a"},
        {"seed": 1, "cider": 44.0, "lea": 34.0, "name": "b"},
        {"seed": 2, "cider": 42.0, "name": "c"},
    ]
    summ, md = summarize(rows, keys=["cider", "lea"], title="Slow-D+TxE")
    assert summ["cider"] == {"mean": 42.0, "se": pytest.approx(2 / math.sqrt(3)), "n": 3}
    assert summ["lea"]["n"] == 2 and summ["lea"]["mean"] == 32.0 and summ["lea"]["se"] == pytest.approx(2.0)
    lines = md.strip().splitlines()
    assert lines[0] == "| n=2/3 | cider | lea |"
    assert lines[2] == "| Slow-D+TxE | 42.00 ± 1.15 | 32.00 ± 2.00 |"
    # default keys: numeric ones in first-seen order, strings skipped
    summ2, _ = summarize(rows)
    assert list(summ2) == ["seed", "cider", "lea"]


def test_format_table_rows():
    a = {"acc": {"mean": 1.0, "se": 0.1, "n": 10}}
    b = {"acc": {"mean": 2.0, "se": 0.2, "n": 10}, "f1": {"mean": 3.0, "se": 0.0, "n": 10}}
    md = format_table({"A": a, "B": b}, digits=1)
    assert md.splitlines() == [
        "| n=10 | acc | f1 |",
        "|---|---:|---:|",
        "| A | 1.0 ± 0.1 | - |",
        "| B | 2.0 ± 0.2 | 3.0 ± 0.0 |",
    ]
    one = format_table({"A": {"acc": {"mean": 1.0, "se": 0.0, "n": 1}}}, digits=1)
    assert one.splitlines()[-1] == "| A | 1.0 |"  # a single run has no standard error


def test_a_non_finite_run_is_counted_not_averaged_and_the_table_says_so(caplog):
    rows = [{"loss": 1.0}, {"loss": 3.0}, {"loss": float("nan")}, {"loss": float("inf")}]
    with caplog.at_level("WARNING", logger="moviessl"):
        summ, table = summarize(rows)
    assert summ["loss"]["mean"] == 2.0 and summ["loss"]["n"] == 2 and summ["loss"]["n_nonfinite"] == 2
    assert "(2 non-finite)" in table and "2 of 4 runs gave a non-finite value" in caplog.text
    assert "n_nonfinite" not in summarize(rows[:2])[0]["loss"]  # no key when every run is finite
    # every run diverged: kept and said (the column was dropped without a word, under explicit keys too)
    for keys in (None, ["loss"]):
        summ, table = summarize(rows[2:], keys=keys)
        assert summ["loss"]["n"] == 0 and summ["loss"]["n_nonfinite"] == 2 and math.isnan(summ["loss"]["mean"])
        assert "| - (2 non-finite) |" in table


def test_the_demo_aggregates_replicates_as_each_summary_does():
    from moviessl.demo import aggregate

    def rep(*vals):
        return {"summary": {"acc": {}}, "runs": [{"metrics": {"acc": v}} for v in vals]}

    out = aggregate([rep(1.0, float("nan")), rep(3.0, 5.0)])["acc"]
    assert out["mean"] == 2.5 and out["n"] == 3 and out["n_pretrain"] == 2 and out["n_nonfinite"] == 1
    assert "acc" not in aggregate([rep(float("nan"))])  # nothing finite: no demo row (its summary.md says so)


def _strict(text: str):
    """json.loads as jq and JavaScript read JSON: NaN / Infinity (Python's extension) refused."""
    import json

    def refuse(word):
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def test_a_metric_of_no_finite_run_is_written_as_strict_json_and_read_back_as_before(tmp_path):
    """summary.json held a bare NaN for a metric no run gave a finite value of (n 0), and each such
    run's metrics.json did too: jq and JSON.parse refuse those files. They hold null now (n 0 and
    n_nonfinite say why), and every reader of them counts it as the non-finite value it was."""
    import json
    from types import SimpleNamespace

    from moviessl.demo import aggregate, collect
    from moviessl.tasks.base import run_seed, write_summary
    from moviessl.utils.io import atomic_write_json

    nan = float("nan")
    runs = [{"seed": s, "metrics": {"acc": a, "loss": v}} for s, a, v in ((0, 50.0, nan), (1, -math.inf, math.inf))]
    res = write_summary(tmp_path / "t", runs, ["acc", "loss"], "run", "t")
    held = _strict((tmp_path / "t" / "summary.json").read_text())
    assert held["summary"]["loss"] == {"mean": None, "se": None, "n": 0, "n_nonfinite": 2}
    assert [r["metrics"]["loss"] for r in held["runs"]] == [None, None]
    assert "| - (2 non-finite) |" in held["table"]  # the table reads as it did
    # the demo's replicates read from those files: the non-finite run counted, as in memory
    assert aggregate([held, held]) == aggregate([res, res])
    assert aggregate([held])["acc"] == {"mean": 50.0, "se": 0.0, "n": 1, "n_pretrain": 1, "n_nonfinite": 1}

    # a finished run's metrics.json: reused with its non-finite value NaN again, counted by summarize
    run_dir = tmp_path / "job" / "seed0"
    atomic_write_json(run_dir / "metrics.json", {"settings": "s", "metrics": {"acc": 1.0, "loss": nan}})
    assert _strict((run_dir / "metrics.json").read_text())["metrics"]["loss"] is None
    job = SimpleNamespace(out=tmp_path / "job", settings="s", earlier_settings=(), name="t")
    got = run_seed(job, 0)["metrics"]
    assert got["acc"] == 1.0 and math.isnan(got["loss"])
    assert summarize([got])[0]["loss"]["n_nonfinite"] == 1

    # the demo's pair prior row copied from such a summary: NaN as summarize made it, so the claim is n/a
    prior = tmp_path / "demo" / "finetune" / "relation" / "pair_prior"
    write_summary(prior, [{"seed": 0, "metrics": {"mean_acc": nan}}], ["mean_acc"], "run", "t")
    (row,) = collect(tmp_path / "demo", [], None, [])[0]
    assert row["n"] == 0 and math.isnan(row["mean"]) and math.isnan(row["se"])
    assert json.loads(json.dumps(row))["setting"] == "baseline=pair_prior"


def test_mean_se_of_huge_finite_values_is_finite():
    """Finite values past ~1e154 square past a float's range: `** 2` (and fsum of two 1e308s) was an
    OverflowError traceback (summarize, the tables). Scaled by a power of two first, ordinary values
    keep their bits and huge ones give a finite mean and SE."""
    assert mean_se([1e308, 1e308]) == (1e308, 0.0)
    m, se = mean_se([1e200, -1e200])
    assert m == 0.0 and se == pytest.approx(1e200)
    m, se = mean_se([-2.0309666459680325e-202, -9.024709874205334e218, 0.5])  # hypothesis' example
    assert math.isfinite(m) and math.isfinite(se) and m == pytest.approx(-9.024709874205334e218 / 3)
    assert mean_se([1.0, 2.0, 4.0]) == (7 / 3, math.sqrt(math.fsum((v - 7 / 3) ** 2 for v in (1, 2, 4)) / 2 / 3))
    summary, _ = summarize([{"loss": 1e300}, {"loss": -1e300}])
    assert summary["loss"]["mean"] == 0.0 and math.isfinite(summary["loss"]["se"])
