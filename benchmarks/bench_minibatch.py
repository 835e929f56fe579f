"""The minibatch SDE against the discrete minibatch step it models (issue 14).

DSGD with minibatch noise on logistic regression (scikit-learn's breast-cancer data, n = 569,
d = 31, N workers on a label split, batch b): ``simulate`` (one minibatch step) and ``solve`` of
its first-order SDE (Euler, one substep: the drift plus the low-rank diffusion, the centred
per-sample gradients applied to a Brownian motion of dimension n) on the same runs, timed side by
side; likewise DCSGD + RandK (k = 8), whose diffusion adds RandK's diagonal and rank-one terms to
the per-sample factors (the downdated root of docs/models.md, Brownian dimension N (d + n_i)). "ratio" is SDE time per step over discrete time per step (the goal: within 3x).
The estimated-moments SDE (``moments="estimated", samples=S``) of DCSGD with TopK on the same
minibatches is timed the same way: its step draws S directions, so its ratio should be about S
("per draw" = ratio / S).

    python benchmarks/bench_minibatch.py
    python benchmarks/bench_minibatch.py --device cuda --runs 100000
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
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=8, help="S of the estimated moments")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "minibatch.json")
    args = parser.parse_args(argv)
    so.configure_torch()
    prob = so.problems.LogisticRegression(args.workers, split="label")
    opt = so.discrete.DSGD(
        lr=0.5, n_workers=args.workers, noise=so.noise.Minibatch(batch_size=args.batch)
    )
    sde = so.dynamics.sde_of(opt, prob, "first_order")
    randk = so.discrete.DCSGD(
        lr=0.5,
        n_workers=args.workers,
        noise=so.noise.Minibatch(batch_size=args.batch),
        compressor=so.compressors.RandK(k=8),
    )
    pairs = {"DSGD": (opt, sde), "DCSGD+RandK": (randk, so.dynamics.sde_of(randk, prob))}
    topk = so.discrete.DCSGD(
        lr=0.5,
        n_workers=args.workers,
        noise=so.noise.Minibatch(batch_size=args.batch),
        compressor=so.compressors.TopK(k=8),
    )
    estimated = so.dynamics.sde_of(topk, prob, moments="estimated", samples=args.samples)
    x0 = torch.zeros(prob.dim)
    rows, estimated_rows = [], []
    for n_runs in args.runs:
        kw = dict(
            n_steps=args.steps,
            n_runs=n_runs,
            record_every=args.steps,
            device=args.device,
            dtype=torch.float64,
        )
        for name, (method, model) in pairs.items():
            best = interleaved_best(
                {
                    "discrete": lambda kw=kw, m=method: so.discrete.simulate(m, prob, x0, **kw),
                    "sde": lambda kw=kw, s=model: so.dynamics.solve(s, x0, **kw),
                },
                args.repeats,
                args.device,
            )
            rows.append(
                {
                    "method": name,
                    "runs": n_runs,
                    "n": prob.n_samples,
                    "d": prob.dim,
                    "workers": args.workers,
                    "batch": args.batch,
                    "brownian_dim": model.brownian_dim,
                    "discrete_ms": 1e3 * best["discrete"] / args.steps,
                    "sde_ms": 1e3 * best["sde"] / args.steps,
                    "ratio": best["sde"] / best["discrete"],
                }
            )
        best = interleaved_best(
            {
                "discrete": lambda kw=kw: so.discrete.simulate(topk, prob, x0, **kw),
                "sde": lambda kw=kw: so.dynamics.solve(estimated, x0, **kw),
            },
            args.repeats,
            args.device,
        )
        ratio = best["sde"] / best["discrete"]
        estimated_rows.append(
            {
                "runs": n_runs,
                "samples": args.samples,
                "discrete_ms": 1e3 * best["discrete"] / args.steps,
                "sde_ms": 1e3 * best["sde"] / args.steps,
                "ratio": ratio,
                "ratio_per_sample": ratio / args.samples,
            }
        )
    info = machine(args.device)
    print(
        f"Minibatch DSGD and DCSGD + RandK vs their first-order SDEs, per step, on {describe(info)}"
    )
    print(
        summary_table(
            rows,
            [
                ("method", "method", ""),
                ("runs", "runs", ""),
                ("brownian_dim", "m", ""),
                ("discrete_ms", "discrete ms", ".2f"),
                ("sde_ms", "SDE ms", ".2f"),
                ("ratio", "ratio", ".2f"),
            ],
        )
    )
    print(f"DCSGD + TopK vs its estimated-moments SDE (S = {args.samples}), per step")
    print(
        summary_table(
            estimated_rows,
            [
                ("runs", "runs", ""),
                ("discrete_ms", "discrete ms", ".2f"),
                ("sde_ms", "SDE ms", ".2f"),
                ("ratio", "ratio", ".2f"),
                ("ratio_per_sample", "per draw", ".2f"),
            ],
        )
    )
    result = {
        "benchmark": "minibatch",
        "dtype": "float64",
        **info,
        "rows": rows,
        "estimated": estimated_rows,
    }
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
