"""One checkpoint format for every stage.

A moviessl checkpoint is a ``torch.save``'d dict::

    {"format": "moviessl", "format_version": 3, "version": <package version>,
     "stage": "backbone" | "context" | "verb" | "srl" | "relation" | ...,
     "arch": {"builder": "moviessl.models.slowd:build_slowd", "kwargs": {...}},
     "state_dict": {...},            # weights only, no optimiser state
     "config": {...},                # the resolved run config
     "meta": {...}}                  # anything else (metrics, data hash, ...)

``arch`` names an importable builder and its keyword arguments, so :func:`build_from_checkpoint`
rebuilds the module for inference without the training code. Since format 3 the kwargs hold every
value of the builder's preset (:func:`pin_arch`): the preset's name is kept, but a later change to
the preset table does not change the network an existing checkpoint rebuilds. Lightning's own ``.ckpt`` files (with
optimiser state) are kept for ``--resume``; this format is what stages hand to each other.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import inspect
import os
import pickle
import re
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from . import __version__
from .config import to_dict
from .errors import BadInputError
from .utils.io import atomic_torch_save

try:
    from numpy._core import multiarray as _multiarray  # numpy 2
except ImportError:  # numpy 1
    from numpy.core import multiarray as _multiarray

FORMAT_VERSION = 3
# Builder settings added after format 1: a format-1 arch gets the values its network was built with
# then -- GELU and ``dropout`` on attention and inside the FFN in every TxE / TxD layer, ``dropout``
# inside the Object Transformer's FFN -- not the presets' later values.
_V1_LAYERS = {"activation": "gelu", "attn_dropout": None, "ffn_dropout": None}
_V1_DEFAULTS = {
    "moviessl.models.txe:build_txe": _V1_LAYERS,
    "moviessl.models.object_transformer:build_object_transformer": {"ffn_dropout": None},
    "moviessl.tasks.lvu.task:build_lvu_model": {"ffn_dropout": None},
}
_V1_NESTED = {"moviessl.tasks.vidsitu.srl:build_srl_model": ("txd_overrides", _V1_LAYERS)}
# Format 3 pins every preset's values into the arch (``pin_arch``); a format-2 arch names only the
# preset and is pinned when loaded, with the tables as they stood at format 2 -- today's. Whoever
# changes a value in a preset table below must first record its format-2 value in ``upgrade_arch``.
# builder -> (its preset table, the kwarg naming the preset, the kwarg holding overrides or None = flat)
PRESET_TABLES = {
    "moviessl.models.slowd:build_slowd": ("moviessl.models.slowd:SLOWD_PRESETS", "preset", None),
    "moviessl.models.txe:build_txe": ("moviessl.models.txe:TXE_PRESETS", "preset", None),
    "moviessl.models.txd:build_txd": ("moviessl.models.txd:TXD_PRESETS", "preset", None),
    "moviessl.models.object_transformer:build_object_transformer": (
        "moviessl.models.object_transformer:OT_PRESETS",
        "preset",
        None,
    ),
    "moviessl.tasks.lvu.task:build_lvu_model": ("moviessl.models.object_transformer:OT_PRESETS", "preset", None),
    "moviessl.tasks.vidsitu.srl:build_srl_model": ("moviessl.models.txd:TXD_PRESETS", "txd_preset", "txd_overrides"),
}
# The networks moviessl's stages write. Loading calls a checkpoint's builders with the file's own
# arguments, so any other callable (``moviessl.utils.io:atomic_write_text`` writes any file it is
# given) is called only with the opt-in below: a prefix such as ``moviessl.`` would not be enough.
BUILDERS = frozenset(
    {
        "moviessl.models.slowd:build_slowd",
        "moviessl.models.txe:build_txe",
        "moviessl.models.txd:build_txd",
        "moviessl.models.object_transformer:build_object_transformer",
        "moviessl.tasks.lvu.task:build_lvu_model",
        "moviessl.tasks.vidsitu.verb:build_verb_model",
        "moviessl.tasks.vidsitu.srl:build_srl_model",
        "moviessl.tasks.vidsitu.relation:build_relation_model",
    }
)
# The opt-in to both halves of the rule (a pickle beyond weights, a builder beyond BUILDERS): an
# environment variable, so that it reaches every rank of a torchrun launch and the command line.
TRUST_ENV = "MOVIESSL_TRUST_CHECKPOINTS"
_OPT_IN = f"load it only if you trust its source: {TRUST_ENV}=1 (trust=True in Python)"
# What moviessl's writers may leave in a model.pt's config and meta beyond what torch.load's
# weights-only unpickler rebuilds itself: numpy scalars, arrays and their dtypes (as utils.safe_pickle).
# numpy 1 pickles its scalars and arrays under ``numpy.core.multiarray``, numpy 2 under ``numpy._core``:
# both names are allowed, so a file written under either loads under either (as utils.safe_pickle).
_NUMPY_GLOBALS = [
    np.dtype,
    np.ndarray,
    *sorted({type(np.dtype(c)) for c in np.typecodes["All"] if c not in "OV"}, key=str),  # no object arrays
    *(
        (f, f"{module}.{f.__name__}")
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for f in (_multiarray.scalar, _multiarray._reconstruct)
    ),
]
# builders that moved since checkpoints were first written: old module -> new module
MOVED_BUILDERS = {
    "moviessl.tasks.verb": "moviessl.tasks.vidsitu.verb",
    "moviessl.tasks.srl": "moviessl.tasks.vidsitu.srl",
    "moviessl.tasks.relation": "moviessl.tasks.vidsitu.relation",
}


def arch_spec(builder: str, **kwargs: Any) -> dict:
    """``builder`` is ``"package.module:function"``."""
    return {"builder": builder, "kwargs": kwargs}


def upgrade_arch(arch: Any, format_version: int) -> Any:
    """``arch`` (and every arch nested in its kwargs) with the settings a format-``format_version``
    checkpoint implied made explicit, so it rebuilds the network it was trained as."""
    if format_version >= 2:
        return arch
    if isinstance(arch, (list, tuple)):
        return type(arch)(upgrade_arch(a, format_version) for a in arch)
    if not isinstance(arch, Mapping):
        return arch
    out = {k: upgrade_arch(v, format_version) for k, v in arch.items()}
    kw, builder = out.get("kwargs"), out.get("builder")
    if isinstance(kw, Mapping) and isinstance(builder, str):
        name = _builder_name(builder)
        kw = {**_V1_DEFAULTS.get(name, {}), **kw}
        if name in _V1_NESTED:
            key, defaults = _V1_NESTED[name]
            kw[key] = {**defaults, **(kw.get(key) or {})}
        out["kwargs"] = kw
    return out


# the VidSitu tasks whose runs on --videos write the Slow-D they read as a backbone.pt (meta.method
# "<its source's method>+<task>")
_TUNED_BY = ("verb", "srl", "relation")


def upgrade_tuned_meta(obj: dict) -> dict:
    """``obj`` with the ``meta.tuned_resize`` and ``meta.input`` clips that a ``backbone.pt`` written
    by ``finetune vidsitu --videos`` before they were recorded lacks, from the run's config saved in
    the same file: its meta copied its source's clips (16x4 where ``data.num_frames`` / ``stride``
    tuned it on others) and named no resize mode, so extract and embed_video read it centre-cropped
    though the paper preset tunes it on squashed frames. A config without ``data.resize`` is from
    before that setting: such runs read the crop."""
    meta, cfg = obj.get("meta"), obj.get("config")
    data = cfg.get("data") if isinstance(cfg, Mapping) else None
    if obj.get("stage") != "backbone" or not isinstance(meta, dict) or "tuned_resize" in meta:
        return obj
    if not isinstance(data, Mapping) or str(meta.get("method", "")).rpartition("+")[2] not in _TUNED_BY:
        return obj
    meta["tuned_resize"] = data.get("resize", "crop")
    if isinstance(meta.get("input"), Mapping):
        tuned = {k: data[k] for k in ("num_frames", "stride") if type(data.get(k)) is int and data[k] > 0}
        meta["input"] = {**meta["input"], **tuned}
    return obj


def _builder_name(builder: str) -> str:
    module_name, _, fn_name = builder.partition(":")
    return f"{MOVED_BUILDERS.get(module_name, module_name)}:{fn_name}"


def _import(name: str) -> Any:
    module_name, _, attr = name.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def pin_arch(arch: Any) -> Any:
    """``arch`` (and every arch nested in its kwargs) with its preset's values written out: what a
    builder takes from its preset table becomes an explicit keyword argument, so the arch rebuilds
    the same network after the table changes. The preset's name stays (the builders start from it
    and it says what the network was). An unknown builder or preset is left as it is; building it
    reports the problem."""
    if isinstance(arch, (list, tuple)):
        return type(arch)(pin_arch(a) for a in arch)
    if not isinstance(arch, Mapping):
        return arch
    out = {k: pin_arch(v) for k, v in arch.items()}
    kw, builder = out.get("kwargs"), out.get("builder")
    name = _builder_name(builder) if isinstance(builder, str) else None
    if not isinstance(kw, Mapping) or name not in PRESET_TABLES:
        return out
    table_name, preset_key, overrides_key = PRESET_TABLES[name]
    table = _import(table_name)
    preset = kw.get(preset_key, inspect.signature(_import(name)).parameters[preset_key].default)
    if preset not in table:
        return out
    kw = {**kw, preset_key: preset}
    if overrides_key is None:
        kw = {**table[preset], **kw}
    else:
        kw[overrides_key] = {**table[preset], **(kw.get(overrides_key) or {})}
    out["kwargs"] = kw
    return out


def build_arch(arch: Mapping[str, Any]) -> nn.Module:
    return _import(_builder_name(arch["builder"]))(**dict(arch.get("kwargs", {})))


def save_checkpoint(
    path: str | os.PathLike,
    *,
    stage: str,
    arch: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    config: Any = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    obj = {
        "format": "moviessl",
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "stage": stage,
        "arch": pin_arch(dict(arch)),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "config": to_dict(config) if config is not None else {},
        "meta": dict(meta or {}),
    }
    return atomic_torch_save(path, obj)


# the file a loaded checkpoint came from, for error lines; not part of the format
LOADED_FROM = "_loaded_from"


def trusted(trust: bool = False) -> bool:
    """Whether checkpoints may run code when loaded: ``trust``, or ``MOVIESSL_TRUST_CHECKPOINTS=1``."""
    if trust:
        return True
    value = os.environ.get(TRUST_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise BadInputError(TRUST_ENV, f"'{value}' is neither 1 nor 0")


def _safe_globals() -> Any:
    if hasattr(torch.serialization, "safe_globals"):
        return torch.serialization.safe_globals(_NUMPY_GLOBALS)
    # torch 2.4 has no scoped form, nor names given with the objects: this numpy's own names only
    torch.serialization.add_safe_globals([g for g in _NUMPY_GLOBALS if not isinstance(g, tuple)])
    torch.serialization.add_safe_globals([_multiarray.scalar, _multiarray._reconstruct])
    return nullcontext()


# how torch's weights-only unpickler names what it refused to rebuild
_REFUSED = re.compile(r"GLOBAL (\S+)|but got <class '([^']+)'>")


def load_file(path: str | os.PathLike, trust: bool = False) -> Any:
    """``torch.load`` of ``path`` on the CPU under the trust rule: without the opt-in
    (:func:`trusted`), only what a weights file holds is rebuilt (tensors, containers, numbers,
    strings, numpy scalars and arrays), since unpickling anything else can run code. A file that
    needs more is one line naming the file and what it holds; other failures are torch's own."""
    if trusted(trust):
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with _safe_globals(), warnings.catch_warnings():
            # a plain pickle (not torch's format) of protocol > 2 made the weights-only unpickler warn,
            # several lines on stderr before the one line that says the file is not a checkpoint
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _REFUSED.search(str(e))
        if found is None:
            raise
        what = found.group(1) or found.group(2)
        raise BadInputError(
            path, f"it names {what} to call or rebuild when loaded, which could run code; {_OPT_IN}"
        ) from None


