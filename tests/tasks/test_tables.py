"""``moviessl table``: the paper's tables from finished run folders (their summary.json as
``write_summary`` writes it)."""

import json
import math

import pytest

from moviessl.cli import main
from moviessl.tasks.base import write_summary
from moviessl.tasks.lvu.task import TASKS as LVU
from moviessl.tasks.tables import compare, lvu_table, parse_runs, vidsitu_table
from moviessl.tasks.vidsitu import TASKS as VIDSITU


def lvu_run(folder, values, partial=None, per_task_folders=True, **facts):
    """A ``finetune lvu`` folder: ``values[task]`` = the test scores of its seeds (val = test + 1)."""
    for task, vals in values.items():
        m = LVU[task].metric
        runs = [{"seed": k, "metrics": {f"test_{m}": v, f"val_{m}": v + 1}} for k, v in enumerate(vals)]
        d = folder / task if per_task_folders else folder
        d.mkdir(parents=True, exist_ok=True)
        write_summary(d, runs, LVU[task].metric_keys, task, f"LVU {task}", partial=partial, task=task, **facts)
    return folder


def vidsitu_run(folder, task, rows, partial=None, **facts):
    folder.mkdir(parents=True)
    runs = [{"seed": k, "metrics": m} for k, m in enumerate(rows)]
    write_summary(folder, runs, VIDSITU[task].metric_keys, task, f"VidSitu {task}", partial=partial, task=task, **facts)
    return folder


def test_an_lvu_table_ranks_runs_by_each_tasks_direction(tmp_path):
    ot = lvu_run(tmp_path / "ot", {"scene": [40, 42], "like_ratio": [0.30, 0.32]})
    otpp = lvu_run(tmp_path / "otpp", {"scene": [50, 52], "like_ratio": [0.40, 0.42]})
    res = lvu_table({"OT": ot, "OT++": otpp})
    assert res["tasks"] == ["scene", "like_ratio"]  # LVU's order, only the tasks run
    assert res["ranks"] == {"OT": {"scene": 2, "like_ratio": 1}, "OT++": {"scene": 1, "like_ratio": 2}}
    assert res["stats"]["OT"]["scene"]["mean"] == 41 and res["stats"]["OT"]["scene"]["n"] == 2
    lines = res["markdown"].splitlines()
    assert "| OT | 41.00 ± 1.00 | 0.310 ± 0.010 | 1/2 | 1.50 |" in lines
    assert "| OT++ | 51.00 ± 1.00 | 0.410 ± 0.010 | 1/2 | 1.50 |" in lines
    val = lvu_table({"OT": ot}, split="val")
    assert val["stats"]["OT"]["scene"]["mean"] == 42  # the val scores, not the test ones


def test_the_vs_column_is_the_claims_rule_in_each_tasks_direction(tmp_path):
    a = lvu_run(tmp_path / "a", {"scene": [40, 42, 41], "like_ratio": [0.30, 0.31, 0.32]})
    b = lvu_run(tmp_path / "b", {"scene": [50, 52, 51], "like_ratio": [0.20, 0.21, 0.22]})
    c = lvu_run(tmp_path / "c", {"scene": [41, 43, 42], "like_ratio": [0.40]})  # one seed on like_ratio
    res = lvu_table({"a": a, "b": b, "c": c}, vs="a")
    got = {(r["run"], r["column"]): r for r in res["compare"]}
    assert got[("b", "scene")]["better_by"] == pytest.approx(10) and got[("b", "scene")]["beyond_2se"] is True
    # lower MSE is better: b's 0.21 is better than a's 0.31 by +0.1
    assert got[("b", "like_ratio")]["better_by"] == pytest.approx(0.1) and got[("b", "like_ratio")]["beyond_2se"]
    assert got[("c", "scene")]["beyond_2se"] is False  # 1 point with a combined SE of 0.82: z 1.22
    assert got[("c", "like_ratio")]["beyond_2se"] is None and got[("c", "like_ratio")]["why"] == "one run"
    assert (
        "**Against a**" in res["markdown"]
        and "| c | like_ratio (MSE) | -0.090 | - | - | n/a (one run) |" in (res["markdown"])
    )


