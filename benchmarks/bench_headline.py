"""The headline run: DSignSGD with Student-t noise (nu = 1.5), N = 8 workers, 10^6 runs, d = 100,
1,000 steps, float32, against the device's own floors.

Floors, measured in the same process on the same device:
  RNG      drawing the uniforms the run needs (one per run, coordinate and step: with a shared
           noise scale the count of +1 signs among N workers is Binomial(N, p), drawn by inversion
           from one uniform), chunk by chunk into a preallocated buffer;
  memory   one read and one write of the (runs, d) state per step: a tensor copy of a chunk,
           at the device's measured copy bandwidth.
"x RNG floor" and "state passes per step" say how far the run is from each.

    python benchmarks/bench_headline.py --device cuda            # the issue's headline (GPU)
    python benchmarks/bench_headline.py --runs 10000 --steps 100  # a CPU-sized run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, describe, interleaved_best, machine, timed, write

import sdeopt as so
from sdeopt.engine import auto_chunk


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=10**6)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--nu", type=float, default=1.5)
    parser.add_argument(
        "--max-memory-gib",
        type=float,
        default=None,
        help="simulate's chunk budget (default: half the free GPU memory, or 2 GiB on the CPU)",
    )
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="runs per generator (default 4096 on the CPU, 65536 on a GPU, where every "
        "block is a kernel launch per draw); the law does not depend on it, the stream does",
    )
    parser.add_argument(
        "--fuse",
        action="store_true",
        help="also time the run with configure_torch(fuse=True) (torch.compile; the compile "
        "is timed separately) and count the runs whose final loss differs from eager",
    )
    parser.add_argument(
        "--floor-steps", type=int, default=50, help="steps timed for each floor (scaled up)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "headline.json")
    args = parser.parse_args(argv)
    so.configure_torch()
    dev, b, d, k, n = args.device, args.runs, args.dim, args.steps, args.workers
    on_gpu = dev.startswith("cuda")
    if args.max_memory_gib is not None:
        budget = args.max_memory_gib * 2**30
    else:
        budget = torch.cuda.mem_get_info(torch.device(dev))[0] / 2 if on_gpu else 2 * 2**30
    method = so.discrete.DSignSGD(
        lr=1e-3, n_workers=n, noise=so.noise.StudentT(nu=args.nu, scale=1.0)
    )
    prob = so.problems.Quadratic(diag=torch.linspace(1.0, 10.0, d).tolist())
    x0 = torch.ones(d)
    block = args.block_size or (2**16 if on_gpu else 4096)
    kwargs = dict(
        n_steps=k,
        n_runs=b,
        seed=0,
        device=dev,
        dtype=torch.float32,
        record_every=k,
        record=("loss",),
        max_memory=budget,
        block_size=block,
    )
    chunk = auto_chunk(n, d, 2, 1, budget, block, b, torch.float32)

    so.discrete.simulate(
        method, prob, x0, **dict(kwargs, n_runs=min(b, block), n_steps=3, record_every=3)
    )
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    seconds, traj = timed(lambda: so.discrete.simulate(method, prob, x0, **kwargs), dev)
    peak = torch.cuda.max_memory_allocated() if on_gpu else None
    final = traj.observables["loss"][-1]
    fused = None
    if args.fuse:
        try:
            so.configure_torch(fuse=True)
            compile_s, _ = timed(
                lambda: so.discrete.simulate(
                    method,
                    prob,
                    x0,
                    **dict(kwargs, n_runs=min(b, block), n_steps=3, record_every=3),
                ),
                dev,
            )
            fused_s, fused_traj = timed(
                lambda: so.discrete.simulate(method, prob, x0, **kwargs), dev
            )
            differ = fused_traj.observables["loss"][-1] != final
            fused = {
                "seconds": fused_s,
                "compile_and_warmup_s": compile_s,
                "speedup": seconds / fused_s,
                "runs_differing": int(differ.sum()),
                "fraction_differing": float(differ.float().mean()),
            }
        except Exception as err:
            fused = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        finally:
            so.configure_torch(fuse=False)

    # Floors on one chunk, over --floor-steps steps, scaled to the whole run.
    m = min(args.floor_steps, k)
    buf = torch.empty(chunk, d, device=dev)
    other = torch.empty_like(buf)
    gen = torch.Generator(device=dev).manual_seed(0)

    def draws():
        for _ in range(m):
            buf.uniform_(generator=gen)

    def passes():
        for _ in range(m):
            other.copy_(buf)

    best = interleaved_best({"rng": draws, "copy": passes}, 3, dev)
    scale = (k / m) * (b / chunk)
    rng_s, pass_s = best["rng"] * scale, best["copy"] * scale
    bandwidth = 2 * buf.numel() * buf.element_size() * m / best["copy"]
    result = {
        "benchmark": "headline",
        "method": "DSignSGD",
        "noise": f"StudentT(nu={args.nu})",
        "workers": n,
        "runs": b,
        "dim": d,
        "steps": k,
        "dtype": "float32",
        "chunk_runs": chunk,
        "block_size": block,
        "budget_bytes": budget,
        **machine(dev),
        "seconds": seconds,
        "rng_floor_s": rng_s,
        "state_pass_s": pass_s,
        "x_rng_floor": seconds / rng_s,
        "state_passes_per_step": seconds / pass_s,
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "run_steps_per_s": b * k / seconds,
        "peak_gpu_memory_bytes": peak,
        "diverged": int(traj.diverged.sum()),
        "final_mean_loss": float(final.mean()),
        "fused": fused,
        "aim_5s_met": min(seconds, (fused or {}).get("seconds", seconds)) <= 5.0
        if on_gpu
        else None,
    }
    print(
        f"DSignSGD + StudentT({args.nu}), N={n}, {b} runs, d={d}, {k} steps, float32, "
        f"chunks of {chunk} runs, blocks of {block}, on {describe(machine(dev))}"
    )
    print(
        f"  {seconds:.2f} s ({b * k / seconds:.3g} run-steps/s); RNG floor {rng_s:.2f} s "
        f"(x{seconds / rng_s:.1f}); one read+write of the state per step {pass_s:.2f} s at "
        f"{bandwidth / 1e9:.0f} GB/s (the run costs {seconds / pass_s:.1f} such passes per step)"
    )
    if fused and "error" in fused:
        print(f"  fused: failed ({fused['error']})")
    elif fused:
        print(
            f"  fused (torch.compile): {fused['seconds']:.2f} s, x{fused['speedup']:.2f} eager, after "
            f"{fused['compile_and_warmup_s']:.1f} s of compiling; {fused['runs_differing']} of {b} runs "
            f"end with a different loss (last-bit rounding moved a draw)"
        )
    if on_gpu:
        print(
            f"  peak GPU memory {peak / 2**30:.2f} GiB; aim of 5 s {'met' if result['aim_5s_met'] else 'not met'}"
        )
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
