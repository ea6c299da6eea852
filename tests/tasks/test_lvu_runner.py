"""``run_finetune`` of an LVU task on small in-memory inputs: what a run says about its inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moviessl.data.lvu import VideoInstances
from moviessl.errors import BadInputError
from moviessl.tasks.lvu.data import load_inputs
from moviessl.tasks.lvu.runner import run_finetune

FAST = ["train.epochs=1", "train.batch_size=4", "trainer.progress_bar=false"]
VIDS = [f"v{i:02d}" for i in range(8)]


def _labels(root, task="scene"):
    splits = {"train": VIDS[:4], "val": VIDS[4:6], "test": VIDS[6:]}
    for split, ids in splits.items():
        p = root / "lvu_1.0" / task / f"{split}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{k % 3} c{k % 3} {v} tt{k}\n" for k, v in enumerate(ids))
        p.write_text("class_id class_name youtube_id imdb_id\n" + rows)
    return root


class _Instances:
    """What load_inputs reads of an instance store: two tracked boxes every second of 20 s."""

    dim = 8

    def __init__(self, ids):
        self.ids = list(ids)

    def __contains__(self, vid):
        return vid in self.ids

    def load(self, vid, lazy=True):
        sec = np.repeat(np.arange(20), 2)
        box = np.tile(np.array([[0.1, 0.1, 0.5, 0.9]], np.float32), (len(sec), 1))
        feat = np.random.default_rng(len(vid)).normal(size=(len(sec), self.dim)).astype(np.float32)
        return VideoInstances(sec, sec // 7, np.tile([0, 1], 20), box, feat)


def _scene(ids):
    return {v: np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32) for v in ids}


def test_scene_features_of_none_of_the_videos_is_one_line_not_an_ot_run(tmp_path):
    """A scene folder of other films once ran an instance-only OT (no scene pathway at all) recorded
    as OT++, exit 0."""
    inputs = load_inputs(_Instances(VIDS), _scene(["other1", "other2"]), ids=VIDS, desc="ot++")
    with pytest.raises(BadInputError, match="no scene features for any of the 8 labelled videos"):
        run_finetune("scene", _labels(tmp_path), inputs=inputs, out=tmp_path / "o", overrides=FAST)
    # likewise instances of none of them (a scene-only run recorded as OT++)
    inputs = load_inputs(_Instances(["other"]), _scene(VIDS), ids=VIDS, desc="ot++")
    with pytest.raises(BadInputError, match="no instance features for any"):
        run_finetune("scene", tmp_path, inputs=inputs, out=tmp_path / "o2", overrides=FAST)


def test_videos_without_one_pathway_make_the_score_partial(tmp_path):
    inputs = load_inputs(_Instances(VIDS), _scene(VIDS[::2]), ids=VIDS, desc="ot++")
    res = run_finetune("scene", _labels(tmp_path), inputs=inputs, out=tmp_path / "o", overrides=FAST)
    assert res["partial"] == "PARTIAL: 4 of the 8 videos used have no scene tokens"
    full = load_inputs(_Instances(VIDS), _scene(VIDS), ids=VIDS, desc="ot++")
    assert run_finetune("scene", tmp_path, inputs=full, out=tmp_path / "f", overrides=FAST)["partial"] is None


@pytest.mark.parametrize("stride", ["0", "-2"])
def test_a_scene_stride_that_is_not_positive_is_refused(tmp_path, stride):
    """0 once fell back to the folder's stride silently, -2 put the scene tokens at negative seconds."""
    with pytest.raises(BadInputError, match="data.scene_stride_s"):
        run_finetune("scene", tmp_path, out=tmp_path / "o", overrides=[f"data.scene_stride_s={stride}"])


def test_a_scene_stride_without_scene_features_is_refused(tmp_path):
    """`data.scene_stride_s` places the scene tokens; with --instances alone it was read by nobody,
    exit 0 (an OT run the user took for one with scene tokens 4 s apart)."""
    (tmp_path / "inst").mkdir()
    (tmp_path / "inst" / "index.json").write_text(json.dumps({"format": "moviessl-instances", "videos": {}}))
    with pytest.raises(BadInputError, match="^data.scene_stride_s: qualifies the scene features"):
        run_finetune(
            "scene",
            _labels(tmp_path),
            instances=tmp_path / "inst",
            out=tmp_path / "o",
            overrides=[*FAST, "data.scene_stride_s=4"],
        )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("key", ["model.track_mask", "data.box_jitter"])
