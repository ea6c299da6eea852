"""LVU's released files, parsed as the reference loader does (``chaoyuaw/lvu``,
``src/data/video_data_helper.py``): label files ``lvu_1.0/{task}/{train,val,test}.csv``, instance
metadata ``instance_meta/instance_meta_{task}.pkl`` and RoI features ``features/<id>.npz``; and the
tracks JSON files (SynthMovies', or a user's detections) that give the same per-second boxes.

Label files are whitespace-separated despite the extension, with exactly one header line. The
label is field 0 (an int class id, used as given, gaps included) or fields 0-1 for like_ratio;
the video key is field -2 (the YouTube id) in all three layouts. Regression targets are returned
centred with LVU's hard-coded constants (training and evaluation MSE are both on that scale).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError
from ..utils.safe_pickle import UNPICKLE_ERRORS, safe_load, safe_load_npz_object

log = logging.getLogger("moviessl.data")

LIKE_RATIO_CENTER = 9.138220535629456  # subtracted from 10 * like / (like + dislike)
VIEW_COUNT_CENTER = 11.76425435683139  # subtracted from ln(view_count)

CLASSIFICATION_HEADER = "class_id class_name youtube_id imdb_id"


def like_ratio_target(like: float, dislike: float) -> float:
    """LVU's like-ratio target: 10 x like / (like + dislike), centred."""
    if like < 0 or dislike < 0 or like + dislike <= 0:
        raise ValueError("like and dislike counts must be >= 0 with a positive sum")
    total = like + dislike
    if math.isfinite(10.0 * total):
        return 10.0 * like / total - LIKE_RATIO_CENTER
    # counts past ~1e307: the sum (or 10 x like) overflows, and inf / inf was a NaN target (1e308 and
    # 1e308), inf / x an inf one; the same ratio, from the counts' quotient
    return (10.0 / (1.0 + dislike / like) if like > 0 else 0.0) - LIKE_RATIO_CENTER


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
    # a label folder missing one task (a partial download) is still the label folder: the path a
    # "not found" names must not be lvu_1.0/lvu_1.0/...
    is_labels = root.name == "lvu_1.0" or any((root / t).is_dir() for t in LVU_TASKS)
    if (root / "lvu_1.0").is_dir() or not is_labels:
        root = root / "lvu_1.0"
    return root / task / f"{split}.csv"


def parse_label(task: str, fields: list[str]) -> int | float:
    """The training target of one line: a class id, or the centred regression value."""
    t = LVU_TASKS[task]
    if t["type"] == "regression":
        values = [float(f) for f in fields[: t["label_fields"]]]
        if not all(math.isfinite(v) for v in values):  # nan / inf parse as floats: a NaN score, exit 0
            raise ValueError(f"not a finite count: {' '.join(fields[: t['label_fields']])}")
        return t["target"](*values)
    cid = int(fields[0])
    if not 0 <= cid < LVU_TASKS[task]["num_classes"]:
        raise ValueError(f"class id {cid} outside 0..{LVU_TASKS[task]['num_classes'] - 1}")
    return cid


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_labels(lvu_root: str | os.PathLike, task: str, split: str) -> list[tuple[str, int | float]]:
    """``[(youtube_id, label), ...]`` in file order: an int class id, or a float centred target.

    A youtube id listed again with the same label is kept once. Listed again with a different label
    it is bad input naming the second line: LVU's reference loader appends every line's label to
    the video's boxes and then unpacks three values per box, so it fails on any repeated id, and
    keeping either label here would score against a label the file also contradicts."""
    _task(task)
    if split not in SPLITS:
        raise BadInputError(None, f"unknown LVU split '{split}' (choose from {', '.join(SPLITS)})")
    path = label_path(lvu_root, task, split)
    if not path.is_file():
        raise BadInputError(path, "LVU label file not found")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(path, f"unreadable ({e})") from None
    if not lines:
        raise BadInputError(path, "empty file (expected a header line)")
    want = LVU_TASKS[task].get("label_fields", 2) + 2  # label field(s) (class: id and name), youtube_id, imdb_id
    head = lines[0].split()
    if len(head) == want and _is_number(head[0]):
        # line 1 is always skipped, as LVU's reference does: a file without its header would lose a video unseen
        raise BadInputError(
            f"{path}:1",
            f"a label line, not the header ({LVU_TASKS[task]['header']!r}): the first line of an LVU label file is "
            "skipped, so it must be the header",
        )
    out = []
    seen: dict[str, tuple[int, int | float, str]] = {}  # youtube_id -> (first line, label, as written)
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
        vid, written = fields[-2], " ".join(fields[:-2])  # a class's id and name, a regression's value
        if vid in seen:
            first, prev, prev_written = seen[vid]
            if prev != label:
                raise BadInputError(
                    f"{path}:{lineno}",
                    f"youtube id {vid!r} is listed again with another label ({written!r}; line {first} "
                    f"gives {prev_written!r}): a video has one label",
                )
            continue
        seen[vid] = (lineno, label, written)
        out.append((vid, label))
    return out


