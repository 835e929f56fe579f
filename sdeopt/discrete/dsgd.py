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

    Update: :math:`x_{k+1} = x_k - (\eta\,\eta_k / N) \sum_i g_i`,
    :math:`g_i = \nabla f_i(x_k) + Z_i`. For Gaussian noise the mean of the N worker noises is
    drawn as one Gaussian of variance :math:`\sum_i \sigma_i^2 / N^2` (exact in law), so a step
    costs one (B, d) normal draw; for symmetric α-stable noise as one stable draw of scale
    :math:`(\sum_i \sigma_i^\alpha)^{1/\alpha} / N`.

    SDE models (docs/models.md): :math:`\bar u = \nabla f`, :math:`S = \hat\Sigma / N` with
    :math:`\hat\Sigma = \frac{1}{N} \sum_i \Sigma_i`; first order

    .. math::

        dX = -\eta_t \nabla f\,dt + \eta_t \sqrt{\eta/N}\, \hat\Sigma^{1/2} dW

    (weak order 1), second order drift :math:`-\nabla(f + (\eta/4)\|\nabla f\|^2)` (weak
    order 2), curvature-corrected drift
    :math:`-\eta_t \nabla f + (\eta\,\eta_t^2/2) \nabla^2 f \nabla f`, which has the exact
    stationary loss of the chain on quadratics:

    .. math::

        \mathbb{E} f = \sum_j \frac{\eta \bar\sigma^2}{4N (1 - \eta \lambda_j / 2)}

    (docs/models.md).

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
