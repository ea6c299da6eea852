"""Schema of the context stage's config (``moviessl/configs/context/{paper,cpu}.yaml``): TxE event
mask prediction (paper §3.3). Types and meaning only; values live in the presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import TrainerConfig


@dataclass
class TxEOverrides:
    """Changes to the TxE preset; None keeps the preset's value."""

    dim: Optional[int]
    depth: Optional[int]
    heads: Optional[int]
    mlp_dim: Optional[int]
    dropout: Optional[float]
    max_len: Optional[int]


@dataclass
class ContextModelConfig:
    txe: str  # a TxE preset (moviessl.models.txe.TXE_PRESETS)
    txe_overrides: TxEOverrides
    head_hidden: Optional[int]  # prediction head hidden width (None: the TxE width)


@dataclass
class ContextDataConfig:
    window: int  # N tokens per window
    token_stride_s: float  # 1 / 2 / 3 s (Table 2); a multiple of the features' stride
    windows_per_video: int  # random windows per video per epoch (epochs count videos)
    val_fraction: float  # held-out videos for val/retrieval_acc (0: none)
    batch_size: int  # windows per process
    num_workers: int
    mean_videos: int  # videos sampled for the fixed target centre


@dataclass
class MaskPredConfig:
    alpha: float  # mask sizes {1..floor(alpha N)} ...
    mask_sizes: Optional[list[int]]  # ... or this explicit set
    sampling: str  # uniform | max_discrepancy (Table 2)
    loss: str  # infonce (Eq. 1) | l2 (Table 2)
    tau: float
    queue_size: int  # K distractors
    keys_per_sample: int  # targets enqueued per window (equal all-gathers under DDP)
    target_dim: Optional[int]  # None: targets in the feature space; an int: a fixed random projection
    center: bool  # subtract the training-set mean feature from the targets
    input_norm: bool  # standardise the TxE's inputs by train statistics (false: raw, before issue 13)


@dataclass
class ContextOptimConfig:
    lr: float
    weight_decay: float
    warmup_frac: float
    betas: list[float]


@dataclass
class ContextConfig:
    seed: int
    model: ContextModelConfig
    data: ContextDataConfig
    maskpred: MaskPredConfig
    optim: ContextOptimConfig
    trainer: TrainerConfig
