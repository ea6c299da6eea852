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
    "cpu": dict(
        backbone="slowd_cpu", txe="txe_cpu", short_side=64, crop=64, video=(96, 128), batch=32, loop_batch=2, queue=4096
    ),
    "paper": dict(
        backbone="slowd_r50",
        txe="txe_paper",
        short_side=256,
        crop=224,
        video=(256, 340),
        batch=64,
        loop_batch=1,
        queue=65536,
    ),
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
        f = np.ascontiguousarray(tex[:, t % w : t % w + w])
        for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(pkt)
    for pkt in s.encode():
        c.mux(pkt)
    c.close()
    return path


def _module(sc: dict, in_dim: int):
    from moviessl.config import load_config
    from moviessl.context.module import MaskPredModule

    cfg = load_config(
        "context",
        "paper",
        [f"model.txe={sc['txe']}", f"maskpred.queue_size={sc['queue']}", "maskpred.keys_per_sample=2"],
    )
    mod = MaskPredModule(cfg, in_dim)
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
    from moviessl.context.windows import FeatureWindows
    from moviessl.features.extract import clip_uint8
    from moviessl.features.store import FeatureStore
    from moviessl.models import build_slowd
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
    return {
        "backbone": sc["backbone"],
        "txe": sc["txe"],
        "feature_dim": dim,
        "clip": f"16x4 @ {sc['crop']}²",
        "cached_tokens_per_s": round(cached, 1),
        "in_loop_tokens_per_s": round(in_loop, 3),
        "speedup": round(cached / in_loop, 1),
        "decode_backbone_clips_per_s": round(1.0 / feat_per_token, 2),
        "in_loop_backbone_share": round(feat_per_token * in_loop, 4),
        "cached_batch": sc["batch"],
        "in_loop_batch": b,
        "steps": steps,
        "in_loop_steps": loop_steps,
    }


# --- acceptance on SynthMovies -----------------------------------------------------------------


def _cli(*args) -> None:
    from moviessl.cli import main as cli_main

    rc = cli_main([str(a) for a in args])
    if rc:
        raise SystemExit(f"moviessl {args[0]} failed ({rc})")


def _stack(store, ids):
    return np.stack([store.load(v) for v in ids])  # (clips, 5, D)


@torch.no_grad()
def _masked_outputs(mod, x: torch.Tensor, use_head: bool) -> torch.Tensor:
    """For every clip and event t: the output at t with t alone masked -> (clips, 5, dim)."""
    b, n, _ = x.shape
    outs = []
    for t in range(n):
        mask = torch.zeros(b, n, dtype=torch.bool)
        mask[:, t] = True
        o = mod.txe(x, mask=mask)[:, t]
        outs.append(mod.head(o) if use_head else o)
    return torch.stack(outs, 1)


