"""Speed of the native SDE solver against torchsde, as ratios measured side by side in one process.

One SDE for every row: the first-order SDE of DSGD (lr 0.01, 8 workers, Gaussian(1) noise) on
the diagonal quadratic with H = diag(linspace(1, 10, d)), i.e. the Ornstein-Uhlenbeck process
dX = -H X dt + sqrt(lr/8) dW; n_runs paths, n_steps Euler(-Maruyama) steps of size lr (T = n_steps lr),
float32, one torch thread. Rows:

  (1) native      so.dynamics.solve(sde, ...), recording the loss at the start and the end;
  (2) torchsde    torchsde.sdeint(sde.torchsde(), y0, ts), float32 ts, no other arguments (its
                  defaults: method 'srk' for Ito diagonal noise, dt 1e-3, a BrownianInterval);
  (3) torchsde    method='euler', dt=lr, float64 ts, default BrownianInterval;
  (4) torchsde    method='euler', dt=lr with each Brownian option tried (BrownianInterval
                  options, BrownianTree, BrownianPath, sdeopt's GridBrownian with the pre-drawing
                  counted in); the fastest is the row "fastest torchsde". A hand-written
                  Brownian source (a fresh draw per query) is timed too, as the floor of
                  torchsde's own loop, and kept out of that row;
  (5) bare loop   x = x + drift h + g sqrt(h) z written by hand (drift -H x, constant g, one
                  preallocated generator, no recording); also an in-place fused variant and the
                  random numbers alone, as floors.

Every row prints its final mean loss next to the exact expectation of the Euler chain (and of the
SDE itself, which the default srk call at dt 1e-3 approaches); the pre-drawn options are driven by
the very increments the native solver draws, so they must agree with native path by path.
Writes JSON to benchmarks/results/sde.json and prints a table.

    python benchmarks/bench_sde.py [--runs 10000] [--steps 1000] [--repeats 5] [--skip-default]
                                   [--skip-torchsde] [--profile] [--device cuda]

The default srk call takes minutes at the default size (10,000 srk steps); --skip-default omits it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torchsde
from torchsde import BaseBrownian

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, describe, machine, sync, write
from _common import timed as timed_on

import sdeopt as so
from sdeopt.cli import summary_table
from sdeopt.dynamics.sde import TorchsdeAdapter
from sdeopt.random import RandomSource

#: Where every row runs (--device); the bare loops and Brownian motions allocate there.
DEVICE = torch.device("cpu")


class CountingAdapter(TorchsdeAdapter):
    """sde.torchsde() that also counts drift and diffusion calls (how many steps torchsde took)."""

    def __init__(self, sde) -> None:
        super().__init__(sde)
        self.f_calls = self.g_calls = 0

    def f(self, t, y):
        self.f_calls += 1
        return super().f(t, y)

    def g(self, t, y):
        self.g_calls += 1
        return super().g(t, y)


def exact_mean_loss(
    diag: torch.Tensor, x0: torch.Tensor, g: float, lr: float, n_steps: int
) -> dict:
    """E f(X_T) for the Euler chain with step lr, and for the SDE itself (OU, diagonal H)."""
    h, a = diag.double(), x0.double()
    t = n_steps * lr
    rho = 1.0 - h * lr  # Euler: X_{k+1} = rho X_k + g sqrt(lr) z
    var_chain = g * g * lr * (1.0 - rho ** (2 * n_steps)) / (1.0 - rho * rho)
    chain = 0.5 * (h * (a * a * rho ** (2 * n_steps) + var_chain)).sum()
    var_sde = g * g / (2.0 * h) * (1.0 - torch.exp(-2.0 * h * t))
    sde = 0.5 * (h * (a * a * torch.exp(-2.0 * h * t) + var_sde)).sum()
    return {"euler_chain": float(chain), "sde": float(sde)}


def bare_loop(diag, x0, g, lr, n_steps, n_runs, seed=0):
    """The same Euler scheme by hand: drift -H x, constant g, one generator, no recording."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    z = torch.empty(n_runs, x0.shape[0], device=DEVICE)
    x = x0.to(DEVICE).expand(n_runs, -1).clone()
    noise = g * math.sqrt(lr)
    for _ in range(n_steps):
        drift = -diag * x
        x = x + drift * lr + noise * z.normal_(generator=gen)
    return x


