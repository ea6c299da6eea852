"""The paper's Table 5 on SynthMovies: LVU's nine tasks for instance x scene pathways.

    res = run_lvu_table("runs/demo/lvu", "runs/demo/synth",
                        backbones={"supervised": ..., "cvrl": ..., "modist": ...},   # model.pt paths
                        contextualizer="runs/demo/context/cvrl_contrastive_mask1-3/model.pt", seeds=5)
    res["rows"]      # results rows: table "lvu", setting "instance=<..>,scene=<..>", metric = task, test split
    res["markdown"]  # val and test tables with #top-1 and mean rank, the headroom, the claims

Rows (Xiao et al. 2022, Table 5): ``instance`` in {ot, cvrl, modist, none} x ``scene`` in {none,
ours, sup}:

- ``ot``: RoI features of the supervised backbone and an OT initialised by LVU's masked-instance
  pretraining on all SynthMovies LVU movies (no labels; teacher = the supervised verb classifier);
- ``cvrl`` / ``modist``: RoI features of those backbones, OT trained from scratch (they are "only
  pretrained with contrastive self-supervision");
- ``ours``: CVRL event features contextualised by the MaskPred TxE; ``sup``: pooled supervised
  event features, no TxE; ``none``: no scene tokens.

Everything a row needs is computed once and cached under ``out`` (instance features per backbone
and frame size, ``instances/<backbone>_<side>px``; the pretrained OT per instances + config (not how
it is shown) + teacher, ``ot_pretrain/<hash>``; event features unless given, ``events/<backbone>``;
a feature folder another checkpoint of that name made gets its hash beside it, :func:`cache_folder`),
and each row's inputs are loaded once for the nine tasks; finished runs are skipped on a rerun
(``tasks.base.run_seeds``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...checkpoint import file_hash, load_checkpoint
from ...config import load_config, to_dict
from ...context.instance_masking import pretrain_ot
from ...data.lvu import LVU_TASKS, read_labels
from ...dist import launcher_world, trainer_device
from ...errors import BadInputError
from ...features.extract import extract, run_lock
from ...features.instances import InstanceStore, extract_instances, keeps_feature_cache, set_feature_cache
from ...features.store import index_facts, read_index
from ...models.object_transformer import span_checked_settings
from ...training import check_trainer, planned_world_size
from ...utils import plural, progress
from ...utils.digest import content_digest
from ...utils.io import atomic_write, atomic_write_json, atomic_write_text, ensure_out_dir
from ..base import indexed, placeless, result_config, seed_range, settings_hash
from .data import load_inputs, scene_arrays
from .runner import run_finetune
from .task import TASKS

log = logging.getLogger("moviessl.tasks")

# The paper's six rows, in its order; every other instance x scene pair is also accepted.
PAPER_ROWS: tuple[tuple[str, str], ...] = (
    ("ot", "none"),
    ("cvrl", "none"),
    ("modist", "none"),
    ("none", "sup"),
    ("none", "ours"),
    ("ot", "ours"),
)
ALL_ROWS = tuple(
    (i, s) for i in ("ot", "cvrl", "modist", "none") for s in ("none", "ours", "sup") if (i, s) != ("none", "none")
)
INSTANCE_BACKBONE = {"ot": "supervised", "cvrl": "cvrl", "modist": "modist"}
SCENE_BACKBONE = {"ours": "cvrl", "sup": "supervised"}
COLUMNS = {
    "relationship": "Relation",
    "way_speaking": "Speaking",
    "scene": "Scene",
    "director": "Director",
    "writer": "Writer",
    "year": "Year",
    "genre": "Genre",
    "like_ratio": "Like",
    "view_count": "Views",
}
PRETTY = {"ot": "OT", "cvrl": "CVRL", "modist": "MoDist", "none": "-", "ours": "Ours", "sup": "Sup"}


def roi_side(backbone: str | os.PathLike, short_side: int | None = None) -> int:
    """The frame size RoI features are taken at: ``short_side``, else the one the backbone was
    trained at (its checkpoint's ``meta.input.short_side``)."""
    if short_side:
        return int(short_side)
    inp = load_checkpoint(backbone, stage="backbone").get("meta", {}).get("input") or {}
    if "short_side" not in inp:
        raise BadInputError(backbone, "checkpoint meta.input lacks short_side (give roi_short_side)")
    return int(inp["short_side"])


def cache_folder(base: Path, backbone: str | os.PathLike) -> Path:
    """The table's feature folder for ``backbone``: ``base``, or ``base-<its hash>`` beside it when
    ``base`` holds another checkpoint's features (a backbone retrained under the same name). The
    event folder was reused whenever it had an index, so the scene rows were trained on the old
    backbone's features; the instance folder refused the new one."""
    bhash = file_hash(backbone)
    try:
        held = (read_index(base, unfinished_ok=True) or {}).get("backbone")
    except BadInputError:  # an unreadable index: the extraction resuming it says so
        held = None
    return base if held in (None, bhash) else base.with_name(f"{base.name}-{bhash}")


def ot_pretrain_keys(store: InstanceStore, ot_cfg: dict, teacher_id: str) -> tuple[str, list[str]]:
    """The folder name of the OT pretrained on ``store`` with ``ot_cfg`` (a plain dict) and the
    teacher, and the names earlier versions gave it. The name holds what the instance folder's
    index says of the folder and of each video in it (the boxes' digest, counts), so instances
    extracted again from other tracks or for more movies pretrain anew; how the run is shown
    (progress bar, log and checkpoint intervals) is not part of it, so a table resumed as a batch
    job reuses its OT. The earlier names lack the instances (and, the oldest, hold the whole config)."""
    what = (store.backbone, store.index.get("roi"))
    held = content_digest({v: index_facts(store.index["videos"][v]) for v in store.ids})
    key = settings_hash(*what, store.source_digest(), held, result_config(ot_cfg), teacher_id)
    return key, [settings_hash(*what, result_config(ot_cfg), teacher_id), settings_hash(*what, ot_cfg, teacher_id)]


def ot_pretrain_dir(out: Path, store: InstanceStore, ot_cfg: dict, teacher_id: str) -> Path:
    """``out/ot_pretrain/<key>`` (:func:`ot_pretrain_keys`). A finished OT under an earlier name,
    which did not say what instances it read, is taken over once (renamed to the key of the
    instances there now, as before); then instances changed later no longer find it."""
    key, earlier = ot_pretrain_keys(store, ot_cfg, teacher_id)
    ot_dir = out / "ot_pretrain" / key
    if not ot_dir.exists():  # (a pretraining begun under the key resumes there)
        old = next((out / "ot_pretrain" / k for k in earlier if (out / "ot_pretrain" / k / "model.pt").is_file()), None)
        if old is not None:
            # every rank of a torchrun / srun launch gets here: one renames, the others find it done
            with contextlib.suppress(OSError):
                os.replace(old, ot_dir)
    return ot_dir


def setting_name(instance: str, scene: str) -> str:
    return f"instance={instance},scene={scene}"


def row_label(instance: str, scene: str) -> str:
    """OT, CVRL, MoDist (instances only), Sup / Ours (scene only), OT+Ours (both)."""
    if scene == "none":
        return PRETTY[instance]
    return f"{PRETTY[scene]} (scene)" if instance == "none" else f"{PRETTY[instance]}+{PRETTY[scene]}"


def _fmt(task: str, mean: float, se: float, n: int, n_nonfinite: int = 0) -> str:
    """``mean ± SE``; a single run has no SE (``mean_se`` gives it 0), so it shows its value alone,
    as the demo's tables do (``demo_report._cell``). A cell some of whose runs diverged says how
    many: the heading's "over N runs" is what was asked for, and this table has no column of runs
    (the VidSitu tables' "n (pretrain)")."""
    d = 3 if TASKS[task].regression else 2
    cell = f"{mean:.{d}f}" if n < 2 else f"{mean:.{d}f} ± {se:.{d}f}"
    return cell + (f" ({n_nonfinite} non-finite)" if n_nonfinite else "")


def better(task: str, a: float, b: float, eps: float = 1e-9) -> bool:
    """``a`` is better than ``b`` (higher top-1 / lower MSE); equal up to float noise is a tie (means
    of five identical accuracies can differ in the last bit)."""
    return a < b - eps if TASKS[task].regression else a > b + eps


def ranks(table: Mapping[str, Mapping[str, float]], tasks: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per task, the competition rank (1 = best, ties share the better rank) of each setting's mean.
    A non-finite mean (every run of a cell diverged) has no rank: NaN compares false with everything,
    so it was ranked first, beaten by no one."""
    out: dict[str, dict[str, int]] = {s: {} for s in table}
    for t in tasks:
        vals = {s: row[t] for s, row in table.items() if t in row and row[t] is not None and np.isfinite(row[t])}
        for s, v in vals.items():
            out[s][t] = 1 + sum(better(t, w, v) for w in vals.values())
    return out


def headroom(lvu_root: Path, split: str, tasks: Sequence[str] = tuple(LVU_TASKS)) -> dict[str, dict[str, float]]:
    """Chance (majority train class / train mean) and the oracle of SynthMovies' generating
    variables (``moviessl.synth.headroom.oracle_lvu``) on one split, for ``tasks``."""
    from ...synth.headroom import oracle_lvu

    gt_path = lvu_root / "ground_truth.json"
    gt = json.loads(gt_path.read_text()) if gt_path.is_file() else {}
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        train = dict(read_labels(lvu_root, task, "train"))
        ev = dict(read_labels(lvu_root, task, split))
        y = np.array(list(ev.values()), float)
        reg = TASKS[task].regression
        if reg:
            chance = float(np.mean((y - np.mean(list(train.values()))) ** 2))
        else:
            major = Counter(train.values()).most_common(1)[0][0]
            chance = float(np.mean(y == major) * 100)
        row = {"chance": chance, "n": len(ev)}
        if gt and all(v in gt for v in ev):
            pred = np.array([oracle_lvu(gt[v])[task] for v in ev], float)
            row["oracle"] = float(np.mean((pred - y) ** 2)) if reg else float(np.mean(pred == y) * 100)
        out[task] = row
    return out


def _stat(st: Mapping) -> dict[str, Any]:
    """A cell's mean, SE, runs and runs left out as non-finite (a cell without ``n``, built by
    hand, counts as several)."""
    return {
        "mean": float(st["mean"]),
        "se": float(st["se"]),
        "n": int(st.get("n", 2)),
        "n_nonfinite": int(st.get("n_nonfinite") or 0),
    }


def _finite_means(row: Mapping[str, Mapping], tasks: Sequence[str]) -> dict[str, float]:
    """A row's means by task, the tasks it has a finite mean of (a ``null`` read back is not one)."""
    return {
        t: float(row[t]["mean"])
        for t in tasks
        if t in row and row[t]["mean"] is not None and np.isfinite(row[t]["mean"])
    }


def _cell(task: str, st: Mapping | None, show_n: bool = False) -> str:
    if st is None:
        return "n/a"
    if st["mean"] is None or not np.isfinite(st["mean"]):  # summarize's n 0: no run gave a finite value
        return "non-finite"
    return _fmt(task, **_stat(st)) + (f" (n={_stat(st)['n']})" if show_n else "")


def ranked_table_md(
    title: str,
    stats: Mapping[str, Mapping[str, Mapping]],
    tasks: Sequence[str],
    rows: Sequence[tuple[str, Sequence[str]]],
    room: Mapping[str, Mapping[str, float]] | None,
    head: Sequence[str],
    show_n: bool = False,
) -> str:
    """Table 5's layout: ``rows`` = ``(key, label cells)`` in order, a column per task (``mean ± SE`` of
    ``stats[key][task]``, n/a where a row has none; ``show_n``: with its runs, for cells over different
    numbers of runs), the #top-1 and mean-rank columns over these rows, and the chance / oracle rows
    of ``room`` (None: none)."""
    means = {key: _finite_means(stats[key], tasks) for key, _ in rows}
    rk = ranks(means, tasks)
    cols = " | ".join(f"{COLUMNS[t]} ({'↓' if TASKS[t].regression else '↑'})" for t in tasks)
    lines = [f"**{title}**", "", f"| {' | '.join(head)} | {cols} | #top-1 | mean rank |"]
    lines.append("|" + "---|" * (len(head) + len(tasks) + 2))
    for key, label in rows:
        cells = [_cell(t, stats[key].get(t), show_n) for t in tasks]
        top = sum(r == 1 for r in rk[key].values())
        mean_rank = np.mean(list(rk[key].values())) if rk[key] else float("nan")
        lines.append(f"| {' | '.join(label)} | " + " | ".join(cells) + f" | {top}/{len(tasks)} | {mean_rank:.2f} |")
    for k, name in (("chance", "chance / constant"), ("oracle", "oracle (generating variables)")):
        if room is not None and all(k in room[t] for t in tasks):
            vals = [f"{room[t][k]:.3f}" if TASKS[t].regression else f"{room[t][k]:.2f}" for t in tasks]
            lines.append(f"| *{name}* | " + "| " * (len(head) - 1) + " | ".join(vals) + " | | |")
    return "\n".join(lines) + "\n"


def _table_md(title: str, stats: dict, tasks: Sequence[str], settings: Sequence[tuple[str, str]], room: dict) -> str:
    rows = [(setting_name(i, s), [PRETTY[i], PRETTY[s]]) for i, s in settings]
    return ranked_table_md(title, stats, tasks, rows, room, ["instance", "scene"])


def claims(stats: dict, room: dict, tasks: Sequence[str], settings: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The paper's Table 5 claims measured on one split (means over the runs; no significance test).
    A comparison reads only the tasks every setting it compares has a result for (a split with no
    scored video, a row not run, a cell whose every run diverged); with none, its ``holds`` is None (n/a)."""
    means = {setting_name(*s): _finite_means(stats[setting_name(*s)], tasks) for s in settings}
    rk = ranks(means, tasks)
    mr = {s: float(np.mean(list(r.values()))) if r else None for s, r in rk.items()}
    out: dict[str, Any] = {"mean_rank": mr}

    def common(*keys: str) -> list[str]:
        return [t for t in tasks if all(t in means[k] for k in keys)]

    def mean_rank(key: str, over: list[str]) -> float | None:
        return float(np.mean([rk[key][t] for t in over])) if over else None

    ot, so, pp = setting_name("ot", "none"), setting_name("none", "ours"), setting_name("ot", "ours")
    if ot in means:
        have = common(ot)
        beat = [t for t in have if better(t, means[ot][t], room[t]["chance"])]
        # the paper's 7 of 9 in proportion: a run of fewer tasks (the quick demo's two) needs as large a share
        need = -(-7 * len(have) // 9)
        out["ot_beats_constant"] = {
            "tasks": beat,
            "count": len(beat),
            "of": len(have),
            f"holds (>= {need} of {len(have)})": len(beat) >= need if have else None,
        }
    if all(s in means for s in (ot, so, pp)):
        have = common(ot, so, pp)
        trio = {s: mean_rank(s, have) for s in (ot, so, pp)}
        out["otpp_best_mean_rank"] = {
            "mean_rank": trio,
            "tasks_compared": have,
            "holds": trio[pp] < min(trio[ot], trio[so]) if have else None,
        }
    sup = setting_name("none", "sup")
    if so in means and sup in means:
        have = common(so, sup)
        wins = [t for t in have if better(t, means[so][t], means[sup][t])]
        pair = {"ours": mean_rank(so, have), "sup": mean_rank(sup, have)}
        out["ours_beats_sup"] = {
            "tasks_ours_better": wins,
            "count": len(wins),
            "tasks_compared": have,
            "mean_rank": pair,
            "holds (better mean rank)": pair["ours"] < pair["sup"] if have else None,
        }
    return out


def plot_table(
    stats: dict,
    room: dict,
    tasks: Sequence[str],
    settings: Sequence[tuple[str, str]],
    png: Path,
    title: str,
    note: str = "",
) -> Path:
    """:func:`plot_rows` of the instance x scene ``settings`` (their Table 5 labels)."""
    rows = [(setting_name(*s), row_label(*s)) for s in settings]
    return plot_rows(stats, room, tasks, rows, png, title, note)


def plot_rows(
    stats: Mapping[str, Mapping[str, Mapping]],
    room: Mapping[str, Mapping[str, float]] | None,
    tasks: Sequence[str],
    rows: Sequence[tuple[str, str]],
    png: Path,
    title: str,
    note: str = "",
) -> Path:
    """One panel per task: each row's (``(key, label)``) mean ± SE, the chance / constant level of
    ``room`` as a line (None: none); ``title`` and ``note`` (a second line) say what it shows and what
    the ± is over, as the table's heading does."""
    # a Figure of its own, not pyplot: matplotlib.use("Agg") switched the caller's backend (a
    # notebook's inline plots), and pyplot's registry held every figure until closed
    from matplotlib.figure import Figure

    from ...utils.io import display_text
    from ...utils.plots import draw_bars, row_colors

    # a run named after a folder whose non-ASCII name was met under a non-UTF-8 locale is held as
    # surrogate escapes, which matplotlib's text layout refuses (a TypeError after the table's .md)
    rows = [(key, display_text(label)) for key, label in rows]
    title, note = display_text(title), display_text(note)
    ncol = min(3, len(tasks))
    nrow = -(-len(tasks) // ncol)
    # at least 6 in wide: the two-line title of a one- or two-task plot (the quick demo's) fits
    fig = Figure(figsize=(max(3.6 * ncol, 6.0), 3.0 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    labels = [label for _, label in rows]
    colors = row_colors(len(rows))
    for ax in axes.flat[len(tasks) :]:
        ax.axis("off")
    for ax, t in zip(axes.flat, tasks):
        draw_bars(ax, [_stat(stats[key][t]) if t in stats[key] else None for key, _ in rows], labels, colors)
        if room is not None:
            ax.axhline(room[t]["chance"], color="k", ls="--", lw=0.8)
        ax.set_title(f"{COLUMNS[t]} ({'MSE ↓' if TASKS[t].regression else 'top-1 ↑'})", fontsize=9)
        ax.set_ylabel("MSE" if TASKS[t].regression else "top-1 (%)", fontsize=8)
    dashed = " (dashed: chance / constant)" if room is not None else ""
    fig.suptitle(title + dashed + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=110))
    return png


def extraction_launch(t: Any) -> dict[str, Any]:
    """How the table's extractions run: under torchrun / srun on the processes the launch started
    for the fine-tuning (its accelerator and devices: each extraction checks the launch against its
    own, and one process refused every rank), else one CPU process, as always (a plain run with
    ``trainer.devices=N`` is not re-executed N times for its extractions)."""
    found = launcher_world()
    if found is not None and found[0] > 1 and found[0] == planned_world_size(t):
        return {"accelerator": t.accelerator, "devices": t.devices, "num_nodes": t.num_nodes}
    return {"accelerator": "cpu", "devices": 1, "num_nodes": 1}


def index_written() -> None:
    """Under DDP the ranks other than 0 leave an extraction at its end, before rank 0 has merged the
    journals and written ``index.json``: they wait for it here, so that every rank reads the same
    folder (one found only the claim and stopped, or read the index before an extension)."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized() and td.get_world_size() > 1:
        td.barrier()


@keeps_feature_cache
def run_lvu_table(
    out: str | os.PathLike,
    synth_root: str | os.PathLike,
    backbones: Mapping[str, str | os.PathLike],
    contextualizer: str | os.PathLike | None,
    seeds: int = 5,
    *,
    rows: Sequence[tuple[str, str]] = PAPER_ROWS,
    tasks: Sequence[str] | None = None,
    event_features: Mapping[str, str | os.PathLike] | None = None,
    teacher: str | os.PathLike | None = None,
    preset: str = "cpu",
    overrides: Sequence[str] = (),
    pretrain_overrides: Sequence[str] = (),
    roi_short_side: int | None = None,
    ot_init: bool = True,
    quiet: bool = True,
) -> dict[str, Any]:
    """Table 5 analogue on a SynthMovies root; returns ``{"rows", "rows_val", "markdown", "claims",
    "plot", "timings"}`` and writes ``out/lvu_table.{json,md,png}``.

    ``backbones``: stage-"backbone" checkpoints by name (``supervised``, ``cvrl``, ``modist`` as the
    rows need). ``contextualizer``: the MaskPred TxE for "ours" (on CVRL features). ``event_features``:
    existing ``moviessl extract`` LVU folders by backbone name (else extracted into ``out/events``).
    ``teacher``: the short-term action head for OT pretraining (default: the supervised backbone's
    Lightning checkpoint ``checkpoints/last.ckpt`` beside its model.pt). ``roi_short_side``: frames
    for RoI features are resized to it (None: the size the backbone was trained at, 64 px for the
    cpu backbones; SynthMovies' native 112 px gives the teacher near-constant targets, issue 14).
    ``ot_init=False``: the "ot" row's OT is trained from scratch (the control for its masked-instance
    pretraining; nothing is pretrained)."""
    out, synth = Path(out), Path(synth_root)
    lvu_root = synth / "lvu" if (synth / "lvu").is_dir() else synth
    tasks = list(tasks or TASKS)
    rows = [tuple(r) for r in rows]
    quiet_ov = ["trainer.progress_bar=false"] if quiet else []
    timings: dict[str, float] = {}
    # both configs first: a typo or a GPU this machine lacks must not wait for steps 1-3
    pretrain = ot_init and any(i == "ot" for i, _ in rows)
    ot_pre_cfg = load_config("ot_pretrain", preset, list(pretrain_overrides) + quiet_ov) if pretrain else None
    ft_cfg = load_config("lvu", preset, list(overrides))
    for c in (ot_pre_cfg, ft_cfg):
        if c is not None:
            check_trainer(c.trainer)
            span_checked_settings(c.model.preset, c.model.overrides, c.data.span_s)
    seed_range(ft_cfg.seed, max(int(seeds), int(ft_cfg.train.tune_seeds)))  # every cell's runs

    out = ensure_out_dir(out)
    # one table per folder: its top files and scene cache (scene_ctx/) are its own, and a second
    # table was refused only step by step, by the folders of its extractions and fine-tuning cells
    with run_lock(out):

        def timed(name: str, fn):
            t0 = time.perf_counter()
            with progress.muted():  # the time left's progress counts the fine-tuning cells only (step 4)
                res = fn()
            timings[name] = round(time.perf_counter() - t0, 2)
            log.info("%s: %.1f s", name, timings[name])
            return res

        launch = extraction_launch(ft_cfg.trainer)

        # 1. instance features per backbone (cached per frame size: a finished folder is skipped video
        # by video, and a table at another size never meets a folder of this one)
        inst: dict[str, InstanceStore] = {}
        for name in sorted({INSTANCE_BACKBONE[i] for i, _ in rows if i != "none"}):
            side = roi_side(backbones[name], roi_short_side)
            d = cache_folder(out / "instances" / f"{name}_{side}px", backbones[name])
            timed(
                f"instances {name}",
                lambda d=d, name=name, side=side: extract_instances(
                    backbones[name], lvu_root, lvu_root / "tracks", d, short_side=side, progress=not quiet, **launch
                ),
            )
            index_written()
            inst[name] = InstanceStore(d)

        # 2. LVU's masked-instance pretraining of the OT (row "ot"), on every movie, no labels; cached
        # under the hash of what it reads and its config, so a change of either pretrains anew
        ot_ckpt = None
        if ot_pre_cfg is not None:
            t_path = teacher or Path(backbones["supervised"]).parent / "checkpoints" / "last.ckpt"
            cfg = ot_pre_cfg
            store = inst["supervised"]
            t_id = file_hash(t_path) if Path(t_path).is_file() else str(t_path)
            ot_cfg = to_dict(cfg)
            ot_cfg["data"].pop("instance_cache_mb")  # RAM, not the result
            ot_dir = ot_pretrain_dir(out, store, ot_cfg, t_id)
            ot_ckpt = ot_dir / "model.pt"
            if not ot_ckpt.is_file():
                timed(
                    "OT masked-instance pretraining",
                    lambda: pretrain_ot(store, ot_dir, cfg, t_path, resume=True),
                )

        # 3. scene features: "ours" = CVRL events through the TxE, "sup" = pooled supervised events
        ctx_device = trainer_device(ft_cfg.trainer)
        scene: dict[str, tuple[dict, float, str]] = {}  # arrays, event stride, description (with the TxE's hash)
        scene_dirs: dict[str, Path] = {}  # the folders the descriptions name (not hashed: moved, the same)
        for s in sorted({s for _, s in rows if s != "none"}):
            b = SCENE_BACKBONE[s]
            if event_features and b in event_features:  # the user's folder, as given
                fdir = Path(event_features[b])
            else:
                # the table's own folder: extracted on every run (finished films are skipped), as the
                # instances are (extracted only when it had no index, a movie added to the root later got
                # no scene tokens, and one replaced kept the old file's features: now extract's one line)
                fdir = cache_folder(out / "events" / b, backbones[b])
                timed(
                    f"events {b}",
                    lambda fdir=fdir, b=b: extract(
                        backbones[b], lvu_root, fdir, stride_s=2.0, num_workers=0, progress=not quiet, **launch
                    ),
                )
                index_written()
            ctx = contextualizer if s == "ours" else None
            scene_dirs[s] = fdir
            scene[s] = timed(
                f"scene {s}",
                lambda fdir=fdir, ctx=ctx: scene_arrays(
                    fdir, "feats", ctx, cache_dir=out, progress=not quiet, device=ctx_device
                ),
            )

        # 4. fine-tuning: each row's inputs once, nine tasks x seeds
        set_feature_cache(ft_cfg.data.instance_cache_mb)
        stats: dict[str, dict[str, dict]] = {"val": {}, "test": {}}
        # the time left's progress: each row's cells weigh its tokens per video (a row of instances
        # trains on several times the tokens of a scene-only row: equal cells misjudged the pace)
        weight = [
            _tokens_per_video(inst.get(INSTANCE_BACKBONE[i]) if i != "none" else None, scene.get(s)) for i, s in rows
        ]
        bounds = np.concatenate([[0.0], np.cumsum([w for w in weight for _ in tasks])]) / (sum(weight) * len(tasks))
        cell = 0
        for i, s in rows:
            key = setting_name(i, s)
            store = inst[INSTANCE_BACKBONE[i]] if i != "none" else None
            sc, stride, sdesc = scene.get(s, (None, 2.0, "-"))
            # what the inputs are made of (backbone hash, feature folder, TxE hash): a change reruns the
            # cells, the folder moved (the table's --out with it) does not
            idesc = f"{store.backbone}@{store.index['roi']['short_side']}px" if store else "-"
            desc = f"instance={i}:{idesc},scene={s}:{sdesc}"
            with progress.muted():
                inputs = load_inputs(store, sc, stride, desc=desc, key=placeless(desc, *indexed(scene_dirs.get(s))))
            t0 = time.perf_counter()
            for task in tasks:
                with progress.share(bounds[cell], bounds[cell + 1]):
                    res = run_finetune(
                        task,
                        lvu_root,
                        init=ot_ckpt if i == "ot" else None,
                        seeds=seeds,
                        out=out / "finetune" / f"{i}_{s}" / task,
                        preset=preset,
                        overrides=list(overrides) + quiet_ov,
                        resume=True,
                        inputs=inputs,
                    )
                cell += 1
                for split in ("val", "test"):
                    m = f"{split}_{TASKS[task].metric}"
                    if res["summary"].get(m, {}).get("n", 1):  # (n 0: every seed diverged, no mean to rank)
                        stats[split].setdefault(key, {})[task] = res["summary"][m]
            timings[f"finetune {key}"] = round(time.perf_counter() - t0, 2)

        # 5. report
        room = {split: headroom(lvu_root, split) for split in ("val", "test")}
        rep = report(stats, room, tasks, rows, plural(seeds, "run"), out / "lvu_table.png")
        result = {**rep, "headroom": room, "timings": timings, "seeds": seeds}
        atomic_write_json(out / "lvu_table.json", result)
        atomic_write_text(out / "lvu_table.md", rep["markdown"])
        return result


def _tokens_per_video(store: InstanceStore | None, scene: tuple | None) -> float:
    """Mean tokens a video gives a row (its instance boxes and scene events; at least 1)."""
    n = 0.0
    if store is not None:
        boxes = [int(v.get("num_boxes", 0)) for v in store.index["videos"].values() if v.get("status", "ok") == "ok"]
        n += float(np.mean(boxes)) if boxes else 0.0
    if scene is not None and scene[0]:
        rows = [int(a.shape[0]) for a in scene[0].values()]  # a damaged film's SceneRows: its valid events
        n += float(np.mean(rows))
    return max(n, 1.0)


def result_rows(stats: Mapping[str, Mapping[str, Mapping[str, Mapping]]]) -> tuple[list[dict], list[dict]]:
    """``results.json`` rows of the test split (table ``lvu``) and of val (``lvu_val``)."""
    out: dict[str, list[dict]] = {"test": [], "val": []}
    for split, dest in out.items():
        for key, per_task in stats[split].items():
            for task, st in per_task.items():
                row = {"table": "lvu" if split == "test" else "lvu_val", "setting": key, "metric": task}
                row.update({k: (int(v) if k.startswith("n") else float(v)) for k, v in st.items()})
                dest.append(row)
    return out["test"], out["val"]


def report(
    stats: dict, room: dict, tasks: Sequence[str], rows: Sequence[tuple[str, str]], runs: str, png: Path
) -> dict[str, Any]:
    """Markdown tables (test and val), the claims on each split and the plot of the test table;
    ``stats[split][setting][task]`` = ``{"mean", "se", "n", ...}``, ``runs`` says what the ± is over."""
    rows = [tuple(r) for r in rows]
    rows_test, rows_val = result_rows(stats)
    stats = {split: dict(stats[split]) for split in ("val", "test")}
    for split in ("val", "test"):  # settings without results (e.g. a failed row) get empty cells
        for r in rows:
            stats[split].setdefault(setting_name(*r), {})
    claim = {split: claims(stats[split], room[split], tasks, rows) for split in ("test", "val")}
    md = [
        f"### Table 5 analogue: LVU tasks on SynthMovies (mean ± SE over {runs}; top-1 % ↑ or MSE ↓ "
        "on LVU's centred scale)",
        "",
        _table_md("test split", stats["test"], tasks, rows, room["test"]),
        _table_md("val split", stats["val"], tasks, rows, room["val"]),
        f"n = {room['test'][tasks[0]]['n']} test / {room['val'][tasks[0]]['n']} val movies. "
        "Ranks: competition ranking of the means per task among these rows.",
        "",
        *claims_md(claim),
        "",
    ]
    plot_table(stats["test"], room["test"], tasks, rows, png, "LVU tasks, test split", f"mean ± SE over {runs}")
    return {"rows": rows_test, "rows_val": rows_val, "markdown": "\n".join(md), "claims": claim, "plot": str(png)}


def combine_replicates(tables: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, dict]]]:
    """Tables of independent pretraining replicates (``lvu_table.json`` objects) as one:
    per split, setting and task the mean ± SE over replicates of each replicate's mean over its
    runs (so the SE holds the pretraining variance), ``n`` = all runs, ``n_pretrain`` = replicates.
    As ``demo.aggregate`` does for the VidSitu rows: a replicate's non-finite runs are counted
    (``n_nonfinite``), and a replicate without a finite mean (``n`` 0; null in the file) is left out
    of the mean, not averaged into NaN; a cell no replicate has a mean for is no cell."""
    import math

    from ...eval.stats import mean_se
    from ...utils.io import json_float

    per: dict[str, dict[str, dict[str, list]]] = {"test": {}, "val": {}}
    for t in tables:
        for split, key in (("test", "rows"), ("val", "rows_val")):
            for r in t[key]:
                per[split].setdefault(r["setting"], {}).setdefault(r["metric"], []).append(r)
    out: dict[str, dict[str, dict[str, dict]]] = {"test": {}, "val": {}}
    for split, settings in per.items():
        for setting, by_task in settings.items():
            for task, all_reps in by_task.items():
                bad = sum(int(r.get("n_nonfinite", 0)) for r in all_reps)
                reps = [r for r in all_reps if int(r["n"]) and math.isfinite(json_float(r["mean"]))]
                if not reps:
                    continue
                if len(reps) > 1:
                    mean, se = mean_se([float(r["mean"]) for r in reps])
                else:
                    mean, se = float(reps[0]["mean"]), float(reps[0]["se"])
                n = sum(int(r["n"]) for r in reps)
                out[split].setdefault(setting, {})[task] = {
                    "mean": mean,
                    "se": se,
                    "n": n,
                    "n_pretrain": len(reps),
                    **({"n_nonfinite": bad} if bad else {}),
                }
    return out


def _short(c: dict) -> dict[str, str]:
    """One split's claims as table cells, by claim: the verdict and what it rests on."""
    verdict = lambda v: "n/a" if v is None else ("**holds**" if v else "does not hold")  # noqa: E731
    ranks_of = lambda r: ", ".join(f"{k} {v:.2f}" for k, v in r.items() if v is not None)  # noqa: E731
    out = {}
    if "ot_beats_constant" in c:
        b = c["ot_beats_constant"]
        held = next(v for k, v in b.items() if k.startswith("holds"))
        out[LVU_CLAIMS[0]] = f"{verdict(held)} ({b['count']}/{b['of']} tasks)" if b["of"] else "n/a"
    if "otpp_best_mean_rank" in c:
        o = c["otpp_best_mean_rank"]
        names = dict(zip(o["mean_rank"], ("OT", "scene only", "OT++")))
        ranks = {names[k]: v for k, v in o["mean_rank"].items()}
        out[LVU_CLAIMS[1]] = verdict(o["holds"]) + (f" (mean rank {ranks_of(ranks)})" if o["holds"] is not None else "")
    if "ours_beats_sup" in c:
        o = c["ours_beats_sup"]
        held = o["holds (better mean rank)"]
        out[LVU_CLAIMS[2]] = verdict(held) + (f" (mean rank {ranks_of(o['mean_rank'])})" if held is not None else "")
    return out


# the paper's Table 5 claims as the table names them (the order of claims())
LVU_CLAIMS = (
    "OT beats the constant / chance level on 7 of 9 tasks (in proportion to the tasks run)",
    "OT++ has the best mean rank of OT, scene only and OT++",
    "our scene features beat supervised ones (mean rank; scene-only rows)",
)


def claims_md(claim: Mapping[str, dict]) -> list[str]:
    """The Table 5 claims of each split as a Markdown table (means over the runs, no significance
    test: the LVU rows are too few runs for one)."""
    cells = {split: _short(c) for split, c in claim.items()}
    splits = [s for s in ("test", "val") if s in cells]
    lines = [
        "**The paper's Table 5 claims on this run** (on the means; no significance test)",
        "",
        "| claim (paper, Table 5) | " + " | ".join(f"{s} split" for s in splits) + " |",
        "|---|" + "---|" * len(splits),
    ]
    for name in LVU_CLAIMS:
        if any(name in cells[s] for s in splits):
            lines.append(f"| {name} | " + " | ".join(cells[s].get(name, "-") for s in splits) + " |")
    return lines
