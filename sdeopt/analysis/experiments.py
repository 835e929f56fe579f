"""Run a validated configuration (``config.load``): datasets, figures and a summary."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from pathlib import Path

import numpy as np

from sdeopt.analysis.compare import compare
from sdeopt.analysis.config import build
from sdeopt.analysis.metrics import _observable, divergence, order_fit, weak_error
from sdeopt.compressors import Identity, RandK
from sdeopt.discrete import DCSGD
from sdeopt.discrete.base import OBSERVABLES
from sdeopt.noise import ScaledSymmetricNoise
from sdeopt.problems import Quadratic
from sdeopt.schedules import Constant


def slug(name: str) -> str:
    """A file-name-safe version of a run name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def stationary_closed_form(method, problem) -> float | None:
    """E f at stationarity of DSGD / DCSGD+RandK on a diagonal quadratic (MATH.md §7).

    E f = Σ_j eta mean((1+ω) v_i) / (4N (1 - (eta λ_j / 2)(1 + ω/N))), v_i = σ_i² Var T the
    per-coordinate noise variance: the second-moment recursion sees only v_i, so the Gaussian
    formula holds for any finite-variance scaled law. None when it does not apply.
    """
    noise = getattr(method, "noise", None)
    if not (isinstance(method, DCSGD) and isinstance(noise, ScaledSymmetricNoise) and noise.finite_variance
            and isinstance(problem, Quadratic)
            and problem.diag is not None and isinstance(method.schedule, Constant)
            and method.normalize is None and method.clip is None
            and isinstance(method.compressor, (Identity, RandK))):
        return None
    d, n, lr = problem.dim, method.n_workers, method.lr
    omega = method.compressor.omega(d) if isinstance(method.compressor, RandK) else 0.0
    scales = method.noise.scale if isinstance(method.noise.scale, tuple) else (method.noise.scale,)
    mean_var = (1 + omega) * noise.variance * sum(s * s for s in scales) / len(scales)
    lam = problem.diag.double()
    denom = 1 - lr * lam / 2 * (1 + omega / n)
    if bool((denom <= 0).any()):
        return math.inf  # mean-square unstable
    return float((lr * mean_var / (4 * n * denom)).sum())


def run_trajectories(spec: dict) -> tuple:
    """compare() for one run; its summary rows."""
    ds = compare(spec["method"], spec["problem"], spec["x0"], spec["n_steps"], spec["n_runs"], seed=spec["seed"],
                 models=spec["models"], substeps=spec["substeps"], coupled=spec["coupled"],
                 record_every=spec["record_every"], record=spec["record"], record_x=spec["record_x"],
                 blowup_threshold=spec["blowup_threshold"], dtype=spec["dtype"],
                 device=spec["device"])
    closed = stationary_closed_form(spec["method"], spec["problem"])
    div = divergence(ds)
    err = weak_error(ds, "loss") if spec["models"] and "loss" in spec["record"] else None
    rows = []
    for model in ds["model"].values:
        final = ds["loss"].sel(model=model).isel(step=-1).values if "loss" in ds else None
        ok = ~ds["diverged"].sel(model=model).values
        row = {"run": spec["name"], "model": str(model), "diverged": float(div["fraction"].sel(model=model))}
        if final is not None:
            row["median_loss"] = float(np.median(final))
            row["mean_loss"] = float(final[ok].mean()) if ok.any() else math.nan
        if closed is not None:
            row["closed_form"] = closed
        if err is not None and model != "discrete":
            row["weak_error"] = float(err["error"].sel(model=model).isel(step=-1))
            row["weak_se"] = float(err["se"].sel(model=model).isel(step=-1))
        rows.append(row)
    return ds, rows


