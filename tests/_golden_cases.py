"""The runs whose results are recorded in tests/data/golden.json (issue 13: the redesign must give
the same numbers for the same seeds). Regenerate only on purpose: python -m tests._golden_cases."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import sdeopt as so

GOLDEN = Path(__file__).parent / "data" / "golden.json"
KW = dict(
    n_steps=7, n_runs=5, seed=11, record_x=True, dtype=torch.float64, block_size=4, record_every=3
)


def cases() -> dict:
    """name -> a zero-argument function returning the final iterates (n_runs, d) as a tensor."""
    quad = so.problems.Quadratic(diag=[1.0, 2.0, 3.0])
    quartic = so.problems.Quartic(3)
    n = so.noise
    methods = {
        "dsgd-gauss": so.discrete.DSGD(lr=0.1, n_workers=2, noise=n.Gaussian(scale=0.7)),
        "dsgd-gauss-draws": so.discrete.DSGD(
            lr=0.1, n_workers=2, noise=n.Gaussian(scale=0.7), shortcuts=False
        ),
        "dsgd-t": so.discrete.DSGD(
            lr=0.1, n_workers=3, noise=n.StudentT(nu=3.0, scale=[0.5, 1.0, 1.5])
        ),
        "dsgd-affine": so.discrete.DSGD(
            lr=0.1, n_workers=2, noise=n.AffineVariance(sigma0=0.5, sigma1=0.3)
        ),
        "dsgd-stable": so.discrete.DSGD(lr=0.1, n_workers=2, noise=n.SymmetricStable(alpha=1.5)),
        "dcsgd-randk": so.discrete.DCSGD(
            lr=0.1, n_workers=2, noise=n.Gaussian(), compressor=so.compressors.RandK(k=1)
        ),
        "dcsgd-qsgd": so.discrete.DCSGD(
            lr=0.1, n_workers=2, noise=n.Gaussian(), compressor=so.compressors.QSGD(s=2)
        ),
        "dcsgd-natural": so.discrete.DCSGD(
            lr=0.1, n_workers=2, noise=n.Gaussian(), compressor=so.compressors.Natural()
        ),
        "dcsgd-topk": so.discrete.DCSGD(
            lr=0.1, n_workers=2, noise=n.Gaussian(), compressor=so.compressors.TopK(k=2)
        ),
        "dsign-gauss": so.discrete.DSignSGD(lr=0.1, n_workers=5, noise=n.Gaussian()),
        "dsign-t": so.discrete.DSignSGD(lr=0.1, n_workers=5, noise=n.StudentT(nu=1.5)),
        "dsign-t-draws": so.discrete.DSignSGD(
            lr=0.1, n_workers=5, noise=n.StudentT(nu=1.5), shortcuts=False
        ),
        "ito-sgld": so.discrete.ItoChain(lr=0.1, gamma=0.5, diffusion=0.3),
        "markov-two-state": so.discrete.MarkovSGD(lr=0.1, noise=n.TwoStateMarkov(p=0.2, scale=1.0)),
        "markov-mlmc": so.discrete.MarkovSGD(
            lr=0.1, noise=n.GaussianAR1(rho=0.5), estimator="mlmc", batch=1, max_batch=4
        ),
    }
    out = {}
    for name, method in methods.items():
        for pname, prob in (("quad", quad), ("quartic", quartic)):
            out[f"{name}/{pname}/discrete"] = lambda m=method, p=prob: so.discrete.simulate(
                m, p, [1.0, -0.5, 0.25], **KW
            ).x[-1]
            for model in ("first_order", "second_order", "curvature"):
                try:
                    sde = so.dynamics.sde_of(method, prob, model)
                except ValueError:
                    continue
                out[f"{name}/{pname}/{model}"] = lambda s=sde: so.dynamics.solve(
                    s, [1.0, -0.5, 0.25], substeps=2, **KW
                ).x[-1]
    return out


def record() -> dict:
    return {name: [[v.hex() for v in row] for row in fn().tolist()] for name, fn in cases().items()}


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
