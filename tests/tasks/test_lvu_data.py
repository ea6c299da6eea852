"""What the Object Transformer reads per LVU video: scene features read on demand."""

import os

import numpy as np
import pytest
import torch

import moviessl.features.instances as ins
from moviessl.checkpoint import file_hash
from moviessl.context.ot_spans import SpanVideo, event_seconds, input_stats, span_tails, span_tokens
from moviessl.errors import BadInputError
from moviessl.features.extract import load_contextualizer
from moviessl.tasks.lvu.data import load_inputs, scene_arrays


@pytest.fixture
def small_cache(monkeypatch):
    monkeypatch.setattr(ins, "_feature_cache", type(ins._feature_cache)())
    monkeypatch.setattr(ins, "_feature_cache_bytes", 0)
    monkeypatch.setattr(ins, "FEATURE_CACHE_BYTES", ins.FEATURE_CACHE_BYTES)  # restored after the test
    ins.set_feature_cache(2 * 45 * 8 * 4 / 2**20)  # data.instance_cache_mb: two 45-event films of 8-d float32


def _folder(root, lengths, dim=8, seed=0):
    """VidSitu's layout (no index), films of any length: ``{id}_feats.npy`` and ``{id}_ctx.npy``."""
    rng = np.random.default_rng(seed)
    root.mkdir(exist_ok=True)
    arrays = {}
    for vid, n in lengths.items():
        arrays[vid] = rng.normal(size=(n, dim)).astype(np.float32)
        np.save(root / f"{vid}_feats.npy", arrays[vid])
        np.save(root / f"{vid}_ctx.npy", 2 * arrays[vid] + 1)
    return arrays


def test_scene_features_are_read_on_demand_and_equal_the_eager_ones(tmp_path, small_cache):
    """A task's scene pathway holds every film's event seconds but reads its features when a span
    needs them: spans and input statistics equal those of the arrays in RAM, and the per-process
    cache (shared with the instance features) keeps no more than its bound."""
    arrays = _folder(tmp_path / "ev", {f"m{i}": 45 for i in range(6)})
    scene, stride, desc = scene_arrays(tmp_path / "ev", "feats")
    assert stride == 2.0 and desc.endswith(":feats") and sorted(scene) == sorted(arrays)
    assert all(isinstance(a, ins.LazyFeatures) for a in scene.values())
    assert len(ins._feature_cache) == 2 and ins._feature_cache_bytes == 2 * 45 * 8 * 4  # the last two read
    lazy = load_inputs(scene=scene, scene_stride_s=stride)
    assert lazy.scene_dim == 8 and all(isinstance(v.scene, ins.LazyFeatures) for v in lazy.videos.values())
    eager = {v: SpanVideo(v, scene=a, scene_sec=event_seconds(len(a), stride)) for v, a in arrays.items()}
    for vid, e in eager.items():
        z = lazy.videos[vid]
        np.testing.assert_array_equal(z.scene_sec, e.scene_sec)
        assert span_tails(z, 30) == span_tails(e, 30)
        for tail in span_tails(e, 30):
            a, b = span_tokens(e, tail, 30), span_tokens(z, tail, 30)
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    (m1, v1), (m2, v2) = input_stats(list(eager.values()))[1], input_stats(list(lazy.videos.values()))[1]
    assert bool((m1 == m2).all()) and bool((v1 == v2).all())
    assert len(ins._feature_cache) == 2  # still bounded after every film was read again
    ctx, _, _ = scene_arrays(tmp_path / "ev", "ctx", ids=["m1", "m4", "nope"])
    assert sorted(ctx) == ["m1", "m4"]
    np.testing.assert_array_equal(np.asarray(ctx["m4"]), 2 * arrays["m4"] + 1)
    # a file rewritten under a running job must not hand other features to the seconds held in RAM
    np.save(tmp_path / "ev" / "m0_feats.npy", arrays["m1"][:40])
    with pytest.raises(BadInputError, match=r"^\S*m0_feats.npy: rewritten since this job first read it"):
        scene["m0"][0]


