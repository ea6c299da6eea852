"""``moviessl selftest``'s Object Transformer stage (:data:`moviessl.selftest.HOOKS`).

The paper's OT++ row on LVU, wired end to end at the preset's shapes on the selftest's videos:
LVU's release layout is written for them (``lvu_1.0/scene/*.csv`` and boxes with track ids in
``instance_meta/instance_meta_scene.pkl``), ``extract_instances`` pools the backbone's RoI features of
those boxes (the paper's Slow-D instance pathway, §5 †), and ``run_finetune`` trains the scene task
for one LVU epoch with the instances and the MaskPred TxE's scene tokens (OT++), then scores val and
test by LVU's protocol. Checks: finite losses and metrics, the exported model rebuilt bit-identically,
widths agreeing from stage to stage, and for ``--preset paper`` LVU's OT (768 x 3 layers, 12 heads).
"""

from __future__ import annotations

import math
import pickle
import shutil
from pathlib import Path

from ...selftest import (
    PAPER_SHAPES,
    Ctx,
    _overrides,
    _standin_backbone,
    _standin_features,
    expect,
    finite_losses,
    roundtrip,
)


def write_release(root: Path, vids: list[str], seconds: int = 10) -> Path:
    """LVU's layout for the scene task: three splits of ``vids``, two tracked boxes every second."""
    splits = {"train": vids[:-2], "val": vids[-2:-1], "test": vids[-1:]}
    for split, ids in splits.items():
        p = root / "lvu_1.0" / "scene" / f"{split}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{k % 6} office {v} tt{k:07d}\n" for k, v in enumerate(ids))
        p.write_text("class_id class_name youtube_id imdb_id\n" + rows)
    boxes = ("0.100,0.200,0.450,0.950", "0.500,0.150,0.900,0.900")
    meta = {v: {s: {b: [s // 5, k] for k, b in enumerate(boxes)} for s in range(seconds)} for v in vids}
    (root / "instance_meta").mkdir(parents=True, exist_ok=True)
    with open(root / "instance_meta" / "instance_meta_scene.pkl", "wb") as f:
        pickle.dump(meta, f)
    return root


def selftest(ctx: Ctx) -> str:
    from ...features.instances import InstanceStore, extract_instances
    from .runner import run_finetune

    videos = ctx.data["vidsitu"] / "vsitu_video_trimmed_dir"
    vids = sorted(p.stem for p in videos.glob("*.mp4"))
    root = write_release(ctx.out / "lvu", vids)
    bb = ctx.data.get("backbone") or _standin_backbone(ctx)
    inst_dir, out = ctx.out / "lvu_instances", ctx.out / "lvu_scene"
    for d in (inst_dir, out):  # fresh, as every selftest stage: a kept --out's runs would be reused unrun
        shutil.rmtree(d, ignore_errors=True)
    s = extract_instances(
        bb, videos, root / "instance_meta", inst_dir, device="cuda" if ctx.device == "cuda" else "cpu", progress=False
    )
    expect(s["counts"] == {"ok": len(vids), "bad": 0}, f"{inst_dir}/index.json: {s['counts']}")
    store = InstanceStore(inst_dir)
    n_boxes = sum(len(store.load(v)) for v in store.ids)
    expect(n_boxes == 2 * 10 * len(vids), f"{inst_dir}: {n_boxes} boxes pooled, {2 * 10 * len(vids)} given")
    feats = ctx.data.get("features") or _standin_features(ctx)
    over = ["train.epochs=1", "train.batch_size=2", "data.num_workers=0", "data.eval_batch_size=4"]
    over += [*ctx.trainer(None), "trainer.ckpt_every_n_steps=0", *_overrides(ctx, "lvu")]
    res = run_finetune(
        "scene",
        root,
        instances=inst_dir,
        scene_features=feats,
        scene_kind="feats",
        contextualizer=ctx.data.get("context"),
        out=out,
        preset=ctx.preset,
        overrides=over,
    )
    expect(not res.get("partial"), f"{out}: {res.get('partial')}")
    run = res["runs"][0]
    metrics = run["metrics"]
    expect(set(metrics) == {"val_top1", "test_top1"}, f"{out}: metrics {sorted(metrics)}, expected val and test top-1")
    expect(all(math.isfinite(float(v)) for v in metrics.values()), f"{out}: non-finite metrics {metrics}")
    finite_losses(Path(run["dir"]))
    model = roundtrip(Path(run["dir"]) / "model.pt", "lvu")
    ot = model.ot
    expect(ot.in_dim == store.dim, f"OT reads {ot.in_dim}-d instances, extract-instances gave {store.dim}-d")
    heads = ot.blocks[0].attn.heads
    if ctx.paper:
        p = PAPER_SHAPES["ot"]
        expect(
            (ot.dim, len(ot.blocks), heads) == (p["dim"], p["depth"], p["heads"]), "OT is not LVU's 768 x 3, 12 heads"
        )
        expect(store.dim == PAPER_SHAPES["feature_dim"], f"RoI features {store.dim}-d, the paper's Slow-D 2048")
    note = ", ".join(f"{k} {float(v):.1f}" for k, v in metrics.items())
    return (
        f"{note}; OT {ot.dim} x {len(ot.blocks)}, {heads} heads; {n_boxes} boxes {store.dim}-d; scene {ot.scene_dim}-d"
    )
