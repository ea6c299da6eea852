"""Where a rank's work outside Lightning runs (``moviessl.dist``)."""

import pytest
import torch

from moviessl.dist import gpu_ids, local_device
from moviessl.errors import BadInputError


@pytest.mark.parametrize(
    "devices, ids",
    [([2, 3], [2, 3]), ("2,3", [2, 3]), ("3,", [3]), (2, None), ("2", None), (-1, None), ("auto", None), (None, None)],
)
def test_gpu_ids_read_devices_as_lightning_does(devices, ids):
    assert gpu_ids(devices) == ids


@pytest.mark.parametrize("devices", ["[2,3]", ["a"], "2,x"])
def test_unreadable_gpu_ids_are_one_line(devices):
    with pytest.raises(BadInputError, match=r"^trainer.devices: .*give a count or a list of GPU ids"):
        gpu_ids(devices)


def test_local_device_is_the_gpu_lightning_gives_this_local_rank(monkeypatch):
    """``trainer.devices=[2,3]``: local rank 1 trains on GPU 3, so its frozen-feature cache, probe
    and scene TxE run there too (they ran on GPU 1, which the job was not given)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    for k in ("LOCAL_RANK", "SLURM_LOCALID", "JSM_NAMESPACE_LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_device("gpu", [2, 3]) == "cuda:3" and local_device("auto", "2,3") == "cuda:3"
    assert local_device("cuda", 2) == "cuda:1" and local_device() == "cuda:1"
    assert local_device("cpu", [2, 3]) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local_device("auto", [2, 3]) == "cpu"


def test_a_gpu_asked_for_where_torch_sees_none_is_one_line(monkeypatch):
    from moviessl.dist import check_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for acc in ("gpu", "cuda"):
        with pytest.raises(BadInputError, match=rf"^trainer.accelerator: {acc}: torch sees no GPU"):
            check_gpu("trainer.accelerator", acc)
    check_gpu("trainer.accelerator", "auto")
    check_gpu("trainer.accelerator", "cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # Lightning's gpu is MPS on a Mac
    check_gpu("trainer.accelerator", "gpu")
    with pytest.raises(BadInputError):
        check_gpu("trainer.accelerator", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_gpu("trainer.accelerator", "cuda")
