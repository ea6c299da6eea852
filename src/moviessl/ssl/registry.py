"""The backbone pretraining methods: one file per method in :mod:`moviessl.ssl.methods`.

A method is a :class:`~moviessl.ssl.base.BackboneModule` subclass registered under its name::

    @register_method("cvrl")
    class CVRL(BackboneModule):
        views = "pair"             # what the clip dataset yields: "pair", "single", or None (no training)
        ...

:func:`list_methods` knows the built-in ones without importing them (so the CLI stays quick);
:func:`get_method` imports a built-in method's file on first use. A method defined elsewhere is
available once the module holding it has been imported.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import BadInputError

_METHODS: dict[str, type] = {}
_BUILTIN_DIR = Path(__file__).parent / "methods"


def register_method(name: str):
    """Class decorator: make a BackboneModule subclass available as ``--method name``."""

    def deco(cls: type) -> type:
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def _builtin() -> list[str]:
    return sorted(p.stem for p in _BUILTIN_DIR.glob("*.py") if not p.stem.startswith("_"))


def list_methods() -> list[str]:
    """Names of all methods, built-in and registered."""
    return sorted(set(_builtin()) | set(_METHODS))


def get_method(name: str) -> type:
    if name not in _METHODS and name in _builtin():
        importlib.import_module(f"{__package__}.methods.{name}")
    if name not in _METHODS:
        raise BadInputError("--method", f"unknown method {name!r} ({'|'.join(list_methods())})")
    return _METHODS[name]
