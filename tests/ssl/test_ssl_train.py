"""Each method trains a few steps on real tiny clips through moviessl.training.fit and exports a
backbone checkpoint the rest of the pipeline can load."""

import json
from pathlib import Path

import pytest
import torch
from ssl_testutil import tiny_overrides

from moviessl.checkpoint import build_from_checkpoint, load_checkpoint
from moviessl.config import load_config
from moviessl.errors import BadInputError
from moviessl.ssl.pretrain import pretrain


def _run(method, clip_list, out, extra=(), probe=False):
    cfg = load_config("backbone", "cpu", tiny_overrides(extra))
    return pretrain(method, clip_list, out, cfg, resume=False, run_probe=probe, progress=False)


def _check_export(out, method):
    obj = load_checkpoint(out / "model.pt", stage="backbone")
    assert obj["meta"]["method"] == method
    assert obj["meta"]["input"] == {"num_frames": 8, "stride": 2, "short_side": 32, "crop": 32}
    model = build_from_checkpoint(obj)
    y = model(torch.randn(2, 3, 8, 32, 32))
    assert y.shape == (2, obj["meta"]["out_dim"])
    return obj


def test_cvrl_bf16_step_on_cpu(clip_list, tmp_path):
    s = _run("cvrl", clip_list, tmp_path, ["trainer.max_steps=2", "trainer.precision=bf16-mixed"], probe=True)
    assert s["skipped_videos"] == 1
    assert json.loads((tmp_path / "bad_videos.json").read_text()).popitem()[0].endswith("bad0.mp4")
    obj = _check_export(tmp_path, "cvrl")
    assert obj["meta"]["global_step"] == 2
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "curves.png").is_file()
    rows = (tmp_path / "logs" / "metrics.csv").read_text()
    assert "train/loss" in rows and "lr" in rows
    p = json.loads((tmp_path / "probe.json").read_text())
    assert 0.0 <= p["linear_top1"] <= 100.0 and p["num_train"] + p["num_val"] == 12 and p["num_classes"] == 4
    # a resume without the probe changes model.pt: the earlier probe.json no longer describes it
    cfg = load_config("backbone", "cpu", tiny_overrides(["trainer.max_steps=3"]))
    pretrain("cvrl", clip_list, tmp_path, cfg, resume=True, run_probe=False, progress=False)
    assert _check_export(tmp_path, "cvrl")["meta"]["global_step"] == 3 and not (tmp_path / "probe.json").exists()


@pytest.mark.parametrize("method", ["cvrl", "modist", "supervised"])
def test_a_method_trains_and_probes_at_64_true(method, clip_list, tmp_path):
    """At 64-true Lightning holds the weights in float64 and converts the batch before the views
    exist: the float32 views met the first convolution's float64 weights (a dtype traceback at step
    1, after the clip cache), and the probe's clips those of the trained model."""
    _run(method, clip_list, tmp_path, ["trainer.max_steps=1", "trainer.precision=64-true"], probe=method == "cvrl")
    obj = _check_export(tmp_path, method)
    assert obj["meta"]["global_step"] == 1
    if method == "cvrl":
        assert json.loads((tmp_path / "probe.json").read_text())["num_classes"] == 4


def test_cvrl_intra_negatives_train(clip_list, tmp_path):
    # the IIC option: a third, time-broken view enters the loss and its similarity is logged
    _run(
        "cvrl",
        clip_list,
        tmp_path,
        ["trainer.max_steps=2", "trainer.log_every_n_steps=1", "cvrl.intra_neg=[repeat,shuffle,reverse]"],
    )
    rows = (tmp_path / "logs" / "metrics.csv").read_text()
    assert "train/intra_sim" in rows
    with pytest.raises(BadInputError, match="cvrl.intra_neg: must be"):
        _run("cvrl", clip_list, tmp_path / "bad", ["cvrl.intra_neg=[freeze]"])


