"""A MaskPred (``pretrain-context``) training step makes no call that on a GPU waits for it
(tests/host_reads.py says how a CPU run counts them)."""

from __future__ import annotations

import pytest
from test_maskpred_cli import FAST, feats  # noqa: F401 (a fixture)

from host_reads import HostReads
from moviessl.config import load_config
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
