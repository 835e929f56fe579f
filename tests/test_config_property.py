"""Property: any config, valid or not, is either refused with a ValueError naming a config key,
or builds and runs (issue 12: no config reaches a traceback, a silent coercion or a late failure)."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdeopt.discrete import METHODS
from sdeopt.experiments.config import (
    COMPRESSORS,
    NOISES,
    PROBLEMS,
    RUN_KEYS,
    UNIT_LAWS,
    build,
)
from sdeopt.experiments.runner import run_trajectories, run_weak_order

TYPES = sorted(
    {*PROBLEMS, *NOISES, *COMPRESSORS, *UNIT_LAWS, *METHODS, "Constant", "PolyDecay", "StepDecay"}
)
PARAMS = [
    "type",
    "lr",
    "scale",
    "nu",
    "diag",
    "n_workers",
    "k",
    "power",
    "dim",
    "sigma0",
    "sigma1",
    "alpha",
    "levels",
    "batch_size",
    "dataset",
    "normalize",
    "shortcuts",
    "rho",
    "p",
    "every",
    "factor",
]

scalars = st.one_of(
    st.booleans(),
    st.integers(-3, 6),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0.01, 3.0),
    st.text(max_size=6),
    st.sampled_from(["first_order", "float32", "cpu", "cuda", "loss", "x2"]),
)
lists = st.lists(
    st.one_of(
        st.integers(-2, 4),
        st.floats(0.05, 3.0),
        st.sampled_from(
            ["first_order", "second_order", "curvature", "loss", "grad_norm", "dist", "nonsense"]
        ),
    ),
    max_size=4,
)
tables = st.dictionaries(
    st.sampled_from(PARAMS),
    st.one_of(
        st.sampled_from(TYPES),
        st.integers(-2, 6),
        st.floats(0.0, 3.0),
        st.floats(allow_nan=True),
        st.booleans(),
        st.text(max_size=4),
        st.lists(st.floats(0.1, 3.0), min_size=1, max_size=3),
    ),
    max_size=4,
)
wild = st.one_of(scalars, lists, tables)

BASE = {
    "name": "p",
    "problem": {"type": "Quadratic", "diag": [1.0, 2.0]},
    "noise": {"type": "Gaussian"},
    "method": {"type": "DSGD", "lr": 0.1, "n_workers": 2},
    "x0": [1.0, -1.0],
    "n_steps": 4,
    "n_runs": 6,
    "record_every": 2,
}


@st.composite
def configs(draw):
    """BASE with up to four keys replaced by arbitrary values, or nested parameters changed."""
    run = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for key in draw(st.lists(st.sampled_from(sorted(RUN_KEYS)), max_size=4, unique=True)):
        if key in run and isinstance(run[key], dict) and draw(st.booleans()):
            run[key][draw(st.sampled_from(PARAMS))] = draw(wild)  # one parameter of a table
        elif draw(st.booleans()):
            run.pop(key, None)
        else:
            run[key] = draw(wild)
    return run


def _names_a_key(message: str, run: dict) -> bool:
    return message.startswith("Invalid") and any(
        re.search(rf"\b{re.escape(k)}\b", message) for k in (*RUN_KEYS, *run, *PARAMS)
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_every_config_is_refused_naming_a_key_or_runs(run):
    try:
        spec = build(run)
    except ValueError as exc:
        assert _names_a_key(str(exc), run), str(exc)
        return
    # Built: it must run (small ones only; a valid long run is not refused, nor should it be).
    steps = (
        max((round(spec["horizon"] / lr) for lr in spec["lrs"]), default=0)
        if "lrs" in spec
        else spec["n_steps"]
    )
    if steps * spec["n_runs"] * spec["problem"].dim * (1 + len(spec["models"])) > 5e4:
        return
    ds, rows = (run_weak_order if spec["study"] == "weak_order" else run_trajectories)(spec)[:2]
    assert rows  # its summary
    if "run" in ds.dims:
        assert ds.sizes["run"] == spec["n_runs"]