def test_modist_queues_advance(clip_list, tmp_path):
    _run("modist", clip_list, tmp_path, ["trainer.max_steps=3"])
    _check_export(tmp_path, "modist")
    sd = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    # 3 steps x 2 clips x batch 4 = 24 keys into a ring of 32
    assert int(sd["v_queue.ptr"]) == 24 and int(sd["f_queue.ptr"]) == 24 and int(sd["v_queue.num_enqueued"]) == 24
    # each key carries its video's index (both clips of a video: the same id), the rest still -1
    ids = sd["v_queue.ids"]
    assert torch.equal(ids, sd["f_queue.ids"]) and (ids[24:] == -1).all()
    assert ids[:24].min() >= 0 and ids[:24].max() < 12 and torch.equal(ids[:4], ids[4:8])
    # momentum keys moved towards the trained query encoder but are not equal to it
    q, k = sd["backbone.stem.conv.weight"], sd["v_key.net.stem.conv.weight"]
    assert not torch.equal(q, k)
    assert not any(n.startswith("v_key") for n in load_checkpoint(tmp_path / "model.pt")["state_dict"])


def test_modist_rejects_queue_not_multiple_of_keys(clip_list, tmp_path):
    from moviessl.errors import BadInputError

    with pytest.raises(BadInputError, match="queue_size"):
        _run("modist", clip_list, tmp_path, ["trainer.max_steps=1", "modist.queue_size=30"])


def test_too_few_videos_per_process_refused_before_training(clip_list, tmp_path, monkeypatch):
    """12 usable videos over 2 processes are 6 each: a batch of 8 would give no step on any rank
    (Lightning only warns) and the untrained backbone would be exported as pretrained."""
    from moviessl.ssl import pretrain as pretrain_mod

    monkeypatch.setattr(pretrain_mod, "planned_world_size", lambda t: 2)
    monkeypatch.setattr(pretrain_mod, "fit", lambda *a, **k: pytest.fail("trained with no batch per process"))
    with pytest.raises(BadInputError, match="12 usable videos over 2 processes, fewer than data.batch_size=8"):
        _run("cvrl", clip_list, tmp_path, ["trainer.max_steps=1", "data.batch_size=8"])


@pytest.mark.parametrize(
    "method,why",
    [("cvrl", "CVRL needs at least 2 videos per step"), ("modist", "modist.head.bn needs at least 2 videos")],
)
def test_one_video_per_step_refused(clip_list, tmp_path, monkeypatch, method, why):
    """CVRL with one video per step has no negative (loss and gradient exactly 0); MoDist's key
    encoders batch-normalise half of a process's clips at a time, which needs two videos."""
    from moviessl.ssl import pretrain as pretrain_mod

    monkeypatch.setattr(pretrain_mod, "fit", lambda *a, **k: pytest.fail("trained with one video per step"))
    with pytest.raises(BadInputError, match=why):
        _run(method, clip_list, tmp_path, ["trainer.max_steps=1", "data.batch_size=1", "modist.queue_size=32"])


def test_modist_refuses_flow_sharper_than_its_frames(clip_list, tmp_path):
    """Flow is computed from the frames at data.short_side: a larger flow.short_side would make it
    from upsampled frames and cache it under the name sharp frames' flow has."""
    with pytest.raises(BadInputError, match="flow.short_side: 48 is above data.short_side=32"):
        _run("modist", clip_list, tmp_path, ["trainer.max_steps=1", "flow.short_side=48"])


def test_supervised_learns_and_random_exports(clip_list, tmp_path):
    _run("supervised", clip_list, tmp_path / "sup", ["trainer.max_steps=2"])
    _check_export(tmp_path / "sup", "supervised")
    _run("random", clip_list, tmp_path / "rand")
    obj = _check_export(tmp_path / "rand", "random")
    assert obj["meta"]["global_step"] == 0 and not (tmp_path / "rand" / "checkpoints").exists()
    # the random init is seeded: same seed, same weights
    _run("random", clip_list, tmp_path / "rand2")
    w = load_checkpoint(tmp_path / "rand2" / "model.pt")["state_dict"]
    assert all(torch.equal(v, w[k]) for k, v in obj["state_dict"].items())


def test_supervised_needs_labels(tmp_path):
    from ssl_testutil import make_clip_list

    from moviessl.errors import BadInputError

    csv = make_clip_list(tmp_path, n=4, bad=0, labels=False, n_frames=8)
    with pytest.raises(BadInputError, match="labels"):
        _run("supervised", csv, tmp_path / "out", ["trainer.max_steps=1"])


