"""Supervised baseline: Slow-D trained with labels (cross-entropy), the paper's "Sup-K400" analogue.

Same clips and crops as the SSL methods (one view per video) but, as PySlowFast's supervised
recipe, no colour jitter, grayscale, blur or solarisation, dropout + linear classifier on the pooled feature as PySlowFast's head. Only the
backbone is exported, so it is used downstream exactly like an SSL backbone.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import BackboneModule, make_augment


class Supervised(BackboneModule):
    method = "supervised"

    def __init__(self, cfg: Mapping[str, Any], num_classes: int):
        super().__init__(cfg)
        s = self.cfg["supervised"]
        self.num_classes = int(num_classes)
        self.classifier = nn.Sequential(nn.Dropout(float(s["dropout"])), nn.Linear(self.backbone.out_dim, self.num_classes))
        nn.init.normal_(self.classifier[1].weight, std=0.01)
        nn.init.zeros_(self.classifier[1].bias)
        self.label_smoothing = float(s.get("label_smoothing", 0.0))
        # PySlowFast's supervised recipe: scale/crop + flip only, no colour jitter / grayscale / blur
        self.aug = make_augment({**self.cfg, "augment": {**dict(self.cfg.get("augment") or {}), "jitter_p": 0.0, "gray_p": 0.0}},
                                blur_p=float(s.get("blur_p", 0.0)), solarize_p=0.0)

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        if self.trainer is not None and self.trainer.training:
            batch["views"] = (self.aug(self.to_float(batch["video"])[:, 0]),)
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
