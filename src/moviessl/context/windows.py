"""Windows of event tokens for TxE pretraining, read from feature folders (paper §3.3, §4).

:class:`FeatureWindows` turns feature folders into windows of N consecutive event tokens at a token
stride (1/2/3 s: every k-th event of features extracted at a finer stride); :func:`split_ids` holds
out whole videos for validation.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import BadInputError
from ..features.store import FeatureStore

log = logging.getLogger("moviessl.context")

PRELOAD_BYTES = 1 << 30


class FeatureWindows(Dataset):
    """Windows of ``window`` event tokens from one or more :class:`FeatureStore` folders.

    A video with L events at feature stride s_f gives tokens every k = token_stride_s / s_f events.
    An epoch visits each video ``windows_per_video`` times, each time at a uniformly random start
    (``random_start=False``: evenly spread, deterministic starts, for validation), so a 10-s VidSitu
    clip and a 2-min LVU movie weigh the same per epoch, as in the paper's epoch counts. Windows
    shorter than ``window`` (short videos) are left-aligned and padded (``pad`` True); a random one
    starts at any of the video's first k events, so every event is a token of some window.

    Events of a damaged stretch (zero rows that ``moviessl extract`` lists as ``missing``) are no
    tokens, targets or distractors: a window lies within one undamaged stretch of the video, drawn
    in proportion to its length (the longest without ``random_start``), and the statistics leave
    them out. A video with no undamaged event is skipped.

    Items: ``{"x": (N, D) float32, "pad": (N,) bool, "uid": (N,) int64}``; ``uid`` identifies the
    event (video, index), from ``uid_base`` on, so a queue never scores a copy of the positive as a
    distractor (a validation set numbers its events after the training set's: they share a queue).
    Files of the wrong shape are skipped (logged once, counted in ``num_bad``).
    """

    def __init__(
        self,
        stores: Sequence[FeatureStore],
        window: int = 5,
        token_stride_s: float = 2.0,
        windows_per_video: int = 1,
        random_start: bool = True,
        ids: Sequence[tuple[int, str]] | None = None,
        preload: bool | None = None,
        uid_base: int = 0,
    ):
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
                raise BadInputError(
                    s.root,
                    f"token stride {self.token_stride_s:g} s is not a multiple of the features' "
                    f"stride {s.stride_s:g} s (extract with --stride 1 for 1/2/3-s tokens)",
                )
            self.steps.append(int(round(k)))
        wanted = ids if ids is not None else [(i, v) for i, s in enumerate(self.stores) for v in s.ids]
        self.videos: list[tuple[int, str, int, int]] = []  # (store, id, num_events, uid offset)
        self.pieces: list[list[tuple[int, int]]] = []  # per video: its undamaged stretches [lo, hi)
        self.num_bad, offset = 0, int(uid_base)
        for si, vid in wanted:
            store = self.stores[si]
            try:
                n = int(store.load(vid, mmap=True).shape[0])  # header only; validates the shape
                # VidSitu's released layout has no index: nothing marked missing
                pieces = _undamaged(store.missing(vid)) if store.index is not None else [(0, n)]
            except BadInputError as e:  # an unreadable file or a malformed index entry: this video only
                log.warning("skipping %s", e)
                self.num_bad += 1
                continue
            if not pieces:
                log.warning("skipping %s: %s", vid, "no events" if n == 0 else "every event is in a damaged stretch")
                self.num_bad += 1
                continue
            self.videos.append((si, vid, n, offset))
            self.pieces.append(pieces)
            offset += n
        if not self.videos:
            raise BadInputError(self.stores[0].root, "no usable feature files")
        self.num_events = offset - int(uid_base)
        nbytes = self.num_events * self.dim * 4
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
            # a video with fewer than span + k - 1 events still has k lattices of tokens (k events
            # apart): starting no later than `last` left the other lattices' events out of every window
            start = int(np.random.randint(0, max(last, min(k, num_events) - 1) + 1))
        else:  # evenly spread over the video, middle first
            start = last // 2 if self.windows_per_video == 1 else round(rep * last / (self.windows_per_video - 1))
        idx = start + k * np.arange(self.window)
        return idx[idx < num_events]

    def _piece(self, j: int) -> tuple[int, int]:
        pieces = self.pieces[j]
        if len(pieces) == 1:  # an undamaged video: no draw, the same windows as ever
            return pieces[0]
        sizes = np.array([hi - lo for lo, hi in pieces], np.float64)
        if not self.random_start:
            return pieces[int(np.argmax(sizes))]
        return pieces[int(np.random.choice(len(pieces), p=sizes / sizes.sum()))]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j, rep = divmod(i, self.windows_per_video)
        si, _, n, offset = self.videos[j]
        lo, hi = self._piece(j)
        idx = lo + self.token_indices(hi - lo, self.steps[si], rep)
        x = np.zeros((self.window, self.dim), np.float32)
        x[: len(idx)] = np.asarray(self._feats(j)[idx], dtype=np.float32)
        pad = np.arange(self.window) >= len(idx)
        uid = np.full(self.window, -1, np.int64)
        uid[: len(idx)] = offset + idx
        return {"x": torch.from_numpy(x), "pad": torch.from_numpy(pad), "uid": torch.from_numpy(uid)}

    def feature_stats(self, max_videos: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and variance of the events of (a sample of) the videos: the fixed input
        normalisation of the TxE and the centre of the targets."""
        rng = np.random.default_rng(seed)
        pick = rng.permutation(len(self.videos))[:max_videos]
        total, sq, count = np.zeros(self.dim, np.float64), np.zeros(self.dim, np.float64), 0
        for j in pick:
            keep = np.concatenate([np.arange(lo, hi) for lo, hi in self.pieces[int(j)]])
            f = np.asarray(self._feats(int(j)), dtype=np.float64)
            f = f if len(keep) == len(f) else f[keep]
            total += f.sum(0)
            sq += (f * f).sum(0)
            count += len(f)
        mean = total / max(count, 1)
        var = np.maximum(sq / max(count, 1) - mean * mean, 0.0)
        return mean.astype(np.float32), var.astype(np.float32)

    def feature_mean(self, max_videos: int = 2000, seed: int = 0) -> np.ndarray:
        return self.feature_stats(max_videos, seed)[0]


class PaddedForShards(Dataset):
    """``dataset`` padded to a multiple of ``world`` items with copies of its first ones, each item's
    ``real`` False on a copy. Lightning's distributed sampler pads an evaluation set that does not
    split evenly over the processes with such copies itself, unmarked, so they counted twice in the
    metrics; padded here, it adds none and the module leaves the marked copies out, while every
    process still gets an item (and so takes part in the metrics' reduction).

    ``world`` None: the processes of the process group when the length is asked for (the sampler is
    built after the group is up), so a launch other than the config's (torchrun, ``devices: auto``)
    pads for the processes there are."""

    def __init__(self, dataset: Dataset, world: int | None = None):
        self.dataset, self.n, self.world = dataset, len(dataset), world

    def __len__(self) -> int:
        world = self.world
        if world is None:
            dist = torch.distributed
            world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        return self.n + (-self.n) % max(1, int(world)) if self.n else 0

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        # on the CPU, as the item's others: on torch's default device (a user's set_default_device("cuda"),
        # which a forked loader worker inherits) the GPU, which a forked worker cannot start
        return {**self.dataset[i % self.n], "real": torch.tensor(i < self.n, device="cpu")}


def _undamaged(missing: np.ndarray) -> list[tuple[int, int]]:
    """The runs ``[lo, hi)`` of events not marked missing, in order."""
    ok = np.concatenate([[False], ~np.asarray(missing, bool), [False]])
    edges = np.flatnonzero(np.diff(ok.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


MIN_VIDEOS_TO_HOLD_OUT = 20  # fewer videos: none held out (a held-out video or two measures nothing)


def split_ids(ids: Sequence[tuple[int, str]], val_fraction: float, seed: int = 0) -> tuple[list, list]:
    """Hold out whole videos (a seeded random ``val_fraction``, none if fewer than
    :data:`MIN_VIDEOS_TO_HOLD_OUT` videos), never every one: a fraction below 1 that rounds to all
    of them (0.98 of 20) left nothing to train on."""
    ids = list(ids)
    n_val = min(int(round(len(ids) * val_fraction)), len(ids) - 1) if len(ids) >= MIN_VIDEOS_TO_HOLD_OUT else 0
    perm = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(perm[:n_val].tolist())
    vs = set(val)
    return [ids[i] for i in range(len(ids)) if i not in vs], [ids[i] for i in val]
