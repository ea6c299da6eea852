"""Inputs of the VidSitu tasks: event features in memory, or event clips decoded from videos.

A task sees a split as ``SegmentData``: for each usable segment its ann_idx, its input (a (5, D)
feature row, or the 5 event clips) and its target. Segments whose input is missing or bad are
skipped and counted: in training they are dropped; on the evaluation split they still get a
(fallback) prediction, because a VidSitu submission must cover the whole split.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ...data.vidsitu import EVENTS
from ...errors import BadInputError
from ...loader import train_loader
from ...video.transforms import MEAN, param_dtype, to_model_input

log = logging.getLogger("moviessl.tasks")


@dataclass
class SegmentData:
    """One split's usable segments, in split order."""

    vsegs: list[str]
    ann_idx: list[int]
    x: Any  # torch.Tensor (N,5,D) or a ClipSource
    y: list[Any]  # per segment: target tensor, eval target, or None
    skipped: dict[str, str] = field(default_factory=dict)  # vseg -> reason

    def __len__(self) -> int:
        return len(self.vsegs)

    def subset(self, rows: Sequence[int]) -> "SegmentData":
        """The segments at ``rows`` (inputs, targets and indices kept together)."""
        rows = list(rows)
        if isinstance(self.x, torch.Tensor):
            x = self.x[rows]
        elif isinstance(self.x, FrozenClipFeatures):
            x = self.x.subset(rows)
        else:  # a ClipSource
            x = ClipSource(
                [self.x.paths[i] for i in rows],
                self.x.num_frames,
                self.x.stride,
                self.x.short_side,
                self.x.crop,
                self.x.crop_mode,
            )
        return SegmentData([self.vsegs[i] for i in rows], [self.ann_idx[i] for i in rows], x, [self.y[i] for i in rows])


class SegmentDataset(Dataset):
    def __init__(self, data: SegmentData, ignore_fill: int | None = None):
        self.data, self.ignore_fill = data, ignore_fill

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        y = self.data.y[i]
        failed = False
        try:
            x = self.data.x[i]
        except BadInputError as e:  # a video that fails to decode mid-run: zeros, target ignored
            log.warning("skipping %s", e)
            x, failed = self.data.x.blank(), True
            if isinstance(y, torch.Tensor) and self.ignore_fill is not None:
                y = torch.full_like(y, self.ignore_fill)
        item = {"x": x, "i": i, "failed": failed}
        if y is not None:
            item["y"] = y
        return item


def collate(items: list[dict]) -> dict:
    # the batch, the targets (the task's ``train_target`` / ``eval_target``) and a failed video's grey
    # clips are made on the CPU, as a loader's are: on torch's default device (a user's
    # set_default_device("cuda"), which a forked worker inherits) they were made on the GPU, which a
    # forked worker cannot start and pinning refuses
    cpu = torch.device("cpu")
    out = {
        "x": torch.stack([it["x"] for it in items]),
        "i": torch.tensor([it["i"] for it in items], device=cpu),
        "failed": torch.tensor([bool(it.get("failed", False)) for it in items], device=cpu),
    }
    if "y" in items[0]:
        ys = [it["y"] for it in items]
        if ys[0].dim() >= 1 and len({y.shape for y in ys}) > 1:  # forced prefixes of different lengths
            P = max(y.shape[-1] for y in ys)
            ys = [torch.nn.functional.pad(y, (0, P - y.shape[-1]), value=-1) for y in ys]
        out["y"] = torch.stack(ys)
    return out


def loader(
    data: SegmentData,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    ignore_fill: int | None = None,
    seed: int = 0,
    pin_memory: bool | None = None,
) -> DataLoader:
    """``shuffle``: a training loader (:func:`moviessl.loader.train_loader`: shuffled by ``seed`` and
    the epoch, resumable mid-epoch); otherwise the segments in order. ``pin_memory``: default where
    CUDA is; the runner pins only batches bound for a GPU (:func:`moviessl.dist.pins_memory`: a CPU
    run's pinning made a CUDA context on GPU 0 in each of its processes)."""
    kw = dict(
        collate_fn=collate,
        num_workers=int(num_workers),
        persistent_workers=False,
        drop_last=False,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
    )
    ds = SegmentDataset(data, ignore_fill)
    if shuffle:
        return train_loader(ds, int(batch_size), seed=int(seed), **kw)
    return DataLoader(ds, batch_size=int(batch_size), shuffle=False, **kw)


