"""benchmarks.compare_results: two demo results.json files, value by value."""

import json

from benchmarks.compare_results import main


def _results(tmp_path, name, rows, probes):
    p = tmp_path / f"{name}.json"
    rows = [{"table": t, "setting": s, "metric": m, "mean": v, "se": se, "n": 2} for t, s, m, v, se in rows]
    p.write_text(json.dumps({"rows": rows, "backbone_probe": probes}))
    return str(p)


PROBE = {"linear_top1": {"mean": 40.0, "se": 1.0}, "knn_top1": {"mean": 30.0, "se": 1.0}, "n": 1}


def test_rows_and_probes_only_one_run_has_are_counted_not_left_out(tmp_path, capsys):
    a = _results(
        tmp_path,
        "a",
        [("verb", "backbone=cvrl", "acc@1", 10.004, 0.5), ("srl", "backbone=cvrl", "cider", 100.0, 2.0)],
        {"cvrl": PROBE, "modist": PROBE},
    )
    b = _results(tmp_path, "b", [("verb", "backbone=cvrl", "acc@1", 10.001, 0.5)], {"cvrl": PROBE})
    assert main([a, b]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "same: 1, different: 0, only in a: 1, only in b: 0" in last
    assert "probes only in a: ['modist']" in last


def test_a_missing_or_wrong_file_is_one_line_naming_it(tmp_path, capsys):
    import pytest

    a = _results(tmp_path, "a", [("verb", "backbone=cvrl", "acc@1", 10.0, 0.5)], {})
    md = tmp_path / "results.md"
    md.write_text("# moviessl demo results\n")
    for bad in (str(tmp_path / "missing.json"), str(md)):
        with pytest.raises(SystemExit) as e:
            main([a, bad])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert bad in err[-1] and "Traceback" not in "\n".join(err)


def test_a_row_without_a_finite_mean_is_compared_not_called_unreadable(tmp_path, capsys):
    """The demo writes a row no run gave a finite value for with ``mean``/``se`` null (JSON has no NaN):
    formatting null as a number was a TypeError, and the whole file was called unreadable."""
    nan_row = ("relation", "baseline=pair_prior", "acc", None, None)
    a = _results(tmp_path, "a", [nan_row, ("verb", "backbone=cvrl", "acc@1", 10.0, 0.5)], {})
    b = _results(tmp_path, "b", [nan_row, ("verb", "backbone=cvrl", "acc@1", None, None)], {})
    assert main([a, b]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "differs: verb backbone=cvrl acc@1 10.00 ± 0.50 -> n/a ± n/a"
    assert "same: 1, different: 1, only in a: 0, only in b: 0" in out[-1]
