"""Feature-length extraction: commit chunks, resume inside a film, damaged stretches, odd streams."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from moviessl.checkpoint import arch_spec, save_checkpoint
from moviessl.cli import main
from moviessl.features import FeatureStore
from moviessl.features import extract as ex
from moviessl.video import VideoReader, probe
from moviessl.video.filmgen import corrupt_stretch, make_film

INPUT = {"num_frames": 4, "stride": 8, "short_side": 32, "crop": 32}
KW = dict(preset="slowd_cpu", widths=[8, 8, 16, 16], stem_width=8)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    from moviessl.models import build_slowd

    torch.manual_seed(0)
    model = build_slowd(**KW)
    path = tmp_path_factory.mktemp("bb") / "backbone.pt"
    save_checkpoint(
        path,
        stage="backbone",
        arch=arch_spec("moviessl.models.slowd:build_slowd", **KW),
        state_dict=model.state_dict(),
        meta={"input": INPUT, "method": "random", "out_dim": model.out_dim},
    )
    return path


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    """A 64-s film with audio (32 events at 2 s): 8 chunks of 4 events in the tests below."""
    d = tmp_path_factory.mktemp("film")
    return make_film(d / "film.mp4", 64.0, width=160, height=96, gop=60)


@pytest.fixture(scope="module")
def reference(backbone, film, tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("ref")
    ex.extract(backbone, film, out, num_workers=0, accelerator="cpu", batch_events=2, chunk_events=4)
    assert not (out / ".partial").exists()
    return np.load(out / "film_feats.npy")


def test_resume_inside_a_film_gives_identical_arrays(backbone, film, reference, tmp_path, monkeypatch):
    out = tmp_path / "feats"
    orig = ex.FeatureExtractor.predict_step
    state = {"batches": 0}

    def die_mid_chunk(self, batch, batch_idx=0):
        state["batches"] += 1
        if state["batches"] == 9:  # 4 chunks of 2 batches committed, the 5th chunk half done: "kill"
            raise RuntimeError("killed")
        return orig(self, batch, batch_idx)

    monkeypatch.setattr(ex.FeatureExtractor, "predict_step", die_mid_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        ex.extract(backbone, film, out, num_workers=0, accelerator="cpu", batch_events=2, chunk_events=4)
    committed = sorted(p.name for p in (out / ".partial" / "film").glob("c*.npz"))
    assert committed == [f"c{k:06d}.npz" for k in range(4)] and not (out / "film_feats.npy").exists()
    monkeypatch.setattr(ex.FeatureExtractor, "predict_step", orig)
    s = ex.extract(backbone, film, out, num_workers=0, accelerator="cpu", batch_events=2, chunk_events=4)
    # only the 16 events of the 4 chunks not committed were computed again: less than one chunk lost
    assert s["timing"]["events"] == 16 and s["timing"]["chunks_written"] == 4
    np.testing.assert_array_equal(np.load(out / "film_feats.npy"), reference)
    assert not (out / ".partial").exists() and not list(out.glob(".*tmp"))

    # partial results made with another chunk size are discarded, not mixed in
    (out / "index.json").unlink()
    (out / "film_feats.npy").unlink()
    d = out / ".partial" / "film"
    d.mkdir(parents=True)
    (d / "plan.json").write_text(json.dumps({"chunk_events": 8, "batch_events": 2, "num_events": 32}))
    np.savez(d / "c000000.npz", feats=np.ones((8, 16), np.float32), missing=np.zeros(8, bool))
    ex.extract(backbone, film, out, num_workers=0, accelerator="cpu", batch_events=2, chunk_events=4)
    np.testing.assert_array_equal(np.load(out / "film_feats.npy"), reference)


def test_a_resume_at_another_precision_makes_the_film_afresh(backbone, tmp_path, monkeypatch):
    """A film's plan.json did not name the precision: killed at 32-true and resumed at bf16-true,
    its fp32 chunks were kept beside bf16 ones in one array, and no index said which precision."""
    film = make_film(tmp_path / "short.mp4", 8.0, width=64, height=48, audio=False, gop=30)  # 4 events
    run = dict(num_workers=0, accelerator="cpu", batch_events=2, chunk_events=2)
    ex.extract(backbone, film, tmp_path / "bf16", precision="bf16-true", **run)
    out = tmp_path / "out"
    orig = ex.FeatureExtractor.predict_step

    def killed_after_one_chunk(self, batch, batch_idx=0):
        if self.chunks_written:
            raise RuntimeError("killed")
        return orig(self, batch, batch_idx)

    monkeypatch.setattr(ex.FeatureExtractor, "predict_step", killed_after_one_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        ex.extract(backbone, film, out, **run)
    plan = json.loads((out / ".partial" / "short" / "plan.json").read_text())
    assert (out / ".partial" / "short" / "c000000.npz").is_file()
    monkeypatch.setattr(ex.FeatureExtractor, "predict_step", orig)
    s = ex.extract(backbone, film, out, precision="bf16-true", **run)
    assert s["timing"]["events"] == 4  # the fp32 chunk was discarded, not mixed in
    np.testing.assert_array_equal(np.load(out / "short_feats.npy"), np.load(tmp_path / "bf16" / "short_feats.npy"))
    assert plan.get("precision") == "32-true"
    index = json.loads((out / "index.json").read_text())
    assert index["precision"] == index["videos"]["short"]["precision"] == "bf16-true"
    assert ex.precision_name("32") == "32-true" and ex.precision_name("bf16") == "bf16-mixed"


def test_film_split_over_workers_is_identical(backbone, film, reference, tmp_path):
    """One film, two decoding workers taking alternate chunks: same arrays as one process."""
    out = tmp_path / "w2"
    s = ex.extract(backbone, film, out, num_workers=2, accelerator="cpu", batch_events=2, chunk_events=4)
    assert s["counts"]["ok"] == 1
    np.testing.assert_array_equal(np.load(out / "film_feats.npy"), reference)


def test_damaged_stretch_marks_events_missing(backbone, film, reference, tmp_path, capsys):
    bad = corrupt_stretch(film, tmp_path / "damaged.mp4", 0.45, 0.55)
    out = tmp_path / "feats"
    args = ["extract", "--num-workers", "0", "--accelerator", "cpu", "--batch-events", "2", "--chunk-events", "4"]
    assert main([*args, "--backbone", str(backbone), "--videos", str(bad), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "marked missing" in printed.out and "events/s" in printed.out
    assert "event/s" in printed.err  # the progress bar: rate and time left
    index = json.loads((out / "index.json").read_text())
    e = index["videos"]["damaged"]
    assert e["status"] == "ok" and 0 < e["missing_events"] < 16
    assert index["counts"]["missing_events"] == e["missing_events"] and index["counts"]["with_missing_events"] == 1
    store = FeatureStore(out)
    mask = store.missing("damaged")
    assert mask.sum() == e["missing_events"] and mask.shape == (32,)
    a, b = e["missing"][0]
    assert 8 <= a and b <= 24  # the stretch is in the middle of the film
    f = store.load("damaged")
    assert not f[mask].any()  # missing rows are zeros
    # events before the stretch are exactly the undamaged film's
    np.testing.assert_array_equal(f[: a - 1], reference[: a - 1])
    # the Python API reads the damaged film as extract does: the same zero rows, the same mask
    import moviessl

    emb = moviessl.embed_video(bad, backbone, device="cpu")
    np.testing.assert_array_equal(emb.missing, mask)
    np.testing.assert_allclose(emb.feats, f, rtol=1e-5, atol=1e-6)


def test_odd_streams_handled_or_refused_in_one_line(backbone, tmp_path, capsys):
    d = tmp_path / "odd"
    d.mkdir()
    make_film(d / "rotated.mp4", 4.0, width=96, height=64, rotation=90, audio=False)
    make_film(d / "vfr.mp4", 4.0, width=96, height=64, vfr=True)
    make_film(d / "angles.mkv", 4.0, width=96, height=64, video_streams=2)
    with av.open(str(d / "odd.mp4"), "w") as c:  # odd width and height (4:4:4, as x264 allows)
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 33, 17, "yuv444p"
        for i in range(90):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((17, 33, 3), i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(d / "audio_only.mp4"), "w") as c:
        a = c.add_stream("aac", rate=16000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        f.sample_rate = 16000
        for p in list(a.encode(f)) + list(a.encode()):
            c.mux(p)

    p = probe(d / "rotated.mp4")
    assert (p["width"], p["height"]) == (64, 96)  # shown upright, as a player shows it
    with VideoReader(d / "rotated.mp4") as r:
        assert r.rotation == 90 and r.get_frames([0]).shape == (1, 96, 64, 3)
    assert probe(d / "odd.mp4")["width"] == 33
    assert main(["probe", str(d / "audio_only.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"moviessl: error: {d / 'audio_only.mp4'}: no video stream (audio only)"

    out = tmp_path / "feats"
    args = ["extract", "--num-workers", "0", "--accelerator", "cpu", "--backbone", str(backbone)]
    assert main([*args, "--videos", str(d), "--out", str(out)]) == 0
    v = json.loads((out / "index.json").read_text())["videos"]
    assert {k for k, e in v.items() if e["status"] == "ok"} == {"rotated", "vfr", "angles", "odd"}
    assert v["audio_only"]["error"].endswith("no video stream (audio only)")
    assert v["vfr"]["num_events"] == 2 and FeatureStore(out).load("odd").shape == (2, 16)


def test_contextualize_treats_missing_events_as_padding():
    from moviessl.models import build_txe

    torch.manual_seed(0)
    txe = build_txe("txe_cpu", in_dim=8, dim=16, heads=2, mlp_dim=32, depth=1).eval()
    feats = torch.randn(12, 8)
    missing = np.zeros(12, bool)
    missing[4:6] = True
    a = ex.contextualize(txe, feats, window=5, missing=missing)
    other = feats.clone()
    other[4:6] = 100.0  # whatever a damaged stretch holds never reaches the other events
    b = ex.contextualize(txe, other, window=5, missing=missing)
    assert torch.equal(a, b) and not a[4:6].any() and a[6].abs().sum() > 0
    # a long film is run CTX_BLOCK events at a time: event 300 (second block) is its own centred window
    long = torch.randn(600, 8)
    whole = ex.contextualize(txe, long, window=5)
    with torch.no_grad():
        direct = txe(long[298:303][None])[0, 2]
    np.testing.assert_allclose(whole[300].numpy(), direct.numpy(), rtol=1e-5, atol=1e-6)
    assert whole.shape == (600, 16) and ex.CTX_BLOCK < 300
    # a video shorter than a window: the padding is masked, so each event's output is the TxE's on
    # the video's 3 events alone (attending to the zero padding changed every output)
    short = torch.randn(3, 8)
    with torch.no_grad():
        alone = txe(short[None])[0]
    np.testing.assert_allclose(ex.contextualize(txe, short, window=5).numpy(), alone.numpy(), rtol=1e-5, atol=1e-6)


def test_a_spread_film_is_written_only_when_every_chunk_is_in(backbone, film, reference, tmp_path):
    """Rank 0's end of a DDP run (:meth:`FeatureExtractor.finish_spread`): a film planned as spread
    with a chunk missing (a rank could not read it) keeps its partial results for a rerun; with all
    chunks in it is written as one process writes it, and its entry returned."""
    out = tmp_path / "feats"
    stream = ex.EventClipStream([("film", film)], INPUT, batch_events=2, chunk_events=4)
    module = ex.FeatureExtractor(torch.nn.Identity(), out, stream, {"backbone": "b"})
    with VideoReader(film) as r:
        info = stream.film_info(r, film)
    d = out / ".partial" / "film"
    d.mkdir(parents=True)
    (d / "plan.json").write_text(json.dumps({"num_events": 32, "info": info, "spread": True}))
    for k in range(8):
        if k != 5:
            np.savez(d / f"c{k:06d}.npz", feats=reference[4 * k : 4 * k + 4], missing=np.zeros(4, bool))
    np.savez(d / "c000005.npz", feats=reference[20:23], missing=np.zeros(3, bool))  # torn short
    assert module.finish_spread(["film", "other"]) == ({}, ["film"])
    assert not (out / "film_feats.npy").exists() and len(list(d.glob("c*.npz"))) == 8
    np.savez(d / "c000005.npz", feats=reference[20:24], missing=np.zeros(4, bool))
    written, left = module.finish_spread(["film"])
    assert left == [] and written["film"]["status"] == "ok" and written["film"]["num_events"] == 32
    np.testing.assert_array_equal(np.load(out / "film_feats.npy"), reference)
    assert not d.exists()


def test_a_rank_that_reads_a_spread_film_otherwise_does_none_of_it(film, tmp_path):
    """A rank whose reader finds another duration than rank 0 planned with (a read error while
    indexing) yields one error item instead of clips; the extractor logs it and records nothing
    (rank 0's end then finds the chunks missing and keeps the film for a rerun)."""
    stream = ex.EventClipStream([("film", film)], INPUT, batch_events=2, chunk_events=4)
    with VideoReader(film) as r:
        info = stream.film_info(r, film)
    stream.assignment = [[]]  # as shard_over_ranks leaves it: the film is not in any rank's whole videos
    stream.spread = {0: {**info, "duration_s": info["duration_s"] - 8.0, "num_events": 28}}
    items = list(stream)
    assert [(b["kind"], b["shared"]) for b in items] == [("error", True)]
    assert "this rank reads 64.000 s, rank 0 read 56.000 s" in items[0]["error"]
    stream.spread = {0: info}  # as planned: every chunk's clips, marked shared
    assert {(b["kind"], b["shared"]) for b in stream} == {("clips", True)}
    module = ex.FeatureExtractor(torch.nn.Identity(), tmp_path / "out", stream, {"backbone": "b"})
    module.predict_step(items[0])
    assert module.counts == {"ok": 0, "bad": 0} and not list((tmp_path / "out").glob(".index*"))


def test_an_unfinished_spread_film_keeps_its_partial_results_and_is_counted(backbone, film, tmp_path, monkeypatch):
    """The end of extract(): a spread film rank 0 could not finish (a chunk missing) keeps its
    partial folder for a rerun and is counted ``unfinished``; every other partial folder goes."""
    out = tmp_path / "feats"
    for vid in ("kept", "stale"):
        (out / ".partial" / vid).mkdir(parents=True)
        (out / ".partial" / vid / "c000000.npz").write_bytes(b"x")
    monkeypatch.setattr(ex.FeatureExtractor, "finish_spread", lambda self, ids, *how: ({}, ["kept"]))
    s = ex.extract(backbone, film, out, num_workers=0, accelerator="cpu", batch_events=2, chunk_events=16)
    assert s["counts"] == {"ok": 1, "bad": 0, "unfinished": 1}
    assert [p.name for p in (out / ".partial").iterdir()] == ["kept"]


# 16-mixed: bf16 on a CPU, as Lightning makes it; *-true: the TxE's weights in half, its inputs converted
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "bf16-true", "16-true"])
def test_ctx_added_later_equals_ctx_made_with_the_features(backbone, film, tmp_path, precision):
    """``--contextualizer`` on a folder extracted without one fills in the ctx files outside
    ``predict``: they must be what ``predict`` would have made, in the same precision (the TxE ran
    in fp32 on the CPU there, under bf16 autocast in ``predict``; a ``*-true`` precision failed in
    ``predict`` itself: the features reached its half weights in fp32)."""
    from moviessl.models import build_txe

    torch.manual_seed(0)
    kw = dict(preset="txe_cpu", in_dim=16, dim=32, heads=2, mlp_dim=64)
    txe = tmp_path / "txe.pt"
    save_checkpoint(
        txe,
        stage="context",
        arch=arch_spec("moviessl.models.txe:build_txe", **kw),
        state_dict=build_txe(**kw).state_dict(),
        meta={"window": 5, "token_stride_s": 2.0, "in_dim": 16},
    )
    run = dict(num_workers=0, accelerator="cpu", batch_events=2, chunk_events=16, precision=precision)
    ex.extract(backbone, film, tmp_path / "a", contextualizer=txe, **run)
    ex.extract(backbone, film, tmp_path / "b", **run)
    assert not (tmp_path / "b" / "film_ctx.npy").exists()
    ex.extract(backbone, film, tmp_path / "b", contextualizer=txe, **run)  # nothing to extract: ctx only
    np.testing.assert_array_equal(
        np.load(tmp_path / "b" / "film_feats.npy"), np.load(tmp_path / "a" / "film_feats.npy")
    )
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "film_ctx.npy"), np.load(tmp_path / "a" / "film_ctx.npy"))


