"""The oracle cost of MarkovSGD's MLMC estimator: measured calls per step against B (m + 2^-m).

MarkovSGD with the MLMC estimator (base batch B, truncation M, m = floor(log2 M)) on f = x^2/2
with TwoStateMarkov(p=0.1) noise, 2,000 runs of 500 steps per (B, M), the discrete method only
(``so.analysis.compare(models=[])``, recording the method's own observable ``oracle_calls``);
prints each run's calls per step averaged over runs (± Monte Carlo se) beside
``MarkovSGD.expected_calls()`` = B (m + 2^-m) and the dataset attribute
``oracle_calls_per_step``, and the measured standard deviation of one step's calls beside its
exact value B sqrt(2^(m+1) - 2 + 2^-m - (m + 2^-m)^2). Saves one figure.

Run: python docs/gallery/scripts/mlmc_cost.py
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import sdeopt as so

FIGURES = Path(__file__).resolve().parent.parent / "figures" / "mlmc_cost"
LR, N_STEPS, N_RUNS = 0.01, 500, 2000
SETTINGS = [(1, 1), (1, 2), (1, 8), (1, 64), (1, 100), (1, 256), (4, 64)]  # (B, M)


def exact_sd(batch: int, max_batch: int) -> float:
    """Standard deviation of one step's calls: 2^J B if 2^J <= M else B, J ~ Geom(1/2)."""
    m = math.floor(math.log2(max_batch))
    second = 2.0 ** (m + 1) - 2.0 + 2.0**-m  # E (calls / B)^2
    return batch * math.sqrt(second - (m + 2.0**-m) ** 2)


def main() -> None:
    so.configure_torch(1)
    start = time.perf_counter()
    problem = so.problems.Quadratic(diag=[1.0])
    noise = so.noise.TwoStateMarkov(p=0.1)
    rows = []
    for index, (batch, max_batch) in enumerate(SETTINGS):
        opt = so.discrete.MarkovSGD(
            lr=LR, noise=noise, estimator=so.discrete.MLMC(batch=batch, max_batch=max_batch)
        )
        ds = so.analysis.compare(
            opt,
            problem,
            [0.0],
            n_steps=N_STEPS,
            n_runs=N_RUNS,
            seed=index,
            models=[],
            record=["oracle_calls"],
            record_every=N_STEPS,
        )
        calls = ds["oracle_calls"].sel(model="discrete").isel(step=-1).values  # (runs,)
        per_step = calls / N_STEPS
        mean = float(per_step.mean())
        se = float(per_step.std(ddof=1) / math.sqrt(N_RUNS))
        sd_one_step = float(per_step.std(ddof=1) * math.sqrt(N_STEPS))  # steps are i.i.d.
        expected = opt.expected_calls()
        attr = float(ds.attrs["oracle_calls_per_step"])
        m = math.floor(math.log2(max_batch))
        rows.append((batch, max_batch, mean, se, expected, sd_one_step, exact_sd(batch, max_batch)))
        z = f"{(mean - expected) / se:+.2f}" if se > 0 else "(se 0: every step costs the same)"
        print(
            f"B={batch}, M={max_batch} (m={m}): calls per step {mean:.4f} ± {se:.4f}; "
            f"B (m + 2^-m) = {expected:.4f} (attribute {attr:.4f}); "
            f"(measured - expected) / se = {z}; "
            f"sd of one step's calls {sd_one_step:.2f} (exact {exact_sd(batch, max_batch):.2f})"
        )

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for batch, marker in ((1, "o"), (4, "s")):
        sel = [r for r in rows if r[0] == batch]
        ax.errorbar(
            [r[1] for r in sel],
            [r[2] for r in sel],
            yerr=[2 * r[3] for r in sel],
            fmt=marker,
            color="C0",
            label=f"measured, B = {batch}",
        )
        ax.plot(
            [r[1] for r in sel],
            [r[4] for r in sel],
            "x",
            color="C1",
            ms=9,
            label=f"B (m + 2^-m), B = {batch}",
        )
    grid = [2**k for k in range(0, 9)]
    ax.plot(
        grid,
        [math.floor(math.log2(g)) + 2.0 ** -math.floor(math.log2(g)) for g in grid],
        color="C1",
        lw=0.8,
    )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("max_batch M")
    ax.set_ylabel("oracle calls per step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "calls.png", dpi=80)
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
