r"""Stochastic gradients of least squares on a stream of fresh Gaussian data (``Streaming``).

Worker i averages b fresh samples :math:`(a_s, y_s)`, :math:`a_s \sim \mathcal N(0, K)`,
:math:`y_s = a_s^\top x^* + \varepsilon_s`:

.. math::

    g_i = \frac1b \sum_{s=1}^b a_s \big(a_s^\top (x - x^*) - \varepsilon_s\big),

an unbiased estimate of :math:`\nabla R = K(x - x^*)` whose noise depends on x (multiplicative:
the data themselves are random). For Gaussian a (Isserlis), with :math:`e = x - x^*` and
:math:`\sigma^2 = \mathbb E \varepsilon^2`,

.. math::

    \operatorname{Cov} g_i = \frac1b \big(K e e^\top K + (e^\top K e + \sigma^2) K\big)

(docs/equivalents.md), which ``worker_cov`` gives in structured form (diagonal K times a number,
plus one rank-one term), so the SDE models of DSGD exist for this law.
"""

from __future__ import annotations

import torch

from sdeopt._validation import check_int
from sdeopt.covariance import StructuredCov
from sdeopt.noise.base import NOISES, Noise, ScaledSymmetricNoise
from sdeopt.problems import Problem
from sdeopt.problems.streaming import StreamingLeastSquares
from sdeopt.random import RandomSource


@NOISES.register
class Streaming(Noise):
    r"""Fresh Gaussian data each step for ``StreamingLeastSquares`` (not an additive law).

    Args:
        batch_size: b, samples per worker and step, an integer >= 1.
        label: the law of the label noise :math:`\varepsilon`: a scaled symmetric law with one
            shared scale (``Gaussian``, ``StudentT``, ``SymmetricStable``); default
            ``Gaussian(0.0)`` (noiseless labels: the noise is the data's alone).

    Shapes: ``oracle`` (B, N, d); ``oracle_mean`` (B, d). A step draws (B, N, b, d) normals.

    Example:
        >>> import sdeopt as so
        >>> prob = so.problems.StreamingLeastSquares.power_law(100)
        >>> opt = so.discrete.DSGD(lr=1.0 / 100, noise=so.noise.Streaming(label=so.noise.Gaussian(0.5)))
        >>> traj = so.discrete.simulate(opt, prob, [1.0] * 100, n_steps=200, n_runs=10)

    References:
        Paquette, Paquette, Adlam & Pennington, arXiv:2205.07069 (streaming SGD on Gaussian
        least squares and its homogenized SDE).
    """

    isotropic = False

    def __init__(
        self, batch_size: int = 1, *, label: ScaledSymmetricNoise | dict | None = None
    ) -> None:
        from sdeopt.noise.additive import Gaussian

        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        label = Gaussian(0.0) if label is None else label
        if isinstance(label, dict):  # a config table: {type = "StudentT", nu = 1, scale = 1}
            label = NOISES.build(label, where="label")
        if not isinstance(label, ScaledSymmetricNoise):
            raise ValueError(
                f"Invalid label: {label!r} (a scaled symmetric noise law: Gaussian, StudentT or "
                "SymmetricStable)"
            )
        if label.per_worker:
            raise ValueError(f"Invalid label: {label!r} (one shared scale, not one per worker)")
        self.label = label
        self.finite_variance = label.finite_variance

    @property
    def label_variance(self) -> float:
        r""":math:`\sigma^2 = \mathbb E \varepsilon^2` (inf for heavy-tailed labels)."""
        s = float(self.label.scale)  # type: ignore[arg-type]  # shared: a number
        return 0.0 if s == 0.0 else s * s * self.label.variance

    def check_problem(self, problem: Problem) -> None:
        if not isinstance(problem, StreamingLeastSquares):
            raise ValueError(
                f"Invalid problem: {type(problem).__name__} (Streaming noise draws Gaussian data "
                "for sdeopt.problems.StreamingLeastSquares)"
            )

    def sample(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        raise ValueError(
            "Invalid use of Streaming noise: it is not additive (the data are random), so it "
            "has no sample(); draw gradients with oracle() or oracle_mean()"
        )

    def oracle(
        self, problem: Problem, x: torch.Tensor, n_workers: int, rng: RandomSource
    ) -> torch.Tensor:
        """Each worker's average of b fresh-sample gradients, (B, N, d)."""
        self.check_problem(problem)
        assert isinstance(problem, StreamingLeastSquares)  # check_problem
        b, d = self.batch_size, problem.dim
        root = problem.spectrum.to(x).sqrt()  # (d,)
        a = rng.normal(n_workers, b, d).mul_(root)  # (B, N, b, d)
        e = x - problem.center.to(x)  # (B, d): x - x*, not recovered from the gradient
        scale = float(self.label.scale)  # type: ignore[arg-type]  # shared: a number
        residual = (a * e[:, None, None, :]).sum(-1)  # (B, N, b)
        if scale != 0.0:
            residual = residual - scale * self.label.sample_standard(rng, n_workers, b)
        return (a * residual.unsqueeze(-1)).mean(dim=2)  # (B, N, d)

    def oracle_mean(
        self, problem: Problem, x: torch.Tensor, n_workers: int, rng: RandomSource
    ) -> torch.Tensor:
        r""":math:`\frac1N \sum_i g_i`, (B, d)."""
        return self.oracle(problem, x, n_workers, rng).mean(dim=1)

    def worker_cov(
        self, problem: Problem, x: torch.Tensor, grads: torch.Tensor, n_workers: int
    ) -> StructuredCov:
        r""":math:`\frac1b((e^\top K e + \sigma^2) K + K e e^\top K)`: diag (B, 1, d), one factor
        :math:`K e / \sqrt b` (B, 1, d, 1). ``ValueError`` for label noise without a variance."""
        self.check_problem(problem)
        assert isinstance(problem, StreamingLeastSquares)  # check_problem
        if not self.finite_variance:
            raise ValueError(
                f"Invalid noise: {self!r} (its label noise has infinite variance, so the "
                "gradients have none and no Brownian SDE exists; clip the steps, whose "
                "deterministic equivalent is risk_ode's)"
            )
        lam = problem.spectrum.to(x)  # (d,)
        grad = problem.grad(x)  # (B, d): K e
        level = (grad * grad / lam).sum(-1, keepdim=True) + self.label_variance  # (B, 1): eᵀKe + σ²
        diag = (level * lam / self.batch_size).unsqueeze(1)  # (B, 1, d)
        factors = (grad / self.batch_size**0.5)[:, None, :, None]  # (B, 1, d, 1)
        return StructuredCov(diag=diag, factors=factors, signs=(1.0,))

    def config(self) -> dict:
        return {"type": "Streaming", "batch_size": self.batch_size, "label": self.label.config()}
