"""Tests of sdeopt.problems: values, derivatives, minimisers, splits, minibatches, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import norm

from sdeopt.problems import (
    CoshSum,
    DoubleWell,
    ExpSum,
    FiniteSumProblem,
    FunctionProblem,
    LeastSquares,
    LogisticRegression,
    Quadratic,
    QuadraticQuartic,
    Quartic,
    StreamingLeastSquares,
)
from tests.conftest import rng_for

# torch.func.jvp loads torch's own jit-scripted decompositions, which warn on torch >= 2.10
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


def _spd(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T + 0.5 * torch.eye(d, dtype=torch.float64)


def _rosenbrock(x):
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def _z(n_checks: int, alpha: float = 1e-3) -> float:
    """Two-sided z for n_checks simultaneous checks at family-wise level alpha (Bonferroni)."""
    return float(norm.ppf(1 - alpha / (2 * n_checks)))


# One table drives the generic tests: name -> (factory, scale of test points).
PROBLEMS = {
    "quadratic_diag": (lambda: Quadratic(diag=[1.0, 4.0, 0.5], center=[0.3, -1.0, 2.0]), 1.0),
    "quadratic_dense": (lambda: Quadratic(matrix=_spd(4), center=[1.0, 0.0, -1.0, 2.0]), 1.0),
    "quartic": (lambda: Quartic(3), 1.0),
    "coshsum": (lambda: CoshSum(3), 1.0),
    "expsum": (lambda: ExpSum(3), 1.0),
    "quadratic_quartic": (lambda: QuadraticQuartic(3), 1.0),
    "double_well": (lambda: DoubleWell(width=1.5, dim=3), 2.0),
    "streaming": (
        lambda: StreamingLeastSquares.power_law(3, 1.0, x_star=[0.1, -0.2, 0.3]),
        1.0,
    ),
    "logreg_homogeneous": (lambda: LogisticRegression(), 0.3),
    "logreg_label": (lambda: LogisticRegression(3, split="label"), 0.3),
    "leastsq_gaussian": (lambda: LeastSquares(3, n_samples=90, dim=4, reg=0.1), 1.0),
    "leastsq_diabetes": (lambda: LeastSquares(design="diabetes"), 0.3),
    "function": (lambda: FunctionProblem(_rosenbrock, dim=3, minimizer=[1.0, 1.0, 1.0]), 1.0),
}


@pytest.fixture(scope="module")
def problems():
    return {name: factory() for name, (factory, _) in PROBLEMS.items()}


def _points(prob, scale, generator, n_runs=5):
    x = scale * torch.randn(n_runs, prob.dim, generator=generator)  # (B, d)
    v = torch.randn(n_runs, prob.dim, generator=generator)  # (B, d)
    return x, v


# ---------------------------------------------------------------------------------------------
# Generic contract over every problem
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROBLEMS)
def test_shapes_and_grad_matches_autograd(problems, name, generator):
    prob = problems[name]
    x, _ = _points(prob, PROBLEMS[name][1], generator)
    assert prob.loss(x).shape == (5,)
    assert prob.grad(x).shape == (5, prob.dim)
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(prob.loss(xr).sum(), xr)
    torch.testing.assert_close(prob.grad(x), auto, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", PROBLEMS)
def test_hvp_matches_explicit_hessian(problems, name, generator):
    prob = problems[name]
    x, v = _points(prob, PROBLEMS[name][1], generator, n_runs=3)
    hv = prob.hvp(x, v)
    assert hv.shape == v.shape
    for b in range(x.shape[0]):  # reference only: one explicit Hessian per test point
        hess = torch.autograd.functional.hessian(lambda y: prob.loss(y.unsqueeze(0))[0], x[b])
        torch.testing.assert_close(hv[b], hess @ v[b], rtol=1e-9, atol=1e-10)
    # and the directional derivative of the gradient, by central differences
    eps = 1e-6
    fd = (prob.grad(x + eps * v) - prob.grad(x - eps * v)) / (2 * eps)
    torch.testing.assert_close(hv, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", PROBLEMS)
def test_minimizer(problems, name):
    prob = problems[name]
    if prob.minimizer is None:
        assert prob.min_value is None
        return
    x = prob.minimizer.unsqueeze(0)  # (1, d)
    assert prob.grad(x).abs().max() < 1e-10
    assert prob.loss(x).item() == pytest.approx(prob.min_value, rel=1e-12, abs=1e-14)
    # a minimum: nearby points are not lower
    g = torch.Generator().manual_seed(5)
    near = x + 1e-3 * torch.randn(20, prob.dim, generator=g)
    assert (prob.loss(near) >= prob.min_value - 1e-12).all()


@pytest.mark.parametrize("name", PROBLEMS)
def test_float32_and_to(problems, name, generator):
    prob = problems[name]
    x, v = _points(prob, PROBLEMS[name][1], generator)
    p32 = prob.to("cpu", torch.float32)
    assert prob.to("cpu", torch.float64) is prob
    for k, t in vars(p32).items():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            assert t.dtype == torch.float32, k
    x32, v32 = x.float(), v.float()
    for method, args64, args32 in [
        ("loss", (x,), (x32,)),
        ("grad", (x,), (x32,)),
        ("hvp", (x, v), (x32, v32)),
        ("worker_grads", (x,), (x32,)),
    ]:
        out32 = getattr(p32, method)(*args32)
        assert out32.dtype == torch.float32, method
        torch.testing.assert_close(
            out32.double(), getattr(prob, method)(*args64), rtol=1e-3, atol=1e-3
        )
    # the original is untouched
    assert all(t.dtype != torch.float32 for t in vars(prob).values() if isinstance(t, torch.Tensor))


@pytest.mark.parametrize("name", PROBLEMS)
def test_config_is_json(problems, name):
    cfg = problems[name].config()
    assert cfg["type"] == type(problems[name]).__name__
    assert cfg["dim"] == problems[name].dim
    json.dumps(cfg)


@pytest.mark.parametrize("name", PROBLEMS)
def test_worker_grads_mean_is_grad(problems, name, generator):
    prob = problems[name]
    x, _ = _points(prob, PROBLEMS[name][1], generator)
    wg = prob.worker_grads(x)
    n = prob.n_workers or 1
    assert wg.shape == (5, n, prob.dim)
    torch.testing.assert_close(wg.mean(dim=1), prob.grad(x), rtol=1e-10, atol=1e-13)


def test_cuda_device(device, generator):
    prob = Quadratic(diag=[1.0, 2.0]).to(device, torch.float64)
    x = torch.ones(4, 2, device=device)
    assert prob.grad(x).device.type == torch.device(device).type
    lr = LogisticRegression(2, split="label").to(device, torch.float32)
    out = lr.minibatch_worker_grads(x.new_zeros(4, lr.dim).float(), 3, 2, rng_for(4, device=device))
    assert out.shape == (4, 2, lr.dim) and out.device.type == torch.device(device).type


# ---------------------------------------------------------------------------------------------
# Quadratic
# ---------------------------------------------------------------------------------------------


def test_quadratic_values():
    prob = Quadratic(diag=[1.0, 4.0], center=[1.0, -1.0])
    x = torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(prob.loss(x), torch.tensor([0.0, 2.5, 8.5]))
    torch.testing.assert_close(prob.grad(x), torch.tensor([[0.0, 0.0], [1.0, 4.0], [-1.0, 8.0]]))
    torch.testing.assert_close(prob.hessian, torch.diag(torch.tensor([1.0, 4.0])))
    torch.testing.assert_close(prob.eigenvalues, torch.tensor([1.0, 4.0]))
    assert prob.smoothness == 4.0 and prob.min_value == 0.0


def test_quadratic_dense_equals_diagonal_in_rotated_frame(generator):
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=generator))
    lam = torch.tensor([0.5, 1.0, 2.0, 7.0])
    dense = Quadratic(matrix=q @ torch.diag(lam) @ q.T)
    diag = Quadratic(diag=lam)
    x = torch.randn(6, 4, generator=generator)
    torch.testing.assert_close(dense.loss(x), diag.loss(x @ q))
    torch.testing.assert_close(dense.grad(x) @ q, diag.grad(x @ q))
    torch.testing.assert_close(dense.eigenvalues, lam)
    torch.testing.assert_close(dense.hessian, q @ torch.diag(lam) @ q.T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_diagonal_rows_equal_single_runs_exactly(dtype, generator):
    prob = Quadratic(
        diag=torch.rand(17, generator=generator) + 0.1, center=torch.randn(17, generator=generator)
    ).to("cpu", dtype)
    x = torch.randn(64, 17, generator=generator).to(dtype)
    v = torch.randn(64, 17, generator=generator).to(dtype)
    loss, grad, hvp = prob.loss(x), prob.grad(x), prob.hvp(x, v)
    for b in [0, 1, 31, 63]:
        assert torch.equal(prob.loss(x[b : b + 1])[0], loss[b])
        assert torch.equal(prob.grad(x[b : b + 1])[0], grad[b])
        assert torch.equal(prob.hvp(x[b : b + 1], v[b : b + 1])[0], hvp[b])
        assert torch.equal(prob.grad(x[: b + 1])[b], grad[b])  # any batch size


def test_separable_values():
    x = torch.tensor([[0.0, 1.0, -2.0]])
    assert Quartic(3).loss(x).item() == pytest.approx(0.25 * (1 + 16))
    assert CoshSum(3).loss(x).item() == pytest.approx(np.cosh(1) + np.cosh(2) - 2, rel=1e-14)
    assert ExpSum(3).loss(x).item() == pytest.approx(1 + np.e + np.exp(-2))
    # no cancellation near the minimiser
    assert CoshSum(1).loss(torch.tensor([[1e-9]])).item() == pytest.approx(0.5e-18, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# LogisticRegression
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logreg_label():
    return LogisticRegression(4, split="label")


@pytest.fixture(scope="module")
def logreg_dirichlet():
    return LogisticRegression(4, split="dirichlet", alpha=0.3, seed=2)  # shards 253, 85, 142, 89


def test_logreg_data_and_loss_at_zero():
    prob = LogisticRegression()
    assert prob.dim == 31 and prob.n_samples == 569 and prob.n_workers is None
    assert set(prob.labels.tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(prob.features[:, :30].mean(0), torch.zeros(30), atol=1e-12, rtol=0)
    torch.testing.assert_close(prob.features[:, :30].std(0, unbiased=False), torch.ones(30))
    assert prob.loss(torch.zeros(1, 31)).item() == pytest.approx(np.log(2), rel=1e-14)
    assert not prob.heterogeneous
    no_icpt = LogisticRegression(fit_intercept=False)
    assert no_icpt.dim == 30


def test_logreg_matches_explicit_formula(generator):
    prob = LogisticRegression(3, split="iid", reg=0.01)
    x = 0.2 * torch.randn(4, prob.dim, generator=generator)
    a, y = prob.features, prob.labels
    f_i = []
    for i in range(3):  # reference: a plain loop over workers
        rows = prob.sample_worker == i
        f_i.append(
            torch.log1p(torch.exp(-y[rows] * (x @ a[rows].T))).mean(-1) + 0.005 * (x * x).sum(-1)
        )
    torch.testing.assert_close(prob.loss(x), torch.stack(f_i, 1).mean(1))


@pytest.mark.parametrize("split", ["iid", "label", "dirichlet"])
def test_logreg_loss_is_mean_of_worker_losses(split, generator):
    prob = LogisticRegression(5, split=split, seed=1)
    x = 0.3 * torch.randn(3, prob.dim, generator=generator)
    per = prob.per_sample_losses(x)  # (B, n)
    onehot = torch.nn.functional.one_hot(prob.sample_worker, 5).double()  # (n, N)
    f_i = (per @ onehot) / prob.shard_sizes  # (B, N)
    torch.testing.assert_close(prob.loss(x), f_i.mean(1), rtol=1e-13, atol=1e-14)
    # worker gradients are the gradients of the worker losses
    xr = x.clone().requires_grad_(True)
    fi = (prob.per_sample_losses(xr) @ onehot) / prob.shard_sizes
    auto = torch.stack(
        [torch.autograd.grad(fi[:, i].sum(), xr, retain_graph=True)[0] for i in range(5)], 1
    )  # reference loop over workers
    torch.testing.assert_close(prob.worker_grads(x), auto, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(prob.worker_grads(x).mean(1), prob.grad(x), rtol=1e-10, atol=1e-14)


def test_logreg_splits_partition_the_data(logreg_dirichlet):
    for prob in [
        LogisticRegression(7, split="iid"),
        LogisticRegression(7, split="label"),
        logreg_dirichlet,
    ]:
        sizes = torch.bincount(prob.sample_worker, minlength=prob.n_workers)
        assert torch.equal(sizes, prob.shard_sizes) and int(sizes.sum()) == prob.n_samples
        assert sizes.min() >= 1
        real = prob.shard_index[prob.shard_mask.bool()]
        assert torch.equal(torch.sort(real).values, torch.arange(prob.n_samples))
        assert torch.allclose(prob.sample_weights.sum(), torch.tensor(1.0))
    assert (
        LogisticRegression(7, split="iid").shard_sizes.max()
        - LogisticRegression(7).shard_sizes.min()
        <= 1
    )


def test_logreg_split_seeded():
    a, b = LogisticRegression(4, seed=5), LogisticRegression(4, seed=5)
    assert torch.equal(a.sample_worker, b.sample_worker)
    assert not torch.equal(a.sample_worker, LogisticRegression(4, seed=6).sample_worker)


def test_label_split_is_heterogeneous(logreg_label):
    iid = LogisticRegression(4, split="iid")
    # label shares per worker: sorted split gives pure-label workers
    share = lambda p: torch.stack(
        [(p.labels[p.sample_worker == i] > 0).double().mean() for i in range(4)]
    )
    assert share(logreg_label).min() == 0.0 and share(logreg_label).max() == 1.0
    assert (share(iid) - share(iid).mean()).abs().max() < 0.1
    # at x = 0 the intercept component of ∇f_i is -mean(y_s)/2 over the shard: ±1/2 on the
    # pure-label workers, near the global -mean(y)/2 for every iid worker
    x = torch.zeros(1, logreg_label.dim)
    icpt = lambda p: p.worker_grads(x)[0, :, -1]  # (N,)
    assert icpt(logreg_label).max().item() == pytest.approx(0.5)
    assert icpt(logreg_label).min().item() == pytest.approx(-0.5)
    assert (icpt(iid) - iid.grad(x)[0, -1]).abs().max() < 0.1
    spread = lambda p: (p.worker_grads(x) - p.grad(x).unsqueeze(1)).norm(dim=-1).mean()
    assert spread(logreg_label) > 2 * spread(iid)


def test_digits_dataset():
    prob = LogisticRegression(3, dataset="digits", split="label")
    assert prob.dim == 65 and prob.n_samples == 1797
    assert torch.isfinite(prob.features).all()
    assert prob.grad(prob.minimizer.unsqueeze(0)).abs().max() < 1e-10


def test_minimizer_is_unique_optimum_against_gradient_descent():
    prob = LogisticRegression(reg=0.2)  # condition number L / reg ≈ 18
    x = torch.zeros(1, prob.dim)
    for _ in range(1000):  # reference: plain gradient descent with step 1/L
        x = x - prob.grad(x) / prob.smoothness
    torch.testing.assert_close(x[0], prob.minimizer, atol=1e-8, rtol=0)


def test_per_sample_grads_match_autograd(logreg_label, generator):
    x = 0.2 * torch.randn(2, logreg_label.dim, generator=generator)
    g = logreg_label.per_sample_grads(x)  # (B, n, d)
    assert g.shape == (2, 569, logreg_label.dim)
    xr = x.clone().requires_grad_(True)
    for s in [0, 100, 568]:
        (auto,) = torch.autograd.grad(logreg_label.per_sample_losses(xr)[:, s].sum(), xr)
        torch.testing.assert_close(g[:, s], auto)
    # the generic contraction of the base class agrees with the specialised one
    w = (
        torch.rand(2, 4, logreg_label.shard_index.shape[1], generator=generator)
        * logreg_label.shard_mask
    )
    torch.testing.assert_close(
        FiniteSumProblem._weighted_grads(logreg_label, x, w), logreg_label._weighted_grads(x, w)
    )
    torch.testing.assert_close(FiniteSumProblem.grad(logreg_label, x), logreg_label.grad(x))
    torch.testing.assert_close(FiniteSumProblem.loss(logreg_label, x), logreg_label.loss(x))


# -- minibatches ---------------------------------------------------------------------------------


def test_minibatch_indices_distinct_and_in_shard(logreg_dirichlet):
    prob, b = logreg_dirichlet, 20
    idx = prob.minibatch_indices(b, 4, rng_for(50))  # (B, N, b)
    assert idx.shape == (50, 4, b)
    srt = torch.sort(idx, dim=-1).values
    assert (srt[..., 1:] != srt[..., :-1]).all()  # without replacement
    owner = prob.sample_worker[idx]  # (B, N, b)
    assert (owner == torch.arange(4).view(1, 4, 1)).all()


def test_minibatch_full_shard_is_exact_worker_grad(logreg_label, logreg_dirichlet, generator):
    x = 0.3 * torch.randn(3, logreg_label.dim, generator=generator)
    # label shards are 143, 142, 142, 142: a batch of 142 is the whole shard of workers 1-3
    assert logreg_label.shard_sizes.tolist() == [143, 142, 142, 142]
    g = logreg_label.minibatch_worker_grads(x, 142, 4, rng_for(3))
    torch.testing.assert_close(
        g[:, 1:], logreg_label.worker_grads(x)[:, 1:], rtol=1e-12, atol=1e-14
    )
    same = LogisticRegression(1, split="iid")  # one worker holding everything
    g = same.minibatch_worker_grads(x, 569, 1, rng_for(3))
    torch.testing.assert_close(g, same.worker_grads(x), rtol=1e-12, atol=1e-14)
    # the smallest Dirichlet shard (85 samples) used whole
    g = logreg_dirichlet.minibatch_worker_grads(x, 85, 4, rng_for(3))
    torch.testing.assert_close(
        g[:, 1], logreg_dirichlet.worker_grads(x)[:, 1], rtol=1e-12, atol=1e-14
    )
    homo = LogisticRegression()
    g = homo.minibatch_worker_grads(x, 569, 3, rng_for(3))
    assert g.shape == (3, 3, homo.dim)
    torch.testing.assert_close(
        g, homo.grad(x).unsqueeze(1).expand(-1, 3, -1), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("name", ["label", "homogeneous"])
def test_minibatch_unbiased_and_covariance(logreg_label, name, generator):
    prob = logreg_label if name == "label" else LogisticRegression()
    n_workers, b, m = 4, 8, 4000
    x = (0.3 * torch.randn(prob.dim, generator=generator)).expand(m, -1)  # (M, d), one point
    g = prob.minibatch_worker_grads(x, b, n_workers, rng_for(m, seed=11))  # (M, N, d)
    exact = prob.worker_grads(x[:1]).expand(1, n_workers, -1)[0]  # (N, d)
    mean, se = g.mean(0), g.std(0) / m**0.5
    assert (se > 0).all()
    assert ((mean - exact).abs() <= _z(exact.numel()) * se).all()
    # E ||g_i - ∇f_i||² = tr Cov(g_i), with the finite-population correction
    cov = prob.minibatch_covariance(x[:1], b)[0]  # (N or 1, d, d)
    sq = ((g - exact) ** 2).sum(-1)  # (M, N)
    tr = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1).expand(n_workers)  # (N,)
    assert ((sq.mean(0) - tr).abs() <= _z(n_workers) * sq.std(0) / m**0.5).all()


def test_minibatch_covariance_exact_cases(logreg_label, generator):
    prob = logreg_label
    x = 0.3 * torch.randn(2, prob.dim, generator=generator)
    g = prob.per_sample_grads(x)  # (B, n, d)
    cov1 = prob.minibatch_covariance(x, 1)  # (B, N, d, d)
    for i in range(4):  # reference: numpy population covariance per worker
        rows = (prob.sample_worker == i).numpy()
        ref = np.cov(g[0, rows].numpy(), rowvar=False, bias=True)
        np.testing.assert_allclose(cov1[0, i].numpy(), ref, rtol=1e-10, atol=1e-14)
    full = LogisticRegression(2, split="label")
    assert full.shard_sizes.tolist() == [285, 284]
    c = full.minibatch_covariance(x, 284)
    assert c[:, 1].abs().max() == 0  # the whole shard: no noise
    assert c[:, 0].abs().max() > 0


def test_minibatch_reproducible_and_dtype_independent(logreg_label, generator):
    prob = logreg_label
    a = prob.minibatch_indices(5, 4, rng_for(8, seed=3))
    assert torch.equal(a, prob.minibatch_indices(5, 4, rng_for(8, seed=3)))
    assert not torch.equal(a, prob.minibatch_indices(5, 4, rng_for(8, seed=4)))
    assert torch.equal(a, prob.minibatch_indices(5, 4, rng_for(8, seed=3, dtype=torch.float32)))
    x = 0.3 * torch.randn(8, prob.dim, generator=generator)
    g64 = prob.minibatch_worker_grads(x, 5, 4, rng_for(8, seed=3))
    g32 = prob.to("cpu", torch.float32).minibatch_worker_grads(
        x.float(), 5, 4, rng_for(8, seed=3, dtype=torch.float32)
    )
    assert g32.dtype == torch.float32
    torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-5)
    # the batch of run b does not depend on the other runs (one generator per run)
    one = prob.minibatch_indices(5, 4, rng_for(8, seed=3, block_size=1))
    assert torch.equal(
        one[2:4], prob.minibatch_indices(5, 4, rng_for(8, seed=3, block_size=1))[2:4]
    )


# ---------------------------------------------------------------------------------------------
# FunctionProblem
# ---------------------------------------------------------------------------------------------


def test_function_problem_matches_quadratic(generator):
    h = _spd(3, seed=4)
    fn = lambda x: 0.5 * x @ h @ x
    prob = FunctionProblem(fn, dim=3, minimizer=torch.zeros(3))
    ref = Quadratic(matrix=h)
    x, v = torch.randn(5, 3, generator=generator), torch.randn(5, 3, generator=generator)
    torch.testing.assert_close(prob.loss(x), ref.loss(x))
    torch.testing.assert_close(prob.grad(x), ref.grad(x))
    torch.testing.assert_close(prob.hvp(x, v), ref.hvp(x, v))
    assert prob.min_value == 0.0
    assert FunctionProblem(fn, dim=3, min_value=0).min_value == 0.0


@pytest.mark.parametrize(
    "fn, name",
    [
        (_rosenbrock, f"{__name__}._rosenbrock"),
        (lambda x: (x * x).sum(), f"{__name__}.<lambda>"),
    ],
)
def test_function_problem_is_recorded_by_name_in_every_dataset(fn, name, tmp_path):
    """f is code: configs name it and are marked not reproducible; simulate's and compare's
    datasets carry that and survive netCDF."""
    import xarray as xr

    import sdeopt as so

    prob = FunctionProblem(fn, dim=2)
    record = {"callable": name, "reproducible": False}
    assert prob.config()["fn"] == record and prob.config()["reproducible"] is False
    opt = so.discrete.DSGD(lr=0.01, noise=so.noise.Gaussian(scale=0.1))
    datasets = {
        "simulate": so.discrete.simulate(opt, prob, [0.5, 0.5], n_steps=3, n_runs=4).to_dataset(),
        "compare": so.analysis.compare(opt, prob, [0.5, 0.5], n_steps=3, n_runs=4),
    }
    for key, ds in datasets.items():
        cfg = json.loads(ds.attrs["config"])["problem"]
        assert (
            cfg["fn"] == record
            and cfg["reproducible"] is False
            and cfg["type"] == "FunctionProblem"
        ), key
        ds.to_netcdf(tmp_path / f"{key}.nc")
        xr.testing.assert_identical(ds, xr.load_dataset(tmp_path / f"{key}.nc"))
    assert datasets["simulate"].attrs["reproducible"] == 0


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

BAD = [
    ("matrix", lambda: Quadratic(matrix=[[1.0, 2.0], [2.0, 1.0]])),  # indefinite
    ("matrix", lambda: Quadratic(matrix=[[1.0, 0.5], [0.0, 1.0]])),  # not symmetric
    ("matrix", lambda: Quadratic(matrix=[[1.0, 0.0, 0.0]])),  # not square
    ("matrix", lambda: Quadratic(matrix=[[float("nan")]])),
    ("diag", lambda: Quadratic(diag=[1.0], matrix=[[1.0]])),
    ("diag", lambda: Quadratic()),
    ("diag", lambda: Quadratic(diag=[1.0, -1.0])),
    ("diag", lambda: Quadratic(diag=[1.0, 0.0])),
    ("diag", lambda: Quadratic(diag=[])),
    ("diag", lambda: Quadratic(diag="ab")),
    ("center", lambda: Quadratic(diag=[1.0, 2.0], center=[0.0])),
    ("center", lambda: Quadratic(diag=[1.0], center=[float("inf")])),
    ("dim", lambda: Quartic(0)),
    ("dim", lambda: CoshSum(-1)),
    ("dim", lambda: ExpSum(2.5)),
    ("dim", lambda: FunctionProblem(lambda x: x.sum(), dim=0)),
    ("fn", lambda: FunctionProblem(lambda x: x, dim=2)),  # not a scalar
    ("fn", lambda: FunctionProblem(lambda x: x[5], dim=2)),  # raises
    ("fn", lambda: FunctionProblem(3, dim=2)),
    ("minimizer", lambda: FunctionProblem(lambda x: x.sum(), dim=2, minimizer=[0.0])),
    ("min_value", lambda: FunctionProblem(lambda x: x.sum(), dim=2, min_value="low")),
    ("split", lambda: LogisticRegression(2, split="random")),
    ("split", lambda: LogisticRegression(2, split=["iid"])),
    ("n_workers", lambda: LogisticRegression(0)),
    ("n_workers", lambda: LogisticRegression(10_000)),
    ("n_workers", lambda: LogisticRegression(True)),
    ("reg", lambda: LogisticRegression(reg=0.0)),
    ("dataset", lambda: LogisticRegression(dataset="mnist")),
    ("alpha", lambda: LogisticRegression(2, split="dirichlet", alpha=-1.0)),
    ("seed", lambda: LogisticRegression(2, seed=-1)),
    ("fit_intercept", lambda: LogisticRegression(fit_intercept="yes")),
]


@pytest.mark.parametrize("param,make", BAD, ids=[f"{p}-{i}" for i, (p, _) in enumerate(BAD)])
def test_bad_constructor_input(param, make):
    with pytest.raises(ValueError, match=param):
        make()


def test_bad_minibatch_and_worker_input(logreg_label):
    x = torch.zeros(2, logreg_label.dim)
    with pytest.raises(ValueError, match="batch_size"):
        logreg_label.minibatch_worker_grads(x, 143, 4, rng_for(2))  # label shards are 142/143
    with pytest.raises(ValueError, match="batch_size"):
        logreg_label.minibatch_worker_grads(x, 0, 4, rng_for(2))
    with pytest.raises(ValueError, match="batch_size"):
        LogisticRegression().minibatch_worker_grads(x, 570, 2, rng_for(2))
    with pytest.raises(ValueError, match="batch_size"):
        logreg_label.minibatch_covariance(x, 1000)
    with pytest.raises(ValueError, match="n_workers"):
        logreg_label.minibatch_worker_grads(x, 2, 3, rng_for(2))
    with pytest.raises(ValueError, match="n_workers"):
        LogisticRegression().minibatch_worker_grads(x, 2, 0, rng_for(2))
    with pytest.raises(ValueError, match="n_workers"):
        Quartic(2).check_workers(0)
    Quartic(2).check_workers(7)
    with pytest.raises(ValueError, match="dtype"):
        Quartic(2).to("cpu", torch.int64)
    with pytest.raises(ValueError, match="device"):
        Quartic(2).to("nonsense", torch.float32)


def test_double_well_shape_does_not_change_with_its_width():
    """Minima 0 at 0 and 2w with curvature 1, the barrier at w with height w²/8 and curvature
    -1/2, for every width (hand-computed values)."""
    for w in (0.5, 1.0, 3.0):
        prob = DoubleWell(width=w)
        x = torch.tensor([[0.0], [w], [2.0 * w]])
        assert prob.loss(x).tolist() == pytest.approx([0.0, w * w / 8.0, 0.0])
        assert prob.grad(x)[:, 0].tolist() == pytest.approx([0.0, 0.0, 0.0])
        assert prob.hvp(x, torch.ones_like(x))[:, 0].tolist() == pytest.approx([1.0, -0.5, 1.0])
    with pytest.raises(ValueError, match="Invalid width"):
        DoubleWell(width=0.0)
