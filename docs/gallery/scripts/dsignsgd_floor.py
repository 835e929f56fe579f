"""DSignSGD's stationary floor on a quadratic, with homogeneous and heterogeneous worker noise.

For each noise law, DSignSGD (4 workers) on f = sum_j lambda_j x_j^2 / 2 beside its first-order
SDE (``so.analysis.compare``, default scheme and substeps), 4,000 runs each; prints the mean over
runs of each run's time-averaged loss over t = k lr in [8, 16] (± Monte Carlo se) and the
linearised prediction (derived in docs/gallery/dsignsgd_floor.md), and saves one figure.

Run: python docs/gallery/scripts/dsignsgd_floor.py
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import sdeopt as so
from sdeopt.analysis.closed_forms import stationary_loss

FIGURES = Path(__file__).resolve().parent.parent / "figures" / "dsignsgd_floor"
LAMBDA = [1.0, 2.0, 3.0, 5.0]
N, LR, N_STEPS, N_RUNS, EVERY = 4, 0.02, 800, 4000, 10
WINDOW = (400, 800)  # steps: t in [8, 16]


def density_at_zero(noise) -> float:
    """p(0) of the noise's standard law."""
    if isinstance(noise, so.noise.StudentT):
        nu = noise.nu
        return math.exp(math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2)) / math.sqrt(nu * math.pi)
    return 1.0 / math.sqrt(2.0 * math.pi)


def linearised(noise, scales):
    """E f of the linearised SDE and of the linearised chain (m_i ~ 2 p(0) grad f / sigma_i)."""
    p0 = density_at_zero(noise)
    kappa_per_lambda = 2.0 * p0 * np.mean([1.0 / s for s in scales])  # = 2 p(0) / sigma_H
    sde = chain = 0.0
    for lam in LAMBDA:
        kappa = kappa_per_lambda * lam
        sde += lam / 2 * LR / N / (2 * kappa)
        chain += lam / 2 * LR / N / (kappa * (2 - LR * kappa))
    return sde, chain


CASES = [
    ("Gaussian, scales 1,1,1,1", so.noise.Gaussian, {}, [1.0, 1.0, 1.0, 1.0]),
    ("Gaussian, scales .25,.5,1,2.25", so.noise.Gaussian, {}, [0.25, 0.5, 1.0, 2.25]),
    ("Gaussian, scales 1,1,1,100", so.noise.Gaussian, {}, [1.0, 1.0, 1.0, 100.0]),
    ("Student-t nu=1.5, scales 1,1,1,1", so.noise.StudentT, {"nu": 1.5}, [1.0, 1.0, 1.0, 1.0]),
    (
        "Student-t nu=1.5, scales .25,.5,1,2.25",
        so.noise.StudentT,
        {"nu": 1.5},
        [0.25, 0.5, 1.0, 2.25],
    ),
]


def main() -> None:
    so.configure_torch(1)
    start = time.perf_counter()
    problem = so.problems.Quadratic(diag=LAMBDA)
    x0 = [1.0] * len(LAMBDA)
    rows = []
    for index, (label, law, kwargs, scales) in enumerate(CASES):
        noise = law(scale=scales, **kwargs)
        opt = so.discrete.DSignSGD(lr=LR, n_workers=N, noise=noise)
        ds = so.analysis.compare(
            opt,
            problem,
            x0,
            n_steps=N_STEPS,
            n_runs=N_RUNS,
            seed=index,
            models=["first_order"],
            record=["loss"],
            record_every=EVERY,
        )
        window = ds["loss"].sel(step=slice(*WINDOW))
        per_run = window.mean("step")  # (model, run)
        mean = per_run.mean("run").values
        se = per_run.std("run").values / math.sqrt(N_RUNS)
        solver = ds.attrs["solver"]
        sde_lin, chain_lin = linearised(noise, scales)
        sigma_h = len(scales) / sum(1.0 / s for s in scales)
        rows.append((label, mean, se, sde_lin, chain_lin, sigma_h, ds, solver))
        solver = json.loads(solver)["first_order"]
        print(
            f"{label}: scales' harmonic mean {sigma_h:.4f}, arithmetic mean {np.mean(scales):.4f}"
        )
        print(f"  discrete    {mean[0]:.5f} ± {se[0]:.1e}")
        print(
            f"  first_order {mean[1]:.5f} ± {se[1]:.1e}   "
            f"({solver['scheme']}, {solver['substeps']} substep(s))"
        )
        print(
            f"  SDE - discrete {mean[1] - mean[0]:+.5f} ± {math.hypot(se[0], se[1]):.1e} "
            f"(independent runs), relative {(mean[1] - mean[0]) / mean[0]:+.1%}"
        )
        print(f"  linearised SDE {sde_lin:.5f}, linearised chain {chain_lin:.5f}")
        if law is so.noise.Gaussian:
            dsgd = so.discrete.DSGD(lr=LR, n_workers=N, noise=noise)
            print(
                f"  DSGD with the same noise, closed form (not run): "
                f"{stationary_loss(dsgd, problem):.5f}"
            )

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, *_figures, ds, _ in rows:
        curve = ds["loss"].mean("run")
        t = ds["step"].values * LR
        (line,) = left.plot(t, curve.isel(model=0), label=label)
        left.plot(t, curve.isel(model=1), ls="--", color=line.get_color())
    left.set_yscale("log")
    left.set_xlabel("t = k lr")
    left.set_ylabel("mean loss")
    left.set_title("discrete (solid), first-order SDE (dashed)")
    left.legend(fontsize=6)
    for k, (label, mean, se, _sde_lin, _chain_lin, sigma_h, *_rest) in enumerate(rows):
        marker = "o" if "Gaussian" in label else "s"
        right.errorbar(sigma_h, mean[0], yerr=2 * se[0], fmt=marker, color=f"C{k}")
        right.errorbar(
            sigma_h * 1.03, mean[1], yerr=2 * se[1], fmt=marker, mfc="none", color=f"C{k}"
        )
    grid = np.linspace(0.4, 1.45, 50)
    for law, ls in ((so.noise.Gaussian(), "-"), (so.noise.StudentT(nu=1.5), ":")):
        right.plot(grid, [linearised(law, [g] * N)[0] for g in grid], ls, color="grey", lw=1)
    right.set_xlabel("harmonic mean of the worker scales")
    right.set_ylabel("stationary mean loss")
    right.set_title("filled: discrete, open: SDE; grey: linearised SDE")
    fig.tight_layout()
    fig.savefig(FIGURES / "floor.png", dpi=80)
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
