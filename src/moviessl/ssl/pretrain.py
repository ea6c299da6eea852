"""Backbone pretraining as a library call: :func:`pretrain` (what ``moviessl pretrain-backbone`` runs).

The method (:func:`moviessl.ssl.registry.get_method`) says what it needs -- clip pairs or single
clips, which pair sampler, optical flow, labels -- and this function provides it: reads the clip
list, builds the decoded-frame (and flow) caches, the dataset and loader, trains through
:func:`moviessl.training.fit`, exports ``OUT/model.pt`` and probes the result.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import save_config
from ..data.cliplist import check_labelled, check_same_label_map, missing_clips, read_clip_list
from ..dist import gather_objects, job_leader, pins_memory, trainer_device
from ..errors import BadInputError
from ..features.extract import run_lock
from ..loader import train_loader
from ..training import (
    fit,
    keeps_random_streams,
    keeps_threads,
    planned_world_size,
    read_metrics_csv,
    refuse_earlier_run,
    seed_everything,
    setup_machine,
    warn_micro_batch_negatives,
)
from ..utils.io import atomic_write_json, ensure_out_dir
from .augment import dataset_crop_boxes
from .clipcache import FrameCache, default_cache_dir
from .config import BackboneConfig
from .data import ClipDataset
from .flow import FlowCache
from .probe import probe_model
from .registry import get_method

log = logging.getLogger("moviessl")


def warn_overlap(items: list, val_items: list, data, val) -> int:
    """Say how many of ``--val``'s videos ``--data`` holds too (the same file, however it is spelt):
    the backbone trains on them, so the probe, and a supervised run's validation metrics, score
    videos it has seen. Said, not refused: a quick check on one list is a legitimate use."""
    real = _real_paths([p for p, _ in items] + [p for p, _ in val_items])
    seen = set(real[: len(items)])
    n = sum(r in seen for r in real[len(items) :])
    if n:
        log.warning(
            "%d of the %d videos of --val %s are also in --data %s: the backbone trains on them, so the probe "
            "(and a supervised run's validation metrics) score videos it has seen",
            n,
            len(val_items),
            val,
            data,
        )
    return n


def _real_paths(paths: list) -> list[str]:
    """``os.path.realpath`` of each path, each folder of several of them resolved once: a file that
    is no symbolic link is its folder's real path and its name (which entries are links, one listing
    of the folder says). A realpath per line walked every folder of the path again (~5 lstats a clip:
    1.3 M for Kinetics' train and val lists)."""
    split = [os.path.split(os.fspath(p)) for p in paths]
    shared = {h for h, n in Counter(h for h, _ in split).items() if n > 1}
    folders: dict[str, tuple[str, frozenset[str] | None]] = {}  # folder -> (real path, names not links)
    out = []
    for p, (head, name) in zip(paths, split):
        if head in shared and head not in folders:
            try:
                with os.scandir(head or ".") as it:
                    plain = frozenset(e.name for e in it if not e.is_symlink())
            except OSError:
                plain = None
            folders[head] = (os.path.realpath(head or "."), plain)
        real, plain = folders.get(head, (None, None))
        if plain is not None and name in plain and name not in (".", ".."):
            out.append(os.path.join(real, name))
        else:  # alone in its folder, a link, not there, or its folder cannot be listed: realpath's way
            out.append(os.path.realpath(p))
    return out


def pretext_check(logs: Path, chance: float | None, tail: float = 0.1) -> dict | None:
    """Did training go below the loss of outputs that ignore their input (``chance``, the method's
    :meth:`~moviessl.ssl.base.BackboneModule.chance_loss`)? Mean ``train/loss`` over the last
    ``tail`` of the logged steps (resumed parts included), against ``chance``. A contrastive
    pretext task that ends above it tells its positives from its negatives no better than a
    constant embedding would (docs/design.md, "Is the pretext solved?"). None without a loss or
    a log."""
    if chance is None:
        return None
    points = sorted(read_metrics_csv(logs).get("train/loss", []))
    if not points:
        return None
    last = points[-max(1, math.ceil(tail * len(points))) :]
    loss = sum(v for _, v in last) / len(last)
    return {
        "loss_end": round(loss, 4),
        "steps": [last[0][0], last[-1][0]],
        "chance": round(chance, 4),
        "below_chance": bool(loss < chance),
    }


def split_for_probe(items, fraction: float, seed: int):
    """Deterministic, class-stratified hold-out of labelled items (when no --val is given)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, (_, y) in enumerate(items):
        by_class.setdefault(int(y), []).append(i)
    val = set()
    for idx in by_class.values():
        idx = list(rng.permutation(idx))
        val.update(idx[: int(round(len(idx) * fraction))])
    return [it for i, it in enumerate(items) if i not in val], [it for i, it in enumerate(items) if i in val]


def flow_cache_for(cfg: BackboneConfig, cache_dir: Path) -> FlowCache:
    return FlowCache(
        cache_dir,
        cfg.flow.params(),
    )


def _classifier_outputs(out: Path) -> int | None:
    """The number of outputs of the classifier in ``out``'s ``checkpoints/last.ckpt`` (None: none)."""
    ckpt = Path(out) / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        return None
    try:
        sd = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True).get("state_dict", {})
    except Exception:  # an unreadable checkpoint: the resume says so
        return None
    w = sd.get("classifier.1.weight")
    return None if w is None else int(w.shape[0])


