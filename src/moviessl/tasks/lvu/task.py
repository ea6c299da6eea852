"""The nine LVU tasks as :class:`~moviessl.tasks.base.TaskSpec` s, and the model a task trains.

What differs between tasks is declared in :data:`moviessl.data.lvu.LVU_TASKS` (head size, type) and
carried by two classes: :class:`ClassificationTask` (cross-entropy; a span's output is its softmax
probabilities, summed per video) and :class:`RegressionTask` (MSE on LVU's centred target; a span's
output is the number, averaged per video).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint import arch_spec
from ...context.instance_masking import HOST_MASKS, track_masks
from ...context.maskpred import corrupt_selected
from ...data.lvu import LVU_TASKS
from ...eval.lvu import metric_name
from ...models.object_transformer import INSTANCE, ObjectTransformer, build_object_transformer
from ...training import OnHost


class LVUModel(nn.Module):
    """An Object Transformer with a task head; ``loss(tokens, y)`` is CE (classes) or MSE (regression).

    ``track_mask`` > 0 corrupts the instance tokens of that fraction of each span's tracks (at least
    one; 80% [MASK], 10% swapped, 10% kept) in training *and* when scoring, as LVU's fine-tuning code
    does (``chaoyuaw/lvu`` ``src/run.py``: ``prepare_model_input`` calls ``mask_tokens`` for train and
    eval batches alike, and ``--mask_sep_no_mask`` skips only its second masking pass)."""

    def __init__(self, ot: ObjectTransformer, regression: bool, track_mask: float = 0.0):
        super().__init__()
        self.ot, self.regression, self.track_mask = ot, bool(regression), float(track_mask)

    def host_draws(self, tokens: Mapping[str, Any]) -> Mapping[str, Any]:
        """A training batch's tokens with the tracks to mask drawn on the host, before the transfer
        (:meth:`~moviessl.tasks.base.TaskModule.on_before_batch_transfer`), carried past it: drawn
        from the transferred tokens, :func:`track_masks` read a count on the host at each of its
        redraw rounds (dozens of waits for the GPU a step). The same CPU stream and order as the
        forward's draw (nothing draws between that hook and the step); scoring draws in the forward."""
        if self.track_mask <= 0 or "inst" not in tokens:
            return tokens
        masked = track_masks(tokens["link"], tokens["kind"], self.track_mask)
        return {**tokens, HOST_MASKS: OnHost((masked, tokens["kind"] == INSTANCE))}

    def _inputs(self, tokens: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
        if HOST_MASKS in tokens:  # drawn on the host (host_draws): corrupt_selected decides there too
            masked, inst = tokens[HOST_MASKS].value
            tokens = {k: v for k, v in tokens.items() if k != HOST_MASKS}
        elif self.track_mask <= 0 or "inst" not in tokens:  # scene-only rows have no instance tokens
            return tokens
        else:
            inst = tokens["kind"] == INSTANCE
            masked = track_masks(tokens["link"], tokens["kind"], self.track_mask)
        x, mask = corrupt_selected(tokens["inst"], masked, inst)
        return {**tokens, "inst": x, "mask": mask}

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.ot(self._inputs(tokens))

    def loss(self, tokens: Mapping[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        out = self(tokens).float()
        if self.regression:
            return F.mse_loss(out[:, 0], y.float())
        return F.cross_entropy(out, y.long())

    @torch.no_grad()
    def span_outputs(self, tokens: Mapping[str, torch.Tensor]) -> np.ndarray:
        """What the prediction file holds per span: class probabilities, or the centred value."""
        out = self(tokens).float()
        return (out[:, 0] if self.regression else out.softmax(-1)).cpu().numpy()


def build_lvu_model(
    preset: str = "ot_paper",
    in_dim: int = 2304,
    scene_dim: int = 0,
    num_outputs: int = 1,
    regression: bool = False,
    track_mask: float = 0.0,
    **overrides: Any,
) -> LVUModel:
    ot = build_object_transformer(preset, in_dim, scene_dim, num_outputs, **overrides)
    return LVUModel(ot, regression, track_mask)


class LVUTask:
    """One LVU task: its head size, metric and model (a :class:`~moviessl.tasks.base.TaskSpec`)."""

    regression = False
    higher_is_better = True
    end_to_end = False  # the OT reads cached instance / scene features
    ignore_index = None

    def __init__(self, name: str):
        self.name = name
        self.num_classes = int(LVU_TASKS[name]["num_classes"])
        self.metric = metric_name(name)
        self.group = LVU_TASKS[name]["group"]

    @property
    def metric_keys(self) -> tuple[str, ...]:
        return (f"test_{self.metric}", f"val_{self.metric}")

    def build_model(
        self, in_dim: int, scene_dim: int = 0, preset: str = "ot_paper", **overrides: Any
    ) -> tuple[LVUModel, dict]:
        kw = dict(
            preset=preset,
            in_dim=int(in_dim),
            scene_dim=int(scene_dim),
            num_outputs=self.num_classes,
            regression=self.regression,
            **overrides,
        )
        return build_lvu_model(**kw), arch_spec("moviessl.tasks.lvu.task:build_lvu_model", **kw)

    def loss_kwargs(self) -> dict[str, Any]:
        return {}

    def meta(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "num_classes": self.num_classes,
            "regression": self.regression,
            "metric": self.metric,
        }


class ClassificationTask(LVUTask):
    """Top-1 accuracy of the summed span probabilities (class ids as given, gaps included)."""


class RegressionTask(LVUTask):
    """MSE of the mean span prediction on LVU's centred scale (like_ratio, view_count)."""

    regression = True
    higher_is_better = False


TASKS: dict[str, LVUTask] = {
    name: (RegressionTask if spec["type"] == "regression" else ClassificationTask)(name)
    for name, spec in LVU_TASKS.items()
}
