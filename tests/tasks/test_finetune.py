"""Each task trains from the CLI on the tiny fixture; predictions load back into the evaluator."""

import json
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

from moviessl.checkpoint import arch_spec, build_from_checkpoint, load_checkpoint, save_checkpoint
from moviessl.cli import main
from moviessl.errors import BadInputError
from moviessl.eval.vidsitu import evaluate_files
from moviessl.models.txe import build_txe

FAST = ["trainer.progress_bar=false"]


def _finetune(ann, feats, out, task, *extra, seeds=2):
    argv = [
        "finetune",
        "vidsitu",
        "--task",
        task,
        "--data-root",
        str(ann),
        "--features",
        str(feats),
        "--seeds",
        str(seeds),
        "--out",
        str(out),
        *extra,
    ]
    return main(argv)


def _check_run(out, task, seeds):
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == seeds and len(summary["runs"]) == seeds
    md = (out / "summary.md").read_text()
    assert "±" in md and f"n={seeds}" in md
    for run in summary["runs"]:
        d = out / f"seed{run['seed']}"
        preds = pickle.loads((d / "predictions.pkl").read_bytes())
        # the official evaluator reads the submission file and gives the run's own numbers
        again = evaluate_files(task, d / "predictions.pkl", out.parent / "vidsitu_annotations", "valid")
        assert again == pytest.approx(run["metrics"])
        assert sorted(p["ann_idx"] for p in preds) == list(range(len(preds)))
        assert (d / "model.pt").is_file() and (d / "curves.png").is_file() and (d / "logs" / "metrics.csv").is_file()
    for k, v in summary["summary"].items():
        vals = [r["metrics"][k] for r in summary["runs"]]
        assert v["mean"] == pytest.approx(sum(vals) / len(vals)) and v["n"] == seeds
    return summary


def test_verb_trains_above_chance_resumes_and_exports(vidsitu_fixture, tmp_path, capsys):
    ann, feats = vidsitu_fixture
    out = ann.parent / "run_verb"
    assert _finetune(ann, feats, out, "verb", *FAST) == 0
    s = _check_run(out, "verb", 2)
    # 4 verbs, features = verb prototype + noise: a working head is far above chance (25 %)
    assert s["summary"]["acc@1"]["mean"] > 60
    first = (out / "seed0" / "metrics.json").read_text()
    # rerun: finished seeds are skipped (same file, untouched), a third seed is added
    # (with another checkpoint and logging interval: how a run is shown, not what it computes)
    shown = ("trainer.ckpt_every_n_steps=7", "trainer.log_every_n_steps=3")
    assert _finetune(ann, feats, out, "verb", *FAST, *shown, seeds=3) == 0
    assert (out / "seed0" / "metrics.json").read_text() == first
    assert json.loads((out / "summary.json").read_text())["seeds"] == 3
    # the exported checkpoint rebuilds without training code and reproduces the predictions
    obj = load_checkpoint(out / "seed0" / "model.pt", stage="verb")
    model = build_from_checkpoint(obj)
    x = torch.from_numpy(__import__("numpy").load(next(feats.glob("*_feats.npy"))))[None]
    scores, idx = model.predict(x)
    assert len(obj["meta"]["verbs"]) == 4 and idx.shape == (1, 5, 4)  # top-k capped by the 4 known verbs


@pytest.mark.parametrize("task", ["verb", "srl", "relation"])
def test_a_task_trained_at_64_true_is_scored(vidsitu_fixture, tmp_path, task):
    """At 64-true the heads hold float64 weights after training; the scoring pass, outside
    Lightning, fed them the float32 features and ended in a dtype traceback after training."""
    ann, feats = vidsitu_fixture
    out = tmp_path / "run"
    assert _finetune(ann, feats, out, task, *FAST, "trainer.precision=64-true", f"{task}.epochs=1", seeds=1) == 0
    assert json.loads((out / "summary.json").read_text())["seeds"] == 1 and (out / "seed0" / "model.pt").is_file()


def test_srl_trains_and_decodes_roles(vidsitu_fixture):
    ann, feats = vidsitu_fixture
    out = ann.parent / "run_srl"
    assert _finetune(ann, feats, out, "srl", *FAST, "srl.epochs=10", "srl.batch_size=8", "srl.warmup_steps=0") == 0
    s = _check_run(out, "srl", 2)
    preds = pickle.loads((out / "seed0" / "predictions.pkl").read_bytes())
    ev = preds[0]["vb_output"]["Ev1"]
    assert set(preds[0]["vb_output"]) == {"Ev1", "Ev2", "Ev3", "Ev4", "Ev5"}
    assert "." in ev["vb_id"]  # the forced GT verb
    # the fixture's phrases are a function of the verb: a trained decoder gets many right
    assert s["summary"]["cider"]["mean"] > 30, s["summary"]
    assert (out / "tokenizer.json").is_file()


def test_srl_targets_longer_than_the_decoder_are_one_line(vidsitu_fixture, tmp_path, capsys):
    """srl.max_len above the TxD's max_len trained until a long phrase came (a ValueError traceback)
    and decoding stopped at the TxD's length; with srl.txd_overrides.max_len raised too it runs."""
    ann, feats = vidsitu_fixture
    assert _finetune(ann, feats, tmp_path / "a", "srl", *FAST, "srl.max_len=100", seeds=1) == 2
    err = capsys.readouterr().err
    assert "srl.max_len: 100 tokens is above the TxD's max_len 64" in err and "Traceback" not in err
    assert not (tmp_path / "a" / "seed0").exists()
    # one or two tokens cut every target to its verb, and the run stopped on "no event has a role"
    assert _finetune(ann, feats, tmp_path / "c", "srl", *FAST, "srl.max_len=1", seeds=1) == 2
    assert "srl.max_len: must be >= 3 target tokens" in capsys.readouterr().err
    extra = ("srl.max_len=100", "srl.txd_overrides={max_len: 100}", "srl.epochs=1")
    assert _finetune(ann, feats, tmp_path / "b", "srl", *FAST, *extra, seeds=1) == 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("srl.txd_overrides={heads: 5}", "srl.txd_overrides: TxD dim 64 is not divisible by its 5 heads"),
        ("srl.txd_overrides={layers: 2}", "srl.txd_overrides.layers: unknown TxD option"),
        ("srl.txd=txd_big", "unknown TxD preset 'txd_big'"),
    ],
)
def test_bad_txd_settings_are_one_line_before_training(vidsitu_fixture, tmp_path, capsys, override, message):
    """An unknown TxD option or heads that do not divide the width ended the first seed, when its
    model was built, in a TypeError / AssertionError traceback."""
    ann, feats = vidsitu_fixture
    assert _finetune(ann, feats, tmp_path / "o", "srl", *FAST, override, seeds=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o" / "seed0").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("txe.overrides={depthx: 2}", "txe.overrides.depthx: unknown TxE option"),
        ("txe.overrides={heads: 5}", "txe.overrides.heads: dim 128 is not divisible by 5 heads"),
        ("txe.preset=txe_big", "txe.preset: unknown TxE preset"),
    ],
)
def test_bad_scratch_txe_settings_are_one_line_before_training(vidsitu_fixture, tmp_path, capsys, override, message):
    """A scratch TxE's settings were checked when the first seed built its model, after its folder
    was made (an unknown option named ``model.<key>``, a stage without such a block)."""
    ann, feats = vidsitu_fixture
    argv = ("--contextualizer", "scratch", override)
    assert _finetune(ann, feats, tmp_path / "o", "relation", *FAST, *argv, seeds=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "o" / "seed0").exists()


