"""Loading and checking VidSitu submission files (VidSitu's ``docs/*_eg.pkl`` format, ``TheShadow29/VidSitu``).

A submission is a list of dicts, one per segment, keyed by ``ann_idx`` (the position in the split
file): VidSitu's pickle, or the same structure as ``.json``. Duplicated ``ann_idx`` keep their
first entry (as the official evaluator); every ``ann_idx`` of the split must be present. Each kept
entry is validated for its task and any problem becomes one :class:`BadInputError` line naming the
entry.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np

from ..data.vidsitu import EVENTS, RELATION_IDS, ROLES
from ..errors import BadInputError
from ..utils.safe_pickle import SafeUnpickler, load_json_or_pickle

TASK_ALIASES = {
    "verb": "verb",
    "vb": "verb",
    "srl": "srl",
    "vb_arg": "srl",
    "relation": "relation",
    "evrel": "relation",
}
TASK_KEY = {"verb": "pred_vbs_ev", "srl": "vb_output", "relation": "pred_evrels_ev"}


class _SafeUnpickler(SafeUnpickler):
    """Submissions hold only lists, dicts, strings and numbers (numpy scalars and arrays from a
    missed ``.tolist()`` included); the shared restricted unpickler keeps a pickle from running code
    (its own list here lacked what protocols 0-2 and 5 write numpy values with)."""

    refusal = "submissions hold only lists, dicts, strings and numbers"


def load_submission(path: str | Path) -> list[dict]:
    """Read a submission file: ``.json`` as JSON, anything else as a (restricted) pickle."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "submission file not found")
    data = load_json_or_pickle(path, "submission", unpickler=_SafeUnpickler)
    if not isinstance(data, list):
        raise BadInputError(path, f"a submission is a list of dicts (one per segment), got {type(data).__name__}")
    return data


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _listed(x: Any) -> Any:
    """A numpy array as the nested list it holds (a model's top-k indexed into a vocabulary array);
    VidSitu's evaluator only indexes, slices and iterates these, so it scores arrays as lists."""
    return x.tolist() if isinstance(x, np.ndarray) else x


def _str_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(s, str) for s in x)


def index_submission(preds: list, task: str, num_segments: int, source: str | None = None) -> dict[int, Any]:
    """``ann_idx -> task payload`` (``pred_vbs_ev`` / ``vb_output`` / ``pred_evrels_ev``), first
    occurrence kept; checks that exactly the split's ``ann_idx`` 0..num_segments-1 are covered."""
    task = TASK_ALIASES[task]
    key = TASK_KEY[task]
    src = source or "submission"
    if not isinstance(preds, (list, tuple)):
        raise BadInputError(src, f"a submission is a list of dicts, got {type(preds).__name__}")
    out: dict[int, Any] = {}
    for i, p in enumerate(preds):
        if not isinstance(p, dict):
            raise BadInputError(src, f"entry {i}: expected a dict, got {type(p).__name__}")
        if "ann_idx" not in p:
            raise BadInputError(src, f"entry {i}: no 'ann_idx'")
        a = p["ann_idx"]
        if not _is_int(a):
            raise BadInputError(src, f"entry {i}: ann_idx must be an integer, got {a!r}")
        a = int(a)
        if not 0 <= a < num_segments:
            raise BadInputError(src, f"entry {i}: ann_idx {a} is outside the split (0..{num_segments - 1})")
        if a in out:
            continue  # duplicates keep the first occurrence, as the official evaluator
        if key not in p:
            raise BadInputError(src, f"entry {i} (ann_idx {a}): no '{key}' (is this a {task} submission?)")
        out[a] = p[key]
    if len(out) != num_segments:
        missing = [a for a in range(num_segments) if a not in out]
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise BadInputError(
            src, f"missing ann_idx {shown} ({len(missing)} of {num_segments} segments have no prediction)"
        )
    return out


