"""Event-feature extraction: a pretrained backbone turns videos into ``(num_events, D)`` arrays.

One event every ``stride_s`` seconds (centres ``stride_s * (k + 0.5)``); each event is the
backbone's clip (``meta.input``: e.g. 16 frames 4 apart on the 30-fps timeline, short side 256,
centre crop 224) around its centre, globally pooled. VidSitu segments always give exactly the 5
events centred at 1, 3, 5, 7, 9 s (their layout). Optional ``--contextualizer``: the TxE outputs
over windows of the event sequence, ``{id}_ctx.npy`` (:func:`contextualize`).

Mechanics: an :class:`EventClipStream` (IterableDataset) decodes videos in DataLoader workers and
yields batches of at most ``batch_events`` pre-processed uint8 clips; videos are sharded over
processes x workers (one long film: its commit chunks are split over the workers).
:class:`FeatureExtractor` (Lightning ``predict``) runs the backbone and commits every
``chunk_events`` events of a film atomically to ``OUT/.partial/{id}/`` (so a killed job resumes
inside the film, losing at most the chunk each worker had in flight, and memory does not grow with
the film's length); the last chunk streams the film's chunks into ``{id}_feats.npy`` and appends
its index entry to a per-process journal (``.index.rank{r}.jsonl``). At the end rank 0 merges the
journals into ``index.json``. Re-running skips every id already in the index or the journals and
every chunk already committed. Events in a damaged stretch (frames that do not decode) are zero
rows marked ``missing`` in the index; the job goes on and exits 0.

Under DDP (``--devices N``) rank 0 splits its to-do list over the ranks by file size (largest
first to the least-loaded rank, :func:`balanced_shards`) and broadcasts the split, so all ranks agree
and a few long films beside many short clips do not leave one rank working for hours while the
others wait at the final barrier (``--ddp-timeout-s`` raises that wait's limit). A film larger than
one rank's fair share (:func:`spread_over_ranks`: one movie on 8 GPUs) is split by commit chunk over
every rank instead; after the barrier rank 0 alone writes it, and its entry, from the committed
chunks (:meth:`FeatureExtractor.finish_spread`). Each rank extracts
into the same ``--out`` (a shared filesystem across nodes), appending only to its own journal; after
the barrier rank 0 alone merges every journal into the one ``index.json`` and removes the journals
and any temp file a killed earlier run left. Hence one job at a time per folder: rank 0 holds the
folder's lock (:func:`job_lock`) from before the ranks split the work to its end.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import heapq
import json
import logging
import math
import os
import re
import shutil
import socket
import stat
import time
import uuid
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..checkpoint import build_from_checkpoint, clip_input, file_hash, load_checkpoint
from ..config import HALF_WEIGHTS, MAX_TIMEOUT_S, TrainerConfig, check_accelerator, check_devices, check_precision
from ..data.cliplist import read_clip_list
from ..dist import EVERY_RANK, check_launcher_world, check_machine, job_leader, launch_token, pins_memory
from ..errors import BadInputError, raise_if_denied
from ..models.slowd import speed_up
from ..training import (
    OnHost,
    ctrl_c_kept,
    ddp_with_timeout,
    keeps_random_streams,
    lightning_quieted,
    lightning_trainer,
    planned_world_size,
)
from ..utils import plural
from ..utils import progress as job_progress
from ..utils.io import append_line, atomic_save_npy, atomic_write, atomic_write_json, ensure_out_dir, write_npy_chunks
from ..video import (
    FRAME_EXTS,
    TARGET_FPS,
    VIDEO_EXTS,
    VideoReader,
    crop_box,
    event_centers,
    param_dtype,
    read_clip,
    reader_clip_indices,
    resize_short_side,
    squash_resize,
    to_model_input,
)
from .store import (
    CLAIM_NAME,
    CTX_SUFFIX,
    FEATS_SUFFIX,
    FEATURES_FORMAT,
    INDEX_NAME,
    JOB_LOCK,
    check_format,
    lock_stamp,
    read_index,
)

log = logging.getLogger("moviessl.features")

JOURNAL_GLOB = ".index.rank*.jsonl"


def journal_path(out: Path, rank: int) -> Path:
    """Process ``rank``'s journal of finished videos in the folder ``out`` (one of :data:`JOURNAL_GLOB`)."""
    return Path(out) / f".index.rank{int(rank)}.jsonl"


TEMP_GLOBS = (
    f".*{FEATS_SUFFIX}.*.tmp",
    f".*{CTX_SUFFIX}.*.tmp",
    f".{INDEX_NAME}.*.tmp",
    f".{CLAIM_NAME}.*.tmp",
)  # utils.io.atomic_write's names
VIDSITU_CENTERS = [1.0, 3.0, 5.0, 7.0, 9.0]
CHUNK_EVENTS = 64  # events per commit chunk of a film (128 s at 2-s events): a kill loses at most one per worker
LIST_EXTS = (".txt", ".csv", ".lst", ".list")  # a file named so is a list, whatever it holds
PARTIAL_DIR = ".partial"  # OUT/.partial/{id}/: committed chunks of films in progress
# What a listed (finished or bad) film leaves in FeatureExtractor._films: a mark that drops the later
# batches other workers send of it, not its state (chunk layout, chunks done), which a job over a
# folder of tens of thousands of videos would otherwise keep for every one of them.
CLOSED_FILM = MappingProxyType({"closed": True})


# --- which videos -------------------------------------------------------------------------------


def _is_frame_folder(d: Path) -> bool:
    return d.is_dir() and any(p.suffix.lower() in FRAME_EXTS for p in d.iterdir())


def _holds_videos(d: Path) -> bool:
    """Whether a folder holds video files or frame folders (a folder of videos, not one film's frames)."""
    return any(
        not q.name.startswith(".") and (q.suffix.lower() in VIDEO_EXTS if q.is_file() else _is_frame_folder(q))
        for q in d.iterdir()
    )


def _is_text(p: Path) -> bool:
    """Whether a file reads as a UTF-8 list (a video, whatever its name, does not)."""
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except OSError:
        return True  # read as a list, whose reader names the problem
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # a character cut by the 4 KB read is still text
    return True


