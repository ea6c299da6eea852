"""TxD: the transformer decoder that writes semantic roles (paper §3.1, VidSitu's TxD).

Each layer is causal self-attention over the text tokens, then cross-attention from the text to the
visual tokens (the "memory"), then an MLP, all with residual connections. Attention runs through
``torch.nn.functional.scaled_dot_product_attention``. Decoding keeps a key/value cache per layer so a
greedy step costs one token, not the whole prefix again.

Choices the paper leaves to its supplement (see docs/design.md "### tasks"): pre-LN blocks (they
train without warm-up at the constant learning rate VidSitu uses), learned position embeddings (as
the paper's TxE), the output projection tied to the token embedding, and a linear adapter from the
visual feature size to the decoder width.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .txe import ACTIVATIONS, FAIRSEQ_LAYER, GELU_LAYER, check_sizes, feed_forward

TXD_PRESETS: dict[str, dict[str, Any]] = {
    # VidSitu's TxD: 3 layers, 8 heads, d 1024, FFN 2048, fairseq's layer settings; targets padded/truncated
    # to 60 tokens.
    "txd_paper": dict(dim=1024, depth=3, heads=8, ffn=2048, max_len=64, dropout=0.1, **FAIRSEQ_LAYER),
    # Small enough that one SRL run on a few hundred clips takes seconds on 2 CPU cores.
    # (dim 64: ~0.07 s per batch of 32 clips x 5 events on one core; 128 costs 3x for no gain on SynthMovies)
    "txd_cpu": dict(dim=64, depth=3, heads=4, ffn=128, max_len=64, dropout=0.1, **GELU_LAYER),
}


class Attention(nn.Module):
    """Multi-head attention; ``kv`` defaults to ``x`` (self-attention)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, kv_dim: int | None = None):
        super().__init__()
        assert dim % heads == 0, f"dim {dim} not divisible by heads {heads}"
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def split(self, t: torch.Tensor) -> torch.Tensor:  # (B,L,C) -> (B,h,L,C/h)
        B, L, C = t.shape
        return t.view(B, L, self.heads, C // self.heads).transpose(1, 2)

    def kv_heads(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(src).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask=None, is_causal: bool = False):
        q = self.split(self.q(x))
        empty = None
        if attn_mask is not None:
            # a sample whose memory is all padding reads nothing (zeros, as torch >= 2.5's kernels give)
            # instead of torch 2.4's softmax over no key, NaN in its logits and the batch's gradients
            empty = ~attn_mask.any(-1, keepdim=True)
            attn_mask = attn_mask | empty
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )
        if empty is not None:
            y = y.masked_fill(empty, 0.0)
        B, h, L, c = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, L, h * c))


class DecoderBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        ffn: int,
        dropout: float,
        activation: str = "gelu",
        attn_dropout: float | None = None,
        ffn_dropout: float | None = None,
    ):
        super().__init__()
        attn_p = dropout if attn_dropout is None else attn_dropout
        self.ln1, self.self_attn = nn.LayerNorm(dim), Attention(dim, heads, attn_p)
        self.ln2, self.cross_attn = nn.LayerNorm(dim), Attention(dim, heads, attn_p)
        self.ln3 = nn.LayerNorm(dim)
        self.mlp = feed_forward(dim, ffn, activation, dropout if ffn_dropout is None else ffn_dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, memory, memory_mask=None, cache: dict | None = None):
        """``cache`` (decoding): holds this layer's self-attention keys/values so far and the memory's."""
        h = self.ln1(x)
        k, v = self.self_attn.kv_heads(h)
        if cache is None:
            # Right padding + a causal mask never lets a real token see a pad, so no key-padding mask is needed.
            x = x + self.drop(self.self_attn.attend(h, k, v, is_causal=True))
            mk, mv = self.cross_attn.kv_heads(memory)
        else:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
            # one new token attends to all cached positions: no mask needed
            x = x + self.drop(self.self_attn.attend(h, k, v))
            if "mk" not in cache:
                cache["mk"], cache["mv"] = self.cross_attn.kv_heads(memory)
            mk, mv = cache["mk"], cache["mv"]
        x = x + self.drop(self.cross_attn.attend(self.ln2(x), mk, mv, attn_mask=memory_mask))
        return x + self.drop(self.mlp(self.ln3(x)))


