"""LVU end to end on a tiny SynthMovies through the CLI: instance features from tracks, event
features, masked-instance pretraining, `finetune lvu --task all` (OT++: instances + scene tokens),
predictions scored again by `evaluate lvu`, a rerun that skips finished runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from moviessl.checkpoint import arch_spec, save_checkpoint
from moviessl.cli import main
from moviessl.data.lvu import LVU_TASKS
from moviessl.synth import generate

FAST = ["trainer.progress_bar=false"]
INPUT = {"num_frames": 4, "stride": 8, "short_side": 32, "crop": 32}


@pytest.fixture(scope="module")
def lvu_setup(tmp_path_factory):
    from moviessl.models import build_slowd

    tmp = tmp_path_factory.mktemp("lvu")
    synth = generate(tmp / "synth", preset="tiny", seed=0, progress=False)
    torch.manual_seed(0)
    kw = dict(preset="slowd_cpu", widths=[8, 8, 16, 16], stem_width=8)
    model = build_slowd(**kw)
    bb = tmp / "backbone.pt"
    save_checkpoint(
        bb,
        stage="backbone",
        arch=arch_spec("moviessl.models.slowd:build_slowd", **kw),
        state_dict=model.state_dict(),
        meta={"input": INPUT, "method": "random", "out_dim": model.out_dim},
    )
    teacher = tmp / "teacher.ckpt"  # a supervised run's Lightning checkpoint holds its classifier
    torch.save(
        {"state_dict": {"classifier.1.weight": torch.randn(5, 16), "classifier.1.bias": torch.zeros(5)}}, teacher
    )
    lvu = synth / "lvu"
    assert (
        main(
            [
                "extract-instances",
                "--backbone",
                str(bb),
                "--videos",
                str(lvu),
                "--tracks",
                str(lvu / "tracks"),
                "--out",
                str(tmp / "inst"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "extract",
                "--backbone",
                str(bb),
                "--videos",
                str(lvu),
                "--out",
                str(tmp / "events"),
                "--num-workers",
                "0",
                "--accelerator",
                "cpu",
            ]
        )
        == 0
    )
    return tmp, lvu, teacher


def _txe_checkpoint(path):
    """A stage-"context" TxE over the 16-d events of ``lvu_setup``'s backbone."""
    from moviessl.models.txe import build_txe

    kw = dict(in_dim=16, dim=32, heads=2, mlp_dim=32, depth=1)
    arch = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", **kw)
    meta = {"window": 5, "token_stride_s": 2.0, "in_dim": 16}
    save_checkpoint(path, stage="context", arch=arch, state_dict=build_txe("txe_cpu", **kw).state_dict(), meta=meta)
    return path


def test_a_txe_of_another_token_stride_names_no_option_finetune_lvu_lacks(tmp_path, capsys):
    """`finetune lvu --contextualizer` with a TxE pretrained on 1-s tokens over 2-s scene features:
    the line said "not a multiple of --stride 2", an option `finetune lvu` does not have (the
    stride is the extraction's)."""
    import re

    from moviessl.errors import BadInputError
    from moviessl.models.txe import build_txe
    from moviessl.tasks.lvu.data import scene_arrays

    events = tmp_path / "events"
    events.mkdir()
    np.save(events / "a_feats.npy", np.zeros((5, 16), np.float32))  # a folder without an index: 2-s events
    kw = dict(in_dim=16, dim=32, heads=2, mlp_dim=32, depth=1)
    arch = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", **kw)
    meta = {"window": 5, "token_stride_s": 1.0, "in_dim": 16}
    state = build_txe("txe_cpu", **kw).state_dict()
    save_checkpoint(tmp_path / "txe.pt", stage="context", arch=arch, state_dict=state, meta=meta)
    with pytest.raises(BadInputError, match=r"txe\.pt: its token stride 1\.0 s") as e:
        scene_arrays(events, contextualizer=tmp_path / "txe.pt", progress=False)
    with pytest.raises(SystemExit):
        main(["finetune", "lvu", "--help"])
    options = set(re.findall(r"--[a-z-]+", capsys.readouterr().out))
    line = str(e.value)
    assert all(o in options or f"moviessl extract {o}" in line for o in re.findall(r"--[a-z-]+", line)), line


