"""Counter-based seeding: one ``torch.Generator`` per block of runs.

A run's random stream depends only on ``(seed, block index)``, never on how many runs are
simulated together, so results do not depend on the chunk size: a chunk is a union of whole
blocks, and every draw fills the rows of each block from that block's own generator.
With ``block_size=1`` every run has a generator of its own (slow, but then run b alone
reproduces row b of any batch exactly).
"""

from __future__ import annotations

import numpy as np
import torch

from sdeopt._validation import check_int

DEFAULT_BLOCK_SIZE = 4096


def block_seed(seed: int, block: int) -> int:
    """A 63-bit seed for block ``block`` of the stream ``seed`` (SeedSequence mixing)."""
    state = np.random.SeedSequence([int(seed), int(block)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class RandomSource:
    """Draws random tensors of shape (B, ...) for runs ``first_run .. first_run + n_runs - 1``.

    Args:
        seed: the stream's seed (an int >= 0).
        n_runs: B, the number of runs drawn for.
        first_run: global index of the first run; must be a multiple of ``block_size``.
        block_size: runs per generator (the seeding granularity).
        device, dtype: where and in which precision tensors are drawn.
    """

    def __init__(self, seed: int, n_runs: int, *, first_run: int = 0,
                 block_size: int = DEFAULT_BLOCK_SIZE, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        self.seed = check_int("seed", seed, minimum=0)
        self.n_runs = check_int("n_runs", n_runs, minimum=1)
        self.block_size = check_int("block_size", block_size, minimum=1)
        self.first_run = check_int("first_run", first_run, minimum=0)
        if self.first_run % self.block_size:
            raise ValueError(f"Invalid first_run: {first_run!r} (must be a multiple of "
                             f"block_size={self.block_size})")
        self.device = torch.device(device)
        self.dtype = dtype
        first_block = self.first_run // self.block_size
        n_blocks = -(-self.n_runs // self.block_size)
        self._slices = []
        self._generators = []
        for j in range(n_blocks):
            g = torch.Generator(device=self.device)
            g.manual_seed(block_seed(self.seed, first_block + j))
            self._generators.append(g)
            self._slices.append(slice(j * self.block_size, min((j + 1) * self.block_size, self.n_runs)))

    def normal(self, *shape: int) -> torch.Tensor:
        """Standard normal draws of shape (B, *shape)."""
        return self._draw(shape, self.dtype, lambda t, g: t.normal_(generator=g))

    def uniform(self, *shape: int) -> torch.Tensor:
        """Uniform draws on [0, 1) of shape (B, *shape)."""
        return self._draw(shape, self.dtype, lambda t, g: t.uniform_(generator=g))

    def exponential(self, *shape: int) -> torch.Tensor:
        """Exp(1) draws of shape (B, *shape)."""
        return self._draw(shape, self.dtype, lambda t, g: t.exponential_(generator=g))

    def integers(self, high: int, *shape: int) -> torch.Tensor:
        """Uniform integers in [0, high) of shape (B, *shape), dtype int64."""
        return self._draw(shape, torch.int64, lambda t, g: t.random_(0, high, generator=g))

    def _draw(self, shape, dtype, fill) -> torch.Tensor:
        out = torch.empty((self.n_runs, *shape), device=self.device, dtype=dtype)
        for sl, g in zip(self._slices, self._generators):
            fill(out[sl], g)
        return out
