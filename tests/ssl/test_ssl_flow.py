import os
import shutil

import numpy as np
import pytest
import torch
from ssl_testutil import moving_square, write_video

from moviessl.ssl.augment import flow_augment
from moviessl.ssl.flow import FlowCache, FlowParams, compute_flow, normalize_flow


def _textured_square(dx, n=6):
    """A textured 16x16 patch moving (dx, 0) px per frame over a flat background, 64x64."""
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    out = np.full((n, 64, 64, 3), 60, np.uint8)
    for t in range(n):
        x = 20 + dx * t
        out[t, 24:40, x : x + 16] = patch
    return out


@pytest.mark.parametrize("algo", ["dis", "farneback"])
def test_flow_direction_and_encoding(algo):
    p = FlowParams(algorithm=algo, short_side=64, bound=20.0)
    fr = compute_flow(_textured_square(2), p)
    assert fr.shape == (6, 64, 64, 3) and fr.dtype == np.uint8
    inside = fr[1, 28:36, 26:34].reshape(-1, 3).astype(float).mean(0)
    # bound 20 px at 256 -> 5 px at 64: +2 px/frame encodes as 127.5 * (1 + 0.4) ~ 178
    assert 150 < inside[0] < 200, inside
    assert abs(inside[1] - 127.5) < 15  # no vertical motion
    assert inside[2] > 60  # magnitude channel
    still = fr[1, 2:10, 2:10].reshape(-1, 3).astype(float).mean(0)
    assert abs(still[0] - 127.5) < 10 and still[2] < 25  # flat background: (almost) still
    left = compute_flow(_textured_square(-2), p)[1, 28:36, 26:34, 0].mean()
    assert left < 105


def test_edges_mode_differs_and_suppresses_uniform_motion():
    frames = np.roll(np.stack([np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)] * 2), 0, axis=0)
    frames[1] = np.roll(frames[0], 2, axis=1)  # whole frame pans: uniform flow
    raw = compute_flow(frames, FlowParams(short_side=64, mode="raw"))
    edg = compute_flow(frames, FlowParams(short_side=64, mode="edges"))
    assert raw[0, 16:48, 16:48, 2].mean() > 50  # raw: the pan is motion
    assert edg[0, 16:48, 16:48, 2].mean() < raw[0, 16:48, 16:48, 2].mean() / 2  # edges: mostly gone


def test_flow_cache_reuse_and_versioning(tmp_path):
    vid = write_video(tmp_path / "a.mp4", moving_square(0, n=12))
    frames = moving_square(0, n=12)
    calls = []

    def frames_fn():
        calls.append(1)
        return frames

    p = FlowParams(short_side=32)
    s1 = FlowCache(tmp_path / "cache", p).source(vid, frames_fn)
    assert s1.num_frames == 12 and s1.get([0, 5]).shape == (2, 32, 42, 3)
    c2 = FlowCache(tmp_path / "cache", p)
    s2 = c2.source(vid, frames_fn)
    assert len(calls) == 1 and c2.computed == 0, "second use must read the cache"
    np.testing.assert_array_equal(s1.get(range(12)), s2.get(range(12)))
    c3 = FlowCache(tmp_path / "cache", FlowParams(short_side=32, bound=10.0))
    c3.source(vid, frames_fn)
    assert len(calls) == 2 and c3.computed == 1 and c3.dir != c2.dir, "new parameters, new cache version"
    # an edited video invalidates its entry
    write_video(vid, moving_square(1, n=12))
    c2.source(vid, frames_fn)
    assert len(calls) == 3


