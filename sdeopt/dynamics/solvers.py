r"""How an SDE is integrated: native batched schemes (Euler–Maruyama, Milstein, Platen's weak
order 2, Leimkuhler–Matthews, the exact OU step; ``SCHEMES``, orders in docs/models.md) and a
torchsde backend (every torchsde solver, SRK with drawn space-time Lévy areas).

Every optimizer step :math:`k \to k+1` (SDE time lr) is split into ``substeps`` steps of size
:math:`h = \mathrm{lr} / \mathrm{substeps}`; outputs sit at the exact integer steps
:math:`t_k = k \cdot \mathrm{lr}` (time is kept as the integer k plus a substep index, never
accumulated in floating point). The batched loop, chunking, seeding, recording, divergence
handling and streaming are ``sdeopt.engine.run``'s, for the native schemes and the torchsde
backend alike: one loop for every model.

Brownian sources (randomness kept apart from the solver):

- independent: :math:`dW = \sqrt{h}\, z`, :math:`z \sim \mathcal{N}(0, I_m)` from the run's
  RandomSource;
- coupled: the discrete run's own Gaussian draws :math:`\xi_k`
  (``simulate(..., keep_increments=True)``) drive the SDE: the increment over step k is
  :math:`W(t_{k+1}) - W(t_k) = -\sqrt{\mathrm{lr}}\, \xi_k` (the sign makes the SDE's Euler
  step with one substep reproduce
  :math:`x_{k+1} = x_k - \mathrm{lr}\, (\bar u + S^{1/2} \xi_k)`), split over substeps by the
  exact Brownian bridge given that sum.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torchsde._brownian.brownian_base import BaseBrownian

from sdeopt._validation import check_device, check_dtype, check_int
from sdeopt.dynamics.estimated import estimated_step
from sdeopt.dynamics.levy import LevySDE, check_scheme, euler_step, stable_ou_step
from sdeopt.dynamics.sde import SDE
from sdeopt.engine import State, Stepper, run
from sdeopt.problems import Problem
from sdeopt.random import DEFAULT_BLOCK_SIZE, RandomSource, check_seed, derived_seed
from sdeopt.trajectory import Trajectory


class Scheme(ABC):
    """One step of size h of an SDE solver. Attributes: strong and weak order, the order of its
    invariant law's error (``invariant_order``: the weak order unless the scheme does better at
    stationarity), Itô or Stratonovich."""

    strong_order: float
    weak_order: float
    invariant_order: float | None = None  # None: the weak order
    sde_type: str = "ito"
    #: True when a step needs the next step's Gaussian draw (Leimkuhler–Matthews): the stepper
    #: then hands it increments (ξ_n + ξ_{n+1}) √h / 2, and coupling is refused.
    averaged_increments: bool = False

    @abstractmethod
    def step(
        self, sde: SDE, x: torch.Tensor, eta: float, h: float, dw: torch.Tensor
    ) -> torch.Tensor:
        """x (B, d) at t -> x at t + h, with the Brownian increment dw (B, m) over
        :math:`[t, t + h]`."""

    def check(self, sde: SDE) -> None:
        """Raise ``ValueError`` if this scheme does not have its order on ``sde``."""


class EulerMaruyama(Scheme):
    r""":math:`x + b(x)\, h + G(x)\, dW`. Strong order 1/2 (1 for additive noise), weak order 1."""

    strong_order = 0.5
    weak_order = 1.0

    def step(self, sde, x, eta, h, dw):
        return torch.add(x, sde.drift_at(x, eta), alpha=h).add_(sde.diffusion_at(x, eta).apply(dw))


class Milstein(Scheme):
    r"""Euler–Maruyama plus :math:`\tfrac12 g\, \partial g\, (dW^2 - h)`, for commutative diagonal
    noise.

    Strong order 1 needs the iterated Itô integrals :math:`\iint dW_i\, dW_j`; without Lévy
    areas only the diagonal ones :math:`(dW_j^2 - h)/2` are available, which suffices exactly
    when the noise is diagonal and :math:`g_j` depends on :math:`x_j` alone (then
    :math:`L^i g_j = 0` for :math:`i \neq j`). ``sde.diffusion_derivative_fn`` declares this and
    gives :math:`\partial g_j / \partial x_j`; in one dimension every diagonal noise is
    commutative and the derivative is taken by forward-mode autograd when not given. Anything
    else (AffineVariance noise in :math:`d > 1`, DSignSGD on a dense quadratic or logistic
    regression, general noise) is refused: Milstein without Lévy areas is only strong order 1/2
    there.
    Strong order 1, weak order 1.
    """

    strong_order = 1.0
    weak_order = 1.0

    def check(self, sde: SDE) -> None:
        if sde.noise_type != "diagonal":
            raise ValueError(
                f"Invalid scheme: 'milstein' (needs diagonal noise; this SDE has "
                f"{sde.noise_type!r} noise, use 'euler')"
            )
        if sde.diffusion_derivative_fn is None and sde.dim != 1:
            raise ValueError(
                "Invalid scheme: 'milstein' (this SDE's diffusion is not known to be "
                "commutative: g_j may depend on other coordinates than x_j, and strong order 1 "
                "would then need Lévy areas; use 'euler', or for a hand-built SDE whose g_j "
                "depends on x_j only pass diffusion_derivative=)"
            )

    def step(self, sde, x, eta, h, dw):
        g = sde.diffusion_at(x, eta).g
        if sde.diffusion_derivative_fn is not None:
            dg = sde.diffusion_derivative_fn(x, eta)
        else:  # d = 1: the Jacobian-vector product with 1 is the derivative
            try:
                dg = torch.func.jvp(
                    lambda y: sde.diffusion_at(y, eta).g, (x,), (torch.ones_like(x),)
                )[1]
            except (NotImplementedError, RuntimeError) as err:
                raise ValueError(
                    "Invalid scheme: 'milstein' (the diffusion cannot be differentiated by "
                    f"forward-mode autograd: {err}; pass diffusion_derivative=)"
                ) from None
        return x + sde.drift_at(x, eta) * h + g * dw + 0.5 * g * dg * (dw * dw - h)


class ExactOU(Scheme):
    r"""The exact step of a linear drift with additive diagonal noise (Ornstein–Uhlenbeck):
    per coordinate, :math:`x' = c + e^{-\rho h}(x - c) + g \sqrt{(1 - e^{-2\rho h})/(2\rho)}\, z`,
    :math:`z = dW/\sqrt h`, for the drift :math:`-\rho \odot (x - c)` of ``sde.linear_fn``
    (DSGD's three models on a diagonal quadratic under additive noise). Exact in law at any
    step size, so a quadratic's figures carry no solver error; with coupling it uses the
    discrete run's draw as its z.
    """

    strong_order = math.inf
    weak_order = math.inf

    def check(self, sde: SDE) -> None:
        if sde.linear_fn is None or not sde.additive or sde.noise_type != "diagonal":
            raise ValueError(
                "Invalid scheme: 'exact' (the Ornstein–Uhlenbeck step needs a linear diagonal "
                "drift with additive diagonal noise: DSGD under Gaussian or Student-t noise on a "
                "diagonal Quadratic; use 'weak2' or 'euler')"
            )

    def step(self, sde, x, eta, h, dw):
        rate, center = sde.linear_fn(eta)
        rate, center = rate.to(x), center.to(x)  # (d,)
        small = rate.abs() * h < 1e-12
        safe = torch.where(small, torch.ones_like(rate), rate)
        # (1 - e^{-2ρh}) / (2ρh): the variance of the OU increment over h, relative to h
        ratio = torch.where(small, 1.0 - rate * h, -torch.expm1(-2.0 * safe * h) / (2.0 * safe * h))
        noise = sde.diffusion_at(x, eta).g * ratio.sqrt()  # (B, d)
        return torch.addcmul(center, torch.exp(-rate * h), x - center).addcmul_(noise, dw)


class LeimkuhlerMatthews(Scheme):
    r"""Leimkuhler–Matthews for additive noise:
    :math:`x_{n+1} = x_n + h\, b(x_n) + G \sqrt h\, (\xi_n + \xi_{n+1})/2`. The cost of Euler;
    weak order 1 on a finite horizon, but its invariant law is second-order accurate (exact for
    the OU process: stationary variance :math:`\sigma^2/(2a)` at every stable h, against Euler's
    :math:`\sigma^2/(2a(1 - ah/2))`). The first step uses :math:`(\xi_0 + \xi_1)/2`, a fresh
    :math:`\xi_0` included. Coupling is refused: a step uses two draws.

    References:
        Leimkuhler & Matthews, "Rational construction of stochastic numerical methods for
        molecular sampling", AMRX 2013(1); Leimkuhler, Matthews & Stoltz, IMA J. Numer. Anal.
        36(1), 2016.
    """

    strong_order = 0.5
    weak_order = 1.0
    invariant_order = 2.0
    averaged_increments = True

    def check(self, sde: SDE) -> None:
        if not sde.additive:
            raise ValueError(
                "Invalid scheme: 'leimkuhler_matthews' (needs additive noise: this SDE's "
                "diffusion depends on x; use 'weak2' or 'euler')"
            )

    def step(self, sde, x, eta, h, dw):
        return torch.add(x, sde.drift_at(x, eta), alpha=h).add_(sde.diffusion_at(x, eta).apply(dw))


class PlatenWeak2(Scheme):
    r"""Platen's explicit order 2.0 weak scheme (Kloeden & Platen 1992, eq. 15.1.1), with
    Gaussian increments :math:`\Delta W`:

    .. math::

        \bar x = x + b h + g \Delta W, \quad x^\pm = x + b h \pm g \sqrt h, \\
        x' = x + \tfrac12 (b(\bar x) + b) h + \tfrac14 (g(x^+) + g(x^-) + 2g) \Delta W
             + \tfrac14 (g(x^+) - g(x^-)) (\Delta W^2 - h) / \sqrt h .

    Derivative-free and weak order 2 for smooth coefficients. For additive noise it is the
    stochastic Heun step :math:`x + \frac12 (b(x) + b(\bar x)) h + G \Delta W` (two drift
    evaluations, any noise structure); otherwise it needs diagonal, commutative noise
    (:math:`g_j` depending on :math:`x_j` alone, as Milstein does), where the multi-dimensional
    scheme's cross terms vanish and the formula acts coordinate by coordinate. Chosen over
    Talay–Tubaro extrapolation because it gives weak order 2 path by path (one solve, any
    statistic, coupling kept), where extrapolation needs two solves and acts on expectations
    only.
    """

    strong_order = 1.0
    weak_order = 2.0

    def check(self, sde: SDE) -> None:
        if sde.additive:
            return
        try:
            SCHEMES["milstein"].check(sde)
        except ValueError as err:
            raise ValueError(
                str(err)
                .replace("'milstein'", "'weak2'")
                .replace(
                    "strong order 1 would then need Lévy areas",
                    "weak order 2 would then need the cross terms of non-commutative noise",
                )
            ) from None

    def step(self, sde, x, eta, h, dw):
        b = sde.drift_at(x, eta)
        diff = sde.diffusion_at(x, eta)
        if sde.additive:
            noise = diff.apply(dw)
            bar = torch.add(x, b, alpha=h).add_(noise)
            return torch.add(x, b + sde.drift_at(bar, eta), alpha=0.5 * h).add_(noise)
        g = diff.g
        sq = math.sqrt(h)
        base = torch.add(x, b, alpha=h)
        g_up = sde.diffusion_at(base + g * sq, eta).g
        g_dn = sde.diffusion_at(base - g * sq, eta).g
        bar = base + g * dw
        out = torch.add(x, b + sde.drift_at(bar, eta), alpha=0.5 * h)
        out += 0.25 * (g_up + g_dn + 2.0 * g) * dw
        return out.add_(0.25 * (g_up - g_dn) * (dw * dw - h) / sq)


#: Native schemes by name.
SCHEMES = {
    "euler": EulerMaruyama(),
    "milstein": Milstein(),
    "weak2": PlatenWeak2(),
    "leimkuhler_matthews": LeimkuhlerMatthews(),
    "exact": ExactOU(),
}
BACKENDS = ("native", "torchsde")


@dataclass
class _CoupledState(State):
    """X plus, when coupled, the discrete run's Gaussian draws ξ_k of this chunk, (K, B, d); and
    for Leimkuhler–Matthews the last Gaussian draw, (B, m)."""

    xi: torch.Tensor | None = None
    carry: torch.Tensor | None = None
    #: with ``solve(path_seed=...)``: the sources of the Brownian path shared by solves with
    #: different substeps, level 0 (whole optimizer steps) first, then one per dyadic level
    path: tuple[RandomSource, ...] = ()


@dataclass
class _TorchsdeState(State):
    """X plus the chunk's Brownian increments (n, B, m) and the cached window of sdeint outputs:
    its first step and the outputs (W + 1, B, D), or None before the first window."""

    dw: torch.Tensor | None = None
    window: tuple[int, torch.Tensor | None] = (0, None)
    area: torch.Tensor | None = None  # (n, B, m) space-time Lévy areas H, for 'srk'


class _DrivenStepper(Stepper):
    """An SDE with ``substeps`` solver steps per optimizer step, driven by fresh draws or,
    coupled, by a discrete run's kept draws ``increments``: what the Brownian and the Lévy
    steppers share. The state is the SDE's X (B, D) (D = ``sde.dim`` >= d); ``observe`` gives
    the problem's x."""

    def __init__(
        self,
        sde: SDE,
        substeps: int,
        increments: torch.Tensor | None,
        first_run: int,
        path_seed: int | None = None,
    ) -> None:
        self.sde, self.substeps = sde, substeps
        self.lr, self.schedule = sde.lr, sde.schedule
        self.increments = increments  # (K, B_all, d) on the CPU, or None
        self.first_run = first_run  # of the study: rng.first_run - first_run indexes increments
        self.path_seed = path_seed

    def init_state(self, x0, problem, rng):
        state = _CoupledState(x=self.sde.lift(x0))
        if self.increments is not None:
            start = rng.first_run - self.first_run
            chunk = self.increments[:, start : start + rng.n_runs]
            state.xi = chunk.to(device=x0.device, dtype=x0.dtype)  # (K, B, d)
        if self.path_seed is not None:  # the same runs' path whatever the substeps
            n = self.substeps
            levels = n.bit_length() - 1 if n & (n - 1) == 0 else 0  # log2 n when a power of 2
            state.path = tuple(
                RandomSource(
                    derived_seed(self.path_seed, level) if level else self.path_seed,
                    rng.n_runs,
                    first_run=rng.first_run,
                    block_size=rng.block_size,
                    device=rng.device,
                    dtype=rng.dtype,
                )
                for level in range(levels + 1)
            )
        return state

    def observe(self, state):
        return self.sde.observe(state.x)


class _SDEStepper(_DrivenStepper):
    """An SDE, a native scheme and a Brownian source, as a stepper of the one run loop."""

    def __init__(
        self,
        sde: SDE,
        scheme: Scheme,
        substeps: int,
        increments: torch.Tensor | None,
        first_run: int,
        path_seed: int | None = None,
    ) -> None:
        super().__init__(sde, substeps, increments, first_run, path_seed)
        self.scheme = scheme

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.sde.model!r})"

    def step(self, problem, state, k, lr_k, rng):
        eta = lr_k / self.lr
        h = self.lr / self.substeps
        carry = state.carry
        if self.scheme.averaged_increments:  # (ξ_n + ξ_{n+1}) √h / 2, ξ_{n+1} carried on
            z = rng.normal(self.substeps, self.sde.brownian_dim)  # (B, n, m)
            if carry is None:
                carry = rng.normal(self.sde.brownian_dim)  # ξ_0
            draws = torch.cat([carry.unsqueeze(1), z], dim=1)  # (B, n + 1, m)
            dws = ((draws[:, :-1] + draws[:, 1:]) * (0.5 * math.sqrt(h))).unbind(dim=1)
            carry = z[:, -1]
        else:
            dws = self._brownian(state, k, h, rng)  # substeps x (B, m)
        x = state.x
        for dw in dws:
            x = self.scheme.step(self.sde, x, eta, h, dw)
        return dataclasses.replace(state, x=x, carry=carry)

    def _brownian(self, state, k, h, rng):
        m, n = self.sde.brownian_dim, self.substeps
        if state.xi is not None:  # coupled: init_state kept the chunk's draws
            total = -math.sqrt(self.lr) * state.xi[k]  # (B, d): W(t_{k+1}) - W(t_k)
        elif len(state.path) > 1:  # a power of 2: the dyadic refinement of the shared path
            return _dyadic_bridge(state.path, self.lr, m)
        elif state.path:
            total = state.path[0].normal(m) * math.sqrt(self.lr)
        elif n == 1:
            return [rng.normal(m) * math.sqrt(h)]
        else:
            z = rng.normal(n, m) * math.sqrt(h)  # (B, n, m)
            return z.unbind(dim=1)
        if n == 1:
            return [total]
        # Brownian bridge: n i.i.d. N(0, h) increments conditioned on their sum.
        z = rng.normal(n, m) * math.sqrt(h)  # (B, n, m)
        sub = total.unsqueeze(1) / n + (z - z.mean(dim=1, keepdim=True))
        return sub.unbind(dim=1)


