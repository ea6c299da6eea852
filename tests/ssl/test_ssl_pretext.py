"""Is the pretext solved? Each method's ``chance_loss`` is its own training loss for outputs that ignore
the input (checked through the method's training step, not restated), and ``pretext_check`` compares
the end of a run's logged loss with it (summary.json's ``pretext``, a warning above it)."""

import logging
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from ssl_testutil import tiny_overrides
from torch import nn

from moviessl.config import load_config
from moviessl.ssl import get_method, list_methods
from moviessl.ssl.losses import info_nce_pairs
from moviessl.ssl.pretrain import pretext_check, pretrain


class Constant(nn.Module):
    """Outputs one fixed row for every input row (gradients still reach nothing but exist)."""

    def __init__(self, row: torch.Tensor):
        super().__init__()
        self.row = row

    def forward(self, x):
        return self.row.expand(x.shape[0], -1) + 0 * x.flatten(1).sum(1, keepdim=True)


def _module(method, extra=()):
    cfg = load_config("backbone", "cpu", tiny_overrides(list(extra)), variant=method)
    cls = get_method(method)
    return cls(cfg, num_classes=5) if cls.needs_labels else cls(cfg)


def _step(m, batch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's "self.log() without a trainer"
        return float(m.training_step(batch, 0))


@pytest.mark.parametrize("b", [2, 4, 7])
@pytest.mark.parametrize("intra", [False, True])
def test_cvrl_chance_is_its_step_loss_when_every_embedding_is_alike(b, intra):
    m = _module("cvrl", ["cvrl.intra_neg=[shuffle]"] if intra else [])
    row = F.normalize(torch.randn(1, 16), dim=1)
    object.__setattr__(m, "embed", Constant(row))  # over the method (nn.Module would file it as a submodule)
    views = [torch.randn(b, 3, 8, 32, 32) for _ in range(3 if intra else 2)]
    batch = {"views": views, "index": torch.arange(b)}
    if intra:  # each video's broken copy scored by one of its two rows, chosen at random
        batch["intra_scorer"] = torch.randint(2, (b,)) * b + torch.arange(b)
    assert _step(m, batch) == pytest.approx(m.chance_loss(b), rel=1e-6)
    assert m.chance_loss(b) == pytest.approx(math.log(2 * b - 1) + math.log(2 * b - (not intra)))


def test_cvrl_chance_is_the_loss_of_alike_embeddings_with_ids():
    # the loss function itself, as DDP and the step call it (no padded duplicates)
    z = F.normalize(torch.ones(6, 8), dim=1)
    got = float(info_nce_pairs(z, z.clone(), 0.1, gather=False, ids=torch.arange(6)))
    assert got == pytest.approx(_module("cvrl").chance_loss(6), rel=1e-6)


@pytest.mark.parametrize("weights", [[], ["modist.w_flow=0.5", "modist.w_visual=0.0"]])
def test_modist_chance_is_its_step_loss_when_every_embedding_is_alike(weights):
    m = _module("modist", weights)
    b, d = 4, 16
    row = F.normalize(torch.randn(1, d), dim=1)
    for head in ("v_head", "f_head"):
        setattr(m, head, Constant(row))
    m.v_key["head"], m.f_key["head"] = Constant(row), Constant(row)
    for q in (m.v_queue, m.f_queue):  # a queue full of keys alike (of other videos: none left out)
        q.queue.copy_(row.expand(q.size, -1))
    batch = {
        "views": [torch.randn(b, 3, 8, 32, 32) for _ in range(2)],
        "flows": [torch.randn(b, m.flow_net.in_channels, 8, 32, 32) for _ in range(2)],
        "index": torch.arange(b),
    }
    assert _step(m, batch) == pytest.approx(m.chance_loss(b), rel=1e-6)
    assert m.chance_loss(b) > 0


def test_supervised_chance_is_its_step_loss_for_equal_logits():
    m = _module("supervised", ["supervised.label_smoothing=0.1"])
    m.classifier = Constant(torch.zeros(1, 5))
    batch = {"views": [torch.randn(3, 3, 8, 32, 32)], "label": torch.tensor([0, 3, 4])}
    assert _step(m, batch) == pytest.approx(m.chance_loss(3), rel=1e-6) == pytest.approx(math.log(5))


@pytest.mark.parametrize("method", [m for m in list_methods() if get_method(m).__module__.startswith("moviessl.")])
def test_every_builtin_method_that_trains_has_a_chance_level(method):
    # (a method added outside the package may leave it at None: its run then records no pretext)
    m = _module(method)
    c = m.chance_loss(4)
    assert (c is None) == (get_method(method).views is None)
    assert c is None or (math.isfinite(c) and c > 0)


def _log(path, rows):
    lines = (f"{s},{v},\n" if v is not None else f"{s},,0.1\n" for s, v in rows)  # None: an lr-only row
    path.write_text("step,train/loss,lr\n" + "".join(lines))


def test_pretext_check_averages_the_last_tenth_of_the_run_resumes_included(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    # an interrupted part logged steps 0-59 at 9; the resume went on from step 40 at 5 and then 1:
    # its values replace the first part's from step 40 on
    _log(logs / "metrics.part000.csv", [(s, 9.0) for s in range(60)] + [(60, None)])
    _log(logs / "metrics.csv", [(s, 5.0 if s < 90 else 1.0) for s in range(40, 100)])
    r = pretext_check(logs, chance=2.0)
    assert r == {"loss_end": 1.0, "steps": [90, 99], "chance": 2.0, "below_chance": True}
    r = pretext_check(logs, chance=2.0, tail=0.2)  # steps 80-99: half at 5, half at 1
    assert r["loss_end"] == 3.0 and r["steps"] == [80, 99] and r["below_chance"] is False
    assert pretext_check(logs, chance=None) is None
    assert pretext_check(tmp_path / "none", chance=2.0) is None


def test_a_run_records_its_pretext_and_warns_when_the_loss_ends_above_chance(clip_list, tmp_path, caplog, monkeypatch):
    cfg = load_config("backbone", "cpu", tiny_overrides(["trainer.max_steps=2"]))
    with caplog.at_level(logging.WARNING, logger="moviessl"):
        s = pretrain("cvrl", clip_list, tmp_path / "a", cfg, run_probe=False, progress=False)
    p = s["pretext"]
    assert p["chance"] == pytest.approx(2 * math.log(2 * 4 - 1), abs=1e-4)
    assert p["steps"] == [1, 1]  # the last tenth of 2 steps
    assert ("the pretext task is unsolved" in caplog.text) == (not p["below_chance"])
    # the warning follows the comparison: a chance level no loss goes below, then one every loss does
    cvrl = get_method("cvrl")
    for chance, warned in ((0.0, True), (1e9, False)):
        monkeypatch.setattr(cvrl, "chance_loss", lambda self, b, c=chance: c)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="moviessl"):
            s = pretrain("cvrl", clip_list, tmp_path / str(chance), cfg, run_probe=False, progress=False)
        assert s["pretext"]["below_chance"] is not warned
        assert ("cvrl: the training loss ended at" in caplog.text) is warned
    assert "pretext" not in pretrain("random", clip_list, tmp_path / "rnd", cfg, run_probe=False, progress=False)
