"""Additive gradient-noise laws: Gaussian, Student-t, symmetric alpha-stable, affine variance and
minibatch noise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, cast

import torch

from sdeopt._validation import check_in_range, check_int, check_positive
from sdeopt.covariance import CoordinateLaw, NoiseFactor, StructuredCov
from sdeopt.noise.base import (
    NOISES,
    Noise,
    PerWorker,
    ScaledSymmetricNoise,
    SymmetricCDFNoise,
    _check_grads,
)
from sdeopt.problems import Problem
from sdeopt.random import RandomSource
from sdeopt.special import (
    gaussian_partial_moments,
    log_beta_half,
    stable_scale_from_tail,
    student_t_cdf,
    student_t_partial_moments,
    student_t_tail,
    student_t_tail_constant,
)

# ---------------------------------------------------------------------------------------------
# Gaussian
# ---------------------------------------------------------------------------------------------


@NOISES.register
class Gaussian(SymmetricCDFNoise):
    r"""Gaussian gradient noise: :math:`Z_i = \sigma_i z`, :math:`z \sim \mathcal{N}(0, I_d)`.

    Worker i's stochastic gradient is :math:`g_i = \nabla f_i(x) + \sigma_i z_i` with
    :math:`z_i` i.i.d. standard normal vectors, independent across workers, runs and steps. The
    standard law :math:`T = \mathcal{N}(0, 1)` has
    :math:`F(y) = \Phi(y) = (1 + \operatorname{erf}(y/\sqrt{2}))/2` and variance 1.

    Exact shortcut for the workers' average:

    .. math::

        \frac{1}{N} \sum_i \sigma_i z_i \sim
        \mathcal{N}\Big(0, \Big(\sum_i \sigma_i^2 / N^2\Big) I_d\Big)

    per run, so ``sample_worker_mean`` makes one (B, d) draw instead of (B, N, d).

    Args:
        scale: :math:`\sigma \ge 0`, shared by all workers, or a length-N sequence
            :math:`(\sigma_1, \dots, \sigma_N)`.

    Shapes: ``sample`` (B, N, d); ``sample_worker_mean`` (B, d); ``standard_cdf`` elementwise.

    Example:
        >>> import sdeopt as so
        >>> from sdeopt.random import RandomSource
        >>> noise = so.noise.Gaussian(scale=[0.5, 1.0, 2.0])
        >>> rng = RandomSource(seed=0, n_runs=4)
        >>> noise.sample(rng, torch.zeros(4, 1, 10), n_workers=3).shape
        torch.Size([4, 3, 10])
    """

    #: Var T.
    variance = 1.0
    couplable = True

    def sample_standard(self, rng: RandomSource, *shape: int) -> torch.Tensor:
        return rng.normal(*shape)  # (B, *shape)

    def sample_worker_mean(
        self, rng: RandomSource, grads: torch.Tensor, n_workers: int
    ) -> torch.Tensor:
        r""":math:`\frac{1}{N} \sum_i \sigma_i z_i` drawn as one Gaussian of variance
        :math:`\sum_i \sigma_i^2 / N^2`, (B, d)."""
        self.check_workers(n_workers)
        if self.per_worker:
            std = math.sqrt(sum(s * s for s in self._scale.values)) / n_workers
        else:
            std = self._scale.values[0] / math.sqrt(n_workers)
        return rng.normal(grads.shape[-1]) * std  # (B, d)

    def standard_cdf(self, y: torch.Tensor) -> torch.Tensor:
        return torch.special.ndtr(y)

    def standard_tail(self, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        r""":math:`\Phi(-|y|/\sigma) = \tfrac12 \operatorname{erfc}(|y|/(\sigma\sqrt2))`: relative
        accuracy in the far tail (``torch.special.ndtr(-10)`` is 0 in float64, this 7.6e-24),
        four elementwise passes."""
        return torch.mul(y, 1.0 / (scale * math.sqrt(2.0))).abs_().erfc_().mul_(0.5)

    def standard_pdf(self, y: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * y * y) * (1.0 / math.sqrt(2.0 * math.pi))

    def standard_partial_moments(
        self, lo: torch.Tensor, hi: torch.Tensor, p: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return gaussian_partial_moments(lo, hi, p)

    #: :math:`\mathbb E[T^2 1_{|T| > 9}] \approx 2 \cdot 9\, \varphi(9) \approx 2e\text{-}17`,
    #: below 1e-12 (the criterion of ``CoordinateLaw.t_max``).
    t_max = 9.0


# ---------------------------------------------------------------------------------------------
# Student-t
# ---------------------------------------------------------------------------------------------


@NOISES.register
class StudentT(SymmetricCDFNoise):
    r"""Student-t gradient noise: :math:`Z_i = \sigma_i T`, T with i.i.d. :math:`t_\nu`
    coordinates.

    Heavy-tailed for small :math:`\nu`: :math:`\mathbb{E}|T| < \infty` only for :math:`\nu > 1`,
    and :math:`\operatorname{Var} T = \nu/(\nu-2)` only for :math:`\nu > 2`; :math:`\nu \le 2` is
    the regime of interest (no Brownian SDE exists, ``finite_variance`` is False there).
    :math:`\nu` may be any positive real.

    Sampler (exact, rejection-free form of Bailey's polar method): with :math:`U_1, U_2`
    independent uniform on :math:`[0, 1)` and :math:`E = -\log(1 - U_2) \sim \mathrm{Exp}(1)`,

    .. math::

        T = \cos(2\pi U_1) \cdot \sqrt{\nu (\exp(2E/\nu) - 1)}
          = \cos(2\pi U_1) \cdot \sqrt{\nu (W^{-2/\nu} - 1)},

    :math:`W = 1 - U_2 \in (0, 1]`. (Bailey's point :math:`(U, V)` uniform in the unit disc has
    :math:`W = U^2 + V^2` uniform and an independent uniform angle;
    :math:`T = U \sqrt{\nu (W^{-2/\nu} - 1) / W}` is then the expression above.) ``expm1``
    keeps it exact for huge :math:`\nu`; for :math:`\nu < 1` it is evaluated as
    :math:`\sqrt{\nu} \exp(E/\nu) \sqrt{1 - \exp(-2E/\nu)}` so that no intermediate overflows
    before T itself does. It costs two uniforms and four elementwise transcendentals, several times
    faster than ``torch.distributions.StudentT`` (a Gaussian and a Gamma draw).

    CDF: ``student_t_cdf`` (continued fraction of the incomplete beta, every nu > 0); the tail
    :math:`F(-|y|)` of the sign probabilities by ``student_t_tail`` (a per-nu polynomial fitted
    to it, as accurate and ~10x cheaper).

    Args:
        nu: degrees of freedom, a finite number > 0.
        scale: :math:`\sigma \ge 0`, shared, or a length-N sequence (one per worker).

    Shapes: ``sample`` (B, N, d); ``standard_cdf`` elementwise.

    References:
        Bailey, "Polar generation of random variates with the t-distribution",
        Math. Comp. 62(206):779-781, 1994.
        Simsekli, Sagun, Gürbüzbalaban, ICML 2019 (heavy-tailed gradient noise).

    Example:
        >>> import sdeopt as so
        >>> noise = so.noise.StudentT(nu=1.5, scale=0.5)
        >>> float(noise.standard_cdf(torch.tensor([0.0])))
        0.5
    """

    def __init__(self, *, nu: float, scale: float | Sequence[float] = 1.0) -> None:
        super().__init__(scale)
        self.nu = check_positive("nu", nu)
        #: Var T < ∞ iff nu > 2.
        self.finite_variance = self.nu > 2.0
        self.t_max = self._tail_cutoff()

    def stable_limit(self, n_workers: int) -> tuple[float, float, bool]:
        r"""For :math:`\nu < 2`, :math:`t_\nu` is in the domain of attraction of
        :math:`S\nu S`: :math:`P(\sigma T > x) \sim c_\nu \sigma^\nu x^{-\nu}`
        (``student_t_tail_constant``), the workers' average has tail constant
        :math:`c_\nu \sum_i \sigma_i^\nu / N^\nu`, and the stable law with that tail
        (``stable_scale_from_tail``) has scale
        :math:`\gamma_\nu (\sum_i \sigma_i^\nu)^{1/\nu} / N`. Exact for :math:`\nu = 1`
        (Cauchy, :math:`\gamma_1 = 1`), a limit otherwise (docs/models.md)."""
        if self.nu >= 2.0:
            raise ValueError(
                f"Invalid noise: StudentT nu = {self.nu!r} is in the Gaussian domain of "
                "attraction (finite variance for nu > 2, a logarithmic correction at nu = 2): "
                "the 'levy' model needs nu < 2; use the Brownian models 'first_order', "
                "'second_order' or 'curvature'"
            )
        gamma = stable_scale_from_tail(self.nu, student_t_tail_constant(self.nu))
        scales = self.worker_scales(n_workers)
        power = sum(s**self.nu for s in scales)
        return self.nu, gamma * power ** (1.0 / self.nu) / n_workers, self.nu == 1.0

    @property
    def variance(self) -> float:
        r""":math:`\operatorname{Var} T = \nu/(\nu-2)` for :math:`\nu > 2`, else inf."""
        return self.nu / (self.nu - 2.0) if self.nu > 2.0 else math.inf

    def sample_standard(self, rng: RandomSource, *shape: int) -> torch.Tensor:
        nu = self.nu
        angle = rng.uniform(*shape).mul_(2.0 * math.pi)  # (B, *shape)
        e_over_nu = torch.log1p(rng.uniform(*shape).neg_()).mul_(-1.0 / nu)  # (B, *shape), E/nu
        if nu >= 1.0:
            # 2E/nu <= 2 * 37 (the largest E from a float64 uniform): expm1 cannot overflow.
            radius = e_over_nu.mul_(2.0).expm1_().mul_(nu).sqrt_()
        else:
            radius = (
                torch.expm1(e_over_nu * -2.0)
                .neg_()
                .sqrt_()
                .mul_(e_over_nu.exp_())
                .mul_(math.sqrt(nu))
            )
        return angle.cos_().mul_(radius)

    def standard_pdf(self, y: torch.Tensor) -> torch.Tensor:
        r""":math:`(1 + y^2/\nu)^{-(\nu+1)/2} / (\sqrt{\nu}\, B(\nu/2, 1/2))`."""
        log_norm = -0.5 * math.log(self.nu) - log_beta_half(0.5 * self.nu)
        return torch.exp(log_norm - 0.5 * (self.nu + 1.0) * torch.log1p(y * y / self.nu))

    def standard_cdf(self, y: torch.Tensor) -> torch.Tensor:
        return student_t_cdf(y, self.nu)

    def standard_tail(self, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``special.student_t_tail``: a polynomial fitted once per (nu, dtype), relative
        accuracy over the whole line, ~16 elementwise passes instead of ~150."""
        return student_t_tail(y, self.nu, scale)

    def standard_partial_moments(
        self, lo: torch.Tensor, hi: torch.Tensor, p: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Closed forms of ``special.student_t_partial_moments``: every nu > 0 on finite bounds
        (clipped laws), nu > 2 where a bound is infinite."""
        return student_t_partial_moments(lo, hi, self.nu, p)

    def _tail_cutoff(self) -> float:
        r"""``t_max``: the first :math:`t = 2^j` whose two tails hold below 1e-12 of :math:`\mathbb E T^2`
        by ``standard_partial_moments`` over :math:`[t, \infty)`,
        :math:`2 (\nu F(-t) + t(\nu + t^2) f(t)) / (\nu - 2)`; about :math:`2^{42}` at
        :math:`\nu = 3` and :math:`2^{81}` at :math:`\nu = 2.5`, since the share decays like
        :math:`t^{2-\nu}`. :math:`\infty` for :math:`\nu \le 2` and where no
        :math:`t \le 2^{120}` does it (:math:`\nu` within about 0.35 of 2): a quadrature over
        :math:`|T| \le t_{\max}` would then square numbers near the float range."""
        if self.nu <= 2.0:
            return math.inf
        nu, var = self.nu, self.nu / (self.nu - 2.0)
        for j in range(121):
            t = torch.tensor(2.0**j, dtype=torch.float64)
            tail = nu * student_t_cdf(-t, nu) + t * (nu + t * t) * self.standard_pdf(t)
            if 2.0 * float(tail) / (nu - 2.0) / var < 1e-12:
                return 2.0**j
        return math.inf

    def config(self) -> dict:
        return {"type": "StudentT", "nu": self.nu, "scale": self._scale.jsonable()}


# ---------------------------------------------------------------------------------------------
# Symmetric alpha-stable
# ---------------------------------------------------------------------------------------------


@NOISES.register
class SymmetricStable(ScaledSymmetricNoise):
    r"""Symmetric α-stable gradient noise: :math:`Z_i = \sigma_i S`, S i.i.d. :math:`S\alpha S`
    coordinates.

    S follows the standard law :math:`S(\alpha, \beta=0, \gamma=1, \delta=0)` (Nolan's
    parametrizations 0 and 1 agree for :math:`\beta = 0`), with characteristic function
    :math:`\mathbb{E} \exp(iuS) = \exp(-|u|^\alpha)`; :math:`\sigma S` then has
    :math:`\exp(-\sigma^\alpha |u|^\alpha)`. Hence :math:`\alpha = 2` gives
    :math:`\sigma S \sim \mathcal{N}(0, 2\sigma^2)` (not :math:`\mathcal{N}(0, \sigma^2)`), and
    :math:`\alpha = 1` gives the Cauchy law of scale :math:`\sigma`. Only :math:`\alpha = 2` has
    a finite variance (:math:`\operatorname{Var} S = 2`); :math:`\mathbb{E}|S| < \infty` iff
    :math:`\alpha > 1`. This is ``scipy.stats.levy_stable(alpha, 0, scale=σ)``.

    Sampler (``sdeopt.random.RandomSource.stable``, Chambers-Mallows-Stuck, :math:`\beta = 0`): :math:`V = \pi(U - 1/2)` uniform on
    :math:`(-\pi/2, \pi/2)`, :math:`W \sim \mathrm{Exp}(1)` independent,

    .. math::

        S = \frac{\sin(\alpha V)}{\cos(V)^{1/\alpha}}
            \cdot \Big(\frac{\cos((1-\alpha)V)}{W}\Big)^{(1-\alpha)/\alpha},

    which is :math:`\tan(V)` for :math:`\alpha = 1`; :math:`\alpha = 2` is drawn directly as
    :math:`\sqrt{2}\, z`, :math:`z \sim \mathcal{N}(0, 1)`. U is shifted by half a grid step of
    the uniform generator so that V never equals :math:`\pm\pi/2` exactly (where
    :math:`\cos V` would round to a negative number in float32 and give NaN).

    Args:
        alpha: stability index :math:`\alpha \in (0, 2]`.
        scale: :math:`\sigma \ge 0`, shared, or a length-N sequence (one per worker).

    Shapes: ``sample`` (B, N, d).

    References:
        Chambers, Mallows, Stuck, "A method for simulating stable random variables",
        JASA 71(354):340-344, 1976; Weron, Statist. Probab. Lett. 28:165-171, 1996, eq. (3.2).
        Nolan, *Univariate Stable Distributions* (2020), Def. 1.7 and Thm 3.3.
        Simsekli, Sagun, Gürbüzbalaban, "A tail-index analysis of stochastic gradient noise
        in deep neural networks", ICML 2019.

    Example:
        >>> import sdeopt as so
        >>> noise = so.noise.SymmetricStable(alpha=1.5, scale=0.1)
        >>> noise.finite_variance
        False
    """

    def __init__(self, *, alpha: float, scale: float | Sequence[float] = 1.0) -> None:
        super().__init__(scale)
        self.alpha = check_in_range("alpha", alpha, 0.0, 2.0, closed="right")
        #: Var S < ∞ iff α = 2.
        self.finite_variance = self.alpha == 2.0

    @property
    def variance(self) -> float:
        r""":math:`\operatorname{Var} S = 2` for :math:`\alpha = 2`, else inf."""
        return 2.0 if self.alpha == 2.0 else math.inf

    def sample_standard(self, rng: RandomSource, *shape: int) -> torch.Tensor:
        return rng.stable(self.alpha, *shape)  # (B, *shape)

    def mean_scale(self, n_workers: int) -> float:
        r"""The scale of the workers' average noise
        :math:`\frac1N \sum_i \sigma_i S_i \sim (\sum_i \sigma_i^\alpha)^{1/\alpha} / N
        \cdot S` (stability: the characteristic functions multiply)."""
        scales = self.worker_scales(n_workers)
        return sum(s**self.alpha for s in scales) ** (1.0 / self.alpha) / n_workers

    def sample_worker_mean(
        self, rng: RandomSource, grads: torch.Tensor, n_workers: int
    ) -> torch.Tensor:
        r""":math:`\frac{1}{N} \sum_i \sigma_i S_i` drawn as one standard draw times
        ``mean_scale`` (exact in law), (B, d): N times fewer draws, and the one (B, d) draw that
        coupling keeps."""
        return rng.stable(self.alpha, grads.shape[-1]).mul_(self.mean_scale(n_workers))

    def stable_limit(self, n_workers: int) -> tuple[float, float, bool]:
        """(alpha, ``mean_scale``, True): the workers' average is exactly stable."""
        return self.alpha, self.mean_scale(n_workers), True

    @property
    def couplable(self) -> bool:  # type: ignore[override]  # per instance: alpha < 2
        """The workers' average is one standard stable (B, d) draw times a scale: its draws can
        drive a Lévy SDE (for :math:`\alpha = 2` use ``Gaussian``, whose draws drive the
        Brownian models)."""
        return self.alpha < 2.0

    @property
    def increment_law(self) -> dict:
        return {"law": "stable", "alpha": self.alpha}

    def config(self) -> dict:
        return {"type": "SymmetricStable", "alpha": self.alpha, "scale": self._scale.jsonable()}


# ---------------------------------------------------------------------------------------------
# Affine variance
# ---------------------------------------------------------------------------------------------


@NOISES.register
class AffineVariance(Noise):
    r"""Gaussian noise whose variance grows with the gradient: the affine-variance model.

    :math:`Z_i \sim \mathcal{N}(0, v_i(x) I_d)` with
    :math:`v_i(x) = \sigma_{0,i}^2 + \sigma_{1,i}^2 \|\nabla f_i(x)\|^2`, independent across
    workers, runs and steps, where :math:`\nabla f_i(x)` is worker i's exact gradient.
    Exact shortcut for the average:
    :math:`\frac{1}{N} \sum_i Z_i \sim \mathcal{N}\big(0, \frac{1}{N^2} \sum_i v_i(x) I_d\big)`,
    one (B, d) draw.

    Args:
        sigma0: :math:`\sigma_0 \ge 0` (additive part), shared or a length-N sequence.
        sigma1: :math:`\sigma_1 \ge 0` (multiplicative part), shared or a length-N sequence.

    Shapes: grads (B, N, d) or (B, 1, d); ``sample`` (B, N, d); ``variance_at`` (B, N or 1);
    ``sample_worker_mean`` (B, d).

    References:
        Compagnoni et al., arXiv 2506.00181 v2 (affine-variance noise for DCSGD).
        Faw et al., "The power of adaptivity in SGD: self-tuning step sizes with unbounded
        gradients and affine variance", COLT 2022.

    Example:
        >>> import sdeopt as so
        >>> noise = so.noise.AffineVariance(sigma0=0.1, sigma1=0.5)
        >>> noise.variance_at(torch.ones(2, 1, 4), n_workers=3)
        tensor([[1.0100],
                [1.0100]])
    """

    finite_variance = True
    couplable = True

    def __init__(
        self, *, sigma0: float | Sequence[float] = 0.0, sigma1: float | Sequence[float] = 0.0
    ) -> None:
        self._sigma0 = PerWorker.of("sigma0", sigma0)
        self._sigma1 = PerWorker.of("sigma1", sigma1)
        if self._sigma0.per_worker and self._sigma1.per_worker:
            self._sigma1.check(len(self._sigma0.values))

    #: σ0 and σ1 as given: a number, or a tuple of N (one per worker).
    sigma0 = property(lambda self: self._sigma0.given)
    sigma1 = property(lambda self: self._sigma1.given)

    def check_workers(self, n_workers: int) -> None:
        self._sigma0.check(n_workers)
        self._sigma1.check(n_workers)

    def worker_sigma1(self, n_workers: int) -> tuple[float, ...]:
        r""":math:`(\sigma_{1,1}, \dots, \sigma_{1,N})`, length N."""
        return self._sigma1.for_workers(n_workers)

    def worker_variance(self, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        return self.variance_at(grads, n_workers)

    def variance_at(self, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        r"""Per-coordinate variance :math:`v_i = \sigma_{0,i}^2 + \sigma_{1,i}^2 \|\nabla f_i\|^2`,
        (B, N or 1).

        The second dim is 1 only when grads is (B, 1, d) and both scales are shared.
        """
        self.check_workers(n_workers)
        _check_grads(grads, n_workers)
        s0 = self._sigma0.tensor(grads.device, grads.dtype)  # (N or 1,)
        s1 = self._sigma1.tensor(grads.device, grads.dtype)  # (N or 1,)
        sq_norm = grads.square().sum(dim=-1)  # (B, N or 1)
        return s0.square() + s1.square() * sq_norm  # (B, N or 1)

    def coordinate_law(self, grads: torch.Tensor, n_workers: int) -> CoordinateLaw:
        r"""Gaussian coordinates with the state-dependent scales :math:`\sqrt{v_i(x)}`."""
        std = self.variance_at(grads, n_workers).sqrt().unsqueeze(-1)  # (B, N or 1, 1)
        return CoordinateLaw(
            scales=std, partial_moments=gaussian_partial_moments, t_max=Gaussian.t_max
        )

    def sample(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        std = self.variance_at(grads, n_workers).sqrt().unsqueeze(-1)  # (B, N or 1, 1)
        return rng.normal(n_workers, grads.shape[-1]).mul_(std)  # (B, N, d)

    def sample_worker_mean(
        self, rng: RandomSource, grads: torch.Tensor, n_workers: int
    ) -> torch.Tensor:
        r""":math:`\frac{1}{N} \sum_i Z_i` drawn as one Gaussian of variance
        :math:`\frac{1}{N^2} \sum_i v_i(x)`, (B, d)."""
        var = self.variance_at(grads, n_workers)  # (B, N or 1)
        std = var.expand(-1, n_workers).sum(dim=1).sqrt().div_(n_workers)  # (B,)
        return rng.normal(grads.shape[-1]).mul_(std.unsqueeze(-1))  # (B, d)

    def config(self) -> dict:
        return {
            "type": "AffineVariance",
            "sigma0": self._sigma0.jsonable(),
            "sigma1": self._sigma1.jsonable(),
        }


# ---------------------------------------------------------------------------------------------
# Minibatch
# ---------------------------------------------------------------------------------------------


class _MinibatchProblem(Protocol):
    """What ``Minibatch`` needs of a problem (duck-typed, e.g. ``FiniteSumProblem``)."""

    def minibatch_worker_grads(
        self,
        x: torch.Tensor,
        batch_size: int,
        n_workers: int,
        rng: RandomSource,
        *,
        replacement: bool = False,
    ) -> torch.Tensor: ...

    def minibatch_cov_factors(
        self, x: torch.Tensor, batch_size: int, *, replacement: bool = False
    ) -> torch.Tensor: ...

    def minibatch_noise_apply(
        self, x: torch.Tensor, batch_size: int, w: torch.Tensor, *, replacement: bool = False
    ) -> torch.Tensor: ...

    def minibatch_cov_diag(
        self, x: torch.Tensor, batch_size: int, *, replacement: bool = False
    ) -> torch.Tensor: ...

    shard_index: torch.Tensor


@NOISES.register
class Minibatch(Noise):
    r"""Real minibatch gradients of a finite-sum problem (not an additive law).

    Worker i returns :math:`g_i = \frac{1}{b} \sum_{s \in \mathrm{batch}_i} \nabla f_s(x)`, with
    a batch of b distinct samples drawn uniformly from its shard, independently per run,
    worker and step; the problem does the work
    (``minibatch_worker_grads(x, batch_size, n_workers, rng)``, e.g.
    ``sdeopt.problems.FiniteSumProblem``). The noise :math:`g_i - \nabla f_i(x)` depends on the
    data, so this law is used only through ``oracle``/``oracle_mean``; ``sample`` raises. Its
    covariance (finite-population correction) is ``problem.minibatch_covariance``.

    Without replacement (the default) the b samples are distinct and
    :math:`\operatorname{Cov}(g_i) = \frac{n_i - b}{b (n_i - 1)} \Sigma_i(x)`; with replacement
    they are b independent uniform draws and :math:`\operatorname{Cov}(g_i) = \Sigma_i(x)/b`,
    :math:`\Sigma_i(x) = \frac{1}{n_i}\sum_{s \in S_i}(\nabla f_s - \nabla f_i)
    (\nabla f_s - \nabla f_i)^\top` (``worker_cov``: its low-rank factors, the centred
    per-sample gradients, which the SDE applies to a Brownian motion of dimension
    :math:`n_i`).

    Args:
        batch_size: :math:`b`, an integer >= 1 (and <= the smallest shard, checked by the problem).
        replacement: draw the batch with replacement (default False: distinct samples).

    Shapes: ``oracle`` (B, N, d); ``oracle_mean`` (B, d).

    References:
        Cochran, *Sampling Techniques*, 3rd ed. (1977), Thm 2.2.

    Example:
        >>> import sdeopt as so
        >>> so.noise.Minibatch(batch_size=32)
        Minibatch(batch_size=32, replacement=False)
    """

    finite_variance = True
    isotropic = False

    def __init__(self, batch_size: int, *, replacement: bool = False) -> None:
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        if not isinstance(replacement, bool):
            raise ValueError(f"Invalid replacement: {replacement!r} (must be True or False)")
        self.replacement = replacement

    def check_problem(self, problem: Problem) -> None:
        # Duck-typed, so that any finite-sum problem exposing the method is accepted.
        if not callable(getattr(problem, "minibatch_worker_grads", None)):
            raise ValueError(
                f"Invalid problem: {type(problem).__name__} (Minibatch noise needs a "
                "finite-sum problem with a minibatch_worker_grads method, "
                "e.g. sdeopt.problems.FiniteSumProblem)"
            )
        sizes = getattr(problem, "shard_sizes", None)
        if isinstance(sizes, torch.Tensor) and sizes.numel() and self.batch_size > int(sizes.min()):
            raise ValueError(
                f"Invalid batch_size: {self.batch_size!r} (must be <= the smallest "
                f"shard size {int(sizes.min())} of the problem)"
            )

    def sample(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        raise ValueError(
            "Invalid use of Minibatch noise: it is not additive (g_i - ∇f_i depends "
            "on the data), so it has no sample(); draw gradients with oracle() or "
            "oracle_mean()"
        )

    def oracle(
        self, problem: Problem, x: torch.Tensor, n_workers: int, rng: RandomSource
    ) -> torch.Tensor:
        """Minibatch worker gradients, (B, N, d)."""
        self.check_problem(problem)
        # check_problem found the method (mypy cannot narrow on callable(getattr(...))).
        finite_sum = cast(_MinibatchProblem, problem)
        # replacement only when asked: a duck-typed problem of the previous version lacks it.
        extra = {"replacement": True} if self.replacement else {}
        return finite_sum.minibatch_worker_grads(
            x, self.batch_size, n_workers, rng, **extra
        )  # (B, N, d)

    def noise_factor(self, problem: Problem, n_workers: int) -> NoiseFactor:
        """:math:`F_i` = the centred per-sample gradients of shard i times sqrt(c_b / n_i),
        applied by one weighted per-sample contraction (``minibatch_noise_apply``)."""
        self.check_problem(problem)
        finite_sum = cast(_MinibatchProblem, problem)
        shards, rank = finite_sum.shard_index.shape  # (S, n_max)
        b, replacement = self.batch_size, self.replacement
        return NoiseFactor(
            shards=int(shards),
            rank=int(rank),
            apply=lambda x, w: finite_sum.minibatch_noise_apply(x, b, w, replacement=replacement),
            factors=lambda x: finite_sum.minibatch_cov_factors(x, b, replacement=replacement),
            diag=lambda x: finite_sum.minibatch_cov_diag(x, b, replacement=replacement),
        )

    def worker_cov(
        self, problem: Problem, x: torch.Tensor, grads: torch.Tensor, n_workers: int
    ) -> StructuredCov:
        """No diagonal part; factors (B, N or 1, d, n_max): the centred per-sample gradients of
        each shard times sqrt(c_b / n_i), zero on padding (``minibatch_cov_factors``)."""
        self.check_problem(problem)
        finite_sum = cast(_MinibatchProblem, problem)
        factors = finite_sum.minibatch_cov_factors(
            x, self.batch_size, replacement=self.replacement
        )  # (B, S, d, n_max)
        diag = factors.new_zeros(factors.shape[:-1])  # (B, S, d)
        return StructuredCov(diag=diag, factors=factors, signs=(1.0,) * factors.shape[-1])

    def oracle_mean(
        self, problem: Problem, x: torch.Tensor, n_workers: int, rng: RandomSource
    ) -> torch.Tensor:
        r""":math:`\frac{1}{N} \sum_i g_i`, (B, d)."""
        return self.oracle(problem, x, n_workers, rng).mean(dim=1)

    def config(self) -> dict:
        return {"type": "Minibatch", "batch_size": self.batch_size, "replacement": self.replacement}
