"""Run by test_context_ddp.py as ``python ddp_val_script.py OUT DEVICES BATCH``: validates one fixed
MaskPredModule (seeded weights, a queue of 3 fixed distractors) on 7 held-out windows through
``pretrain-context``'s validation loader, on DEVICES CPU processes (Lightning's DDP re-executes this
file for rank 1), and writes rank 0's epoch metrics to ``OUT/d{DEVICES}_b{BATCH}.json``."""

import json
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from moviessl.config import load_config
from moviessl.context.module import MaskPredModule
from moviessl.context.pretrain import validation_loader
from moviessl.context.windows import FeatureWindows
from moviessl.dist import end_process_group
from moviessl.features.store import FeatureStore

if __name__ == "__main__":
    out, devices, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    feats = out / "feats"
    g = np.random.default_rng(0)
    arrays = [g.normal(size=(5, 16)).astype(np.float32) for _ in range(7)]  # VidSitu's layout: (5, D) per clip
    feats.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        np.save(feats / f"m{i:02d}_feats.npy", a)
    over = ["model.txe_overrides.dim=32", "model.txe_overrides.heads=2", "model.txe_overrides.mlp_dim=64"]
    cfg = load_config("context", "cpu", [*over, "model.txe_overrides.depth=1", "maskpred.queue_size=64"])
    val = FeatureWindows([FeatureStore(feats)], cfg.data.window, cfg.data.token_stride_s, 1, random_start=False)
    torch.manual_seed(0)
    module = MaskPredModule(cfg, val.dim)
    keys = torch.nn.functional.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    module.queue.enqueue(keys, torch.arange(3) + 1000)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(module, validation_loader(val, batch))  # padded for the processes the run has
    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        (out / f"d{devices}_b{batch}.json").write_text(json.dumps(metrics))
    end_process_group()  # as the CLI does: left to the interpreter's exit, gloo may abort the process
