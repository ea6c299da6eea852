"""Evaluate a frozen backbone on labelled clips: linear probe and k-NN (CVRL's protocol, small), each
scored top-1 and top-5 (Kinetics' probes are reported as both).

Features: the pooled Slow-D output of ``num_clips`` evenly spaced centre-cropped clips per video,
averaged, then **L2-normalised** (CVRL's linear eval). Linear probe: multinomial logistic regression
on the training features, full batch, L-BFGS for ``max_iter`` iterations, no weight decay by default
(CVRL's linear eval uses none; on L2-normalised features even 1e-4 over-regularises, docs/design.md);
no learning rate to tune. k-NN: cosine similarity to the training features, the k nearest vote with
weights exp(sim / 0.07) (the weighted k-NN of Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination", which used k = 200; the presets' k = 20 is DINO's, Caron et
al. 2021, for small training sets). Settings:
the ``probe`` block of the backbone config (:class:`moviessl.ssl.config.ProbeConfig`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import build_from_checkpoint, load_checkpoint
from ..config import to_dict
from ..data.cliplist import check_labelled, check_same_label_map, missing_clips, read_clip_list
from ..errors import BadInputError
from ..training import keeps_random_streams
from ..video import MEAN, STD
from ..video.transforms import param_dtype
from .clipcache import FrameCache, default_cache_dir
from .config import ProbeConfig
from .data import ClipDataset

log = logging.getLogger("moviessl")


KNN_ROWS = 1024  # val features per k-NN similarity block (x 240k train features = 1 GB for K400)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    items: Sequence[tuple[Path, int | None]],
    input_meta: Mapping[str, Any],
    *,
    num_clips: int = 1,
    batch_size: int = 16,
    frame_cache=None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "features",
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """(features (N, D) L2-normalised float32, labels (N,) int64 (-1 if none), bad {path: error}).
    ``num_workers``: DataLoader processes decoding the clips (the paper preset's ``data.num_workers``;
    the clips are the same, in the same order, with any number)."""
    from ..utils.progress import bar as tqdm

    ds = ClipDataset(
        items,
        "eval",
        num_frames=int(input_meta["num_frames"]),
        stride=int(input_meta["stride"]),
        short_side=int(input_meta["short_side"]),
        frame_cache=frame_cache,
        eval_clips=num_clips,
    )
    ds.prepare(progress=progress, num_workers=int(num_workers))
    if len(ds) == 0:
        return np.zeros((0, getattr(model, "out_dim", 0)), np.float32), np.zeros(0, np.int64), ds.bad
    crop = int(input_meta["crop"])
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1, 1)
    model = model.to(device).eval()
    # the weights' dtype: a run trained at 64-true holds float64 ones (Lightning leaves them so)
    dtype = param_dtype(model) or torch.float32
    feats, labels, seen, skipped = [], [], [], set()
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=int(num_workers))
    # iter(dl): tqdm.auto's class calls iter() on what it is given and then iterates it again, which
    # for a DataLoader starts a second set of workers (the first set's prefetched batches wasted)
    for batch in tqdm(iter(dl), total=len(dl), desc=desc, disable=not progress, leave=False):
        v = batch["video"].to(device)  # (B, V, 3, T, S, S) uint8
        b, nv = v.shape[:2]
        x = v.flatten(0, 1).float().div_(255.0)
        s = x.shape[-1]
        if crop < s:  # centre crop inside the square
            o = (s - crop) // 2
            x = x[..., o : o + crop, o : o + crop]
        elif crop > s:
            x = F.interpolate(x.flatten(1, 2), size=(crop, crop), mode="bilinear", align_corners=False).view(
                x.shape[0], 3, -1, crop, crop
            )
        f = model(((x - mean) / std).to(dtype)).float().view(b, nv, -1).mean(1)
        feats.append(F.normalize(f, dim=1).cpu())
        labels.append(batch["label"])
        seen.append(batch["index"])
        skipped.update(int(j) for j in batch["skipped"].flatten().tolist() if j >= 0)
    feats_t, labels_t, idx = torch.cat(feats), torch.cat(labels), torch.cat(seen)
    # a bad video is replaced by the next good one inside a batch slot; keep each video once
    _, first = np.unique(idx.numpy(), return_index=True)
    # a loader worker's list of bad videos stays in that process: the batches say which were skipped
    bad = dict(ds.bad)
    for j in sorted(skipped):
        bad.setdefault(str(ds.items[j][0]), "unreadable (skipped; its error is in the log)")
    return feats_t.numpy()[first], labels_t.numpy()[first], bad


def linear_probe(
    xtr: np.ndarray,
    ytr: np.ndarray,
    xva: np.ndarray,
    yva: np.ndarray,
    num_classes: int,
    weight_decay: float = 0.0,
    max_iter: int = 300,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> float:
    """The top-1 accuracy (%) of :func:`linear_probe_topk` (the one fit; kept for callers that
    want top-1 alone)."""
    return linear_probe_topk(xtr, ytr, xva, yva, num_classes, weight_decay, max_iter, seed, device)[0]


def linear_probe_topk(
    xtr: np.ndarray,
    ytr: np.ndarray,
    xva: np.ndarray,
    yva: np.ndarray,
    num_classes: int,
    weight_decay: float = 0.0,
    max_iter: int = 300,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """(top-1, top-5) accuracy (%) of logistic regression fitted once on (xtr, ytr), evaluated on
    (xva, yva), on ``device`` (full-batch L-BFGS over K400's 240k x 2048 features is minutes on a
    GPU, far more on a CPU); the initial weights are drawn on the CPU, so every device starts from
    the same ones. Kinetics' linear probes are reported as both (the top-5 of fewer than 5 classes
    is 100)."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(xtr).float().to(device), torch.from_numpy(ytr).long().to(device)
    # made on the CPU, not torch's default device: a user's set_default_device("cuda") put the layer
    # on the GPU, whose normal_ refused the CPU generator
    lin = nn.Linear(x.shape[1], num_classes, device="cpu")
    with torch.no_grad():
        lin.weight.normal_(0, 0.01, generator=g)
        lin.bias.zero_()
    lin = lin.to(device)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y) + 0.5 * weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        logits = lin(torch.from_numpy(xva).float().to(device)).cpu()
    pred = logits.argmax(1).numpy()  # top-1 by argmax, as it always was (topk may break a tie otherwise)
    top5 = logits.topk(min(5, num_classes), dim=1).indices.numpy()
    return float((pred == yva).mean() * 100.0), float((top5 == yva[:, None]).any(1).mean() * 100.0)


