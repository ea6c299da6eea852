"""The Python API for notebooks and scripts: the same functions the command line calls.

    import moviessl

    bb = moviessl.load("runs/cvrl/model.pt")                  # any moviessl checkpoint, no training code
    txe = moviessl.load("runs/txe/model.pt")
    emb = moviessl.embed_video("my_movie.mp4", bb, txe)       # one event every 2 s
    emb.feats.shape, emb.ctx.shape                             # (events, D) backbone, (events, d) contextualised
    moviessl.evaluate_submission("srl", "runs/srl/seed0/predictions.pkl", "data/vidsitu_annotations")

``load`` returns a :class:`Loaded` (the rebuilt ``nn.Module`` in eval mode, its stage, meta and
config). ``embed_video`` reads the clips exactly as ``moviessl extract`` does (the backbone's own
clip geometry, centre crop, events ``stride_s`` apart) and contextualises them as
``moviessl extract --contextualizer`` does.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import build_from_checkpoint, clip_input, file_hash, load_checkpoint
from .errors import BadInputError


@dataclass
class Loaded:
    """A moviessl checkpoint rebuilt for inference."""

    model: nn.Module
    stage: str  # backbone | context | verb | srl | relation | ...
    meta: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    hash: str | None = None  # of the file as loaded (what feature folders record of their backbone)


@dataclass
class Embedding:
    """Event features of one video."""

    feats: np.ndarray  # (events, D) pooled backbone features
    ctx: np.ndarray | None  # (events, d) TxE outputs, when a contextualizer was given
    centers_s: list[float]  # each event's centre (s)
    fps: float
    duration_s: float
    # (events,) bool: events with a frame that did not decode (a damaged stretch of the file); their
    # rows are zeros and the contextualizer treats them as padding, as ``moviessl extract`` does.
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def load(path: str | os.PathLike, stage: str | tuple[str, ...] | None = None, *, trust: bool = False) -> Loaded:
    """Load any moviessl checkpoint (``model.pt`` of a backbone, TxE or task run) on the CPU.
    ``trust``: a file that could run code when loaded (see :func:`moviessl.checkpoint.load_checkpoint`)
    is loaded, not refused. The caller's random streams are left as they were: the network's random
    initialisation, overwritten by the file's weights, drew from torch's global generator, so a
    notebook's ``torch.manual_seed`` gave other numbers after a load than without one."""
    obj = load_checkpoint(path, stage, trust=trust)
    meta, config = dict(obj.get("meta") or {}), dict(obj.get("config") or {})
    with torch.random.fork_rng(devices=[]):  # moviessl's builders build on the CPU: no CUDA generator is drawn from
        model = build_from_checkpoint(obj, trust=trust)
    return Loaded(model, obj["stage"], meta, config, Path(path), file_hash(path))


def _as_loaded(x: Loaded | str | os.PathLike, stage: str, trust: bool = False) -> Loaded:
    if not isinstance(x, Loaded):
        return load(x, stage, trust=trust)
    if x.stage != stage:  # as load() refuses the file, not a later error about what the model lacks
        raise BadInputError(x.path, f"checkpoint is from stage '{x.stage}', expected {stage}")
    return x


@contextlib.contextmanager
def _lent(module: nn.Module, device: torch.device):
    """``module`` on ``device`` in eval mode for the call, then as the caller had it: its own model,
    left in eval mode, lost its dropout and batch norm in training, and left on a GPU, failed the
    caller's next CPU call on mixed devices."""
    modes = [(m, m.training) for m in module.modules()]
    homes = {n: t.device for n, t in (*module.named_parameters(), *module.named_buffers())}
    try:
        yield module.to(device).eval()
    finally:
        for m, training in modes:
            m.training = training
        if len(set(homes.values())) == 1:
            module.to(next(iter(homes.values())))
        else:  # a module the caller spread over devices goes back tensor by tensor
            for n, t in (*module.named_parameters(), *module.named_buffers()):
                t.data = t.data.to(homes[n])


