"""Training data loaders that a resume continues where its checkpoint left them.

Lightning restores a run's step and its place in the epoch (``k`` of ``N`` batches done) and then
runs the epoch's ``N - k`` remaining batches, but a plain ``DataLoader`` starts the epoch over:
the resumed epoch trained on its first ``k`` batches twice and never reached the rest. Under DDP
the ``DistributedSampler`` drew the same order again (it shuffles by seed and epoch), so the
batches repeated exactly; on one process the random sampler drew a new order, so a random ``k``
videos of that epoch were left out. A job preempted every few hours lost part of every epoch it
was preempted in.

Lightning 2.x saves, in the fit loop's checkpoint, the state of every training loader that has
``state_dict`` / ``load_state_dict``, and restores it before the loader is iterated.
:class:`ResumableLoader` keeps which epoch it serves and how many batches of it it has handed out;
restored, it starts that epoch after them, without loading the skipped ones. That needs the
epoch's order to come out the same again, so training loaders shuffle with :class:`EpochShuffle`:
a permutation from the run's seed and the epoch. Under DDP Lightning wraps it
(``DistributedSamplerWrapper``, which passes ``set_epoch`` on) and deals each rank a share of it
after a second shuffle by its global seed and the epoch: as deterministic, but another order than
one process's.

The count is exact because Lightning does not read ahead from a loader whose length it knows (its
prefetching fetcher only prefetches unsized loaders): the batches handed out when a checkpoint is
written are the batches trained.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger("moviessl")


class EpochShuffle(Sampler[int]):
    """Indices ``0..n-1`` in an order drawn from ``seed`` and ``epoch``, or in order when ``seed`` is
    None; Lightning calls :meth:`set_epoch` before each epoch (an unshuffled
    loader needs to know its epoch too, to tell a state of this epoch from one of the last)."""

    def __init__(self, n: int, seed: int | None = 0):
        self.n, self.seed, self.epoch = int(n), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if self.seed is None:
            return iter(range(self.n))
        # seed and epoch mixed, not added (DistributedSampler's seed + epoch): seed s + 1 would shuffle
        # each epoch as seed s the next one, and a task's replicate seeds s, s + 1, ... share their orders
        mixed = int(np.random.SeedSequence([int(self.seed) % 2**63, self.epoch]).generate_state(2, np.uint64)[0])
        g = torch.Generator().manual_seed(mixed % 2**63)
        # on the CPU, its generator's: on torch's default device (a user's set_default_device("cuda"))
        # the GPU's randperm refused the CPU generator, and the loader never served a batch
        return iter(torch.randperm(self.n, generator=g, device="cpu").tolist())


class _Skipping:
    """The loader's index sampler, leaving out the first ``loader._skip`` entries while that is set
    (only while the loader makes an iterator: a persistent-workers iterator keeps this object and
    iterates it again each epoch)."""

    def __init__(self, base, loader: "ResumableLoader"):
        self.base, self.loader = base, loader

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self):
        if not self.loader._skip:
            return iter(self.base)
        # drawn now: Lightning sets the sampler's epoch after the iterator is made, which a lazy draw
        # would follow
        return iter(list(itertools.islice(iter(self.base), self.loader._skip, None)))


class ResumableLoader(DataLoader):
    """A ``DataLoader`` whose place in an epoch is saved with a Lightning checkpoint and restored
    with it (Lightning's ``_Stateful`` protocol): a resume serves the rest of the epoch it stopped in.

    The state is ``{"epoch", "batches", "items"}`` (the epoch served, batches handed out in it, the
    dataset's length) and, added by :class:`KeepLoaderPlace`, ``resumes_epoch``: the epoch Lightning's
    own loop resumes in. A state in the middle of an epoch goes on with that epoch; a finished or
    untouched one, or one of another number of items, skips nothing and serves ``resumes_epoch``."""

    def __init__(self, dataset: Dataset, **kwargs: Any):
        super().__init__(dataset, **kwargs)
        self._served: list = [None, 0]  # [epoch, batches handed out in it]
        self._restored: tuple | None = None
        self._skip = 0

    @property
    def _index_sampler(self):  # read by the iterator DataLoader.__iter__ makes
        base = super()._index_sampler
        return _Skipping(base, self) if self._skip else base

    def _layout(self) -> dict:
        """What decides which items a batch of an epoch holds, besides the epoch."""
        return {
            "items": len(self.dataset),
            "per_epoch": len(self),
            "batch_size": self.batch_size,
            "replicas": int(getattr(self.sampler, "num_replicas", 1)),
            "seed": _shuffle_seed(self.sampler),
        }

    def state_dict(self) -> dict:
        return {"epoch": self._served[0], "batches": int(self._served[1]), **self._layout()}

    def load_state_dict(self, state: dict) -> None:
        epoch, n = state.get("epoch"), int(state.get("batches", 0))
        resumes = state.get("resumes_epoch", epoch)  # without KeepLoaderPlace: Lightning resumes its epoch
        now = self._layout()
        changed = {k: (state[k], v) for k, v in now.items() if state.get(k) is not None and state[k] != v}
        if changed:
            # another order or partition altogether: skipping its first batches would leave out
            # arbitrary items and train others twice
            log.warning(
                "the training data or its partition changed since this checkpoint (%s): the epoch it stopped in "
                "is served from its start, while Lightning counts its batches done so far as done",
                ", ".join(f"{k} {a} then, {b} now" for k, (a, b) in changed.items()),
            )
            n = 0
        self._restored = (epoch, n, resumes)

    def __iter__(self):
        skip = 0
        if self._restored is not None:
            (epoch, n, resumes), self._restored = self._restored, None
            # A state in the middle of an epoch goes on with that epoch's order even where Lightning's
            # loop counts it as past (a run ended by max_steps, then extended, from a checkpoint written
            # before KeepLoaderPlace reopened such an epoch): Lightning runs the batches it has left
            # there, and the skipped ones were trained. The epoch is set here,
            # before the iterator is made: Lightning sets it only after, and workers draw their first
            # indices when it is made (the first resumed epoch was shuffled as epoch 0's).
            mid = 0 < n < len(self)
            target = epoch if mid else resumes
            if n >= len(self) and epoch is not None and resumes is not None:
                # finished in a step checkpoint on its last batch: Lightning's epoch count goes up after it
                target = max(resumes, epoch + 1)
            set_epoch = getattr(self.sampler, "set_epoch", None)
            if target is not None and callable(set_epoch):
                set_epoch(target)
            skip = n if mid else 0
        self._skip = skip
        try:
            # made on the CPU: torch's DataLoader draws its workers' base seed into a tensor of torch's
            # default device, so under a user's set_default_device("cuda") it came from the GPU's
            # stream (other worker seeds, other clips and crops than the same seed on the CPU) and the
            # workers, forked here, inherited the GPU as their default device
            with torch.device("cpu"):
                it = super().__iter__()
        finally:
            self._skip = 0
        self._served = [getattr(self.sampler, "epoch", None), skip]
        return self._counted(it, self._served)

    @staticmethod
    def _counted(it, served: list):
        for batch in it:
            served[1] += 1
            yield batch


class KeepLoaderPlace(pl.Callback):
    """Adds to each saved :class:`ResumableLoader` state the epoch Lightning's loop resumes in (its
    ``epoch_progress``, saved in the same checkpoint), which the loader cannot see itself.

    Also mends Lightning's own count in one case: a checkpoint written when training ends (``max_steps``
    reached on an epoch's last batch) has the epoch closed but its batch count still at the full
    epoch, and a resume that extends the run took the next epoch as all but done after one batch
    (Lightning 2.6). The count of a closed epoch is set back to none, as Lightning does when an epoch
    starts, and its last-batch mark cleared: with a validation loop, Lightning took the mark for a
    checkpoint written before the epoch's validation, ran a first iteration that only skips it and
    closed the next epoch there, so the extension trained the epoch after it (that one's order, under
    its name) and the next epoch was never seen."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._reopen_stopped_epoch(trainer, fit_loop)
        epochs = fit_loop.get("epoch_progress", {}).get("current", {})
        epoch = epochs.get("processed")
        for state in fit_loop.get("state_dict", {}).get("combined_loader", []):
            if isinstance(state, dict) and {"epoch", "batches"} <= state.keys():
                state["resumes_epoch"] = epoch
        batches = fit_loop.get("epoch_loop.batch_progress", {}).get("current")
        per_epoch = trainer.num_training_batches
        closed = epoch is not None and epoch == epochs.get("started")
        if closed and isinstance(batches, dict) and per_epoch != float("inf"):
            if batches.get("completed", 0) >= per_epoch:
                for k in batches:
                    batches[k] = 0
                fit_loop["epoch_loop.batch_progress"]["is_last_batch"] = False

    @staticmethod
    def _reopen_stopped_epoch(trainer, fit_loop: dict) -> None:
        """A run ended by ``max_steps`` inside an epoch: Lightning closes the epoch all the same (its
        epoch loop ends and the fit loop counts the epoch processed and completed), and an extension
        ran the batches left under the next epoch's name, then the epoch after it: that next epoch's
        order was never trained and every later epoch was numbered one up. The checkpoint is saved
        as one written inside the epoch (as a step checkpoint there is), which Lightning resumes
        with the same epoch's remaining batches."""
        progress = fit_loop.get("epoch_progress", {})
        batches = fit_loop.get("epoch_loop.batch_progress", {})
        done = batches.get("current", {}).get("completed", 0)
        per_epoch = trainer.num_training_batches
        stopped = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        if not stopped or per_epoch == float("inf") or not 0 < done < per_epoch or batches.get("is_last_batch"):
            return
        counts = [progress.get(k, {}) for k in ("current", "total")]
        if not all({"started", "processed", "completed"} <= c.keys() for c in counts):
            return
        if all(c["processed"] == c["started"] == c["completed"] and c["processed"] > 0 for c in counts):
            for c in counts:
                c["processed"] -= 1
                c["completed"] -= 1


def _shuffle_seed(sampler) -> int | None:
    """The seed of the :class:`EpochShuffle` that orders the epoch, also inside Lightning's
    ``DistributedSamplerWrapper`` (whose own shuffle seed is the run's global seed too)."""
    inner = getattr(getattr(sampler, "dataset", None), "_sampler", None)
    s = sampler if isinstance(sampler, EpochShuffle) else inner
    return s.seed if isinstance(s, EpochShuffle) else None


def train_loader(dataset: Dataset, batch_size: int, *, seed: int, shuffle: bool = True, **kwargs: Any):
    """The loader a training stage gives :func:`moviessl.training.fit`: resumable mid-epoch, and
    shuffled (``shuffle``) by :class:`EpochShuffle` from ``seed``."""
    sampler = EpochShuffle(len(dataset), seed if shuffle else None)
    return ResumableLoader(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
