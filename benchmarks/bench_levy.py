"""The Lévy SDE step against the Brownian SDE step, and the stable sampler against scipy's (issue 16).

DSGD on the diagonal quadratic H = diag(linspace(1, 10, d)), N workers. ``solve`` of its Lévy
model under SymmetricStable(1.5) noise (Euler: one stable (B, d) draw per step; and the exact
stable Ornstein-Uhlenbeck step) against ``solve`` of its first-order Brownian model under
Gaussian noise (Euler: one normal (B, d) draw per step), on the same runs and steps, timed side
by side: "ratio" is Lévy time per step over Brownian time per step (the goal: within 2x). The
sampler part times ``RandomSource.stable`` (Chambers-Mallows-Stuck in torch, on the package's
counter-based streams) against ``scipy.stats.levy_stable.rvs`` and against a bare normal draw of
the same size.

    python benchmarks/bench_levy.py
    python benchmarks/bench_levy.py --device cuda --runs 1000000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, describe, interleaved_best, machine, write

import sdeopt as so
from sdeopt.cli import summary_table
from sdeopt.random import RandomSource


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--alpha", type=float, default=1.5)
    parser.add_argument("--draws", type=int, default=100_000, help="values per sampler call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "levy.json")
    args = parser.parse_args(argv)
    prob = so.problems.Quadratic(diag=torch.linspace(1.0, 10.0, args.dim).tolist())
    x0 = torch.ones(args.dim)
    kw = dict(
        n_steps=args.steps,
        n_runs=args.runs,
        record_every=args.steps,
        device=args.device,
        dtype=torch.float32,
    )
    stable = so.discrete.DSGD(
        lr=0.01, n_workers=args.workers, noise=so.noise.SymmetricStable(alpha=args.alpha)
    )
    gauss = so.discrete.DSGD(lr=0.01, n_workers=args.workers, noise=so.noise.Gaussian(1.0))
    levy = so.dynamics.sde_of(stable, prob, model="levy")
    brownian = so.dynamics.sde_of(gauss, prob)
    best = interleaved_best(
        {
            "brownian": lambda: so.dynamics.solve(brownian, x0, **kw),
            "levy_euler": lambda: so.dynamics.solve(levy, x0, **kw),
            "levy_exact": lambda: so.dynamics.solve(levy, x0, scheme="exact", **kw),
            "discrete_stable": lambda: so.discrete.simulate(stable, prob, x0, **kw),
        },
        args.repeats,
        args.device,
    )
    per_step = {k: 1e3 * v / args.steps for k, v in best.items()}
    rows = [
        {
            "case": f"Lévy SDE, Euler (α = {args.alpha})",
            "ms": per_step["levy_euler"],
            "ratio": best["levy_euler"] / best["brownian"],
        },
        {
            "case": f"Lévy SDE, exact OU step (α = {args.alpha})",
            "ms": per_step["levy_exact"],
            "ratio": best["levy_exact"] / best["brownian"],
        },
        {"case": "Brownian SDE, Euler (Gaussian noise)", "ms": per_step["brownian"], "ratio": 1.0},
        {
            "case": f"discrete DSGD, SαS({args.alpha}) noise",
            "ms": per_step["discrete_stable"],
            "ratio": best["discrete_stable"] / best["brownian"],
        },
    ]
    # The samplers: one call of args.draws values each (float64, as scipy draws).
    n = args.draws
    gen = np.random.default_rng(0)

    def ours():
        return RandomSource(0, n, device=args.device, dtype=torch.float64).stable(args.alpha)

    def bare():
        return RandomSource(0, n, device=args.device, dtype=torch.float64).normal()

    def scipy_rvs():
        return stats.levy_stable.rvs(args.alpha, 0.0, size=n, random_state=gen)

    sampler = interleaved_best(
        {"ours": ours, "bare_normal": bare, "scipy": scipy_rvs}, args.repeats, args.device
    )
    samplers = [
        {"case": "RandomSource.stable", "ms": 1e3 * sampler["ours"], "ratio": 1.0},
        {
            "case": "scipy.stats.levy_stable.rvs",
            "ms": 1e3 * sampler["scipy"],
            "ratio": sampler["scipy"] / sampler["ours"],
        },
        {
            "case": "RandomSource.normal (bare)",
            "ms": 1e3 * sampler["bare_normal"],
            "ratio": sampler["bare_normal"] / sampler["ours"],
        },
    ]
    info = machine(args.device)
    print(
        f"Lévy vs Brownian SDE step ({args.runs} runs, d = {args.dim}, N = {args.workers}, "
        f"float32), per step, on {describe(info)}; ratio to the Brownian Euler step"
    )
    table = [("case", "case", ""), ("ms", "ms", ".3f"), ("ratio", "ratio", ".2f")]
    print(summary_table(rows, table))
    print(f"\nStable samplers, {n} float64 values per call; ratio to RandomSource.stable")
    print(summary_table(samplers, table))
    result = {
        "benchmark": "levy",
        "dtype": "float32",
        "runs": args.runs,
        "dim": args.dim,
        "workers": args.workers,
        "alpha": args.alpha,
        "draws": n,
        **info,
        "rows": rows,
        "samplers": samplers,
        "levy_over_brownian": best["levy_euler"] / best["brownian"],
        "scipy_over_ours": sampler["scipy"] / sampler["ours"],
    }
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
