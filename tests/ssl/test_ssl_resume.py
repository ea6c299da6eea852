"""kill -9 in the middle of pretraining, then --resume: at most one checkpoint interval is lost."""

import csv
import os
import re
import signal
import subprocess
import sys
import time

import torch
from ssl_testutil import tiny_overrides

MAX_STEPS, EVERY = 20, 5


def _cmd(clip_list, out, resume=False):
    ov = tiny_overrides([f"trainer.max_steps={MAX_STEPS}", f"trainer.ckpt_every_n_steps={EVERY}"])
    return [
        sys.executable,
        "-m",
        "moviessl.cli",
        "pretrain-backbone",
        "--method",
        "cvrl",
        "--data",
        str(clip_list),
        "--out",
        str(out),
        "--no-probe",
        *(["--resume"] if resume else []),
        *ov,
    ]


def _steps(out):
    return sorted(
        int(m.group(1)) for p in (out / "checkpoints").glob("step*.ckpt") if (m := re.match(r"step(\d+)", p.stem))
    )


def test_kill9_then_resume(clip_list, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cmd(clip_list, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        t0 = time.time()
        while time.time() - t0 < 120 and proc.poll() is None:
            if (tmp_path / "checkpoints").is_dir() and any(s >= 2 * EVERY for s in _steps(tmp_path)):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "run finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "model.pt").exists()
    saved = max(_steps(tmp_path))  # the newest checkpoint on disk when the process died
    assert saved >= 2 * EVERY and saved % EVERY == 0

    r = subprocess.run(_cmd(clip_list, tmp_path, resume=True), capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stderr
    # the resumed run starts where the last checkpoint left off (a fresh run would log step 0 again)
    with open(tmp_path / "logs" / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert min(steps) == saved and max(steps) == MAX_STEPS - 1
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == MAX_STEPS
    assert (tmp_path / "model.pt").is_file()


def test_a_resume_keeps_the_bad_videos_met_before_it(tmp_path):
    """Decoding on the fly (``data.frame_cache=false``, the paper preset) a bad video is found by the
    batch that draws it, and that count was not in the checkpoint: a resumed run's
    ``bad_videos.json``, summary and ``data/skipped`` curve held only the videos met after the
    resume. 3 bad videos among 12 items, batches of 2: epoch 0 (6 steps) meets all 3, and the one
    resumed step at most 2."""
    import json

    from ssl_testutil import make_clip_list

    from moviessl.config import load_config
    from moviessl.ssl.pretrain import pretrain

    clips = make_clip_list(tmp_path / "clips", n=9, bad=3)
    bad = sorted(str(tmp_path / "clips" / "v" / f"bad{j}.mp4") for j in range(3))
    out = tmp_path / "run"

    def run(steps, resume):
        over = ["data.frame_cache=false", "data.batch_size=2", f"trainer.max_steps={steps}"]
        over.append("trainer.log_every_n_steps=1")
        cfg = load_config("backbone", "cpu", tiny_overrides(over))
        return pretrain("cvrl", clips, out, cfg, resume=resume, run_probe=False, progress=False)

    assert run(6, False)["skipped_videos"] == 3
    assert run(7, True)["skipped_videos"] == 3
    assert sorted(json.loads((out / "bad_videos.json").read_text())) == bad
    with open(out / "logs" / "metrics.csv") as f:
        assert [float(r["data/skipped"]) for r in csv.DictReader(f) if r.get("data/skipped")] == [3.0]
