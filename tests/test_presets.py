"""What the experiment presets and their summary rows claim, checked on tiny, fast configurations."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from sdeopt import problems
from sdeopt.analysis.closed_forms import stationary_loss
from sdeopt.experiments.config import PROBLEMS, build, validate
from sdeopt.experiments.runner import finite_range_slope, run_trajectories

PRESETS = Path(__file__).resolve().parent.parent / "experiments"


def _preset(name: str) -> dict:
    return validate(tomllib.loads((PRESETS / f"{name}.toml").read_text()))


# --- the problem the weak-order claim names ---------------------------------------------------


def test_quadratic_quartic_matches_autograd(generator):
    prob = problems.QuadraticQuartic(dim=3)
    x = torch.randn(5, 3, generator=generator) * 2  # (B, d)
    v = torch.randn(5, 3, generator=generator)  # (B, d)
    torch.testing.assert_close(prob.loss(x), (x**2 / 2 + x**4 / 4).sum(-1))
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(prob.loss(xr).sum(), xr)
    torch.testing.assert_close(prob.grad(x), auto)
    for b in range(len(x)):
        hess = torch.autograd.functional.hessian(lambda y: prob.loss(y.unsqueeze(0))[0], x[b])
        torch.testing.assert_close(prob.hvp(x[b : b + 1], v[b : b + 1])[0], hess @ v[b])
    assert prob.min_value == 0.0 and float(prob.loss(prob.minimizer.unsqueeze(0))[0]) == 0.0
    assert PROBLEMS["QuadraticQuartic"] is problems.QuadraticQuartic


def test_weak_order_preset_runs_the_objective_and_coupling_its_claim_names():
    config = _preset("weak_order")
    claim = " ".join(config["claim"].split())
    assert "x^2/2 + x^4/4" in claim and "finite-range slope" in claim
    named = [r for r in config["runs"] if "x^2/2+x^4/4" in r["name"]]
    assert {r["method"]["type"] for r in named} == {"DSGD", "DSignSGD"}
    x = torch.tensor([[0.3], [-1.7]])
    for run in named:
        spec = build(run)
        assert isinstance(spec["problem"], problems.QuadraticQuartic) and spec["problem"].dim == 1
        torch.testing.assert_close(spec["problem"].loss(x), (x**2 / 2 + x**4 / 4).sum(-1))
        # DSGD with Gaussian noise is coupled; DSignSGD's Binomial sign counts cannot be, and the claim says so
        assert spec["coupled"] == (run["method"]["type"] == "DSGD")
    assert "cannot be coupled" in claim


@pytest.mark.parametrize("path", sorted(PRESETS.glob("*.toml")), ids=lambda p: p.stem)
def test_preset_claims_do_not_overclaim(path):
    claim = " ".join(validate(tomllib.loads(path.read_text()))["claim"].split())
    assert "MATH.md" not in claim  # internal notes: users cite the paper
    assert "exact for quadratics" not in claim
    assert "weak order 1" not in claim and "weak order 2" not in claim  # fitted slopes, not orders


# --- summary rows -----------------------------------------------------------------------------


def test_summary_median_and_mean_leave_diverged_runs_out():
    # DCSGD + Rand-1 on the quartic from 1.2: about half the runs blow up within 40 steps
    run = {
        "name": "q",
        "problem": {"type": "Quartic", "dim": 4},
        "noise": {"type": "Gaussian", "scale": 1.0},
        "x0_fill": 1.2,
        "n_steps": 40,
        "n_runs": 200,
        "record_every": 10,
        "blowup_threshold": 1e3,
        "method": {"type": "DCSGD", "lr": 0.15, "n_workers": 1},
        "compressor": {"type": "RandK", "k": 1},
    }
    ds, rows, fine = run_trajectories(build(run))
    (row,) = rows
    diverged = ds["diverged"].sel(model="discrete").values
    assert 0 < diverged.sum() < len(diverged)
    final = ds["loss"].sel(model="discrete").isel(step=-1).values
    alive = final[~diverged]
    assert row["alive"] == len(alive) == len(diverged) - diverged.sum()
    assert row["median_loss"] == pytest.approx(np.median(alive))
    assert row["mean_loss"] == pytest.approx(alive.mean())
    assert row["mean_se"] == pytest.approx(alive.std(ddof=1) / math.sqrt(len(alive)))
    assert row["median_loss"] < np.median(final)  # the frozen blown-up values would pull it up
    assert fine is None  # no closed form, no extrapolation


def test_richardson_stationary_figure_matches_the_closed_form_and_the_raw_one_does_not():
    # Two solver steps per optimizer step (h = lr/2): the Euler bias of the curvature SDE's
    # stationary loss, ~ a h / 2 relative on a coordinate of drift rate a, is ~30 se here;
    # extrapolating over h and h/2 leaves ~ a² h² / 8, well below one se. 3 checks: z = 3.
    z = 3.0
    run = {
        "name": "floor",
        "problem": {"type": "Quadratic", "diag": [1.0, 3.0]},
        "noise": {"type": "Gaussian", "scale": 1.0},
        "x0_fill": 0.0,
        "n_steps": 300,
        "n_runs": 3000,
        "record_every": 5,
        "record": ["loss"],
        "average_from": 60,
        "substeps": 2,
        "scheme": "euler",  # Euler's O(h) bias is what is extrapolated away
        "models": ["curvature"],
        "method": {"type": "DSGD", "lr": 0.2, "n_workers": 2},
    }
    spec = build(run)
    closed = stationary_loss(spec["method"], spec["problem"])
    ds, rows, fine = run_trajectories(spec)
    assert fine is not None and fine.attrs["config"] != ds.attrs["config"]  # solved again at h/2
    disc, sde = rows
    assert disc["closed_form"] == sde["closed_form"] == closed
    assert abs(disc["mean_loss"] - closed) < z * disc["mean_se"]
    assert abs(sde["extrap_loss"] - closed) < z * sde["extrap_se"]
    assert abs(sde["mean_loss"] - closed) > 3 * z * sde["mean_se"]  # the raw Euler figure is biased
    # the reported solver bias is that of the raw (h) figure
    assert sde["mean_loss"] - sde["extrap_loss"] == pytest.approx(sde["solver_bias"], rel=1e-9)
    assert sde["solver_bias"] > z * sde["bias_se"]


def test_average_from_is_validated():
    base = {
        "problem": {"type": "Quadratic", "diag": [1.0]},
        "noise": {"type": "Gaussian"},
        "x0": [0.0],
        "n_steps": 10,
        "method": {"type": "DSGD", "lr": 0.1},
    }
    for bad in (11, -1, 2.5, True):
        with pytest.raises(ValueError, match="average_from"):
            validate({"runs": [{**base, "average_from": bad}]})
    validate({"runs": [{**base, "average_from": 10}]})


# --- finite-range slopes ----------------------------------------------------------------------


def test_finite_range_slope_ci_carries_the_monte_carlo_error():
    lrs = np.array([0.2, 0.1, 0.05, 0.025])
    exact = 0.3 * lrs  # on a line: the regression residuals are zero
    ses = 0.05 * exact
    independent = np.eye(4) * 1000.0  # influence values with no correlation across step sizes
    fit = finite_range_slope(lrs, exact, ses, independent)
    assert fit.slope == pytest.approx(1.0)
    x = np.log(lrs)
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    assert fit.mc_se == pytest.approx(math.sqrt(np.sum((w * 0.05) ** 2)))
    assert fit.ci_high - fit.ci_low == pytest.approx(2 * stats.norm.ppf(0.975) * fit.mc_se)
    # ... and it is the spread of slopes fitted to errors redrawn with those se's
    rng = np.random.default_rng(0)
    draws = exact + ses * rng.standard_normal((4000, 4))
    slopes = np.log(np.abs(draws)) @ w
    assert np.std(slopes) == pytest.approx(fit.mc_se, rel=0.1)
    # perfectly correlated errors with equal relative se move every log error alike: no slope error
    together = np.ones((4, 1000))
    assert finite_range_slope(lrs, exact, ses, together).mc_se == pytest.approx(0.0, abs=1e-9)


# --- heavy tails: the Lévy model, quantiles and exit times in configs --------------------------


def _heavy_run(**extra):
    return {
        "name": "h",
        "problem": {"type": "Quadratic", "diag": [1.0]},
        "noise": {"type": "SymmetricStable", "alpha": 1.5, "scale": 1.0},
        "method": {"type": "DSGD", "lr": 0.05, "n_workers": 2},
        "x0": [0.0],
        "n_steps": 60,
        "n_runs": 2000,
        "record_every": 20,
        "record": ["loss"],
        "models": ["levy"],
        "scheme": "exact",
        **extra,
    }


def test_quantile_rows_are_the_quantiles_of_the_final_loss_with_gaps_to_the_discrete_ones():
    qs = [0.25, 0.5, 0.9]
    ds, rows, _ = run_trajectories(build(_heavy_run(quantiles=qs)))
    for row in rows:
        final = ds["loss"].sel(model=row["model"]).isel(step=-1).values
        assert [float(v) for v in row["quantiles"].split()] == pytest.approx(
            np.quantile(final, qs).tolist(), rel=1e-2
        )
    gaps = rows[1]["quantile_gaps"].split()
    assert len(gaps) == len(qs) and all("±" in g for g in gaps)


def test_exit_radius_makes_the_blowup_step_an_exit_time():
    """exit_radius = w stops each run at its first step with |x| > w: the rows' median exit step
    is the median of blowup_step (every run exits within 800 steps here: the median is ~28)."""
    run = _heavy_run(
        problem={"type": "DoubleWell", "width": 0.5},
        method={"type": "DSGD", "lr": 0.05, "n_workers": 1},
        exit_radius=0.5,
        n_steps=800,
        n_runs=500,
        record_every=100,
        scheme="euler",
        substeps=2,
        richardson=True,
    )
    spec = build(run)
    assert spec["blowup_threshold"] == 0.5
    ds, rows, fine = run_trajectories(spec)
    for row in rows:
        steps = ds["blowup_step"].sel(model=row["model"]).values
        assert row["exited"] == 1.0 and (steps > 0).all()
        assert row["exit_median"] == np.sort(steps)[math.ceil(len(steps) / 2) - 1]
        assert row["exit_mean"] == pytest.approx(steps.mean())
    assert "exit_median_h2" in rows[1] and fine is not None


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"quantiles": [0.5, 1.0]}, "quantiles"),
        ({"quantiles": []}, "quantiles"),
        ({"exit_radius": 0.0}, "exit_radius"),
        ({"exit_radius": 1.0, "blowup_threshold": 5.0}, "exit_radius"),
        ({"scheme": "milstein"}, "scheme"),
        ({"models": ["first_order"]}, "models"),
    ],
)
def test_heavy_tail_config_keys_are_validated(extra, key):
    with pytest.raises(ValueError, match=key):
        validate({"runs": [_heavy_run(**extra)]})
