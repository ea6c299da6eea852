"""RoIAlign (He et al., Mask R-CNN, ICCV 2017) on ``torch.nn.functional.grid_sample``, and the
RoI head pooling PySlowFast's AVA detector uses (the features LVU's Object Transformer reads).

No torchvision here: :func:`roi_align` reproduces ``torchvision.ops.roi_align`` with a fixed
``sampling_ratio`` (>= 1): each of the ``out_h x out_w`` bins averages ``sampling_ratio²``
bilinear samples placed at the centres of a regular sub-grid of the bin. ``aligned=True`` shifts
boxes by half a pixel (pixel centres at integer + 0.5 in box coordinates, Detectron2's fix), as
PySlowFast's ``ROIAlign(..., aligned=True)``. Out of range samples follow torchvision: a sample
within one pixel outside the map reads the border pixel, farther out it is 0.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def roi_align(
    fmap: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> torch.Tensor:
    """``fmap`` (B, C, H, W), ``rois`` (K, 5) rows ``[batch_index, x1, y1, x2, y2]`` in input
    coordinates (multiplied by ``spatial_scale`` to reach the map) -> (K, C, out_h, out_w). Batch
    indices outside ``[0, B)`` or not whole are a ``ValueError`` for ``rois`` on the host; on an
    accelerator they are the caller's to keep in range."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if sampling_ratio < 1:
        raise ValueError("sampling_ratio must be >= 1 (the adaptive ratio is not supported)")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be (K, 5) [batch_index, x1, y1, x2, y2], got {tuple(rois.shape)}")
    K = rois.shape[0]
    B, C, H, W = fmap.shape
    if K == 0:
        return fmap.new_zeros(0, C, out_h, out_w)
    b = rois[:, 0]
    # a negative index picked a map from the end (Python's rule), a fractional one was truncated, one
    # past B an IndexError (torchvision reads outside the batch). Checked where it costs nothing: on an
    # accelerator the check would make the host wait for the device every batch (the extractor's
    # indices are made on the host, in range)
    if rois.device == torch.device("cpu") and bool(((b < 0) | (b >= B) | (b != b.floor())).any()):
        raise ValueError(f"rois' batch indices must be whole numbers in [0, {B}), got {b.tolist()[:8]}")
    sr = int(sampling_ratio)
    rois = rois.to(fmap.dtype)
    off = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * spatial_scale - off, rois[:, 2] * spatial_scale - off
    x2, y2 = rois[:, 3] * spatial_scale - off, rois[:, 4] * spatial_scale - off
    w, h = x2 - x1, y2 - y1
    if not aligned:  # the legacy RoIAlign forces boxes to at least one pixel
        w, h = w.clamp(min=1.0), h.clamp(min=1.0)
    # sample i of a row sits at (i + 0.5) / sr bins from the box's edge: bin j, sub-sample s
    steps_x = (torch.arange(out_w * sr, device=fmap.device, dtype=fmap.dtype) + 0.5) / sr
    steps_y = (torch.arange(out_h * sr, device=fmap.device, dtype=fmap.dtype) + 0.5) / sr
    xs = x1[:, None] + steps_x[None] * (w / out_w)[:, None]  # (K, out_w*sr), pixel-index coordinates
    ys = y1[:, None] + steps_y[None] * (h / out_h)[:, None]
    # grid_sample with align_corners=False puts pixel i's centre at (2i + 1) / size - 1;
    # padding "border" clamps to [0, size - 1] (torchvision's rule inside [-1, size])
    gx = (2 * xs + 1) / W - 1
    gy = (2 * ys + 1) / H - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (K, oh*sr, ow*sr, 2)
    out = F.grid_sample(
        fmap[rois[:, 0].long()], grid, mode="bilinear", padding_mode="border", align_corners=False
    )  # (K, C, oh*sr, ow*sr)
    valid = ((ys >= -1) & (ys <= H))[:, :, None] & ((xs >= -1) & (xs <= W))[:, None, :]
    out = out * valid[:, None].to(out.dtype)
    return F.avg_pool2d(out, sr) if sr > 1 else out


def roi_features(
    fmap: torch.Tensor,
    boxes: torch.Tensor,
    batch_index: torch.Tensor,
    resolution: int = 7,
    sampling_ratio: int = 2,
    pool: str = "max",
) -> torch.Tensor:
    """PySlowFast's ``ResNetRoIHead`` pooling of a res5 map: temporal average, RoIAlign of each box
    (normalised ``[x1, y1, x2, y2]`` in [0, 1] of the frame), then a spatial ``max`` (or ``avg``)
    over the ``resolution²`` bins. ``fmap`` (B, C, T, H, W) or (B, C, H, W) -> (K, C)."""
    if fmap.dim() == 5:
        fmap = fmap.mean(2)
    _, _, H, W = fmap.shape
    scale = boxes.new_tensor([W, H, W, H])
    rois = torch.cat([batch_index.to(boxes.dtype)[:, None], boxes * scale], dim=1)
    if pool not in ("max", "avg"):
        raise ValueError(f"pool must be max or avg, got {pool!r}")
    r = roi_align(fmap, rois, resolution, 1.0, sampling_ratio, aligned=True)
    return r.amax(dim=(2, 3)) if pool == "max" else r.mean(dim=(2, 3))
