"""Deprecated alias of ``sdeopt.experiments.sweep``, where this module moved (issue 13: analysis holds
compare, metrics and plots); it will be removed in the next version."""

import warnings

from sdeopt.experiments.sweep import *  # noqa: F403

warnings.warn(
    "sdeopt.analysis.sweep moved to sdeopt.experiments.sweep; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
