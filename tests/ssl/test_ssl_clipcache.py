"""LiveSource keeps a reader per video open between clips, one set per process."""

from __future__ import annotations

import multiprocessing
import os
import threading

import av
import numpy as np
import pytest
from ssl_testutil import moving_square, write_video

from moviessl.ssl import clipcache
from moviessl.ssl.clipcache import LiveSource, resize_frames
from moviessl.video import VideoReader
from moviessl.video import reader as reader_mod


@pytest.fixture(autouse=True)
def _no_open_readers():
    close = getattr(clipcache, "close_readers", lambda: None)
    close()
    yield
    close()


def _program_stream(path, n: int = 300):
    """A DVD-style MPEG-2 program stream: read by decode count (its stamps after a seek are not the frames')."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg2video", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.gop_size, s.codec_context.max_b_frames = 15, 2
        for f in moving_square(0, n=n):
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture
def decoded(monkeypatch):
    """Frames decoded by every reader of this process from now on."""
    n = [0]
    real = reader_mod._AVFile._decode_after

    def counting(self, at):
        for x in real(self, at):
            n[0] += 1
            yield x

    monkeypatch.setattr(reader_mod._AVFile, "_decode_after", counting)
    return n


def test_consecutive_clips_of_a_film_read_by_decode_count_decode_it_once(tmp_path, decoded):
    """A fresh reader per clip decoded such a film from frame 0 up to every clip (clips at frames 60,
    150 and 240 of 300 cost 618 decoded frames); one kept reader goes on from the clip before."""
    p = _program_stream(tmp_path / "dvd.mpg")
    with VideoReader(p) as r:
        assert r._impl.by_count and r.num_frames == 300
        want = {s: resize_frames(r.get_frames(np.arange(s, s + 60, 4)), 32) for s in (60, 150, 240, 30)}
    live = LiveSource(p, 32)
    before = decoded[0]
    for s in (60, 150, 240):
        np.testing.assert_array_equal(live.get(np.arange(s, s + 60, 4)), want[s])
    assert decoded[0] - before <= 300 + 8, decoded[0] - before  # the film once (+ the decoder's delay)
    # a clip behind the decoder starts again at frame 0 (no usable seeking): up to the clip's end only
    before = decoded[0]
    np.testing.assert_array_equal(live.get(np.arange(30, 90, 4)), want[30])
    assert decoded[0] - before <= 90 + 8


def test_readers_are_bounded_and_follow_a_rewritten_file(tmp_path, monkeypatch):
    monkeypatch.setattr(clipcache, "OPEN_READERS", 2)
    vids = [write_video(tmp_path / f"{k}.mp4", moving_square(k, n=12)) for k in range(3)]
    srcs = [LiveSource(v, 32) for v in vids]
    for s in srcs:
        s.get([3, 4])
    pool = clipcache._readers[os.getpid(), threading.get_ident()]
    assert list(pool) == [str(vids[1]), str(vids[2])]  # the least recently used one was closed
    kept = clipcache._reader(vids[2])
    srcs[2].get([5, 6])
    assert clipcache._reader(vids[2]) is kept and kept._last == {}  # no clip held between calls
    write_video(vids[2], moving_square(1, n=20))
    assert LiveSource(vids[2], 32).num_frames == 20 and clipcache._reader(vids[2]) is not kept


def _read_in_child(live):
    pid = os.getpid()
    inherited = [r for key, pool in clipcache._readers.items() if key[0] != pid for _, r in pool.values()]
    before = [r.frames_decoded for r in inherited]
    frames = live.get([2, 9, 3])
    untouched = bool(inherited) and [r.frames_decoded for r in inherited] == before
    return frames, untouched, str(live.path) in clipcache._readers[pid, threading.get_ident()]


def test_a_forked_loader_worker_reads_with_its_own_reader(tmp_path):
    """A worker forked after its parent read a clip inherits the parent's open reader (one file
    offset, one decoder state): it must open its own and leave the inherited one alone."""
    vid = write_video(tmp_path / "a.mp4", moving_square(0, n=12))
    live = LiveSource(vid, 32)
    want = live.get([2, 9, 3])
    with multiprocessing.get_context("fork").Pool(1) as workers:
        frames, untouched, own = workers.apply(_read_in_child, (live,))  # live goes pickled
    np.testing.assert_array_equal(frames, want)
    assert untouched and own
    np.testing.assert_array_equal(live.get([9, 2, 3]), want[[1, 0, 2]])  # the parent's reader still reads right


@pytest.mark.parametrize("where", ["open", "cache"])
def test_a_passing_io_error_skips_a_video_without_noting_it_bad_a_bad_file_is_noted(tmp_path, monkeypatch, where):
    """A network filesystem's I/O error (EIO) while a video is read for the frame cache is the
    machine's, not the video's: the video is skipped by this run and read again by the next. Before,
    a `.bad` note kept it out of every later run on that cache. A file that is no video is noted."""
    import errno

    from moviessl.errors import BadInputError

    src = write_video(tmp_path / "v.mp4", moving_square(0, n=20))
    cache = clipcache.FrameCache(tmp_path / "cache", 32)
    real_open, real_live = av.open, clipcache.LiveSource
    fail = {"n": 1}

    def flaky(*a, **k):
        if fail["n"]:
            fail["n"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        return (real_open if where == "open" else real_live)(*a, **k)

    monkeypatch.setattr(*((av, "open") if where == "open" else (clipcache, "LiveSource")), flaky)
    with pytest.raises(BadInputError):
        cache.source(src)
    assert not cache.paths(src)[2].exists()
    assert cache.source(src).num_frames == 20  # the next run reads it
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(BadInputError):
        cache.source(junk)
    assert cache.paths(junk)[2].is_file()
