"""Shared Lightning plumbing for every training stage.

Every loop in moviessl (backbone SSL, supervised baseline, MaskPred, task heads) is a
``LightningModule`` trained through :func:`fit`, which gives all of them the same behaviour:
seeding, a progress bar (loss, lr, items/s), CSV logs (+ TensorBoard when asked), checkpoints every
``ckpt_every_n_steps`` and at the end (``checkpoints/last.ckpt``), ``resume=True`` continuing from
the last one, DDP / multi-node through Lightning's own torchrun/SLURM support, bf16 autocast via
``trainer.precision=bf16-mixed``, and a PNG of the training curves at the end. The ``trainer``
block of a stage config is :class:`moviessl.config.TrainerConfig`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import logging
import math
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher

from .checkpoint import misshaped
from .config import TrainerConfig, check_ranges, read_saved_config, save_config, to_dict
from .errors import BadInputError, Terminated
from .loader import KeepLoaderPlace
from .utils import progress
from .utils.io import atomic_torch_save, atomic_write, sweep_temp_files

log = logging.getLogger("moviessl")


LIGHTNING_LOGGERS = (
    "pytorch_lightning",
    "lightning",
    "lightning.pytorch",
    "lightning_fabric",
    "pytorch_lightning.utilities.rank_zero",
)


def quiet_lightning() -> None:
    """Silence Lightning's advice banners; keep warnings that matter. Process-wide: a run (and the
    ``demo`` and ``selftest`` commands) is quieted by :func:`lightning_quieted`, for itself only."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for pat in (
        ".*does not have many workers.*",
        ".*GPU available but not used.*",
        ".*LeafSpec.*",
        ".*Checkpoint directory.*exists and is not empty.*",
        # on --resume: the earlier metrics.csv was already kept as metrics.partNNN.csv (_keep_previous_log)
        ".*Experiment logs directory.*exists and is not empty.*",
        ".*`isinstance.*treespec.*",
        ".*The number of training batches.*smaller than the logging interval.*",
        ".*You are using `torch.load` with `weights_only=False`.*",
        ".*TensorBoard support.*",
        # a run that holds no video out says so in its own words (context.pretrain), once and on rank 0
        ".*You defined a `validation_step` but have no `val_dataloader`.*",
    ):
        warnings.filterwarnings("ignore", message=pat)


@contextlib.contextmanager
def lightning_quieted(*messages: str):
    """:func:`quiet_lightning` (and ``ignore`` filters for ``messages``) for a run only: a notebook
    that trained or extracted through moviessl and then ran Lightning models of its own heard none of
    Lightning's warnings, its loggers left at ERROR and a dozen ``ignore`` filters in front of the
    caller's. The warnings filters and the loggers' levels come back as the caller had them."""
    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    with warnings.catch_warnings():
        quiet_lightning()
        for pat in messages:
            warnings.filterwarnings("ignore", message=pat)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def logger_levels(level: int, *names: str):
    """The loggers ``names`` at ``level`` for the block, then at the levels the caller had set."""
    held = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(level)
        yield
    finally:
        for name, was in held.items():
            logging.getLogger(name).setLevel(was)


def seed_everything(seed: int) -> None:
    """The run's seed for Python's, NumPy's and torch's global generators, and Lightning's
    ``PL_GLOBAL_SEED`` / ``PL_SEED_WORKERS`` (its loader workers' seeds, a DDP rank's re-seed). Only
    inside a stage scoped by :func:`random_streams_kept`."""
    pl.seed_everything(int(seed), workers=True, verbose=False)


# what Lightning's seed_everything leaves in the environment: a later Trainer of the caller's gives
# its loaders moviessl's worker seeding, and its DDP strategy re-seeds every rank from it (reset_seed)
LIGHTNING_SEED_VARS = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@contextlib.contextmanager
def random_streams_kept():
    """The caller's random streams and Lightning's seed variables back when the block ends or fails.
    A stage seeds the global generators (:func:`seed_everything`) and its data loaders draw from
    torch's, so a notebook's ``torch.manual_seed(0)`` gave other numbers after a stage (or
    ``extract``) than without one, and a Lightning ``Trainer`` of its own inherited the stage's seed.
    Inside the block nothing changes (the generators start as the caller left them), so no run's
    numbers move; the command line runs one stage per process. The CUDA generators come back when
    CUDA was in use when the block began (reading them earlier would start CUDA in a CPU caller)."""
    env = {k: os.environ.get(k) for k in LIGHTNING_SEED_VARS}
    py, npy = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def keeps_random_streams(fn):
    """``fn`` run under :func:`random_streams_kept` (a stage that seeds)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any):
        with random_streams_kept():
            return fn(*args, **kwargs)

    return run


def trainer_cfg(cfg: TrainerConfig | Mapping[str, Any] | None, **overrides: Any) -> TrainerConfig:
    """A :class:`TrainerConfig` from a config block (or a partial mapping), with ``overrides``."""
    if cfg is None:
        cfg = TrainerConfig()
    elif not isinstance(cfg, TrainerConfig):
        cfg = TrainerConfig(**dict(cfg))
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


class OnHost:
    """A value a batch carries past Lightning's transfer to the device, left on the host: Lightning
    moves tensors and walks lists, dicts and dataclasses, not an object of its own kind. What a
    module's ``on_before_batch_transfer`` decided on the host for its step."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def host_scalar(value: float) -> torch.Tensor:
    """A Python number to ``self.log`` at every step, as a tensor on the host. Given as a number,
    Lightning makes it a tensor on the module's device (``torch.tensor(value, device=...)``), a
    blocking copy that on a GPU first waits for all the work queued there; a host tensor stays on the
    host (Lightning keeps a logged value where it is) and is read there. The default dtype, as
    Lightning's own conversion (float64 at ``64-true``)."""
    return torch.tensor(value, dtype=torch.get_default_dtype(), device="cpu")


class Throughput(pl.Callback):
    """Items/s (clips, tokens, events...) shown in the progress bar and logged.

    The module tells how many items a batch holds through ``items_in_batch(batch)`` (an int, or a
    tensor on the device: the sum is read on the host only when it is logged, at most twice a second,
    not at every step); default: the length of the first tensor of the batch."""

    interval_s = 0.5  # seconds between two logged rates (the count's one read on the host)

    def __init__(self, name: str = "clips_per_s") -> None:
        self.name, self._t, self._n = name, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t is None:
            self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        fn = getattr(pl_module, "items_in_batch", None)
        if fn is not None:
            n = fn(batch)  # an int, or a tensor on the device: read below, only when logged
        else:
            first = (
                batch[0]
                if isinstance(batch, (list, tuple))
                else next(iter(batch.values()))
                if isinstance(batch, dict)
                else batch
            )
            n = len(first)
        self._n = self._n + n * trainer.world_size
        dt = time.perf_counter() - self._t
        if dt > self.interval_s:
            rate = host_scalar(int(self._n) / dt)
            pl_module.log(self.name, rate, prog_bar=True, on_step=True, on_epoch=False, rank_zero_only=True)
            self._t, self._n = time.perf_counter(), 0


