import torch

from conftest import _event
from moviessl.checkpoint import arch_spec
from moviessl.tasks.vidsitu.relation import LABELS, PAIR_INDEX, RelationTask, build_relation_model, pair_labels
from moviessl.tasks.vidsitu.srl import build_srl_model
from moviessl.tasks.vidsitu.verb import build_verb_model


def test_relation_label_mapping_and_pairs():
    assert LABELS == ("Causes", "Reaction To", "Enables", "NoRel")
    assert PAIR_INDEX == ((0, 2), (1, 2), (2, 3), (2, 4))
    rec = {ev: _event("v_abcdefghijk_seg_0_10", "push.01") for ev in ("Ev1", "Ev2", "Ev3", "Ev4", "Ev5")}
    rec["Ev1"]["EvRel"], rec["Ev2"]["EvRel"], rec["Ev4"]["EvRel"] = "Enables", "NoRel", "Reaction To"
    # Ev5 has no EvRel -> ignored in the loss; Ev3's (absent by design) is never read
    assert pair_labels(rec) == [2, 3, 1, -100]


def test_relation_submission_repeats_label_per_gt_annotation():
    rec = {ev: {"EvRel": "NoRel"} for ev in ("Ev1", "Ev2", "Ev4", "Ev5")}

    class Split:  # the two attributes RelationTask reads (valid's records carry EvRel)
        records = {"a": [rec] * 4, "b": [rec] * 2}

    train = type(
        "T",
        (),
        {
            "records": {
                "t": [
                    {
                        "Ev1": {"EvRel": "NoRel"},
                        "Ev2": {"EvRel": "NoRel"},
                        "Ev4": {"EvRel": "Causes"},
                        "Ev5": {"EvRel": "NoRel"},
                    }
                ]
            }
        },
    )()
    task = RelationTask({}, train, eval_split=Split())
    assert LABELS[task.majority] == "NoRel"
    e = task._entry(7, "a", [0, 1, 2, 3], [0.5, 0.6, 0.7, 0.8])
    assert e["ann_idx"] == 7 and e["pred_evrels_ev"][1] == ["Reaction To"] * 3 and e["pred_scores_ev"][3] == [0.8] * 3
    assert task.fallback(0, "b", Split())["pred_evrels_ev"] == [["NoRel"] * 2] * 4


def test_relation_uses_the_right_event_pairs():
    torch.manual_seed(0)
    m = build_relation_model(8, dropout=0.0).eval()
    x = torch.randn(2, 5, 8)
    ref = m(x)
    x2 = x.clone()
    x2[:, 0] += 3.0  # Ev1 only enters the (Ev1, Ev3) pair
    out = m(x2)
    assert not torch.allclose(out[:, 0], ref[:, 0]) and torch.allclose(out[:, 1:], ref[:, 1:])


def test_verb_head_shape_and_topk():
    torch.manual_seed(0)
    m = build_verb_model(16, num_verbs=7).eval()
    assert [lin.out_features for lin in m.head if isinstance(lin, torch.nn.Linear)] == [8, 7]  # d -> d/2 -> |verbs|
    scores, idx = m.predict(torch.randn(3, 5, 16))
    assert scores.shape == idx.shape == (3, 5, 5)
    assert (scores[..., :-1] >= scores[..., 1:]).all()


def test_srl_memory_self_sees_only_own_event_unless_txe():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    x2 = x.clone()
    x2[:, 4] += 5.0  # change Ev5 only
    prefix = torch.full((2, 5, 1), 3)
    plain = build_srl_model(16, 40, txd_overrides={"dropout": 0.0}).eval()
    a, _b = plain.predict(x, prefix, 8), plain.predict(x2, prefix, 8)

    def logits(m, xx):
        return m.txd(torch.full((10, 4), 3), m.memory_of(m.encoder(xx)))

    la, lb = logits(plain, x).view(2, 5, 4, -1), logits(plain, x2).view(2, 5, 4, -1)
    assert torch.allclose(la[:, :4], lb[:, :4]) and not torch.allclose(la[:, 4], lb[:, 4])
    assert a.shape[:2] == (2, 5)
    ctx = build_srl_model(
        16,
        40,
        txd_overrides={"dropout": 0.0},
        txe_arch=arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=16, dropout=0.0),
    ).eval()
    la, lb = logits(ctx, x).view(2, 5, 4, -1), logits(ctx, x2).view(2, 5, 4, -1)
    assert not torch.allclose(la[:, 0], lb[:, 0])  # through the TxE, Ev1's decoder sees Ev5's change
    every = build_srl_model(16, 40, memory="all", txd_overrides={"dropout": 0.0}).eval()
    assert every.memory_of(torch.randn(2, 5, 16)).shape == (10, 5, 16)