def _builders(arch: Any) -> Iterator[Any]:
    """Every ``builder`` named in ``arch``, nested archs (a task model's backbone and TxE) too."""
    if isinstance(arch, Mapping):
        if "builder" in arch:
            yield arch["builder"]
        for v in arch.values():
            yield from _builders(v)
    elif isinstance(arch, (list, tuple)):
        for v in arch:
            yield from _builders(v)


def check_builders(arch: Any, where: str | os.PathLike, trust: bool = False) -> None:
    """One line unless every builder ``arch`` names (nested ones too) is in :data:`BUILDERS` or the
    user trusts the file (:func:`trusted`): loading calls them with the file's own arguments. Checked
    before anything outside moviessl is imported."""
    if trusted(trust):
        return
    for b in _builders(arch):
        name = _builder_name(str(b))
        if name in BUILDERS:
            continue
        if name.startswith("moviessl."):  # importing our own module runs nothing of the file's
            try:
                _import(name)
            except (ImportError, AttributeError, ValueError):  # a newer moviessl's network
                raise BadInputError(where, f"its network builder '{b}' is not in moviessl {__version__}") from None
        raise BadInputError(
            where,
            f"its arch names the builder '{b}', not one of moviessl {__version__}'s networks, and "
            f"loading calls it with the file's arguments; {_OPT_IN}",
        )


