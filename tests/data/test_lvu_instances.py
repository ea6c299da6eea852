"""LVU's released instance inputs (features/*.npz, instance_meta_*.pkl) and tracks JSON files, read
from files built from their documented layout; bad files are one-line BadInputErrors."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from moviessl.data.lvu import read_instance_meta, read_release_features, read_tracks, release_instances
from moviessl.errors import BadInputError
from moviessl.features.instances import LVUReleaseInstances, open_instances
from moviessl.utils.safe_pickle import UNPICKLE_ERRORS, safe_load

BOX_A, BOX_B = "0.100,0.200,0.400,0.900", "0.500,0.100,0.800,0.700"


def _release(root, dim=6):
    """LVU's layout: features/<id>.npz holds array 'a' = {sec: {box: feature}} (np.savez of a dict,
    read by the reference as np.load(f, allow_pickle=True)['a'].item()); instance_meta_<task>.pkl =
    {id: {sec: {box: [scene_id, link_id]}}}."""
    rng = np.random.default_rng(0)
    (root / "features").mkdir(parents=True)
    meta = {"vidA": {3: {BOX_A: [0, 7], BOX_B: [0, 9]}, 4: {BOX_A: [1, 7]}}, "vidB": {0: {BOX_B: [2, 1]}}}
    feats = {}
    for vid, secs in meta.items():
        feats[vid] = {s: {b: rng.normal(size=dim).astype(np.float32) for b in boxes} for s, boxes in secs.items()}
        np.savez(root / "features" / f"{vid}.npz", a=feats[vid])
    (root / "instance_meta").mkdir()
    with open(root / "instance_meta" / "instance_meta_scene.pkl", "wb") as f:
        pickle.dump(meta, f)
    return meta, feats


def test_release_files_read_as_the_reference(tmp_path):
    meta, feats = _release(tmp_path)
    m = read_instance_meta(tmp_path / "instance_meta" / "instance_meta_scene.pkl")
    assert m["vidA"][3][BOX_B] == (0, 9) and m["vidB"] == {0: {BOX_B: (2, 1)}}
    f = read_release_features(tmp_path / "features" / "vidA.npz")
    assert np.array_equal(f[4][BOX_A], feats["vidA"][4][BOX_A])
    inst = release_instances(m["vidA"], f)
    assert inst.sec.tolist() == [3, 3, 4] and inst.track.tolist() == [7, 9, 7] and inst.shot.tolist() == [0, 0, 1]
    assert np.allclose(inst.box[1], [0.5, 0.1, 0.8, 0.7])
    assert np.array_equal(inst.feat[2], feats["vidA"][4][BOX_A])
    # a pickle that lists its seconds out of order: rows by second all the same, each with its own
    # box, ids and feature (the boxes in file order and the features by second were paired wrongly)
    backwards = release_instances({4: m["vidA"][4], 3: m["vidA"][3]}, f)
    assert backwards.sec.tolist() == [3, 3, 4] and backwards.track.tolist() == [7, 9, 7]
    assert np.array_equal(backwards.box, inst.box) and np.array_equal(backwards.feat, inst.feat)
    # a box a rounding past the frame (LVU's keys have 3 decimals) is clipped onto it
    edge = "-0.0004,0.100,1.0009,0.500"
    clipped = release_instances({0: {edge: (0, 1)}}, {0: {edge: np.zeros(6, np.float32)}})
    assert clipped.box.tolist() == [[0.0, pytest.approx(0.1), 1.0, 0.5]]
    store = open_instances(tmp_path / "features", tmp_path / "instance_meta" / "instance_meta_scene.pkl")
    assert isinstance(store, LVUReleaseInstances) and store.ids == ["vidA", "vidB"] and store.dim == 6
    # a third element (the reference appends the label; AVA files hold actions) is ignored
    with open(tmp_path / "m3.pkl", "wb") as fh:
        pickle.dump({"v": {1: {BOX_A: [0, 2, [-1]]}}}, fh)
    assert read_instance_meta(tmp_path / "m3.pkl") == {"v": {1: {BOX_A: (0, 2)}}}


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "payload, cause",
    [
        (b"not a pickle", "not a readable instance-metadata pickle"),
        (pickle.dumps(_Evil()), "refusing to load"),
        (pickle.dumps([1, 2]), "expected a dict"),
        (pickle.dumps({"v": {1: {"0.1,0.2,0.3": [0, 1]}}}), "not 'x1,y1,x2,y2'"),
        (pickle.dumps({"v": {1: {BOX_A: [0]}}}), "expected [scene_id, link_id]"),
        (pickle.dumps({"v": {1: {"0.5,0.2,0.4,0.9": [0, 1]}}}), "inverted"),
    ],
)
def test_bad_instance_meta_is_one_line(tmp_path, payload, cause):
    p = tmp_path / "meta.pkl"
    p.write_bytes(payload)
    with pytest.raises(BadInputError) as e:
        read_instance_meta(p)
    assert cause in str(e.value) and "\n" not in str(e.value) and str(p) in str(e.value)


def test_bad_release_features_are_one_line(tmp_path):
    p = tmp_path / "v.npz"
    p.write_bytes(b"garbage")
    with pytest.raises(BadInputError, match="not a readable LVU feature file"):
        read_release_features(p)
    np.savez(p, b=np.zeros(3))
    with pytest.raises(BadInputError, match="no array 'a'"):
        read_release_features(p)
    np.savez(p, a={1: {BOX_A: np.zeros(4), BOX_B: np.zeros(5)}})
    with pytest.raises(BadInputError, match="feature of 5 values"):
        read_release_features(p)
    np.savez(p, a={1: {BOX_A: np.array([np.nan, 0.0])}})
    with pytest.raises(BadInputError, match="non-finite"):
        read_release_features(p)
    # a box of the metadata without a feature
    with pytest.raises(BadInputError, match="no RoI feature for second 2"):
        release_instances({2: {BOX_A: (0, 1)}}, {1: {BOX_A: np.zeros(3, np.float32)}}, where="v.npz")


def _corrupt_frame_length(data: bytes, at: int, top: int) -> bytes:
    """``data`` with the top byte of the protocol-4 FRAME length starting at ``at`` set to ``top``."""
    out = bytearray(data)
    assert out[at - 1] == pickle.FRAME[0]
    out[at + 7] = top
    return bytes(out)


@pytest.mark.parametrize("top", [0x40, 0x80])  # MemoryError / OverflowError in the unpickler
def test_corrupted_pickle_length_is_one_line(tmp_path, top):
    """A flipped byte of a pickle's length field made the unpickler ask for exabytes: the error
    (MemoryError, OverflowError) escaped as a traceback instead of a line naming the file."""
    p = tmp_path / "meta.pkl"
    p.write_bytes(_corrupt_frame_length(pickle.dumps({"v": {1: {BOX_A: [0, 1]}}}, protocol=4), 3, top))
    with pytest.raises(BadInputError) as e:
        read_instance_meta(p)
    assert str(e.value).startswith(f"{p}: not a readable instance-metadata pickle") and "corrupted pickle" in str(
        e.value
    )
    # the object array inside a feature .npz (numpy pickles it with protocol 4 after its header)
    f = tmp_path / "v.npz"
    np.savez(f, a={1: {BOX_A: np.zeros(4)}})
    with zipfile.ZipFile(f) as z:
        npy = z.read("a.npy")
    at = npy.index(b"\x80\x04\x95") + 3
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("a.npy", _corrupt_frame_length(npy, at, 0x80))
    with pytest.raises(BadInputError, match="not a readable LVU feature file .*corrupted pickle"):
        read_release_features(f)


def test_safe_load_turns_length_errors_into_unpickling_errors():
    class Broken(pickle.Unpickler):
        def load(self):
            raise SystemError("Negative size passed to PyBytes_FromStringAndSize")

    with pytest.raises(UNPICKLE_ERRORS, match="corrupted pickle .SystemError"):
        safe_load(io.BytesIO(b""), Broken)


def _tracks(p, seconds, **extra):
    p.write_text(
        json.dumps({"youtube_id": "x", "box_format": "x1,y1,x2,y2 normalised to [0,1]", "seconds": seconds, **extra})
    )
    return p


def test_tracks_file(tmp_path):
    p = _tracks(
        tmp_path / "v.json",
        [
            {"t": 5, "shot": 1, "track_ids": [3, 0], "boxes": [[0.1, 0.1, 0.3, 0.5], [0.5, 0.5, 0.9, 1.0]]},
            {"t": 2, "track_ids": [0], "boxes": [[0.0, 0.2, 0.2, 0.6]]},  # shot defaults to 0
            {"t": 3, "shot": 0, "track_ids": [], "boxes": []},
            {"t": 4, "shot": 0, "track_ids": [1], "boxes": [[1.0, 0.4, 1.0, 0.7]]},  # no area in frame: dropped
        ],
    )
    inst = read_tracks(p)
    assert inst.sec.tolist() == [2, 5, 5] and inst.track.tolist() == [0, 3, 0] and inst.shot.tolist() == [0, 1, 1]
    assert inst.box.shape == (3, 4) and inst.feat is None


@pytest.mark.parametrize(
    "seconds, cause",
    [
        ({"t": 1}, '"seconds" list'),
        ([{"t": 1, "track_ids": [0, 1], "boxes": [[0, 0, 1, 1]]}], "same length"),
        ([{"t": -1, "track_ids": [], "boxes": []}], "negative or repeated"),
        ([{"t": 1, "track_ids": [], "boxes": []}, {"t": 1, "track_ids": [], "boxes": []}], "negative or repeated"),
        ([{"t": 1, "track_ids": [0], "boxes": [[0, 0, 2, 1]]}], "not normalised"),
        ([{"t": 1, "track_ids": [0], "boxes": [[0.5, 0, 0.2, 1]]}], "inverted"),
        ([{"t": 1, "track_ids": ["a"], "boxes": [[0, 0, 1, 1]]}], "must be an integer"),
        ([{"t": 1, "track_ids": [0], "boxes": [[0, 0, 1]]}], "4 finite numbers"),
    ],
)
def test_bad_tracks_are_one_line(tmp_path, seconds, cause):
    p = _tracks(tmp_path / "v.json", seconds)
    with pytest.raises(BadInputError) as e:
        read_tracks(p)
    assert cause in str(e.value) and "\n" not in str(e.value) and str(p) in str(e.value)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BadInputError, match="unreadable tracks JSON"):
        read_tracks(tmp_path / "bad.json")


def test_bad_boxes_in_instance_meta_are_skipped_and_counted(tmp_path, caplog):
    """One bad entry never fails the whole file (LVU's metadata covers thousands of videos): bad
    boxes, seconds and videos are skipped, and one warning names the file and the count."""
    p = tmp_path / "instance_meta_scene.pkl"
    meta = {
        "vidA": {
            3: {BOX_A: [0, 7], "0.5,0.2,0.4,0.9": [0, 8], "0.1,0.2,1.7,0.9": [0, 9], "0.1,0.2": [0, 1]},
            4: {BOX_B: [1, 7], BOX_A: [1]},
            "x": {BOX_A: [1, 7]},
            -2: {BOX_A: [1, 7]},  # the span code indexes by second: it crashed, or wrapped round
        },
        "vidB": [BOX_A],
        "vidC": {0: {BOX_B: [2, 1]}},
    }
    p.write_bytes(pickle.dumps(meta))
    with caplog.at_level("WARNING", logger="moviessl"):
        m = read_instance_meta(p)
    assert m == {"vidA": {3: {BOX_A: (0, 7)}, 4: {BOX_B: (1, 7)}}, "vidC": {0: {BOX_B: (2, 1)}}}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(p) in warnings[0] and "skipped 7 bad entries" in warnings[0]
    assert "inverted" in warnings[0]  # the first problem, so the user can look it up


def test_zero_area_boxes_are_kept_as_lvu_does(tmp_path):
    """LVU's reference makes a token of every box of the metadata, zero-area ones included; RoI
    pooling of them stays finite (no division by the box size)."""
    import torch

    from moviessl.data.lvu import meta_instances
    from moviessl.models.roi import roi_features

    flat = "0.300,0.200,0.300,0.900"  # x1 == x2
    p = tmp_path / "m.pkl"
    p.write_bytes(pickle.dumps({"v": {2: {flat: [0, 1], BOX_A: [0, 2]}}}))
    m = read_instance_meta(p)
    assert list(m["v"][2]) == [flat, BOX_A]
    inst = meta_instances(m["v"])
    assert inst.track.tolist() == [1, 2] and inst.feat is None and np.allclose(inst.box[0], [0.3, 0.2, 0.3, 0.9])
    f = release_instances(m["v"], {2: {flat: np.ones(3, np.float32), BOX_A: np.zeros(3, np.float32)}})
    assert len(f) == 2 and f.feat.shape == (2, 3)
    fmap = torch.randn(1, 4, 2, 7, 7)
    r = roi_features(fmap, torch.from_numpy(inst.box), torch.zeros(2, dtype=torch.long))
    assert r.shape == (2, 4) and torch.isfinite(r).all()


def test_inputs_digest_follows_the_metadata_and_features(tmp_path):
    """A finished LVU run is reused only on the same inputs: the digest of a release's inputs
    changes with the instance metadata's links and the features, not with where a copy lies."""
    import shutil

    from moviessl.tasks.lvu.data import load_inputs

    meta, _ = _release(tmp_path / "a")

    def digest(root, meta_file="instance_meta/instance_meta_scene.pkl"):
        return load_inputs(open_instances(root / "features", root / meta_file)).data

    first = digest(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert digest(tmp_path / "b") == first
    meta["vidA"][3][BOX_B] = [0, 8]  # another link id for one box: other tracks
    with open(tmp_path / "a" / "m2.pkl", "wb") as f:
        pickle.dump(meta, f)
    assert digest(tmp_path / "a", "m2.pkl") != first
    np.savez(tmp_path / "b" / "features" / "vidB.npz", a={0: {BOX_B: np.zeros(7, np.float32)}})
    assert digest(tmp_path / "b") != first


def test_instance_meta_folder_gives_each_task_its_file(tmp_path, capsys):
    """``--instance-meta`` took one file for all nine tasks of ``--task all`` (every task read the
    first task's videos and boxes); a folder gives each task its own file."""
    from moviessl.cli import main
    from moviessl.tasks.lvu.runner import build_inputs

    _release(tmp_path)
    meta = tmp_path / "instance_meta"
    by_folder = build_inputs("scene", tmp_path, tmp_path / "features", meta)
    by_file = build_inputs("scene", tmp_path, tmp_path / "features", meta / "instance_meta_scene.pkl")
    assert sorted(by_folder.videos) == ["vidA", "vidB"] and by_folder.data == by_file.data
    with pytest.raises(BadInputError, match="instance_meta_genre.pkl: instance metadata file not found"):
        build_inputs("genre", tmp_path, tmp_path / "features", meta)
    argv = ["finetune", "lvu", "--task", "all", "--data-root", str(tmp_path), "--instances", str(tmp_path / "features")]
    assert main(argv + ["--instance-meta", str(meta / "instance_meta_scene.pkl"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--instance-meta" in err and "folder" in err and "\n" not in err and not (tmp_path / "o").exists()


def test_pretrain_ot_reads_every_tasks_videos_from_the_instance_meta_folder(tmp_path, capsys):
    """``pretrain-ot --instance-meta`` took one task's file only: LVU's released ``instance_meta/``
    folder (one file per task, as ``finetune lvu`` takes it) was one line (IsADirectoryError), and
    pretraining on all of LVU's movies needed the files merged by hand. The folder is every task's
    videos, as ``extract-instances`` reads it; a single file reads and digests as before."""
    import json

    from moviessl.cli import main

    meta, _ = _release(tmp_path)
    folder = tmp_path / "instance_meta"
    scene_file = folder / "instance_meta_scene.pkl"
    one = open_instances(tmp_path / "features", scene_file)
    # another task's file: vidB alone, with the same boxes (the release's features are per video)
    with open(folder / "instance_meta_genre.pkl", "wb") as f:
        pickle.dump({"vidB": meta["vidB"]}, f)
    with open(scene_file, "wb") as f:
        pickle.dump({"vidA": meta["vidA"]}, f)
    both = open_instances(tmp_path / "features", folder)
    assert both.ids == ["vidA", "vidB"] and both.dim == 6
    assert np.array_equal(both.load("vidB").feat, one.load("vidB").feat)
    assert both.source_digest() != open_instances(tmp_path / "features", scene_file).source_digest()
    out = tmp_path / "ot"
    argv = ["pretrain-ot", "--instances", str(tmp_path / "features"), "--instance-meta", str(folder)]
    argv += ["--out", str(out), "masking.action_weight=0", "trainer.max_steps=1", "data.batch_size=2"]
    assert main([*argv, "trainer.progress_bar=false"]) == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["num_videos"] == 2


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_old_protocol_pickles_of_numpy_values_load(tmp_path, protocol):
    """Protocols 0-2 write an array's bytes as _codecs.encode(text, 'latin1'), which the restricted
    unpickler refused: such instance metadata or feature pickles could not be read at all."""
    obj = {"v": {1: {BOX_A: [np.int64(0), np.int64(1)]}}, "f": np.arange(3, dtype=np.float32)}
    got = safe_load(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
    assert got["v"][1][BOX_A] == [0, 1] and np.array_equal(got["f"], obj["f"])
    with pytest.raises(pickle.UnpicklingError, match="refusing to load os.system"):
        safe_load(io.BytesIO(b"cos\nsystem\n(S'true'\ntR."))  # the restriction holds for every protocol


@pytest.mark.parametrize("field", ["t", "shot", "track_ids"])
@pytest.mark.parametrize("value", [2**63, 1e300, 2**62])
def test_an_out_of_range_second_or_id_is_one_line(tmp_path, field, value):
    """Seconds and ids are held as int64 and subtracted from one another: a tracks file's integer
    past 2**63 (or 1e300, an integral float) was numpy's OverflowError traceback, in the tracks
    reader, the instance metadata's boxes and the release features' seconds alike."""
    entry = {"t": 1, "shot": 0, "track_ids": [0], "boxes": [[0, 0, 0.5, 0.5]]}
    entry[field] = [value] if field == "track_ids" else value
    p = _tracks(tmp_path / "v.json", [entry])
    with pytest.raises(BadInputError, match=r"is out of range \(an integer between -2\*\*62 and 2\*\*62\)$"):
        read_tracks(p)
    m = tmp_path / "m.pkl"
    m.write_bytes(pickle.dumps({"v": {value: {BOX_A: [0, 1]}, 2: {BOX_A: [0, 1], BOX_B: [value, 1]}}}))
    assert read_instance_meta(m) == {"v": {2: {BOX_A: (0, 1)}}}  # both bad entries skipped
    f = tmp_path / "v.npz"
    np.savez(f, a={value: {BOX_A: np.zeros(3)}})
    with pytest.raises(BadInputError, match=r"second .* is out of range"):
        read_release_features(f)
