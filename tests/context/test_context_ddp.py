"""``moviessl pretrain-context`` (MaskPred) under Lightning's DDP on 2 CPU processes, for several steps,
with Eq. 1 and with Table 2's L2 loss: every trainable parameter must take part (DDP fails at the
second step otherwise), and rank 0 writes the model after the last step."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moviessl.checkpoint import load_checkpoint
from moviessl.dist import fresh_launch_env

TINY = [
    "model.txe_overrides.dim=32",
    "model.txe_overrides.heads=2",
    "model.txe_overrides.mlp_dim=64",
    "model.txe_overrides.depth=1",
    "data.batch_size=4",
    "maskpred.queue_size=64",
    "trainer.max_steps=4",
    "trainer.progress_bar=false",
]
DDP = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu"]


@pytest.mark.parametrize("loss", ["infonce", "l2"])
def test_maskpred_under_ddp_for_several_steps(tmp_path, loss):
    exe = Path(sys.executable).with_name("moviessl")
    exe = str(exe) if exe.is_file() else shutil.which("moviessl")
    if exe is None:
        pytest.skip("the moviessl console script is not installed")
    feats = tmp_path / "f"
    feats.mkdir()
    g = np.random.default_rng(0)
    for i in range(24):  # VidSitu's layout: (5, D) per clip
        np.save(feats / f"m{i:02d}_feats.npy", g.normal(size=(5, 16)).astype(np.float32))
    out = tmp_path / "ctx"
    args = [exe, "pretrain-context", "--features", str(feats), "--out", str(out), f"maskpred.loss={loss}"]
    p = subprocess.run([*args, *TINY, *DDP], env=fresh_launch_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    obj = load_checkpoint(out / "model.pt", stage="context")
    assert obj["meta"]["steps"] == 4 and obj["config"]["trainer"]["devices"] == 2
