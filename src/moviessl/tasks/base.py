"""The benchmark-agnostic task layer: what a task declares, how its model trains, and K seeded runs.

- :class:`TaskSpec` -- the protocol every task of every benchmark implements (VidSitu's verb /
  SRL / relation in :mod:`moviessl.tasks.vidsitu`; LVU's next): its metrics, how it builds its model
  on top of the shared :class:`~moviessl.tasks.encoder.EventEncoder`, what its loss needs, and how
  it trains -- end to end on clips or on frozen features. Benchmark specifics (targets, submission
  entries) are the benchmark's own protocol on top of this one.
- :class:`TaskModule` -- the one LightningModule of every task head: ``model.loss(x, y, **kw)``,
  AdamW with separate learning-rate scales for a fine-tuned backbone / TxE (scale 0 freezes), a
  linear warm-up then a constant rate (VidSitu's schedule).
- :class:`SeedJob` + :func:`run_seeds` -- K seeded runs of one setting, each trained through
  :func:`moviessl.training.fit`, scored by the benchmark's evaluator, exported, and never redone
  when finished with the same settings; :func:`write_summary` -- mean ± SE over the runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from ..config import MAX_SEED, TrainerConfig, save_config
from ..dist import broadcast_object, global_mean_share, is_dist, times_share
from ..errors import BadInputError
from ..eval.stats import summarize
from ..optim import lr_scheduler, make_optimizer, no_decay_for_vectors, param_groups, warmup_steps
from ..training import fit, keeps_random_streams, planned_world_size, seed_everything, trainer_cfg
from ..utils import plural, progress
from ..utils.io import atomic_write_json, atomic_write_text, json_float

log = logging.getLogger("moviessl.tasks")


class TaskSpec(Protocol):
    """What a task declares to the runner."""

    name: str
    metric_keys: tuple[str, ...]  # reported metrics, the first is the main one
    end_to_end: bool  # with videos: fine-tune the backbone on clips (else: frozen features)
    ignore_index: int | None  # target value of an input that fails to decode mid-run (None: keep)

    def build_model(
        self, in_dim: int, backbone_arch: Mapping | None = None, txe_arch: Mapping | None = None
    ) -> tuple[nn.Module, dict]:
        """(model with ``loss(x, y, **loss_kwargs)``, its arch spec for the checkpoint)."""

    def loss_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of the model's loss (e.g. class weights)."""

    def meta(self) -> dict[str, Any]:
        """What a task checkpoint must carry to turn outputs into predictions (vocabularies...)."""


@dataclass
class TaskOptim:
    """Optimiser of a task head: AdamW at ``lr`` (VidSitu's betas), ``warmup_steps`` (or
    ``warmup_frac`` of all steps) of linear warm-up, then ``decay``: ``constant`` (VidSitu) or
    ``linear`` to 0 at the last step (LVU's BERT schedule); a fine-tuned backbone / TxE learns at
    ``lr`` x its scale (0 freezes). Weight decay on every parameter (VidSitu's Adam), or with
    ``no_decay_vectors`` not on biases and norms (LVU's / BERT's split)."""

    lr: float
    weight_decay: float = 0.0
    warmup_steps: int = 0
    backbone_lr_scale: float = 1.0
    txe_lr_scale: float = 1.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_frac: float = 0.0
    decay: str = "constant"
    no_decay_vectors: bool = False


