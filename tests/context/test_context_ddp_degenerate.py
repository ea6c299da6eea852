"""Pretraining steps under DDP (2 CPU processes, gloo) where some trainable parameters take no part in
the loss: DDP without ``find_unused_parameters`` fails at the next step ("Expected to have finished
reduction in the prior iteration"), so a module with such steps must say so
(``ddp_find_unused_parameters``, which :func:`moviessl.training.fit` hands to the strategy). The
processes run DDP itself around each module's ``training_step``, as Lightning's strategy does, for
three steps; a rank that fails or waits on a collective the other left ends within gloo's timeout."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from gloo_ranks import run_ranks

TIMEOUT_S = 20  # gloo's: a rank left waiting in a collective fails instead of hanging the test


class _Step(torch.nn.Module):
    """What Lightning's DDP wraps: a forward that is the module's training step."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, batch):
        return self.module.training_step(batch, 0)


def _ot(over, pairs):
    """The masked-instance pretraining module and a batch of ``pairs`` span pairs of one video."""
    from moviessl.config import load_config
    from moviessl.context.instance_masking import InstanceMaskingModule
    from moviessl.context.ot_spans import SpanPairs, SpanVideo, collate_spans
    from moviessl.data.lvu import VideoInstances

    cfg = load_config("ot_pretrain", "cpu", ["masking.replace=1.0", "masking.swap=0.0", *over])
    teacher = (torch.randn(5, 8, generator=torch.Generator().manual_seed(2)), torch.zeros(5))
    torch.manual_seed(0)
    module = InstanceMaskingModule(cfg, 8, teacher)
    sec = np.repeat(np.arange(70), 2)
    box = np.tile(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), (len(sec), 1))
    feats = np.random.default_rng(0).normal(size=(len(sec), 8))
    inst = VideoInstances(sec, sec // 10, np.arange(len(sec)) % 2, box, feats)
    ot = module.ot
    data = SpanPairs([SpanVideo("a", inst=inst)], cfg.data.span_s, ot.max_instances, ot.max_positions // 2, 0.0)
    np.random.seed(0)  # the items are drawn from numpy's global stream
    return module, collate_spans([data[i] for i in range(pairs)])


CASES = {
    # the span term off (LVU's --same_movie not given): the OT's pooler and no span head
    "ot_span_off": lambda: _ot(["masking.span_weight=0"], 2),
    # one pair a process (a short last batch): two spans have no negative, the span term is skipped
    "ot_one_pair": lambda: _ot([], 1),
}


def _work(rank, world, out_dir):
    for name, case in CASES.items():
        module, batch = case()
        unused = getattr(module, "ddp_find_unused_parameters", False)  # as fit() hands it to the strategy
        ddp = torch.nn.parallel.DistributedDataParallel(_Step(module), find_unused_parameters=unused)
        opt = torch.optim.AdamW([p for p in ddp.parameters() if p.requires_grad], lr=1e-3)
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            ddp(batch).backward()
            opt.step()
        no_grad = sorted(n for n, p in module.named_parameters() if p.requires_grad and p.grad is None)
        torch.save(no_grad, os.path.join(out_dir, f"{name}{rank}.pt"))


@pytest.mark.timeout(120)
def test_pretraining_steps_without_some_parameters_run_under_ddp(tmp_path):
    run_ranks(_work, str(tmp_path), timeout_s=TIMEOUT_S)
    for name in CASES:
        for r in range(2):
            no_grad = torch.load(tmp_path / f"{name}{r}.pt")
            # what no process used keeps no gradient, as on one process: AdamW leaves it as it was
            assert no_grad and all(n.startswith(("ot.pooler.", "span_head.")) for n in no_grad), (name, no_grad)
