"""Decoding clips: the frames of a clip on the 30-fps timeline (:mod:`.timeline`) read from a video."""

from __future__ import annotations

import os

import numpy as np

from .reader import VideoReader
from .timeline import TARGET_FPS, clip_indices, timeline_indices


def read_clip(
    path_or_reader: str | os.PathLike | VideoReader,
    center_s: float,
    num_frames: int = 16,
    stride: int = 4,
    target_fps: float = TARGET_FPS,
) -> np.ndarray:
    """Decode one clip -> ``uint8 (T, H, W, 3)``. Pass an open reader to read several clips of a video."""
    if isinstance(path_or_reader, VideoReader):
        return _read_clip(path_or_reader, center_s, num_frames, stride, target_fps)
    with VideoReader(path_or_reader) as r:
        return _read_clip(r, center_s, num_frames, stride, target_fps)


def _read_clip(r: VideoReader, center_s, num_frames, stride, target_fps) -> np.ndarray:
    return r.get_frames(reader_clip_indices(r, center_s, num_frames, stride, target_fps))


def reader_clip_indices(
    r: VideoReader, center_s: float, num_frames: int = 16, stride: int = 4, target_fps: float = TARGET_FPS
) -> np.ndarray:
    """:func:`clip_indices` for an open reader; variable-rate files map by their real frame times."""
    if r.is_vfr:
        return r.indices_at(timeline_indices(center_s, num_frames, stride, target_fps) / float(target_fps))
    return clip_indices(center_s, num_frames, stride, r.fps, r.num_frames, target_fps)