class TaskModule(pl.LightningModule):
    # Under DDP (moviessl.training.fit): some trainable parameters take no part in a task's loss --
    # a fine-tuned TxE's [MASK] token, an OT's instance pathway on scene-only rows, its mask vector
    # without track masking -- and DDP must be told, or it fails at the second step.
    ddp_find_unused_parameters = True

    def __init__(self, model: nn.Module, optim: TaskOptim, loss_kwargs: Mapping[str, Any] | None = None):
        super().__init__()
        self.model, self.optim = model, optim
        self.loss_kwargs = dict(loss_kwargs or {})

    def setup(self, stage: str) -> None:
        # Freeze the lr-scale-0 parts here, before DDP wraps the model (configure_optimizers runs
        # after): DDP would otherwise keep reducing a frozen backbone's gradients every step.
        scale, part = self.lr_scales(), self.part_of()
        for p in self.model.parameters():
            if scale[part(p)] <= 0:
                p.requires_grad_(False)

    def on_train_start(self) -> None:
        # frozen parts in eval mode from the first step: Lightning's fit calls no train(); here,
        # not in setup, as Lightning warns of modules in eval mode just before this hook
        self.train(self.training)

    def frozen_in_eval(self) -> list[nn.Module]:
        """The lr-scale-0 parts kept in eval mode while the rest trains: a frozen Slow-D or TxE. In
        train mode a Slow-D's BatchNorms normalised by each batch's statistics (the features differed
        from those it gives at prediction) and their running statistics drifted, so a "frozen"
        backbone changed and was exported changed; a frozen TxE's dropout noised the tokens the head
        trained on, while it was scored on the clean ones (eval mode), so "frozen" was not the encoder
        the head is scored with."""
        enc = getattr(self.model, "encoder", None)
        scale = self.lr_scales()
        parts = [(getattr(enc, name, None), scale[name]) for name in ("backbone", "txe")]
        return [m for m, s in parts if m is not None and s <= 0]

    def train(self, mode: bool = True):
        # Lightning's loops toggle the whole module (and restore each submodule's mode after
        # validation); the frozen parts go back to eval after every toggle to train mode
        super().train(mode)
        if mode:
            for m in self.frozen_in_eval():
                m.eval()
        return self

    def items_in_batch(self, batch: dict) -> int:
        x = batch["x"]
        return int(x.shape[0]) if isinstance(x, torch.Tensor) else len(batch["y"])  # a dict of token tensors

    def device_loss_kwargs(self) -> dict[str, Any]:
        """:attr:`loss_kwargs` on the module's device, copied once per device: copied at every step
        (relation's class weights), each copy from the host waited for all the work queued on a GPU."""
        held = getattr(self, "_kw_on", None)
        if held is None or held[0] != self.device or held[1] is not self.loss_kwargs:
            kw = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in self.loss_kwargs.items()}
            held = self._kw_on = (self.device, self.loss_kwargs, kw)
        return held[2]

    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0):
        # what a model draws for its training step from the inputs (LVU's track masks: ``host_draws``)
        # drawn here, on the host: drawn in the step from the transferred inputs, each count it read
        # waited for the GPU
        draws = getattr(self.model, "host_draws", None)
        if (
            draws is not None
            and self._trainer is not None
            and self._trainer.training
            and isinstance(batch, dict)
            and "x" in batch
        ):
            batch = {**batch, "x": draws(batch["x"])}
        return batch

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        kw = self.device_loss_kwargs()
        loss = self.model.loss(batch["x"], batch["y"], **kw)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=self.items_in_batch(batch))
        items = getattr(self.model, "loss_items", None)
        if items is not None and is_dist():  # the logged loss stays this process's own mean
            # a loss that is a mean over a count that varies with the data (labelled events, target
            # tokens, summed class weights) is weighted so that DDP's averaged gradient is that of the
            # mean over every process's items; a model without ``loss_items`` means over its batch's
            # items, which the distributed sampler gives every process as many of
            # (a count on the device, reduced there: read on the host, both waited for the GPU)
            loss = times_share(loss, global_mean_share(items(batch["y"], **kw), loss.device))
        return loss

    def part_of(self) -> Callable[[nn.Parameter], str]:
        """Which part a parameter belongs to: ``backbone``, ``txe`` or ``head`` (everything else)."""
        enc = getattr(self.model, "encoder", None)
        ids = {
            part: {id(p) for p in getattr(enc, part).parameters()}
            for part in ("backbone", "txe")
            if enc is not None and getattr(enc, part, None) is not None
        }
        return lambda p: next((part for part, s in ids.items() if id(p) in s), "head")

    def lr_scales(self) -> dict[str, float]:
        o = self.optim
        return {"backbone": o.backbone_lr_scale, "txe": o.txe_lr_scale, "head": 1.0}

    def configure_optimizers(self):
        o = self.optim
        scale, part = self.lr_scales(), self.part_of()
        groups: list[dict] = []
        for name in ("backbone", "txe", "head"):
            params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and part(p) == name]
            # lr scale 0 = frozen (in setup); weight decay on every parameter (VidSitu's Adam(W)) or
            # not on vectors (LVU's)
            if scale[name] > 0 and params:
                no_decay = no_decay_for_vectors if o.no_decay_vectors else (lambda n, p: False)
                decayed, rest = param_groups(params, o.weight_decay, no_decay, lr=o.lr * scale[name], name=name)
                rest["name"] = f"{name}_no_decay"  # Lightning's lr monitor needs distinct names
                groups += [decayed, rest]
        opt = make_optimizer(groups, "adamw", o.lr, betas=o.betas)
        total = max(1, int(self.trainer.estimated_stepping_batches)) if o.decay != "constant" else 0
        warm = o.warmup_steps or (warmup_steps(o.warmup_frac, total) if total else 0)
        if warm <= 0 and o.decay == "constant":
            return opt
        return {"optimizer": opt, "lr_scheduler": lr_scheduler(opt, total, warm, decay=o.decay)}