@pytest.mark.parametrize(
    "precision, dtype",
    [
        ("transformer-engine", torch.bfloat16),
        ("transformer-engine-float16", torch.float16),
        ("bf16-true", torch.bfloat16),
        ("16-true", torch.float16),
        ("64-true", torch.float64),
        ("32-true", torch.float32),
        ("bf16-mixed", torch.float32),
        ("64", torch.float64),  # Lightning's aliases
        ("bf16", torch.float32),
    ],
)
def test_a_txe_outside_predict_holds_its_weights_as_predict_would(precision, dtype):
    """Lightning's TransformerEngine precision converts the module to its weights dtype, as a true
    half precision does (outside ``predict`` torch's layers are kept: no FP8)."""
    txe = torch.nn.Linear(4, 4)
    with ex.txe_as_in_predict(txe, None, "cpu", precision):
        assert next(txe.parameters()).dtype == dtype
        assert torch.is_autocast_enabled("cpu") == (precision.startswith("bf16") and dtype == torch.float32)


def test_a_txe_outside_predict_says_a_cpus_16_mixed_runs_as_bf16(caplog):
    """``16-mixed`` on a CPU is bf16 autocast: Lightning says so where it builds a trainer; a TxE's
    outputs added to features already there (no trainer) switched without a word."""
    import logging

    caplog.set_level(logging.WARNING, logger="moviessl")
    txe = torch.nn.Linear(4, 4)
    with ex.txe_as_in_predict(txe, None, "cpu", "16-mixed"):
        assert txe(torch.randn(2, 4)).dtype == torch.bfloat16
    assert [r.getMessage() for r in caplog.records] == [
        "precision 16-mixed runs as bf16-mixed on the CPU (a CPU has no fp16 AMP)"
    ]
    caplog.clear()
    with ex.txe_as_in_predict(txe, None, "cpu", "bf16-mixed"):
        pass
    assert caplog.records == []


