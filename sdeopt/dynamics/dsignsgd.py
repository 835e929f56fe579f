"""SDE models of DSignSGD (sign probabilities from the noise CDF, every nu > 0)."""

from __future__ import annotations

import torch

from sdeopt.discrete.dsignsgd import DSignSGD
from sdeopt.dynamics.recipe import Moments
from sdeopt.dynamics.sde import Diagonal
from sdeopt.noise import SymmetricCDFNoise
from sdeopt.problems import Problem


def moments(method: DSignSGD, problem: Problem) -> Moments:
    r"""One-step moments of DSignSGD (Compagnoni et al. 2025, arXiv 2502.17009; MATH.md §6).

    With m_i(x) = E sign(∇f_i + σ_i T) = 2 F(∇f_i/σ_i) - 1 coordinate-wise,

        ū = (1/N) Σ_i m_i,      S = diag((1/N²) Σ_i (1 - m_i²)),

    well defined for every nu > 0 since |m_i| <= 1. The Jacobian-vector product for the
    second-order and curvature models is (∇ū) v = (1/N) Σ_i (2 p(∇f_i/σ_i)/σ_i) ⊙ ∇²f v with p
    the density of T (homogeneous workers, where every f_i = f).
    """
    noise, n = method.noise, method.n_workers
    if not isinstance(noise, SymmetricCDFNoise):
        raise ValueError(f"Invalid noise: {noise!r} (the DSignSGD SDE needs the noise CDF in closed "
                         "form: Gaussian or StudentT)")
    if isinstance(noise.scale, tuple) and min(noise.scale) == 0.0 or noise.scale == 0.0:
        raise ValueError("Invalid noise: a zero scale makes the sign deterministic, so m is "
                         "discontinuous and the SDE's drift is not smooth; use scales > 0")

    def sign_means(x):
        return noise.sign_mean(problem.worker_grads(x), n)  # (B, N or 1, d)

    def mean(x):
        m = sign_means(x)
        return m[:, 0] if m.shape[1] == 1 else m.mean(dim=1)

    def mean_jvp(x, v):
        grads = problem.worker_grads(x)  # (B, 1, d)
        s = noise.scales(n, x.device, x.dtype).unsqueeze(-1)  # (N or 1, 1)
        slope = (2.0 * noise.standard_pdf(grads / s) / s).mean(dim=1)  # (B, d)
        return slope * problem.hvp(x, v)

    def diffusion(x, scale):
        m = sign_means(x)
        var = (1.0 - m * m).sum(dim=1) * (n / m.shape[1]) / n**2  # (B, d)
        return Diagonal(torch.sqrt(torch.clamp(var, min=0.0)) * scale)

    return Moments(mean=mean, mean_jvp=None if problem.heterogeneous else mean_jvp,
                   diffusion=diffusion, noise_type="diagonal", brownian_dim=problem.dim)