def test_probe_split_leaves_self_supervised_pretraining_whole(clip_list, tmp_path):
    """Without --val the probe holds out part of --data: out of supervised training (its labels), but
    a self-supervised method pretrains on every video (the paper pretrains on all of K400's train set)."""
    n = sum(1 for ln in clip_list.read_text().splitlines() if ln.strip())
    _run("cvrl", clip_list, tmp_path / "cvrl", ["trainer.max_steps=1"], probe=True)
    _run("supervised", clip_list, tmp_path / "sup", ["trainer.max_steps=1"], probe=True)
    cvrl, sup = (json.loads((tmp_path / m / "probe.json").read_text()) for m in ("cvrl", "sup"))
    assert cvrl["num_val"] > 0 and sup["num_val"] == cvrl["num_val"]  # the same probe split for both
    assert load_checkpoint(tmp_path / "cvrl" / "model.pt")["meta"]["num_videos"] == n
    assert load_checkpoint(tmp_path / "sup" / "model.pt")["meta"]["num_videos"] == n - sup["num_val"]


def test_model_init_starts_from_earlier_weights(clip_list, tmp_path):
    """model.init (K400, then more epochs on VidSitu): a run's last.ckpt restores every matching weight
    and buffer of the method, a model.pt the Slow-D only (MoDist's key encoders then copy their queries)."""
    from moviessl.ssl.registry import get_method

    _run("modist", clip_list, tmp_path / "a", ["trainer.max_steps=2"])
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]
    cfg = load_config("backbone", "cpu", tiny_overrides([]))
    m = get_method("modist")(cfg)
    note = m.load_init(tmp_path / "a" / "checkpoints" / "last.ckpt")
    assert note["init_kind"] == "lightning" and note["init_tensors"] == len(ckpt) and note["init_skipped"] == 0
    sd = m.state_dict()  # queues and key encoders too; the queued keys' video ids index the old run's data
    assert all(torch.equal(v, ckpt[k]) for k, v in sd.items() if not k.endswith("queue.ids"))
    assert (ckpt["v_queue.ids"] >= 0).any() and (sd["v_queue.ids"] == -1).all() and (sd["f_queue.ids"] == -1).all()

    m = get_method("modist")(cfg)
    assert m.load_init(tmp_path / "a" / "model.pt")["init_kind"] == "backbone"
    sd = m.state_dict()
    assert torch.equal(sd["backbone.stem.conv.weight"], ckpt["backbone.stem.conv.weight"])
    assert all(
        torch.equal(v, sd[f"backbone.{k[len('v_key.net.') :]}"]) for k, v in sd.items() if k.startswith("v_key.net.")
    )

    # through pretrain(): a run that trains no step exports exactly the weights it started from
    s = _run("random", clip_list, tmp_path / "b", [f"model.init={tmp_path / 'a' / 'model.pt'}"])
    assert s["init_kind"] == "backbone"
    w = load_checkpoint(tmp_path / "b" / "model.pt")["state_dict"]
    assert all(torch.equal(v, ckpt[f"backbone.{k}"]) for k, v in w.items())
    with pytest.raises(BadInputError, match="Slow-D weights missing"):
        _run(
            "random",
            clip_list,
            tmp_path / "c",
            [f"model.init={tmp_path / 'a' / 'model.pt'}", "model.overrides.stem_width=8"],
        )


def _hostile(marker):
    """An object whose unpickling writes ``marker`` (by ``exec``, a builtin: nothing to import)."""
    return type("Hostile", (), {"__reduce__": lambda self: (exec, (f"open({str(marker)!r}, 'w').write('ran')",))})()


def test_model_init_refuses_a_file_that_would_run_code_unless_trusted(tmp_path, monkeypatch):
    """model.init read any file with torch.load(weights_only=False): a hostile pickle ran its code."""
    from moviessl.ssl.registry import get_method

    monkeypatch.delenv("MOVIESSL_TRUST_CHECKPOINTS", raising=False)
    cfg = load_config("backbone", "cpu", tiny_overrides([]))
    m = get_method("cvrl")(cfg)
    marker = tmp_path / "ran.txt"
    sd = {f"backbone.{k}": v for k, v in m.backbone.state_dict().items()}
    torch.save({"pytorch-lightning_version": "2.4.0", "state_dict": sd, "x": _hostile(marker)}, tmp_path / "a.ckpt")
    with pytest.raises(BadInputError, match=r"a\.ckpt: model\.init: it names exec to call or rebuild"):
        m.load_init(tmp_path / "a.ckpt")
    assert not marker.exists()
    monkeypatch.setenv("MOVIESSL_TRUST_CHECKPOINTS", "maybe")  # the variable's problem, not the file's
    with pytest.raises(BadInputError, match=r"^MOVIESSL_TRUST_CHECKPOINTS: 'maybe' is neither 1 nor 0$"):
        m.load_init(tmp_path / "a.ckpt")
    monkeypatch.setenv("MOVIESSL_TRUST_CHECKPOINTS", "1")
    assert m.load_init(tmp_path / "a.ckpt")["init_kind"] == "lightning" and marker.exists()


