"""``moviessl extract-instances`` with LVU's released boxes (instance_meta pkls) as well as tracks
JSON files, and the LVU release's instance store."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess

import numpy as np
import pytest
from test_extract import save_backbone, write_video

from moviessl.cli import main
from moviessl.errors import BadInputError
from moviessl.features.instances import InstanceStore, LVUReleaseInstances, extract_instances, open_instances

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


def test_each_box_is_pooled_from_the_clip_of_its_own_second(backbone, boxes, tmp_path):
    """Extractions were only compared with each other, so pooling every box of a batch from its
    first second's clip passed. Here each box's feature is PySlowFast's RoI head on the backbone's
    map of the clip centred in its second (vidA's boxes lie at 0 and 2 s: its frames brighten)."""
    import torch

    from moviessl.checkpoint import build_from_checkpoint
    from moviessl.models.roi import roi_features
    from moviessl.video import VideoReader, read_clip, resize_short_side, to_model_input

    assert _extract(backbone, boxes, boxes / "tracks", tmp_path / "out") == 0
    got = InstanceStore(tmp_path / "out").load("vidA")
    model = build_from_checkpoint(backbone).eval()
    want = []
    with VideoReader(boxes / "videos" / "vidA.mp4") as r, torch.no_grad():
        for t, box in zip(got.sec.tolist(), got.box):
            clip = resize_short_side(read_clip(r, t + 0.5, 4, 8), 32).transpose(3, 0, 1, 2)
            fmap = model.forward_features(to_model_input(torch.from_numpy(np.ascontiguousarray(clip))[None]))
            want.append(roi_features(fmap.float(), torch.from_numpy(box)[None], torch.zeros(1, dtype=torch.long))[0])
    assert got.sec.tolist() == [0, 0, 2]
    np.testing.assert_allclose(np.asarray(got.feat), torch.stack(want).numpy(), rtol=1e-4, atol=1e-5)


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


def test_videos_are_journalled_and_a_killed_run_resumes(backbone, boxes, tmp_path, monkeypatch):
    """Each finished video is one journal line (rewriting index.json after each would be O(videos^2)
    bytes over LVU); the folder is claimed at the start (backbone and RoI, no videos) and index.json
    written at the end only, so a killed run's folder is refused as unfinished, not read as empty. A
    run that dies after its first video leaves that video journalled; a rerun with another RoI
    setting is refused, and the same setting extracts only the other video, to the same store."""
    import moviessl.features.instances as ins

    ref = tmp_path / "ref"
    extract_instances(backbone, boxes / "videos", boxes / "tracks", ref)
    out = tmp_path / "out"
    real = ins.InstanceExtractor._save

    class Killed(BaseException):  # as a kill: nothing of the job's own handling runs
        pass

    def dies_on_the_second(self, vid, *args):
        if self.counts["ok"]:
            raise Killed
        real(self, vid, *args)

    monkeypatch.setattr(ins.InstanceExtractor, "_save", dies_on_the_second)
    with pytest.raises(Killed):
        extract_instances(backbone, boxes / "videos", boxes / "tracks", out, progress=False)
    assert json.loads((out / ".index.claim.json").read_text())["videos"] == {} and not (out / "index.json").exists()
    with pytest.raises(BadInputError, match="did not finish"):
        open_instances(out)
    journal = [json.loads(ln) for ln in (out / ".index.rank0.jsonl").read_text().splitlines() if ln.strip()]
    assert [j["status"] for j in journal] == ["ok"] and len(list(out.glob("*.npz"))) == 1
    monkeypatch.setattr(ins.InstanceExtractor, "_save", real)
    with pytest.raises(BadInputError, match="another backbone or RoI setting"):  # the folder was claimed at start
        extract_instances(backbone, boxes / "videos", boxes / "tracks", out, resolution=3, progress=False)
    seen = []
    monkeypatch.setattr(
        ins.InstanceClipStream,
        "_video",
        lambda self, v, p, f=ins.InstanceClipStream._video: seen.append(v) or f(self, v, p),
    )
    s = extract_instances(backbone, boxes / "videos", boxes / "tracks", out, progress=False)
    assert seen == [v for v in ("vidA", "vidB") if v != journal[0]["id"]]
    assert s["counts"] == {"ok": 2, "bad": 0} and not list(out.glob(".index.rank*"))
    a, b = InstanceStore(ref), InstanceStore(out)
    assert a.ids == b.ids == ["vidA", "vidB"]
    for vid in a.ids:
        np.testing.assert_array_equal(a.load(vid).feat, b.load(vid).feat)


def test_a_killed_runs_temporary_file_is_removed_at_the_end_of_the_rerun(backbone, boxes, tmp_path):
    """A kill -9 while a video's .npz was being written leaves utils.io.atomic_write's temporary
    file; the end of a job removes every one it finds, as extract does (one job per folder)."""
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".vidB.npz.k1ll3d.tmp"
    stale.write_bytes(b"half an npz")
    assert extract_instances(backbone, boxes / "videos", boxes / "tracks", out, progress=False)["counts"]["ok"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "vidA.npz", "vidB.npz"]


def test_decoding_workers_and_two_processes_give_the_same_store(backbone, boxes, tmp_path):
    """``--num-workers 2`` decodes in DataLoader workers; ``--devices 2`` (DDP, gloo on CPU, a real
    subprocess: Lightning re-executes the command per device) splits the videos over two ranks,
    whose journals rank 0 merges into one index. The features are those of one process."""
    from test_extract_ddp import moviessl_cmd

    from moviessl.dist import fresh_launch_env

    extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "one", progress=False)
    extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "w2", num_workers=2, progress=False)
    argv = ["extract-instances", "--backbone", backbone, "--videos", boxes, "--tracks", boxes / "tracks"]
    argv += ["--out", tmp_path / "ddp", "--accelerator", "cpu", "--devices", "2", "--num-workers", "0"]
    p = subprocess.run(
        [*moviessl_cmd(), *map(str, argv)], env=fresh_launch_env(), capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("videos ok") == 1 and "2 videos ok, 0 bad" in p.stdout  # rank 0 reports the merge
    # each rank pooled one video (split by size), not both
    assert sorted(re.findall(r"rank (\d)/2: (\d+) ok, 0 bad of its (\d+) videos", p.stderr)) == [
        ("0", "1", "1"),
        ("1", "1", "1"),
    ]
    index = json.loads((tmp_path / "ddp" / "index.json").read_text())
    assert index["counts"] == {"ok": 2, "bad": 0} and not list((tmp_path / "ddp").glob(".index.rank*"))
    ref = InstanceStore(tmp_path / "one")
    for name in ("w2", "ddp"):
        store = InstanceStore(tmp_path / name)
        assert store.ids == ref.ids and store.dim == ref.dim
        for vid in ref.ids:
            np.testing.assert_allclose(store.load(vid).feat, ref.load(vid).feat, rtol=1e-5, atol=1e-6)


def test_one_extraction_refuses_the_other_ones_folder(backbone, boxes, tmp_path, capsys):
    """extract into an extract-instances folder compared only the keys both indexes have (the same
    backbone) and went on: it took the instance entries for its own and rewrote index.json as an
    event-feature index, so the instance features could no longer be read; extract-instances into
    an extract folder was refused for 'another backbone or RoI setting'."""
    from moviessl.checkpoint import file_hash
    from moviessl.features import FeatureStore

    inst = tmp_path / "inst"
    inst.mkdir()
    index = {
        "format": "moviessl-instances",
        "dim": 16,
        "backbone": file_hash(backbone),
        "videos": {"vidA": {"status": "ok", "num_boxes": 3}},
    }
    (inst / "index.json").write_text(json.dumps(index))
    argv = ["extract", "--num-workers", "0", "--accelerator", "cpu", "--backbone", backbone, "--videos", boxes]
    assert main([*map(str, argv), "--out", str(inst)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"moviessl: error: {inst}: folder holds instance features (moviessl extract-instances), "
        "not event features (moviessl extract); use another --out"
    ]
    assert json.loads((inst / "index.json").read_text()) == index and not list(inst.glob("*_feats.npy"))
    with pytest.raises(BadInputError, match=r"folder holds instance features \(.*\), not event features"):
        FeatureStore(inst)
    feats = tmp_path / "feats"
    feats.mkdir()
    index = {"format": "moviessl-features", "stride_s": 2.0, "dim": 16, "videos": {"vidA": {"status": "ok"}}}
    (feats / "index.json").write_text(json.dumps(index))
    assert _extract(backbone, boxes, boxes / "tracks", feats) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"moviessl: error: {feats}: folder holds event features (moviessl extract), "
        "not instance features (moviessl extract-instances); use another --out"
    ]
    assert json.loads((feats / "index.json").read_text()) == index


def test_a_second_job_on_one_folder_is_refused(backbone, boxes, tmp_path, capsys):
    """extract-instances takes extract's folder lock: its end removes every journal, its own and a
    second job's alike (that job's finished videos then had no entry and were made again)."""
    import fcntl
    import os

    out = tmp_path / "inst"
    out.mkdir()
    lock = out / ".extract.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a running extract or extract-instances job's
        assert _extract(backbone, boxes, boxes / "tracks", out) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{out}: another extraction job is writing to this folder" in err[0]
        assert [p.name for p in out.iterdir()] == [lock.name]
    finally:
        os.close(fd)
    assert _extract(backbone, boxes, boxes / "tracks", out) == 0
    assert not lock.exists()


def _launch(command, backbone, boxes, out) -> list[str]:
    argv = [command, "--num-workers", "0", "--accelerator", "cpu", "--backbone", backbone, "--videos", boxes]
    if command == "extract-instances":
        argv += ["--tracks", boxes / "tracks"]
    return [*map(str, argv), "--out", str(out)]


@pytest.mark.parametrize(
    "flag, value", [("--batch-seconds", "0"), ("--resolution", "0"), ("--short-side", "-1"), ("--short-side", "0")]
)
def test_a_size_below_one_is_one_line_before_any_work(backbone, boxes, tmp_path, capsys, flag, value):
    """--batch-seconds 0 (range() with step 0), --resolution 0 and a negative --short-side failed
    inside every video: each was listed bad, and a rerun with a good value skipped them all;
    --short-side 0 silently read as the backbone's."""
    out = tmp_path / "out"
    assert main([*_launch("extract-instances", backbone, boxes, out), flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"moviessl: error: {flag}: must be an integer >= 1, got {value}"]
    assert not out.exists()


@pytest.mark.parametrize("kw, named", [(dict(sampling_ratio=0), "sampling_ratio"), (dict(pool="mean"), "pool")])
def test_python_only_roi_arguments_are_checked_before_any_work(backbone, boxes, tmp_path, kw, named):
    """sampling_ratio=0 (PySlowFast's adaptive ratio, not supported here) failed in every video,
    listing each bad (a rerun then skipped them); an unknown pool averaged without a word."""
    with pytest.raises(BadInputError, match=f"^{named}: must be"):
        extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "out", progress=False, **kw)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["extract", "extract-instances"])
