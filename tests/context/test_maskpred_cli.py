"""``moviessl pretrain-context``: Lightning run, export, resume, the ablation options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from test_maskpred import sequence_features, write_vidsitu_folder

from moviessl.checkpoint import build_from_checkpoint, load_checkpoint
from moviessl.cli import main
from moviessl.errors import BadInputError

FAST = [
    "data.batch_size=8",
    "maskpred.queue_size=32",
    "trainer.progress_bar=false",
    "data.val_fraction=0.25",
    "trainer.log_every_n_steps=1",
    "model.txe_overrides={dim: 32, heads: 2, mlp_dim: 64, depth: 1}",
]


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    root = tmp_path_factory.mktemp("feats")
    a = write_vidsitu_folder(root / "a", sequence_features(24, dim=16, seed=0))
    b = write_vidsitu_folder(root / "b", sequence_features(8, dim=16, seed=1), prefix="w_")
    return a, b


def test_pretrain_export_and_resume(feats, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain-context", "--features", feats[0], "--features", feats[1], "--out", out]
    assert main([*map(str, args), "trainer.max_steps=3", *FAST]) == 0
    obj = load_checkpoint(out / "model.pt", stage="context")
    meta = obj["meta"]
    assert meta["window"] == 5 and meta["token_stride_s"] == 2.0 and meta["in_dim"] == 16
    assert meta["loss"] == "infonce" and meta["mask_sizes"] == [1, 2, 3] and meta["steps"] == 3
    assert meta["num_videos"] == 24 and "val/retrieval_acc" in meta["metrics"]
    # the logged hyper-parameters hold the sizes model.pt records, not the unset setting
    hp = yaml.safe_load((out / "logs" / "hparams.yaml").read_text())
    assert hp["cfg"]["maskpred"]["mask_sizes"] == meta["mask_sizes"]
    txe = build_from_checkpoint(obj)
    assert txe(torch.randn(2, 5, 16)).shape == (2, 5, 32)
    for f in ("config.yaml", "checkpoints/last.ckpt", "logs/metrics.csv", "curves.png"):
        assert (out / f).is_file(), f
    # an existing run is never silently overwritten
    assert main([*map(str, args), "trainer.max_steps=3", *FAST]) == 2
    assert "--resume" in capsys.readouterr().err
    w3 = txe.state_dict()["input_proj.weight"].clone()
    assert main([*map(str, args), "--resume", "trainer.max_steps=5", *FAST]) == 0
    obj = load_checkpoint(out / "model.pt", stage="context")
    assert obj["meta"]["steps"] == 5
    assert not torch.equal(obj["state_dict"]["input_proj.weight"], w3)
    # the input statistics and the target mean are buffers of the checkpoint: a resume that turned
    # them off went on with them (and on, with none) while its config.yaml said otherwise
    capsys.readouterr()
    for flip in ("maskpred.input_norm=false", "maskpred.center=false"):
        assert main([*map(str, args), "--resume", "trainer.max_steps=6", flip, *FAST]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--resume cannot make it False" in err, err
    assert load_checkpoint(out / "model.pt", stage="context")["meta"]["steps"] == 5


def test_l2_and_max_discrepancy_options(feats, tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "pretrain-context",
                "--features",
                str(feats[0]),
                "--out",
                str(out),
                "trainer.max_steps=2",
                "maskpred.loss=l2",
                "maskpred.sampling=max_discrepancy",
                "maskpred.mask_sizes=[1]",
                *FAST,
            ]
        )
        == 0
    )
    meta = load_checkpoint(out / "model.pt")["meta"]
    assert meta["loss"] == "l2" and meta["sampling"] == "max_discrepancy" and meta["mask_sizes"] == [1]
    assert np.isfinite(meta["metrics"]["val/loss"])
    assert (
        main(
            [
                "pretrain-context",
                "--features",
                str(feats[0]),
                "--out",
                str(tmp_path / "x"),
                "maskpred.loss=cosine",
                *FAST,
            ]
        )
        == 2
    )


def test_evaluation_splits_left_out_of_pretraining(tmp_path):
    """A VidSitu feature folder that records splits (moviessl extract of a VidSitu root) gives its
    train segments only; --include-eval-splits keeps all; annotations can say it for folders without."""
    import json

    from moviessl.context.pretrain import pretraining_ids
    from moviessl.features.store import FeatureStore

    root = write_vidsitu_folder(tmp_path / "f", sequence_features(6, dim=4))
    ids = sorted(p.name[: -len("_feats.npy")] for p in root.glob("*_feats.npy"))
    videos = {v: {"num_events": 5, "status": "ok", "split": "train" if i < 4 else "valid"} for i, v in enumerate(ids)}
    (root / "index.json").write_text(json.dumps({"stride_s": 2.0, "dim": 4, "videos": videos}))
    store = FeatureStore(root)
    keep = pretraining_ids([store], [(0, v) for v in store.ids])
    assert [v for _, v in keep] == ids[:4]
    # a folder without an index (VidSitu's released features): the annotations' split files decide
    bare = write_vidsitu_folder(tmp_path / "g", sequence_features(3, dim=4))
    ann = tmp_path / "ann" / "split_files"
    ann.mkdir(parents=True)
    gids = sorted(p.name[: -len("_feats.npy")] for p in bare.glob("*_feats.npy"))
    (ann / "vseg_split_train_lb.json").write_text(json.dumps(gids[:1]))
    (ann / "vseg_split_valid_lb.json").write_text(json.dumps(gids[1:]))
    gstore = FeatureStore(bare)
    assert [v for _, v in pretraining_ids([gstore], [(0, v) for v in gstore.ids], tmp_path / "ann")] == gids[:1]


def test_released_vidsitu_features_without_splits_are_not_pretrained_on_silently(tmp_path, capsys):
    """VidSitu's released features (``ROOT/vsitu_vid_feats/<model>/``, no index) hold val and test
    segments: their splits come from the release they sit in, else the run stops and says how to
    choose -- it used to pretrain on every segment without a word."""
    import json

    from moviessl.context.pretrain import pretraining_ids
    from moviessl.features.store import FeatureStore

    root = tmp_path / "vidsitu"
    feats = root / "vsitu_vid_feats" / "slow_fast"
    ids = [f"v_abcdefgh{i:03d}_seg_{10 * i}_{10 * i + 10}" for i in range(6)]
    for v, f in zip(ids, sequence_features(6, dim=4)):
        feats.mkdir(parents=True, exist_ok=True)
        np.save(feats / f"{v}_feats.npy", f)
    args = ["pretrain-context", "--features", str(feats), "--out", str(tmp_path / "run"), *FAST]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "6 VidSitu segment feature file(s) and no split information" in err and "--vidsitu-root" in err
    split_files = root / "vidsitu_annotations" / "split_files"
    split_files.mkdir(parents=True)
    (split_files / "vseg_split_train_lb.json").write_text(json.dumps(ids[:4]))
    (split_files / "vseg_split_valid_lb.json").write_text(json.dumps(ids[4:]))
    store = FeatureStore(feats)
    assert [v for _, v in pretraining_ids([store], [(0, v) for v in store.ids])] == ids[:4]
    # ids that are not VidSitu segments (a user's own movies) need no split
    other = write_vidsitu_folder(tmp_path / "own", sequence_features(3, dim=4))
    s2 = FeatureStore(other)
    assert len(pretraining_ids([s2], [(0, v) for v in s2.ids])) == 3


@pytest.mark.parametrize("sizes", ["[6]", "[0,1]"])
def test_mask_sizes_that_do_not_fit_the_window_are_one_line_before_any_work(feats, tmp_path, capsys, sizes):
    """A ValueError traceback after the feature windows were built (exit 1)."""
    args = ["pretrain-context", "--features", str(feats[0]), "--out", str(tmp_path / "run")]
    assert main([*args, "trainer.max_steps=1", *FAST, f"maskpred.mask_sizes={sizes}"]) == 2
    err = capsys.readouterr().err
    assert "maskpred.mask_sizes: mask sizes must lie in 1..4" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override, named",
    [
        ("data.window=100", "data.window: 100 tokens exceed the TxE's max_len 64"),
        ("model.txe_overrides.heads=3", "model.txe_overrides.heads: dim 32 is not divisible by 3 heads"),
        ("model.txe_overrides.activation=tanh", "model.txe_overrides.activation: unknown activation"),
        ("model.txe=txe_huge", "model.txe: unknown TxE preset"),
    ],
)
def test_txe_settings_that_cannot_build_are_one_line_before_any_work(feats, tmp_path, capsys, override, named):
    """They were found only after every feature file was read -- a window past max_len only in the
    first training step, with a run folder made -- and under keys the config lacks (model.heads)."""
    args = ["pretrain-context", "--features", str(feats[0]), "--out", str(tmp_path / "run")]
    assert main([*args, "trainer.max_steps=1", *FAST, override]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_features_of_two_backbones_are_said(tmp_path, caplog):
    """--features folders extracted by two backbones (same width) were pretrained on as one feature
    space without a word; the TxE's meta lists both."""
    import json

    folders = []
    for name, bb, n, seed in (("a", "aaaaaaaaaaaa", 24, 0), ("b", "bbbbbbbbbbbb", 8, 1)):
        root = write_vidsitu_folder(tmp_path / name, sequence_features(n, dim=16, seed=seed), prefix=f"{name}_")
        ids = sorted(p.name[: -len("_feats.npy")] for p in root.glob("*_feats.npy"))
        videos = {v: {"num_events": 5, "status": "ok", "split": "train"} for v in ids}
        (root / "index.json").write_text(json.dumps({"stride_s": 2.0, "dim": 16, "backbone": bb, "videos": videos}))
        folders += ["--features", str(root)]
    out = tmp_path / "run"
    with caplog.at_level("WARNING", logger="moviessl"):
        assert main(["pretrain-context", *folders, "--out", str(out), "trainer.max_steps=1", *FAST]) == 0
    assert "--features come from 2 different backbones" in caplog.text
    assert load_checkpoint(out / "model.pt", stage="context")["meta"]["backbone"] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]


