"""TxE: presets, [MASK] token, padding, fused attention, checkpoint round trip."""

import math

import pytest
import torch
import torch.nn.functional as F

from moviessl.checkpoint import arch_spec, build_from_checkpoint, save_checkpoint
from moviessl.errors import BadInputError
from moviessl.models import TXE_PRESETS, build_txe
from moviessl.models.txe import SelfAttention


@pytest.fixture(params=[False, True], ids=["post_ln", "pre_ln"])
def txe(request):
    torch.manual_seed(0)
    return build_txe("txe_cpu", in_dim=48, norm_first=request.param).eval()


def test_paper_preset_shape():
    p = TXE_PRESETS["txe_paper"]
    assert (p["depth"], p["heads"], p["dim"], p["mlp_dim"]) == (3, 16, 1024, 2048)
    with torch.device("meta"):
        m = build_txe("txe_paper", in_dim=2304)
        assert m(torch.empty(2, 5, 2304)).shape == (2, 5, 1024)
    assert (m.dim, m.in_dim, len(m.blocks)) == (1024, 2304, 3)
    assert m.blocks[0].attn.heads == 16 and m.blocks[0].mlp[0].out_features == 2048


def test_mask_token_hides_masked_inputs(txe):
    x = torch.randn(3, 5, 48)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 1:3] = True
    mask[1, 4] = True
    mask[2, 0] = True
    x2 = x.clone()
    x2[mask] = torch.randn(int(mask.sum()), 48) * 10  # change only the masked inputs
    with torch.no_grad():
        y, y2 = txe(x, mask), txe(x2, mask)
        y_unmasked = txe(x)
        x3 = x.clone()
        x3[0, 0] += 5.0  # an unmasked context token
        y3 = txe(x3, mask)
    assert y.shape == (3, 5, txe.dim)
    assert torch.allclose(y, y2, atol=1e-5)  # masked values never reach the network
    assert not torch.allclose(y[mask], y_unmasked[mask], atol=1e-3)  # masking does change outputs
    assert (y3[0, 1:3] - y[0, 1:3]).abs().max() > 1e-3  # masked outputs are filled in from context
    # every masked position sees the same [MASK] vector before position embeddings
    h = txe.input_proj(x)
    emb = torch.where(mask[..., None], txe.mask_token, h)
    assert torch.equal(emb[0, 1], txe.mask_token.detach()) and torch.equal(emb[1, 4], emb[2, 0])


def test_a_masked_token_keeps_its_position(txe):
    """BERT's and the paper's masking replaces a token's *input* by [MASK]; its position embedding is
    still added, so the masked positions of one span are told apart (each is asked for its own
    event). Replaced after the position embedding, every masked token of a window embedded alike,
    and a span's masked outputs were all one vector."""
    x = torch.randn(2, 6, 48)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, 1:4] = True
    with torch.no_grad():
        h = txe.embed(x, mask)
        y = txe(x, mask)
    for a, b in ((1, 2), (2, 3), (1, 3)):
        assert not torch.allclose(h[:, a], h[:, b], atol=1e-4)
        assert not torch.allclose(y[:, a], y[:, b], atol=1e-4)


def test_position_embeddings_break_permutation_symmetry(txe):
    x = torch.randn(1, 5, 48)
    with torch.no_grad():
        y = txe(x)
        yp = txe(x[:, [4, 3, 2, 1, 0]])
    assert not torch.allclose(y, yp[:, [4, 3, 2, 1, 0]], atol=1e-3)


def test_padding_mask(txe):
    x = torch.randn(2, 6, 48)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[0, 4:] = True
    x2 = x.clone()
    x2[0, 4:] = torch.randn(2, 48) * 10
    with torch.no_grad():
        y, y2 = txe(x, pad=pad), txe(x2, pad=pad)
        short = txe(x[:1, :4])
    assert torch.allclose(y, y2, atol=1e-5)  # padded values do not matter
    assert torch.allclose(y[0, :4], short[0], atol=1e-5)  # == running the unpadded sequence
    assert torch.all(y[0, 4:] == 0)
    all_pad = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        assert torch.all(txe(x, pad=all_pad) == 0)  # no NaN from an empty softmax