def _dyadic_bridge(sources: tuple[RandomSource, ...], lr: float, m: int) -> list[torch.Tensor]:
    r"""The Brownian increments over the :math:`2^J` substeps of one optimizer step, J =
    len(sources) - 1: the whole step's increment from ``sources[0]``, then each level's
    midpoints from its own source (an interval of length :math:`	au` with increment I splits
    into :math:`I/2 \pm 	frac12 \sqrt	au\, z`, the Brownian bridge's midpoint). A solve with
    :math:`2^{J+1}` substeps refines exactly this path: its pairwise sums are these increments.
    """
    inc = (sources[0].normal(m) * math.sqrt(lr)).unsqueeze(1)  # (B, 1, m)
    tau = lr
    for source in sources[1:]:
        half = inc * 0.5
        dev = source.normal(inc.shape[1], m) * (0.5 * math.sqrt(tau))  # (B, n, m)
        inc = torch.stack([half + dev, half - dev], dim=2).flatten(1, 2)  # (B, 2n, m)
        tau *= 0.5
    return list(inc.unbind(dim=1))


class _LevyStepper(_DrivenStepper):
    r"""A ``LevySDE`` with the Euler or the exact (stable Ornstein–Uhlenbeck) scheme, on fresh
    stable (and normal) increments or, coupled, on the discrete run's own stable draws ξ_k: the
    driver's increment over step k is :math:`L(t_{k+1}) - L(t_k) = -\mathrm{lr}^{1/\alpha} \xi_k`
    (the Brownian convention's sign), one substep per step (a stable bridge given the sum has
    no closed form)."""

    def __init__(
        self,
        sde: LevySDE,
        scheme: str,
        substeps: int,
        increments: torch.Tensor | None,
        first_run: int,
    ) -> None:
        super().__init__(sde, substeps, increments, first_run)  # increments: stable draws
        self.levy, self.scheme = sde, scheme
        self._exact: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}  # eta -> decay, noise

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.levy.alpha}, scheme={self.scheme!r})"

    def step(self, problem, state, k, lr_k, rng):
        sde, n = self.levy, self.substeps
        eta, h = lr_k / self.lr, self.lr / n
        d = sde.dim
        if state.xi is not None:  # coupled: one step of size lr on -ξ_k
            jumps = [-state.xi[k]]
        else:
            jumps = rng.stable(sde.alpha, d).unsqueeze(1) if n == 1 else rng.stable(sde.alpha, n, d)
            jumps = jumps.unbind(dim=1)  # n x (B, d)
        x = state.x
        if self.scheme == "exact":
            decay, noise = self._exact_factors(eta, h, x)
            center = sde.linear[1]  # type: ignore[index]  # check_scheme: linear is set
            for s in jumps:
                x = torch.addcmul(center, decay, x - center).addcmul_(noise, s)
            return _CoupledState(x=x, xi=state.xi)
        if sde.brownian:
            m = sde.brownian_dim
            dws = (rng.normal(n, m) * math.sqrt(h)).unbind(dim=1)
        else:
            dws = (None,) * n
        for dw, s in zip(dws, jumps, strict=True):
            x = euler_step(sde, x, eta, h, dw, s)
        return _CoupledState(x=x, xi=state.xi)

    def _exact_factors(self, eta, h, x):
        """(e^{-ηλh}, η c ρ) of the exact step at schedule factor eta, cached per eta."""
        if eta not in self._exact:
            rate, _ = self.levy.linear  # type: ignore[misc]  # check_scheme: linear is set
            decay, rho = stable_ou_step(self.levy.alpha, eta * rate.to(x), h)
            self._exact[eta] = (decay, rho.mul_(eta * self.levy.jump_scale))
        return self._exact[eta]


