"""Gradient-noise laws: worker i returns g_i = ∇f_i(x) + Z_i."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from sdeopt._validation import (
    check_in_range,
    check_int,
    check_nonnegative,
    check_positive,
    check_scales,
)
from sdeopt.problems import Problem
from sdeopt.random import RandomSource
from sdeopt.special import log_beta_half, student_t_cdf


class Noise(ABC):
    """Base class of additive gradient-noise laws.

    A law with per-worker scales (a length-N sequence) fixes the number of workers it can
    serve; ``check_workers`` enforces it.
    """

    #: True when Z has finite variance (a Brownian SDE exists).
    finite_variance: bool = True

    @abstractmethod
    def sample(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        """Draw Z_i for all runs and workers.

        Args:
            rng: source of randomness (B runs).
            grads: exact worker gradients, (B, N, d) or (B, 1, d); state-dependent laws use them.
            n_workers: N.
        Returns:
            (B, N, d) noise.
        """

    def sample_worker_mean(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        """(1/N) sum_i Z_i, exact in law, (B, d). Laws with a shortcut (Gaussian) override this."""
        return self.sample(rng, grads, n_workers).mean(dim=1)

    def oracle(self, problem: Problem, x: torch.Tensor, n_workers: int, rng: RandomSource) -> torch.Tensor:
        """Stochastic worker gradients g_i = ∇f_i(x) + Z_i, (B, N, d)."""
        grads = problem.worker_grads(x)
        return grads + self.sample(rng, grads, n_workers)

    def oracle_mean(self, problem: Problem, x: torch.Tensor, n_workers: int, rng: RandomSource) -> torch.Tensor:
        """(1/N) Σ_i g_i, exact in law, (B, d); uses ``sample_worker_mean`` shortcuts."""
        grads = problem.worker_grads(x)  # (B, N or 1, d)
        mean = grads[:, 0] if grads.shape[1] == 1 else grads.mean(dim=1)  # (B, d)
        return mean + self.sample_worker_mean(rng, grads, n_workers)

    def check_workers(self, n_workers: int) -> None:
        """Raise ``ValueError`` if per-worker scales do not match ``n_workers``."""

    def check_problem(self, problem: Problem) -> None:
        """Raise ``ValueError`` if this law cannot serve ``problem``."""

    def config(self) -> dict:
        """A JSON-able description (for dataset attrs)."""
        return {"type": type(self).__name__}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({params})"


class ScaledSymmetricNoise(Noise):
    """Z_i = σ_i T with T i.i.d. per coordinate, symmetric about 0, of a fixed standard law.

    Args:
        scale: σ, one number >= 0 shared by all workers, or a length-N sequence (per worker).
    """

    def __init__(self, scale: float | Sequence[float] = 1.0) -> None:
        self.scale = check_scales("scale", scale)

    @abstractmethod
    def sample_standard(self, rng: RandomSource, *shape: int) -> torch.Tensor:
        """Draws of the standard law T, shape (B, *shape)."""

    def scales(self, n_workers: int, device=None, dtype=None) -> torch.Tensor:
        """σ_i as a (N,) tensor (per-worker) or a (1,) tensor (shared)."""
        self.check_workers(n_workers)
        values = self.scale if isinstance(self.scale, tuple) else (self.scale,)
        return torch.tensor(values, device=device, dtype=dtype)

    def sample(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        t = self.sample_standard(rng, n_workers, grads.shape[-1])  # (B, N, d)
        return t * self.scales(n_workers, t.device, t.dtype).unsqueeze(-1)

    def check_workers(self, n_workers: int) -> None:
        if isinstance(self.scale, tuple) and len(self.scale) != n_workers:
            raise ValueError(f"Invalid scale: {list(self.scale)!r} (has {len(self.scale)} "
                             f"per-worker entries but n_workers={n_workers})")

    def config(self) -> dict:
        return {"type": type(self).__name__, "scale": _jsonable(self.scale)}


class SymmetricCDFNoise(ScaledSymmetricNoise):
    """A scaled symmetric law whose standard CDF F is available on any device."""

    @abstractmethod
    def standard_pdf(self, y: torch.Tensor) -> torch.Tensor:
        """The density F'(y) of the standard law, elementwise."""

    @abstractmethod
    def standard_cdf(self, y: torch.Tensor) -> torch.Tensor:
        """F(y) = P(T <= y), elementwise, same shape, dtype and device as y."""

    def sign_probabilities(self, grads: torch.Tensor, n_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """P(sign(∇f_i + σ_i T) = +1) and P(... = -1), each shaped like grads (B, N or 1, d).

        One CDF evaluation: the smaller probability is the tail F(-|y|), computed directly
        (not as 1 - F(|y|)) so that it stays accurate far out; σ_i = 0 gives the
        deterministic sign (with sign(0) = 0).
        """
        values = self.scale if isinstance(self.scale, tuple) else (self.scale,)
        if min(values) > 0:
            # where(y > 0, 1 - tail, tail) as arithmetic (torch.where measured ~20x slower on
            # the CPU); the smaller probability stays the tail itself, exactly.
            tail, up = self.sign_tails(grads, n_workers)
            gap = 1.0 - 2.0 * tail
            return torch.addcmul(tail, up, gap), torch.addcmul(tail, 1.0 - up, gap)
        s = self.scales(n_workers, grads.device, grads.dtype).unsqueeze(-1)  # (N or 1, 1)
        positive = s > 0
        y = grads / torch.where(positive, s, torch.ones_like(s))
        tail = self.standard_cdf(-y.abs())
        up = y > 0
        p_plus = torch.where(positive, torch.where(up, 1.0 - tail, tail), (grads > 0).to(grads.dtype))
        p_minus = torch.where(positive, torch.where(up, tail, 1.0 - tail), (grads < 0).to(grads.dtype))
        return p_plus, p_minus

    def sign_tails(self, grads: torch.Tensor, n_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For scales σ_i > 0: the minority sign's probability tail = F(-|∇f_i|/σ_i) <= 1/2,
        computed directly (never as 1 - F), and up = [∇f_i > 0] as 0/1 floats (the majority
        sign is + where up = 1; at ∇f_i = 0 both are 1/2). tail is (B, N, d) for per-worker
        scales (or grads of shape (B, N, d)), else shaped like grads; up is shaped like grads.

        Comparisons write floats through ``out=``: a bool result cast to float measured ~7x
        slower on the CPU.
        """
        if isinstance(self.scale, tuple):
            s = self.scales(n_workers, grads.device, grads.dtype).unsqueeze(-1)  # (N, 1)
            tail = self.standard_cdf(grads.abs().neg_() / s)  # (B, N, d)
        else:  # a Python scalar: in place, no broadcast (measured 0.3 ms/step cheaper at 10^5 values)
            tail = self.standard_cdf(grads.abs().div_(-self.scale))
        return tail, torch.gt(grads, 0.0, out=torch.empty_like(grads))  # up: shaped like grads

    def sign_mean(self, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        """m_i = E sign(∇f_i + σ_i T) = 2 F(∇f_i/σ_i) - 1 (docs/models.md), shaped like grads."""
        p_plus, p_minus = self.sign_probabilities(grads, n_workers)
        return p_plus - p_minus


def _jsonable(value):
    """Per-worker scales are stored as tuples; JSON (and dataset attrs) want lists."""
    return list(value) if isinstance(value, tuple) else value


def _as_tensor(value: float | tuple[float, ...], device, dtype) -> torch.Tensor:
    """A scale as a (N,) tensor (per-worker) or a (1,) tensor (shared)."""
    values = value if isinstance(value, tuple) else (value,)
    return torch.tensor(values, device=device, dtype=dtype)  # (N or 1,)


def _check_grads(grads: torch.Tensor, n_workers: int) -> None:
    if grads.dim() != 3 or grads.shape[1] not in (1, n_workers):
        raise ValueError(f"Invalid grads: shape {tuple(grads.shape)} (must be (B, N, d) or "
                         f"(B, 1, d) with N = n_workers = {n_workers})")


# ---------------------------------------------------------------------------------------------
# Gaussian
# ---------------------------------------------------------------------------------------------

class Gaussian(SymmetricCDFNoise):
    r"""Gaussian gradient noise: ``Z_i = σ_i z``, ``z ~ N(0, I_d)``.

    Worker i's stochastic gradient is ``g_i = ∇f_i(x) + σ_i z_i`` with z_i i.i.d. standard
    normal vectors, independent across workers, runs and steps. The standard law
    T = N(0, 1) has ``F(y) = Φ(y) = (1 + erf(y/√2))/2`` and variance 1.

    Exact shortcut for the workers' average: ``(1/N) Σ_i σ_i z_i ~ N(0, (Σ_i σ_i² / N²) I_d)``
    per run, so ``sample_worker_mean`` makes one (B, d) draw instead of (B, N, d).

    Args:
        scale: σ >= 0, shared by all workers, or a length-N sequence (σ_1, ..., σ_N).

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

    def sample_standard(self, rng: RandomSource, *shape: int) -> torch.Tensor:
        return rng.normal(*shape)  # (B, *shape)

    def sample_worker_mean(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        """(1/N) Σ_i σ_i z_i drawn as one Gaussian of variance Σ_i σ_i² / N², (B, d)."""
        self.check_workers(n_workers)
        if isinstance(self.scale, tuple):
            std = math.sqrt(sum(s * s for s in self.scale)) / n_workers
        else:
            std = self.scale / math.sqrt(n_workers)
        return rng.normal(grads.shape[-1]) * std  # (B, d)

    def standard_cdf(self, y: torch.Tensor) -> torch.Tensor:
        return torch.special.ndtr(y)

    def standard_pdf(self, y: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * y * y) * (1.0 / math.sqrt(2.0 * math.pi))


# ---------------------------------------------------------------------------------------------
# Student-t
# ---------------------------------------------------------------------------------------------

class StudentT(SymmetricCDFNoise):
    r"""Student-t gradient noise: ``Z_i = σ_i T``, T with i.i.d. ``t_nu`` coordinates.

    Heavy-tailed for small nu: E|T| < ∞ only for nu > 1, and
    ``Var T = nu/(nu-2)`` only for nu > 2; ``nu <= 2`` is the regime of interest (no Brownian
    SDE exists, ``finite_variance`` is False there). nu may be any positive real.

    Sampler (exact, rejection-free form of Bailey's polar method): with U_1, U_2 independent
    uniform on [0, 1) and E = -log(1 - U_2) ~ Exp(1),

        T = cos(2π U_1) · sqrt(nu (exp(2E/nu) - 1))  =  cos(2π U_1) · sqrt(nu (W^{-2/nu} - 1)),

    W = 1 - U_2 in (0, 1]. (Bailey's point (U, V) uniform in the unit disc has W = U² + V²
    uniform and an independent uniform angle; T = U sqrt(nu (W^{-2/nu} - 1)/W) is then the
    expression above.) ``expm1`` keeps it exact for huge nu; for nu < 1 it is evaluated as
    ``sqrt(nu) exp(E/nu) sqrt(1 - exp(-2E/nu))`` so that no intermediate overflows before T
    itself does. It costs two uniforms and four elementwise transcendentals, several times
    faster than ``torch.distributions.StudentT`` (a Gaussian and a Gamma draw).

    CDF: ``student_t_cdf`` (continued fraction of the incomplete beta, every nu > 0).

    Args:
        nu: degrees of freedom, a finite number > 0.
        scale: σ >= 0, shared, or a length-N sequence (one per worker).

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

    @property
    def variance(self) -> float:
        """Var T = nu/(nu-2) for nu > 2, else inf."""
        return self.nu / (self.nu - 2.0) if self.nu > 2.0 else math.inf

    def sample_standard(self, rng: RandomSource, *shape: int) -> torch.Tensor:
        nu = self.nu
        angle = rng.uniform(*shape).mul_(2.0 * math.pi)  # (B, *shape)
        e_over_nu = torch.log1p(rng.uniform(*shape).neg_()).mul_(-1.0 / nu)  # (B, *shape), E/nu
        if nu >= 1.0:
            # 2E/nu <= 2 * 37 (the largest E from a float64 uniform): expm1 cannot overflow.
            radius = e_over_nu.mul_(2.0).expm1_().mul_(nu).sqrt_()
        else:
            radius = torch.expm1(e_over_nu * -2.0).neg_().sqrt_().mul_(e_over_nu.exp_()).mul_(math.sqrt(nu))
        return angle.cos_().mul_(radius)

    def standard_pdf(self, y: torch.Tensor) -> torch.Tensor:
        """(1 + y²/nu)^{-(nu+1)/2} / (sqrt(nu) B(nu/2, 1/2))."""
        log_norm = -0.5 * math.log(self.nu) - log_beta_half(0.5 * self.nu)
        return torch.exp(log_norm - 0.5 * (self.nu + 1.0) * torch.log1p(y * y / self.nu))

    def standard_cdf(self, y: torch.Tensor) -> torch.Tensor:
        return student_t_cdf(y, self.nu)

    def config(self) -> dict:
        return {"type": "StudentT", "nu": self.nu, "scale": _jsonable(self.scale)}


# ---------------------------------------------------------------------------------------------
# Symmetric alpha-stable
# ---------------------------------------------------------------------------------------------

class SymmetricStable(ScaledSymmetricNoise):
    r"""Symmetric α-stable gradient noise: ``Z_i = σ_i S``, S i.i.d. ``SαS`` coordinates.

    S follows the standard law S(α, β=0, γ=1, δ=0) (Nolan's parametrizations 0 and 1 agree
    for β = 0), with characteristic function ``E exp(iuS) = exp(-|u|^α)``; σ S then has
    ``exp(-σ^α |u|^α)``. Hence α = 2 gives ``σ S ~ N(0, 2σ²)`` (not N(0, σ²)), and α = 1
    gives the Cauchy law of scale σ. Only α = 2 has a finite variance (``Var S = 2``);
    E|S| < ∞ iff α > 1. This is ``scipy.stats.levy_stable(alpha, 0, scale=σ)``.

    Sampler (Chambers-Mallows-Stuck, β = 0): V = π(U - 1/2) uniform on (-π/2, π/2),
    W ~ Exp(1) independent,

        S = sin(αV) / cos(V)^{1/α} · (cos((1-α)V) / W)^{(1-α)/α},

    which is tan(V) for α = 1; α = 2 is drawn directly as √2 z, z ~ N(0, 1). U is shifted by
    half a grid step of the uniform generator so that V never equals ±π/2 exactly (where
    cos V would round to a negative number in float32 and give NaN).

    Args:
        alpha: stability index α in (0, 2].
        scale: σ >= 0, shared, or a length-N sequence (one per worker).

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
        """Var S = 2 for α = 2, else inf."""
        return 2.0 if self.alpha == 2.0 else math.inf

    def sample_standard(self, rng: RandomSource, *shape: int) -> torch.Tensor:
        alpha = self.alpha
        if alpha == 2.0:
            return rng.normal(*shape).mul_(math.sqrt(2.0))  # (B, *shape)
        # Uniform draws lie on a grid of step eps/2 (24 or 53 bits); half a step keeps
        # U in (0, 1) and symmetric about 1/2.
        half_step = torch.finfo(rng.dtype).eps / 4.0
        v = rng.uniform(*shape).add_(half_step - 0.5).mul_(math.pi)  # (B, *shape), V
        if alpha == 1.0:
            return torch.tan(v)
        w = rng.exponential(*shape)  # (B, *shape), W
        out = torch.cos(v * (1.0 - alpha)).div_(w).pow_((1.0 - alpha) / alpha)
        out.div_(torch.cos(v).pow_(1.0 / alpha))
        return out.mul_(v.mul_(alpha).sin_())

    def config(self) -> dict:
        return {"type": "SymmetricStable", "alpha": self.alpha, "scale": _jsonable(self.scale)}


# ---------------------------------------------------------------------------------------------
# Affine variance
# ---------------------------------------------------------------------------------------------

class AffineVariance(Noise):
    r"""Gaussian noise whose variance grows with the gradient: the affine-variance model.

    ``Z_i ~ N(0, v_i(x) I_d)`` with ``v_i(x) = σ0_i² + σ1_i² ||∇f_i(x)||²``, independent
    across workers, runs and steps, where ∇f_i(x) is worker i's exact gradient.
    Exact shortcut for the average: ``(1/N) Σ_i Z_i ~ N(0, (1/N²) Σ_i v_i(x) I_d)``, one
    (B, d) draw.

    Args:
        sigma0: σ0 >= 0 (additive part), shared or a length-N sequence.
        sigma1: σ1 >= 0 (multiplicative part), shared or a length-N sequence.

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

    def __init__(self, *, sigma0: float | Sequence[float] = 0.0,
                 sigma1: float | Sequence[float] = 0.0) -> None:
        self.sigma0 = check_scales("sigma0", sigma0)
        self.sigma1 = check_scales("sigma1", sigma1)
        if (isinstance(self.sigma0, tuple) and isinstance(self.sigma1, tuple)
                and len(self.sigma0) != len(self.sigma1)):
            raise ValueError(f"Invalid sigma1: {list(self.sigma1)!r} (has {len(self.sigma1)} "
                             f"per-worker entries but sigma0 has {len(self.sigma0)})")

    def check_workers(self, n_workers: int) -> None:
        for name, value in (("sigma0", self.sigma0), ("sigma1", self.sigma1)):
            if isinstance(value, tuple) and len(value) != n_workers:
                raise ValueError(f"Invalid {name}: {list(value)!r} (has {len(value)} "
                                 f"per-worker entries but n_workers={n_workers})")

    def variance_at(self, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        """Per-coordinate variance v_i = σ0_i² + σ1_i² ||∇f_i||², (B, N or 1).

        The second dim is 1 only when grads is (B, 1, d) and both scales are shared.
        """
        self.check_workers(n_workers)
        _check_grads(grads, n_workers)
        s0 = _as_tensor(self.sigma0, grads.device, grads.dtype)  # (N or 1,)
        s1 = _as_tensor(self.sigma1, grads.device, grads.dtype)  # (N or 1,)
        sq_norm = grads.square().sum(dim=-1)  # (B, N or 1)
        return s0.square() + s1.square() * sq_norm  # (B, N or 1)

    def sample(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        std = self.variance_at(grads, n_workers).sqrt().unsqueeze(-1)  # (B, N or 1, 1)
        return rng.normal(n_workers, grads.shape[-1]).mul_(std)  # (B, N, d)

    def sample_worker_mean(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        """(1/N) Σ_i Z_i drawn as one Gaussian of variance (1/N²) Σ_i v_i(x), (B, d)."""
        var = self.variance_at(grads, n_workers)  # (B, N or 1)
        std = var.expand(-1, n_workers).sum(dim=1).sqrt().div_(n_workers)  # (B,)
        return rng.normal(grads.shape[-1]).mul_(std.unsqueeze(-1))  # (B, d)

    def config(self) -> dict:
        return {"type": "AffineVariance", "sigma0": _jsonable(self.sigma0),
                "sigma1": _jsonable(self.sigma1)}


# ---------------------------------------------------------------------------------------------
# Minibatch
# ---------------------------------------------------------------------------------------------

class Minibatch(Noise):
    r"""Real minibatch gradients of a finite-sum problem (not an additive law).

    Worker i returns ``g_i = (1/b) Σ_{s ∈ batch_i} ∇f_s(x)``, with a batch of b distinct
    samples drawn uniformly from its shard, independently per run, worker and step; the
    problem does the work (``minibatch_worker_grads(x, batch_size, n_workers, rng)``, e.g.
    ``sdeopt.problems.FiniteSumProblem``). The noise ``g_i - ∇f_i(x)`` depends on the data,
    so this law is used only through ``oracle``/``oracle_mean``; ``sample`` raises. Its
    covariance (finite-population correction) is ``problem.minibatch_covariance``.

    Args:
        batch_size: b, an integer >= 1 (and <= the smallest shard, checked by the problem).

    Shapes: ``oracle`` (B, N, d); ``oracle_mean`` (B, d).

    References:
        Cochran, *Sampling Techniques*, 3rd ed. (1977), Thm 2.2.

    Example:
        >>> import sdeopt as so
        >>> so.noise.Minibatch(batch_size=32)
        Minibatch(batch_size=32)
    """

    finite_variance = True

    def __init__(self, batch_size: int) -> None:
        self.batch_size = check_int("batch_size", batch_size, minimum=1)

    def check_problem(self, problem: Problem) -> None:
        # Duck-typed, so that any finite-sum problem exposing the method is accepted.
        if not callable(getattr(problem, "minibatch_worker_grads", None)):
            raise ValueError(f"Invalid problem: {type(problem).__name__} (Minibatch noise needs a "
                             "finite-sum problem with a minibatch_worker_grads method, "
                             "e.g. sdeopt.problems.FiniteSumProblem)")
        sizes = getattr(problem, "shard_sizes", None)
        if isinstance(sizes, torch.Tensor) and sizes.numel() and self.batch_size > int(sizes.min()):
            raise ValueError(f"Invalid batch_size: {self.batch_size!r} (must be <= the smallest "
                             f"shard size {int(sizes.min())} of the problem)")

    def sample(self, rng: RandomSource, grads: torch.Tensor, n_workers: int) -> torch.Tensor:
        raise ValueError("Invalid use of Minibatch noise: it is not additive (g_i - ∇f_i depends "
                         "on the data), so it has no sample(); draw gradients with oracle() or "
                         "oracle_mean()")

    def oracle(self, problem: Problem, x: torch.Tensor, n_workers: int, rng: RandomSource) -> torch.Tensor:
        """Minibatch worker gradients, (B, N, d)."""
        self.check_problem(problem)
        return problem.minibatch_worker_grads(x, self.batch_size, n_workers, rng)  # (B, N, d)

    def oracle_mean(self, problem: Problem, x: torch.Tensor, n_workers: int, rng: RandomSource) -> torch.Tensor:
        """(1/N) Σ_i g_i, (B, d)."""
        return self.oracle(problem, x, n_workers, rng).mean(dim=1)

    def config(self) -> dict:
        return {"type": "Minibatch", "batch_size": self.batch_size}


# ---------------------------------------------------------------------------------------------
# Isotropic unit-covariance laws (the ε of Itô chains)
# ---------------------------------------------------------------------------------------------

class UnitLaw(ABC):
    """A law of ε in R^d with i.i.d. coordinates, E ε = 0 and E εεᵀ = I (Itô chains).

    Attributes:
        skewness: E ε_j³ (zero for symmetric laws; a non-zero value slows weak convergence).
    """

    skewness: float = 0.0

    @abstractmethod
    def sample(self, rng: RandomSource, dim: int) -> torch.Tensor:
        """Draws of shape (B, d)."""

    def config(self) -> dict:
        return {"type": type(self).__name__, **{k: v for k, v in vars(self).items()}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class StandardNormal(UnitLaw):
    """ε ~ N(0, I)."""

    def sample(self, rng, dim):
        return rng.normal(dim)  # (B, d)


def random_signs(rng: RandomSource, dim: int) -> torch.Tensor:
    """±1 with probability 1/2 each, (B, d): -1 where a uniform is below 1/2.

    Comparisons write 0/1 floats (``out=``); a bool tensor and torch.where measured 3-20x
    slower on the CPU.
    """
    u = rng.uniform(dim)
    return torch.ge(u, 0.5, out=u).mul_(2.0).sub_(1.0)


class Rademacher(UnitLaw):
    """ε_j = ±1 with probability 1/2 each."""

    def sample(self, rng, dim):
        return random_signs(rng, dim)  # (B, d)


class CenteredExponential(UnitLaw):
    """ε_j = E_j - 1, E_j ~ Exp(1): mean 0, variance 1, skewness 2."""

    skewness = 2.0

    def sample(self, rng, dim):
        return rng.exponential(dim) - 1.0  # (B, d)


class ScaledUniform(UnitLaw):
    """ε_j uniform on [-√3, √3] (variance 1)."""

    def sample(self, rng, dim):
        return (2.0 * rng.uniform(dim) - 1.0) * math.sqrt(3.0)  # (B, d)


class StandardizedStudentT(UnitLaw):
    """ε_j = T sqrt((nu - 2)/nu), T ~ t_nu: unit variance, defined for nu > 2 only (the chain
    theory needs E εεᵀ = I)."""

    def __init__(self, nu: float) -> None:
        nu = check_positive("nu", nu)
        if nu <= 2.0:
            raise ValueError(f"Invalid nu: {nu!r} (a standardised Student-t needs nu > 2: for nu <= 2 "
                             "the variance is infinite and ε cannot have identity covariance)")
        self.nu = nu

    def sample(self, rng, dim):
        t = StudentT(nu=self.nu).sample_standard(rng, dim)  # (B, d)
        return t * math.sqrt((self.nu - 2.0) / self.nu)


# ---------------------------------------------------------------------------------------------
# Markov noise (Beznosikov et al., NeurIPS 2023)
# ---------------------------------------------------------------------------------------------

class MarkovNoise(ABC):
    r"""Additive Markov noise g = ∇f(x) + s h(Z_k), one chain per run and coordinate, never restarted.

    Each coordinate carries an independent copy of the chain (Z_k), started from its stationary
    law π; h is centred under π. Per coordinate:

    - ``stationary_variance`` Var_π h(Z_0);
    - ``autocorrelation(j)`` Corr_π(h(Z_0), h(Z_j));
    - ``asymptotic_variance`` σ_eff² = Σ_{j ∈ Z} Cov_π(h(Z_0), h(Z_j)) (the SDE's Σ_eff / s²);
    - ``mixing_time`` τ, the least t with Dobrushin's coefficient Δ(Q^t) <= 1/4.

    Args:
        scale: s >= 0.
    """

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = check_nonnegative("scale", scale)

    @abstractmethod
    def init(self, rng: RandomSource, dim: int) -> torch.Tensor:
        """Stationary draws of the chain state, (B, d)."""

    @abstractmethod
    def advance(self, z: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """One transition of every chain, (B, d) -> (B, d)."""

    @abstractmethod
    def value(self, z: torch.Tensor) -> torch.Tensor:
        """h(z), centred under π, (B, d) floats."""

    @property
    @abstractmethod
    def stationary_variance(self) -> float:
        """Var_π h."""

    @property
    @abstractmethod
    def asymptotic_variance(self) -> float:
        """σ_eff² = Σ_{j ∈ Z} Cov_π(h(Z_0), h(Z_j))."""

    @property
    @abstractmethod
    def mixing_time(self) -> float:
        """τ: Δ(Q^τ) <= 1/4 (inf for a chain that does not mix)."""

    def config(self) -> dict:
        return {"type": type(self).__name__, **{k: (v.tolist() if isinstance(v, torch.Tensor) else v)
                                                for k, v in vars(self).items() if not k.startswith("_")}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


def _geometric_mixing_time(rho: float) -> float:
    """Least t >= 1 with |rho|^t <= 1/4."""
    if abs(rho) <= 0.25:
        return 1.0
    if abs(rho) >= 1.0:
        return math.inf
    return float(math.ceil(math.log(0.25) / math.log(abs(rho))))


class TwoStateMarkov(MarkovNoise):
    """Symmetric two-state chain on {-1, +1} flipping with probability p (autocorrelation 1 - 2p).

    h(z) = z; π uniform; Corr(h(Z_0), h(Z_j)) = rho^j; σ_eff² = (1 + rho)/(1 - rho);
    Δ(Q^t) = |rho|^t. p = 0 never mixes (σ_eff² infinite); p = 1 alternates deterministically.

    Args:
        p: flip probability in [0, 1]. scale: s.
    """

    def __init__(self, p: float, scale: float = 1.0) -> None:
        super().__init__(scale)
        self.p = check_in_range("p", p, 0.0, 1.0)

    @property
    def rho(self) -> float:
        return 1.0 - 2.0 * self.p

    def init(self, rng, dim):
        return random_signs(rng, dim)  # (B, d)

    def advance(self, z, rng):
        u = rng.uniform(z.shape[-1])  # (B, d)
        flip = torch.lt(u, self.p, out=u)  # 1 where the state flips (written as floats: see random_signs)
        return flip.mul_(-2.0).add_(1.0).mul_(z)

    def value(self, z):
        return z

    def autocorrelation(self, lag: int) -> float:
        return self.rho ** abs(lag)

    stationary_variance = property(lambda self: 1.0)
    asymptotic_variance = property(lambda self: math.inf if self.p == 0.0 else (1 + self.rho) / (1 - self.rho))
    mixing_time = property(lambda self: _geometric_mixing_time(self.rho))


class GaussianAR1(MarkovNoise):
    """Gaussian AR(1): Z_{k+1} = rho Z_k + sqrt(1 - rho²) w_k, π = N(0, 1), h(z) = z.

    Corr = rho^j and σ_eff² = (1 + rho)/(1 - rho). On R, Dobrushin's coefficient of the
    Gaussian kernel is 1 (two far-apart starts stay distinguishable for a while), so ``mixing_time``
    reports the contraction time of the chain in Wasserstein distance, |rho|^τ <= 1/4, which
    plays the same role in the theory's step-size condition.

    Args:
        rho: in (-1, 1). scale: s.
    """

    def __init__(self, rho: float, scale: float = 1.0) -> None:
        super().__init__(scale)
        self.rho = check_in_range("rho", rho, -1.0, 1.0, closed="neither")

    def init(self, rng, dim):
        return rng.normal(dim)  # (B, d)

    def advance(self, z, rng):
        return self.rho * z + math.sqrt(1.0 - self.rho**2) * rng.normal(z.shape[-1])

    def value(self, z):
        return z

    def autocorrelation(self, lag: int) -> float:
        return self.rho ** abs(lag)

    stationary_variance = property(lambda self: 1.0)
    asymptotic_variance = property(lambda self: (1 + self.rho) / (1 - self.rho))
    mixing_time = property(lambda self: _geometric_mixing_time(self.rho))


class FiniteMarkov(MarkovNoise):
    """A finite chain with transition matrix P and values h(i) (centred under π automatically).

    π solves πP = π (unique: the chain must have one recurrent class); σ_eff² = 2⟨h̄, F h̄⟩_π -
    ⟨h̄, h̄⟩_π with the fundamental matrix F = (I - P + 1πᵀ)^{-1} (Kemeny & Snell);
    τ from Δ(P^t) = max_{i,j} ½ ||P^t(i, ·) - P^t(j, ·)||_1, stepping t = 1, 2, ...
    (inf when it does not reach 1/4 within 10^4 steps, e.g. a periodic chain).

    Args:
        matrix: (S, S) row-stochastic. values: (S,) h before centring (default 0, 1, ..., S-1).
        scale: s.
    """

    def __init__(self, matrix, values=None, scale: float = 1.0) -> None:
        super().__init__(scale)
        p = torch.as_tensor(matrix, dtype=torch.float64)
        if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 1:
            raise ValueError(f"Invalid matrix: shape {tuple(p.shape)} (must be square, S x S)")
        if not torch.isfinite(p).all() or (p < 0).any():
            raise ValueError(f"Invalid matrix: {p.tolist()!r} (entries must be finite and >= 0)")
        row_sums = p.sum(1)
        if not torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-10, rtol=0):
            raise ValueError(f"Invalid matrix: row sums {row_sums.tolist()!r} (a transition matrix is "
                             "row-stochastic: every row must sum to 1)")
        n = p.shape[0]
        h = torch.arange(n, dtype=torch.float64) if values is None else torch.as_tensor(values, dtype=torch.float64)
        if h.shape != (n,) or not torch.isfinite(h).all():
            raise ValueError(f"Invalid values: {values!r} (must be {n} finite numbers)")
        a = torch.cat([(p.T - torch.eye(n, dtype=torch.float64)), torch.ones(1, n, dtype=torch.float64)])
        if torch.linalg.matrix_rank(a) < n:
            raise ValueError("Invalid matrix: the stationary law is not unique (more than one recurrent class)")
        rhs = torch.zeros(n + 1, dtype=torch.float64)
        rhs[-1] = 1.0
        pi = torch.linalg.lstsq(a, rhs.unsqueeze(-1)).solution.squeeze(-1).clamp(min=0.0)
        self.matrix, self.pi = p, pi / pi.sum()
        self.values = h - (self.pi * h).sum()
        self._cum = torch.cumsum(p, dim=1)  # (S, S) for inverse-CDF transitions
        self._cum_pi = torch.cumsum(self.pi, dim=0)  # (S,)

    def _invert(self, cum: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Index of the first cumulative weight exceeding u; cum (..., S), u (...)."""
        return (u.unsqueeze(-1) >= cum[..., :-1]).sum(-1)

    def init(self, rng, dim):
        cum = self._cum_pi.to(device=rng.device, dtype=rng.dtype)
        return self._invert(cum, rng.uniform(dim))  # (B, d) int64

    def advance(self, z, rng):
        cum = self._cum.to(device=z.device, dtype=rng.dtype)[z]  # (B, d, S)
        return self._invert(cum, rng.uniform(z.shape[-1]))

    def value(self, z):
        return self.values.to(z.device)[z]

    @property
    def stationary_variance(self) -> float:
        return float((self.pi * self.values**2).sum())

    def autocorrelation(self, lag: int) -> float:
        pj = torch.linalg.matrix_power(self.matrix, abs(lag))
        cov = float((self.pi * self.values * (pj @ self.values)).sum())
        return cov / self.stationary_variance

    @property
    def asymptotic_variance(self) -> float:
        n = self.matrix.shape[0]
        fundamental = torch.linalg.inv(torch.eye(n, dtype=torch.float64) - self.matrix + self.pi.unsqueeze(0))
        hv = self.values
        return float(2 * (self.pi * hv * (fundamental @ hv)).sum() - (self.pi * hv * hv).sum())

    @property
    def mixing_time(self) -> float:
        q = torch.eye(self.matrix.shape[0], dtype=torch.float64)
        for t in range(1, 10_001):
            q = q @ self.matrix
            if 0.5 * (q.unsqueeze(0) - q.unsqueeze(1)).abs().sum(-1).max() <= 0.25:
                return float(t)
        return math.inf
