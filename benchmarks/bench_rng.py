"""The cost of prefix-stable seeding: sdeopt's RandomSource against torch generators.

Since issue 12 a run's draws depend only on (seed, run index): each block of runs restarts its
stream at a position fixed by (seed, block, draw count), on the CPU from numpy's PCG64DXSM. The
reference is what the draws cost before, torch's own generator per block filling its rows
(not prefix-stable: a partial block's draws depended on how many runs it held). Both allocate
a fresh (runs, d) tensor per draw, as the engine does. "ratio" > 1 means sdeopt is slower.

    python benchmarks/bench_rng.py                 # 2^20 runs (full blocks) and 1,000 runs (one partial block)
    python benchmarks/bench_rng.py --device cuda
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
from sdeopt.random import DEFAULT_BLOCK_SIZE, RandomSource

KINDS = {"normal": "normal_", "uniform": "uniform_", "exponential": "exponential_"}


def torch_blocks(n_runs: int, dim: int, device: str, dtype: torch.dtype, kind: str):
    """A draw from one torch.Generator per block (the previous scheme)."""
    gens = []
    for j in range(0, n_runs, DEFAULT_BLOCK_SIZE):
        g = torch.Generator(device=device)
        g.manual_seed(j)
        gens.append((g, slice(j, min(j + DEFAULT_BLOCK_SIZE, n_runs))))
    fill = KINDS[kind]

    def draw():
        out = torch.empty((n_runs, dim), device=device, dtype=dtype)
        for g, sl in gens:
            getattr(out[sl], fill)(generator=g)
        return out

    return draw


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, nargs="+", default=[2**20, 1000])
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--draws", type=int, default=20, help="draws per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "rng.json")
    args = parser.parse_args(argv)
    so.configure_torch()
    rows = []
    for n_runs in args.runs:
        for dtype in (torch.float64, torch.float32):
            for kind in KINDS:
                rng = RandomSource(0, n_runs, device=args.device, dtype=dtype)
                ours, ref = (
                    getattr(rng, kind),
                    torch_blocks(n_runs, args.dim, args.device, dtype, kind),
                )
                best = interleaved_best(
                    {
                        "sdeopt": lambda f=ours: [f(args.dim) for _ in range(args.draws)],
                        "torch": lambda f=ref: [f() for _ in range(args.draws)],
                    },
                    args.repeats,
                    args.device,
                )
                per = {k: v / args.draws for k, v in best.items()}
                rows.append(
                    {
                        "runs": n_runs,
                        "dim": args.dim,
                        "dtype": str(dtype).replace("torch.", ""),
                        "kind": kind,
                        "sdeopt_ms": 1e3 * per["sdeopt"],
                        "torch_ms": 1e3 * per["torch"],
                        "ratio": per["sdeopt"] / per["torch"],
                    }
                )
    info = machine(args.device)
    print(f"RandomSource vs torch generators per block, on {describe(info)}")
    print(
        summary_table(
            rows,
            [
                ("runs", "runs", ""),
                ("dtype", "dtype", ""),
                ("kind", "draw", ""),
                ("sdeopt_ms", "sdeopt ms", ".3f"),
                ("torch_ms", "torch ms", ".3f"),
                ("ratio", "ratio", ".2f"),
            ],
        )
    )
    result = {"benchmark": "rng", **info, "rows": rows}
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
