"""SDE models of DSignSGD (sign probabilities from the noise CDF, every nu > 0)."""

from __future__ import annotations

import torch

from sdeopt.discrete.dsignsgd import DSignSGD
from sdeopt.dynamics.recipe import Moments
from sdeopt.dynamics.sde import Diagonal
from sdeopt.noise import SymmetricCDFNoise
from sdeopt.problems import Problem


def moments(method: DSignSGD, problem: Problem) -> Moments:
    r"""One-step moments of DSignSGD (Compagnoni et al. 2025, arXiv 2502.17009; docs/models.md).

    With :math:`m_i(x) = \mathbb{E} \operatorname{sign}(\nabla f_i + \sigma_i T)
    = 2 F(\nabla f_i / \sigma_i) - 1` coordinate-wise,

    .. math::

        \bar u = \frac{1}{N} \sum_i m_i, \qquad
        S = \operatorname{diag}\Big(\frac{1}{N^2} \sum_i (1 - m_i^2)\Big),

    well defined for every :math:`\nu > 0` since :math:`|m_i| \le 1`. The Jacobian-vector
    product for the second-order model is

    .. math::

        (\nabla \bar u)\, v = \frac{1}{N} \sum_i \big(2 p(\nabla f_i / \sigma_i) / \sigma_i\big)
        \odot \nabla^2 f\, v

    with p the density of T (homogeneous workers, where every :math:`f_i = f`). The
    second-order model is the general one-step moment matching of Li, Tai & E (the steps are
    i.i.d. given x, so matching :math:`\mathbb{E}` and :math:`\mathbb{E}[\Delta\Delta^\top]` to
    :math:`O(\eta^3)` gives drift :math:`-\bar u - (\eta/2)(\nabla \bar u)\bar u`); the
    "curvature" model is refused: its :math:`+(\eta/2)(\nabla \bar u)\bar u` correction matches
    the stationary second moment of gradient steps on quadratics (:math:`\bar u` linear in x)
    and has no derivation for the sign direction (:math:`\bar u = m(x)` is not linear): in 1-D
    at lr 0.1 its exact stationary :math:`\mathbb{E} f` is still 39 % below the discrete
    method's for :math:`\sigma = 0.05` (docs/models.md).

    For Milstein, on a separable problem (diagonal Hessian :math:`h = \nabla^2 f\, \mathbf{1}`)
    :math:`g_j = (\mathrm{scale}/N) \sqrt{\sum_i (1 - m_{ij}^2)}` depends on :math:`x_j` alone
    and

    .. math::

        \frac{\partial g_j}{\partial x_j} = -\frac{\mathrm{scale}}{N}
        \frac{\sum_i m_{ij}\, \partial m_{ij}}{\sqrt{\sum_i (1 - m_{ij}^2)}}, \qquad
        \partial m_{ij} = 2 p(\partial_j f / \sigma_i)\, h_j / \sigma_i;

    elsewhere the sign noise is not commutative and Milstein is refused.
    """
    noise, n = method.noise, method.n_workers
    if not isinstance(noise, SymmetricCDFNoise):
        raise ValueError(
            f"Invalid noise: {noise!r} (the DSignSGD SDE needs the noise CDF in closed "
            "form: Gaussian or StudentT)"
        )
    if min(noise.worker_scales(n)) == 0.0:
        raise ValueError(
            "Invalid noise: a zero scale makes the sign deterministic, so m is "
            "discontinuous and the SDE's drift is not smooth; use scales > 0"
        )

    def sign_means(x):
        return noise.sign_mean(problem.worker_grads(x), n)  # (B, N or 1, d)

    def mean(x):
        m = sign_means(x)
        return m[:, 0] if m.shape[1] == 1 else m.mean(dim=1)

    def mean_slopes(grads):
        """∂m_i/∂(∇f_i) coordinate-wise, (B, N or 1, d): 2 p(∇f_i/σ_i) / σ_i."""
        s = noise.scales(n, grads.device, grads.dtype).unsqueeze(-1)  # (N or 1, 1)
        return 2.0 * noise.standard_pdf(grads / s) / s

    def mean_jvp(x, v):
        return mean_slopes(problem.worker_grads(x)).mean(dim=1) * problem.hvp(x, v)

    def variance(m):
        return torch.clamp((1.0 - m * m).sum(dim=1) * (n / m.shape[1]) / n**2, min=0.0)  # (B, d)

    def diffusion(x, scale):
        return Diagonal(torch.sqrt(variance(sign_means(x))) * scale)

    def diffusion_derivative(x, scale):
        grads = problem.worker_grads(x)  # (B, 1, d): homogeneous
        m = noise.sign_mean(grads, n)  # (B, N or 1, d)
        dm = mean_slopes(grads) * problem.hvp(x, torch.ones_like(x)).unsqueeze(1)  # (B, N or 1, d)
        dvar = -2.0 * (m * dm).sum(dim=1) * (n / m.shape[1]) / n**2  # (B, d)
        root = torch.sqrt(variance(m))  # (B, d)
        positive = root > 0  # where g_j = 0 the Milstein term g ∂g vanishes anyway
        return torch.where(positive, dvar / (2.0 * torch.where(positive, root, 1.0)), 0.0) * scale

    homogeneous = not problem.heterogeneous
    return Moments(
        mean=mean,
        mean_jvp=mean_jvp if homogeneous else None,
        diffusion=diffusion,
        noise_type="diagonal",
        brownian_dim=problem.dim,
        diffusion_derivative=diffusion_derivative if homogeneous and problem.separable else None,
        refused={
            "curvature": "DSignSGD has no curvature-corrected model: the +(eta/2)(∇ū)ū "
            "correction matches the stationary second moment of gradient steps on "
            "quadratics, where ū is linear in x; no derivation backs it for the sign "
            "direction (see docs/models.md); use 'first_order' or 'second_order'"
        },
    )
