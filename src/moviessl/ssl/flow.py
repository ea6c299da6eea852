"""Optical flow for MoDist's motion pathway, computed once per video and cached.

Estimator: OpenCV DIS (``cv2.DISOpticalFlow``, default) or Farneback. TV-L1 (opencv-contrib) is
~50x slower on CPU and RAFT needs a GPU and weights; MoDist's estimator is unconfirmed, and the
flow only has to carry *where and how things move* for distillation, which DIS does well.

Flow frame ``i`` is the flow from frame ``i`` to ``i+1`` (the last one repeats ``T-2``), so flow
frames index like video frames and a 16x4 flow clip covers the same time as its RGB clip.

3-channel uint8 encoding (like the flow JPEGs MoDist trains on)::

    b   = bound * short_side / 256                 # +-20 px at a 256 short side (TSN's clip), scaled
    ch0 = 127.5 * (1 + clip(dx / b, -1, 1))         # horizontal flow, 128 = still
    ch1 = 127.5 * (1 + clip(dy / b, -1, 1))         # vertical flow
    ch2 = 255 * clip(sqrt(dx^2 + dy^2) / b, 0, 1)   # magnitude

``mode: edges`` replaces the three channels by their Sobel gradient magnitudes (MoDist's unconfirmed
"flow edges", which suppress smooth camera motion); default ``raw``. The flow network sees
``(v / 255 - 0.5) / 0.25`` per channel (:func:`normalize_flow`, ``centred``) or, as MaCLR's release
(``DATA.MEAN`` 0, ``DATA.STD`` 1 for its flow images), ``v / 255`` (``maclr``).

Cache (versioned by every parameter above): ``cache_dir/flow_{algorithm}_s{short}_{mode}_{hash}/
{stem}-{key}.npy`` uint8 ``(T, H, W, 3)``, written atomically, memory-mapped afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import BadInputError
from ..utils.io import atomic_save_npy, atomic_write_json
from .clipcache import CachedSource, _source_key

FLOW_VERSION = 1


@dataclass(frozen=True)
class FlowParams:
    algorithm: str = "dis"  # dis | farneback
    short_side: int = 64  # flow is computed (and stored) at this short side
    bound: float = 20.0  # px at a 256 short side
    mode: str = "raw"  # raw | edges
    dis_preset: str = "fast"  # ultrafast | fast | medium

    def tag(self) -> str:
        h = hashlib.sha1(json.dumps({**asdict(self), "v": FLOW_VERSION}, sort_keys=True).encode()).hexdigest()[:8]
        return f"flow_{self.algorithm}_s{self.short_side}_{self.mode}_{h}"


def _estimator(p: FlowParams) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    import cv2

    if p.algorithm == "dis":
        presets = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }
        if p.dis_preset not in presets:
            raise BadInputError("flow.dis_preset", f"unknown DIS preset {p.dis_preset!r} ({'|'.join(presets)})")
        dis = cv2.DISOpticalFlow_create(presets[p.dis_preset])
        return lambda a, b: dis.calc(a, b, None)
    if p.algorithm == "farneback":
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)
    raise BadInputError("flow.algorithm", f"unknown flow algorithm {p.algorithm!r} (dis|farneback)")


def encode_flow(flow: np.ndarray, p: FlowParams) -> np.ndarray:
    """(H,W,2) float flow in px -> (H,W,3) uint8 (see module docstring)."""
    b = p.bound * p.short_side / 256.0
    dx, dy = flow[..., 0] / b, flow[..., 1] / b
    chans = [dx, dy, np.sqrt(dx * dx + dy * dy)]
    if p.mode == "edges":
        import cv2

        # gradient of each flow channel per pixel; a uniform (camera) translation has none
        chans = [
            np.sqrt(cv2.Sobel(c, cv2.CV_32F, 1, 0, ksize=3) ** 2 + cv2.Sobel(c, cv2.CV_32F, 0, 1, ksize=3) ** 2)
            for c in (dx.astype(np.float32), dy.astype(np.float32))
        ]
        chans.append(np.sqrt(chans[0] ** 2 + chans[1] ** 2))
        return np.stack([np.clip(c, 0, 1) * 255 for c in chans], -1).round().astype(np.uint8)
    if p.mode != "raw":
        raise BadInputError("flow.mode", f"unknown flow mode {p.mode!r} (raw|edges)")
    out = np.stack(
        [127.5 * (1 + np.clip(chans[0], -1, 1)), 127.5 * (1 + np.clip(chans[1], -1, 1)), 255 * np.clip(chans[2], 0, 1)],
        -1,
    )
    return out.round().astype(np.uint8)


def compute_flow(frames: np.ndarray, p: FlowParams) -> np.ndarray:
    """RGB uint8 (T,H,W,3) at ``p.short_side`` -> encoded flow uint8 (T,H,W,3)."""
    import cv2

    if len(frames) == 0:
        raise ValueError("no frames")
    est = _estimator(p)
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    out = np.empty(frames.shape[:3] + (3,), np.uint8)
    if len(gray) == 1:  # a single frame has no motion
        out[0] = encode_flow(np.zeros(frames.shape[1:3] + (2,), np.float32), p)
        return out
    for i in range(len(gray) - 1):
        out[i] = encode_flow(est(gray[i], gray[i + 1]), p)
    out[-1] = out[-2]
    return out


FLOW_INPUTS = ("centred", "maclr")


def normalize_flow(x: torch.Tensor, mode: str = "centred") -> torch.Tensor:
    """uint8-valued flow (any layout) -> float input of the flow net: ``centred`` roughly zero-mean and
    unit-scale, ``maclr`` ``v / 255`` in [0, 1] (MaCLR's mean 0 / std 1 normalisation of flow images)."""
    if mode == "maclr":
        return x.float() / 255.0
    if mode != "centred":
        raise ValueError(f"unknown flow input {mode!r} ({' | '.join(FLOW_INPUTS)})")
    return (x.float() / 255.0 - 0.5) / 0.25


class FlowCache:
    """``FlowCache(cache_dir, params).source(path, frames_fn)`` -> memory-mapped encoded flow.

    ``frames_fn()`` returns the video's RGB frames at ``params.short_side``; it is called only when
    the flow of that video (for these parameters) is not cached yet."""

    def __init__(self, cache_dir: str | os.PathLike, params: FlowParams):
        self.params = params
        self.dir = Path(cache_dir) / params.tag()
        self.computed = 0  # how many videos this instance had to compute (cache misses)

    def is_cached(self, path: str | os.PathLike) -> bool:
        """Whether ``path``'s flow (for these parameters) is in the cache: two stats, no decoding."""
        path = Path(path)
        try:
            base = self.dir / f"{path.stem}-{_source_key(path)}"
        except OSError:
            return False
        return base.with_suffix(".npy").is_file() and base.with_suffix(".json").is_file()

    def source(self, path: str | os.PathLike, frames_fn: Callable[[], np.ndarray]) -> CachedSource:
        path = Path(path)
        if not path.exists():
            raise BadInputError(path, "video not found")
        base = self.dir / f"{path.stem}-{_source_key(path)}"
        npy, meta_p = base.with_suffix(".npy"), base.with_suffix(".json")
        if npy.is_file() and meta_p.is_file():
            return CachedSource(npy, json.loads(meta_p.read_text()))
        frames = np.asarray(frames_fn())
        if min(frames.shape[1:3]) != self.params.short_side:
            from .clipcache import resize_frames

            frames = resize_frames(frames, self.params.short_side)
        flow = compute_flow(frames, self.params)
        atomic_save_npy(npy, flow)
        meta = {"src": str(path.resolve()), "num_frames": int(len(flow)), "fps": None, "params": asdict(self.params)}
        atomic_write_json(meta_p, meta)
        self.computed += 1
        return CachedSource(npy, meta)
