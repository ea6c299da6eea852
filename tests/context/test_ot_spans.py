"""LVU's spans: which spans are scored, the token ids of a span, the token cap, training randomness."""

from __future__ import annotations

import numpy as np

from moviessl.context.ot_spans import (
    EvalSpans,
    RandomSpans,
    SpanPairs,
    SpanVideo,
    event_seconds,
    span_tails,
    span_tokens,
)
from moviessl.data.lvu import VideoInstances
from moviessl.models.object_transformer import END, ID_END, ID_NONE, ID_OFFSET, ID_START, INSTANCE, SCENE, START


def _inst(secs, tracks, shots, dim=3):
    secs = np.asarray(secs)
    return VideoInstances(
        sec=secs,
        shot=np.asarray(shots),
        track=np.asarray(tracks),
        box=np.tile(np.array([[0.2, 0.2, 0.6, 0.7]], np.float32), (len(secs), 1)),
        feat=np.arange(len(secs) * dim, dtype=np.float32).reshape(len(secs), dim),
    )


def test_span_tails_follow_the_reference():
    # token seconds 10..99 with a gap 40..69: tails from 10 + 59 = 69 to 99, each holding a token
    secs = [s for s in range(10, 100) if not 40 <= s < 70]
    v = SpanVideo("v", inst=_inst(secs, [0] * len(secs), [0] * len(secs)))
    assert span_tails(v, 60) == list(range(69, 100))
    secs = [5, 6, 130]  # a span (71-130] holds only 130; (41, 100] would hold nothing
    v = SpanVideo("v", inst=_inst(secs, [0] * 3, [0] * 3))
    tails = span_tails(v, 60)
    assert tails[0] == 64 and 100 not in tails and 129 not in tails and tails[-1] == 130
    short = SpanVideo("s", inst=_inst([3, 4, 20], [0] * 3, [0] * 3))
    assert span_tails(short, 60) == [20]  # shorter than a span: one span ending at the last second
    assert span_tails(SpanVideo("e"), 60) == []
    # a malformed stamp far away costs its own spans, not an array as long as the video's seconds
    v = SpanVideo("v", inst=_inst([5, 6, 10**12], [0] * 3, [0] * 3))
    assert span_tails(v, 60) == [*range(64, 66), *range(10**12, 10**12 + 1)]
    rng = np.random.default_rng(0)  # the same tails as a count of the tokens in every span
    for _ in range(50):
        secs = np.unique(rng.integers(0, 400, int(rng.integers(1, 40))))
        v = SpanVideo("v", inst=_inst(secs, [0] * len(secs), [0] * len(secs)))
        want = [t for t in range(int(secs[0]) + 59, int(secs[-1]) + 1) if ((secs > t - 60) & (secs <= t)).any()]
        assert span_tails(v, 60) == (want or [int(secs[-1])])


def test_pretraining_pairs_leave_out_videos_shorter_than_a_span(caplog):
    """LVU's --same_movie pairs are drawn from complete spans only: a video shorter than one span
    has none and is skipped. It was kept with its one short span, paired with itself (a positive
    the span-compatibility loss gets for free) and drawn as often as a feature film."""
    long = SpanVideo("long", inst=_inst(list(range(0, 70)), [0] * 70, [0] * 70))
    short = SpanVideo("short", inst=_inst([0, 1, 2], [0] * 3, [0] * 3))
    pairs = SpanPairs([short, long], span_s=60)
    assert pairs.keep == [1] and len(pairs) == 11  # long's tails 59..69
    np.random.seed(0)
    assert all(len(pairs[i]["x"]["inst"]) > 10 for i in range(8))  # never the 3-token short film
    with caplog.at_level("WARNING", logger="moviessl"):
        only_short = SpanPairs([short], span_s=60)  # nothing long enough (tiny test films): kept, said
    assert only_short.keep == [0] and "no video is 60 s long" in caplog.text


def test_span_tokens_ids_as_lvu():
    inst = _inst([0, 1, 1, 2, 3], [7, 7, 9, 9, 7], [2, 2, 2, 3, 4])
    v = SpanVideo("v", inst=inst, scene=np.ones((2, 4), np.float32), scene_sec=event_seconds(2))
    t = span_tokens(v, tail=3, span_s=3, halfway=129)  # span (0, 3]: seconds 1..3
    kind = t["kind"]
    assert kind[0] == START and kind[-1] == END
    assert (kind[1:5] == INSTANCE).all() and (kind[5:7] == SCENE).all()  # 4 instances (sec 0 is out), events at 1, 3
    secs = np.array([3, 2, 1, 1, 1, 3])  # instances from the end backwards, then the scene tokens
    assert (t["pos"][1:-1, 0] == secs - 1 + ID_OFFSET).all()  # increasing from the earliest token
    assert (t["pos"][1:-1, 1] == 3 - secs + ID_OFFSET).all()  # decreasing from the latest
    assert (t["pos"][1:-1, 2] == secs - 2 + 129 + ID_OFFSET).all()  # centred on (1 + 3) // 2
    assert (t["pos"][0] == ID_START).all() and (t["pos"][-1] == ID_END).all()
    shots = np.array([4, 3, 2, 2])
    assert (t["shot"][1:5, 0] == shots - 2 + ID_OFFSET).all() and (t["shot"][1:5, 1] == 4 - shots + ID_OFFSET).all()
    # nearest instance to the middle (sec 2) has shot 3
    assert (t["shot"][1:5, 2] == shots - 3 + 129 + ID_OFFSET).all()
    assert (t["shot"][5:7] == ID_NONE).all() and (t["link"][5:7] == ID_NONE).all()
    # eval: track ids in order of first appearance (7 first, from the end backwards)
    assert t["link"][1:5].tolist() == [ID_OFFSET + 0, ID_OFFSET + 1, ID_OFFSET + 0, ID_OFFSET + 1]
    assert np.allclose(t["box"][1, 4], 0.4 * 0.5) and np.allclose(t["box"][5], [0, 0, 1, 1, 1])
    assert np.array_equal(t["inst"][1], inst.feat[4]) and not t["inst"][5:].any()
    assert np.array_equal(t["scene"][5], np.ones(4)) and not t["scene"][1:5].any()


