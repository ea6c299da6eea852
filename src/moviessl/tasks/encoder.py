"""The visual side every task shares: the events of a clip -> event tokens.

``EventEncoder`` = optional backbone (end-to-end from clips) -> optional TxE contextualizer.

- features in, no TxE (``--contextualizer none``): the tokens are the backbone features themselves;
- TxE from scratch (``scratch``) or MaskPred-pretrained (``--contextualizer CKPT``), fine-tuned with
  the task: the tokens are the TxE outputs, each already carrying context from the other events;
- clips in (``--videos`` + ``--backbone``): Slow-D runs on each event's 16x4 clip first.

Sub-modules are rebuilt from ``arch`` specs (moviessl.checkpoint) so a task checkpoint needs no
training code to load.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..checkpoint import build_arch


class EventEncoder(nn.Module):
    """``forward(x) -> (B, 5, out_dim)`` from features ``(B,5,D)`` or clips ``(B,5,3,T,H,W)``."""

    def __init__(self, in_dim: int, backbone: nn.Module | None = None, txe: nn.Module | None = None):
        super().__init__()
        self.in_dim, self.backbone, self.txe = in_dim, backbone, txe
        self.out_dim = txe.dim if txe is not None else in_dim
        # Without a TxE the heads read backbone features directly. Pooled post-ReLU features share a
        # large common component (per-dim std << mean), which stalls an MLP head; standardise them
        # with running statistics (BatchNorm without affine, as in linear-probe protocols). A TxE
        # has its own input LayerNorm and was pretrained on raw features, so it gets them raw.
        self.standardize = nn.BatchNorm1d(in_dim, affine=False) if txe is None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone is not None:
            B, E = x.shape[:2]
            x = self.backbone(x.flatten(0, 1)).view(B, E, -1)
        if self.txe is not None:
            return self.txe(x)
        return self.standardize(x.flatten(0, 1)).view_as(x)


def build_encoder(
    in_dim: int, backbone_arch: Mapping[str, Any] | None = None, txe_arch: Mapping[str, Any] | None = None
) -> EventEncoder:
    backbone = build_arch(backbone_arch) if backbone_arch else None
    txe = build_arch(txe_arch) if txe_arch else None
    return EventEncoder(in_dim, backbone, txe)
