import numpy as np
import pytest
import torch

from moviessl.data.cliplist import read_clip_list
from moviessl.errors import BadInputError
from moviessl.ssl import clipcache
from moviessl.ssl.clipcache import FrameCache
from moviessl.ssl.data import MAX_SKIPS, ClipDataset


def test_frame_cache_decodes_once_and_memory_maps(clip_list, tmp_path, monkeypatch):
    items = read_clip_list(clip_list)
    cache = FrameCache(tmp_path / "cache", 32)
    src = cache.source(items[0][0])
    assert src.num_frames == 40 and src.fps == pytest.approx(30.0)
    frames = src.get([0, 1, 39])
    assert frames.shape == (3, 32, 42, 3) and frames.dtype == np.uint8  # 48x64 -> short side 32
    assert isinstance(src.frames, np.memmap)

    def boom(*a, **k):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(clipcache, "LiveSource", boom)
    again = FrameCache(tmp_path / "cache", 32).source(items[0][0])
    np.testing.assert_array_equal(again.get([0, 1, 39]), frames)
    monkeypatch.undo()
    bad = next(p for p, _ in items if "bad" in p.name)
    with pytest.raises(BadInputError, match="bad0.mp4"):
        cache.source(bad)
    assert cache.paths(bad)[2].is_file()
    monkeypatch.setattr(clipcache, "LiveSource", boom)
    with pytest.raises(BadInputError):  # remembered as bad: not decoded again by later runs
        FrameCache(tmp_path / "cache", 32).source(bad)


def test_bad_videos_skipped_and_counted_with_cache(clip_list, tmp_path):
    items = read_clip_list(clip_list)
    assert len(items) == 13
    ds = ClipDataset(
        items, "pair", num_frames=8, stride=2, short_side=32, frame_cache=FrameCache(tmp_path, 32)
    ).prepare(progress=False)
    assert len(ds) == 12 and len(ds.bad) == 1 and "bad0" in next(iter(ds.bad))
    item = ds[0]
    assert item["video"].shape == (2, 3, 8, 32, 32) and item["video"].dtype == torch.uint8
    assert item["label"].item() == 0 and (item["skipped"] == -1).all()


def test_bad_videos_skipped_at_runtime_without_cache(clip_list):
    items = read_clip_list(clip_list)
    bad_i = next(i for i, (p, _) in enumerate(items) if "bad" in p.name)
    ds = ClipDataset(items, "single", num_frames=4, stride=2, short_side=32)
    item = ds[bad_i]  # the slot is filled with the next good video
    assert int(item["index"]) == bad_i + 1
    assert item["skipped"].tolist()[0] == bad_i and len(ds.bad) == 1
    assert item["video"].shape == (1, 3, 4, 32, 32)
    # a list of only bad videos gives up with a clear error instead of looping
    only_bad = ClipDataset([items[bad_i]] * (MAX_SKIPS + 2), "single", num_frames=4, stride=2, short_side=32)
    with pytest.raises(BadInputError, match="consecutive bad videos"):
        only_bad[0]


def test_eval_clips_are_deterministic_centre_crops(clip_list, tmp_path):
    items = [it for it in read_clip_list(clip_list) if "bad" not in it[0].name][:2]
    ds = ClipDataset(
        items, "eval", num_frames=4, stride=2, short_side=32, frame_cache=FrameCache(tmp_path, 32), eval_clips=3
    )
    a, b = ds[1], ds[1]
    assert a["video"].shape == (3, 3, 4, 32, 32)
    assert torch.equal(a["video"], b["video"])
    src = ds._source(1)
    full = src.get(range(src.num_frames))  # (40, 32, 42, 3): centre square is columns 5..37
    np.testing.assert_array_equal(
        a["video"][0, :, 0].permute(1, 2, 0).numpy(), full[int(round(33 * 0.5 / 3)), :, 5:37]
    )  # first of 3 starts in [0, 39 - 6]
