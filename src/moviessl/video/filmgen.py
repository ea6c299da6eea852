"""Cheap synthetic films for tests, benchmarks and ``moviessl selftest``: H.264 (+ AAC audio) of any length.

:func:`make_film` writes a film at a real film's shape (720p by default, with an audio track)
without spending much time on it: frames are built directly in YUV 4:2:0 from a panning
texture, a slow brightness drift (so consecutive events differ) and a few moving blocks, and x264
runs at ``ultrafast`` with one thread (deterministic output). About 300 fps at 720p on one core,
so a 10-minute film takes about a minute. ``rotation``, odd sizes, several video streams and
variable frame rates can be asked for to exercise the reader's edge cases.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 216, (h // 16 + 2, w // 16 + 2), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (small.shape[1] * 16, small.shape[0] * 16), interpolation=cv2.INTER_LINEAR)


def make_film(
    path: str | os.PathLike,
    seconds: float,
    width: int = 1280,
    height: int = 720,
    fps: float = 30.0,
    audio: bool = True,
    seed: int = 0,
    gop: int = 250,
    rotation: int = 0,
    video_streams: int = 1,
    vfr: bool = False,
    crf: int = 30,
) -> Path:
    """Write a ``seconds``-long H.264 film to ``path`` (mp4/mkv by extension) and return the path.

    ``rotation``: display-matrix rotation in degrees (the stored frames stay landscape);
    ``video_streams``: extra copies at a quarter of the size (e.g. a picture-in-picture angle);
    ``vfr``: frame intervals alternate between 0.5x and 1.5x the nominal one.
    """
    import av

    path = Path(path)
    n = int(round(seconds * fps))
    pw, ph = width + (width & 1), height + (height & 1)  # planes are built even, cropped below
    tex = _texture(ph + 64, pw + 2 * n // 3 + 64, seed)
    rng = np.random.default_rng(seed + 1)
    blocks = [
        (rng.integers(16, 64), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28), rng.integers(0, 256)) for _ in range(4)
    ]
    rate = Fraction(fps).limit_denominator(1001)
    tb = Fraction(1, 90000) if vfr else None
    with av.open(str(path), "w") as c:
        vs = []
        for k in range(video_streams):
            s = c.add_stream("libx264", rate=rate)
            s.width, s.height = (width, height) if k == 0 else (max(2, width // 4) & ~1, max(2, height // 4) & ~1)
            s.pix_fmt = "yuv420p"
            s.options = {"preset": "ultrafast", "crf": str(crf), "threads": "1", "g": str(gop)}
            if tb is not None:
                s.codec_context.time_base = tb
            if rotation and k == 0:
                s.set_display_rotation(rotation)
            vs.append(s)
        a = None
        if audio:
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        t_vfr = 0
        for i in range(n):
            x0 = (2 * i) // 3
            y = tex[:ph, x0 : x0 + pw].copy()
            y = np.clip(y.astype(np.int16) + int(40 * np.sin(i / (fps * 7.0))), 0, 255).astype(np.uint8)
            for size, speed, phase, val in blocks:
                bx = int((pw - size) * (0.5 + 0.5 * np.sin(phase + speed * i / fps)))
                by = int((ph - size) * (0.5 + 0.5 * np.cos(phase + 0.7 * speed * i / fps)))
                y[by : by + size, bx : bx + size] = val
            u = np.full((ph // 2, pw // 2), 128 + int(30 * np.sin(i / (fps * 11.0))), np.uint8)
            v = np.full((ph // 2, pw // 2), 128 + int(30 * np.cos(i / (fps * 13.0))), np.uint8)
            frame = av.VideoFrame.from_ndarray(
                np.concatenate([y, u.reshape(ph // 4, pw), v.reshape(ph // 4, pw)]), format="yuv420p"
            )
            if (pw, ph) != (width, height):
                frame = frame.reformat(width=width, height=height)
            for k, s in enumerate(vs):
                f = frame if k == 0 else frame.reformat(width=s.width, height=s.height)
                if tb is not None:
                    f.pts, f.time_base = t_vfr, tb
                for p in s.encode(f):
                    c.mux(p)
            if tb is not None:
                t_vfr += int(round(90000 / fps * (0.5 if i % 2 == 0 else 1.5)))
            if a is not None and i % max(1, int(round(fps))) == 0:  # one second of tone per second of film
                t = np.arange(16000) / 16000.0
                tone = (0.2 * np.sin(2 * np.pi * (220 + 20 * (i // int(round(fps)) % 12)) * t)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 16000, int(i / fps * 16000), Fraction(1, 16000)
                for p in a.encode(af):
                    c.mux(p)
        for s in vs:
            for p in s.encode():
                c.mux(p)
        if a is not None:
            for p in a.encode():
                c.mux(p)
    return path


def corrupt_stretch(src: str | os.PathLike, dst: str | os.PathLike, start: float, end: float, seed: int = 0) -> Path:
    """Copy ``src`` to ``dst`` with the bytes between fractions ``start`` and ``end`` of the file replaced by
    noise (container structure outside that stretch intact: a damaged stretch of a film on disk)."""
    b = bytearray(Path(src).read_bytes())
    i, j = int(len(b) * start), int(len(b) * end)
    b[i:j] = np.random.default_rng(seed).integers(0, 256, j - i, dtype=np.uint8).tobytes()
    Path(dst).write_bytes(bytes(b))
    return Path(dst)
