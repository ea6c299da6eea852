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


def test_format_1_checkpoints_rebuild_the_layers_they_were_trained_with(tmp_path):
    """Checkpoints written before the TxE / TxD / OT layer settings (format 1) name only the preset; the
    paper presets' layers changed (ReLU, no inner dropout), so such a checkpoint gets the settings it
    was built with then: GELU, ``dropout`` on attention and inside the FFN."""
    import torch

    from moviessl.checkpoint import FORMAT_VERSION, build_from_checkpoint, load_checkpoint, save_checkpoint
    from moviessl.models.txe import build_txe

    old_net = build_txe("txe_paper", in_dim=8, dim=32, heads=4, mlp_dim=64, activation="gelu", attn_dropout=0.1)
    arch = {
        "builder": "moviessl.models.txe:build_txe",
        "kwargs": dict(preset="txe_paper", in_dim=8, dim=32, heads=4, mlp_dim=64),
    }
    p = save_checkpoint(tmp_path / "txe.pt", stage="context", arch=arch, state_dict=old_net.state_dict())
    obj = torch.load(p, weights_only=False)
    assert obj["format_version"] == FORMAT_VERSION == 2
    obj["format_version"] = 1  # as written before
    torch.save(obj, p)
    m = build_from_checkpoint(p)
    assert isinstance(m.blocks[0].mlp[1], torch.nn.GELU) and m.blocks[0].attn.dropout == 0.1
    x = torch.randn(2, 5, 8)
    assert torch.allclose(m(x), old_net.eval()(x))
    srl = {"builder": "moviessl.tasks.srl:build_srl_model", "kwargs": {"txd_preset": "txd_paper", "txe_arch": arch}}
    up = load_checkpoint(save_checkpoint(tmp_path / "s.pt", stage="srl", arch=srl, state_dict={}))["arch"]
    assert up == srl  # format 2: as written
    obj = torch.load(tmp_path / "s.pt", weights_only=False)
    obj["format_version"] = 1
    torch.save(obj, tmp_path / "s.pt")
    up = load_checkpoint(tmp_path / "s.pt")["arch"]["kwargs"]
    assert up["txd_overrides"] == {"activation": "gelu", "attn_dropout": None, "ffn_dropout": None}
    assert up["txe_arch"]["kwargs"]["activation"] == "gelu"
