"""Schema of the VidSitu tasks' config (``moviessl/configs/vidsitu/{paper,cpu}.yaml``).
Types and meaning only; values live in the presets (see :mod:`moviessl.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ...config import TrainerConfig


@dataclass
class VidSituDataConfig:
    train_split: str
    eval_split: str
    split_file: Optional[str]  # a filtered eval split list (e.g. valid without the LVU-overlap videos)
    num_workers: int
    num_frames: Optional[int]  # clips for --videos; None: the backbone checkpoint's meta.input
    stride: Optional[int]
    resize: str  # clips for --videos: squash (whole frame to crop x crop, VidSitu's) | crop (short side + centre crop)
    eval_batch_size: int
    input_norm: str  # fixed (train statistics, computed once) | batch (BatchNorm / raw TxE input: before)


@dataclass
class TxEPresetConfig:
    preset: str  # TxE built for --contextualizer scratch
    overrides: dict[str, Any]


@dataclass
class TaskTrainConfig:
    """Training of one task head (and of a fine-tuned backbone / TxE under it)."""

    batch_size: int  # segments per step
    epochs: int
    lr: float
    weight_decay: float
    warmup_steps: int  # linear warm-up, then constant
    backbone_lr_scale: float  # x lr for Slow-D fine-tuned end to end (0 freezes)
    txe_lr_scale: float  # x lr for a TxE under the head (0 freezes)


@dataclass
class VerbConfig(TaskTrainConfig):
    hidden: Optional[int]  # None: d/2 (VidSitu's head)
    dropout: float


@dataclass
class SRLConfig(TaskTrainConfig):
    txd: str  # a TxD preset (moviessl.models.txd.TXD_PRESETS)
    txd_overrides: dict[str, Any]
    memory: str  # what event i's decoder cross-attends to: self | all | self_input
    max_len: int  # target tokens
    vocab_size: int  # BPE vocabulary learned on the train phrases
    min_frequency: int


@dataclass
class RelationConfig(TaskTrainConfig):
    hidden: Optional[int]  # None: d
    dropout: float
    class_weighted: bool  # inverse-frequency class weights (Mean-Acc averages over classes)
    pair_identity: bool  # the head is told which of the 4 pairs it classifies


@dataclass
class VidSituConfig:
    seed: int
    threads: Optional[int]  # torch intra-op threads during the runs (None: leave as is)
    data: VidSituDataConfig
    txe: TxEPresetConfig
    verb: VerbConfig
    srl: SRLConfig
    relation: RelationConfig
    trainer: TrainerConfig
