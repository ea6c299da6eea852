"""YAML presets with dotted command-line overrides.

Each stage has a folder of presets under ``moviessl/configs/<stage>/`` (at least ``paper.yaml``, the
paper's settings, and ``cpu.yaml``, small enough for a 2-core machine). A preset may start from
another one with ``_base_: other.yaml`` (a path relative to the preset). Overrides are
``key.sub=value`` strings parsed as YAML values (``trainer.precision=bf16-mixed``,
``optim.lr=0.3``, ``data.size=[64,64]``). An override of a key that no preset defines is an error,
so a typo never silently does nothing. Every run saves the resolved config beside its outputs
(:func:`save_config`).

A preset may also hold ``by_variant: {name: {...}}``: settings merged over the preset for one
variant of the stage (the backbone stage's variants are the methods, e.g. MoDist's longer cpu
schedule), before the command-line overrides, so ``key=value`` on the command line still wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .errors import BadInputError
from .utils.io import atomic_write_text

CONFIG_DIR = Path(__file__).parent / "configs"


def preset_names(stage: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / stage).glob("*.yaml") if not p.stem.startswith("_"))


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise BadInputError(path, "config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise BadInputError(path, f"invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BadInputError(path, "a config file must hold a mapping")
    base = data.pop("_base_", None)
    cfg = OmegaConf.create(data)
    if base is not None:
        cfg = OmegaConf.merge(_read_yaml((path.parent / base).resolve()), cfg)
    return cfg


def _preset_path(stage: str, preset: str | os.PathLike) -> Path:
    p = Path(preset)
    if p.suffix in (".yaml", ".yml"):
        return p  # a user's own preset file
    path = CONFIG_DIR / stage / f"{preset}.yaml"
    if not path.is_file():
        raise BadInputError(
            None, f"unknown {stage} preset '{preset}' (choose from {', '.join(preset_names(stage))} or give a .yaml file)"
        )
    return path


def parse_overrides(overrides: Iterable[str]) -> DictConfig:
    items: dict[str, Any] = {}
    for ov in overrides:
        if "=" not in ov:
            raise BadInputError(None, f"override '{ov}' is not of the form key.sub=value")
        key, _, raw = ov.partition("=")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):
            try:  # PyYAML (YAML 1.1) reads "1e-3" as a string; users mean a number
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                pass
        items[key.strip()] = value
    cfg = OmegaConf.create({})
    for key, value in items.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def merge_overrides(cfg: DictConfig, overrides: Iterable[str] | Mapping[str, Any]) -> DictConfig:
    """Merge overrides into ``cfg``; every overridden key must already exist."""
    if isinstance(overrides, Mapping):
        overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in overrides.items()]
    ov = parse_overrides(list(overrides))
    OmegaConf.set_struct(cfg, True)
    _open_empty_mappings(cfg)
    try:
        merged = OmegaConf.merge(cfg, ov)
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e).splitlines()[0]
        raise BadInputError(None, f"unknown config key '{key}' in overrides") from None
    except OmegaConfBaseException as e:
        raise BadInputError(None, f"bad override ({str(e).splitlines()[0]})") from None
    OmegaConf.set_struct(merged, False)
    return merged


def _open_empty_mappings(node: DictConfig) -> None:
    """A mapping a preset leaves empty (``model.overrides: {}``) is free-form: any key may be added."""
    for key in list(node.keys()):
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            if len(child) == 0:
                OmegaConf.set_struct(child, False)
            else:
                _open_empty_mappings(child)


def load_config(stage: str, preset: str | os.PathLike = "cpu", overrides: Iterable[str] | Mapping[str, Any] = (),
                variant: str | None = None) -> DictConfig:
    """The resolved config of a stage: preset file, its ``by_variant[variant]`` block, then the
    dotted overrides."""
    cfg = _read_yaml(_preset_path(stage, preset))
    by_variant = cfg.pop("by_variant", None) or {}
    if variant is not None and variant in by_variant:
        try:
            OmegaConf.set_struct(cfg, True)
            cfg = OmegaConf.merge(cfg, by_variant[variant])
        except OmegaConfBaseException as e:
            raise BadInputError(_preset_path(stage, preset), f"by_variant.{variant}: {str(e).splitlines()[0]}") from None
        OmegaConf.set_struct(cfg, False)
    cfg = merge_overrides(cfg, overrides)
    OmegaConf.resolve(cfg)
    return cfg


def to_dict(cfg: DictConfig | Mapping) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def save_config(cfg: DictConfig | Mapping, out_dir: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config beside a run's outputs."""
    return atomic_write_text(Path(out_dir) / name, yaml.safe_dump(to_dict(cfg), sort_keys=False))