def build_segments(
    split,
    source: Callable[[list[str]], tuple[Any, list[str], dict[str, str]]],
    target: Callable[[str, list[dict]], Any],
    need_records: bool = True,
) -> SegmentData:
    """Select the split's segments that have records (if needed), a valid target and an input.

    ``source(vsegs) -> (x, kept_vsegs, skipped)`` loads inputs for the candidates."""
    skipped: dict[str, str] = {}
    cands, ys, idx = [], [], []
    for ai, vseg in enumerate(split.vseg_ids):
        recs = split.records.get(vseg) or []
        if need_records and not recs:
            skipped[vseg] = "no annotation records"
            continue
        try:
            y = target(vseg, recs)
        except (BadInputError, KeyError, ValueError) as e:
            skipped[vseg] = f"bad annotation: {e}"
            continue
        cands.append(vseg)
        ys.append(y)
        idx.append(ai)
    x, kept, bad = source(cands)
    skipped.update(bad)
    keep = set(kept)
    sel = [j for j, v in enumerate(cands) if v in keep]
    for v, why in bad.items():
        log.warning("%s: skipped (%s)", v, why)
    return SegmentData([cands[j] for j in sel], [idx[j] for j in sel], x, [ys[j] for j in sel], skipped)


# --------------------------------------------------------------------------- features


def feature_source(store) -> Callable[[list[str]], tuple[torch.Tensor, list[str], dict[str, str]]]:
    """Loads (5, D) rows of a FeatureStore into one float32 tensor; missing/bad files are skipped."""

    def load(vsegs: list[str]):
        rows, kept, bad = [], [], {}
        for v in vsegs:
            if v not in store:
                bad[v] = f"no features in {store.root}"
                continue
            try:
                arr = store.load(v)
            except BadInputError as e:
                bad[v] = str(e)
                continue
            if arr.shape[0] != len(EVENTS):
                bad[v] = f"{store.path(v)}: expected {len(EVENTS)} events, got {arr.shape[0]}"
                continue
            # events of a damaged stretch are zero rows, not observations: trained on, they teach a
            # verb / roles / relations of a blank input and skew the input statistics
            gone = store.missing(v)
            if gone.any():
                evs = ", ".join(EVENTS[i] for i in np.flatnonzero(gone))
                bad[v] = f"{store.path(v)}: {evs} missing (a damaged stretch of the video; index.json)"
                continue
            rows.append(arr)
            kept.append(v)
        x = torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, len(EVENTS), store.dim)
        return x, kept, bad

    return load


# --------------------------------------------------------------------------- videos


class ClipSource:
    """``[i] -> (5, 3, T, H, W)`` uint8: the 5 event clips of segment i (16x4 at 30 fps, centred at
    1, 3, 5, 7, 9 s), resized and cropped as the backbone was pretrained (its meta ``input``). They
    go through the loader as uint8 (a quarter of float32's bytes in shared memory: 12 MB, not 48,
    per segment at 224^2) and are normalised on the device (:func:`moviessl.video.to_model_input`)."""

    def __init__(
        self, paths: Sequence[Path], num_frames: int, stride: int, short_side: int, crop: int, crop_mode: str = "center"
    ):
        self.paths = list(paths)
        self.crop_mode = crop_mode
        self.num_frames, self.stride, self.short_side, self.crop = (
            int(num_frames),
            int(stride),
            int(short_side),
            int(crop),
        )

    def __len__(self) -> int:
        return len(self.paths)

    def blank(self) -> torch.Tensor:
        """Clips of a video that fails mid-run: the mean grey, which normalises to ~0 (its target is ignored)."""
        grey = round(MEAN[0] * 255)
        shape = (len(EVENTS), 3, self.num_frames, self.crop, self.crop)
        return torch.full(shape, grey, dtype=torch.uint8, device="cpu")

    def __getitem__(self, i: int) -> torch.Tensor:
        from ...video import VideoReader, event_centers, preprocess_uint8, read_clip

        path = self.paths[i]
        try:
            with VideoReader(path) as r:
                centres = event_centers(10.0)[: len(EVENTS)]
                # an event centred past a short segment's end has no frames of its own, only copies
                # of the last ones; `moviessl extract` marks it missing
                past = [ev for ev, c in zip(EVENTS, centres) if c > r.duration_s + 1e-6]
                if past:
                    raise BadInputError(
                        path, f"it lasts {r.duration_s:.2f} s: {', '.join(past)} centred past its end (no frames)"
                    )
                clips = [
                    preprocess_uint8(
                        read_clip(r, c, num_frames=self.num_frames, stride=self.stride),
                        self.short_side,
                        self.crop,
                        crop_mode=self.crop_mode,
                    )
                    for c in centres
                ]
                # the reader stands in the previous frame for one that did not decode; `moviessl
                # extract` marks such an event missing, and a task must not learn from a frozen frame
                if r.missing:
                    raise BadInputError(
                        path, f"{len(r.missing)} frame(s) of its event clips did not decode (a damaged stretch)"
                    )
        except BadInputError:
            raise
        except Exception as e:  # any decoder failure is a bad input for this one video
            raise BadInputError(path, f"could not read event clips ({type(e).__name__}: {e})") from None
        return torch.stack(clips)


