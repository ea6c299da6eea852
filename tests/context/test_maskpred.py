"""MaskPred pieces: mask sampling, Eq. 1 and the L2 variant, max discrepancy, queue use, windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moviessl.context import maskpred as mp
from moviessl.errors import BadInputError
from moviessl.ssl.losses import info_nce_queue, same_source


def test_mask_size_set():
    assert mp.mask_size_set(5, 0.6) == [1, 2, 3]
    assert mp.mask_size_set(5, 0.4) == [1, 2]
    assert mp.mask_size_set(5, 0.1) == [1]
    assert mp.mask_size_set(10, 0.6) == [1, 2, 3, 4, 5, 6]
    assert mp.mask_size_set(5, 0.6, [2, 1, 2]) == [1, 2]
    with pytest.raises(ValueError):
        mp.mask_size_set(5, 0.6, [6])


def test_the_mask_sizes_recorded_are_those_a_full_window_draws():
    """A span always keeps one token of the window visible, so a size of the whole window was never
    drawn; yet ``maskpred.alpha=1`` resolved (and model.pt's meta and the hyper-parameters recorded)
    1..N, and an explicit ``[3, 5]`` at N = 5 was accepted and drew 3 only. The sizes stop at N - 1
    (an explicit N is one line); hyper-parameters saved with N rebuild what those runs drew."""
    from moviessl.context.module import MaskPredModule

    assert mp.mask_size_set(5, 1.0) == [1, 2, 3, 4]
    assert mp.mask_size_set(1, 1.0) == [1] and mp.mask_size_set(1, 0.6, [1]) == [1]
    for sizes in ([3, 5], [5]):
        with pytest.raises(ValueError, match=r"1\.\.4"):
            mp.mask_size_set(5, 0.6, sizes)
    drawn = mp.sample_span_masks(5, mp.mask_size_set(5, 1.0), batch=4000, generator=torch.Generator().manual_seed(0))
    assert set(drawn.sum(1).tolist()) == set(mp.mask_size_set(5, 1.0))
    mod = make_module(overrides=["maskpred.alpha=1.0"])
    assert mod.sizes == mod.hparams["cfg"]["maskpred"]["mask_sizes"] == [1, 2, 3, 4]
    with pytest.raises(BadInputError, match="maskpred.mask_sizes"):
        make_module(overrides=["maskpred.mask_sizes=[3,5]"])
    hp = mod.hparams["cfg"]
    for recorded, built in (([1, 2, 3, 4, 5], [1, 2, 3, 4]), ([3, 5], [3]), ([5], [4])):
        old = {**hp, "maskpred": {**hp["maskpred"], "mask_sizes": recorded}}
        assert MaskPredModule(old, mod.hparams["in_dim"]).sizes == built


def test_span_mask_distribution_sizes_and_starts():
    n, sizes, b = 5, [1, 2, 3], 30000
    g = torch.Generator().manual_seed(0)
    masks = mp.sample_span_masks(n, sizes, batch=b, generator=g)
    m = masks.sum(1)
    # contiguous spans: exactly one 0->1 edge per row
    edges = (masks[:, 1:] & ~masks[:, :-1]).sum(1) + masks[:, 0].long()
    assert torch.all(edges == 1)
    for s in sizes:  # m ~ U{1,2,3}
        assert abs(float((m == s).float().mean()) - 1 / 3) < 0.015
    starts = masks.float().argmax(1)
    for s in sizes:  # start ~ U{0..n-m}
        st = starts[m == s]
        freq = torch.bincount(st, minlength=n).float() / len(st)
        expect = torch.tensor([1 / (n - s + 1) if i <= n - s else 0.0 for i in range(n)])
        assert torch.allclose(freq, expect, atol=0.025), (s, freq)


def test_span_mask_respects_padding():
    pad = torch.zeros(4000, 5, dtype=torch.bool)
    pad[:, 3:] = True  # 3 valid tokens -> m in {1, 2} (one token stays visible)
    masks = mp.sample_span_masks(5, [1, 2, 3], pad=pad, generator=torch.Generator().manual_seed(1))
    assert not (masks & pad).any()
    m = masks.sum(1)
    assert set(m.tolist()) == {1, 2}
    assert abs(float((m == 1).float().mean()) - 0.5) < 0.04
    one = torch.ones(10, 5, dtype=torch.bool)
    one[:, 0] = False  # a single valid token is masked whole
    assert torch.equal(mp.sample_span_masks(5, [1, 2, 3], pad=one), ~one)
    # a set without the small sizes: a short window masks all but one token, never its padding
    for sizes, valid, masked in (([2, 3], 1, 1), ([3], 2, 1), ([3], 3, 2), ([3], 4, 3)):
        pad = torch.arange(5)[None, :].expand(50, 5) >= valid
        masks = mp.sample_span_masks(5, sizes, pad=pad, generator=torch.Generator().manual_seed(0))
        assert not (masks & pad).any() and set(masks.sum(1).tolist()) == {masked}


def test_a_row_of_padding_only_masks_nothing_and_leaves_the_others_draws():
    """A row with no valid token masked position 0, its padding, and scored it."""
    pad = torch.zeros(6, 5, dtype=torch.bool)
    pad[:, 3:] = True
    empty = pad.clone()
    empty[2] = True
    a = mp.sample_span_masks(5, [1, 2], pad=pad, generator=torch.Generator().manual_seed(3))
    b = mp.sample_span_masks(5, [1, 2], pad=empty, generator=torch.Generator().manual_seed(3))
    assert not b[2].any() and not (b & empty).any()
    assert torch.equal(b[[0, 1, 3, 4, 5]], a[[0, 1, 3, 4, 5]])  # the same stream for every other row


def test_infonce_hand_computed():
    pred = torch.tensor([[1.0, 0.0]])
    target = torch.tensor([[0.6, 0.8]])
    queue = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    tau = 0.5
    want = -math.log(math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(0.0) + math.exp(1.0 / tau)))
    got = info_nce_queue(pred, target, queue, tau)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # excluding the second distractor (a copy of the positive's token) removes its term
    want_ex = -math.log(math.exp(1.2) / (math.exp(1.2) + 1.0))
    got_ex = info_nce_queue(pred, target, queue, tau, torch.tensor([7]), torch.tensor([3, 7]))
    assert got_ex.item() == pytest.approx(want_ex, rel=1e-6)
    # two masked tokens: the mean of the two per-token losses
    pred2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target2 = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    l2nd = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(2.0) + math.exp(0.0)))
    assert info_nce_queue(pred2, target2, queue, tau).item() == pytest.approx((want + l2nd) / 2, rel=1e-6)
    # empty queue: only the positive -> zero loss
    assert info_nce_queue(pred, target, queue[:0], tau).item() == pytest.approx(0.0, abs=1e-7)


def test_l2_variant_and_retrieval():
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # (0.4^2 + 0.8^2 + 0) / 2 = 0.4 = mean(2 - 2 cos)
    assert mp.maskpred_l2_loss(pred, target).item() == pytest.approx(0.4)
    queue = torch.tensor([[0.8, 0.6]])
    # token 0: pos 0.6 < 0.8 (miss); token 1: pos 1.0 > 0.6 (hit)
    assert mp.retrieval_accuracy(pred, target, queue) == pytest.approx(0.5)
    # token 0's only distractor is a copy of itself (same id): left out -> a hit
    assert mp.retrieval_accuracy(pred, target, queue, torch.tensor([5, 6]), torch.tensor([5])) == pytest.approx(1.0)
    # a tie is no retrieval ("scores above every distractor"): a collapsed model, whose prediction,
    # target and distractors are all one vector, scores 0, not a perfect 1.0
    same = torch.tensor([[1.0, 0.0]])
    assert mp.retrieval_accuracy(same, same, same.repeat(3, 1)) == 0.0
    # no distractor at all: every token is retrieved (chance 1 / (K + 1) = 1 at K = 0)
    assert mp.retrieval_accuracy(pred, target, queue[:0]) == 1.0


def test_feature_targets_centre_and_projection():
    v = torch.tensor([[3.0, 1.0], [1.0, 1.0]])
    t = mp.feature_targets(v, mean=torch.tensor([1.0, 1.0]))
    assert torch.allclose(t[0], torch.tensor([1.0, 0.0]))
    proj = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    assert torch.allclose(mp.feature_targets(torch.tensor([[1.0, 0.0]]), proj=proj), torch.tensor([[0.0, 1.0]]))


class NeighbourFill(torch.nn.Module):
    """Toy contextualizer: a masked token's output is the mean of its unmasked neighbours."""

    def forward(self, x, mask=None, pad=None):
        if mask is None:
            return x
        left = torch.roll(x, 1, 1)
        right = torch.roll(x, -1, 1)
        fill = (left + right) / 2
        return torch.where(mask[..., None], fill, x)


def test_max_discrepancy_picks_the_surprising_token():
    smooth = torch.tensor([1.0, 0.0, 0.0])
    x = smooth.repeat(2, 5, 1).clone()
    x[0, 2] = torch.tensor([0.0, 1.0, 0.0])  # sample 0: token 2 is the odd one out
    x[1, 3] = torch.tensor([0.0, 0.0, 1.0])  # sample 1: token 3
    d = mp.token_discrepancy(NeighbourFill(), x)
    assert d[0].argmax().item() == 2 and d[1].argmax().item() == 3
    masks = mp.max_discrepancy_masks(NeighbourFill(), x, [1])
    assert masks[0].nonzero().flatten().tolist() == [2]
    assert masks[1].nonzero().flatten().tolist() == [3]
    # a span of 2 must contain the surprising token
    masks2 = mp.max_discrepancy_masks(NeighbourFill(), x, [2])
    assert masks2.sum(1).tolist() == [2, 2] and masks2[0, 2] and masks2[1, 3]
    # padded tokens are never chosen, even when they would be the most "surprising"
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 3:] = True
    masks3 = mp.max_discrepancy_masks(NeighbourFill(), x, [1], pad=pad)
    assert not (masks3 & pad).any() and masks3.sum(1).tolist() == [1, 1]
    pad[1] = True  # a row of padding only masked its position 0
    masks4 = mp.max_discrepancy_masks(NeighbourFill(), x, [1], pad=pad)
    assert masks4.sum(1).tolist() == [1, 0]


