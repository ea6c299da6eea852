"""``moviessl extract`` on small real H.264 files, and FeatureStore on VidSitu-style folders."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from moviessl.checkpoint import arch_spec, build_from_checkpoint, save_checkpoint
from moviessl.cli import main
from moviessl.errors import BadInputError
from moviessl.features import FeatureStore
from moviessl.features import extract as ex

INPUT = {"num_frames": 4, "stride": 8, "short_side": 32, "crop": 32}


def write_video(
    path: Path, seconds: float, fps: int = 30, seed: int = 0, h: int = 36, w: int = 48, ramp: bool = False
) -> Path:
    """A coloured square drifting across a brightening background (``ramp``: one brightening from
    left to right, so that which columns a crop keeps shows in the features)."""
    rng = np.random.default_rng(seed)
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.options = {"preset": "ultrafast", "crf": "23"}
    bg, col = rng.integers(0, 100, 3), rng.integers(150, 256, 3)
    for t in range(int(round(seconds * fps))):
        f = np.empty((h, w, 3), np.uint8)
        f[:] = (bg + t) % 256  # the background brightens: every event looks different
        if ramp:
            f[:] = np.minimum(f.astype(np.int64) + 4 * np.arange(w)[None, :, None], 255)
        x = (t // 2) % (w - 8)
        f[10:18, x : x + 8] = col
        for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(pkt)
    for pkt in s.encode():
        c.mux(pkt)
    c.close()
    return path


def save_backbone(path: Path, inp: dict = INPUT) -> Path:
    """A tiny random Slow-D checkpoint (16-d features) reading 4x8 clips at 32 px (``inp``)."""
    from moviessl.models import build_slowd

    torch.manual_seed(0)
    kw = dict(preset="slowd_cpu", widths=[8, 8, 16, 16], stem_width=8)
    model = build_slowd(**kw)
    save_checkpoint(
        path,
        stage="backbone",
        arch=arch_spec("moviessl.models.slowd:build_slowd", **kw),
        state_dict=model.state_dict(),
        meta={"input": inp, "method": "random", "out_dim": model.out_dim},
    )
    return path


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    return save_backbone(tmp_path_factory.mktemp("bb") / "backbone.pt")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    write_video(d / "a.mp4", 6.0, seed=1)  # 3 events at 2-s stride
    write_video(d / "b.mp4", 3.0, seed=2)  # 2 events (the last is half inside)
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return d


def expected_feature(backbone: Path, video: Path, center: float) -> np.ndarray:
    """The backbone on the clip cut by hand: the frames of VidSitu's window around ``center`` (30 fps
    here, so native = timeline frames), short side resized, PySlowFast's centre crop (ceil margins).
    Taken from the pipeline's own ``clip_uint8`` this passed with the extraction cropping anywhere."""
    import math

    from moviessl.video import VideoReader, normalize, resize_short_side

    model = build_from_checkpoint(backbone)
    T, s, c = INPUT["num_frames"], INPUT["stride"], INPUT["crop"]
    with VideoReader(video) as r:
        assert r.fps == pytest.approx(30.0)
        mid = int(math.floor(center * 30 + 1e-6))
        frames = r.get_frames(np.clip(np.arange(mid - T * s // 2, mid + T * s // 2, s), 0, r.num_frames - 1))
    frames = resize_short_side(frames, INPUT["short_side"])
    y, x = math.ceil((frames.shape[1] - c) / 2), math.ceil((frames.shape[2] - c) / 2)
    clip = torch.from_numpy(np.ascontiguousarray(frames[:, y : y + c, x : x + c].transpose(3, 0, 1, 2)))
    with torch.no_grad():
        return model(normalize(clip[None].float() / 255)).numpy()[0]


def run_extract(*args) -> int:
    return main(["extract", "--num-workers", "0", "--accelerator", "cpu", *map(str, args)])


def test_extract_resume_bad_video_and_values(backbone, videos, tmp_path, monkeypatch):
    out = tmp_path / "feats"
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out, "--batch-events", 2) == 0
    index = json.loads((out / "index.json").read_text())
    v = index["videos"]
    assert (
        v["a"]["status"] == "ok" and v["a"]["num_events"] == 3 and v["a"]["duration_s"] == pytest.approx(6.0, abs=0.05)
    )
    assert v["b"]["num_events"] == 2 and v["a"]["fps"] == pytest.approx(30.0)
    assert v["broken"]["status"] == "bad" and "broken.mp4" in v["broken"]["error"]
    assert index["counts"] == {"ok": 2, "bad": 1} and index["backbone"] == v["a"]["backbone"]
    assert index["input"] == INPUT and index["stride_s"] == 2.0
    assert not list(out.glob(".*"))  # no journals or temp files left
    a = np.load(out / "a_feats.npy")
    assert a.shape == (3, 16) and a.dtype == np.float32
    # event 2 (centre 5 s) equals the backbone on that clip (chunks of 2 events reassembled in order)
    np.testing.assert_allclose(a[2], expected_feature(backbone, videos / "a.mp4", 5.0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(a[0], a[2])
    store = FeatureStore(out)
    assert store.ids == ["a", "b"] and store.dim == 16 and store.load("b").shape == (2, 16)

    # resume: finished videos are skipped (the stream sees only the missing one)
    (out / "b_feats.npy").unlink()
    seen = []
    orig = ex.EventClipStream.__init__

    def spy(self, vids, *a, **k):
        seen.extend(v for v, _ in vids)
        orig(self, vids, *a, **k)

    monkeypatch.setattr(ex.EventClipStream, "__init__", spy)
    mtime = (out / "a_feats.npy").stat().st_mtime_ns
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out) == 0
    assert seen == ["b"]
    assert (out / "a_feats.npy").stat().st_mtime_ns == mtime and (out / "b_feats.npy").is_file()
    seen.clear()
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out, "--retry-bad") == 0
    assert seen == ["broken"]


def test_each_event_is_the_centred_crop_of_its_window(backbone, tmp_path):
    """On a background that changes across the frame, every event's feature is the backbone on the
    PySlowFast centre crop of its 2-s window (on the drifting square alone a conv net with global
    pooling hardly tells one crop from another, and a left crop passed the test above)."""
    d = tmp_path / "v"
    d.mkdir()
    write_video(d / "r.mp4", 4.0, seed=4, w=56, ramp=True)  # 32 x 49 after resizing: an odd margin
    out = tmp_path / "feats"
    assert run_extract("--backbone", backbone, "--videos", d, "--out", out) == 0
    f = np.load(out / "r_feats.npy")
    assert f.shape == (2, 16)
    for k, center in enumerate((1.0, 3.0)):
        np.testing.assert_allclose(f[k], expected_feature(backbone, d / "r.mp4", center), rtol=1e-4, atol=1e-5)
    # the check can tell crops apart: the left crop's feature is another
    from moviessl.video import VideoReader, normalize, resize_short_side

    with VideoReader(d / "r.mp4") as r:
        frames = r.get_frames(np.arange(30 - 16, 30 + 16, 8))
    left = torch.from_numpy(np.ascontiguousarray(resize_short_side(frames, 32)[:, :, :32].transpose(3, 0, 1, 2)))
    with torch.no_grad():
        other = build_from_checkpoint(backbone)(normalize(left[None].float() / 255)).numpy()[0]
    assert np.abs(other - f[0]).max() > 1e-3


def test_interrupted_run_keeps_finished_videos(backbone, videos, tmp_path, monkeypatch):
    """A job killed mid-way: finished videos are in the journal, no partial file is visible, the
    folder was claimed (a claim naming backbone and stride, no videos) so a rerun with another
    stride is refused, no index.json says the folder is done (what the demo and the stores go by:
    a reader is told to resume), and the rerun extracts only the rest and merges one index."""
    out = tmp_path / "feats"
    calls = {"n": 0}
    orig = ex.FeatureExtractor._record

    def record_then_die(self, vid, entry):
        orig(self, vid, entry)
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("killed")

    monkeypatch.setattr(ex.FeatureExtractor, "_record", record_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        ex.extract(backbone, videos, out, num_workers=0, accelerator="cpu")
    first = json.loads((out / ".index.rank0.jsonl").read_text().strip().splitlines()[0])["id"]
    claimed = json.loads((out / ".index.claim.json").read_text())
    assert claimed["videos"] == {} and claimed["stride_s"] == 2.0 and claimed["backbone"]
    assert not (out / "index.json").exists()
    with pytest.raises(BadInputError, match="did not finish .rerun the same extract command"):
        FeatureStore(out)
    with pytest.raises(BadInputError, match="stride_s"):  # killed before its first index: still never mixed
        ex.extract(backbone, videos, out, stride_s=1.0, num_workers=0, accelerator="cpu")
    with pytest.raises(BadInputError, match="dtype=float32, this run has float16"):  # nor float16 and float32
        ex.extract(backbone, videos, out, fp16=True, num_workers=0, accelerator="cpu")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    done = {p.name for p in out.glob("*_feats.npy")}
    assert done <= {f"{first}_feats.npy"}
    monkeypatch.setattr(ex.FeatureExtractor, "_record", orig)
    with open(out / ".index.rank0.jsonl", "a") as f:
        f.write('{"id": "torn')  # a torn last line of the killed job is ignored
    summary = ex.extract(backbone, videos, out, num_workers=0, accelerator="cpu")
    assert summary["counts"] == {"ok": 2, "bad": 1}
    assert sorted(json.loads((out / "index.json").read_text())["videos"]) == ["a", "b", "broken"]
    assert not (out / ".index.claim.json").exists() and FeatureStore(out).ids == ["a", "b"]
    with pytest.raises(BadInputError, match="stride_s"):  # never mix strides in one folder
        ex.extract(backbone, videos, out, stride_s=1.0, num_workers=0, accelerator="cpu")


def test_vidsitu_root_gives_five_events_and_contextualizer(backbone, tmp_path):
    from moviessl.models import build_txe

    root = tmp_path / "vidsitu"
    (root / "vsitu_video_trimmed_dir").mkdir(parents=True)
    write_video(root / "vsitu_video_trimmed_dir" / "v_abc_seg_05_15.mp4", 9.97, seed=3)
    torch.manual_seed(0)
    txe = build_txe("txe_cpu", in_dim=16, dim=32, heads=2, mlp_dim=64)
    ctx_ckpt = tmp_path / "txe.pt"
    save_checkpoint(
        ctx_ckpt,
        stage="context",
        arch=arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=16, dim=32, heads=2, mlp_dim=64),
        state_dict=txe.state_dict(),
        meta={"window": 5, "token_stride_s": 2.0, "in_dim": 16},
    )
    out = tmp_path / "out"
    assert (
        run_extract("--backbone", backbone, "--videos", root, "--out", out, "--fp16", "--contextualizer", ctx_ckpt) == 0
    )
    f = np.load(out / "v_abc_seg_05_15_feats.npy")
    assert f.shape == (5, 16) and f.dtype == np.float16
    np.testing.assert_allclose(
        f[4].astype(np.float32),
        expected_feature(backbone, root / "vsitu_video_trimmed_dir" / "v_abc_seg_05_15.mp4", 9.0),
        rtol=2e-2,
        atol=2e-3,
    )
    ctx = np.load(out / "v_abc_seg_05_15_ctx.npy")
    assert ctx.shape == (5, 32)
    with torch.no_grad():  # one window of 5 tokens: the TxE run on the whole clip
        want = txe.eval()(torch.from_numpy(f.astype(np.float32))[None])[0].numpy()
    np.testing.assert_allclose(ctx.astype(np.float32), want, rtol=2e-2, atol=3e-3)
    assert FeatureStore(out).load_ctx("v_abc_seg_05_15").shape == (5, 32)


def test_a_short_vidsitu_segment_marks_the_events_past_its_end_missing(backbone, tmp_path):
    """A VidSitu root always gives 5 events, but a segment that decodes only to 5 s (a truncated
    file, a frame folder whose last frames do not decode) gave events 4 and 5 (centres 7 and 9 s)
    the features of its last frames, unmarked: two copies of the end of event 3 that the VidSitu
    tasks trained on. An event whose centre lies past the end has no frames: a zero row marked
    missing, as a damaged stretch inside a video is (the rule that drops such an event elsewhere)."""
    root = tmp_path / "vidsitu" / "vsitu_video_trimmed_dir"
    root.mkdir(parents=True)
    write_video(root / "v_abc_seg_0_10.mp4", 5.0, seed=3)
    write_video(root / "v_def_seg_0_10.mp4", 9.0, seed=4)  # centre 9 s at its end: kept, as a 2-s stride keeps it
    out = tmp_path / "out"
    assert run_extract("--backbone", backbone, "--videos", root, "--out", out) == 0
    v = json.loads((out / "index.json").read_text())["videos"]
    assert v["v_abc_seg_0_10"]["missing"] == [[3, 5]] and v["v_abc_seg_0_10"]["missing_events"] == 2
    assert "missing" not in v["v_def_seg_0_10"]
    f = np.load(out / "v_abc_seg_0_10_feats.npy")
    assert f.shape == (5, 16) and not f[3:].any() and f[:3].any(axis=1).all()
    assert FeatureStore(out).missing("v_abc_seg_0_10").tolist() == [False, False, False, True, True]


def test_a_txe_of_another_backbones_features_is_said(backbone, tmp_path, caplog):
    """A TxE pretrained on one backbone's features (meta.backbone) applied to another's of the same
    width ran without a word (a CVRL TxE on MoDist features: outputs that mean little)."""
    import moviessl
    from moviessl.checkpoint import file_hash
    from moviessl.models import build_txe

    assert ex.other_backbone_note("t.pt", {"backbone": ["abc"]}, "abc", "x") is None
    assert ex.other_backbone_note("t.pt", {}, "abc", "x") is None  # a TxE that does not say
    assert ex.other_backbone_note("t.pt", {"backbone": ["abc"]}, None, "x") is None  # features that do not say
    note = ex.other_backbone_note("t.pt", {"backbone": ["abc"]}, "def", "src")
    assert note == "t.pt: TxE pretrained on features of backbone abc, applied to features of backbone def (src)"
    write_video(tmp_path / "v.mp4", 4.0, seed=1)
    arch = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=16, dim=32, heads=2, mlp_dim=64)
    state = build_txe("txe_cpu", in_dim=16, dim=32, heads=2, mlp_dim=64).state_dict()
    for made_on, said in ((file_hash(backbone), False), ("0123456789ab", True)):
        ctx = tmp_path / f"txe_{made_on}.pt"
        meta = {"window": 5, "token_stride_s": 2.0, "in_dim": 16, "backbone": [made_on]}
        save_checkpoint(ctx, stage="context", arch=arch, state_dict=state, meta=meta)
        caplog.clear()
        with caplog.at_level("WARNING", logger="moviessl"):
            assert run_extract("--backbone", backbone, "--videos", tmp_path / "v.mp4", "--out", tmp_path / made_on,
                               "--contextualizer", ctx) == 0  # fmt: skip
        assert ("TxE pretrained on features of backbone 0123456789ab" in caplog.text) is said, caplog.text
        caplog.clear()
        with caplog.at_level("WARNING", logger="moviessl"):  # the same check in the Python API
            moviessl.embed_video(tmp_path / "v.mp4", moviessl.load(backbone), ctx, device="cpu")
        assert ("TxE pretrained on features of backbone 0123456789ab" in caplog.text) is said, caplog.text


def test_a_vidsitu_root_without_its_annotations_is_not_pretrained_on_whole(backbone, tmp_path, caplog):
    """A VidSitu root extracted where its annotations are not (videos on scratch, annotations
    elsewhere) recorded no split without a word, and pretraining trusted the index: it pretrained on
    the val segment. The index says its splits are unknown, and pretraining treats it as VidSitu's
    released features without annotations."""
    import shutil

    from moviessl.context.pretrain import pretraining_ids

    vids = tmp_path / "scratch" / "vsitu_video_trimmed_dir"
    vids.mkdir(parents=True)
    ids = ["v_aaa_seg_0_10", "v_bbb_seg_0_10"]
    for i, v in enumerate(ids):
        write_video(vids / f"{v}.mp4", 10.0, seed=i)
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="moviessl.features"):
        assert run_extract("--backbone", backbone, "--videos", vids, "--out", out) == 0
    assert "no VidSitu splits for" in caplog.text and "--vidsitu-root" in caplog.text
    index = json.loads((out / "index.json").read_text())
    assert index["splits"] == "unknown" and not any("split" in e for e in index["videos"].values())
    pairs = [(0, v) for v in ids]
    why = r"2 VidSitu segment feature file\(s\) and no split information \(its extraction found no VidSitu annotations"
    with pytest.raises(BadInputError, match=why):
        pretraining_ids([FeatureStore(out)], pairs)
    ann = tmp_path / "home" / "vidsitu_annotations"
    (ann / "split_files").mkdir(parents=True)
    (ann / "split_files" / "vseg_split_train_lb.json").write_text(json.dumps(ids[:1]))
    (ann / "split_files" / "vseg_split_valid_lb.json").write_text(json.dumps(ids[1:]))
    assert pretraining_ids([FeatureStore(out)], pairs, tmp_path / "home") == pairs[:1]
    # the annotations beside the videos: a rerun, with nothing to extract, records the splits
    shutil.move(ann, tmp_path / "scratch")
    assert run_extract("--backbone", backbone, "--videos", vids, "--out", out) == 0
    index = json.loads((out / "index.json").read_text())
    assert "splits" not in index and [e["split"] for e in index["videos"].values()] == ["train", "valid"]
    assert pretraining_ids([FeatureStore(out)], pairs) == pairs[:1]


