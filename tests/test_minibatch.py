"""Minibatch noise on finite sums and its SDE (issue 14, item 1): the sampler against the
covariance formula (Cochran's finite-population correction, or 1/b with replacement), and the
SDE's low-rank diffusion against that covariance formed densely."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

import sdeopt as so
from sdeopt.random import RandomSource

N_MC = 40_000
#: 2 laws x 2 splits x 2 points x 4 directions = 32 checks: family-wise level ~1e-4.
Z = float(norm.isf(1e-4 / (2 * 32)))


def _problem(split: str):
    if split == "homogeneous":
        return so.problems.LogisticRegression(dataset="breast_cancer")
    return so.problems.LogisticRegression(3, split="label", dataset="breast_cancer")


def _exact_step_cov(prob, x, b, replacement, n_workers):
    """Cov of (1/N) Σ_i g_i from the per-sample gradients: (1/N²) Σ_i Cov(g_i), (d, d)."""
    g = prob.per_sample_grads(x.unsqueeze(0))[0]  # (n, d)
    total = torch.zeros(prob.dim, prob.dim, dtype=torch.float64)
    owners = prob.sample_worker.tolist()
    shards = sorted(set(owners))
    for i in range(n_workers):
        shard = shards[i] if len(shards) > 1 else shards[0]
        rows = g[torch.tensor([o == shard for o in owners])]  # (n_i, d)
        n_i = rows.shape[0]
        dev = rows - rows.mean(0)
        sigma = dev.T @ dev / n_i  # the population covariance of the shard
        c_b = 1.0 / b if replacement else (n_i - b) / (b * (n_i - 1))
        total += c_b * sigma
    return total / n_workers**2


@pytest.mark.parametrize("replacement", [False, True], ids=["without", "with"])
@pytest.mark.parametrize("split", ["homogeneous", "label"])
def test_the_minibatch_sampler_has_the_covariance_of_its_formula(split, replacement, generator):
    """Quadratic forms vᵀ Cov v of one discrete step, by Monte Carlo, against the covariance
    computed from the per-sample gradients at two points and four directions."""
    prob = _problem(split)
    # b large against the shards: the finite-population factor (n_i - b)/(n_i - 1) is 0.67-0.89,
    # far from the 1 of drawing with replacement, so the two laws are told apart.
    n_workers, b = 3, 64
    noise = so.noise.Minibatch(batch_size=b, replacement=replacement)
    for point in range(2):
        x = 0.05 * torch.randn(prob.dim, generator=generator, dtype=torch.float64)
        exact = _exact_step_cov(prob, x, b, replacement, n_workers)
        rng = RandomSource(7 + point, N_MC)
        mean = noise.oracle_mean(prob, x.expand(N_MC, -1), n_workers, rng)  # (B, d)
        centred = mean - prob.grad(x.unsqueeze(0))  # the mean is exact: unbiased
        for _ in range(4):
            v = torch.randn(prob.dim, generator=generator, dtype=torch.float64)
            q = (centred @ v).square()  # (B,): each has mean vᵀ Cov v
            want = float(v @ exact @ v)
            got, se = q.mean().item(), q.std().item() / math.sqrt(N_MC)
            assert abs(got - want) <= Z * se, (split, replacement, got, want, se)


@pytest.mark.parametrize("replacement", [False, True], ids=["without", "with"])
@pytest.mark.parametrize("split", ["homogeneous", "label"])
def test_the_sde_diffusion_is_the_minibatch_covariance_in_low_rank_form(split, replacement):
    """G Gᵀ = lr · (1/N²) Σ_i Cov(g_i) (dense, from per-sample gradients), and the operator that
    applies G without forming it agrees with the dense G."""
    prob = _problem(split)
    n_workers, b, lr = 3, 5, 0.2
    opt = so.discrete.DSGD(
        lr=lr, n_workers=n_workers, noise=so.noise.Minibatch(batch_size=b, replacement=replacement)
    )
    gen = torch.Generator().manual_seed(3)
    x = 0.05 * torch.randn(2, prob.dim, generator=gen, dtype=torch.float64)
    for model in ("first_order", "second_order", "curvature"):
        sde = so.dynamics.sde_of(opt, prob, model)
        diff = sde.diffusion_at(x, 1.0)
        g = diff.dense()  # (B, d, m)
        for row in range(2):
            exact = lr * _exact_step_cov(prob, x[row], b, replacement, n_workers)
            torch.testing.assert_close(g[row] @ g[row].T, exact, rtol=1e-9, atol=1e-14)
        dw = torch.randn(2, sde.brownian_dim, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(diff.apply(dw), (g @ dw.unsqueeze(-1)).squeeze(-1))


@pytest.mark.parametrize("split", ["homogeneous", "label"])
def test_randk_on_minibatch_noise_diffusion_is_the_one_step_covariance(split, generator):
    """DCSGD + RandK on minibatch noise (diag + positive low rank - one rank-one term, applied by
    the downdated root without a d x d factorisation): lr · G Gᵀ against the Monte Carlo
    covariance of one discrete step, in quadratic forms vᵀ Cov v."""
    prob = _problem(split)
    lr, n_workers = 0.2, 3
    opt = so.discrete.DCSGD(
        lr=lr, n_workers=n_workers, noise=so.noise.Minibatch(batch_size=16),
        compressor=so.compressors.RandK(k=10),
    )  # fmt: skip
    x = 0.05 * torch.randn(prob.dim, generator=generator, dtype=torch.float64)
    g = so.dynamics.sde_of(opt, prob, "second_order").diffusion_at(x.unsqueeze(0), 1.0).dense()[0]
    model = lr * g @ g.T  # (d, d): Cov of one step, lr² S
    traj = so.discrete.simulate(opt, prob, x, n_steps=1, n_runs=N_MC, seed=4, record_x=True)
    centred = traj.x[-1] - x - (traj.x[-1] - x).mean(0)  # (B, d)
    for _ in range(4):
        v = torch.randn(prob.dim, generator=generator, dtype=torch.float64)
        q = (centred @ v).square()
        got, se = q.mean().item(), q.std().item() / math.sqrt(N_MC)
        assert abs(got - float(v @ model @ v)) <= Z * se, (split, got, float(v @ model @ v), se)


@pytest.mark.parametrize(
    "prob",
    [
        so.problems.LogisticRegression(3, split="label", dataset="breast_cancer", reg=0.1),
        so.problems.LeastSquares(n_samples=40, dim=3, n_workers=2, reg=0.3),
        so.problems.LeastSquares(n_samples=40, dim=3),
    ],
    ids=["logistic-label-reg", "least-squares-2-reg", "least-squares-1"],
)
def test_minibatch_cov_diag_is_the_diagonal_of_the_factors(prob, generator):
    """The closed-form diagonal (two contractions per shard) equals the squared row norms of the
    factors formed from per-sample gradients by autograd (torch.func)."""
    x = 0.1 * torch.randn(3, prob.dim, generator=generator, dtype=torch.float64)
    factors = so.problems.FiniteSumProblem.minibatch_cov_factors.__get__(prob)(x, 4)
    autograd = torch.func.vmap(
        torch.func.jacrev(lambda p: prob.per_sample_losses(p.unsqueeze(0))[0])
    )(x)  # (B, n, d)
    gp = autograd[:, prob.shard_index]  # (B, S, n_max, d)
    mask = prob.shard_mask.unsqueeze(-1)
    mean = (gp * mask).sum(2) / prob.shard_sizes.unsqueeze(-1)
    n_i = prob.shard_sizes.to(torch.float64)
    c_b = (n_i - 4) / (4 * (n_i - 1))
    want = c_b.view(1, -1, 1) / n_i.view(1, -1, 1) * (((gp - mean.unsqueeze(2)) * mask) ** 2).sum(2)
    torch.testing.assert_close(prob.minibatch_cov_diag(x, 4), want, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(factors.square().sum(-1), want, rtol=1e-10, atol=1e-15)


def test_minibatch_sde_drifts_match_the_discrete_mean_step():
    """The drift is the exact gradient (minibatches are unbiased) and the curvature correction
    uses the problem's Hessian-vector product (checked against autograd)."""
    prob = _problem("label")
    opt = so.discrete.DSGD(lr=0.1, n_workers=3, noise=so.noise.Minibatch(batch_size=4))
    x = torch.full((1, prob.dim), 0.02, dtype=torch.float64)
    first = so.dynamics.sde_of(opt, prob, "first_order").drift_at(x, 1.0)
    torch.testing.assert_close(first, -prob.grad(x))
    curv = so.dynamics.sde_of(opt, prob, "curvature").drift_at(x, 1.0)
    hess = torch.autograd.functional.hessian(lambda y: prob.loss(y.unsqueeze(0))[0], x[0])
    expected = -prob.grad(x) + 0.1 / 2 * (hess @ prob.grad(x)[0]).unsqueeze(0)
    torch.testing.assert_close(curv, expected)