def load_checkpoint(
    path: str | os.PathLike, stage: str | tuple[str, ...] | None = None, *, trust: bool = False
) -> dict:
    """Load and validate a moviessl checkpoint (on CPU). Without ``trust`` (or
    ``MOVIESSL_TRUST_CHECKPOINTS=1``) a file that holds more than weights, numbers and strings, or
    whose arch names a builder outside :data:`BUILDERS`, is refused: either could run its code."""
    path = Path(path)
    if path.is_dir():  # a run's folder given for its export: it exists, so "not found" misled
        hint = " (its model.pt?)" if (path / "model.pt").is_file() else ""
        raise BadInputError(path, f"a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise BadInputError(path, "checkpoint not found")
    try:
        obj = load_file(path, trust)
    except BadInputError:
        raise
    except Exception as e:  # truncated / not a torch file
        raise BadInputError(path, f"not a readable checkpoint ({_load_problem(e)})") from None
    if isinstance(obj, dict) and "pytorch-lightning_version" in obj:
        # a run's checkpoints/*.ckpt: the stage's export is the model.pt beside checkpoints/
        raise BadInputError(path, "a Lightning training checkpoint (what --resume reads), not a moviessl model.pt")
    if not isinstance(obj, dict) or obj.get("format") != "moviessl":
        raise BadInputError(path, "not a moviessl checkpoint (no 'format: moviessl' entry)")
    version = obj.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):  # int() traced back on "3a", truncated 2.5
        raise BadInputError(path, f"its format_version {version!r} is not a whole number")
    if version > FORMAT_VERSION:  # its arch may mean another network here: refused, not rebuilt wrongly
        raise BadInputError(
            path,
            f"written by moviessl {obj.get('version')} in checkpoint format {version}; this moviessl "
            f"{__version__} reads formats up to {FORMAT_VERSION}",
        )
    if not isinstance(obj.get("stage"), str) or not isinstance(obj.get("arch"), Mapping):  # KeyError tracebacks
        raise BadInputError(path, "not a complete moviessl checkpoint (no 'stage' or 'arch' entry)")
    check_builders(obj["arch"], path, trust)
    builder = obj["arch"].get("builder")
    name = _builder_name(str(builder))
    module_name = name.partition(":")[0]
    lacks = BadInputError(path, f"its network builder '{builder}' is not in moviessl {__version__}")
    try:  # a builder this version lacks (a newer moviessl's checkpoint) was an ImportError traceback when built
        _import(name)
    except ModuleNotFoundError as e:
        # only the builder's own module missing is the checkpoint's problem; a module that exists but
        # fails to import (a broken library it needs) keeps its own error
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise lacks from None
        raise
    except (AttributeError, ValueError):
        raise lacks from None
    if stage is not None:
        stages = (stage,) if isinstance(stage, str) else tuple(stage)
        if obj["stage"] not in stages:
            raise BadInputError(path, f"checkpoint is from stage '{obj['stage']}', expected {' or '.join(stages)}")
    obj["arch"] = upgrade_arch(obj.get("arch"), version)
    if version < 3:
        obj["arch"] = pin_arch(obj["arch"])
    obj[LOADED_FROM] = str(path)  # build_from_checkpoint names the file (save_checkpoint does not copy it)
    return upgrade_tuned_meta(obj)