def test_all_ignored_batch_gives_zero_loss_not_nan():
    m = build_verb_model(8, num_verbs=3)
    loss = m.loss(torch.randn(2, 5, 8), torch.full((2, 5), -100))
    assert loss.item() == 0.0 and loss.requires_grad
    r = build_relation_model(8)
    assert r.loss(torch.randn(2, 5, 8), torch.full((2, 4), -100)).item() == 0.0


def test_srl_memory_self_input_adds_the_events_own_input_beside_its_token():
    torch.manual_seed(0)
    txe = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=16, dim=32, heads=4, dropout=0.0)
    m = build_srl_model(16, 40, memory="self_input", txd_overrides={"dropout": 0.0}, txe_arch=txe).eval()
    m.encoder.set_input_stats(torch.full((16,), 0.5), torch.full((16,), 4.0))
    x = torch.randn(2, 5, 16)
    x2 = x.clone()
    x2[:, 4] += 5.0  # change Ev5 only
    mem, mem2 = m.encode(x), m.encode(x2)
    assert mem.shape == (10, 2, 32)
    tokens = m.encoder(x).flatten(0, 1)
    z = (x - 0.5) / torch.sqrt(torch.tensor(4.0 + 1e-5))  # the TxE's fixed input standardisation
    assert torch.equal(mem[:, 0], tokens)
    assert torch.allclose(mem[:, 1], m.input_skip(z).flatten(0, 1) + m.input_marker, atol=1e-6)
    ev1 = torch.arange(10) % 5 == 0
    assert not torch.allclose(mem[ev1, 0], mem2[ev1, 0])  # Ev1's token sees Ev5 through the TxE...
    assert torch.equal(mem[ev1, 1], mem2[ev1, 1])  # ...its skip only its own input
    y = torch.randint(2, 40, (2, 5, 6))
    m.train()
    m.loss(x, y).backward()
    assert m.input_skip.weight.grad.abs().sum() > 0 and m.input_marker.grad.abs().sum() > 0
    assert m.eval().predict(x, torch.full((2, 5, 1), 3), 8).shape[:2] == (2, 5)


def test_an_empty_verb_id_in_training_is_no_verb_class():
    """A train record with ``VerbID: ""`` became a verb class "" the model could predict."""
    from types import SimpleNamespace

    from moviessl.data.vidsitu import EVENTS
    from moviessl.tasks.vidsitu.verb import VerbTask

    rec = {ev: {"VerbID": "run_(move)" if i else ""} for i, ev in enumerate(EVENTS)}
    task = VerbTask(SimpleNamespace(), SimpleNamespace(records={"v1": [rec]}))
    assert task.verbs == ["run_(move)"]
    assert task.train_target("v1", [rec]).tolist()[0] == task.ignore_index


def test_a_frozen_txe_runs_without_dropout_while_the_head_trains():
    """`txe_lr_scale=0` (the frozen-TxE rows) kept the TxE out of the optimiser but in train mode: its
    dropout noised the tokens the head trained on, which it is scored on clean. Frozen: eval mode
    through Lightning's toggling, so two passes give the same tokens; a TxE fine-tuned at a scale > 0
    still trains with dropout."""
    from moviessl.tasks.base import TaskModule, TaskOptim

    def module(scale):
        txe = arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=16, dropout=0.5)
        m = TaskModule(build_relation_model(16, txe_arch=txe), TaskOptim(lr=1e-3, txe_lr_scale=scale))
        m.setup("fit")
        m.on_train_start()
        m.eval()
        m.train()  # as Lightning's loops toggle it
        return m

    x = torch.randn(2, 5, 16)
    frozen = module(0.0)
    enc = frozen.model.encoder
    assert frozen.model.training and not any(m.training for m in enc.txe.modules())
    assert torch.equal(enc(x), enc(x))
    tuned = module(1.0)
    assert tuned.model.encoder.txe.training
    assert not torch.equal(tuned.model.encoder(x), tuned.model.encoder(x))


