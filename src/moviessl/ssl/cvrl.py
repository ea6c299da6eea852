"""CVRL (Qian et al., CVPR 2021): contrastive video representation learning, paper §3.2.

Two clips of the same video, their start gap drawn from a decreasing density (ssl-recipes §3.1),
each augmented with its own temporally consistent augmentation (blur p 1.0 / 0.1, solarise on clip
2 only), embedded by backbone + projection head, and pulled together with InfoNCE over the global
batch (:func:`moviessl.ssl.losses.info_nce_pairs`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from .backbone import BackboneModule, augment_views, cvrl_view_augmenters
from .heads import ProjectionHead
from .losses import info_nce_pairs


def cvrl_gap(m: int, u: float, power: float = 1.0) -> int:
    """Start-to-start gap in [0, m] by inverse CDF of f(k) = (p+1)/(p m) (1 - (k/m)^p).

    p = 1 has the closed form ``m (1 - sqrt(1 - u))`` (mean m/3); other powers bisect
    F(k) = -k^(p+1)/(p m^(p+1)) + k (p+1)/(p m) = u to under one frame, as the reference does."""
    if m <= 0:
        return 0
    if power == 1.0:
        return int(np.floor(m * (1.0 - np.sqrt(1.0 - u))))
    p = float(power)
    F = lambda k: -(k ** (p + 1)) / (p * m ** (p + 1)) + k * (p + 1) / (p * m)  # noqa: E731
    lo, hi = 0.0, float(m)
    while hi - lo > 1.0:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if F(mid) < u else (lo, mid)
    return int(np.floor(lo))


def sample_cvrl_starts(total: int, num_frames: int, stride: int, power: float = 1.0,
                       rng: np.random.Generator | None = None) -> tuple[int, int, bool]:
    """Start frames of CVRL's two clips on a ``total``-frame timeline, in random order.

    Returns ``(start_a, start_b, wrap)``. ``M = total - (n-1) s`` is the largest start; when the video
    is shorter than one clip (``total <= (n-1) s``) both starts are independent uniform draws and
    ``wrap`` tells the caller to tile the video (indices modulo ``total``)."""
    rng = rng if rng is not None else np.random.default_rng()
    span = (num_frames - 1) * stride
    if total <= span:
        return int(rng.integers(0, total)), int(rng.integers(0, total)), True
    m = total - span
    gap = cvrl_gap(m, float(rng.random()), power)
    first = int(rng.integers(0, m - gap)) if m - gap > 0 else 0
    a, b = first, first + gap
    if rng.random() < 0.5:
        a, b = b, a
    return a, b, False


class CVRL(BackboneModule):
    method = "cvrl"

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__(cfg)
        c = self.cfg["cvrl"]
        h = c["head"]
        self.head = ProjectionHead(self.backbone.out_dim, hidden_dim=int(h["hidden_dim"]), out_dim=int(h["out_dim"]),
                                   num_hidden=int(h["num_hidden"]), out_bn=bool(h.get("out_bn", False)))
        self.tau = float(c["tau"])
        self.aug1, self.aug2 = cvrl_view_augmenters(self.cfg)

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        if self.trainer is not None and self.trainer.training:
            v = self.to_float(batch["video"])
            batch["views"] = tuple(augment_views((self.aug1, self.aug2), (v[:, 0], v[:, 1])))
        return batch

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        self.note_skipped(batch)
        v1, v2 = batch["views"]
        b = v1.shape[0]
        # one forward over both views: BN statistics over 2B clips, as in SimCLR/CVRL
        z = self.embed(torch.cat([v1, v2]))
        loss = info_nce_pairs(z[:b], z[b:], self.tau)
        with torch.no_grad():
            pos_sim = (z[:b].float() * z[b:].float()).sum(1).mean()
        self.log_step(loss, b, pos_sim=pos_sim)
        return loss