class FrozenClipFeatures:
    """A frozen backbone's features of a :class:`ClipSource`'s segments, computed once: ``[i]`` ->
    the ``(5, D)`` features its clips give, computed as the run computes them (its precision), or
    the :class:`BadInputError` their decoding raised, as ``ClipSource[i]`` raises it, so that the
    loader treats the segment as it treats a clip that fails mid-run; :meth:`blank` -> the features
    of ``ClipSource.blank()``'s grey clips. ``paths``: the clips' files."""

    def __init__(self, feats: torch.Tensor, errors: dict[int, str], blank: torch.Tensor | None, paths: Sequence):
        self.feats, self.errors, self._blank, self.paths = feats, dict(errors), blank, list(paths)

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int) -> torch.Tensor:
        if i in self.errors:
            raise BadInputError(None, self.errors[i])
        return self.feats[i]

    def blank(self) -> torch.Tensor:
        return self._blank

    def subset(self, rows: Sequence[int]) -> "FrozenClipFeatures":
        rows = list(rows)
        errors = {k: self.errors[i] for k, i in enumerate(rows) if i in self.errors}
        return FrozenClipFeatures(self.feats[rows], errors, self._blank, [self.paths[i] for i in rows])


def video_source(
    videos_root: str | os.PathLike,
    input_meta: dict,
    num_frames: int | None = None,
    stride: int | None = None,
    resize: str = "crop",
):
    """Resolve each segment's video (file or frame folder) now; decode lazily in the DataLoader.
    ``resize``: ``crop`` (the backbone's short side, then a centre crop) or ``squash`` (the whole
    frame to crop x crop, VidSitu's loader)."""
    if resize not in ("crop", "squash"):
        raise BadInputError("data.resize", f"must be crop or squash, got {resize!r}")
    from ...video import resolve_video

    def load(vsegs: list[str]):
        paths, kept, bad = [], [], {}
        for v in vsegs:
            try:
                paths.append(resolve_video(videos_root, v))
                kept.append(v)
            except BadInputError as e:
                bad[v] = str(e)
        src = ClipSource(
            paths,
            num_frames or input_meta.get("num_frames", 16),
            stride or input_meta.get("stride", 4),
            input_meta.get("short_side", 224),
            input_meta.get("crop", 224),
            "squash" if resize == "squash" else "center",
        )
        return src, kept, bad

    return load


class _Extracted:
    """Whether segment i's features are in ``out_dir`` and were made from its video as it is now
    (name and size, kept in ``.{vseg}.source.json``); picklable, for the loader's workers."""

    def __init__(self, out_dir: Path, vsegs: list[str], paths: list | None):
        self.out_dir, self.vsegs, self.paths = out_dir, vsegs, paths

    def record(self, i: int) -> Path:
        return self.out_dir / f".{self.vsegs[i]}.source.json"

    def source(self, i: int) -> list | None:
        from ...utils.digest import name_size

        return None if self.paths is None else list(name_size(self.paths[i]))

    def __call__(self, i: int) -> bool:
        # the folder is named by the videos folder, not by each video: one replaced in place (another
        # name or size than its features were made from) is extracted again
        if not (self.out_dir / f"{self.vsegs[i]}_feats.npy").is_file():
            return False
        try:
            return self.source(i) in (None, json.loads(self.record(i).read_text()))
        except FileNotFoundError:  # made before the record was kept: taken as it is
            return True
        except (OSError, ValueError):
            return False


