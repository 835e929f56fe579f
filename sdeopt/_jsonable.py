"""JSON records of run configurations, including the parts that are user code.

A run's config (``Trajectory.config``, the ``config`` attribute of its dataset) describes how
it was made. Library objects describe themselves with ``config()``. A user callable (an Itô
chain's drift or diffusion, a ``FunctionProblem``'s f) is code, not data: it is recorded by its
qualified name, ``{"callable": "module.qualname", "reproducible": False}``, and the flag says
that the config alone does not rebuild the run (a lambda or a closure cannot even be found
again by its name, ``"module.f.<locals>.<lambda>"``). Any other object JSON cannot hold is
recorded by its type and repr, with the same flag. Nothing here raises on a strange value: a
dataset must always be writable.

Example:
    >>> jsonable({"drift": abs, "scale": (1.0, 2.0)})
    {'drift': {'callable': 'builtins.abs', 'reproducible': False}, 'scale': [1.0, 2.0]}
    >>> is_reproducible(jsonable({"drift": abs}))
    False
"""

from __future__ import annotations

import functools
import hashlib
import json
import reprlib
from collections.abc import Mapping

import numpy as np
import torch

#: The key of the flag; it is only ever written as False (absent means reproducible).
REPRODUCIBLE = "reproducible"

#: Arrays up to this many entries are recorded in full, larger ones as a summary and a hash.
MAX_NUMEL = 1024


def qualified_name(obj) -> str:
    """``module.qualname`` of a function, method or class; of its type for any other object."""
    if isinstance(obj, functools.partial):
        return f"functools.partial({qualified_name(obj.func)})"
    target = obj if isinstance(getattr(obj, "__qualname__", None), str) else type(obj)
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None) or type(obj).__name__
    return f"{module}.{qualname}" if isinstance(module, str) and module else str(qualname)


def callable_config(fn) -> dict:
    """The record of a user callable: its qualified name, marked not reproducible."""
    return {"callable": qualified_name(fn), REPRODUCIBLE: False}


def jsonable(value):
    """``value`` as JSON data (dicts with string keys, lists, str, numbers, bool, None).

    Objects with a ``config()`` method give their config; tuples become lists; tensors and
    arrays their values (a summary beyond ``MAX_NUMEL`` entries); dtypes and devices their
    names; callables and anything else a record marked ``"reproducible": False``.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    config = getattr(value, "config", None)
    if callable(config) and not isinstance(value, type):
        try:
            return jsonable(config())
        except Exception:  # a user object's config failed: record the object, do not crash
            return _object_config(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return _array_config(value)
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if callable(value):
        return callable_config(value)
    return _object_config(value)


def is_reproducible(record) -> bool:
    """False when any part of a ``jsonable`` record is marked ``"reproducible": False``."""
    if isinstance(record, Mapping):
        return record.get(REPRODUCIBLE, True) is not False and all(
            is_reproducible(v) for v in record.values()
        )
    if isinstance(record, list):
        return all(is_reproducible(v) for v in record)
    return True


def to_json(config) -> str:
    """``config`` as a JSON string (keys sorted), whatever it holds."""
    return json.dumps(jsonable(config), sort_keys=True)


def _array_config(value):
    a = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if a.dtype.kind not in "biuf":
        return _object_config(value)
    if a.size <= MAX_NUMEL:
        return a.tolist()
    a = np.ascontiguousarray(a, dtype=np.float64)
    return {
        "shape": list(a.shape),
        "min": float(a.min()),
        "max": float(a.max()),
        "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
    }


def _object_config(value) -> dict:
    try:
        text = reprlib.repr(value)
    except Exception:  # a broken __repr__ must not break the record
        text = f"<{type(value).__name__}>"
    return {"object": qualified_name(type(value)), "repr": text, REPRODUCIBLE: False}
