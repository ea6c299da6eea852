from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from moviessl.config import flatten, load_config, merge_overrides, parse_overrides, save_config
from moviessl.errors import BadInputError
from moviessl.ssl.config import BackboneConfig


@pytest.fixture()
def preset(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("_base_: cpu\nseed: 0\ntrainer:\n  devices: 1\n  precision: 32-true\noptim:\n  lr: 0.1\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\noptim:\n  lr: 0.3\n")
    return child


def test_base_chain_and_overrides(preset):
    cfg = load_config("backbone", preset)
    assert isinstance(cfg, BackboneConfig) and cfg.optim.lr == pytest.approx(0.3)  # child over base over cpu
    assert cfg.model.preset == "slowd_cpu" and cfg.data.num_frames == 16  # ... over paper (cpu's base)
    cfg = load_config("backbone", preset, ["trainer.precision=bf16-mixed", "optim.lr=1e-3", "augment.area=[0.5,0.6]"])
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.augment.area == [0.5, 0.6]
    assert cfg.trainer.devices == 1 and cfg.seed == 0


def test_values_are_typed():
    cfg = load_config("backbone", "cpu", ["cvrl.head.hidden_dim=64", "flow.bound=3"])
    assert type(cfg.cvrl.head.hidden_dim) is int and type(cfg.flow.bound) is float and type(cfg.cvrl.tau) is float
    with pytest.raises(BadInputError, match="cvrl.head.hidden_dim"):
        load_config("backbone", "cpu", ["cvrl.head.hidden_dim=wide"])


def test_unknown_key_is_an_error(preset):
    with pytest.raises(BadInputError, match="unknown config key"):
        load_config("backbone", preset, ["optim.lrr=1"])
    bad = preset.parent / "bad.yaml"
    bad.write_text("_base_: cpu\noptim:\n  lrr: 1\n")
    with pytest.raises(BadInputError, match="unknown config key 'optim.lrr' in the preset"):
        load_config("backbone", bad)


def test_partial_preset_without_base_names_what_is_missing(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("seed: 3\n")
    with pytest.raises(BadInputError, match="missing settings .*_base_"):
        load_config("backbone", p)


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
    assert load_config("backbone", p) == cfg  # a saved config is a complete preset


def test_a_resume_with_other_settings_keeps_the_earlier_configs(preset, tmp_path):
    run = tmp_path / "run"
    save_config(load_config("backbone", preset, ["seed=1"]), run)  # an attempt stopped by an input check
    for seed in (7, 7, 8, 9):  # the same config again is not a new part
        save_config(load_config("backbone", preset, [f"seed={seed}"]), run)
        (run / "checkpoints").mkdir(exist_ok=True)  # the run trained
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "config.part000.yaml",
        "config.part001.yaml",
        "config.yaml",
        "run.json",  # each attempt's record, the earlier ones kept (see save_run_record)
        "run.part000.json",
        "run.part001.json",
        "run.part002.json",
    ]
    assert [OmegaConf.load(run / f).seed for f in ("config.part000.yaml", "config.part001.yaml", "config.yaml")] == [
        7,
        8,
        9,
    ]


def test_a_config_kept_by_another_process_of_the_launch_is_not_an_error(preset, tmp_path, monkeypatch):
    """Two ranks saving a resumed run's new config at once: the second finds the old one moved
    already (FileNotFoundError, seen in 24 of 200 trials; that rank exited and the others hung)."""
    import moviessl.config as config_mod

    run = tmp_path / "run"
    save_config(load_config("backbone", preset, ["seed=1"]), run)
    (run / "checkpoints").mkdir()
    real = config_mod.os.replace

    def moved_meanwhile(src, dst):
        if Path(src).name != "config.yaml":  # the new config's atomic write
            return real(src, dst)
        real(src, Path(src).with_name("moved-by-the-other-rank.yaml"))
        raise FileNotFoundError(src)

    monkeypatch.setattr(config_mod.os, "replace", moved_meanwhile)
    save_config(load_config("backbone", preset, ["seed=2"]), run)
    assert OmegaConf.load(run / "config.yaml").seed == 2


def test_mapping_overrides(preset):
    cfg = load_config("backbone", preset)
    cfg2 = merge_overrides(cfg, {"optim.lr": 0.5, "trainer.devices": 2})
    assert cfg2.optim.lr == 0.5 and cfg2.trainer.devices == 2 and cfg.optim.lr == pytest.approx(0.3)
    assert parse_overrides(["a.b=c"]).a.b == "c"
    assert flatten({"verb": {"epochs": 1}, "trainer": {"progress_bar": False}, "seed": 2}) == {
        "verb.epochs": 1,
        "trainer.progress_bar": False,
        "seed": 2,
    }


def test_a_key_overridden_twice_takes_the_last_value(preset):
    """A command line read left to right: ``seed=1 ... seed=2`` (a script's default, then the user's) is 2."""
    assert load_config("backbone", preset, ["seed=1", "optim.lr=0.5", "seed=2"]).seed == 2
    assert merge_overrides(load_config("backbone", preset), ["optim.lr=0.5", "optim.lr=0.7"]).optim.lr == 0.7


def test_free_form_mappings(tmp_path):
    cfg = load_config("backbone", "cpu", ["model.overrides.widths=[8,8,16,16]", "model.overrides.block=basic"])
    assert cfg.model.overrides == {"widths": [8, 8, 16, 16], "block": "basic"}
    with pytest.raises(BadInputError):
        load_config("backbone", "cpu", ["model.presett=x"])


def test_by_variant_block(tmp_path, preset):
    p = tmp_path / "v.yaml"
    p.write_text("_base_: child.yaml\nby_variant:\n  slow:\n    trainer: {devices: 4}\n    optim: {lr: 0.01}\n")
    assert load_config("backbone", p).trainer.devices == 1  # no variant: the preset
    assert load_config("backbone", p, variant="other").trainer.devices == 1  # a variant without a block
    cfg = load_config("backbone", p, variant="slow")
    assert cfg.trainer.devices == 4 and cfg.optim.lr == pytest.approx(0.01) and not hasattr(cfg, "by_variant")
    # the command line still wins over the variant's block
    assert load_config("backbone", p, ["trainer.devices=2"], variant="slow").trainer.devices == 2
    p.write_text("_base_: child.yaml\nby_variant:\n  slow:\n    trainer: {devicez: 4}\n")
    with pytest.raises(BadInputError, match="by_variant.slow"):
        load_config("backbone", p, variant="slow")


@pytest.mark.parametrize("stage", ["backbone", "context", "vidsitu"])
@pytest.mark.parametrize("name", ["cpu", "paper"])
def test_shipped_presets_are_complete(stage, name):
    load_config(stage, name)


def _colour(cfg) -> dict:
    return {k: getattr(cfg.augment, k) for k in ("brightness", "contrast", "saturation", "hue")}


def test_shipped_backbone_presets_give_every_method_the_same_budget():
    # issue 13: the methods a table compares get the same steps and batch
    budgets = {m: load_config("backbone", "cpu", variant=m) for m in ("cvrl", "modist", "supervised", None)}
    assert {(c.trainer.max_steps, c.data.batch_size) for c in budgets.values()} == {(1200, 16)}
    recipes = {(c.optim.name, c.optim.lr, tuple(c.augment.area), *_colour(c).values()) for c in budgets.values()}
    assert len(recipes) == 1  # same recipe, the same colour strength included


def test_cpu_backbone_preset_uses_simclrs_small_image_colour_strength():
    # SimCLR's s = 0.5 for small frames (appendix B.9) at 64 px; the paper preset keeps s = 1.0 at 224 px
    strength = {name: _colour(load_config("backbone", name)) for name in ("cpu", "paper")}
    assert strength["cpu"] == dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    assert strength["paper"] == dict(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)


def test_paper_preset_trains_sup_k400_by_pyslowfast_recipe():
    """The paper's Sup-K400 baseline is a supervised Slow R50 recipe, not CVRL's SSL one."""
    sup, cvrl = (load_config("backbone", "paper", variant=m) for m in ("supervised", "cvrl"))
    assert (sup.optim.lr, sup.optim.ref_batch, sup.optim.weight_decay, sup.trainer.max_epochs) == (0.1, 64, 1e-4, 196)
    assert sup.augment.aspect == [1.0, 1.0] and cvrl.optim.lr == 0.32 and cvrl.trainer.max_epochs == 400


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batch_size=0", "data.batch_size: 0 must be at least 1"),
        ("optim.lr=-1", "optim.lr: -1.0 must not be negative"),
        ("trainer.max_steps=0", "trainer.max_steps: 0 must be at least 1"),
        ("trainer.max_steps=-2", "trainer.max_steps: -2 must be at least 1"),
        # Lightning clips nothing at <= 0: a negative value was silently no clipping
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val: -1.0 must not be negative"),
    ],
)
def test_settings_out_of_range_are_bad_input(preset, override, message):
    """A typo the types let through (a batch of 0, a negative lr) is one line naming the key, not a
    traceback from torch's DataLoader or optimiser."""
    with pytest.raises(BadInputError, match=message):
        load_config("backbone", preset, [override])
    cfg = load_config(
        "backbone", preset, ["trainer.max_steps=-1", "trainer.max_epochs=2"]
    )  # -1: Lightning's "no limit"
    with pytest.raises(BadInputError, match="momentum"):
        merge_overrides(cfg, ["optim.momentum=1.5"])