# --- module, queue, windows -------------------------------------------------------------------


def sequence_features(num_videos=60, length=5, dim=32, noise=0.05, seed=0, drift=1.0):
    """Videos whose events drift linearly (v_t = a + t*b, a and b per video): a masked event is
    predictable from its neighbours, never from itself, and every event is distinct."""
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float32)[:, None] - length // 2
    feats = []
    for _ in range(num_videos):
        a, b = rng.normal(size=(2, 1, dim))
        feats.append((a + drift * t * b + noise * rng.normal(size=(length, dim))).astype(np.float32))
    return feats


def write_vidsitu_folder(root, feats, prefix="v_"):
    root.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(feats):
        np.save(root / f"{prefix}{i:04d}_feats.npy", f)
    return root


def make_module(in_dim=32, overrides=()):
    from moviessl.config import load_config
    from moviessl.context.module import MaskPredModule

    cfg = load_config(
        "context", "cpu", ["maskpred.queue_size=64", "maskpred.keys_per_sample=2", "optim.lr=2e-3", *overrides]
    )
    return MaskPredModule(cfg, in_dim)


def test_the_configured_temperature_reaches_the_infonce_loss():
    """maskpred.tau is Eq. 1's temperature; every other module test ran at the default 0.1, so a
    module that scored 0.1 whatever the setting passed them."""
    torch.manual_seed(0)
    mod = make_module(overrides=["maskpred.tau=0.5"])
    pred, target = torch.nn.functional.normalize(torch.randn(2, 6, 32), dim=-1)
    mod.enqueue(
        {"x": torch.randn(4, 5, 32), "pad": torch.zeros(4, 5, dtype=torch.bool), "uid": torch.arange(20).view(4, 5)}
    )
    tuid, keys, kuid = torch.arange(100, 106), mod.queue.get(filled_only=True), mod.queue.get_ids(filled_only=True)
    loss, _ = mod.compute_loss(pred, target, tuid)
    assert loss.item() == pytest.approx(info_nce_queue(pred, target, keys, 0.5, tuid, kuid).item(), rel=1e-6)
    assert loss.item() != pytest.approx(info_nce_queue(pred, target, keys, 0.1, tuid, kuid).item(), rel=1e-3)


