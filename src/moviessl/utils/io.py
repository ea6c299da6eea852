"""Atomic file writes: a reader never sees a half-written file, and a killed job loses nothing
that was already finished (the temporary file is renamed into place only when complete)."""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import math
import os
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

T = TypeVar("T")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide shared features


def _open_fd(fd: int, mode: str, path: Path):
    """The one place a written file is opened (``path``: the file it becomes); tests replace it to
    simulate a full disk."""
    return os.fdopen(fd, mode)


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None], clobber: bool = True) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path`` and rename it into place.

    ``clobber=False``: an existing ``path`` is kept (for files whose name says what they hold, which
    several processes may write at once: no reader of the first one sees it replaced, which over NFS
    can fail a read in progress). Any failure (a full disk included) removes the temporary file and
    leaves ``path`` as it was."""
    path = asked = Path(path)
    if path.is_symlink():
        # written where the link points, as open() writes: renaming over the link replaced it with
        # a file on the link's disk and left the file it pointed to as it was
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = lock = None
    try:
        # inside the try: a folder that refuses the temp file (read-only, out of inodes or quota) is
        # an error writing ``path``, not one naming a hidden file the user never asked for
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        lock = _hold(fd)
        with _open_fd(fd, "wb", path) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_of(path))
        if clobber or not _link(tmp, path):
            os.replace(tmp, path)
        else:
            os.unlink(tmp)
    except BaseException as e:
        try:
            if tmp is not None:
                os.unlink(tmp)
        except FileNotFoundError:
            pass
        err = _os_error_in(e)
        if err is not None:  # name the file the user asked for, not the temp file
            raise OSError(err.errno, f"cannot write ({err.strerror}); nothing was changed", str(asked)) from None
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return asked


def _hold(fd: int) -> int | None:
    """An exclusive ``flock`` on a temp file while it is written and renamed, held through a
    duplicate of ``fd`` (the writer closes ``fd`` before the rename): :func:`sweep_temp_files` tells
    a live writer's file by it. None where the filesystem has no locks (or answers none at once: a
    write never waits on a lock manager)."""
    import fcntl

    try:
        lock = os.dup(fd)
    except OSError:
        return None
    for _ in range(50):  # a sweep's look at the new file holds it for a moment
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break
    os.close(lock)
    return None


# A temp file is a dead writer's when no writer holds its lock and it has not changed for this long:
# a live writer adds to its file chunk by chunk, and on a filesystem whose locks do not reach other
# machines (BeeGFS by default, Lustre's localflock, NFS with local_lock) an unlocked file may still
# be another node's at work. A killed job's leftover goes at a later run.
STALE_TEMP_S = 600.0
# Where the filesystem has no locks at all, only age tells.
_UNLOCKABLE_STALE_S = 6 * 3600.0


def sweep_temp_files(paths: Iterable[str | os.PathLike]) -> int:
    """Remove the temporary files of :func:`atomic_write` among ``paths`` whose writer is gone (a
    killed job's): unlocked and unchanged for :data:`STALE_TEMP_S`; a file that a live writer holds
    (another job's, another rank's) is kept. For folders that several jobs write at once (a shared
    cache, checkpoints every rank repairs). Returns how many were removed."""
    import fcntl

    removed = 0
    for p in paths:
        try:
            fd = os.open(p, os.O_RDWR)  # a write lock on NFS needs a file open for writing
        except OSError:  # gone meanwhile, or another user's
            continue
        try:
            age = time.time() - os.fstat(fd).st_mtime
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                dead = age > STALE_TEMP_S
            except BlockingIOError:  # its writer is still at work
                dead = False
            except OSError:  # no locks on this filesystem
                dead = age > _UNLOCKABLE_STALE_S
            if dead:
                os.unlink(p)
                removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _mode_of(path: Path) -> int:
    """The permissions a write in place would leave: an existing file's own (a result made private
    with chmod 600 stays private), else what ``open()`` gives a new file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return _FILE_MODE


