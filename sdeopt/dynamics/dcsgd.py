"""SDE models of DCSGD (and of DSGD, which is DCSGD with the identity compressor)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sdeopt.compressors import Identity
from sdeopt.covariance import NoiseFactor, StructuredCov
from sdeopt.discrete.dcsgd import DCSGD
from sdeopt.dynamics.recipe import Moments, zero_derivative
from sdeopt.dynamics.sde import (
    Dense,
    Diagonal,
    DiagonalPlusRankOne,
    LowRankOperator,
    sqrt_psd,
)
from sdeopt.noise import AffineVariance, ScaledSymmetricNoise, SymmetricCDFNoise
from sdeopt.problems import Problem, Quadratic


def moments(method: DCSGD, problem: Problem) -> Moments:
    r"""One-step moments of DCSGD with an unbiased compressor (docs/models.md).

    :math:`\bar u = \nabla f`, :math:`(\nabla\bar u)\bar u = \nabla^2 f\,\nabla f`, and

    .. math::

        S = \frac{1}{N^2} \sum_i \mathrm{Cov}[C_i(\nabla f_i + Z_i)],

    each worker's term from the compressor (``Compressor.noisy_cov``) given the noise's
    covariance (``Noise.worker_cov``): :math:`v_i I` for additive laws, the minibatch covariance
    :math:`F_i F_i^\top` (centred per-sample gradients) for ``Minibatch``, and for RandK
    :math:`\mathrm{diag}(c\,d\,\nabla f_i^2 + (d/k) v_i) - c\,\nabla f_i \nabla f_i^\top`,
    :math:`c = (d-k)/(k(d-1))`; for Natural the diagonal
    :math:`\mathbb E_Z \operatorname{Var} C(\nabla f_i + Z_i) + \operatorname{diag} \Sigma_i`
    from the partial moments of the noise's coordinate law (``Noise.coordinate_law``). The
    covariance is applied in structured form: a diagonal, a
    diagonal plus one negative rank-one term (homogeneous workers: O(d) per run), the minibatch
    noise's factors applied as an operator (``_factored``: O(n d) per run, Brownian dimension
    n), the downdated root of ``_downdated_root`` (heterogeneous RandK, RandK on minibatch
    noise: no d x d factorisation), or a dense square root (any other structure). With
    ``coord_clip`` the moments are the clipped law's (``_coordinate_clipped``).

    Raises ValueError, with the reason the noise or the compressor gives, for infinite-variance
    noise (no Brownian SDE: a Lévy-driven SDE is the right object), for laws or compressors
    without a closed-form covariance, and for normalised or norm-clipped steps (estimated
    moments serve those).
    """
    noise, n, d = method.noise, method.n_workers, problem.dim
    if method.normalize is not None or method.clip is not None or method.worker_clip is not None:
        raise ValueError(
            "Invalid method: normalised or norm-clipped DCSGD has no closed-form SDE model here "
            "(the mean of v / max(1, ||v||/λ) or v / (a + b||v||) couples every coordinate); "
            "sde_of(..., moments='estimated', samples=S) builds its first-order model"
        )
    if method.coord_clip is not None:
        return _coordinate_clipped(method, problem)
    x_probe = torch.zeros(1, d, dtype=torch.float64)
    g_probe = problem.worker_grads(x_probe)  # (1, N or 1, d)
    # Refuses, with the noise's or the compressor's reason, before any SDE is built.
    probe = method.compressor.noisy_cov(
        g_probe,
        noise.worker_cov(problem, x_probe, g_probe, n),
        noise.coordinate_law(g_probe, n),
    )
    if isinstance(method.compressor, Identity) and noise.isotropic:
        return _uncompressed(method, problem)
    factor = noise.noise_factor(problem, n)
    if isinstance(method.compressor, Identity) and factor is not None:
        return _factored(problem, factor, n)
    if factor is not None and factor.diag is not None:
        if method.compressor.factored_noisy_cov(g_probe, factor.diag(x_probe)) is not None:
            return _factored_downdate(method, problem, factor, n)

    def worker_cov(x: torch.Tensor) -> StructuredCov:
        grads = problem.worker_grads(x)  # (B, N or 1, d)
        return method.compressor.noisy_cov(
            grads, noise.worker_cov(problem, x, grads, n), noise.coordinate_law(grads, n)
        )

    diffusion, brownian_dim = _structured_diffusion(worker_cov, probe, n, d)
    return Moments(
        mean=problem.grad,
        mean_jvp=problem.hvp,
        diffusion=diffusion,
        noise_type="general",
        brownian_dim=brownian_dim,
    )


def _coordinate_clipped(method: DCSGD, problem: Problem) -> Moments:
    r"""DCSGD whose workers clip each coordinate to :math:`[-\tau, \tau]` before compressing:
    :math:`u = \frac1N \sum_i C_i(\kappa(\nabla f_i + Z_i))`.

    Given x the clipped coordinates are independent, with mean :math:`m_i` and variance
    :math:`V_i` in closed form (``SymmetricCDFNoise.clipped_moments``, every Student-t
    :math:`\nu > 0`). An unbiased compressor whose covariance depends on its input's first two
    moments only (Identity, RandK) then gives :math:`\bar u = \frac1N \sum_i m_i` and
    :math:`S = \frac{1}{N^2} \sum_i \operatorname{Cov}[C(m_i + (y_i - m_i))]`, the compressor's
    ``noisy_cov(m_i, diag V_i)``; other compressors refuse with their reason. For homogeneous
    workers :math:`(\nabla \bar u) v = \frac1N \sum_i P_i \odot \nabla^2 f\, v`,
    :math:`P_i = \partial m_i / \partial g` the probability of the interval. First and second
    order; the curvature model is refused (no derivation for a nonlinear mean, as for
    DSignSGD).
    """
    noise, n, d, tau = method.noise, method.n_workers, problem.dim, method.coord_clip
    assert tau is not None
    if not isinstance(noise, SymmetricCDFNoise):
        raise ValueError(
            f"Invalid noise: {noise!r} (coordinate-wise clipping has a closed-form SDE for "
            "Gaussian and StudentT noise; sde_of(..., moments='estimated') serves other laws)"
        )

    last: dict = {}

    def clipped(x: torch.Tensor):
        """The clipped law's moments at x, computed once per state: the solver asks for the
        drift and the diffusion at the same x (same tensor, same version)."""
        if last.get("x") is not x or last.get("version") != x._version:
            last.update(x=x, version=x._version, value=noise.clipped_moments(
                problem.worker_grads(x), n, tau
            ))  # fmt: skip
        return last["value"]

    def worker_cov(x: torch.Tensor) -> StructuredCov:
        mean, var, _ = clipped(x)
        return method.compressor.noisy_cov(mean, StructuredCov.diagonal(var))

    def average(t: torch.Tensor) -> torch.Tensor:  # (B, N or 1, d) -> (B, d)
        return t[:, 0] if t.shape[1] == 1 else t.mean(dim=1)

    def mean(x: torch.Tensor) -> torch.Tensor:
        return average(clipped(x)[0])

    def mean_jvp(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return average(clipped(x)[2]) * problem.hvp(x, v)

    probe = worker_cov(torch.zeros(1, d, dtype=torch.float64))  # refuses before any SDE
    diffusion, brownian_dim = _structured_diffusion(worker_cov, probe, n, d)
    return Moments(
        mean=mean,
        mean_jvp=None if problem.heterogeneous else mean_jvp,
        diffusion=diffusion,
        noise_type="diagonal" if probe.rank == 0 else "general",
        brownian_dim=brownian_dim,
        refused={
            "curvature": "coordinate-wise clipped DCSGD has no curvature-corrected model: the "
            "+(eta/2)(∇ū)ū correction matches the stationary second moment of gradient steps "
            "on quadratics, where ū is linear in x; the clipped mean is not (docs/models.md); "
            "use 'first_order' or 'second_order'"
        },
    )


def _structured_diffusion(worker_cov, probe: StructuredCov, n: int, d: int):
    r"""The diffusion :math:`\frac{\mathrm{scale}}{N} (\sum_i \mathrm{Cov}_i)^{1/2}` from the
    workers' structured covariances ``worker_cov(x)`` (B, N or 1, d), in the cheapest exact form
    the structure allows (``probe``: its value at one point): a diagonal, diagonal plus one
    rank-one term, the downdated root, or a dense square root. Returns (diffusion, Brownian
    dimension)."""
    shards = max(probe.diag.shape[1], probe.factors.shape[1])
    downdated = _is_downdate(probe) and (shards > 1 or probe.rank > 1)

    def diffusion(x: torch.Tensor, scale: float):
        cov = worker_cov(x)
        if downdated:
            positive = cov.factors[..., 1:]  # (B or 1, S, d, r)
            return _downdated_root(
                cov.diag,
                cov.factors[..., 0],
                positive.shape[-1],
                lambda z: (positive @ z.unsqueeze(-1)).squeeze(-1),
                lambda: positive,
                n,
                scale,
            )
        diag, factors, signs = _sum_over_workers(cov, n)  # Σ_i Cov_i: (B, d), (B, d, R)
        diag = diag * (scale / n) ** 2
        if factors is None:
            return Diagonal(torch.sqrt(diag))
        factors = factors * (scale / n)
        if len(signs) == 1:
            return DiagonalPlusRankOne(diag, factors[..., 0], signs[0])
        # Rank > 1 of another sign pattern than _downdated_root serves: a dense root.
        sign = torch.tensor(signs, dtype=diag.dtype, device=diag.device)  # (R,)
        cov_dense = torch.diag_embed(diag) + (factors * sign) @ factors.transpose(-1, -2)
        return Dense(sqrt_psd(cov_dense))

    return diffusion, shards * (d + probe.rank - 1) if downdated else d


def _is_downdate(cov: StructuredCov) -> bool:
    """True for :math:`D + P P^\top - u u^\top`: one negative first factor, the others positive
    (RandK's ``noisy_cov``), the structure ``_downdated_root`` factors without a d x d matrix."""
    return len(cov.signs) >= 1 and cov.signs[0] < 0 and all(s > 0 for s in cov.signs[1:])


def _downdated_root(
    diag: torch.Tensor,
    down: torch.Tensor,
    rank: int,
    positive_apply: Callable[[torch.Tensor], torch.Tensor],
    positive_dense: Callable[[], torch.Tensor],
    n_workers: int,
    scale: float,
) -> LowRankOperator:
    r"""The diffusion :math:`\frac{\mathrm{scale}}{N} \sum_i G_i\,dW_i` with
    :math:`G_i G_i^\top = M_i = D_i + P_i P_i^\top - u_i u_i^\top` (worker i's covariance in
    RandK's form), each :math:`G_i` applied in :math:`O(d)` plus one application of
    :math:`P_i`, no factorisation.

    With :math:`L = [D^{1/2}, P]` (d x (d + r)) and :math:`w = [D^{-1/2} u; 0]`, :math:`L w = u`,
    so :math:`M = L (I - w w^\top) L^\top` and, for :math:`\|w\|^2 \le 1`,

    .. math::

        G = L (I - \beta w w^\top) = L - \beta\, u\, w^\top, \qquad
        \beta = \frac{1}{1 + \sqrt{1 - \|w\|^2}}

    (:math:`(I - \beta w w^\top)^2 = I - w w^\top` for this :math:`\beta`). For RandK,
    :math:`u = \sqrt{c}\, g` and :math:`D \ge c\, d\, g^2` give :math:`\|w\|^2 \le
    \#\{j: g_j \neq 0\}/d \le 1`; coordinates with :math:`D_j = 0` have :math:`u_j = 0`. A law
    shared by all N workers (one shard) is applied once times :math:`\sqrt N`, as in
    ``_factored``. The Brownian motion has dimension (shards)(d + r).

    Args:
        diag: D, (B or 1, S, d). down: u, (B or 1, S, d). rank: r, the columns of P.
        positive_apply: z (B, S, r) -> P z (B, S, d); positive_dense: () -> P (B or 1, S, d, r).
    """
    b, s, d = torch.broadcast_shapes(diag.shape, down.shape)
    diag, u = diag.expand(b, s, d), down.expand(b, s, d)
    r = rank
    root = torch.sqrt(diag)
    w = torch.where(diag > 0, u / torch.where(diag > 0, root, torch.ones_like(root)), 0.0)
    norm2 = w.square().sum(-1, keepdim=True).clamp_(max=1.0)  # (B, S, 1)
    beta_u = u / (1.0 + torch.sqrt(1.0 - norm2))  # β u, (B, S, d)
    c = scale * (n_workers**0.5 if s == 1 else 1.0) / n_workers

    def apply(dw: torch.Tensor) -> torch.Tensor:
        dw = dw.view(b, s, d + r)
        xi = dw[..., :d]
        out = root * xi - beta_u * (w * xi).sum(-1, keepdim=True)  # (B, S, d)
        if r:
            out = out + positive_apply(dw[..., d:])
        return out.sum(dim=1) * c  # (B, d)

    def dense() -> torch.Tensor:
        positive = positive_dense().expand(b, s, d, r)
        ell = torch.cat([torch.diag_embed(root), positive], dim=-1)  # (B, S, d, d + r)
        w_full = torch.cat([w, w.new_zeros(b, s, r)], dim=-1)  # (B, S, d + r)
        g = ell - beta_u.unsqueeze(-1) * w_full.unsqueeze(-2)
        return g.permute(0, 2, 1, 3).reshape(b, d, s * (d + r)) * c

    return LowRankOperator(apply, dense)


def _factored_downdate(method: DCSGD, problem: Problem, factor: NoiseFactor, n: int) -> Moments:
    r"""DCSGD whose compressor has a ``factored_noisy_cov`` (RandK) on noise given as a factor
    (minibatch noise): :math:`M_i = D_i + a^2 F_i F_i^\top - u_i u_i^\top`, its root by
    ``_downdated_root`` with :math:`P_i = a F_i` applied as the noise's operator. O(n d) per run
    and step, as the minibatch SDE of DSGD; no per-sample gradient tensor is formed where the
    problem contracts in closed form."""
    s, r = factor.shards, factor.rank
    factor_diag = factor.diag
    assert factor_diag is not None  # checked by the caller

    def diffusion(x: torch.Tensor, scale: float):
        grads = problem.worker_grads(x)  # (B, S, d)
        cov = method.compressor.factored_noisy_cov(grads, factor_diag(x))
        assert cov is not None
        a = cov.factor_scale
        return _downdated_root(
            cov.diag,
            cov.down,
            r,
            lambda z: factor.apply(x, z) * a,
            lambda: factor.factors(x) * a,
            n,
            scale,
        )

    return Moments(
        mean=problem.grad,
        mean_jvp=problem.hvp,
        diffusion=diffusion,
        noise_type="general",
        brownian_dim=s * (problem.dim + r),
    )


def _sum_over_workers(cov, n_workers: int):
    """Σ_i of per-worker structured covariances (B, N or 1, d): a shared term counts N times.

    Returns diag (B, d), factors (B, d, R) and their signs (R,): a rank-r term of a shared
    gradient stays rank r (N identical terms: factors times sqrt(N)); per-worker terms stack.
    """
    diag = cov.diag.sum(dim=1) * (n_workers / cov.diag.shape[1])  # (B, d)
    if not cov.signs:
        return diag, None, ()
    factors = cov.factors  # (B, N or 1, d, r)
    if factors.shape[1] == 1:
        return diag, factors[:, 0] * n_workers**0.5, cov.signs
    b, w, d, r = factors.shape
    stacked = factors.permute(0, 2, 1, 3).reshape(b, d, w * r)  # (B, d, N r)
    return diag, stacked, tuple(cov.signs) * w


def _factored(problem: Problem, factor: NoiseFactor, n: int) -> Moments:
    r"""DSGD under noise given as a low-rank operator (minibatch noise):
    :math:`G\,dW = \frac{1}{N} \sum_i F_i\,dW_i`, each :math:`F_i` applied to its own Brownian
    motion of dimension r, O(n d) per run and step. A law shared by all N workers (S = 1) is
    applied once, times :math:`\sqrt{N}`: the sum of N independent :math:`F\,dW_i` has the law of
    :math:`\sqrt{N} F\,dW`.
    """
    s, r = factor.shards, factor.rank
    shared = n**0.5 if s == 1 else 1.0

    def diffusion(x: torch.Tensor, scale: float):
        c = scale * shared / n

        def apply(dw: torch.Tensor) -> torch.Tensor:
            return factor.apply(x, dw.view(dw.shape[0], s, r)).sum(dim=1) * c  # (B, d)

        def dense() -> torch.Tensor:
            f = factor.factors(x)  # (B, S, d, r)
            return f.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], s * r) * c

        return LowRankOperator(apply, dense)

    return Moments(
        mean=problem.grad,
        mean_jvp=problem.hvp,
        diffusion=diffusion,
        noise_type="general",
        brownian_dim=s * r,
    )


