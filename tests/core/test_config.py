import pytest
from omegaconf import OmegaConf

from moviessl.config import load_config, merge_overrides, parse_overrides, save_config
from moviessl.errors import BadInputError


@pytest.fixture()
def preset(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("seed: 0\ntrainer:\n  devices: 1\n  precision: 32-true\noptim:\n  lr: 0.1\n  betas: [0.9, 0.99]\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\noptim:\n  lr: 0.3\n")
    return child


def test_base_and_overrides(preset):
    cfg = load_config("backbone", preset, ["trainer.precision=bf16-mixed", "optim.lr=1e-3", "optim.betas=[0.5,0.6]"])
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert list(cfg.optim.betas) == [0.5, 0.6]
    assert cfg.trainer.devices == 1 and cfg.seed == 0


def test_unknown_key_is_an_error(preset):
    with pytest.raises(BadInputError, match="unknown config key"):
        load_config("backbone", preset, ["optim.lrr=1"])


def test_malformed_override(preset):
    with pytest.raises(BadInputError, match="key.sub=value"):
        load_config("backbone", preset, ["optim.lr"])


def test_unknown_preset():
    with pytest.raises(BadInputError, match="unknown"):
        load_config("backbone", "no_such_preset")


def test_save_roundtrip(preset, tmp_path):
    cfg = load_config("backbone", preset, ["seed=7"])
    p = save_config(cfg, tmp_path / "run")
    assert OmegaConf.load(p).seed == 7


def test_mapping_overrides(preset):
    cfg = load_config("backbone", preset)
    cfg2 = merge_overrides(cfg, {"optim.lr": 0.5, "trainer.devices": 2})
    assert cfg2.optim.lr == 0.5 and cfg2.trainer.devices == 2
    assert parse_overrides(["a.b=c"]).a.b == "c"


def test_empty_mapping_is_free_form(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("model:\n  preset: slowd_cpu\n  overrides: {}\n")
    cfg = load_config("backbone", p, ["model.overrides.widths=[8,8,16,16]", "model.overrides.block=basic"])
    assert list(cfg.model.overrides.widths) == [8, 8, 16, 16] and cfg.model.overrides.block == "basic"
    with pytest.raises(BadInputError):
        load_config("backbone", p, ["model.presett=x"])


def test_by_variant_block(tmp_path, preset):
    p = tmp_path / "v.yaml"
    p.write_text("_base_: child.yaml\nby_variant:\n  slow:\n    trainer: {devices: 4}\n    optim: {lr: 0.01}\n")
    assert load_config("backbone", p).trainer.devices == 1                       # no variant: the preset
    assert load_config("backbone", p, variant="other").trainer.devices == 1       # a variant without a block
    cfg = load_config("backbone", p, variant="slow")
    assert cfg.trainer.devices == 4 and cfg.optim.lr == pytest.approx(0.01) and "by_variant" not in cfg
    # the command line still wins over the variant's block
    assert load_config("backbone", p, ["trainer.devices=2"], variant="slow").trainer.devices == 2
    p.write_text("_base_: child.yaml\nby_variant:\n  slow:\n    trainer: {devicez: 4}\n")
    with pytest.raises(BadInputError, match="by_variant.slow"):
        load_config("backbone", p, variant="slow")


def test_shipped_backbone_presets_by_method():
    # the cpu preset gives MoDist its longer schedule (docs/results.md, issue 4); the others keep 300
    assert load_config("backbone", "cpu", variant="modist").trainer.max_steps == 600
    for m in ("cvrl", "supervised", "random", None):
        assert load_config("backbone", "cpu", variant=m).trainer.max_steps == 300
