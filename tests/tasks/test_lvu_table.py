"""The Table 5 bookkeeping: ranks per task (direction per metric, ties), #top-1, the claims."""

import json
from pathlib import Path

import pytest

from moviessl.checkpoint import file_hash
from moviessl.tasks.lvu.table import LVU_CLAIMS, _table_md, claims, ranks, setting_name
from plot_checks import drawn, error_bars


def _own_event_features(tmp_path):
    """A backbone file and the table's own (empty) event-feature folder extracted with it."""
    backbone = tmp_path / "sup.pt"
    backbone.write_bytes(b"weights")
    own = tmp_path / "out" / "events" / "supervised"
    own.mkdir(parents=True)
    (own / "index.json").write_text(json.dumps({"backbone": file_hash(backbone), "videos": {}}))
    return backbone, own


def test_ranks_follow_each_metrics_direction_and_share_ties():
    table = {
        "a": {"scene": 50.0, "like_ratio": 0.30},
        "b": {"scene": 50.0 + 1e-12, "like_ratio": 0.20},  # a float-noise tie on scene
        "c": {"scene": 20.0, "like_ratio": 0.25},
    }
    r = ranks(table, ["scene", "like_ratio"])
    assert r["a"] == {"scene": 1, "like_ratio": 3} and r["b"] == {"scene": 1, "like_ratio": 1}
    assert r["c"] == {"scene": 3, "like_ratio": 2}


def test_a_cell_whose_every_run_diverged_is_ranked_by_no_one_and_shown_so():
    # summarize's n 0 / mean NaN (null once read back): NaN compares false, so it ranked first
    nan = float("nan")
    r = ranks({"a": {"scene": nan}, "b": {"scene": 40.0}, "c": {"scene": None}}, ["scene"])
    assert r == {"a": {}, "b": {"scene": 1}, "c": {}}
    stats = {
        setting_name("ot", "none"): {"scene": {"mean": nan, "se": nan, "n": 0, "n_nonfinite": 2}},
        setting_name("none", "ours"): {"scene": {"mean": 30.0, "se": 1.0, "n": 2}},
        setting_name("ot", "ours"): {"scene": {"mean": 20.0, "se": 1.0, "n": 2}},
    }
    rows = [("ot", "none"), ("none", "ours"), ("ot", "ours")]
    md = _table_md("test split", stats, ["scene"], rows, {"scene": {"chance": 10.0}})
    ot_line = next(line for line in md.splitlines() if line.startswith("| OT | - |"))
    assert "non-finite" in ot_line and ot_line.endswith("| 0/1 | nan |")
    c = claims(stats, {"scene": {"chance": 10.0}}, ["scene"], rows)
    assert c["ot_beats_constant"]["of"] == 0 and c["otpp_best_mean_rank"]["holds"] is None


def test_claims():
    tasks = ["scene", "view_count"]
    s = lambda m: {"mean": m, "se": 0.0, "n": 5}  # noqa: E731
    stats = {
        setting_name("ot", "none"): {"scene": s(40.0), "view_count": s(0.6)},
        setting_name("none", "ours"): {"scene": s(30.0), "view_count": s(0.3)},
        setting_name("none", "sup"): {"scene": s(35.0), "view_count": s(0.5)},
        setting_name("ot", "ours"): {"scene": s(45.0), "view_count": s(0.2)},
    }
    room = {"scene": {"chance": 20.0}, "view_count": {"chance": 0.5}}
    c = claims(stats, room, tasks, [tuple(k.replace("instance=", "").replace("scene=", "").split(",")) for k in stats])
    assert c["ot_beats_constant"]["tasks"] == ["scene"]  # 0.6 MSE is worse than the constant's 0.5
    assert c["otpp_best_mean_rank"]["holds"] is True
    assert c["ours_beats_sup"]["tasks_ours_better"] == ["view_count"]


def _mean(m):
    return {"mean": m, "se": 0.0, "n": 5}