def test_a_features_folder_named_twice_is_read_once(feats, tmp_path, caplog):
    """The same folder twice numbered every event twice: each copy was a distractor against itself."""
    once, twice = tmp_path / "once", tmp_path / "twice"
    assert (
        main(["pretrain-context", "--features", str(feats[0]), "--out", str(once), "trainer.max_steps=1", *FAST]) == 0
    )
    again = str(feats[0]) + "/../" + feats[0].name  # another spelling of the same folder
    with caplog.at_level("WARNING", logger="moviessl"):
        args = ["--features", str(feats[0]), "--features", again, "--out", str(twice)]
        assert main(["pretrain-context", *args, "trainer.max_steps=1", *FAST]) == 0
    assert "names the same folder more than once" in caplog.text
    meta = [load_checkpoint(d / "model.pt", stage="context")["meta"] for d in (once, twice)]
    assert meta[0]["num_videos"] == meta[1]["num_videos"]


def test_a_resume_keeps_its_held_out_videos_when_videos_were_added(feats, tmp_path):
    """The held-out split was drawn again over the grown list of videos: videos trained on before the
    resume could land in the held-out set that scores the run."""
    import json

    out = tmp_path / "run"
    args = ["pretrain-context", "--features", feats[0], "--out", out, *FAST]
    assert main([*map(str, args), "trainer.max_steps=2"]) == 0
    held = json.loads((out / "heldout.json").read_text())
    assert len(held) == 6  # a quarter of folder a's 24 videos
    args = [*args, "--features", feats[1]]  # 8 videos added
    assert main([*map(str, args), "--resume", "trainer.max_steps=3"]) == 0
    assert json.loads((out / "heldout.json").read_text()) == held
    assert load_checkpoint(out / "model.pt", stage="context")["meta"]["num_videos"] == 24 - 6 + 8


