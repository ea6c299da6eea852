"""A pretraining step under DDP (2 CPU processes, gloo) equals one process's step on both halves of the
batch, where the loss is a mean over masked tokens whose count differs between the processes:
MaskPred (Eq. 1 and Table 2's L2) and the Object Transformer's masked-instance distillation. Each
process's loss was a mean over its own masked tokens and DDP averages the gradients, so a token of
the process that masked fewer weighed more than one of the other."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

from gloo_ranks import TIMEOUT_S, ranks_apart, run_ranks, sgd_step

LR = 0.5  # plain SGD: Adam's first step (about lr x the gradient's sign) would hide a scaled gradient
NAMES = ("infonce", "l2", "ot")


def _maskpred(loss):
    """MaskPred with 8 fixed distractors; rank 0's windows mask 1 token each, rank 1's 3."""
    from moviessl.config import load_config
    from moviessl.context.module import MaskPredModule

    over = ["model.txe_overrides.dim=32", "model.txe_overrides.heads=2", "model.txe_overrides.mlp_dim=64"]
    cfg = load_config("context", "cpu", [*over, "model.txe_overrides.depth=1", f"maskpred.loss={loss}"])
    torch.manual_seed(0)
    module = MaskPredModule(cfg, 16).eval()  # eval: no dropout, the same step everywhere
    g = torch.Generator().manual_seed(1)
    keys = torch.nn.functional.normalize(torch.randn(8, module.tdim, generator=g), dim=1)
    ids = torch.arange(8) + 1000
    if dist.is_initialized():  # the queue gathers what each process enqueues: each gives its half
        r = dist.get_rank()
        keys, ids = keys[4 * r : 4 * r + 4], ids[4 * r : 4 * r + 4]
    module.queue.enqueue(keys, ids)
    n = module.window
    batches = []
    for r, size in enumerate((1, 3)):
        masks = torch.zeros(2, n, dtype=torch.bool)
        masks[:, 1 : 1 + size] = True
        batch = {
            "x": torch.randn(2, n, 16, generator=g),
            "pad": torch.zeros(2, n, dtype=torch.bool),
            "uid": torch.arange(2 * n).view(2, n) + 100 * r,
        }
        batches.append((batch, masks))
    return module, batches


def _ot():
    """The masked-instance pretraining with a teacher, the span loss off (per process by design);
    a token is masked where its first feature is positive, so the processes' counts differ."""
    from moviessl.config import load_config
    from moviessl.context.instance_masking import InstanceMaskingModule
    from moviessl.context.ot_spans import SpanPairs, SpanVideo, collate_spans
    from moviessl.data.lvu import VideoInstances

    over = ["masking.span_weight=0", "masking.replace=1.0", "masking.swap=0.0", "model.overrides.input_norm=false"]
    cfg = load_config("ot_pretrain", "cpu", over)
    teacher = (torch.randn(5, 8, generator=torch.Generator().manual_seed(2)), torch.zeros(5))
    torch.manual_seed(0)
    module = InstanceMaskingModule(cfg, 8, teacher).eval()
    rng = np.random.default_rng(0)
    videos = []
    for vid, per_second in (("a", 3), ("b", 1)):
        sec = np.repeat(np.arange(70), per_second)
        box = np.tile(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), (len(sec), 1))
        inst = VideoInstances(sec, sec // 10, np.arange(len(sec)) % per_second, box, rng.normal(size=(len(sec), 8)))
        videos.append(SpanVideo(vid, inst=inst))
    ot = module.ot
    data = SpanPairs(videos, cfg.data.span_s, ot.max_instances, ot.max_positions // 2, 0.0)
    np.random.seed(0)  # the items are drawn from numpy's global stream
    items = [data[i] for i in range(4)]
    return module, [collate_spans(items[:2]), collate_spans(items[2:])], collate_spans(items)


def _masked_where_positive(link, kind, fraction, generator=None):
    from moviessl.models.object_transformer import INSTANCE

    return (kind == INSTANCE) & (_masked_where_positive.inst[..., 0] > 0)


def _ot_step(module, batch, world):
    import moviessl.context.instance_masking as im

    _masked_where_positive.inst = batch["x"]["inst"]
    real, im.track_masks = im.track_masks, _masked_where_positive
    try:
        return _step(module, lambda: module.training_step(batch, 0), world), int(
            _masked_where_positive(batch["x"]["link"], batch["x"]["kind"], 0).sum()
        )
    finally:
        im.track_masks = real


def _step(module, loss_fn, world):
    return sgd_step(module, loss_fn, world, LR)


def _maskpred_step(module, batch, masks, world):
    module.sample_masks = lambda x, pad: masks
    return _step(module, lambda: module.training_step(batch, 0), world)


def _work(rank, world, out_dir):
    for loss in ("infonce", "l2"):
        module, batches = _maskpred(loss)
        res = _maskpred_step(module, *batches[rank], world)
        torch.save(res, os.path.join(out_dir, f"{loss}{rank}.pt"))
    module, halves, _ = _ot()
    res, masked = _ot_step(module, halves[rank], world)
    torch.save({**res, "masked": masked}, os.path.join(out_dir, f"ot{rank}.pt"))


@pytest.mark.timeout(4 * TIMEOUT_S)  # a backstop: gloo's timeout ends a stuck rank first
def test_a_pretraining_step_on_two_processes_is_the_step_on_their_union(tmp_path):
    run_ranks(_work, str(tmp_path))
    apart, want = {}, {}
    for loss in ("infonce", "l2"):
        module, batches = _maskpred(loss)
        union = {k: torch.cat([b[k] for b, _ in batches]) for k in batches[0][0]}
        want[loss] = (module, _maskpred_step(module, union, torch.cat([m for _, m in batches]), 1))
    module, _, union = _ot()
    one, _ = _ot_step(module, union, 1)
    want["ot"] = (module, one)
    masked = [torch.load(tmp_path / f"ot{r}.pt")["masked"] for r in range(2)]
    assert masked[0] != masked[1] and min(masked) > 0, masked  # unequal counts, as the test needs
    for name, (module, one) in want.items():
        fresh = {"ot": lambda: _ot()[0]}.get(name, lambda: _maskpred(name)[0])()
        assert any(not torch.equal(one[n], p) for n, p in fresh.named_parameters()), name  # the step moved
        apart.update(ranks_apart(tmp_path, name, one))
    assert not apart, apart


def test_a_pretraining_step_on_one_process_is_unchanged():
    """Without a process group MaskPred and the OT return their losses as computed (no factor), so
    one-process runs keep their numbers."""
    from moviessl.context import maskpred as mp_

    module, batches = _maskpred("l2")
    batch, masks = batches[1]
    module.sample_masks = lambda x, pad: masks
    pred, target, _, _ = module.masked_predictions(batch, masks)
    assert torch.equal(module.training_step(batch, 0), mp_.maskpred_l2_loss(pred, target))