@pytest.mark.parametrize(
    "stage, override",
    [
        ("backbone", "optim.lr=nan"),
        ("backbone", "optim.weight_decay=inf"),
        ("context", "maskpred.tau=nan"),
        ("context", "data.token_stride_s=inf"),
        ("ot_pretrain", "masking.action_weight=nan"),
    ],
)
def test_a_nan_or_infinite_setting_is_out_of_range(stage, override):
    """A NaN fails every comparison, so `optim.lr=nan` passed 'must not be negative' (AdamW's
    ValueError traceback once training began), a NaN tau or loss weight a NaN loss; an infinite lr
    or stride passed as well. A setting with a range must be a finite number."""
    key = override.split("=")[0]
    with pytest.raises(BadInputError, match=f"^{key}: (nan|inf) must be a finite number"):
        load_config(stage, "cpu", [override])


@pytest.mark.parametrize("stage", ["backbone", "context", "vidsitu", "lvu", "ot_pretrain"])
def test_every_shipped_preset_is_in_range(stage):
    from moviessl.config import check_ranges, preset_names

    for name in preset_names(stage):
        check_ranges(load_config(stage, name))


@pytest.mark.parametrize("stage", ["backbone", "context", "vidsitu", "lvu", "ot_pretrain"])
@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_training_in_true_half_precision_is_one_line(stage, precision):
    """Every training stage refuses weights held in half (AdamW on 16-bit weights: steps rounded away
    in bf16, inf in fp16; CVRL, MoDist and the VidSitu heads also failed with a dtype traceback),
    before any work; the mixed precisions train."""
    with pytest.raises(BadInputError, match=rf"^trainer.precision: {precision} trains weights held in half"):
        load_config(stage, "cpu", [f"trainer.precision={precision}"])
    for ok in ("bf16-mixed", "16-mixed", "32-true"):
        assert load_config(stage, "cpu", [f"trainer.precision={ok}"]).trainer.precision == ok
    if stage in ("vidsitu", "lvu"):  # a whole config object built in code: refused before any work too
        import dataclasses
        import importlib

        runner = importlib.import_module(f"moviessl.tasks.{stage}.runner")
        cfg = load_config(stage, "cpu")
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, precision=precision))
        with pytest.raises(BadInputError, match="trains weights held in half"):
            runner.resolve_config(cfg)


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_a_trainer_config_built_in_code_refuses_true_half_too(precision, tmp_path):
    from moviessl.training import make_trainer

    with pytest.raises(BadInputError, match="trains weights held in half"):
        make_trainer({"precision": precision}, tmp_path)


@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_true_half_refusal_advises_a_mixed_precision_the_cpu_has(accelerator, monkeypatch):
    """A CPU run (``cpu``, or ``auto`` where torch sees no GPU) is told bf16-mixed alone: it has no
    fp16 AMP (Lightning swaps 16-mixed for bf16-mixed there); a GPU run is told either."""
    import pytorch_lightning as pl

    from moviessl.config import check_train_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(BadInputError) as e:
        load_config("backbone", "cpu", ["trainer.precision=bf16-true", f"trainer.accelerator={accelerator}"])
    assert str(e.value).endswith("; train with bf16-mixed (a CPU has no fp16 AMP)")
    # what the advice says of Lightning: a CPU trainer asked for 16-mixed runs bf16 autocast
    with pytest.warns(UserWarning, match="not supported on CPU"):
        trainer = pl.Trainer(accelerator="cpu", precision="16-mixed", logger=False, enable_checkpointing=False)
    assert trainer.precision == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(BadInputError, match="train with bf16-mixed or 16-mixed$"):
        check_train_precision("trainer.precision", "16-true", "auto")
    with pytest.raises(BadInputError, match=r"train with bf16-mixed \(a CPU"):
        check_train_precision("trainer.precision", "16-true", "cpu")


@pytest.mark.parametrize(
    "stage, override, line",
    [
        ("context", "data.window=0", "data.window: 0 must be at least 1"),
        ("context", "maskpred.keys_per_sample=0", "maskpred.keys_per_sample: 0 must be at least 1"),
        ("context", "maskpred.alpha=1.5", r"maskpred.alpha: 1.5 must be in \(0, 1\]"),
        ("context", "maskpred.alpha=0", r"maskpred.alpha: 0.0 must be in \(0, 1\]"),
        ("context", "data.token_stride_s=0", "data.token_stride_s: 0.0 must be positive"),
        ("backbone", "augment.flip_p=1.5", r"augment.flip_p: 1.5 must be in \[0, 1\]"),
        ("backbone", "augment.hue=0.7", r"augment.hue: 0.7 must be in \[0, 0.5\]"),
        ("backbone", "data.power=0", "data.power: 0.0 must be positive"),
        ("backbone", "data.num_frames=0", "data.num_frames: 0 must be at least 1"),
        ("backbone", "supervised.label_smoothing=1", r"supervised.label_smoothing: 1.0 must be in \[0, 1\)"),
        ("lvu", "model.track_mask=-0.1", r"model.track_mask: -0.1 must be in \[0, 1\]"),
        ("lvu", "data.span_s=0", "data.span_s: 0 must be at least 1"),
        ("ot_pretrain", "masking.action_weight=-1", "masking.action_weight: -1.0 must not be negative"),
        ("lvu", "data.instance_cache_mb=0", "data.instance_cache_mb: 0 must be at least 1"),
        ("backbone", "augment.brightness=1.5", r"augment.brightness: 1.5 must be in \[0, 1\]"),
        ("backbone", "optim.eta=0", "optim.eta: 0.0 must be positive"),
        ("context", "model.head_hidden=0", "model.head_hidden: 0 must be at least 1"),
        ("context", "maskpred.target_dim=-8", "maskpred.target_dim: -8 must be at least 1"),
        ("vidsitu", "verb.hidden=0", "verb.hidden: 0 must be at least 1"),
        ("ot_pretrain", "masking.swap=0.3", r"masking.replace/swap: need shares in \[0, 1\] summing to <= 1"),
    ],
)
def test_sizes_shares_and_weights_out_of_range_are_one_line(stage, override, line):
    """Settings a typo sends into a torch traceback (a window of 0: "invalid multinomial
    distribution"), a division by zero (CVRL's gap density at power 0) or a silent nonsense run
    (a probability of 1.5, a colour factor below 0, LARS at eta 0, the OT pretraining's swap cut
    short without a word; alpha > 1 gives no size past N - 1, so it is a typo)."""
    with pytest.raises(BadInputError, match=f"^{line}"):
        load_config(stage, "cpu", [override])