def test_a_task_all_folder_a_one_task_folder_and_an_interrupted_one_are_read(tmp_path):
    full = lvu_run(tmp_path / "full", {t: [10.0, 12.0] for t in ("scene", "genre")})
    one = lvu_run(tmp_path / "one", {"writer": [30.0, 31.0]}, per_task_folders=False)
    res = lvu_table({"full": full, "one": one})
    assert res["tasks"] == ["scene", "writer", "genre"]
    assert "(n=" not in res["markdown"]  # every cell over 2 runs: the heading says so
    three = lvu_run(tmp_path / "three", {"scene": [10.0, 12.0, 14.0]})
    md = lvu_table({"full": full, "three": three})["markdown"]
    assert "| three | 12.00 ± 1.15 (n=3) | n/a |" in md and "| full | 11.00 ± 1.00 (n=2) |" in md
    assert "| one | n/a | 30.50 ± 0.50 | n/a | 1/3 | 1.00 |" in res["markdown"]
    # --task all's own record, copied without its task folders, still gives its cells
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "summary.json").write_text(json.dumps({"tasks": {"genre": {"test_top1": {"mean": 9, "se": 1, "n": 3}}}}))
    assert lvu_table({"alone": alone})["stats"]["alone"] == {"genre": {"mean": 9.0, "se": 1.0, "n": 3}}


def test_partial_scores_are_listed_under_the_table(tmp_path):
    run = lvu_run(tmp_path / "r", {"scene": [40, 41]}, partial="PARTIAL: the score covers 9 of 10 eval items")
    res = lvu_table({"r": run})
    assert "- r / scene: PARTIAL: the score covers 9 of 10 eval items" in res["markdown"]


def test_the_chance_row_comes_from_the_labels(tmp_path):
    # LVU's layout, scene only (the table reads the labels of its own tasks): train classes 0 1 2 0
    for split, classes in (("train", [0, 1, 2, 0]), ("val", [0, 1]), ("test", [0, 0, 0, 2])):
        p = tmp_path / "lvu" / "lvu_1.0" / "scene" / f"{split}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{c} c{c} {split}{k} tt{k}\n" for k, c in enumerate(classes))
        p.write_text("class_id class_name youtube_id imdb_id\n" + rows)
    run = lvu_run(tmp_path / "r", {"scene": [40, 41]})
    res = lvu_table({"r": run}, data_root=tmp_path / "lvu")
    assert res["chance"]["scene"]["chance"] == 75.0  # the train majority (0) on the test split
    assert "| *chance / constant* | 75.00 | | |" in res["markdown"].splitlines()
    assert lvu_table({"r": run}, split="val", data_root=tmp_path / "lvu")["chance"]["scene"]["chance"] == 50.0


def test_vidsitu_tables_are_one_per_task_in_the_order_given(tmp_path):
    srl = [{"cider": 40.0, "cider_verb": 30.0, "cider_arg": 20.0, "rouge_l": 35.0, "lea": 45.0}]
    srl2 = [{**srl[0], "cider": 44.0}, {**srl[0], "cider": 46.0}]
    rel = [{"mean_acc": 30.0, "top1_acc": 40.0}, {"mean_acc": 32.0, "top1_acc": 42.0}]
    runs = {
        "scratch": vidsitu_run(tmp_path / "s", "srl", srl * 2),
        "maskpred": vidsitu_run(tmp_path / "m", "srl", srl2),
        "rel": vidsitu_run(tmp_path / "r", "relation", rel),
    }
    res = vidsitu_table(runs, vs="scratch")
    md = res["markdown"]
    assert md.index("### VidSitu srl") < md.index("### VidSitu relation")
    assert "| maskpred | 45.00 ± 1.00 | 30.00 ± 0.00 |" in md
    assert "(n=" not in md  # two runs in every row: the header's n=2 says it
    (c,) = [r for r in res["compare"] if r["column"] == "cider"]
    assert c["run"] == "maskpred" and c["better_by"] == pytest.approx(5.0) and c["beyond_2se"] is True


