"""Distances between the discrete and SDE laws, with honest Monte Carlo error bars."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from sdeopt._jsonable import qualified_name

# --- weak error ------------------------------------------------------------------------------


def observable_values(ds, observable):
    r"""(model, step, run) values of an observable: a variable name, "x2" (:math:`\|x\|^2`), or a
    callable on x."""
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
        raise ValueError(
            f"Invalid observable: {observable!r} (recorded: {', '.join(names)}; or 'x2', "
            "or a callable on x)"
        )
    return ds[observable]


def alive(ds):
    """(model, step, run) mask of the runs alive at each recorded step.

    A run frozen at step b (``blowup_step`` = b, the first step whose iterate was bad) is alive at
    the steps before b; -1 means it never blew up. Datasets without ``blowup_step`` fall back to
    ``~diverged`` at every step.
    """
    if "blowup_step" not in ds:
        return (~ds["diverged"]).broadcast_like(ds["step"])
    blowup = ds["blowup_step"]  # (model, run)
    return (blowup < 0) | (ds["step"] < blowup)


def weak_error(
    ds,
    observable: str | Callable = "loss",
    *,
    reference: str = "discrete",
    paired: bool | None = None,
):
    r""":math:`|\mathbb{E}\, g(x_k) - \mathbb{E}\, g(X_{k \cdot \mathrm{lr}})|` for every model
    against ``reference``, with its standard error.

    At each step, the runs alive at that step are used: a run that blows up at step b (its
    ``blowup_step``) counts at the steps before b and is left out from b on (in either model,
    when paired), never earlier: leaving out every run that *eventually* diverges would condition
    the early steps on the future. ``n_used`` says how many runs entered each value; where none
    is left it is 0 and ``error``, ``signed`` and ``se`` are NaN.

    Args:
        ds: a Dataset from ``compare`` (or any with the schema of docs/schema.md).
        observable: a (model, step, run) variable ("loss", "grad_norm", "dist"), "x2", or a
            callable mapping x (..., d) to values (...).
        reference: the model the others are measured against.
        paired: runs are coupled (same noise), so the se is that of the mean difference; by
            default read from ``ds.attrs["coupled"]``.

    Returns:
        ``xarray.Dataset`` with ``error``, ``signed``
        (:math:`\mathbb{E}_\mathrm{model} - \mathbb{E}_\mathrm{reference}`), ``se`` and
        ``n_used`` over (model, step), the reference model excluded.
    """
    import xarray as xr

    if reference not in ds["model"].values:
        raise ValueError(f"Invalid reference: {reference!r} (models: {list(ds['model'].values)})")
    values = observable_values(ds, observable)  # (model, step, run)
    if paired is None:
        paired = bool(ds.attrs.get("coupled", 0))
    ok = alive(ds)  # (model, step, run)
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
            n_used = keep.sum("run")
            se = diff.std("run", ddof=1) / np.sqrt(n_used)
        else:
            a, b = v.where(v_ok), ref_values.where(ref_ok)
            signed = a.mean("run") - b.mean("run")
            se = np.sqrt(
                a.var("run", ddof=1) / v_ok.sum("run") + b.var("run", ddof=1) / ref_ok.sum("run")
            )
            n_used = np.minimum(v_ok.sum("run"), ref_ok.sum("run"))
        out.append(
            xr.Dataset(
                {"error": abs(signed), "signed": signed, "se": se, "n_used": n_used}
            ).expand_dims(model=[model])
        )
    if not out:
        raise ValueError("Invalid ds: it holds no model besides the reference")
    result = xr.concat(out, dim="model")
    result.attrs = {
        "observable": observable if isinstance(observable, str) else qualified_name(observable),
        "reference": reference,
        "paired": int(paired),
    }
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
    """Fit the convergence order over >= 4 step sizes.

    Warns (``RuntimeWarning``) and marks the fit unreliable when the standard error at the
    smallest step size exceeds error / ``mc_ratio``: the slope would then measure Monte Carlo
    noise, not the bias.
    """
    lrs, errors = np.asarray(lrs, dtype=float), np.asarray(errors, dtype=float)
    if lrs.shape != errors.shape or lrs.ndim != 1 or len(lrs) < 4:
        raise ValueError(
            f"Invalid lrs: {len(lrs)} step sizes (an order fit needs >= 4, one error each)"
        )
    if len(set(lrs.tolist())) != len(lrs):
        raise ValueError(f"Invalid lrs: {lrs.tolist()!r} (the step sizes must be distinct)")
    if np.any(lrs <= 0) or np.any(~np.isfinite(errors)) or np.any(errors <= 0):
        raise ValueError(
            f"Invalid errors: {errors.tolist()!r} (must be finite and > 0, with lrs > 0)"
        )
    x, y = np.log(lrs), np.log(errors)
    fit = stats.linregress(x, y)
    t = stats.t.ppf(0.5 + level / 2, len(lrs) - 2)
    reliable = True
    if ses is not None:
        ses = np.asarray(ses, dtype=float)
        finest = np.argmin(lrs)
        if ses[finest] * mc_ratio > errors[finest]:
            reliable = False
            warnings.warn(
                f"order_fit: the Monte Carlo error at the smallest lr ({ses[finest]:.3g}) is not "
                f"well below the bias ({errors[finest]:.3g}); the slope is not trustworthy",
                RuntimeWarning,
                stacklevel=2,
            )
    return OrderFit(
        slope=float(fit.slope),
        intercept=float(fit.intercept),
        ci_low=float(fit.slope - t * fit.stderr),
        ci_high=float(fit.slope + t * fit.stderr),
        level=level,
        reliable=reliable,
    )


# --- Wasserstein-2 ----------------------------------------------------------------------------

# The distance each method estimates: the sliced distance and the W2 between Gaussian fits are
# other quantities than W2, and a result names which one it holds.
W2_DISTANCES = {"sorted": "w2", "exact": "w2", "gaussian": "gaussian_w2", "sliced": "sliced_w2"}


@dataclass(frozen=True)
class W2:
    r"""A Wasserstein-2 estimate with its Monte Carlo floor.

    Attributes:
        value: the estimate of ``distance`` between the two samples' laws.
        floor: the same estimator between the two halves of the first sample (of the rows the
            value used), a same-law reference at half the sample size: estimates shrink with
            n, so this bounds the floor.
        method: "sorted" (exact 1-D), "gaussian" (Bures from the sample moments), "exact"
            (optimal assignment), "sliced".
        distance: the quantity estimated: "w2" (sorted, exact), "sliced_w2" (the sliced
            distance
            :math:`\mathrm{SW}_2^2 = \mathbb{E}_\theta W_2^2(\theta \cdot P, \theta \cdot Q)`,
            :math:`\theta` uniform on the sphere: :math:`\mathrm{SW}_2 \le W_2 / \sqrt{d}`, with
            equality for a translation), "gaussian_w2" (:math:`W_2` between the Gaussians with
            the samples' means and covariances: :math:`W_2` for Gaussian laws, a lower bound
            otherwise).
        n_used: rows of a and of b that entered ``value`` (finite rows, after any subsampling).
        subsampled: True when ``value`` used a random subsample of a or b (see ``wasserstein2``).
    """

    value: float
    floor: float
    method: str
    distance: str = ""
    n_used: tuple[int, int] = (0, 0)
    subsampled: bool = False

    def __post_init__(self):
        if not self.distance:
            object.__setattr__(self, "distance", W2_DISTANCES.get(self.method, ""))

    def __float__(self) -> float:
        return self.value


def bures_w2(m1, c1, m2, c2) -> float:
    r""":math:`W_2` between :math:`\mathcal{N}(m_1, C_1)` and :math:`\mathcal{N}(m_2, C_2)`, the
    square root of
    :math:`W_2^2 = |m_1 - m_2|^2 + \operatorname{tr}(C_1 + C_2 - 2 (C_1^{1/2} C_2 C_1^{1/2})^{1/2})`."""
    m1, m2 = np.atleast_1d(np.asarray(m1, float)), np.atleast_1d(np.asarray(m2, float))
    c1, c2 = np.atleast_2d(np.asarray(c1, float)), np.atleast_2d(np.asarray(c2, float))
    r1 = _sqrtm_psd(c1)
    cross = _sqrtm_psd(r1 @ c2 @ r1)
    value = float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * cross))
    return math.sqrt(max(value, 0.0))


def _sqrtm_psd(c):
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _w2_sorted(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """Exact 1-D W2² between empirical laws, column by column: pa (n, k), pb (m, k), both sorted.

    W2² = ∫_0^1 (F_a⁻¹(u) - F_b⁻¹(u))² du with step quantile functions: F_a⁻¹ jumps at the
    multiples of 1/n, F_b⁻¹ at those of 1/m, so the integral is a finite sum over the merged
    breakpoints, kept exact in integers (units of 1/(n m)).
    """
    n, m = len(pa), len(pb)
    if n == m:
        return np.mean((pa - pb) ** 2, axis=0)
    breaks = np.union1d(np.arange(n + 1, dtype=np.int64) * m, np.arange(m + 1, dtype=np.int64) * n)
    lo, width = breaks[:-1], np.diff(breaks)  # (K,) intervals [lo, lo + width) of the merged grid
    diff = pa[lo // m] - pb[lo // n]  # (K, k)
    return (width / (n * m)) @ diff**2


def _w2_once(
    a: np.ndarray, b: np.ndarray, method: str, n_projections: int, rng: np.random.Generator
) -> float:
    if method == "sorted":
        return math.sqrt(float(_w2_sorted(np.sort(a, axis=0), np.sort(b, axis=0))[0]))
    if method == "gaussian":
        ca = np.atleast_2d(np.cov(a.T))
        cb = np.atleast_2d(np.cov(b.T))
        return bures_w2(a.mean(0), ca, b.mean(0), cb)
    if method == "exact":
        from scipy.optimize import linear_sum_assignment
        from scipy.spatial.distance import cdist

        cost = cdist(
            a, b, "sqeuclidean"
        )  # (n, n): equal sizes, so the assignment is a transport plan
        rows, cols = linear_sum_assignment(cost)
        return math.sqrt(cost[rows, cols].mean())
    # sliced: average of exact 1-D W2² over random directions θ (n_projections of them)
    dirs = rng.standard_normal((a.shape[1], n_projections))  # (d, P)
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    return math.sqrt(
        float(np.mean(_w2_sorted(np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0))))
    )


W2_METHODS = ("auto", "sorted", "gaussian", "exact", "sliced")


def wasserstein2(
    a, b, *, method: str = "auto", n_projections: int = 200, seed: int = 0, exact_max: int = 2000
) -> W2:
    r""":math:`W_2` between the empirical laws of samples a (n, d) and b (m, d) (or 1-D arrays).

    Methods, and the distance each estimates (``W2.distance``):

    - ``"sorted"``: exact :math:`W_2` between the empirical laws in 1-D (quantile functions,
      any n, m); refuses :math:`d > 1`.
    - ``"exact"``: :math:`W_2` between the empirical laws by optimal assignment (cost
      :math:`\sim n^3`: about 1 s at :math:`n = 2000` on one core, :math:`\sim n^{3.3}`
      beyond). An assignment is a transport plan only between samples of equal size, so when
      :math:`n \neq m` the larger sample is first subsampled, without replacement, to the
      smaller's size.
    - ``"sliced"``: the sliced distance :math:`\mathrm{SW}_2` (``distance="sliced_w2"``),
      averaged over ``n_projections`` random directions. It is a *different, smaller* distance
      than :math:`W_2` (:math:`\mathrm{SW}_2 \le W_2 / \sqrt{d}`, the projections of a
      :math:`W_2`-optimal coupling being couplings): for :math:`\mathcal{N}(0, I_d)` against
      :math:`\mathcal{N}(e_1, I_d)`, :math:`W_2 = 1` but :math:`\mathrm{SW}_2 = 1/\sqrt{d}`.
    - ``"gaussian"``: :math:`W_2` between Gaussian fits (Bures formula,
      ``distance="gaussian_w2"``).
    - ``"auto"`` (default) always estimates :math:`W_2` itself: "sorted" in 1-D; "exact" in
      :math:`d > 1`, on a random subsample (without replacement, drawn from ``seed``) of
      ``min(n, m, exact_max)`` rows of each sample when n or m exceeds ``exact_max``; when
      :math:`n = m`, row i of a and row i of b are kept or dropped together, so coupled samples
      stay coupled. ``W2.subsampled`` and ``W2.n_used`` say when that happened. Little is lost:
      the bias below shrinks like :math:`n^{-1/d}`, and the floor is that of the subsample
      size. To use every row, pass ``method="exact"`` (cost :math:`\sim n^3`) or a larger
      ``exact_max``. "auto" never switches to the sliced distance: pass ``method="sliced"`` for
      that.

    In :math:`d > 1` every empirical :math:`W_2` is biased upwards, by a margin that shrinks
    only like :math:`n^{-1/d}`: :math:`\mathcal{N}(0, I_{10})` against
    :math:`\mathcal{N}(e_1, I_{10})` (true :math:`W_2 = 1`) gives ~2.2 at :math:`n = 2000`, with
    a same-law floor ~2.1. Hence the ``floor`` reported with every value: the same estimator
    (same method, same subsample size) between two random halves of the rows of a that the
    value used; a value is only informative next to it.

    Args:
        a: samples (n, d) or (n,), numpy or torch.
        b: samples (m, d) or (m,).
        method: one of ``W2_METHODS``.
        n_projections: directions of the sliced estimator.
        seed: seeds the one ``numpy.random.Generator`` behind every random choice (directions,
            subsamples, the floor's halves); no global state is read or changed.
        exact_max: the largest sample size ``"auto"`` hands to exact assignment in d > 1.

    Returns:
        ``W2`` with ``value``, ``floor``, ``method``, ``distance``, ``n_used``, ``subsampled``.

    Rows with a non-finite value are dropped. Runs that diverged in ``simulate``/``solve`` are
    frozen at finite values and are *not* dropped here: leave them out first (e.g.
    ``x.where(~ds.diverged, drop=True)``), or count them with ``divergence``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a = rng.standard_normal((500, 3))
        >>> w = wasserstein2(a, a + [1.0, 0.0, 0.0])  # a translate: W2 = 1 exactly
        >>> round(w.value, 6), w.distance
        (1.0, 'w2')
    """
    if method not in W2_METHODS:
        raise ValueError(f"Invalid method: {method!r} (choose from {', '.join(W2_METHODS)})")
    if isinstance(exact_max, bool) or not isinstance(exact_max, (int, np.integer)) or exact_max < 4:
        raise ValueError(f"Invalid exact_max: {exact_max!r} (must be an integer >= 4)")
    a, b = (_as_samples(name, s) for name, s in (("a", a), ("b", b)))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Invalid b: dimension {b.shape[1]} differs from a's {a.shape[1]}")
    if method == "sorted" and a.shape[1] > 1:
        raise ValueError(
            f"Invalid method: 'sorted' is for 1-D samples; these have d = {a.shape[1]} "
            "(use 'exact', 'sliced' or 'gaussian')"
        )
    rng = np.random.default_rng(seed)
    size = None
    if method == "auto":
        method = "sorted" if a.shape[1] == 1 else "exact"
        if method == "exact":
            size = min(len(a), len(b), int(exact_max))
    elif method == "exact":
        size = min(len(a), len(b))
    subsampled = size is not None and (len(a) > size or len(b) > size)
    if subsampled:
        assert size is not None  # subsampled implies it
        if len(a) == len(b):
            keep = np.sort(rng.choice(len(a), size, replace=False))
            a, b = a[keep], b[keep]
        else:
            a = a[np.sort(rng.choice(len(a), size, replace=False))] if len(a) > size else a
            b = b[np.sort(rng.choice(len(b), size, replace=False))] if len(b) > size else b
    value = _w2_once(a, b, method, n_projections, rng)
    perm = rng.permutation(len(a))
    half = len(a) // 2
    floor = _w2_once(a[perm[:half]], a[perm[half : 2 * half]], method, n_projections, rng)
    return W2(
        value=value,
        floor=floor,
        method=method,
        n_used=(len(a), len(b)),
        subsampled=bool(subsampled),
    )


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
    return xr.Dataset(
        {
            "fraction": div.mean("run"),
            "count": div.sum("run"),
            "median_blowup_step": median_step,
            "fraction_by_step": by_step,
        }
    )


@dataclass(frozen=True)
class TailIndex:
    r"""Hill estimate of the tail index :math:`\alpha` (:math:`P(|X| > t) \sim t^{-\alpha}`) with
    its standard error."""

    alpha: float
    se: float
    k: int


def hill_tail_index(samples, *, k: int | None = None) -> TailIndex:
    r"""Hill's estimator from the k largest :math:`|x|`:
    :math:`\alpha = k / \sum_{i<k} \log(|x|_{(i)} / |x|_{(k)})`.

    ``k`` defaults to :math:`\sim \sqrt{n}` (a common bias/variance compromise);
    :math:`\mathrm{se} = \alpha / \sqrt{k}`.
    Non-finite values are dropped.
    """
    x = np.abs(
        np.asarray(
            samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, dtype=float
        ).ravel()
    )
    x = x[np.isfinite(x) & (x > 0)]
    n = len(x)
    if n < 10:
        raise ValueError(
            f"Invalid samples: {n} finite non-zero values (the Hill estimator needs >= 10)"
        )
    k = round(math.sqrt(n)) if k is None else int(k)
    if not 2 <= k < n:
        raise ValueError(f"Invalid k: {k!r} (must satisfy 2 <= k < n = {n})")
    top = np.sort(x)[::-1][: k + 1]
    alpha = k / np.sum(np.log(top[:k] / top[k]))
    return TailIndex(alpha=float(alpha), se=float(alpha / math.sqrt(k)), k=k)
