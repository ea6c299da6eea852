"""The visual side every task shares: the events of a clip -> event tokens.

``EventEncoder`` = optional backbone (end-to-end from clips) -> optional TxE contextualizer.

- features in, no TxE (``--contextualizer none``): the tokens are the backbone features themselves;
- TxE from scratch (``scratch``) or MaskPred-pretrained (``--contextualizer CKPT``), fine-tuned with
  the task: the tokens are the TxE outputs, each already carrying context from the other events;
- clips in (``--videos`` + ``--backbone``): Slow-D runs on each event's 16x4 clip first.

Every path standardises its input features with fixed statistics of the training features
(:class:`~moviessl.models.txe.Standardize`, computed once): the heads without a TxE here, a TxE in
its own ``input_norm`` -- set from the task's train features for a scratch TxE, kept from
pretraining for a MaskPred TxE (the statistics it was pretrained with). Sub-modules are rebuilt from
``arch`` specs (moviessl.checkpoint) so a task checkpoint needs no training code to load.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..checkpoint import build_arch
from ..models.txe import Standardize
from ..video.transforms import param_dtype, to_model_input


class EventEncoder(nn.Module):
    """``forward(x) -> (B, 5, out_dim)`` from features ``(B,5,D)`` or clips ``(B,5,3,T,H,W)``."""

    def __init__(
        self, in_dim: int, backbone: nn.Module | None = None, txe: nn.Module | None = None, input_norm: str = "fixed"
    ):
        super().__init__()
        if input_norm not in ("fixed", "batch"):
            raise ValueError(f"input_norm must be 'fixed' or 'batch', got {input_norm!r}")
        self.in_dim, self.backbone, self.txe = in_dim, backbone, txe
        self.out_dim = txe.dim if txe is not None else in_dim
        # "batch": how heads were fed before fixed statistics (BatchNorm without affine on the heads'
        # path, raw features into a TxE) -- kept only to measure what the fix changed (docs/results.md)
        if txe is not None:
            self.standardize = None  # a TxE has its own
        else:
            self.standardize = Standardize(in_dim) if input_norm == "fixed" else nn.BatchNorm1d(in_dim, affine=False)

    def set_input_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Fix the input statistics to the training features' (heads without a TxE, scratch TxEs; a
        pretrained TxE keeps the statistics it was pretrained with, so do not call this for one)."""
        norm = self.txe.input_norm if self.txe is not None else self.standardize
        if isinstance(norm, Standardize):
            norm.set_stats(mean, var)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of clips ``(B,E,3,T,H,W)``, or the input features themselves -- also
        those ``(B,E,D)`` a frozen backbone gave the clips once, computed before training (a verb
        run with ``verb.backbone_lr_scale=0``, :func:`moviessl.tasks.vidsitu.runner.cache_frozen_clips`)."""
        if self.backbone is None or x.dim() == 3:
            return x
        B, E = x.shape[:2]
        return self.backbone(to_model_input(x, param_dtype(self.backbone)).flatten(0, 1)).view(B, E, -1)

    def forward(self, x: torch.Tensor, with_inputs: bool = False):
        """Event tokens ``(B, 5, out_dim)``; with ``with_inputs`` also the standardised input features
        ``(B, 5, in_dim)`` the tokens were computed from (without a TxE: the tokens themselves)."""
        x = self.features(x)
        if self.txe is not None:
            out = self.txe(x)
            return (out, self.txe.input_norm(x)) if with_inputs else out
        if isinstance(self.standardize, nn.BatchNorm1d):
            out = self.standardize(x.flatten(0, 1)).view_as(x)
        else:
            out = self.standardize(x)
        return (out, out) if with_inputs else out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # task checkpoints written before fixed statistics used BatchNorm1d(affine=False) here
        p = prefix + "standardize."
        if p + "running_mean" in state_dict and isinstance(self.standardize, Standardize):
            mean, var = state_dict.pop(p + "running_mean"), state_dict.pop(p + "running_var")
            state_dict.pop(p + "num_batches_tracked", None)
            state_dict[p + "mean"], state_dict[p + "scale"] = mean, torch.rsqrt(var + 1e-5)
            state_dict[p + "is_set"] = torch.tensor(True)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def build_encoder(
    in_dim: int,
    backbone_arch: Mapping[str, Any] | None = None,
    txe_arch: Mapping[str, Any] | None = None,
    input_norm: str = "fixed",
) -> EventEncoder:
    backbone = build_arch(backbone_arch) if backbone_arch else None
    txe = build_arch(txe_arch) if txe_arch else None
    return EventEncoder(in_dim, backbone, txe, input_norm)
