"""benchmarks.run_all (`make bench`): the record it writes, and how it fails."""

import json
import sys

import pytest
from benchmarks import run_all


@pytest.fixture
def fake_benches(tmp_path, monkeypatch):
    """Three stand-in benchmark modules: two that return numbers, one that raises."""
    (tmp_path / "hb_ok.py").write_text("def main(argv):\n    return {'rate': 1.5, 'argv': argv}\n")
    (tmp_path / "hb_bad.py").write_text("def main(argv):\n    raise RuntimeError('no such video')\n")
    (tmp_path / "hb_exit.py").write_text("def main(argv):\n    raise SystemExit('moviessl extract failed (1)')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for m in ("hb_ok", "hb_bad", "hb_exit"):
        sys.modules.pop(m, None)
    benches = {"ok": "hb_ok --n 2", "bad": "hb_bad", "exit": "hb_exit", "ok2": "hb_ok"}
    monkeypatch.setattr(run_all, "BENCHES", benches)
    monkeypatch.setattr(run_all, "OUT", tmp_path / "out", raising=False)
    monkeypatch.setattr(run_all, "machine", lambda: {"cpu": "test"})
    return tmp_path / "out"


def test_a_failing_benchmark_is_recorded_and_the_others_still_run(fake_benches, capsys):
    rec = run_all.main(["--only", "ok,bad,exit,ok2"])
    assert rec["results"]["ok"] == {"rate": 1.5, "argv": ["--n", "2"]}
    assert rec["results"]["ok2"] == {"rate": 1.5, "argv": []}
    assert rec["results"]["bad"] == {"error": "RuntimeError: no such video"}
    assert rec["results"]["exit"] == {"error": "SystemExit: moviessl extract failed (1)"}
    assert rec["failed"] == ["bad", "exit"]
    (written,) = fake_benches.glob("*.json")
    on_disk = json.loads(written.read_text())
    assert on_disk["results"] == rec["results"] and on_disk["machine"] == {"cpu": "test"} and on_disk["date"]
    assert "failed: bad, exit" in capsys.readouterr().err


def test_an_unknown_name_is_one_line_before_anything_runs(fake_benches, capsys):
    with pytest.raises(SystemExit) as e:
        run_all.main(["--only", "ok,nosuch"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nosuch" in err and "ok" in err and "Traceback" not in err
    assert not fake_benches.exists()


def test_two_runs_on_one_day_keep_both_records(fake_benches):
    run_all.main(["--only", "ok"])
    run_all.main(["--only", "ok2"])
    recs = [json.loads(p.read_text()) for p in sorted(fake_benches.glob("*.json"))]
    assert sorted(name for r in recs for name in r["results"]) == ["ok", "ok2"]


def test_a_benchmark_that_sets_its_threads_does_not_set_the_next_ones(fake_benches, monkeypatch):
    import torch

    (fake_benches.parent / "hb_one.py").write_text("import torch\n\ndef main(argv):\n    torch.set_num_threads(1)\n")
    (fake_benches.parent / "hb_threads.py").write_text(
        "import torch\n\ndef main(argv):\n    return {'threads': torch.get_num_threads()}\n"
    )
    monkeypatch.setitem(run_all.BENCHES, "one", "hb_one")
    monkeypatch.setitem(run_all.BENCHES, "threads", "hb_threads")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rec = run_all.main(["--only", "one,threads"])
    finally:
        torch.set_num_threads(before)
    assert rec["results"]["threads"] == {"threads": 2}
