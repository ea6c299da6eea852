"""CVRL (Qian et al., CVPR 2021): contrastive video representation learning, paper §3.2.

Two clips of the same video, their start gap drawn from a decreasing density
(:func:`moviessl.ssl.data.sample_cvrl_starts`), each augmented with its own temporally consistent
augmentation (blur p 1.0 / 0.1, solarise on clip 2 only), embedded by backbone + projection head,
and pulled together with InfoNCE over the global batch (:func:`moviessl.ssl.losses.info_nce_pairs`).

Optional, off in the paper preset: intra-video negatives (``cvrl.intra_neg``, after IIC: Tao et
al., ACM MM 2020): a copy of one of the two clips with its time axis broken (one frame repeated,
frames shuffled or reversed) is added as a negative for the *other* clip. It has the positive's
exact appearance, so it can only be told from the positive by motion -- the fix for data whose
appearance identifies a video but says nothing about its action (docs/design.md, "CVRL's
appearance shortcut").
"""

from __future__ import annotations

import math

import torch

from ...errors import BadInputError
from ...models.heads import CVRLProjectionHead
from ..augment import augment_views, view_augmenters
from ..base import BackboneModule
from ..config import BackboneConfig
from ..losses import info_nce_pairs
from ..registry import register_method

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
    # the indices are drawn on the CPU (the generator's stream, or the CPU's default one) and moved:
    # on torch's default device (a user's set_default_device("cuda")) a CPU generator was refused,
    # and without one the draws came from the GPU's stream, one small kernel and sync per clip
    cpu = torch.device("cpu")
    idx = torch.empty(b, t, dtype=torch.long, device=cpu)
    pick = torch.randint(len(kinds), (b,), generator=generator, device=cpu)
    for i in range(b):
        kind = kinds[int(pick[i])]
        if kind == "repeat":
            idx[i] = torch.randint(t, (1,), generator=generator, device=cpu).expand(t)
        elif kind == "reverse":
            idx[i] = torch.arange(t - 1, -1, -1, device=cpu)
        else:
            perm = torch.randperm(t, generator=generator, device=cpu)
            while t > 1 and bool((perm == torch.arange(t, device=cpu)).all()):
                perm = torch.randperm(t, generator=generator, device=cpu)
            idx[i] = perm
    # drawn on the host, copied without waiting (a blocking copy first waits for the GPU's queued work)
    idx = idx.to(x.device, non_blocking=True).view(b, 1, t, 1, 1).expand(-1, x.shape[1], -1, x.shape[3], x.shape[4])
    return torch.gather(x, 2, idx)


@register_method("cvrl")
class CVRL(BackboneModule):
    views = "pair"
    pair_sampler = "cvrl"
    config_sections = ("cvrl",)
    batch_negatives = "CVRL's negatives (the other videos of the all-gathered batch)"

    def __init__(self, cfg: BackboneConfig, num_classes: int | None = None):
        super().__init__(cfg)
        c = cfg.cvrl
        self.head = CVRLProjectionHead(
            self.backbone.out_dim,
            hidden_dim=c.head.hidden_dim,
            out_dim=c.head.out_dim,
            num_hidden=c.head.num_hidden,
            out_bn=c.head.out_bn,
        )
        self.tau = c.tau
        self.intra_neg = list(c.intra_neg)
        self.check_config(cfg, None)
        self.aug1, self.aug2 = view_augmenters(cfg)

    @classmethod
    def check_config(cls, cfg: BackboneConfig, global_batch: int | None) -> None:
        if global_batch is not None and global_batch < 2 and not cfg.cvrl.intra_neg:
            # with one video per step its only candidate is its positive: loss and gradient are 0
            raise BadInputError(
                "data.batch_size", f"CVRL needs at least 2 videos per step over all processes, got {global_batch}"
            )
        if cfg.cvrl.intra_neg:
            try:
                check_intra_neg(cfg.cvrl.intra_neg)
            except ValueError as e:
                raise BadInputError("cvrl.intra_neg", str(e).split(": ", 1)[-1]) from None

    def chance_loss(self, global_batch: int) -> float | None:
        # NT-Xent with all rows alike: each of the 2N rows of [z1; z2] spreads over its 2N-1
        # candidates, ln(2N-1) per view, the two views summed; with intra-video negatives half the
        # rows (one per video) score one candidate more. A padded duplicate's masked clips are ignored.
        n = 2 * global_batch
        return math.log(n - 1) + (math.log(n) if self.intra_neg else math.log(n - 1))

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        if self._trainer is not None and self._trainer.training:
            v = self.to_float(batch["video"])
            views = augment_views((self.aug1, self.aug2), (v[:, 0], v[:, 1]))
            if self.intra_neg:
                # break the time of one view per video (either, at random) ...
                which = torch.randint(2, (v.shape[0],), device=v.device)
                src = torch.where(which.view(-1, 1, 1, 1, 1) == 1, views[1], views[0])
                views.append(break_time(src, self.intra_neg))
                batch["intra_scorer"] = (1 - which) * v.shape[0] + torch.arange(
                    v.shape[0], device=v.device
                )  # row in [z1; z2]
            batch["views"] = self.as_weights(views)
        return batch

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        self.note_skipped(batch)
        views = batch["views"]
        b = views[0].shape[0]
        # one forward over all views: BN statistics over 2B (3B) clips, as in SimCLR/CVRL
        z = self.embed(torch.cat(list(views)))
        hard = z[2 * b :] if len(views) > 2 else None
        # ... and let only the *other* view score it: the broken copy then shares the positive's
        # augmentation and differs from it only in time, while to its own source view it is a near
        # copy whose cosine sits at the top of 1 - |d|^2/2, where the gradient vanishes (design.md)
        loss = info_nce_pairs(
            z[:b], z[b : 2 * b], self.tau, hard_neg=hard, hard_for=batch.get("intra_scorer"), ids=batch.get("index")
        )
        with torch.no_grad():
            pos_sim = (z[:b].float() * z[b : 2 * b].float()).sum(1).mean()
            extra = {}
            if hard is not None:  # similarity of each broken copy to the view that scores it
                zz = torch.cat([z[:b], z[b : 2 * b]]).float()[batch["intra_scorer"]]
                extra["intra_sim"] = (zz * hard.float()).sum(1).mean()
        self.log_step(loss, b, pos_sim=pos_sim, **extra)
        return loss
