"""--videos + --backbone: verb fine-tunes Slow-D end to end; relation/srl extract frozen features once."""

import pytest
import torch

from moviessl.checkpoint import arch_spec, load_checkpoint, save_checkpoint
from moviessl.models import build_slowd
from moviessl.tasks.vidsitu.runner import run_finetune


def _tiny_synth_and_backbone(tmp_path):
    """A tiny SynthMovies root, its VidSitu clips and a random Slow-D checkpoint of 16x4 clips."""
    from moviessl.synth import generate

    root = generate(tmp_path / "synth", preset="tiny", seed=0)
    torch.manual_seed(0)
    net = build_slowd("slowd_cpu")
    bb = save_checkpoint(
        tmp_path / "bb.pt",
        stage="backbone",
        arch=arch_spec("moviessl.models.slowd:build_slowd", preset="slowd_cpu"),
        state_dict=net.state_dict(),
        meta={
            "input": {"num_frames": 16, "stride": 4, "short_side": 64, "crop": 64},
            "method": "random",
            "out_dim": net.out_dim,
        },
    )
    return root, root / "vidsitu" / "vsitu_video_trimmed_dir", net, bb


def test_verb_end_to_end_and_relation_from_videos(tmp_path):
    root, videos, net, bb = _tiny_synth_and_backbone(tmp_path)
    quiet = {"trainer": {"progress_bar": False}}
    res = run_finetune(
        "verb", root, videos=videos, backbone=bb, out=tmp_path / "verb", cfg={"verb": {"epochs": 1}, **quiet}
    )
    assert res["train_segments"] > 0 and res["eval_without_inputs"] == 0
    tuned = load_checkpoint(tmp_path / "verb" / "seed0" / "backbone.pt", stage="backbone")
    assert tuned["meta"]["method"] == "random+verb" and tuned["meta"]["input"]["crop"] == 64
    assert tuned["meta"]["tuned_resize"] == "crop"  # the cpu preset's data.resize: extract's default for it
    key = (
        "stem.conv.weight"
        if "stem.conv.weight" in tuned["state_dict"]
        else next(k for k in tuned["state_dict"] if k.endswith("weight"))
    )
    assert not torch.equal(tuned["state_dict"][key], net.state_dict()[key])  # trained end to end

    # relation from the verb-finetuned backbone: frozen features extracted once, cached, reused
    res = run_finetune(
        "relation",
        root,
        videos=videos,
        backbone=tmp_path / "verb" / "seed0" / "backbone.pt",
        out=tmp_path / "rel",
        cfg={"relation": {"epochs": 1}, **quiet},
    )
    cache = next((tmp_path / "rel").glob("features_*"))
    files = sorted(cache.glob("*_feats.npy"))
    assert len(files) == res["eval_segments"] + res["train_segments"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    run_finetune(
        "relation",
        root,
        videos=videos,
        backbone=tmp_path / "verb" / "seed0" / "backbone.pt",
        out=tmp_path / "rel",
        seeds=2,
        cfg={"relation": {"epochs": 1}, **quiet},
    )
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_frozen_feature_cache_is_split_over_launched_ranks(tmp_path, monkeypatch):
    """Rank 1 of 2 (torchrun's env) starts at the second half of the segments and skips what the
    other rank wrote meanwhile; a segment that fails to decode is tried and listed by every rank."""
    import numpy as np

    from moviessl.errors import BadInputError
    from moviessl.tasks.vidsitu.data import extract_features

    vsegs = [f"v_{k}_seg_0_10" for k in range(8)]
    seen = []

    class Clips:
        def __getitem__(self, i):
            seen.append(i)
            if i == 5:  # meanwhile, the other rank finishes segment 7
                np.save(tmp_path / f"{vsegs[7]}_feats.npy", np.zeros((5, 3), np.float32))
            if i == 6:
                raise BadInputError(vsegs[6], "does not decode")
            return torch.full((5, 3), float(i))

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    failed = extract_features(torch.nn.Identity(), Clips(), vsegs, tmp_path, batch_size=2)
    assert seen == [4, 5, 6, 0, 1, 2, 3] and failed == [vsegs[6]]
    assert np.load(tmp_path / f"{vsegs[4]}_feats.npy")[0, 0] == 4 and (tmp_path / f"{vsegs[7]}_feats.npy").is_file()


class _PidClips:
    """Segment i's clips are i; each decode notes its process (module level: the workers' copy)."""

    def __init__(self, notes):
        self.notes = notes

    def __getitem__(self, i):
        import os

        from moviessl.errors import BadInputError

        (self.notes / f"{i}.{os.getpid()}").touch()
        if i == 3:
            raise BadInputError(f"seg{i}.mp4", "does not decode")
        return torch.full((5, 3), float(i))


def test_frozen_features_are_decoded_by_the_runs_loader_workers(tmp_path):
    """The frozen-feature cache of SRL / relation with --videos decoded every segment in the main
    process (~150k VidSitu clips on one core, whatever data.num_workers said); its clips are now
    decoded by ``num_workers`` loader processes, with the same files and the same failures."""
    import os

    import numpy as np

    from moviessl.tasks.vidsitu.data import extract_features

    vsegs = [f"v_{k}_seg_0_10" for k in range(6)]
    notes = tmp_path / "notes"
    notes.mkdir()
    failed = extract_features(torch.nn.Identity(), _PidClips(notes), vsegs, tmp_path / "c", batch_size=2, num_workers=2)
    assert failed == [vsegs[3]]
    assert [float(np.load(tmp_path / "c" / f"{v}_feats.npy")[0, 0]) for v in vsegs if v != vsegs[3]] == [0, 1, 2, 4, 5]
    pids = {int(n.name.split(".")[1]) for n in notes.iterdir()}
    assert pids and os.getpid() not in pids


def test_end_to_end_input_stats_decode_a_bounded_sample(monkeypatch):
    """The input statistics of an end-to-end run come from at most STATS_SEGMENTS evenly spaced
    train segments, decoded by the run's loader workers (not all of VidSitu's 23.6k on every rank)."""
    from moviessl.tasks.vidsitu import runner
    from moviessl.tasks.vidsitu.data import SegmentData

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):  # (N, 3, T, H, W) -> (N, 2)
            return torch.stack([x.mean((1, 2, 3, 4)), x.amax((1, 2, 3, 4))], 1) * self.w

    seen = {}

    def fake_loader(data, batch_size, shuffle, num_workers=0, **kw):
        seen.update(vsegs=list(data.vsegs), workers=num_workers)
        yield {"x": data.x, "failed": torch.zeros(len(data.x), dtype=torch.bool)}

    monkeypatch.setattr(runner, "loader", fake_loader)
    monkeypatch.setattr(runner, "build_arch", lambda arch: Net())
    monkeypatch.setattr(runner, "STATS_SEGMENTS", 4)
    x = torch.arange(10.0).view(10, 1, 1, 1, 1, 1).expand(10, 5, 3, 2, 4, 4)
    data = SegmentData([f"v_{k}" for k in range(10)], list(range(10)), x, [None] * 10)
    mean, var = runner.train_input_stats(data, {"arch": {}, "state_dict": Net().state_dict()}, num_workers=3)
    assert seen == {"vsegs": ["v_0", "v_3", "v_6", "v_9"], "workers": 3}
    assert torch.allclose(mean, torch.tensor([4.5, 4.5])) and torch.allclose(var, torch.tensor([11.25, 11.25]))