def _call_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Where a call runs: ``device``, else where the caller put the model if not on the CPU (a
    notebook's model on ``cuda:1`` ran on GPU 0, moved there and back), else the GPU if any."""
    if device is not None:
        return torch.device(device)
    own = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    return own if own.type != "cpu" else torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def embed_video(
    video: str | os.PathLike,
    backbone: Loaded | str | os.PathLike,
    contextualizer: Loaded | str | os.PathLike | None = None,
    *,
    stride_s: float = 2.0,
    batch_events: int = 16,
    device: str | torch.device | None = None,
    trust: bool = False,
    resize: str | None = None,
) -> Embedding:
    """Backbone features of a video's events (one every ``stride_s`` s), and their TxE outputs.
    ``trust``: checkpoints given as paths are loaded as :func:`load` with ``trust``. ``resize``:
    ``crop`` or ``squash``, as ``moviessl extract --resize`` (None: the mode a verb-finetuned
    backbone was tuned with, else crop). ``device``: None runs where the backbone's model is when
    that is not the CPU, else on the GPU if there is one."""
    from .features.extract import (
        backbone_features,
        contextualize,
        contextualizer_geometry,
        event_centers_for,
        event_clip,
        later_events,
        resize_mode,
    )
    from .video import VideoReader

    # the API's own arguments: a batch below 1 ended in range()'s or torch.cat's error, a NaN stride in int()'s
    if isinstance(batch_events, bool) or not isinstance(batch_events, numbers.Integral) or batch_events < 1:
        raise ValueError(f"batch_events must be a positive integer, got {batch_events!r}")
    if isinstance(stride_s, bool) or not isinstance(stride_s, numbers.Real) or not 0 < float(stride_s) < math.inf:
        raise ValueError(f"stride_s must be a positive, finite number of seconds, got {stride_s!r}")
    if resize not in (None, "crop", "squash"):
        raise ValueError(f"resize must be crop, squash or None, got {resize!r}")
    bb = _as_loaded(backbone, "backbone", trust)
    inp = {k: v for k, v in clip_input({"meta": bb.meta}, bb.path or "the backbone").items() if k != "resize"}
    if resize_mode(bb.meta, resize, bb.path or "the backbone", "resize") == "squash":
        inp["resize"] = "squash"
    device = _call_device(bb.model, device)
    with _lent(bb.model, device) as model, VideoReader(video) as r:
        centers = event_centers_for(r.duration_s, stride_s, vidsitu=False)
        parts, missing = [], []
        for i in range(0, len(centers), batch_events):
            batch = range(i, min(i + batch_events, len(centers)))
            got = [event_clip(r, centers[j], inp, later=later_events(centers, j, inp)) for j in batch]
            parts.append(backbone_features(model, torch.from_numpy(np.stack([clip for clip, _ in got])).to(device)))
            missing += [m for _, m in got]
        fps, duration = float(r.fps), float(r.duration_s)
    feats, missing = torch.cat(parts), np.asarray(missing, bool)
    if missing.all():  # as `moviessl extract` marks such a film bad: all-zero features would pass for data
        raise BadInputError(video, f"no event decodes ({len(missing)} events, all damaged)")
    feats[torch.from_numpy(missing).to(feats.device)] = 0
    ctx = None
    if contextualizer is not None:
        # the Loaded's own module, as for the backbone: reading its file again ran whatever a later
        # run had written there since (and failed for a Loaded without a path)
        c = _as_loaded(contextualizer, "context", trust)
        window, step = contextualizer_geometry(c.path, c.meta, feats.shape[1], stride_s, backbone=bb.hash)
        with _lent(c.model, device) as txe:
            ctx = contextualize(txe, feats, window, step, missing=missing).float().cpu().numpy()
    return Embedding(feats.cpu().numpy(), ctx, list(centers), fps, duration, missing)


def evaluate_submission(
    task: str,
    pred: str | os.PathLike,
    data_root: str | os.PathLike,
    split: str = "valid",
    split_file: str | os.PathLike | None = None,
    details: bool = False,
) -> dict[str, float]:
    """VidSitu's official metrics (percent) of a submission file (``moviessl evaluate vidsitu``)."""
    from .eval.vidsitu import evaluate_files

    return evaluate_files(task, pred, data_root, split=split, split_file=split_file, details=details)