def check_verb(payload: Any, where: str, src: str) -> list[list[str]]:
    """``pred_vbs_ev``: 5 lists (Ev1..Ev5) of ranked verb-id strings (only the first 5 count)."""
    payload = _listed(payload)
    if isinstance(payload, (list, tuple)):
        payload = [_listed(lst) for lst in payload]
    if not isinstance(payload, (list, tuple)) or len(payload) != len(EVENTS):
        n = len(payload) if isinstance(payload, (list, tuple)) else type(payload).__name__
        raise BadInputError(src, f"{where}: pred_vbs_ev must hold 5 lists (Ev1..Ev5), got {n}")
    for k, lst in enumerate(payload):
        if not _str_list(lst):
            raise BadInputError(src, f"{where}: pred_vbs_ev[{k}] (Ev{k + 1}) must be a list of verb-id strings")
    return [list(lst) for lst in payload]


def check_srl(payload: Any, where: str, src: str) -> dict:
    """``vb_output``: ``{EvK: {"vb_id": ..., short_role: phrase}}``. A missing role scores "";
    if Ev1 is given all five events must be (the official coreference scorer indexes each)."""
    if not isinstance(payload, dict):
        raise BadInputError(src, f"{where}: vb_output must be a dict of events, got {type(payload).__name__}")
    for ev, roles in payload.items():
        if ev not in EVENTS:
            raise BadInputError(src, f"{where}: unknown event {ev!r} in vb_output (expected Ev1..Ev5)")
        if not isinstance(roles, dict):
            raise BadInputError(src, f"{where} {ev}: expected a dict of roles, got {type(roles).__name__}")
        if "Args" in roles:
            raise BadInputError(
                src,
                f"{where} {ev}: roles go directly under the event with short names (Arg0, AScn, ...), not under 'Args'",
            )
        for r, phrase in roles.items():
            if r in ROLES and not isinstance(phrase, str):
                raise BadInputError(src, f"{where} {ev}.{r}: phrase must be a string, got {type(phrase).__name__}")
    if "Ev1" in payload:
        missing = [ev for ev in EVENTS if ev not in payload]
        if missing:
            raise BadInputError(
                src, f"{where}: vb_output lacks {', '.join(missing)} (give all of Ev1..Ev5; an empty dict is fine)"
            )
    return payload


def check_relation(payload: Any, where: str, src: str, n_gt: int) -> list[list[str]]:
    """``pred_evrels_ev``: 4 lists (pairs Ev1-3, Ev2-3, Ev3-4, Ev3-5), each with one label string
    per GT annotation (``n_gt``, 3 on val)."""
    payload = _listed(payload)
    if isinstance(payload, (list, tuple)):
        payload = [_listed(lst) for lst in payload]
    if not isinstance(payload, (list, tuple)) or len(payload) != 4:
        n = len(payload) if isinstance(payload, (list, tuple)) else type(payload).__name__
        raise BadInputError(
            src, f"{where}: pred_evrels_ev must hold 4 lists (pairs Ev1-3, Ev2-3, Ev3-4, Ev3-5), got {n}"
        )
    names = ("Ev1-Ev3", "Ev2-Ev3", "Ev3-Ev4", "Ev3-Ev5")
    for k, lst in enumerate(payload):
        if not isinstance(lst, (list, tuple)):
            raise BadInputError(src, f"{where}: pred_evrels_ev[{k}] ({names[k]}) must be a list of labels")
        if len(lst) != n_gt:
            raise BadInputError(
                src,
                f"{where}: pred_evrels_ev[{k}] ({names[k]}) has {len(lst)} labels, "
                f"expected {n_gt} (one per GT annotation)",
            )
        for lab in lst:
            if not isinstance(lab, str) or lab not in RELATION_IDS:
                raise BadInputError(
                    src,
                    f"{where}: pred_evrels_ev[{k}] ({names[k]}) has label {lab!r}; "
                    f"expected one of {list(RELATION_IDS)}",
                )
    return [list(lst) for lst in payload]