def test_a_negative_number_of_workers_is_one_line_before_any_work(backbone, boxes, tmp_path, capsys, command):
    """The DataLoader refused --num-workers -1 with a traceback, once the trainer was built and the
    folder claimed."""
    out = tmp_path / "out"
    argv = _launch(command, backbone, boxes, out)
    argv[argv.index("--num-workers") + 1] = "-1"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["moviessl: error: --num-workers: must be an integer >= 0, got -1"]
    assert not out.exists()


def test_a_deleted_file_is_made_again_and_bad_videos_are_retried_on_request(backbone, boxes, tmp_path):
    """A video in the instance index was never extracted again: not when its {id}.npz was deleted
    (extract redoes such a video), nor when it was listed bad, for there was no --retry-bad."""
    out = tmp_path / "out"
    argv = _launch("extract-instances", backbone, boxes, out)
    assert main(argv) == 0
    want = InstanceStore(out).load("vidA").feat
    (out / "vidA.npz").unlink()
    assert main(argv) == 0
    np.testing.assert_array_equal(InstanceStore(out).load("vidA").feat, want)
    # vidB listed bad, as a run that met a passing decoding error leaves it
    index = json.loads((out / "index.json").read_text())
    index["videos"]["vidB"] = {"status": "bad", "error": "vidB.mp4: a passing error"}
    (out / "index.json").write_text(json.dumps(index))
    (out / "vidB.npz").unlink()
    assert main(argv) == 0 and InstanceStore(out).ids == ["vidA"]
    assert main([*argv, "--retry-bad"]) == 0 and InstanceStore(out).ids == ["vidA", "vidB"]
    assert json.loads((out / "index.json").read_text())["counts"] == {"ok": 2, "bad": 0}


