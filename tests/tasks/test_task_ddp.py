"""The task stages under Lightning's DDP on 2 CPU processes, through the real CLI, for more than one
step: a fine-tuned TxE's [MASK] token and a scene-only OT's instance pathway get no gradient (DDP
must be told, or it fails at the second step), a frozen TxE is frozen before DDP wraps the model,
and rank 0's scores reach the other rank (a tuning loop decides the same on every rank)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moviessl.dist import fresh_launch_env

DDP = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.progress_bar=false"]


def _cli(*args, timeout=300) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("moviessl")
    exe = str(exe) if exe.is_file() else shutil.which("moviessl")
    if exe is None:
        pytest.skip("the moviessl console script is not installed")
    return subprocess.run(
        [exe, *map(str, args)], env=fresh_launch_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("scales", [(0.0, 1.0), (1.0, 0.0), (0.0, 0.0), (0.5, 1.0)])
def test_lr_scale_zero_parts_are_frozen_in_setup(scales):
    """Frozen in ``setup`` -- which Lightning runs before DDP wraps the model -- not in
    ``configure_optimizers``, which runs after the wrap (DDP would keep reducing their gradients)."""
    from torch import nn

    from moviessl.tasks.base import TaskModule, TaskOptim

    model = nn.Module()
    model.encoder = nn.Module()
    model.encoder.backbone, model.encoder.txe, model.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
    module = TaskModule(model, TaskOptim(lr=1e-3, backbone_lr_scale=scales[0], txe_lr_scale=scales[1]))
    assert all(p.requires_grad for p in model.parameters())
    module.setup("fit")
    for part, scale in zip(("backbone", "txe"), scales):
        assert all(p.requires_grad == (scale > 0) for p in getattr(model.encoder, part).parameters()), part
    assert all(p.requires_grad for p in model.head.parameters())


@pytest.mark.parametrize("txe_lr_scale", [1.0, 0.0])
def test_vidsitu_relation_with_a_txe_under_ddp(vidsitu_fixture, tmp_path, txe_lr_scale):
    ann, feats = vidsitu_fixture
    out = tmp_path / "rel"
    args = ["finetune", "vidsitu", "--task", "relation", "--data-root", ann, "--features", feats]
    args += ["--contextualizer", "scratch", "--seeds", "2", "--out", out, "relation.epochs=3"]
    timeout = ["trainer.ddp_timeout_s=3600"] if txe_lr_scale == 0 else []  # a DDPStrategy instance, not a name
    p = _cli(*args, f"relation.txe_lr_scale={txe_lr_scale}", *timeout, *DDP)
    assert p.returncode == 0, p.stderr[-3000:]
    # rank 1, started by running the command again, printed the table, the result and its INFO lines too
    assert [line.startswith("{") for line in p.stdout.splitlines()].count(True) == 1, p.stdout
    assert p.stderr.count("relation: 24 train segments") == 1, p.stderr[-3000:]
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert [sorted(r["metrics"]) for r in runs] == [["mean_acc", "top1_acc"]] * 2
    for seed in (0, 1):
        ckpt = out / f"seed{seed}" / "checkpoints" / "last.ckpt"
        import torch

        c = torch.load(ckpt, weights_only=False, map_location="cpu")
        assert c["global_step"] >= 2  # past the step where unused parameters fail DDP
        groups = {g["name"] for g in c["optimizer_states"][0]["param_groups"]}
        assert ("txe" in groups) == (txe_lr_scale > 0)  # a frozen TxE is not optimised at all


def test_a_task_run_under_ddp_logs_twice_an_epoch(vidsitu_fixture, tmp_path):
    """The task runner logs about twice an epoch, from its loader's batches; under DDP it counted the
    whole loader's (24 segments in batches of 2: 12), where each of 2 processes trains 6 steps an
    epoch, so it logged once an epoch (steps 5 and 11), half the points a one-process run plots."""
    import csv

    ann, feats = vidsitu_fixture
    out = tmp_path / "verb"
    args = ["finetune", "vidsitu", "--task", "verb", "--data-root", ann, "--features", feats, "--seeds", "1"]
    p = _cli(*args, "--out", out, "verb.epochs=2", "verb.batch_size=2", *DDP)
    assert p.returncode == 0, p.stderr[-3000:]
    with open(out / "seed0" / "logs" / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r["train/loss"]] == [2, 5, 8, 11]


def test_rank_0_failing_to_export_stops_the_other_rank_with_a_line_not_a_traceback(vidsitu_fixture, tmp_path):
    """Rank 0 alone scores and exports a seed; where it cannot (here its ``model.pt`` cannot be written),
    the rank waiting for its scores ended in a RuntimeError traceback under rank 0's one line."""
    ann, feats = vidsitu_fixture
    out = tmp_path / "rel"
    (out / "seed0" / "model.pt" / "x").mkdir(parents=True)  # a folder where rank 0 writes the model
    args = ["finetune", "vidsitu", "--task", "relation", "--data-root", ann, "--features", feats]
    p = _cli(*args, "--contextualizer", "scratch", "--seeds", "1", "--out", out, "relation.epochs=1", *DDP)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "model.pt: cannot write (Is a directory)" in p.stderr
    assert "Traceback" not in p.stderr, p.stderr[-3000:]


