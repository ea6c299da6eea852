"""Instance (RoI) features for LVU's Object Transformer: per tracked box per second, the RoIAlign
of the box on a backbone's last feature map, cached to disk once per backbone.

LVU's instance features come from an AVA detector (SlowFast R101, ``chaoyuaw/lvu``'s
``features/*.npz``): for every second with person boxes, the clip around that second goes through
the network and each box is pooled from the res5 map by PySlowFast's ``ResNetRoIHead`` (temporal
average, RoIAlign 7x7, spatial max). :func:`extract_instances` does the same with any moviessl
backbone (Slow-D, the paper's §7.1 change (b)) and boxes from tracks files
(:func:`moviessl.data.lvu.read_tracks`: SynthMovies' ``lvu/tracks/<id>.json``, or a user's
detections in that format) or from LVU's own boxes and track ids, which it releases only in
``instance_meta/instance_meta_{task}.pkl`` (:func:`box_source`; the paper's OT, CVRL and MoDist rows
pool a Slow-D over those boxes):

- clip: ``meta.input``'s frames and stride (16x4) on the 30-fps timeline, centred in the middle
  of second t (the tracks' boxes are taken there), the *whole* frame resized to ``short_side``
  (boxes are relative to the full frame, so no crop; default: the short side the backbone was
  trained at);
- features: :func:`moviessl.models.roi.roi_features` on ``forward_features`` (res5).

Output folder: ``{id}.npz`` with arrays ``sec, shot, track, box (n,4), feat (n,D)`` plus
``index.json`` (``{"format": "moviessl-instances", "dim", "backbone", "tracks", "roi", "videos":
{id: {"status", "num_boxes", "boxes" (digest of its tracks' boxes) | "error"}}}``). Lightning
``predict`` (:class:`InstanceExtractor`): one or more devices, videos decoded in DataLoader workers;
a rerun skips finished videos whose boxes are unchanged. :class:`InstanceStore`
reads such a folder; :class:`LVUReleaseInstances` reads the LVU release's own features and
instance metadata with the same interface.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import time
import zipfile
import zlib
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytorch_lightning as pl
import torch

from ..checkpoint import build_from_checkpoint, clip_input, file_hash, load_checkpoint
from ..data.lvu import (
    ID_LIMIT,
    VideoInstances,
    meta_instances,
    read_instance_metas,
    read_release_features,
    read_tracks,
    release_instances,
)
from ..dist import EVERY_RANK, check_machine, job_leader
from ..errors import BadInputError
from ..models.roi import roi_features
from ..training import OnHost, keeps_random_streams
from ..utils import plural
from ..utils import progress as job_progress
from ..utils.digest import content_digest, name_size
from ..utils.io import append_line, atomic_write, atomic_write_json
from ..video import VideoReader, param_dtype, resize_short_side, to_model_input
from .extract import (
    VideoStream,
    check_launch,
    check_workers,
    clip_frames,
    find_videos,
    is_finished,
    is_worker_death,
    journal_line,
    journal_path,
    later_events,
    launch_lock,
    merge_journals,
    predict_skipping_dead_readers,
    read_entries,
    refuse_foreign_files,
    shard_over_ranks,
    source_size,
)
from .store import (
    CLAIM_NAME,
    INSTANCES_FORMAT,
    check_format,
    check_index,
    index_facts,
    read_index,
    warn_if_extended,
)

log = logging.getLogger("moviessl.features")

INSTANCE_INDEX = "index.json"
INSTANCE_KEYS = ("sec", "shot", "track", "box", "feat")


def _save_npz(path: Path, inst: VideoInstances) -> None:
    atomic_write(path, lambda f: np.savez(f, **{k: getattr(inst, k) for k in INSTANCE_KEYS}))


def box_source(tracks: str | os.PathLike) -> dict[str, Callable[[], VideoInstances]]:
    """``{youtube_id: () -> its boxes}`` from a folder of tracks files ``<id>.json``, one of LVU's
    ``instance_meta_{task}.pkl`` files, or its ``instance_meta/`` folder (every task's videos:
    :func:`~moviessl.data.lvu.read_instance_metas`)."""
    tracks = Path(tracks)
    if tracks.is_dir() and not any(tracks.glob("instance_meta_*.pkl")):
        jsons = sorted(p for p in tracks.glob("*.json") if p.is_file())
        if not jsons:
            raise BadInputError(tracks, "no <id>.json tracks files or instance_meta_<task>.pkl files")
        return {p.stem: partial(read_tracks, p) for p in jsons}
    if not tracks.exists():
        raise BadInputError(tracks, "tracks folder or instance-metadata pkl not found")
    meta, _ = read_instance_metas(tracks)
    return {vid: partial(meta_instances, secs) for vid, secs in meta.items()}


class InstanceClipStream(VideoStream):
    """Per video with boxes, its clips ``batch_seconds`` seconds at a time: ``{"id", "kind": "clips",
    "part", "parts", "inst" (on part 0), "clips" uint8 (b, 3, T, H, W), "rows", "bidx", "boxes"}``,
    ``{"id", "kind": "empty", "inst"}`` for a video without boxes, or ``{"id", "kind": "error",
    "error"}`` when its tracks or its decoding fail (after some parts, possibly). Videos are sharded
    over processes (``rank``/``world``/``assignment``, set by the extractor) and DataLoader workers."""

    def __init__(self, videos, source: dict, inp: dict, short_side: int, batch_seconds: int = 8):
        super().__init__(videos)
        self.source, self.input = source, dict(inp)
        self.short_side, self.batch_seconds = int(short_side), int(batch_seconds)

    def __iter__(self) -> Iterator[dict]:
        wid, nw = self.worker()
        for vid, path in self.shard()[wid::nw]:
            yield from self._video(vid, path)

    def _video(self, vid: str, path: Path) -> Iterator[dict]:
        self.note_reading(vid, path)
        # the source as it is read, not when its entry is written: a copy still going on, or a file
        # replaced while the job runs, must not have its later size stand for the file read
        size = source_size(path)
        try:
            inst = self.source[vid]()
            digest = box_digest(inst)
            secs = np.unique(inst.sec)
            if not len(secs):
                yield {"id": vid, "kind": "empty", "inst": inst, "digest": digest, "source_size": size}
                return
            with VideoReader(path) as r:
                inst, secs = _within(inst, secs, r.duration_s, vid, path)
                centres = [float(t) + 0.5 for t in secs]
                parts = range(0, len(secs), self.batch_seconds)
                for pi, k in enumerate(parts):
                    chunk = secs[k : k + self.batch_seconds]
                    # boxes a second apart: each clip reaches back between the previous one's frames
                    clips = [
                        resize_short_side(
                            clip_frames(r, centres[j], self.input, later_events(centres, j, self.input))[1],
                            self.short_side,
                        ).transpose(3, 0, 1, 2)
                        for j in range(k, k + len(chunk))
                    ]
                    rows = np.concatenate([np.nonzero(inst.sec == t)[0] for t in chunk])
                    bidx = np.concatenate([np.full((inst.sec == t).sum(), i) for i, t in enumerate(chunk)])
                    yield {
                        "id": vid,
                        "kind": "clips",
                        "part": pi,
                        "parts": len(parts),
                        "inst": inst if pi == 0 else None,
                        "digest": digest,
                        "source_size": size,
                        "clips": torch.from_numpy(np.ascontiguousarray(np.stack(clips))),
                        "rows": torch.from_numpy(rows),
                        "bidx": torch.from_numpy(bidx),
                        "boxes": torch.from_numpy(np.ascontiguousarray(inst.box[rows])),
                    }
        except Exception as e:  # one bad video never stops the job: it is listed in the index
            msg = str(e) if isinstance(e, BadInputError) else f"{path}: {type(e).__name__}: {' '.join(str(e).split())}"
            yield {"id": vid, "kind": "error", "error": msg, "source_size": size}


def box_digest(inst: VideoInstances) -> str:
    """What a video's tracks say (seconds, shots, track ids, boxes), as its index entry records it."""
    return content_digest(inst.sec, inst.shot, inst.track, inst.box)


