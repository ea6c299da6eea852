"""LVU's masked-instance pretraining: whole tracks masked, 80/10/10, the two losses, the teacher head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moviessl.checkpoint import save_checkpoint
from moviessl.context.instance_masking import (
    distill_loss,
    load_teacher_head,
    span_compatibility_loss,
    track_masks,
)
from moviessl.context.maskpred import corrupt_selected
from moviessl.errors import BadInputError
from moviessl.models.object_transformer import END, ID_OFFSET, INSTANCE, PAD, SCENE, START


def _films_of_instances(ids, root):
    """An instance reader (pretrain-ot's input) of 70-s films, two instances a second, the same in each."""
    from moviessl.data.lvu import VideoInstances

    class Films:
        dim = 8

        def load(self, vid, lazy=True):
            sec = np.repeat(np.arange(70), 2)
            box = np.tile(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), (len(sec), 1))
            feats = np.random.default_rng(0).normal(size=(len(sec), 8)).astype("f4")
            return VideoInstances(sec, sec // 10, np.tile([0, 1], 70), box, feats)

    Films.ids, Films.root = list(ids), root
    return Films


def _stop(*a, **k):
    raise RuntimeError("stop")  # stands in for pretrain-ot's fit: these tests end before any step


def test_track_masks_mask_whole_tracks_at_least_one_per_span():
    g = torch.Generator().manual_seed(0)
    B, N = 64, 12
    kind = torch.full((B, N), INSTANCE)
    kind[:, 0], kind[:, -1], kind[:, -2] = START, END, PAD
    kind[:, 5] = SCENE
    link = ID_OFFSET + torch.arange(N).remainder(3).repeat(B, 1)  # 3 tracks per span
    m = track_masks(link, kind, 0.15, generator=g)
    assert not m[:, [0, 5, N - 2, N - 1]].any()  # only instance tokens
    for b in range(B):
        masked_tracks = set(link[b][m[b]].tolist())
        assert masked_tracks  # at least one track per span
        for t in masked_tracks:  # a masked track is masked everywhere in the span
            assert m[b][(link[b] == t) & (kind[b] == INSTANCE)].all()
    # about 15% of tracks, plus the forced one where none was drawn
    frac = m.float().sum() / (kind == INSTANCE).sum()
    assert 0.3 < frac < 0.6


def test_track_masks_redraw_a_span_without_a_masked_track_as_lvu():
    # LVU's get_mask_indices draws every track of a span again until one is masked: with two tracks
    # at 0.5, both are masked in 1/3 of the spans (0.25 / 0.75), not 1/4 (one track forced)
    g = torch.Generator().manual_seed(0)
    B = 20000
    kind = torch.full((B, 4), INSTANCE)
    link = ID_OFFSET + torch.tensor([0, 0, 1, 1]).repeat(B, 1)
    m = track_masks(link, kind, 0.5, generator=g)
    assert m.any(1).all()
    assert abs(m.all(1).float().mean().item() - 1 / 3) < 0.015
    # a fraction of 0 still masks one track per span, uniformly, and ends
    m0 = track_masks(link, kind, 0.0, generator=g)
    assert (m0.sum(1) == 2).all() and abs(m0[:, 0].float().mean().item() - 0.5) < 0.02


def test_track_masks_draw_only_a_spans_own_tracks():
    """LVU's ``get_mask_indices`` draws over the track ids present in each example (``x_ids``) until
    one is masked. Spans of one batch hold different tracks (ids run to the batch's largest): a draw
    that counted a track absent from a span as its masked one left that span with no masked token."""
    g = torch.Generator().manual_seed(0)
    B = 400
    kind = torch.full((B, 10), INSTANCE)
    link = ID_OFFSET + torch.arange(10).repeat(B, 1)  # even spans: ten tracks
    link[1::2] = ID_OFFSET  # odd spans: one track, id 0, on every token
    m = track_masks(link, kind, 0.15, generator=g)
    assert m.any(1).all()  # every span has a masked token
    assert m[1::2].all()  # a one-track span masks its track


def test_pretraining_swaps_are_drawn_from_instance_tokens_on_the_host_too():
    """The host hook hands ``corrupt_selected`` the candidates of BERT's 10% swaps: the instance
    tokens (LVU's ``contents``: not [start] / [end] / padding), as the in-step draw does. The
    non-padding tokens would paste [start]'s / [end]'s zero feature into instances."""
    from types import SimpleNamespace

    from moviessl.config import load_config
    from moviessl.context.instance_masking import HOST_MASKS, InstanceMaskingModule

    ot = InstanceMaskingModule(load_config("ot_pretrain", "cpu", ["masking.action_weight=0"]), 8)
    ot._trainer = SimpleNamespace(training=True)
    kind = torch.tensor([[START, INSTANCE, INSTANCE, INSTANCE, END, PAD], [START, INSTANCE, END, PAD, PAD, PAD]])
    link = torch.where(kind == INSTANCE, ID_OFFSET + torch.arange(6) % 2, torch.zeros_like(kind))
    out = ot.on_before_batch_transfer({"x": {"kind": kind, "link": link}})
    masked, candidates = out[HOST_MASKS].value
    assert torch.equal(candidates, kind == INSTANCE) and not (masked & (kind != INSTANCE)).any()


def test_corrupt_is_80_10_10():
    g = torch.Generator().manual_seed(0)
    kind = torch.full((40, 50), INSTANCE)
    feats = torch.randn(40, 50, 6)
    masked = torch.rand(40, 50, generator=g) < 0.5
    new, to_mask = corrupt_selected(feats, masked, kind == INSTANCE, generator=g)
    n = masked.sum().item()
    assert (to_mask & ~masked).sum() == 0 and abs(to_mask.sum().item() / n - 0.8) < 0.05
    changed = (new != feats).any(-1)
    assert (changed & ~masked).sum() == 0  # unmasked tokens untouched
    swapped = changed & ~to_mask
    assert abs(swapped.sum().item() / n - 0.1) < 0.04


def test_losses():
    # seeded: with unseeded draws the pair check below fails for ~0.5% of random z (2000 seeds tried)
    torch.manual_seed(0)
    t = torch.randn(5, 7)
    assert distill_loss(t, t, activation="softmax").abs() < 1e-6
    assert distill_loss(t.clone(), t, activation="sigmoid").abs() < 1e-6
    assert distill_loss(torch.zeros(5, 7), t, activation="sigmoid") > 0
    # pairs (i, i + B): aligned pairs and distinct videos give a low loss, shuffled pairs a high one
    z = torch.randn(4, 16) * 3
    good = span_compatibility_loss(torch.cat([z, z]), 0.2)
    bad = span_compatibility_loss(torch.cat([z, z[[1, 2, 3, 0]]]), 0.2)
    assert good < 0.1 < bad


def test_losses_match_hand_computation():
    """The checks above hold for any loss that is 0 at equality and grows with a mismatch (a sum for a
    mean, a dropped T² or negative-class term, a temperature multiplied in all passed them). These pin
    the values: LVU's soft_label_loss_sigmoid (binary KL per (token, class), their mean, x T²), the
    softmax KL (per token, batch mean, x T²) and SameMovieHeadLoss (CE over dot products / temperature)."""
    pred = [[0.0, 1.0, -2.0], [0.5, 0.0, 3.0]]
    teacher = [[2.0, -1.0, 0.0], [1.0, 1.0, 1.0]]
    t = 2.0

    def sig(x):
        return 1.0 / (1.0 + math.exp(-x))

    def softmax(row):
        e = [math.exp(v / t) for v in row]
        return [v / sum(e) for v in e]

    binary = [
        sig(b / t) * math.log(sig(b / t) / sig(a / t)) + sig(-b / t) * math.log(sig(-b / t) / sig(-a / t))
        for pr, te in zip(pred, teacher)
        for a, b in zip(pr, te)
    ]
    want = sum(binary) / len(binary) * t**2
    got = distill_loss(torch.tensor(pred), torch.tensor(teacher), temperature=t, activation="sigmoid")
    assert got.item() == pytest.approx(want, rel=1e-5)
    per_token = [sum(p * math.log(p / q) for p, q in zip(softmax(te), softmax(pr))) for pr, te in zip(pred, teacher)]
    want = sum(per_token) / len(per_token) * t**2
    got = distill_loss(torch.tensor(pred), torch.tensor(teacher), temperature=t, activation="softmax")
    assert got.item() == pytest.approx(want, rel=1e-5)
    # rows (0, 2) and (1, 3) are the two spans of a video
    z = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]]
    tau, terms = 0.5, []
    for i in range(4):
        logits = {j: sum(a * b for a, b in zip(z[i], z[j])) / tau for j in range(4) if j != i}
        terms.append(-logits[(i + 2) % 4] + math.log(sum(math.exp(v) for v in logits.values())))
    got = span_compatibility_loss(torch.tensor(z), tau)
    assert got.item() == pytest.approx(sum(terms) / 4, rel=1e-5)


