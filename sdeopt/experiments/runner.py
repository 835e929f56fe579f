"""Run a validated configuration (``config.load``): datasets, figures and a summary."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from sdeopt import io
from sdeopt.analysis.closed_forms import stationary_loss
from sdeopt.analysis.compare import compare
from sdeopt.analysis.metrics import (
    divergence,
    exit_times,
    observable_values,
    order_fit,
    quantile_error,
    weak_error,
)
from sdeopt.dynamics.accuracy import weak_order
from sdeopt.dynamics.levy import MODEL as LEVY_MODEL
from sdeopt.engine import OBSERVABLES
from sdeopt.experiments.config import build, compare_spec, slug
from sdeopt.random import derived_seed


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    """Sample mean and its standard error (nan when fewer than 2 values)."""
    if len(values) < 2:
        return (float(values.mean()) if len(values) else math.nan), math.nan
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


#: The Richardson levels of a run share the Brownian paths of derived_seed(seed, PATH_STREAM).
PATH_STREAM = 2000


def _compare(spec: dict, substeps, out: Path | None, schemes: dict | None = None, label="h"):
    ds = compare_spec(
        spec, substeps, out, schemes, label, path_seed=derived_seed(spec["seed"], PATH_STREAM)
    )
    # A streamed study's summaries and figures read the observables into memory; the iterates,
    # the part that outgrows it, stay in the store.
    return ds if out is None else ds.drop_vars("x", errors="ignore").load()


def run_trajectories(spec: dict, out: Path | None = None) -> tuple:
    r"""compare() for one run: the dataset, its summary rows, and the dataset at h/2 (or None).

    Every figure is over the runs alive at the last recorded step (a diverged run is frozen at
    its last finite value, which would otherwise enter the median and the mean), and their
    number is reported (``alive``). With ``average_from`` each run's figure is its mean loss
    over the recorded steps from that step on (``_time_average``), else its loss at the last
    step. Where the run quotes a closed form (``spec["richardson"]`` None, the default) or asks
    for it (True), the SDEs are solved again with half the solver step, :math:`h/2`, on the same
    seed and with the same schemes, and each SDE row gets the extrapolated mean
    :math:`(2^p E_{h/2} - E_h)/(2^p - 1)` (the :math:`O(h^p)` bias of its scheme's weak order
    p removed; ``solver_levels``) with its standard error from the per-run values, and the
    solver bias of the h figure, :math:`2^p (E_h - E_{h/2})/(2^p - 1)`, with its se; the weak
    errors are then those of the extrapolated values. A model solved by a scheme exact in law
    has neither (nothing to remove); when every model is, the h/2 solve is skipped. Each SDE
    row names its ``scheme`` and ``substeps``.

    With ``spec["stream"]`` the datasets are streamed into ``out``/<name>_h.zarr and
    <name>_h2.zarr (one store per solver step) and returned without their iterates ``x``, which
    stay in the store.
    """
    out = out if spec.get("stream") else None
    ds = _compare(spec, spec["substeps"], out)
    closed = stationary_loss(spec["method"], spec["problem"])
    extrapolate = spec.get("richardson")
    if extrapolate is None:
        extrapolate = closed is not None
    solver = solver_levels(ds)
    # Nothing to extrapolate when every model's scheme is exact in law.
    inexact = any(w != 1.0 for w in solver["weight"].values())
    extrapolate = bool(extrapolate and spec["models"] and "loss" in ds and inexact)
    fine = half_step(spec, solver, out) if extrapolate else None
    coarse_s, fine_s = ds, fine  # the datasets the figures are computed from
    if spec.get("average_from") is not None and "loss" in ds:
        coarse_s = _time_average(ds, spec["average_from"])
        fine_s = _time_average(fine, spec["average_from"]) if fine is not None else None
    div = divergence(coarse_s)
    err = None
    if spec["models"] and "loss" in ds:
        err = (
            richardson_weak_error(coarse_s, fine_s, "loss", solver["weight"])
            if extrapolate
            else weak_error(coarse_s, "loss")
        )
    # An unbounded direction under infinite-variance noise: the loss has no finite variance
    # (on a quadratic, no finite mean), so a standard error would be meaningless.
    method = spec["method"]
    heavy = not getattr(getattr(method, "noise", None), "finite_variance", True) and not getattr(
        method, "bounded", True
    )
    quant = None
    if spec.get("quantiles") and "loss" in ds and len(ds["model"]) > 1:
        quant = quantile_error(coarse_s, "loss", spec["quantiles"]).isel(step=-1)
    exits = exit_times(ds) if spec.get("exit_radius") is not None else None
    # The SDEs' exit times again at h/2: their change is the solver's share of the figure.
    exits_fine = exit_times(fine) if exits is not None and fine is not None else None
    rows = []
    for model in ds["model"].values:
        ok = ~coarse_s["diverged"].sel(model=model).values  # (run,): alive at the last step
        row = {
            "run": spec["name"],
            "model": str(model),
            "alive": int(ok.sum()),
            "diverged": float(div["fraction"].sel(model=model)),
        }
        if model in solver["scheme"]:
            row["scheme"] = solver["scheme"][model]
            row["substeps"] = solver["substeps"][model]
        if "loss" in ds:
            final = coarse_s["loss"].sel(model=model).isel(step=-1).values  # (run,)
            row["median_loss"] = float(np.median(final[ok])) if ok.any() else math.nan
            row["mean_loss"], row["mean_se"] = _mean_se(final[ok])
            if heavy:  # no finite variance: no standard error (n/a), the mean only as measured
                row["mean_se"] = math.nan
            if fine_s is not None and model != "discrete":
                # (2^p E_{h/2} - E_h) / (2^p - 1) = w E_{h/2} + (1 - w) E_h, w = 2^p / (2^p - 1)
                w = solver["weight"][model]
                both = ok & ~fine_s["diverged"].sel(model=model).values
                f_h = final[both]
                f_h2 = fine_s["loss"].sel(model=model).isel(step=-1).values[both]
                row["extrap_loss"], row["extrap_se"] = _mean_se(w * f_h2 + (1 - w) * f_h)
                row["solver_bias"], row["bias_se"] = _mean_se(w * (f_h - f_h2))
        if spec.get("quantiles") and "loss" in ds:
            final = coarse_s["loss"].sel(model=model).isel(step=-1).values[ok]
            row["quantiles"] = " ".join(f"{v:.3g}" for v in np.quantile(final, spec["quantiles"]))
            if quant is not None and model != "discrete":
                q = quant.sel(model=model)
                row["quantile_gaps"] = " ".join(
                    f"{v:+.2g}±{u:.1g}" for v, u in zip(q["signed"].values, q["se"].values)
                )
        if exits is not None:
            e = exits.sel(model=model)
            row["exited"] = float(e["fraction"])
            row["exit_median"] = float(e["median"])
            row["exit_ci"] = f"[{float(e['median_low']):.0f}, {float(e['median_high']):.0f}]"
            row["exit_mean"], row["exit_se"] = float(e["mean"]), float(e["mean_se"])
            if exits_fine is not None and model != "discrete":
                row["exit_median_h2"] = float(exits_fine["median"].sel(model=model))
        if closed is not None:
            row["closed_form"] = closed
        if err is not None and model != "discrete":
            row["weak_error"] = float(err["error"].sel(model=model).isel(step=-1))
            row["weak_se"] = float(err["se"].sel(model=model).isel(step=-1))
        rows.append(row)
    return ds, rows, fine


def _time_average(ds, start: int):
    """``ds`` with each run's loss replaced by its mean over the recorded steps >= ``start``.

    One step remains, the last; a run that diverged anywhere stays flagged. The runs are
    independent, so the standard errors of these per-run averages across runs are exact,
    whatever the correlation along a run; in the stationary regime averaging a window many
    correlation times long divides the variance of the figures by about as many.
    """
    window = ds["loss"].sel(step=ds["step"] >= start)
    mean = (
        window.mean("step")
        .expand_dims(step=ds["step"].values[-1:])
        .transpose("model", "step", "run")
    )
    out = ds[["diverged", "blowup_step"]].assign(loss=mean)
    out.attrs = dict(ds.attrs)
    return out


def _error_influence(values, ok, paired: bool, reference: str = "discrete") -> dict:
    """Per SDE model, the per-run influence values of its signed weak error at one step size.

    ``values`` and ``ok`` are (model, run). The signed error E_model - E_reference is a mean
    (paired: of run-wise differences over runs alive in both; independent: a difference of two
    means over each model's live runs); to first order it moves by (1/n) Σ_b ψ_b, with ψ_b the
    run's influence value returned here (run,). Runs are seeded by index, so run b at one step
    size and run b at another share random streams: the covariance of two step sizes' errors is
    Σ_b ψ_b ψ'_b / n², which no per-step-size standard error shows.
    """
    ref = values.sel(model=reference).values
    ref_ok = ok.sel(model=reference).values
    n = len(ref)
    out = {}
    for model in values["model"].values:
        if model == reference:
            continue
        v, v_ok = values.sel(model=model).values, ok.sel(model=model).values
        if paired:
            keep = v_ok & ref_ok
            d = np.where(keep, v - ref, 0.0)
            psi = np.where(keep, d - d[keep].mean(), 0.0) * n / max(keep.sum(), 1)
        else:
            psi = np.where(v_ok, v - v[v_ok].mean(), 0.0) * n / max(v_ok.sum(), 1) - np.where(
                ref_ok, ref - ref[ref_ok].mean(), 0.0
            ) * n / max(ref_ok.sum(), 1)
        out[str(model)] = psi
    return out


@dataclasses.dataclass(frozen=True)
class SlopeFit:
    r"""Least-squares slope of :math:`\log |\text{weak error}|` against :math:`\log \mathrm{lr}`
    over the step sizes used.

    A *finite-range* slope: over a handful of step sizes it need not equal the asymptotic weak
    order. ``mc_se`` is its Monte Carlo standard error (delta method, with the covariance of the
    errors across step sizes from the per-run values: the step sizes share seeds); ``ci_low``,
    ``ci_high`` combine, in quadrature, that Monte Carlo half-width (normal quantile) with the
    regression half-width from the fit's residuals (Student t, ``order_fit``), which measures
    how far the log errors are from a straight line. The residuals themselves contain Monte Carlo
    noise, so the interval is conservative. ``reliable`` is ``order_fit``'s: False when the
    Monte Carlo error at the smallest lr is not well below the error.
    """

    slope: float
    mc_se: float
    ci_low: float
    ci_high: float
    reliable: bool


def finite_range_slope(lrs, signed, ses, influence, *, level: float = 0.95) -> SlopeFit:
    r"""The ``SlopeFit`` of weak errors ``signed`` (L,) with standard errors ``ses`` (L,).

    ``influence`` (L, n): per-run influence values of each error (``_error_influence``); only
    their correlation across step sizes is used, the variances being :math:`\mathrm{ses}^2`.
    """
    import warnings

    from scipy import stats

    lrs, signed, ses = (np.asarray(a, dtype=float) for a in (lrs, signed, ses))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        fit = order_fit(lrs, np.abs(signed), ses, level=level)
    x = np.log(lrs)
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()  # slope = w @ log|signed|
    psi = np.asarray(influence, dtype=float)
    cov = psi @ psi.T
    sd = np.sqrt(np.diag(cov))
    corr = np.divide(cov, np.outer(sd, sd), out=np.eye(len(lrs)), where=np.outer(sd, sd) > 0)
    rel = ses / np.abs(signed)  # se of log|signed|, to first order
    mc_se = float(math.sqrt(max(w @ (corr * np.outer(rel, rel)) @ w, 0.0)))
    half = math.hypot(fit.ci_high - fit.slope, stats.norm.ppf(0.5 + level / 2) * mc_se)
    return SlopeFit(
        slope=fit.slope,
        mc_se=mc_se,
        ci_low=fit.slope - half,
        ci_high=fit.slope + half,
        reliable=fit.reliable,
    )


def run_weak_order(spec: dict) -> tuple:
    """Weak error at a fixed horizon over a grid of step sizes, and the finite-range slopes.

    With ``richardson`` the SDEs are solved with h and h/2 and the errors are those of the
    extrapolated values (``richardson_weak_error``); the row then also gives, per lr, the solver
    bias :math:`2^p (E_h - E_{h/2})/(2^p - 1)` of the h figures (mean over runs alive at both
    levels; p the weak order of each model's scheme).
    """
    import xarray as xr

    errors, influence, bias = [], [], []
    obs = spec["observable"]
    for lr in spec["lrs"]:
        method = dataclasses.replace(spec["method"], lr=lr)
        n_steps = round(spec["horizon"] / lr)  # a whole number: checked by config.build
        record = (obs,) if obs in OBSERVABLES else ("loss",)

        def study(substeps, schemes, method=method, n_steps=n_steps, record=record):
            return compare(
                method,
                spec["problem"],
                spec["x0"],
                n_steps,
                spec["n_runs"],
                seed=spec["seed"],
                models=spec["models"],
                substeps=substeps,
                sde_method=schemes,
                tolerance=spec["tolerance"],
                path_seed=derived_seed(spec["seed"], PATH_STREAM),
                coupled=spec["coupled"],
                record_every=n_steps,
                record=record,
                record_x=obs not in OBSERVABLES,
                blowup_threshold=spec["blowup_threshold"],
                dtype=spec["dtype"],
                device=spec["device"],
            )

        runs = [study(spec["substeps"], spec["scheme"])]
        if spec["richardson"]:
            solver = solver_levels(runs[0])
            runs.append(
                study({m: 2 * s for m, s in solver["substeps"].items()}, dict(solver["scheme"]))
            )
        final = [observable_values(r, obs).isel(step=-1, drop=True) for r in runs]  # (model, run)
        sde = final[0]["model"] != "discrete"
        if spec["richardson"]:
            err = richardson_weak_error(runs[0], runs[1], obs, solver["weight"])
            w = _model_weights(solver["weight"], final[0]["model"])
            values = xr.where(sde, w * final[1] + (1 - w) * final[0], final[0])
            ok = ~(runs[1]["diverged"] | (runs[0]["diverged"] & sde))
            gap = w * (final[0] - final[1])
            bias.append(
                {
                    str(m): _mean_se(gap.sel(model=m).values[ok.sel(model=m).values])
                    for m in spec["models"]
                }
            )
        else:
            err = weak_error(runs[0], obs)
            values, ok = final[0], ~runs[0]["diverged"]
        influence.append(_error_influence(values, ok, bool(runs[0].attrs.get("coupled", 0))))
        errors.append(err.isel(step=-1, drop=True).expand_dims(lr=[lr]))
    err = xr.concat(errors, dim="lr")
    rows = []
    for model in err["model"].values:
        e = err["error"].sel(model=model).values
        s = err["se"].sel(model=model).values
        row = {
            "run": spec["name"],
            "model": str(model),
            "errors": " ".join(f"{v:.2e}±{u:.0e}" for v, u in zip(e, s)),
        }
        if bias:
            row["solver_bias"] = " ".join(f"{b[str(model)][0]:+.1e}" for b in bias)
        if np.all(e > 0):
            fit = finite_range_slope(
                spec["lrs"],
                err["signed"].sel(model=model).values,
                s,
                np.stack([psi[str(model)] for psi in influence]),
            )
            row.update(
                slope=fit.slope,
                slope_se=fit.mc_se,
                ci=f"[{fit.ci_low:.2f}, {fit.ci_high:.2f}]",
                reliable=fit.reliable,
            )
        rows.append(row)
    err.attrs = {"observable": str(spec["observable"]), "horizon": spec["horizon"]}
    return err, rows


def solver_levels(ds) -> dict[str, dict]:
    r"""What ``compare`` solved each SDE model of ``ds`` with: ``scheme``, ``substeps`` and the
    Richardson ``weight`` :math:`w = 2^p / (2^p - 1)` of its weak order p (1 for a scheme exact
    in law, whose extrapolation is its h/2 figure itself), each a dict by model."""
    solver = json.loads(ds.attrs["solver"])
    out: dict[str, dict] = {"scheme": {}, "substeps": {}, "weight": {}}
    for model, level in solver.items():
        order = weak_order(level["scheme"], levy=model == LEVY_MODEL)
        out["scheme"][model] = level["scheme"]
        out["substeps"][model] = level["substeps"]
        out["weight"][model] = 1.0 if math.isinf(order) else 2.0**order / (2.0**order - 1.0)
    return out


def _model_weights(weights: dict, models):
    """The Richardson weights as a DataArray over the ``models`` coordinate (Euler's 2 for a
    model not in ``weights``; the discrete method's is unused)."""
    import xarray as xr

    return xr.DataArray(
        [weights.get(str(m), 2.0) for m in models.values], coords={"model": models.values}
    )


def half_step(spec: dict, solver: dict, out: Path | None = None):
    """The study of ``spec`` again with every SDE's solver step halved (twice its substeps, the
    same schemes): the fine level of the Richardson extrapolation."""
    return _compare(
        spec,
        {model: 2 * s for model, s in solver["substeps"].items()},
        out,
        dict(solver["scheme"]),
        "h2",
    )


def richardson_weak_error(coarse, fine, observable: str = "loss", weights=None):
    r"""Weak error of the SDE models with the solver's own bias extrapolated away.

    ``coarse`` and ``fine`` are ``compare`` datasets of the same study (same seed, hence the same
    discrete runs) whose SDEs were solved with h and h/2. For a scheme of weak order p, each
    SDE run's value becomes :math:`w\, g(X^{h/2}) + (1 - w)\, g(X^h)`,
    :math:`w = 2^p / (2^p - 1)` (``weights``, by model; by default those of the schemes
    ``coarse`` records in its ``solver`` attribute, ``solver_levels``, and Euler's 2 for a
    dataset without one), whose mean
    :math:`(2^p E_{h/2} - E_h)/(2^p - 1) = \mathbb{E}\, g(X) + O(h^{p+1})`; the standard
    error comes from these per-run values, so it is exact whatever the correlation of the two
    levels. At each step a run counts while it is alive at both levels (``metrics.alive``).
    """
    import xarray as xr

    fine_v, coarse_v = observable_values(fine, observable), observable_values(coarse, observable)
    if not np.array_equal(
        fine_v.sel(model="discrete").values, coarse_v.sel(model="discrete").values
    ):
        raise ValueError(
            "Invalid coarse: its discrete runs differ from fine's (use the same seed and study)"
        )
    sde = fine_v["model"] != "discrete"
    if weights is None:
        weights = solver_levels(coarse)["weight"] if "solver" in coarse.attrs else {}
    w = _model_weights(weights, fine_v["model"])
    values = xr.where(sde, w * fine_v + (1 - w) * coarse_v, fine_v)
    diverged = fine["diverged"] | (coarse["diverged"] & sde)
    combined = xr.Dataset({"value": values, "diverged": diverged}, attrs=fine.attrs)
    if "blowup_step" in fine and "blowup_step" in coarse:  # else alive = ~diverged at every step
        never = np.iinfo(np.int64).max  # -1 (never blew up) sorts last
        first = np.minimum(
            fine["blowup_step"].where(fine["blowup_step"] >= 0, never),
            coarse["blowup_step"].where(coarse["blowup_step"] >= 0, never),
        )
        combined["blowup_step"] = xr.where(
            sde, xr.where(first == never, -1, first), fine["blowup_step"]
        ).astype(np.int64)
    err = weak_error(combined, "value")
    err.attrs["observable"] = observable
    return err


def _label_stores(out: Path, spec: dict, config: dict, run: dict) -> None:
    """Add the claim and the run's config to the attributes of a streamed run's stores."""
    import zarr

    for path in out.glob(f"{slug(spec['name'])}_h*.zarr"):
        zarr.open_group(str(path), mode="r+").attrs.update(
            claim=config.get("claim", ""), run=json.dumps(run, sort_keys=True, default=str)
        )


def run_config(config: dict, out: Path, *, progress=None) -> list[dict]:
    """Run every run of a validated config, writing <run>.nc and <run>.png into ``out``.

    A trajectory run whose SDE figures were extrapolated over the solver step also writes its
    h/2 dataset, <run>_h2.nc. A run with ``stream = true`` streams its datasets into
    <run>_h.zarr and <run>_h2.zarr instead (see ``run_trajectories``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sdeopt.analysis.plots import (
        plot_divergence,
        plot_trajectories,
        plot_weak_error,
    )

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
            data, run_rows, fine = run_trajectories(spec, out)
            if spec["stream"]:
                _label_stores(out, spec, config, run)
            elif fine is not None:  # the h/2 solves behind the extrapolated figures
                fine.attrs["claim"] = config.get("claim", "")
                fine.attrs["run"] = json.dumps(run, sort_keys=True, default=str)
                io.save(fine, out / f"{name}_h2.nc")
            diverged = bool(data["diverged"].any())
            fig, axes = plt.subplots(
                1, 2 if diverged else 1, figsize=(11 if diverged else 6, 4.5), squeeze=False
            )
            plot_trajectories(data, "loss" if "loss" in data else spec["record"][0], ax=axes[0, 0])
            if diverged:
                plot_divergence(data, ax=axes[0, 1])
        fig.suptitle(spec["name"])
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        if not spec["stream"]:
            data.attrs["claim"] = config.get("claim", "")
            data.attrs["run"] = json.dumps(run, sort_keys=True, default=str)
            io.save(data, out / f"{name}.nc")
        seconds = time.perf_counter() - start
        for row in run_rows:
            row["seconds"] = seconds
        rows.extend(run_rows)
    return rows
