"""Estimated moments (issue 14, item 3): the first-order SDE of any direction method from fresh
Monte Carlo draws of its direction, against closed forms where they exist."""

from __future__ import annotations

import math

import pytest
import torch

import sdeopt as so
from sdeopt.analysis.closed_forms import stationary_loss


def test_estimated_moments_agree_in_law_with_the_closed_form_sde():
    """DCSGD + RandK, S = 64: the estimated-moments SDE's stationary loss equals that of Euler on
    the closed-form first-order SDE (the closed form of the same scheme), within its Monte Carlo
    error; the estimator's drift error is compensated (module docstring), so no bias is left."""
    prob = so.problems.Quadratic(diag=[1.0, 2.0, 3.0, 5.0])
    opt = so.discrete.DCSGD(
        lr=0.2, n_workers=3, noise=so.noise.Gaussian(1.0), compressor=so.compressors.RandK(k=2)
    )
    sde = so.dynamics.sde_of(opt, prob, moments="estimated", samples=64)
    n_runs = 3000
    path = so.dynamics.solve(
        sde, torch.zeros(4), n_steps=30, n_runs=n_runs, substeps=2, record_every=30, seed=3
    )  # t = 6: transients below e^{-12}
    final = path.loss[-1]
    mean, se = final.mean().item(), final.std().item() / math.sqrt(n_runs)
    euler = stationary_loss(opt, prob, "first_order", substeps=2)
    assert abs(mean - euler) < 4 * se, (mean, euler, se)
    # The model differs from the discrete chain here by more than the error: it is resolved.
    assert abs(euler - stationary_loss(opt, prob)) > 6 * se


def test_topk_estimated_drift_is_the_mean_of_its_biased_direction():
    """TopK is biased: the estimated drift is E[TopK(∇f + Z)] ≠ ∇f, checked against a
    large-sample reference of the discrete direction (the SDE's drift over one tiny step)."""
    prob = so.problems.Quadratic(diag=[1.0, 3.0, 0.5])
    opt = so.discrete.DCSGD(
        lr=0.05, n_workers=2, noise=so.noise.Gaussian(0.8), compressor=so.compressors.TopK(k=1)
    )
    with pytest.raises(ValueError, match="TopK"):
        so.dynamics.sde_of(opt, prob)  # no closed form: refused with the compressor's reason
    sde = so.dynamics.sde_of(opt, prob, moments="estimated", samples=256)
    x = torch.tensor([[1.0, -0.4, 2.0]], dtype=torch.float64).expand(4000, 3)
    rng = so.random.RandomSource(11, 4000)
    est = sde.sampler(x, rng).mean(dim=0)  # (B, d): one estimate per run
    ref_rng = so.random.RandomSource(12, 200_000)
    ref = opt.direction(prob, x[:1].expand(200_000, 3).contiguous(), ref_rng)
    want, se_ref = ref.mean(0), ref.std(0) / math.sqrt(200_000)
    got, se = est.mean(0), est.std(0) / math.sqrt(4000)
    assert torch.all((got - want).abs() < 4.5 * torch.sqrt(se**2 + se_ref**2)), (got, want)
    grad = prob.grad(x[:1])[0]
    assert (want - grad).abs().max() > 10 * se_ref.max()  # biased: not the gradient


def test_estimated_moments_bad_input():
    prob = so.problems.Quadratic(diag=[1.0, 2.0])
    opt = so.discrete.DSGD(lr=0.1, noise=so.noise.Gaussian())
    with pytest.raises(ValueError, match="samples"):
        so.dynamics.sde_of(opt, prob, moments="estimated", samples=1)
    with pytest.raises(ValueError, match="samples"):
        so.dynamics.sde_of(opt, prob, samples=8)
    with pytest.raises(ValueError, match="moments"):
        so.dynamics.sde_of(opt, prob, moments="sampled", samples=8)
    with pytest.raises(ValueError, match="first-order"):
        so.dynamics.sde_of(opt, prob, "curvature", moments="estimated", samples=8)
    heavy = so.discrete.DSGD(lr=0.1, noise=so.noise.StudentT(nu=1.5))
    with pytest.raises(ValueError, match=r"infinite variance.*clip"):
        so.dynamics.sde_of(heavy, prob, moments="estimated", samples=8)
    clipped = so.discrete.DCSGD(lr=0.1, noise=so.noise.StudentT(nu=1.5), clip=1.0)
    sde = so.dynamics.sde_of(clipped, prob, moments="estimated", samples=8)  # bounded: fine
    path = so.dynamics.solve(sde, [1.0, 1.0], n_steps=3, n_runs=4)
    assert not path.diverged.any()
    with pytest.raises(ValueError, match="estimated-moments"):
        so.dynamics.solve(sde, [1.0, 1.0], n_steps=3, n_runs=4, scheme="milstein")


def test_estimated_moments_from_compare_and_toml():
    """compare(moments=, samples=) and the TOML keys of the same names: a TopK run, which has no
    closed-form SDE, next to its estimated first-order model."""
    from sdeopt.experiments.config import build, compare_spec

    run = {
        "problem": {"type": "Quadratic", "diag": [1.0, 2.0, 3.0]},
        "noise": {"type": "Gaussian", "scale": 0.5},
        "compressor": {"type": "TopK", "k": 1},
        "method": {"type": "DCSGD", "lr": 0.05, "n_workers": 2},
        "x0_fill": 1.0,
        "n_steps": 4,
        "n_runs": 8,
        "models": ["first_order"],
        "moments": "estimated",
        "samples": 4,
    }
    ds = compare_spec(build(run))
    assert list(ds.model.values) == ["discrete", "first_order"]
    assert '"moments": "estimated"' in ds.attrs["config"]
    for bad in ({"samples": None}, {"moments": "exact"}, {"moments": "sampled"}, {"samples": 1.5}):
        with pytest.raises(ValueError, match=r"moments|samples"):
            build({**run, **bad})
