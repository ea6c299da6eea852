"""Reading and writing folders of per-video event features.

A feature folder is VidSitu's layout, ``{id}_feats.npy`` holding a ``(num_events, D)`` float array
(one row per event), plus, for the folders ``moviessl extract`` writes, an ``index.json``::

    {"format": "moviessl-features", "stride_s": 2.0, "dim": 2048, "dtype": "float32",
     "backbone": "<sha256[:12] of the checkpoint>", "backbone_path": ..., "input": {...},
     "contextualizer": null | {...}, "ctx_pending"?, "precision"?, "splits"?, "counts": {"ok": n, "bad": n},
     "videos": {"<id>": {"num_events", "fps", "duration_s", "backbone", "status": "ok"|"bad",
                         "precision"?, "split"?, "error"?, "source"?}}}

``split``: a VidSitu segment's, from the annotations beside the videos; ``"splits": "unknown"``
when a VidSitu root's annotations were not found (its segments' splits must come from elsewhere).

VidSitu's released folders (``vsitu_vid_feats/<model>/``) have no index: every file is ``(5, D)``
with D = 2048 (I3D, Slow R50, Slow-D) or 2304 (SlowFast, 2048 + 256), events 2 s apart.
:class:`FeatureStore` reads both; a file of the wrong shape raises ``BadInputError`` naming it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import BadInputError

log = logging.getLogger("moviessl.features")

FEATS_SUFFIX = "_feats.npy"
CTX_SUFFIX = "_ctx.npy"
INDEX_NAME = "index.json"
# What an extraction in progress has claimed (the header of its index, no videos yet): only a
# finished extraction writes index.json, so "index.json exists" means the folder is complete.
CLAIM_NAME = ".index.claim.json"
JOB_LOCK = ".extract.lock"  # held (flock) by the job writing the folder; its text names the job
VIDSITU_EVENTS = 5
VIDSITU_DIMS = (2048, 2304)
VIDSITU_STRIDE_S = 2.0
F32_MAX = float(np.finfo(np.float32).max)  # features are read as float32
NO_CTX = "no contextualized features (extract with --contextualizer)"
FEATURES_FORMAT = "moviessl-features"
INSTANCES_FORMAT = "moviessl-instances"
_FORMATS = {
    FEATURES_FORMAT: "event features (moviessl extract)",
    INSTANCES_FORMAT: "instance features (moviessl extract-instances)",
}


# where an index's features came from, not what they are (a moved checkpoint, data root or output
# folder, another film added to the folder): left out of a run's data digest
PROVENANCE_KEYS = frozenset({"backbone_path", "tracks", "path", "source", "source_size", "counts", "videos"})


def index_facts(node: Any) -> Any:
    """An index (or one video's entry) without :data:`PROVENANCE_KEYS`, at any depth."""
    if isinstance(node, dict):
        return {k: index_facts(v) for k, v in node.items() if k not in PROVENANCE_KEYS}
    return node


def warn_if_extended(root: Path, n: int) -> None:
    """A warning when an extraction job holds ``root`` while its ``n`` indexed videos are read: the
    index lists the last finished run's videos until the job ends."""
    holder = live_writer(root)
    if holder is not None:
        log.warning(
            "%s: being extended by an extraction job (%s); reading the %d videos its index lists, "
            "not those the job adds (read it again when the job has ended)",
            root,
            holder,
            n,
        )


def read_index(root: str | os.PathLike, unfinished_ok: bool = False) -> dict | None:
    """``root``'s index, None without one. A folder whose extraction was interrupted before any
    index.json is bad input, unless ``unfinished_ok`` (the extraction resuming it): then its claim."""
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        claim = Path(root) / CLAIM_NAME
        if not claim.is_file():
            return None
        if not unfinished_ok:
            holder = live_writer(root)
            if holder is not None:  # not a killed job's folder: a rerun of its command would be refused
                raise BadInputError(root, f"still being written by an extraction job ({holder}); wait for it to end")
            raise BadInputError(root, "its extraction did not finish (rerun the same extract command to resume it)")
        path = claim
    try:
        index = json.loads(path.read_text(encoding="utf-8-sig"))  # JSON is UTF-8, whatever the locale
    except (OSError, ValueError) as e:
        raise BadInputError(path, f"unreadable feature index ({type(e).__name__})") from None
    if not isinstance(index, dict) or not isinstance(index.get("videos"), dict):
        raise BadInputError(path, "not a moviessl feature index (no 'videos' mapping)")
    return index


def live_writer(root: str | os.PathLike) -> str | None:
    """Who holds ``root``'s job lock (``pid N on HOST, since ...``), None when no job does (a killed
    job's lock file locks nothing). Tried with a shared lock, let go at once: the extraction that
    takes the folder at that instant waits for it (``extract.job_lock``)."""
    stamp = lock_stamp(root)
    return None if stamp is None else stamp.split("\n", 1)[0]


def lock_stamp(root: str | os.PathLike) -> str | None:
    """The whole text of ``root``'s job lock while a job holds it (its first line names the holder,
    a second one its launch: ``extract.job_lock``); None when no job does."""
    import fcntl

    try:
        fd = os.open(Path(root) / JOB_LOCK, os.O_RDONLY)
    except OSError:  # no job writes the folder (the holder removes the file at its end)
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 512).decode("utf-8", "replace").strip() or "a job that is starting"
        except OSError:  # a filesystem without locks: nothing to tell
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_format(root: str | os.PathLike, index: dict, want: str, hint: str = "") -> None:
    """One line unless ``index`` (a folder's index or claim) is of the format ``want`` or names
    none (an index written by hand). Both extractions write ``index.json`` and journals of the same
    names: one run on the other's folder took the other's entries for its own and rewrote its index."""
    fmt = index.get("format")
    if fmt is not None and fmt != want:
        what = _FORMATS.get(str(fmt), f"an index of format {fmt!r}")
        raise BadInputError(root, f"folder holds {what}, not {_FORMATS[want]}{hint}")