def same_boxes(entry: dict | None, boxes: Callable[[], VideoInstances]) -> bool:
    """Whether a finished video's features were pooled from the boxes its tracks give now: a rerun
    after tracks were corrected (or another instance_meta given) redoes the videos whose boxes
    changed, instead of keeping the features of the old ones. Entries of older folders, which
    record no digest, are kept."""
    want = (entry or {}).get("boxes")
    if want is None:
        return True
    try:
        return box_digest(boxes()) == want
    except BadInputError:  # tracks now malformed: redone, and listed bad with its one line
        return False


def _within(inst: VideoInstances, secs: np.ndarray, duration_s: float, vid: str, path: Path) -> tuple:
    """``inst`` and its seconds without the boxes of seconds that begin past the video's end: their
    clips are clamped to its last frame, so each such box would be pooled from a picture it was not
    drawn on. Some such boxes are dropped with a warning; boxes that all lie past the end are
    another video's, or frames given as seconds: one line naming the tracks' seconds and the video."""
    keep = inst.sec < duration_s
    if keep.all():
        return inst, secs
    if not keep.any():
        raise BadInputError(
            path,
            f"every box of {vid}'s tracks lies past the video's end (seconds {int(secs[0])}..{int(secs[-1])}, "
            f"video {duration_s:.1f} s): tracks of another video, or frames given as seconds?",
        )
    log.warning(
        "%s: %d of %d boxes lie past the video's end (%.1f s; seconds up to %d): left out",
        path,
        int((~keep).sum()),
        len(keep),
        duration_s,
        int(secs[-1]),
    )
    kept = VideoInstances(inst.sec[keep], inst.shot[keep], inst.track[keep], inst.box[keep])
    return kept, secs[secs < duration_s]