def test_uses_fused_sdpa_and_matches_explicit_attention(monkeypatch, txe):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        txe(torch.randn(1, 5, 48))
    assert len(calls) == len(txe.blocks) == 3

    torch.manual_seed(1)
    attn = SelfAttention(16, 4)
    x = torch.randn(2, 5, 16)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    split = lambda t: t.view(2, 5, 4, 4).transpose(1, 2)  # noqa: E731
    a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(4), dim=-1)
    ref = attn.proj((a @ split(v)).transpose(1, 2).reshape(2, 5, 16))
    assert torch.allclose(attn(x), ref, atol=1e-5)


def test_trains_and_bad_input(txe):
    txe.train()
    x = torch.randn(4, 5, 48)
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[:, 2] = True
    txe(x, mask).pow(2).mean().backward()
    assert txe.mask_token.grad.abs().sum() > 0 and txe.pos_embed.grad[:5].abs().sum() > 0
    assert torch.all(txe.pos_embed.grad[5:] == 0)
    with pytest.raises(BadInputError, match="48"):
        txe(torch.randn(1, 5, 32))
    with pytest.raises(BadInputError, match="max_len"):
        txe(torch.randn(1, 65, 48))
    with pytest.raises(BadInputError):
        build_txe("txe_huge")
    with pytest.raises(BadInputError):
        build_txe("txe_cpu", layers=4)


