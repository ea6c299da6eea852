"""MaskPred training throughput: cached event features vs running the backbone in the loop.

    python -m benchmarks.bench_maskpred [--scales cpu,paper] [--steps 10]

Both sides run the same MaskPred training step (TxE forward/backward, AdamW, queue update) on
windows of N = 5 tokens. "cached" reads the tokens from a feature folder (FeatureWindows over
``{id}_feats.npy``); "in the loop" first decodes the 5 event clips of each window from a real
H.264 file, pre-processes them and runs the frozen backbone (no grad) — what pretraining TxE would
cost without ``moviessl extract``. Numbers: training tokens (events) per second.

Scales: ``cpu`` = slowd_cpu (16x64²) + txe_cpu; ``paper`` = slowd_r50 (16x224², 2048-d) +
txe_paper (3x1024), fewer steps (the backbone side is slow on a CPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SCALES = {
    "cpu": dict(backbone="slowd_cpu", txe="txe_cpu", short_side=64, crop=64, video=(96, 128), batch=32, loop_batch=2,
                queue=4096),
    "paper": dict(backbone="slowd_r50", txe="txe_paper", short_side=256, crop=224, video=(256, 340), batch=64, loop_batch=1,
                  queue=65536),
}
N = 5


def _write_video(path: Path, seconds: float, h: int, w: int, fps: int = 30) -> Path:
    import av

    rng = np.random.default_rng(0)
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.options = {"preset": "veryfast", "crf": "23"}
    tex = rng.integers(0, 255, (h, w * 2, 3), dtype=np.uint8)
    for t in range(int(seconds * fps)):
        f = np.ascontiguousarray(tex[:, t % w:t % w + w])
        for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(pkt)
    for pkt in s.encode():
        c.mux(pkt)
    c.close()
    return path


def _module(sc: dict, in_dim: int):
    from moviessl.ssl.context import MaskPredModule

    mod = MaskPredModule(in_dim=in_dim, txe_preset=sc["txe"], queue_size=sc["queue"], keys_per_sample=2)
    opt = torch.optim.AdamW([p for p in mod.parameters() if p.requires_grad], lr=1e-4)
    return mod.train(), opt


def _step(mod, opt, batch) -> None:
    pred, target, tuid, _ = mod.masked_predictions(batch)
    loss, _ = mod.compute_loss(pred, target, tuid)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    mod.enqueue(batch)


def bench_scale(name: str, steps: int, tmp: Path) -> dict:
    from moviessl.features.store import FeatureStore
    from moviessl.features.extract import clip_uint8
    from moviessl.models import build_slowd
    from moviessl.ssl.context import FeatureWindows
    from moviessl.video import VideoReader, normalize

    sc = SCALES[name]
    torch.manual_seed(0)
    backbone = build_slowd(sc["backbone"]).eval()
    dim = backbone.out_dim
    # cached: a folder of 200 ten-second "clips" of random features, read through the real dataset
    feats = tmp / f"feats_{name}"
    feats.mkdir()
    rng = np.random.default_rng(0)
    for i in range(200):
        np.save(feats / f"v{i:04d}_feats.npy", rng.random((N, dim), dtype=np.float32))
    ds = FeatureWindows([FeatureStore(feats)], window=N)
    loader = torch.utils.data.DataLoader(ds, batch_size=sc["batch"], shuffle=True, drop_last=True)
    mod, opt = _module(sc, dim)
    it = iter(loader)

    def next_batch():
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(loader)
            return next(it)

    for _ in range(2):  # warm-up
        _step(mod, opt, next_batch())
    # medians of per-step times: the machine may be shared, medians resist the other jobs' spikes
    t_cached = []
    for _ in range(steps):
        t0 = time.perf_counter()
        _step(mod, opt, next_batch())
        t_cached.append(time.perf_counter() - t0)
    cached = sc["batch"] * N / float(np.median(t_cached))

    # in the loop: decode + pre-process + backbone for every token, then the same step
    video = _write_video(tmp / f"movie_{name}.mp4", 12.0, *sc["video"])
    inp = {"num_frames": 16, "stride": 4, "short_side": sc["short_side"], "crop": sc["crop"]}
    b = sc["loop_batch"]
    loop_steps = max(3, steps // (3 if name == "paper" else 1))

    def loop_batch(reader, k):
        clips = []
        for w in range(b):
            start = 1.0 + 2.0 * ((k * b + w) % 2)
            clips += [clip_uint8(reader, start + 2.0 * j, inp) for j in range(N)]
        with torch.no_grad():
            x = normalize(torch.from_numpy(np.stack(clips)).float().div_(255.0))
            f = backbone(x).view(b, N, dim)
        uid = torch.arange(b * N).view(b, N) + k * b * N
        return {"x": f, "pad": torch.zeros(b, N, dtype=torch.bool), "uid": uid}

    # Per token, the in-loop trainer pays decode + backbone for the token plus the same training
    # step as the cached trainer at its batch size (the backbone batch here is smaller only to keep
    # the benchmark short; backbone cost is linear in clips).
    t_feat = []
    with VideoReader(video) as r:
        for k in range(loop_steps + 1):
            t0 = time.perf_counter()
            loop_batch(r, k)
            if k:  # the first is warm-up
                t_feat.append(time.perf_counter() - t0)
    feat_per_token = float(np.median(t_feat)) / (b * N)
    step_per_token = 1.0 / cached
    in_loop = 1.0 / (feat_per_token + step_per_token)
    return {"backbone": sc["backbone"], "txe": sc["txe"], "feature_dim": dim, "clip": f"16x4 @ {sc['crop']}²",
            "cached_tokens_per_s": round(cached, 1), "in_loop_tokens_per_s": round(in_loop, 3),
            "speedup": round(cached / in_loop, 1), "decode_backbone_clips_per_s": round(1.0 / feat_per_token, 2), "in_loop_backbone_share": round(feat_per_token * in_loop, 4),
            "cached_batch": sc["batch"], "in_loop_batch": b, "steps": steps, "in_loop_steps": loop_steps}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="cpu,paper", help="comma-separated: cpu, paper")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scales.split(","):
            out[name] = bench_scale(name.strip(), args.steps, Path(tmp))
            print(name, out[name], flush=True)
    return out


if __name__ == "__main__":
    main()