@pytest.mark.parametrize(
    "task, override", [("verb", "data.input_norm=fixd"), ("srl", "srl.memory=both"), ("relation", "data.input_norm=bn")]
)
def test_a_misspelt_choice_is_one_line_before_any_work(vidsitu_fixture, tmp_path, capsys, task, override):
    """data.input_norm was read only when the first seed built its model (a ValueError traceback);
    srl.memory after the tokenizer was trained and the first seed's folder made."""
    ann, feats = vidsitu_fixture
    assert _finetune(ann, feats, tmp_path / "o", task, *FAST, override, seeds=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    key = override.split("=")[0]
    assert len(err) == 1 and f"{key}: must be one of" in err[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("seed, seeds", [(-1, 1), (2**32 - 2, 3)])
def test_seeds_outside_numpys_range_are_one_line_before_any_work(vidsitu_fixture, tmp_path, capsys, seed, seeds):
    """seed + K - 1 beyond 0..2**32-1: Lightning's seed_everything raised a ValueError traceback when
    that run began (the last of K after the others had trained)."""
    ann, feats = vidsitu_fixture
    assert _finetune(ann, feats, tmp_path / "o", "relation", *FAST, f"seed={seed}", seeds=seeds) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("moviessl: error: seed: ") and "0..4294967295" in err[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [("data.train_split=valid",), ("--baseline", "pair_prior")])
def test_training_on_the_evaluation_segments_is_refused(vidsitu_fixture, tmp_path, capsys, args):
    """data.train_split=valid (or a split file listing train segments) trained on the segments it
    then scored, exit 0 with inflated numbers; the baseline's priors likewise."""
    ann, feats = vidsitu_fixture
    if args[0] == "--baseline":
        split = tmp_path / "with_train.json"
        train = json.loads((ann / "split_files" / "vseg_split_train_lb.json").read_text())
        valid = json.loads((ann / "split_files" / "vseg_split_valid_lb.json").read_text())
        split.write_text(json.dumps(valid + train[:1]))
        argv = ["finetune", "vidsitu", "--task", "relation", "--data-root", str(ann), *args]
        assert main([*argv, "--out", str(tmp_path / "o"), f"data.split_file={split}"]) == 2
    else:
        assert _finetune(ann, feats, tmp_path / "o", "relation", *FAST, *args, seeds=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "are also in the training split" in err[0], err
    assert not (tmp_path / "o" / "seed0").exists()


def test_relation_with_scratch_and_pretrained_txe(vidsitu_fixture, tmp_path, caplog):
    ann, feats = vidsitu_fixture
    out = ann.parent / "run_rel"
    assert _finetune(ann, feats, out, "relation", "--contextualizer", "scratch", *FAST, "relation.epochs=3") == 0
    _check_run(out, "relation", 2)
    preds = pickle.loads((out / "seed0" / "predictions.pkl").read_bytes())
    assert all(len(lst) == 3 for p in preds for lst in p["pred_evrels_ev"])  # one label per GT annotation

    # a stage-"context" checkpoint: loaded into the encoder, then fine-tuned
    torch.manual_seed(3)
    txe = build_txe("txe_cpu", in_dim=32)
    ckpt = save_checkpoint(
        tmp_path / "txe.pt",
        stage="context",
        arch=arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=32),
        state_dict=txe.state_dict(),
        meta={"window": 5, "in_dim": 32, "backbone": ["0123456789ab"]},
    )
    out2 = tmp_path / "rel_ctx"
    with caplog.at_level("WARNING", logger="moviessl"):
        assert (
            _finetune(
                ann,
                feats,
                out2,
                "relation",
                "--contextualizer",
                str(ckpt),
                *FAST,
                "relation.epochs=1",
                "relation.lr=0.0",
                seeds=1,
            )
            == 0
        )
    # features without an index (VidSitu's released ones): their backbone is unknown, nothing said;
    # features of another backbone than the TxE's: said, not refused
    assert "TxE pretrained on" not in caplog.text
    from moviessl.config import load_config
    from moviessl.tasks.vidsitu.runner import _contextualizer

    with caplog.at_level("WARNING", logger="moviessl"):
        _contextualizer(str(ckpt), 32, load_config("vidsitu", "cpu"), "fedcba987654")
    said = "TxE pretrained on features of backbone 0123456789ab, applied to features of backbone fedcba987654"
    assert said in caplog.text
    got = load_checkpoint(out2 / "seed0" / "model.pt", stage="relation")
    # lr 0: the fine-tuned TxE still holds exactly the pretrained weights
    w = got["state_dict"]["encoder.txe.input_proj.weight"]
    assert torch.equal(w, txe.state_dict()["input_proj.weight"])


def test_bad_inputs_exit_2(vidsitu_fixture, tmp_path, capsys):
    ann, feats = vidsitu_fixture
    assert _finetune(ann, tmp_path / "nope", tmp_path / "o1", "verb") == 2
    assert "feature folder not found" in capsys.readouterr().err
    big = build_txe("txe_cpu", in_dim=64)
    ckpt = save_checkpoint(
        tmp_path / "txe64.pt",
        stage="context",
        arch=arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=64),
        state_dict=big.state_dict(),
    )
    assert _finetune(ann, feats, tmp_path / "o2", "srl", "--contextualizer", str(ckpt)) == 2
    assert "64-d" in capsys.readouterr().err
    assert _finetune(ann, feats, tmp_path / "o3", "verb", "verb.nope=1") == 2


def test_missing_feature_files_are_skipped_and_counted(tmp_path):
    from conftest import make_vidsitu
    from moviessl.tasks.vidsitu.runner import run_finetune

    ann, feats = make_vidsitu(tmp_path, n_train=10, n_valid=4, dim=16, seed=1)
    files = sorted(feats.glob("*_feats.npy"))
    files[0].unlink()  # a train segment
    files[-1].write_bytes(b"garbage")  # a valid segment: still gets a (fallback) prediction
    res = run_finetune(
        "verb", ann, features=feats, out=tmp_path / "o", cfg={"verb": {"epochs": 1}, "trainer": {"progress_bar": False}}
    )
    assert res["train_segments"] == 9 and res["train_skipped"] == 1 and res["eval_without_inputs"] == 1
    preds = pickle.loads((tmp_path / "o" / "seed0" / "predictions.pkl").read_bytes())
    assert len(preds) == 4


def test_segments_with_events_extract_marked_missing_are_not_trained_or_scored_on_zero_rows(tmp_path):
    from conftest import make_vidsitu
    from moviessl.tasks.vidsitu.runner import run_finetune

    ann, feats = make_vidsitu(tmp_path, n_train=10, n_valid=4, dim=16, seed=1)
    train = json.loads((ann / "split_files" / "vseg_split_train_lb.json").read_text())
    valid = json.loads((ann / "split_files" / "vseg_split_valid_lb.json").read_text())
    videos = {v: {"num_events": 5, "status": "ok"} for v in train + valid}
    for v in (train[0], valid[1]):  # a damaged stretch: `moviessl extract` writes zero rows and lists them
        arr = np.load(feats / f"{v}_feats.npy")
        arr[1:3] = 0.0
        np.save(feats / f"{v}_feats.npy", arr)
        videos[v].update(missing=[[1, 3]], missing_events=2)
    index = {"format": "moviessl-features", "stride_s": 2.0, "dim": 16, "videos": videos}
    (feats / "index.json").write_text(json.dumps(index))
    res = run_finetune(
        "verb", ann, features=feats, out=tmp_path / "o", cfg={"verb": {"epochs": 1}, "trainer": {"progress_bar": False}}
    )
    assert res["train_skipped"] == 1 and res["eval_without_inputs"] == 1
    preds = pickle.loads((tmp_path / "o" / "seed0" / "predictions.pkl").read_bytes())
    assert preds[1]["pred_scores_ev"][0][0] == 0.0  # the fallback entry, not a prediction from zeros
    assert all(p["pred_scores_ev"][0][0] > 0.0 for i, p in enumerate(preds) if i != 1)


def test_a_finished_run_is_reused_only_on_the_same_data(tmp_path):
    from conftest import make_vidsitu

    ann, feats = make_vidsitu(tmp_path / "a", n_train=10, n_valid=4, dim=16, seed=1)
    out = tmp_path / "run"

    def metrics(root=ann):
        assert _finetune(root, feats, out, "relation", *FAST, "relation.epochs=1", seeds=1) == 0
        return (out / "seed0" / "metrics.json").read_text()  # holds its train time: a rerun rewrites it

    first = metrics()
    # the same annotations elsewhere are the same data: the finished run stands
    shutil.copytree(ann, tmp_path / "b" / "vidsitu_annotations")
    assert metrics(tmp_path / "b") == first
    # annotations edited in place train again (they gave stale scores, exit 0)
    ann_file = ann / "vseg_ann_files" / "vsann_valid_lb.json"
    recs = json.loads(ann_file.read_text())
    recs[0]["Ev1"]["EvRel"] = "Causes" if recs[0]["Ev1"].get("EvRel") != "Causes" else "Enables"
    ann_file.write_text(json.dumps(recs))
    second = metrics()
    assert second != first
    # so do features rewritten in place with the same shape (e.g. re-extracted by another backbone)
    f = sorted(feats.glob("*_feats.npy"))[0]
    np.save(f, np.load(f) + 1.0)
    third = metrics()
    assert third != second
    assert metrics() == third


def test_a_finished_run_on_a_moved_feature_folder_is_reused(tmp_path):
    """The settings hash took ``features:<the folder, resolved>``: the same features moved (a
    cluster's scratch to a home folder) made the finished runs, and the TxE lr tuning, another
    setting's, trained again. The features' rows are in the data digest; the hash leaves the folder out."""
    from conftest import make_vidsitu
    from moviessl.tasks.vidsitu.runner import tune_txe_lr_scale

    ann, feats = make_vidsitu(tmp_path / "scratch", n_train=10, n_valid=4, dim=16, seed=1)
    out = tmp_path / "run"

    def metrics(features):
        assert _finetune(ann, features, out, "relation", *FAST, "relation.epochs=1", seeds=1) == 0
        return (out / "seed0" / "metrics.json").read_text()  # holds its train time: a rerun rewrites it

    def tuned(features):
        ov = [*FAST, "relation.epochs=1"]
        tune_txe_lr_scale("relation", ann, features, tmp_path / "tune", values=(1.0,), seeds=1, overrides=ov)
        return (tmp_path / "tune" / "tuning.json").read_text()

    first, tuning = metrics(feats), tuned(feats)
    moved = tmp_path / "home" / feats.name
    moved.parent.mkdir()
    shutil.move(feats, moved)
    assert metrics(moved) == first and tuned(moved) == tuning
    assert str(moved) in json.loads((out / "summary.json").read_text())["inputs"]  # as recorded


def test_a_finished_srl_run_with_a_users_tokenizer_is_reused_from_another_directory(tmp_path, monkeypatch):
    """A user's --tokenizer entered the settings hash as the path given with its content, so the
    same file named from another directory (``tok.json``, ``../tok.json``) or moved was another
    setting: the finished seeds were trained again. The file counts by its content alone."""
    from conftest import make_vidsitu

    ann, feats = make_vidsitu(tmp_path / "a", n_train=10, n_valid=4, dim=16, seed=1)
    fast = [*FAST, "srl.epochs=1", "srl.batch_size=8", "srl.warmup_steps=0"]
    assert _finetune(ann, feats, tmp_path / "first", "srl", *fast, seeds=1) == 0
    shutil.copy(tmp_path / "first" / "tokenizer.json", tmp_path / "tok.json")  # a user's tokenizer
    out = tmp_path / "run"

    def metrics(tok: str) -> str:
        assert _finetune(ann, feats, out, "srl", "--tokenizer", tok, *fast, seeds=1) == 0
        return (out / "seed0" / "metrics.json").read_text()  # holds its train time: a rerun rewrites it

    monkeypatch.chdir(tmp_path)
    first = metrics("tok.json")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert metrics("../tok.json") == first
    shutil.move(tmp_path / "tok.json", tmp_path / "sub" / "tok.json")  # the same file, moved
    assert metrics("tok.json") == first


def test_a_finished_srl_run_on_targets_cut_the_earlier_way_is_trained_again(tmp_path, monkeypatch):
    """An SRL target longer than ``srl.max_len`` was cut after its end token until it ended with one
    (VidSitu's ``pad_tokens``). The settings hash held the annotations, not the target ids, so a
    seed finished on the earlier cut was reused as this version's result. A target that fills
    ``max_len`` puts the ids in the hash; one that fits is the same under either rule, and its
    finished run stands."""
    from conftest import make_vidsitu
    from moviessl.tasks.vidsitu.tokenizer import SRLTokenizer

    ann, feats = make_vidsitu(tmp_path / "a", n_train=10, n_valid=4, dim=16, seed=1)
    fast = [*FAST, "srl.epochs=1", "srl.batch_size=8", "srl.warmup_steps=0"]
    now = SRLTokenizer.encode_target

    def earlier(self, verb_id, roles, max_len=60):  # the cut before: after the end token, if at all
        return now(self, verb_id, roles, max_len=10**6)[:max_len]

    def metrics(out, max_len):
        assert _finetune(ann, feats, out, "srl", *fast, f"srl.max_len={max_len}", seeds=1) == 0
        return (out / "seed0" / "metrics.json").read_text()  # holds its train time: a rerun rewrites it

    for max_len, cut in ((6, True), (60, False)):
        monkeypatch.setattr(SRLTokenizer, "encode_target", earlier)
        before = metrics(tmp_path / f"run{max_len}", max_len)
        monkeypatch.setattr(SRLTokenizer, "encode_target", now)
        assert (metrics(tmp_path / f"run{max_len}", max_len) != before) == cut, max_len


def test_pair_prior_baseline_and_pair_identity(vidsitu_fixture, tmp_path):
    """The relation head knows its pair; the pair-prior baseline is scored like a run."""
    from moviessl.data.vidsitu import load_split
    from moviessl.tasks.vidsitu.relation import LABELS, build_relation_model, pair_majority
    from moviessl.tasks.vidsitu.runner import run_baseline

    ann, feats = vidsitu_fixture
    res = run_baseline("relation", ann, "pair_prior", tmp_path / "prior")
    assert res["seeds"] == 1 and set(res["summary"]) == {"mean_acc", "top1_acc"}
    maj = pair_majority(load_split(ann, "train"))
    preds = pickle.loads((tmp_path / "prior" / "seed0" / "predictions.pkl").read_bytes())
    assert all([p["pred_evrels_ev"][k][0] for k in range(4)] == [LABELS[j] for j in maj] for p in preds)
    assert (
        evaluate_files("relation", tmp_path / "prior" / "seed0" / "predictions.pkl", ann) == res["runs"][0]["metrics"]
    )
    # the same features at every event: only the pair identity can tell the four outputs apart
    model = build_relation_model(16).eval()
    with torch.no_grad():
        logits = model(torch.ones(2, 5, 16))
    assert logits.shape == (2, 4, 4) and not torch.allclose(logits[:, 0], logits[:, 1])
    with pytest.raises(BadInputError, match="unknown baseline"):
        run_baseline("srl", ann, "pair_prior", tmp_path / "x")


def test_txe_lr_scale_tuned_on_heldout_train(vidsitu_fixture, tmp_path):
    from moviessl.tasks.vidsitu.runner import tune_txe_lr_scale

    ann, feats = vidsitu_fixture
    quiet = ["trainer.progress_bar=false", "relation.epochs=2"]
    res = tune_txe_lr_scale("relation", ann, feats, tmp_path / "tune", values=(0.0, 1.0), seeds=1, overrides=quiet)
    assert res["best"] in (0.0, 1.0) and set(res["losses"]) == {"0", "1"}
    assert res["heldout_segments"] + res["fit_segments"] == 24
    again = tune_txe_lr_scale("relation", ann, feats, tmp_path / "tune", values=(0.0, 1.0), seeds=1, overrides=quiet)
    assert again == res  # cached
    # another held-out share: its seed runs are trained and scored again, not the first split's reused
    other = tune_txe_lr_scale(
        "relation", ann, feats, tmp_path / "tune", values=(0.0, 1.0), seeds=1, heldout_fraction=0.5, overrides=quiet
    )
    assert other["heldout_segments"] == 12 and other["losses"] != res["losses"]


def test_heldout_loss_is_the_eval_mode_loss_averaged_over_segments_not_batches():
    """``heldout_loss`` picks VidSitu's ``txe_lr_scale``: the mean of the per-segment losses, in eval
    mode, with the spec's loss arguments. A stub whose loss is the batch mean of ``(w * mean(x) - y)^2``
    (and 1000 more in training mode) gives hand-computable values: segments with mean input 1..5, targets
    0 and ``w = 2`` lose 4, 16, 36, 64 and 100, mean 44; batches of 2 averaged alike would give 53.3."""
    from types import SimpleNamespace

    from moviessl.tasks.vidsitu.data import SegmentData
    from moviessl.tasks.vidsitu.runner import heldout_loss

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))
            self.seen = []

        def loss(self, x, y, w):
            self.seen.append(x.shape[0])
            per = (w * x.mean(dim=(1, 2)) - y.float()) ** 2
            return per.mean() + self.p + (1000.0 if self.training else 0.0)

    means = torch.arange(1.0, 6.0)
    x = means.view(5, 1, 1).expand(5, 5, 3).contiguous()
    data = SegmentData([f"v_{k}" for k in range(5)], list(range(5)), x, [torch.tensor(0)] * 5)
    spec = SimpleNamespace(loss_kwargs=lambda: {"w": torch.tensor(2.0)}, ignore_index=-1)
    model = Stub().train()
    assert heldout_loss(model, data, spec, batch_size=2) == pytest.approx(44.0)
    assert model.seen == [2, 2, 1] and not model.training
    # the targets count: a target of 2 on the first segment costs (2 - 2)^2 = 0 instead of 4
    data.y[0] = torch.tensor(2)
    assert heldout_loss(Stub(), data, spec, batch_size=2) == pytest.approx(216.0 / 5)
    assert heldout_loss(Stub(), data, spec, batch_size=5) == pytest.approx(216.0 / 5)


