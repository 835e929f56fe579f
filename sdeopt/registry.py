"""Registries: one per family of interchangeable parts, the single source of names.

A family (problems, noise laws, compressors, schedules, discrete methods, ...) keeps one
``Registry``: class name -> class. It is what TOML configs accept as ``type = "..."``, what the
command line lists (``sdeopt types``), and what the contract tests iterate over, so a class added
to a family with ``@REGISTRY.register`` is at once usable from a config and tested; a test fails
for a public concrete class of a family that is not registered (tests/test_registry.py).

``Registry.build`` is the one parser of the ``{type = "Name", key = value, ...}`` form, for every
family: unknown types and keys, a flag that is not a boolean, a missing required parameter and
a value the constructor refuses are each a ``ValueError`` naming the key and the value.

Example:
    >>> from sdeopt.compressors import COMPRESSORS
    >>> COMPRESSORS.build({"type": "RandK", "k": 2}, where="compressor")
    RandK(k=2)
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Mapping[str, Any], Generic[T]):
    """Class name -> class of one family.

    Args:
        family: what the classes are, in messages ("compressor", "noise law").
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._classes: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, cls: T | None = None, *, aliases: tuple[str, ...] = ()):
        """Add ``cls`` under its class name: ``@REGISTRY.register`` on the class.

        ``aliases`` are older or shorter names that ``build`` accepts too and ``names`` does not
        list: ``@SCHEDULES.register(aliases=("poly",))``.
        """
        if cls is None:
            return lambda c: self.register(c, aliases=aliases)
        name = cls.__name__
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"Invalid {self.family}: {name!r} is registered twice")
        self._classes[name] = cls
        for alias in aliases:
            self._aliases[alias] = name
        return cls

    def __getitem__(self, name: str) -> T:
        return self._classes[self._aliases.get(name, name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes or name in self._aliases

    def __repr__(self) -> str:
        return f"Registry({self.family!r}: {', '.join(self._classes)})"

    def names(self) -> str:
        """The registered names, comma-separated (for messages and help)."""
        return ", ".join(self._classes)

    def build(self, spec: Any, *, where: str, extra: Mapping[str, Any] | None = None):
        """An instance from ``{"type": name, **kwargs}`` (a TOML table or a ``config()``).

        Args:
            spec: the mapping.
            where: its place in the config, named by every message ("runs[0].noise").
            extra: keyword arguments added to the table's (parts built elsewhere, e.g. a
                method's noise object).
        """
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ValueError(
                f"Invalid config key: {where} = {spec!r} (a mapping with a 'type', one of "
                f"{self.names()})"
            )
        kind = spec["type"]
        if not isinstance(kind, str) or kind not in self:
            raise ValueError(
                f"Invalid config key: {where}.type = {kind!r} (unknown {self.family}; choose "
                f"from {self.names()})"
            )
        cls = self[kind]
        params = _parameters(cls)
        derived = {
            k: spec[k]
            for k in getattr(cls, "derived_keys", ())
            if k in spec and (params is None or k not in params)
        }
        kwargs = {k: v for k, v in spec.items() if k != "type" and k not in derived}
        for key in kwargs:
            if params is not None and key not in params:
                raise ValueError(
                    f"Invalid config key: {where}.{key} = {kwargs[key]!r} (not a parameter of "
                    f"{kind}, which takes {', '.join(params) or 'none'})"
                )
        for key, value in kwargs.items():  # a flag is a boolean, never a truthy string or 1
            if (
                params is not None
                and isinstance(params[key].default, bool)
                and not isinstance(value, bool)
            ):
                raise ValueError(f"Invalid config value: {where}.{key} = {value!r} (true or false)")
        missing = [
            name
            for name, p in (params or {}).items()
            if p.default is inspect.Parameter.empty
            and name not in kwargs
            and name not in (extra or {})
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if missing:
            raise ValueError(
                f"Invalid config key: {where}.{missing[0]} is missing ({kind} needs "
                f"{', '.join(missing)})"
            )
        try:
            obj = cls(**kwargs, **(extra or {}))
        except ValueError as exc:
            raise ValueError(f"Invalid config value in {where}: {exc}") from None
        except TypeError as exc:
            raise ValueError(f"Invalid config key in {where}: {exc}") from None
        if derived:  # recorded descriptions of the built object: they must describe it
            built = json.loads(json.dumps(obj.config()))
            for key, value in derived.items():
                if not _same(built.get(key), value):
                    raise ValueError(
                        f"Invalid config value: {where}.{key} = {value!r} (the {kind} this "
                        f"config builds has {key} = {built.get(key)!r})"
                    )
        return obj


def _parameters(cls: type) -> dict[str, inspect.Parameter] | None:
    """The constructor's parameters by name, or None when it takes ``**kwargs``."""
    params = dict(inspect.signature(cls).parameters)
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    params.pop("self", None)
    # *args of a deprecated positional form (sdeopt._validation.keyword_only) is not a key.
    return {n: p for n, p in params.items() if p.kind != p.VAR_POSITIONAL}


def _same(a: Any, b: Any) -> bool:
    """Equal, numbers to 1e-9 relative (a derived float, like a chain's stationary law, may be
    computed by another BLAS or an earlier version in its last bits)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)
    return a == b