# errors of the machine, not of the file's bytes (a file cut short near its end makes torch's reader
# fail with EINVAL: that one is the file's)
_MACHINE_ERRNOS = frozenset(
    getattr(errno, n) for n in ("EACCES", "EPERM", "EIO", "ENXIO", "ETIMEDOUT", "ESTALE", "EROFS") if hasattr(errno, n)
)


def _load_problem(e: Exception) -> str:
    msg = str(e)
    if isinstance(e, OSError) and e.errno in _MACHINE_ERRNOS:  # permissions, a disk error: maybe a good file
        return e.strerror or msg
    if isinstance(e, EOFError):  # not a zip, and its pickle ends at once: a file with no bytes (or a few)
        return "empty or truncated file"
    if isinstance(e, OSError) or "central directory" in msg or "unexpected EOF" in msg or "truncated" in msg:
        return "truncated or corrupt file"
    # a pickle that is not torch's: its first opcode (weights-only reader) or its magic number
    if "invalid load key" in msg or "magic number" in msg or "Unsupported operand" in msg or isinstance(e, KeyError):
        return "not a torch file"
    return f"{type(e).__name__}: {msg.splitlines()[0][:100]}" if msg else type(e).__name__


CLIP_KEYS = ("num_frames", "stride", "short_side", "crop")  # a backbone's meta.input


