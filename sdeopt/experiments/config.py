r"""TOML experiment configurations: validated, turned into objects, never executed as code.

A configuration holds a ``claim`` (what the experiment shows), an optional ``[defaults]``
table, and one or more ``[[runs]]``. Each run (merged over the defaults) names its parts as
tables with a ``type`` and keyword arguments:

    problem   = { type = "Quadratic", diag = [1.0, 4.0] }
    noise     = { type = "StudentT", nu = 1.5, scale = 1.0 }
    compressor = { type = "RandK", k = 2 }                 # DCSGD only
    schedule  = { type = "poly", power = 0.5 }              # optional, default constant
    method    = { type = "DSignSGD", lr = 0.01, n_workers = 8 }

and the run parameters ``x0`` (a list of d numbers) or ``x0_fill`` (one number for every
coordinate), ``n_steps``, ``n_runs``, ``seed``, ``record_every``, ``record``, ``record_x``,
``models`` (SDE models, [] for the discrete method alone), ``substeps`` (a number, or "auto",
the default: the fewest whose estimated solver bias is within ``tolerance``, relative, default
0.01; ``compare``), ``coupled``,
``blowup_threshold``, ``dtype`` ("float64", the default, or "float32"), ``device``, ``name``,
``richardson``: solve the SDEs again with half the solver step and report
:math:`(2^p E_{h/2} - E_h)/(2^p - 1)` (the :math:`O(h^p)` bias of a scheme of weak order p
extrapolated away; nothing to remove for an exact scheme) beside the solver bias of the h
figures; by
default done exactly where the summary quotes a closed form; and ``average_from`` (a step):
summarise each run by its mean loss over the recorded steps from that step on (a stationary
window), not by its loss at the last step; ``scheme`` (the SDE solver, "auto" by default: the
most accurate that applies, ``sdeopt.dynamics.best_scheme``);
``quantiles`` (levels whose quantiles of the final loss are reported with their gaps to the
discrete ones); ``exit_radius`` (runs stop at their first step outside the ball of that radius,
and the rows report first exit times).
A run with ``study = "weak_order"`` instead takes ``lrs`` and
``horizon`` (n_steps = horizon / lr for each lr), ``observable`` and ``richardson`` (default true:
extrapolate the SDE solver's :math:`O(h)` bias away with :math:`2 E_{h/2} - E_h`).
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import tomllib
from functools import partial
from pathlib import Path
from typing import TypeGuard

import torch

from sdeopt import compressors, noise, problems, schedules
from sdeopt._stream import comparison_bytes, memory_shortfall
from sdeopt._validation import check_device, check_int, check_positive
from sdeopt.analysis.compare import compare
from sdeopt.discrete import MARKOV_ESTIMATORS, METHODS
from sdeopt.dynamics import SDE_MODELS, sde_of
from sdeopt.engine import OBSERVABLES
from sdeopt.random import check_seed

# The families' registries (the one source of the names a config accepts; sdeopt.registry).
PROBLEMS = problems.PROBLEMS
NOISES = noise.NOISES
UNIT_LAWS = noise.UNIT_LAWS
COMPRESSORS = compressors.COMPRESSORS
#: Config key -> the registry its ``type`` names come from (``sdeopt types`` prints it).
REGISTRIES = {
    "problem": PROBLEMS,
    "method": METHODS,
    "noise": NOISES,
    "compressor": COMPRESSORS,
    "schedule": schedules.SCHEDULES,
    "eps": UNIT_LAWS,
    "method.estimator": MARKOV_ESTIMATORS,
}


def types_table() -> str:
    """Every ``type`` a config accepts, by key, with each class's parameters (from the registries)."""
    lines = []
    for key, registry in REGISTRIES.items():
        lines.append(f"{key} = {{ type = ... }}  ({registry.family})")
        for name, cls in registry.items():
            params = [
                p for p in inspect.signature(cls).parameters.values() if p.kind != p.VAR_POSITIONAL
            ]
            shown = ", ".join(
                p.name if p.default is p.empty else f"{p.name}={p.default!r}"
                for p in params
                if p.name not in ("noise", "compressor", "eps", "schedule")
            )
            lines.append(f"    {name}({shown})")
    return "\n".join(lines)


