"""Speed of the discrete engine, as ratios measured side by side in one process.

Each sdeopt method is timed against
  (a) a straightforward vectorised torch implementation using torch.distributions, and
  (b) the bare cost of the random numbers the sdeopt method draws (the floor any
      implementation of the same sampling scheme pays).
Writes JSON to benchmarks/results/discrete.json and prints a table.

    python benchmarks/bench_discrete.py [--runs 10000] [--steps 1000] [--device cpu]

The straightforward implementations draw from torch.distributions on the global generator, one
draw per worker; the bare RNG row draws exactly what sdeopt draws, into preallocated buffers.
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


def naive_dsgd(prob, x0, lr, n_workers, sigma, n_steps, n_runs, generator_seed, device):
    """The straightforward way: per-worker Normal draws from torch.distributions, averaged."""
    torch.manual_seed(generator_seed)  # torch.distributions samples from the global generator
    law = torch.distributions.Normal(
        torch.tensor(0.0, device=device), torch.tensor(sigma, device=device)
    )
    x = x0.expand(n_runs, -1).clone()
    for _ in range(n_steps):
        g = prob.grad(x).unsqueeze(1) + law.sample((n_runs, n_workers, x.shape[1]))  # (B, N, d)
        x = x - lr * g.mean(dim=1)
    return x


def naive_dcsgd_randk(prob, x0, lr, n_workers, sigma, k, n_steps, n_runs, generator_seed, device):
    """The straightforward way: per-worker Normal draws, a random k-subset per worker from the
    argsort of uniform keys, kept coordinates scaled by d/k, averaged."""
    torch.manual_seed(generator_seed)
    law = torch.distributions.Normal(
        torch.tensor(0.0, device=device), torch.tensor(sigma, device=device)
    )
    x = x0.expand(n_runs, -1).clone()
    d = x.shape[1]
    for _ in range(n_steps):
        g = prob.grad(x).unsqueeze(1) + law.sample((n_runs, n_workers, d))  # (B, N, d)
        keep = torch.rand(n_runs, n_workers, d, device=device).argsort(dim=-1)[..., :k]  # (B, N, k)
        mask = torch.zeros_like(g).scatter_(-1, keep, d / k)
        x = x - lr * (g * mask).mean(dim=1)
    return x


def naive_dsignsgd(prob, x0, lr, n_workers, law, n_steps, n_runs, generator_seed, device):
    """The straightforward way: per-worker draws of ``law`` (a torch.distributions law), signs averaged."""
    torch.manual_seed(generator_seed)
    x = x0.expand(n_runs, -1).clone()
    for _ in range(n_steps):
        g = prob.grad(x).unsqueeze(1) + law.sample((n_runs, n_workers, x.shape[1]))  # (B, N, d)
        x = x - lr * torch.sign(g).mean(dim=1)
    return x


def naive_sgld(prob, x0, lr, n_steps, n_runs, generator_seed, device):
    """SGLD the straightforward way: Normal draws from torch.distributions."""
    torch.manual_seed(generator_seed)
    law = torch.distributions.Normal(
        torch.tensor(0.0, device=device), torch.tensor(1.0, device=device)
    )
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
            n_samples = 2**used
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
            noise = s[0] + torch.where(
                (used > 0).unsqueeze(-1), (2.0**used).unsqueeze(-1) * (g_j - g_prev), 0.0
            )
        x = x - lr * (prob.grad(x) + noise)
    return x


def bare_draws(draws, n_steps, device):
    """Only the random numbers: per step, for each (kind, shape) of ``draws``, one draw of that
    shape ("normal" or "uniform") from one generator, into preallocated buffers."""
    g = torch.Generator(device=device).manual_seed(0)
    fills = []
    for kind, shape in draws:
        buf = torch.empty(shape, device=device)
        fills.append(buf.normal_ if kind == "normal" else buf.uniform_)
    for _ in range(n_steps):
        for fill in fills:
            fill(generator=g)
    return fills


def rng_label(draws) -> str:
    return " + ".join(f"{'x'.join(map(str, shape))} {kind}s" for kind, shape in draws) + "/step"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "discrete.json")
    args = parser.parse_args(argv)
    so.configure_torch()
    torch.set_default_dtype(torch.float32)
    dev, b, n, d, k = args.device, args.runs, args.workers, args.dim, args.steps
    prob = so.problems.Quadratic(diag=torch.linspace(1.0, 10.0, d).tolist())
    quad = prob.to(dev, torch.float32)
    x0 = torch.ones(d, device=dev)
    sim = dict(
        n_steps=k,
        n_runs=b,
        seed=0,
        device=dev,
        dtype=torch.float32,
        record_every=k,
        record=("loss",),
    )
    rows = []

    def case(name, method, naive, draws, repeats=args.repeats, n_steps=k):
        """Time sdeopt, the straightforward loop and the bare random numbers, taking turns."""
        run = dict(sim, n_steps=n_steps, record_every=n_steps)
        best = interleaved_best(
            {
                "sdeopt": lambda: so.discrete.simulate(method, prob, x0.cpu(), **run),
                "naive": naive,
                "bare": lambda: bare_draws(draws, n_steps, dev),
            },
            repeats,
            dev,
        )
        rows.append(
            {
                "case": name,
                "sdeopt_s": best["sdeopt"],
                "naive_s": best["naive"],
                "bare_rng_s": best["bare"],
                "rng_drawn": rng_label(draws),
                "speedup_vs_naive": best["naive"] / best["sdeopt"],
                "ratio_to_bare_rng": best["sdeopt"] / best["bare"],
            }
        )
        print(
            f"  {name}: sdeopt {best['sdeopt']:.2f} s, naive {best['naive']:.2f} s, "
            f"bare RNG {best['bare']:.2f} s",
            flush=True,
        )

    gauss = torch.distributions.Normal(torch.tensor(0.0, device=dev), torch.tensor(1.0, device=dev))
    student = torch.distributions.StudentT(torch.tensor(1.5, device=dev))

    # DSGD, shared Gaussian scale: the worker average is one (B, d) normal draw of scale σ/sqrt(N).
    case(
        "DSGD + Gaussian",
        so.discrete.DSGD(lr=0.01, n_workers=n, noise=so.noise.Gaussian(scale=1.0)),
        lambda: naive_dsgd(quad, x0, 0.01, n, 1.0, k, b, 0, dev),
        [("normal", (b, d))],
    )
    # DCSGD + RandK: per-worker noise (B, N, d) and Floyd's min(k, d-k) integer draws per worker.
    kk = max(1, d // 5)
    case(
        f"DCSGD + RandK(k={kk}) + Gaussian",
        so.discrete.DCSGD(
            lr=0.01,
            n_workers=n,
            noise=so.noise.Gaussian(scale=1.0),
            compressor=so.compressors.RandK(k=kk),
        ),
        lambda: naive_dcsgd_randk(quad, x0, 0.01, n, 1.0, kk, k, b, 0, dev),
        [("normal", (b, n, d)), ("uniform", (b, n, min(kk, d - kk)))],
    )
    # DSignSGD, shared scale: one uniform per coordinate gives the Binomial(N, p) count of +1 signs.
    case(
        "DSignSGD + Gaussian",
        so.discrete.DSignSGD(lr=0.01, n_workers=n, noise=so.noise.Gaussian(scale=1.0)),
        lambda: naive_dsignsgd(quad, x0, 0.01, n, gauss, k, b, 0, dev),
        [("uniform", (b, d))],
    )
    case(
        "DSignSGD + StudentT(1.5)",
        so.discrete.DSignSGD(lr=0.01, n_workers=n, noise=so.noise.StudentT(nu=1.5, scale=1.0)),
        lambda: naive_dsignsgd(quad, x0, 0.01, n, student, k, b, 0, dev),
        [("uniform", (b, d))],
        repeats=1,
    )
    case(
        "ItoChain (SGLD, Gaussian)",
        so.discrete.ItoChain.sgld(lr=0.01),
        lambda: naive_sgld(quad, x0, 0.01, k, b, 0, dev),
        [("normal", (b, d))],
    )
    case(
        "MarkovSGD two-state",
        so.discrete.MarkovSGD(lr=0.01, noise=so.noise.TwoStateMarkov(p=0.2)),
        lambda: naive_markov_sgd(quad, x0, 0.01, 0.2, k, b, 0, dev),
        [("uniform", (b, d))],
    )
    mlmc_steps = max(1, k // 10)
    case(
        f"MarkovSGD MLMC M=8 ({mlmc_steps} steps)",
        so.discrete.MarkovSGD(
            lr=0.01, noise=so.noise.TwoStateMarkov(p=0.2), estimator="mlmc", max_batch=8
        ),
        lambda: naive_markov_sgd(quad, x0, 0.01, 0.2, mlmc_steps, b, 0, dev, mlmc_len=8),
        [("uniform", (8, b, d))],
        repeats=1,
        n_steps=mlmc_steps,
    )

    info = machine(dev)
    result = {
        "benchmark": "discrete",
        "runs": b,
        "steps": k,
        "dim": d,
        "workers": n,
        "dtype": "float32",
        **info,
        "rows": rows,
    }
    print(f"{b} runs x {k} steps, d={d}, N={n}, float32, on {describe(info)}")
    print(
        summary_table(
            rows,
            [
                ("case", "case", ""),
                ("sdeopt_s", "sdeopt s", ".2f"),
                ("naive_s", "naive s", ".2f"),
                ("bare_rng_s", "bare RNG s", ".2f"),
                ("speedup_vs_naive", "x faster than naive", ".1f"),
                ("ratio_to_bare_rng", "x bare RNG", ".2f"),
                ("rng_drawn", "RNG drawn", ""),
            ],
        )
    )
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