def test_heldout_loss_ignores_the_target_of_a_segment_that_fails_to_decode_and_gives_it_no_weight():
    """A segment whose clips fail to decode is grey stand-in frames: its target is the spec's
    ``ignore_index`` (``ignore_fill``) and it has no weight. A stub loss as VerbClassifier's (the mean
    of ``(w * mean(x) - y)^2`` over the segments not ignored; 0, no NaN, for a batch of none) on
    segments of mean input 1..5, targets 0, ``w = 2``, the second failing: the mean of 4, 36, 64 and
    100 is 51. Counted as a segment, the failed one pulled the mean down (41.6 in batches of 2, 40.8
    alone, a loss-0 batch); its real target read against the blank input gave 50.5."""
    import math
    from types import SimpleNamespace

    from moviessl.tasks.vidsitu.data import SegmentData
    from moviessl.tasks.vidsitu.runner import heldout_loss

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))
            self.ys = []

        def loss(self, x, y, w):
            self.ys += y.tolist()
            keep = y != -1
            if not keep.any():
                return self.p * 0.0
            return ((w * x.mean(dim=(1, 2)) - y.float()) ** 2)[keep].mean() + self.p

    class Clips:  # clips of mean input i + 1; the listed ones fail to decode
        def __init__(self, bad):
            self.bad = bad

        def __len__(self):
            return 5

        def __getitem__(self, i):
            if i in self.bad:
                raise BadInputError(f"v{i}.mp4", "could not read event clips")
            return torch.full((5, 3), float(i + 1))

        def blank(self):
            return torch.zeros(5, 3)

    spec = SimpleNamespace(loss_kwargs=lambda: {"w": torch.tensor(2.0)}, ignore_index=-1)
    data = SegmentData([f"v_{k}" for k in range(5)], list(range(5)), Clips({1}), [torch.tensor(0)] * 5)
    for batch_size in (1, 2, 5):
        model = Stub()
        assert heldout_loss(model, data, spec, batch_size) == pytest.approx(51.0)
        # the failed segment's target ignored beside others; alone in its batch, not read at all
        assert model.ys == ([0, 0, 0, 0] if batch_size == 1 else [0, -1, 0, 0, 0])
    # no segment decoded: no loss to compare, not a loss of 0 that would win the comparison
    data.x = Clips(set(range(5)))
    assert math.isnan(heldout_loss(Stub(), data, spec, batch_size=2))