def _scan_dir(d: Path) -> list[tuple[str, Path]]:
    out, other, nested = [], [], []
    for p in sorted(d.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            out.append((p.stem, p))
        elif p.is_dir() and _is_frame_folder(p):
            out.append((p.name, p))
        elif p.is_file():
            other.append(p.name)
        elif p.is_dir() and _holds_videos(p):
            nested.append(p.name)
    if nested:  # `my_movies/season 1/*.mp4`: the scan is one level deep, and these went without a word
        log.warning(
            "%s: %d subfolder%s of videos left out (first: %s): a folder is read one level deep; give the "
            "subfolder, or a list file naming its videos",
            d,
            len(nested),
            "s" if len(nested) > 1 else "",
            nested[0],
        )
    if other:  # a video under an extension not listed would otherwise vanish without a word
        log.warning(
            "%s: %d file%s without a video extension left out (first: %s); a list file can name them",
            d,
            len(other),
            "s" if len(other) > 1 else "",
            other[0],
        )
    return out


def _not_there(p: Path) -> str:
    """Why ``--videos p`` names nothing to read, in the words of what it looked for: a missing
    ``film.mp4`` was "no such video folder or list file", as if a folder had been asked for."""
    raise_if_denied(p)  # one this user may not look up is there, for all we know
    if os.path.exists(p):  # a FIFO, a socket, a device
        return "is neither a file nor a folder"
    ext = p.suffix.lower()
    if ext in VIDEO_EXTS:
        return "no such video file"
    if ext in LIST_EXTS:
        return "no such list file"
    return "no such file or folder (a video, a folder of videos, a list file, a VidSitu or LVU root)"


def find_videos(spec: str | os.PathLike) -> tuple[list[tuple[str, Path]], str]:
    """``(id, path)`` pairs and the layout: ``vidsitu`` | ``lvu`` | ``dir`` | ``list`` | ``file``.

    ``spec``: one video file, a VidSitu root (``vsitu_video_trimmed_dir/`` or ``vsitu_frames/``), an LVU root
    (``videos/``), a folder of video files / frame folders, or a list file (one path per line,
    optionally followed by a label, relative to the list's folder).
    """
    p = Path(spec)
    if p.is_file() and p.suffix.lower() not in LIST_EXTS and (p.suffix.lower() in VIDEO_EXTS or not _is_text(p)):
        # one film, whatever its extension: FFmpeg reads the format from the content
        vids, layout = [(p.stem, p)], "file"
    elif p.is_file():
        # a frame folder keeps its whole name, as a folder scan gives it ('tt0111161.shot1' is no
        # video 'tt0111161' with an extension)
        vids = [(q.name if q.is_dir() else q.stem, q) for q, _ in read_clip_list(p)]
        layout = "list"
    elif p.is_dir():
        layout = "dir"
        if (p / "vsitu_video_trimmed_dir").is_dir():
            p, layout = p / "vsitu_video_trimmed_dir", "vidsitu"
        elif (p / "vsitu_frames").is_dir():
            p, layout = p / "vsitu_frames", "vidsitu"
        elif (p / "videos").is_dir():
            p, layout = p / "videos", "lvu"
        elif p.name in ("vsitu_video_trimmed_dir", "vsitu_frames"):
            layout = "vidsitu"
        if layout == "dir" and _is_frame_folder(p) and not _holds_videos(p):
            # one film's frame folder, as `probe` and the reader take it: "no videos found" (after a
            # warning that its frames were left out) sent the user to a list file
            vids, layout = [(p.name, p)], "file"
        else:
            vids = _scan_dir(p)
    else:
        raise BadInputError(p, _not_there(p))
    seen: dict[str, Path] = {}
    for vid, q in vids:
        if vid in seen:
            raise BadInputError(spec, f"two videos share the id '{vid}' ({seen[vid]} and {q})")
        seen[vid] = q
    if not vids:
        raise BadInputError(spec, "no videos found (video files, frame folders, a VidSitu or LVU root, or a list file)")
    return vids, layout


# --- decoding ---------------------------------------------------------------------------------


def event_centers_for(duration_s: float, stride_s: float, vidsitu: bool) -> list[float]:
    return list(VIDSITU_CENTERS) if vidsitu else event_centers(duration_s, stride_s)


def clip_uint8(reader, center_s: float, inp: dict) -> np.ndarray:
    """One event clip, resized and centre-cropped: uint8 (3, T, crop, crop)."""
    frames = read_clip(reader, center_s, int(inp["num_frames"]), int(inp["stride"]))
    return _prep(frames, inp)


def _prep(frames: np.ndarray, inp: dict) -> np.ndarray:
    c = int(inp["crop"])
    if inp.get("resize") == "squash":  # the whole frame to crop x crop (VidSitu's loader)
        return np.ascontiguousarray(squash_resize(frames, c).transpose(3, 0, 1, 2))
    frames = resize_short_side(frames, int(inp["short_side"]))
    y, x = crop_box(frames.shape[1], frames.shape[2], c, "center")
    return np.ascontiguousarray(frames[:, y : y + c, x : x + c].transpose(3, 0, 1, 2))


def later_events(centers: Sequence[float], j: int, inp: dict) -> Sequence[float]:
    """The centres after ``centers[j]`` whose clips begin before its clip ends (a stride below the
    clip's span, e.g. ``--stride 1``), for :func:`clip_frames`'s ``later``."""
    span = int(inp["num_frames"]) * int(inp["stride"]) / TARGET_FPS
    return centers[j + 1 : bisect.bisect_right(centers, centers[j] + span, lo=j + 1)]


def clip_frames(reader, center_s: float, inp: dict, later: Sequence[float] = ()) -> tuple[np.ndarray, np.ndarray]:
    """``(native indices, frames uint8 (T,H,W,3))`` of the clip centred at ``center_s``.

    ``later``: the centres of the clips read next (:func:`later_events`). Their frames that lie
    before this clip's last one are decoded with it and kept by the reader for their own call: at a
    stride below the clip's span they fall between this clip's frames, and reading them afterwards
    was a seek back per clip (a GOP of decoding), or in a file read by decode count a decode of the
    film from its first frame."""
    nf, st = int(inp["num_frames"]), int(inp["stride"])
    idx = reader_clip_indices(reader, center_s, nf, st)
    ahead = [int(i) for c in later for i in reader_clip_indices(reader, c, nf, st) if i < idx.max()]
    if ahead:
        try:
            return idx, reader.get_frames(np.concatenate([idx, np.asarray(ahead, np.int64)]))[: len(idx)]
        except Exception:  # a frame only a later clip reads (a corrupt JPEG of a frame folder) is that clip's damage
            pass
    return idx, reader.get_frames(idx)


def event_clip(
    reader, center_s: float, inp: dict, timing: dict | None = None, later: Sequence[float] = ()
) -> tuple[np.ndarray, bool]:
    """``(clip uint8 (3,T,S,S), missing)``: ``missing`` when a frame of the clip did not decode (or
    decoded with errors concealed) -- a damaged stretch of the film. A missing clip is all zeros.
    ``later``: as for :func:`clip_frames`."""
    t0 = time.perf_counter()
    try:
        idx, frames = clip_frames(reader, center_s, inp, later)
        missing = bool(reader.missing) and any(int(i) in reader.missing for i in idx)
    except BadInputError:
        frames, missing = None, True
    except Exception as e:  # a decoder failure inside the film: that event is missing, the rest stand
        log.debug("%s: event at %.1f s: %s: %s", reader.path, center_s, type(e).__name__, e)
        frames, missing = None, True
    t1 = time.perf_counter()
    c, T = int(inp["crop"]), int(inp["num_frames"])
    clip = np.zeros((3, T, c, c), np.uint8) if missing else _prep(frames, inp)
    if timing is not None:
        timing["decode_s"] = timing.get("decode_s", 0.0) + (t1 - t0)
        timing["preprocess_s"] = timing.get("preprocess_s", 0.0) + (time.perf_counter() - t1)
    return clip, missing


def chunk_layout(num_events: int, chunk_events: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` event ranges of a film's commit chunks."""
    return [(a, min(a + chunk_events, num_events)) for a in range(0, num_events, chunk_events)]


class VideoStream(IterableDataset):
    """A stream over ``videos`` (``[(id, path)]``) whose rank's share is :meth:`shard`: the
    ``assignment`` :func:`shard_over_ranks` broadcast (by size), else every ``world``-th video.
    ``spread``: videos too large for any one rank, split by chunk over every rank instead
    (``{index into videos: its info}``; :class:`EventClipStream` only, never in :meth:`shard`)."""

    def __init__(self, videos: Sequence[tuple[str, Path]]):
        self.videos = list(videos)
        self.rank, self.world = 0, 1
        self.assignment: list[list[int]] | None = None  # per rank, indices into videos (DDP)
        self.spread: dict[int, dict] = {}  # index into videos -> info, as rank 0 read it (DDP)
        self.notes_dir: Path | None = None  # set by the extractor: where its workers note what they read
        self.run_token = ""  # ... and which run's notes are its own (a stale note under a reused pid is not)

    def note_reading(self, vid: str, path: Path) -> None:
        """In a DataLoader worker: note the video it starts reading (:func:`reading_note`), so that if
        the worker dies in it (a decoder's segfault, the OOM killer) the main process can name it."""
        if self.notes_dir is not None and get_worker_info() is not None:
            note = {"id": vid, "source": str(path), "run": self.run_token}
            try:
                reading_note(self.notes_dir, os.getpid()).write_text(json.dumps(note))
            except OSError:  # (a full disk) it only names a video should the worker die; results name their files
                pass

    def shard(self) -> list[tuple[str, Path]]:
        if self.assignment is not None:
            return [self.videos[i] for i in self.assignment[self.rank]]
        return self.videos[self.rank :: self.world]

    @staticmethod
    def worker() -> tuple[int, int]:
        """(this DataLoader worker's id, the number of workers); (0, 1) in the main process."""
        wi = get_worker_info()
        return (wi.id, wi.num_workers) if wi is not None else (0, 1)


class EventClipStream(VideoStream):
    """Yields, per video, batches ``{"id", "kind": "clips", "chunk", "part", "parts", "clips": uint8
    (E,3,T,S,S), "missing": bool (E,), "info", "timing", "mine", "shared"}`` (at most ``batch_events``
    clips, batches never straddle a commit chunk of ``chunk_events``; ``mine``: the chunks this rank
    does), ``{"id", "kind": "assemble", "info"}`` when every chunk was committed by an earlier run,
    or one ``{"id", "kind": "error", "error", "shared"}`` for a video that cannot be opened. ``done``
    maps ids to the chunks an interrupted run committed (``{"num_events", "chunks"}``); those are not
    decoded again.

    Work is sharded over processes x DataLoader workers by video; when a process has fewer videos
    than workers (one long film), each worker takes every ``num_workers``-th chunk of every video
    instead, so a single film is decoded in parallel. A ``spread`` film (too large for one rank,
    :func:`spread_over_ranks`; its events as rank 0 counted them) is split by chunk over every rank
    and worker: the i-th chunk still to do goes to rank ``(i + j) % world`` (j: the film's place
    among the spread ones, so short ones land on different ranks); its batches say ``"shared":
    True`` and rank 0 writes it once every rank is done (:meth:`FeatureExtractor.finish_spread`). A
    rank opens a spread film only if it holds some of its chunks. Set ``rank``/``world`` before
    iterating (the extractor does, in ``setup``)."""

    def __init__(
        self,
        videos: Sequence[tuple[str, Path]],
        input_spec: dict,
        stride_s: float = 2.0,
        vidsitu: bool = False,
        batch_events: int = 16,
        chunk_events: int | None = None,
        done: dict[str, dict] | None = None,
    ):
        super().__init__(videos)
        self.input, self.stride_s = dict(input_spec), float(stride_s)
        self.vidsitu, self.batch_events = vidsitu, int(batch_events)
        self.chunk_events = int(chunk_events or CHUNK_EVENTS)
        self.done = dict(done or {})

    def film_info(self, r: VideoReader, path: Path) -> dict:
        """What the index records of a video, and its number of events."""
        n = len(event_centers_for(r.duration_s, self.stride_s, self.vidsitu))
        info = {"fps": float(r.fps), "duration_s": float(r.duration_s), "source": source_name(path), "num_events": n}
        # the source as it was read, not when its entry is written: a frame dump or a copy that goes
        # on meanwhile must not have its finished size stand for the part read
        size = source_size(path)
        return info if size is None else {**info, "source_size": size}

    def __iter__(self) -> Iterator[dict]:
        wid, nw = self.worker()
        for j, (i, info) in enumerate(self.spread.items()):  # every rank and worker takes its chunks
            yield from self._spread_video(*self.videos[i], info, j, wid, nw)
        shard = self.shard()
        if nw > 1 and len(shard) < nw:  # few long films: split each film's chunks over the workers
            for vid, path in shard:
                yield from self._video(vid, path, wid, nw)
        else:
            for vid, path in shard[wid::nw]:
                yield from self._video(vid, path, 0, 1)

    def _open(self, vid: str, path: Path, shared: bool = False) -> VideoReader | dict:
        """A reader, or the error item of a video that cannot be opened."""
        try:
            return VideoReader(path)
        except Exception as e:  # one bad video never stops the job: it is listed in the index
            # every worker reports (the extractor keeps the first): a film split over workers cannot
            # be finished if any of them cannot open it
            msg = str(e) if isinstance(e, BadInputError) else f"{path}: {type(e).__name__}: {' '.join(str(e).split())}"
            return self._error(vid, path, msg, shared)

    @staticmethod
    def _error(vid: str, path: Path, msg: str, shared: bool) -> dict:
        """The item of a video this worker cannot read (``shared``: a spread film's part), with its
        size as it failed (a copy still going on then is tried again once it has ended)."""
        info = {"source": source_name(path)}
        size = source_size(path)
        return {
            "id": vid,
            "kind": "error",
            "error": msg,
            "info": info if size is None else {**info, "source_size": size},
            "shared": shared,
        }

    def _todo(self, vid: str, num_events: int) -> tuple[list[tuple[int, int]], list[int]]:
        """(the film's chunks, those still to do)."""
        chunks = chunk_layout(num_events, self.chunk_events)
        prior = self.done.get(vid) or {}
        done = set(prior.get("chunks", ())) if prior.get("num_events") == num_events else set()
        return chunks, [k for k in range(len(chunks)) if k not in done]

    def _video(self, vid: str, path: Path, sub: int, nsub: int) -> Iterator[dict]:
        self.note_reading(vid, path)
        r = self._open(vid, path)
        if isinstance(r, dict):
            yield r
            return
        with r:
            info = self.film_info(r, path)
            chunks, todo = self._todo(vid, info["num_events"])
            if not todo:
                if sub == 0:
                    yield {"id": vid, "kind": "assemble", "info": info}
                return
            yield from self._batches(r, vid, info, chunks, todo[sub::nsub], todo, shared=False)

    def _spread_video(self, vid: str, path: Path, info: dict, j: int, sub: int, nsub: int) -> Iterator[dict]:
        # rank 0 counted the events and its done list was broadcast: every rank splits the same todo
        chunks, todo = self._todo(vid, int(info["num_events"]))
        mine = [k for i, k in enumerate(todo) if (i + j) % self.world == self.rank]
        if not mine[sub::nsub]:
            return
        self.note_reading(vid, path)
        r = self._open(vid, path, shared=True)
        if isinstance(r, dict):
            yield r
            return
        with r:
            here = self.film_info(r, path)
            if here["num_events"] != info["num_events"] or abs(here["duration_s"] - info["duration_s"]) > 1e-6:
                # its reader here lost part of the film (a read error while indexing): its clips would
                # repeat the last frame it has, unmarked; left to a rerun instead
                err = f"{path}: this rank reads {here['duration_s']:.3f} s, rank 0 read {info['duration_s']:.3f} s"
                yield self._error(vid, path, err, shared=True)
                return
            yield from self._batches(r, vid, info, chunks, mine[sub::nsub], mine, shared=True)

    def _batches(self, r, vid, info, chunks, ks, mine, shared: bool) -> Iterator[dict]:
        """The batches of chunks ``ks`` of a film (``mine``: all this rank does of it)."""
        centers = event_centers_for(info["duration_s"], self.stride_s, self.vidsitu)
        # VidSitu's 5 events whatever the segment's length: one centred past its end (less than half
        # of it inside, the rule that leaves such an event out elsewhere) has no frames of its own,
        # only copies of the last ones
        end = info["duration_s"] + 1e-6 if self.vidsitu else math.inf
        c, T = int(self.input["crop"]), int(self.input["num_frames"])
        past = (np.zeros((3, T, c, c), np.uint8), True)
        B = self.batch_events
        for k in ks:
            a, b = chunks[k]
            parts = range(a, b, B)
            for pi, s in enumerate(parts):
                timing: dict = {}
                got = [
                    event_clip(r, centers[j], self.input, timing, later_events(centers, j, self.input))
                    if centers[j] <= end
                    else past
                    for j in range(s, min(s + B, b))
                ]
                yield {
                    "id": vid,
                    "kind": "clips",
                    "chunk": k,
                    "part": pi,
                    "parts": len(parts),
                    "clips": torch.from_numpy(np.stack([g[0] for g in got])),
                    # on the CPU, as the clips: on torch's default device (a user's set_default_device
                    # ("cuda"), which a forked loader worker inherits) the GPU, which a worker cannot start
                    "missing": torch.tensor([g[1] for g in got], dtype=torch.bool, device="cpu"),
                    "info": info,
                    "timing": timing,
                    "shared": shared,
                    "mine": mine,
                }


def backbone_features(backbone: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """Pooled features (E, D) float32 of uint8 event clips (E, 3, T, S, S) already on the model's device."""
    return backbone(to_model_input(clips, param_dtype(backbone))).float()


# --- contextualizer -----------------------------------------------------------------------------

CTX_BLOCK = 256  # events whose TxE windows are built and run together (bounded memory on long films)


@torch.no_grad()
def contextualize(
    txe: torch.nn.Module, feats, window: int = 5, step: int = 1, missing: np.ndarray | None = None
) -> torch.Tensor:
    """TxE outputs for every event of a video: (L, D) -> (L, dim).

    Event t is read through the window of ``window`` tokens ``step`` events apart (token stride
    / feature stride) in which it sits most centrally (clamped at the ends of the video), so each
    output sees the same amount of context the TxE was pretrained with. Videos shorter than a
    window are padded. ``missing`` events (damaged stretches) are never attended to: an event's
    window lies within its undamaged stretch, as MaskPred's training windows do
    (:class:`moviessl.context.windows.FeatureWindows`), padded at the end where the stretch is
    shorter (a window reaching into the damage read its events as padding inside the window, a
    layout the TxE never saw); a missing event's output is 0. ``feats`` may be a tensor or a
    (memory-mapped) array: windows are built and run ``CTX_BLOCK`` events at a time, so a
    feature-length film costs no more memory than a clip. They are read in the dtype the TxE's
    weights are held in (a ``*-true`` precision's half: Lightning converts a module's inputs so).
    """
    L, D = feats.shape
    if missing is not None and not np.asarray(missing).any():
        missing = None
    if isinstance(feats, torch.Tensor):
        dev = feats.device
    else:
        dev = next(iter(txe.parameters()), torch.zeros(0)).device
    dtype = param_dtype(txe) or torch.float32
    # each event's stretch [s0, s1): the whole video, or its run of undamaged (or damaged) events
    bounds = np.array([0, L])
    if missing is not None:
        m = np.asarray(missing, bool)
        bounds = np.concatenate([[0], np.flatnonzero(m[1:] != m[:-1]) + 1, [L]])
    outs = []
    for b0 in range(0, L, CTX_BLOCK):
        rows, pos = [], []
        for t in range(b0, min(L, b0 + CTX_BLOCK)):
            r = int(np.searchsorted(bounds, t, side="right")) - 1
            s0, s1 = int(bounds[r]), int(bounds[r + 1])
            lattice = np.arange(s0 + (t - s0) % step, s1, step)
            p = (t - s0) // step
            start = int(np.clip(p - window // 2, 0, max(0, len(lattice) - window)))
            rows.append(lattice[start : start + window])
            pos.append(p - start)
        lo, hi = min(int(i.min()) for i in rows), max(int(i.max()) for i in rows) + 1
        block = feats[lo:hi]
        block = torch.as_tensor(np.array(block, np.float32)) if not isinstance(block, torch.Tensor) else block
        block = block.to(dev, dtype)
        x = torch.zeros(len(rows), window, D, dtype=block.dtype, device=dev)
        pad = torch.ones(len(rows), window, dtype=torch.bool, device=dev)
        for j, idx in enumerate(rows):
            x[j, : len(idx)] = block[torch.as_tensor(idx - lo, device=dev)]
            pad[j, : len(idx)] = False
        out = txe(x, mask=None, pad=pad if pad.any() else None)
        outs.append(out[torch.arange(len(rows), device=dev), torch.as_tensor(pos, device=dev)])
    out = torch.cat(outs)
    if missing is not None:
        out[torch.as_tensor(missing, device=out.device)] = 0
    return out


@contextlib.contextmanager
def txe_as_in_predict(
    txe: torch.nn.Module, trainer: pl.Trainer | None, accelerator: str, precision: str, devices: Any = None
):
    """Run the TxE outside ``predict`` (films rank 0 writes after the barrier, ctx files added to
    features of an earlier run) on the device and in the precision ``predict`` runs it with: the
    trainer's root device and precision context where this process has a trainer (Lightning's
    teardown moved the module to the CPU), else this process's GPU where there is one
    (:func:`moviessl.dist.local_device`: the one ``devices`` gives this local rank) with the weights
    in a true precision's dtype, or autocast for a mixed precision (Lightning's names and aliases;
    ``16-mixed`` on a CPU is bf16, as Lightning makes it, and said so as Lightning says it)."""
    from ..dist import local_device

    if trainer is not None:
        txe.to(trainer.strategy.root_device)
        step = trainer.precision_plugin.predict_step_context()
    else:
        dev = torch.device(local_device(accelerator, devices))
        p = precision_name(precision)
        true = {**HALF_WEIGHTS, "64-true": "float64"}
        dtype = getattr(torch, true[p]) if p in true else param_dtype(txe)
        txe.to(dev, dtype)  # a true precision holds the weights so (TransformerEngine's: without its FP8 layers)
        mixed = p in ("16-mixed", "bf16-mixed")
        half = torch.float16 if p == "16-mixed" and dev.type != "cpu" else torch.bfloat16 if mixed else None
        if p == "16-mixed" and dev.type == "cpu":
            # said as Lightning says it where it builds a trainer (its accelerator connector): here none
            # is built (a TxE's outputs added to features already there), and the switch went unsaid
            log.warning("precision 16-mixed runs as bf16-mixed on the CPU (a CPU has no fp16 AMP)")
        step = contextlib.nullcontext() if half is None else torch.autocast(dev.type, dtype=half, cache_enabled=False)
    with step:
        yield


def load_contextualizer(
    path: str | os.PathLike,
    in_dim: int,
    feature_stride_s: float,
    source: str = "the backbone",
    backbone: str | None = None,
):
    """(TxE in eval mode, window, step in events) from a ``context`` checkpoint; ``source`` names
    where the ``in_dim``-d features come from in the error for a width that does not fit, and
    ``backbone`` (their backbone's hash, as feature folders record it) is checked against the
    backbones the TxE was pretrained on (:func:`contextualizer_geometry`)."""
    obj = load_checkpoint(path, stage="context")
    window, step = contextualizer_geometry(path, obj.get("meta", {}), in_dim, feature_stride_s, source, backbone)
    # its random initialisation, overwritten by the file's weights, is no draw of the caller's (as
    # moviessl.load): the LVU table and `finetune lvu --task all` contextualize outside any stage
    with torch.random.fork_rng(devices=[]):
        return build_from_checkpoint(obj).eval(), window, step


def other_backbone_note(path: str | os.PathLike | None, meta: dict, backbone: str | None, source: str) -> str | None:
    """A warning when the TxE of ``meta`` was pretrained on features of other backbones than
    ``backbone`` (a feature folder's ``backbone`` hash; None for a folder without an index: unknown,
    nothing said): a TxE of CVRL features applied to MoDist features of the
    same width runs, and its outputs mean little. A warning, not an error: the same weights saved
    again have another hash."""
    seen = meta.get("backbone")
    if backbone is None or not seen or str(backbone) in [str(b) for b in seen]:
        return None
    return (
        f"{path}: TxE pretrained on features of backbone {', '.join(map(str, seen))}, "
        f"applied to features of backbone {backbone} ({source})"
    )


def contextualizer_geometry(
    path: str | os.PathLike | None,
    meta: dict,
    in_dim: int,
    feature_stride_s: float,
    source: str = "the backbone",
    backbone: str | None = None,
) -> tuple[int, int]:
    """(window, step in events) of a ``context`` checkpoint's ``meta`` for ``in_dim``-d features
    ``feature_stride_s`` apart, or one line naming ``path`` when they do not fit; a warning when
    the features' ``backbone`` is not one the TxE was pretrained on (:func:`other_backbone_note`)."""
    note = other_backbone_note(path, meta, backbone, source)
    if note:
        log.warning(note)
    if int(meta.get("in_dim", in_dim)) != in_dim:
        raise BadInputError(
            path, f"contextualizer expects {meta.get('in_dim')}-d event features, {source} gives {in_dim}"
        )
    k = float(meta.get("token_stride_s", feature_stride_s)) / feature_stride_s
    if k < 1 - 1e-6 or abs(k - round(k)) > 1e-6:
        # named by the extraction flag that sets it: `finetune lvu --contextualizer` has no --stride
        raise BadInputError(
            path,
            f"its token stride {meta.get('token_stride_s')} s is not a multiple of the features' event stride "
            f"{feature_stride_s:g} s (moviessl extract --stride)",
        )
    return int(meta.get("window", 5)), int(round(k))


# --- partial results of a film (resume inside a film) --------------------------------------------


def partial_dir(out_dir: Path, vid: str) -> Path:
    return Path(out_dir) / PARTIAL_DIR / vid


def _chunk_path(out_dir: Path, vid: str, k: int) -> Path:
    return partial_dir(out_dir, vid) / f"c{k:06d}.npz"


def _source_stamp(path: Path) -> dict:
    try:
        st = Path(path).stat()
        return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
    except OSError:
        return {}


PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}  # Lightning's


def precision_name(precision: Any) -> str:
    """Lightning's name of a precision (``32`` is ``32-true``, ``bf16`` is ``bf16-mixed``), so that
    a run given an alias resumes the chunks of a run given the name."""
    return PRECISION_ALIASES.get(str(precision), str(precision))


def scan_partials(out_dir: Path, todo: Sequence[tuple[str, Path]], plan: dict) -> dict[str, dict]:
    """Chunks committed by an interrupted run, per video still to do: ``{id: {"num_events", "chunks"}}``.
    Partial results made with other settings (chunk size, batch size, precision) or of a video that
    changed since are discarded."""
    done: dict[str, dict] = {}
    try:  # one listing, not a stat per video (a fresh Kinetics folder: 240k, none of them there)
        with os.scandir(Path(out_dir) / PARTIAL_DIR) as it:
            begun = {e.name for e in it if e.is_dir()}
    except OSError:
        begun = set()
    for vid, path in todo:
        if vid not in begun:
            continue
        d = partial_dir(out_dir, vid)
        try:
            meta = json.loads((d / "plan.json").read_text())
        except (OSError, ValueError):
            meta = None
        want = {**plan, **_source_stamp(path)}
        if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in want.items()):
            log.info("%s: discarding partial results of an earlier run (other settings or a changed video)", vid)
            shutil.rmtree(d, ignore_errors=True)
            continue
        chunks = sorted(int(p.stem[1:]) for p in d.glob("c*.npz") if p.stem[1:].isdigit())
        done[vid] = {"num_events": int(meta["num_events"]), "chunks": chunks}
    return done


def _ranges(mask: np.ndarray) -> list[list[int]]:
    """``[[start, stop), ...]`` runs of True in a boolean mask."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def _chunk_rows(out_dir: Path, vid: str, k: int) -> int:
    """Events in a committed chunk of a film (-1: none there, or unreadable)."""
    try:
        with np.load(_chunk_path(out_dir, vid, k), allow_pickle=False) as z:
            return int(z["missing"].shape[0]) if z["feats"].shape[0] == z["missing"].shape[0] else -1
    except (OSError, ValueError, KeyError):
        return -1


def source_bytes(path: Path) -> int:
    """A video's size on disk, the proxy for its extraction time; a frame folder counts its entries
    (one directory read, no stat per frame: VidSitu's frames are ~9 M files) at ``FRAME_BYTES`` each."""
    try:
        if path.is_dir():
            with os.scandir(path) as it:
                return FRAME_BYTES * sum(1 for _ in it)
        return path.stat().st_size
    except OSError:  # vanished or unreadable: it fails fast when opened
        return 0


FRAME_BYTES = 20_000  # a frame folder's JPEG, about: weighs folders against video files in one list


def balanced_shards(costs: Sequence[float], world: int) -> list[list[int]]:
    """Split items of the given costs over ``world`` processes: largest first, each to the process
    with the least so far (Graham's LPT rule, "Bounds on multiprocessing timing anomalies", SIAM J.
    Appl. Math. 1969: the longest process ends within 4/3 of the best split). Ties go to the lower
    index and the lower rank, so every process computes the same split. Each shard lists its items
    largest first (its DataLoader workers deal them out round-robin)."""
    heap, shards = [(0.0, r) for r in range(world)], [[] for _ in range(world)]  # (load, rank): a heap already
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, r = heapq.heappop(heap)
        shards[r].append(i)
        heapq.heappush(heap, (load + costs[i], r))
    return shards


def spread_over_ranks(costs: Sequence[float], world: int) -> list[int]:
    """Items too large to give to one of ``world`` processes whole: repeatedly the largest while it
    exceeds an even share of the items not yet spread (one feature film beside a few clips on 8
    GPUs would otherwise keep one rank busy for the film's hours while seven wait). Largest first."""
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    left, out = float(sum(costs)), []
    if world > 1:
        for i in order:
            if costs[i] * world <= left:
                break
            out.append(i)
            left -= costs[i]
    return out


def shard_over_ranks(
    trainer: pl.Trainer, stream, *shared: str, spread: Callable[[list[int]], dict[int, dict]] | None = None
) -> None:
    """Give a video stream (``videos``, ``rank``, ``world``, ``assignment``, ``spread``) its rank's
    share: the videos split by size over the ranks (:func:`balanced_shards`). ``spread(costs)``, run
    on rank 0 before its ``shared`` attributes are sent, picks the films to split by chunk over every
    rank instead (``{index: info}``). Every rank scanned the folder itself; rank 0's to-do list (and
    its ``shared`` attributes) is the one truth, so a shared filesystem seen slightly differently by
    another node can never shard a video twice or not at all."""
    stream.rank, stream.world = trainer.global_rank, trainer.world_size
    if stream.world > 1:
        stream.videos = trainer.strategy.broadcast(stream.videos, src=0)
        plan = None
        if trainer.is_global_zero:
            costs = [source_bytes(p) for _, p in stream.videos]
            big = spread(costs) if spread is not None else {}
            rest = [i for i in range(len(costs)) if i not in big]
            shards = balanced_shards([costs[i] for i in rest], stream.world)
            plan = ([[rest[j] for j in s] for s in shards], big)
        for name in shared:
            setattr(stream, name, trainer.strategy.broadcast(getattr(stream, name), src=0))
        stream.assignment, stream.spread = trainer.strategy.broadcast(plan, src=0)


def check_launch(accelerator: str, devices: Any, num_nodes: int, precision: str, ddp_timeout_s: float | None) -> None:
    """One line naming the flag of an extraction job's machine setting that Lightning would refuse
    only when the trainer is built, after the videos are indexed: names, then what this machine can
    run (:func:`moviessl.dist.check_machine`)."""
    check_accelerator("--accelerator", accelerator)
    check_devices("--devices", devices)
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise BadInputError("--num-nodes", f"must be an integer >= 1, got {num_nodes!r}")
    check_precision("--precision", precision)
    check_machine(accelerator, devices, precision, ("--accelerator", "--devices", "--precision"))
    plan = TrainerConfig(accelerator=accelerator, devices=devices, num_nodes=num_nodes)
    check_launcher_world(planned_world_size(plan), devices, num_nodes, ("--devices", "--num-nodes"))
    s = ddp_timeout_s
    if s is not None and not (0 < s < MAX_TIMEOUT_S and math.isfinite(s)):
        raise BadInputError("--ddp-timeout-s", f"must be positive and below {MAX_TIMEOUT_S:.0e}, got {s}")


def check_workers(num_workers: Any) -> None:
    """One line for a ``--num-workers`` the DataLoader would refuse with a traceback, and only once
    the trainer is built and the folder claimed."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise BadInputError("--num-workers", f"must be an integer >= 0, got {num_workers!r}")


def predict_trainer(
    out: Path,
    accelerator: str,
    devices: Any,
    num_nodes: int,
    strategy: str,
    precision: str,
    ddp_timeout_s: float | None,
) -> pl.Trainer:
    """The Lightning trainer of an extraction job (``predict``; no logger, checkpoints or bar of
    its own). ``ddp_timeout_s``: with more than one process, how long the ranks that finish first
    wait at the final barrier (None: Lightning's 30 minutes)."""
    check_launch(accelerator, devices, num_nodes, precision, ddp_timeout_s)
    plan = TrainerConfig(accelerator=accelerator, devices=devices, num_nodes=num_nodes)
    if ddp_timeout_s is not None and planned_world_size(plan) > 1:
        strategy = ddp_with_timeout("ddp" if strategy == "auto" else strategy, ddp_timeout_s)
    return lightning_trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
    )


def run_prediction(module, stream, out: Path, launch: tuple, num_workers: int, progress: bool) -> pl.Trainer:
    """Run an extraction module over its stream on every rank (``launch``: accelerator, devices,
    num_nodes, strategy, precision, ddp_timeout_s, as :func:`predict_trainer` takes them), up to the
    barrier after which rank 0 alone writes the index."""
    module.show_progress = progress
    # Lightning's advice silenced for the run only (the caller's warnings filters and log levels come back)
    with lightning_quieted(".*predict returned None.*"):
        trainer = predict_trainer(out, *launch)
        dl = DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pins_memory(launch[0]))
        try:
            with ctrl_c_kept(trainer):
                trainer.predict(module, dataloaders=dl, return_predictions=False)
        finally:
            module.close_progress()
        trainer.strategy.barrier()
    return trainer


def reading_note(out: Path, pid: int) -> Path:
    """The file in which the DataLoader worker ``pid`` of this host notes the video it reads."""
    return Path(out) / f".reading.{socket.gethostname()}.{int(pid)}"


# torch's DataLoader, in the main process, when a worker died: "DataLoader worker (pid 12) is killed by
# signal: Segmentation fault." (its SIGCHLD handler) or "DataLoader worker (pid(s) 12, 13) exited
# unexpectedly" (a worker found dead while waiting for a batch)
_WORKER_DIED = re.compile(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\)(?: is killed by (signal: [^.]+))?")


DIED_KEY = "reader_died"  # a bad entry's mark: its reader process died, its committed chunks are kept


def is_worker_death(err: BaseException) -> bool:
    """Whether ``err`` is the DataLoader's error for a dead worker (torch's SIGCHLD handler raises it in
    the main process wherever it is, a model's forward included: never one video's failure)."""
    return isinstance(err, RuntimeError) and _WORKER_DIED.search(str(err)) is not None


def video_a_worker_died_in(err: BaseException, out: Path, run_token: str) -> tuple[str, str, str] | None:
    """(id, source, how) of the video a DataLoader worker was reading when it died, if ``err`` is the
    loader's error for a dead worker and that worker noted its video under ``run_token`` (this run's:
    another run's note under a reused pid does not count; a token, not the parent's pid, because a
    forkserver's workers are the server's children); else None."""
    m = _WORKER_DIED.search(str(err)) if isinstance(err, RuntimeError) else None
    if m is None:
        return None
    how = f"killed by {m.group(2)}" if m.group(2) else "it exited unexpectedly"
    if "signal: Killed" in how:
        how += ", often the out-of-memory killer"
    for pid in (int(p) for p in re.findall(r"\d+", m.group(1))):
        try:
            note = json.loads(reading_note(out, pid).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(note, dict) and note.get("run") == run_token and "id" in note:
            return str(note["id"]), str(note.get("source")), how
    return None


# how long a loader's broken connection waits for the worker behind it to be found dead
WORKER_DEATH_WAIT_S = 5.0


def _dead_noted_worker(out: Path, run_token: str) -> tuple[str, str, str] | None:
    """(id, source, how) of a loader worker of this run (its note under ``run_token``) that has died
    by a signal or a non-zero exit, found by ``waitid`` without reaping it (torch's own check); None
    when every noted worker is alive or ended normally, or where Python has no ``waitid`` (macOS:
    CPython leaves it out there; torch's SIGCHLD handler is then the only word of a death)."""
    import signal

    if not hasattr(os, "waitid"):
        return None
    for note_path in Path(out).glob(f".reading.{socket.gethostname()}.*"):
        try:
            pid = int(note_path.name.rsplit(".", 1)[1])
            note = json.loads(note_path.read_text())
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except (OSError, ValueError):  # not this process's child (or gone), or a torn note
            continue
        if info is None or not isinstance(note, dict) or note.get("run") != run_token or "id" not in note:
            continue
        if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
            how = f"killed by signal: {signal.strsignal(info.si_status)}"
            how += ", often the out-of-memory killer" if info.si_status == signal.SIGKILL else ""
        elif info.si_status != 0:
            how = "it exited unexpectedly"
        else:
            continue
        return str(note["id"]), str(note.get("source")), how
    return None


def _worker_death_after(err: BaseException, out: Path, run_token: str) -> tuple[str, str, str]:
    """:func:`video_a_worker_died_in` for a worker that died while handing a batch over: the main
    process's read of the batch's shared memory fails first (its socket reset or closed), before
    torch's SIGCHLD handler names the worker (it was raised later in the job lock's exit, past every
    handler; and Lightning's teardown of an earlier run in the process restores SIGCHLD's default,
    so it may never come). The run's noted workers are looked at here for ``WORKER_DEATH_WAIT_S`` at
    most; ``err`` again when none died."""
    end = time.monotonic() + WORKER_DEATH_WAIT_S
    try:
        while True:
            died = _dead_noted_worker(out, run_token)
            if died is not None or time.monotonic() > end:
                break
            time.sleep(0.05)
    except RuntimeError as e:  # torch's handler, meanwhile
        died = video_a_worker_died_in(e, out, run_token)
        if died is None:
            raise
    if died is None:
        raise err
    return died


def predict_skipping_dead_readers(
    make: Callable[[list], pl.LightningModule],
    ran: Callable[[pl.LightningModule], None],
    todo: list,
    out: Path,
    launch: tuple,
    num_workers: int,
    progress: bool,
) -> tuple[pl.Trainer, pl.LightningModule]:
    """:func:`run_prediction` of ``make(todo)`` (an extractor over a :class:`VideoStream` of the videos
    ``todo``; ``ran(module)`` after each run). When a DataLoader worker dies reading a video (a decoder
    that segfaults on a damaged file, the out-of-memory killer on a huge frame), the video is listed
    bad, as one that cannot be opened is, and a one-process job runs again over the videos it has not
    listed yet (a film's committed chunks are kept); a rerun with ``--retry-bad`` tries it again.
    Under DDP only the rank whose worker died knows: it records the video and stops with one line
    (the other ranks at their next collective). Returns the last run's trainer and module."""
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    while True:
        module = make(todo)
        module.stream.notes_dir, module.stream.run_token = out, token
        try:
            trainer = run_prediction(module, module.stream, out, launch, num_workers, progress)
            ran(module)
            return trainer, module
        except RuntimeError as e:
            died = video_a_worker_died_in(e, out, token)
            if died is None:
                raise
        except (ConnectionError, EOFError) as e:
            died = _worker_death_after(e, out, token)
        ran(module)
        vid, source, how = died
        if vid not in module.recorded:  # (a worker idle after its last video, finished, can be the one killed)
            # its committed chunks are kept (DIED_KEY): --retry-bad resumes the film, a passing OOM kill loses no work
            err = f"{source}: the process reading it died ({how}); listed as bad, --retry-bad tries it again"
            module.record_bad(vid, err, source, **{DIED_KEY: True})
            if module.stream.world > 1:
                raise BadInputError(source, f"the process reading it died ({how}); listed as bad: rerun to go on")
            log.warning("skipping %s", err)
        todo = [(v, p) for v, p in todo if v not in module.recorded]
        # the failed run's loader (its dead worker's siblings) is held in reference cycles with its
        # trainer: shut down here, not in the next run's forked workers
        del module
        gc.collect()


ORPHAN_LOCK_WAIT_S = 30.0  # how long a job waits for a killed one's workers to let go of the lock
READER_LOCK_WAIT_S = 1.0  # how long a job waits for a reader's look at the lock (store.live_writer)


def _holder_is_gone(holder: str) -> bool:
    """Whether the lock file's ``pid N on HOST`` names a process of this host that no longer exists."""
    import socket

    m = re.match(r"pid (\d+) on (\S+?),", holder)
    if m is None or m.group(2) != socket.gethostname():
        return False
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process (EPERM): it exists
        return False
    return False


@contextlib.contextmanager
def job_lock(out: Path, what: str = "extraction job") -> Iterator[None]:
    """Hold ``out``'s job lock for the block; one line (BadInputError) when another job holds it
    (``what``: the kind of job the line names).

    An exclusive ``flock`` on ``OUT/.extract.lock``: the end of a job removes every journal, temp file
    and ``.partial/`` folder it finds (an earlier, killed run's), so a second job writing the folder
    at once would lose its work to the first one's end. Taken by the process that launches the job
    (rank 0, before the ranks split the work), never by the other ranks of the same job. The kernel
    drops the lock with its process, so the file a killed job leaves blocks no one. The file is
    removed while still held; a job that opened it just before then finds that it locked a file no
    longer in the folder and tries again. A filesystem without ``flock`` (Lustre mounted without
    ``-o flock``) gets a warning and no lock."""
    import fcntl
    import socket

    path = Path(out) / JOB_LOCK
    writable = True
    orphans_until = None
    readers_until = time.monotonic() + READER_LOCK_WAIT_S
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies, as to every file here
        except PermissionError:  # another user's killed job left it: a read-only descriptor locks too
            fd, writable = os.open(path, os.O_RDONLY), False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 512).decode("utf-8", "replace").strip().split("\n", 1)[0] or "a job that is starting"
            os.close(fd)
            # A flock is shared with the processes forked while it is held: the loader workers of a
            # job killed with SIGKILL hold it until they notice their parent is gone (PyTorch's
            # workers look every few seconds), so a rerun at once was refused, naming a dead pid.
            if _holder_is_gone(holder):
                if orphans_until is None:
                    orphans_until = time.monotonic() + ORPHAN_LOCK_WAIT_S
                    log.info("%s: waiting for the workers of a killed job (%s) to exit", out, holder)
                if time.monotonic() < orphans_until:
                    time.sleep(0.2)
                    continue
                holder += ", gone; its processes still hold the lock"
            elif time.monotonic() < readers_until:  # a reader asking who writes the folder holds it an instant
                time.sleep(0.05)
                continue
            raise BadInputError(
                out,
                f"another {what} is writing to this folder ({holder}); wait for it to end or use another --out",
            ) from None
        except OSError as e:
            os.close(fd)
            log.warning("%s: cannot lock the folder (%s); make sure no other job writes to it", out, e.strerror or e)
            fd = None
            break
        try:
            here = os.stat(path)
        except FileNotFoundError:
            here = None
        mine = os.fstat(fd)
        if here is not None and (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(fd)  # the holder removed the file between our open and lock: that lock excludes no one
    try:
        if fd is not None and writable:
            # with its UTC offset: the ranks of other nodes, and users of the folder elsewhere, read it
            stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
            # the second line tells the other ranks of this launch that the lock is their leader's
            # (launch_lock); synced, as those on other nodes of a network filesystem read it
            token = launch_token()
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}".encode())
                if token is not None:
                    os.write(fd, f"\nlaunch {token}".encode())
                os.fsync(fd)
            except OSError:  # (a full disk) the stamp only names the holder; the flock is what excludes
                pass
        yield
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)
            os.close(fd)


LEADER_LOCK_WAIT_S = 120.0  # how long a rank > 0 waits for its leader to take the lock another job holds


def launch_lock(out: str | os.PathLike, what: str = "extraction job") -> contextlib.AbstractContextManager:
    """The folder's job lock (:func:`job_lock`) for a launch of one or more processes: its leader
    (:func:`~moviessl.dist.job_leader`) takes it; the other ranks, which run the same command into
    the same folder, must not (it would refuse them) but go on only once the lock is their
    leader's or no job's (:func:`confirm_launch`)."""
    if job_leader():
        return job_lock(Path(out), what)
    confirm_launch(Path(out), what)
    return contextlib.nullcontext()


def confirm_launch(out: Path, what: str) -> None:
    """For a rank > 0: return once ``out``'s job lock is held by this launch's leader (the lock's
    second line names the launch, :func:`~moviessl.dist.launch_token`; Lightning's own launcher
    starts its ranks as children of the leader, named by the first line) or by no job; one line
    when another job holds it and this launch's leader has not taken it within
    :data:`LEADER_LOCK_WAIT_S` (it was refused). Only the leader checked: a second job's torchrun or
    srun ranks went on while their leader had stopped at the lock, and rewrote the first job's
    config.yaml, its seeds' settings.json and heldout.json, and removed its checkpoints, until the
    launcher ended them (srun without --kill-on-bad-exit did not). A free lock after another job's
    is not enough: that job ended, and this launch's leader, refused by it, is gone."""
    import socket

    mine = launch_token()
    if mine is None:  # a launcher that names no launch: nothing to tell the leader's lock by
        return
    parent = f"pid {os.getppid()} on {socket.gethostname()},"
    other = None
    until = time.monotonic() + LEADER_LOCK_WAIT_S
    while True:
        stamp = lock_stamp(out)
        if stamp is None and other is None:
            return
        if stamp is not None:
            first, _, rest = stamp.partition("\n")
            if rest.strip() == f"launch {mine}" or first.startswith(parent):
                return
            other = first
        if time.monotonic() > until:
            raise BadInputError(
                out,
                f"another {what} is writing to this folder ({other}); wait for it to end or use another --out",
            )
        time.sleep(0.2)


def run_lock(out: str | os.PathLike) -> contextlib.AbstractContextManager:
    """The job lock (:func:`launch_lock`) of a training run's folder. A second job on the folder
    wrote the same config, checkpoints, logs and seed folders as the first, and each one's summary
    described runs the other had overwritten."""
    return launch_lock(out, "moviessl job")


def merge_journals(out: Path, index: dict) -> None:
    """Write ``index.json`` (every rank done) and remove the claim and the per-rank journals it now holds."""
    atomic_write_json(out / INDEX_NAME, index)
    (out / CLAIM_NAME).unlink(missing_ok=True)
    for j in [*out.glob(JOURNAL_GLOB), *out.glob(".reading.*")]:  # (and the workers' notes, reading_note)
        j.unlink(missing_ok=True)


# --- Lightning predict ------------------------------------------------------------------------


class FeatureExtractor(pl.LightningModule):
    """Backbone (+ optional TxE) in ``predict``. Each finished commit chunk of a film is written
    atomically to ``OUT/.partial/{id}/``; when a film's last chunk is in, its chunks are streamed
    into ``{id}_feats.npy`` (atomic rename) and its index entry is journalled."""

    def __init__(
        self,
        backbone: torch.nn.Module,
        out_dir: Path,
        stream: EventClipStream,
        entry_base: dict,
        dtype: str = "float32",
        txe: torch.nn.Module | None = None,
        window: int = 5,
        step: int = 1,
        precision: str = "32-true",
    ):
        super().__init__()
        self.precision_name = precision_name(precision)
        self.backbone, self.txe = backbone.eval(), (txe.eval() if txe is not None else None)
        self.out_dir, self.stream, self.entry_base = Path(out_dir), stream, dict(entry_base)
        self.store_dtype, self.window, self.step = np.dtype(dtype), window, step
        self._pending: dict[tuple[str, int], list] = {}  # (id, chunk) -> its batches: one chunk per worker in flight
        self._films: dict[str, Mapping] = {}  # id -> its state while open, CLOSED_FILM once listed
        self._open: dict[str, dict] = {}  # the films begun and not yet listed (progress by their chunks)
        self._shard_len: int | None = None  # this rank's videos (its shard), counted once
        self.already = 0  # videos of the folder an earlier run finished (a resumed job's first report says so)
        self._bar = None
        self.counts = {"ok": 0, "bad": 0}
        self.recorded: set[str] = set()  # the videos this run listed, ok or bad
        self._nonfinite: dict[str, int] = {}  # events of a film whose stored features were not finite
        self.timing = {"decode_s": 0.0, "preprocess_s": 0.0, "backbone_s": 0.0, "events": 0}
        self.chunks_written = 0

    def setup(self, stage: str) -> None:
        shard_over_ranks(self.trainer, self.stream, "done", spread=self._plan_spread)

    def _plan_spread(self, costs: list[int]) -> dict[int, dict]:
        """Rank 0, before any rank writes: the films to split by chunk over every rank
        (:func:`spread_over_ranks`), each opened here once so that every rank splits the same
        events; its ``plan.json`` (``"spread": true``) tells :meth:`finish_spread` to write it. One
        that does not open, or whose plan cannot be written, is left whole (the rank that gets it
        lists it bad, as any video): an exception here would leave the other ranks waiting in the
        next broadcast until the process group's timeout."""
        s, plan = self.stream, {}
        for i in spread_over_ranks(costs, s.world):
            vid, path = s.videos[i]
            try:
                with VideoReader(path) as r:
                    info = s.film_info(r, path)
                n, d = info["num_events"], partial_dir(self.out_dir, vid)
                if (s.done.get(vid) or {}).get("num_events", n) != n:  # another number of events now: afresh
                    shutil.rmtree(d, ignore_errors=True)
                    s.done.pop(vid)
                meta = {**self.stream_plan(), **_source_stamp(Path(path)), "num_events": n, "info": info}
                atomic_write_json(d / "plan.json", {**meta, "spread": True})
            except Exception as e:
                log.info("%s: not split over the ranks (%s: %s); one rank takes it whole", vid, type(e).__name__, e)
                continue
            plan[i] = info
        return plan

    def on_predict_start(self) -> None:
        from ..utils.progress import bar as tqdm

        self._t0 = time.perf_counter()
        self._shard_len = len(self.stream.shard())
        self._report_progress()  # where this run starts: what earlier runs finished is done already
        if self.trainer.is_global_zero and getattr(self, "show_progress", True):
            self._bar = tqdm(total=0, desc="extract", unit="event", dynamic_ncols=True, smoothing=0.05)
            self._bar.set_postfix_str(self._videos_done())

    def close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()  # ends its line, so a message after it (an error too) starts on a fresh one
            self._bar = None

    def on_predict_end(self) -> None:
        self.close_progress()
        if self.stream.world > 1:
            spread = len(self.stream.spread)
            log.info(
                "rank %d/%d: %d ok, %d bad of its %d videos%s; %d events",
                self.stream.rank,
                self.stream.world,
                self.counts["ok"],
                self.counts["bad"],
                len(self.stream.shard()),
                f" and its chunks of {spread} film(s) spread over every rank" if spread else "",
                self.timing["events"],
                extra=EVERY_RANK,
            )

    def finish_spread(
        self, ids: Sequence[str], accelerator: str = "auto", precision: str = "32-true", devices: Any = None
    ) -> tuple[dict[str, dict], list[str]]:
        """Rank 0 (the main process under every launcher), every rank done: write each film of
        ``ids`` that this run spread over the ranks (its ``plan.json`` says so: a spawned rank 0's
        plan never reaches this process) from its chunks on disk, the TxE as in ``predict``
        (:func:`txe_as_in_predict`: ``accelerator``, ``precision`` and ``devices`` where this process
        has no trainer). Returns (the entries written, which win over any
        other journal's line for these films; the films still unfinished: a rank could not read
        its chunks, which it logged; their partial results are kept for a rerun)."""
        root, films = self.out_dir / PARTIAL_DIR, []
        have = {d.name for d in root.iterdir()} if root.is_dir() else set()  # one listing, not a stat per id
        for vid in (v for v in ids if v in have):
            try:
                plan = json.loads((partial_dir(self.out_dir, vid) / "plan.json").read_text())
            except (OSError, ValueError):
                continue
            if isinstance(plan, dict) and plan.get("spread"):
                films.append((vid, plan))
        written: dict[str, dict] = {}
        left: list[str] = []
        if not films:
            return written, left
        log.info("writing %d video(s) whose chunks every rank shared", len(films))
        with (
            txe_as_in_predict(self.txe, self._trainer, accelerator, precision, devices)
            if self.txe is not None
            else contextlib.nullcontext()
        ):
            for vid, plan in films:
                chunks = chunk_layout(int(plan["num_events"]), self.stream.chunk_events)
                short = [k for k, (a, b) in enumerate(chunks) if _chunk_rows(self.out_dir, vid, k) != b - a]
                if short:
                    log.warning(
                        "%s: %d of its %d chunks were not extracted (see the warnings above); its partial "
                        "results are kept: rerun to finish it",
                        vid,
                        len(short),
                        len(chunks),
                    )
                    left.append(vid)
                    continue
                film = {"chunks": chunks, "done": set(range(len(chunks))), "t0": time.perf_counter(), "events": 0}
                written[vid] = self._finish(vid, film, plan["info"])
        return written, left

    def journal(self) -> Path:
        return journal_path(self.out_dir, self.global_rank)

    def _record(self, vid: str, entry: dict) -> None:
        size = entry["source_size"] if "source_size" in entry else source_size(entry.get("source"))
        if size is not None:  # a later run tells another file of the same id by it (is_finished)
            entry = {**entry, "source_size": size}
        # A killed job may leave a torn last line: starting each record on a fresh line keeps the
        # next one intact (blank and torn lines are skipped on reading).
        append_line(self.journal(), journal_line(vid, entry))
        self.recorded.add(vid)
        self._open.pop(vid, None)
        self.counts[entry["status"]] += 1
        if self._bar is not None:  # drawn with the next update: a forced draw per video filled a log's lines
            self._bar.set_postfix_str(self._videos_done(), refresh=False)
        self._report_progress()

    def _report_progress(self) -> None:
        """The share of the folder's videos done (this rank's, with those earlier runs finished), a
        film in progress counted by its chunks done, for the scheduler's time left
        (:mod:`moviessl.utils.progress`; nothing outside a scheduled job)."""
        if self.global_rank != 0 or not job_progress.active():
            return
        total = (self._shard_len if self._shard_len is not None else len(self.stream.shard())) + len(self.stream.spread)
        done = len(self.recorded) + sum(len(f["done"]) / len(f["chunks"]) for f in self._open.values())
        job_progress.report(self.already + done, self.already + total)

    def record_bad(self, vid: str, error: str, source: str, **more) -> None:
        self._record(vid, {**self.entry_base, "status": "bad", "error": error, "source": source_name(source), **more})

    def _videos_done(self) -> str:
        """The bar's postfix: this rank's videos written of its whole ones (+ those all ranks share)."""
        n = self._shard_len if self._shard_len is not None else len(self.stream.shard())
        spread = len(self.stream.spread)
        return f"videos {sum(self.counts.values())}/{n}" + (f", {spread} spread over the ranks" if spread else "")

    def _film(self, vid: str, info: dict, mine: Sequence[int] | None = None, shared: bool = False) -> dict:
        """Per-film state, created on its first item: chunks already committed, progress total
        (the ``mine`` chunks this rank does, default all not done). A ``shared`` film's chunks are
        committed by several ranks; rank 0 writes it at the end (:meth:`finish_spread`)."""
        f = self._films.get(vid)
        if f is not None:
            return f
        n = int(info["num_events"])
        chunks = chunk_layout(n, self.stream.chunk_events)
        prior = self.stream.done.get(vid) or {}
        done = set(prior.get("chunks", ())) if prior.get("num_events") == n else set()
        d = partial_dir(self.out_dir, vid)
        if not shared:  # (rank 0 planned a shared film before any rank began)
            if prior and not done and d.is_dir():  # the video has another number of events now
                shutil.rmtree(d, ignore_errors=True)
            if len(chunks) > 1 or done:  # a film: its chunks are committed as they finish
                plan = {**self.stream_plan(), **_source_stamp(Path(info["source"])), "num_events": n, "info": info}
                atomic_write_json(d / "plan.json", plan)
        f = {"chunks": chunks, "done": done, "t0": time.perf_counter(), "events": 0, "shared": shared}
        self._films[vid] = f
        self._open[vid] = f
        mine = [k for k in range(len(chunks)) if k not in done] if mine is None else mine
        left = sum(chunks[k][1] - chunks[k][0] for k in mine)
        if self._bar is not None:
            self._bar.total += left  # (shown with the next update, at the bar's own interval)
        if done:
            log.info("%s: resuming inside the film: %d of %d chunks already done", vid, len(done), len(chunks))
        return f

    def stream_plan(self) -> dict:
        """What a film's committed chunks must share with a resume's (:func:`scan_partials`): a
        chunk of another precision would sit in one array beside chunks made at this one."""
        return {
            "chunk_events": self.stream.chunk_events,
            "batch_events": self.stream.batch_events,
            "precision": self.precision_name,
        }

    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0):
        # the clips' missing flags stay on the host, where they are written out: moved to the device
        # with the clips and copied back, each batch waited for the GPU a second time
        if isinstance(batch, dict) and isinstance(batch.get("missing"), torch.Tensor):
            batch = {**batch, "missing": OnHost(batch["missing"])}
        return batch

    def predict_step(self, batch: dict, batch_idx: int = 0):
        vid, kind = batch["id"], batch.get("kind", "clips")
        if self._films.get(vid, {}).get("closed"):
            return None  # recorded already (finished, or bad: later batches of other workers are dropped)
        if kind == "error":
            self._films[vid] = CLOSED_FILM
            for key in [k for k in self._pending if k[0] == vid]:
                del self._pending[key]
            if batch.get("shared"):  # rank 0 opened it: its entry is rank 0's to write (finish_spread)
                log.warning("rank %d: its chunks of %s are not extracted: %s", self.global_rank, vid, batch["error"])
                return None
            log.warning("skipping %s", batch["error"])
            info = batch["info"]
            size = {"source_size": info["source_size"]} if "source_size" in info else {}  # as it failed
            self.record_bad(vid, batch["error"], info["source"], **size)
            shutil.rmtree(partial_dir(self.out_dir, vid), ignore_errors=True)
            return None
        film = self._film(vid, batch["info"], batch.get("mine"), bool(batch.get("shared")))
        if kind == "clips":
            t0 = time.perf_counter()
            feats = backbone_features(self.backbone, batch["clips"].to(self.device, non_blocking=True)).cpu().numpy()
            self.timing["backbone_s"] += time.perf_counter() - t0
            for key in ("decode_s", "preprocess_s"):
                self.timing[key] += float(batch["timing"].get(key, 0.0))
            n = feats.shape[0]
            self.timing["events"] += n
            film["events"] += n
            if self._bar is not None:
                self._bar.update(n)
            k = int(batch["chunk"])
            parts = self._pending.setdefault((vid, k), [None] * int(batch["parts"]))
            missing = batch["missing"]  # on the host (on_before_batch_transfer), or a caller's tensor
            missing = missing.value if isinstance(missing, OnHost) else missing
            parts[int(batch["part"])] = (feats, torch.as_tensor(missing).cpu().numpy().astype(bool))
            if any(p is None for p in parts):
                return None
            del self._pending[(vid, k)]
            feats = np.concatenate([p[0] for p in parts])
            missing = np.concatenate([p[1] for p in parts])
            feats[missing] = 0  # a damaged stretch: zeros, and the mask in the index says so
            if len(film["chunks"]) > 1 or film["shared"]:
                atomic_write(
                    _chunk_path(self.out_dir, vid, k),
                    lambda f: np.savez(f, feats=_quiet_cast(feats, self.store_dtype), missing=missing),
                )
                self.chunks_written += 1
            else:
                film["single"] = (feats, missing)
            film["done"].add(k)
            self._report_progress()
        if len(film["done"]) == len(film["chunks"]) and not film["shared"]:
            self._finish(vid, film, batch["info"])
            self._films[vid] = CLOSED_FILM
        return None

    def _chunks(self, vid: str, film: dict):
        """(features, missing mask) of each chunk of a film, in order, read back from disk one at a time."""
        if "single" in film:
            yield film["single"]
            return
        for k in range(len(film["chunks"])):
            p = _chunk_path(self.out_dir, vid, k)
            try:
                with np.load(p, allow_pickle=False) as z:
                    yield z["feats"], z["missing"].astype(bool)
            except (OSError, ValueError, KeyError) as e:
                raise BadInputError(p, f"unreadable partial result ({type(e).__name__}); delete it and rerun") from None

    def _stored(self, vid: str, film: dict, count: bool = False):
        """(rows as stored, missing mask) of each chunk: an event whose features are not finite as
        stored -- NaN from the network, or beyond float16's range with ``--fp16`` -- is missing, its row
        zeros, as a damaged one's (indexed ok with it, the file was refused by every later reader)."""
        for c, m in self._chunks(vid, film):
            with np.errstate(over="ignore", invalid="ignore"):  # said once below, per film
                c = c.astype(self.store_dtype, copy=False)
            bad = ~np.isfinite(c).all(axis=1) & ~m
            if bad.any():
                c, m = c.copy(), m | bad
                c[bad] = 0
                if count:
                    self._nonfinite[vid] = self._nonfinite.get(vid, 0) + int(bad.sum())
            yield c, m

    def _finish(self, vid: str, film: dict, info: dict) -> dict:
        """Write a film whose chunks are all in, journal its entry and return it."""
        n = int(info["num_events"])
        missing = np.concatenate([m for _, m in self._stored(vid, film, count=True)]) if n else np.zeros(0, bool)
        nonfinite = self._nonfinite.pop(vid, 0)
        if nonfinite:
            log.warning(
                "%s: %d events gave non-finite features (NaN/inf%s); marked missing in index.json",
                vid,
                nonfinite,
                ", beyond float16's range" if self.store_dtype == np.float16 else "",
            )
        if missing.all():
            entry = {**self.entry_base, "status": "bad", "source": info["source"]}
            if info.get("source_size") is not None:  # as it was read, as for one listed ok
                entry["source_size"] = info["source_size"]
            entry["error"] = f"{info['source']}: no event decodes ({n} events, all damaged)"
            log.warning("skipping %s", entry["error"])
            self._record(vid, entry)
        else:
            path = self.out_dir / f"{vid}{FEATS_SUFFIX}"
            rows = (c for c, _ in self._stored(vid, film))
            atomic_write(path, lambda f: write_npy_chunks(f, rows, n))
            if self.txe is not None:
                feats = np.load(path, mmap_mode="r")
                ctx_path = self.out_dir / f"{vid}{CTX_SUFFIX}"
                save_ctx(ctx_path, self.txe, feats, self.window, self.step, missing, self.store_dtype)
            entry = {
                **self.entry_base,
                "status": "ok",
                "precision": self.precision_name,
                "num_events": n,
                "fps": round(info["fps"], 6),
                "duration_s": round(info["duration_s"], 6),
                "source": info["source"],
            }
            if info.get("source_size") is not None:
                entry["source_size"] = info["source_size"]
            if missing.any():
                entry["missing_events"] = int(missing.sum())
                entry["missing"] = _ranges(missing)
                log.warning(
                    "%s: %d of %d events did not decode (a damaged stretch: events %s); their rows are zeros, "
                    "marked missing in index.json",
                    vid,
                    int(missing.sum()),
                    n,
                    ", ".join(f"{a}-{b - 1}" for a, b in entry["missing"][:5])
                    + (" ..." if len(entry["missing"]) > 5 else ""),
                )
            self._record(vid, entry)
        film.pop("single", None)
        film["closed"] = True
        if film["events"] and len(film["chunks"]) > 1:
            dt = time.perf_counter() - film["t0"]
            n = film["events"]
            log.info("%s: %s in %.0f s (%.1f events/s)", vid, plural(n, "event"), dt, n / max(dt, 1e-9))
        shutil.rmtree(partial_dir(self.out_dir, vid), ignore_errors=True)
        return entry


def _quiet_cast(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``a`` as ``dtype`` without numpy's overflow warning: a value beyond float16 becomes inf, which
    the film's finish marks missing and says (:meth:`FeatureExtractor._stored`)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return a.astype(dtype)


PENDING = "pending"  # a journal's entry of a video being extracted again (:func:`_start_over`)


def refuse_foreign_files(out: Path, old: dict | None, suffix: str, whose: str) -> None:
    """Bad input if ``out`` holds result files (``*{suffix}``) no extraction of ours wrote. A run
    claims its folder (and journals each video) before it writes one, so such files without either
    are someone else's (``whose``, e.g. a dataset's released features): extracting there would
    replace those of the videos it extracts."""
    if old is not None or next(out.glob(JOURNAL_GLOB), None) is not None:
        return
    foreign = next(out.glob(f"*{suffix}"), None)
    if foreign is not None:
        raise BadInputError(
            out,
            f"folder holds {suffix} files without a moviessl index (e.g. {foreign.name}: {whose}?) that this "
            "run would overwrite; use another --out",
        )


def resize_mode(meta: dict, resize: str | None, backbone: Any, name: str) -> str:
    """The frame geometry to read a backbone's clips with: ``resize`` (``crop`` or ``squash``), or
    with None the mode it was fine-tuned with (``meta.tuned_resize``, written by ``finetune vidsitu
    --task verb`` beside its ``backbone.pt``; the paper preset squashes), else ``crop``. A mode other
    than the tuned one is warned about: the tuned Slow-D never saw that geometry."""
    if resize not in (None, "crop", "squash"):
        raise BadInputError(name, f"must be crop or squash, got {resize!r}")
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    tuned = meta.get("tuned_resize")
    if resize is None:
        return tuned if tuned in ("crop", "squash") else "crop"
    if tuned in ("crop", "squash") and tuned != resize and rank_zero_only.rank == 0:
        log.warning("%s was fine-tuned on %s frames; %s %s reads it another way", backbone, tuned, name, resize)
    return resize


def source_name(path: str | os.PathLike) -> str:
    """A source as its index entry records it: absolute, so that a rerun from another working
    directory, or with the feature folder moved, reads the entry as naming the same file (a relative
    path named a file relative to wherever that run was started)."""
    return os.path.abspath(path)


def same_source(recorded: Any, source: str | os.PathLike) -> bool:
    """Whether an entry's ``source`` names ``source``: the same absolute path or the same file, or
    (an entry of an earlier version, relative to the working directory of the run that wrote it)
    the path ``source`` ends with."""
    if not recorded:
        return False
    had, now = Path(str(recorded)), Path(os.path.abspath(source))
    if not had.is_absolute():
        parts = Path(os.path.normpath(had)).parts
        return now.parts[-len(parts) :] == parts
    try:
        return had == now or os.path.samefile(had, now)
    except OSError:  # the recorded one is gone (the data moved)
        return False


def source_size(source: Any) -> int | None:
    """The size in bytes of a video file, the number of frames of a frame folder (None: unreadable).
    A folder's frames by name, not their bytes: a stat per frame would cost a rerun over VidSitu's
    frame folders millions of calls, and a dump still running adds frames, not bytes to them."""
    try:
        st = os.stat(source) if isinstance(source, (str, os.PathLike)) else None
        if st is not None and stat.S_ISDIR(st.st_mode):
            with os.scandir(source) as it:
                return sum(not e.name.startswith(".") and Path(e.name).suffix.lower() in FRAME_EXTS for e in it)
    except OSError:
        return None
    return int(st.st_size) if st is not None and stat.S_ISREG(st.st_mode) else None


def is_finished(
    entry: dict | None, result: Path, retry_bad: bool = False, source: str | os.PathLike | None = None
) -> bool:
    """Whether a rerun skips a video: one listed bad (unless ``retry_bad``), or one listed ok whose
    ``result`` file is there (a deleted file is made again; a ``pending`` one is not done).

    ``source``: the file this run would read for it. A video file of another size than the entry's
    (``source_size``) is another video under the same id: one listed bad is tried again (the file was
    replaced), one listed ok is bad input -- skipped, its old features would stand for the new file."""
    if entry is None or (entry.get("status") == "bad" and retry_bad) or entry.get("status") == PENDING:
        return False
    had = entry.get("source_size")
    now = source_size(source) if had is not None else None
    if had is not None and now is not None and had != now:
        if entry.get("status") == "bad":
            return False
        if result.is_file():
            if Path(source).is_dir() and same_source(entry.get("source"), source):
                # frames added since (a dump still running when it was read) or removed
                why = f"extracted in {result.parent} from {had} frames, it holds {now} now"
            elif Path(source).is_dir() or Path(str(entry.get("source"))).is_dir():  # a file for a folder, or back
                why = f"its id is extracted in {result.parent} from another source ({entry.get('source')})"
            else:
                why = (
                    f"its id is extracted in {result.parent} from another file ({entry.get('source')}, {had} bytes; "
                    f"this one has {now})"
                )
            raise BadInputError(source, f"{why}; delete {result.name} to extract it again, or use another --out")
    return entry.get("status") == "bad" or result.is_file()


def journal_line(vid: str, entry: dict) -> str:
    """A journal's line for one video: its entry and when it was written (``t``, seconds since the
    epoch), so the latest line of any rank's journal wins (:func:`read_entries`)."""
    return json.dumps({"id": vid, "t": round(time.time(), 6), **entry})


def read_entries(out_dir: Path) -> dict[str, dict]:
    """index.json entries updated by any journals left by this or an interrupted run: for each
    video its latest line by ``t`` across all ranks' journals (a killed earlier run's line in one
    rank's journal must not outweigh this run's in another's, whatever the files' names sort as);
    lines without ``t`` (older versions) count as the oldest, in journal-name order."""
    index = read_index(out_dir, unfinished_ok=True) or {"videos": {}}
    entries, when = dict(index["videos"]), {}
    for j in sorted(out_dir.glob(JOURNAL_GLOB)):
        for line in j.read_text().splitlines():
            if not line.strip():
                continue
            try:
                e = json.loads(line)
                vid, t = e.pop("id"), float(e.pop("t", 0.0))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # torn last line of a killed job: that video is simply redone
            if t >= when.get(vid, -math.inf):
                entries[vid], when[vid] = e, t
    return entries


# nothing in an extraction is random, yet it drew from torch's global generator: the networks'
# initialisation before their weights are loaded, and each pass of its data loader (a worker seed)
@keeps_random_streams
def extract(
    backbone: str | os.PathLike,
    videos: str | os.PathLike,
    out: str | os.PathLike,
    *,
    stride_s: float = 2.0,
    fp16: bool = False,
    contextualizer: str | os.PathLike | None = None,
    batch_events: int = 16,
    num_workers: int = 2,
    accelerator: str = "auto",
    devices: Any = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str = "32-true",
    retry_bad: bool = False,
    chunk_events: int = CHUNK_EVENTS,
    progress: bool = True,
    channels_last: bool | None = None,
    compile: bool | None = None,
    resize: str | None = None,
    ddp_timeout_s: float | None = None,
) -> dict:
    """Extract features of every video not yet done; returns the summary written to index.json
    (plus ``timing``: seconds spent decoding, pre-processing and in the backbone, and events done).

    A film longer than ``chunk_events`` events is committed in chunks of that many events
    (``OUT/.partial/{id}/``), so a killed job resumes inside the film; memory does not grow with
    the film's length. ``chunk_events`` is rounded up to a multiple of ``batch_events`` (a batch
    never straddles two chunks, so a resumed film gets exactly the batches, and arrays, of an
    uninterrupted run). ``channels_last`` / ``compile``: :func:`moviessl.models.slowd.speed_up` (None:
    as the backbone was pretrained, its checkpoint config's ``model`` block). ``resize``: ``crop`` (the
    backbone's short side, then a centre crop) or ``squash`` (the whole frame to crop x crop, as
    VidSitu's loader feeds its models; recorded in the index's ``input``); None: the mode a
    verb-finetuned backbone was tuned with (:func:`resize_mode`), else ``crop``. ``ddp_timeout_s``: with
    more than one process, how long the ranks that finish first wait at the final barrier (None:
    Lightning's 30 minutes)."""
    out = Path(out)
    # NaN passes a `<= 0` test and never equals itself, so a folder claimed with it refused every rerun
    if not (isinstance(stride_s, (int, float)) and math.isfinite(stride_s) and stride_s > 0):
        raise BadInputError("--stride", f"must be a finite number of seconds > 0, got {stride_s}")
    check_launch(accelerator, devices, num_nodes, precision, ddp_timeout_s)
    check_workers(num_workers)
    if batch_events < 1 or chunk_events < 1:
        raise BadInputError("--batch-events/--chunk-events", f"must be >= 1, got {batch_events}/{chunk_events}")
    chunk_events = -(-int(chunk_events) // int(batch_events)) * int(batch_events)
    vids, layout = find_videos(videos)
    vidsitu = layout == "vidsitu"
    if vidsitu and abs(stride_s - 2.0) > 1e-9:
        log.warning("VidSitu segments always give their 5 events at 1,3,5,7,9 s; --stride %g ignored", stride_s)
        stride_s = 2.0
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    splits: dict[str, str] = {}
    if vidsitu:
        try:
            splits, why = vidsitu_splits(Path(videos)), "its split files list no segment"
        except BadInputError as e:
            why = str(e)
        if not splits and rank_zero_only.rank == 0:
            # said now, not after hours of decoding: the index cannot tell val and test segments apart
            log.warning(
                "no VidSitu splits for %s (%s), so index.json records them as unknown; pretrain-context "
                "then needs --vidsitu-root to leave val and test out",
                videos,
                why,
            )
    obj = load_checkpoint(backbone, stage="backbone")
    inp = clip_input(obj, backbone)
    resize = resize_mode(obj.get("meta", {}), resize, backbone, "--resize")
    if resize == "squash":  # only then a key, so crop folders keep the index they always had
        inp["resize"] = "squash"
    model = build_from_checkpoint(obj)
    trained = (obj.get("config") or {}).get("model") or {}
    speed_up(
        model,
        channels_last=bool(trained.get("channels_last", False) if channels_last is None else channels_last),
        compile=bool(trained.get("compile", False) if compile is None else compile),
    )
    dim = int(obj.get("meta", {}).get("out_dim") or getattr(model, "out_dim"))
    bhash = file_hash(backbone)
    txe, window, step, ctx_info = None, 5, 1, None
    if contextualizer is not None:
        txe, window, step = load_contextualizer(contextualizer, dim, stride_s, backbone=bhash)
        ctx_info = {
            "path": str(Path(contextualizer).resolve()),
            "hash": file_hash(contextualizer),
            "window": window,
            "step": step,
            "dim": int(txe.dim),
        }

    ensure_out_dir(out, "feature folder")
    # one job per folder: its end removes what it takes for a killed run's leftovers (the leader
    # takes it: the other ranks of this job run this function too, and must not refuse it)
    leader = job_leader()
    with launch_lock(out):
        old = read_index(out, unfinished_ok=True)
        dtype = "float16" if fp16 else "float32"
        refuse_foreign_files(out, old, FEATS_SUFFIX, "VidSitu's released features")
        if old is not None:
            check_format(out, old, FEATURES_FORMAT, "; use another --out")
            for key, want in (("backbone", bhash), ("stride_s", stride_s), ("dtype", dtype)):
                if old.get(key) is not None and old.get(key) != want:
                    raise BadInputError(
                        out, f"folder holds features with {key}={old.get(key)}, this run has {want}; use another --out"
                    )
            had = (old.get("input") or {}).get("resize", "crop")
            if had != resize:
                raise BadInputError(
                    out, f"folder holds features with --resize {had}, this run has {resize}; use another --out"
                )
            # the same file read another way (an older tuned backbone's meta filled in from its run's
            # config: checkpoint.upgrade_tuned_meta) must not add clips of another geometry
            geometry = ("num_frames", "stride", "short_side", "crop")
            was = {k: (old.get("input") or {}).get(k) for k in geometry}
            if any(was[k] is not None and was[k] != inp.get(k) for k in geometry):
                raise BadInputError(
                    out,
                    f"folder holds features of clips {was}, this run reads { ({k: inp.get(k) for k in geometry}) }; "
                    "use another --out",
                )
            if txe is not None:
                _retire_ctx(out, old, ctx_info)
        entries = read_entries(out)
        if old is None:
            # a first run killed by a version that claimed no folder left journals alone; each
            # finished entry names its backbone, and another one's features must not stay beside these
            other = sorted({str(e["backbone"]) for e in entries.values() if e.get("backbone") not in (None, bhash)})
            if other:
                raise BadInputError(
                    out, f"folder holds features with backbone={other[0]}, this run has {bhash}; use another --out"
                )
        todo = [(v, p) for v, p in vids if not is_finished(entries.get(v), out / f"{v}{FEATS_SUFFIX}", retry_bad, p)]
        # under DDP every rank runs this function (Lightning re-executes the command per device)
        (log.info if rank_zero_only.rank == 0 else log.debug)(
            "%s (%s layout): %d to extract, %d already done",
            plural(len(vids), "video"),
            layout,
            len(todo),
            len(vids) - len(todo),
        )
        folder_txe = (old or {}).get("contextualizer") or (old or {}).get("ctx_pending")
        if todo and txe is None and folder_txe:
            # its index would go on naming the TxE over new videos without its outputs (every rank
            # refuses: each computed the same to-do list)
            raise BadInputError(
                out,
                f"folder holds TxE outputs ({{id}}{CTX_SUFFIX}) of {folder_txe.get('path')}, and this run, without "
                f"--contextualizer, would add {len(todo)} video(s) without them; pass that --contextualizer "
                "or use another --out",
            )
        if old is not None and todo and leader:
            _start_over(out, [v for v, _ in todo], entries)
        had = _precisions(entries) - {precision_name(precision)}
        if todo and had and rank_zero_only.rank == 0:
            log.warning(
                "%s: features of this folder were extracted at precision %s, this run's at %s "
                "(each video's index entry names its own)",
                out,
                ", ".join(sorted(had)),
                precision_name(precision),
            )
        header = {
            "format": FEATURES_FORMAT,
            "stride_s": stride_s,
            "dim": dim,
            "dtype": dtype,
            "backbone": bhash,
            "backbone_path": str(Path(backbone).resolve()),
            "input": inp,
            "layout": layout,
            "contextualizer": ctx_info,
        }
        # a killed VidSitu run's segments have no split yet (index.json gives them theirs): a rerun
        # of another layout cannot, so the folder cannot tell them from unlabelled videos
        split_lost = (
            not vidsitu
            and (old or {}).get("layout") == "vidsitu"
            and any(e.get("status") == "ok" and "split" not in e for e in entries.values())
        )
        if (vidsitu and not splits) or (not vidsitu and (old or {}).get("splits") == "unknown") or split_lost:
            # readers must not take its segments without a split for unlabelled videos: said in the
            # claim (a killed run's rerun may be of another layout) and kept by an extension with
            # other videos, whose layout says nothing of the segments already there
            header["splits"] = "unknown"
        t0 = time.perf_counter()
        if old is None and leader:  # claimed now: a rerun after a kill checks backbone and stride
            atomic_write_json(out / CLAIM_NAME, {**header, "counts": {"ok": 0, "bad": 0}, "videos": {}})
        if todo:
            plan = {
                "chunk_events": chunk_events,
                "batch_events": int(batch_events),
                "precision": precision_name(precision),
            }
            launch = (accelerator, devices, num_nodes, strategy, precision, ddp_timeout_s)
            timing: dict = {"chunks_written": 0}

            def make(todo: list) -> FeatureExtractor:
                stream = EventClipStream(todo, inp, stride_s, vidsitu, batch_events, chunk_events)
                stream.done = scan_partials(out, todo, plan)
                m = FeatureExtractor(model, out, stream, {"backbone": bhash}, dtype, txe, window, step, precision)
                m.already = len(vids) - len(todo)
                return m

            def ran(module: FeatureExtractor) -> None:  # timing summed over the runs a dead reader splits
                for k, v in module.timing.items():
                    timing[k] = timing.get(k, 0) + v
                timing["chunks_written"] += module.chunks_written

            trainer, module = predict_skipping_dead_readers(make, ran, todo, out, launch, num_workers, progress)
            timing = {k: round(v, 3) for k, v in timing.items()}
            if not trainer.is_global_zero:
                return {}
            spread_entries, unfinished = module.finish_spread([v for v, _ in todo], accelerator, precision, devices)
        elif not leader:  # nothing to do under torchrun / srun: rank 0 alone rewrites the index
            return {}
        else:
            timing = {"decode_s": 0.0, "preprocess_s": 0.0, "backbone_s": 0.0, "events": 0, "chunks_written": 0}
            spread_entries, unfinished, trainer = {}, [], None
        entries = {**read_entries(out), **spread_entries}
        if txe is not None:  # features done by an earlier run without (or with another) contextualizer
            _fill_ctx(out, entries, txe, window, step, dtype, how=(trainer, accelerator, precision, devices))
        elif old is not None:  # keep describing the ctx files already there (a killed retirement's too)
            header["contextualizer"] = old.get("contextualizer")
            if old.get("ctx_pending"):
                header["ctx_pending"] = old["ctx_pending"]
        return _write_index(out, header, entries, splits if vidsitu else None, unfinished, timing, t0)


def _write_index(
    out: Path,
    header: dict,
    entries: dict[str, dict],
    splits: dict[str, str] | None,
    unfinished: list,
    timing: dict,
    t0: float,
) -> dict:
    """Rank 0, every rank done: index.json from the folder's entries (``splits``: a VidSitu layout's
    segment splits, None for another layout), the journals merged, a killed run's leftovers removed;
    returns the summary :func:`extract` returns."""
    # a video re-extracted by a run that did not finish it (a spread film a rank could not read)
    entries = {v: entries[v] for v in sorted(entries) if entries[v].get("status") != PENDING}
    if splits is not None:  # VidSitu: each segment's split, so pretraining can leave out the evaluation splits
        for v, e in entries.items():
            if v in splits:
                e["split"] = splits[v]
    counts = {
        "ok": sum(e.get("status") == "ok" for e in entries.values()),
        "bad": sum(e.get("status") == "bad" for e in entries.values()),
    }
    with_missing = [e for e in entries.values() if e.get("status") == "ok" and e.get("missing_events")]
    if with_missing:
        counts["with_missing_events"] = len(with_missing)
        counts["missing_events"] = sum(int(e["missing_events"]) for e in with_missing)
    if unfinished:  # spread films a rank could not read its part of: in no entry yet, kept for a rerun
        counts["unfinished"] = len(unfinished)
    precs = _precisions(entries)
    if precs:  # the folder's precision (absent when no entry names one: made before it was recorded)
        header["precision"] = precs.pop() if len(precs) == 1 else "mixed"
    index = {**header, "counts": counts, "videos": entries}
    merge_journals(out, index)
    for pattern in TEMP_GLOBS:  # every rank is done: a temp file left here is from a killed earlier run
        for t in out.glob(pattern):
            t.unlink(missing_ok=True)
    if (out / PARTIAL_DIR).is_dir():  # every film finished or was listed as bad, but an unfinished spread one
        for d in (out / PARTIAL_DIR).iterdir():  # (and one whose reader died: --retry-bad resumes it)
            if d.name not in unfinished and not entries.get(d.name, {}).get(DIED_KEY):
                shutil.rmtree(d, ignore_errors=True)
        if not any((out / PARTIAL_DIR).iterdir()):
            (out / PARTIAL_DIR).rmdir()
    wall = time.perf_counter() - t0
    timing["wall_s"] = round(wall, 3)
    log.info(
        "%s: %d ok, %d bad videos (%.1f s; %d events: decode %.1f s, pre-processing %.1f s, backbone %.1f s)",
        out / INDEX_NAME,
        counts["ok"],
        counts["bad"],
        wall,
        timing["events"],
        timing["decode_s"],
        timing["preprocess_s"],
        timing["backbone_s"],
    )
    for vid, e in entries.items():
        if e.get("status") == "bad":
            log.info("bad: %s", e.get("error"))
    if with_missing:
        log.warning(
            "%d video(s) have damaged stretches: %d events marked missing (index.json 'missing'); the rest are kept",
            len(with_missing),
            counts["missing_events"],
        )
    return {**{k: v for k, v in index.items() if k != "videos"}, "timing": timing}


def _precisions(entries: dict[str, dict]) -> set[str]:
    """The precisions the good videos of an index were extracted at, as their entries say."""
    return {str(e["precision"]) for e in entries.values() if e.get("status") == "ok" and e.get("precision")}


def vidsitu_splits(videos: Path) -> dict[str, str]:
    """Segment -> split of a VidSitu video root whose annotations sit beside it; BadInputError when
    they are not there or a split file does not read."""
    from ..data.vidsitu import segment_splits

    root = videos.parent if videos.name in ("vsitu_video_trimmed_dir", "vsitu_frames") else videos
    return segment_splits(root)


def _retire_ctx(out: Path, old: dict, ctx_info: dict) -> None:
    """Before a folder's ``{id}_ctx.npy`` are made with another contextualizer: its index stops
    naming the old one (``ctx_pending`` names the new) and the old outputs go, so a kill midway leaves
    no mix of two TxEs' outputs under one name (what is there is the pending TxE's; a rerun with yet
    another one retires those too). Rank 0 only; the other ranks' new outputs, if removed, are made
    again at the end."""

    current = old.get("contextualizer") or old.get("ctx_pending") or {}
    stale = [p for p in out.glob(f"*{CTX_SUFFIX}") if not p.name.startswith(".")]
    if not job_leader() or current.get("hash") == ctx_info["hash"] or not (stale or current):
        return
    name = INDEX_NAME if (out / INDEX_NAME).is_file() else CLAIM_NAME
    atomic_write_json(out / name, {**old, "contextualizer": None, "ctx_pending": ctx_info})
    for p in stale:
        p.unlink(missing_ok=True)
    log.info("%s: %d outputs of another contextualizer removed; making them with this one", out, len(stale))


def _start_over(out: Path, ids: Sequence[str], entries: dict[str, dict]) -> None:
    """Before any rank writes, forget the earlier results of videos about to be extracted again
    (their features were deleted to force it, or they were listed bad): their ``{id}_ctx.npy`` go,
    and rank 0's journal marks those listed ok ``pending``, so that a kill between a video's new
    features and its journal line leaves neither the old outputs beside them (which :func:`_fill_ctx`
    would keep) nor the old entry (which would make a rerun skip the video and the index describe the
    old features); the video is extracted again. A pending entry never reaches ``index.json``."""
    names = {f"{v}{CTX_SUFFIX}" for v in ids}
    with os.scandir(out) as it:  # one listing, not a stat per video (a fresh VidSitu folder: 30k)
        stale = [e.name for e in it if e.name in names]
    for name in stale:
        (out / name).unlink(missing_ok=True)
    if stale:
        log.info("%s: outputs of the earlier features of %d re-extracted video(s) removed", out, len(stale))
    redo = [v for v in ids if (entries.get(v) or {}).get("status") == "ok"]
    if redo:  # one append (one fsync) for them all
        append_line(journal_path(out, 0), "\n".join(journal_line(v, {"status": PENDING}) for v in redo))


def _fill_ctx(out: Path, entries: dict, txe, window: int, step: int, dtype: str, how: tuple = ()) -> None:
    """``{id}_ctx.npy`` of every good video that lacks one (another TxE's were removed by
    :func:`_retire_ctx`), the TxE as in predict (``how``: :func:`txe_as_in_predict`'s trainer,
    accelerator, precision, devices); no device is touched when there is nothing to fill."""
    with os.scandir(out) as it:  # one listing, not a stat per video
        have = {e.name for e in it if e.name.endswith(CTX_SUFFIX) and e.is_file()}
    todo = [(vid, e) for vid, e in entries.items() if e.get("status") == "ok" and f"{vid}{CTX_SUFFIX}" not in have]
    if not todo:
        return
    with txe_as_in_predict(txe, *how) if how else contextlib.nullcontext():
        for vid, e in todo:
            _fill_one_ctx(out, vid, e, txe, window, step, dtype)


def _fill_one_ctx(out: Path, vid: str, e: dict, txe, window: int, step: int, dtype: str) -> None:
    feats = np.load(out / f"{vid}{FEATS_SUFFIX}", mmap_mode="r")
    missing = np.zeros(len(feats), bool)
    for a, b in e.get("missing") or []:
        missing[a:b] = True
    save_ctx(out / f"{vid}{CTX_SUFFIX}", txe, feats, window, step, missing, dtype)


def save_ctx(
    path: Path,
    txe,
    feats,
    window: int,
    step: int,
    missing: np.ndarray | None = None,
    dtype: str = "float32",
    clobber: bool = True,
) -> None:
    """:func:`contextualize` one video's ``(L, D)`` features (``missing`` events never read) and write
    the outputs atomically to ``path`` (``clobber``: see :func:`moviessl.utils.io.atomic_write`)."""
    ctx = contextualize(txe, feats, window, step, missing=missing).float()
    atomic_save_npy(path, ctx.cpu().numpy().astype(dtype), clobber)