def test_lvu_under_ddp(tmp_path):
    """Scene-only OT rows leave the instance pathway without gradient; ``train.epochs_grid`` reads
    rank 0's held-out scores on every rank; the OT's masked-instance pretraining and an OT++ run
    (instances + scene tokens, from that initialisation) train for several steps."""
    import torch

    from moviessl.checkpoint import arch_spec, save_checkpoint
    from moviessl.models import build_slowd
    from moviessl.synth import generate

    lvu = generate(tmp_path / "synth", preset="tiny", seed=0, progress=False, n_lvu=10) / "lvu"
    torch.manual_seed(0)
    kw = dict(preset="slowd_cpu", widths=[8, 8, 16, 16], stem_width=8)
    model = build_slowd(**kw)
    bb = tmp_path / "backbone.pt"
    meta = {"input": {"num_frames": 4, "stride": 8, "short_side": 32, "crop": 32}, "method": "random"}
    save_checkpoint(
        bb,
        stage="backbone",
        arch=arch_spec("moviessl.models.slowd:build_slowd", **kw),
        state_dict=model.state_dict(),
        meta={**meta, "out_dim": model.out_dim},
    )
    ev = tmp_path / "ev"
    p = _cli("extract", "--backbone", bb, "--videos", lvu, "--out", ev, "--num-workers", "0", "--accelerator", "cpu")
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "tuned"
    args = ["finetune", "lvu", "--task", "like_ratio", "--data-root", lvu, "--scene-features", ev]
    args += ["--scene-kind", "feats", "--seeds", "2", "--out", out, "train.epochs_grid=[1,3]", "train.tune_seeds=2"]
    p = _cli(*args, "train.batch_size=2", *DDP)
    assert p.returncode == 0, p.stderr[-3000:]
    tuning = json.loads((out / "tune" / "tuning.json").read_text())
    assert set(tuning["values"]) == {"1", "3"} and all(len(v) == 2 for v in tuning["values"].values())
    s = json.loads((out / "summary.json").read_text())
    assert s["epochs"] == tuning["best"] and len(s["runs"]) == 2 and all(r["metrics"] for r in s["runs"])

    inst, ot = tmp_path / "inst", tmp_path / "ot"
    p = _cli("extract-instances", "--backbone", bb, "--videos", lvu, "--tracks", lvu / "tracks", "--out", inst)
    assert p.returncode == 0, p.stderr[-3000:]
    teacher = tmp_path / "teacher.ckpt"  # a supervised run's Lightning checkpoint holds its classifier
    head = {"classifier.1.weight": torch.randn(5, 16), "classifier.1.bias": torch.zeros(5)}
    torch.save({"state_dict": head}, teacher)
    p = _cli("pretrain-ot", "--instances", inst, "--teacher", teacher, "--out", ot, "trainer.max_steps=3", *DDP)
    assert p.returncode == 0, p.stderr[-3000:]
    args = ["finetune", "lvu", "--task", "scene", "--data-root", lvu, "--instances", inst, "--scene-features", ev]
    args += ["--scene-kind", "feats", "--init", ot / "model.pt", "--seeds", "1", "--out", tmp_path / "otpp"]
    # scene tokens contextualised here: Lightning's launcher starts rank 1 by running the command again,
    # and that rank reads the TxE outputs rank 0 cached instead of running the TxE over every film again
    from moviessl.models.txe import build_txe

    kw = dict(in_dim=16, dim=16, heads=2, mlp_dim=16, depth=1)
    txe = build_txe("txe_cpu", **kw).state_dict()
    arch = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", **kw)
    save_checkpoint(tmp_path / "txe.pt", stage="context", arch=arch, state_dict=txe, meta={"in_dim": 16})
    p = _cli(*args, "--contextualizer", tmp_path / "txe.pt", "train.epochs=2", "train.batch_size=2", *DDP)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((tmp_path / "otpp" / "summary.json").read_text())["runs"][0]["metrics"]
    (cache,) = (tmp_path / "otpp" / "scene_ctx").iterdir()
    assert len(list(cache.glob("*_ctx.npy"))) == len(list(ev.glob("*_feats.npy"))) == 10
    assert p.stderr.count("moviessl.tasks: contextualising ") == 1, p.stderr[-3000:]  # rank 0's 10 films
    assert "contextualising 10 film(s)" in p.stderr
