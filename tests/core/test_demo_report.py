import pytest

from moviessl.demo_report import _cell, probe_table
from plot_checks import drawn, error_bars


def test_a_single_run_shows_no_standard_error():
    assert _cell({"mean": 49.8, "se": 0.0, "n": 1}) == "49.80"
    assert _cell({"mean": 38.2, "se": 0.1, "n": 2}) == "38.20 ± 0.10"
    assert _cell(None) == "n/a"
    # a row whose every run was non-finite: its mean is NaN in memory, null read back from results.json
    assert _cell({"mean": float("nan"), "se": float("nan"), "n": 0, "n_nonfinite": 2}) == "n/a (2 non-finite)"
    assert _cell({"mean": None, "se": None, "n": 0}) == "n/a"
    one = probe_table(
        {"cvrl": {"linear_top1": {"mean": 35.0, "se": 0.0}, "knn_top1": {"mean": 38.9, "se": 0.0}, "n": 1}}
    )
    assert "| CVRL | 35.00 | 38.90 | 1 | - |" in one
    three = probe_table(
        {"cvrl": {"linear_top1": {"mean": 36.3, "se": 0.49}, "knn_top1": {"mean": 44.6, "se": 0.4}, "n": 3}}
    )
    assert "| CVRL | 36.30 ± 0.49 | 44.60 ± 0.40 | 3 | - |" in three
    pre = {"pretext_loss": {"mean": 8.02, "se": 0.05}, "chance_loss": 6.87}
    solved = {"pretext_loss": {"mean": 2.3, "se": 0.1}, "chance_loss": 5.55}
    stat = {"linear_top1": {"mean": 36.3, "se": 0.49}, "knn_top1": {"mean": 44.6, "se": 0.4}, "n": 3}
    table = probe_table({"cvrl": {**stat, **pre}, "modist": {**stat, **solved}})
    assert "| 3 | 8.02 ± 0.05 (6.87) **not below chance** |" in table
    assert "| 3 | 2.30 ± 0.10 (5.55) |" in table


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


def test_bar_plot_draws_no_error_bar_for_a_single_run_and_marks_a_cell_without_a_mean(tmp_path, monkeypatch):
    """The table shows a single run's value alone (``_cell``: no SE) and a row without a finite mean
    as no value; the plot drew the single run with a zero-height error bar (a cap at its mean, an SE
    of 0 it does not have) and the empty cell as a bare gap. Now: no bar for n < 2, "n/a" in a gap."""
    import math

    from moviessl.demo_report import bar_plot

    figs = drawn(monkeypatch)
    rows = [
        {"table": "relation", "setting": "backbone=cvrl,txe=none", "metric": "mean_acc", "mean": 40.0, "se": 1.5}
        | {"n": 12, "n_pretrain": 3},
        {"table": "relation", "setting": "baseline=pair_prior", "metric": "mean_acc", "mean": 50.0, "se": 0.0}
        | {"n": 1, "n_pretrain": 0},
        {"table": "relation", "setting": "backbone=modist,txe=none", "metric": "mean_acc", "mean": math.nan}
        | {"se": math.nan, "n": 0, "n_pretrain": 0},
    ]
    assert bar_plot(rows, "relation", tmp_path / "r.png") == tmp_path / "r.png"
    (ax,) = figs[0].axes
    assert [p.get_height() for p in ax.patches][:2] == [40.0, 50.0]
    assert error_bars(ax) == {0: (38.5, 41.5)}
    assert [t.get_text() for t in ax.texts] == ["n/a"]


