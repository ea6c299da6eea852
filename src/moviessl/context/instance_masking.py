"""Masked-instance pretraining of LVU's Object Transformer (Wu & Krähenbühl, CVPR 2021, §4;
``chaoyuaw/lvu`` ``run_pretrain.sh`` and ``src/run.py``: ``get_mask_indices``, ``perform_masking``;
``src/models/modeling_roberta.py``: ``soft_label_loss_sigmoid``, ``SameMovieHeadLoss``).

On unlabeled long videos, with instance tokens only:

- **masking unit = a track**: each span's track ids are masked with probability ``track_fraction``
  (0.15), at least one per span, so a whole tracklet disappears and cannot be copied from its
  neighbours in time; each masked token is replaced by the learned [MASK] vector (80%), swapped
  with another real instance feature of the batch (10%) or kept (10%);
- **target** = a short-term action head (the teacher: a linear classifier ``W x + b`` on the same
  RoI features, e.g. AVA's SlowFast head in LVU, the supervised Slow-D's verb classifier here)
  applied to the *unmasked* feature; the OT's LM head output at the masked position is distilled
  towards it (``sigmoid`` KL per class, LVU's, or ``softmax`` KL for a single-label teacher);
- **span compatibility**: two spans of the same video are a positive pair, the other spans of the
  batch negatives: pooled output -> Linear-GELU-LN-Linear(128) (no L2 normalisation), CE at
  temperature 0.2.

:func:`pretrain_ot` trains it with :func:`moviessl.training.fit` and exports the OT (stage ``ot``)
for ``moviessl finetune lvu --init``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from ..checkpoint import arch_spec, file_hash, load_file, save_checkpoint
from ..config import to_dict
from ..dist import global_mean_share, is_dist, times_share
from ..errors import BadInputError
from ..features.extract import run_lock
from ..features.instances import keeps_feature_cache, set_feature_cache
from ..loader import train_loader
from ..models.heads import BertLMHead
from ..models.object_transformer import ID_OFFSET, INSTANCE, build_object_transformer, span_checked_settings
from ..optim import lr_scheduler, make_optimizer, no_decay_for_vectors, param_groups, warmup_steps
from ..ssl.losses import full_precision
from ..training import (
    OnHost,
    final_metrics,
    fit,
    keeps_random_streams,
    keeps_threads,
    planned_world_size,
    refuse_earlier_run,
    seed_everything,
    setup_machine,
    warn_micro_batch_negatives,
)
from ..utils.io import atomic_write_json, ensure_out_dir
from .config import OTPretrainConfig
from .maskpred import corrupt_selected, positions
from .ot_spans import SpanPairs, SpanVideo, collate_spans, input_stats

log = logging.getLogger("moviessl.context")


HOST_MASKS = "host_track_masks"  # a training batch's (masked, instance) token masks, drawn on the host
REDRAWS = 100  # rounds of redrawing a span that masked no track, before one is picked for it


def track_masks(
    link: torch.Tensor, kind: torch.Tensor, fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, N) bool: instance tokens whose track is masked. Each span's tracks are masked with
    probability ``fraction``, at least one track per span that has instances (LVU's ``get_mask_indices``)."""
    inst = kind == INSTANCE
    B = link.shape[0]
    tid = (link - ID_OFFSET).clamp(min=0)
    T = int(tid[inst].max()) + 1 if inst.any() else 1
    present = torch.zeros(B, T, dtype=torch.bool, device=link.device)
    present[torch.nonzero(inst, as_tuple=True)[0], tid[inst]] = True
    chosen = torch.zeros(B, T, dtype=torch.bool, device=link.device)
    # spans where nothing was drawn are drawn again, all their tracks, as LVU's `while` loop does:
    # forcing one track there instead over-weights single-track masks (fewer tracks masked per span)
    redo = present.any(1)
    # drawn on the CPU (as maskpred's draws): the same stream whatever torch's default device
    for _ in range(REDRAWS if fraction > 0 else 0):
        if not redo.any():
            break
        u = torch.rand(int(redo.sum()), T, generator=generator, device="cpu").to(link.device)
        chosen[redo] = (u < fraction) & present[redo]
        redo = redo & ~chosen.any(1)
    if redo.any():  # a fraction so small (or 0) that redrawing would not end: one track, uniformly
        u = torch.rand(B, T, generator=generator, device="cpu").to(link.device)
        pick = torch.where(present, u, torch.full_like(u, 2.0)).argmin(1)
        chosen[redo, pick[redo]] = True
    return inst & chosen.gather(1, tid)


