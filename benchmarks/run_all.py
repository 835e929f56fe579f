"""The whole benchmark suite in one command: discrete methods, SDE solver vs torchsde, scaling,
W2 estimators, the minibatch SDE against its discrete step, the cost of prefix-stable seeding and
the DSignSGD headline; JSON per benchmark plus suite.json, and a summary.

    python benchmarks/run_all.py                  # CPU, full sizes (about 15-20 minutes on 2 cores)
    python benchmarks/run_all.py --device cuda    # the same suite on a GPU, headline at full size
    python benchmarks/run_all.py --quick          # small sizes: a smoke test in well under a minute

Every figure is a ratio measured side by side in one process (see each script's docstring).
On the CPU the headline runs at 10^4 runs instead of 10^6 (--headline-runs overrides).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_accuracy
import bench_clipping
import bench_discrete
import bench_headline
import bench_levy
import bench_minibatch
import bench_rng
import bench_scaling
import bench_sde
import bench_w2
from _common import RESULTS, describe, machine, write

from sdeopt.cli import summary_table


def plan(device: str, quick: bool, headline_runs: int | None) -> dict:
    """benchmark name -> (module, argv) for this device and size."""
    on_gpu = device.startswith("cuda")
    dev = ["--device", device]
    if quick:
        return {
            "discrete": (
                bench_discrete,
                [*dev, "--runs", "2000", "--steps", "20", "--repeats", "1"],
            ),
            "sde": (bench_sde, [*dev, "--runs", "500", "--steps", "20", "--repeats", "1"]),
            "scaling": (
                bench_scaling,
                [*dev, "--quick", "--steps", "5", "--repeats", "1", "--memory-repeats", "1"],
            ),
            "w2": (bench_w2, ["--quick", "--reps", "2"]),
            "minibatch": (
                bench_minibatch,
                [*dev, "--runs", "200", "--steps", "5", "--repeats", "1"],
            ),
            "clipping": (bench_clipping, [*dev, "--runs", "500", "--steps", "5", "--repeats", "1"]),
            "rng": (bench_rng, [*dev, "--runs", "8192", "1000", "--draws", "2", "--repeats", "1"]),
            "levy": (
                bench_levy,
                [*dev, "--runs", "500", "--steps", "5", "--draws", "10000", "--repeats", "1"],
            ),
            "accuracy": (bench_accuracy, ["--quick"]),
            "headline": (
                bench_headline,
                [
                    *dev,
                    "--runs",
                    str(headline_runs or 2000),
                    "--dim",
                    "20",
                    "--steps",
                    "20",
                    "--floor-steps",
                    "5",
                ],
            ),
        }
    big = ["--runs", "1000000"] if on_gpu else []
    return {
        "discrete": (bench_discrete, [*dev, *big]),
        "sde": (bench_sde, [*dev, *big]),
        "scaling": (bench_scaling, dev),
        "w2": (bench_w2, []),
        "minibatch": (bench_minibatch, dev),
        "clipping": (bench_clipping, [*dev, *big]),
        "rng": (bench_rng, dev),
        "levy": (bench_levy, [*dev, *big]),
        "accuracy": (bench_accuracy, []),  # CPU: it compares CPU libraries
        "headline": (
            bench_headline,
            [*dev, "--runs", str(headline_runs or (10**6 if on_gpu else 10**4)), "--fuse"],
        ),
    }


def headline_rows(results: dict) -> list[dict]:
    """The ratios worth a line each."""
    rows = []
    for r in results.get("discrete", {}).get("rows", []):
        rows.append(
            {
                "benchmark": "discrete",
                "case": r["case"],
                "figure": f"{r['speedup_vs_naive']:.1f}x faster than naive; "
                f"{r['ratio_to_bare_rng']:.2f}x its bare RNG",
            }
        )
    sde = results.get("sde", {}).get("ratios", {})
    for key, value in sde.items():
        rows.append({"benchmark": "sde", "case": key, "figure": f"{value:.2f}"})
    for s in results.get("scaling", {}).get("summary", []):
        figure = (
            f"time ~ work^{s['time_slope']:.2f}; " if s["time_slope"] == s["time_slope"] else ""
        )
        figure += f"peak memory / (budget + output) <= {s['max_extra_over_bound']:.2f}"
        if "memory_growth_with_steps" in s:
            figure += f"; x{s['memory_growth_with_steps']:.2f} memory for 10x the steps"
        rows.append({"benchmark": "scaling", "case": s["sweep"], "figure": figure})
    for r in results.get("minibatch", {}).get("rows", []):
        rows.append(
            {
                "benchmark": "minibatch",
                "case": f"DSGD + minibatch, {r['runs']} runs",
                "figure": f"SDE step {r['ratio']:.2f}x the discrete step",
            }
        )
    for r in results.get("minibatch", {}).get("estimated", []):
        rows.append(
            {
                "benchmark": "minibatch",
                "case": f"estimated moments S={r['samples']}, {r['runs']} runs",
                "figure": f"{r['ratio']:.2f}x the discrete step ({r['ratio_per_sample']:.2f}x per draw)",
            }
        )
    for r in results.get("clipping", {}).get("rows", []):
        rows.append(
            {
                "benchmark": "clipping",
                "case": f"coordinate-clipped DSGD, {r['noise']}, {r['runs']} runs",
                "figure": f"closed-form SDE step {r['ratio']:.2f}x the discrete step",
            }
        )
    for r in results.get("accuracy", {}).get("rows", []):
        if r.get("ratio_1e-3") is not None:
            rows.append(
                {
                    "benchmark": "accuracy",
                    "case": f"{r['task']}: {r['solver']}",
                    "figure": f"{r['cost_1e-3']:.3g} s to 1e-3 (fitted), "
                    f"{r['ratio_1e-3']:.1f}x sdeopt's best",
                }
            )
    levy = results.get("levy")
    if levy:
        rows.append(
            {
                "benchmark": "levy",
                "case": f"Lévy SDE step, α = {levy['alpha']}, {levy['runs']} runs",
                "figure": f"{levy['levy_over_brownian']:.2f}x the Brownian SDE step; stable "
                f"sampler {levy['scipy_over_ours']:.1f}x faster than scipy's levy_stable.rvs",
            }
        )
    for s in results.get("w2", {}).get("summary", []):
        rows.append(
            {
                "benchmark": "w2",
                "case": f"{s['method']}, d={s['d']}",
                "figure": f"time ~ n^{s['cost_exponent']:.2f}; "
                f"relative error {s['rel_error_at_largest_n']:+.1%} at the largest n",
            }
        )
    for r in results.get("rng", {}).get("rows", []):
        rows.append(
            {
                "benchmark": "rng",
                "case": f"{r['kind']} {r['dtype']}, {r['runs']} runs x {r['dim']}",
                "figure": f"{r['ratio']:.2f}x torch's generator per block",
            }
        )
    h = results.get("headline")
    if h:
        rows.append(
            {
                "benchmark": "headline",
                "case": f"DSignSGD t(1.5), {h['runs']} runs, d={h['dim']}, {h['steps']} steps",
                "figure": f"{h['seconds']:.2f} s; x{h['x_rng_floor']:.1f} the RNG floor; "
                f"{h['state_passes_per_step']:.0f} state passes per step"
                + (
                    f"; fused {h['fused']['seconds']:.2f} s"
                    if h.get("fused", {}) and "seconds" in h["fused"]
                    else ""
                ),
            }
        )
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=(
            "discrete",
            "sde",
            "scaling",
            "w2",
            "minibatch",
            "clipping",
            "rng",
            "levy",
            "accuracy",
            "headline",
        ),
        help="run these benchmarks only (suite.json keeps the others' last results)",
    )
    parser.add_argument("--headline-runs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON files")
    args = parser.parse_args(argv)
    results = {}
    previous = args.out / "suite.json"
    if args.only and previous.exists():  # re-running some benchmarks keeps the others' results
        results = json.loads(previous.read_text()).get("results", {})
    for name, (module, bench_argv) in plan(args.device, args.quick, args.headline_runs).items():
        if args.only and name not in args.only:
            continue
        print(
            f"\n=== {name}: python benchmarks/{Path(module.__file__).name} {' '.join(bench_argv)}",
            flush=True,
        )
        results[name] = module.main([*bench_argv, "--out", str(args.out / f"{name}.json")])
    info = machine(args.device)
    rows = headline_rows(results)
    print(f"\n=== summary, on {describe(info)}")
    print(
        summary_table(
            rows, [("benchmark", "benchmark", ""), ("case", "case", ""), ("figure", "figure", "")]
        )
    )
    suite = {"benchmark": "suite", "quick": args.quick, **info, "summary": rows, "results": results}
    write(suite, args.out / "suite.json")
    return suite


if __name__ == "__main__":
    main()
