"""The closed-form SDE of coordinate-wise clipped DSGD against the discrete clipped step (issue 15).

Clipped DSGD (``coord_clip``: every worker clips each coordinate of its stochastic gradient to
[-tau, tau]) on the diagonal quadratic H = diag(linspace(1, 10, d)), N workers, under Gaussian
noise and under Student-t noise with nu = 1.5 and nu = 1 (Cauchy), where only the clipped method
has a Brownian SDE. ``simulate`` (one discrete step: N noise draws per coordinate, clipping and
averaging) and ``solve`` of its first-order SDE (Euler, one substep: the clipped law's mean and
variance in closed form per coordinate and worker, from the noise CDF and partial moments) on the
same runs, timed side by side. "ratio" is SDE time per step over discrete time per step (the
goal: within 2x). With --fuse the clipped law is one compiled kernel (``configure_torch(fuse=True)``;
the compile happens in the untimed warm-up call).

    python benchmarks/bench_clipping.py
    python benchmarks/bench_clipping.py --fuse      # the t CDF compiled (torch.compile)
    python benchmarks/bench_clipping.py --device cuda --runs 100000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, describe, interleaved_best, machine, write

import sdeopt as so
from sdeopt.cli import summary_table


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--fuse", action="store_true", help="configure_torch(fuse=True): the t CDF compiled"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "clipping.json")
    args = parser.parse_args(argv)
    so.configure_torch(fuse=True if args.fuse else None)
    diag = torch.linspace(1.0, 10.0, args.dim).tolist()
    prob = so.problems.Quadratic(diag=diag)
    laws = {
        "Gaussian": so.noise.Gaussian(scale=1.0),
        "Student-t 1.5": so.noise.StudentT(nu=1.5, scale=1.0),
        "Cauchy": so.noise.StudentT(nu=1.0, scale=1.0),
    }
    x0 = torch.ones(args.dim)
    kw = dict(
        n_steps=args.steps,
        n_runs=args.runs,
        record_every=args.steps,
        device=args.device,
        dtype=torch.float32,
    )
    rows = []
    for name, noise in laws.items():
        opt = so.discrete.DSGD(lr=0.01, n_workers=args.workers, noise=noise, coord_clip=1.0)
        sde = so.dynamics.sde_of(opt, prob)
        best = interleaved_best(
            {
                "discrete": lambda o=opt: so.discrete.simulate(o, prob, x0, **kw),
                "sde": lambda s=sde: so.dynamics.solve(s, x0, **kw),
            },
            args.repeats,
            args.device,
        )
        rows.append(
            {
                "noise": name,
                "runs": args.runs,
                "d": args.dim,
                "workers": args.workers,
                "discrete_ms": 1e3 * best["discrete"] / args.steps,
                "sde_ms": 1e3 * best["sde"] / args.steps,
                "ratio": best["sde"] / best["discrete"],
            }
        )
    info = machine(args.device)
    print(
        f"Coordinate-wise clipped DSGD vs its closed-form first-order SDE, per step, on {describe(info)}"
    )
    print(
        summary_table(
            rows,
            [
                ("noise", "noise", ""),
                ("runs", "runs", ""),
                ("discrete_ms", "discrete ms", ".3f"),
                ("sde_ms", "SDE ms", ".3f"),
                ("ratio", "ratio", ".2f"),
            ],
        )
    )
    result = {"benchmark": "clipping", "dtype": "float32", "fused": args.fuse, **info, "rows": rows}
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
