"""Distributed SGD: DCSGD with the identity compressor (one shared implementation)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sdeopt.compressors import Compressor, Identity
from sdeopt.discrete.base import METHODS
from sdeopt.discrete.dcsgd import DCSGD


@METHODS.register
@dataclass(frozen=True, kw_only=True)
class DSGD(DCSGD):
    r"""Distributed SGD: the average of N workers' stochastic gradients.

    Update: x_{k+1} = x_k - (eta eta_k / N) Σ_i g_i, g_i = ∇f_i(x_k) + Z_i.
    For Gaussian noise the mean of the N worker noises is drawn as one Gaussian of variance
    Σ_i σ_i² / N² (exact in law), so a step costs one (B, d) normal draw.

    SDE models (docs/models.md): ū = ∇f, S = Σ̂/N with Σ̂ = (1/N) Σ_i Σ_i;
    first order dX = -eta_t ∇f dt + eta_t sqrt(eta/N) Σ̂^{1/2} dW (weak order 1),
    second order drift -∇(f + (eta/4)||∇f||²) (weak order 2), curvature-corrected drift
    -eta_t ∇f + (eta eta_t²/2) ∇²f ∇f, which has the exact stationary loss of the chain on
    quadratics: E f = Σ_j eta σ̄² / (4N (1 - eta λ_j / 2)) (docs/models.md).

    Shapes: x (B, d). Normalised (``normalize=(a, b)``) and clipped (``clip=λ``) steps as in DCSGD.

    References:
        Li, Tai, E, JMLR 2019; Compagnoni et al., arXiv 2506.00181 v2.

    Example:
        >>> import sdeopt as so
        >>> opt = so.discrete.DSGD(lr=0.05, n_workers=8, noise=so.noise.Gaussian(1.0))
        >>> traj = so.discrete.simulate(opt, so.problems.Quadratic(diag=[1.0, 4.0]), [1.0, 1.0],
        ...                             n_steps=200, n_runs=10_000, seed=0)
    """

    compressor: Compressor = field(default_factory=Identity, init=False)
