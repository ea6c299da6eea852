"""The Object Transformer: LVU's sizes, padding, [MASK] in the input space, OT++ scene tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moviessl.context.ot_spans import SpanVideo, collate_tokens, span_tokens
from moviessl.data.lvu import VideoInstances
from moviessl.errors import BadInputError
from moviessl.models.object_transformer import INSTANCE, OT_PRESETS, SCENE, build_object_transformer, load_matching


def _video(n_sec=20, dim=12, scene_dim=0, seed=0):
    rng = np.random.default_rng(seed)
    sec = np.repeat(np.arange(n_sec), 2)
    inst = VideoInstances(
        sec=sec,
        shot=sec // 7,
        track=np.tile([4, 9], n_sec),
        box=np.tile(np.array([[0.1, 0.1, 0.4, 0.8], [0.5, 0.2, 0.9, 0.9]], np.float32), (n_sec, 1)),
        feat=rng.normal(size=(2 * n_sec, dim)).astype(np.float32),
    )
    v = SpanVideo("v", inst=inst)
    if scene_dim:
        v.scene = rng.normal(size=(n_sec // 2, scene_dim)).astype(np.float32)
        v.scene_sec = np.arange(n_sec // 2) * 2 + 1
    return v


def _batch(*videos, tail=19):
    return {k: torch.as_tensor(v) for k, v in collate_tokens([span_tokens(v, tail) for v in videos]).items()}


def test_paper_preset_is_lvus_ot():
    p = OT_PRESETS["ot_paper"]
    assert (p["depth"], p["heads"], p["dim"], p["mlp_dim"], p["max_instances"], p["max_positions"]) == (
        3,
        12,
        768,
        3072,
        254,
        258,
    )
    m = build_object_transformer("ot_paper", in_dim=2304, num_outputs=4)
    assert m.reduction.in_features == 2304 and m.head[1].out_features == 4 and len(m.blocks) == 3
    with pytest.raises(BadInputError, match="unknown Object Transformer option"):
        build_object_transformer("ot_cpu", in_dim=8, depht=2)


def test_padding_does_not_change_outputs_and_shapes():
    torch.manual_seed(0)
    m = build_object_transformer("ot_cpu", in_dim=12, num_outputs=3).eval()
    short, long = _video(n_sec=6, seed=1), _video(n_sec=20, seed=2)
    alone = m(_batch(short, tail=5))
    # the short span (12 tokens + start / end) padded to a long one's 40: both spans ended at the same
    # second once, so of one length, and nothing was padded
    spans = [span_tokens(short, 5), span_tokens(long, 19)]
    both = m({k: torch.as_tensor(v) for k, v in collate_tokens(spans).items()})
    assert both.shape == (2, 3) and len(spans[0]["kind"]) == 14 and len(spans[1]["kind"]) == 42
    assert torch.allclose(alone[0], both[0], atol=1e-5)
    assert torch.allclose(m(_batch(long, tail=19))[0], both[1], atol=1e-5)


def test_masked_instances_never_reach_the_model():
    torch.manual_seed(0)
    m = build_object_transformer("ot_cpu", in_dim=12).eval()
    b = _batch(_video())
    b["mask"] = torch.zeros_like(b["kind"], dtype=torch.bool)
    b["mask"][0, 3] = True
    out1 = m.encode(b)
    b["inst"] = b["inst"].clone()
    b["inst"][0, 3] += 100.0  # the masked token's feature changes: nothing else may
    assert torch.allclose(out1, m.encode(b), atol=1e-5)


def test_mask_vector_starts_at_zeros_as_lvus():
    # LVU's masked_embedding is a zeros Parameter that BERT's weight init never visits; the linear
    # and table weights around it are N(0, 0.02) as BERT's
    torch.manual_seed(0)
    m = build_object_transformer("ot_cpu", in_dim=12)
    assert torch.equal(m.mask_embedding.detach(), torch.zeros(12))
    assert 0.01 < float(m.reduction.weight.detach().std()) < 0.03


def test_scene_tokens_and_scene_only_model():
    torch.manual_seed(0)
    v = _video(scene_dim=5)
    b = _batch(v)
    pp = build_object_transformer("ot_cpu", in_dim=12, scene_dim=5, num_outputs=2).eval()
    assert pp(b).shape == (1, 2)
    # the scene pathway changes the output; an instance-only OT ignores the scene tensor
    b2 = dict(b, scene=b["scene"] + 1.0)
    assert not torch.allclose(pp(b), pp(b2))
    only = build_object_transformer("ot_cpu", in_dim=0, scene_dim=5, num_outputs=2).eval()
    sv = SpanVideo("s", scene=v.scene, scene_sec=v.scene_sec)
    assert only(_batch(sv)).shape == (1, 2)
    with pytest.raises(BadInputError, match="needs instance features"):
        build_object_transformer("ot_cpu", in_dim=0, scene_dim=0)


def test_load_matching_drops_the_head_and_other_widths():
    pre = build_object_transformer("ot_cpu", in_dim=12)  # pretrained: no head
    ft = build_object_transformer("ot_cpu", in_dim=16, scene_dim=5, num_outputs=4)
    rep = load_matching(ft, pre.state_dict())
    assert "reduction.weight" in rep["skipped"] and "blocks.0.attn.qkv.weight" in rep["loaded"]
    assert "head.1.weight" in rep["missing"] and "scene_proj.weight" in rep["missing"]
    assert torch.equal(ft.blocks[0].attn.qkv.weight, pre.blocks[0].attn.qkv.weight)


def test_load_matching_leaves_statistics_of_another_width_unset():
    """A pretrained OT's input statistics for features of another width are not loaded, so the
    fine-tuning features' statistics are set, not the identity (its "set" flag loaded alone)."""
    pre = build_object_transformer("ot_cpu", in_dim=12, scene_dim=5, input_norm=True)
    pre.set_input_stats((torch.ones(12), torch.ones(12)), (torch.ones(5), torch.ones(5)))
    ft = build_object_transformer("ot_cpu", in_dim=16, scene_dim=5, num_outputs=4, input_norm=True)
    rep = load_matching(ft, pre.state_dict())
    assert {"inst_norm.mean", "inst_norm.is_set"} <= set(rep["skipped"])
    assert {"scene_norm.mean", "scene_norm.is_set"} <= set(rep["loaded"])  # same width: kept as pretrained
    assert ft.set_input_stats((torch.full((16,), 50.0), torch.full((16,), 4.0)), (torch.zeros(5), torch.ones(5))) == [
        "inst"
    ]
    assert torch.equal(ft.inst_norm.mean, torch.full((16,), 50.0)) and torch.equal(ft.scene_norm.mean, torch.ones(5))