def test_instances_pretraining_and_all_nine_tasks(lvu_setup, capsys, monkeypatch):
    import moviessl.tasks.lvu.data as data

    tmp, lvu, teacher = lvu_setup
    made = []
    save = data.save_ctx
    monkeypatch.setattr(data, "save_ctx", lambda path, *a, **k: (made.append(path.name), save(path, *a, **k)))
    index = json.loads((tmp / "inst" / "index.json").read_text())
    assert index["counts"] == {"ok": 3, "bad": 0} and index["dim"] == 16
    with np.load(tmp / "inst" / f"{next(iter(index['videos']))}.npz") as z:
        assert z["feat"].shape == (len(z["sec"]), 16) and np.isfinite(z["feat"]).all() and len(z["sec"]) > 10

    pt = tmp / "ot_pretrain"
    argv = ["pretrain-ot", "--instances", str(tmp / "inst"), "--teacher", str(teacher), "--out", str(pt)]
    assert main(argv + ["trainer.max_steps=3", "data.batch_size=2", *FAST]) == 0
    assert (pt / "model.pt").is_file()

    out = tmp / "ft"
    argv = [
        "finetune", "lvu", "--task", "all", "--data-root", str(lvu), "--instances", str(tmp / "inst"),
        "--scene-features", str(tmp / "events"), "--contextualizer", str(_txe_checkpoint(tmp / "txe.pt")),
        "--init", str(pt / "model.pt"), "--seeds", "1", "--out", str(out), "train.epochs=2", *FAST,
    ]  # fmt: skip
    assert main(argv) == 0
    # the TxE ran once for the nine tasks: its outputs are cached in the top folder, read by each task
    (cache,) = (out / "scene_ctx").iterdir()
    assert sorted(made) == sorted(p.name for p in cache.iterdir()) and len(made) == len(index["videos"])
    assert not list(out.glob("*/scene_ctx"))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(printed) == sorted(LVU_TASKS)
    whole = json.loads((out / "summary.json").read_text())["tasks"]
    assert {t: {k: v["mean"] for k, v in s.items()} for t, s in whole.items()} == printed
    assert all(f"## {t}" in (out / "summary.md").read_text() for t in LVU_TASKS)
    for task in LVU_TASKS:
        d = out / task / "seed0"
        rec = json.loads((d / "metrics.json").read_text())
        assert rec["init"].startswith("ot:") and rec["train_videos"] == "1/1" and "+txe:" in rec["inputs"]
        for split in ("val", "test"):
            preds = json.loads((d / f"predictions_{split}.json").read_text())
            assert len(preds) == 1 and all(len(spans) >= 1 for spans in preds.values())
            assert (
                main(
                    [
                        "evaluate",
                        "lvu",
                        "--task",
                        task,
                        "--pred",
                        str(d / f"predictions_{split}.json"),
                        "--data-root",
                        str(lvu),
                        "--split",
                        split,
                    ]
                )
                == 0
            )
            again = json.loads(capsys.readouterr().out)
            metric = "mse" if LVU_TASKS[task]["type"] == "regression" else "top1"
            assert again["n"] == 1 and again[metric] == pytest.approx(rec["metrics"][f"{split}_{metric}"], abs=1e-9)
        assert (out / task / "summary.md").is_file() and (d / "model.pt").is_file()
    # a rerun with the same settings skips every finished run
    mtime = (out / "genre" / "seed0" / "metrics.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "genre" / "seed0" / "metrics.json").stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "bad, named",
    [(["train.epoch=1"], "train.epoch"), ([f"seed={2**32 - 2}", "--seeds", "3"], "seed")],  # seed: its 3rd run
)
def test_task_all_checks_its_config_before_the_txe_pass(lvu_setup, capsys, tmp_path, bad, named):
    """``--task all --contextualizer``: a typo in an override, or seeds past numpy's range (checked
    until now by each task's runner, after the pass), is one line and exit 2 before the TxE runs over
    every film (the pass before the first task)."""
    tmp, lvu, _ = lvu_setup
    out = tmp_path / "all"
    argv = ["finetune", "lvu", "--task", "all", "--data-root", str(lvu), "--scene-features", str(tmp / "events")]
    argv += ["--contextualizer", str(_txe_checkpoint(tmp_path / "txe.pt")), "--out", str(out), *bad]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and named in err and not (out / "scene_ctx").exists()


