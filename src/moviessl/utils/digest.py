"""What a finished run was computed from, as a short hash that a rerun compares before reusing it.

A run is reused only when its settings *and its data* are the same: annotation and label files
edited in place, features re-extracted into the same folder or another instance-metadata file must
train again. Small inputs (annotations, labels, metadata, feature indexes, features held in RAM)
are hashed by content; feature files read on demand by name and size, not by reading gigabytes
again. Modification times and inodes are left out on purpose: every node of a multi-node job may
hold its own copy of a dataset, and all ranks must take the same reuse decision.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch


def content_digest(*parts: Any) -> str:
    """Short sha256 of ``parts``: arrays and tensors by dtype, shape and bytes, :class:`~pathlib.Path`
    objects by their file's contents (``None`` where there is no file), mappings, sequences and sets
    item by item, numbers, strings and ``None`` by their JSON form; anything else is a TypeError."""
    h = hashlib.sha256()
    _feed(h, parts)
    return h.hexdigest()[:12]


def _feed(h, x: Any) -> None:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        h.update(f"a{x.dtype.str}{x.shape}".encode())
        h.update(x.reshape(-1).view(np.uint8) if x.size else b"")
    elif isinstance(x, Path):
        h.update(b"f")
        try:
            with open(x, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except FileNotFoundError:
            h.update(b"-")
    elif isinstance(x, dict):
        h.update(f"d{len(x)}".encode())
        for k in sorted(x, key=str):
            _feed(h, str(k))
            _feed(h, x[k])
    elif isinstance(x, (list, tuple)):
        h.update(f"l{len(x)}".encode())
        for item in x:
            _feed(h, item)
    elif isinstance(x, (set, frozenset)):
        _feed(h, sorted(x, key=repr))
    elif x is None or isinstance(x, (bool, int, float, str, np.generic)):
        s = json.dumps(x.item() if isinstance(x, np.generic) else x).encode()
        h.update(f"s{len(s)}:".encode() + s)
    else:
        # a repr may hold an address: the digest would differ in every process (and between ranks)
        raise TypeError(f"content_digest: cannot hash a {type(x).__name__} by content")


def name_size(path: str | os.PathLike) -> tuple[str, int]:
    """A feature file's stand-in in a digest: its name and size (-1 where it cannot be read)."""
    p = Path(path)
    try:
        return p.name, p.stat().st_size
    except OSError:
        return p.name, -1


def names_sizes(paths: Iterable[str | os.PathLike]) -> list[tuple[str, int]]:
    return [name_size(p) for p in paths]