def lowest(values: Mapping[str, float]) -> str:
    """The key of the lowest value, a non-finite one (a diverged run) never chosen over a finite
    one (``min`` keeps a NaN that comes first: every comparison with it is false)."""
    return min(values, key=lambda k: (not math.isfinite(values[k]), values[k]))


def settings_hash(*parts: Any) -> str:
    """A short hash of everything that determines a run (a finished run with the same hash is reused)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def placeless(desc: str, *paths: Any) -> str:
    """A description of a run's inputs without the folders it names (``paths``, as the description
    has them: resolved), for :func:`settings_hash`: their contents are in the run's data digest, and
    a feature folder moved (a cluster's scratch to a home folder) or copied must not make its
    finished runs another setting's, trained again. The description as recorded keeps them.
    Give only folders the digest tells apart by what they hold (:func:`indexed`)."""
    for p in paths:
        if p is not None:
            desc = desc.replace(str(Path(p).resolve()), "")
    return desc


def indexed(*folders: Any) -> list:
    """Those of ``folders`` an extraction made (an ``index.json``: its backbone's hash, its settings
    and each video's facts enter the data digest, beside each file's name and size), which
    :func:`placeless` may leave out. A folder without one (features made elsewhere, LVU's released
    ones) is digested by its files' names and sizes alone: another such folder of other features of
    the same shapes read alike, so its place stays in the hash (moved, its runs train again)."""
    from ..features.store import INDEX_NAME

    return [f for f in folders if f is not None and (Path(f) / INDEX_NAME).is_file()]


# trainer settings that change how a run is shown, logged or checkpointed, not what it computes
SHOWN_ONLY = ("progress_bar", "log_every_n_steps", "ckpt_every_n_steps", "tensorboard", "profiler", "ddp_timeout_s")


def result_config(cfg: Mapping[str, Any]) -> dict:
    """A resolved config (:func:`moviessl.config.to_dict`) without :data:`SHOWN_ONLY`'s trainer
    settings, for :func:`settings_hash`: a K-seed job resumed with its progress bar off (a batch
    job) or another checkpoint interval reuses its finished runs instead of training them again."""
    trainer = {k: v for k, v in (cfg.get("trainer") or {}).items() if k not in SHOWN_ONLY}
    return {**cfg, "trainer": trainer}


@dataclass
class SeedJob:
    """What every seed of one task setting shares; the benchmark fills in the callbacks.

    ``build(seed)`` -> (model with its pretrained parts loaded, arch); ``loader(seed)`` -> the
    training DataLoader; ``score(model, run_dir)`` -> metrics (percent; writes the predictions);
    ``export(model, arch, run_dir, {"seed", "metrics"})`` writes the checkpoints."""

    name: str
    out: Path
    settings: str
    config: Any
    optim: TaskOptim
    trainer: TrainerConfig
    epochs: int
    build: Callable[[int], tuple[nn.Module, dict]]
    loader: Callable[[int], Any]
    score: Callable[[nn.Module, Path], dict]
    export: Callable[[nn.Module, dict, Path, dict], None]
    loss_kwargs: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)  # facts copied into every metrics.json
    throughput_name: str = "segments_per_s"
    resume: bool = False
    # hashes a finished run of these settings was recorded under by an earlier version (the whole
    # config, before :func:`result_config`): such a run is reused, not trained again
    earlier_settings: tuple[str, ...] = ()


@keeps_random_streams
def run_seed(job: SeedJob, seed: int) -> dict:
    """Train, score and export one run (skipped when already finished with the same settings)."""
    run_dir = job.out / f"seed{seed}"
    mfile = run_dir / "metrics.json"
    if mfile.is_file():
        done = json.loads(mfile.read_text())
        if done.get("settings") in (job.settings, *job.earlier_settings):
            log.info("%s: seed %d already done, skipped", job.name, seed)
            # a metric written as null was non-finite (utils.io.json_ready): NaN again, so summarize counts it
            metrics = {k: json_float(v) if v is None else v for k, v in done["metrics"].items()}
            return {"seed": seed, "dir": str(run_dir), "metrics": metrics}
    # A checkpoint left by a run of *other* settings (finished or not) must not be resumed: Lightning
    # would restore its weights and step count and "train" nothing (seen when an input changed).
    resume, sfile = job.resume, run_dir / "settings.json"
    made_with = json.loads(sfile.read_text()).get("settings") if sfile.is_file() else None
    ours = (job.settings, *job.earlier_settings)
    if resume and ((made_with is not None and made_with not in ours) or (made_with is None and mfile.is_file())):
        log.warning("%s seed %d: %s holds a run with other settings; training from scratch", job.name, seed, run_dir)
        resume = False
    if not resume:
        # Nothing of an earlier run stays beside this one: Lightning would save this run's checkpoints
        # as last-v1.ckpt and a later resume restore the old last.ckpt; the old metrics.json would
        # stand beside this run's predictions if it were killed before its own.
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        # the discarded run's records, its earlier attempts' parts too: not this run's history
        for record in [run_dir / "config.yaml", run_dir / "run.json", *run_dir.glob("config.part*.yaml")]:
            record.unlink(missing_ok=True)
        for record in run_dir.glob("run.part*.json"):
            record.unlink(missing_ok=True)
        mfile.unlink(missing_ok=True)
    atomic_write_json(sfile, {"settings": job.settings})
    t0 = time.perf_counter()
    seed_everything(seed)
    model, arch = job.build(seed)
    module = TaskModule(model, job.optim, job.loss_kwargs)
    train_loader = job.loader(seed)
    tcfg = trainer_cfg(
        job.trainer,
        max_epochs=job.trainer.max_epochs if job.trainer.max_epochs is not None else job.epochs,
        # short runs still log (and plot) a few points per epoch; Lightning counts optimizer steps, and
        # under DDP each process trains its share of the loader's batches (the sampler is split later)
        log_every_n_steps=max(
            1,
            min(
                job.trainer.log_every_n_steps,
                len(train_loader)
                // (2 * max(1, job.trainer.accumulate_grad_batches) * planned_world_size(job.trainer)),
            ),
        ),
    )
    trainer = fit(
        module,
        tcfg,
        run_dir,
        train_dataloaders=train_loader,
        resume=resume,
        throughput_name=job.throughput_name,
        hparams=seed_config(job.config, seed),
    )
    train_s = time.perf_counter() - t0
    if not trainer.is_global_zero:  # under DDP, rank 0 alone predicts, scores and writes ...
        # ... and hands its metrics to the other ranks, so a tuning loop or a summary decides the same everywhere
        metrics = broadcast_object(None)
        if metrics is None:  # rank 0 says why in its own line; a traceback here buried it
            raise BadInputError(run_dir, f"{job.name} seed {seed}: rank 0 could not score the run (its error says why)")
        return {"seed": seed, "dir": str(run_dir), "metrics": metrics}
    try:
        # Lightning hands the model back on the CPU; score where it trained (a GPU), export from the CPU
        model.to(trainer.strategy.root_device)
        metrics = job.score(model, run_dir)
        model.cpu()
        job.export(model, arch, run_dir, {"seed": seed, "metrics": metrics})
        save_config(seed_config(job.config, seed), run_dir)
        record = {
            "task": job.name,
            "seed": seed,
            "metrics": metrics,
            "settings": job.settings,
            **job.record,
            "train_s": round(train_s, 3),
            "total_s": round(time.perf_counter() - t0, 3),
        }
        atomic_write_json(mfile, record)  # written last: marks the run finished
    except BaseException:
        broadcast_object(None)  # the other ranks are waiting: they stop too
        raise
    # only now: another rank must not count the run as finished (or look for metrics.json) before it is
    broadcast_object(metrics)
    log.info(
        "%s seed %d: %s (%.1fs)",
        job.name,
        seed,
        json.dumps({k: round(v, 2) for k, v in metrics.items()}),
        record["total_s"],
    )
    return {"seed": seed, "dir": str(run_dir), "metrics": metrics}


def seed_config(cfg: Any, seed: int) -> Any:
    """The job's config as one run's record: its ``seed`` is the run's (the job's names the first of
    its seeds, from which ``--seeds`` counts), so the config beside a run trains that run again --
    except a tuned one: tuning draws its held-out videos from the job's first seed and tunes over
    the seeds after it, which only the job folder's ``config.yaml`` names."""
    if dataclasses.is_dataclass(cfg) and hasattr(cfg, "seed"):
        return dataclasses.replace(cfg, seed=seed)
    if isinstance(cfg, Mapping) and "seed" in cfg:
        return {**cfg, "seed": seed}
    return cfg


