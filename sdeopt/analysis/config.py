"""Deprecated alias of ``sdeopt.experiments.config``, where this module moved (issue 13: analysis holds
compare, metrics and plots); it will be removed in the next version."""

import warnings

from sdeopt.experiments.config import *  # noqa: F403

warnings.warn(
    "sdeopt.analysis.config moved to sdeopt.experiments.config; import it from there",
    DeprecationWarning,
    stacklevel=2,
)