def test_pair_majority_and_class_weights_from_hand_counts():
    """The pair-prior baseline was checked only against pair_majority itself (its test computed the
    expected labels with the function the baseline calls), and relation.class_weighted's weights not
    at all. Here both come from hand counts: each pair's most frequent label of the first record
    (ties: the lower class index; a pair without labels: NoRel), and weights total / (4 x count)."""
    from types import SimpleNamespace

    from moviessl.tasks.vidsitu.relation import pair_majority

    def rec(ev1, ev2, ev4, ev5):
        return {"Ev1": {"EvRel": ev1}, "Ev2": {"EvRel": ev2}, "Ev4": {"EvRel": ev4}, "Ev5": {}}

    c, r, e, n = "Causes", "Reaction To", "Enables", "NoRel"
    records = {
        "a": [rec(e, r, c, None)],
        "b": [rec(e, c, n, None), rec(c, c, c, None)],  # only the first record of a segment counts
        "c": [rec(c, r, n, None)],
        "d": [rec(e, c, e, None)],
        "e": [],
    }
    train = SimpleNamespace(records=records)
    # Ev1-Ev3: Enables 3, Causes 1; Ev2-Ev3: Reaction To 2, Causes 2 (tie: Causes, index 0);
    # Ev3-Ev4: NoRel 2, Causes 1, Enables 1; Ev3-Ev5: no label
    assert [LABELS[j] for j in pair_majority(train)] == [e, c, n, n]
    task = RelationTask(SimpleNamespace(class_weighted=True), train)
    # counts over all pairs: Causes 4, Reaction To 2, Enables 4, NoRel 2 (12 labels)
    assert task.counts.tolist() == [4, 2, 4, 2] and LABELS[task.majority] == c
    assert torch.allclose(task.loss_kwargs()["weight"], torch.tensor([12 / 16, 12 / 8, 12 / 16, 12 / 8]))
    assert RelationTask(SimpleNamespace(class_weighted=False), train).loss_kwargs() == {}


def test_verb_vocabulary_is_in_train_frequency_order_and_the_fallback_its_top_five():
    """The verb vocabulary (VidSitu's: frequency order, here ties by name) and the fallback entry of a
    segment without inputs ("the 5 most frequent train verbs") were checked only as a list or an entry
    equal to what the task itself gave: any order passed."""
    from types import SimpleNamespace

    from moviessl.data.vidsitu import EVENTS
    from moviessl.tasks.vidsitu.verb import VerbTask

    def rec(*verbs):
        return {ev: {"VerbID": v} for ev, v in zip(EVENTS, verbs)}

    records = {
        "a": [rec("b.01", "k.01", "c.01", "c.01", "e.01")],
        "b": [rec("c.01", "b.01", "d.01", "f.01", "c.01"), rec("z.01", "z.01", "z.01", "z.01", "z.01")],
        "c": [rec("g.01", "b.01", "e.01", "d.01", "h.01")],
    }
    task = VerbTask(SimpleNamespace(), SimpleNamespace(records=records))
    # c 4, b 3, d 2, e 2, then f g h k once each, ties by name whatever order they were first seen
    # in (a second record's verb, z, is not a train label)
    assert task.verbs == ["c.01", "b.01", "d.01", "e.01", "f.01", "g.01", "h.01", "k.01"]
    fb = task.fallback(3, "s", None)
    assert fb["ann_idx"] == 3 and fb["pred_vbs_ev"] == [["c.01", "b.01", "d.01", "e.01", "f.01"]] * 5
    assert task.train_target("b", records["b"]).tolist() == [0, 1, 2, 4, 0]


