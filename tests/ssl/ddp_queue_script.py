"""Run by test_ssl_ddp.py as ``python ddp_queue_script.py OUT``: 3 steps of a tiny module with a
BatchNorm and a MemoryQueue under Lightning DDP on 2 CPU processes (Lightning re-executes this file
for rank 1). Each rank records, at the start of every step (after DDP's buffer broadcast), its BN
running mean and its queue; after step 0 rank 1 shifts both by 100, a divergence only a broadcast
from rank 0 would undo. Rank 1 also builds its queue apart from rank 0's (row 10), which the one
broadcast at the start of training must undo. Each step also records a few random draws of the training
process: the ranks must not draw the same augmentation parameters or masks."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from moviessl.dist import end_process_group
from moviessl.ssl.queue import MemoryQueue
from moviessl.training import fit, seed_everything


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.queue = MemoryQueue(64, 4)
        if os.environ.get("LOCAL_RANK") == "1":  # ranks that start apart are synced once by fit()
            self.queue.queue[10] += 50.0
        self.record = []

    def training_step(self, batch, i):
        self.record.append(
            {
                "bn": self.net[1].running_mean.tolist(),
                "queue": self.queue.queue.tolist(),
                "draws": [*torch.rand(2).tolist(), float(np.random.rand())],  # augmentation-style draws
            }
        )
        y = self.net(batch[0])
        self.queue.enqueue(y.detach()[:1])  # 2 keys a step: rows 0-5 over 3 steps
        return y.pow(2).mean()

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, i):
        if i == 0 and self.global_rank == 1:
            self.net[1].running_mean.add_(100.0)
            self.queue.queue[63].add_(100.0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_train_end(self):
        out = Path(sys.argv[1])
        (out / f"rank{self.global_rank}.json").write_text(json.dumps(self.record))


if __name__ == "__main__":
    seed_everything(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4))
    trainer = dict(accelerator="cpu", devices=2, strategy="ddp", max_steps=3, progress_bar=False, ckpt_every_n_steps=0)
    fit(Tiny(), trainer, sys.argv[1], train_dataloaders=torch.utils.data.DataLoader(data, batch_size=4))
    end_process_group()  # as the CLI does: left to the interpreter's exit, gloo may abort the process
