"""Cost and accuracy of the W2 estimators of ``sdeopt.analysis.wasserstein2`` against sample size.

Two Gaussian laws with known distances: P = N(0, I_d) and Q = N(m, diag(s²)) with |m| = 0.5
and s evenly spaced in [0.5, 1.5], so W2(P, Q)² = |m|² + Σ (s_i - 1)² exactly; the sliced
estimator targets the sliced distance SW2² = E_θ[(θ·m)² + (sqrt(θᵀ diag(s²) θ) - 1)²], computed
here from 10^6 random directions. For each estimator and sample size n (n samples of each law),
``--reps`` independent repetitions give the mean estimate, its spread and its relative error; the
same-law floor that ``wasserstein2`` reports beside every value is shown too. Time is per call
(value and floor), the fastest of the repetitions; the cost exponent is the slope of log time
against log n over the larger half of the sizes.

    python benchmarks/bench_w2.py [--quick] [--reps 5]
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, describe, loglog_slope, machine, timed, write

from sdeopt.analysis import wasserstein2
from sdeopt.cli import summary_table


def laws(d: int):
    m = np.full(d, 0.5 / math.sqrt(d))
    s = np.linspace(0.5, 1.5, d) if d > 1 else np.array([1.5])
    return m, s


def exact_w2(d: int) -> float:
    m, s = laws(d)
    return math.sqrt(float(m @ m + np.sum((s - 1.0) ** 2)))


def exact_sliced(d: int, n_dirs: int = 10**6, seed: int = 12345) -> float:
    m, s = laws(d)
    theta = np.random.default_rng(seed).standard_normal((n_dirs, d))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    values = (theta @ m) ** 2 + (np.sqrt((theta**2) @ s**2) - 1.0) ** 2
    return math.sqrt(float(values.mean()))


def samples(d: int, n: int, rng: np.random.Generator):
    m, s = laws(d)
    return rng.standard_normal((n, d)), m + s * rng.standard_normal((n, d))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS / "w2.json")
    args = parser.parse_args(argv)
    sizes = [100, 300, 1000] if args.quick else [100, 300, 1000, 3000, 10_000, 30_000]
    exact_max = 300 if args.quick else 2000
    cases = [
        (1, "sorted", sizes),
        (1, "gaussian", sizes),
        (10, "gaussian", sizes),
        (10, "sliced", sizes),
        (
            10,
            "exact",
            [n for n in sizes if n <= exact_max] + ([] if exact_max in sizes else [exact_max]),
        ),
    ]
    rows, summary = [], []
    for d, method, ns in cases:
        target = exact_sliced(d) if method == "sliced" else exact_w2(d)
        times = []
        for n in ns:
            values, floors, best = [], [], math.inf
            for rep in range(args.reps):
                a, b = samples(d, n, np.random.default_rng(1000 * rep + n))
                seconds, w = timed(partial(wasserstein2, a, b, method=method, seed=rep))
                best = min(best, seconds)
                values.append(w.value)
                floors.append(w.floor)
            mean, sd = (
                float(np.mean(values)),
                float(np.std(values, ddof=1)) if args.reps > 1 else math.nan,
            )
            rows.append(
                {
                    "d": d,
                    "method": method,
                    "n": n,
                    "target": target,
                    "mean": mean,
                    "sd": sd,
                    "rel_error": mean / target - 1.0,
                    "rel_sd": sd / target,
                    "floor": float(np.mean(floors)),
                    "seconds": best,
                }
            )
            times.append(best)
            print(
                f"  d={d} {method} n={n}: {mean:.4f} ± {sd:.4f} (target {target:.4f}), {best:.3f} s",
                flush=True,
            )
        summary.append(
            {
                "d": d,
                "method": method,
                "cost_exponent": loglog_slope(ns, times),
                "rel_error_at_largest_n": rows[-1]["rel_error"],
            }
        )
    info = machine("cpu")
    result = {"benchmark": "w2", "reps": args.reps, **info, "rows": rows, "summary": summary}
    print(f"\nW2 estimators on {describe(info)}; {args.reps} repetitions per size")
    print(
        summary_table(
            rows,
            [
                ("d", "d", "d"),
                ("method", "method", ""),
                ("n", "n", "d"),
                ("target", "target", ".4f"),
                ("mean", "mean estimate", ".4f"),
                ("sd", "sd", ".4f"),
                ("rel_error", "rel. error", "+.1%"),
                ("floor", "same-law floor", ".4f"),
                ("seconds", "s per call", ".4f"),
            ],
        )
    )
    print(
        summary_table(
            summary,
            [
                ("d", "d", "d"),
                ("method", "method", ""),
                ("cost_exponent", "time ~ n^", ".2f"),
                ("rel_error_at_largest_n", "rel. error at largest n", "+.1%"),
            ],
        )
    )
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
