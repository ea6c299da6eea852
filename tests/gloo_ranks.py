"""Two (or more) CPU processes joined by gloo, for the tests that compare a step on several processes
with one process on the union of their batches: shared by the ssl, context and tasks DDP tests."""

from __future__ import annotations

import datetime
import os
import socket
import traceback
import warnings

import torch.distributed as dist
import torch.multiprocessing as mp

# gloo's (its default is 30 minutes): a rank that raised, or waits in a collective its peer left,
# fails the test instead of hanging it; the peer's start (its imports) counts, hence not less
TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, work, world, port, timeout_s, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    warnings.filterwarnings("ignore")  # e.g. self.log() without a trainer, printed once per rank
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
        try:
            work(rank, world, *args)
        finally:
            dist.barrier()  # every rank reaches here before tearing down gloo: one leaving early aborts its peer
            dist.destroy_process_group()
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    # Leave with os._exit: at interpreter shutdown a spawned gloo process sometimes aborts with
    # "terminate called without an active exception" (a library thread still joinable), which
    # would fail the test for a reason that has nothing to do with the result it checks.
    os._exit(0)


def run_ranks(work, *args, world: int = 2, timeout_s: float = TIMEOUT_S) -> None:
    """Run ``work(rank, world, *args)`` on ``world`` spawned processes in one gloo group; raises if any
    rank fails. ``work`` must be a module-level function (spawn pickles it by name)."""
    mp.spawn(_rank, args=(work, world, free_port(), timeout_s, args), nprocs=world, join=True)


def ranks_apart(out_dir, name: str, want: dict, world: int = 2) -> dict:
    """Where the parameters each rank saved (``out_dir/{name}{rank}.pt``) differ from ``want`` (one
    process's): ``{"name rank r param": max abs difference}``, empty when every rank took its step."""
    import torch

    apart = {}
    for r in range(world):
        res = torch.load(os.path.join(out_dir, f"{name}{r}.pt"))
        for n in want:
            if not torch.allclose(res[n], want[n], atol=1e-6, rtol=1e-5):
                apart[f"{name} rank {r} {n}"] = float((res[n] - want[n]).abs().max())
    return apart


def sgd_step(module, loss_fn, world: int, lr: float) -> dict:
    """One plain SGD step on ``loss_fn()``, the gradients averaged over the ranks first as DDP does
    (world > 1); the parameters after it. SGD, not Adam: Adam's first step (about lr x the gradient's
    sign) would hide a scaled gradient."""
    import torch

    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=lr)
    loss_fn().backward()
    for p in module.parameters():
        if p.grad is not None and world > 1:
            dist.all_reduce(p.grad)
            p.grad /= world  # what DDP does
    opt.step()
    return {n: p.detach().clone() for n, p in module.named_parameters()}