def test_a_film_read_on_demand_looks_at_its_file_once_per_read(tmp_path, small_cache, monkeypatch):
    """A film's features read on demand took its file's stamp three times when first read (the key,
    a check before the read, one after) and twice at each later read of a film the bounded cache let
    go (every epoch, for a task larger than the cache), and each stamp stat'ed the file twice
    (``Path.resolve`` stats again). The check after the read is enough: a file rewritten before the
    read differs then too."""
    _folder(tmp_path / "ev", {"m0": 45, "m1": 45, "m2": 45})
    stamps, looks = [], []
    real_stamp, real_stat = ins.file_stamp, os.stat
    monkeypatch.setattr(ins, "file_stamp", lambda p, *a: stamps.append(p.name) or real_stamp(p, *a))
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: looks.append(os.fspath(p)) or real_stat(p, *a, **k))

    def count(read):
        stamps.clear()
        read()
        return stamps.count("m0_feats.npy")

    holder = {}
    assert count(lambda: holder.update(scene_arrays(tmp_path / "ev", "feats")[0])) == 2
    assert len(ins._feature_cache) == 2  # m1, m2: m0 is read again when a span needs it
    assert count(lambda: holder["m0"][0]) == 1
    looks.clear()
    real_stamp(tmp_path / "ev" / "m0_feats.npy")
    assert len(looks) == 1  # one stat a stamp
    # rewritten after its stamp was taken, before that read: refused all the same
    scene = holder["m1"].source
    np.save(tmp_path / "ev" / "m1_feats.npy", np.zeros((45, 8), np.float32))
    with pytest.raises(BadInputError, match=r"^\S*m1_feats.npy: rewritten since this job first read it"):
        scene.read_features("m1", holder["m1"].key)


def test_a_bad_scene_file_is_one_line_when_the_folder_is_opened(tmp_path, small_cache):
    """Each file is read and checked once when the pathway is built, as before it was read on demand;
    a film without its TxE outputs says how to make them."""
    _folder(tmp_path / "ev", {"m0": 10, "m1": 12})
    (tmp_path / "ev" / "m1_ctx.npy").unlink()
    with pytest.raises(BadInputError, match=r"^\S*m1_ctx.npy: no contextualized features \(extract with --cont"):
        scene_arrays(tmp_path / "ev", "ctx")
    bad = np.ones((12, 8), np.float32)
    bad[3, 5] = np.nan
    np.save(tmp_path / "ev" / "m1_feats.npy", bad)
    with pytest.raises(BadInputError, match=r"^\S*m1_feats.npy: 1 non-finite value"):
        scene_arrays(tmp_path / "ev", "feats")


def _txe_checkpoint(path, in_dim=8):
    from moviessl.checkpoint import arch_spec, save_checkpoint
    from moviessl.models.txe import build_txe

    kw = dict(in_dim=in_dim, dim=16, heads=2, mlp_dim=16, depth=1)
    torch.manual_seed(0)
    txe = build_txe("txe_cpu", **kw)
    arch = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", **kw)
    save_checkpoint(path, stage="context", arch=arch, state_dict=txe.state_dict(), meta={"window": 5, "in_dim": in_dim})
    return txe.eval()


def _cached(root):
    """The films of the one cache folder under ``root/scene_ctx``, by the features' stamp they name."""
    (folder,) = (root / "scene_ctx").iterdir()
    return folder, {p.name.split(".")[0]: p for p in folder.iterdir()}


