"""``moviessl demo``: the whole hierarchy on SynthMovies, end to end, on a CPU, with the paper's protocol.

1. generate SynthMovies (``demo`` preset: the structure knobs of real data on; ``--profile control``:
   all off), or reuse it;
2. pretrain the backbone -- CVRL, MoDist, the supervised baseline and a random-init reference (every
   registered method), each ``pretrain_seeds`` times with different seeds;
3. extract 2-s event features of the VidSitu-style clips and the long (LVU-style) videos with every
   backbone, and of the unlabelled pool with the backbones a TxE is pretrained on (supervised, CVRL,
   MoDist);
4. pretrain TxE by event mask prediction (train clips + long videos + pool; never the valid clips)
   once per replicate of each of those backbones, plus the ablation variants of Table 2;
5. choose how fast a TxE is fine-tuned (held-out train loss of a scratch TxE), then fine-tune and
   evaluate every setting ``finetune_seeds`` times per backbone replicate: verbs (Table 4), semantic
   roles (Table 1), event relations and the pair-prior baseline (Table 3), the mask ablation (Table 2);
   and, per pretraining replicate, LVU's nine tasks for the Object Transformer / OT++ rows (Table 5:
   instance features, masked-instance pretraining, fine-tuning; :mod:`moviessl.tasks.lvu.table`);
6. write ``results.json`` / ``results.md`` (the paper's claims tested first, then tables shaped like
   the paper's, mean ± SE over the pretraining replicates) and PNG plots.

Jobs run side by side on ``workers`` processes (and cores) at one torch thread each, or ``--threads``
(the task heads keep their preset's one thread; :mod:`moviessl.scheduler`);
every job is cached: rerunning after an interruption continues where it stopped. Everything is a
CPU-sized stand-in for the paper's scale; the output says so.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInputError
from .utils import plural
from .utils.io import atomic_write_json, ensure_out_dir, json_float

log = logging.getLogger("moviessl.demo")

# Backbone rows in the paper's order (references first); any other registered method follows.
BACKBONE_ORDER = ("random", "supervised", "cvrl", "modist")
# Backbones whose features a MaskPred TxE is pretrained on (Tables 1 and 3; the paper's are CVRL and
# MoDist; the supervised one is the reference the issue asks for).
MASKPRED_BACKBONES = ("supervised", "cvrl", "modist")
# The demo shows one progress line per job (with the time left); per-job Lightning bars would bury it.
QUIET = ["trainer.progress_bar=false"]
MAIN_VARIANT = ("contrastive", "1-3")
MASK_LABELS = {"1": [1], "1-2": [1, 2], "1-3": [1, 2, 3], "1-4": [1, 2, 3, 4]}
# Job costs for the time-left estimate: seconds at one torch thread beside another job on a 2-vCPU VM
# (docs/benchmarks.md); the scheduler rescales them by each kind's measured speed as jobs finish, so
# only their ratios matter. A CVRL step of the cpu preset; a MaskPred step; an SRL epoch of one seed.
CVRL_STEP_S, MASKPRED_STEP_S, SRL_EPOCH_S = 0.6, 0.02, 1.0
# SynthMovies' generation (both cores), per million pixel-frames rendered and encoded, set from the
# demo and control presets' runs (docs/benchmarks.md). A fixed cost, right for one preset, made the
# other's first job calibrate every kind not yet timed to the wrong speed.
SYNTH_S_PER_MPIX = 0.032
EXTRACT_S = {"vidsitu": 24.0, "lvu": 14.0, "pool": 72.0}


@dataclass
class Profile:
    """How big the demo is. ``full``: the acceptance run; ``control``: the same with SynthMovies'
    structure knobs off and no LVU table; ``quick``: fewer steps and runs; ``smoke``: the end-to-end test."""

    synth_preset: str = "demo"
    pretrain_seeds: int = 3  # independent pretraining runs of every backbone and TxE (issue 16: >= 3)
    finetune_seeds: int = 4  # fine-tuning seeds per pretraining run: 3 x 4 = 12 >= the paper's 10
    backbone_overrides: list[str] = field(default_factory=list)
    context_overrides: list[str] = field(default_factory=list)
    vidsitu_overrides: list[str] = field(default_factory=list)
    synth_overrides: dict[str, Any] = field(default_factory=dict)
    mask_ablation: tuple[str, ...] = ("1", "1-2", "1-4")
    l2_ablation: bool = True
    txe_lr_grid: tuple[float, ...] = (0.1, 0.3, 1.0)
    tune_seeds: int = 2
    lr_rows: bool = True  # frozen (0) and low (0.1) TxE learning-rate rows for CVRL + MaskPred
    # LVU's nine tasks (Table 5), once per pretraining replicate: 3 x 2 = 6 runs >= the paper's 5
    lvu_seeds: int = 2
    lvu_tasks: tuple[str, ...] = ()  # () = all nine
    lvu_overrides: list[str] = field(default_factory=list)
    ot_overrides: list[str] = field(default_factory=list)
    workers: int = 2


PROFILES = {
    "full": Profile(),
    # The control's purpose is the claims table beside the full run's (issue 13); the claims read no
    # LVU row, so the three LVU tables (~35 job-minutes) are left out.
    "control": Profile(synth_preset="demo_control", lvu_seeds=0),
    "quick": Profile(
        pretrain_seeds=1,
        finetune_seeds=2,
        backbone_overrides=["trainer.max_steps=100"],
        context_overrides=["trainer.max_steps=150"],
        vidsitu_overrides=["srl.epochs=20"],
        mask_ablation=(),
        txe_lr_grid=(0.3, 1.0),
        tune_seeds=1,
        lr_rows=False,
        ot_overrides=["trainer.max_steps=100"],
    ),
    # End-to-end integration test of every stage on the `tiny` SynthMovies (tests/test_demo.py).
    "smoke": Profile(
        synth_preset="tiny",
        pretrain_seeds=2,
        finetune_seeds=1,
        synth_overrides=dict(verb_context_p=0.5, hidden_agent_p=0.3, pool_ratio=1.0, action_repeat_s=4.0),
        backbone_overrides=["trainer.max_steps=3", "trainer.ckpt_every_n_steps=2", "probe.max_iter=20"],
        context_overrides=["trainer.max_steps=6", "data.batch_size=8"],
        vidsitu_overrides=["verb.epochs=2", "srl.epochs=1", "relation.epochs=2"],
        mask_ablation=("1",),
        txe_lr_grid=(0.3, 1.0),
        tune_seeds=1,
        lvu_seeds=1,
        lvu_tasks=("year", "genre"),
        lvu_overrides=["train.epochs=2"],
        ot_overrides=["trainer.max_steps=2", "data.batch_size=2"],
        workers=1,
    ),
}


def default_out(profile: str) -> str:
    """``make demo`` (the quick profile) writes runs/demo; every other profile its own folder."""
    return "runs/demo" if profile == "quick" else f"runs/demo_{profile}"


# --------------------------------------------------------------------------- settings and rows
def setting_name(
    backbone: str, txe: str, loss: str | None = None, mask: str | None = None, txe_lr: float | None = None
) -> str:
    s = f"backbone={backbone},txe={txe}"
    if loss is not None:
        s += f",loss={loss}"
    if mask is not None:
        s += f",mask={mask}"
    if txe_lr is not None:
        s += f",txe_lr={txe_lr:g}"
    return s


@dataclass(frozen=True)
class Row:
    """One setting of a results table, run once per pretraining replicate."""

    table: str
    task: str
    backbone: str
    txe: str  # none | scratch | maskpred
    variant: tuple[str, str] | None = None  # (loss, mask label) of the MaskPred TxE
    txe_lr: float | None = None  # a fixed TxE learning-rate scale instead of the tuned one

    @property
    def setting(self) -> str:
        if self.txe != "maskpred":
            return setting_name(self.backbone, self.txe, txe_lr=self.txe_lr)
        if self.table == "mask_ablation" or self.variant != MAIN_VARIANT:
            return setting_name(self.backbone, self.txe, *self.variant, txe_lr=self.txe_lr)
        return setting_name(self.backbone, self.txe, txe_lr=self.txe_lr)

    @property
    def tag(self) -> str:
        t = f"{self.backbone}_{self.txe}"
        if self.txe == "maskpred":
            t += f"_{self.variant[0]}_mask{self.variant[1]}"
        return t + (f"_lr{self.txe_lr:g}" if self.txe_lr is not None else "")


def demo_backbones() -> list[str]:
    """Every registered backbone method, the paper's rows first (``BACKBONE_ORDER``)."""
    from .ssl.registry import list_methods

    return [m for m in BACKBONE_ORDER if m in list_methods()] + [m for m in list_methods() if m not in BACKBONE_ORDER]