def test_an_instance_setting_in_a_scene_only_run_is_refused(tmp_path, key):
    """`model.track_mask` and `data.box_jitter` act on the instance tokens only; a scene-only run
    (--scene-features alone) has none and read a typed one not at all, exit 0. Refused before any
    work, as `data.scene_stride_s` without scene features, and before `--task all`'s TxE pass; the
    presets' values (set for every run) and a run with instances are not."""
    from moviessl.tasks.lvu.runner import contextualize_tasks

    scene = _scene(VIDS)
    root = _labels(tmp_path)
    with pytest.raises(BadInputError, match=f"^{key}: qualifies the instance tokens: give --instances too$"):
        run_finetune("scene", root, scene_features=tmp_path / "ev", out=tmp_path / "o", overrides=[*FAST, f"{key}=0.3"])
    assert not (tmp_path / "o").exists()
    with pytest.raises(BadInputError, match=f"^{key}: qualifies the instance tokens"):
        contextualize_tasks(["scene"], root, tmp_path / "ev", tmp_path / "txe.pt", tmp_path / "o", overrides={key: 0.3})
    assert not (tmp_path / "o").exists()
    # the same setting with instances is read; the preset's own value in a scene-only run is no error
    both = load_inputs(_Instances(VIDS), scene, ids=VIDS, desc="ot++")
    assert run_finetune("scene", root, inputs=both, out=tmp_path / "b", overrides=[*FAST, f"{key}=0.3"])["summary"]
    with pytest.raises(BadInputError, match="ev: feature folder not found"):  # past the check
        run_finetune("scene", root, scene_features=tmp_path / "ev", out=tmp_path / "s", overrides=FAST)


@pytest.mark.parametrize(
    "given, option",
    [
        (dict(instances="inst", contextualizer="txe.pt"), "--contextualizer"),
        (dict(instances="inst", scene_kind="ctx"), "--scene-kind"),
        (dict(scene_features="scene", instance_meta="meta.pkl"), "--instance-meta"),
        # an extract-instances folder holds its own boxes: the metadata was read by nobody, exit 0
        (dict(instances="inst", instance_meta="meta.pkl"), "--instance-meta"),
    ],
)
def test_an_option_of_a_pathway_not_given_is_refused(tmp_path, given, option):
    """A --contextualizer without --scene-features (even one that does not exist) was ignored: the
    run meant as OT++ trained the OT alone, exit 0."""
    (tmp_path / "inst").mkdir()
    (tmp_path / "inst" / "index.json").write_text(json.dumps({"format": "moviessl-instances", "videos": {}}))
    given = {k: (str(tmp_path / v) if k != "scene_kind" else v) for k, v in given.items()}
    with pytest.raises(BadInputError, match=f"^{option}: "):
        run_finetune("scene", _labels(tmp_path), out=tmp_path / "o", overrides=FAST, **given)


@pytest.mark.parametrize("seed", ["-1", str(2**32 - 1)])  # the second: its second run is past numpy's range
def test_a_seed_outside_numpys_range_is_refused_before_any_work(tmp_path, seed):
    """seed=-1 raised Lightning's ValueError traceback when the run began (after the inputs were
    read); a seed + K - 1 past 2**32 - 1 only when that later run began."""
    inputs = load_inputs(_Instances(VIDS), None, ids=VIDS, desc="ot")
    with pytest.raises(BadInputError, match="seed"):
        run_finetune(
            "scene", _labels(tmp_path), inputs=inputs, out=tmp_path / "o", seeds=2, overrides=[*FAST, f"seed={seed}"]
        )
    assert not (tmp_path / "o" / "seed0").exists()


