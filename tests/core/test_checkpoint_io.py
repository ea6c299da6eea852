import numpy as np
import pytest
import torch
from torch import nn

from moviessl.checkpoint import arch_spec, build_from_checkpoint, load_checkpoint, save_checkpoint
from moviessl.errors import BadInputError
from moviessl.utils.io import atomic_save_npy, atomic_write


def build_mlp(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU())


def test_roundtrip(tmp_path):
    m = build_mlp(4, 3)
    p = save_checkpoint(
        tmp_path / "m.pt",
        stage="backbone",
        arch=arch_spec(f"{__name__}:build_mlp", d_in=4, d_out=3),
        state_dict=m.state_dict(),
        config={"a": 1},
        meta={"out_dim": 3},
    )
    obj = load_checkpoint(p, stage="backbone")
    assert obj["meta"]["out_dim"] == 3 and obj["config"] == {"a": 1}
    m2 = build_from_checkpoint(p)
    x = torch.randn(2, 4)
    assert torch.equal(m(x), m2(x))
    with pytest.raises(BadInputError, match="expected context"):
        load_checkpoint(p, stage="context")


def test_bad_checkpoints(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(BadInputError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(BadInputError, match="not a moviessl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "x.npy"
    atomic_save_npy(p, np.arange(3))

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert np.load(p).tolist() == [0, 1, 2]
    assert [q.name for q in tmp_path.iterdir()] == ["x.npy"]  # no temp file left behind


def test_atomic_files_get_normal_permissions(tmp_path):
    import os

    p = atomic_save_npy(tmp_path / "f.npy", np.zeros(2))
    mask = os.umask(0)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~mask)
