import pytest
import pytorch_lightning as pl
import torch

from moviessl.errors import BadInputError
from moviessl.training import fit


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        (x,) = batch
        return self.lin(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=4)


def test_simple_profiler_writes_seconds_per_hook(tmp_path):
    cfg = {"accelerator": "cpu", "max_steps": 3, "progress_bar": False, "profiler": "simple"}
    fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    report = (tmp_path / "fit-profile.txt").read_text()
    assert "training_step" in report and "backward" in report and "train_dataloader_next" in report


def test_unknown_profiler_is_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="trainer.profiler"):
        fit(
            _Tiny(),
            {"accelerator": "cpu", "max_steps": 1, "profiler": "pytorch2"},
            tmp_path,
            train_dataloaders=_loader(),
        )


@pytest.mark.parametrize("every", [0, 2])
def test_each_checkpoint_is_written_once(tmp_path, every):
    """Only ``checkpoints/`` holds checkpoints; Lightning's own per-epoch copy under logs/ is not written."""
    cfg = {"accelerator": "cpu", "max_steps": 4, "progress_bar": False, "ckpt_every_n_steps": every}
    fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.ckpt"))
    want = ["checkpoints/last.ckpt"] + (["checkpoints/step0000004.ckpt"] if every else [])
    assert written == want
