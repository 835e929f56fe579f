"""The SDE of SGD with Markovian noise: the chain's asymptotic covariance drives it."""

from __future__ import annotations

import math

import torch

from sdeopt.discrete.markov_sgd import MarkovSGD, SingleSample
from sdeopt.dynamics.recipe import Moments, zero_derivative
from sdeopt.dynamics.sde import Diagonal
from sdeopt.problems import Problem


def moments(method: MarkovSGD, problem: Problem) -> Moments:
    r""":math:`\bar u = \nabla f` and :math:`S = \Sigma_{\rm eff} = s^2 \sigma_{\rm eff}^2 I`,
    :math:`\sigma_{\rm eff}^2 = \sum_{j \in \mathbb{Z}} \operatorname{Cov}_\pi(h(Z_0), h(Z_j))`.

    Over the many steps of one unit of SDE time the correlated noise sums like independent
    noise of variance :math:`\Sigma_{\rm eff}` (a Markov-chain central limit theorem), so the
    first-order model is

    .. math::

        dX = -\eta_t \nabla f\,dt + \eta_t \sqrt{\eta}\, \Sigma_{\rm eff}^{1/2} dW,

    valid when :math:`\eta \tau \lambda_{\max}(\nabla^2 f) \ll 1` (docs/models.md). The i.i.d.
    model (:math:`S = s^2 \operatorname{Var}_\pi h`) misses the factor
    :math:`(1 + \rho)/(1 - \rho)`.
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
