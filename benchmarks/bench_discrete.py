"""Speed of the discrete engine, as ratios measured side by side in one process.

Each sdeopt method is timed against
  (a) a straightforward vectorised torch implementation using torch.distributions, and
  (b) the bare cost of the random numbers the sdeopt method draws (the floor any
      implementation of the same sampling scheme pays).
Writes JSON to benchmarks/results/discrete.json and prints a table.

    python benchmarks/bench_discrete.py [--runs 10000] [--steps 1000] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import sdeopt as so
from sdeopt.cli import summary_table


def best_time(fn, repeats: int, device: str) -> float:
    """The fastest of ``repeats`` calls, in seconds (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def naive_dsgd(prob, x0, lr, n_workers, sigma, n_steps, n_runs, generator_seed, device):
    """The straightforward way: per-worker Normal draws from torch.distributions, averaged."""
    torch.manual_seed(generator_seed)  # torch.distributions samples from the global generator
    law = torch.distributions.Normal(torch.tensor(0.0, device=device), torch.tensor(sigma, device=device))
    x = x0.expand(n_runs, -1).clone()
    for _ in range(n_steps):
        g = prob.grad(x).unsqueeze(1) + law.sample((n_runs, n_workers, x.shape[1]))  # (B, N, d)
        x = x - lr * g.mean(dim=1)
    return x


def naive_dsignsgd(prob, x0, lr, n_workers, nu, n_steps, n_runs, generator_seed, device):
    """The straightforward way: per-worker Student-t draws from torch.distributions, signs averaged."""
    torch.manual_seed(generator_seed)
    law = torch.distributions.StudentT(torch.tensor(nu, device=device))
    x = x0.expand(n_runs, -1).clone()
    for _ in range(n_steps):
        g = prob.grad(x).unsqueeze(1) + law.sample((n_runs, n_workers, x.shape[1]))  # (B, N, d)
        x = x - lr * torch.sign(g).mean(dim=1)
    return x


def naive_sgld(prob, x0, lr, n_steps, n_runs, generator_seed, device):
    """SGLD the straightforward way: Normal draws from torch.distributions."""
    torch.manual_seed(generator_seed)
    law = torch.distributions.Normal(torch.tensor(0.0, device=device), torch.tensor(1.0, device=device))
    x = x0.expand(n_runs, -1).clone()
    for _ in range(n_steps):
        x = x - lr * prob.grad(x) + (2 * lr) ** 0.5 * law.sample(x.shape)
    return x


def naive_markov_sgd(prob, x0, lr, p, n_steps, n_runs, generator_seed, device, mlmc_len=0):
    """Two-state Markov noise the straightforward way: Bernoulli flips from torch.distributions;
    with ``mlmc_len`` > 0, the MLMC estimator's 2^m consecutive samples per step, masked by level."""
    torch.manual_seed(generator_seed)
    flip = torch.distributions.Bernoulli(torch.tensor(p, device=device))
    geom = torch.distributions.Geometric(torch.tensor(0.5, device=device))
    x = x0.expand(n_runs, -1).clone()
    z = torch.where(torch.rand(x.shape, device=device) < 0.5, -1.0, 1.0)
    m = mlmc_len.bit_length() - 1 if mlmc_len else 0
    for _ in range(n_steps):
        if not mlmc_len:
            noise = z
            z = torch.where(flip.sample(z.shape).bool(), -z, z)
        else:
            j = geom.sample((n_runs,)).long() + 1
            used = torch.where(j <= m, j, torch.zeros_like(j))
            n_samples = 2 ** used
            sums = []
            total = torch.zeros_like(z)
            for t in range(mlmc_len):
                total = total + torch.where((t < n_samples).unsqueeze(-1), z, 0.0)
                z = torch.where((t < n_samples).unsqueeze(-1) & flip.sample(z.shape).bool(), -z, z)
                sums.append(total)
            s = torch.stack(sums)  # (2^m, B, d)
            idx = torch.arange(n_runs, device=device)
            g_j = s[n_samples - 1, idx] / n_samples.unsqueeze(-1)
            prev = torch.clamp(n_samples // 2, min=1)
            g_prev = s[prev - 1, idx] / prev.unsqueeze(-1)
            noise = s[0] + torch.where((used > 0).unsqueeze(-1), (2.0 ** used).unsqueeze(-1) * (g_j - g_prev), 0.0)
        x = x - lr * (prob.grad(x) + noise)
    return x


def bare_draws(shape, kind, n_steps, device):
    """Only the random numbers: n_steps draws of ``shape`` from one generator."""
    g = torch.Generator(device=device).manual_seed(0)
    buf = torch.empty(shape, device=device)
    fill = (lambda: buf.normal_(generator=g)) if kind == "normal" else (lambda: buf.uniform_(generator=g))
    for _ in range(n_steps):
        fill()
    return buf


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "discrete.json")
    args = parser.parse_args(argv)
    so.configure_torch()
    torch.set_default_dtype(torch.float32)
    dev, b, n, d, k = args.device, args.runs, args.workers, args.dim, args.steps
    prob = so.problems.Quadratic(diag=torch.linspace(1.0, 10.0, d).tolist())
    x0 = torch.ones(d, device=dev)
    sim = dict(n_steps=k, n_runs=b, seed=0, device=dev, dtype=torch.float32, record_every=k,
               record=("loss",))
    rows = []

    dsgd = so.discrete.DSGD(lr=0.01, n_workers=n, noise=so.noise.Gaussian(scale=1.0))
    t_ours = best_time(lambda: so.discrete.simulate(dsgd, prob, x0.cpu(), **sim), args.repeats, dev)
    t_naive = best_time(lambda: naive_dsgd(prob.to(dev, torch.float32), x0, 0.01, n, 1.0, k, b, 0, dev),
                        args.repeats, dev)
    t_bare = best_time(lambda: bare_draws((b, d), "normal", k, dev), args.repeats, dev)
    rows.append({"case": "DSGD + Gaussian", "sdeopt_s": t_ours, "naive_s": t_naive, "bare_rng_s": t_bare,
                 "rng_drawn": f"{b}x{d} normals/step", "speedup_vs_naive": t_naive / t_ours,
                 "ratio_to_bare_rng": t_ours / t_bare})

    sign = so.discrete.DSignSGD(lr=0.01, n_workers=n, noise=so.noise.StudentT(nu=1.5, scale=1.0))
    t_ours = best_time(lambda: so.discrete.simulate(sign, prob, x0.cpu(), **sim), args.repeats, dev)
    t_naive = best_time(lambda: naive_dsignsgd(prob.to(dev, torch.float32), x0, 0.01, n, 1.5, k, b, 0, dev),
                        1, dev)
    # Shared scale: one uniform per coordinate gives the Binomial(N, p) count of +1 signs.
    t_bare = best_time(lambda: bare_draws((b, d), "uniform", k, dev), args.repeats, dev)
    rows.append({"case": "DSignSGD + StudentT(1.5)", "sdeopt_s": t_ours, "naive_s": t_naive,
                 "bare_rng_s": t_bare, "rng_drawn": f"{b}x{d} uniforms/step",
                 "speedup_vs_naive": t_naive / t_ours, "ratio_to_bare_rng": t_ours / t_bare})

    quad = prob.to(dev, torch.float32)
    sgld = so.discrete.ItoChain.sgld(lr=0.01)
    t_ours = best_time(lambda: so.discrete.simulate(sgld, prob, x0.cpu(), **sim), args.repeats, dev)
    t_naive = best_time(lambda: naive_sgld(quad, x0, 0.01, k, b, 0, dev), args.repeats, dev)
    t_bare = best_time(lambda: bare_draws((b, d), "normal", k, dev), args.repeats, dev)
    rows.append({"case": "ItoChain (SGLD, Gaussian)", "sdeopt_s": t_ours, "naive_s": t_naive, "bare_rng_s": t_bare,
                 "rng_drawn": f"{b}x{d} normals/step", "speedup_vs_naive": t_naive / t_ours,
                 "ratio_to_bare_rng": t_ours / t_bare})

    markov = so.discrete.MarkovSGD(lr=0.01, noise=so.noise.TwoStateMarkov(p=0.2))
    t_ours = best_time(lambda: so.discrete.simulate(markov, prob, x0.cpu(), **sim), args.repeats, dev)
    t_naive = best_time(lambda: naive_markov_sgd(quad, x0, 0.01, 0.2, k, b, 0, dev), args.repeats, dev)
    t_bare = best_time(lambda: bare_draws((b, d), "uniform", k, dev), args.repeats, dev)
    rows.append({"case": "MarkovSGD two-state", "sdeopt_s": t_ours, "naive_s": t_naive, "bare_rng_s": t_bare,
                 "rng_drawn": f"{b}x{d} uniforms/step", "speedup_vs_naive": t_naive / t_ours,
                 "ratio_to_bare_rng": t_ours / t_bare})

    mlmc = so.discrete.MarkovSGD(lr=0.01, noise=so.noise.TwoStateMarkov(p=0.2), estimator="mlmc", max_batch=8)
    mlmc_steps = max(1, k // 10)
    sim_mlmc = dict(sim, n_steps=mlmc_steps, record_every=mlmc_steps)
    t_ours = best_time(lambda: so.discrete.simulate(mlmc, prob, x0.cpu(), **sim_mlmc), 1, dev)
    t_naive = best_time(lambda: naive_markov_sgd(quad, x0, 0.01, 0.2, mlmc_steps, b, 0, dev, mlmc_len=8), 1, dev)
    t_bare = best_time(lambda: bare_draws((b, d), "uniform", 8 * mlmc_steps, dev), 1, dev)
    rows.append({"case": f"MarkovSGD MLMC M=8 ({mlmc_steps} steps)", "sdeopt_s": t_ours, "naive_s": t_naive,
                 "bare_rng_s": t_bare, "rng_drawn": f"8 x {b}x{d} uniforms/step",
                 "speedup_vs_naive": t_naive / t_ours, "ratio_to_bare_rng": t_ours / t_bare})

    result = {"benchmark": "discrete", "runs": b, "steps": k, "dim": d, "workers": n, "device": dev,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{b} runs x {k} steps, d={d}, N={n}, device={dev}, {torch.get_num_threads()} thread(s)")
    print(summary_table(rows, [("case", "case", ""), ("sdeopt_s", "sdeopt s", ".2f"),
                               ("naive_s", "naive s", ".2f"), ("bare_rng_s", "bare RNG s", ".2f"),
                               ("speedup_vs_naive", "x faster than naive", ".1f"),
                               ("ratio_to_bare_rng", "x bare RNG", ".2f")]))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
