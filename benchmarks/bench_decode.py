"""Decode benchmark: 16x4 clip sampling with seek-and-window decoding vs decoding every frame.

Makes a 10-s, 30-fps, 640x360 H.264 file (panning texture + moving block, x264 veryfast, B-frames)
with two GOP settings, then measures clips/s of:

- ``window_fresh``: what a training dataset does per item: open a reader, read one 16x4 clip at a
  random centre, close (index + seek + decode only the window);
- ``window_events``: feature extraction: one reader, the 5 event clips of the video in order;
- ``baseline_all_rgb``: decode every frame to RGB, then index the 16 frames (the goal's baseline;
  same fast RGB conversion as the reader, so the speed-up is from decoding less);
- ``baseline_naive_rgb``: the same with ``frame.to_ndarray(format="rgb24")`` per frame, as most
  loaders write it (a new swscale context per frame: much slower);
- ``baseline_all_decode``: decode every frame but convert only the 16 to RGB (a stricter baseline).

Every sampled clip is checked bit-exact against the baseline's frames.
Run: ``python -m benchmarks.bench_decode`` (prints JSON); ``main()`` returns the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from moviessl.video import VideoReader, event_centers, read_clip
from moviessl.video import reader as reader_mod
from moviessl.video.sampling import reader_clip_indices

W, H, FPS, SECONDS = 640, 360, 30, 10


def make_video(path: Path, gop: int | None) -> Path:
    """Panning smooth-noise texture plus a moving bright block: realistic inter-frame prediction."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (H // 8 + 2, (W + FPS * SECONDS * 2) // 8 + 2, 3), dtype=np.uint8)
    import cv2

    tex = cv2.resize(small, (small.shape[1] * 8, small.shape[0] * 8), interpolation=cv2.INTER_CUBIC)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23"}
        if gop:
            s.codec_context.gop_size = gop
        for i in range(FPS * SECONDS):
            img = np.ascontiguousarray(tex[:H, 2 * i : 2 * i + W])
            x = (i * 5) % (W - 80)
            img[140:220, x : x + 80] = (255, 240, 40)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decode_all_rgb(path, naive: bool = False) -> np.ndarray:
    """Every frame to RGB. ``naive``: ``frame.to_ndarray(format="rgb24")`` as most loaders write it
    (a new swscale context per frame); otherwise one shared reformatter, as the reader uses."""
    with av.open(str(path)) as c:
        if naive:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        rgb = VideoReformatter()
        return np.stack([rgb.reformat(f, format="rgb24").to_ndarray() for f in c.decode(video=0)])


def decode_all_pick(path, idx) -> np.ndarray:
    want = set(int(i) for i in idx)
    out = {}
    rgb = VideoReformatter()
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                out[i] = rgb.reformat(f, format="rgb24").to_ndarray()
    return np.stack([out[int(i)] for i in idx])


def _rate(fn, n_items: int, repeats: int) -> float:
    """Items/s, median over repeats (the machine is shared, medians resist interference)."""
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        rates.append(n_items / (time.perf_counter() - t))
    return statistics.median(rates)


def bench_file(path: Path, clips: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    with VideoReader(path) as r:
        dur, n = r.duration_s, r.num_frames
        centres = rng.uniform(0, dur, clips).tolist()
        idx = [reader_clip_indices(r, c) for c in centres]
    ref = decode_all_rgb(path)
    for c, i in zip(centres, idx):  # correctness first: window decoding == full decoding
        assert np.array_equal(read_clip(path, c), ref[i]), f"clip at {c:.2f}s differs from full decode"

    def window_fresh():
        for c in centres:
            reader_mod._index_memo.clear()  # a first open each time, as before the per-process index memo
            read_clip(path, c)

    videos = max(1, clips // 5)  # as many clips as window_fresh, so both timings are as long

    def window_events():
        for _ in range(videos):
            with VideoReader(path) as r:
                for c in event_centers(r.duration_s):
                    read_clip(r, c)

    base = max(2, clips // 4)

    def baseline_all_rgb():
        for i in idx[:base]:
            decode_all_rgb(path)[i]

    def baseline_naive_rgb():
        for i in idx[:base]:
            decode_all_rgb(path, naive=True)[i]

    def baseline_all_decode():
        for i in idx[:base]:
            decode_all_pick(path, i)

    with VideoReader(path) as r:
        before = r.frames_decoded
        for c in centres:
            read_clip(r, c)
        decoded_per_clip_reused = (r.frames_decoded - before) / clips
    out = {
        "num_frames": n,
        "window_fresh_clips_s": _rate(window_fresh, clips, repeats),
        "window_events_clips_s": _rate(window_events, videos * len(event_centers(dur)), repeats),
        "baseline_all_rgb_clips_s": _rate(baseline_all_rgb, base, repeats),
        "baseline_all_decode_clips_s": _rate(baseline_all_decode, base, repeats),
        "baseline_naive_rgb_clips_s": _rate(baseline_naive_rgb, base, repeats),
        "frames_decoded_per_random_clip": decoded_per_clip_reused,
    }
    out["speedup_fresh_vs_all_rgb"] = out["window_fresh_clips_s"] / out["baseline_all_rgb_clips_s"]
    out["speedup_fresh_vs_all_decode"] = out["window_fresh_clips_s"] / out["baseline_all_decode_clips_s"]
    out["speedup_fresh_vs_naive_rgb"] = out["window_fresh_clips_s"] / out["baseline_naive_rgb_clips_s"]
    out["speedup_events_vs_all_rgb"] = out["window_events_clips_s"] / out["baseline_all_rgb_clips_s"]
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=20, help="random clips per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv or [])
    res = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {platform.system()}".strip(),
        "date": date.today().isoformat(),
        "pyav": av.__version__,
        "video": f"{SECONDS}s {FPS}fps {W}x{H} H.264 (x264 veryfast crf23, B-frames)",
        "clip": "16x4",
    }
    with tempfile.TemporaryDirectory() as d:
        for name, gop in (("gop60", 60), ("gop250_x264_default", None)):
            p = make_video(Path(d) / f"{name}.mp4", gop)
            res[name] = bench_file(p, args.clips, args.repeats)
    return res


if __name__ == "__main__":
    import sys

    from benchmarks import run_main

    run_main(lambda: print(json.dumps(main(sys.argv[1:]), indent=2)), "benchmarks.bench_decode")
