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


def test_maskpred_validation_does_not_depend_on_the_process_count(tmp_path):
    """``val/loss`` and ``val/retrieval_acc`` of one fixed model on 7 held-out windows: the same on 1
    process (batches of 4) and on 2 (batches of 2). The masks were drawn per batch (seeded by its
    index), so a window's mask followed the batch it fell in, and Lightning's distributed sampler
    padded the 7 windows to 8 with a copy that was scored twice; the epoch means were also over
    batches' windows, not over the masked tokens."""
    import json

    script = Path(__file__).with_name("ddp_val_script.py")
    res = {}
    for devices, batch in ((1, 4), (2, 2)):
        p = subprocess.run(
            [sys.executable, str(script), str(tmp_path), str(devices), str(batch)],
            env=fresh_launch_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert p.returncode == 0, p.stderr[-3000:]
        res[devices] = json.loads((tmp_path / f"d{devices}_b{batch}.json").read_text())
    assert set(res[1]) == {"val/loss", "val/retrieval_acc"}
    assert 0 < res[1]["val/retrieval_acc"] < 1  # a metric that can tell two mask draws apart
    for k, v in res[1].items():
        assert abs(res[2][k] - v) < 1e-5, (k, res)


def test_a_process_that_does_not_speak_for_the_job_does_not_read_the_leaders_model(tmp_path, monkeypatch):
    """Rank 1 returns from ``pretrain_context`` as training ends, while rank 0 writes model.pt: it read
    the file there (an earlier run's, here a torn one) and failed, exit 2, a finished job reported as
    failed by torchrun, for a line only rank 0 shows."""
    import moviessl.context.pretrain as pretrain
    from moviessl.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_bytes(b"PK\x03\x04 torn")  # the earlier run's, before rank 0 replaces it
    monkeypatch.setattr(pretrain, "pretrain_context", lambda *a, **k: out / "model.pt")
    for k in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's launcher's rank 1 (it sets the launch's size too)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["pretrain-context", "--features", str(tmp_path), "--out", str(out)]) == 0