def test_the_vidsitu_table_is_plotted_a_panel_per_task_and_metric(tmp_path, monkeypatch):
    """``table vidsitu --out`` wrote no plot (LVU's had one): a panel per task and metric, a bar per
    run of that task in the order given, mean ± SE as the cells (no bar for one run, n/a without a
    finite mean), each run's colour the same in every panel."""
    from moviessl.tasks.tables import write_table
    from plot_checks import drawn, error_bars

    srl = [{"cider": 40.0, "cider_verb": 30.0, "cider_arg": 20.0, "rouge_l": 35.0, "lea": 45.0}]
    rel = [{"mean_acc": 30.0, "top1_acc": 40.0}, {"mean_acc": 32.0, "top1_acc": 42.0}]
    runs = {
        "scratch": vidsitu_run(tmp_path / "s", "srl", srl),
        "maskpred": vidsitu_run(tmp_path / "m", "srl", [{**srl[0], "cider": 44.0}, {**srl[0], "cider": 46.0}]),
        "rel": vidsitu_run(tmp_path / "r", "relation", rel),
        "diverged": vidsitu_run(tmp_path / "d", "relation", [{"mean_acc": math.nan, "top1_acc": math.nan}]),
    }
    figs = drawn(monkeypatch)
    written = write_table(vidsitu_table(runs), tmp_path / "t.md")
    assert [p.name for p in written] == ["t.md", "t.json", "t.png"] and written[2].stat().st_size > 0
    (fig,) = figs
    axes = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.get_title() for ax in axes]
    assert titles == [f"srl: {k} ↑" for k in ("cider", "cider_verb", "cider_arg", "rouge_l", "lea")] + [
        "relation: mean_acc ↑",
        "relation: top1_acc ↑",
    ]
    cider, mean_acc = axes[0], axes[5]
    assert [t.get_text() for t in cider.get_xticklabels()] == ["scratch", "maskpred"]
    assert [p.get_height() for p in cider.patches] == [40.0, 45.0]
    assert error_bars(cider) == {1: (44.0, 46.0)}  # one run: no error bar
    assert [t.get_text() for t in mean_acc.get_xticklabels()] == ["rel", "diverged"]
    assert [t.get_text() for t in mean_acc.texts] == ["n/a"]
    assert axes[1].patches[1].get_facecolor() == cider.patches[1].get_facecolor()
    assert cider.patches[0].get_facecolor() != cider.patches[1].get_facecolor() != mean_acc.patches[0].get_facecolor()
    assert "mean ± SE over 1/2 runs" in fig._suptitle.get_text()