def demo_rows(backbones: list[str], prof: Profile) -> list[Row]:
    mp = [b for b in MASKPRED_BACKBONES if b in backbones]
    rows = [Row("verb", "verb", b, "none") for b in backbones]
    for b in mp:
        rows += [
            Row("srl", "srl", b, t, MAIN_VARIANT if t == "maskpred" else None) for t in ("none", "scratch", "maskpred")
        ]
    rows += [Row("relation", "relation", b, "none") for b in backbones]
    for b in mp:
        rows += [
            Row("relation", "relation", b, t, MAIN_VARIANT if t == "maskpred" else None)
            for t in ("scratch", "maskpred")
        ]
    if prof.lr_rows and "cvrl" in mp:
        for task in ("srl", "relation"):
            rows += [Row(task, task, "cvrl", "maskpred", MAIN_VARIANT, lr) for lr in (0.0, 0.1)]
    if "cvrl" in mp:
        variants = [("contrastive", m) for m in prof.mask_ablation] + ([("l2", "1-3")] if prof.l2_ablation else [])
        rows += [Row("mask_ablation", "srl", "cvrl", "maskpred", v) for v in variants]
    return rows


def context_variants(rows: list[Row]) -> list[tuple[str, str, str]]:
    return list(dict.fromkeys((r.backbone, *r.variant) for r in rows if r.txe == "maskpred"))


# --------------------------------------------------------------------------- jobs (run in workers)
def job_synth(root: str, preset: str, overrides: dict) -> None:
    from .synth import generate

    generate(root, preset=preset, seed=0, progress=False, **overrides)
    (Path(root) / ".demo_done").touch()


