"""Compressors: laws checked by Monte Carlo against the exact mean and covariance.

Statistical checks use z * se with se computed from the sample size; z is chosen for the number
of checks in a test (Bonferroni), never tuned to a seed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest
import torch
from scipy import stats

from sdeopt import compressors as C
from sdeopt.compressors import QSGD, Identity, Natural, RandK, StructuredCov, TopK
from tests.conftest import rng_for

D = 6
#: a test vector with mixed signs and magnitudes, an exact power of two and a zero entry.
V = (1.3, -0.7, 0.0, 2.0, -3.1, 0.26)
N_MC = 200_000

UNBIASED = [
    Identity(),
    RandK(k=1),
    RandK(k=2),
    RandK(k=5),
    RandK(k=D),
    Natural(),
    QSGD(s=1),
    QSGD(s=4),
]
ALL = [*UNBIASED, TopK(k=1), TopK(k=3)]
#: the compressors whose output depends on the random stream (RandK with k = d is the identity)
RANDOM = [c for c in ALL if not isinstance(c, (Identity, TopK)) and c != RandK(k=D)]


def _id(c) -> str:
    return json.dumps(c.config(), sort_keys=True)


def _vec(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


_SAMPLES: dict[str, torch.Tensor] = {}


def _samples(comp) -> torch.Tensor:
    """N_MC independent draws of C(V), (N_MC, D), cached per compressor for this module."""
    key = _id(comp)
    if key not in _SAMPLES:
        v = _vec(*V).expand(N_MC, 1, D)  # (B, 1, d): one worker, B = N_MC draws
        _SAMPLES[key] = comp.compress(v, rng_for(N_MC, seed=7))[:, 0]
    return _SAMPLES[key]


# ---------------------------------------------------------------- unbiasedness and covariance


@pytest.mark.parametrize("comp", UNBIASED, ids=_id)
def test_unbiased_mean(comp):
    """mean over N_MC draws equals v within z * sqrt(Var / n), Var from cov(v) (exact)."""
    assert comp.unbiased
    x = _samples(comp)
    v = _vec(*V)
    var = comp.cov(v).diag
    z = 4.5  # ~50 coordinate checks in this test: family-wise error ~ 3e-4
    err = (x.mean(0) - v).abs()
    assert torch.all(err <= z * (var / N_MC).sqrt() + 1e-12), (err, var)


@pytest.mark.parametrize("comp", UNBIASED, ids=_id)
def test_exact_covariance(comp):
    """Empirical E[(C - v)(C - v)ᵀ] matches cov(v).dense() entry by entry within z * se."""
    x = _samples(comp)
    v = _vec(*V)
    r = x - v  # (n, d): centred at the exact mean, so the product mean is unbiased for Cov
    prods = r.unsqueeze(-1) * r.unsqueeze(-2)  # (n, d, d)
    emp = prods.mean(0)
    se = prods.std(0) / math.sqrt(N_MC)
    exact = comp.cov(v).dense()
    z = 5.0  # ~300 entries over all compressors: family-wise error ~ 2e-4
    assert torch.all((emp - exact).abs() <= z * se + 1e-12), (emp, exact)
    # entries of zero variance are exactly zero in the samples and in the formula
    assert torch.all(exact.diagonal()[se.diagonal() == 0] == 0)


@pytest.mark.parametrize("comp", UNBIASED, ids=_id)
def test_error_matches_trace_and_omega(comp):
    """E||C(v) - v||² = tr Cov (by Monte Carlo) and tr Cov <= omega ||v||²."""
    x = _samples(comp)
    v = _vec(*V)
    sq = (x - v).square().sum(-1)  # (n,)
    trace = comp.cov(v).trace()
    assert abs(sq.mean() - trace) <= 4.5 * sq.std() / math.sqrt(N_MC) + 1e-12
    assert trace <= comp.omega(D) * v.square().sum() * (1 + 1e-12)


@pytest.mark.parametrize("comp", ALL, ids=_id)
@pytest.mark.parametrize("low_rank", [False, True], ids=["isotropic", "diag+low-rank"])
def test_noisy_covariance_is_the_covariance_of_compressed_noisy_gradients(comp, low_rank):
    """Cov[C(g + Z)] by Monte Carlo over both draws, for Z ~ N(0, v I) and for
    Z ~ N(0, diag(D) + F Fᵀ) (minibatch-like noise), against ``noisy_cov``; a compressor without
    the closed form refuses with its own name (the SDE builders pass it on)."""
    g = _vec(*V)
    diag = torch.full((1, 1, D), 0.49, dtype=torch.float64)
    f = torch.linspace(-0.8, 0.9, 2 * D, dtype=torch.float64).view(1, 1, D, 2) if low_rank else None
    noise = (
        StructuredCov(diag=diag, factors=f, signs=(1.0, 1.0))
        if low_rank
        else StructuredCov.diagonal(diag)
    )
    try:
        cov = comp.noisy_cov(g.view(1, 1, D), noise)
    except ValueError as exc:
        assert type(comp).__name__ in str(exc)
        assert not comp.unbiased or not isinstance(comp, (Identity, RandK))
        return
    rng = rng_for(N_MC, seed=11)
    noisy = g + diag.sqrt()[0] * rng.normal(1, D)  # (B, 1, d)
    if low_rank:
        noisy = noisy + (f[0, 0] @ rng.normal(2).unsqueeze(-1)).squeeze(-1).unsqueeze(1)
    x = comp.compress(noisy, rng)[:, 0]  # (B, d)
    r = x - g  # unbiased: centred at the exact mean
    prods = r.unsqueeze(-1) * r.unsqueeze(-2)  # (B, d, d)
    emp, se = prods.mean(0), prods.std(0) / math.sqrt(N_MC)
    exact = cov.dense()[0, 0]
    assert torch.all((emp - exact).abs() <= 5.0 * se + 1e-12), (emp, exact)


# ---------------------------------------------------------------- omega, exactly


def _many_vectors(generator, d=D) -> torch.Tensor:
    """(M, d) test vectors: Gaussian, heavy-tailed, sparse, one-hot and constant."""
    g = torch.randn(500, d, generator=generator)
    heavy = (
        torch.randn(500, d, generator=generator) / torch.rand(500, d, generator=generator).square()
    )
    sparse = g * (torch.rand(500, d, generator=generator) < 0.3)
    onehot = torch.eye(d) * 3.7
    const = torch.full((3, d), -0.3)
    return torch.cat([g, heavy, sparse, onehot, const])


@pytest.mark.parametrize("comp", ALL, ids=_id)
@pytest.mark.parametrize("d", [1, 6, 37])
def test_omega_bound_exact(comp, d, generator):
    """tr Cov[C(v)] (unbiased) or ||C(v) - v||² (TopK) <= omega ||v||² over many v."""
    if getattr(comp, "k", 1) > d:
        pytest.skip("k > d")
    v = _many_vectors(generator, d)
    norm2 = v.square().sum(-1)
    if comp.unbiased:
        err = comp.cov(v).trace()
    else:
        err = (comp.compress(v.unsqueeze(0), rng_for(1)) - v).square().sum(-1)[0]
    assert torch.all(err <= comp.omega(d) * norm2 * (1 + 1e-12) + 1e-300)


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_randk_omega_is_attained(k, generator):
    v = _many_vectors(generator)
    assert RandK(k=k).omega(D) == pytest.approx(D / k - 1)
    torch.testing.assert_close(RandK(k=k).cov(v).trace(), (D / k - 1) * v.square().sum(-1))


def test_natural_omega_is_attained():
    """|v| = (4/3) 2^a gives Var / v² = (2/3)(1/3)/(16/9) = 1/8 exactly."""
    v = _vec(4 / 3, -8 / 3, 4 / 3 * 2.0**-20)
    torch.testing.assert_close(Natural().cov(v).diag, v.square() / 8)
    assert Natural().omega(10) == 0.125


def test_qsgd_omega_formula():
    assert QSGD(s=1).omega(16) == 4.0  # min(16, 4)
    assert QSGD(s=8).omega(16) == 0.25  # min(1/4, 1/2)


def test_randk_single_coordinate_is_identity():
    """d = 1, k = 1: c = (d-k)/(k(d-1)) is 0/0; the compressor is the identity, Cov = 0."""
    v = _vec(2.5).reshape(1, 1, 1)
    assert RandK(k=1).omega(1) == 0.0
    assert torch.equal(RandK(k=1).compress(v, rng_for(1)), v)
    assert torch.equal(RandK(k=1).cov(v).dense(), torch.zeros(1, 1, 1, 1))


# ---------------------------------------------------------------- structured covariance


@pytest.mark.parametrize("comp", ALL, ids=_id)
def test_structured_cov_matvec_trace_and_batching(comp, generator):
    v = torch.randn(4, 3, D, generator=generator)  # (B, N, d)
    w = torch.randn(4, 3, D, generator=generator)
    cov = comp.cov(v)
    assert cov.diag.shape == (4, 3, D) and cov.factors.shape[:-1] == (4, 3, D)
    dense = cov.dense()  # (4, 3, d, d)
    torch.testing.assert_close(cov.matvec(w), (dense @ w.unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(cov.trace(), dense.diagonal(dim1=-2, dim2=-1).sum(-1))
    torch.testing.assert_close(dense, dense.transpose(-1, -2))
    assert torch.linalg.eigvalsh(dense).min() >= -1e-10  # a covariance is PSD
    # batched equals one at a time, and a bare (d,) vector works
    torch.testing.assert_close(comp.cov(v[2, 1]).dense(), dense[2, 1])


def test_structured_cov_rejects_mismatched_signs():
    with pytest.raises(ValueError, match="signs"):
        StructuredCov(diag=torch.ones(3), factors=torch.ones(3, 1), signs=())


def test_randk_cov_formula_dense():
    """cov(v).dense() = c (d diag(v)² - v vᵀ), c = (d-k)/(k(d-1)), written out densely."""
    v = _vec(*V)
    for k in range(1, D + 1):
        c = (D - k) / (k * (D - 1))
        expected = c * (D * torch.diag(v.square()) - torch.outer(v, v))
        torch.testing.assert_close(RandK(k=k).cov(v).dense(), expected)


# ---------------------------------------------------------------- RandK sampling


@pytest.mark.parametrize("floyd_max", [C.FLOYD_MAX_DRAWS, 0], ids=["floyd", "topk-keys"])
@pytest.mark.parametrize("k", [1, 2, 3, 5, 6])
def test_randk_keeps_k_with_probability_k_over_d(k, floyd_max, monkeypatch):
    monkeypatch.setattr(C, "FLOYD_MAX_DRAWS", floyd_max)
    n_runs, n_workers = 20_000, 3
    v = torch.arange(1.0, D + 1).expand(n_runs, n_workers, D)  # (B, N, d), no zero entries
    out = RandK(k=k).compress(v, rng_for(n_runs, seed=3))
    kept = out != 0
    assert torch.all(kept.sum(-1) == k)  # exactly k per (run, worker)
    torch.testing.assert_close(out[kept], (v * (D / k))[kept])  # scaled by d/k
    freq = kept.double().mean((0, 1))
    p = k / D
    se = math.sqrt(p * (1 - p) / (n_runs * n_workers))
    assert torch.all((freq - p).abs() <= 4.0 * se + 1e-12), freq


@pytest.mark.parametrize("floyd_max", [C.FLOYD_MAX_DRAWS, 0], ids=["floyd", "topk-keys"])
@pytest.mark.parametrize("k", [2, 3])
def test_randk_subsets_are_uniform(k, floyd_max, monkeypatch):
    """All binom(5, k) subsets are equally likely (chi-square, alpha = 1e-4)."""
    monkeypatch.setattr(C, "FLOYD_MAX_DRAWS", floyd_max)
    d, n = 5, 50_000
    mask = RandK(k=k).keep_mask(rng_for(n, seed=11), (), d)  # (n, d)
    assert mask.shape == (n, d)
    codes = (mask.long() * (2 ** torch.arange(d))).sum(-1)
    subsets = [sum(2**j for j in s) for s in itertools.combinations(range(d), k)]
    counts = torch.stack([(codes == s).sum() for s in subsets]).double()
    assert counts.sum() == n
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4


def test_randk_large_dimension_uses_topk_keys():
    """min(k, d-k) > FLOYD_MAX_DRAWS: exact k per row and inclusion probability k/d."""
    d, k, n = 200, 100, 2_000
    assert min(k, d - k) > C.FLOYD_MAX_DRAWS
    mask = RandK(k=k).keep_mask(rng_for(n), (1,), d)  # (n, 1, d)
    assert torch.all(mask.sum(-1) == k)
    freq = mask.double().mean((0, 1))
    assert abs(freq.mean() - 0.5) < 1e-12  # exactly k of d kept in every row
    assert torch.all((freq - 0.5).abs() <= 5.0 * math.sqrt(0.25 / n))


# ---------------------------------------------------------------- Natural and QSGD supports


def test_natural_rounds_to_neighbouring_powers_of_two(generator):
    exponents = torch.randint(-30, 30, (50, 4, 9), generator=generator)
    v = torch.randn(50, 4, 9, generator=generator) * 10.0**exponents  # (B, N, d), wide range
    out = Natural().compress(v, rng_for(50))
    a = torch.floor(torch.log2(v.abs()))  # 2^a <= |v| < 2^{a+1}
    a = torch.where(2.0 ** (a + 1) <= v.abs(), a + 1, a)  # guard log2 rounding
    a = torch.where(2.0**a > v.abs(), a - 1, a)
    low = torch.sign(v) * 2.0**a
    assert torch.all((out == low) | (out == 2 * low))
    exact = v == low  # powers of two are never moved
    assert torch.all(out[exact] == v[exact])


def test_natural_float32():
    v = torch.tensor([[[0.3, -5.0, 0.0, 1e-3]]], dtype=torch.float32)
    out = Natural().compress(v, rng_for(1, dtype=torch.float32))
    assert out.dtype == torch.float32
    nz = out[out != 0].abs()
    assert out[0, 0, 2] == 0 and nz.numel() == 3
    assert torch.all(torch.frexp(nz).mantissa == 0.5)  # signed powers of two


@pytest.mark.parametrize("s", [1, 3])
def test_qsgd_output_on_the_level_grid(s, generator):
    v = torch.randn(100, 2, 7, generator=generator)
    out = QSGD(s=s).compress(v, rng_for(100))
    norm = v.norm(dim=-1, keepdim=True)
    xi = out.abs() * s / norm
    r = v.abs() * s / norm
    torch.testing.assert_close(xi, xi.round())
    assert torch.all((xi.round() == r.floor()) | (xi.round() == r.floor() + 1))
    assert torch.all((out == 0) | (torch.sign(out) == torch.sign(v)))


# ---------------------------------------------------------------- TopK


def test_topk_keeps_the_largest(generator):
    v = torch.randn(30, 4, 8, generator=generator)  # continuous: no ties
    for k in (1, 3, 8):
        out = TopK(k=k).compress(v, rng_for(30))
        kept = out != 0
        assert torch.all(kept.sum(-1) == k)
        torch.testing.assert_close(out[kept], v[kept])
        smallest_kept = torch.where(kept, v.abs(), math.inf).amin(-1)
        largest_dropped = torch.where(kept, -math.inf, v.abs()).amax(-1)
        assert torch.all(smallest_kept > largest_dropped)
    assert not TopK(k=2).unbiased
    assert TopK(k=2).omega(8) == 0.75
    assert torch.equal(TopK(k=2).cov(v).dense(), torch.zeros(30, 4, 8, 8))


# ---------------------------------------------------------------- contract: shapes, seeds, zeros


@pytest.mark.parametrize("comp", ALL, ids=_id)
def test_shapes_dtype_device_and_seeds(comp, device):
    v = torch.randn(10, 3, D, generator=torch.Generator().manual_seed(0)).to(device)
    out = comp.compress(v, rng_for(10, seed=5, device=device))
    assert out.shape == v.shape and out.dtype == v.dtype and out.device == v.device
    again = comp.compress(v, rng_for(10, seed=5, device=device))
    assert torch.equal(out, again)  # same seed, same output
    if comp in RANDOM:
        other = comp.compress(v, rng_for(10, seed=6, device=device))
        assert not torch.equal(out, other)


@pytest.mark.parametrize("comp", RANDOM, ids=_id)
def test_row_of_batch_equals_run_alone(comp):
    """With block_size = 1, run b drawn alone reproduces row b of a batch (chunk invariance)."""
    from sdeopt.random import RandomSource

    v = torch.randn(6, 2, D, generator=torch.Generator().manual_seed(1))
    full = comp.compress(v, RandomSource(9, 6, block_size=1))
    for b in (0, 4):
        alone = comp.compress(v[b : b + 1], RandomSource(9, 1, first_run=b, block_size=1))
        assert torch.equal(alone[0], full[b])


@pytest.mark.parametrize("comp", ALL, ids=_id)
def test_zero_vector(comp):
    v = torch.zeros(5, 2, D)
    out = comp.compress(v, rng_for(5))
    assert torch.equal(out, v)
    assert torch.equal(comp.cov(v).dense(), torch.zeros(5, 2, D, D))


def test_identity_returns_input():
    v = torch.randn(2, 3, 4)
    assert Identity().compress(v, rng_for(2)) is v
    assert Identity().omega(4) == 0.0 and Identity().cov(v).rank == 0


# ---------------------------------------------------------------- config and bad input


@pytest.mark.parametrize("comp", ALL, ids=_id)
def test_config_is_json_and_complete(comp):
    cfg = comp.config()
    assert cfg["type"] == type(comp).__name__
    assert json.loads(json.dumps(cfg)) == cfg
    params = {k: v for k, v in cfg.items() if k != "type"}
    assert type(comp)(**params) == comp


def test_frozen_and_keyword_only():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RandK(k=2).k = 3
    with pytest.raises(TypeError):
        RandK(2)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: RandK(k=0), "Invalid k: 0"),
        (lambda: RandK(k=-1), "Invalid k: -1"),
        (lambda: RandK(k=2.5), "Invalid k: 2.5"),
        (lambda: RandK(k=True), "Invalid k: True"),
        (lambda: TopK(k=0), "Invalid k: 0"),
        (lambda: QSGD(s=0), "Invalid s: 0"),
        (lambda: QSGD(s=1.5), "Invalid s: 1.5"),
    ],
)
def test_bad_hyperparameters(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("comp", [RandK(k=7), TopK(k=7)], ids=_id)
def test_k_larger_than_dim(comp):
    with pytest.raises(ValueError, match=r"Invalid k: 7 .*d = 6"):
        comp.check_dim(6)
    with pytest.raises(ValueError, match="Invalid k: 7"):
        comp.omega(6)
    with pytest.raises(ValueError, match="Invalid k: 7"):
        comp.compress(torch.ones(2, 1, 6), rng_for(2))
    with pytest.raises(ValueError, match="Invalid k: 7"):
        comp.cov(torch.ones(6))
    comp.check_dim(7)  # k = d is fine
