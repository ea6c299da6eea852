"""K seeded runs of one LVU task with the Object Transformer -> per-span predictions, LVU's
metrics on val and test, mean ± SE summary.

    run_finetune("scene", "ROOT/lvu", instances="inst/supervised", init="ot_pretrain/model.pt",
                 scene_features="feats/cvrl/lvu", contextualizer="txe/model.pt", seeds=5, out="runs/scene")

Layout of ``out``::

    config.yaml                           resolved config (shared by the runs)
    videos.json                           per split the labelled videos used and those missing (no inputs)
    seed{S}/config.yaml                   the run's own (its seed)
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
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ...checkpoint import file_hash, load_checkpoint, refuse_nonfinite, save_checkpoint
from ...config import flatten, load_config, merge_overrides, save_config, to_dict
from ...context.ot_spans import EvalSpans, RandomSpans, collate_spans, input_stats
from ...data.lvu import read_labels
from ...dist import trainer_device
from ...errors import BadInputError
from ...eval.lvu import evaluate
from ...features.extract import run_lock
from ...features.instances import INSTANCE_INDEX, keeps_feature_cache, open_instances, set_feature_cache
from ...features.store import CLAIM_NAME
from ...loader import train_loader
from ...models.object_transformer import load_matching, span_checked_settings
from ...training import check_trainer, keeps_random_streams
from ...utils import progress
from ...utils.digest import content_digest
from ...utils.io import atomic_write_json, ensure_out_dir
from ..base import (
    SeedJob,
    TaskOptim,
    indexed,
    lowest,
    placeless,
    result_config,
    run_seeds,
    seed_range,
    settings_hash,
    write_summary,
)
from .config import LVUConfig
from .data import LVUInputs, contextualize_folder, load_inputs, scene_arrays
from .task import TASKS

log = logging.getLogger("moviessl.tasks")


def resolve_config(
    cfg: LVUConfig | Mapping | None = None, preset: str = "cpu", overrides: Sequence[str] | Mapping = ()
) -> LVUConfig:
    """A full config, or the preset with ``cfg`` (a nested dict of changes) and then ``overrides``."""
    if isinstance(cfg, LVUConfig):  # built in code: range-checked before any work too, as a preset is
        return merge_overrides(cfg, overrides)
    base = load_config("lvu", preset, flatten(cfg or {}))
    return merge_overrides(base, overrides) if overrides else base


def task_labels(data_root: str | os.PathLike, task: str, cfg: LVUConfig) -> dict[str, dict[str, float]]:
    """``split -> {youtube_id: label}`` of the splits a run of ``task`` reads (train, then
    ``data.eval_splits``)."""
    labels = {s: dict(read_labels(data_root, task, s)) for s in ["train", *cfg.data.eval_splits]}
    for split in cfg.data.eval_splits:  # LVU's reference does not check; its splits are disjoint
        shared = sorted(set(labels[split]) & set(labels["train"]))
        if shared:
            log.warning(
                "%s: %d %s videos are training videos too (first: %s): their %s scores are not held out",
                task,
                len(shared),
                split,
                shared[0],
                split,
            )
    return labels


def contextualize_tasks(
    tasks: Sequence[str],
    data_root: str | os.PathLike,
    scene_features: str | os.PathLike,
    contextualizer: str | os.PathLike,
    out: str | os.PathLike,
    preset: str = "cpu",
    overrides: Sequence[str] | Mapping = (),
    seeds: int = 1,
    instances: str | os.PathLike | None = None,
    instance_meta: str | os.PathLike | None = None,
) -> None:
    """Before ``--task all``'s first task: the scene features of every film the tasks read through
    the TxE, into the cache their runs share (:func:`moviessl.tasks.lvu.data.contextualize_folder`),
    so that the ranks Lightning's launcher starts at the first ``fit`` find every film done. The
    config, the ``seeds`` runs' seeds, every task's instance metadata (``instances``: LVU's
    features/) and every label file are checked first (a typo must not wait for the pass)."""
    cfg = resolve_config(None, preset, overrides)
    check_trainer(cfg.trainer)
    seed_range(cfg.seed, max(int(seeds), int(cfg.train.tune_seeds)))
    span_checked_settings(cfg.model.preset, cfg.model.overrides, cfg.data.span_s)
    if instances is None:  # the first task's runner says so too, after the pass over every film
        refuse_instance_settings(overrides)
    check_instance_meta(tasks, data_root, instances, instance_meta)
    ids = sorted({v for t in tasks for split in task_labels(data_root, t, cfg).values() for v in split})
    device = trainer_device(cfg.trainer)
    contextualize_folder(scene_features, contextualizer, out, ids, cfg.trainer.progress_bar, device)


# settings only the instance tokens read (their boxes' jitter, their tracks' corruption)
INSTANCE_SETTINGS = ("model.track_mask", "data.box_jitter")


def refuse_instance_settings(overrides: Sequence[str] | Mapping) -> None:
    """One line naming a typed override of :data:`INSTANCE_SETTINGS` in a run without ``--instances``:
    a scene-only run has no instance tokens and read it not at all, exit 0 (as ``data.scene_stride_s``
    in a run without scene features). Only what the user typed: the presets set both for every run."""
    keys = flatten(overrides) if isinstance(overrides, Mapping) else (ov.partition("=")[0].strip() for ov in overrides)
    for key in keys:
        if key in INSTANCE_SETTINGS:
            raise BadInputError(key, "qualifies the instance tokens: give --instances too")


def is_instance_folder(instances: str | os.PathLike | None) -> bool:
    """Whether ``instances`` is a ``moviessl extract-instances`` folder (finished or not), not LVU's features/."""
    return instances is not None and any((Path(instances) / n).is_file() for n in (INSTANCE_INDEX, CLAIM_NAME))


