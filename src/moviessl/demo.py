"""``moviessl demo``: the whole hierarchy on SynthMovies, end to end, on a CPU.

Steps (each cached and resumable: rerunning after an interruption continues where it stopped):

1. generate SynthMovies (``demo`` preset), or reuse it;
2. pretrain the backbone: CVRL, MoDist, the supervised baseline, and a random-init reference;
3. extract 2-s event features of the VidSitu-style clips and the long (LVU-style) videos;
4. pretrain TxE by event mask prediction on the long-video + VidSitu-style features, plus the
   L2-loss and mask-size variants of the ablation table;
5. fine-tune and evaluate, over ``--seeds`` runs: verb prediction (Table 4), semantic roles
   (Table 1), event relations (Table 3), the mask ablation (Table 2);
6. write ``results.json`` / ``results.md`` (tables shaped like the paper's, mean ± SE) and PNG
   plots, and print the tables.

Everything here is a CPU-sized stand-in for the paper's scale (tiny Slow-D at 64², a few hundred
steps, TxE of ~0.4 M parameters, frozen-feature heads); the output says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import BadInputError
from .utils.io import atomic_write_json, ensure_out_dir

log = logging.getLogger("moviessl.demo")

# Backbone rows in the paper's order (references first); any other registered method follows.
BACKBONE_ORDER = ("random", "supervised", "cvrl", "modist")
# The demo shows one progress line per job (with the time left); per-job Lightning bars would bury it.
QUIET = ["trainer.progress_bar=false"]

# Settings of each table: (backbone, txe, context variant key or None).
# A context variant is (backbone it was pretrained on, loss, mask label).
MAIN_VARIANT = ("contrastive", "1-3")
MASK_LABELS = {"1": [1], "1-2": [1, 2], "1-3": [1, 2, 3], "1-4": [1, 2, 3, 4]}
# A fine-tuning job's cost relative to a typical one (SRL: a decoder trained for 30 epochs x seeds).
TASK_COST = {"srl": 75.0 / 8.0}


@dataclass
class Profile:
    """How big the demo is. ``full``: the acceptance run; ``quick``: a smoke run in a few minutes."""

    synth_preset: str = "demo"
    seeds: int = 3
    backbone_overrides: list[str] = field(default_factory=list)
    context_overrides: list[str] = field(default_factory=list)
    vidsitu_overrides: list[str] = field(default_factory=list)
    synth_overrides: dict[str, Any] = field(default_factory=dict)
    mask_ablation: tuple[str, ...] = ("1", "1-2", "1-3", "1-4")
    l2_ablation: bool = True


PROFILES = {
    "full": Profile(),
    "quick": Profile(
        seeds=2,
        backbone_overrides=["trainer.max_steps=100"],
        context_overrides=["trainer.max_steps=150"],
        vidsitu_overrides=["srl.epochs=20"],
        mask_ablation=("1-3",),
        l2_ablation=True,
    ),
    # End-to-end integration test of every stage on the `tiny` SynthMovies (tests/test_demo.py).
    "smoke": Profile(
        synth_preset="tiny",
        seeds=2,
        backbone_overrides=["trainer.max_steps=3", "trainer.ckpt_every_n_steps=2", "probe.max_iter=20"],
        context_overrides=["trainer.max_steps=6", "data.batch_size=8"],
        vidsitu_overrides=["verb.epochs=2", "srl.epochs=1", "relation.epochs=2"],
        mask_ablation=("1", "1-3"),
        l2_ablation=True,
    ),
}


# --------------------------------------------------------------------------- progress display
class Progress:
    """One line per job: ``[step k/6] name (job j/J) | elapsed | ~time left``.

    Time left is the remaining jobs' expected cost (weights below) scaled by how fast the jobs
    so far went compared with their expected cost."""

    # Expected seconds of a typical job of each step on 2 idle cores (full profile from scratch,
    # docs/benchmarks.md); a job that costs more says so by a factor (a backbone method's
    # ``relative_cost``; TASK_COST below).
    WEIGHTS = {"synth": 45.0, "backbone": 50.0, "features": 10.0, "context": 6.0, "finetune": 8.0, "report": 1.0}

    def __init__(self, plan: list[tuple[str, str, float]], timings: Path | None = None):
        self.plan = plan  # [(step, job name, cost factor)]
        self.weights = [self.WEIGHTS[s] * f for s, _, f in plan]
        # Seconds each job took, kept across invocations (a resumed demo still reports its full cost).
        self.timings_path = timings
        self.timings: dict[str, float] = json.loads(timings.read_text()) if timings and timings.is_file() else {}
        self.t0 = time.perf_counter()
        self.done_expected = 0.0
        self.done_actual = 0.0
        self.i = 0

    def _fmt(self, s: float) -> str:
        s = max(0, int(s))
        return f"{s // 60}m{s % 60:02d}s"

    def run(self, step_idx: int, step: str, name: str, fn: Callable[[], Any], cached: bool = False) -> Any:
        self.i += 1
        remaining = sum(self.weights[self.i - 1 :])
        speed = (self.done_actual / self.done_expected) if self.done_expected > 0 else 1.0
        elapsed = time.perf_counter() - self.t0
        tag = "cached" if cached else f"~{self._fmt(remaining * speed)} left"
        print(
            f"[step {step_idx}/6 {step}] job {self.i}/{len(self.plan)}: {name} | elapsed {self._fmt(elapsed)} | {tag}",
            flush=True,
        )
        if cached:
            return None
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        self.done_actual += dt
        self.done_expected += self.weights[self.i - 1]
        self.timings[name] = round(dt, 1)
        if self.timings_path is not None:
            atomic_write_json(self.timings_path, self.timings)
        return out


# --------------------------------------------------------------------------- the pipeline
def _quiet() -> None:
    from .training import quiet_lightning

    quiet_lightning()
    for name in ("moviessl", "pytorch_lightning", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def config_drift(saved: Path, cfg: Any, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: old -> new`` for each setting where the config a finished run saved (``saved``)
    differs from the one it would get now; top-level sections in ``ignore`` are skipped. A key
    absent on one side counts as ``None`` and empty lists/mappings as ``None`` too, so a setting
    added later with a do-nothing default is not a change."""
    import yaml

    from .config import to_dict

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in (d or {}).items():
            if not prefix and k in ignore:
                continue
            if isinstance(v, dict) and v:
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v if v not in ([], {}) else None
        return out

    if not saved.is_file():
        return []
    old, new = flat(yaml.safe_load(saved.read_text())), flat(to_dict(cfg))
    return [f"{k}: {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _note_drift(run_dir: Path, cfg: Any, done: bool, ignore: tuple[str, ...] = ()) -> None:
    """Reusing a finished run made with other settings silently would mix settings in one table;
    redoing it silently would hide what changed. Say so, keep the finished work, let the user decide."""
    drift = config_drift(run_dir / "config.yaml", cfg, ignore) if done else []
    if drift:
        more = "; ..." if len(drift) > 4 else ""
        print(
            f"note: {run_dir} was made with other settings than this version's ({'; '.join(drift[:4])}{more}); "
            f"reusing it. Delete it, and the runs made from it, to redo it.",
            flush=True,
        )


def setting_name(backbone: str, txe: str, loss: str | None = None, mask: str | None = None) -> str:
    s = f"backbone={backbone},txe={txe}"
    if loss is not None:
        s += f",loss={loss}"
    if mask is not None:
        s += f",mask={mask}"
    return s


def run_demo(
    out: str | os.PathLike = "runs/demo",
    *,
    seeds: int | None = None,
    profile: str = "full",
    synth_root: str | os.PathLike | None = None,
    workers: int | None = None,
) -> dict:
    from .config import load_config
    from .context.pretrain import pretrain_context
    from .features.extract import extract
    from .ssl.pretrain import pretrain
    from .ssl.registry import get_method, list_methods
    from .synth import generate
    from .tasks.vidsitu.runner import run_finetune
    from .training import cpu_threads

    if profile not in PROFILES:
        raise BadInputError(None, f"unknown demo profile '{profile}' (choose from {', '.join(PROFILES)})")
    prof = PROFILES[profile]
    n_seeds = int(seeds or prof.seeds)
    out = ensure_out_dir(out)
    cpu_threads()
    _quiet()
    t_start = time.perf_counter()
    synth = Path(synth_root) if synth_root else out / "synth"
    vid_root, lvu_root = synth / "vidsitu", synth / "lvu"
    actions_train, actions_val = synth / "actions" / "train.csv", synth / "actions" / "val.csv"
    backbones = [m for m in BACKBONE_ORDER if m in list_methods()] + [
        m for m in list_methods() if m not in BACKBONE_ORDER
    ]
    method_sections = {b: set(get_method(b).config_sections) for b in backbones}
    all_sections = set().union(*method_sections.values())

    # Context variants: (backbone, loss, mask label).
    variants = [("cvrl", "contrastive", m) for m in prof.mask_ablation]
    if prof.l2_ablation:
        variants.append(("cvrl", "l2", "1-3"))
    variants.append(("modist", "contrastive", "1-3"))
    variants = list(dict.fromkeys(variants))

    # The fine-tuning grid: (table, task, backbone, txe, variant or None).
    grid: list[tuple[str, str, str, str, tuple | None]] = []
    for b in backbones:
        grid.append(("verb", "verb", b, "none", None))
    for b in ("supervised", "cvrl"):
        grid.append(("srl", "srl", b, "none", None))
        grid.append(("srl", "srl", b, "scratch", None))
    grid.append(("srl", "srl", "cvrl", "maskpred", ("cvrl", "contrastive", "1-3")))
    for b in backbones:
        grid.append(("relation", "relation", b, "none", None))
    for b in ("cvrl", "modist"):
        grid.append(("relation", "relation", b, "scratch", None))
        grid.append(("relation", "relation", b, "maskpred", (b, "contrastive", "1-3")))
    for v in variants:
        if v[0] == "cvrl" and v != ("cvrl", "contrastive", "1-3"):
            grid.append(("mask_ablation", "srl", "cvrl", "maskpred", v))

    plan = [("synth", "SynthMovies", 1.0)]
    plan += [("backbone", f"pretrain backbone {b}", get_method(b).relative_cost) for b in backbones]
    plan += [("features", f"extract {b}/{d}", 1.0) for b in backbones for d in ("vidsitu", "lvu")]
    plan += [("context", f"MaskPred TxE {v}", 1.0) for v in variants]
    plan += [("finetune", f"{t}: {task} {b} txe={x}", TASK_COST.get(task, 1.0)) for t, task, b, x, _ in grid]
    plan += [("report", "results", 1.0)]
    prog = Progress(plan, out / "timings.json")

    # 1. data -------------------------------------------------------------------------------
    meta = synth / "synth_meta.json"
    synth_done = meta.is_file() and json.loads(meta.read_text()).get("status") == "complete"
    prog.run(
        1,
        "synth",
        f"SynthMovies preset={prof.synth_preset} -> {synth}",
        lambda: generate(synth, preset=prof.synth_preset, seed=0, workers=workers, **prof.synth_overrides),
        cached=synth_done,
    )

    # 2. backbones --------------------------------------------------------------------------
    backbone_ckpt: dict[str, Path] = {}
    probes: dict[str, Any] = {}
    for b in backbones:
        bdir = out / "backbone" / b
        ckpt = bdir / "model.pt"
        cfg = load_config("backbone", "cpu", prof.backbone_overrides + QUIET, variant=b)
        done = ckpt.is_file() and (bdir / "summary.json").is_file()
        # other methods' own sections do not concern this backbone
        _note_drift(bdir, cfg, done, ignore=tuple(sorted(all_sections - method_sections[b])))
        prog.run(
            2,
            "backbone",
            f"pretrain backbone {b}",
            lambda b=b, bdir=bdir, cfg=cfg: pretrain(
                b, actions_train, bdir, cfg, val=actions_val, resume=True, progress=False
            ),
            cached=done,
        )
        backbone_ckpt[b] = ckpt
        if (bdir / "probe.json").is_file():
            probes[b] = json.loads((bdir / "probe.json").read_text())

    # 3. features ---------------------------------------------------------------------------
    feats: dict[tuple[str, str], Path] = {}
    for b in backbones:
        for name, root in (("vidsitu", vid_root), ("lvu", lvu_root)):
            fdir = out / "features" / b / name
            done = (fdir / "index.json").is_file()  # written (merged) only when an extraction finishes
            prog.run(
                3,
                "features",
                f"extract {b}/{name}",
                lambda b=b, root=root, fdir=fdir: extract(
                    backbone_ckpt[b], root, fdir, stride_s=2.0, num_workers=0, accelerator="cpu"
                ),
                cached=done,
            )
            feats[(b, name)] = fdir

    # 4. contextualizers --------------------------------------------------------------------
    ctx_ckpt: dict[tuple, Path] = {}
    for v in variants:
        b, loss, mask = v
        cdir = out / "context" / f"{b}_{loss}_mask{mask}"
        ov = list(prof.context_overrides) + [
            f"maskpred.loss={'l2' if loss == 'l2' else 'infonce'}",
            f"maskpred.mask_sizes={MASK_LABELS[mask]}",
        ]
        cfg = load_config("context", "cpu", ov + QUIET)
        ckpt = cdir / "model.pt"
        _note_drift(cdir, cfg, ckpt.is_file())
        prog.run(
            4,
            "context",
            f"MaskPred TxE backbone={b} loss={loss} mask={{{mask}}}",
            lambda cdir=cdir, cfg=cfg, b=b: pretrain_context(
                [feats[(b, "lvu")], feats[(b, "vidsitu")]], cdir, cfg, resume=True
            ),
            cached=ckpt.is_file(),
        )
        ctx_ckpt[v] = ckpt

    # 5. fine-tuning ------------------------------------------------------------------------
    ft_cfg = load_config("vidsitu", "cpu", list(prof.vidsitu_overrides) + QUIET)
    rows: list[dict] = []
    runs: dict[str, Any] = {}
    for table, task, b, txe, v in grid:
        if txe == "maskpred":
            loss, mask = v[1], v[2]
            setting = (
                setting_name(b, txe, loss, mask)
                if table == "mask_ablation" or v != (b,) + MAIN_VARIANT
                else setting_name(b, txe)
            )
            ctx: str | Path = ctx_ckpt[v]
            tag = f"{b}_maskpred_{loss}_mask{mask}"
        else:
            setting, ctx, tag = setting_name(b, txe), txe, f"{b}_{txe}"
        fdir = out / "finetune" / task / tag
        done = (fdir / "summary.json").is_file()
        _note_drift(fdir, ft_cfg, done)
        res = prog.run(
            5,
            "finetune",
            f"{table}: {task} {setting}",
            lambda task=task, b=b, ctx=ctx, fdir=fdir: run_finetune(
                task,
                vid_root,
                features=feats[(b, "vidsitu")],
                contextualizer=str(ctx),
                seeds=n_seeds,
                out=fdir,
                preset="cpu",
                overrides=list(prof.vidsitu_overrides) + QUIET,
                resume=True,
            ),
            cached=done,
        )
        summary = res["summary"] if res else json.loads((fdir / "summary.json").read_text())["summary"]
        runs[f"{table}/{setting}"] = str(fdir)
        tables = [table]
        if table == "srl" and v == ("cvrl",) + MAIN_VARIANT:
            tables.append("mask_ablation")  # the main MaskPred run is also the {1,2,3} contrastive ablation row
        for tb in tables:
            s = setting if tb == table else setting_name(b, txe, *MAIN_VARIANT)
            for metric, st in summary.items():
                rows.append(
                    {
                        "table": tb,
                        "setting": s,
                        "metric": metric,
                        "mean": float(st["mean"]),
                        "se": float(st["se"]),
                        "n": int(st["n"]),
                    }
                )

    # 6. report -----------------------------------------------------------------------------
    def report():
        from .demo_report import write_report

        return write_report(
            out,
            rows,
            probes=probes,
            runs=runs,
            seeds=n_seeds,
            profile=profile,
            wall_s=time.perf_counter() - t_start,
            synth=synth,
            jobs_s=sum(prog.timings.values()),
        )

    result = prog.run(6, "report", "results.json / results.md / plots", report)
    print(
        f"Compute time of all jobs (summed over invocations, see timings.json): {prog._fmt(sum(prog.timings.values()))}"
    )
    print(result["markdown"])
    print(
        f"\nWrote {out / 'results.json'}, {out / 'results.md'} and plots in {out / 'plots'} "
        f"(total {prog._fmt(time.perf_counter() - t_start)})."
    )
    return result


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole hierarchy on SynthMovies (CPU, minutes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", help="output folder (reused: finished steps are skipped)")
    p.add_argument("--seeds", type=int, default=None, help="fine-tuning runs per setting (default: 3, quick: 2)")
    p.add_argument("--quick", action="store_true", help="the smaller profile (fewer steps, fewer ablation rows)")
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="full (default), quick, or smoke (tiny data, integration check)",
    )
    p.add_argument("--synth", default=None, help="use an existing SynthMovies folder instead of OUT/synth")
    p.add_argument("--workers", type=int, default=None, help="processes for SynthMovies rendering")
    p.set_defaults(
        func=lambda a: (
            run_demo(
                a.out,
                seeds=a.seeds,
                profile=a.profile or ("quick" if a.quick else "full"),
                synth_root=a.synth,
                workers=a.workers,
            ),
            0,
        )[1]
    )