def test_claims_read_only_the_tasks_with_results(tmp_path):
    """A setting without a result for a task (a split with no scored video) or at all (a row not
    run) leaves that task out of the claims it is in, or makes them n/a; the report is written."""

    from moviessl.tasks.lvu.table import PAPER_ROWS, report

    tasks = ["scene", "view_count"]
    rows = {r: {"scene": _mean(40.0), "view_count": _mean(0.6)} for r in PAPER_ROWS}
    rows[("ot", "ours")] = {"view_count": _mean(0.2)}  # no scored test video of "scene"
    rows[("none", "ours")]["scene"] = _mean(45.0)
    room = {"scene": {"chance": 20.0, "n": 3}, "view_count": {"chance": 0.5, "n": 3}}
    c = claims({setting_name(*r): v for r, v in rows.items()}, room, tasks, PAPER_ROWS)
    assert c["otpp_best_mean_rank"]["tasks_compared"] == ["view_count"] and c["otpp_best_mean_rank"]["holds"] is True
    assert c["ours_beats_sup"]["tasks_ours_better"] == ["scene"]  # scene 45 > 40; view_count tied
    stats = {split: {setting_name(*r): v for r, v in rows.items() if r != ("ot", "none")} for split in ("val", "test")}
    rep = report(stats, {"val": room, "test": room}, tasks, PAPER_ROWS, "5 runs", tmp_path / "t.png")  # OT not run
    ot = rep["claims"]["test"]["ot_beats_constant"]
    assert ot["count"] == ot["of"] == 0 and ot["holds (>= 0 of 0)"] is None
    assert rep["claims"]["test"]["otpp_best_mean_rank"]["holds"] is None
    md = rep["markdown"].splitlines()
    head = md.index("| claim (paper, Table 5) | test split | val split |")
    rows = {r.split(" | ")[0][2:]: r.split(" | ")[1:] for r in md[head + 2 : head + 5]}
    assert rows[LVU_CLAIMS[0]] == ["n/a", "n/a |"] and rows[LVU_CLAIMS[1]] == ["n/a", "n/a |"]
    assert rows[LVU_CLAIMS[2]][0].startswith("**holds** (mean rank ours 1.50, sup 2.00)")  # scene 45 > 40


def test_the_claims_table_reads_each_claims_verdict_and_what_it_rests_on():
    """The claims were one line of JSON in results.md; a table row per claim, a column per split."""
    from moviessl.tasks.lvu.table import claims_md

    ot, so, pp = (setting_name(*r) for r in (("ot", "none"), ("none", "ours"), ("ot", "ours")))
    c = {
        "ot_beats_constant": {"tasks": ["scene"], "count": 1, "of": 9, "holds (>= 7 of 9)": False},
        "otpp_best_mean_rank": {"mean_rank": {ot: 3.0, so: 2.0, pp: 1.5}, "tasks_compared": [], "holds": True},
    }
    md = claims_md({"test": c, "val": {}})
    assert md[2] == "| claim (paper, Table 5) | test split | val split |"
    assert md[4] == f"| {LVU_CLAIMS[0]} | does not hold (1/9 tasks) | - |"
    assert md[5] == f"| {LVU_CLAIMS[1]} | **holds** (mean rank OT 3.00, scene only 2.00, OT++ 1.50) | - |"
    assert len(md) == 6  # no row for a claim no split measured


@pytest.mark.parametrize("n_tasks, need", [(9, 7), (5, 4), (2, 2), (1, 1)])
def test_ot_beats_constant_counts_the_tasks_run(n_tasks, need):
    """The paper's "7 of 9" in proportion to the tasks with a result (the quick demo runs two)."""
    from moviessl.tasks.lvu.table import COLUMNS, _short
    from moviessl.tasks.lvu.task import TASKS

    tasks = list(COLUMNS)[:n_tasks]
    room = {t: {"chance": 1e9 if TASKS[t].regression else -1e9} for t in tasks}  # every task beaten
    c = claims({setting_name("ot", "none"): {t: _mean(0.5) for t in tasks}}, room, tasks, [("ot", "none")])
    b = c["ot_beats_constant"]
    assert (b["count"], b["of"], b[f"holds (>= {need} of {n_tasks})"]) == (n_tasks, n_tasks, True)
    assert _short(c)[LVU_CLAIMS[0]] == f"**holds** ({n_tasks}/{n_tasks} tasks)"


def test_the_table_checks_both_configs_before_its_first_step(tmp_path, monkeypatch):
    """A GPU this machine lacks, or a typo in the OT pretraining's overrides, is one line before the
    instance extraction, the OT pretraining and the TxE pass (they came first)."""
    import torch

    from moviessl.errors import BadInputError
    from moviessl.tasks.lvu.table import run_lvu_table

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(BadInputError, match="^trainer.accelerator: gpu: torch sees no GPU"):
        run_lvu_table(tmp_path / "out", tmp_path / "none", {}, None, overrides=["trainer.accelerator=gpu"])
    with pytest.raises(BadInputError, match="^trainer.accelerator: gpu: torch sees no GPU"):
        run_lvu_table(tmp_path / "out", tmp_path / "none", {}, None, pretrain_overrides=["trainer.accelerator=gpu"])
    with pytest.raises(BadInputError, match="^trainer.precision: 'half' is not a precision"):
        run_lvu_table(tmp_path / "out", tmp_path / "none", {}, None, pretrain_overrides=["trainer.precision=half"])
    # a span whose time ids the OT's tables cannot hold, in either config
    with pytest.raises(BadInputError, match="^data.span_s: a 300-s span needs time ids"):
        run_lvu_table(tmp_path / "out", tmp_path / "none", {}, None, overrides=["data.span_s=300"])
    with pytest.raises(BadInputError, match="^data.span_s: a 300-s span needs time ids"):
        run_lvu_table(tmp_path / "out", tmp_path / "none", {}, None, pretrain_overrides=["data.span_s=300"])
    # a cell's last run past numpy's seed range (was a traceback when that run began, after steps 1-3)
    with pytest.raises(BadInputError, match="^seed: runs 4294967294..4294967296"):
        run_lvu_table(tmp_path / "out", tmp_path / "none", {}, None, seeds=3, overrides=[f"seed={2**32 - 2}"])
    assert not (tmp_path / "out").exists()


