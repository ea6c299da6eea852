"""The projection heads: one generic module, a subclass per paper."""

import torch

from moviessl.models.heads import CVRLProjectionHead, MaskPredHead, MLPHead, MoDistProjectionHead, ProjectionHead


def test_heads_shapes_and_norm():
    h = CVRLProjectionHead(32, hidden_dim=16, out_dim=8, num_hidden=3)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in h.modules()) == 3
    out = h(torch.randn(4, 32))
    assert out.shape == (4, 8) and torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    m = MoDistProjectionHead(32, hidden_dim=16, out_dim=8)
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
    plain = CVRLProjectionHead(16, hidden_dim=32, out_dim=8, num_hidden=2)
    with torch.no_grad():
        plain[-1].bias.fill_(1.0)
    assert _mean_pairwise_cos(plain(x)) > 0.9
    obn = CVRLProjectionHead(16, hidden_dim=32, out_dim=8, num_hidden=2, out_bn=True)
    assert isinstance(obn[-1], torch.nn.BatchNorm1d) and obn[-2].bias is None
    assert abs(_mean_pairwise_cos(obn(x))) < 0.2
    m = MoDistProjectionHead(16, hidden_dim=32, out_dim=8, bn=True)
    assert sum(isinstance(y, torch.nn.BatchNorm1d) for y in m.modules()) == 2
    assert abs(_mean_pairwise_cos(m(x))) < 0.2
    assert _mean_pairwise_cos(MoDistProjectionHead(16, hidden_dim=32, out_dim=8)(x)) > 0.9


def test_generic_head_and_task_heads():
    h = ProjectionHead([torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)])
    assert (h.in_dim, h.out_dim) == (6, 3)
    assert torch.allclose(h(torch.randn(5, 6)).norm(dim=1), torch.ones(5), atol=1e-5)
    mp = MaskPredHead(8, 5)
    assert [type(m).__name__ for m in mp] == ["Linear", "GELU", "LayerNorm", "Linear"] and mp.out_dim == 5
    cls = MLPHead(8, 4, 3, dropout=0.1)
    y = cls(torch.randn(2, 8))
    assert y.shape == (2, 3) and not torch.allclose(y.norm(dim=1), torch.ones(2))  # logits, not normalised
    # VidSitu heads keep their checkpoint keys (0 = first linear, 3 = output linear)
    assert set(cls.state_dict()) == {"0.weight", "0.bias", "3.weight", "3.bias"}
