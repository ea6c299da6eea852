"""Kinetics / PySlowFast-style clip lists: one ``path label`` (or just ``path``) per line.

Paths are relative to the list's folder unless absolute. Separators are whitespace (PySlowFast
uses a single space); a trailing integer is the label, so paths with spaces must be quoted
neither here nor there: everything before the last field is the path when the last field is an
int. Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import os
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
        parts = s.rsplit(None, 1)
        label = None
        if len(parts) == 2:
            try:
                label = int(parts[1])
                s = parts[0].strip()
            except ValueError:
                if " " in s or "\t" in s:
                    raise BadInputError(f"{path}:{lineno}", f"label '{parts[1]}' is not an integer") from None
        if label is not None and label < 0:
            raise BadInputError(f"{path}:{lineno}", f"negative label {label}")
        clip = Path(s)
        out.append((clip if clip.is_absolute() else base / clip, label))
    return out
