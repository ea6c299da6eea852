"""LVU's released instance layout, tiny, for the tests that run ``pretrain-ot`` through its readers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

BOXES = ("0.1,0.1,0.5,0.5", "0.5,0.1,0.9,0.7")


def write_ot_release(feats: Path, meta: Path) -> None:
    """``feats/<vid>.npz`` (second -> box -> 8-d feature) and the ``meta`` pkl (second -> box ->
    [action, track]) of two 70-s films, two boxes a second: enough span pairs to train a step."""
    rng = np.random.default_rng(0)
    feats.mkdir(parents=True, exist_ok=True)
    films = {v: {s: {b: [s // 10, i] for i, b in enumerate(BOXES)} for s in range(70)} for v in ("a", "b")}
    for v, secs in films.items():
        np.savez(feats / f"{v}.npz", a={s: {b: rng.normal(size=8).astype("f4") for b in bs} for s, bs in secs.items()})
    meta.write_bytes(pickle.dumps(films))