class InstanceExtractor(pl.LightningModule):
    """The backbone's res5 map and RoIAlign of each box (``predict``); a video's ``{id}.npz`` is
    written when its last part is in, and its index entry journalled per rank."""

    def __init__(self, backbone: torch.nn.Module, out_dir: Path, stream: InstanceClipStream, roi: dict):
        super().__init__()
        self.backbone, self.out_dir, self.stream = backbone.eval(), Path(out_dir), stream
        self.roi = dict(roi)
        self.dim = int(getattr(backbone, "out_dim", 0)) or None
        self._pending: dict[str, dict] = {}
        self._bar = None
        self.show_progress = True
        self.counts = {"ok": 0, "bad": 0}
        self.recorded: set[str] = set()  # the videos this run listed, ok or bad
        self.already = 0  # videos an earlier run finished (a resumed job's first report says so)
        self._shard_len = 0
        self._sources = dict(stream.videos)  # id -> its video file

    def setup(self, stage: str) -> None:
        shard_over_ranks(self.trainer, self.stream)

    def on_predict_start(self) -> None:
        self._shard_len = n = len(self.stream.shard())
        self._report_progress()  # where this run starts: what earlier runs finished is done already
        if self.trainer.is_global_zero and self.show_progress:
            from ..utils.progress import bar as tqdm

            self._bar = tqdm(total=n, desc="extract-instances", unit="video")

    def on_predict_end(self) -> None:
        self.close_progress()
        if self.stream.world > 1:
            c, n = self.counts, len(self.stream.shard())
            log.info(
                "rank %d/%d: %d ok, %d bad of its %d videos",
                self.stream.rank,
                self.stream.world,
                c["ok"],
                c["bad"],
                n,
                extra=EVERY_RANK,
            )

    def close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def record_bad(self, vid: str, error: str, source: str | None = None, size: int | None = None, **more) -> None:
        self._record(vid, {"status": "bad", "error": error, **more}, size)

    def _record(self, vid: str, entry: dict, size: int | None = None) -> None:
        """Journal ``vid``'s entry; ``size``: its source's as the stream read it (None: as it is now,
        for a video whose reader died)."""
        size = source_size(self._sources.get(vid)) if size is None else size
        if size is not None:  # a later run tells another file of the same id by it (is_finished)
            entry = {**entry, "source_size": size}
        append_line(journal_path(self.out_dir, self.global_rank), journal_line(vid, entry))
        self.recorded.add(vid)
        self.counts[entry["status"]] += 1
        if self._bar is not None:
            self._bar.update(1)
        self._report_progress()

    def _report_progress(self) -> None:
        """Videos done of the folder's (this rank's, with those earlier runs finished), for the
        scheduler's time left (nothing outside a scheduled job)."""
        if self.global_rank == 0 and job_progress.active():
            job_progress.report(self.already + len(self.recorded), self.already + self._shard_len)

    def on_before_batch_transfer(self, batch, dataloader_idx: int = 0):
        # the rows a batch's boxes fill stay on the host, where they index: moved to the device and
        # read back (``.tolist()``) before the features' copy, each batch waited for the GPU twice
        if isinstance(batch, dict) and isinstance(batch.get("rows"), torch.Tensor):
            batch = {**batch, "rows": OnHost(batch["rows"])}
        return batch

    def predict_step(self, batch: dict, batch_idx: int = 0):
        vid, kind = batch["id"], batch["kind"]
        if kind == "error":
            self._pending.pop(vid, None)
            log.warning("skipping %s", batch["error"])
            self.record_bad(vid, batch["error"], size=batch.get("source_size"))
            return None
        if kind == "empty":
            empty = np.zeros((0, int(self.dim or 0)), np.float32)
            self._save(vid, batch["inst"], empty, batch["digest"], batch.get("source_size"))
            return None
        if batch["part"] == 0:
            film = {"inst": batch["inst"], "feat": [None] * len(batch["inst"]), "size": batch.get("source_size")}
            self._pending[vid] = film
        film = self._pending.get(vid)
        if film is None:
            return None  # recorded as bad already (a failed earlier part)
        try:
            # Lightning: on the device, no grad; RoIAlign in float32 whatever the map's precision
            fmap = self.backbone.forward_features(to_model_input(batch["clips"], param_dtype(self.backbone)))
            f = roi_features(
                fmap.float(),
                batch["boxes"].float(),
                batch["bidx"],
                self.roi["resolution"],
                self.roi["sampling_ratio"],
                self.roi["pool"],
            )
            rows = batch["rows"]  # on the host (on_before_batch_transfer), or a caller's tensor
            rows = rows.value if isinstance(rows, OnHost) else rows
            for row, v in zip(rows.tolist(), f.cpu().numpy()):
                film["feat"][row] = v
            if batch["part"] == batch["parts"] - 1:
                del self._pending[vid]
                self._save(vid, film["inst"], np.stack(film["feat"]).astype(np.float32), batch["digest"], film["size"])
        except Exception as e:  # one video never stops the job (as a decoding failure): listed as bad
            if is_worker_death(e):  # torch's SIGCHLD handler raises it wherever this process is: not this video's
                raise
            self._pending.pop(vid, None)
            msg = f"{vid}: {type(e).__name__}: {' '.join(str(e).split())}"
            log.warning("skipping %s", msg)
            self.record_bad(vid, msg, size=batch.get("source_size"))
        return None

    def _save(self, vid: str, inst: VideoInstances, feat: np.ndarray, digest: str, size: int | None = None) -> None:
        self.dim = feat.shape[1] if len(feat) else self.dim
        _save_npz(self.out_dir / f"{vid}.npz", inst.with_features(feat))
        n_secs = int(len(np.unique(inst.sec)))
        entry = {"status": "ok", "num_boxes": len(inst), "num_seconds": n_secs, "boxes": digest}
        self._record(vid, entry, size)