def test_a_rows_cells_weigh_its_tokens_for_the_time_left():
    """The table's progress: a row of instances (hundreds of boxes per video) trains far longer than
    a scene-only row (tens of events); equal cells made the pace of the first rows predict the rest."""
    import numpy as np

    from moviessl.tasks.lvu.data import SceneRows
    from moviessl.tasks.lvu.table import _tokens_per_video

    class Store:
        index = {"videos": {"a": {"num_boxes": 200}, "b": {"num_boxes": 100}, "c": {"status": "bad"}}}

    scene = ({"a": np.zeros((30, 4)), "b": SceneRows(np.zeros((12, 4)), np.arange(12) < 10)}, 2.0, "-")
    assert _tokens_per_video(Store(), None) == 150.0  # the bad video's entry is not counted
    assert _tokens_per_video(None, scene) == 20.0  # a damaged film's valid events only
    assert _tokens_per_video(Store(), scene) == 170.0
    assert _tokens_per_video(None, ({}, 2.0, "-")) == 1.0


def test_an_earlier_ot_folder_taken_over_by_another_rank_meanwhile_is_no_error(tmp_path, monkeypatch):
    """Every rank of a torchrun / srun launch takes the earlier-named OT folder over; the rank that
    finds it renamed by another between its look and its rename raised FileNotFoundError alone (the
    ranks then part ways: a crash or a hang)."""
    import os
    from types import SimpleNamespace

    from moviessl.tasks.lvu import table

    store = SimpleNamespace(backbone="b", index={"roi": {"short_side": 32}, "videos": {"v": {"status": "ok"}}})
    store.ids, store.source_digest = ["v"], lambda: "d"
    key, earlier = table.ot_pretrain_keys(store, {"train": {"lr": 1}}, "t")
    old = tmp_path / "ot_pretrain" / earlier[0]
    old.mkdir(parents=True)
    (old / "model.pt").write_bytes(b"ot")
    real = os.replace

    def raced(a, b):  # another rank renames it first
        real(a, b)
        real(a, b)

    monkeypatch.setattr(table.os, "replace", raced)
    got = table.ot_pretrain_dir(tmp_path, store, {"train": {"lr": 1}}, "t")
    assert got == tmp_path / "ot_pretrain" / key and (got / "model.pt").read_bytes() == b"ot"