def method_module(name: str) -> str | None:
    """The module a spawned worker must import to know the backbone method ``name``: None for a
    built-in one (found by name); a method registered elsewhere exists only where its module ran."""
    from .ssl.registry import get_method

    mod = get_method(name).__module__
    return None if mod.startswith(f"{__package__}.ssl.methods.") else mod


def check_methods_importable(backbones: list[str], workers: int) -> None:
    """Refused before any job, not by its backbone job mid-run: a method the demo's spawned workers
    cannot import. One registered in an interactive session (module ``__main__`` without a file: a
    notebook, the REPL), or in a module loaded from a file path under a name that no import finds
    (``importlib.util.spec_from_file_location``, a plugin loader). A script's ``__main__`` can reach
    them (spawn runs the script again in each worker, under its ``if __name__ == "__main__":`` guard)."""
    if workers <= 1:  # the jobs run in this process
        return
    main = sys.modules.get("__main__")
    for b in backbones:
        mod = method_module(b)
        if mod == "__main__" and not getattr(main, "__file__", None):
            raise BadInputError(
                None,
                f"backbone method '{b}' is defined in an interactive session, which the demo's worker "
                "processes cannot import: define it in an importable module, or run with workers=1",
            )
        if mod is not None and mod != "__main__" and not _findable(mod):
            raise BadInputError(
                None,
                f"backbone method '{b}' is defined in module '{mod}', which the demo's worker processes "
                "cannot import by name (loaded from a file path, not on sys.path): put its folder on "
                "PYTHONPATH, or run with workers=1",
            )


def _findable(module: str) -> bool:
    """Whether an import in a fresh process would find ``module``'s top-level package: the import
    system's finders asked directly (``importlib.util.find_spec`` would answer from ``sys.modules``,
    where a module loaded from a file path also sits). Spawned workers get this process's sys.path."""
    top = module.partition(".")[0]
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is not None and find(top, None) is not None:
            return True
    return False


def load_method(name: str, module: str | None = None) -> type:
    """The method class in a worker: its module imported first when it is not a built-in."""
    from .ssl.registry import get_method

    if module is not None and module != "__main__":  # a script's __main__ was re-run by spawn
        importlib.import_module(module)
    return get_method(name)


def job_backbone(
    method: str, data: str, val: str, out: str, overrides: list[str], seed: int, module: str | None = None
) -> None:
    from .config import load_config
    from .ssl.pretrain import pretrain

    load_method(method, module)
    cfg = load_config("backbone", "cpu", [*overrides, f"seed={seed}"], variant=method)
    pretrain(method, data, out, cfg, val=val, resume=True, progress=False)


def job_extract(backbone: str, videos: str, out: str) -> None:
    from .features.extract import extract

    extract(backbone, videos, out, stride_s=2.0, num_workers=0, accelerator="cpu", progress=False)


def job_context(features: list[str], out: str, overrides: list[str], vidsitu_root: str | None = None) -> None:
    from .config import load_config
    from .context.pretrain import pretrain_context

    cfg = load_config("context", "cpu", overrides)
    pretrain_context(features, out, cfg, resume=True, vidsitu_root=vidsitu_root)


def job_tune(
    task: str, data_root: str, features: str, out: str, values: list[float], seeds: int, overrides: list[str]
) -> None:
    from .tasks.vidsitu.runner import tune_txe_lr_scale

    tune_txe_lr_scale(task, data_root, features, out, values=values, seeds=seeds, overrides=overrides)


def job_finetune(
    task: str,
    data_root: str,
    features: str,
    contextualizer: str,
    out: str,
    seeds: int,
    overrides: list[str],
    txe_lr_from: str | None = None,
) -> None:
    from .tasks.vidsitu.runner import run_finetune

    ov = list(overrides)
    if txe_lr_from is not None:  # the rule: the scale tuned for a scratch TxE, for every TxE of the task
        ov.append(f"{task}.txe_lr_scale={json.loads(Path(txe_lr_from).read_text())['best']}")
    run_finetune(
        task,
        data_root,
        features=features,
        contextualizer=contextualizer,
        seeds=seeds,
        out=out,
        preset="cpu",
        overrides=ov,
        resume=True,
    )


def job_lvu(
    out: str,
    synth: str,
    backbones: dict[str, str],
    contextualizer: str,
    event_features: dict[str, str],
    seeds: int,
    tasks: list[str],
    overrides: list[str],
    pretrain_overrides: list[str],
) -> None:
    from .tasks.lvu.table import run_lvu_table

    run_lvu_table(
        out,
        synth,
        backbones,
        contextualizer,
        seeds,
        tasks=tasks or None,
        event_features=event_features,
        overrides=overrides,
        pretrain_overrides=pretrain_overrides,
    )


def job_baseline(task: str, baseline: str, data_root: str, out: str) -> None:
    from .tasks.vidsitu.runner import run_baseline

    run_baseline(task, data_root, baseline, out)


