"""The LVU task model: LVU's fine-tuning corrupts tracks in training and scoring (``track_mask``)."""

import numpy as np
import torch

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
        y = lvu._inputs(x)
        assert not (y["mask"] & ~inst).any()  # only instance tokens
        changed = y["mask"] | (y["inst"] != x["inst"]).any(-1)
        for b in range(x["kind"].shape[0]):  # >= 1 track per span; a corrupted token's track is selected
            tracks = set(x["link"][b][changed[b]].tolist())
            assert tracks and len(tracks) <= 3
    # training: the same corruption enters the loss
    torch.manual_seed(3)
    la = lvu.loss(x, torch.zeros(4, dtype=torch.long))
    torch.manual_seed(4)
    assert not torch.isclose(la, lvu.loss(x, torch.zeros(4, dtype=torch.long)))