def test_the_tables_own_event_folder_is_extracted_on_every_run(tmp_path, monkeypatch):
    """The table's event folder was extracted only when it had no index: a movie added to the LVU
    root after the first run (LVU's YouTube films arrive piecemeal) got no scene tokens, silently,
    and a replaced one kept the old file's features. It is extracted on every run now (finished
    films are skipped by extract's resume); a user's own folder is read as given."""
    from moviessl.tasks.lvu import table

    backbone, own = _own_event_features(tmp_path)
    calls = []

    class Stop(Exception):
        pass

    def scene_arrays(fdir, *a, **k):
        raise Stop(fdir)

    monkeypatch.setattr(table, "extract", lambda b, root, fdir, **k: calls.append((Path(fdir), k["devices"])))
    monkeypatch.setattr(table, "scene_arrays", scene_arrays)
    with pytest.raises(Stop):
        table.run_lvu_table(tmp_path / "out", tmp_path, {"supervised": backbone}, None, rows=[("none", "sup")])
    assert calls == [(own, 1)]
    # under torchrun / srun it runs on the processes the launch started for the fine-tuning (the
    # defaults, 1, refused every rank); a plain run with devices=2 extracts in one process, as before
    two = dict(rows=[("none", "sup")], overrides=["trainer.devices=2", "trainer.accelerator=cpu"])
    with pytest.raises(Stop):
        table.run_lvu_table(tmp_path / "out", tmp_path, {"supervised": backbone}, None, **two)
    assert calls[-1] == (own, 1)
    for k, v in {"TORCHELASTIC_RUN_ID": "t", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(Stop):
        table.run_lvu_table(tmp_path / "out", tmp_path, {"supervised": backbone}, None, **two)
    assert calls[-1] == (own, 2)
    for k in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK"):
        monkeypatch.delenv(k)
    calls[:] = [(own, 1)]
    mine = tmp_path / "mine"
    with pytest.raises(Stop, match="mine"):
        table.run_lvu_table(
            tmp_path / "out",
            tmp_path,
            {"supervised": backbone},
            None,
            rows=[("none", "sup")],
            event_features={"supervised": mine},
        )
    assert calls == [(own, 1)]


def test_the_tables_cells_are_keyed_without_the_folder_of_their_scene_features(tmp_path, monkeypatch):
    """A cell's inputs name the scene feature folder, and the settings hash took that name: the
    table's --out moved (its own event folder in it) trained every finished cell again. The cell's
    inputs keep the folder for the record; their key, which the hash takes, leaves it out."""
    from moviessl.tasks.lvu import table

    backbone, own = _own_event_features(tmp_path)
    seen = []

    class Stop(Exception):
        pass

    def load_inputs(store, scene, stride, desc="", key=""):
        seen.append((desc, key))
        raise Stop

    monkeypatch.setattr(table, "extract", lambda *a, **k: None)
    monkeypatch.setattr(table, "scene_arrays", lambda fdir, *a, **k: ({}, 2.0, f"scene:{Path(fdir).resolve()}:feats"))
    monkeypatch.setattr(table, "load_inputs", load_inputs)
    with pytest.raises(Stop):
        table.run_lvu_table(tmp_path / "out", tmp_path, {"supervised": backbone}, None, rows=[("none", "sup")])
    ((desc, key),) = seen
    assert str(own.resolve()) in desc
    assert key == desc.replace(str(own.resolve()), "") == "instance=none:-,scene=sup:scene::feats"


# gloo's (the default is 30 minutes): a rank that raised, or waits in a collective its peer left,
# ends instead of outliving the test; the peer's start (its imports) counts, hence not less
RANKS_TIMEOUT_S = 60


def _rank_reading_after_rank_0(rank: int, folder: str) -> None:
    import datetime
    import time

    import torch.distributed as td

    from moviessl.tasks.lvu.table import index_written

    td.init_process_group(
        "gloo",
        init_method=f"file://{folder}/pg",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=RANKS_TIMEOUT_S),
    )
    try:
        if rank == 0:  # rank 0 merges the journals after the others have left the extraction
            time.sleep(0.5)
            (Path(folder) / "index.json").write_text("{}")
        index_written()
        if rank == 1:
            (Path(folder) / "seen").write_text(str((Path(folder) / "index.json").is_file()))
    finally:
        td.destroy_process_group()


def test_ranks_read_an_extraction_only_once_rank_0_has_written_its_index(tmp_path):
    """Under DDP the ranks other than 0 left an extraction before rank 0 wrote index.json: the
    table's next step on them found only the claim (and stopped) or an extension's old index."""
    import multiprocessing as mp
    import time

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank_reading_after_rank_0, args=(r, str(tmp_path))) for r in (0, 1)]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + 2 * RANKS_TIMEOUT_S
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:  # a rank still running (a hang) is ended here, not left to hold pytest's exit
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
    assert [p.exitcode for p in procs] == [0, 0]
    assert (tmp_path / "seen").read_text() == "True"


def test_a_second_table_on_a_folder_in_use_is_one_line_up_front(tmp_path):
    """The table's top files (lvu_table.*) and scene cache (scene_ctx/) had no lock of their own: a
    second table on the folder was refused only step by step, by the folders of its extractions and
    fine-tuning cells, while it rewrote the first one's. It is now one line before any step."""
    import fcntl
    import os

    from moviessl.errors import BadInputError
    from moviessl.features.store import JOB_LOCK
    from moviessl.tasks.lvu.table import run_lvu_table

    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / JOB_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the first table's
        os.write(fd, b"pid 4242 on node7, since then")
        with pytest.raises(BadInputError, match=r"another moviessl job is writing to this folder \(pid 4242 on node7"):
            run_lvu_table(out, tmp_path / "synth", {}, None)
    finally:
        os.close(fd)
    assert sorted(p.name for p in out.iterdir()) == [JOB_LOCK]