def test_end_to_end_input_stats_leave_out_clips_that_failed_to_decode(monkeypatch):
    """A training clip that fails to decode is served as grey stand-in frames (its targets ignored):
    those entered the input statistics of every head and scratch TxE as if they were events."""
    from moviessl.tasks.vidsitu import runner
    from moviessl.tasks.vidsitu.data import SegmentData

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):  # (N, 3, T, H, W) -> (N, 1)
            return x.mean((1, 2, 3, 4))[:, None] * self.w

    def fake_loader(data, batch_size, shuffle, num_workers=0, **kw):
        yield {"x": data.x, "failed": torch.tensor([False, True, False])}  # segment 1: grey stand-ins

    monkeypatch.setattr(runner, "loader", fake_loader)
    monkeypatch.setattr(runner, "build_arch", lambda arch: Net())
    x = torch.tensor([2.0, -9.0, 4.0]).view(3, 1, 1, 1, 1, 1).expand(3, 5, 3, 2, 4, 4)
    data = SegmentData(["v_0", "v_1", "v_2"], [0, 1, 2], x, [None] * 3)
    mean, var = runner.train_input_stats(data, {"arch": {}, "state_dict": Net().state_dict()})
    assert torch.allclose(mean, torch.tensor([3.0])) and torch.allclose(var, torch.tensor([1.0]))


def test_the_frozen_feature_cache_is_one_folder_per_clip_geometry_and_videos(tmp_path):
    """Extraction skips the files it finds, so a run with another clip geometry or videos folder
    must not land in the first run's cache (it reused 8-frame features for data.num_frames=16)."""
    from types import SimpleNamespace as NS

    from moviessl.tasks.vidsitu.runner import frozen_cache_dir

    bb = tmp_path / "bb.pt"
    bb.write_bytes(b"weights")
    base = dict(num_frames=None, stride=None, resize="crop")
    at = lambda videos="v", **kw: frozen_cache_dir(tmp_path, bb, tmp_path / videos, NS(**{**base, **kw}))  # noqa: E731
    names = {at(), at(num_frames=8), at(num_frames=16), at(stride=2), at(resize="squash"), at("other")}
    assert len(names) == 6 and at() == at() and all(p.parent == tmp_path for p in names)
    bb.write_bytes(b"other weights")
    assert at() not in names
    # how they were computed: a folder of its own wherever not plain float32, as the runner's layout says
    how = lambda mode: frozen_cache_dir(tmp_path, bb, tmp_path / "v", NS(**base), mode).name[len(at().name) :]  # noqa: E731
    assert how(()) == how(("float32", None, None)) == ""
    assert how(("float32", None, "high")) == "_float32_high"  # a float32 run under trainer.matmul_precision
    assert how(("float32", "bfloat16", None)) == "_float32_bfloat16" and how(("float64", None, None)) == "_float64"


