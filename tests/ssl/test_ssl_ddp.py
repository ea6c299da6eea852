"""Two CPU processes (gloo) give the same loss and gradients as one process on the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from gloo_ranks import TIMEOUT_S, run_ranks
from moviessl.ssl.losses import info_nce_pairs
from moviessl.ssl.queue import MemoryQueue


def _data():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    w = torch.randn(6, 4, generator=g)
    x3 = torch.randn(8, 6, generator=g)  # CVRL's intra-video (hard) negatives
    return x1, x2, w, x3


def _loss_and_grad(x1, x2, w, x3=None, rows=None, ids=None):
    w = w.clone().requires_grad_()
    hard = None if x3 is None else F.normalize(x3 @ w, dim=1)
    z1, z2 = F.normalize(x1 @ w, dim=1), F.normalize(x2 @ w, dim=1)
    loss = info_nce_pairs(z1, z2, tau=0.1, hard_neg=hard, hard_for=rows, ids=ids)
    loss.backward()
    return loss.detach(), w.grad


SCORER_VIEW = [0, 1, 1, 0, 1, 0, 0, 1]  # which view of pair i (global) scores hard negative i
VIDEO_IDS = torch.tensor([0, 1, 2, 3, 4, 5, 0, 3])  # videos 0 and 3 twice, each on both ranks


def _local_rows(rank):
    return torch.tensor([v * 4 + i for i, v in enumerate(SCORER_VIEW[rank * 4 : (rank + 1) * 4])])


def _work(rank, world, out_dir):
    x1, x2, w, x3 = _data()
    sl = slice(rank * 4, (rank + 1) * 4)
    loss, grad = _loss_and_grad(x1[sl], x2[sl], w)
    hloss, hgrad = _loss_and_grad(x1[sl], x2[sl], w, x3[sl])
    # scorer rows are local row numbers of [z1; z2]: pair i's z1 is row i, its z2 row 4 + i
    floss, fgrad = _loss_and_grad(x1[sl], x2[sl], w, x3[sl], _local_rows(rank))
    iloss, igrad = _loss_and_grad(x1[sl], x2[sl], w, ids=VIDEO_IDS[sl])
    for g in (grad, hgrad, fgrad, igrad):
        dist.all_reduce(g)
        g /= world  # what DDP does
    torch.manual_seed(0)  # same init on every rank, as Lightning seeds them
    q = MemoryQueue(16, 6, require_divisible=True, track_ids=True)
    q.enqueue(x1[sl], torch.arange(8)[sl] + 100)
    torch.save(
        {
            "loss": loss,
            "grad": grad,
            "hloss": hloss,
            "hgrad": hgrad,
            "floss": floss,
            "fgrad": fgrad,
            "iloss": iloss,
            "igrad": igrad,
            "queue": q.queue.clone(),
            "ptr": int(q.ptr),
            "ids": q.get_ids(),
        },
        os.path.join(out_dir, f"r{rank}.pt"),
    )


@pytest.mark.timeout(4 * TIMEOUT_S)  # a backstop: gloo's timeout ends a stuck rank first
def test_two_processes_equal_one(tmp_path):
    run_ranks(_work, str(tmp_path))
    x1, x2, w, x3 = _data()
    loss1, grad1 = _loss_and_grad(x1, x2, w)
    hloss1, hgrad1 = _loss_and_grad(x1, x2, w, x3)
    floss1, fgrad1 = _loss_and_grad(x1, x2, w, x3, torch.tensor([v * 8 + i for i, v in enumerate(SCORER_VIEW)]))
    iloss1, igrad1 = _loss_and_grad(x1, x2, w, ids=VIDEO_IDS)
    assert loss1 < floss1 < hloss1 and iloss1 != loss1
    assert hloss1 > loss1  # the hard negatives are really in the denominator
    for r in range(2):
        res = torch.load(tmp_path / f"r{r}.pt")
        assert torch.allclose(res["loss"], loss1, atol=1e-5), (res["loss"], loss1)
        assert torch.allclose(res["grad"], grad1, atol=1e-5)
        # intra-video negatives are gathered too: every process scores all 8, as one process does
        assert torch.allclose(res["hloss"], hloss1, atol=1e-5), (res["hloss"], hloss1)
        assert torch.allclose(res["hgrad"], hgrad1, atol=1e-5)
        assert torch.allclose(res["floss"], floss1, atol=1e-5), (res["floss"], floss1)
        assert torch.allclose(res["fgrad"], fgrad1, atol=1e-5)
        # a video twice in the global batch (once per rank) is not its own negative on either rank
        assert torch.allclose(res["iloss"], iloss1, atol=1e-5), (res["iloss"], iloss1)
        assert torch.allclose(res["igrad"], igrad1, atol=1e-5)
        # queue: keys of both ranks, rank order, identical everywhere, pointer by the global batch
        assert res["ptr"] == 8
        assert torch.allclose(res["queue"][:8], x1)
        assert res["ids"][:8].tolist() == list(range(100, 108)) and (res["ids"][8:] == -1).all()
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt")["queue"] for r in range(2))
    assert torch.equal(r0, r1)


def test_lightning_ddp_leaves_queues_out_of_the_buffer_broadcast(tmp_path):
    """Under Lightning's DDP (2 CPU processes) BatchNorm's running statistics are still broadcast from
    rank 0 before every step, the queues are not: every rank writes the same all-gathered keys
    itself (MaskPred's paper queue would otherwise cost 512 MB of broadcast a step). Queues that
    start apart are broadcast once when training starts (step 0 equal below)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from moviessl.dist import fresh_launch_env

    env = fresh_launch_env()
    script = Path(__file__).with_name("ddp_queue_script.py")
    p = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0) == len(r1) == 3
    for s in range(3):
        assert r0[s]["bn"] == r1[s]["bn"]  # broadcast: rank 1's +100 after step 0 is undone
        assert r0[s]["queue"][:63] == r1[s]["queue"][:63]  # the same gathered keys on both ranks
    q0, q1 = torch.tensor(r0[1]["queue"]), torch.tensor(r1[1]["queue"])
    assert torch.allclose(q1[63] - q0[63], torch.full((4,), 100.0))  # not broadcast
    assert not torch.equal(q0[:6], torch.tensor(r0[0]["queue"])[:6])  # keys were written
    assert all(a["draws"][k] != b["draws"][k] for a, b in zip(r0, r1) for k in range(3))  # per-rank streams


