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