def test_cap_keeps_the_latest_instances_and_training_randomness():
    inst = _inst(np.repeat(np.arange(60), 5), np.tile(np.arange(5), 60), np.zeros(300, int))
    v = SpanVideo("v", inst=inst)
    t = span_tokens(v, tail=59, max_instances=254)
    body = t["pos"][1:-1, 0] - ID_OFFSET
    # 254 = 50 whole seconds (10..59) + 4 boxes of second 9: time ids count from second 9
    assert len(body) == 254 and body.max() == 59 - 9 and (body == 0).sum() == 4
    rng = np.random.default_rng(0)
    a = span_tokens(v, 59, train=True, rng=rng)
    assert not np.allclose(a["box"][1:-1, :4], t["box"][1:-1, :4])  # boxes jittered
    # each side by up to box_jitter (0.2) of the box's width (0.4) or height (0.5)
    d = np.abs(a["box"][1:-1, :4] - t["box"][1:-1, :4])
    bound = 0.2 * np.array([0.4, 0.5, 0.4, 0.5])
    assert (d <= bound + 1e-6).all() and (d.max(0) > 0.9 * bound).all()
    assert sorted(set(a["link"][1:-1].tolist())) == list(range(ID_OFFSET, ID_OFFSET + 5))  # ids permuted, kept distinct
    ds = RandomSpans([v], np.array([2.0], np.float32), length=7)
    assert len(ds) == 7 and ds[0]["y"] == 2.0
    assert not np.allclose(ds[0]["x"]["box"], t["box"])  # a training item is jittered...
    ev = EvalSpans([v])
    assert len(ev) == 1 and ev[0]["i"] == 0
    for k, arr in ev[0]["x"].items():  # ...an evaluation item is the span as it is, track ids in order
        np.testing.assert_array_equal(arr, t[k])


def test_context_batches_are_made_on_the_cpu_whatever_the_default_device():
    """``collate_spans``' labels / indices and ``PaddedForShards``' ``real`` flag were made on torch's
    default device: under a user's ``torch.set_default_device("cuda")`` (which a forked loader worker
    inherits) on the GPU, which a forked worker cannot start and the loader's pinning refuses. They
    are made on the CPU, beside the tokens, the values those made before."""
    import torch

    from default_device import gpu_like_default_device
    from moviessl.context.ot_spans import collate_spans
    from moviessl.context.windows import PaddedForShards

    secs = list(range(10, 40))
    v = SpanVideo("v", inst=_inst(secs, [0] * len(secs), [0] * len(secs)))
    items = [{"x": span_tokens(v, t), "y": np.float32(t / 10), "i": t} for t in (20, 39)]

    def made():
        batch = collate_spans(items)
        padded = PaddedForShards([{"i": torch.zeros(())}] * 3, world=2)
        return [batch["y"], batch["i"], *batch["x"].values(), *(padded[i]["real"] for i in range(4))]

    cpu = made()
    with gpu_like_default_device():
        got = made()
    assert len(got) == len(cpu) and all(t.device.type == "cpu" and torch.equal(t, c) for t, c in zip(got, cpu))


def test_the_centre_shot_is_the_last_of_the_instances_nearest_the_middle():
    """LVU's ``construct_example`` walks the instances from the span's end backwards and keeps the
    shot of the *last* one at the smallest distance from the middle second: of two instances
    equally near it, the earlier one's shot."""
    # seconds 0, 1, 3, 4 (middle 2): 1 and 3 are equally near; walked 4, 3, 1, 0, the last is second 1
    inst = _inst([0, 1, 3, 4], [0, 1, 2, 3], [10, 11, 12, 13])
    t = span_tokens(SpanVideo("v", inst=inst), tail=4, span_s=5, halfway=129)
    shots = np.array([13, 12, 11, 10])  # tokens from the end backwards
    assert (t["shot"][1:-1, 2] == shots - 11 + 129 + ID_OFFSET).all()