def test_an_eval_clip_that_fails_to_decode_gets_the_fallback_not_a_prediction_on_grey(caplog):
    """End to end (verb), the eval videos are only resolved before training: one that failed to
    decode while the split was predicted got the model's prediction on grey frames as if it were
    the segment's, unsaid; it gets the fallback entry that segments without inputs get."""
    from types import SimpleNamespace as NS

    from moviessl.errors import BadInputError
    from moviessl.tasks.vidsitu.data import SegmentData
    from moviessl.tasks.vidsitu.runner import predict_split
    from moviessl.tasks.vidsitu.verb import VerbTask, build_verb_model

    class Clips:  # features stand in for clips; segment 1 fails to decode
        paths = ["a", "b", "c"]

        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i == 1:
                raise BadInputError("b.mp4", "could not read event clips")
            return torch.randn(5, 8)

        def blank(self):
            return torch.zeros(5, 8)

    vsegs = [f"v_abcdefghij{k}_seg_0_10" for k in range(3)]
    rec = {ev: {"VerbID": v} for ev, v in zip(("Ev1", "Ev2", "Ev3", "Ev4", "Ev5"), ("a.01",) * 4 + ("b.01",))}
    task = VerbTask(NS(hidden=None, dropout=0.0), NS(records={"t": [rec]}))
    torch.manual_seed(0)
    model = build_verb_model(8, num_verbs=2)
    data = SegmentData(vsegs, [0, 1, 2], Clips(), [None] * 3)
    split = NS(vseg_ids=vsegs)
    failed = []
    with caplog.at_level("WARNING", logger="moviessl.tasks"):
        preds = predict_split(task, model, data, split, batch_size=3, failed=failed)
    assert [p["ann_idx"] for p in preds] == [0, 1, 2] and failed == [vsegs[1]]
    assert preds[1] == task.fallback(1, vsegs[1], split)
    assert preds[0]["pred_scores_ev"][0][0] > 0  # the others are the model's
    assert "1 eval segments failed to decode" in caplog.text


def test_a_summary_over_eval_items_that_failed_to_decode_says_it_is_partial():
    """The fallback entries of eval clips that failed to decode when predicted were not counted: the
    summary's note came from the counts made before training, which had every clip."""
    from moviessl.tasks.base import coverage_note

    counts = dict(train_segments=10, train_skipped=0, eval_segments=6, eval_without_inputs=0)
    assert coverage_note(**counts) is None
    assert coverage_note(**counts, eval_failed_decode=2) == (
        "PARTIAL: the score covers 4 of 6 eval items with usable inputs (2 failed to decode and got fallback "
        "predictions)"
    )
    counts["eval_without_inputs"] = 1
    assert "covers 3 of 6 eval items with usable inputs (1 had none and 2 failed to decode" in coverage_note(
        **counts, eval_failed_decode=2
    )


def test_a_video_replaced_in_place_is_extracted_again_into_the_frozen_cache(tmp_path):
    """The frozen-feature cache of SRL / relation with ``--videos`` is named by the videos folder and
    the clip geometry, and a segment whose file was there was skipped: a video replaced in place kept
    the old video's features, so a rerun trained and scored on them (and reused its finished seeds)."""
    import numpy as np

    from moviessl.tasks.vidsitu.data import extract_features

    videos = tmp_path / "videos"
    videos.mkdir()
    vsegs = [f"v_{k}_seg_0_10" for k in range(3)]
    for k, v in enumerate(vsegs):
        (videos / f"{v}.mp4").write_bytes(b"x" * (10 + k))

    class Clips:  # a clip's values are its video's size: what the file holds now
        paths = [videos / f"{v}.mp4" for v in vsegs]

        def __getitem__(self, i):
            return torch.full((5, 3), float(self.paths[i].stat().st_size))

    cache = tmp_path / "cache"
    assert extract_features(torch.nn.Identity(), Clips(), vsegs, cache) == []
    (videos / f"{vsegs[1]}.mp4").write_bytes(b"y" * 99)  # another video under the same name
    extract_features(torch.nn.Identity(), Clips(), vsegs, cache)
    assert [np.load(cache / f"{v}_feats.npy")[0, 0] for v in vsegs] == [10, 99, 12]
    # a folder made before the record was kept: its files are taken as they are
    (cache / f".{vsegs[0]}.source.json").unlink()
    (videos / f"{vsegs[0]}.mp4").write_bytes(b"z" * 50)
    extract_features(torch.nn.Identity(), Clips(), vsegs, cache)
    assert np.load(cache / f"{vsegs[0]}_feats.npy")[0, 0] == 10


