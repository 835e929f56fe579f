"""The continuous models of the discrete optimizers, and their solvers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdeopt.discrete.base import Method
from sdeopt.discrete.dcsgd import DCSGD
from sdeopt.discrete.dsignsgd import DSignSGD
from sdeopt.discrete.ito_chain import ItoChain
from sdeopt.discrete.markov_sgd import MarkovSGD
from sdeopt.dynamics import dcsgd, dsignsgd, ito_chain, levy, markov_sgd
from sdeopt.dynamics.accuracy import SubstepChoice, best_scheme, choose_substeps
from sdeopt.dynamics.estimated import estimated_sde
from sdeopt.dynamics.levy import LevySDE
from sdeopt.dynamics.recipe import MODELS, Moments, sde_from_moments
from sdeopt.dynamics.sde import SDE, Dense, Diagonal, DiagonalPlusRankOne, Diffusion
from sdeopt.dynamics.solvers import SCHEMES, GridBrownian, solve
from sdeopt.problems import Problem

#: Every model name ``sde_of`` knows: the moment-matched Brownian models and the Lévy model.
SDE_MODELS = (*MODELS, levy.MODEL)

# Each builder takes an instance of its key class: Any, as a dict type cannot tie the two.
#: Method class -> its moments builder (subclasses such as DSGD resolve through the MRO).
MOMENTS: dict[type[Method], Callable[[Any, Problem], Moments]] = {
    DCSGD: dcsgd.moments,
    DSignSGD: dsignsgd.moments,
    MarkovSGD: markov_sgd.moments,
}
#: Methods whose SDE is not of the x_{k+1} = x_k - eta eta_k u_k form: built directly.
DIRECT: dict[type[Method], Callable[[Any, Problem, str], SDE]] = {ItoChain: ito_chain.sde}


def sde_of(
    method: Method,
    problem: Problem,
    model: str = "first_order",
    *,
    moments: str = "exact",
    samples: int | None = None,
) -> SDE:
    """The SDE model ``model`` ("first_order", "second_order", "curvature", "levy") of a discrete
    method.

    ``moments="exact"`` (the default) builds the model from closed-form moments where a
    derivation backs them and refuses otherwise; ``moments="estimated", samples=S`` builds the
    first-order model of any direction method from S fresh draws of its direction per step
    (``sdeopt.dynamics.estimated``: the fallback where no closed form exists, e.g. TopK).
    ``model="levy"`` is the α-stable-driven SDE of DSGD and DCSGD (Identity, RandK) under
    heavy-tailed noise (``SymmetricStable``, ``StudentT`` with nu < 2), a ``LevySDE``
    (``sdeopt.dynamics.levy``); the other models refuse such noise.

    Example:
        >>> import sdeopt as so
        >>> opt = so.discrete.DSGD(lr=0.05, n_workers=4, noise=so.noise.Gaussian(1.0))
        >>> sde = so.dynamics.sde_of(opt, so.problems.Quadratic(diag=[1.0, 4.0]), model="curvature")
        >>> path = so.dynamics.solve(sde, [1.0, 1.0], n_steps=100, n_runs=1000)
    """
    if not isinstance(method, Method):
        raise ValueError(f"Invalid method: {method!r} (must be an sdeopt.discrete method)")
    method.check_problem(problem)
    if moments not in ("exact", "estimated"):
        raise ValueError(f"Invalid moments: {moments!r} (choose from exact, estimated)")
    if model == levy.MODEL:
        if moments != "exact" or samples is not None:
            raise ValueError(
                f"Invalid moments: {moments!r} (the 'levy' model is built from the noise's "
                "stable limit in closed form: moments='exact', no samples)"
            )
        levy_sde = levy.sde(method, problem)
        levy_sde.rebuild = lambda p: sde_of(method, p, model)
        return levy_sde
    if moments == "estimated":
        sde = estimated_sde(method, problem, model, samples)
        sde.rebuild = lambda p: sde_of(method, p, model, moments=moments, samples=samples)
        return sde
    if samples is not None:
        raise ValueError(f"Invalid samples: {samples!r} (only with moments='estimated')")
    direct = next((DIRECT[c] for c in type(method).__mro__ if c in DIRECT), None)
    if direct is not None:
        sde = direct(method, problem, model)
        sde.rebuild = lambda p: sde_of(method, p, model)
        return sde
    builder = next((MOMENTS[c] for c in type(method).__mro__ if c in MOMENTS), None)
    if builder is None:
        raise ValueError(
            f"Invalid method: {type(method).__name__} has no SDE model "
            f"(models exist for {', '.join(c.__name__ for c in [*MOMENTS, *DIRECT])})"
        )
    if model not in MODELS:
        raise ValueError(f"Invalid model: {model!r} (choose from {', '.join(SDE_MODELS)})")
    sde = sde_from_moments(
        builder(method, problem),
        model=model,
        lr=method.lr,
        schedule=method.schedule,
        problem=problem,
        config={"method": method.config(), "model": model},
    )
    sde.rebuild = lambda p: sde_of(method, p, model)
    return sde


__all__ = [
    "MODELS",
    "MOMENTS",
    "SCHEMES",
    "SDE",
    "SDE_MODELS",
    "Dense",
    "Diagonal",
    "DiagonalPlusRankOne",
    "Diffusion",
    "GridBrownian",
    "LevySDE",
    "Moments",
    "SubstepChoice",
    "best_scheme",
    "choose_substeps",
    "sde_of",
    "solve",
]
