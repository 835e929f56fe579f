"""Accuracy per second: solver error against wall time for sdeopt's schemes, torchsde and diffrax.

Three tasks (issue 18), each with a reference free of solver error:

(a) the stationary loss of DCSGD + RandK's curvature SDE on a diagonal quadratic (d = 4,
    lr = 0.1, 2 workers, RandK(1)): the closed form ``stationary_loss``; the loss is averaged
    over t in [10, 20] (recorded every step) and over a tenth of the paths;
(b) E f(X_T) of DSGD's second-order SDE on f = x²/2 + x⁴/4 (1-D, lr = 0.1, σ = 1, x0 = 1, T = 1):
    the backward Kolmogorov equation solved by Crank–Nicolson on a fine grid;
(c) E f(X_T) of DSignSGD's first-order SDE under Student-t noise (ν = 1.5, 4 workers, f = x²/2,
    x0 = 1, T = 1): the same Crank–Nicolson reference.

For every solver and solver step h = lr / s (s = 1, 2, 4, …) it times one solve of ``--paths``
paths (float64, one torch thread; jax on the CPU with float64) and records the relative error
with its Monte Carlo standard error. The cost of reaching a relative error ε is read off the
fit error ≈ C h^p over the points whose error exceeds three standard errors, times the measured
time per step: a fitted figure, said so in the output; the curves are plotted, error against
seconds, beside the JSON (accuracy.png). Side by side in one process; diffrax
runs only when jax and diffrax are installed (``pip install sdeopt[bench]``).

    python benchmarks/bench_accuracy.py
    python benchmarks/bench_accuracy.py --quick
    python benchmarks/bench_accuracy.py --tasks a      # one task
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, describe, machine, write

import sdeopt as so
from sdeopt.analysis.closed_forms import kolmogorov_expectation
from sdeopt.cli import summary_table

LR = 0.1


def _tasks():
    """name -> (sde, x0, n_steps, observable of the final state, reference, kind)."""
    out = {}
    # (a) stationary loss, closed form
    prob_a = so.problems.Quadratic(diag=[1.0, 2.0, 3.0, 4.0])
    opt_a = so.discrete.DCSGD(
        lr=LR, n_workers=2, noise=so.noise.Gaussian(1.0), compressor=so.compressors.RandK(k=1)
    )
    out["a: RandK curvature, stationary loss"] = dict(
        sde=so.dynamics.sde_of(opt_a, prob_a, "curvature"),
        x0=[0.0] * 4,
        n_steps=200,
        average_from=100,
        reference=so.analysis.stationary_loss(opt_a, prob_a, model="curvature"),
    )
    # (b) second-order SDE on x²/2 + x⁴/4
    opt_b = so.discrete.DSGD(lr=LR, noise=so.noise.Gaussian(1.0))
    prob_b = so.problems.QuadraticQuartic(1)
    sde_b = so.dynamics.sde_of(opt_b, prob_b, "second_order")
    out["b: DSGD second order, E f(X_T)"] = dict(
        sde=sde_b, x0=[1.0], n_steps=10, average_from=None, reference=_reference_1d(sde_b, 1.0)
    )
    # (c) sign SDE under Student-t noise
    opt_c = so.discrete.DSignSGD(lr=LR, n_workers=4, noise=so.noise.StudentT(nu=1.5))
    sde_c = so.dynamics.sde_of(opt_c, so.problems.Quadratic(diag=[1.0]))
    out["c: DSignSGD t(1.5), E f(X_T)"] = dict(
        sde=sde_c, x0=[1.0], n_steps=10, average_from=None, reference=_reference_1d(sde_c, 1.0)
    )
    return out


def _reference_1d(sde, t_end):
    return kolmogorov_expectation(
        sde,
        lambda x: sde.problem.loss(torch.tensor(x)[:, None]).numpy(),
        1.0,
        t_end,
        lo=-4.0,
        hi=4.0,
        n_x=4001,
        n_t=4000,
    )


def _per_path(values: torch.Tensor, average_from, steps) -> np.ndarray:
    """Each path's figure: its final loss, or its time average."""
    v = values if average_from is None else values[steps >= average_from].mean(0, keepdim=True)
    return v[-1].numpy()


