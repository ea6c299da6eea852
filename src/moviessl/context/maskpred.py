"""Event mask prediction (MaskPred) for the TxE contextualizer, paper §3.3, Eq. 1, Table 2.

Small composable pieces; :mod:`moviessl.context.module` assembles them into a LightningModule.

Given a window of N event features v_1..v_N, a span of m consecutive tokens is replaced by the
learned [MASK] token (m uniform over ``mask_sizes``, default {1..floor(alpha*N)}, alpha = 0.6;
start uniform), TxE runs on the masked sequence and its L2-normalised outputs at the masked
positions must pick out the true v_t among K distractors from a FIFO queue (Eq. 1, tau = 0.1).
The paper replaces every token of the span by [MASK]; ``replace`` < 1 applies BERT's corruption to
the span instead (:func:`corrupt_selected`, a departure, off in the presets).

What is the positive "v_t in the output space"? We take Eq. 1 literally: the *input feature itself*,
centred by a fixed mean and L2-normalised (:func:`feature_targets`), optionally reduced by a fixed
random projection (which preserves cosines). A small head maps the TxE output to that space
(:class:`moviessl.models.heads.MaskPredHead`). Since the targets are a fixed function of the frozen
backbone features, the objective cannot collapse and queued distractors never go stale (no momentum
encoder needed). Eq. 1 itself is :func:`moviessl.ssl.losses.info_nce_queue` (MoCo's form); queue
rows carry the id of the event they came from, so copies of the positive itself (the same event seen
through another window or an earlier epoch) are never scored as distractors -- without this a small
dataset (VidSitu's 117k events vs K = 65536) would fill the queue with false negatives.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..ssl.losses import full_precision, same_source

Encoder = Callable[..., torch.Tensor]  # encoder(x (B,N,D), mask=(B,N) bool|None, pad=(B,N) bool|None) -> (B,N,dim)


def mask_size_set(n: int, alpha: float = 0.6, sizes: Sequence[int] | None = None) -> list[int]:
    """Allowed mask sizes: ``sizes`` if given, else {1, ..., floor(alpha * n)} (at least {1}), never
    past n - 1: a span keeps one token of the window visible (:func:`sample_mask_sizes`), so a size
    of the whole window was never drawn while the sizes recorded with the model named it (the paper's
    alpha = 1 reads {1..N}; a 1-token window is masked whole)."""
    top = max(1, n - 1)
    if sizes:
        out = sorted({int(s) for s in sizes})
        if out[0] < 1 or out[-1] > top:
            raise ValueError(f"mask sizes must lie in 1..{top} (a span keeps one of the {n} tokens visible), got {out}")
        return out
    return list(range(1, min(top, max(1, math.floor(alpha * n + 1e-9))) + 1))


def _lengths(pad: torch.Tensor | None, b: int, n: int, device) -> torch.Tensor:
    if pad is None:
        return torch.full((b,), n, dtype=torch.long, device=device)
    return (~pad).sum(1).long()


def _allowed_counts(lengths: torch.Tensor, sizes_t: torch.Tensor) -> torch.Tensor:
    # Keep at least one visible token where the window has more than one; a 1-token window can
    # only be masked whole.
    room = torch.clamp(lengths - 1, min=1)
    return torch.clamp((sizes_t[None, :] <= room[:, None]).sum(1), min=1)


def sample_mask_sizes(
    lengths: torch.Tensor, sizes: Sequence[int], generator: torch.Generator | None = None
) -> torch.Tensor:
    """m per sample, uniform over the allowed ``sizes`` (those leaving a token visible). A window
    too short for the smallest size (a set without the small sizes) masks all but one of its tokens
    (its only one): a span past its valid tokens would mask, and score, padding."""
    # made and drawn on the host, copied without waiting (a blocking copy to a GPU first waits for
    # all the work queued there, every step)
    sizes_t = torch.tensor(sorted(sizes), dtype=torch.long, device="cpu").to(lengths.device, non_blocking=True)
    k = _allowed_counts(lengths, sizes_t)
    u = torch.rand(lengths.shape[0], generator=generator, device="cpu").to(lengths.device, non_blocking=True)
    m = sizes_t[torch.clamp((u * k).long(), max=len(sizes_t) - 1)]
    return torch.minimum(m, torch.clamp(lengths - 1, min=1))


def span_mask(starts: torch.Tensor, sizes: torch.Tensor, n: int) -> torch.Tensor:
    ar = torch.arange(n, device=starts.device)[None, :]
    return (ar >= starts[:, None]) & (ar < (starts + sizes)[:, None])


def sample_span_masks(
    n: int,
    sizes: Sequence[int],
    pad: torch.Tensor | None = None,
    batch: int | None = None,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """Uniform span masking (paper §3.3): (B, n) bool, True = replaced by [MASK].

    m ~ U(sizes), start s ~ U{0, ..., L - m} over the L valid (non-padded, left-aligned) tokens. A row
    of padding only (L = 0) masks nothing (it masked, and scored, its padding at position 0).
    """
    device = pad.device if pad is not None else device
    b = pad.shape[0] if pad is not None else int(batch)
    lengths = _lengths(pad, b, n, device)
    m = sample_mask_sizes(lengths, sizes, generator) * (lengths > 0)  # the same draws for every row
    u = torch.rand(b, generator=generator, device="cpu").to(device, non_blocking=True)
    starts = torch.clamp((u * (lengths - m + 1).clamp(min=1)).long(), min=0)
    return span_mask(starts, m, n)


def corrupt_selected(
    x: torch.Tensor,
    selected: torch.Tensor,
    candidates: torch.Tensor,
    replace: float = 0.8,
    swap: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of the selected tokens (Devlin et al., NAACL 2019, §3.1: 80% [MASK], 10% a
    random token, 10% unchanged, all of them predicted) -> (inputs with swaps, [MASK] positions).

    ``replace`` of the selected tokens get the learned [MASK] token (returned as a mask for the
    model), ``swap`` another token's feature drawn from ``candidates`` that are not replaced, the rest
    keep their own feature. Why it matters for a contextualizer: a position scored although it was
    left as it is cannot be told from an unselected one, so every visible output is asked to keep its
    own token -- which the [MASK]-only objective never asks.

    ``selected`` and ``candidates`` may be on the host while ``x`` is on a GPU: what is replaced and
    swapped is then decided there, and nothing waits for the device (the returned mask is on x's).
    """
    # drawn on the CPU, as sample_mask_sizes does: the stream is then the CPU generator's whatever
    # torch's default device (a user's torch.set_default_device("cuda") drew it on the GPU instead)
    u = torch.rand(selected.shape, generator=generator, device="cpu").to(selected.device, non_blocking=True)
    to_mask = selected & (u < replace)
    to_swap = selected & (u >= replace) & (u < replace + swap)
    x = x.clone()
    # positions where the masks are, as x[mask] finds them (its nonzero); the swap pool is read before
    # any swap, as before
    pool_at, swap_at = positions(candidates & ~to_mask, x.device), positions(to_swap, x.device)
    n, n_pool = len(swap_at[0]), len(pool_at[0])
    if n and n_pool:
        idx = torch.randint(n_pool, (n,), generator=generator, device="cpu").to(x.device, non_blocking=True)
        x[swap_at] = x[pool_at][idx]
    return x, to_mask.to(x.device, non_blocking=True)


