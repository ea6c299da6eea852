"""Slow-D training throughput: forward+backward clips/s at the CPU preset and the paper preset.

    python -m benchmarks.bench_slowd [--device cpu|cuda] [--precision 32|bf16] [--iters 3] [--quick]
    python -m benchmarks.bench_slowd --breakdown [--variants eager,channels_last]   # what limits it

Reports clips/s, achieved GFLOP/s (forward+backward FLOPs counted by torch.utils.flop_counter, 2 per
multiply-add) and, as the yardstick, the fp32 matmul peak of the same device measured in the same run
(a large square ``torch.mm``). ``--precision bf16`` runs the forward under bf16 autocast, as
``trainer.precision=bf16-mixed`` trains, and measures the peak as a bf16 matmul.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import torch

from moviessl.models import SLOWD_INPUTS, build_slowd
from moviessl.models.slowd import speed_up


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_gflops(device: torch.device, n: int = 2048, iters: int = 10, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up (and cuBLAS handle / MKL thread pool start)
    _sync(device)
    best = float("inf")
    for _ in range(iters):
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def train_step_flops(preset: str, batch: int, frames: int, size: int) -> float:
    """FLOPs of one forward+backward, counted on the meta device (exact, allocates nothing)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_slowd(preset)
        x = torch.empty(batch, 3, frames, size, size)
    fc = FlopCounterMode(display=False)
    with fc:
        model(x).sum().backward()
    return float(fc.get_total_flops())


VARIANTS = ("eager", "channels_last", "compile", "compile_channels_last")


