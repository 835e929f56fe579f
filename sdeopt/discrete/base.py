"""The discrete engine: Method base class, State, and ``simulate()``.

A method advances a batch of B independent runs, x of shape (B, d), one iteration at a time.
``simulate`` owns everything around the update rule: validation, chunking over runs to a
memory budget, counter-based seeding (results independent of the chunk size), recording at a
cadence, and freezing runs that blow up.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np
import torch

from sdeopt._jsonable import REPRODUCIBLE, is_reproducible, jsonable
from sdeopt._stream import ZarrSink, check_output_memory, n_records, output_bytes
from sdeopt._validation import check_device, check_dtype, check_int, check_positive
from sdeopt.discrete.result import Trajectory
from sdeopt.noise import Noise
from sdeopt.problems import Problem
from sdeopt.random import DEFAULT_BLOCK_SIZE, RandomSource, check_seed
from sdeopt.schedules import Constant, Schedule

#: Observables ``simulate`` can record besides the full state "x".
OBSERVABLES = ("loss", "grad_norm", "dist")


@dataclass
class State:
    """Everything that evolves along a run. Methods with more state subclass it.

    Attributes:
        x: (B, d) iterates.
    """

    x: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class Method(ABC):
    """Base class of the discrete optimizers and chains.

    Args:
        lr: eta > 0, the base learning rate (the SDE time of one step).
        schedule: eta_k, the dimensionless schedule factor (eta_0 = 1).
    """

    lr: float
    schedule: Schedule = field(default_factory=Constant)

    #: Workers whose tensors a step holds (the memory estimate of the chunking).
    n_workers: ClassVar[int] = 1
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

    def init_state(self, x0: torch.Tensor, rng: RandomSource, runs: slice) -> State:
        """The state at k = 0 for iterates x0 (B, d) of the runs ``runs`` of the study."""
        return State(x=x0)

    @abstractmethod
    def step(self, problem: Problem, state: State, k: int, lr_k: float, rng: RandomSource) -> State:
        """One iteration k -> k + 1 for all runs, with step size lr_k = eta * eta_k; the new state."""

    def config(self) -> dict:
        """A JSON-able description of the method and all its parts.

        A part that is user code (a callable drift, say) is recorded by its qualified name as
        ``{"callable": "module.qualname", "reproducible": False}``, and the whole config then
        carries ``"reproducible": False``: it names the run's parts but cannot rebuild it.
        """
        out = {"type": type(self).__name__}
        for f in fields(self):
            out[f.name] = jsonable(getattr(self, f.name))
        if not is_reproducible(out):
            out[REPRODUCIBLE] = False
        return out


@dataclass(frozen=True, kw_only=True)
class DistributedMethod(Method):
    """N workers, each with a stochastic gradient oracle of law ``noise``.

    Args:
        n_workers: N >= 1.
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
    """Methods of the form x_{k+1} = x_k - eta eta_k u_k (docs/models.md)."""

    @abstractmethod
    def direction(self, problem: Problem, x: torch.Tensor, rng: RandomSource) -> torch.Tensor:
        """u_k for all runs, (B, d)."""

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
    """Run ``method`` on ``problem`` for ``n_runs`` independent runs of ``n_steps`` iterations.

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
        dtype: torch.float32 or torch.float64 (default: torch's default dtype).
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
        keep_increments: keep the standard normal draw ξ_k of every step, (n_steps, B, d), in
            ``Trajectory.increments``, to drive an SDE with the same noise
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
    return run_engine(
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


def run_engine(
    stepper,
    problem: Problem,
    x0,
    n_steps: int,
    n_runs: int,
    *,
    model: str,
    config: dict,
    seed: int,
    device,
    dtype,
    record_every: int,
    record,
    record_x: bool,
    blowup_threshold: float,
    chunk_size: int | None,
    max_memory: float,
    block_size: int,
    first_run: int,
    keep_increments: bool = False,
    out=None,
):
    """The batched loop shared by ``simulate`` and ``sdeopt.dynamics.solve``.

    ``stepper`` has ``lr``, ``schedule``, ``n_workers`` (for the memory estimate),
    ``init_state(x, rng, runs)`` and ``step(problem, state, k, lr_k, rng)``. Arguments are
    documented in ``simulate``; ``out`` is a store path or a ``ZarrSink`` shared by the models
    of one comparison.
    """
    extras = stepper.extra_observables
    spec = validate_run(
        stepper.n_workers,
        problem,
        x0,
        n_steps,
        n_runs,
        seed,
        device,
        dtype,
        record_every,
        record,
        record_x,
        blowup_threshold,
        chunk_size,
        max_memory,
        block_size,
        first_run,
        extras,
        keep_increments=keep_increments,
        streamed=out is not None,
    )
    dev, dtype, x0, steps, record = (spec[k] for k in ("device", "dtype", "x0", "steps", "record"))
    sink = None if out is None else out if isinstance(out, ZarrSink) else ZarrSink(out)
    problem = problem.to(dev, dtype)
    d = problem.dim
    chunk = spec["chunk_size"]
    lr_sum = np.concatenate(
        [[0.0], np.cumsum(stepper.lr * stepper.schedule.factors(n_steps).numpy())]
    )
    config = dict(
        config,
        problem=problem.config(),
        n_steps=n_steps,
        n_runs=n_runs,
        block_size=block_size,
        first_run=first_run,
        blowup_threshold=blowup_threshold,
    )

    def trajectory(observables, x, diverged, blowup_step, increments=None) -> Trajectory:
        return Trajectory(
            model=model,
            steps=np.asarray(steps, dtype=np.int64),
            lr=stepper.lr,
            lr_sum=lr_sum[np.asarray(steps)],
            observables=observables,
            x=x,
            diverged=diverged,
            blowup_step=blowup_step,
            config=config,
            seed=seed,
            device=str(dev),
            dtype=str(dtype).replace("torch.", ""),
            increments=increments,
        )

    # In memory, or one chunk at a time when streamed (then these hold the current chunk only).
    size = min(chunk, n_runs) if sink is not None else n_runs
    n_rec = len(steps)
    obs = {name: torch.empty((n_rec, size), dtype=dtype) for name in record}  # (S, B)
    xs = torch.empty((n_rec, size, d), dtype=dtype) if record_x else None  # (S, B, d)
    increments = (
        torch.empty((n_steps, size, d), dtype=dtype) if keep_increments else None
    )  # (K, B, d)
    diverged = torch.zeros(size, dtype=torch.bool)
    blowup_step = torch.full((size,), -1, dtype=torch.int64)
    for start in range(0, n_runs, chunk):
        stop = min(start + chunk, n_runs)
        rng = RandomSource(
            seed,
            stop - start,
            first_run=first_run + start,
            block_size=block_size,
            device=dev,
            dtype=dtype,
        )
        if keep_increments:
            rng = IncrementRecorder(rng)
        x_chunk = (
            x0[start:stop].to(device=dev, dtype=dtype)
            if x0.shape[0] > 1
            else x0.to(device=dev, dtype=dtype).expand(stop - start, d).clone()
        )
        result = _run_chunk(
            stepper,
            problem,
            x_chunk,
            n_steps,
            steps,
            record,
            record_x,
            blowup_threshold,
            rng,
            slice(start, stop),
        )
        at = slice(start, stop) if sink is None else slice(0, stop - start)
        for name in record:
            obs[name][:, at] = result["obs"][name].cpu()
        if record_x:
            xs[:, at] = result["x"].cpu()
        if keep_increments:
            increments[:, at] = result["increments"].cpu()
        diverged[at] = result["diverged"].cpu()
        blowup_step[at] = result["blowup_step"].cpu()
        if sink is not None:
            part = trajectory(
                {n: v[:, at] for n, v in obs.items()},
                None if xs is None else xs[:, at],
                diverged[at],
                blowup_step[at],
            )
            sink.write(part.to_dataset(), start, n_runs)
    if sink is not None:
        return sink.finish() if not isinstance(out, ZarrSink) else None
    return trajectory(obs, xs, diverged, blowup_step, increments)


class IncrementRecorder:
    """A RandomSource wrapper that keeps the Gaussian draw of each step (for coupling).

    Coupling needs a method whose only randomness per step is one standard normal draw of
    shape (B, d) that enters as x_{k+1} = x_k - lr_k (ū(x_k) + S(x_k)^{1/2} ξ_k): DSGD (and
    DCSGD without compression) with Gaussian or AffineVariance noise and shortcuts on.
    """

    def __init__(self, rng: RandomSource) -> None:
        self._rng = rng
        self.n_runs = rng.n_runs
        self.draws: list[tuple[str, torch.Tensor]] = []

    def normal(self, *shape: int) -> torch.Tensor:
        out = self._rng.normal(*shape)
        # A copy: the caller owns ``out`` and may scale it in place (AffineVariance draws
        # ξ and multiplies it by std(x)); a kept reference would then record std(x)·ξ.
        self.draws.append(("normal", out.clone()))
        return out

    def __getattr__(self, name):
        if name in ("uniform", "exponential", "integers"):

            def recorded(*args, **kwargs):
                self.draws.append((name, None))
                return getattr(self._rng, name)(*args, **kwargs)

            return recorded
        return getattr(self._rng, name)

    def take(self, dim: int) -> torch.Tensor:
        """The one (B, d) normal draw of the step just made; ValueError for anything else."""
        draws, self.draws = self.draws, []
        if (
            len(draws) != 1
            or draws[0][0] != "normal"
            or tuple(draws[0][1].shape) != (self.n_runs, dim)
        ):
            kinds = [f"{k}{tuple(t.shape) if t is not None else ''}" for k, t in draws]
            raise ValueError(
                f"Invalid keep_increments: True (the method drew {kinds or 'nothing'} in one "
                "step; coupling needs exactly one standard normal (B, d) draw per step, as "
                "DSGD with Gaussian or AffineVariance noise and shortcuts=True makes)"
            )
        return draws[0][1]


def _run_chunk(method, problem, x, n_steps, steps, record, record_x, threshold, rng, runs) -> dict:
    """The step loop for one chunk of runs, all on the simulation device."""
    b, d = x.shape
    n_rec = len(steps)
    obs = {
        name: torch.empty((n_rec, b), device=x.device, dtype=x.dtype) for name in record
    }  # (S, B)
    xs = (
        torch.empty((n_rec, b, d), device=x.device, dtype=x.dtype) if record_x else None
    )  # (S, B, d)
    diverged = torch.zeros(b, device=x.device, dtype=torch.bool)  # (B,)
    blowup_step = torch.full((b,), -1, device=x.device, dtype=torch.int64)  # (B,)
    state = method.init_state(x, rng, runs)
    keep = isinstance(rng, IncrementRecorder)
    increments = (
        torch.empty((n_steps, b, d), device=x.device, dtype=x.dtype) if keep else None
    )  # (K, B, d)
    ones = torch.ones(d, device=x.device, dtype=x.dtype)  # (d,)
    limit = min(threshold, math.sqrt(torch.finfo(x.dtype).max)) ** 2  # threshold² without overflow
    on_cpu = x.device.type == "cpu"
    any_diverged = False
    record_slot = {s: i for i, s in enumerate(steps)}
    # Schedules are evaluated once, not per step (a tensor call costs tens of µs).
    lr_k = (method.lr * method.schedule.factors(n_steps)).tolist()
    for k in range(n_steps + 1):
        if k in record_slot:
            i = record_slot[k]
            record_observables(problem, state.x, record, {n: obs[n][i] for n in record})
            for name in method.extra_observables:
                if name in record:
                    obs[name][i] = getattr(state, name)
            if record_x:
                xs[i] = state.x
        if k == n_steps:
            break
        new = method.step(problem, state, k, lr_k[k], rng)
        if keep:
            increments[k] = rng.take(d)
        # NaN fails every comparison and overflow gives inf, so one test catches non-finite
        # and too-large iterates; per-run squared norms are a matrix-vector product because
        # small inner-dimension reductions (amax over d = 10) were measured 5x slower.
        # Freezing is skipped while nothing has blown up: on the CPU a host-side screen is
        # free (the squared norm of all runs together bounds every run's; NaN and overflow fail
        # it); on a GPU it would sync every step, so there the per-run test always runs.
        flat = new.x.reshape(-1)
        if not on_cpu or any_diverged or not bool(torch.dot(flat, flat) <= limit):
            bad = ~((new.x * new.x) @ ones <= limit)  # (B,)
            blowup_step = torch.where(bad & ~diverged, k + 1, blowup_step)
            diverged = diverged | bad
            new.x = torch.where(diverged.unsqueeze(-1), state.x, new.x)
            any_diverged = on_cpu and bool(diverged.any())
        state = new
    return {
        "obs": obs,
        "x": xs,
        "diverged": diverged,
        "blowup_step": blowup_step,
        "increments": increments,
    }


def record_observables(problem: Problem, x: torch.Tensor, names, out: dict) -> None:
    """Write the requested observables of x (B, d) into the (B,) tensors of ``out``."""
    if "loss" in names:
        out["loss"].copy_(problem.loss(x))
    if "grad_norm" in names:
        out["grad_norm"].copy_(torch.linalg.vector_norm(problem.grad(x), dim=-1))
    if "dist" in names:
        out["dist"].copy_(torch.linalg.vector_norm(x - problem.minimizer, dim=-1))


def record_steps(n_steps: int, record_every: int) -> list[int]:
    """Steps 0, r, 2r, ... and always the last one."""
    steps = list(range(0, n_steps + 1, record_every))
    if steps[-1] != n_steps:
        steps.append(n_steps)
    return steps


def validate_run(
    n_workers,
    problem,
    x0,
    n_steps,
    n_runs,
    seed,
    device,
    dtype,
    record_every,
    record,
    record_x,
    blowup_threshold,
    chunk_size,
    max_memory,
    block_size,
    first_run,
    extras=(),
    *,
    keep_increments: bool = False,
    streamed: bool = False,
) -> dict:
    if not isinstance(problem, Problem):
        raise ValueError(f"Invalid problem: {problem!r} (must be an sdeopt.problems.Problem)")
    n_steps = check_int("n_steps", n_steps, minimum=0)
    n_runs = check_int("n_runs", n_runs, minimum=1)
    check_seed("seed", seed)
    check_int("record_every", record_every, minimum=1)
    check_positive("blowup_threshold", blowup_threshold)
    check_positive("max_memory", max_memory)
    block_size = check_int("block_size", block_size, minimum=1)
    check_int("first_run", first_run, minimum=0)
    dev = check_device(device)
    dtype = check_dtype(torch.get_default_dtype() if dtype is None else dtype)
    if isinstance(record, str):
        record = (record,)
    if not isinstance(record, (list, tuple)) or not all(isinstance(name, str) for name in record):
        raise ValueError(f"Invalid record: {record!r} (an observable name or a list of them)")
    record = tuple(record)
    for name in record:
        if name not in OBSERVABLES + tuple(extras):
            raise ValueError(
                f"Invalid record: {name!r} (choose from {', '.join(OBSERVABLES + tuple(extras))})"
            )
    if "dist" in record and problem.minimizer is None:
        raise ValueError(
            f"Invalid record: 'dist' ({type(problem).__name__} has no known minimiser)"
        )
    x0 = check_x0(x0, n_runs, problem.dim)
    if not torch.isfinite(x0.to(dtype)).all():
        raise ValueError(
            f"Invalid x0: it overflows {str(dtype).replace('torch.', '')} (largest entry "
            f"{x0.abs().max().item():.3g})"
        )
    norm = torch.linalg.vector_norm(x0, dim=-1).max().item()
    if not norm <= blowup_threshold:
        raise ValueError(
            f"Invalid x0: its norm {norm:.3g} exceeds blowup_threshold={blowup_threshold!r} "
            "(every run would count as diverged at step 0)"
        )
    n_rec = n_records(
        n_steps, record_every
    )  # the list of steps is built after the check: n_steps may be 10**12
    if chunk_size is None:
        chunk_size = auto_chunk(
            n_workers,
            problem.dim,
            n_rec,
            len(record) + record_x * problem.dim,
            max_memory,
            block_size,
            n_runs,
            dtype,
        )
    else:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    check_output_memory(
        output_bytes(
            n_rec,
            min(chunk_size, n_runs) if streamed else n_runs,  # streamed: a chunk
            len(record) + record_x * problem.dim,
            torch.finfo(dtype).bits // 8,
            keep_increments * n_steps * problem.dim,
        ),
        n_runs,
    )
    steps = record_steps(n_steps, record_every)
    if streamed and keep_increments:
        raise ValueError(
            "Invalid out: the noise increments kept for coupling (keep_increments, coupled) stay "
            "in memory; stream the runs without coupling, or keep them in memory without out="
        )
    return {
        "device": dev,
        "dtype": dtype,
        "x0": x0,
        "steps": steps,
        "record": record,
        "chunk_size": chunk_size,
    }


def auto_chunk(
    n_workers: int,
    dim: int,
    n_rec: int,
    values_per_record: int,
    max_memory: float,
    block_size: int,
    n_runs: int,
    dtype: torch.dtype,
) -> int:
    """The largest multiple of block_size whose working set fits max_memory bytes."""
    itemsize = torch.finfo(dtype).bits // 8
    # Per run: the (N, d) temporaries of a step, plus what is recorded. benchmarks/bench_scaling.py
    # measured up to ~9 (N, d) per run at the peak for DCSGD + RandK and ~11 for per-worker
    # Student-t draws (the sampler's temporaries and allocator slack); 6 let a 64 MiB budget
    # be overrun by a quarter.
    per_run = itemsize * (12 * n_workers * dim + 8 * dim + n_rec * values_per_record)
    blocks = max(1, int(max_memory // (per_run * block_size)))
    return min(blocks * block_size, -(-n_runs // block_size) * block_size)


def check_x0(x0, n_runs: int, dim: int) -> torch.Tensor:
    """x0 as a float64 CPU tensor of shape (1, d) or (n_runs, d); finite."""
    try:
        x = torch.as_tensor(x0, dtype=torch.float64, device="cpu")
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"Invalid x0: {x0!r} (must be a vector of length {dim} or an array "
            f"of shape ({n_runs}, {dim}))"
        ) from None
    if x.ndim == 1 and x.shape[0] == dim:
        x = x.unsqueeze(0)
    elif not (x.ndim == 2 and x.shape == (n_runs, dim)):
        raise ValueError(
            f"Invalid x0: shape {tuple(x.shape)} (must be ({dim},) or ({n_runs}, {dim}))"
        )
    if not torch.isfinite(x).all():
        raise ValueError("Invalid x0: it has non-finite entries")
    return x