@keeps_threads
@keeps_random_streams
def pretrain(
    method: str,
    data: str | os.PathLike,
    out: str | os.PathLike,
    cfg: BackboneConfig,
    *,
    val: str | os.PathLike | None = None,
    resume: bool = False,
    run_probe: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain (or, for ``random``, just initialise) a Slow-D backbone; export ``OUT/model.pt``.

    Returns a summary dict (also ``OUT/summary.json``); the probe result is ``OUT/probe.json``."""
    method_cls = get_method(method)
    setup_machine(cfg.trainer)
    out = ensure_out_dir(out)
    with run_lock(out):  # one job per folder (the leader of a multi-process launch takes it)
        ck = out / "checkpoints"
        if method_cls.views is None and ck.is_dir() and any(ck.iterdir()):
            # nothing to resume: --resume would only replace the trained run's model.pt with an untrained
            # one (said before refuse_earlier_run, whose "pass --resume" would lead here)
            raise BadInputError(
                out,
                f"output folder holds a training run; --method {method} trains nothing and would replace its "
                "model.pt: choose another --out",
            )
        refuse_earlier_run(out, resume)
        seed_everything(cfg.seed)
        d = cfg.data
        items = read_clip_list(data)
        if not items:
            raise BadInputError(data, "clip list is empty")
        labelled = all(y is not None for _, y in items)
        if method_cls.needs_labels:
            check_labelled(items, data, f"--method {method}")
        probe_train, probe_val, probe_note, val_items = items, None, None, None
        if val is not None:
            probe_val = val_items = read_clip_list(val)
            if not probe_val:
                raise BadInputError(val, "validation clip list is empty")
            warn_overlap(items, probe_val, data, val)
            if run_probe:
                check_same_label_map(data, val)  # only the probe reads --val's labels
                try:  # said now, not after training: the backbone is still trained, without the probe
                    for lst, p in ((items, data), (probe_val, val)):
                        check_labelled(lst, p, "the probe")
                except BadInputError as e:
                    log.warning("the probe is skipped: %s", e)
                    probe_val, probe_note = None, str(e)
        elif labelled and run_probe:
            probe_train, probe_val = split_for_probe(items, cfg.probe.val_fraction, cfg.seed)
            if not probe_val:  # too few videos per class to hold any out: pretrain on all, no probe
                log.warning(
                    "%s: too few labelled videos to hold out probe.val_fraction=%g for the probe; the probe is skipped "
                    "(give --val to probe)",
                    data,
                    cfg.probe.val_fraction,
                )
                probe_train, probe_val = items, None
                probe_note = f"too few labelled videos in {data} to hold out a probe split; give --val to probe"
        elif run_probe:  # said as the other skipped probes are (summary.json, the CLI's note), not silently
            probe_note = (
                f"{data} is not labelled throughout, so no probe split can be held out; give a labelled --val to probe"
            )
        # Without --val the probe holds out part of --data. A supervised backbone must not train on those
        # labels; a self-supervised one reads no labels, so it pretrains on every video (the paper's
        # K400 runs use the whole train set) and only the probe's classifier leaves them out.
        held_out = val is None and probe_val is not None and method_cls.needs_labels
        train_items = probe_train if held_out else items
        num_classes = None
        if labelled:
            # one class per label id that occurs, in id order (the same numbering when the ids are 0..K-1):
            # the ids need not be dense, and max + 1 classes for a stray id of 10^11 asked for hundreds of TB
            classes = {y: k for k, y in enumerate(sorted({int(y) for _, y in items}))}
            if method_cls.needs_labels and resume and _classifier_outputs(out) == max(classes) + 1 != len(classes):
                classes = {y: y for y in range(max(classes) + 1)}  # a run started with max + 1 outputs goes on so
            num_classes = len(classes)
            train_items = [(p, classes[int(y)]) for p, y in train_items]

        cache_dir = Path(d.cache_dir) if d.cache_dir else default_cache_dir(data, out)
        frame_cache = FrameCache(cache_dir, d.short_side) if d.frame_cache else None
        module = method_cls(cfg, num_classes=num_classes)
        init_note = module.load_init(cfg.model.init) if cfg.model.init else {}  # a --resume restores over it

        bad: dict[str, str] = {}
        pretext = None
        if method_cls.views is not None:
            world = planned_world_size(cfg.trainer)
            method_cls.check_config(cfg, d.batch_size * world)  # before caching the videos (hours at K400's size)
            if method_cls.batch_negatives:
                warn_micro_batch_negatives(cfg.trainer, method_cls.batch_negatives, d.batch_size * world)
            ds = ClipDataset(
                train_items,
                method_cls.views,
                num_frames=d.num_frames,
                stride=d.stride,
                short_side=d.short_side,
                frame_cache=frame_cache,
                flow_cache=flow_cache_for(cfg, cache_dir) if method_cls.needs_flow else None,
                flow_frames=cfg.flow.num_frames,
                flow_stride=cfg.flow.stride,
                pair_sampler=d.pair_sampler or method_cls.pair_sampler,
                power=d.power,
                shift_s=d.shift_s,
                crop_boxes=dataset_crop_boxes(cfg, cfg.modist.flow_crop, cfg.modist.align_crops),
            )
            ds.prepare(progress=progress, num_workers=d.num_workers)
            bad.update(ds.bad)
            # each process gets ceil(n / world) videos and drops a last partial batch: with fewer than a
            # batch each, Lightning only warns, trains no step and the random backbone would be exported
            if -(-len(ds) // world) < d.batch_size:
                each = f" over {world} processes" if world > 1 else ""
                raise BadInputError(
                    data, f"only {len(ds)} usable videos{each}, fewer than data.batch_size={d.batch_size} per process"
                )
            dl = train_loader(
                ds,
                d.batch_size,
                seed=cfg.seed,
                drop_last=True,
                num_workers=d.num_workers,
                persistent_workers=d.num_workers > 0,
                pin_memory=pins_memory(cfg.trainer.accelerator),
            )
            trainer = fit(
                module,
                cfg.trainer,
                out,
                train_dataloaders=dl,
                resume=resume,
                curve_keys=("train/loss", "lr"),
                config=cfg,
            )
            # each rank met the bad videos of its own share of the batches: rank 0 records all of them
            module._skipped = set().union(*gather_objects(sorted(module._skipped)))
            if not trainer.is_global_zero:
                return {}
            pretext = pretext_check(out / "logs", module.chance_loss(d.batch_size * world))
            if pretext is not None and not pretext["below_chance"]:
                a, b = pretext["steps"]
                log.warning(
                    "%s: the training loss ended at %.2f (mean of steps %d-%d), not below %.2f, the loss of "
                    "outputs that ignore their input: the pretext task is unsolved and the backbone may be "
                    "little better than its initialisation (more steps, or milder augmentation; summary.json)",
                    method, pretext["loss_end"], a, b, pretext["chance"],
                )  # fmt: skip
            for i in sorted(module._skipped):  # indices into the dataset's (post-caching) item list
                bad.setdefault(str(ds.items[i][0]) if i < len(ds.items) else str(i), "skipped while training")
        else:  # nothing to train (random init): the config is still the run's record
            if not job_leader():
                # every process of a torchrun / srun launch runs this: each wrote model.pt, probed it, and
                # removed the probe.json another had just written (or failed finding it gone); the job's
                # leader alone exports, probes and records
                return {}
            save_config(cfg, out)
        summary: dict[str, Any] = {
            "method": method,
            "out": str(Path(out).resolve()),  # absolute, as the paths beside it (as typed: relative to the shell)
            # what the folder was made from, as model.pt's meta says: else two runs on other data read alike
            "data": str(Path(data).resolve()),
            "val": str(Path(val).resolve()) if val is not None else None,
            "num_videos": len(train_items),
            "seed": cfg.seed,
            "skipped_videos": len(bad),
            # the rows of a Kinetics CSV the download lacks (YouTube removals), beside the log's warning
            "missing_videos": missing_clips(items),
            **init_note,
        }
        if probe_note:
            summary["probe_skipped"] = probe_note
        if pretext is not None:
            summary["pretext"] = pretext
        module.export(
            out / "model.pt",
            extra_meta={
                "data": str(Path(data).resolve()),
                "num_videos": len(train_items),
                "skipped_videos": len(bad),
                # the label id of each of the classifier's outputs (Lightning checkpoint ``classifier``),
                # for a reader that maps its predictions back to the clip list's ids
                **({"class_ids": sorted(classes)} if method_cls.needs_labels and num_classes else {}),
                **init_note,
            },
        )
        if bad:
            atomic_write_json(out / "bad_videos.json", bad)
        if (out / "probe.json").is_file():  # it scored the weights model.pt held before this run: stale now
            (out / "probe.json").unlink()
        if run_probe and probe_val is not None:
            dev = trainer_device(cfg.trainer)  # a CPU run probes on the CPU, a GPU rank on its GPU
            try:
                res = probe_model(
                    module.backbone,
                    module.export_input(),
                    probe_train,
                    probe_val,
                    cfg.probe,
                    frame_cache=frame_cache,
                    device=dev,
                    progress=progress,
                    num_workers=d.num_workers,
                )
            except BadInputError as e:
                # model.pt is the job's result and it is written: a probe that cannot run is a note, not a failure
                log.warning("probe skipped: %s (model.pt is written)", e)
                summary["probe_skipped"] = str(e)
            else:
                res.update(method=method, checkpoint=str(out / "model.pt"))
                # the clip lists it scored on; no --val: its val videos were held out of --data (probe.val_fraction)
                res.update(data=summary["data"], val=summary["val"])
                res["missing_videos"] = {
                    "data": summary["missing_videos"],
                    "val": None if val_items is None else missing_clips(val_items),
                }
                atomic_write_json(out / "probe.json", res)
                summary["probe"] = res
        atomic_write_json(out / "summary.json", summary)
        return summary
