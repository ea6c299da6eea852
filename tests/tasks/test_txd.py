import re

import pytest
import torch

from moviessl.cli import main
from moviessl.errors import BadInputError
from moviessl.models.txd import build_txd, txd_options


def _model(seed=0, vocab=50, mem_dim=16):
    torch.manual_seed(seed)
    return build_txd("txd_cpu", vocab_size=vocab, mem_dim=mem_dim, dropout=0.0).eval()


def test_causal_mask_future_tokens_do_not_change_past_logits():
    m = _model()
    mem = torch.randn(3, 2, 16)
    tok = torch.randint(2, 50, (3, 10))
    ref = m(tok, mem)
    tok2 = tok.clone()
    tok2[:, 6] = (tok2[:, 6] + 7) % 50
    out = m(tok2, mem)
    assert torch.allclose(out[:, :6], ref[:, :6], atol=1e-5)
    assert not torch.allclose(out[:, 6:], ref[:, 6:], atol=1e-3)


def test_memory_padding_is_ignored():
    m = _model()
    mem = torch.randn(2, 3, 16)
    tok = torch.randint(2, 50, (2, 5))
    pad = torch.tensor([[False, False, True], [False, False, True]])
    a = m(tok, mem, pad)
    mem2 = mem.clone()
    mem2[:, 2] = 100.0
    assert torch.allclose(a, m(tok, mem2, pad), atol=1e-5)
    assert not torch.allclose(a, m(tok, mem2), atol=1e-3)
    # greedy decoding reads the padding mask too: as if the padded slot were not there
    prefix = tok[:, :2]
    want = m.generate(mem[:, :2], prefix, max_len=8, eos_id=0)
    assert torch.equal(m.generate(mem2, prefix, max_len=8, eos_id=0, memory_pad=pad), want)
    assert not torch.equal(m.generate(mem2, prefix, max_len=8, eos_id=0), want)


def test_an_all_padding_memory_reads_nothing_on_every_attention_kernel(monkeypatch):
    """A sample whose memory is all padding has no key to attend to: torch >= 2.5's kernels give it
    zero attention, torch 2.4's (which pyproject allows) a softmax over nothing, NaN, which then
    spread to its logits, greedy tokens and gradients. It reads nothing now on either."""
    import torch.nn.functional as F

    m = _model()
    mem, tok = torch.randn(2, 3, 16), torch.randint(2, 50, (2, 6))
    pad = torch.tensor([[False, True, True], [True, True, True]])
    want = m(tok, mem, pad)
    real = F.scaled_dot_product_attention

    def softmax_over_nothing(q, k, v, attn_mask=None, **kw):  # the math kernel before torch 2.5
        if attn_mask is None:
            return real(q, k, v, **kw)
        w = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).masked_fill(~attn_mask, float("-inf"))
        return w.softmax(-1) @ v

    monkeypatch.setattr(F, "scaled_dot_product_attention", softmax_over_nothing)
    got = m(tok, mem, pad)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    m.train()
    m(tok, mem, pad).logsumexp(-1).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    patched = m.eval().generate(mem, tok[:, :1], max_len=5, memory_pad=pad)
    monkeypatch.undo()
    assert torch.equal(patched, m.generate(mem, tok[:, :1], max_len=5, memory_pad=pad))


def test_cached_greedy_equals_full_recompute_and_prefix_is_forced():
    m = _model(1)
    mem = torch.randn(4, 1, 16)
    # prefixes of different lengths, -1 padded
    prefix = torch.tensor([[7, -1, -1], [9, 11, -1], [3, 4, 5], [20, -1, -1]])
    # eos: the first token the first sequence writes itself (an id that never comes up leaves the stop
    # untested), whose greedy run goes on with other tokens; forced as the second sequence's second
    # token, it does not end that one: the prefix is the verb, not a finished role
    free = m.generate(mem, prefix, max_len=12, eos_id=-5)
    eos = int(free[0, 1])
    assert (free[0, 2:] != eos).any()
    prefix[1, 1] = eos
    out = m.generate(mem, prefix, max_len=12, eos_id=eos)
    assert (out[0, 1:] == eos).all() and out[1, 1] == eos and (out[1, 2:] != eos).any()
    for b in range(4):
        p = [int(t) for t in prefix[b] if t >= 0]
        assert out[b, : len(p)].tolist() == p
        # naive greedy without a cache
        seq = list(p)
        while len(seq) < 12 and (len(seq) == len(p) or seq[-1] != eos):
            logits = m(torch.tensor([seq]), mem[b : b + 1])
            seq.append(int(logits[0, -1].argmax()))
        seq += [eos] * (12 - len(seq))
        assert out[b].tolist() == seq[:12]