def _uncompressed(method: DCSGD, problem: Problem) -> Moments:
    """DSGD's moments, S = (1/N²) Σ_i v_i I: isotropic, so G = g I with g a number per run.

    For a scaled symmetric law S is state-independent: S^{1/2} = sqrt(Σ_i σ_i² Var T) / N is
    computed once (Milstein's correction vanishes). Under affine variance g depends on x through
    ||∇f_i||².
    """
    noise, n, d = method.noise, method.n_workers, problem.dim
    if isinstance(noise, ScaledSymmetricNoise):
        std = (noise.variance * sum(s * s for s in noise.worker_scales(n))) ** 0.5 / n

        def constant(x: torch.Tensor, scale: float):
            return Diagonal(
                torch.full((1, 1), std * scale, dtype=x.dtype, device=x.device).expand_as(x)
            )

        linear = None
        if isinstance(problem, Quadratic) and problem.diag is not None:
            linear = (problem.diag, problem.center)
        return Moments(
            mean=problem.grad,
            mean_jvp=problem.hvp,
            diffusion=constant,
            noise_type="diagonal",
            brownian_dim=d,
            diffusion_derivative=zero_derivative,
            additive=True,
            linear=linear,
        )

    def diffusion(x: torch.Tensor, scale: float):
        grads = problem.worker_grads(x)  # (B, N or 1, d)
        v = noise.worker_variance(grads, n)  # (B or 1, N or 1)
        sum_v = v.sum(-1, keepdim=True) * (n / v.shape[-1])  # (B or 1, 1): Σ_i v_i
        g = torch.sqrt(sum_v) * (scale / n)  # (B or 1, 1)
        return Diagonal(g.expand(x.shape[0], d))  # a view: isotropic

    return Moments(
        mean=problem.grad,
        mean_jvp=problem.hvp,
        diffusion=diffusion,
        noise_type="diagonal",
        brownian_dim=d,
        diffusion_derivative=(
            _affine_derivative(noise, n, problem) if isinstance(noise, AffineVariance) else None
        ),
    )