def run_weak_order(spec: dict) -> tuple:
    """Weak error at a fixed horizon over a grid of step sizes, and the fitted orders."""
    import xarray as xr

    errors = []
    for lr in spec["lrs"]:
        method = dataclasses.replace(spec["method"], lr=lr)
        n_steps = round(spec["horizon"] / lr)  # a whole number: checked by config.build
        obs = spec["observable"]
        levels = (spec["substeps"], 2 * spec["substeps"]) if spec["richardson"] else (spec["substeps"],)
        record = (obs,) if obs in OBSERVABLES else ("loss",)
        runs = [compare(method, spec["problem"], spec["x0"], n_steps, spec["n_runs"], seed=spec["seed"],
                        models=spec["models"], substeps=substeps, coupled=spec["coupled"],
                        record_every=n_steps, record=record, record_x=obs not in OBSERVABLES,
                        blowup_threshold=spec["blowup_threshold"], dtype=spec["dtype"], device=spec["device"])
                for substeps in levels]
        err = (richardson_weak_error(*runs, obs) if spec["richardson"] else weak_error(runs[0], obs))
        err = err.isel(step=-1, drop=True)
        errors.append(err.expand_dims(lr=[lr]))
    err = xr.concat(errors, dim="lr")
    rows = []
    for model in err["model"].values:
        e = err["error"].sel(model=model).values
        s = err["se"].sel(model=model).values
        row = {"run": spec["name"], "model": str(model), "errors": " ".join(f"{v:.2e}" for v in e)}
        if np.all(e > 0):
            import warnings
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                fit = order_fit(spec["lrs"], e, s)
            row.update(order=fit.slope, ci=f"[{fit.ci_low:.2f}, {fit.ci_high:.2f}]", reliable=fit.reliable)
        rows.append(row)
    err.attrs = {"observable": str(spec["observable"]), "horizon": spec["horizon"]}
    return err, rows


def richardson_weak_error(coarse, fine, observable: str = "loss"):
    """Weak error of the SDE models with the solver's own O(h) bias extrapolated away.

    ``coarse`` and ``fine`` are ``compare`` datasets of the same study (same seed, hence the same
    discrete runs) whose SDEs were solved with h and h/2. Each SDE run's value becomes
    2 g(X^{h/2}) - g(X^h), which has mean 2 E_{h/2} - E_h = E g(X) + O(h²); the standard error
    comes from these per-run values, so it is exact whatever the correlation of the two levels.
    A run that diverged at either level is left out.
    """
    import xarray as xr

    fine_v, coarse_v = _observable(fine, observable), _observable(coarse, observable)
    if not np.array_equal(fine_v.sel(model="discrete").values, coarse_v.sel(model="discrete").values):
        raise ValueError("Invalid coarse: its discrete runs differ from fine's (use the same seed and study)")
    sde = fine_v["model"] != "discrete"
    values = xr.where(sde, 2 * fine_v - coarse_v, fine_v)
    diverged = fine["diverged"] | (coarse["diverged"] & sde)
    combined = xr.Dataset({"value": values, "diverged": diverged}, attrs=fine.attrs)
    err = weak_error(combined, "value")
    err.attrs["observable"] = observable
    return err


def run_config(config: dict, out: Path, *, progress=None) -> list[dict]:
    """Run every run of a validated config, writing <run>.nc and <run>.png into ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sdeopt.analysis.plots import plot_divergence, plot_trajectories, plot_weak_error

    rows = []
    runs = config["runs"]
    for i, run in enumerate(runs):
        spec = build(run)
        if progress is not None:
            progress(i, len(runs), spec["name"])
        start = time.perf_counter()
        name = slug(spec["name"])
        if spec["study"] == "weak_order":
            data, run_rows = run_weak_order(spec)
            fig, ax = plt.subplots(figsize=(6, 4.5))
            plot_weak_error(data, ax=ax)
        else:
            data, run_rows = run_trajectories(spec)
            diverged = bool(data["diverged"].any())
            fig, axes = plt.subplots(1, 2 if diverged else 1, figsize=(11 if diverged else 6, 4.5), squeeze=False)
            plot_trajectories(data, "loss" if "loss" in data else spec["record"][0], ax=axes[0, 0])
            if diverged:
                plot_divergence(data, ax=axes[0, 1])
        fig.suptitle(spec["name"])
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        data.attrs["claim"] = config.get("claim", "")
        data.attrs["run"] = json.dumps(run, sort_keys=True, default=str)
        data.to_netcdf(out / f"{name}.nc")
        seconds = time.perf_counter() - start
        for row in run_rows:
            row["seconds"] = seconds
        rows.extend(run_rows)
    return rows
