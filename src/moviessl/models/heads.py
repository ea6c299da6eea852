"""Heads: small MLPs on top of pooled features, one generic module and one subclass per use.

:class:`ProjectionHead` is a ``Sequential`` of linear blocks with an optional L2 normalisation of
the output (the shape of lightly's ``ProjectionHead``). The subclasses only choose the blocks, each
as the paper it comes from describes it:

- :class:`CVRLProjectionHead` -- CVRL / SimCLR (contrastive backbone pretraining);
- :class:`MoDistProjectionHead` -- MoDist / MoCo (visual and flow pathways);
- :class:`MaskPredHead` -- event mask prediction (TxE output -> target space of Eq. 1);
- :class:`MLPHead` -- VidSitu's task heads (verb and relation classifiers), no normalisation;
- :class:`BertLMHead` -- LVU's masked-instance pretraining heads (action logits, span projection).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Sequential):
    """``layers`` applied in order, then (``normalize``) L2 normalisation of the last dimension."""

    def __init__(self, layers: Sequence[nn.Module], normalize: bool = True):
        super().__init__(*layers)
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        self.in_dim, self.out_dim = linears[0].in_features, linears[-1].out_features
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        # in float32: CPU autocast keeps a bf16 input's norm and quotient in bf16, rows 0.4% off unit
        # length (logits off by ~0.06 at tau = 0.1); CUDA autocast already takes the norm in float32
        return F.normalize(x.float(), dim=-1) if self.normalize else x


def linear_block(
    in_dim: int, out_dim: int, norm: nn.Module | None = None, act: nn.Module | None = None
) -> list[nn.Module]:
    """Linear (no bias when a norm follows: it would be redundant) -> norm -> activation."""
    return [nn.Linear(in_dim, out_dim, bias=norm is None)] + [m for m in (norm, act) if m is not None]


class CVRLProjectionHead(ProjectionHead):
    """CVRL (Qian et al., CVPR 2021, §3.3) / SimCLR: ``num_hidden`` x (Linear -> BN -> ReLU), then
    Linear to ``out_dim``, L2-normalised; 3 hidden layers of 2048 and a 128-d output in CVRL.

    BN momentum 0.997 in TensorFlow's convention is 0.003 in PyTorch's. ``out_bn`` adds a BN on the
    output layer as SimCLR v2 does (Chen et al., NeurIPS 2020): it removes the batch's common
    component before the L2 norm, which otherwise lets all embeddings collapse onto one direction
    when the two views start out dissimilar (docs/design.md, "Collapse fixes")."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_hidden: int = 3,
        bn_momentum: float = 0.003,
        out_bn: bool = False,
    ):
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(num_hidden):
            layers += linear_block(
                d, hidden_dim, nn.BatchNorm1d(hidden_dim, momentum=bn_momentum), nn.ReLU(inplace=True)
            )
            d = hidden_dim
        layers += linear_block(d, out_dim, nn.BatchNorm1d(out_dim, momentum=bn_momentum) if out_bn else None)
        super().__init__(layers)


class MoDistProjectionHead(ProjectionHead):
    """MoDist (Xiao, Tighe & Modolo, arXiv 2106.09703) contrastive head: Linear -> ReLU -> Linear,
    L2-normalised, no BN (the MaCLR release's config).

    ``bn=True`` puts BN after both linears (MoCo v3, Chen, Xie & He, ICCV 2021): with small nets
    and few steps the queue-based loss otherwise collapses onto the keys' common direction
    (docs/design.md, "Collapse fixes")."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, bn: bool = False):
        super().__init__(
            linear_block(in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim) if bn else None, nn.ReLU(inplace=True))
            + linear_block(hidden_dim, out_dim, nn.BatchNorm1d(out_dim) if bn else None)
        )


class MaskPredHead(ProjectionHead):
    """Event mask prediction (paper §3.3): TxE output -> the space of the targets of Eq. 1,
    Linear -> GELU -> LayerNorm -> Linear (BERT's masked-LM head shape, Devlin et al. 2019), L2-normalised."""

    def __init__(self, dim: int, out_dim: int, hidden: int | None = None):
        hidden = hidden or dim
        super().__init__([nn.Linear(dim, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, out_dim)])


class MLPHead(ProjectionHead):
    """VidSitu's classifier heads (Sadhu et al., CVPR 2021): Linear -> ReLU -> Dropout -> Linear, logits out."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0):
        super().__init__(
            [nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, out_dim)],
            normalize=False,
        )


class BertLMHead(ProjectionHead):
    """BERT's / RoBERTa's LM head shape, unnormalised: Linear -> GELU -> LayerNorm -> Linear. LVU's
    Object Transformer pretraining uses it twice (``chaoyuaw/lvu``, ``src/models/modeling_roberta.py``):
    ``RobertaLMHead`` predicts the short-term action logits of masked instances and
    ``SameMovieHeadLoss`` projects a span's pooled output to 128-d (no L2 normalisation there either)."""

    def __init__(self, dim: int, out_dim: int, hidden: int | None = None):
        hidden = hidden or dim
        super().__init__(
            [nn.Linear(dim, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-5), nn.Linear(hidden, out_dim)],
            normalize=False,
        )
