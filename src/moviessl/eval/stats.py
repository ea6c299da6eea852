"""Mean ± standard error over runs (the paper reports 10 seeds for SRL and relations)."""

from __future__ import annotations

import logging
import math
import numbers
from typing import Iterable, Mapping, Sequence

log = logging.getLogger("moviessl")


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """``(mean, se)`` with ``se = sample std (ddof=1) / sqrt(n)``; ``se = 0`` for a single value."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        raise ValueError("mean_se of no values")
    # finite values past ~1e154 (float64 metrics only: float32's end near 3e38) square, and sum,
    # past a float's range: fsum and `** 2` raised OverflowError. Such values are scaled by a power
    # of two first (exact; ordinary values give the same bits as before), so the results are finite.
    top = max(abs(v) for v in vals)
    scale = 2.0 ** -math.frexp(top)[1] if math.isfinite(top) and top > 2.0**500 else 1.0
    vals = [v * scale for v in vals]
    mean = math.fsum(vals) / n
    if n == 1:
        return mean / scale, 0.0
    var = math.fsum((v - mean) ** 2 for v in vals) / (n - 1)
    return mean / scale, math.sqrt(var / n) / scale


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return _is_real(v) and math.isfinite(float(v))


def summarize(
    rows: Sequence[Mapping[str, float]], keys: Sequence[str] | None = None, digits: int = 2, title: str = "run"
) -> tuple[dict[str, dict[str, float]], str]:
    """Per-seed metric dicts -> ``({metric: {"mean", "se", "n"}}, markdown)``.

    ``keys`` picks and orders the metrics (default: numeric keys in first-seen order; non-numeric
    values such as a seed's run name are skipped). A metric missing from some rows is summarised
    over the rows that have it (``n`` says how many). A non-finite value (a diverged run's loss) is
    not averaged but counted, as ``n_nonfinite`` and in the table's cell, with a warning: dropped
    silently, the mean would look better than the runs were. A metric no run gave a finite value of
    is kept, ``n`` 0 and its mean NaN, so the table says so instead of losing the column. The
    Markdown table has one row ``title`` with ``mean ± se`` per metric."""
    if keys is None:
        keys = []
        for r in rows:
            keys += [k for k, v in r.items() if k not in keys and _is_real(v)]
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        vals = [float(r[k]) for r in rows if k in r and _is_number(r[k])]
        bad = sum(1 for r in rows if k in r and _is_real(r[k]) and not _is_number(r[k]))
        if bad:
            log.warning("%s: %d of %d runs gave a non-finite value; not in the mean", k, bad, len(rows))
        if not vals:
            if bad:  # every run diverged: said in the summary, not dropped with it
                out[k] = {"mean": math.nan, "se": math.nan, "n": 0, "n_nonfinite": bad}
            continue
        m, se = mean_se(vals)
        out[k] = {"mean": m, "se": se, "n": len(vals), **({"n_nonfinite": bad} if bad else {})}
    return out, format_table({title: out}, digits=digits)


def format_table(
    named: Mapping[str, Mapping[str, Mapping[str, float]]], digits: int = 2, keys: Sequence[str] | None = None
) -> str:
    """Markdown table, one row per named summary (e.g. per method, as in the paper's tables),
    one column per metric, cells ``mean ± se`` (the mean alone for one run; ``-`` where a row lacks
    the metric)."""
    if keys is None:
        keys = []
        for summ in named.values():
            keys += [k for k in summ if k not in keys]
    ns = sorted({int(s["n"]) for summ in named.values() for s in summ.values()})
    n_note = "n=" + ("/".join(map(str, ns)) or "0")
    head = f"| {n_note} | " + " | ".join(keys) + " |"
    sep = "|---|" + "|".join("---:" for _ in keys) + "|"
    lines = [head, sep]

    def cell(s: Mapping[str, float]) -> str:  # one run has no standard error: its value alone
        m = f"{s['mean']:.{digits}f}" if int(s.get("n", 1)) else "-"  # n 0: no finite value at all
        m = m if int(s.get("n", 2)) < 2 else f"{m} ± {s['se']:.{digits}f}"
        return m + (f" ({s['n_nonfinite']} non-finite)" if s.get("n_nonfinite") else "")

    for name, summ in named.items():
        cells = [cell(summ[k]) if k in summ else "-" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
