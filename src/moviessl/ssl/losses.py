"""Contrastive losses (InfoNCE, van den Oord et al. 2018), small and composable.

All inputs are L2-normalised embeddings; ``tau`` is the temperature (0.1 for CVRL, MoDist and
MaskPred in the paper).

- :func:`info_nce_pairs`: SimCLR / CVRL's NT-Xent over the (all-gathered) batch.
- :func:`info_nce_queue`: MoCo's form against a FIFO queue of negatives (MoDist's terms and the
  paper's Eq. 1 for event mask prediction), with queue entries of the query's own source left out.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..dist import gather_no_grad, gather_with_grad, rank


def full_precision(fn):
    """Run ``fn`` with autocast off on its first tensor's device: under bf16-mixed, autocast would
    cast the similarity matmuls back to bf16 whatever ``.float()`` the inputs get, and 8 bits of
    mantissa on logits of up to 1/tau = 10 move each by ~0.04 (a 1-1.5% change of the loss)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if t is None or not torch.is_autocast_enabled(t.device.type):
            return fn(*args, **kwargs)
        with torch.autocast(device_type=t.device.type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


@full_precision
def info_nce_pairs(
    z1: torch.Tensor,
    z2: torch.Tensor,
    tau: float = 0.1,
    gather: bool = True,
    hard_neg: torch.Tensor | None = None,
    hard_for: torch.Tensor | None = None,
    ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """SimCLR NT-Xent over the global batch, both directions summed (CVRL, paper §3.2).

    ``z1[i]`` and ``z2[i]`` (B, D) are two clips of video i. With ``Z = [z1; z2]`` (2N rows, N the
    *global* batch), each row is scored against the other 2N-1 rows (itself masked) and its
    partner is the positive::

        l_i = -log( exp(z_i.z_p(i)/tau) / sum_{j != i} exp(z_i.z_j/tau) )
        L   = mean_{i <= N} l_i + mean_{i > N} l_i      # the two view losses summed, as in CVRL

    Under DDP the embeddings of all processes are all-gathered *with* gradient, so every process
    computes the same global loss; together with DDP's gradient averaging this gives exactly the
    gradients of one process on the concatenated batch (see ``moviessl.dist``).

    ``hard_neg`` (M, D), gathered the same way, are extra negatives (never a positive): IIC's
    intra-video negatives (Tao et al., ACM MM 2020), see :class:`moviessl.ssl.cvrl.CVRL`. By default
    every row scores all of them; ``hard_for`` (M,) names the one local row of ``[z1; z2]`` (0..2B-1)
    that scores each (the others see it masked out).

    ``ids`` (B,), gathered the same way, name each pair's source video: the clips of another pair
    of the same video (a distributed sampler's padding, a bad video's stand-in) are left out of a
    row's negatives, as CVRL's negatives are clips "sampled from different videos" (paper §3.2).
    """
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b_loc = z1.shape[0]
    if gather:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    n = z1.shape[0]
    z = torch.cat([z1, z2], dim=0).float()
    sim = z @ z.t() / tau
    sim.fill_diagonal_(float("-inf"))
    # made on z's device: made on the host and copied (a blocking copy), every step waited for the GPU
    target = torch.cat([torch.arange(n, 2 * n, device=z.device), torch.arange(0, n, device=z.device)])
    if ids is not None:
        ids = ids.to(z.device).long().reshape(-1)
        ids = torch.cat([gather_no_grad(ids) if gather else ids] * 2)
        same = ids.view(-1, 1) == ids.view(1, -1)
        same[torch.arange(2 * n, device=z.device), target] = False
        sim = sim.masked_fill(same, float("-inf"))
    if hard_neg is not None:
        hard = z @ (gather_with_grad(hard_neg) if gather else hard_neg).float().t() / tau
        if hard_for is not None:
            # local row of [z1; z2] -> global row of [z1_global; z2_global] (this rank's block of a half)
            hard_for = hard_for.to(z.device).long()
            off = b_loc * (rank() if gather else 0)
            g = torch.where(hard_for < b_loc, hard_for + off, n + hard_for - b_loc + off)
            g = gather_no_grad(g) if gather else g
            keep = torch.zeros_like(hard, dtype=torch.bool)
            keep[g, torch.arange(hard.shape[1], device=z.device)] = True
            hard = hard.masked_fill(~keep, float("-inf"))
        sim = torch.cat([sim, hard], dim=1)
    per_row = F.cross_entropy(sim, target, reduction="none")
    return per_row[:n].mean() + per_row[n:].mean()


def same_source(q_ids: torch.Tensor, queue_ids: torch.Tensor) -> torch.Tensor:
    """(B, K) bool: queue entry k comes from the same source (video, event) as query b."""
    return q_ids.reshape(-1, 1).to(queue_ids.device) == queue_ids.reshape(1, -1)


@full_precision
def info_nce_queue(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    tau: float = 0.1,
    q_ids: torch.Tensor | None = None,
    queue_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Queue InfoNCE: query ``q`` (B, D), its positive key ``k`` (B, D), negatives ``queue`` (K, D)::

        L = mean_b -log( exp(q_b.k_b/tau) / (exp(q_b.k_b/tau) + sum_j exp(q_b.n_j/tau)) )

    MoCo's loss (He et al., CVPR 2020), MoDist's visual and cross-modal terms, and paper Eq. 1 for
    event mask prediction (``q`` = v̂_t, ``k`` = v_t, ``queue`` = the distractors p_i). ``k`` and
    ``queue`` get no gradient. With ``q_ids`` (B,) and ``queue_ids`` (K,), queue entries from the
    query's own source (same id: its video, or the very event it must fill in) are left out of its
    negatives -- on a small data set a queue spans much of an epoch and would otherwise hold them.
    K may be 0 (an empty queue: the loss is 0)."""
    q = q.float()
    k = k.detach().float()
    queue = queue.detach().to(q.dtype)
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.t()
    if q_ids is not None and queue_ids is not None:
        neg = neg.masked_fill(same_source(q_ids, queue_ids), float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
