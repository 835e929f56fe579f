"""The discrete methods' base classes and ``simulate()``.

A method advances a batch of B independent runs, x of shape (B, d), one iteration at a time
(a ``sdeopt.engine.Stepper``). ``simulate`` hands it to the one run loop, ``sdeopt.engine.run``,
which owns everything around the update rule: validation, chunking over runs to a memory budget,
counter-based seeding (results independent of the chunk size), recording at a cadence, and
freezing runs that blow up.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from sdeopt._jsonable import REPRODUCIBLE, is_reproducible, jsonable
from sdeopt._validation import check_int, check_positive
from sdeopt.engine import OBSERVABLES, State, Stepper, run
from sdeopt.noise import Noise
from sdeopt.problems import Problem
from sdeopt.random import DEFAULT_BLOCK_SIZE, RandomSource
from sdeopt.registry import Registry
from sdeopt.schedules import Constant, Schedule

__all__ = [
    "METHODS",
    "OBSERVABLES",
    "DirectionMethod",
    "DistributedMethod",
    "Method",
    "State",
    "simulate",
]


#: Every discrete method by class name: configs' ``method = {type = ...}`` and the contract tests.
METHODS: Registry = Registry("method")


@dataclass(frozen=True, kw_only=True)
class Method(Stepper, ABC):
    r"""Base class of the discrete optimizers and chains.

    Args:
        lr: :math:`\eta > 0`, the base learning rate (the SDE time of one step).
        schedule: :math:`\eta_k`, the dimensionless schedule factor (:math:`\eta_0 = 1`).
    """

    lr: float
    schedule: Schedule = field(default_factory=Constant)

    #: Workers whose tensors a step holds (the memory estimate of the chunking). A class default
    #: (``Stepper.n_workers``), not a field: ``DistributedMethod`` makes it one.
    n_workers = 1
    #: Per-run quantities a method keeps in its State and ``simulate`` can record.
    extra_observables: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        # Stored as plain Python numbers: a numpy or 0-d torch scalar would leak into configs
        # and arithmetic (a torch lr made the first step fail).
        object.__setattr__(self, "lr", check_positive("lr", self.lr))
        for f in fields(self):  # a flag is a bool: the string "no" is truthy
            if isinstance(f.default, bool) and not isinstance(getattr(self, f.name), bool):
                raise ValueError(
                    f"Invalid {f.name}: {getattr(self, f.name)!r} (must be True or False)"
                )
        if not isinstance(self.schedule, Schedule):
            raise ValueError(
                f"Invalid schedule: {self.schedule!r} (must be an sdeopt.schedules schedule)"
            )

    def check_problem(self, problem: Problem) -> None:
        """Raise ``ValueError`` if this method cannot run on ``problem``."""
        if not isinstance(problem, Problem):
            raise ValueError(f"Invalid problem: {problem!r} (must be an sdeopt.problems.Problem)")

    @abstractmethod
    def step(self, problem: Problem, state: State, k: int, lr_k: float, rng: RandomSource) -> State:
        r"""One iteration :math:`k \to k + 1` for all runs, with step size
        :math:`\mathrm{lr}_k = \eta\,\eta_k`; the new state."""

    def config(self) -> dict:
        """A JSON-able description of the method and all its parts.

        A part that is user code (a callable drift, say) is recorded by its qualified name as
        ``{"callable": "module.qualname", "reproducible": False}``, and the whole config then
        carries ``"reproducible": False``: it names the run's parts but cannot rebuild it.
        """
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in fields(self):
            if f.init:  # a fixed part (DSGD's identity compressor) is the class, not a setting
                out[f.name] = jsonable(getattr(self, f.name))
        if not is_reproducible(out):
            out[REPRODUCIBLE] = False
        return out


@dataclass(frozen=True, kw_only=True)
class DistributedMethod(Method):
    r"""N workers, each with a stochastic gradient oracle of law ``noise``.

    Args:
        n_workers: :math:`N \ge 1`.
        noise: the gradient-noise law of every worker.
        shortcuts: use exact distributional shortcuts (e.g. one Gaussian for the mean of N);
            False draws every worker's noise, for validation against the naive path.
    """

    n_workers: int = 1
    noise: Noise
    shortcuts: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "n_workers", check_int("n_workers", self.n_workers, minimum=1))
        if not isinstance(self.noise, Noise):
            raise ValueError(f"Invalid noise: {self.noise!r} (must be an sdeopt.noise law)")
        self.noise.check_workers(self.n_workers)

    def check_problem(self, problem: Problem) -> None:
        super().check_problem(problem)
        problem.check_workers(self.n_workers)
        self.noise.check_problem(problem)


@dataclass(frozen=True, kw_only=True)
class DirectionMethod(DistributedMethod):
    r"""Methods of the form :math:`x_{k+1} = x_k - \eta\,\eta_k u_k` (docs/models.md)."""

    @property
    def bounded(self) -> bool:
        """True when every direction u_k is bounded (so it has all moments, whatever the noise)."""
        return False

    @abstractmethod
    def direction(self, problem: Problem, x: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        r""":math:`u_k` for all runs, (B, d)."""

    def step(self, problem: Problem, state: State, k: int, lr_k: float, rng: RandomSource) -> State:
        u = self.direction(problem, state.x, rng)  # (B, d)
        return State(x=torch.add(state.x, u, alpha=-lr_k))


def simulate(
    method: Method,
    problem: Problem,
    x0,
    n_steps: int,
    n_runs: int,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    record_every: int = 1,
    record: tuple[str, ...] | list[str] = ("loss", "grad_norm"),
    record_x: bool = False,
    blowup_threshold: float = 1e10,
    chunk_size: int | None = None,
    max_memory: float = 2**30,
    block_size: int = DEFAULT_BLOCK_SIZE,
    first_run: int = 0,
    keep_increments: bool = False,
    out=None,
):
    r"""Run ``method`` on ``problem`` for ``n_runs`` independent runs of ``n_steps`` iterations.

    Args:
        method: a discrete optimizer (``DSGD``, ``DCSGD``, ``DSignSGD`` ...).
        problem: the objective.
        x0: the start, (d,) (shared by all runs) or (n_runs, d); finite.
        n_steps: iterations per run (>= 0).
        n_runs: B, independent runs (>= 1).
        seed: the random stream, an integer in [0, 2**128); same seed, device and block_size give
            bitwise the same result, and run b's draws depend only on (seed, b): the first m runs
            of a larger study are the runs of an m-run study.
        device: "cpu" or "cuda" (or a torch.device).
        dtype: torch.float64 (the default, whatever torch's default dtype is) or torch.float32.
        record_every: record at steps 0, r, 2r, ... and always at n_steps.
        record: observables to record, from "loss", "grad_norm", "dist" (distance to the
            problem's known minimiser).
        record_x: also record the full iterates (S, B, d).
        blowup_threshold: a run whose iterate has a non-finite entry or a Euclidean norm above
            this is frozen at its last good value and reported in ``diverged`` / ``blowup_step``.
        chunk_size: runs simulated at once; by default the largest multiple of ``block_size``
            that fits ``max_memory`` bytes (other sizes give the same result, a little slower).
        max_memory: memory budget in bytes used to choose the chunk size (at least one block of
            runs is simulated at once, whatever the budget).
        block_size: seeding granularity: runs sharing one generator. Results do not depend on
            ``chunk_size``; they do depend on ``block_size``.
        first_run: global index of the first run, so that a slice of a large study can be
            recomputed on its own, or a study extended: ``n_runs=m, first_run=n`` gives runs
            n .. n+m-1 of any study of the same seed.
        keep_increments: keep the standard normal draw :math:`\xi_k` of every step,
            (n_steps, B, d), in ``Trajectory.increments``, to drive an SDE with the same noise
            (``sdeopt.dynamics.solve(..., coupled=traj)``). Only for methods whose one random
            draw per step is that Gaussian (DSGD with Gaussian or AffineVariance noise).

    Returns:
        A ``Trajectory`` (``.to_dataset()`` gives the xarray schema of docs/schema.md).
    """
    if not isinstance(method, Method):
        raise ValueError(f"Invalid method: {method!r} (must be an sdeopt.discrete method)")
    method.check_problem(problem)
    compressor = getattr(method, "compressor", None)
    if compressor is not None:
        compressor.check_dim(problem.dim)
    return run(
        method,
        problem,
        x0,
        n_steps,
        n_runs,
        model="discrete",
        config={"method": method.config()},
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
        keep_increments=keep_increments,
        out=out,
    )