# the option that gives each pathway's features (named when a pathway has none of a task's videos)
PATHWAY_OPTION = {"instance": "--instances", "scene": "--scene-features"}


def pathway_gaps(videos: Sequence) -> dict[str, int]:
    """For each pathway the inputs were given (instances, scene), how many of ``videos``
    (:class:`~moviessl.context.ot_spans.SpanVideo`) hold no token of it: :func:`.data.load_inputs`
    gives a video missing from one pathway an empty one, so it trains and scores without it."""
    out = {}
    for name, part in (("instance", lambda v: v.inst), ("scene", lambda v: v.scene)):
        given = [part(v) for v in videos if part(v) is not None]
        if given:
            out[name] = sum(len(x) == 0 for x in given)
    return out


def coverage(
    trained: int, labels: dict[str, dict], evals: dict[str, list], gaps: Mapping[str, int] | None = None, used: int = 0
) -> str | None:
    """``None`` when every labelled video of every split has inputs; else one line saying what the
    scores cover (a split with none gets no score at all). ``gaps``: :func:`pathway_gaps` of the
    ``used`` videos trained on and scored (an OT++ score of videos without scene tokens is not one)."""
    parts = [
        f"{s}: scored on {len(v)} of {len(labels[s])} labelled videos (the others have no inputs)"
        for s, v in evals.items()
        if len(v) < len(labels[s])
    ]
    if trained < len(labels["train"]):
        parts.append(f"trained on {trained} of {len(labels['train'])} labelled videos")
    parts += [f"{n} of the {used} videos used have no {name} tokens" for name, n in (gaps or {}).items() if n]
    return ("PARTIAL: " + "; ".join(parts)) if parts else None


def video_record(task: str, labels: Mapping[str, Mapping[str, float]], inputs, gaps: Mapping[str, int]) -> dict:
    """``videos.json``: per split the labelled videos trained on / scored (``used``) and those left out
    for want of inputs (``missing``), and per pathway given the used videos that hold none of its
    tokens (trained and scored without it)."""
    splits = {}
    for split, vids in labels.items():
        have = [v for v in vids if v in inputs]
        splits[split] = {"used": sorted(have), "missing": sorted(v for v in vids if v not in inputs)}
    rec: dict = {"task": task, "splits": splits}
    parts = {"instance": lambda v: v.inst, "scene": lambda v: v.scene}
    for name in gaps:
        rec[f"without_{name}_tokens"] = {
            split: [v for v in s["used"] if _holds_none(parts[name](inputs.videos[v]))] for split, s in splits.items()
        }
    return rec