def test_verb_tuned_backbone_records_the_clips_it_was_tuned_on(tmp_path):
    """data.num_frames / data.stride set the clips verb fine-tunes Slow-D on; the exported
    backbone.pt's meta.input is what `moviessl extract` and relation --videos read its clips by."""
    root, videos, _, bb = _tiny_synth_and_backbone(tmp_path)
    cfg = {"verb": {"epochs": 1}, "data": {"num_frames": 8, "stride": 8}, "trainer": {"progress_bar": False}}
    run_finetune("verb", root, videos=videos, backbone=bb, out=tmp_path / "verb", cfg=cfg)
    tuned = load_checkpoint(tmp_path / "verb" / "seed0" / "backbone.pt", stage="backbone")
    assert tuned["meta"]["input"] == {"num_frames": 8, "stride": 8, "short_side": 64, "crop": 64}
    assert load_checkpoint(bb, stage="backbone")["meta"]["input"]["num_frames"] == 16  # the source is as it was


def test_a_frozen_backbone_stays_as_it_was_loaded(tmp_path):
    """`verb.backbone_lr_scale=0` ("0 freezes Slow-D") left Slow-D in train mode: its BatchNorms
    normalised each batch by its own statistics and their running statistics drifted, so the
    exported backbone.pt was not the one given. Frozen: eval mode through Lightning's toggling, no
    gradients, no optimiser group, every weight and buffer unchanged."""
    from moviessl.tasks.base import TaskModule, TaskOptim
    from moviessl.tasks.vidsitu.verb import build_verb_model

    root, videos, net, bb = _tiny_synth_and_backbone(tmp_path)
    cfg = {"verb": {"epochs": 1, "backbone_lr_scale": 0.0}, "trainer": {"progress_bar": False}}
    run_finetune("verb", root, videos=videos, backbone=bb, out=tmp_path / "verb", cfg=cfg)
    tuned = load_checkpoint(tmp_path / "verb" / "seed0" / "backbone.pt", stage="backbone")["state_dict"]
    before = net.state_dict()
    assert tuned.keys() == before.keys() and any("running_mean" in k for k in before)
    assert [k for k in before if not torch.equal(tuned[k], before[k])] == []

    arch = load_checkpoint(bb)["arch"]
    model = build_verb_model(in_dim=net.out_dim, num_verbs=3, hidden=8, backbone_arch=arch)
    module = TaskModule(model, TaskOptim(lr=1e-3, weight_decay=0.1, backbone_lr_scale=0.0))
    module.setup("fit")
    module.on_train_start()
    assert not model.encoder.backbone.training and model.training
    module.eval()
    module.train()  # as Lightning's loops toggle it
    assert not any(m.training for m in model.encoder.backbone.modules()) and model.training
    assert not any(p.requires_grad for p in model.encoder.backbone.parameters())
    in_opt = {id(p) for g in module.configure_optimizers().param_groups for p in g["params"]}
    assert in_opt and not in_opt & {id(p) for p in model.encoder.backbone.parameters()}
    # a fine-tuned backbone trains as before
    tuned = TaskModule(build_verb_model(in_dim=net.out_dim, num_verbs=3, hidden=8, backbone_arch=arch), TaskOptim(1e-3))
    tuned.setup("fit")
    tuned.train()
    assert tuned.model.encoder.backbone.training


def test_other_frame_folders_are_another_setting(tmp_path):
    """The settings hash leaves the --videos folder out where the data digest tells what the runs
    read: frozen features by their rows, video files by name and size. Verb's end-to-end runs read
    frame folders by name and a folder's size -- a directory's, whatever its frames -- so another
    root of frames (another resolution, other videos of the same ids) was the same setting and its
    finished seeds were reused. A root of frame folders keeps its place in the hash."""
    import cv2

    from moviessl.config import load_config
    from moviessl.tasks.vidsitu.runner import prepare

    root, videos, _, bb = _tiny_synth_and_backbone(tmp_path)
    for name, flip in (("a", False), ("b", True)):
        for video in sorted(videos.glob("*.mp4")):
            folder = tmp_path / name / video.stem
            folder.mkdir(parents=True)
            cap = cv2.VideoCapture(str(video))
            i, (ok, frame) = 1, cap.read()
            while ok:
                cv2.imwrite(str(folder / f"{video.stem}_{i:06d}.jpg"), 255 - frame if flip else frame)
                i, (ok, frame) = i + 1, cap.read()
            cap.release()
    cfg = load_config("vidsitu", "cpu", ["trainer.progress_bar=false"])

    def key(name):
        p = prepare("verb", root, tmp_path / "out", cfg, videos=tmp_path / name, backbone=bb)
        return p.inputs_key, p.data

    assert key("a") != key("b")
    # video files are told apart by name and size: there the folder still leaves the hash
    p = prepare("verb", root, tmp_path / "out", cfg, videos=videos, backbone=bb)
    assert str(videos.resolve()) in p.inputs and str(videos.resolve()) not in p.inputs_key


