"""Shared test fixtures: float64 by default, one torch thread, device parameter."""

from __future__ import annotations

import pytest
import torch

from sdeopt import configure_torch

configure_torch(threads=1)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]


@pytest.fixture(autouse=True)
def _float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator for building test inputs."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def rng_for(n_runs: int, seed: int = 0, device="cpu", dtype=torch.float64, block_size=4096):
    """A RandomSource for tests."""
    from sdeopt.random import RandomSource

    return RandomSource(seed, n_runs, device=device, dtype=dtype, block_size=block_size)