def class_names(lvu_root: str | os.PathLike, task: str) -> dict[int, str]:
    """Class id -> name as found in the train/val/test files (classification tasks)."""
    names: dict[int, str] = {}
    for split in SPLITS:
        path = label_path(lvu_root, task, split)
        if path.is_file():
            for line in path.read_text(encoding="utf-8-sig").splitlines()[1:]:
                f = line.split()
                if len(f) == 4:
                    names.setdefault(int(f[0]), f[1])
    return names


# --------------------------------------------------------------------------------------------
# Instances: per-second boxes with shot and track ids (+ RoI features), from a tracks JSON file
# or from the LVU release's own inputs.


@dataclass
class VideoInstances:
    """One video's instance boxes, one row per (second, box), sorted by second (file order within
    a second). ``box`` = normalised ``[x1, y1, x2, y2]``; ``feat`` = RoI features (an array, or a
    :class:`moviessl.features.instances.LazyFeatures` that reads them when indexed) or None."""

    sec: np.ndarray  # (n,) int64
    shot: np.ndarray  # (n,) int64, LVU's scene id
    track: np.ndarray  # (n,) int64, LVU's link id
    box: np.ndarray  # (n, 4) float32
    feat: Any = None  # (n, D) float32: np.ndarray, LazyFeatures or None

    def __len__(self) -> int:
        return len(self.sec)

    def with_features(self, feat: np.ndarray) -> "VideoInstances":
        return VideoInstances(self.sec, self.shot, self.track, self.box, np.asarray(feat, np.float32))


# Seconds and ids are held as int64 and subtracted from one another (a span's time and shot ids): a
# JSON integer past 2**63 (or 1e300) was numpy's OverflowError traceback, and two ids 2**63 apart wrapped
ID_LIMIT = 2**62


def _int(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) and not (isinstance(x, float) and x.is_integer()):
        raise ValueError(f"{what} must be an integer, got {x!r}")
    if not -ID_LIMIT < x < ID_LIMIT:
        raise ValueError(f"{what} {x!r} is out of range (an integer between -2**62 and 2**62)")
    return int(x)


def check_box(box: Any, what: str = "box") -> list[float]:
    """A normalised ``[x1, y1, x2, y2]`` box: finite, inside [0, 1] (1e-3 slack, clipped), not inverted."""
    try:
        b = [float(v) for v in box]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be 4 numbers [x1, y1, x2, y2], got {box!r}") from None
    if len(b) != 4 or not all(math.isfinite(v) for v in b):
        raise ValueError(f"{what} must be 4 finite numbers [x1, y1, x2, y2], got {box!r}")
    if min(b) < -1e-3 or max(b) > 1 + 1e-3:
        raise ValueError(f"{what} {b} is not normalised to [0, 1] of the frame")
    if b[2] < b[0] or b[3] < b[1]:
        raise ValueError(f"{what} {b} is inverted (need x2 >= x1 and y2 >= y1)")
    return [min(1.0, max(0.0, v)) for v in b]


def has_area(box: list[float]) -> bool:
    """A tracks file's box with no area inside the frame (a character just off screen, clipped) is
    dropped; LVU's instance metadata keeps such boxes, as its reference loader does."""
    return box[2] > box[0] and box[3] > box[1]


