"""CVRL (Qian et al., CVPR 2021): contrastive video representation learning, paper §3.2.

Two clips of the same video, their start gap drawn from a decreasing density (ssl-recipes §3.1),
each augmented with its own temporally consistent augmentation (blur p 1.0 / 0.1, solarise on clip
2 only), embedded by backbone + projection head, and pulled together with InfoNCE over the global
batch (:func:`moviessl.ssl.losses.info_nce_pairs`).

Optional, off in the paper preset: intra-video negatives (``cvrl.intra_neg``, after IIC: Tao et
al., ACM MM 2020): a copy of one of the two clips with its time axis broken (one frame repeated,
frames shuffled or reversed) is added as a negative for the *other* clip. It has the positive's
exact appearance, so it can only be told from the positive by motion -- the fix for data whose
appearance identifies a video but says nothing about its action (SynthMovies; docs/design.md
"CVRL's appearance shortcut").
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ..errors import BadInputError
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


INTRA_NEG_KINDS = ("repeat", "shuffle", "reverse")


def check_intra_neg(kinds) -> list[str]:
    kinds = list(kinds)
    if not kinds or any(k not in INTRA_NEG_KINDS for k in kinds):
        raise ValueError(f"intra_neg: must be a non-empty subset of {list(INTRA_NEG_KINDS)}, got {kinds}")
    return kinds


def break_time(x: torch.Tensor, kinds, generator: torch.Generator | None = None) -> torch.Tensor:
    """Intra-video negatives of clips ``x`` (B, C, T, H, W): per clip one of ``kinds`` --
    ``repeat`` (one random frame T times: no motion), ``shuffle`` (a random permutation that is not
    the identity: incoherent motion), ``reverse`` (time flipped). Pixels are otherwise unchanged."""
    kinds = check_intra_neg(kinds)
    b, t = x.shape[0], x.shape[2]
    idx = torch.empty(b, t, dtype=torch.long)
    pick = torch.randint(len(kinds), (b,), generator=generator)
    for i in range(b):
        kind = kinds[int(pick[i])]
        if kind == "repeat":
            idx[i] = torch.randint(t, (1,), generator=generator).expand(t)
        elif kind == "reverse":
            idx[i] = torch.arange(t - 1, -1, -1)
        else:
            perm = torch.randperm(t, generator=generator)
            while t > 1 and bool((perm == torch.arange(t)).all()):
                perm = torch.randperm(t, generator=generator)
            idx[i] = perm
    idx = idx.to(x.device).view(b, 1, t, 1, 1).expand(-1, x.shape[1], -1, x.shape[3], x.shape[4])
    return torch.gather(x, 2, idx)


class CVRL(BackboneModule):
    method = "cvrl"

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__(cfg)
        c = self.cfg["cvrl"]
        h = c["head"]
        self.head = ProjectionHead(self.backbone.out_dim, hidden_dim=int(h["hidden_dim"]), out_dim=int(h["out_dim"]),
                                   num_hidden=int(h["num_hidden"]), out_bn=bool(h.get("out_bn", False)))
        self.tau = float(c["tau"])
        self.intra_neg = list(c.get("intra_neg") or [])
        if self.intra_neg:
            try:  # now, not at step 1
                check_intra_neg(self.intra_neg)
            except ValueError as e:
                raise BadInputError("cvrl.intra_neg", str(e).split(": ", 1)[-1]) from None
        self.aug1, self.aug2 = cvrl_view_augmenters(self.cfg)

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        if self.trainer is not None and self.trainer.training:
            v = self.to_float(batch["video"])
            views = augment_views((self.aug1, self.aug2), (v[:, 0], v[:, 1]))
            if self.intra_neg:
                # break the time of one view per video (either, at random) ...
                which = torch.randint(2, (v.shape[0],), device=v.device)
                src = torch.where(which.view(-1, 1, 1, 1, 1) == 1, views[1], views[0])
                views.append(break_time(src, self.intra_neg))
                batch["intra_scorer"] = (1 - which) * v.shape[0] + torch.arange(v.shape[0], device=v.device)  # row in [z1; z2]
            batch["views"] = tuple(views)
        return batch

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        self.note_skipped(batch)
        views = batch["views"]
        b = views[0].shape[0]
        # one forward over all views: BN statistics over 2B (3B) clips, as in SimCLR/CVRL
        z = self.embed(torch.cat(list(views)))
        hard = z[2 * b:] if len(views) > 2 else None
        # ... and let only the *other* view score it: the broken copy then shares the positive's
        # augmentation and differs from it only in time, while to its own source view it is a near
        # copy whose cosine sits at the top of 1 - |d|^2/2, where the gradient vanishes (design.md)
        loss = info_nce_pairs(z[:b], z[b:2 * b], self.tau, hard_neg=hard, hard_for=batch.get("intra_scorer"))
        with torch.no_grad():
            pos_sim = (z[:b].float() * z[b:2 * b].float()).sum(1).mean()
            extra = {}
            if hard is not None:  # similarity of each broken copy to the view that scores it
                zz = torch.cat([z[:b], z[b:2 * b]]).float()[batch["intra_scorer"]]
                extra["intra_sim"] = (zz * hard.float()).sum(1).mean()
        self.log_step(loss, b, pos_sim=pos_sim, **extra)
        return loss
