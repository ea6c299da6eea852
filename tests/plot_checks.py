"""What a plot drew, read back from its figure: shared by the tests of the demo's plots
(tests/core/test_demo_report.py) and the LVU table's (tests/tasks/test_lvu_table.py)."""

from __future__ import annotations


def drawn(monkeypatch) -> list:
    """The figures the plotting functions save (they close them after: read them as saved)."""
    from matplotlib.figure import Figure

    figs = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figs.append(self) or real(self, *a, **k))
    return figs


def error_bars(ax) -> dict[int, tuple[float, float]]:
    """The error bars the axes' first bar container draws: {bar index: (low, high)}."""
    import numpy as np
    from matplotlib.container import BarContainer

    bars = next(c for c in ax.containers if isinstance(c, BarContainer))
    segs = [np.asarray(s) for s in bars.errorbar.lines[2][0].get_segments()]
    return {round(float(s[0][0])): (float(s[0][1]), float(s[1][1])) for s in segs if len(s) and np.isfinite(s).all()}
