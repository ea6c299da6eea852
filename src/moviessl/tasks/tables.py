"""``moviessl table {lvu,vidsitu} [NAME=]RUN ...``: the paper's tables from finished fine-tuning runs.

A user reproducing the paper runs ``moviessl finetune lvu --task all`` once per row of Table 5
(OT on LVU's released features, OT++ with our scene features, scene only, ...) and ``moviessl
finetune vidsitu`` once per row of Tables 1-4; each run folder holds its ``summary.json`` (mean ±
standard error over its seeds). This gathers them:

- **LVU**: Table 5's layout (Xiao et al. 2022) -- a row per run, a column per task (top-1 % or MSE
  of the split asked for), the #top-1 and mean-rank columns (competition ranks of the means among
  the rows given, :func:`moviessl.tasks.lvu.table.ranks`, the rule that gives back the paper's own
  columns), and with ``--data-root`` the chance / constant row of the labels; a plot beside it.
- **VidSitu**: a table per task (verb, srl, relation), a row per run, the task's metrics; a plot
  beside it (a panel per task and metric).
- ``--vs NAME``: each other run's difference from run NAME per metric, in the better direction
  (higher accuracy / CIDEr, lower MSE), its combined standard error and ``z`` -- the demo's claims
  rule (:func:`moviessl.claims.evaluate_claims`): beyond 2 combined SE, a run of one seed has no SE.

Nothing is trained or scored again: the cells are the summaries' numbers as the runs wrote them; a
run whose score covers part of a split (its summary's ``partial``) is listed under the table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import unicodedata
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..claims import Claim, evaluate_claims
from ..errors import BadInputError
from ..utils.io import atomic_write, atomic_write_json, atomic_write_text, ensure_out_file, json_float

Stats = dict[str, dict[str, dict[str, Any]]]  # run name -> column (task or metric) -> {"mean", "se", "n"}


SPLIT_RULE = (
    "an argument that is an existing folder is that folder (named by it), even with '=' in it (runs/a=b, a=b); "
    "otherwise NAME=DIR splits at the first '=' where NAME has no '/', and the rest is a folder; where both "
    "readings are folders (a folder OT=a beside a), ./OT=a is the folder and OT=./a the named one; "
    "a leading ~ of the folder is the home folder (./~ is a folder named ~), or a folder ~ here where only it "
    "holds that folder (where both do, refused: ./~/... or the home folder's path)"
)


def _expand(path: str) -> Path:
    """``~`` / ``~user`` at the start of a folder -> the home folder. The shell expands it before a
    bare argument, but after ``NAME=`` only in some modes (bash's, not zsh's), and never when quoted,
    so ``OT=~/runs/x`` reached us as a folder ``~`` ("no such run folder"). ``os.path`` leaves an
    unknown ``~user`` as written, where :meth:`Path.expanduser` raises."""
    return Path(os.path.expanduser(path))


def _folder(path: str) -> Path:
    """The folder ``path`` names: :func:`_expand`'s, except where only a folder ``~`` here holds it.
    Other commands take ``~`` as written where the shell left it (``finetune --out=~/runs/x`` in zsh,
    or quoted): such a run lives in ``./~/runs/x``, which a table given the same spelling read
    before ``~`` was expanded. Where both folders exist, neither is picked silently."""
    literal, home = Path(path), _expand(path)
    if home == literal or not literal.is_dir():
        return home
    if home.is_dir() and literal.resolve() != home.resolve():
        raise BadInputError(path, f"both a folder {path} here and {home} in the home folder: write ./{path} or {home}")
    return literal


def _named_spelling(name: str, path: str, d: Path) -> str:
    """``NAME=./DIR``, the spelling read only as run NAME of folder DIR: its literal folder starts
    with a folder ``NAME=.``. An absolute DIR (or one from ``~``) has no such spelling (``NAME=/x``
    is a folder ``NAME=`` holding ``x``, however it is written), so it is given relative to here.
    ``d``: the folder ``path`` was read as (:func:`_folder`)."""
    if d.is_absolute():
        try:
            path = os.path.relpath(d)
        except ValueError:  # Windows: another drive, no relative path; the absolute one is the best left
            return f"{name}={path}"
    return f"{name}=./{path}"


def parse_runs(specs: Sequence[str]) -> dict[str, Path]:
    """``NAME=DIR`` or ``DIR`` (named by its folder) -> ``{name: dir}`` in the order given, read by
    :data:`SPLIT_RULE`: a relative folder ``a=b`` was read as run ``a`` of folder ``b`` ("no such run
    folder"), and one beside a folder ``b`` silently as that other run."""
    seps = tuple(s for s in ("/", os.sep, os.altsep) if s)
    runs: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        as_named = bool(sep and name) and not any(s in name for s in seps)
        whole = _folder(spec)  # a bare (quoted) ~/runs/x; a NAME=... starts with NAME, left as is
        if as_named and whole.is_dir() and path and _folder(path).is_dir():
            raise BadInputError(
                spec,
                f"both a folder and NAME=DIR (run '{name}', folder {path}): "
                f"write ./{spec} or {_named_spelling(name, path, _folder(path))}",
            )
        if not as_named or whole.is_dir():
            name, path = whole.resolve().name, spec
        if not path:  # Path("") is the working directory: its runs were read as NAME's
            raise BadInputError(spec, "no run folder after '=' (NAME=DIR)")
        d = _folder(path)
        if not d.is_dir():
            raise BadInputError(d, "no such run folder (a moviessl finetune --out folder)")
        if name in runs:
            raise BadInputError(None, f"two runs named '{name}' ({runs[name]}, {d}): name them NAME=DIR")
        runs[name] = d
    if not runs:
        raise BadInputError(None, "give at least one run folder")
    return runs


def check_names(names: Sequence[str]) -> None:
    """One line for a run name holding a line break or another control character: a Markdown table
    row is one line (a name's newline split its row in two), and the name is also the plot's label
    and each note's. A name's '|' and '$' are escaped where they would be read otherwise
    (:func:`md_cell`, :func:`plot_lvu_table`); a line break has no escape in a table cell."""
    for name in names:
        bad = [c for c in str(name) if unicodedata.category(c) in ("Cc", "Zl", "Zp")]
        if bad:  # the name is a NAME=DIR's or a folder's: the way out is another name, either way
            raise BadInputError(
                None,
                f"run name {str(name)!r} holds a line break or control character ({bad[0]!r}): "
                "give it a name without one (NAME=DIR)",
            )


def read_summary(path: Path) -> dict[str, Any]:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: also an integer past Python's 4300-digit limit
        raise BadInputError(path, f"unreadable summary ({e})") from None
    if not isinstance(rec, dict):
        raise BadInputError(path, "not a moviessl summary (expected a JSON object)")
    return rec


def _stat(path: Path, st: Any) -> dict[str, Any]:
    """A summary cell as numbers: a non-finite mean (``null`` in the file: every run diverged) is NaN.
    A value of another type (a file edited or written by something else) is one line naming the file."""

    def real(v: Any) -> bool:
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))

    if (
        not isinstance(st, dict)
        or "mean" not in st
        or not isinstance(st.get("n"), int)
        or isinstance(st["n"], bool)
        or st["n"] < 0
        or not real(st["mean"])
        or not real(st.get("se"))
    ):
        raise BadInputError(path, f"not a moviessl summary cell: {str(st)[:60]}")
    return {**st, "mean": json_float(st["mean"]), "se": json_float(st.get("se")), "n": int(st["n"])}


