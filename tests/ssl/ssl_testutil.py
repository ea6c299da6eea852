"""Helpers for the backbone tests: tiny real H.264 clip lists encoded with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames: np.ndarray, fps: int = 30, pts_ms: list[int] | None = None) -> Path:
    """An H.264 file; ``pts_ms`` (one stamp per frame, ms) makes it variable-rate (use .mkv)."""
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    s.options = {"preset": "ultrafast", "crf": "20"}
    if pts_ms is not None:
        s.codec_context.time_base = Fraction(1, 1000)
    for i, f in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        if pts_ms is not None:
            frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
        for pkt in s.encode(frame):
            c.mux(pkt)
    for pkt in s.encode():
        c.mux(pkt)
    c.close()
    return path


DIRS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def moving_square(label: int, n: int = 40, h: int = 48, w: int = 64, seed: int = 0, speed: float = 1.0) -> np.ndarray:
    """A bright square moving in one of 4 directions (the class) over a flat random background."""
    rng = np.random.default_rng(seed)
    dx, dy = DIRS[label % 4]
    out = np.empty((n, h, w, 3), np.uint8)
    out[:] = rng.integers(0, 80, 3)
    col = rng.integers(150, 256, 3)
    x0, y0 = rng.integers(12, w - 22), rng.integers(12, h - 22)
    for t in range(n):
        x = int(round(x0 + dx * t * speed)) % (w - 10)
        y = int(round(y0 + dy * t * speed)) % (h - 10)
        out[t, y : y + 10, x : x + 10] = col
    return out


def make_clip_list(root: Path, n: int = 12, bad: int = 1, labels: bool = True, n_frames: int = 40) -> Path:
    (root / "v").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        write_video(root / "v" / f"c{i:02d}.mp4", moving_square(i % 4, n=n_frames, seed=i))
        lines.append(f"v/c{i:02d}.mp4" + (f" {i % 4}" if labels else ""))
    for j in range(bad):
        (root / "v" / f"bad{j}.mp4").write_bytes(b"\x00not a video" * 50)
        lines.insert(3 + j, f"v/bad{j}.mp4" + (" 0" if labels else ""))
    csv = root / "train.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def tiny_overrides(extra=()) -> list[str]:
    """Config overrides for a seconds-long run on the tiny clips."""
    return [
        "data.batch_size=4",
        "data.num_frames=8",
        "data.stride=2",
        "data.short_side=32",
        "data.crop=32",
        "flow.short_side=32",
        "flow.num_frames=8",
        "flow.stride=2",
        "modist.flow_crop=32",
        "modist.queue_size=32",
        "cvrl.head.hidden_dim=32",
        "cvrl.head.out_dim=16",
        "modist.head.hidden_dim=32",
        "modist.head.out_dim=16",
        "trainer.log_every_n_steps=1",
        "trainer.progress_bar=false",
        "probe.max_iter=50",
        *extra,
    ]
