"""MoDist / MaCLR (Xiao, Tighe, Modolo 2021): motion distillation into the visual backbone, paper §3.2.

Two pathways: the visual Slow-D and a 1/8-width Slow-D on optical flow (16 flow frames at stride 4,
:mod:`.flow`). Each has a MoDist head (Linear-ReLU-Linear, L2-norm) and a momentum (0.999) key copy;
keys go into one FIFO queue per modality (:class:`.queue.MemoryQueue`, 65536 at paper scale). Per
step, for the two clips A, B of each video (0.5-10 s apart)::

    L = w_visual * L_vv                    # q_v(A) vs k_v(B), negatives: visual queue (and A<->B)
      + w_cross  * (L_vf + L_fv) / 2       # q_v(A) vs k_f(A), flow queue; q_f(A) vs k_v(A), visual queue
      + w_flow   * L_ff                    # flow-flow, off by default (MaCLR release)

each term :func:`.losses.info_nce_queue` with tau = 0.1. Which of these are confirmed by the MoDist
release and which are our choices: docs/design.md, "### ssl (backbone pretraining)".
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import BackboneModule, augment_views, cvrl_view_augmenters
from .flow import normalize_flow
from .heads import MoDistHead
from .losses import info_nce_queue
from .queue import MemoryQueue


def flow_augment(x: torch.Tensor, out_size: int, area=(0.3, 1.0), aspect=(0.5, 2.0), flip_p: float = 0.5,
                 negate_dx_on_flip: bool = True, box: torch.Tensor | None = None,
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Batched, temporally consistent random resized crop + flip of flow clips.

    ``x``: uint8-valued (B,3,T,H,W) encoded flow -> float (B,3,T,S,S) network input. A horizontal flip
    of a flow field also reverses its x component, so channel 0 (dx, 128 = still) is mirrored too.
    ``box`` (B,4) = (top, left, height, width) as fractions of the frame and ``flip`` (B,) bool give
    the crop instead of drawing one (MoDist here crops a clip's flow like its RGB view, see
    :class:`MoDist`)."""
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
    if negate_dx_on_flip and flip.any():
        out[flip, 0] = 1.0 - out[flip, 0]
    return normalize_flow(out * 255.0)


@torch.no_grad()
def momentum_update(key: nn.Module, query: nn.Module, m: float) -> None:
    """theta_k <- m theta_k + (1 - m) theta_q (MoCo); buffers (BN statistics) are copied."""
    for pk, pq in zip(key.parameters(), query.parameters()):
        pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)
    for bk, bq in zip(key.buffers(), query.buffers()):
        bk.copy_(bq)