def test_a_vidsitu_folder_of_unknown_splits_stays_so_when_extended_with_other_videos(backbone, tmp_path, monkeypatch):
    """A VidSitu root extracted without its annotations, then extended with other videos (a dir, a
    list, one file): the extension's index lost ``"splits": "unknown"``, so pretraining trusted its
    segments as unlabelled videos and pretrained on val and test. Also when the first run was killed
    before its index (its claim said nothing of the splits)."""
    from moviessl.context.pretrain import pretraining_ids

    vids = tmp_path / "scratch" / "vsitu_video_trimmed_dir"
    vids.mkdir(parents=True)
    write_video(vids / "v_aaa_seg_0_10.mp4", 10.0, seed=1)
    other = write_video(tmp_path / "film.mp4", 3.0, seed=2)
    why = "no split information"
    out = tmp_path / "out"
    assert run_extract("--backbone", backbone, "--videos", vids, "--out", out) == 0
    assert run_extract("--backbone", backbone, "--videos", other, "--out", out) == 0
    index = json.loads((out / "index.json").read_text())
    assert sorted(index["videos"]) == ["film", "v_aaa_seg_0_10"] and index["splits"] == "unknown"
    with pytest.raises(BadInputError, match=why):
        pretraining_ids([FeatureStore(out)], [(0, "v_aaa_seg_0_10"), (0, "film")])

    killed = tmp_path / "killed"
    orig = ex.FeatureExtractor._record

    def die(self, vid, entry):
        orig(self, vid, entry)
        raise RuntimeError("killed")

    monkeypatch.setattr(ex.FeatureExtractor, "_record", die)
    with pytest.raises(RuntimeError, match="killed"):
        ex.extract(backbone, vids, killed, num_workers=0, accelerator="cpu")
    monkeypatch.setattr(ex.FeatureExtractor, "_record", orig)
    assert run_extract("--backbone", backbone, "--videos", other, "--out", killed) == 0
    assert json.loads((killed / "index.json").read_text())["splits"] == "unknown"
    with pytest.raises(BadInputError, match=why):
        pretraining_ids([FeatureStore(killed)], [(0, "v_aaa_seg_0_10"), (0, "film")])

    # a run of a root *with* its annotations, killed: its segments get their split only in index.json,
    # so the rerun of another layout cannot give them one either
    (tmp_path / "scratch" / "vidsitu_annotations" / "split_files").mkdir(parents=True)
    split = tmp_path / "scratch" / "vidsitu_annotations" / "split_files" / "vseg_split_valid_lb.json"
    split.write_text(json.dumps(["v_aaa_seg_0_10"]))
    known = tmp_path / "known"
    monkeypatch.setattr(ex.FeatureExtractor, "_record", die)
    with pytest.raises(RuntimeError, match="killed"):
        ex.extract(backbone, tmp_path / "scratch", known, num_workers=0, accelerator="cpu")
    monkeypatch.setattr(ex.FeatureExtractor, "_record", orig)
    assert run_extract("--backbone", backbone, "--videos", other, "--out", known) == 0
    assert json.loads((known / "index.json").read_text())["splits"] == "unknown"
    with pytest.raises(BadInputError, match=why):
        pretraining_ids([FeatureStore(known)], [(0, "v_aaa_seg_0_10"), (0, "film")])


def test_contextualize_windows():
    class Echo(torch.nn.Module):  # output = (position in window, first feature)
        def forward(self, x, mask=None, pad=None):
            pos = torch.arange(x.shape[1], dtype=x.dtype)[None, :, None].expand(x.shape[0], -1, 1)
            return torch.cat([pos, x[..., :1]], -1)

    feats = torch.arange(12, dtype=torch.float32)[:, None].repeat(1, 3)
    out = ex.contextualize(Echo(), feats, window=5, step=1)
    assert out[:, 1].tolist() == list(range(12))  # every event gets its own output
    assert out[:, 0].tolist() == [0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 4]  # as central as the video allows
    out2 = ex.contextualize(Echo(), feats, window=5, step=2)  # 2-s tokens from 1-s features
    assert out2[:, 1].tolist() == list(range(12)) and out2[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4]
    short = ex.contextualize(Echo(), feats[:3], window=5)
    assert short[:, 0].tolist() == [0, 1, 2]


def test_balanced_shards_split_by_size():
    # one film beside ten short clips: round-robin gives 10+5 vs 5, the size split 10 vs 10
    costs = [1, 1, 10, 1, 1, 1, 1, 1, 1, 1, 1]
    shards = ex.balanced_shards(costs, 2)
    assert shards == [[2], [0, 1, 3, 4, 5, 6, 7, 8, 9, 10]]
    assert ex.balanced_shards(costs, 2) == shards  # every rank computes the same split
    for world in (1, 3, 4, 16):
        split = ex.balanced_shards([5, 3, 3, 2, 2, 2, 0], world)
        assert sorted(i for s in split for i in s) == list(range(7)) and len(split) == world
    costs = [5, 3, 3, 2, 2, 2]  # best split 6/6/5; LPT's longest within 4/3 of that
    assert [sum(costs[i] for i in s) for s in ex.balanced_shards(costs, 3)] == [7, 5, 5]


def test_the_latest_journal_line_wins_whatever_rank_wrote_it(tmp_path):
    """A killed earlier run left rank 1's "bad" for x; this run's rank 0 wrote "ok" later. Merged by
    journal name, rank 1's stale line would win (and rank10 sorts before rank2); by time it does not."""
    (tmp_path / "index.json").write_text(json.dumps({"videos": {"x": {"status": "bad"}, "y": {"status": "ok"}}}))
    lines = {
        0: [ex.journal_line("x", {"status": "ok"})],
        1: ['{"id": "x", "t": 1.0, "status": "bad"}', '{"id": "z", "status": "bad"}', '{"id": "w", "t": "x"}'],
        2: ['{"id": "z", "status": "ok"}', '{"id": "q", "t": 5.0, "status": "ok"}', '{"id": "tor'],
        10: ['{"id": "q", "t": 9.0, "status": "bad"}'],
    }
    for r, ls in lines.items():
        (tmp_path / f".index.rank{r}.jsonl").write_text("\n".join(ls) + "\n")
    got = ex.read_entries(tmp_path)
    assert got == {"x": {"status": "ok"}, "y": {"status": "ok"}, "z": {"status": "ok"}, "q": {"status": "bad"}}
    assert json.loads(ex.journal_line("v", {"status": "ok"}))["t"] > 1.7e9  # seconds since the epoch


def test_spread_over_ranks_sets_apart_films_too_large_for_one_rank():
    assert ex.spread_over_ranks([1, 10, 1], 2) == [1]  # 10 of 12: one rank would do it all
    # then 4 of the 5 left, then the last one (a one-chunk video still lands whole on one rank)
    assert ex.spread_over_ranks([10, 4, 1], 2) == [0, 1, 2]
    assert ex.spread_over_ranks([10, 4, 1, 1, 1, 1], 2) == [0]  # the 4 clips share 8 evenly
    assert ex.spread_over_ranks([10, 9, 1], 2) == [] and ex.spread_over_ranks([5, 5], 2) == []  # even already
    assert ex.spread_over_ranks([3, 3, 3], 8) == [0, 1, 2]  # fewer films than ranks: every one
    assert ex.spread_over_ranks([10, 1], 1) == [] and ex.spread_over_ranks([], 4) == []
    assert ex.spread_over_ranks([1] * 100, 8) == []  # many clips: whole videos, as before


@pytest.mark.parametrize("bad", [0, -5, float("inf"), 1e12])
def test_ddp_timeout_is_checked_before_any_work(tmp_path, bad):
    with pytest.raises(BadInputError, match="--ddp-timeout-s: must be positive and below"):
        ex.extract(tmp_path / "none.pt", tmp_path / "none", tmp_path / "out", ddp_timeout_s=bad)


