"""Schema of the LVU tasks' config (``moviessl/configs/lvu/{paper,cpu}.yaml``).
Types and meaning only; values live in the presets (see :mod:`moviessl.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ...config import TrainerConfig


@dataclass
class LVUModelConfig:
    preset: str  # an Object Transformer preset (moviessl.models.object_transformer.OT_PRESETS)
    overrides: dict[str, Any]  # changes to the preset; must match a pretrained OT given with --init
    track_mask: float  # fraction of each span's tracks corrupted in training and scoring (LVU's code: 0.15)


@dataclass
class LVUDataConfig:
    span_s: int  # seconds per span (LVU: 60)
    box_jitter: float  # training box jitter, fraction of the box size (LVU: 0.2)
    eval_splits: list[str]  # scored after training, each separately (LVU: val and test)
    eval_batch_size: int  # spans per forward when scoring
    num_workers: int
    instance_cache_mb: int  # instance and scene features kept in RAM per process (instances.set_feature_cache)
    scene_stride_s: Optional[float]  # seconds between scene (event) features; None: the feature folder's


@dataclass
class LVUTrainConfig:
    batch_size: int  # spans per step
    epochs: int  # LVU's "epochs": one pass over #train videos x epochs random spans
    epochs_grid: list[int]  # non-empty: choose epochs from these on held-out train videos (runner.tune_epochs)
    tune_seeds: int  # runs per grid value when choosing
    lr: float
    betas: list[float]  # AdamW's (beta1, beta2) (LVU: HF AdamW's defaults, 0.9 and 0.999)
    weight_decay: float  # not on biases and norms (LVU's split)
    warmup_frac: float  # linear warm-up over this fraction of the steps, then linear decay to 0


@dataclass
class LVUConfig:
    seed: int
    threads: Optional[int]  # torch intra-op threads during the runs (None: leave as is)
    model: LVUModelConfig
    data: LVUDataConfig
    train: LVUTrainConfig
    trainer: TrainerConfig
