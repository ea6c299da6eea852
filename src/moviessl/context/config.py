"""Schemas of the event-level pretraining configs: ``context`` (``moviessl/configs/context/``, TxE
event mask prediction, paper §3.3) and ``ot_pretrain`` (``moviessl/configs/ot_pretrain/``, LVU's
masked-instance pretraining of the Object Transformer). Types and meaning only; values live in the
presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

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
    activation: Optional[str]  # relu | gelu
    attn_dropout: Optional[float]  # on the attention probabilities
    ffn_dropout: Optional[float]  # after the FFN's activation


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
    replace: float  # share of the span given [MASK] (paper: 1.0; BERT: 0.8) ...
    swap: float  # ... given another event's feature (BERT: 0.1); the rest kept, all scored
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


# --- Object Transformer masked-instance pretraining (LVU; ``moviessl pretrain-ot``) -----------------


@dataclass
class OTArchConfig:
    preset: str  # an Object Transformer preset (moviessl.models.object_transformer.OT_PRESETS)
    overrides: dict[str, Any]  # changes to the preset (dim, depth, heads, mlp_dim, dropout, ...)


@dataclass
class OTSpanDataConfig:
    span_s: int  # seconds per span (LVU: 60)
    box_jitter: float  # training box jitter, fraction of the box size (LVU: 0.2)
    batch_size: int  # span *pairs* per step (LVU: 16, i.e. 32 spans)
    num_workers: int
    instance_cache_mb: int  # instance features kept in RAM per process (features.instances.set_feature_cache)


@dataclass
class InstanceMaskingConfig:
    track_fraction: float  # fraction of track ids masked per span, whole tracklets (LVU: 0.15, >= 1)
    replace: float  # of the masked tokens: replaced by the learned [MASK] vector (0.8) ...
    swap: float  # ... swapped with another real feature (0.1); the rest is kept
    action_weight: float  # weight of the distillation of the teacher's action logits (LVU: 80)
    temperature: float  # distillation temperature (LVU: 1)
    activation: str  # sigmoid (LVU: AVA's multi-label head) | softmax (a single-label classifier)
    span_weight: float  # weight of the span-compatibility loss (LVU --same_movie: 1; 0 = off)
    span_temperature: float  # its temperature (0.2)
    span_dim: int  # its projection (128)


@dataclass
class OTOptimConfig:
    lr: float
    weight_decay: float  # on everything but biases and norms (LVU's split)
    warmup_frac: float  # linear warm-up over this fraction of the steps, then linear decay to 0


@dataclass
class OTPretrainConfig:
    seed: int
    model: OTArchConfig
    data: OTSpanDataConfig
    masking: InstanceMaskingConfig
    optim: OTOptimConfig
    trainer: TrainerConfig
