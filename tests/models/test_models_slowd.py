"""Slow-D: shapes, reference counts (docs/ssl-recipes.md §2), init, checkpoints, PySlowFast loading."""

import re

import pytest
import torch
from torch import nn

from moviessl.checkpoint import arch_spec, build_from_checkpoint, save_checkpoint
from moviessl.errors import BadInputError
from moviessl.models import SLOWD_PRESETS, build_slowd, load_pyslowfast_checkpoint, model_info
from moviessl.models.info import _count


def _meta(preset="slowd_r50", **kw):
    with torch.device("meta"):
        return build_slowd(preset, **kw).eval()


def _counts(T, S, **kw):
    m = _meta(**kw)
    with torch.device("meta"):
        x = torch.empty(1, 3, T, S, S)
    params = sum(p.numel() for p in m.backbone_parameters())
    return params / 1e6, _count(m, x)[0]


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
            m.running_mean = torch.randn(m.running_mean.shape, generator=g) * 0.1
            m.running_var = torch.rand(m.running_var.shape, generator=g) + 0.5


def test_presets_present():
    assert {"slowd_r50", "slowd_r18", "slowd_cpu"} <= set(SLOWD_PRESETS)


@pytest.mark.parametrize(
    "kw, T, S, ref_params, ref_gmacs",
    [
        ({}, 16, 224, 31.67, 45.70),  # Slow-D, CVRL-consistent row
        ({}, 16, 256, 31.67, 59.68),
        ({"stem_temporal_kernel": 1, "stem_temporal_stride": 1}, 8, 224, 31.63, 41.92),  # Slow R50 8x8
        ({"stem_temporal_kernel": 1, "stem_temporal_stride": 1}, 8, 256, 31.63, 54.75),
        ({"stem_temporal_kernel": 1, "stem_temporal_stride": 1}, 4, 224, 31.63, 20.96),
        ({"stem_temporal_kernel": 1, "stem_temporal_stride": 1}, 16, 224, 31.63, 83.84),
        ({"stem_temporal_stride": 1}, 16, 224, 31.67, 91.39),
    ],
)
def test_params_and_macs_match_reference_table(kw, T, S, ref_params, ref_gmacs):
    params, gmacs = _counts(T, S, **kw)
    assert params == pytest.approx(ref_params, rel=5e-3)
    assert gmacs == pytest.approx(ref_gmacs, rel=5e-3)


def test_model_info_paper_preset():
    info = model_info("slowd_r50")
    assert info["params"] == pytest.approx(31.67e6, rel=5e-3)
    assert info["gmacs"] == pytest.approx(45.70, rel=5e-3)
    # the flop-counter part alone misses only the BatchNorms (~0.4 %)
    assert info["gmacs"] > info["gmacs_flop_counter"] > 0.99 * info["gmacs"]
    with pytest.raises(BadInputError):
        model_info("slowd_r51")


def test_head_adds_fc_params_excluded_from_backbone():
    m = _meta(num_classes=400)
    total = sum(p.numel() for p in m.parameters())
    backbone = sum(p.numel() for p in m.backbone_parameters())
    assert backbone == pytest.approx(31.67e6, rel=5e-3)
    assert total == pytest.approx(32.49e6, rel=5e-3)  # "a 400-way FC adds 0.82 M"
    with torch.device("meta"):
        assert m(torch.empty(2, 3, 16, 224, 224)).shape == (2, 400)


def test_r50_shapes_no_temporal_downsampling_after_stem():
    m = _meta()
    with torch.device("meta"):
        x = torch.empty(2, 3, 16, 224, 224)
        assert m.forward_features(x).shape == (2, 2048, 8, 7, 7)
        assert m(x).shape == (2, 2048)
        assert m([x]).shape == (2, 2048)  # PySlowFast's list-of-pathways input
    assert m.out_dim == 2048
    r18 = _meta("slowd_r18")
    with torch.device("meta"):
        assert r18.forward_features(torch.empty(1, 3, 16, 224, 224)).shape == (1, 512, 8, 7, 7)
    assert r18.out_dim == 512
    # r18 uses basic blocks: 2 per stage, no conv "c"
    assert len(r18.res3) == 2 and not hasattr(r18.res3[0], "c")


def test_cpu_preset_forward_backward_real_values():
    torch.manual_seed(0)
    m = build_slowd("slowd_cpu")
    x = torch.randn(4, 3, 16, 64, 64)
    f = m.forward_features(x)
    assert f.shape == (4, m.out_dim, 8, 2, 2) and 128 <= m.out_dim <= 256
    y = m(x)
    assert y.shape == (4, m.out_dim) and torch.isfinite(y).all()
    assert torch.allclose(y, f.mean(dim=(2, 3, 4)), atol=1e-5)  # global average pool
    y.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert m.stem.conv.weight.grad.abs().sum() > 0