def test_predict_refuses_runs_of_other_clips_or_inputs_before_any_extraction(tmp_path, monkeypatch):
    """--predict on runs trained with other --videos clip settings (data.num_frames, stride, resize),
    another --backbone or --features hashed the settings as training does, which takes the frozen
    features: every train and eval segment was decoded and extracted into a new cache, then refused."""
    import pytest

    from moviessl.errors import BadInputError
    from moviessl.tasks.vidsitu import runner

    root, videos, net, bb = _tiny_synth_and_backbone(tmp_path)
    quiet = {"trainer": {"progress_bar": False}, "relation": {"epochs": 1}}
    out = tmp_path / "rel"
    run_finetune("relation", root, videos=videos, backbone=bb, out=out, cfg=quiet)
    calls = []
    real = runner.extract_features
    monkeypatch.setattr(runner, "extract_features", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    other_bb = tmp_path / "bb2.pt"
    other_bb.write_bytes(bb.read_bytes() + b"\0")  # another file: another backbone hash
    for kw, said in [
        ({"cfg": {**quiet, "data": {"num_frames": 8}}}, "data.num_frames 8, the run's unset (the backbone's default)"),
        ({"cfg": {**quiet, "data": {"resize": "squash"}}}, "data.resize squash, the run's crop"),
        ({"backbone": other_bb}, "--backbone"),
    ]:
        args = {"videos": videos, "backbone": bb, "cfg": quiet} | kw
        with pytest.raises(BadInputError) as refused:
            runner.run_predict("relation", root, "valid", out=out, **args)
        assert calls == []  # not a clip decoded
        assert f"seed0: a run of other settings ({said}" in str(refused.value)
    with pytest.raises(BadInputError, match="seed0: a run of other settings \\(trained on --videos, not --features"):
        runner.run_predict("relation", root, "valid", features=tmp_path / "feats", out=out, cfg=quiet)
    # the same settings: predicted, from the cache training filled
    runner.run_predict("relation", root, "valid", videos=videos, backbone=bb, out=out, cfg=quiet)
    assert len(calls) == 2 and all(c.parent == out for c in calls)


def test_a_frozen_verb_run_decodes_each_clip_once_and_trains_as_before(tmp_path, monkeypatch):
    """`verb.backbone_lr_scale=0` with --videos decoded every segment's 5 event clips and ran the
    frozen Slow-D on them in every epoch of every seed (and once more for the input statistics),
    though the features never change. They are now computed once into the job's feature cache, and
    the runs are those of the decode-every-epoch path: the same metrics, predictions, weights and
    settings hash, a clip that fails to decode the same failure (head dropout and input_norm=batch,
    which a failed clip's grey stand-in takes part in, keep the random draws and batches honest)."""
    import json
    import pickle

    from moviessl.tasks.vidsitu import data as vdata
    from moviessl.tasks.vidsitu import runner

    root, videos, net, bb = _tiny_synth_and_backbone(tmp_path)
    splits = root / "vidsitu" / "vidsitu_annotations" / "split_files"
    train = json.loads((splits / "vseg_split_train_lb.json").read_text())
    valid = json.loads((splits / "vseg_split_valid_lb.json").read_text())
    for vseg in (train[0], valid[0]):  # one train and one eval video that no longer decode
        video = videos / f"{vseg}.mp4"
        video.write_bytes(video.read_bytes()[:2000])
    decodes = []
    decode = vdata.ClipSource.__getitem__
    monkeypatch.setattr(vdata.ClipSource, "__getitem__", lambda self, i: decodes.append(i) or decode(self, i))
    cfg = {
        "verb": {"epochs": 2, "backbone_lr_scale": 0.0, "dropout": 0.2},
        "data": {"input_norm": "batch"},
        "trainer": {"progress_bar": False},
    }

    def run(name):
        decodes.clear()
        res = run_finetune("verb", root, videos=videos, backbone=bb, out=tmp_path / name, seeds=2, cfg=cfg)
        return res, len(decodes)

    with monkeypatch.context() as m:  # the runs as they were: every epoch decodes the clips again
        m.setattr(runner, "cache_frozen_clips", lambda p, *a: p, raising=False)
        before, decoded_before = run("every_epoch")
    after, decoded_after = run("cached")
    segments = after["train_segments"] + after["eval_segments"]
    # 2 seeds of 2 epochs and a scoring (input_norm=batch: no input statistics of their own)
    assert decoded_before == 2 * (2 * after["train_segments"] + after["eval_segments"])
    assert decoded_after == segments  # each segment's clips once, the two that fail included
    assert len(list((tmp_path / "cached").glob("features_*"))) == 1

    assert [r["metrics"] for r in after["runs"]] == [r["metrics"] for r in before["runs"]]
    assert after["runs"][0]["metrics"]["eval_failed_decode"] == 1 and after["partial"] == before["partial"]
    assert after["summary"] == before["summary"] and after["settings"] == before["settings"]
    for seed in (0, 1):
        old, new = (tmp_path / name / f"seed{seed}" for name in ("every_epoch", "cached"))
        a, b = (pickle.loads((d / "predictions.pkl").read_bytes()) for d in (old, new))
        assert [e["pred_vbs_ev"] for e in a] == [e["pred_vbs_ev"] for e in b]
        scores = [torch.tensor([e["pred_scores_ev"] for e in p]) for p in (a, b)]
        assert torch.allclose(*scores, atol=1e-6)
        wa, wb = (load_checkpoint(d / "model.pt")["state_dict"] for d in (old, new))
        assert wa.keys() == wb.keys() and all(torch.allclose(wa[k].double(), wb[k].double(), atol=1e-6) for k in wa)
        ba, bb_ = (load_checkpoint(d / "backbone.pt") for d in (old, new))
        assert ba["meta"] == bb_["meta"]
        assert all(torch.equal(ba["state_dict"][k], v) for k, v in net.state_dict().items())
        ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (old, new))
        assert ma["settings"] == mb["settings"] and ma["metrics"] == mb["metrics"]

    decodes.clear()  # a finished job run again reuses its runs: no features computed
    run_finetune("verb", root, videos=videos, backbone=bb, out=tmp_path / "cached", seeds=2, cfg=cfg)
    assert len(decodes) <= after["train_segments"]  # the input statistics' sample, as before