def test_greedy_decoding_that_stops_once_every_sequence_ended_equals_decoding_to_the_end():
    """``generate`` stops as soon as every sequence has written its eos: the tokens equal those of
    decoding to ``max_len`` (an eos id never written: the greedy tokens up to a sequence's eos do
    not depend on it) with eos after each sequence's, and the last sequence's eos is the last step.
    The eos is a token several sequences write first at different steps, the latest well before
    ``max_len``; the prefix's last column is padding in every row."""
    m = _model(1)
    mem = torch.randn(24, 2, 16)
    prefix = torch.tensor([[7, -1, -1], [9, 11, -1], [3, 4, -1]] * 8)
    L = 16
    free = m.generate(mem, prefix, max_len=L, eos_id=-5)
    first: dict[int, dict[int, int]] = {}  # token -> {row: the step it is first written at}
    for b, n in enumerate((prefix >= 0).sum(1).tolist()):
        for t in range(n, L):
            first.setdefault(int(free[b, t]), {}).setdefault(b, t)
    eos = max(first, key=lambda k: len({t for t in first[k].values() if t < L - 3}))
    rows = sorted(b for b, t in first[eos].items() if t < L - 3)
    ends = [first[eos][b] for b in rows]
    assert len(set(ends)) >= 3, ends  # sequences that end at different steps
    steps = []
    hook = m.blocks[0].register_forward_hook(lambda *a: steps.append(1))
    try:
        out = m.generate(mem[rows], prefix[rows], max_len=L, eos_id=eos)
    finally:
        hook.remove()
    want = free[rows].clone()
    for i, t in enumerate(ends):
        want[i, t + 1 :] = eos
    assert torch.equal(out, want)
    assert len(steps) == max(ends) < L - 1  # one step per token written, none after the last eos


def test_the_output_projection_stays_the_token_embedding_through_a_checkpoint_and_a_step(tmp_path):
    """The TxD's output projection is tied to its token embedding (one tensor): an SRL model saved,
    built again from its checkpoint (the weights in the dtype they were saved in, as the runner's
    prediction loads them) and trained one step by the task's optimiser still has one tensor for
    both, changed by the step, and the optimiser holds it once."""
    from moviessl.checkpoint import arch_spec, build_from_checkpoint, save_checkpoint
    from moviessl.tasks.base import TaskModule, TaskOptim
    from moviessl.tasks.vidsitu.runner import saved_dtypes
    from moviessl.tasks.vidsitu.srl import build_srl_model

    kw = dict(in_dim=8, vocab_size=30, txd_overrides={"dim": 16, "heads": 2, "ffn": 16, "depth": 1})
    torch.manual_seed(0)
    model = build_srl_model(**kw)
    txd = model.txd
    assert txd.head.weight is txd.tok_emb.weight
    sd = {k: v.double() for k, v in model.state_dict().items()}  # a 64-true run's weights
    arch = arch_spec("moviessl.tasks.vidsitu.srl:build_srl_model", **kw)
    save_checkpoint(tmp_path / "model.pt", stage="srl", arch=arch, state_dict=sd, meta={})
    loaded = saved_dtypes(build_from_checkpoint(tmp_path / "model.pt", stage="srl"), sd).train()
    txd = loaded.txd
    assert txd.head.weight is txd.tok_emb.weight and txd.tok_emb.weight.dtype == torch.float64
    torch.testing.assert_close(txd.head.weight, sd["txd.tok_emb.weight"], rtol=0, atol=0)
    opt = TaskModule(loaded.float(), TaskOptim(lr=0.1, weight_decay=0.01)).configure_optimizers()
    held = [p for g in opt.param_groups for p in g["params"]]
    assert sum(p is txd.tok_emb.weight for p in held) == 1
    before = txd.tok_emb.weight.detach().clone()
    tokens, memory = torch.randint(2, 30, (3, 6)), torch.randn(3, 4, txd.mem_dim)
    txd(tokens, memory).logsumexp(-1).sum().backward()
    opt.step()
    assert txd.head.weight is txd.tok_emb.weight and not torch.equal(txd.tok_emb.weight, before)


def test_forced_verb_overrides_model_preference():
    m = _model(2)
    mem = torch.randn(2, 1, 16)
    free = m.generate(mem, torch.tensor([[5], [5]]), max_len=3)
    forced_tok = (int(free[0, 1]) + 1) % 50
    out = m.generate(mem, torch.tensor([[5, forced_tok], [5, forced_tok]]), max_len=3)
    assert out[:, 1].tolist() == [forced_tok, forced_tok]
    assert out[0, 1] != free[0, 1]


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("heads", 0, "must be an integer >= 1, got 0"),
        ("heads", -4, "must be an integer >= 1, got -4"),
        ("depth", -1, "must be an integer >= 0, got -1"),
        ("ffn", 0, "must be an integer >= 1, got 0"),
        ("dim", 64.0, "must be an integer >= 1, got 64.0"),
        ("activation", "swish", "unknown activation 'swish'; choose from relu, gelu"),
    ],
)
def test_bad_txd_sizes_and_activation_are_refused_by_name(key, value, message):
    """0 heads was a ZeroDivisionError traceback, -4 heads passed the divisibility test and failed in
    the first step, a negative depth trained a decoder without layers (exit 0), a float width was a
    TypeError, and an unknown activation was named ``model.activation`` after the seed's folder existed."""
    with pytest.raises(BadInputError, match=re.escape(message)) as e:
        txd_options("txd_cpu", **{key: value})
    assert e.value.path == f"srl.txd_overrides.{key}"
    assert txd_options("txd_cpu", depth=0)["depth"] == 0


def test_zero_txd_heads_is_one_line_before_a_seed(vidsitu_fixture, tmp_path, capsys):
    ann, feats = vidsitu_fixture
    argv = ["finetune", "vidsitu", "--task", "srl", "--data-root", str(ann), "--features", str(feats)]
    argv += ["--out", str(tmp_path / "o"), "trainer.progress_bar=false", "srl.txd_overrides={heads: 0}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["moviessl: error: srl.txd_overrides.heads: must be an integer >= 1, got 0"], err
    assert not (tmp_path / "o" / "seed0").exists()
