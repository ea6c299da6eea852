from fractions import Fraction

import numpy as np
import pytest

from .vidgen import encode


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """Small coded-index videos, encoded once per session."""
    d = tmp_path_factory.mktemp("videos")
    out = {
        "mp4": encode(d / "h264_bframes.mp4", n=300, gop=30, bframes=2),
        "mp4_25": encode(d / "h264_25fps.mp4", n=250, fps=25, gop=25, bframes=2),
        "mp4_2997": encode(d / "h264_2997.mp4", n=300, fps=Fraction(30000, 1001), gop=30, bframes=2),
        "mkv": encode(d / "h264.mkv", n=120, gop=40, bframes=3),
        "avi": encode(d / "mpeg4.avi", n=120, codec="mpeg4", gop=24, bframes=2),
        "mp4_fast": encode(d / "faststart.mp4", n=300, gop=60, bframes=2, container_options={"movflags": "faststart"}),
        # MPEG-TS seeks by dts: a seek to a key frame's pts lands a GOP late under B-frames.
        "ts": encode(d / "h264_bframes.ts", n=300, gop=30, bframes=2),
        # AVI keeps decode-order pts: H.264's reordering hands frames back under the wrong pts.
        "avi_h264": encode(d / "h264_bframes.avi", n=120, gop=40, bframes=3),
        # MPEG program stream (DVD style): stamps after a seek are not the frames'
        "mpg": encode(d / "mpeg2.mpg", n=250, fps=25, codec="mpeg2video", gop=12, bframes=2),
    }
    # VFR: frame durations alternate 20/50/50 ms (true average ~25 fps, nominal header rate 30).
    dur = np.where(np.arange(120) % 3 == 0, 20, 50)
    pts = np.concatenate([[0], np.cumsum(dur)[:-1]]).tolist()
    out["vfr"] = encode(d / "vfr.mkv", n=120, pts=pts, time_base=Fraction(1, 1000), gop=30, bframes=0)
    out["vfr_pts_ms"] = pts
    return out
