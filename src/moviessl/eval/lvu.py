"""LVU's evaluation of the nine long-form tasks (Wu & Krähenbühl, CVPR 2021; ``chaoyuaw/lvu``
``src/run.py``, ``evaluate``), on per-span model outputs.

A prediction file maps ``youtube_id -> [output of span 1, output of span 2, ...]`` (the spans
ending at every second of the video): for a classification task each output is the vector of the
task's class probabilities (head size: 4/5/6/10/10/9/4, class ids as given), for a regression task
one number on LVU's centred scale. JSON, or a pickle of the same structure (read with a restricted
unpickler).

- classification: the span probabilities are **summed** per video; the argmax (first on ties, as
  numpy's) against the label gives top-1 accuracy over videos, in percent;
- regression: the **mean** of the span outputs is the video's prediction; the squared error
  against the centred label, averaged over videos, is the MSE.

Scored videos are those in the file (LVU videos go missing); an id not in the split, a wrong
vector length, an empty span list, a non-finite value or a classification row that is not a
probability vector (a negative entry, or a sum off 1 by more than 1e-2: logits) is one
``BadInputError`` line.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..data.lvu import LVU_TASKS, is_regression, read_labels
from ..errors import BadInputError
from ..utils.safe_pickle import load_json_or_pickle

log = logging.getLogger("moviessl.eval")


def metric_name(task: str) -> str:
    """``mse`` for the regression tasks, ``top1`` (percent) for the others."""
    return "mse" if is_regression(task) else "top1"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys: a video written in two chunks would be scored on one
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"{k!r} is listed twice (a video's span outputs go in one list)")
        out[k] = v
    return out


def load_predictions(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "prediction file not found")
    data = load_json_or_pickle(path, "prediction", object_pairs_hook=_unique_keys)
    if not isinstance(data, Mapping):
        raise BadInputError(path, f"expected a mapping youtube_id -> list of span outputs, got {type(data).__name__}")
    return dict(data)


def _number(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{x!r} is not a number")
    try:
        v = float(x)
    except OverflowError:  # a JSON integer past a float's range (10**400)
        raise ValueError(f"{str(x)[:20]}... ({len(str(abs(x)))} digits) is past a float's range") from None
    if not math.isfinite(v):
        raise ValueError(f"non-finite value {v}")
    return v


# how far a row of class probabilities may stray from a distribution: a softmax computed in bfloat16
# (unit roundoff 2**-8, so the sum is off by up to 0.4%) or written with 3 decimals (0.05% per class,
# 10 classes at most) is still probabilities; logits practically never sum this close to 1
PROB_SUM_TOL = 1e-2
PROB_NEG_TOL = 1e-6


def video_prediction(task: str, spans: Any) -> float | np.ndarray:
    """A video's prediction from its span outputs: summed probabilities (classification) or the
    mean (regression). Raises ``ValueError`` on a malformed list, or on a classification row that
    is not a probability vector."""
    if isinstance(spans, np.ndarray):
        spans = spans.tolist()
    if not isinstance(spans, (list, tuple)) or not spans:
        raise ValueError("expected a non-empty list of per-span outputs")
    if is_regression(task):
        vals = []
        for k, s in enumerate(spans):
            if isinstance(s, (list, tuple, np.ndarray)):  # [x] is accepted for a one-output head
                flat = np.asarray(s, dtype=object).reshape(-1)
                if len(flat) != 1:
                    raise ValueError(f"span {k}: expected one number, got {len(flat)} values")
                s = flat[0]
            try:
                vals.append(_number(s))
            except ValueError as e:
                raise ValueError(f"span {k}: {e}") from None
        with np.errstate(over="ignore"):  # finite outputs whose sum passes a float's range: inf, said by evaluate
            return float(np.mean(vals))
    n = LVU_TASKS[task]["num_classes"]
    total = np.zeros(n, np.float64)
    for k, s in enumerate(spans):
        v = np.asarray(s, dtype=object).reshape(-1) if isinstance(s, (list, tuple, np.ndarray)) else None
        if v is None or len(v) != n:
            raise ValueError(f"span {k}: expected {n} class probabilities, got {s!r:.60}")
        try:
            row = np.array([_number(x) for x in v])
        except ValueError as e:
            raise ValueError(f"span {k}: {e}") from None
        # Summing logits (or unnormalised scores) is not LVU's protocol and can change the argmax:
        # one confident span outweighs many. The tolerances only absorb float32 rounding.
        if row.min() < -PROB_NEG_TOL or abs(row.sum() - 1.0) > PROB_SUM_TOL:
            raise ValueError(
                f"span {k}: not class probabilities (sum {row.sum():.6g}, min {row.min():.6g}); LVU sums "
                "softmax probabilities over spans, so apply softmax to logits before writing the file"
            )
        total += row
    return total


def evaluate(task: str, preds: Mapping[str, Any], labels: Mapping[str, float], source: Any = "predictions") -> dict:
    """``{"top1": percent, "n": videos}`` or ``{"mse": value, "n": videos}`` over the videos of ``preds``.

    ``labels``: the split's ``youtube_id -> label`` (class id, or centred regression target)."""
    if task not in LVU_TASKS:
        raise BadInputError(None, f"unknown LVU task '{task}' (choose from {', '.join(LVU_TASKS)})")
    if not preds:
        raise BadInputError(source, "no videos in the prediction file")
    hits, errs = 0, []
    for vid, spans in preds.items():
        if vid not in labels:
            raise BadInputError(source, f"video {vid!r} is not in the split")
        try:
            p = video_prediction(task, spans)
        except ValueError as e:
            raise BadInputError(source, f"video {vid!r}: {e}") from None
        if is_regression(task):
            d = p - float(labels[vid])
            if not math.isfinite(d * d):  # `** 2` of 1e200 was an OverflowError traceback; an inf MSE says nothing
                raise BadInputError(
                    source,
                    f"video {vid!r}: prediction {p:.6g} (the mean of its spans) is too far off LVU's centred "
                    "scale to score (its squared error passes a float's range)",
                )
            errs.append(d * d)
        else:
            hits += int(np.argmax(p)) == int(labels[vid])
    n = len(preds)
    if is_regression(task):
        with np.errstate(over="ignore"):
            mse = float(np.mean(errs))
        if not math.isfinite(mse):
            raise BadInputError(
                source, "the squared errors of the predictions sum past a float's range (far off LVU's scale)"
            )
        return {"mse": mse, "n": n}
    return {"top1": 100.0 * hits / n, "n": n}


def evaluate_files(task: str, pred_path: str | os.PathLike, data_root: str | os.PathLike, split: str = "val") -> dict:
    """Score a prediction file against the released label file of ``split``."""
    labels = dict(read_labels(data_root, task, split))
    res = evaluate(task, load_predictions(pred_path), labels, source=pred_path)
    missing = len(labels) - res["n"]
    if missing:
        log.info("%s: scored %d of the %d %s videos (%d not in the file)", task, res["n"], len(labels), split, missing)
    return res
