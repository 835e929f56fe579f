"""W2 between an Itô chain and its SDE against the step size, Gaussian and skewed noise.

SGLD-type Itô chains (gamma = 0, b = -grad f, sigma = sqrt 2) on f = x^2/2 from x0 = 2, at
horizon T = 2, for lr = 0.4 ... 0.025, with Gaussian and with centred-exponential (skewed) eps,
beside the first-order SDE (``so.analysis.compare``, its default scheme at the solver
step h = 0.025); W2 of x_T between chain and
SDE by ``so.analysis.wasserstein2`` (exact in 1-D) with its same-law floor, and the mean ± se of
the estimate over 5 disjoint blocks of runs; the Gaussian chain's W2 in closed form; slopes by
``so.analysis.order_fit``. Saves one figure.

Run: python docs/gallery/scripts/ito_chain_w2.py
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import sdeopt as so

FIGURES = Path(__file__).resolve().parent.parent / "figures" / "ito_chain_w2"
LRS = [0.4, 0.2, 0.1, 0.05, 0.025]
HORIZON, X0, N_RUNS, BLOCKS = 2.0, 2.0, 400_000, 5
H = 0.025  # the SDE solver's step: its bias (weak order 2) is far below the W2 measured
LAWS = {
    "Gaussian eps": so.noise.StandardNormal(),
    "centred Exp(1) eps (skewness 2)": so.noise.CenteredExponential(),
}


def gaussian_chain_w2(lr: float) -> float:
    """Exact W2 between the Gaussian chain's x_K and the OU's X_T (both Gaussian)."""
    k = round(HORIZON / lr)
    a = 1.0 - lr
    m_chain, v_chain = a**k * X0, 2.0 * lr * (1.0 - a ** (2 * k)) / (1.0 - a * a)
    m_sde, v_sde = math.exp(-HORIZON) * X0, 1.0 - math.exp(-2.0 * HORIZON)
    return math.hypot(m_chain - m_sde, math.sqrt(v_chain) - math.sqrt(v_sde))


def main() -> None:
    so.configure_torch(1)
    start = time.perf_counter()
    problem = so.problems.Quadratic(diag=[1.0])
    results = {}
    for li, (label, eps) in enumerate(LAWS.items()):
        rows = []
        for i, lr in enumerate(LRS):
            n_steps = round(HORIZON / lr)
            chain = so.discrete.ItoChain(lr=lr, gamma=0.0, eps=eps)
            ds = so.analysis.compare(
                chain,
                problem,
                [X0],
                n_steps=n_steps,
                n_runs=N_RUNS,
                seed=100 * li + i,
                record=["loss"],
                record_x=True,
                substeps=round(lr / H),
                record_every=n_steps,
            )
            x = ds["x"].isel(step=-1, coord=0)
            a, b = x.sel(model="discrete").values, x.sel(model="first_order").values
            full = so.analysis.wasserstein2(a, b)
            blocks = [
                so.analysis.wasserstein2(a[j::BLOCKS], b[j::BLOCKS]).value for j in range(BLOCKS)
            ]
            block_mean = float(np.mean(blocks))
            block_se = float(np.std(blocks, ddof=1) / math.sqrt(BLOCKS))
            scheme = ds.attrs["solver"]
            rows.append((lr, full.value, full.floor, block_mean, block_se))
            exact = f", closed form {gaussian_chain_w2(lr):.5f}" if "Gaussian" in label else ""
            print(
                f"{label}, lr={lr}: W2 {full.value:.5f} (floor {full.floor:.5f}; "
                f"{BLOCKS} blocks of {N_RUNS // BLOCKS}: {block_mean:.5f} ± {block_se:.5f})"
                f"{exact}"
            )
        results[label] = rows
        values = [r[1] for r in rows]
        fit = so.analysis.order_fit(LRS, values, [r[4] / math.sqrt(BLOCKS) for r in rows])
        print(
            f"{label}: slope of log W2 against log lr {fit.slope:.2f} "
            f"[{fit.ci_low:.2f}, {fit.ci_high:.2f}] (95 %)"
        )
    solver = json.loads(scheme)["first_order"]
    print(f"SDE solver: {solver['scheme']}, h = lr / substeps = {H}")

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, (label, rows) in enumerate(results.items()):
        lr = np.array([r[0] for r in rows])
        ax.errorbar(
            lr,
            [r[1] for r in rows],
            yerr=[2 * r[4] / math.sqrt(BLOCKS) for r in rows],
            fmt="o-",
            color=f"C{k}",
            label=f"{label}: W2",
        )
        ax.plot(lr, [r[2] for r in rows], "x:", color=f"C{k}", label=f"{label}: same-law floor")
    ax.plot(
        LRS, [gaussian_chain_w2(lr) for lr in LRS], "k--", lw=1, label="Gaussian eps: closed form"
    )
    ref = np.array(LRS)
    ax.plot(ref, 0.1 * ref, color="grey", lw=0.8, label="slope 1")
    ax.plot(ref, 0.1 * np.sqrt(ref), color="grey", lw=0.8, ls="-.", label="slope 1/2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(LRS, [str(lr) for lr in LRS])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("lr")
    ax.set_ylabel("W2 of x_T, chain vs SDE (T = 2)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "w2.png", dpi=80)
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
