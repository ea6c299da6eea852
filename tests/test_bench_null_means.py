"""The benchmarks that read run summaries back: a null mean (a run with no finite value, as
``json_ready`` writes it) is NaN in the benchmark's table, not a TypeError that loses the report."""

import json
import math

from benchmarks import backbone_budget, cvrl_control, txe_width


def test_txe_width_reads_a_null_replicate_mean_as_nan(tmp_path):
    row = tmp_path / "row"
    for r, mean in enumerate([0.5, None]):
        (row / f"r{r}").mkdir(parents=True)
        summary = {m: {"mean": mean, "se": 0.0, "n": 1} for m in txe_width.METRICS["srl"]}
        (row / f"r{r}" / "summary.json").write_text(json.dumps({"summary": summary}))
    vals = txe_width.replicate_means(row, "srl", 2)
    assert all(v[0] == 0.5 and math.isnan(v[1]) for v in vals.values())


def test_backbone_budget_cells_read_null_means_as_nan():
    runs = {
        "random s0": {"method": "random", "steps": 0, "verb_acc1": {"mean": 20.0}, "vidsitu_probe": 10.0},
        "random s1": {"method": "random", "steps": 0, "verb_acc1": {"mean": 22.0}, "vidsitu_probe": 12.0},
        "cvrl s0": {"method": "cvrl", "steps": 100, "verb_acc1": {"mean": None}, "vidsitu_probe": None},
        "cvrl s1": {"method": "cvrl", "steps": 100, "verb_acc1": {"mean": 30.0}, "vidsitu_probe": 15.0},
    }
    cells = backbone_budget.cells_summary(runs)
    assert cells["random"]["verb_acc1"] == (21.0, 1.0)
    cvrl = cells[backbone_budget.setting("cvrl", 100)]
    assert math.isnan(cvrl["verb_acc1"][0]) and math.isnan(cvrl["vidsitu_probe"][0])


def test_cvrl_control_summary_reads_a_null_probe_as_nan():
    probes = {
        "random": [{"linear_top1": 10.0, "knn_top1": 8.0}, {"linear_top1": 12.0, "knn_top1": 10.0}],
        "cvrl": [{"linear_top1": None, "knn_top1": 20.0}, {"linear_top1": 30.0, "knn_top1": 22.0}],
    }
    res, lines = cvrl_control.summarize(probes)
    assert res["random"]["linear_top1"] == {"mean": 11.0, "se": 1.0}
    assert math.isnan(res["cvrl_minus_random_linear_top1"]["diff"])
    assert res["cvrl_minus_random_knn_top1"] == {"diff": 12.0, "se": math.hypot(1.0, 1.0), "z": 12.0 / math.hypot(1, 1)}
    assert "| cvrl | nan ± nan | 21.00 ± 1.00 |" in lines