class TxD(nn.Module):
    """Text decoder conditioned on visual tokens.

    ``forward(tokens (B,L) long, memory (B,M,mem_dim), memory_pad (B,M) bool True=padding) -> logits (B,L,V)``
    """

    def __init__(
        self,
        vocab_size: int,
        mem_dim: int,
        dim: int = 128,
        depth: int = 3,
        heads: int = 4,
        ffn: int = 256,
        max_len: int = 64,
        dropout: float = 0.1,
        activation: str = "gelu",
        attn_dropout: float | None = None,
        ffn_dropout: float | None = None,
    ):
        super().__init__()
        self.vocab_size, self.mem_dim, self.dim, self.max_len = vocab_size, mem_dim, dim, max_len
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Parameter(torch.zeros(1, max_len, dim))
        self.mem_proj = nn.Linear(mem_dim, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            [DecoderBlock(dim, heads, ffn, dropout, activation, attn_dropout, ffn_dropout) for _ in range(depth)]
        )
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied: the vocabulary is small relative to the data
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)

    @staticmethod
    def _memory_mask(memory_pad: torch.Tensor | None) -> torch.Tensor | None:
        # SDPA boolean masks mean "may attend"; broadcast over heads and queries.
        return None if memory_pad is None else (~memory_pad)[:, None, None, :]

    def forward(
        self, tokens: torch.Tensor, memory: torch.Tensor, memory_pad: torch.Tensor | None = None
    ) -> torch.Tensor:
        L = tokens.shape[1]
        if L > self.max_len:
            raise ValueError(f"sequence of {L} tokens exceeds TxD max_len {self.max_len}")
        x = self.drop(self.tok_emb(tokens) + self.pos_emb[:, :L])
        mem, mmask = self.mem_proj(memory), self._memory_mask(memory_pad)
        for blk in self.blocks:
            x = blk(x, mem, mmask)
        return self.head(self.ln_f(x))

    @torch.no_grad()
    def generate(
        self,
        memory: torch.Tensor,
        prefix: torch.Tensor,
        max_len: int | None = None,
        eos_id: int = 1,
        memory_pad: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Greedy decoding with forced prefixes (the GT verb's token(s)).

        ``prefix`` (B,P) long, right-padded with -1 (prefixes may differ in length; the first column
        must be set). Step t feeds token t; the next token is the forced ``prefix[:, t+1]`` where
        given, else the argmax. Returns (B, L) ids: the prefix, then the generated tokens; positions
        after a sequence's eos hold ``eos_id``.
        """
        max_len = min(max_len or self.max_len, self.max_len)
        B, P = prefix.shape
        assert (prefix[:, 0] >= 0).all(), "every sequence needs at least one forced token"
        mem, mmask = self.mem_proj(memory), self._memory_mask(memory_pad)
        caches: list[dict] = [{} for _ in self.blocks]
        out = torch.full((B, max_len), eos_id, dtype=torch.long, device=memory.device)
        out[:, 0] = prefix[:, 0]
        done = torch.zeros(B, dtype=torch.bool, device=memory.device)
        for t in range(max_len - 1):
            x = self.tok_emb(out[:, t : t + 1]) + self.pos_emb[:, t : t + 1]
            for blk, cache in zip(self.blocks, caches):
                x = blk(x, mem, mmask, cache=cache)
            nxt = self.head(self.ln_f(x))[:, -1].argmax(-1)
            if t + 1 < P:
                forced = prefix[:, t + 1]
                nxt = torch.where(forced >= 0, forced, nxt)
                in_prefix = forced >= 0
            else:
                in_prefix = torch.zeros_like(done)
            nxt = torch.where(done & ~in_prefix, torch.full_like(nxt, eos_id), nxt)
            out[:, t + 1] = nxt
            done = done | ((nxt == eos_id) & ~in_prefix)
            if bool(done.all()) and t + 1 >= P - 1:
                break
        return out


def txd_options(preset: str = "txd_paper", **overrides: Any) -> dict[str, Any]:
    """The TxD keyword arguments of ``preset`` with ``overrides``, checked: an unknown preset or
    option, a size below 1 (a depth below 0), an unknown activation, or a width the heads do not divide,
    is one line naming the setting (not a TypeError / AssertionError traceback when the first seed
    builds its model)."""
    from ..errors import BadInputError

    if preset not in TXD_PRESETS:
        raise BadInputError(None, f"unknown TxD preset '{preset}' (choose from {', '.join(TXD_PRESETS)})")
    kw = {**TXD_PRESETS[preset], **overrides}
    unknown = sorted(set(overrides) - set(TXD_PRESETS[preset]))
    if unknown:
        raise BadInputError(f"srl.txd_overrides.{unknown[0]}", f"unknown TxD option; known: {', '.join(kw)}")
    check_sizes(kw, ("dim", "depth", "heads", "ffn", "max_len"), "srl.txd_overrides.")
    if kw["activation"] not in ACTIVATIONS:  # else refused as `model.activation` once a seed's folder exists
        act, known = kw["activation"], ", ".join(ACTIVATIONS)
        raise BadInputError("srl.txd_overrides.activation", f"unknown activation {act!r}; choose from {known}")
    if int(kw["dim"]) % int(kw["heads"]):
        raise BadInputError("srl.txd_overrides", f"TxD dim {kw['dim']} is not divisible by its {kw['heads']} heads")
    return kw


def build_txd(preset: str = "txd_paper", vocab_size: int = 50000, mem_dim: int = 1024, **overrides: Any) -> TxD:
    return TxD(vocab_size=vocab_size, mem_dim=mem_dim, **txd_options(preset, **overrides))