def test_an_eval_video_that_is_also_a_training_video_is_said(tmp_path, caplog):
    """A video in both the train and the val label files was trained on and scored, without a word."""
    from moviessl.config import load_config
    from moviessl.tasks.lvu.runner import task_labels

    root = _labels(tmp_path)
    val = root / "lvu_1.0" / "scene" / "val.csv"
    val.write_text(val.read_text() + f"0 c0 {VIDS[0]} tt0\n")
    with caplog.at_level("WARNING", logger="moviessl"):
        labels = task_labels(root, "scene", load_config("lvu", "cpu"))
    assert VIDS[0] in labels["val"] and "1 val videos are training videos too (first: v00)" in caplog.text
    assert "test videos" not in caplog.text


def test_a_rerun_refused_at_an_input_check_leaves_the_jobs_record(tmp_path):
    """A finished job rerun with other settings on inputs of other films stopped at the check, but had
    first written its config.yaml and run.json: the folder's record named the refused settings beside
    the earlier settings' seeds and summary. Both are written once the inputs passed their checks now."""
    root, out = _labels(tmp_path), tmp_path / "o"
    inputs = load_inputs(_Instances(VIDS), _scene(VIDS), ids=VIDS, desc="ot++")
    run_finetune("scene", root, inputs=inputs, out=out, overrides=FAST)
    kept = {name: (out / name).read_bytes() for name in ("config.yaml", "run.json", "summary.json")}
    other = load_inputs(_Instances(VIDS), _scene(["other1", "other2"]), ids=VIDS, desc="ot++")
    with pytest.raises(BadInputError, match="no scene features for any"):
        run_finetune("scene", root, inputs=other, out=out, overrides=[*FAST, "train.lr=0.5"])
    assert {name: (out / name).read_bytes() for name in kept} == kept


def test_a_rerun_refused_at_its_init_checkpoint_leaves_the_jobs_videos_record(tmp_path):
    """``videos.json`` (which labelled videos the job's runs used) was written before ``--init`` was
    read: a rerun on fewer videos refused there (not a stage-"ot" checkpoint) left the record of the
    refused inputs beside the earlier seeds and summary. It is written with config.yaml, once every
    input passed its checks."""
    from moviessl.checkpoint import arch_spec, save_checkpoint

    root, out = _labels(tmp_path), tmp_path / "o"
    inputs = load_inputs(_Instances(VIDS), _scene(VIDS), ids=VIDS, desc="ot++")
    run_finetune("scene", root, inputs=inputs, out=out, overrides=FAST)
    kept = {name: (out / name).read_bytes() for name in ("videos.json", "config.yaml", "summary.json")}
    fewer = load_inputs(_Instances(VIDS), _scene(VIDS[:-1]), ids=VIDS[:-1], desc="ot++")
    wrong = save_checkpoint(tmp_path / "bb.pt", stage="backbone", arch=arch_spec("torch.nn:Identity"), state_dict={})
    with pytest.raises(BadInputError):
        run_finetune("scene", root, inputs=fewer, out=out, init=wrong, overrides=[*FAST, "train.lr=0.5"])
    assert {name: (out / name).read_bytes() for name in kept} == kept


def test_the_epoch_rules_criterion_by_hand():
    """What ``train.epochs_grid`` minimises was checked only as the argmin of what it recorded: a
    criterion of the wrong sign, or scoring the first span alone, chose the epochs just as silently.
    Classification: the NLL of the label under the video's mean span probabilities (floored at
    1e-6); regression: the squared error of the mean span prediction, both averaged over videos."""
    import math

    from moviessl.tasks.lvu.runner import heldout_criterion

    preds = {"a": [[0.5, 0.3, 0.2, 0.0], [0.1, 0.7, 0.2, 0.0]], "b": [[0.0, 0.0, 0.0, 1.0]]}
    # a: mean [0.3, 0.5, 0.2, 0] -> label 1 scores 0.5; b: label 0 scores 0 -> floored at 1e-6
    want = (-math.log(0.5) - math.log(1e-6)) / 2
    assert heldout_criterion("relationship", preds, {"a": 1, "b": 0}) == pytest.approx(want)
    reg = {"a": [1.0, 3.0], "b": [-1.0]}  # means 2 and -1 against 0.5 and -1.5: errors 2.25 and 0.25
    assert heldout_criterion("view_count", reg, {"a": 0.5, "b": -1.5}) == pytest.approx(1.25)


