"""What the benchmarks read about the machine, read the same way on Linux and macOS."""

from __future__ import annotations

import os
import sys


def maxrss_mb(ru_maxrss: float, platform: str = sys.platform) -> float:
    """``getrusage().ru_maxrss`` in MB (MiB): kilobytes on Linux, but bytes on macOS (getrusage(2)
    of each), where dividing by 1024 alone reads 1024 times the real peak."""
    return ru_maxrss / (2**20 if platform == "darwin" else 2**10)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    import resource

    return maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def loadavg() -> list[float] | None:
    """1/5/15-min load averages (``uptime``): on a shared machine, the context of every number.
    ``os.getloadavg`` reads them on Linux and macOS alike (``/proc/loadavg`` is Linux's alone)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):  # none on Windows
        return None