@pytest.mark.parametrize("loss", ["distill sigmoid", "distill softmax", "span"])
def test_losses_are_float32_under_bf16_autocast(loss):
    """Under a mixed precision the heads give bf16; the KL (a difference of nearly equal
    log-probabilities near convergence) and the span logits (unnormalised dot products / 0.2) were
    computed in bf16 then: the KL off by 9-23%, the span loss by ~4%. Both are float32 now."""
    g = torch.Generator().manual_seed(0)
    if loss == "span":
        a = torch.randn(16, 128, generator=g)
        z = torch.cat([a, a + 2 * torch.randn(16, 128, generator=g)])
        args = (F.normalize(z, dim=1) * 3,)
        fn = span_compatibility_loss
    else:
        p = torch.randn(500, 400, generator=g) * 3
        args = (p, p + 0.05 * torch.randn(500, 400, generator=g))
        fn = lambda a, b: distill_loss(a, b, activation=loss.split()[1])  # noqa: E731
    half = [x.bfloat16() for x in args]  # what the heads give under autocast
    ref = fn(*[x.float() for x in half])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn(*half)
    assert got.dtype == torch.float32 and torch.allclose(got, ref, rtol=1e-5), (float(got), float(ref))


def test_teacher_heads(tmp_path):
    w, b = torch.randn(5, 8), torch.randn(5)
    torch.save(
        {"state_dict": {"backbone.stem.conv.weight": torch.zeros(1), "classifier.1.weight": w, "classifier.1.bias": b}},
        tmp_path / "l.ckpt",
    )
    tw, tb = load_teacher_head(tmp_path / "l.ckpt")
    assert torch.equal(tw, w) and torch.equal(tb, b)
    torch.save({"model_state": {"head.projection.weight": w, "head.projection.bias": b}}, tmp_path / "psf.pyth")
    assert torch.equal(load_teacher_head(tmp_path / "psf.pyth")[0], w)
    torch.save({"state_dict": {"x": w}}, tmp_path / "none.ckpt")
    with pytest.raises(BadInputError, match="no linear classifier"):
        load_teacher_head(tmp_path / "none.ckpt")
    # a supervised run's model.pt (backbone only): the classifier comes from the run's last.ckpt
    run = tmp_path / "sup"
    (run / "checkpoints").mkdir(parents=True)
    arch = {"builder": "moviessl.models.slowd:build_slowd", "kwargs": {}}
    save_checkpoint(run / "model.pt", stage="backbone", arch=arch, state_dict={"a": w})
    with pytest.raises(BadInputError, match="pass that run's checkpoints/last.ckpt"):
        load_teacher_head(run / "model.pt")
    (run / "checkpoints" / "last.ckpt").write_bytes((tmp_path / "none.ckpt").read_bytes())  # a CVRL run's
    with pytest.raises(BadInputError, match=r"model\.pt: no linear classifier in it or in its run's last\.ckpt"):
        load_teacher_head(run / "model.pt")
    (run / "checkpoints" / "last.ckpt").write_bytes((tmp_path / "l.ckpt").read_bytes())
    assert torch.equal(load_teacher_head(run / "model.pt")[0], w)