def read_tracks(path: str | os.PathLike) -> VideoInstances:
    """A tracks file (SynthMovies' ``lvu/tracks/<id>.json``; also the format for a user's detections)::

        {"seconds": [{"t": 12, "shot": 3, "track_ids": [0, 2], "boxes": [[x1, y1, x2, y2], [...]]}, ...]}

    One entry per second that has boxes (others may be listed with empty lists or left out); boxes
    normalised to [0, 1] of the frame, taken at the middle of that second (a box with no area inside
    the frame is dropped); ``track_ids`` identify a
    person within the video (LVU's link id); ``shot`` (LVU's scene id) defaults to 0. Extra keys
    (``youtube_id``, ``fps``, ...) are ignored. Anything malformed is one ``BadInputError`` line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise BadInputError(path, "tracks file not found") from None
    # ValueError: also an integer past Python's 4300-digit limit (vidsitu._read_json); recursion: nested too deep
    except (OSError, ValueError, RecursionError) as e:
        raise BadInputError(path, f"unreadable tracks JSON ({e})") from None
    secs = data.get("seconds") if isinstance(data, dict) else None
    if not isinstance(secs, list):
        raise BadInputError(path, 'a tracks file is a JSON object with a "seconds" list')
    rows: list[tuple[int, int, int, list[float]]] = []
    seen: set[int] = set()
    for i, s in enumerate(secs):
        where = f"seconds[{i}]"
        try:
            if not isinstance(s, dict):
                raise ValueError("must be an object")
            t = _int(s.get("t"), "t")
            if t < 0 or t in seen:
                raise ValueError(f"t = {t} is negative or repeated")
            seen.add(t)
            shot = _int(s.get("shot", 0), "shot")
            tids, boxes = s.get("track_ids", []), s.get("boxes", [])
            if not isinstance(tids, list) or not isinstance(boxes, list) or len(tids) != len(boxes):
                raise ValueError("track_ids and boxes must be lists of the same length")
            for j, (tid, box) in enumerate(zip(tids, boxes)):
                b = check_box(box, f"boxes[{j}]")
                if has_area(b):
                    rows.append((t, shot, _int(tid, f"track_ids[{j}]"), b))
        except ValueError as e:
            raise BadInputError(f"{path}: {where}", str(e)) from None
    rows.sort(key=lambda r: r[0])  # stable: file order within a second
    return VideoInstances(
        sec=np.array([r[0] for r in rows], np.int64),
        shot=np.array([r[1] for r in rows], np.int64),
        track=np.array([r[2] for r in rows], np.int64),
        box=np.array([r[3] for r in rows], np.float32).reshape(-1, 4),
    )


def parse_box_key(key: str) -> list[float]:
    """LVU's box keys: ``"x1,y1,x2,y2"`` (normalised; AVA's convention), as in its instance metadata."""
    parts = str(key).split(",")
    if len(parts) != 4:
        raise ValueError(f"box key {key!r} is not 'x1,y1,x2,y2'")
    return check_box(parts, f"box {key!r}")


def read_instance_meta(path: str | os.PathLike) -> dict[str, dict[int, dict[str, tuple[int, int]]]]:
    """LVU's ``instance_meta/instance_meta_{task}.pkl``: ``{youtube_id: {sec: {box_key: value}}}``
    where ``value`` starts with ``(scene_id, link_id)`` (the released files hold ``[scene_id,
    link_id]``; the reference loader appends the label to that list, which it then reads as the
    third element -- a third element already there, e.g. AVA actions, is ignored). Loaded with a
    restricted unpickler. Returns ``{youtube_id: {sec: {box_key: (scene_id, link_id)}}}``.

    Boxes with no area are kept: the reference makes a token of every box of the file. A bad entry
    (a malformed, out-of-range or inverted box, a value without the two ids, a second or video that
    is not a mapping) is skipped, and one warning names the file, the count and the first problem:
    one bad box never costs the thousands of good ones. A file that cannot be read, or whose
    entries are all bad, is a :class:`BadInputError`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = safe_load(f)
    except FileNotFoundError:
        raise BadInputError(path, "instance metadata file not found") from None
    except (OSError, *UNPICKLE_ERRORS) as e:
        raise BadInputError(path, f"not a readable instance-metadata pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise BadInputError(
            path, f"expected a dict youtube_id -> {{sec -> {{box -> [scene_id, link_id]}}}}, got {type(data).__name__}"
        )
    out: dict[str, dict[int, dict[str, tuple[int, int]]]] = {}
    bad: list[str] = []  # one line per skipped entry
    good = 0
    for vid, secs in data.items():
        if not isinstance(secs, dict):
            bad.append(f"video {vid!r} must map seconds to {{box: [scene_id, link_id]}}")
            continue
        v: dict[int, dict[str, tuple[int, int]]] = {}
        for sec, boxes in secs.items():
            where = f"video {vid!r} second {sec!r}"
            try:
                t = _int(sec, "second")
                if t < 0:  # the span code indexes by second (a negative one crashed it, or wrapped round)
                    raise ValueError("negative second")
                if not isinstance(boxes, dict):
                    raise ValueError("must map boxes to [scene_id, link_id]")
            except ValueError as e:
                bad.append(f"{where}: {e}")
                continue
            row = {}
            for key, val in boxes.items():
                try:
                    parse_box_key(key)
                    if not isinstance(val, (list, tuple)) or len(val) < 2:
                        raise ValueError(f"expected [scene_id, link_id], got {val!r}")
                    row[str(key)] = (_int(val[0], "scene_id"), _int(val[1], "link_id"))
                except ValueError as e:
                    bad.append(f"{where} box {key!r}: {e}")
            v[t] = row
            good += len(row)
        out[str(vid)] = v
    if bad and not good:
        raise BadInputError(path, f"no usable box (bad entries: {len(bad)}; first: {bad[0]})")
    if bad:
        log.warning("%s: skipped %d bad entries, kept %d boxes (first: %s)", path, len(bad), good, bad[0])
    return out