def test_verb_and_relation_targets_read_the_first_record_in_file_order():
    """VidSitu's loader (``vidsitu_code/dat_loader.py``) trains verbs and relations on
    ``vsitu_ann_dct[vseg][0]`` alone (``get_vb_data([vid_seg_ann])``: the majority of one record);
    with several records that differ, neither a majority over them nor another record is the target."""
    from types import SimpleNamespace as NS

    from moviessl.tasks.vidsitu.verb import VerbTask

    v = "v_abcdefghijk_seg_0_10"
    evs = ("Ev1", "Ev2", "Ev3", "Ev4", "Ev5")

    def record(verb, rel):
        r = {ev: _event(v, verb) for ev in evs}
        for ev in ("Ev1", "Ev2", "Ev4", "Ev5"):
            r[ev]["EvRel"] = rel
        return r

    recs = [record("push.01", "Causes"), record("talk.01", "NoRel"), record("talk.01", "NoRel")]
    train = NS(records={v: recs})
    verb = VerbTask(NS(), train)
    assert verb.verbs == ["push.01"]  # the vocabulary counts record 0 only
    assert verb.train_target(v, recs).tolist() == [verb.index["push.01"]] * 5
    rel = RelationTask({}, train)
    assert rel.train_target(v, recs).tolist() == [LABELS.index("Causes")] * 4
    assert LABELS[rel.majority] == "Causes" and [LABELS[j] for j in rel.pair_majority] == ["Causes"] * 4


def test_srl_loss_of_a_batch_without_a_target_token_is_a_zero_through_every_parameter():
    """A batch with no kept event (every row pad: unannotated, or every clip failed to decode) raised
    "max(): Expected reduction dim..." in ``SRLDecoder.loss``; under DDP the other processes then waited
    in ``global_mean_share``'s all-reduce. A batch whose events hold only their verb token meaned a
    cross-entropy over nothing (NaN). Both are now a zero through every parameter, as verb and relation
    give, and :meth:`loss_items` is 0 (the DDP factor's share, 0 on this process)."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    for memory in ("self", "all"):
        m = build_srl_model(16, 40, memory=memory, txd_overrides={"dropout": 0.0})
        verb_only = torch.zeros(2, 5, 6, dtype=torch.long)
        verb_only[:, :, 0] = 3
        for y in (torch.zeros(2, 5, 6, dtype=torch.long), verb_only):
            m.zero_grad(set_to_none=True)
            loss = m.loss(x, y)
            assert m.loss_items(y) == 0
            assert loss.requires_grad and loss.item() == 0.0
            loss.backward()
            grads = {n: p.grad for n, p in m.named_parameters()}
            assert all(g is not None and not g.any() for g in grads.values()), grads.keys()


def test_targets_and_batches_are_made_on_the_cpu_whatever_the_default_device(tmp_path):
    """A task's targets, a failed video's grey clips and the collated batch were made on torch's
    default device: under a user's ``torch.set_default_device("cuda")`` (which a forked loader worker
    inherits) on the GPU, which a forked worker cannot start and the loader's pinning refuses. They
    are made on the CPU, the values those made before."""
    from types import SimpleNamespace as NS

    from conftest import VERBS
    from default_device import gpu_like_default_device
    from moviessl.tasks.vidsitu.data import ClipSource, SegmentData, SegmentDataset, collate
    from moviessl.tasks.vidsitu.srl import SRLTask
    from moviessl.tasks.vidsitu.verb import VerbTask

    v = "v_abcdefghijk_seg_0_10"
    evs = ("Ev1", "Ev2", "Ev3", "Ev4", "Ev5")
    recs = [{ev: {**_event(v, list(VERBS)[i % len(VERBS)]), "EvRel": "Causes"} for i, ev in enumerate(evs)}]
    train = NS(records={v: recs})
    cfg = NS(max_len=24, vocab_size=300, min_frequency=1, txd="txd_cpu", txd_overrides={}, memory="self")
    verb, rel, srl = VerbTask(NS(), train), RelationTask({}, train), SRLTask(cfg, train)
    clips = ClipSource([tmp_path / "gone.mp4"] * 2, num_frames=2, stride=1, short_side=8, crop=8)  # fail: grey

    def made():
        ys = [t.train_target(v, recs) for t in (verb, rel, srl)] + [srl.eval_target(v, recs)]
        data = SegmentData([v, v], [0, 1], clips, [ys[2], ys[2]])
        return [*ys, collate([SegmentDataset(data, ignore_fill=-1)[i] for i in range(2)])]

    cpu = made()
    with gpu_like_default_device():
        got = made()
    batch, cpu_batch = got.pop(), cpu.pop()
    assert batch.keys() == cpu_batch.keys() == {"x", "i", "failed", "y"}
    got += batch.values()
    cpu += cpu_batch.values()
    assert all(t.device.type == "cpu" and torch.equal(t, c) for t, c in zip(got, cpu))
