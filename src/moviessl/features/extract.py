"""Event-feature extraction: a pretrained backbone turns videos into ``(num_events, D)`` arrays.

One event every ``stride_s`` seconds (centres ``stride_s * (k + 0.5)``); each event is the
backbone's clip (``meta.input``: e.g. 16 frames 4 apart on the 30-fps timeline, short side 256,
centre crop 224) around its centre, globally pooled. VidSitu segments always give exactly the 5
events centred at 1, 3, 5, 7, 9 s (their layout). Optional ``--contextualizer``: the TxE outputs
over windows of the event sequence, ``{id}_ctx.npy`` (:func:`contextualize`).

Mechanics: an :class:`EventClipStream` (IterableDataset) decodes videos in DataLoader workers and
yields chunks of at most ``batch_events`` pre-processed uint8 clips; videos are sharded over
processes x workers, so a video's chunks stay in one worker, in order. :class:`FeatureExtractor`
(Lightning ``predict``) runs the backbone, reassembles each video, writes ``{id}_feats.npy``
atomically and appends its index entry to a per-process journal (``.index.rank{r}.jsonl``), so a
killed job loses at most the videos in flight. At the end rank 0 merges the journals into
``index.json``. Re-running skips every id already in the index or the journals.

Under DDP (``--devices N``) each rank extracts ``todo[rank::world]`` of rank 0's to-do list
(broadcast, so all ranks agree) into the same ``--out`` (a shared filesystem across nodes), each
appending only to its own journal; after a barrier rank 0 alone merges every journal into the one
``index.json`` and removes the journals and any temp file a killed earlier run left.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..checkpoint import build_from_checkpoint, file_hash, load_checkpoint
from ..data.cliplist import read_clip_list
from ..errors import BadInputError
from ..training import quiet_lightning
from ..utils.io import atomic_save_npy, atomic_write_json
from ..video import (
    FRAME_EXTS,
    VIDEO_EXTS,
    VideoReader,
    crop_box,
    event_centers,
    normalize,
    read_clip,
    resize_short_side,
)
from .store import CTX_SUFFIX, FEATS_SUFFIX, INDEX_NAME, read_index

log = logging.getLogger("moviessl.features")

JOURNAL_GLOB = ".index.rank*.jsonl"
TEMP_GLOBS = (
    f".*{FEATS_SUFFIX}.*.tmp",
    f".*{CTX_SUFFIX}.*.tmp",
    f".{INDEX_NAME}.*.tmp",
)  # utils.io.atomic_write's names
VIDSITU_CENTERS = [1.0, 3.0, 5.0, 7.0, 9.0]


# --- which videos -------------------------------------------------------------------------------


def _is_frame_folder(d: Path) -> bool:
    return d.is_dir() and any(p.suffix.lower() in FRAME_EXTS for p in d.iterdir())


def _scan_dir(d: Path) -> list[tuple[str, Path]]:
    out = []
    for p in sorted(d.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            out.append((p.stem, p))
        elif p.is_dir() and _is_frame_folder(p):
            out.append((p.name, p))
    return out


def find_videos(spec: str | os.PathLike) -> tuple[list[tuple[str, Path]], str]:
    """``(id, path)`` pairs and the layout: ``vidsitu`` | ``lvu`` | ``dir`` | ``list``.

    ``spec``: a VidSitu root (``vsitu_video_trimmed_dir/`` or ``vsitu_frames/``), an LVU root
    (``videos/``), a folder of video files / frame folders, or a list file (one path per line,
    optionally followed by a label, relative to the list's folder).
    """
    p = Path(spec)
    if p.is_file():
        vids = [(q.stem if q.suffix else q.name, q) for q, _ in read_clip_list(p)]
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
        vids = _scan_dir(p)
    else:
        raise BadInputError(p, "no such video folder or list file")
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
    frames = resize_short_side(frames, int(inp["short_side"]))
    c = int(inp["crop"])
    y, x = crop_box(frames.shape[1], frames.shape[2], c, "center")
    return np.ascontiguousarray(frames[:, y : y + c, x : x + c].transpose(3, 0, 1, 2))


class EventClipStream(IterableDataset):
    """Yields, per video, chunks ``{"id", "chunk", "num_chunks", "clips": uint8 (E,3,T,S,S), "info"}``
    or one ``{"id", "error"}`` item for a video that fails to decode. Set ``rank``/``world`` before
    iterating (the extractor does, in ``setup``)."""

    def __init__(
        self,
        videos: Sequence[tuple[str, Path]],
        input_spec: dict,
        stride_s: float = 2.0,
        vidsitu: bool = False,
        batch_events: int = 16,
    ):
        self.videos, self.input, self.stride_s = list(videos), dict(input_spec), float(stride_s)
        self.vidsitu, self.batch_events = vidsitu, int(batch_events)
        self.rank, self.world = 0, 1

    def shard(self) -> list[tuple[str, Path]]:
        return self.videos[self.rank :: self.world]

    def __iter__(self) -> Iterator[dict]:

        wi = get_worker_info()
        wid, nw = (wi.id, wi.num_workers) if wi is not None else (0, 1)
        for vid, path in self.shard()[wid::nw]:
            sent = 0
            try:
                with VideoReader(path) as r:
                    info = {"fps": float(r.fps), "duration_s": float(r.duration_s), "source": str(path)}
                    centers = event_centers_for(r.duration_s, self.stride_s, self.vidsitu)
                    info["num_events"] = len(centers)
                    chunks = [centers[i : i + self.batch_events] for i in range(0, len(centers), self.batch_events)]
                    for ci, cs in enumerate(chunks):
                        clips = np.stack([clip_uint8(r, c, self.input) for c in cs])
                        yield {
                            "id": vid,
                            "chunk": ci,
                            "num_chunks": len(chunks),
                            "clips": torch.from_numpy(clips),
                            "info": info,
                        }
                        sent += 1
            except Exception as e:  # one bad video never stops the job: it is listed in the index
                msg = (
                    str(e)
                    if isinstance(e, BadInputError)
                    else f"{path}: {type(e).__name__}: {' '.join(str(e).split())}"
                )
                yield {"id": vid, "error": msg, "info": {"source": str(path)}}


def backbone_features(backbone: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """Pooled features (E, D) float32 of uint8 event clips (E, 3, T, S, S) already on the model's device."""
    return backbone(normalize(clips.float().div_(255.0))).float()


# --- contextualizer -----------------------------------------------------------------------------


@torch.no_grad()
def contextualize(txe: torch.nn.Module, feats: torch.Tensor, window: int = 5, step: int = 1) -> torch.Tensor:
    """TxE outputs for every event of a video: (L, D) -> (L, dim).

    Event t is read through the window of ``window`` tokens ``step`` events apart (token stride
    / feature stride) in which it sits most centrally (clamped at the ends of the video), so each
    output sees the same amount of context the TxE was pretrained with. Videos shorter than a
    window are padded.
    """
    L, D = feats.shape
    rows, pads, pos = [], [], []
    for t in range(L):
        lattice = np.arange(t % step, L, step)
        p = t // step
        start = int(np.clip(p - window // 2, 0, max(0, len(lattice) - window)))
        idx = lattice[start : start + window]
        x = torch.zeros(window, D, dtype=feats.dtype, device=feats.device)
        x[: len(idx)] = feats[torch.as_tensor(idx, device=feats.device)]
        rows.append(x)
        pads.append(torch.arange(window, device=feats.device) >= len(idx))
        pos.append(p - start)
    x, pad = torch.stack(rows), torch.stack(pads)
    out = txe(x, mask=None, pad=pad if pad.any() else None)
    return out[torch.arange(L, device=feats.device), torch.as_tensor(pos, device=feats.device)]


def load_contextualizer(path: str | os.PathLike, in_dim: int, feature_stride_s: float):
    """(TxE in eval mode, window, step in events) from a ``context`` checkpoint."""
    obj = load_checkpoint(path, stage="context")
    meta = obj.get("meta", {})
    if int(meta.get("in_dim", in_dim)) != in_dim:
        raise BadInputError(
            path, f"contextualizer expects {meta.get('in_dim')}-d event features, the backbone gives {in_dim}"
        )
    k = float(meta.get("token_stride_s", feature_stride_s)) / feature_stride_s
    if k < 1 - 1e-6 or abs(k - round(k)) > 1e-6:
        raise BadInputError(
            path, f"its token stride {meta.get('token_stride_s')} s is not a multiple of --stride {feature_stride_s:g}"
        )
    return build_from_checkpoint(obj).eval(), int(meta.get("window", 5)), int(round(k))


# --- Lightning predict ------------------------------------------------------------------------


class FeatureExtractor(pl.LightningModule):
    """Backbone (+ optional TxE) in ``predict``; writes each finished video from ``predict_step``."""

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
    ):
        super().__init__()
        self.backbone, self.txe = backbone.eval(), (txe.eval() if txe is not None else None)
        self.out_dir, self.stream, self.entry_base = Path(out_dir), stream, dict(entry_base)
        self.store_dtype, self.window, self.step = np.dtype(dtype), window, step
        self._pending: dict[str, list] = {}
        self._bar = None
        self.counts = {"ok": 0, "bad": 0}

    def setup(self, stage: str) -> None:
        self.stream.rank, self.stream.world = self.trainer.global_rank, self.trainer.world_size
        if self.stream.world > 1:
            # Every rank scanned the folder itself; rank 0's to-do list is the one truth, so a shared
            # filesystem seen slightly differently by another node can never shard a video twice or not at all.
            self.stream.videos = self.trainer.strategy.broadcast(self.stream.videos, src=0)

    def on_predict_start(self) -> None:
        from tqdm.auto import tqdm

        if self.trainer.is_global_zero:
            self._bar = tqdm(
                total=len(self.stream.shard()), desc="extract (rank 0 shard)", unit="video", dynamic_ncols=True
            )

    def on_predict_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self.stream.world > 1:
            log.info(
                "rank %d/%d: %d ok, %d bad of its %d videos",
                self.stream.rank,
                self.stream.world,
                self.counts["ok"],
                self.counts["bad"],
                len(self.stream.shard()),
            )

    def journal(self) -> Path:
        return self.out_dir / f".index.rank{self.global_rank}.jsonl"

    def _record(self, vid: str, entry: dict) -> None:
        # A killed job may leave a torn last line: starting each record on a fresh line keeps the
        # next one intact (blank and torn lines are skipped on reading).
        with open(self.journal(), "a") as f:
            f.write("\n" + json.dumps({"id": vid, **entry}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.counts[entry["status"]] += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(ok=self.counts["ok"], bad=self.counts["bad"])

    def predict_step(self, batch: dict, batch_idx: int = 0):
        vid = batch["id"]
        if "error" in batch:
            self._pending.pop(vid, None)
            log.warning("skipping %s", batch["error"])
            self._record(
                vid, {**self.entry_base, "status": "bad", "error": batch["error"], "source": batch["info"]["source"]}
            )
            return None
        feats = backbone_features(self.backbone, batch["clips"].to(self.device, non_blocking=True))
        parts = self._pending.setdefault(vid, [None] * int(batch["num_chunks"]))
        parts[int(batch["chunk"])] = feats
        if any(p is None for p in parts):
            return None
        del self._pending[vid]
        feats = torch.cat(parts)
        info = batch["info"]
        atomic_save_npy(self.out_dir / f"{vid}{FEATS_SUFFIX}", feats.cpu().numpy().astype(self.store_dtype))
        if self.txe is not None:
            ctx = contextualize(self.txe, feats, self.window, self.step).float()
            atomic_save_npy(self.out_dir / f"{vid}{CTX_SUFFIX}", ctx.cpu().numpy().astype(self.store_dtype))
        self._record(
            vid,
            {
                **self.entry_base,
                "status": "ok",
                "num_events": int(feats.shape[0]),
                "fps": round(info["fps"], 6),
                "duration_s": round(info["duration_s"], 6),
                "source": info["source"],
            },
        )
        return None


def read_entries(out_dir: Path) -> dict[str, dict]:
    """index.json entries updated by any journals left by this or an interrupted run."""
    index = read_index(out_dir) or {"videos": {}}
    entries = dict(index["videos"])
    for j in sorted(out_dir.glob(JOURNAL_GLOB)):
        for line in j.read_text().splitlines():
            if not line.strip():
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue  # torn last line of a killed job: that video is simply redone
            entries[e.pop("id")] = e
    return entries


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
) -> dict:
    """Extract features of every video not yet done; returns the summary written to index.json."""
    out = Path(out)
    if stride_s <= 0:
        raise BadInputError("--stride", f"must be positive, got {stride_s}")
    vids, layout = find_videos(videos)
    vidsitu = layout == "vidsitu"
    if vidsitu and abs(stride_s - 2.0) > 1e-9:
        log.warning("VidSitu segments always give their 5 events at 1,3,5,7,9 s; --stride %g ignored", stride_s)
        stride_s = 2.0
    obj = load_checkpoint(backbone, stage="backbone")
    inp = dict(obj.get("meta", {}).get("input") or {})
    missing = [k for k in ("num_frames", "stride", "short_side", "crop") if k not in inp]
    if missing:
        raise BadInputError(backbone, f"checkpoint meta.input lacks {', '.join(missing)}")
    model = build_from_checkpoint(obj)
    dim = int(obj.get("meta", {}).get("out_dim") or getattr(model, "out_dim"))
    bhash = file_hash(backbone)
    txe, window, step, ctx_info = None, 5, 1, None
    if contextualizer is not None:
        txe, window, step = load_contextualizer(contextualizer, dim, stride_s)
        ctx_info = {
            "path": str(Path(contextualizer).resolve()),
            "hash": file_hash(contextualizer),
            "window": window,
            "step": step,
            "dim": int(txe.dim),
        }

    out.mkdir(parents=True, exist_ok=True)
    old = read_index(out)
    if old is not None:
        for key, want in (("backbone", bhash), ("stride_s", stride_s)):
            if old.get(key) is not None and old.get(key) != want:
                raise BadInputError(
                    out, f"folder holds features with {key}={old.get(key)}, this run has {want}; use another --out"
                )
    entries = read_entries(out)

    def finished(vid: str) -> bool:
        e = entries.get(vid)
        if e is None or (e.get("status") == "bad" and retry_bad):
            return False
        return e.get("status") == "bad" or (out / f"{vid}{FEATS_SUFFIX}").is_file()

    todo = [(v, p) for v, p in vids if not finished(v)]
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    # under DDP every rank runs this function (Lightning re-executes the command per device)
    (log.info if rank_zero_only.rank == 0 else log.debug)(
        "%d videos (%s layout): %d to extract, %d already done", len(vids), layout, len(todo), len(vids) - len(todo)
    )
    dtype = "float16" if fp16 else "float32"
    header = {
        "format": "moviessl-features",
        "stride_s": stride_s,
        "dim": dim,
        "dtype": dtype,
        "backbone": bhash,
        "backbone_path": str(Path(backbone).resolve()),
        "input": inp,
        "layout": layout,
        "contextualizer": ctx_info,
    }
    t0 = time.perf_counter()
    if todo:
        quiet_lightning()
        import warnings

        warnings.filterwarnings("ignore", message=".*predict returned None.*")
        stream = EventClipStream(todo, inp, stride_s, vidsitu, batch_events)
        module = FeatureExtractor(model, out, stream, {"backbone": bhash}, dtype, txe, window, step)
        trainer = pl.Trainer(
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
        dl = DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=torch.cuda.is_available())
        trainer.predict(module, dataloaders=dl, return_predictions=False)
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            return {}
    entries = read_entries(out)
    if txe is not None:  # features done by an earlier run without (or with another) contextualizer
        redo = old is not None and (old.get("contextualizer") or {}).get("hash") != ctx_info["hash"]
        _fill_ctx(out, entries, txe, window, step, dtype, redo_all=redo)
    elif old is not None and old.get("contextualizer"):
        header["contextualizer"] = old["contextualizer"]  # keep describing the ctx files already there
    entries = {v: entries[v] for v in sorted(entries)}
    if vidsitu:  # each segment's split, so pretraining can leave out the evaluation splits
        splits = vidsitu_splits(Path(videos))
        for v, e in entries.items():
            if v in splits:
                e["split"] = splits[v]
    counts = {
        "ok": sum(e.get("status") == "ok" for e in entries.values()),
        "bad": sum(e.get("status") == "bad" for e in entries.values()),
    }
    index = {**header, "counts": counts, "videos": entries}
    atomic_write_json(out / INDEX_NAME, index)
    for j in out.glob(JOURNAL_GLOB):  # merged: the index now holds them
        j.unlink()
    for pattern in TEMP_GLOBS:  # every rank is done: a temp file left here is from a killed earlier run
        for t in out.glob(pattern):
            t.unlink(missing_ok=True)
    log.info(
        "%s: %d ok, %d bad videos (%.1f s)", out / INDEX_NAME, counts["ok"], counts["bad"], time.perf_counter() - t0
    )
    for vid, e in entries.items():
        if e.get("status") == "bad":
            log.info("bad: %s", e.get("error"))
    return {k: v for k, v in index.items() if k != "videos"}


def vidsitu_splits(videos: Path) -> dict[str, str]:
    """Segment -> split of a VidSitu video root whose annotations sit beside it (else {})."""
    from ..data.vidsitu import segment_splits

    root = videos.parent if videos.name in ("vsitu_video_trimmed_dir", "vsitu_frames") else videos
    try:
        return segment_splits(root)
    except BadInputError:
        return {}


def _fill_ctx(out: Path, entries: dict, txe, window: int, step: int, dtype: str, redo_all: bool = False) -> None:
    for vid, e in entries.items():
        if e.get("status") != "ok" or (not redo_all and (out / f"{vid}{CTX_SUFFIX}").is_file()):
            continue
        feats = torch.from_numpy(np.load(out / f"{vid}{FEATS_SUFFIX}").astype(np.float32))
        ctx = contextualize(txe, feats, window, step)
        atomic_save_npy(out / f"{vid}{CTX_SUFFIX}", ctx.numpy().astype(dtype))
