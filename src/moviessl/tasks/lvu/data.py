"""What the Object Transformer reads for each LVU video: instance tokens and / or scene tokens.

- instances: :func:`moviessl.features.instances.open_instances` (``moviessl extract-instances``
  output, or LVU's released ``features/`` + ``instance_meta_{task}.pkl``);
- scene: a ``moviessl extract`` feature folder, read as ``{id}_ctx.npy`` (TxE-contextualised:
  OT++'s "ours") or ``{id}_feats.npy`` (pooled backbone features: "sup"), or contextualised here by
  a stage-"context" checkpoint (:func:`moviessl.features.extract.contextualize`, the same windows
  as ``moviessl extract --contextualizer``).

:class:`LVUInputs` holds one :class:`~moviessl.context.ot_spans.SpanVideo` per video and is built
once per setting (the demo's table reuses it for all nine tasks).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ...checkpoint import file_hash
from ...context.ot_spans import SpanVideo, event_seconds
from ...data.lvu import VideoInstances
from ...dist import launch_rank, local_device, rotated_order
from ...errors import BadInputError
from ...features.extract import contextualize, load_contextualizer, save_ctx
from ...features.instances import LazyFeatures, StampedSource, file_stamp
from ...features.store import CTX_SUFFIX, NO_CTX, FeatureStore, index_facts, live_writer
from ...utils.digest import content_digest
from ..base import settings_hash

log = logging.getLogger("moviessl.tasks")

SCENE_KINDS = ("auto", "ctx", "feats")


@dataclass
class LVUInputs:
    videos: dict[str, SpanVideo]
    in_dim: int  # instance feature width (0: no instance pathway)
    scene_dim: int  # scene feature width (0: no scene pathway)
    desc: str  # what they are (recorded with every run)
    bad: dict[str, str] = field(default_factory=dict)  # id -> why it could not be read
    data: str = ""  # content_digest of the videos' inputs (part of the settings hash)
    key: str = ""  # ``desc`` without the folders it names (part of the settings hash; empty: ``desc``)

    def __contains__(self, vid: str) -> bool:
        return vid in self.videos


@dataclass
class SceneRows:
    """A video's scene features with the events of a damaged stretch left out: ``feat`` holds all
    ``E`` rows (those events' are zeros, :meth:`FeatureStore.missing`), ``keep`` (E,) the others.
    Such rows are not scene tokens (as the contextualizer treats them as padding): zeros would be
    attended to, counted in the input statistics, and with ``input_norm`` become a large
    out-of-distribution token."""

    feat: np.ndarray | LazyFeatures
    keep: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.keep.sum()), int(self.feat.shape[1]))

    def __len__(self) -> int:
        return self.shape[0]


def _without_missing(store: FeatureStore, feats: dict) -> dict:
    """``feats`` with each damaged video's features wrapped in :class:`SceneRows`."""
    out = dict(feats)
    for v in feats:
        gone = store.missing(v)
        if gone.any():
            out[v] = SceneRows(feats[v], ~gone)
    return out


def store_entry(store: FeatureStore, vid: str) -> dict | None:
    """A film's entry in its feature folder's index (None without one)."""
    return (store.index or {}).get("videos", {}).get(vid)


class SceneFeatures(StampedSource):
    """A feature folder's scene features read on demand (``kind`` ``feats`` or ``ctx``): they share
    the instance features' per-process cache (``data.instance_cache_mb``), so a task's thousands of
    films are not all held in RAM on every rank and loader worker."""

    def __init__(self, store: FeatureStore, kind: str):
        self.store, self.kind = store, kind

    def _file(self, vid: str) -> Path:
        return self.store.ctx_path(vid) if self.kind == "ctx" else self.store.path(vid)

    def _read(self, vid: str) -> np.ndarray:
        return self.store.load_ctx(vid) if self.kind == "ctx" else self.store.load(vid)

    def _shared_inputs(self):
        return index_facts(self.store.index), self.kind

    def _index_entry(self, vid: str):
        return store_entry(self.store, vid)

    def cache_key(self, vid: str) -> tuple:
        try:
            return super().cache_key(vid)
        except BadInputError:
            if self.kind == "ctx":  # the hint, not only "not found"
                raise BadInputError(self._file(vid), NO_CTX) from None
            raise


class ContextualisedScene(StampedSource):
    """Scene features that a TxE checkpoint contextualised here, cached on disk in ``folder``
    (:func:`contextualize_scene`) and read on demand like :class:`SceneFeatures`: with ``--task all``
    the nine tasks, and the ranks of a launch, share one pass of the TxE, and no rank holds every
    film in RAM.

    A cached file's name carries its source's size, modification time and inode (``{id}.{size}.
    {mtime_ns}.{ino}_ctx.npy``): re-extracted features are contextualised again, on any filesystem
    (one that cannot store a given mtime cannot lose a name), and no side file can go out of step."""

    NAME = re.compile(r"(.+)\.\d+\.-?\d+\.\d+" + re.escape(CTX_SUFFIX))  # the id, then the stamp

    def __init__(self, store: FeatureStore, folder: Path):
        self.store, self.folder = store, Path(folder)

    def _file(self, vid: str) -> Path:
        """Named by its source's stamp (a missing source: one line naming it)."""
        _, size, mtime, ino = file_stamp(self.store.path(vid))
        return self.folder / f"{vid}.{size}.{mtime}.{ino}{CTX_SUFFIX}"

    def _source(self, vid: str) -> Path:
        return self.store.path(vid)

    def _shared_inputs(self):
        return index_facts(self.store.index)  # the checkpoint's hash is in the inputs' description

    def _index_entry(self, vid: str):
        return store_entry(self.store, vid)

    def current(self, vid: str) -> bool:
        try:
            return self._file(vid).is_file()
        except BadInputError:  # the source is gone: the store's read names it
            return False

    def listing(self) -> dict[str, list[str]]:
        """id -> the names of its cached files now (one listing of the folder)."""
        out: dict[str, list[str]] = {}
        with contextlib.suppress(FileNotFoundError), os.scandir(self.folder) as it:
            for e in it:
                m = self.NAME.fullmatch(e.name)
                if m:
                    out.setdefault(m.group(1), []).append(e.name)
        return out

    def cache_key(self, vid: str) -> tuple:
        # the folder (the checkpoint) and the source's stamp name the cached file; not that file's
        # inode, which a second rank's copy of the same film would change under a rank that read the first
        return (type(self).__name__, str(self.folder), file_stamp(self.store.path(vid)))

    def _read(self, vid: str) -> np.ndarray:
        path = self._file(vid)
        try:
            return np.load(path, allow_pickle=False).astype(np.float32, copy=False)
        except FileNotFoundError:
            why = "no cached TxE outputs for its features as they are now (changed, or the cache cleaned, meanwhile)"
            raise BadInputError(self.store.path(vid), f"{why}; run the job again") from None
        except (OSError, ValueError, EOFError) as e:
            raise BadInputError(path, f"unreadable cached TxE outputs ({type(e).__name__}); delete it") from None


def contextualize_scene(
    scene: ContextualisedScene,
    txe: torch.nn.Module,
    window: int,
    step: int,
    ids: Iterable[str],
    progress: bool = True,
    device: str | None = None,
) -> None:
    """Every ``ids`` film of ``scene.store`` through ``txe`` (a stage-"context" checkpoint's, with its
    ``window`` and ``step``: :func:`moviessl.features.extract.load_contextualizer`) into
    ``scene.folder``, as ``moviessl extract --contextualizer`` does it (the same windows: each within
    its undamaged stretch); a film's files made from earlier versions of its features go.

    Resumable: current files are kept. Under torchrun / srun each rank starts at its own share and
    skips what another rank wrote meanwhile (as VidSitu's frozen-feature cache does), and never
    replaces a file another rank wrote. On ``device`` (default: this rank's GPU where there is one,
    :func:`moviessl.dist.local_device`), in fp32."""
    todo = [v for v in ids if not scene.current(v)]
    todo = [todo[k] for k in rotated_order(len(todo), *launch_rank())]
    if not todo:  # a rerun (or a rank that finds every file written) touches no GPU
        return
    from ...utils.progress import bar as tqdm

    store, before = scene.store, scene.listing()
    log.info("contextualising %d film(s) of %s into %s", len(todo), store.root, scene.folder)
    txe = txe.to(device or local_device())
    with torch.no_grad():
        for v in tqdm(todo, desc="contextualise scene", unit="film", disable=not progress):
            if scene.current(v):
                continue
            # named by the features before they are read: features rewritten meanwhile give a file no
            # job reads (a missing or bad file: one line naming it)
            path = scene._file(v)
            feats = store.load(v, mmap=True)
            save_ctx(path, txe, feats, window, step, store.missing(v), clobber=False)
            for old in before.get(v, []):
                if old != path.name:
                    (scene.folder / old).unlink(missing_ok=True)


def scene_cache(store: FeatureStore, txe_hash: str, cache_dir: str | os.PathLike) -> ContextualisedScene:
    """The cache of one TxE checkpoint's outputs on one feature folder: ``cache_dir/scene_ctx/<hash
    of the folder's path and backbone and of the checkpoint>/``."""
    parts = [str(store.root.resolve()), (store.index or {}).get("backbone"), txe_hash]
    if any(e.get("missing") for e in (store.index or {}).get("videos", {}).values()):
        # a damaged film's events are read through windows within its undamaged stretches (before,
        # through the film's windows with the damage as padding): not the files made then
        parts.append("stretch-windows")
    return ContextualisedScene(store, Path(cache_dir) / "scene_ctx" / settings_hash(*parts))


def _load_txe(store: FeatureStore, contextualizer: str | os.PathLike) -> tuple:
    """(TxE, window, step, the checkpoint's hash) for ``store``'s features (a one-line error first)."""
    txe, window, step = load_contextualizer(
        contextualizer,
        store.dim,
        store.stride_s,
        source=f"the scene feature folder {store.root}",
        backbone=store.backbone,
    )
    return txe, window, step, file_hash(contextualizer)


def contextualize_folder(
    features: str | os.PathLike,
    contextualizer: str | os.PathLike,
    cache_dir: str | os.PathLike,
    ids: Iterable[str],
    progress: bool = True,
    device: str | None = None,
) -> None:
    """:func:`contextualize_scene` of the ``ids`` in a feature folder, into :func:`scene_cache`: run
    once before ``--task all``'s tasks, so that ranks that Lightning's launcher starts at the first
    task's ``fit`` find every film done, also for the later tasks' films."""
    store = FeatureStore(features, num_events=None)
    txe, window, step, txe_hash = _load_txe(store, contextualizer)
    want = [v for v in ids if v in store]
    contextualize_scene(scene_cache(store, txe_hash, cache_dir), txe, window, step, want, progress, device)


def scene_arrays(
    features: str | os.PathLike,
    kind: str = "auto",
    contextualizer: str | os.PathLike | None = None,
    ids: Iterable[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device: str | None = None,
) -> tuple[dict[str, np.ndarray | LazyFeatures | SceneRows], float, str]:
    """``(id -> (E, D) scene features, seconds between events, description)`` from a feature folder.

    ``kind``: ``ctx`` ({id}_ctx.npy), ``feats`` ({id}_feats.npy) or ``auto`` (ctx when the folder was
    extracted with a contextualizer); each file is read and checked now, and its features then on
    demand (:class:`SceneFeatures`). With ``contextualizer`` the raw features are contextualised here
    by that TxE checkpoint: cached in ``cache_dir/scene_ctx/<hash of the feature folder's path and
    backbone and of the checkpoint>/`` and read on demand (:func:`contextualize_scene`), or held in
    RAM without a ``cache_dir``; the TxE runs on ``device`` (default: this rank's GPU where there is
    one)."""
    if kind not in SCENE_KINDS:
        raise BadInputError("--scene-kind", f"must be one of {', '.join(SCENE_KINDS)}, got '{kind}'")
    store = FeatureStore(features, num_events=None)
    if kind == "auto":
        pending = (store.index or {}).get("ctx_pending")
        if pending and contextualizer is None:
            # the folder's TxE outputs are being remade (the index names none meanwhile): read as a
            # folder without a TxE, a run meant for TxE outputs got the backbone's features
            holder, tail = live_writer(store.root), "or pass --scene-kind feats for the backbone features"
            raise BadInputError(
                store.root,
                f"its TxE outputs of {pending.get('path')} are being made by an extraction job ({holder}); wait for "
                f"it to end, {tail}"
                if holder
                else f"its TxE outputs of {pending.get('path')} were being made when its extraction stopped; rerun "
                f"extract --contextualizer {pending.get('path')} on it, {tail}",
            )
        kind = "ctx" if (store.index or {}).get("contextualizer") and contextualizer is None else "feats"
    want = [v for v in (ids if ids is not None else store.ids) if v in store]
    if contextualizer is None:
        source = SceneFeatures(store, kind)
        scene = _without_missing(store, {v: source.lazy(v) for v in want})
        return scene, store.stride_s, f"scene:{Path(features).resolve()}:{kind}"
    txe, window, step, txe_hash = _load_txe(store, contextualizer)
    desc = f"scene:{Path(features).resolve()}+txe:{txe_hash}"
    if any(store.info(v).get("missing") for v in want):
        # an event beside a damaged stretch is read through a window within its own stretch (the
        # in-RAM path once attended to the damage, then read it as padding): not the runs made before
        desc += "+stretch-windows"
    if cache_dir is not None:
        scene = scene_cache(store, txe_hash, cache_dir)
        contextualize_scene(scene, txe, window, step, want, progress, device)
        return _without_missing(store, {v: scene.lazy(v) for v in want}), store.stride_s, desc
    out: dict[str, np.ndarray | LazyFeatures] = {}
    txe = txe.to(device or local_device())  # this rank's GPU where there is one: thousands of films
    with torch.no_grad():
        for v in want:
            ctx = contextualize(txe, store.load(v, mmap=True), window, step, store.missing(v))
            out[v] = ctx.float().cpu().numpy()
    return _without_missing(store, out), store.stride_s, desc


def load_inputs(
    instances=None,
    scene: dict[str, np.ndarray | LazyFeatures | SceneRows] | None = None,
    scene_stride_s: float = 2.0,
    ids: Iterable[str] | None = None,
    desc: str = "",
    key: str = "",
) -> LVUInputs:
    """One :class:`SpanVideo` per video that has instances or scene features (``ids``: only those).

    A video missing from one pathway gets an empty one (no tokens from it), so every item has the
    same tensors; unreadable instance files are skipped and listed in ``bad``."""
    if instances is None and scene is None:
        raise BadInputError(None, "give instance features (--instances), scene features (--scene-features) or both")
    in_dim = int(instances.dim) if instances is not None else 0
    scene_dim = int(next(iter(scene.values())).shape[1]) if scene else 0
    have = set(instances.ids if instances is not None else []) | set(scene or {})
    todo = sorted(have if ids is None else have & set(ids))
    videos, bad = {}, {}
    for vid in todo:
        inst = None
        if instances is not None:
            try:
                inst = instances.load(vid, lazy=True) if vid in instances else None
            except BadInputError as e:
                log.warning("skipping %s", e)
                bad[vid] = str(e)
                continue
            if inst is None:
                inst = VideoInstances(
                    *(np.zeros(0, np.int64) for _ in range(3)),
                    np.zeros((0, 4), np.float32),
                    np.zeros((0, in_dim), np.float32),
                )
        sv = SpanVideo(vid, inst=inst)
        if scene is not None:
            s = scene.get(vid, np.zeros((0, scene_dim), np.float32))
            if isinstance(s, SceneRows):  # a damaged film's valid rows, read now (rare)
                sec = event_seconds(len(s.keep), scene_stride_s)[s.keep]
                s = np.asarray(s.feat, np.float32)[s.keep]
            else:
                s = s if isinstance(s, LazyFeatures) else np.asarray(s, np.float32)
                sec = event_seconds(len(s), scene_stride_s)
            sv.scene, sv.scene_sec = s, sec
        if len(sv.token_seconds()):
            videos[vid] = sv
    return LVUInputs(videos, in_dim, scene_dim, desc, bad, inputs_digest(videos), key)


def inputs_digest(videos: dict[str, SpanVideo]) -> str:
    """What the videos' inputs are: boxes, shots and tracks by content; features read on demand by
    their source (index or metadata file) and file name and size; features held in RAM by content.
    A finished run on other inputs (re-extracted features, another instance-metadata file) is not
    reused."""

    def feats(x):
        return x.source.digest_parts(x.vid) if isinstance(x, LazyFeatures) else x

    parts = []
    for vid in sorted(videos):
        sv = videos[vid]
        inst = None if sv.inst is None else (sv.inst.sec, sv.inst.shot, sv.inst.track, sv.inst.box, feats(sv.inst.feat))
        scene = None if sv.scene is None else (feats(sv.scene), sv.scene_sec)
        parts.append((vid, inst, scene))
    return content_digest(parts)
