"""The VidSitu heads' losses, predictions and data path against their definitions, value by value.

A mutation hunt found each of these could change without a test failing (or, for the SRL loss's
padding, the trim of a batch to its longest target and the relation's weighted loss, with only the
two-process test failing, as the loss no longer meaned over ``loss_items``): the ``all`` memory's
own-event marker, decoding to ``srl.max_len``, the -1 that marks an unforced prefix position, a pad
skipped by the parser; the softmax / argmax axes of the verb and relation predictions (as many pairs
as classes), the events each relation pair reads, the relation's class weights on their way from the
task to the loss, each event's own entry in a submission, ``ann_idx`` after skipped segments, the
learning-rate scales. Each expected value is computed from the definition (VidSitu's targets in
``vidsitu_code/dat_loader.py``, the paper's heads), not from the function under test.
"""

from __future__ import annotations

import math

import torch

from moviessl.data.vidsitu import EVENTS
from moviessl.tasks.vidsitu.relation import IGNORE, build_relation_model
from moviessl.tasks.vidsitu.srl import build_srl_model
from moviessl.tasks.vidsitu.verb import build_verb_model


def test_srl_loss_is_the_teacher_forced_cross_entropy_over_each_events_own_target_tokens():
    """Token t+1 of a target is predicted from tokens 0..t and that event's own memory; the verb
    (token 0) is never a target, pads after the end token are none, and every target keeps its end
    token, the longest one's included: the mean over all those tokens of the batch."""
    torch.manual_seed(0)
    m = build_srl_model(16, 40, txd_overrides={"dropout": 0.0}).eval()  # pad 0, eos 1
    x = torch.randn(2, 5, 16)
    lengths = [[5, 3, 0, 7, 4], [2, 6, 0, 3, 8]]  # 8 < the 10 columns: the batch is right-padded
    y = torch.zeros(2, 5, 10, dtype=torch.long)
    for b, row in enumerate(lengths):
        for e, n in enumerate(row):
            if n:
                y[b, e, : n - 1] = torch.randint(2, 40, (n - 1,))
                y[b, e, n - 1] = 1  # eos
    nll, count = 0.0, 0
    with torch.no_grad():
        mem = m.encode(x)  # (B*5, 1, d): event e of clip b at row b*5+e
        for b, row in enumerate(lengths):
            for e, n in enumerate(row):
                if not n:
                    continue
                seq = y[b, e, :n]
                logp = m.txd(seq[None, :-1], mem[b * 5 + e : b * 5 + e + 1]).log_softmax(-1)[0]  # (n-1, V)
                nll -= float(logp[torch.arange(n - 1), seq[1:]].sum())
                count += n - 1
    assert math.isclose(m.loss(x, y).item(), nll / count, rel_tol=1e-5)


def test_srl_loss_trains_the_encoder_under_the_decoder():
    """Table 1's TxE+TxD is fine-tuned with the decoder: the SRL loss reaches the TxE's weights."""
    from moviessl.checkpoint import arch_spec

    torch.manual_seed(0)
    txe = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=16, dropout=0.0)
    m = build_srl_model(16, 40, txd_overrides={"dropout": 0.0}, txe_arch=txe)
    m.encoder.set_input_stats(torch.zeros(16), torch.ones(16))
    y = torch.randint(2, 40, (2, 5, 6))
    y[..., -1] = 1
    m.loss(torch.randn(2, 5, 16), y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.txe.parameters() if p.ndim == 2)


def test_srl_memory_all_marks_each_events_own_token():
    """``memory="all"``: event i's decoder reads the 5 tokens, its own plus the learned marker."""
    torch.manual_seed(0)
    m = build_srl_model(8, 40, memory="all")
    with torch.no_grad():
        m.self_marker.copy_(torch.randn(8))
    tokens = torch.randn(2, 5, 8)
    mem = m.memory_of(tokens).view(2, 5, 5, 8)
    for b in range(2):
        for i in range(5):
            for j in range(5):
                want = tokens[b, j] + (m.self_marker if i == j else 0)
                assert torch.allclose(mem[b, i, j], want)