def bench_train(
    preset: str,
    batch: int,
    device: torch.device,
    iters: int,
    warmup: int = 1,
    variant: str = "eager",
    precision: str = "32",
) -> dict:
    """``variant``: eager (contiguous NCTHW), channels_last (NTHWC, ``torch.channels_last_3d``, the
    layout oneDNN's convolutions prefer), compile (``torch.compile``, inductor; its compile time is
    excluded: 2 warm-up steps), compile_channels_last (both) -- through
    :func:`moviessl.models.slowd.speed_up`, what training and extraction run with ``model.channels_last``
    / ``model.compile``."""
    inp = SLOWD_INPUTS[preset]
    frames, size = inp["num_frames"], inp["crop"]
    torch.manual_seed(0)
    model = build_slowd(preset).to(device).train()
    x = torch.randn(batch, 3, frames, size, size, device=device)
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (choose from {VARIANTS})")
    speed_up(model, channels_last="channels_last" in variant, compile="compile" in variant)
    if "compile" in variant:
        warmup = max(warmup, 2)
    times = []
    for i in range(warmup + iters):
        _sync(device)
        t = time.perf_counter()
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = model(x)
        y.float().pow(2).mean().backward()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    # Best step, as timeit does: on a shared machine other jobs only ever add time. Median for reference.
    step, median = min(times), sorted(times)[len(times) // 2]
    flops = train_step_flops(preset, batch, frames, size)
    return {
        "variant": variant,
        "precision": precision,
        "input": f"{batch}x3x{frames}x{size}x{size}",
        "step_s": round(step, 4),
        "step_s_median": round(median, 4),
        "clips_per_s": round(batch / step, 2),
        "gflop_per_step": round(flops / 1e9, 2),
        "achieved_gflops": round(flops / step / 1e9, 1),
    }


# Where a training step's time goes, by operator family (self time of the profiler's aten ops).
OP_FAMILIES = (
    ("conv", ("convolution", "conv3d", "conv_depthwise")),
    ("batch_norm", ("batch_norm",)),
    ("relu", ("relu", "threshold_backward")),
    ("max_pool", ("max_pool",)),
    ("zero_fill", ("fill_", "zero_", "zeros")),
    ("add (residual, grad accumulation)", ("aten::add",)),
    ("copy / layout", ("copy_", "contiguous", "clone", "_to_copy", "as_strided", "empty_like")),
)


def _family(op: str) -> str:
    return next((fam for fam, keys in OP_FAMILIES if any(k in op for k in keys)), "other")


def _best_time(fn, iters: int) -> float:
    fn()
    best = float("inf")
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def breakdown(preset: str, batch: int, iters: int, variant: str = "eager") -> dict:
    """What limits a CPU fwd+bwd step: (1) the profiler's self time per operator family over one step
    (after warm-up; the step whose total is smallest of ``iters``), (2) every convolution of the net
    timed alone (forward; backward = input and weight gradients) on its own input shape, with its
    FLOPs, so the convolutions' own rate and their share of the step are known. The step minus the
    convolutions is what BN, ReLU, pooling, residual adds and layout copies cost."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    inp = SLOWD_INPUTS[preset]
    frames, size = inp["num_frames"], inp["crop"]
    fmt = torch.channels_last_3d if variant == "channels_last" else torch.contiguous_format
    torch.manual_seed(0)
    model = build_slowd(preset).train().to(memory_format=fmt)
    x = torch.randn(batch, 3, frames, size, size).contiguous(memory_format=fmt)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).pow(2).mean().backward()

    step_s = _best_time(step, iters)
    best = None
    for _ in range(max(1, iters)):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        fams: dict[str, float] = {}
        for e in prof.key_averages():
            fams[_family(e.key)] = fams.get(_family(e.key), 0.0) + e.self_cpu_time_total / 1e6
        if best is None or sum(fams.values()) < sum(best.values()):
            best = fams
    total = sum(best.values())
    families = {
        k: {"s": round(v, 4), "share": round(v / total, 3)} for k, v in sorted(best.items(), key=lambda kv: -kv[1])
    }

    shapes: dict[str, tuple] = {}  # every conv's input shape, from one forward pass
    hooks = [
        m.register_forward_hook(lambda mod, a, out, name=name: shapes.__setitem__(name, tuple(a[0].shape)))
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Conv3d)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    convs = []
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Conv3d):
            continue
        xi = torch.randn(shapes[name]).contiguous(memory_format=fmt).requires_grad_(name != "stem.conv")
        fc = FlopCounterMode(display=False)
        with fc:
            y = m(xi)
            y.backward(torch.ones_like(y))
        flops = float(fc.get_total_flops())
        y = m(xi)
        g = torch.randn_like(y)
        fwd = _best_time(lambda: m(xi), iters)
        bwd = (
            _best_time(lambda: torch.autograd.grad(m(xi), [p for p in (xi, m.weight) if p.requires_grad], g), iters)
            - fwd
        )
        convs.append(
            {
                "conv": name,
                "in": "x".join(map(str, shapes[name])),
                "kernel": "x".join(map(str, m.kernel_size)),
                "stride": "x".join(map(str, m.stride)),
                "fwd_s": round(fwd, 5),
                "bwd_s": round(max(bwd, 0.0), 5),
                "gflop": round(flops / 1e9, 3),
                "gflops": round(flops / (fwd + max(bwd, 1e-9)) / 1e9, 1),
            }
        )
    conv_s = sum(c["fwd_s"] + c["bwd_s"] for c in convs)
    conv_gflop = sum(c["gflop"] for c in convs)
    return {
        "variant": variant,
        "input": f"{batch}x3x{frames}x{size}x{size}",
        "step_s": round(step_s, 4),
        "profiled_step_s": round(total, 4),
        "families": families,
        "convs_alone_s": round(conv_s, 4),
        "convs_alone_gflops": round(conv_gflop / conv_s, 1),
        "conv_gflop": round(conv_gflop, 2),
        "convs": convs,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--cpu-batch", type=int, default=16)
    ap.add_argument("--paper-batch", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="skip the paper preset (CI smoke run)")
    ap.add_argument("--variants", default="eager", help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--breakdown", action="store_true", help="where the step's time goes (CPU; no compile)")
    ap.add_argument("--precision", choices=("32", "bf16"), default="32", help="bf16: forward under bf16 autocast")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.breakdown and args.precision != "32":
        ap.error("--breakdown profiles the fp32 step only")
    mm_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    if args.breakdown:
        peak = matmul_peak_gflops(device)
        res = {"benchmark": "slowd_step_breakdown", "date": datetime.date.today().isoformat()}
        res["threads"], res["load_avg_1min"] = torch.get_num_threads(), round(os.getloadavg()[0], 2)
        for v in args.variants.split(","):
            res[f"slowd_cpu_{v}"] = breakdown("slowd_cpu", args.cpu_batch, args.iters, v)
            if not args.quick:
                res[f"slowd_r50_{v}"] = breakdown("slowd_r50", args.paper_batch, args.iters, v)
        res["matmul_peak_gflops"] = round(max(peak, matmul_peak_gflops(device)), 1)
        print(json.dumps(res, indent=1))
        return res
    peak = matmul_peak_gflops(device, dtype=mm_dtype)
    res: dict = {
        "benchmark": "slowd_train_step",
        "date": datetime.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu x{torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "load_avg_1min": round(os.getloadavg()[0], 2),  # other jobs on the machine while measuring
        "precision": args.precision,
        "matmul_peak_gflops": round(peak, 1),  # in the step's precision
    }
    variants = args.variants.split(",")
    for v in variants:
        key = "" if v == "eager" else f"_{v}"
        for preset, batch in (("slowd_cpu", args.cpu_batch), ("slowd_r50", args.paper_batch)):
            if preset == "slowd_cpu" or not args.quick:
                run = bench_train(preset, batch, device, args.iters, variant=v, precision=args.precision)
                res[f"{preset}{key}"] = run
    # Measured again at the end; the better of the two is the peak (other jobs only slow it down).
    peak = max(peak, matmul_peak_gflops(device, dtype=mm_dtype))
    res["matmul_peak_gflops"] = round(peak, 1)
    for k, v in res.items():
        if k.startswith("slowd_"):
            v["fraction_of_matmul_peak"] = round(v["achieved_gflops"] / peak, 3)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.bench_slowd")
