import math

import torch
import torch.nn.functional as F

from moviessl.ssl.losses import info_nce_pairs, info_nce_queue


def _hand_nt_xent(z1, z2, tau, hard=None, hard_for=None, ids=None):
    z = torch.cat([z1, z2]).tolist()
    src = None if ids is None else ids.tolist() * 2
    h = [] if hard is None else hard.tolist()
    rows = None if hard_for is None else hard_for.tolist()
    n = len(z1)
    total = [0.0, 0.0]
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        dots = [sum(a * b for a, b in zip(z[i], z[j])) / tau for j in range(2 * n)]
        denom = sum(math.exp(dots[j]) for j in range(2 * n) if j != i and (src is None or j == p or src[j] != src[i]))
        denom += sum(
            math.exp(sum(a * b for a, b in zip(z[i], hj)) / tau)
            for j, hj in enumerate(h)
            if rows is None or rows[j] == i
        )
        total[i // n] += -math.log(math.exp(dots[p]) / denom) / n
    return total[0] + total[1]


def test_info_nce_pairs_matches_hand_computation():
    torch.manual_seed(0)
    z1, z2 = F.normalize(torch.randn(3, 5), dim=1), F.normalize(torch.randn(3, 5), dim=1)
    got = info_nce_pairs(z1, z2, tau=0.1).item()
    assert abs(got - _hand_nt_xent(z1, z2, 0.1)) < 1e-4


def test_info_nce_pairs_hard_negatives_match_hand_computation():
    torch.manual_seed(2)
    z1, z2, h = (F.normalize(torch.randn(3, 5), dim=1) for _ in range(3))
    got = info_nce_pairs(z1, z2, tau=0.2, hard_neg=h).item()
    assert abs(got - _hand_nt_xent(z1, z2, 0.2, hard=h)) < 1e-4
    assert got > info_nce_pairs(z1, z2, tau=0.2).item()
    # each hard negative scored by one row only (CVRL: the view that did not make it)
    rows = torch.tensor([3, 1, 5])
    got = info_nce_pairs(z1, z2, tau=0.2, hard_neg=h, hard_for=rows).item()
    assert abs(got - _hand_nt_xent(z1, z2, 0.2, hard=h, hard_for=rows)) < 1e-4


def test_info_nce_pairs_leaves_out_other_pairs_of_the_same_video():
    """The same video twice in a batch (a distributed sampler pads a short epoch with repeats; a bad
    video's stand-in is the next one in the list): its other pair's clips are not negatives."""
    torch.manual_seed(3)
    z1, z2 = F.normalize(torch.randn(4, 5), dim=1), F.normalize(torch.randn(4, 5), dim=1)
    ids = torch.tensor([7, 1, 7, 2])
    got = info_nce_pairs(z1, z2, tau=0.2, ids=ids).item()
    assert abs(got - _hand_nt_xent(z1, z2, 0.2, ids=ids)) < 1e-4
    assert abs(info_nce_pairs(z1, z2, tau=0.2, ids=torch.arange(4)).item() - _hand_nt_xent(z1, z2, 0.2)) < 1e-4
    # two near-copies of one video: without ids each pushes the other away, a large loss; with them
    # the loss is that of the batch without the repeat, up to the small difference of the copies
    d1, d2 = z1.clone(), z2.clone()
    d1[2], d2[2] = F.normalize(z1[0] + 0.01, dim=0), F.normalize(z2[0] + 0.01, dim=0)
    assert info_nce_pairs(d1, d2, tau=0.1).item() > info_nce_pairs(d1, d2, tau=0.1, ids=ids).item() + 1.0


def test_info_nce_pairs_prefers_aligned_views():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(8, 16), dim=1)
    aligned = info_nce_pairs(z, z, tau=0.1)
    random = info_nce_pairs(z, F.normalize(torch.randn(8, 16), dim=1), tau=0.1)
    assert aligned < random
    assert aligned.item() < 0.5  # positives dominate at tau 0.1 for near-orthogonal negatives


def test_info_nce_queue_matches_hand_computation():
    torch.manual_seed(1)
    q, k = F.normalize(torch.randn(2, 4), dim=1), F.normalize(torch.randn(2, 4), dim=1)
    queue = F.normalize(torch.randn(5, 4), dim=1)
    tau = 0.2
    want = 0.0
    for i in range(2):
        pos = math.exp(float(q[i] @ k[i]) / tau)
        neg = sum(math.exp(float(q[i] @ queue[j]) / tau) for j in range(5))
        want += -math.log(pos / (pos + neg)) / 2
    assert abs(info_nce_queue(q, k, queue, tau).item() - want) < 1e-5


def test_info_nce_queue_no_grad_to_keys():
    q = F.normalize(torch.randn(2, 4), dim=1).requires_grad_()
    k = torch.randn(2, 4, requires_grad=True)
    info_nce_queue(q, k, torch.randn(6, 4)).backward()
    assert q.grad is not None and k.grad is None


def test_logits_stay_fp32_under_bf16_autocast():
    """The paper presets train in bf16-mixed; autocast would cast the similarity matmuls to bf16
    (a ~1% change of the loss at tau = 0.1). The losses and the fill-in accuracy run them in fp32."""
    from moviessl.context.maskpred import retrieval_accuracy

    g = torch.Generator().manual_seed(0)
    q, k, n = (F.normalize(torch.randn(s, 128, generator=g), dim=1) for s in (64, 64, 4096))
    z1, z2 = (F.normalize(torch.randn(64, 128, generator=g), dim=1) for _ in range(2))
    ref = (info_nce_queue(q, k, n), info_nce_pairs(z1, z2, gather=False), retrieval_accuracy(q, k, n))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (q @ n.t()).dtype == torch.bfloat16  # what autocast does to a plain matmul
        got = (info_nce_queue(q, k, n), info_nce_pairs(z1, z2, gather=False), retrieval_accuracy(q, k, n))
    assert got[0].dtype == got[1].dtype == torch.float32
    assert torch.allclose(got[0], ref[0], rtol=1e-6) and torch.allclose(got[1], ref[1], rtol=1e-6)
    assert got[2] == ref[2]


def test_embeddings_and_targets_are_unit_length_float32_under_bf16_autocast():
    """CPU autocast normalised the heads' bf16 outputs in bf16 (rows up to 0.4% off unit length,
    the positive logit off by ~0.06 at tau = 0.1) and projected MaskPred's targets in bf16; CUDA
    autocast takes the norm in float32. Embeddings and targets are float32 unit rows on both."""
    from moviessl.context.maskpred import feature_targets
    from moviessl.models.heads import CVRLProjectionHead, MaskPredHead, MoDistProjectionHead

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 48, generator=g)
    heads = (CVRLProjectionHead(48, 64, 32), MoDistProjectionHead(48, 64, 32), MaskPredHead(48, 32))
    v, mean, proj = torch.randn(64, 48, generator=g) + 3, torch.full((48,), 3.0), torch.randn(48, 32, generator=g)
    ref = feature_targets(v, mean, proj)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zs = [h(x) for h in heads]
        t = feature_targets(v, mean, proj)
    for z in (*zs, t):
        assert z.dtype == torch.float32
        assert torch.allclose(z.norm(dim=1), torch.ones(len(z)), atol=1e-5)
    assert torch.allclose(t, ref, atol=1e-6)