def test_model_init_reads_a_pyslowfast_checkpoint(tmp_path):
    """A PySlowFast .pyth (Slow R50 naming, 1xkxk stem) through model.init: the stem is inflated, every
    other Slow-D weight lands under its own name."""
    import re

    from moviessl.models import build_slowd
    from moviessl.ssl.registry import get_method

    cfg = load_config("backbone", "cpu", tiny_overrides([]))
    slow = build_slowd(cfg.model.preset, stem_temporal_kernel=1, stem_temporal_stride=1)

    def psf(key):  # PySlowFast's names, written independently of the loader's map
        if key.startswith("stem."):
            return "s1.pathway0_stem." + key[5:]
        stage, i, layer, p = re.match(r"res(\d)\.(\d+)\.(\w+)\.(\w+)$", key).groups()
        return f"s{stage}.pathway0_res{i}.{layer if layer.startswith('branch1') else 'branch2.' + layer}.{p}"

    torch.save({"model_state": {psf(k): v for k, v in slow.state_dict().items()}}, tmp_path / "k400.pyth")
    m = get_method("cvrl")(cfg)
    assert m.load_init(tmp_path / "k400.pyth")["init_kind"] == "pyslowfast"
    got, want = m.backbone.state_dict(), slow.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items() if k != "stem.conv.weight")
    assert torch.equal(got["stem.conv.weight"].sum(2), want["stem.conv.weight"][:, :, 0])


def test_a_pyslowfast_init_that_needs_trust_is_loaded_with_the_opt_in_it_names(tmp_path, monkeypatch):
    """A .pyth holding more than weights (here its config as an object) through model.init was
    refused with "retry with allow_pickle=True", which no command line can give, and
    MOVIESSL_TRUST_CHECKPOINTS=1, every other checkpoint's opt-in, was not read on that path."""
    import argparse
    import re

    from moviessl.models import build_slowd
    from moviessl.ssl.registry import get_method

    monkeypatch.delenv("MOVIESSL_TRUST_CHECKPOINTS", raising=False)
    cfg = load_config("backbone", "cpu", tiny_overrides([]))
    slow = build_slowd(cfg.model.preset)
    state = {"s1.pathway0_stem." + k[5:]: v for k, v in slow.state_dict().items() if k.startswith("stem.")}
    torch.save({"model_state": state, "cfg": argparse.Namespace(arch="slow")}, tmp_path / "k400.pyth")
    m = get_method("cvrl")(cfg)
    with pytest.raises(BadInputError, match=r"k400\.pyth: ") as e:
        m.load_init(tmp_path / "k400.pyth")
    opt_in = re.search(r"(\w+)=1", str(e.value))
    assert opt_in is not None, f"no opt-in a command line can give: {e.value}"
    monkeypatch.setenv(opt_in.group(1), "1")
    with pytest.raises(BadInputError, match="Slow-D weights missing"):  # read now: only its stem is there
        m.load_init(tmp_path / "k400.pyth")


def test_supervised_takes_sparse_label_ids_as_their_classes(clip_list, tmp_path):
    """A stray label id (10^11) is one more class, not a classifier of 10^11 + 1 outputs (a traceback)."""
    lines = clip_list.read_text().splitlines()
    odd = clip_list.parent / "odd_ids.csv"
    odd.write_text("\n".join([lines[0].rsplit(None, 1)[0] + " 100000000000", *lines[1:]]) + "\n")
    _run("supervised", odd, tmp_path / "sup", ["trainer.max_steps=1"])
    _check_export(tmp_path / "sup", "supervised")
    # the classifier's outputs are numbered by the ids that occur: model.pt says which id each is
    ids = sorted({int(ln.rsplit(None, 1)[1]) for ln in odd.read_text().splitlines()})
    meta = torch.load(tmp_path / "sup" / "model.pt", weights_only=False)["meta"]
    assert meta["class_ids"] == ids and ids[-1] == 10**11


