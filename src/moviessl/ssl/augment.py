"""Augmentation recipes of the backbone methods, batched on the device after transfer.

- CVRL's asymmetric views (Qian et al., CVPR 2021, §3.2): clip 1 always blurred, clip 2 rarely
  blurred but sometimes solarised (:func:`view_augmenters`); also MoDist's visual views.
- PySlowFast's supervised recipe: crop + flip only (:func:`crop_flip_augmenter`).
- :func:`augment_views`: several views through one batched call (parameters drawn per view).
- :func:`flow_augment`: crop + flip of flow clips, mirroring dx on a flip.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError
from ..video import ConsistentAugment, cvrl_augment_pair
from ..video.augment import CROP_SAMPLERS, OP_STYLES, to_device
from .config import BackboneConfig
from .flow import normalize_flow

FRAME_CROPS = ("square", "full")


def _check_augment_settings(cfg: BackboneConfig) -> None:
    if cfg.data.frame_crop not in FRAME_CROPS:
        raise BadInputError("data.frame_crop", f"unknown value {cfg.data.frame_crop!r} ({' | '.join(FRAME_CROPS)})")
    if cfg.augment.crop_sampler not in CROP_SAMPLERS:
        raise BadInputError(
            "augment.crop_sampler", f"unknown value {cfg.augment.crop_sampler!r} ({' | '.join(CROP_SAMPLERS)})"
        )
    if cfg.augment.op_style not in OP_STYLES:
        raise BadInputError("augment.op_style", f"unknown value {cfg.augment.op_style!r} ({' | '.join(OP_STYLES)})")


def augment_kwargs(cfg: BackboneConfig) -> dict:
    """The ``augment`` block for the batched augmenters. With ``data.frame_crop: full`` the dataset has
    drawn the random resized crop on the whole frame already, so the batched one keeps the whole clip."""
    _check_augment_settings(cfg)
    kw = dataclasses.asdict(cfg.augment)
    if cfg.data.frame_crop == "full":
        kw.update(area=(1.0, 1.0), aspect=(1.0, 1.0))
    return kw


def dataset_crop_boxes(cfg: BackboneConfig, flow_size: int | None = None, align: bool = True) -> dict | None:
    """``ClipDataset``'s ``crop_boxes`` for ``data.frame_crop: full`` (None for ``square``)."""
    _check_augment_settings(cfg)
    if cfg.data.frame_crop == "square":
        return None
    a = cfg.augment
    return dict(
        size=cfg.data.crop,
        area=tuple(a.area),
        aspect=tuple(a.aspect),
        sampler=a.crop_sampler,
        attempts=100,
        flow_size=flow_size,
        align=align,
    )


def view_augmenters(cfg: BackboneConfig) -> tuple[ConsistentAugment, ConsistentAugment]:
    """CVRL's two view augmenters with the ``augment`` block's ranges and strengths."""
    return cvrl_augment_pair(cfg.data.crop, **augment_kwargs(cfg))


def crop_flip_augmenter(cfg: BackboneConfig, blur_p: float = 0.0) -> ConsistentAugment:
    """Random resized crop + flip (+ optional blur), no colour jitter or grayscale."""
    kw = {**augment_kwargs(cfg), "jitter_p": 0.0, "gray_p": 0.0}
    return ConsistentAugment(cfg.data.crop, blur_p=blur_p, solarize_p=0.0, **kw)


def augment_views(augs: Sequence[nn.Module], views: Sequence[torch.Tensor], return_params: bool = False):
    """Augment several views in one batched call: parameters are drawn per view by its own
    augmenter (CVRL's blur/solarise asymmetry), then applied to all clips at once, which on CPU
    costs much less than one call per view. ``return_params`` also returns the drawn parameters
    (concatenated over views), e.g. to crop another modality with the same boxes."""
    b, _, _, h, w = views[0].shape
    ps = [a.sample_params(b, h, w) for a in augs]
    host = {k: torch.cat([q[k] for q in ps]) for k in ps[0]}
    p = to_device(host, views[0].device)
    out = list(augs[0].apply_params(torch.cat(list(views)), p, host=host).split(b))
    return (out, p) if return_params else out


def flow_augment(
    x: torch.Tensor,
    out_size: int,
    area=(0.3, 1.0),
    aspect=(0.5, 2.0),
    flip_p: float = 0.5,
    negate_dx_on_flip: bool = True,
    box: torch.Tensor | None = None,
    flip: torch.Tensor | None = None,
    flow_input: str = "centred",
) -> torch.Tensor:
    """Batched, temporally consistent random resized crop + flip of flow clips.

    ``x``: uint8-valued (B,3,T,H,W) encoded flow -> float (B,3,T,S,S) network input. A horizontal flip
    of a flow field also reverses its x component, so channel 0 (dx, 128 = still) is mirrored too.
    ``box`` (B,4) = (top, left, height, width) as fractions of the frame and ``flip`` (B,) bool give
    the crop instead of drawing one (MoDist crops a clip's flow like its RGB view). ``flow_input``:
    :func:`moviessl.ssl.flow.normalize_flow`'s mode."""
    b, c, t, h, w = x.shape
    dev = x.device
    xf = x.float().div(255.0)
    if box is None:
        s = torch.empty(b, device=dev).uniform_(*area)
        r = torch.exp(torch.empty(b, device=dev).uniform_(math.log(aspect[0]), math.log(aspect[1])))
        sw, sh = torch.sqrt(s * r).clamp(max=1.0), torch.sqrt(s / r).clamp(max=1.0)
        tx, ty = (torch.rand(b, device=dev) * 2 - 1) * (1 - sw), (torch.rand(b, device=dev) * 2 - 1) * (1 - sh)
    else:
        y0, x0, sh, sw = box.to(dev, torch.float32).unbind(1)
        tx, ty = 2 * x0 + sw - 1, 2 * y0 + sh - 1
    if flip is None:
        flip = torch.rand(b, device=dev) < flip_p
    flip = flip.to(dev)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = torch.where(flip, -sw, sw)
    theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = tx, sh, ty
    grid = F.affine_grid(theta, (b, c * t, out_size, out_size), align_corners=False)
    out = F.grid_sample(xf.reshape(b, c * t, h, w), grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out.view(b, c, t, out_size, out_size)
    if negate_dx_on_flip:  # a where, not out[flip]: no count of the flipped clips read on the host each step
        out[:, 0] = torch.where(flip.view(-1, 1, 1, 1), 1.0 - out[:, 0], out[:, 0])
    return normalize_flow(out * 255.0, flow_input)
