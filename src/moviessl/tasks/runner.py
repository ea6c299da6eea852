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

import hashlib
import json
import logging
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from ..checkpoint import arch_spec, build_arch, file_hash, load_checkpoint, save_checkpoint
from ..config import load_config, merge_overrides, save_config, to_dict
from ..data.vidsitu import load_split
from ..errors import BadInputError
from ..training import fit, seed_everything
from ..utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from .data import build_segments, extract_features, feature_source, loader, video_source
from .module import TaskModule
from .relation import RelationTask
from .srl import SRLTask
from .tokenizer import SRLTokenizer
from .verb import IGNORE, VerbTask

log = logging.getLogger("moviessl.tasks")

TASKS = {"verb": VerbTask, "srl": SRLTask, "relation": RelationTask}


def resolve_config(cfg: Mapping | DictConfig | None = None, preset: str = "cpu", overrides: Sequence[str] | Mapping = ()) -> DictConfig:
    """The preset, then ``cfg`` (a full config or a nested dict of changes), then dotted overrides."""
    base = load_config("vidsitu", preset)
    if cfg is not None:
        base = OmegaConf.merge(base, OmegaConf.create(to_dict(cfg)))
    return merge_overrides(base, overrides) if overrides else base


def _contextualizer(spec: str | os.PathLike | None, in_dim: int, cfg) -> tuple[dict | None, dict | None, str]:
    """-> (TxE arch, pretrained TxE state dict, label)."""
    if spec is None or str(spec) == "none":
        return None, None, "none"
    if str(spec) == "scratch":
        return arch_spec("moviessl.models.txe:build_txe", preset=str(cfg.txe.preset), in_dim=int(in_dim),
                         **dict(cfg.txe.get("overrides") or {})), None, "scratch"
    obj = load_checkpoint(spec, stage="context")
    stride = (obj.get("meta") or {}).get("token_stride_s")
    if stride is not None and float(stride) != 2.0:
        log.warning("%s: TxE pretrained on tokens %ss apart; VidSitu events are 2 s apart", spec, stride)
    txe = build_arch(obj["arch"])
    if int(getattr(txe, "in_dim", in_dim)) != int(in_dim):
        raise BadInputError(spec, f"TxE takes {txe.in_dim}-d event features but the inputs are {in_dim}-d")
    return obj["arch"], obj["state_dict"], f"ckpt:{file_hash(spec)}"


def _settings_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@torch.no_grad()
def predict_split(spec, model: torch.nn.Module, data, split, batch_size: int) -> list[dict]:
    """Submission entries for the whole split (fallback entries for segments without inputs)."""
    model.eval()
    device = next(model.parameters()).device
    preds: dict[int, dict] = {}
    for batch in loader(data, batch_size, shuffle=False):
        idx = batch["i"].tolist()
        y = batch.get("y")
        entries = spec.entries(model, batch["x"].to(device), None if y is None else y.to(device),
                               [data.ann_idx[i] for i in idx], [data.vsegs[i] for i in idx])
        for e in entries:
            preds[e["ann_idx"]] = e
    for ai, vseg in enumerate(split.vseg_ids):
        if ai not in preds:
            preds[ai] = spec.fallback(ai, vseg, split)
    return [preds[ai] for ai in sorted(preds)]