def test_overrides_flow_net():
    # MoDist's video_flow motion net: 1/8 width, all temporal kernels 1
    m = _meta(width_factor=1 / 8, stage_temporal_kernels=(1, 1, 1, 1), in_channels=2)
    assert m.out_dim == 256 and m.stem.conv.weight.shape == (8, 2, 5, 7, 7)
    assert all(
        c.kernel_size[0] == 1 for n, c in m.named_modules() if isinstance(c, nn.Conv3d) and not n.startswith("stem")
    )
    with torch.device("meta"):
        assert m(torch.empty(1, 2, 16, 112, 112)).shape == (1, 256)
        with pytest.raises(BadInputError):
            m(torch.empty(1, 3, 16, 112, 112))  # wrong channel count
    assert _meta(stem_temporal_kernel=3).stem.conv.weight.shape[2] == 3
    with pytest.raises(BadInputError):
        build_slowd("slowd_r50", depth=101)
    with pytest.raises(BadInputError):
        build_slowd("nope")


def test_zero_init_last_bn_makes_blocks_identity():
    m = build_slowd("slowd_r50", width_factor=1 / 8).eval()  # same topology, cheap
    for name, mod in m.named_modules():
        if isinstance(mod, nn.BatchNorm3d):
            expect = 0.0 if name.endswith("c_bn") else 1.0
            assert torch.all(mod.weight == expect), name
    r18 = build_slowd("slowd_r18", width_factor=1 / 8)
    assert all(torch.all(b.b_bn.weight == 0) for s in (2, 3, 4, 5) for b in getattr(r18, f"res{s}"))
    # a block without projection computes relu(x) at init
    x = torch.randn(2, m.res2[1].c.out_channels, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(m.res2[1](x), torch.relu(x))


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    m = build_slowd("slowd_cpu")
    _randomize_bn(m)
    m.eval()
    path = save_checkpoint(
        tmp_path / "model.pt",
        stage="backbone",
        arch=arch_spec("moviessl.models.slowd:build_slowd", preset="slowd_cpu"),
        state_dict=m.state_dict(),
        meta={"out_dim": m.out_dim},
    )
    m2 = build_from_checkpoint(path, stage="backbone")
    x = torch.randn(2, 3, 16, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x), m2(x), atol=1e-6)
    assert not m2.training


# -- PySlowFast layout, written independently of the loader's own name map ------------------------


def _to_pyslowfast(key: str) -> str:
    if key.startswith("stem."):
        return "s1.pathway0_stem." + key[len("stem.") :]
    if key.startswith("head."):
        return "head.projection." + key[len("head.") :]
    m = re.match(r"res(\d)\.(\d+)\.(\w+)\.(\w+)$", key)
    stage, i, layer, p = m.groups()
    branch = layer if layer.startswith("branch1") else f"branch2.{layer}"
    return f"s{stage}.pathway0_res{i}.{branch}.{p}"


@pytest.fixture(scope="module")
def slow_r50_pyth(tmp_path_factory):
    torch.manual_seed(2)
    slow = build_slowd("slowd_r50", stem_temporal_kernel=1, stem_temporal_stride=1, num_classes=400)
    _randomize_bn(slow)
    state = {_to_pyslowfast(k): v for k, v in slow.state_dict().items()}
    assert "s1.pathway0_stem.conv.weight" in state and "s5.pathway0_res2.branch2.c_bn.running_var" in state
    assert "s3.pathway0_res0.branch1.weight" in state and "head.projection.bias" in state
    path = tmp_path_factory.mktemp("psf") / "checkpoint_epoch_00196.pyth"
    torch.save({"epoch": 196, "model_state": state, "optimizer_state": {}, "cfg": "MODEL:\n  ARCH: slow\n"}, path)
    return slow.eval(), state, path


def test_pyslowfast_center_inflation_is_exact(slow_r50_pyth):
    slow, state, path = slow_r50_pyth
    sd = build_slowd("slowd_r50", num_classes=400)
    rep = load_pyslowfast_checkpoint(sd, path, inflate="center")
    assert rep["missing"] == [] and rep["unexpected"] == [] and rep["mismatched"] == []
    assert rep["inflated"] == ["stem.conv.weight"]
    assert len(rep["loaded"]) == len(sd.state_dict())
    w, w2d = sd.stem.conv.weight, state["s1.pathway0_stem.conv.weight"]
    assert w.shape == (64, 3, 5, 7, 7)
    assert torch.equal(w[:, :, 2], w2d[:, :, 0]) and w[:, :, [0, 1, 3, 4]].abs().sum() == 0
    assert torch.equal(sd.res4[3].b.weight, state["s4.pathway0_res3.branch2.b.weight"])
    # With the kernel at the centre tap, stride-2 Slow-D on 16 frames == Slow R50 on every 2nd frame.
    sd.eval()
    x = torch.randn(1, 3, 16, 64, 64)
    with torch.no_grad():
        assert torch.allclose(sd(x), slow(x[:, :, ::2]), atol=1e-4, rtol=1e-4)


