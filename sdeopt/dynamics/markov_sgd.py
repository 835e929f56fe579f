"""The SDE of SGD with Markovian noise: the chain's asymptotic covariance drives it."""

from __future__ import annotations

import math

import torch

from sdeopt.discrete.markov_sgd import MarkovSGD, SingleSample
from sdeopt.dynamics.recipe import Moments, zero_derivative
from sdeopt.dynamics.sde import Diagonal
from sdeopt.problems import Problem


def moments(method: MarkovSGD, problem: Problem) -> Moments:
    r"""ū = ∇f and S = Σ_eff = s² σ_eff² I, σ_eff² = Σ_{j ∈ Z} Cov_π(h(Z_0), h(Z_j)).

    Over the many steps of one unit of SDE time the correlated noise sums like independent
    noise of variance Σ_eff (a Markov-chain central limit theorem), so the first-order model is
    dX = -eta_t ∇f dt + eta_t sqrt(eta) Σ_eff^{1/2} dW, valid when eta τ λ_max(∇²f) << 1
    (docs/models.md). The i.i.d. model (S = s² Var_π h) misses the factor (1 + rho)/(1 - rho).
    """
    if not isinstance(method.estimator, SingleSample):
        raise ValueError(
            f"Invalid estimator: {method.estimator!r} (an SDE model exists here for the "
            "single-sample estimator only)"
        )
    sigma2 = method.noise.asymptotic_variance
    if not math.isfinite(sigma2):
        raise ValueError(
            f"Invalid noise: {method.noise!r} does not mix (infinite asymptotic variance)"
        )
    std = method.noise.scale * math.sqrt(sigma2)

    def diffusion(x: torch.Tensor, scale: float) -> Diagonal:
        return Diagonal(
            torch.full((1, 1), std * scale, dtype=x.dtype, device=x.device).expand_as(x)
        )

    why = (
        "SGD with Markovian noise has only a first-order model: its steps are correlated, so the "
        "i.i.d. one-step moment matching behind the second-order and curvature corrections does "
        "not apply (an O(eta) correction for a correlated chain is not derived here)"
    )
    return Moments(
        mean=problem.grad,
        mean_jvp=None,
        diffusion=diffusion,  # first order only
        noise_type="diagonal",
        brownian_dim=problem.dim,
        diffusion_derivative=zero_derivative,
        refused={"second_order": why, "curvature": why},
    )