def bare_loop_fused(diag, x0, g, lr, n_steps, n_runs, seed=0):
    """The floor of the scheme: x <- (1 - H lr) x + g sqrt(lr) z in place, two ops plus the draw."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    z = torch.empty(n_runs, x0.shape[0], device=DEVICE)
    x = x0.to(DEVICE).expand(n_runs, -1).clone()
    contraction = 1.0 - diag * lr
    noise = g * math.sqrt(lr)
    for _ in range(n_steps):
        x.mul_(contraction).add_(z.normal_(generator=gen), alpha=noise)
    return x


def rng_only(n_runs, d, n_steps, seed=0):
    """Only the random numbers: n_steps fills of (B, d) standard normals from one generator."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    z = torch.empty(n_runs, d, device=DEVICE)
    for _ in range(n_steps):
        z.normal_(generator=gen)
    return z


def native_increments(n_runs, d, n_steps, lr, seed=0) -> torch.Tensor:
    """The Brownian increments the native solver draws, (n_steps, B, d), in its order."""
    rng = RandomSource(seed, n_runs, dtype=torch.float32, device=DEVICE)
    dw = torch.empty(n_steps, n_runs, d, device=DEVICE)
    scale = math.sqrt(lr)
    for k in range(n_steps):
        torch.mul(rng.normal(d), scale, out=dw[k])
    return dw


class FreshBrownian(BaseBrownian):
    """Hand-written (benchmark-local): draws N(0, tb - ta) afresh on every query, nothing stored.
    A valid Brownian motion only for a solver that asks for each increment once, in order
    (torchsde's fixed-step euler does): the floor of torchsde's own loop."""

    def __init__(self, shape, seed: int = 0) -> None:
        self.gen = torch.Generator(device=DEVICE).manual_seed(seed)
        self.inc = torch.empty((1, *shape), device=DEVICE)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)})"

    dtype = property(lambda self: self.inc.dtype)
    device = property(lambda self: self.inc.device)
    shape = property(lambda self: self.inc.shape[1:])
    levy_area_approximation = property(lambda self: "none")

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None or return_U or return_A:
            raise ValueError("FreshBrownian serves increments only")
        z = torch.empty(self.inc.shape[1:], device=DEVICE).normal_(generator=self.gen)
        return z.mul_(math.sqrt(float(tb) - float(ta)))


#: Options that are not torchsde's or sdeopt's own Brownian motions.
HAND_WRITTEN = ("FreshBrownian (drawn per query; benchmark-local)",)


def brownian_options(b, d, t_end, lr, n_steps):
    """name -> a function making that Brownian motion (its construction is timed with the solve)."""
    size, f32 = (b, d), torch.float32

    def interval(**kw):
        return lambda: torchsde.BrownianInterval(
            t0=0.0, t1=t_end, size=size, dtype=f32, device=DEVICE, **kw
        )

    return {
        "BrownianInterval()": interval(),
        "BrownianInterval(dt=lr)": interval(dt=lr),
        "BrownianInterval(cache_size=None)": interval(cache_size=None),
        "BrownianInterval(dt=lr, cache_size=None)": interval(dt=lr, cache_size=None),
        "BrownianInterval(dt=lr, pool_size=4)": interval(dt=lr, pool_size=4),
        "BrownianInterval(tol=lr/10)": interval(tol=lr / 10),
        "BrownianTree(t1=T)": lambda: torchsde.BrownianTree(
            t0=0.0, w0=torch.zeros(size, dtype=f32, device=DEVICE), t1=t_end
        ),
        "BrownianPath()": lambda: torchsde.BrownianPath(
            t0=0.0, w0=torch.zeros(size, dtype=f32, device=DEVICE)
        ),
        "GridBrownian (pre-drawn)": lambda: so.dynamics.GridBrownian(
            0.0, lr, native_increments(b, d, n_steps, lr)
        ),
        HAND_WRITTEN[0]: lambda: FreshBrownian(size),
    }


