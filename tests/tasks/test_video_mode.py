"""--videos + --backbone: verb fine-tunes Slow-D end to end; relation/srl extract frozen features once."""

import torch

from moviessl.checkpoint import arch_spec, load_checkpoint, save_checkpoint
from moviessl.models import build_slowd
from moviessl.tasks.vidsitu.runner import run_finetune


def test_verb_end_to_end_and_relation_from_videos(tmp_path):
    from moviessl.synth import generate

    root = generate(tmp_path / "synth", preset="tiny", seed=0)
    videos = root / "vidsitu" / "vsitu_video_trimmed_dir"
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
    quiet = {"trainer": {"progress_bar": False}}
    res = run_finetune(
        "verb", root, videos=videos, backbone=bb, out=tmp_path / "verb", cfg={"verb": {"epochs": 1}, **quiet}
    )
    assert res["train_segments"] > 0 and res["eval_without_inputs"] == 0
    tuned = load_checkpoint(tmp_path / "verb" / "seed0" / "backbone.pt", stage="backbone")
    assert tuned["meta"]["method"] == "random+verb" and tuned["meta"]["input"]["crop"] == 64
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