def run_finetune(task: str, data_root: str | os.PathLike, features: str | os.PathLike | None = None,
                 videos: str | os.PathLike | None = None, backbone: str | os.PathLike | None = None,
                 contextualizer: str | os.PathLike | None = "none", seeds: int = 1, out: str | os.PathLike = "runs/finetune",
                 cfg: Mapping | DictConfig | None = None, preset: str = "cpu", overrides: Sequence[str] | Mapping = (),
                 tokenizer: str | os.PathLike | None = None, resume: bool = False) -> dict:
    """Train ``seeds`` runs of ``task`` (verb | srl | relation) and evaluate each on the eval split.

    Inputs: ``features`` (a feature folder, (5, D) per segment) or ``videos`` + ``backbone`` (a
    stage-"backbone" checkpoint; verb fine-tunes it end to end, srl/relation extract frozen
    features once into ``out/features``). ``contextualizer``: "none", "scratch" or a stage-"context"
    checkpoint (fine-tuned). Returns ``{"task", "out", "runs": [{"seed", "dir", "metrics"}],
    "summary": {metric: {"mean", "se", "n"}}, "table": markdown}``.
    """
    from ..eval.stats import summarize
    from ..eval.vidsitu import evaluate
    try:
        from ..features import FeatureStore
    except ImportError:  # the package may not re-export it
        from ..features.store import FeatureStore

    if task not in TASKS:
        raise BadInputError(None, f"unknown task '{task}' (choose from {', '.join(TASKS)})")
    if (features is None) == (videos is None):
        raise BadInputError(None, "give exactly one of --features DIR or --videos DIR")
    if int(seeds) < 1:
        raise BadInputError(None, f"--seeds must be >= 1, got {seeds}")
    cfg = resolve_config(cfg, preset, overrides)
    tcfg = cfg[task]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)

    train_split = load_split(data_root, cfg.data.train_split)
    eval_split = load_split(data_root, cfg.data.eval_split, split_file=cfg.data.get("split_file"))

    # ---- inputs
    backbone_arch = backbone_state = backbone_obj = None
    if features is not None:
        store = FeatureStore(features)
        source, in_dim, inputs = feature_source(store), store.dim, f"features:{Path(features).resolve()}"
    else:
        if backbone is None:
            raise BadInputError(None, "--videos needs --backbone CKPT (a stage-'backbone' checkpoint)")
        backbone_obj = load_checkpoint(backbone, stage="backbone")
        meta = backbone_obj.get("meta", {})
        in_meta = dict(meta.get("input") or {})
        in_dim = int(meta.get("out_dim") or build_arch(backbone_obj["arch"]).out_dim)
        nf, st = cfg.data.get("num_frames"), cfg.data.get("stride")
        vsrc = video_source(videos, in_meta, nf, st)
        inputs = f"videos:{Path(videos).resolve()} backbone:{file_hash(backbone)}"
        if task == "verb":  # Slow-D fine-tuned end to end on the event clips
            source, backbone_arch, backbone_state = vsrc, backbone_obj["arch"], backbone_obj["state_dict"]
        else:  # frozen features, extracted once and cached beside the runs
            feat_dir = out / f"features_{file_hash(backbone)}"
            vsegs = list(dict.fromkeys(train_split.vseg_ids + eval_split.vseg_ids))
            clips, kept, _ = vsrc(vsegs)
            net = build_arch(backbone_obj["arch"])
            net.load_state_dict(backbone_obj["state_dict"])
            dev = "cuda" if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda") else "cpu"
            extract_features(net, clips, kept, feat_dir, batch_size=4, device=dev)
            store = FeatureStore(feat_dir, num_events=5)
            source = feature_source(store)
    txe_arch, txe_state, ctx_label = _contextualizer(contextualizer, in_dim, cfg)

    # ---- task targets
    tok = None
    if task == "srl":
        tok_path = out / "tokenizer.json"
        if tokenizer is not None:
            tok = SRLTokenizer.from_file(tokenizer)
        elif tok_path.is_file():
            tok = SRLTokenizer.from_file(tok_path)  # same vocabulary for every run of this job
    spec = TASKS[task](tcfg, train_split, eval_split=eval_split, tokenizer=tok)
    if task == "srl":
        spec.tok.save(out / "tokenizer.json")
    train_data = build_segments(train_split, source, spec.train_target)
    eval_data = build_segments(eval_split, source, spec.eval_target, need_records=task != "verb")
    if len(train_data) == 0:
        raise BadInputError(data_root, f"no usable training segments ({len(train_data.skipped)} skipped, e.g. "
                                       f"{next(iter(train_data.skipped.items()), ('-', '-'))})")
    counts = {"train_segments": len(train_data), "train_skipped": len(train_data.skipped),
              "eval_segments": len(eval_split.vseg_ids), "eval_without_inputs": len(eval_split.vseg_ids) - len(eval_data)}
    log.info("%s: %d train segments (%d skipped), %d/%d eval segments with inputs", task, len(train_data),
             len(train_data.skipped), len(eval_data), len(eval_split.vseg_ids))
    settings = _settings_hash(task, to_dict(cfg), inputs, ctx_label, str(tokenizer))

    threads = cfg.get("threads")
    prev_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        job = _Job(task, cfg, spec, out, settings, in_dim, backbone_arch, backbone_state, backbone_obj,
                   txe_arch, txe_state, train_data, eval_data, eval_split, inputs, ctx_label, counts, resume)
        runs = [_run_seed(job, int(cfg.seed) + k) for k in range(int(seeds))]
    finally:
        torch.set_num_threads(prev_threads)

    summary, table = summarize([r["metrics"] for r in runs], keys=list(spec.metric_keys), title=f"{task} ({ctx_label})")
    result = {"task": task, "out": str(out), "inputs": inputs, "contextualizer": ctx_label, "seeds": len(runs),
              "runs": runs, "summary": summary, "table": table, **counts}
    atomic_write_json(out / "summary.json", result)
    atomic_write_text(out / "summary.md", f"# VidSitu {task}: {len(runs)} run(s), mean ± standard error\n\n"
                                          f"inputs: `{inputs}`, contextualizer: `{ctx_label}`\n\n{table}")
    return result


