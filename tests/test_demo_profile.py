"""benchmarks.demo_profile's check of the demo's time-left estimates (issue 17's acceptance)."""

import pytest
from benchmarks.demo_profile import logged_time_left, time_left_errors


def _log(tmp_path, lines):
    p = tmp_path / "demo.log"
    fmt = "{0} [{0}/9] start job{0} | elapsed {1}m{2:02d}s | ~{3}m{4:02d}s left\n"
    p.write_text("".join(fmt.format(i, t // 60, t % 60, e // 60, e % 60) for i, (t, e) in enumerate(lines)))
    return p


def test_exact_estimates_have_no_error_and_a_doubled_one_is_plus_100_percent(tmp_path):
    exact = [(t, 1000 - t) for t in range(0, 1001, 50)]
    e = time_left_errors(logged_time_left(_log(tmp_path, exact)))
    assert e["wall_s"] == 1000 and e["worst_first_90"] == 0
    assert all(r["error"] == 0 for r in e["at"].values())
    doubled = [(t, 2 * (1000 - t)) for t in range(0, 1001, 50)]
    e = time_left_errors(logged_time_left(_log(tmp_path, doubled)))
    assert e["at"]["50%"] == {"elapsed_s": 500, "estimate_s": 1000, "true_s": 500, "error": 1.0}
    assert e["worst_first_90"] == 1.0


def test_the_worst_error_ignores_the_last_tenth_of_the_run(tmp_path):
    lines = [(t, 1000 - t) for t in range(0, 901, 100)] + [(950, 500), (1000, 0)]  # wrong only near the end
    assert time_left_errors(logged_time_left(_log(tmp_path, lines)))["worst_first_90"] == 0


def test_a_log_without_estimates_is_refused(tmp_path):
    p = tmp_path / "demo.log"
    p.write_text("nothing here\n")
    with pytest.raises(SystemExit, match="fewer than two progress lines"):
        time_left_errors(logged_time_left(p), p)


def test_the_profile_plot_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """The plot was saved straight to its path (``--png docs/img/...`` included): a run killed or
    failing while the PNG was written left a truncated image there, which a later commit of docs/img
    took for the plot. It is written to a temporary file and renamed (``atomic_write``), and its
    figure closed whatever the write does."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from benchmarks.demo_profile import plot, summarize
    from matplotlib.figure import Figure

    def torn(self, f, *a, **k):
        f = open(f, "wb") if isinstance(f, (str, type(tmp_path))) else f
        f.write(b"\x89PNG half")
        f.flush()
        raise OSError(28, "No space left on device")

    jobs = {
        "backbone cvrl r0": {"start": 0.0, "wall": 60.0, "cpu": 50.0},
        "synth": {"start": 60, "wall": 30, "cpu": None},
    }
    monkeypatch.setattr(Figure, "savefig", torn)
    plt.close("all")
    png = tmp_path / "plots" / "profile.png"
    with pytest.raises(OSError):
        plot(jobs, summarize(jobs, 2), png)
    assert not png.exists() and plt.get_fignums() == []


def test_a_log_whose_lines_all_stand_at_its_end_is_refused_in_one_line(tmp_path):
    """A run shorter than the lines' 1-s resolution (a resumed demo with one short job left): every
    line stood at the last one's time, no line had any time left to check, and ``min()`` of the
    empty list was a ValueError traceback."""
    p = _log(tmp_path, [(0, 5), (0, 0)])
    with pytest.raises(SystemExit, match="no progress line before the run's end"):
        time_left_errors(logged_time_left(p), p)