def test_input_norm_standardises_by_fixed_training_statistics():
    from moviessl.context.ot_spans import input_stats

    torch.manual_seed(0)
    v = _video(scene_dim=5)
    v.inst.feat = v.inst.feat * 3.0 + 50.0  # post-ReLU-like: a large common component
    v.scene = v.scene * 2.0 + 7.0
    normed = build_object_transformer("ot_cpu", in_dim=12, scene_dim=5, num_outputs=2, input_norm=True).eval()
    plain = build_object_transformer("ot_cpu", in_dim=12, scene_dim=5, num_outputs=2).eval()
    rep = load_matching(plain, normed.state_dict())
    assert {"inst_norm.mean", "scene_norm.scale"} <= set(rep["skipped"]) and not rep["missing"]
    inst_st, scene_st = input_stats([v])
    assert torch.allclose(inst_st[0], torch.as_tensor(v.inst.feat.mean(0)), atol=1e-4)
    # accumulated video by video = the statistics of all tokens together
    from moviessl.models.txe import feature_stats

    many = [_video(n_sec=n, seed=n) for n in (3, 11, 20)]
    for mv in many:
        mv.inst.feat = mv.inst.feat + 100.0
    got = input_stats(many)[0]
    want = feature_stats(torch.from_numpy(np.concatenate([mv.inst.feat for mv in many])))
    assert torch.allclose(got[0], want[0], atol=1e-4) and torch.allclose(got[1], want[1], rtol=1e-4)
    assert input_stats(many)[1] is None  # no scene features
    assert normed.set_input_stats(inst_st, scene_st) == ["inst", "scene"]
    # the same network on hand-standardised features (start / end / padding stay zero)
    z = SpanVideo("z", inst=v.inst.with_features((v.inst.feat - v.inst.feat.mean(0)) / v.inst.feat.std(0)))
    z.scene, z.scene_sec = (v.scene - v.scene.mean(0)) / v.scene.std(0), v.scene_sec
    assert torch.allclose(normed(_batch(v)), plain(_batch(z)), atol=1e-3)
    # statistics already set (a pretrained OT's) are kept unless overwritten
    assert normed.set_input_stats((torch.zeros(12), torch.ones(12))) == []
    assert normed.set_input_stats((torch.zeros(12), torch.ones(12)), overwrite=True) == ["inst"]
    back = build_object_transformer("ot_cpu", in_dim=12, scene_dim=5, num_outputs=2, input_norm=True)
    back.load_state_dict(normed.state_dict())
    assert bool(back.inst_norm.is_set) and torch.equal(back.inst_norm.mean, torch.zeros(12))


