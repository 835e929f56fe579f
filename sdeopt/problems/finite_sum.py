"""Finite sums over data split across workers: ``FiniteSumProblem`` and ``LogisticRegression`` on
scikit-learn's bundled data sets."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
import torch.nn.functional as F

from sdeopt._validation import check_int, check_positive
from sdeopt.problems.base import (
    PROBLEMS,
    Problem,
    _cast,
)
from sdeopt.random import RandomSource

# ---------------------------------------------------------------------------------------------
# Finite sums over data split across workers
# ---------------------------------------------------------------------------------------------


class FiniteSumProblem(Problem):
    r""":math:`f(x) = \frac{1}{N} \sum_i f_i(x)` with
    :math:`f_i(x) = \frac{1}{n_i} \sum_{s \in S_i} f_s(x)`.

    The n samples are split into N disjoint shards :math:`S_i` of sizes :math:`n_i` (one per
    worker). Every worker carries weight :math:`1/N` whatever its shard size, so f is the
    average of the :math:`f_i` exactly, and :math:`f = \sum_s w_s f_s` with
    :math:`w_s = 1/(N n_{i(s)})` (``sample_weights``).
    Homogeneous problems (``n_workers`` None) have one shard holding all the data; every
    worker then sees f itself.

    Shards are stored padded to a common length ``n_max``: ``shard_index`` (S, n_max) holds
    the sample ids of each shard (padding points at sample 0) and ``shard_mask`` (S, n_max) is
    1 on real entries and 0 on padding; S = N, or 1 when homogeneous. Per-worker sums are
    then batched tensor contractions, with no Python loop over runs or workers.

    Minibatches: worker i draws ``b = batch_size`` distinct samples uniformly from its shard
    (without replacement) by giving every entry an independent random 62-bit integer key and
    keeping the b largest (a uniformly random b-subset; padding gets key -1 and is never
    chosen). Keys are integers, so the same seed selects the same samples in float32 and
    float64. The minibatch gradient
    :math:`g_i = \frac{1}{b} \sum_{s \in \mathrm{batch}_i} \nabla f_s(x)` is unbiased for
    :math:`\nabla f_i(x)`, with covariance (finite-population correction)

    .. math::

        \operatorname{Cov}(g_i) &= \frac{n_i - b}{(n_i - 1)\, b} \cdot \Sigma_i(x), \\
        \Sigma_i(x) &= \frac{1}{n_i} \sum_{s \in S_i} (\nabla f_s - \nabla f_i)
            (\nabla f_s - \nabla f_i)^\top.

    Subclasses set ``dim``, ``n_samples``, call ``_set_shards`` and implement
    ``per_sample_losses``/``per_sample_grads`` (and ``hvp``); they may override
    ``_weighted_grads`` with a cheaper contraction.

    References:
        Cochran, *Sampling Techniques*, 3rd ed. (1977), Thm 2.2 (variance of the mean of a
        sample drawn without replacement).
    """

    n_samples: int
    #: (n,) int64, the worker holding each sample (all 0 when homogeneous).
    sample_worker: torch.Tensor
    #: (S,) int64, n_i.
    shard_sizes: torch.Tensor
    #: (S, n_max) int64, sample ids of each shard, padded with 0.
    shard_index: torch.Tensor
    #: (S, n_max) float, 1 on real entries, 0 on padding.
    shard_mask: torch.Tensor
    #: (n,) float, w_s = 1 / (N n_{i(s)}); sums to 1.
    sample_weights: torch.Tensor

    def _set_shards(self, owner: np.ndarray, n_shards: int) -> None:
        """Build the shard tensors from ``owner`` (n,), the shard of each sample."""
        owner = np.asarray(owner, dtype=np.int64)
        n = owner.size
        sizes = np.bincount(owner, minlength=n_shards)  # (S,)
        if sizes.min() < 1:
            raise ValueError(
                f"Invalid n_workers: {n_shards!r} (a worker would hold no data; "
                f"shard sizes {sizes.tolist()})"
            )
        order = np.argsort(owner, kind="stable")  # (n,) sample ids grouped by shard
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # (S,)
        rank = np.arange(n) - starts[owner[order]]  # (n,) position inside the shard
        n_max = int(sizes.max())
        index = np.zeros((n_shards, n_max), dtype=np.int64)  # (S, n_max)
        mask = np.zeros((n_shards, n_max), dtype=np.float64)  # (S, n_max)
        index[owner[order], rank] = order
        mask[owner[order], rank] = 1.0
        self.n_samples = n
        self.sample_worker = torch.as_tensor(owner)  # (n,)
        self.shard_sizes = torch.as_tensor(sizes, dtype=torch.int64)  # (S,)
        self.shard_index = torch.as_tensor(index)  # (S, n_max)
        self.shard_mask = torch.as_tensor(mask)  # (S, n_max)
        self.sample_weights = torch.as_tensor(1.0 / (n_shards * sizes[owner]))  # (n,)

    # -- per-sample quantities ---------------------------------------------------------------

    @abstractmethod
    def per_sample_losses(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`f_s(x)` for every sample, in data order. Args: x (B, d). Returns: (B, n)."""

    def per_sample_grads(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla f_s(x)` for every sample, in data order. Args: x (B, d). Returns:
        (B, n, d).

        By ``torch.func`` (a Jacobian of ``per_sample_losses`` per run, vectorised over runs)
        unless a subclass gives the closed form. Memory is B·n·d; chunk over runs for large B.
        """

        def losses(point: torch.Tensor) -> torch.Tensor:  # (d,) -> (n,)
            return self.per_sample_losses(point.unsqueeze(0))[0]

        return torch.func.vmap(torch.func.jacrev(losses))(x)  # (B, n, d)

    def _weighted_grads(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``Σ_k weights[b, m, k] ∇f_{shard_index[m, k]}(x)`` over the padded shard layout.

        Args:
            x: (B, d).
            weights: (B or 1, M, n_max), zero on padding. M = N when heterogeneous (row i
                weighs shard i); when homogeneous (one shard) M is any number of workers.
        Returns:
            (B, M, d).
        """
        g = self.per_sample_grads(x)  # (B, n, d)
        idx = self.shard_index.to(x.device)  # (S, n_max)
        gp = g[:, idx]  # (B, S, n_max, d)
        n_runs, n_rows = x.shape[0], weights.shape[1]
        weights = weights.to(x.dtype).expand(n_runs, n_rows, -1)  # (B, M, n_max)
        return torch.einsum(
            "bmk,bmkd->bmd", weights, gp.expand(n_runs, n_rows, -1, -1)
        )  # (B, M, d)

    # -- the objective ---------------------------------------------------------------------

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.per_sample_losses(x) @ _cast(self.sample_weights, x)  # (B,)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnd,n->bd", self.per_sample_grads(x), _cast(self.sample_weights, x))

    def worker_grads(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla f_i(x)`. Args: x (B, d). Returns: (B, N, d), or (B, 1, d) if
        homogeneous."""
        if self.n_workers is None:
            return self.grad(x).unsqueeze(1)  # (B, 1, d)
        mask = _cast(self.shard_mask, x)  # (N, n_max)
        weights = mask / self.shard_sizes.to(x.device, x.dtype).unsqueeze(-1)  # (N, n_max)
        return self._weighted_grads(x, weights.unsqueeze(0))  # (B, N, d)

    # -- minibatches -------------------------------------------------------------------------

    def _check_batch(self, batch_size: int) -> int:
        b = check_int("batch_size", batch_size, minimum=1)
        smallest = int(self.shard_sizes.min())
        if b > smallest:
            raise ValueError(
                f"Invalid batch_size: {batch_size!r} (must be <= the smallest "
                f"shard size {smallest}, since batches are drawn without replacement)"
            )
        return b

    def _minibatch_positions(
        self, batch_size: int, n_workers: int, rng: RandomSource, replacement: bool = False
    ) -> torch.Tensor:
        """Positions in the padded shard layout of each worker's batch, (B, N, b) int64."""
        b = self._check_batch(batch_size)
        n_workers = check_int("n_workers", n_workers, minimum=1)
        self.check_workers(n_workers)
        n_max = self.shard_index.shape[1]
        if replacement:  # b independent uniform positions among the n_i real entries
            keys = rng.integers(1 << 62, n_workers, b)  # (B, N, b)
            sizes = self.shard_sizes.to(keys.device)  # (S,)
            return torch.remainder(keys, sizes.unsqueeze(-1))  # bias ~ n_i / 2**62
        keys = rng.integers(1 << 62, n_workers, n_max)  # (B, N, n_max), distinct w.p. ~1
        padding = self.shard_mask.to(keys.device) == 0  # (S, n_max)
        keys = keys.masked_fill(padding.unsqueeze(0), -1)  # padding is never among the b largest
        return torch.topk(keys, b, dim=-1, sorted=False).indices  # (B, N, b)

    def minibatch_indices(self, batch_size: int, n_workers: int, rng: RandomSource) -> torch.Tensor:
        r"""Sample ids of each worker's minibatch, distinct within a worker.

        Args:
            batch_size: b, :math:`1 \le b \le` the smallest shard size.
            n_workers: N (must equal ``self.n_workers`` when heterogeneous).
            rng: RandomSource for B runs.
        Returns:
            (B, N, b) int64 ids into the data set (data order).
        """
        pos = self._minibatch_positions(batch_size, n_workers, rng)  # (B, N, b)
        idx = self.shard_index.to(pos.device)  # (S, n_max)
        idx = idx.unsqueeze(0).expand(pos.shape[0], pos.shape[1], -1)  # (B, N, n_max)
        return torch.gather(idx, -1, pos)  # (B, N, b)

    def minibatch_worker_grads(
        self,
        x: torch.Tensor,
        batch_size: int,
        n_workers: int,
        rng: RandomSource,
        *,
        replacement: bool = False,
    ) -> torch.Tensor:
        r"""Minibatch gradients
        :math:`g_i = \frac{1}{b} \sum_{s \in \mathrm{batch}_i} \nabla f_s(x)` of every worker.

        Each run and each worker draws its own batch of b distinct samples uniformly from its
        shard (from all the data when homogeneous), so :math:`\mathbb{E}\, g_i = \nabla f_i(x)`.

        Args:
            x: (B, d).
            batch_size: b, :math:`1 \le b \le` the smallest shard size (``ValueError`` otherwise).
            n_workers: N (must equal ``self.n_workers`` when heterogeneous).
            rng: RandomSource for the same B runs.
        Returns:
            (B, N, d).
        """
        pos = self._minibatch_positions(batch_size, n_workers, rng, replacement).to(x.device)
        n_max = self.shard_index.shape[1]
        weights = torch.zeros(
            *pos.shape[:2], n_max, device=x.device, dtype=x.dtype
        )  # (B, N, n_max)
        # A sample drawn twice (with replacement) counts twice.
        weights.scatter_add_(
            -1, pos, torch.full(pos.shape, 1.0 / pos.shape[-1], dtype=x.dtype, device=x.device)
        )
        return self._weighted_grads(x, weights)  # (B, N, d)

    @staticmethod
    def _minibatch_scale(b: int, n_i: torch.Tensor, replacement: bool) -> torch.Tensor:
        """sqrt(c_b / n_i) per shard: c_b = 1/b with replacement, (n_i - b)/(b (n_i - 1))
        without (0 when b = n_i)."""
        if replacement:
            c_b = torch.full_like(n_i, 1.0 / b)
        else:
            c_b = torch.where(
                n_i > 1, (n_i - b) / ((n_i - 1).clamp(min=1) * b), torch.zeros_like(n_i)
            )
        return torch.sqrt(c_b / n_i)  # (S,)

    def minibatch_cov_factors(
        self, x: torch.Tensor, batch_size: int, *, replacement: bool = False
    ) -> torch.Tensor:
        r"""Low-rank square roots :math:`F_i` of the minibatch covariances,
        :math:`\operatorname{Cov}(g_i) = F_i F_i^\top`.

        .. math::

            F_i = \sqrt{c_b / n_i}\; \bigl[\nabla f_s - \nabla f_i\bigr]_{s \in S_i},
            \qquad c_b = \frac{n_i - b}{b\,(n_i - 1)} \text{ (without replacement)},
            \quad c_b = \frac{1}{b} \text{ (with)},

        the centred per-sample gradients as columns (:math:`c_b = 0` when :math:`b = n_i`
        without replacement). An SDE applies :math:`F_i` to a Brownian motion of dimension
        :math:`n_i`: O(n d) per run, never a d x d factorisation.

        Args:
            x: (B, d).
            batch_size: b.
            replacement: how the batch is drawn (``Minibatch(replacement=...)``).
        Returns:
            (B, S, d, n_max), zero on padding; S = N, or 1 if homogeneous.
        """
        b = self._check_batch(batch_size)
        g = self.per_sample_grads(x)  # (B, n, d)
        gp = g[:, self.shard_index.to(x.device)]  # (B, S, n_max, d)
        mask = _cast(self.shard_mask, x).unsqueeze(-1)  # (S, n_max, 1)
        n_i = self.shard_sizes.to(x.device, x.dtype)  # (S,)
        mean = (gp * mask).sum(dim=2) / n_i.unsqueeze(-1)  # (B, S, d)
        dev = (gp - mean.unsqueeze(2)) * mask  # (B, S, n_max, d)
        scale = self._minibatch_scale(b, n_i, replacement)  # (S,)
        return (dev * scale[:, None, None]).transpose(-1, -2)  # (B, S, d, n_max)

    def _shard_square_sums(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_{s \in S_i} \nabla f_s(x)^2` (entrywise squares) per shard, (B, S, d).

        From ``per_sample_grads`` (a (B, n, d) tensor); generalised linear problems override it
        with two contractions (``_glm_square_sums``)."""
        gp = self.per_sample_grads(x)[:, self.shard_index.to(x.device)]  # (B, S, n_max, d)
        return (gp.square() * _cast(self.shard_mask, x).unsqueeze(-1)).sum(dim=2)

    def _glm_square_sums(
        self, x: torch.Tensor, coef: torch.Tensor, feats: torch.Tensor, reg: float
    ) -> torch.Tensor:
        r""":math:`\sum_{s \in S_i} (c_s z_s + \lambda x)^2` for per-sample gradients
        :math:`c_s(x) z_s + \lambda x`: :math:`\sum c_s^2 z_s^2 + 2 \lambda x \sum c_s z_s +
        n_i \lambda^2 x^2`, each sum one (B, n) x (n, d) contraction per shard, (B, S, d).

        Args:
            coef: (B, n) the :math:`c_s(x)`; feats: (n, d) the :math:`z_s`; reg: :math:`\lambda`.
        """
        idx = self.shard_index.to(x.device)  # (S, n_max)
        mask = _cast(self.shard_mask, x)  # (S, n_max)
        cp = coef[:, idx] * mask  # (B, S, n_max), zero on padding
        zp = feats[idx]  # (S, n_max, d)
        out = torch.einsum("bik,ikd->bid", cp.square(), zp.square())  # (B, S, d)
        if reg:
            linear = torch.einsum("bik,ikd->bid", cp, zp)  # (B, S, d)
            n_i = self.shard_sizes.to(x.device, x.dtype).view(1, -1, 1)  # (1, S, 1)
            out = out + 2.0 * reg * x.unsqueeze(1) * linear + n_i * reg**2 * x.square().unsqueeze(1)
        return out

    def minibatch_cov_diag(
        self, x: torch.Tensor, batch_size: int, *, replacement: bool = False
    ) -> torch.Tensor:
        r"""The diagonal of :math:`F_i F_i^\top` (``minibatch_cov_factors``) without forming
        :math:`F_i`:

        .. math::

            \operatorname{diag}(F_i F_i^\top) = \frac{c_b}{n_i} \Big(\sum_{s \in S_i}
            \nabla f_s^2 - n_i\, \nabla f_i^2\Big),

        the per-coordinate minibatch variance (what RandK's covariance adds to its diagonal).

        Args:
            x: (B, d).
            batch_size: b.
            replacement: how the batch is drawn.
        Returns:
            (B, S, d), S = N, or 1 if homogeneous.
        """
        b = self._check_batch(batch_size)
        n_i = self.shard_sizes.to(x.device, x.dtype)  # (S,)
        scale = self._minibatch_scale(b, n_i, replacement)  # (S,): sqrt(c_b / n_i)
        spread = self._shard_square_sums(x) - n_i.view(1, -1, 1) * self.worker_grads(x).square()
        return (scale.square().view(1, -1, 1) * spread).clamp_(min=0.0)  # (B, S, d)

    def minibatch_noise_apply(
        self, x: torch.Tensor, batch_size: int, w: torch.Tensor, *, replacement: bool = False
    ) -> torch.Tensor:
        r""":math:`F_i w_i` for every shard without forming :math:`F_i` (``minibatch_cov_factors``):

        .. math::

            F_i w_i = \sqrt{c_b / n_i} \sum_{s \in S_i} w_{i,s}
            \bigl(\nabla f_s(x) - \nabla f_i(x)\bigr)
            = \sqrt{c_b / n_i} \Bigl(\sum_s w_{i,s} \nabla f_s - \bigl(\sum_s w_{i,s}\bigr)
            \nabla f_i\Bigr),

        one weighted per-sample contraction (``_weighted_grads``, as a minibatch step costs) and
        no (B, n, d) tensor where the problem has a closed-form contraction.

        Args:
            x: (B, d).
            batch_size: b.
            w: (B, S, n_max) weights (e.g. Brownian increments); padding entries are ignored.
            replacement: how the batch is drawn.
        Returns:
            (B, S, d).
        """
        b = self._check_batch(batch_size)
        n_i = self.shard_sizes.to(x.device, x.dtype)  # (S,)
        scale = self._minibatch_scale(b, n_i, replacement)  # (S,)
        w = w * _cast(self.shard_mask, x) * scale.unsqueeze(-1)  # (B, S, n_max)
        return self._weighted_grads(x, w) - w.sum(-1, keepdim=True) * self.worker_grads(x)

    def minibatch_covariance(
        self, x: torch.Tensor, batch_size: int, *, replacement: bool = False
    ) -> torch.Tensor:
        r"""Covariance of the minibatch gradient :math:`g_i` of each worker,
        :math:`F_i F_i^\top` (``minibatch_cov_factors``):

        .. math::

            \operatorname{Cov}(g_i) = c_b \cdot \frac{1}{n_i}
            \sum_{s \in S_i} (\nabla f_s - \nabla f_i)(\nabla f_s - \nabla f_i)^\top.

        Args:
            x: (B, d).
            batch_size: b.
            replacement: how the batch is drawn.
        Returns:
            (B, N, d, d), or (B, 1, d, d) if homogeneous (the same for every worker).
        """
        f = self.minibatch_cov_factors(x, batch_size, replacement=replacement)  # (B, S, d, n_max)
        return f @ f.transpose(-1, -2)

    def config(self) -> dict:
        cfg = super().config()
        cfg["n_samples"] = self.n_samples
        cfg["shard_sizes"] = self.shard_sizes.tolist()
        return cfg


# -- data sets -----------------------------------------------------------------------------------


def _load_breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """Wisconsin diagnostic breast cancer: 569 × 30; y = +1 benign, -1 malignant."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return np.asarray(data.data, dtype=np.float64), np.where(data.target == 1, 1.0, -1.0)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Optical digits 8×8: 1797 × 64; y = +1 for digits 5-9, -1 for digits 0-4."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.asarray(data.data, dtype=np.float64), np.where(data.target >= 5, 1.0, -1.0)


_DATASETS = {"breast_cancer": _load_breast_cancer, "digits": _load_digits}


# -- splits: each maps (labels (n,), n_workers, numpy Generator, alpha) to owner (n,) -----------


def _split_iid(
    labels: np.ndarray, n_workers: int, gen: np.random.Generator, alpha: float
) -> np.ndarray:
    n = labels.size
    owner = np.empty(n, dtype=np.int64)
    owner[gen.permutation(n)] = np.arange(n) * n_workers // n  # near-equal shard sizes
    return owner


def _split_label(
    labels: np.ndarray, n_workers: int, gen: np.random.Generator, alpha: float
) -> np.ndarray:
    n = labels.size
    perm = gen.permutation(n)  # random order inside each label
    order = perm[np.argsort(labels[perm], kind="stable")]
    owner = np.empty(n, dtype=np.int64)
    owner[order] = np.arange(n) * n_workers // n  # contiguous chunks of the label-sorted data
    return owner


def _split_dirichlet(
    labels: np.ndarray, n_workers: int, gen: np.random.Generator, alpha: float
) -> np.ndarray:
    n = labels.size
    owner = np.empty(n, dtype=np.int64)
    for _ in range(1000):  # redraw until no worker is empty (a construction-time loop)
        for c in np.unique(labels):
            idx = gen.permutation(np.flatnonzero(labels == c))
            p = gen.dirichlet(np.full(n_workers, alpha))  # (N,) class-c proportions per worker
            cuts = np.floor(np.cumsum(p)[:-1] * idx.size).astype(np.int64)  # (N-1,)
            owner[idx] = np.searchsorted(cuts, np.arange(idx.size), side="right")
        if np.bincount(owner, minlength=n_workers).min() >= 1:
            return owner
    raise ValueError(
        f"Invalid alpha: {alpha!r} (the Dirichlet split left a worker without data "
        f"in 1000 draws; raise alpha or lower n_workers={n_workers})"
    )


_SPLITS = {"iid": _split_iid, "label": _split_label, "dirichlet": _split_dirichlet}


@PROBLEMS.register
class LogisticRegression(FiniteSumProblem):
    r"""L2-regularised logistic regression on a real data set, split over workers.

    With features :math:`a_s` (standardised to mean 0 and variance 1 over the whole data set,
    plus a constant 1 when ``fit_intercept``), labels :math:`y_s \in \{-1, +1\}` and
    :math:`z_s = y_s a_s`,

    .. math::

        f_s(x) &= \log(1 + \exp(-z_s^\top x)) + (\mathrm{reg}/2) \|x\|^2, \\
        f_i(x) &= \frac{1}{n_i} \sum_{s \in S_i} f_s(x), \qquad
            f(x) = \frac{1}{N} \sum_i f_i(x),

    (see ``FiniteSumProblem``: each worker weighs :math:`1/N` even when shard sizes differ).
    With :math:`\sigma(t) = 1/(1 + e^{-t})` and :math:`w_s = 1/(N n_{i(s)})`:

    .. math::

        \nabla f(x) &= -\sum_s w_s\, \sigma(-z_s^\top x)\, z_s + \mathrm{reg}\, x, \\
        \nabla^2 f(x) &= \sum_s w_s\, \sigma(z_s^\top x)\, \sigma(-z_s^\top x)\, z_s z_s^\top
            + \mathrm{reg}\, I.

    :math:`\mathrm{reg} > 0` makes f reg-strongly convex with a unique minimiser (the
    intercept is regularised too), computed at construction by damped Newton in float64 and
    stored as ``minimizer``/``min_value``. f is L-smooth, i.e. :math:`(L, 0)`-smooth, with
    :math:`L = \lambda_{\max}(\sum_s w_s z_s z_s^\top)/4 + \mathrm{reg}` (``smoothness``): as
    :math:`\sigma(m)\sigma(-m) \le 1/4`, :math:`\nabla^2 f(x) \preceq \nabla^2 f(0)` (every
    margin is 0 at x = 0), so L is the largest Hessian norm, attained at 0. Pairs with
    :math:`L_1 > 0` may lower :math:`L_0`, never below :math:`\|\nabla^2 f(x^*)\|_2` (the
    gradient vanishes at the minimiser); they have no closed form:
    ``sdeopt.analysis.smoothness_profile`` measures them.

    Splits (``split``), all seeded by ``seed`` through a numpy Generator:
      - ``"iid"``: a random permutation cut into N near-equal shards.
      - ``"label"``: the data sorted by label (random order within a label) cut into N
        contiguous near-equal shards, so most workers see one label only (pathological
        non-IID split of McMahan et al. 2017).
      - ``"dirichlet"``: for each class, worker proportions
        :math:`\sim \mathrm{Dirichlet}(\alpha \mathbf{1}_N)`
        (Hsu, Qi, Brown 2019); small alpha is very heterogeneous, shard sizes vary.

    Args:
        n_workers: :math:`N \ge 1`, or None for homogeneous (every worker sees all the data;
            ``worker_grads`` returns (B, 1, d)).
        split: "iid", "label" or "dirichlet" (ignored when ``n_workers`` is None).
        reg: the L2 weight, > 0.
        dataset: "breast_cancer" (569 × 30) or "digits" (1797 × 64, digits 0-4 vs 5-9),
            both shipped with scikit-learn (no download).
        fit_intercept: append a constant feature (:math:`d = p + 1`).
        seed: seed of the split, an int >= 0.
        alpha: Dirichlet concentration > 0 (used by split="dirichlet").

    Attributes:
        features: (n, d) standardised features :math:`a_s`; labels: (n,) :math:`\pm 1`.

    Example:
        >>> prob = LogisticRegression(n_workers=4, split="label")
        >>> prob.worker_grads(prob.minimizer.unsqueeze(0)).shape
        torch.Size([1, 4, 31])

    References:
        Wolberg, Street, Mangasarian, "Breast cancer diagnosis and prognosis via linear
        programming", Operations Research 43 (1995) (the data set; UCI ML repository).
        Alpaydin, Kaynak, "Optical recognition of handwritten digits", UCI ML repository (1998).
        McMahan et al., "Communication-efficient learning of deep networks from decentralized
        data", AISTATS 2017 (label-sorted split). Hsu, Qi, Brown, "Measuring the effects of
        non-identical data distribution for federated visual classification", arXiv:1909.06335
        (Dirichlet split).
    """

    derived_keys = ("dim", "n_samples", "shard_sizes")

    def __init__(
        self,
        n_workers: int | None = None,
        *,
        split: str = "iid",
        reg: float = 1e-3,
        dataset: str = "breast_cancer",
        fit_intercept: bool = True,
        seed: int = 0,
        alpha: float = 0.5,
    ) -> None:
        if n_workers is not None:
            n_workers = check_int("n_workers", n_workers, minimum=1)
        if not isinstance(split, str) or split not in _SPLITS:
            raise ValueError(f"Invalid split: {split!r} (use one of {sorted(_SPLITS)})")
        if not isinstance(dataset, str) or dataset not in _DATASETS:
            raise ValueError(f"Invalid dataset: {dataset!r} (use one of {sorted(_DATASETS)})")
        if not isinstance(fit_intercept, bool):
            raise ValueError(f"Invalid fit_intercept: {fit_intercept!r} (must be True or False)")
        self.reg = check_positive("reg", reg)
        self.seed = check_int("seed", seed, minimum=0)
        self.alpha = check_positive("alpha", alpha)
        self.split = split
        self.dataset = dataset
        self.fit_intercept = fit_intercept
        self.n_workers = n_workers

        a, y = _DATASETS[dataset]()  # (n, p), (n,)
        std = a.std(axis=0)
        a = (a - a.mean(axis=0)) / np.where(std > 0, std, 1.0)  # constant pixels stay 0
        if fit_intercept:
            a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)  # (n, d)
        n = a.shape[0]
        if n_workers is not None and n_workers > n:
            raise ValueError(
                f"Invalid n_workers: {n_workers!r} (more workers than the {n} samples "
                f"of dataset={dataset!r})"
            )
        self.dim = a.shape[1]
        self.features = torch.as_tensor(a)  # (n, d)
        self.labels = torch.as_tensor(y)  # (n,)
        self._signed = self.labels.unsqueeze(-1) * self.features  # (n, d) z_s = y_s a_s

        if n_workers is None:
            self._set_shards(np.zeros(n, dtype=np.int64), 1)
        else:
            gen = np.random.default_rng(self.seed)
            self._set_shards(_SPLITS[split](y, n_workers, gen, self.alpha), n_workers)
        self._shard_signed = self._signed[self.shard_index] * self.shard_mask.unsqueeze(
            -1
        )  # (S, n_max, d)

        self.minimizer, self.min_value = self._solve()
        gram = self._signed.T @ (self.sample_weights.unsqueeze(-1) * self._signed)  # (d, d)
        self.smoothness = float(torch.linalg.eigvalsh(gram)[-1]) / 4 + self.reg

    def _solve(self, tol: float = 1e-12, max_iter: int = 100) -> tuple[torch.Tensor, float]:
        """The minimiser by damped Newton (Armijo backtracking) in float64."""
        z, w = self._signed, self.sample_weights  # (n, d), (n,)
        x = torch.zeros(1, self.dim, dtype=torch.float64)  # (1, d)
        eye = torch.eye(self.dim, dtype=torch.float64)  # (d, d)
        for _ in range(max_iter):
            g = self.grad(x)  # (1, d)
            if float(g.abs().max()) < tol:
                break
            m = (x @ z.T)[0]  # (n,)
            curv = w * torch.sigmoid(m) * torch.sigmoid(-m)  # (n,)
            hess = z.T @ (curv.unsqueeze(-1) * z) + self.reg * eye  # (d, d)
            step = torch.linalg.solve(hess, g[0])  # (d,)
            f0, t = float(self.loss(x)), 1.0
            slope = float(g[0] @ step)
            while float(self.loss(x - t * step)) > f0 - 1e-4 * t * slope and t > 1e-10:
                t *= 0.5
            x = x - t * step
        return x[0], float(self.loss(x))

    # -- per-sample quantities ---------------------------------------------------------------

    def _margins(self, x: torch.Tensor) -> torch.Tensor:
        return x @ _cast(self._signed, x).T  # (B, n), z_sᵀ x

    def per_sample_losses(self, x: torch.Tensor) -> torch.Tensor:
        reg_term = 0.5 * self.reg * (x * x).sum(dim=-1, keepdim=True)  # (B, 1)
        return F.softplus(-self._margins(x)) + reg_term  # (B, n)

    def per_sample_grads(self, x: torch.Tensor) -> torch.Tensor:
        c = -torch.sigmoid(-self._margins(x))  # (B, n), dℓ/dm
        return c.unsqueeze(-1) * _cast(self._signed, x) + self.reg * x.unsqueeze(1)  # (B, n, d)

    def _shard_square_sums(self, x: torch.Tensor) -> torch.Tensor:
        c = -torch.sigmoid(-self._margins(x))  # (B, n)
        return self._glm_square_sums(x, c, _cast(self._signed, x), self.reg)

    def _weighted_grads(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        c = -torch.sigmoid(-self._margins(x))  # (B, n)
        if self.n_workers is None:
            # one shard in data order: every worker row contracts against all the data
            out = (weights * c.unsqueeze(1)) @ _cast(self._signed, x)  # (B, M, d)
        else:
            cp = c[:, self.shard_index.to(x.device)]  # (B, N, n_max); padding has zero weight
            out = torch.einsum(
                "bik,ikd->bid", weights * cp, _cast(self._shard_signed, x)
            )  # (B, N, d)
        return out + self.reg * weights.sum(dim=-1, keepdim=True) * x.unsqueeze(1)

    # -- the objective (flat contractions, cheaper than the per-sample tensors) ---------------

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        data = F.softplus(-self._margins(x)) @ _cast(self.sample_weights, x)  # (B,)
        return data + 0.5 * self.reg * (x * x).sum(dim=-1)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        c = -torch.sigmoid(-self._margins(x)) * _cast(self.sample_weights, x)  # (B, n)
        return c @ _cast(self._signed, x) + self.reg * x  # (B, d)

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        z = _cast(self._signed, x)  # (n, d)
        m = x @ z.T  # (B, n)
        curv = torch.sigmoid(m) * torch.sigmoid(-m) * _cast(self.sample_weights, x)  # (B, n)
        return (curv * (v @ z.T)) @ z + self.reg * v  # (B, d)

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(
            dataset=self.dataset,
            split=self.split,
            reg=self.reg,
            fit_intercept=self.fit_intercept,
            seed=self.seed,
        )
        if self.n_workers is not None and self.split == "dirichlet":
            cfg["alpha"] = self.alpha
        return cfg
