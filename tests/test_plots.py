"""Tests of sdeopt.analysis.plots on a seeded synthetic dataset of the docs/schema.md schema."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.axes import Axes

from sdeopt.analysis.plots import (
    plot_divergence,
    plot_marginals,
    plot_trajectories,
    plot_weak_error,
)

MODELS = ("discrete", "first_order")
N_DIVERGED = {"discrete": 2, "first_order": 5}


def example_dataset(
    n_runs: int = 200, n_steps: int = 50, seed: int = 0, dim: int = 2, lr: float = 0.1
) -> xr.Dataset:
    """Two models of a noisy quadratic, with a few runs per model that blow up and freeze.

    Layout of ``Trajectory.to_dataset`` concatenated along ``model``: loss, grad_norm, dist
    (model, step, run), x (model, step, run, coord), diverged and blowup_step (model, run).
    """
    rng = np.random.default_rng(seed)
    steps = np.arange(n_steps)
    x = np.empty((len(MODELS), n_steps, n_runs, dim))  # (M, S, B, d)
    diverged = np.zeros((len(MODELS), n_runs), dtype=bool)
    blowup = np.full((len(MODELS), n_runs), -1, dtype=np.int64)
    for m, model in enumerate(MODELS):
        scale = 1.0 if model == "discrete" else 1.05
        xk = np.full((n_runs, dim), 2.0)  # (B, d)
        for k in range(n_steps):
            x[m, k] = xk
            xk = xk - lr * xk + scale * np.sqrt(lr) * 0.3 * rng.standard_normal((n_runs, dim))
        bad = rng.choice(n_runs, N_DIVERGED[model], replace=False)
        start = rng.integers(5, n_steps - 5, size=bad.size)
        for b, k0 in zip(bad, start):
            x[m, k0:, b] = 1e9  # frozen at the last (huge) value, as simulate() does
        diverged[m, bad] = True
        blowup[m, bad] = start
    loss = 0.5 * (x**2).sum(-1) + 0.01
    grad_norm = np.sqrt((x**2).sum(-1))
    coords = {
        "model": list(MODELS),
        "step": steps,
        "run": np.arange(n_runs),
        "coord": np.arange(dim),
        "time": ("step", steps * lr, {"units": "optimizer steps x lr"}),
        "lr_sum": ("step", steps * lr, {"long_name": "summed learning rate"}),
    }
    data = {
        "loss": (("model", "step", "run"), loss),
        "grad_norm": (("model", "step", "run"), grad_norm),
        "dist": (("model", "step", "run"), grad_norm),
        "x": (("model", "step", "run", "coord"), x),
        "diverged": (("model", "run"), diverged),
        "blowup_step": (("model", "run"), blowup),
    }
    return xr.Dataset(data, coords=coords, attrs={"seed": seed, "lr": lr, "config": "{}"})


def example_weak_error(seed: int = 0) -> xr.Dataset:
    """error ≈ c·η (first order) and ≈ c·η² (second order) plus MC noise, over 5 step sizes."""
    rng = np.random.default_rng(seed)
    lr = np.array([0.2, 0.1, 0.05, 0.025, 0.0125])
    se = np.full((2, lr.size), 2e-4)
    error = np.abs(np.stack([0.5 * lr, 0.8 * lr**2]) + se * rng.standard_normal(se.shape))
    return xr.Dataset(
        {"error": (("model", "lr"), error), "se": (("model", "lr"), se)},
        coords={"model": ["first_order", "second_order"], "lr": lr},
    )


@pytest.fixture
def ds() -> xr.Dataset:
    return example_dataset(n_runs=200, n_steps=50, seed=0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(autouse=True)
def _no_runtime_warnings():
    """All-NaN slices, log of zero etc. must never be hit."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


def _labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _mean_of_kept(ds, model, var="loss"):
    kept = ~ds["diverged"].sel(model=model).values
    return ds[var].sel(model=model).transpose("step", "run").values[:, kept].mean(axis=1)


# --------------------------------------------------------------------------------------------
# plot_trajectories


def test_trajectories_lines_bands_labels(ds):
    ax = plot_trajectories(ds, "loss")
    assert isinstance(ax, Axes)
    assert len(ax.lines) == 2 and len(ax.collections) == 2  # one line + one band per model
    assert ax.get_xlabel().startswith("time") and "lr" in ax.get_xlabel()
    assert ax.get_ylabel() and ax.get_title()
    assert ax.get_yscale() == "log"
    labels = _labels(ax)
    assert labels[0].startswith("discrete") and "1% diverged" in labels[0]
    assert labels[1].startswith("first_order") and "2.5% diverged" in labels[1]
    disc, sde = ax.lines
    assert disc.get_color() == "black" and disc.get_linestyle() == "-"
    assert sde.get_linestyle() == "--" and sde.get_color() != "black"


