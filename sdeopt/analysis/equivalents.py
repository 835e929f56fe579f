r"""Deterministic equivalents: the ODE that the risk of streaming SGD on Gaussian least squares
concentrates on in high dimension (homogenized SGD; docs/equivalents.md).

For ``StreamingLeastSquares`` (data :math:`a \sim \mathcal N(0, K)`, K = diag(λ), labels
:math:`y = a^\top x^* + \varepsilon`) and DSGD with learning rate :math:`\gamma/d`, write
:math:`v_i = (x - x^*)_i^2` in the eigenbasis, :math:`t = k/d`, and
:math:`R = \frac12 \sum_i \lambda_i v_i` the excess risk. With m samples per step (N workers of
b each) the risk concentrates, as :math:`d \to \infty`, on the solution of

.. math::

    \frac{dv_i}{dt} = -2\gamma\mu(R)\lambda_i v_i + \frac{\gamma^2}{d\,m}\lambda_i \nu(R),

with :math:`\mu = 1`, :math:`\nu = 2R + \sigma^2` for plain SGD (:math:`\sigma^2` the label
variance) and, for SGD whose per-sample gradient is clipped at norm c (b = 1),
:math:`\mu(R) = P(|r| \le \tau)`, :math:`\nu(R) = \mathbb E \min(r^2, \tau^2)`,
:math:`r = \sqrt{2R}\,Z - \varepsilon`, :math:`\tau = c / \sqrt{\operatorname{tr} K}` (finite
for every label law, Cauchy included). For DSignSGD (N workers, one sample each) the rate is
:math:`2\gamma\kappa(R)\sqrt{\lambda_i}` with :math:`\kappa = 2\sqrt{2/\pi}\,g_0(R)`,
:math:`g_0` the density at 0 of r, and the forcing :math:`\gamma^2/(dN)`. Its limit for plain
SGD is
:math:`R_\infty = \frac{\gamma \sigma^2 \bar\lambda / (4m)}{1 - \gamma\bar\lambda / (2m)}`,
:math:`\bar\lambda = \operatorname{tr} K / d`, which diverges at :math:`\gamma\bar\lambda = 2m`.

References:
    Paquette, Paquette, Adlam & Pennington, "Homogenization of SGD in high-dimensions",
    arXiv:2205.07069, and "Implicit regularization or implicit conditioning? Exact risk
    trajectories of SGD in high dimensions", NeurIPS 2022, arXiv:2206.07252.
    Marshall, Xiao, Agarwala & Paquette, "To clip or not to clip: the dynamics of SGD with
    gradient clipping in high-dimensions", arXiv:2406.11733.
    Xiao, Marshall, Agarwala & Paquette, "Exact risk curves of signSGD in high-dimensions",
    arXiv:2411.12135.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from sdeopt._validation import check_int
from sdeopt.discrete.base import Method
from sdeopt.discrete.dcsgd import DCSGD
from sdeopt.discrete.dsignsgd import DSignSGD
from sdeopt.noise import Gaussian, StudentT, SymmetricStable
from sdeopt.noise.streaming import Streaming
from sdeopt.problems import Problem, StreamingLeastSquares

#: The model name of the deterministic equivalent in ``compare`` datasets.
ODE = "ode"
#: The observables the equivalent gives (their concentrated values).
ODE_OBSERVABLES = ("loss", "dist", "grad_norm")
#: Gauss–Legendre nodes per segment of the label-noise quadrature (three segments).
_NODES = 64
#: Points of the geometric grid of R on which mu and nu are tabulated for a clipped method.
_GRID = 400


@dataclass(frozen=True)
class _Case:
    """What the equivalent needs of a (method, problem) pair: the noise law, samples (SGD) or
    workers (sign) averaged per step, the clipping threshold on the residual (or None), and
    whether the steps are signs."""

    noise: Streaming
    m: int
    tau: float | None
    sign: bool = False


def check_equivalent(method: Method, problem: Problem) -> _Case:
    """Raise ``ValueError`` unless the deterministic equivalent is derived for ``method`` on
    ``problem``; else what the solver needs of them."""
    if not isinstance(problem, StreamingLeastSquares):
        raise ValueError(
            f"Invalid problem: {type(problem).__name__} (the deterministic equivalent is "
            "derived for sdeopt.problems.StreamingLeastSquares)"
        )
    if not isinstance(method, (DCSGD, DSignSGD)) or not isinstance(method.noise, Streaming):
        raise ValueError(
            f"Invalid method: {method!r} (DSGD, uncompressed DCSGD or DSignSGD with Streaming "
            "noise)"
        )
    if method.schedule.config().get("type") not in (None, "Constant"):
        raise ValueError(
            f"Invalid method: schedule {method.schedule!r} (a constant learning rate only)"
        )
    noise = method.noise
    if isinstance(method, DSignSGD):
        if noise.batch_size != 1:
            raise ValueError(
                f"Invalid noise: batch_size = {noise.batch_size!r} with DSignSGD (derived for "
                "the sign of one sample's gradient per worker)"
            )
        return _Case(noise, method.n_workers, None, sign=True)
    from sdeopt.compressors import Identity

    if not isinstance(method.compressor, Identity) or method.normalize is not None:
        raise ValueError(
            f"Invalid method: {method!r} (no compression or normalisation: the equivalent is "
            "derived for plain and clipped SGD)"
        )
    if method.coord_clip is not None:
        raise ValueError(
            f"Invalid method: coord_clip = {method.coord_clip!r} (per-sample norm clipping only)"
        )
    m = method.n_workers * noise.batch_size
    clip = method.worker_clip if method.worker_clip is not None else method.clip
    if clip is not None and method.clip is not None and method.n_workers > 1:
        raise ValueError(
            f"Invalid method: clip = {method.clip!r} with {method.n_workers} workers (the norm "
            "of an average couples the workers; use worker_clip)"
        )
    if clip is None:
        if not noise.finite_variance:
            raise ValueError(
                f"Invalid noise: {noise!r} (label noise without a variance makes the risk "
                "infinite; clip the steps)"
            )
        return _Case(noise, m, None)
    if noise.batch_size != 1:
        raise ValueError(
            f"Invalid noise: batch_size = {noise.batch_size!r} with clipping (derived for one "
            "sample per clipped gradient)"
        )
    tau = float(clip) / math.sqrt(float(problem.spectrum.sum()))
    return _Case(noise, m, tau)


def _label_law(label) -> tuple[float, Any]:
    """(scale, the standard law as a frozen scipy distribution) of a label-noise law."""
    scale = float(label.scale)
    if isinstance(label, Gaussian):
        return scale, stats.norm()
    if isinstance(label, StudentT):
        return scale, stats.t(label.nu)
    if isinstance(label, SymmetricStable):
        return scale, stats.levy_stable(label.alpha, 0.0)
    raise ValueError(f"Invalid label: {label!r} (Gaussian, StudentT or SymmetricStable)")


def clipping_factors(noise: Streaming, tau: float, risk) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`\mu(R) = P(|r| \le \tau)` and :math:`\nu(R) = \mathbb E \min(r^2, \tau^2)` for
    :math:`r = \sqrt{2R}\,Z - \varepsilon`, Z standard normal, :math:`\varepsilon` the label
    noise, at the risks ``risk`` (array).

    Given :math:`\varepsilon`, r is normal: the two expectations are the normal law's partial
    moments on :math:`[-\tau, \tau]`; the outer expectation over :math:`\varepsilon` is a
    Gauss–Legendre quadrature in :math:`u = F(\varepsilon)`, split where the integrand has kinks
    as :math:`R \to 0` (:math:`\varepsilon = \pm\tau`). Gaussian (or no) label noise needs no
    quadrature: r is then normal.
    """
    risk = np.atleast_1d(np.asarray(risk, dtype=float))
    scale, law = _label_law(noise.label)
    if scale == 0.0 or isinstance(noise.label, Gaussian):
        # r = sqrt(2R) Z - eps is itself normal, of variance 2R + σ²: no quadrature
        s = np.sqrt(2.0 * risk + scale * scale)[:, None]  # (R, 1)
        eps, weights = np.zeros(1), np.ones(1)
    else:
        s = np.sqrt(2.0 * risk)[:, None]  # (R, 1)
        cuts = [0.0, float(law.cdf(-tau / scale)), float(law.cdf(tau / scale)), 1.0]
        pieces = [(a, b) for a, b in itertools.pairwise(cuts) if b > a]  # empty ones: no nodes
        x, w = np.polynomial.legendre.leggauss(_NODES)
        u = np.concatenate([(b - a) / 2 * x + (a + b) / 2 for a, b in pieces])
        weights = np.concatenate([(b - a) / 2 * w for a, b in pieces])
        eps = scale * law.ppf(u)  # (Q,)
    m = -eps[None, :]  # (1, Q): r ~ N(m, s²) given eps
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(s > 0, (-tau - m) / s, np.where(m < -tau, np.inf, -np.inf))
        hi = np.where(s > 0, (tau - m) / s, np.where(m > tau, -np.inf, np.inf))
    lo, hi = np.minimum(lo, hi), hi
    p = np.clip(special.ndtr(hi) - special.ndtr(lo), 0.0, 1.0)
    phi_lo = np.where(np.isfinite(lo), np.exp(-0.5 * lo * lo), 0.0) / math.sqrt(2 * math.pi)
    phi_hi = np.where(np.isfinite(hi), np.exp(-0.5 * hi * hi), 0.0) / math.sqrt(2 * math.pi)
    m1 = phi_lo - phi_hi  # E[Z 1]
    lo_f = np.where(np.isfinite(lo), lo, 0.0)
    hi_f = np.where(np.isfinite(hi), hi, 0.0)
    m2 = p + lo_f * phi_lo - hi_f * phi_hi  # E[Z² 1]
    inside = m * m * p + 2.0 * m * s * m1 + s * s * m2  # E[r² 1_{|r| <= tau}]
    mu = p @ weights
    nu = (inside + tau * tau * (1.0 - p)) @ weights
    return mu, nu


