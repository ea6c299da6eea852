"""Decoded-frame cache: decode each video once, memory-map it afterwards.

On a 2-core machine, decoding H.264 dominates a small pretraining run (each step needs two 16-frame
clips per video, every epoch). So for small data sets (the cpu preset) each video is decoded once,
resized to the config's short side, and stored as one uint8 ``.npy`` array ``(T, H, W, 3)`` of all
its frames (native frame rate). Later reads memory-map it and slice the requested frames: no
decoding, no resizing, no copies beyond the clip itself.

Layout (``cache_dir`` defaults to ``<data folder>/.moviessl_cache``, else ``<run dir>/cache``)::

    cache_dir/frames_s{short_side}_v{VERSION}/{stem}-{key}.npy    # uint8 (T, H, W, 3)
    cache_dir/frames_s{short_side}_v{VERSION}/{stem}-{key}.json   # {"fps", "num_frames", "frame_times", "src", ...}
    cache_dir/frames_s{short_side}_v{VERSION}/{stem}-{key}.bad    # cause, for a video that failed

``key`` hashes the absolute path, size and mtime of the source, so an edited video is decoded
again. Writes are atomic (a killed job leaves no half entry; the next run's ``ClipDataset.prepare``
removes a killed build's temp files, not those of a job still writing). The paper preset turns the cache off
(K400 at short side 256 would need terabytes) and decodes each clip's frames on the fly instead.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BadInputError, raise_if_denied
from ..utils.io import atomic_write_from, atomic_write_json, atomic_write_text, write_npy_chunks

log = logging.getLogger(__name__)

VERSION = 1
# errors of the machine or of a (network) filesystem, not of the file's content: a video that meets one
# is skipped by this run but not noted as bad, so a later run reads it again
PASSING_ERRNOS = frozenset(
    getattr(errno, n)
    for n in (
        "EIO",
        "ESTALE",
        "ETIMEDOUT",
        "EAGAIN",
        "EINTR",
        "ENOMEM",
        "ENOBUFS",
        "ENETDOWN",
        "ENETUNREACH",
        "ECONNRESET",
        "EHOSTDOWN",
        "EREMOTEIO",
    )
    if hasattr(errno, n)
)


def passing_failure(e: BaseException | None) -> bool:
    """Whether ``e`` (or an error it was raised from) is a failure of the machine or the filesystem
    (out of memory, an I/O error of a network filesystem) rather than of the video."""
    while e is not None:
        if isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno in PASSING_ERRNOS):
            return True
        e = e.__cause__
    return False


def _source_key(path: Path, anchor: Path | None = None) -> str:
    """A video's cache key: its path, size and modification time. The path is taken relative to
    ``anchor`` (resolved; the folder the cache lies in) when the video lies under it, so a data
    folder moved or copied with its cache (the default ``<clip list folder>/.moviessl_cache``) keeps
    its entries instead of decoding every video again (a K400 flow cache: days); else absolute."""
    st = path.stat()
    where: Path | str = path.resolve()
    if anchor is not None and where.is_relative_to(anchor):
        where = f"./{where.relative_to(anchor)}"  # (no absolute path starts so: no clash with one)
    raw = f"{where}|{st.st_size}|{st.st_mtime_ns}"
    # the name's bytes, whatever the locale: a non-ASCII name met under a non-UTF-8 one is held as
    # surrogate escapes (PEP 383), which str.encode() refused (a traceback before the first batch)
    return hashlib.sha1(os.fsencode(raw)).hexdigest()[:12]


def cache_base(folder: Path, path: Path, anchor: Path, suffixes: Sequence[str]) -> Path:
    """``folder/{stem}-{key}`` of ``path`` (:func:`_source_key` relative to ``anchor``), or the name an
    earlier version keyed by the absolute path where only that one has an entry (any of ``suffixes``):
    an upgrade reads a cache built before it instead of decoding it all again."""
    base = folder / f"{path.stem}-{_source_key(path, anchor)}"
    if any(base.with_suffix(x).is_file() for x in suffixes):
        return base
    legacy = folder / f"{path.stem}-{_source_key(path)}"
    return legacy if any(legacy.with_suffix(x).is_file() for x in suffixes) else base


def resize_frames(frames: np.ndarray, short_side: int) -> np.ndarray:
    """(T,H,W,3) uint8 -> short side ``short_side`` (the video module's resize: area filter when shrinking)."""
    from ..video import resize_short_side

    return np.ascontiguousarray(resize_short_side(frames, int(short_side)))


def _vfr_times(reader) -> np.ndarray | None:
    """A variable-rate file's frame times (s), by which clips map to its frames; None at a constant
    rate (mapped by ``fps``, :func:`moviessl.video.timeline.timeline_to_native`)."""
    return np.asarray(reader.frame_times, np.float64).copy() if reader.is_vfr else None


# Readers LiveSource.get keeps open, per process and thread, least recently used closed first:
# consecutive clips of a video go on with one reader (its running decoder) instead of a fresh open
# per clip. For a file read by decode count (MPEG program streams, AVI with B-frames, raw elementary
# streams: no usable seeking) a fresh reader decoded the film from frame 0 up to every clip; a
# kept one goes on from the clip before, though a clip behind it still starts again at frame 0
# (clips at random places of such a film cost about a third of it each, against half with a fresh
# reader). A few, not one per video: each holds a file descriptor, the demuxer's index and a
# decoder with its reference frames and threads.
OPEN_READERS = 4
_readers: dict[tuple[int, int], OrderedDict] = {}  # (pid, thread id) -> {path: (stat, VideoReader)}
_readers_lock = threading.Lock()


def _new_lock_in_child() -> None:
    global _readers_lock
    _readers_lock = threading.Lock()  # another thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_new_lock_in_child)


def _reader(path: Path):
    """This process's and thread's open reader of ``path`` (opened, or reopened if the file changed).

    Readers are never shared: a loader worker forked after its parent read a clip inherits the
    parent's open readers, whose file offsets (one open file description) and decoder state it
    would share, so each process keeps its own, and the inherited ones are left untouched, not even
    closed (freeing a decoder whose threads did not survive the fork can hang). A pickled
    :class:`LiveSource` carries none."""
    from ..video import VideoReader

    st = path.stat()
    sig = (st.st_size, st.st_mtime_ns, st.st_ino)
    pid, tid = os.getpid(), threading.get_ident()
    with _readers_lock:
        pool = _readers.get((pid, tid))
        if pool is None:
            alive = {t.ident for t in threading.enumerate()}
            for key in [k for k in _readers if k[0] == pid and k[1] not in alive]:
                for _, r in _readers.pop(key).values():  # a finished thread's readers
                    r.close()
            pool = _readers[pid, tid] = OrderedDict()
    hit = pool.get(str(path))
    if hit is not None and hit[0] == sig:
        pool.move_to_end(str(path))
        return hit[1]
    if hit is not None:  # rewritten since: its index is another file's
        pool.pop(str(path))[1].close()
    r = VideoReader(path)
    pool[str(path)] = (sig, r)
    while len(pool) > OPEN_READERS:
        pool.popitem(last=False)[1][1].close()
    return r


def _discard_reader(path: Path) -> None:
    entry = _readers.get((os.getpid(), threading.get_ident()), {}).pop(str(path), None)
    if entry is not None:
        entry[1].close()


def close_readers() -> None:
    """Close the readers this process keeps open (:data:`OPEN_READERS`); for a caller that is done
    with its videos, and tests. No other thread of the process may be reading meanwhile."""
    pid = os.getpid()
    with _readers_lock:
        for key in [k for k in _readers if k[0] == pid]:
            for _, r in _readers.pop(key).values():
                r.close()


class LiveSource:
    """Frames decoded on demand (no cache): ``get(indices)`` seeks and decodes only that window,
    with a reader kept open between calls (:data:`OPEN_READERS`). ``frame_times``: see
    :func:`_vfr_times`."""

    def __init__(self, path: str | os.PathLike, short_side: int):
        from ..video import VideoReader

        self.path, self.short_side = Path(path), int(short_side)
        # not a kept reader: a source made to fill the frame cache never calls get(), and its reader
        # would sit in the pool; the index is remembered, so get()'s first open costs no new pass
        with VideoReader(self.path) as r:
            self.fps, self.num_frames = float(r.fps), int(r.num_frames)
            self.frame_times = _vfr_times(r)
        if self.num_frames <= 0:
            raise BadInputError(self.path, "no decodable frames")

    def get(self, indices) -> np.ndarray:
        r = _reader(self.path)
        try:
            frames = r.get_frames(np.asarray(indices, dtype=np.int64))
        except BaseException:
            _discard_reader(self.path)  # a read that failed half-way leaves no decoder state to trust
            raise
        finally:
            r.forget_frames()  # the next clip is rarely next to this one; all() would keep a film
        return resize_frames(frames, self.short_side)

    def all(self) -> np.ndarray:
        return self.get(np.arange(self.num_frames))

    def chunks(self, size: int, max_bytes: int | None = None):
        """Every frame in order, ``size`` at a time but at most ``max_bytes`` (:data:`CHUNK_BYTES`) of
        decoded frames at the video's own size (the last chunk shorter), decoded once by one reader: a
        film's optical flow without its frames all in RAM or a seek per chunk."""
        from ..video import VideoReader

        with VideoReader(self.path) as r:
            frame_bytes = r.width * r.height * 3
            size = max(1, min(int(size), int(max_bytes or CHUNK_BYTES) // frame_bytes))
            for a in range(0, self.num_frames, size):
                yield resize_frames(r.get_frames(np.arange(a, min(a + size, self.num_frames))), self.short_side)


DECODE_CHUNK = 32  # frames decoded (at the video's own size) and written at a time when caching
# ... and at most this many bytes of them: 32 frames of 4K are ~0.8 GB, and the reader keeps the
# previous chunk beside the one being resized; 64 MB is 32 frames up to ~480p, 10 of 1080p, 2 of 4K.
# A reader decoding in order pays nothing per chunk, and the result does not depend on the size.
CHUNK_BYTES = 64 << 20

# Memory maps kept open per process. Each one holds a file descriptor (CPython's mmap keeps a dup of
# it) and a kernel mapping, so a source must not keep its own: a loader worker that had touched
# every video of a Kinetics-size set would run out of descriptors (often 1024 per process) or of
# mappings (vm.max_map_count, 65530). Reopening is cheap next to decoding or augmenting a clip
# (docs/design.md); the last few hundred stay open.
OPEN_MAPS = 256


@functools.lru_cache(maxsize=OPEN_MAPS)
def _memmap(npy: str) -> np.ndarray:
    return np.load(npy, mmap_mode="r")


class CachedSource:
    """Frames of one video from the cache (memory-mapped on use; see ``OPEN_MAPS``)."""

    def __init__(self, npy: Path, meta: dict):
        self.npy, self.meta = npy, meta
        self.fps, self.num_frames = float(meta.get("fps") or 0.0), int(meta["num_frames"])
        times = meta.get("frame_times")
        self.frame_times = None if times is None else np.asarray(times, np.float64)
        self.path = Path(meta["src"])

    @property
    def frames(self) -> np.ndarray:
        return _memmap(str(self.npy))

    def get(self, indices) -> np.ndarray:
        return np.ascontiguousarray(self.frames[np.asarray(indices, dtype=np.int64)])

    def all(self) -> np.ndarray:
        return self.frames


class FrameCache:
    """``FrameCache(cache_dir, short_side).source(path)`` -> a :class:`CachedSource` (decoding on first use)."""

    def __init__(self, cache_dir: str | os.PathLike, short_side: int):
        self.short_side = int(short_side)
        self.dir = Path(cache_dir) / f"frames_s{self.short_side}_v{VERSION}"
        self.anchor = Path(cache_dir).resolve().parent  # videos under it are keyed by their place there

    def paths(self, path: Path) -> tuple[Path, Path, Path]:
        base = cache_base(self.dir, Path(path), self.anchor, (".json", ".bad"))
        return base.with_suffix(".npy"), base.with_suffix(".json"), base.with_suffix(".bad")

    def source(self, path: str | os.PathLike) -> CachedSource:
        path = Path(path)
        if not path.exists():
            raise_if_denied(path)
            raise BadInputError(path, "video not found")
        npy, meta_p, bad_p = self.paths(path)
        if bad_p.is_file():  # failed before: do not pay for decoding it again
            # UTF-8 as written (a decoder's words may name the file), not the locale's encoding
            why = bad_p.read_text(encoding="utf-8", errors="replace").strip()
            raise BadInputError(path, why or "undecodable video (cached)")
        if npy.is_file() and meta_p.is_file():
            meta = json.loads(meta_p.read_text())
            if "frame_times" not in meta:  # cached by a version that mapped every file by its average rate
                meta = self._add_frame_times(path, meta_p, meta)
            return CachedSource(npy, meta)
        try:
            live = LiveSource(path, self.short_side)  # no frames: BadInputError
            # written as decoded, a chunk at a time: a film's frames need not fit in RAM; an error
            # writing the cache (a full disk) is an OSError naming it, not a bad video
            row = atomic_write_from(
                npy, live.chunks(DECODE_CHUNK), lambda f, chunks: write_npy_chunks(f, chunks, live.num_frames)
            )
        except BadInputError as e:
            if not passing_failure(e):
                atomic_write_text(bad_p, e.cause)
            raise
        except Exception as e:  # a decoder crash is still just a bad video
            if isinstance(e, OSError) and e.filename == str(npy):
                raise
            why = f"{type(e).__name__}: {e}"
            if passing_failure(e):  # skipped now, not remembered: a later run reads it again
                raise BadInputError(path, f"cannot read it now ({why}); not noted as bad") from e
            atomic_write_text(bad_p, f"cannot decode ({why})")
            raise BadInputError(path, f"cannot decode ({why})") from None
        meta = {
            "src": str(path.resolve()),
            "fps": live.fps,
            "num_frames": int(live.num_frames),
            "frame_times": None if live.frame_times is None else live.frame_times.tolist(),
            "height": int(row[0]),
            "width": int(row[1]),
            "short_side": self.short_side,
            "version": VERSION,
        }
        atomic_write_json(meta_p, meta)
        return CachedSource(npy, meta)

    @staticmethod
    def _add_frame_times(path: Path, meta_p: Path, meta: dict) -> dict:
        """An older cache entry gets its video's frame times from the container's index (no decoding):
        its frames stay valid, and re-decoding a whole cache would cost hours at Kinetics' size."""
        from ..video import VideoReader

        try:
            with VideoReader(path) as r:
                times = _vfr_times(r)
        except BadInputError:
            raise
        except Exception as e:  # a decoder crash is still just a bad video
            raise BadInputError(path, f"cannot read its frame times ({type(e).__name__}: {e})") from None
        if times is not None and len(times) != int(meta["num_frames"]):
            # frames that did not decode were dropped when it was cached: the index no longer lines
            # up with the cached frames, which keep their average-rate mapping
            n = meta["num_frames"]
            log.warning("%s: %d frames indexed, %s cached; mapped by average rate", path, len(times), n)
            times = None
        meta = {**meta, "frame_times": None if times is None else times.tolist()}
        try:
            atomic_write_json(meta_p, meta)
        except OSError as e:  # a shared, read-only cache: its frames still serve, the times are kept in RAM
            log.debug("%s: frame times not saved (%s)", meta_p, e)
        return meta


def default_cache_dir(data_csv: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """``<csv folder>/.moviessl_cache`` when writable (shared by all runs on that data), else the run dir."""
    d = Path(data_csv).resolve().parent / ".moviessl_cache"
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".w{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return d
    except OSError:
        if out_dir is None:
            raise
        return Path(out_dir) / "cache"