def test_the_papers_table_5_gives_its_own_top1_counts_and_mean_ranks():
    """Xiao et al. (CVPR 2022), Table 5: its nine task means give back its #top-1 and mean rank
    columns under the table's ranking (a tie, e.g. Relation 52.38 twice, shares the better rank and
    counts as top-1 for both), and the columns come in the paper's order."""
    from moviessl.tasks.lvu.table import PAPER_ROWS, _table_md
    from moviessl.tasks.lvu.task import TASKS

    tasks = list(TASKS)
    means = {
        ("ot", "none"): [50.00, 34.57, 32.56, 37.38, 26.55, 25.73, 49.55, 0.396, 4.559],
        ("cvrl", "none"): [50.95, 32.86, 32.56, 37.76, 27.26, 25.31, 48.17, 0.444, 4.600],
        ("modist", "none"): [49.52, 33.57, 30.70, 40.56, 23.10, 26.57, 49.26, 0.458, 4.506],
        ("none", "sup"): [52.38, 34.37, 26.51, 23.18, 5.36, 18.88, 47.37, 0.595, 4.061],
        ("none", "ours"): [52.38, 33.07, 36.98, 42.43, 23.93, 35.24, 48.11, 0.375, 4.653],
        ("ot", "ours"): [50.95, 34.07, 44.19, 40.19, 31.43, 29.65, 51.15, 0.353, 4.886],
    }
    paper = {  # the paper's #top-1 and mean rank
        ("ot", "none"): (1, 3.22),
        ("cvrl", "none"): (0, 3.89),
        ("modist", "none"): (0, 3.89),
        ("none", "sup"): (2, 4.44),
        ("none", "ours"): (3, 2.89),
        ("ot", "ours"): (4, 2.33),
    }
    assert list(means) == list(PAPER_ROWS)
    stats = {setting_name(*k): {t: _mean(m) for t, m in zip(tasks, v)} for k, v in means.items()}
    md = _table_md("t", stats, tasks, list(PAPER_ROWS), {t: {} for t in tasks})
    head = "| instance | scene | Relation (↑) | Speaking (↑) | Scene (↑) | Director (↑) | Writer (↑) | Year (↑) "
    head += "| Genre (↑) | Like (↓) | Views (↓) | #top-1 | mean rank |"
    assert head in md
    lines = md.splitlines()
    for (inst, scene), (top, mean_rank) in paper.items():
        row = next(ln for ln in lines[4:] if ln.startswith("| ") and _setting_cells(ln) == (inst, scene))
        assert row.rstrip(" |").endswith(f"| {top}/9 | {mean_rank:.2f}"), row


def _setting_cells(line: str) -> tuple[str, str]:
    from moviessl.tasks.lvu.table import PRETTY

    back = {v: k for k, v in PRETTY.items()}
    cells = [c.strip() for c in line.strip("|").split("|")]
    return back[cells[0]], back[cells[1]]


def test_replicates_combine_as_the_demos_vidsitu_rows_do():
    """combine_replicates dropped a replicate's n_nonfinite (the demo's VidSitu rows keep it, as
    demo.aggregate counts them), and a replicate cell without a finite mean (n 0, null in the file)
    made the combined cell NaN where demo.aggregate leaves such a replicate out."""
    import math

    from moviessl.demo import aggregate
    from moviessl.tasks.lvu.table import combine_replicates

    def table(mean, se, n, bad=0):
        cell = {"setting": "instance=ot,scene=none", "metric": "scene", "mean": mean, "se": se, "n": n}
        cell.update({"n_nonfinite": bad} if bad else {})
        return {"rows": [cell], "rows_val": []}

    got = combine_replicates([table(40.0, 1.0, 4, bad=1), table(50.0, 2.0, 5)])["test"]["instance=ot,scene=none"]
    assert got["scene"] == {"mean": 45.0, "se": 5.0, "n": 9, "n_pretrain": 2, "n_nonfinite": 1}
    # the demo's aggregation of the same runs says the same
    runs = [[40.0] * 4 + [math.nan], [50.0] * 5]
    demo = aggregate([{"summary": {"scene": {}}, "runs": [{"metrics": {"scene": v}} for v in r]} for r in runs])
    assert {k: demo["scene"][k] for k in ("mean", "n", "n_pretrain", "n_nonfinite")} == {
        k: got["scene"][k] for k in ("mean", "n", "n_pretrain", "n_nonfinite")
    }
    for nan in (math.nan, None):  # a replicate of no finite run: in memory, and as read from its file
        got = combine_replicates([table(nan, nan, 0, bad=5), table(50.0, 2.0, 5)])["test"]["instance=ot,scene=none"]
        assert got["scene"] == {"mean": 50.0, "se": 2.0, "n": 5, "n_pretrain": 1, "n_nonfinite": 5}
    assert combine_replicates([table(None, None, 0, bad=5)])["test"] == {}