class LogShortRuns(pl.Callback):
    """A run of fewer than two logging intervals logs every ``steps // 2`` steps (at least every
    step). Lightning logs only at multiples of ``log_every_n_steps``: a smoke run of a pretraining
    stage (``trainer.max_steps=3`` under the cpu presets' 5-10) wrote no ``metrics.csv`` and no
    ``curves.png``, though a run is documented to leave both. The task runner sizes its own interval
    from its loader (:func:`moviessl.tasks.base.run_seed`); this covers every stage, from the planned
    optimiser steps (``max_steps`` or the epochs' batches, Lightning's ``estimated_stepping_batches``)."""

    def on_train_start(self, trainer, pl_module):
        if trainer.log_every_n_steps <= 0:  # logging switched off stays off
            return
        try:
            steps = trainer.estimated_stepping_batches
        except Exception:  # an iterable loader of unknown length: nothing to size from
            return
        if math.isfinite(steps) and steps > 0:
            trainer.log_every_n_steps = max(1, min(trainer.log_every_n_steps, int(steps) // 2))


class LogAtOptimiserStep(pl.Callback):
    """Each training batch's values logged at the count of optimiser steps before it (``global_step``),
    as Lightning logs them in a run from the start. Lightning keeps its own logging count
    (``_batches_that_stepped``), and a resume from a checkpoint written when training ended on an
    epoch's last batch with a validation loop (``pretrain-context`` extended with a larger
    ``trainer.max_steps``) first runs an iteration that trains nothing -- Lightning takes the
    checkpoint for one written before that epoch's validation, which it skips -- but counts it: every
    row of the resumed part (losses, learning rates, throughput, validation) was one step late, the
    last one past the run's own last step. Before Lightning's learning-rate monitor, which logs at
    the start of a batch; one optimiser per module, as every module here has."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.automatic_optimization:
            trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step


class ReportProgress(pl.Callback):
    """The fraction of training done, for the scheduler's time left (:mod:`moviessl.utils.progress`;
    nothing outside a scheduled job): steps of ``max_steps``, or batches of ``max_epochs`` epochs."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not trainer.is_global_zero:
            return
        if trainer.max_steps and trainer.max_steps > 0:
            progress.report(trainer.global_step, trainer.max_steps)
            return
        per_epoch = trainer.num_training_batches
        if trainer.max_epochs and trainer.max_epochs > 0 and isinstance(per_epoch, int) and per_epoch > 0:
            progress.report(trainer.current_epoch * per_epoch + batch_idx + 1, trainer.max_epochs * per_epoch)


class FinalCheckpoint(pl.Callback):
    """Write ``last.ckpt`` once, when training ends (``ckpt_every_n_steps: 0``)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_end(self, trainer, pl_module):
        trainer.save_checkpoint(self.path)


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bar on stderr, with the commands' own bars and log lines. Lightning draws
    it on stdout, where a command prints its result (``finetune``'s table and JSON line,
    ``pretrain-backbone``'s probe): ``moviessl finetune ... > result.json`` held every epoch's bar.
    At module level: ``ddp_spawn`` pickles the trainer, callbacks included."""

    @staticmethod
    def _on_stderr(make):
        with contextlib.redirect_stdout(sys.stderr):  # each bar takes ``file=sys.stdout`` as it is built
            return make()

    def init_sanity_tqdm(self):
        return self._on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self):
        return self._on_stderr(super().init_train_tqdm)

    def init_predict_tqdm(self):
        return self._on_stderr(super().init_predict_tqdm)

    def init_validation_tqdm(self):
        return self._on_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self):
        return self._on_stderr(super().init_test_tqdm)


class StepCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` every ``ckpt_every_n_steps``, and ``last.ckpt`` also when
    training ends between two of them: Lightning's writes ``last`` at the end only if it never wrote
    one, so ``last.ckpt`` of a finished run was up to ``ckpt_every_n_steps - 1`` steps behind its
    ``model.pt`` (the classifier ``pretrain-ot --teacher`` reads, ``model.init`` and a ``--resume``
    that extends the run all read it).

    A resumed run starts with the restored step as saved: Lightning's count of the step it last
    saved is not in its state and starts at 0, so under ``accumulate_grad_batches`` > 1 the first
    micro-batch of a run resumed from step ``g`` (a multiple of the interval) wrote step ``g``
    again with that micro-batch counted as done and its gradient not kept, and a second
    interruption before the next step dropped it from training."""

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        self._last_global_step_saved = trainer.global_step
        if trainer.ckpt_path is not None:
            # Lightning saves beside a `last.ckpt` its restored state does not name (last-v1.ckpt), and
            # restores the names only for the same absolute folder and from a checkpoint written after a
            # first `last`: a moved run folder, or a resume from the first step checkpoint, wrote the rest
            # of the run to last-v1.ckpt while last.ckpt, which every reader takes, stayed behind.
            # The checkpoints of a resumed run are this folder's own.
            self.last_model_path = self._here(self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
            if self.best_model_path:  # removed when the next step's is written, as in an unmoved folder
                self.best_model_path = self._here(Path(self.best_model_path).name)

    def _here(self, name: str) -> str:
        return os.path.join(self.dirpath, name)

    def on_train_end(self, trainer, pl_module):
        super().on_train_end(trainer, pl_module)
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


# Lightning's registered DDP strategy names -> their process start method. Each also exists as
# NAME_find_unused_parameters_true ("auto" on several devices is "ddp" outside notebooks), which tells
# DDP that some parameters may get no gradient.
DDP_START = {"auto": "popen", "ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}
UNUSED_SUFFIX = "_find_unused_parameters_true"
FIND_UNUSED = {name: ("ddp" if name == "auto" else name) + UNUSED_SUFFIX for name in DDP_START}


class TorchFlags(pl.Callback):
    """The run's GPU speed switches -- ``torch.set_float32_matmul_precision`` and
    ``torch.backends.cudnn.benchmark``, process-wide flags -- in every process (``setup`` runs in
    each rank, spawned ones too), and the caller's again after the run, whether it ends or fails
    (Lightning calls no callback's ``teardown`` on a failure, only ``on_exception``), so the next
    stage of the same process, or a notebook's own work, starts from its own settings. ``None``
    leaves a flag as it is. cuDNN's is set here rather than by ``pl.Trainer(benchmark=...)``,
    which sets it when the trainer is built and never puts it back."""

    def __init__(self, precision: str | None, benchmark: bool | None):
        self.precision, self.benchmark, self.before = precision, benchmark, None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark)
        if self.precision is not None:
            torch.set_float32_matmul_precision(self.precision)
        if self.benchmark is not None:
            torch.backends.cudnn.benchmark = self.benchmark

    def _restore(self) -> None:
        if self.before is not None:
            torch.set_float32_matmul_precision(self.before[0])
            torch.backends.cudnn.benchmark = self.before[1]
            self.before = None

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore()


def ddp_base(name: str) -> tuple[str, bool]:
    """(DDP start method's strategy name, find_unused_parameters) of a DDP strategy name; one line
    for a strategy DDP's timeout cannot be given to."""
    unused = name.endswith(UNUSED_SUFFIX)
    base = name[: -len(UNUSED_SUFFIX)] if unused else name
    if base not in DDP_START:
        raise BadInputError("trainer.ddp_timeout_s", f"needs a DDP strategy (ddp, ddp_spawn, ...), not {name!r}")
    return base, unused


def ddp_with_timeout(name: str, seconds: float):
    """The DDP strategy ``name`` (one of Lightning's registered DDP names) with another process-group
    timeout, as a ``DDPStrategy`` instance (a name cannot carry one)."""
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy

    base, unused = ddp_base(name)
    timeout = timedelta(seconds=float(seconds))
    return DDPStrategy(timeout=timeout, start_method=DDP_START[base], find_unused_parameters=unused)


# Where Lightning checks the machine settings as it builds a trainer: an error raised there is about
# them, one raised elsewhere in Trainer.__init__ (our callbacks, our arguments) is a bug of ours.
_MACHINE_CODE = (
    "accelerator_connector",
    "device_parser",
    "/accelerators/",
    "/plugins/",
    "/strategies/",
    "/_graveyard/",
    "lightning_fabric/connector.py",
)


def lightning_trainer(**kwargs: Any) -> pl.Trainer:
    """``pl.Trainer(**kwargs)``; where Lightning refuses the machine settings (more devices than
    there are, a strategy this machine lacks), one line with the settings and Lightning's reason."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = pl.Trainer(**kwargs)
        if isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
            _LAUNCHERS.append(trainer.strategy.launcher)
        return trainer
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = tb.tb_frame.f_code.co_filename.replace(os.sep, "/") if tb is not None else ""
        lightning = "/pytorch_lightning/" in where or "/lightning_fabric/" in where
        if not lightning or not any(m in where for m in _MACHINE_CODE):
            raise
        keys = ("accelerator", "devices", "num_nodes", "strategy", "precision")
        said = " ".join(f"{k}={kwargs[k]}" for k in keys if isinstance(kwargs.get(k), (str, int, list, tuple)))
        log.debug("pl.Trainer(%s)", kwargs, exc_info=True)
        raise BadInputError(None, f"Lightning cannot run {said}: {e}") from None


_LAUNCHERS: list = []  # the launchers of this process's trainers that may start the job's other processes


def stop_launched_processes() -> None:
    """Kill the processes Lightning's own launcher started from this one (its ranks > 0), as
    Lightning does after a Ctrl-C in ``fit``, for a command that failed anywhere else (rank 0's
    export, scoring or merge; an error raised outside ``fit``): left running, a rank waiting in a
    collective for this one ran on after the job had ended, under NCCL until the process group's
    timeout with its GPU held. SIGKILL, as Lightning's: a rank blocked in a collective never runs a
    SIGTERM handler."""
    while _LAUNCHERS:
        launcher = _LAUNCHERS.pop()
        for proc in launcher.procs:
            if proc.poll() is None:
                proc.send_signal(getattr(signal, "SIGKILL", signal.SIGTERM))
                proc.wait()


def planned_world_size(t: TrainerConfig) -> int:
    """Processes a run will use: ``devices`` x ``num_nodes``, with ``devices: auto`` (or -1) resolved
    as Lightning does (every visible GPU when the accelerator may be one, else one CPU process)."""
    d = t.devices
    if isinstance(d, (list, tuple)):
        n = len(d)
    elif isinstance(d, str) and "," in d:
        n = len([x for x in d.split(",") if x.strip()])
    elif str(d) in ("auto", "-1"):
        gpu = t.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        n = torch.cuda.device_count() if gpu else 1
    else:
        n = int(d)
    return max(1, n) * max(1, int(t.num_nodes))


def warn_micro_batch_negatives(t: TrainerConfig, what: str, per_step: int) -> None:
    """Say once (rank 0) that ``trainer.accumulate_grad_batches`` does not widen a loss whose negatives
    are the other items of its batch (``what``; ``per_step``: the items one loss sees per micro-batch):
    each micro-batch's loss sees its own items only, while the learning rate is scaled for the
    accumulated batch, so a paper batch reached by accumulation is not the paper's contrastive task."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    a = int(t.accumulate_grad_batches or 1)
    if a > 1 and rank_zero_only.rank == 0:
        log.warning(
            "trainer.accumulate_grad_batches=%d: %s are the other items of one micro-batch (%d), not of "
            "the accumulated %d; more of them need a larger data.batch_size (or more processes)",
            a,
            what,
            per_step,
            a * per_step,
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer with its temporary file beside the checkpoint
    (:func:`moviessl.utils.io.atomic_torch_save`). Lightning's own stages the file in ``$TMPDIR``
    through an fsspec transaction: a kill leaves the torn file there (GBs a kill at paper size), and
    where ``$TMPDIR`` is another filesystem than the run's the final move is a copy that a kill can
    tear, leaving a ``last.ckpt`` that does not load. At module level: ``ddp_spawn`` pickles the
    trainer, plugins included."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Any = None) -> None:
        if storage_options is not None:  # as Lightning's: no options for a local file
            raise TypeError(f"`{type(self).__name__}.save_checkpoint` takes no storage_options")
        atomic_torch_save(path, checkpoint)


def atomic_checkpoint_io() -> AtomicCheckpointIO:
    return AtomicCheckpointIO()


def hparams_of(config: Any) -> dict[str, bool | int | float | str]:
    """A run's resolved config as TensorBoard hyperparameters: dotted keys (``optim.lr``), each value
    a bool, a number or a string, the only kinds its hparams plugin takes (a list or a null as its
    JSON text)."""
    import json

    from .config import flatten

    return {
        k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str)
        for k, v in flatten(to_dict(config)).items()
    }


class ConfigAsHparams(pl.Callback):
    """The run's resolved config as its TensorBoard hyperparameters (the HParams tab: one row per run,
    beside the last value of each of ``metrics``), written once per training, by rank 0.

    Written as Lightning's ``TensorBoardLogger.log_hyperparams`` writes them (torch's
    ``summary.hparams``), less the metric values that call logs at the same time: with none it writes
    no hyperparameters at all, and a placeholder (its ``hp_metric=-1``) would be a point of the curves."""

    def __init__(self, config: Any, metrics: Iterable[str]):
        self.params, self.metrics = hparams_of(config), list(metrics)

    def on_train_start(self, trainer, pl_module) -> None:
        from lightning_fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE
        from pytorch_lightning.loggers import TensorBoardLogger

        if not trainer.is_global_zero:
            return
        if _TENSORBOARD_AVAILABLE:  # the SummaryWriter the logger made, as Lightning picks it
            from torch.utils.tensorboard.summary import hparams
        else:
            from tensorboardX.summary import hparams
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                writer = logger.experiment._get_file_writer()
                for summary in hparams(self.params, dict.fromkeys(self.metrics, 0.0)):
                    writer.add_summary(summary)
                writer.flush()


def make_trainer(
    cfg: TrainerConfig | Mapping[str, Any] | None,
    out_dir: str | os.PathLike,
    *,
    callbacks: Sequence[Any] = (),
    throughput_name: str | None = "clips_per_s",
    enable_checkpointing: bool = True,
    find_unused_parameters: bool = False,
    tb_purge_step: int | None = None,
    **overrides: Any,
) -> pl.Trainer:
    """A ``pl.Trainer`` configured from a ``trainer`` config block; logs and checkpoints under ``out_dir``.
    ``find_unused_parameters``: under DDP, tell it that some parameters may get no gradient.
    ``tb_purge_step``: on a resume, the first step it trains again (:func:`resumed_log_step`)."""
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    t = trainer_cfg(cfg, **overrides)
    out_dir = Path(out_dir)
    loggers: list[Any] = [CSVLogger(out_dir, name="logs", version="")]
    if t.tensorboard:
        # no hp_metric: a module's own hyperparameters (save_hyperparameters) logged a -1 point under that
        # tag and a second hparams record beside ConfigAsHparams's; they still go to tb/hparams.yaml
        # purge_step (torch's SummaryWriter): TensorBoard drops the earlier event files' values from that
        # step on, which the resumed run trains again, as read_metrics_csv drops the CSV parts'
        purge = {} if tb_purge_step is None else {"purge_step": int(tb_purge_step)}
        loggers.append(TensorBoardLogger(out_dir, name="tb", version="", default_hp_metric=False, **purge))
    cbs: list[Any] = list(callbacks)
    if throughput_name:
        cbs.append(Throughput(throughput_name))
    cbs.append(ReportProgress())
    cbs.append(LogShortRuns())
    if enable_checkpointing and t.ckpt_every_n_steps > 0:
        cbs.append(
            StepCheckpoint(
                dirpath=out_dir / "checkpoints",
                filename="step{step:07d}",
                auto_insert_metric_name=False,
                every_n_train_steps=t.ckpt_every_n_steps,
                save_last=True,
                save_top_k=1,
                save_on_train_epoch_end=True,
            )
        )
    elif enable_checkpointing:  # short runs: one checkpoint when training ends, not one per epoch
        cbs.append(FinalCheckpoint(out_dir / "checkpoints" / "last.ckpt"))
    # Lightning adds its own per-epoch ModelCheckpoint (logs/checkpoints/epoch=*.ckpt) unless a
    # ModelCheckpoint is given; with FinalCheckpoint that is a second copy nothing reads.
    lightning_ckpt = enable_checkpointing and any(isinstance(c, ModelCheckpoint) for c in cbs)
    if t.progress_bar:
        cbs.append(StderrProgressBar(refresh_rate=max(1, t.log_every_n_steps // 2)))
    cbs.append(LogAtOptimiserStep())  # before the learning-rate monitor: it logs at the same hook
    cbs.append(LearningRateMonitor(logging_interval="step"))
    # a TrainerConfig built in code has not been through load_config; here null epochs mean no limit
    check_ranges({"trainer": to_dict(t)}, null_epochs_unlimited=True)
    strategy: Any = t.strategy
    if planned_world_size(t) > 1:
        if find_unused_parameters:
            strategy = FIND_UNUSED.get(strategy, strategy)
        if t.ddp_timeout_s is not None:
            strategy = ddp_with_timeout(strategy, t.ddp_timeout_s)
    if t.matmul_precision is not None or t.benchmark is not None:
        cbs.append(TorchFlags(t.matmul_precision, t.benchmark))
    return lightning_trainer(
        profiler=_profiler(t.profiler, out_dir),
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,
        max_epochs=t.max_epochs if t.max_epochs is not None else -1,
        max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        log_every_n_steps=t.log_every_n_steps,
        logger=loggers,
        callbacks=cbs,
        enable_checkpointing=lightning_ckpt,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(out_dir),
        use_distributed_sampler=True,
        plugins=[atomic_checkpoint_io()],
    )


def _profiler(kind: str | None, out_dir: Path):
    if not kind:
        return None
    from pytorch_lightning.profilers import AdvancedProfiler, SimpleProfiler

    kinds = {"simple": SimpleProfiler, "advanced": AdvancedProfiler}
    if kind not in kinds:
        raise BadInputError(None, f"trainer.profiler={kind!r}: choose simple or advanced (or leave it unset)")
    return kinds[kind](dirpath=str(out_dir), filename="profile")


@contextlib.contextmanager
def ctrl_c_kept(trainer: pl.Trainer):
    """Around ``trainer.fit`` / ``trainer.predict``: Ctrl-C stays a KeyboardInterrupt. Lightning's
    graceful shutdown ends in ``sys.exit(1)``, which hid the CLI's "interrupted" line and its exit
    code 130 (and ignores SIGINT from then on; the caller's handler is put back: Python's default
    for the CLI, a script's own where it had one, which Python's default replaced)."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit as e:
        if not (trainer.interrupted and isinstance(e.__context__, KeyboardInterrupt)):  # exit(1) in its handler
            raise
        if main:  # None: a handler not set from Python, which Python cannot put back
            signal.signal(signal.SIGINT, signal.default_int_handler if before is None else before)
        raise (Terminated if isinstance(e.__context__, Terminated) else KeyboardInterrupt) from None


def refuse_earlier_run(out_dir: str | os.PathLike, resume: bool) -> None:
    """A pretraining folder that holds a run's checkpoints is continued only with ``--resume``: a new
    run beside them would save ``last-v1.ckpt`` (Lightning does not overwrite), and a later
    ``--resume`` would restore the old run's ``last.ckpt`` under the new run's config."""
    ck = Path(out_dir) / "checkpoints"
    if not resume and ck.is_dir() and any(ck.iterdir()):
        raise BadInputError(
            out_dir, "output folder already holds a run; pass --resume to continue it or choose another --out"
        )


def refuse_changed_on_resume(out_dir: str | os.PathLike, resume: bool, cfg: Any, keys: Sequence[str], why: str) -> None:
    """One line when a ``--resume`` changes a setting the checkpoint fixes: ``keys`` (dotted) whose
    values became buffers of the saved model (``why`` says which), so the resumed run would go on with
    the checkpoint's, whatever its config.yaml then said. Compared with the run's ``config.yaml``
    (what it last ran with); a run without one, or a key it lacks, is not checked."""
    if not resume or last_checkpoint(out_dir) is None:
        return
    try:  # as it was written: a text setting holding `${` is saved escaped (:func:`save_config`)
        before = read_saved_config(Path(out_dir) / "config.yaml")
    except (OSError, BadInputError):
        return
    now = to_dict(cfg)
    for key in keys:
        a, b = before, now
        for part in key.split("."):
            a = a.get(part) if isinstance(a, Mapping) else None
            b = b.get(part) if isinstance(b, Mapping) else None
        if a is not None and a != b:
            raise BadInputError(
                Path(out_dir) / "config.yaml",
                f"the run was started with {key}={a}; a --resume cannot make it {b} ({why}): resume "
                "without that override, or start a new --out",
            )


def last_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    p = Path(out_dir) / "checkpoints" / "last.ckpt"
    return p if p.is_file() else None


def repair_last_checkpoint(out_dir: str | os.PathLike) -> None:
    """Make ``checkpoints/last.ckpt`` the newest readable checkpoint before a resume.

    A kill -9 can land while Lightning writes ``last.ckpt`` (a truncated file) or between writing
    ``stepN.ckpt`` and updating ``last.ckpt`` (stale by one interval). Either way the newest readable
    checkpoint is copied over it, so a resume loses at most one checkpoint interval."""
    ck = Path(out_dir) / "checkpoints"
    if not ck.is_dir():
        return

    def step_of(p: Path) -> int | None:
        # memory-mapped: only the step is read, not a paper-size queue (every rank of a launch does this)
        try:
            return int(torch.load(p, map_location="cpu", weights_only=False, mmap=True)["global_step"])
        except Exception:  # truncated, not a checkpoint, or a pre-zip file
            try:
                return int(torch.load(p, map_location="cpu", weights_only=False)["global_step"])
            except Exception:  # truncated or not a checkpoint: not a candidate
                return None

    # a killed save's (atomic_checkpoint_io), never read; not the copy another rank is making below
    sweep_temp_files(ck.glob(".*.ckpt.*.tmp"))
    last = ck / "last.ckpt"
    last_step = step_of(last) if last.is_file() else None
    cands = sorted(
        ((int(m.group(1)), p) for p in ck.glob("step*.ckpt") if (m := re.match(r"step(\d+)", p.stem))), reverse=True
    )
    for step, p in cands:
        if last_step is not None and step <= last_step:
            return
        if step_of(p) is not None:
            log.warning("last.ckpt is %s; resuming from %s", "stale" if last_step is not None else "unreadable", p.name)
            # atomic: under torchrun / SLURM every rank repairs at once while the others may read it
            with open(p, "rb") as src:
                atomic_write(last, lambda f: shutil.copyfileobj(src, f, 1 << 24))
            return


def replicated_buffers(module: torch.nn.Module) -> list[str]:
    """Names of the buffers of submodules marked ``ddp_replicated`` (kept equal on every rank by the
    module itself, e.g. a :class:`moviessl.ssl.queue.MemoryQueue`)."""
    return [
        f"{name}.{b}" if name else b
        for name, m in module.named_modules()
        if getattr(m, "ddp_replicated", False)
        for b, _ in m.named_buffers(recurse=False)
    ]


def skip_replicated_broadcast(module: torch.nn.Module) -> list[str]:
    """Tell DDP to leave :func:`replicated_buffers` out of its buffer broadcast (its default
    ``broadcast_buffers=True`` copies every buffer from rank 0 before each forward; BatchNorm's running
    statistics still are). DDP's one hook that excludes single buffers is its ignore list,
    ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model``."""
    names = replicated_buffers(module)
    if names:
        from torch.nn.parallel import DistributedDataParallel

        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)
    return names


class BroadcastReplicatedOnce(pl.Callback):
    """Broadcast the :func:`replicated_buffers` from rank 0 once, when training starts. DDP leaves
    ignored buffers out of the sync it does when it wraps the model too, so this keeps them equal even
    if ranks ever started apart (a rank-dependent initialisation, a differing checkpoint)."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)

    def on_train_start(self, trainer, pl_module) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        buffers = dict(pl_module.named_buffers())
        for name in self.names:
            dist.broadcast(buffers[name], src=0)
        for m in pl_module.modules():  # a MemoryQueue's host copy of its pointer and count
            if hasattr(m, "buffers_written"):
                m.buffers_written()


STRUCTURE_KEY = "moviessl_structure"
METRICS_KEY = "moviessl_metrics"


class KeepMetrics(pl.Callback):
    """The values the run last logged (``trainer.callback_metrics``) in each checkpoint, and back
    from the one a run resumes, for :func:`final_metrics`: a resume of a run killed after its last
    checkpoint and before its export trains and logs nothing, and its model.pt and summary.json
    recorded no metrics at all."""

    def __init__(self):
        self.restored: dict[str, float] = {}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[METRICS_KEY] = {**self.restored, **_scalars(trainer.callback_metrics)}  # a second resume too

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        saved = checkpoint.get(METRICS_KEY)
        self.restored = _scalars(saved) if isinstance(saved, Mapping) else {}


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1):
            out[str(k)] = float(v)
    return out


def final_metrics(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    """Each metric named ``prefix...`` as the run last logged it: this attempt's value, else the one
    its checkpoint held when it resumed (:class:`KeepMetrics`), as an uninterrupted run reports it."""
    kept = next((c.restored for c in trainer.callbacks if isinstance(c, KeepMetrics)), {})
    out = {k: v for k, v in kept.items() if k.startswith(prefix)}
    out.update({k: v for k, v in _scalars(trainer.callback_metrics).items() if k.startswith(prefix)})
    return out


class DecorrelateRanks(pl.Callback):
    """Random streams that neither repeat across ranks nor across a resume.

    Under DDP every rank starts from the run's seed (``seed_everything``), so the random draws of
    the training processes -- augmentation parameters, span and track masks, dropout -- would repeat
    on every rank for the same local index (a global batch of W x B with only B distinct augmentations).
    Ranks > 0 re-seed from the run's seed and their rank; rank 0 keeps its stream, so one process runs
    exactly as before. Data-loader workers are already seeded per rank by Lightning; the distributed
    sampler has its own generator, shared by design.

    A resumed run starts from the run's seed too, and Lightning's checkpoints keep no random state,
    so it would draw the first steps' samples, clips and augmentations again (a job preempted every
    few hours would keep replaying its first hours' randomness). From a checkpoint of step ``g``
    every rank re-seeds from the seed, its rank and ``g`` when the checkpoint is loaded, before the
    data loader draws its worker seeds (the epoch's order is :class:`EpochShuffle`'s, from the seed
    and the epoch alone)."""

    def __init__(self):
        self.step = 0

    @staticmethod
    def _reseed(trainer, step: int) -> None:
        base = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
        s = (base + 100_003 * trainer.global_rank + 1_000_003 * step) % 2**32
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.step = int(checkpoint.get("global_step", 0) or 0)
        if self.step > 0 or trainer.global_rank > 0:
            self._reseed(trainer, self.step)

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.world_size > 1 and trainer.global_rank > 0:
            self._reseed(trainer, self.step)


def _opt_kind(keys: set) -> tuple[bool, ...]:
    """Which optimiser family a parameter group's keys belong to (LARS, Adam, SGD), by the keys that
    tell them apart: the full set grows with PyTorch versions, which a resume may cross."""
    return ("eta" in keys, "betas" in keys, "momentum" in keys)


class OptimiserChanged(BadInputError):
    """A resume whose optimiser is of another family than the checkpoint's (:class:`ResumeWithTheseSettings`)."""


class ResumeWithTheseSettings(pl.Callback):
    """A resume trains with the optimiser settings it was started with, as its ``config.yaml`` says.

    Lightning restores the optimiser's parameter groups and the scheduler's ``base_lrs`` from the
    checkpoint, so a resume with another ``optim.lr``, ``weight_decay``, ``betas`` or ``momentum``
    trained on with the old ones (while the saved config named the new), and a schedule lengthened
    by a larger ``max_steps`` restarted from the old schedule's last rate. The freshly configured
    hyperparameters (all but the parameters and the optimiser's per-parameter state) are put back
    after the restore, and each rate recomputed for the restored step from this run's schedule. An
    optimiser of another kind cannot take the saved state: one line, before any step."""

    def __init__(self):
        self.saved: list[list[set]] | None = None
        self.fresh: list[list[dict]] = []
        self.base_lrs: list[list[float]] = []

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        states = checkpoint.get("optimizer_states") or []
        self.saved = [[set(g) - {"params"} for g in st.get("param_groups", [])] for st in states]

    def on_fit_start(self, trainer, pl_module) -> None:
        # the optimisers as configured, before any restore (DDP loads the checkpoint before this
        # hook, FSDP and DeepSpeed after it)
        self.fresh = [
            [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups] for o in trainer.optimizers
        ]
        self.base_lrs = [list(c.scheduler.base_lrs) for c in trainer.lr_scheduler_configs]

    def on_train_start(self, trainer, pl_module) -> None:
        if self.saved is None:
            return
        for saved, fresh in zip(self.saved, self.fresh):
            if len(saved) != len(fresh) or any(_opt_kind(a) != _opt_kind(set(b)) for a, b in zip(saved, fresh)):
                raise OptimiserChanged(
                    trainer.ckpt_path,
                    "the run was started with another optimiser (optim.name) or parameter grouping; resume with "
                    "the settings it was started with (its config.yaml), or start a new --out",
                )
        for opt, fresh in zip(trainer.optimizers, self.fresh):
            for g, f in zip(opt.param_groups, fresh):
                g.update(f)
        for c, base in zip(trainer.lr_scheduler_configs, self.base_lrs):
            sched = c.scheduler
            sched.base_lrs = base
            if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
                for g, b, f in zip(sched.optimizer.param_groups, base, sched.lr_lambdas):
                    g["initial_lr"], g["lr"] = b, b * f(sched.last_epoch)
                sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]


class RecordStructure(pl.Callback):
    """Store the module's structure (its ``repr``: layer types, widths, dropout rates, activations) in
    every Lightning checkpoint, taken before Lightning's ``setup`` (which may convert BatchNorm to
    SyncBatchNorm), so :func:`check_resumable` can tell a resume that builds another network."""

    def __init__(self, structure: str):
        self.structure = structure

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[STRUCTURE_KEY] = self.structure


def check_resumable(module: torch.nn.Module, ckpt: str | os.PathLike, structure: str | None = None) -> None:
    """Fail with one line when ``ckpt`` cannot be resumed into ``module``: a weight missing, extra or of
    another shape (the run's settings, or a preset, changed since it was written) -- Lightning would
    raise a many-line ``load_state_dict`` traceback. A network of the same weights but another
    structure (a dropout rate, an activation) is resumed with a warning naming the first difference."""
    obj, problem = None, None
    for mmap in (True, False):  # mmap: a paper-size queue is not read twice; a pre-zip file cannot be
        try:
            obj, problem = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=mmap), None
            break
        except Exception as e:
            problem = type(e).__name__
    saved = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(saved, Mapping):
        # a file that loads as None (torch.save(None), another tool's file) read no state_dict either
        what = problem or "no state_dict"
        raise BadInputError(ckpt, f"not a readable Lightning checkpoint ({what})")
    try:  # what Lightning does next; the modules' own loading hooks may fill in or rename older entries
        res = module.load_state_dict(saved, strict=False)
        problems = [f"{k} is missing from the checkpoint" for k in res.missing_keys]
        problems += [f"the checkpoint has {k}, which this run's model lacks" for k in res.unexpected_keys]
    except RuntimeError:  # a shape differs (raised even when not strict)
        problems = _shape_mismatches(module.state_dict(), saved) or ["a weight does not load"]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BadInputError(
            ckpt,
            f"does not fit this run's model: {problems[0]}{more}; resume with the settings the run was "
            "started with (its config.yaml; config.part000.yaml if a resume changed them), or start a new --out",
        )
    _warn_structure(ckpt, obj.get(STRUCTURE_KEY), structure)


def _shape_mismatches(own: Mapping[str, torch.Tensor], saved: Mapping[str, Any]) -> list[str]:
    return [
        f"{k} is {tuple(saved[k].shape) if torch.is_tensor(saved[k]) else type(saved[k]).__name__} in the "
        f"checkpoint, {tuple(own[k].shape)} now"
        for k in misshaped(own, saved)
    ]


def _warn_structure(ckpt, before: Any, structure: str | None) -> None:
    if structure is not None and isinstance(before, str) and before != structure:
        old, new = before.splitlines(), structure.splitlines()
        i = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        line = lambda lines: lines[i].strip() if i < len(lines) else "(end)"  # noqa: E731
        log.warning(
            "%s: the network is built differently from when this checkpoint was written (first difference: "
            "%r then, %r now); resuming anyway",
            ckpt,
            line(old),
            line(new),
        )


def fit(
    module,
    cfg: TrainerConfig | Mapping[str, Any] | None,
    out_dir: str | os.PathLike,
    *,
    train_dataloaders=None,
    val_dataloaders=None,
    datamodule=None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    throughput_name: str | None = "clips_per_s",
    curve_keys: Iterable[str] = ("train/loss",),
    config: Any = None,
    hparams: Any = None,
    **overrides: Any,
):
    """Train ``module``; ``resume=True`` continues from ``out_dir/checkpoints/last.ckpt`` if present.

    ``config``: the run's resolved config, saved as ``config.yaml`` (:func:`save_config`) before
    training; ``hparams``: the config shown as TensorBoard's hyperparameters where it is not
    ``config`` (a task seed saves its own after training), else ``config``. Returns the trainer.
    Writes ``out_dir/curves.png`` from the CSV log at the end (rank 0)."""
    curve_keys = tuple(curve_keys)  # read twice: TensorBoard's metrics, then the plot
    if resume:
        repair_last_checkpoint(out_dir)
    ckpt = last_checkpoint(out_dir) if resume else None
    if resume and ckpt is None:
        log.info("--resume: no checkpoint in %s; training from the start", Path(out_dir) / "checkpoints")
    structure = repr(module)
    if ckpt is not None:
        check_resumable(module, ckpt, structure)
    from .dist import job_leader

    # after the check: a refused resume leaves the run's config.yaml as it was. The job's leader only
    # (save_config's own rule): every rank of a torchrun / srun launch runs this, and Lightning's
    # launcher started on each node gives each node's first process rank 0 until the group exists.
    writes_config = config is not None and job_leader()
    kept = set(Path(out_dir).glob("config.part*.yaml"))
    kept_records = set(Path(out_dir).glob("run.part*.json"))
    if writes_config:
        save_config(config, out_dir)
    callbacks = [
        *callbacks,
        RecordStructure(structure),
        KeepMetrics(),
        DecorrelateRanks(),
        ResumeWithTheseSettings(),
        KeepLoaderPlace(),
    ]
    hparams = config if hparams is None else hparams
    if hparams is not None and trainer_cfg(cfg, **overrides).tensorboard:
        callbacks = [*callbacks, ConfigAsHparams(hparams, curve_keys)]
    replicated = skip_replicated_broadcast(module)
    if replicated:
        callbacks = [*callbacks, BroadcastReplicatedOnce(replicated)]
    with lightning_quieted():  # the caller's warnings filters and Lightning's log levels come back
        trainer = make_trainer(
            cfg,
            out_dir,
            callbacks=callbacks,
            throughput_name=throughput_name,
            find_unused_parameters=getattr(module, "ddp_find_unused_parameters", False),
            tb_purge_step=resumed_log_step(ckpt) if ckpt is not None else None,
            **overrides,
        )
        if trainer.is_global_zero:  # the trainer knows the global rank; the other ranks log nothing
            _keep_previous_log(out_dir, resumed=ckpt is not None)
        if ckpt is not None:
            log.info("resuming from %s", ckpt)
        try:
            with ctrl_c_kept(trainer):
                trainer.fit(
                    module,
                    train_dataloaders=train_dataloaders,
                    val_dataloaders=val_dataloaders,
                    datamodule=datamodule,
                    ckpt_path=str(ckpt) if ckpt else None,
                    # our own run folder's checkpoint: it holds the run's config dataclasses (save_hyperparameters),
                    # which torch >= 2.6's weights-only loading refuses, so --resume of such a stage failed
                    weights_only=False if ckpt else None,
                )
        except OptimiserChanged:
            # known only once Lightning has built the optimiser: the run's config.yaml goes back in place
            new = sorted(set(Path(out_dir).glob("config.part*.yaml")) - kept)
            if writes_config and new:
                os.replace(new[-1], Path(out_dir) / "config.yaml")
            records = sorted(set(Path(out_dir).glob("run.part*.json")) - kept_records)
            if writes_config and records:  # the refused attempt trained nothing: the run's record goes back too
                os.replace(records[-1], Path(out_dir) / "run.json")
            raise
    if trainer.is_global_zero:
        try:
            plot_curves(Path(out_dir) / "logs", Path(out_dir) / "curves.png", keys=curve_keys)
        except Exception as e:  # a plot must never fail a finished training run
            log.warning("could not plot curves: %s", e)
    refuse_diverged(module, out_dir, trainer.global_step)
    return trainer


def refuse_diverged(module: torch.nn.Module, out_dir: str | os.PathLike, step: int) -> None:
    """One line when training left non-finite weights: a NaN / infinite loss makes every gradient and,
    through AdamW, every weight it reaches NaN, and Lightning goes on to the last step. Without this
    check the caller exported the NaN weights as a finished model and a task scored them (a NaN verb
    head's argmax is the first verb: a plausible accuracy, exit 0). Every rank checks (DDP keeps
    their weights equal), so all of them stop. The curves are plotted first: they show where the loss
    left. The weights only: a frozen part's buffers are not what training changed. The line says
    where to train afresh: a pretraining stage refuses a plain rerun into a folder with checkpoints
    (:func:`refuse_earlier_run`: "pass --resume"), and --resume restores the diverged weights."""
    bad = [n for n, p in module.named_parameters() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if bad:
        raise BadInputError(
            out_dir,
            f"training diverged: {len(bad)} weight tensor(s) are NaN/inf after step {step} (first: {bad[0]}); "
            "lower the learning rate or set trainer.gradient_clip_val, and train afresh into another --out "
            f"or after removing {Path(out_dir) / 'checkpoints'} (it holds the diverged weights: --resume "
            "would restore them)",
        )


def resumed_log_step(ckpt: str | os.PathLike) -> int | None:
    """The first logged step a run resumed from ``ckpt`` trains again: the checkpoint's global step
    ``g``. Lightning logs a batch's values at the count of optimiser steps before it, so what an
    interrupted attempt logged at ``g`` and later came from steps the checkpoint does not hold. None
    for a file without one (the resume says why)."""
    for mmap in (True, False):  # mmap: only the step is read, not a paper-size queue; a pre-zip file cannot be
        try:
            step = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=mmap)["global_step"]
            return int(step)
        except Exception:
            continue
    return None


def _keep_previous_log(out_dir: str | os.PathLike, resumed: bool = True) -> None:
    """Lightning's CSVLogger starts ``metrics.csv`` afresh; keep an earlier (pre-resume) log as
    ``metrics.partN.csv`` so curves span the whole run. A run that starts from step 0 (no checkpoint
    to resume) continues no earlier attempt: its logs go, else its curves were plotted beside them
    (and TensorBoard, which reads every event file of ``tb/`` as one run, showed both runs' values)."""
    logs = Path(out_dir) / "logs"
    cur = logs / "metrics.csv"
    if not resumed:
        for old in [cur, *logs.glob("metrics.part*.csv"), *(Path(out_dir) / "tb").glob("events.out.tfevents.*")]:
            old.unlink(missing_ok=True)
        return
    if cur.is_file() and cur.stat().st_size > 0:
        n = len(list(logs.glob("metrics.part*.csv")))
        os.replace(cur, logs / f"metrics.part{n:03d}.csv")


def metrics_files(path: str | os.PathLike) -> list[Path]:
    """A run's CSV logs in order: earlier parts (before resumes), then the current one."""
    p = Path(path)
    if p.is_dir():
        return sorted(p.glob("metrics.part*.csv")) + ([p / "metrics.csv"] if (p / "metrics.csv").is_file() else [])
    return [p] if p.is_file() else []


def read_metrics_csv(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSV log(s) -> {metric: [(step, value), ...]} (empty cells dropped).

    ``path`` is a ``metrics.csv`` file or a ``logs/`` folder (then all parts, resumes included). A
    resume goes on from its checkpoint's step, so the steps an interrupted part logged after that
    checkpoint were trained again: a later part's values replace an earlier part's from its first
    step on (both kept, a curve went back and ran over the same steps twice)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for f in metrics_files(path):
        part: dict[str, list[tuple[int, float]]] = {}
        _read_one(f, part)
        start = min((s for points in part.values() for s, _ in points), default=None)
        if start is not None:
            for k in series:
                series[k] = [(s, v) for s, v in series[k] if s < start]
        for k, points in part.items():
            series.setdefault(k, []).extend(points)
    return {k: v for k, v in series.items() if v}


def _read_one(path: Path, series: dict) -> None:
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for k, v in row.items():
                if k in ("step", "epoch") or v in (None, ""):
                    continue
                try:
                    series.setdefault(k, []).append((step, float(v)))
                except ValueError:
                    pass


def plot_curves(
    metrics_csv: str | os.PathLike, png: str | os.PathLike, keys: Iterable[str] = ("train/loss",)
) -> Path | None:
    """Line plot of the requested metrics against step (one panel per metric)."""
    # a Figure of its own, not pyplot: matplotlib.use("Agg") switched the caller's backend (a
    # notebook's inline plots), and pyplot's registry held every figure until closed
    from matplotlib.figure import Figure

    series = read_metrics_csv(metrics_csv)
    if not series:
        return None
    keys = [k for k in keys if k in series] or [k for k in series if k.endswith("loss")][:4]
    if not keys:
        return None
    fig = Figure(figsize=(4.5 * len(keys), 3.2))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, k in zip(axes[0], keys):
        xs, ys = zip(*series[k])
        # one logged step is a line of no length, which draws nothing: a marker shows it
        ax.plot(xs, ys, lw=1.2, marker="o" if len(xs) == 1 else None, ms=4)
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = Path(png)
    atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=110))
    return png


def check_trainer(t: TrainerConfig) -> None:
    """A trainer block before any work: its settings (:func:`moviessl.config.check_ranges`, for one
    built in code) and what this machine can run of them (:func:`moviessl.dist.check_machine`)."""
    from .dist import check_launcher_world, check_machine

    check_ranges({"trainer": to_dict(t)})
    check_machine(t.accelerator, t.devices, t.precision)
    check_launcher_world(planned_world_size(t), t.devices, t.num_nodes)
    if t.ddp_timeout_s is not None and planned_world_size(t) > 1:
        ddp_base(t.strategy)


def setup_machine(t: TrainerConfig) -> None:
    """Before a training stage's work: :func:`check_trainer`; :func:`cpu_threads` for a run on the
    CPU, while a GPU run (one process per GPU, each with its data loader) leaves torch's thread
    count as it is rather than giving every rank every core."""
    check_trainer(t)
    if t.accelerator == "cpu" or not torch.cuda.is_available():
        cpu_threads()


def keeps_threads(stage):
    """A stage function that gives the caller's torch thread count back when it returns or fails.
    :func:`setup_machine` sets the run's count process-wide (every core, or ``OMP_NUM_THREADS``),
    which is the command line's behaviour; called from a notebook or script, a pretraining stage left
    the caller's process on every core after ``torch.set_num_threads(1)`` (the task runners' own
    ``threads`` setting was already put back)."""

    @functools.wraps(stage)
    def run(*args: Any, **kwargs: Any):
        before = torch.get_num_threads()
        try:
            return stage(*args, **kwargs)
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    return run


def cpu_threads(n: int | None = None) -> None:
    """Use all cores of this machine for intra-op parallelism (2 here) unless told otherwise:
    ``n``, else ``OMP_NUM_THREADS`` (so jobs run side by side do not oversubscribe the cores)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if n is None and env.isdigit() and int(env) > 0:
        n = int(env)
    torch.set_num_threads(int(n or os.cpu_count() or 1))