def test_a_resume_after_the_features_moved_keeps_its_held_out_videos(feats, tmp_path, caplog):
    """heldout.json names each held-out video by its feature folder's resolved path: a resume after
    the folders moved (a cluster's scratch to a home folder) found none of them, so it trained on
    the held-out videos and had none left to score the run. A folder of this run that holds all of a
    moved folder's held-out videos stands for it now (of two, the one of the same name)."""
    import json
    import shutil

    scratch, home = tmp_path / "scratch", tmp_path / "home"
    for f in feats:
        shutil.copytree(f, scratch / "x" / f.name)  # two folders, then moved under other names' parents
    out = tmp_path / "run"
    args = ["--out", out, *FAST]
    where = lambda root: [a for f in feats for a in ("--features", root / "x" / f.name)]  # noqa: E731
    assert main([*map(str, ["pretrain-context", *where(scratch), *args]), "trainer.max_steps=2"]) == 0
    held = json.loads((out / "heldout.json").read_text())
    assert len(held) == 8 and all(h.startswith(str(scratch)) for h in held)  # a quarter of 24 + 8 videos
    shutil.move(scratch, home)
    assert main([*map(str, ["pretrain-context", *where(home), *args]), "--resume", "trainer.max_steps=3"]) == 0
    meta = load_checkpoint(out / "model.pt", stage="context")["meta"]
    assert meta["num_videos"] == 32 - 8 and "val/retrieval_acc" in meta["metrics"]
    assert sorted(json.loads((out / "heldout.json").read_text())) == sorted(
        h.replace(str(scratch), str(home)) for h in held
    )


