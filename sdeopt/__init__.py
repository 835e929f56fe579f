"""sdeopt: batched distributed stochastic optimizers and their SDE approximations."""

from sdeopt import (
    analysis,
    compressors,
    discrete,
    dynamics,
    engine,
    experiments,
    io,
    noise,
    problems,
    random,
    registry,
    schedules,
    special,
    trajectory,
)
from sdeopt._cpu import configure_torch
from sdeopt._version import __version__
from sdeopt.random import RandomSource

__all__ = [
    "RandomSource",
    "__version__",
    "analysis",
    "compressors",
    "configure_torch",
    "discrete",
    "dynamics",
    "engine",
    "experiments",
    "io",
    "noise",
    "problems",
    "random",
    "registry",
    "schedules",
    "special",
    "trajectory",
]