def test_the_target_projection_is_drawn_on_the_cpu_whatever_the_default_device():
    """``maskpred.target_dim``'s fixed projection was drawn with its CPU generator on torch's default
    device: under a user's ``torch.set_default_device("cuda")`` the module could not be built. It is
    drawn on the CPU and placed with the module's parameters, the CPU values those drawn before."""
    from default_device import gpu_like_default_device

    m = make_module(overrides=["maskpred.target_dim=8"])
    g = torch.Generator().manual_seed(0)
    assert torch.equal(m.target_proj, torch.randn(32, 8, generator=g) / math.sqrt(8))
    with gpu_like_default_device():
        m = make_module(overrides=["maskpred.target_dim=8"])
    assert m.target_proj.device.type == next(m.head.parameters()).device.type == "meta"


def test_queue_use_and_exclusion(tmp_path):
    from moviessl.context.windows import FeatureWindows
    from moviessl.features.store import FeatureStore

    torch.manual_seed(0)
    ds = FeatureWindows([FeatureStore(write_vidsitu_folder(tmp_path / "f", sequence_features(12)))], window=5)
    batch = {k: torch.stack([ds[i][k] for i in range(8)]) for k in ("x", "pad", "uid")}
    mod = make_module()
    assert mod.queue.get(filled_only=True).shape == (0, 32)  # nothing but real targets is ever a distractor
    mod.enqueue(batch)
    keys, quid = mod.queue.get(filled_only=True), mod.queue.get_ids(filled_only=True)
    assert keys.shape == (16, 32) and int(mod.queue.num_enqueued) == 16  # keys_per_sample * batch
    # queued rows are the targets of real tokens of the batch, with their token ids
    tgt = mod.targets(batch["x"].reshape(-1, 32))
    uids = batch["uid"].reshape(-1)
    for k, u in zip(keys, quid):
        j = int((uids == u).nonzero()[0])
        assert torch.allclose(k, tgt[j], atol=1e-6)
    # copies of a positive's own token are left out of its distractors
    masks = torch.zeros(8, 5, dtype=torch.bool)
    masks[:, 1] = True
    pred, target, tuid, _ = mod.masked_predictions(batch, masks)
    loss, _ = mod.compute_loss(pred, target, tuid)
    keep = ~same_source(tuid, quid)
    manual = torch.stack(
        [info_nce_queue(pred[i : i + 1], target[i : i + 1], keys[keep[i]], 0.1) for i in range(8)]
    ).mean()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    # FIFO: once full, the oldest rows are overwritten
    for _ in range(5):
        mod.enqueue(batch)
    assert mod.queue.get(filled_only=True).shape == (64, 32)


