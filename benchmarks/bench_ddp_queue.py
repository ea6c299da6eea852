"""DDP step time with a paper-size MemoryQueue, with and without DDP's per-step broadcast of the queue.

    python -m benchmarks.bench_ddp_queue [--steps 20] [--size 65536] [--dim 2048] [--devices 2]

DDP's default ``broadcast_buffers=True`` copies every buffer from rank 0 before each forward.
MaskPred's paper queue (K = 65536 targets of 2048 floats) is 512 MB; MoDist's two are 64 MB. Every rank
writes the same all-gathered keys to its queue, so ``moviessl.training.fit`` leaves queues out of
that broadcast (``skip_replicated_broadcast``). This times a small MLP step under Lightning's DDP on
``--devices`` CPU processes (gloo over loopback) with a ``--size x --dim`` queue, both ways: ``skip``
(as ``fit`` does) and ``broadcast`` (the queue marked not replicated, DDP's default). Each mode runs
as its own ``torchrun``-free Lightning launch (this file re-executed per rank); the median step
time of rank 0 over ``--steps`` steps after 3 warm-up steps is reported. Over GPUs with NCCL the
broadcast is faster than over loopback gloo, but it grows with the queue and crosses nodes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run_rank(out: Path, mode: str, steps: int, size: int, dim: int, devices: int) -> None:
    import pytorch_lightning as pl
    import torch
    from torch import nn

    from moviessl.ssl.queue import MemoryQueue
    from moviessl.training import fit, seed_everything

    class Step(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, dim))
            self.queue = MemoryQueue(size, dim, init="empty")
            if mode == "broadcast":
                self.queue.ddp_replicated = False  # DDP's default: broadcast with the other buffers
            self.times: list[float] = []
            self._t = None

        def on_train_batch_start(self, batch, i):
            self._t = time.perf_counter()

        def on_train_batch_end(self, outputs, batch, i):
            self.times.append(time.perf_counter() - self._t)

        def training_step(self, batch, i):
            y = self.net(batch[0])
            self.queue.enqueue(y.detach()[:8])
            return y.pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def on_train_end(self):
            if self.global_rank == 0:
                (out / f"{mode}.json").write_text(json.dumps(self.times))

    seed_everything(0)
    data = torch.utils.data.TensorDataset(torch.randn(64 * devices * (steps + 3), dim))
    cfg = dict(
        accelerator="cpu",
        devices=devices,
        strategy="ddp",
        max_steps=steps + 3,
        progress_bar=False,
        ckpt_every_n_steps=0,
    )
    fit(Step(), cfg, out / mode, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=64))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--rank-run", nargs=2, metavar=("OUT", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rank_run:
        _run_rank(Path(args.rank_run[0]), args.rank_run[1], args.steps, args.size, args.dim, args.devices)
        return {}
    from moviessl.dist import fresh_launch_env

    env = fresh_launch_env()
    env.setdefault("OMP_NUM_THREADS", "1")
    res: dict = {"queue": f"{args.size} x {args.dim} fp32 ({args.size * args.dim * 4 / 2**20:.0f} MiB)"}
    res.update(devices=args.devices, steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("skip", "broadcast"):
            cmd = [sys.executable, "-m", "benchmarks.bench_ddp_queue", "--rank-run", tmp, mode]
            cmd += ["--steps", str(args.steps), "--size", str(args.size), "--dim", str(args.dim)]
            cmd += ["--devices", str(args.devices)]
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=Path(__file__).parents[1])
            if p.returncode:
                raise RuntimeError(f"{mode} run failed:\n{p.stderr[-3000:]}")
            times = json.loads((Path(tmp) / f"{mode}.json").read_text())[3:]
            res[mode] = {"median_step_s": round(statistics.median(times), 4), "best_step_s": round(min(times), 4)}
    print(res)
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.bench_ddp_queue")