@pytest.mark.parametrize("precision, folder", [("32-true", ""), ("64-true", "_float64")])
def test_predict_of_a_frozen_verb_job_computes_the_splits_features_once(tmp_path, monkeypatch, precision, folder):
    """--predict on the runs of a frozen verb job (`verb.backbone_lr_scale=0` with --videos) decoded
    every segment of the split and ran the frozen Slow-D on it again for every seed. The split's
    features are now computed once into the job's cache (found there: read) and every seed predicts
    from them -- the same predictions and record, byte for byte; a seed whose saved Slow-D is not
    --backbone's (BatchNorm statistics moved, as in runs trained before a frozen backbone stayed in
    eval mode) still decodes its clips, which the cached features would not stand for. At 64-true
    the runs scored float64 features, in a folder of their own."""
    import json
    import shutil

    from moviessl.tasks.vidsitu import data as vdata
    from moviessl.tasks.vidsitu import runner

    root, videos, net, bb = _tiny_synth_and_backbone(tmp_path)
    splits = root / "vidsitu" / "vidsitu_annotations" / "split_files"
    broken = videos / f"{json.loads((splits / 'vseg_split_valid_lb.json').read_text())[0]}.mp4"
    broken.write_bytes(broken.read_bytes()[:2000])  # an eval video that no longer decodes: a fallback entry
    decodes = []
    decode = vdata.ClipSource.__getitem__
    monkeypatch.setattr(vdata.ClipSource, "__getitem__", lambda self, i: decodes.append(i) or decode(self, i))
    cfg = {"verb": {"epochs": 1, "backbone_lr_scale": 0.0}, "trainer": {"progress_bar": False, "precision": precision}}
    out = tmp_path / "verb"
    segments = run_finetune("verb", root, videos=videos, backbone=bb, out=out, seeds=2, cfg=cfg)["eval_segments"]
    for cache in out.glob("features_*"):  # the split's features not computed yet, as a test split's
        shutil.rmtree(cache)

    def predict(cached=True):
        decodes.clear()
        with monkeypatch.context() as m:
            if not cached:  # the path as it was: each seed's model runs its Slow-D on the clips
                m.setattr(runner, "frozen_clips", lambda p: False)
            rec = runner.run_predict("verb", root, "valid", videos=videos, backbone=bb, out=out, seeds=2, cfg=cfg)
        assert rec["runs"][1]["metrics"]["eval_failed_decode"] == 1
        files = [out / "predict_valid.json", *(out / f"seed{s}" / "predictions_valid.pkl" for s in (0, 1))]
        return [f.read_bytes() for f in files], len(decodes)

    before, decoded = predict(cached=False)
    assert decoded == 2 * segments
    assert predict() == (before, segments)  # each clip once, for both seeds
    (cache,) = out.glob("features_*")  # features_<backbone>_<clips>, + _float64 at 64-true: the scored features'
    assert cache.name.endswith(folder) and cache.name.count("_") == 2 + bool(folder)
    assert predict() == (before, 1)  # read from the cache; the broken video is tried again (nothing cached)

    model_pt = out / "seed1" / "model.pt"
    obj = torch.load(model_pt, weights_only=False)
    var = next(k for k in obj["state_dict"] if k.startswith("encoder.backbone.") and k.endswith("running_var"))
    obj["state_dict"][var] = obj["state_dict"][var] * 2
    torch.save(obj, model_pt)
    moved, decoded = predict(cached=False)
    assert moved[2] != before[2] and moved[1] == before[1]
    assert predict() == (moved, 1 + segments)  # seed 0 from the cache, seed 1 from its clips


