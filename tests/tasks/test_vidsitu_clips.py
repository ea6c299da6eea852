"""The event clips of ``--videos``: ``data.resize`` reaches the decoder (VidSitu squashes, the cpu preset crops)."""

import cv2
import numpy as np
import pytest

from moviessl.config import load_config
from moviessl.errors import BadInputError
from moviessl.tasks.vidsitu.data import video_source
from moviessl.video import denormalize


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
        x = denormalize(src[0]) * 255  # (5 events, 3, T, 64, 64)
        assert x.shape == (5, 3, 4, 64, 64)
        ends[mode] = (x[..., 1:6].mean().item(), x[..., -6:-1].mean().item())
    assert ends["squash"][0] == pytest.approx(40, abs=6) and ends["squash"][1] == pytest.approx(230, abs=6)
    assert ends["crop"][0] > 100 and ends["crop"][1] < 200  # the centre crop keeps neither end of the frame
    with pytest.raises(BadInputError):
        video_source(tmp_path, meta, resize="stretch")


def test_presets_resize_as_documented():
    assert load_config("vidsitu", "paper").data.resize == "squash"
    assert load_config("vidsitu", "cpu").data.resize == "crop"