@pytest.mark.parametrize("stride", ["nan", "inf", "-inf", "0", "-2"])
def test_a_stride_that_is_not_a_finite_positive_number_is_one_line_before_any_work(
    backbone, videos, tmp_path, capsys, stride
):
    """NaN and inf passed the `<= 0` check: a traceback once decoding began, and a folder claimed
    with stride NaN refused every rerun with the same flag (NaN never equals NaN)."""
    out = tmp_path / "out"
    argv = ["extract", "--num-workers", "0", "--accelerator", "cpu", "--backbone", backbone, "--videos", videos]
    assert main([*map(str, argv), "--out", str(out), f"--stride={stride}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--stride: must be a finite number of seconds > 0" in err[0], err
    assert not out.exists()


LAUNCH_TYPOS = [
    (["--accelerator", "gpux"], "--accelerator: 'gpux' is not an accelerator"),
    (["--precision", "half"], "--precision: 'half' is not a precision"),
    (["--devices", "abc"], "--devices: 'abc': give a count"),
    (["--devices", "[2,"], r"--devices: '\[2,': give a count"),
    (["--devices", "0"], "--devices: 0: give a count"),
    (["--num-nodes", "0"], "--num-nodes: must be an integer >= 1"),
    (["--accelerator", "cpu", "--devices", "-1"], "--devices: '-1': a CPU run takes a process count"),
    (["--accelerator", "cpu", "--devices", "[0]"], r"--devices: \[0\]: a CPU run takes a process count"),
]


@pytest.mark.parametrize("args, line", LAUNCH_TYPOS)
def test_machine_settings_lightning_refuses_are_one_line_before_any_work(
    backbone, videos, tmp_path, capsys, args, line
):
    """Lightning refused these only when the trainer was built, after the videos were indexed and
    index.json written, with a traceback; the CLI parsed a broken JSON list with one too."""
    out = tmp_path / "out"
    assert main(["extract", "--backbone", str(backbone), "--videos", str(videos), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(rf"moviessl: error: {line}", err[0]), err
    assert not out.exists()


def test_a_backbone_with_nan_weights_is_one_line_naming_it_not_every_video_bad(backbone, videos, tmp_path, capsys):
    """NaN weights (a diverged run's) loaded without a word: every event's features were NaN, each
    video was listed as "no event decodes (all damaged)" and the job ended on "none of the videos
    could be used", a fault of the videos it did not have."""
    from moviessl.checkpoint import load_checkpoint

    obj = load_checkpoint(backbone, stage="backbone")
    sd = dict(obj["state_dict"])
    first = next(k for k, v in sd.items() if v.is_floating_point())
    sd[first] = sd[first] * float("nan")
    bad = save_checkpoint(tmp_path / "nan.pt", stage="backbone", arch=obj["arch"], state_dict=sd, meta=obj["meta"])
    out = tmp_path / "out"
    assert main(["extract", "--backbone", str(bad), "--videos", str(videos), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"moviessl: error: {bad}: 1 weight tensor(s) hold NaN/inf"), err
    assert f"(first: {first})" in err[0] and not (out / "index.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_asked_for_on_a_machine_without_one_is_one_line_before_any_work(backbone, videos, tmp_path, accelerator):
    with pytest.raises(BadInputError, match=rf"^--accelerator: {accelerator}: torch sees no GPU on this machine"):
        ex.extract(backbone, videos, tmp_path / "out", accelerator=accelerator)
    assert not (tmp_path / "out").exists()
    # a trainer built without the check first: Lightning's reason, in one line
    from moviessl.training import lightning_trainer

    with pytest.raises(BadInputError, match=rf"^Lightning cannot run accelerator={accelerator} devices=1: \S"):
        lightning_trainer(accelerator=accelerator, devices=1, logger=False)


def test_source_bytes(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x" * 7)
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(3):
        (frames / f"{k:06d}.jpg").write_bytes(b"y" * 4)
    assert ex.source_bytes(tmp_path / "a.mp4") == 7 and ex.source_bytes(frames) == 3 * ex.FRAME_BYTES
    assert ex.source_bytes(tmp_path / "gone.mp4") == 0  # fails when opened, where it is reported


def test_find_videos_layouts(tmp_path):
    lvu = tmp_path / "lvu"
    (lvu / "videos").mkdir(parents=True)
    (lvu / "videos" / "yt1.mp4").write_bytes(b"x")
    vids, layout = ex.find_videos(lvu)
    assert layout == "lvu" and vids == [("yt1", lvu / "videos" / "yt1.mp4")]
    frames = tmp_path / "vs" / "vsitu_frames" / "v_1"
    frames.mkdir(parents=True)
    (frames / "v_1_000001.jpg").write_bytes(b"x")
    assert ex.find_videos(tmp_path / "vs") == ([("v_1", frames)], "vidsitu")
    lst = tmp_path / "list.txt"
    lst.write_text("lvu/videos/yt1.mp4 3\n")
    assert ex.find_videos(lst)[0] == [("yt1", (lvu / "videos" / "yt1.mp4").resolve())]
    # one film's frame folder is that film, as `probe` and the reader take it (it was "no videos found",
    # after a warning that its frames were left out)
    assert ex.find_videos(frames) == ([("v_1", frames)], "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no videos"):
        ex.find_videos(tmp_path / "empty")


def test_a_list_names_frame_folders_as_a_folder_scan_does(tmp_path):
    """A list file cut a frame folder's name at its last dot ('tt0111161.shot1' -> 'tt0111161'),
    a folder scan kept it whole: one folder had two ids, and two shots of a film listed together
    were refused as sharing one."""
    frames = tmp_path / "frames"
    names = ["tt0111161.shot1", "tt0111161.shot2"]
    for name in names:
        (frames / name).mkdir(parents=True)
        (frames / name / f"{name}_000001.jpg").write_bytes(b"x")
    (tmp_path / "clip.v2.mp4").write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("frames/tt0111161.shot1\nframes/tt0111161.shot2\nclip.v2.mp4\n")
    assert [v for v, _ in ex.find_videos(frames)[0]] == names
    assert [v for v, _ in ex.find_videos(lst)[0]] == [*names, "clip.v2"]


def test_find_videos_reads_any_video_and_names_what_a_scan_leaves_out(tmp_path, caplog):
    d = tmp_path / "films"
    d.mkdir()
    (d / "a.m4v").write_bytes(b"\x00\x00\x00\x18ftypM4V ")
    (d / "b.ts").write_bytes(b"\x47\x40\x00\x10")
    (d / "c.dv").write_bytes(b"\x1f\x07\x00\x3f\xff")
    (d / "notes.txt").write_text("c.dv\n")
    with caplog.at_level("WARNING", logger="moviessl.features"):
        assert ex.find_videos(d) == ([("a", d / "a.m4v"), ("b", d / "b.ts")], "dir")
    assert "2 files without a video extension left out (first: c.dv)" in caplog.text
    # one named file: a video whatever its extension, unless it reads as a list
    assert ex.find_videos(d / "c.dv") == ([("c", d / "c.dv")], "file")
    assert ex.find_videos(d / "notes.txt") == ([("c", (d / "c.dv").resolve())], "list")


def test_a_folder_scan_names_the_subfolders_of_videos_it_leaves_out(tmp_path, caplog):
    """`extract --videos my_movies` with films in `my_movies/season 1/` and `my_movies/s2/` extracted
    the top-level film alone and said nothing of the others (a file it left out is named)."""
    d = tmp_path / "my movies"
    for sub in ("season 1", "s2", "emb"):
        (d / sub).mkdir(parents=True)
    (d / "TOP.MP4").write_bytes(b"")
    (d / "season 1" / "ep1.mp4").write_bytes(b"")
    (d / "s2" / "ep1.mkv").write_bytes(b"")
    np.save(d / "emb" / "TOP_feats.npy", np.zeros((1, 2), np.float32))  # features written beside: not videos
    with caplog.at_level("WARNING", logger="moviessl.features"):
        assert ex.find_videos(d) == ([("TOP", d / "TOP.MP4")], "dir")
    assert "2 subfolders of videos left out (first: s2): a folder is read one level deep" in caplog.text
    assert "emb" not in caplog.text
    caplog.clear()
    (d / "TOP.MP4").unlink()
    with caplog.at_level("WARNING", logger="moviessl.features"), pytest.raises(BadInputError, match="no videos found"):
        ex.find_videos(d)
    assert "2 subfolders of videos left out" in caplog.text


def test_loaded_features_hold_no_open_file(tmp_path):
    """A task keeps every segment's features (VidSitu: ~29k files): a loaded array must be a copy,
    not a view of a memory map holding a file descriptor each (the limit is often 1024)."""
    import os

    d = tmp_path / "feats"
    d.mkdir()
    for i in range(300):
        np.save(d / f"v_{i}_feats.npy", np.full((5, 8), i, np.float32))
    s = FeatureStore(d)
    before = len(os.listdir("/proc/self/fd"))
    kept = [s.load(f"v_{i}") for i in range(300)]
    assert len(os.listdir("/proc/self/fd")) - before < 10
    assert all(not isinstance(a, np.memmap) and a.base is None and a[0, 0] == i for i, a in enumerate(kept))
    assert isinstance(s.load("v_3", mmap=True), np.memmap)


def test_a_feature_file_given_as_the_feature_folder_is_said_to_be_one(tmp_path):
    """`pretrain-context --features emb/film_feats.npy` (one film's features, not their folder) was
    "feature folder not found", though the file is there."""
    f = tmp_path / "emb" / "big buck bunny_feats.npy"
    f.parent.mkdir()
    np.save(f, np.zeros((3, 8), np.float32))
    with pytest.raises(BadInputError, match=r"bunny_feats\.npy: is a file, not a feature folder: give the folder"):
        FeatureStore(f)
    with pytest.raises(BadInputError, match=r"nope: feature folder not found"):
        FeatureStore(tmp_path / "nope")


def test_featurestore_vidsitu_folder(tmp_path):
    d = tmp_path / "vsitu_vid_feats" / "slow_fast"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(d / f"v_{i}_feats.npy", rng.normal(size=(5, 2304)).astype(np.float32))
    s = FeatureStore(d)
    assert s.ids == ["v_0", "v_1", "v_2"] and s.dim == 2304 and s.stride_s == 2.0 and len(s) == 3
    assert s.load("v_1").shape == (5, 2304) and s.num_events("v_1") == 5
    np.save(d / "v_bad_feats.npy", np.zeros((4, 2304), np.float32))
    np.save(d / "v_dim_feats.npy", np.zeros((5, 2048), np.float32))
    (d / "v_junk_feats.npy").write_bytes(b"not numpy")
    (d / "v_empty_feats.npy").write_bytes(b"")  # a copy that died before its first byte
    s = FeatureStore(d)
    for bad, why in (("v_bad", "shape"), ("v_dim", "shape"), ("v_junk", "not a .npy file"), ("v_empty", "empty")):
        with pytest.raises(BadInputError, match=why) as e:
            s.load(bad)
        assert f"{bad}_feats.npy" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(BadInputError, match="no \\*_feats.npy"):
        FeatureStore(tmp_path)
    # the MaskPred windows skip (and count) the bad files
    from moviessl.context.windows import FeatureWindows

    w = FeatureWindows([s])
    assert len(w) == 3 and w.num_bad == 4 and w[0]["x"].shape == (5, 2304)
    # one odd file sorted first (it set D for the whole folder and rejected every other file)
    np.save(d / "v_00_feats.npy", np.zeros((5, 128), np.float32))
    s = FeatureStore(d)
    assert s.dim == 2304 and s.load("v_2").shape == (5, 2304)
    with pytest.raises(BadInputError, match="shape"):
        s.load("v_00")


def test_a_float64_feature_beyond_float32s_range_is_refused_not_read_as_inf(tmp_path):
    """A float64 file (features written by another tool) passed the finiteness check with a value
    float32 cannot hold, and ``load`` handed back an inf: the NaN/inf the check is there to stop."""
    a = np.ones((5, 8))
    a[2, 3] = 1e300
    np.save(tmp_path / "v_big_feats.npy", a)
    np.save(tmp_path / "v_ok_feats.npy", np.full((5, 8), 1e30))  # large, but within float32's range
    s = FeatureStore(tmp_path, num_events=None)
    assert np.isfinite(s.load("v_ok")).all()
    why = r"v_big_feats.npy: 1 non-finite .*beyond float32's range.*event 2, dim 3"
    for mmap in (False, True):
        with pytest.raises(BadInputError, match=why):
            s.load("v_big", mmap=mmap)


def test_released_features_are_opened_once_each_for_a_task(tmp_path, monkeypatch):
    """A VidSitu task reads every segment's features, then its damaged events (``missing``): in a
    folder without an index (VidSitu's released ~29k files) the second look opened each file again
    only to count its rows. N segments now cost N opens, and the rows and masks are as before."""
    from moviessl.features import store as store_mod
    from moviessl.tasks.vidsitu.data import feature_source

    d = tmp_path / "vsitu_vid_feats" / "slow_fast"
    d.mkdir(parents=True)
    ids = [f"v_{i:03d}_seg_0_10" for i in range(40)]
    for i, v in enumerate(ids):
        np.save(d / f"{v}_feats.npy", np.full((5, 8), i, np.float32))
    s = FeatureStore(d)
    opened = []
    real = store_mod.np.load

    def load(path, *a, **k):
        opened.append(Path(path).name)
        return real(path, *a, **k)

    monkeypatch.setattr(store_mod.np, "load", load)
    x, kept, bad = feature_source(s)(ids)
    assert kept == ids and not bad and x.shape == (40, 5, 8) and float(x[7, 0, 0]) == 7.0
    assert len(opened) == len(ids), len(opened)  # (each file twice before)
    assert not s.missing(ids[3]).any() and len(s.missing(ids[3])) == 5 and len(opened) == len(ids)


def test_a_run_looks_for_partial_results_with_one_listing(tmp_path, monkeypatch):
    """Every extract run looked for an interrupted run's chunks of each video to do with a stat of
    ``.partial/{id}`` (a fresh Kinetics folder: 240k lookups of paths that are not there); one
    listing of ``.partial`` now says which videos have some, and those are read as before."""
    out, src = tmp_path / "out", tmp_path / "videos"
    src.mkdir()
    todo = []
    for i in range(300):
        (src / f"v{i}.mp4").write_bytes(b"x" * (i + 1))
        todo.append((f"v{i}", src / f"v{i}.mp4"))
    plan = {"chunk_events": 64, "batch_events": 16, "precision": "32-true"}
    for i in (7, 123):
        d = ex.partial_dir(out, f"v{i}")
        d.mkdir(parents=True)
        (d / "plan.json").write_text(json.dumps({**plan, **ex._source_stamp(src / f"v{i}.mp4"), "num_events": 200}))
        (d / "c000001.npz").write_bytes(b"")
    looked = []
    real = Path.is_dir
    monkeypatch.setattr(Path, "is_dir", lambda self: looked.append(self.name) or real(self))
    done = ex.scan_partials(out, todo, plan)
    assert done == {"v7": {"num_events": 200, "chunks": [1]}, "v123": {"num_events": 200, "chunks": [1]}}
    assert len(looked) <= 2, len(looked)  # (a stat per video before: 300)


def test_txe_outputs_still_to_make_are_found_with_one_listing(tmp_path, monkeypatch):
    """Every extract run with --contextualizer looked for each good video's {id}_ctx.npy with a stat
    of its own (a Kinetics folder: 240k); one listing of the folder says which are there, and only
    those missing are made."""
    out = tmp_path / "out"
    out.mkdir()
    entries = {f"v{i}": {"status": "ok", "num_events": 3} for i in range(200)}
    entries["v_bad"] = {"status": "bad"}
    for i in range(200):
        np.save(out / f"v{i}_feats.npy", np.zeros((3, 4), np.float32))
        if i != 42:
            np.save(out / f"v{i}{ex.CTX_SUFFIX}", np.zeros((3, 4), np.float32))
    made, looked = [], []
    monkeypatch.setattr(ex, "_fill_one_ctx", lambda out, vid, *a: made.append(vid))
    real = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda self: looked.append(self.name) or real(self))
    ex._fill_ctx(out, entries, txe=None, window=5, step=1, dtype="float32")
    assert made == ["v42"]
    assert len(looked) <= 2, len(looked)  # (a stat per good video before: 200)


def test_python_api_embeds_like_extract(backbone, videos, tmp_path):
    """moviessl.embed_video (the notebook API) gives what `moviessl extract` writes, ctx included."""
    import moviessl
    from moviessl.models import build_txe

    torch.manual_seed(1)
    kw = dict(preset="txe_cpu", in_dim=16, dim=32, heads=2, mlp_dim=64)
    ctx_ckpt = save_checkpoint(
        tmp_path / "txe.pt",
        stage="context",
        arch=arch_spec("moviessl.models.txe:build_txe", **kw),
        state_dict=build_txe(**kw).state_dict(),
        meta={"window": 5, "token_stride_s": 2.0, "in_dim": 16},
    )
    out = tmp_path / "out"
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out, "--contextualizer", ctx_ckpt) == 0
    bb = moviessl.load(backbone)
    assert bb.stage == "backbone" and not bb.model.training and bb.meta["input"] == INPUT
    emb = moviessl.embed_video(videos / "a.mp4", bb, ctx_ckpt, device="cpu")
    assert emb.centers_s == [1.0, 3.0, 5.0] and emb.feats.shape == (3, 16) and emb.ctx.shape == (3, 32)
    np.testing.assert_allclose(emb.feats, np.load(out / "a_feats.npy"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb.ctx, np.load(out / "a_ctx.npy"), rtol=1e-5, atol=1e-6)
    with pytest.raises(BadInputError, match="expected backbone"):
        moviessl.embed_video(videos / "a.mp4", ctx_ckpt)


def test_python_api_refuses_bad_arguments_and_a_film_of_which_nothing_decodes(backbone, videos, monkeypatch):
    import moviessl

    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_events must be a positive integer"):
            moviessl.embed_video(videos / "a.mp4", backbone, batch_events=bad, device="cpu")
    for bad in (0.0, -2.0, float("nan"), float("inf"), "2"):
        with pytest.raises(ValueError, match="stride_s must be a positive, finite number"):
            moviessl.embed_video(videos / "a.mp4", backbone, stride_s=bad, device="cpu")
    # every event damaged: `moviessl extract` marks the film bad; the API said so only in `missing`
    damaged = (np.zeros((3, 4, 32, 32), np.uint8), True)
    monkeypatch.setattr(ex, "event_clip", lambda r, c, inp, timing=None, later=(): damaged)
    with pytest.raises(BadInputError, match="no event decodes \\(3 events, all damaged\\)") as e:
        moviessl.embed_video(videos / "a.mp4", backbone, device="cpu")
    assert "a.mp4" in str(e.value)


def test_channels_last_extraction_gives_the_same_features(backbone, videos, tmp_path):
    plain, fast = tmp_path / "plain", tmp_path / "fast"
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", plain) == 0
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", fast, "--channels-last") == 0
    for vid in ("a", "b"):
        np.testing.assert_allclose(np.load(fast / f"{vid}_feats.npy"), np.load(plain / f"{vid}_feats.npy"), atol=1e-5)


def test_squash_extraction_reads_the_whole_frame(backbone, videos, tmp_path, capsys):
    """--resize squash (VidSitu's loader): every event's clip is the whole frame resized to crop x crop;
    the folder records it, and a rerun with the other geometry into it is refused."""
    out = tmp_path / "sq"
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out, "--resize", "squash") == 0
    assert json.loads((out / "index.json").read_text())["input"]["resize"] == "squash"
    model = build_from_checkpoint(backbone)
    from moviessl.video import VideoReader, normalize, read_clip, squash_resize

    with VideoReader(videos / "a.mp4") as r:
        frames = read_clip(r, 1.0, INPUT["num_frames"], INPUT["stride"])
    clip = torch.from_numpy(np.ascontiguousarray(squash_resize(frames, INPUT["crop"]).transpose(3, 0, 1, 2)))
    with torch.no_grad():
        want = model(normalize(clip[None].float() / 255)).numpy()[0]
    np.testing.assert_allclose(np.load(out / "a_feats.npy")[0], want, atol=1e-5)
    with VideoReader(videos / "a.mp4") as r:  # the pipeline's own clip: squashed, not cropped
        sq, cr = ex.clip_uint8(r, 1.0, {**INPUT, "resize": "squash"}), ex.clip_uint8(r, 1.0, INPUT)
    assert np.array_equal(sq, clip.numpy()) and not np.array_equal(sq, cr)
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out) == 2
    assert "--resize squash" in capsys.readouterr().err


def test_embed_video_runs_where_the_callers_model_is():
    """device=None took GPU 0 whatever the caller had done: a notebook's model on cuda:1 was moved
    to GPU 0 for the call and back. A model off the CPU now runs where it is; an explicit device
    wins; a CPU model goes to the GPU when there is one, as before."""
    from moviessl.api import _call_device

    there = torch.nn.Linear(2, 2, device="meta")  # (a device other than the CPU, as cuda:1 would be)
    assert _call_device(there, None) == torch.device("meta")
    assert _call_device(there, "cpu") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert _call_device(torch.nn.Linear(2, 2), None) == torch.device(want)
    assert _call_device(torch.nn.Identity(), None) == torch.device(want)


def test_a_folder_an_older_version_left_unclaimed_keeps_its_backbone(backbone, videos, tmp_path):
    """A first run killed by a version from before folders were claimed left its features and
    journals, no claim or index. A rerun with another backbone extracted the rest with it and kept
    the old videos' features, one folder of two backbones' features under the new one's name; it
    is now the one line a claimed folder gives, before any work."""
    out = tmp_path / "feats"
    out.mkdir()
    np.save(out / "a_feats.npy", np.zeros((3, 16), np.float32))
    line = {"id": "a", "backbone": "0123456789ab", "status": "ok", "num_events": 3, "fps": 30.0, "duration_s": 6.0}
    (out / ".index.rank0.jsonl").write_text(json.dumps(line) + "\n")  # that version's lines had no "t"
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out) == 2
    assert not (out / "b_feats.npy").exists() and not (out / "index.json").exists()
    line["backbone"] = ex.file_hash(backbone)  # the same backbone resumes it
    (out / ".index.rank0.jsonl").write_text(json.dumps(line) + "\n")
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out) == 0
    assert sorted(FeatureStore(out).ids) == ["a", "b"]


def test_a_verb_tuned_backbone_is_read_with_the_geometry_it_was_tuned_on(backbone, videos, tmp_path, caplog):
    """A backbone fine-tuned on squashed frames (``finetune vidsitu --task verb`` in the paper
    preset, recorded as ``meta.tuned_resize``) was extracted and embedded centre-cropped unless
    --resize squash was given: a geometry it never saw, silently. Its mode is now the default of
    extract and embed_video; another mode given explicitly is warned about."""
    import moviessl

    obj = torch.load(backbone, weights_only=False)
    obj["meta"]["tuned_resize"] = "squash"
    tuned = tmp_path / "tuned.pt"
    torch.save(obj, tuned)
    run = dict(num_workers=0, accelerator="cpu", progress=False)
    ex.extract(tuned, videos, tmp_path / "default", **run)
    ex.extract(backbone, videos, tmp_path / "squash", resize="squash", **run)
    assert json.loads((tmp_path / "default" / "index.json").read_text())["input"]["resize"] == "squash"
    np.testing.assert_array_equal(
        np.load(tmp_path / "default" / "a_feats.npy"), np.load(tmp_path / "squash" / "a_feats.npy")
    )
    with caplog.at_level("WARNING", logger="moviessl.features"):
        ex.extract(tuned, videos, tmp_path / "crop", resize="crop", **run)
    assert "was fine-tuned on squash frames; --resize crop reads it another way" in caplog.text
    assert "resize" not in json.loads((tmp_path / "crop" / "index.json").read_text())["input"]
    emb = moviessl.embed_video(videos / "a.mp4", tuned, device="cpu")
    np.testing.assert_allclose(emb.feats, np.load(tmp_path / "squash" / "a_feats.npy"), atol=1e-5)
    crop = moviessl.embed_video(videos / "a.mp4", tuned, device="cpu", resize="crop")
    np.testing.assert_allclose(crop.feats, np.load(tmp_path / "crop" / "a_feats.npy"), atol=1e-5)
    with pytest.raises(ValueError, match="resize must be crop, squash or None"):
        moviessl.embed_video(videos / "a.mp4", tuned, device="cpu", resize="pad")


def test_another_contextualizer_killed_midway_leaves_no_mix_of_two(backbone, videos, tmp_path, monkeypatch):
    """--contextualizer B on a folder made with A: the index stops naming A before the first output
    is replaced (A's go), so a kill midway leaves only B's outputs, under no TxE's name (B pending);
    the rerun makes the rest, as a fresh folder with B has them."""
    a, b = save_txe(tmp_path / "a.pt", 1), save_txe(tmp_path / "b.pt", 2)
    run = dict(num_workers=0, accelerator="cpu")
    fresh, out = tmp_path / "fresh", tmp_path / "out"
    ex.extract(backbone, videos, fresh, contextualizer=b, **run)
    ex.extract(backbone, videos, out, contextualizer=a, **run)
    real, made = ex._fill_one_ctx, []

    def killed_after_one(out_dir, vid, *args):
        if made:
            raise KeyboardInterrupt
        made.append(vid)
        real(out_dir, vid, *args)

    monkeypatch.setattr(ex, "_fill_one_ctx", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        ex.extract(backbone, videos, out, contextualizer=b, **run)
    index = json.loads((out / "index.json").read_text())
    assert index["contextualizer"] is None and index["ctx_pending"]["hash"] == ex.file_hash(b)
    assert sorted(p.name for p in out.glob("*_ctx.npy")) == [f"{made[0]}_ctx.npy"]
    np.testing.assert_array_equal(np.load(out / f"{made[0]}_ctx.npy"), np.load(fresh / f"{made[0]}_ctx.npy"))
    monkeypatch.setattr(ex, "_fill_one_ctx", real)
    ex.extract(backbone, videos, out, contextualizer=b, **run)
    index = json.loads((out / "index.json").read_text())
    assert index["contextualizer"]["hash"] == ex.file_hash(b) and "ctx_pending" not in index
    for vid in ("a", "b"):
        np.testing.assert_array_equal(np.load(out / f"{vid}_ctx.npy"), np.load(fresh / f"{vid}_ctx.npy"))


def save_txe(path: Path, seed: int = 0) -> Path:
    """A tiny random TxE reading the 16-d features of :func:`save_backbone` (32-d outputs)."""
    from moviessl.models import build_txe

    torch.manual_seed(seed)
    kw = dict(preset="txe_cpu", in_dim=16, dim=32, heads=2, mlp_dim=64)
    return save_checkpoint(
        path,
        stage="context",
        arch=arch_spec("moviessl.models.txe:build_txe", **kw),
        state_dict=build_txe(**kw).state_dict(),
        meta={"window": 5, "token_stride_s": 2.0, "in_dim": 16},
    )


def test_python_api_contextualizes_with_the_loaded_module_not_its_file_again(backbone, videos, tmp_path):
    """A Loaded TxE was read from its path again: a later run's model.pt there was used instead of
    the module in hand, and a Loaded without a path failed deep inside (Path(None))."""
    import moviessl

    path = save_txe(tmp_path / "txe.pt", seed=0)
    txe = moviessl.load(path)
    before = moviessl.embed_video(videos / "a.mp4", backbone, path, device="cpu").ctx
    save_txe(path, seed=1)  # a rerun writes another TxE to the same file
    np.testing.assert_array_equal(moviessl.embed_video(videos / "a.mp4", backbone, txe, device="cpu").ctx, before)
    own = moviessl.Loaded(txe.model, "context", txe.meta)  # built in a notebook: no file at all
    np.testing.assert_array_equal(moviessl.embed_video(videos / "a.mp4", backbone, own, device="cpu").ctx, before)
    with pytest.raises(BadInputError, match="stage 'context', expected backbone"):
        moviessl.embed_video(videos / "a.mp4", txe, txe, device="cpu")


def test_a_folder_with_txe_outputs_is_extended_only_with_its_contextualizer(backbone, tmp_path, capsys):
    """A rerun without --contextualizer that would add videos to a folder made with one is one line
    (it added them without {id}_ctx.npy while the index still named the TxE, and LVU's
    ``--scene-kind auto`` then stopped on the first of them); with the TxE it adds both files."""
    vids, out, txe = tmp_path / "vids", tmp_path / "out", save_txe(tmp_path / "txe.pt")
    vids.mkdir()
    write_video(vids / "a.mp4", 6.0, seed=1)
    assert run_extract("--backbone", backbone, "--videos", vids, "--out", out, "--contextualizer", txe) == 0
    before = json.loads((out / "index.json").read_text())
    write_video(vids / "b.mp4", 4.0, seed=2)
    capsys.readouterr()
    assert run_extract("--backbone", backbone, "--videos", vids, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "--contextualizer" in err and str(txe) in err
    assert not (out / "b_feats.npy").exists() and json.loads((out / "index.json").read_text()) == before
    assert run_extract("--backbone", backbone, "--videos", vids, "--out", out) == 2  # nothing was claimed meanwhile
    assert run_extract("--backbone", backbone, "--videos", vids, "--out", out, "--contextualizer", txe) == 0
    store = FeatureStore(out)
    assert store.ids == ["a", "b"] and store.index["contextualizer"]["hash"] == ex.file_hash(txe)
    assert store.load_ctx("b").shape == (2, 32) and store.load_ctx("a").shape == (3, 32)
    # a rerun with nothing to extract needs no TxE: the folder and its index stay as they are
    assert run_extract("--backbone", backbone, "--videos", vids, "--out", out) == 0
    assert json.loads((out / "index.json").read_text())["contextualizer"]["hash"] == ex.file_hash(txe)


def test_a_re_extracted_video_keeps_no_outputs_of_its_old_features(backbone, tmp_path, monkeypatch):
    """A video made again (its features deleted to force it; here a longer download) must not keep
    the TxE outputs of the old features: a job killed after its new features and before its new
    outputs kept the old {id}_ctx.npy, which the rerun then took as done (as the old index entry)."""
    vids, out, txe = tmp_path / "vids", tmp_path / "out", save_txe(tmp_path / "txe.pt")
    vids.mkdir()
    write_video(vids / "a.mp4", 6.0, seed=1)
    write_video(vids / "b.mp4", 4.0, seed=2)
    run = dict(num_workers=0, accelerator="cpu", contextualizer=txe, progress=False)
    ex.extract(backbone, vids, out, **run)
    assert np.load(out / "a_ctx.npy").shape == (3, 32)
    write_video(vids / "a.mp4", 10.0, seed=7)
    (out / "a_feats.npy").unlink()

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    real = ex.save_ctx
    monkeypatch.setattr(ex, "save_ctx", killed)
    with pytest.raises(RuntimeError, match="killed"):
        ex.extract(backbone, vids, out, **run)
    assert np.load(out / "a_feats.npy").shape == (5, 16) and not (out / "a_ctx.npy").exists()
    assert (out / "b_ctx.npy").is_file()  # a video not made again keeps its outputs
    monkeypatch.setattr(ex, "save_ctx", real)
    ex.extract(backbone, vids, out, **run)
    store = FeatureStore(out)
    assert store.num_events("a") == 5 and store.load("a").shape == (5, 16) and store.load_ctx("a").shape == (5, 32)


def test_load_ctx_refuses_outputs_that_do_not_fit_the_features(backbone, videos, tmp_path):
    """``load_ctx`` read any {id}_ctx.npy: one of other features (another number of events), of
    another TxE's width, with NaN, or no array at all is one line naming the file."""
    out, txe = tmp_path / "out", save_txe(tmp_path / "t.pt")
    ex.extract(backbone, videos, out, num_workers=0, accelerator="cpu", contextualizer=txe, progress=False)
    store, path = FeatureStore(out), out / "a_ctx.npy"
    good = np.load(path)
    assert good.shape == (3, 32) and np.array_equal(store.load_ctx("a"), good.astype(np.float32))
    for bad, match in [
        (good[:2], "2 rows for the 3 events of a_feats.npy"),
        (np.zeros((3, 8), np.float32), "8-d outputs, the index's contextualizer gives 32-d"),
        (np.where(np.arange(32) == 4, np.nan, good).astype(np.float32), "non-finite.*event 0, dim 4"),
        (np.zeros((3, 32), np.int64), "expected a float"),
    ]:
        np.save(path, bad)
        with pytest.raises(BadInputError, match=match) as e:
            store.load_ctx("a")
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    path.write_bytes(b"not an array")
    with pytest.raises(BadInputError, match="unreadable TxE outputs"):
        store.load_ctx("a")


def test_a_second_job_on_one_folder_is_refused_and_a_dead_ones_lock_is_not(backbone, videos, tmp_path, capsys):
    """Two jobs writing one --out: the end of the first removed the second's journal, temp files and
    committed chunks of its film (what it takes for a killed run's). The folder's lock, held by a
    running job, refuses another in one line that touches nothing; the lock file a killed job
    leaves (the kernel dropped its lock) stops no one, and a finished job removes it."""
    out = tmp_path / "out"
    out.mkdir()
    # the other job, mid-film: a committed chunk, a feature file being written, a journalled video
    (out / ".partial" / "film").mkdir(parents=True)
    (out / ".partial" / "film" / "plan.json").write_text("{}")
    (out / ".film_feats.npy.abc123.tmp").write_bytes(b"in flight")
    ex.append_line(out / ".index.rank0.jsonl", ex.journal_line("clip", {"status": "ok", "num_events": 2}))
    lock = out / ".extract.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"pid 4242 on node7, since 2026-12-03 10:00:00")
        theirs = sorted(p.relative_to(out) for p in out.rglob("*"))
        with pytest.raises(BadInputError, match="another extraction job is writing to this folder .pid 4242 on node7"):
            ex.extract(backbone, videos, out, num_workers=0, accelerator="cpu", progress=False)
        capsys.readouterr()
        assert run_extract("--backbone", backbone, "--videos", videos, "--out", out) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(out) in err and "use another --out" in err
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == theirs
    finally:
        os.close(fd)  # the other job ends (or is killed): its lock goes, its file stays
    shutil.rmtree(out / ".partial")
    (out / ".film_feats.npy.abc123.tmp").unlink()
    (out / ".index.rank0.jsonl").unlink()
    assert lock.is_file()
    assert ex.extract(backbone, videos, out, num_workers=0, accelerator="cpu", progress=False)["counts"]["ok"] == 2
    assert not lock.exists() and not list(out.glob(".*"))


def test_the_job_lock_excludes_a_job_that_locked_the_file_its_holder_removed(tmp_path, monkeypatch):
    """A job that opens the lock file just before its holder removes it, and locks it just after,
    holds a lock on a file no longer in the folder: it must try again, on the file in the folder
    (which a third job may hold by then)."""
    with ex.job_lock(tmp_path):
        assert (tmp_path / ex.JOB_LOCK).read_text().startswith(f"pid {os.getpid()} on ")
        with pytest.raises(BadInputError, match="another extraction job"), ex.job_lock(tmp_path):
            pass
    assert not (tmp_path / ex.JOB_LOCK).exists()
    real_open, opened = os.open, []

    def open_then_lose_it(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if not opened:  # its holder removes the file right after this job opened it
            opened.append(path)
            os.unlink(path)
        return fd

    monkeypatch.setattr(ex.os, "open", open_then_lose_it)
    with ex.job_lock(tmp_path):
        monkeypatch.undo()
        assert len(opened) == 1 and (tmp_path / ex.JOB_LOCK).is_file()  # the second file, in the folder
        with pytest.raises(BadInputError, match="another extraction job"), ex.job_lock(tmp_path):
            pass


def test_the_job_locks_since_names_its_utc_offset(tmp_path):
    """The holder line is read on other machines (the ranks of other nodes, a user of the shared
    folder elsewhere): a local clock time without its offset named another hour there."""
    with ex.job_lock(tmp_path):
        first = (tmp_path / ex.JOB_LOCK).read_text().split("\n", 1)[0]
    assert re.fullmatch(r"pid \d+ on \S+, since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}", first), first


def test_only_node_0s_first_process_does_the_folders_one_off_steps(backbone, videos, tmp_path, monkeypatch):
    """Lightning's launcher started on each node gives every node's first process rank 0 until the
    process group exists: node 1's rewrote the shared folder's index (with nothing to do), and with
    work to do would have claimed it and cleared what node 0 had committed."""
    out = tmp_path / "out"
    ex.extract(backbone, videos, out, num_workers=0, accelerator="cpu", progress=False)
    before = os.stat(out / ex.INDEX_NAME)
    monkeypatch.setenv("NODE_RANK", "1")
    assert ex.extract(backbone, videos, out, num_workers=0, accelerator="cpu", progress=False) == {}
    after = os.stat(out / ex.INDEX_NAME)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize(
    "change, cause",
    [
        ({"videos": {"a": None}}, r"videos.a: an entry is an object \(\{status, num_events\}\), not None"),
        ({"videos": {"a": ["ok"]}}, r"videos.a: an entry is an object"),
        ({"stride_s": None}, r"stride_s must be a positive number of seconds, got None"),
        ({"stride_s": ""}, r"stride_s must be a positive number of seconds, got ''"),
        ({"stride_s": -2}, r"stride_s must be a positive number of seconds, got -2"),
        ({"dim": ["ok"]}, r"dim must be a positive integer, got \['ok'\]"),
        ({"dim": 2.5}, r"dim must be a positive integer, got 2.5"),
    ],
)
def test_a_hand_written_index_of_the_wrong_shape_is_one_line(tmp_path, change, cause):
    """A null video entry was `.get`'s AttributeError, a null or empty stride_s float()'s TypeError or
    ValueError and a list as dim int()'s TypeError: tracebacks, where a bad num_events was one line."""
    np.save(tmp_path / "a_feats.npy", np.zeros((3, 4), np.float32))
    index = {"format": "moviessl-features", "stride_s": 2.0, "dim": 4, "videos": {"a": {"num_events": 3}}, **change}
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(BadInputError, match=cause) as e:
        FeatureStore(tmp_path).load("a")
    assert str(e.value).startswith(str(tmp_path / "index.json")) and "\n" not in str(e.value)
    index.update({"stride_s": 2, "dim": 4.0, "videos": {"a": {"num_events": 3}}})  # whole numbers as floats
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert FeatureStore(tmp_path).load("a").shape == (3, 4)


def test_a_hand_written_index_entry_without_or_with_a_bad_num_events(backbone, videos, tmp_path):
    """An entry without num_events was a KeyError traceback; the file's header counts then. A value
    that is not a positive integer is one line naming index.json."""
    out = tmp_path / "f"
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out) == 0
    index = json.loads((out / "index.json").read_text())
    del index["videos"]["a"]["num_events"]
    (out / "index.json").write_text(json.dumps(index))
    s = FeatureStore(out)
    assert s.num_events("a") == 3 and s.load("a").shape == (3, 16)
    for bad in ("three", 2.5, 0, float("inf")):
        index["videos"]["a"]["num_events"] = bad
        (out / "index.json").write_text(json.dumps(index))
        with pytest.raises(BadInputError, match="a: num_events must be a positive integer") as e:
            FeatureStore(out).num_events("a")
        assert "index.json" in str(e.value)
    index["videos"]["a"]["num_events"] = 3
    # a hand-edited 'missing': was a traceback; [2, 4) runs one past the 3 events (the bound is 3, not 4)
    for bad in ([[0]], [["x", 2]], [[2, 1]], [[0, 9]], [[2, 4]], [[-1, 1]], 5):
        index["videos"]["a"]["missing"] = bad
        (out / "index.json").write_text(json.dumps(index))
        with pytest.raises(BadInputError, match=r"a: 'missing' must list \[start, stop\) event ranges") as e:
            FeatureStore(out).missing("a")
        assert "index.json" in str(e.value)
    index["videos"]["a"]["missing"] = [[1, 3]]
    (out / "index.json").write_text(json.dumps(index))
    assert FeatureStore(out).missing("a").tolist() == [False, True, True]


def test_a_video_whose_reader_process_dies_is_listed_bad_and_the_rest_done(backbone, videos, tmp_path, monkeypatch):
    """A decoder that segfaults (or the OOM killer) kills a DataLoader worker, not the job: the video
    it was reading is named and listed bad, the others are extracted, and --retry-bad tries it again.
    (Before, the job stopped with torch's "DataLoader worker (pid(s) N) exited unexpectedly", naming
    no video, and every rerun died on the same one.)"""
    import signal

    out = tmp_path / "feats"
    reader = ex.VideoReader

    def dies_on_b(path, *a, **k):
        if Path(path).stem == "b":
            os.kill(os.getpid(), signal.SIGSEGV)
        return reader(path, *a, **k)

    monkeypatch.setattr(ex, "VideoReader", dies_on_b)  # forked workers inherit the patch
    summary = ex.extract(backbone, videos, out, num_workers=1, accelerator="cpu", progress=False)
    assert summary["counts"] == {"ok": 1, "bad": 2}
    v = json.loads((out / "index.json").read_text())["videos"]
    assert v["a"]["status"] == "ok" and (out / "a_feats.npy").is_file()
    assert v["b"]["status"] == "bad" and re.search(r"b\.mp4: the process reading it died", v["b"]["error"])
    assert not list(out.glob(".reading.*"))
    monkeypatch.setattr(ex, "VideoReader", reader)
    assert ex.extract(backbone, videos, out, num_workers=1, accelerator="cpu", progress=False, retry_bad=True)[
        "counts"
    ] == {"ok": 2, "bad": 1}
    np.testing.assert_allclose(
        np.load(out / "b_feats.npy")[1], expected_feature(backbone, videos / "b.mp4", 3.0), rtol=1e-4, atol=1e-5
    )


def test_a_worker_dying_while_it_hands_a_batch_over_is_found_dead(tmp_path, monkeypatch):
    """A worker that dies while the main process reads its batch's shared memory breaks that read
    first (ConnectionResetError); torch's SIGCHLD handler named the worker a moment later, wherever
    the process then was (raised in the job lock's exit, past every handler: the job stopped instead
    of listing the video bad), or never, once an earlier Lightning run's teardown had restored
    SIGCHLD's default. The broken read now looks for the run's dead worker itself."""
    import multiprocessing as mp
    import signal
    import time

    ctx = mp.get_context("fork")
    go_r, go_w = ctx.Pipe(duplex=False)

    def worker(sig):
        go_r.recv()
        time.sleep(0.3)  # the main process is waiting by then
        os.kill(os.getpid(), sig)

    token = "this run"
    p = ctx.Process(target=worker, args=(signal.SIGKILL,))
    p.start()
    ex.reading_note(tmp_path, p.pid).write_text(json.dumps({"id": "b", "source": "/v/b.mp4", "run": token}))
    go_w.send(1)  # it dies now, while this process waits
    try:
        died = ex._worker_death_after(ConnectionResetError(104, "Connection reset by peer"), tmp_path, token)
    finally:
        p.join()
    assert died == ("b", "/v/b.mp4", "killed by signal: Killed, often the out-of-memory killer")
    ex.reading_note(tmp_path, p.pid).unlink()
    # a worker that ended normally is no death; a broken connection with none dead is itself
    p = ctx.Process(target=int)
    p.start()
    ex.reading_note(tmp_path, p.pid).write_text(json.dumps({"id": "a", "source": "/v/a.mp4", "run": token}))
    assert os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT).si_status == 0  # ended, not reaped
    monkeypatch.setattr(ex, "WORKER_DEATH_WAIT_S", 0.2)
    with pytest.raises(ConnectionResetError):
        ex._worker_death_after(ConnectionResetError(104, "reset"), tmp_path, token)
    p.join()


def test_a_broken_batch_hand_over_without_waitid_waits_for_torchs_word(tmp_path, monkeypatch):
    """macOS's Python has no ``os.waitid`` (CPython leaves it out on Apple platforms): the look for
    the run's dead worker raised AttributeError, a traceback instead of the video listed bad or the
    broken connection's one line. Without it the wait is torch's SIGCHLD word alone; none: the error."""
    import multiprocessing as mp

    monkeypatch.delattr(os, "waitid")
    token = "this run"
    p = mp.get_context("fork").Process(target=os._exit, args=(3,))
    p.start()
    p.join()
    ex.reading_note(tmp_path, p.pid).write_text(json.dumps({"id": "b", "source": "/v/b.mp4", "run": token}))
    assert ex._dead_noted_worker(tmp_path, token) is None
    monkeypatch.setattr(ex, "WORKER_DEATH_WAIT_S", 0.2)
    with pytest.raises(ConnectionResetError):
        ex._worker_death_after(ConnectionResetError(104, "reset"), tmp_path, token)


def test_the_loaders_dead_worker_message_is_read_only_with_this_processs_note(tmp_path):
    note = {"id": "x", "source": "/v/x.mp4", "run": "this run"}
    ex.reading_note(tmp_path, 12).write_text(json.dumps(note))
    ex.reading_note(tmp_path, 13).write_text(json.dumps({**note, "id": "y", "run": "an earlier run"}))

    def died_in(msg: str):
        return ex.video_a_worker_died_in(RuntimeError(msg), tmp_path, "this run")

    oom = "killed by signal: Killed, often the out-of-memory killer"
    assert died_in("DataLoader worker (pid 12) is killed by signal: Killed. ") == ("x", "/v/x.mp4", oom)
    assert died_in("DataLoader worker (pid(s) 9, 12) exited unexpectedly")[0] == "x"
    assert died_in("DataLoader worker (pid(s) 13) exited unexpectedly") is None  # another process's note
    assert died_in("CUDA out of memory") is None


def test_extraction_reports_its_videos_and_a_films_chunks_for_the_time_left(backbone, videos, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(ex.job_progress, "active", lambda: True)
    monkeypatch.setattr(ex.job_progress, "report", lambda done, total, force=False: seen.append((done, total)))
    kw = dict(num_workers=0, accelerator="cpu", progress=False, batch_events=2, chunk_events=2)
    ex.extract(backbone, videos, tmp_path / "f", **kw)
    assert {t for _, t in seen} == {3}  # a, b and the broken file
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and dones[0] == 0 and dones[-1] == 3
    assert any(0 < d % 1 for d in dones)  # a's first chunk of two: half a video done
    # a resumed job starts where the earlier run left off: its pace is measured on what it does
    (tmp_path / "f" / "b_feats.npy").unlink()
    seen.clear()
    ex.extract(backbone, videos, tmp_path / "f", **kw)
    assert seen[0] == (2, 3) and seen[-1] == (3, 3)


def test_a_note_counts_only_under_its_runs_token(tmp_path):
    """A worker started by a forkserver is the server's child, not the extractor's: notes carry the
    run's token instead of the parent's pid (with the pid check, no note matched there)."""
    ex.reading_note(tmp_path, 7).write_text(json.dumps({"id": "x", "source": "/v/x.mp4", "run": "tok"}))
    died = RuntimeError("DataLoader worker (pid 7) is killed by signal: Segmentation fault. ")
    assert ex.video_a_worker_died_in(died, tmp_path, "tok")[0] == "x"
    assert ex.video_a_worker_died_in(died, tmp_path, "another run") is None


def test_a_folder_of_released_features_is_not_extracted_over(backbone, videos, tmp_path, capsys):
    """VidSitu's released features are ``{id}_feats.npy`` files without an index; ``extract`` into
    that folder claimed it and replaced the files of the ids it extracted, without a word."""
    out = tmp_path / "released"
    out.mkdir()
    mine = np.arange(80, dtype=np.float32).reshape(5, 16)
    np.save(out / "a_feats.npy", mine)
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a_feats.npy" in err and "use another --out" in err
    np.testing.assert_array_equal(np.load(out / "a_feats.npy"), mine)
    assert sorted(p.name for p in out.iterdir()) == ["a_feats.npy"]


def test_python_api_leaves_the_callers_modules_as_they_were(backbone, videos, tmp_path):
    """embed_video moved the caller's own modules to its device and left them there in eval mode: a
    notebook's model in training was no longer (its dropout and batch norm silently off) and, on a
    GPU machine, the next CPU call on it failed on mixed devices. They are now lent and given back,
    each submodule's mode as it was."""
    import moviessl

    bb, txe = moviessl.load(backbone), moviessl.load(save_txe(tmp_path / "txe.pt"))
    bb.model.train(), txe.model.train()
    frozen = next(m for m in bb.model.modules() if m is not bb.model)
    frozen.eval()  # a part the caller keeps in eval mode while the rest trains
    modes = [m.training for m in (*bb.model.modules(), *txe.model.modules())]
    devices = {n: p.device for n, p in (*bb.model.named_parameters(), *txe.model.named_parameters())}
    want = moviessl.embed_video(videos / "a.mp4", backbone, save_txe(tmp_path / "txe2.pt"), device="cpu")
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        got = moviessl.embed_video(videos / "a.mp4", bb, txe, device=device)
        np.testing.assert_allclose(got.feats, want.feats, rtol=1e-4, atol=1e-5)  # read in eval mode all the same
        np.testing.assert_allclose(got.ctx, want.ctx, rtol=1e-4, atol=1e-5)
        assert [m.training for m in (*bb.model.modules(), *txe.model.modules())] == modes
        assert {n: p.device for n, p in (*bb.model.named_parameters(), *txe.model.named_parameters())} == devices


def test_another_file_under_a_finished_id_is_not_skipped_silently(backbone, tmp_path, capsys):
    """Extending a folder with another video of a finished id (same stem, another file) kept the old
    features for it without a word; it is one line now, and a video listed bad whose file was
    replaced is tried again."""
    src, out = tmp_path / "v", tmp_path / "feats"
    src.mkdir()
    write_video(src / "a.mp4", 4.0, seed=1)
    (src / "b.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    assert run_extract("--backbone", backbone, "--videos", src, "--out", out) == 0
    assert json.loads((out / "index.json").read_text())["videos"]["b"]["status"] == "bad"
    other = tmp_path / "w"
    other.mkdir()
    write_video(other / "a.mp4", 6.0, seed=2)
    capsys.readouterr()
    assert run_extract("--backbone", backbone, "--videos", other, "--out", out) == 2
    err = capsys.readouterr().err
    assert "a.mp4: its id is extracted" in err and "delete a_feats.npy" in err and "Traceback" not in err
    # the same file again (another folder, same bytes) is the same video: skipped as before
    shutil.copy(src / "a.mp4", other / "a.mp4")
    write_video(src / "b.mp4", 2.0, seed=3)  # the bad video, replaced by a good file
    assert run_extract("--backbone", backbone, "--videos", src, "--out", out) == 0
    assert json.loads((out / "index.json").read_text())["videos"]["b"]["status"] == "ok"
    assert run_extract("--backbone", backbone, "--videos", other, "--out", out) == 0


def test_a_video_still_being_copied_when_read_is_tried_again_once_copied(backbone, tmp_path, monkeypatch):
    """A video that did not open (a copy still going on) was listed bad with its size when the entry
    was written: a copy ending in between left the finished size there, so every rerun skipped the
    complete file as the bad one. Its size is taken as it fails to open, as an ok video's is as read."""
    src, out = tmp_path / "v", tmp_path / "feats"
    src.mkdir()
    whole = write_video(tmp_path / "a.mp4", 4.0, seed=1).read_bytes()
    (src / "a.mp4").write_bytes(whole[:200])
    write_video(src / "b.mp4", 2.0, seed=2)  # (a folder of bad videos only is bad input)
    real = ex.FeatureExtractor.record_bad

    def copy_ends_first(self, vid, *args, **kw):
        (src / "a.mp4").write_bytes(whole)
        return real(self, vid, *args, **kw)

    monkeypatch.setattr(ex.FeatureExtractor, "record_bad", copy_ends_first)
    assert run_extract("--backbone", backbone, "--videos", src, "--out", out) == 0
    monkeypatch.undo()
    entry = json.loads((out / "index.json").read_text())["videos"]["a"]
    assert entry["status"] == "bad" and entry["source_size"] == 200
    assert run_extract("--backbone", backbone, "--videos", src, "--out", out) == 0
    entry = json.loads((out / "index.json").read_text())["videos"]["a"]
    assert entry["status"] == "ok" and entry["source_size"] == len(whole)


def test_a_rerun_waits_for_a_killed_jobs_workers_to_let_go_of_the_lock(tmp_path, monkeypatch):
    """The loader workers of a job killed with SIGKILL share its flock until they notice their parent
    is gone: a rerun at once was refused, naming the dead pid. It now waits for them (a while), and
    still refuses a lock whose holder is alive."""
    import socket
    import subprocess
    import sys
    import threading

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    path = tmp_path / ex.JOB_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: excludes job_lock as a worker's would
    os.write(fd, f"pid {pid} on {socket.gethostname()}, since then".encode())
    threading.Timer(1.0, lambda: (path.unlink(), os.close(fd))).start()
    with ex.job_lock(tmp_path):
        assert path.read_text().startswith(f"pid {os.getpid()} on ")
    # gone, and still held past the wait: the line says so
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"pid {pid} on {socket.gethostname()}, since then".encode())
    monkeypatch.setattr(ex, "ORPHAN_LOCK_WAIT_S", 0.5)
    try:
        with pytest.raises(BadInputError, match="gone; its processes still hold the lock"), ex.job_lock(tmp_path):
            pass
    finally:
        os.close(fd)


def test_segment_videos_copied_out_of_their_release_are_said_to_have_no_split(backbone, tmp_path, caplog):
    """VidSitu segment videos copied into a plain folder and extracted there record no split, and
    pretraining took them all as unlabelled without a word (val included); it now says so, and a
    --vidsitu-root leaves their evaluation splits out."""
    from moviessl.context.pretrain import pretraining_ids

    vids = tmp_path / "copied"
    vids.mkdir()
    ids = ["v_aaa_seg_0_10", "v_bbb_seg_0_10"]
    for i, v in enumerate(ids):
        write_video(vids / f"{v}.mp4", 2.0, seed=i)
    write_video(vids / "film.mp4", 2.0, seed=3)
    out = tmp_path / "out"
    assert run_extract("--backbone", backbone, "--videos", vids, "--out", out) == 0
    pairs = [(0, v) for v in FeatureStore(out).ids]
    with caplog.at_level("WARNING", logger="moviessl.context"):
        assert pretraining_ids([FeatureStore(out)], pairs) == pairs
    assert "2 videos named like VidSitu segments (e.g. v_aaa_seg_0_10) have no split recorded" in caplog.text
    ann = tmp_path / "home" / "vidsitu_annotations"
    (ann / "split_files").mkdir(parents=True)
    (ann / "split_files" / "vseg_split_train_lb.json").write_text(json.dumps(ids[:1]))
    (ann / "split_files" / "vseg_split_valid_lb.json").write_text(json.dumps(ids[1:]))
    caplog.clear()
    with caplog.at_level("WARNING", logger="moviessl.context"):
        kept = pretraining_ids([FeatureStore(out)], pairs, tmp_path / "home")
    assert sorted(v for _, v in kept) == ["film", "v_aaa_seg_0_10"] and "no split recorded" not in caplog.text


def test_features_beyond_float16_are_marked_missing_not_stored_as_inf(backbone, videos, tmp_path, monkeypatch, caplog):
    """With --fp16 a feature above 65504 was stored as inf and the video indexed ok; every later
    reader then refused the file. Such an event is missing now (zeros, in the index), as a damaged one."""
    real = ex.build_from_checkpoint

    def overflowing(obj, *a, **k):
        net = real(obj, *a, **k)
        forward = net.forward

        def huge_first(x):
            out = forward(x)
            return torch.cat([out[:1] * 1e6, out[1:]])  # the first event of every batch

        net.forward = huge_first
        return net

    monkeypatch.setattr(ex, "build_from_checkpoint", overflowing)
    out = tmp_path / "f16"
    with caplog.at_level("WARNING", logger="moviessl.features"):
        ex.extract(
            backbone, videos / "a.mp4", out, fp16=True, batch_events=8, num_workers=0, accelerator="cpu", progress=False
        )
    entry = json.loads((out / "index.json").read_text())["videos"]["a"]
    assert entry["status"] == "ok" and entry["missing"] == [[0, 1]], entry
    assert "1 events gave non-finite features (NaN/inf, beyond float16's range)" in caplog.text
    feats = FeatureStore(out).load("a")  # read (it was refused) with the row zeroed
    assert np.isfinite(feats).all() and not feats[0].any() and feats[1].any()


def test_notes_of_the_job_that_the_disk_cannot_take_do_not_stop_it(backbone, videos, tmp_path, monkeypatch, capsys):
    """The lock's stamp (who holds it) and a loader worker's note of the video it reads only help to
    name a holder or a reader that died: on a full disk their writes stopped the job before any
    video, with an OSError naming no file (``No space left on device: [Errno 28] ...``), where the
    first write of a result names it."""
    import errno
    import pathlib

    real_write, real_write_text = os.write, pathlib.Path.write_text

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    def write(fd, data):
        return full() if os.readlink(f"/proc/self/fd/{fd}").endswith(ex.JOB_LOCK) else real_write(fd, data)

    def write_text(self, *a, **k):
        return full() if self.name.startswith(".reading.") else real_write_text(self, *a, **k)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    out = tmp_path / "f"
    argv = ["extract", "--num-workers", "1", "--accelerator", "cpu", "--backbone", backbone, "--videos", videos]
    assert main([*map(str, argv), "--out", str(out)]) == 0, capsys.readouterr().err[-1000:]
    assert sorted(FeatureStore(out).ids) == ["a", "b"]


def test_the_bar_in_a_log_file_does_not_draw_a_line_per_video(backbone, tmp_path, capsys):
    # a batch job's log (stderr not a terminal) gets a bar line every 30 s: redrawn for each video
    # opened and each one listed, it wrote two lines per video of a dataset
    src = write_video(tmp_path / "one.mp4", 1.0)
    d = tmp_path / "clips"
    d.mkdir()
    n = 8
    for i in range(n):
        os.link(src, d / f"c{i}.mp4")
    ex.extract(backbone, d, tmp_path / "f", num_workers=0, accelerator="cpu", progress=True)
    assert len(FeatureStore(tmp_path / "f")) == n
    draws = capsys.readouterr().err.count("extract:")
    assert 0 < draws < n  # the first and last draws (and one per 30 s of a slow machine)


def test_a_frame_folder_still_being_written_is_not_skipped_for_ever(backbone, tmp_path, capsys):
    """A frame dump (FFmpeg writing ``{id}/{id}_%06d.jpg``) still running when ``extract`` read the
    folder gave a film of the frames there then, listed ok; every rerun after the dump finished
    skipped it by its id (a frame folder had no ``source_size``), so the folder kept a 2-s film for
    a 6-s one without a word. The entry records the frames the reader saw; a rerun that finds
    another number is one line naming the folder and the file to delete, as for a replaced file."""
    import cv2

    frames, out = tmp_path / "frames", tmp_path / "feats"
    film = frames / "film"
    film.mkdir(parents=True)

    def dump(a: int, b: int) -> None:
        for i in range(a, b):
            cv2.imwrite(str(film / f"film_{i + 1:06d}.jpg"), np.full((36, 48, 3), (i * 3) % 255, np.uint8))

    dump(0, 60)  # the dump is a third of the way through
    assert run_extract("--backbone", backbone, "--videos", frames, "--out", out) == 0
    entry = json.loads((out / "index.json").read_text())["videos"]["film"]
    assert entry["num_events"] == 1 and entry["source_size"] == 60
    assert run_extract("--backbone", backbone, "--videos", frames, "--out", out) == 0  # unchanged: skipped
    dump(60, 180)  # the dump ends
    capsys.readouterr()
    assert run_extract("--backbone", backbone, "--videos", frames, "--out", out) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(film) in err and "Traceback" not in err
    assert "60 frames" in err and "180" in err and "delete film_feats.npy" in err
    (out / "film_feats.npy").unlink()
    assert run_extract("--backbone", backbone, "--videos", frames, "--out", out) == 0
    entry = json.loads((out / "index.json").read_text())["videos"]["film"]
    assert entry["num_events"] == 3 and entry["source_size"] == 180


def test_a_rerun_from_another_directory_reads_the_index_sources_as_the_same_files(
    backbone, tmp_path, monkeypatch, capsys
):
    """index.json recorded each video as the path it was given (``--videos frames``: relative to the
    directory the job ran in), so a rerun from another directory, or of a moved feature folder, read
    an entry as naming another file: frames added to a frame folder were called "another source".
    Sources are recorded absolute now; an older relative entry is matched by the path's end."""
    import cv2

    film = tmp_path / "proj" / "frames" / "film"
    film.mkdir(parents=True)

    def dump(a: int, b: int) -> None:
        for i in range(a, b):
            cv2.imwrite(str(film / f"film_{i + 1:06d}.jpg"), np.full((36, 48, 3), (i * 3) % 255, np.uint8))

    dump(0, 60)
    monkeypatch.chdir(tmp_path / "proj")
    assert run_extract("--backbone", backbone, "--videos", "frames", "--out", "feats") == 0
    index = tmp_path / "proj" / "feats" / "index.json"
    assert json.loads(index.read_text())["videos"]["film"]["source"] == str(film)
    # the folder moved (scratch to home) and rerun from elsewhere with the same frames: skipped
    moved = tmp_path / "home" / "feats"
    moved.parent.mkdir()
    shutil.copytree(tmp_path / "proj" / "feats", moved)
    monkeypatch.chdir(tmp_path)
    assert run_extract("--backbone", backbone, "--videos", "proj/frames", "--out", moved) == 0
    dump(60, 90)  # the dump had not ended: the same folder, more frames
    for entry_source in (None, "frames/film"):  # as recorded now; as an earlier version recorded it
        if entry_source is not None:
            held = json.loads((moved / "index.json").read_text())
            held["videos"]["film"]["source"] = entry_source
            (moved / "index.json").write_text(json.dumps(held))
        capsys.readouterr()
        assert run_extract("--backbone", backbone, "--videos", "proj/frames", "--out", moved) == 2
        err = capsys.readouterr().err
        assert "from 60 frames, it holds 90 now" in err and "another source" not in err, err


def _hold_lock(folder: Path):
    """Another process holding ``folder``'s job lock as a running extraction does, until killed."""
    import subprocess
    import sys

    code = (
        "import fcntl, os, socket, sys, time\n"
        f"fd = os.open({str(folder / ex.JOB_LOCK)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'pid {os.getpid()} on {socket.gethostname()}, since now'.encode())\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_folder_an_extraction_is_still_writing_is_not_called_a_killed_ones(tmp_path):
    """A reader started on a folder whose first extraction is still running (claim, journals and
    some feature files, the job lock held) was told the extraction "did not finish (rerun the same
    extract command to resume it)": the rerun is refused while the job runs, and a user who takes
    the job for dead may start over elsewhere. It now names the job writing it; once that job is
    gone (killed: its lock file stays, locking nothing) the message is the resume hint again."""
    from moviessl.features.instances import open_instances
    from moviessl.features.store import CLAIM_NAME

    for fmt, reader in (("moviessl-features", FeatureStore), ("moviessl-instances", open_instances)):
        out = tmp_path / fmt
        out.mkdir()
        ex.atomic_write_json(out / CLAIM_NAME, {"format": fmt, "backbone": "abc", "counts": {}, "videos": {}})
        for v in ("a", "b"):
            np.save(out / f"{v}_feats.npy", np.ones((5, 8), np.float32))
            ex.append_line(ex.journal_path(out, 0), ex.journal_line(v, {"status": "ok", "num_events": 5}))
        writer = _hold_lock(out)
        try:
            who = rf"still being written by an extraction job \(pid {writer.pid} on "
            with pytest.raises(BadInputError, match=who):
                reader(out)
        finally:
            writer.kill()
            writer.wait()
        assert (out / ex.JOB_LOCK).is_file()
        with pytest.raises(BadInputError, match="did not finish .rerun the same extract command"):
            reader(out)


def test_a_readers_look_at_the_job_lock_does_not_refuse_the_job_taking_it(tmp_path):
    """A reader asks who writes a folder by taking its lock shared for an instant: an extraction
    starting at that instant must wait for it, not refuse itself as if another job wrote there."""
    import threading

    (tmp_path / ex.JOB_LOCK).write_text("pid 1 on elsewhere, since then")
    fd = os.open(tmp_path / ex.JOB_LOCK, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # the reader's look, caught in the act
    threading.Timer(0.2, os.close, (fd,)).start()
    with ex.job_lock(tmp_path):
        assert (tmp_path / ex.JOB_LOCK).read_text().startswith(f"pid {os.getpid()} on ")


def test_the_other_ranks_of_a_launch_refused_at_the_lock_stop_there_too(tmp_path, monkeypatch):
    """Only a launch's leader takes the folder's lock; the other ranks of a second torchrun / srun
    job on a folder another job held went on while their leader had stopped at the lock, and
    rewrote that job's config, settings and held-out list and removed its checkpoints. They now go
    on only once the lock is their own launch's (or no job's), and else say the holder in one line."""
    import socket

    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    for k in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_STEPID", "LSB_JOBID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run-b")
    monkeypatch.setenv("MASTER_ADDR", "node1")
    monkeypatch.setenv("MASTER_PORT", "29501")
    monkeypatch.setattr(ex, "LEADER_LOCK_WAIT_S", 0.5)
    host = socket.gethostname()

    def held_by(text: str) -> int:
        fd = os.open(tmp_path / ex.JOB_LOCK, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: another process's lock
        os.ftruncate(fd, 0)
        os.write(fd, text.encode())
        return fd

    with ex.launch_lock(tmp_path):  # the leader (rank 0) takes it, naming its launch
        assert (tmp_path / ex.JOB_LOCK).read_text().split("\n")[1] == "launch torchrun run-b node1:29501"
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with ex.run_lock(tmp_path):  # no job holds the folder: the leader has let go of it, or takes it next
        pass
    for holder, refused in (
        ("pid 4242 on node7, since then\nlaunch torchrun run-a node7:29500", True),  # the other job's
        ("pid 4242 on node7, since then", True),
        ("pid 4242 on node7, since then\nlaunch torchrun run-b node1:29501", False),  # this launch's leader
        (f"pid {os.getppid()} on {host}, since then", False),  # Lightning's launcher: the leader is the parent
    ):
        fd = held_by(holder)
        try:
            if refused:
                line = r"another moviessl job is writing to this folder \(pid 4242 on node7, since then\);"
                with pytest.raises(BadInputError, match=line), ex.run_lock(tmp_path):
                    pass
            else:
                with ex.run_lock(tmp_path):
                    pass
        finally:
            os.close(fd)
    # the other job's lock, then none (it ended): this launch's leader, refused by it, takes it no more
    fd = held_by("pid 4242 on node7, since then\nlaunch torchrun run-a node7:29500")
    __import__("threading").Timer(0.2, os.close, (fd,)).start()
    with pytest.raises(BadInputError, match="pid 4242 on node7"), ex.run_lock(tmp_path):
        pass


def test_a_reader_of_a_folder_being_extended_says_what_it_reads(tmp_path, caplog):
    """A finished folder being extended keeps its index until the extension ends, so a reader gets
    the videos of its last finished run, a consistent set. It did so without a word, while the job
    writing the rest ran: a TxE pretrained or a task tuned then on part of the data, taken for all
    of it. The reader now says which job is extending the folder and how many videos it reads."""
    from moviessl.features.instances import InstanceStore
    from moviessl.features.store import INDEX_NAME

    out = tmp_path / "feats"
    out.mkdir()
    videos = {v: {"status": "ok", "num_events": 5} for v in ("a", "b")}
    ex.atomic_write_json(out / INDEX_NAME, {"format": "moviessl-features", "dim": 8, "videos": videos})
    for v in ("a", "b", "c"):  # c: the extension's, journalled, not yet in the index
        np.save(out / f"{v}_feats.npy", np.ones((5, 8), np.float32))
    ex.append_line(ex.journal_path(out, 0), ex.journal_line("c", {"status": "ok", "num_events": 5}))
    writer = _hold_lock(out)
    try:
        with caplog.at_level("WARNING", logger="moviessl.features"):
            assert FeatureStore(out).ids == ["a", "b"]
            inst = tmp_path / "inst"  # an instance folder (pretrain-ot, LVU's --instances) alike
            inst.mkdir()
            ex.atomic_write_json(inst / INDEX_NAME, {"format": "moviessl-instances", "dim": 8, "videos": videos})
            os.rename(out / ex.JOB_LOCK, inst / ex.JOB_LOCK)  # the same job's lock, now on that folder
            assert InstanceStore(inst).ids == ["a", "b"]
            os.rename(inst / ex.JOB_LOCK, out / ex.JOB_LOCK)
        said = [r.getMessage() for r in caplog.records if "being extended" in r.getMessage()]
        assert len(said) == 2 and all(f"pid {writer.pid} on " in m for m in said)
        assert all("the 2 videos its index lists" in m for m in said)
    finally:
        writer.kill()
        writer.wait()
    caplog.clear()
    with caplog.at_level("WARNING", logger="moviessl.features"):
        assert FeatureStore(out).ids == ["a", "b"]  # a killed extension's videos wait for its rerun
    assert not [r for r in caplog.records if "being extended" in r.getMessage()]


def test_a_folder_of_clips_of_another_geometry_is_not_extended(backbone, videos, tmp_path, capsys):
    """The same backbone file read with other clips (an older tuned backbone's meta, filled in from
    its run's config since) extended a folder with clips of another length beside the old ones,
    and rewrote its header's input, exit 0."""
    out = tmp_path / "feats"
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out) == 0
    index = json.loads((out / "index.json").read_text())
    index["input"]["num_frames"] = 2 * index["input"]["num_frames"]  # made with 2x longer clips
    (out / "index.json").write_text(json.dumps(index))
    capsys.readouterr()
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", out) == 2
    err = capsys.readouterr().err
    assert "folder holds features of clips" in err and "use another --out" in err and "Traceback" not in err


def test_a_listed_film_leaves_no_state_behind(backbone, videos, tmp_path, monkeypatch):
    """A job over a folder of tens of thousands of videos kept every finished film's state (its chunk
    layout and the set of chunks done) until the end; a listed film, ok or bad, leaves only a mark."""
    held = {}
    real = ex.FeatureExtractor.on_predict_end

    def at_end(self):
        held.update(self._films)
        real(self)

    monkeypatch.setattr(ex.FeatureExtractor, "on_predict_end", at_end)
    kw = dict(num_workers=0, accelerator="cpu", progress=False, batch_events=2, chunk_events=2)
    ex.extract(backbone, videos, tmp_path / "f", **kw)
    assert sorted(held) == ["a", "b", "broken"]  # a in two chunks, b in one, broken not opened
    assert all(dict(f) == {"closed": True} for f in held.values())


def test_one_video_is_counted_in_the_singular(backbone, videos, tmp_path, capsys, caplog):
    # the result line read "1 videos ok"
    caplog.set_level("INFO", logger="moviessl")
    assert run_extract("--backbone", backbone, "--videos", videos / "b.mp4", "--out", tmp_path / "one") == 0
    assert "one: 1 video ok, 0 bad" in capsys.readouterr().out
    assert "1 video (" in caplog.text and "1 videos" not in caplog.text


@pytest.mark.parametrize(
    "name, said",
    [
        ("film.mp4", "no such video file"),
        ("films.txt", "no such list file"),
        ("films", "no such file or folder (a video, a folder of videos, a list file, a VidSitu or LVU root)"),
    ],
)
def test_a_missing_videos_path_is_named_as_what_was_looked_for(tmp_path, name, said):
    # a missing film.mp4 was "no such video folder or list file", as if a folder had been asked for
    with pytest.raises(BadInputError) as e:
        ex.find_videos(tmp_path / name)
    assert str(e.value) == f"{tmp_path / name}: {said}"


def test_extract_from_python_leaves_the_callers_warnings_and_lightning_loggers_as_they_were(backbone, videos, tmp_path):
    """As ``fit`` (tests/core/test_training.py): Lightning's advice is silenced for the extraction
    only; it left a notebook's Lightning loggers at ERROR and a dozen ``ignore`` filters in front of
    its own warnings filters."""
    import logging
    import warnings

    names = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")
    before = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.INFO)
        filters = list(warnings.filters)
        ex.extract(backbone, videos / "a.mp4", tmp_path / "f", num_workers=0, accelerator="cpu", progress=False)
        assert (tmp_path / "f" / "a_feats.npy").is_file()
        assert {name: logging.getLogger(name).level for name in names} == dict.fromkeys(names, logging.INFO)
        assert warnings.filters == filters
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def test_extract_from_python_leaves_the_callers_random_streams_as_they_were(backbone, videos, tmp_path):
    """``extract`` has nothing random (its features are the file's frames through the file's weights),
    yet it drew from torch's global generator: the backbone's (and a contextualizer's) random
    initialisation before the weights are loaded, and each pass of its data loader (a base seed for
    its workers). A notebook's ``torch.manual_seed(0)`` followed by an extraction gave other numbers
    than without one."""
    import random

    def draws():
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    want = draws()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    ex.extract(backbone, videos / "a.mp4", tmp_path / "f", num_workers=0, accelerator="cpu", progress=False)
    assert (tmp_path / "f" / "a_feats.npy").is_file()
    assert draws() == want


def test_python_api_load_leaves_the_callers_random_streams_as_they_were(backbone):
    """``moviessl.load`` builds the network (its random initialisation) and then loads the weights
    over it: the build drew from torch's global generator, so a notebook's ``torch.manual_seed(0)``
    followed by a load gave other numbers (a head's initialisation, a shuffle) than without it."""
    import random

    import moviessl

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    want = torch.rand(3), np.random.rand(3), random.random()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    loaded = moviessl.load(backbone)
    got = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
    # the weights are the file's, as before
    saved = torch.load(backbone, weights_only=False)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in loaded.model.state_dict().items())


@pytest.mark.parametrize("accelerator, pinned", [("cpu", False), ("gpu", True)])
def test_an_extraction_pins_its_batches_only_on_a_gpu(tmp_path, monkeypatch, accelerator, pinned):
    """--accelerator cpu on a machine with a GPU pinned every decoded batch, which made a CUDA context
    on GPU 0 in every rank of the job; an extraction on a GPU pins them (a machine with a GPU stood
    in for: the trainer is a stand-in that only looks at its loader)."""
    from types import SimpleNamespace

    seen = {}

    class Trainer:
        interrupted = False
        strategy = SimpleNamespace(barrier=lambda: None)

        def predict(self, module, dataloaders=None, return_predictions=True):
            seen["pin"] = dataloaders.pin_memory

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ex, "predict_trainer", lambda out, *launch: Trainer())
    module = SimpleNamespace(close_progress=lambda: None)
    ex.run_prediction(module, [], tmp_path, (accelerator, 1, 1, "auto", "32-true", None), 0, False)
    assert seen["pin"] is pinned


def test_a_hand_written_index_with_non_ascii_text_is_read_under_an_ascii_locale(tmp_path):
    """JSON is UTF-8, and an index written by hand (features made elsewhere) may say where they came
    from in plain text ("backbone_path": "/home/josé/slowd.pt"); read in the locale's encoding, under
    LC_ALL=C with PYTHONUTF8=0 the folder was an "unreadable feature index (UnicodeDecodeError)"."""
    import subprocess
    import sys

    root = tmp_path / "feats"
    root.mkdir()
    np.save(root / "a_feats.npy", np.ones((3, 4), np.float32))
    index = {"stride_s": 2.0, "dim": 4, "backbone_path": "/home/josé/slowd.pt", "videos": {"a": {"num_events": 3}}}
    (root / "index.json").write_text(json.dumps(index, ensure_ascii=False), encoding="utf-8")
    code = "import sys; from moviessl.features import FeatureStore; print(FeatureStore(sys.argv[1]).load('a').shape)"
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        env={**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "(3, 4)", done.stderr[-600:]


def test_a_warning_during_extraction_starts_a_line_of_its_own_not_the_bars(backbone, videos, tmp_path):
    """A video skipped while the progress bar was drawn was logged where the bar's line ended, as a
    console shows it: ``extract: 0event [00:00, ?event/s, videos 0/3]WARNING moviessl.features:
    skipping .../broken.mp4``. The command's log lines now go through ``tqdm.write``, which clears the
    bar first. A real process: the CLI's own logging set-up is what is checked."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cmd = [sys.executable, "-m", "moviessl", "extract", "--backbone", str(backbone), "--videos", str(videos)]
    cmd += ["--out", str(tmp_path / "feats"), "--num-workers", "0", "--accelerator", "cpu"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "WARNING moviessl.features: skipping" in p.stderr, p.stderr[-3000:]
    assert "extract:" in p.stderr  # the bar was drawn
    glued = re.findall(r"[^\r\n]+WARNING moviessl", p.stderr)
    assert not glued, glued


@pytest.mark.parametrize(
    "command,key,value",
    [
        ("extract", "num_frames", 0),
        ("extract", "stride", "8"),
        ("extract", "short_side", None),
        ("extract", "crop", -32),
        ("extract-instances", "num_frames", 2.5),
        ("extract-instances", "stride", True),
        ("extract-instances", "short_side", 0),
    ],
)
def test_a_backbone_whose_clip_is_not_positive_integers_is_one_line(tmp_path, capsys, command, key, value):
    """``meta.input`` (the clip a backbone reads) was checked for its keys, not their values: a
    checkpoint from another tool with a frame count of 0 or a stride written as text failed inside
    the decoding of every video (each listed as bad) or ended in a traceback."""
    bb = save_backbone(tmp_path / "bb.pt", {**INPUT, key: value})
    (tmp_path / "v").mkdir()
    write_video(tmp_path / "v" / "a.mp4", 2.0)
    (tmp_path / "tracks").mkdir()
    sec = {"t": 0, "shot": 0, "track_ids": [0], "boxes": [[0.1, 0.1, 0.6, 0.6]]}
    (tmp_path / "tracks" / "a.json").write_text(json.dumps({"seconds": [sec]}))
    argv = ["--backbone", bb, "--videos", tmp_path / "v", "--out", tmp_path / "out"]
    if command == "extract-instances":
        argv += ["--tracks", tmp_path / "tracks"]
    assert main([command, *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bb.pt" in err and f"meta.input {key}" in err and "integer >= 1" in err and "\n" not in err
    if command == "extract":  # the notebook API reads the same clip
        import moviessl

        with pytest.raises(BadInputError, match=f"meta.input {key} must be an integer >= 1"):
            moviessl.embed_video(tmp_path / "v" / "a.mp4", bb, device="cpu")
