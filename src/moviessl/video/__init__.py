"""Video input: PyAV decoding, clips on a 30-fps timeline, 2-s events, pre-processing and batched
temporally-consistent augmentation (see the video contract in docs/design.md)."""

from .augment import ConsistentAugment, cvrl_augment_pair
from .reader import FRAME_EXTS, VIDEO_EXTS, VideoReader, probe, resolve_video
from .sampling import read_clip, reader_clip_indices
from .timeline import (
    TARGET_FPS,
    clip_indices,
    clip_timeline,
    event_centers,
    timeline_indices,
    timeline_length,
    timeline_to_native,
)
from .transforms import (
    MEAN,
    STD,
    crop_box,
    denormalize,
    normalize,
    param_dtype,
    preprocess,
    preprocess_uint8,
    resize_short_side,
    squash_resize,
    to_model_input,
    to_uint8_cthw,
)

__all__ = [
    "VideoReader",
    "resolve_video",
    "probe",
    "VIDEO_EXTS",
    "FRAME_EXTS",
    "clip_indices",
    "reader_clip_indices",
    "timeline_indices",
    "read_clip",
    "event_centers",
    "TARGET_FPS",
    "timeline_length",
    "timeline_to_native",
    "clip_timeline",
    "resize_short_side",
    "squash_resize",
    "preprocess",
    "preprocess_uint8",
    "to_model_input",
    "param_dtype",
    "normalize",
    "denormalize",
    "crop_box",
    "to_uint8_cthw",
    "MEAN",
    "STD",
    "ConsistentAugment",
    "cvrl_augment_pair",
]