def test_a_single_run_has_no_standard_error_in_the_lvu_table_or_its_plot(tmp_path, monkeypatch):
    """A cell of one run (a table run with seeds=1, a replicate's only finite run) has an SE of 0
    that says nothing of its spread: the table printed it "± 0.00" and the plot drew a cap at the
    mean, where the demo's tables show the value alone. Now neither does; a cell without a result
    is marked n/a in the plot as in the table, not left a bare gap."""
    from moviessl.tasks.lvu.table import report

    figs = drawn(monkeypatch)
    tasks = ["scene", "view_count"]
    one = lambda m: {"mean": m, "se": 0.0, "n": 1}  # noqa: E731
    rows = [("ot", "none"), ("cvrl", "none"), ("none", "sup")]
    stats = {
        setting_name("ot", "none"): {"scene": one(40.0), "view_count": one(0.6)},
        setting_name("cvrl", "none"): {"scene": {"mean": 30.0, "se": 2.0, "n": 5}, "view_count": one(0.4)},
        setting_name("none", "sup"): {"view_count": {"mean": 0.5, "se": 0.05, "n": 5}},  # no scene result
    }
    room = {"scene": {"chance": 20.0, "n": 3}, "view_count": {"chance": 0.5, "n": 3}}
    rep = report({"val": stats, "test": stats}, {"val": room, "test": room}, tasks, rows, "1 run", tmp_path / "t.png")
    md = rep["markdown"]
    assert "| OT | - | 40.00 | 0.600 |" in md and "| CVRL | - | 30.00 ± 2.00 | 0.400 |" in md
    assert "| - | Sup | n/a | 0.500 ± 0.050 |" in md
    scene, views = figs[0].axes[:2]
    assert error_bars(scene) == {1: (28.0, 32.0)}
    assert error_bars(views) == {2: (0.45, 0.55)}
    assert [t.get_text() for t in scene.texts] == ["n/a"] and not views.texts


@pytest.mark.parametrize("n_tasks", [1, 2, 9])
def test_the_lvu_plot_says_what_its_bars_are_and_tells_every_row_apart(tmp_path, monkeypatch, n_tasks):
    """The plot's title did not say what the error bars are (the table's "mean ± SE over N runs"),
    its axes had no unit, and with more than 10 rows (every instance x scene pair: 11) the 11th bar
    took the first one's colour. Now the title says it, each axis names its unit and each row has
    its own colour; the title fits a plot of one task's panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from moviessl.tasks.lvu.table import ALL_ROWS, TASKS, report

    figs = drawn(monkeypatch)
    tasks = list(TASKS)[-n_tasks:]  # the two regression tasks last
    cell = {"mean": 0.5, "se": 0.1, "n": 5}
    stats = {setting_name(*r): {t: dict(cell) for t in tasks} for r in ALL_ROWS}
    room = {t: {"chance": 0.4, "n": 3} for t in tasks}
    runs = "3 pretraining replicates of the mean over 2 runs each"
    report({"val": stats, "test": stats}, {"val": room, "test": room}, tasks, ALL_ROWS, runs, tmp_path / "t.png")
    fig = figs[0]
    assert f"mean ± SE over {runs}" in fig._suptitle.get_text()
    axes = fig.axes[:n_tasks]
    for ax, t in zip(axes, tasks):
        assert ax.get_ylabel() == ("MSE" if TASKS[t].regression else "top-1 (%)")
        colours = {tuple(p.get_facecolor()) for p in ax.patches}
        assert len(colours) == len(ALL_ROWS) == 11
    e = fig._suptitle.get_window_extent(FigureCanvasAgg(fig).get_renderer())
    assert fig.bbox.x0 <= e.x0 and e.x1 <= fig.bbox.x1


def test_an_lvu_cell_over_fewer_runs_than_its_heading_says_how_many_diverged(tmp_path):
    """The LVU table's heading says what every cell is over ("mean ± SE over 5 runs", "over 2
    pretraining replicates of the mean over 5 runs each") and it has no column of runs, unlike the
    VidSitu tables' "n (pretrain)": a cell whose runs partly diverged (n 3 of 5, a replicate
    without a finite run) showed its mean ± SE as if it were over them all. It says how many
    runs were left out, as the demo's cells of no finite run do."""
    from moviessl.tasks.lvu.table import combine_replicates, report

    def table(mean, se, n, bad=0):
        cell = {"setting": "instance=ot,scene=none", "metric": "scene", "mean": mean, "se": se, "n": n}
        return {"rows": [{**cell, **({"n_nonfinite": bad} if bad else {})}], "rows_val": []}

    tasks, rows = ["scene", "view_count"], [("ot", "none"), ("cvrl", "none")]
    room = {"scene": {"chance": 20.0, "n": 3}, "view_count": {"chance": 0.5, "n": 3}}
    cells = {
        setting_name("ot", "none"): {
            "scene": {"mean": 40.0, "se": 1.0, "n": 3, "n_nonfinite": 2},
            "view_count": {"mean": 0.6, "se": 0.0, "n": 1, "n_nonfinite": 4},
        },
        setting_name("cvrl", "none"): {
            "scene": {"mean": 30.0, "se": 2.0, "n": 5},
            "view_count": {"mean": 0.4, "se": 0.1, "n": 5},
        },
    }
    md = report({"val": cells, "test": cells}, {"val": room, "test": room}, tasks, rows, "5 runs", tmp_path / "t.png")
    assert "| OT | - | 40.00 ± 1.00 (2 non-finite) | 0.600 (4 non-finite) |" in md["markdown"]
    assert "| CVRL | - | 30.00 ± 2.00 | 0.400 ± 0.100 |" in md["markdown"]
    # two replicates, one of which has no finite run of the cell: the ± is over the other's runs
    combined = combine_replicates([table(None, None, 0, bad=5), table(50.0, 2.0, 5)])
    combined["val"] = combined["test"]
    runs = "2 pretraining replicates of the mean over 5 runs each"
    md = report(combined, {"val": room, "test": room}, ["scene"], rows[:1], runs, tmp_path / "c.png")
    assert "| OT | - | 50.00 ± 2.00 (5 non-finite) |" in md["markdown"]


