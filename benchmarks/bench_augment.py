"""Backbone augmentation on the CPU: the CVRL pair at the demo's batch, and each operator alone.

    python -m benchmarks.bench_augment [--iters 5] [--threads 1] [--batch 16] [--size 64] [--frames 16]

The performance issue names ``ConsistentAugment`` the CPU hot spot of backbone pretraining: in the
demo a CVRL step spends about as long augmenting its two views (``on_after_batch_transfer``) as in
the backward pass. This times what that hook does -- :func:`moviessl.ssl.augment.augment_views`
over CVRL's two view augmenters, ``--batch`` clips per view of ``3 x --frames x --size²`` uint8
frames (the demo's frame cache) to ``--size``² crops -- and, to see where it goes, every operator
alone on a float batch of both views (each colour op applied to every clip, so an op's share in the
pair is about its time x its probability: jitter 0.8, grayscale 0.2, blur 1.0 / 0.1, solarise 0 / 0.2).

Timings are best of ``--iters`` after one warm-up, at ``--threads`` torch threads (1: how the demo
runs its jobs, two side by side); the pair's random draws are the same in every call (seed 0), as
the work depends on them (which clips are jittered, blurred, ...). To compare with another version
of the code, run the same command with ``PYTHONPATH=<that checkout>/src``.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.bench_slowd import _best_time as _best


def main(argv: list[str] | None = None) -> dict:
    from moviessl.ssl.augment import augment_views
    from moviessl.video import augment as A

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16, help="clips per view (the cpu preset's batch)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    B, S, T = args.batch, args.size, args.frames
    views = [torch.randint(0, 256, (B, 3, T, S, S), dtype=torch.uint8, generator=g) for _ in range(2)]
    augs = A.cvrl_augment_pair(S)
    x = torch.rand(2 * B, 3, T, S, S, generator=g)
    f = 0.5 + torch.rand(2 * B, generator=g)
    shift = 0.4 * torch.rand(2 * B, generator=g) - 0.2
    sigma = 0.1 + 1.9 * torch.rand(2 * B, generator=g)
    k = augs[0].blur_kernel
    p = augs[0].sample_params(2 * B, S, S, g)
    p.update(jitter=torch.zeros(2 * B, dtype=torch.bool), gray=p["jitter"], blur=p["jitter"], solarize=p["jitter"])
    ops = {
        "crop + flip (grid_sample)": lambda: augs[0].apply_params(x, p),
        "brightness": lambda: A.adjust_brightness(x, f),
        "contrast": lambda: A.adjust_contrast(x, f),
        "saturation": lambda: A.adjust_saturation(x, f),
        "hue": lambda: A.adjust_hue(x, shift),
        "grayscale": lambda: A.rgb_to_gray(x),
        f"blur ({k} taps)": lambda: A.gaussian_blur(x, sigma, k),
        "solarise": lambda: A.solarize(x),
    }
    res = {
        "clips_per_view": B,
        "input": [3, T, S, S],
        "threads": args.threads,
        "pair_s": _best(lambda: (torch.manual_seed(0), augment_views(augs, views)), args.iters),
        "ops_s": {name: _best(fn, args.iters) for name, fn in ops.items()},
    }
    print(f"CVRL pair, 2 x {B} clips of 3x{T}x{S}² at {args.threads} thread(s): {res['pair_s'] * 1e3:.1f} ms")
    print(f"each op alone on {2 * B} clips:")
    for name, t in res["ops_s"].items():
        print(f"  {name:<28s} {t * 1e3:7.1f} ms")
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.bench_augment")