@full_precision
def distill_loss(pred: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0, activation: str = "sigmoid"):
    """Soft-label distillation on the masked tokens (LVU's ``soft_label_loss_sigmoid``: per-class
    binary KL summed and divided by the number of (token, class) entries, x T²; or the softmax KL
    per token, batch mean, x T²). In float32 whatever the head's dtype under a mixed precision: near
    convergence the KL is a difference of nearly equal log-probabilities, which bf16 rounds away."""
    t = temperature
    pred, teacher = pred.float(), teacher.float()
    if activation == "softmax":
        return F.kl_div(F.log_softmax(pred / t, -1), F.softmax(teacher / t, -1), reduction="batchmean") * t**2
    kl = F.kl_div(F.logsigmoid(pred / t), torch.sigmoid(teacher / t), reduction="sum") + F.kl_div(
        F.logsigmoid(-pred / t), torch.sigmoid(-teacher / t), reduction="sum"
    )
    return kl / max(1, pred.numel()) * t**2


@full_precision
def span_compatibility_loss(z: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Rows i and i + B of ``z`` (2B, d) are two spans of one video; every other row is a negative
    (LVU's ``SameMovieHeadLoss``: dot products, no normalisation). The logits are float32 under a
    mixed precision, as the InfoNCE losses' (:func:`moviessl.ssl.losses.full_precision`)."""
    z = z.float()
    n = z.shape[0]
    half = n // 2
    logits = (z @ z.t()) / temperature
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    target = (torch.arange(n, device=z.device) + half) % n
    return F.cross_entropy(logits, target)


def load_teacher_head(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear action classifier ``(W (C, D), b (C,))`` from: a moviessl backbone checkpoint built
    with a head (``head.weight``), a Lightning checkpoint of ``moviessl pretrain-backbone --method
    supervised`` (``classifier.1.weight``), or a PySlowFast checkpoint (``head.projection.weight``,
    LVU's ``--short_term_model_weights``)."""
    path = Path(path)
    try:
        obj = load_file(path)  # under load_checkpoint's trust rule
    except BadInputError:
        raise
    except FileNotFoundError:
        raise BadInputError(path, "teacher checkpoint not found") from None
    except Exception as e:
        raise BadInputError(path, f"not a readable checkpoint ({type(e).__name__})") from None
    # a tensor or list saved alone (no state dict) was an AttributeError traceback at .get below
    state = obj if isinstance(obj, dict) else {}
    for key in ("state_dict", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            state = obj[key]
            break
    for prefix in ("head.projection.", "classifier.1.", "backbone.head.", "head."):
        w, b = state.get(prefix + "weight"), state.get(prefix + "bias")
        if isinstance(w, (torch.Tensor, np.ndarray)) and np.ndim(w) == 2 and b is not None:
            if tuple(np.shape(b)) != (w.shape[0],):
                # one of 1 (or a scalar) broadcast over every class of the distillation target
                # without a word; another shape failed at the first training step
                raise BadInputError(
                    path,
                    f"{prefix}bias has shape {tuple(np.shape(b))}, not one value per {prefix}weight's "
                    f"{w.shape[0]} classes: not a linear classifier",
                )
            return torch.as_tensor(np.asarray(w), dtype=torch.float32), torch.as_tensor(
                np.asarray(b), dtype=torch.float32
            )
    run_ckpt = path.parent / "checkpoints" / "last.ckpt"
    if isinstance(obj, dict) and obj.get("format") == "moviessl" and run_ckpt.is_file():
        # a supervised run's model.pt is its backbone alone; the classifier is in the run's checkpoint
        log.info("%s holds no classifier; reading the teacher from %s", path, run_ckpt)
        try:
            return load_teacher_head(run_ckpt)
        except BadInputError:
            raise BadInputError(
                path, f"no linear classifier in it or in its run's {run_ckpt.name} (not a supervised run?)"
            ) from None
    raise BadInputError(
        path,
        "no linear classifier (head.projection / classifier.1 / head weight + bias) in it (a supervised "
        "pretraining run's model.pt is its backbone alone: pass that run's checkpoints/last.ckpt)",
    )


class InstanceMaskingModule(pl.LightningModule):
    """OT + action LM head + span projection; only the OT is exported."""

    # Under DDP (moviessl.training.fit): the OT's pooler and the span head take no part in a step
    # without the span term -- ``masking.span_weight=0``, or a batch of one pair (two spans, no
    # negative) -- and DDP, not told, failed at the next step ("Expected to have finished reduction").
    # Told, it leaves a parameter no process used without a gradient, as one process does (AdamW
    # skips it), where a zero loss touching it would have given weight decay a step to take.
    ddp_find_unused_parameters = True

    def __init__(self, cfg: OTPretrainConfig, in_dim: int, teacher: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        m = cfg.masking
        if m.activation not in ("sigmoid", "softmax"):
            raise BadInputError("masking.activation", f"must be sigmoid or softmax, got '{m.activation}'")
        if m.action_weight <= 0 and m.span_weight <= 0:
            # every step's loss would be a constant: the first backward failed in a traceback
            raise BadInputError("masking.span_weight", "0 with masking.action_weight=0 too: nothing to train")
        if m.action_weight > 0 and teacher is None:
            raise BadInputError(
                "--teacher", "masked-instance distillation needs a teacher head (or masking.action_weight=0)"
            )
        self.cfg, self.in_dim = cfg, int(in_dim)
        self.ot = build_object_transformer(cfg.model.preset, in_dim=self.in_dim, **dict(cfg.model.overrides))
        dim = self.ot.dim
        if teacher is not None and m.action_weight > 0:
            w, b = teacher
            if w.shape[1] != self.in_dim:
                raise BadInputError(
                    "--teacher", f"teacher head takes {w.shape[1]}-d features, the instances are {self.in_dim}-d"
                )
            self.register_buffer("teacher_w", w.t().contiguous())
            self.register_buffer("teacher_b", b)
            self.action_head = BertLMHead(dim, w.shape[0])
        else:
            self.teacher_w = self.teacher_b = self.action_head = None
        self.span_head = BertLMHead(dim, m.span_dim) if m.span_weight > 0 else None

    def items_in_batch(self, batch: dict) -> int:
        return int(batch["x"]["kind"].shape[0])

    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0):
        # the tracks to mask drawn here, on the host, from the same CPU stream and in the same order as
        # the step drew them (nothing draws between this hook and the step): track_masks decides from
        # the tracks present and redraws spans while one has none, reading each count on the host, so
        # drawn from device tensors every step waited for the GPU some forty times
        # _trainer: Lightning's `trainer` raises where none is attached (a module stepped by hand)
        if self._trainer is not None and self._trainer.training and isinstance(batch, dict) and "x" in batch:
            x = batch["x"]
            masked = track_masks(x["link"], x["kind"], self.cfg.masking.track_fraction)
            batch = {**batch, HOST_MASKS: OnHost((masked, x["kind"] == INSTANCE))}
        return batch

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        m = self.cfg.masking
        x = dict(batch["x"])
        if HOST_MASKS in batch:  # (masked tokens, instance tokens) on the host
            masked, instances = batch[HOST_MASKS].value
        else:
            masked, instances = track_masks(x["link"], x["kind"], m.track_fraction), x["kind"] == INSTANCE
        at = positions(masked, self.device)  # x[at] is x[masked]
        n_masked = len(at[0])
        loss = torch.zeros((), device=self.device)
        logs: dict[str, Any] = {}
        if self.action_head is not None:
            target = (x["inst"][at] @ self.teacher_w + self.teacher_b).detach()  # of the unmasked features
        # BERT's 80/10/10; swaps drawn from the instance tokens not replaced, as LVU does
        x["inst"], x["mask"] = corrupt_selected(x["inst"], masked, instances, m.replace, m.swap)
        h = self.ot.encode(x)
        # the distillation term is a mean over this process's masked tokens, whose count varies with
        # the tracks drawn: under DDP the returned loss weighs it so that the averaged gradient is that
        # of the mean over every process's masked tokens (an all-reduce on every process, masked or
        # not); ``loss``, logged, stays this process's own
        share = global_mean_share(n_masked, self.device) if self.action_head is not None else 1.0
        step_loss = loss
        if self.action_head is not None and n_masked:
            la = distill_loss(self.action_head(h[at]), target, m.temperature, m.activation)
            loss = loss + m.action_weight * la
            step_loss = step_loss + times_share(m.action_weight * la, share)
            logs["train/action_kl"] = la
        if self.span_head is not None and h.shape[0] >= 4:
            # per process by design (LVU's negatives are one process's spans), a mean over its 2B
            # spans: a count every process shares (the distributed sampler gives each as many pairs)
            ls = span_compatibility_loss(self.span_head(self.ot.pooled(h)), m.span_temperature)
            loss = loss + m.span_weight * ls
            step_loss = step_loss + m.span_weight * ls
            logs["train/span_loss"] = ls
        bs = self.items_in_batch(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/masked_tokens", masked.sum().float(), batch_size=bs)
        for k, v in logs.items():
            self.log(k, v, batch_size=bs)
        return step_loss if is_dist() else loss

    def configure_optimizers(self):
        o = self.cfg.optim
        opt = make_optimizer(param_groups(self.named_parameters(), o.weight_decay, no_decay_for_vectors), "adamw", o.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return {
            "optimizer": opt,
            "lr_scheduler": lr_scheduler(opt, total, warmup_steps(o.warmup_frac, total), decay="linear"),
        }

    def export(self, path: str | os.PathLike, meta: dict | None = None) -> Path:
        arch = arch_spec(
            "moviessl.models.object_transformer:build_object_transformer",
            preset=self.cfg.model.preset,
            in_dim=self.in_dim,
            **dict(self.cfg.model.overrides),
        )
        m = {"in_dim": self.in_dim, "dim": int(self.ot.dim), "objective": "masked instances + span compatibility"}
        m.update(meta or {})
        return save_checkpoint(
            path, stage="ot", arch=arch, state_dict=self.ot.state_dict(), config=to_dict(self.cfg), meta=m
        )


@keeps_threads
@keeps_random_streams
@keeps_feature_cache
def pretrain_ot(
    instances,
    out: str | os.PathLike,
    cfg: OTPretrainConfig,
    teacher: str | os.PathLike | None = None,
    ids: list[str] | None = None,
    resume: bool = False,
) -> Path:
    """Masked-instance pretraining on every video of ``instances`` (an :class:`~moviessl.features.
    instances.InstanceStore` or the LVU release reader; labels are never read) -> ``OUT/model.pt``
    (stage ``ot``). Writes ``OUT/config.yaml``, logs, curves and Lightning checkpoints."""
    refuse_earlier_run(out, resume)  # before anything, and without making the folder
    span_checked_settings(cfg.model.preset, cfg.model.overrides, cfg.data.span_s)
    # then the folder, before the teacher and every video are read (an --out that cannot be written
    # was said only after that work)
    out = ensure_out_dir(out)
    with run_lock(out):  # one job per folder (the leader of a multi-process launch takes it)
        seed_everything(cfg.seed)
        setup_machine(cfg.trainer)
        set_feature_cache(cfg.data.instance_cache_mb)
        # the teacher is checked before the videos are read (every file of a large release)
        module = InstanceMaskingModule(cfg, instances.dim, load_teacher_head(teacher) if teacher else None)
        videos = []
        for vid in ids if ids is not None else list(instances.ids):
            try:
                inst = instances.load(vid, lazy=True)
            except BadInputError as e:
                log.warning("skipping %s", e)
                continue
            if len(inst):
                videos.append(SpanVideo(vid, inst=inst))
        if not videos:
            raise BadInputError(getattr(instances, "root", None), "no videos with instances to pretrain on")
        d = cfg.data
        if cfg.masking.span_weight > 0:  # LVU's span loss is per process: its negatives are one process's spans
            warn_micro_batch_negatives(cfg.trainer, "the span compatibility loss's negatives", 2 * d.batch_size)
        ot = module.ot
        if ot.inst_norm is not None:  # model.overrides.input_norm: the statistics of the videos it pretrains on
            ot.set_input_stats(*input_stats(videos))
        data = SpanPairs(videos, d.span_s, ot.max_instances, ot.max_positions // 2, d.box_jitter)
        world = planned_world_size(cfg.trainer)
        drop_last = len(data) >= d.batch_size * world
        per_batch = d.batch_size if drop_last else min(d.batch_size, -(-len(data) // world))
        if cfg.masking.action_weight <= 0 and per_batch < 2:
            # the span loss's negatives are the other pairs of a process's batch: with one pair every
            # step's loss was a constant, and the first backward failed in a traceback
            raise BadInputError(
                "data.batch_size",
                f"{per_batch} span pair per process: with masking.action_weight=0 the span loss alone needs 2 "
                f"({len(data)} pairs over {world} process(es)): raise data.batch_size, or distil a teacher as well",
            )
        dl = train_loader(
            data,
            min(d.batch_size, len(data)),
            seed=cfg.seed,
            shuffle=False,  # items are random draws already
            # under DDP each process gets its share: dropping a short last batch left none when the
            # pairs were fewer than a batch per process
            drop_last=drop_last,
            num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
            collate_fn=collate_spans,
        )
        log.info(
            "masked-instance pretraining on %d videos, %d spans, %d-d instances", len(videos), len(data), instances.dim
        )
        trainer = fit(
            module,
            cfg.trainer,
            out,
            config=cfg,
            train_dataloaders=dl,
            resume=resume,
            throughput_name="spans_per_s",
            curve_keys=("train/loss", "train/action_kl", "train/span_loss"),
        )
        path = out / "model.pt"
        if trainer.is_global_zero:
            # which tracks it saw: LVU's release takes its boxes and track ids from the instance
            # metadata (a pkl or the instance_meta/ folder), a moviessl folder from its index; the
            # digest is of those by content (source_digest), which a rerun can compare
            digest = getattr(instances, "source_digest", None)
            meta = {
                "instances": str(getattr(instances, "root", "")),
                "instance_meta": getattr(instances, "meta_path", None),
                "instances_digest": digest() if digest else None,
                "backbone": getattr(instances, "backbone", None),
                "teacher": file_hash(teacher) if teacher else None,
                "num_videos": len(videos),
                "steps": int(trainer.global_step),
            }
            module.export(path, meta=meta)
            # what the folder was made from, beside the weights: model.pt's meta alone needs the loader to read
            root = getattr(instances, "root", None)
            summary = {
                "out": str(Path(out).resolve()),  # absolute, as the instances' path beside it
                **meta,
                "instances": str(Path(root).resolve()) if root else None,
                "teacher_path": str(Path(teacher).resolve()) if teacher else None,
                "num_spans": len(data),
                "seed": cfg.seed,
                "metrics": final_metrics(trainer, "train/"),
            }
            atomic_write_json(out / "summary.json", summary)
        return path