def _affine_derivative(noise: AffineVariance, n_workers: int, problem: Problem):
    r"""∂g/∂x of DSGD's isotropic diffusion g = (scale/N) sqrt(Σ_i v_i), v_i = σ0_i² + σ1_i² ||∇f||².

    g is the same on every coordinate and depends on all of x through ||∇f||², so the noise is
    commutative only when σ1 = 0 (additive) or d = 1; there, for homogeneous workers,

        ∂g/∂x = (scale/N) (Σ_i σ1_i²) f'(x) f''(x) / sqrt(Σ_i v_i)

    (0 where Σ_i v_i = 0: then g = 0 and the Milstein term g ∂g vanishes). None elsewhere.
    """
    slope = sum(s * s for s in noise.worker_sigma1(n_workers))  # Σ_i σ1_i²
    if slope == 0.0:
        return zero_derivative
    if problem.dim != 1 or problem.heterogeneous:
        return None

    def derivative(x: torch.Tensor, scale: float) -> torch.Tensor:
        grads = problem.worker_grads(x)  # (B, 1, 1)
        v = noise.worker_variance(grads, n_workers)  # (B, N or 1)
        root = torch.sqrt(v.sum(-1, keepdim=True) * (n_workers / v.shape[-1]))  # (B, 1)
        curvature = problem.hvp(x, torch.ones_like(x))  # (B, 1): f''
        num = (scale * slope / n_workers) * grads[:, 0] * curvature
        return torch.where(
            root > 0,
            num / torch.where(root > 0, root, torch.ones_like(root)),
            torch.zeros_like(num),
        )

    return derivative