class _TodoClips(torch.utils.data.Dataset):
    """``(i, clips or None, error or None)`` of each segment to extract, decoded in the loader's
    workers; one that another rank wrote meanwhile is not decoded."""

    def __init__(self, src: ClipSource, todo: list[int], done: _Extracted):
        self.src, self.todo, self.done = src, todo, done

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int) -> tuple:
        i = self.todo[k]
        if self.done(i):
            return i, None, None
        try:
            return i, self.src[i], None
        except BadInputError as e:
            return i, None, str(e)


@torch.no_grad()
def extract_features(
    backbone: torch.nn.Module,
    src: ClipSource,
    vsegs: list[str],
    out_dir: str | os.PathLike,
    batch_size: int = 4,
    device: str = "cpu",
    num_workers: int = 0,
    autocast: torch.dtype | None = None,
    errors: dict[str, str] | None = None,
) -> list[str]:
    """Frozen-backbone (5, D) features of each segment into ``out_dir/{vseg}_feats.npy`` (VidSitu layout):
    float32, or float64 from float64 weights; ``autocast``: the backbone runs under autocast to that
    dtype (as a mixed-precision training step runs it).

    Resumable: segments whose file exists are skipped, unless the video it was made from (name and
    size, kept in ``.{vseg}.source.json``) was replaced since. Under torchrun / srun each rank starts at its
    own share of the to-do list and skips what another rank wrote meanwhile (as the backbone stage's
    frame cache does), so the ranks split the work instead of each doing all of it; a segment that
    fails to decode writes nothing, so every rank tries it and lists it. ``num_workers``: processes
    decoding the clips (``data.num_workers``; 0: this one). Returns the vsegs that failed to decode
    (``errors``: a dict each one's error is added to)."""
    from ...dist import launch_rank, rotated_order
    from ...utils.io import atomic_save_npy, atomic_write_json
    from ...utils.progress import bar as tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = getattr(src, "paths", None)
    done = _Extracted(out_dir, vsegs, paths)
    todo = [i for i in range(len(vsegs)) if not done(i)]
    for i in todo:  # the features first: a kill between the two leaves a segment to extract, not stale
        (out_dir / f"{vsegs[i]}_feats.npy").unlink(missing_ok=True)
        done.record(i).unlink(missing_ok=True)
    todo = [todo[k] for k in rotated_order(len(todo), *launch_rank())]
    if not todo:  # a rerun (or another rank) that finds every file touches no GPU and starts no worker
        return []
    backbone = backbone.to(device).eval()
    cast = contextlib.nullcontext() if autocast is None else torch.autocast(torch.device(device).type, dtype=autocast)
    failed = []
    loader = torch.utils.data.DataLoader(
        _TodoClips(src, todo, done), batch_size=batch_size, num_workers=num_workers, collate_fn=list
    )
    for items in tqdm(loader, desc="event features", unit="batch"):
        batch, ids = [], []
        for i, clips, error in items:
            if error is not None:
                log.warning("skipping %s", error)
                failed.append(vsegs[i])
                if errors is not None:
                    errors[vsegs[i]] = error
            elif clips is not None and not done(i):
                batch.append(clips)
                ids.append(i)
        if not batch:
            continue
        x = to_model_input(torch.stack(batch).to(device), param_dtype(backbone))
        B, E = x.shape[:2]
        with cast:
            out = backbone(x.flatten(0, 1)).view(B, E, -1)
        feats = (out.double() if out.dtype == torch.float64 else out.float()).cpu().numpy()
        for i, f in zip(ids, feats):
            atomic_save_npy(out_dir / f"{vsegs[i]}_feats.npy", f, clobber=False)  # another rank's: kept
            if paths is not None:
                atomic_write_json(done.record(i), done.source(i))
    return failed
