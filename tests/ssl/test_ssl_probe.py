import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ssl_testutil import tiny_overrides

from moviessl.cli import main
from moviessl.optim import LARS, make_optimizer, param_groups, scaled_lr
from moviessl.ssl.probe import knn_accuracy, linear_probe


def _blobs(n, c, d, noise, seed):
    g = np.random.default_rng(seed)
    centres = g.normal(size=(c, d))
    y = np.arange(n) % c
    x = centres[y] + noise * g.normal(size=(n, d))
    return F.normalize(torch.tensor(x, dtype=torch.float32), dim=1).numpy(), y


def test_linear_probe_and_knn_separate_clusters():
    xtr, ytr = _blobs(80, 4, 16, 0.3, 0)
    xva, yva = _blobs(40, 4, 16, 0.3, 0)  # same centres (same seed), new noise draw below
    xva = F.normalize(torch.tensor(xva) + 0.05 * torch.randn(xva.shape), dim=1).numpy()
    assert linear_probe(xtr, ytr, xva, yva, 4) == 100.0
    assert knn_accuracy(xtr, ytr, xva, yva, 4, k=5) == 100.0


def test_the_probes_run_on_the_cpu_whatever_the_default_device():
    """Under a user's ``torch.set_default_device("cuda")`` the linear probe's layer was made on the GPU
    (whose normal_ refused the probe's CPU generator) and the k-NN's vote table too (beside CPU
    neighbours). The CPU probes give the results they gave before."""
    from default_device import gpu_like_default_device
    from moviessl.ssl.probe import knn_accuracy_topk, linear_probe_topk

    xtr, ytr = _blobs(60, 5, 8, 1.5, 0)
    xva, yva = _blobs(30, 5, 8, 1.5, 1)

    def probes():
        return linear_probe_topk(xtr, ytr, xva, yva, 5, max_iter=20), knn_accuracy_topk(xtr, ytr, xva, yva, 5, k=7)

    cpu = probes()
    with gpu_like_default_device():
        assert probes() == cpu


def test_probe_is_at_chance_on_noise():
    g = np.random.default_rng(1)
    xtr = F.normalize(torch.tensor(g.normal(size=(200, 32)), dtype=torch.float32), dim=1).numpy()
    xva = F.normalize(torch.tensor(g.normal(size=(400, 32)), dtype=torch.float32), dim=1).numpy()
    ytr, yva = g.integers(0, 4, 200), g.integers(0, 4, 400)
    assert abs(linear_probe(xtr, ytr, xva, yva, 4) - 25.0) < 10
    assert abs(knn_accuracy(xtr, ytr, xva, yva, 4) - 25.0) < 10


def test_knn_in_blocks_of_val_rows_equals_one_block(monkeypatch):
    import moviessl.ssl.probe as probe

    x, y = _blobs(430, 5, 16, 0.8, 1)
    xtr, ytr, xva, yva = x[:300], y[:300], x[300:], y[300:]
    whole = knn_accuracy(xtr, ytr, xva, yva, 5, k=7)
    monkeypatch.setattr(probe, "KNN_ROWS", 32)  # 5 blocks, the last one short
    assert knn_accuracy(xtr, ytr, xva, yva, 5, k=7) == whole and 40 < whole < 100


def test_the_probe_reports_top5_beside_an_unchanged_top1():
    """Kinetics' probes are reported as top-1 and top-5; the probe gave top-1 only. Top-5 is the
    share of val videos whose label is among the 5 best-scored classes (the linear classifier fitted
    once, the same top-1), and for k-NN among the 5 best-voted classes that got a vote at all."""
    from moviessl.ssl.config import ProbeConfig
    from moviessl.ssl.probe import probe_features

    cfg = ProbeConfig(
        num_clips=1, batch_size=4, weight_decay=0.0, max_iter=50, knn_k=20, knn_t=0.07, seed=0, val_fraction=0.2
    )
    g = np.random.default_rng(4)
    xtr = F.normalize(torch.tensor(g.normal(size=(300, 32)), dtype=torch.float32), dim=1).numpy()
    xva = F.normalize(torch.tensor(g.normal(size=(600, 32)), dtype=torch.float32), dim=1).numpy()
    ytr, yva = g.integers(0, 10, 300), g.integers(0, 10, 600)
    res = probe_features(xtr, ytr, xva, yva, cfg)
    assert res["linear_top1"] == round(linear_probe(xtr, ytr, xva, yva, 10, max_iter=50), 3)
    assert res["knn_top1"] == round(knn_accuracy(xtr, ytr, xva, yva, 10, k=20), 3)
    assert abs(res["linear_top5"] - 50.0) < 10 and abs(res["knn_top5"] - 50.0) < 10  # chance on noise: 5 of 10
    assert res["linear_top5"] > res["linear_top1"] and res["knn_top5"] > res["knn_top1"]
    # one neighbour votes for one class: the other four "best" classes have no vote and are no guess
    one = probe_features(xtr, ytr, xva, yva, ProbeConfig(**{**vars(cfg), "knn_k": 1}))
    assert one["knn_top5"] == one["knn_top1"]
    # separable classes: both 100
    xtr, ytr = _blobs(80, 4, 16, 0.3, 0)
    sep = probe_features(xtr, ytr, xtr, ytr, cfg)
    assert sep["linear_top1"] == sep["linear_top5"] == 100.0 and sep["knn_top5"] == 100.0


