"""Run a discrete method and its SDE models on one time grid, into one xarray Dataset."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from sdeopt._jsonable import is_reproducible, jsonable, to_json
from sdeopt._stream import ZarrSink, check_output_memory, comparison_bytes
from sdeopt._validation import check_device, check_dtype, check_int
from sdeopt.analysis.equivalents import ODE, ODE_OBSERVABLES, check_equivalent, risk_ode
from sdeopt.discrete import MarkovSGD, Method, simulate
from sdeopt.dynamics import best_scheme, choose_substeps, sde_of, solve
from sdeopt.dynamics.accuracy import check_applies
from sdeopt.dynamics.levy import MODEL as LEVY
from sdeopt.dynamics.solvers import shares_paths
from sdeopt.problems import Problem
from sdeopt.random import DEFAULT_BLOCK_SIZE, check_seed, derived_seed, seed_attr

#: The pilots of substeps="auto" draw from derived_seed(seed, PILOT_STREAM + model index).
PILOT_STREAM = 1000


def _per_model(name: str, value, model: str, models) -> Any:
    """``value`` for ``model``: itself, or its entry in a dict by model name ("auto" if absent;
    a key that names no SDE model of the comparison is refused)."""
    if isinstance(value, dict):
        unknown = [key for key in value if key not in models]
        if unknown:
            raise ValueError(
                f"Invalid {name}: {value!r} (its key {unknown[0]!r} is not an SDE model of this "
                f"comparison: {', '.join(models)})"
            )
        return value.get(model, "auto")
    return value


def model_seed(seed: int, index: int) -> int:
    """Seed of the index-th SDE model of a comparison (index 0 is the discrete run itself).

    Independent streams by default: reusing the discrete seed would make the first-order model
    with one substep share its Gaussian draws with DSGD, a coupling nobody asked for.
    """
    if index == 0:
        return int(seed)
    return derived_seed(seed, index)


def compare(
    method: Method,
    problem: Problem,
    x0,
    n_steps: int,
    n_runs: int,
    *,
    seed: int = 0,
    models: tuple[str, ...] | list[str] = ("first_order",),
    substeps: int | str | dict[str, int] = "auto",
    coupled: bool = False,
    record_every: int = 1,
    record: tuple[str, ...] | list[str] = ("loss", "grad_norm"),
    record_x: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    blowup_threshold: float = 1e10,
    max_memory: float = 2**30,
    block_size: int = DEFAULT_BLOCK_SIZE,
    sde_method: str | dict[str, str] = "auto",
    out=None,
    moments: str = "exact",
    samples: int | None = None,
    tolerance: float = 0.01,
    pilot_runs: int = 500,
    path_seed: int | None = None,
):
    """The discrete method and each SDE model in ``models``, side by side.

    Args:
        method, problem, x0, n_steps, n_runs: as in ``sdeopt.discrete.simulate``.
        seed: the discrete run's seed; SDE model i draws from ``model_seed(seed, i)``.
        models: SDE models ("first_order", "second_order", "curvature", "levy"), and "ode" (the
            deterministic equivalent of streaming SGD on Gaussian least squares,
            ``risk_ode``: one curve, the same value in every run, no iterates): a list, or one
            name.
        substeps: solver steps per optimizer step for the SDEs: a number, one per model (a
            dict), or "auto" (the default): per model, the fewest of 1, 2, 4, ... whose
            estimated solver bias on the mean of the first recorded observable is within
            ``tolerance`` (relative) at every recorded step, found by a pilot of
            ``min(pilot_runs, n_runs)`` runs on its own streams (the Lévy model's Euler
            scheme is not estimated: 1 substep and a warning)
            (``sdeopt.dynamics.choose_substeps``; docs/models.md, "Choosing the scheme and
            the substeps").
        tolerance, pilot_runs: the relative solver-bias tolerance of ``substeps="auto"`` and
            its pilot's runs per level.
        path_seed: SDE model i draws its Brownian path from ``derived_seed(path_seed, i)``
            (``solve(path_seed=...)``), where its scheme can share one: two comparisons with
            the same ``path_seed`` and substeps s and 2s then solve each model on the same
            path, refined, so that the difference of their figures (a Richardson
            extrapolation) carries little Monte Carlo error. Default: no shared path.
        moments, samples: how the SDE models get the method's moments (``sde_of``): "exact"
            (closed forms) or "estimated" from ``samples`` fresh draws per step.
        coupled: drive every SDE with the discrete run's own draws (DSGD with Gaussian noise for
            the Brownian models, with SymmetricStable noise for "levy"; see
            ``simulate(keep_increments=True)``), so that runs are paired (strong error).
        record_every, record, record_x, device, dtype: as in ``simulate``.
        blowup_threshold, max_memory, block_size: as in ``simulate``.
        sde_method: the scheme of ``solve`` (``sdeopt.dynamics.SCHEMES``; "euler" or "exact"
            for "levy"), one per model (a dict), or "auto" (the default): per model the most
            accurate scheme that applies (``sdeopt.dynamics.best_scheme``: the exact OU step,
            else Platen's weak order 2, else Euler).
        out: a new zarr store path: every model streams its results there chunk by chunk (see
            ``simulate``); not with ``coupled``. Without it, results that would not fit in the
            available memory (all models, and the copy that joins them) are refused up front.

    Returns:
        ``xarray.Dataset`` with dims (model, step, run[, coord]), model = ``["discrete", *models]``,
        and attrs: ``config`` (JSON of everything above; user code recorded by name),
        ``reproducible`` (0 when the config records user code), ``seed``, ``coupled``, versions,
        device, ``solver`` (JSON: per SDE model its scheme, its substeps and, where chosen
        by a pilot, the ``SubstepChoice``: estimated relative bias, its se, levels tried); for
        MarkovSGD ``oracle_calls_per_step``, the expected oracle calls per step
        (``MarkovSGD.expected_calls()``), the cost axis ``step * oracle_calls_per_step`` of
        every model. With ``out``, opened lazily from the store.
    """
    import xarray as xr

    from sdeopt._version import __version__

    models = [models] if isinstance(models, str) else models
    record = (record,) if isinstance(record, str) else record
    for name, names in (("models", models), ("record", record)):
        if not isinstance(names, (list, tuple)) or not all(isinstance(v, str) for v in names):
            raise ValueError(f"Invalid {name}: {names!r} (a name or a list of names)")
    models = list(models)
    if len(models) != len(set(models)):
        raise ValueError(f"Invalid models: {models!r} (each model at most once)")
    sdes = {  # validates before any work
        model: sde_of(method, problem, model, moments=moments, samples=samples)
        for model in models
        if model != ODE
    }
    schemes = {model: _per_model("sde_method", sde_method, model, sdes) for model in sdes}
    for model, sde in sdes.items():
        if schemes[model] == "auto":
            schemes[model] = best_scheme(sde, coupled=coupled)
    for model, sde in sdes.items():
        if sde.sampler is None:  # estimated moments: solve's own check (Euler only)
            check_applies(sde, schemes[model])
    wanted = {model: _per_model("substeps", substeps, model, sdes) for model in sdes}
    if ODE in models:
        check_equivalent(method, problem)
        if out is not None:
            raise ValueError(
                "Invalid out: the 'ode' model (a deterministic curve) is not streamed; "
                "compare in memory"
            )
        unknown = [name for name in record if name not in ODE_OBSERVABLES]
        if unknown:
            raise ValueError(
                f"Invalid record: {unknown[0]!r} (the 'ode' model gives "
                f"{', '.join(ODE_OBSERVABLES)})"
            )
    own = [name for name in record if name in getattr(method, "extra_observables", ())]
    if own and models:
        raise ValueError(
            f"Invalid record: {own[0]!r} (the discrete method's own observable; SDE models do "
            "not have it. Record it with models=[], or use the dataset attribute "
            "oracle_calls_per_step where it is a cost axis)"
        )
    common: dict[str, Any] = dict(
        record_every=record_every,
        record=record,
        record_x=record_x,
        device=device,
        dtype=dtype,
        blowup_threshold=blowup_threshold,
        max_memory=max_memory,
        block_size=block_size,
    )
    config = {
        "method": method.config(),
        "problem": problem.config(),
        "models": models,
        "n_steps": n_steps,
        "n_runs": n_runs,
        "seed": seed,
        "substeps": substeps,
        "coupled": coupled,
        "record_every": record_every,
        "record": list(record),
        "record_x": record_x,
        "blowup_threshold": blowup_threshold,
        "block_size": block_size,
        "sde_method": sde_method,
        "moments": moments,
        "samples": samples,
        "path_seed": None if path_seed is None else check_seed("path_seed", path_seed),
        "x0": torch.as_tensor(x0, dtype=torch.float64).tolist(),
    }
    config = jsonable(config)  # user code (a FunctionProblem's f, a chain's drift) by its name
    run_dtype = check_dtype(dtype)
    attrs = {
        "config": to_json(config),
        "reproducible": int(is_reproducible(config)),
        "seed": seed_attr(seed),
        "coupled": int(coupled),
        "lr": float(method.lr),
        "device": str(check_device(device)),
        "dtype": str(run_dtype).replace("torch.", ""),
        "sdeopt_version": __version__,
        "torch_version": torch.__version__,
        "xarray_version": xr.__version__,
    }
    if isinstance(method, MarkovSGD):
        # The cost axis of every model, SDEs included: step k has used k times this many oracle
        # calls in expectation (the discrete run's own count is its oracle_calls observable).
        attrs["oracle_calls_per_step"] = float(method.expected_calls())
    if out is None:
        check_output_memory(
            comparison_bytes(
                check_int("n_steps", n_steps),
                check_int("record_every", record_every, minimum=1),
                check_int("n_runs", n_runs, minimum=1),
                len(models),
                len(record) + record_x * problem.dim,
                run_dtype,
            ),
            n_runs,
        )
    solver: dict[str, dict] = {}
    observable = record[0] if record and record[0] in ("loss", "grad_norm") else "loss"
    for i, (model, sde) in enumerate(sdes.items(), start=1):
        if wanted[model] == "auto" and n_steps == 0:
            solver[model] = {"scheme": schemes[model], "substeps": 1}
        elif wanted[model] == "auto" and model == LEVY and schemes[model] != "exact":
            warnings.warn(
                "compare: the 'levy' model's Euler solver bias cannot be estimated by a pilot "
                "(choose_substeps); it is solved with 1 substep: pass substeps= to choose",
                stacklevel=2,
            )
            solver[model] = {"scheme": schemes[model], "substeps": 1, "estimated": False}
        elif wanted[model] == "auto":
            pilot_n = min(check_int("pilot_runs", pilot_runs, minimum=2), max(n_runs, 2))
            start = torch.as_tensor(x0)
            choice = choose_substeps(
                sde,
                start[:pilot_n] if start.ndim == 2 and len(start) > 1 else start,  # per-run x0
                check_int("n_steps", n_steps, minimum=1),
                tolerance=tolerance,
                scheme=schemes[model],
                observable=observable,
                pilot_runs=pilot_n,
                seed=derived_seed(seed, PILOT_STREAM + i),
                coupled=coupled,
                device=device,
                dtype=dtype,
                blowup_threshold=blowup_threshold,
            )
            solver[model] = choice.config()
        else:
            solver[model] = {"scheme": schemes[model], "substeps": wanted[model]}
    attrs["solver"] = to_json(solver)
    sink = None if out is None else ZarrSink(out, models=["discrete", *models], attrs=attrs)
    disc = simulate(
        method, problem, x0, n_steps, n_runs, seed=seed, keep_increments=coupled, out=sink, **common
    )
    datasets = [disc] if sink is not None else [disc.to_dataset()]
    for i, model in enumerate(models, start=1):
        if model == ODE:
            datasets.append(_ode_dataset(method, problem, x0, n_steps, datasets[0], record_every))
            continue
        path = solve(
            sdes[model],
            x0,
            n_steps,
            n_runs,
            seed=model_seed(seed, i),
            substeps=solver[model]["substeps"],
            scheme=solver[model]["scheme"],
            path_seed=(
                derived_seed(path_seed, i)
                if path_seed is not None
                and shares_paths(sdes[model], solver[model]["scheme"], coupled=coupled)
                else None
            ),
            coupled=disc if coupled else None,
            out=sink,
            **common,
        )
        datasets.append(path if sink is not None else path.to_dataset())
    if sink is not None:
        return sink.finish()
    ds = xr.concat(datasets, dim="model", combine_attrs="override", data_vars="all")
    ds.attrs = attrs
    return ds


def _ode_dataset(method, problem, x0, n_steps, like, record_every):
    """``risk_ode``'s curve in the schema of the runs' dataset ``like``: every run holds the
    deterministic value, none diverges, and the iterates (when recorded) are NaN."""
    import numpy as np
    import xarray as xr

    curve = risk_ode(method, problem, x0, n_steps, record_every=record_every)
    runs = like["run"]
    out = xr.Dataset(
        {
            name: curve[name].expand_dims(run=runs.values).transpose("model", "step", "run")
            for name in like.data_vars
            if name in ODE_OBSERVABLES
        },
        coords={"time": like["time"], "lr_sum": like["lr_sum"]},
    )
    out["diverged"] = xr.zeros_like(like["diverged"]).assign_coords(model=["ode"])
    out["blowup_step"] = xr.full_like(like["blowup_step"], -1).assign_coords(model=["ode"])
    if "x" in like:
        out["x"] = xr.full_like(like["x"], np.nan).assign_coords(model=["ode"])
    out.attrs = dict(curve.attrs)
    return out
