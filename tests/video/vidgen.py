"""Test videos whose frames carry their own index as a big binary pattern (robust to lossy codecs)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

BITS, COLS = 10, 5  # 10 bits in a 5x2 grid of blocks: indices up to 1023


def code_frame(i: int, width: int = 160, height: int = 96) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 2] = 40  # a little colour so chroma paths are exercised
    rows = BITS // COLS
    for b in range(BITS):
        r, q = divmod(b, COLS)
        if (i >> b) & 1:
            img[r * height // rows : (r + 1) * height // rows, q * width // COLS : (q + 1) * width // COLS] = 255
    return img


def read_code(frame: np.ndarray) -> int:
    h, w = frame.shape[:2]
    rows = BITS // COLS
    bh, bw = h // rows, w // COLS
    v = 0
    for b in range(BITS):
        r, q = divmod(b, COLS)
        block = frame[r * bh + bh // 4 : (r + 1) * bh - bh // 4, q * bw + bw // 4 : (q + 1) * bw - bw // 4, :2]
        if block.mean() > 127:
            v |= 1 << b
    return v


def codes(frames: np.ndarray) -> list[int]:
    return [read_code(f) for f in frames]


def encode(
    path,
    n: int = 90,
    fps=30,
    width: int = 160,
    height: int = 96,
    codec: str = "libx264",
    gop: int | None = None,
    bframes: int | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    container_options: dict | None = None,
    options: dict | None = None,
):
    """Write ``n`` coded frames; ``pts`` (in ``time_base``) makes a variable-frame-rate file."""
    c = av.open(str(path), "w", options=container_options or {})
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(100000)
    s = c.add_stream(codec, rate=rate)
    s.width, s.height, s.pix_fmt = width, height, "yuv420p"
    if options:
        s.options = options
    if gop:
        s.codec_context.gop_size = gop
    if bframes is not None:
        s.codec_context.max_b_frames = bframes
    if time_base is not None:
        s.codec_context.time_base = time_base
    for i in range(n):
        f = av.VideoFrame.from_ndarray(code_frame(i, width, height), format="rgb24")
        if pts is not None:
            f.pts, f.time_base = pts[i], time_base
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def remux_shifted(src, dst, frames: int):
    """Copy ``src``'s video packets into an mp4 with every timestamp ``frames`` frames earlier, as a
    stream-copied trim writes it: the muxer turns the negative lead-in into an edit list."""
    i, o = av.open(str(src)), av.open(str(dst), "w")
    s = i.streams.video[0]
    out = o.add_stream_from_template(s)
    step = int(round(1 / (float(s.time_base) * float(s.average_rate)))) * frames
    for p in i.demux(s):
        if p.dts is None:  # the flush packet
            continue
        p.pts, p.dts, p.stream = p.pts - step, p.dts - step, out
        o.mux(p)
    o.close()
    i.close()
    return dst
