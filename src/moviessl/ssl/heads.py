"""Projection heads that map pooled backbone features to the contrastive embedding space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """CVRL head: ``num_hidden`` x (Linear -> BN -> ReLU), then Linear to ``out_dim``, L2-normalised.

    CVRL (ssl-recipes §3.3) uses 3 hidden layers of 2048 and a 128-d output; BN momentum 0.997 in
    TF's convention is 0.003 in PyTorch's. ``out_bn`` adds a BN (no ReLU) on the output layer, as
    SimCLR v2 does: it removes the batch's common component before the L2 norm, which otherwise
    lets all embeddings collapse onto one direction when the two views start out dissimilar."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, num_hidden: int = 3,
                 bn_momentum: float = 0.003, out_bn: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(num_hidden):
            # no bias: the BN right after makes it redundant
            layers += [nn.Linear(d, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim, momentum=bn_momentum), nn.ReLU(inplace=True)]
            d = hidden_dim
        layers.append(nn.Linear(d, out_dim, bias=not out_bn))
        if out_bn:
            layers.append(nn.BatchNorm1d(out_dim, momentum=bn_momentum))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class MoDistHead(nn.Module):
    """MoDist head: Linear -> ReLU -> Linear, L2-normalised (MaCLR release config: no BN).

    ``bn=True`` puts BN after both linears (MoCo v3's head): with small nets and few steps the
    queue-based loss otherwise finds a shortcut, since keys drift with the momentum encoder, the
    newest keys beat the queue's older ones whatever the clip, and queries collapse onto the keys'
    common direction (measured: mean pairwise cosine 0.999 within 20 steps at the cpu preset)."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, bn: bool = False):
        super().__init__()
        if bn:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                                     nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim, bias=False),
                                     nn.BatchNorm1d(out_dim))
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)

