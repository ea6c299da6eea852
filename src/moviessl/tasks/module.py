"""The one LightningModule of the three VidSitu tasks.

A task model exposes ``loss(x, y)``; this module adds the optimiser (Adam(W), VidSitu's betas
(0.9, 0.99), a constant rate after an optional linear warm-up) with separate rates for a fine-tuned
backbone / TxE, logging, and batched input normalisation hooks. Training always runs through
``moviessl.training.fit``.
"""

from __future__ import annotations

from typing import Any, Mapping

import pytorch_lightning as pl
import torch


class TaskModule(pl.LightningModule):
    def __init__(self, model: torch.nn.Module, lr: float = 1e-4, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.99), backbone_lr_scale: float = 1.0, txe_lr_scale: float = 1.0,
                 warmup_steps: int = 0, loss_kwargs: Mapping[str, Any] | None = None):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.betas = float(lr), float(weight_decay), tuple(float(b) for b in betas)
        self.backbone_lr_scale, self.txe_lr_scale = float(backbone_lr_scale), float(txe_lr_scale)
        self.warmup_steps = int(warmup_steps)
        self.loss_kwargs = dict(loss_kwargs or {})

    def items_in_batch(self, batch: dict) -> int:
        return int(batch["x"].shape[0])  # segments (5 events each)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        kw = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in self.loss_kwargs.items()}
        loss = self.model.loss(batch["x"], batch["y"], **kw)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=self.items_in_batch(batch))
        return loss

    def configure_optimizers(self):
        enc = getattr(self.model, "encoder", None)
        groups: dict[str, list] = {"backbone": [], "txe": [], "head": []}
        backbone_ids = {id(p) for p in enc.backbone.parameters()} if enc is not None and enc.backbone is not None else set()
        txe_ids = {id(p) for p in enc.txe.parameters()} if enc is not None and enc.txe is not None else set()
        for p in self.model.parameters():
            if p.requires_grad:
                groups["backbone" if id(p) in backbone_ids else "txe" if id(p) in txe_ids else "head"].append(p)
        scale = {"backbone": self.backbone_lr_scale, "txe": self.txe_lr_scale, "head": 1.0}
        params = [{"params": ps, "lr": self.lr * scale[k], "name": k} for k, ps in groups.items() if ps and scale[k] > 0]
        for k, ps in groups.items():
            if scale[k] <= 0:  # lr scale 0 = frozen
                for p in ps:
                    p.requires_grad_(False)
        opt = torch.optim.AdamW(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        if self.warmup_steps <= 0:
            return opt
        warm = self.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
