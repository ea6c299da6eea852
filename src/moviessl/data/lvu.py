"""LVU label files (``lvu_1.0/{task}/{train,val,test}.csv``), parsed as the reference loader does.

The files are whitespace-separated despite the extension, with exactly one header line. The
label is field 0 (an int class id, used as given, gaps included) or fields 0-1 for like_ratio;
the video key is field -2 (the YouTube id) in all three layouts. Regression targets are returned
centred with LVU's hard-coded constants (training and evaluation MSE are both on that scale).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..errors import BadInputError

LIKE_RATIO_CENTER = 9.138220535629456  # subtracted from 10 * like / (like + dislike)
VIEW_COUNT_CENTER = 11.76425435683139  # subtracted from ln(view_count)

CLASSIFICATION_HEADER = "class_id class_name youtube_id imdb_id"


def like_ratio_target(like: float, dislike: float) -> float:
    """LVU's like-ratio target: 10 x like / (like + dislike), centred."""
    if like < 0 or dislike < 0 or like + dislike <= 0:
        raise ValueError("like and dislike counts must be >= 0 with a positive sum")
    return 10.0 * like / (like + dislike) - LIKE_RATIO_CENTER


def view_count_target(views: float) -> float:
    """LVU's view-count target: ln(view_count), centred."""
    if views <= 0:
        raise ValueError("view_count must be > 0")
    return math.log(views) - VIEW_COUNT_CENTER


# task -> head size (1 for regression), type, LVU group, the header line of its files, and for
# regression the number of label fields and the centred target they give
LVU_TASKS: dict[str, dict] = {
    "relationship": dict(num_classes=4, type="classification", group="content", header=CLASSIFICATION_HEADER),
    "way_speaking": dict(num_classes=5, type="classification", group="content", header=CLASSIFICATION_HEADER),
    "scene": dict(num_classes=6, type="classification", group="content", header=CLASSIFICATION_HEADER),
    "director": dict(num_classes=10, type="classification", group="metadata", header=CLASSIFICATION_HEADER),
    "writer": dict(num_classes=10, type="classification", group="metadata", header=CLASSIFICATION_HEADER),
    "year": dict(num_classes=9, type="classification", group="metadata", header=CLASSIFICATION_HEADER),
    "genre": dict(num_classes=4, type="classification", group="metadata", header=CLASSIFICATION_HEADER),
    "like_ratio": dict(
        num_classes=1,
        type="regression",
        group="user engagement",
        header="like_count dislike_count youtube_id imdb_id",
        label_fields=2,
        target=like_ratio_target,
    ),
    "view_count": dict(
        num_classes=1,
        type="regression",
        group="user engagement",
        header="view_count youtube_id imdb_id",
        label_fields=1,
        target=view_count_target,
    ),
}
SPLITS = ("train", "val", "test")


def is_regression(task: str) -> bool:
    return _task(task)["type"] == "regression"


def _task(task: str) -> dict:
    if task not in LVU_TASKS:
        raise BadInputError(None, f"unknown LVU task '{task}' (choose from {', '.join(LVU_TASKS)})")
    return LVU_TASKS[task]


def label_path(lvu_root: str | os.PathLike, task: str, split: str) -> Path:
    """``lvu_root/lvu_1.0/{task}/{split}.csv``; ``lvu_root`` may also be the ``lvu_1.0`` folder itself."""
    root = Path(lvu_root)
    if (root / "lvu_1.0").is_dir() or not (root / task).is_dir():
        root = root / "lvu_1.0"
    return root / task / f"{split}.csv"


def parse_label(task: str, fields: list[str]) -> int | float:
    """The training target of one line: a class id, or the centred regression value."""
    t = LVU_TASKS[task]
    if t["type"] == "regression":
        return t["target"](*(float(f) for f in fields[: t["label_fields"]]))
    cid = int(fields[0])
    if not 0 <= cid < LVU_TASKS[task]["num_classes"]:
        raise ValueError(f"class id {cid} outside 0..{LVU_TASKS[task]['num_classes'] - 1}")
    return cid


def read_labels(lvu_root: str | os.PathLike, task: str, split: str) -> list[tuple[str, int | float]]:
    """``[(youtube_id, label), ...]`` in file order: an int class id, or a float centred target."""
    _task(task)
    if split not in SPLITS:
        raise BadInputError(None, f"unknown LVU split '{split}' (choose from {', '.join(SPLITS)})")
    path = label_path(lvu_root, task, split)
    if not path.is_file():
        raise BadInputError(path, "LVU label file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(path, f"unreadable ({e})") from None
    if not lines:
        raise BadInputError(path, "empty file (expected a header line)")
    want = LVU_TASKS[task].get("label_fields", 2) + 2  # label field(s) (class: id and name), youtube_id, imdb_id
    out = []
    for lineno, line in enumerate(lines[1:], start=2):  # line 1 is the header
        fields = line.split()
        if not fields:
            continue
        if len(fields) != want:
            raise BadInputError(f"{path}:{lineno}", f"expected {want} whitespace-separated fields, got {len(fields)}")
        try:
            label = parse_label(task, fields)
        except ValueError as e:
            raise BadInputError(f"{path}:{lineno}", f"bad label ({e})") from None
        out.append((fields[-2], label))
    return out


def class_names(lvu_root: str | os.PathLike, task: str) -> dict[int, str]:
    """Class id -> name as found in the train/val/test files (classification tasks)."""
    names: dict[int, str] = {}
    for split in SPLITS:
        path = label_path(lvu_root, task, split)
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines()[1:]:
                f = line.split()
                if len(f) == 4:
                    names.setdefault(int(f[0]), f[1])
    return names