def test_pyslowfast_spread_prefix_and_mismatch(slow_r50_pyth):
    _, state, _ = slow_r50_pyth
    prefixed = {"backbone." + k: v for k, v in state.items()}
    prefixed["backbone.head.mlp.0.weight"] = torch.zeros(3)  # a contrastive head we do not have
    sd = build_slowd("slowd_r50", num_classes=10)  # head shape differs from the 400-way checkpoint
    rep = load_pyslowfast_checkpoint(sd, {"model_state": prefixed}, inflate="spread")
    assert rep["unexpected"] == ["head.mlp.0.weight"]
    assert [m[0] for m in rep["mismatched"]] == ["head.weight", "head.bias"]
    assert rep["missing"] == ["head.weight", "head.bias"]
    w2d = state["s1.pathway0_stem.conv.weight"]
    assert torch.allclose(sd.stem.conv.weight, w2d.expand(-1, -1, 5, -1, -1) / 5)
    assert torch.allclose(sd.stem.conv.weight.sum(2, keepdim=True), w2d, atol=1e-6)


def test_pyslowfast_bad_files(tmp_path):
    m = build_slowd("slowd_cpu")
    with pytest.raises(BadInputError, match="not found"):
        load_pyslowfast_checkpoint(m, tmp_path / "missing.pyth")
    bad = tmp_path / "bad.pyth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match="bad.pyth"):
        load_pyslowfast_checkpoint(m, bad)
    with pytest.raises(BadInputError):
        load_pyslowfast_checkpoint(m, {"model_state": {"a": 1}})


@pytest.mark.parametrize("variant", ["channels_last", "compile"])
def test_speed_up_changes_no_weight_name_and_no_result(variant):
    # compile: TorchInductor compiles forward and backward here (tens of seconds on CPU)
    import copy

    from moviessl.models.slowd import speed_up

    torch.manual_seed(0)
    ref = build_slowd("slowd_cpu", width_factor=1 / 4)
    fast = speed_up(copy.deepcopy(ref), **{variant: True})
    assert list(fast.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 3, 8, 32, 32)
    y, y_ref = fast(x), ref(x)
    assert torch.allclose(y, y_ref, atol=1e-5)
    y.pow(2).mean().backward()
    y_ref.pow(2).mean().backward()
    for (name, p), p_ref in zip(fast.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, p_ref.grad, atol=1e-5, rtol=1e-4), name
    if variant == "channels_last":
        assert fast.stem.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
        plain = build_slowd("slowd_cpu", width_factor=1 / 4)
        plain.load_state_dict(fast.state_dict())  # a checkpoint saved in NTHWC loads into a plain model
        assert torch.allclose(plain(x), y, atol=1e-5)


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(stem_temporal_stride=0), "model.stem_temporal_stride: must be an integer >= 1, got 0"),
        (dict(stem_spatial_kernel=0), "model.stem_spatial_kernel: must be an integer >= 1, got 0"),
        (dict(stem_width=0), "model.stem_width: must be an integer >= 1, got 0"),
        (dict(stage_temporal_kernels=(1, 1, 2, 2)), "model.stage_temporal_kernels: need odd kernels"),
        (dict(stage_temporal_kernels=(1, 1, 0, 3)), "model.stage_temporal_kernels: need odd kernels"),
        (dict(widths=(32, 0, 128, 256)), "model.widths: need widths >= 1"),
        (dict(layers=(1, -1, 1, 1)), "model.layers: need block counts >= 0"),
        (dict(num_classes=-3), "model.num_classes: must be >= 0"),
        (dict(width_factor=0), "model.width_factor: must be a number > 0"),
        (dict(widths=(32, 64.5, 128, 256)), "model.widths: need a list of whole numbers"),
        (dict(layers=(1, "a", 1, 1)), "model.layers: need a list of whole numbers"),
    ],
)
def test_bad_overrides_are_one_line_naming_the_setting(override, message):
    """A stride or kernel of 0 and a negative class count were torch tracebacks when the module was
    built, an even stage kernel one at the first forward (the branch one frame longer than its
    shortcut), and a stem width of 0 (a 1-channel stem) or a negative block count (a stage without
    blocks) built a network without a word."""
    with pytest.raises(BadInputError) as e:
        build_slowd("slowd_cpu", **override)
    assert str(e.value).startswith(message), str(e.value)
    assert build_slowd("slowd_cpu", stem_temporal_kernel=4, layers=(1, 0, 1, 1)).out_dim == 256
