"""The LVU task model: LVU's fine-tuning corrupts tracks in training and scoring (``track_mask``)."""

import numpy as np
import pytest
import torch

from moviessl.context.instance_masking import track_masks
from moviessl.context.ot_spans import SpanVideo, collate_tokens, span_tokens
from moviessl.data.lvu import VideoInstances
from moviessl.models.object_transformer import INSTANCE
from moviessl.tasks.lvu.task import TASKS


def _tokens(n_sec=12, dim=8):
    rng = np.random.default_rng(0)
    sec = np.repeat(np.arange(n_sec), 3)
    videos = [
        SpanVideo(
            f"v{i}",
            inst=VideoInstances(
                sec=sec,
                shot=sec // 5,
                track=np.tile([3, 5, 8], n_sec),
                box=np.tile(np.array([[0.1, 0.1, 0.4, 0.8]], np.float32), (3 * n_sec, 1)),
                feat=rng.normal(size=(3 * n_sec, dim)).astype(np.float32),
            ),
        )
        for i in range(4)
    ]
    return {k: torch.as_tensor(v) for k, v in collate_tokens([span_tokens(v, n_sec - 1) for v in videos]).items()}


def test_track_mask_corrupts_whole_tracks_in_training_and_scoring():
    x = _tokens()
    inst = x["kind"] == INSTANCE
    torch.manual_seed(0)
    plain, _ = TASKS["scene"].build_model(8, preset="ot_cpu")
    torch.manual_seed(0)
    lvu, _ = TASKS["scene"].build_model(8, preset="ot_cpu", track_mask=0.15)
    plain.eval(), lvu.eval()
    assert np.array_equal(plain.span_outputs(x), plain.span_outputs(x))  # off: scoring is deterministic
    torch.manual_seed(1)
    a = lvu.span_outputs(x)
    torch.manual_seed(2)
    assert not np.allclose(a, lvu.span_outputs(x))  # on: the scored inputs are corrupted, as LVU's eval
    for seed in range(5):
        torch.manual_seed(seed)
        selected = track_masks(x["link"], x["kind"], 0.15)  # the draw _inputs makes first
        torch.manual_seed(seed)
        y = lvu._inputs(x)
        changed = y["mask"] | (y["inst"] != x["inst"]).any(-1)
        assert not (y["mask"] & ~inst).any() and not (changed & ~selected).any()  # only selected instances
        assert y["mask"].any()
        for b in range(x["kind"].shape[0]):  # whole tracks, at least one per span
            picked = set(x["link"][b][selected[b]].tolist())
            assert picked and all(bool(selected[b][x["link"][b] == t].all()) for t in picked)
    # training: the same corruption enters the loss (in eval mode only the draw can move it; two seeds
    # may draw the same masks, as seeds 3 and 4 do since the redraw of LVU's get_mask_indices)
    losses = set()
    for seed in range(8):
        torch.manual_seed(seed)
        losses.add(round(float(lvu.loss(x, torch.zeros(4, dtype=torch.long)).detach()), 6))
    torch.manual_seed(0)
    off = {round(float(plain.loss(x, torch.zeros(4, dtype=torch.long)).detach()), 6) for _ in range(2)}
    assert len(losses) > 1 and len(off) == 1


def test_track_mask_leaves_scene_only_spans_alone():
    """OT++'s scene-only row has no instance tokens: nothing to corrupt, and no failure (the paper preset's 0.15)."""
    rng = np.random.default_rng(0)
    v = SpanVideo("s", scene=rng.normal(size=(6, 8)).astype(np.float32), scene_sec=np.arange(6) * 2 + 1)
    x = {k: torch.as_tensor(a) for k, a in collate_tokens([span_tokens(v, 11)]).items()}
    assert "inst" not in x
    torch.manual_seed(0)
    m, _ = TASKS["scene"].build_model(0, scene_dim=8, preset="ot_cpu", track_mask=0.15)
    m.eval()
    assert m._inputs(x) is x and np.isfinite(m.span_outputs(x)).all()


def test_betas_are_checked_before_any_work(tmp_path):
    import pytest

    from moviessl.errors import BadInputError
    from moviessl.tasks.lvu.runner import run_finetune

    with pytest.raises(BadInputError, match="train.betas"):
        run_finetune("scene", tmp_path, preset="cpu", overrides=["train.betas=[0.9]"], out=tmp_path / "o")


def test_a_swapped_track_token_takes_another_instances_feature():
    """LVU's ``perform_masking``: the 10% "random" tokens take the feature of a content token (not
    [start] / [end] / padding) that was not replaced by [MASK], whether the tracks are drawn in the
    forward or on the host (``host_draws``). Drawn from every non-padding token, a swap could paste
    [start]'s or [end]'s zero feature into an instance."""
    x = _tokens()
    x["inst"] = x["inst"] + 5.0 * (x["kind"] == INSTANCE)[..., None]  # every instance feature far from 0
    inst = x["kind"] == INSTANCE
    pool = x["inst"][inst]
    torch.manual_seed(0)
    m, _ = TASKS["scene"].build_model(8, preset="ot_cpu", track_mask=0.5)
    swapped = 0
    for seed in range(60):  # drawn in the forward, or on the host before the transfer (training)
        torch.manual_seed(seed)
        y = m._inputs(x if seed % 2 else m.host_draws(x))
        moved = (y["inst"] != x["inst"]).any(-1) & ~y["mask"]
        for row in y["inst"][moved]:
            assert (row == pool).all(-1).any()  # one of the batch's instance features
        swapped += int(moved.sum())
    assert swapped > 40


def test_the_regression_loss_is_the_mse_of_the_first_output():
    """LVU's regression tasks (``num_long_term_classes == -1``): ``((scores[:, 0] - label) ** 2).mean()``;
    classification: cross-entropy of the logits."""
    x = _tokens()
    y = torch.tensor([0.5, -1.0, 2.0, 0.0])
    torch.manual_seed(0)
    reg, _ = TASKS["like_ratio"].build_model(8, preset="ot_cpu")
    reg.eval()
    out = reg(x).float()
    assert out.shape == (4, 1)
    assert float(reg.loss(x, y).detach()) == pytest.approx(float(((out[:, 0] - y) ** 2).mean().detach()), rel=1e-5)
    np.testing.assert_allclose(reg.span_outputs(x), out[:, 0].detach().numpy(), rtol=1e-5)
    cls, _ = TASKS["scene"].build_model(8, preset="ot_cpu")
    cls.eval()
    logits = cls(x).float()
    labels = torch.tensor([0, 1, 2, 3])
    want = -torch.log_softmax(logits, -1)[torch.arange(4), labels].mean()
    assert float(cls.loss(x, labels).detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    np.testing.assert_allclose(cls.span_outputs(x).sum(-1), 1.0, rtol=1e-5)
