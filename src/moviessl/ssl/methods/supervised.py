"""Supervised baseline: Slow-D trained with labels (cross-entropy), the paper's "Sup-K400" analogue.

Same clips and crops as the SSL methods (one view per video) but, as PySlowFast's supervised recipe
(Feichtenhofer et al., SlowFast, ICCV 2019), no colour jitter, grayscale, blur or solarisation;
dropout + linear classifier on the pooled feature as PySlowFast's head. Only the backbone is
exported, so it is used downstream exactly like an SSL backbone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import crop_flip_augmenter
from ..base import BackboneModule
from ..config import BackboneConfig
from ..registry import register_method


@register_method("supervised")
class Supervised(BackboneModule):
    views = "single"
    step_cost = 0.5  # one clip per video where CVRL has two
    needs_labels = True
    config_sections = ("supervised",)

    def __init__(self, cfg: BackboneConfig, num_classes: int | None = None):
        super().__init__(cfg)
        s = cfg.supervised
        self.num_classes = int(num_classes)
        self.classifier = nn.Sequential(nn.Dropout(s.dropout), nn.Linear(self.backbone.out_dim, self.num_classes))
        nn.init.normal_(self.classifier[1].weight, std=0.01)
        nn.init.zeros_(self.classifier[1].bias)
        self.label_smoothing = s.label_smoothing
        self.aug = crop_flip_augmenter(cfg, blur_p=s.blur_p)

    def chance_loss(self, global_batch: int) -> float | None:
        # equal logits for every class: cross-entropy ln(C), label smoothing or not
        return math.log(self.num_classes)

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        if self._trainer is not None and self._trainer.training:
            batch["views"] = self.as_weights((self.aug(self.to_float(batch["video"])[:, 0]),))
        return batch

    def training_step(self, batch, batch_idx):
        self.note_skipped(batch)
        (x,) = batch["views"]
        y = batch["label"]
        logits = self.classifier(self.backbone(x))
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        with torch.no_grad():
            acc = (logits.argmax(1) == y).float().mean()
        self.log_step(loss, x.shape[0], acc=acc)
        return loss
