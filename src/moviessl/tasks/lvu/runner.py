"""K seeded runs of one LVU task with the Object Transformer -> per-span predictions, LVU's
metrics on val and test, mean ± SE summary.

    run_finetune("scene", "ROOT/lvu", instances="inst/supervised", init="ot_pretrain/model.pt",
                 scene_features="feats/cvrl/lvu", contextualizer="txe/model.pt", seeds=5, out="runs/scene")

Layout of ``out``::

    config.yaml                           resolved config (shared by the runs)
    seed{S}/predictions_{val,test}.json   youtube_id -> per-span outputs (``moviessl evaluate lvu`` format)
    seed{S}/metrics.json                  {"metrics": {"val_top1"|"val_mse", "test_..."}, counts, settings}
    seed{S}/model.pt                      moviessl checkpoint, stage "lvu"
    seed{S}/logs/metrics.csv, curves.png, checkpoints/last.ckpt
    summary.json, summary.md              mean ± standard error over the runs

Protocol (LVU's ``src/run.py``): training items are random 60-s spans (uniform over all spans of
all training videos), ``#videos x epochs`` of them in one pass, AdamW with 10% warm-up and linear
decay, gradient clipping; after training every val / test video is scored through the spans ending
at every second (:mod:`moviessl.eval.lvu` aggregates them). No model selection on val.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ...checkpoint import file_hash, load_checkpoint, save_checkpoint
from ...config import flatten, load_config, merge_overrides, save_config, to_dict
from ...context.ot_spans import EvalSpans, RandomSpans, collate_spans
from ...data.lvu import read_labels
from ...errors import BadInputError
from ...eval.lvu import evaluate
from ...features.instances import open_instances
from ...models.object_transformer import load_matching, ot_settings
from ...utils.io import atomic_write_json
from ..base import SeedJob, TaskOptim, run_seeds, settings_hash, write_summary
from .config import LVUConfig
from .data import LVUInputs, load_inputs, scene_arrays
from .task import TASKS

log = logging.getLogger("moviessl.tasks")


def resolve_config(
    cfg: LVUConfig | Mapping | None = None, preset: str = "cpu", overrides: Sequence[str] | Mapping = ()
) -> LVUConfig:
    """A full config, or the preset with ``cfg`` (a nested dict of changes) and then ``overrides``."""
    if isinstance(cfg, LVUConfig):
        return merge_overrides(cfg, overrides) if overrides else cfg
    base = load_config("lvu", preset, flatten(cfg or {}))
    return merge_overrides(base, overrides) if overrides else base


def build_inputs(
    task: str,
    data_root: str | os.PathLike,
    instances: str | os.PathLike | None = None,
    instance_meta: str | os.PathLike | None = None,
    scene_features: str | os.PathLike | None = None,
    scene_kind: str = "auto",
    contextualizer: str | os.PathLike | None = None,
    scene_stride_s: float | None = None,
) -> LVUInputs:
    """The OT's inputs for ``task`` from files. With LVU's released ``features/`` the instance
    metadata defaults to ``<data_root>/instance_meta/instance_meta_<task>.pkl``."""
    inst = None
    desc = []
    if instances is not None:
        meta = instance_meta
        if meta is None:
            cand = [Path(data_root) / "instance_meta" / f"instance_meta_{task}.pkl"]
            cand.append(Path(data_root).parent / "instance_meta" / f"instance_meta_{task}.pkl")
            meta = next((c for c in cand if c.is_file()), None)
        inst = open_instances(instances, meta)
        desc.append(f"instances:{Path(instances).resolve()}:{inst.backbone}")
    scene, stride = None, 2.0
    if scene_features is not None:
        scene, stride, d = scene_arrays(scene_features, scene_kind, contextualizer)
        desc.append(d)
    return load_inputs(inst, scene, scene_stride_s or stride, desc=" ".join(desc))


@torch.no_grad()
def predict_spans(model, videos, cfg: LVUConfig, halfway: int, max_instances: int) -> dict[str, list]:
    """``youtube_id -> [span output, ...]`` over every span of every video (spans end at every second)."""
    model.eval()
    data = EvalSpans(videos, cfg.data.span_s, max_instances, halfway)
    device = next(model.parameters()).device
    out: dict[str, list] = {v.vid: [] for v in videos}
    dl = DataLoader(data, batch_size=cfg.data.eval_batch_size, shuffle=False, collate_fn=collate_spans)
    for batch in dl:
        x = {k: t.to(device) for k, t in batch["x"].items()}
        for j, o in zip(batch["i"].tolist(), model.span_outputs(x)):
            out[videos[j].vid].append(o.tolist())
    return out


def run_finetune(
    task: str,
    data_root: str | os.PathLike,
    instances: str | os.PathLike | None = None,
    instance_meta: str | os.PathLike | None = None,
    scene_features: str | os.PathLike | None = None,
    scene_kind: str = "auto",
    contextualizer: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    seeds: int = 1,
    out: str | os.PathLike = "runs/lvu",
    cfg: LVUConfig | Mapping | None = None,
    preset: str = "cpu",
    overrides: Sequence[str] | Mapping = (),
    resume: bool = False,
    inputs: LVUInputs | None = None,
) -> dict:
    """Train ``seeds`` runs of one LVU task and score each on ``data.eval_splits`` (val, test).

    Inputs: instance features (``instances``: ``moviessl extract-instances`` output or LVU's
    ``features/`` + ``instance_meta``), scene features (``scene_features``: a ``moviessl extract``
    folder; ``scene_kind`` ctx / feats / auto; ``contextualizer``: contextualise them here), or a
    prebuilt ``inputs``. ``init``: a pretrained OT (stage "ot", ``moviessl pretrain-ot``); weights
    whose shapes match are loaded. Returns the summary record (``write_summary``)."""
    if task not in TASKS:
        raise BadInputError(None, f"unknown LVU task '{task}' (choose from {', '.join(TASKS)})")
    if int(seeds) < 1:
        raise BadInputError(None, f"--seeds must be >= 1, got {seeds}")
    spec = TASKS[task]
    cfg = resolve_config(cfg, preset, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    if inputs is None:
        inputs = build_inputs(
            task,
            data_root,
            instances,
            instance_meta,
            scene_features,
            scene_kind,
            contextualizer,
            cfg.data.scene_stride_s,
        )
    labels = {s: dict(read_labels(data_root, task, s)) for s in ["train", *cfg.data.eval_splits]}
    train = [inputs.videos[v] for v in labels["train"] if v in inputs]
    evals = {s: [inputs.videos[v] for v in labels[s] if v in inputs] for s in cfg.data.eval_splits}
    if not train:
        raise BadInputError(data_root, f"{task}: no training video has inputs ({len(labels['train'])} labelled)")
    counts = {f"{s}_videos": f"{len(train) if s == 'train' else len(evals[s])}/{len(labels[s])}" for s in labels}
    log.info("%s: %s", task, ", ".join(f"{k} {v}" for k, v in counts.items()))

    init_obj, init_label = None, "none"
    if init is not None:
        init_obj = load_checkpoint(init, stage="ot")
        init_label = f"ot:{file_hash(init)}"
    mcfg = dict(cfg.model.overrides)

    def build(seed: int):
        model, arch = spec.build_model(inputs.in_dim, inputs.scene_dim, cfg.model.preset, **mcfg)
        if init_obj is not None:
            rep = load_matching(model.ot, init_obj["state_dict"])
            if not rep["loaded"]:
                raise BadInputError(init, "no weight of the pretrained OT matches this model (other preset?)")
            log.debug("init from %s: %d tensors loaded, %d kept new", init, len(rep["loaded"]), len(rep["missing"]))
        return model, arch

    ot = ot_settings(cfg.model.preset, **mcfg)
    halfway, max_inst = int(ot["max_positions"]) // 2, int(ot["max_instances"])
    y_train = np.array([float(labels["train"][v.vid]) for v in train], np.float32)

    def loader(seed: int):
        data = RandomSpans(
            train, y_train, len(train) * cfg.train.epochs, cfg.data.span_s, max_inst, halfway, cfg.data.box_jitter
        )
        return DataLoader(
            data,
            batch_size=cfg.train.batch_size,
            shuffle=False,  # items are random draws already
            num_workers=cfg.data.num_workers,
            persistent_workers=cfg.data.num_workers > 0,
            collate_fn=collate_spans,
        )

    def score(model, run_dir: Path) -> dict:
        metrics = {}
        for split, vids in evals.items():
            preds = predict_spans(model, vids, cfg, halfway, max_inst)
            atomic_write_json(run_dir / f"predictions_{split}.json", preds, indent=None)
            if preds:
                metrics[f"{split}_{spec.metric}"] = evaluate(task, preds, labels[split])[spec.metric]
        return metrics

    def export(model, arch: dict, run_dir: Path, run: dict) -> None:
        meta = {**spec.meta(), "inputs": inputs.desc, "init": init_label, **run, **counts}
        save_checkpoint(
            run_dir / "model.pt", stage="lvu", arch=arch, state_dict=model.state_dict(), config=cfg, meta=meta
        )

    tc = cfg.train
    job = SeedJob(
        name=task,
        out=out,
        settings=settings_hash(task, to_dict(cfg), inputs.desc, init_label, sorted(inputs.videos)),
        config=cfg,
        optim=TaskOptim(
            lr=tc.lr,
            weight_decay=tc.weight_decay,
            warmup_frac=tc.warmup_frac,
            decay="linear",
            no_decay_vectors=True,
        ),
        trainer=cfg.trainer,
        epochs=1,  # the dataset already holds #videos x train.epochs spans
        build=build,
        loader=loader,
        score=score,
        export=export,
        record={"inputs": inputs.desc, "init": init_label, **counts},
        throughput_name="spans_per_s",
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
        f"{task} ({inputs.desc or 'inputs'})",
        f"LVU {task}",
        f"inputs: `{inputs.desc}`, init: `{init_label}`",
        task=task,
        inputs=inputs.desc,
        init=init_label,
        **counts,
    )
