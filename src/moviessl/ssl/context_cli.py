"""``moviessl pretrain-context``: MaskPred pretraining of TxE on cached event features.

    moviessl pretrain-context --features FEATS [--features FEATS2 ...] --out OUT [--preset cpu|paper] [--resume] [k=v ...]

FEATS: folders written by ``moviessl extract`` or VidSitu's released ``vsitu_vid_feats/<model>/``.
Writes OUT/config.yaml, OUT/checkpoints/last.ckpt, OUT/logs/metrics.csv, OUT/curves.png and the
exported TxE OUT/model.pt (stage ``context``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader

from ..errors import BadInputError

log = logging.getLogger("moviessl.context")


def build_module(cfg: Any, in_dim: int, feature_stride_s: float):
    from .context import MaskPredModule

    m, mp, o = cfg.model, cfg.maskpred, cfg.optim
    return MaskPredModule(
        in_dim=in_dim, txe_preset=m.txe, txe_kwargs={k: v for k, v in dict(m.get("txe_overrides") or {}).items() if v is not None}, window=cfg.data.window,
        alpha=mp.alpha, mask_sizes=list(mp.mask_sizes) if mp.mask_sizes else None, sampling=mp.sampling, loss=mp.loss,
        tau=mp.tau, queue_size=mp.queue_size, keys_per_sample=mp.keys_per_sample, target_dim=mp.target_dim,
        head_hidden=m.head_hidden, lr=o.lr, weight_decay=o.weight_decay, warmup_frac=o.warmup_frac,
        betas=list(o.betas), token_stride_s=cfg.data.token_stride_s, feature_stride_s=feature_stride_s)


def pretrain_context(features: Sequence[str | os.PathLike], out: str | os.PathLike, cfg: Any, resume: bool = False) -> Path:
    """Train TxE by MaskPred on the given feature folders; returns OUT/model.pt."""
    from ..config import save_config, to_dict
    from ..features.store import FeatureStore
    from ..training import cpu_threads, fit, seed_everything
    from .context import FeatureWindows, split_ids

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume and (out / "checkpoints").exists():
        raise BadInputError(out, "output folder already holds a run; pass --resume to continue it or choose another --out")
    seed_everything(cfg.seed)
    cpu_threads()
    stores = [FeatureStore(f) for f in features]
    strides = {s.stride_s for s in stores}
    d = cfg.data
    all_ids = [(i, v) for i, s in enumerate(stores) for v in s.ids]
    train_ids, val_ids = split_ids(all_ids, d.val_fraction, seed=cfg.seed)
    train = FeatureWindows(stores, d.window, d.token_stride_s, d.windows_per_video, random_start=True, ids=train_ids)
    val = FeatureWindows(stores, d.window, d.token_stride_s, 1, random_start=False, ids=val_ids) if val_ids else None
    log.info("MaskPred on %d train / %d val videos, %d events, dim %d (%d bad files skipped)",
             len(train.videos), len(val.videos) if val else 0, train.num_events, train.dim,
             train.num_bad + (val.num_bad if val else 0))

    module = build_module(cfg, train.dim, min(strides))
    if cfg.maskpred.center:
        module.set_target_mean(train.feature_mean(d.mean_videos, seed=cfg.seed))

    bs = int(d.batch_size)
    drop_last = len(train) >= bs * max(1, int(cfg.trainer.devices) if str(cfg.trainer.devices).isdigit() else 1)
    nw = int(d.num_workers)
    loader_kw = dict(num_workers=nw, persistent_workers=nw > 0, pin_memory=torch.cuda.is_available())
    train_dl = DataLoader(train, batch_size=min(bs, len(train)), shuffle=True, drop_last=drop_last, **loader_kw)
    val_dl = DataLoader(val, batch_size=min(bs, len(val)), shuffle=False, **loader_kw) if val else None

    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    trainer = fit(module, cfg.trainer, out, train_dataloaders=train_dl, val_dataloaders=val_dl, resume=resume,
                  throughput_name="tokens_per_s", curve_keys=("train/loss", "train/retrieval_acc", "val/retrieval_acc"))
    path = out / "model.pt"
    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        meta = {"features": [str(Path(f).resolve()) for f in features],
                "backbone": sorted({str((s.index or {}).get("backbone", "vidsitu-released")) for s in stores}),
                "num_videos": len(train.videos), "num_events": train.num_events, "steps": int(trainer.global_step),
                "metrics": metrics}
        module.export(path, config=to_dict(cfg), meta=meta)
        log.info("wrote %s (%d steps%s)", path, trainer.global_step,
                 f", val retrieval acc {metrics['val/retrieval_acc']:.3f}" if "val/retrieval_acc" in metrics else "")
    return path


def add_parser(subparsers) -> None:
    from ..cli import add_overrides_arg

    p = subparsers.add_parser("pretrain-context", help="pretrain the TxE contextualizer by event mask prediction on cached features",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--features", action="append", required=True, metavar="DIR",
                   help="feature folder (moviessl extract output or VidSitu's vsitu_vid_feats/<model>); repeatable")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    add_overrides_arg(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..config import load_config

    cfg = load_config("context", args.preset, args.overrides)
    pretrain_context(args.features, args.out, cfg, resume=args.resume)
    return 0
