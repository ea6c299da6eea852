"""K seeded runs of one VidSitu task -> predictions, official metrics, mean ± SE summary.

    run_finetune("srl", "ROOT/vidsitu", features="feats/", contextualizer="maskpred/model.pt",
                 seeds=3, out="runs/srl")

Layout of ``out``::

    config.yaml                       resolved config (shared by the runs)
    tokenizer.json                    SRL only: trained once, shared by the runs
    tokenizer.key                     SRL only: what it was trained from (other phrases / settings: retrained)
    features_{backbone}_{clips}/      --videos with a frozen backbone: the event features, per clip geometry
    features_{backbone}_{clips}_{how}/  a frozen verb run's features computed otherwise than in plain float32:
                                      at another precision or under autocast (the training clips'; at 64-true
                                      also the scored and --predict's, _float64), or in float32 under a set
                                      trainer.matmul_precision (the training clips', e.g. _float32_high)
    seed{S}/config.yaml               the run's own (its seed)
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

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import yaml

from ...checkpoint import (
    arch_spec,
    build_arch,
    build_from_checkpoint,
    file_hash,
    load_checkpoint,
    refuse_nonfinite,
    save_checkpoint,
)
from ...config import flatten, load_config, merge_overrides, save_config, to_dict
from ...data.vidsitu import load_split, scorable
from ...dist import pins_memory, trainer_device
from ...errors import BadInputError
from ...eval.stats import summarize
from ...eval.vidsitu import evaluate
from ...features.extract import other_backbone_note, precision_name, resize_mode, run_lock
from ...features.store import FeatureStore
from ...models.txe import feature_stats
from ...training import check_trainer, keeps_random_streams, random_streams_kept
from ...utils import progress
from ...utils.digest import content_digest, names_sizes
from ...utils.io import atomic_write_bytes, atomic_write_json, ensure_out_dir
from ...video.transforms import param_dtype, to_model_input
from ..base import (
    SeedJob,
    TaskOptim,
    coverage_note,
    lowest,
    placeless,
    result_config,
    run_seeds,
    seed_range,
    settings_hash,
    write_summary,
)
from . import TASKS
from .config import VidSituConfig
from .data import (
    ClipSource,
    FrozenClipFeatures,
    build_segments,
    extract_features,
    feature_source,
    loader,
    video_source,
)

log = logging.getLogger("moviessl.tasks")


def resolve_config(
    cfg: VidSituConfig | Mapping | None = None, preset: str = "cpu", overrides: Sequence[str] | Mapping = ()
) -> VidSituConfig:
    """A full config, or the preset with ``cfg`` (a nested dict of changes) and then ``overrides``."""
    if isinstance(cfg, VidSituConfig):  # built in code: range-checked before any work too, as a preset is
        out = merge_overrides(cfg, overrides)
    else:
        base = load_config("vidsitu", preset, flatten(cfg or {}))
        out = merge_overrides(base, overrides) if overrides else base
    check_choices(out)
    return out


CHOICES = {  # settings read by name deep inside a run: a typo failed only when the first seed built its model
    "data.input_norm": ("fixed", "batch"),
    "data.resize": ("crop", "squash"),
    "srl.memory": ("self", "all", "self_input"),
}


def check_choices(cfg: VidSituConfig) -> None:
    """One line naming the setting unless each of :data:`CHOICES` holds one of its values."""
    flat = flatten(to_dict(cfg))
    for key, choices in CHOICES.items():
        if flat.get(key) not in choices:
            raise BadInputError(key, f"must be one of {', '.join(choices)}, got {flat.get(key)!r}")


def check_disjoint(train_split, eval_split) -> None:
    """One line when a segment of the evaluation split is also a training segment (e.g.
    ``data.train_split=valid``): the scores would be of data the model was trained on (the released
    splits are disjoint; a filtered ``data.split_file`` is checked the same way)."""
    both = set(train_split.vseg_ids).intersection(eval_split.vseg_ids)
    if both:
        raise BadInputError(
            eval_split.files.get("split"),
            f"{len(both)} of its {len(set(eval_split.vseg_ids))} segments are also in the training split "
            f"{train_split.files.get('split')} (e.g. {min(both)}); scores on them would be of training data",
        )


FULL = ("float32", None, None)  # weights dtype, autocast dtype, float32 matmul precision


def frozen_cache_dir(out: Path, backbone: str | os.PathLike, videos: str | os.PathLike, data, mode: tuple = ()) -> Path:
    """``OUT/features_{backbone hash}_{clips}``: one folder per backbone, videos folder and clip
    geometry (``data.num_frames``, ``stride``, ``resize``), since extraction skips the files it finds:
    a rerun with another geometry or other videos must not reuse the first run's features. ``mode``:
    how they were computed (:func:`frozen_clip_modes`), a folder of its own, ``_{how}``, wherever it
    is not :data:`FULL` -- float32 weights without autocast under the matmul precision as it is: so
    also a float32 run's training features under a set ``trainer.matmul_precision`` (TF32 on a GPU
    at ``high``), which are not SRL's."""
    clips = content_digest(str(Path(videos).resolve()), data.num_frames, data.stride, data.resize)
    how = "" if mode in ((), FULL) else "_" + "_".join(str(m) for m in mode if m is not None)
    return Path(out) / f"features_{file_hash(backbone)}_{clips}{how}"


def frozen_clip_modes(trainer, device: str) -> tuple[tuple, tuple]:
    """How a verb run with a frozen Slow-D computed its clips' features, as (weights dtype, autocast
    dtype, matmul precision): in its training steps (Lightning's precision: float64 weights at
    64-true, autocast at a mixed precision -- bf16 for 16-mixed where Lightning trains on the CPU,
    as it runs it, float16 on a GPU -- under the run's ``matmul_precision``), then when scored (after
    the fit: float64 weights at 64-true, else float32 without autocast, the flags the caller's again).
    On Apple's MPS the cache is computed on the CPU (``device``, :func:`~moviessl.dist.local_device`)
    but Lightning autocasts the steps to float16 on MPS, so the cache takes float16 too."""
    p = precision_name(trainer.precision)
    if p == "64-true":
        return ("float64", None, trainer.matmul_precision), ("float64", None, None)
    half = None
    if p in ("16-mixed", "bf16-mixed"):
        on_gpu = torch.device(device).type != "cpu" or _lightning_trains_on_mps(trainer.accelerator)
        half = "float16" if p == "16-mixed" and on_gpu else "bfloat16"
    return ("float32", half, trainer.matmul_precision), FULL