def profile_per_step(fns: dict, n_steps: int, top: int = 12) -> dict:
    """torch.profiler self-CPU time per step of each op, {name: [(op, calls/step, µs/step)]}."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for name, fn in fns.items():
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            fn()
            wall = time.perf_counter() - start
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        table = [(e.key, e.count / n_steps, e.self_cpu_time_total / n_steps) for e in ops]
        total = sum(t for _, _, t in table)
        out[name] = {
            "wall_us_per_step_profiled": 1e6 * wall / n_steps,
            "ops_us_per_step": total,
            "ops": table[:top],
        }
        print(
            f"\n{name}: {1e6 * wall / n_steps:.0f} µs/step under the profiler, of which torch ops "
            f"{total:.0f} µs (self CPU); per step:"
        )
        for op, calls, us in table[:top]:
            print(f"  {us:7.1f} µs  {calls:5.2f} calls  {op}")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="interleaved rounds for native and the bare loops (best of)",
    )
    parser.add_argument(
        "--torchsde-repeats",
        type=int,
        default=1,
        help="timed calls of each torchsde Euler option (best of)",
    )
    parser.add_argument(
        "--skip-default",
        action="store_true",
        help="skip the slow torchsde default call (row 2: minutes at the default size)",
    )
    parser.add_argument(
        "--skip-torchsde", action="store_true", help="time native and the bare loops only"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print torch.profiler op costs per step of native and the bare loop",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "sde.json")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    dev = args.device
    so.configure_torch()
    torch.set_default_dtype(torch.float32)
    b, k, d, lr = args.runs, args.steps, args.dim, 0.01
    t_end = k * lr
    prob = so.problems.Quadratic(diag=torch.linspace(1.0, 10.0, d).tolist())
    opt = so.discrete.DSGD(lr=lr, n_workers=8, noise=so.noise.Gaussian(1.0))
    sde = so.dynamics.sde_of(opt, prob, "first_order")
    x0 = torch.ones(d)
    y0 = x0.expand(b, d).clone().to(DEVICE)
    diag = prob.diag.to(DEVICE, torch.float32)
    quad = prob.to(DEVICE, torch.float32)
    sde_dev = sde.rebuild(quad)  # what torchsde integrates: float32, on the device
    g_field = sde.diffusion(0.0, torch.stack([x0, -3.0 * x0])).g  # (2, d): constant in x?
    g = float(g_field[0, 0])
    if not torch.allclose(g_field, torch.full_like(g_field, g)):
        raise RuntimeError(f"the benchmark assumes constant isotropic noise, got g = {g_field}")
    exact = exact_mean_loss(prob.diag, x0, g, lr, k)
    mc_std = math.sqrt(2.0 / d / b)  # relative std of a mean loss (sum of d equal chi-squares)

    def floss(y):
        return quad.loss(y).cpu()

    rows, options = [], []

    def row(case, seconds, mean_loss, **extra):
        rows.append(
            {
                "case": case,
                "seconds": seconds,
                "us_per_step": 1e6 * seconds / k,
                "mean_loss": mean_loss,
                "vs_euler_exact": mean_loss / exact["euler_chain"] - 1.0,
                **extra,
            }
        )
        return rows[-1]

    # (1) native and (5) the bare loops: interleaved rounds, best of each (the machine is shared).
    def native(n_steps=k):
        return so.dynamics.solve(
            sde,
            x0,
            n_steps=n_steps,
            n_runs=b,
            record_every=n_steps,
            record=("loss",),
            dtype=torch.float32,
            device=dev,
        )

    fast = {
        "native": native,
        "bare": lambda: bare_loop(diag, x0, g, lr, k, b),
        "bare_fused": lambda: bare_loop_fused(diag, x0, g, lr, k, b),
        "rng": lambda: rng_only(b, d, k),
    }
    best, last = {}, {}
    for fn in fast.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in fast.items():
            seconds, last[name] = timed_on(fn, dev)
            best[name] = min(best.get(name, math.inf), seconds)
    native_loss = last["native"].observables["loss"][-1]  # (B,)
    row("(1) sdeopt native solve", best["native"], float(native_loss.mean()))

    # (2) torchsde's default call, once (after a short warm-up call).
    if not (args.skip_default or args.skip_torchsde):
        ts32 = torch.linspace(0.0, t_end, k + 1, dtype=torch.float32, device=DEVICE)
        torchsde.sdeint(sde_dev.torchsde(), y0[:16], ts32[:3])
        adapter = CountingAdapter(sde_dev)
        seconds, ys = timed_on(lambda: torchsde.sdeint(adapter, y0, ts32), dev)
        row(
            "(2) torchsde default (srk, dt=1e-3, f32 ts)",
            seconds,
            float(floss(ys[-1]).mean()),
            f_calls=adapter.f_calls,
            g_calls=adapter.g_calls,
        )

    # (3) and (4): Euler at dt = lr on float64 times, with each Brownian option. An option is
    # valid when its final mean loss is within 10 Monte Carlo standard deviations of the exact
    # Euler value (BrownianPath fixes t1 = t0 + 1 and returns zero increments beyond it).
    ts = torch.linspace(0.0, t_end, k + 1, dtype=torch.float64, device=DEVICE)
    for name, make_bm in (
        {} if args.skip_torchsde else brownian_options(b, d, t_end, lr, k)
    ).items():
        adapter = CountingAdapter(sde_dev)
        entry = {"option": name}
        try:
            torchsde.sdeint(
                adapter,
                y0[:16],
                ts[:6],
                method="euler",
                dt=lr,
                bm=torchsde.BrownianInterval(0.0, t_end, size=(16, d), device=DEVICE),
            )  # warm-up
            seconds = build = math.inf
            for _ in range(args.torchsde_repeats):
                adapter.f_calls = adapter.g_calls = 0
                sync(dev)
                start = time.perf_counter()
                bm = make_bm()
                sync(dev)
                built = time.perf_counter()
                ys = torchsde.sdeint(adapter, y0, ts, bm=bm, method="euler", dt=lr)
                sync(dev)
                if time.perf_counter() - start < seconds:
                    seconds, build = time.perf_counter() - start, built - start
                del bm
        except Exception as err:
            entry["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            options.append(entry)
            print(f"  {name}: {entry['error']}")
            continue
        loss = floss(ys[-1])
        entry.update(
            seconds=seconds,
            build_s=build,
            us_per_step=1e6 * seconds / k,
            mean_loss=float(loss.mean()),
            f_calls=adapter.f_calls,
        )
        entry["valid"] = abs(entry["mean_loss"] / exact["euler_chain"] - 1.0) < 10 * mc_std
        if "pre-drawn" in name:  # the same increments as native: path-by-path equality
            entry["max_rel_diff_vs_native"] = float(
                ((loss - native_loss).abs() / native_loss).max()
            )
        options.append(entry)
        print(
            f"  {name}: {seconds:.2f} s (building the Brownian motion {build:.2f} s), "
            f"mean loss {entry['mean_loss']:.5f}{'' if entry['valid'] else ' INVALID'}"
        )

    ratios = {
        "native_vs_bare": best["native"] / best["bare"],
        "native_vs_bare_fused": best["native"] / best["bare_fused"],
        "native_vs_rng_only": best["native"] / best["rng"],
    }
    fastest = None
    if not args.skip_torchsde:
        ok = [o for o in options if o.get("valid")]
        default_bi = next(o for o in options if o["option"] == "BrownianInterval()")
        row(
            "(3) torchsde euler, dt=lr, BrownianInterval()",
            default_bi["seconds"],
            default_bi["mean_loss"],
            f_calls=default_bi["f_calls"],
        )
        fastest = min(
            (o for o in ok if o["option"] not in HAND_WRITTEN), key=lambda o: o["seconds"]
        )
        row(
            f"(4) fastest torchsde: euler + {fastest['option']}",
            fastest["seconds"],
            fastest["mean_loss"],
            f_calls=fastest["f_calls"],
        )
        ratios.update(
            {
                "fastest_torchsde_vs_native": fastest["seconds"] / best["native"],
                "torchsde_euler_default_bm_vs_native": default_bi["seconds"] / best["native"],
            }
        )
        hand = [o for o in ok if o["option"] in HAND_WRITTEN]
        if hand:
            floor = min(hand, key=lambda o: o["seconds"])
            row(
                f"    torchsde euler + {floor['option'].split(' (')[0]} (hand-written)",
                floor["seconds"],
                floor["mean_loss"],
                f_calls=floor["f_calls"],
            )
            ratios["torchsde_hand_written_bm_vs_native"] = floor["seconds"] / best["native"]
        if not args.skip_default:
            ratios["torchsde_default_vs_native"] = rows[1]["seconds"] / best["native"]
    row("(5) bare torch loop", best["bare"], float(floss(last["bare"]).mean()))
    row(
        "    bare loop, fused in place", best["bare_fused"], float(floss(last["bare_fused"]).mean())
    )
    row("    random numbers only", best["rng"], math.nan)
    aims = {
        "torchsde_default_vs_native >= 10": ("torchsde_default_vs_native", lambda r: r >= 10),
        "fastest_torchsde_vs_native >= 3": ("fastest_torchsde_vs_native", lambda r: r >= 3),
        "native_vs_bare <= 1.5": ("native_vs_bare", lambda r: r <= 1.5),
    }
    aims = {
        aim: (test(ratios[key]) if key in ratios else None) for aim, (key, test) in aims.items()
    }
    profiles = None
    if args.profile:
        profiles = profile_per_step({"native": fast["native"], "bare": fast["bare"]}, k)
    info = machine(dev)
    result = {
        "benchmark": "sde",
        "runs": b,
        "steps": k,
        "dim": d,
        "lr": lr,
        "T": t_end,
        "g": g,
        "dtype": "float32",
        **info,
        "torchsde": torchsde.__version__,
        "exact_mean_loss": exact,
        "rows": rows,
        "torchsde_options": options,
        "fastest_torchsde_option": fastest and fastest["option"],
        "ratios": ratios,
        "aims_met": aims,
        "profile": profiles,
    }
    print(f"\n{b} paths x {k} steps, d={d}, T={t_end:g}, float32, on {describe(info)}")
    print(
        summary_table(
            rows,
            [
                ("case", "case", ""),
                ("seconds", "s", ".2f"),
                ("us_per_step", "µs/step", ".0f"),
                ("f_calls", "f calls", "d"),
                ("mean_loss", "final mean loss", ".5f"),
                ("vs_euler_exact", "vs exact Euler", "+.1%"),
            ],
        )
    )
    print(
        f"exact E f(X_T): Euler chain {exact['euler_chain']:.5f}, SDE {exact['sde']:.5f} "
        f"(Monte Carlo std of a mean over {b} paths ~{mc_std:.1%})"
    )
    if options:
        print(
            "\ntorchsde Brownian options (euler, dt=lr; seconds include building the Brownian motion):"
        )
        print(
            summary_table(
                options,
                [
                    ("option", "option", ""),
                    ("seconds", "s", ".2f"),
                    ("build_s", "of which build s", ".2f"),
                    ("us_per_step", "µs/step", ".0f"),
                    ("mean_loss", "final mean loss", ".5f"),
                    ("valid", "valid", ""),
                    ("max_rel_diff_vs_native", "max rel diff vs native, per path", ".1e"),
                    ("error", "error", ""),
                ],
            )
        )
    print("\nratios: " + ", ".join(f"{key} {value:.2f}" for key, value in ratios.items()))
    print(
        "aims met: "
        + ", ".join(
            f"{key}: {'not measured' if value is None else value}" for key, value in aims.items()
        )
    )
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