def clip_input(obj: Mapping, where: Any, keys: tuple[str, ...] = CLIP_KEYS) -> dict:
    """A backbone checkpoint's ``meta.input`` (the clip it reads: frames, their stride on the 30-fps
    timeline, short side, crop), each of ``keys`` an integer >= 1, else one line naming ``where``.
    A checkpoint from another tool with a frame count of 0 or a stride written as text failed inside
    the decoding of every video instead."""
    inp = dict((obj.get("meta") or {}).get("input") or {})
    missing = [k for k in keys if k not in inp]
    if missing:
        raise BadInputError(where, f"checkpoint meta.input lacks {', '.join(missing)}")
    for k in keys:
        v = inp[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise BadInputError(where, f"checkpoint meta.input {k} must be an integer >= 1, got {v!r}")
        inp[k] = int(v)
    return inp


def build_from_checkpoint(
    path_or_obj: str | os.PathLike | Mapping, stage: str | tuple[str, ...] | None = None, *, trust: bool = False
) -> nn.Module:
    """Rebuild the module a checkpoint describes and load its weights (strict). A path is read by
    :func:`load_checkpoint` (``trust`` as there); a mapping's builders are checked again under the
    same rule (one read with ``torch.load`` alone, say, was never checked)."""
    obj = path_or_obj if isinstance(path_or_obj, Mapping) else load_checkpoint(path_or_obj, stage, trust=trust)
    where = obj.get(LOADED_FROM, "checkpoint")
    check_builders(obj.get("arch"), where, trust)
    try:
        model = build_arch(obj["arch"])
    except BadInputError as e:  # the builder's own check (a preset this version lacks) names no file
        raise BadInputError(where, f"its arch cannot be built here ({e})") from None
    except (TypeError, ValueError, KeyError) as e:  # arch kwargs this version's builder does not take
        raise BadInputError(where, f"its arch cannot be built here ({type(e).__name__}: {e})") from None
    sd = obj.get("state_dict")
    if not isinstance(sd, Mapping):
        raise BadInputError(where, "not a complete moviessl checkpoint (no 'state_dict' entry)")
    try:  # modules that upgrade older state dicts (_load_from_state_dict) do so inside this call
        model.load_state_dict(sd, strict=True)
    except RuntimeError:  # torch's own error is many lines long and does not name the file
        what = _weights_misfit(model.state_dict(), sd) or "torch refused them"
        raise BadInputError(where, f"its weights do not fit the network its arch describes ({what})") from None
    refuse_nonfinite(model.state_dict(), where)
    return model.eval()


def refuse_nonfinite(state_dict: Mapping[str, Any], where: Any) -> None:
    """One line naming ``where`` (the checkpoint) when a floating-point tensor of ``state_dict`` holds
    NaN/inf. Such weights (a run that diverged, saved by another tool or an earlier version) load
    without a word and give NaN for every input: `extract` then marked each event missing and each
    video "no event decodes", and a task run started from them ended on "training diverged" -- the
    fault of its videos or its own training, not of the file. :func:`build_from_checkpoint` calls it;
    so do the task runners that load a checkpoint's weights into a model of their own (``state_dict``
    None: the checkpoint has none)."""
    if not isinstance(state_dict, Mapping):
        raise BadInputError(where, "not a complete moviessl checkpoint (no 'state_dict' entry)")
    bad = [
        k
        for k, v in state_dict.items()
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise BadInputError(
            where, f"{len(bad)} weight tensor(s) hold NaN/inf (first: {bad[0]}): the run that saved it diverged"
        )


def misshaped(own: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> list[str]:
    """The keys of ``own`` that ``given`` holds as something else than a tensor of their shape."""
    return [
        k
        for k in own
        if k in given and not (torch.is_tensor(given[k]) and tuple(given[k].shape) == tuple(own[k].shape))
    ]


def _weights_misfit(own: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> str:
    """What keeps ``given`` from loading into a module whose state dict is ``own`` (empty: nothing)."""
    missing = [k for k in own if k not in given]
    extra = [k for k in given if k not in own]
    shape = misshaped(own, given)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} unexpected, e.g. {extra[0]}")
    if shape:
        k = shape[0]
        got = tuple(given[k].shape) if torch.is_tensor(given[k]) else type(given[k]).__name__
        parts.append(f"{len(shape)} of another shape, e.g. {k} {got} for {tuple(own[k].shape)}")
    return "; ".join(parts)


def file_hash(path: str | os.PathLike, n: int = 12) -> str:
    """Short sha256 of a file (records which checkpoint produced a set of features)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]
