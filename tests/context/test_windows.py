import json

import numpy as np

from moviessl.context.windows import FeatureWindows
from moviessl.features.store import FeatureStore


def test_a_video_with_a_malformed_missing_entry_is_skipped_and_counted(tmp_path):
    """A batch job skips and counts a bad item: a hand-edited ``missing`` entry of one video in the
    feature index ended the whole MaskPred dataset (the index was read outside the skip), though the
    same video's unreadable file was skipped."""
    videos = {}
    for vid in ("m0", "m1", "m2"):
        np.save(tmp_path / f"{vid}_feats.npy", np.ones((9, 8), np.float32))
        videos[vid] = {"status": "ok", "num_events": 9}
    videos["m1"]["missing"] = [[4, 99]]  # past the video's 9 events
    (tmp_path / "index.json").write_text(json.dumps({"videos": videos, "dim": 8, "stride_s": 2.0}))
    w = FeatureWindows([FeatureStore(tmp_path, num_events=None)], window=5)
    assert w.ids() == [(0, "m0"), (0, "m2")] and w.num_bad == 1
