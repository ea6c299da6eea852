import json
import os
import time

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


def test_ranks_build_a_cold_cache_from_their_own_share(clip_list, tmp_path, monkeypatch):
    """Under torchrun / srun every rank visits every video, starting at its own share: rank 1 of 2
    decodes the second half first, and ends with the same list (order, bad videos) as one process."""
    from moviessl.dist import launch_rank, rotated_order

    assert rotated_order(5) == [0, 1, 2, 3, 4] and rotated_order(5, 1, 2) == [2, 3, 4, 0, 1]
    assert rotated_order(13, 3, 4) == [9, 10, 11, 12, *range(9)] and rotated_order(0, 1, 2) == []
    for env, want in (
        ({"RANK": "1", "WORLD_SIZE": "2"}, (1, 2)),
        ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8"}, (5, 8)),
        ({"WORLD_SIZE": "2"}, (0, 1)),  # Lightning's own launcher before it starts the other ranks
        ({}, (0, 1)),
    ):
        for k in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "JSM_NAMESPACE_RANK", "JSM_NAMESPACE_SIZE"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert launch_rank() == want

    items = read_clip_list(clip_list)
    one = ClipDataset(items, "pair", num_frames=8, stride=2, short_side=32, frame_cache=FrameCache(tmp_path / "a", 32))
    one.prepare(progress=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    decoded = []
    real = clipcache.LiveSource

    def spy(path, *a, **k):
        decoded.append(path.name)
        return real(path, *a, **k)

    monkeypatch.setattr(clipcache, "LiveSource", spy)
    two = ClipDataset(items, "pair", num_frames=8, stride=2, short_side=32, frame_cache=FrameCache(tmp_path / "b", 32))
    two.prepare(progress=False)
    assert decoded[0] == items[len(items) // 2][0].name and sorted(decoded) == sorted(p.name for p, _ in items)
    assert two.items == one.items and two.bad == one.bad and len(two) == 12


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
    few = ClipDataset([items[bad_i]] * 3, "single", num_frames=4, stride=2, short_side=32)
    with pytest.raises(BadInputError, match="every one of the clip list's 3 videos is bad"):  # not "9 consecutive"
        few[0]


def test_frames_on_the_fly_index_each_video_once(clip_list, monkeypatch):
    """Decoding on the fly (the paper preset) reopens a video for each clip of each item: the demux
    pass over the file's packets is paid once per video and process, not once per clip."""
    from moviessl.video import reader as reader_mod

    monkeypatch.setattr(reader_mod, "_index_memo", reader_mod._IndexMemo())
    passes = []
    real = reader_mod._AVFile._open
    monkeypatch.setattr(reader_mod._AVFile, "_open", lambda self, *a: passes.append(self.path.name) or real(self, *a))
    items = [it for it in read_clip_list(clip_list) if "bad" not in it[0].name][:3]
    ds = ClipDataset(items, "pair", num_frames=4, stride=2, short_side=32)
    for _ in range(3):
        for i in range(len(ds)):
            assert ds[i]["video"].shape == (2, 3, 4, 32, 32)
    assert sorted(passes) == sorted(p.name for p, _ in items)


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


class _RampSource:
    """Frames whose red channel is the column (0..255 across the width), green the row."""

    fps, frame_times = 30.0, None  # constant rate

    def __init__(self, h, w, n=40):
        self.num_frames, self.h, self.w = n, h, w

    def get(self, idx):
        col = np.linspace(0, 255, self.w)[None, :].repeat(self.h, 0)
        row = np.linspace(0, 255, self.h)[:, None].repeat(self.w, 1)
        frame = np.stack([col, row, np.zeros_like(col)], -1).round().astype(np.uint8)
        return np.repeat(frame[None], len(list(idx)), 0)


def _ramp_dataset(crop_boxes, h=32, w=57, flow=None):
    ds = ClipDataset([("v.mp4", 0)], "pair", num_frames=4, stride=2, short_side=h, crop_boxes=crop_boxes)
    ds._sources[0] = _RampSource(h, w)
    if flow is not None:
        ds.flow_cache = object()  # any cache: _flow is served below
        ds._flow = lambda i: flow
    return ds


def test_full_frame_crops_span_the_frames_width():
    """``crop_boxes``: CVRL's random resized crop on the whole (here 16:9) frame, not on a square cut
    of it -- near-whole-frame crops reach both side edges, which no crop of a square can."""
    torch.manual_seed(0)
    boxes = dict(size=24, area=(0.9, 1.0), aspect=(1.6, 1.9), attempts=100, flow_size=None, align=True)
    ds = _ramp_dataset(boxes)
    spans = []
    for _ in range(10):
        v = ds[0]["video"]
        assert v.shape == (2, 3, 4, 24, 24) and v.dtype == torch.uint8
        red = v[:, 0].float()  # column ramp
        assert torch.equal(red[:, 0], red[:, -1])  # one box per clip, shared by its frames
        spans.append(float((red[:, 0, :, -1] - red[:, 0, :, 0]).mean()))
    square_max = 255 * 31 / 56  # the widest column span a 32-px square of a 57-px-wide frame shows
    assert min(spans) > square_max + 40
    # the square cut (no crop_boxes) never spans more than the square
    sq = _ramp_dataset(None)
    red = sq[0]["video"][:, 0].float()
    assert red.shape[-1] == 32 and float((red[:, 0, :, -1] - red[:, 0, :, 0]).max()) <= square_max + 1


@pytest.mark.parametrize("boxes", [None, dict(size=24, area=(0.3, 1.0), aspect=(0.8, 1.25), attempts=10)])
def test_an_item_is_drawn_and_made_on_the_cpu_whatever_the_default_device(boxes):
    """Under a user's ``torch.set_default_device("cuda")`` an item's seed was drawn from the GPU's
    stream and its label / index / skipped tensors were made on the GPU (a forked loader worker cannot
    start CUDA, pinning refuses them). The item is the one drawn on the CPU."""
    from default_device import gpu_like_default_device

    ds = _ramp_dataset(boxes if boxes is None else {**boxes, "flow_size": None, "align": True})
    torch.manual_seed(3)
    cpu = ds[0]
    with gpu_like_default_device():
        torch.manual_seed(3)
        item = ds[0]
    assert item.keys() == cpu.keys() == {"video", "label", "index", "skipped"}
    assert all(v.device.type == "cpu" and torch.equal(v, cpu[k]) for k, v in item.items())


@pytest.mark.parametrize("align", [True, False])
def test_full_frame_crops_give_the_flow_its_views_box(align):
    torch.manual_seed(1)
    boxes = dict(size=24, area=(0.3, 0.5), aspect=(0.8, 1.25), attempts=100, flow_size=12, align=align)
    ds = _ramp_dataset(boxes, flow=_RampSource(16, 28))  # flow stored at half the resolution
    same = []
    for _ in range(6):
        it = ds[0]
        assert it["video"].shape == (2, 3, 4, 24, 24) and it["flow"].shape == (2, 3, 16, 12, 12)
        # the ramps are in fractions of the frame, so an aligned flow clip shows the same region
        v_edges = it["video"][:, :2, 0][..., [0, -1], :][..., [0, -1]].float()
        f_edges = it["flow"][:, :2, 0][..., [0, -1], :][..., [0, -1]].float()
        same.append(bool(((v_edges - f_edges).abs() < 16).all()))
    assert all(same) if align else not any(same)


def test_cached_sources_keep_a_bounded_number_of_files_open(tmp_path):
    """A loader worker reads clips of every video of the set over an epoch: the sources it keeps must
    not each keep a memory map (one file descriptor each) open, or a Kinetics-size set runs out."""
    import os

    from moviessl.ssl.clipcache import OPEN_MAPS, CachedSource

    n = OPEN_MAPS + 200
    sources = []
    for k in range(n):
        np.save(tmp_path / f"{k}.npy", np.full((4, 2, 2, 3), k % 251, np.uint8))
        sources.append(CachedSource(tmp_path / f"{k}.npy", {"src": f"v{k}.mp4", "num_frames": 4, "fps": 30}))
    before = len(os.listdir("/proc/self/fd"))
    for k, src in enumerate(sources):
        assert src.get([1, 3]).shape == (2, 2, 2, 3) and src.get([0])[0, 0, 0, 0] == k % 251
    assert len(os.listdir("/proc/self/fd")) - before <= OPEN_MAPS
    assert sources[0].get([2])[0, 0, 0, 0] == 0  # reopened after it fell out


@pytest.mark.parametrize("store", ["npy", "jpeg"])
def test_a_warm_flow_cache_opens_no_video_when_preparing(clip_list, tmp_path, monkeypatch, store):
    """MoDist decoding on the fly (the paper preset) with its flow cached: a (re)start does not read
    every video's header on every rank; the videos are opened when their clips are drawn."""
    from moviessl.ssl.flow import FlowCache, FlowParams

    items = read_clip_list(clip_list)
    kw = dict(num_frames=4, stride=2, short_side=32, flow_frames=4, flow_stride=2)
    params = FlowParams(algorithm="farneback", short_side=32, store=store)
    first = ClipDataset(items, "pair", flow_cache=FlowCache(tmp_path, params), **kw).prepare(progress=False)
    assert len(first) == 12 and len(first.bad) == 1
    import moviessl.ssl.data as data_mod

    opened = []
    real = data_mod.LiveSource
    monkeypatch.setattr(data_mod, "LiveSource", lambda p, *a, **k: opened.append(p.name) or real(p, *a, **k))
    again = ClipDataset(items, "pair", flow_cache=FlowCache(tmp_path, params), **kw).prepare(progress=False)
    assert opened == ["bad0.mp4"]  # only the video without flow (it fails again, and is dropped again)
    assert again.items == first.items and again.bad.keys() == first.bad.keys()
    item = again[0]
    assert item["video"].shape[:3] == (2, 3, 4) and item["flow"].shape[0] == 2  # drawn, video opened lazily


@pytest.mark.parametrize("frames", ["cached", "on the fly"])
def test_a_cold_cache_is_built_by_loader_workers(clip_list, tmp_path, monkeypatch, frames):
    """``prepare(num_workers=2)``: the frames (and MoDist's flow) of a cold cache are decoded and
    computed in two worker processes, none in the main one; the same videos are kept and the same
    bad one dropped as without workers, and the cached arrays are the same."""
    import os

    from moviessl.ssl.flow import FlowCache, FlowParams

    pids = tmp_path / "pids"
    real_chunks = clipcache.LiveSource.chunks

    def decode(self, size):  # a video's one pass, by the frame cache or by the flow
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real_chunks(self, size)

    monkeypatch.setattr(clipcache.LiveSource, "chunks", decode)
    items = read_clip_list(clip_list)
    params = FlowParams(algorithm="farneback", short_side=32)

    def dataset(root):
        fc = FrameCache(root, 32) if frames == "cached" else None
        kw = dict(num_frames=4, stride=2, short_side=32, flow_frames=4, flow_stride=2)
        return ClipDataset(items, "pair", frame_cache=fc, flow_cache=FlowCache(root, params), **kw)

    one = dataset(tmp_path / "one").prepare(progress=False)
    pids.unlink()
    two = dataset(tmp_path / "two").prepare(progress=False, num_workers=2)
    built = pids.read_text().split()
    assert str(os.getpid()) not in built and len(built) == 12 and len(set(built)) == 2
    assert two.items == one.items and two.bad.keys() == one.bad.keys() and len(two) == 12
    for i in range(len(one)):
        assert np.array_equal(one._flow(i).get(range(40)), two._flow(i).get(range(40)))
        assert np.array_equal(one._source(i).get([0, 39]), two._source(i).get([0, 39]))


@pytest.mark.parametrize("cached", [False, True])
def test_variable_rate_video_clips_map_by_frame_times(tmp_path, cached):
    """A variable-rate file's clips are the frames on screen at each timeline time, as extraction
    reads them (VideoReader.indices_at), not frames spaced by its average rate; cache entries written
    without the times get them from the container's index, without decoding the frames again."""
    from ssl_testutil import write_video

    from moviessl.video import VideoReader
    from moviessl.video.timeline import clip_timeline, timeline_length, timeline_to_native

    n = 60  # frame i is flat grey 4*i; durations alternate 20/50/50 ms (average 40 ms, 25 fps)
    dur = np.where(np.arange(n) % 3 == 0, 20, 50)
    pts = np.concatenate([[0], np.cumsum(dur)[:-1]]).tolist()
    frames = np.repeat((4 * np.arange(n, dtype=np.uint8))[:, None, None, None], 3, axis=3)
    vid = write_video(tmp_path / "vfr.mkv", np.broadcast_to(frames, (n, 32, 48, 3)), pts_ms=pts)
    cache = FrameCache(tmp_path / "cache", 32) if cached else None
    ds = ClipDataset([(vid, None)], "eval", num_frames=8, stride=2, short_side=32, frame_cache=cache)
    src = ds._source(0)
    with VideoReader(vid) as r:
        assert r.is_vfr
        total = timeline_length(src.num_frames, src.fps)
        want = r.indices_at(clip_timeline(3, 8, 2, total) / 30.0)
    by_rate = timeline_to_native(clip_timeline(3, 8, 2, total), src.num_frames, src.fps)
    assert not np.array_equal(want, by_rate)  # the two mappings differ on this clip
    got = ds._frames(src.get, 3, 8, 2, total, src)[:, 16, 24, 0]
    np.testing.assert_allclose(got, 4 * want, atol=3)
    if cached:  # an entry cached before frame times were kept: they are added from the index
        _, meta_p, _ = cache.paths(vid)
        meta = json.loads(meta_p.read_text())
        np.testing.assert_allclose(meta["frame_times"], np.array(pts) / 1000)
        del meta["frame_times"]
        meta_p.write_text(json.dumps(meta))
        again = FrameCache(tmp_path / "cache", 32).source(vid)
        np.testing.assert_allclose(again.frame_times, np.array(pts) / 1000)
        assert "frame_times" in json.loads(meta_p.read_text())


@pytest.mark.parametrize("sampler", ["cvrl", "shift"])
def test_pair_starts_leave_room_for_a_longer_flow_clip(sampler):
    """An 8 x 8 clip spans 56 timeline frames, its 16 x 4 flow clip 60: every start leaves room for
    both, or the flow clip of a start near the end wrapped to the video's first frames."""
    ds = ClipDataset(
        [],
        "pair",
        num_frames=8,
        stride=8,
        short_side=32,
        flow_cache=object(),
        flow_frames=16,
        flow_stride=4,
        pair_sampler=sampler,
    )
    rng = np.random.default_rng(0)
    starts = [s for _ in range(2000) for s in ds._starts(100, rng)]
    assert max(starts) <= 100 - 1 - 60 and max(starts) >= 30
    no_flow = ClipDataset([], "pair", num_frames=8, stride=8, short_side=32, pair_sampler=sampler)
    assert max(s for _ in range(2000) for s in no_flow._starts(100, rng)) > 100 - 1 - 60  # the clip alone: 56


def _killed_writer(path):
    """A cache builder's loader worker killed while it writes an entry (preemption, SIGKILL)."""
    import os
    import signal

    from moviessl.utils.io import atomic_write

    def write(f):
        f.write(b"\x93NUMPY half a video")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    atomic_write(path, write)


def test_a_killed_cache_builds_temporary_files_do_not_pile_up(clip_list, tmp_path):
    """Each kill of a cold frame / flow cache build (a preempted job, its loader workers die of the
    signal without cleaning up) left each worker's half-written entry as a hidden temp file in the
    shared cache, never removed: one per worker per kill, each up to a video's decoded frames. A
    run's prepare() removes them; an entry another job is writing into the same cache is kept."""
    import multiprocessing
    import threading

    from moviessl.ssl.flow import FlowCache, FlowParams
    from moviessl.utils.io import atomic_write

    items = read_clip_list(clip_list)[:3]
    frames, flow = FrameCache(tmp_path, 32), FlowCache(tmp_path, FlowParams(short_side=32))
    fork = multiprocessing.get_context("fork")
    for kill in range(3):  # three preempted builds
        for cache in (frames, flow):
            cache.dir.mkdir(parents=True, exist_ok=True)
            p = fork.Process(target=_killed_writer, args=(cache.dir / f"c{kill:02d}-0123456789ab.npy",))
            p.start()
            p.join()
    assert len(list(tmp_path.rglob(".*.tmp"))) == 6
    fresh = next(tmp_path.rglob(".*.tmp"))
    for left in tmp_path.rglob(".*.tmp"):  # the earlier builds': unchanged for an hour
        if left != fresh:
            os.utime(left, (time.time() - 3600, time.time() - 3600))
    writing, go, failed = threading.Event(), threading.Event(), []

    def another_job():
        def write(f):
            f.write(b"\x93NUMPY")
            writing.set()
            go.wait(10)

        try:
            atomic_write(frames.dir / "other-0123456789ab.npy", write)
        except BaseException as e:
            failed.append(e)

    t = threading.Thread(target=another_job)
    t.start()
    assert writing.wait(10)
    ds = ClipDataset(items, "pair", num_frames=8, stride=2, short_side=32, frame_cache=frames, flow_cache=flow).prepare(
        progress=False
    )
    # a killed writer's file of a moment ago may be another machine's at work (locks that reach no
    # other node): kept until it has not changed for STALE_TEMP_S
    kept = sorted(p.name for p in tmp_path.rglob(".*.tmp"))
    assert kept == sorted([fresh.name, next(frames.dir.glob(".other-*.tmp")).name])
    go.set()
    t.join()
    assert not failed and (frames.dir / "other-0123456789ab.npy").is_file()
    assert len(ds) == 3 and [p.name for p in tmp_path.rglob(".*.tmp")] == [fresh.name]


def test_a_dataset_keeps_a_bounded_number_of_sources(clip_list, tmp_path, monkeypatch):
    """A persistent loader worker draws clips of every video of the list over a long run: the frame and
    flow sources it keeps (each a video's rate, frame count and frame times) stay at KEPT_SOURCES, not
    one per video drawn, and a video whose source fell out reads the same clip again."""
    import moviessl.ssl.data as data_mod
    from moviessl.ssl.flow import FlowCache, FlowParams

    monkeypatch.setattr(data_mod, "KEPT_SOURCES", 3, raising=False)
    items = [it for it in read_clip_list(clip_list) if "bad" not in it[0].name]
    flow = FlowCache(tmp_path, FlowParams(algorithm="farneback", short_side=32))
    kw = dict(num_frames=4, stride=2, short_side=32, flow_frames=4, flow_stride=2)
    ds = ClipDataset(items, "eval", flow_cache=flow, **kw).prepare(progress=False)
    assert len(ds) == len(items) > 3
    first = ds[0]
    for i in range(len(ds)):
        ds[i]
        assert len(ds._sources) <= 3 and len(ds._flows) <= 3
    assert 0 not in ds._sources and 0 not in ds._flows
    again = ds[0]
    assert torch.equal(again["video"], first["video"]) and torch.equal(again["flow"], first["flow"])


def test_a_cold_cache_is_built_by_workers_whatever_the_default_device(clip_list, tmp_path):
    """The cache builder's loader has a CPU generator for its workers' base seed, which torch draws
    into a tensor of its default device: under a user's ``torch.set_default_device("cuda")`` the GPU
    refused it and no cold cache was built with workers. Started on the CPU, it keeps the videos the
    CPU build keeps."""
    from default_device import gpu_like_default_device

    items = read_clip_list(clip_list)
    kw = dict(num_frames=4, stride=2, short_side=32)
    cpu = ClipDataset(items, "pair", frame_cache=FrameCache(tmp_path / "a", 32), **kw).prepare(False, 2)
    with gpu_like_default_device():
        got = ClipDataset(items, "pair", frame_cache=FrameCache(tmp_path / "b", 32), **kw).prepare(False, 2)
    assert got.items == cpu.items and got.bad.keys() == cpu.bad.keys() and len(got.items) > 0


def test_single_and_eval_clips_end_inside_the_video():
    """A clip of 8 x 4 spans 29 timeline frames: in a 40-frame video it starts at 0..11 (11 + 28 is
    the last frame, 39); a start of 12 would wrap its last frame to the video's first
    (:func:`clip_timeline`). One eval clip is centred: in 35 frames, 3 before it and 3 after."""
    rng = np.random.default_rng(0)
    single = ClipDataset([], "single", num_frames=8, stride=4, short_side=32)
    starts = {s for _ in range(3000) for s in single._starts(40, rng)}
    assert starts == set(range(12))
    centred = ClipDataset([], "eval", num_frames=8, stride=4, short_side=32, eval_clips=1)
    assert centred._starts(35, rng) == [3] and centred._starts(29, rng) == [0]


class _IndexSource(_RampSource):
    """Frames whose every value is the frame's index (constant rate, so native = timeline frames)."""

    def get(self, idx):
        idx = np.asarray(list(idx), np.int64)
        return np.broadcast_to(idx[:, None, None, None], (len(idx), self.h, self.w, 3)).astype(np.uint8)


def test_a_pairs_clips_and_flow_clips_take_each_their_own_stride():
    """A clip is ``num_frames`` frames ``stride`` apart from its start, and its flow clip
    ``flow_frames`` frames ``flow_stride`` apart from the same start; every test above gave both
    the same stride, or looked at the starts alone."""
    ds = ClipDataset([("v.mp4", 0)], "pair", num_frames=4, stride=8, short_side=8, flow_frames=6, flow_stride=2)
    ds._sources[0] = _IndexSource(8, 8, n=200)
    ds.flow_cache = object()  # any cache: _flow is served below
    ds._flow = lambda i: _IndexSource(8, 8, n=200)
    for _ in range(5):
        it = ds[0]
        v, f = it["video"][:, 0, :, 0, 0].long(), it["flow"][:, 0, :, 0, 0].long()
        assert v.shape == (2, 4) and f.shape == (2, 6)
        start = v[:, :1]
        assert torch.equal(v, start + 8 * torch.arange(4)) and torch.equal(f, start + 2 * torch.arange(6))


def test_a_full_frame_crop_box_is_cut_where_drawn():
    """``_crop_resize`` takes (top, left, height, width) as fractions of the frame's height and
    width: on a 20 x 40 frame, (0.1, 0.5, 0.4, 0.2) is rows 2..9 and columns 20..27 (as large as the
    output, so the resize keeps the pixels)."""
    rows, cols = np.meshgrid(np.arange(20), np.arange(40), indexing="ij")
    frame = np.stack([rows * 10, cols * 6, np.zeros_like(rows)], -1).astype(np.uint8)
    frames = np.stack([frame, 255 - frame])
    got = ClipDataset._crop_resize(frames, (0.1, 0.5, 0.4, 0.2), 8)
    want = torch.from_numpy(np.ascontiguousarray(frames[:, 2:10, 20:28])).permute(3, 0, 1, 2)
    assert got.shape == (3, 2, 8, 8) and torch.equal(got, want)
