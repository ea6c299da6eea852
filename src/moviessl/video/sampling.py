"""Clips on a 30-fps timeline and 2-second events.

All models in the paper see clips defined on a 30-fps timeline (Slow-D: 16 frames, 4 apart, about
2.1 s). A video at another rate is resampled by *time*: timeline frame ``j`` is at ``j / 30`` s and
maps to the native frame on screen at that time. The window follows VidSitu / PySlowFast
``get_sequence``: ``range(c - T*s//2, c + T*s//2, s)`` around centre frame ``c = int(center_s*30)``,
clamped to the video (event k of a VidSitu segment: centre frame ``int((k-0.5)*60)``).
"""

from __future__ import annotations

import math
import os

import numpy as np

from .reader import VideoReader

TARGET_FPS = 30.0


def timeline_indices(center_s: float, num_frames: int, stride: int, target_fps: float = TARGET_FPS) -> np.ndarray:
    """Frame indices on the ``target_fps`` timeline (may be negative / past the end; not clamped)."""
    # 1e-6: centre times like 1.0 s must land on frame 30, not 29.999...
    c = int(math.floor(center_s * target_fps + 1e-6))
    start = c - (num_frames * stride) // 2
    return start + np.arange(num_frames, dtype=np.int64) * stride


def clip_indices(center_s: float, num_frames: int, stride: int, fps: float, total_frames: int,
                 target_fps: float = TARGET_FPS) -> np.ndarray:
    """Native frame indices of a ``num_frames`` x ``stride`` clip centred on ``center_s`` seconds.

    ``stride`` counts frames of the ``target_fps`` timeline; each timeline frame maps to the native
    frame displayed at its time, ``floor(t * fps)``; indices are clamped to ``[0, total_frames)``.
    For constant-rate video; :func:`read_clip` maps by real frame times for variable-rate files.
    """
    if total_frames <= 0:
        raise ValueError("total_frames must be positive")
    t = timeline_indices(center_s, num_frames, stride, target_fps) / float(target_fps)
    native = np.floor(t * float(fps) + 1e-6).astype(np.int64)
    return np.clip(native, 0, total_frames - 1)


def read_clip(path_or_reader: str | os.PathLike | VideoReader, center_s: float, num_frames: int = 16,
              stride: int = 4, target_fps: float = TARGET_FPS) -> np.ndarray:
    """Decode one clip -> ``uint8 (T, H, W, 3)``. Pass an open reader to read several clips of a video."""
    if isinstance(path_or_reader, VideoReader):
        return _read_clip(path_or_reader, center_s, num_frames, stride, target_fps)
    with VideoReader(path_or_reader) as r:
        return _read_clip(r, center_s, num_frames, stride, target_fps)


def _read_clip(r: VideoReader, center_s, num_frames, stride, target_fps) -> np.ndarray:
    return r.get_frames(reader_clip_indices(r, center_s, num_frames, stride, target_fps))


def reader_clip_indices(r: VideoReader, center_s: float, num_frames: int = 16, stride: int = 4,
                        target_fps: float = TARGET_FPS) -> np.ndarray:
    """:func:`clip_indices` for an open reader; variable-rate files map by their real frame times."""
    if r.is_vfr:
        return r.indices_at(timeline_indices(center_s, num_frames, stride, target_fps) / float(target_fps))
    return clip_indices(center_s, num_frames, stride, r.fps, r.num_frames, target_fps)


def event_centers(duration_s: float, stride_s: float = 2.0) -> list[float]:
    """Centres (s) of consecutive events every ``stride_s``: ``stride_s * (k + 0.5)``.

    A 10-s VidSitu segment gives ``[1, 3, 5, 7, 9]``. A last partial event is kept if at least half
    of it lies inside the video (so 9.97-s segments still have 5 events); always at least one.
    """
    if stride_s <= 0:
        raise ValueError("stride_s must be positive")
    n = max(1, int(math.floor(duration_s / stride_s + 0.5 + 1e-9)))
    return [stride_s * (k + 0.5) for k in range(n)]