@pytest.mark.parametrize("saved", [torch.zeros(3), [1, 2], {"state_dict": [torch.zeros(5, 8)]}])
def test_a_teacher_file_that_is_no_state_dict_is_one_line(tmp_path, saved):
    """A file torch.load reads that holds a tensor or a list (no state dict) was an AttributeError
    traceback ('Tensor' object has no attribute 'get') instead of the no-classifier line."""
    torch.save(saved, tmp_path / "t.pt")
    with pytest.raises(BadInputError, match=r"t\.pt: no linear classifier"):
        load_teacher_head(tmp_path / "t.pt")


@pytest.mark.parametrize("bias", [torch.zeros(1), torch.zeros(5, 2), torch.tensor(0.5)])
def test_a_teacher_whose_bias_does_not_fit_its_weight_is_one_line(tmp_path, bias):
    """A bias of another shape than the classifier's classes was taken: one of 1 (or a scalar)
    broadcast silently over every class in the distillation target, one of (5, 2) failed in a
    traceback at the first training step."""
    torch.save({"head.weight": torch.randn(5, 8), "head.bias": bias}, tmp_path / "t.pt")
    with pytest.raises(BadInputError, match=r"t\.pt: head\.bias has shape .* head\.weight's 5 classes"):
        load_teacher_head(tmp_path / "t.pt")


