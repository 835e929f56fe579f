"""SGD with Markovian noise: its stationary loss against the asymptotic-variance formula.

MarkovSGD (single sample per step) on f = x^2/2 with TwoStateMarkov and GaussianAR1 chains of
lag-1 correlation rho from -0.5 to 0.9, beside its first-order SDE (``so.analysis.compare``,
defaults), 4,000 runs each; prints the mean over runs of each run's time-averaged loss over steps
500-3000 (± Monte Carlo se), the chain's exact closed form, the SDE's prediction with the
asymptotic variance sigma_eff^2 = (1 + rho)/(1 - rho), and the prediction with the stationary
variance (1) that ignores the correlation. Saves one figure.

Run: python docs/gallery/scripts/markov_effective_variance.py
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import sdeopt as so

FIGURES = Path(__file__).resolve().parent.parent / "figures" / "markov_effective_variance"
LR, N_STEPS, N_RUNS, EVERY, WINDOW = 0.01, 3000, 4000, 10, (500, 3000)
CASES = [
    ("TwoStateMarkov p=0.75 (rho=-0.5)", so.noise.TwoStateMarkov(p=0.75)),
    ("TwoStateMarkov p=0.5 (rho=0)", so.noise.TwoStateMarkov(p=0.5)),
    ("TwoStateMarkov p=0.25 (rho=0.5)", so.noise.TwoStateMarkov(p=0.25)),
    ("TwoStateMarkov p=0.1 (rho=0.8)", so.noise.TwoStateMarkov(p=0.1)),
    ("TwoStateMarkov p=0.05 (rho=0.9)", so.noise.TwoStateMarkov(p=0.05)),
    ("GaussianAR1 rho=0.8", so.noise.GaussianAR1(rho=0.8)),
]


def chain_closed_form(rho: float) -> float:
    """Stationary E f = Var x / 2 of the chain itself (docs/methods.md, MarkovSGD)."""
    c = 1.0 - LR
    return LR**2 * (1 + c * rho) / ((1 - c * c) * (1 - c * rho)) / 2


def main() -> None:
    so.configure_torch(1)
    start = time.perf_counter()
    problem = so.problems.Quadratic(diag=[1.0])
    rows = []
    for index, (label, noise) in enumerate(CASES):
        rho = noise.autocorrelation(1)
        opt = so.discrete.MarkovSGD(lr=LR, noise=noise)
        ds = so.analysis.compare(
            opt,
            problem,
            [0.0],
            n_steps=N_STEPS,
            n_runs=N_RUNS,
            seed=index,
            record=["loss"],
            record_every=EVERY,
        )
        per_run = ds["loss"].sel(step=slice(*WINDOW)).mean("step")  # (model, run)
        mean = per_run.mean("run").values
        se = per_run.std("run").values / math.sqrt(N_RUNS)
        solver = json.loads(ds.attrs["solver"])["first_order"]
        eff = noise.asymptotic_variance
        sde, naive, exact = LR * eff / 4, LR / 4, chain_closed_form(rho)
        rows.append((rho, mean, se, sde, naive, exact, label))
        print(
            f"{label}: sigma_eff^2 {eff:.3f}, mixing time {noise.mixing_time}, "
            f"lr * tau {LR * noise.mixing_time:.2f}"
        )
        print(f"  discrete    {mean[0]:.6f} ± {se[0]:.1e}   chain's closed form {exact:.6f}")
        print(
            f"  first_order {mean[1]:.6f} ± {se[1]:.1e}   "
            f"({solver['scheme']}, {solver['substeps']} substep(s))"
        )
        print(
            f"  SDE formula lr s^2 sigma_eff^2 / 4 = {sde:.6f}; "
            f"with the stationary variance lr s^2 / 4 = {naive:.6f}"
        )
        print(
            f"  discrete / SDE formula {mean[0] / sde:.3f} ± {se[0] / sde:.3f}; "
            f"chain's closed form / SDE formula {exact / sde:.3f}"
        )

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, (rho, mean, se, _sde, _naive, _exact, label) in enumerate(rows):
        ax.errorbar(
            rho,
            mean[0],
            yerr=2 * se[0],
            fmt="o" if "Two" in label else "s",
            color="C0",
            label="discrete" if k == 0 else None,
        )
        ax.errorbar(
            rho + 0.02,
            mean[1],
            yerr=2 * se[1],
            fmt="o" if "Two" in label else "s",
            mfc="none",
            color="C1",
            label="first-order SDE" if k == 0 else None,
        )
    grid = [r / 100 for r in range(-60, 95)]
    ax.plot(
        grid,
        [LR * (1 + r) / (1 - r) / 4 for r in grid],
        color="C1",
        lw=1,
        label="lr sigma_eff^2 / 4 (asymptotic variance)",
    )
    ax.plot(grid, [chain_closed_form(r) for r in grid], "k--", lw=1, label="chain's closed form")
    ax.axhline(LR / 4, color="grey", ls=":", lw=1, label="lr / 4 (stationary variance)")
    ax.set_yscale("log")
    ax.set_xlabel("lag-1 correlation rho of the noise chain")
    ax.set_ylabel("stationary mean loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "floor.png", dpi=80)
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