def test_srl_predictions_are_as_long_as_the_tasks_max_len():
    """``srl.max_len`` (VidSitu: 60) bounds decoding as it bounds the targets, below the TxD's own."""
    torch.manual_seed(0)
    m = build_srl_model(8, 40, txd_overrides={"dropout": 0.0, "max_len": 32}).eval()
    assert m.predict(torch.randn(1, 5, 8), torch.full((1, 5, 1), 3), max_len=6).shape == (1, 5, 6)


def test_verb_predictions_are_the_softmax_over_the_verbs_in_descending_order():
    """VidSitu's submission: per event the top-5 verbs and their probabilities among all verbs."""
    torch.manual_seed(0)
    m = build_verb_model(16, num_verbs=6).eval()
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        logits = m(x).double()
    scores, idx = m.predict(x, k=6)
    for b in range(3):
        for e in range(5):
            z = logits[b, e]
            probs = [math.exp(v) / float(z.exp().sum()) for v in z.tolist()]
            order = sorted(range(6), key=lambda j: -probs[j])
            assert idx[b, e].tolist() == order
            assert torch.allclose(scores[b, e].double(), torch.tensor([probs[j] for j in order]).double(), atol=1e-6)


def test_verb_and_srl_entries_give_each_event_its_own_prediction():
    """A submission's event e holds what the model predicted for event e."""
    from types import SimpleNamespace as NS

    from moviessl.tasks.vidsitu.verb import VerbTask

    verbs = [f"v{j}.01" for j in range(7)]
    task = VerbTask(NS(), NS(records={"s": [{ev: {"VerbID": v} for ev, v in zip(EVENTS, verbs)}]}))
    assert task.verbs == sorted(verbs[:5])
    idx = torch.tensor([[[e, (e + 1) % 5] for e in range(5)]])  # event e: verbs e then e+1
    scores = torch.tensor([[[0.9 - e / 10, 0.05 + e / 100] for e in range(5)]])
    model = NS(predict=lambda x: (scores, idx))
    (entry,) = task.entries(model, None, None, [4])
    assert entry["ann_idx"] == 4
    assert entry["pred_vbs_ev"] == [[task.verbs[e], task.verbs[(e + 1) % 5]] for e in range(5)]
    assert entry["pred_scores_ev"] == [[float(scores[0, e, 0]), float(scores[0, e, 1])] for e in range(5)]