def test_a_data_folder_moved_with_its_cache_keeps_its_frames_and_flow(tmp_path, monkeypatch):
    """The frame and flow caches keyed each video by its absolute path: the data folder moved with
    its default cache (``<clip list folder>/.moviessl_cache``; a cluster's scratch to another
    mount) decoded every video again and computed every flow again (days for a K400 flow cache),
    beside the old entries. A video under the cache's folder is keyed by its place there now; an
    entry an earlier version keyed by the absolute path is still read."""
    from moviessl.ssl import clipcache
    from moviessl.ssl.clipcache import FrameCache, _source_key, default_cache_dir

    data = tmp_path / "scratch" / "data"
    (data / "v").mkdir(parents=True)
    write_video(data / "v" / "a.mp4", moving_square(0, n=12))
    (data / "train.csv").write_text("v/a.mp4\n")
    frames, calls = moving_square(0, n=12), []

    def frames_fn():
        calls.append(1)
        return frames

    p = FlowParams(short_side=32)
    cache = default_cache_dir(data / "train.csv")
    first = FrameCache(cache, 32).source(data / "v" / "a.mp4").get(range(12))
    flow = FlowCache(cache, p).source(data / "v" / "a.mp4", frames_fn).get(range(12))
    moved = tmp_path / "home" / "data"
    moved.parent.mkdir()
    shutil.move(data, moved)

    def boom(*a, **k):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(clipcache, "LiveSource", boom)
    cache = default_cache_dir(moved / "train.csv")
    video = moved / "v" / "a.mp4"
    np.testing.assert_array_equal(FrameCache(cache, 32).source(video).get(range(12)), first)
    flows = FlowCache(cache, p)
    assert flows.is_cached(video)
    np.testing.assert_array_equal(flows.source(video, frames_fn).get(range(12)), flow)
    assert calls == [1] and flows.computed == 0
    # an entry an earlier version wrote, under the key of the absolute path: still read
    for folder in (FrameCache(cache, 32).dir, flows.dir):
        for f in folder.glob("a-*"):
            f.rename(folder / f"a-{_source_key(video)}{f.suffix}")
    np.testing.assert_array_equal(FrameCache(cache, 32).source(video).get(range(12)), first)
    assert FlowCache(cache, p).is_cached(video)


def test_flow_augment_flip_negates_dx():
    x = torch.full((4, 3, 2, 16, 16), 128, dtype=torch.uint8)
    x[:, 0] = 200  # moving right
    torch.manual_seed(0)
    out = flow_augment(x, 8, area=(1.0, 1.0), aspect=(1.0, 1.0), flip_p=1.0)
    assert out.shape == (4, 3, 2, 8, 8)
    assert torch.allclose(out[:, 0], normalize_flow(torch.tensor(55.0)).expand_as(out[:, 0]), atol=1e-3)
    out = flow_augment(x, 8, area=(1.0, 1.0), aspect=(1.0, 1.0), flip_p=0.0)
    assert torch.allclose(out[:, 0], normalize_flow(torch.tensor(200.0)).expand_as(out[:, 0]), atol=1e-3)
    assert torch.allclose(out[:, 0], torch.tensor((200 / 255 - 0.5) / 0.25), atol=1e-3)
    # MaCLR's flow input: the image at mean 0 / std 1, i.e. v / 255 (the paper preset's modist.flow_input)
    out = flow_augment(x, 8, area=(1.0, 1.0), aspect=(1.0, 1.0), flip_p=0.0, flow_input="maclr")
    assert torch.allclose(out[:, 0], torch.tensor(200 / 255), atol=1e-3)
    assert torch.allclose(out[:, 1], torch.tensor(128 / 255), atol=1e-3)


def test_flow_augment_given_box_crops_like_the_rgb_view():
    # MoDist's aligned crops: a flow clip cropped with its RGB view's box/flip shows the same region
    from moviessl.video import ConsistentAugment

    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 3, 2, 32, 32), dtype=torch.uint8)
    aug = ConsistentAugment(16, blur_p=0.0, jitter_p=0.0, gray_p=0.0, normalize=False, area=(0.3, 0.6))
    p = aug.sample_params(3, 32, 32)
    p["flip"] = torch.tensor([True, False, True])
    rgb = aug.apply_params(img.float() / 255.0, p)
    box = p["box"].float() / 32.0
    fl = flow_augment(img, 16, box=box, flip=p["flip"], negate_dx_on_flip=False)
    back = fl * 0.25 + 0.5  # undo normalize_flow: the [0, 1] image again
    assert torch.allclose(back, rgb, atol=1e-4)
    # dx is still mirrored on flipped clips when asked (raw flow)
    fl2 = flow_augment(img, 16, box=box, flip=p["flip"])
    assert torch.allclose(fl2[0, 0] * 0.25 + 0.5, 1.0 - rgb[0, 0], atol=1e-4)
    assert torch.allclose(fl2[1, 0] * 0.25 + 0.5, rgb[1, 0], atol=1e-4)


