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


def test_break_time_draws_on_the_cpu_whatever_the_default_device():
    """Under a user's ``torch.set_default_device("cuda")`` the indices were drawn on the GPU: a CPU
    generator was refused, and without one (training's call) they came from the GPU's stream. They
    are drawn on the CPU and moved, the results those drawn before."""
    from default_device import gpu_like_default_device

    x = _clips(4, 4)
    expected = [[1, 3, 0, 2], [0, 0, 0, 0], [2, 1, 0, 3], [3, 2, 1, 0]]  # seed 4: every kind

    def draw(g):
        return _order(break_time(x, ["repeat", "shuffle", "reverse"], g)).int().tolist()

    assert draw(torch.Generator().manual_seed(4)) == expected
    with gpu_like_default_device():
        assert draw(torch.Generator().manual_seed(4)) == expected
        torch.manual_seed(4)  # no generator: the CPU's default one, as on a CPU default device
        assert draw(None) == expected


def test_break_time_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="intra_neg"):
        break_time(_clips(), ["freeze"])
    with pytest.raises(ValueError, match="intra_neg"):
        break_time(_clips(), [])


def test_cvrl_tells_the_loss_which_video_each_pair_is(monkeypatch):
    """A video twice in a batch (a distributed sampler's padding, a bad video's stand-in) must not be
    its own negative: the step hands the loss the dataset index of every pair."""
    from types import SimpleNamespace

    from ssl_testutil import tiny_overrides

    import moviessl.ssl.methods.cvrl as cvrl
    from moviessl.config import load_config

    cfg = load_config("backbone", "cpu", tiny_overrides(), variant="cvrl")
    m = cvrl.CVRL(cfg)
    m._trainer = SimpleNamespace(training=True)
    g = torch.Generator().manual_seed(0)
    index = torch.tensor([5, 2, 5, 9])
    batch = {"video": torch.randint(0, 256, (4, 2, 3, 8, 32, 32), dtype=torch.uint8, generator=g), "index": index}
    batch = m.on_after_batch_transfer(batch)
    seen, real = {}, cvrl.info_nce_pairs

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(cvrl, "info_nce_pairs", spy)
    monkeypatch.setattr(m, "log_step", lambda *a, **k: None)
    loss = m.training_step(batch, 0)
    assert torch.equal(seen.get("ids"), index) and torch.isfinite(loss)


def test_cvrl_scores_each_time_broken_copy_by_the_other_view_only(monkeypatch):
    """cvrl.intra_neg's training test checked only that train/intra_sim was logged: a step that left
    the broken copies out of the loss, or let their own source view score them (where the gradient
    vanishes, design.md), passed. Each copy is its source view reversed in time, scored by the other
    view's row of [z1; z2], and all of them reach the loss."""
    from types import SimpleNamespace

    from ssl_testutil import tiny_overrides

    import moviessl.ssl.methods.cvrl as cvrl
    from moviessl.config import load_config

    cfg = load_config("backbone", "cpu", tiny_overrides(["cvrl.intra_neg=[reverse]"]), variant="cvrl")
    m = cvrl.CVRL(cfg)
    m._trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    b = 6
    video = torch.randint(0, 256, (b, 2, 3, 8, 32, 32), dtype=torch.uint8)
    batch = m.on_after_batch_transfer({"video": video, "index": torch.arange(b)})
    v1, v2, broken = batch["views"]
    src = []
    for i in range(b):
        mine = [k for k, v in enumerate((v1, v2)) if torch.equal(broken[i], v[i].flip(1))]
        assert len(mine) == 1, i  # one view's clip, reversed in time
        src.append(mine[0])
    assert set(src) == {0, 1}  # either view, at random
    assert batch["intra_scorer"].tolist() == [(1 - s) * b + i for i, s in enumerate(src)]
    seen, real = {}, cvrl.info_nce_pairs

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(cvrl, "info_nce_pairs", spy)
    monkeypatch.setattr(m, "log_step", lambda *a, **k: None)
    m.training_step(batch, 0)
    assert seen["hard_neg"].shape[0] == b and seen["hard_for"] is batch["intra_scorer"]