def check_index(path: Path, index: dict) -> None:
    """One line for an index (hand-written, or damaged) whose video entries are not objects, or whose
    ``stride_s`` or ``dim`` is no positive number: ``.get`` of a null entry, ``float()`` of a null
    stride and ``int()`` of a list were tracebacks (the entries' ``num_events``: ``_indexed_events``)."""
    for vid, entry in index["videos"].items():
        if not isinstance(entry, dict):
            raise BadInputError(path, f"videos.{vid}: an entry is an object ({{status, num_events}}), not {entry!r}")
    stride, dim = index.get("stride_s", VIDSITU_STRIDE_S), index.get("dim")
    if isinstance(stride, bool) or not isinstance(stride, (int, float)) or not (0 < stride < math.inf):
        raise BadInputError(path, f"stride_s must be a positive number of seconds, got {stride!r}")
    whole = isinstance(dim, (int, float)) and not isinstance(dim, bool) and math.isfinite(dim) and dim == int(dim)
    if dim and not (whole and dim >= 1):  # none (0, null): read from the files
        raise BadInputError(path, f"dim must be a positive integer, got {dim!r}")


class FeatureStore:
    """Per-video event features of one folder.

    ``num_events="auto"``: with an index, each file must hold the number of events the index says;
    without one (VidSitu's released features) every file must be ``(5, D)``. ``None`` accepts any
    number of events. ``.load(id)`` returns float32 ``(num_events, D)``; ``.load(id, mmap=True)``
    a read-only memory map in the stored dtype (long LVU movies, windows read on demand).
    """

    def __init__(self, root: str | os.PathLike, num_events: int | str | None = "auto"):
        self.root = Path(root)
        if self.root.is_file():  # `--features emb/film_feats.npy` was told it was "not found", though it is there
            raise BadInputError(self.root, "is a file, not a feature folder: give the folder that holds it")
        if not self.root.is_dir():
            raise BadInputError(self.root, "feature folder not found")
        # events of each file whose header was read: missing() after load() of a folder without an
        # index (VidSitu's released features) opened every file a second time to count its rows
        self._rows: dict[str, int] = {}
        self.index = read_index(self.root)
        if self.index is not None:
            check_format(self.root, self.index, FEATURES_FORMAT)
            check_index(self.root / "index.json", self.index)
            self.ids = sorted(k for k, v in self.index["videos"].items() if v.get("status", "ok") == "ok")
            self.stride_s = float(self.index.get("stride_s", VIDSITU_STRIDE_S))
        else:
            self.ids = sorted(
                p.name[: -len(FEATS_SUFFIX)] for p in self.root.glob(f"*{FEATS_SUFFIX}") if not p.name.startswith(".")
            )
            self.stride_s = VIDSITU_STRIDE_S
        if not self.ids:
            raise BadInputError(self.root, f"no *{FEATS_SUFFIX} feature files (and no usable index.json)")
        if self.index is not None:
            warn_if_extended(self.root, len(self.ids))
        self._num_events = num_events
        self.vidsitu_layout = self.index is None
        if self.index is not None and self.index.get("dim"):
            self.dim = int(self.index["dim"])
        else:
            self.dim = self._common_width()
        if self.vidsitu_layout and num_events == "auto" and self.dim not in VIDSITU_DIMS:
            log.info("%s: feature dim %d is neither of VidSitu's (2048, 2304)", self.root, self.dim)
        self._ids_set = set(self.ids)
        self._finite: set[str] = set()  # ids whose file was checked for NaN/inf

    @property
    def backbone(self) -> str | None:
        """The hash of the backbone the features come from (``index.json``); None for a folder
        without an index (VidSitu's released features, or a copy of extracted ones without it)."""
        made_by = (self.index or {}).get("backbone")
        return str(made_by) if made_by else None

    def _common_width(self, sample: int = 15) -> int:
        """D of an index-less folder: the most common width among the first ``sample`` readable
        files, so that neither a damaged file nor one odd file sorted first rejects all the others
        (each odd file is rejected when it is loaded)."""
        widths: list[int] = []
        first_err = None
        for vid in self.ids:
            try:
                widths.append(int(self._open(vid).shape[1]))
            except BadInputError as e:
                first_err = first_err or e
                continue
            if len(widths) == sample:
                break
        if not widths:
            raise BadInputError(self.root, f"no readable feature file (first problem: {first_err})")
        dim = max(widths, key=widths.count)  # ties: the first file's
        if len(set(widths)) > 1:
            log.warning("%s: feature files of widths %s; reading the %d-d ones", self.root, sorted(set(widths)), dim)
        return dim

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, vid: str) -> bool:
        return vid in self._ids_set

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def path(self, vid: str) -> Path:
        return self.root / f"{vid}{FEATS_SUFFIX}"

    def ctx_path(self, vid: str) -> Path:
        return self.root / f"{vid}{CTX_SUFFIX}"

    def expected_events(self, vid: str) -> int | None:
        if self._num_events is None:
            return None
        if self._num_events != "auto":
            return int(self._num_events)
        if self.index is None:
            return VIDSITU_EVENTS
        return self._indexed_events(vid)

    def _indexed_events(self, vid: str) -> int | None:
        """The index's ``num_events`` of ``vid`` (None where it gives none: the file's header counts)."""
        n = self.index["videos"].get(vid, {}).get("num_events") if self.index is not None else None
        if n is None:
            return None
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n != int(n) or n < 1:
            # a hand-written entry: an int() traceback (or a KeyError where the key was absent) before
            raise BadInputError(self.root / "index.json", f"{vid}: num_events must be a positive integer, got {n!r}")
        return int(n)

    def num_events(self, vid: str) -> int:
        """Number of events without reading the array (index or .npy header)."""
        n = self._indexed_events(vid) if self._num_events == "auto" else None
        if n is None:
            n = self._rows.get(vid)
        return n if n is not None else int(self._open(vid).shape[0])

    def _open(self, vid: str) -> np.ndarray:
        path = self.path(vid)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise BadInputError(path, "feature file not found") from None
        except (OSError, ValueError, EOFError) as e:
            # only a failed load reads the first bytes again, to say what the file is instead of numpy's guess
            magic = _first_bytes(path, 6)
            if magic is not None and magic != b"\x93NUMPY":
                raise BadInputError(path, "empty feature file" if not magic else "not a .npy file") from None
            raise BadInputError(path, f"unreadable feature file ({type(e).__name__}: {e})") from None
        if arr.ndim != 2 or arr.shape[0] < 1:
            raise BadInputError(path, f"expected a (num_events, D) array, got shape {tuple(arr.shape)}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise BadInputError(path, f"expected float features, got {arr.dtype}")
        self._rows[vid] = int(arr.shape[0])
        return arr

    def load(self, vid: str, mmap: bool = False) -> np.ndarray:
        arr = self._open(vid)
        n = self.expected_events(vid)
        if arr.shape[1] != self.dim or (n is not None and arr.shape[0] != n):
            want = f"({n if n is not None else 'num_events'}, {self.dim})"
            raise BadInputError(self.path(vid), f"expected shape {want}, got {tuple(arr.shape)}")
        if vid not in self._finite:
            # one NaN or inf in a training feature can turn every weight into NaN: refuse the file (batch
            # jobs skip and count it). Checked in blocks, once per file, so memory maps stay cheap. A
            # float64 file's value beyond float32's range is finite here and inf once read as float32.
            wide = arr.dtype.itemsize > 4
            for a in range(0, arr.shape[0], 4096):
                block = arr[a : a + 4096]
                bad = ~np.isfinite(block)
                if wide:
                    bad |= np.abs(block) > F32_MAX
                if bad.any():
                    r, c = np.argwhere(bad)[0]
                    what = "NaN/inf, or beyond float32's range" if wide else "NaN/inf"
                    raise BadInputError(
                        self.path(vid),
                        f"{int(bad.sum())} non-finite value(s) ({what}), first at event {a + int(r)}, dim {int(c)}",
                    )
            self._finite.add(vid)
        if mmap:
            return arr
        # a copy, never a view of the map: a view keeps the map and its file descriptor open for as
        # long as the array lives, and a task holding every segment's features would exhaust both
        return np.array(arr, dtype=np.float32, copy=True)

    def missing(self, vid: str) -> np.ndarray:
        """Boolean ``(num_events,)``: events in a damaged stretch of the video (their rows are zeros;
        ``index.json`` lists them as ``missing: [[start, stop), ...]``). All False without an index."""
        mask = np.zeros(self.num_events(vid), bool)
        if self.index is not None:
            runs = self.index["videos"].get(vid, {}).get("missing") or []
            try:  # a hand-edited entry: one line naming the index, not a traceback
                for a, b in runs:
                    if not 0 <= int(a) <= int(b) <= len(mask) or isinstance(a, bool) or isinstance(b, bool):
                        raise ValueError
                    mask[int(a) : int(b)] = True
            except (TypeError, ValueError):
                within = f"within its {len(mask)} events, got {runs!r}"
                raise BadInputError(
                    self.root / INDEX_NAME, f"{vid}: 'missing' must list [start, stop) event ranges {within}"
                ) from None
        return mask

    def load_ctx(self, vid: str) -> np.ndarray:
        """TxE outputs, float32 ``(num_events, dim)``: one row per event of the video's features as
        they are now (outputs of features since re-extracted, or of another width than the index's
        TxE, are refused), finite, else one line naming the file."""
        path = self.ctx_path(vid)
        if not path.is_file():
            raise BadInputError(path, NO_CTX)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise BadInputError(path, f"unreadable TxE outputs ({type(e).__name__}: {e})") from None
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            raise BadInputError(path, f"expected a float (num_events, dim) array, got {arr.dtype} {tuple(arr.shape)}")
        n = self.num_events(vid)
        if arr.shape[0] != n:
            raise BadInputError(
                path,
                f"{arr.shape[0]} rows for the {n} events of {self.path(vid).name}: outputs of other features "
                "(delete it and rerun extract with --contextualizer)",
            )
        width = ((self.index or {}).get("contextualizer") or {}).get("dim")
        if width is not None and arr.shape[1] != int(width):
            raise BadInputError(path, f"{arr.shape[1]}-d outputs, the index's contextualizer gives {width}-d")
        out = np.array(arr, dtype=np.float32, copy=True)  # a copy: no map (and descriptor) kept open
        bad = ~np.isfinite(out)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise BadInputError(
                path, f"{int(bad.sum())} non-finite value(s) (NaN/inf), first at event {int(r)}, dim {int(c)}"
            )
        return out

    def info(self, vid: str) -> dict:
        if self.index is not None:
            return dict(self.index["videos"].get(vid, {}))
        return {"num_events": VIDSITU_EVENTS, "duration_s": VIDSITU_EVENTS * VIDSITU_STRIDE_S, "status": "ok"}

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r}, videos={len(self)}, dim={self.dim}, stride_s={self.stride_s})"


def _first_bytes(path: Path, n: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return None
