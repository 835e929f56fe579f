"""Scaling of the discrete engine: time and peak memory against runs, dimension and workers;
peak memory against the chunk budget and the number of steps.

Sweeps (each row is one ``simulate`` call, float32, recording the loss at the start and end):

  runs     DSGD + Gaussian, d = 10, N = 8: 10^3 .. 10^6 runs
  dim      DSGD + Gaussian, 10^4 runs, N = 8: d = 10 .. 1000
  workers  DCSGD + RandK(2) + Gaussian (per-worker draws) and DSignSGD + Student-t(1.5)
           (Binomial inversion up to 100 workers), 10^4 runs, d = 10: N = 1 .. 64
  budget   DSGD, DCSGD + RandK and DSignSGD with per-worker Student-t draws on many runs with
           max_memory = 16, 64, 256 MiB
  steps    DSGD, 10^5 runs: 100 and 1,000 steps (same memory)

Time is measured in this process, the rows taking turns; "work" is runs x steps x d (x N for
the per-worker sweeps), and the fitted slope of log time against log work over each sweep's
larger half says whether cost is linear (1), overhead-bound (< 1) or super-linear (> 1).
Peak memory: on the CPU each row runs ``--memory-repeats`` (3) more times, each in a fresh
child process that reads its own high-water mark (VmHWM, reset through /proc/self/clear_refs
after set-up), so rows cannot hide in memory freed by earlier ones; identical processes varied
by up to 2x with the heap's layout, so the median is reported and the largest checked. On a
GPU: torch.cuda.max_memory_allocated in this process. "extra" is the peak above the set-up;
"bound" is the chunk budget plus the output arrays (the recorded values, divergence flags and
blow-up steps of all runs).

    python benchmarks/bench_scaling.py [--device cpu|cuda] [--quick] [--steps 100]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, describe, interleaved_best, loglog_slope, machine, sync, timed, write

import sdeopt as so
from sdeopt.cli import summary_table

MiB = 2**20


def make(spec: dict):
    """(method, problem, x0, simulate kwargs) of one row."""
    n, d = spec["workers"], spec["dim"]
    noise = so.noise.Gaussian(scale=1.0)
    if spec["method"] == "DSGD":
        method = so.discrete.DSGD(lr=0.01, n_workers=n, noise=noise)
    elif spec["method"] == "DCSGD+RandK":
        method = so.discrete.DCSGD(
            lr=0.01, n_workers=n, noise=noise, compressor=so.compressors.RandK(k=2)
        )
    elif spec["method"] == "DSignSGD+t":
        method = so.discrete.DSignSGD(
            lr=0.01, n_workers=n, noise=so.noise.StudentT(nu=1.5, scale=1.0)
        )
    elif (
        spec["method"] == "DSignSGD+t per worker"
    ):  # per-worker scales: every worker's noise is drawn
        method = so.discrete.DSignSGD(
            lr=0.01, n_workers=n, noise=so.noise.StudentT(nu=1.5, scale=[1.0] * n)
        )
    else:
        raise ValueError(f"Invalid method: {spec['method']!r}")
    prob = so.problems.Quadratic(diag=torch.linspace(1.0, 10.0, d).tolist())
    kwargs = dict(
        n_steps=spec["steps"],
        n_runs=spec["runs"],
        seed=0,
        device=spec["device"],
        dtype=torch.float32,
        record_every=spec["steps"],
        record=("loss",),
        max_memory=spec["budget_mib"] * MiB,
    )
    return method, prob, torch.ones(d), kwargs


def output_bytes(spec: dict) -> int:
    """The arrays simulate returns for all runs: 2 recorded losses (float32), diverged, blowup_step."""
    return spec["runs"] * (2 * 4 + 1 + 8)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(spec: dict) -> dict:
    """Run one row in this (fresh) process; its time and peak memory above the set-up."""
    so.configure_torch()
    method, prob, x0, kwargs = make(spec)
    so.discrete.simulate(
        method, prob, x0, **dict(kwargs, n_runs=64, n_steps=2, record_every=2)
    )  # warm-up
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    base = _status_kib("VmRSS")
    seconds, _ = timed(lambda: so.discrete.simulate(method, prob, x0, **kwargs))
    return {"seconds": seconds, "extra_bytes": (_status_kib("VmHWM") - base) * 1024}


def peak_memory(spec: dict, repeats: int) -> dict:
    """Peak memory of one row: the CUDA allocator's peak on a GPU; on the CPU the peak resident
    set of ``repeats`` child processes (identical runs moved by up to 2x here, e.g. 23-63 MB,
    with the heap's layout): their median, and the largest for the bound."""
    if spec["device"].startswith("cuda"):
        method, prob, x0, kwargs = make(spec)
        sync(spec["device"])
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        seconds, traj = timed(
            lambda: so.discrete.simulate(method, prob, x0, **kwargs), spec["device"]
        )
        del traj
        extra = torch.cuda.max_memory_allocated() - base
        return {"seconds": seconds, "extra_bytes": extra, "max_extra_bytes": extra}
    peaks = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"child failed for {spec}: {proc.stderr.strip()[-2000:]}")
        peaks.append(json.loads(proc.stdout.strip().splitlines()[-1])["extra_bytes"])
    return {"extra_bytes": sorted(peaks)[len(peaks) // 2], "max_extra_bytes": max(peaks)}


def sweeps(quick: bool, steps: int, device: str) -> dict:
    """sweep name -> (variable, [row specs])."""
    base = {
        "method": "DSGD",
        "runs": 10_000,
        "dim": 10,
        "workers": 8,
        "steps": steps,
        "budget_mib": 1024,
        "device": device,
    }
    runs = [10**3, 10**4] + ([] if quick else [10**5, 10**6])
    dims = [10, 100] + ([] if quick else [1000])
    workers = [1, 4] + ([] if quick else [16, 64])
    budgets = [16, 64] + ([] if quick else [256])
    many = 2 * 10**4 if quick else 10**6
    plan = {
        "runs": ("runs", [dict(base, runs=v) for v in runs]),
        "dim": ("dim", [dict(base, dim=v) for v in dims]),
        "workers, DCSGD+RandK": (
            "workers",
            [dict(base, method="DCSGD+RandK", workers=v) for v in workers],
        ),
        "workers, DSignSGD+t": (
            "workers",
            [dict(base, method="DSignSGD+t", workers=v) for v in workers],
        ),
        "budget, DSGD": ("budget_mib", [dict(base, runs=many, budget_mib=v) for v in budgets]),
        "budget, DCSGD+RandK": (
            "budget_mib",
            [dict(base, method="DCSGD+RandK", runs=many // 10, budget_mib=v) for v in budgets],
        ),
        "budget, DSignSGD+t per worker": (
            "budget_mib",
            [
                dict(base, method="DSignSGD+t per worker", runs=many // 20, budget_mib=v)
                for v in budgets
            ],
        ),
        "steps": ("steps", [dict(base, runs=many // 10, steps=v) for v in (steps, 10 * steps)]),
    }
    if quick:  # a smoke test: every kind of sweep once (each CPU row is a fresh process, ~3 s)
        for name in (
            "workers, DCSGD+RandK",
            "budget, DCSGD+RandK",
            "budget, DSignSGD+t per worker",
        ):
            del plan[name]
    return plan


def work(spec: dict) -> float:
    per_worker = spec["method"] != "DSGD"
    return spec["runs"] * spec["steps"] * spec["dim"] * (spec["workers"] if per_worker else 1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--quick", action="store_true", help="smaller sweeps (seconds), for a smoke test"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per row (best of)")
    parser.add_argument(
        "--memory-repeats", type=int, default=3, help="child processes per row (CPU)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    so.configure_torch()
    plan = sweeps(args.quick, args.steps, args.device)
    rows, summary = [], []
    for name, (variable, specs) in plan.items():
        calls = {}
        for spec in specs:
            method, prob, x0, kwargs = make(spec)
            calls[spec[variable]] = lambda m=method, p=prob, x=x0, kw=kwargs: so.discrete.simulate(
                m, p, x, **kw
            )
        best = interleaved_best(calls, args.repeats, args.device, warmup=False)
        sweep_rows = []
        for spec in specs:
            mem = peak_memory(spec, args.memory_repeats)
            bound = spec["budget_mib"] * MiB + output_bytes(spec)
            row = {
                "sweep": name,
                "variable": variable,
                "value": spec[variable],
                "method": spec["method"],
                "runs": spec["runs"],
                "dim": spec["dim"],
                "workers": spec["workers"],
                "steps": spec["steps"],
                "budget_mib": spec["budget_mib"],
                "seconds": best[spec[variable]],
                "work": work(spec),
                "ns_per_unit": 1e9 * best[spec[variable]] / work(spec),
                "extra_mib": mem["extra_bytes"] / MiB,
                "max_extra_mib": mem["max_extra_bytes"] / MiB,
                "bound_mib": bound / MiB,
                "within_bound": mem["max_extra_bytes"] <= bound,
            }
            sweep_rows.append(row)
            print(
                f"  {name} = {spec[variable]}: {row['seconds']:.2f} s, {row['ns_per_unit']:.2f} ns/unit, "
                f"peak +{row['extra_mib']:.0f} MiB (max +{row['max_extra_mib']:.0f}, "
                f"bound {row['bound_mib']:.0f})",
                flush=True,
            )
        rows += sweep_rows
        entry = {
            "sweep": name,
            "time_slope": loglog_slope(
                [r["work"] for r in sweep_rows], [r["seconds"] for r in sweep_rows]
            )
            if variable not in ("budget_mib",)
            else math.nan,
            "all_within_bound": all(r["within_bound"] for r in sweep_rows),
            "max_extra_over_bound": max(r["max_extra_mib"] / r["bound_mib"] for r in sweep_rows),
        }
        if variable == "steps":
            entry["memory_growth_with_steps"] = sweep_rows[-1]["extra_mib"] / max(
                sweep_rows[0]["extra_mib"], 1e-9
            )
        summary.append(entry)
    info = machine(args.device)
    result = {"benchmark": "scaling", "dtype": "float32", **info, "rows": rows, "summary": summary}
    print(f"\nscaling on {describe(info)}")
    print(
        summary_table(
            rows,
            [
                ("sweep", "sweep", ""),
                ("value", "value", ""),
                ("runs", "runs", "d"),
                ("dim", "d", "d"),
                ("workers", "N", "d"),
                ("steps", "steps", "d"),
                ("seconds", "s", ".2f"),
                ("ns_per_unit", "ns / unit of work", ".2f"),
                ("extra_mib", "peak extra MiB (median)", ".1f"),
                ("max_extra_mib", "(max)", ".1f"),
                ("bound_mib", "budget+output MiB", ".0f"),
            ],
        )
    )
    print(
        summary_table(
            summary,
            [
                ("sweep", "sweep", ""),
                ("time_slope", "slope of log time vs log work", ".2f"),
                ("all_within_bound", "memory within bound", ""),
                ("max_extra_over_bound", "max peak / bound", ".2f"),
            ],
        )
    )
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