def knn_accuracy(
    xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray, num_classes: int, k: int = 20, t: float = 0.07
) -> float:
    """The top-1 accuracy (%) of :func:`knn_accuracy_topk` (the one vote; kept for callers that
    want top-1 alone)."""
    return knn_accuracy_topk(xtr, ytr, xva, yva, num_classes, k, t)[0]


def knn_accuracy_topk(
    xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray, num_classes: int, k: int = 20, t: float = 0.07
) -> tuple[float, float]:
    """(top-1, top-5) accuracy (%) of a weighted k-NN vote with cosine similarity (features already
    L2-normalised). Val rows go ``KNN_ROWS`` at a time: K400's whole similarity matrix (20k val x
    240k train) is 19 GB. A class no neighbour voted for is no top-5 guess: with k = 20 fewer than 5
    classes often get a vote, and which of the unvoted ones ``topk`` picks is arbitrary."""
    k = max(1, min(int(k), len(xtr)))
    train, labels = torch.from_numpy(xtr).float().t(), torch.from_numpy(ytr).long()
    pred, hit5 = [], []
    for a in range(0, len(xva), KNN_ROWS):
        top, idx = (torch.from_numpy(xva[a : a + KNN_ROWS]).float() @ train).topk(k, dim=1)
        votes = torch.zeros(len(top), num_classes, device=top.device)  # not torch's default device
        votes.scatter_add_(1, labels[idx], (top / t).exp())
        pred.append(votes.argmax(1))
        y = torch.from_numpy(yva[a : a + KNN_ROWS]).long()
        best = votes.topk(min(5, num_classes), dim=1).indices
        hit5.append((best == y[:, None]).any(1) & (votes.gather(1, y[:, None]).squeeze(1) > 0))
    top1 = float((torch.cat(pred).numpy() == yva).mean() * 100.0)
    return top1, float(torch.cat(hit5).double().mean().item() * 100.0)


def probe_features(xtr, ytr, xva, yva, cfg: ProbeConfig, device: str | torch.device = "cpu") -> dict[str, Any]:
    if len(xtr) == 0 or len(xva) == 0:
        raise BadInputError(None, "linear probe needs labelled training and validation videos (none usable)")
    if (ytr < 0).any() or (yva < 0).any():
        raise BadInputError(None, "linear probe needs labels on every line of the train and val clip lists")
    # label ids need not be dense (some of Kinetics' classes, a stray id): one class per id that occurs,
    # in id order (the same numbering when the ids are 0..K-1), not max + 1 (an id of 10^11 asked for a
    # classifier of hundreds of TB and ended in a traceback)
    classes = np.unique(np.concatenate([ytr, yva]))
    ytr, yva = np.searchsorted(classes, ytr), np.searchsorted(classes, yva)
    num_classes = len(classes)
    lin1, lin5 = linear_probe_topk(xtr, ytr, xva, yva, num_classes, cfg.weight_decay, cfg.max_iter, cfg.seed, device)
    knn1, knn5 = knn_accuracy_topk(xtr, ytr, xva, yva, num_classes, cfg.knn_k, cfg.knn_t)
    return {
        "linear_top1": round(lin1, 3),
        "linear_top5": round(lin5, 3),
        "knn_top1": round(knn1, 3),
        "knn_top5": round(knn5, 3),
        "knn_k": int(min(cfg.knn_k, len(xtr))),
        "num_train": int(len(xtr)),
        "num_val": int(len(xva)),
        "num_classes": num_classes,
    }