def residual_density_at_zero(noise: Streaming, risk) -> np.ndarray:
    r""":math:`g_0(R)`, the density at 0 of :math:`r = \sqrt{2R}\,Z - \varepsilon` (Z standard
    normal, :math:`\varepsilon` the label noise): what sets signSGD's drift. Gaussian labels:
    :math:`1/\sqrt{2\pi(2R + \sigma^2)}`; otherwise
    :math:`\mathbb E_Z f_\varepsilon(\sqrt{2R}\,Z)` by Gauss–Hermite quadrature (128 nodes)
    where the normal factor is the narrower (:math:`\sqrt{2R}` below the label scale), else
    :math:`\mathbb E_\varepsilon \varphi(\varepsilon/\sqrt{2R})/\sqrt{2R}` by Gauss–Legendre in
    :math:`u = F(\varepsilon)` (256 nodes)."""
    risk = np.atleast_1d(np.asarray(risk, dtype=float))
    scale, law = _label_law(noise.label)
    if scale == 0.0 or isinstance(noise.label, Gaussian):
        return 1.0 / np.sqrt(2.0 * math.pi * (2.0 * risk + scale * scale))
    s = np.sqrt(2.0 * risk)  # (R,)
    # E_Z f_eps(sZ) by Gauss–Hermite where the normal is the narrower factor (s < scale),
    # E_eps phi(eps/s)/s by Gauss–Legendre in u = F(eps) where the label law is
    z, wz = np.polynomial.hermite_e.hermegauss(128)  # weight exp(-z²/2)
    wz = wz / math.sqrt(2.0 * math.pi)
    by_z = (law.pdf(s[:, None] * z[None, :] / scale) / scale) @ wz
    x, wu = np.polynomial.legendre.leggauss(256)
    eps = scale * law.ppf((x + 1.0) / 2.0)  # (Q,)
    with np.errstate(divide="ignore", invalid="ignore"):
        by_eps = (
            np.exp(-0.5 * (eps[None, :] / s[:, None]) ** 2) / (s[:, None] * math.sqrt(2 * math.pi))
        ) @ (wu / 2.0)
    return np.where(s < scale, by_z, by_eps)