def positions(mask: torch.Tensor, device=None) -> tuple[torch.Tensor, ...]:
    """``mask.nonzero(as_tuple=True)`` moved to ``device`` without waiting: ``t[positions(m)]`` is
    ``t[m]``. Found on the host for a mask on the host, no GPU waits for it (a boolean index on a
    device mask reads its count on the host, waiting for the device, once per use)."""
    return tuple(
        i.to(device if device is not None else mask.device, non_blocking=True) for i in mask.nonzero(as_tuple=True)
    )


@torch.no_grad()
def token_discrepancy(encoder: Encoder, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
    """d_i = 1 - cos(v̂_i, v̂'_i): how much token i's output changes when i alone is masked (Table 2).

    v̂_i is the output of the unmasked sequence, v̂'_i that of the sequence with only v_i masked.
    Returns (B, N); padded positions are -inf. Costs one batched forward of B*(N+1) sequences.
    """
    b, n, _ = x.shape
    full = F.normalize(encoder(x, mask=None, pad=pad).float(), dim=-1)
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    xs = x.repeat_interleave(n, dim=0)
    masks = eye.repeat(b, 1)
    pads = None if pad is None else pad.repeat_interleave(n, dim=0)
    out = F.normalize(encoder(xs, mask=masks, pad=pads).float(), dim=-1).view(b, n, n, -1)
    idx = torch.arange(n, device=x.device)
    own = out[:, idx, idx]  # (B, N, dim): token i's output when token i is masked
    d = 1.0 - (own * full).sum(-1)
    if pad is not None:
        d = d.masked_fill(pad, float("-inf"))
    return d


@torch.no_grad()
def max_discrepancy_masks(
    encoder: Encoder,
    x: torch.Tensor,
    sizes: Sequence[int],
    pad: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ "Max discrepancy" placement (Table 2): m ~ U(sizes) as usual, then the span of m tokens with
    the largest summed discrepancy (for m = 1: the single token whose output changes most)."""
    b, n, _ = x.shape
    d = token_discrepancy(encoder, x, pad)
    lengths = _lengths(pad, b, n, x.device)
    m = sample_mask_sizes(lengths, sizes, generator) * (lengths > 0)  # a row of padding only: nothing
    dz = torch.where(torch.isfinite(d), d, torch.zeros_like(d))
    cs = torch.cat([torch.zeros(b, 1, device=x.device), dz.cumsum(1)], 1)  # (B, N+1)
    starts = torch.arange(n, device=x.device)[None, :]
    ends = starts + m[:, None]
    score = cs.gather(1, ends.clamp(max=n)) - cs[:, :n]
    score = score.masked_fill(ends > lengths[:, None], float("-inf"))
    return span_mask(score.argmax(1), m, n)


@full_precision
def feature_targets(
    v: torch.Tensor, mean: torch.Tensor | None = None, proj: torch.Tensor | None = None
) -> torch.Tensor:
    """The positive of Eq. 1 in the output space: normalize((v - mean) @ proj). No parameters learn
    here. In float32 under a mixed precision (autocast off), as the loss they enter: a bf16
    projection and CPU autocast's bf16 normalisation left targets and distractors off unit length."""
    v = v.float()
    if mean is not None:
        v = v - mean
    if proj is not None:
        v = v @ proj
    return F.normalize(v, dim=-1)


def maskpred_l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Table 2's plain L2 alternative: mean ||v̂_t - v_t||² over masked tokens (both L2-normalised,
    so it equals 2 - 2·cos)."""
    return (pred.float() - target.float()).pow(2).sum(-1).mean()


@torch.no_grad()
@full_precision
def retrieval_hits(
    pred: torch.Tensor,
    target: torch.Tensor,
    queue: torch.Tensor,
    pred_ids: torch.Tensor | None = None,
    queue_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`retrieval_accuracy` as a float32 0-d tensor on ``pred``'s device, not read on the host
    (what a training step logs: reading it made every step wait for the GPU)."""
    if len(pred) == 0:
        return torch.full((), float("nan"), device=pred.device)
    pred = pred.float()
    pos = (pred * target.float()).sum(-1, keepdim=True)
    neg = pred @ queue.t().float()
    if pred_ids is not None and queue_ids is not None:
        neg = neg.masked_fill(same_source(pred_ids, queue_ids), float("-inf"))
    return (pos > neg).all(1).float().mean() if neg.shape[1] else torch.ones((), device=pred.device)


def retrieval_accuracy(
    pred: torch.Tensor,
    target: torch.Tensor,
    queue: torch.Tensor,
    pred_ids: torch.Tensor | None = None,
    queue_ids: torch.Tensor | None = None,
) -> float:
    """Fraction of masked tokens whose true feature scores above every distractor in the queue
    (the "fill in" accuracy: chance is 1 / (K + 1)); distractors with the token's own id are left out."""
    return float(retrieval_hits(pred, target, queue, pred_ids, queue_ids))
