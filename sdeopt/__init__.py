"""sdeopt: batched distributed stochastic optimizers and their SDE approximations."""

__version__ = "0.1.0"

from sdeopt import (  # noqa: E402,F401
    analysis,
    compressors,
    discrete,
    dynamics,
    io,
    noise,
    problems,
    random,
    schedules,
    special,
)
from sdeopt._cpu import configure_torch  # noqa: E402
from sdeopt.random import RandomSource  # noqa: E402,F401