def test_flow_stores_png_lossless_jpeg_close_and_smaller(tmp_path):
    """``store: png`` gives the npy store's values exactly, ``jpeg`` within a few levels; both store
    fewer bytes; an npy cache keeps its folder (the image settings are not part of its tag)."""
    vid = write_video(tmp_path / "a.mp4", moving_square(0, n=12))
    frames = _textured_square(2, n=12)
    got, size = {}, {}
    for store in ("npy", "png", "jpeg"):
        cache = FlowCache(tmp_path / "cache", FlowParams(short_side=64, store=store))
        src = cache.source(vid, lambda: frames)
        again = FlowCache(tmp_path / "cache", FlowParams(short_side=64, store=store)).source(vid, lambda: 1 / 0)
        got[store] = src.get(range(12))
        np.testing.assert_array_equal(again.get([3, 0, 11]), got[store][[3, 0, 11]])
        assert src.num_frames == 12 and got[store].shape == (12, 64, 64, 3) and got[store].dtype == np.uint8
        size[store] = sum(f.stat().st_size for f in cache.dir.glob("*.npy"))
    np.testing.assert_array_equal(got["png"], got["npy"])
    err = np.abs(got["jpeg"].astype(int) - got["npy"].astype(int))
    assert err.mean() < 1.0 and err.max() <= 16, (err.mean(), err.max())
    assert size["png"] < size["npy"] / 3 and size["jpeg"] < size["npy"] / 3, size
    tags = {s: FlowParams(store=s).tag() for s in ("npy", "png", "jpeg")}
    assert len(set(tags.values())) == 3
    assert FlowParams(jpeg_quality=50).tag() == tags["npy"] == FlowParams(store="npy").tag()
    assert FlowParams(store="jpeg", jpeg_quality=50).tag() != tags["jpeg"]


def test_flow_store_errors_name_the_setting_or_the_file(tmp_path):
    from moviessl.config import load_config
    from moviessl.errors import BadInputError

    with pytest.raises(BadInputError, match="flow.store"):
        load_config("backbone", "cpu", ["flow.store=webp"])  # at load, before any data is read
    with pytest.raises(BadInputError, match="flow.jpeg_quality"):
        load_config("backbone", "paper", ["flow.jpeg_quality=0"])
    assert load_config("backbone", "paper").flow.store == "jpeg"
    vid = write_video(tmp_path / "a.mp4", moving_square(0, n=6))
    cache = FlowCache(tmp_path / "cache", FlowParams(short_side=32, store="png"))
    cache.source(vid, lambda: moving_square(0, n=6))

    class Crashing:  # frames that change size mid-video, a decoder crash: the video is bad, not the job
        num_frames = 6

        def get(self, idx):
            raise RuntimeError("decoder crashed")

    other = write_video(tmp_path / "b.mp4", moving_square(0, n=6))
    with pytest.raises(BadInputError, match="cannot compute its flow .RuntimeError: decoder crashed") as e:
        cache.source(other, Crashing())
    assert e.value.path == str(other) and len(list(cache.dir.glob("b-*"))) == 0
    (npy,) = cache.dir.glob("*.npy")
    data = np.load(npy)
    np.save(npy, np.zeros_like(data))  # same size, no image left in it
    with pytest.raises(BadInputError, match="unreadable; delete the file") as e:
        FlowCache(tmp_path / "cache", FlowParams(short_side=32, store="png")).source(vid, lambda: 1 / 0).get([2])
    assert e.value.path == str(npy)


@pytest.mark.parametrize(
    "setting", ["flow.algorithm=tvl1", "flow.mode=edge", "flow.dis_preset=slow", "flow.algorithm=farneback flow.mode=x"]
)
def test_a_misspelt_flow_setting_is_refused_at_config_load(clip_list, tmp_path, setting):
    """A flow setting the estimator does not know is a config error, said before any video is read.
    It used to surface only when the first flow was computed, inside the caching pass, as the error
    of that video: every video of the list was "skipped as bad" (each one opened first, hours at
    K400's size) and the run ended on "only 0 usable videos"."""
    from ssl_testutil import tiny_overrides

    from moviessl.config import load_config
    from moviessl.errors import BadInputError
    from moviessl.ssl.pretrain import pretrain

    overrides = setting.split()
    key = overrides[-1].split("=")[0]
    with pytest.raises(BadInputError, match=key):
        load_config("backbone", "cpu", overrides)
    with pytest.raises(BadInputError, match=key):
        FlowParams(**{key.split(".")[1]: overrides[-1].split("=")[1]})
    # the run's own error, not every video's
    cfg = load_config("backbone", "cpu", [*tiny_overrides(), "trainer.max_steps=1"])
    cfg.flow.algorithm = "tvl1"  # a config built in code, past the loader's checks
    with pytest.raises(BadInputError, match="flow.algorithm"):
        pretrain("modist", clip_list, tmp_path / "run", cfg, run_probe=False, progress=False)


