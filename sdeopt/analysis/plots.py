"""Plots of comparison datasets (docs/schema.md) and weak-error tables.

Every function takes a Dataset first and ``ax=None`` (a new figure when None) and returns the
matplotlib Axes; none calls ``show``, so all work under the Agg backend. The discrete method is
drawn black and solid, each SDE model dashed in its own colour. Runs flagged ``diverged`` are
left out of every statistic, and the fraction left out is written into the legend label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The x axes ``plot_trajectories`` and ``plot_divergence`` accept: coordinate name -> label.
X_AXES = {
    "time": "time t = k·η  [optimizer steps × lr]",
    "step": "step k  [optimizer steps]",
    "lr_sum": "summed learning rate Σ η_j  [optimizer steps × lr]",
}
STATS = ("mean", "median")
KINDS = ("hist", "ccdf")

_VAR_LABELS = {
    "loss": "loss f(x)",
    "grad_norm": "gradient norm ‖∇f(x)‖",
    "dist": "distance ‖x − x*‖",
}
_MODEL_COLORS = {"first_order": "C0", "second_order": "C1", "curvature": "C2"}
_OTHER_COLORS = ("C3", "C4", "C5", "C6", "C8", "C9")
_RESERVED = ("diverged", "blowup_step")


# --------------------------------------------------------------------------------------------
# helpers


def _new_axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    return ax


def _style(model: str, index: int) -> dict:
    """Line style of a model: discrete black solid, SDE models dashed and coloured."""
    if model == "discrete":
        return {"color": "black", "linestyle": "-", "linewidth": 1.8}
    color = _MODEL_COLORS.get(model, _OTHER_COLORS[index % len(_OTHER_COLORS)])
    return {"color": color, "linestyle": "--", "linewidth": 1.6}


def _models(ds) -> list[str]:
    if "model" not in ds.dims:
        raise ValueError("Invalid ds: no 'model' dimension (expected the schema of docs/schema.md)")
    return [str(m) for m in ds["model"].values]


def _kept_runs(ds, model: str) -> np.ndarray:
    """(B,) bool: the runs of ``model`` that did not diverge."""
    if "diverged" not in ds:
        return np.ones(ds.sizes["run"], dtype=bool)
    return ~np.asarray(ds["diverged"].sel(model=model).transpose("run").values, dtype=bool)


def _label(model: str, kept: np.ndarray) -> str:
    excluded = 1.0 - kept.mean() if kept.size else 0.0
    if excluded > 0:
        return f"{model} ({100 * excluded:.3g}% diverged, excluded)"
    return model


def _check_dims(da, name: str, allowed: set[str]) -> None:
    extra = [d for d in da.dims if d not in allowed]
    if extra:
        raise ValueError(
            f"Invalid {name}: {da.name!r} has extra dims {extra}; select one value of "
            f"each first, e.g. ds.isel({extra[0]}=0)"
        )


def _check_var(ds, var, dims: tuple[str, ...]) -> None:
    candidates = [
        str(v) for v in ds.data_vars if str(v) not in _RESERVED and set(ds[v].dims) >= set(dims)
    ]
    if (
        not isinstance(var, str)
        or var not in ds.data_vars
        or var in _RESERVED
        or not set(ds[var].dims) >= set(dims)
    ):
        raise ValueError(f"Invalid var: {var!r}; this dataset offers {candidates}")


def _check_x(ds, x) -> None:
    if x not in X_AXES:
        raise ValueError(f"Invalid x: {x!r}; choose one of {list(X_AXES)}")
    if x not in ds.coords:
        raise ValueError(f"Invalid x: the dataset has no {x!r} coordinate")


def _x_values(ds, x: str, model: str) -> np.ndarray:
    """(S,) float64 values of the x coordinate (per model when models differ in lr)."""
    c = ds[x]
    if "model" in c.dims:
        c = c.sel(model=model)
    return np.asarray(c.transpose("step").values, dtype=np.float64)


def _var_label(ds, var: str, coord: int | None = None) -> str:
    attrs = ds[var].attrs
    name = attrs.get("long_name") or _VAR_LABELS.get(var, var)
    if coord is not None:
        name = f"{var}[{coord}]"
    units = attrs.get("units")
    return f"{name}  [{units}]" if units else name


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a), a, np.nan)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", framealpha=0.85)


# --------------------------------------------------------------------------------------------
# 1. trajectories


def plot_trajectories(
    ds,
    var: str = "loss",
    *,
    stat: str = "mean",
    quantiles: tuple[float, float] | None = (0.1, 0.9),
    x: str = "time",
    logy: bool = True,
    ax=None,
):
    r"""Mean (or median) over runs of ``var`` against time, with a shaded quantile band per model.

    Args:
        ds: Dataset with ``var(model, step, run)`` and ``diverged(model, run)``.
        var: a per-run observable ("loss", "grad_norm", "dist", ...).
        stat: "mean" or "median" over the runs that did not diverge (non-finite values skipped).
        quantiles: (lo, hi) of the shaded band, 0 <= lo < hi <= 1; None for no band.
        x: "time" (:math:`t = k \cdot \eta`), "step" (:math:`k`) or "lr_sum"
            (:math:`\sum \eta_j`).
        logy: log scale on y; non-positive statistics are then left out.
        ax: Axes to draw into; a new figure when None.

    Returns:
        The Axes: one line per model (an empty one when all its runs diverged), one band each.
    """
    _check_var(ds, var, ("model", "step", "run"))
    _check_dims(ds[var], "var", {"model", "step", "run"})
    if stat not in STATS:
        raise ValueError(f"Invalid stat: {stat!r}; choose one of {list(STATS)}")
    _check_x(ds, x)
    if quantiles is not None:
        try:
            lo_q, hi_q = (float(q) for q in quantiles)
        except (TypeError, ValueError):
            raise ValueError(
                f"Invalid quantiles: {quantiles!r}; expected (lo, hi) or None"
            ) from None
        if not 0.0 <= lo_q < hi_q <= 1.0:
            raise ValueError(f"Invalid quantiles: {quantiles!r}; need 0 <= lo < hi <= 1")
    ax = _new_axes(ax)
    for i, model in enumerate(_models(ds)):
        kept = _kept_runs(ds, model)
        values = _finite(ds[var].sel(model=model).transpose("step", "run").values)[
            :, kept
        ]  # (S, B')
        t = _x_values(ds, x, model)
        style = _style(model, i)
        center = np.full(t.shape, np.nan)
        lo = np.full(t.shape, np.nan)
        hi = np.full(t.shape, np.nan)
        has = np.isfinite(values).any(axis=1) if values.shape[1] else np.zeros(t.shape, dtype=bool)
        if has.any():  # reduce only rows with data: no all-NaN warnings
            rows = values[has]
            center[has] = np.nanmean(rows, axis=1) if stat == "mean" else np.nanmedian(rows, axis=1)
            if quantiles is not None:
                lo[has], hi[has] = np.nanquantile(rows, [lo_q, hi_q], axis=1)
        ok = np.isfinite(center) & (center > 0 if logy else True)
        ax.plot(t[ok], center[ok], label=_label(model, kept), **style)
        if quantiles is not None:
            band = np.isfinite(lo) & np.isfinite(hi) & ((lo > 0) if logy else True)
            if band.any():
                ax.fill_between(
                    t[band],
                    lo[band],
                    hi[band],
                    color=style["color"],
                    alpha=0.12 if model == "discrete" else 0.18,
                    linewidth=0,
                )
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel(_var_label(ds, var))
    band_text = (
        f", {quantiles[0]:.0%}–{quantiles[1]:.0%} quantile band" if quantiles is not None else ""
    )
    ax.set_title(f"{var}: {stat} over runs{band_text}")
    _legend(ax)
    return ax


# --------------------------------------------------------------------------------------------
# 2. weak error


def plot_weak_error(
    err,
    *,
    x: str = "lr",
    ax=None,
    reference_slopes: Sequence[float] = (1, 2),
    floor: float | None = None,
):
    r"""Log-log weak error against the learning rate, with :math:`\pm 2` se bars, slopes and the
    MC floor.

    Args:
        err: Dataset with variables ``error`` and ``se`` over the dim ``x`` (and optionally
            ``model``), e.g. one step of ``metrics.weak_error`` per learning rate, concatenated.
        x: the dim holding the step sizes.
        reference_slopes: dotted lines :math:`\mathrm{error} \propto \eta^p`, anchored at the
            error at the largest :math:`\eta`.
        floor: the Monte Carlo floor to draw; None takes ``se`` at the smallest :math:`\eta` (the
            largest over models).
        ax: Axes to draw into; a new figure when None.

    Returns:
        The Axes: one error-bar series per model, one line per slope, one "MC floor" line.
    """
    if not all(hasattr(err, "data_vars") and v in err.data_vars for v in ("error", "se")):
        raise ValueError("Invalid err: expected an xarray Dataset with variables 'error' and 'se'")
    if not isinstance(x, str) or x not in err.dims:
        raise ValueError(f"Invalid x: {x!r} is not a dim of err (dims: {list(err.dims)})")
    for v in ("error", "se"):
        _check_dims(err[v], "err", {x, "model"})
    try:
        slopes = [float(p) for p in reference_slopes]
    except (TypeError, ValueError):
        raise ValueError(
            f"Invalid reference_slopes: {reference_slopes!r}; expected numbers"
        ) from None
    if floor is not None and not (np.isfinite(floor) and floor > 0):
        raise ValueError(f"Invalid floor: {floor!r}; must be positive and finite")
    lr = np.asarray(err[x].values, dtype=np.float64)
    if not (np.isfinite(lr).all() and (lr > 0).all()):
        raise ValueError(f"Invalid x: the {x!r} values must be positive for a log-log plot")
    models = [str(m) for m in err["model"].values] if "model" in err.dims else [None]
    ax = _new_axes(ax)
    anchors, floors = [], []
    i_max, i_min = int(np.argmax(lr)), int(np.argmin(lr))
    for i, model in enumerate(models):
        sub = err if model is None else err.sel(model=model)
        e = _finite(sub["error"].transpose(x).values)
        se = _finite(sub["se"].transpose(x).values)
        if np.isfinite(e[i_max]) and e[i_max] > 0:
            anchors.append(e[i_max])
        if np.isfinite(se[i_min]) and se[i_min] > 0:
            floors.append(se[i_min])
        ok = np.isfinite(e) & (e > 0)
        if not ok.any():
            continue
        bar = np.where(np.isfinite(se[ok]), 2 * se[ok], 0.0)
        # A bar reaching below 0 is clipped at the bottom of the log axis: error not resolved.
        style = _style(model or "", i)
        ax.errorbar(
            lr[ok],
            e[ok],
            yerr=bar,
            marker="o",
            markersize=4,
            capsize=3,
            label=model or err["error"].attrs.get("long_name", "weak error"),
            **style,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    if anchors and slopes:
        grid = np.geomspace(lr.min(), lr.max(), 50)
        anchor = max(anchors)
        grays = np.linspace(0.35, 0.65, len(slopes))
        for p, gray in zip(slopes, grays):
            ax.plot(
                grid,
                anchor * (grid / lr[i_max]) ** p,
                linestyle=":",
                linewidth=1.4,
                color=str(gray),
                label=f"slope {p:g}",
            )
    level = floor if floor is not None else (max(floors) if floors else None)
    if level is not None:
        ax.axhline(
            level, color="tab:red", linestyle="-.", linewidth=1.0, alpha=0.7, label="MC floor"
        )
    if lr.size <= 8:  # label the step sizes themselves: minor log ticks crowd a short range
        from matplotlib.ticker import NullFormatter

        ax.set_xticks(np.unique(lr), [f"{v:g}" for v in np.unique(lr)])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("learning rate η" if x == "lr" else x)
    observable = err.attrs.get("observable")
    ax.set_ylabel(
        "weak error |E g(x_k) − E g(X_t)|" + (f",  g = {observable}" if observable else "")
    )
    ax.set_title("Weak error vs step size (bars: ±2 se)")
    handles, labels = ax.get_legend_handles_labels()
    guides = [j for j, text in enumerate(labels) if text == "MC floor" or text.startswith("slope ")]
    order = [j for j in range(len(labels)) if j not in guides] + guides  # data first, guides after
    if order:
        ax.legend(
            [handles[j] for j in order],
            [labels[j] for j in order],
            fontsize="small",
            framealpha=0.85,
        )
    return ax


# --------------------------------------------------------------------------------------------
# 3. marginals


def plot_marginals(
    ds,
    *,
    var: str = "x",
    step: int = -1,
    coord: int = 0,
    kind: str = "hist",
    ax=None,
    bins: int = 60,
):
    r"""The law of ``var`` across runs at one recorded step, per model.

    Args:
        ds: Dataset of the schema of docs/schema.md.
        var: "x" (then ``coord`` picks the coordinate) or a per-run observable such as "loss".
        step: position along the step dim (-1 = the last recorded step).
        coord: the coordinate of x shown when ``var == "x"``.
        kind: "hist" for overlaid density histograms on common bins, "ccdf" for the empirical
            :math:`P(|V| \ge v)` on log-log axes (tails).
        bins: number of histogram bins.
        ax: Axes to draw into; a new figure when None.

    Returns:
        The Axes: one step histogram (patch) or one ccdf line per model.
    """
    _check_var(ds, var, ("model", "step", "run"))
    if kind not in KINDS:
        raise ValueError(f"Invalid kind: {kind!r}; choose one of {list(KINDS)}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"Invalid bins: {bins!r}; must be a positive integer")
    n_steps = ds.sizes["step"]
    if (
        isinstance(step, bool)
        or not isinstance(step, (int, np.integer))
        or not -n_steps <= step < n_steps
    ):
        raise ValueError(f"Invalid step: {step!r}; must be an index in [-{n_steps}, {n_steps})")
    da = ds[var].isel(step=step)
    shown_coord = None
    if "coord" in da.dims:
        n_coord = da.sizes["coord"]
        if (
            isinstance(coord, bool)
            or not isinstance(coord, (int, np.integer))
            or not -n_coord <= coord < n_coord
        ):
            raise ValueError(
                f"Invalid coord: {coord!r}; must be an index in [-{n_coord}, {n_coord})"
            )
        da = da.isel(coord=coord)
        shown_coord = int(ds["coord"].values[coord]) if "coord" in ds.coords else coord
    _check_dims(da, "var", {"model", "run"})
    ax = _new_axes(ax)
    models = _models(ds)
    samples = {}
    for model in models:
        kept = _kept_runs(ds, model)
        v = np.asarray(da.sel(model=model).transpose("run").values, dtype=np.float64)[kept]
        samples[model] = (kept, v[np.isfinite(v)])
    name = _var_label(ds, var, shown_coord)
    short = f"{var}[{shown_coord}]" if shown_coord is not None else var
    if kind == "hist":
        pooled = np.concatenate([v for _, v in samples.values()])
        edges = np.histogram_bin_edges(pooled, bins=bins) if pooled.size else None
        for i, model in enumerate(models):
            kept, v = samples[model]
            style = _style(model, i)
            if v.size and edges is not None:
                density, _ = np.histogram(v, bins=edges, density=True)
                ax.stairs(density, edges, label=_label(model, kept), **style)
            else:
                ax.plot([], [], label=_label(model, kept), **style)
        ax.set_xlabel(name)
        ax.set_ylabel("probability density")
    else:
        for i, model in enumerate(models):
            kept, v = samples[model]
            a = np.sort(np.abs(v))
            p = (a.size - np.arange(a.size)) / max(a.size, 1)  # P(|V| >= a_i), from 1 down to 1/n
            pos = a > 0
            ax.plot(a[pos], p[pos], label=_label(model, kept), **_style(model, i))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"v  (threshold on |{short}|)")
        ax.set_ylabel(f"P(|{short}| ≥ v)  over runs")
    k = ds["step"].values[step]
    when = f"step k = {int(k)}"
    if "time" in ds.coords and "model" not in ds["time"].dims:
        when += f", t = {float(ds['time'].values[step]):.3g}"
    ax.set_title(f"Law of {short} at {when}" + ("  (tails)" if kind == "ccdf" else ""))
    _legend(ax)
    return ax


# --------------------------------------------------------------------------------------------
# 4. divergence


def plot_divergence(ds, *, x: str = "time", ax=None):
    """Fraction of runs diverged by each recorded step (blowup_step != -1 and <= k), per model.

    Args:
        ds: Dataset with ``blowup_step(model, run)`` (-1 = never) and the step coordinate.
        x: "time", "step" or "lr_sum", as in ``plot_trajectories``.
        ax: Axes to draw into; a new figure when None.

    Returns:
        The Axes: one step-wise line per model, y in [0, 1].
    """
    if "blowup_step" not in ds.data_vars:
        raise ValueError(
            "Invalid ds: no 'blowup_step' variable (expected the schema of docs/schema.md)"
        )
    _check_dims(ds["blowup_step"], "ds", {"model", "run"})
    _check_x(ds, x)
    ax = _new_axes(ax)
    k = np.asarray(ds["step"].values, dtype=np.int64)  # (S,)
    top = 0.0
    for i, model in enumerate(_models(ds)):
        blowup = np.asarray(
            ds["blowup_step"].sel(model=model).transpose("run").values, dtype=np.int64
        )
        hit = (blowup[None, :] != -1) & (blowup[None, :] <= k[:, None])  # (S, B)
        fraction = hit.mean(axis=1) if blowup.size else np.zeros(k.shape)
        top = max(top, float(fraction.max(initial=0.0)))
        label = f"{model} ({100 * fraction[-1]:.3g}% by the end)" if k.size else model
        ax.plot(
            _x_values(ds, x, model),
            fraction,
            drawstyle="steps-post",
            label=label,
            **_style(model, i),
        )
    from matplotlib.ticker import PercentFormatter

    # Zoom on small fractions (the usual case) but never past 100%.
    ax.set_ylim(0.0, min(1.0, max(0.05, 1.2 * top)))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel("fraction of runs diverged")
    ax.set_title("Divergence: runs blown up by each step")
    _legend(ax)
    return ax


# --------------------------------------------------------------------------------------------
# 5. (L0, L1)-smoothness


def plot_smoothness(profile, *, log: bool = False, ax=None):
    r"""Hessian norm against gradient norm at every point of a smoothness profile, with the fitted
    envelope :math:`L_0 + L_1 \|\nabla f\|` and the constant :math:`L = \max \|\nabla^2 f\|`.

    Args:
        profile: Dataset from ``smoothness.smoothness_profile``: ``grad_norm`` and
            ``hessian_norm`` over ``point``, the 0-d ``L0``, ``L1``, ``L``; points are coloured
            by their ``model`` coordinate when it has one (discrete black, SDE models in their
            colours), and points whose power iteration did not converge (``converged`` False)
            are drawn as hollow red circles.
        log: log-log axes (points with a zero norm are then not drawn).
        ax: Axes to draw into; a new figure when None.

    Returns:
        The Axes: one scatter per model (or one), the envelope line, and L as a dotted
        horizontal line.
    """
    needed = ("grad_norm", "hessian_norm", "L0", "L1", "L")
    if not hasattr(profile, "data_vars") or any(v not in profile.data_vars for v in needed):
        raise ValueError(
            f"Invalid profile: expected a Dataset from smoothness_profile with {list(needed)}"
        )
    if not isinstance(log, bool):
        raise ValueError(f"Invalid log: {log!r} (must be True or False)")
    g = np.asarray(profile["grad_norm"].values, dtype=np.float64)  # (n,)
    h = np.asarray(profile["hessian_norm"].values, dtype=np.float64)  # (n,)
    l0, l1, big_l = (float(profile[v]) for v in ("L0", "L1", "L"))
    converged = (
        np.asarray(profile["converged"].values, dtype=bool)
        if "converged" in profile.data_vars
        else np.ones(g.shape, dtype=bool)
    )
    ax = _new_axes(ax)
    if "model" in profile.coords and profile["model"].dims == ("point",):
        models = np.asarray(profile["model"].values).astype(str)  # (n,)
        names = list(dict.fromkeys(models.tolist()))
    else:
        models, names = np.full(g.shape, ""), [""]
    for i, model in enumerate(names):
        mine = (models == model) & converged
        color = _style(model, i)["color"] if model else "C0"
        ax.scatter(g[mine], h[mine], s=10, alpha=0.6, color=color, label=model or "points")
    if not converged.all():
        ax.scatter(
            g[~converged],
            h[~converged],
            s=28,
            facecolors="none",
            edgecolors="red",
            label=f"not converged ({int((~converged).sum())})",
        )
    top = float(g.max()) if g.size else 1.0
    positive = g[g > 0]
    if log and positive.size:
        grid = np.geomspace(float(positive.min()), top, 200)
    else:
        grid = np.linspace(0.0, top, 200)
    ax.plot(
        grid,
        l0 + l1 * grid,
        color="black",
        linewidth=1.6,
        label=f"envelope L0 + L1‖∇f‖: L0 = {l0:.3g}, L1 = {l1:.3g}",
    )
    ax.axhline(
        big_l, color="0.4", linestyle=":", linewidth=1.4, label=f"L = max ‖∇²f‖ = {big_l:.3g}"
    )
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("gradient norm ‖∇f(x)‖₂")
    ax.set_ylabel("Hessian norm ‖∇²f(x)‖₂")
    ax.set_title("(L0, L1)-smoothness: ‖∇²f‖ ≤ L0 + L1 ‖∇f‖")
    _legend(ax)
    return ax
