"""Kinetics / PySlowFast-style clip lists: one ``path label`` (or just ``path``) per line.

Paths are relative to the list's folder unless absolute. Fields are whitespace-separated
(PySlowFast writes one space). A line of one field is an unlabelled path; otherwise the last field
must be the integer label and everything before it is the path (so a path may contain spaces).
Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import BadInputError


def read_clip_list(csv_path: str | os.PathLike) -> list[tuple[Path, int | None]]:
    """``[(absolute Path, label or None), ...]`` in file order."""
    path = Path(csv_path)
    if not path.is_file():
        raise BadInputError(path, "clip list not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(path, f"unreadable ({e})") from None
    base = path.resolve().parent
    out: list[tuple[Path, int | None]] = []
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        comma = re.fullmatch(r"(.+?)\s*,\s*(-?\d+)", s)
        if comma and not (base / s).exists() and (base / comma.group(1)).exists():
            raise BadInputError(f"{path}:{lineno}", "fields are separated by whitespace ('path label'), not by a comma")
        parts = s.rsplit(None, 1)
        label = None
        if len(parts) == 2:
            try:
                label = int(parts[1])
            except ValueError:
                raise BadInputError(f"{path}:{lineno}", f"label '{parts[1]}' is not an integer") from None
            s = parts[0].strip()
        if label is not None and label < 0:
            raise BadInputError(f"{path}:{lineno}", f"negative label {label}")
        clip = Path(s)
        out.append((clip if clip.is_absolute() else base / clip, label))
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