def test_trajectories_mean_excludes_diverged(ds):
    ax = plot_trajectories(ds, "loss", quantiles=None)
    for line, model in zip(ax.lines, ds["model"].values):
        np.testing.assert_allclose(line.get_ydata(), _mean_of_kept(ds, model), rtol=1e-12)
    huge = ds.copy(deep=True)
    huge["loss"] = huge["loss"].where(~huge["diverged"], 1e30)
    ax2 = plot_trajectories(huge, "loss")
    for a, b in zip(ax.lines, ax2.lines):
        np.testing.assert_array_equal(a.get_ydata(), b.get_ydata())
        np.testing.assert_array_equal(a.get_xdata(), b.get_xdata())


def test_trajectories_median_and_given_axes(ds):
    _, ax = plt.subplots()
    out = plot_trajectories(ds, "grad_norm", stat="median", x="step", logy=False, ax=ax)
    assert out is ax
    kept = ~ds["diverged"].sel(model="discrete").values
    expected = np.median(ds["grad_norm"].sel(model="discrete").values[:, kept], axis=1)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), expected)
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), ds["step"].values)
    assert ax.get_xlabel().startswith("step") and ax.get_yscale() == "linear"
    plot_trajectories(ds, x="lr_sum", ax=ax)
    assert len(ax.lines) == 4


def test_trajectories_all_diverged_and_nan(ds):
    bad = ds.copy(deep=True)
    bad["diverged"].loc[{"model": "first_order"}] = True
    bad["loss"].loc[{"model": "discrete", "step": 3}] = np.nan  # a NaN in a kept run is skipped
    bad["loss"].loc[{"model": "discrete", "step": 4}] = np.nan  # a step with no data is dropped
    ax = plot_trajectories(bad, "loss")
    disc, sde = ax.lines
    assert np.isfinite(disc.get_ydata()).all() and len(disc.get_ydata()) == ds.sizes["step"] - 2
    assert len(sde.get_ydata()) == 0
    assert "100% diverged" in _labels(ax)[1]
    assert len(ax.collections) == 1  # no band for the empty model


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"var": "nope"}, "var"),
        ({"var": "diverged"}, "var"),
        ({"var": "x"}, "var"),
        ({"stat": "max"}, "stat"),
        ({"x": "wall"}, "x"),
        ({"quantiles": (0.9, 0.1)}, "quantiles"),
    ],
)
def test_trajectories_bad_arguments(ds, kwargs, param):
    with pytest.raises(ValueError, match=f"Invalid {param}"):
        plot_trajectories(ds, **kwargs)


def test_trajectories_sweep_dim_rejected(ds):
    swept = xr.concat([ds, ds], dim="lr")
    with pytest.raises(ValueError, match="extra dims"):
        plot_trajectories(swept)


# --------------------------------------------------------------------------------------------
# plot_weak_error


def test_weak_error_series_slopes_floor():
    err = example_weak_error()
    ax = plot_weak_error(err)
    assert isinstance(ax, Axes)
    assert len(ax.containers) == 2  # one error-bar series per model
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "η" in ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    labels = _labels(ax)
    assert labels == ["first_order", "second_order", "slope 1", "slope 2", "MC floor"]  # data first
    lines = {line.get_label(): line for line in ax.lines}
    anchor = err["error"].isel(lr=0).max().item()  # largest lr comes first
    for p in (1, 2):
        ref = lines[f"slope {p}"]
        assert ref.get_linestyle() == ":"
        assert ref.get_xdata()[-1] == pytest.approx(0.2) and ref.get_ydata()[-1] == pytest.approx(
            anchor
        )
        slope = np.diff(np.log(ref.get_ydata()[[0, -1]])) / np.diff(
            np.log(ref.get_xdata()[[0, -1]])
        )
        assert slope[0] == pytest.approx(p)
    assert lines["MC floor"].get_ydata()[0] == pytest.approx(2e-4)
    bars = ax.containers[0]
    np.testing.assert_allclose(
        bars.lines[0].get_ydata(), err["error"].sel(model="first_order").values
    )


def test_weak_error_given_axes_floor_no_model_dim():
    err = example_weak_error().sel(model="first_order", drop=True)
    _, ax = plt.subplots()
    out = plot_weak_error(err, ax=ax, reference_slopes=(1,), floor=1e-5)
    assert out is ax
    assert len(ax.containers) == 1
    lines = {line.get_label(): line for line in ax.lines}
    assert "slope 2" not in lines and lines["MC floor"].get_ydata()[0] == pytest.approx(1e-5)


def test_weak_error_skips_nan_and_zero():
    err = example_weak_error()
    err["error"][0, 1] = np.nan
    err["error"][1, 2] = 0.0
    ax = plot_weak_error(err)
    for bars in ax.containers:
        y = bars.lines[0].get_ydata()
        assert len(y) == 4 and np.isfinite(y).all() and (y > 0).all()


