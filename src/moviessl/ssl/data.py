"""Clips for backbone pretraining: the clip dataset and the two positive-pair samplers.

Data: a clip list (``path label`` or ``path``) read by :func:`moviessl.data.cliplist.read_clip_list`.
The dataset returns uint8 clips ``(V, 3, T, S, S)`` (V views, S the short side: a random square crop
of the short-side-resized frames in training, the centre square in evaluation), so batches collate
whatever the videos' aspect ratios; the random resized crop / colour / blur / solarise augmentation
runs batched after transfer (:mod:`.augment`). With ``crop_boxes`` the dataset draws the random
resized crop itself, on the whole frame as CVRL (Qian et al. 2021, §3.2) and torchvision do, and
returns ``(V, 3, T, crop, crop)`` clips (flow clips cropped by the same box when aligned): a crop of a
16:9 frame may then span its full width, which one cut from a square never does. Clip times live on
the 30-fps timeline (:mod:`moviessl.video.timeline`).

Pair samplers (start frames of a video's two clips, in random order):

- ``cvrl``: CVRL's decreasing start-gap density (Qian et al., CVPR 2021, §3.1; the official code's
  ``video_ssl_preprocess_ops``, ``tensorflow/models/official/projects/video_ssl``);
- ``shift``: MoDist's uniform start-to-start shift of 0.5-10 s (MaCLR release config,
  ``amazon-science/self-supervised-maclr``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import BadInputError
from ..utils.io import sweep_temp_files
from ..video.augment import random_resized_boxes
from ..video.timeline import TARGET_FPS, clip_timeline, timeline_length, timeline_to_native
from .clipcache import LiveSource

log = logging.getLogger("moviessl")

MAX_SKIPS = 8  # bad items one __getitem__ may step over before giving up on the batch slot
# Frame and flow sources a dataset keeps per process, least recently used dropped first. A source
# holds a video's rate, frame count and (at a variable rate) every frame's time; kept for every
# video, each persistent loader worker of a week-long run would hold one for every video it draws,
# its memory growing with the steps up to the whole clip list (Kinetics' 240k videos, in each of a
# GPU's workers). Making one again is a cache entry's JSON, or a container open: the video's index
# is remembered (video.reader's INDEX_MEMO_FRAMES), and where it is not, the clip's own reader would
# have indexed the file anyway and now finds it remembered.
KEPT_SOURCES = 1024


def cvrl_gap(m: int, u: float, power: float = 1.0) -> int:
    """Start-to-start gap in [0, m] by inverse CDF of f(k) = (p+1)/(p m) (1 - (k/m)^p).

    p = 1 has the closed form ``m (1 - sqrt(1 - u))`` (mean m/3); other powers bisect
    F(k) = -k^(p+1)/(p m^(p+1)) + k (p+1)/(p m) = u to under one frame, as the reference does."""
    if m <= 0:
        return 0
    if power == 1.0:
        return int(np.floor(m * (1.0 - np.sqrt(1.0 - u))))
    p = float(power)

    def cdf(k: float) -> float:
        return -(k ** (p + 1)) / (p * m ** (p + 1)) + k * (p + 1) / (p * m)

    lo, hi = 0.0, float(m)
    while hi - lo > 1.0:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < u else (lo, mid)
    return int(np.floor(lo))


def sample_cvrl_starts(
    total: int, num_frames: int, stride: int, power: float = 1.0, rng: np.random.Generator | None = None
) -> tuple[int, int, bool]:
    """Start frames of CVRL's two clips on a ``total``-frame timeline, in random order.

    Returns ``(start_a, start_b, wrap)``; starts lie in ``[0, M)``, ``M = total - (n-1) s``; when the video
    is shorter than one clip (``total <= (n-1) s``) both starts are independent uniform draws and
    ``wrap`` tells the caller to tile the video (indices modulo ``total``)."""
    rng = rng if rng is not None else np.random.default_rng()
    span = (num_frames - 1) * stride
    if total <= span:
        return int(rng.integers(0, total)), int(rng.integers(0, total)), True
    m = total - span
    gap = cvrl_gap(m, float(rng.random()), power)
    first = int(rng.integers(0, m - gap)) if m - gap > 0 else 0
    a, b = first, first + gap
    if rng.random() < 0.5:
        a, b = b, a
    return a, b, False


def sample_shift_starts(
    total: int, num_frames: int, stride: int, shift_s: Sequence[float], rng: np.random.Generator
) -> tuple[int, int, bool]:
    """MoDist's pair: start-to-start shift uniform in ``shift_s`` seconds, bounded by what the video
    allows; ``(start_a, start_b, wrap)`` in random order, as :func:`sample_cvrl_starts`."""
    m = total - (num_frames - 1) * stride
    if m <= 0:
        return int(rng.integers(0, total)), int(rng.integers(0, total)), True
    lo, hi = (s * TARGET_FPS for s in shift_s)
    hi = min(hi, m - 1)
    # whole frames lo..hi, both ends (flooring a draw from [lo, hi) never reached hi, the last start when
    # the video is shorter than the largest shift)
    gap = min(int(rng.uniform(lo, hi + 1)), int(hi)) if hi > lo else int(rng.integers(0, max(1, m)))
    first = int(rng.integers(0, max(1, m - gap)))
    a, b = first, first + gap
    if rng.random() < 0.5:
        a, b = b, a
    return a, b, False


class ClipDataset(Dataset):
    """Clips of the videos of a clip list.

    ``mode``: ``pair`` (two clips per video, starts from ``pair_sampler``: ``cvrl`` or ``shift``),
    ``single`` (one random clip, supervised training) or ``eval`` (``eval_clips`` evenly spaced
    clips, centre crop). With a ``flow_cache``, each clip also gets its flow clip (``flow``).

    ``crop_boxes`` (training modes): ``{"size", "area", "aspect", "sampler", "attempts", "flow_size",
    "align"}``
    -- each clip is a random resized crop of its whole frames (``area`` of the frame, ``aspect``, drawn
    by ``sampler``: :func:`moviessl.video.augment.random_resized_boxes`) resized to ``size``; its flow
    clip gets the same box (``align``) or its own, resized to ``flow_size``. Flip, colour and blur stay
    batched after transfer.

    Bad videos are skipped: with the frame cache they are found while the cache is built
    (:meth:`prepare`, counted in ``self.bad``); without it, ``__getitem__`` steps to the next video
    and reports the skipped indices in the item's ``skipped`` field so the training module can count
    them (workers are separate processes).
    """

    def __init__(
        self,
        items: Sequence[tuple[Path, int | None]],
        mode: str = "pair",
        *,
        num_frames: int = 16,
        stride: int = 4,
        short_side: int = 64,
        frame_cache=None,
        flow_cache=None,
        flow_frames: int = 16,
        flow_stride: int = 4,
        pair_sampler: str = "cvrl",
        power: float = 1.0,
        shift_s: Sequence[float] = (0.5, 10.0),
        eval_clips: int = 1,
        random_crop: bool | None = None,
        crop_boxes: dict[str, Any] | None = None,
    ):
        if mode not in ("pair", "single", "eval"):
            raise ValueError(f"unknown mode {mode!r}")
        if pair_sampler not in ("cvrl", "shift"):
            raise BadInputError("data.pair_sampler", f"unknown sampler {pair_sampler!r} (cvrl|shift)")
        self.items = [(Path(p), (-1 if y is None else int(y))) for p, y in items]
        self.mode, self.num_frames, self.stride, self.short_side = mode, int(num_frames), int(stride), int(short_side)
        self.frame_cache, self.flow_cache = frame_cache, flow_cache
        self.flow_frames, self.flow_stride = int(flow_frames), int(flow_stride)
        self.pair_sampler, self.power, self.shift_s = pair_sampler, float(power), tuple(float(s) for s in shift_s)
        self.eval_clips = int(eval_clips)
        self.random_crop = (mode != "eval") if random_crop is None else bool(random_crop)
        self.crop_boxes = dict(crop_boxes) if crop_boxes is not None and mode != "eval" else None
        self.bad: dict[str, str] = {}  # path -> cause, logged once each
        self._sources: OrderedDict[int, Any] = OrderedDict()  # at most KEPT_SOURCES of each
        self._flows: OrderedDict[int, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    # -- sources ------------------------------------------------------------------------------
    def _mark_bad(self, i: int, err: BadInputError) -> None:
        key = str(self.items[i][0])
        if key not in self.bad:
            self.bad[key] = str(err)
            log.warning("skipping bad video: %s", err)

    @staticmethod
    def _keep(kept: OrderedDict, i: int, src) -> None:
        kept[i] = src
        while len(kept) > KEPT_SOURCES:
            kept.popitem(last=False)

    def _source(self, i: int):
        src = self._sources.get(i)
        if src is None:
            path = self.items[i][0]
            src = self.frame_cache.source(path) if self.frame_cache is not None else LiveSource(path, self.short_side)
            self._keep(self._sources, i, src)
        else:
            self._sources.move_to_end(i)
        return src

    def _flow(self, i: int):
        fl = self._flows.get(i)
        if fl is None:
            src = self._source(i)
            fl = self.flow_cache.source(self.items[i][0], src)
            if fl.num_frames != src.num_frames:
                raise BadInputError(self.items[i][0], f"flow cache has {fl.num_frames} frames, video {src.num_frames}")
            self._keep(self._flows, i, fl)
        else:
            self._flows.move_to_end(i)
        return fl

    def prepare(self, progress: bool = True, num_workers: int = 0) -> "ClipDataset":
        """Decode (and compute flow for) every video once, dropping the bad ones. Only with a cache.

        Every rank of a multi-process launch (torchrun, srun) visits every video, so all agree on the
        list, but each starts at its own share of it (:func:`rotated_order`): rank r builds the
        videos from r/world of the list on while the others build theirs, and meets them already
        cached when it gets there, so a cold cache is built about once over the job, not once per rank.
        ``num_workers`` > 0: a cold cache is built by that many loader processes first, in the same
        order (decoding and optical flow are per-video work; one process at a time would leave a
        GPU node's other cores idle for hours at Kinetics' size), then checked here as a warm one."""
        if self.frame_cache is None and self.flow_cache is None:
            return self
        from ..dist import launch_rank, rotated_order
        from ..utils.progress import bar as tqdm

        for cache in (self.frame_cache, self.flow_cache):
            # a killed build's half-written entries (its loader workers die without cleaning up); the
            # cache is shared, so another job's or rank's entry being written is kept
            if cache is not None and sweep_temp_files(cache.dir.glob(".*.tmp")):
                log.info("%s: removed the temporary files of a killed earlier build", cache.dir)
        order = rotated_order(len(self.items), *launch_rank())
        if num_workers > 0:
            builder = _CacheBuilder(self, [i for i in order if not self._is_cached(i)])
            if len(builder):
                # its own generator for the workers' base seed: one drawn from the global stream shifted
                # every later draw of the run, so a cold cache trained otherwise than the same seed on a warm one
                dl = torch.utils.data.DataLoader(
                    builder, batch_size=None, num_workers=int(num_workers), generator=torch.Generator()
                )
                # started on the CPU: torch draws the base seed into a tensor of torch's default device
                # with this CPU generator, which a user's set_default_device("cuda") refused; the
                # workers, forked here, inherit the CPU too
                with torch.device("cpu"):
                    batches = iter(dl)  # iter(dl): see probe.extract_features (one set of workers, not two)
                for _ in tqdm(
                    batches,
                    total=len(builder),
                    desc=f"caching videos ({num_workers} workers)",
                    disable=not progress,
                    leave=False,
                ):
                    pass
        good = []
        for i in tqdm(order, desc="caching videos", disable=not progress, leave=False):
            if self.frame_cache is None and self.flow_cache is not None and self.flow_cache.is_cached(self.items[i][0]):
                # decoded on the fly and its flow already there: nothing to build, and opening the
                # video here would read every file's header on every rank at every (re)start
                good.append(i)
                continue
            try:
                if self.frame_cache is not None:
                    self._source(i)
                if self.flow_cache is not None:
                    self._flow(i)
                good.append(i)
            except BadInputError as e:
                self._mark_bad(i, e)
        good.sort()  # the list's own order on every rank (the distributed sampler indexes into it)
        keep = {j: n for n, j in enumerate(good)}
        self._sources = OrderedDict((keep[j], s) for j, s in self._sources.items() if j in keep)
        self._flows = OrderedDict((keep[j], s) for j, s in self._flows.items() if j in keep)
        self.items = [self.items[j] for j in good]
        if self.bad:
            log.warning("%d of %d videos skipped as bad", len(self.bad), len(self.bad) + len(self.items))
        return self

    def _is_cached(self, i: int) -> bool:
        """Whether video i's caches are built (or it is known bad): a few stats, no decoding."""
        path = self.items[i][0]
        if self.frame_cache is not None:
            npy, meta, bad = self.frame_cache.paths(path)
            if not (bad.is_file() or (npy.is_file() and meta.is_file())):
                return False
        return self.flow_cache is None or self.flow_cache.is_cached(path)

    # -- sampling -----------------------------------------------------------------------------
    def _starts(self, total: int, rng: np.random.Generator) -> list[int]:
        """Timeline start frames of the clips of one item: both the clip and its flow clip (which may
        span longer: ``flow.num_frames`` x ``flow.stride``) fit after the start, or a flow clip near
        the end would wrap to the video's first frames (:func:`clip_timeline`)."""
        span = (self.num_frames - 1) * self.stride
        if self.flow_cache is not None:
            span = max(span, (self.flow_frames - 1) * self.flow_stride)
        if self.mode == "eval":
            m = max(0, total - 1 - span)
            return [int(round(m * (k + 0.5) / self.eval_clips)) for k in range(self.eval_clips)]
        if self.mode == "single":
            m = total - span
            return [int(rng.integers(0, total))] if m <= 0 else [int(rng.integers(0, m))]
        # the samplers see a clip only through its span (n - 1) s: (span + 1) x 1 is the same clip length
        if self.pair_sampler == "cvrl":
            s1, s2, _ = sample_cvrl_starts(total, span + 1, 1, self.power, rng)
        else:
            s1, s2, _ = sample_shift_starts(total, span + 1, 1, self.shift_s, rng)
        return [s1, s2]

    def _crop_offset(self, rng: np.random.Generator) -> tuple[float, float]:
        """Top-left of the square crop, as fractions of the free room (so flow maps align)."""
        if self.random_crop:
            return float(rng.random()), float(rng.random())
        return 0.5, 0.5

    @staticmethod
    def _square(frames: np.ndarray, fy: float, fx: float) -> np.ndarray:
        t, h, w, _ = frames.shape
        s = min(h, w)
        y, x = int(round(fy * (h - s))), int(round(fx * (w - s)))
        return frames[:, y : y + s, x : x + s]

    @staticmethod
    def _frames(frames_of: Callable[[np.ndarray], np.ndarray], start: int, n: int, stride: int, total: int, src):
        """(n,H,W,C) frames of the clip starting at timeline frame ``start``."""
        return frames_of(
            timeline_to_native(clip_timeline(start, n, stride, total), src.num_frames, src.fps, src.frame_times)
        )

    def _clip(
        self,
        frames_of: Callable[[np.ndarray], np.ndarray],
        start: int,
        n: int,
        stride: int,
        total: int,
        src,
        fy: float,
        fx: float,
    ) -> torch.Tensor:
        frames = self._frames(frames_of, start, n, stride, total, src)
        return torch.from_numpy(np.ascontiguousarray(self._square(frames, fy, fx))).permute(3, 0, 1, 2)

    def _box(self, rng: np.random.Generator, height: int, width: int) -> tuple[float, float, float, float]:
        """One random resized crop box of a ``height x width`` frame as fractions (top, left, h, w)."""
        cb = self.crop_boxes
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        y0, x0, ch, cw = (
            float(v)
            for v in random_resized_boxes(
                1, height, width, cb["area"], cb["aspect"], cb["attempts"], g, cb.get("sampler", "torchvision")
            )
        )
        return y0 / height, x0 / width, ch / height, cw / width

    @staticmethod
    def _crop_resize(frames: np.ndarray, box: tuple[float, float, float, float], size: int) -> torch.Tensor:
        """(T,H,W,C) uint8 -> (C,T,size,size) uint8: the box (fractions), bilinearly resized as the
        batched crop resamples (no antialiasing)."""
        _, h, w, _ = frames.shape
        y0, x0 = int(round(box[0] * h)), int(round(box[1] * w))
        y1, x1 = (
            max(y0 + 1, min(h, int(round((box[0] + box[2]) * h)))),
            max(x0 + 1, min(w, int(round((box[1] + box[3]) * w)))),
        )
        x = torch.from_numpy(np.ascontiguousarray(frames[:, y0:y1, x0:x1])).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        return x.round_().clamp_(0, 255).to(torch.uint8).permute(1, 0, 2, 3)

    def _boxed_clips(self, i: int, src, st: int, total: int, rng: np.random.Generator):
        """A clip (and its flow clip) as random resized crops of the whole frames (``crop_boxes``)."""
        cb = self.crop_boxes
        frames = self._frames(src.get, st, self.num_frames, self.stride, total, src)
        box = self._box(rng, frames.shape[1], frames.shape[2])
        clip = self._crop_resize(frames, box, int(cb["size"]))
        if self.flow_cache is None:
            return clip, None
        flow = self._frames(self._flow(i).get, st, self.flow_frames, self.flow_stride, total, src)
        fbox = box if cb["align"] else self._box(rng, flow.shape[1], flow.shape[2])
        return clip, self._crop_resize(flow, fbox, int(cb["flow_size"]))

    def _load(self, i: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        src = self._source(i)
        total = timeline_length(src.num_frames, src.fps)
        clips, flows = [], []
        for st in self._starts(total, rng):
            if self.crop_boxes is not None:
                clip, flow = self._boxed_clips(i, src, st, total, rng)
                clips.append(clip)
                if flow is not None:
                    flows.append(flow)
                continue
            fy, fx = self._crop_offset(rng)
            clips.append(self._clip(src.get, st, self.num_frames, self.stride, total, src, fy, fx))
            if self.flow_cache is not None:
                flows.append(self._clip(self._flow(i).get, st, self.flow_frames, self.flow_stride, total, src, fy, fx))
        cpu = torch.device("cpu")
        label, index = torch.tensor(self.items[i][1], device=cpu), torch.tensor(i, device=cpu)
        out = {"video": torch.stack(clips), "label": label, "index": index}
        if flows:
            out["flow"] = torch.stack(flows)
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        # an item is drawn and made on the CPU (the stream a loader worker's seed sets), also under a
        # user's set_default_device("cuda"): there the seed came from the GPU's stream and the item's
        # tensors were made on the GPU, which a forked worker cannot start and pinning refuses
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), device="cpu").item()))
        skipped: list[int] = []
        n = len(self.items)
        for k in range(min(n, MAX_SKIPS + 1)):
            j = (i + k) % n
            if str(self.items[j][0]) in self.bad:
                skipped.append(j)
                continue
            try:
                item = self._load(j, rng)
            except BadInputError as e:
                self._mark_bad(j, e)
                skipped.append(j)
                continue
            item["skipped"] = torch.tensor((skipped + [-1] * MAX_SKIPS)[:MAX_SKIPS], device="cpu")
            return item
        if n <= MAX_SKIPS:
            raise BadInputError(self.items[i][0], f"every one of the clip list's {n} videos is bad; giving up")
        raise BadInputError(self.items[i][0], f"{MAX_SKIPS + 1} consecutive bad videos in the clip list; giving up")


class _CacheBuilder(torch.utils.data.Dataset):
    """Item k builds the caches of ``ds``'s video ``order[k]`` (in a loader worker) and returns its
    index; a bad video is left for :meth:`ClipDataset.prepare`'s own pass to find (from the frame
    cache's ``.bad`` note, or by failing again) and to count, as without workers."""

    def __init__(self, ds: ClipDataset, order: list[int]):
        self.ds, self.order = ds, list(order)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> int:
        i = self.order[k]
        try:
            if self.ds.frame_cache is not None:
                self.ds._source(i)
            if self.ds.flow_cache is not None:
                self.ds._flow(i)
        except BadInputError:
            pass
        finally:
            self.ds._sources.pop(i, None)  # the worker's copy: nothing to keep
            self.ds._flows.pop(i, None)
        return i