def test_boxes_past_the_videos_end_are_not_pooled_from_its_last_frame(backbone, boxes, tmp_path, caplog):
    """A clip past a video's end is clamped to its last frame: boxes of seconds the video does not
    reach (a re-encoded shorter copy, tracks of another video) all got that frame's features. They
    are left out with a warning; a video all of whose boxes lie past its end is listed bad, named."""
    tracks = tmp_path / "tracks"
    tracks.mkdir()
    a = json.loads((boxes / "tracks" / "vidA.json").read_text())  # vidA.mp4 is 3 s long
    a["seconds"] += [{"t": t, "track_ids": [4], "boxes": [[0.1, 0.2, 0.5, 0.9]]} for t in (5, 40)]
    (tracks / "vidA.json").write_text(json.dumps(a))
    frames = {"seconds": [{"t": t, "track_ids": [0], "boxes": [[0.0, 0.0, 1.0, 1.0]]} for t in (30, 60)]}
    (tracks / "vidB.json").write_text(json.dumps(frames))  # frame numbers written as seconds
    with caplog.at_level("WARNING"):
        s = extract_instances(backbone, boxes / "videos", tracks, tmp_path / "out", progress=False)
    assert s["counts"] == {"ok": 1, "bad": 1}
    assert "2 of 5 boxes lie past the video's end" in caplog.text
    got = InstanceStore(tmp_path / "out").load("vidA")
    assert got.sec.tolist() == [0, 0, 2] and len(got.feat) == 3
    error = json.loads((tmp_path / "out" / "index.json").read_text())["videos"]["vidB"]["error"]
    assert "vidB.mp4" in error and "every box of vidB's tracks lies past the video's end" in error


def test_a_rerun_after_the_tracks_changed_pools_the_new_boxes(backbone, boxes, tmp_path):
    """A rerun skipped every finished video, so corrected tracks (or another task's instance_meta)
    kept the features and boxes of the old ones, exit 0; videos whose boxes changed are made again,
    the others kept as they are."""
    tracks = tmp_path / "tracks"
    shutil.copytree(boxes / "tracks", tracks)
    out = tmp_path / "out"
    extract_instances(backbone, boxes / "videos", tracks, out, progress=False)
    kept = (out / "vidB.npz").stat().st_mtime_ns
    a = json.loads((tracks / "vidA.json").read_text())
    a["seconds"][0]["boxes"][0] = [0.3, 0.3, 0.7, 0.7]
    (tracks / "vidA.json").write_text(json.dumps(a))
    extract_instances(backbone, boxes / "videos", tracks, out, progress=False)
    fresh = tmp_path / "fresh"
    extract_instances(backbone, boxes / "videos", tracks, fresh, progress=False)
    got, want = InstanceStore(out).load("vidA"), InstanceStore(fresh).load("vidA")
    np.testing.assert_array_equal(got.box, want.box)
    np.testing.assert_array_equal(got.feat, want.feat)
    assert (out / "vidB.npz").stat().st_mtime_ns == kept


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


