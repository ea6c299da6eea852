"""Typed configs: YAML presets, checked against a dataclass schema, with dotted command-line overrides.

Each stage has a folder of presets under ``moviessl/configs/<stage>/`` (``paper.yaml``, the paper's
settings, and ``cpu.yaml``, small enough for a 2-core machine) and a schema: a tree of dataclasses
that names every setting and its type (:data:`STAGE_SCHEMAS`). The presets are the one place that
holds values; the schema checks them once, on loading, so code reads ``cfg.cvrl.head.hidden_dim``
as an ``int`` with no casts and no defaults repeated at the point of use.

- A preset may start from another with ``_base_: other.yaml`` (a path relative to the preset) or
  ``_base_: paper`` (a preset of the same stage) -- a user's own file usually does.
- Overrides are ``key.sub=value`` strings parsed as YAML values (``trainer.precision=bf16-mixed``,
  ``optim.lr=3e-4``, ``data.size=[64,64]``). A key the schema does not know, a value of the wrong
  type, or a setting no preset gives is a :class:`~moviessl.errors.BadInputError` (one line, exit
  2): a typo never silently does nothing.
- ``by_variant: {name: {...}}`` in a preset holds settings merged over the preset for one variant of
  the stage (the backbone stage's variants are its methods, e.g. a longer schedule for MoDist alone),
  before the command-line overrides, so ``key=value`` on the command line still wins.

:func:`load_config` returns the schema's dataclass instance; every run saves it beside its outputs
(:func:`save_config`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Optional

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationKeyError, OmegaConfBaseException
from omegaconf.nodes import StringNode, ValueNode

from .errors import BadInputError
from .utils.io import atomic_write_text, json_dumps

CONFIG_DIR = Path(__file__).parent / "configs"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``5e-2`` as a number (YAML 1.2): PyYAML (YAML 1.1) wants a dot
    and a signed exponent, so a float setting converted the string but a free-form mapping
    (``model.overrides``) kept it and a layer failed on it with a traceback. A key given twice in
    one mapping is an error, as YAML 1.2 says: PyYAML keeps the last, so a preset's first
    ``optim:`` block was dropped without a word when a second one followed."""

    def construct_yaml_int(self, node):
        text = str(self.construct_scalar(node)).replace("_", "")
        digits = text.lstrip("+-")
        if digits[:2] in ("0o", "0O"):
            return int(text.replace(digits[:2], "", 1), 8)
        if digits.isdecimal():
            return int(text, 10)  # 010 is ten, as YAML 1.2 reads it and as written; 1.1 read eight
        return super().construct_yaml_int(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # a merge key's entries may be overridden by the mapping's own
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (line {key_node.start_mark.line + 1})", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """Quotes the strings :class:`_Loader` reads as numbers, so a saved config reads back the same.
    A path is its text and a NumPy scalar its Python value: a mapping of overrides given in code
    (``{"data": {"split_file": Path(...)}}``, a seed drawn by NumPy) was a RepresenterError traceback."""


def _represent_other(dumper: _Dumper, data: Any) -> yaml.Node:
    if isinstance(data, os.PathLike):
        return dumper.represent_str(os.fspath(data))
    if type(data).__module__ == "numpy" and callable(getattr(data, "tolist", None)):  # a scalar or an array
        return dumper.represent_data(data.tolist())
    return dumper.represent_undefined(data)


_Dumper.add_representer(None, _represent_other)  # PyYAML's hook for a type it has no representer of


# YAML 1.2 has no timestamps: PyYAML read `2026-12-05` (a folder named by date, a run's note) as a
# date, which OmegaConf cannot hold (an UnsupportedValueType traceback); now the text as written.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

# Exponent forms only: YAML 1.1's resolvers, tried first, already read the ints and dotted floats.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)[eE][-+]?\d+$")
# YAML 1.2's octal (0o17), and decimals with leading zeros 1.1 did not read as octal (08)
_LEADING_ZERO_INT = re.compile(r"^[-+]?0(?:[oO][0-7_]+|[0-9_]+)$")
for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+.0123456789"))
    _cls.add_implicit_resolver("tag:yaml.org,2002:int", _LEADING_ZERO_INT, list("-+0"))
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


@dataclasses.dataclass
class TrainerConfig:
    """The ``trainer`` block of every stage (Lightning's Trainer arguments plus our checkpoint,
    logging and progress settings); the defaults here apply where a preset leaves one out."""

    accelerator: str = "auto"  # cpu | gpu | auto
    devices: Any = 1  # an int, "auto", or a list of device ids
    num_nodes: int = 1
    strategy: str = "auto"  # ddp when devices x num_nodes > 1
    precision: str = "32-true"  # bf16-mixed on GPUs (paper presets)
    max_epochs: Optional[int] = 10  # None: the stage decides (tasks: each task's `epochs`)
    max_steps: int = -1
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    log_every_n_steps: int = 10
    ckpt_every_n_steps: int = 100  # 0: only at the end
    tensorboard: bool = False
    progress_bar: bool = True
    # Lightning's profiler, "simple" (seconds per hook: data loading, the augmentation hook, forward,
    # backward, optimizer) or "advanced" (cProfile per hook); written to OUT/fit-profile.txt
    profiler: Optional[str] = None
    # DDP's process-group timeout (None: Lightning's 30 min). The other ranks wait this long for rank
    # 0 at every collective, e.g. while it alone scores a fine-tuning run (long for end-to-end verbs).
    ddp_timeout_s: Optional[float] = None
    # GPU speed switches, off unless set (not measured here: no GPU was available). benchmark:
    # cuDNN's autotuner for the convolutions (the clips' shapes are fixed); matmul_precision:
    # torch.set_float32_matmul_precision ("high" lets fp32 matmuls use TF32 on Ampere and later;
    # bf16-mixed stages already run their matmuls in bf16). None: PyTorch's defaults.
    benchmark: Optional[bool] = None
    matmul_precision: Optional[str] = None


# stage -> "module:Dataclass" of its schema (imported on use: the schemas live beside their stage)
STAGE_SCHEMAS = {
    "backbone": "moviessl.ssl.config:BackboneConfig",
    "context": "moviessl.context.config:ContextConfig",
    "vidsitu": "moviessl.tasks.vidsitu.config:VidSituConfig",
    "ot_pretrain": "moviessl.context.config:OTPretrainConfig",
    "lvu": "moviessl.tasks.lvu.config:LVUConfig",
}


# the stages whose runs have variants a preset's `by_variant` block can address (the backbone's methods)
VARIANT_STAGES = ("backbone",)


def schema_of(stage: str) -> type:
    if stage not in STAGE_SCHEMAS:
        raise BadInputError(None, f"unknown config stage '{stage}' ({', '.join(STAGE_SCHEMAS)})")
    module, _, name = STAGE_SCHEMAS[stage].partition(":")
    return getattr(importlib.import_module(module), name)


def preset_names(stage: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / stage).glob("*.yaml") if not p.stem.startswith("_"))


# the tags a plain scalar resolves to that a text setting would take as str() of the value
_CONVERTED_TAGS = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_STR_TAG = "tag:yaml.org,2002:str"


@functools.lru_cache(maxsize=None)
def _field_types(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _unoptional(hint: Any) -> Any:
    """``X`` of ``Optional[X]`` (or ``X | None``); other hints as they are."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def _text_kind(hint: Any) -> str | None:
    """``"text"`` for a str setting (Optional too), ``"texts"`` for a list of them, else None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if _unoptional(hint) is str:
        return "text"
    if typing.get_origin(hint) is list and args == [str]:
        return "texts"
    return None


def _keep_text(node: yaml.Node, schema: type) -> None:
    """Retags the plain scalars of a preset's YAML mapping ``node`` that a str setting of ``schema``
    takes as text, so they are read as written: YAML 1.1 read ``cache_dir: no`` as false and
    OmegaConf made it the folder ``False`` (``1e5``: ``100000.0``, ``1.10``: ``1.1``), where an
    override keeps its text (``_text_setting``). A null stays null."""
    if not isinstance(node, yaml.MappingNode):
        return
    hints = _field_types(schema)
    for key_node, value in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its entries land here too
            for merged in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                _keep_text(merged, schema)
            continue
        hint = hints.get(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
        if dataclasses.is_dataclass(hint):
            _keep_text(value, hint)
        _retag_text(value, _text_kind(hint))


def _retag_text(value: yaml.Node, kind: str | None) -> None:
    """Retags the plain scalars of ``value`` that a setting of ``kind`` (:func:`_text_kind`) takes as
    text, so that they are read as written (a null stays null)."""
    items = [value] if kind == "text" else value.value if kind and isinstance(value, yaml.SequenceNode) else []
    for item in items:
        if isinstance(item, yaml.ScalarNode) and item.style is None and item.tag in _CONVERTED_TAGS:
            item.tag = _STR_TAG


def _loop(data: Any, key: str = "", inside: tuple[int, ...] = ()) -> str | None:
    """The key of the first list or mapping in ``data`` that holds itself, through a YAML alias
    (``a: &x [*x]``): OmegaConf recursed on it without end (a RecursionError traceback)."""
    if not isinstance(data, (dict, list)):
        return None
    if id(data) in inside:
        return key or "the config"
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for k, v in items:
        name = f"{key}[{k}]" if isinstance(data, list) else f"{key}{'.' if key else ''}{k}"
        found = _loop(v, name, (*inside, id(data)))
        if found:
            return found
    return None


_LOOP = "a YAML alias (*name) refers to a list or mapping it is inside; a setting cannot hold itself"


def _load_preset(text: str, stage: str) -> Any:
    """A preset's YAML, its text settings (and those of its ``by_variant`` blocks) as written."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        schema = schema_of(stage)
        _keep_text(node, schema)
        for key_node, value in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.value == "by_variant" and isinstance(value, yaml.MappingNode):
                for _, block in value.value:
                    _keep_text(block, schema)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_yaml(path: Path, stage: str, chain: tuple[Path, ...] = ()) -> DictConfig:
    if not path.is_file():
        raise BadInputError(path, "config file not found")
    if path.resolve() in chain:
        cycle = [*chain[chain.index(path.resolve()) :], path.resolve()]
        raise BadInputError(chain[0], f"_base_ cycle: {' -> '.join(p.name for p in cycle)}")
    try:
        data = _load_preset(path.read_text(encoding="utf-8-sig"), stage) or {}
    except UnicodeDecodeError:
        raise BadInputError(path, "not a UTF-8 text file") from None
    except yaml.YAMLError as e:
        raise BadInputError(path, f"invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BadInputError(path, "a config file must hold a mapping")
    base = data.pop("_base_", None)
    loop = _loop(data)
    if loop:
        raise BadInputError(path, f"{loop}: {_LOOP}")
    try:
        cfg = OmegaConf.create(data)
    except OmegaConfBaseException as e:  # a `${` left open, a null key (`~:`)
        key = getattr(e, "full_key", None)
        raise BadInputError(path, f"{f'{key}: ' if key else ''}{str(e).splitlines()[0]}") from None
    if base is not None:
        base_path = (path.parent / str(base)).resolve()
        if not base_path.is_file() and Path(str(base)).suffix not in (".yaml", ".yml"):
            base_path = _preset_path(stage, str(base))  # `_base_: paper`
        cfg = _merge(_read_yaml(base_path, stage, (*chain, path.resolve())), cfg, path, "the preset")
    return cfg


def _preset_path(stage: str, preset: str | os.PathLike) -> Path:
    p = Path(preset)
    if p.suffix in (".yaml", ".yml"):
        return p  # a user's own preset file
    path = CONFIG_DIR / stage / f"{preset}.yaml"
    if not path.is_file():
        raise BadInputError(
            None,
            f"unknown {stage} preset '{preset}' (choose from {', '.join(preset_names(stage))} or give a .yaml file)",
        )
    return path


def _text_setting(cfg: DictConfig | None, key: str) -> str | None:
    """``"text"`` where ``key`` is a str setting of ``cfg``, ``"texts"`` where a list of them, else None."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or node._is_none():
            return None
        node = node._get_node(part, validate_access=False)
    if isinstance(node, StringNode):
        return "text"
    if isinstance(node, ListConfig) and node._metadata.element_type is str:
        return "texts"
    return None


def _load_override(raw: str, kind: str | None) -> Any:
    """An override's value as YAML; a text setting's (``kind``, :func:`_text_setting`) as written:
    ``data.cache_dir=1e5`` names a folder ``1e5``, not ``100000.0``, and ``data.eval_splits=[010, no]``
    the splits ``010`` and ``no``, which YAML 1.1 read as ``10`` and ``False``. A command line has no
    comments: a plain text value is the text after ``=`` (``data.cache_dir=run #3``, not ``run``)."""
    loader = _Loader(raw)
    try:
        node = loader.get_single_node()
        plain = node is None or (isinstance(node, yaml.ScalarNode) and node.style is None)
        if kind == "text" and plain and (node is None or node.tag != "tag:yaml.org,2002:null"):
            return raw.strip()
        if node is None:
            return None
        _retag_text(node, kind)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_overrides(overrides: Iterable[str], into: DictConfig | None = None) -> DictConfig:
    """Dotted overrides as a config; a text setting of ``into`` takes a value as written."""
    items: dict[str, Any] = {}
    for ov in overrides:
        if "=" not in ov:
            raise BadInputError(None, f"override '{ov}' is not of the form key.sub=value")
        key, _, raw = ov.partition("=")
        key = key.strip()
        if not all(key.split(".")):  # `=1`, `.seed=1`: OmegaConf's "Key '' not in 'BackboneConfig'"
            raise BadInputError(None, f"override '{ov}' names no key (an empty part in '{key}'); give key.sub=value")
        if "[" in key:  # OmegaConf's own key syntax: `[=1` was its IndexError, `optim[lr]x=1` set optim.lr
            raise BadInputError(None, f"override '{ov}': a key is dotted names (key.sub=value), without [...]")
        try:
            value = _load_override(raw, _text_setting(into, key)) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        loop = _loop(value, key)
        if loop:
            raise BadInputError(None, f"override {loop}: {_LOOP}")
        items[key] = value
    cfg = OmegaConf.create({})
    for key, value in items.items():
        try:
            OmegaConf.update(cfg, key, value, force_add=True)
        except OmegaConfBaseException as e:  # a `${` left open
            raise BadInputError(None, f"override {key}: {str(e).splitlines()[0]}") from None
    return cfg


def _container_mismatch(cfg: Any, other: Any, prefix: str = "") -> tuple[str, str] | None:
    """(key, kind of its setting) of the first key where ``other`` gives a mapping to a list setting
    of ``cfg`` (``optim.betas.0=0.8``) or a list to a mapping one (``txe.overrides=[1]``): OmegaConf's
    TypeError for either names no key."""
    if not isinstance(cfg, DictConfig) or cfg._is_none() or not isinstance(other, (Mapping, DictConfig)):
        return None
    for k in other:
        node = cfg._get_node(k, validate_access=False)
        v = other._get_node(k) if isinstance(other, DictConfig) else other[k]
        if isinstance(node, ListConfig) and isinstance(v, (Mapping, DictConfig)):
            return f"{prefix}{k}", "list"
        if isinstance(node, DictConfig) and not node._is_none() and isinstance(v, (list, tuple, ListConfig)):
            return f"{prefix}{k}", "mapping"
        found = _container_mismatch(node, v, f"{prefix}{k}.")
        if found:
            return found
    return None


def _loose_bool(schema: Any, other: Any, prefix: str = "") -> tuple[str, Any] | None:
    """(key, value) of the first key where ``other`` gives a bool setting of the dataclass ``schema``
    a number other than 0 or 1 (``trainer.tensorboard=2``, ``"-1"``): OmegaConf reads any int as
    ``value != 0``, so a typo or a count was silently true."""
    if not dataclasses.is_dataclass(schema) or not isinstance(other, (Mapping, DictConfig)):
        return None
    hints = _field_types(schema)
    for k in other:
        hint = _unoptional(hints.get(k))
        v = other._get_node(k) if isinstance(other, DictConfig) else other[k]
        v = v._value() if isinstance(v, ValueNode) else v
        if hint is bool and not isinstance(v, bool):
            try:
                number = int(v) if isinstance(v, (int, str)) else None
            except ValueError:  # OmegaConf's words (yes, off, ...) or its own error
                number = None
            if number not in (None, 0, 1):
                return f"{prefix}{k}", v
        found = _loose_bool(hint, v, f"{prefix}{k}.")
        if found:
            return found
    return None


def _nearest_key(cfg: DictConfig, key: str) -> str:
    """`` (did you mean optim.lr?)`` for a misspelt ``key`` of the schema of ``cfg``, where one is close."""
    parent, _, leaf = key.rpartition(".")
    schema = OmegaConf.get_type(cfg)
    for part in parent.split(".") if parent else ():
        schema = _unoptional(_field_types(schema).get(part)) if dataclasses.is_dataclass(schema) else None
    names = list(_field_types(schema)) if dataclasses.is_dataclass(schema) else []
    close = difflib.get_close_matches(leaf, names, n=1)
    return f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""


_SCALARS = {str: "a str", int: "an int", float: "a float", bool: "a bool"}  # the entry types, as named


def _container_entry(cfg: DictConfig | ListConfig, prefix: str = "") -> tuple[str, Any, type] | None:
    """(key, value, entry type) of the first entry of a list setting of text, numbers or bools that
    is itself a list or mapping (``data.eval_splits=[[val]]``): OmegaConf checks a scalar entry's
    type but lets a container through, and the run traced back on it (an unhashable list as a split)."""
    if cfg._is_none() or cfg._is_missing() or cfg._is_interpolation():
        return None
    entry = cfg._metadata.element_type if isinstance(cfg, ListConfig) else None
    for key in list(cfg.keys()) if isinstance(cfg, DictConfig) else range(len(cfg)):
        node = cfg._get_node(key)
        name = f"{prefix}[{key}]" if isinstance(cfg, ListConfig) else f"{prefix}{'.' if prefix else ''}{key}"
        if not isinstance(node, (DictConfig, ListConfig)):
            continue
        if entry in _SCALARS and not node._is_none():
            return name, OmegaConf.to_container(node), entry
        found = _container_entry(node, name)
        if found:
            return found
    return None


def _merge(cfg: DictConfig, other: Any, where: str | os.PathLike | None, what: str) -> DictConfig:
    loose = _loose_bool(OmegaConf.get_type(cfg), other)
    if loose:
        key, v = loose
        raise BadInputError(where, f"bad value in {what} for {key} ({v!r} is not a bool; give true, false, 1 or 0)")
    try:
        merged = OmegaConf.merge(cfg, other)
        nested = _container_entry(merged)
        if nested:
            key, v, entry = nested
            raise BadInputError(where, f"bad value in {what} for {key} ({v!r} is not {_SCALARS[entry]})")
        return merged
    except TypeError as e:  # a mapping merged into a list, or a list into a mapping
        found = _container_mismatch(cfg, other)
        if found is None:
            raise BadInputError(where, f"bad value in {what} ({' '.join(str(e).split())})") from None
        key, kind = found
        whole = f"{key}=[...]" if kind == "list" else f"{key}={{name: value, ...}}"
        raise BadInputError(where, f"{key} in {what} is a {kind} setting; give the whole {kind} ({whole})") from None
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e).splitlines()[0]
        raise BadInputError(where, f"unknown config key '{key}' in {what}{_nearest_key(cfg, key)}") from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = str(e).splitlines()[0]
        raise BadInputError(where, f"bad value in {what}{f' for {key}' if key else ''} ({msg})") from None


# a `${` and the backslashes before it: OmegaConf reads `\${` as a literal `${`, `\\` before one as `\`
_INTERPOLATION_START = re.compile(r"(\\*)(\$\{)")


def _literal(text: str) -> str:
    """``text`` escaped so that OmegaConf reads it back as ``text``: each ``${`` (and the
    backslashes before it) as written, not an interpolation (OmegaConf's grammar, "Escaping")."""
    return _INTERPOLATION_START.sub(lambda m: m.group(1) * 2 + "\\" + m.group(2), text)


def _keep_literal(cfg: DictConfig | ListConfig) -> DictConfig | ListConfig:
    r"""``cfg`` with each text value holding ``${`` escaped (:func:`_literal`), in place, for a config
    whose values are all text as meant: one resolved in place (OmegaConf.resolve turns ``\${x}``, the
    escape of a literal ``${x}``, into ``${x}``, which the next read took for an interpolation and
    traced back on), or one made from a resolved config's values (a schema instance, a saved config)."""
    if cfg._is_none() or cfg._is_missing() or cfg._is_interpolation():
        return cfg
    for key in list(cfg.keys()) if isinstance(cfg, DictConfig) else range(len(cfg)):
        node = cfg._get_node(key)
        if isinstance(node, (DictConfig, ListConfig)):
            _keep_literal(node)
        elif isinstance(node, ValueNode) and isinstance(node._value(), str) and "${" in node._value():
            node._set_value(_literal(node._value()))
    return cfg


def _resolved(cfg: DictConfig, where: str | os.PathLike | None, overridden: Collection[str] = ()) -> DictConfig:
    """``cfg`` with its ``${...}`` interpolations resolved in place; one that cannot be (``${USER}``
    meant as the environment's, a key that is not there) is one line naming the setting (and
    ``where``, unless the setting is ``overridden`` on the command line), not the OmegaConf
    traceback it was when the run first read the value."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "a setting"
        hint = ""
        if isinstance(e, InterpolationKeyError):
            hint = " (${name} names a setting; ${oc.env:NAME} an environment variable)"
        raise BadInputError(None if key in overridden else where, f"{key}: {str(e).splitlines()[0]}{hint}") from None
    return _keep_literal(cfg)


def _structured(cfg: Any) -> DictConfig:
    if isinstance(cfg, DictConfig):
        return cfg
    if dataclasses.is_dataclass(cfg):  # its text is as meant: a `${` in it is no interpolation
        return _keep_literal(OmegaConf.structured(cfg))
    return OmegaConf.create(dict(cfg))


def _override_strings(overrides: Iterable[str] | Mapping[str, Any]) -> list[str]:
    if not isinstance(overrides, Mapping):
        return list(overrides)
    strings = []
    for k, v in overrides.items():
        try:
            text = yaml.dump(v, Dumper=_Dumper, default_flow_style=True)
        except yaml.representer.RepresenterError as e:
            what = type(e.args[1]).__name__ if len(e.args) > 1 else type(v).__name__
            raise BadInputError(None, f"override {k}: {what} is no config value (give text, numbers, lists, mappings)")
        strings.append(f"{k}={text.strip().removesuffix('...').strip()}")
    return strings


def flatten(changes: Mapping[str, Any], prefix: str = "", whole: Collection[str] = ()) -> dict[str, Any]:
    """``{"verb": {"epochs": 1}}`` -> ``{"verb.epochs": 1}`` (nested changes as dotted overrides);
    a mapping under a key in ``whole`` is kept as one value."""
    out: dict[str, Any] = {}
    for k, v in changes.items():
        if isinstance(v, Mapping) and v and f"{prefix}{k}" not in whole:
            out.update(flatten(v, f"{prefix}{k}.", whole))
        else:
            out[f"{prefix}{k}"] = v
    return out


def merge_overrides(cfg: Any, overrides: Iterable[str] | Mapping[str, Any]) -> Any:
    """``cfg`` (a schema instance) with dotted overrides merged in; every overridden key must exist."""
    base, given = _structured(cfg), _override_strings(overrides)
    merged = _resolved(_merge(base, parse_overrides(given, base), None, "overrides"), None)
    check_ranges(merged)
    merged = expand_user_paths(merged)
    out = OmegaConf.to_object(merged) if dataclasses.is_dataclass(cfg) else merged
    asked = _asked_of(cfg) or {"preset": None, "overrides": []}
    _note_asked(out, {**asked, "overrides": [*asked["overrides"], *given]})
    return out


def load_config(
    stage: str,
    preset: str | os.PathLike = "cpu",
    overrides: Iterable[str] | Mapping[str, Any] = (),
    variant: str | None = None,
    variants: Collection[str] | None = None,
) -> Any:
    """The resolved, type-checked config of a stage: the preset file, its ``by_variant[variant]``
    block, then the dotted overrides. Returns an instance of the stage's schema dataclass.
    ``variants``: the stage's variant names, where it knows them; a ``by_variant`` block of
    another name is then an error (a misspelt one was never merged)."""
    path = _preset_path(stage, preset)
    raw = _read_yaml(path, stage)
    by_variant = raw.pop("by_variant", None) or {}
    if not isinstance(by_variant, (dict, DictConfig)):  # a string was read letter by letter as method names
        raise BadInputError(path, "by_variant must map each method to its settings ({method: {key: value}})")
    if by_variant and stage not in VARIANT_STAGES:  # no run of the stage would ever merge it
        raise BadInputError(path, f"by_variant: {stage} runs have no variants; give the settings in the preset itself")
    unknown = [name for name in by_variant if variants is not None and name not in variants]
    if unknown:
        raise BadInputError(path, f"by_variant.{unknown[0]}: no such method ({', '.join(variants or ())})")
    for name, block in by_variant.items():  # a number or text was OmegaConf's ValueError traceback on merging
        if block is not None and not isinstance(block, (dict, DictConfig)):
            raise BadInputError(path, f"by_variant.{name} must map settings to values ({{key: value}}), not {block!r}")
    cfg = _merge(OmegaConf.structured(schema_of(stage)), raw, path, "the preset")
    # a block whose settings are all commented out is null: nothing to merge (OmegaConf's ValueError)
    if variant is not None and by_variant.get(variant) is not None:
        cfg = _merge(cfg, by_variant[variant], path, f"by_variant.{variant}")
    strings = _override_strings(overrides)
    given = parse_overrides(strings, cfg)
    cfg = _merge(cfg, given, None, "overrides")
    missing = sorted(OmegaConf.missing_keys(_resolved(cfg, path, flatten(OmegaConf.to_container(given)))))
    if missing:
        raise BadInputError(
            path,
            f"missing settings {', '.join(missing)} (start a partial preset with `_base_: paper` or `_base_: cpu`)",
        )
    check_ranges(cfg, null_epochs_unlimited=stage not in EPOCHS_PER_TASK)
    out = OmegaConf.to_object(expand_user_paths(cfg))
    _note_asked(
        out,
        {"stage": stage, "preset": str(preset), "preset_path": str(path), "variant": variant, "overrides": strings},
    )
    return out


# settings that name a file or folder (``data.split_file``, ``data.cache_dir``, ``model.init``)
PATH_KEYS = frozenset({"split_file", "cache_dir", "init"})


def expand_user_paths(cfg: DictConfig) -> DictConfig:
    """``cfg`` with a leading ``~`` of its :data:`PATH_KEYS` expanded to the home folder, as a shell
    does on a command line: neither a YAML preset nor a quoted override goes through one, and
    ``~/cache`` became a folder named ``~`` in the working directory."""
    for key, v in flatten(OmegaConf.to_container(cfg, resolve=True)).items():
        if key.rsplit(".", 1)[-1] in PATH_KEYS and isinstance(v, str) and v.startswith("~"):
            OmegaConf.update(cfg, key, _literal(os.path.expanduser(v)))
    return cfg


# Settings whose type alone lets a typo through (a batch of 0, a negative learning rate) and that would
# otherwise fail deep inside torch with a traceback. By the setting's own name, wherever it sits.
_POSITIVE_INT = (
    "batch_size",
    "eval_batch_size",
    "ref_batch",
    "accumulate_grad_batches",
    "queue_size",
    "vocab_size",
    "max_per_class",
    "num_nodes",
    # sizes and counts: 0 ended in a torch traceback deep in sampling or a layer (window=0: "invalid
    # multinomial distribution", keys_per_sample=0: "cannot sample n_sample <= 0 samples")
    "num_frames",
    "stride",
    "short_side",
    "crop",
    "flow_crop",
    "hidden_dim",
    "out_dim",
    "num_clips",
    "max_iter",
    "knn_k",
    "max_len",
    "window",
    "windows_per_video",
    "mean_videos",
    "keys_per_sample",
    "span_s",
    "span_dim",
    "tune_seeds",
    "instance_cache_mb",  # the feature cache's bound: set_feature_cache needs >= 1 MB
    # widths whose null means a default: 0 fell back to it without a word, a negative one traced back
    "head_hidden",
    "hidden",
    "target_dim",
)
# gradient_clip_val: Lightning skips clipping at <= 0, so a negative one is silently no clipping
_NON_NEGATIVE = (
    "lr",
    "weight_decay",
    "warmup_steps",
    "num_workers",
    "ckpt_every_n_steps",
    "gradient_clip_val",
    "box_jitter",
    "w_visual",
    "w_cross",
    "w_flow",
    "action_weight",
    "span_weight",
    "min_frequency",  # the SRL BPE's: a negative one was an OverflowError traceback from tokenizers
)
# probabilities and shares, 0 and 1 included (a block's replace + swap together: check_shares)
# (final_lr_frac: the share of lr the schedule ends at; above 1 it rose instead of decaying)
_PROBABILITY = (
    "flip_p",
    "jitter_p",
    "gray_p",
    "blur_p",
    "track_mask",
    "replace",
    "swap",
    "final_lr_frac",
    "warmup_start_frac",
)
_FRACTION = (
    "dropout",
    "attn_dropout",
    "ffn_dropout",
    "val_fraction",
    "track_fraction",
    "warmup_frac",
    "label_smoothing",
)
_POSITIVE = (
    "tau",
    "temperature",
    "span_temperature",
    "epochs",
    "log_every_n_steps",
    "ddp_timeout_s",
    "knn_t",
    "token_stride_s",
    "bound",
    "width_factor",
    "power",  # CVRL's gap density (p+1)/(p m) (1 - (k/m)^p): p = 0 divides by zero
    "eta",  # LARS' trust coefficient: 0 stops every weight-decayed parameter
    "scene_stride_s",  # LVU's scene events: 0 fell back to the folder's stride, a negative one counted back
)
MAX_SEED = 2**32 - 1  # numpy's, so Lightning's seed_everything


def _range_problem(name: str, v: Any) -> str | None:
    if name == "epochs_grid" and isinstance(v, (list, tuple)) and any(_range_problem("epochs", e) for e in v):
        return "must hold epoch counts > 0"  # each becomes a trainer's max_epochs, after the ones before train
    if name == "betas" and isinstance(v, (list, tuple)) and (len(v) != 2 or not all(0 <= b < 1 for b in v)):
        return "must be two numbers in [0, 1)"  # AdamW's, read only when training began (torch's ValueError)
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    ranged = (*_POSITIVE_INT, *_NON_NEGATIVE, *_FRACTION, *_PROBABILITY, *_POSITIVE, "alpha", "momentum", "seed")
    if not math.isfinite(v) and (name in ranged or name.endswith("_lr_scale")) and name != "ddp_timeout_s":
        return "must be a finite number"  # a NaN passes every comparison below
    if name in _POSITIVE_INT and v < 1:
        return "must be at least 1"
    if (name in _NON_NEGATIVE or name.endswith("_lr_scale")) and v < 0:
        return "must not be negative"
    if name in _FRACTION and not 0 <= v < 1:
        return "must be in [0, 1)"
    if name in _PROBABILITY and not 0 <= v <= 1:
        return "must be in [0, 1]"
    if name == "alpha" and not 0 < v <= 1:  # MaskPred's sizes {1..floor(alpha N)}: none drawn past N - 1
        return "must be in (0, 1]"
    if name in ("brightness", "contrast", "saturation") and not 0 <= v <= 1:  # factors 1 ± s, from 0 up
        return "must be in [0, 1]"
    if name == "hue" and not 0 <= v <= 0.5:  # a shift of the hue circle, as torchvision's ColorJitter
        return "must be in [0, 0.5]"
    if name in _POSITIVE and v <= 0:
        return "must be positive"
    if name == "momentum" and not 0 <= v <= 1:
        return "must be in [0, 1]"
    if name == "seed" and not 0 <= v <= MAX_SEED:  # seed_everything raised a ValueError when the run began
        return f"must be in 0..{MAX_SEED}"
    if name in ("max_steps", "max_epochs") and v < 1 and v != -1:
        return "must be at least 1 (or -1: no limit)"
    if name == "ddp_timeout_s" and not v < MAX_TIMEOUT_S:  # inf or huge: timedelta overflows
        return f"must be below {MAX_TIMEOUT_S:.0e} s"
    return None


MAX_TIMEOUT_S = 1e9  # ~30 years: no wait is longer, and timedelta overflows far above it
MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision's values
PROFILERS = ("simple", "advanced")  # Lightning's profilers moviessl builds (training.make_trainer)


def check_matmul_precision(key: str, v: Any) -> None:
    """One line naming ``key`` unless ``v`` is unset or one of torch's float32 matmul precisions."""
    if v is not None and v not in MATMUL_PRECISIONS:
        raise BadInputError(key, f"choose {', '.join(MATMUL_PRECISIONS)}, not {v!r}")


def check_profiler(key: str, v: Any) -> None:
    """One line naming ``key`` unless ``v`` is unset or a profiler :data:`PROFILERS` names: the trainer
    refused another only when it was built, after the stage had cached its clips or features."""
    if v not in (None, "", *PROFILERS):  # empty: none, as unset
        raise BadInputError(key, f"choose {' or '.join(PROFILERS)} (or leave it unset), not {v!r}")


# Lightning 2.x's precision names, then the aliases it still takes (16 and bf16 are the mixed ones).
PRECISIONS = (
    "32-true",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "transformer-engine",
    "transformer-engine-float16",
    "32",
    "16",
    "bf16",
    "64",
)

# Precisions that hold the weights themselves in 16 bits, and that dtype: Lightning's HalfPrecision,
# and its TransformerEnginePrecision, which converts the whole module to its weights dtype (and
# swaps Linear / LayerNorm layers for TransformerEngine's, FP8 inside).
HALF_WEIGHTS = {
    "16-true": "float16",
    "bf16-true": "bfloat16",
    "transformer-engine": "bfloat16",
    "transformer-engine-float16": "float16",
}


def check_precision(key: str, v: Any) -> None:
    """One line naming ``key`` unless ``v`` is a precision Lightning takes and can set up here
    (checked before any work: Lightning itself only refuses it when the trainer is built)."""
    if str(v) not in PRECISIONS:
        raise BadInputError(key, f"{v!r} is not a precision; choose one of {', '.join(PRECISIONS[:8])}")
    if str(v).startswith("transformer-engine") and importlib.util.find_spec("transformer_engine") is None:
        raise BadInputError(key, f"{v} needs NVIDIA's transformer_engine package, which is not installed")


def check_accelerator(key: str, v: Any) -> None:
    """One line naming ``key`` unless ``v`` is ``auto``, ``gpu`` or an accelerator in Lightning's
    registry (``cpu``, ``cuda``, ``mps``, ``tpu`` and any a plugin registers)."""
    from pytorch_lightning.accelerators import AcceleratorRegistry

    names = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    if str(v) not in names:
        raise BadInputError(key, f"{v!r} is not an accelerator; choose one of {', '.join(names)}")


# strategies Lightning registers that need a package of their own, and those it cannot build by name
_STRATEGY_PACKAGES = {"deepspeed": "deepspeed", "xla": "torch_xla"}
_NOT_BY_NAME = ("single_xla", "single_tpu")


def check_strategy(key: str, v: Any) -> None:
    """One line naming ``key`` unless ``v`` is ``auto`` or a strategy in Lightning's registry that
    can be built by name here (its package installed). Names are lower case, as the registry's: a
    strategy is also read by name here (DDP's timeout, find_unused_parameters for the tasks)."""
    from pytorch_lightning.strategies import StrategyRegistry

    names = StrategyRegistry.available_strategies()
    name = str(v)
    if name not in ("auto", *names) or name in _NOT_BY_NAME:
        ok = [n for n in names if n not in _NOT_BY_NAME]
        raise BadInputError(key, f"{v!r} is not a Lightning strategy; choose auto, {', '.join(ok[:4])}, ...")
    for prefix, package in _STRATEGY_PACKAGES.items():
        if prefix in name and importlib.util.find_spec(package) is None:
            raise BadInputError(key, f"{v} needs the {package} package, which is not installed")


def check_devices(key: str, v: Any) -> None:
    """One line naming ``key`` unless ``v`` reads as Lightning's ``devices``: a count (>= 1, or -1 /
    ``auto`` for all), a list of device ids (``[2, 3]``) or a comma-separated string of them (``"2,3"``)."""
    ids = v.split(",") if isinstance(v, str) and "," in v else v if isinstance(v, (list, tuple)) else None
    if ids is not None:
        ok = all(str(i).strip().isdecimal() for i in ids if str(i).strip()) and any(str(i).strip() for i in ids)
    else:
        n = str(v).strip()
        ok = n == "auto" or (not isinstance(v, bool) and n.lstrip("-").isdecimal() and (int(n) >= 1 or int(n) == -1))
    if not ok:
        raise BadInputError(key, f"{v!r}: give a count (>= 1, -1 or auto for all) or a list of device ids, e.g. [2, 3]")
    given = [int(str(i).strip()) for i in ids or () if str(i).strip()]
    twice = sorted({i for i in given if given.count(i) > 1})
    if twice:  # Lightning's _check_unique refused it only when the trainer was built, after the data were read
        raise BadInputError(key, f"{v!r}: device id {twice[0]} is given twice; give each device once")


# Half weights hold AdamW's state in 16 bits too: bf16 (8 significand bits) rounds an AdamW step
# (~lr) away on a weight above ~256 x lr; fp16 underflows AdamW's eps (1e-8) and small second
# moments, so a step divides by zero.
def check_train_precision(key: str, v: Any, accelerator: Any = "auto") -> None:
    """One line naming ``key`` for a precision that holds the weights in half precision
    (:data:`HALF_WEIGHTS`) in a training stage's trainer (extraction, which only runs the weights,
    takes it: ``moviessl extract --precision bf16-true``). The mixed precision it advises instead
    is one the run's device has (:func:`mixed_precisions`)."""
    half = HALF_WEIGHTS.get(str(v))
    if half:
        why = (
            "AdamW's steps (~lr) are rounded away on weights above ~256 x lr, and weight decay always is"
            if half == "bfloat16"
            else "AdamW's eps and small second moments underflow to 0 and weights become inf or NaN"
        )
        advice = mixed_precisions(accelerator)
        raise BadInputError(key, f"{v} trains weights held in half precision ({half}): {why}; {advice}")


def mixed_precisions(accelerator: Any = "auto") -> str:
    """The advice of the mixed precisions a run on ``accelerator`` can train in: bf16-mixed alone
    where it lands on the CPU (``cpu``, or ``auto`` / ``gpu`` / ``cuda`` where torch sees no GPU), as
    torch's CPU autocast has no fp16 AMP and Lightning's accelerator connector turns a CPU's
    16-mixed into bf16-mixed; bf16-mixed or 16-mixed on a GPU."""
    acc = str(accelerator)
    if acc in ("auto", "gpu", "cuda"):
        import torch  # on use: reading a config does not import torch

        on_cpu = not torch.cuda.is_available() and not (acc != "cuda" and torch.backends.mps.is_available())
    else:
        on_cpu = acc == "cpu"
    if on_cpu:
        return "train with bf16-mixed (a CPU has no fp16 AMP)"
    return "train with bf16-mixed or 16-mixed"


def check_shares(block: str, replace: float, swap: float) -> None:
    """One line unless a masking block's shares of a selected span, ``replace`` ([MASK]) and
    ``swap`` (another token), are each in [0, 1] and sum to at most 1 (the rest is kept). Compared
    with a tolerance: 1 - 0.9 is 0.0999... in floats, and 0.9 / 0.1 is a valid split."""
    if not (0 <= replace <= 1 and 0 <= swap <= 1 and replace + swap <= 1 + 1e-9):
        raise BadInputError(f"{block}.replace/swap", f"need shares in [0, 1] summing to <= 1, got {replace} / {swap}")


def check_optimizer(key: str, v: Any) -> None:
    """One line naming ``key`` unless ``v`` names an optimiser :func:`moviessl.optim.make_optimizer`
    builds (which refused it only when training began, after the clips had been cached)."""
    from .optim import OPTIMIZERS  # imports torch: on use

    if str(v).lower() not in OPTIMIZERS:
        raise BadInputError(key, f"unknown optimiser {v!r} ({'|'.join(OPTIMIZERS)})")


# the settings read by name (Lightning's trainer settings, the optimiser), checked as a whole
# (beside the ranges by leaf name)
_KEY_CHECKS = {
    "trainer.precision": (check_precision, check_train_precision),
    "trainer.accelerator": (check_accelerator,),
    "trainer.devices": (check_devices,),
    "trainer.strategy": (check_strategy,),
    "trainer.profiler": (check_profiler,),
    "optim.name": (check_optimizer,),
}


# the stages whose trainer.max_epochs null means each task's own `epochs`; elsewhere it is no limit
EPOCHS_PER_TASK = ("vidsitu", "lvu")


def check_ranges(cfg: Any, null_epochs_unlimited: bool = False) -> None:
    """``BadInputError`` naming the first setting outside its range (see ``_range_problem``), or a
    trainer without any limit: ``trainer.max_steps`` -1 with ``trainer.max_epochs`` -1 (or null,
    where ``null_epochs_unlimited``: a stage that trains without a limit then)."""
    # a mapping given to a setting read by name (`trainer.devices={a: 1}`, an `Any`) is checked whole:
    # split, its key was never checked and planning the trainer traced back on it
    flat = flatten(to_dict(cfg), whole=_KEY_CHECKS)
    for key, v in flat.items():
        if key.rsplit(".", 1)[-1] == "matmul_precision":
            check_matmul_precision(key, v)
        for check in _KEY_CHECKS.get(key, ()):
            if check is check_train_precision:  # its advice is the run's device's
                check(key, v, flat.get("trainer.accelerator", "auto"))
            else:
                check(key, v)
        problem = _range_problem(key.rsplit(".", 1)[-1], v)
        if problem:
            raise BadInputError(key, f"{v} {problem}")
    for key, v in flat.items():  # a block's replace and swap together (MaskPred's, the OT pretraining's)
        block = key.rsplit(".", 1)[0]
        if key.endswith(".replace") and isinstance(flat.get(f"{block}.swap"), (int, float)):
            check_shares(block, v, flat[f"{block}.swap"])
    if flat.get("optim.nesterov") and str(flat.get("optim.name")).lower() != "sgd":  # it would be ignored
        raise BadInputError("optim.nesterov", f"only optim.name=sgd takes Nesterov momentum, not {flat['optim.name']}")
    # Lightning then trains forever, and the schedules' step count is infinite (an OverflowError)
    epochs = flat.get("trainer.max_epochs")
    if flat.get("trainer.max_steps") == -1 and (epochs == -1 or (epochs is None and null_epochs_unlimited)):
        raise BadInputError("trainer.max_steps", "the run would never end; set trainer.max_steps or trainer.max_epochs")


def from_dict(stage: str, data: Mapping[str, Any]) -> Any:
    """A stage's schema instance from a plain dict (e.g. a saved config), checked like a preset."""
    given = _keep_literal(OmegaConf.create(dict(data)))  # resolved values: a `${` in them is text
    merged = _merge(OmegaConf.structured(schema_of(stage)), given, None, "the config")
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise BadInputError(None, f"config lacks {', '.join(missing)}")
    return OmegaConf.to_object(merged)


def to_dict(cfg: Any) -> dict:
    """A plain nested dict of a config (schema instance, DictConfig or mapping)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return OmegaConf.to_container(_structured(cfg), resolve=True)
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


# How each config this process resolved was asked for (preset, variant, overrides as given), by its
# resolved content: a run's record names them only for the config it saved, never another's of the
# same process (the demo resolves many). The seed is left out of the key: a task's seed folder saves
# the job's config with its own seed.
_ASKED: dict[str, dict[str, Any]] = {}
RUN_RECORD = "run.json"


def _asked_key(cfg: Any) -> str:
    d = to_dict(cfg)
    return yaml.dump({k: v for k, v in d.items() if k != "seed"}, Dumper=_Dumper, sort_keys=True)


def _asked_of(cfg: Any) -> dict[str, Any] | None:
    try:
        return _ASKED.get(_asked_key(cfg))
    except Exception:  # a record only: a config it cannot key is saved without its preset
        return None


def _note_asked(cfg: Any, asked: dict[str, Any]) -> None:
    try:
        key = _asked_key(cfg)
    except Exception:  # a record only: a config it cannot key is saved without its preset
        return
    _ASKED.pop(key, None)
    _ASKED[key] = asked
    while len(_ASKED) > 256:  # a long process (the demo) resolves many; a run saves one it resolved lately
        _ASKED.pop(next(iter(_ASKED)))


@functools.lru_cache(maxsize=1)
def _source_commit() -> dict[str, Any]:
    """The git commit of this package's source, and whether the checkout changed it, when the
    package is a tracked file of a git checkout (not a copy installed inside another repository)."""
    import subprocess

    here = Path(__file__).parent

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None

    tracked = git("ls-files", "--error-unmatch", Path(__file__).name)
    head = git("rev-parse", "HEAD") if tracked is not None and tracked.returncode == 0 else None
    if head is None or head.returncode != 0:
        return {"git_commit": None}
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    dirty = None if changed is None or changed.returncode != 0 else bool(changed.stdout.strip())
    return {"git_commit": head.stdout.strip(), "git_changed": dirty}


def save_run_record(cfg: Any, out_dir: str | os.PathLike) -> Path:
    """Write ``run.json`` beside a run's config: what made it that config.yaml cannot say (the
    moviessl version, the preset and overrides as given, the command line, the source's git commit,
    date and host). A run that trained keeps an earlier attempt's record as ``run.partNNN.json``,
    oldest first, as its config's parts; config.yaml itself, which resume and drift checks compare,
    is not touched."""
    import datetime
    import socket
    import sys

    from . import __version__

    out = Path(out_dir)
    asked = _asked_of(cfg) or {"preset": None, "overrides": None}
    record = {
        "moviessl": __version__,
        **asked,
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        **_source_commit(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
    }
    path = out / RUN_RECORD
    if (out / "checkpoints").is_dir() and path.is_file():
        n = len(list(out.glob("run.part*.json")))
        try:
            os.replace(path, out / f"run.part{n:03d}.json")
        except FileNotFoundError:  # a launch whose ranks its environment does not tell apart: another kept it
            pass
    return atomic_write_text(path, json_dumps(record, indent=1, default=str) + "\n")


def save_config(cfg: Any, out_dir: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config beside a run's outputs. A different config of a run that trained
    (``checkpoints/`` there: a resume with other settings) is kept as ``{stem}.partNNN.yaml``, oldest
    first, as the CSV logs are; one left by an attempt that stopped at an input check is replaced.

    Written by the job's leader alone (:func:`moviessl.dist.job_leader`): every process of a
    torchrun / srun / Lightning launch runs the same command into the same folder, and each rank's
    write replaced the leader's (a run.json of whichever rank came last, its host on another node),
    while a resume's ranks raced to keep the earlier config as a part. Returns the path either way."""
    from .dist import job_leader

    # its text escaped as a preset's (`\${x}` for a literal `${x}`), so the file loads back as this config
    data = OmegaConf.to_container(_keep_literal(OmegaConf.create(to_dict(cfg))))
    path, text = Path(out_dir) / name, yaml.dump(data, Dumper=_Dumper, sort_keys=False)
    if not job_leader():
        return path
    trained = (path.parent / "checkpoints").is_dir()
    if trained and path.is_file() and path.read_text(encoding="utf-8") != text:
        n = len(list(path.parent.glob(f"{path.stem}.part*.yaml")))
        try:
            os.replace(path, path.with_name(f"{path.stem}.part{n:03d}.yaml"))
        except FileNotFoundError:  # a launch whose ranks its environment does not tell apart: another kept it
            pass
    save_run_record(cfg, out_dir)
    return atomic_write_text(path, text)


def read_saved_config(path: str | os.PathLike) -> dict:
    r"""A run's saved ``config.yaml`` (:func:`save_config`) as the plain dict of the config it saved.

    Read back the way it was written: with :class:`_Loader`, and each ``\${`` (the escape of a
    literal ``${``, :func:`_keep_literal`) unescaped by OmegaConf. Read as plain YAML, a setting
    holding ``${x}`` came back as ``\${x}`` and differed from the live config's ``${x}`` (a run
    reused or resumed with the same settings said they had changed), while a setting changed to the
    text ``\${x}`` matched it. A file whose ``${`` does not resolve (written before it was escaped,
    or by hand) is its text as written. A file that is no config is one line naming it."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise BadInputError(path, f"not a readable config ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInputError(path, f"not a config: a mapping of settings, not {type(data).__name__}")
    try:
        return OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    except OmegaConfBaseException:
        return data
