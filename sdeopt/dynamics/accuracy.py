r"""Which scheme, and how many substeps: the solver's error estimated before a study is run.

``best_scheme`` names the most accurate native scheme that applies to an SDE; ``choose_substeps``
finds the fewest substeps per optimizer step whose solver bias on the mean of an observable is
within a relative tolerance, by a pilot run (docs/models.md, "Choosing the scheme and the
substeps"):

- the pilot solves the SDE on ``pilot_runs`` runs with s = 1, 2, 4, ... substeps. For Brownian
  SDEs all levels share one Brownian path at the optimizer-step grid (``solve(path_seed=...)``),
  so the per-run differences :math:`g(X^{h}) - g(X^{h/2})` have a small variance;
- a scheme of weak order p has bias :math:`E_h - E = C h^p + o(h^p)`, so
  :math:`\hat b_k(h) = (\bar g^{h}_k - \bar g^{h/2}_k) / (1 - 2^{-p})` estimates the bias of the
  h figure at every recorded step k, with the standard error of the mean per-run difference;
- the first s with :math:`|\hat b_k| \le \mathrm{tol}\,|\bar g_k| + 2\,\mathrm{se}_k` at every
  step is chosen. The estimate is *resolved* when :math:`2\,\mathrm{se}_k \le
  \mathrm{tol}\,|\bar g_k|` too (else the pilot could not see a bias of the tolerance's size,
  and a warning says so). A scheme exact in law (weak order :math:`\infty`) needs one substep.

Estimated-moments SDEs (fresh draws of the direction per step) and Leimkuhler–Matthews (two
draws per step) cannot share a path: their levels are independent, and the two means' errors
add. A Lévy SDE's Euler scheme is refused (its loss may have no mean); its exact step needs no
pilot.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from sdeopt._validation import check_int, check_positive
from sdeopt.dynamics.levy import LEVY_SCHEMES, LevySDE, check_scheme
from sdeopt.dynamics.sde import SDE
from sdeopt.dynamics.solvers import SCHEMES, shares_paths, solve
from sdeopt.random import derived_seed

#: Native schemes from the most to the least accurate on a finite horizon (Leimkuhler–Matthews
#: is weak order 1 there; its gain is the invariant law, so it is chosen by name only).
PREFERENCE = ("exact", "weak2", "euler")
#: With coupling (strong error, path by path), Milstein's strong order 1 beats Euler's 1/2.
COUPLED_PREFERENCE = ("exact", "weak2", "milstein", "euler")


def weak_order(scheme: str, *, levy: bool = False) -> float:
    """The weak order of the native ``scheme`` (of the Lévy schemes with ``levy``):
    ``math.inf`` for a step exact in law."""
    if levy:
        if scheme not in LEVY_SCHEMES:
            raise ValueError(f"Invalid scheme: {scheme!r} (choose from {', '.join(LEVY_SCHEMES)})")
        return math.inf if scheme == "exact" else 1.0
    if scheme not in SCHEMES:
        raise ValueError(f"Invalid scheme: {scheme!r} (choose from {', '.join(SCHEMES)})")
    return SCHEMES[scheme].weak_order


def best_scheme(sde: SDE, *, coupled: bool = False) -> str:
    """The most accurate native scheme that applies to ``sde``: the exact step where the drift
    is linear and the noise additive, else Platen's weak order 2 where the noise is additive or
    diagonal and commutative, else Euler–Maruyama (Milstein before Euler when ``coupled``, for
    its strong order); for a Lévy SDE the stable OU step, else Euler; for estimated moments,
    Euler."""
    if not isinstance(sde, SDE):
        raise ValueError(f"Invalid sde: {sde!r} (must be an sdeopt.dynamics.SDE)")
    if isinstance(sde, LevySDE):
        candidates: tuple[str, ...] = LEVY_SCHEMES[::-1]  # exact, euler
    elif sde.sampler is not None:
        return "euler"
    else:
        candidates = COUPLED_PREFERENCE if coupled else PREFERENCE
    for scheme in candidates:
        try:
            check_applies(sde, scheme)
        except ValueError:
            continue
        return scheme
    return "euler"  # applies to every SDE


def check_applies(sde: SDE, scheme: str) -> None:
    """Raise ``ValueError`` unless the native ``scheme`` exists and has its order on ``sde``
    (what ``solve`` checks, before any work)."""
    if isinstance(sde, LevySDE):
        check_scheme(sde, scheme)
    elif scheme not in SCHEMES:
        raise ValueError(f"Invalid scheme: {scheme!r} (choose from {', '.join(SCHEMES)})")
    else:
        SCHEMES[scheme].check(sde)


@dataclass(frozen=True)
class SubstepChoice:
    """``choose_substeps``'s answer.

    Attributes:
        scheme, substeps: the choice.
        tolerance, observable: what it was asked for.
        bias, bias_se: the estimated solver bias of the chosen level, relative to the
            observable's mean, at the recorded step where it is largest, and its standard
            error (0 for an exact scheme).
        resolved: whether the pilot's Monte Carlo error was small enough to see a bias of the
            tolerance's size (2 se <= tolerance at every step).
        levels: (substeps, relative bias, se) of every level tried.
        pilot_runs: runs per level.
    """

    scheme: str
    substeps: int
    tolerance: float
    observable: str
    bias: float
    bias_se: float
    resolved: bool
    levels: tuple[tuple[int, float, float], ...]
    pilot_runs: int

    def config(self) -> dict:
        """JSON-ready form (dataset attributes)."""
        return {
            "scheme": self.scheme,
            "substeps": self.substeps,
            "tolerance": self.tolerance,
            "observable": self.observable,
            "bias": self.bias,
            "bias_se": self.bias_se,
            "resolved": self.resolved,
            "levels": [list(level) for level in self.levels],
            "pilot_runs": self.pilot_runs,
        }


def choose_substeps(
    sde: SDE,
    x0,
    n_steps: int,
    *,
    tolerance: float = 0.01,
    scheme: str = "auto",
    observable: str = "loss",
    pilot_runs: int = 500,
    max_substeps: int = 64,
    seed: int = 0,
    record_every: int | None = None,
    coupled: bool = False,
    device="cpu",
    dtype=None,
    blowup_threshold: float = 1e10,
) -> SubstepChoice:
    r"""The fewest substeps (1, 2, 4, ...) whose estimated solver bias on the mean of
    ``observable`` is within ``tolerance`` (relative) at every recorded step (module docstring).

    Args:
        sde: the SDE (from ``sde_of``); needs ``sde.problem`` for the observable.
        x0, n_steps: as in ``solve``; the pilot runs the whole horizon.
        tolerance: the largest relative solver bias :math:`|E_h g - E g| / |E g|` allowed.
        scheme: a scheme name, or "auto" (``best_scheme``).
        observable: "loss" or "grad_norm" (any recorded observable of ``solve``).
        pilot_runs: runs per level (the levels share one Brownian path, so a few hundred
            resolve 1e-2 on most problems; the warning says when they do not).
        max_substeps: the most substeps tried; beyond it a warning is given and it is returned.
        seed: the pilot's seed (its own streams; the study's runs are not reused).
        record_every: steps between the checked points (default: about 50 points).
        coupled: the study couples the SDE to the discrete draws (``best_scheme`` then prefers
            strong order).
        device, dtype, blowup_threshold: as in ``solve``.

    Returns:
        A ``SubstepChoice``. Warns when the pilot cannot resolve the tolerance or
        ``max_substeps`` is not enough.
    """
    tolerance = check_positive("tolerance", tolerance)
    pilot_runs = check_int("pilot_runs", pilot_runs, minimum=2)
    max_substeps = check_int("max_substeps", max_substeps, minimum=1)
    n_steps = check_int("n_steps", n_steps, minimum=1)
    if sde.problem is None:
        raise ValueError("Invalid sde: it has no problem, so no observable to judge the solver by")
    if scheme == "auto":
        scheme = best_scheme(sde, coupled=coupled)
    order = weak_order(scheme, levy=isinstance(sde, LevySDE))
    if math.isinf(order):
        return SubstepChoice(scheme, 1, tolerance, observable, 0.0, 0.0, True, (), pilot_runs)
    if isinstance(sde, LevySDE):
        raise ValueError(
            f"Invalid scheme: {scheme!r} (the solver bias of a Lévy SDE's Euler scheme is not "
            "estimated by a pilot: under α-stable noise the observable may have no mean, and "
            "a stable increment cannot be bridged; choose substeps by hand, e.g. by checking "
            "that quantiles do not move at half the step)"
        )
    if record_every is None:
        record_every = max(1, n_steps // 50)
    paired = shares_paths(sde, scheme)

    def level(substeps: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(values (S, B), alive (S, B)) of one pilot level."""
        path = solve(
            sde,
            x0,
            n_steps,
            pilot_runs,
            seed=derived_seed(seed, index) if not paired else seed,
            substeps=substeps,
            scheme=scheme,
            record_every=record_every,
            record=(observable,),
            device=device,
            dtype=dtype,
            blowup_threshold=blowup_threshold,
            path_seed=derived_seed(seed, 1) if paired else None,
        )
        values = path.observables[observable].double().cpu().numpy()  # (S, B)
        blow = path.blowup_step.cpu().numpy()  # (B,), -1: never
        steps = np.asarray(path.steps)[:, None]
        alive = (blow[None, :] < 0) | (steps < blow[None, :])
        return values, alive

    shrink = 1.0 - 2.0**-order
    levels: list[tuple[int, float, float]] = []
    substeps, coarse = 1, level(1, 0)
    while True:
        fine = level(2 * substeps, len(levels) + 1)
        ok = coarse[1] & fine[1]  # (S, B)
        if (ok.sum(axis=1) < 2).any():
            raise ValueError(
                f"Invalid sde: the pilot's runs diverge (fewer than 2 of {pilot_runs} alive at "
                f"{2 * substeps} substeps); choose substeps by hand"
            )
        if paired:  # the per-run differences: the shared path cancels most of the noise
            mean_diff, se_diff = _mean_se(coarse[0] - fine[0], ok)
        else:  # independent levels: the two means' errors add
            (m_coarse, se_coarse), (m_fine, se_fine) = _mean_se(*coarse), _mean_se(*fine)
            mean_diff, se_diff = m_coarse - m_fine, np.hypot(se_coarse, se_fine)
        bias, se = mean_diff / shrink, se_diff / shrink
        scale = np.abs(_mean_se(*fine)[0])
        rel = np.divide(np.abs(bias), scale, out=np.zeros_like(bias), where=scale > 0)
        rel_se = np.divide(se, scale, out=np.zeros_like(se), where=scale > 0)
        worst = int(np.argmax(rel))
        levels.append((substeps, float(rel[worst]), float(rel_se[worst])))
        within = bool((np.abs(bias) <= tolerance * scale + 2.0 * se).all())
        if within or 2 * substeps > max_substeps:
            resolved = bool((2.0 * se <= tolerance * scale).all())
            if not within:
                warnings.warn(
                    f"choose_substeps: {substeps} substeps (max_substeps={max_substeps}) leave "
                    f"an estimated solver bias of {rel[worst]:.2g} relative, above the "
                    f"tolerance {tolerance}",
                    stacklevel=2,
                )
            elif not resolved:
                warnings.warn(
                    f"choose_substeps: the pilot's {pilot_runs} runs resolve the solver bias "
                    f"only to {2 * rel_se.max():.2g} relative (2 se), above the tolerance "
                    f"{tolerance}: the choice of {substeps} substeps is as good as the pilot "
                    "sees; raise pilot_runs to confirm it",
                    stacklevel=2,
                )
            return SubstepChoice(
                scheme,
                substeps,
                tolerance,
                observable,
                float(rel[worst]),
                float(rel_se[worst]),
                resolved,
                tuple(levels),
                pilot_runs,
            )
        substeps, coarse = 2 * substeps, fine


def _mean_se(values: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-step mean of ``values`` (S, B) over the runs ``alive`` (S, B), and its standard
    error."""
    n = alive.sum(axis=1)
    mean = np.where(alive, values, 0.0).sum(axis=1) / n
    var = (np.where(alive, values - mean[:, None], 0.0) ** 2).sum(axis=1) / np.maximum(n - 1, 1)
    return mean, np.sqrt(var / n)
