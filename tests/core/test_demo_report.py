from moviessl.demo_report import _cell, probe_table


def test_a_single_run_shows_no_standard_error():
    assert _cell({"mean": 49.8, "se": 0.0, "n": 1}) == "49.80"
    assert _cell({"mean": 38.2, "se": 0.1, "n": 2}) == "38.20 ± 0.10"
    assert _cell(None) == "n/a"
    one = probe_table(
        {"cvrl": {"linear_top1": {"mean": 35.0, "se": 0.0}, "knn_top1": {"mean": 38.9, "se": 0.0}, "n": 1}}
    )
    assert "| CVRL | 35.00 | 38.90 | 1 |" in one
    three = probe_table(
        {"cvrl": {"linear_top1": {"mean": 36.3, "se": 0.49}, "knn_top1": {"mean": 44.6, "se": 0.4}, "n": 3}}
    )
    assert "| CVRL | 36.30 ± 0.49 | 44.60 ± 0.40 | 3 |" in three