@pytest.mark.parametrize("method", ["cvrl", "modist", "supervised"])
def test_pretraining_runs_under_lightning_ddp_on_two_processes(method, clip_list, tmp_path):
    """The real CLI under Lightning's DDP (2 CPU processes): CVRL's gradient all-gather, MoDist's
    gathered queues, flow net and key encoders and the queue broadcast rules all wired, the supervised
    baseline's classifier; past the second step (where a parameter without gradient fails DDP); rank 0
    writes the model."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from ssl_testutil import tiny_overrides

    from moviessl.checkpoint import load_checkpoint
    from moviessl.dist import fresh_launch_env

    exe = Path(sys.executable).with_name("moviessl")
    exe = str(exe) if exe.is_file() else shutil.which("moviessl")
    if exe is None:
        pytest.skip("the moviessl console script is not installed")
    ddp = ["trainer.max_steps=2", "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu"]
    args = ["pretrain-backbone", "--method", method, "--data", str(clip_list), "--out", str(tmp_path / "m")]
    p = subprocess.run(
        [exe, *args, "--no-probe", *tiny_overrides(ddp)],
        env=fresh_launch_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "deprecated" not in p.stderr  # torch.distributed.nn's all_gather warned on every DDP run
    obj = load_checkpoint(tmp_path / "m" / "model.pt", stage="backbone")
    assert obj["meta"]["global_step"] == 2 and obj["config"]["trainer"]["devices"] == 2


def test_bad_videos_met_on_every_rank_are_recorded(tmp_path):
    """Decoding on the fly (``data.frame_cache=false``, the paper preset), a bad video is found by the
    rank whose batch draws it; rank 0 wrote ``bad_videos.json`` and the summary's count from its own
    finds only, so under N processes about (N-1)/N of them went unrecorded. 4 bad videos among 12
    items, 2 processes of 3 steps of 2: every item is drawn once, each rank meets some of them."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from ssl_testutil import make_clip_list, tiny_overrides

    from moviessl.dist import fresh_launch_env

    exe = Path(sys.executable).with_name("moviessl")
    exe = str(exe) if exe.is_file() else shutil.which("moviessl")
    if exe is None:
        pytest.skip("the moviessl console script is not installed")
    csv = make_clip_list(tmp_path, n=8, bad=0)
    lines, bad = [], []
    for i, line in enumerate(csv.read_text().splitlines()):
        lines.append(line)
        if i % 2 == 0:  # each followed by a good video, which its item then loads
            (tmp_path / "v" / f"bad{i}.mp4").write_bytes(b"\x00not a video" * 50)
            lines.append(f"v/bad{i}.mp4 0")
            bad.append(str(tmp_path / "v" / f"bad{i}.mp4"))
    csv.write_text("\n".join(lines) + "\n")
    ddp = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.max_steps=3"]
    over = tiny_overrides(["data.frame_cache=false", "data.batch_size=2", *ddp])
    out = tmp_path / "m"
    args = ["pretrain-backbone", "--method", "cvrl", "--data", str(csv), "--out", str(out), "--no-probe"]
    p = subprocess.run([exe, *args, *over], env=fresh_launch_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(json.loads((out / "bad_videos.json").read_text())) == sorted(bad)
    assert json.loads((out / "summary.json").read_text())["skipped_videos"] == 4


def test_pretraining_under_torchrun_takes_its_process_count_from_the_trainer_or_refuses(clip_list, tmp_path):
    """``torchrun --nproc-per-node=2`` with ``trainer.devices`` left at 1 trained two one-process jobs
    into one folder (each its own rank 0 to Lightning, both writing checkpoints and model.pt); it is
    now one line before anything is written. With ``trainer.devices=2`` the two processes are one
    job, which rank 0 exports."""
    import subprocess
    import sys
    from pathlib import Path

    from ssl_testutil import tiny_overrides

    from moviessl.checkpoint import load_checkpoint
    from moviessl.dist import fresh_launch_env

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun is not installed beside this Python")

    def launch(out, *more):
        cmd = [str(torchrun), "--standalone", "--nproc-per-node=2", "-m", "moviessl.cli", "pretrain-backbone"]
        args = ["--method", "cvrl", "--data", str(clip_list), "--out", str(out), "--no-probe"]
        extra = ["trainer.max_steps=2", "trainer.accelerator=cpu", *more]
        return subprocess.run(
            [*cmd, *args, *tiny_overrides(extra)], env=fresh_launch_env(), capture_output=True, text=True, timeout=300
        )

    p = launch(tmp_path / "one")
    assert p.returncode != 0
    assert "moviessl: error: trainer.devices: the launcher started 2 processes (torchrun's WORLD_SIZE)" in p.stderr
    assert not (tmp_path / "one").exists()
    p = launch(tmp_path / "two", "trainer.devices=2")
    assert p.returncode == 0, p.stderr[-3000:]
    obj = load_checkpoint(tmp_path / "two" / "model.pt", stage="backbone")
    assert obj["meta"]["global_step"] == 2