def test_cached_frozen_clip_features_are_made_on_the_cpu_whatever_the_default_device(tmp_path, monkeypatch):
    """A frozen verb run's cached features were put into a tensor made on torch's default device:
    under a user's ``torch.set_default_device("cuda")`` on the GPU, beside the CPU features of a
    failed video's grey clips, and the batch that held both could not be stacked. They are made on
    the CPU, the values those made before. (The backbone is built, and the clips extracted, outside
    the stand-in default device: meta can neither build a network's weights nor draw a loader's seed.)"""
    import json

    from default_device import gpu_like_default_device
    from moviessl.config import load_config
    from moviessl.tasks.vidsitu import runner
    from moviessl.tasks.vidsitu.data import SegmentDataset, collate

    root, videos, net, bb = _tiny_synth_and_backbone(tmp_path)
    splits = root / "vidsitu" / "vidsitu_annotations" / "split_files"
    broken = videos / f"{json.loads((splits / 'vseg_split_valid_lb.json').read_text())[0]}.mp4"
    broken.write_bytes(broken.read_bytes()[:2000])  # its features: the grey clips', on the CPU
    cfg = load_config("vidsitu", "cpu", ["verb.backbone_lr_scale=0"])
    out = tmp_path / "out"
    p = runner.prepare("verb", root, out, cfg, videos=videos, backbone=bb)
    cpu = runner.cache_frozen_clips(p, out, videos, bb)
    built, extract = runner.frozen_net(p.backbone_obj), runner.extract_features

    def extract_on_the_cpu(*a, **k):
        torch.set_default_device(None)
        try:
            return extract(*a, **k)
        finally:
            torch.set_default_device("meta")

    monkeypatch.setattr(runner, "frozen_net", lambda obj: built)
    monkeypatch.setattr(runner, "extract_features", extract_on_the_cpu)
    with gpu_like_default_device():
        got = runner.cache_frozen_clips(p, out, videos, bb)
        batch = collate([SegmentDataset(got.eval_data)[i] for i in range(len(got.eval_data))])
    ok = ~batch["failed"]
    assert ok.sum() == len(ok) - 1
    assert all(t.device.type == "cpu" for t in (got.train_data.x.feats, got.eval_data.x.feats, *got.input_stats))
    assert torch.equal(got.train_data.x.feats, cpu.train_data.x.feats)
    assert all(torch.equal(a, b) for a, b in zip(got.input_stats, cpu.input_stats))
    assert torch.equal(batch["x"][ok], cpu.eval_data.x.feats[ok])
    assert torch.equal(batch["x"][~ok][0], cpu.eval_data.x.blank())


def test_frozen_clip_features_are_computed_as_the_run_computed_them(tmp_path):
    """The cache of a frozen verb run holds the features its steps computed: under bf16-mixed the
    training clips' under autocast, in a folder of their own (SRL's and relation's float32 cache
    keeps its files), the eval clips' and the input statistics' in float32, as scoring and
    train_input_stats computed them."""
    import dataclasses

    from moviessl.config import load_config
    from moviessl.tasks.vidsitu import runner

    root, videos, net, bb = _tiny_synth_and_backbone(tmp_path)
    cfg = load_config("vidsitu", "cpu", ["verb.backbone_lr_scale=0", "trainer.precision=bf16-mixed"])
    p = runner.prepare("verb", root, tmp_path / "out", cfg, videos=videos, backbone=bb)
    assert runner.frozen_clips(p)
    assert not runner.frozen_clips(dataclasses.replace(p, cfg=load_config("vidsitu", "cpu")))  # end to end: clips
    q = runner.cache_frozen_clips(p, tmp_path / "out", videos, bb)
    srl = runner.frozen_cache_dir(tmp_path / "out", bb, videos, cfg.data)
    assert sorted((tmp_path / "out").glob("features_*")) == [srl, srl.with_name(srl.name + "_float32_bfloat16")]
    net.eval()
    with torch.no_grad():
        clips = torch.stack([p.train_data.x[i] for i in range(len(p.train_data))])
        from moviessl.video.transforms import to_model_input

        x = to_model_input(clips).flatten(0, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = net(x).float().view(len(clips), 5, -1)
        full = net(x).view(len(clips), 5, -1)
    assert torch.allclose(q.train_data.x.feats, half, atol=1e-5) and not torch.allclose(half, full, atol=1e-4)
    stats = runner.train_input_stats(p.train_data, p.backbone_obj)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(q.input_stats, stats))
    evals = torch.stack([q.eval_data.x[i] for i in range(len(q.eval_data))])
    with torch.no_grad():
        want = net(to_model_input(torch.stack([p.eval_data.x[i] for i in range(len(p.eval_data))])).flatten(0, 1))
    assert torch.allclose(evals, want.view_as(evals), atol=1e-5)