def test_inputs_standardised_with_fixed_train_statistics(vidsitu_fixture, tmp_path):
    """Heads without a TxE get the train features' statistics, fixed (not batch statistics)."""
    from moviessl.data.vidsitu import load_split

    ann, feats = vidsitu_fixture
    out = tmp_path / "verb"
    assert _finetune(ann, feats, out, "verb", *FAST, "verb.epochs=1", seeds=1) == 0
    sd = load_checkpoint(out / "seed0" / "model.pt")["state_dict"]
    train = torch.from_numpy(np.stack([np.load(feats / f"{v}_feats.npy") for v in load_split(ann, "train").vseg_ids]))
    flat = train.reshape(-1, 32).double()
    assert bool(sd["encoder.standardize.is_set"])
    assert torch.allclose(sd["encoder.standardize.mean"], flat.mean(0).float(), atol=1e-5)
    want = torch.rsqrt(flat.var(0, unbiased=False).float() + 1e-5)
    assert torch.allclose(sd["encoder.standardize.scale"], want, rtol=1e-4)


@pytest.mark.parametrize(
    "task, damage, message",
    [
        ("verb", "no_vinfo", r"vinfo_valid_lb\.json: not found"),
        ("verb", "no_vbid_lst", "has no vbid_lst"),
        ("relation", "no_evrel", "a record has no EvRel"),
        ("srl", "no_records", "has 0 annotation records"),
    ],
)
def test_bad_evaluation_ground_truth_is_found_before_training(tmp_path, capsys, task, damage, message):
    from conftest import make_vidsitu

    ann, feats = make_vidsitu(tmp_path)
    vinfo = ann / "vinfo_files" / "vinfo_valid_lb.json"
    sann = ann / "vseg_ann_files" / "vsann_valid_lb.json"
    if damage == "no_vinfo":
        vinfo.unlink()
    elif damage == "no_vbid_lst":
        data = json.loads(vinfo.read_text())
        del data[1]["vbid_lst"]
        vinfo.write_text(json.dumps(data))
    elif damage == "no_evrel":
        data = json.loads(sann.read_text())
        data[0]["Ev1"].pop("EvRel")
        sann.write_text(json.dumps(data))
    else:  # the last valid segment's 3 records deleted
        sann.write_text(json.dumps(json.loads(sann.read_text())[:-3]))
    out = tmp_path / "run"
    assert _finetune(ann, feats, out, task, *FAST, seeds=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (out / "seed0").exists()  # nothing trained


@pytest.mark.parametrize(
    "task, keys",
    [("verb", ["VerbID"]), ("relation", ["EvRel"]), ("srl", ["Args", "Arg_List"])],
)
def test_training_annotations_without_the_tasks_labels_are_bad_input(tmp_path, capsys, task, keys):
    """A renamed label key made every target ignored: an untrained model was scored, exit 0."""
    from conftest import make_vidsitu

    ann, feats = make_vidsitu(tmp_path)
    train = ann / "vseg_ann_files" / "vsann_train_lb.json"
    recs = json.loads(train.read_text())
    for rec in recs:
        for ev in ("Ev1", "Ev2", "Ev3", "Ev4", "Ev5"):
            for k in keys:
                rec[ev].pop(k, None)
    train.write_text(json.dumps(recs))
    out = tmp_path / "run"
    assert _finetune(ann, feats, out, task, *FAST, seeds=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vsann_train_lb.json" in err[0] and f"no {task} label" in err[0], err
    assert not (out / "seed0").exists()


def test_flags_that_would_be_ignored_are_bad_input(vidsitu_fixture, tmp_path, capsys):
    """A flag the command would silently not use: --backbone beside --features (a user expecting the
    backbone to be fine-tuned would get a head on frozen features), any model input with --baseline."""
    ann, feats = vidsitu_fixture
    assert _finetune(ann, feats, tmp_path / "a", "verb", "--backbone", str(tmp_path / "b.pt"), seeds=1) == 2
    assert "--backbone is used with --videos only" in capsys.readouterr().err
    rel = ["--baseline", "pair_prior", "--contextualizer", "scratch"]
    assert _finetune(ann, feats, tmp_path / "p", "relation", *rel, seeds=1) == 2
    assert "--features, --contextualizer would not be used" in capsys.readouterr().err
    argv = ["finetune", "vidsitu", "--task", "relation", "--data-root", str(ann), "--baseline", "pair_prior"]
    assert main([*argv, "--out", str(tmp_path / "p2"), "data.eval_split=nope"]) == 2  # overrides reach it
    assert "vseg_split_nope_lb.json" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "p3")]) == 0