def _holds_none(part) -> bool:
    return part is None or len(part) == 0


def instance_meta_path(task: str, data_root: str | os.PathLike, instance_meta: str | os.PathLike | None) -> Path | None:
    """LVU's instance metadata of ``task``: ``instance_meta`` (the file, or the folder holding
    ``instance_meta_<task>.pkl``), else that file under ``<data_root>/instance_meta/`` or beside
    ``data_root`` (None: neither holds it)."""
    if instance_meta is not None:
        meta = Path(instance_meta)
        return meta / f"instance_meta_{task}.pkl" if meta.is_dir() else meta
    cand = [Path(data_root) / "instance_meta" / f"instance_meta_{task}.pkl"]
    cand.append(Path(data_root).parent / "instance_meta" / f"instance_meta_{task}.pkl")
    return next((c for c in cand if c.is_file()), None)


def check_instance_meta(tasks: Iterable[str], data_root, instances, instance_meta) -> None:
    """Before any work: every task's instance metadata where ``instances`` is LVU's released
    ``features/`` (it holds no boxes of its own), so ``--task all`` does not stop at the first task
    after a contextualizer's pass over every film."""
    if instances is None or is_instance_folder(instances):
        return
    for task in tasks:
        meta = instance_meta_path(task, data_root, instance_meta)
        if meta is None:
            raise BadInputError(
                instances,
                f"LVU's features/ needs instance_meta_{task}.pkl: none under {Path(data_root) / 'instance_meta'} "
                "or beside the data root; give --instance-meta",
            )
        if not meta.is_file():
            raise BadInputError(meta, f"not found (the instance metadata of task {task})")