def test_lars_trust_ratio_and_lr_scaling():
    w = torch.nn.Parameter(torch.full((4, 4), 2.0))  # |w| = 8
    b = torch.nn.Parameter(torch.zeros(4))
    opt = LARS(
        [dict(params=[w], weight_decay=0.0, lars=True), dict(params=[b], weight_decay=0.0, lars=False)],
        lr=1.0,
        eta=0.01,
    )
    w.grad, b.grad = torch.full((4, 4), 0.5), torch.full((4,), 0.5)  # |g| = 2
    opt.step()
    assert torch.allclose(w, torch.full((4, 4), 2.0 - 0.01 * 8 / 2 * 0.5))  # lr * eta |w|/|g| * g
    assert torch.allclose(b, torch.full((4,), -0.5))  # no adaptation on biases / norms
    m = torch.nn.Linear(3, 3)
    assert scaled_lr(0.32, 256, 1024) == pytest.approx(0.08)  # CVRL: 0.32 per 1024, linear in the batch
    assert scaled_lr(0.32, 256, None) == pytest.approx(0.32)
    opt = make_optimizer(param_groups(m.named_parameters(), 1e-6), "sgd", 0.08)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-6, 0.0]  # the weight, not the bias


def test_probe_backbone_cli(clip_list, tmp_path, capsys):
    out = tmp_path / "rand"
    rc = main(
        [
            "pretrain-backbone",
            "--method",
            "random",
            "--data",
            str(clip_list),
            "--out",
            str(out),
            "--no-probe",
            *tiny_overrides(),
        ]
    )
    assert rc == 0 and (out / "model.pt").is_file()
    capsys.readouterr()
    rc = main(
        [
            "probe-backbone",
            "--data",
            str(clip_list),
            "--val",
            str(clip_list),
            "--out",
            str(tmp_path / "p.json"),
            str(out / "model.pt"),
            "probe.max_iter=50",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["method"] == "random" and res["num_train"] == 12 and res["skipped_train"] == 1
    assert res["linear_top1"] == json.loads((tmp_path / "p.json").read_text())["linear_top1"]
    assert res["linear_top5"] >= res["linear_top1"] and res["knn_top5"] >= res["knn_top1"]  # printed and written
    assert res["linear_top5"] == json.loads((tmp_path / "p.json").read_text())["linear_top5"]


def test_random_init_is_written_by_the_jobs_leader_alone(clip_list, tmp_path, capsys, monkeypatch):
    """``--method random`` trains nothing, so no process group ever forms: under torchrun or srun every
    process ran the whole command, each writing model.pt and summary.json, probing again and removing
    the probe.json another had written. A process that is not the job's leader writes nothing."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    out = tmp_path / "rand"
    argv = ["pretrain-backbone", "--method", "random", "--data", str(clip_list), "--out", str(out), "--no-probe"]
    for k, v in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}.items():  # torchrun's rank 1
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # as Lightning reads RANK when imported there
    assert main([*argv, *tiny_overrides()]) == 0
    assert capsys.readouterr().out == "" and not any(out.iterdir())


def test_probe_reads_kinetics_as_released(clip_list, tmp_path, capsys, caplog):
    """``--data`` / ``--val`` given Kinetics' own annotation CSVs (``annotations/train.csv``, clips as
    ``train/{class}/{youtube_id}_{start:06d}_{end:06d}.mp4``): the same probe as the clip list gives."""
    from moviessl.data.cliplist import read_clip_list

    k400 = tmp_path / "k400"
    (k400 / "annotations").mkdir(parents=True)
    rows = ["label,youtube_id,time_start,time_end,split"]
    for i, (clip, y) in enumerate(read_clip_list(clip_list)):
        name = f"yt{i:02d}_{i:06d}_{i + 10:06d}.mp4"
        (k400 / "train" / f"class {y}").mkdir(parents=True, exist_ok=True)
        (k400 / "train" / f"class {y}" / name).symlink_to(clip)
        rows.append(f"class {y},yt{i:02d},{i},{i + 10},train")
    rows.append("class 1,removed,0,10,train")  # not in the download
    (k400 / "annotations" / "train.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "rand"
    assert main(["pretrain-backbone", "--method", "random", "--data", str(clip_list), "--out", str(out)]
                + ["--no-probe", *tiny_overrides()]) == 0  # fmt: skip
    capsys.readouterr()
    csv = str(k400 / "annotations" / "train.csv")
    argv = ["probe-backbone", "--data", csv, "--val", csv, str(out / "model.pt"), "probe.max_iter=50"]
    with caplog.at_level("WARNING", logger="moviessl.data"):
        assert main(argv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["num_train"] == 12 and res["skipped_train"] == 1  # the corrupt clip, as from the list
    assert "1 of 14 clips have no video" in caplog.text
    # ... and in the result, not only in the log: how much of Kinetics the scores stand on
    gone = {"count": 1, "listed": 14, "first": ["removed_000000_000010"]}
    assert res["missing_videos"] == {"data": gone, "val": gone}
    assert main(["probe-backbone", "--data", str(clip_list), "--val", str(clip_list), str(out / "model.pt")]
                + ["probe.max_iter=50"]) == 0  # fmt: skip
    same = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["linear_top1"] == same["linear_top1"] and res["knn_top1"] == same["knn_top1"]
    assert same["missing_videos"]["data"] == {"count": 0, "listed": 13, "first": []}  # a path list leaves none out
    # pretrain-backbone records them too: summary.json (the clips it trained on) and probe.json
    run = tmp_path / "k400run"
    argv = ["pretrain-backbone", "--method", "random", "--data", csv, "--val", csv, "--out", str(run)]
    assert main([*argv, *tiny_overrides(), "probe.max_iter=50"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["missing_videos"] == gone and summary["num_videos"] == 13
    assert json.loads((run / "probe.json").read_text())["missing_videos"] == {"data": gone, "val": gone}


def test_probe_decodes_in_loader_workers_with_the_same_result(clip_list, tmp_path, capsys, monkeypatch):
    """``data.num_workers`` (8 in the paper preset) decodes the probe's clips in worker processes: the
    same features and scores as in-process, and a bad video found inside a worker is still counted.
    Each list's loader is iterated once (one set of workers: tqdm.auto's class iterates what it is
    given twice)."""
    import torch

    iters = []
    real_iter = torch.utils.data.DataLoader.__iter__
    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", lambda self: iters.append(1) or real_iter(self))
    out = tmp_path / "rand"
    assert main(["pretrain-backbone", "--method", "random", "--data", str(clip_list), "--out", str(out)]
                + ["--no-probe", *tiny_overrides()]) == 0  # fmt: skip
    capsys.readouterr()
    res = []
    for workers in (0, 2):
        argv = [
            "probe-backbone",
            "--data",
            str(clip_list),
            "--val",
            str(clip_list),
            "--no-cache",
            str(out / "model.pt"),
        ]
        assert main([*argv, "probe.max_iter=50", f"data.num_workers={workers}"]) == 0
        res.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert res[0]["skipped_train"] == res[1]["skipped_train"] == 1 and res[1]["num_train"] == 12
    assert len(iters) == 4  # train and val lists, at 0 and 2 workers
    assert {k: v for k, v in res[0].items()} == res[1]
    # probe.max_per_class (the paper preset's 50): at most that many videos of each class per list
    argv = ["probe-backbone", "--data", str(clip_list), "--val", str(clip_list), str(out / "model.pt")]
    assert main([*argv, "probe.max_iter=50", "probe.max_per_class=2"]) == 0
    cut = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cut["num_train"] + cut["skipped_train"] == 8 and cut["num_val"] + cut["skipped_val"] == 8


def test_unlabelled_clip_lists_are_named_before_any_work(clip_list, tmp_path, capsys):
    """probe-backbone names the list and its first unlabelled clip (exit 2, nothing decoded);
    pretrain-backbone trains anyway and says at once that the probe is skipped, and why."""
    lines = clip_list.read_text().splitlines()
    unlab = clip_list.parent / "unlabelled.csv"
    unlab.write_text("\n".join([lines[0].rsplit(None, 1)[0], *lines[1:]]) + "\n")
    out = tmp_path / "rand"
    argv = ["pretrain-backbone", "--method", "random", "--data", str(clip_list), "--val", str(unlab)]
    assert main([*argv, "--out", str(out), *tiny_overrides()]) == 0
    note = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("moviessl: note: probe skipped")]
    first = Path(lines[0].rsplit(None, 1)[0]).name
    assert len(note) == 1 and "unlabelled.csv" in note[0] and f"(first: {first})" in note[0], note
    assert not (out / "probe.json").exists()
    rc = main(["probe-backbone", "--data", str(clip_list), "--val", str(unlab), str(out / "model.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unlabelled.csv" in err[0] and "1 of 13 clips have none" in err[0], err


def test_cli_bad_input_exits_2(tmp_path, capsys):
    rc = main(["probe-backbone", str(tmp_path / "nope.pt"), "--data", "x.csv", "--val", "y.csv"])
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoint not found" in err and len(err.strip().splitlines()) == 1


def test_probe_takes_sparse_label_ids_as_their_classes():
    """Label ids need not be dense (a list of some Kinetics classes, a stray id): the probe has one
    class per id that occurs, so a huge id is no classifier of max + 1 outputs (it was a traceback:
    400 TB asked for), and dense ids score as before."""
    from moviessl.ssl.config import ProbeConfig
    from moviessl.ssl.probe import probe_features

    cfg = ProbeConfig(
        num_clips=1, batch_size=4, weight_decay=0.0, max_iter=50, knn_k=5, knn_t=0.07, seed=0, val_fraction=0.2
    )
    xtr, ytr = _blobs(80, 4, 16, 0.8, 2)
    xva, yva = _blobs(40, 4, 16, 0.8, 3)
    dense = probe_features(xtr, ytr, xva, yva, cfg)
    ids = np.array([3, 17, 400, 10**11])
    sparse = probe_features(xtr, ids[ytr], xva, ids[yva], cfg)
    assert sparse == dense and dense["num_classes"] == 4


def test_probe_backbone_follows_the_presets_frame_cache_settings(tmp_path, capsys):
    """data.frame_cache=false (the paper preset: K400's frames would take terabytes) decodes the probe's
    clips on the fly, and data.cache_dir names the cache; probe-backbone cached frames beside the clip
    list whatever the preset said."""
    from ssl_testutil import make_clip_list

    csv = make_clip_list(tmp_path / "clips", n=4, bad=0, n_frames=12)
    out = tmp_path / "rand"
    assert main(["pretrain-backbone", "--method", "random", "--data", str(csv), "--out", str(out)]
                + ["--no-probe", *tiny_overrides()]) == 0  # fmt: skip
    argv = ["probe-backbone", "--data", str(csv), "--val", str(csv), str(out / "model.pt"), "probe.max_iter=5"]
    assert main([*argv, "data.frame_cache=false"]) == 0
    assert not list(csv.parent.glob(".moviessl_cache/frames_*/*.npy"))
    assert main([*argv, f"data.cache_dir={tmp_path / 'mine'}"]) == 0
    assert len(list((tmp_path / "mine").glob("frames_*/*.npy"))) == 4
    assert not list(csv.parent.glob(".moviessl_cache/frames_*/*.npy"))
    capsys.readouterr()


def test_probe_backbone_refuses_settings_it_does_not_use(clip_list, tmp_path, capsys):
    """The model and its clip geometry come from the checkpoint: data.crop=256 (CVRL tests at 256) was
    silently the checkpoint's crop, exit 0. Only probe.*, data.num_workers / frame_cache / cache_dir."""
    out = tmp_path / "rand"
    assert main(["pretrain-backbone", "--method", "random", "--data", str(clip_list), "--out", str(out)]
                + ["--no-probe", *tiny_overrides()]) == 0  # fmt: skip
    capsys.readouterr()
    argv = ["probe-backbone", "--data", str(clip_list), "--val", str(clip_list), str(out / "model.pt")]
    for over in ("data.crop=256", "seed=3", "trainer.devices=2"):
        assert main([*argv, "probe.max_iter=5", over]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        key = over.split("=")[0]
        assert len(err) == 1 and f"{key}: probe-backbone does not use this setting" in err[0], err


def test_probe_backbone_on_a_read_only_data_folder_decodes_on_the_fly(tmp_path, capsys, monkeypatch):
    """A released data set mounted read-only: the default frame cache beside the clip list cannot be
    made. probe-backbone stopped there, one line naming the hidden cache folder, where
    pretrain-backbone falls back to its run folder; it now decodes the probe's clips on the fly and
    writes nothing into the data folder."""
    import errno
    import os
    import pathlib

    from ssl_testutil import make_clip_list

    csv = make_clip_list(tmp_path / "clips", n=4, bad=0, n_frames=12)
    out = tmp_path / "rand"
    assert main(["pretrain-backbone", "--method", "random", "--data", str(csv), "--out", str(out)]
                + ["--no-probe", "data.frame_cache=false", *tiny_overrides()]) == 0  # fmt: skip
    data = csv.parent.resolve()
    before = sorted(data.rglob("*"))

    def read_only(orig):
        def method(self, *a, **k):
            if Path(os.path.abspath(self)).is_relative_to(data):
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return orig(self, *a, **k)

        return method

    for name in ("mkdir", "write_bytes", "write_text", "touch"):
        monkeypatch.setattr(pathlib.Path, name, read_only(getattr(pathlib.Path, name)))
    capsys.readouterr()
    argv = ["probe-backbone", "--data", str(csv), "--val", str(csv), str(out / "model.pt"), "probe.max_iter=5"]
    assert main(argv) == 0, capsys.readouterr().err[-500:]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped_train"] == 0
    assert sorted(data.rglob("*")) == before


def test_a_probes_record_names_its_clip_lists_and_settings(clip_list, tmp_path, capsys):
    """probe.json and probe-backbone's JSON held the scores and counts only: nothing said which clip
    lists were scored or with which probe settings, so two probes of other data read alike."""
    out = tmp_path / "rand"
    argv = ["pretrain-backbone", "--method", "random", "--data", str(clip_list), "--val", str(clip_list)]
    assert main([*argv, "--out", str(out), *tiny_overrides(["probe.max_iter=7"])]) == 0
    ours = str(clip_list.resolve())
    rec = json.loads((out / "probe.json").read_text())
    assert (rec["data"], rec["val"], rec["probe_config"]["max_iter"]) == (ours, ours, 7)
    argv = ["probe-backbone", "--data", str(clip_list), "--val", str(clip_list), "--out", str(tmp_path / "p.json")]
    assert main([*argv, str(out / "model.pt"), "probe.max_iter=5", "probe.knn_k=3"]) == 0
    rec = json.loads((tmp_path / "p.json").read_text())
    assert (rec["data"], rec["val"]) == (ours, ours)
    assert (rec["probe_config"]["max_iter"], rec["probe_config"]["knn_k"]) == (5, 3)
    capsys.readouterr()


def test_probe_backbone_runs_on_the_jobs_leader_alone(clip_list, tmp_path, capsys, monkeypatch):
    """A frozen backbone's probe forms no process group: under torchrun or srun every process ran the
    whole probe (each on the first GPU) and wrote --out in turn. A process that is not the job's
    leader does nothing."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    import moviessl.ssl.probe as probe

    out = tmp_path / "rand"
    argv = ["pretrain-backbone", "--method", "random", "--data", str(clip_list), "--out", str(out), "--no-probe"]
    assert main([*argv, *tiny_overrides()]) == 0
    probed = []
    monkeypatch.setattr(probe, "probe_model", lambda *a, **k: probed.append(1) or {})
    for k, v in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}.items():  # torchrun's rank 1
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # as Lightning reads RANK when imported there
    argv = ["probe-backbone", "--data", str(clip_list), "--val", str(clip_list), "--out", str(tmp_path / "p.json")]
    assert main([*argv, str(out / "model.pt")]) == 0
    assert probed == [] and not (tmp_path / "p.json").exists()


def test_probe_from_python_leaves_the_callers_random_streams_as_they_were(clip_list, tmp_path):
    """As ``extract`` (tests/features): the probe's own draws have their own generator, yet the
    backbone's initialisation before its weights are loaded, and its loaders' passes, drew from
    torch's global generator, so a notebook's ``torch.manual_seed(0)`` gave other numbers after it."""
    import random

    from moviessl.config import load_config
    from moviessl.ssl.pretrain import pretrain
    from moviessl.ssl.probe import probe_checkpoint

    def draws():
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    cfg = load_config("backbone", "cpu", tiny_overrides(["probe.max_iter=50"]))
    pretrain("random", clip_list, tmp_path / "r", cfg, run_probe=False, progress=False)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    want = draws()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    ckpt = tmp_path / "r" / "model.pt"
    res = probe_checkpoint(ckpt, clip_list, clip_list, cfg.probe, use_cache=False, progress=False)
    assert res["num_train"] == 12
    assert draws() == want