def _link(tmp: str, path: Path) -> bool:
    """Publish ``tmp`` as ``path`` unless it exists (True: done, or already there); False where the
    filesystem has no hard links."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:
        return False
    return True


def _os_error_in(e: BaseException | None) -> OSError | None:
    """The operating-system error behind ``e``, if any: writers such as ``torch.save`` turn a full
    disk into their own error (a RuntimeError from the zip writer) with the OSError as its context."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` as UTF-8. A non-ASCII file name met under a non-UTF-8 locale (``LC_ALL=C`` with
    ``PYTHONUTF8=0``) is held as surrogate escapes (PEP 383) and written back as the name's own
    bytes: a path in a summary or report ended a finished job in a UnicodeEncodeError."""
    return atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def display_text(text: str) -> str:
    """``text`` as the characters a UTF-8 terminal shows for it: a non-ASCII file name met under a
    non-UTF-8 locale (``LC_ALL=C`` with ``PYTHONUTF8=0``) is held as surrogate escapes of its bytes
    (PEP 383), which a library that draws or stores text refuses (matplotlib's font layer raised a
    TypeError on a run named after such a folder); the bytes are read as UTF-8 (a byte that is not
    becomes U+FFFD). Any other text is returned as it is."""
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def fs_text(text: str) -> str:
    """A file name read as UTF-8 text from a file (a clip list's line) in the form this process's
    file calls take: its UTF-8 bytes decoded as :func:`os.fsdecode` decodes a name. The same text
    under a UTF-8 locale; under a non-UTF-8 one (``LC_ALL=C`` with ``PYTHONUTF8=0``: ASCII) the
    surrogate escapes of those bytes (PEP 383), where the text itself made every file call raise
    UnicodeEncodeError."""
    return os.fsdecode(text.encode("utf-8", "surrogateescape"))


def _escape_unencodable(e: UnicodeError) -> tuple[str | bytes, int]:
    """An encoding error handler for stdout: a surrogate escape (a non-ASCII file name met under a
    non-UTF-8 locale, PEP 383) goes out as the name's own byte, as Python's ``surrogateescape``
    writes it; any other character the locale cannot write as its ``\\xNN`` / ``\\uNNNN`` escape, as
    Python writes to stderr."""
    if not isinstance(e, UnicodeEncodeError):
        raise e
    code = ord(e.object[e.start])
    if 0xDC80 <= code <= 0xDCFF:
        return bytes([code - 0xDC00]), e.start + 1
    return codecs.backslashreplace_errors(UnicodeEncodeError(e.encoding, e.object, e.start, e.start + 1, e.reason))


codecs.register_error("moviessl.stdout", _escape_unencodable)  # by name: reconfigure takes a name


def stdout_writes_any_text() -> str | None:
    """Under a locale whose encoding is not UTF-8 (``LC_ALL=C`` with ``PYTHONUTF8=0``: ASCII) stdout
    refused the ``±`` of a summary table, the ``§`` of a help text or a phrase's accent: ``moviessl
    --help`` and ``finetune --seeds 2`` (after every seed had trained) ended in a UnicodeEncodeError
    traceback. Such characters are escaped instead; a UTF-8 stdout is left as it is. Returns the
    error handler it replaced (None: left as it is)."""
    out = sys.stdout
    enc = getattr(out, "encoding", None)
    if not enc or not callable(getattr(out, "reconfigure", None)):
        return None
    try:
        if codecs.lookup(enc).name in ("utf-8", "utf-16", "utf-32"):
            return None
        before = out.errors
        out.reconfigure(errors="moviessl.stdout")
    except (LookupError, ValueError, OSError, AttributeError):  # an odd stream: left as it is
        return None
    return before


@contextlib.contextmanager
def stdout_taking_any_text():
    """:func:`stdout_writes_any_text` inside, the caller's stdout given back as it was after: a
    command called from Python (``cli.main`` in a notebook or a script) left the caller's own prints
    escaped for good where they raised."""
    out = sys.stdout
    before = stdout_writes_any_text()
    try:
        yield
    finally:
        if before is not None and getattr(out, "errors", None) == "moviessl.stdout":
            with contextlib.suppress(ValueError, OSError, AttributeError):
                out.reconfigure(errors=before)


def json_ready(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) as ``None``: JSON has no such number, and the
    words Python's json writes for them (``NaN``, ``Infinity``) make jq, JavaScript's JSON.parse
    and most other readers refuse the whole file. What a null stands for is said beside it where it
    matters (a summary's ``n`` 0 and ``n_nonfinite``, a claim's ``why``); :func:`json_float` reads
    a number written so back as NaN. The same rule as ``headroom.json``'s rows without events."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def json_dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_ready`'s ``obj``, strict JSON (``allow_nan=False``: a non-finite
    number that got past the mapping, e.g. a dict key, is an error, not a file others cannot read)."""
    return json.dumps(json_ready(obj), allow_nan=False, **kwargs)


def json_float(v: Any) -> float:
    """A number read back from a file :func:`json_dumps` wrote: ``None`` (a non-finite value) is NaN,
    so a reader counts it as the non-finite value it was (``eval.stats.summarize``'s ``n_nonfinite``)."""
    return math.nan if v is None else float(v)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json_dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray, clobber: bool = True) -> Path:
    return atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False), clobber)


