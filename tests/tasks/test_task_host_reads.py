"""A task head's training step copies nothing from the host at every step (on a GPU a blocking copy
waits for all the work queued there)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from test_finetune import _finetune

import moviessl
from moviessl.tasks.base import TaskModule

BASE = str(Path(moviessl.__file__).parent / "tasks" / "base.py")


def test_relations_class_weights_are_copied_to_the_device_once(vidsitu_fixture, tmp_path, monkeypatch):
    """``relation.class_weighted``: the class weights (a host tensor) were copied to the module's
    device at every training step (``.to(self.device)``, blocking); now once per run."""
    ann, feats = vidsitu_fixture
    steps, copies = [0], [0]
    step, to = TaskModule.training_step, torch.Tensor.to

    @functools.wraps(step)
    def counted_step(self, *args, **kwargs):
        steps[0] += 1
        return step(self, *args, **kwargs)

    @functools.wraps(to)
    def counted_to(self, *args, **kwargs):
        import sys

        if sys._getframe(1).f_code.co_filename == BASE:
            copies[0] += 1
        return to(self, *args, **kwargs)

    monkeypatch.setattr(TaskModule, "training_step", counted_step)
    monkeypatch.setattr(torch.Tensor, "to", counted_to)
    extra = ["trainer.progress_bar=false", "relation.epochs=2", "relation.class_weighted=true"]
    assert _finetune(ann, feats, tmp_path / "run", "relation", *extra, seeds=1) == 0
    assert steps[0] >= 2 and copies[0] == 1, (steps, copies)
