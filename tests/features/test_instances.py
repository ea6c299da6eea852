"""``moviessl extract-instances`` with LVU's released boxes (instance_meta pkls) as well as tracks
JSON files, and the LVU release's instance store."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from test_extract import save_backbone, write_video

from moviessl.cli import main
from moviessl.errors import BadInputError
from moviessl.features.instances import InstanceStore, LVUReleaseInstances, extract_instances

# one video's boxes, as (second, shot, track, "x1,y1,x2,y2") -- LVU's box keys are such strings
BOXES = {
    "vidA": [
        (0, 0, 4, "0.100,0.200,0.500,0.900"),
        (0, 0, 5, "0.550,0.100,0.950,0.800"),
        (2, 1, 4, "0.200,0.200,0.600,0.900"),
    ],
    "vidB": [(1, 3, 0, "0.000,0.000,1.000,1.000")],
}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return save_backbone(tmp_path_factory.mktemp("bb") / "backbone.pt")


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    """The same boxes as a tracks-JSON folder and as LVU's instance_meta/instance_meta_{task}.pkl
    ({youtube_id: {sec: {box_key: [scene_id, link_id]}}}, one file per task)."""
    root = tmp_path_factory.mktemp("lvu")
    (root / "videos").mkdir()
    write_video(root / "videos" / "vidA.mp4", 3.0, seed=1)
    write_video(root / "videos" / "vidB.mp4", 2.0, seed=2)
    (root / "tracks").mkdir()
    meta = {}
    for vid, rows in BOXES.items():
        secs: dict = {}
        for t, shot, track, key in rows:
            s = secs.setdefault(t, {"t": t, "shot": shot, "track_ids": [], "boxes": []})
            s["track_ids"].append(track)
            s["boxes"].append([float(x) for x in key.split(",")])
            meta.setdefault(vid, {}).setdefault(t, {})[key] = [shot, track]
        (root / "tracks" / f"{vid}.json").write_text(json.dumps({"seconds": list(secs.values())}))
    (root / "instance_meta").mkdir()
    for task, vids in (("scene", ["vidA"]), ("genre", ["vidA", "vidB"])):
        with open(root / "instance_meta" / f"instance_meta_{task}.pkl", "wb") as f:
            pickle.dump({v: meta[v] for v in vids}, f)
    return root


def _extract(backbone, root, tracks, out) -> int:
    argv = ["extract-instances", "--backbone", backbone, "--videos", root, "--tracks", tracks, "--out", out]
    return main([str(a) for a in argv])


def test_lvu_instance_meta_gives_the_same_store_as_tracks_json(backbone, boxes, tmp_path):
    assert _extract(backbone, boxes, boxes / "tracks", tmp_path / "json") == 0
    ref = InstanceStore(tmp_path / "json")
    assert ref.ids == ["vidA", "vidB"] and ref.dim == 16
    # one task's pkl (vidB is not in it: counted as a video without boxes), and the whole folder
    for tracks, ids in (
        (boxes / "instance_meta" / "instance_meta_scene.pkl", ["vidA"]),
        (boxes / "instance_meta", ["vidA", "vidB"]),
    ):
        out = tmp_path / tracks.name
        assert _extract(backbone, boxes, tracks, out) == 0
        store = InstanceStore(out)
        assert store.ids == ids and store.dim == ref.dim
        for vid in ids:
            a, b = ref.load(vid), store.load(vid)
            for k in ("sec", "shot", "track", "box", "feat"):
                np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=f"{vid} {k}")


def test_tracks_without_a_video_are_named(backbone, boxes, tmp_path, caplog):
    """A tracks file whose id matches no video (most often a naming mismatch) is said, not ignored."""
    tracks = tmp_path / "tracks"
    tracks.mkdir()
    for p in (boxes / "tracks").glob("*.json"):
        (tracks / p.name).write_text(p.read_text())
    (tracks / "vidA_720p.json").write_text((boxes / "tracks" / "vidA.json").read_text())
    with caplog.at_level("WARNING"):
        extract_instances(backbone, boxes / "videos", tracks, tmp_path / "out")
    assert "1 videos with boxes have no video file" in caplog.text and "(first: vidA_720p)" in caplog.text
    assert InstanceStore(tmp_path / "out").ids == ["vidA", "vidB"]


def test_index_written_on_a_clock_not_after_every_video(backbone, boxes, tmp_path, monkeypatch):
    """Rewriting index.json after each video is O(videos^2) bytes over LVU; it is written every
    INDEX_EVERY_S and at the end (a killed job redoes at most that much)."""
    import moviessl.features.instances as ins

    writes = []
    real = ins.atomic_write_json
    monkeypatch.setattr(ins, "atomic_write_json", lambda p, obj: writes.append(p.name) or real(p, obj))
    monkeypatch.setattr(ins, "INDEX_EVERY_S", 1e9)
    extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "slow")
    assert writes == ["index.json"] and InstanceStore(tmp_path / "slow").ids == ["vidA", "vidB"]
    writes.clear()
    monkeypatch.setattr(ins, "INDEX_EVERY_S", 0.0)  # every video, then the end
    extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "each")
    assert writes == ["index.json"] * 3


def test_tracks_that_are_neither_json_nor_instance_meta(backbone, boxes, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no <id>.json tracks files or instance_meta"):
        extract_instances(backbone, boxes, tmp_path / "empty", tmp_path / "out")


def test_release_dim_from_the_first_video_with_boxes(tmp_path):
    """The LVU store's feature width comes from the first video that has boxes: an empty or
    broken first video neither makes it 0 nor fails the whole run (load_inputs skips it)."""
    feats, key = tmp_path / "features", "0.100,0.200,0.400,0.900"
    feats.mkdir()
    meta = {"a_broken": {1: {key: [0, 1]}}, "b_empty": {}, "c": {1: {key: [0, 1]}}}
    (feats / "a_broken.npz").write_bytes(b"garbage")
    np.savez(feats / "b_empty.npz", a={})
    np.savez(feats / "c.npz", a={1: {key: np.ones(6, np.float32)}})
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps(meta))
    store = LVUReleaseInstances(feats, tmp_path / "meta.pkl")
    assert store.ids == ["a_broken", "b_empty", "c"] and store.dim == 6
    assert store.load("b_empty").feat.shape == (0, 6)  # same width as the others (batched together)
    with pytest.raises(BadInputError, match="a_broken.npz"):
        store.load("a_broken")
    # no video with boxes at all: one line naming the folder
    (tmp_path / "m2.pkl").write_bytes(pickle.dumps({"b_empty": {}}))
    with pytest.raises(BadInputError, match="no video with a readable box feature"):
        LVUReleaseInstances(feats, tmp_path / "m2.pkl")