@keeps_random_streams  # as extract: the backbone's build and the loader's pass drew from torch's global generator
def extract_instances(
    backbone: str | os.PathLike,
    videos: str | os.PathLike,
    tracks: str | os.PathLike,
    out: str | os.PathLike,
    *,
    short_side: int | None = None,
    resolution: int = 7,
    sampling_ratio: int = 2,
    pool: str = "max",
    batch_seconds: int = 8,
    device: str | None = None,
    num_workers: int = 0,
    accelerator: str = "cpu",
    devices: Any = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str = "32-true",
    ddp_timeout_s: float | None = None,
    progress: bool = True,
    retry_bad: bool = False,
) -> dict:
    """RoI features of every video that has boxes in ``tracks`` (a folder of ``<id>.json`` tracks
    files, or LVU's instance metadata: :func:`box_source`); returns the index summary. Videos whose
    decoding or tracks fail are listed as bad in the index (not fatal); a rerun skips them unless
    ``retry_bad``, and makes again a video listed ok whose ``{id}.npz`` is gone, as ``extract`` does,
    or whose tracks now give other boxes (:func:`same_boxes`).

    Lightning ``predict``, as ``moviessl extract``: ``--devices N`` (or torchrun / srun) splits the
    videos by file size over the ranks, each appending its finished videos to its own journal
    (``.index.rank{r}.jsonl``, read on resume); rank 0 merges them into ``index.json`` at the end.
    ``num_workers`` DataLoader processes decode. ``device`` (``cpu``/``cuda``) is the one-device
    shorthand for ``accelerator``."""
    out = Path(out)
    # a value below 1 failed inside every video (range() with step 0, an empty RoI grid, a negative
    # frame size), listing each as bad, and a rerun skipped them all; a short side of 0 read as unset
    # (sampling_ratio and pool are Python arguments only: 0, PySlowFast's adaptive ratio, which the
    # RoIAlign here lacks, failed in every video too; an unknown pool averaged without a word)
    sizes = (("--batch-seconds", batch_seconds), ("--resolution", resolution), ("--short-side", short_side))
    for flag, v in (*sizes, ("sampling_ratio", sampling_ratio)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise BadInputError(flag, f"must be an integer >= 1, got {v!r}")
    if pool not in ("max", "avg"):
        raise BadInputError("pool", f"must be max or avg, got {pool!r}")
    if device is not None:
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", str(device)):
            raise BadInputError("--device", f"{device!r}: give cpu, cuda, cuda:N or mps")
        accelerator = "cuda" if str(device).startswith("cuda") else str(device)
        if str(device).startswith("cuda:"):
            devices = [int(str(device).split(":", 1)[1])]
        check_machine(accelerator, devices, precision, ("--device", "--device/--devices", "--precision"))
    check_launch(accelerator, devices, num_nodes, precision, ddp_timeout_s)
    check_workers(num_workers)
    vids, _ = find_videos(videos)
    source = box_source(tracks)
    obj = load_checkpoint(backbone, stage="backbone")
    inp = clip_input(obj, backbone, ("num_frames", "stride", "short_side"))
    side = int(short_side or inp["short_side"])
    model = build_from_checkpoint(obj)
    if not hasattr(model, "forward_features"):
        raise BadInputError(backbone, "the backbone has no forward_features (a feature map is needed for RoIAlign)")
    bhash = file_hash(backbone)
    roi = {"resolution": resolution, "sampling_ratio": sampling_ratio, "pool": pool, "short_side": side}
    out.mkdir(parents=True, exist_ok=True)
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    # one job per folder (extract's lock, so that neither extraction ends the other's work)
    leader = job_leader()
    with launch_lock(out):
        old = read_index(out, unfinished_ok=True)
        refuse_foreign_files(out, old, ".npz", "LVU's released instance features")
        if old is not None:
            check_format(out, old, INSTANCES_FORMAT, "; use another --out")
        if old is not None and (old.get("backbone") != bhash or old.get("roi") != roi):
            raise BadInputError(
                out, "folder holds instance features of another backbone or RoI setting; use another --out"
            )
        entries = read_entries(out)
        todo = [
            (v, p)
            for v, p in vids
            if v in source
            and not (
                is_finished(entries.get(v), out / f"{v}.npz", retry_bad, p) and same_boxes(entries.get(v), source[v])
            )
        ]
        no_tracks = sum(v not in source for v, _ in vids)
        found = {v for v, _ in vids}
        ghosts = sorted(v for v in source if v not in found)
        say = log.info if rank_zero_only.rank == 0 else log.debug  # every rank runs this function under DDP
        if ghosts and rank_zero_only.rank == 0:  # most often a naming mismatch between the tracks and the video files
            log.warning(
                "%s: %d videos with boxes have no video file in %s (first: %s)", tracks, len(ghosts), videos, ghosts[0]
            )
        say("%s, %d without tracks, %d to extract", plural(len(vids), "video"), no_tracks, len(todo))
        t0, dim = time.perf_counter(), int(getattr(model, "out_dim", 0)) or (old or {}).get("dim")
        if old is None and leader:  # claimed now: a rerun after a kill checks backbone and RoI
            atomic_write_json(out / CLAIM_NAME, _index(bhash, backbone, tracks, roi, dim, entries))
        if todo:
            launch = (accelerator, devices, num_nodes, strategy, precision, ddp_timeout_s)
            dims = []

            def make(todo: list) -> InstanceExtractor:  # rank 0's list may differ a little
                m = InstanceExtractor(model, out, InstanceClipStream(todo, source, inp, side, batch_seconds), roi)
                m.already = sum(v in source for v, _ in vids) - len(todo)
                return m

            trainer, _ = predict_skipping_dead_readers(
                make, lambda m: dims.append(m.dim), todo, out, launch, num_workers, progress
            )
            dim = next((d for d in reversed(dims) if d), None) or dim
            if not trainer.is_global_zero:
                return {}
        elif not leader:  # nothing to do under torchrun / srun: rank 0 alone rewrites the index
            return {}
        entries = read_entries(out)
        index = _index(bhash, backbone, tracks, roi, dim, entries)
        merge_journals(out, index)
        for t in out.glob(".*.npz.*.tmp"):  # every rank is done: utils.io.atomic_write's, of a killed earlier run
            t.unlink(missing_ok=True)
        say("%s: %d ok, %d bad (%.1f s)", out, index["counts"]["ok"], index["counts"]["bad"], time.perf_counter() - t0)
        return {k: v for k, v in index.items() if k != "videos"}


def _index(bhash, backbone, tracks, roi, dim, entries) -> dict:
    entries = {v: entries[v] for v in sorted(entries)}
    return {
        "format": INSTANCES_FORMAT,
        "dim": dim,
        "backbone": bhash,
        "backbone_path": str(Path(backbone).resolve()),
        "tracks": str(Path(tracks).resolve()),
        "roi": roi,
        "counts": {s: sum(e["status"] == s for e in entries.values()) for s in ("ok", "bad")},
        "videos": entries,
    }


# Instance features are read on demand (pretrain-ot and the LVU tasks over thousands of films: LVU's
# 2304-d features are ~9 KB per box, tens of GB over the release, on every rank): each process keeps
# the seconds, boxes and ids of every video and the features of the videos it read last, up to this
# many bytes, least recently used out (a video larger than the bound is still kept alone).
FEATURE_CACHE_BYTES = 1 << 30
_feature_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
_feature_cache_bytes = 0


def _cache_put(key: tuple, feat: np.ndarray) -> np.ndarray:
    global _feature_cache_bytes
    feat.flags.writeable = False  # shared by every reader of the video in this process
    old = _feature_cache.pop(key, None)
    _feature_cache_bytes += feat.nbytes - (old.nbytes if old is not None else 0)
    _feature_cache[key] = feat
    while len(_feature_cache) > 1 and _feature_cache_bytes > FEATURE_CACHE_BYTES:
        _feature_cache_bytes -= _feature_cache.popitem(last=False)[1].nbytes
    return feat


def set_feature_cache(mb: float) -> None:
    """Keep at most ``mb`` MB of instance (and LVU scene) features per process (``data.instance_cache_mb``)."""
    global FEATURE_CACHE_BYTES, _feature_cache_bytes
    if not mb * 2**20 >= 1:  # at least a byte (NaN fails too)
        raise BadInputError("data.instance_cache_mb", f"must be > 0, got {mb}")
    FEATURE_CACHE_BYTES = int(mb * 2**20)
    while len(_feature_cache) > 1 and _feature_cache_bytes > FEATURE_CACHE_BYTES:
        _feature_cache_bytes -= _feature_cache.popitem(last=False)[1].nbytes


def keeps_feature_cache(fn):
    """``fn`` (a stage that sets ``data.instance_cache_mb``) gives the caller's bound back when it
    returns or fails, the cache cut down to it: the run's bound stayed the process's, so a notebook
    kept up to a large run's bound of features in RAM after the call (or had its own cut)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any):
        before = FEATURE_CACHE_BYTES
        try:
            return fn(*args, **kwargs)
        finally:
            if FEATURE_CACHE_BYTES != before:
                set_feature_cache(before / 2**20)

    return run


class LazyFeatures:
    """One video's ``(n, D)`` float32 features, read from ``source`` (a :class:`StampedSource`) when
    indexed or turned into an array (``np.asarray``), so a :class:`~moviessl.data.lvu.VideoInstances`
    or an OT++ scene pathway can stand for a film without holding its features. Indexing gives the
    same values as an eager load."""

    def __init__(self, source: "StampedSource", vid: str, key: tuple, n: int, dim: int):
        self.source, self.vid, self.key, self.shape = source, vid, key, (int(n), int(dim))

    dtype = np.dtype(np.float32)
    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyFeatures({self.vid!r}, shape={self.shape})"

    def load(self) -> np.ndarray:
        feat = _feature_cache.get(self.key)
        if feat is None:
            # the file as it was when it was first read, or a one-line error: features of a rewritten
            # file would not belong to the boxes (or event seconds) held in RAM
            return _cache_put(self.key, self.source.read_features(self.vid, self.key))
        _feature_cache.move_to_end(self.key)
        return feat

    def __getitem__(self, idx) -> np.ndarray:
        return self.load()[idx]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.load()
        if dtype is not None and np.dtype(dtype) != a.dtype:
            return a.astype(dtype)
        return a.copy() if copy else a


def file_stamp(path: Path, what: str = "feature file") -> tuple:
    """What identifies a file's contents without reading them: path, size, mtime and inode (an atomic
    rewrite gives a new inode)."""
    try:
        st = os.stat(path)
    except OSError:
        raise BadInputError(path, f"{what} not found") from None
    # realpath is Path.resolve's string without its second stat of the file (a loop check)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino


class StampedSource:
    """Per-video features read on demand: ``cache_key(vid)`` says what a video's features depend on
    (the files' stamps), ``_read(vid)`` reads them, ``read_features(vid, key)`` returns the float32
    ``(n, D)`` array of the files as ``key`` names them."""

    # A process started by spawn or forkserver (loader workers under Python >= 3.14's Linux default,
    # or where a user sets it; ranks of trainer.strategy=ddp_spawn) imports this module afresh, with
    # the default bound: the job's bound travels with the sources it unpickles.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache_bytes": FEATURE_CACHE_BYTES}

    def __setstate__(self, state: dict) -> None:
        bound = state.pop("_cache_bytes", None)
        self.__dict__.update(state)
        if bound is not None and bound != FEATURE_CACHE_BYTES:
            set_feature_cache(bound / 2**20)

    def _file(self, vid: str) -> Path:
        raise NotImplementedError

    def _read(self, vid: str) -> Any:
        raise NotImplementedError

    def _source(self, vid: str) -> Path:
        """The file a user would have rewritten (named when it was)."""
        return self._file(vid)

    def cache_key(self, vid: str) -> tuple:
        return (type(self).__name__, file_stamp(self._file(vid)))

    def digest_parts(self, vid: str) -> tuple:
        """A video's stand-in in a run's data digest (:mod:`moviessl.utils.digest`): what the source
        as a whole is (:meth:`source_digest`), what its index says of this video, and its file's
        name and size. No paths: copies of a dataset on every node of a job must agree."""
        return self.source_digest(), index_facts(self._index_entry(vid)), name_size(self._source(vid))

    def _index_entry(self, vid: str) -> Any:
        return None

    def source_digest(self) -> str:
        """What every video of this source shares (an index, a metadata file), hashed once."""
        if not hasattr(self, "_source_digest"):
            self._source_digest = content_digest(self._shared_inputs())
        return self._source_digest

    def _shared_inputs(self) -> Any:
        return None

    def read_unchanged(self, vid: str, key: tuple | None = None) -> Any:
        """``_read(vid)`` of the files that ``key`` (default: as they are now) names, else a one-line
        error naming the file: it was rewritten since, or while it was read. One look at the files'
        stamps, after the read: a file rewritten before it differs then too, and one per read of a
        film the bounded cache let go is what training pays each time it comes round again."""
        key = key if key is not None else self.cache_key(vid)
        rewritten = BadInputError(self._source(vid), "rewritten since this job first read it; restart the job")
        try:
            out = self._read(vid)
        except BadInputError:
            # a read that failed on a file rewritten since (gone, or its cached outputs named by the
            # old stamp) says so; a file gone says "not found", as the stamp before the read did
            if self.cache_key(vid) == key:
                raise
            raise rewritten from None
        if self.cache_key(vid) == key:
            return out
        raise rewritten

    def read_features(self, vid: str, key: tuple) -> np.ndarray:
        return self.read_unchanged(vid, key)

    def lazy(self, vid: str) -> LazyFeatures:
        """The video's features as :class:`LazyFeatures`, read and checked once now and kept in the
        per-process cache while it has room."""
        key = self.cache_key(vid)
        return self._lazy(vid, key, self.read_features(vid, key))

    def _lazy(self, vid: str, key: tuple, feat: np.ndarray) -> LazyFeatures:
        _cache_put(key, feat)
        return LazyFeatures(self, vid, key, *feat.shape)


class _Instances(StampedSource):
    """What both instance readers share: ``ids``, ``dim``, ``root`` and ``load(id, lazy=False)``."""

    root: Path
    ids: list[str]
    _ids: set[str]
    dim: int

    def __contains__(self, vid: str) -> bool:
        return vid in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def _file(self, vid: str) -> Path:
        return self.root / f"{vid}.npz"

    def _read(self, vid: str) -> VideoInstances:
        raise NotImplementedError

    def cache_key(self, vid: str) -> tuple:
        """What a video's features depend on: its file (path, size, mtime) and, for the release, the
        instance-metadata file, which orders the rows."""
        meta = getattr(self, "meta_files", {}).get(vid)
        what = "instance feature file"
        return (type(self).__name__, file_stamp(self._file(vid), what), meta and file_stamp(Path(meta), what))

    def read_features(self, vid: str, key: tuple) -> np.ndarray:
        return self.read_unchanged(vid, key).feat

    def load(self, vid: str, lazy: bool = False) -> VideoInstances:
        """The video's instances; ``lazy``: with :class:`LazyFeatures` in place of the feature array
        (read and checked once now, kept in the per-process cache while it has room)."""
        if not lazy:
            return self._read(vid)
        key = self.cache_key(vid)
        inst = self.read_unchanged(vid, key)
        return dataclasses.replace(inst, feat=self._lazy(vid, key, inst.feat))


class InstanceStore(_Instances):
    """A folder written by :func:`extract_instances`: ``.ids``, ``.dim``, ``.load(id) -> VideoInstances``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        index = read_index(self.root)
        if index is None or index.get("format") != INSTANCES_FORMAT:
            raise BadInputError(self.root, "not an instance-feature folder (no moviessl-instances index.json)")
        # as an event-feature folder's: a null entry or a dim of a list was a traceback below
        check_index(self.root / INSTANCE_INDEX, index)
        self.index = index
        self.ids = sorted(v for v, e in index["videos"].items() if e.get("status") == "ok")
        self._ids = set(self.ids)
        self.dim = int(index.get("dim") or 0)
        if self.ids and not self.dim:
            # extract-instances always records the backbone's width; without it every file of the
            # folder was "inconsistent arrays" and the run ended in "no videos with instances"
            dim, n = index.get("dim"), len(self.ids)
            raise BadInputError(self.root / INSTANCE_INDEX, f"dim is {dim!r} but it lists {n} finished video(s)")
        self.backbone = index.get("backbone")
        warn_if_extended(self.root, len(self.ids))

    def _shared_inputs(self) -> Any:
        return index_facts(self.index)

    def _index_entry(self, vid: str) -> Any:
        return self.index["videos"].get(vid)

    def _read(self, vid: str) -> VideoInstances:
        path = self.root / f"{vid}.npz"
        try:
            with open(path, "rb") as f:
                head = f.read(2)
            # another file under the name (text, a .npy array): numpy said "pickled data", which it
            # holds none of, or a .npy loaded as an array failed in the with statement
            zipped = not head or head == b"PK"  # an empty file is a truncated one, said below
            if zipped:
                with np.load(path, allow_pickle=False) as z:
                    arrs = {k: z[k] for k in INSTANCE_KEYS}
        except FileNotFoundError:
            raise BadInputError(path, "instance feature file not found") from None
        # a file cut short (a copy or download interrupted) is zipfile's BadZipFile or numpy's EOFError,
        # neither an OSError; a corrupt member of a compressed file is zlib's error
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise BadInputError(path, f"unreadable instance feature file ({type(e).__name__}: {e})") from None
        if not zipped:
            raise BadInputError(path, "not a .npz archive (moviessl extract-instances writes one per video)")
        n = len(arrs["sec"]) if arrs["sec"].ndim == 1 else -1
        if (
            n < 0
            or arrs["box"].shape != (n, 4)
            or arrs["feat"].shape != (n, self.dim)
            or any(arrs[k].shape != (n,) for k in ("shot", "track"))
        ):
            raise BadInputError(path, f"inconsistent arrays (feat {arrs['feat'].shape}, {n} boxes, dim {self.dim})")
        return _checked_instances(path, arrs)


def _checked_instances(path: Path, arrs: dict[str, np.ndarray]) -> VideoInstances:
    """An instance feature file's arrays (shapes already checked) as :class:`VideoInstances`, or a
    one-line error naming the file. A NaN or inf in one feature or box turns every weight into NaN,
    a negative second wraps round in the span code's indexing, and ids past 2**62 wrap when a span
    subtracts one from another: the tracks and release readers refuse them, so a folder written by
    hand or by another tool is held to the same."""
    for k in ("sec", "shot", "track"):
        a = arrs[k]
        if a.dtype.kind == "f" and not (np.isfinite(a) & (a == np.floor(a))).all():
            raise BadInputError(path, f"{k} holds a value that is not a whole number")
        if a.dtype.kind not in "iuf":
            raise BadInputError(path, f"{k} must be integers, got {a.dtype}")
        # as the tracks and metadata readers (data.lvu.ID_LIMIT): ids 2**63 apart wrapped when a span
        # subtracted one from another, and a float past int64 was cast to its minimum
        if a.dtype.kind == "f":  # compared in a width that holds 2**62 (float16 overflowed)
            out = np.abs(a.astype(np.float64)) >= ID_LIMIT
        elif a.dtype.kind == "u":
            out = a.astype(np.uint64) >= np.uint64(ID_LIMIT)
        else:
            out = (a.astype(np.int64) >= ID_LIMIT) | (a.astype(np.int64) <= -ID_LIMIT)
        if out.any():
            v = a[np.argmax(out)]
            raise BadInputError(path, f"{k} holds {v}: out of range (an integer between -2**62 and 2**62)")
    for k in ("box", "feat"):
        if arrs[k].dtype.kind not in "iuf":
            raise BadInputError(path, f"{k} must be numbers, got {arrs[k].dtype}")
    with np.errstate(over="ignore"):  # values past float32's range become inf, refused below
        inst = VideoInstances(
            *(arrs[k].astype(np.int64) for k in ("sec", "shot", "track")),
            arrs["box"].astype(np.float32),
            arrs["feat"].astype(np.float32),
        )
    if len(inst) and inst.sec.min() < 0:
        raise BadInputError(path, f"sec holds a negative second ({inst.sec.min()})")
    ok = np.isfinite(inst.box) & (inst.box >= -1e-3) & (inst.box <= 1 + 1e-3)
    if not ok.all():
        r = int(np.nonzero(~ok.all(1))[0][0])
        b = [round(float(v), 4) for v in inst.box[r]]
        raise BadInputError(path, f"box {r} {b}: not 4 finite numbers normalised to [0, 1] of the frame")
    # a float64 sum is finite exactly when every value is, without a mask the size of the features
    if not np.isfinite(inst.feat.sum(dtype=np.float64)):
        bad = ~np.isfinite(inst.feat)
        r, c = np.argwhere(bad)[0]
        raise BadInputError(
            path, f"{int(bad.sum())} non-finite feature value(s) (NaN/inf), first at box {int(r)}, dim {int(c)}"
        )
    return inst


class LVUReleaseInstances(_Instances):
    """The LVU release's inputs: ``features/<id>.npz`` (RoI features) + ``instance_meta_{task}.pkl``
    (shot and track ids per box), or the ``instance_meta/`` folder for every task's videos
    (``pretrain-ot`` on all of LVU's movies; :func:`~moviessl.data.lvu.read_instance_metas`). Same
    interface as :class:`InstanceStore`."""

    def __init__(self, features: str | os.PathLike, meta: str | os.PathLike):
        self.root = Path(features)
        if not self.root.is_dir():
            raise BadInputError(self.root, "LVU feature folder not found")
        self.meta, source = read_instance_metas(meta)
        self.meta_path = str(Path(meta).resolve())
        # the box order of a video's features follows the file its boxes came from
        self.meta_files = {vid: str(f.resolve()) for vid, f in source.items()}
        have = {p.stem for p in self.root.glob("*.npz")}
        self.ids = sorted(v for v in self.meta if v in have)
        self._ids = set(self.ids)
        if not self.ids:
            raise BadInputError(self.root, f"no <youtube_id>.npz for any of the {len(self.meta)} videos of {meta}")
        # the width from the first video with boxes: an empty or broken one has none (load_inputs
        # skips and lists a broken one), and empty videos are given this width in load()
        self.dim = 0
        for vid in self.ids:
            try:
                inst = self.load(vid)
            except BadInputError:
                continue
            if len(inst):
                self.dim = int(inst.feat.shape[1])
                break
        if not self.dim:
            raise BadInputError(self.root, f"no video with a readable box feature among the {len(self.ids)} of {meta}")
        self.backbone = "lvu-release"

    def _shared_inputs(self) -> Any:
        # by content: another metadata file of the same name is other data
        files = sorted(set(self.meta_files.values()))
        return Path(self.meta_path) if files == [self.meta_path] else [Path(f) for f in files]

    def _read(self, vid: str) -> VideoInstances:
        path = self.root / f"{vid}.npz"
        inst = release_instances(self.meta[vid], read_release_features(path), where=str(path))
        if not len(inst):
            return inst.with_features(np.zeros((0, self.dim), np.float32))
        if self.dim and inst.feat.shape[1] != self.dim:
            raise BadInputError(path, f"{inst.feat.shape[1]}-d features, the other videos' are {self.dim}-d")
        return inst


def open_instances(spec: str | os.PathLike, meta: str | os.PathLike | None = None):
    """An :class:`InstanceStore` (a folder with a moviessl-instances index) or, for a folder of
    LVU's ``<id>.npz`` files, :class:`LVUReleaseInstances` with the instance metadata ``meta``."""
    root = Path(spec)
    if (root / INSTANCE_INDEX).is_file() or (root / CLAIM_NAME).is_file():  # an unfinished one says so
        return InstanceStore(root)
    if meta is None:
        raise BadInputError(
            root, "not an instance-feature folder; for LVU's features/ also give its instance_meta pkl or folder"
        )
    return LVUReleaseInstances(root, meta)
