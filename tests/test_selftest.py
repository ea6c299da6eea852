"""``moviessl selftest``: the small presets pass end to end; a wiring error in the paper preset fails it.

The full paper-preset run (Slow-D R50 16x224², 2048-d features, TxE 1024 with K = 65536, TxD 1024)
takes minutes on a CPU and is a documented command (docs/results.md, "Paper preset self-test"), not
part of this suite."""

from __future__ import annotations

import io
import logging
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

import moviessl.selftest as st
from moviessl.cli import main


@pytest.mark.parametrize("precision", [None, "bf16-mixed"])
def test_cpu_preset_runs_every_stage(tmp_path, precision):
    """Also in bf16 autocast (the paper presets' precision on GPUs): every stage's queues, losses and
    metrics survive mixed dtypes on the CPU's autocast (the GPU's casts more ops; not run here)."""
    lines = []
    res = st.run_selftest("cpu", precision=precision, out=str(tmp_path / "st"), print_fn=lines.append)
    assert res["ok"], lines
    status = {r["stage"]: r["status"] for r in res["stages"]}
    assert [s for s in st.STAGES if status[s] != "ok"] == []
    notes = {r["stage"]: r["note"] for r in res["stages"]}
    assert "(5, 256)" in notes["extract"] and "TxD 64 x 3" in notes["srl"]
    # LVU's OT++ on the same videos: boxes from an instance_meta pkl pooled by the CVRL backbone (256-d),
    # the MaskPred TxE's 128-d outputs as scene tokens
    assert "120 boxes 256-d" in notes["object_transformer"] and "scene 128-d" in notes["object_transformer"]
    cfgs = sorted((tmp_path / "st").rglob("config.yaml"))  # every training stage ran at that precision
    assert len(cfgs) >= 7 and all(f"precision: {precision or '32-true'}" in c.read_text() for c in cfgs), cfgs


def test_a_wrong_feature_width_in_the_paper_preset_fails(tmp_path):
    """The issue's example: the paper preset with a backbone of the wrong width must not pass."""
    o, e = io.StringIO(), io.StringIO()
    with redirect_stdout(o), redirect_stderr(e):
        rc = main(
            ["selftest", "--preset", "paper", "--only", "extract", "--out", str(tmp_path / "st"),
             "backbone:model.overrides={width_factor: 0.25}"]
        )  # fmt: skip
    assert rc == 1
    err = e.getvalue().strip().splitlines()
    assert err == ["moviessl: selftest FAILED at extract: extracted features are 512-d, the paper's are 2048-d"]
    assert "[FAILED] extract" in o.getvalue()