@pytest.mark.parametrize("table", ["srl", "mask_ablation", "relation"])
def test_bar_plot_labels_and_title_fit(tmp_path, monkeypatch, table):
    """The tick labels were the setting strings cut at ``,txe=`` / ``,loss=``: a TxE learning-rate
    row ("maskpred,txe_lr=0.1"), the mask ablation's ("contrastive m=1-2") and the pair prior's
    overran their neighbours, a plot of few rows cut its title off, and a last row without a mean
    was outside the axes. The labels are now the table's own names, wrapped under each bar, the
    title is on two lines, and the axes hold every row's slot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from moviessl.demo import setting_name
    from moviessl.demo_report import bar_plot

    figs = drawn(monkeypatch)
    if table == "srl":
        backbones, txes = ("supervised", "cvrl", "modist"), ("none", "scratch", "maskpred")
        settings = [setting_name(b, t) for b in backbones for t in txes]
        settings += [setting_name("cvrl", "maskpred", txe_lr=lr) for lr in (0.0, 0.1)]
        settings += [setting_name("cvrl", "scratch", txe_lr=0.3)]
    elif table == "mask_ablation":
        ablated = (("contrastive", "1"), ("contrastive", "1-2"))
        settings = [setting_name("cvrl", "maskpred", loss, m) for loss, m in ablated]
        settings += [setting_name("cvrl", "maskpred", "l2", "1-3")]
    else:
        settings = [setting_name("cvrl", "none"), "baseline=pair_prior", setting_name("modist", "none")]
    metric = {"srl": "cider", "mask_ablation": "cider", "relation": "mean_acc"}[table]
    rows = [
        {"table": table, "setting": s, "metric": metric, "mean": 50.0, "se": 1.0, "n": 12, "n_pretrain": 3}
        for s in settings
    ]
    rows[-1]["mean"] = float("nan")  # a last row without a mean: its slot and label inside the axes too
    bar_plot(rows, table, tmp_path / "p.png")
    fig = figs[0]
    (ax,) = fig.axes
    r = FigureCanvasAgg(fig).get_renderer()  # (closed: its canvas is gone)
    boxes = [t.get_window_extent(r) for t in ax.get_xticklabels()]
    assert len(boxes) == len(settings)
    for a, b in zip(boxes, boxes[1:]):
        assert a.x1 < b.x0, (a, b)
    lo, hi = ax.get_xlim()
    assert lo < 0 and len(settings) - 1 < hi
    whole = fig.bbox
    for t in [ax.title, *ax.get_xticklabels()]:
        e = t.get_window_extent(r)
        assert whole.x0 <= e.x0 and e.x1 <= whole.x1 and whole.y0 <= e.y0 and e.y1 <= whole.y1, t.get_text()


def test_training_curves_legend_leaves_the_curves_visible_and_tells_methods_apart(tmp_path, monkeypatch):
    """The full profile's TxE panel has 7 MaskPred variants x 3 replicates: a legend entry per line
    (21, in the axes) covered most of the curves, and the 10 default colours came round again, so two
    methods shared a colour. Now a colour per method, a line style per replicate, a legend entry per
    method and per replicate, outside the axes and inside the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from moviessl.demo_report import curves_plot

    figs = drawn(monkeypatch)
    variants = [f"{b}_contrastive_mask1-3" for b in ("supervised", "cvrl", "modist")]
    variants += ["cvrl_l2_mask1-3", "cvrl_contrastive_mask1", "cvrl_contrastive_mask1-2", "cvrl_contrastive_mask1-4"]
    for stage, methods in (("backbone", ["supervised", "cvrl", "modist"]), ("context", variants)):
        for m in methods:
            for r in range(3):
                logs = tmp_path / stage / m / f"r{r}" / "logs"
                logs.mkdir(parents=True)
                points = "".join(f"{s},{4 - s / 50}\n" for s in range(99))
                (logs / "metrics.csv").write_text("step,train/loss\n" + points)
    curves_plot(tmp_path, tmp_path / "c.png")
    fig = figs[0]
    r = FigureCanvasAgg(fig).get_renderer()
    for ax, methods in zip(fig.axes, (3, 7)):
        colours = {}
        for line in ax.lines:
            m = line.get_label().rsplit("/", 1)[0]
            colours.setdefault(m, set()).add(line.get_color())
        assert len(colours) == methods and all(len(c) == 1 for c in colours.values())
        assert len({next(iter(c)) for c in colours.values()}) == methods  # a colour of its own
        assert len({line.get_linestyle() for line in ax.lines}) == 3  # one per replicate
        leg = ax.get_legend()
        assert len(leg.get_texts()) == methods + 3
        box, area = leg.get_window_extent(r), ax.get_window_extent(r)
        assert not box.overlaps(area)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1


