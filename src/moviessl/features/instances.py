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
{id: {"status", "num_boxes" | "error"}}}``). A rerun skips finished videos. :class:`InstanceStore`
reads such a folder; :class:`LVUReleaseInstances` reads the LVU release's own features and
instance metadata with the same interface.
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..checkpoint import build_from_checkpoint, file_hash, load_checkpoint
from ..data.lvu import (
    VideoInstances,
    meta_instances,
    read_instance_meta,
    read_release_features,
    read_tracks,
    release_instances,
)
from ..errors import BadInputError
from ..models.roi import roi_features
from ..utils.io import atomic_write, atomic_write_json
from ..video import VideoReader, normalize, read_clip, resize_short_side
from .extract import find_videos
from .store import read_index

log = logging.getLogger("moviessl.features")

INSTANCE_INDEX = "index.json"
INSTANCE_KEYS = ("sec", "shot", "track", "box", "feat")


def _save_npz(path: Path, inst: VideoInstances) -> None:
    atomic_write(path, lambda f: np.savez(f, **{k: getattr(inst, k) for k in INSTANCE_KEYS}))


@torch.no_grad()
def video_instance_features(
    backbone: torch.nn.Module,
    path: str | os.PathLike,
    inst: VideoInstances,
    inp: dict,
    short_side: int,
    resolution: int = 7,
    sampling_ratio: int = 2,
    pool: str = "max",
    batch_seconds: int = 8,
) -> np.ndarray:
    """(n, D) RoI features of one video's boxes (``inst`` rows); one clip per second with boxes."""
    secs = np.unique(inst.sec)
    out: list[np.ndarray] = [None] * len(inst)  # type: ignore[list-item]
    device = next(backbone.parameters()).device
    with VideoReader(path) as r:
        for k in range(0, len(secs), batch_seconds):
            chunk = secs[k : k + batch_seconds]
            clips = []
            for t in chunk:
                frames = read_clip(r, float(t) + 0.5, int(inp["num_frames"]), int(inp["stride"]))
                frames = resize_short_side(frames, short_side)
                clips.append(torch.from_numpy(np.ascontiguousarray(frames.transpose(3, 0, 1, 2))))
            x = normalize(torch.stack(clips).to(device).float().div_(255.0))
            fmap = backbone.forward_features(x)
            rows = np.concatenate([np.nonzero(inst.sec == t)[0] for t in chunk])
            bidx = np.concatenate([np.full((inst.sec == t).sum(), i) for i, t in enumerate(chunk)])
            boxes = torch.from_numpy(inst.box[rows]).to(device, fmap.dtype)
            f = roi_features(fmap, boxes, torch.from_numpy(bidx).to(device), resolution, sampling_ratio, pool)
            for row, v in zip(rows, f.float().cpu().numpy()):
                out[row] = v
    if not len(inst):
        return np.zeros((0, int(getattr(backbone, "out_dim", 0))), np.float32)
    return np.stack(out).astype(np.float32)


def box_source(tracks: str | os.PathLike) -> dict[str, Callable[[], VideoInstances]]:
    """``{youtube_id: () -> its boxes}`` from a folder of tracks files ``<id>.json``, one of LVU's
    ``instance_meta_{task}.pkl`` files, or its ``instance_meta/`` folder. The folder's task files
    list different videos, so all are read; a video in several keeps the first file's boxes (by
    name), and a count of videos whose boxes differ between files is logged."""
    tracks = Path(tracks)
    if tracks.is_dir():
        pkls = sorted(tracks.glob("instance_meta_*.pkl"))
        if not pkls:
            jsons = sorted(p for p in tracks.glob("*.json") if p.is_file())
            if not jsons:
                raise BadInputError(tracks, "no <id>.json tracks files or instance_meta_<task>.pkl files")
            return {p.stem: partial(read_tracks, p) for p in jsons}
    elif tracks.is_file():
        pkls = [tracks]
    else:
        raise BadInputError(tracks, "tracks folder or instance-metadata pkl not found")
    meta: dict = {}
    differ = 0
    for p in pkls:
        for vid, secs in read_instance_meta(p).items():
            if vid not in meta:
                meta[vid] = secs
            elif meta[vid] != secs:
                differ += 1
    if differ:
        log.warning("%s: %d videos have other boxes in another task's file; the first file's are used", tracks, differ)
    return {vid: partial(meta_instances, secs) for vid, secs in meta.items()}