@pytest.mark.parametrize("task", ["srl", "relation"])
def test_a_backbone_lr_scale_the_frozen_features_would_ignore_is_bad_input(vidsitu_fixture, tmp_path, capsys, task):
    """SRL and relation read features the --backbone extracts once, frozen: a user's
    `srl.backbone_lr_scale=1` (to fine-tune Slow-D with the task) trained no backbone at all, exit 0."""
    ann, _ = vidsitu_fixture
    argv = ["finetune", "vidsitu", "--task", task, "--data-root", str(ann), "--out", str(tmp_path / "o")]
    argv += ["--videos", str(tmp_path / "videos"), "--backbone", str(tmp_path / "b.pt")]
    assert main([*argv, f"{task}.backbone_lr_scale=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{task}.backbone_lr_scale" in err[0], err
    assert main(argv) == 2  # frozen, as the presets say: on to the (missing) backbone checkpoint
    assert "b.pt" in capsys.readouterr().err


def test_a_baseline_does_not_overwrite_a_trained_run(vidsitu_fixture, tmp_path, capsys):
    """`--baseline` into the --out of a finetune job wrote over its seed0 predictions and metrics
    (beside that run's model.pt) and its summary: finished work lost, exit 0."""
    ann, feats = vidsitu_fixture
    out = tmp_path / "rel"
    assert _finetune(ann, feats, out, "relation", *FAST, "relation.epochs=1", seeds=1) == 0
    before = (out / "seed0" / "predictions.pkl").read_bytes(), (out / "summary.json").read_text()
    argv = ["finetune", "vidsitu", "--task", "relation", "--data-root", str(ann), "--baseline", "pair_prior"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "holds a trained or training run" in capsys.readouterr().err
    assert ((out / "seed0" / "predictions.pkl").read_bytes(), (out / "summary.json").read_text()) == before
    assert main([*argv, "--out", str(tmp_path / "prior")]) == 0
    assert main([*argv, "--out", str(tmp_path / "prior")]) == 0  # a baseline's own folder: rerun
    # a run still training (no metrics.json yet), and a seed0 whose metrics.json does not read
    (out / "seed0" / "metrics.json").unlink()
    assert main([*argv, "--out", str(out)]) == 2
    (out / "seed0" / "metrics.json").write_text("{not json")
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("holds a trained or training run") == 2 and "Traceback" not in err


def test_a_baseline_is_scored_by_the_jobs_leader_alone(vidsitu_fixture, tmp_path, monkeypatch):
    """A model-free baseline trains nothing, so no process group forms: under torchrun or srun every
    process scored it and wrote its predictions, metrics and summary over the leader's. A process
    that is not the job's leader writes nothing."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    ann, _ = vidsitu_fixture
    for k, v in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}.items():  # torchrun's rank 1
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # as Lightning reads RANK when imported there
    argv = ["finetune", "vidsitu", "--task", "relation", "--data-root", str(ann), "--baseline", "pair_prior"]
    assert main([*argv, "--out", str(tmp_path / "prior")]) == 0
    assert not (tmp_path / "prior").exists()


def test_tuning_never_chooses_a_diverged_value():
    """``min`` keeps a NaN that comes first (every comparison with it is false)."""
    from moviessl.tasks.base import lowest

    nan = float("nan")
    assert lowest({"1": nan, "2": 5.0, "3": 1.0}) == "3" and lowest({"1": nan, "2": 5.0}) == "2"
    assert lowest({"1": float("inf"), "2": 7.0}) == "2" and lowest({"1": 2.0, "2": 1.0}) == "2"


def test_a_tokenizer_for_a_task_without_text_is_bad_input(vidsitu_fixture, tmp_path, capsys):
    """--tokenizer only shapes SRL's text; verb and relation trained and scored without reading it
    (a missing file too), exit 0, where a flag the command would not use is bad input."""
    ann, feats = vidsitu_fixture
    for task in ("verb", "relation"):
        out = tmp_path / task
        assert _finetune(ann, feats, out, task, "--tokenizer", str(tmp_path / "tok.json"), *FAST, seeds=1) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--tokenizer is used by --task srl only" in err[0], err
        assert not (out / "seed0").exists()


def test_a_run_recorded_under_the_earlier_whole_config_hash_is_reused(tmp_path):
    """Runs finished before display settings left the settings hash are reused, not trained again."""
    from moviessl.tasks.base import SeedJob, run_seed

    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "metrics.json").write_text(json.dumps({"settings": "old", "metrics": {"acc@1": 50.0}}))

    def build(seed):
        raise RuntimeError("trained again")

    job = SeedJob("verb", tmp_path, "new", None, None, None, 1, build, None, None, None, earlier_settings=("old",))
    assert run_seed(job, 0)["metrics"] == {"acc@1": 50.0}
    job.earlier_settings = ()
    with pytest.raises(RuntimeError, match="trained again"):
        run_seed(job, 0)


def _test_split(ann, dst, split):
    """A copy of the fixture's annotations with VidSitu's test split ``split`` made from valid, as
    released: verbs only (testsrl), verbs and roles without EvRel (testevrel), no records (testvb)."""
    shutil.copytree(ann, dst)
    ids = json.loads((ann / "split_files" / "vseg_split_valid_lb.json").read_text())
    (dst / "split_files" / f"vseg_split_{split}_lb.json").write_text(json.dumps(ids))
    recs = json.loads((ann / "vseg_ann_files" / "vsann_valid_lb.json").read_text())
    first = {r["Ev1"]["vid_seg_int"]: r for r in reversed(recs)}  # one record per segment, as released
    keep = {"testsrl": ("vid_uid", "vid_seg_int", "Verb", "VerbID")}.get(split)
    if split != "testvb":
        noann = [
            {ev: {k: v for k, v in e.items() if (k in keep if keep else k != "EvRel")} for ev, e in r.items()}
            for r in first.values()
        ]
        (dst / "vseg_ann_files" / f"vsann_{split}_noann_lb.json").write_text(json.dumps(noann))
    return ids, first


@pytest.mark.parametrize("task, split", [("verb", "testvb"), ("srl", "testsrl"), ("relation", "testevrel")])
def test_a_test_split_gets_submissions_not_scores(vidsitu_fixture, tmp_path, task, split):
    """VidSitu's test splits have no released ground truth: a run writes the split's submission and
    says it is unscored (it was refused for want of the valid-only vinfo / 3 records)."""
    ann, feats = vidsitu_fixture
    ann2 = tmp_path / "vidsitu_annotations"
    ids, first = _test_split(ann, ann2, split)
    out = tmp_path / "run"
    assert _finetune(ann2, feats, out, task, *FAST, f"data.eval_split={split}", f"{task}.epochs=1", seeds=1) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored"] is False and summary["summary"] == {} and summary["runs"][0]["metrics"] == {}
    assert "Predictions only" in (out / "summary.md").read_text()
    preds = pickle.loads((out / "seed0" / "predictions.pkl").read_bytes())
    assert [p["ann_idx"] for p in preds] == list(range(len(ids)))
    if task == "srl":  # decoding starts from the released verb
        verbs = [first[v]["Ev2"]["VerbID"] for v in ids]
        assert all(p["vb_output"]["Ev2"]["vb_id"].startswith(v) for p, v in zip(preds, verbs))
    if task == "relation":  # as many predictions per pair as valid's evaluation compares
        assert all(len(p["pred_evrels_ev"][k]) == 3 for p in preds for k in range(4))
        prior = tmp_path / "prior"
        argv = ["finetune", "vidsitu", "--task", task, "--data-root", str(ann2), "--baseline", "pair_prior"]
        assert main([*argv, "--out", str(prior), f"data.eval_split={split}"]) == 0
        assert json.loads((prior / "summary.json").read_text())["scored"] is False
    with pytest.raises(BadInputError, match=f"no ground truth for its test split '{split}'"):
        evaluate_files(task, out / "seed0" / "predictions.pkl", ann2, split)


@pytest.mark.parametrize("task, split", [("srl", "testvb"), ("srl", "testsrl"), ("relation", "testvb")])
def test_a_test_split_without_the_records_a_task_reads_is_refused(vidsitu_fixture, tmp_path, capsys, task, split):
    """SRL decodes each event's roles from its given verb (VidSitu released them for testsrl and
    testevrel, not testvb), and relation entries are for the segments of an annotation file: on a
    test split without its `_noann` file (testvb, or testsrl before that file was downloaded) every
    segment got the fallback entry, exit 0 -- a submission of nothing, under a PARTIAL line that
    blamed the inputs ("4 had none")."""
    ann, feats = vidsitu_fixture
    ann2 = tmp_path / "vidsitu_annotations"
    _test_split(ann, ann2, split)
    (ann2 / "vseg_ann_files" / f"vsann_{split}_noann_lb.json").unlink(missing_ok=True)
    out = tmp_path / "run"
    assert _finetune(ann2, feats, out, task, *FAST, f"data.eval_split={split}", f"{task}.epochs=1", seeds=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    want = f"moviessl: error: {ann2 / 'vseg_ann_files' / f'vsann_{split}_noann_lb.json'}: not found"
    assert len(err) == 1 and err[0].startswith(want) and f"--task {task}" in err[0], err
    assert not (out / "seed0").exists()


def test_a_short_run_under_gradient_accumulation_still_logs_points_every_epoch(vidsitu_fixture, tmp_path):
    """Lightning counts ``log_every_n_steps`` in optimizer steps: capped at half an epoch's batches, a
    run accumulating 3 batches logged one point in two epochs."""
    ann, feats = vidsitu_fixture
    out = tmp_path / "acc"
    extra = ("verb.batch_size=2", "verb.epochs=2", "trainer.accumulate_grad_batches=3", "trainer.log_every_n_steps=50")
    assert _finetune(ann, feats, out, "verb", *FAST, *extra, seeds=1) == 0
    rows = (out / "seed0" / "logs" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = next(i for i, h in enumerate(header) if h.startswith("train") and "loss" in h)
    assert sum(1 for r in rows[1:] if r.split(",")[col]) >= 4, rows


def test_a_rerun_with_other_settings_stopped_mid_seed_leaves_no_summary_of_the_earlier_one(
    vidsitu_fixture, tmp_path, monkeypatch
):
    """summary.json / summary.md were written only at the end: a rerun with another setting that was
    killed while training left the earlier settings' summary (its scores) beside this run's
    config.yaml and its seed folders, read as this run's result (the demo's job counted it done)."""
    from moviessl.tasks import base

    ann, feats = vidsitu_fixture
    out = tmp_path / "verb"
    assert _finetune(ann, feats, out, "verb", *FAST, seeds=1) == 0

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(base, "fit", killed)
    assert _finetune(ann, feats, out, "verb", *FAST, "verb.lr=0.003", seeds=1) == 130  # interrupted
    assert not (out / "summary.json").exists() and not (out / "summary.md").exists()
    monkeypatch.undo()
    assert _finetune(ann, feats, out, "verb", *FAST, seeds=2) == 0
    assert _finetune(ann, feats, out, "verb", *FAST, seeds=1) == 0  # the same settings: no seed trains again
    assert json.loads((out / "summary.json").read_text())["seeds"] == 1


def _hold_job_lock(folder):
    """The folder's job lock held as another job's would be (its own open file, its stamp)."""
    import fcntl
    import os
    import socket

    from moviessl.features.store import JOB_LOCK

    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / JOB_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since then".encode())
    return fd


@pytest.mark.parametrize("kind", ["train", "baseline"])
def test_a_second_job_on_a_folder_a_job_is_training_in_is_refused(vidsitu_fixture, tmp_path, capsys, kind):
    """Two finetune jobs on one --out (a resubmitted batch job) trained into the same seed folders:
    each wiped the other's checkpoints and logs (one died of a CSV-logger traceback), config.yaml was
    the second's, seed0's model.pt and metrics.json were the second's while the first's summary
    counted them. The second job is now one line naming the holder, before it writes anything."""
    import os

    ann, feats = vidsitu_fixture
    out = tmp_path / "run"
    fd = _hold_job_lock(out)
    try:
        if kind == "train":
            rc = _finetune(ann, feats, out, "verb", *FAST, "verb.epochs=1", seeds=1)
        else:
            argv = ["finetune", "vidsitu", "--task", "relation", "--data-root", str(ann), "--baseline", "pair_prior"]
            rc = main([*argv, "--out", str(out)])
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert rc == 2 and "another moviessl job is writing to this folder (pid" in err and str(out) in err, err
    assert sorted(p.name for p in out.iterdir()) == [".extract.lock"]  # nothing of the refused job's
    assert _finetune(ann, feats, out, "verb", *FAST, "verb.epochs=1", seeds=1) == 0  # once the holder is gone
    assert not (out / ".extract.lock").exists()


def test_a_rank_of_a_second_launch_on_a_folder_in_use_writes_nothing(vidsitu_fixture, tmp_path, monkeypatch, capsys):
    """A second torchrun job on a folder a job was training in: its leader stopped at the lock in one
    line, and its rank 1 went on, rewrote the first job's config.yaml and seed0's settings.json and
    removed its checkpoints before the launcher ended it (srun did not end it). It now stops at the
    lock too, having written nothing."""
    import os

    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from moviessl.features import extract as ex
    from moviessl.tasks import base

    ann, feats = vidsitu_fixture
    out = tmp_path / "run"
    fd = _hold_job_lock(out)  # the first job (a plain process: its lock names no launch)
    (out / "seed0" / "checkpoints").mkdir(parents=True)
    (out / "seed0" / "checkpoints" / "last.ckpt").write_bytes(b"the first job's")
    env = {"TORCHELASTIC_RUN_ID": "b", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_PORT": "29533"}
    for k, v in {**env, "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    monkeypatch.setattr(ex, "LEADER_LOCK_WAIT_S", 0.5)
    monkeypatch.setattr(base, "fit", lambda *a, **k: pytest.fail("rank 1 of the refused launch trained"))
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    try:
        ddp = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu"]
        rc = _finetune(ann, feats, out, "verb", *FAST, *ddp, "verb.epochs=1", seeds=1)
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert rc == 2 and "another moviessl job is writing to this folder (pid" in err, err
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_the_other_ranks_of_a_launch_do_not_take_their_jobs_lock(tmp_path, monkeypatch):
    """Lightning's launcher starts ranks 1.. with the same command into the same folder while rank 0
    holds its lock (torchrun and srun start them beside it): they must not be refused by it."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from moviessl.features.extract import run_lock

    fd = _hold_job_lock(tmp_path)
    try:
        monkeypatch.setattr(rank_zero_only, "rank", 1)
        with run_lock(tmp_path):
            pass
        monkeypatch.setattr(rank_zero_only, "rank", 0)
        with pytest.raises(BadInputError, match="another moviessl job"), run_lock(tmp_path):
            pass
    finally:
        __import__("os").close(fd)


def test_each_seed_folders_config_names_the_seed_it_ran(vidsitu_fixture, tmp_path):
    """A seed folder's config.yaml is that run's record: seed 1's said ``seed: 0`` (the job's first
    seed), so the config beside a run trained it again as another run. The folder's shared config
    keeps the first seed, from which ``--seeds`` counts."""
    import yaml

    ann, feats = vidsitu_fixture
    out = tmp_path / "run"
    assert _finetune(ann, feats, out, "verb", *FAST, "seed=3", "verb.epochs=1") == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 3
    for s in (3, 4):
        assert yaml.safe_load((out / f"seed{s}" / "config.yaml").read_text())["seed"] == s


def test_a_rerun_refused_at_an_input_check_leaves_the_jobs_record(vidsitu_fixture, tmp_path, capsys):
    """A finished job rerun with other settings and a bad input (a features folder of nothing) stopped
    at the check in one line, but had first written its config.yaml and run.json: the folder's record
    named the refused settings beside the earlier settings' seeds and summary. Both are written once
    the inputs passed their checks now."""
    ann, feats = vidsitu_fixture
    out = tmp_path / "run"
    assert _finetune(ann, feats, out, "verb", *FAST, "verb.epochs=1", seeds=1) == 0
    kept = {name: (out / name).read_bytes() for name in ("config.yaml", "run.json", "summary.json")}
    (tmp_path / "empty").mkdir()
    assert _finetune(ann, tmp_path / "empty", out, "verb", *FAST, "verb.epochs=1", "verb.lr=0.5", seeds=1) == 2
    assert "no *_feats.npy feature files" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in kept} == kept
    # a first run refused there leaves no record either
    assert _finetune(ann, tmp_path / "empty", tmp_path / "new", "verb", *FAST, seeds=1) == 2
    assert not list((tmp_path / "new").glob("*"))