PLOTTERS = ["bar_plot", "curves_plot", "plot_curves", "plot_table"]


def _plot_call(which: str, tmp_path):
    """A call of one of the project's plots on a minimal input of its own (a run's log for the curves)."""
    from moviessl import demo_report, training
    from moviessl.tasks.lvu import table

    logs = tmp_path / "backbone" / "cvrl" / "r0" / "logs"
    logs.mkdir(parents=True)
    (logs / "metrics.csv").write_text("step,train/loss\n0,3.0\n1,2.5\n")
    row = {"table": "verb", "setting": "backbone=cvrl", "metric": "acc@1", "mean": 40.0, "se": 1.0, "n": 3}
    cell = {"scene": {"mean": 30.0, "se": 1.0, "n": 3}}
    call = {
        "bar_plot": lambda: demo_report.bar_plot([row], "verb", tmp_path / "v.png"),
        "curves_plot": lambda: demo_report.curves_plot(tmp_path, tmp_path / "c.png"),
        "plot_curves": lambda: training.plot_curves(logs, tmp_path / "curves.png"),
        "plot_table": lambda: table.plot_table(
            {"instance=ot,scene=none": cell},
            {"scene": {"chance": 20.0}},
            ["scene"],
            [("ot", "none")],
            tmp_path / "t.png",
            "t",
        ),
    }[which]
    return call