def test_an_event_beside_a_damaged_stretch_is_read_through_a_window_within_its_own_stretch():
    """MaskPred trains on windows within one undamaged stretch; an event beside a damaged stretch was
    read through the video's window with the damaged events as padding inside it (fewer tokens, and
    a layout training never gave). Each stretch now reads as a video of its own would."""
    from moviessl.models import build_txe

    torch.manual_seed(0)
    txe = build_txe("txe_cpu", in_dim=8, dim=16, heads=2, mlp_dim=32, depth=1).eval()
    feats = torch.randn(14, 8)
    missing = np.zeros(14, bool)
    missing[5:7] = True
    for step in (1, 2):
        got = ex.contextualize(txe, feats, window=5, step=step, missing=missing)
        for lo, hi in ((0, 5), (7, 14)):
            alone = ex.contextualize(txe, feats[lo:hi], window=5, step=step)
            np.testing.assert_allclose(got[lo:hi].numpy(), alone.numpy(), rtol=1e-5, atol=1e-6)
        assert not got[5:7].any()


@pytest.mark.parametrize("codec,ext,fps", [("libx264", "mp4", 30), ("mpeg2video", "mpg", 25)])
def test_events_a_second_apart_are_read_in_one_pass_over_the_film(tmp_path, monkeypatch, codec, ext, fps):
    """At a 1-s stride (`--stride 1`) each clip reaches back into the one before, between its
    frames: those must not cost a seek back (a GOP each) or, in a file read by decode count (an
    MPEG program stream), a decode from frame 0 for every event."""
    import moviessl
    from moviessl.video import TARGET_FPS

    path = tmp_path / f"v.{ext}"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.codec_context.gop_size, s.codec_context.max_b_frames = 150, 2
        for i in range(12 * fps):
            f = np.full((32, 32, 3), (i * 7) % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    inp = {"num_frames": 16, "stride": 4, "short_side": 32, "crop": 32}
    with VideoReader(path) as r:  # indexed here: the stream's reader below decodes only for its clips
        n = r.num_frames
        want = [ex.clip_uint8(r, c, inp) for c in moviessl.video.event_centers(r.duration_s, 1.0)]
    decoded = []
    close = VideoReader.close
    monkeypatch.setattr(VideoReader, "close", lambda r: (decoded.append(r.frames_decoded), close(r)))
    stream = ex.EventClipStream([("v", path)], inp, stride_s=1.0, batch_events=4)
    clips = torch.cat([b["clips"] for b in stream if b["kind"] == "clips"]).numpy()
    np.testing.assert_array_equal(clips, np.stack(want))  # the frames of a clip read on its own
    span = inp["num_frames"] * inp["stride"] * fps / TARGET_FPS
    assert len(want) == 12 and decoded == [pytest.approx(n, abs=span)]


def test_a_corrupt_frame_only_a_later_clip_reads_does_not_cost_this_clip(tmp_path):
    """The one-pass read takes the next clips' earlier frames with this clip's; in a frame folder a
    corrupt JPEG among them failed the whole read, and this clip, which never uses that frame, was
    marked missing (zeros). The read-ahead now falls back to this clip's own frames."""
    import cv2

    from moviessl.video import reader_clip_indices

    d = tmp_path / "film"
    d.mkdir()
    for i in range(150):
        cv2.imwrite(str(d / f"frame_{i + 1:06d}.jpg"), np.full((32, 32, 3), (i * 7) % 256, np.uint8))
    inp = {"num_frames": 16, "stride": 4, "short_side": 32, "crop": 32}
    with VideoReader(d) as r:
        first = set(reader_clip_indices(r, 1.0, 16, 4).tolist())
        second = reader_clip_indices(r, 2.0, 16, 4).tolist()
        bad = next(i for i in second if i not in first and i < max(first))  # read ahead, used by the second only
    (d / f"frame_{bad + 1:06d}.jpg").write_bytes(b"not a jpeg")
    with VideoReader(d) as r:
        alone, missing_alone = ex.event_clip(r, 1.0, inp)
    with VideoReader(d) as r:
        clip, missing = ex.event_clip(r, 1.0, inp, later=ex.later_events([1.0, 2.0, 3.0], 0, inp))
        _, second_missing = ex.event_clip(r, 2.0, inp)
    assert not missing_alone and not missing and np.array_equal(clip, alone)
    assert second_missing  # the damage stays the second clip's


def test_a_batchs_missing_mask_is_made_on_the_cpu_whatever_the_default_device(film):
    """The stream's ``missing`` mask was made on torch's default device: under a user's
    ``torch.set_default_device("cuda")`` (which a forked loader worker inherits) on the GPU, beside
    CPU clips, which a forked worker cannot start and the loader's pinning refuses. It is made on the
    CPU, the values those made before."""
    import itertools

    from default_device import gpu_like_default_device

    def first():
        stream = ex.EventClipStream([("film", film)], INPUT, batch_events=2, chunk_events=4)
        return [(b["clips"], b["missing"]) for b in itertools.islice(stream, 2)]

    cpu = first()
    with gpu_like_default_device():
        got = first()
    assert len(got) == len(cpu) == 2
    assert all(t.device.type == "cpu" and torch.equal(t, c) for g, c2 in zip(got, cpu) for t, c in zip(g, c2))


class _FakeReader:
    """A 10-s, 30-fps reader whose frames all decode except those in ``missing`` (stand-ins)."""

    is_vfr, fps, num_frames, path = False, 30.0, 300, Path("fake.mp4")

    def __init__(self, missing):
        self.missing = set(missing)

    def get_frames(self, idx):
        return np.zeros((len(idx), 32, 32, 3), np.uint8)


@pytest.mark.parametrize("bad,missing", [(134, True), (158, True), (133, False), (159, False)])
def test_an_event_is_missing_when_any_frame_of_its_clip_did_not_decode(bad, missing):
    """The clip centred at 5 s, 4 x 8 on the 30-fps timeline, is frames 134, 142, 150, 158: a stand-in
    at its first or last frame makes the event missing, one just outside it does not (the damaged
    film above has stretches far wider than a clip, so the clip's ends went unchecked)."""
    clip, got = ex.event_clip(_FakeReader({bad}), 5.0, {**INPUT, "stride": 8})
    assert got is missing and clip.shape == (3, 4, 32, 32)


def test_a_resume_takes_committed_chunks_only_of_a_film_with_as_many_events(tmp_path):
    """The chunks an earlier run committed are skipped only when it counted the film's events as
    this run does: committed for another number of events (the film read shorter then), its chunk
    k holds other events than this run's chunk k, and every chunk is decoded again."""
    film = make_film(tmp_path / "short.mp4", 8.0, width=64, height=48, audio=False, gop=30)  # 4 events

    def chunks(done):
        stream = ex.EventClipStream([("short", film)], INPUT, batch_events=2, chunk_events=2, done=done)
        return sorted({b["chunk"] for b in stream if b["kind"] == "clips"})

    assert chunks({}) == [0, 1]
    assert chunks({"short": {"num_events": 4, "chunks": [0]}}) == [1]
    assert chunks({"short": {"num_events": 3, "chunks": [0]}}) == [0, 1]


def test_partial_results_of_a_video_replaced_since_are_discarded(tmp_path):
    """A film's committed chunks are resumed only while its file is the one they were made from (its
    size and modification time): chunks of a replaced video would be written out beside the new
    one's as one film. Every resume test above resumed an unchanged file."""
    out, src = tmp_path / "out", tmp_path / "v.mp4"
    src.write_bytes(b"x" * 10)
    d = out / ".partial" / "v"
    d.mkdir(parents=True)
    plan = {"chunk_events": 2, "batch_events": 2, "precision": "32-true"}
    st = src.stat()
    (d / "plan.json").write_text(json.dumps({**plan, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "num_events": 4}))
    np.savez(d / "c000000.npz", feats=np.ones((2, 16), np.float32), missing=np.zeros(2, bool))
    assert ex.scan_partials(out, [("v", src)], plan) == {"v": {"num_events": 4, "chunks": [0]}}
    src.write_bytes(b"y" * 12)  # the video replaced
    assert ex.scan_partials(out, [("v", src)], plan) == {} and not d.exists()