def test_a_seed_trained_afresh_keeps_no_parts_of_the_discarded_runs_record(vidsitu_fixture, tmp_path):
    """A seed resumed with another trainer setting keeps the earlier attempt's config and record as
    config.part000.yaml / run.part000.json. Trained afresh under other settings, it dropped the
    discarded run's config.yaml and run.json but kept those parts, read as an earlier attempt of the
    new run (another learning rate)."""
    import yaml

    ann, feats = vidsitu_fixture
    out, seed = tmp_path / "run", tmp_path / "run" / "seed0"
    assert _finetune(ann, feats, out, "verb", *FAST, "verb.epochs=1", seeds=1) == 0
    (seed / "metrics.json").unlink()  # killed before it was finished
    other_trainer = ["verb.epochs=1", "trainer.log_every_n_steps=2"]  # not part of the settings hash
    assert _finetune(ann, feats, out, "verb", "--resume", *FAST, *other_trainer, seeds=1) == 0
    assert (seed / "config.part000.yaml").is_file() and (seed / "run.part000.json").is_file()
    assert _finetune(ann, feats, out, "verb", *FAST, "verb.epochs=1", "verb.lr=0.5", seeds=1) == 0
    assert yaml.safe_load((seed / "config.yaml").read_text())["verb"]["lr"] == 0.5
    assert not list(seed.glob("config.part*.yaml")) and not list(seed.glob("run.part*.json"))