@pytest.mark.parametrize("max_positions", [258, 64, 65])
def test_a_span_whose_time_ids_pass_the_tables_is_refused(max_positions):
    """The longest span check_span_s lets through gives ids inside the tables; one second more
    gives an id ``_ids`` would clamp (two seconds sharing a row), and is refused naming the setting."""
    from moviessl.models.object_transformer import check_span_s

    def top_id(span_s):  # tokens in the span's first and last seconds: its widest ids
        v = SpanVideo("v", scene=np.zeros((2, 3), np.float32), scene_sec=np.array([0, span_s - 1]))
        return int(span_tokens(v, span_s - 1, span_s, halfway=max_positions // 2)["pos"].max())

    longest = next(s for s in range(512, 0, -1) if top_id(s) <= max_positions - 1)
    check_span_s(longest, max_positions)
    assert top_id(longest + 1) > max_positions - 1
    with pytest.raises(BadInputError, match=rf"^data\.span_s: a {longest + 1}-s span .*\(at most {longest} s"):
        check_span_s(longest + 1, max_positions)
    check_span_s(60, 258)  # LVU's


def test_paper_ffn_has_no_inner_dropout_as_berts():
    """BERT's intermediate layer (dense -> GELU) has no dropout; hidden_dropout follows the output dense."""
    x = torch.randn(6, 768)
    mlp = build_object_transformer("ot_paper", in_dim=8).blocks[0].mlp.train()
    assert torch.equal(mlp(x), mlp(x))
    mlp = build_object_transformer("ot_cpu", in_dim=8).blocks[0].mlp.train()
    x = torch.randn(6, 64)
    assert not torch.equal(mlp(x), mlp(x))  # the CPU preset keeps its dropout (ffn_dropout None -> dropout)


def test_the_prediction_reads_the_start_tokens_output_through_berts_pooler():
    """LVU's long-term head reads ``pooler_output`` (BERT's pooler: dense + tanh on the first token's
    output), not a mean or another position: nothing else of the last layer reaches the head."""
    torch.manual_seed(0)
    m = build_object_transformer("ot_cpu", in_dim=12, num_outputs=3).eval()
    b = _batch(_video())
    h = m.encode(b)
    assert torch.allclose(m(b), m.head(m.pooler(h[:, 0])), atol=1e-6)


def test_each_pathways_own_parts_reach_only_its_own_tokens():
    """OT++'s token layout (Fig. 3): an instance token is ``reduction`` of its RoI feature plus the
    shared spatial / time / shot / link codes; a scene token ``scene_proj`` of its feature plus the
    scene type vector -- no ``reduction`` (not even its bias: LVU's zero features of [start] / [end]
    do pass it), and no instance token gets ``scene_type``. Checked on the embeddings, per token."""
    torch.manual_seed(0)
    m = build_object_transformer("ot_cpu", in_dim=12, scene_dim=5, num_outputs=2).eval()
    b = _batch(_video(scene_dim=5))
    kind = b["kind"][0]
    scene, others = kind == SCENE, kind != SCENE
    assert scene.any() and (kind == INSTANCE).any()
    before = m.embed(b)[0]
    with torch.no_grad():
        m.reduction.bias.add_(1.0)
    after = m.embed(b)[0]
    assert torch.allclose(after[scene], before[scene], atol=1e-6) and not torch.allclose(after[others], before[others])
    with torch.no_grad():
        m.scene_type.add_(1.0)
    moved = m.embed(b)[0]
    assert torch.allclose(moved[others], after[others], atol=1e-6) and not torch.allclose(moved[scene], after[scene])


def test_a_tokens_track_id_reaches_the_model():
    """The link (track) id table is one of LVU's embeddings: two instance tokens that differ only in
    their track id embed differently, and the same id embeds the same."""
    torch.manual_seed(0)
    m = build_object_transformer("ot_cpu", in_dim=12).eval()
    b = _batch(_video())
    other = dict(b, link=b["link"].clone())
    other["link"][0, 1] += 1
    e, f = m.embed(b)[0], m.embed(other)[0]
    assert not torch.allclose(e[1], f[1]) and torch.allclose(e[2:], f[2:])