RUN_KEYS = {
    "name",
    "problem",
    "noise",
    "compressor",
    "schedule",
    "method",
    "eps",
    "x0",
    "x0_fill",
    "n_steps",
    "n_runs",
    "seed",
    "record_every",
    "record",
    "record_x",
    "models",
    "substeps",
    "coupled",
    "blowup_threshold",
    "study",
    "lrs",
    "horizon",
    "observable",
    "richardson",
    "average_from",
    "dtype",
    "device",
    "stream",
    "moments",
    "samples",
    "scheme",
    "tolerance",
    "quantiles",
    "exit_radius",
}
TOP_KEYS = {"claim", "description", "defaults", "runs"}
STUDIES = ("trajectories", "weak_order")


def read_toml(path: str | Path) -> dict:
    """The parsed TOML file; a missing or malformed file is a ValueError naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"Invalid config: {str(path)!r} does not exist") from None
    except OSError as exc:  # a folder, no permission
        raise ValueError(
            f"Invalid config: {str(path)!r} cannot be read ({exc.strerror or exc})"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"Invalid config: {str(path)!r} is not valid TOML ({exc})") from None


def load(path: str | Path) -> dict:
    """Read and validate a TOML configuration; returns the parsed dict with runs merged over defaults."""
    return validate(read_toml(path))


def validate(raw: dict) -> dict:
    """Check keys and merge every run over ``defaults``; builds every object once to validate it."""
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ValueError(
            f"Invalid config key: {sorted(unknown)[0]!r} (top-level keys: {', '.join(sorted(TOP_KEYS))})"
        )
    check_text(raw)
    if not isinstance(raw.get("runs"), list) or not raw["runs"]:
        raise ValueError("Invalid config key: 'runs' (needs at least one [[runs]] table)")
    defaults = raw.get("defaults", {})
    _check_keys("defaults", defaults)
    runs = []
    for i, run in enumerate(raw["runs"]):
        if not isinstance(run, dict):
            raise ValueError(f"Invalid config key: runs[{i}] (must be a table)")
        _check_keys(f"runs[{i}]", run)
        merged = copy.deepcopy(defaults)
        merged.update(copy.deepcopy(run))
        merged.setdefault("name", f"run{i}")
        build(merged, where=f"runs[{i}]")  # validate now, before anything runs
        runs.append(merged)
    names = [r["name"] for r in runs]
    files = [slug(name) for name in names]  # the files each run writes are named after it
    if len(set(files)) != len(files):
        raise ValueError(
            f"Invalid config key: 'name' (run names must be distinct as file names: {names} "
            f"write {files})"
        )
    return {"claim": raw.get("claim", ""), "description": raw.get("description", ""), "runs": runs}


def slug(name: str) -> str:
    """A file-name-safe version of a run name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def check_text(raw: dict) -> None:
    """``claim`` and ``description`` are strings."""
    for key in ("claim", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise ValueError(f"Invalid config value: {key} = {raw[key]!r} (a string)")


def _check_keys(where: str, table) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"Invalid config key: {where!r} (must be a table)")
    unknown = set(table) - RUN_KEYS
    if unknown:
        raise ValueError(
            f"Invalid config key: {where}.{sorted(unknown)[0]} (allowed: {', '.join(sorted(RUN_KEYS))})"
        )


