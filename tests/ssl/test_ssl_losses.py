import math

import torch
import torch.nn.functional as F

from moviessl.ssl.heads import MoDistHead, ProjectionHead
from moviessl.ssl.losses import info_nce_pairs, info_nce_queue


def _hand_nt_xent(z1, z2, tau, hard=None, hard_for=None):
    z = torch.cat([z1, z2]).tolist()
    h = [] if hard is None else hard.tolist()
    rows = None if hard_for is None else hard_for.tolist()
    n = len(z1)
    total = [0.0, 0.0]
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        dots = [sum(a * b for a, b in zip(z[i], z[j])) / tau for j in range(2 * n)]
        denom = sum(math.exp(dots[j]) for j in range(2 * n) if j != i)
        denom += sum(math.exp(sum(a * b for a, b in zip(z[i], hj)) / tau) for j, hj in enumerate(h)
                     if rows is None or rows[j] == i)
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


def test_heads_shapes_and_norm():
    h = ProjectionHead(32, hidden_dim=16, out_dim=8, num_hidden=3)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in h.modules()) == 3
    out = h(torch.randn(4, 32))
    assert out.shape == (4, 8) and torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    m = MoDistHead(32, hidden_dim=16, out_dim=8)
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in m.modules())
    assert torch.allclose(m(torch.randn(3, 32)).norm(dim=1), torch.ones(3), atol=1e-5)


def _mean_pairwise_cos(z):
    z = z.detach()
    s = z @ z.t()
    n = z.shape[0]
    return float((s.sum() - s.diagonal().sum()) / (n * (n - 1)))


def test_bn_heads_remove_the_batch_common_component():
    # inputs dominated by one shared direction (what a young backbone produces): without an output
    # BN the embeddings all point the same way; with it they spread out (the cpu preset's fix)
    torch.manual_seed(0)
    x = 5.0 + 0.05 * torch.randn(32, 16)
    plain = ProjectionHead(16, hidden_dim=32, out_dim=8, num_hidden=2)
    with torch.no_grad():
        plain.net[-1].bias.fill_(1.0)
    assert _mean_pairwise_cos(plain(x)) > 0.9
    obn = ProjectionHead(16, hidden_dim=32, out_dim=8, num_hidden=2, out_bn=True)
    assert isinstance(obn.net[-1], torch.nn.BatchNorm1d) and obn.net[-2].bias is None
    assert abs(_mean_pairwise_cos(obn(x))) < 0.2
    m = MoDistHead(16, hidden_dim=32, out_dim=8, bn=True)
    assert sum(isinstance(y, torch.nn.BatchNorm1d) for y in m.modules()) == 2
    assert abs(_mean_pairwise_cos(m(x))) < 0.2
    assert _mean_pairwise_cos(MoDistHead(16, hidden_dim=32, out_dim=8)(x)) > 0.9