def npy_header(shape: tuple[int, ...], dtype=np.uint8) -> bytes:
    """The ``.npy`` (format 1.0) header of a C-order array; numpy pads it to a multiple of 64 bytes."""
    buf = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def write_npy_chunks(f: io.BufferedIOBase, chunks: Iterable[np.ndarray], n: int) -> tuple[int, ...]:
    """Write ``chunks`` (arrays of one dtype and row shape, ``n`` rows in all) to ``f`` as one
    ``.npy``, as they come (a film's frames need not fit in RAM); returns the row shape."""
    row, done = None, 0
    for chunk in chunks:
        chunk = np.ascontiguousarray(chunk)
        if row is None:
            row = chunk.shape[1:]
            f.write(npy_header((n, *row), chunk.dtype))
        if chunk.shape[1:] != row or done + len(chunk) > n:
            raise ValueError(f"a chunk of shape {chunk.shape} after {done} of {n} rows of {row}")
        f.write(chunk.tobytes())
        done += len(chunk)
    if done != n or row is None:
        raise ValueError(f"{done} rows written, {n} announced")
    return tuple(int(v) for v in row)


class _SourceFailed(Exception):
    pass


def atomic_write_from(
    path: str | os.PathLike, source: Iterable, write: Callable[[io.BufferedWriter, Iterator], T]
) -> T:
    """:func:`atomic_write` of what ``write(f, items)`` writes as it consumes ``source`` (e.g. frames
    decoded a chunk at a time); returns what ``write`` returns. An error raised by ``source`` (a video
    that cannot be decoded) propagates as itself, never as an error writing ``path``."""
    failure: list[BaseException] = []

    def guarded():
        it = iter(source)
        try:
            while True:
                try:
                    item = next(it)
                except StopIteration:
                    return
                except BaseException as e:
                    failure.append(e)
                    break
                yield item
        finally:  # a failed write: the source (an open video, a chunk of frames) is let go now
            getattr(it, "close", lambda: None)()
        raise _SourceFailed

    out, items = [], guarded()

    def write_all(f):
        out.append(write(f, items))
        if failure:  # ``write`` caught the source's error and returned: what it wrote is partial, never renamed
            raise _SourceFailed

    try:
        atomic_write(path, write_all)
    except BaseException:
        if not failure:  # the write's own error (a full disk: an OSError naming ``path``)
            raise
    finally:
        items.close()
    if failure:
        raise failure[0]
    return out[0]


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one record to a journal, durably. Each record starts on a fresh line, so the torn last
    line of a killed job (or of a full disk) never damages the next one; readers skip torn lines."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)
    try:
        with _open_fd(fd, "ab", Path(path)) as f:
            f.write(("\n" + line + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.filename is not None:
            raise
        # a write's error (a full disk) names no file: the CLI's line would not say which journal
        raise OSError(e.errno, f"cannot append ({e.strerror or e})", os.fspath(path)) from None


_MADE: list[list[Path]] = []  # per command running (removing_empty_out_dirs): the folders ensure_out_dir made


@contextlib.contextmanager
def removing_empty_out_dirs() -> Iterator[Callable[[], None]]:
    """For the block (a command, ``cli.main``): note the folders :func:`ensure_out_dir` creates; the
    callable it yields removes those still empty, the deepest first. A command refused on bad input
    after it had made its ``--out`` (every command makes it first, for its lock) left the empty folder
    behind, one per mistyped run; a folder that existed before, or that holds anything, is never
    removed (``rmdir`` removes only an empty folder)."""
    made: list[Path] = []
    _MADE.append(made)

    def remove() -> None:
        for p in reversed(made):
            try:
                p.rmdir()
            except OSError:  # not empty (another process's files too), or gone
                pass
        made.clear()

    try:
        yield remove
    finally:
        # by identity: list.remove compares by value, and two empty records are equal (a nested
        # block's exit took its caller's record off, whose later folders then went unremoved)
        del _MADE[next(i for i, m in enumerate(_MADE) if m is made)]


def ensure_out_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` (and parents) and check that files can be written in it; one-line
    :class:`~moviessl.errors.BadInputError` naming it otherwise."""
    from ..errors import BadInputError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInputError(path, f"{what} is an existing file, not a folder")
    missing, up = [], path.absolute()
    while not os.path.lexists(up) and up != up.parent:  # (lexists: a dangling link is no folder to make)
        missing.append(up)
        up = up.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(path, f"cannot create {what} ({e.strerror or e})") from None
    if _MADE:
        _MADE[-1].extend(reversed(missing))
    try:
        fd, probe = tempfile.mkstemp(prefix=".moviessl-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BadInputError(path, f"{what} is not writable ({e.strerror or e})") from None
    return path


def ensure_out_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """The folder of an output file exists (or is created) and is writable."""
    path = Path(path)
    if path.is_dir():
        from ..errors import BadInputError

        raise BadInputError(path, f"{what} is an existing folder")
    ensure_out_dir(path.parent if str(path.parent) else ".", f"folder of the {what}")
    return path