def test_contextualised_scene_is_cached_on_disk_once_and_read_on_demand(tmp_path, small_cache, monkeypatch):
    """``finetune lvu --contextualizer``: the TxE's outputs equal ``contextualize`` on each film (a
    damaged stretch never read, as ``extract --contextualizer`` makes them) and the in-RAM path's;
    they are written once under the cache folder (a second task, or rank, reads them) and made again
    only for a film whose features were re-extracted, even with an older time."""
    import json

    import moviessl.tasks.lvu.data as data
    from moviessl.features.extract import contextualize

    arrays = _folder(tmp_path / "ev", {"m0": 9, "m1": 14, "m2": 3})
    videos = {v: {"status": "ok", "num_events": len(a)} for v, a in arrays.items()}
    index = {"videos": videos, "dim": 8, "stride_s": 2.0}
    (tmp_path / "ev" / "index.json").write_text(json.dumps(index))
    txe = _txe_checkpoint(tmp_path / "txe.pt")
    made = []
    save = data.save_ctx
    monkeypatch.setattr(data, "save_ctx", lambda path, *a, **k: (made.append(path.name[:2]), save(path, *a, **k)))
    ctx, runs = tmp_path / "txe.pt", tmp_path / "runs"

    scene, stride, desc = scene_arrays(tmp_path / "ev", "feats", ctx, cache_dir=runs)
    assert stride == 2.0 and desc.endswith("+txe:" + file_hash(ctx)) and sorted(made) == ["m0", "m1", "m2"]
    assert all(isinstance(a, ins.LazyFeatures) for a in scene.values())
    assert sorted(_cached(runs)[1]) == ["m0", "m1", "m2"]
    ram, _, desc_ram = scene_arrays(tmp_path / "ev", "feats", ctx)
    assert desc_ram == desc  # where they are kept is not what they are: earlier runs are reused
    with torch.no_grad():
        for vid, a in arrays.items():
            want = contextualize(txe, torch.from_numpy(a)).numpy()
            np.testing.assert_array_equal(np.asarray(scene[vid]), want)
            np.testing.assert_array_equal(ram[vid], want)

    made.clear()
    again, _, _ = scene_arrays(tmp_path / "ev", "feats", ctx, ids=["m0", "m1"], cache_dir=runs)
    assert made == [] and sorted(again) == ["m0", "m1"]
    new = arrays["m0"][::-1].copy()
    np.save(tmp_path / "ev" / "m0_feats.npy", new)
    os.utime(tmp_path / "ev" / "m0_feats.npy", ns=(1, 1))  # re-extracted, the copy keeping an older time
    again, _, _ = scene_arrays(tmp_path / "ev", "feats", ctx, cache_dir=runs)
    assert made == ["m0"] and sorted(_cached(runs)[1]) == ["m0", "m1", "m2"]  # the old file went
    st = (tmp_path / "ev" / "m0_feats.npy").stat()
    assert _cached(runs)[1]["m0"].name == f"m0.{new.nbytes + 128}.1.{st.st_ino}_ctx.npy"
    with torch.no_grad():
        np.testing.assert_array_equal(np.asarray(again["m0"]), contextualize(txe, torch.from_numpy(new)).numpy())

    # a damaged stretch: windows within the stretches, as extract --contextualizer makes them; runs
    # made before are not reused
    videos["m1"]["missing"] = [[4, 7]]
    (tmp_path / "ev" / "index.json").write_text(json.dumps(index))
    gap = np.zeros(14, bool)
    gap[4:7] = True
    for cache_dir in (tmp_path / "runs2", None):
        scene, _, desc = scene_arrays(tmp_path / "ev", "feats", ctx, cache_dir=cache_dir)
        assert desc.endswith("+stretch-windows")
        with torch.no_grad():
            want = contextualize(txe, torch.from_numpy(arrays["m1"]), 5, 1, gap).numpy()
            np.testing.assert_array_equal(np.asarray(scene["m1"].feat), want)
            np.testing.assert_array_equal(scene["m1"].keep, ~gap)  # and those events are no tokens
            assert not np.allclose(contextualize(txe, torch.from_numpy(arrays["m1"])).numpy(), want)


def test_a_damaged_folders_scene_cache_and_runs_are_not_the_earlier_windows(tmp_path):
    """The TxE's windows beside a damaged stretch changed (within the stretch, no padding inside):
    a feature folder with a damaged film gets another scene cache than the one made before (whose
    files, keyed by the features' stamps alone, would be read again), and its runs another tag."""
    import json

    from moviessl.features.store import FeatureStore
    from moviessl.tasks.lvu.data import scene_cache

    _folder(tmp_path / "ev", {"m0": 9, "m1": 14})
    index = {"videos": {"m0": {"status": "ok", "num_events": 9}, "m1": {"status": "ok", "num_events": 14}}}
    (tmp_path / "ev" / "index.json").write_text(json.dumps({**index, "dim": 8, "stride_s": 2.0}))
    whole = scene_cache(FeatureStore(tmp_path / "ev", num_events=None), "h", tmp_path).folder
    index["videos"]["m1"]["missing"] = [[4, 7]]
    (tmp_path / "ev" / "index.json").write_text(json.dumps({**index, "dim": 8, "stride_s": 2.0}))
    damaged = scene_cache(FeatureStore(tmp_path / "ev", num_events=None), "h", tmp_path).folder
    assert damaged != whole and damaged.parent == whole.parent