def _hostile(marker):
    """An object whose unpickling writes ``marker`` (by ``exec``, a builtin: nothing to import)."""
    return type("Hostile", (), {"__reduce__": lambda self: (exec, (f"open({str(marker)!r}, 'w').write('ran')",))})()


def test_a_teacher_checkpoint_that_would_run_code_is_refused_unless_trusted(tmp_path, monkeypatch):
    """The teacher was read with torch.load(weights_only=False): a hostile pickle ran its code."""
    monkeypatch.delenv("MOVIESSL_TRUST_CHECKPOINTS", raising=False)
    w, b = torch.randn(5, 8), torch.randn(5)
    marker = tmp_path / "ran.txt"
    teacher = {"state_dict": {"classifier.1.weight": w, "classifier.1.bias": b}, "x": _hostile(marker)}
    torch.save(teacher, tmp_path / "t.ckpt")
    with pytest.raises(BadInputError, match=r"t\.ckpt: it names exec to call or rebuild when loaded"):
        load_teacher_head(tmp_path / "t.ckpt")
    assert not marker.exists()
    monkeypatch.setenv("MOVIESSL_TRUST_CHECKPOINTS", "1")
    assert torch.equal(load_teacher_head(tmp_path / "t.ckpt")[0], w) and marker.exists()


def test_ot_pretrain_presets_train_in_fp32():
    """LVU's run_pretrain.sh has no --fp16: the paper preset trains fp32, as the cpu one does."""
    from moviessl.config import load_config

    assert load_config("ot_pretrain", "paper").trainer.precision == "32-true"
    assert load_config("ot_pretrain", "cpu").trainer.precision == "32-true"