# --------------------------------------------------------------------------- the plan
# Settings added after runs were saved, with the behaviour a run had before the key existed: a saved
# config without the key is the same run as one with this value.
IMPLICIT_BEFORE: dict[str, Any] = {
    "data.frame_crop": "square",  # backbone
    "augment.crop_sampler": "torchvision",  # backbone
    "augment.op_style": "torchvision",  # backbone
    "modist.flow_input": "centred",  # backbone
    "flow.store": "npy",  # backbone
    "flow.jpeg_quality": 95,  # backbone (read only with store: jpeg)
    "data.resize": "crop",  # vidsitu --videos
    "model.track_mask": 0.0,  # lvu
    "train.betas": [0.9, 0.99],  # lvu
    "optim.warmup_start_frac": 0.0,  # backbone (the warm-up from 1/warmup of the peak)
}


def config_drift(saved: Path, cfg: Any, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: old -> new`` for each setting where the config a finished run saved (``saved``)
    differs from the one it would get now; top-level sections in ``ignore`` are skipped. A key
    absent on one side counts as ``None`` and empty lists/mappings and ``False`` as ``None`` too, so a
    setting added later with a do-nothing default (an option switched off) is not a change; one added
    with another value that keeps the old behaviour is in :data:`IMPLICIT_BEFORE`."""
    from .config import read_saved_config, to_dict

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in (d or {}).items():
            if not prefix and k in ignore:
                continue
            if isinstance(v, dict) and v:
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = None if v is False or v in ([], {}) else v
        return out

    if not saved.is_file():
        return []
    old, new = flat(read_saved_config(saved)), flat(to_dict(cfg))
    for key, value in IMPLICIT_BEFORE.items():
        if key in new and key not in old:
            old[key] = value
    return [f"{k}: {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _note_drift(
    run_dir: Path,
    cfg: Any,
    done: bool,
    ignore: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    restart_unfinished: bool = False,
) -> None:
    """Reusing a finished run made with other settings silently would mix settings in one table;
    redoing it silently would hide what changed. Say so, keep the finished work, let the user decide.
    (``skip``: keys a job sets itself, e.g. its seed or its tuned TxE learning rate.) An interrupted
    run made with other settings (another profile into the same --out) is not resumed under this
    one's (``restart_unfinished``): its checkpoints go and it starts again, said so."""
    interrupted = not done and restart_unfinished and (run_dir / "checkpoints").is_dir()
    drift = config_drift(run_dir / "config.yaml", cfg, ignore) if done or interrupted else []
    drift = [d for d in drift if not d.split(":")[0].endswith(skip)] if skip else drift
    if drift:
        more = "; ..." if len(drift) > 4 else ""
        if interrupted:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        print(
            f"note: {run_dir} was made with other settings than this version's ({'; '.join(drift[:4])}{more}); "
            + (
                "it was interrupted, so it starts again with these."
                if interrupted
                else "reusing it. Delete it, and the runs made from it, to redo it."
            ),
            flush=True,
        )


def _note_context_drift(jobs: list) -> None:
    """The TxEs' :func:`_note_drift`: a finished one is reused on its model.pt alone (and named); an
    interrupted one made with other settings starts again, as a backbone's -- resumed, it took this
    version's optimiser settings over the other run's weights and step."""
    from .config import load_config

    for job in jobs:
        if job.fn == "moviessl.demo:job_context":
            d = Path(job.kwargs["out"])
            cfg = load_config("context", "cpu", job.kwargs["overrides"])
            _note_drift(d, cfg, (d / "model.pt").is_file(), restart_unfinished=True)


def backbone_job(
    name: str, method: str, actions: Path, out: Path, overrides: list[str], seed: int, after: tuple[str, ...] = ()
):
    """The scheduler job that pretrains one backbone with the demo's recipe: ``method`` on a SynthMovies
    ``actions/`` folder (its train.csv, val.csv for the probe), the backbone cpu preset with
    ``overrides`` and ``seed``, into ``out`` (done when its summary.json exists). Its cost, for the
    time-left estimate, follows the method's step cost and the budget the overrides give."""
    from .config import load_config
    from .scheduler import Job
    from .ssl.registry import get_method

    m = get_method(method)
    steps = load_config("backbone", "cpu", overrides, variant=method).trainer.max_steps
    return Job(
        name,
        "moviessl.demo:job_backbone",
        dict(
            method=method,
            data=str(actions / "train.csv"),
            val=str(actions / "val.csv"),
            out=str(out),
            overrides=list(overrides),
            seed=seed,
            # a method registered outside moviessl: the workers import its module first
            **({"module": mod} if (mod := method_module(method)) else {}),
        ),
        tuple(after),
        str(out / "summary.json"),
        m.setup_cost_s + m.step_cost * CVRL_STEP_S * steps,
    )


def plan_jobs(
    out: Path, synth: Path, prof: Profile, backbones: list[str], rows: list[Row], seeds: int, synth_given: bool
) -> list:
    """The demo's job graph (files in ``out``)."""
    from .config import load_config
    from .scheduler import Job
    from .synth.generate import rendered_megapixels, resolve_preset

    P = prof.pretrain_seeds
    vid_root, lvu_root, pool_root = synth / "vidsitu", synth / "lvu", synth / "pool"
    actions = synth / "actions"
    jobs: list[Job] = []
    if not synth_given:
        jobs.append(
            Job(
                "synth",
                "moviessl.demo:job_synth",
                dict(root=str(synth), preset=prof.synth_preset, overrides=prof.synth_overrides),
                done=str(synth / ".demo_done"),
                cost=SYNTH_S_PER_MPIX * rendered_megapixels(resolve_preset(prof.synth_preset, **prof.synth_overrides)),
            )
        )
    dep_synth = () if synth_given else ("synth",)
    # a preset without an unlabelled pool (demo_control: every structure knob at 0) has no pool/ folder
    has_pool = pool_root.is_dir() if synth_given else _preset_has_pool(prof)
    for b in backbones:
        for r in range(P):
            d = out / "backbone" / b / f"r{r}"
            jobs.append(
                backbone_job(f"backbone {b} r{r}", b, actions, d, prof.backbone_overrides + QUIET, r, dep_synth)
            )
            sets = [("vidsitu", vid_root), ("lvu", lvu_root)] + (
                [("pool", pool_root)] if b in MASKPRED_BACKBONES and has_pool else []
            )
            for name, root in sets:
                f = out / "features" / b / f"r{r}" / name
                jobs.append(
                    Job(
                        f"extract {b} r{r} {name}",
                        "moviessl.demo:job_extract",
                        dict(backbone=str(d / "model.pt"), videos=str(root), out=str(f)),
                        (f"backbone {b} r{r}",),
                        str(f / "index.json"),
                        EXTRACT_S[name],
                    )
                )
    context_s = 1.5 + MASKPRED_STEP_S * load_config("context", "cpu", prof.context_overrides).trainer.max_steps
    for b, loss, mask in context_variants(rows):
        for r in range(P):
            c = out / "context" / f"{b}_{loss}_mask{mask}" / f"r{r}"
            sets = ["lvu", "vidsitu"] + (["pool"] if has_pool else [])
            ov = (
                prof.context_overrides
                + QUIET
                + [
                    f"maskpred.loss={'l2' if loss == 'l2' else 'infonce'}",
                    f"maskpred.mask_sizes={MASK_LABELS[mask]}",
                    f"seed={r}",
                ]
            )
            jobs.append(
                Job(
                    f"context {b} {loss} mask{mask} r{r}",
                    "moviessl.demo:job_context",
                    dict(
                        features=[str(out / "features" / b / f"r{r}" / s) for s in sets],
                        out=str(c),
                        overrides=ov,
                        vidsitu_root=str(vid_root),  # the pool's segment-like names are not VidSitu's splits
                    ),
                    tuple(f"extract {b} r{r} {s}" for s in sets),
                    str(c / "model.pt"),
                    context_s,
                )
            )
    jobs += lvu_jobs(out, synth, prof, backbones, rows)
    ft_ov = prof.vidsitu_overrides + QUIET
    # the task heads' preset pins their thread count (tiny models): the scheduler lets two of them share
    # the cores while the backbone-sized jobs run at the run's thread count
    ft_cfg = load_config("vidsitu", "cpu", ft_ov)
    ft_threads = ft_cfg.threads
    per_seed = {"srl": 4.0 + SRL_EPOCH_S * ft_cfg.srl.epochs, "verb": 1.5, "relation": 6.5}  # with a TxE
    tune_backbone = "cvrl" if "cvrl" in backbones else backbones[0]
    for task in sorted({r.task for r in rows if r.txe != "none"}):
        t = out / "tune" / task
        jobs.append(
            Job(
                f"tune {task}",
                "moviessl.demo:job_tune",
                dict(
                    task=task,
                    data_root=str(vid_root),
                    features=str(out / "features" / tune_backbone / "r0" / "vidsitu"),
                    out=str(t),
                    values=list(prof.txe_lr_grid),
                    seeds=prof.tune_seeds,
                    overrides=ft_ov,
                ),
                (f"extract {tune_backbone} r0 vidsitu",),
                str(t / "tuning.json"),
                per_seed[task] * len(prof.txe_lr_grid) * prof.tune_seeds,
                threads=ft_threads,
            )
        )
    for row in rows:
        for r in range(P):
            f = out / "features" / row.backbone / f"r{r}" / "vidsitu"
            d = out / "finetune" / row.task / row.tag / f"r{r}"
            deps = [f"extract {row.backbone} r{r} vidsitu"]
            ctx = row.txe
            if row.txe == "maskpred":
                ctx = str(
                    out / "context" / f"{row.backbone}_{row.variant[0]}_mask{row.variant[1]}" / f"r{r}" / "model.pt"
                )
                deps.append(f"context {row.backbone} {row.variant[0]} mask{row.variant[1]} r{r}")
            ov, lr_from = list(ft_ov), None
            if row.txe != "none" and row.txe_lr is None:
                lr_from = str(out / "tune" / row.task / "tuning.json")
                deps.append(f"tune {row.task}")
            elif row.txe_lr is not None:
                ov.append(f"{row.task}.txe_lr_scale={row.txe_lr}")
            cost = (1.5 if row.task == "relation" and row.txe == "none" else per_seed[row.task]) * seeds
            jobs.append(
                Job(
                    f"finetune {row.table} {row.setting} r{r}",
                    "moviessl.demo:job_finetune",
                    dict(
                        task=row.task,
                        data_root=str(vid_root),
                        features=str(f),
                        contextualizer=ctx,
                        out=str(d),
                        seeds=seeds,
                        overrides=ov,
                        txe_lr_from=lr_from,
                    ),
                    tuple(dict.fromkeys(deps)),
                    str(d / "summary.json"),
                    cost,
                    threads=ft_threads,
                    done_facts={"seeds": seeds},  # a rerun with more --seeds adds them
                )
            )
    d = out / "finetune" / "relation" / "pair_prior"
    jobs.append(
        Job(
            "baseline relation pair_prior",
            "moviessl.demo:job_baseline",
            dict(task="relation", baseline="pair_prior", data_root=str(vid_root), out=str(d)),
            dep_synth,
            str(d / "summary.json"),
            2.0,
            threads=1,
        )
    )
    return jobs


LVU_BACKBONES = ("supervised", "cvrl", "modist")  # the Table 5 rows' backbones (tasks.lvu.table)


def lvu_jobs(out: Path, synth: Path, prof: Profile, backbones: list[str], rows: list[Row]) -> list:
    """One Table 5 analogue per pretraining replicate (its backbones, CVRL events and MaskPred TxE)."""
    from .scheduler import Job

    if prof.lvu_seeds < 1 or ("cvrl", *MAIN_VARIANT) not in context_variants(rows):
        return []
    if not all(b in backbones for b in LVU_BACKBONES):
        return []
    from .config import load_config

    jobs = []
    loss, mask = MAIN_VARIANT
    ot_steps = load_config("ot_pretrain", "cpu", prof.ot_overrides).trainer.max_steps
    for r in range(prof.pretrain_seeds):
        d = out / "lvu" / f"r{r}"
        ctx = f"context cvrl {loss} mask{mask} r{r}"
        jobs.append(
            Job(
                f"lvu table r{r}",
                "moviessl.demo:job_lvu",
                dict(
                    out=str(d),
                    synth=str(synth),
                    backbones={b: str(out / "backbone" / b / f"r{r}" / "model.pt") for b in LVU_BACKBONES},
                    contextualizer=str(out / "context" / f"cvrl_{loss}_mask{mask}" / f"r{r}" / "model.pt"),
                    event_features={b: str(out / "features" / b / f"r{r}" / "lvu") for b in ("supervised", "cvrl")},
                    seeds=prof.lvu_seeds,
                    tasks=list(prof.lvu_tasks),
                    overrides=prof.lvu_overrides,
                    pretrain_overrides=prof.ot_overrides,
                ),
                tuple(f"backbone {b} r{r}" for b in LVU_BACKBONES)
                + (f"extract supervised r{r} lvu", f"extract cvrl r{r} lvu", ctx),
                str(d / "lvu_table.json"),
                # instances of 3 backbones + OT pretraining + 6 rows x tasks x seeds
                150.0 + 0.5 * ot_steps + 125.0 * prof.lvu_seeds * (len(prof.lvu_tasks) or 9) / 9,
            )
        )
    return jobs


def _preset_has_pool(prof: Profile) -> bool:
    from .synth.generate import resolve_preset

    return resolve_preset(prof.synth_preset, **prof.synth_overrides).pool_ratio > 0


# --------------------------------------------------------------------------- aggregation
def aggregate(summaries: list[dict]) -> dict[str, dict]:
    """Per metric, mean ± SE over pretraining replicates of the replicate means (the SE then holds
    both the pretraining and the fine-tuning variance); with one replicate, over its seeds."""
    from .eval.stats import mean_se

    out: dict[str, dict] = {}
    metrics = list(dict.fromkeys(k for s in summaries for k in s["summary"]))
    for m in metrics:
        # as each summary's own mean: a non-finite run is counted, not averaged (eval.stats.summarize)
        # (a run's value written as null was non-finite: utils.io.json_ready)
        per_rep = [[json_float(r["metrics"][m]) for r in s["runs"] if m in r["metrics"]] for s in summaries]
        bad = sum(1 for v in per_rep for x in v if not math.isfinite(x))
        per_rep = [[x for x in v if math.isfinite(x)] for v in per_rep]
        per_rep = [v for v in per_rep if v]
        if not per_rep:
            continue
        n = sum(len(v) for v in per_rep)
        if len(per_rep) > 1:
            mean, se = mean_se([sum(v) / len(v) for v in per_rep])
        else:
            mean, se = mean_se(per_rep[0])
        out[m] = {"mean": mean, "se": se, "n": n, "n_pretrain": len(per_rep), **({"n_nonfinite": bad} if bad else {})}
    return out


def collect(out: Path, rows: list[Row], prof: Profile, backbones: list[str]) -> tuple[list[dict], dict, dict]:
    """Result rows (table, setting, metric, mean, se, n, n_pretrain), probe summaries, run folders."""
    from .eval.stats import mean_se

    results, runs = [], {}
    for row in rows:
        dirs = [out / "finetune" / row.task / row.tag / f"r{r}" for r in range(prof.pretrain_seeds)]
        summ = [json.loads((d / "summary.json").read_text()) for d in dirs if (d / "summary.json").is_file()]
        if not summ:
            continue
        runs[f"{row.table}/{row.setting}"] = [str(d) for d in dirs]
        tables = [row.table]
        if row.table == "srl" and row.variant == MAIN_VARIANT and row.backbone == "cvrl" and row.txe_lr is None:
            tables.append("mask_ablation")  # the main MaskPred run is also the {1,2,3} contrastive ablation row
        for tb in tables:
            s = row.setting if tb == row.table else setting_name(row.backbone, row.txe, *MAIN_VARIANT)
            for metric, st in aggregate(summ).items():
                results.append({"table": tb, "setting": s, "metric": metric, **st})
    base = out / "finetune" / "relation" / "pair_prior" / "summary.json"
    if base.is_file():
        for metric, st in json.loads(base.read_text())["summary"].items():
            results.append(
                {
                    "table": "relation",
                    "setting": "baseline=pair_prior",
                    "metric": metric,
                    "mean": json_float(st["mean"]),  # null: n 0, no finite run (NaN, as summarize has it)
                    "se": json_float(st["se"]),
                    "n": st["n"],
                    "n_pretrain": 0,
                }
            )
    probes = {}
    for b in backbones:
        files = [out / "backbone" / b / f"r{r}" / "probe.json" for r in range(prof.pretrain_seeds)]
        ps = [json.loads(p.read_text()) for p in files if p.is_file()]  # this profile's replicates only
        if ps:
            probes[b] = {
                k: dict(zip(("mean", "se"), mean_se([json_float(p[k]) for p in ps])))
                for k in ("linear_top1", "knn_top1")
            }
            probes[b]["n"] = len(ps)
            # the end of each run's training loss against the loss of outputs that ignore the input
            # (summary.json's pretext; none for random init)
            pre = [json.loads(f.with_name("summary.json").read_text()).get("pretext") for f in files if f.is_file()]
            if pre and all(pre):
                probes[b]["pretext_loss"] = dict(zip(("mean", "se"), mean_se([p["loss_end"] for p in pre])))
                probes[b]["chance_loss"] = pre[0]["chance"]
    return results, probes, runs


def collect_lvu(out: Path, prof: Profile) -> dict | None:
    """The Table 5 analogue over the pretraining replicates (``tasks.lvu.table.combine_replicates``):
    rows for results.json, its markdown (tables, headroom, claims) and plot."""
    from .tasks.lvu.table import PAPER_ROWS, combine_replicates, report

    files = [out / "lvu" / f"r{r}" / "lvu_table.json" for r in range(prof.pretrain_seeds)]
    tables = [json.loads(p.read_text()) for p in files if p.is_file()]
    if not tables:
        return None
    stats = combine_replicates(tables)
    tasks = list(dict.fromkeys(t for per in stats["test"].values() for t in per))
    runs = (
        f"{len(tables)} pretraining replicates of the mean over {plural(tables[0]['seeds'], 'run')} each"
        if len(tables) > 1
        else plural(tables[0]["seeds"], "run")
    )
    return report(stats, tables[0]["headroom"], tasks, PAPER_ROWS, runs, out / "plots" / "lvu_table.png")


# --------------------------------------------------------------------------- entry point
STAMP = "demo.json"


def _claim_out(out: Path, profile: str, synth: Path, write: bool = True, threads: int = 1) -> None:
    """``out/demo.json`` names the profile, SynthMovies folder and torch threads per job the demo in
    ``out`` is made of. Its finished jobs (the data, TxEs, tuning, the LVU table) are taken as done by
    their files alone, so another profile or ``--synth`` into the same ``--out`` would have reported
    the first run's results as its own, and another ``--threads`` mixed two thread counts' results
    (deterministic per count) in one table: refused in one line. A folder from before the stamp (or
    before it held a key) is taken as this run's. ``write=False`` only checks: the stamp is written
    once the demo's inputs are found usable."""
    # relative to out when inside it (the default): a moved or renamed runs folder is the same demo
    where = synth.resolve()
    where = where.relative_to(out.resolve()) if where.is_relative_to(out.resolve()) else where
    stamp, want = out / STAMP, {"profile": profile, "synth": str(where), "threads": int(threads)}
    if stamp.is_file():
        try:
            had = json.loads(stamp.read_text())
        except (OSError, ValueError):
            had = {}
        for key, flag in (("profile", "--profile"), ("synth", "--synth"), ("threads", "--threads")):
            if had.get(key) is not None and had.get(key) != want[key]:
                raise BadInputError(
                    out,
                    f"holds a demo made with {flag} {had[key]}, not {want[key]}: give another --out (each profile's "
                    "default --out differs), or the same settings",
                )
    if write:
        atomic_write_json(stamp, want)


def _synth_status(meta: Path) -> str | None:
    """The ``status`` a SynthMovies folder's ``synth_meta.json`` records; a damaged one is bad input."""
    try:
        held = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BadInputError(meta, f"unreadable SynthMovies metadata ({e})") from None
    if not isinstance(held, dict):
        raise BadInputError(meta, f"SynthMovies metadata must be a JSON object, got {type(held).__name__}")
    return held.get("status")


def run_demo(
    out: str | os.PathLike = "runs/demo",
    *,
    seeds: int | None = None,
    profile: str = "full",
    synth_root: str | os.PathLike | None = None,
    workers: int | None = None,
    threads: int = 1,
) -> dict:
    """Jobs on ``workers`` cores at ``threads`` torch threads each (default: the profile's workers at
    1 thread; the task heads at their preset's 1), side by side while their threads fit; results are
    deterministic for a given machine and thread count."""
    from .config import load_config
    from .features.extract import run_lock
    from .scheduler import run_jobs
    from .ssl.registry import get_method
    from .training import lightning_quieted, logger_levels

    if profile not in PROFILES:
        raise BadInputError(None, f"unknown demo profile '{profile}' (choose from {', '.join(PROFILES)})")
    prof = PROFILES[profile]
    for flag, v in (("--seeds", seeds), ("--workers", workers), ("--threads", threads)):
        if v is not None and int(v) < 1:  # else found by the first fine-tuning job, after the pretraining
            raise BadInputError(None, f"{flag} must be >= 1, got {v}")
    n_seeds = int(seeds or prof.finetune_seeds)
    out = ensure_out_dir(out)
    synth = Path(synth_root) if synth_root else out / "synth"
    # one demo per folder: its stamp, timings, results and plots are its own, and a second demo was
    # refused only job by job (each stage locks its own sub-folder's file, never this one)
    with run_lock(out), contextlib.ExitStack() as scoped:
        _claim_out(out, profile, synth, write=False, threads=threads)
        # for this call only: called from a notebook, the demo left its Lightning loggers at ERROR, a
        # dozen ignore filters in front of its warnings filters and moviessl's own log at WARNING
        scoped.enter_context(lightning_quieted())
        scoped.enter_context(logger_levels(logging.WARNING, "moviessl", "pytorch_lightning", "lightning"))
        t_start = time.perf_counter()
        backbones = demo_backbones()
        check_methods_importable(backbones, workers or prof.workers)
        rows = demo_rows(backbones, prof)
        # --synth: a finished SynthMovies folder is used as it is (any preset); anything else is generated into
        meta = synth / "synth_meta.json"
        complete = meta.is_file() and _synth_status(meta) == "complete"
        jobs = plan_jobs(out, synth, prof, backbones, rows, n_seeds, synth_given=synth_root is not None and complete)
        # after the --synth folder's metadata was read: a damaged one stamped the folder first, and the
        # corrected --synth was then refused as another demo's
        _claim_out(out, profile, synth, threads=threads)

        # a cached run made with other settings is reused and named, never silently mixed in or redone
        sections = {b: set(get_method(b).config_sections) for b in backbones}
        every = set().union(*sections.values())
        for b in backbones:
            cfg = load_config("backbone", "cpu", prof.backbone_overrides + QUIET, variant=b)
            for d in sorted((out / "backbone" / b).glob("r*")):
                _note_drift(
                    d,
                    cfg,
                    (d / "summary.json").is_file(),
                    ignore=tuple(sorted(every - sections[b])),
                    skip=("seed",),
                    restart_unfinished=True,
                )
        _note_context_drift(jobs)
        ft_cfg = load_config("vidsitu", "cpu", prof.vidsitu_overrides + QUIET)
        for d in sorted((out / "finetune").glob("*/*/r*")):
            _note_drift(d, ft_cfg, (d / "summary.json").is_file(), skip=("txe_lr_scale",))

        run_jobs(jobs, workers=workers or prof.workers, threads=threads, timings=out / "timings.json")

        from .claims import claims_markdown, evaluate_claims
        from .demo_report import write_report

        results, probes, runs = collect(out, rows, prof, backbones)
        lvu = collect_lvu(out, prof)
        if lvu:
            results += lvu["rows"] + lvu["rows_val"]
        timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
        claims = evaluate_claims(results)
        report = write_report(
            out,
            results,
            probes=probes,
            runs=runs,
            seeds=n_seeds,
            profile=profile,
            wall_s=time.perf_counter() - t_start,
            synth=synth,
            jobs_s=sum(timings.values()),
            claims=claims,
            pretrain_seeds=prof.pretrain_seeds,
            lvu=lvu,
            threads=threads,
        )
        print(claims_markdown(claims))
        print(report["markdown"])
        print(
            f"\nWrote {out / 'results.json'}, {out / 'results.md'} and plots in {out / 'plots'} "
            f"(this invocation {(time.perf_counter() - t_start) / 60:.1f} min; "
            f"all jobs {sum(timings.values()) / 60:.1f} min of compute, see timings.json)."
        )
        return report


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole hierarchy on SynthMovies (CPU)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (reused: finished jobs are skipped; default runs/demo for the quick profile, "
        "runs/demo_<profile> for the others, so two profiles never share cached runs)",
    )
    p.add_argument(
        "--seeds", type=int, default=None, help="fine-tuning seeds per pretraining run (default: the profile's)"
    )
    p.add_argument("--quick", action="store_true", help="the quick profile (fewer steps and runs)")
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="full (default), control (SynthMovies' structure knobs off; no LVU table), quick, or smoke (tiny data)",
    )
    p.add_argument("--synth", default=None, help="use an existing SynthMovies folder instead of OUT/synth")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="cores the jobs share, one process each (default: the profile's: 2, smoke 1); jobs run side by side "
        "while their threads fit",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per job (default 1; the task heads keep their preset's 1); results are "
        "deterministic for a given machine and thread count",
    )
    p.set_defaults(func=_cli)


def _cli(a) -> int:
    profile = a.profile or ("quick" if a.quick else "full")
    run_demo(
        a.out or default_out(profile),
        seeds=a.seeds,
        profile=profile,
        synth_root=a.synth,
        workers=a.workers,
        threads=a.threads,
    )
    return 0