def read_instance_metas(
    path: str | os.PathLike,
) -> tuple[dict[str, dict[int, dict[str, tuple[int, int]]]], dict[str, Path]]:
    """LVU's instance metadata from one ``instance_meta_{task}.pkl`` (:func:`read_instance_meta`)
    or its ``instance_meta/`` folder, every ``instance_meta_*.pkl`` in it: the task files list
    different videos, so all are read. A video in several keeps the first file's boxes (by name), and
    a count of videos whose boxes differ between files is logged. Returns the metadata and, per
    video, the file its boxes came from."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("instance_meta_*.pkl"))
        if not files:
            raise BadInputError(path, "no instance_meta_<task>.pkl files in the folder")
    else:
        files = [path]
    meta: dict[str, dict[int, dict[str, tuple[int, int]]]] = {}
    source: dict[str, Path] = {}
    differ = 0
    for f in files:
        for vid, secs in read_instance_meta(f).items():
            if vid not in meta:
                meta[vid], source[vid] = secs, f
            elif meta[vid] != secs:
                differ += 1
    if differ:
        log.warning("%s: %d videos have other boxes in another task's file; the first file's are used", path, differ)
    return meta, source


def meta_instances(meta: dict[int, dict[str, tuple[int, int]]]) -> VideoInstances:
    """One video's instance metadata (:func:`read_instance_meta`) as :class:`VideoInstances`
    without features: the boxes ``moviessl extract-instances`` pools, in the order of the file."""
    rows = [
        (sec, scene_id, link_id, parse_box_key(key))
        for sec in sorted(meta)
        for key, (scene_id, link_id) in meta[sec].items()
    ]
    return VideoInstances(
        sec=np.array([r[0] for r in rows], np.int64),
        shot=np.array([r[1] for r in rows], np.int64),
        track=np.array([r[2] for r in rows], np.int64),
        box=np.array([r[3] for r in rows], np.float32).reshape(-1, 4),
    )


def read_release_features(path: str | os.PathLike) -> dict[int, dict[str, np.ndarray]]:
    """One of LVU's ``features/<youtube_id>.npz`` files: array ``a`` holds ``{sec: {box_key: (2304,)
    RoI feature}}`` (read by the reference as ``np.load(f, allow_pickle=True)['a'].item()``); loaded
    here with a restricted unpickler."""
    path = Path(path)
    try:
        data = safe_load_npz_object(path, "a")
    except FileNotFoundError:
        raise BadInputError(path, "feature file not found") from None
    except (OSError, KeyError, zipfile.BadZipFile, *UNPICKLE_ERRORS) as e:
        raise BadInputError(path, f"not a readable LVU feature file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise BadInputError(path, f"array 'a' must hold a dict sec -> {{box -> feature}}, got {type(data).__name__}")
    out: dict[int, dict[str, np.ndarray]] = {}
    dim = None
    try:
        for sec, boxes in data.items():
            if not isinstance(boxes, dict):
                raise ValueError(f"second {sec!r} must map boxes to features")
            row = {}
            for key, feat in boxes.items():
                f = np.asarray(feat, dtype=np.float32).reshape(-1)
                if dim is None:
                    dim = f.shape[0]
                if f.shape[0] != dim or not np.isfinite(f).all():
                    raise ValueError(
                        f"second {sec!r} box {key!r}: feature of {f.shape[0]} values (others: {dim}) or non-finite"
                    )
                row[str(key)] = f
            out[_int(sec, "second")] = row
    except (TypeError, ValueError) as e:
        raise BadInputError(path, str(e)) from None
    return out


def release_instances(
    meta: dict[int, dict[str, tuple[int, int]]], feats: dict[int, dict[str, np.ndarray]], where: str = "video"
) -> VideoInstances:
    """Join one video's instance metadata and RoI features (LVU's release) into :class:`VideoInstances`.
    Every box of the metadata needs a feature (the reference indexes ``features[sec][box]``)."""
    fs = []
    for sec in sorted(meta):  # meta_instances' row order
        for key in meta[sec]:
            f = feats.get(sec, {}).get(key)
            if f is None:
                raise BadInputError(where, f"no RoI feature for second {sec} box {key}")
            fs.append(f)
    return meta_instances(meta).with_features(np.stack(fs) if fs else np.zeros((0, 0), np.float32))
