"""K seeded runs of one VidSitu task -> predictions, official metrics, mean ± SE summary.

    run_finetune("srl", "ROOT/vidsitu", features="feats/", contextualizer="maskpred/model.pt",
                 seeds=3, out="runs/srl")

Layout of ``out``::

    config.yaml                       resolved config (shared by the runs)
    tokenizer.json                    SRL only: trained once, shared by the runs
    seed{S}/predictions.pkl           VidSitu submission (list of dicts, keyed by ann_idx)
    seed{S}/metrics.json              official metrics on the eval split (percent) + run facts
    seed{S}/model.pt                  moviessl checkpoint, stage = task (+ backbone.pt for end-to-end verb)
    seed{S}/logs/metrics.csv, curves.png, checkpoints/last.ckpt
    summary.json, summary.md          mean ± standard error over the runs

A finished run (its metrics.json written with the same settings) is never redone, so an interrupted
multi-seed job continues where it stopped; ``resume=True`` also continues an unfinished run from its
Lightning checkpoint.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ...checkpoint import arch_spec, build_arch, file_hash, load_checkpoint, save_checkpoint
from ...config import flatten, load_config, merge_overrides, save_config, to_dict
from ...data.vidsitu import load_split
from ...errors import BadInputError
from ...eval.vidsitu import evaluate
from ...features.store import FeatureStore
from ...utils.io import atomic_write_bytes, ensure_out_dir
from ..base import SeedJob, TaskOptim, coverage_note, run_seeds, settings_hash, write_summary
from . import TASKS
from .config import VidSituConfig
from .data import build_segments, extract_features, feature_source, loader, video_source

log = logging.getLogger("moviessl.tasks")


def resolve_config(
    cfg: VidSituConfig | Mapping | None = None, preset: str = "cpu", overrides: Sequence[str] | Mapping = ()
) -> VidSituConfig:
    """A full config, or the preset with ``cfg`` (a nested dict of changes) and then ``overrides``."""
    if isinstance(cfg, VidSituConfig):
        return merge_overrides(cfg, overrides) if overrides else cfg
    base = load_config("vidsitu", preset, flatten(cfg or {}))
    return merge_overrides(base, overrides) if overrides else base


def _contextualizer(
    spec: str | os.PathLike | None, in_dim: int, cfg: VidSituConfig
) -> tuple[dict | None, dict | None, str]:
    """-> (TxE arch, pretrained TxE state dict, label)."""
    if spec is None or str(spec) == "none":
        return None, None, "none"
    if str(spec) == "scratch":
        return (
            arch_spec(
                "moviessl.models.txe:build_txe", preset=cfg.txe.preset, in_dim=int(in_dim), **dict(cfg.txe.overrides)
            ),
            None,
            "scratch",
        )
    obj = load_checkpoint(spec, stage="context")
    stride = (obj.get("meta") or {}).get("token_stride_s")
    if stride is not None and float(stride) != 2.0:
        log.warning("%s: TxE pretrained on tokens %ss apart; VidSitu events are 2 s apart", spec, stride)
    txe = build_arch(obj["arch"])
    if int(getattr(txe, "in_dim", in_dim)) != int(in_dim):
        raise BadInputError(spec, f"TxE takes {txe.in_dim}-d event features but the inputs are {in_dim}-d")
    return obj["arch"], obj["state_dict"], f"ckpt:{file_hash(spec)}"


@torch.no_grad()
def predict_split(spec, model: torch.nn.Module, data, split, batch_size: int) -> list[dict]:
    """Submission entries for the whole split (fallback entries for segments without inputs)."""
    model.eval()
    device = next(model.parameters()).device
    preds: dict[int, dict] = {}
    for batch in loader(data, batch_size, shuffle=False):
        idx = batch["i"].tolist()
        y = batch.get("y")
        entries = spec.entries(
            model,
            batch["x"].to(device),
            None if y is None else y.to(device),
            [data.ann_idx[i] for i in idx],
            [data.vsegs[i] for i in idx],
        )
        for e in entries:
            preds[e["ann_idx"]] = e
    for ai, vseg in enumerate(split.vseg_ids):
        if ai not in preds:
            preds[ai] = spec.fallback(ai, vseg, split)
    return [preds[ai] for ai in sorted(preds)]


def run_finetune(
    task: str,
    data_root: str | os.PathLike,
    features: str | os.PathLike | None = None,
    videos: str | os.PathLike | None = None,
    backbone: str | os.PathLike | None = None,
    contextualizer: str | os.PathLike | None = "none",
    seeds: int = 1,
    out: str | os.PathLike = "runs/finetune",
    cfg: VidSituConfig | Mapping | None = None,
    preset: str = "cpu",
    overrides: Sequence[str] | Mapping = (),
    tokenizer: str | os.PathLike | None = None,
    resume: bool = False,
) -> dict:
    """Train ``seeds`` runs of ``task`` (verb | srl | relation) and evaluate each on the eval split.

    Inputs: ``features`` (a feature folder, (5, D) per segment) or ``videos`` + ``backbone`` (a
    stage-"backbone" checkpoint; an end-to-end task fine-tunes it, the others extract frozen features
    once into ``out/features_<hash>``). ``contextualizer``: "none", "scratch" or a stage-"context"
    checkpoint (fine-tuned). Returns ``{"task", "out", "runs": [{"seed", "dir", "metrics"}],
    "summary": {metric: {"mean", "se", "n"}}, "table": markdown, ...}``.
    """
    if task not in TASKS:
        raise BadInputError(None, f"unknown task '{task}' (choose from {', '.join(TASKS)})")
    if (features is None) == (videos is None):
        raise BadInputError(None, "give exactly one of --features DIR or --videos DIR")
    if int(seeds) < 1:
        raise BadInputError(None, f"--seeds must be >= 1, got {seeds}")
    cfg = resolve_config(cfg, preset, overrides)
    tcfg = getattr(cfg, task)
    out = ensure_out_dir(out)
    save_config(cfg, out)

    train_split = load_split(data_root, cfg.data.train_split)
    eval_split = load_split(data_root, cfg.data.eval_split, split_file=cfg.data.split_file)
    spec = TASKS[task](tcfg, train_split, eval_split=eval_split, tokenizer=tokenizer, out=out)

    # ---- inputs: features, clips for an end-to-end task, or features extracted once from clips
    backbone_obj = None
    if features is not None:
        store = FeatureStore(features)
        source, in_dim, inputs = feature_source(store), store.dim, f"features:{Path(features).resolve()}"
    else:
        if backbone is None:
            raise BadInputError(None, "--videos needs --backbone CKPT (a stage-'backbone' checkpoint)")
        backbone_obj = load_checkpoint(backbone, stage="backbone")
        meta = backbone_obj.get("meta", {})
        in_dim = int(meta.get("out_dim") or build_arch(backbone_obj["arch"]).out_dim)
        vsrc = video_source(videos, dict(meta.get("input") or {}), cfg.data.num_frames, cfg.data.stride)
        inputs = f"videos:{Path(videos).resolve()} backbone:{file_hash(backbone)}"
        if spec.end_to_end:  # Slow-D fine-tuned end to end on the event clips
            source = vsrc
        else:  # frozen features, extracted once and cached beside the runs
            feat_dir = out / f"features_{file_hash(backbone)}"
            vsegs = list(dict.fromkeys(train_split.vseg_ids + eval_split.vseg_ids))
            clips, kept, _ = vsrc(vsegs)
            net = build_arch(backbone_obj["arch"])
            net.load_state_dict(backbone_obj["state_dict"])
            dev = "cuda" if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda") else "cpu"
            extract_features(net, clips, kept, feat_dir, batch_size=4, device=dev)
            source = feature_source(FeatureStore(feat_dir, num_events=5))
            backbone_obj = None
    txe_arch, txe_state, ctx_label = _contextualizer(contextualizer, in_dim, cfg)

    train_data = build_segments(train_split, source, spec.train_target)
    eval_data = build_segments(eval_split, source, spec.eval_target, need_records=spec.eval_needs_records)
    if len(train_data) == 0:
        raise BadInputError(
            data_root,
            f"no usable training segments ({len(train_data.skipped)} skipped, e.g. "
            f"{next(iter(train_data.skipped.items()), ('-', '-'))})",
        )
    counts = {
        "train_segments": len(train_data),
        "train_skipped": len(train_data.skipped),
        "eval_segments": len(eval_split.vseg_ids),
        "eval_without_inputs": len(eval_split.vseg_ids) - len(eval_data),
    }
    log.info(
        "%s: %d train segments (%d skipped), %d/%d eval segments with inputs",
        task,
        len(train_data),
        len(train_data.skipped),
        len(eval_data),
        len(eval_split.vseg_ids),
    )

    def build(seed: int):
        model, arch = spec.build_model(in_dim, backbone_obj["arch"] if backbone_obj else None, txe_arch)
        if backbone_obj is not None:
            model.encoder.backbone.load_state_dict(backbone_obj["state_dict"])
        if txe_state is not None:
            model.encoder.txe.load_state_dict(txe_state)
        return model, arch

    def score(model, run_dir: Path) -> dict:
        preds = predict_split(spec, model, eval_data, eval_split, cfg.data.eval_batch_size)
        atomic_write_bytes(run_dir / "predictions.pkl", pickle.dumps(preds, protocol=4))
        return evaluate(task, preds, eval_split)

    def export(model, arch: dict, run_dir: Path, run: dict) -> None:
        meta = {**spec.meta(), "task": task, "inputs": inputs, "contextualizer": ctx_label, **run, **counts}
        save_checkpoint(
            run_dir / "model.pt", stage=task, arch=arch, state_dict=model.state_dict(), config=cfg, meta=meta
        )
        if backbone_obj is not None:  # the verb-finetuned Slow-D, usable by `moviessl extract` / relation
            bmeta = dict(backbone_obj.get("meta", {}))
            bmeta["method"] = f"{bmeta.get('method', 'unknown')}+{task}"
            save_checkpoint(
                run_dir / "backbone.pt",
                stage="backbone",
                arch=backbone_obj["arch"],
                state_dict=model.encoder.backbone.state_dict(),
                config=cfg,
                meta=bmeta,
            )

    job = SeedJob(
        name=task,
        out=out,
        settings=settings_hash(task, to_dict(cfg), inputs, ctx_label, str(tokenizer)),
        config=cfg,
        optim=TaskOptim(
            lr=tcfg.lr,
            weight_decay=tcfg.weight_decay,
            warmup_steps=tcfg.warmup_steps,
            backbone_lr_scale=tcfg.backbone_lr_scale,
            txe_lr_scale=tcfg.txe_lr_scale,
        ),
        trainer=cfg.trainer,
        epochs=tcfg.epochs,
        build=build,
        loader=lambda seed: loader(
            train_data,
            tcfg.batch_size,
            shuffle=True,
            num_workers=cfg.data.num_workers,
            ignore_fill=spec.ignore_index,
            seed=seed,
        ),
        score=score,
        export=export,
        loss_kwargs=spec.loss_kwargs(),
        record={"inputs": inputs, "contextualizer": ctx_label, **counts},
        resume=resume,
    )

    prev_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        runs = run_seeds(job, [cfg.seed + k for k in range(int(seeds))])
    finally:
        torch.set_num_threads(prev_threads)
    return write_summary(
        out,
        runs,
        spec.metric_keys,
        f"{task} ({ctx_label})",
        f"VidSitu {task}",
        f"inputs: `{inputs}`, contextualizer: `{ctx_label}`",
        task=task,
        inputs=inputs,
        contextualizer=ctx_label,
        partial=coverage_note(**counts),
        **counts,
    )
