"""TxE: the transformer encoder that contextualises a sequence of event features (paper §3.1, §3.3).

Tokens are per-event backbone features ``(B, N, in_dim)`` (N = 5 two-second events for VidSitu).
They are projected to ``dim``; masked tokens (event mask prediction, §3.3) are replaced by one learned
[MASK] vector; a learned position embedding is added (the paper found it better than sinusoids);
then ``depth`` self-attention blocks. Attention is PyTorch's fused
``scaled_dot_product_attention``.

The paper fixes 3 layers, 16 heads, hidden 1024; the FFN width (2048), post-LN, ReLU and dropout only
on the residual branches (fairseq's ``dropout`` 0.1; ``attention_dropout`` and ``activation_dropout``
0) follow VidSitu's fairseq encoder (Sadhu et al., CVPR 2021, [37]), which the paper says it largely
follows.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError

# dropout: on each residual branch and the embeddings; attn_dropout: on the attention probabilities;
# ffn_dropout: after the FFN's activation (None: ``dropout``). VidSitu's fairseq layers (its configs at
# TheShadow29/VidSitu): ReLU, attention_dropout = activation_dropout = 0.
FAIRSEQ_LAYER = dict(activation="relu", attn_dropout=0.0, ffn_dropout=0.0)
# The CPU presets': GELU, and ``dropout`` on the attention probabilities and in the FFN as well.
GELU_LAYER = dict(activation="gelu", attn_dropout=None, ffn_dropout=None)
TXE_PRESETS: dict[str, dict[str, Any]] = {
    "txe_paper": dict(
        dim=1024, depth=3, heads=16, mlp_dim=2048, dropout=0.1, max_len=64, norm_first=False, **FAIRSEQ_LAYER
    ),
    # Pre-LN for the CPU preset: short runs at a high learning rate are stable without warm-up.
    "txe_cpu": dict(dim=128, depth=3, heads=4, mlp_dim=256, dropout=0.1, max_len=64, norm_first=True, **GELU_LAYER),
}
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def check_sizes(cfg: Mapping[str, Any], sizes: tuple[str, ...], prefix: str) -> None:
    """One line naming ``prefix + key`` for a layer count (``depth``) below 0 or another size below 1
    (or not an integer): 0 heads divided by zero, a negative depth built no layers without a word, a
    negative or fractional width or kernel failed inside torch."""
    for k in sizes:
        v, low = cfg[k], 0 if k == "depth" else 1
        if isinstance(v, bool) or not isinstance(v, Integral) or v < low:
            raise BadInputError(f"{prefix}{k}", f"must be an integer >= {low}, got {v!r}")


def feed_forward(dim: int, hidden: int, activation: str = "gelu", dropout: float = 0.0) -> nn.Sequential:
    """A transformer layer's FFN: Linear -> activation -> Dropout -> Linear."""
    if activation not in ACTIVATIONS:
        raise BadInputError(
            "model.activation", f"unknown activation '{activation}'; choose from {', '.join(ACTIVATIONS)}"
        )
    return nn.Sequential(nn.Linear(dim, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout), nn.Linear(hidden, dim))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise BadInputError("model.heads", f"dim {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """One encoder layer: self-attention + FFN, each residual, LayerNorm before (pre-LN) or after."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_dim: int,
        dropout: float = 0.1,
        norm_first: bool = False,
        attn_dropout: float | None = None,
        activation: str = "gelu",
        ffn_dropout: float | None = None,
    ):
        super().__init__()
        self.norm_first = norm_first
        # dropout on the attention probabilities (BERT's attention_probs_dropout_prob); default: ``dropout``
        self.attn = SelfAttention(dim, heads, dropout if attn_dropout is None else attn_dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = feed_forward(dim, mlp_dim, activation, dropout if ffn_dropout is None else ffn_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), attn_mask))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, attn_mask)))
        return self.norm2(x + self.drop(self.mlp(x)))