def test_training_spans_permute_track_ids_and_jitter_boxes_both_ways():
    """LVU's training examples: track ("link") ids a random permutation per example (``random.sample``),
    the same id for a track's boxes; each box side moved by ``uniform(-1, 1)`` x 0.2 of the box's width
    or height and the area that of the moved box (``get_spatial_encoding``)."""
    inst = _inst(np.repeat(np.arange(10), 5), np.tile(np.arange(5), 10), np.zeros(50, int))
    v = SpanVideo("v", inst=inst)
    plain = span_tokens(v, tail=9, span_s=10)
    rng = np.random.default_rng(0)
    orders, moves = set(), []
    for _ in range(30):
        a = span_tokens(v, 9, span_s=10, train=True, rng=rng)
        link = a["link"][1:-1].reshape(10, 5)  # every second lists the tracks 0..4 in order
        assert (link == link[0]).all() and sorted(link[0].tolist()) == list(range(ID_OFFSET, ID_OFFSET + 5))
        orders.add(tuple(link[0].tolist()))
        b = a["box"][1:-1]
        np.testing.assert_allclose(b[:, 4], (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), rtol=1e-5)
        moves.append(b[:, :4] - plain["box"][1:-1, :4])
    assert len(orders) > 10  # not the first-appearance order every time
    d = np.concatenate(moves)
    bound = 0.2 * np.array([0.4, 0.5, 0.4, 0.5])
    assert (d.min(0) < -0.8 * bound).all() and (d.max(0) > 0.8 * bound).all()
    assert (np.abs(d.mean(0)) < 0.1 * bound).all()  # symmetric about the box as given


def _marked(vid, first, last, value):
    """A video with one box per second from ``first`` to ``last``: feature 0 is ``value``, feature 1
    the box's second."""
    secs = np.arange(first, last + 1)
    inst = _inst(secs, [0] * len(secs), [0] * len(secs))
    inst.feat[:, 0], inst.feat[:, 1] = value, secs
    return SpanVideo(vid, inst=inst)


def test_training_spans_are_uniform_over_all_spans_with_their_videos_label():
    """LVU's ``random.choice(self.spans)``: every span of every training video equally likely (a
    video with nine times the spans is drawn nine times as often), labelled with its own video's label."""
    one = _marked("one", 0, 59, 1.0)  # 60 s: one span
    nine = _marked("nine", 0, 67, 2.0)  # 68 s: spans ending at 59..67
    ds = RandomSpans([one, nine], np.array([5.0, 7.0], np.float32), length=600, span_s=60)
    np.random.seed(0)
    from_one = 0
    for i in range(len(ds)):
        item = ds[i]
        mark = float(item["x"]["inst"][1, 0])
        assert item["y"] == {1.0: 5.0, 2.0: 7.0}[mark]
        from_one += mark == 1.0
    assert 30 <= from_one <= 90  # 1/10 of 600 (a draw by video: 300)


def test_every_span_of_every_scored_video_is_an_item_in_order():
    """Scoring reads every span (LVU's evaluation spans end at every second), in order, each with its
    video's index."""
    a, b = _marked("a", 0, 62, 1.0), _marked("b", 10, 69, 2.0)
    ev = EvalSpans([a, b], span_s=60)
    items = [ev[i] for i in range(len(ev))]
    # the latest token (first after [start]) is the span's last second: a's 59..62, b's 69
    got = [(it["i"], int(it["x"]["inst"][1, 1])) for it in items]
    assert got == [(0, 59), (0, 60), (0, 61), (0, 62), (1, 69)]


def test_a_pretraining_pair_is_two_independent_spans_of_one_video():
    """LVU's ``--same_movie``: ``[random.choice(self.spans[positive_id]) for _ in range(2)]``, two
    draws, so the two spans of a pair usually differ."""
    pairs = SpanPairs([_marked("v", 0, 159, 1.0)], span_s=60)  # 101 spans
    np.random.seed(0)
    ends = [(int(p["x"]["inst"][1, 1]), int(p["x2"]["inst"][1, 1])) for p in (pairs[i] for i in range(20))]
    assert all(59 <= a <= 159 and 59 <= b <= 159 for a, b in ends)
    assert sum(a == b for a, b in ends) < 5  # 1 in 101 by chance


def test_span_time_ids_of_seconds_past_float64s_integers_are_exact():
    """An instance-only span concatenated its int64 seconds with an empty float list, so the
    seconds went through float64: past 2**53 (the readers take seconds up to 2**62) two seconds
    became one and the time ids of a span were wrong."""
    base = 2**53
    v = SpanVideo("v", inst=_inst([base, base + 1], [0, 1], [0, 0]))
    t = span_tokens(v, tail=base + 1, span_s=60)
    assert t["pos"].dtype == np.int64
    assert t["pos"][1:-1, 0].tolist() == [1 + ID_OFFSET, 0 + ID_OFFSET]  # from the end backwards
    assert t["pos"][1:-1, 1].tolist() == [0 + ID_OFFSET, 1 + ID_OFFSET]
