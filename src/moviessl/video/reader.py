"""Frame-accurate, seek-based video reading with PyAV (and VidSitu JPEG frame folders).

A :class:`VideoReader` indexes a file once by *demuxing* it (reading packet headers and payloads,
no decoding): that gives the exact number of frames, every frame's presentation timestamp (pts)
and the key frames (packets an edit list marks for discarding, the lead-in of a stream-copied
trim, are not frames of the film). Frame ``i`` is the i-th frame in presentation order; its time is its pts
relative to the first frame. ``get_frames`` then seeks to the key frame before the wanted window
and decodes only up to the last wanted frame, so a 16x4 clip costs a GOP plus ~64 frames, not the
whole file. Frames are matched by pts, not by counting, so B-frame reordering, non-zero start
times, non-integer and variable frame rates are all exact. Two container quirks are handled
explicitly: MPEG-TS seeks by decode timestamps (a seek to a key frame's pts with B-frames lands a
GOP late, so a seek that lands past its target's GOP is retried at the key frame's dts, then a key
frame earlier), and AVI stores decode-order timestamps (with B-frames the decoder hands frames back in
display order under the wrong pts, so such a file is read by decode count, as MPEG program streams
are, whose stamps after a seek are not the frames').

``num_frames`` is what actually decodes: header counts are ignored, and when the demuxer reports
trouble (a corrupt or truncated packet, a read error, a header count that disagrees) the tail is
decoded to find the last good frame.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from array import array
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import BadInputError, raise_if_denied
from .timeline import event_centers

log = logging.getLogger(__name__)

# Files a folder scan takes for videos (any file FFmpeg opens can be named directly).
VIDEO_EXTS = (
    ".mp4",
    ".mkv",
    ".webm",
    ".avi",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".ts",
    ".m2ts",
    ".mts",
    ".flv",
    ".wmv",
    ".3gp",
    ".ogv",
)
FRAME_EXTS = (".jpg", ".jpeg", ".png")
FOLDER_FPS = 30.0  # VidSitu frames were extracted at 30 fps
_TRAILING_NUMBER = re.compile(r"[0-9]+$")


def _av():
    import av

    av.logging.set_level(av.logging.PANIC)  # decoder chatter on bad files goes to stderr otherwise
    return av


class VideoReader:
    """Open a video file (any FFmpeg container/codec) or a frame folder ``{vseg}/{vseg}_000001.jpg``.

    Attributes: ``path``, ``fps``, ``num_frames`` (frames that decode), ``duration_s``, ``width``,
    ``height``, ``frame_times`` (seconds from the first frame, float64 ``(num_frames,)``),
    ``is_vfr`` (frame times do not sit on a ``i / fps`` grid to within half a frame).

    ``verify``: ``"auto"`` decodes the tail only when demuxing reported trouble; ``"tail"`` always
    decodes the last GOP; ``"full"`` decodes everything once (slow, exact even for silent
    corruption in the middle). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, verify: str = "auto", folder_fps: float = FOLDER_FPS):
        if verify not in ("auto", "tail", "full"):
            raise ValueError(f"verify must be auto|tail|full, got {verify!r}")
        self.path = Path(path)
        if not self.path.exists():
            raise_if_denied(self.path)
            raise BadInputError(self.path, "no such file or directory")
        if self.path.is_dir():
            self._impl = _FrameFolder(self.path, folder_fps)
        else:
            self._impl = _AVFile(self.path, verify)
        im = self._impl
        self.fps, self.width, self.height = float(im.fps), int(im.width), int(im.height)
        self.frame_times = im.frame_times
        self._last: dict[int, np.ndarray] = {}

    # num_frames can shrink if a frame the index promised turns out not to decode.
    @property
    def num_frames(self) -> int:
        return int(len(self._impl.frame_times))

    @property
    def duration_s(self) -> float:
        return float(self._impl.duration_s)

    @property
    def is_vfr(self) -> bool:
        return bool(self._impl.is_vfr)

    @property
    def missing(self) -> set[int]:
        """Native indices asked for so far that did not decode (a stand-in frame was returned) or
        decoded with errors concealed; a caller that needs the film's pixels checks its indices here."""
        return self._impl.missing if hasattr(self._impl, "missing") else set()

    @property
    def rotation(self) -> int:
        """Display rotation applied to the frames (counter-clockwise degrees; 0 for most files),
        after the mirror when :attr:`mirrored`."""
        return int(getattr(self._impl, "rotation", 0))

    @property
    def mirrored(self) -> bool:
        """Whether the display matrix mirrors the picture: the stored frames are flipped left to
        right, then turned by :attr:`rotation` (a vertical flip is ``mirrored`` with rotation 180)."""
        return bool(getattr(self._impl, "mirrored", False))

    @property
    def frames_decoded(self) -> int:
        """Frames decoded so far by this reader (index checks included)."""
        return int(getattr(self._impl, "frames_decoded", 0))

    def get_frames(self, indices) -> np.ndarray:
        """Frames at native indices (any order, repeats allowed) -> ``uint8 (T, H, W, 3)`` RGB."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        if idx.min() < 0 or idx.max() >= self.num_frames:
            raise IndexError(f"{self.path}: frame index out of range [0, {self.num_frames}): {idx.min()}..{idx.max()}")
        # The previous call's frames are kept: consecutive events overlap by a frame or two, and
        # re-reading a frame behind the decoder would cost a seek and a GOP of decoding.
        need = sorted(set(idx.tolist()) - self._last.keys())
        got = {**{i: self._last[i] for i in set(idx.tolist()) & self._last.keys()}, **self._impl.read(need)}
        self._last = got
        return np.stack([got[i] for i in idx.tolist()])

    def forget_frames(self) -> None:
        """Drop the frames kept from the last call: a reader held open between unrelated reads
        (one clip, then another far away) need not hold a clip of full-size frames meanwhile."""
        self._last = {}

    def indices_at(self, times_s) -> np.ndarray:
        """Native index of the frame on screen at each time (s from the first frame), clamped."""
        t = np.asarray(times_s, dtype=np.float64)
        # 1e-6 s tolerance: a time that lands exactly on a frame's pts must pick that frame
        i = np.searchsorted(self._impl.frame_times, t + 1e-6, side="right") - 1
        return np.clip(i, 0, self.num_frames - 1)

    def close(self) -> None:
        self._last = {}
        self._impl.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VideoReader({str(self.path)!r}, fps={self.fps:.4g}, num_frames={self.num_frames}, "
            f"{self.width}x{self.height}{', vfr' if self.is_vfr else ''})"
        )


def _grid_fps(times: np.ndarray, candidates, tick: float) -> float | None:
    """The first candidate rate whose ``i / fps`` grid matches every frame time.

    Tolerance: a tenth of a frame plus one time-base tick (pts rounding, e.g. 1 ms in mkv). Files
    that fail are treated as variable-rate and mapped by their real frame times, which is always
    correct, so erring towards VFR costs nothing.
    """
    n = np.arange(len(times))
    for fps in candidates:
        if fps and fps > 0 and np.all(np.abs(times - n / fps) <= 0.1 / fps + tick):
            return float(fps)
    return None


# What opening a file works out (the demux pass over every packet, the first frame's size and
# rotation, the tail check), kept per process so that reopening the same unchanged file skips it.
# A loader that reads one clip of a film per item reopens it for every item; without this each
# clip of a 2-hour film re-read the whole file (200k packets) before decoding its 60 frames.
# Bounded by indexed frames (16 bytes each for pts and times, 8 more per key frame): 1M frames,
# 16-24 MB, ~9 hours at 30 fps or ~3000 Kinetics clips, per process. Bounded by entries too: an
# entry's own dict and array headers weigh about as much as a hundred frames' stamps, so under the
# frame bound alone a memo of clips a second or two long held several times those bytes. Plain
# read-only arrays, so forked loader workers may share it.
INDEX_MEMO_FRAMES = 1_000_000
INDEX_MEMO_ENTRIES = 4096
_INDEX_STATE = (
    "stream_index",
    "time_base",
    "pts",
    "key_pts",
    "key_dts",
    "seek_dts",
    "by_count",
    "coded_size",
    "rotation",
    "mirrored",
    "width",
    "height",
    "frame_times",
    "fps",
    "is_vfr",
    "duration_s",
)


class _IndexMemo(OrderedDict):
    """The memo's entries, least recently used first, with ``frames``: the frames they index in all,
    kept as entries come and go. Summed over the entries at every remembered file instead, a
    Kinetics-sized run (each loader worker opening file after file) paid a pass over the ~3300 entries
    the frame bound holds, twice, per video it opened."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    def __setitem__(self, key, state) -> None:
        old = self.get(key)
        super().__setitem__(key, state)
        self.frames += len(state["pts"]) - (len(old["pts"]) if old is not None else 0)

    def __delitem__(self, key) -> None:
        self.frames -= len(self[key]["pts"])
        super().__delitem__(key)

    def pop(self, key, *default):
        if key in self:
            self.frames -= len(self[key]["pts"])
        return super().pop(key, *default)

    def popitem(self, last: bool = True):
        key, state = super().popitem(last=last)
        self.frames -= len(state["pts"])
        return key, state

    def clear(self) -> None:
        super().clear()
        self.frames = 0


