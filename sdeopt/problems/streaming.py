r"""Least squares on a stream of fresh Gaussian data: the model of the deterministic equivalents
(homogenized SGD; docs/equivalents.md).

Each sample is :math:`(a, y)` with :math:`a \sim \mathcal N(0, K)` and
:math:`y = a^\top x^* + \varepsilon`, :math:`\varepsilon` label noise of any symmetric law,
independent of a. The population risk is
:math:`\mathcal R(x) = \tfrac12 \mathbb E (a^\top x - y)^2 = \tfrac12 (x - x^*)^\top K (x - x^*)
+ \tfrac12 \mathbb E \varepsilon^2`; the problem's ``loss`` is its excess part
:math:`R(x) = \tfrac12 (x - x^*)^\top K (x - x^*)` (finite for every label law, Cauchy included),
and ``sdeopt.noise.Streaming`` draws the stochastic gradients
:math:`a (a^\top x - y)` of fresh samples. K is diagonal without loss of generality (Gaussian
data are rotation invariant: the eigenbasis of K is the coordinate basis).
"""

from __future__ import annotations

import torch

from sdeopt._validation import check_int, check_positive
from sdeopt.problems.base import PROBLEMS
from sdeopt.problems.quadratic import Quadratic


@PROBLEMS.register
class StreamingLeastSquares(Quadratic):
    r"""Least squares on fresh Gaussian data :math:`a \sim \mathcal N(0, \operatorname{diag}(\lambda))`,
    :math:`y = a^\top x^* + \varepsilon`: the excess risk
    :math:`R(x) = \tfrac12 \sum_i \lambda_i (x_i - x^*_i)^2` as the objective, with gradients
    drawn by ``sdeopt.noise.Streaming`` (batch size and label noise are the noise law's).

    Args:
        spectrum: :math:`\lambda` (d,), the eigenvalues of the data covariance K, all > 0.
        x_star: :math:`x^*` (d,), the target; default 0.

    Attributes:
        spectrum: (d,) tensor (also ``diag``, the Hessian of R).

    Example:
        >>> import sdeopt as so
        >>> prob = so.problems.StreamingLeastSquares.power_law(400, exponent=1.0)
        >>> round(float(prob.spectrum.mean()), 12)
        1.0

    References:
        Paquette, Paquette, Adlam & Pennington, "Homogenization of SGD in high-dimensions: exact
        dynamics and generalization properties", arXiv:2205.07069; "Implicit regularization or
        implicit conditioning? Exact risk trajectories of SGD in high dimensions", NeurIPS 2022,
        arXiv:2206.07252.
    """

    def __init__(self, spectrum, *, x_star=None) -> None:
        super().__init__(diag=spectrum, center=x_star)
        assert self.diag is not None  # given as diag
        self.spectrum: torch.Tensor = self.diag

    @classmethod
    def power_law(
        cls, dim: int, exponent: float = 1.0, *, mean: float = 1.0, x_star=None
    ) -> StreamingLeastSquares:
        r""":math:`\lambda_j \propto (j/d)^{\mathrm{exponent}}`, j = d, …, 1, scaled so that
        :math:`\bar\lambda = \operatorname{tr} K / d = ` ``mean``: a bounded spectrum (the
        largest eigenvalue is :math:`(1 + \mathrm{exponent})\,\bar\lambda` as d grows) whose
        eigenvalue density near 0 is a power law, :math:`\propto \lambda^{1/\mathrm{exponent}
        - 1}`. Bounded as d grows, as the deterministic equivalents need (a spectrum like
        :math:`i^{-\beta}` normalised to a fixed mean has :math:`\lambda_{\max} \sim d` and
        no high-dimensional limit at lr :math:`\gamma/d`)."""
        d = check_int("dim", dim, minimum=1)
        exponent = float(exponent)
        if not 0.0 <= exponent < 1e3:
            raise ValueError(f"Invalid exponent: {exponent!r} (must be in [0, 1000))")
        lam = (torch.arange(d, 0, -1, dtype=torch.float64) / d).pow(exponent)
        return cls(lam * (check_positive("mean", mean) / lam.mean()), x_star=x_star)

    def config(self) -> dict:
        cfg = super().config()
        cfg["spectrum"] = cfg.pop("diag")
        cfg["x_star"] = cfg.pop("center")
        return cfg