def test_a_short_window_in_the_batch_does_not_make_the_others_enqueue_a_token_twice():
    """A window with fewer real tokens than ``keys_per_sample`` switched the whole batch to drawing
    with replacement: full windows enqueued one token twice (a distractor counted twice), and padded
    slots kept a small weight. Now only the short window repeats, and never draws padding."""
    torch.manual_seed(0)
    mod = make_module(overrides=["maskpred.keys_per_sample=3"])
    x = torch.randn(2, 5, 32)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 2:] = True  # window 1 has two real tokens
    uid = torch.arange(10).reshape(2, 5).masked_fill(pad, -1)
    seen = []
    mod.queue.enqueue = lambda keys, ids: seen.append(ids)
    for _ in range(40):
        mod.enqueue({"x": x, "pad": pad, "uid": uid})
        full, short = seen[-1][:3].tolist(), seen[-1][3:].tolist()
        assert len(set(full)) == 3 and set(full) <= set(range(5))
        assert set(short) <= {5, 6}


def test_corrupt_selected_shares_and_candidates():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, 8)
    pad = torch.zeros(60, 5, dtype=torch.bool)
    pad[:, 4] = True  # a padded slot is never a swap source
    x[pad] = 1e3
    selected = (torch.rand(60, 5, generator=g) < 0.6) & ~pad
    new, to_mask = mp.corrupt_selected(x, selected, ~pad, 0.5, 0.3, generator=g)
    n = selected.sum().item()
    assert (to_mask & ~selected).sum() == 0 and abs(to_mask.sum().item() / n - 0.5) < 0.08
    changed = (new != x).any(-1)
    assert (changed & ~selected).sum() == 0  # outside the span nothing changes
    swapped = changed & ~to_mask
    assert abs(swapped.sum().item() / n - 0.3) < 0.08  # the rest (~0.2) keep their own feature
    assert (new[swapped].abs() < 1e2).all()  # swaps come from real tokens only
    pool = x[~pad & ~to_mask]
    assert all((pool == row).all(-1).any() for row in new[swapped])


