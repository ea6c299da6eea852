"""FIFO memory queue of negative keys (MoCo, ``facebookresearch/moco/builder.py``).

Used by MoDist (visual and flow keys) and by MaskPred (event-feature distractors, paper Eq. 1).
The queue is a ring of ``K`` L2-normalised ``dim``-d rows, initialised with random Gaussian vectors
(as MoCo does, ``init="random"``) so it can be used from the first step, or empty
(``init="empty"``: only keys actually enqueued are ever read, ``get(filled_only=True)``; MaskPred's
distractors are real past targets only). After the loss of a step has been computed,
``enqueue`` gathers the new keys of *all* processes (so every rank holds the same queue, whatever
the number of processes), overwrites the oldest rows and advances the pointer. Keys never carry a
gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..dist import gather_no_grad


class MemoryQueue(nn.Module):
    """Ring buffer ``queue`` (K, dim) + pointer ``ptr``; both are buffers, so they are checkpointed.

    Args:
        size: K, the number of keys held.
        dim: key dimension.
        require_divisible: assert ``K % global_batch == 0`` on every enqueue (MoCo's rule, which
            keeps a batch of keys contiguous in the ring; MoDist uses it).

    Every rank starts from the same queue (seeded init, or one checkpoint) and writes the same
    all-gathered keys, so its buffers are equal on every rank by construction: they are marked
    ``ddp_replicated`` and :func:`moviessl.training.fit` tells DDP not to broadcast them from rank 0
    before every step (for MaskPred's paper queue, 65536 x 2048 floats, 512 MB a step); it broadcasts
    them once when training starts instead.
    """

    ddp_replicated = True

    def __init__(
        self, size: int, dim: int, require_divisible: bool = False, track_ids: bool = False, init: str = "random"
    ):
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"MemoryQueue needs size > 0 and dim > 0, got {size}, {dim}")
        if init not in ("random", "empty"):
            raise ValueError(f"MemoryQueue init must be 'random' or 'empty', got {init!r}")
        self.size, self.dim, self.require_divisible = int(size), int(dim), bool(require_divisible)
        rows = (
            F.normalize(torch.randn(self.size, self.dim), dim=1)
            if init == "random"
            else torch.zeros(self.size, self.dim)
        )
        self.register_buffer("queue", rows)
        # ``track_ids``: keep the source id (e.g. video index, event id) of every key, so a query can
        # leave out keys of its own source (losses.info_nce_queue). On a small dataset a queue spans
        # a large part of an epoch and would otherwise hold stale keys of the query's own video as
        # "negatives" (-1 = none).
        self.track_ids = bool(track_ids)
        if self.track_ids:
            self.register_buffer("ids", torch.full((self.size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        # How many real keys were ever written (min(K, ...) of them are still there); lets callers
        # tell a queue still holding its random initialisation from a full one.
        self.register_buffer("num_enqueued", torch.zeros((), dtype=torch.long))
        # (ptr, num_enqueued) as the host last wrote them, None: read from the buffers at the next
        # use. ``enqueue`` and ``num_filled`` run every step, and reading the buffers there (int(t) of
        # a device tensor) made each step wait for the GPU, up to four times; the values follow from
        # the number of keys written, which the host knows.
        self._host: tuple[int, int] | None = (0, 0)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, require_divisible={self.require_divisible}"

    def _counts(self) -> tuple[int, int]:
        if self._host is None:
            self._host = (int(self.ptr), int(self.num_enqueued))
        return self._host

    def buffers_written(self) -> None:
        """The buffers were written from outside (a checkpoint loaded, a broadcast from rank 0): the
        pointer and count are read from them again."""
        self._host = None

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.buffers_written()

    @property
    def is_full(self) -> bool:
        return self._counts()[1] >= self.size

    @property
    def num_filled(self) -> int:
        return min(self._counts()[1], self.size)

    def get(self, filled_only: bool = False) -> torch.Tensor:
        """A detached copy of the keys (K, dim) to score queries against (``filled_only``: the
        rows written so far; the ring fills from row 0, so they are the first ones).

        A copy, because ``enqueue`` later overwrites the buffer in place, which would otherwise
        invalidate the autograd graph of a loss that used it."""
        return self.queue[: self.num_filled if filled_only else self.size].detach().clone()

    def forward(self) -> torch.Tensor:
        return self.get()

    def get_ids(self, filled_only: bool = False) -> torch.Tensor:
        """A copy of the keys' source ids (K,), -1 where unknown (needs ``track_ids``)."""
        if not self.track_ids:
            raise RuntimeError("this MemoryQueue was built without track_ids")
        return self.ids[: self.num_filled if filled_only else self.size].clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Gather ``keys`` (B_local, dim) (and their ``ids``, B_local) from all processes and write
        them at the pointer (FIFO)."""
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be (B, {self.dim}), got {tuple(keys.shape)}")
        if self.track_ids and (ids is None or ids.shape != keys.shape[:1]):
            raise ValueError("this queue tracks ids: enqueue(keys, ids) with one id per key")
        keys = gather_no_grad(keys.detach()).to(self.queue.dtype)
        n = keys.shape[0]
        if self.track_ids:
            ids = gather_no_grad(ids.detach().to(device=self.ids.device, dtype=torch.long))
        if self.require_divisible and self.size % n != 0:
            raise AssertionError(f"queue size {self.size} is not a multiple of the global batch of keys {n}")
        if n >= self.size:  # more keys than room: keep the newest K, in order
            keys, n = keys[-self.size :], self.size
            if self.track_ids:
                ids = ids[-self.size :]
        p, total = self._counts()
        idx = (torch.arange(n, device=self.queue.device) + p) % self.size
        self.queue[idx] = keys
        if self.track_ids:
            self.ids[idx] = ids
        self.ptr.fill_((p + n) % self.size)
        self.num_enqueued.add_(n)
        self._host = ((p + n) % self.size, total + n)
