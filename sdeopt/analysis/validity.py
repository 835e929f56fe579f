r"""The SVAG validity ladder: is the first-order SDE a model of the method? (docs/validity.md)

``validity_ladder`` runs SVAG(ℓ) of a direction method (``sdeopt.discrete.SVAG``) for ℓ = 1, 2,
4, 8, 16 to the same SDE time. SVAG(1) is the method; as ℓ grows SVAG(ℓ) converges (weakly, at
rate 1/ℓ) to the method's first-order SDE. A statistic that changes along the ladder beyond its
Monte Carlo error shows that the SDE does not model the method at its learning rate, without
solving any SDE (Li, Malladi & Arora, NeurIPS 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats

from sdeopt._jsonable import is_reproducible, jsonable, to_json
from sdeopt._validation import check_device, check_dtype, check_int, check_positive
from sdeopt.analysis.metrics import _quantiles_with_se, alive
from sdeopt.discrete import SVAG, DirectionMethod, simulate
from sdeopt.engine import OBSERVABLES, record_steps
from sdeopt.problems import Problem
from sdeopt.random import DEFAULT_BLOCK_SIZE, check_seed, derived_seed, seed_attr

#: Relative slack when checking that the horizon is a whole number of steps of lr.
_WHOLE = 1e-9


def ladder_seed(seed: int, ell: int) -> int:
    """The seed of SVAG(ℓ) in a ladder: ``seed`` itself at ℓ = 1 (the method's own runs, as
    ``simulate(method, ..., seed=seed)`` draws them), an independent stream per ℓ >= 2.

    The streams of ℓ >= 2 are derived from ``derived_seed(seed, 0)``, a stream ``compare``
    never uses (its SDE model i draws from ``derived_seed(seed, i)``, i >= 1), so that a ladder
    and a comparison of the same seed are independent too.
    """
    if ell == 1:
        return int(seed)
    return derived_seed(derived_seed(seed, 0), ell)


def validity_ladder(
    method: DirectionMethod,
    problem: Problem,
    x0,
    *,
    horizon: float,
    n_runs: int,
    ells: Sequence[int] = (1, 2, 4, 8, 16),
    observables: str | Sequence[str] = ("loss",),
    seed: int = 0,
    record_every: int | None = None,
    quantiles: Sequence[float] = (),
    level: float = 0.95,
    keep_runs: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    blowup_threshold: float = 1e10,
    max_memory: float = 2**30,
    block_size: int = DEFAULT_BLOCK_SIZE,
):
    r"""SVAG(ℓ) of ``method`` for each ℓ in ``ells``, side by side at the same SDE times.

    SVAG(ℓ) runs :math:`\ell\,T/\eta` steps of size :math:`\eta/\ell` to the horizon T. Its
    per-unit-time drift and noise covariance are the method's, its higher cumulants shrink like
    :math:`1/\ell`, so :math:`\mathbb E g(x)` along the ladder moves from the method's value
    (ℓ = 1) to the first-order SDE's at rate :math:`O(1/\ell)` (docs/validity.md). Compare the
    change against the largest ℓ (the closest to the SDE) with its se: a change of many se at
    ℓ = 1 says the first-order SDE does not model the method at this learning rate; a change
    within a few se is consistent with the SDE being a valid model at the resolution of the
    runs, not a proof of it.

    Runs that blow up are frozen by the engine (``blowup_threshold``); each statistic at a
    recorded time uses the runs alive then (``sdeopt.analysis.metrics.alive``), and ``n_alive``
    says how many.

    Args:
        method: a direction method (DSGD, DCSGD, DSignSGD), its ``lr`` :math:`\eta`.
        problem, x0: as in ``sdeopt.discrete.simulate``.
        horizon: T, the SDE time of the end, a whole number of steps of ``method.lr`` (K =
            T / lr of the method's steps; SVAG(ℓ) takes ℓK).
        n_runs: independent runs per ℓ.
        ells: the rungs, distinct integers >= 1, at least two (run in increasing order).
        observables: names of per-run observables ("loss", "grad_norm", "dist"), or one name.
        seed: ℓ = 1 draws from ``seed`` (its runs are ``simulate(method, ..., seed=seed)``'s,
            bitwise); every ℓ >= 2 from an independent stream, ``ladder_seed(seed, ℓ)``: rungs
            are independent, so the se² of a difference add.
        record_every: record every this many of the method's steps (SVAG(ℓ) every ℓ times as
            many of its own), and always at the horizon; None records only 0 and the horizon.
        quantiles: levels in (0, 1) whose empirical quantiles to add, with distribution-free
            se (as ``quantile_error``; for heavy tails, where a mean's se need not shrink).
        level: coverage of the order-statistic interval behind the quantiles' se.
        keep_runs: also return every run's values (NaN where a run is no longer alive).
        device, dtype, blowup_threshold, max_memory, block_size: as in ``simulate``.

    Returns:
        ``xarray.Dataset`` with coordinates ``ell``, ``observable``, ``time`` (SDE time
        :math:`k\eta`, with the method's step ``step`` k on it)[, ``quantile``, ``run``] and

        - ``mean`` (ell, observable, time): the mean over the runs alive;
        - ``se``: its standard error, sample std (ddof 1) / :math:`\sqrt{n}`;
        - ``change``: ``mean`` minus the mean at the largest ℓ, and ``change_se``
          :math:`= \sqrt{\mathrm{se}^2 + \mathrm{se}_{\ell_\max}^2}` (both 0 at the largest ℓ);
        - ``extrapolated`` (observable, time) and ``extrapolated_se``: the Richardson estimate
          of the ℓ → ∞ (SDE) value from the two largest rungs a < b, assuming an error
          :math:`c/\ell`: :math:`(b\,m_b - a\,m_a)/(b - a)`;
        - ``n_alive`` (ell, time) and ``n_diverged`` (ell): runs used, runs blown up by T;
        - with ``quantiles``: ``quantile_value`` and ``quantile_se``
          (ell, observable, time, quantile);
        - with ``keep_runs``: ``values`` (ell, observable, time, run).

        attrs: ``config`` (JSON), ``reproducible``, ``seed``, ``lr`` (the method's),
        ``horizon``, ``reference_ell``, device, dtype and versions.

    References:
        Li, Malladi & Arora, "On the validity of modeling SGD with stochastic differential
        equations (SDEs)", NeurIPS 2021, arXiv 2102.12470 (SVAG and its convergence, Sec. 4);
        docs/validity.md.

    Example:
        >>> import sdeopt as so
        >>> opt = so.discrete.DSGD(lr=0.1, n_workers=4, noise=so.noise.Gaussian(2.0))
        >>> ds = so.analysis.validity_ladder(opt, so.problems.Quadratic(diag=[1.0, 4.0]),
        ...                                  [0.0, 0.0], horizon=5.0, n_runs=2000)
        >>> ds.ell.values.tolist()
        [1, 2, 4, 8, 16]
        >>> z = (ds["change"] / ds["change_se"]).sel(observable="loss").isel(time=-1)
        >>> bool(z.sel(ell=1) > 2)  # at η λ_max = 0.4 the method's mean loss is off the SDE's
        True
    """
    import xarray as xr

    from sdeopt._version import __version__

    ladder = _check_ells(ells)
    svags = [SVAG(method, ell=ell) for ell in ladder]  # refuses a method that is not a direction
    svags[0].check_problem(problem)
    n_runs = check_int("n_runs", n_runs, minimum=1)
    horizon = check_positive("horizon", horizon)
    n_steps = _whole_steps(horizon, method.lr)
    names = _check_observables(observables, problem)
    every = n_steps if record_every is None else check_int("record_every", record_every, minimum=1)
    qs = _check_quantiles(quantiles)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"Invalid level: {level!r} (must be in (0, 1))")
    if not isinstance(keep_runs, bool):
        raise ValueError(f"Invalid keep_runs: {keep_runs!r} (must be True or False)")
    seed = check_seed("seed", seed)
    steps = np.asarray(record_steps(n_steps, every), dtype=np.int64)  # (S,) the method's steps
    z = float(stats.norm.ppf(0.5 + level / 2))

    n_ell, n_obs, n_rec = len(ladder), len(names), len(steps)
    mean = np.empty((n_ell, n_obs, n_rec))
    se = np.empty((n_ell, n_obs, n_rec))
    quantile_value = np.empty((n_ell, n_obs, n_rec, len(qs)))
    quantile_se = np.empty((n_ell, n_obs, n_rec, len(qs)))
    n_alive = np.empty((n_ell, n_rec), dtype=np.int64)
    n_diverged = np.empty(n_ell, dtype=np.int64)
    values = np.empty((n_ell, n_obs, n_rec, n_runs)) if keep_runs else None
    run_dtype = check_dtype(dtype)
    for i, (ell, svag) in enumerate(zip(ladder, svags, strict=True)):
        traj = simulate(
            svag,
            problem,
            x0,
            n_steps=ell * n_steps,
            n_runs=n_runs,
            seed=ladder_seed(seed, ell),
            device=device,
            dtype=run_dtype,
            record_every=ell * every,
            record=names,
            blowup_threshold=blowup_threshold,
            max_memory=max_memory,
            block_size=block_size,
        )
        ds = traj.to_dataset().isel(model=0)
        ok = alive(ds).transpose("step", "run").values  # (S, B)
        n_alive[i] = ok.sum(axis=1)
        n_diverged[i] = int(ds["diverged"].sum())
        for j, name in enumerate(names):
            v = np.where(ok, ds[name].transpose("step", "run").values, np.nan)  # (S, B)
            mean[i, j], se[i, j] = _mean_se(v)
            if len(qs):
                quantile_value[i, j], quantile_se[i, j], _ = _quantiles_with_se(v, qs, z)
            if values is not None:
                values[i, j] = v

    change = mean - mean[-1]
    change_se = np.sqrt(se**2 + se[-1] ** 2)
    change_se[-1] = 0.0
    a, b = ladder[-2], ladder[-1]
    extrapolated = (b * mean[-1] - a * mean[-2]) / (b - a)
    extrapolated_se = np.sqrt((b * se[-1]) ** 2 + (a * se[-2]) ** 2) / (b - a)

    cell = ("ell", "observable", "time")
    data = {
        "mean": (cell, mean, {"long_name": "mean over the runs alive"}),
        "se": (cell, se, {"long_name": "standard error of the mean"}),
        "change": (cell, change, {"long_name": f"mean minus the mean at ell = {b}"}),
        "change_se": (cell, change_se, {"long_name": "standard error of the change"}),
        "extrapolated": (
            cell[1:],
            extrapolated,
            {"long_name": f"Richardson estimate of the ell -> infinity mean from ell = {a}, {b}"},
        ),
        "extrapolated_se": (cell[1:], extrapolated_se),
        "n_alive": (("ell", "time"), n_alive),
        "n_diverged": (("ell",), n_diverged),
    }
    coords: dict = {
        "ell": np.asarray(ladder, dtype=np.int64),
        "observable": list(names),
        "time": ("time", steps * method.lr, {"units": "optimizer steps x lr"}),
        "step": ("time", steps, {"long_name": "the method's step (SVAG(ell) step / ell)"}),
    }
    if len(qs):
        data["quantile_value"] = ((*cell, "quantile"), quantile_value)
        data["quantile_se"] = ((*cell, "quantile"), quantile_se)
        coords["quantile"] = qs
    if values is not None:
        data["values"] = ((*cell, "run"), values)
        coords["run"] = np.arange(n_runs)
    config = jsonable(
        {
            "method": method.config(),
            "problem": problem.config(),
            "x0": torch.as_tensor(x0, dtype=torch.float64).tolist(),
            "horizon": horizon,
            "n_steps": n_steps,
            "n_runs": n_runs,
            "ells": list(ladder),
            "seed": seed,
            "seeds": {str(ell): ladder_seed(seed, ell) for ell in ladder},
            "record_every": every,
            "observables": list(names),
            "quantiles": qs.tolist(),
            "level": float(level),
            "blowup_threshold": blowup_threshold,
            "block_size": block_size,
        }
    )
    attrs = {
        "config": to_json(config),
        "reproducible": int(is_reproducible(config)),
        "seed": seed_attr(seed),
        "lr": float(method.lr),
        "horizon": horizon,
        "reference_ell": int(b),
        "device": str(check_device(device)),
        "dtype": str(run_dtype).replace("torch.", ""),
        "sdeopt_version": __version__,
        "torch_version": torch.__version__,
        "xarray_version": xr.__version__,
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def plot_validity_ladder(ds, observable: str = "loss", *, times=None, ax=None):
    """The mean of an observable against ℓ (log axis) with ±1 se bars: one line per time.

    A flat line is what a valid first-order SDE predicts; the dotted line at each time is the
    Richardson estimate of the ℓ → ∞ (SDE) value, when the dataset has it.

    Args:
        ds: a Dataset from ``validity_ladder``.
        observable: one of its observables.
        times: SDE times to draw (recorded ones; a number or a list); None draws the last.
        ax: Axes to draw into; a new figure when None.

    Returns:
        The Axes.
    """
    if not all(v in ds for v in ("mean", "se")) or "ell" not in ds.dims:
        raise ValueError(
            "Invalid ds: not a validity ladder (expected the output of validity_ladder)"
        )
    known = [str(o) for o in ds["observable"].values]
    if observable not in known:
        raise ValueError(f"Invalid observable: {observable!r} (this ladder has {known})")
    recorded = np.asarray(ds["time"].values, dtype=np.float64)
    wanted = [recorded[-1]] if times is None else np.atleast_1d(np.asarray(times, dtype=float))
    at = []
    for t in wanted:
        i = int(np.argmin(np.abs(recorded - t)))
        if not abs(recorded[i] - t) <= _WHOLE * max(1.0, abs(t)):
            raise ValueError(f"Invalid times: {t!r} is not a recorded time ({recorded.tolist()})")
        at.append(i)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    ells = np.asarray(ds["ell"].values, dtype=np.int64)
    sel = ds.sel(observable=observable)
    n_runs = int(ds["n_alive"].isel(time=0).max())
    for c, i in enumerate(at):
        point = sel.isel(time=i)
        label = f"t = {recorded[i]:g}"
        lost = 1.0 - float(point["n_alive"].min()) / n_runs if n_runs else 0.0
        if lost > 0:
            label += f" (up to {100 * lost:.3g}% diverged, excluded)"
        color = f"C{c % 10}"
        ax.errorbar(
            ells,
            point["mean"].values,
            yerr=point["se"].values,
            marker="o",
            capsize=3,
            color=color,
            label=label,
        )
        if "extrapolated" in point:
            ax.axhline(float(point["extrapolated"]), color=color, linestyle=":", linewidth=1.2)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ells, [str(e) for e in ells])
    ax.minorticks_off()
    ax.set_xlabel("ℓ  (SVAG: step lr/ℓ, ℓ = 1 is the method, ℓ → ∞ the first-order SDE)")
    ax.set_ylabel(f"mean {observable} ± 1 se")
    ax.set_title("SVAG validity ladder (dotted: ℓ → ∞ extrapolation)")
    ax.legend(fontsize="small", framealpha=0.85)
    return ax


def _check_ells(ells) -> list[int]:
    if isinstance(ells, (str, bytes)) or not isinstance(ells, Sequence):
        raise ValueError(f"Invalid ells: {ells!r} (a list of integers >= 1)")
    ladder = [check_int(f"ells[{i}]", ell, minimum=1) for i, ell in enumerate(ells)]
    if len(set(ladder)) != len(ladder) or len(ladder) < 2:
        raise ValueError(f"Invalid ells: {ells!r} (need at least two distinct values)")
    return sorted(ladder)


def _whole_steps(horizon: float, lr: float) -> int:
    """K = horizon / lr when that is a whole number >= 1 (to a relative 1e-9), else ValueError."""
    n_steps = round(horizon / lr)
    if n_steps < 1 or abs(n_steps * lr - horizon) > _WHOLE * horizon:
        raise ValueError(
            f"Invalid horizon: {horizon!r} (must be a whole number >= 1 of the method's steps of "
            f"lr = {lr!r}; horizon / lr = {horizon / lr!r})"
        )
    return n_steps


def _check_observables(observables, problem: Problem) -> tuple[str, ...]:
    names = (observables,) if isinstance(observables, str) else observables
    if (
        not isinstance(names, Sequence)
        or not names
        or not all(isinstance(n, str) and n in OBSERVABLES for n in names)
    ):
        raise ValueError(
            f"Invalid observables: {observables!r} (one or more of {', '.join(OBSERVABLES)})"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"Invalid observables: {observables!r} (each at most once)")
    if "dist" in names and problem.minimizer is None:
        raise ValueError(
            f"Invalid observables: 'dist' ({type(problem).__name__} has no known minimiser)"
        )
    return tuple(names)


def _check_quantiles(quantiles) -> np.ndarray:
    try:
        qs = np.atleast_1d(np.asarray(quantiles, dtype=float))
    except (TypeError, ValueError):
        raise ValueError(f"Invalid quantiles: {quantiles!r} (levels, each in (0, 1))") from None
    if qs.ndim != 1 or not np.all((qs > 0) & (qs < 1)) or len(set(qs.tolist())) != len(qs):
        raise ValueError(f"Invalid quantiles: {quantiles!r} (distinct levels, each in (0, 1))")
    return qs


def _mean_se(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and its se over the last axis of v (S, B), NaN left out; NaN with < 1 (< 2) values."""
    n = np.sum(~np.isnan(v), axis=-1)  # (S,)
    total = np.nansum(v, axis=-1)
    mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    dev = np.where(np.isnan(v), 0.0, v - mean[:, None])
    var = np.sum(dev * dev, axis=-1) / np.maximum(n - 1, 1)
    return mean, np.where(n > 1, np.sqrt(var / np.maximum(n, 1)), np.nan)