def per_class(items: Sequence[tuple[Path, int | None]], n: int) -> list[tuple[Path, int | None]]:
    """At most ``n`` items of each label, evenly spaced through that label's items; list order kept."""
    rows: dict[Any, list[int]] = {}
    for i, (_, y) in enumerate(items):
        rows.setdefault(y, []).append(i)
    keep = []
    for r in rows.values():
        keep += [r[int(k)] for k in np.linspace(0, len(r) - 1, n).round()] if len(r) > n else r
    return [items[i] for i in sorted(keep)]


def probe_model(
    model: nn.Module,
    input_meta: Mapping[str, Any],
    train_items,
    val_items,
    cfg: ProbeConfig,
    *,
    frame_cache=None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Linear probe + k-NN of a backbone module on two labelled item lists (each cut to
    ``cfg.max_per_class`` videos per class when set)."""
    if cfg.max_per_class is not None:
        train_items, val_items = (per_class(items, int(cfg.max_per_class)) for items in (train_items, val_items))
    kw = dict(
        num_clips=cfg.num_clips,
        batch_size=cfg.batch_size,
        frame_cache=frame_cache,
        device=device,
        progress=progress,
        num_workers=num_workers,
    )
    xtr, ytr, bad_tr = extract_features(model, train_items, input_meta, desc="probe: train features", **kw)
    xva, yva, bad_va = extract_features(model, val_items, input_meta, desc="probe: val features", **kw)
    out = probe_features(xtr, ytr, xva, yva, cfg, device=device)
    out.update(skipped_train=len(bad_tr), skipped_val=len(bad_va), num_clips=cfg.num_clips)
    out["probe_config"] = to_dict(cfg)  # what the scores depend on beside the model and the clip lists
    return out


@keeps_random_streams  # as extract: the backbone's build and the loaders' passes drew from torch's global generator
def probe_checkpoint(
    ckpt: str | os.PathLike,
    train_csv: str | os.PathLike,
    val_csv: str | os.PathLike,
    cfg: ProbeConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    device: str | None = None,
    progress: bool = True,
    num_workers: int = 0,
) -> dict[str, Any]:
    """``moviessl probe-backbone``: load a ``backbone`` checkpoint and probe it."""
    obj = load_checkpoint(ckpt, stage="backbone")
    meta = obj.get("meta", {})
    if "input" not in meta:
        raise BadInputError(ckpt, "backbone checkpoint has no meta.input (num_frames, stride, short_side, crop)")
    lists = [(read_clip_list(p), p) for p in (train_csv, val_csv)]
    for items, p in lists:  # before any video is decoded
        check_labelled(items, p, "the linear probe")
    check_same_label_map(train_csv, val_csv)
    model = build_from_checkpoint(obj)
    cache = None
    if use_cache and cache_dir is None:
        try:
            cache_dir = default_cache_dir(train_csv)
        except OSError as e:
            # a released data set mounted read-only: a probe has no run folder to fall back to (as
            # pretrain-backbone has), and decoding on the fly is what the paper preset does anyway
            log.warning(
                "%s: no frame cache (%s); decoding the probe's clips on the fly (--cache-dir DIR caches them)",
                e.filename or Path(train_csv).parent,
                e.strerror or e,
            )
            use_cache = False
    if use_cache:
        cache = FrameCache(cache_dir, int(meta["input"]["short_side"]))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = probe_model(
        model,
        meta["input"],
        lists[0][0],
        lists[1][0],
        cfg,
        frame_cache=cache,
        device=device,
        progress=progress,
        num_workers=num_workers,
    )
    out.update(checkpoint=str(ckpt), method=meta.get("method"))
    out.update(data=str(Path(train_csv).resolve()), val=str(Path(val_csv).resolve()))
    # the rows of a Kinetics CSV the download lacks: how much of the data set the scores stand on
    out["missing_videos"] = {"data": missing_clips(lists[0][0]), "val": missing_clips(lists[1][0])}
    return out