class MoDist(BackboneModule):
    method = "modist"

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__(cfg)
        from ..models.slowd import build_slowd

        c = self.cfg["modist"]
        fn = c["flow_net"]
        self.flow_net = build_slowd(str(fn.get("preset") or self.cfg["model"]["preset"]),
                                    width_factor=float(fn["width_factor"]), **dict(fn.get("overrides") or {}))
        h = c["head"]
        bn = bool(h.get("bn", False))
        self.v_head = MoDistHead(self.backbone.out_dim, int(h["hidden_dim"]), int(h["out_dim"]), bn=bn)
        self.f_head = MoDistHead(self.flow_net.out_dim, int(h["hidden_dim"]), int(h["out_dim"]), bn=bn)
        # key encoders: momentum copies, never trained by gradient
        self.v_key = nn.ModuleDict(dict(net=copy.deepcopy(self.backbone), head=copy.deepcopy(self.v_head)))
        self.f_key = nn.ModuleDict(dict(net=copy.deepcopy(self.flow_net), head=copy.deepcopy(self.f_head)))
        for p in list(self.v_key.parameters()) + list(self.f_key.parameters()):
            p.requires_grad_(False)
        self.v_queue = MemoryQueue(int(c["queue_size"]), int(h["out_dim"]), require_divisible=True, track_ids=True)
        self.f_queue = MemoryQueue(int(c["queue_size"]), int(h["out_dim"]), require_divisible=True, track_ids=True)
        self.tau, self.m = float(c["tau"]), float(c["momentum"])
        self.w_visual, self.w_cross, self.w_flow = float(c["w_visual"]), float(c["w_cross"]), float(c["w_flow"])
        self.flow_crop = int(c.get("flow_crop") or self.cfg["data"]["crop"])
        self.flow_mode = str(self.cfg["flow"]["mode"])
        self.align_crops = bool(c.get("align_crops", True))
        self.aug1, self.aug2 = cvrl_view_augmenters(self.cfg)

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        if self.trainer is not None and self.trainer.training:
            v = self.to_float(batch["video"])
            views, p = augment_views((self.aug1, self.aug2), (v[:, 0], v[:, 1]), return_params=True)
            batch["views"] = tuple(views)
            fl = batch["flow"]
            neg = self.flow_mode == "raw"
            b, h, w = v.shape[0], v.shape[-2], v.shape[-1]
            boxes, flips = (None, None), (None, None)
            if self.align_crops:  # the flow of clip i is cropped and flipped like its RGB view
                box = p["box"].float() / torch.tensor([h, w, h, w], dtype=torch.float32, device=p["box"].device)
                boxes, flips = box.split(b), p["flip"].split(b)
            batch["flows"] = tuple(flow_augment(fl[:, i], self.flow_crop, negate_dx_on_flip=neg, box=boxes[i], flip=flips[i])
                                   for i in range(2))
        return batch

    @staticmethod
    def _swap(k: torch.Tensor) -> torch.Tensor:
        b = k.shape[0] // 2
        return torch.cat([k[b:], k[:b]])

    @torch.no_grad()
    def _keys(self, enc: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
        # BN over a random half of the batch at a time: the key of a clip is not normalised with the
        # same batch statistics as its query (single-process stand-in for MoCo's shuffle BN)
        perm = torch.randperm(x.shape[0], device=x.device)
        chunks = [enc["head"](enc["net"](x[p])) for p in perm.chunk(2)]
        k = torch.empty(x.shape[0], chunks[0].shape[1], device=x.device, dtype=chunks[0].dtype)
        k[perm] = torch.cat(chunks)
        return k.float()

    def training_step(self, batch, batch_idx):
        self.note_skipped(batch)
        (v1, v2), (f1, f2) = batch["views"], batch["flows"]
        b = v1.shape[0]
        x_v, x_f = torch.cat([v1, v2]), torch.cat([f1, f2])
        q_v = self.v_head(self.backbone(x_v))
        q_f = self.f_head(self.flow_net(x_f))
        momentum_update(self.v_key["net"], self.backbone, self.m)
        momentum_update(self.v_key["head"], self.v_head, self.m)
        momentum_update(self.f_key["net"], self.flow_net, self.m)
        momentum_update(self.f_key["head"], self.f_head, self.m)
        k_v, k_f = self._keys(self.v_key, x_v), self._keys(self.f_key, x_f)
        neg_v, neg_f = self.v_queue.get(), self.f_queue.get()
        # a video's own older keys are not negatives (the queue may span much of a small dataset)
        ids = batch["index"].repeat(2)
        vid, fid = self.v_queue.get_ids(), self.f_queue.get_ids()
        l_vv = info_nce_queue(q_v, self._swap(k_v), neg_v, self.tau, ids, vid)
        l_vf = info_nce_queue(q_v, k_f, neg_f, self.tau, ids, fid)
        l_fv = info_nce_queue(q_f, k_v, neg_v, self.tau, ids, vid)
        loss = self.w_visual * l_vv + self.w_cross * 0.5 * (l_vf + l_fv)
        extra = dict(l_vv=l_vv, l_vf=l_vf, l_fv=l_fv)
        if self.w_flow:
            l_ff = info_nce_queue(q_f, self._swap(k_f), neg_f, self.tau, ids, fid)
            loss = loss + self.w_flow * l_ff
            extra["l_ff"] = l_ff
        # after the loss, as MoCo: this step's keys become negatives for the next steps
        self.v_queue.enqueue(k_v, ids)
        self.f_queue.enqueue(k_f, ids)
        self.log_step(loss, b, **extra)
        return loss
