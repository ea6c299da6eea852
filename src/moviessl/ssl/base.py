"""The LightningModule every backbone pretraining method extends.

:class:`BackboneModule` owns the Slow-D being pretrained, the optimiser (lr scaled with the global
batch, :mod:`moviessl.optim`), logging, the count of bad videos skipped, and the export of the
``backbone`` checkpoint. A method subclass (one file in :mod:`moviessl.ssl.methods`) adds its heads,
its augmentation (``on_after_batch_transfer``) and its ``training_step``, and declares what it
needs from the pipeline in class attributes (read by :func:`moviessl.ssl.pretrain.pretrain`):

================  ==========================================================================
``views``         ``"pair"`` (two clips per video), ``"single"`` (one), or ``None`` (no training)
``pair_sampler``  ``"cvrl"`` or ``"shift"`` (:mod:`moviessl.ssl.data`), for ``views="pair"``
``needs_flow``    the dataset also yields each clip's optical flow (:mod:`moviessl.ssl.flow`)
``needs_labels``  the clip list must have labels (``path label`` lines)
``config_sections``  the method's own sections of :class:`~moviessl.ssl.config.BackboneConfig`
``step_cost``     a training step's wall time relative to CVRL's (time-left estimates)
``setup_cost_s``  seconds a run spends beside its steps: start-up, caches, the probe (time-left estimates)
``batch_negatives``  what of its loss is drawn from the other videos of the batch ("" if nothing)
================  ==========================================================================

and may check its settings against the run's global batch in :meth:`check_config`, and say in
:meth:`chance_loss` what its training loss is for outputs that ignore their input (the level a
pretext task that taught the backbone anything goes below; ``summary.json``'s ``pretext``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import pytorch_lightning as pl
import torch
from torch import nn

from ..checkpoint import arch_spec, load_file, save_checkpoint
from ..errors import BadInputError
from ..models.slowd import SlowD, build_slowd, load_pyslowfast_checkpoint, speed_up
from ..optim import lr_scheduler, make_optimizer, param_groups, scaled_lr, warmup_steps
from ..training import host_scalar
from ..video.transforms import param_dtype
from .config import BackboneConfig

log = logging.getLogger(__name__)

SKIPPED_KEY = "moviessl_skipped_items"  # a checkpoint's dataset indices of the bad videos met so far


def build_backbone(cfg: BackboneConfig) -> tuple[nn.Module, dict]:
    """(Slow-D, arch spec) from the ``model`` block."""
    ov = dict(cfg.model.overrides)
    return build_slowd(cfg.model.preset, **ov), arch_spec(
        "moviessl.models.slowd:build_slowd", preset=cfg.model.preset, **ov
    )


class BackboneModule(pl.LightningModule):
    """Shared by the pretraining methods: backbone, optimiser, logging, bad-item count, export."""

    name = "base"  # set by @register_method
    views: str | None = "pair"
    pair_sampler = "cvrl"
    needs_flow = False
    needs_labels = False
    config_sections: tuple[str, ...] = ()
    step_cost = 1.0  # a training step's wall time relative to CVRL's (time-left estimates)
    setup_cost_s = 10.0  # seconds beside the steps (start-up, the probe), one thread
    batch_negatives = ""  # e.g. CVRL's negatives: gradient accumulation does not add to them

    def __init__(self, cfg: BackboneConfig, num_classes: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone, self.arch = build_backbone(cfg)
        self._skipped: set[int] = set()

    @classmethod
    def check_config(cls, cfg: BackboneConfig, global_batch: int | None) -> None:
        """Raise :class:`~moviessl.errors.BadInputError` for settings this method cannot run with
        (``global_batch``: videos per step over all processes, None if not known up front)."""

    def chance_loss(self, global_batch: int) -> float | None:
        """The training loss of outputs that ignore the input -- every embedding alike, so every
        candidate of a contrastive term (or every class) scored the same -- at ``global_batch``
        videos per step over all processes. A run whose loss ends above it has not solved its
        pretext task, and may have learned little from it. None: no loss."""
        return None

    # a batch of V views of B videos counts B*V clips for the throughput shown in the bar
    def items_in_batch(self, batch) -> int:
        v = batch["video"]
        return int(v.shape[0] * v.shape[1])

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0)

    def as_weights(self, clips) -> tuple[torch.Tensor, ...]:
        """Augmented views (or flows), made in float32, in the dtype of the backbone's weights
        (float64 at ``64-true``; float32, unchanged, under a mixed precision): Lightning converts a
        batch's float tensors before ``on_after_batch_transfer``, where the views do not exist yet,
        so at 64-true the first convolution met float64 weights with float32 views."""
        dtype = param_dtype(self.backbone) or torch.float32
        return tuple(c.to(dtype) for c in clips)

    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0):
        # the dataset indices of the bad videos a batch's items stood in for, taken while the batch is
        # on the host: after the transfer, reading them (a .tolist() of a device tensor) made every
        # step wait for the GPU
        if isinstance(batch, dict) and isinstance(batch.get("skipped"), torch.Tensor):
            batch = {**batch, "skipped": batch["skipped"].flatten().tolist()}
        return batch

    def note_skipped(self, batch) -> None:
        sk = batch.get("skipped")
        if sk is not None:
            sk = sk.flatten().tolist() if isinstance(sk, torch.Tensor) else sk  # a list: on_before_batch_transfer's
            self._skipped.update(int(v) for v in sk if v >= 0)
            if self._skipped:
                self.log("data/skipped", host_scalar(float(len(self._skipped))), on_step=True, on_epoch=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the bad videos met so far (decoding on the fly, a bad video is found by the batch that draws
        # it), every rank's: else a resumed run's bad_videos.json, summary and data/skipped curve held
        # only those met after the resume. Every rank builds the checkpoint (a collective is safe here);
        # rank 0 writes it.
        from ..dist import gather_objects

        checkpoint[SKIPPED_KEY] = sorted(set().union(*gather_objects(sorted(self._skipped))))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._skipped = {int(i) for i in checkpoint.get(SKIPPED_KEY, ())}

    def log_step(self, loss: torch.Tensor, batch_size: int, **extra: torch.Tensor) -> None:
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=batch_size)
        for k, v in extra.items():
            self.log(f"train/{k}", v.detach(), on_step=True, on_epoch=False, batch_size=batch_size)
        # _trainer: Lightning's `trainer` raises where none is attached (a module stepped by hand)
        t = self._trainer
        opt = t.optimizers[0] if t is not None and t.optimizers else None
        if opt is not None:
            self.log("lr", host_scalar(float(opt.param_groups[0]["lr"])), prog_bar=True, on_step=True, on_epoch=False)

    def setup(self, stage: str) -> None:
        # CVRL syncs BN across replicas; SyncBatchNorm needs an accelerator, so only there.
        if (
            self.cfg.model.sync_bn
            and self._trainer is not None
            and self._trainer.world_size > 1
            and self._trainer.strategy.root_device.type == "cuda"
        ):
            for name, child in list(self.named_children()):
                setattr(self, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        # after the BN conversion, so the compiled graph sees the final modules; every Slow-D of the
        # method (MoDist: the flow net and both key encoders too)
        m = self.cfg.model
        if m.channels_last or m.compile:
            for net in [mod for mod in self.modules() if isinstance(mod, SlowD)]:
                speed_up(net, channels_last=m.channels_last, compile=m.compile)

    def configure_optimizers(self):
        t, o = self.trainer, self.cfg.optim
        global_batch = self.cfg.data.batch_size * int(t.world_size) * int(t.accumulate_grad_batches or 1)
        total = max(1, int(t.estimated_stepping_batches))
        lr = scaled_lr(o.lr, global_batch, o.ref_batch)  # CVRL: 0.32 per 1024
        opt = make_optimizer(
            param_groups(self.named_parameters(), o.weight_decay),
            o.name,
            lr,
            momentum=o.momentum,
            eta=o.eta,
            nesterov=o.nesterov,
        )
        return {
            "optimizer": opt,
            "lr_scheduler": lr_scheduler(
                opt,
                total,
                warmup_steps(o.warmup_frac, total),
                o.final_lr_frac,
                start_frac=o.warmup_start_frac,
                cosine_over_warmup=o.cosine_over_warmup,
            ),
        }

    def load_init(self, path: str | os.PathLike) -> dict[str, Any]:
        """Start from earlier weights (``model.init``), e.g. the paper's "an additional 200 epochs on
        VidSitu" after K400 (§4): the optimiser and schedule start afresh, the weights do not.

        ``path`` is one of: a pretraining run's Lightning checkpoint (``checkpoints/last.ckpt``: every
        weight and buffer of the method whose names and shapes match -- heads, flow net, momentum
        encoders, queues); a moviessl ``backbone`` checkpoint (``model.pt``: the Slow-D only); or a
        PySlowFast ``.pyth`` (Slow R50 weights, 1xkxk stem inflated; models.slowd). Every Slow-D
        weight must be found (a classifier ``head`` of another size excepted), else BadInputError.
        Returns what was loaded, for the run's summary."""
        path = Path(path)
        if not path.is_file():
            raise BadInputError(path, "model.init: checkpoint not found")
        obj = None
        if path.suffix != ".pyth":  # ours and Lightning's, under load_checkpoint's trust rule
            try:
                obj = load_file(path)
            except BadInputError as e:
                if e.path is not None and str(e.path) != str(path):  # e.g. a bad MOVIESSL_TRUST_CHECKPOINTS
                    raise
                raise BadInputError(path, f"model.init: {e.cause}") from None
            except Exception as e:
                raise BadInputError(path, f"model.init: not a readable checkpoint ({type(e).__name__})") from None
        if isinstance(obj, Mapping) and obj.get("format") == "moviessl":
            if obj.get("stage") != "backbone":
                raise BadInputError(
                    path, f"model.init: checkpoint is from stage '{obj.get('stage')}', expected backbone"
                )
            src, kind = {f"backbone.{k}": v for k, v in obj["state_dict"].items()}, "backbone"
        elif (
            isinstance(obj, Mapping)
            and "pytorch-lightning_version" in obj
            and isinstance(obj.get("state_dict"), Mapping)
        ):
            src, kind = dict(obj["state_dict"]), "lightning"
        else:  # a PySlowFast file: tensors only, by the safe loader (models.slowd)
            loaded = load_pyslowfast_checkpoint(self.backbone, obj if isinstance(obj, Mapping) else path)
            src, kind = (
                {f"backbone.{k}": v for k, v in self.backbone.state_dict().items() if k in loaded["loaded"]},
                "pyslowfast",
            )
        own = self.state_dict()
        take = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
        lost = [k for k in own if k.startswith("backbone.") and not k.startswith("backbone.head.") and k not in take]
        if lost:
            raise BadInputError(
                path,
                f"model.init: {len(lost)} Slow-D weights missing or of another shape (e.g. {lost[0]}); "
                f"is it the same model.preset ({self.cfg.model.preset})?",
            )
        self.load_state_dict(take, strict=False)
        self.on_init_loaded(set(take))
        skipped = sorted(k for k in src if k not in take)  # another method's parts, heads of another size
        if skipped:
            log.info(
                "model.init %s: %d tensors loaded, %d skipped (e.g. %s)", path, len(take), len(skipped), skipped[0]
            )
        return {"init": str(path), "init_kind": kind, "init_tensors": len(take), "init_skipped": len(skipped)}

    def on_init_loaded(self, loaded: set[str]) -> None:
        """After :meth:`load_init`: make derived weights consistent with what was loaded (MoDist's
        momentum encoders start as copies of their query networks)."""

    def export_input(self) -> dict[str, int]:
        """The clip geometry the backbone was trained on (checkpoint ``meta.input``)."""
        d = self.cfg.data
        return {"num_frames": d.num_frames, "stride": d.stride, "short_side": d.short_side, "crop": d.crop}

    def export(self, path: str | os.PathLike, extra_meta: Mapping[str, Any] | None = None) -> Path:
        """Write the moviessl ``backbone`` checkpoint (Slow-D weights + arch + config + meta)."""
        meta = {
            "input": self.export_input(),
            "method": self.name,
            "out_dim": int(self.backbone.out_dim),
            "global_step": int(self.global_step) if self._trainer is not None else 0,
            "skipped_videos": len(self._skipped),
        }
        meta.update(extra_meta or {})
        return save_checkpoint(
            path, stage="backbone", arch=self.arch, state_dict=self.backbone.state_dict(), config=self.cfg, meta=meta
        )
