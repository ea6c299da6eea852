"""Deterministic pre-processing as in PySlowFast / VidSitu.

Short-side resize, crop, scale to [0, 1], normalise with mean 0.45 / std 0.225 per channel, layout
``(C, T, H, W)``. Datasets keep clips as uint8 resized to the short side (4x smaller than float)
and leave normalisation / augmentation to the accelerator.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)
CROP_MODES = ("center", "random", "left", "right")  # left/right: PySlowFast spatial_idx 0 / 2
# "squash": the whole frame resized to crop x crop, aspect ratio not kept (VidSitu's clip loader,
# TheShadow29/VidSitu vidsitu_code/dat_loader.py, feeds its video models 224x224 squashed frames)
SQUASH = "squash"


def short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """New (h, w) with the short side ``size``; the long side is floored as in PySlowFast."""
    if h <= w:
        return size, int(math.floor(w / h * size))
    return int(math.floor(h / w * size)), size


def resize_short_side(frames, size: int):
    """Resize so the short side is ``size``.

    numpy ``(T, H, W, C)`` uint8 -> same, with OpenCV (area filter when shrinking, so no aliasing);
    torch ``(..., H, W)`` -> same dtype, bilinear with antialias.
    """
    if isinstance(frames, np.ndarray):
        return _resize_frames(frames, *short_side_size(*frames.shape[1:3], size))
    # a tensor stays where it is and anything else is made on the CPU (as numpy's path): as_tensor
    # alone put it on torch's default device (a user's set_default_device("cuda"), a CPU clip included)
    x = frames if isinstance(frames, torch.Tensor) else torch.as_tensor(frames, device="cpu")
    h, w = x.shape[-2:]
    nh, nw = short_side_size(h, w, size)
    if (nh, nw) == (h, w):
        return x
    lead = x.shape[:-2]
    y = F.interpolate(
        x.reshape(-1, 1, h, w).float(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
    )
    if not x.is_floating_point():
        y = y.round_().clamp_(0, 255)
    return y.to(x.dtype).reshape(*lead, nh, nw)


def squash_resize(frames: np.ndarray, size: int) -> np.ndarray:
    """``uint8 (T, H, W, C)`` -> ``(T, size, size, C)``: every frame resized whole (OpenCV, area filter
    when shrinking), the aspect ratio not kept."""
    return _resize_frames(frames, size, size)


def _resize_frames(frames: np.ndarray, nh: int, nw: int) -> np.ndarray:
    """Every frame of ``(T, H, W, C)`` to ``(nh, nw)`` with OpenCV: the area filter when shrinking
    (no aliasing), bilinear otherwise; unchanged frames are returned as they are."""
    import cv2

    t, h, w = frames.shape[:3]
    if (nh, nw) == (h, w):
        return frames
    interp = cv2.INTER_AREA if nh < h and nw < w else cv2.INTER_LINEAR
    out = np.empty((t, nh, nw) + frames.shape[3:], dtype=frames.dtype)
    for i in range(t):
        out[i] = cv2.resize(frames[i], (nw, nh), interpolation=interp).reshape(out.shape[1:])
    return out


def crop_box(
    h: int, w: int, crop: int, mode: str = "center", generator: torch.Generator | None = None
) -> tuple[int, int]:
    """Top-left (y, x) of a ``crop`` square, as PySlowFast's ``uniform_crop``
    (slowfast/datasets/transform.py): centred at ``ceil((h - crop) / 2)``, ``ceil((w - crop) / 2)``;
    left/right take the ends of the long side (its ``spatial_idx`` 0 / 2)."""
    if mode not in CROP_MODES:
        raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {mode!r}")
    if crop > h or crop > w:
        raise ValueError(f"crop {crop} larger than frame {h}x{w}")
    if mode == "random":
        # on the CPU (the generator's stream, or the CPU's default one, which a loader worker's seed
        # sets): on torch's default device (a user's set_default_device("cuda")) a CPU generator was
        # refused, and without one the offsets came from the GPU's stream
        y = int(torch.randint(0, h - crop + 1, (1,), generator=generator, device="cpu"))
        x = int(torch.randint(0, w - crop + 1, (1,), generator=generator, device="cpu"))
        return y, x
    # ceil, not floor: an odd margin leaves its extra pixel above / left of the crop, as PySlowFast
    # does; floor put every such crop one pixel up / left of the reference's (455x256, crop 224:
    # x 115, PySlowFast 116), so features differed from models trained on its crops.
    y, x = math.ceil((h - crop) / 2), math.ceil((w - crop) / 2)
    if mode in ("left", "right"):
        end = mode == "right"
        if h > w:
            y = h - crop if end else 0
        else:
            x = w - crop if end else 0
    return y, x


def normalize(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """``(x - mean) / std`` over the channel dimension at ``-4`` ((C,T,H,W) or (B,C,T,H,W)), x in [0, 1]."""
    # made on the host and copied without waiting: made on a GPU (``as_tensor(..., device=)``), each
    # was a blocking copy that first waited for all the work queued there, twice a training step
    m = torch.as_tensor(mean, dtype=x.dtype, device="cpu").to(x.device, non_blocking=True).view(-1, 1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device="cpu").to(x.device, non_blocking=True).view(-1, 1, 1, 1)
    return (x - m).div_(s)


def denormalize(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """Inverse of :func:`normalize` (for visualising clips)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
    return x * s + m