@pytest.mark.parametrize("stage", ["backbone", "context", "vidsitu", "lvu", "ot_pretrain"])
@pytest.mark.parametrize(
    "override, line",
    [
        ("trainer.precision=half", "trainer.precision: 'half' is not a precision; choose one of 32-true"),
        ("trainer.precision=bf16mixed", "trainer.precision: 'bf16mixed' is not a precision"),
        ("trainer.accelerator=gpux", "trainer.accelerator: 'gpux' is not an accelerator"),
        ("trainer.devices=abc", "trainer.devices: 'abc': give a count"),
        ("trainer.devices=0", "trainer.devices: 0: give a count"),
        ("trainer.devices=[a]", r"trainer.devices: \['a'\]: give a count"),
        ("trainer.num_nodes=0", "trainer.num_nodes: 0 must be at least 1"),
        ("trainer.strategy=ddpx", "trainer.strategy: 'ddpx' is not a Lightning strategy"),
        ("trainer.strategy=DDP", "trainer.strategy: 'DDP' is not a Lightning strategy"),
        ("trainer.strategy=single_xla", "trainer.strategy: 'single_xla' is not a Lightning strategy"),
    ],
)
def test_machine_settings_lightning_refuses_are_one_line_at_config_time(stage, override, line):
    """Lightning refused these only when the trainer was built (after data preparation), with a
    traceback."""
    with pytest.raises(BadInputError, match=rf"^{line}"):
        load_config(stage, "cpu", [override])


@pytest.mark.parametrize("devices", [1, 4, -1, "auto", "2", "-1", [0, 1], "2,3", "3,", (1,)])
def test_device_settings_lightning_reads_pass_with_the_config(devices, monkeypatch):
    """Forms Lightning reads for some accelerator pass the config check; whether this machine can
    run them is :func:`moviessl.dist.check_machine`'s, at a run's start: a config naming GPUs still
    loads on a machine without any (a saved config read back, a job prepared on a login node)."""
    from moviessl.config import check_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_devices("trainer.devices", devices)
    cfg = load_config("vidsitu", "cpu", {"trainer": {"devices": devices, "accelerator": "gpu"}})
    assert cfg.trainer.accelerator == "gpu"


def test_an_epochs_grid_with_a_zero_is_one_line_at_config_time():
    """Each value becomes a trainer's max_epochs, after the ones before it have trained."""
    with pytest.raises(BadInputError, match=r"^train.epochs_grid: \[2, 0\] must hold epoch counts > 0"):
        load_config("lvu", "cpu", ["train.epochs_grid=[2,0]"])
    assert load_config("lvu", "cpu", ["train.epochs_grid=[2,3]"]).train.epochs_grid == [2, 3]


@pytest.mark.parametrize(
    "precision, weights", [("transformer-engine", "bfloat16"), ("transformer-engine-float16", "float16")]
)
def test_transformer_engine_needs_its_package_and_is_not_for_training(precision, weights, monkeypatch):
    """Lightning's TransformerEngine precision converts the whole module to its weights dtype: a
    training stage refuses it as it refuses a true half precision; without the package, one line."""
    import importlib.util

    from moviessl.config import check_precision

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "transformer_engine" else real(n, *a))
    with pytest.raises(BadInputError, match=rf"^--precision: {precision} needs NVIDIA's transformer_engine package"):
        check_precision("--precision", precision)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "transformer_engine" else real(n, *a)
    )
    check_precision("--precision", precision)  # extraction takes it where the package is installed
    with pytest.raises(
        BadInputError, match=rf"^trainer.precision: {precision} trains weights held in half precision \({weights}\)"
    ):
        load_config("context", "cpu", [f"trainer.precision={precision}"])


def test_a_trainer_config_built_in_code_is_checked_before_the_trainer(tmp_path):
    from moviessl.training import make_trainer

    with pytest.raises(BadInputError, match="^trainer.devices: 'abc'"):  # planned_world_size's int() traced back
        make_trainer({"devices": "abc"}, tmp_path)
    with pytest.raises(BadInputError, match="^trainer.precision: 'half' is not a precision"):
        make_trainer({"precision": "half"}, tmp_path)


@pytest.mark.parametrize(
    "stage, overrides",
    [
        ("context", ["maskpred.alpha=1", "maskpred.replace=0.9", "maskpred.swap=0.1"]),  # 1 - 0.9 is 0.0999...
        ("context", ["maskpred.replace=0.8", "maskpred.swap=0.2"]),
        ("backbone", ["augment.hue=0.5", "augment.flip_p=1", "augment.gray_p=0", "augment.brightness=1"]),
        ("backbone", ["augment.hue=0", "trainer.gradient_clip_val=0", "supervised.label_smoothing=0"]),
        ("lvu", ["model.track_mask=0", "data.box_jitter=0"]),
    ],
)
def test_the_edges_of_each_range_are_accepted(stage, overrides):
    """The context stage refused replace 0.9 / swap 0.1 (1 - 0.9 < 0.1 in floats)."""
    load_config(stage, "cpu", overrides)


def test_every_range_checked_name_is_a_setting():
    """A misspelt name in a range table would check nothing."""
    from moviessl import config as c

    names = set()
    for stage in ("backbone", "context", "vidsitu", "lvu", "ot_pretrain"):
        for preset in c.preset_names(stage):
            names |= {k.rsplit(".", 1)[-1] for k in c.flatten(c.to_dict(load_config(stage, preset)))}
    tables = c._POSITIVE_INT + c._NON_NEGATIVE + c._FRACTION + c._POSITIVE + c._PROBABILITY
    assert sorted(set(tables) - names) == []


def test_exponent_floats_are_numbers_in_mappings_and_lists(tmp_path):
    """PyYAML (YAML 1.1) kept ``5e-2`` a string: a float setting converted it, but a free-form
    mapping (``model.overrides``, the heads' ``*_overrides``) passed it on and a layer traced back."""
    p = tmp_path / "p.yaml"
    p.write_text("_base_: cpu\nmodel:\n  overrides: {dropout: 5e-2, widths: [8, 1E1], depth: 2, x: .inf}\n")
    o = load_config("backbone", p).model.overrides
    assert o["dropout"] == 0.05 and o["widths"] == [8, 10.0] and type(o["depth"]) is int and o["x"] == float("inf")
    o = load_config("backbone", "cpu", ["model.overrides={dropout: 5e-2, depth: 2, name: '1e5'}"]).model.overrides
    assert o == {"dropout": 0.05, "depth": 2, "name": "1e5"} and type(o["depth"]) is int
    cfg = load_config("vidsitu", "cpu", ["srl.txd_overrides={dropout: 1.5e-1}", "verb.lr=2E-3"])
    assert cfg.srl.txd_overrides == {"dropout": 0.15} and cfg.verb.lr == 2e-3
    assert load_config("backbone", "cpu", ["optim.lr=3e-4", "seed=017"]).optim.lr == 3e-4


def test_a_text_setting_takes_an_override_as_written(tmp_path):
    """``data.cache_dir=1e5`` names a folder ``1e5``: it became ``100000.0``."""
    cfg = load_config("backbone", "cpu", ["data.cache_dir=1e5", "data.frame_crop=off", "trainer.precision=16"])
    assert (cfg.data.cache_dir, cfg.data.frame_crop, cfg.trainer.precision) == ("1e5", "off", "16")
    assert load_config("backbone", "cpu", ["data.cache_dir=null"]).data.cache_dir is None
    # spaces around a quoted value are not part of the folder's name, as around any YAML value
    assert load_config("backbone", "cpu", ["data.cache_dir= 1e5 ", "seed= 3 "]).data.cache_dir == "1e5"
    cfg = merge_overrides(load_config("backbone", "cpu"), {"data.cache_dir": "1e5", "model.overrides": {"n": "2e3"}})
    assert cfg.data.cache_dir == "1e5" and cfg.model.overrides == {"n": "2e3"}
    assert load_config("backbone", save_config(cfg, tmp_path)) == cfg  # read back the same