def test_a_diverged_run_is_one_line_not_a_score(vidsitu_fixture, tmp_path, capsys):
    """A verb head whose weights became NaN was scored (the argmax of NaN logits is the first verb:
    a plausible accuracy), exported and summarised, exit 0."""
    ann, feats = vidsitu_fixture
    out = tmp_path / "run"
    extra = ["verb.lr=1e30", "verb.epochs=15", "trainer.gradient_clip_val=null", *FAST]
    assert _finetune(ann, feats, out, "verb", *extra, seeds=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged" in err[0] and str(out / "seed0") in err[0]
    assert not (out / "seed0" / "metrics.json").exists() and not (out / "seed0" / "model.pt").exists()
    assert not (out / "summary.json").exists()


def test_a_summary_names_its_folders_absolute_as_its_inputs(vidsitu_fixture, tmp_path, monkeypatch):
    """summary.json kept ``out`` and each run's ``dir`` as typed (relative to wherever the job ran)
    beside absolute input paths."""
    ann, _ = vidsitu_fixture
    monkeypatch.chdir(tmp_path)
    argv = ["finetune", "vidsitu", "--task", "relation", "--data-root", str(ann), "--baseline", "pair_prior"]
    assert main([*argv, "--out", "prior"]) == 0
    s = json.loads((tmp_path / "prior" / "summary.json").read_text())
    assert s["out"] == str((tmp_path / "prior").resolve())
    assert [r["dir"] for r in s["runs"]] == [str((tmp_path / "prior" / "seed0").resolve())]


def test_a_pretrained_backbone_or_txe_with_nan_weights_is_one_line_naming_it(vidsitu_fixture, tmp_path, capsys):
    """The runner loaded the weights of --contextualizer and --backbone into its own models, past
    build_from_checkpoint's check: NaN weights trained on to "training diverged", naming a seed."""
    from moviessl.models import build_slowd

    ann, feats = vidsitu_fixture
    txe = build_txe("txe_cpu", in_dim=32)
    sd = txe.state_dict()
    sd["input_proj.weight"][0, 0] = float("nan")
    arch = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=32)
    bad_txe = save_checkpoint(tmp_path / "txe.pt", stage="context", arch=arch, state_dict=sd)
    out = tmp_path / "a"
    assert _finetune(ann, feats, out, "verb", "--contextualizer", str(bad_txe), *FAST, seeds=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"moviessl: error: {bad_txe}: 1 weight tensor(s) hold NaN/inf (first: input_proj.weight): the run "
                   "that saved it diverged"]  # fmt: skip
    assert not (out / "seed0").exists()

    kw = dict(preset="slowd_cpu", widths=[8, 8, 16, 16], stem_width=8)
    net = build_slowd(**kw)
    sd = net.state_dict()
    name = next(k for k, v in sd.items() if v.is_floating_point())
    sd[name].fill_(float("inf"))
    bad_bb = save_checkpoint(
        tmp_path / "bb.pt",
        stage="backbone",
        arch=arch_spec("moviessl.models.slowd:build_slowd", **kw),
        state_dict=sd,
        meta={"out_dim": net.out_dim},
    )
    argv = ["finetune", "vidsitu", "--task", "verb", "--data-root", str(ann), "--out", str(tmp_path / "b")]
    assert main([*argv, "--videos", str(tmp_path / "videos"), "--backbone", str(bad_bb), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad_bb}: 1 weight tensor(s) hold NaN/inf (first: {name})" in err[0], err


@pytest.mark.parametrize(
    "task, extra, override",
    [
        ("verb", (), "srl.epochs=1"),  # another task's section: the verb run read verb.epochs
        ("relation", (), "verb={lr: 0.1}"),
        ("verb", (), "txe.preset=txe_paper"),  # no TxE at all
        ("relation", ("--contextualizer", "CKPT"), "txe.overrides={depth: 1}"),  # the checkpoint's own arch
        ("verb", (), "verb.txe_lr_scale=0.5"),
        ("relation", (), "relation.backbone_lr_scale=1"),  # --features: no backbone is trained
        ("verb", (), "data.resize=squash"),  # the clip settings of --videos
    ],
)
def test_an_override_the_run_does_not_read_is_refused(vidsitu_fixture, tmp_path, capsys, task, extra, override):
    """`finetune vidsitu --task verb srl.epochs=1` (or a scratch TxE's `txe.preset` with no TxE or a
    pretrained one, a TxE rate with none, a backbone rate or clip setting with --features) trained
    with the setting ignored, exit 0: a mistyped section gave a result the user took for theirs."""
    ann, feats = vidsitu_fixture
    if "CKPT" in extra:
        arch = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=32)
        state = build_txe("txe_cpu", in_dim=32).state_dict()
        ckpt = save_checkpoint(tmp_path / "txe.pt", stage="context", arch=arch, state_dict=state)
        extra = ("--contextualizer", str(ckpt))
    assert _finetune(ann, feats, tmp_path / "o", task, *FAST, *extra, override, seeds=1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    key = override.split("=")[0]
    assert len(err) == 1 and err[0].startswith(f"moviessl: error: {key}: "), err
    assert not (tmp_path / "o").exists()


def test_the_overrides_a_run_reads_pass(vidsitu_fixture, tmp_path):
    """The check above refuses only what the run would not read: a scratch TxE's settings and rate."""
    ann, feats = vidsitu_fixture
    extra = ("--contextualizer", "scratch", "txe.overrides={depth: 1}", "relation.txe_lr_scale=0.5")
    assert _finetune(ann, feats, tmp_path / "o", "relation", *FAST, *extra, "relation.epochs=1", seeds=1) == 0


@pytest.mark.parametrize("override", ["relation.epochs=3", "seed=5", "txe.preset=txe_paper", "data.num_workers=2"])
def test_a_baseline_refuses_the_overrides_it_does_not_read(vidsitu_fixture, tmp_path, capsys, override):
    """--baseline pair_prior reads only which segments to count and score (data.train_split,
    data.eval_split, data.split_file); `relation.epochs=3` or `seed=5` was accepted, exit 0, and the
    same numbers written as if they had been used, though its flags (--seeds, ...) are refused."""
    ann, _ = vidsitu_fixture
    argv = ["finetune", "vidsitu", "--task", "relation", "--data-root", str(ann), "--baseline", "pair_prior"]
    assert main([*argv, "--out", str(tmp_path / "p"), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"moviessl: error: {override.split('=')[0]}: --baseline "), err
    assert not (tmp_path / "p").exists()
    split = ann / "split_files" / "vseg_split_valid_lb.json"
    assert main([*argv, "--out", str(tmp_path / "q"), f"data.split_file={split}", "data.eval_split=valid"]) == 0


@pytest.mark.parametrize("task, split", [("verb", "testvb"), ("srl", "testsrl"), ("relation", "testevrel")])
def test_predict_writes_a_test_submission_with_the_finished_runs_models(vidsitu_fixture, tmp_path, task, split):
    """--predict SPLIT: the runs the same command trained predict another split with their model.pt
    (a test split's submission needed a second training with data.eval_split before)."""
    ann, feats = vidsitu_fixture
    ann2 = tmp_path / "vidsitu_annotations"
    ids, _ = _test_split(ann, ann2, split)
    out = tmp_path / "run"
    args = (*FAST, f"{task}.epochs=1")
    assert _finetune(ann2, feats, out, task, *args, seeds=1) == 0
    model_pt = (out / "seed0" / "model.pt").read_bytes()
    # valid through --predict: the run's own submission and scores again, from its exported model
    assert _finetune(ann2, feats, out, task, *args, "--predict", "valid", seeds=1) == 0
    again = pickle.loads((out / "seed0" / "predictions_valid.pkl").read_bytes())
    assert again == pickle.loads((out / "seed0" / "predictions.pkl").read_bytes())
    rec = json.loads((out / "predict_valid.json").read_text())
    assert rec["scored"] and rec["runs"][0]["metrics"] == pytest.approx(
        json.loads((out / "seed0" / "metrics.json").read_text())["metrics"]
    )
    # the test split: every segment's entry, unscored; nothing trained again
    assert _finetune(ann2, feats, out, task, *args, "--predict", split, seeds=1) == 0
    preds = pickle.loads((out / "seed0" / f"predictions_{split}.pkl").read_bytes())
    assert [p["ann_idx"] for p in preds] == list(range(len(ids)))
    assert json.loads((out / f"predict_{split}.json").read_text())["scored"] is False
    assert (out / "seed0" / "model.pt").read_bytes() == model_pt


def test_predict_reads_only_runs_of_the_same_settings(vidsitu_fixture, tmp_path, capsys):
    ann, feats = vidsitu_fixture
    out = tmp_path / "run"
    assert _finetune(ann, feats, out, "relation", *FAST, "relation.epochs=1", seeds=1) == 0
    capsys.readouterr()
    assert _finetune(ann, feats, out, "relation", *FAST, "relation.epochs=2", "--predict", "valid", seeds=1) == 2
    assert "seed0: a run of other settings" in capsys.readouterr().err
    assert _finetune(ann, feats, out, "relation", *FAST, "relation.epochs=1", "--predict", "valid", seeds=2) == 2
    assert "seed1: no finished run" in capsys.readouterr().err
    assert _finetune(ann, feats, tmp_path / "none", "relation", *FAST, "--predict", "valid", seeds=1) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    assert _finetune(ann, feats, out, "relation", *FAST, "--predict", "valid", "--resume", seeds=1) == 2


def test_predict_holds_the_weights_in_the_dtype_they_were_trained_in(vidsitu_fixture, tmp_path):
    """A run at trainer.precision=64-true scores with float64 weights (Lightning leaves them so) and
    exports them; --predict built the model in float32 and cast them down: on its own valid split it
    gave other predictions than the run's."""
    ann, feats = vidsitu_fixture
    out = tmp_path / "run"
    args = (*FAST, "relation.epochs=1", "trainer.precision=64-true")
    assert _finetune(ann, feats, out, "relation", *args, seeds=1) == 0
    assert _finetune(ann, feats, out, "relation", *args, "--predict", "valid", seeds=1) == 0
    again = pickle.loads((out / "seed0" / "predictions_valid.pkl").read_bytes())
    assert again == pickle.loads((out / "seed0" / "predictions.pkl").read_bytes())


def test_an_empty_predict_split_is_refused_not_trained(vidsitu_fixture, tmp_path, capsys):
    """``--predict ""`` (``--predict "$SPLIT"`` with SPLIT unset) read as no --predict: the command
    trained its runs into --out, exit 0, where nothing was to be trained."""
    ann, feats = vidsitu_fixture
    out = tmp_path / "run"
    assert _finetune(ann, feats, out, "relation", *FAST, "relation.epochs=1", "--predict", "", seeds=1) == 2
    assert "--predict: give a split name" in capsys.readouterr().err
    assert not out.exists()
    argv = ["finetune", "vidsitu", "--task", "relation", "--data-root", str(ann), "--baseline", "pair_prior"]
    assert main([*argv, "--predict", "", "--out", str(tmp_path / "b")]) == 2
    assert "--predict would not be used" in capsys.readouterr().err


def test_a_refused_predict_writes_nothing(vidsitu_fixture, tmp_path, capsys):
    """--predict refused a folder without finished runs, or runs of other settings, only after
    preparing the inputs as training does: SRL's tokenizer was trained and saved into the folder
    (over the runs' own, with another srl.vocab_size), and --videos would have extracted every frozen
    feature first."""
    ann, feats = vidsitu_fixture
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _finetune(ann, feats, empty, "srl", *FAST, "--predict", "valid", seeds=1) == 2
    assert "seed0: no finished run" in capsys.readouterr().err
    assert list(empty.iterdir()) == []
    out = tmp_path / "run"
    assert _finetune(ann, feats, out, "srl", *FAST, "srl.epochs=1", seeds=1) == 0
    tok = (out / "tokenizer.json").read_bytes()
    other = ("srl.epochs=1", "srl.vocab_size=300", "--predict", "valid")
    assert _finetune(ann, feats, out, "srl", *FAST, *other, seeds=1) == 2
    assert "seed0: a run of other settings" in capsys.readouterr().err
    assert (out / "tokenizer.json").read_bytes() == tok


def test_predict_names_an_unreadable_metrics_file(vidsitu_fixture, tmp_path, capsys):
    ann, feats = vidsitu_fixture
    out = tmp_path / "run"
    assert _finetune(ann, feats, out, "relation", *FAST, "relation.epochs=1", seeds=1) == 0
    capsys.readouterr()
    for text in ('{"settings": "ab', "[1, 2]"):
        (out / "seed0" / "metrics.json").write_text(text)
        assert _finetune(ann, feats, out, "relation", *FAST, "relation.epochs=1", "--predict", "valid", seeds=1) == 2
        assert "seed0/metrics.json: unreadable" in capsys.readouterr().err


def test_a_task_run_gives_the_callers_random_streams_and_lightning_seed_back(tmp_path, monkeypatch):
    """Every task runner trains its seeds through ``run_seed``, which seeds the global generators and
    Lightning's ``PL_GLOBAL_SEED`` / ``PL_SEED_WORKERS``: a notebook's own random numbers changed after
    a finetune, and its own Lightning Trainer took the run's seed. The caller's come back (a run that
    fails too; here its build fails after the seeding)."""
    import os

    from caller_state import random_streams_given_back
    from moviessl.tasks.base import SeedJob, run_seed

    def build(seed):
        assert os.environ["PL_GLOBAL_SEED"] == "3"  # the run itself is seeded as before
        raise RuntimeError("stop")

    job = SeedJob("verb", tmp_path, "s", None, None, None, 1, build, None, None, None)
    with random_streams_given_back(monkeypatch), pytest.raises(RuntimeError, match="stop"):
        run_seed(job, 3)


def test_a_finetune_with_a_contextualizer_leaves_the_callers_random_streams_as_they_were(vidsitu_fixture, tmp_path):
    """Outside its seeded runs (``run_seed``), a runner built the pretrained TxE from its checkpoint,
    whose initialisation before the weights are loaded drew from torch's global generator: a
    notebook's ``torch.manual_seed(0)`` gave other numbers after a finetune with --contextualizer."""
    import random

    from moviessl.tasks.vidsitu.runner import run_finetune

    ann, feats = vidsitu_fixture
    ckpt = save_checkpoint(
        tmp_path / "txe.pt",
        stage="context",
        arch=arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=32),
        state_dict=build_txe("txe_cpu", in_dim=32).state_dict(),
        meta={"window": 5, "in_dim": 32, "backbone": ["0123456789ab"]},
    )

    def draws():
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    want = draws()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    over = [*FAST, "relation.epochs=1"]
    run_finetune("relation", ann, features=feats, contextualizer=str(ckpt), seeds=1, out=tmp_path / "r", overrides=over)
    assert draws() == want


def test_predict_from_python_gives_the_callers_random_stream_back(vidsitu_fixture, tmp_path):
    """run_predict builds each seed's model anew before loading its weights: the build drew from
    torch's global generator, so a notebook's seeded numbers changed after a call."""
    from moviessl.tasks.vidsitu.runner import run_predict

    ann, feats = vidsitu_fixture
    out = tmp_path / "run"
    args = (*FAST, "relation.epochs=1")
    assert _finetune(ann, feats, out, "relation", *args, seeds=1) == 0
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    run_predict("relation", ann, "valid", features=feats, out=out, overrides=list(args))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_a_cpu_run_on_a_machine_with_a_gpu_pins_no_batches(vidsitu_fixture, tmp_path, monkeypatch):
    """trainer.accelerator=cpu on a machine with a GPU: the training, prediction and held-out batches
    were pinned (the loader's default, ``torch.cuda.is_available()``), which made a CUDA context on
    GPU 0 in every process of the run. Only batches bound for a GPU are pinned now (a machine with a
    GPU stood in for: torch's loader itself pins nothing where it finds no accelerator)."""
    from types import SimpleNamespace

    import moviessl.tasks.vidsitu.runner as runner
    from moviessl.tasks.vidsitu.data import SegmentData

    pins, real = [], runner.loader

    def loader(*args, **kwargs):
        dl = real(*args, **kwargs)
        pins.append(dl.pin_memory)
        return dl

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runner, "loader", loader)
    ann, feats = vidsitu_fixture
    assert _finetune(ann, feats, tmp_path / "out", "verb", *FAST, "trainer.accelerator=cpu", seeds=1) == 0
    assert len(pins) >= 2 and not any(pins)  # the training loader and the prediction's
    pins.clear()

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def loss(self, x, y):
            return x.mean() + self.p

    data = SegmentData(["v_0", "v_1"], [0, 1], torch.ones(2, 5, 3), [torch.tensor(0)] * 2)
    runner.heldout_loss(Stub(), data, SimpleNamespace(loss_kwargs=dict, ignore_index=-1), batch_size=2)
    assert pins == [False]