def test_pretrain_ot_refuses_a_span_past_the_time_tables_first(tmp_path):
    """A span longer than the position tables hold is one line naming data.span_s, before any
    instance file is read or the run folder made (its time ids would be clamped, silently)."""
    from moviessl.config import load_config
    from moviessl.context.instance_masking import pretrain_ot

    cfg = load_config("ot_pretrain", "cpu", ["data.span_s=300"])
    with pytest.raises(BadInputError, match=r"^data\.span_s: a 300-s span needs time ids up to"):
        pretrain_ot(None, tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


def test_the_setting_a_too_long_span_names_can_be_raised(tmp_path):
    """The line for a span past the OT's time tables named ``model.max_positions``, a key the
    config refuses as a typo: the tables' size is ``model.overrides.max_positions``."""
    import re

    from moviessl.config import load_config
    from moviessl.models.object_transformer import span_checked_settings

    for stage in ("ot_pretrain", "lvu"):
        cfg = load_config(stage, "cpu", ["data.span_s=300"])
        with pytest.raises(BadInputError, match="past the OT's") as e:
            span_checked_settings(cfg.model.preset, cfg.model.overrides, cfg.data.span_s)
        key = re.search(r"with (\S+) \d+\)", str(e.value)).group(1)
        cfg = load_config(stage, "cpu", ["data.span_s=300", f"{key}=1024"])
        span_checked_settings(cfg.model.preset, cfg.model.overrides, cfg.data.span_s)


def test_pretrain_ot_checks_its_teacher_before_reading_the_videos(tmp_path):
    """A teacher of another width (or none where one is needed) was refused only after every
    video's instance features had been read (every file of the release)."""
    from moviessl.config import load_config
    from moviessl.context.instance_masking import pretrain_ot

    class Unread:
        dim, ids, root = 16, ["a", "b"], tmp_path

        def load(self, vid, lazy=True):
            raise AssertionError("a video was read before the teacher was checked")

    torch.save({"state_dict": {"classifier.1.weight": torch.zeros(5, 8), "classifier.1.bias": torch.zeros(5)}},
               tmp_path / "t.ckpt")  # fmt: skip
    cfg = load_config("ot_pretrain", "cpu", ["trainer.progress_bar=false"])
    with pytest.raises(BadInputError, match="teacher head takes 8-d features, the instances are 16-d"):
        pretrain_ot(Unread(), tmp_path / "out", cfg, teacher=tmp_path / "t.ckpt")
    with pytest.raises(BadInputError, match="needs a teacher head"):
        pretrain_ot(Unread(), tmp_path / "out2", cfg)


def test_pretrain_ot_keeps_a_batch_per_process_when_the_spans_are_few(tmp_path, monkeypatch):
    """With fewer span pairs than a batch on every process, the loader must not drop its only
    (short) batch: under DDP each of 2 processes got half the pairs, drop_last left none, and the
    run trained no step and exported its untrained OT, exit 0."""
    from moviessl.config import load_config
    from moviessl.context import instance_masking as im
    from moviessl.data.lvu import VideoInstances

    class Few:
        dim, ids, root = 8, ["a"], tmp_path

        def load(self, vid, lazy=True):
            sec = np.repeat(np.arange(70), 2)
            g = np.random.default_rng(0)
            box = np.tile(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), (len(sec), 1))
            return VideoInstances(sec, sec // 10, np.tile([0, 1], 70), box, g.normal(size=(len(sec), 8)).astype("f4"))

    seen = {}

    def fake_fit(module, cfg, out, train_dataloaders=None, **kw):
        seen["dl"] = train_dataloaders
        raise RuntimeError("stop")

    monkeypatch.setattr(im, "fit", fake_fit)
    # 70 s of instances: 11 spans of 60 s, between one batch (8) and two processes' batches (16)
    cfg = load_config("ot_pretrain", "cpu", ["data.batch_size=8", "masking.action_weight=0", "trainer.devices=2"])
    with pytest.raises(RuntimeError, match="stop"):
        im.pretrain_ot(Few(), tmp_path / "out", cfg)
    assert len(seen["dl"].dataset) == 11 and not seen["dl"].drop_last


def test_pretrain_ot_checks_its_output_folder_before_reading_anything(tmp_path):
    """An --out that is a file was said (an OSError line) only after the teacher and every video."""
    from moviessl.config import load_config
    from moviessl.context.instance_masking import pretrain_ot

    class Unread:
        dim, ids, root = 16, ["a"], tmp_path

        def load(self, vid, lazy=True):
            raise AssertionError("a video was read before the output folder was checked")

    (tmp_path / "out").write_text("a file")
    cfg = load_config("ot_pretrain", "cpu", ["trainer.progress_bar=false"])
    with pytest.raises(BadInputError, match="output folder is an existing file"):
        pretrain_ot(Unread(), tmp_path / "out", cfg, teacher=tmp_path / "no_such_teacher.ckpt")


@pytest.mark.parametrize("accumulate,span_weight,said", [(2, 1.0, True), (1, 1.0, False), (2, 0.0, False)])
def test_pretrain_ot_says_accumulation_does_not_widen_the_span_losss_negatives(
    tmp_path, monkeypatch, caplog, accumulate, span_weight, said
):
    """The span compatibility loss takes its negatives from the spans of one micro-batch:
    trainer.accumulate_grad_batches trained with the batch it names nowhere in the loss, silently."""
    import logging

    from moviessl.config import load_config
    from moviessl.context import instance_masking as im

    One = _films_of_instances(["a"], tmp_path)
    monkeypatch.setattr(im, "fit", _stop)
    teacher = None
    if not span_weight:  # the distillation then (a run with neither term is refused)
        teacher = tmp_path / "teacher.ckpt"
        head = {"classifier.1.weight": torch.randn(5, 8), "classifier.1.bias": torch.zeros(5)}
        torch.save({"state_dict": head}, teacher)
    weights = [f"masking.action_weight={0 if span_weight else 80}", f"masking.span_weight={span_weight}"]
    over = ["data.batch_size=4", *weights]
    cfg = load_config("ot_pretrain", "cpu", [*over, f"trainer.accumulate_grad_batches={accumulate}"])
    with caplog.at_level(logging.WARNING, logger="moviessl"), pytest.raises(RuntimeError, match="stop"):
        im.pretrain_ot(One(), tmp_path / "out", cfg, teacher=teacher)
    warned = "span compatibility loss's negatives are the other items of one micro-batch (8), not of the accumulated 16"
    assert (warned in caplog.text) == said


def test_pretrain_ot_refuses_a_folder_another_job_is_training_in(tmp_path):
    """Two `pretrain-ot` jobs on one --out both passed the check for an earlier run (no checkpoint
    yet) and trained into the same checkpoints, logs and model.pt. The second is now one line
    naming the holder, before the teacher or any video is read."""
    import fcntl
    import os
    import socket

    from moviessl.config import load_config
    from moviessl.context.instance_masking import pretrain_ot
    from moviessl.features.store import JOB_LOCK

    class Unread:
        dim, ids, root = 16, ["a"], tmp_path

        def load(self, vid, lazy=True):
            raise AssertionError("a video was read by the refused job")

    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / JOB_LOCK, os.O_RDWR | os.O_CREAT)  # another job's, with its own open file
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since then".encode())
    cfg = load_config("ot_pretrain", "cpu", ["trainer.progress_bar=false", "masking.action_weight=0"])
    try:
        with pytest.raises(BadInputError, match=r"another moviessl job is writing to this folder \(pid"):
            pretrain_ot(Unread(), out, cfg)
    finally:
        os.close(fd)
    assert [p.name for p in out.iterdir()] == [JOB_LOCK]


