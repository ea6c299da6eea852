"""Clip lists: PySlowFast-style ``path label`` lines, or Kinetics' own annotation CSVs.

PySlowFast style: one ``path label`` (or just ``path``) per line. Paths are relative to the list's
folder unless absolute. Fields are whitespace-separated (PySlowFast writes one space). A line of one
field is an unlabelled path; otherwise the last field is the integer label and everything before it
is the path (so a path may contain spaces). A line whose last field is not an integer is an
unlabelled path with spaces when it names a file or ends in a video extension; otherwise its label
is malformed. Blank lines and lines starting with ``#`` are
skipped.

Kinetics as released (Kay et al. 2017; the CVDF mirror, github.com/cvdfoundation/kinetics-dataset):
``annotations/{train,val,test}.csv`` with the header ``label,youtube_id,time_start,time_end,split``
(later releases add ``is_cc``), and the clips as ``{split}/{youtube_id}_{start:06d}_{end:06d}.mp4``,
flat (CVDF's K400) or in one folder per class (ActivityNet's crawler, CVDF's K700-2020). A list with
that header is read as such: :func:`read_kinetics_csv`.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

from ..errors import BadInputError, raise_if_denied
from ..utils.io import fs_text
from ..video.reader import VIDEO_EXTS

log = logging.getLogger("moviessl.data")

KINETICS_COLUMNS = {"youtube_id", "time_start", "time_end"}  # + "label" but in unlabelled test lists
# what a clip list holds, for the lines that say a file is not one
LIST_LINES = "'path label' or 'path' line per clip, paths relative to the list"
SPLIT_ALIASES = {"validate": "val", "val": "validate", "valid": "val", "validation": "val"}
MISSING_SHOWN = 5  # clip names a run's record lists of those a Kinetics download lacks


class ClipList(list):
    """A clip list's ``[(path, label)]`` that also says which of its rows have no video on disk
    (``missing``: clip names, in file order): the YouTube removals a Kinetics CSV lists but a
    download lacks, which :func:`read_kinetics_csv` leaves out. A path list names its files
    itself, so it leaves none out (one that does not decode is the loader's bad video)."""

    missing: tuple[str, ...] | list[str] = ()


def missing_clips(items) -> dict:
    """What a run's record says of the rows ``items`` left out for want of a video: ``{"count",
    "listed", "first"}`` (``first``: up to :data:`MISSING_SHOWN` clip names), so that a user sees
    how much of Kinetics a score stands on without the log."""
    missing = list(getattr(items, "missing", []))
    return {"count": len(missing), "listed": len(items) + len(missing), "first": missing[:MISSING_SHOWN]}


def read_clip_list(csv_path: str | os.PathLike) -> list[tuple[Path, int | None]]:
    """``[(absolute Path, label or None), ...]`` in file order (from a Kinetics CSV, a
    :class:`ClipList` that names the rows without a video)."""
    path = Path(csv_path)
    if path.is_dir():  # a download's folder (k400/, k400/train/) is there: "not found" sent users looking for it
        raise BadInputError(
            path, "is a folder, not a clip list ('path label' lines, or Kinetics' own annotations/{split}.csv)"
        )
    if not path.is_file():
        raise_if_denied(path)
        raise BadInputError(path, "clip list not found")
    if path.suffix.lower() in VIDEO_EXTS:  # `--data my_movies/film.mp4` was "unreadable ('utf-8' codec ...)"
        raise BadInputError(path, f"is a video, not a clip list: write a text file with one {LIST_LINES}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise BadInputError(path, f"not a text file, so not a clip list (one {LIST_LINES})") from None
    except OSError as e:
        raise BadInputError(path, f"unreadable ({e})") from None
    if lines and is_kinetics_header(lines[0]):
        return read_kinetics_csv(path, lines)
    base = path.resolve().parent
    listed: dict[Path, frozenset[str] | None] = {}

    def _at(s: str) -> Path:
        # the shell expands `~` on a command line, never inside a list, and users write it in both;
        # the list is UTF-8 text, its names the file names' bytes under any locale (fs_text)
        return base / Path(fs_text(s)).expanduser()

    def _is_file(p: Path) -> bool:
        # one listing per folder, not a stat per line (a frame-folder list of Kinetics on NFS)
        if p.parent not in listed:
            try:
                listed[p.parent] = frozenset(os.listdir(p.parent))
            except OSError:
                listed[p.parent] = None
        names = listed[p.parent]
        return names is not None and p.name in names

    out: list[tuple[Path, int | None]] = []
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        comma = re.fullmatch(r"(.+?)\s*,\s*(-?\d+)", s)
        if comma and not _at(s).exists() and _at(comma.group(1)).exists():
            raise BadInputError(f"{path}:{lineno}", "fields are separated by whitespace ('path label'), not by a comma")
        parts = s.rsplit(None, 1)
        label = None
        if len(parts) == 2:
            try:
                label, head = int(parts[1]), parts[0].strip()
                # a name that ends in a number ('Episode 1') is not a path and a label; a head that
                # names a video needs no look (a Kinetics-sized list would cost a stat per line)
                if not head.lower().endswith(VIDEO_EXTS) and _is_file(_at(s)) and not _is_file(_at(head)):
                    label = None
                else:
                    s = head
            except ValueError:
                if not (_is_file(_at(s)) or s.lower().endswith(VIDEO_EXTS)):
                    raise BadInputError(f"{path}:{lineno}", f"label '{parts[1]}' is not an integer") from None
        if label is not None and label < 0:
            raise BadInputError(f"{path}:{lineno}", f"negative label {label}")
        out.append((_at(s), label))
    return out


def check_labelled(items: list[tuple[Path, int | None]], csv_path: str | os.PathLike, purpose: str) -> None:
    """Raise one line naming ``csv_path`` and its first unlabelled clip unless every clip has a label."""
    missing = [clip for clip, y in items if y is None]
    if missing:
        raise BadInputError(
            csv_path,
            f"{purpose} needs a label on every line ('path label'); {len(missing)} of {len(items)} clips have none "
            f"(first: {missing[0].name})",
        )


def header_columns(line: str) -> list[str]:
    return [c.strip().strip('"').strip().lower() for c in line.lstrip("\ufeff").split(",")]


def is_kinetics_header(line: str) -> bool:
    return KINETICS_COLUMNS <= set(header_columns(line))


def kinetics_classes(annotations: Path, also: set[str] = frozenset()) -> list[str]:
    """The class names of every Kinetics annotation CSV in ``annotations`` (and ``also``), sorted:
    label ``k`` is the k-th (the usual Kinetics label map, alphabetical), the same for train, val and
    test lists even where one of them lacks a class."""
    names: set[str] = set(also)
    for f in sorted(annotations.glob("*.csv")):
        try:
            with open(f, encoding="utf-8-sig", newline="") as fh:
                rows = csv.reader(fh)
                head = next(rows, None)
                cols = header_columns(",".join(head)) if head is not None else []
                if not KINETICS_COLUMNS <= set(cols) or "label" not in cols:
                    continue
                k = cols.index("label")
                names.update(r[k].strip() for r in rows if len(r) > k and r[k].strip())
        except (OSError, UnicodeDecodeError):
            continue  # only the list being read must be readable
    return sorted(names)


def _label_map(ann: Path, rows) -> list[str]:
    return kinetics_classes(ann, {(r.get("label") or "").strip() for r in rows} - {""})


def kinetics_label_map(csv_path: str | os.PathLike) -> list[str] | None:
    """The class names a Kinetics annotation CSV's label ids index (None: not a Kinetics CSV)."""
    path = Path(csv_path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            head = fh.readline()
            if not is_kinetics_header(head):
                return None
            rows = list(csv.DictReader(fh, fieldnames=header_columns(head)))
    except (OSError, UnicodeDecodeError):
        return None  # reading the list itself says what is wrong with it
    return _label_map(path.resolve().parent, rows)


def check_same_label_map(train_csv: str | os.PathLike, val_csv: str | os.PathLike) -> None:
    """Two Kinetics CSVs from different annotation folders can number their classes differently
    (label ``k`` is the k-th class name over *its* folder): a probe trained on one and scored on the
    other would compare unrelated ids. One line naming ``val_csv`` when they differ."""
    a, b = kinetics_label_map(train_csv), kinetics_label_map(val_csv)
    if a is None or b is None or a == b:
        return
    only = sorted(set(a) ^ set(b))
    raise BadInputError(
        val_csv,
        f"its Kinetics classes ({len(b)}) are not those of {train_csv} ({len(a)})"
        + (f", e.g. '{only[0]}' is in one only" if only else "")
        + ", so their label ids differ; keep both CSVs in one annotations/ folder",
    )


def _clip_index(folder: Path) -> dict[str, Path]:
    """``{file stem: path}`` of the video files in ``folder`` and its class subfolders, listed once
    (a Kinetics split holds up to ~0.5 M clips: one directory scan, no stat per clip)."""
    found: dict[str, Path] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for e in entries:
        if e.is_dir():
            try:
                subs = list(os.scandir(e.path))
            except OSError:
                continue
            for f in subs:
                if f.name.lower().endswith(VIDEO_EXTS) and f.is_file():
                    found.setdefault(Path(f.name).stem, Path(f.path))
        elif e.name.lower().endswith(VIDEO_EXTS):
            found.setdefault(Path(e.name).stem, Path(e.path))
    return found


def read_kinetics_csv(path: Path, lines: list[str]) -> ClipList:
    """A Kinetics annotation CSV -> ``[(clip path, label or None)]`` in file order. The clips are looked
    for under ``ROOT/{split}/`` (``ROOT`` = the folder above ``annotations/``, else the CSV's own
    folder; ``split`` from the row, else the CSV's name), flat or in class folders, any video
    extension; a clip also in ``ROOT/replacement/`` (CVDF's copies of the corrupted K400 clips) is
    read from there. Clips the download lacks (YouTube removals: a few percent of every Kinetics
    copy) are left out with one warning, and named in the result's ``missing``; none found at all
    is an error."""
    ann = path.resolve().parent
    root = ann.parent if ann.name == "annotations" else ann
    reader = csv.DictReader(lines[1:], fieldnames=header_columns(lines[0]))
    rows = [(reader.line_num + 1, row) for row in reader]  # line numbers as the file has them
    classes = {name: k for k, name in enumerate(_label_map(ann, (r for _, r in rows)))}
    folders: dict[Path, dict[str, Path]] = {}
    # CVDF's K400 train tars hold ~1.4k clips that do not decode ("moov atom not found"); the release
    # adds good copies under the same names in replacement_for_corrupted_k400.tgz, which its
    # k400_extractor.sh unpacks to ROOT/replacement/ (github.com/cvdfoundation/kinetics-dataset)
    replaced = _clip_index(root / "replacement")
    split_dir: dict[str, Path] = {}
    out = ClipList()
    missing: list[str] = []
    looked: set[Path] = set()
    for lineno, row in rows:
        try:
            start, end = (int(float(row[k])) for k in ("time_start", "time_end"))
            yt = row["youtube_id"].strip()
        except (TypeError, ValueError, AttributeError, OverflowError):  # overflow: a time of "inf"
            raise BadInputError(
                f"{path}:{lineno}", "needs youtube_id, time_start and time_end (whole seconds) in each row"
            ) from None
        split = (row.get("split") or "").strip() or path.stem
        if split not in split_dir:
            # the rows' split names the folder; else its other spelling (validate / val), else the CSV's name
            tries = [root / split, root / SPLIT_ALIASES.get(split, split), root / path.stem]
            split_dir[split] = folder = next((f for f in tries if f.is_dir()), tries[0])
            folders.setdefault(folder, _clip_index(folder))
        folder = split_dir[split]
        looked.add(folder)
        name = f"{yt}_{start:06d}_{end:06d}"
        clip = replaced.get(name) or folders[folder].get(name)
        if clip is None:
            missing.append(name)
            continue
        label = (row.get("label") or "").strip()
        out.append((clip, classes[label] if label else None))
    where = ", ".join(str(f) for f in sorted(looked)) or str(root)
    if not out:
        first = f" (first: {missing[0]}.mp4)" if missing else ""
        raise BadInputError(path, f"none of its {len(missing)} Kinetics clips is a video file under {where}{first}")
    if missing:
        log.warning(
            "%s: %d of %d clips have no video under %s (first: %s); left out",
            path,
            len(missing),
            len(missing) + len(out),
            where,
            missing[0],
        )
    out.missing = missing
    return out