def build(run: dict, *, where: str = "run") -> dict:
    """The objects of one (merged) run: problem, method, x0 and the run parameters."""
    for key in ("problem", "method"):
        if key not in run:
            raise ValueError(f"Invalid config key: {where}.{key} is missing")
    problem = PROBLEMS.build(run["problem"], where=f"{where}.problem")
    parts = {}
    for key, registry in (("noise", NOISES), ("compressor", COMPRESSORS), ("eps", UNIT_LAWS)):
        if key in run:
            parts[key] = registry.build(run[key], where=f"{where}.{key}")
    if "schedule" in run:
        parts["schedule"] = schedules.SCHEDULES.build(run["schedule"], where=f"{where}.schedule")
    method_spec = run["method"]
    if isinstance(method_spec, dict) and isinstance(method_spec.get("estimator"), dict):
        estimator = MARKOV_ESTIMATORS.build(
            method_spec["estimator"], where=f"{where}.method.estimator"
        )
        method_spec = {k: v for k, v in method_spec.items() if k != "estimator"}
        parts["estimator"] = estimator
    if isinstance(method_spec, dict):
        for key in parts:
            if key in method_spec:
                raise ValueError(
                    f"Invalid config key: {where}.method.{key} = {method_spec[key]!r} (give the "
                    f"{key} as the run's own {key} table, not inside the method)"
                )
    method = METHODS.build(method_spec, where=f"{where}.method", extra=parts)
    x0 = _x0(run, problem.dim, where)
    study = run.get("study", "trajectories")
    if study not in STUDIES:
        raise ValueError(
            f"Invalid config key: {where}.study = {study!r} (choose from {', '.join(STUDIES)})"
        )

    def typed(key, default, kind):
        return _typed(run, where, key, default, kind)

    params = {
        "n_steps": typed("n_steps", 1000, "int"),
        "n_runs": typed("n_runs", 1000, "int"),
        "seed": typed("seed", 0, "int"),
        "record_every": typed("record_every", 10, "int"),
        "record": tuple(typed("record", ["loss", "grad_norm"], "names")),
        "record_x": typed("record_x", False, "bool"),
        "models": list(typed("models", [], "names")),
        "substeps": typed("substeps", "auto", "int_or_auto"),
        "coupled": typed("coupled", False, "bool"),
        "stream": typed("stream", False, "bool"),
        "blowup_threshold": float(typed("blowup_threshold", 1e10, "number")),
        "scheme": typed("scheme", "auto", "str"),
        "tolerance": float(typed("tolerance", 0.01, "number")),
    }
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    dtype = typed("dtype", "float64", "str")
    if dtype not in dtypes:
        raise ValueError(f"Invalid config value: {where}.dtype = {dtype!r} (float32 or float64)")
    params["dtype"] = dtypes[dtype]
    params["device"] = typed("device", "cpu", "str")
    # Everything simulate/solve would refuse is refused here, before any run of the config starts.
    for key, minimum in (
        ("n_steps", 0),
        ("n_runs", 1),
        ("seed", 0),
        ("record_every", 1),
        ("substeps", 1),
    ):
        if params[key] == "auto":
            continue
        try:
            (check_seed if key == "seed" else partial(check_int, minimum=minimum))(key, params[key])
        except ValueError as exc:
            raise ValueError(
                f"Invalid config value: {where}.{key} = {params[key]!r} ({exc})"
            ) from None
    try:
        check_device(params["device"])
        check_positive("blowup_threshold", params["blowup_threshold"])
        check_positive("tolerance", params["tolerance"])
    except ValueError as exc:
        raise ValueError(f"Invalid config value in {where}: {exc}") from None
    _check_names(where, "models", params["models"], SDE_MODELS)
    moments = typed("moments", "exact", "str")
    samples = run.get("samples")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)):
        raise ValueError(f"Invalid config value: {where}.samples = {samples!r} (an integer >= 2)")
    if moments not in ("exact", "estimated"):
        raise ValueError(
            f"Invalid config value: {where}.moments = {moments!r} (exact or estimated)"
        )
    if (moments == "estimated") != (samples is not None):
        raise ValueError(
            f"Invalid config value: {where}.samples = {samples!r} (an integer >= 2 with "
            f"moments = 'estimated', and only then; moments = {moments!r})"
        )
    params["moments"], params["samples"] = moments, samples
    for model in params["models"]:
        try:
            sde_of(method, problem, model, moments=moments, samples=samples)
        except ValueError as exc:
            raise ValueError(
                f"Invalid config value: {where}.models contains {model!r}: {exc}"
            ) from None
    _check_names(where, "record", params["record"], OBSERVABLES + tuple(method.extra_observables))
    if not params["record"]:
        raise ValueError(
            f'Invalid config value: {where}.record = [] (at least one observable, e.g. ["loss"])'
        )
    if len(set(params["models"])) != len(params["models"]):
        raise ValueError(
            f"Invalid config value: {where}.models = {params['models']!r} (each model at most once)"
        )
    richardson = typed("richardson", None, "bool")
    average_from = run.get("average_from")
    if average_from is not None and (
        study != "trajectories"
        or isinstance(average_from, bool)
        or not isinstance(average_from, int)
        or not 0 <= average_from <= params["n_steps"]
    ):
        raise ValueError(
            f"Invalid config value: {where}.average_from = {average_from!r} (a step in "
            f"[0, n_steps = {params['n_steps']}], trajectory studies only)"
        )
    quantiles = run.get("quantiles")
    if quantiles is not None and (
        study != "trajectories"
        or not isinstance(quantiles, list)
        or not quantiles
        or not all(_is_number(q) and 0 < q < 1 for q in quantiles)
    ):
        raise ValueError(
            f"Invalid config value: {where}.quantiles = {quantiles!r} (a non-empty list of levels "
            "in (0, 1), trajectory studies only)"
        )
    exit_radius = run.get("exit_radius")
    if exit_radius is not None:
        if study != "trajectories" or not _is_number(exit_radius) or not exit_radius > 0:
            raise ValueError(
                f"Invalid config value: {where}.exit_radius = {exit_radius!r} (a radius > 0, "
                "trajectory studies only)"
            )
        if "blowup_threshold" in run:
            raise ValueError(
                f"Invalid config value: {where}.exit_radius = {exit_radius!r} (it sets the "
                f"blow-up threshold; blowup_threshold = {run['blowup_threshold']!r} is given too)"
            )
        params["blowup_threshold"] = float(exit_radius)
    out = {
        "name": typed("name", "run", "str"),
        "problem": problem,
        "method": method,
        "x0": x0,
        "study": study,
        **params,
        "richardson": richardson,
        "average_from": average_from,
        "quantiles": None if quantiles is None else [float(q) for q in quantiles],
        "exit_radius": None if exit_radius is None else float(exit_radius),
    }
    if study == "weak_order":
        lrs = run.get("lrs")
        if (
            not isinstance(lrs, list)
            or len(lrs) < 4
            or not all(_is_number(v) and v > 0 for v in lrs)
            or len(set(lrs)) != len(lrs)
        ):
            raise ValueError(
                f"Invalid config value: {where}.lrs = {lrs!r} (>= 4 distinct positive step sizes)"
            )
        horizon = run.get("horizon")
        if not _is_number(horizon) or horizon <= 0:
            raise ValueError(f"Invalid config value: {where}.horizon = {horizon!r} (a time > 0)")
        for lr in lrs:
            if abs(horizon / lr - round(horizon / lr)) > 1e-9 * horizon / lr:
                raise ValueError(
                    f"Invalid config value: {where}.lrs contains {lr!r}, which does not divide "
                    f"horizon = {horizon!r} into whole steps"
                )
        observable = run.get("observable", "loss")
        if observable not in (*OBSERVABLES, "x2"):
            raise ValueError(
                f"Invalid config value: {where}.observable = {observable!r} "
                f"(choose from {', '.join((*OBSERVABLES, 'x2'))})"
            )
        out.update(
            lrs=[float(v) for v in lrs],
            horizon=float(horizon),
            observable=observable,
            richardson=True if richardson is None else richardson,
        )
        if not out["models"]:
            raise ValueError(
                f"Invalid config value: {where}.models = [] (a weak-order study needs SDE models)"
            )
    if out["stream"] and (study != "trajectories" or out["coupled"]):
        raise ValueError(
            f"Invalid config value: {where}.stream = true (trajectory studies without coupling "
            "only: a weak-order study keeps its errors, coupling its increments, in memory)"
        )
    if not out["stream"]:
        _check_memory(out, where)
    _dry_run(out, where)
    return out