def test_supervised_resume_keeps_the_numbering_its_run_started_with(clip_list, tmp_path):
    """A supervised run started with max + 1 classifier outputs (gapped ids, the numbering before
    one class per id that occurs) was refused by Lightning's strict load on --resume (a size-mismatch
    traceback); it goes on with the numbering it has."""
    gapped = clip_list.parent / "gapped.csv"  # ids {0, 3}: two classes now, four before
    keep = [ln for ln in clip_list.read_text().splitlines() if ln.endswith((" 0", " 3"))]
    gapped.write_text("\n".join(keep) + "\n")
    out = tmp_path / "sup"
    _run("supervised", gapped, out, ["trainer.max_steps=1", "trainer.ckpt_every_n_steps=1"])
    ckpt = out / "checkpoints" / "last.ckpt"
    obj = torch.load(ckpt, weights_only=False)
    sd = obj["state_dict"]
    assert sd["classifier.1.weight"].shape[0] == 2
    sd["classifier.1.weight"] = torch.zeros(4, sd["classifier.1.weight"].shape[1])  # as the earlier version wrote it
    sd["classifier.1.bias"] = torch.zeros(4)
    for state in obj["optimizer_states"][0]["state"].values():
        state.clear()  # no momentum of the old shapes
    torch.save(obj, ckpt)
    cfg = load_config("backbone", "cpu", tiny_overrides(["trainer.max_steps=2", "trainer.ckpt_every_n_steps=1"]))
    pretrain("supervised", gapped, out, cfg, resume=True, run_probe=False, progress=False)
    assert torch.load(ckpt, weights_only=False)["state_dict"]["classifier.1.weight"].shape[0] == 4


def test_random_refuses_a_trained_runs_folder_even_with_resume(clip_list, tmp_path):
    """--method random trains nothing: --resume into a CVRL run's folder replaced its trained model.pt
    with an untrained one (exit 0, the probe.json removed)."""
    _run("cvrl", clip_list, tmp_path, ["trainer.max_steps=1"])
    before = (tmp_path / "model.pt").read_bytes()
    cfg = load_config("backbone", "cpu", tiny_overrides([]))
    with pytest.raises(BadInputError, match="--method random trains nothing"):
        pretrain("random", clip_list, tmp_path, cfg, resume=True, run_probe=False, progress=False)
    assert (tmp_path / "model.pt").read_bytes() == before