def test_maskpred_span_corruption(tmp_path):
    """replace = 1 (the paper) feeds [MASK] at the whole span; replace = swap = 0 feeds the span
    unchanged, still scored; validation masks the whole span whatever the setting."""
    from moviessl.context.windows import FeatureWindows
    from moviessl.features.store import FeatureStore

    ds = FeatureWindows([FeatureStore(write_vidsitu_folder(tmp_path / "f", sequence_features(12)))], window=5)
    batch = {k: torch.stack([ds[i][k] for i in range(8)]) for k in ("x", "pad", "uid")}
    span = torch.zeros(8, 5, dtype=torch.bool)
    span[:, 1:3] = True
    outputs = {}
    for replace in (1.0, 0.0):
        torch.manual_seed(0)
        mod = make_module(overrides=[f"maskpred.replace={replace}", "maskpred.swap=0.0"]).eval()
        mod.sample_masks = lambda x, pad: span
        pred, target, _, masks = mod.masked_predictions(batch)
        assert torch.equal(masks, span) and pred.shape[0] == target.shape[0] == int(span.sum())
        outputs[replace] = pred
        with torch.no_grad():
            masked_in = mod.head(mod.txe(batch["x"], mask=span, pad=batch["pad"])[span])
            plain_in = mod.head(mod.txe(batch["x"], mask=None, pad=batch["pad"])[span])
        assert torch.allclose(pred, masked_in if replace == 1.0 else plain_in, atol=1e-6)
        val_pred, *_ = mod.masked_predictions(batch, span)
        assert torch.allclose(val_pred, masked_in, atol=1e-6)
    assert not torch.allclose(outputs[1.0], outputs[0.0])
    with pytest.raises(BadInputError):
        make_module(overrides=["maskpred.replace=0.8", "maskpred.swap=0.3"])
    # hyper-parameters saved before the option existed load as the paper's whole-span masking
    from moviessl.context.module import MaskPredModule

    hp = make_module(overrides=["maskpred.replace=0.8", "maskpred.swap=0.1"]).hparams
    before = {k: v for k, v in hp["cfg"]["maskpred"].items() if k not in ("replace", "swap")}
    old_cfg = {**hp["cfg"], "maskpred": before}
    old = MaskPredModule(old_cfg, hp["in_dim"])
    assert (old.replace, old.swap) == (1.0, 0.0)
    # ... and saved before the TxE layer settings, as the GELU / dropout-everywhere TxE they trained
    small = ["model.txe=txe_paper", "model.txe_overrides.dim=32", "model.txe_overrides.mlp_dim=64"]
    paper = make_module(overrides=small).hparams
    layers = ("activation", "attn_dropout", "ffn_dropout")
    ov = {k: v for k, v in paper["cfg"]["model"]["txe_overrides"].items() if k not in layers}
    old = MaskPredModule({**paper["cfg"], "model": {**paper["cfg"]["model"], "txe_overrides": ov}}, hp["in_dim"])
    assert isinstance(old.txe.blocks[0].mlp[1], torch.nn.GELU) and old.txe.blocks[0].attn.dropout == 0.1
    new = MaskPredModule(paper["cfg"], hp["in_dim"])
    assert isinstance(new.txe.blocks[0].mlp[1], torch.nn.ReLU)


def test_windows_token_stride_and_padding(tmp_path):
    from moviessl.context.windows import FeatureWindows
    from moviessl.features.store import FeatureStore
    from moviessl.utils.io import atomic_write_json

    root = tmp_path / "long"
    root.mkdir()
    f = np.arange(20 * 4, dtype=np.float32).reshape(20, 4)  # 20 events at 1-s stride, row i = 4i..4i+3
    np.save(root / "a_feats.npy", f)
    np.save(root / "b_feats.npy", f[:6])
    atomic_write_json(
        root / "index.json",
        {
            "stride_s": 1.0,
            "dim": 4,
            "videos": {"a": {"num_events": 20, "status": "ok"}, "b": {"num_events": 6, "status": "ok"}},
        },
    )
    store = FeatureStore(root)
    ds = FeatureWindows([store], window=5, token_stride_s=2.0, random_start=True)
    np.random.seed(0)
    starts = set()
    for _ in range(200):
        it = ds[0]
        rows = it["x"][:, 0].numpy() / 4
        assert not it["pad"].any()
        assert np.all(np.diff(rows) == 2)  # every 2nd event of 1-s features = 2-s tokens
        starts.add(int(rows[0]))
        assert torch.equal(it["uid"], torch.from_numpy(rows.astype(np.int64)))
    assert starts == set(range(0, 20 - 8))  # all valid starts are drawn
    short = FeatureWindows([store], window=5, token_stride_s=2.0, random_start=False)[1]
    assert short["pad"].tolist() == [False, False, False, True, True]  # 6 events at step 2 -> 3 tokens + 2 padded
    assert short["uid"][:3].tolist() == [20, 22, 24]  # ids continue after video a's 20 events
    with pytest.raises(BadInputError, match="multiple"):
        FeatureWindows([store], window=5, token_stride_s=1.5)


def test_windows_of_a_short_video_visit_every_event_at_a_coarser_token_stride(tmp_path):
    """A video shorter than a window's span ((N - 1) k + 1 events) was always read from its first
    event: at 3-s tokens of 1-s features a 10-s clip gave events 0, 3, 6, 9 only, and the other six
    were never a token, a target or a distractor. Each of the k lattices is now drawn."""
    from moviessl.context.windows import FeatureWindows
    from moviessl.features.store import FeatureStore
    from moviessl.utils.io import atomic_write_json

    root = tmp_path / "f"
    root.mkdir()
    sizes = {"a": 10, "b": 12, "c": 5, "d": 1}
    for vid, n in sizes.items():
        np.save(root / f"{vid}_feats.npy", np.arange(n * 4, dtype=np.float32).reshape(n, 4))
    videos = {vid: {"num_events": n, "status": "ok"} for vid, n in sizes.items()}
    atomic_write_json(root / "index.json", {"stride_s": 1.0, "dim": 4, "videos": videos})
    store = FeatureStore(root)
    np.random.seed(0)
    for stride, k in ((2.0, 2), (3.0, 3)):
        ds = FeatureWindows([store], window=5, token_stride_s=stride)
        for j, (_, vid, n, offset) in enumerate(ds.videos):
            seen = set()
            for _ in range(100):
                it = ds[j]
                uid = it["uid"][~it["pad"]].numpy() - offset
                assert (np.diff(uid) == k).all() and it["pad"].tolist() == sorted(it["pad"].tolist())
                seen |= set(uid.tolist())
            assert seen == set(range(n)), (vid, stride)