INDEX_EVERY_S = 30.0


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
    device: str = "cpu",
) -> dict:
    """RoI features of every video that has boxes in ``tracks`` (a folder of ``<id>.json`` tracks
    files, or LVU's instance metadata: :func:`box_source`); returns the index summary. Videos whose
    decoding or tracks fail are listed as bad in the index (not fatal)."""
    out = Path(out)
    vids, _ = find_videos(videos)
    source = box_source(tracks)
    obj = load_checkpoint(backbone, stage="backbone")
    inp = dict(obj.get("meta", {}).get("input") or {})
    missing = [k for k in ("num_frames", "stride", "short_side") if k not in inp]
    if missing:
        raise BadInputError(backbone, f"checkpoint meta.input lacks {', '.join(missing)}")
    side = int(short_side or inp["short_side"])
    model = build_from_checkpoint(obj).to(device)
    if not hasattr(model, "forward_features"):
        raise BadInputError(backbone, "the backbone has no forward_features (a feature map is needed for RoIAlign)")
    bhash = file_hash(backbone)
    roi = {"resolution": resolution, "sampling_ratio": sampling_ratio, "pool": pool, "short_side": side}
    old = read_index(out) if (out / INSTANCE_INDEX).is_file() else None
    if old is not None and (old.get("backbone") != bhash or old.get("roi") != roi):
        raise BadInputError(out, "folder holds instance features of another backbone or RoI setting; use another --out")
    entries = dict((old or {}).get("videos", {}))
    out.mkdir(parents=True, exist_ok=True)
    todo = [(v, p) for v, p in vids if v in source and v not in entries]
    no_tracks = sum(v not in source for v, _ in vids)
    found = {v for v, _ in vids}
    ghosts = sorted(v for v in source if v not in found)
    if ghosts:  # most often a naming mismatch between the tracks and the video files
        log.warning(
            "%s: %d videos with boxes have no video file in %s (first: %s)", tracks, len(ghosts), videos, ghosts[0]
        )
    log.info("%d videos, %d without tracks, %d to extract", len(vids), no_tracks, len(todo))
    t0, dim = time.perf_counter(), int(getattr(model, "out_dim", 0)) or None
    saved = t0
    for vid, path in todo:
        try:
            inst = source[vid]()
            feat = video_instance_features(
                model, path, inst, inp, side, resolution, sampling_ratio, pool, batch_seconds
            )
            dim = feat.shape[1] if len(feat) else dim
            _save_npz(out / f"{vid}.npz", inst.with_features(feat))
            entries[vid] = {"status": "ok", "num_boxes": len(inst), "num_seconds": int(len(np.unique(inst.sec)))}
        except Exception as e:  # one bad video never stops the job: it is listed in the index
            msg = str(e) if isinstance(e, BadInputError) else f"{path}: {type(e).__name__}: {' '.join(str(e).split())}"
            log.warning("skipping %s", msg)
            entries[vid] = {"status": "bad", "error": msg}
        # the index every INDEX_EVERY_S: a killed job loses at most that much work (rewriting it after
        # every video writes O(videos^2) bytes: tens of GB of JSON over LVU's 30k movies)
        if time.perf_counter() - saved >= INDEX_EVERY_S:
            atomic_write_json(out / INSTANCE_INDEX, _index(bhash, backbone, tracks, roi, dim, entries))
            saved = time.perf_counter()
    index = _index(bhash, backbone, tracks, roi, dim, entries)
    atomic_write_json(out / INSTANCE_INDEX, index)
    log.info("%s: %d ok, %d bad (%.1f s)", out, index["counts"]["ok"], index["counts"]["bad"], time.perf_counter() - t0)
    return {k: v for k, v in index.items() if k != "videos"}


def _index(bhash, backbone, tracks, roi, dim, entries) -> dict:
    entries = {v: entries[v] for v in sorted(entries)}
    return {
        "format": "moviessl-instances",
        "dim": dim,
        "backbone": bhash,
        "backbone_path": str(Path(backbone).resolve()),
        "tracks": str(Path(tracks).resolve()),
        "roi": roi,
        "counts": {s: sum(e["status"] == s for e in entries.values()) for s in ("ok", "bad")},
        "videos": entries,
    }


class InstanceStore:
    """A folder written by :func:`extract_instances`: ``.ids``, ``.dim``, ``.load(id) -> VideoInstances``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        index = read_index(self.root) if (self.root / INSTANCE_INDEX).is_file() else None
        if index is None or index.get("format") != "moviessl-instances":
            raise BadInputError(self.root, "not an instance-feature folder (no moviessl-instances index.json)")
        self.index = index
        self.ids = sorted(v for v, e in index["videos"].items() if e.get("status") == "ok")
        self._ids = set(self.ids)
        self.dim = int(index.get("dim") or 0)
        self.backbone = index.get("backbone")

    def __contains__(self, vid: str) -> bool:
        return vid in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def load(self, vid: str) -> VideoInstances:
        path = self.root / f"{vid}.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                arrs = {k: z[k] for k in INSTANCE_KEYS}
        except FileNotFoundError:
            raise BadInputError(path, "instance feature file not found") from None
        except (OSError, KeyError, ValueError) as e:
            raise BadInputError(path, f"unreadable instance feature file ({type(e).__name__}: {e})") from None
        n = len(arrs["sec"])
        if (
            arrs["box"].shape != (n, 4)
            or arrs["feat"].shape != (n, self.dim)
            or any(len(arrs[k]) != n for k in ("shot", "track"))
        ):
            raise BadInputError(path, f"inconsistent arrays (feat {arrs['feat'].shape}, {n} boxes, dim {self.dim})")
        return VideoInstances(
            arrs["sec"].astype(np.int64),
            arrs["shot"].astype(np.int64),
            arrs["track"].astype(np.int64),
            arrs["box"].astype(np.float32),
            arrs["feat"].astype(np.float32),
        )


class LVUReleaseInstances:
    """The LVU release's inputs: ``features/<id>.npz`` (RoI features) + ``instance_meta_{task}.pkl``
    (shot and track ids per box). Same interface as :class:`InstanceStore`."""

    def __init__(self, features: str | os.PathLike, meta: str | os.PathLike):
        self.root = Path(features)
        if not self.root.is_dir():
            raise BadInputError(self.root, "LVU feature folder not found")
        self.meta = read_instance_meta(meta)
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

    def __contains__(self, vid: str) -> bool:
        return vid in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def load(self, vid: str) -> VideoInstances:
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
    if (root / INSTANCE_INDEX).is_file():
        return InstanceStore(root)
    if meta is None:
        raise BadInputError(root, "not an instance-feature folder; for LVU's features/ also give its instance_meta pkl")
    return LVUReleaseInstances(root, meta)
