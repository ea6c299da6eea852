"""60-second spans of a video as Object Transformer tokens (LVU's ``VideoDataset.construct_example``,
``chaoyuaw/lvu`` ``src/run.py``), with OT++'s scene tokens beside the instance tokens.

A :class:`SpanVideo` holds what the OT may see of one video: its instances (per-second boxes with
shot / track ids and RoI features, :class:`moviessl.data.lvu.VideoInstances`) and/or its scene
features (one per event, at the event's second). :func:`span_tails` lists the spans LVU scores
(ending at every second, the first one ``span_s`` seconds after the first token), and
:func:`span_tokens` turns one span into token arrays:

- instance tokens are taken second by second from the span's end backwards, at most
  ``max_instances`` (LVU's 254), each with the ids LVU gives it: time in seconds increasing from
  the earliest token, decreasing from the latest, and centred on the span's middle (offset by half
  the table); the shot id in the same three forms (centred on the shot of the token nearest the
  middle); the track id, randomly permuted per example during training (identity only);
- the box (x1, y1, x2, y2, area) is jittered by up to ``box_jitter`` of its size in training;
- scene tokens (one per event whose second lies in the span) share the time ids, get the whole
  frame as box and "not applicable" shot / link ids.

The datasets below sample spans as LVU does: :class:`RandomSpans` (training: a uniformly random
span among all spans of all videos; "epochs" = ``#videos x epochs`` items, LVU's definition),
:class:`EvalSpans` (every span of every video, for span-summed scoring) and :class:`SpanPairs`
(masked-instance pretraining: two random spans of one random video, LVU's ``--same_movie``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.lvu import VideoInstances
from ..models.object_transformer import END, ID_END, ID_NONE, ID_OFFSET, ID_START, INSTANCE, SCENE, START

log = logging.getLogger("moviessl.context")

FULL_FRAME = np.array([0.0, 0.0, 1.0, 1.0, 1.0], np.float32)


@dataclass
class SpanVideo:
    """One video's OT inputs: ``inst`` (instances with features) and/or ``scene`` (E, Ds) features
    (an array or :class:`~moviessl.features.instances.LazyFeatures`) of events at seconds ``scene_sec`` (E,)."""

    vid: str
    inst: VideoInstances | None = None
    scene: np.ndarray | None = None
    scene_sec: np.ndarray | None = None

    def token_seconds(self) -> np.ndarray:
        parts = []
        if self.inst is not None and len(self.inst):
            parts.append(self.inst.sec)
        if self.scene is not None and len(self.scene):
            parts.append(self.scene_sec)
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def input_stats(
    videos: Sequence[SpanVideo],
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """Per-dimension ``(mean, var)`` of all instance features and of all scene features of
    ``videos`` (None for a pathway they lack), for :meth:`ObjectTransformer.set_input_stats`.
    Accumulated video by video in float64 (Chan et al.'s pairwise update), so LVU-sized inputs are
    never concatenated."""
    inst = (v.inst.feat for v in videos if v.inst is not None and v.inst.feat is not None and len(v.inst))
    scene = (v.scene for v in videos if v.scene is not None and len(v.scene))
    return _moments(inst), _moments(scene)


def _moments(arrays) -> tuple[torch.Tensor, torch.Tensor] | None:
    n, mean, m2 = 0, None, None
    for a in arrays:
        a = np.asarray(a, np.float64).reshape(-1, np.shape(a)[-1])
        k, mu = len(a), a.mean(0)
        d2 = ((a - mu) ** 2).sum(0)
        if mean is None:
            n, mean, m2 = k, mu, d2
            continue
        delta, total = mu - mean, n + k
        mean = mean + delta * (k / total)
        m2 = m2 + d2 + delta**2 * (n * k / total)
        n = total
    if mean is None:
        return None
    return torch.from_numpy(mean).float(), torch.from_numpy(m2 / n).float()


def event_seconds(num_events: int, stride_s: float = 2.0) -> np.ndarray:
    """The second each event token sits at: floor of the event centre ``stride * (k + 0.5)``."""
    return np.floor(stride_s * (np.arange(num_events) + 0.5)).astype(np.int64)


def span_tails(video: SpanVideo, span_s: int = 60) -> list[int]:
    """LVU's evaluation spans: the last second of every ``span_s``-second span that ends at each
    second from (first token second + span_s - 1) to the last token second and holds a token; a
    video shorter than that gets one span ending at its last token second. Empty video: []."""
    secs = video.token_seconds()
    if len(secs) == 0:
        return []
    first, hi = int(secs[0]) + span_s - 1, int(secs[-1])
    # a span ending at t holds a token iff a token second lies in [t - span_s + 1, t]: the union of
    # [s, s + span_s - 1] over the token seconds s, cut to [first, hi] -- work and memory by the
    # tokens, not by the last second (a second stamped 10**12 by a malformed track asked for TBs)
    tails: list[int] = []
    for s in secs.tolist():
        a, b = max(int(s), first, tails[-1] + 1 if tails else first), min(int(s) + span_s - 1, hi)
        tails.extend(range(a, b + 1))
    return tails or [hi]


def span_tokens(
    video: SpanVideo,
    tail: int,
    span_s: int = 60,
    max_instances: int = 254,
    halfway: int = 129,
    train: bool = False,
    box_jitter: float = 0.2,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Token arrays of the span ``(tail - span_s, tail]`` (LVU's ``construct_example``), start and
    end tokens included. Keys: ``kind, pos (L,3), shot (L,3), link, box (L,5)``, ``inst (L,Di)`` /
    ``scene (L,Ds)`` for the pathways the video has."""
    rng = rng if rng is not None else np.random.default_rng()
    lo = tail - span_s + 1
    inst = video.inst
    if inst is not None and len(inst):
        sel = np.nonzero((inst.sec >= lo) & (inst.sec <= tail))[0]
        # from the span's end backwards, each second's boxes in their stored order
        sel = sel[np.lexsort((sel, -inst.sec[sel]))][:max_instances]
    else:
        sel = np.zeros(0, np.int64)
    if video.scene is not None:
        ev = np.nonzero((video.scene_sec >= lo) & (video.scene_sec <= tail))[0]
    else:
        ev = np.zeros(0, np.int64)
    n_i, n_s = len(sel), len(ev)
    # int64 throughout: an empty list beside the seconds made them float64, and past 2**53 (the
    # readers take seconds up to 2**62) two seconds of a span became one
    none = np.zeros(0, np.int64)
    secs = np.concatenate([inst.sec[sel] if n_i else none, video.scene_sec[ev] if n_s else none]).astype(np.int64)
    L = n_i + n_s + 2
    kind = np.full(L, INSTANCE, np.int64)
    kind[0], kind[-1] = START, END
    kind[1 + n_i : 1 + n_i + n_s] = SCENE
    pos = np.empty((L, 3), np.int64)
    shot = np.full((L, 3), ID_NONE, np.int64)
    link = np.full(L, ID_NONE, np.int64)
    box = np.zeros((L, 5), np.float32)
    for a in (pos, shot):
        a[0], a[-1] = ID_START, ID_END
    link[0], link[-1] = ID_START, ID_END
    if len(secs):
        smin, smax = int(secs.min()), int(secs.max())
        center = (smin + smax) // 2
        body = slice(1, L - 1)
        pos[body, 0] = secs - smin
        pos[body, 1] = smax - secs
        pos[body, 2] = np.maximum(0, secs - center + halfway)
        pos[body] += ID_OFFSET
    if n_i:
        isec, ishot = inst.sec[sel], inst.shot[sel]
        dist = np.abs(isec - (int(secs.min()) + int(secs.max())) // 2)
        center_shot = int(ishot[np.nonzero(dist == dist.min())[0][-1]])  # LVU keeps the last of the nearest
        ib = slice(1, 1 + n_i)
        shot[ib, 0] = ishot - ishot.min() + ID_OFFSET
        shot[ib, 1] = ishot.max() - ishot + ID_OFFSET
        shot[ib, 2] = np.maximum(0, ishot - center_shot + halfway) + ID_OFFSET
        tracks = inst.track[sel]
        uniq = list(dict.fromkeys(tracks.tolist()))  # first appearance order
        perm = rng.permutation(len(uniq)) if train else np.arange(len(uniq))
        lut = {t: int(p) for t, p in zip(uniq, perm)}
        link[ib] = np.array([lut[t] for t in tracks.tolist()], np.int64) + ID_OFFSET
        b = inst.box[sel].astype(np.float32).copy()
        if train and box_jitter > 0:
            wh = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
            b += np.tile(wh * box_jitter, 2) * rng.uniform(-1.0, 1.0, size=b.shape).astype(np.float32)
        box[ib, :4] = b
        box[ib, 4] = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    out = {"kind": kind, "pos": pos, "shot": shot, "link": link, "box": box}
    if inst is not None and inst.feat is not None:
        f = np.zeros((L, inst.feat.shape[1]), np.float32)
        if n_i:
            f[1 : 1 + n_i] = inst.feat[sel]
        out["inst"] = f
    if video.scene is not None:
        s = np.zeros((L, video.scene.shape[1]), np.float32)
        if n_s:
            s[1 + n_i : 1 + n_i + n_s] = video.scene[ev]
            box[1 + n_i : 1 + n_i + n_s] = FULL_FRAME
        out["scene"] = s
    return out


def collate_tokens(items: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Right-pad token arrays to the longest span (kind / ids 0 = padding) -> batched tensors."""
    L = max(len(t["kind"]) for t in items)
    out: dict[str, torch.Tensor] = {}
    for key in items[0]:
        first = items[0][key]
        arr = np.zeros((len(items), L) + first.shape[1:], first.dtype)
        for i, t in enumerate(items):
            arr[i, : len(t[key])] = t[key]
        out[key] = torch.from_numpy(arr)
    return out


def collate_spans(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Items ``{"x": tokens, "y"?: label, "i"?: index}`` -> ``{"x": batched tokens, "y", "i"}``.
    Pair items (``"x2"``, :class:`SpanPairs`) are stacked as [all first spans, all second spans]."""
    xs = [it["x"] for it in items] + [it["x2"] for it in items if "x2" in it]
    out: dict[str, Any] = {"x": collate_tokens(xs)}
    for key in ("y", "i"):
        if key in items[0]:
            # on the CPU, as the tokens' (from_numpy): as_tensor alone put them on torch's default
            # device (a user's set_default_device("cuda"), which a forked loader worker inherits)
            out[key] = torch.as_tensor(np.array([it[key] for it in items]), device="cpu")
    return out


class _Spans(Dataset):
    def __init__(self, videos: Sequence[SpanVideo], span_s: int, max_instances: int, halfway: int, box_jitter: float):
        self.videos = list(videos)
        self.span_s, self.max_instances, self.halfway, self.box_jitter = span_s, max_instances, halfway, box_jitter
        self.tails = [span_tails(v, span_s) for v in self.videos]

    def tokens(self, j: int, tail: int, train: bool, rng=None) -> dict[str, np.ndarray]:
        return span_tokens(
            self.videos[j], tail, self.span_s, self.max_instances, self.halfway, train, self.box_jitter, rng
        )


class RandomSpans(_Spans):
    """Training items: a uniformly random span among all spans of all videos (LVU's
    ``random.choice(self.spans)``: longer videos are seen more often), ``length`` items per epoch
    (LVU: #videos x epochs, one pass). Randomness comes from numpy's global stream, which Lightning
    seeds per run and per DataLoader worker."""

    def __init__(
        self,
        videos: Sequence[SpanVideo],
        labels: Sequence[float] | None,
        length: int,
        span_s: int = 60,
        max_instances: int = 254,
        halfway: int = 129,
        box_jitter: float = 0.2,
    ):
        super().__init__(videos, span_s, max_instances, halfway, box_jitter)
        self.labels, self.length = labels, int(length)
        self.all = [(j, t) for j, ts in enumerate(self.tails) for t in ts]
        if not self.all:
            raise ValueError("no spans: the videos have no tokens")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        j, tail = self.all[np.random.randint(len(self.all))]
        item: dict[str, Any] = {"x": self.tokens(j, tail, True, rng)}
        if self.labels is not None:
            item["y"] = self.labels[j]
        return item


class EvalSpans(_Spans):
    """Every span of every video, in order; ``i`` = the video's index."""

    def __init__(self, videos: Sequence[SpanVideo], span_s: int = 60, max_instances: int = 254, halfway: int = 129):
        super().__init__(videos, span_s, max_instances, halfway, 0.0)
        self.all = [(j, t) for j, ts in enumerate(self.tails) for t in ts]

    def __len__(self) -> int:
        return len(self.all)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j, tail = self.all[i]
        return {"x": self.tokens(j, tail, False), "i": j}


class SpanPairs(_Spans):
    """Masked-instance pretraining items: a uniformly random video, two random spans of it (LVU's
    ``--same_movie``: the positive pair of the span-compatibility loss); ``length`` = the number
    of spans (one epoch = as many pairs as there are spans).

    As LVU's ``VideoDataset`` with ``--same_movie``, only complete spans are drawn: a video shorter
    than one span has none and is left out (fine-tuning gives it one short span, :func:`span_tails`),
    since its only "pair" would be one span with itself. When no video is that long (tiny test
    films), every video is kept, with a warning."""

    def __init__(
        self,
        videos: Sequence[SpanVideo],
        span_s: int = 60,
        max_instances: int = 254,
        halfway: int = 129,
        box_jitter: float = 0.2,
        length: int | None = None,
    ):
        super().__init__(videos, span_s, max_instances, halfway, box_jitter)
        keep = [j for j, ts in enumerate(self.tails) if ts]
        if not keep:
            raise ValueError("no spans: the videos have no tokens")
        full = [j for j in keep if self.tails[j][0] >= int(self.videos[j].token_seconds()[0]) + span_s - 1]
        if not full:
            log.warning("no video is %d s long (one span): pairs are drawn from the short spans", span_s)
        elif len(full) < len(keep):
            n_short = len(keep) - len(full)
            log.info("%d of %d videos are shorter than one %d-s span: left out", n_short, len(keep), span_s)
        self.keep = keep = full or keep
        self.length = int(length) if length is not None else sum(len(self.tails[j]) for j in keep)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        j = self.keep[np.random.randint(len(self.keep))]
        ts = self.tails[j]
        a, b = (ts[np.random.randint(len(ts))] for _ in range(2))
        return {"x": self.tokens(j, a, True, rng), "x2": self.tokens(j, b, True, rng)}