def _run_torch(task, paths, substeps, *, extrapolate=False, **solve_kw):
    """(seconds, mean, se) of one solve; with ``extrapolate``, of Richardson's
    (2^p E_{h/2} - E_h)/(2^p - 1) from two solves at h and h/2 on one Brownian path
    (``path_seed``), per path, both solves timed."""
    record_every = 1 if task["average_from"] is not None else task["n_steps"]
    levels = (substeps, 2 * substeps) if extrapolate else (substeps,)
    start = time.perf_counter()
    values = []
    for s in levels:
        traj = so.dynamics.solve(
            task["sde"],
            task["x0"],
            n_steps=task["n_steps"],
            n_runs=paths,
            substeps=s,
            record=["loss"],
            record_every=record_every,
            seed=s,
            path_seed=1 if extrapolate else None,
            **solve_kw,
        )
        values.append(_per_path(traj.loss, task["average_from"], torch.as_tensor(traj.steps)))
    seconds = time.perf_counter() - start
    if extrapolate:
        order = so.dynamics.SCHEMES[solve_kw["scheme"]].weak_order
        w = 2.0**order / (2.0**order - 1.0)
        per_path = w * values[1] + (1.0 - w) * values[0]
    else:
        per_path = values[0]
    return seconds, float(per_path.mean()), float(per_path.std(ddof=1) / math.sqrt(len(per_path)))


def _diffrax_solvers(task_name):
    try:
        import diffrax  # noqa: F401
        import jax
    except ImportError:
        return {}
    jax.config.update("jax_enable_x64", True)
    if task_name.startswith("b"):
        return {
            "diffrax Euler": "Euler",
            "diffrax Heun": "Heun",
            "diffrax SRA1": "SRA1",
            "diffrax ShARK": "ShARK",
        }
    if task_name.startswith("c"):
        return {"diffrax Euler": "Euler", "diffrax ItoMilstein": "ItoMilstein"}
    return {}  # (a): RandK's non-diagonal, state-dependent root is not written in jax here