def seed_range(first: int, count: int) -> list[int]:
    """The seeds ``first .. first + count - 1`` of K runs, checked before any work: one line naming
    ``seed`` when one is outside ``0 .. 2**32 - 1`` (Lightning's seed_everything raised a ValueError
    traceback when that run began, after the inputs were prepared and earlier seeds had trained)."""
    from ..errors import BadInputError

    first, count = int(first), int(count)
    if first < 0 or first + count - 1 > MAX_SEED:
        raise BadInputError("seed", f"runs {first}..{first + count - 1} need seeds in 0..{MAX_SEED}")
    return [first + k for k in range(count)]


def drop_stale_summary(out: Path, settings: str) -> None:
    """Remove ``out/summary.{json,md}`` unless written for ``settings``: the summary is written when
    every run is done, and a rerun with other settings stopped before then (killed, a run that
    failed) left the earlier settings' scores beside this run's config and seed folders."""
    try:
        held = json.loads((out / "summary.json").read_text()).get("settings")
    except FileNotFoundError:
        return
    except (OSError, ValueError, AttributeError):
        held = None
    if held != settings:
        for name in ("summary.json", "summary.md"):
            (out / name).unlink(missing_ok=True)


def run_seeds(job: SeedJob, seeds: Sequence[int]) -> list[dict]:
    """The runs of ``seeds`` (:func:`run_seed`); a summary of other settings in ``job.out`` goes first
    (the caller's :func:`write_summary` with ``settings=job.settings`` writes this one's)."""
    drop_stale_summary(job.out, job.settings)
    runs = []
    for k, s in enumerate(seeds):
        with progress.part(k, len(seeds)):  # K seeds report 0..1 once, for the scheduler's time left
            runs.append(run_seed(job, s))
    return runs


