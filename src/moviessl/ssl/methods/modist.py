"""MoDist / MaCLR (Xiao, Tighe & Modolo, arXiv 2106.09703): motion distillation into the visual
backbone, paper §3.2.

Two pathways: the visual Slow-D and a narrower Slow-D on optical flow (16 flow frames at stride 4,
:mod:`moviessl.ssl.flow`). Each has a MoDist head (Linear-ReLU-Linear, L2-norm) and a momentum
(0.999) key copy; keys go into one FIFO queue per modality (:class:`~moviessl.ssl.queue.MemoryQueue`,
65536 at paper scale). Per step, for the two clips A, B of each video (0.5-10 s apart)::

    L = w_visual * L_vv                    # q_v(A) vs k_v(B), negatives: visual queue (and A<->B)
      + w_cross  * (L_vf + L_fv) / 2       # q_v(A) vs k_f(A), flow queue; q_f(A) vs k_v(A), visual queue
      + w_flow   * L_ff                    # flow-flow, off by default (MaCLR release)

each term :func:`~moviessl.ssl.losses.info_nce_queue` with tau = 0.1. Which of these the MaCLR
release (``amazon-science/self-supervised-maclr``, ``slowfast/config/defaults.py``) confirms and
which are our choices: docs/design.md, "MoDist -- confirmed vs chosen".
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ...errors import BadInputError
from ...models.heads import MoDistProjectionHead
from ...models.slowd import build_slowd
from ..augment import augment_views, flow_augment, view_augmenters
from ..base import BackboneModule
from ..config import BackboneConfig
from ..flow import FLOW_INPUTS
from ..losses import info_nce_queue
from ..queue import MemoryQueue
from ..registry import register_method


@torch.no_grad()
def momentum_update(key: nn.Module, query: nn.Module, m: float) -> None:
    """theta_k <- m theta_k + (1 - m) theta_q (MoCo); buffers (BN statistics) are copied."""
    for pk, pq in zip(key.parameters(), query.parameters()):
        pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)
    for bk, bq in zip(key.buffers(), query.buffers()):
        bk.copy_(bq)


@register_method("modist")
class MoDist(BackboneModule):
    views = "pair"
    pair_sampler = "shift"
    needs_flow = True
    config_sections = ("modist", "flow")
    step_cost = 1.55  # a second (flow) network and momentum encoders
    setup_cost_s = 190.0  # the flow cache of every training clip, computed once

    def __init__(self, cfg: BackboneConfig, num_classes: int | None = None):
        super().__init__(cfg)
        c = cfg.modist
        self.flow_net = build_slowd(
            c.flow_net.preset or cfg.model.preset, width_factor=c.flow_net.width_factor, **dict(c.flow_net.overrides)
        )
        self.v_head = MoDistProjectionHead(self.backbone.out_dim, c.head.hidden_dim, c.head.out_dim, bn=c.head.bn)
        self.f_head = MoDistProjectionHead(self.flow_net.out_dim, c.head.hidden_dim, c.head.out_dim, bn=c.head.bn)
        # key encoders: momentum copies, never trained by gradient
        self.v_key = nn.ModuleDict(dict(net=copy.deepcopy(self.backbone), head=copy.deepcopy(self.v_head)))
        self.f_key = nn.ModuleDict(dict(net=copy.deepcopy(self.flow_net), head=copy.deepcopy(self.f_head)))
        for p in list(self.v_key.parameters()) + list(self.f_key.parameters()):
            p.requires_grad_(False)
        self.v_queue = MemoryQueue(c.queue_size, c.head.out_dim, require_divisible=True, track_ids=True)
        self.f_queue = MemoryQueue(c.queue_size, c.head.out_dim, require_divisible=True, track_ids=True)
        self.tau, self.m = c.tau, c.momentum
        self._keys_step = -1  # the optimizer step the key encoders were last moved at
        self.w_visual, self.w_cross, self.w_flow = c.w_visual, c.w_cross, c.w_flow
        self.flow_crop = c.flow_crop
        self.negate_dx = cfg.flow.mode == "raw"
        self.align_crops = c.align_crops
        # a flow clip's own crop (align_crops off) is drawn as its RGB view's: the augment block's
        # ranges and flip probability, not flow_augment's defaults
        a = cfg.augment
        self.flow_crop_kw = dict(area=tuple(a.area), aspect=tuple(a.aspect), flip_p=a.flip_p)
        self.dataset_crops = cfg.data.frame_crop == "full"
        if c.flow_input not in FLOW_INPUTS:
            raise BadInputError("modist.flow_input", f"unknown value {c.flow_input!r} ({' | '.join(FLOW_INPUTS)})")
        self.flow_input = c.flow_input
        self.aug1, self.aug2 = view_augmenters(cfg)

    def on_init_loaded(self, loaded: set[str]) -> None:
        # a checkpoint without this method's key encoders (a model.pt, a CVRL run): keys = queries, as at init
        for name, (net, head) in (("v_key", (self.backbone, self.v_head)), ("f_key", (self.flow_net, self.f_head))):
            for part, query in (("net", net), ("head", head)):
                if not any(k.startswith(f"{name}.{part}.") for k in loaded):
                    getattr(self, name)[part].load_state_dict(query.state_dict())
        # queued keys keep their embeddings, but their video ids index the earlier run's data: no key
        # may count as the same video as a query of this run
        for q in (self.v_queue, self.f_queue):
            q.ids.fill_(-1)  # both queues track ids (__init__)

    @classmethod
    def check_config(cls, cfg: BackboneConfig, global_batch: int | None) -> None:
        if cfg.flow.short_side > cfg.data.short_side:
            # flow is computed from the dataset's frames (at data.short_side): it would come from
            # upsampled frames, and be cached under the same name as flow made from sharp ones
            raise BadInputError(
                "flow.short_side",
                f"{cfg.flow.short_side} is above data.short_side={cfg.data.short_side}: flow is computed from the "
                "frames at data.short_side (lower flow.short_side or raise data.short_side)",
            )
        if cfg.modist.head.bn and cfg.data.batch_size < 2:
            # the key encoders normalise each half of a process's 2B clips on its own (_keys)
            raise BadInputError(
                "data.batch_size", "MoDist with modist.head.bn needs at least 2 videos per process, got 1"
            )
        keys = 2 * global_batch if global_batch else None  # both clips of every video are enqueued
        if keys and cfg.modist.queue_size % keys:
            raise BadInputError(
                "modist.queue_size",
                f"{cfg.modist.queue_size} is not a multiple of the global number of keys per step 2 x {global_batch}",
            )

    def chance_loss(self, global_batch: int) -> float | None:
        # every term scores its positive key and the K queued keys alike: ln(K + 1) each, summed with
        # the terms' weights (the two cross-modal terms averaged). At most: a video's own queued keys
        # are left out of its candidates.
        return (self.w_visual + self.w_cross + self.w_flow) * math.log(self.v_queue.size + 1)

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        if self._trainer is not None and self._trainer.training:
            v = self.to_float(batch["video"])
            views, p = augment_views((self.aug1, self.aug2), (v[:, 0], v[:, 1]), return_params=True)
            batch["views"] = self.as_weights(views)
            fl = batch["flow"]
            b, h, w = v.shape[0], v.shape[-2], v.shape[-1]
            boxes, flips = (None, None), (None, None)
            if self.align_crops:  # the flow of clip i is cropped and flipped like its RGB view
                hw = torch.tensor([h, w, h, w], dtype=torch.float32, device="cpu")
                hw = hw.to(p["box"].device, non_blocking=True)
                box = p["box"].float() / hw  # (a tensor made on the device was a blocking copy)
                boxes, flips = box.split(b), p["flip"].split(b)
            elif self.dataset_crops:  # the dataset cropped the flow (its own box): only flip it here
                # made on the host and copied without waiting (made on the device it was a blocking copy)
                whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device="cpu").to(fl.device, non_blocking=True)
                whole = whole.expand(b, 4)
                boxes = (whole, whole)
            batch["flows"] = self.as_weights(
                flow_augment(
                    fl[:, i],
                    self.flow_crop,
                    **self.flow_crop_kw,
                    negate_dx_on_flip=self.negate_dx,
                    box=boxes[i],
                    flip=flips[i],
                    flow_input=self.flow_input,
                )
                for i in range(2)
            )
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
        if self.global_step != self._keys_step:
            # once per optimizer step, as MoCo's per iteration: under gradient accumulation the query
            # nets are the same for every micro-batch, and an update per micro-batch made the keys'
            # momentum m ** accumulate_grad_batches
            self._keys_step = self.global_step
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