def _run_diffrax(task, solver_name, paths, substeps):
    """One diffrax solve per path, vmapped over the paths and jit-compiled (the compile outside
    the timing): constant step h, UnsafeBrownianPath (diffrax's fastest for fixed steps)."""
    import diffrax
    import jax
    import jax.numpy as jnp
    import lineax

    sde = task["sde"]
    h = LR / substeps
    t_end = task["n_steps"] * LR
    is_sign = sde.config["method"]["type"] == "DSignSGD"
    if is_sign:
        nu, scale, n_workers, lam = 1.5, 1.0, 4, 1.0

        def cdf(y):  # Student-t CDF through the regularized incomplete beta
            x = nu / (nu + y * y)
            tail = 0.5 * jax.scipy.special.betainc(nu / 2, 0.5, x)
            return jnp.where(y > 0, 1 - tail, tail)

        def drift(t, y, args):
            return -(2 * cdf(lam * y / scale) - 1)

        def diffusion(t, y, args):
            m = 2 * cdf(lam * y / scale) - 1
            return lineax.DiagonalLinearOperator(jnp.sqrt(LR * (1 - m * m) / n_workers))

        def loss(y):
            return 0.5 * y * y
    else:

        def drift(t, y, args):
            grad = y + y**3
            return -grad - (LR / 2) * (1 + 3 * y * y) * grad

        def diffusion(t, y, args):
            return lineax.DiagonalLinearOperator(jnp.full_like(y, math.sqrt(LR)))

        def loss(y):
            return 0.5 * y * y + 0.25 * y**4

    solver = getattr(diffrax, solver_name)()
    needs_area = solver_name in ("SRA1", "ShARK")
    y0 = jnp.full((1,), task["x0"][0], dtype=jnp.float64)

    def solve_one(key):  # one path, a (1,) state; vmapped over the paths' keys
        bm = diffrax.UnsafeBrownianPath(
            shape=(1,),
            key=key,
            levy_area=diffrax.SpaceTimeLevyArea if needs_area else diffrax.BrownianIncrement,
        )
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        sol = diffrax.diffeqsolve(
            terms,
            solver,
            0.0,
            t_end,
            h,
            y0,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=int(t_end / h) + 8,
            adjoint=diffrax.ForwardMode(),
        )
        return loss(sol.ys[-1, 0])

    solve = jax.jit(jax.vmap(solve_one))
    solve(jax.random.split(jax.random.PRNGKey(0), paths)).block_until_ready()  # compile
    keys = jax.random.split(jax.random.PRNGKey(substeps), paths)
    start = time.perf_counter()
    values = np.asarray(solve(keys).block_until_ready())
    seconds = time.perf_counter() - start
    return seconds, float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def _fit_cost(points, eps):
    """Seconds to reach relative error eps from error ≈ C h^p (points with error > 3 se) and
    time ∝ 1/h; None when fewer than two points resolve the error."""
    good = [(h, e, s) for h, e, se, s in points if e > 3 * se]
    if len(good) < 2:
        return None
    h, e, s = (np.array(v) for v in zip(*good))
    p, logc = np.polyfit(np.log(h), np.log(e), 1)
    if p <= 0:
        return None
    h_eps = math.exp((math.log(eps) - logc) / p)
    per_unit = float(np.median(s * h))  # seconds x h: time per unit of 1/h
    return per_unit / h_eps


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="few paths and steps: a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy.json")
    parser.add_argument(
        "--tasks", default="abc", help="which tasks to run, by letter (default: abc, all)"
    )
    args = parser.parse_args(argv)
    so.configure_torch(threads=1)
    paths = 400 if args.quick else args.paths
    substep_grid = (1, 2) if args.quick else (1, 2, 4, 8, 16, 32)
    rows, curves = [], {}
    for name, task in _tasks().items():
        if name[0] not in args.tasks:
            continue
        ref = task["reference"]
        solvers = {f"sdeopt {s}": ("native", s) for s in _applicable(task["sde"])}
        # Talay–Tubaro: Richardson extrapolation of an expectation over h and h/2, on one path
        for s in ("euler", "weak2"):
            if f"sdeopt {s}" in solvers:
                solvers[f"sdeopt {s} + Richardson"] = ("extrapolated", s)
        if task["sde"].noise_type == "diagonal":
            solvers.update({f"torchsde {m}": ("torchsde", m) for m in ("euler", "milstein", "srk")})
        else:
            solvers["torchsde euler"] = ("torchsde", "euler")
        for label, solver in _diffrax_solvers(name).items():
            solvers[label] = ("diffrax", solver)
        # the stationary task averages 100 steps per path: a tenth of the paths suffices
        n = paths // 10 if task["average_from"] is not None else paths
        for label, (backend, scheme) in solvers.items():
            points = []
            for s in substep_grid:
                if backend == "native":
                    seconds, mean, se = _run_torch(task, n, s, scheme=scheme)
                elif backend == "extrapolated":
                    seconds, mean, se = _run_torch(task, n, s, scheme=scheme, extrapolate=True)
                elif backend == "torchsde":
                    seconds, mean, se = _run_torch(
                        task, n, s, backend="torchsde", torchsde_method=scheme
                    )
                else:
                    seconds, mean, se = _run_diffrax(task, scheme, n, s)
                err = abs(mean - ref) / abs(ref)
                points.append((LR / s, err, se / abs(ref), seconds))
            curves[f"{name} | {label}"] = points
            rows.append(
                {
                    "task": name,
                    "solver": label,
                    "errors": " ".join(f"{e:.1e}±{se:.0e}" for _, e, se, _ in points),
                    "s_per_solve": " ".join(f"{t:.2f}" for *_, t in points),
                    "cost_1e-2": _fit_cost(points, 1e-2),
                    "cost_1e-3": _fit_cost(points, 1e-3),
                }
            )
    for name in {r["task"] for r in rows}:
        task_rows = [r for r in rows if r["task"] == name]
        for eps in ("cost_1e-2", "cost_1e-3"):
            best = min(
                (r[eps] for r in task_rows if r["solver"].startswith("sdeopt") and r[eps]),
                default=None,
            )
            for r in task_rows:
                r[f"ratio_{eps[5:]}"] = r[eps] / best if best and r[eps] else None
    info = machine("cpu")
    print(
        f"Accuracy per second ({paths} paths, float64, substeps {substep_grid}) on {describe(info)}"
    )
    print("relative errors ± se per substep count; cost = fitted seconds to reach the error")
    print(
        summary_table(
            rows,
            [
                ("task", "task", ""),
                ("solver", "solver", ""),
                ("errors", "relative error ± se", ""),
                ("cost_1e-2", "s to 1e-2", ".3g"),
                ("ratio_1e-2", "x best sdeopt", ".1f"),
                ("cost_1e-3", "s to 1e-3", ".3g"),
                ("ratio_1e-3", "x best sdeopt", ".1f"),
            ],
        )
    )
    _plot(curves, args.out.with_suffix(".png"))
    result = {
        "benchmark": "accuracy",
        "paths": paths,
        **info,
        "rows": rows,
        "curves": {k: [list(p) for p in v] for k, v in curves.items()},
    }
    write(result, args.out)
    return result


def _plot(curves: dict, path: Path) -> None:
    """Relative error (± 1 se) against seconds per solve, log-log, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({k.split(" | ")[0] for k in curves})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for key, points in curves.items():
            if not key.startswith(task):
                continue
            _, err, se, seconds = (np.array(v) for v in zip(*points))
            ax.errorbar(seconds, err, yerr=se, marker="o", ms=3, label=key.split(" | ")[1])
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="seconds per solve",
            ylabel="relative error",
            title=task,
        )
        ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _applicable(sde) -> list[str]:
    """The native schemes whose check accepts this SDE."""
    out = []
    for name, scheme in so.dynamics.SCHEMES.items():
        try:
            scheme.check(sde)
        except ValueError:
            continue
        out.append(name)
    return out


if __name__ == "__main__":
    main()