def coverage_note(
    train_segments: int,
    train_skipped: int,
    eval_segments: int,
    eval_without_inputs: int,
    eval_failed_decode: int = 0,
    scored: bool = True,
    **_: Any,
) -> str | None:
    """``None`` when every item of both splits was used; else one line saying what the score covers
    (batch jobs skip bad items and count them, and a summary must say when a score is partial).
    ``eval_failed_decode``: eval items whose inputs were found but failed to decode when predicted;
    ``scored``: False for predictions without a score (a split without released ground truth)."""
    parts = []
    missing = eval_without_inputs + eval_failed_decode
    if missing:
        why = [f"{eval_without_inputs} had none"] if eval_without_inputs else []
        why += [f"{eval_failed_decode} failed to decode"] if eval_failed_decode else []
        parts.append(
            f"{'the score covers' if scored else 'the predictions cover'} {eval_segments - missing} of "
            f"{eval_segments} eval items with usable "
            f"inputs ({' and '.join(why)} and got fallback predictions)"
        )
    if train_skipped:
        parts.append(f"trained on {train_segments} of {train_segments + train_skipped} items ({train_skipped} skipped)")
    return ("PARTIAL: " + "; ".join(parts)) if parts else None


def write_summary(
    out: Path,
    runs: list[dict],
    metric_keys: Sequence[str],
    title: str,
    heading: str,
    note: str = "",
    partial: str | None = None,
    **facts: Any,
) -> dict:
    """Mean ± SE over the runs -> ``out/summary.json`` and ``out/summary.md``; returns the summary record.
    ``partial`` (see :func:`coverage_note`) is stored and printed above the table when a score covers
    only part of a split. No ``metric_keys``: a run that only predicts (a split without released
    ground truth); ``note`` says so and there is no table."""
    summary, table = {}, ""
    if metric_keys:
        summary, table = summarize([r["metrics"] for r in runs], keys=list(metric_keys), title=title)
    # the folders absolute, as every path of a record is (the inputs', the sources'): as typed, they
    # named a folder relative to wherever the job was started (a run given without one keeps none)
    runs = [{**r, "dir": str(Path(r["dir"]).resolve())} if "dir" in r else r for r in runs]
    result = {**facts, "out": str(Path(out).resolve()), "seeds": len(runs), "runs": runs}
    result.update(summary=summary, table=table)
    result["partial"] = partial
    atomic_write_json(out / "summary.json", result)
    notes = "".join(f"{n}\n\n" for n in (partial and f"**{partial}**", note) if n)
    head = f"# {heading}: {plural(len(runs), 'run')}, mean ± standard error\n\n"
    atomic_write_text(out / "summary.md", head + notes + table)
    return result