def _scores(path: Path, rec: Mapping[str, Any]) -> dict[str, Any]:
    """A summary record's ``summary`` (metric -> cell), an object or one line naming the file."""
    summary = rec.get("summary")
    if summary is None:
        return {}
    if not isinstance(summary, dict):
        raise BadInputError(path, f"not a moviessl summary ('summary' is a {type(summary).__name__}, not an object)")
    return summary


def _task(path: Path, rec: Mapping[str, Any]) -> Any:
    """A summary record's ``task``: a name (or None), or one line naming the file."""
    task = rec.get("task")
    if task is not None and not isinstance(task, str):
        raise BadInputError(path, f"not a moviessl summary ('task' is {str(task)[:40]}, not a name)")
    return task


def lvu_summaries(run: Path) -> dict[str, dict[str, Any]]:
    """``{task: summary record}`` of a ``finetune lvu`` folder: one task's (its summary.json names the
    task), or ``--task all``'s (a subfolder per task; an interrupted one has the tasks it finished)."""
    from .lvu.task import TASKS

    top = run / "summary.json"
    rec = read_summary(top) if top.is_file() else {}
    task = _task(top, rec)
    if task in TASKS:
        return {task: rec | {"path": str(top)}}
    if task is not None:  # another benchmark's run (a VidSitu task)
        raise BadInputError(top, f"a {task} run, not one of LVU's tasks")
    found = {t: read_summary(run / t / "summary.json") for t in TASKS if (run / t / "summary.json").is_file()}
    found = {t: r | {"path": str(run / t / "summary.json")} for t, r in found.items()}
    if not found and isinstance(rec.get("tasks"), dict):
        # a --task all record copied without its task folders: its cells alone
        found = {t: {"task": t, "summary": s, "path": str(top)} for t, s in rec["tasks"].items() if t in TASKS}
    if not found:
        raise BadInputError(run, "no LVU summary.json (a finished moviessl finetune lvu --out folder)")
    return found


