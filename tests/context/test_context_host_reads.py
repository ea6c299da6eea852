"""A MaskPred (``pretrain-context``) and a masked-instance (``pretrain-ot``) training step make no call
that on a GPU waits for it (tests/host_reads.py says how a CPU run counts them)."""

from __future__ import annotations

import pytest
import torch
from test_maskpred_cli import FAST, feats  # noqa: F401 (a fixture)

from host_reads import HostReads
from lvu_release import write_ot_release
from moviessl.cli import main
from moviessl.config import load_config
from moviessl.context.instance_masking import InstanceMaskingModule
from moviessl.context.module import MaskPredModule
from moviessl.training import Throughput

STEPS = 3


@pytest.fixture
def counted(monkeypatch):
    # the throughput's count is read when it is logged (at most twice a second); a tiny CPU step is
    # slower than that, so its log is moved out of the runs here
    monkeypatch.setattr(Throughput, "interval_s", 1e9, raising=False)
    return HostReads(monkeypatch)


def _maskpred(feats, out, counted, *extra):  # noqa: F811
    from moviessl.context.pretrain import pretrain_context

    counted.step_windows(MaskPredModule)
    pretrain_context([feats[0]], out, load_config("context", "cpu", [f"trainer.max_steps={STEPS}", *FAST, *extra]))
    return counted


def test_a_maskpred_step_waits_for_nothing(feats, tmp_path, counted):  # noqa: F811
    """Each step read the queue's fill count three times and its pointer once (int() of device
    buffers), the retrieval accuracy (float()), whether a window was short of keys (``.any()``), the
    token count for the throughput (int()), and found the masked positions by three boolean indices
    (each reads its count): ten waits for the GPU a step. The span masks and the short-window check
    come from the padding, on the host before the transfer; the rest stays on the device."""
    hr = _maskpred(feats, tmp_path / "run", counted)
    assert hr.total() == 0, hr.report()


def test_maskpreds_bert_corruption_waits_for_nothing(feats, tmp_path, counted):  # noqa: F811
    """With ``replace`` < 1 the corruption found the swap pool and the swapped tokens on the device
    masks (two reads of a count a step; three before the positions were found once each). It decides
    on the span masks as drawn on the host before the transfer, whose copies the batch carries."""
    hr = _maskpred(feats, tmp_path / "run", counted, "maskpred.replace=0.8", "maskpred.swap=0.1")
    assert hr.total() == 0, hr.report()


def test_a_masked_instance_step_waits_for_nothing(tmp_path, counted):
    """track_masks drew the tracks to mask from device tensors, reading a count on the host at each of
    its redraw rounds, and the step found the masked tokens by boolean indices: some forty waits for
    the GPU a step. The masks are drawn on the host before the transfer, in the same order."""
    root = tmp_path / "features"
    write_ot_release(root, tmp_path / "meta.pkl")
    torch.save({"head.weight": torch.randn(5, 8), "head.bias": torch.zeros(5)}, tmp_path / "teacher.pt")
    counted.step_windows(InstanceMaskingModule)
    args = ["pretrain-ot", "--instances", root, "--instance-meta", tmp_path / "meta.pkl", "--out", tmp_path / "o"]
    args += ["--teacher", tmp_path / "teacher.pt"]
    assert main([*map(str, args), "data.batch_size=4", f"trainer.max_steps={STEPS}", "trainer.progress_bar=false"]) == 0
    assert counted.total() == 0, counted.report()


def test_the_host_hooks_pass_a_batch_through_without_a_trainer():
    """The hooks that make a training batch's masks on the host asked ``self.trainer is not None``,
    but Lightning's ``trainer`` property raises when none is attached: a module stepped by hand in
    Lightning's order (``on_before_batch_transfer``, then ``training_step``, which draws the masks
    itself when the batch has none) met RuntimeError. Without a trainer the batch goes through as it is."""
    mp_cfg = load_config("context", "cpu", ["maskpred.queue_size=64", "maskpred.keys_per_sample=2"])
    batch = {"x": torch.randn(2, 5, 8), "pad": torch.zeros(2, 5, dtype=torch.bool)}
    assert MaskPredModule(mp_cfg, 8).on_before_batch_transfer(batch) is batch
    ot = InstanceMaskingModule(load_config("ot_pretrain", "cpu", ["masking.action_weight=0"]), 8)
    batch = {"x": {"kind": torch.zeros(2, 4, dtype=torch.long), "link": torch.zeros(2, 4, dtype=torch.long)}}
    assert ot.on_before_batch_transfer(batch) is batch
