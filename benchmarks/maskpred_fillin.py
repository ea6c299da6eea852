"""Does the MaskPred TxE fill in a masked event? Fill-in retrieval on the valid clips against the
references that need no training (issue 13: "train it until it beats the neighbour-mean reference").

    python -m benchmarks.maskpred_fillin --vidsitu-features F --lvu-features G --out DIR [key=value ...]
    python -m benchmarks.maskpred_fillin --vidsitu-features F --out DIR \
        --from runs/demo/context/cvrl_contrastive_mask1-3/r0

Pretrains a TxE with ``moviessl pretrain-context``'s library call on the VidSitu *train* features
(+ the LVU-style pool), never the valid clips, with the cpu preset and the overrides given; then for
every valid event, masked alone, ranks its true target among all train events and the other valid
clips' events (its own clip's events left out) by the TxE's prediction, and reports the accuracy
next to: the mean of the two neighbours' raw features, and a random (untrained) TxE. Chance = 1/pool.
Prints one JSON object and writes DIR/fillin.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from moviessl.config import load_config
from moviessl.context import maskpred as mp
from moviessl.context.module import MaskPredModule
from moviessl.context.pretrain import pretrain_context
from moviessl.features.store import FeatureStore
from moviessl.training import quiet_lightning


def _stack(store: FeatureStore, ids) -> torch.Tensor:
    return torch.from_numpy(np.stack([store.load(v) for v in ids]))


@torch.no_grad()
def masked_outputs(mod: MaskPredModule, x: torch.Tensor) -> torch.Tensor:
    """For every clip and event t: the prediction at t with t alone masked -> (clips, 5, tdim)."""
    b, n, _ = x.shape
    outs = []
    for t in range(n):
        mask = torch.zeros(b, n, dtype=torch.bool)
        mask[:, t] = True
        outs.append(mod.head(mod.txe(x, mask=mask)[:, t]))
    return torch.stack(outs, 1)


def fillin(mod: MaskPredModule, xtr: torch.Tensor, xva: torch.Tensor) -> dict:
    mod.eval()
    d = xtr.shape[-1]
    pool = mod.targets(torch.cat([xtr.reshape(-1, d), xva.reshape(-1, d)]))
    pool_clip = torch.cat([torch.full((xtr.shape[0] * 5,), -1), torch.arange(xva.shape[0]).repeat_interleave(5)])
    clip = torch.arange(xva.shape[0]).repeat_interleave(5)
    target = mod.targets(xva.reshape(-1, d))
    pred = masked_outputs(mod, xva).reshape(-1, pool.shape[1])
    nb = torch.stack([xva[:, [j for j in (t - 1, t + 1) if 0 <= j < 5]].mean(1) for t in range(5)], 1)
    nb_pred = mod.targets(nb.reshape(-1, d))
    return {
        "txe": mp.retrieval_accuracy(pred, target, pool, clip, pool_clip),
        "neighbour_mean": mp.retrieval_accuracy(nb_pred, target, pool, clip, pool_clip),
        "chance": 1.0 / (xtr.shape[0] * 5 + (xva.shape[0] - 1) * 5 + 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vidsitu-features", required=True)
    ap.add_argument("--lvu-features", nargs="*", default=[], help="unlabelled feature folders (LVU, the pool)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--from", dest="src", default=None, help="score this finished pretrain-context folder instead")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    quiet_lightning()
    out = Path(args.out)
    cfg = load_config("context", args.preset, ["trainer.progress_bar=false", *args.overrides])
    feats = [args.vidsitu_features, *args.lvu_features]
    src = Path(args.src) if args.src else out
    if not (src / "model.pt").is_file():
        pretrain_context(feats, out, cfg, resume=True)
    store = FeatureStore(args.vidsitu_features)
    tr = [v for v in store.ids if store.info(v).get("split") == "train"]
    va = [v for v in store.ids if store.info(v).get("split") == "valid"]
    if not va:
        raise SystemExit(f"{args.vidsitu_features}: no split information (extract it from a VidSitu root)")
    xtr, xva = _stack(store, tr), _stack(store, va)
    trained = MaskPredModule.load_from_checkpoint(src / "checkpoints" / "last.ckpt", map_location="cpu")
    torch.manual_seed(0)
    random = MaskPredModule(**trained.hparams)
    random.target_mean.copy_(trained.target_mean)
    random.txe.input_norm.load_state_dict(trained.txe.input_norm.state_dict())
    res = {
        "trained": fillin(trained, xtr, xva),
        "random_txe": fillin(random, xtr, xva)["txe"],
        "steps": int(torch.load(src / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]),
        "txe": str(src),
        "overrides": args.overrides,
        "train_clips": len(tr),
        "valid_clips": len(va),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "fillin.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    from benchmarks import run_main

    run_main(main, "benchmarks.maskpred_fillin")
