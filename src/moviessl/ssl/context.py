"""MaskPred pretraining of the TxE contextualizer on cached event features (paper §3.3).

:class:`FeatureWindows` turns feature folders into windows of N consecutive event tokens at a token
stride (1/2/3 s: every k-th event of features extracted at a finer stride); :class:`MaskPredModule`
is the LightningModule (span masking, Eq. 1 against a FIFO queue, or the L2 ablation), trained
through :func:`moviessl.training.fit` by ``moviessl pretrain-context``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from ..errors import BadInputError
from ..features.store import FeatureStore
from . import maskpred as mp

log = logging.getLogger("moviessl.context")

UID_MOD = 1 << 24  # token ids travel in a float32 queue column: exact below 2**24
PRELOAD_BYTES = 1 << 30


class FeatureWindows(Dataset):
    """Windows of ``window`` event tokens from one or more :class:`FeatureStore` folders.

    A video with L events at feature stride s_f gives tokens every k = token_stride_s / s_f events.
    An epoch visits each video ``windows_per_video`` times, each time at a uniformly random start
    (``random_start=False``: evenly spread, deterministic starts, for validation), so a 10-s VidSitu
    clip and a 2-min LVU movie weigh the same per epoch, as in the paper's epoch counts. Windows
    shorter than ``window`` (short videos) are left-aligned and padded (``pad`` True).

    Items: ``{"x": (N, D) float32, "pad": (N,) bool, "uid": (N,) int64}``; ``uid`` identifies the
    event (video, index) so a queue never scores a copy of the positive as a distractor.
    Files of the wrong shape are skipped (logged once, counted in ``num_bad``).
    """

    def __init__(self, stores: Sequence[FeatureStore], window: int = 5, token_stride_s: float = 2.0,
                 windows_per_video: int = 1, random_start: bool = True, ids: Sequence[tuple[int, str]] | None = None,
                 preload: bool | None = None):
        if not stores:
            raise BadInputError(None, "no feature folders given")
        self.stores = list(stores)
        self.window, self.windows_per_video, self.random_start = int(window), int(windows_per_video), random_start
        self.token_stride_s = float(token_stride_s)
        dims = {s.dim for s in self.stores}
        if len(dims) != 1:
            raise BadInputError(self.stores[-1].root, f"feature folders disagree on the feature dim: {sorted(dims)}")
        self.dim = dims.pop()
        self.steps = []
        for s in self.stores:
            k = self.token_stride_s / s.stride_s
            if k < 1 - 1e-6 or abs(k - round(k)) > 1e-6:
                raise BadInputError(s.root, f"token stride {self.token_stride_s:g} s is not a multiple of the features' "
                                            f"stride {s.stride_s:g} s (extract with --stride 1 for 1/2/3-s tokens)")
            self.steps.append(int(round(k)))
        wanted = ids if ids is not None else [(i, v) for i, s in enumerate(self.stores) for v in s.ids]
        self.videos: list[tuple[int, str, int, int]] = []  # (store, id, num_events, uid offset)
        self.num_bad, offset = 0, 0
        for si, vid in wanted:
            try:
                n = int(self.stores[si].load(vid, mmap=True).shape[0])  # header only; validates the shape
            except BadInputError as e:
                log.warning("skipping %s", e)
                self.num_bad += 1
                continue
            self.videos.append((si, vid, n, offset))
            offset += n
        if not self.videos:
            raise BadInputError(self.stores[0].root, "no usable feature files")
        if offset >= UID_MOD:
            log.info("%d events: token ids wrap modulo 2**24 (rare harmless exclusions)", offset)
        self.num_events = offset
        nbytes = offset * self.dim * 4
        self._cache: list[np.ndarray] | None = None
        if preload or (preload is None and nbytes <= PRELOAD_BYTES):
            self._cache = [self.stores[si].load(vid) for si, vid, _, _ in self.videos]

    def __len__(self) -> int:
        return len(self.videos) * self.windows_per_video

    def ids(self) -> list[tuple[int, str]]:
        return [(si, vid) for si, vid, _, _ in self.videos]

    def _feats(self, j: int) -> np.ndarray:
        if self._cache is not None:
            return self._cache[j]
        si, vid, _, _ = self.videos[j]
        return self.stores[si].load(vid, mmap=True)

    def token_indices(self, num_events: int, k: int, rep: int) -> np.ndarray:
        span = (self.window - 1) * k + 1
        last = max(0, num_events - span)
        if self.random_start:
            start = int(np.random.randint(0, last + 1))
        else:  # evenly spread over the video, middle first
            start = last // 2 if self.windows_per_video == 1 else round(rep * last / (self.windows_per_video - 1))
        idx = start + k * np.arange(self.window)
        return idx[idx < num_events]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j, rep = divmod(i, self.windows_per_video)
        si, _, n, offset = self.videos[j]
        idx = self.token_indices(n, self.steps[si], rep)
        x = np.zeros((self.window, self.dim), np.float32)
        x[: len(idx)] = np.asarray(self._feats(j)[idx], dtype=np.float32)
        pad = np.arange(self.window) >= len(idx)
        uid = np.full(self.window, -1, np.int64)
        uid[: len(idx)] = (offset + idx) % UID_MOD
        return {"x": torch.from_numpy(x), "pad": torch.from_numpy(pad), "uid": torch.from_numpy(uid)}

    def feature_mean(self, max_videos: int = 2000, seed: int = 0) -> np.ndarray:
        """Mean event feature over (a sample of) the videos: the fixed centre of the targets."""
        rng = np.random.default_rng(seed)
        pick = rng.permutation(len(self.videos))[:max_videos]
        total, count = np.zeros(self.dim, np.float64), 0
        for j in pick:
            f = np.asarray(self._feats(int(j)), dtype=np.float64)
            total += f.sum(0)
            count += len(f)
        return (total / max(count, 1)).astype(np.float32)


def split_ids(ids: Sequence[tuple[int, str]], val_fraction: float, seed: int = 0) -> tuple[list, list]:
    """Hold out whole videos (a seeded random ``val_fraction``, none if fewer than 20 videos)."""
    ids = list(ids)
    n_val = int(round(len(ids) * val_fraction)) if len(ids) >= 20 else 0
    perm = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(perm[:n_val].tolist())
    vs = set(val)
    return [ids[i] for i in range(len(ids)) if i not in vs], [ids[i] for i in val]


class MaskPredModule(pl.LightningModule):
    """TxE + prediction head trained by event mask prediction.

    Only ``self.txe`` is exported (stage ``context``); the head, the fixed target centre/projection
    and the queue are training-only.
    """

    def __init__(self, *, in_dim: int, txe_preset: str = "txe_paper", txe_kwargs: dict | None = None, window: int = 5,
                 alpha: float = 0.6, mask_sizes: Sequence[int] | None = None, sampling: str = "uniform",
                 loss: str = "infonce", tau: float = 0.1, queue_size: int = 65536, keys_per_sample: int = 2,
                 target_dim: int | None = None, head_hidden: int | None = None, lr: float = 3e-4,
                 weight_decay: float = 0.05, warmup_frac: float = 0.05, betas: Sequence[float] = (0.9, 0.98),
                 token_stride_s: float = 2.0, feature_stride_s: float = 2.0):
        super().__init__()
        from ..models.txe import build_txe
        from .queue import MemoryQueue

        if sampling not in ("uniform", "max_discrepancy"):
            raise BadInputError(None, f"maskpred.sampling must be uniform or max_discrepancy, got '{sampling}'")
        if loss not in ("infonce", "l2"):
            raise BadInputError(None, f"maskpred.loss must be infonce or l2, got '{loss}'")
        self.save_hyperparameters()
        self.txe_preset, self.txe_kwargs = txe_preset, dict(txe_kwargs or {})
        self.txe = build_txe(txe_preset, in_dim=in_dim, **self.txe_kwargs)
        self.window, self.sizes = int(window), mp.mask_size_set(window, alpha, mask_sizes)
        self.sampling, self.loss_name, self.tau = sampling, loss, float(tau)
        self.keys_per_sample = int(keys_per_sample)
        tdim = int(target_dim or in_dim)
        self.tdim = tdim
        if target_dim:  # fixed Gaussian projection: cosines preserved (JL), a smaller queue
            g = torch.Generator().manual_seed(0)
            self.register_buffer("target_proj", torch.randn(in_dim, tdim, generator=g) / math.sqrt(tdim))
        else:
            self.target_proj = None
        self.register_buffer("target_mean", torch.zeros(in_dim))
        self.head = mp.PredictionHead(self.txe.dim, tdim, head_hidden)
        # rows: [target (tdim) | token id]; the id column keeps copies of a positive out of its negatives
        self.queue = MemoryQueue(queue_size, tdim + 1)

    # --- pieces -----------------------------------------------------------------------------
    def set_target_mean(self, mean: np.ndarray | torch.Tensor) -> None:
        self.target_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))

    def targets(self, v: torch.Tensor) -> torch.Tensor:
        return mp.feature_targets(v, self.target_mean, self.target_proj)

    def distractors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys (K', tdim), uids (K',)) of the filled part of the queue (real past targets only)."""
        n = min(int(self.queue.num_enqueued), self.queue.size)
        q = self.queue.get()[:n]
        return q[:, :-1], q[:, -1]

    def sample_masks(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        if self.sampling == "max_discrepancy":
            was = self.txe.training
            self.txe.eval()  # the discrepancy of the model itself, not of a dropout sample
            try:
                return mp.max_discrepancy_masks(self.txe, x, self.sizes, pad)
            finally:
                self.txe.train(was)
        return mp.sample_span_masks(self.window, self.sizes, pad=pad)

    def masked_predictions(self, batch: dict, masks: torch.Tensor | None = None):
        x, pad, uid = batch["x"], batch["pad"], batch["uid"]
        if masks is None:
            masks = self.sample_masks(x, pad)
        out = self.txe(x, mask=masks, pad=pad)
        pred = self.head(out[masks])
        return pred, self.targets(x[masks]), uid[masks], masks

    def compute_loss(self, pred, target, tuid):
        keys, quid = self.distractors()
        exclude = mp.uid_exclusion(tuid, quid)
        if self.loss_name == "l2":
            loss = mp.maskpred_l2_loss(pred, target)
        else:
            loss = mp.maskpred_infonce_loss(pred, target, keys, self.tau, exclude)
        return loss, mp.retrieval_accuracy(pred.detach().float(), target, keys, exclude)

    @torch.no_grad()
    def enqueue(self, batch: dict) -> None:
        """A fixed number of targets per window (equal sizes on every process for the all-gather)."""
        x, pad, uid = batch["x"], batch["pad"], batch["uid"]
        b = x.shape[0]
        weights = (~pad).float() + 1e-6  # a padded slot is only drawn if the window has no other
        pick = torch.multinomial(weights, self.keys_per_sample, replacement=bool((~pad).sum(1).min() < self.keys_per_sample))
        rows = torch.arange(b, device=x.device)[:, None].expand_as(pick)
        keys = self.targets(x[rows, pick].reshape(-1, x.shape[-1]))
        ids = uid[rows, pick].reshape(-1, 1).to(keys.dtype)
        self.queue.enqueue(torch.cat([keys, ids], dim=1))

    # --- Lightning ----------------------------------------------------------------------------
    def items_in_batch(self, batch: dict) -> int:
        return int((~batch["pad"]).sum())  # tokens

    def training_step(self, batch: dict, batch_idx: int):
        pred, target, tuid, masks = self.masked_predictions(batch)
        loss, acc = self.compute_loss(pred, target, tuid)
        self.enqueue(batch)
        bs = batch["x"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/retrieval_acc", acc, batch_size=bs)
        self.log("train/mask_size", masks.sum(1).float().mean(), batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int):
        g = torch.Generator().manual_seed(1000 + batch_idx)  # the same masks every validation
        masks = mp.sample_span_masks(self.window, self.sizes, pad=batch["pad"], generator=g)
        pred, target, tuid, _ = self.masked_predictions(batch, masks)
        loss, acc = self.compute_loss(pred, target, tuid)
        bs = batch["x"].shape[0]
        self.log("val/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("val/retrieval_acc", acc, prog_bar=True, batch_size=bs, sync_dist=True)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            # norms, biases, position embeddings and the [MASK] token are not weight-decayed
            (no_decay if p.ndim < 2 or "pos" in name or "mask" in name else decay).append(p)
        hp = self.hparams
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=hp.lr, betas=tuple(hp.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = max(1, int(hp.warmup_frac * total))

        def schedule(step: int) -> float:  # linear warm-up, then cosine to 0
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- export -------------------------------------------------------------------------------
    def export(self, path, config: Any = None, meta: dict | None = None):
        """Write the TxE as a moviessl ``context`` checkpoint (contract meta + ``meta``)."""
        from ..checkpoint import arch_spec, save_checkpoint

        hp = self.hparams
        m = {"window": self.window, "token_stride_s": float(hp.token_stride_s), "in_dim": int(hp.in_dim),
             "loss": self.loss_name, "mask_sizes": list(self.sizes), "sampling": self.sampling, "tau": self.tau,
             "queue_size": self.queue.size, "target": "centred input feature" + (f", projected to {self.tdim}" if hp.target_dim else ""),
             "feature_stride_s": float(hp.feature_stride_s), "dim": int(self.txe.dim)}
        m.update(meta or {})
        arch = arch_spec("moviessl.models.txe:build_txe", preset=self.txe_preset, in_dim=int(hp.in_dim), **self.txe_kwargs)
        return save_checkpoint(path, stage="context", arch=arch, state_dict=self.txe.state_dict(), config=config, meta=m)