def test_the_held_out_list_resolves_each_folder_once(tmp_path, monkeypatch):
    """heldout.json names videos by their folder's resolved path, which was resolved again for every
    video, three times over on a resume (a walk of lstats each: ~40k ids over VidSitu and LVU): the
    folders are resolved once each, and the split and the list are as before."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from moviessl.context.pretrain import held_out

    stores = [SimpleNamespace(root=tmp_path / "a" / ".." / "a"), SimpleNamespace(root=tmp_path / "b")]
    for s in stores:
        s.root.mkdir(parents=True, exist_ok=True)
    ids = [(k % 2, f"v{k:03d}") for k in range(200)]
    calls = []
    real = Path.resolve
    monkeypatch.setattr(Path, "resolve", lambda self, *a: calls.append(self) or real(self, *a))
    train, val = held_out(tmp_path, stores, ids, 0.25, 0, resume=False)
    again = held_out(tmp_path, stores, ids, 0.25, 0, resume=True)
    assert again == (train, val) and len(val) == 50 and len(train) + len(val) == 200
    names = json.loads((tmp_path / "heldout.json").read_text())
    assert sorted(names) == sorted(f"{real(stores[s].root)}::{v}" for s, v in val)
    assert len(calls) <= 2 * len(stores), len(calls)  # (1 + 3 per video before: 650)


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_job_on_a_folder_a_job_is_training_in_is_refused(feats, tmp_path, capsys, resume):
    """Two `pretrain-context` jobs on one --out (a resubmitted batch job) both passed the check for
    an earlier run (no checkpoint yet), drew their held-out videos into one heldout.json, trained
    into the same checkpoints and logs, and each exported a model.pt; a --resume beside a running job
    restored its last.ckpt and trained on beside it. The second job is now one line naming the
    holder, before it writes anything."""
    import fcntl
    import os
    import socket

    from moviessl.features.store import JOB_LOCK

    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / JOB_LOCK, os.O_RDWR | os.O_CREAT)  # another job's, with its own open file
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since then".encode())
    args = ["pretrain-context", "--features", feats[0], "--out", out, *(["--resume"] if resume else [])]
    try:
        rc = main([*map(str, args), "trainer.max_steps=2", *FAST])
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert rc == 2 and "another moviessl job is writing to this folder (pid" in err and str(out) in err, err
    assert [p.name for p in out.iterdir()] == [JOB_LOCK]


def test_a_txe_run_writes_a_summary_naming_what_it_was_made_from(feats, tmp_path):
    """pretrain-context wrote no summary.json, as pretrain-backbone does: the features it was made
    from, the videos, steps and seed were only in model.pt's meta, which needs the loader to read."""
    import json

    out = tmp_path / "run"
    args = ["pretrain-context", "--features", feats[0], "--features", feats[1], "--out", out]
    assert main([*map(str, args), "trainer.max_steps=2", "seed=3", *FAST]) == 0
    s = json.loads((out / "summary.json").read_text())
    meta = load_checkpoint(out / "model.pt", stage="context")["meta"]
    assert s["features"] == [str(f.resolve()) for f in feats] and s["seed"] == 3 and s["steps"] == 2
    assert s["num_videos"] == meta["num_videos"] == 24 and s["num_val_videos"] == 8 and s["num_events"] > 0
    assert s["metrics"] == meta["metrics"]