@pytest.mark.parametrize("meta", [None, "folder"])
def test_task_all_checks_every_tasks_instance_meta_before_the_txe_pass(lvu_setup, capsys, tmp_path, meta):
    """With LVU's released features/ (no boxes of its own) each task needs its instance_meta pkl; a
    missing one stopped ``--task all`` at its first task, after the TxE's pass over every film."""
    tmp, lvu, _ = lvu_setup
    out, feats = tmp_path / "all", tmp_path / "features"
    feats.mkdir()
    argv = ["finetune", "lvu", "--task", "all", "--data-root", str(lvu), "--scene-features", str(tmp / "events")]
    argv += ["--contextualizer", str(_txe_checkpoint(tmp_path / "txe.pt")), "--out", str(out)]
    argv += ["--instances", str(feats)]
    if meta == "folder":  # a folder holding some tasks' files only
        (tmp_path / "im").mkdir()
        (tmp_path / "im" / "instance_meta_scene.pkl").write_bytes(b"")
        argv += ["--instance-meta", str(tmp_path / "im")]
    assert main([*argv, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "instance_meta_" in err and not (out / "scene_ctx").exists()


def test_a_span_past_the_time_tables_is_refused_before_any_input(tmp_path, capsys):
    """data.span_s whose time ids the OT's position tables cannot hold (they were clamped: distinct
    seconds shared a row) is one line naming the setting, before the labels or inputs are read."""
    out = tmp_path / "o"
    argv = ["finetune", "lvu", "--task", "scene", "--data-root", str(tmp_path / "none"), "--out", str(out)]
    argv += ["--instances", str(tmp_path / "inst"), "data.span_s=300", *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("moviessl: error: data.span_s: a 300-s span") and not out.exists()


def test_a_finished_run_is_reused_only_on_the_same_labels_and_inputs(lvu_setup, tmp_path):
    tmp, lvu, _ = lvu_setup
    root, events = tmp_path / "lvu", tmp_path / "events"
    shutil.copytree(lvu / "lvu_1.0", root / "lvu_1.0")
    shutil.copytree(tmp / "events", events)
    out = tmp_path / "run"
    argv = ["finetune", "lvu", "--task", "year", "--data-root", str(root), "--scene-features", str(events)]
    argv += ["--scene-kind", "feats", "--out", str(out), "train.epochs=1", *FAST]

    def metrics():
        assert main(argv) == 0
        return (out / "seed0" / "metrics.json").read_text()  # holds its train time: a rerun rewrites it

    first = metrics()
    assert metrics() == first
    # a label edited in place trains again (it gave the stale score, exit 0)
    csv = root / "lvu_1.0" / "year" / "val.csv"
    head, row, *rest = csv.read_text().splitlines()
    label, tail = row.split(" ", 1)
    csv.write_text("\n".join([head, f"{(int(label) + 1) % 5} {tail}", *rest]) + "\n")
    second = metrics()
    assert second != first
    # so do scene features re-extracted into the same folder with another shape (stride 1 -> 2)
    f = sorted(events.glob("*_feats.npy"))[0]
    np.save(f, np.load(f)[::2])
    third = metrics()
    assert third != second and metrics() == third


def test_a_finished_run_on_moved_feature_folders_is_reused(lvu_setup, tmp_path):
    """The settings hash took the inputs' description, which names the instance and scene feature
    folders (resolved): the same folders moved (a cluster's scratch to a home folder, the table's
    --out with its own event folder) made every finished run another setting's, trained again.
    The folders' contents are in the data digest; the hash leaves out where they lie."""
    tmp, lvu, _ = lvu_setup
    scratch, home = tmp_path / "scratch", tmp_path / "home"
    shutil.copytree(tmp / "events", scratch / "events")
    shutil.copytree(tmp / "inst", scratch / "inst")
    out = tmp_path / "run"

    def metrics(where):
        argv = ["finetune", "lvu", "--task", "year", "--data-root", str(lvu), "--out", str(out)]
        argv += ["--instances", str(where / "inst"), "--scene-features", str(where / "events")]
        assert main([*argv, "--scene-kind", "feats", "train.epochs=1", *FAST]) == 0
        return (out / "seed0" / "metrics.json").read_text()  # holds its train time: a rerun rewrites it

    first = metrics(scratch)
    shutil.move(scratch, home)
    assert metrics(home) == first
    assert str(home / "events") in json.loads((out / "summary.json").read_text())["inputs"]  # as recorded


def test_inputs_digest_leaves_out_where_the_features_came_from(lvu_setup, tmp_path):
    """A moved checkpoint or data root, or another film added to the folder, rewrites index.json
    without changing any feature a run read: its finished runs stand (and copies of a folder on
    every node of a job agree); a different backbone is other data."""
    from moviessl.tasks.lvu.data import load_inputs, scene_arrays

    tmp, _, _ = lvu_setup
    events = tmp_path / "events"
    shutil.copytree(tmp / "events", events)

    def digest():
        scene, stride, _ = scene_arrays(events, "feats")
        return load_inputs(None, scene, stride).data

    first = digest()
    index = json.loads((events / "index.json").read_text())
    index["backbone_path"] = "/elsewhere/model.pt"
    for entry in index["videos"].values():
        entry["source"] = "/elsewhere/" + str(entry.get("source"))
    index["videos"]["another_film"] = {"status": "bad", "error": "x"}
    index["counts"] = {"ok": 0, "bad": 99}
    (events / "index.json").write_text(json.dumps(index))
    assert digest() == first
    index["backbone"] = "0123456789ab"
    (events / "index.json").write_text(json.dumps(index))
    assert digest() != first


def test_splits_without_inputs_are_partial_or_bad_input(lvu_setup, capsys, tmp_path):
    """An eval split whose videos had no inputs lost its score silently (a `n=0` table, exit 0)."""
    tmp, lvu, _ = lvu_setup
    events = tmp_path / "events"
    shutil.copytree(tmp / "events", events)
    index = json.loads((events / "index.json").read_text())

    def drop(split):
        vid = (lvu / "lvu_1.0" / "year" / f"{split}.csv").read_text().splitlines()[1].split()[-2]
        index["videos"].pop(vid)
        (events / "index.json").write_text(json.dumps(index))

    def run(name):
        argv = ["finetune", "lvu", "--task", "year", "--data-root", str(lvu), "--scene-features", str(events)]
        return main(argv + ["--scene-kind", "feats", "--out", str(tmp_path / name), "train.epochs=1", *FAST])

    drop("val")
    assert run("a") == 0
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert sorted(s["summary"]) == ["test_top1"] and "val: scored on 0 of 1" in s["partial"]
    assert "PARTIAL" in (tmp_path / "a" / "summary.md").read_text()
    assert "moviessl: warning: year: PARTIAL: val: scored on 0 of 1" in capsys.readouterr().err
    drop("test")
    capsys.readouterr()
    assert run("b") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no video of val or test has inputs" in err[0]
    assert not (tmp_path / "b" / "seed0").exists()


def test_a_diverged_run_says_so(lvu_setup, capsys, tmp_path):
    """NaN outputs were reported as a bad predictions file, and written as JSON that is not JSON."""
    tmp, lvu, _ = lvu_setup
    out = tmp_path / "run"
    argv = ["finetune", "lvu", "--task", "view_count", "--data-root", str(lvu), "--scene-features"]
    argv += [str(tmp / "events"), "--out", str(out), "train.lr=1e12", "trainer.gradient_clip_val=null", *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged" in err[0] and str(out / "seed0") in err[0]
    assert not list((out / "seed0").glob("predictions_*.json")) and not (out / "seed0" / "metrics.json").exists()


def test_scene_only_and_bad_inputs(lvu_setup, capsys, tmp_path, monkeypatch):
    tmp, lvu, _ = lvu_setup
    argv = [
        "finetune",
        "lvu",
        "--task",
        "year",
        "--data-root",
        str(lvu),
        "--scene-features",
        str(tmp / "events"),
        "--scene-kind",
        "feats",
        "--seeds",
        "2",
        "--out",
        str(tmp_path / "so"),
        "train.epochs=1",
        *FAST,
    ]
    assert main(argv) == 0
    s = json.loads((tmp_path / "so" / "summary.json").read_text())
    assert s["seeds"] == 2 and s["summary"]["test_top1"]["n"] == 2
    # other settings + --resume: the old run's checkpoint is not resumed (it would "train" 0 steps)
    ck = tmp_path / "so" / "seed0" / "checkpoints" / "last.ckpt"
    assert torch.load(ck, weights_only=False)["global_step"] == 1
    assert main(argv[:-2] + ["--resume", "train.epochs=4", "train.batch_size=1", *FAST]) == 0
    assert torch.load(ck, weights_only=False)["global_step"] == 4
    # other settings without --resume: the old run's checkpoints go (Lightning saved the new run's
    # beside them as last-v1.ckpt, and a later --resume restored the old last.ckpt)
    assert main(argv[:-2] + ["train.epochs=2", "train.batch_size=1", *FAST]) == 0
    assert torch.load(ck, weights_only=False)["global_step"] == 2 and [p.name for p in ck.parent.iterdir()] == [ck.name]
    assert not list((ck.parent.parent / "logs").glob("metrics.part*.csv"))  # nor its curves beside this run's
    # ... and its metrics.json goes before the new run trains: killed then, no old score stays beside it
    import moviessl.tasks.base as base

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(base, "fit", killed)
    assert main(argv[:-2] + ["train.epochs=3", "train.batch_size=1", *FAST]) == 130
    assert not (ck.parent.parent / "metrics.json").exists()
    monkeypatch.undo()
    capsys.readouterr()
    # no inputs at all, and a bad tracks file, are one line and exit 2
    assert main(["finetune", "lvu", "--task", "year", "--data-root", str(lvu), "--out", str(tmp_path / "x")]) == 2
    assert "--instances" in capsys.readouterr().err
    bad = tmp_path / "tracks"
    bad.mkdir()
    vid = next((lvu / "videos").iterdir())
    (bad / f"{vid.stem}.json").write_text('{"seconds": [{"t": 0, "track_ids": [1], "boxes": [[0.5, 0, 0.1, 1]]}]}')
    assert (
        main(
            [
                "extract-instances",
                "--backbone",
                str(tmp / "backbone.pt"),
                "--videos",
                str(lvu),
                "--tracks",
                str(bad),
                "--out",
                str(tmp_path / "i"),
            ]
        )
        == 2  # no video usable: the job failed, though its index lists why
    )
    assert "none of the 1 video(s) could be used" in capsys.readouterr().err
    index = json.loads((tmp_path / "i" / "index.json").read_text())
    assert index["counts"] == {"ok": 0, "bad": 1} and "inverted" in index["videos"][vid.stem]["error"]


def _lvu_release(root):
    """LVU's download for the scene task: lvu_1.0/ labels, features/<id>.npz, instance_meta/ (by task)."""
    import pickle

    rng = np.random.default_rng(0)
    (root / "features").mkdir(parents=True)
    (root / "instance_meta").mkdir()
    meta = {}
    splits = {"train": [f"tr{k}" for k in range(4)], "val": ["va0", "va1"], "test": ["te0"]}
    for vids in splits.values():
        for vid in vids:
            secs = {s: {f"0.{k}00,0.100,0.{k + 3}00,0.900": [s // 20, k] for k in range(2)} for s in range(70)}
            meta[vid] = secs
            np.savez(
                root / "features" / f"{vid}.npz",
                a={s: {b: rng.normal(size=8).astype(np.float32) for b in bs} for s, bs in secs.items()},
            )
    with open(root / "instance_meta" / "instance_meta_scene.pkl", "wb") as f:
        pickle.dump(meta, f)
    for split, vids in splits.items():
        p = root / "lvu_1.0" / "scene" / f"{split}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(
            "class_id class_name youtube_id imdb_id\n"
            + "".join(f"{k % 6} office {v} tt{k}\n" for k, v in enumerate(vids))
        )
    return root


def test_build_inputs_reads_only_the_tasks_videos(lvu_setup, monkeypatch):
    """A scene folder holds every movie of the nine tasks; a task loads (and contextualises) only the
    videos it has labels for."""
    from moviessl.features.store import FeatureStore
    from moviessl.tasks.lvu import runner

    tmp, lvu, _ = lvu_setup
    loaded = []
    real = FeatureStore.load
    monkeypatch.setattr(FeatureStore, "load", lambda self, v, mmap=False: loaded.append(v) or real(self, v, mmap))
    every = runner.build_inputs("year", lvu, scene_features=tmp / "events", scene_kind="feats")
    some = sorted(every.videos)[:3]
    loaded.clear()
    part = runner.build_inputs("year", lvu, scene_features=tmp / "events", scene_kind="feats", ids=some)
    assert sorted(part.videos) == some and sorted(loaded) == some
    np.testing.assert_array_equal(part.videos[some[0]].scene, every.videos[some[0]].scene)


def test_runs_on_lvus_released_inputs(tmp_path, capsys):
    """A user with the LVU download: lvu_1.0/ labels, features/<id>.npz, instance_meta/ (by task)."""
    root = _lvu_release(tmp_path / "data")
    out = tmp_path / "ft"
    argv = [
        "finetune",
        "lvu",
        "--task",
        "scene",
        "--data-root",
        str(root),
        "--instances",
        str(root / "features"),
        "--seeds",
        "1",
        "--out",
        str(out),
        "train.epochs=1",
        *FAST,
    ]
    assert main(argv) == 0
    preds = json.loads((out / "seed0" / "predictions_val.json").read_text())
    assert sorted(preds) == ["va0", "va1"] and all(len(p) == 70 - 59 for p in preds.values())  # spans end at 59..69
    assert all(len(s) == 6 and abs(sum(s) - 1) < 1e-5 for p in preds.values() for s in p)


def test_the_videos_used_and_missing_are_recorded_by_id(tmp_path, capsys):
    """LVU's videos go missing: only counts (``train_videos: "3/4"``) were recorded, so which videos a
    result was trained and scored on could not be told, nor compared with another run's."""
    import pickle

    root = _lvu_release(tmp_path / "data")
    meta_path = root / "instance_meta" / "instance_meta_scene.pkl"
    meta = pickle.loads(meta_path.read_bytes())
    for gone in ("tr2", "va1"):  # no longer downloadable: no boxes in the instance metadata
        meta.pop(gone)
    meta_path.write_bytes(pickle.dumps(meta))
    out = tmp_path / "ft"
    argv = ["finetune", "lvu", "--task", "scene", "--data-root", str(root), "--instances", str(root / "features")]
    assert main(argv + ["--out", str(out), "train.epochs=1", *FAST]) == 0
    rec = json.loads((out / "videos.json").read_text())
    assert rec["task"] == "scene"
    assert rec["splits"]["train"] == {"used": ["tr0", "tr1", "tr3"], "missing": ["tr2"]}
    assert rec["splits"]["val"] == {"used": ["va0"], "missing": ["va1"]}
    assert rec["splits"]["test"] == {"used": ["te0"], "missing": []}
    assert rec["without_instance_tokens"] == {"train": [], "val": [], "test": []}
    assert sorted(json.loads((out / "seed0" / "predictions_val.json").read_text())) == rec["splits"]["val"]["used"]


@pytest.mark.parametrize("preset, betas", [("paper", (0.9, 0.999)), ("cpu", (0.9, 0.99))])
def test_finetuning_adamw_betas(tmp_path, monkeypatch, preset, betas):
    """LVU fine-tunes with HF AdamW's default betas (chaoyuaw/lvu run.py: (0.9, 0.999)); the cpu
    preset keeps (0.9, 0.99), the betas its recorded demo table was trained with."""
    from moviessl.tasks.lvu import runner

    class Stop(Exception):
        pass

    jobs = []

    def capture(job, seeds):
        jobs.append(job)
        raise Stop  # before any training

    monkeypatch.setattr(runner, "run_seeds", capture)
    root = _lvu_release(tmp_path / "data")
    with pytest.raises(Stop):
        runner.run_finetune("scene", root, instances=root / "features", out=tmp_path / "ft", preset=preset)
    assert tuple(jobs[0].optim.betas) == betas


def test_bad_feature_files_exit_2_with_one_line(lvu_setup, tmp_path, capsys):
    tmp, lvu, _ = lvu_setup
    base = ["finetune", "lvu", "--task", "scene", "--data-root", str(lvu), "--out", str(tmp_path / "o"), *FAST]
    # LVU-release instances with a corrupt instance-metadata pickle
    (tmp_path / "features").mkdir()
    (tmp_path / "meta.pkl").write_bytes(b"\x80\x04garbage")
    assert main(base + ["--instances", str(tmp_path / "features"), "--instance-meta", str(tmp_path / "meta.pkl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "meta.pkl" in err
    # a scene feature file of the wrong shape
    import shutil

    ev = tmp_path / "events"
    shutil.copytree(tmp / "events", ev)
    victim = next(ev.glob("*_feats.npy"))
    np.save(victim, np.zeros((3, 5), np.float32))
    assert main(base + ["--scene-features", str(ev)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and victim.name in err and "expected shape" in err


def test_table5_analogue_end_to_end(lvu_setup, tmp_path):
    from moviessl.tasks.lvu.table import run_lvu_table, setting_name

    tmp, lvu, teacher = lvu_setup
    ctx = _txe_checkpoint(tmp_path / "txe.pt")
    bb = tmp / "backbone.pt"
    rows = [("ot", "none"), ("none", "sup"), ("none", "ours"), ("ot", "ours")]
    res = run_lvu_table(
        tmp_path / "table",
        lvu.parent,
        backbones={"supervised": bb, "cvrl": bb},
        contextualizer=ctx,
        seeds=2,
        rows=rows,
        tasks=["year", "view_count"],
        event_features={"cvrl": tmp / "events", "supervised": tmp / "events"},
        teacher=teacher,
        overrides=["train.epochs=1"],
        pretrain_overrides=["trainer.max_steps=2", "data.batch_size=2"],
        roi_short_side=None,
    )
    got = {(r["setting"], r["metric"]) for r in res["rows"]}
    assert got == {(setting_name(*r), t) for r in rows for t in ("year", "view_count")}
    assert all(r["table"] == "lvu" and r["n"] == 2 for r in res["rows"]) and len(res["rows_val"]) == len(res["rows"])
    assert (
        "#top-1" in res["markdown"] and "oracle" in res["markdown"] and (tmp_path / "table" / "lvu_table.png").is_file()
    )
    assert set(res["claims"]["test"]) >= {"ot_beats_constant", "otpp_best_mean_rank", "ours_beats_sup"}
    # another RoI size or pretraining config in the same folder: new caches beside the old, no clash
    again = dict(seeds=1, rows=[("ot", "none")], tasks=["year"], teacher=teacher, overrides=["train.epochs=1"])
    run_lvu_table(
        tmp_path / "table",
        lvu.parent,
        {"supervised": bb},
        None,
        pretrain_overrides=["trainer.max_steps=1", "data.batch_size=2"],
        roi_short_side=48,
        **again,
    )
    sizes = sorted(d.name for d in (tmp_path / "table" / "instances").iterdir())
    assert sizes == ["supervised_32px", "supervised_48px"]
    assert len(list((tmp_path / "table" / "ot_pretrain").glob("*/model.pt"))) == 2
    # the same pretraining shown otherwise (a batch job: no progress bar, other log / checkpoint
    # intervals) reuses its pretrained OT instead of pretraining it again
    shown = ["trainer.progress_bar=false", "trainer.log_every_n_steps=7", "trainer.ckpt_every_n_steps=3"]
    run_lvu_table(
        tmp_path / "table",
        lvu.parent,
        {"supervised": bb},
        None,
        pretrain_overrides=["trainer.max_steps=1", "data.batch_size=2", *shown],
        roi_short_side=48,
        **again,
    )
    assert len(list((tmp_path / "table" / "ot_pretrain").iterdir())) == 2


def test_table_pretrains_the_ot_anew_on_other_instances(lvu_setup, tmp_path):
    """The pretrained OT is cached by what the instance folder holds: instances extracted again from
    other tracks pretrain a new OT (it was reused, pretrained on the old boxes). An OT finished under
    the earlier name (without the instances) is taken over once, not pretrained again."""
    from moviessl.checkpoint import file_hash
    from moviessl.config import load_config, to_dict
    from moviessl.features.instances import InstanceStore
    from moviessl.tasks.lvu.table import ot_pretrain_keys, run_lvu_table

    tmp, _, teacher = lvu_setup
    synth = tmp_path / "synth"
    shutil.copytree(tmp / "synth", synth)
    pre = ["trainer.max_steps=1", "data.batch_size=2"]
    kw = dict(seeds=1, rows=[("ot", "none")], tasks=["year"], teacher=teacher, overrides=["train.epochs=1"])
    table = tmp_path / "table"

    def run():
        run_lvu_table(table, synth, {"supervised": tmp / "backbone.pt"}, None, pretrain_overrides=pre, **kw)
        return sorted(d.name for d in (table / "ot_pretrain").iterdir())

    first = run()
    assert len(first) == 1
    tracks = next((synth / "lvu" / "tracks").glob("*.json"))
    doc = json.loads(tracks.read_text())
    doc["seconds"] = doc["seconds"][:-1]  # the last second's boxes gone
    tracks.write_text(json.dumps(doc))
    second = run()
    assert len(second) == 2  # the OT of the old boxes is kept beside the new one
    # the earlier name of the current OT (no instances in it): taken over, not pretrained again
    (new,) = set(second) - set(first)
    cfg = to_dict(load_config("ot_pretrain", "cpu", [*pre, "trainer.progress_bar=false"]))
    cfg["data"].pop("instance_cache_mb")
    store = InstanceStore(table / "instances" / "supervised_32px")
    key, earlier = ot_pretrain_keys(store, cfg, file_hash(teacher))
    assert key == new
    (table / "ot_pretrain" / new).rename(table / "ot_pretrain" / earlier[0])
    mtime = (table / "ot_pretrain" / earlier[0] / "model.pt").stat().st_mtime_ns
    assert run() == second
    assert (table / "ot_pretrain" / new / "model.pt").stat().st_mtime_ns == mtime


def test_epochs_chosen_on_held_out_training_videos(lvu_setup, tmp_path, capsys):
    """``train.epochs_grid``: each value trained on 80% of the train videos and scored on the other
    20% (never val / test); the final runs use the best value and are the very runs a fixed
    ``train.epochs`` of that value makes (reused, not retrained)."""
    from moviessl.data.lvu import read_labels

    tmp, lvu1, _ = lvu_setup
    one = ["finetune", "lvu", "--task", "year", "--data-root", str(lvu1), "--scene-features", str(tmp / "events")]
    assert main([*one, "--out", str(tmp_path / "one"), "train.epochs_grid=[1,2]", *FAST]) == 2
    assert "cannot be split" in capsys.readouterr().err  # the tiny preset has one training movie
    lvu = generate(tmp_path / "synth", preset="tiny", seed=0, progress=False, n_lvu=10) / "lvu"
    ev = ["extract", "--backbone", str(tmp / "backbone.pt"), "--videos", str(lvu), "--out", str(tmp_path / "ev")]
    assert main([*ev, "--num-workers", "0", "--accelerator", "cpu"]) == 0
    out = tmp_path / "tuned"
    argv = ["finetune", "lvu", "--task", "like_ratio", "--data-root", str(lvu), "--scene-features"]
    argv += [str(tmp_path / "ev"), "--scene-kind", "feats", "--seeds", "2", "--out", str(out), *FAST]
    assert main([*argv, "train.epochs_grid=[1,3]", "train.tune_seeds=2"]) == 0
    tuning = json.loads((out / "tune" / "tuning.json").read_text())
    mean = {k: float(np.mean(v)) for k, v in tuning["values"].items()}
    assert set(mean) == {"1", "3"} and all(len(v) == 2 for v in tuning["values"].values())
    assert tuning["best"] == int(min(mean, key=mean.get))
    train_ids = {v for v, _ in read_labels(lvu, "like_ratio", "train")}
    assert tuning["heldout_videos"] + tuning["fit_videos"] == len(train_ids)
    for e in (1, 3):  # the held-out runs never score val / test and write no model
        run = out / "tune" / f"epochs{e}" / "seed0"
        assert not list(run.glob("predictions_*")) and not (run / "model.pt").exists()
        steps = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
        bs = 16  # the paper preset's batch: #fit videos x epochs spans per run
        assert steps == -(-tuning["fit_videos"] * e // bs)
    s = json.loads((out / "summary.json").read_text())
    assert s["epochs"] == tuning["best"] and s["epochs_tuning"]["best"] == tuning["best"]
    first = {r["seed"]: r["metrics"] for r in s["runs"]}
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("seed*/metrics.json")}
    assert len(stamps) == 2
    assert main([*argv, f"train.epochs={tuning['best']}"]) == 0  # a fixed schedule of the chosen length
    assert {p: p.stat().st_mtime_ns for p in out.glob("seed*/metrics.json")} == stamps  # reused
    assert {r["seed"]: r["metrics"] for r in json.loads((out / "summary.json").read_text())["runs"]} == first


def test_input_norm_uses_the_training_videos_statistics(lvu_setup, tmp_path, caplog):
    """``model.overrides.input_norm=true``: a scratch OT standardises by its train videos' features,
    a masked-instance-pretrained one keeps the statistics it was pretrained with."""
    from moviessl.checkpoint import load_checkpoint
    from moviessl.data.lvu import read_labels
    from moviessl.features.instances import InstanceStore
    from moviessl.features.store import FeatureStore

    tmp, lvu, teacher = lvu_setup
    norm = ["model.overrides.input_norm=true"]
    (train_id,) = [v for v, _ in read_labels(lvu, "year", "train")]
    store = InstanceStore(tmp / "inst")
    feats = {v: store.load(v).feat for v in store.ids}
    scene = FeatureStore(tmp / "events", num_events=None).load(train_id)

    out = tmp_path / "ft"
    base = ["finetune", "lvu", "--task", "year", "--data-root", str(lvu), "--instances", str(tmp / "inst")]
    assert main(base + ["--scene-features", str(tmp / "events"), "--seeds", "1", "--out", str(out)] + norm + FAST) == 0
    sd = load_checkpoint(out / "seed0" / "model.pt", stage="lvu")["state_dict"]
    assert bool(sd["ot.inst_norm.is_set"]) and bool(sd["ot.scene_norm.is_set"])
    np.testing.assert_allclose(sd["ot.inst_norm.mean"].numpy(), feats[train_id].mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sd["ot.scene_norm.mean"].numpy(), scene.mean(0), rtol=1e-4, atol=1e-5)

    pt = tmp_path / "ot_pretrain"
    argv = ["pretrain-ot", "--instances", str(tmp / "inst"), "--teacher", str(teacher), "--out", str(pt)]
    assert main(argv + ["trainer.max_steps=2", "data.batch_size=2"] + norm + FAST) == 0
    pre = load_checkpoint(pt / "model.pt", stage="ot")["state_dict"]
    every = np.concatenate([feats[v] for v in sorted(feats)])
    np.testing.assert_allclose(pre["inst_norm.mean"].numpy(), every.mean(0), rtol=1e-4, atol=1e-5)
    out2 = tmp_path / "ft_init"
    with caplog.at_level("WARNING", logger="moviessl"):
        assert main(base + ["--init", str(pt / "model.pt"), "--seeds", "1", "--out", str(out2)] + norm + FAST) == 0
    assert "do not fit this model" not in caplog.text
    sd = load_checkpoint(out2 / "seed0" / "model.pt", stage="lvu")["state_dict"]
    assert torch.equal(sd["ot.inst_norm.mean"], pre["inst_norm.mean"])
    # fine-tuned without the pretrained OT's normalisation: its reduction, trained on standardised
    # inputs, would get raw ones; the statistics were dropped without a word
    caplog.clear()
    with caplog.at_level("WARNING", logger="moviessl"):
        off = ["model.overrides.input_norm=false"]
        assert (
            main(base + ["--init", str(pt / "model.pt"), "--seeds", "2", "--out", str(tmp_path / "o3")] + off + FAST)
            == 0
        )
    assert caplog.text.count("pretrained tensors do not fit this model") == 1  # once, not per seed
    assert "inst_norm.mean" in caplog.text and "model.overrides must match" in caplog.text


def test_the_table_extracts_again_for_a_backbone_retrained_under_its_name(lvu_setup, tmp_path):
    """The table's event folder was reused whenever it had an index: a CVRL / supervised backbone
    retrained under the same name gave scene rows on the old one's features, exit 0 (and its instance
    folder refused the new one). Another checkpoint's features go to a folder beside, by its hash."""
    from moviessl.checkpoint import file_hash
    from moviessl.features.store import read_index
    from moviessl.tasks.lvu.table import run_lvu_table

    tmp, lvu, _ = lvu_setup
    kw = dict(seeds=1, rows=[("none", "sup")], tasks=["year"], overrides=["train.epochs=1"])
    first = tmp / "backbone.pt"
    run_lvu_table(tmp_path / "table", lvu.parent, {"supervised": first}, None, **kw)
    obj = torch.load(first, weights_only=False)
    obj["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in obj["state_dict"].items()}
    second = tmp_path / "retrained.pt"
    torch.save(obj, second)
    run_lvu_table(tmp_path / "table", lvu.parent, {"supervised": second}, None, **kw)
    held = {read_index(d)["backbone"] for d in (tmp_path / "table" / "events").iterdir()}
    assert held == {file_hash(first), file_hash(second)}


def test_a_movie_added_to_the_root_gets_scene_features_and_a_rerun_reuses_its_cells(lvu_setup, tmp_path):
    """The table's own event folder is extracted on every run: a film added to the root after the
    first run is extracted (it got no scene tokens before), while a rerun over an unchanged root
    skips every film and reuses its fine-tuning cells (the folder's index is the same)."""
    import shutil

    from moviessl.features.store import read_index
    from moviessl.tasks.lvu.table import run_lvu_table

    tmp, lvu, _ = lvu_setup
    root = tmp_path / "synth"
    shutil.copytree(lvu, root / "lvu")
    kw = dict(seeds=1, rows=[("none", "sup")], tasks=["year"], overrides=["train.epochs=1"])
    run_lvu_table(tmp_path / "table", root, {"supervised": tmp / "backbone.pt"}, None, **kw)
    (events,) = (tmp_path / "table" / "events").iterdir()
    cell = sorted((tmp_path / "table" / "finetune").rglob("model.pt"))  # (summaries are re-aggregated)
    stamps = [p.stat().st_mtime_ns for p in cell]
    assert cell
    run_lvu_table(tmp_path / "table", root, {"supervised": tmp / "backbone.pt"}, None, **kw)
    assert [p.stat().st_mtime_ns for p in cell] == stamps
    first = sorted((root / "lvu" / "videos").iterdir())[0]
    shutil.copy(first, first.with_name(f"added_{first.name}"))
    run_lvu_table(tmp_path / "table", root, {"supervised": tmp / "backbone.pt"}, None, **kw)
    assert f"added_{first.stem}" in read_index(events)["videos"]


@pytest.mark.parametrize("task", ["relationship", "all"])
def test_a_second_job_on_a_folder_a_job_is_training_in_is_refused(lvu_setup, capsys, tmp_path, task):
    """Two `finetune lvu` jobs on one --out trained into the same seed folders (and, for --task all,
    the same scene cache and summary): each removed the other's checkpoints and logs, and one job's
    summary counted the other's runs. The second is now one line naming the holder, writing nothing."""
    import fcntl
    import os
    import socket

    from moviessl.features.store import JOB_LOCK

    tmp, lvu, _ = lvu_setup
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / JOB_LOCK, os.O_RDWR | os.O_CREAT)  # another job's, with its own open file
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since then".encode())
    argv = ["finetune", "lvu", "--task", task, "--data-root", str(lvu), "--scene-features", str(tmp / "events")]
    try:
        rc = main([*argv, "--out", str(out), "train.epochs=1", *FAST])
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert rc == 2 and "another moviessl job is writing to this folder (pid" in err and str(out) in err, err
    assert [p.name for p in out.iterdir()] == [JOB_LOCK]


def test_other_features_in_a_folder_without_an_index_train_again(lvu_setup, tmp_path):
    """The settings hash leaves a feature folder's place out where the data digest tells its features
    apart; a folder without an index.json (features made elsewhere) is digested by its files' names
    and sizes alone, so another such folder of other features of the same shapes, given to the same
    --out, was taken for the first and its finished runs reused. Its place stays in the hash."""
    tmp, lvu, _ = lvu_setup
    out = tmp_path / "run"
    for name, shift in (("a", 0.0), ("b", 1.0)):
        events = tmp_path / name / "events"
        shutil.copytree(tmp / "events", events)
        (events / "index.json").unlink()
        for f in events.glob("*_feats.npy"):
            x = np.load(f)
            np.save(f, (x + shift).astype(x.dtype))

    def metrics(name):
        argv = ["finetune", "lvu", "--task", "year", "--data-root", str(lvu), "--out", str(out)]
        argv += ["--scene-features", str(tmp_path / name / "events"), "--scene-kind", "feats"]
        assert main([*argv, "train.epochs=1", *FAST]) == 0
        return json.loads((out / "seed0" / "metrics.json").read_text())["settings"]

    first = metrics("a")
    assert metrics("b") != first
    assert metrics("a") == first  # (the same folder again: reused)


def test_a_pretrained_ot_with_nan_weights_is_one_line_naming_it(lvu_setup, capsys, tmp_path):
    """--init's weights were loaded into each seed's OT past build_from_checkpoint's check: a NaN
    pretrained OT trained on to "training diverged", naming a seed, not the file."""
    from moviessl.models.object_transformer import build_object_transformer

    tmp, lvu, _ = lvu_setup
    ot = build_object_transformer("ot_cpu", in_dim=16)
    sd = ot.state_dict()
    name = next(k for k, v in sd.items() if v.is_floating_point())
    sd[name].fill_(float("nan"))
    arch = arch_spec("moviessl.models.object_transformer:build_object_transformer", preset="ot_cpu", in_dim=16)
    bad = save_checkpoint(tmp_path / "ot.pt", stage="ot", arch=arch, state_dict=sd)
    out = tmp_path / "run"
    argv = ["finetune", "lvu", "--task", "view_count", "--data-root", str(lvu), "--instances", str(tmp / "inst")]
    argv += ["--scene-features", str(tmp / "events"), "--init", str(bad), "--out", str(out), *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad}: 1 weight tensor(s) hold NaN/inf (first: {name})" in err[0], err
    assert not (out / "seed0").exists()


def test_an_lvu_finetune_with_a_contextualizer_leaves_the_callers_random_streams_as_they_were(lvu_setup, tmp_path):
    """As VidSitu's runner (tests/tasks/test_finetune.py): the TxE that contextualizes the scene
    features was built from its checkpoint outside the seeded runs, its initialisation before the
    weights are loaded drawing from torch's global generator, so a notebook's
    ``torch.manual_seed(0)`` gave other numbers after the finetune."""
    import random

    from moviessl.tasks.lvu.runner import run_finetune

    tmp, lvu, _ = lvu_setup
    ctx = _txe_checkpoint(tmp_path / "txe.pt")

    def draws():
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    want = draws()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    run_finetune(
        "year",
        lvu,
        scene_features=tmp / "events",
        contextualizer=ctx,
        seeds=1,
        out=tmp_path / "o",
        overrides=["train.epochs=1", *FAST],
    )
    assert draws() == want


def test_an_lvu_finetune_gives_the_callers_feature_cache_bound_back(lvu_setup, tmp_path):
    """As pretrain_ot (tests/context): the run's ``data.instance_cache_mb`` stayed the process's
    bound for instance and scene features after the call."""
    from moviessl.features import instances
    from moviessl.tasks.lvu.runner import run_finetune

    tmp, lvu, _ = lvu_setup
    before = instances.FEATURE_CACHE_BYTES
    assert before != 5 * 2**20
    over = ["train.epochs=1", "data.instance_cache_mb=5", *FAST]
    run_finetune("year", lvu, scene_features=tmp / "events", seeds=1, out=tmp_path / "o", overrides=over)
    assert instances.FEATURE_CACHE_BYTES == before