class _EstimatedStepper(Stepper):
    """Euler on an estimated-moments SDE: every substep draws the method's direction S times
    from the run's random source (``sdeopt.dynamics.estimated``)."""

    def __init__(self, sde: SDE, substeps: int) -> None:
        self.sde, self.substeps = sde, substeps
        self.lr, self.schedule = sde.lr, sde.schedule

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.sde.model!r}, samples={self.sde.brownian_dim})"

    def step(self, problem, state, k, lr_k, rng):
        eta, h, x = lr_k / self.lr, self.lr / self.substeps, state.x
        for _ in range(self.substeps):
            x = estimated_step(self.sde, x, eta, h, rng)
        return State(x=x)


class _TorchsdeStepper(Stepper):
    """torchsde.sdeint as a stepper of the one run loop: recording, divergence (judged at every
    step, as for the native schemes), chunking and streaming are the loop's.

    The Brownian increments of a chunk are drawn at its start, as one (B, n_steps * substeps, m)
    normal draw times sqrt(h), and fed to torchsde through a ``GridBrownian``. To keep torchsde's
    per-call overhead (~0.3 ms) off every step, one ``sdeint`` call integrates a window of
    steps with an output at each, and the steps of the window are then handed out one by one.
    """

    #: Outputs (window steps x runs x D) of one sdeint call, at most.
    WINDOW_VALUES = 2**22

    def __init__(self, sde: SDE, substeps: int, ts_method: str, n_steps: int) -> None:
        self.sde, self.substeps, self.ts_method, self.n_steps = sde, substeps, ts_method, n_steps
        self.lr, self.schedule = sde.lr, sde.schedule
        self.adapter = sde.torchsde()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.sde.model!r}, method={self.ts_method!r})"

    def init_state(self, x0, problem, rng):
        h = self.lr / self.substeps
        dw = rng.normal(self.n_steps * self.substeps, self.sde.brownian_dim)  # (B, n, m)
        area = None
        if self.ts_method == "srk":  # H ~ N(0, h/12), independent of the increment
            area = rng.normal(self.n_steps * self.substeps, self.sde.brownian_dim)
            area = area.transpose(0, 1) * math.sqrt(h / 12.0)
        return _TorchsdeState(x=self.sde.lift(x0), dw=dw.transpose(0, 1) * math.sqrt(h), area=area)

    def observe(self, state):
        return self.sde.observe(state.x)

    def step(self, problem, state, k, lr_k, rng):
        start, ys = state.window
        if ys is None or not start <= k < start + ys.shape[0] - 1:
            start, ys = k, self._integrate(state.x, k, state.dw, state.area)
        return _TorchsdeState(x=ys[k + 1 - start], dw=state.dw, window=(start, ys), area=state.area)

    def _integrate(self, x, k, dw, area=None):
        """sdeint from x at step k over the next window of steps; outputs at each, (W + 1, B, D)."""
        import torchsde

        n, h = self.substeps, self.lr / self.substeps
        width = max(1, min(self.n_steps - k, self.WINDOW_VALUES // max(1, x.numel())))
        ts = torch.tensor([(k + j) * self.lr for j in range(width + 1)], dtype=torch.float64)
        window = slice(k * n, (k + width) * n)
        bm = GridBrownian(k * self.lr, h, dw[window], None if area is None else area[window])
        return torchsde.sdeint(
            self.adapter,
            x,
            ts.to(x.device),
            bm=bm,
            dt=h,
            method=self.ts_method,
            adaptive=False,
            # derivative-free Milstein: sdeopt's diffusions need not support autograd (the t
            # CDF's in-place continued fraction does not)
            options={"grad_free": True} if self.ts_method == "milstein" else None,
        )


def solve(
    sde: SDE,
    x0,
    n_steps: int,
    n_runs: int,
    *,
    seed: int = 0,
    substeps: int = 1,
    scheme: str = "euler",
    backend: str = "native",
    coupled: Trajectory | None = None,
    record_every: int = 1,
    record: tuple[str, ...] | list[str] = ("loss", "grad_norm"),
    record_x: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    blowup_threshold: float = 1e10,
    chunk_size: int | None = None,
    max_memory: float = 2**30,
    block_size: int = DEFAULT_BLOCK_SIZE,
    first_run: int = 0,
    torchsde_method: str | None = None,
    out=None,
    method: str | None = None,
    path_seed: int | None = None,
):
    r"""Integrate ``sde`` for ``n_steps`` optimizer steps (SDE time n_steps * lr), batched over
    runs.

    Args:
        sde: the SDE (from ``sde_of`` or ``SDE.diagonal``).
        x0: (d,) or (n_runs, d), finite.
        n_steps: optimizer steps; outputs at :math:`t_k = k \cdot \mathrm{lr}`.
        n_runs: B.
        seed: random stream (the same block-based seeding as ``simulate``).
        substeps: solver steps per optimizer step
            (:math:`h = \mathrm{lr} / \mathrm{substeps}`).
        scheme: "euler", "milstein", "weak2" (weak order 2), "leimkuhler_matthews" (additive
            noise: Euler's cost, a second-order invariant law) or "exact" (linear drift, additive
            noise: the OU law at any step) (native; ``SCHEMES``); for a ``LevySDE`` (the "levy" model),
            "euler" or "exact" (the stable Ornstein–Uhlenbeck step, exact in law at any step
            size, for linear drifts with additive noise); for ``backend="torchsde"``, ``torchsde_method``
            (default "euler") names torchsde's solver.
        backend: "native" (this module's schemes) or "torchsde" (torchsde.sdeint on a
            fixed-grid Brownian motion of pre-drawn increments, dt = h, float64 times). Both run
            in the same loop: the same recording, divergence freezing (judged every step) and
            streaming.
        coupled: a discrete ``Trajectory`` made with ``keep_increments=True``: drive the SDE with
            its Gaussian draws, so that paths can be compared run by run (strong error).
        record_every, record, record_x, device, dtype, blowup_threshold: as in
            ``sdeopt.discrete.simulate``; observables need ``sde.problem``.
        chunk_size, max_memory, block_size, first_run, out: as in
            ``sdeopt.discrete.simulate``.
        method: deprecated name of ``scheme`` (``method`` is the optimizer everywhere else).
        path_seed: draw the Brownian increment of every whole optimizer step,
            :math:`W(t_{k+1}) - W(t_k)`, from this seed's stream (and split it over the
            substeps by the Brownian bridge): solves with the same ``path_seed`` follow the
            same Brownian path, so the difference of their results measures the solver's
            error with little Monte Carlo noise (``choose_substeps``). With substeps a power
            of 2 the bridge is dyadic, each level from its own stream of ``path_seed``, so a
            solve with 2s substeps refines the very path of the solve with s; otherwise only
            the increments over whole optimizer steps are shared (the bridge draws from
            ``seed``). Native schemes that
            take one Gaussian draw per substep; not with ``coupled``.

    Returns:
        A ``Trajectory`` whose ``model`` is the SDE's model name; with ``out``, its dataset
        opened lazily from the store.
    """
    if not isinstance(sde, SDE):
        raise ValueError(f"Invalid sde: {sde!r} (must be an sdeopt.dynamics.SDE)")
    substeps = check_int("substeps", substeps, minimum=1)
    if backend not in BACKENDS:
        raise ValueError(f"Invalid backend: {backend!r} (choose from {', '.join(BACKENDS)})")
    if method is not None:
        warnings.warn(
            "solve(method=...) is now solve(scheme=...); method= goes in the next version",
            DeprecationWarning,
            stacklevel=2,
        )
        if scheme != "euler" and scheme != method:
            raise ValueError(
                f"Invalid method: {method!r} (the deprecated name of scheme, given as {scheme!r})"
            )
        scheme = method
    if isinstance(sde, LevySDE):
        check_scheme(sde, scheme)
    elif scheme not in SCHEMES:
        raise ValueError(f"Invalid scheme: {scheme!r} (choose from {', '.join(SCHEMES)})")
    if sde.problem is not None and sde.rebuild is not None:
        moved = sde.problem.to(check_device(device), check_dtype(dtype))
        if moved is not sde.problem:
            sde = sde.rebuild(moved)
    assert sde.observed_dim is not None  # set to dim by SDE.__post_init__
    problem = sde.problem if sde.problem is not None else _NoProblem(sde.observed_dim)
    if sde.problem is None:
        record = ()
    increments = _coupling_increments(coupled, sde, n_steps, n_runs, first_run)
    config = {
        "sde": sde.config,
        "model": sde.model,
        "scheme": scheme,
        "backend": backend,
        "substeps": substeps,
        "coupled": coupled is not None,
    }
    common: dict[str, Any] = dict(
        seed=seed,
        device=device,
        dtype=dtype,
        record_every=record_every,
        record=record,
        record_x=record_x,
        blowup_threshold=blowup_threshold,
        chunk_size=chunk_size,
        max_memory=max_memory,
        block_size=block_size,
        first_run=first_run,
    )
    if path_seed is not None and not shares_paths(
        sde, scheme, coupled=coupled is not None, backend=backend
    ):
        raise ValueError(
            f"Invalid path_seed: {path_seed!r} (a shared Brownian path is for the native "
            "schemes of a Brownian SDE with closed-form moments that take one Gaussian draw per "
            f"substep, without coupling; this solve has scheme={scheme!r}, backend={backend!r}, "
            f"coupled={coupled is not None})"
        )
    stepper: Stepper
    if isinstance(sde, LevySDE):
        if backend != "native":
            raise ValueError(
                f"Invalid backend: {backend!r} (torchsde has no α-stable driver: a Lévy SDE is "
                "solved by the native schemes)"
            )
        if coupled is not None and substeps != 1:
            raise ValueError(
                f"Invalid substeps: {substeps!r} (coupling a Lévy SDE to the discrete draws "
                "needs substeps=1: a stable increment split given its sum has no closed form)"
            )
        stepper = _LevyStepper(sde, scheme, substeps, increments, first_run)
    elif sde.sampler is not None:  # estimated moments: Euler on the run's own draws
        if backend != "native" or scheme != "euler" or coupled is not None:
            raise ValueError(
                f"Invalid scheme: {scheme!r} with backend={backend!r}, coupled="
                f"{coupled is not None} (an estimated-moments SDE is integrated by the native "
                "Euler scheme, on fresh draws of the method's direction: no coupling)"
            )
        stepper = _EstimatedStepper(sde, substeps)
    elif backend == "torchsde":
        if torchsde_method in ("milstein", "srk"):
            # torchsde's strong order 1 (1.5) schemes for diagonal noise take ∂g_j/∂x_j only:
            # the same commutativity as the native Milstein scheme.
            SCHEMES["milstein"].check(sde)
        if coupled is not None:
            raise ValueError(
                "Invalid coupled: the torchsde backend draws its own Brownian motion; "
                "use backend='native' for coupling"
            )
        n_steps = check_int("n_steps", n_steps, minimum=0)
        stepper = _TorchsdeStepper(sde, substeps, torchsde_method or "euler", n_steps)
    else:
        SCHEMES[scheme].check(sde)
        if coupled is not None and SCHEMES[scheme].averaged_increments:
            raise ValueError(
                f"Invalid coupled: scheme {scheme!r} averages two Gaussian draws per step, so the "
                "discrete run's one draw per step cannot drive it; use 'euler', 'weak2' or "
                "'exact'"
            )
        stepper = _SDEStepper(
            sde,
            SCHEMES[scheme],
            substeps,
            increments,
            first_run,
            None if path_seed is None else check_seed("path_seed", path_seed),
        )
    return run(
        stepper, problem, x0, n_steps, n_runs, model=sde.model, config=config, out=out, **common
    )


def shares_paths(sde: SDE, scheme: str, *, coupled: bool = False, backend: str = "native") -> bool:
    """Whether a solve of ``sde`` can take ``path_seed``: a native scheme with one Gaussian draw
    per substep, a Brownian SDE with closed-form moments, no coupling."""
    return (
        backend == "native"
        and not coupled
        and not isinstance(sde, LevySDE)
        and sde.sampler is None
        and scheme in SCHEMES
        and not SCHEMES[scheme].averaged_increments
    )


def _coupling_increments(coupled, sde, n_steps, n_runs, first_run):
    if coupled is None:
        return None
    if not isinstance(coupled, Trajectory) or coupled.increments is None:
        raise ValueError(
            "Invalid coupled: needs a Trajectory from simulate(..., keep_increments=True)"
        )
    law = coupled.config.get("increments", {"law": "normal"})
    needed = (
        {"law": "stable", "alpha": sde.alpha} if isinstance(sde, LevySDE) else {"law": "normal"}
    )
    if law != needed:
        raise ValueError(
            f"Invalid coupled: its draws follow {law}, this SDE is driven by {needed} (a "
            "Brownian model couples to Gaussian noise, the Lévy model to SymmetricStable noise "
            "of the same alpha)"
        )
    inc = coupled.increments
    if inc.shape[0] < n_steps or inc.shape[1] != n_runs or inc.shape[2] != sde.brownian_dim:
        raise ValueError(
            f"Invalid coupled: its increments have shape {tuple(inc.shape)}, need at "
            f"least ({n_steps}, {n_runs}, {sde.brownian_dim})"
        )
    if coupled.config.get("first_run", 0) != first_run:
        raise ValueError(
            f"Invalid coupled: it starts at run {coupled.config.get('first_run')}, "
            f"this solve at first_run={first_run}"
        )
    if not math.isclose(coupled.lr, sde.lr, rel_tol=1e-12):
        raise ValueError(f"Invalid coupled: its lr {coupled.lr} differs from the SDE's {sde.lr}")
    return inc


class _NoProblem(Problem):
    """Stands in for a plain SDE with no objective: nothing to record but x."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def loss(self, x):
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    # never called: no observable is recorded (None fills the abstract methods on purpose)
    grad = hvp = None  # type: ignore[assignment]

    def config(self) -> dict:
        return {"type": "none", "dim": self.dim}


class GridBrownian(BaseBrownian):
    r"""A torchsde Brownian motion on the fixed grid :math:`t_0 + i h`, from pre-drawn
    increments.

    Exact at grid times (:math:`W(t_j) - W(t_i)` is the sum of the given
    :math:`\mathcal{N}(0, h)` increments :math:`i, \dots, j-1`, (n, B, m); a one-step query is
    one stored increment); a query off the grid is an error rather than an interpolation.
    torchsde's default BrownianInterval cost ~250–800 µs per step here and can hit a
    RecursionError on long runs (benchmarks/bench_sde.py measures it).
    """

    def __init__(
        self, t0: float, h: float, increments: torch.Tensor, areas: torch.Tensor | None = None
    ) -> None:
        self.t0, self.h = t0, h
        self.increments = increments  # (n, B, m); one-step queries index it, no running sum
        self.areas = areas  # (n, B, m) space-time Lévy areas H ~ N(0, h/12), or None

    def _index(self, t) -> int:
        i = (float(t) - self.t0) / self.h
        j = round(i)
        if abs(i - j) > 1e-6 or not 0 <= j <= self.increments.shape[0]:
            raise ValueError(f"GridBrownian queried off its grid at t={float(t)}")
        return j

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_A or (return_U and self.areas is None):
            raise ValueError(
                "GridBrownian has no Lévy area (space-time areas only when drawn, for 'srk'); "
                "use an Itô method such as 'euler'"
            )
        if tb is None:
            ta, tb = self.t0, ta
        i, j = self._index(ta), self._index(tb)
        if return_U:
            if j == i:  # a step of rounding size at an output time: nothing moves
                zero = torch.zeros_like(self.increments[0])
                return zero, zero
            if j != i + 1:
                raise ValueError("GridBrownian gives space-time Lévy areas over one step only")
            assert self.areas is not None  # checked above
            # torchsde's U = h (W/2 + H): the time integral of W - W(ta) over the step
            return self.increments[i], self.h * (0.5 * self.increments[i] + self.areas[i])
        if j == i + 1:  # the solver's usual query
            return self.increments[i]
        return self.increments[i:j].sum(dim=0) if j > i else -self.increments[j:i].sum(dim=0)

    def __repr__(self) -> str:
        return f"GridBrownian(t0={self.t0}, h={self.h}, n={self.increments.shape[0]})"

    dtype = property(lambda self: self.increments.dtype)
    device = property(lambda self: self.increments.device)
    shape = property(lambda self: self.increments.shape[1:])
    levy_area_approximation = property(lambda self: "none" if self.areas is None else "space-time")
