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


def test_training_curves_read_each_replicates_log(tmp_path, monkeypatch):
    """Runs log under <method>/r<k>/logs: the plot globbed <method>/logs, found none and was never
    drawn. Each line is named by its method and replicate."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from moviessl.demo_report import curves_plot

    for stage, run in (("backbone", "cvrl/r0"), ("backbone", "cvrl/r1"), ("context", "cvrl_contrastive_mask1-3/r0")):
        logs = tmp_path / stage / run / "logs"
        logs.mkdir(parents=True)
        (logs / "metrics.csv").write_text("step,train/loss\n0,4.0\n1,3.5\n2,3.1\n")
    seen = []
    real = plt.Axes.plot
    monkeypatch.setattr(plt.Axes, "plot", lambda self, *a, **k: seen.append(k.get("label")) or real(self, *a, **k))
    assert curves_plot(tmp_path, tmp_path / "c.png") == tmp_path / "c.png"
    assert seen == ["cvrl/r0", "cvrl/r1", "cvrl_contrastive_mask1-3/r0"] and (tmp_path / "c.png").is_file()