@pytest.mark.parametrize(
    "accelerator, mps", [("auto", True), ("gpu", True), ("mps", True), ("cpu", True), ("auto", False)]
)
def test_frozen_clip_features_take_lightnings_autocast_dtype_on_mps(monkeypatch, accelerator, mps):
    """At 16-mixed Lightning autocasts to float16 on Apple's MPS and to bfloat16 on the CPU; the
    frozen verb cache is computed on the CPU on a Mac (``local_device`` names CUDA GPUs only), and
    took bfloat16 there while the run it stands for trained in float16. Lightning's own connector
    (no MPS here: its availability is patched) says which dtype the run's steps take."""
    import types

    import lightning_fabric.accelerators.mps as fabric_mps
    import pytorch_lightning.accelerators.mps as pl_mps
    from pytorch_lightning.trainer.connectors.accelerator_connector import _AcceleratorConnector

    from moviessl.dist import trainer_device
    from moviessl.tasks.vidsitu.runner import frozen_clip_modes

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cls in (fabric_mps.MPSAccelerator, pl_mps.MPSAccelerator):
        monkeypatch.setattr(cls, "is_available", staticmethod(lambda: mps))
    lightning = _AcceleratorConnector(accelerator=accelerator, precision="16-mixed", devices=1).precision_plugin
    trainer = types.SimpleNamespace(accelerator=accelerator, devices=1, precision="16-mixed", matmul_precision=None)
    assert trainer_device(trainer) == "cpu"
    train_mode, _ = frozen_clip_modes(trainer, trainer_device(trainer))
    assert getattr(torch, train_mode[1]) == lightning.autocast_context_manager().fast_dtype
    assert train_mode[1] == ("float16" if mps and accelerator != "cpu" else "bfloat16")


def test_predict_takes_runs_of_a_videos_folder_whose_path_holds_backbone_colon(tmp_path):
    """The --predict pre-check read the run's backbone hash as the first ``backbone:WORD`` of its
    recorded inputs, ``videos:<folder> backbone:<hash>``: a videos folder whose path holds
    ``backbone:`` (``/data/backbone:v1/videos``) gave that word, so the very runs the same command
    trained were refused ("--backbone ... is not the run's"), which the settings check accepts."""
    import shutil

    from moviessl.tasks.vidsitu import runner

    root, videos, net, bb = _tiny_synth_and_backbone(tmp_path)
    moved = tmp_path / "backbone:v1" / "videos"
    shutil.copytree(videos, moved)
    quiet = {"trainer": {"progress_bar": False}, "relation": {"epochs": 1}}
    out = tmp_path / "rel"
    run_finetune("relation", root, videos=moved, backbone=bb, out=out, cfg=quiet)
    rec = runner.run_predict("relation", root, "valid", videos=moved, backbone=bb, out=out, cfg=quiet)
    assert [r["seed"] for r in rec["runs"]] == [0]


def test_a_rerun_of_a_finished_verb_job_from_videos_decodes_no_clip(tmp_path, monkeypatch):
    """A rerun of a finished `--task verb --videos` job (each seed reused) still computed the input
    statistics of ``data.input_norm=fixed`` (the default) before finding its seeds done: up to
    ``STATS_SEGMENTS`` train segments' clips decoded and run through the Slow-D, the frozen rows'
    feature cache skipped for that very reason ("a rerun of a finished job computes no features").
    They are computed only where a seed trains; the runs' numbers are those of before."""
    import json

    from moviessl.tasks.vidsitu import data as vdata

    root, videos, net, bb = _tiny_synth_and_backbone(tmp_path)
    decodes = []
    decode = vdata.ClipSource.__getitem__
    monkeypatch.setattr(vdata.ClipSource, "__getitem__", lambda self, i: decodes.append(i) or decode(self, i))
    for scale in (0.0, 1.0):  # frozen (the feature cache), end to end
        cfg = {"verb": {"epochs": 1, "backbone_lr_scale": scale}, "trainer": {"progress_bar": False}}
        out = tmp_path / f"verb{scale}"
        first = run_finetune("verb", root, videos=videos, backbone=bb, out=out, cfg=cfg)
        decodes.clear()
        again = run_finetune("verb", root, videos=videos, backbone=bb, out=out, cfg=cfg)
        assert decodes == [], scale
        assert again["runs"] == first["runs"] and again["settings"] == first["settings"]
        assert json.loads((out / "seed0" / "metrics.json").read_text())["settings"] == first["settings"]


def test_predict_precheck_says_an_unset_clip_setting_is_the_backbones_default(tmp_path):
    """A run that took its frame count from the backbone (``data.num_frames`` unset) was refused as
    "data.num_frames 8, the run's None": the setting is unset, the frames the backbone's meta.input."""
    import yaml

    from moviessl.config import load_config
    from moviessl.tasks.vidsitu.runner import other_inputs

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"num_frames": None, "stride": 2}}))
    rec = {"inputs": "videos:/v backbone:abc"}
    cfg = load_config("vidsitu", "cpu", ["data.num_frames=8", "data.stride=null"])
    said = other_inputs(tmp_path, rec, cfg, None, tmp_path, None)
    assert said == (
        "data.num_frames 8, the run's unset (the backbone's default); "
        "data.stride unset (the backbone's default), the run's 2"
    )
    assert "None" not in said