def test_scoring_runs_the_model_in_eval_mode():
    """LVU scores after ``model.eval()``: no dropout in the scored spans, so a model handed over in
    training mode (as Lightning leaves it after ``fit``) scores the same as in eval mode."""
    import torch

    from moviessl.context.ot_spans import SpanVideo
    from moviessl.tasks.lvu.runner import predict_spans, resolve_config
    from moviessl.tasks.lvu.task import TASKS

    cfg = resolve_config(None, "cpu", ["data.span_s=10"])
    videos = [SpanVideo(v, inst=_Instances(VIDS).load(v)) for v in VIDS[:2]]
    torch.manual_seed(0)
    model, _ = TASKS["scene"].build_model(8, preset="ot_cpu")  # dropout 0.1
    want = predict_spans(model.eval(), videos, cfg, 129, 254)
    torch.manual_seed(1)
    got = predict_spans(model.train(), videos, cfg, 129, 254)
    assert got.keys() == want.keys() and all(len(got[v]) == 11 for v in got)  # spans ending at 9..19
    for v in want:
        np.testing.assert_allclose(got[v], want[v], rtol=1e-6)


def test_the_epoch_rule_trains_on_four_fifths_and_scores_the_held_out_fifth(tmp_path, monkeypatch):
    """``tune_epochs``: a fixed 20% of the training videos is held out; each grid value trains on the
    other 80% and is scored on the held-out 20% only (disjoint, together every training video)."""
    import moviessl.tasks.lvu.runner as runner
    from moviessl.context.ot_spans import SpanVideo

    train = [SpanVideo(f"t{i}") for i in range(10)]
    labels = {v.vid: i % 3 for i, v in enumerate(train)}
    cfg = runner.resolve_config(None, "cpu", ["train.epochs_grid=[1,2]", "train.tune_seeds=1"])
    fitted, scored = [], []

    def make_job(name, out, videos, epochs, score, export, record):
        fitted.append((int(epochs), [v.vid for v in videos]))
        return score

    def predict(model, videos, *_):
        scored.append([v.vid for v in videos])
        return {v.vid: [[1.0, 0.0, 0.0]] for v in videos}

    monkeypatch.setattr(runner, "run_seeds", lambda score, seeds: [{"metrics": score(None, tmp_path)} for _ in seeds])
    monkeypatch.setattr(runner, "predict_spans", predict)
    res = runner.tune_epochs("relationship", train, labels, cfg, tmp_path / "tune", make_job, 129, 254)
    assert [e for e, _ in fitted] == [1, 2] and res["heldout_videos"] == 2 and res["fit_videos"] == 8
    for (_, fit), held in zip(fitted, scored):
        assert len(fit) == 8 and len(held) == 2 and not set(fit) & set(held)
        assert sorted(fit + held) == sorted(labels)
    assert fitted[0][1] == fitted[1][1] and scored[0] == scored[1]  # the same split for every value


def test_a_run_trains_on_videos_times_epochs_random_spans_with_lvus_time_ids(tmp_path, monkeypatch):
    """LVU's ``__len__`` for an end task: ``#training videos x num_train_epochs`` random spans, in one
    pass; training and scoring spans centre their time ids on ``max_position_embeddings // 2`` (129 of
    258) with at most 254 instances, as ``pretrain-ot`` does (``ot.max_positions // 2``): a pretrained
    OT's centred-time table read one row off."""
    import moviessl.tasks.lvu.runner as runner

    seen, made = [], []
    real = runner.train_loader

    def loader(data, *a, **k):
        seen.append(len(data))
        made.append(("train", data.halfway, data.max_instances))
        return real(data, *a, **k)

    class Eval(runner.EvalSpans):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(("eval", self.halfway, self.max_instances))

    monkeypatch.setattr(runner, "train_loader", loader)
    monkeypatch.setattr(runner, "EvalSpans", Eval)
    inputs = load_inputs(_Instances(VIDS), None, ids=VIDS, desc="ot")
    over = [o for o in FAST if not o.startswith("train.epochs")] + ["train.epochs=3", "data.span_s=10"]
    run_finetune("scene", _labels(tmp_path), inputs=inputs, out=tmp_path / "o", overrides=over)
    assert seen == [4 * 3]
    assert made == [("train", 129, 254), ("eval", 129, 254), ("eval", 129, 254)]  # val, test