class Standardize(nn.Module):
    """``(x - mean) / sqrt(var + eps)`` per feature with *fixed* statistics (buffers, saved with the
    model), computed once from training features: every path into a head or a TxE sees its inputs
    normalised the same way (BatchNorm's eval formula, without its batch dependence in training).
    Pooled post-ReLU backbone features share a large common component (per-dimension std far
    below the mean), which otherwise dominates a TxE's input projection and stalls small heads."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))  # identity until set_stats
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("is_set", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def set_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.scale.copy_(torch.rsqrt(torch.as_tensor(var, dtype=torch.float32) + self.eps))
        self.is_set.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in float32 at least: a half precision's mean (8 significand bits in bf16) is off by up to
        # 2^-9 of itself, a fixed shift of each dimension by a large part of its std where the std is
        # far below the mean; the standardised values, of order 1, go back to x's dtype
        dt = torch.promote_types(x.dtype, self.mean.dtype)
        return ((x.to(dt) - self.mean.to(dt)) * self.scale.to(dt)).to(x.dtype)

    def _apply(self, fn, *args, **kwargs):
        # the statistics stay float32 whatever the module is cast to (``extract --precision bf16-true``
        # holds the weights in bf16, Lightning's HalfPrecision by ``module.to(dtype)``): they follow it
        # to its device only
        kept = {k: self._buffers[k] for k in ("mean", "scale")}
        super()._apply(fn, *args, **kwargs)
        for k, before in kept.items():
            now = self._buffers[k]
            if now.dtype != before.dtype:
                self._buffers[k] = before.to(now.device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the statistics existed: identity (how they were trained)
        for k, v in (("mean", self.mean), ("scale", self.scale), ("is_set", self.is_set)):
            state_dict.setdefault(prefix + k, v.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@torch.no_grad()
def feature_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension (mean, variance) of features ``(..., D)`` in float64, returned as float32."""
    x = x.reshape(-1, x.shape[-1]).double()
    return x.mean(0).float(), x.var(0, unbiased=False).float()


class TxE(nn.Module):
    """``forward(x (B,N,in_dim), mask=None, pad=None) -> (B,N,dim)``.

    ``mask`` (B,N) bool: True -> that input token is replaced by the learned [MASK] token (its value
    never reaches the network). ``pad`` (B,N) bool: True -> padding; padded keys are never attended
    to and padded outputs are zero.
    """

    def __init__(
        self,
        in_dim: int = 2048,
        dim: int = 1024,
        depth: int = 3,
        heads: int = 16,
        mlp_dim: int = 2048,
        dropout: float = 0.1,
        max_len: int = 64,
        norm_first: bool = False,
        activation: str = "gelu",
        attn_dropout: float | None = None,
        ffn_dropout: float | None = None,
    ):
        super().__init__()
        self.in_dim, self.dim, self.max_len = in_dim, dim, max_len
        self.input_norm = Standardize(in_dim)  # the statistics of the features it was trained on
        self.input_proj = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.pos_embed = nn.Parameter(torch.zeros(max_len, dim))
        # BERT-style embedding LayerNorm: backbone features (post-ReLU averages) have arbitrary scale.
        self.embed_norm = nn.LayerNorm(dim)
        self.embed_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_dim, dropout, norm_first, attn_dropout, activation, ffn_dropout) for _ in range(depth)
        )
        self.final_norm = nn.LayerNorm(dim) if norm_first else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise BadInputError("TxE input", f"expected (B,N,{self.in_dim}) event features, got {tuple(x.shape)}")
        if x.shape[1] > self.max_len:
            raise BadInputError("TxE input", f"{x.shape[1]} tokens exceed max_len {self.max_len}")
        h = self.input_proj(self.input_norm(x))
        if mask is not None:
            h = torch.where(mask.to(torch.bool)[..., None], self.mask_token.to(h.dtype), h)
        h = h + self.pos_embed[: x.shape[1]].to(h.dtype)
        return self.embed_drop(self.embed_norm(h))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, pad: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.embed(x, mask)
        attn_mask = None
        if pad is not None:
            pad = pad.to(torch.bool)
            # An all-padding row would softmax over nothing (NaN); let it attend anyway, its output is zeroed.
            keep = ~pad | pad.all(dim=1, keepdim=True)
            attn_mask = keep[:, None, None, :]  # (B,1,1,N): True = may be attended to
        for blk in self.blocks:
            h = blk(h, attn_mask)
        h = self.final_norm(h)
        if pad is not None:
            h = h.masked_fill(pad[..., None], 0.0)
        return h


def build_txe(preset: str = "txe_paper", in_dim: int = 2048, **overrides: Any) -> TxE:
    """Build a TxE from :data:`TXE_PRESETS` for ``in_dim``-d event features (2048 for Slow-D R50,
    2304 for VidSitu's released SlowFast features); any preset key can be overridden."""
    if preset not in TXE_PRESETS:
        raise BadInputError(preset, f"unknown TxE preset; choose from {', '.join(TXE_PRESETS)}")
    cfg = dict(TXE_PRESETS[preset])
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise BadInputError(f"model.{unknown[0]}", f"unknown TxE option; known: {', '.join(cfg)}")
    cfg.update(overrides)
    check_sizes(cfg, ("dim", "depth", "heads", "mlp_dim", "max_len"), "model.")
    return TxE(in_dim=int(in_dim), **cfg)