def test_relation_predictions_are_the_softmax_over_the_four_classes_of_each_pair():
    """Per pair, the label is the most probable of the 4 classes and its score that probability;
    as many pairs as classes (4), the wrong axis kept every shape."""
    from types import SimpleNamespace as NS

    from moviessl.tasks.vidsitu.relation import LABELS, RelationTask

    torch.manual_seed(0)
    m = build_relation_model(8).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        logits = m(x).double()
    probs = m.predict(x).double()
    for b in range(2):
        for p in range(4):
            z = logits[b, p].tolist()
            want = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
            assert torch.allclose(probs[b, p], torch.tensor(want, dtype=torch.double), atol=1e-6)
    # rows: pairs, columns: classes -- each pair's class argmax differs from each class's pair argmax
    fixed = torch.tensor([[[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [0.2, 0.2, 0.5, 0.1], [0.05, 0.05, 0.1, 0.8]]])
    task = RelationTask({}, NS(records={}))
    (entry,) = task.entries(NS(predict=lambda x: fixed), None, None, [0], ["s"])
    assert entry["pred_evrels_ev"] == [[LABELS[j]] * 3 for j in (1, 0, 2, 3)]
    assert entry["pred_scores_ev"] == [[float(fixed[0, p].max())] * 3 for p in range(4)]


def test_relation_class_weights_reach_the_training_loss():
    """``relation.class_weighted``: the task's inverse-frequency weights weight each labelled pair's
    cross-entropy, and the mean divides by the summed weights (``F.cross_entropy``'s weighted mean),
    through the training step that every task trains with."""
    from moviessl.tasks.base import TaskModule, TaskOptim

    torch.manual_seed(0)
    m = build_relation_model(8, dropout=0.0)
    x = torch.randn(2, 5, 8)
    y = torch.tensor([[0, IGNORE, 2, 3], [1, 1, IGNORE, 2]])
    w = torch.tensor([0.5, 1.0, 2.0, 4.0])
    with torch.no_grad():
        logp = m(x).double().log_softmax(-1)
    num = den = 0.0
    for b in range(2):
        for p in range(4):
            c = int(y[b, p])
            if c != IGNORE:
                num -= float(w[c]) * float(logp[b, p, c])
                den += float(w[c])
    assert math.isclose(m.loss(x, y, weight=w).item(), num / den, rel_tol=1e-5)
    module = TaskModule(m, TaskOptim(lr=1e-3), {"weight": w})
    step = module.training_step({"x": x, "y": y}, 0)  # no trainer: self.log only warns
    assert math.isclose(step.item(), num / den, rel_tol=1e-5)


def test_each_part_learns_at_the_base_rate_times_its_scale():
    """``backbone_lr_scale`` / ``txe_lr_scale``: a fine-tuned TxE at ``lr`` x its scale, the head at ``lr``."""
    from moviessl.checkpoint import arch_spec
    from moviessl.tasks.base import TaskModule, TaskOptim

    txe = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=8, dropout=0.0)
    module = TaskModule(build_relation_model(8, txe_arch=txe), TaskOptim(lr=1e-3, txe_lr_scale=0.25))
    opt = module.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups if g["params"]}
    assert lrs["txe"] == 2.5e-4 and lrs["head"] == 1e-3


def test_relation_classifies_each_pair_from_its_two_events_and_its_identity():
    """Pair (EvX, EvY) of (Ev1,Ev3), (Ev2,Ev3), (Ev3,Ev4), (Ev3,Ev5): the MLP reads the earlier event's
    token, then the later one's, then (``pair_identity``) the pair's one-hot."""
    torch.manual_seed(0)
    m = build_relation_model(8, dropout=0.0).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        tokens, got = m.encoder(x), m(x)
        for p, (a, b) in enumerate([("Ev1", "Ev3"), ("Ev2", "Ev3"), ("Ev3", "Ev4"), ("Ev3", "Ev5")]):
            one_hot = torch.zeros(2, 4)
            one_hot[:, p] = 1
            feats = torch.cat([tokens[:, EVENTS.index(a)], tokens[:, EVENTS.index(b)], one_hot], dim=-1)
            assert torch.allclose(got[:, p], m.head(feats), atol=1e-6)


def test_verb_prefixes_of_other_lengths_are_padded_with_the_not_forced_marker():
    """Decoding forces ``prefix[:, t]`` where it is >= 0 (``TxD.generate``): beside an unseen verb
    written in several BPE pieces, a one-token verb's prefix is padded with -1 -- in a segment's
    prefixes and across a batch's (``collate``) -- not with a token id, which would be forced into
    the event's output after its verb."""
    from types import SimpleNamespace as NS

    from conftest import VERBS, _event
    from moviessl.tasks.vidsitu.data import collate
    from moviessl.tasks.vidsitu.srl import SRLTask

    vseg = "v_abcdefghijk_seg_0_10"
    rec = {ev: _event(vseg, list(VERBS)[i % len(VERBS)]) for i, ev in enumerate(EVENTS)}
    cfg = NS(max_len=24, vocab_size=300, min_frequency=1, txd="txd_cpu", txd_overrides={}, memory="self")
    task = SRLTask(cfg, NS(records={vseg: [rec]}))
    unseen = {ev: dict(rec[ev]) for ev in EVENTS}
    unseen["Ev3"]["VerbID"] = "unseenverb.01"
    pieces = task.tok.verb_prefix("unseenverb.01")
    assert len(pieces) > 1
    single = [task.tok.tok.token_to_id(rec[ev]["VerbID"]) for ev in EVENTS]
    want = [pieces if ev == "Ev3" else [single[e]] + [-1] * (len(pieces) - 1) for e, ev in enumerate(EVENTS)]
    assert task.eval_target(vseg, [unseen]).tolist() == want
    batch = collate(
        [{"x": torch.zeros(5, 2), "i": i, "y": task.eval_target(vseg, [r])} for i, r in enumerate([unseen, rec])]
    )
    assert batch["y"][0].tolist() == want
    assert batch["y"][1].tolist() == [[single[e]] + [-1] * (len(pieces) - 1) for e in range(5)]


