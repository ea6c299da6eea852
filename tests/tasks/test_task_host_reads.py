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


def test_the_heads_count_their_loss_items_on_the_device(monkeypatch):
    """Under DDP a head's loss is weighted by its share of the items (labelled events, labelled pairs
    at their class weights, target tokens): ``loss_items`` read its count on the host (``int()``,
    ``float()``, relation's boolean index), each a wait for the GPU at every step. It is a device
    tensor of the same value."""
    from host_reads import HostReads, dev
    from moviessl.tasks.vidsitu.relation import IGNORE, build_relation_model
    from moviessl.tasks.vidsitu.srl import build_srl_model
    from moviessl.tasks.vidsitu.verb import build_verb_model

    verb, relation, srl = build_verb_model(8, num_verbs=6), build_relation_model(8), build_srl_model(8, 12)
    y_verb = torch.tensor([[0, 1, IGNORE, 3, 4], [IGNORE] * 5])
    y_rel = torch.tensor([[0, IGNORE, 2, 3], [1, 1, IGNORE, 2]])
    weight = torch.tensor([0.5, 1.0, 2.0, 4.0])
    y_srl = torch.zeros(2, 5, 7, dtype=torch.long)
    y_srl[0, :2, :3] = 5
    cases = [
        (verb.loss_items, (y_verb,), {}, 4),
        (relation.loss_items, (y_rel,), {}, 6),
        (relation.loss_items, (y_rel,), {"weight": weight}, 0.5 + 2 + 4 + 1 + 1 + 2),
        (srl.loss_items, (y_srl,), {}, 4),
    ]
    hr = HostReads(monkeypatch)
    for items, args, kw, want in cases:
        with hr.opened():
            got = items(*map(dev, args), **{k: dev(v) for k, v in kw.items()})
        assert hr.total() == 0, (items, hr.report())
        assert float(got) == want, (items, got, want)


def test_an_lvu_step_with_track_masking_waits_for_nothing(tmp_path, monkeypatch):
    """``model.track_mask`` > 0 (LVU's fine-tuning corrupts tracks): the model drew the tracks to mask
    from the transferred tokens inside its forward, reading a count on the host at each redraw round,
    and the corruption read its pool and swap counts: dozens of waits for the GPU a step. The training
    masks are drawn on the host before the transfer, in the same order."""
    from test_lvu_runner import FAST, VIDS, _Instances, _labels, _scene

    from host_reads import HostReads
    from moviessl.tasks.lvu.data import load_inputs
    from moviessl.tasks.lvu.runner import run_finetune
    from moviessl.training import Throughput

    monkeypatch.setattr(Throughput, "interval_s", 1e9, raising=False)  # its log is the count's one read
    hr = HostReads(monkeypatch)
    hr.step_windows(TaskModule)
    inputs = load_inputs(_Instances(VIDS), _scene(VIDS), ids=VIDS, desc="ot++")
    extra = ["model.track_mask=0.15", "train.epochs=2"]
    run_finetune("scene", _labels(tmp_path), inputs=inputs, out=tmp_path / "o", overrides=[*FAST, *extra])
    assert hr.total() == 0, hr.report()