def test_a_resumed_run_keeps_each_attempts_record(feats, tmp_path, monkeypatch):
    """run.json (what made the run: preset, overrides as given, command line, version) is written
    by every stage through save_config; a resume's attempt keeps the first one's as run.part000.json,
    as its config's parts are kept."""
    import json
    import sys

    out = tmp_path / "run"
    args = [*map(str, ["pretrain-context", "--features", feats[0], "--out", out]), *FAST]
    for argv in ([*args, "trainer.max_steps=2"], [*args, "--resume", "trainer.max_steps=3"]):
        monkeypatch.setattr(sys, "argv", ["moviessl", *argv])
        assert main(argv) == 0
    first, now = (json.loads((out / f).read_text()) for f in ("run.part000.json", "run.json"))
    assert first["argv"][-1] == "trainer.max_steps=2" and now["argv"][-1] == "trainer.max_steps=3"
    assert (now["stage"], now["preset"]) == ("context", "cpu") and now["overrides"] == [*FAST, "trainer.max_steps=3"]


def test_a_resume_that_only_exports_keeps_the_runs_metrics(feats, tmp_path):
    """A run killed after its last checkpoint and before its export is resumed to write model.pt: it
    trains and logs nothing, and model.pt's meta and summary.json said ``metrics: {}``, the run's val
    retrieval accuracy lost. They now hold the values the run last logged (its CSV logs)."""
    import json

    out = tmp_path / "run"
    args = [*map(str, ["pretrain-context", "--features", feats[0], "--out", out]), "trainer.max_steps=3", *FAST]
    assert main(args) == 0
    first = json.loads((out / "summary.json").read_text())["metrics"]
    assert "val/retrieval_acc" in first
    (out / "model.pt").unlink()  # the kill
    (out / "summary.json").unlink()
    assert main([*args, "--resume"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 3 and s["metrics"] == pytest.approx(first)
    assert load_checkpoint(out / "model.pt", stage="context")["meta"]["metrics"] == pytest.approx(first)


def test_a_run_with_too_few_videos_to_hold_out_says_so_once_without_lightnings_warning(
    feats, tmp_path, caplog, recwarn
):
    """8 videos hold none out for validation (fewer than 20): Lightning's raw "You defined a
    `validation_step` but have no `val_dataloader`" reached the user, and nothing of the run's own."""
    with caplog.at_level("INFO", logger="moviessl"):
        argv = ["pretrain-context", "--features", str(feats[1]), "--out", str(tmp_path / "run"), "trainer.max_steps=1"]
        assert main([*argv, *FAST]) == 0
    assert not [w for w in recwarn if "val_dataloader" in str(w.message)]
    said = [r.getMessage() for r in caplog.records if "no video held out" in r.getMessage()]
    assert said == [
        "no video held out for validation: data.val_fraction=0.25 of 8 videos, and fewer than 20 hold none out; "
        "val/retrieval_acc is not measured"
    ]


def test_a_txe_summary_names_its_folder_absolute(feats, tmp_path, monkeypatch):
    # "out" was kept as typed, relative to the shell, beside the absolute feature folders
    import json

    monkeypatch.chdir(tmp_path)
    assert main(["pretrain-context", "--features", str(feats[0]), "--out", "run", "trainer.max_steps=1", *FAST]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["out"] == str((tmp_path / "run").resolve())


def test_a_pretraining_stage_gives_the_callers_thread_count_back(feats, tmp_path, monkeypatch):
    """Called from Python, a stage runs on the command line's thread count (here OMP_NUM_THREADS) and
    then gives the caller's own back: it left a notebook that had set one thread on every core."""
    from moviessl.config import load_config
    from moviessl.context.pretrain import pretrain_context

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    try:
        cfg = load_config("context", "cpu", ["trainer.max_steps=1", *FAST])
        pretrain_context([feats[0]], tmp_path / "run", cfg)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(2)
        with pytest.raises(BadInputError):  # a run that fails gives it back too
            pretrain_context([feats[0]], tmp_path / "run", cfg)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_pretraining_stage_gives_the_callers_random_streams_and_lightning_seed_back(feats, tmp_path, monkeypatch):
    """As tests/ssl (pretrain): pretrain_context seeds the global generators and Lightning's seed
    variables for its run; the caller's own come back after it."""
    from caller_state import random_streams_given_back
    from moviessl.config import load_config
    from moviessl.context.pretrain import pretrain_context

    with random_streams_given_back(monkeypatch):
        pretrain_context([feats[0]], tmp_path / "run", load_config("context", "cpu", ["trainer.max_steps=1", *FAST]))


class _Stop(Exception):
    """Raised by a stand-in ``fit`` once it has seen the loaders it was given."""


@pytest.mark.parametrize("accelerator, pinned", [("cpu", False), ("gpu", True)])
def test_batches_are_pinned_only_for_a_run_on_a_gpu(feats, tmp_path, monkeypatch, accelerator, pinned):
    """A CPU run (trainer.accelerator=cpu) on a machine with a GPU pinned its training and validation
    batches, which made a CUDA context on GPU 0 in every process of the run; a GPU run pins them (a
    machine with one GPU stood in for: fit is stopped before it trains)."""
    import moviessl.context.pretrain as cp
    from moviessl.config import load_config

    seen = {}

    def fit(module, t, out, train_dataloaders=None, val_dataloaders=None, **kw):
        seen["pin"] = (train_dataloaders.pin_memory, val_dataloaders.pin_memory)
        raise _Stop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cp, "fit", fit)
    cfg = load_config("context", "cpu", [*FAST, f"trainer.accelerator={accelerator}"])
    with pytest.raises(_Stop):
        cp.pretrain_context([feats[0]], tmp_path / "run", cfg)
    assert seen["pin"] == (pinned, pinned)


def test_a_run_started_with_sizes_naming_the_whole_window_resumes_with_those_it_drew(feats, tmp_path, caplog):
    """Sizes stop at data.window - 1 (a span keeps one token visible) and an explicit window size is
    one line; a run started before that with ``maskpred.mask_sizes=[1,2,3,4,5]`` at window 5 (which
    drew 1..4) saved them in its config.yaml and checkpoint, and its --resume with its own settings
    was refused: a long job could not be continued. It goes on with the sizes it drew, as a run
    resumed with those does, step for step; the same sizes on a fresh run, or on a resume of a run
    that never recorded them, stay refused."""
    import json
    import logging
    import shutil

    def run(out, sizes, steps, resume=True):
        args = ["pretrain-context", "--features", feats[0], "--out", out, *(["--resume"] if resume else [])]
        return main([*map(str, args), f"maskpred.mask_sizes={sizes}", f"trainer.max_steps={steps}", *FAST])

    new, old = tmp_path / "new", tmp_path / "old"
    assert run(new, "[1,2,3,4]", 2, resume=False) == 0
    shutil.copytree(new, old)
    # the old run's folder: its config.yaml and its checkpoints' hyper-parameters name the window
    conf = yaml.safe_load((old / "config.yaml").read_text())
    conf["maskpred"]["mask_sizes"] = [1, 2, 3, 4, 5]
    (old / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    for ck in (old / "checkpoints").glob("*.ckpt"):
        obj = torch.load(ck, map_location="cpu", weights_only=False)
        obj["hyper_parameters"]["cfg"]["maskpred"]["mask_sizes"] = [1, 2, 3, 4, 5]
        torch.save(obj, ck)

    assert run(new, "[1,2,3,4]", 4) == 0
    with caplog.at_level(logging.INFO, logger="moviessl"):
        assert run(old, "[1,2,3,4,5]", 4) == 0
    said = [r.getMessage() for r in caplog.records if "maskpred.mask_sizes=[1, 2, 3, 4, 5]" in r.getMessage()]
    assert len(said) == 1 and "drew [1, 2, 3, 4]" in said[0], said
    a, b = (torch.load(f / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False) for f in (new, old))
    assert a["global_step"] == b["global_step"] == 4
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert load_checkpoint(old / "model.pt", stage="context")["meta"]["mask_sizes"] == [1, 2, 3, 4]
    # config.yaml says what it goes on with; the part it kept still tells the next resume the same
    assert yaml.safe_load((old / "config.yaml").read_text())["maskpred"]["mask_sizes"] == [1, 2, 3, 4]
    assert "maskpred.mask_sizes=[1,2,3,4,5]" in json.loads((old / "run.json").read_text())["overrides"]
    assert run(old, "[1,2,3,4,5]", 5) == 0
    # the window named on a run that never recorded it: refused, before and after a start
    assert run(tmp_path / "fresh", "[1,2,3,4,5]", 2, resume=False) == 2
    assert run(new, "[1,2,3,4,5]", 5) == 2