def acceptance(
    work: str | Path,
    synth_root: str | Path | None = None,
    backbone: str | Path | None = None,
    context_steps: int = 300,
    backbone_steps: int = 300,
    seed: int = 0,
) -> dict:
    """The issue's acceptance experiment, end to end through the CLI on SynthMovies (demo):

    CVRL backbone on the action clips -> ``moviessl extract`` of VidSitu-style train / valid clips and
    LVU-style movies -> ``moviessl pretrain-context`` on train + LVU features (no labels) -> on the
    valid clips, (1) fill-in retrieval: each event masked alone, its true feature ranked among all
    train events (+ the other valid events of other clips), MaskPred TxE vs a random TxE vs copying
    the neighbours' mean; (2) a linear verb probe (trained on train events) on degraded valid
    events: masked-event TxE output vs the raw backbone feature of the degraded event.
    """
    import json

    from moviessl.context import maskpred as mp
    from moviessl.context.module import MaskPredModule
    from moviessl.features import FeatureStore
    from moviessl.synth.headroom import fit_logreg

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    root = Path(synth_root) if synth_root else work / "synth"
    if not (root / "vidsitu" / "ground_truth.json").is_file():
        _cli("synth", "--preset", "demo", "--out", root)
    if backbone is None:
        backbone = work / "backbone" / "model.pt"
        if not backbone.is_file():
            _cli(
                "pretrain-backbone",
                "--method",
                "cvrl",
                "--data",
                root / "actions" / "train.csv",
                "--out",
                backbone.parent,
                "--no-probe",
                "--resume",  # an interrupted earlier call's run is continued (a second run into it is refused)
                f"trainer.max_steps={backbone_steps}",
                "trainer.progress_bar=false",
            )
    gt = json.loads((root / "vidsitu" / "ground_truth.json").read_text())
    vdir = root / "vidsitu" / "vsitu_video_trimmed_dir"
    feats = {}
    for split in ("train", "valid"):
        ids = sorted(v for v, g in gt.items() if isinstance(g, dict) and g.get("split") == split)
        lst = work / f"vidsitu_{split}.txt"
        lst.write_text("".join(f"{vdir / v}.mp4\n" for v in ids))
        feats[split] = work / f"feats_{split}"
        _cli("extract", "--backbone", backbone, "--videos", lst, "--out", feats[split], "--num-workers", "0")
    feats["lvu"] = work / "feats_lvu"
    _cli("extract", "--backbone", backbone, "--videos", root / "lvu", "--out", feats["lvu"], "--num-workers", "0")
    ctx_out = work / f"context_{context_steps}"
    if not (ctx_out / "model.pt").is_file():
        _cli(
            "pretrain-context",
            "--features",
            feats["train"],
            "--features",
            feats["lvu"],
            "--out",
            ctx_out,
            f"trainer.max_steps={context_steps}",
            "trainer.progress_bar=false",
            f"seed={seed}",
        )

    tr, va = FeatureStore(feats["train"]), FeatureStore(feats["valid"])
    xtr, xva = torch.from_numpy(_stack(tr, tr.ids)), torch.from_numpy(_stack(va, va.ids))
    ytr = np.array([[e["verb"] for e in gt[v]["events"]] for v in tr.ids])
    yva = np.array([[e["verb"] for e in gt[v]["events"]] for v in va.ids])
    deg = np.array([[e.get("degraded") is not None for e in gt[v]["events"]] for v in va.ids])
    verbs = sorted(set(ytr.ravel()) | set(yva.ravel()))
    vid = {v: i for i, v in enumerate(verbs)}
    ytr_i, yva_i = np.vectorize(vid.get)(ytr), np.vectorize(vid.get)(yva)

    trained = MaskPredModule.load_from_checkpoint(ctx_out / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    torch.manual_seed(seed)
    random = MaskPredModule(**trained.hparams).eval()
    random.target_mean.copy_(trained.target_mean)
    # the same fixed input normalisation as the trained TxE (as maskpred_fillin's control): only the
    # weights are untrained, else the control also differs in what its input projection sees
    random.txe.input_norm.load_state_dict(trained.txe.input_norm.state_dict())

    # (1) fill-in retrieval among every train event and the other clips' valid events
    def retrieval(mod) -> float:
        pool = mod.targets(torch.cat([xtr.reshape(-1, xtr.shape[-1]), xva.reshape(-1, xva.shape[-1])]))
        pool_clip = torch.cat([torch.full((xtr.shape[0] * 5,), -1), torch.arange(xva.shape[0]).repeat_interleave(5)])
        pred = _masked_outputs(mod, xva, use_head=True).reshape(-1, pool.shape[1])
        target = mod.targets(xva.reshape(-1, xva.shape[-1]))
        clip = torch.arange(xva.shape[0]).repeat_interleave(5)
        return mp.retrieval_accuracy(pred, target, pool, clip, pool_clip)  # the clip's own events left out

    def neighbour_copy() -> float:
        pool = trained.targets(torch.cat([xtr.reshape(-1, xtr.shape[-1]), xva.reshape(-1, xva.shape[-1])]))
        pool_clip = torch.cat([torch.full((xtr.shape[0] * 5,), -1), torch.arange(xva.shape[0]).repeat_interleave(5)])
        nb = []
        for t in range(5):
            idx = [j for j in (t - 1, t + 1) if 0 <= j < 5]
            nb.append(xva[:, idx].mean(1))
        pred = trained.targets(torch.stack(nb, 1).reshape(-1, xva.shape[-1]))
        target = trained.targets(xva.reshape(-1, xva.shape[-1]))
        clip = torch.arange(xva.shape[0]).repeat_interleave(5)
        return mp.retrieval_accuracy(pred, target, pool, clip, pool_clip)

    fill = {
        "maskpred_txe": retrieval(trained),
        "random_txe": retrieval(random),
        "neighbour_mean": neighbour_copy(),
        "chance": 1.0 / (xtr.shape[0] * 5 + (xva.shape[0] - 1) * 5 + 1),
    }

    # (2) linear verb probe: train on all train events, test on degraded / clean valid events
    def probe(ftr: np.ndarray, fva: np.ndarray) -> dict:
        pred = fit_logreg(ftr.reshape(-1, ftr.shape[-1]), ytr_i.ravel(), len(verbs), l2=1e-2)(
            fva.reshape(-1, fva.shape[-1])
        )
        ok = (pred == yva_i.ravel()).reshape(yva_i.shape)

        def se(a):
            return float(np.sqrt(a.mean() * (1 - a.mean()) / max(1, a.size)))

        return {
            "degraded_acc": float(ok[deg].mean()),
            "degraded_se": se(ok[deg]),
            "clean_acc": float(ok[~deg].mean()),
            "all_acc": float(ok.mean()),
        }

    def masked_txe(mod, x):
        return _masked_outputs(mod, x, use_head=False).numpy()

    def ctx_txe(mod, x):
        with torch.no_grad():
            return mod.txe(x).numpy()

    probes = {
        "raw_backbone": probe(xtr.numpy(), xva.numpy()),
        "maskpred_txe_masked": probe(masked_txe(trained, xtr), masked_txe(trained, xva)),
        "random_txe_masked": probe(masked_txe(random, xtr), masked_txe(random, xva)),
        "maskpred_txe_unmasked": probe(ctx_txe(trained, xtr), ctx_txe(trained, xva)),
    }
    res = {
        "fill_in_retrieval_acc": fill,
        "verb_probe": probes,
        "counts": {
            "train_clips": int(xtr.shape[0]),
            "valid_clips": int(xva.shape[0]),
            "valid_degraded_events": int(deg.sum()),
            "lvu_movies": len(FeatureStore(feats["lvu"])),
            "verbs": len(verbs),
        },
        "context_steps": context_steps,
        "feature_dim": int(xtr.shape[-1]),
    }
    (work / "acceptance.json").write_text(json.dumps(res, indent=2))
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="cpu,paper", help="comma-separated: cpu, paper")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--acceptance", metavar="WORKDIR", help="instead: the SynthMovies acceptance experiment in WORKDIR")
    ap.add_argument("--synth", help="existing SynthMovies root (default: generate the demo preset in WORKDIR)")
    ap.add_argument("--backbone", help="existing backbone checkpoint (default: CVRL on the action clips)")
    ap.add_argument("--context-steps", type=int, default=300)
    args = ap.parse_args([] if argv is None else argv)  # run_all calls main(): not its own argv
    if args.acceptance:
        res = acceptance(args.acceptance, args.synth, args.backbone, args.context_steps)
        print(res)
        return res
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scales.split(","):
            out[name] = bench_scale(name.strip(), args.steps, Path(tmp))
            print(name, out[name], flush=True)
    return out


if __name__ == "__main__":
    import sys

    from benchmarks import run_main

    run_main(lambda: main(sys.argv[1:]), "benchmarks.bench_maskpred")