def build_inputs(
    task: str,
    data_root: str | os.PathLike,
    instances: str | os.PathLike | None = None,
    instance_meta: str | os.PathLike | None = None,
    scene_features: str | os.PathLike | None = None,
    scene_kind: str = "auto",
    contextualizer: str | os.PathLike | None = None,
    scene_stride_s: float | None = None,
    ids: Iterable[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool = True,
) -> LVUInputs:
    """The OT's inputs for ``task`` from files. With LVU's released ``features/`` the instance
    metadata defaults to ``<data_root>/instance_meta/instance_meta_<task>.pkl`` (``instance_meta``:
    that file, or a folder holding it). ``ids``: only these videos (the task's labelled ones: a
    scene feature folder holds every movie of all nine tasks).
    ``cache_dir``: where scene features that ``contextualizer`` makes are cached (else in RAM);
    ``device``: where its TxE runs (default: this rank's GPU where there is one), with a progress bar
    unless ``progress`` is False."""
    inst = None
    desc = []
    if instances is not None:
        inst = open_instances(instances, instance_meta_path(task, data_root, instance_meta))
        desc.append(f"instances:{Path(instances).resolve()}:{inst.backbone}")
    scene, stride = None, 2.0
    if scene_features is not None:
        scene, stride, d = scene_arrays(
            scene_features, scene_kind, contextualizer, ids=ids, cache_dir=cache_dir, progress=progress, device=device
        )
        desc.append(d)
    desc = " ".join(desc)
    key = placeless(desc, *indexed(instances, scene_features))  # a folder without an index keeps its place
    return load_inputs(inst, scene, scene_stride_s or stride, ids=ids, desc=desc, key=key)


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


# Config keys that say how the schedule is chosen, not what a run trains (kept out of run hashes).
_SELECTION_KEYS = ("epochs_grid", "tune_seeds")

# what a pretrained OT may lack or hold in another shape without a word: LVU's force-load drops the
# pretraining head, and an input layer of another width (other features) is learnt anew
_REPLACEABLE = ("head.", "reduction.", "mask_embedding", "inst_norm.", "scene_norm.")
_NEW_IN_FINETUNING = ("head.", "scene_proj.", "scene_type", "scene_norm.")  # OT++'s scene pathway on an OT


def unfitting_init(report: dict, own: dict) -> list[str]:
    """The tensors of :func:`~moviessl.models.object_transformer.load_matching`'s ``report`` that say
    the pretrained OT has other settings than this one (another depth, width, table size or input
    normalisation): a pretrained tensor this model has no place for, or one of another shape outside
    :data:`_REPLACEABLE`, and a tensor of this model (outside the parts fine-tuning adds) the
    pretrained OT lacks. LVU's loader ignores them; here they are said."""
    odd = [k for k in report["skipped"] if not k.startswith("head.") and not (k in own and k.startswith(_REPLACEABLE))]
    skipped = set(report["skipped"])
    odd += [k for k in report["missing"] if k not in skipped and not k.startswith(_NEW_IN_FINETUNING)]
    return sorted(odd)


def heldout_criterion(task: str, preds: Mapping[str, list], labels: Mapping[str, float]) -> float:
    """What the epoch rule minimises on held-out training videos, on LVU's video-level prediction:
    the mean negative log-likelihood of the label under the video's mean span probabilities
    (classification; smoother than top-1 on a few dozen videos, and it penalises over-confidence),
    or the MSE of the mean span prediction (regression, LVU's own metric)."""
    if TASKS[task].regression:
        return float(np.mean([(np.mean(preds[v]) - float(labels[v])) ** 2 for v in preds]))
    nll = [-np.log(max(float(np.mean(preds[v], axis=0)[int(labels[v])]), 1e-6)) for v in preds]
    return float(np.mean(nll))


def tune_epochs(
    task: str,
    train: list,
    train_labels: Mapping[str, float],
    cfg: LVUConfig,
    out: Path,
    make_job,
    halfway: int,
    max_instances: int,
    heldout_fraction: float = 0.2,
) -> dict:
    """The rule that sets how long a task trains, the same for every row: hold out
    ``heldout_fraction`` of the *training* videos (a fixed permutation by ``cfg.seed``), train on the
    rest for each ``cfg.train.epochs_grid`` value (``cfg.train.tune_seeds`` runs each), and keep the
    value with the lowest :func:`heldout_criterion`. No val / test video is read. Writes
    ``out/tuning.json``; runs are cached like any other (``out/epochs{E}/seed{S}``)."""
    perm = np.random.default_rng(cfg.seed).permutation(len(train))
    n_held = max(1, int(round(len(train) * heldout_fraction)))
    if len(train) - n_held < 1:
        raise BadInputError(None, f"{task}: {len(train)} training video(s) cannot be split to choose the epochs")
    held = [train[i] for i in sorted(perm[:n_held])]
    fit_part = [train[i] for i in sorted(perm[n_held:])]
    held_labels = {v.vid: train_labels[v.vid] for v in held}

    def score(model, run_dir: Path) -> dict:
        preds = predict_spans(model, held, cfg, halfway, max_instances)
        return {"heldout": heldout_criterion(task, preds, held_labels)}

    values: dict[str, list[float]] = {}
    seeds = [cfg.seed + k for k in range(cfg.train.tune_seeds)]
    grid = list(cfg.train.epochs_grid)
    for k, e in enumerate(grid):
        job = make_job(f"{task} (epochs {e}, held-out)", out / f"epochs{e}", fit_part, int(e), score, _no_export, {})
        with progress.part(k, len(grid)):  # the time left's progress: one part per value
            values[str(e)] = [r["metrics"]["heldout"] for r in run_seeds(job, seeds)]
    mean = {k: float(np.mean(v)) for k, v in values.items()}
    best = int(lowest(mean))
    result = {
        "task": task,
        "param": "train.epochs",
        "best": best,
        "criterion": "video NLL" if not TASKS[task].regression else "video MSE",
        "values": values,
        "mean": mean,
        "heldout_videos": n_held,
        "fit_videos": len(fit_part),
    }
    atomic_write_json(out / "tuning.json", result)
    log.info("%s: train.epochs %d (held-out %s)", task, best, {k: round(m, 4) for k, m in mean.items()})
    return result


def _no_export(*_) -> None:
    return None


@keeps_random_streams  # its runs are run_seed's; a TxE built before them drew from torch's generator
@keeps_feature_cache
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
    scene_cache: str | os.PathLike | None = None,
) -> dict:
    """Train ``seeds`` runs of one LVU task and score each on ``data.eval_splits`` (val, test).

    Inputs: instance features (``instances``: ``moviessl extract-instances`` output or LVU's
    ``features/`` + ``instance_meta``), scene features (``scene_features``: a ``moviessl extract``
    folder; ``scene_kind`` ctx / feats / auto; ``contextualizer``: contextualise them here), or a
    prebuilt ``inputs``. ``init``: a pretrained OT (stage "ot", ``moviessl pretrain-ot``); weights
    whose shapes match are loaded. ``scene_cache``: the folder whose ``scene_ctx/`` keeps the scene
    features ``contextualizer`` makes (default ``out``; ``--task all`` shares its top folder's).
    Returns the summary record (``write_summary``)."""
    if task not in TASKS:
        raise BadInputError(None, f"unknown LVU task '{task}' (choose from {', '.join(TASKS)})")
    if int(seeds) < 1:
        raise BadInputError(None, f"--seeds must be >= 1, got {seeds}")
    spec = TASKS[task]
    # options that only qualify a pathway's inputs: without that pathway they were ignored, and a run
    # meant as OT++ (a --contextualizer, even one that does not exist) trained the OT alone, exit 0
    if inputs is None and scene_features is None:
        for name, value in (("--contextualizer", contextualizer), ("--scene-kind", scene_kind != "auto" or None)):
            if value is not None:
                raise BadInputError(name, "qualifies the scene features: give --scene-features too")
    if inputs is None and instances is None and instance_meta is not None:
        raise BadInputError("--instance-meta", "goes with LVU's features/: give --instances too")
    if inputs is None and instance_meta is not None and is_instance_folder(instances):
        # its boxes are those it was extracted from: the metadata was read by nobody, exit 0
        raise BadInputError(
            "--instance-meta",
            f"goes with LVU's features/; {instances} is a `moviessl extract-instances` folder, whose boxes are "
            "the tracks it was extracted from",
        )
    cfg = resolve_config(cfg, preset, overrides)
    check_trainer(cfg.trainer)
    seed_range(cfg.seed, max(int(seeds), int(cfg.train.tune_seeds)))  # every run's seed, before any work
    mcfg = dict(cfg.model.overrides)
    ot = span_checked_settings(cfg.model.preset, cfg.model.overrides, cfg.data.span_s)
    set_feature_cache(cfg.data.instance_cache_mb)
    if len(cfg.train.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.train.betas):
        raise BadInputError("train.betas", f"must be two numbers in [0, 1), got {list(cfg.train.betas)}")
    stride = cfg.data.scene_stride_s
    if stride is not None and (isinstance(stride, bool) or not (isinstance(stride, (int, float)) and stride > 0)):
        # 0 fell back to the folder's stride without a word; a negative one put the events at negative
        # seconds, which span_tails' per-second counts index from the end (spans of garbage, exit 0)
        raise BadInputError("data.scene_stride_s", f"must be a positive number of seconds (or null), got {stride!r}")
    if inputs is None and scene_features is None and stride is not None:
        # it places the scene tokens: an OT run read it not at all, exit 0, as --scene-kind above
        raise BadInputError("data.scene_stride_s", "qualifies the scene features: give --scene-features too")
    if inputs is None and instances is None:
        refuse_instance_settings(overrides)
    out = ensure_out_dir(out)
    with run_lock(out):  # one job per folder (the leader of a multi-process launch takes it)
        labels = task_labels(data_root, task, cfg)
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
                ids=sorted(set().union(*labels.values())),
                cache_dir=scene_cache if scene_cache is not None else out,
                device=trainer_device(cfg.trainer),
                progress=cfg.trainer.progress_bar,
            )
        train = [inputs.videos[v] for v in labels["train"] if v in inputs]
        evals = {s: [inputs.videos[v] for v in labels[s] if v in inputs] for s in cfg.data.eval_splits}
        if not train:
            raise BadInputError(data_root, f"{task}: no training video has inputs ({len(labels['train'])} labelled)")
        counts = {f"{s}_videos": f"{len(train) if s == 'train' else len(evals[s])}/{len(labels[s])}" for s in labels}
        log.info("%s: %s", task, ", ".join(f"{k} {v}" for k, v in counts.items()))
        if evals and not any(evals.values()):  # the runs would train and score nothing, exit 0
            raise BadInputError(data_root, f"{task}: no video of {' or '.join(evals)} has inputs ({counts})")
        used = list({v.vid: v for v in [*train, *(v for vs in evals.values() for v in vs)]}.values())
        gaps = pathway_gaps(used)
        for name, n in gaps.items():
            if n == len(used):
                # the model would be built without that pathway (or read none of it) and the run be
                # recorded under the inputs asked for: an "OT++" score that is OT's
                given = {"instance": instances, "scene": scene_features}[name]
                raise BadInputError(
                    given if given is not None else PATHWAY_OPTION[name],
                    f"no {name} features for any of the {n} labelled videos of LVU task '{task}' (other films?)",
                )
        partial = coverage(len(train), labels, evals, gaps, len(used))

        init_obj, init_label = None, "none"
        if init is not None:
            init_obj = load_checkpoint(init, stage="ot")
            refuse_nonfinite(init_obj.get("state_dict"), init)  # loaded into each seed's OT: NaN "diverged" there
            init_label = f"ot:{file_hash(init)}"
        # once the inputs passed their checks: a rerun refused at one left a finished job's config.yaml
        # and run.json naming its refused settings, beside the earlier settings' seeds and summary
        save_config(cfg, out)
        # which videos, not only how many: LVU's YouTube videos go missing (more every year), and two
        # results compare only on the same ids. With config.yaml, for the same reason
        atomic_write_json(out / "videos.json", video_record(task, labels, inputs, gaps))

        warned: list = []

        def build(seed: int, videos: list, stats: list):
            model, arch = spec.build_model(
                inputs.in_dim, inputs.scene_dim, cfg.model.preset, track_mask=cfg.model.track_mask, **mcfg
            )
            if init_obj is not None:
                rep = load_matching(model.ot, init_obj["state_dict"])
                if not rep["loaded"]:
                    raise BadInputError(init, "no weight of the pretrained OT matches this model (other preset?)")
                odd = unfitting_init(rep, model.ot.state_dict())
                if odd and not warned:  # once per setting, not per seed
                    warned.append(True)
                    log.warning(
                        "%s: %d pretrained tensors do not fit this model and stay at initialisation (%s%s): "
                        "model.overrides must match the pretrained OT's",
                        init,
                        len(odd),
                        ", ".join(odd[:4]),
                        ", ..." if len(odd) > 4 else "",
                    )
                log.debug("init from %s: %d tensors loaded, %d kept new", init, len(rep["loaded"]), len(rep["missing"]))
            # model.overrides.input_norm: the statistics of the videos it trains on (a pretrained OT's kept)
            if model.ot.inst_norm is not None or model.ot.scene_norm is not None:
                if not stats:  # once per setting, not per seed
                    stats.append(input_stats(videos))
                model.ot.set_input_stats(*stats[0])
            return model, arch

        halfway, max_inst = int(ot["max_positions"]) // 2, int(ot["max_instances"])
        train_labels = labels["train"]
        labels_digest = content_digest(labels)  # labels edited in place: not the runs made before

        def make_job(name: str, job_out: Path, videos: list, epochs: int, score, export, record: dict) -> SeedJob:
            """One setting's runs: ``videos`` trained for ``epochs`` LVU epochs. The settings hash holds
            the effective schedule, not the grid it was chosen from, so a run is reused whichever way
            its epoch count was set."""
            run_cfg = to_dict(cfg)
            run_cfg["train"] = {k: v for k, v in run_cfg["train"].items() if k not in _SELECTION_KEYS}
            run_cfg["data"].pop("instance_cache_mb")  # RAM, not the result: a finished run stays reusable
            run_cfg["train"]["epochs"] = int(epochs)
            ids = sorted(v.vid for v in videos) if len(videos) < len(train) else sorted(inputs.videos)
            y = np.array([float(train_labels[v.vid]) for v in videos], np.float32)

            def loader(seed: int):
                data = RandomSpans(
                    videos, y, len(videos) * int(epochs), cfg.data.span_s, max_inst, halfway, cfg.data.box_jitter
                )
                return train_loader(
                    data,
                    cfg.train.batch_size,
                    seed=seed,
                    shuffle=False,  # items are random draws already
                    num_workers=cfg.data.num_workers,
                    persistent_workers=cfg.data.num_workers > 0,
                    collate_fn=collate_spans,
                )

            tc = cfg.train
            stats: list = []  # the videos' input statistics, computed by the first run that needs them
            what = (init_label, ids, inputs.data, labels_digest)
            # as this version hashes them, then as earlier ones did (the inputs' folders, the whole config)
            hashes = [
                settings_hash(task, c, d, *what)
                for d in (inputs.key or inputs.desc, inputs.desc)
                for c in (result_config(run_cfg), run_cfg)
            ]
            return SeedJob(
                name=name,
                out=job_out,
                settings=hashes[0],
                earlier_settings=tuple(h for h in dict.fromkeys(hashes) if h != hashes[0]),
                config=cfg,
                optim=TaskOptim(
                    lr=tc.lr,
                    betas=tuple(tc.betas),
                    weight_decay=tc.weight_decay,
                    warmup_frac=tc.warmup_frac,
                    decay="linear",
                    no_decay_vectors=True,
                ),
                trainer=cfg.trainer,
                epochs=1,  # the dataset already holds #videos x epochs spans
                build=lambda seed: build(seed, videos, stats),
                loader=loader,
                score=score,
                export=export,
                record=record,
                throughput_name="spans_per_s",
                resume=resume,
            )

        def score(model, run_dir: Path) -> dict:
            metrics = {}
            for split, vids in evals.items():
                preds = predict_spans(model, vids, cfg, halfway, max_inst)
                if not all(np.isfinite(o).all() for spans in preds.values() for o in spans):
                    # not the evaluator's "bad predictions file": the run itself is what went wrong
                    raise BadInputError(
                        run_dir,
                        "the trained model's outputs are not finite (training diverged: lower train.lr "
                        "or set trainer.gradient_clip_val)",
                    )
                atomic_write_json(run_dir / f"predictions_{split}.json", preds, indent=None)
                if preds:
                    metrics[f"{split}_{spec.metric}"] = evaluate(task, preds, labels[split])[spec.metric]
            return metrics

        def export(model, arch: dict, run_dir: Path, run: dict) -> None:
            meta = {**spec.meta(), "inputs": inputs.desc, "init": init_label, **run, **counts}
            save_checkpoint(
                run_dir / "model.pt", stage="lvu", arch=arch, state_dict=model.state_dict(), config=cfg, meta=meta
            )

        prev_threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            epochs, tuning = int(cfg.train.epochs), None
            parts = 2 if cfg.train.epochs_grid else 1  # the time-left's progress: tuning, then the runs
            if cfg.train.epochs_grid:
                with progress.part(0, parts):
                    tuning = tune_epochs(task, train, train_labels, cfg, out / "tune", make_job, halfway, max_inst)
                epochs = int(tuning["best"])
            record = {"inputs": inputs.desc, "init": init_label, "epochs": epochs, **counts}
            job = make_job(task, out, train, epochs, score, export, record)
            with progress.part(parts - 1, parts):
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
            partial=partial,
            task=task,
            inputs=inputs.desc,
            init=init_label,
            epochs=epochs,
            epochs_tuning=tuning and {k: tuning[k] for k in ("best", "criterion", "mean", "heldout_videos")},
            settings=job.settings,
            **counts,
        )
