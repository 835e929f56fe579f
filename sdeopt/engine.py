"""The one run loop: discrete methods, the native SDE solver and the torchsde backend all run here.

A *stepper* advances a batch of B independent runs one optimizer step at a time (``Stepper``:
a discrete method, or an SDE with its scheme and Brownian source). ``run`` owns everything
around the update rule: validation, chunking over runs to a memory budget, counter-based seeding
(results independent of the chunk size), recording at a cadence, freezing runs that blow up,
keeping the Gaussian draws for coupling, and streaming to a store. One loop means one meaning
of every argument and of ``diverged`` / ``blowup_step`` for every model (docs/design.md).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from sdeopt._stream import ZarrSink, check_output_memory, n_records, output_bytes
from sdeopt._validation import check_device, check_dtype, check_int, check_positive
from sdeopt.problems import Problem
from sdeopt.random import RandomSource, check_seed
from sdeopt.schedules import Schedule
from sdeopt.trajectory import Trajectory

#: Observables every run can record besides the full state "x".
OBSERVABLES = ("loss", "grad_norm", "dist")


@dataclass
class State:
    """Everything that evolves along a run. Steppers with more state subclass it.

    Attributes:
        x: (B, D) the stepper's state; its first part, ``Stepper.observe(state)``, is the
            problem's iterate (B, d) (D = d unless the stepper carries more, e.g. a memory).
    """

    x: torch.Tensor


class Stepper(ABC):
    r"""What ``run`` needs of a model: one step :math:`k \to k + 1` for all runs of a chunk.

    Attributes:
        lr: :math:`\eta > 0`, the base learning rate (SDE time of one step).
        schedule: :math:`\eta_k`, the dimensionless schedule factor.
        n_workers: workers whose (B, N, d) tensors a step holds (the chunk memory estimate).
        extra_observables: per-run quantities kept in the State that ``run`` can record.
        couplable: True when each step draws exactly one standard (B, d) tensor
            :math:`\xi_k` (normal, or symmetric stable: ``increment_law``) that enters as
            :math:`x_{k+1} = x_k - \mathrm{lr}_k\, (\bar u(x_k) + S(x_k)^{1/2} \xi_k)`
            (:math:`S^{1/2}` a scale for stable draws); only then can the draws be kept
            (``keep_increments``) to drive an SDE with the same noise.
    """

    lr: float
    schedule: Schedule
    n_workers: int = 1  # a class default; a stepper may set it per instance (DistributedMethod)
    extra_observables: ClassVar[tuple[str, ...]] = ()

    @property
    def couplable(self) -> bool:
        return False

    @property
    def increment_law(self) -> dict:
        """The law of the kept draw ξ_k of a couplable stepper: ``{"law": "normal"}``, or
        ``{"law": "stable", "alpha": α}`` (a standard symmetric α-stable draw, which drives the
        Lévy model); recorded in the trajectory's config as ``increments``."""
        return {"law": "normal"}

    def init_state(self, x0: torch.Tensor, problem: Problem, rng: RandomSource) -> State:
        """The state at :math:`k = 0` of the runs of ``rng`` (``rng.first_run`` ..), from x0
        (B, d)."""
        return State(x=x0)

    @abstractmethod
    def step(self, problem: Problem, state: State, k: int, lr_k: float, rng: RandomSource) -> State:
        r"""One iteration :math:`k \to k + 1` for all runs, with step size
        :math:`\mathrm{lr}_k = \eta\,\eta_k`; the new state."""

    def observe(self, state: State) -> torch.Tensor:
        """The problem's iterate x (B, d) in ``state`` (what is recorded and compared)."""
        return state.x