def test_headroom_chance_is_the_majority_train_class_and_the_train_means_error(tmp_path):
    """The constant the OT must beat (Table 5's first claim) was given by hand in every claims test:
    headroom's chance row passed as the minority class's accuracy, an inverted one, or an error
    about another centre. It is the test accuracy of the majority train class, and the MSE of the
    train mean, on LVU's centred targets (no ground_truth.json: no oracle row)."""
    import math

    from moviessl.data.lvu import LVU_TASKS
    from moviessl.tasks.lvu.table import headroom

    ids = [f"yt{k:09d}" for k in range(7)]
    vids = {"train": ids[:3], "test": ids[3:]}
    like = {"train": [(30, 10), (10, 10), (50, 0)], "test": [(20, 20), (9, 1), (1, 1), (40, 10)]}
    views = {"train": [1000, 10**6, 5 * 10**4], "test": [10**5, 2000, 10**7, 300]}
    cls = {"train": [1, 1, 2], "test": [1, 0, 1, 1]}
    for task, spec in LVU_TASKS.items():
        for split, vs in vids.items():
            if task == "like_ratio":
                rows = [f"{lk} {dk} {v} tt{k:07d}" for k, (v, (lk, dk)) in enumerate(zip(vs, like[split]))]
            elif task == "view_count":
                rows = [f"{c} {v} tt{k:07d}" for k, (v, c) in enumerate(zip(vs, views[split]))]
            else:
                rows = [f"{c} name{c} {v} tt{k:07d}" for k, (v, c) in enumerate(zip(vs, cls[split]))]
            p = tmp_path / "lvu_1.0" / task / f"{split}.csv"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(spec["header"] + "\n" + "\n".join(rows) + "\n")
    room = headroom(tmp_path, "test")
    assert all(room[t]["n"] == 4 and "oracle" not in room[t] for t in LVU_TASKS)
    assert room["scene"]["chance"] == 75.0  # class 1 (2 of 3 train videos) is right on 3 of 4

    def mse_of_train_mean(target, values):
        mu = sum(target(x) for x in values["train"]) / 3
        return sum((target(x) - mu) ** 2 for x in values["test"]) / 4

    ratio = lambda x: 10 * x[0] / (x[0] + x[1]) - 9.138220535629456  # noqa: E731 (LVU's centring)
    assert room["like_ratio"]["chance"] == pytest.approx(mse_of_train_mean(ratio, like))
    count = lambda x: math.log(x) - 11.76425435683139  # noqa: E731
    assert room["view_count"]["chance"] == pytest.approx(mse_of_train_mean(count, views))