def test_events_of_a_damaged_stretch_are_no_scene_tokens(tmp_path, small_cache):
    """``extract`` leaves a damaged stretch's rows as zeros and lists them as missing: OT++ took them
    as scene tokens at their seconds and counted them in the input statistics (with input_norm a
    large out-of-distribution token)."""
    import json

    arrays = _folder(tmp_path / "ev", {"m0": 30, "m1": 10})
    arrays["m0"][0:16] = 0.0
    np.save(tmp_path / "ev" / "m0_feats.npy", arrays["m0"])
    videos = {v: {"status": "ok", "num_events": len(a)} for v, a in arrays.items()}
    videos["m0"]["missing"] = [[0, 16]]
    (tmp_path / "ev" / "index.json").write_text(json.dumps({"videos": videos, "dim": 8, "stride_s": 2.0}))
    inputs = load_inputs(scene=scene_arrays(tmp_path / "ev", "feats")[0])
    m0 = inputs.videos["m0"]
    np.testing.assert_array_equal(m0.scene_sec, event_seconds(30)[16:])
    np.testing.assert_array_equal(np.asarray(m0.scene), arrays["m0"][16:])
    for tail in span_tails(m0, 60):
        assert not (span_tokens(m0, tail, 60)["scene"][1:-1] == 0).all(axis=1).any()
    mean, _ = input_stats(list(inputs.videos.values()))[1]
    valid = np.concatenate([arrays["m0"][16:], arrays["m1"]])
    np.testing.assert_allclose(mean.numpy(), valid.mean(0), rtol=1e-5, atol=1e-6)


def test_scene_kind_auto_ids_and_films_without_tokens(tmp_path, small_cache):
    """``auto`` reads the TxE outputs of a folder whose index names its contextualizer (the backbone
    features of one that names none); ``ids`` keeps only those films; a film whose every event is
    damaged has no token and is no item; the inputs' digest names the events' seconds (the stride)."""
    import json

    arrays = _folder(tmp_path / "ev", {"m0": 6, "m1": 8, "m2": 4})
    videos = {v: {"status": "ok", "num_events": len(a)} for v, a in arrays.items()}
    videos["m2"]["missing"] = [[0, 4]]
    index = {"videos": videos, "dim": 8, "stride_s": 2.0, "contextualizer": None}
    (tmp_path / "ev" / "index.json").write_text(json.dumps(index))
    scene, _, desc = scene_arrays(tmp_path / "ev", "auto")
    assert desc.endswith(":feats")
    np.testing.assert_array_equal(np.asarray(scene["m1"]), arrays["m1"])
    index["contextualizer"] = {"path": "txe.pt", "hash": "a" * 12, "window": 5, "step": 1, "dim": 8}
    (tmp_path / "ev" / "index.json").write_text(json.dumps(index))
    scene, stride, desc = scene_arrays(tmp_path / "ev", "auto")
    assert desc.endswith(":ctx")
    np.testing.assert_array_equal(np.asarray(scene["m1"]), 2 * arrays["m1"] + 1)
    assert sorted(load_inputs(scene=scene, scene_stride_s=stride).videos) == ["m0", "m1"]
    assert sorted(load_inputs(scene=scene, scene_stride_s=stride, ids=["m1", "m2", "m9"]).videos) == ["m1"]
    assert load_inputs(scene=scene, scene_stride_s=1.0).data != load_inputs(scene=scene, scene_stride_s=stride).data