def test_a_typo_in_an_override_is_bad_input_before_any_stage(tmp_path, capsys):
    rc = main(["selftest", "--preset", "cpu", "--only", "verb", "--out", str(tmp_path / "st"), "vidsitu:verb.epochz=1"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        "moviessl: error: unknown config key 'verb.epochz' in overrides (did you mean verb.epochs?)"
    )
    assert not (tmp_path / "st").exists()


def test_object_transformer_hook_runs_when_present(tmp_path, monkeypatch):
    mod = type(sys)("fake_ot")
    calls = []

    def selftest(ctx):
        calls.append(ctx.preset)
        st.expect(ctx.data["ann"].is_dir(), "no annotations")
        return "object transformer ok"

    mod.selftest = selftest
    monkeypatch.setitem(sys.modules, "fake_ot", mod)
    monkeypatch.setitem(st.HOOKS, "object_transformer", "fake_ot:selftest")
    res = st.run_selftest("cpu", only=["object_transformer"], out=str(tmp_path / "st"), print_fn=lambda s: None)
    assert res["ok"] and calls == ["cpu"] and res["stages"][0]["note"] == "object transformer ok"


def test_context_alone_reads_the_splits_of_its_stand_in_features(tmp_path):
    """``--only context`` pretrains on stand-in VidSitu-named features without an index; the
    selftest's own release gives their splits (pretrain-context refuses such a folder otherwise)."""
    lines = []
    res = st.run_selftest("cpu", only=["context"], out=str(tmp_path / "st"), print_fn=lines.append)
    assert res["ok"], lines
    # again into the same --out: a fresh run, not a refused second run beside the first
    res = st.run_selftest("cpu", only=["context"], out=str(tmp_path / "st"), print_fn=lines.append)
    assert res["ok"], lines


def test_a_rerun_into_a_kept_out_runs_every_stage_again(tmp_path):
    """`--out` kept: a rerun extracted nothing (0.00 events/s: the first run's features were taken as
    done; with another backbone they were refused, "folder holds features with backbone=...") and the
    task stages reported the first run's finished seed without training (a damaged model of it
    failed the rerun)."""
    out = str(tmp_path / "st")
    only = ["extract", "verb", "object_transformer"]
    lines = []
    assert st.run_selftest("cpu", only=only, out=out, print_fn=lines.append)["ok"], lines
    for task in ("verb", "lvu_scene"):
        for f in (tmp_path / "st" / task).rglob("model.pt"):
            f.write_bytes(b"damaged")
    res = st.run_selftest("cpu", only=only, out=out, print_fn=lines.append)
    assert res["ok"], lines
    notes = {r["stage"]: r["note"] for r in res["stages"]}
    assert "(5, 256)" in notes["extract"] and " 0.00 events/s" not in notes["extract"]
    wide = ["backbone:model.overrides={width_factor: 0.5}"]
    res = st.run_selftest("cpu", only=["extract"], overrides=wide, out=out, print_fn=lines.append)
    assert res["ok"] and "(5, 128)" in res["stages"][0]["note"], lines


def test_an_unknown_preset_or_an_empty_only_is_bad_input_before_any_stage(tmp_path, capsys):
    """A misspelt --preset generated the data, then failed the first stage ("selftest FAILED at
    cvrl", exit 1, as a wiring error); `--only ""` ran every stage."""
    out = tmp_path / "st"
    assert main(["selftest", "--preset", "papr", "--only", "verb", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("moviessl: error: unknown backbone preset 'papr'")
    for only in ("", ","):
        assert main(["selftest", "--preset", "cpu", "--only", only, "--out", str(out)]) == 2
        assert "--only names no stage" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("precision, line", [("foo", "'foo' is not a precision"), ("bf16-true", "half precision")])
def test_a_precision_no_stage_can_train_with_is_bad_input_before_any_stage(tmp_path, capsys, precision, line):
    """It was found by the first stage's trainer, after the data were generated (exit 1, as a wiring
    error); extraction alone takes half-precision weights."""
    out = tmp_path / "st"
    assert main(["selftest", "--preset", "cpu", "--precision", precision, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moviessl: error: --precision: ") and line in err, err
    assert not out.exists()


def test_a_users_folder_is_not_a_selftest_out(tmp_path, capsys):
    """Each stage clears its own folder (`features/`, `context/`, `verb/`, ...) of `--out` before it
    runs; pointed at a folder of the user's (a demo's output has a `features/` too), a selftest
    deleted it. Only a new or empty folder, or one a selftest made, is taken."""
    out = tmp_path / "runs"
    (out / "features").mkdir(parents=True)
    (out / "features" / "a_feats.npy").write_bytes(b"mine")
    assert main(["selftest", "--preset", "cpu", "--only", "extract", "--out", str(out)]) == 2
    assert "holds files a selftest did not write" in capsys.readouterr().err
    assert (out / "features" / "a_feats.npy").read_bytes() == b"mine"


def test_a_selftest_from_python_leaves_the_callers_warnings_and_loggers_as_they_were(tmp_path, monkeypatch):
    """As ``run_demo`` (tests/test_demo.py): a selftest left Lightning's loggers at ERROR, a dozen
    ``ignore`` filters in front of the caller's warnings filters and moviessl's log at WARNING."""
    import logging
    import warnings

    mod = type(sys)("fake_ot")
    mod.selftest = lambda ctx: "object transformer ok"
    monkeypatch.setitem(sys.modules, "fake_ot", mod)
    monkeypatch.setitem(st.HOOKS, "object_transformer", "fake_ot:selftest")
    names = ("moviessl", "pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")
    before = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.INFO)
        filters = list(warnings.filters)
        res = st.run_selftest("cpu", only=["object_transformer"], out=str(tmp_path / "st"), print_fn=lambda s: None)
        assert res["ok"]
        assert {name: logging.getLogger(name).level for name in names} == dict.fromkeys(names, logging.INFO)
        assert warnings.filters == filters
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def test_a_selftest_from_python_gives_the_callers_threads_and_random_streams_back(tmp_path, monkeypatch):
    """A CPU selftest set torch's thread count for the process (every core, or OMP_NUM_THREADS) and
    its stand-in backbone called ``torch.manual_seed(0)``: a notebook that had set one thread ran on
    every core afterwards, and its own random numbers changed."""
    import random

    import numpy as np
    import torch

    def draws():
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(1)
    try:
        torch.manual_seed(1), np.random.seed(1), random.seed(1)
        want = draws()
        torch.manual_seed(1), np.random.seed(1), random.seed(1)
        res = st.run_selftest("cpu", only=["extract"], out=str(tmp_path / "st"), print_fn=lambda s: None)
        assert res["ok"], res
        assert torch.get_num_threads() == 1
        assert draws() == want
    finally:
        torch.set_num_threads(before)


def test_the_example_clip_is_drawn_on_the_cpu_whatever_the_default_device():
    """The round trip's example clip was drawn with its CPU generator on torch's default device, where
    the rebuilt model is: under a user's ``torch.set_default_device("cuda")`` torch refused the
    generator. It is drawn on the CPU and moved to the model, the CPU clip the one drawn before."""
    import torch

    from default_device import gpu_like_default_device

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv3d(3, 2, 1), torch.nn.Flatten())

    g = torch.Generator().manual_seed(0)
    net = model()
    assert torch.equal(st.example_clip_forward(net, 2, 4), net(torch.randn(1, 3, 2, 4, 4, generator=g)))
    with gpu_like_default_device():
        assert st.example_clip_forward(model(), 2, 4).device.type == "meta"


def test_the_verb_stage_says_nothing_about_rec5_of_its_own_generated_split(tmp_path, caplog):
    """The generated VidSitu release has no verb with 10 positive events, so the evaluator warned that
    Rec@5 is undefined on a vinfo file in the selftest's own folder, before a user's cluster run: a
    line about data they never gave. The verb stage leaves it out; its metrics are still checked."""
    lines: list[str] = []
    with caplog.at_level(logging.WARNING):
        res = st.run_selftest("cpu", only=["verb"], out=str(tmp_path / "st"), print_fn=lines.append)
    assert res["ok"], lines
    assert not [r for r in caplog.records if "Rec@5" in r.getMessage()]
    assert not logging.getLogger("moviessl.eval.vidsitu").filters  # for the stage only