def vidsitu_summary(run: Path) -> dict[str, Any]:
    """The summary record of a ``finetune vidsitu`` folder (one task)."""
    from .vidsitu import TASKS

    path = run / "summary.json"
    if not path.is_file():
        raise BadInputError(run, "no summary.json (a finished moviessl finetune vidsitu --out folder)")
    rec = read_summary(path)
    if _task(path, rec) not in TASKS:
        raise BadInputError(path, f"not a VidSitu summary (task {rec.get('task')!r}; expected {', '.join(TASKS)})")
    if not _scores(path, rec):
        raise BadInputError(path, "no scores: the run only predicted (a split without released ground truth)")
    return rec | {"path": str(path)}


def compare(
    stats: Stats, base: str, columns: Sequence[str], lower_is_better: Callable[[str], bool] = lambda c: False
) -> list[dict[str, Any]]:
    """Each run other than ``base`` against it on every column both have: ``better_by`` (the difference
    in the better direction), ``se`` (combined), ``z`` and ``beyond_2se`` -- :func:`evaluate_claims`'s
    records, so one seed, a non-finite side or an SE of 0 read as they do in the demo's claims."""
    if base not in stats:
        raise BadInputError("--vs", f"no run named '{base}' (runs: {', '.join(stats)})")
    rows = [{"table": "t", "setting": r, "metric": c, **st} for r, per in stats.items() for c, st in per.items()]
    pairs = [(run, c) for run in stats for c in columns if run != base and c in stats[run] and c in stats[base]]
    claims = []
    for run, c in pairs:
        a, b = (base, run) if lower_is_better(c) else (run, base)  # a - b > 0: `run` is better
        claims.append(Claim(id=f"{run}|{c}", paper="", statement="", table="t", a=a, b=b, metric=c))
    out = []
    # each record is its claim's, in order (a name holding '|' split from its id gave another run)
    for (run, col), rec in zip(pairs, evaluate_claims(rows, claims), strict=True):
        keep = {k: rec[k] for k in ("se", "z", "why") if k in rec}
        out.append(
            {"run": run, "vs": base, "column": col, "better_by": rec["diff"], **keep, "beyond_2se": rec["holds"]}
        )
    return out


def md_cell(name: str) -> str:
    """A run's name as one Markdown table cell: its '|' escaped (it began another cell)."""
    return str(name).replace("|", r"\|")


