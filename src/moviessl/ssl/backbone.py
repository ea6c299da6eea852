"""Backbone pretraining plumbing: clip datasets, optimiser (SGD/LARS + warm-up cosine), the shared
LightningModule base, the method registry and the ``pretrain`` entry point.

Methods (paper §3.2): ``cvrl`` (:mod:`.cvrl`), ``modist`` (:mod:`.modist`), ``supervised``
(:mod:`.supervised`, the "Sup-K400" analogue) and ``random`` (an untrained, seeded Slow-D: the
random-init reference every probe is compared against).

Data: a clip list (``path label`` or ``path``) read by :func:`moviessl.data.cliplist.read_clip_list`.
Datasets return uint8 clips ``(V, 3, T, S, S)`` (V views, S the short side: a random square crop of
the short-side-resized frames in training, the centre square in evaluation), so batches collate
whatever the videos' aspect ratios; the random resized crop / colour / blur / solarise augmentation
runs batched after transfer (``on_after_batch_transfer``). Clip times live on a 30-fps timeline
(PySlowFast's convention) and map to native frames.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..errors import BadInputError

log = logging.getLogger("moviessl")

METHODS = ("cvrl", "modist", "supervised", "random")
TARGET_FPS = 30.0
MAX_SKIPS = 8  # bad items one __getitem__ may step over before giving up on the batch slot


# --------------------------------------------------------------------------------------------
# Clip sampling on the 30-fps timeline


def timeline_length(num_frames: int, fps: float) -> int:
    """Number of 30-fps timeline frames of a video (>= 1)."""
    if not fps or fps <= 0:
        return max(1, int(num_frames))
    return max(1, int(math.floor(num_frames * TARGET_FPS / fps + 1e-6)))


def timeline_to_native(t: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
    """30-fps timeline indices -> native frame indices (clamped to the last decodable frame)."""
    t = np.asarray(t, dtype=np.float64)
    idx = t if not fps or fps <= 0 else np.floor(t * fps / TARGET_FPS + 1e-6)
    return np.clip(idx, 0, max(0, num_frames - 1)).astype(np.int64)


def clip_timeline(start: int, num_frames: int, stride: int, total: int) -> np.ndarray:
    """Timeline indices of a clip starting at ``start``; wraps around (tiles) a too-short video."""
    return (int(start) + stride * np.arange(num_frames)) % max(1, total)


# --------------------------------------------------------------------------------------------
# Dataset


class ClipDataset(Dataset):
    """Clips of the videos of a clip list.

    ``mode``: ``pair`` (two clips per video, starts from ``pair_sampler``: ``cvrl`` = CVRL's
    decreasing-gap sampler, ``shift`` = MoDist's uniform 0.5-10 s shift), ``single`` (one random
    clip, supervised training) or ``eval`` (``eval_clips`` evenly spaced clips, centre crop).

    Bad videos are skipped: with the frame cache they are found while the cache is built
    (:meth:`prepare`, counted in ``self.bad``); without it, ``__getitem__`` steps to the next video
    and reports the skipped indices in the item's ``skipped`` field so the training module can count
    them (workers are separate processes).
    """

    def __init__(self, items: Sequence[tuple[Path, int | None]], mode: str = "pair", *, num_frames: int = 16,
                 stride: int = 4, short_side: int = 64, frame_cache=None, flow_cache=None, flow_frames: int = 16,
                 flow_stride: int = 4, pair_sampler: str = "cvrl", power: float = 1.0,
                 shift_s: Sequence[float] = (0.5, 10.0), eval_clips: int = 1, random_crop: bool | None = None):
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
        self.bad: dict[str, str] = {}  # path -> cause, logged once each
        self._sources: dict[int, Any] = {}
        self._flows: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.items)

    # -- sources ------------------------------------------------------------------------------
    def _mark_bad(self, i: int, err: BadInputError) -> None:
        key = str(self.items[i][0])
        if key not in self.bad:
            self.bad[key] = str(err)
            log.warning("skipping bad video: %s", err)

    def _source(self, i: int):
        src = self._sources.get(i)
        if src is None:
            from .clipcache import LiveSource

            path = self.items[i][0]
            src = self.frame_cache.source(path) if self.frame_cache is not None else LiveSource(path, self.short_side)
            self._sources[i] = src
        return src

    def _flow(self, i: int):
        fl = self._flows.get(i)
        if fl is None:
            src = self._source(i)
            fl = self.flow_cache.source(self.items[i][0], src.all)
            if fl.num_frames != src.num_frames:
                raise BadInputError(self.items[i][0], f"flow cache has {fl.num_frames} frames, video {src.num_frames}")
            self._flows[i] = fl
        return fl

    def prepare(self, progress: bool = True) -> "ClipDataset":
        """Decode (and compute flow for) every video once, dropping the bad ones. Only with a cache."""
        if self.frame_cache is None and self.flow_cache is None:
            return self
        from tqdm.auto import tqdm

        good = []
        for i in tqdm(range(len(self.items)), desc="caching videos", disable=not progress, leave=False):
            try:
                if self.frame_cache is not None:
                    self._source(i)
                if self.flow_cache is not None:
                    self._flow(i)
                good.append(i)
            except BadInputError as e:
                self._mark_bad(i, e)
        keep = {j: n for n, j in enumerate(good)}
        self._sources = {keep[j]: s for j, s in self._sources.items() if j in keep}
        self._flows = {keep[j]: s for j, s in self._flows.items() if j in keep}
        self.items = [self.items[j] for j in good]
        if self.bad:
            log.warning("%d of %d videos skipped as bad", len(self.bad), len(self.bad) + len(self.items))
        return self

    # -- sampling -----------------------------------------------------------------------------
    def _starts(self, total: int, rng: np.random.Generator) -> tuple[list[int], bool]:
        """Timeline start frames of the clips of one item, and whether indices wrap."""
        span = (self.num_frames - 1) * self.stride
        if self.mode == "eval":
            m = max(0, total - 1 - span)
            return [int(round(m * (k + 0.5) / self.eval_clips)) for k in range(self.eval_clips)], total <= span
        if self.mode == "single":
            m = total - span
            return ([int(rng.integers(0, total))], True) if m <= 0 else ([int(rng.integers(0, m))], False)
        if self.pair_sampler == "cvrl":
            from .cvrl import sample_cvrl_starts

            s1, s2, wrap = sample_cvrl_starts(total, self.num_frames, self.stride, self.power, rng)
            return [s1, s2], wrap
        # MoDist: start-to-start shift uniform in [lo, hi] seconds, bounded by what the video allows
        m = total - span
        if m <= 0:
            return [int(rng.integers(0, total)), int(rng.integers(0, total))], True
        lo, hi = (s * TARGET_FPS for s in self.shift_s)
        hi = min(hi, m - 1)
        gap = int(rng.uniform(lo, hi)) if hi > lo else int(rng.integers(0, max(1, m)))
        first = int(rng.integers(0, max(1, m - gap)))
        starts = [first, first + gap]
        if rng.random() < 0.5:
            starts.reverse()
        return starts, False

    def _crop_box(self, h: int, w: int, rng: np.random.Generator) -> tuple[float, float]:
        """Top-left of the square crop, as fractions of the free room (so flow maps align)."""
        if self.random_crop:
            return float(rng.random()), float(rng.random())
        return 0.5, 0.5

    @staticmethod
    def _square(frames: np.ndarray, fy: float, fx: float) -> np.ndarray:
        t, h, w, _ = frames.shape
        s = min(h, w)
        y, x = int(round(fy * (h - s))), int(round(fx * (w - s)))
        return frames[:, y:y + s, x:x + s]

    def _load(self, i: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        src = self._source(i)
        total = timeline_length(src.num_frames, src.fps)
        starts, _ = self._starts(total, rng)
        clips, flows = [], []
        for st in starts:
            fy, fx = self._crop_box(0, 0, rng)
            idx = timeline_to_native(clip_timeline(st, self.num_frames, self.stride, total), src.num_frames, src.fps)
            clips.append(torch.from_numpy(np.ascontiguousarray(self._square(src.get(idx), fy, fx))).permute(3, 0, 1, 2))
            if self.flow_cache is not None:
                fl = self._flow(i)
                fidx = timeline_to_native(clip_timeline(st, self.flow_frames, self.flow_stride, total), src.num_frames, src.fps)
                flows.append(torch.from_numpy(np.ascontiguousarray(self._square(fl.get(fidx), fy, fx))).permute(3, 0, 1, 2))
        out = {"video": torch.stack(clips), "label": torch.tensor(self.items[i][1]), "index": torch.tensor(i)}
        if flows:
            out["flow"] = torch.stack(flows)
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
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
            item["skipped"] = torch.tensor((skipped + [-1] * MAX_SKIPS)[:MAX_SKIPS])
            return item
        raise BadInputError(self.items[i][0], f"{MAX_SKIPS + 1} consecutive bad videos in the clip list; giving up")


# --------------------------------------------------------------------------------------------
# Optimiser


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio (You et al. 2017), SimCLR/CVRL's large-batch optimiser.

    Groups with ``lars=False`` (biases, norms) get plain SGD-momentum and no weight decay."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if g["weight_decay"]:
                    d = d.add(p, alpha=g["weight_decay"])
                if g["lars"]:
                    pn, dn = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    trust = torch.where((pn > 0) & (dn > 0), g["eta"] * pn / dn, torch.ones_like(pn))
                    d = d * trust
                st = self.state[p]
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = d.clone()
                else:
                    buf.mul_(g["momentum"]).add_(d)
                p.add_(buf, alpha=-g["lr"])
        return loss


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay (and LARS adaptation) on weights of convs/linears only, not biases or norms."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay, lars=True), dict(params=no_decay, weight_decay=0.0, lars=False)]


def warmup_cosine(step: int, total: int, warmup: int, final_frac: float = 0.0) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine to ``final_frac``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t))


def build_optimizer(module: nn.Module, optim: Mapping[str, Any], global_batch: int, total_steps: int):
    """(optimizer, lr_scheduler config) from the ``optim`` config block.

    lr = ``optim.lr`` x global_batch / ``optim.ref_batch`` (linear scaling; CVRL: 0.32 per 1024)."""
    lr = float(optim["lr"]) * global_batch / float(optim.get("ref_batch") or global_batch)
    groups = param_groups(module, float(optim.get("weight_decay", 0.0)))
    name = str(optim.get("name", "sgd")).lower()
    if name == "lars":
        opt = LARS(groups, lr=lr, momentum=float(optim.get("momentum", 0.9)), eta=float(optim.get("eta", 0.001)))
    elif name == "sgd":
        for g in groups:
            g.pop("lars")
        opt = torch.optim.SGD(groups, lr=lr, momentum=float(optim.get("momentum", 0.9)), nesterov=False)
    elif name == "adamw":
        for g in groups:
            g.pop("lars")
        opt = torch.optim.AdamW(groups, lr=lr)
    else:
        raise BadInputError("optim.name", f"unknown optimiser {name!r} (sgd|lars|adamw)")
    warmup = int(round(float(optim.get("warmup_frac", 0.0)) * total_steps))
    final = float(optim.get("final_lr_frac", 0.0))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total_steps, warmup, final))
    return opt, {"scheduler": sched, "interval": "step", "frequency": 1}


# --------------------------------------------------------------------------------------------
# LightningModule base


def _lightning():
    import pytorch_lightning as pl

    return pl


def build_backbone(cfg: Mapping[str, Any]) -> tuple[nn.Module, dict]:
    """(Slow-D, arch spec) from the ``model`` block: ``preset`` + ``overrides`` for build_slowd."""
    from ..checkpoint import arch_spec
    from ..models.slowd import build_slowd

    preset = str(cfg["model"]["preset"])
    ov = dict(cfg["model"].get("overrides") or {})
    return build_slowd(preset, **ov), arch_spec("moviessl.models.slowd:build_slowd", preset=preset, **ov)


def augment_views(augs: Sequence[nn.Module], views: Sequence[torch.Tensor], return_params: bool = False):
    """Augment several views in one batched call: parameters are drawn per view by its own
    augmenter (CVRL's blur/solarise asymmetry), then applied to all clips at once, which on CPU
    costs much less than one call per view. ``return_params`` also returns the drawn parameters
    (concatenated over views), e.g. to crop another modality with the same boxes."""
    b, _, _, h, w = views[0].shape
    ps = [a.sample_params(b, h, w) for a in augs]
    p = {k: torch.cat([q[k] for q in ps]).to(views[0].device) for k in ps[0]}
    out = list(augs[0].apply(torch.cat(list(views)), p).split(b))
    return (out, p) if return_params else out


def make_augment(cfg: Mapping[str, Any], blur_p: float, solarize_p: float) -> nn.Module:
    """ConsistentAugment for one view with CVRL's parameters (ssl-recipes §3.2) from ``augment``."""
    from ..video import ConsistentAugment

    a = dict(cfg.get("augment") or {})
    kw = {k: a[k] for k in ("area", "aspect", "flip_p", "jitter_p", "brightness", "contrast", "saturation",
                                           "hue", "gray_p", "blur_sigma") if k in a}
    return ConsistentAugment(int(cfg["data"]["crop"]), blur_p=blur_p, solarize_p=solarize_p, **kw)


def cvrl_view_augmenters(cfg: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
    """CVRL's asymmetry (ssl-recipes §3.2): clip 1 always blurred, clip 2 rarely blurred but
    sometimes solarised. Shared by CVRL and MoDist's visual views."""
    return make_augment(cfg, blur_p=1.0, solarize_p=0.0), make_augment(cfg, blur_p=0.1, solarize_p=0.2)


class BackboneModule(_lightning().LightningModule):
    """Shared by the pretraining methods: backbone, optimiser, logging, bad-item count, export."""

    method = "base"

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        from ..config import to_dict

        self.cfg = to_dict(cfg)
        self.backbone, self.arch = build_backbone(self.cfg)
        self._skipped: set[int] = set()

    # a batch of V views of B videos counts B*V clips for the throughput shown in the bar
    def items_in_batch(self, batch) -> int:
        v = batch["video"]
        return int(v.shape[0] * v.shape[1])

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0)

    def note_skipped(self, batch) -> None:
        sk = batch.get("skipped")
        if sk is not None:
            self._skipped.update(int(v) for v in sk.flatten().tolist() if v >= 0)
            if self._skipped:
                self.log("data/skipped", float(len(self._skipped)), on_step=True, on_epoch=False)

    def log_step(self, loss: torch.Tensor, batch_size: int, **extra: torch.Tensor) -> None:
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=batch_size)
        for k, v in extra.items():
            self.log(f"train/{k}", v.detach(), on_step=True, on_epoch=False, batch_size=batch_size)
        opt = self.trainer.optimizers[0] if self.trainer is not None and self.trainer.optimizers else None
        if opt is not None:
            self.log("lr", float(opt.param_groups[0]["lr"]), prog_bar=True, on_step=True, on_epoch=False)

    def setup(self, stage: str) -> None:
        # CVRL syncs BN across replicas; SyncBatchNorm needs an accelerator, so only there.
        if bool(self.cfg.get("model", {}).get("sync_bn", False)) and self.trainer is not None \
                and self.trainer.world_size > 1 and self.trainer.strategy.root_device.type == "cuda":
            for name, child in list(self.named_children()):
                setattr(self, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))

    def trainable_modules(self) -> nn.Module:
        return self

    def configure_optimizers(self):
        t = self.trainer
        accum = int(getattr(t, "accumulate_grad_batches", 1) or 1)
        global_batch = int(self.cfg["data"]["batch_size"]) * int(t.world_size) * accum
        total = int(t.estimated_stepping_batches)
        opt, sched = build_optimizer(self.trainable_modules(), self.cfg["optim"], global_batch, max(1, total))
        return {"optimizer": opt, "lr_scheduler": sched}

    def export_input(self) -> dict[str, int]:
        """The clip geometry the backbone was trained on (checkpoint ``meta.input``)."""
        d = self.cfg["data"]
        return {"num_frames": int(d["num_frames"]), "stride": int(d["stride"]), "short_side": int(d["short_side"]),
                "crop": int(d["crop"])}

    def export(self, path: str | os.PathLike, extra_meta: Mapping[str, Any] | None = None) -> Path:
        """Write the moviessl ``backbone`` checkpoint (Slow-D weights + arch + config + meta)."""
        from ..checkpoint import save_checkpoint

        meta = {"input": self.export_input(),
                "method": self.method, "out_dim": int(self.backbone.out_dim),
                "global_step": int(self.global_step) if self._trainer is not None else 0,
                "skipped_videos": len(self._skipped)}
        meta.update(extra_meta or {})
        return save_checkpoint(path, stage="backbone", arch=self.arch, state_dict=self.backbone.state_dict(),
                               config=self.cfg, meta=meta)


def build_module(method: str, cfg: Mapping[str, Any], num_classes: int | None = None) -> BackboneModule:
    if method == "cvrl":
        from .cvrl import CVRL

        return CVRL(cfg)
    if method == "modist":
        from .modist import MoDist

        return MoDist(cfg)
    if method == "supervised":
        from .supervised import Supervised

        if not num_classes:
            raise BadInputError("--data", "the supervised baseline needs labels ('path label' lines)")
        return Supervised(cfg, num_classes)
    if method == "random":
        m = BackboneModule(cfg)
        m.method = "random"
        return m
    raise BadInputError("--method", f"unknown method {method!r} ({'|'.join(METHODS)})")
