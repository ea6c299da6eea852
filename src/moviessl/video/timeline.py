"""The 30-fps timeline every clip is defined on, and 2-second events. Pure arithmetic, no I/O.

All models in the paper see clips defined on a 30-fps timeline (Slow-D: 16 frames, 4 apart, about
2.1 s), as PySlowFast and VidSitu do. A video at another rate is resampled by *time*: timeline frame
``j`` is at ``j / 30`` s and maps to the native frame on screen at that time, ``floor(t * fps)``.

Two ways to place a clip on the timeline:

- around a centre (events, evaluation): VidSitu / PySlowFast ``get_sequence``,
  ``range(c - T*s//2, c + T*s//2, s)`` around ``c = floor(center_s * 30)``, clamped to the video
  (:func:`timeline_indices`, :func:`clip_indices`);
- from a start (pretraining samplers): ``start + s * arange(T)``, wrapping around a video shorter
  than one clip (:func:`clip_timeline`), mapped to native frames by :func:`timeline_to_native`.
"""

from __future__ import annotations

import math

import numpy as np

TARGET_FPS = 30.0


def timeline_indices(center_s: float, num_frames: int, stride: int, target_fps: float = TARGET_FPS) -> np.ndarray:
    """Frame indices on the ``target_fps`` timeline (may be negative / past the end; not clamped)."""
    # 1e-6: centre times like 1.0 s must land on frame 30, not 29.999...
    c = int(math.floor(center_s * target_fps + 1e-6))
    start = c - (num_frames * stride) // 2
    return start + np.arange(num_frames, dtype=np.int64) * stride


def clip_indices(
    center_s: float, num_frames: int, stride: int, fps: float, total_frames: int, target_fps: float = TARGET_FPS
) -> np.ndarray:
    """Native frame indices of a ``num_frames`` x ``stride`` clip centred on ``center_s`` seconds.

    ``stride`` counts frames of the ``target_fps`` timeline; each timeline frame maps to the native
    frame displayed at its time, ``floor(t * fps)``; indices are clamped to ``[0, total_frames)``.
    For constant-rate video; variable-rate files map by their real frame times
    (:func:`moviessl.video.sampling.reader_clip_indices`).
    """
    if total_frames <= 0:
        raise ValueError("total_frames must be positive")
    t = timeline_indices(center_s, num_frames, stride, target_fps) / float(target_fps)
    native = np.floor(t * float(fps) + 1e-6).astype(np.int64)
    return np.clip(native, 0, total_frames - 1)


def timeline_length(num_frames: int, fps: float) -> int:
    """Number of 30-fps timeline frames of a video of ``num_frames`` native frames (>= 1)."""
    if not fps or fps <= 0:
        return max(1, int(num_frames))
    return max(1, int(math.floor(num_frames * TARGET_FPS / fps + 1e-6)))


def timeline_to_native(t: np.ndarray, num_frames: int, fps: float, frame_times: np.ndarray | None = None) -> np.ndarray:
    """30-fps timeline indices -> native frame indices (clamped to the last decodable frame).

    ``frame_times`` (s from the first frame, one per native frame): a variable-rate file's real
    frame times; timeline frame ``j`` maps to the frame on screen at ``j / 30`` s, as
    :meth:`moviessl.video.VideoReader.indices_at` does for extraction. Without it, the constant
    rate ``fps``."""
    t = np.asarray(t, dtype=np.float64)
    if frame_times is not None:
        # 1e-6 s: a time landing exactly on a frame's stamp picks that frame
        idx = np.searchsorted(np.asarray(frame_times, np.float64), t / TARGET_FPS + 1e-6, side="right") - 1
    else:
        idx = t if not fps or fps <= 0 else np.floor(t * fps / TARGET_FPS + 1e-6)
    return np.clip(idx, 0, max(0, num_frames - 1)).astype(np.int64)


def clip_timeline(start: int, num_frames: int, stride: int, total: int) -> np.ndarray:
    """Timeline indices of a clip starting at ``start``; wraps around (tiles) a too-short video."""
    return (int(start) + stride * np.arange(num_frames)) % max(1, total)


def event_centers(duration_s: float, stride_s: float = 2.0) -> list[float]:
    """Centres (s) of consecutive events every ``stride_s``: ``stride_s * (k + 0.5)``.

    A 10-s VidSitu segment gives ``[1, 3, 5, 7, 9]``. A last partial event is kept if at least half
    of it lies inside the video (so 9.97-s segments still have 5 events); always at least one.
    """
    if stride_s <= 0:
        raise ValueError("stride_s must be positive")
    n = max(1, int(math.floor(duration_s / stride_s + 0.5 + 1e-9)))
    return [stride_s * (k + 0.5) for k in range(n)]