def risk_ode(
    method: Method,
    problem: Problem,
    x0,
    n_steps: int,
    *,
    record_every: int = 1,
    substeps: int = 1,
):
    r"""The deterministic equivalent of the risk of ``method`` on ``problem``, in the dataset
    schema (docs/schema.md) as the model ``"ode"``.

    The ODE of the module docstring, on :math:`t = k/d`, integrated over each optimizer step
    (:math:`\Delta t = 1/d`): the linear part exactly (:math:`e^{-2\gamma\mu\lambda_i \Delta t}`),
    the coupling through R to second order in :math:`\Delta t` (plain SGD: the trapezoid rule,
    whose implicit equation for :math:`R(t + \Delta t)` is scalar and linear; clipped: the
    clipping factors at the step's midpoint, extrapolated from the last two steps). One step
    costs O(d): d = 10^4 eigenvalues over 10^4 steps, every one recorded, take 0.24 s plain
    and 0.78 s clipped on a 2-core CPU.

    Args:
        method: DSGD or uncompressed DCSGD with ``Streaming`` noise, lr :math:`= \gamma/d`,
            constant schedule; plain, or with per-sample norm clipping (``worker_clip``, or
            ``clip`` with one worker; batch size 1); or DSignSGD (batch size 1).
        problem: a ``StreamingLeastSquares``.
        x0: the start, (d,) (every run starts there: :math:`v_i(0) = (x_0 - x^*)_i^2`).
        n_steps: optimizer steps.
        record_every: as in ``simulate``.
        substeps: solver steps per optimizer step (:math:`\Delta t = 1/(d\,\mathrm{substeps})`):
            the solver's own error falls like :math:`\Delta t^2`; compare two values to see it.

    Returns:
        ``xarray.Dataset`` with dims (model = ["ode"], step): ``loss`` (R), ``dist``
        (:math:`\sqrt{\sum_i v_i}`, the concentrated :math:`\lVert x - x^*\rVert`) and
        ``grad_norm`` (:math:`\sqrt{\sum_i \lambda_i^2 v_i}`), with the ``time`` and ``lr_sum``
        coordinates of the schema; attrs ``gamma``, ``samples_per_step``, ``clip_tau`` and,
        for plain SGD, ``limit_risk`` (:math:`R_\infty`, inf past the threshold).

    Warns (``RuntimeWarning``, not an error: divergence is a result) when
    :math:`\gamma\bar\lambda \ge 2m` for plain SGD.
    """
    import xarray as xr

    from sdeopt.engine import check_x0, record_steps

    case = check_equivalent(method, problem)
    noise, m, tau = case.noise, case.m, case.tau
    assert isinstance(problem, StreamingLeastSquares)  # check_equivalent
    d = problem.dim
    lam = problem.spectrum.double().numpy()  # (d,)
    x0 = check_x0(x0, 1, d)[0].numpy()  # (d,): one start, one deterministic path
    v = (x0 - problem.center.double().numpy()) ** 2  # (d,)
    gamma = method.lr * d
    lbar = float(lam.mean())
    sigma2 = noise.label_variance
    steps = record_steps(n_steps, record_every)
    limit = math.nan
    # v_i' = -2γ μ(R) slope_i v_i + coupling_i ν(R): slope λ and coupling γ²λ/(dm) for SGD,
    # slope √λ and coupling γ²/(dN) for signs (docs/equivalents.md)
    slope = lam
    coupling = gamma * gamma * lam / (d * m)  # (d,)
    if case.sign:
        slope = np.sqrt(lam)
        coupling = np.full(d, gamma * gamma / (d * m))
        kappa_scale = 2.0 * math.sqrt(2.0 / math.pi)
        if isinstance(noise.label, Gaussian) or noise.label_variance == 0.0:
            # the closed form of residual_density_at_zero, inline: one call per solver step

            def factors(r):
                return kappa_scale / math.sqrt(2.0 * math.pi * (2.0 * r + sigma2)), 1.0

        else:
            r0 = max(0.5 * float(lam @ v), 1e-300)
            grid = np.geomspace(r0 * 1e-12, r0 * 1e6, _GRID)
            kappa_grid = kappa_scale * residual_density_at_zero(noise, grid)
            log_grid = np.log(grid)

            def factors(r):
                x = math.log(min(max(r, grid[0]), grid[-1]))
                return float(np.interp(x, log_grid, kappa_grid)), 1.0

    elif tau is None:
        threshold = 2.0 * m / lbar
        limit = (
            gamma * sigma2 * lbar / (4 * m) / (1 - gamma * lbar / (2 * m))
            if gamma < threshold
            else math.inf
        )
        if gamma >= threshold:
            warnings.warn(
                f"risk_ode: gamma * mean eigenvalue = {gamma * lbar:.3g} >= 2m = {2 * m} (m = "
                f"{m} samples per step): the risk diverges",
                RuntimeWarning,
                stacklevel=2,
            )

        def factors(r):
            return 1.0, 2.0 * r + sigma2

    else:
        r0 = max(0.5 * float(lam @ v), tau * tau, 1e-300)
        grid = np.geomspace(r0 * 1e-12, r0 * 1e6, _GRID)
        mu_grid, nu_grid = clipping_factors(noise, tau, grid)
        log_grid = np.log(grid)

        def factors(r):
            x = math.log(min(max(r, grid[0]), grid[-1]))
            return float(np.interp(x, log_grid, mu_grid)), float(np.interp(x, log_grid, nu_grid))

    substeps = check_int("substeps", substeps, minimum=1)
    dt = 1.0 / (d * substeps)
    out: dict[str, list[float]] = {"loss": [], "dist": [], "grad_norm": []}
    wanted = set(steps)

    def record(v):
        out["loss"].append(0.5 * float(lam @ v))
        out["dist"].append(math.sqrt(float(v.sum())))
        out["grad_norm"].append(math.sqrt(float((lam * lam) @ v)))

    plain = tau is None and not case.sign
    if plain:
        # mu = 1: the linear part's factors are fixed, and the trapezoid rule's implicit
        # equation for R(t + dt) is scalar and linear: solved exactly, no predictor.
        decay, gain = _exp_factors(2.0 * gamma * lam, dt)
        push = gain * coupling  # (d,)
        a = 0.5 * float(lam @ push)
    last: tuple[float, float] | None = None  # (mu, nu) one solver step back
    for k in range(n_steps + 1):
        if k in wanted:
            record(v)
        if k == n_steps:
            break
        for _ in range(substeps):
            r = 0.5 * float(lam @ v)
            if plain:
                # v' = D v + push (R + R' + σ²), R' = ½ λ·v'
                #   =>  R' = (½ λ·D v + a (R + σ²)) / (1 - a)
                dv = decay * v
                r_new = (0.5 * float(lam @ dv) + a * (r + sigma2)) / (1.0 - a)
                v = dv + push * (r + r_new + sigma2)
                continue
            # mu and nu at the step's midpoint, extrapolated from this step's and the last's
            # (second order, one exponential per step)
            mu, nu = factors(r)
            last = (mu, nu) if last is None else last
            mid_mu, mid_nu = 1.5 * mu - 0.5 * last[0], 1.5 * nu - 0.5 * last[1]
            last = (mu, nu)
            v = _exp_step(v, 2.0 * gamma * mid_mu * slope, coupling * mid_nu, dt)
    n = len(steps)
    lr_sum = np.asarray(steps, dtype=float) * method.lr
    return xr.Dataset(
        {name: (("model", "step"), np.asarray(vals)[None]) for name, vals in out.items()},
        coords={
            "model": [ODE],
            "step": np.asarray(steps, dtype=np.int64),
            "time": ("step", np.asarray(steps, dtype=float) * method.lr),
            "lr_sum": ("step", lr_sum[:n]),
        },
        attrs={
            "gamma": gamma,
            "samples_per_step": m,
            "clip_tau": math.nan if tau is None else tau,
            "limit_risk": limit,
            "lr": method.lr,
        },
    )


def _exp_factors(rate, dt):
    r"""(:math:`e^{-\rho\, dt}`, :math:`(1 - e^{-\rho\, dt})/\rho`) for the rates
    :math:`\rho` (d,): the exact step of :math:`v' = -\rho v + c` with c constant over the
    step."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(rate > 0, -np.expm1(-rate * dt) / rate, dt)
    return np.exp(-rate * dt), gain


def _exp_step(v, rate, forcing, dt):
    """v at t + dt of v' = -rate v + forcing (both (d,), constant over the step), exactly."""
    decay, gain = _exp_factors(rate, dt)
    return decay * v + forcing * gain