def test_random_into_a_runs_folder_is_not_told_to_pass_resume(clip_list, tmp_path):
    """--method random into a folder holding a run was told "pass --resume to continue it", and with
    --resume, as advised, it is refused anyway (it trains nothing and would replace model.pt)."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"a run's")
    cfg = load_config("backbone", "cpu", tiny_overrides([]))
    with pytest.raises(BadInputError) as e:
        pretrain("random", clip_list, tmp_path, cfg, resume=False, run_probe=False, progress=False)
    if "--resume" in str(e.value):
        try:
            pretrain("random", clip_list, tmp_path, cfg, resume=True, run_probe=False, progress=False)
        except BadInputError as refused:
            pytest.fail(f"advised: {e.value}; with --resume: {refused}")
    assert "choose another --out" in str(e.value)


def test_an_unlabelled_list_without_val_says_the_probe_is_skipped(tmp_path):
    """The probe cannot hold out a split of an unlabelled list; that was skipped without a word
    (other skipped probes say why in summary.json and the CLI's note)."""
    from ssl_testutil import make_clip_list

    unlabelled = make_clip_list(tmp_path / "clips", n=4, bad=0, labels=False)
    s = _run("random", unlabelled, tmp_path / "r", probe=True)
    assert "not labelled throughout" in s["probe_skipped"] and "--val" in s["probe_skipped"]
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["probe_skipped"] == s["probe_skipped"]


def test_a_val_list_that_shares_videos_with_data_is_said(tmp_path, caplog):
    """--val videos that --data holds too (however their paths are spelt) are trained on, so the probe
    scores seen videos; that passed without a word."""
    import logging
    import shutil

    from ssl_testutil import make_clip_list

    data = make_clip_list(tmp_path / "clips", n=4, bad=0)
    val = tmp_path / "val.txt"  # two of data's videos, by another spelling of their folder
    lines = [ln for ln in Path(data).read_text().splitlines() if ln.strip()][:2]
    val.write_text("".join(f"{Path(data).parent}/./{ln.split(maxsplit=1)[0]} {ln.split()[-1]}\n" for ln in lines))
    cfg = load_config("backbone", "cpu", tiny_overrides([]))
    with caplog.at_level(logging.WARNING, logger="moviessl"):
        pretrain("random", data, tmp_path / "r", cfg, val=val, resume=False, run_probe=False, progress=False)
    assert "2 of the 2 videos of --val" in caplog.text
    caplog.clear()
    other = make_clip_list(tmp_path / "other", n=2, bad=0)
    shutil.rmtree(tmp_path / "r")
    with caplog.at_level(logging.WARNING, logger="moviessl"):
        pretrain("random", data, tmp_path / "r", cfg, val=other, resume=False, run_probe=False, progress=False)
    assert "also in --data" not in caplog.text


def test_the_overlap_of_val_and_data_resolves_each_folder_once(tmp_path, monkeypatch):
    """warn_overlap compared --data's and --val's videos by os.path.realpath, one per line (a walk of
    lstats along the path: ~1.3 M for Kinetics' lists); a folder of several videos is now resolved
    once, with the same real paths for links, linked folders, missing files and odd spellings."""
    import os

    from moviessl.ssl import pretrain as pretrain_mod

    real_dir = tmp_path / "store" / "train"
    for c in ("a", "b"):
        (real_dir / c).mkdir(parents=True)
        for i in range(30):
            (real_dir / c / f"{c}{i}.mp4").touch()
    (real_dir / "a" / "frames0").mkdir()  # a frame folder listed as a clip
    os.symlink(real_dir, tmp_path / "k400")  # the data reached through a linked folder
    (tmp_path / "own").mkdir()
    os.symlink(real_dir / "b" / "b3.mp4", tmp_path / "own" / "link.mp4")  # a linked file
    (tmp_path / "own" / "plain.mp4").touch()
    odd = [
        tmp_path / "k400" / "a" / "frames0",
        tmp_path / "own" / "link.mp4",
        tmp_path / "own" / "plain.mp4",
        tmp_path / "own" / "gone.mp4",
        tmp_path / "k400" / "b" / ".." / "a" / "a1.mp4",
        tmp_path / "k400" / "b" / "." / "b2.mp4",
        tmp_path / "alone" / "x.mp4",
        Path("relative.mp4"),
    ]
    paths = [tmp_path / "k400" / c / f"{c}{i}.mp4" for c in "ab" for i in range(30)] + odd
    real, calls = os.path.realpath, []
    monkeypatch.setattr(pretrain_mod.os.path, "realpath", lambda p, *a, **k: calls.append(p) or real(p, *a, **k))
    items = [(p, 0) for p in paths[:60]]
    assert pretrain_mod.warn_overlap(items, items[::3], "data", "val") == 20
    assert len(calls) <= 4, len(calls)  # two folders (one realpath per line before: 80)
    assert pretrain_mod._real_paths(paths) == [real(p) for p in paths]


@pytest.mark.parametrize("method,accumulate,said", [("cvrl", 2, True), ("cvrl", 1, False), ("supervised", 2, False)])
def test_accumulation_is_said_not_to_widen_cvrls_negatives(
    clip_list, tmp_path, monkeypatch, caplog, method, accumulate, said
):
    """CVRL's negatives are the other videos of one micro-batch: trainer.accumulate_grad_batches
    scaled the learning rate for the accumulated batch while the loss never saw it, and nothing
    said so to a user reaching the paper's batch of 1024 by accumulation."""
    import logging

    from moviessl.ssl import pretrain as pretrain_mod

    def stop(*a, **k):  # the warning comes before the videos are cached (hours at K400's size)
        raise RuntimeError("stop")

    monkeypatch.setattr(pretrain_mod.ClipDataset, "prepare", stop)
    with caplog.at_level(logging.WARNING, logger="moviessl"), pytest.raises(RuntimeError, match="stop"):
        _run(method, clip_list, tmp_path, ["trainer.max_steps=1", f"trainer.accumulate_grad_batches={accumulate}"])
    warned = "CVRL's negatives (the other videos of the all-gathered batch) are the other items of one micro-batch (4)"
    assert (warned in caplog.text) == said


def test_a_run_on_a_cold_cache_trains_as_the_same_seed_on_a_warm_one(tmp_path):
    """The loader workers that build a cold frame cache drew their base seed from the global torch
    stream, so every later draw of the run (clip starts, crops, augmentations) was shifted: the same
    seed trained another backbone on a first run than on a rerun that found the cache (the default
    cache is shared by every run on the clip list)."""
    from ssl_testutil import make_clip_list

    clips = make_clip_list(tmp_path / "clips", n=8, bad=0)
    extra = ["trainer.max_steps=2", "data.num_workers=1"]
    weights = []
    for out in ("cold", "warm"):
        _run("cvrl", clips, tmp_path / out, extra)
        weights.append(load_checkpoint(tmp_path / out / "model.pt", stage="backbone")["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("method", ["cvrl", "random"])
def test_a_second_job_on_a_folder_a_job_is_training_in_is_refused(clip_list, tmp_path, method):
    """Two `pretrain-backbone` jobs on one --out (a resubmitted batch job) both passed the check for
    an earlier run (no checkpoint yet) and trained into the same checkpoints and logs; each exported
    model.pt and wrote probe.json and summary.json, one job's describing the other's weights (and
    `random` replaced a training run's model.pt). The second is now one line naming the holder,
    before it writes anything."""
    import fcntl
    import os
    import socket

    from moviessl.features.store import JOB_LOCK

    fd = os.open(tmp_path / JOB_LOCK, os.O_RDWR | os.O_CREAT)  # another job's, with its own open file
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since then".encode())
    try:
        with pytest.raises(BadInputError, match=r"another moviessl job is writing to this folder \(pid"):
            _run(method, clip_list, tmp_path, ["trainer.max_steps=1"])
    finally:
        os.close(fd)
    assert [p.name for p in tmp_path.iterdir()] == [JOB_LOCK]


def test_the_summary_names_the_data_it_was_made_from(tmp_path):
    """summary.json is what a run folder says of itself; it named the method and nothing of the
    clip lists, so two runs on other data (or seeds) read alike. It now names --data and --val
    (resolved), the videos trained on and the seed, as the exported model.pt's meta does."""
    from ssl_testutil import make_clip_list

    clips = make_clip_list(tmp_path / "clips", n=4, bad=0)
    cfg = load_config("backbone", "cpu", tiny_overrides(["seed=5"]))
    pretrain("random", clips, tmp_path / "r", cfg, val=clips, run_probe=False, progress=False)
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    want = {"data": str(clips.resolve()), "val": str(clips.resolve()), "num_videos": 4, "seed": 5}
    assert {k: s.get(k) for k in want} == want


def test_pretrain_gives_the_callers_thread_count_back(clip_list, tmp_path, monkeypatch):
    """As every pretraining stage (tests/context: pretrain_context): the run's thread count is the
    command line's, the caller's comes back after it."""
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    try:
        _run("random", clip_list, tmp_path / "r")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_pretrain_gives_the_callers_random_streams_and_lightning_seed_back(clip_list, tmp_path, monkeypatch):
    """A stage seeds Python's, NumPy's and torch's global generators (Lightning's ``seed_everything``)
    and set ``PL_GLOBAL_SEED`` / ``PL_SEED_WORKERS``: a notebook's ``torch.manual_seed(0)`` gave other
    numbers after the call, and a Lightning Trainer of its own took the stage's seed for its loader
    workers (and, under DDP, re-seeded from it). The caller's streams and environment come back."""
    from caller_state import random_streams_given_back

    with random_streams_given_back(monkeypatch):
        _run("random", clip_list, tmp_path / "r")


class _Stop(Exception):
    """Raised by a stand-in ``fit`` once it has seen the loader it was given."""


@pytest.mark.parametrize("accelerator, pinned", [("cpu", False), ("gpu", True)])
def test_batches_are_pinned_only_for_a_run_on_a_gpu(clip_list, tmp_path, monkeypatch, accelerator, pinned):
    """A CPU run (trainer.accelerator=cpu) on a machine with a GPU pinned every batch, which made a
    CUDA context on GPU 0 in every process of the run; a GPU run pins them (a machine with one GPU
    stood in for: fit is stopped before it trains)."""
    import moviessl.ssl.pretrain as sp

    seen = {}

    def fit(module, t, out, train_dataloaders=None, **kw):
        seen["pin"] = train_dataloaders.pin_memory
        raise _Stop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(sp, "fit", fit)
    with pytest.raises(_Stop):
        _run("cvrl", clip_list, tmp_path / "run", [f"trainer.accelerator={accelerator}"])
    assert seen["pin"] is pinned
