"""SDE models of DCSGD (and of DSGD, which is DCSGD with the identity compressor)."""

from __future__ import annotations

import torch

from sdeopt.compressors import Identity, RandK
from sdeopt.discrete.dcsgd import DCSGD
from sdeopt.dynamics.recipe import Moments, zero_derivative
from sdeopt.dynamics.sde import Dense, Diagonal, DiagonalPlusRankOne, sqrt_psd
from sdeopt.noise import AffineVariance, ScaledSymmetricNoise
from sdeopt.problems import Problem


def moments(method: DCSGD, problem: Problem) -> Moments:
    r"""One-step moments of DCSGD with an unbiased compressor (docs/models.md).

    ū = ∇f, (∇ū)ū = ∇²f ∇f, and with v_i the per-coordinate noise variance of worker i,

        S = (1/N²) Σ_i v_i I                                                   (no compression)
        S = (1/N²) Σ_i [c (d diag(∇f_i² + v_i) - ∇f_i∇f_iᵀ - v_i I) + v_i I]   (RandK),

    c = (d-k)/(k(d-1)), i.e. for homogeneous workers diag(D) - (c/N) ∇f∇fᵀ with
    D = (1/N²) Σ_i (c d ∇f² + (1+ω) v_i): a diagonal plus a negative rank-one term, applied in
    O(d) per run. Heterogeneous workers give a rank-N correction: a dense square root.

    Raises ValueError for infinite-variance noise (no Brownian SDE: for SαS noise the right
    object is a Lévy-driven SDE dX = -∇f dt + σ eta^{1-1/α} dL^α), for normalised or clipped
    steps and for compressors without a closed-form E_Z Cov_C (anything but Identity, RandK).
    """
    noise, n, d = method.noise, method.n_workers, problem.dim
    if not noise.finite_variance:
        raise ValueError(
            f"Invalid noise: {noise!r} has infinite variance, so no Brownian SDE "
            "approximates this method (the central limit theorem behind the diffusion "
            "fails); a Lévy-driven SDE is the right model for heavy tails. Use "
            "DSignSGD, whose sign SDE exists for every nu > 0, or noise with nu > 2"
        )
    if method.normalize is not None or method.clip is not None:
        raise ValueError(
            "Invalid method: normalised or clipped DCSGD has no closed-form SDE model here yet "
            "(E[v / (a + b||v||)] has no closed form)"
        )
    if not isinstance(method.compressor, (Identity, RandK)):
        raise ValueError(
            f"Invalid compressor: {method.compressor!r} (the SDE needs E_Z Cov_C[C(∇f + Z)] "
            "in closed form: Identity and RandK provide it)"
        )
    variance = _worker_variance(noise, n)
    identity = isinstance(method.compressor, Identity)
    if identity and isinstance(noise, ScaledSymmetricNoise):
        # State-independent: S^{1/2} = sqrt(Σ_i σ_i² Var T) / N, a number computed once.
        scales = noise.scale if isinstance(noise.scale, tuple) else (noise.scale,) * n
        std = (noise.variance * sum(s * s for s in scales)) ** 0.5 / n

        def constant(x: torch.Tensor, scale: float):
            return Diagonal(
                torch.full((1, 1), std * scale, dtype=x.dtype, device=x.device).expand_as(x)
            )

        return Moments(
            mean=problem.grad,
            mean_jvp=problem.hvp,
            diffusion=constant,
            noise_type="diagonal",
            brownian_dim=d,
            diffusion_derivative=zero_derivative,
        )

    def diffusion(x: torch.Tensor, scale: float):
        grads = problem.worker_grads(x)  # (B, N or 1, d)
        v = variance(grads)  # (B or 1, N or 1)
        sum_v = v.sum(-1, keepdim=True) * (n / v.shape[-1])  # (B or 1, 1): Σ_i v_i
        if isinstance(method.compressor, Identity):
            g = torch.sqrt(sum_v) * (scale / n)  # (B or 1, 1)
            return Diagonal(g.expand(x.shape[0], d))  # a view: isotropic
        k = method.compressor.k
        c = (d - k) / (k * (d - 1)) if d > 1 else 0.0
        omega = d / k - 1.0
        workers_factor = n / grads.shape[1]  # Σ_i over shared gradients
        diag = (
            c * d * (grads * grads).sum(1) * workers_factor + (1.0 + omega) * sum_v
        ) / n**2  # (B, d)
        if grads.shape[1] == 1:
            w = grads[:, 0] * (c / n) ** 0.5  # (B, d): (c/N) ∇f∇fᵀ = w wᵀ
            return DiagonalPlusRankOne(diag * scale**2, w * scale, -1.0)
        outer = (grads.unsqueeze(-1) * grads.unsqueeze(-2)).sum(1)  # (B, d, d)
        cov = torch.diag_embed(diag) - (c / n**2) * outer
        return Dense(sqrt_psd(cov) * scale)

    return Moments(
        mean=problem.grad,
        mean_jvp=problem.hvp,
        diffusion=diffusion,
        noise_type="diagonal" if identity else "general",
        brownian_dim=d,
        diffusion_derivative=_affine_derivative(noise, n, problem) if identity else None,
    )


def _affine_derivative(noise: AffineVariance, n_workers: int, problem: Problem):
    r"""∂g/∂x of DSGD's isotropic diffusion g = (scale/N) sqrt(Σ_i v_i), v_i = σ0_i² + σ1_i² ||∇f||².

    g is the same on every coordinate and depends on all of x through ||∇f||², so the noise is
    commutative only when σ1 = 0 (additive) or d = 1; there, for homogeneous workers,

        ∂g/∂x = (scale/N) (Σ_i σ1_i²) f'(x) f''(x) / sqrt(Σ_i v_i)

    (0 where Σ_i v_i = 0: then g = 0 and the Milstein term g ∂g vanishes). None elsewhere.
    """
    sigma1 = noise.sigma1 if isinstance(noise.sigma1, tuple) else (noise.sigma1,) * n_workers
    slope = sum(s * s for s in sigma1)  # Σ_i σ1_i²
    if slope == 0.0:
        return zero_derivative
    if problem.dim != 1 or problem.heterogeneous:
        return None
    variance = _worker_variance(noise, n_workers)

    def derivative(x: torch.Tensor, scale: float) -> torch.Tensor:
        grads = problem.worker_grads(x)  # (B, 1, 1)
        v = variance(grads)  # (B, N or 1)
        root = torch.sqrt(v.sum(-1, keepdim=True) * (n_workers / v.shape[-1]))  # (B, 1)
        curvature = problem.hvp(x, torch.ones_like(x))  # (B, 1): f''
        num = (scale * slope / n_workers) * grads[:, 0] * curvature
        return torch.where(
            root > 0,
            num / torch.where(root > 0, root, torch.ones_like(root)),
            torch.zeros_like(num),
        )

    return derivative


def _worker_variance(noise, n_workers: int):
    """grads (B, N or 1, d) -> per-coordinate noise variance v_i, (B or 1, N or 1)."""
    if isinstance(noise, ScaledSymmetricNoise):

        def variance(grads):
            s = noise.scales(n_workers, grads.device, grads.dtype)  # (N or 1,)
            return (s * s * noise.variance).unsqueeze(0)

        return variance
    if isinstance(noise, AffineVariance):
        return lambda grads: noise.variance_at(grads, n_workers)
    raise ValueError(
        f"Invalid noise: {noise!r} (no SDE model for this noise law yet: its covariance "
        "is not available in closed form here)"
    )
