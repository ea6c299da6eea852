"""moviessl.utils.progress: a job's fraction done, nested parts, muted stages, never backwards."""

import json

from moviessl.utils import progress


def test_reports_nest_never_go_back_and_do_nothing_outside_a_job(tmp_path):
    f = tmp_path / "p.json"
    progress.report(1, 2)  # no job: nothing written anywhere
    progress.start(f)
    try:
        with progress.part(1, 4):  # the second quarter
            progress.report(1, 2)
            assert json.loads(f.read_text())["fraction"] == 0.375
            with progress.muted():
                progress.report(2, 2)
            progress.MIN_INTERVAL_S, saved = 0.0, progress.MIN_INTERVAL_S
            try:
                progress.report(0, 2)  # a part that restarts its count: the job does not go back
            finally:
                progress.MIN_INTERVAL_S = saved
            assert json.loads(f.read_text())["fraction"] == 0.375
        held = progress.read(f)
        assert held["fraction"] == 0.5  # the part's end is reported when it finishes
        assert held["first_fraction"] == 0.375 and held["first_t"] <= held["t"]
    finally:
        progress.stop()
    progress.start(tmp_path / "next.json")  # the worker's next job starts from nothing
    try:
        progress.report(1, 10)
        assert progress.read(tmp_path / "next.json")["first_fraction"] == 0.1
    finally:
        progress.stop()
    assert progress.read(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text('{"fraction": "x"}')
    assert progress.read(tmp_path / "bad.json") is None


def test_training_reports_its_steps(tmp_path):
    import torch

    from moviessl.training import make_trainer

    class Tiny(__import__("pytorch_lightning").LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def training_step(self, batch, i):
            return self.w(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
    f = tmp_path / "p.json"
    progress.start(f)
    try:
        make_trainer({"max_steps": 6, "progress_bar": False}, tmp_path / "run", enable_checkpointing=False).fit(
            Tiny(), data
        )
    finally:
        progress.stop()
    held = progress.read(f)
    assert held["fraction"] == 1.0 and held["first_fraction"] == 1 / 6


def test_parts_a_resumed_job_skips_are_left_out_of_its_pace(tmp_path):
    """Seeds (or LVU cells) a resumed job finds finished end at once: counted as paced work, the
    second and later ones made the time left a fraction of the truth."""
    import time

    f = tmp_path / "p.json"
    progress.start(f)
    try:
        for k in range(2):  # two seeds finished earlier: nothing reported inside
            with progress.part(k, 4):
                pass
        time.sleep(0.05)
        with progress.part(2, 4):  # the third seed trains: halfway through it
            time.sleep(0.2)
            progress.report(1, 2, force=True)
        held = progress.read(f)
    finally:
        progress.stop()
    # the pace counts the third seed only: 0.25 of the job in ~0.25 s, not 0.75 in 0.25 s
    assert held["fraction"] == 0.75 and held["first_fraction"] == 0.5
    assert 0.15 <= held["t"] - held["first_t"] <= 0.5


def test_a_bar_into_a_log_file_draws_a_line_per_30_s_not_per_item(monkeypatch):
    """tqdm's 0.1-s redraw wrote a line per item of a fast loop into a batch job's log (a cold frame
    cache over Kinetics: 240k lines); into a file the bar now draws every 30 s, on a terminal every
    0.5 s, and every bar of the package goes through it."""
    import io
    import re
    import sys
    import time
    from pathlib import Path

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress.bar(range(30), desc="caching videos", file=log):
        time.sleep(0.02)  # 0.6 s: tqdm's default would have drawn about six lines
    assert log.getvalue().count("caching videos") <= 2  # the first draw and the last
    log.isatty = lambda: True
    assert progress.bar(range(3), file=log).mininterval == 0.5
    assert progress.bar(range(3), file=log, mininterval=2).mininterval == 2
    src = Path(progress.__file__).parents[1]
    direct = [
        p.name
        for p in src.rglob("*.py")
        if p.name != "progress.py" and re.search(r"^\s*from tqdm", p.read_text(), re.M)
    ]
    assert direct == []


def test_a_forked_childs_log_line_draws_no_bar(tmp_path, monkeypatch):
    """A forked child (a DataLoader worker) inherits the command's handler and tqdm's list of bars as
    they stood at the fork: its log line, written through tqdm.write, drew that stale copy of the
    parent's bars again below it, over the parent's live ones. The child writes its line plainly."""
    import logging
    import multiprocessing
    import os

    from tqdm import std

    from moviessl.utils.progress import BarAwareHandler

    monkeypatch.setattr(std.tqdm, "monitor_interval", 0)  # no monitor thread across the fork
    path = tmp_path / "stderr.txt"
    log = logging.getLogger("moviessl.test_a_forked_child")
    monkeypatch.setattr(log, "propagate", False)
    with open(path, "w", encoding="utf-8") as f:
        handler = BarAwareHandler(f)  # installed here, in the process that draws the bar
        monkeypatch.setattr(log, "handlers", [handler])
        bar = std.tqdm(total=10, desc="stalebar", file=f, mininterval=1e9, leave=False)
        try:
            bar.update(3)
            f.flush()
            start = os.path.getsize(path)
            assert start > 0  # the bar was drawn
            p = multiprocessing.get_context("fork").Process(target=lambda: log.warning("from the child"))
            p.start()
            p.join(60)
            assert p.exitcode == 0
            with open(path, encoding="utf-8") as g:
                g.seek(start)
                written = g.read()
        finally:
            bar.close()
    assert written == "from the child\n", repr(written)
