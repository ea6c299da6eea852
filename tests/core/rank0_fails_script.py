"""Run by test_cli.py as ``python rank0_fails_script.py OUT``: the command ``moviessl.cli.main`` runs
trains a tiny module for one step on 2 CPU processes of Lightning's own launcher (which re-executes
this file for rank 1), then rank 0 fails with bad input (as at an export) while rank 1 goes on with
work of its own (as a rank waiting in an NCCL collective does until the process group's timeout), and
writes ``OUT/rank1_went_on`` when it is done."""

import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from moviessl import cli
from moviessl.errors import BadInputError
from moviessl.training import fit


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)

    def training_step(self, batch, i):
        return self.lin(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def command(args):
    out = Path(sys.argv[1])
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)
    t = dict(accelerator="cpu", devices=2, strategy="ddp", max_steps=1, progress_bar=False, ckpt_every_n_steps=0)
    trainer = fit(Tiny(), t, out / "run", train_dataloaders=data)
    if trainer.is_global_zero:
        raise BadInputError(out / "run" / "model.pt", "cannot write (No space left on device)")
    time.sleep(60)
    (out / "rank1_went_on").write_text("")


if __name__ == "__main__":
    build = cli.build_parser

    def parser():
        p = build()
        p.set_defaults(func=command)
        return p

    cli.build_parser = parser
    sys.exit(cli.main([]))