def to_uint8_cthw(frames, short_side: int | None = None) -> torch.Tensor:
    """Dataset form: ``uint8 (T,H,W,3)`` frames -> ``uint8 (3,T,H',W')`` resized to the short side."""
    if short_side is not None:
        frames = resize_short_side(np.asarray(frames), short_side)
    # from_numpy, as preprocess_uint8: on the CPU, where as_tensor took torch's default device (a
    # user's set_default_device("cuda"), inherited by a forked loader worker, which cannot start it)
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).contiguous()


def preprocess(
    frames,
    short_side: int | None,
    crop: int | None,
    crop_mode: str = "center",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``uint8 (T, H, W, 3)`` frames -> normalised ``float32 (3, T, crop, crop)``.

    ``short_side=None`` keeps the size; ``crop=None`` skips cropping. ``crop_mode="squash"``
    resizes the whole frame to ``crop x crop`` instead (``short_side`` unused).
    """
    return to_model_input(preprocess_uint8(frames, short_side, crop, crop_mode, generator))


def to_model_input(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """uint8 clips (``(..., 3, T, H, W)``, as loaders ship them: a quarter of float32's bytes through
    shared memory and to the device) -> normalised float32, then ``dtype`` (a model held in bf16 or
    fp16, Lightning's ``*-true`` precisions, which cast only floating-point batches); float clips are
    returned as they are."""
    if x.dtype == torch.uint8:
        x = normalize(x.float().div_(255.0))
    return x if dtype is None else x.to(dtype)


def param_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype a model's weights are held in (its inputs must match it outside autocast); None
    for a model without weights."""
    w = next(model.parameters(), None)
    return None if w is None else w.dtype


def preprocess_uint8(
    frames,
    short_side: int | None,
    crop: int | None,
    crop_mode: str = "center",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`preprocess` without the normalisation: ``uint8 (3, T, crop, crop)``
    (:func:`to_model_input` finishes it, bit for bit, wherever the clip is used)."""
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {frames.shape}")
    if crop_mode == SQUASH:
        if crop is None:
            raise ValueError("crop_mode 'squash' needs a crop size")
        frames = squash_resize(frames, crop)
    elif short_side is not None:
        frames = resize_short_side(frames, short_side)
    if crop is not None and crop_mode != SQUASH:
        y, x = crop_box(frames.shape[1], frames.shape[2], crop, crop_mode, generator)
        frames = frames[:, y : y + crop, x : x + crop]
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)
