"""Distances between the discrete and SDE laws, with honest Monte Carlo error bars (MATH.md §8)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import stats


# --- weak error ------------------------------------------------------------------------------

def _observable(ds, observable):
    """(model, step, run) values of an observable: a variable name, "x2" (||x||²), or a callable on x."""
    if callable(observable):
        if "x" not in ds:
            raise ValueError("Invalid observable: a callable needs recorded states (record_x=True)")
        x = ds["x"]
        values = observable(torch.as_tensor(x.values))
        return x.isel(coord=0, drop=True).copy(data=np.asarray(values))
    if observable == "x2":
        if "x" not in ds:
            raise ValueError("Invalid observable: 'x2' needs recorded states (record_x=True)")
        return (ds["x"] ** 2).sum("coord")
    if observable not in ds or ds[observable].dims != ("model", "step", "run"):
        names = [v for v in ds.data_vars if ds[v].dims == ("model", "step", "run")]
        raise ValueError(f"Invalid observable: {observable!r} (recorded: {', '.join(names)}; or 'x2', "
                         "or a callable on x)")
    return ds[observable]


def weak_error(ds, observable: str | Callable = "loss", *, reference: str = "discrete", paired: bool | None = None):
    """|E g(x_k) - E g(X_{k lr})| for every model against ``reference``, with its standard error.

    Runs that diverged (in either model, when paired) are left out, and counted.

    Args:
        ds: a Dataset from ``compare`` (or any with the DESIGN.md §3 schema).
        observable: a (model, step, run) variable ("loss", "grad_norm", "dist"), "x2", or a
            callable mapping x (..., d) to values (...).
        reference: the model the others are measured against.
        paired: runs are coupled (same noise), so the se is that of the mean difference; by
            default read from ``ds.attrs["coupled"]``.

    Returns:
        ``xarray.Dataset`` with ``error``, ``signed`` (E_model - E_reference), ``se`` and
        ``n_used`` over (model, step), the reference model excluded.
    """
    import xarray as xr

    if reference not in ds["model"].values:
        raise ValueError(f"Invalid reference: {reference!r} (models: {list(ds['model'].values)})")
    values = _observable(ds, observable)  # (model, step, run)
    if paired is None:
        paired = bool(ds.attrs.get("coupled", 0))
    ok = ~ds["diverged"]  # (model, run)
    ref_values, ref_ok = values.sel(model=reference), ok.sel(model=reference)
    out = []
    for model in ds["model"].values:
        if model == reference:
            continue
        v, v_ok = values.sel(model=model), ok.sel(model=model)
        if paired:
            keep = v_ok & ref_ok
            diff = (v - ref_values).where(keep)
            signed = diff.mean("run")
            se = diff.std("run", ddof=1) / np.sqrt(keep.sum())
            n_used = keep.sum() + 0 * signed
        else:
            a, b = v.where(v_ok), ref_values.where(ref_ok)
            signed = a.mean("run") - b.mean("run")
            se = np.sqrt(a.var("run", ddof=1) / v_ok.sum() + b.var("run", ddof=1) / ref_ok.sum())
            n_used = np.minimum(v_ok.sum(), ref_ok.sum()) + 0 * signed
        out.append(xr.Dataset({"error": abs(signed), "signed": signed, "se": se, "n_used": n_used})
                   .expand_dims(model=[model]))
    if not out:
        raise ValueError("Invalid ds: it holds no model besides the reference")
    result = xr.concat(out, dim="model")
    result.attrs = {"observable": observable if isinstance(observable, str) else "callable",
                    "reference": reference, "paired": int(paired)}
    return result


# --- order fits ------------------------------------------------------------------------------

@dataclass(frozen=True)
class OrderFit:
    """Slope of log error against log step size, with a confidence interval.

    Attributes:
        slope, intercept: the least-squares line log err = intercept + slope log lr.
        ci_low, ci_high: the ``level`` confidence interval of the slope (Student t).
        reliable: False when the Monte Carlo error at the finest step is not well below the bias.
    """

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    level: float
    reliable: bool


def order_fit(lrs, errors, ses=None, *, level: float = 0.95, mc_ratio: float = 3.0) -> OrderFit:
    """Fit the convergence order over >= 4 step sizes (MATH.md §8).

    Warns (``RuntimeWarning``) and marks the fit unreliable when the standard error at the
    smallest step size exceeds error / ``mc_ratio``: the slope would then measure Monte Carlo
    noise, not the bias.
    """
    lrs, errors = np.asarray(lrs, dtype=float), np.asarray(errors, dtype=float)
    if lrs.shape != errors.shape or lrs.ndim != 1 or len(lrs) < 4:
        raise ValueError(f"Invalid lrs: {len(lrs)} step sizes (an order fit needs >= 4, one error each)")
    if np.any(lrs <= 0) or np.any(~np.isfinite(errors)) or np.any(errors <= 0):
        raise ValueError(f"Invalid errors: {errors.tolist()!r} (must be finite and > 0, with lrs > 0)")
    x, y = np.log(lrs), np.log(errors)
    fit = stats.linregress(x, y)
    t = stats.t.ppf(0.5 + level / 2, len(lrs) - 2)
    reliable = True
    if ses is not None:
        ses = np.asarray(ses, dtype=float)
        finest = np.argmin(lrs)
        if ses[finest] * mc_ratio > errors[finest]:
            reliable = False
            warnings.warn(f"order_fit: the Monte Carlo error at the smallest lr ({ses[finest]:.3g}) is not "
                          f"well below the bias ({errors[finest]:.3g}); the slope is not trustworthy",
                          RuntimeWarning, stacklevel=2)
    return OrderFit(slope=float(fit.slope), intercept=float(fit.intercept),
                    ci_low=float(fit.slope - t * fit.stderr), ci_high=float(fit.slope + t * fit.stderr),
                    level=level, reliable=reliable)


# --- Wasserstein-2 ----------------------------------------------------------------------------

@dataclass(frozen=True)
class W2:
    """A Wasserstein-2 estimate with its Monte Carlo floor.

    Attributes:
        value: W2 between the two samples' laws (by ``method``).
        floor: the same estimator between the two halves of the first sample, a same-law
            reference (at half the sample size: estimates shrink with n, so this bounds the floor).
        method: "sorted" (exact 1-D), "gaussian" (Bures from the sample moments), "exact"
            (optimal assignment), "sliced".
    """

    value: float
    floor: float
    method: str

    def __float__(self) -> float:
        return self.value


def bures_w2(m1, c1, m2, c2) -> float:
    """W2 between N(m1, C1) and N(m2, C2): |m1 - m2|² + tr(C1 + C2 - 2 (C1^½ C2 C1^½)^½)."""
    m1, m2 = np.atleast_1d(np.asarray(m1, float)), np.atleast_1d(np.asarray(m2, float))
    c1, c2 = np.atleast_2d(np.asarray(c1, float)), np.atleast_2d(np.asarray(c2, float))
    r1 = _sqrtm_psd(c1)
    cross = _sqrtm_psd(r1 @ c2 @ r1)
    value = float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * cross))
    return math.sqrt(max(value, 0.0))


def _sqrtm_psd(c):
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _w2_once(a: np.ndarray, b: np.ndarray, method: str, n_projections: int, rng: np.random.Generator) -> float:
    if method == "sorted":
        n = min(len(a), len(b))
        qa = np.quantile(a[:, 0], (np.arange(n) + 0.5) / n) if len(a) != n else np.sort(a[:, 0])
        qb = np.quantile(b[:, 0], (np.arange(n) + 0.5) / n) if len(b) != n else np.sort(b[:, 0])
        return math.sqrt(np.mean((qa - qb) ** 2))
    if method == "gaussian":
        ca = np.atleast_2d(np.cov(a.T))
        cb = np.atleast_2d(np.cov(b.T))
        return bures_w2(a.mean(0), ca, b.mean(0), cb)
    if method == "exact":
        from scipy.optimize import linear_sum_assignment
        from scipy.spatial.distance import cdist
        cost = cdist(a, b, "sqeuclidean")
        rows, cols = linear_sum_assignment(cost)
        return math.sqrt(cost[rows, cols].mean())
    # sliced: average of 1-D W2² over random directions (a lower bound of W2, exact in 1-D)
    dirs = rng.standard_normal((a.shape[1], n_projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    if len(pa) != len(pb):
        n = min(len(pa), len(pb))
        grid = (np.arange(n) + 0.5) / n
        pa, pb = np.quantile(pa, grid, axis=0), np.quantile(pb, grid, axis=0)
    return math.sqrt(np.mean((pa - pb) ** 2))


W2_METHODS = ("auto", "sorted", "gaussian", "exact", "sliced")


def wasserstein2(a, b, *, method: str = "auto", n_projections: int = 200, seed: int = 0) -> W2:
    """W2 between the empirical laws of samples a (n, d) and b (m, d) (or 1-D arrays).

    ``method="auto"``: "sorted" in 1-D, "exact" assignment for n = m <= 2000, "sliced"
    otherwise. Exact assignment between finite samples is biased upwards in d-D (it measured
    ~2.0 for a true 0.316 at n = 2000, d = 10: DESIGN.md §8), hence the floor reported with
    every value. ``method="sorted"`` is the exact 1-D value and refuses d > 1.

    Rows with a non-finite value are dropped. Runs that diverged in ``simulate``/``solve`` are
    frozen at finite values and are *not* dropped here: leave them out first (e.g.
    ``x.where(~ds.diverged, drop=True)``), or count them with ``divergence``.
    """
    if method not in W2_METHODS:
        raise ValueError(f"Invalid method: {method!r} (choose from {', '.join(W2_METHODS)})")
    a, b = (_as_samples(name, s) for name, s in (("a", a), ("b", b)))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Invalid b: dimension {b.shape[1]} differs from a's {a.shape[1]}")
    if method == "sorted" and a.shape[1] > 1:
        raise ValueError(f"Invalid method: 'sorted' is for 1-D samples; these have d = {a.shape[1]} "
                         "(use 'exact', 'sliced' or 'gaussian')")
    if method == "auto":
        if a.shape[1] == 1:
            method = "sorted"
        elif len(a) == len(b) and len(a) <= 2000:
            method = "exact"
        else:
            method = "sliced"
    rng = np.random.default_rng(seed)
    value = _w2_once(a, b, method, n_projections, rng)
    perm = rng.permutation(len(a))
    half = len(a) // 2
    floor = _w2_once(a[perm[:half]], a[perm[half:2 * half]], method, n_projections, rng)
    return W2(value=value, floor=floor, method=method)


def _as_samples(name, s) -> np.ndarray:
    s = np.asarray(s.detach().cpu() if isinstance(s, torch.Tensor) else s, dtype=float)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or len(s) < 4:
        raise ValueError(f"Invalid {name}: shape {s.shape} (need (n, d) or (n,) with n >= 4)")
    s = s[np.isfinite(s).all(1)]
    if len(s) < 4:
        raise ValueError(f"Invalid {name}: fewer than 4 finite rows")
    return s


# --- divergence and tails ---------------------------------------------------------------------

def divergence(ds):
    """Per model: fraction and count of diverged runs, and the median blow-up step among them.

    Also ``fraction_by_step`` (model, step): the fraction of runs that had blown up by each step.
    """
    import xarray as xr

    div = ds["diverged"]
    blow = ds["blowup_step"]
    by_step = ((blow >= 0) & (blow <= ds["step"])).mean("run")
    median_step = blow.where(div).median("run")
    return xr.Dataset({"fraction": div.mean("run"), "count": div.sum("run"),
                       "median_blowup_step": median_step, "fraction_by_step": by_step})


@dataclass(frozen=True)
class TailIndex:
    """Hill estimate of the tail index alpha (P(|X| > t) ~ t^-alpha) with its standard error."""

    alpha: float
    se: float
    k: int


def hill_tail_index(samples, *, k: int | None = None) -> TailIndex:
    """Hill's estimator from the k largest |x|: alpha = k / Σ_{i<k} log(|x|_(i) / |x|_(k)).

    ``k`` defaults to ~ sqrt(n) (a common bias/variance compromise); se = alpha / sqrt(k).
    Non-finite values are dropped.
    """
    x = np.abs(np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples,
                          dtype=float).ravel())
    x = x[np.isfinite(x) & (x > 0)]
    n = len(x)
    if n < 10:
        raise ValueError(f"Invalid samples: {n} finite non-zero values (the Hill estimator needs >= 10)")
    k = int(round(math.sqrt(n))) if k is None else int(k)
    if not 2 <= k < n:
        raise ValueError(f"Invalid k: {k!r} (must satisfy 2 <= k < n = {n})")
    top = np.sort(x)[::-1][: k + 1]
    alpha = k / np.sum(np.log(top[:k] / top[k]))
    return TailIndex(alpha=float(alpha), se=float(alpha / math.sqrt(k)), k=k)