def test_a_failing_video_is_listed_and_the_rest_extracted(backbone, boxes, tmp_path, monkeypatch):
    """An error in the backbone or RoIAlign for one video (as a decoding error) lists it as bad; the job goes on."""
    import moviessl.features.instances as ins

    real, calls = ins.roi_features, []

    def fails_once(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(ins, "roi_features", fails_once)
    s = extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "out", progress=False)
    assert s["counts"] == {"ok": 1, "bad": 1}
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    bad = [v for v, e in index["videos"].items() if e["status"] == "bad"]
    assert len(bad) == 1 and "RuntimeError: boom" in index["videos"][bad[0]]["error"]


def test_a_backbone_held_in_bf16(backbone, boxes, tmp_path):
    """Lightning's ``bf16-true`` casts the model, not uint8 clips: the clips follow the weights' dtype."""
    ref = tmp_path / "fp32"
    extract_instances(backbone, boxes / "videos", boxes / "tracks", ref, progress=False)
    extract_instances(
        backbone, boxes / "videos", boxes / "tracks", tmp_path / "bf16", precision="bf16-true", progress=False
    )
    a, b = InstanceStore(ref), InstanceStore(tmp_path / "bf16")
    assert a.ids == b.ids == ["vidA", "vidB"]
    for vid in a.ids:
        fa, fb = a.load(vid).feat, b.load(vid).feat
        assert fb.dtype == np.float32 and np.abs(fa - fb).max() <= 0.05 * np.abs(fa).max()