def test_an_ot_pretraining_run_writes_a_summary_naming_what_it_was_made_from(tmp_path):
    """pretrain-ot wrote no summary.json: the instances it was made from, the videos, steps and seed
    were only in model.pt's meta, which needs the loader to read."""
    import json

    from moviessl.config import load_config
    from moviessl.context.instance_masking import pretrain_ot

    Two = _films_of_instances(["a", "b"], tmp_path / "inst")

    over = ["data.batch_size=4", "masking.action_weight=0", "trainer.max_steps=2", "seed=7"]
    cfg = load_config("ot_pretrain", "cpu", [*over, "trainer.progress_bar=false"])
    pretrain_ot(Two(), tmp_path / "out", cfg)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    want = {"instances": str((tmp_path / "inst").resolve()), "num_videos": 2, "steps": 2, "seed": 7, "teacher": None}
    assert {k: s.get(k) for k in want} == want
    assert s["num_spans"] > 0 and "train/loss" in s["metrics"]
    # a resume of the run killed before its export trains and logs nothing: the metrics it last logged
    (tmp_path / "out" / "model.pt").unlink()
    pretrain_ot(Two(), tmp_path / "out", cfg, resume=True)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["metrics"] == pytest.approx(s["metrics"])


def test_pretrain_ot_refuses_instance_meta_with_an_extract_instances_folder(tmp_path, capsys):
    """`pretrain-ot --instances <extract-instances folder> --instance-meta X.pkl`: the folder holds
    the boxes it was extracted from, so the metadata was read by nobody and the OT pretrained on
    other boxes than the user named, exit 0 (`finetune lvu` refuses the same pair)."""
    import json
    import pickle

    from moviessl.cli import main

    inst = tmp_path / "inst"
    inst.mkdir()
    (inst / "index.json").write_text(json.dumps({"format": "moviessl-instances", "videos": {}}))
    meta = tmp_path / "instance_meta_scene.pkl"
    meta.write_bytes(pickle.dumps({"a": {0: {"0.1,0.1,0.5,0.9": [0, 1]}}}))
    argv = ["pretrain-ot", "--instances", str(inst), "--instance-meta", str(meta), "--out", str(tmp_path / "o")]
    assert main([*argv, "masking.action_weight=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("moviessl: error: --instance-meta: goes with LVU's features/"), err
    assert not (tmp_path / "o").exists()


def test_an_ot_pretraining_run_names_the_instance_metadata_it_read(tmp_path):
    """pretrain-ot recorded the features folder but not the --instance-meta it took LVU's boxes and
    track ids from (a pkl or the instance_meta/ folder): which tracks the OT saw could not be told
    afterwards. summary.json and model.pt name it, with a digest of what it held."""
    import json
    import pickle

    from moviessl.checkpoint import load_checkpoint
    from moviessl.config import load_config
    from moviessl.context.instance_masking import pretrain_ot
    from moviessl.features.instances import open_instances

    rng = np.random.default_rng(0)
    feats, metas = tmp_path / "features", tmp_path / "instance_meta"
    feats.mkdir()
    metas.mkdir()
    boxes = ("0.1,0.1,0.5,0.5", "0.5,0.1,0.9,0.7")
    meta = {v: {s: {b: [s // 10, i] for i, b in enumerate(boxes)} for s in range(70)} for v in ("a", "b")}
    for v, secs in meta.items():
        np.savez(feats / f"{v}.npz", a={s: {b: rng.normal(size=8).astype("f4") for b in bs} for s, bs in secs.items()})
    with open(metas / "instance_meta_scene.pkl", "wb") as f:
        pickle.dump(meta, f)
    over = ["data.batch_size=4", "masking.action_weight=0", "trainer.max_steps=1", "trainer.progress_bar=false"]
    cfg = load_config("ot_pretrain", "cpu", over)
    runs = {}
    for name, spec in (("pkl", metas / "instance_meta_scene.pkl"), ("dir", metas)):
        store = open_instances(feats, spec)
        path = pretrain_ot(store, tmp_path / name, cfg)
        s = json.loads((tmp_path / name / "summary.json").read_text())
        m = load_checkpoint(path, stage="ot")["meta"]
        assert s["instance_meta"] == m["instance_meta"] == str(spec.resolve())
        assert s["instances"] == str(feats.resolve())
        assert s["instances_digest"] == m["instances_digest"] == store.source_digest()
        runs[name] = s["instances_digest"]
    with open(metas / "instance_meta_scene.pkl", "wb") as f:  # other tracks: another digest
        pickle.dump({v: {s: {boxes[0]: [0, 5]} for s in secs} for v, secs in meta.items()}, f)
    assert open_instances(feats, metas).source_digest() != runs["dir"]


def test_pretrain_ot_gives_the_callers_random_streams_and_lightning_seed_back(tmp_path, monkeypatch):
    """As every stage that seeds (tests/ssl: pretrain), a failed run too: pretrain_ot seeds first,
    then stops here at its teacher check."""
    import os
    import random

    from moviessl.config import load_config
    from moviessl.context.instance_masking import pretrain_ot

    class Unread:
        dim, ids, root = 16, ["a"], tmp_path

        def load(self, vid, lazy=True):
            raise AssertionError("a video was read before the teacher was checked")

    def draws():
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()

    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # the caller's own Lightning seed stays its own
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    want = draws()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    cfg = load_config("ot_pretrain", "cpu", ["trainer.progress_bar=false"])
    with pytest.raises(BadInputError, match="needs a teacher head"):
        pretrain_ot(Unread(), tmp_path / "out", cfg)
    assert draws() == want
    assert os.environ.get("PL_GLOBAL_SEED") == "7" and "PL_SEED_WORKERS" not in os.environ


def test_pretrain_ot_gives_the_callers_feature_cache_bound_back(tmp_path):
    """``data.instance_cache_mb`` is the run's: it stayed the process's bound after the call (a
    notebook's later reads of instance features kept up to the run's bound in RAM, or were cut
    to it), a failed run's too."""
    from moviessl.config import load_config
    from moviessl.context.instance_masking import pretrain_ot
    from moviessl.features import instances

    class Unread:
        dim, ids, root = 16, ["a"], tmp_path

        def load(self, vid, lazy=True):
            raise AssertionError("a video was read before the teacher was checked")

    before = instances.FEATURE_CACHE_BYTES
    cfg = load_config("ot_pretrain", "cpu", ["trainer.progress_bar=false", "data.instance_cache_mb=3"])
    with pytest.raises(BadInputError, match="needs a teacher head"):
        pretrain_ot(Unread(), tmp_path / "out", cfg)
    assert instances.FEATURE_CACHE_BYTES == before


@pytest.mark.parametrize("batch,refused", [(1, True), (2, False)])
def test_pretrain_ot_with_nothing_to_train_is_one_line_before_any_step(tmp_path, monkeypatch, batch, refused):
    """Without the distillation (``masking.action_weight=0``) a batch of one span pair per process
    gives the span loss no negative, and with ``masking.span_weight=0`` too no term is left: every
    step's loss was a constant, and the first backward failed in a traceback after every video was
    read."""
    from moviessl.config import load_config
    from moviessl.context import instance_masking as im

    One = _films_of_instances(["a"], tmp_path)
    monkeypatch.setattr(im, "fit", _stop)
    cfg = load_config("ot_pretrain", "cpu", ["masking.action_weight=0", f"data.batch_size={batch}"])
    if refused:
        with pytest.raises(BadInputError, match="^data.batch_size: 1 span pair per process: with masking.action_we"):
            im.pretrain_ot(One(), tmp_path / "out", cfg)
    else:
        with pytest.raises(RuntimeError, match="stop"):
            im.pretrain_ot(One(), tmp_path / "out", cfg)
    cfg = load_config("ot_pretrain", "cpu", ["masking.action_weight=0", "masking.span_weight=0"])
    with pytest.raises(BadInputError, match="^masking.span_weight: 0 with masking.action_weight=0 too: nothing"):
        im.InstanceMaskingModule(cfg, 8)


def test_track_masks_and_corruption_draw_on_the_cpu_whatever_the_default_device():
    """Both draw on the CPU with their generator, then move (as ``sample_mask_sizes``): under a user's
    ``torch.set_default_device("cuda")`` they drew on the GPU instead, from another stream than their
    generator's. "meta" stands in for the GPU: the old draws failed there, copying out of a meta
    tensor. The CPU results are those the draws gave before they named the CPU."""
    kind = torch.full((4, 6), INSTANCE)
    kind[:, 0] = SCENE
    link = ID_OFFSET + torch.tensor([0, 0, 1, 1, 2, 2]).repeat(4, 1)
    feats = torch.arange(4 * 6 * 2, dtype=torch.float32).reshape(4, 6, 2)

    def draw(g):
        m = track_masks(link, kind, 0.3, generator=g)
        m0 = track_masks(link, kind, 0.0, generator=g)  # the one-track fallback's draw
        new, to_mask = corrupt_selected(feats, m | m0, kind == INSTANCE, 0.5, 0.3, generator=g)
        return m.int().tolist(), m0.int().tolist(), to_mask.int().tolist(), new[..., 0].int().tolist()

    expected = (
        [[0, 1, 1, 1, 1, 1], [0, 1, 0, 0, 1, 1], [0, 1, 0, 0, 1, 1], [0, 0, 1, 1, 0, 0]],
        [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1], [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]],
        [[0, 0, 1, 1, 1, 1], [0, 1, 0, 0, 0, 1], [0, 1, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0]],
        [[0, 2, 4, 6, 8, 10], [12, 14, 16, 18, 18, 22], [24, 26, 28, 30, 32, 34], [36, 38, 28, 42, 44, 46]],
    )
    assert draw(torch.Generator().manual_seed(3)) == expected
    torch.set_default_device("meta")
    try:
        assert draw(torch.Generator().manual_seed(3)) == expected
        torch.manual_seed(3)  # no generator: the CPU's default one, as on a CPU default device
        assert draw(None) == expected
    finally:
        torch.set_default_device(None)