def test_weak_error_bad_arguments():
    err = example_weak_error()
    with pytest.raises(ValueError, match="Invalid x"):
        plot_weak_error(err, x="step")
    with pytest.raises(ValueError, match="Invalid err"):
        plot_weak_error(err[["error"]])
    with pytest.raises(ValueError, match="Invalid floor"):
        plot_weak_error(err, floor=-1.0)
    with pytest.raises(ValueError, match="extra dims"):
        plot_weak_error(err.expand_dims(step=[3]))


# --------------------------------------------------------------------------------------------
# plot_marginals


def test_marginals_hist(ds):
    ax = plot_marginals(ds, var="x", coord=1)
    assert isinstance(ax, Axes)
    assert len(ax.patches) == 2  # one step histogram per model
    assert ax.get_xlabel() == "x[1]" and ax.get_ylabel() == "probability density"
    assert "step k = 49" in ax.get_title()
    last = ds["x"].isel(step=-1, coord=1)
    kept_max = max(
        last.sel(model=m).values[~ds["diverged"].sel(model=m).values].max()
        for m in ds["model"].values
    )
    for patch in ax.patches:
        density, edges = patch.get_data().values, patch.get_data().edges
        assert len(density) == 60 and np.sum(density * np.diff(edges)) == pytest.approx(1.0)
        assert edges[-1] == pytest.approx(
            kept_max
        )  # diverged runs (frozen at 1e9) never set the bins


def test_marginals_ccdf_and_given_axes(ds):
    _, ax = plt.subplots()
    out = plot_marginals(ds, var="loss", step=10, kind="ccdf", ax=ax)
    assert out is ax
    assert len(ax.lines) == 2 and ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "loss" in ax.get_ylabel() and ax.get_xlabel()
    for line, model in zip(ax.lines, ds["model"].values):
        kept = ~ds["diverged"].sel(model=model).values
        v = np.sort(ds["loss"].sel(model=model).isel(step=10).values[kept])
        np.testing.assert_allclose(line.get_xdata(), v)
        y = line.get_ydata()
        assert y[0] == 1.0 and y[-1] == pytest.approx(1 / kept.sum()) and np.all(np.diff(y) < 0)


def test_marginals_all_diverged(ds):
    bad = ds.copy(deep=True)
    bad["diverged"].loc[{"model": "first_order"}] = True
    ax = plot_marginals(bad, kind="hist")
    assert len(ax.patches) == 1 and "100% diverged" in _labels(ax)[1]
    ax = plot_marginals(bad, kind="ccdf")
    assert len(ax.lines[1].get_xdata()) == 0


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"var": "nope"}, "var"),
        ({"kind": "kde"}, "kind"),
        ({"step": 50}, "step"),
        ({"coord": 2}, "coord"),
        ({"bins": 0}, "bins"),
    ],
)
def test_marginals_bad_arguments(ds, kwargs, param):
    with pytest.raises(ValueError, match=f"Invalid {param}"):
        plot_marginals(ds, **kwargs)


# --------------------------------------------------------------------------------------------
# plot_divergence


def test_divergence(ds):
    ax = plot_divergence(ds)
    assert isinstance(ax, Axes)
    assert len(ax.lines) == 2 and ax.get_xlabel().startswith("time")
    assert ax.get_ylabel() == "fraction of runs diverged" and ax.get_title()
    k = ds["step"].values
    for line, model in zip(ax.lines, ds["model"].values):
        blowup = ds["blowup_step"].sel(model=model).values
        expected = [np.mean((blowup != -1) & (blowup <= kk)) for kk in k]
        np.testing.assert_allclose(line.get_ydata(), expected)
        assert line.get_ydata()[-1] == pytest.approx(N_DIVERGED[model] / ds.sizes["run"])
        assert line.get_ydata()[0] == 0.0
    assert 0.025 <= ax.get_ylim()[1] <= 1.0  # zoomed on the small fractions, never past 100%
    _, ax2 = plt.subplots()
    assert plot_divergence(ds, x="step", ax=ax2) is ax2
    with pytest.raises(ValueError, match="Invalid x"):
        plot_divergence(ds, x="nope")


# --------------------------------------------------------------------------------------------
# files


def test_save_png(ds, tmp_path):
    bad = ds.copy(deep=True)
    figures = {
        "trajectories": plot_trajectories(ds, "loss").figure,
        "weak_error": plot_weak_error(example_weak_error()).figure,
        "marginals_hist": plot_marginals(ds).figure,
        "marginals_ccdf": plot_marginals(bad, var="loss", kind="ccdf").figure,
        "divergence": plot_divergence(ds).figure,
    }
    for name, fig in figures.items():
        path = tmp_path / f"{name}.png"
        fig.savefig(path, dpi=80)
        assert path.stat().st_size > 1000