def run(
    stepper: Stepper,
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
    """Run ``stepper`` for ``n_runs`` runs of ``n_steps`` steps: the loop of ``simulate`` and ``solve``.

    Arguments are documented in ``sdeopt.discrete.simulate``; ``model`` names the result,
    ``config`` is recorded with it, and ``out`` is a store path or a ``ZarrSink`` shared by the
    models of one comparison.

    Returns:
        A ``Trajectory``; with ``out`` a path, the store's dataset opened lazily; with ``out`` a
        ``ZarrSink``, None (the caller finishes the sink).
    """
    if keep_increments and not stepper.couplable:
        raise ValueError(
            f"Invalid keep_increments: True ({type(stepper).__name__} here is not couplable: coupling needs "
            "exactly one standard normal or stable (B, d) draw per step entering as "
            "x - lr(ū + S^{1/2} ξ), as DSGD and DCSGD without compression make with Gaussian, "
            "AffineVariance or SymmetricStable (alpha < 2) noise and shortcuts=True)"
        )
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
    # Schedules are evaluated once, not per step (a tensor call costs tens of µs).
    lr_k = (stepper.lr * stepper.schedule.factors(n_steps)).tolist()  # eta * eta_k, k < n_steps
    lr_sum = np.concatenate([[0.0], np.cumsum(lr_k)])
    config = dict(
        config,
        problem=problem.config(),
        n_steps=n_steps,
        n_runs=n_runs,
        block_size=block_size,
        first_run=first_run,
        blowup_threshold=blowup_threshold,
    )
    if keep_increments:
        config["increments"] = stepper.increment_law

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
    rng: RandomSource | IncrementRecorder
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
            rng = IncrementRecorder(rng, stepper.increment_law["law"])
        x_chunk = (
            x0[start:stop].to(device=dev, dtype=dtype)
            if x0.shape[0] > 1
            else x0.to(device=dev, dtype=dtype).expand(stop - start, d).clone()
        )
        result = _run_chunk(
            stepper, problem, x_chunk, lr_k, steps, record, record_x, blowup_threshold, rng
        )
        at = slice(start, stop) if sink is None else slice(0, stop - start)
        for name in record:
            obs[name][:, at] = result["obs"][name].cpu()
        if xs is not None:  # record_x
            xs[:, at] = result["x"].cpu()
        if increments is not None:  # keep_increments
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
    r"""A RandomSource wrapper that keeps the one standard draw of each step (for coupling).

    Coupling needs a method whose only randomness per step is one standard normal or standard
    symmetric stable draw of shape (B, d) that enters as
    :math:`x_{k+1} = x_k - \mathrm{lr}_k\, (\bar u(x_k) + S(x_k)^{1/2} \xi_k)`: DSGD (and DCSGD
    without compression) with Gaussian, AffineVariance or SymmetricStable noise and shortcuts
    on.
    """

    def __init__(self, rng: RandomSource, kind: str = "normal") -> None:
        self._rng = rng
        self.kind = kind  # "normal" or "stable": the stepper's increment_law
        self.n_runs = rng.n_runs
        self.draws: list[tuple[str, torch.Tensor | None]] = []

    def normal(self, *shape: int) -> torch.Tensor:
        out = self._rng.normal(*shape)
        # A copy: the caller owns ``out`` and may scale it in place (AffineVariance draws
        # ξ and multiplies it by std(x)); a kept reference would then record std(x)·ξ.
        self.draws.append(("normal", out.clone()))
        return out

    def stable(self, alpha: float, *shape: int) -> torch.Tensor:
        out = self._rng.stable(alpha, *shape)  # its uniform/exponential draws are not recorded
        self.draws.append(("stable", out.clone()))  # a copy, as for normal
        return out

    def __getattr__(self, name):
        if name in ("uniform", "exponential", "integers"):

            def recorded(*args, **kwargs):
                self.draws.append((name, None))
                return getattr(self._rng, name)(*args, **kwargs)

            return recorded
        return getattr(self._rng, name)

    def take(self, dim: int) -> torch.Tensor:
        """The one (B, d) draw (of the declared kind) of the step just made; ValueError for
        anything else."""
        draws, self.draws = self.draws, []
        drawn = draws[0][1] if len(draws) == 1 and draws[0][0] == self.kind else None
        if drawn is None or tuple(drawn.shape) != (self.n_runs, dim):
            kinds = [f"{k}{tuple(t.shape) if t is not None else ''}" for k, t in draws]
            raise ValueError(
                f"Invalid keep_increments: True (the method declares itself couplable but drew "
                f"{kinds or 'nothing'} in one step; coupling needs exactly one standard {self.kind} "
                "(B, d) draw per step)"
            )
        return drawn


def _run_chunk(stepper, problem, x, lr_k, steps, record, record_x, threshold, rng) -> dict:
    """The step loop for one chunk of runs x0 (B, d), all on the simulation device; lr_k is the
    step size of each of the n_steps steps (the schedule evaluated once per study)."""
    n_steps = len(lr_k)
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
    state = stepper.init_state(x, problem, rng)
    keep = isinstance(rng, IncrementRecorder)
    increments = (
        torch.empty((n_steps, b, d), device=x.device, dtype=x.dtype) if keep else None
    )  # (K, B, d)
    ones = torch.ones(d, device=x.device, dtype=x.dtype)  # (d,)
    # A state larger than x (an SDE on (x, memory)): the threshold bounds the observed x, as for
    # the method it is compared with; the rest of the state only has to stay finite.
    larger = state.x.shape[-1] != d
    limit = min(threshold, math.sqrt(torch.finfo(x.dtype).max)) ** 2  # threshold² without overflow
    on_cpu = x.device.type == "cpu"
    any_diverged = False
    record_slot = {s: i for i, s in enumerate(steps)}
    for k in range(n_steps + 1):
        if k in record_slot:
            i = record_slot[k]
            x_k = stepper.observe(state)  # (B, d)
            record_observables(problem, x_k, record, {n: obs[n][i] for n in record})
            for name in stepper.extra_observables:
                if name in record:
                    obs[name][i] = getattr(state, name)
            if xs is not None:  # record_x
                xs[i] = x_k
        if k == n_steps:
            break
        new = stepper.step(problem, state, k, lr_k[k], rng)
        if increments is not None:  # keep
            increments[k] = rng.take(d)
        # NaN fails every comparison and overflow gives inf, so one test catches non-finite
        # and too-large states; per-run squared norms are a matrix-vector product because
        # small inner-dimension reductions (amax over d = 10) were measured 5x slower.
        # Freezing is skipped while nothing has blown up: on the CPU a host-side screen is
        # free (the squared norm of all runs together bounds every run's; NaN and overflow fail
        # it); on a GPU it would sync every step, so there the per-run test always runs.
        watched = stepper.observe(new) if larger else new.x  # (B, d)
        flat = watched.reshape(-1)
        if (
            not on_cpu
            or any_diverged
            or not bool(torch.dot(flat, flat) <= limit)
            or (larger and not bool(torch.isfinite(new.x).all()))
        ):
            bad = ~((watched * watched) @ ones <= limit)  # (B,)
            if larger:
                bad = bad | ~torch.isfinite(new.x).all(dim=-1)
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
        assert problem.minimizer is not None  # run refuses "dist" without one
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
    dtype = check_dtype(dtype)
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
