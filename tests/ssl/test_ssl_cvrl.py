import pytest
import torch

from moviessl.ssl.methods.cvrl import break_time


def _clips(b=6, t=8):
    # frame k of clip i is filled with 100 i + k, so the time order can be read back from pixels
    v = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1) + 100 * torch.arange(b).view(b, 1, 1, 1, 1)
    return v.expand(b, 3, t, 4, 4).contiguous()


def _order(x):
    return x[:, 0, :, 0, 0] % 100  # (B, T) source frame index of every output frame


def test_break_time_kinds():
    x = _clips()
    g = torch.Generator().manual_seed(0)
    rep = _order(break_time(x, ["repeat"], g))
    assert all(len(set(r.tolist())) == 1 for r in rep)  # one frame, no motion
    assert torch.equal(_order(break_time(x, ["reverse"], g)), torch.arange(7, -1, -1).expand(6, 8).float())
    sh = _order(break_time(x, ["shuffle"], g))
    for r in sh:
        assert sorted(r.tolist()) == list(range(8)) and r.tolist() != list(range(8))  # a true permutation
    # pixels only move along time: each clip keeps its own frames and every channel/position
    y = break_time(x, ["repeat", "shuffle", "reverse"], g)
    assert torch.equal(y[:, :, :, 0, 0] // 100, x[:, :, :, 0, 0] // 100)
    assert torch.equal(y, y[:, :1, :, :1, :1].expand_as(y))


def test_break_time_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="intra_neg"):
        break_time(_clips(), ["freeze"])
    with pytest.raises(ValueError, match="intra_neg"):
        break_time(_clips(), [])