def test_an_encoded_flow_source_holds_no_per_frame_table(tmp_path):
    """A loader worker keeps one source per video it has read (K400: 240k), so a long video's image
    offsets stay in the file; what a source holds does not grow with the video's length."""
    import pickle

    vid = write_video(tmp_path / "a.mp4", moving_square(0, n=6))
    sizes = []
    for n in (10, 400):
        frames = np.repeat(_textured_square(1, n=2)[:, ::4, ::4], n // 2, axis=0)
        cache = FlowCache(tmp_path / f"c{n}", FlowParams(algorithm="farneback", short_side=16, store="jpeg"))
        src = cache.source(vid, lambda frames=frames: frames)
        assert src.get([n - 1]).shape == (1, 16, 16, 3)
        sizes.append(len(pickle.dumps(src)))
    assert sizes[1] - sizes[0] < 100, sizes


@pytest.mark.parametrize("n", [1, 2, 5, 6, 11])
def test_flow_in_chunks_is_the_flow_of_the_whole_video(n):
    from moviessl.ssl.flow import ArrayFrames, iter_flow

    frames = _textured_square(1, n=n)
    p = FlowParams(algorithm="farneback", short_side=64)
    whole = compute_flow(frames, p)
    chunks = list(iter_flow(ArrayFrames(frames), p, chunk=5))
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    assert max(len(c) for c in chunks) <= 5 and len(whole) == n


class _ChunkSource:
    """A frame source with its own ``chunks`` (as LiveSource), giving the listed pieces."""

    def __init__(self, pieces, num_frames):
        self.pieces, self.num_frames = pieces, num_frames

    def chunks(self, size):
        yield from self.pieces


def test_an_empty_chunk_from_a_source_is_skipped_and_no_chunk_at_all_is_an_error():
    """An empty piece (a source padding its last read) raised IndexError on its last gray frame, and a
    source that gave no piece an AttributeError on ``None.shape``."""
    from moviessl.ssl.flow import iter_flow

    frames = _textured_square(1, n=6)
    p = FlowParams(algorithm="farneback", short_side=64)
    empty = frames[:0]
    got = list(iter_flow(_ChunkSource([empty, frames[:3], empty, frames[3:], empty], 6), p))
    np.testing.assert_array_equal(np.concatenate(got), compute_flow(frames, p))
    with pytest.raises(ValueError, match="reported 6 but gave none"):
        list(iter_flow(_ChunkSource([empty], 6), p))


@pytest.mark.parametrize("store", ["npy", "png", "jpeg"])
def test_a_long_video_is_read_and_stored_a_chunk_at_a_time(tmp_path, monkeypatch, store):
    """The flow cache never asks a frame source for more than ``FLOW_CHUNK`` frames (a feature-length
    film's frames are never all in RAM) and stores what it would from the whole array."""
    import moviessl.ssl.flow as flow_mod

    frames = _textured_square(1, n=11)
    vid = write_video(tmp_path / "a.mp4", moving_square(0, n=6))
    p = FlowParams(algorithm="farneback", short_side=64, store=store)
    whole = FlowCache(tmp_path / "whole", p).source(vid, lambda: frames)  # one chunk
    monkeypatch.setattr(flow_mod, "FLOW_CHUNK", 4)

    class Source:
        num_frames, asked = 11, []

        def get(self, idx):
            self.asked.append(len(idx))
            return frames[np.asarray(idx)]

    chunked = FlowCache(tmp_path / "chunked", p).source(vid, Source())
    assert Source.asked == [4, 4, 3]
    np.testing.assert_array_equal(chunked.get(range(11)), whole.get(range(11)))
    (a,), (b,) = (list((tmp_path / d).rglob("*.npy")) for d in ("chunked", "whole"))
    assert a.read_bytes() == b.read_bytes()


def test_a_video_decoded_on_the_fly_gives_its_flow_chunk_by_chunk(tmp_path, monkeypatch):
    """The paper preset's path (no frame cache): one reader decodes the video in order, a chunk at a
    time, and the flow is the one of all its frames at once."""
    import moviessl.ssl.flow as flow_mod
    from moviessl.ssl import clipcache
    from moviessl.ssl.clipcache import LiveSource
    from moviessl.video import VideoReader

    vid = write_video(tmp_path / "a.mp4", moving_square(0, n=12))
    live = LiveSource(vid, 32)
    pieces = list(live.chunks(5))
    assert [len(c) for c in pieces] == [5, 5, 2]
    np.testing.assert_array_equal(np.concatenate(pieces), live.all())
    # large frames come fewer at a time: at most max_bytes of them decoded at the video's own size
    with VideoReader(vid) as r:
        frame_bytes = r.width * r.height * 3
    assert [len(c) for c in live.chunks(5, max_bytes=3 * frame_bytes + 1)] == [3, 3, 3, 3]
    assert [len(c) for c in live.chunks(5, max_bytes=1)] == [1] * 12
    p = FlowParams(algorithm="farneback", short_side=32)
    whole = FlowCache(tmp_path / "whole", p).source(vid, live.all).get(range(12))
    monkeypatch.setattr(flow_mod, "FLOW_CHUNK", 5)
    np.testing.assert_array_equal(FlowCache(tmp_path / "chunked", p).source(vid, live).get(range(12)), whole)
    monkeypatch.setattr(clipcache, "CHUNK_BYTES", 2 * frame_bytes)  # chunks of 2: the same flow
    np.testing.assert_array_equal(FlowCache(tmp_path / "bounded", p).source(vid, live).get(range(12)), whole)


def test_the_frame_cache_is_written_a_chunk_at_a_time(tmp_path, monkeypatch):
    from moviessl.ssl import clipcache

    vid = write_video(tmp_path / "a.mp4", moving_square(0, n=12))
    want = clipcache.LiveSource(vid, 32).all()
    monkeypatch.setattr(clipcache, "DECODE_CHUNK", 5)
    src = clipcache.FrameCache(tmp_path / "cache", 32).source(vid)
    np.testing.assert_array_equal(src.all(), want)
    assert (src.meta["num_frames"], src.meta["height"], src.meta["width"]) == (12, *want.shape[1:3])


def test_a_video_with_a_non_ascii_name_met_under_a_non_utf8_locale_has_its_cache_key(tmp_path):
    """Under LC_ALL=C with PYTHONUTF8=0 'Amélie_1.mp4' of a clip list is the string of surrogate
    escapes of its bytes (PEP 383): the frame / flow cache key hashed ``str.encode()`` of its path and
    ended pretraining in a UnicodeEncodeError. It hashes the name's bytes: the key is the one the same
    file has under a UTF-8 locale, so a cache made under either is read under the other."""
    from moviessl.ssl.clipcache import _source_key

    video = tmp_path / "Amélie_1.mp4"
    video.write_bytes(b"\0" * 16)
    held = tmp_path / os.fsencode(video.name).decode("ascii", "surrogateescape")  # the ASCII locale's name
    assert _source_key(held, tmp_path) == _source_key(video, tmp_path)
    assert _source_key(held) == _source_key(video)


def test_a_bad_video_noted_with_non_ascii_text_is_read_back_under_an_ascii_locale(tmp_path, monkeypatch):
    """A video's cached failure (``.bad``, UTF-8 as every text file here) holds its decoder's words,
    which may name the file ('Amélie_1.mp4'); read back in the locale's encoding, under LC_ALL=C with
    PYTHONUTF8=0 the next run met a UnicodeDecodeError traceback instead of skipping a known bad video."""
    import subprocess
    import sys

    from moviessl.errors import BadInputError
    from moviessl.ssl import clipcache

    video = tmp_path / "Amélie_1.mp4"
    video.write_bytes(b"\0" * 64)
    cause = "cannot decode 'Amélie_1.mp4' (moov atom not found)"

    def bad(path, *a, **k):
        raise BadInputError(path, cause)

    monkeypatch.setattr(clipcache, "LiveSource", bad)
    with pytest.raises(BadInputError):
        clipcache.FrameCache(tmp_path / "cache", 32).source(video)
    code = (
        "import sys\n"
        "from moviessl.errors import BadInputError\n"
        "from moviessl.ssl.clipcache import FrameCache\n"
        "try:\n"
        "    FrameCache(sys.argv[1] + '/cache', 32).source(sys.argv[2])\n"
        "except BadInputError as e:\n"
        "    sys.stdout.buffer.write(e.cause.encode('utf-8'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, os.fsencode(tmp_path), os.fsencode(video)],
        env={**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.decode("utf-8") == cause, done.stderr[-600:]
