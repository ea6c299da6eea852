"""The bar panels of ``moviessl table``'s plots: a table's cells drawn as its Markdown shows them."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np


def draw_bars(ax: Any, cells: Sequence[Mapping[str, Any] | None], labels: Sequence[str], colors: Any) -> None:
    """A bar per row on ``ax``: a cell's (``{"mean", "se", "n"}``) mean ± SE. As the table's cells: no
    error bar for a single run (its SE 0 drew a cap at the mean), "n/a" where a row has no result or
    no finite mean (every run diverged)."""
    x = np.arange(len(cells))
    mean = [c["mean"] if c else math.nan for c in cells]
    se = [c["se"] if c and c["n"] >= 2 else math.nan for c in cells]
    ax.bar(x, mean, yerr=se, color=colors, capsize=2)
    for k, m in enumerate(mean):
        if not math.isfinite(m):
            ax.text(k, 0, "n/a", ha="center", va="bottom", fontsize=7)
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


def row_colors(n: int) -> np.ndarray:
    """A colour per row: tab10 up to 10 rows (tab10 gave the 11th row the first one's), else tab20."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return cmap(np.arange(n) % cmap.N)