def _write_store(root, videos: dict[str, int], dim: int = 8, seed: int = 0) -> InstanceStore:
    """An instance folder as extract-instances writes it: ``videos`` = id -> number of boxes."""
    from moviessl.data.lvu import VideoInstances
    from moviessl.features.instances import _save_npz

    rng = np.random.default_rng(seed)
    root.mkdir()
    for vid, n in videos.items():
        sec = np.sort(rng.integers(0, 90, n))
        box = np.sort(rng.uniform(0, 1, (n, 4)).astype(np.float32).reshape(n, 2, 2), 1).transpose(0, 2, 1).reshape(n, 4)
        inst = VideoInstances(sec, sec // 10, rng.integers(0, 3, n), box, rng.normal(size=(n, dim)).astype(np.float32))
        _save_npz(root / f"{vid}.npz", inst)
    entries = {v: {"status": "ok", "num_boxes": n} for v, n in videos.items()}
    index = {"format": "moviessl-instances", "dim": dim, "videos": entries}
    (root / "index.json").write_text(json.dumps(index))
    return InstanceStore(root)


@pytest.mark.parametrize(
    "edit, cause",
    [
        ({"videos": {"v": None}}, r"videos\.v: an entry is an object"),
        ({"dim": [8]}, r"dim must be a positive integer, got \[8\]"),
        ({"dim": "x"}, r"dim must be a positive integer, got 'x'"),
        ({"dim": -8}, r"dim must be a positive integer, got -8"),
        ({"dim": 8.5}, r"dim must be a positive integer, got 8\.5"),
        ({"dim": None}, r"dim is None but it lists 1 finished video\(s\)"),  # each file was "inconsistent arrays"
        ({"dim": 0}, r"dim is 0 but it lists 1 finished video\(s\)"),
    ],
)
def test_a_damaged_instance_index_is_one_line_naming_it(tmp_path, edit, cause):
    """A hand-edited or damaged index.json of an instance folder was a traceback (``.get`` of a null
    entry, ``int()`` of a list or a word) or was read wrong (a dim of -8 or 8.5 taken), where the
    event-feature folder's index is one line: the same check now."""
    _write_store(tmp_path / "inst", {"v": 4})
    path = tmp_path / "inst" / "index.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(BadInputError, match=rf"^\S*index\.json: {cause}"):
        open_instances(tmp_path / "inst")


@pytest.mark.parametrize("cut", ["half", "tail", "empty"])
def test_a_truncated_instance_feature_file_is_one_line_naming_it(tmp_path, cut):
    """A file cut short (a copy or a download interrupted) was numpy's BadZipFile or EOFError
    traceback, which pretrain-ot and the LVU tasks, skipping a video on a BadInputError, did not
    catch: the run ended on one bad film."""
    store = _write_store(tmp_path / "inst", {"v": 4})
    path = tmp_path / "inst" / "v.npz"
    raw = path.read_bytes()
    path.write_bytes({"half": raw[: len(raw) // 2], "tail": raw[:-10], "empty": b""}[cut])
    for lazy in (False, True):
        with pytest.raises(BadInputError, match=r"^\S*v\.npz: unreadable instance feature file"):
            store.load("v", lazy=lazy)


def test_lazy_features_are_the_eager_ones_within_a_bounded_cache(tmp_path, monkeypatch):
    """pretrain-ot and the LVU tasks hold every film's boxes but read its features when a span
    needs them: what a span gets (tokens, input statistics) equals the eager load, and the cache
    keeps no more than its bound, so RAM does not grow with the number of films."""
    import torch

    import moviessl.features.instances as ins
    from moviessl.context.ot_spans import RandomSpans, SpanVideo, input_stats, span_tails, span_tokens

    monkeypatch.setattr(ins, "_feature_cache", type(ins._feature_cache)())
    monkeypatch.setattr(ins, "_feature_cache_bytes", 0)
    monkeypatch.setattr(ins, "FEATURE_CACHE_BYTES", ins.FEATURE_CACHE_BYTES)  # restored after the test
    ins.set_feature_cache(2 * 40 * 8 * 4 / 2**20)  # data.instance_cache_mb: two 40-box videos of 8-d float32
    for bad in (0, 1e-9):  # under a byte: a bound of 0 that a worker unpickling a store would refuse
        with pytest.raises(BadInputError, match="data.instance_cache_mb: must be > 0"):
            ins.set_feature_cache(bad)
    store = _write_store(tmp_path / "inst", {f"v{i}": 40 for i in range(6)})
    eager = [SpanVideo(v, inst=store.load(v)) for v in store.ids]
    lazy = [SpanVideo(v, inst=store.load(v, lazy=True)) for v in store.ids]
    assert all(isinstance(v.inst.feat, ins.LazyFeatures) for v in lazy)
    assert len(ins._feature_cache) == 2 and ins._feature_cache_bytes == 2 * 40 * 8 * 4  # the last two read
    for e, z in zip(eager, lazy):
        for tail in span_tails(e, 30):
            a, b = span_tokens(e, tail, 30, train=False), span_tokens(z, tail, 30, train=False)
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    (m1, v1), (m2, v2) = input_stats(eager)[0], input_stats(lazy)[0]
    assert bool((m1 == m2).all()) and bool((v1 == v2).all())
    assert len(ins._feature_cache) == 2  # still bounded after every video was read again
    z = lazy[0].inst.feat
    assert np.asarray(z).flags.writeable is False  # one copy shared by all readers: never written in place
    assert np.asarray(z, np.float64).dtype == np.float64 and np.array(z, copy=True).flags.writeable
    store.load("v5", lazy=True)  # a film read again replaces its entry: counted once
    assert len(ins._feature_cache) == 2 and ins._feature_cache_bytes == 2 * 40 * 8 * 4
    # a file rewritten under a running job (here with as many boxes: only the values change) must not
    # hand its new features to the boxes held in RAM: one line naming it, also from a loader worker
    store.load("v2", lazy=True), store.load("v3", lazy=True)  # v0 out of the cache: read again when needed
    ins._save_npz(tmp_path / "inst" / "v0.npz", store.load("v1"))
    with pytest.raises(BadInputError, match=r"^\S*v0.npz: rewritten since this job first read it"):
        z[0]
    dl = torch.utils.data.DataLoader(RandomSpans(lazy[:1], None, 2, 30), batch_size=None, num_workers=1)
    with pytest.raises(BadInputError, match=r"^\S*v0.npz: rewritten since this job first read it; restart the job$"):
        next(iter(dl))


def test_a_process_started_afresh_keeps_the_jobs_cache_bound(tmp_path, monkeypatch):
    """Loader workers started by spawn or forkserver (Python >= 3.14's Linux default) and ranks of
    ddp_spawn import the module with its default bound; the job's bound comes with the features they
    unpickle, and they read the same values."""
    import sys

    import moviessl.features.instances as ins

    monkeypatch.setattr(ins, "_feature_cache", type(ins._feature_cache)())
    monkeypatch.setattr(ins, "_feature_cache_bytes", 0)
    monkeypatch.setattr(ins, "FEATURE_CACHE_BYTES", ins.FEATURE_CACHE_BYTES)  # restored after the test
    ins.set_feature_cache(3)
    store = _write_store(tmp_path / "inst", {"v0": 40})
    (tmp_path / "lazy.pkl").write_bytes(pickle.dumps(store.load("v0", lazy=True)))
    child = (
        "import pickle, sys; import moviessl.features.instances as ins; b = ins.FEATURE_CACHE_BYTES; "
        "inst = pickle.load(open(sys.argv[1], 'rb')); "
        "print(b, ins.FEATURE_CACHE_BYTES, float(inst.feat[:].sum(dtype='float64')))"
    )
    res = subprocess.run([sys.executable, "-c", child, str(tmp_path / "lazy.pkl")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    default, bound, total = res.stdout.split()
    assert int(default) == 1 << 30 and int(bound) == 3 * 2**20
    assert float(total) == float(store.load("v0").feat.sum(dtype=np.float64))


def test_lazy_release_features_follow_their_instance_meta(tmp_path):
    """LVU's released features are ordered by the instance metadata of each task: the cache keys
    on the metadata file, so two tasks' readers of one feature folder never share a video's rows."""
    feats, k1, k2 = tmp_path / "features", "0.100,0.200,0.400,0.900", "0.500,0.200,0.900,0.900"
    feats.mkdir()
    np.savez(feats / "c.npz", a={1: {k1: np.ones(6, np.float32), k2: np.full(6, 2.0, np.float32)}})
    (tmp_path / "m1.pkl").write_bytes(pickle.dumps({"c": {1: {k1: [0, 1], k2: [0, 2]}}}))
    (tmp_path / "m2.pkl").write_bytes(pickle.dumps({"c": {1: {k2: [0, 2], k1: [0, 1]}}}))
    a = LVUReleaseInstances(feats, tmp_path / "m1.pkl").load("c", lazy=True)
    b = LVUReleaseInstances(feats, tmp_path / "m2.pkl").load("c", lazy=True)
    ea = LVUReleaseInstances(feats, tmp_path / "m1.pkl").load("c")
    eb = LVUReleaseInstances(feats, tmp_path / "m2.pkl").load("c")
    np.testing.assert_array_equal(a.feat[:], ea.feat)
    np.testing.assert_array_equal(b.feat[:], eb.feat)
    np.testing.assert_array_equal(a.box, ea.box)
    np.testing.assert_array_equal(b.box, eb.box)


@pytest.mark.parametrize(
    "device, line", [("cuda:x", "--device: 'cuda:x': give cpu, cuda, cuda:N or mps"), ("gpu0", "--device: 'gpu0'")]
)
def test_a_device_that_does_not_read_is_one_line(backbone, boxes, tmp_path, device, line):
    with pytest.raises(BadInputError, match=f"^{line}"):
        extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "out", device=device)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "key, value, cause",
    [
        ("sec", np.array(["0", "1", "x", "3"]), "sec must be integers, got <U1"),
        ("sec", np.array([0.0, 1.5, 2.0, 3.0]), "sec holds a value that is not a whole number"),
        ("shot", np.array([0.0, np.nan, 0.0, 0.0]), "shot holds a value that is not a whole number"),
        ("sec", np.array([-1, 0, 1, 2]), r"sec holds a negative second \(-1\)"),
        # ids 2**63 apart wrapped when a span subtracted one from another; 1e300 was cast to int64's minimum
        ("shot", np.array([-(2**63), 0, 0, 2**63 - 1]), r"shot holds -9223372036854775808: out of range"),
        ("track", np.array([0.0, 1e300, 0.0, 0.0]), r"track holds 1e\+300: out of range"),
        ("sec", np.array([0, 1, 2, 2**63], np.uint64), r"sec holds 9223372036854775808: out of range"),
        ("feat", np.array([["a"] * 8] * 4), "feat must be numbers"),
        ("feat", np.where(np.eye(4, 8, 2) > 0, np.nan, 0.0), r"4 non-finite feature value\(s\) \(NaN/inf\), first at"),
        ("feat", np.full((4, 8), 1e39), "32 non-finite feature value"),  # float64 past float32's range: inf
        ("box", np.tile([[0.1, 0.1, 0.5, 0.9]], (4, 1)) * [[1], [1], [np.nan], [1]], r"box 2 \[nan, nan, nan, nan\]"),
        ("box", np.tile([[0.1, 0.1, 7.0, -3.0]], (4, 1)), r"box 0 \[0.1, 0.1, 7.0, -3.0\]: not 4 finite numbers"),
    ],
)
def test_bad_instance_feature_files_are_one_line_naming_them(tmp_path, key, value, cause):
    """Instance arrays the model cannot use (a NaN feature makes every weight NaN; a negative second
    wraps round in the span code) are refused when the file is read, as the tracks, the release and
    the scene feature readers refuse theirs, naming the file; whole numbers stored as floats load.
    Seconds and ids lie between -2**62 and 2**62, as the tracks and metadata readers hold them."""
    store = _write_store(tmp_path / "inst", {"v": 4})
    arrs = dict(np.load(tmp_path / "inst" / "v.npz"))
    arrs[key] = value
    np.savez(tmp_path / "inst" / "v.npz", **arrs)
    for lazy in (False, True):
        with pytest.raises(BadInputError, match=rf"^\S*v\.npz: {cause}"):
            store.load("v", lazy=lazy)
    if key in ("sec", "shot"):
        arrs[key] = np.arange(4.0) if key == "sec" else np.zeros(4)
        np.savez(tmp_path / "inst" / "v.npz", **arrs)
        assert store.load("v").sec.dtype == np.int64


def test_a_video_whose_reader_process_dies_is_listed_bad_and_the_rest_done(backbone, boxes, tmp_path, monkeypatch):
    """As ``extract`` (test_extract.py): a DataLoader worker killed while decoding one video lists
    that video bad and the job goes on; before, torch's "worker (pid(s) N) exited unexpectedly" ended it."""
    import os
    import signal

    import moviessl.features.instances as ins

    reader = ins.VideoReader

    def dies_on_vid_a(path, *a, **k):
        if "vidA" in str(path):
            os.kill(os.getpid(), signal.SIGSEGV)
        return reader(path, *a, **k)

    monkeypatch.setattr(ins, "VideoReader", dies_on_vid_a)  # forked workers inherit the patch
    out = tmp_path / "out"
    s = extract_instances(backbone, boxes / "videos", boxes / "tracks", out, num_workers=1, progress=False)
    assert s["counts"] == {"ok": 1, "bad": 1}
    v = json.loads((out / "index.json").read_text())["videos"]
    assert v["vidB"]["status"] == "ok" and "vidA.mp4: the process reading it died" in v["vidA"]["error"]
    assert not list(out.glob(".reading.*"))


def test_instance_extraction_reports_its_videos_for_the_time_left(backbone, boxes, tmp_path, monkeypatch):
    import moviessl.features.instances as ins

    seen = []
    monkeypatch.setattr(ins.job_progress, "active", lambda: True)
    monkeypatch.setattr(ins.job_progress, "report", lambda done, total, force=False: seen.append((done, total)))
    extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "out", progress=False)
    assert seen == [(0, 2), (1, 2), (2, 2)]
    (tmp_path / "out" / "vidB.npz").unlink()  # a resumed job: the earlier run's video counts as done
    seen.clear()
    extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "out", progress=False)
    assert seen == [(1, 2), (2, 2)]


def test_a_dead_workers_error_raised_in_the_forward_is_not_that_videos_failure(backbone, boxes, tmp_path, monkeypatch):
    """torch's SIGCHLD handler raises the loader's dead-worker error wherever the main process is, the
    backbone's forward included: the catch-all there listed the video it was pooling as bad (a rerun
    then skipped it). It now passes the error on to the dead-reader handling."""
    import moviessl.features.instances as ins

    def dies(*a, **k):
        raise RuntimeError("DataLoader worker (pid 123456) is killed by signal: Killed. ")

    monkeypatch.setattr(ins, "roi_features", dies)
    with pytest.raises(RuntimeError, match="DataLoader worker"):  # no note of that worker: torch's error stands
        extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "out", progress=False)
    journals = list((tmp_path / "out").glob(".index.rank*.jsonl"))
    assert not any('"bad"' in j.read_text() for j in journals)


def test_a_folder_of_released_instance_features_is_not_extracted_over(backbone, boxes, tmp_path, capsys):
    """LVU's release keeps its instance features as ``features/<id>.npz`` without an index;
    ``extract-instances`` into that folder claimed it and replaced the files of the videos it
    extracted, without a word (as ``extract`` did over VidSitu's released ``{id}_feats.npy``)."""
    out = tmp_path / "features"
    out.mkdir()
    vid = "vidA"
    np.savez(out / f"{vid}.npz", feature=np.ones((2, 4), np.float32))
    before = (out / f"{vid}.npz").read_bytes()
    assert _extract(backbone, boxes, boxes / "tracks", out) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{vid}.npz" in err and "use another --out" in err
    assert (out / f"{vid}.npz").read_bytes() == before and sorted(p.name for p in out.iterdir()) == [f"{vid}.npz"]


def test_another_file_under_a_finished_id_is_not_skipped_silently(backbone, boxes, tmp_path, capsys):
    """A video replaced by another file under its id (a re-downloaded film) kept the old file's
    instance features on a rerun: the entries had no size to tell it by (extract's have). It is one
    line now, as extract's; a video listed bad whose file was replaced is tried again."""
    root = tmp_path / "lvu"
    shutil.copytree(boxes, root)
    out = tmp_path / "out"
    argv = _launch("extract-instances", backbone, root, out)
    assert main(argv) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["videos"]["vidA"]["source_size"] == (root / "videos" / "vidA.mp4").stat().st_size
    write_video(root / "videos" / "vidA.mp4", 4.0, seed=7)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "vidA.mp4: its id is extracted" in err and "delete vidA.npz" in err and "Traceback" not in err
    (out / "vidA.npz").unlink()
    assert main(argv) == 0
    got = json.loads((out / "index.json").read_text())["videos"]["vidA"]
    assert got["status"] == "ok" and got["source_size"] == (root / "videos" / "vidA.mp4").stat().st_size


def test_a_source_changed_while_the_job_ran_is_not_taken_as_the_one_read(
    backbone, boxes, tmp_path, monkeypatch, capsys
):
    """Each entry recorded its video's size when the entry was written, not when the video was read
    (extract's record it as read): a file copied in, or replaced, while the job ran had its later
    size stand for the file read, so a rerun skipped a video extracted from the old file, and a bad
    one (a copy not yet complete) stayed bad for ever. The size is taken as the video is read now."""
    import moviessl.features.instances as ins

    root = tmp_path / "lvu"
    shutil.copytree(boxes, root)
    a, b = root / "videos" / "vidA.mp4", root / "videos" / "vidB.mp4"
    read_a = a.stat().st_size
    b.write_bytes(a.read_bytes()[:300])  # vidB: a copy still going on when the job reads it
    save, bad = ins.InstanceExtractor._save, ins.InstanceExtractor.record_bad

    def replaced_then_saved(self, vid, *args, **kw):
        write_video(a, 4.0, seed=7)  # vidA replaced after the job read it
        return save(self, vid, *args, **kw)

    def copied_then_recorded(self, vid, *args, **kw):
        write_video(b, 2.0, seed=2)  # vidB's copy ends after the job failed to read it
        return bad(self, vid, *args, **kw)

    monkeypatch.setattr(ins.InstanceExtractor, "_save", replaced_then_saved)
    monkeypatch.setattr(ins.InstanceExtractor, "record_bad", copied_then_recorded)
    out = tmp_path / "out"
    argv = _launch("extract-instances", backbone, root, out)
    assert main(argv) == 0
    monkeypatch.undo()
    index = json.loads((out / "index.json").read_text())["videos"]
    assert index["vidA"]["source_size"] == read_a and index["vidB"]["status"] == "bad"
    assert index["vidB"]["source_size"] == 300
    capsys.readouterr()
    assert main(argv) == 2  # vidA's features are the old file's: one line, not skipped
    assert "vidA.mp4: its id is extracted" in capsys.readouterr().err
    (out / "vidA.npz").unlink()
    assert main(argv) == 0  # vidA made again, and vidB, complete now, read again
    index = json.loads((out / "index.json").read_text())["videos"]
    assert index["vidA"]["source_size"] == a.stat().st_size != read_a
    assert index["vidB"]["status"] == "ok" and index["vidB"]["source_size"] == b.stat().st_size


def test_boxes_a_second_apart_are_read_in_one_pass_over_the_video(tmp_path, monkeypatch):
    """LVU's boxes are a second apart and each clip (16x4, 2.13 s) reaches back between the
    previous one's frames: read one clip at a time, each second sought back a GOP, and a file read
    by decode count (an MPEG program stream) was decoded from its first frame for every second."""
    import av
    import torch

    from moviessl.data.lvu import VideoInstances
    from moviessl.features.instances import InstanceClipStream
    from moviessl.video import VideoReader, read_clip, resize_short_side

    path = tmp_path / "v.mpg"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg2video", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(12 * 25):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), i % 256, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    secs = np.arange(12)
    inst = VideoInstances(secs, secs * 0, secs * 0, np.tile(np.float32([[0.1, 0.1, 0.6, 0.6]]), (12, 1)))
    inp = {"num_frames": 16, "stride": 4}
    with VideoReader(path) as r:  # indexed here: the stream's reader below decodes only for its clips
        n = r.num_frames
        want = [resize_short_side(read_clip(r, t + 0.5, 16, 4), 32).transpose(3, 0, 1, 2) for t in secs]
    decoded = []
    close = VideoReader.close
    monkeypatch.setattr(VideoReader, "close", lambda r: (decoded.append(r.frames_decoded), close(r)))
    items = list(InstanceClipStream([("v", path)], {"v": lambda: inst}, inp, 32, batch_seconds=5))
    assert [it["kind"] for it in items] == ["clips"] * 3
    np.testing.assert_array_equal(torch.cat([it["clips"] for it in items]).numpy(), np.stack(want))
    assert decoded == [pytest.approx(n, abs=16 * 4 * 25 / 30)]


def test_the_device_a_gpu_less_machine_is_told_to_use_is_one_device_takes(backbone, boxes, tmp_path, monkeypatch):
    """``--device cuda`` on a machine without a GPU said "use cpu or auto", and ``--device auto`` is
    refused ("give cpu, cuda, cuda:N or mps"): the advice led into another error."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(BadInputError, match=r"^--device: cuda: torch sees no GPU") as e:
        extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "out", device="cuda")
    for advised in re.search(r"\(use ([^)]*)\)", str(e.value)).group(1).split(" or "):
        try:
            extract_instances(
                backbone, boxes / "videos", boxes / "tracks", tmp_path / advised, device=advised, progress=False
            )
        except BadInputError as refused:
            assert not str(refused).startswith("--device"), f"--device {advised}, as advised: {refused}"


def test_extract_instances_from_python_leaves_the_callers_random_streams_as_they_were(backbone, boxes, tmp_path):
    """As ``extract`` (tests/features/test_extract.py): nothing in it is random, yet the backbone's
    initialisation before its weights are loaded, and its data loader's pass, drew from torch's global
    generator, so a notebook's ``torch.manual_seed(0)`` gave other numbers after the call."""
    import random

    import torch

    def draws():
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    want = draws()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    s = extract_instances(backbone, boxes / "videos", boxes / "tracks", tmp_path / "out", progress=False)
    assert s["counts"]["ok"] == 2
    assert draws() == want


@pytest.mark.parametrize("content", ["text", "npy"])
def test_an_instance_file_that_is_no_npz_archive_is_said_to_be_one(tmp_path, content):
    """A file named ``.npz`` that is no zip archive: text was numpy's "Cannot load file containing
    pickled data" (it holds none), and a ``.npy`` array under that name a TypeError traceback."""
    store = _write_store(tmp_path / "inst", {"v": 4})
    path = tmp_path / "inst" / "v.npz"
    if content == "text":
        path.write_text("sec,shot,track\n1,2,3\n")
    else:
        with open(path, "wb") as f:
            np.save(f, np.zeros((4, 8), np.float32))
    for lazy in (False, True):
        with pytest.raises(BadInputError, match=r"^\S*v\.npz: not a \.npz archive") as e:
            store.load("v", lazy=lazy)
        assert "pickled" not in str(e.value)