def test_contextualised_scene_ranks_start_at_their_own_share(tmp_path, small_cache, monkeypatch):
    """Under torchrun each rank starts at its share of the films and skips what another rank wrote
    meanwhile; a film that another rank writes after this one never replaces this one's file (a
    read in progress over NFS could fail), and a rank that read it is not told it was rewritten."""
    import moviessl.tasks.lvu.data as data
    from moviessl.features.store import FeatureStore

    _folder(tmp_path / "ev", {f"m{i}": 6 for i in range(4)})
    _txe_checkpoint(tmp_path / "txe.pt")
    made = []
    save = data.save_ctx

    def save_and_meet_another_rank(path, *a, **k):
        made.append(path.name[:2])
        save(path, *a, **k)
        if path.name.startswith("m2"):  # rank 0 wrote m0 meanwhile
            st = (tmp_path / "ev" / "m0_feats.npy").stat()
            save(path.parent / f"m0.{st.st_size}.{st.st_mtime_ns}.{st.st_ino}_ctx.npy", *a, **k)

    monkeypatch.setattr(data, "save_ctx", save_and_meet_another_rank)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    first, _, _ = scene_arrays(tmp_path / "ev", "feats", tmp_path / "txe.pt", cache_dir=tmp_path / "runs")
    assert made == ["m2", "m3", "m1"]
    folder, files = _cached(tmp_path / "runs")
    before, inode = np.asarray(first["m3"]).copy(), files["m3"].stat().st_ino
    txe, window, step = load_contextualizer(tmp_path / "txe.pt", 8, 2.0)
    feats = FeatureStore(tmp_path / "ev", None).load("m3", mmap=True)
    save(files["m3"], txe, feats * 0, window, step, clobber=False)  # rank 0, late (other bytes, to tell)
    assert files["m3"].stat().st_ino == inode and len(list(folder.iterdir())) == 4  # kept, no temp file left
    ins._feature_cache.clear()
    np.testing.assert_array_equal(np.asarray(first["m3"]), before)
    # features rewritten under a running job: a one-line error, as for any feature file
    np.save(tmp_path / "ev" / "m3_feats.npy", np.zeros((6, 8), np.float32))
    ins._feature_cache.clear()
    with pytest.raises(BadInputError, match=r"^\S*m3_feats.npy: rewritten since this job first read it"):
        first["m3"][0]


def test_scene_kind_auto_does_not_read_backbone_features_while_txe_outputs_are_remade(tmp_path, small_cache):
    """``extract --contextualizer`` with another TxE first makes the folder's index name none (its
    ``ctx_pending`` names the new one) and removes the old outputs, then extracts any new films and
    makes every output at the end, hours later. ``--scene-kind auto`` read such a folder, while that
    job ran or after it was killed, as one without a TxE: the raw backbone features, without a word,
    for a run meant to read TxE outputs. It is one line now, naming the job or the rerun, and
    ``--scene-kind feats`` reads the backbone features on purpose."""
    import fcntl
    import json

    from moviessl.features.extract import JOB_LOCK

    ev = tmp_path / "ev"
    _folder(ev, {"m0": 10, "m1": 12})
    (ev / "m1_ctx.npy").unlink()  # the new TxE's outputs are made one by one
    pending = {"path": str(tmp_path / "txe_b.pt"), "hash": "b" * 12, "window": 5, "step": 1, "dim": 8}
    index = {
        "format": "moviessl-features",
        "stride_s": 2.0,
        "dim": 8,
        "contextualizer": None,
        "ctx_pending": pending,
        "videos": {v: {"status": "ok", "num_events": n} for v, n in (("m0", 10), ("m1", 12))},
    }
    (ev / "index.json").write_text(json.dumps(index))
    fd = os.open(ev / JOB_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 4242 on node7, since 2026-12-05 10:00:00")
        with pytest.raises(BadInputError, match=r"txe_b.pt.*being made by an extraction job \(pid 4242 on node7"):
            scene_arrays(ev, "auto")
    finally:
        os.close(fd)  # the job is killed: its lock file stays, locking nothing
    with pytest.raises(BadInputError, match=r"rerun extract --contextualizer \S*txe_b.pt .*--scene-kind feats"):
        scene_arrays(ev, "auto")
    scene, _, desc = scene_arrays(ev, "feats")
    assert desc.endswith(":feats") and sorted(scene) == ["m0", "m1"]


def test_the_configured_scene_stride_places_the_events(tmp_path, small_cache):
    """``data.scene_stride_s`` (a folder extracted at another stride than it records) puts event k at
    the floor of its centre ``stride x (k + 0.5)``; unset, the folder's own stride (2 s) does."""
    from moviessl.tasks.lvu.runner import build_inputs

    _folder(tmp_path / "ev", {"m0": 5})
    given = build_inputs("scene", tmp_path, scene_features=tmp_path / "ev", scene_kind="feats", scene_stride_s=3.0)
    np.testing.assert_array_equal(given.videos["m0"].scene_sec, [1, 4, 7, 10, 13])
    own = build_inputs("scene", tmp_path, scene_features=tmp_path / "ev", scene_kind="feats")
    np.testing.assert_array_equal(own.videos["m0"].scene_sec, [1, 3, 5, 7, 9])