def compare_md(rows: Sequence[Mapping[str, Any]], label: Callable[[str], str] = str) -> str:
    if not rows:
        return ""
    base = rows[0]["vs"]
    lines = [
        f"**Against {md_cell(base)}** (difference in the better direction; beyond 2 combined SE as the claims)",
        "",
        "| run | column | better by | combined SE | z | beyond 2 SE |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        num = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
        verdict = (
            "n/a" + (f" ({r['why']})" if r.get("why") else "")
            if r["beyond_2se"] is None
            else ("**yes**" if r["beyond_2se"] else "no")
        )
        z = r.get("z")
        z = "-" if z is None else ("inf" if z == math.inf else "-inf" if z == -math.inf else f"{z:.2f}")
        lines.append(
            f"| {md_cell(r['run'])} | {label(r['column'])} | {num(r['better_by'])} | {num(r.get('se'))} | {z} "
            f"| {verdict} |"
        )
    return "\n".join(lines) + "\n"


def _notes_md(title: str, notes: Mapping[str, str]) -> str:
    if not notes:
        return ""
    return f"{title}:\n\n" + "".join(f"- {k}: {v}\n" for k, v in notes.items()) + "\n"


def _partial_md(notes: Mapping[str, str]) -> str:
    return _notes_md("Partial scores", notes)


def _config_of(rec: Mapping[str, Any]) -> str:
    """A short digest of the config.yaml beside a task's summary (every task of one command saves the
    same resolved config), or "-" where there is none."""
    cfg = Path(rec["path"]).parent / "config.yaml"
    try:
        return hashlib.sha256(cfg.read_bytes()).hexdigest()[:8]
    except OSError:
        return "-"


def lvu_table(
    runs: Mapping[str, str | os.PathLike],
    split: str = "test",
    data_root: str | os.PathLike | None = None,
    vs: str | None = None,
) -> dict[str, Any]:
    """Table 5 of ``runs`` (``{name: finetune lvu folder}``) on ``split``; returns ``{"markdown",
    "stats", "ranks", "mean_rank", "top1", "compare", "partial", "chance", "tasks", "runs"}``."""
    from .lvu.table import headroom, ranked_table_md, ranks
    from .lvu.task import TASKS

    if split not in ("val", "test"):
        raise BadInputError("--split", f"'{split}' is not an LVU split with scores (val, test)")
    check_names(runs)
    stats: Stats = {}
    partial: dict[str, str] = {}
    mixed: dict[str, str] = {}
    for name, d in runs.items():
        stats[name] = {}
        made_with: dict[tuple, list[str]] = {}
        for task, rec in lvu_summaries(Path(d)).items():
            key = f"{split}_{TASKS[task].metric}"
            scores = _scores(Path(rec["path"]), rec)
            if key in scores:
                stats[name][task] = _stat(Path(rec["path"]), scores[key])
            if rec.get("partial"):
                partial[f"{name} / {task}"] = rec["partial"]
            made_with.setdefault((str(rec.get("inputs")), str(rec.get("init")), _config_of(rec)), []).append(task)
        if len(made_with) > 1:
            # one command gives every task the same inputs, init and config: a rerun with others, interrupted,
            # left a folder whose finished tasks are of the new settings and the rest of the old
            mixed[name] = "; ".join(
                f"{', '.join(ts)}: inputs `{i}`, init `{n}`, config.yaml {c}" for (i, n, c), ts in made_with.items()
            )
    tasks = [t for t in TASKS if any(t in per for per in stats.values())]
    if not tasks:
        raise BadInputError(None, f"no run has a {split} score (LVU's test labels are released; was it scored?)")
    room = None
    if data_root is not None:
        room = headroom(Path(data_root), split, tasks)
    rows = [(name, [md_cell(name)]) for name in stats]
    means = {n: {t: s["mean"] for t, s in per.items() if math.isfinite(s["mean"])} for n, per in stats.items()}
    rk = ranks(means, tasks)
    ns = sorted({s["n"] for per in stats.values() for s in per.values()})
    runs_note = _runs_note(ns)
    md = [
        f"### LVU (Table 5 layout), {split} split: top-1 % ↑ or MSE ↓, mean ± SE over {runs_note} per cell",
        "",
        # cells over different numbers of runs (a row of 3 seeds beside one of 5) each say theirs
        ranked_table_md(f"{split} split", stats, tasks, rows, room, ["run"], show_n=len(ns) > 1),
        "Ranks: competition ranking of the means per task among these rows (ties share the better rank); "
        "a row's mean rank is over the tasks it has.",
        "",
    ]
    cmp_rows: list[dict[str, Any]] = []
    if vs is not None:
        cmp_rows = compare(stats, vs, tasks, lambda t: TASKS[t].regression)
        md += [compare_md(cmp_rows, lambda t: f"{t} ({'MSE' if TASKS[t].regression else 'top-1'})")]
    md.append(_partial_md(partial))
    md.append(
        _notes_md("Rows mixing runs of other inputs, init or config (a rerun with others left unfinished?)", mixed)
    )
    return {
        "dataset": "lvu",
        "mixed": mixed,
        "split": split,
        "runs": {n: str(Path(d).resolve()) for n, d in runs.items()},
        "tasks": tasks,
        "stats": stats,
        "ranks": rk,
        "top1": {n: sum(r == 1 for r in per.values()) for n, per in rk.items()},
        "mean_rank": {n: (sum(per.values()) / len(per) if per else None) for n, per in rk.items()},
        "chance": room,
        "compare": cmp_rows,
        "partial": partial,
        "runs_per_cell": ns,
        "markdown": "\n".join(md).rstrip() + "\n",
    }


def plot_lvu_table(res: Mapping[str, Any], png: Path) -> Path:
    """:func:`lvu_table`'s cells as Table 5's plot (a panel per task, a bar per run)."""
    from .lvu.table import plot_rows

    stats, runs_note = res["stats"], _runs_note(res["runs_per_cell"])
    rows = [(n, n.replace("$", r"\$")) for n in stats]  # a name's '$' drawn as written, not read as TeX
    note = f"mean ± SE over {runs_note}"
    return plot_rows(stats, res["chance"], res["tasks"], rows, png, f"LVU tasks, {res['split']} split", note)


def _runs_note(ns: Sequence[int]) -> str:
    return "/".join(map(str, ns)) + (" run" if list(ns) == [1] else " runs")


def vidsitu_table(runs: Mapping[str, str | os.PathLike], vs: str | None = None) -> dict[str, Any]:
    """A table per VidSitu task of ``runs`` (``{name: finetune vidsitu folder}``), rows in the order
    given; returns ``{"markdown", "stats" (task -> run -> metric), "compare", "partial", "runs"}``."""
    from ..eval.stats import format_table
    from .vidsitu import TASKS

    check_names(runs)
    by_task: dict[str, Stats] = {}
    partial: dict[str, str] = {}
    scored_on: dict[str, dict[str, str]] = {}  # task -> run -> what its eval split was
    for name, d in runs.items():
        rec = vidsitu_summary(Path(d))
        path = Path(rec["path"])
        by_task.setdefault(rec["task"], {})[name] = {k: _stat(path, s) for k, s in rec["summary"].items()}
        if rec.get("partial"):
            partial[name] = rec["partial"]
        scored_on.setdefault(rec["task"], {})[name] = _scored_on(rec)
    md, cmp_rows = [], []
    for task in [t for t in TASKS if t in by_task]:
        stats = by_task[task]
        keys = [k for k in TASKS[task].metric_keys if any(k in per for per in stats.values())]
        md += [
            f"### VidSitu {task} (mean ± SE over the runs; percent)",
            "",
            format_table({_row_name(n, per, stats): per for n, per in stats.items()}, keys=keys),
        ]
        if len(set(scored_on[task].values())) > 1:  # a data.split_file subset beside the whole split
            md.append(_notes_md("Scored on different segments", scored_on[task]))
        if vs is not None and vs in stats:
            rows = compare(stats, vs, keys)
            cmp_rows += [r | {"task": task} for r in rows]
            md.append(compare_md(rows))
    if vs is not None and not any(vs in s for s in by_task.values()):
        raise BadInputError("--vs", f"no run named '{vs}' (runs: {', '.join(runs)})")
    md.append(_partial_md(partial))
    return {
        "dataset": "vidsitu",
        "runs": {n: str(Path(d).resolve()) for n, d in runs.items()},
        "stats": by_task,
        "compare": cmp_rows,
        "partial": partial,
        "markdown": "\n".join(md).rstrip() + "\n",
    }


def plot_vidsitu_table(res: Mapping[str, Any], png: Path) -> Path:
    """:func:`vidsitu_table`'s cells as a plot: a panel per task and metric (the tables' columns), a bar
    per run of that task, a run's colour the same in every panel; mean ± SE as the cells show it."""
    from matplotlib.figure import Figure

    from ..utils.io import display_text
    from ..utils.plots import draw_bars, row_colors
    from .vidsitu import TASKS

    names = list(dict.fromkeys(n for task in res["stats"].values() for n in task))
    colour = dict(zip(names, row_colors(len(names))))
    panels = [
        (task, key)
        for task in [t for t in TASKS if t in res["stats"]]
        for key in TASKS[task].metric_keys
        if any(key in per for per in res["stats"][task].values())
    ]
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    fig = Figure(figsize=(max(3.0 * ncol, 6.0), 3.0 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (task, key) in zip(axes.flat, panels):
        runs = res["stats"][task]
        # a name's '$' drawn as written, not read as TeX; surrogate escapes (a folder name met under a
        # non-UTF-8 locale) refused by matplotlib's text layout
        labels = [display_text(n).replace("$", r"\$") for n in runs]
        draw_bars(ax, [per.get(key) for per in runs.values()], labels, [colour[n] for n in runs])
        ax.set_title(f"{task}: {key} ↑", fontsize=9)
        ax.set_ylabel(key if key.startswith("cider") else f"{key} (%)", fontsize=8)
    # the runs each bar is over (a cell of no finite run, n 0, is its panel's n/a)
    ns = sorted({int(c["n"]) for t in res["stats"].values() for per in t.values() for c in per.values()} - {0})
    over = f"mean ± SE over {_runs_note(ns)}" if ns else "no run gave a finite value"
    fig.suptitle(f"VidSitu tasks\n{over}", fontsize=10)
    fig.tight_layout()
    atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=110))
    return png


def _row_name(name: str, per: Mapping[str, Mapping], stats: Stats) -> str:
    """A row's name, with its runs where the task's rows are over different numbers of them (the
    table's header says only "n=3/5")."""
    runs = lambda st: max((int(c["n"]) for c in st.values()), default=0)  # noqa: E731
    differ = len({runs(st) for st in stats.values()}) > 1
    return md_cell(name) + (f" (n={runs(per)})" if differ else "")


def _scored_on(rec: Mapping[str, Any]) -> str:
    """What a VidSitu run's scores are over: its eval segments (a ``data.split_file`` subset has fewer)."""
    n = rec.get("eval_segments")
    return "not recorded" if n is None else f"{n} eval segments"


def write_table(res: dict[str, Any], out: str | os.PathLike) -> list[Path]:
    """``out`` (Markdown) and, beside it, ``.json`` (everything but the Markdown) and ``.png`` (the plot)."""
    md = Path(out)
    written = [atomic_write_text(md, res["markdown"])]
    written.append(atomic_write_json(md.with_suffix(".json"), {k: v for k, v in res.items() if k != "markdown"}))
    plot = plot_lvu_table if res["dataset"] == "lvu" else plot_vidsitu_table
    written.append(plot(res, md.with_suffix(".png")))
    return written


def check_out(out: str, dataset: str) -> Path:
    """``--out``: a file name ending in .md (any case), whose .json and .png siblings are not
    folders, its folder made. Said before anything is written: an empty ``--out "$OUT"`` wrote no file,
    exit 0; ``dir/`` was "not a .md file" and ``t.md/`` wrote the file ``t.md``; a folder ``T.json``
    failed after ``T.md`` was written; a refused name had its missing folders made first."""
    if not out:
        raise BadInputError("--out", "give the table's .md file; it is empty")
    md = Path(out)
    if out.endswith(("/", os.sep)) or md.is_dir():
        raise BadInputError("--out", f"'{out}' is a folder: give the table's .md file (e.g. {md / 'table.md'})")
    if md.suffix.lower() != ".md":
        raise BadInputError("--out", f"'{out}' does not end in .md (the table's Markdown; its .json goes beside it)")
    for p in (md.with_suffix(".json"), md.with_suffix(".png")):
        if p.is_dir():
            raise BadInputError(p, f"an existing folder where the table's {p.suffix} goes (--out {out})")
    return ensure_out_file(md, "--out file")


def _run(args) -> int:
    runs = parse_runs(args.runs)
    if args.out is not None:
        check_out(args.out, args.dataset)
    if args.dataset == "lvu":
        res = lvu_table(runs, split=args.split, data_root=args.data_root, vs=args.vs)
    else:
        res = vidsitu_table(runs, vs=args.vs)
    sys.stdout.write(res["markdown"])
    if args.out is not None:
        for p in write_table(res, args.out):
            print(f"wrote {p}", file=sys.stderr)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "table",
        help="the paper's tables from finished `finetune` runs (mean ± SE, LVU's #top-1 and mean rank)",
        description="Gather finished `moviessl finetune` folders into one table, a row per run: LVU in "
        "Table 5's layout, VidSitu a table per task. Nothing is trained or scored again.",
    )
    ds = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name, what in (
        ("lvu", "`finetune lvu` folders (one task or --task all)"),
        ("vidsitu", "`finetune vidsitu` folders"),
    ):
        s = ds.add_parser(name, help=f"a table of {what}", description=f"A table of {what}.")
        s.add_argument(
            "runs",
            nargs="+",
            metavar="[NAME=]RUN",
            help=f"a run folder, named NAME (default: its folder name); {SPLIT_RULE}",
        )
        if name == "lvu":
            s.add_argument("--split", default="test", choices=["test", "val"], help="the split scored (default: test)")
            s.add_argument(
                "--data-root", default=None, help="LVU's folder (lvu_1.0/'s parent): adds the chance / constant row"
            )
        s.add_argument("--vs", metavar="NAME", default=None, help="compare every other run with this one (z, 2 SE)")
        s.add_argument(
            "--out", default=None, help="write the table to this .md file (.json, .png beside it; its folder is made)"
        )
        s.set_defaults(func=_run)
