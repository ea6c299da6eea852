"""A task head's step under DDP (2 CPU processes, gloo) equals one process's step on both halves of the
batch, where its loss is a mean over a count that varies with the data: verb (labelled events),
relation (labelled pairs at their class weights), SRL (target tokens; ``srl_none``: none on one
process, whose loss raised in ``max()`` while the other waited in the count's all-reduce). Each
process's loss was a mean over its own items and DDP averages the gradients, so an item of the
process that held fewer weighed more than one of the other."""

from __future__ import annotations

import os

import pytest
import torch

from gloo_ranks import TIMEOUT_S, ranks_apart, run_ranks, sgd_step

LR = 0.5  # plain SGD: Adam's first step (about lr x the gradient's sign) would hide a scaled gradient
NAMES = ("verb", "relation", "srl", "srl_none")


def _case(name):
    """(module, per-rank batches) of one task; the same on every process (seeded)."""
    from moviessl.tasks.base import TaskModule, TaskOptim
    from moviessl.tasks.vidsitu.relation import IGNORE, build_relation_model
    from moviessl.tasks.vidsitu.srl import build_srl_model
    from moviessl.tasks.vidsitu.verb import build_verb_model

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(2, 5, 8, generator=g) for _ in range(2)]
    kw = {}
    if name == "verb":
        model = build_verb_model(8, num_verbs=6)
        y0 = torch.tensor([[0, 1, 2, 3, 4], [5, 0, 1, 2, 3]])
        y1 = torch.full((2, 5), IGNORE)
        y1[0, 2] = 4  # one labelled event here, ten on the other process
        ys = [y0, y1]
    elif name == "relation":
        model = build_relation_model(8)
        y0 = torch.tensor([[0, 1, 2, 3], [1, 1, 0, 2]])
        y1 = torch.tensor([[IGNORE, 3, IGNORE, IGNORE], [IGNORE, IGNORE, 2, IGNORE]])
        ys = [y0, y1]
        kw = {"weight": torch.tensor([0.5, 1.0, 2.0, 4.0])}
    else:
        model = build_srl_model(8, 12, txd_overrides={"dropout": 0.0})
        y0 = torch.randint(2, 12, (2, 5, 7), generator=g)  # long targets, every event
        y1 = torch.zeros(2, 5, 7, dtype=torch.long)
        y1[:, :2, :3] = torch.randint(2, 12, (2, 2, 3), generator=g)  # two short ones per segment
        if name == "srl_none":  # no target token on one process: its loss a zero, its share 0
            y1.zero_()
        ys = [y0, y1]
    module = TaskModule(model.eval(), TaskOptim(lr=LR), kw)  # eval: no dropout, the same step everywhere
    return module, [{"x": xi, "y": yi} for xi, yi in zip(x, ys)]


def _step(module, batch, world):
    return sgd_step(module, lambda: module.training_step(batch, 0), world, LR)


def _work(rank, world, out_dir):
    for name in NAMES:  # one launch for all: starting processes is most of the time
        module, batches = _case(name)
        torch.save(_step(module, batches[rank], world), os.path.join(out_dir, f"{name}{rank}.pt"))


@pytest.mark.timeout(4 * TIMEOUT_S)  # a backstop: gloo's timeout ends a stuck rank first
def test_a_task_step_on_two_processes_is_the_step_on_their_union(tmp_path):
    run_ranks(_work, str(tmp_path))
    apart = {}
    for name in NAMES:
        module, batches = _case(name)
        before = {n: p.detach().clone() for n, p in module.named_parameters()}
        union = {k: torch.cat([b[k] for b in batches]) for k in ("x", "y")}
        one = _step(module, union, 1)
        assert any(not torch.equal(one[n], before[n]) for n in one)  # the step changed something
        apart.update(ranks_apart(tmp_path, name, one))
    assert not apart, apart


def test_a_task_step_on_one_process_is_unchanged():
    """Without a process group the loss a task returns is the model's own (no factor, not even 1.0)."""
    for name in NAMES:
        module, (batch, _) = _case(name)
        want = module.model.loss(batch["x"], batch["y"], **module.loss_kwargs)
        assert torch.equal(module.training_step(batch, 0), want)