@dataclass
class _Job:
    """What every seed of one finetune call shares."""

    task: str
    cfg: Any
    spec: Any
    out: Path
    settings: str
    in_dim: int
    backbone_arch: dict | None
    backbone_state: dict | None
    backbone_obj: dict | None
    txe_arch: dict | None
    txe_state: dict | None
    train_data: Any
    eval_data: Any
    eval_split: Any
    inputs: str
    ctx_label: str
    counts: dict
    resume: bool


def _run_seed(job: _Job, seed: int) -> dict:
    """Train, predict, evaluate and export one run (skipped when already finished with the same settings)."""
    from ..eval.vidsitu import evaluate

    task, cfg, spec = job.task, job.cfg, job.spec
    tcfg = cfg[task]
    run_dir = job.out / f"seed{seed}"
    mfile = run_dir / "metrics.json"
    if mfile.is_file():
        done = json.loads(mfile.read_text())
        if done.get("settings") == job.settings:
            log.info("%s: seed %d already done, skipped", task, seed)
            return {"seed": seed, "dir": str(run_dir), "metrics": done["metrics"]}
    t0 = time.perf_counter()
    seed_everything(seed)
    model, arch = spec.build_model(job.in_dim, job.backbone_arch, job.txe_arch)
    if job.backbone_state is not None:
        model.encoder.backbone.load_state_dict(job.backbone_state)
    if job.txe_state is not None:
        model.encoder.txe.load_state_dict(job.txe_state)
    loss_kwargs = {}
    if task == "relation" and spec.class_weight() is not None:
        loss_kwargs["weight"] = spec.class_weight()
    module = TaskModule(model, lr=tcfg.lr, weight_decay=tcfg.weight_decay, backbone_lr_scale=tcfg.get("backbone_lr_scale", 1.0),
                        txe_lr_scale=tcfg.get("txe_lr_scale", 1.0), warmup_steps=tcfg.get("warmup_steps", 0),
                        loss_kwargs=loss_kwargs)
    trainer_cfg = dict(to_dict(cfg.trainer))
    trainer_cfg["max_epochs"] = int(tcfg.epochs) if trainer_cfg.get("max_epochs") is None else trainer_cfg["max_epochs"]
    train_loader = loader(job.train_data, tcfg.batch_size, shuffle=True, num_workers=cfg.data.num_workers,
                          ignore_fill=IGNORE if task == "verb" else None, seed=seed)
    # short runs still log (and plot) a few points per epoch
    trainer_cfg["log_every_n_steps"] = max(1, min(int(trainer_cfg.get("log_every_n_steps") or 10), len(train_loader) // 2))
    trainer = fit(module, trainer_cfg, run_dir, train_dataloaders=train_loader, resume=job.resume, throughput_name="segments_per_s")
    train_s = time.perf_counter() - t0
    if not trainer.is_global_zero:  # under DDP, rank 0 alone predicts, scores and writes
        return {"seed": seed, "dir": str(run_dir), "metrics": {}}

    preds = predict_split(spec, model, job.eval_data, job.eval_split, int(cfg.data.eval_batch_size))
    atomic_write_bytes(run_dir / "predictions.pkl", pickle.dumps(preds, protocol=4))
    metrics = evaluate(task, preds, job.eval_split)
    meta = {**spec.meta(), "task": task, "inputs": job.inputs, "contextualizer": job.ctx_label, "seed": seed,
            "metrics": metrics, **job.counts}
    save_checkpoint(run_dir / "model.pt", stage=task, arch=arch, state_dict=model.state_dict(), config=cfg, meta=meta)
    if job.backbone_arch is not None:  # the verb-finetuned Slow-D, usable by `moviessl extract` / relation
        bmeta = dict(job.backbone_obj.get("meta", {}))
        bmeta["method"] = f"{bmeta.get('method', 'unknown')}+verb"
        save_checkpoint(run_dir / "backbone.pt", stage="backbone", arch=job.backbone_arch,
                        state_dict=model.encoder.backbone.state_dict(), config=cfg, meta=bmeta)
    save_config(cfg, run_dir)
    record = {"task": task, "seed": seed, "metrics": metrics, "settings": job.settings, "inputs": job.inputs,
              "contextualizer": job.ctx_label, "train_s": round(train_s, 3), "total_s": round(time.perf_counter() - t0, 3), **job.counts}
    atomic_write_json(mfile, record)  # written last: marks the run finished
    log.info("%s seed %d: %s (%.1fs)", task, seed, json.dumps({k: round(v, 2) for k, v in metrics.items()}), record["total_s"])
    return {"seed": seed, "dir": str(run_dir), "metrics": metrics}
