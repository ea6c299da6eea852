"""benchmarks.sysinfo: peak memory and load read the same on Linux and macOS."""

import os
from pathlib import Path

from benchmarks import run_all
from benchmarks.sysinfo import maxrss_mb, peak_rss_mb

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_ru_maxrss_is_kilobytes_on_linux_and_bytes_on_macos():
    assert maxrss_mb(512 * 1024, "linux") == 512
    assert maxrss_mb(512 * 2**20, "darwin") == 512
    assert 10 < peak_rss_mb() < 1e6  # this process: tens of MB to a few GB


def test_no_benchmark_reads_ru_maxrss_or_proc_loadavg_itself():
    """bench_flow_store's and bench_instances' peaks were ru_maxrss / 1024, i.e. 1024x on macOS, and
    run_all's load was read from /proc/loadavg, so a record made on a Mac had none."""
    others = [p for p in BENCH.glob("*.py") if p.name != "sysinfo.py"]
    assert [p.name for p in others if "ru_maxrss" in p.read_text() or "/proc/loadavg" in p.read_text()] == []


def test_the_record_has_the_load_where_there_is_no_proc(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 2.25, 3.0))
    assert run_all._loadavg() == [1.5, 2.25, 3.0]


def test_bench_films_memory_sampler_works_without_proc(monkeypatch, tmp_path):
    """Without /proc (macOS) the sampling thread died on os.listdir("/proc") and every peak read 0 MB."""
    import subprocess
    import sys
    import time

    from benchmarks import bench_film

    monkeypatch.setattr(bench_film, "PROC", tmp_path / "no_proc")
    code = "import time; x = b'x' * (300 * 2**20); print(1, flush=True); time.sleep(3)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        p.stdout.readline()  # the 300 MB are resident
        mon = bench_film.TreeRSS(p.pid, every_s=0.05)
        mon.start()
        time.sleep(0.5)
        mon.stop = True
        mon.join()
    finally:
        p.kill()
        p.wait()
    assert 300 < mon.peak == mon.peak_main < 1000