def test_a_pad_in_the_output_is_no_word_of_a_phrase_whatever_the_tokenizer_marks_special():
    """``SRLTokenizer.parse`` skips pads: a user's tokenizer.json whose pad is an ordinary added token
    (not ``special``) wrote '<pad>' into the phrase as a word."""
    import json

    from moviessl.tasks.vidsitu.tokenizer import SRLTokenizer

    trained = SRLTokenizer.train(["the man", "a red box"] * 3, ["push.01"], vocab_size=300, min_frequency=1)
    spec = json.loads(trained.to_str())
    for added in spec["added_tokens"]:
        if added["content"] == "<pad>":
            added["special"] = False
    tok = SRLTokenizer.from_str(json.dumps(spec))
    assert tok.pad_id not in tok.special_ids
    ids = tok.encode_target("push.01", [("Arg0", "the man"), ("Arg1", "a red box")])
    ids = ids[:3] + [tok.pad_id] + ids[3:]
    assert tok.parse(ids) == {"vb_id": "push.01", "Arg0": "the man", "Arg1": "a red box"}


def test_a_segments_ann_idx_is_its_place_in_the_split_when_others_before_it_are_skipped():
    """A submission entry's ``ann_idx`` is the segment's index in the split file (VidSitu's evaluator
    matches it to that segment's annotations); segments skipped before it (no records, a bad
    annotation, no input) must not shift it."""
    from types import SimpleNamespace as NS

    from moviessl.errors import BadInputError
    from moviessl.tasks.vidsitu.data import build_segments

    rec = {"ok": True}
    split = NS(vseg_ids=["a", "b", "c", "d", "e"], records={"a": [rec], "c": [{"ok": False}], "d": [rec], "e": [rec]})

    def target(vseg, recs):
        if not recs[0]["ok"]:
            raise BadInputError(None, "bad")
        return torch.tensor([ord(vseg)])

    def source(vsegs):
        kept = [v for v in vsegs if v != "d"]
        return torch.zeros(len(kept), 5, 2), kept, {"d": "no features"}

    data = build_segments(split, source, target)
    assert data.vsegs == ["a", "e"] and data.ann_idx == [0, 4]
    assert [int(y) for y in data.y] == [ord("a"), ord("e")]
    assert set(data.skipped) == {"b", "c", "d"}


def test_a_part_at_lr_scale_zero_computes_no_gradient():
    """Scale 0 freezes (``TaskModule.setup``, before DDP wraps the model): the frozen TxE gets no
    gradient, which DDP would otherwise reduce at every step; the head still learns."""
    from moviessl.checkpoint import arch_spec
    from moviessl.tasks.base import TaskModule, TaskOptim

    txe = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=8, dropout=0.0)
    module = TaskModule(build_relation_model(8, txe_arch=txe), TaskOptim(lr=1e-3, txe_lr_scale=0.0))
    module.setup("fit")
    module.model.loss(torch.randn(2, 5, 8), torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])).backward()
    assert all(not p.requires_grad and p.grad is None for p in module.model.encoder.txe.parameters())
    assert all(p.grad is not None for p in module.model.head.parameters())