_index_memo: _IndexMemo = _IndexMemo()


def _remember_index(key: tuple, state: dict) -> None:
    for k in ("key_pts", "key_dts"):
        state[k] = np.asarray(state[k], np.int64)  # 8 bytes a key frame, not a Python int's ~36
    for k in ("pts", "frame_times", "key_pts", "key_dts"):  # shared by every reader of the file from now on
        state[k].flags.writeable = False
    _index_memo[key] = state
    _index_memo.move_to_end(key)
    while len(_index_memo) > 1 and (len(_index_memo) > INDEX_MEMO_ENTRIES or _index_memo.frames > INDEX_MEMO_FRAMES):
        _index_memo.popitem(last=False)


class _AVFile:
    def __init__(self, path: Path, verify: str):
        av = _av()
        self.path = path
        stat = path.stat()
        size = stat.st_size
        if size == 0:
            raise BadInputError(path, "empty file (0 bytes)")
        try:
            self.container = av.open(str(path), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
            # from e: its cause tells a passing I/O error (a network filesystem's) from a bad file
            raise BadInputError(path, f"not a readable video container ({_why(e)})") from e
        key = (str(path.resolve()), verify, size, stat.st_mtime_ns, stat.st_ino)
        try:
            known = _index_memo.get(key)
            if known is not None:
                _index_memo.move_to_end(key)
                self._reopen(known)
            else:
                self._open(verify, size)
                _remember_index(key, {k: getattr(self, k) for k in _INDEX_STATE})
        except BaseException:
            self.container.close()
            raise

    def _reset_decoder(self) -> None:
        self._iter = None  # live decode generator and the pts of the last frame it produced
        self._last_pts = None
        self.frames_decoded = 0  # running total, for tests / benchmarks of "decode only the window"
        self.missing: set[int] = set()  # native indices asked for that did not decode (or decoded corrupt)
        self._prev = None  # the last frame the running decoder produced (stand-in for one that fails)
        self._last_out = None  # (index, frame) of the last target the previous read returned
        # One reformatter for all frames: frame.to_ndarray(format=...) builds a new swscale context
        # per frame, which costs more than decoding it (5-10x slower conversion, same pixels).
        from av.video.reformatter import VideoReformatter

        self._rgb = VideoReformatter()

    def _reopen(self, known: dict) -> None:
        """Open a file indexed before in this process: no demux pass, no frame decoded."""
        self.stream = self.container.streams[known["stream_index"]]
        self._reset_decoder()
        for k in _INDEX_STATE:
            if k != "stream_index":
                setattr(self, k, known[k])

    @property
    def stream_index(self) -> int:
        return int(self.stream.index)

    def _open(self, verify: str, size: int) -> None:
        av = _av()
        self.stream = st = _pick_video_stream(self.path, self.container)
        self.time_base = st.time_base or Fraction(1, 1)
        self._reset_decoder()
        self.rotation = 0  # display rotation (counter-clockwise degrees, a multiple of 90) applied to frames
        self.mirrored = False  # flipped left to right before that rotation (display matrix with a mirror)

        # Index pass: demux every packet (no decoding). Compact arrays, not Python objects per packet:
        # a 2-hour film has ~200k packets, and its index should cost a few MB, not a few hundred.
        pts_a, key_a, kdts_a, dur_a = array("q"), array("q"), array("q"), array("q")
        trouble, no_pts, discarded, decode_order = None, False, 0, True
        try:
            for p in self.container.demux(st):
                if p.size == 0:
                    continue  # the flush packet
                if p.is_discard:  # before an edit list's start: decoded for reference, never shown
                    discarded += 1
                    continue
                if p.pts is None:
                    no_pts = True
                elif pts_a and p.pts <= pts_a[-1]:
                    decode_order = False  # pts reordered against decode order: real display times
                pts_a.append(p.pts if p.pts is not None else 0)
                dur_a.append(p.duration or 0)
                if p.is_keyframe and p.pts is not None:
                    key_a.append(p.pts)
                    kdts_a.append(p.dts if p.dts is not None else p.pts)
                if p.is_corrupt and trouble is None:
                    trouble = "corrupt packet"
                if p.pos is not None and p.pos >= 0 and p.pos + p.size > size and trouble is None:
                    trouble = "packet past end of file"
        except (av.error.FFmpegError, OSError) as e:
            trouble = f"read error after {len(pts_a)} packets ({_why(e)})"
        if not pts_a:
            raise BadInputError(self.path, "no video packets (truncated or empty stream)")
        if st.frames and st.frames not in (len(pts_a), len(pts_a) + discarded) and trouble is None:
            trouble = f"header says {st.frames} frames, demuxed {len(pts_a)}"

        self.seek_dts = False  # set once a seek by pts has landed past its target (MPEG-TS)
        self.by_count = no_pts
        if not no_pts and (self._program_stream() or (decode_order and self._decode_order_pts())):
            self.by_count = True
        if self.by_count:
            # No usable timestamps (raw elementary streams; the two cases above): index by decode
            # order, no seeking.
            if no_pts:
                log.debug("%s: packets without pts, indexing frames by decode count", self.path)
            self.pts = np.arange(len(pts_a), dtype=np.int64)
            self.key_pts, self.key_dts = [0], [0]
            durs = []
        else:
            raw = np.frombuffer(pts_a, dtype=np.int64)
            last = int(np.argmax(raw))  # the last frame in presentation order (first of equal maxima)
            self.pts = np.sort(raw, kind="stable")
            keep = np.concatenate([[True], np.diff(self.pts) > 0])  # duplicate pts: keep the first
            self.pts = self.pts[keep]
            self.key_pts, first = np.unique(np.frombuffer(key_a, dtype=np.int64), return_index=True)
            self.key_dts = np.frombuffer(kdts_a, dtype=np.int64)[first]
            durs = [int(dur_a[last])]
        del pts_a, key_a, kdts_a, dur_a
        self._first_frame_check()
        if not self.by_count:
            self._drop_head_before(self._last_pts)
        if verify == "full" or self.by_count:
            self._verify_full()
        elif verify == "tail" or trouble:
            if trouble:
                log.warning("%s: %s; decoding the tail to count frames", self.path, trouble)
            self._verify_tail()
        self._set_timing(durs)

    def _program_stream(self) -> bool:
        """MPEG program streams (.mpg, .vob) carry a pts on some packets only; after a seek the
        decoder's open GOPs and the demuxer's interpolated stamps hand back frames under the wrong pts
        or none (a third of the frames of a DVD-style file were wrong). Decoded in order, the frames are
        right, so such a file is read by decode count."""
        if self.container.format.name.split(",")[0] != "mpeg":
            return False
        log.debug("%s: MPEG program stream, indexing frames by decode count", self.path)
        return True

    def _decode_order_pts(self, probe: int = 48) -> bool:
        """Whether the pts are decode-order stamps that the decoder's reordering scrambles: AVI has
        no presentation times, so with B-frames the frames come back in display order carrying
        1, 3, 4, 2, ... Only containers whose packets' pts never decrease can be affected."""
        if "avi" not in self.container.format.name.split(","):
            return False
        seen = [pts for pts, _ in itertools.islice(self._frames_from(None), probe)]
        self._iter = None
        if any(b is None or a is None or b <= a for a, b in zip(seen, seen[1:])):
            log.debug("%s: AVI pts in decode order under B-frames, indexing frames by decode count", self.path)
            return True
        return False

    # -- timing -----------------------------------------------------------------------------------

    def _set_timing(self, last_durs) -> None:
        st = self.stream
        if self.by_count:
            fps = float(st.average_rate or st.guessed_rate or st.base_rate or 30)
            self.frame_times = np.arange(len(self.pts)) / fps
            self.fps, self.is_vfr = fps, False
            self.duration_s = len(self.pts) / fps
            return
        t = (self.pts - self.pts[0]).astype(np.float64) * float(self.time_base)
        self.frame_times = t
        rates = [float(r) for r in (st.average_rate, st.base_rate, st.guessed_rate) if r]
        if len(t) > 1:
            # Containers with coarse time bases (mkv: 1 ms) round pts, so the nominal rate can be
            # exact while pts deltas jitter; the grid test accepts that and rejects true VFR.
            rates.append((len(t) - 1) / max(t[-1], 1e-9))
        fps = _grid_fps(t, rates, float(self.time_base))
        self.is_vfr = fps is None
        if fps is None:
            last = (
                (last_durs[0] * float(self.time_base)) if last_durs and last_durs[0] else float(np.median(np.diff(t)))
            )
            self.duration_s = float(t[-1] + last)
            self.fps = len(t) / self.duration_s
        else:
            self.fps = fps
            self.duration_s = len(t) / fps

    # -- decoding ---------------------------------------------------------------------------------

    def _frames_from(self, key_pts: int | None, target: int | None = None):
        """Decoded frames (presentation order) from the key frame at ``key_pts`` (None: start).

        A seek must land in the key frame's GOP or before it: its first frame at or before ``target``
        (the wanted frame's pts; default the key frame's), or at least before the next key frame (the
        frames before it did not decode). One that lands later (MPEG-TS under a pts with B-frames; a
        GOP that decodes nothing) is retried at the key frame's dts, which such demuxers seek by
        (remembered for the file), then one key frame earlier, and only then from the start."""
        if key_pts is None or self.by_count:
            yield from self._decode_after(None)
            return
        target = key_pts if target is None else target
        k = int(np.searchsorted(self.key_pts, key_pts))
        dts = int(self.key_dts[k])
        past = int(self.key_pts[k + 1]) if k + 1 < len(self.key_pts) else None  # where the next GOP starts
        tries = [dts] if self.seek_dts else [int(key_pts), dts]
        if k > 0:  # the GOP before: one more GOP decoded, not the whole film up to here
            tries.append(int(self.key_dts[k - 1]) if self.seek_dts else int(self.key_pts[k - 1]))
        for n, at in enumerate([*tries, None]):
            frames = self._decode_after(at)
            head = []
            for pts, f in frames:
                head.append((pts, f))
                if pts is not None:
                    break
            first = next((pts for pts, _ in head if pts is not None), None)
            landed = first is not None and (first <= target or past is None or first < past)
            if at is None or landed:
                if n == 1 and at == dts and not self.seek_dts:
                    self.seek_dts = True
                    log.debug("%s: seeks by pts land late; seeking by dts", self.path)
                yield from head
                yield from frames
                return

    def _decode_after(self, at: int | None):
        """Decoded frames after a seek to stream time ``at`` (None: the start of the file)."""
        av = _av()
        c, st = self.container, self.stream
        self._prev = None
        try:
            if at is None and (st.start_time or 0) < 0:
                # Video before time 0: FFmpeg unwraps an MPEG-TS whose 33-bit pts wrap within a
                # minute of its start to negative times, so a seek to 0 lands inside the film (its
                # first frames were dropped as undecodable and every event shifted) and one to its
                # start time lands a GOP late under B-frames (a dts seek); a fresh open is at the start.
                c, st = self._reopen_container()
            elif at is None:
                c.seek(0, backward=True, any_frame=False)  # container-level: start of file
            else:
                c.seek(int(at), stream=st, backward=True, any_frame=False)
        except (av.error.FFmpegError, OSError) as e:
            if at is not None:
                raise BadInputError(self.path, f"seek failed ({_why(e)})") from None
            # Raw elementary streams (.h264, .hevc: no pts, read by decode count) refuse every
            # seek, even to 0 ("Operation not permitted"); opening the file again is their way back
            # to the start.
            c, st = self._reopen_container()
        count = -1
        try:
            for packet in c.demux(st):
                try:
                    frames = packet.decode()  # the empty flush packet drains the decoder at EOF
                except (av.error.FFmpegError, OSError):
                    continue  # one bad packet: skip it, its dependants show up as missing pts
                for f in frames:
                    count += 1
                    self.frames_decoded += 1
                    yield (count if self.by_count else f.pts), f
        except (av.error.FFmpegError, OSError):
            return  # read error mid-file: the frames before it stand

    def _reopen_container(self):
        """The file opened again at its start, the same stream selected, a fresh decoder."""
        av = _av()
        index = self.stream_index
        try:
            container = av.open(str(self.path), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise BadInputError(self.path, f"cannot reopen to read from the start ({_why(e)})") from e
        self.container.close()
        self.container, self.stream = container, container.streams[index]
        return self.container, self.stream

    def _first_frame_check(self) -> None:
        it = self._frames_from(None)
        for pts, f in it:
            if pts is None:
                continue
            self.coded_size = (f.width, f.height)
            self.rotation, self.mirrored = _orientation_of(self.path, f)
            self.width, self.height = (f.height, f.width) if self.rotation % 180 else (f.width, f.height)
            self._iter, self._last_pts = it, pts
            return
        raise BadInputError(self.path, "no decodable video frames")

    def _drop_head_before(self, first: int) -> None:
        """Index entries before the first frame that decodes are not frames of the film.

        A capture that starts mid-GOP (a DVB / IPTV .ts recording) begins with packets that
        reference a key frame it never had: no seek point reaches them and the decoder (a player's
        too) shows the first picture after the first key frame. Indexed, they made ``num_frames``
        too high, put time 0 on a frame that does not exist (shifting every event) and turned the
        first event into a stand-in marked missing. The film starts at the first decoded frame, so
        its time origin is what a player shows first; a file whose first packet decodes loses nothing."""
        head = self.pts < first
        n = int(head.sum())
        if n:
            log.warning(
                "%s: %d packet%s before the first decodable frame (a capture starting mid-GOP) never decode; "
                "the video starts at the first frame that does",
                self.path,
                n,
                "s" if n > 1 else "",
            )
            self.pts = self.pts[~head]

    def _rgb_array(self, f) -> np.ndarray:
        """RGB of a decoded frame at the stream's first size (a mid-stream size change is rescaled),
        shown as the display matrix says (mirrored, then turned upright)."""
        w, h = self.coded_size
        if (f.width, f.height) != (w, h):
            if not getattr(self, "_warned_size", False):
                log.warning(
                    "%s: frame size changes mid-stream (%dx%d -> %dx%d); rescaling to the first",
                    self.path,
                    w,
                    h,
                    f.width,
                    f.height,
                )
                self._warned_size = True
            img = self._rgb.reformat(f, format="rgb24", width=w, height=h).to_ndarray()
        else:
            img = self._rgb.reformat(f, format="rgb24").to_ndarray()
        if self.mirrored:
            img = img[:, ::-1]
        if self.rotation:
            img = np.rot90(img, self.rotation // 90)
        return np.ascontiguousarray(img) if self.mirrored or self.rotation else img

    def _verify_tail(self) -> None:
        """Drop index entries at the end that do not decode, walking back GOP by GOP."""
        for k in range(len(self.key_pts) - 1, -1, -1):
            kp = int(self.key_pts[k])
            decoded = {pts for pts, _ in self._frames_from(kp) if pts is not None}
            self._iter = None
            if decoded:
                good = max(decoded)
                tail = self.pts >= kp
                ok = ~tail | np.isin(self.pts, list(decoded))
                ok &= self.pts <= good
                self._drop(ok)
                return
            self._drop(self.pts < kp)
        raise BadInputError(self.path, "no decodable video frames")

    def _verify_full(self) -> None:
        decoded = [pts for pts, _ in self._frames_from(None) if pts is not None]
        self._iter = None
        if not decoded:
            raise BadInputError(self.path, "no decodable video frames")
        if self.by_count:
            self.pts = np.arange(len(decoded), dtype=np.int64)
        else:
            self._drop(np.isin(self.pts, decoded))

    def _drop(self, keep: np.ndarray) -> None:
        if not keep.all():
            log.warning(
                "%s: %d of %d indexed frames do not decode; using the %d that do",
                self.path,
                int((~keep).sum()),
                len(keep),
                int(keep.sum()),
            )
            self.pts = self.pts[keep]
            if hasattr(self, "frame_times"):
                self.frame_times = self.frame_times[keep]
        if len(self.pts) == 0:
            raise BadInputError(self.path, "no decodable video frames")

    def read(self, targets: list[int]) -> dict[int, np.ndarray]:
        """Decode the frames at sorted unique native indices ``targets``."""
        want = {int(self.pts[i]): i for i in targets}
        out: dict[int, np.ndarray] = {}
        since = None  # pts of the first frame the running decoder produced in this call
        for i in targets:
            tp = int(self.pts[i])
            if i in out:
                continue
            if (
                self._iter is not None
                and since is not None
                and self._last_pts is not None
                and since <= tp < self._last_pts
            ):
                # the decoder went past this frame in this call without producing it: a seek back
                # would decode the same damaged stretch again for each such frame
                out[i] = self._missing(i, out)
                continue
            k = int(np.searchsorted(self.key_pts, tp, side="right")) - 1
            kp = int(self.key_pts[k]) if k >= 0 else None
            # Continue the running decoder if no key frame lies between it and the target,
            # otherwise seek: decoding from that key frame is never more work.
            if (
                self._iter is None
                or self._last_pts is None
                or self._last_pts >= tp
                or (kp is not None and not self.by_count and kp > self._last_pts)
            ):
                self._iter, self._last_pts, since = self._frames_from(kp, tp), None, None
            for pts, f in self._iter:
                if pts is None:
                    continue
                since = pts if since is None else since
                self._last_pts = pts
                j = want.get(pts)
                if j is not None and j not in out:
                    out[j] = self._rgb_array(f)
                    if f.is_corrupt:  # decoded with errors concealed: the pixels are not the film's
                        self.missing.add(j)
                if pts <= tp:  # a target too: the next call's first frame, if missing, repeats it
                    self._prev = (pts, f)
                if pts >= tp:
                    break
            else:
                self._iter = None  # exhausted
            if i not in out:
                out[i] = self._missing(i, out)
        if out:
            j = max(out)
            self._last_out = (j, out[j])
        return out

    def _missing(self, i: int, out: dict) -> np.ndarray:
        """A frame the index promised but the decoder did not produce: hold the nearest earlier one
        (in this call, else the nearer of the last frame the decoder produced before it and the last
        frame the previous call returned, else black); its index is added to :attr:`missing` so
        callers can tell a stand-in from the film. Reading in order a chunk per call thus gives the
        frames of one call whatever the chunk size, also when a lost key frame takes its GOP with it
        (the seek to it decodes nothing before the frame)."""
        self.missing.add(i)
        n = len(self.missing)
        if n == 1 or n % 1000 == 0:  # a damaged stretch would otherwise log once per frame
            log.warning(
                "%s: frame %d (pts %d) did not decode; repeating the previous frame (%d such frame%s so far)",
                self.path,
                i,
                int(self.pts[i]),
                n,
                "s" if n > 1 else "",
            )
        earlier = [j for j in out if j < i]
        if earlier:
            return out[max(earlier)]
        tp = int(self.pts[i])
        prev = self._prev if self._prev is not None and self._prev[0] < tp else None
        last = self._last_out if self._last_out is not None and self._last_out[0] < i else None
        if last is not None and (prev is None or int(self.pts[last[0]]) >= prev[0]):
            return last[1]
        if prev is not None:
            return self._rgb_array(prev[1])
        return np.zeros((self.height, self.width, 3), np.uint8)

    def close(self) -> None:
        self._iter = self._last_out = None
        self.container.close()


class _FrameFolder:
    """VidSitu-style frame folders: ``{vseg}/{vseg}_000001.jpg`` ..., one JPEG per 1/30 s."""

    def __init__(self, path: Path, fps: float):
        self.path = path
        files = [p for p in path.iterdir() if p.suffix.lower() in FRAME_EXTS and not p.name.startswith(".")]
        if not files:
            # a user's folder of movies (`moviessl probe my_movies/`) was told it lacked .jpg frames
            n = sum(1 for p in path.iterdir() if p.suffix.lower() in VIDEO_EXTS and not p.name.startswith("."))
            if n:
                what = f"{n} video{'s' if n > 1 else ''}"
                raise BadInputError(path, f"is a folder of {what}, not a video file or a frame folder: name one")
            raise BadInputError(path, "frame folder has no .jpg/.png frames")

        def frame_no(p: Path):
            # the trailing number, whatever precedes it: an unpadded `frame%d.jpg` (FFmpeg's
            # pattern without a zero pad) sorts by name as 1, 10, 11, ..., 2, scrambling the clip
            m = _TRAILING_NUMBER.search(p.stem)
            return (int(m.group()), p.name) if m else (float("inf"), p.name)

        self.files = sorted(files, key=frame_no)
        first = self._imread(0)
        self.height, self.width = first.shape[:2]
        # Frames that fail to decode at the end (an interrupted extraction) are not part of the video.
        while len(self.files) > 1:
            try:
                self._imread(len(self.files) - 1)
                break
            except BadInputError as e:
                log.warning("%s; dropping it from the end of the clip", e)
                self.files.pop()
        self.fps = float(fps)
        self.frames_decoded = 0
        self.frame_times = np.arange(len(self.files)) / self.fps
        self.is_vfr = False
        self.duration_s = len(self.files) / self.fps

    def _imread(self, i: int) -> np.ndarray:
        import cv2

        p = self.files[i]
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise BadInputError(p, "cannot decode image")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def read(self, targets: list[int]) -> dict[int, np.ndarray]:
        self.frames_decoded += len(targets)
        return {i: self._imread(i) for i in targets}

    def close(self) -> None:
        pass


def _pick_video_stream(path: Path, container):
    """The film's video stream: the first that is not a still (cover art / thumbnail); one warning
    when there are several (e.g. a second camera angle)."""
    streams = [s for s in container.streams.video if not _is_still(s)]
    if not streams:
        what = (
            "only a still cover image"
            if container.streams.video
            else "audio only"
            if container.streams.audio
            else "none"
        )
        raise BadInputError(path, f"no video stream ({what})")
    if len(streams) > 1:
        log.warning(
            "%s: %d video streams; reading stream #%d (%dx%d), ignoring the others",
            path,
            len(streams),
            streams[0].index,
            streams[0].codec_context.width,
            streams[0].codec_context.height,
        )
    return streams[0]


def _is_still(stream) -> bool:
    d = stream.disposition
    names = ("attached_pic", "still_image", "timed_thumbnails")
    try:
        return any(d & getattr(type(d), n) for n in names if hasattr(type(d), n))
    except TypeError:  # older PyAV: disposition as an int
        return bool(int(d) & 0x400)


def _display_matrix(frame) -> np.ndarray | None:
    """The frame's display matrix (FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX``: 9 int32, row-major,
    a b u / c d v / x y w, a-d in 16.16 fixed point), None when it has none."""
    try:
        from av.sidedata.sidedata import Type

        sd = frame.side_data.get(Type.DISPLAYMATRIX)
        m = None if sd is None else np.frombuffer(bytes(sd), dtype=np.int32)
    except (ImportError, AttributeError, TypeError, ValueError, KeyError):
        # a PyAV without frame side data: the rotation it reports, no mirror (read as a matrix)
        r = float(getattr(frame, "rotation", 0) or 0)
        if not r:
            return None
        t = math.radians(r)
        a, b = round(math.cos(t) * 65536), round(math.sin(t) * 65536)
        m = np.array([a, -b, 0, b, a, 0, 0, 0, 1 << 30], np.int32)
    return m.astype(np.int64) if m is not None and m.size == 9 else None


def _orientation_of(path: Path, frame) -> tuple[int, bool]:
    """How a player shows the stored frames: ``(rotation, mirrored)``, a mirror left to right when
    ``mirrored``, then ``rotation`` degrees counter-clockwise (a multiple of 90).

    Decided from the full display matrix as FFmpeg's autorotate does (fftools/ffmpeg_filter.c and
    ffplay.c: ``get_rotation`` and the transpose / hflip / vflip it inserts): the angle alone
    (``av_display_rotation_get``) reads a horizontal mirror as a 180-degree turn and misses a
    vertical one; the signs of the entries, which make the matrix's determinant negative under a
    mirror, tell them apart. Other angles are read as stored, with a warning (FFmpeg would resample
    the picture with its ``rotate`` filter)."""
    m = _display_matrix(frame)
    if m is None:
        return 0, False
    a, b, c, d = (float(m[i]) / 65536 for i in (0, 1, 3, 4))
    s0, s1 = math.hypot(a, c), math.hypot(b, d)
    if s0 == 0 or s1 == 0:
        log.warning("%s: degenerate display matrix %s; frames are read as stored", path, m.tolist())
        return 0, False
    ccw = -math.degrees(math.atan2(b / s1, a / s0))  # av_display_rotation_get
    theta = -round(ccw)  # clockwise, in [0, 360): FFmpeg's get_rotation
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    # FFmpeg's filters as (turn, mirror): transpose "clock" = (270, no), "cclock" = (90, no),
    # "cclock_flip" (the transpose) = (90, yes), "clock_flip" = (270, yes); hflip = (0, yes),
    # vflip = (180, yes), both = (180, no)
    if abs(theta - 90) < 1:
        return (90, True) if m[3] > 0 else (270, False)
    if abs(theta - 270) < 1:
        return (270, True) if m[3] < 0 else (90, False)
    if abs(theta - 180) < 1:
        hflip, vflip = bool(m[0] < 0), bool(m[4] < 0)
        return (180 if vflip else 0), hflip != vflip
    if abs(theta) > 1:
        log.warning("%s: display rotation %.1f deg is not a multiple of 90; frames are read as stored", path, ccw)
        return 0, False
    return (180, True) if m[4] < 0 else (0, False)


def _why(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return " ".join(str(msg).split())


def resolve_video(root: str | os.PathLike, vid_id: str) -> Path:
    """``root/{id}.mp4|.mkv|.webm|.avi|.mov`` or the frame folder ``root/{id}/``."""
    root = Path(root)
    for ext in VIDEO_EXTS:
        for e in (ext, ext.upper()):
            p = root / f"{vid_id}{e}"
            if p.is_file():
                return p
    d = root / vid_id
    if d.is_dir():
        return d
    # a root this user may not search ends the run, as on Python < 3.14: every segment "has no video"
    raise_if_denied(d)
    raise BadInputError(root / vid_id, f"no video file ({'|'.join(VIDEO_EXTS)}) or frame folder")


def probe(path: str | os.PathLike) -> dict:
    """Metadata of a video as ``moviessl probe`` prints it; decodes the last GOP to count frames."""
    with VideoReader(path, verify="tail") as r:
        return {
            "fps": round(r.fps, 6),
            "num_frames": r.num_frames,
            "duration_s": round(r.duration_s, 6),
            "width": r.width,
            "height": r.height,
            "num_events": len(event_centers(r.duration_s)),
        }
