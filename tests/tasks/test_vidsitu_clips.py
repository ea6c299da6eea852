"""The event clips of ``--videos``: ``data.resize`` reaches the decoder (VidSitu squashes, the cpu preset crops)."""

import cv2
import numpy as np
import pytest
import torch

from moviessl.config import load_config
from moviessl.errors import BadInputError
from moviessl.tasks.vidsitu.data import video_source
from moviessl.video import VideoReader, event_centers, preprocess, read_clip, to_model_input


def _frames(root, vseg, n=300):
    """VidSitu's frame-folder layout: ``{vseg}/{vseg}_{000001..}.jpg``, 16:9, dark left / bright right eighth."""
    d = root / vseg
    d.mkdir(parents=True)
    img = np.full((90, 160, 3), 128, np.uint8)
    img[:, :20], img[:, 140:] = 40, 230
    for i in range(n):
        cv2.imwrite(str(d / f"{vseg}_{i + 1:06d}.jpg"), img)


def test_resize_modes_of_the_event_clips(tmp_path):
    _frames(tmp_path, "v_a")
    meta = {"num_frames": 4, "stride": 4, "short_side": 64, "crop": 64}
    ends = {}
    for mode in ("squash", "crop"):
        src, kept, bad = video_source(tmp_path, meta, resize=mode)(["v_a"])
        assert kept == ["v_a"] and not bad and src.crop_mode == ("center" if mode == "crop" else mode)
        x = src[0].float()  # (5 events, 3, T, 64, 64), uint8 through the loader
        assert x.shape == (5, 3, 4, 64, 64) and src[0].dtype == torch.uint8
        ends[mode] = (x[..., 1:6].mean().item(), x[..., -6:-1].mean().item())
    assert ends["squash"][0] == pytest.approx(40, abs=6) and ends["squash"][1] == pytest.approx(230, abs=6)
    assert ends["crop"][0] > 100 and ends["crop"][1] < 200  # the centre crop keeps neither end of the frame
    with pytest.raises(BadInputError):
        video_source(tmp_path, meta, resize="stretch")


def test_presets_resize_as_documented():
    assert load_config("vidsitu", "paper").data.resize == "squash"
    assert load_config("vidsitu", "cpu").data.resize == "crop"


def test_clips_ship_as_uint8_and_normalise_as_before(tmp_path):
    """The loader's uint8 clips, normalised on the device, are bit for bit the normalised float clips
    the backbone read before (a quarter of the bytes through shared memory); a video that fails
    mid-run gives the mean grey, ~0 once normalised."""
    _frames(tmp_path, "v_a")
    meta = {"num_frames": 4, "stride": 4, "short_side": 64, "crop": 48}
    src, _, _ = video_source(tmp_path, meta)(["v_a"])
    with VideoReader(tmp_path / "v_a") as r:
        want = torch.stack([preprocess(read_clip(r, c, 4, 4), 64, 48) for c in event_centers(10.0)])
    got = to_model_input(src[0])
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert to_model_input(got) is got  # float input passes through
    blank = to_model_input(src.blank())
    assert blank.shape == want.shape and blank.abs().max() < 0.01


def test_event_clips_over_a_damaged_stretch_are_a_bad_input_not_frozen_stand_in_frames(tmp_path):
    """The reader stands in the previous frame for one that does not decode; `moviessl extract`
    marks such an event missing. The event clips served to a task were those stand-ins, unsaid: a
    verb learnt from (or predicted on) a frozen picture. Now the segment is bad input, as a video
    that does not decode (training ignores its targets, evaluation gives it the fallback entry)."""
    from moviessl.video.filmgen import corrupt_stretch, make_film

    for d in ("good", "bad"):
        (tmp_path / d).mkdir()
    good = make_film(tmp_path / "good" / "v_a.mp4", 10.0, width=160, height=96, audio=False, gop=30)
    corrupt_stretch(good, tmp_path / "bad" / "v_a.mp4", 0.45, 0.55)
    meta = {"num_frames": 4, "stride": 4, "short_side": 64, "crop": 64}
    src, kept, _ = video_source(tmp_path / "good", meta)(["v_a"])
    assert src[0].shape == (5, 3, 4, 64, 64)
    src, kept, _ = video_source(tmp_path / "bad", meta)(["v_a"])
    assert kept == ["v_a"]  # found; it fails when decoded
    with pytest.raises(BadInputError, match="did not decode"):
        src[0]


def test_event_clips_past_a_short_segments_end_are_a_bad_input_not_copies_of_its_last_frames(tmp_path):
    """VidSitu's 5 events are centred at 1..9 s; a segment that lasts less (a truncated download)
    gave its last events clips clamped to its final frames, unsaid. `moviessl extract` marks such
    events missing; the clips served to an end-to-end task now make the segment bad input."""
    _frames(tmp_path, "v_a", n=150)  # 5 s at 30 fps: Ev4 (7 s) and Ev5 (9 s) have no frames
    _frames(tmp_path, "v_b", n=285)  # 9.5 s: every centre inside
    meta = {"num_frames": 4, "stride": 4, "short_side": 64, "crop": 64}
    src, kept, _ = video_source(tmp_path, meta)(["v_a", "v_b"])
    with pytest.raises(BadInputError, match=r"lasts 5.00 s: Ev4, Ev5 centred past its end"):
        src[0]
    assert src[1].shape == (5, 3, 4, 64, 64)


def test_each_event_clip_holds_the_frames_of_its_own_window(tmp_path):
    """Every frame above is the same picture, so clips taken a second early, or the events in
    reverse order, passed. Here frame i is the flat grey 3i mod 256: event k (centred at
    2k + 1 s) must hold VidSitu's window, frames 30 (2k + 1) - 8 + 4t for t < 4."""
    d = tmp_path / "v_a"
    d.mkdir()
    for i in range(300):
        cv2.imwrite(str(d / f"v_a_{i + 1:06d}.jpg"), np.full((90, 160, 3), 3 * i % 256, np.uint8))
    meta = {"num_frames": 4, "stride": 4, "short_side": 64, "crop": 64}
    src, _, _ = video_source(tmp_path, meta)(["v_a"])
    got = src[0].float().mean(dim=(1, 3, 4))  # (5 events, 4 frames)
    want = torch.tensor([[3 * (30 * (2 * k + 1) - 8 + 4 * t) % 256 for t in range(4)] for k in range(5)])
    assert torch.allclose(got, want.float(), atol=1.5)
