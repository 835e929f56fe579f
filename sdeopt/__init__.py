"""sdeopt: batched distributed stochastic optimizers and their SDE approximations."""

__version__ = "0.1.0"

from sdeopt import analysis, compressors, discrete, dynamics, io, noise, problems, schedules  # noqa: E402,F401
from sdeopt._cpu import configure_torch  # noqa: E402
