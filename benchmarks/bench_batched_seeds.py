"""Would training K seeds of a task head as one batched model pay on a CPU?

    python -m benchmarks.bench_batched_seeds [--ks 2,4,8] [--steps 8] [--threads 1]

The performance issue proposed it: K seeds of a head / TxE / TxD as one model
(``torch.func.stack_module_state`` + ``vmap``) instead of K separate runs. This measures the one
thing that decides it, the training step: K separate models (forward, backward, AdamW each) against
one ``vmap``-ed forward/backward over the K stacked parameter sets and one AdamW step over the
stacked tensors, same inputs, same threads. Models are the demo's (cpu preset, the feature width of
``slowd_cpu``, batch 32 of 5 events): the verb and relation heads without a TxE, the relation head
and the SRL TxD with a scratch TxE. Inputs are random with the real shapes (SRL targets 22 tokens,
the demo's longest batch); the step's cost does not depend on their values.

It also checks that batching changes nothing but the speed: with dropout off (eval mode) the
batched losses equal the separate ones to float tolerance. (torch 2.13 has no vmap batching rule for
the CPU flash-attention kernel, so attention runs member by member inside the batched step; the
heads without a TxE have no attention at all.)
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

B, E, D, VOCAB, L = 32, 5, 256, 1000, 22  # batch, events, slowd_cpu feature width, SRL vocab, tokens


class _Loss(nn.Module):
    """A task model's training loss as ``forward`` with fixed shapes (``vmap`` cannot trace the
    models' data-dependent branches: rows without targets, trimming to the longest target)."""

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.kind == "srl":
            seqs = y.flatten(0, 1)
            logits = m.txd(seqs[:, :-1], m.memory_of(m.encoder(x)))
            return F.cross_entropy(logits.flatten(0, 1), seqs[:, 1:].flatten(), ignore_index=0)
        return F.cross_entropy(m(x).flatten(0, 1), y.flatten())


def build(kind: str, txe: bool) -> nn.Module:
    from moviessl.checkpoint import arch_spec
    from moviessl.tasks.vidsitu.relation import build_relation_model
    from moviessl.tasks.vidsitu.srl import build_srl_model
    from moviessl.tasks.vidsitu.verb import build_verb_model

    txe_arch = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=D) if txe else None
    if kind == "verb":
        return build_verb_model(D, 34, dropout=0.1, txe_arch=txe_arch)
    if kind == "relation":
        return build_relation_model(D, txe_arch=txe_arch)
    return build_srl_model(D, VOCAB, "txd_cpu", txe_arch=txe_arch)


def inputs(kind: str, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(B, E, D, generator=g)
    if kind == "verb":
        return x, torch.randint(0, 34, (B, E), generator=g)
    if kind == "relation":
        from moviessl.tasks.vidsitu.relation import LABELS

        return x, torch.randint(0, len(LABELS), (B, 4), generator=g)
    y = torch.randint(2, VOCAB, (B, E, L), generator=g)
    y[..., 0] = 5  # the verb token opens every target
    return x, y


def bench(kind: str, txe: bool, k: int, steps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    models = []
    for s in range(k):
        torch.manual_seed(s)
        models.append(_Loss(build(kind, txe), kind))
    data = [inputs(kind, g) for _ in range(k)]

    # K separate models, one after another (what K runs do, minus their start-up)
    opts = [torch.optim.AdamW(m.parameters(), 1e-3) for m in models]

    def separate() -> None:
        for m, o, (x, y) in zip(models, opts, data):
            m(x, y).backward()
            o.step()
            o.zero_grad(set_to_none=True)

    # the same K models stacked: one vmap-ed step (dropout masks drawn per member)
    base = copy.deepcopy(models[0])  # a skeleton: functional_call swaps its parameters for the stacked ones
    params, buffers = stack_module_state(models)
    stacked = [p.detach().requires_grad_(True) for p in params.values()]
    names = list(params)
    opt = torch.optim.AdamW(stacked, 1e-3)
    X = torch.stack([x for x, _ in data])
    Y = torch.stack([y for _, y in data])

    def one(p, b, x, y):
        return functional_call(base, (p, b), (x, y))

    f = vmap(one, randomness="different")

    def batched() -> None:
        f(dict(zip(names, stacked)), buffers, X, Y).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    # batching must change nothing but the speed: eval mode (no dropout), same losses
    for m in models:
        m.eval()
    base.eval()
    with torch.no_grad():
        sep = torch.stack([m(x, y) for m, (x, y) in zip(models, data)])
        bat = vmap(one)(params, buffers, X, Y)
    max_diff = float((sep - bat).abs().max())
    for m in models:
        m.train()
    base.train()

    times = {}
    for name, fn in (("separate", separate), ("batched", batched)):
        fn()  # warm-up
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        times[name] = (time.perf_counter() - t) / steps
    return {
        "task": kind,
        "txe": "scratch" if txe else "none",
        "K": k,
        "separate_ms": round(1000 * times["separate"], 1),
        "batched_ms": round(1000 * times["batched"], 1),
        "speedup": round(times["separate"] / times["batched"], 2),
        "max_loss_diff_eval": max_diff,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", default="2,4,8", help="numbers of stacked seeds")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the demo's jobs run at 1)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", message=".*not yet implemented the batching rule.*")
    rows = []
    for kind, txe in (("verb", False), ("relation", False), ("relation", True), ("srl", True)):
        for k in (int(s) for s in a.ks.split(",")):
            r = bench(kind, txe, k, a.steps)
            rows.append(r)
            print(
                f"{r['task']:8s} txe={r['txe']:7s} K={k}: separate {r['separate_ms']:7.1f} ms, "
                f"batched {r['batched_ms']:7.1f} ms, speedup {r['speedup']:.2f}x, "
                f"eval-mode loss diff {r['max_loss_diff_eval']:.1e}",
                flush=True,
            )
    return {"threads": a.threads, "rows": rows}


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.bench_batched_seeds")