def test_windows_leave_out_a_damaged_stretch(tmp_path):
    """Events extract lists as missing (zero rows) were served as real tokens, scored as targets,
    queued as distractors (all alike) and counted in the TxE's input statistics; a validation set
    numbered its events as the training set's, so unrelated training events were dropped from its
    queue as copies of the positive."""
    from moviessl.context.windows import FeatureWindows
    from moviessl.features.store import FeatureStore
    from moviessl.utils.io import atomic_write_json

    root = tmp_path / "f"
    root.mkdir()
    f = np.arange(1, 31, dtype=np.float32)[:, None].repeat(4, 1)  # row i holds i + 1
    f[8:20] = 0.0
    np.save(root / "a_feats.npy", f)
    np.save(root / "b_feats.npy", np.zeros((4, 4), np.float32))
    videos = {"a": {"num_events": 30, "status": "ok", "missing": [[8, 20]]}}
    videos["b"] = {"num_events": 4, "status": "ok", "missing": [[0, 4]]}
    atomic_write_json(root / "index.json", {"stride_s": 2.0, "dim": 4, "videos": videos})
    store = FeatureStore(root)
    ds = FeatureWindows([store], window=5, random_start=True)
    assert [v[1] for v in ds.videos] == ["a"] and ds.num_bad == 1  # b has no undamaged event
    np.random.seed(0)
    starts = set()
    for _ in range(300):
        it = ds[0]
        rows = it["x"][:, 0].numpy()
        assert not it["pad"].any() and (rows > 0).all()
        assert it["uid"].tolist() == (rows - 1).astype(int).tolist()
        starts.add(int(rows[0] - 1))
    assert starts == set(range(0, 4)) | set(range(20, 26))  # within either stretch, each start drawn
    mean, var = ds.feature_stats()
    valid = np.r_[1:9, 21:31].astype(np.float64)
    np.testing.assert_allclose(mean, valid.mean(), rtol=1e-6)
    np.testing.assert_allclose(var, valid.var(), rtol=1e-5)
    fixed = FeatureWindows([store], window=5, random_start=False)
    assert fixed[0]["uid"].tolist() == [22, 23, 24, 25, 26]  # the middle of the longest stretch
    val = FeatureWindows([store], window=5, random_start=False, uid_base=30)
    assert val[0]["uid"].tolist() == [52, 53, 54, 55, 56]