@pytest.mark.parametrize("which", PLOTTERS)
def test_a_plot_that_cannot_be_written_leaves_no_figure_open(tmp_path, monkeypatch, which):
    """A figure was closed only after its file was written: a write that failed (a full disk, a
    read-only folder) left it in pyplot's registry, and the training loop logs that failure and goes
    on (``fit``: "could not plot curves"), so every run of a long job (nine LVU tasks x seeds in one
    process) kept one more figure. Nothing is left open whatever the write does (the plots now draw
    on a ``Figure`` pyplot never holds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moviessl import demo_report, training
    from moviessl.tasks.lvu import table

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    for mod in (demo_report, training, table):
        monkeypatch.setattr(mod, "atomic_write", full)
    call = _plot_call(which, tmp_path)
    plt.close("all")
    with pytest.raises(OSError):
        call()
    assert plt.get_fignums() == []


@pytest.mark.parametrize("which", PLOTTERS)
def test_a_plot_leaves_the_callers_matplotlib_backend_as_it_was(tmp_path, which):
    """Each plot called ``matplotlib.use("Agg")``, which switches pyplot's backend when pyplot is
    loaded: a notebook that trained a model (``fit`` draws curves.png) or ran a table lost its inline
    backend, and its later plots were not shown. The plots draw on a ``Figure`` of their own, with
    no pyplot (headless on any backend, nothing left in pyplot's registry)."""
    import matplotlib
    import matplotlib.pyplot as plt

    call = _plot_call(which, tmp_path)
    before = matplotlib.get_backend()
    plt.switch_backend("svg")  # (headless, and not Agg: the caller's own)
    try:
        png = call()
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == []
        assert png.read_bytes().startswith(b"\x89PNG")
    finally:
        plt.switch_backend(before)


def _summary(*values, metric="acc@1"):
    """A fine-tuning run's summary.json as ``demo.aggregate`` reads it: one replicate's seeds."""
    return {"summary": {metric: {}}, "runs": [{"metrics": {metric: v}} for v in values]}


def test_the_demo_averages_seeds_within_a_replicate_then_takes_mean_and_se_over_replicates():
    """Only a case of two replicates, each of one value per seed, was tested: the SE of one
    pretraining run taken over its single mean (0, so every claim on it "held" at z = inf), and a
    replicate no seed of which gave a finite value counted as a pretraining run (or a division by
    zero), passed. By hand: seeds 1, 2, 3 have mean 2 and SE sd / sqrt(3) = 1 / sqrt(3); replicate
    means 2 and 5 have mean 3.5 and SE sqrt(((2 - 3.5)^2 + (5 - 3.5)^2) / 1) / sqrt(2) = 1.5."""
    import math

    from moviessl.demo import aggregate

    one = aggregate([_summary(1.0, 2.0, 3.0)])["acc@1"]
    assert one == pytest.approx({"mean": 2.0, "se": 1 / math.sqrt(3), "n": 3, "n_pretrain": 1})
    two = aggregate([_summary(1.0, 2.0, 3.0), _summary(4.0, 6.0)])["acc@1"]
    assert two == pytest.approx({"mean": 3.5, "se": 1.5, "n": 5, "n_pretrain": 2})
    lost = aggregate([_summary(1.0, 2.0, 3.0), _summary(math.nan, math.nan)])["acc@1"]
    assert lost == pytest.approx({"mean": 2.0, "se": 1 / math.sqrt(3), "n": 3, "n_pretrain": 1, "n_nonfinite": 2})


def test_a_tables_rows_are_named_by_their_settings_and_count_the_rows_runs():
    """Row names and the runs column were read by no test: a mask {1,2,3} shown as {1, 2}, two
    rows differing only in the TxE's learning rate given one name, the pair prior's row a cell too
    wide (its columns shifted), and the runs of a row's fewest-run metric as its runs, passed."""
    from moviessl.demo import setting_name
    from moviessl.demo_report import markdown_tables

    def row(table, setting, metric, mean, se, n, n_pretrain):
        return {"table": table, "setting": setting, "metric": metric, "mean": mean, "se": se, "n": n} | {
            "n_pretrain": n_pretrain
        }

    lr = setting_name("cvrl", "maskpred", txe_lr=0.1)
    rows = [
        row("relation", lr, "mean_acc", 40.0, 1.5, 12, 3),
        row("relation", lr, "top1_acc", 50.0, 2.0, 11, 3),  # one run non-finite on this metric only
        row("relation", setting_name("cvrl", "maskpred"), "mean_acc", 41.0, 1.0, 12, 3),
        row("relation", setting_name("cvrl", "maskpred"), "top1_acc", 51.0, 1.0, 12, 3),
        row("relation", "baseline=pair_prior", "mean_acc", 30.0, 0.0, 1, 0),
        row("relation", "baseline=pair_prior", "top1_acc", 35.0, 0.0, 1, 0),
    ]
    rows += [
        row("mask_ablation", setting_name("cvrl", "maskpred", loss, mask), "cider", 20.0 + i, 1.0, 12, 3)
        for i, (loss, mask) in enumerate((("contrastive", "1-3"), ("contrastive", "1"), ("l2", "1-4")))
    ]
    lines = markdown_tables(rows).splitlines()
    assert "| CVRL | MaskPred (TxE lr x0.1) | 40.00 ± 1.50 | 50.00 ± 2.00 | 12 (3) |" in lines
    assert "| CVRL | MaskPred | 41.00 ± 1.00 | 51.00 ± 1.00 | 12 (3) |" in lines
    assert "| pair prior (each pair's majority train class; no model) | - | 30.00 | 35.00 | 1 (0) |" in lines
    assert "| {1, 2, 3} | contrastive | 20.00 ± 1.00 | n/a | n/a | n/a | n/a | 12 (3) |" in lines
    assert "| {1} | contrastive | 21.00 ± 1.00 | n/a | n/a | n/a | n/a | 12 (3) |" in lines
    assert "| {1, 2, 3, 4} | l2 | 22.00 ± 1.00 | n/a | n/a | n/a | n/a | 12 (3) |" in lines


def test_the_report_and_its_plots_say_what_the_se_is_over(tmp_path, monkeypatch):
    """With one pretraining run the SE is over its fine-tuning seeds; with several, over the
    replicates. Only the several-replicate wording was met by a test: "over 1 pretraining runs"
    (for one run's seeds) passed, in the plot's title and in results.md."""
    from moviessl.demo_report import bar_plot, write_report

    figs = drawn(monkeypatch)
    for n_pretrain, n, said in ((1, 5, "mean ± SE over 5 seeds"), (3, 15, "mean ± SE over 3 pretraining runs")):
        rows = [{"table": "verb", "setting": "backbone=cvrl", "metric": "acc@1", "mean": 40.0, "se": 1.0, "n": n}]
        rows[0]["n_pretrain"] = n_pretrain
        bar_plot(rows, "verb", tmp_path / "v.png")
        assert figs[-1].axes[0].get_title().endswith("\n" + said)
    for pretrain_seeds, said in (
        (1, "mean ± standard error over 5 fine-tuning seeds of one pretraining run"),
        (3, "mean ± standard error over 3 independent pretraining runs (backbone and TxE) of the mean over 5 "),
    ):
        kw = dict(probes={}, runs={}, seeds=5, profile="quick", wall_s=1.0, synth=tmp_path)
        write_report(tmp_path / str(pretrain_seeds), rows, pretrain_seeds=pretrain_seeds, **kw)
        assert said in (tmp_path / str(pretrain_seeds) / "results.md").read_text(encoding="utf-8")


def test_each_runs_summaries_go_to_their_rows_of_this_profiles_replicates(tmp_path):
    """Which runs make which row (``demo.collect``) was met only by the slow end-to-end demo, which
    reads no row's values: a replicate beyond the profile's read, the pair prior counted as
    pretrained, the main run's mask-ablation copy keeping its Table 1 setting, or a relation run
    copied into the mask ablation too (overwriting the {1,2,3} row), all passed it; a TxE-lr or
    MoDist run so copied failed only there (minutes). By hand: replicate means 11 and 15 give 13 ± 2."""
    import json
    from types import SimpleNamespace

    from moviessl.demo import MAIN_VARIANT, Row, collect

    def runs(row, metric, *replicates):
        for r, values in enumerate(replicates):
            d = tmp_path / "finetune" / row.task / row.tag / f"r{r}"
            d.mkdir(parents=True)
            summary = {"summary": {metric: {}}, "runs": [{"metrics": {metric: v}} for v in values]}
            (d / "summary.json").write_text(json.dumps(summary))
        return row

    rows = [
        runs(Row("srl", "srl", "cvrl", "maskpred", MAIN_VARIANT), "cider", [10, 12], [14, 16], [99, 99]),
        runs(Row("srl", "srl", "cvrl", "maskpred", MAIN_VARIANT, 0.1), "cider", [20, 20], [22, 22]),
        runs(Row("srl", "srl", "modist", "maskpred", MAIN_VARIANT), "cider", [30, 30], [30, 30]),
        runs(Row("mask_ablation", "srl", "cvrl", "maskpred", ("l2", "1-3")), "cider", [5], [7]),
        runs(Row("relation", "relation", "cvrl", "maskpred", MAIN_VARIANT), "cider", [40, 40], [42, 42]),
    ]
    prior = tmp_path / "finetune" / "relation" / "pair_prior"
    prior.mkdir(parents=True)
    (prior / "summary.json").write_text(json.dumps({"summary": {"mean_acc": {"mean": 25.0, "se": 0.0, "n": 1}}}))
    results, probes, _ = collect(tmp_path, rows, SimpleNamespace(pretrain_seeds=2), [])  # r2: another profile's
    got = {(r["table"], r["setting"], r["metric"]): [r[k] for k in ("mean", "se", "n", "n_pretrain")] for r in results}
    assert len(results) == len(got) == 7 and probes == {}
    want = {
        ("srl", "backbone=cvrl,txe=maskpred", "cider"): [13.0, 2.0, 4, 2],
        ("mask_ablation", "backbone=cvrl,txe=maskpred,loss=contrastive,mask=1-3", "cider"): [13.0, 2.0, 4, 2],
        ("srl", "backbone=cvrl,txe=maskpred,txe_lr=0.1", "cider"): [21.0, 1.0, 4, 2],
        ("srl", "backbone=modist,txe=maskpred", "cider"): [30.0, 0.0, 4, 2],
        ("mask_ablation", "backbone=cvrl,txe=maskpred,loss=l2,mask=1-3", "cider"): [6.0, 1.0, 2, 2],
        ("relation", "backbone=cvrl,txe=maskpred", "cider"): [41.0, 1.0, 4, 2],
        ("relation", "baseline=pair_prior", "mean_acc"): [25.0, 0.0, 1, 0],
    }
    assert set(got) == set(want) and all(got[k] == pytest.approx(v) for k, v in want.items()), got


def test_the_data_line_names_the_synthmovies_knobs_set_beyond_its_preset(tmp_path):
    """A demo on ``--synth`` with a folder generated with overrides (e.g. ``scene_fixtures=6``) wrote
    only the folder's path, so its results.md read as the preset's data."""
    import json
    from dataclasses import asdict

    from moviessl.demo_report import write_report
    from moviessl.synth.generate import PRESETS

    rows = [{"table": "verb", "setting": "backbone=cvrl", "metric": "acc@1", "mean": 40.0, "se": 1.0, "n": 2}]
    config = json.loads(json.dumps(asdict(PRESETS["demo"])))
    config.pop("workers")
    for name, over, said in (
        ("plain", {}, "(SynthMovies preset `demo`, seed 3)."),
        (
            "knobs",
            {"scene_fixtures": 6, "action_film_p": 0.5},
            "(SynthMovies preset `demo`, seed 3; beyond the preset: action_film_p=0.5, scene_fixtures=6).",
        ),
        ("old", {"scene_fixtures": None}, "(SynthMovies preset `demo`, seed 3)."),  # written before a knob existed
    ):
        synth = tmp_path / name
        synth.mkdir()
        cfg = {k: v for k, v in {**config, **over}.items() if v is not None}
        (synth / "synth_meta.json").write_text(json.dumps({"preset": "demo", "seed": 3, "config": cfg}))
        kw = dict(probes={}, runs={}, seeds=2, profile="full", wall_s=1.0)
        write_report(tmp_path / f"out_{name}", rows, synth=synth, **kw)
        text = (tmp_path / f"out_{name}" / "results.md").read_text(encoding="utf-8")
        assert f"Data: {synth} {said}" in text
        assert ("scene_fixtures=6" in text) == (name == "knobs")
    bare = tmp_path / "bare"  # no metadata: the path alone
    write_report(tmp_path / "out_bare", rows, synth=bare, **kw)
    assert f"Data: {bare}.\n" in (tmp_path / "out_bare" / "results.md").read_text(encoding="utf-8")
    damaged = tmp_path / "damaged"  # a hand-edited file whose preset is a list: the path alone, no crash
    damaged.mkdir()
    (damaged / "synth_meta.json").write_text(json.dumps({"preset": ["demo"], "seed": 3, "config": config}))
    write_report(tmp_path / "out_damaged", rows, synth=damaged, **kw)
    assert f"Data: {damaged}.\n" in (tmp_path / "out_damaged" / "results.md").read_text(encoding="utf-8")