def test_checkpoint_round_trip(tmp_path):
    m = build_txe("txe_cpu", in_dim=64, depth=2)
    path = save_checkpoint(
        tmp_path / "ctx.pt",
        stage="context",
        arch=arch_spec("moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=64, depth=2),
        state_dict=m.state_dict(),
        meta={"window": 5, "in_dim": 64},
    )
    m2 = build_from_checkpoint(path, stage="context")
    x, mask = torch.randn(2, 5, 64), torch.tensor([[0, 0, 1, 0, 0]] * 2, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(m.eval()(x, mask), m2(x, mask), atol=1e-6)


def test_standardize_fixed_statistics_and_old_checkpoints():
    from moviessl.models.txe import Standardize, feature_stats

    s = Standardize(3)
    x = torch.randn(4, 3) * 5 + 2
    assert torch.equal(s(x), x)  # identity until set (exactly: checkpoints without statistics behave as trained)
    s.set_stats(*feature_stats(x))
    y = s(x)
    assert torch.allclose(y.mean(0), torch.zeros(3), atol=1e-5) and torch.allclose(
        y.std(0, unbiased=False), torch.ones(3), atol=1e-3
    )
    # a TxE state dict written before the statistics existed still loads, as identity
    txe = build_txe("txe_cpu", in_dim=8, depth=1)
    old = {k: v for k, v in txe.state_dict().items() if not k.startswith("input_norm.")}
    fresh = build_txe("txe_cpu", in_dim=8, depth=1)
    fresh.load_state_dict(old)
    assert not bool(fresh.input_norm.is_set) and torch.equal(fresh.input_norm.scale, torch.ones(8))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_txe_held_in_half_precision_standardises_in_float32(dtype):
    """``extract --precision bf16-true`` casts the TxE to bf16, its input statistics with it: a mean
    rounded to 8 significand bits shifted each dimension of pooled post-ReLU features (std far below
    the mean) by up to half its std, in every video. The statistics stay float32 and the
    standardisation is computed in it; the weights are cast as before."""
    from moviessl.models.txe import feature_stats

    torch.manual_seed(0)
    mean, std = 3 + 4 * torch.rand(64), 0.02 + 0.03 * torch.rand(64)
    x = mean + std * torch.randn(2000, 64)
    txe = build_txe("txe_cpu", in_dim=64, depth=1).eval()
    txe.input_norm.set_stats(*feature_stats(x))
    x = x.to(dtype)  # the half backbone's features
    want = txe.input_norm(x.float())
    txe.to(dtype)
    assert txe.input_proj.weight.dtype == dtype and txe.input_norm.mean.dtype == torch.float32
    got = txe.input_norm(x)
    assert got.dtype == dtype
    assert (got.float() - want).mean(0).abs().max() < 0.02  # no shift of any dimension
    assert txe(x[:10].unsqueeze(0)).dtype == dtype


def _ffn_in_train_mode(mlp, x):
    mlp.train()
    return mlp(x), mlp(x), mlp[3](F.relu(mlp[0](x))), mlp[3](F.gelu(mlp[0](x)))


@pytest.mark.parametrize("family", ["txe", "txd"])
def test_paper_layers_are_vidsitus_fairseq_layers(family):
    """VidSitu's fairseq TxE / TxD layers: ReLU, dropout only on the residual branches (attention_dropout
    and activation_dropout 0); the CPU presets keep GELU with dropout inside attention and FFN."""
    from moviessl.models.txd import build_txd

    def build(preset):
        torch.manual_seed(0)
        if family == "txe":
            m = build_txe(f"txe_{preset}", in_dim=16, dim=32, heads=4, mlp_dim=64)
            return m, m.blocks[0].mlp, [m.blocks[0].attn]
        m = build_txd(f"txd_{preset}", vocab_size=20, mem_dim=16, dim=32, heads=4, ffn=64)
        return m, m.blocks[0].mlp, [m.blocks[0].self_attn, m.blocks[0].cross_attn]

    x = torch.randn(6, 32)
    m, mlp, attns = build("paper")
    a, b, relu, _ = _ffn_in_train_mode(mlp, x)
    assert torch.equal(a, b) and torch.allclose(a, relu)  # no activation dropout, ReLU
    assert all(att.dropout == 0.0 for att in attns)
    m.train()
    torch.manual_seed(1)
    inp = (torch.randn(2, 5, 16),) if family == "txe" else (torch.randint(0, 20, (2, 5)), torch.randn(2, 5, 16))
    assert not torch.equal(m(*inp), m(*inp))  # residual dropout stays on

    m, mlp, attns = build("cpu")
    a, b, _, _ = _ffn_in_train_mode(mlp, x)
    assert not torch.equal(a, b) and all(att.dropout == 0.1 for att in attns)
    mlp.eval()
    assert torch.allclose(mlp(x), mlp[3](F.gelu(mlp[0](x))))
    with pytest.raises(BadInputError, match="unknown activation"):
        build_txe("txe_cpu", in_dim=16, activation="swish")


@pytest.mark.parametrize(
    "key, value", [("heads", 0), ("heads", -4), ("depth", -1), ("dim", 0), ("mlp_dim", 2.5), ("max_len", "64")]
)
def test_bad_sizes_are_one_line_naming_the_setting(key, value):
    """0 heads was a ZeroDivisionError traceback, -4 heads (128 % -4 == 0) failed in the first
    forward, a negative depth built a TxE without layers, a fractional width a TypeError."""
    with pytest.raises(BadInputError, match=rf"must be an integer >= {0 if key == 'depth' else 1}") as e:
        build_txe("txe_cpu", in_dim=8, **{key: value})
    assert e.value.path == f"model.{key}"
    build_txe("txe_cpu", in_dim=8, depth=0)  # an embedding-only TxE is a valid ablation


def test_zero_heads_in_pretrain_context_is_one_line(tmp_path, capsys):
    from moviessl.cli import main

    (tmp_path / "feats").mkdir()
    argv = ["pretrain-context", "--features", str(tmp_path / "feats"), "--out", str(tmp_path / "o")]
    assert main([*argv, "model.txe_overrides.heads=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["moviessl: error: model.txe_overrides.heads: must be an integer >= 1, got 0"], err