def test_minibatch_bad_input():
    with pytest.raises(ValueError, match="replacement"):
        so.noise.Minibatch(batch_size=4, replacement="yes")
    prob = _problem("label")
    opt = so.discrete.DSGD(lr=0.1, n_workers=3, noise=so.noise.Minibatch(batch_size=10_000))
    with pytest.raises(ValueError, match="batch_size"):
        so.dynamics.sde_of(opt, prob)


def test_dsgd_minibatch_weak_error_against_its_first_order_sde_falls_with_the_lr():
    """Least squares, Gaussian design, b = 2 of 32 samples: the weak error of E f(x) at a fixed
    horizon (t = 0.8) between DSGD and its first-order SDE (Euler, 4 substeps) falls like lr
    (weak order 1): the log-log slope over lr = 0.16 .. 0.02 is at least 0.8, every error resolved
    beyond its Monte Carlo error (measured here: slope 0.85, errors 15-8 se)."""
    prob = so.problems.LeastSquares(n_samples=32, dim=2, noise=1.0)
    x0 = prob.minimizer + 1.0
    lrs = (0.16, 0.08, 0.04, 0.02)
    errors = []
    for lr in lrs:
        opt = so.discrete.DSGD(lr=lr, noise=so.noise.Minibatch(batch_size=2))
        n_steps = round(0.8 / lr)
        ds = so.analysis.compare(
            opt, prob, x0, n_steps=n_steps, n_runs=40_000, models=["first_order"], substeps=4,
            record_every=n_steps, seed=1,
        )  # fmt: skip
        final = ds["loss"].isel(step=-1)
        disc, sde = final.sel(model="discrete").values, final.sel(model="first_order").values
        err = abs(disc.mean() - sde.mean())
        se = math.sqrt(disc.var() / disc.size + sde.var() / sde.size)
        assert err > 5 * se, (lr, err, se)
        errors.append(err)
    slope = np.polyfit(np.log(lrs), np.log(errors), 1)[0]
    assert slope >= 0.8, (slope, errors)