def test_run_names_and_bad_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b=c").mkdir()
    assert list(parse_runs([f"X={tmp_path / 'a'}", str(tmp_path / "a")])) == ["X", "a"]
    assert parse_runs([str(tmp_path / "b=c")]) == {"b=c": tmp_path / "b=c"}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{truncated")
    rc = main(["table", "vidsitu", str(tmp_path / "bad")])
    assert rc == 2
    assert main(["table", "lvu", str(tmp_path / "a")]) == 2  # no summary.json anywhere
    assert main(["table", "lvu", str(tmp_path / "a"), f"A={tmp_path / 'a'}", "--vs", "A"]) == 2


def test_the_command_writes_the_table_its_json_and_its_plot(tmp_path, capsys):
    a = lvu_run(tmp_path / "a", {"scene": [40, 42], "view_count": [0.5, 0.6]})
    b = lvu_run(tmp_path / "b", {"scene": [50, 52], "view_count": [0.4, 0.5]})
    out = tmp_path / "t" / "table5.md"
    assert main(["table", "lvu", f"OT={a}", f"OT++={b}", "--vs", "OT", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["top1"] == {"OT": 0, "OT++": 2} and rec["mean_rank"] == {"OT": 2.0, "OT++": 1.0}
    assert out.with_suffix(".png").stat().st_size > 0
    assert main(["table", "lvu", str(a), "--out", str(tmp_path / "t.txt")]) == 2


def test_compare_names_a_missing_base():
    from moviessl.errors import BadInputError

    with pytest.raises(BadInputError, match="no run named 'z'"):
        compare({"a": {}}, "z", [])


def test_run_names_with_a_table_bar_stay_one_cell_and_compare(tmp_path):
    """A run named with '|' (a folder 'ot|ours'): --vs split its claim id at the name's bar (a
    KeyError traceback or a row of the wrong run), and its Markdown row had one cell too many."""
    a = lvu_run(tmp_path / "a", {"scene": [40, 42, 41]})
    b = lvu_run(tmp_path / "b", {"scene": [50, 52, 51]})
    res = lvu_table({"a": a, "ot|ours": b}, vs="a")
    assert [(r["run"], r["column"]) for r in res["compare"]] == [("ot|ours", "scene")]
    assert res["compare"][0]["beyond_2se"] is True
    rows = [ln for ln in res["markdown"].splitlines() if ln.startswith("| ot")]
    assert len(rows) == 2 and all(r"ot\|ours" in r for r in rows)
    assert lvu_table({"a|x": a, "b": b}, vs="a|x")["compare"][0]["run"] == "b"
    rel = [{"mean_acc": 30.0, "top1_acc": 40.0}, {"mean_acc": 32.0, "top1_acc": 42.0}]
    md = vidsitu_table({"x|y": vidsitu_run(tmp_path / "r", "relation", rel)})["markdown"]
    assert r"| x\|y | 31.00 ± 1.00 | 41.00 ± 1.00 |" in md


def test_a_name_without_a_folder_is_refused(tmp_path):
    from moviessl.errors import BadInputError

    with pytest.raises(BadInputError, match="A=: no run folder after '='"):
        parse_runs(["A="])


@pytest.mark.parametrize(
    "dataset, record",
    [
        ("lvu", {"task": "scene", "summary": {"test_top1": {"mean": 40.0, "se": 1.0, "n": None}}}),
        ("lvu", {"task": "scene", "summary": {"test_top1": {"mean": "40", "se": 1.0, "n": 2}}}),
        ("lvu", {"task": "scene", "summary": {"test_top1": {"mean": 40.0, "se": [1], "n": 2}}}),
        ("lvu", {"task": "scene", "summary": 3}),
        ("lvu", {"task": ["scene"], "summary": {}}),
        ("vidsitu", {"task": ["relation"], "summary": {}}),
        ("vidsitu", {"task": "relation", "summary": {"mean_acc": {"mean": 40.0, "se": 1.0, "n": "2"}}}),
        ("vidsitu", {"task": "relation", "summary": ["mean_acc"]}),
    ],
)
def test_a_summary_of_other_types_is_one_line(tmp_path, capsys, dataset, record):
    """A summary.json edited or written by something else, with a value of another type, was a
    traceback (int(None), `in` on a number, a list as a dict key) or, a string, read as a number."""
    run = tmp_path / "r"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(record))
    assert main(["table", dataset, str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"moviessl: error: {run / 'summary.json'}: ") and "\n" not in err


def test_a_run_name_with_dollars_is_drawn_as_written(tmp_path):
    """matplotlib reads text between two '$' as TeX: a run named '$\\alpha_1$ run' was drawn as a
    formula, and one with TeX it cannot parse ('$\\foo$') a ValueError traceback after the .md."""
    a = lvu_run(tmp_path / "a", {"scene": [40, 42, 41]})
    out = tmp_path / "t.md"
    assert main(["table", "lvu", f"$\\foo$={a}", "--out", str(out)]) == 0
    assert out.with_suffix(".png").stat().st_size > 0


def test_a_row_whose_tasks_were_run_with_other_inputs_or_init_says_so(tmp_path):
    """A rerun of --task all with another --init, interrupted: its finished tasks are of the new
    settings and the rest of the old, in one folder -- one row of two models."""
    run = lvu_run(tmp_path / "r", {"scene": [40, 41], "genre": [30, 31]}, inputs="instances:/f:sup", init="ot:aaa")
    assert lvu_table({"r": run})["mixed"] == {}
    lvu_run(run, {"genre": [35, 36]}, inputs="instances:/f:sup", init="ot:bbb")
    res = lvu_table({"r": run})
    assert set(res["mixed"]) == {"r"} and "scene: inputs `instances:/f:sup`, init `ot:aaa`" in res["mixed"]["r"]
    assert "genre: inputs `instances:/f:sup`, init `ot:bbb`" in res["markdown"]
    # the same inputs and init, another config (e.g. train.lr) for one task
    other = lvu_run(tmp_path / "c", {"scene": [40, 41], "genre": [30, 31]}, inputs="i", init="n")
    (other / "scene" / "config.yaml").write_text("train:\n  lr: 0.001\n")
    (other / "genre" / "config.yaml").write_text("train:\n  lr: 0.001\n")
    assert lvu_table({"c": other})["mixed"] == {}
    (other / "genre" / "config.yaml").write_text("train:\n  lr: 0.01\n")
    assert lvu_table({"c": other})["mixed"]["c"].count("config.yaml") == 2


def test_vidsitu_runs_scored_on_different_segments_say_so(tmp_path):
    rel = [{"mean_acc": 30.0, "top1_acc": 40.0}]
    runs = {
        "all": vidsitu_run(tmp_path / "a", "relation", rel, eval_segments=8),
        "subset": vidsitu_run(tmp_path / "s", "relation", rel, eval_segments=6),
    }
    md = vidsitu_table(runs)["markdown"]
    assert "Scored on different segments" in md and "- subset: 6 eval segments" in md
    runs["subset"] = vidsitu_run(tmp_path / "s2", "relation", rel, eval_segments=8)
    assert "Scored on different segments" not in vidsitu_table(runs)["markdown"]


def test_vidsitu_rows_over_different_numbers_of_runs_say_theirs(tmp_path):
    rel = [{"mean_acc": 30.0, "top1_acc": 40.0}, {"mean_acc": 32.0, "top1_acc": 42.0}]
    runs = {
        "two": vidsitu_run(tmp_path / "a", "relation", rel),
        "one": vidsitu_run(tmp_path / "b", "relation", rel[:1]),
    }
    md = vidsitu_table(runs)["markdown"]
    assert "| two (n=2) | 31.00 ± 1.00 |" in md and "| one (n=1) | 30.00 |" in md


@pytest.mark.parametrize("name", ["a\nb", "a\r\nb", "a\u2028b", "a\x1b[31mb"])
def test_a_run_name_with_a_line_break_is_one_line_refused(tmp_path, capsys, name):
    """A run named with a newline (``$'a\\nb'=DIR``, or a folder so named) split its Markdown row in
    two, exit 0: a line break has no escape in a table cell (a '|' has, :func:`md_cell`)."""
    a = lvu_run(tmp_path / "a", {"scene": [40, 42, 41]})
    assert main(["table", "lvu", f"{name}={a}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moviessl: error: run name ") and "line break" in err and "\n" not in err
    # the user already wrote NAME=DIR: the line asks for another name, not for NAME=DIR again
    assert err.endswith(": give it a name without one (NAME=DIR)") and "name it NAME=DIR" not in err
    rel = [{"mean_acc": 30.0, "top1_acc": 40.0}]
    v = vidsitu_run(tmp_path / "v", "relation", rel)
    assert main(["table", "vidsitu", f"{name}={v}"]) == 2
    assert "line break" in capsys.readouterr().err
    assert main(["table", "vidsitu", f"a\tb={v}"]) == 2  # a tab too: a control character in a cell


def test_out_is_a_md_file_or_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """--out "" (``--out "$OUT"`` unset) wrote nothing, exit 0; ``t.md/`` wrote the file t.md; a
    folder ``T.json`` beside ``T.md`` failed after T.md was written; ``T.MD`` was "not a .md file";
    a refused name had its missing folders made first."""
    a = lvu_run(tmp_path / "a", {"scene": [40, 42, 41]})
    monkeypatch.chdir(tmp_path)

    def refused(out, says, dataset="lvu"):
        assert main(["table", dataset, str(a if dataset == "lvu" else v), "--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and "\n" not in err and "Traceback" not in err, err

    v = vidsitu_run(tmp_path / "v", "relation", [{"mean_acc": 30.0, "top1_acc": 40.0}])
    before = sorted(p.name for p in tmp_path.iterdir())
    refused("", "--out: give the table's .md file; it is empty")
    refused("t.md/", "--out: 't.md/' is a folder: give the table's .md file (e.g. t.md/table.md)")
    refused("a", "--out: 'a' is a folder")
    refused("new/t", "--out: 'new/t' does not end in .md")
    refused("new/t.txt", "does not end in .md")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no file, no folder 'new'
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "t.json").mkdir()
    refused("j/t.md", "j/t.json: an existing folder where the table's .json goes")
    (tmp_path / "k" / "t.png").mkdir(parents=True)
    refused("k/t.md", "k/t.png: an existing folder where the table's .png goes")
    assert not (tmp_path / "j" / "t.md").exists() and not (tmp_path / "k" / "t.md").exists()
    refused_vidsitu = main(["table", "vidsitu", str(v), "--out", "k/t.md"])  # VidSitu's table has a plot too
    assert refused_vidsitu == 2 and "k/t.png: an existing folder" in capsys.readouterr().err
    assert main(["table", "vidsitu", str(v), "--out", "m/t.md"]) == 0
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"t.md", "t.json", "t.png"}
    capsys.readouterr()
    assert main(["table", "lvu", str(a), "--out", "x/y/T.MD"]) == 0  # any case; its folders made
    assert {p.name for p in (tmp_path / "x" / "y").iterdir()} == {"T.MD", "T.json", "T.png"}


def test_a_folder_with_an_equals_sign_is_a_folder_by_one_rule(tmp_path, monkeypatch, capsys):
    """A relative folder ``a=c`` was read as run ``a`` of folder ``c``: "no such run folder c", or,
    beside a folder ``c``, silently that other run under the name ``a``."""
    from pathlib import Path

    from moviessl.errors import BadInputError

    monkeypatch.chdir(tmp_path)
    for d in ("a=c", "b", "runs/x=y/r", "y"):
        (tmp_path / d).mkdir(parents=True)
    assert parse_runs(["a=c"]) == {"a=c": Path("a=c")}  # an existing folder as a whole
    assert parse_runs(["runs/x=y/r", "OT=runs/x=y/r"]) == {"r": Path("runs/x=y/r"), "OT": Path("runs/x=y/r")}
    assert parse_runs(["B=b"]) == {"B": Path("b")}
    (tmp_path / "B=b").mkdir()  # a folder B=b beside b: both readings are folders, neither is guessed
    with pytest.raises(BadInputError, match=r"^B=b: both a folder and NAME=DIR .*write \./B=b or B=\./b$"):
        parse_runs(["B=b"])
    assert parse_runs(["./B=b", "B=./b"]) == {"B=b": Path("./B=b"), "B": Path("./b")}
    assert main(["table", "lvu", "nope=q"]) == 2  # no folder 'q', none 'nope=q': said of the folder part
    assert (
        capsys.readouterr().err.strip() == "moviessl: error: q: no such run folder (a moviessl finetune --out folder)"
    )
    lvu_run(tmp_path / "a=c", {"scene": [40, 42]})
    assert main(["table", "lvu", "a=c"]) == 0 and "| a=c | 41.00 ± 1.00 |" in capsys.readouterr().out


def test_a_run_folder_from_home_is_expanded_and_the_refusal_spells_an_absolute_folder(tmp_path, monkeypatch, capsys):
    """``OT=~/runs/ot`` reached the table as a folder ``~`` ("no such run folder"): the shell expands
    ``~`` after ``NAME=`` only in some modes (zsh never). And where both readings of ``OT=/abs/ot``
    were folders, the refusal said ``OT=.//abs/ot``, a folder relative to here."""
    import os
    from pathlib import Path

    from moviessl.errors import BadInputError

    home, work = tmp_path / "home", tmp_path / "work"
    ot = lvu_run(home / "runs" / "ot", {"scene": [40, 42]})
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert parse_runs(["OT=~/runs/ot", "~/runs/ot"]) == {"OT": ot, "ot": ot}
    assert main(["table", "lvu", "OT=~/runs/ot"]) == 0 and "| OT | 41.00 ± 1.00 |" in capsys.readouterr().out
    (work / "~").mkdir()  # a folder named ~ is ./~
    assert parse_runs(["./~"]) == {"~": Path("~")}

    for spec in (f"OT={ot}", "OT=~/runs/ot"):
        _, _, path = spec.partition("=")
        literal = work / "OT=" / str(ot).lstrip(os.sep) if path.startswith(os.sep) else work / spec
        literal.mkdir(parents=True)
        with pytest.raises(BadInputError) as e:
            parse_runs([spec])
        suggested = str(e.value).rsplit(" or ", 1)[1]
        assert suggested == "OT=./" + os.path.join("..", "home", "runs", "ot")
        (d,) = parse_runs([suggested]).values()
        assert d.resolve() == ot.resolve()
        assert parse_runs(["./" + spec]) == {literal.name: Path("./" + spec)}


def test_a_run_folder_named_tilde_here_is_read_where_the_home_folder_has_none(tmp_path, monkeypatch, capsys):
    """``finetune --out=~/runs/ot`` in zsh (no expansion after ``=``), or with the ``~`` quoted, wrote
    the run into a folder ``~`` here, which ``table OT=~/runs/ot`` typed the same way read until the
    table expanded a leading ``~``: it then looked in the home folder ("no such run folder"), and
    where the home folder had a run of that name too, read that other run without a word. The
    folder here is read where the home folder has none, and both are refused, naming both spellings."""
    from pathlib import Path

    from moviessl.errors import BadInputError

    home, work = tmp_path / "home", tmp_path / "work"
    here = lvu_run(work / "~" / "runs" / "ot", {"scene": [40, 42]})
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert parse_runs(["OT=~/runs/ot", "~/runs/ot"]) == {"OT": Path("~/runs/ot"), "ot": Path("~/runs/ot")}
    assert main(["table", "lvu", "OT=~/runs/ot"]) == 0 and "| OT | 41.00 ± 1.00 |" in capsys.readouterr().out
    lvu_run(home / "runs" / "ot", {"scene": [50, 52]})
    for spec in ("OT=~/runs/ot", "~/runs/ot"):
        with pytest.raises(BadInputError, match="both a folder ~/runs/ot here and .* in the home folder") as e:
            parse_runs([spec])
        for spelling in str(e.value).rsplit(": write ", 1)[1].split(" or "):
            (d,) = parse_runs([spec.replace("~/runs/ot", spelling)]).values()
            assert d.resolve() in (here.resolve(), (home / "runs" / "ot").resolve())
    assert parse_runs(["OT=./~/runs/ot"])["OT"].resolve() == here.resolve()


def test_a_run_named_after_a_non_ascii_folder_under_a_non_utf8_locale_is_plotted(tmp_path):
    """Under LC_ALL=C with PYTHONUTF8=0 a folder 'Amélie' on the command line is held as surrogate escapes
    of its bytes (PEP 383); as an LVU table's run name it reached matplotlib, whose text layout
    raised a TypeError traceback after the table's .md and .json were written, no .png. The plot
    draws the name as a UTF-8 terminal shows it."""
    from moviessl.utils.io import display_text

    held = "Amélie".encode().decode("ascii", "surrogateescape")
    a = lvu_run(tmp_path / "a", {"scene": [40, 42]})
    out = tmp_path / "t.md"
    assert main(["table", "lvu", f"{held}={a}", "--out", str(out)]) == 0
    assert out.with_suffix(".png").stat().st_size > 0
    assert display_text(held) == "Amélie" and display_text("映画") == "映画"
    assert display_text("映画".encode().decode("ascii", "surrogateescape")) == "映画"


def test_the_vs_records_give_z_and_an_lvu_rows_mean_rank_is_over_the_tasks_it_has(tmp_path):
    """The ``--vs`` records' z was read by no test (dropped, the table's z column said "-"), nor
    the JSON's mean rank of a row without every task (taken over all the table's tasks, a row of
    one task ranked first had a mean rank of 0.5). By hand: scene seeds 40, 42, 41 and 50, 52, 51
    have means 41 and 51, each SE 1 / sqrt(3); combined sqrt(2 / 3) = 0.816, z = 10 / 0.816 = 12.25."""
    a = lvu_run(tmp_path / "a", {"scene": [40, 42, 41], "like_ratio": [0.30, 0.31, 0.32]})
    b = lvu_run(tmp_path / "b", {"scene": [50, 52, 51]})
    res = lvu_table({"a": a, "b": b}, vs="a")
    (r,) = res["compare"]
    assert (r["run"], r["column"], r["better_by"], r["se"], r["z"], r["beyond_2se"]) == (
        "b",
        "scene",
        10.0,
        0.816,
        12.25,
        True,
    )
    assert "| b | scene (top-1) | 10.000 | 0.816 | 12.25 | **yes** |" in res["markdown"]
    # scene: b 51 first, a 41 second; like_ratio: a alone, first
    assert res["ranks"] == {"a": {"scene": 2, "like_ratio": 1}, "b": {"scene": 1}}
    assert res["mean_rank"] == {"a": 1.5, "b": 1.0} and res["top1"] == {"a": 1, "b": 1}


def test_a_vidsitu_rows_runs_are_its_runs_not_its_fewest_finite_on_a_metric(tmp_path):
    """A row's "(n=...)" counted runs by its metric of most runs; no test had a metric with fewer
    (a run non-finite on it), so counting by the fewest passed: a row of three runs, one of them
    non-finite on Top1-Acc, was "(n=2)". Mean-Acc of 30, 32, 34: 32 ± 2 / sqrt(3) = 1.15."""
    nan = float("nan")
    three = [
        {"mean_acc": 30.0, "top1_acc": 40.0},
        {"mean_acc": 32.0, "top1_acc": nan},
        {"mean_acc": 34.0, "top1_acc": 44.0},
    ]
    five = [{"mean_acc": 30.0, "top1_acc": 40.0}] * 5
    runs = {
        "three": vidsitu_run(tmp_path / "a", "relation", three),
        "five": vidsitu_run(tmp_path / "b", "relation", five),
    }
    md = vidsitu_table(runs)["markdown"]
    assert (
        "| three (n=3) | 32.00 ± 1.15 | 42.00 ± 2.00 (1 non-finite) |" in md and "| five (n=5) | 30.00 ± 0.00 |" in md
    )
