"""TxE pretraining as a library call: :func:`pretrain_context` (what ``moviessl pretrain-context`` runs)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import DataLoader

from ..config import _asked_of, _note_asked, read_saved_config
from ..data.vidsitu import resolve_ann_root, segment_splits
from ..dist import pins_memory
from ..errors import BadInputError
from ..features.extract import run_lock
from ..features.store import FeatureStore
from ..loader import train_loader
from ..training import (
    final_metrics,
    fit,
    keeps_random_streams,
    keeps_threads,
    last_checkpoint,
    planned_world_size,
    refuse_changed_on_resume,
    refuse_earlier_run,
    seed_everything,
    setup_machine,
)
from ..utils import plural
from ..utils.io import atomic_write_json, ensure_out_dir
from .config import ContextConfig
from .module import MaskPredModule, check_txe, mask_sizes, sizes_drawn
from .windows import MIN_VIDEOS_TO_HOLD_OUT, FeatureWindows, PaddedForShards, split_ids

log = logging.getLogger("moviessl.context")


VIDSITU_SEGMENT = re.compile(r"_seg_\d+_\d+$")


def _released_root(store: FeatureStore) -> Path | None:
    """The VidSitu release a feature folder sits in (``ROOT/vsitu_vid_feats/<model>/``), if any."""
    for cand in list(Path(store.root).resolve().parents)[:3]:
        try:
            return resolve_ann_root(cand)
        except BadInputError:
            continue
    return None


def pretraining_ids(stores: Sequence[FeatureStore], ids: list[tuple[int, str]], vidsitu_root=None) -> list:
    """``ids`` without the videos of evaluation splits (anything but ``train`` / unlabelled).

    A folder of VidSitu segments (``v_<id>_seg_<a>_<b>``) without an index, or whose index says its
    splits are unknown (``moviessl extract`` of a VidSitu root whose annotations it did not find),
    takes the splits it does not record from ``vidsitu_root``, else from the release it sits in
    (VidSitu's ``vsitu_vid_feats/<model>/``); with neither, it is an error rather than a silent
    pretraining on val and test segments."""
    splits = segment_splits(vidsitu_root) if vidsitu_root is not None else {}
    for store in stores:
        # a folder `moviessl extract` indexed is trusted: it records the split of every segment of a
        # VidSitu root whose annotations it found, and ids it left without one are unlabelled videos
        # (SynthMovies' pool is named like VidSitu segments); where it found none, its index says so
        unknown = store.index is not None and store.index.get("splits") == "unknown"
        if vidsitu_root is not None:
            continue
        if store.index is not None and not unknown:
            named = [v for v in store.ids if VIDSITU_SEGMENT.search(v) and not store.info(v).get("split")]
            if named:  # segment videos copied out of their release and extracted from there, say
                log.warning(
                    "%s: %d videos named like VidSitu segments (e.g. %s) have no split recorded and are pretrained on "
                    "as unlabelled; if they include VidSitu's val / test, pass --vidsitu-root to leave those out",
                    store.root,
                    len(named),
                    named[0],
                )
            continue
        segs = [v for v in store.ids if VIDSITU_SEGMENT.search(v) and not (unknown and store.info(v).get("split"))]
        if not segs or all(v in splits for v in segs):
            continue
        root = _released_root(store)
        if root is None:
            why = " (its extraction found no VidSitu annotations)" if unknown else ""
            raise BadInputError(
                store.root,
                f"{len(segs)} VidSitu segment feature file(s) and no split information{why}; pass --vidsitu-root "
                "(its val / test segments are then left out, as the paper does) or --include-eval-splits",
            )
        log.info("splits of %s from %s", store.root, root)
        splits.update(segment_splits(root))
    keep = []
    for si, vid in ids:
        split = stores[si].info(vid).get("split") if stores[si].index is not None else None
        split = split or splits.get(vid)
        if split is None or split == "train":
            keep.append((si, vid))
    if len(keep) < len(ids):
        log.info("left out %d videos of evaluation splits (pretraining: train + unlabelled)", len(ids) - len(keep))
    if not keep:
        raise BadInputError(stores[0].root, "no pretraining videos left after removing the evaluation splits")
    return keep


HELDOUT_NAME = "heldout.json"


def follow_moved_folders(held: set[str], names: set[str]) -> set[str]:
    """The held-out list ``held`` (``<feature folder>::<id>``) with each folder that is not among
    this run's (``names``, the same form) replaced by the one of this run's folders that holds all
    its held-out ids (of several, the one with its name): a resume after the features moved (a
    cluster's scratch to a home folder) found none of its held-out videos and trained on them,
    with nothing left to score the run. A folder not found is said, its videos trained on."""
    split = lambda n: n.rsplit("::", 1)  # noqa: E731
    by_folder: dict[str, set[str]] = {}
    for n in names:
        by_folder.setdefault(split(n)[0], set()).add(split(n)[1])
    was: dict[str, set[str]] = {}
    for n in held:
        was.setdefault(split(n)[0], set()).add(split(n)[1])
    moves: dict[str, str] = {}
    free = [f for f in by_folder if f not in was]
    for old, vids in was.items():
        if old in by_folder:
            continue
        cands = [f for f in free if vids <= by_folder[f]]
        if len(cands) > 1:
            cands = [f for f in cands if Path(f).name == Path(old).name]
        if len(cands) == 1:
            moves[old] = cands[0]
            free.remove(cands[0])
            log.info("%s: the held-out videos of %s are read in %s (the folder moved)", HELDOUT_NAME, old, cands[0])
        else:
            log.warning(
                "%s: %d held-out videos of %s, a folder not among --features now (nor is one that holds them "
                "all): any of them read elsewhere are trained on",
                HELDOUT_NAME,
                len(vids),
                old,
            )
    return {f"{moves.get(split(n)[0], split(n)[0])}::{split(n)[1]}" for n in held}


def held_out(out: Path, stores: Sequence[FeatureStore], ids: list, fraction: float, seed: int, resume: bool):
    """``(train ids, held-out ids)``: drawn by :func:`split_ids` when a run starts and kept in
    ``OUT/heldout.json``; a resume keeps the videos held out then (those still given) and trains on
    every other, a video added since included -- drawn again over the grown list, the split moved
    videos already trained on into the held-out set."""
    path = Path(out) / HELDOUT_NAME
    # each folder resolved once, not once per video and look (a path walk of lstats each time)
    roots = [str(Path(s.root).resolve()) for s in stores]
    name = lambda iv: f"{roots[iv[0]]}::{iv[1]}"  # noqa: E731
    if resume and path.is_file():
        try:
            held = set(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise BadInputError(path, f"unreadable held-out list ({type(e).__name__}); delete it to draw one") from None
        moved = follow_moved_folders(held, {name(iv) for iv in ids})
        if moved != held:
            held = moved
            atomic_write_json(path, sorted(held))  # every rank writes the same list
        return [iv for iv in ids if name(iv) not in held], [iv for iv in ids if name(iv) in held]
    train, val = split_ids(ids, fraction, seed=seed)
    atomic_write_json(path, [name(iv) for iv in val])  # every rank writes the same list
    return train, val


def sizes_the_run_drew(out: str | os.PathLike, cfg: ContextConfig, resume: bool) -> ContextConfig:
    """``cfg`` with the mask sizes its run drew, on a ``--resume`` of a run started before sizes
    stopped at ``data.window - 1`` with sizes that named the whole window (its ``config.yaml``, or a
    part of it, records them): resumed with its own settings (its overrides again, or its config.yaml
    as the preset), such a run was refused by the check a new run's explicit window size meets, and a
    long job could not be continued. Read as its checkpoint's hyper-parameters are
    (:func:`~moviessl.context.module.sizes_drawn`), with one line saying so; sizes its run never
    recorded, or any on a run that has not trained, are left to that check."""
    sizes, window = cfg.maskpred.mask_sizes, cfg.data.window
    kept = sizes_drawn(sizes, window)
    if not resume or kept == sizes or last_checkpoint(out) is None:
        return cfg
    wanted = sorted({int(s) for s in sizes})
    for path in sorted(Path(out).glob("config*.yaml")):  # config.yaml and the parts a resume kept
        try:
            saved = read_saved_config(path)
            recorded = saved["maskpred"]["mask_sizes"]
            same = int(saved["data"]["window"]) == window and sorted({int(s) for s in recorded}) == wanted
        except (OSError, BadInputError, KeyError, TypeError, ValueError):  # not this run's record of them
            continue
        if same:
            break
    else:
        return cfg
    log.info(
        "maskpred.mask_sizes=%s, as %s records them, reach past data.window - 1 = %d, which no span draws: "
        "the run drew %s and goes on with them",
        wanted,
        path,
        max(1, window - 1),
        kept,
    )
    out_cfg = dataclasses.replace(cfg, maskpred=dataclasses.replace(cfg.maskpred, mask_sizes=kept))
    asked = _asked_of(cfg)  # run.json keeps the preset and overrides as they were given
    if asked is not None:
        _note_asked(out_cfg, asked)
    return out_cfg


def validation_loader(val: FeatureWindows, batch_size: int, world: int | None = None, **kwargs: Any) -> DataLoader:
    """The held-out windows in order, each scored once whatever the number of processes ``world``
    (None: those of the process group the run is launched in; :class:`~moviessl.context.windows.PaddedForShards`)."""
    return DataLoader(PaddedForShards(val, world), batch_size=min(batch_size, len(val)), shuffle=False, **kwargs)


@keeps_threads
@keeps_random_streams
def pretrain_context(
    features: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    cfg: ContextConfig,
    resume: bool = False,
    include_eval_splits: bool = False,
    vidsitu_root: str | os.PathLike | None = None,
) -> Path:
    """Train TxE by event mask prediction on the given feature folders; returns ``OUT/model.pt``.

    Videos of a benchmark's evaluation splits are left out unless ``include_eval_splits``: the split
    a feature folder's index records (``moviessl extract`` of a VidSitu root), or, for folders
    without one (VidSitu's released features), the split files of ``vidsitu_root``. The paper
    likewise removes the val videos that overlap its pretraining data (§4).

    Writes ``OUT/config.yaml``, ``OUT/checkpoints/last.ckpt``, ``OUT/logs/metrics.csv``,
    ``OUT/curves.png`` and the exported TxE ``OUT/model.pt`` (stage ``context``)."""
    setup_machine(cfg.trainer)
    cfg = sizes_the_run_drew(out, cfg, resume)
    mask_sizes(cfg)  # before any feature is read
    check_txe(cfg)
    out = ensure_out_dir(out)
    with run_lock(out):  # one job per folder (the leader of a multi-process launch takes it)
        refuse_earlier_run(out, resume)
        refuse_changed_on_resume(
            out,
            resume,
            cfg,
            ("maskpred.input_norm", "maskpred.center"),
            "the statistics they set are in the checkpoint",
        )
        seed_everything(cfg.seed)
        # a folder given twice numbered each event twice: its copy became a distractor against itself
        unique: dict[Path, Any] = {}
        for f in features:
            unique.setdefault(Path(f).resolve(), f)
        if len(unique) < len(list(features)):
            log.warning("--features names the same folder more than once; each is read once")
        stores = [FeatureStore(f) for f in unique.values()]
        strides = {s.stride_s for s in stores}
        # a folder without an index counts as VidSitu's released features (what it usually is)
        made_by = {s.backbone or "vidsitu-released": s.root for s in stores}
        if len(made_by) > 1:  # one TxE over two backbones' feature spaces of one width trains, and means little
            log.warning(
                "--features come from %d different backbones (%s): one TxE is pretrained on all of them",
                len(made_by),
                "; ".join(f"{root}: {b}" for b, root in made_by.items()),
            )
        d = cfg.data
        all_ids = [(i, v) for i, s in enumerate(stores) for v in s.ids]
        if not include_eval_splits:
            all_ids = pretraining_ids(stores, all_ids, vidsitu_root)
        train_ids, val_ids = held_out(out, stores, all_ids, d.val_fraction, cfg.seed, resume)
        if not val_ids and d.val_fraction > 0:  # said here, once: Lightning's own warning is silenced (quiet_lightning)
            n = len(all_ids)
            if n < MIN_VIDEOS_TO_HOLD_OUT:
                why = f", and fewer than {MIN_VIDEOS_TO_HOLD_OUT} hold none out"
            elif round(n * d.val_fraction) == 0:
                why = " rounds to none"
            else:  # a resume: the list drawn when the run started (fewer videos then)
                why = f", but the run's {HELDOUT_NAME}, drawn at its start, names none"
            log.info(
                "no video held out for validation: data.val_fraction=%g of %s%s; val/retrieval_acc is not measured",
                d.val_fraction,
                plural(n, "video"),
                why,
            )
        train = FeatureWindows(
            stores, d.window, d.token_stride_s, d.windows_per_video, random_start=True, ids=train_ids
        )
        val = None
        if val_ids:  # its events numbered after the training set's: the two share the queue of distractors
            base = train.videos[-1][3] + train.videos[-1][2]
            val = FeatureWindows(stores, d.window, d.token_stride_s, 1, random_start=False, ids=val_ids, uid_base=base)
        log.info(
            "MaskPred on %d train / %d val videos, %d events, dim %d (%d bad files skipped)",
            len(train.videos),
            len(val.videos) if val else 0,
            train.num_events,
            train.dim,
            train.num_bad + (val.num_bad if val else 0),
        )

        module = MaskPredModule(cfg, train.dim, min(strides))
        mean, var = train.feature_stats(d.mean_videos, seed=cfg.seed)
        if cfg.maskpred.input_norm:
            module.set_input_stats(mean, var)
        if cfg.maskpred.center:
            module.set_target_mean(mean)

        drop_last = len(train) >= d.batch_size * planned_world_size(cfg.trainer)  # every rank gets a full batch
        pin = pins_memory(cfg.trainer.accelerator)
        loader_kw = dict(num_workers=d.num_workers, persistent_workers=d.num_workers > 0, pin_memory=pin)
        train_dl = train_loader(train, min(d.batch_size, len(train)), seed=cfg.seed, drop_last=drop_last, **loader_kw)
        val_dl = validation_loader(val, d.batch_size, **loader_kw) if val else None

        trainer = fit(
            module,
            cfg.trainer,
            out,
            config=cfg,
            train_dataloaders=train_dl,
            val_dataloaders=val_dl,
            resume=resume,
            throughput_name="tokens_per_s",
            curve_keys=("train/loss", "train/retrieval_acc", "val/retrieval_acc"),
        )
        path = out / "model.pt"
        if trainer.is_global_zero:
            metrics = final_metrics(trainer, "val/")
            meta = {
                "features": [str(r) for r in unique],
                "backbone": sorted(made_by),
                "num_videos": len(train.videos),
                "num_events": train.num_events,
                "skipped_files": train.num_bad + (val.num_bad if val else 0),
                "steps": int(trainer.global_step),
                "metrics": metrics,
            }
            module.export(path, meta=meta)
            # what the folder was made from, beside the weights: model.pt's meta alone needs the loader to read
            summary = {
                "out": str(Path(out).resolve()),  # absolute, as the features' paths beside it
                **meta,
                "num_val_videos": len(val.videos) if val else 0,
                "seed": cfg.seed,
            }
            atomic_write_json(out / "summary.json", summary)
            log.info(
                "wrote %s (%d steps%s)",
                path,
                trainer.global_step,
                f", val retrieval acc {metrics['val/retrieval_acc']:.3f}" if "val/retrieval_acc" in metrics else "",
            )
        return path
