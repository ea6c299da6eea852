"""Run by test_loader.py as
``python loader_resume_script.py OUT STEPS STOP WORKERS DEVICES TAG [resume] [every=K] [val]``: a tiny
module trained on ``train_loader`` (10 items per process, batch 2: 5 steps an epoch) with a checkpoint
every K (3) steps, which fails at step ``STOP`` (a preemption; -1: never) and records the items of each
step it trained, per rank, in ``OUT/seen{rank}.{TAG}.json``. ``val``: a validation loop at each epoch's
end, as ``pretrain-context`` has, and each step's ``global_step`` logged as ``train/global_step``.
Under ``DEVICES=2`` Lightning re-executes this file for rank 1."""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from moviessl.dist import end_process_group
from moviessl.loader import train_loader
from moviessl.training import fit, seed_everything


class Recorder(pl.LightningModule):
    def __init__(self, stop: int):
        super().__init__()
        self.lin, self.stop, self.seen = torch.nn.Linear(1, 1), stop, []

    def training_step(self, batch, i):
        if self.global_step == self.stop:
            self._save()
            raise RuntimeError("preempted")
        (x,) = batch
        self.seen.append(x[:, 0].long().tolist())
        self.log("train/global_step", float(self.global_step))
        return self.lin(x).pow(2).mean()

    def validation_step(self, batch, i):
        self.log("val/loss", self.lin(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def _save(self):
        (Path(sys.argv[1]) / f"seen{self.global_rank}.{sys.argv[6]}.json").write_text(json.dumps(self.seen))

    def on_train_end(self):
        self._save()


if __name__ == "__main__":
    out, steps, stop, workers, devices = Path(sys.argv[1]), *map(int, sys.argv[2:6])
    every = next((int(a[6:]) for a in sys.argv if a.startswith("every=")), 3)
    seed_everything(7)
    data = torch.utils.data.TensorDataset(torch.arange(10.0 * devices).view(-1, 1))
    loader = train_loader(data, 2, seed=7, drop_last=True, num_workers=workers, persistent_workers=workers > 0)
    trainer = dict(accelerator="cpu", devices=devices, max_steps=steps, progress_bar=False, ckpt_every_n_steps=every)
    trainer["log_every_n_steps"] = 1
    if devices > 1:
        trainer["strategy"] = "ddp"
    try:
        val = torch.utils.data.DataLoader(data, batch_size=2) if "val" in sys.argv else None
        fit(
            Recorder(stop),
            trainer,
            out,
            train_dataloaders=loader,
            val_dataloaders=val,
            throughput_name=None,
            resume="resume" in sys.argv,
        )
    except RuntimeError as e:
        if "preempted" not in str(e):
            raise
    # both ranks stop at the same step, so neither is left inside a collective; as the CLI does after
    # a finished command (left to the interpreter's exit, gloo may abort the process)
    end_process_group()
