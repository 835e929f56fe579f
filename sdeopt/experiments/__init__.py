"""Experiments from configuration files: TOML configs (``config``), the runner behind
``sdeopt run`` (``runner``) and parameter sweeps on dask.distributed into zarr (``sweep``)."""

from sdeopt.experiments.config import build, load, read_toml, validate
from sdeopt.experiments.runner import (
    richardson_weak_error,
    run_config,
    run_trajectories,
    run_weak_order,
    solver_levels,
)
from sdeopt.experiments.sweep import load_sweep, run_sweep, validate_sweep

__all__ = [
    "build",
    "load",
    "load_sweep",
    "read_toml",
    "richardson_weak_error",
    "run_config",
    "run_sweep",
    "run_trajectories",
    "run_weak_order",
    "solver_levels",
    "validate",
    "validate_sweep",
]
