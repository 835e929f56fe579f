"""The random source of every run (public: ``sdeopt.random.RandomSource``): counter-based
seeding, a run's random draws depending only on (seed, run index).

Runs are grouped in blocks of ``block_size``; block j of the stream ``seed`` is seeded by
``SeedSequence(seed, spawn_key=(j,))``, which never aliases another (seed, block) pair for
seeds below 2**128 (the seed's words are padded to the pool size before the block is appended).
The i-th draw call of a block fills the block's rows in order, row by row, from a stream that
depends only on (seed, block, i), so

- **chunk invariance**: results do not depend on how many runs are simulated at once;
- **prefix stability**: the first m runs of an n-run study (m < n) are the m runs of an m-run
  study, and runs ``first_run .. first_run + n_runs - 1`` of any study can be recomputed alone:
  a study can be extended with more runs, keeping those already computed.

On the CPU each block draws from a numpy ``PCG64DXSM`` generator (128-bit state, its own
increment per block); the i-th call starts i·2**64 words into the block's stream (a jump of
about 2 µs per block and call), and numpy's samplers fill row after row, so rows before the
first requested one are drawn and discarded (at most one block's worth). Float32 normals come
from torch's vectorised sampler instead (numpy's is ~4x slower in float32), its mt19937 given
624 state words from that stream at each call (see ``_torch_normal``). On CUDA each block has
a ``torch.Generator`` (Philox, a 64-bit seed from the block's sequence) and every call fills the
whole block, so a partial block costs a full block's draws but its rows are the same.
Streams differ between the two devices; each is bitwise reproducible on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from sdeopt._validation import check_int

DEFAULT_BLOCK_SIZE = 4096
SEED_LIMIT = 2**128


def check_seed(name: str, value) -> int:
    """A seed: an integer in [0, 2**128) (numpy and 0-d torch integers accepted)."""
    if (
        isinstance(value, torch.Tensor)
        and value.ndim == 0
        and not value.is_floating_point()
        and value.dtype != torch.bool
    ):
        value = int(value)
    seed = check_int(name, value, minimum=0)
    if seed >= SEED_LIMIT:
        raise ValueError(f"Invalid {name}: {value!r} (must be an integer in [0, 2**128))")
    return seed


def seed_attr(seed: int) -> int | str:
    """A seed as a dataset attribute: an int when it fits netCDF's int64, else its decimal string
    (``int(ds.attrs["seed"])`` reads both)."""
    return int(seed) if seed < 2**63 else str(seed)


def block_sequence(seed: int, block: int) -> np.random.SeedSequence:
    """The seed sequence of block ``block`` of the stream ``seed``."""
    return np.random.SeedSequence(int(seed), spawn_key=(int(block),))


def derived_seed(seed: int, index: int) -> int:
    """A 63-bit seed for the index-th independent stream derived from ``seed`` (no aliasing)."""
    words = np.random.SeedSequence(int(seed), spawn_key=(1 << 32, int(index))).generate_state(
        2, np.uint32
    )
    return (int(words[0]) << 31) ^ int(words[1])


class RandomSource:
    """Draws random tensors of shape (B, ...) for the runs ``first_run`` to
    ``first_run + n_runs - 1``.

    Args:
        seed: the stream's seed, an integer in [0, 2**128).
        n_runs: B, the number of runs drawn for.
        first_run: global index of the first run (any integer >= 0).
        block_size: runs per key (the seeding granularity): the stream depends on it.
        device, dtype: where and in which precision tensors are drawn.
    """

    def __init__(
        self,
        seed: int,
        n_runs: int,
        *,
        first_run: int = 0,
        block_size: int = DEFAULT_BLOCK_SIZE,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.seed = check_seed("seed", seed)
        self.n_runs = check_int("n_runs", n_runs, minimum=1)
        self.block_size = check_int("block_size", block_size, minimum=1)
        self.first_run = check_int("first_run", first_run, minimum=0)
        self.device = torch.device(device)
        self.dtype = dtype
        self._on_cpu = self.device.type == "cpu"
        self._calls = 0
        self._mt = (
            torch.Generator() if self._on_cpu else None
        )  # float32 normals: its state is set per draw
        # One part per block touched: (generator, its start state on the CPU, first row in the
        # block, rows, output slice).
        self._parts: list[
            tuple[np.random.Generator | torch.Generator, Mapping[str, Any] | None, int, int, slice]
        ] = []
        gen: np.random.Generator | torch.Generator
        run, stop = self.first_run, self.first_run + self.n_runs
        while run < stop:
            block, lo = divmod(run, self.block_size)
            rows = min(self.block_size - lo, stop - run)
            sequence = block_sequence(self.seed, block)
            if self._on_cpu:
                gen = np.random.Generator(np.random.PCG64DXSM(sequence))
                start = gen.bit_generator.state
            else:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(int(sequence.generate_state(1, np.uint64)[0]))
                start = None
            out = slice(run - self.first_run, run - self.first_run + rows)
            self._parts.append((gen, start, lo, rows, out))
            run += rows

    def normal(self, *shape: int) -> torch.Tensor:
        """Standard normal draws of shape ``(B, *shape)``."""
        return self._draw(shape, self.dtype, "normal")

    def uniform(self, *shape: int) -> torch.Tensor:
        """Uniform draws on [0, 1) of shape ``(B, *shape)``."""
        return self._draw(shape, self.dtype, "uniform")

    def exponential(self, *shape: int) -> torch.Tensor:
        """Exp(1) draws of shape ``(B, *shape)``."""
        return self._draw(shape, self.dtype, "exponential")

    def stable(self, alpha: float, *shape: int) -> torch.Tensor:
        r"""Standard symmetric :math:`\alpha`-stable draws of shape (B, \*shape): characteristic
        function :math:`\exp(-|u|^\alpha)`, :math:`\alpha \in (0, 2]`.

        Chambers–Mallows–Stuck with :math:`\beta = 0`: :math:`V = \pi(U_1 - 1/2)`,
        :math:`W = -\log U_2 \sim \mathrm{Exp}(1)`,

        .. math::

            S = \sin(\alpha V) \cos(V)^{-1/\alpha}
                \Big(\frac{\cos((1-\alpha)V)}{W}\Big)^{(1-\alpha)/\alpha},

        evaluated as :math:`\sin(\alpha V) \exp(\frac{1-\alpha}{\alpha}(\log\cos((1-\alpha)V)
        - \log W) - \frac1\alpha \log\cos V)` (one exp and three logs cost a fifth of two
        float32 ``pow`` calls); :math:`\tan V` for :math:`\alpha = 1`; :math:`\sqrt 2\, z`, z
        standard normal, for :math:`\alpha = 2`. Two uniform draw calls (:math:`U_1`, then
        :math:`U_2`) for :math:`\alpha \notin \{1, 2\}`. Both uniforms are shifted by a
        quarter of the float epsilon, half a step of the generator's grid (24 or 53 bits), so
        that they lie in (0, 1): V never equals :math:`\pm\pi/2` (where :math:`\cos V` would
        round below 0 in float32) and W is never 0 (W is then at most
        :math:`-\log(\epsilon/4)`, 18 in float32: the exponential law above that, probability
        1.5e-8, is folded onto it).

        References:
            Chambers, Mallows, Stuck, JASA 71(354):340-344, 1976; Weron, Statist. Probab. Lett.
            28:165-171, 1996, eq. (3.2).
        """
        if alpha == 2.0:
            return self.normal(*shape).mul_(math.sqrt(2.0))
        half_step = torch.finfo(self.dtype).eps / 4.0
        v = self.uniform(*shape).add_(half_step - 0.5).mul_(math.pi)  # (B, *shape), V
        if alpha == 1.0:
            return torch.tan(v)
        log_w = self.uniform(*shape).add_(half_step).log_().neg_().log_()  # (B, *shape), log W
        power = (1.0 - alpha) / alpha
        log_s = torch.cos(v * (1.0 - alpha)).log_().sub_(log_w).mul_(power)
        log_s.sub_(torch.cos(v).log_().mul_(1.0 / alpha))
        return log_s.exp_().mul_(v.mul_(alpha).sin_())

    def integers(self, high: int, *shape: int) -> torch.Tensor:
        """Uniform integers in [0, high) of shape ``(B, *shape)``, dtype int64."""
        return self._draw(shape, torch.int64, "integers", high)

    def _draw(self, shape, dtype, kind, high=None) -> torch.Tensor:
        out = torch.empty((self.n_runs, *shape), device=self.device, dtype=dtype)
        if self._on_cpu:
            self._fill_cpu(out.numpy(), shape, kind, high)
        else:
            self._fill_torch(out, shape, kind, high)
        self._calls += 1
        return out

    def _fill_cpu(self, out: np.ndarray, shape, kind, high) -> None:
        # The i-th call starts each block's stream i·2**64 words after its start: no two calls
        # overlap (a call draws far fewer than 2**64 words).
        jump = self._calls << 64
        vectorised = kind == "normal" and out.dtype == np.float32
        for gen, start, lo, _rows, sl in self._parts:
            # CPU parts: a numpy Generator over a PCG64DXSM, with its start state (see __init__)
            assert isinstance(gen, np.random.Generator) and start is not None
            gen.bit_generator.state = start
            bits = gen.bit_generator
            assert isinstance(bits, np.random.PCG64DXSM)
            bits.advance(jump)
            if vectorised:
                assert self._mt is not None  # set on the CPU
                _torch_normal(gen, self._mt, out[sl], lo)
                continue
            if lo:
                _numpy_sample(
                    gen, kind, np.empty((lo, *shape), dtype=out.dtype), high
                )  # discarded rows
            _numpy_sample(gen, kind, out[sl], high)

    def _fill_torch(self, out: torch.Tensor, shape, kind, high) -> None:
        for gen, _, lo, rows, sl in self._parts:
            assert isinstance(gen, torch.Generator)  # off the CPU every part has a torch one
            whole = (
                out[sl]
                if rows == self.block_size
                else torch.empty((self.block_size, *shape), device=self.device, dtype=out.dtype)
            )
            if kind == "normal":
                whole.normal_(generator=gen)
            elif kind == "uniform":
                whole.uniform_(generator=gen)
            elif kind == "exponential":
                whole.exponential_(generator=gen)
            else:
                whole.random_(0, high, generator=gen)
            if rows != self.block_size:
                out[sl] = whole[lo : lo + rows]


def _numpy_sample(gen: np.random.Generator, kind: str, out: np.ndarray, high) -> None:
    """Fill ``out`` row after row from ``gen`` (numpy's samplers consume their stream in order)."""
    if kind == "normal":
        gen.standard_normal(out=out, dtype=out.dtype)
    elif kind == "uniform":
        gen.random(out=out, dtype=out.dtype)
    elif kind == "exponential":
        gen.standard_exponential(out=out, dtype=out.dtype)
    else:
        out[...] = gen.integers(0, high, size=out.shape, dtype=np.int64)


_MT_TEMPLATE: np.ndarray | None = None
_MT_WORDS = slice(
    24, 24 + 624 * 8
)  # the 624 state words (uint64 each) of torch's CPU generator state


def _torch_normal(gen: np.random.Generator, mt: torch.Generator, out: np.ndarray, lo: int) -> None:
    """Float32 normals into ``out`` (rows lo.. of a block) from torch's vectorised sampler, ~4x
    numpy's in float32: torch's mt19937 gets all 624 state words from ``gen`` (a full 19937-bit
    state, where ``manual_seed`` would take 32 bits), and fills whole 16-value groups, which it
    transforms independently of the size of the fill, so the first n values of a fill of any
    multiple of 16 values are the same: rows are prefix-stable."""
    global _MT_TEMPLATE
    if _MT_TEMPLATE is None:
        _MT_TEMPLATE = torch.Generator().get_state().numpy().copy()
        if _MT_TEMPLATE.size != 5056:
            raise RuntimeError(
                f"torch's CPU generator state has {_MT_TEMPLATE.size} bytes, not 5056"
            )
    state = _MT_TEMPLATE.copy()
    state[_MT_WORDS] = (
        gen.bit_generator.random_raw(312).view(np.uint32).astype(np.uint64).view(np.uint8)
    )
    mt.set_state(torch.from_numpy(state))
    per_row = out[0].size if out.ndim > 1 else 1
    size = (lo + out.shape[0]) * per_row
    padded = max(16, -(-size // 16) * 16)
    target = torch.from_numpy(out)
    if lo == 0 and padded == size:
        target.normal_(generator=mt)
    else:
        values = torch.empty(padded, dtype=torch.float32).normal_(generator=mt)
        target.view(-1).copy_(values[lo * per_row : size])
