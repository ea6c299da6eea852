"""Reading pickles someone else made (LVU's ``instance_meta_*.pkl``, the object arrays inside its
``features/*.npz``, prediction files) without letting them run code: only builtins containers,
numbers, strings and numpy arrays / scalars / dtypes may be rebuilt."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from ..errors import BadInputError

_ALLOWED = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    # protocols 0-2 write bytes (a numpy array's buffer) as _codecs.encode(text, "latin1"): a codec, no code
    ("_codecs", "encode"),
    # protocol 5 (pickle.HIGHEST_PROTOCOL; Python 3.14's default) writes a contiguous array as
    # _frombuffer(buffer, dtype, shape, order): np.frombuffer and a reshape, which refuse object dtypes
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class SafeUnpickler(pickle.Unpickler):
    refusal = "only containers, numbers and arrays"  # what the error says a file of this kind holds

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} ({self.refusal})")


# what a malformed or hostile pickle raises while being read (safe_load turns the errors of a
# corrupted length field into UnpicklingError, so this list needs no MemoryError)
UNPICKLE_ERRORS = (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError)

# A corrupted length field (one flipped byte of a FRAME, BINBYTES8 or BINUNICODE8 length) makes the
# C unpickler ask for an absurd buffer: MemoryError, OverflowError ("FRAME length exceeds ...") or
# SystemError. Caught around the load call only, so that a real shortage elsewhere stays one.
_LENGTH_ERRORS = (MemoryError, OverflowError, SystemError)


def safe_load(f: BinaryIO, unpickler: type[pickle.Unpickler] = SafeUnpickler) -> Any:
    """Unpickle ``f`` with ``unpickler`` (a restricted one); a length field that asks for more
    memory than there is becomes a ``pickle.UnpicklingError``, like any other corruption."""
    try:
        return unpickler(f).load()
    except _LENGTH_ERRORS as e:
        # a MemoryError carries no text; a legitimate file too large for this machine raises it too
        detail = str(e) or "a length field asks for more memory than is available, or the file is too large to load"
        raise pickle.UnpicklingError(f"corrupted pickle ({type(e).__name__}: {detail})") from None


def safe_load_npz_object(path, key: str = "a") -> Any:
    """The object stored under ``key`` of an ``.npz`` written by ``np.savez(path, a=obj)`` with a
    pickled (object-dtype) array, e.g. LVU's ``{sec: {box: feature}}`` dicts. Plain numeric
    arrays are returned as arrays. Raises ``ValueError`` / ``KeyError`` / unpickling errors."""
    with zipfile.ZipFile(path) as z:
        name = f"{key}.npy"
        if name not in z.namelist():
            raise KeyError(f"no array '{key}' (has {', '.join(n.removesuffix('.npy') for n in z.namelist())})")
        data = z.read(name)
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = reader(f)
    if not dtype.hasobject:
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)
    arr = safe_load(f)
    arr = np.asarray(arr, dtype=object).reshape(shape)
    return arr.item() if arr.shape == () else arr


def load_json_or_pickle(
    path: Path,
    what: str,
    *,
    unpickler: type[pickle.Unpickler] = SafeUnpickler,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """A file a user hands in that is JSON when named ``*.json`` and a pickle otherwise (VidSitu's
    submissions, LVU prediction files), read without running code. Every fault is one
    :class:`~moviessl.errors.BadInputError` naming ``path``: ``invalid JSON: ...`` for a ``.json``
    file, ``not a readable {what} pickle: ...`` for any other.

    ``ValueError`` counts as the file's fault on both sides: JSON raises it for an integer past
    Python's 4300-digit limit (and ``object_pairs_hook`` may raise it to refuse a file), a corrupt
    pickle for a bad opcode argument. A ``UnicodeDecodeError`` or ``RecursionError`` is reported by the
    file's kind, not as JSON: a pickle's string can be bad UTF-8 and its nesting too deep as well."""
    is_json = path.suffix.lower() == ".json"
    try:
        if is_json:
            return json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=object_pairs_hook)
        with open(path, "rb") as f:
            return safe_load(f, unpickler)
    except OSError as e:
        raise BadInputError(path, f"cannot be read ({e})") from None
    except (ValueError, RecursionError, *UNPICKLE_ERRORS) as e:
        raise BadInputError(path, f"invalid JSON: {e}" if is_json else f"not a readable {what} pickle: {e}") from None
