"""The benchmark suite runs as one command and writes what it promises (no timings asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_every_benchmark_writes_json_and_the_summary_prints(suite):
    out, stdout = suite
    for name in (
        "discrete", "sde", "scaling", "w2", "minibatch", "clipping", "rng", "levy", "accuracy",
        "headline", "suite",
    ):  # fmt: skip
        data = json.loads((out / f"{name}.json").read_text())
        assert data["benchmark"] == name and data["date"] and data["torch"]
    assert "=== summary" in stdout and "headline" in stdout


def test_discrete_rows_cover_every_method_with_both_ratios(suite):
    rows = json.loads((suite[0] / "discrete.json").read_text())["rows"]
    cases = " | ".join(r["case"] for r in rows)
    for method in (
        "DSGD",
        "DCSGD + RandK",
        "DSignSGD + Gaussian",
        "DSignSGD + StudentT",
        "ItoChain",
        "MarkovSGD two-state",
        "MLMC",
    ):
        assert method in cases
    assert all(positive(r["speedup_vs_naive"]) and positive(r["ratio_to_bare_rng"]) for r in rows)


def test_sde_benchmark_compares_torchsde_and_a_bare_loop(suite):
    data = json.loads((suite[0] / "sde.json").read_text())
    for key in ("native_vs_bare", "fastest_torchsde_vs_native", "torchsde_default_vs_native"):
        assert positive(data["ratios"][key])
    # The pre-drawn Brownian option is driven by the native increments: the same paths.
    grid = next(o for o in data["torchsde_options"] if o["option"].startswith("GridBrownian"))
    assert grid["max_rel_diff_vs_native"] < 1e-4


def test_scaling_measures_time_and_memory_in_every_sweep(suite):
    data = json.loads((suite[0] / "scaling.json").read_text())
    sweeps = {r["sweep"] for r in data["rows"]}
    assert {"runs", "dim", "steps"} <= sweeps and any(s.startswith("workers") for s in sweeps)
    assert any(s.startswith("budget") for s in sweeps)
    for r in data["rows"]:
        assert positive(r["seconds"]) and r["extra_mib"] >= 0 and positive(r["bound_mib"])
        assert isinstance(r["within_bound"], bool)


def test_w2_rows_carry_targets_and_errors(suite):
    data = json.loads((suite[0] / "w2.json").read_text())
    methods = {(r["d"], r["method"]) for r in data["rows"]}
    assert {(1, "sorted"), (10, "exact"), (10, "sliced"), (10, "gaussian")} <= methods
    for r in data["rows"]:
        assert positive(r["target"]) and positive(r["seconds"]) and math.isfinite(r["rel_error"])


def test_rng_rows_compare_both_precisions_and_every_draw(suite):
    rows = json.loads((suite[0] / "rng.json").read_text())["rows"]
    assert {(r["dtype"], r["kind"]) for r in rows} == {
        (t, k) for t in ("float32", "float64") for k in ("normal", "uniform", "exponential")
    }
    assert all(
        positive(r["ratio"]) and math.isclose(r["ratio"], r["sdeopt_ms"] / r["torch_ms"])
        for r in rows
    )


def test_minibatch_rows_time_the_sde_against_its_discrete_step(suite):
    rows = json.loads((suite[0] / "minibatch.json").read_text())["rows"]
    assert rows and all(
        positive(r["ratio"]) and math.isclose(r["ratio"], r["sde_ms"] / r["discrete_ms"])
        for r in rows
    )
    # the low-rank diffusion: one Brownian coordinate per sample (shards padded to a common size);
    # with RandK also d per worker (its diagonal term)
    assert {r["method"] for r in rows} == {"DSGD", "DCSGD+RandK"}
    for r in rows:
        extra = r["workers"] * r["d"] if r["method"] == "DCSGD+RandK" else 0
        assert r["n"] + extra <= r["brownian_dim"] <= r["n"] + extra + r["workers"]
    estimated = json.loads((suite[0] / "minibatch.json").read_text())["estimated"]
    assert estimated and all(
        positive(r["ratio"]) and math.isclose(r["ratio_per_sample"], r["ratio"] / r["samples"])
        for r in estimated
    )


def test_clipping_rows_time_the_closed_form_sde_against_its_discrete_step(suite):
    rows = json.loads((suite[0] / "clipping.json").read_text())["rows"]
    assert {r["noise"] for r in rows} == {"Gaussian", "Student-t 1.5", "Cauchy"}
    assert all(
        positive(r["ratio"]) and math.isclose(r["ratio"], r["sde_ms"] / r["discrete_ms"])
        for r in rows
    )


def test_levy_benchmark_times_the_levy_step_against_the_brownian_one_and_scipy(suite):
    data = json.loads((suite[0] / "levy.json").read_text())
    cases = " | ".join(r["case"] for r in data["rows"] + data["samplers"])
    for case in ("Lévy SDE, Euler", "exact OU step", "Brownian SDE", "scipy.stats.levy_stable"):
        assert case in cases
    assert positive(data["levy_over_brownian"]) and positive(data["scipy_over_ours"])


def test_accuracy_benchmark_covers_every_applicable_solver(suite):
    """Every task lists sdeopt's schemes and torchsde's solvers (and diffrax's, when installed),
    each with a relative error and a time per solve for every step size."""
    data = json.loads((suite[0] / "accuracy.json").read_text())
    solvers = {(r["task"][0], r["solver"]) for r in data["rows"]}
    for task in "abc":
        assert (task, "sdeopt euler") in solvers and (task, "torchsde euler") in solvers
    assert ("b", "sdeopt weak2") in solvers and ("c", "torchsde srk") in solvers
    assert all(len(v) == 2 and all(positive(p[3]) for p in v) for v in data["curves"].values())