def _lightning_trains_on_mps(accelerator: str) -> bool:
    """Whether Lightning runs ``accelerator`` on Apple's MPS: ``mps``, and ``gpu`` or ``auto`` where
    its MPS accelerator is available (it picks MPS before CUDA; ``auto`` a TPU first)."""
    from pytorch_lightning.accelerators import MPSAccelerator, XLAAccelerator

    if accelerator == "auto" and XLAAccelerator.is_available():
        return False
    return accelerator == "mps" or (accelerator in ("gpu", "auto") and MPSAccelerator.is_available())


@contextlib.contextmanager
def matmul_precision(value: str | None):
    """``torch.set_float32_matmul_precision(value)`` inside (None: as it is), the caller's after."""
    before = torch.get_float32_matmul_precision()
    try:
        if value is not None:
            torch.set_float32_matmul_precision(value)
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def frozen_clips(p: "Prepared") -> bool:
    """Whether ``p`` trains a head on clips under a frozen backbone (verb with ``--videos`` and
    ``verb.backbone_lr_scale=0``): every epoch would compute the same features again."""
    return p.backbone_obj is not None and p.tcfg.backbone_lr_scale <= 0 and isinstance(p.train_data.x, ClipSource)


def all_finished(out: Path, seeds: Sequence[int], hashes: Sequence[str]) -> bool:
    """Whether every seed's run in ``out`` finished with one of the settings ``hashes`` (as
    :func:`~..base.run_seed` reuses it): a rerun of a finished job computes no features."""
    for seed in seeds:
        try:
            done = json.loads((out / f"seed{seed}" / "metrics.json").read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(done, dict) or done.get("settings") not in hashes:
            return False
    return True


def cache_frozen_clips(p: "Prepared", out: Path, videos: str | os.PathLike, backbone: str | os.PathLike) -> "Prepared":
    """``p`` with the clips of both splits replaced by the frozen backbone's features of them
    (:class:`~.data.FrozenClipFeatures`), extracted once into ``out/features_<hash>...`` -- SRL's and
    relation's cache, a folder of their own for another precision -- and its input statistics, so
    the runs train and score the head on the features each epoch computed again: the same features
    (computed as the run computed them, :func:`frozen_clip_modes`; a clip that fails to decode is
    the same failure), the same batches and random draws, the same model, predictions and exports.
    The settings hash is unchanged: the results are the same."""
    cfg = p.cfg
    train_mode, eval_mode = frozen_clip_modes(cfg.trainer, trainer_device(cfg.trainer))
    # the end-to-end input statistics: float32 features of the same sample of train segments
    sample = stats_rows(len(p.train_data))
    wanted = [(p.train_data, range(len(p.train_data)), train_mode), (p.eval_data, range(len(p.eval_data)), eval_mode)]
    if train_mode != FULL:
        wanted.append((p.train_data, sample, FULL))
    net = frozen_net(p.backbone_obj)
    got = [frozen_features(p, net, data, rows, mode, out, videos, backbone) for data, rows, mode in wanted]
    train, evals = got[:2]
    if train_mode == FULL:
        sx, serr = train.feats[sample], {k for k, i in enumerate(sample) if i in train.errors}
    else:
        sx, serr = got[2].feats, got[2].errors
    ok = [k for k in range(len(sx)) if k not in serr]
    if not ok:
        raise BadInputError(None, f"none of the {len(sx)} training videos read for input statistics decoded")
    stats = feature_stats(sx[ok])
    return dataclasses.replace(
        p,
        train_data=dataclasses.replace(p.train_data, x=train),
        eval_data=dataclasses.replace(p.eval_data, x=evals),
        input_stats=stats,
    )


def frozen_net(backbone_obj: dict) -> torch.nn.Module:
    """The frozen Slow-D as a run builds it (its checkpoint's weights loaded into float32), in eval mode."""
    net = build_arch(backbone_obj["arch"])
    net.load_state_dict(backbone_obj["state_dict"])
    return net.eval()


def frozen_features(
    p: "Prepared",
    net: torch.nn.Module,
    data,
    rows: Sequence[int],
    mode: tuple,
    out: Path,
    videos: str | os.PathLike,
    backbone: str | os.PathLike,
) -> FrozenClipFeatures:
    """``net``'s features of the clips of ``data`` (``p``'s clips of one split) at ``rows``, computed
    as ``mode`` says (:func:`frozen_clip_modes`) into its cache folder (:func:`frozen_cache_dir`;
    segments found there are read, not decoded), with each clip that fails to decode and the
    features of the grey clips a failed one gives in a run. On the CPU, beside those grey clips'
    features, as a loader ships a batch: under a user's ``torch.set_default_device("cuda")`` they
    were made on the GPU, and a batch holding both could not be stacked."""
    cfg = p.cfg
    device = trainer_device(cfg.trainer)
    src = data.x
    folder = frozen_cache_dir(out, backbone, videos, cfg.data, mode)
    vsegs = [data.vsegs[i] for i in rows]
    paths = [src.paths[i] for i in rows]
    clips = ClipSource(paths, src.num_frames, src.stride, src.short_side, src.crop, src.crop_mode)
    dtype, half = getattr(torch, mode[0]), None if mode[1] is None else getattr(torch, mode[1])
    dev = torch.device(device).type
    run = net.to(device, dtype)  # float32 -> float64 -> float32 is exact: one copy serves every mode
    errors: dict[str, str] = {}
    with matmul_precision(mode[2]):
        extract_features(
            run, clips, vsegs, folder, device=device, num_workers=cfg.data.num_workers, autocast=half, errors=errors
        )
        blank = None
        if errors:  # what a clip that fails mid-run gives: the backbone's features of its grey stand-in
            cast = contextlib.nullcontext() if half is None else torch.autocast(dev, dtype=half)
            with torch.no_grad(), cast:
                grey = run(to_model_input(clips.blank().to(device), dtype))
            blank = (grey.double() if grey.dtype == torch.float64 else grey.float()).cpu()
    stored = torch.float64 if dtype == torch.float64 else torch.float32
    feats = torch.zeros(len(vsegs), 5, p.in_dim, dtype=stored, device="cpu")
    bad = {}
    for k, v in enumerate(vsegs):
        if v in errors:
            bad[k] = errors[v]
            continue
        path = folder / f"{v}_feats.npy"
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise BadInputError(path, f"unreadable cached features ({type(e).__name__}); delete it") from None
        if arr.shape != tuple(feats.shape[1:]):
            want = tuple(feats.shape[1:])
            raise BadInputError(path, f"cached features of shape {arr.shape}, expected {want}; delete it")
        feats[k] = torch.from_numpy(arr)
    return FrozenClipFeatures(feats, bad, blank, paths)


def _contextualizer(
    spec: str | os.PathLike | None, in_dim: int, cfg: VidSituConfig, backbone: str | None = None
) -> tuple[dict | None, dict | None, str]:
    """-> (TxE arch, pretrained TxE state dict, label); ``backbone``: the hash of the backbone the
    event features come from, said when the TxE was pretrained on another's."""
    if spec is None or str(spec) == "none":
        return None, None, "none"
    if str(spec) == "scratch":
        arch = arch_spec(
            "moviessl.models.txe:build_txe", preset=cfg.txe.preset, in_dim=int(in_dim), **dict(cfg.txe.overrides)
        )
        try:  # checked now, not when the first seed builds its model (after its folder was made)
            build_arch(arch)
        except BadInputError as e:  # named as this stage's settings call them
            key = f"txe.overrides.{e.path[6:]}" if (e.path or "").startswith("model.") else "txe.preset"
            raise BadInputError(key, e.cause) from None
        except (AssertionError, ValueError, TypeError) as e:  # e.g. heads that do not divide dim
            raise BadInputError("txe.overrides", str(e) or type(e).__name__) from None
        return arch, None, "scratch"
    obj = load_checkpoint(spec, stage="context")
    note = other_backbone_note(spec, obj.get("meta") or {}, backbone, "the event features")
    if note:
        log.warning(note)
    stride = (obj.get("meta") or {}).get("token_stride_s")
    if stride is not None and float(stride) != 2.0:
        log.warning("%s: TxE pretrained on tokens %ss apart; VidSitu events are 2 s apart", spec, stride)
    # built as extract builds its TxE: NaN/inf weights are one line naming the file before any seed
    # trains (they ended, a seed later, on "training diverged")
    txe = build_from_checkpoint(obj)
    if int(getattr(txe, "in_dim", in_dim)) != int(in_dim):
        raise BadInputError(spec, f"TxE takes {txe.in_dim}-d event features but the inputs are {in_dim}-d")
    return obj["arch"], obj["state_dict"], f"ckpt:{file_hash(spec)}"


STATS_SEGMENTS = 2000  # clips decoded for the input statistics of an end-to-end run (5 events each)


def stats_rows(n: int) -> list[int]:
    """The train rows an end-to-end run's input statistics are computed from: every one, or
    ``STATS_SEGMENTS`` evenly spaced."""
    if n <= STATS_SEGMENTS:
        return list(range(n))
    return np.linspace(0, n - 1, STATS_SEGMENTS).round().astype(int).tolist()


@torch.no_grad()
def train_input_stats(
    train_data, backbone_obj: dict | None, batch_size: int = 8, device: str = "cpu", num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and variance of the training events' features, computed once: the fixed
    input normalisation of every head and scratch TxE. With clips (end to end), the features of the
    backbone as it starts, computed on ``device`` from at most ``STATS_SEGMENTS`` evenly spaced
    train segments (10k events estimate 2048 means and variances well; decoding all of VidSitu's
    23.6k train segments on every rank before training would take hours), decoded by
    ``num_workers`` loader processes."""
    if backbone_obj is None:
        return feature_stats(train_data.x)
    if len(train_data) > STATS_SEGMENTS:
        train_data = train_data.subset(stats_rows(len(train_data)))
    net = build_arch(backbone_obj["arch"])
    net.load_state_dict(backbone_obj["state_dict"])
    net.to(device).eval()
    feats = []
    # not pinned: pinning is for the current GPU, GPU 0 until Lightning sets this rank's (and the copy
    # below blocks anyway)
    for batch in loader(train_data, batch_size, shuffle=False, num_workers=num_workers, pin_memory=False):
        ok = ~batch["failed"]  # a clip that failed to decode is grey stand-in frames, not a training event
        if not ok.any():
            continue
        x = to_model_input(batch["x"][ok].to(device), param_dtype(net))
        feats.append(net(x.flatten(0, 1)).float().cpu())
    if not feats:
        raise BadInputError(None, f"none of the {len(train_data)} training videos read for input statistics decoded")
    return feature_stats(torch.cat(feats))


@torch.no_grad()
def predict_split(
    spec, model: torch.nn.Module, data, split, batch_size: int, num_workers: int = 0, failed: list | None = None
) -> list[dict]:
    """Submission entries for the whole split (fallback entries for segments without inputs).
    ``num_workers``: loader processes decoding the clips of an end-to-end run (features need none).
    ``failed``: a list the segments that failed to decode now are added to (their entries are
    fallbacks too; the caller's summary says the score is partial)."""
    model.eval()
    device = next(model.parameters()).device
    # float inputs (features) in the weights' dtype, as Lightning's precision gave them in training:
    # a run trained at 64-true holds float64 weights; clips stay uint8 (the encoder converts them)
    dtype = param_dtype(model)
    preds: dict[int, dict] = {}
    failed = [] if failed is None else failed
    workers = num_workers if isinstance(data.x, ClipSource) else 0
    for batch in loader(data, batch_size, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda"):
        idx = batch["i"].tolist()
        y = batch.get("y")
        x = batch["x"].to(device)
        entries = spec.entries(
            model,
            x.to(dtype) if dtype is not None and x.is_floating_point() else x,
            None if y is None else y.to(device),
            [data.ann_idx[i] for i in idx],
            [data.vsegs[i] for i in idx],
        )
        for i, bad, e in zip(idx, batch["failed"].tolist(), entries):
            if bad:  # a clip that failed to decode now: the model saw grey frames, not the segment
                failed.append(data.vsegs[i])
            else:
                preds[e["ann_idx"]] = e
    if failed:
        log.warning(
            "%d eval segments failed to decode (e.g. %s): fallback predictions, as for segments without inputs",
            len(failed),
            failed[0],
        )
    for ai, vseg in enumerate(split.vseg_ids):
        if ai not in preds:
            preds[ai] = spec.fallback(ai, vseg, split)
    return [preds[ai] for ai in sorted(preds)]


def run_baseline(
    task: str,
    data_root: str | os.PathLike,
    baseline: str,
    out: str | os.PathLike,
    cfg: VidSituConfig | Mapping | None = None,
    preset: str = "cpu",
    overrides: Sequence[str] | Mapping = (),
) -> dict:
    """A model-free baseline of ``task`` (e.g. relation's ``pair_prior``) scored like a run: its
    submission ``out/seed0/predictions.pkl``, ``metrics.json`` and a one-run summary."""
    if task not in TASKS or baseline not in TASKS[task].baselines:
        choices = [f"{t}:{b}" for t, cls in TASKS.items() for b in cls.baselines]
        raise BadInputError(None, f"unknown baseline '{task}:{baseline}' (choose from {', '.join(choices)})")
    cfg = resolve_config(cfg, preset, overrides)
    out = Path(out)
    run_dir = out / "seed0"
    train_split = load_split(data_root, cfg.data.train_split)
    eval_split = load_split(data_root, cfg.data.eval_split, split_file=cfg.data.split_file)
    check_disjoint(train_split, eval_split)
    out = ensure_out_dir(out)
    with run_lock(out):  # a training job's seed0 may be under way
        done = run_dir / "metrics.json"
        try:
            baseline_before = "baseline" in json.loads(done.read_text()) if done.is_file() else None
        except (OSError, ValueError, TypeError):  # unreadable: not a baseline's (which this code writes whole)
            baseline_before = False
        # a trained (or training) run's seed0: its predictions, metrics and the job's summary would be overwritten
        trained = any((run_dir / n).exists() for n in ("settings.json", "checkpoints", "model.pt"))
        if baseline_before is False or (baseline_before is None and trained):
            raise BadInputError(out, "holds a trained or training run (seed0/); give the baseline its own --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        spec = TASKS[task](getattr(cfg, task), train_split, eval_split=eval_split, out=out)
        preds = spec.baseline_entries(baseline, eval_split)
        atomic_write_bytes(run_dir / "predictions.pkl", pickle.dumps(preds, protocol=4))
        scored = scorable(eval_split)
        metrics = evaluate(task, preds, eval_split) if scored else {}
        atomic_write_json(run_dir / "metrics.json", {"task": task, "baseline": baseline, "seed": 0, "metrics": metrics})
        label = f"baseline:{baseline}"
        return write_summary(
            out,
            [{"seed": 0, "dir": str(run_dir), "metrics": metrics}],
            spec.metric_keys if scored else (),
            f"{task} ({label})",
            f"VidSitu {task}",
            f"baseline: `{baseline}`" + ("" if scored else unscored_note(eval_split)),
            task=task,
            inputs="none",
            contextualizer=label,
            scored=scored,
        )


@dataclass
class Prepared:
    """Everything the runs of one task setting share: data, inputs, the TxE to start from."""

    task: str
    cfg: VidSituConfig
    spec: Any
    eval_split: Any
    train_data: Any
    eval_data: Any
    in_dim: int
    inputs: str
    backbone_obj: dict | None
    txe_arch: dict | None
    txe_state: dict | None
    ctx_label: str
    counts: dict
    tokenizer: str | None
    data: str = ""  # content_digest of the annotations and inputs the runs read (part of the settings hash)
    inputs_key: str = ""  # ``inputs`` without the folders it names (:func:`~..base.placeless`; the settings hash)
    input_stats: tuple | None = None  # the train features' (mean, var), where computed with them (frozen clips)

    @property
    def tcfg(self):
        return getattr(self.cfg, self.task)


def prepare(
    task: str,
    data_root: str | os.PathLike,
    out: Path,
    cfg: VidSituConfig,
    features: str | os.PathLike | None = None,
    videos: str | os.PathLike | None = None,
    backbone: str | os.PathLike | None = None,
    contextualizer: str | os.PathLike | None = "none",
    tokenizer: str | os.PathLike | None = None,
    save_tokenizer: bool = True,
) -> Prepared:
    """Splits, the task spec, inputs (features, clips for an end-to-end task, or features extracted
    once from clips into ``out/features_<hash>``) and the contextualizer to start from.
    ``save_tokenizer`` False: SRL's tokenizer is not written into ``out`` (a check of settings)."""
    if task not in TASKS:
        raise BadInputError(None, f"unknown task '{task}' (choose from {', '.join(TASKS)})")
    if (features is None) == (videos is None):
        raise BadInputError(None, "give exactly one of --features DIR or --videos DIR")
    if tokenizer is not None and not getattr(TASKS[task], "uses_tokenizer", False):  # it would be ignored
        raise BadInputError(None, f"--tokenizer is used by --task srl only; --task {task} would not use it")
    if videos is not None and not TASKS[task].end_to_end and getattr(cfg, task).backbone_lr_scale > 0:
        # this task reads features the frozen backbone extracts once: the backbone would train not at all
        raise BadInputError(
            f"{task}.backbone_lr_scale",
            f"--task {task} decodes from features the frozen --backbone extracts (only verb fine-tunes it end to "
            "end); set 0, or fine-tune with --task verb and use its seedS/backbone.pt",
        )
    train_split = load_split(data_root, cfg.data.train_split)
    eval_split = load_split(data_root, cfg.data.eval_split, split_file=cfg.data.split_file)
    check_disjoint(train_split, eval_split)
    if TASKS[task].eval_needs_records and not scorable(eval_split) and not eval_split.records:
        # every segment would get the fallback entry: a submission of nothing, exit 0, under a PARTIAL
        # line that blamed the inputs (testvb has no annotation file; testsrl's may not be downloaded);
        # said before the task's spec trains SRL's tokenizer into --out
        split, hint = eval_split.split, TASKS[task].eval_records_hint
        raise BadInputError(
            eval_split.files.get("ann") or eval_split.root / "vseg_ann_files" / f"vsann_{split}_noann_lb.json",
            f"not found or empty: --task {task} reads each {split} segment's {hint}",
        )
    spec = TASKS[task](
        getattr(cfg, task), train_split, eval_split=eval_split, tokenizer=tokenizer, out=out, save=save_tokenizer
    )

    backbone_obj = None
    if features is not None:
        store = FeatureStore(features)
        source, in_dim, inputs = feature_source(store), store.dim, f"features:{Path(features).resolve()}"
        made_by = store.backbone
    else:
        if backbone is None:
            raise BadInputError(None, "--videos needs --backbone CKPT (a stage-'backbone' checkpoint)")
        backbone_obj = load_checkpoint(backbone, stage="backbone")
        # loaded into this stage's own models below: NaN weights ended, seeds later, on "training diverged"
        refuse_nonfinite(backbone_obj.get("state_dict"), backbone)
        made_by = file_hash(backbone)
        meta = backbone_obj.get("meta", {})
        in_dim = int(meta.get("out_dim") or build_arch(backbone_obj["arch"]).out_dim)
        resize_mode(meta, cfg.data.resize, backbone, "data.resize")  # a verb-tuned Slow-D read another way: said
        vsrc = video_source(
            videos, dict(meta.get("input") or {}), cfg.data.num_frames, cfg.data.stride, cfg.data.resize
        )
        inputs = f"videos:{Path(videos).resolve()} backbone:{file_hash(backbone)}"
        if cfg.data.resize != "crop":  # crop: the name every earlier run has
            inputs += f" resize:{cfg.data.resize}"
        if spec.end_to_end:  # Slow-D fine-tuned end to end on the event clips
            source = vsrc
        else:  # frozen features, extracted once and cached beside the runs
            feat_dir = frozen_cache_dir(out, backbone, videos, cfg.data)
            vsegs = list(dict.fromkeys(train_split.vseg_ids + eval_split.vseg_ids))
            clips, kept, _ = vsrc(vsegs)
            net = build_arch(backbone_obj["arch"])
            net.load_state_dict(backbone_obj["state_dict"])
            extract_features(
                net,
                clips,
                kept,
                feat_dir,
                batch_size=4,
                device=trainer_device(cfg.trainer),
                num_workers=cfg.data.num_workers,
            )
            source = feature_source(FeatureStore(feat_dir, num_events=5))
            backbone_obj = None
    txe_arch, txe_state, ctx_label = _contextualizer(contextualizer, in_dim, cfg, made_by)

    train_data = build_segments(train_split, source, spec.train_target)
    eval_data = build_segments(eval_split, source, spec.eval_target, need_records=spec.eval_needs_records)
    if len(train_data) == 0:
        raise BadInputError(
            data_root,
            f"no usable training segments ({len(train_data.skipped)} skipped, e.g. "
            f"{next(iter(train_data.skipped.items()), ('-', '-'))})",
        )
    if not any(spec.labelled(y) for y in train_data.y):
        # e.g. a renamed key (EvRel, VerbID, Args): every target ignored, a model that learnt nothing scored
        raise BadInputError(
            train_split.files.get("ann") or data_root,
            f"no {task} label in any of the {len(train_data)} usable training segments "
            f"(no event has {spec.label_hint})",
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
    data = data_digest(train_split, eval_split, train_data, eval_data)
    targets = getattr(spec, "targets_key", lambda ys: None)(train_data.y)
    if targets is not None:  # SRL targets cut at srl.max_len: their ids, not only the annotations
        data = content_digest(data, "targets", targets)
    return Prepared(
        task,
        cfg,
        spec,
        eval_split,
        train_data,
        eval_data,
        in_dim,
        inputs,
        backbone_obj,
        txe_arch,
        txe_state,
        ctx_label,
        counts,
        None if tokenizer is None else str(tokenizer),
        data,
        placeless(inputs, features, None if reads_frame_folders(train_data, eval_data) else videos),
    )


def reads_frame_folders(*datas) -> bool:
    """Whether the runs read clips from frame folders, which :func:`data_digest` names by a folder's
    size (a directory's, whatever its frames): another root of frames read alike, so the --videos
    folder stays in the settings hash (:func:`~..base.placeless`). Feature rows are digested by content
    and video files by name and size, which tell them apart wherever they lie."""
    for d in datas:
        paths = [] if isinstance(d.x, torch.Tensor) else d.x.paths
        if paths and Path(paths[0]).is_dir():
            return True
    return False


def _tokenizer_id(tokenizer: str | None) -> str:
    """A user's tokenizer file by its content (edited in place: other runs), not its path: the path
    as given (``tok.json``, ``../tok.json``) made a rerun from another directory, or of a moved
    file, another setting, which trained the finished seeds again."""
    return "None" if tokenizer is None else f"tokenizer:{content_digest(Path(tokenizer))}"


def _tokenizer_id_by_path(tokenizer: str | None) -> str:
    """:func:`_tokenizer_id` as earlier versions made it (the path as given, and the content), under
    which their finished runs were recorded."""
    return "None" if tokenizer is None else f"{tokenizer}:{content_digest(Path(tokenizer))}"


def data_digest(train_split, eval_split, train_data, eval_data) -> str:
    """What the runs read: the annotation files' contents, the segments used, and their inputs (the
    feature rows themselves; clip files by name and size). A finished run of other data is not
    reused (an annotation root edited in place, features re-extracted into the same folder)."""
    files = [Path(f) for s in (train_split, eval_split) for f in s.files.values() if f is not None]

    def inputs(d):
        return d.x if isinstance(d.x, torch.Tensor) else names_sizes(d.x.paths)

    return content_digest(files, train_data.vsegs, eval_data.vsegs, inputs(train_data), inputs(eval_data))


def task_optim(p: Prepared) -> TaskOptim:
    """The optimisation settings of a prepared task (its section of the config)."""
    tcfg = p.tcfg
    return TaskOptim(
        lr=tcfg.lr,
        weight_decay=tcfg.weight_decay,
        warmup_steps=tcfg.warmup_steps,
        backbone_lr_scale=tcfg.backbone_lr_scale,
        txe_lr_scale=tcfg.txe_lr_scale,
    )


def settings_hashes(p: Prepared, optim: TaskOptim) -> list[str]:
    """The settings as this version hashes them, then as earlier ones did (the inputs' folders, the
    whole config, a user tokenizer by the path given): runs finished under any of them are reused."""
    return list(
        dict.fromkeys(
            settings_hash(p.task, c, i, p.ctx_label, t, vars(optim), p.data)
            for i in (p.inputs_key or p.inputs, p.inputs)
            for c in (result_config(to_dict(p.cfg)), to_dict(p.cfg))
            for t in (_tokenizer_id(p.tokenizer), _tokenizer_id_by_path(p.tokenizer))
        )
    )


def make_job(
    p: Prepared,
    out: Path,
    resume: bool = False,
    train_data=None,
    optim: TaskOptim | None = None,
    stats_now: bool = True,
) -> SeedJob:
    """The SeedJob of a prepared setting (``train_data``: a subset to train on, e.g. for tuning).
    ``stats_now`` False: the input statistics wait for a seed that trains (every seed finished: a
    rerun that reuses them decodes no clip for statistics no run uses)."""
    task, cfg, spec, tcfg = p.task, p.cfg, p.spec, p.tcfg
    train_data = p.train_data if train_data is None else train_data
    computed: dict[str, Any] = {}

    def input_stats():
        if "stats" not in computed:
            if cfg.data.input_norm != "fixed" or p.txe_state is not None:  # a pretrained TxE brings its own
                computed["stats"] = None
            elif p.input_stats is not None and train_data is p.train_data:
                computed["stats"] = p.input_stats  # computed with the features (:func:`cache_frozen_clips`)
            else:
                # the caller's random streams kept: computed late, in a seed's build, its loader's
                # draw would otherwise move the seed's model initialisation
                with random_streams_kept():
                    computed["stats"] = train_input_stats(
                        train_data,
                        p.backbone_obj,
                        device=trainer_device(cfg.trainer),
                        num_workers=cfg.data.num_workers,
                    )
        return computed["stats"]

    if stats_now:  # before any seed: inputs that fail to give them are said before a run is touched
        input_stats()
    optim = optim or task_optim(p)

    def build(seed: int):
        backbone_arch = p.backbone_obj["arch"] if p.backbone_obj else None
        model, arch = spec.build_model(p.in_dim, backbone_arch, p.txe_arch, input_norm=cfg.data.input_norm)
        if p.backbone_obj is not None:
            model.encoder.backbone.load_state_dict(p.backbone_obj["state_dict"])
        if p.txe_state is not None:  # a pretrained TxE keeps the statistics it was pretrained with
            model.encoder.txe.load_state_dict(p.txe_state)
        elif cfg.data.input_norm == "fixed":
            model.encoder.set_input_stats(*input_stats())
        return model, arch

    def score(model, run_dir: Path) -> dict:
        failed: list[str] = []
        preds = predict_split(
            spec,
            model,
            p.eval_data,
            p.eval_split,
            cfg.data.eval_batch_size,
            num_workers=cfg.data.num_workers,
            failed=failed,
        )
        atomic_write_bytes(run_dir / "predictions.pkl", pickle.dumps(preds, protocol=4))
        scores = evaluate(task, preds, p.eval_split) if scorable(p.eval_split) else {}
        # kept beside the metrics: the run's summary must say its score covers fewer segments
        return {**scores, **({"eval_failed_decode": len(failed)} if failed else {})}

    def export(model, arch: dict, run_dir: Path, run: dict) -> None:
        meta = {**spec.meta(), "task": task, "inputs": p.inputs, "contextualizer": p.ctx_label, **run, **p.counts}
        save_checkpoint(
            run_dir / "model.pt", stage=task, arch=arch, state_dict=model.state_dict(), config=cfg, meta=meta
        )
        if p.backbone_obj is not None:  # the verb-finetuned Slow-D, usable by `moviessl extract` / relation
            bmeta = dict(p.backbone_obj.get("meta", {}))
            bmeta["method"] = f"{bmeta.get('method', 'unknown')}+{task}"
            # the clips it was tuned on (data.num_frames / stride), which extract and --videos read it by
            inp = dict(bmeta.get("input") or {})
            for k in ("num_frames", "stride"):
                if getattr(cfg.data, k):
                    inp[k] = int(getattr(cfg.data, k))
            if inp:
                bmeta["input"] = inp
            bmeta["tuned_resize"] = cfg.data.resize  # read as their default by extract and embed_video
            save_checkpoint(
                run_dir / "backbone.pt",
                stage="backbone",
                arch=p.backbone_obj["arch"],
                state_dict=model.encoder.backbone.state_dict(),
                config=cfg,
                meta=bmeta,
            )

    hashes = settings_hashes(p, optim)
    return SeedJob(
        name=task,
        out=out,
        settings=hashes[0],
        earlier_settings=tuple(h for h in dict.fromkeys(hashes) if h != hashes[0]),
        config=cfg,
        optim=optim,
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
            pin_memory=pins_memory(cfg.trainer.accelerator),
        ),
        score=score,
        export=export,
        loss_kwargs=spec.loss_kwargs(),
        record={"inputs": p.inputs, "contextualizer": p.ctx_label, **p.counts},
        resume=resume,
    )


class threads:
    """``with threads(n):`` torch intra-op threads for the runs (None: leave as is)."""

    def __init__(self, n: int | None):
        self.n, self.prev = n, torch.get_num_threads()

    def __enter__(self):
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.prev)


@keeps_random_streams  # its runs are run_seed's; a TxE built before them drew from torch's generator
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
    if int(seeds) < 1:
        raise BadInputError(None, f"--seeds must be >= 1, got {seeds}")
    cfg = resolve_config(cfg, preset, overrides)
    check_trainer(cfg.trainer)
    seed_list = seed_range(cfg.seed, seeds)
    out = ensure_out_dir(out)
    with run_lock(out):  # one job per folder (the leader of a multi-process launch takes it)
        p = prepare(task, data_root, out, cfg, features, videos, backbone, contextualizer, tokenizer)
        scored = scorable(p.eval_split)
        if scored:
            # the evaluation's ground truth is read now, by scoring the no-input fallback submission, so a
            # missing or malformed file is found before a seed trains rather than after it
            fallback = [p.spec.fallback(i, v, p.eval_split) for i, v in enumerate(p.eval_split.vseg_ids)]
            evaluate(task, fallback, p.eval_split)
        else:
            log.info("%s: %s has no released ground truth: runs write submissions, unscored", task, cfg.data.eval_split)
        # once the inputs passed their checks: a rerun refused at one left a finished job's config.yaml
        # and run.json naming its refused settings, beside the earlier settings' seeds and summary
        save_config(cfg, out)
        with threads(cfg.threads):
            # a rerun whose seeds all finished computes no features, for the cache or the statistics
            finished = all_finished(out, seed_list, settings_hashes(p, task_optim(p)))
            if frozen_clips(p) and not finished:
                p = cache_frozen_clips(p, out, videos, backbone)
            job = make_job(p, out, resume, stats_now=not finished)
            runs = run_seeds(job, seed_list)
        failed_decode = max(r["metrics"].get("eval_failed_decode", 0) for r in runs)
        note = f"inputs: `{p.inputs}`, contextualizer: `{p.ctx_label}`"
        if not scored:
            note += unscored_note(p.eval_split)
        return write_summary(
            out,
            runs,
            p.spec.metric_keys if scored else (),
            f"{task} ({p.ctx_label})",
            f"VidSitu {task}",
            note,
            task=task,
            inputs=p.inputs,
            contextualizer=p.ctx_label,
            scored=scored,
            partial=coverage_note(**p.counts, eval_failed_decode=failed_decode, scored=scored),
            settings=job.settings,
            **p.counts,
        )


def saved_dtypes(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """``model`` (its weights loaded from ``state_dict``) holding each tensor in the dtype it was saved
    in: a run trained at 64-true scored and exported float64 weights (Lightning leaves them so; the
    input statistics stay float32), which the model built anew holds cast down to float32 -- other
    predictions than the run's own."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        saved = state_dict.get(name)
        if torch.is_tensor(saved) and saved.dtype != t.dtype:
            t.data = saved.to(t.device)
    return model


def predict_inputs(
    p: Prepared,
    model: torch.nn.Module,
    out: Path,
    videos: str | os.PathLike | None,
    backbone: str | os.PathLike | None,
    computed: dict,
    where: Path | None = None,
):
    """What a seed's ``model`` (loaded from its ``model.pt``) predicts ``p``'s eval split from: its
    clips, or for a frozen verb job (:func:`frozen_clips`) the frozen Slow-D's features of them,
    computed once into the job's cache as scoring computed them (:func:`frozen_features`: the folder
    of the eval mode, so a split training scored is read, not decoded) and kept in ``computed`` for
    the other seeds -- the same predictions. Only where the model's Slow-D is the one the features
    come from, every weight and buffer: a frozen backbone keeps its BatchNorm statistics too
    (``TaskModule.frozen_in_eval``), but runs trained before it did moved theirs, and those seeds
    decode their clips as before."""
    if not frozen_clips(p):
        return p.eval_data
    if "net" not in computed:
        computed["net"] = frozen_net(p.backbone_obj)
    net, saved = computed["net"], model.encoder.backbone.state_dict()
    given = net.state_dict()
    if saved.keys() != given.keys() or any(
        not torch.equal(t, given[k].to(t.device, t.dtype)) for k, t in saved.items()
    ):
        log.info(
            "%s: its Slow-D differs from --backbone's (a run from before frozen kept BatchNorm statistics): "
            "its clips are decoded",
            where,
        )
        return p.eval_data
    # the weights' dtype, as the model ran its Slow-D on clips: float64 at 64-true, no autocast
    mode = ("float64", None, None) if param_dtype(model.encoder.backbone) == torch.float64 else FULL
    if mode not in computed:
        feats = frozen_features(p, net, p.eval_data, range(len(p.eval_data)), mode, out, videos, backbone)
        computed[mode] = dataclasses.replace(p.eval_data, x=feats)
    return computed[mode]


CLIP_KEYS = ("num_frames", "stride", "resize")  # the data settings of --videos' clips


def other_inputs(
    run_dir: Path,
    rec: Mapping[str, Any],
    cfg: VidSituConfig,
    features: str | os.PathLike | None,
    videos: str | os.PathLike | None,
    backbone: str | os.PathLike | None,
) -> str | None:
    """What a finished run (its ``metrics.json`` record and ``config.yaml``) was trained with other
    than these inputs, as far as it tells without preparing them: --features or --videos, the
    --backbone file's hash and the clip settings, each part of every settings hash. The settings
    check proper hashes the inputs themselves, which for frozen --videos features means decoding and
    extracting every train and eval segment: for runs of other clips, into a new cache, only to be
    refused. None where nothing differs or the run does not record it (the settings check decides)."""
    recorded = rec.get("inputs")
    if isinstance(recorded, str):
        kind = "features" if features is not None else "videos"
        was = recorded.split(":", 1)[0]
        if was in ("features", "videos") and was != kind:
            return f"trained on --{was}, not --{kind}"
        # the field prepare appends after the folder, so the last one: a folder's own path may hold
        # "backbone:" too (/data/backbone:v1/videos)
        made_by = re.findall(r" backbone:(\w+)", recorded)
        if kind == "videos" and made_by and backbone is not None and Path(backbone).is_file():
            if file_hash(backbone) != made_by[-1]:
                return f"--backbone {backbone} is not the run's (backbone:{made_by[-1]})"
    if videos is None:
        return None
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["data"]
        saved = {k: data[k] for k in CLIP_KEYS if k in data}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return None
    differ = [
        f"data.{k} {clip_setting(getattr(cfg.data, k))}, the run's {clip_setting(v)}"
        for k, v in saved.items()
        if getattr(cfg.data, k) != v
    ]
    return "; ".join(differ) or None


def clip_setting(value: Any) -> str:
    """A clip setting as a refusal shows it: unset (None) is the backbone checkpoint's
    ``meta.input`` (:func:`~moviessl.tasks.vidsitu.data.video_source`), not a value "None"."""
    return "unset (the backbone's default)" if value is None else str(value)


@keeps_random_streams  # the models built anew (then loaded) and the loader passes drew from torch's generator
def run_predict(
    task: str,
    data_root: str | os.PathLike,
    split: str,
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
) -> dict:
    """Each finished run of :func:`run_finetune` with these same arguments predicts ``split`` (e.g.
    ``testsrl``, a test split VidSitu released without ground truth) with its ``model.pt``; nothing
    is trained. Writes ``seedS/predictions_<split>.pkl`` (VidSitu's submission format) and
    ``predict_<split>.json`` (with metrics and their mean ± SE where ``split`` has ground truth).

    The runs must be those of these arguments: the settings are hashed as the training job does,
    with its own eval split, and a seed whose ``metrics.json`` holds other settings (another input
    folder, contextualizer or config) is refused -- its model would be another model than asked for.
    ``split`` is predicted whole: a ``data.split_file`` the runs were scored on (a subset) is not applied.
    A frozen verb job's seeds predict from the split's features, computed once (:func:`predict_inputs`)."""
    import dataclasses

    if int(seeds) < 1:
        raise BadInputError(None, f"--seeds must be >= 1, got {seeds}")
    cfg = resolve_config(cfg, preset, overrides)
    seed_list = seed_range(cfg.seed, seeds)
    out = Path(out)
    if not out.is_dir():
        raise BadInputError(out, "no such run folder: train it first (the same command without --predict)")
    with run_lock(out):
        # the runs first, then their settings, which take preparing the inputs as training did: where
        # there is nothing to predict with, not a feature extracted (--videos) nor a tokenizer written
        done = {}
        for seed in seed_list:
            mfile = out / f"seed{seed}" / "metrics.json"
            if not mfile.is_file():
                raise BadInputError(
                    out / f"seed{seed}", "no finished run; --predict reads the runs the same command without it trained"
                )
            try:
                done[seed] = json.loads(mfile.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise BadInputError(mfile, f"unreadable ({e})") from None
            if not isinstance(done[seed], dict):
                raise BadInputError(mfile, "unreadable (not a run's record: expected a JSON object)")
        for seed in seed_list:  # what tells without the inputs: not a frame decoded for runs of other clips
            other = other_inputs(out / f"seed{seed}", done[seed], cfg, features, videos, backbone)
            if other:
                raise BadInputError(
                    out / f"seed{seed}",
                    f"a run of other settings ({other}); --predict reads the runs the same command without it trained",
                )
        trained = prepare(
            task, data_root, out, cfg, features, videos, backbone, contextualizer, tokenizer, save_tokenizer=False
        )
        ours = settings_hashes(trained, task_optim(trained))
        for seed in seed_list:
            if done[seed].get("settings") not in ours:
                raise BadInputError(
                    out / f"seed{seed}",
                    "a run of other settings (inputs, contextualizer or config); --predict reads the runs the "
                    "same command without it trained",
                )
        pcfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, eval_split=split, split_file=None))
        p = prepare(task, data_root, out, pcfg, features, videos, backbone, contextualizer, tokenizer)
        scored = scorable(p.eval_split)
        device = trainer_device(cfg.trainer)
        runs = []
        computed: dict = {}  # a frozen verb job's features of the split, computed for its first seed
        with threads(cfg.threads):
            for seed in seed_list:
                run_dir = out / f"seed{seed}"
                obj = load_checkpoint(run_dir / "model.pt", stage=task)
                model = saved_dtypes(build_from_checkpoint(obj), obj["state_dict"]).to(device)
                failed: list[str] = []
                preds = predict_split(
                    p.spec,
                    model,
                    predict_inputs(p, model, out, videos, backbone, computed, run_dir / "model.pt"),
                    p.eval_split,
                    cfg.data.eval_batch_size,
                    num_workers=cfg.data.num_workers,
                    failed=failed,
                )
                dest = atomic_write_bytes(run_dir / f"predictions_{split}.pkl", pickle.dumps(preds, protocol=4))
                metrics = evaluate(task, preds, p.eval_split) if scored else {}
                metrics |= {"eval_failed_decode": len(failed)} if failed else {}
                runs.append(
                    {
                        "seed": seed,
                        "dir": str(run_dir.resolve()),
                        "predictions": str(dest.resolve()),
                        "metrics": metrics,
                    }
                )
                log.info("%s seed %d: %s predicted (%s)", task, seed, split, dest)
        summary, table = ({}, "")
        if scored:
            summary, table = summarize(
                [r["metrics"] for r in runs], keys=list(p.spec.metric_keys), title=f"{task} {split}"
            )
        failed_decode = max(r["metrics"].get("eval_failed_decode", 0) for r in runs)
        record = {
            "task": task,
            "split": split,
            "scored": scored,
            "out": str(out.resolve()),
            "seeds": len(runs),
            "runs": runs,
            "summary": summary,
            "table": table,
            "partial": coverage_note(
                eval_segments=p.counts["eval_segments"],
                eval_without_inputs=p.counts["eval_without_inputs"],
                train_segments=p.counts["train_segments"],
                train_skipped=0,
                eval_failed_decode=failed_decode,
                scored=scored,
            ),
        }
        atomic_write_json(out / f"predict_{split}.json", record)
        return record


def unscored_note(split) -> str:
    """The summary's line for predictions of a split without released ground truth."""
    return (
        f"\n\n**Predictions only**: VidSitu released no ground truth for `{split.split}`; each run's "
        "`seedS/predictions.pkl` is its submission in VidSitu's format (the test splits were scored on AI2's "
        "leaderboards)."
    )


def tune_txe_lr_scale(
    task: str,
    data_root: str | os.PathLike,
    features: str | os.PathLike,
    out: str | os.PathLike,
    values: Sequence[float] = (0.1, 0.3, 1.0),
    seeds: int = 2,
    heldout_fraction: float = 0.2,
    cfg: VidSituConfig | Mapping | None = None,
    preset: str = "cpu",
    overrides: Sequence[str] | Mapping = (),
) -> dict:
    """The rule that sets how fast a TxE is fine-tuned, the same for scratch and pretrained TxEs:
    train a *scratch* TxE + head on ``1 - heldout_fraction`` of the train segments for each
    ``txe_lr_scale`` in ``values`` (``seeds`` runs each), and keep the value with the lowest loss on
    the held-out train segments. No evaluation-split data is used. Writes ``out/tuning.json``
    (skipped when it exists with the same settings); returns ``{"best", "losses", ...}``."""
    cfg = resolve_config(cfg, preset, overrides)
    check_trainer(cfg.trainer)
    seed_list = seed_range(cfg.seed, seeds)
    out = ensure_out_dir(out)
    with run_lock(out):
        p = prepare(task, data_root, out, cfg, features=features, contextualizer="scratch")
        how = (list(values), seeds, heldout_fraction, p.data)  # the features' folder: moved, the same ones
        settings = settings_hash("tune", task, result_config(to_dict(cfg)), *how)
        where = str(Path(features).resolve())
        done = out / "tuning.json"
        if done.is_file() and json.loads(done.read_text()).get("settings") in (
            settings,
            # written by versions that hashed the features' folder, and the whole config
            settings_hash("tune", task, result_config(to_dict(cfg)), where, *how),
            settings_hash("tune", task, to_dict(cfg), where, *how),
        ):
            return json.loads(done.read_text())
        n = len(p.train_data)
        perm = np.random.default_rng(cfg.seed).permutation(n)
        n_held = max(1, int(round(n * heldout_fraction)))
        held, fit_part = p.train_data.subset(sorted(perm[:n_held])), p.train_data.subset(sorted(perm[n_held:]))
        tcfg = p.tcfg
        losses: dict[str, list[float]] = {}
        with threads(cfg.threads):
            for k, v in enumerate(values):
                optim = TaskOptim(
                    lr=tcfg.lr,
                    weight_decay=tcfg.weight_decay,
                    warmup_steps=tcfg.warmup_steps,
                    backbone_lr_scale=tcfg.backbone_lr_scale,
                    txe_lr_scale=float(v),
                )
                job = make_job(p, out / f"scale{v:g}", train_data=fit_part, optim=optim)
                # trained on a part of the data: a seed run of another split (heldout_fraction) is not this one
                heldout = ("heldout", sorted(perm[:n_held].tolist()))
                job.settings = settings_hash(job.settings, *heldout)
                job.earlier_settings = tuple(settings_hash(h, *heldout) for h in job.earlier_settings)
                job.score = lambda model, run_dir: {"heldout_loss": heldout_loss(model, held, p.spec, tcfg.batch_size)}
                job.export = lambda *a: None
                with progress.part(k, len(values)):
                    runs = run_seeds(job, seed_list)
                losses[f"{v:g}"] = [r["metrics"]["heldout_loss"] for r in runs]
        means = {k: float(np.mean(v)) for k, v in losses.items()}
        best = float(lowest(means))
        result = {
            "task": task,
            "param": "txe_lr_scale",
            "best": best,
            "losses": losses,
            "mean_loss": means,
            "heldout_segments": n_held,
            "fit_segments": n - n_held,
            "seeds": seeds,
            "settings": settings,
        }
        atomic_write_json(done, result)
        log.info("%s: txe_lr_scale %g (held-out loss %s)", task, best, {k: round(m, 4) for k, m in means.items()})
        return result


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, data, spec, batch_size: int) -> float:
    """Mean training loss of ``model`` over ``data`` in eval mode (weighted by segments). A segment
    whose clips fail to decode has its target ignored (``spec.ignore_index``) and no weight: a batch
    of such segments alone has a loss of 0 (no signal), which counted as segments of loss 0 would
    pull the mean down. NaN when no segment decoded (:func:`lowest` never picks it)."""
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device

    def dev(t):
        return t.to(device) if isinstance(t, torch.Tensor) else t

    kw = {k: dev(v) for k, v in spec.loss_kwargs().items()}
    pin = device.type == "cuda"
    for batch in loader(data, batch_size, shuffle=False, ignore_fill=spec.ignore_index, pin_memory=pin):
        n = int((~batch["failed"]).sum())
        if n:
            total += float(model.loss(dev(batch["x"]), dev(batch["y"]), **kw)) * n
            count += n
    return total / count if count else float("nan")