def _dry_run(spec: dict, where: str) -> None:
    """One run of one step of the whole comparison (every model, the coupling, the records):
    what only running finds (a method that cannot be coupled, an observable the problem lacks)
    is refused here, before any run of the config has written anything."""
    try:
        compare_spec(dict(spec, n_steps=min(spec["n_steps"], 1), n_runs=1, substeps=1))
    except ValueError as exc:
        raise ValueError(f"Invalid config value in {where}: {exc}") from None


def compare_spec(
    spec: dict,
    substeps: int | str | dict | None = None,
    out: Path | None = None,
    schemes: dict | None = None,
    label: str = "h",
    path_seed: int | None = None,
):
    """``compare()`` for a built run (``build``), at ``substeps`` solver steps per optimizer step
    (default: the run's; a dict gives one per model) and the ``schemes`` per model (default: the
    run's ``scheme``) on the shared Brownian paths of ``path_seed`` (``compare``); with
    ``out``, streamed into out/<run>_<label>.zarr."""
    substeps = spec["substeps"] if substeps is None else substeps
    return compare(
        spec["method"],
        spec["problem"],
        spec["x0"],
        spec["n_steps"],
        spec["n_runs"],
        seed=spec["seed"],
        models=spec["models"],
        moments=spec["moments"],
        samples=spec["samples"],
        substeps=substeps,
        sde_method=spec["scheme"] if schemes is None else schemes,
        tolerance=spec["tolerance"],
        path_seed=path_seed,
        coupled=spec["coupled"],
        record_every=spec["record_every"],
        record=spec["record"],
        record_x=spec["record_x"],
        blowup_threshold=spec["blowup_threshold"],
        dtype=spec["dtype"],
        device=spec["device"],
        out=None if out is None else out / f"{slug(spec['name'])}_{label}.zarr",
    )