def test_maskpred_learns_to_fill_in(tmp_path):
    """A few hundred steps on predictable sequences: retrieval accuracy far above a random TxE."""
    from moviessl.context.windows import FeatureWindows
    from moviessl.features.store import FeatureStore

    torch.manual_seed(0)
    np.random.seed(0)
    store = FeatureStore(write_vidsitu_folder(tmp_path / "f", sequence_features(128, dim=16, drift=0.4)))
    ds = FeatureWindows([store], window=5)
    mod = make_module(
        in_dim=16,
        overrides=[
            "maskpred.queue_size=256",
            "model.txe_overrides.dim=64",
            "model.txe_overrides.mlp_dim=128",
            "model.txe_overrides.depth=2",
            "model.txe_overrides.dropout=0.0",
        ],
    )
    mod.set_target_mean(ds.feature_mean())
    opt = torch.optim.AdamW(list(mod.txe.parameters()) + list(mod.head.parameters()), lr=3e-3)
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, drop_last=True)

    def evaluate():
        mod.eval()
        batch = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ("x", "pad", "uid")}
        masks = mp.sample_span_masks(5, mod.sizes, pad=batch["pad"], generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            pred, target, tuid, _ = mod.masked_predictions(batch, masks)
            _, acc = mod.compute_loss(pred, target, tuid)
        mod.train()
        return acc

    for batch in list(loader) * 2:  # fill the queue with real targets
        mod.enqueue(batch)
    before = evaluate()
    losses = []
    for _ in range(20):
        for batch in loader:
            pred, target, tuid, _ = mod.masked_predictions(batch)
            loss, _ = mod.compute_loss(pred, target, tuid)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mod.enqueue(batch)
            losses.append(loss.item())
    after = evaluate()
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0
    # chance is 1/257; the untrained TxE is at chance, the trained one fills in a large fraction
    assert before < 0.05 and after > 0.25, (before, after)


def test_txe_layer_settings_reach_the_pretrained_txe():
    """The TxE's layer settings are preset values with dotted overrides like its width."""
    from moviessl.config import load_config
    from moviessl.context.module import txe_kwargs
    from moviessl.models.txe import build_txe

    paper = build_txe("txe_paper", in_dim=8, **txe_kwargs(load_config("context", "paper", {})))
    assert isinstance(paper.blocks[0].mlp[1], torch.nn.ReLU) and paper.blocks[0].attn.dropout == 0.0
    cfg = load_config(
        "context", "cpu", {"model.txe_overrides.activation": "relu", "model.txe_overrides.attn_dropout": 0}
    )
    txe = build_txe(cfg.model.txe, in_dim=8, **txe_kwargs(cfg))
    assert isinstance(txe.blocks[0].mlp[1], torch.nn.ReLU) and txe.blocks[0].attn.dropout == 0.0
    assert txe.blocks[0].mlp[2].p == 0.1  # ffn_dropout not overridden: the preset's (its dropout)


def test_validation_sums_stay_off_mps(tmp_path):
    """MPS has no float64 (torch: 'Cannot convert a MPS Tensor to float64 dtype'): the validation
    sums were made on the module's device, so `pretrain-context` under `trainer.accelerator: auto`
    on an Apple-silicon Mac failed at its first validation. They are held on the CPU there, with the
    same values (no MPS here: any tensor made on it fails, as the float64 one does on a Mac)."""
    from moviessl.context.windows import FeatureWindows
    from moviessl.features.store import FeatureStore

    torch.manual_seed(0)
    ds = FeatureWindows([FeatureStore(write_vidsitu_folder(tmp_path / "f", sequence_features(12)))], window=5)
    batch = {k: torch.stack([ds[i][k] for i in range(8)]) for k in ("x", "pad", "uid")}
    sums = []
    for device in ("cpu", "mps"):
        torch.manual_seed(0)
        mod = make_module()
        mod._device = torch.device(device)  # what Lightning's move to the accelerator records
        mod.on_validation_epoch_start()
        mod.validation_step(batch, 0)
        sums.append(mod._val_sums)
    assert sums[1].device.type == "cpu" and sums[1].dtype == torch.float64
    assert torch.equal(sums[0], sums[1]) and sums[0][2] > 0


def test_the_l2_and_max_discrepancy_options_reach_the_module():
    """maskpred.loss=l2 and maskpred.sampling=max_discrepancy (Table 2's rows) were checked only as
    echoed in the checkpoint's meta: a module scoring Eq. 1 and placing spans uniformly whatever they
    said passed. The loss is the L2 one, and the spans those of the largest discrepancy, measured on
    the TxE in eval mode (then put back in training)."""
    torch.manual_seed(0)
    mod = make_module(overrides=["maskpred.loss=l2", "maskpred.sampling=max_discrepancy", "maskpred.mask_sizes=[1]"])
    pred, target = torch.nn.functional.normalize(torch.randn(2, 6, 32), dim=-1)
    mod.enqueue(
        {"x": torch.randn(4, 5, 32), "pad": torch.zeros(4, 5, dtype=torch.bool), "uid": torch.arange(20).view(4, 5)}
    )
    loss, _ = mod.compute_loss(pred, target, torch.arange(6))
    assert loss.item() == pytest.approx(mp.maskpred_l2_loss(pred, target).item())
    assert loss.item() != pytest.approx(info_nce_queue(pred, target, mod.queue.get(filled_only=True), 0.1).item())
    x, pad = torch.randn(8, 5, 32), torch.zeros(8, 5, dtype=torch.bool)
    mod.train()
    masks = [mod.sample_masks(x, pad) for _ in range(4)]
    assert mod.txe.training
    want = mp.max_discrepancy_masks(mod.txe.eval(), x, [1], pad)
    assert all(torch.equal(m, want) for m in masks) and want.sum(1).tolist() == [1] * 8
    uniform = make_module(overrides=["maskpred.mask_sizes=[1]"])
    assert not all(torch.equal(uniform.sample_masks(x, pad), want) for _ in range(4))


@pytest.mark.parametrize("loss", ["infonce", "l2"])
def test_the_first_step_logs_no_retrieval_or_infonce_point_of_an_empty_queue(tmp_path, loss):
    """With the queue still empty (a run's first step) there is no distractor: InfoNCE over the
    positive alone is 0 with no gradient, and every token scores above no distractor, so the first
    logged point of a curve read train/loss 0 and train/retrieval_acc 1.0 -- a perfect start of no
    model. Those points wait for a distractor; the step's loss itself is unchanged."""
    from moviessl.context.windows import FeatureWindows
    from moviessl.features.store import FeatureStore

    torch.manual_seed(0)
    ds = FeatureWindows([FeatureStore(write_vidsitu_folder(tmp_path / "f", sequence_features(12)))], window=5)
    batch = {k: torch.stack([ds[i][k] for i in range(8)]) for k in ("x", "pad", "uid")}
    mod = make_module(overrides=[f"maskpred.loss={loss}"]).eval()  # eval: no dropout, the same pass twice
    logged = []
    mod.log = lambda name, value, **kw: logged.append((name, float(torch.as_tensor(value).detach())))
    masks = torch.zeros(8, 5, dtype=torch.bool)
    masks[:, 2] = True
    mod.sample_masks = lambda x, pad: masks
    pred, target, tuid, _ = mod.masked_predictions(batch, masks)
    expected, _ = mod.compute_loss(pred, target, tuid)  # the empty queue's loss, as trained on
    first = mod.training_step(batch, 0)
    assert torch.equal(first, expected)  # what the optimiser gets is as before
    names = dict(logged)
    assert "train/retrieval_acc" not in names and "train/mask_size" in names
    if loss == "infonce":
        assert first.item() == 0.0 and "train/loss" not in names
    else:
        assert names["train/loss"] == pytest.approx(first.item())
    logged.clear()
    second = mod.training_step(batch, 1)  # the first step's targets are the distractors now
    names = dict(logged)
    assert names["train/loss"] == pytest.approx(second.item()) and 0.0 <= names["train/retrieval_acc"] <= 1.0
    if loss == "infonce":
        assert second.item() > 0.0


def test_the_logged_hyperparameters_hold_the_mask_sizes_trained_with(tmp_path):
    """logs/hparams.yaml (the module's hyper-parameters) kept ``mask_sizes: null`` where model.pt's
    meta records the sizes the run drew from, 1..floor(alpha x window); built again from them (a
    Lightning checkpoint's hyper-parameters), the same sizes."""
    from moviessl.context.module import MaskPredModule

    mod = make_module()
    assert mod.cfg.maskpred.mask_sizes is None  # the config as given stays unset
    assert mod.hparams["cfg"]["maskpred"]["mask_sizes"] == mod.sizes == [1, 2, 3]
    again = MaskPredModule(mod.hparams["cfg"], mod.hparams["in_dim"])
    assert again.sizes == mod.sizes
    chosen = make_module(overrides=["maskpred.mask_sizes=[3, 1]"])
    assert chosen.hparams["cfg"]["maskpred"]["mask_sizes"] == chosen.sizes == [1, 3]


def test_mask_sizes_of_cpu_windows_are_drawn_on_the_cpu_whatever_the_default_device():
    """The allowed sizes were made on torch's default device and copied to the windows': under a
    user's ``torch.set_default_device("cuda")`` a round trip through the GPU, and under a meta default
    device no copy at all. The sizes drawn are those drawn without the setting."""
    from default_device import gpu_like_default_device

    lengths = torch.tensor([5, 3, 1, 4])
    want = mp.sample_mask_sizes(lengths, [1, 2, 3], torch.Generator().manual_seed(0))
    with gpu_like_default_device():
        got = mp.sample_mask_sizes(lengths, [1, 2, 3], torch.Generator().manual_seed(0))
    assert got.device.type == "cpu" and torch.equal(got, want)


def test_whole_videos_are_held_out_from_twenty_videos_on():
    """``split_ids`` holds out ``val_fraction`` of the videos from MIN_VIDEOS_TO_HOLD_OUT (20) videos
    on, none below: 20 videos at 0.1 give two, 19 none; the two sets are disjoint and cover them."""
    from moviessl.context.windows import MIN_VIDEOS_TO_HOLD_OUT, split_ids

    assert MIN_VIDEOS_TO_HOLD_OUT == 20
    ids = [(0, f"v{i}") for i in range(20)]
    train, val = split_ids(ids, 0.1, seed=3)
    assert len(val) == 2 and len(train) == 18 and sorted(train + val) == sorted(ids)
    assert split_ids(ids[:19], 0.1, seed=3) == (ids[:19], [])


def test_holding_out_never_leaves_no_video_to_train_on():
    """A data.val_fraction below 1 (the config's range) that rounds to every video, 0.98 of 20,
    held all of them out: the training set was empty and FeatureWindows said "no usable feature
    files" of a folder whose files are all fine. One video is left to train on; the videos a
    fraction that leaves some held out are the same as before."""
    from moviessl.context.windows import split_ids

    ids = [(0, f"v{i}") for i in range(20)]
    train, val = split_ids(ids, 0.98, seed=3)
    assert len(train) == 1 and len(val) == 19 and sorted(train + val) == sorted(ids)
    assert split_ids(ids, 0.95, seed=3)[1] == val  # 19 of 20: the first 19 of the same draw