def test_a_base_cycle_and_a_file_not_in_utf8_are_one_line(tmp_path):
    """Both traced back (RecursionError, UnicodeDecodeError); a byte-order mark is read past."""
    (tmp_path / "a.yaml").write_text("_base_: a.yaml\nseed: 1\n")
    with pytest.raises(BadInputError, match=r"a.yaml: _base_ cycle: a.yaml -> a.yaml$"):
        load_config("backbone", tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("_base_: c.yaml\n")
    (tmp_path / "c.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "x.yaml").write_text("_base_: b.yaml\n")
    with pytest.raises(BadInputError, match=r"x.yaml: _base_ cycle: b.yaml -> c.yaml -> b.yaml$"):
        load_config("backbone", tmp_path / "x.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"seed: \xff\xfe\n")
    with pytest.raises(BadInputError, match=r"bin.yaml: not a UTF-8 text file$"):
        load_config("backbone", tmp_path / "bin.yaml")
    (tmp_path / "bom.yaml").write_bytes("\ufeff_base_: cpu\nseed: 5\n".encode())
    assert load_config("backbone", tmp_path / "bom.yaml").seed == 5


@pytest.mark.parametrize("stage", ["backbone", "context", "vidsitu", "lvu", "ot_pretrain"])
def test_a_trainer_without_any_limit_is_one_line(stage, tmp_path):
    """max_steps -1 with max_epochs -1 trained forever or ended in an OverflowError (an infinite
    step count for the schedule); null is no limit too except in the tasks (each task's `epochs`)."""
    line = r"^trainer.max_steps: the run would never end; set trainer.max_steps or trainer.max_epochs$"
    with pytest.raises(BadInputError, match=line):
        load_config(stage, "cpu", ["trainer.max_steps=-1", "trainer.max_epochs=-1"])
    if stage in ("vidsitu", "lvu"):
        assert load_config(stage, "cpu", ["trainer.max_steps=-1", "trainer.max_epochs=null"]).trainer.max_epochs is None
    else:
        with pytest.raises(BadInputError, match=line):
            load_config(stage, "cpu", ["trainer.max_steps=-1", "trainer.max_epochs=null"])
    assert load_config(stage, "cpu", ["trainer.max_steps=-1", "trainer.max_epochs=3"]).trainer.max_epochs == 3
    assert load_config(stage, "cpu", ["trainer.max_steps=5", "trainer.max_epochs=-1"]).trainer.max_steps == 5
    from moviessl.training import make_trainer

    with pytest.raises(BadInputError, match=line):  # a trainer config built in code
        make_trainer({"max_steps": -1, "max_epochs": -1}, tmp_path)


@pytest.mark.parametrize(
    "stage, override, line",
    [
        ("backbone", "optim.name=adam", r"optim.name: unknown optimiser 'adam' \(sgd\|lars\|adamw\)"),
        ("context", "optim.betas=[0.9]", r"optim.betas: \[0.9\] must be two numbers in \[0, 1\)"),
        ("context", "optim.betas=[0.9, 0.98, 0.9]", r"optim.betas: \[0.9, 0.98, 0.9\] must be two numbers in \[0, 1\)"),
        ("context", "optim.betas=[0.9, 1.0]", r"optim.betas: \[0.9, 1.0\] must be two numbers in \[0, 1\)"),
        ("context", "optim.betas=[-0.1, 0.9]", r"optim.betas: \[-0.1, 0.9\] must be two numbers in \[0, 1\)"),
        ("lvu", "train.betas=[0.9]", r"train.betas: \[0.9\] must be two numbers in \[0, 1\)"),
        ("backbone", "optim.final_lr_frac=1.5", r"optim.final_lr_frac: 1.5 must be in \[0, 1\]"),
        ("backbone", "optim.final_lr_frac=-0.1", r"optim.final_lr_frac: -0.1 must be in \[0, 1\]"),
    ],
)
def test_optimiser_settings_are_checked_on_loading(stage, override, line):
    """A misspelt optimiser was refused only in configure_optimizers (after the clips had been
    cached), bad betas traced back from torch, a final_lr_frac above 1 raised the lr instead."""
    with pytest.raises(BadInputError, match=f"^{line}$"):
        load_config(stage, "cpu", [override])


def test_optimiser_settings_at_their_edges_load():
    from moviessl.optim import OPTIMIZERS

    for name in (*OPTIMIZERS, "SGD"):  # make_optimizer takes any case
        assert load_config("backbone", "cpu", [f"optim.name={name}"]).optim.name == name
    assert load_config("backbone", "cpu", ["optim.final_lr_frac=1"]).optim.final_lr_frac == 1
    assert load_config("context", "cpu", ["optim.betas=[0, 0.999]"]).optim.betas == [0, 0.999]


def test_a_misspelt_by_variant_block_is_one_line(tmp_path, capsys):
    """A block for no method (``cvlr``) was silently never merged; the backbone CLI names them."""
    from moviessl import cli
    from moviessl.ssl.registry import list_methods

    p = tmp_path / "v.yaml"
    p.write_text("_base_: paper\nby_variant:\n  supervised: {trainer: {max_epochs: 5}}\n  cvlr: {optim: {lr: 9.0}}\n")
    line = f"by_variant.cvlr: no such method ({', '.join(list_methods())})"
    with pytest.raises(BadInputError) as e:
        load_config("backbone", p, variant="cvrl", variants=list_methods())
    assert str(e.value) == f"{p}: {line}"
    assert load_config("backbone", p, variant="cvrl").optim.lr == 0.32  # without names: unchecked
    for shipped in ("cpu", "paper"):
        load_config("backbone", shipped, variants=list_methods())
    for args in (["pretrain-backbone", "--method", "cvrl", "--out", str(tmp_path / "o")], ["probe-backbone", "m.pt"]):
        rc = cli.main([*args, "--data", "x.csv", "--val", "y.csv", "--preset", str(p)])
        assert rc == 2 and capsys.readouterr().err.strip() == f"moviessl: error: {p}: {line}"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("stage", ["backbone", "context", "ot_pretrain", "vidsitu", "lvu"])
def test_a_seed_outside_numpys_range_is_one_line_for_every_stage(stage):
    """Pretraining stages passed seed=-1 to Lightning's seed_everything: a ValueError traceback."""
    with pytest.raises(BadInputError, match=r"^seed: -1 must be in 0\.\.4294967295"):
        load_config(stage, "cpu", ["seed=-1"])
    assert load_config(stage, "cpu", [f"seed={2**32 - 1}"]).seed == 2**32 - 1


def test_lvu_scene_stride_must_be_positive_or_null():
    with pytest.raises(BadInputError, match=r"data\.scene_stride_s: 0(\.0)? must be positive"):
        load_config("lvu", "cpu", ["data.scene_stride_s=0"])
    assert load_config("lvu", "cpu", ["data.scene_stride_s=null"]).data.scene_stride_s is None


def test_a_key_given_twice_in_a_preset_is_one_line(tmp_path):
    # PyYAML keeps the last of two equal keys: the first `optim:` block (its lr) was dropped unseen
    p = tmp_path / "p.yaml"
    p.write_text("_base_: cpu\noptim:\n  lr: 0.5\ntrainer:\n  max_steps: 7\noptim:\n  weight_decay: 0.0\n")
    with pytest.raises(BadInputError, match=r"p\.yaml: invalid YAML \(duplicate key 'optim' \(line 6\)"):
        load_config("context", p)
    p.write_text("_base_: cpu\noptim:\n  lr: 0.5\n  lr: 0.7\n")
    with pytest.raises(BadInputError, match="duplicate key 'lr' .line 4."):
        load_config("context", p)
    # a YAML merge key's entries may be overridden by the mapping's own
    q = tmp_path / "q.yaml"
    q.write_text("_base_: cpu\noptim:\n  <<: {lr: 0.5, weight_decay: 0.0}\n  lr: 0.7\n")
    cfg = load_config("context", q)
    assert cfg.optim.lr == pytest.approx(0.7) and cfg.optim.weight_decay == 0.0


@pytest.mark.parametrize("override", ["optim.betas.0=0.8", "optim.betas={a: 1}", "optim={betas: {1: 0.9}}"])
def test_an_entry_of_a_list_setting_is_one_line(override, tmp_path):
    # OmegaConf's "Cannot merge incompatible container types" TypeError, a traceback naming no key
    with pytest.raises(BadInputError, match=r"^optim\.betas in overrides is a list setting; give the whole list"):
        load_config("context", "cpu", [override])
    with pytest.raises(BadInputError, match=r"optim\.betas in overrides is a list setting"):
        merge_overrides(load_config("context", "cpu"), {"optim.betas.1": 0.9})
    p = tmp_path / "p.yaml"
    p.write_text("_base_: cpu\noptim:\n  betas:\n    0: 0.8\n")
    with pytest.raises(BadInputError, match=r"p\.yaml: optim\.betas in the preset is a list setting"):
        load_config("context", p)


@pytest.mark.parametrize("override", ["txe.overrides=[1]", "srl.txd_overrides=[1, 2]"])
def test_a_list_given_to_a_mapping_setting_is_one_line(override):
    # the mirror of the case above: the same TypeError traceback
    key = override.split("=")[0].replace(".", r"\.")
    with pytest.raises(BadInputError, match=rf"^{key} in overrides is a mapping setting; give the whole mapping"):
        load_config("vidsitu", "cpu", [override])


def test_a_tilde_in_a_path_setting_is_the_home_folder(tmp_path, monkeypatch):
    """A preset or a quoted override goes through no shell: ``data.cache_dir=~/c`` made a folder
    named ``~`` in the working directory, ``data.split_file=~/s.json`` was not found."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config("backbone", "cpu", ["data.cache_dir=~/cache", "model.init=~/w.pt"])
    assert (cfg.data.cache_dir, cfg.model.init) == (str(tmp_path / "cache"), str(tmp_path / "w.pt"))
    cfg = merge_overrides(load_config("vidsitu", "cpu"), ["data.split_file=~/valid.json"])
    assert cfg.data.split_file == str(tmp_path / "valid.json")
    assert load_config("backbone", "cpu", ["data.cache_dir=c~1"]).data.cache_dir == "c~1"  # a leading ~ only


def test_the_sup_k400_schedule_is_pyslowfasts():
    """PySlowFast's get_lr_at_epoch (COSINE_AFTER_WARMUP False): a cosine over all 196 epochs, the
    34 warm-up epochs rising linearly from WARMUP_START_LR 0.01 to the cosine's value at epoch 34.
    The preset warmed up from 0 to 0.1 and ran its cosine over the last 162 epochs."""
    import math

    from moviessl.optim import warmup_schedule, warmup_steps

    o = load_config("backbone", "paper", variant="supervised").optim
    per_epoch = 10
    total = 196 * per_epoch
    warm = warmup_steps(o.warmup_frac, total)
    assert warm == 34 * per_epoch

    def pyslowfast(epoch: float) -> float:
        cosine = lambda e: 0.1 * (math.cos(math.pi * e / 196) + 1) * 0.5  # noqa: E731
        if epoch < 34:
            return 0.01 + (cosine(34) - 0.01) / 34 * epoch
        return cosine(epoch)

    for step in (0, 5, 170, 339, 340, 341, 1000, 1959):
        got = o.lr * warmup_schedule(
            step, total, warm, o.final_lr_frac, "cosine", o.warmup_start_frac, o.cosine_over_warmup
        )
        assert got == pytest.approx(pyslowfast(step / per_epoch), rel=1e-9, abs=1e-12), step
    # the defaults are unchanged: warm-up from 1/warmup, cosine after it
    assert warmup_schedule(0, 100, 10) == 0.1 and warmup_schedule(10, 100, 10) == 1.0


@pytest.mark.parametrize("method", ["cvrl", "modist"])
def test_the_cvrl_schedule_is_cvrls_code(method):
    """CVRL's code (tensorflow/models, official/projects/video_ssl, cvrl_pretrain_k600_200ep.yaml):
    ``LinearWarmup`` from 0 over ``CosineDecay(0.32, decay_steps=train_steps)``, i.e. one cosine over
    the whole run that the warm-up rises to. The preset ran its cosine over the steps after the
    warm-up. Ours takes the warm-up's first step at 1/warmup, not 0 (one step ahead of TF's)."""
    import math

    from moviessl.optim import warmup_schedule, warmup_steps

    o = load_config("backbone", "paper", variant=method).optim
    per_epoch = 10
    total = 400 * per_epoch
    warm = warmup_steps(o.warmup_frac, total)
    assert warm == 5 * per_epoch

    def tf_cvrl(step: int) -> float:
        cosine = lambda s: 0.32 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))  # noqa: E731
        return step / warm * cosine(warm) if step < warm else cosine(step)

    for step in (0, 10, 49, 50, 51, 1000, 2000, 3999):
        got = o.lr * warmup_schedule(
            step, total, warm, o.final_lr_frac, "cosine", o.warmup_start_frac, o.cosine_over_warmup
        )
        want = tf_cvrl(step + 1 if step < warm else step)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), step
    assert (o.name, o.nesterov, o.final_lr_frac) == ("sgd", False, 0.0)
    # the cpu preset (every demo result) keeps the cosine after the warm-up
    assert load_config("backbone", "cpu", variant=method).optim.cosine_over_warmup is False


def test_the_sup_k400_sgd_is_nesterovs_and_only_sgd_takes_it(tmp_path):
    """PySlowFast's SGD is Nesterov's (SOLVER.NESTEROV True); LARS or AdamW would ignore the flag."""
    from moviessl.optim import make_optimizer

    o = load_config("backbone", "paper", variant="supervised").optim
    p = torch.nn.Parameter(torch.zeros(2))
    opt = make_optimizer([{"params": [p]}], o.name, o.lr, momentum=o.momentum, nesterov=o.nesterov)
    assert o.name == "sgd" and opt.param_groups[0]["nesterov"] is True
    assert load_config("backbone", "paper", variant="cvrl").optim.nesterov is False
    with pytest.raises(BadInputError, match="only optim.name=sgd takes Nesterov"):
        load_config("backbone", "cpu", ["optim.name=lars", "optim.nesterov=true"])


@pytest.mark.parametrize("stage", ["backbone", "context", "vidsitu", "ot_pretrain", "lvu"])
def test_an_unknown_profiler_is_one_line_before_any_work(stage, tmp_path):
    """Only the trainer refused it, once built: after a backbone run had cached its clips and flow."""
    from moviessl.training import check_trainer

    with pytest.raises(BadInputError, match=r"^trainer.profiler: choose simple or advanced .*'Simple'"):
        load_config(stage, "cpu", ["trainer.profiler=Simple"])
    p = tmp_path / "mine.yaml"
    p.write_text("_base_: cpu\ntrainer:\n  profiler: yes\n")  # YAML 1.1's true, as the text 'True'
    with pytest.raises(BadInputError, match=r"^trainer.profiler: choose simple or advanced"):
        load_config(stage, p)
    cfg = load_config(stage, "cpu", ["trainer.profiler=advanced"])
    cfg.trainer.profiler = "pytorch2"  # a trainer block changed in code is checked before the work too
    with pytest.raises(BadInputError, match=r"^trainer.profiler: choose simple or advanced"):
        check_trainer(cfg.trainer)
    assert load_config(stage, "cpu", ["trainer.profiler="]).trainer.profiler == ""  # as unset: no profiler


def test_a_date_is_text_as_written(tmp_path):
    """YAML 1.1 reads 2026-12-05 as a date, which OmegaConf cannot hold: a traceback, in a preset (a
    cache folder named by date) or an override; YAML 1.2 has no dates, so it is the text as written."""
    p = tmp_path / "mine.yaml"
    p.write_text("_base_: cpu\ndata:\n  cache_dir: 2026-12-05\nmodel:\n  overrides: {run: 2026-12-05 10:00:00}\n")
    cfg = load_config("backbone", p, ["model.init=2026-12-05", "model.overrides.tag=[2026-12-05]"])
    assert cfg.data.cache_dir == "2026-12-05" and cfg.model.init == "2026-12-05"
    assert cfg.model.overrides == {"run": "2026-12-05 10:00:00", "tag": ["2026-12-05"]}
    with pytest.raises(BadInputError, match=r"^trainer.devices: '2026-12-05': give a count"):
        load_config("backbone", "cpu", ["trainer.devices=2026-12-05"])
    saved = save_config(cfg, tmp_path / "run")  # read back as text by the loader and by PyYAML alike
    assert load_config("backbone", saved).data.cache_dir == "2026-12-05"
    assert yaml.safe_load(saved.read_text())["data"]["cache_dir"] == "2026-12-05"


def test_a_number_with_a_leading_zero_is_decimal(tmp_path):
    """YAML 1.1 reads 010 as octal (eight), 0755 as 493, but 08 and 09 as decimals: `seed=010` or
    `trainer.max_steps: 0100` in a preset silently became another number. As in YAML 1.2, 010 is
    ten and 0o10 is eight, in a preset, an override and a free-form mapping alike."""
    p = tmp_path / "mine.yaml"
    p.write_text("_base_: cpu\nseed: 010\ntrainer:\n  max_steps: 0100\n")
    cfg = load_config("backbone", p, ["data.batch_size=016", "model.overrides.x=[010, 0o10, 08]"])
    assert (cfg.seed, cfg.trainer.max_steps, cfg.data.batch_size) == (10, 100, 16)
    assert cfg.model.overrides["x"] == [10, 8, 8]
    cfg = load_config("backbone", "cpu", ["data.cache_dir=0o10", "model.init=08"])  # text: as written
    saved = save_config(cfg, tmp_path / "run")  # quoted, so read back as the same text
    assert (load_config("backbone", saved).data.cache_dir, load_config("backbone", saved).model.init) == ("0o10", "08")


def test_an_empty_or_malformed_by_variant_block_is_not_a_traceback(tmp_path):
    """A method's block with its settings commented out is null: merging it was OmegaConf's
    ValueError traceback, for that method's runs only. A block that is not a mapping was read letter
    by letter ('by_variant.c: no such method')."""
    p = tmp_path / "mine.yaml"
    p.write_text("_base_: cpu\nby_variant:\n  modist:\n    # optim: {lr: 1.0e-2}\n")
    assert load_config("backbone", p, variant="modist").optim.lr == load_config("backbone", "cpu").optim.lr
    for block in ("cvrl", "[cvrl]"):
        p.write_text(f"_base_: cpu\nby_variant: {block}\n")
        with pytest.raises(BadInputError, match=r"mine.yaml: by_variant must map each method to its settings"):
            load_config("backbone", p, variant="cvrl", variants=("cvrl", "modist"))


@pytest.mark.parametrize("stage", ["context", "vidsitu", "ot_pretrain", "lvu"])
def test_a_by_variant_block_in_a_stage_without_variants_is_one_line(stage, tmp_path):
    """Only the backbone's runs have variants (its methods): a block elsewhere (`srl:` in a VidSitu
    preset) was never merged, without a word."""
    p = tmp_path / "mine.yaml"
    p.write_text("_base_: cpu\nby_variant:\n  srl:\n    seed: 7\n")
    with pytest.raises(BadInputError, match=rf"mine.yaml: by_variant: {stage} runs have no variants"):
        load_config(stage, p)
    p.write_text("_base_: cpu\nby_variant: null\nseed: 7\n")
    assert load_config(stage, p).seed == 7


def test_an_interpolation_that_cannot_be_resolved_is_one_line(tmp_path, monkeypatch):
    """`${USER}` meant as the environment's (Hydra's users write it), a `${` left open or a loop was
    OmegaConf's traceback, raised when the config was first read; one line naming the setting, and
    the file where the preset holds it. A `${...}` that resolves still does."""
    monkeypatch.setenv("MOVIESSL_TEST_SCRATCH", "/scratch/me")
    p = tmp_path / "mine.yaml"
    p.write_text("_base_: cpu\ndata:\n  cache_dir: /scratch/${USER}/cache\n")
    with pytest.raises(BadInputError, match=r"mine.yaml: data.cache_dir: Interpolation key 'USER' not found \(\$"):
        load_config("backbone", p)
    p.write_text("_base_: cpu\nmodel:\n  overrides:\n    width: ${\n")
    with pytest.raises(BadInputError, match=r"mine.yaml: model.overrides.width: "):
        load_config("backbone", p)
    for override, line in [
        ("data.cache_dir=/s/${USER}", r"^data.cache_dir: Interpolation key 'USER' not found"),
        ("optim.lr=${optim.lr}", r"^optim.lr: Recursive interpolation detected"),
        ("model.overrides.x=${", r"^override model.overrides.x: "),
    ]:
        with pytest.raises(BadInputError, match=line):
            load_config("backbone", "cpu", [override])
        with pytest.raises(BadInputError, match=line):
            merge_overrides(load_config("backbone", "cpu"), [override])
    cfg = load_config("backbone", "cpu", ["data.cache_dir=${oc.env:MOVIESSL_TEST_SCRATCH}/c", "optim.lr=${seed}"])
    assert cfg.data.cache_dir == "/scratch/me/c" and cfg.optim.lr == float(cfg.seed)


def test_a_text_setting_in_a_preset_is_the_text_as_written(tmp_path):
    """YAML 1.1 reads `no` as false, `1e5` as 100000.0, `1.10` as 1.1: a preset's folder named so
    became the folder `False` (`100000.0`, `1.1`) without a word, where an override kept the text.
    A str setting now takes the text as written, through `_base_`, `<<` and by_variant alike."""
    (tmp_path / "base.yaml").write_text("_base_: cpu\ndata:\n  cache_dir: no\n")
    p = tmp_path / "mine.yaml"
    p.write_text(
        "_base_: base.yaml\nmodel:\n  init: 1e5\n  preset: slowd_cpu\n  overrides: {n: 1e5}\n"
        "trainer:\n  <<: {precision: 16}\n  tensorboard: yes\n  matmul_precision: null\n"
        "by_variant:\n  cvrl:\n    model: {init: 1.10}\n"
    )
    cfg = load_config("backbone", p)
    assert (cfg.data.cache_dir, cfg.model.init, cfg.trainer.precision) == ("no", "1e5", "16")
    assert cfg.model.overrides == {"n": 1e5} and cfg.trainer.tensorboard is True  # not text settings
    assert cfg.trainer.matmul_precision is None and load_config("backbone", p, variant="cvrl").model.init == "1.10"
    assert load_config("backbone", save_config(cfg, tmp_path / "run")) == cfg  # read back the same
    q = tmp_path / "lvu.yaml"
    q.write_text("_base_: cpu\ndata:\n  eval_splits: [val, 2020, off]\n")
    assert load_config("lvu", q).data.eval_splits == ["val", "2020", "off"]


def test_a_mapping_given_to_trainer_devices_is_one_line(tmp_path):
    """`devices` is typed Any, so a mapping loaded; the check split it (`trainer.devices.a`) and
    never checked `trainer.devices`: a TypeError traceback when the trainer was planned."""
    from moviessl.training import make_trainer

    line = r"^trainer.devices: \{'a': 1\}: give a count"
    with pytest.raises(BadInputError, match=line):
        load_config("backbone", "cpu", ["trainer.devices={a: 1}"])
    p = tmp_path / "mine.yaml"
    p.write_text("_base_: cpu\ntrainer:\n  devices:\n    a: 1\n")
    with pytest.raises(BadInputError, match=line):
        load_config("context", p)
    with pytest.raises(BadInputError, match=line):
        make_trainer({"devices": {"a": 1}}, tmp_path)
    assert flatten({"trainer": {"devices": {"a": 1}}}, whole={"trainer.devices"}) == {"trainer.devices": {"a": 1}}


@pytest.mark.parametrize("devices", [[0, 0], "1,1", [2, 3, 2]])
def test_a_device_id_given_twice_is_one_line(devices, monkeypatch, tmp_path):
    """Lightning refuses duplicate GPU ids only when it builds the trainer, after the clips were
    cached or the features read; dist.check_machine let them through."""
    from moviessl.config import check_devices
    from moviessl.dist import check_machine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    check_machine("gpu", devices)  # the machine has the ids: only the config check refuses them
    with pytest.raises(BadInputError, match=r"^trainer.devices: .*: device id \d is given twice"):
        load_config("vidsitu", "cpu", {"trainer": {"devices": devices, "accelerator": "gpu"}})
    with pytest.raises(BadInputError, match=r"^--devices: .*: device id \d is given twice"):
        check_devices("--devices", devices)


@pytest.mark.parametrize("value", ["2", "-1", "'2'", "10"])
def test_a_bool_setting_takes_only_0_or_1_as_a_number(value, tmp_path):
    """OmegaConf reads any int as a bool (``value != 0``): ``trainer.tensorboard=2`` (a count, a typo
    for a name) was silently true. 0 and 1 and the YAML words still are bools."""
    with pytest.raises(BadInputError, match=r"^bad value in overrides for trainer.tensorboard \(.*is not a bool"):
        load_config("context", "cpu", [f"trainer.tensorboard={value}"])
    p = tmp_path / "mine.yaml"
    p.write_text(f"_base_: cpu\ndata:\n  frame_cache: {value}\nby_variant:\n  cvrl:\n    trainer: {{benchmark: 7}}\n")
    with pytest.raises(BadInputError, match=r"mine.yaml: bad value in the preset for data.frame_cache \("):
        load_config("backbone", p)
    p.write_text("_base_: cpu\nby_variant:\n  cvrl:\n    trainer: {benchmark: 7}\n")
    with pytest.raises(BadInputError, match=r"mine.yaml: bad value in by_variant.cvrl for trainer.benchmark \(7 is"):
        load_config("backbone", p, variant="cvrl")
    with pytest.raises(BadInputError, match=r"^bad value in overrides for optim.nesterov"):
        merge_overrides(load_config("backbone", "cpu"), {"optim": {"nesterov": int(value.strip("'"))}})
    for given, read in [("1", True), ("0", False), ("'1'", True), ("yes", True), ("off", False), ("null", None)]:
        assert load_config("backbone", "cpu", [f"trainer.benchmark={given}"]).trainer.benchmark is read


@pytest.mark.parametrize("override", ["=1", " =1", ".seed=1", "optim..lr=1", "seed.=1"])
def test_an_override_with_an_empty_key_part_is_one_line(override):
    """`=1` was "unknown config key 'Key '' not in 'BackboneConfig''", `seed.=1` a DictConfig that
    could not be converted to an integer, `optim..lr=1` the unknown key 'optim'."""
    line = r"^override '.*' names no key \(an empty part in '.*'\); give key.sub=value$"
    with pytest.raises(BadInputError, match=line):
        load_config("backbone", "cpu", [override])


def test_an_unknown_key_names_the_nearest_known_one(tmp_path):
    """A misspelt key was refused without the setting meant; the line now names a close one."""
    with pytest.raises(
        BadInputError, match=r"^unknown config key 'optim.lrr' in overrides \(did you mean optim.lr\?\)$"
    ):
        load_config("backbone", "cpu", ["optim.lrr=1"])
    p = tmp_path / "mine.yaml"
    p.write_text("_base_: cpu\ndata:\n  cache_dirr: /c\nby_variant:\n  cvrl: {trainer: {tensorbord: true}}\n")
    with pytest.raises(
        BadInputError, match=r"unknown config key 'data.cache_dirr' in the preset \(did you mean data.cache_dir"
    ):
        load_config("backbone", p)
    p.write_text("_base_: cpu\nby_variant:\n  cvrl: {trainer: {tensorbord: true}}\n")
    with pytest.raises(
        BadInputError, match=r"'trainer.tensorbord' in by_variant.cvrl \(did you mean trainer.tensorboard"
    ):
        load_config("backbone", p, variant="cvrl")
    with pytest.raises(BadInputError, match=r"^unknown config key 'xyz' in overrides$"):  # nothing close
        load_config("context", "cpu", ["xyz=1"])


def test_a_runs_record_names_the_preset_overrides_and_version_that_made_it(preset, tmp_path, monkeypatch):
    """config.yaml holds resolved values only: a folder came back to later named no preset, no
    command-line overrides and no moviessl version. run.json beside it does; config.yaml, which the
    resume and drift checks compare, is the same text as before."""
    import json
    import subprocess
    import sys

    import moviessl
    from moviessl.tasks.base import seed_config

    monkeypatch.setattr(sys, "argv", ["moviessl", "pretrain-backbone", "seed=3", "optim.lr=0.25"])
    cfg = load_config("backbone", preset, ["seed=3", "optim.lr=0.25"], variant="cvrl")
    run = tmp_path / "run"
    text = save_config(cfg, run).read_text()
    assert "moviessl" not in text and "argv" not in text
    rec = json.loads((run / "run.json").read_text())
    assert rec["moviessl"] == moviessl.__version__ and rec["argv"] == sys.argv
    assert (rec["preset"], rec["variant"], rec["overrides"]) == (str(preset), "cvrl", ["seed=3", "optim.lr=0.25"])
    assert rec["stage"] == "backbone" and rec["host"] and rec["date"]
    src = Path(moviessl.__file__).parent
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert rec["git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    # overrides merged later (a task's resolve_config) and a seed folder's own seed keep the record
    more = merge_overrides(cfg, ["optim.weight_decay=0.5"])
    save_config(seed_config(more, 4), tmp_path / "seed4")
    rec = json.loads((tmp_path / "seed4" / "run.json").read_text())
    assert (rec["preset"], rec["overrides"]) == (str(preset), ["seed=3", "optim.lr=0.25", "optim.weight_decay=0.5"])
    # a config this process did not resolve from a preset names none, rather than another's
    other = load_config("backbone", preset, ["seed=3", "optim.lr=0.5"])
    other.optim.lr = 0.75
    save_config(other, tmp_path / "other")
    assert json.loads((tmp_path / "other" / "run.json").read_text())["preset"] is None


def test_an_escaped_interpolation_is_the_literal_text(tmp_path):
    r"""`\${x}` is OmegaConf's escape for a literal `${x}`: resolving the config in place turned it into
    `${x}`, which the next read took for an interpolation (a traceback from missing_keys). It is now
    the text `${x}`, from an override or a preset, through merge_overrides, and a saved config loads
    back the same."""
    p = tmp_path / "mine.yaml"
    p.write_text("_base_: cpu\ndata:\n  cache_dir: \\${x}/c\nmodel:\n  overrides: {tag: '\\${y}'}\n")
    for cfg in (
        load_config("backbone", p),
        load_config("backbone", "cpu", [r"data.cache_dir=\${x}/c", r"model.overrides={tag: '\${y}'}"]),
    ):
        assert cfg.data.cache_dir == "${x}/c" and cfg.model.overrides == {"tag": "${y}"}
        again = merge_overrides(cfg, ["seed=3"])
        assert (again.data.cache_dir, again.model.overrides, again.seed) == ("${x}/c", {"tag": "${y}"}, 3)
        assert load_config("backbone", save_config(cfg, tmp_path / "run")) == cfg
    # a backslash before the escape is a backslash; `~` still becomes the home folder
    cfg = load_config("backbone", "cpu", [r"data.cache_dir=~/a\\\${seed}"])
    assert cfg.data.cache_dir == str(Path.home() / "a") + "\\${seed}"


def test_a_list_of_text_settings_takes_an_override_as_written():
    """An override of a list-of-str setting went through YAML 1.1: `data.eval_splits=[010, no, 1e3]`
    became the splits `10`, `False` and `1000.0`, where a str setting and a preset's list keep the text
    as written. A null entry is still refused, and a list in code (quoted on the way) is unchanged."""
    given = "[010, no, 1e3, 1.10, 'x']"
    want = ["010", "no", "1e3", "1.10", "x"]
    assert load_config("lvu", "cpu", [f"data.eval_splits={given}"]).data.eval_splits == want
    assert merge_overrides(load_config("lvu", "cpu"), [f"data.eval_splits={given}"]).data.eval_splits == want
    assert merge_overrides(load_config("lvu", "cpu"), {"data.eval_splits": ["010", "no"]}).data.eval_splits == [
        "010",
        "no",
    ]
    assert load_config("backbone", "cpu", ["cvrl.intra_neg=[off]"]).cvrl.intra_neg == ["off"]
    with pytest.raises(BadInputError, match=r"data.eval_splits\[1\]"):
        load_config("lvu", "cpu", ["data.eval_splits=[val, null]"])


@pytest.mark.parametrize(
    "stage, override, line",
    [
        ("lvu", "data.eval_splits=[val, [test]]", r"data.eval_splits\[1\] \(\['test'\] is not a str\)"),
        ("lvu", "train.epochs_grid=[{a: 1}]", r"train.epochs_grid\[0\] \(\{'a': 1\} is not an int\)"),
        ("backbone", "cvrl.intra_neg=[[a]]", r"cvrl.intra_neg\[0\] \(\['a'\] is not a str\)"),
        ("context", "maskpred.mask_sizes=[1, [2]]", r"maskpred.mask_sizes\[1\] \(\[2\] is not an int\)"),
    ],
)
def test_a_list_or_mapping_inside_a_list_of_values_is_one_line(stage, override, line, tmp_path):
    """OmegaConf checks the type of a scalar entry of a typed list but lets a list or mapping through:
    `data.eval_splits=[val, [test]]` loaded, and the LVU task traced back on the list as a split;
    `train.epochs_grid=[[2]]` passed the range check. One line naming the entry, from an override,
    merge_overrides or a preset file."""
    with pytest.raises(BadInputError, match=rf"^bad value in overrides for {line}"):
        load_config(stage, "cpu", [override])
    with pytest.raises(BadInputError, match=rf"^bad value in overrides for {line}"):
        merge_overrides(load_config(stage, "cpu"), [override])
    key, _, value = override.partition("=")
    block, leaf = key.split(".")
    p = tmp_path / "mine.yaml"
    p.write_text(f"_base_: cpu\n{block}:\n  {leaf}: {value}\n")
    with pytest.raises(BadInputError, match=rf"mine.yaml: bad value in the preset for {line}"):
        load_config(stage, p)


@pytest.mark.parametrize("block", ["5", "modist", "[1]", "true"])
def test_a_by_variant_block_that_is_not_a_mapping_is_one_line(block, tmp_path):
    """`by_variant: {cvrl: 5}` (a value where the method's settings go) was OmegaConf's ValueError
    traceback ("Invalid input. Supports one of [dict,list,...]") for that method's runs, and a list
    was an OmegaConf line naming no block; each is one line naming the block, for every method's run."""
    p = tmp_path / "mine.yaml"
    p.write_text(f"_base_: cpu\nby_variant:\n  cvrl: {block}\n")
    for variant in ("cvrl", "modist"):
        with pytest.raises(BadInputError, match=r"mine.yaml: by_variant.cvrl must map settings to values"):
            load_config("backbone", p, variant=variant, variants=("cvrl", "modist"))


def test_a_yaml_alias_inside_itself_is_one_line(tmp_path):
    """`a: &x [*x]` is a list that holds itself (valid YAML): OmegaConf recursed on it without end, a
    RecursionError traceback, from a preset or an override. One line naming the setting; an alias
    used twice (no loop) still loads."""
    p = tmp_path / "mine.yaml"
    p.write_text("_base_: cpu\nmodel: {overrides: {a: &x [1, *x]}}\n")
    with pytest.raises(BadInputError, match=r"mine.yaml: model.overrides.a\[1\]: a YAML alias"):
        load_config("backbone", p)
    with pytest.raises(BadInputError, match=r"^override model.overrides.a: a YAML alias"):
        load_config("backbone", "cpu", ["model.overrides=&x {a: *x}"])
    ok = load_config("backbone", "cpu", ["model.overrides={a: &x [1], b: *x}"]).model.overrides
    assert ok == {"a": [1], "b": [1]}


def test_a_path_or_numpy_value_in_mapping_overrides_is_its_value():
    """Overrides given in code as a mapping (the tasks' `cfg`, `merge_overrides`) went through
    PyYAML's safe dumper, which knows no `Path` or NumPy scalar: `{"data.split_file": Path(...)}` or a
    seed drawn by NumPy was a RepresenterError traceback. A path is its text, a NumPy value its Python
    value; another object is one line naming the override."""
    import numpy as np

    given = {"seed": np.int64(3), "train.lr": np.float32(0.5), "train.betas": np.array([0.5, 0.9])}
    cfg = merge_overrides(load_config("lvu", "cpu"), {**given, "model.overrides": {"p": Path("/a")}})
    assert (cfg.seed, cfg.train.lr, cfg.train.betas, cfg.model.overrides["p"]) == (3, 0.5, [0.5, 0.9], "/a")
    assert load_config("vidsitu", "cpu", {"data.split_file": Path("/x/y.txt")}).data.split_file == "/x/y.txt"
    with pytest.raises(BadInputError, match=r"^override train.betas: object is no config value"):
        merge_overrides(load_config("lvu", "cpu"), {"train.betas": [1, object()]})


def test_a_text_override_keeps_a_hash_as_written():
    """A command line has no comments, but an override's value was read as YAML, where ` #` starts
    one: `data.cache_dir=run #3` named the folder `run`, and `data.cache_dir=#3` left it null (the
    default folder), without a word. A text setting now takes the text after `=`; a quoted value and
    a null are read as before."""
    for given, want in [("run #3", "run #3"), ("#3", "#3"), ("'a #b'", "a #b"), ("null", None), ("1e5", "1e5")]:
        assert load_config("backbone", "cpu", [f"data.cache_dir={given}"]).data.cache_dir == want
        assert merge_overrides(load_config("backbone", "cpu"), [f"data.cache_dir={given}"]).data.cache_dir == want


def test_only_the_jobs_leader_writes_its_config_and_record(preset, tmp_path, monkeypatch):
    """Every process of a launch runs the same command into the same folder: each rank rewrote the
    job's config.yaml and run.json (the last one's host, on another node), and on a resume with other
    settings each kept the one before as a part. Only the leader (rank 0 on node 0) writes them now."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    for key in ("NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(key, raising=False)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    first = save_config(load_config("backbone", preset, ["seed=1"]), run)
    before = sorted((p.name, p.read_bytes()) for p in run.iterdir() if p.is_file())
    assert [n for n, _ in before] == ["config.yaml", "run.json"]
    resumed = load_config("backbone", preset, ["seed=2"])
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # torchrun's rank 1
    assert save_config(resumed, run) == first
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    monkeypatch.setenv("NODE_RANK", "1")  # the first process of node 1 under Lightning's launcher
    assert save_config(resumed, run) == first
    assert sorted((p.name, p.read_bytes()) for p in run.iterdir() if p.is_file()) == before
    monkeypatch.delenv("NODE_RANK")
    save_config(resumed, run)  # the leader's
    assert sorted(p.name for p in run.iterdir() if p.is_file()) == [
        "config.part000.yaml",
        "config.yaml",
        "run.json",
        "run.part000.json",
    ]


@pytest.mark.parametrize("override", ["[=1", "[[0=1", "optim[lr]x=0.5", "optim.lr[=0.5", "optim.betas[0]=0.5"])
def test_an_override_key_with_brackets_is_one_line(override):
    """OmegaConf reads `[...]` in a key as its own indexing: `[=1` was an IndexError traceback from
    OmegaConf.update, `optim[lr]x=0.5` silently set optim.lr, `optim.betas[0]=0.5` an unknown key."""
    line = r"^override '.*': a key is dotted names \(key.sub=value\), without \[...\]$"
    with pytest.raises(BadInputError, match=line):
        load_config("backbone", "cpu", [override])