def _check_memory(spec: dict, where: str) -> None:
    """Refuse, before any run, a study whose results cannot fit in memory (one comparison at a
    time: each model's results and the copy that joins them)."""
    weak = spec["study"] == "weak_order"
    n_steps = max(round(spec["horizon"] / lr) for lr in spec["lrs"]) if weak else spec["n_steps"]
    why = memory_shortfall(
        comparison_bytes(
            n_steps,
            spec["record_every"],
            spec["n_runs"],
            len(spec["models"]),
            len(spec["record"]) + spec["record_x"] * spec["problem"].dim,
            spec["dtype"],
        )
    )
    if why is not None:
        steps = (
            f"{where}.horizon = {spec['horizon']!r}" if weak else f"{where}.n_steps = {n_steps!r}"
        )
        raise ValueError(
            f"Invalid config value: {where}.n_runs = {spec['n_runs']!r} with {steps} ({why})"
        )


#: What each kind of config value must be; TOML has a type for each, so nothing is coerced
#: (a string "false" is truthy: read as a boolean it would silently mean true).
KINDS = {
    "bool": "true or false, a TOML boolean",
    "int": "an integer",
    "number": "a number",
    "str": "a string",
    "names": 'a list of names, e.g. ["first_order"]',
    "int_or_auto": 'an integer, or "auto"',
}


def _is_number(value) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _typed(run: dict, where: str, key: str, default, kind: str):
    """``run[key]`` (or ``default`` when absent), refused unless it is of ``kind`` (a KINDS key)."""
    value = run.get(key, default)
    if key not in run:
        return value
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": _is_number(value),
        "str": isinstance(value, str),
        "names": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "int_or_auto": value == "auto" or (isinstance(value, int) and not isinstance(value, bool)),
    }[kind]
    if not ok:
        raise ValueError(f"Invalid config value: {where}.{key} = {value!r} ({KINDS[kind]})")
    return value


def _check_names(where: str, key: str, names, allowed: tuple) -> None:
    for name in names:
        if name not in allowed:
            raise ValueError(
                f"Invalid config value: {where}.{key} contains {name!r} "
                f"(choose from {', '.join(allowed)})"
            )


def _x0(run: dict, dim: int, where: str) -> torch.Tensor:
    if "x0" in run and "x0_fill" in run:
        raise ValueError(f"Invalid config key: {where}.x0_fill (give x0 or x0_fill, not both)")
    if "x0_fill" in run:
        value = run["x0_fill"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"Invalid config value: {where}.x0_fill = {value!r} (a number)")
        if not math.isfinite(value):
            raise ValueError(f"Invalid config value: {where}.x0_fill = {value!r} (a finite number)")
        return torch.full((dim,), float(value), dtype=torch.float64)
    if "x0" not in run:
        raise ValueError(
            f"Invalid config key: {where}.x0 is missing (a list of {dim} numbers, or x0_fill)"
        )
    value = run["x0"]
    if (
        not isinstance(value, list)
        or len(value) != dim
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"Invalid config value: {where}.x0 = {value!r} (a list of {dim} numbers)")
    x0 = torch.tensor(value, dtype=torch.float64)
    if not torch.isfinite(x0).all():
        raise ValueError(f"Invalid config value: {where}.x0 = {value!r} (finite numbers)")
    return x0