def test_the_table_gives_the_callers_random_streams_back(tmp_path, monkeypatch):
    """``run_lvu_table`` is called from Python (its module's example, the demo): like the stages it
    runs, it gives a notebook's random streams back. Outside its seeded runs the "ours" row's scene
    features come through the MaskPred TxE, built from its checkpoint with a random initialisation
    before its weights are loaded (``load_contextualizer`` keeps that draw from the caller's
    generator); the row's inputs are made, the table stops at its first fine-tuning cell."""
    import numpy as np

    from caller_state import random_streams_given_back
    from moviessl.checkpoint import arch_spec, save_checkpoint
    from moviessl.models.txe import build_txe
    from moviessl.tasks.lvu import table

    backbone = tmp_path / "cvrl.pt"
    backbone.write_bytes(b"weights")
    events = tmp_path / "out" / "events" / "cvrl"
    events.mkdir(parents=True)
    np.save(events / "m0_feats.npy", np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32))
    index = {"backbone": file_hash(backbone), "dim": 8, "stride_s": 2.0, "videos": {"m0": {"status": "ok"}}}
    (events / "index.json").write_text(json.dumps(index))
    kw = dict(in_dim=8, dim=16, heads=2, mlp_dim=16, depth=1)
    ctx = save_checkpoint(
        tmp_path / "txe.pt",
        stage="context",
        arch=arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", **kw),
        state_dict=build_txe("txe_cpu", **kw).state_dict(),
        meta={"window": 5, "in_dim": 8},
    )
    seen = []

    class Stop(Exception):
        pass

    def run_finetune(task, root, inputs, **k):  # its own runs are seeded and give the streams back
        seen.append((task, sorted(inputs.videos), inputs.desc))
        raise Stop

    monkeypatch.setattr(table, "extract", lambda *a, **k: None)
    monkeypatch.setattr(table, "run_finetune", run_finetune)
    with random_streams_given_back(monkeypatch), pytest.raises(Stop):
        table.run_lvu_table(tmp_path / "out", tmp_path, {"cvrl": backbone}, ctx, rows=[("none", "ours")])
    # the row's inputs were made, its scene features through the TxE
    assert [(t, v, "+txe:" + file_hash(ctx) in d) for t, v, d in seen] == [(next(iter(table.TASKS)), ["m0"], True)]


def test_a_claim_tied_is_not_a_win():
    """The Table 5 claims were tested only where the paper's side won or lost outright: OT++ tied
    with OT on mean rank counted as "the best mean rank", our scene features tied with the
    supervised ones as "better", and OT equal to the constant on a task as beating it, all passed.
    By hand, among OT, scene only and OT++: scene (higher is better) ranks OT++ 45 first, OT 40
    second, scene only 30 third; view count (lower is better) ranks OT 0.3, OT++ 0.4, scene only
    0.5: mean ranks OT++ 1.5, OT 1.5, scene only 3 -- a tie, not a best. OT's scene 40 is the
    constant's 40: beaten on view count only (0.3 < 0.5)."""
    tasks = ["scene", "view_count"]
    rows = [("ot", "none"), ("none", "ours"), ("ot", "ours")]
    stats = {
        setting_name(*rows[0]): {"scene": _mean(40.0), "view_count": _mean(0.3)},
        setting_name(*rows[1]): {"scene": _mean(30.0), "view_count": _mean(0.5)},
        setting_name(*rows[2]): {"scene": _mean(45.0), "view_count": _mean(0.4)},
    }
    room = {"scene": {"chance": 40.0}, "view_count": {"chance": 0.5}}
    c = claims(stats, room, tasks, rows)
    assert c["otpp_best_mean_rank"]["mean_rank"] == {setting_name(*r): m for r, m in zip(rows, (1.5, 3.0, 1.5))}
    assert c["otpp_best_mean_rank"]["holds"] is False
    assert c["ot_beats_constant"]["tasks"] == ["view_count"]
    # scene only, ours against sup: scene 30 < 35 (sup first), view count 0.2 < 0.5 (ours first): 1.5 each
    pair = [("none", "ours"), ("none", "sup")]
    stats = {
        setting_name(*pair[0]): {"scene": _mean(30.0), "view_count": _mean(0.2)},
        setting_name(*pair[1]): {"scene": _mean(35.0), "view_count": _mean(0.5)},
    }
    o = claims(stats, room, tasks, pair)["ours_beats_sup"]
    assert o["mean_rank"] == {"ours": 1.5, "sup": 1.5} and o["holds (better mean rank)"] is False
    assert o["tasks_ours_better"] == ["view_count"]


def test_the_val_splits_rows_are_their_own_table_in_results_json():
    """``result_rows`` named the table of each split's rows, and no test read it: the val rows
    written as table ``lvu`` (the test split's, so results.json held two rows per cell under one
    key) passed."""
    from moviessl.tasks.lvu.table import result_rows

    key = setting_name("ot", "none")
    stats = {
        "test": {key: {"scene": {"mean": 40.0, "se": 1.0, "n": 5}}},
        "val": {key: {"scene": {"mean": 30.0, "se": 2.0, "n": 4}}},
    }
    test, val = result_rows(stats)
    assert test == [{"table": "lvu", "setting": key, "metric": "scene", "mean": 40.0, "se": 1.0, "n": 5}]
    assert val == [{"table": "lvu_val", "setting": key, "metric": "scene", "mean": 30.0, "se": 2.0, "n": 4}]
