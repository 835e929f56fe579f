"""Least squares as a finite sum: a Gaussian design or scikit-learn's bundled diabetes data."""

from __future__ import annotations

import numpy as np
import torch

from sdeopt._validation import check_int, check_nonnegative, check_positive
from sdeopt.problems.base import PROBLEMS, _cast
from sdeopt.problems.finite_sum import _SPLITS, FiniteSumProblem


@PROBLEMS.register
class LeastSquares(FiniteSumProblem):
    r"""(Ridge) least squares over n samples split across workers.

    .. math::

        f_s(x) = \tfrac12 (a_s^\top x - y_s)^2 + \tfrac{\mathrm{reg}}{2} \|x\|^2, \qquad
        \nabla f_s(x) = (a_s^\top x - y_s)\, a_s + \mathrm{reg}\, x,

    with :math:`f = \sum_s w_s f_s` (``FiniteSumProblem``: every worker weighs :math:`1/N`).
    The Hessian :math:`\sum_s w_s a_s a_s^\top + \mathrm{reg}\, I` is constant, the minimiser the
    weighted normal equations' solution. f is L-smooth, i.e. :math:`(L, 0)`-smooth, with
    :math:`L = \lambda_{\max}(\sum_s w_s a_s a_s^\top) + \mathrm{reg}` (``smoothness``), and no
    :math:`(L_0, L_1)` pair does better (the gradient vanishes at the minimiser, so
    :math:`L_0 \ge L`). Per-sample gradients and their weighted sums have
    closed forms (a minibatch step and its SDE's low-rank diffusion cost O(n d) per run).

    Designs:
        ``"gaussian"``: :math:`a_s \sim \mathcal{N}(0, I_d)`, :math:`y_s = a_s^\top x_\star +
        \mathrm{noise}\cdot\varepsilon_s` with :math:`x_\star \sim \mathcal{N}(0, I_d/d)`, drawn
        from ``seed``.
        ``"diabetes"``: scikit-learn's bundled diabetes data (442 × 10, features standardised,
        target centred and scaled to unit variance).

    Args:
        n_workers: N, or None (homogeneous: every worker sees all the data).
        design: "gaussian" or "diabetes".
        n_samples: n for the Gaussian design (>= 2, default 512); the diabetes data has 442.
        dim: d for the Gaussian design (>= 1, default 10); the diabetes data has 10.
        noise: the label noise of the Gaussian design (>= 0, default 0.5).
        reg: ridge parameter (>= 0).
        split: how samples go to workers ("iid", "label": by the sign of the target, "dirichlet").
        seed: the design's and the split's random seed.
        alpha: the Dirichlet split's concentration.

    Example:
        >>> prob = LeastSquares(design="gaussian", n_samples=200, dim=5)
        >>> prob.loss(prob.minimizer.unsqueeze(0)).shape
        torch.Size([1])
    """

    derived_keys = ("shard_sizes",)

    def __init__(
        self,
        n_workers: int | None = None,
        *,
        design: str = "gaussian",
        n_samples: int | None = None,
        dim: int | None = None,
        noise: float | None = None,
        reg: float = 0.0,
        split: str = "iid",
        seed: int = 0,
        alpha: float = 0.5,
    ) -> None:
        if n_workers is not None:
            n_workers = check_int("n_workers", n_workers, minimum=1)
        if design not in ("gaussian", "diabetes"):
            raise ValueError(f"Invalid design: {design!r} (use 'gaussian' or 'diabetes')")
        if not isinstance(split, str) or split not in _SPLITS:
            raise ValueError(f"Invalid split: {split!r} (use one of {sorted(_SPLITS)})")
        self.n_workers, self.design, self.split = n_workers, design, split
        self.noise = check_nonnegative("noise", 0.5 if noise is None else noise)
        self.reg = check_nonnegative("reg", reg)
        self.seed = check_int("seed", seed, minimum=0)
        self.alpha = check_positive("alpha", alpha)
        gen = np.random.default_rng(self.seed)
        if design == "gaussian":
            n = check_int("n_samples", 512 if n_samples is None else n_samples, minimum=2)
            d = check_int("dim", 10 if dim is None else dim, minimum=1)
            a = gen.standard_normal((n, d))
            y = a @ (gen.standard_normal(d) / np.sqrt(d)) + self.noise * gen.standard_normal(n)
        else:
            from sklearn.datasets import load_diabetes

            data = load_diabetes()
            a = np.asarray(data.data, dtype=np.float64)
            a = (a - a.mean(0)) / a.std(0)
            y = np.asarray(data.target, dtype=np.float64)
            y = (y - y.mean()) / y.std()
            for name, value, actual in (
                ("n_samples", n_samples, a.shape[0]),
                ("dim", dim, a.shape[1]),
            ):
                if value is not None and value != actual:  # recorded by config(): must agree
                    raise ValueError(
                        f"Invalid {name}: {value!r} (the diabetes data has {name} = {actual})"
                    )
            if noise is not None:
                raise ValueError(f"Invalid noise: {noise!r} (a parameter of the Gaussian design)")
        if n_workers is not None and n_workers > a.shape[0]:
            raise ValueError(
                f"Invalid n_workers: {n_workers!r} (more workers than the {a.shape[0]} samples)"
            )
        self.dim = a.shape[1]
        self.features = torch.as_tensor(a)  # (n, d)
        self.targets = torch.as_tensor(y)  # (n,)
        if n_workers is None:
            self._set_shards(np.zeros(a.shape[0], dtype=np.int64), 1)
        else:
            self._set_shards(_SPLITS[split](np.sign(y), n_workers, gen, self.alpha), n_workers)
        w = self.sample_weights  # (n,)
        self._hessian = self.features.T @ (w.unsqueeze(-1) * self.features) + self.reg * torch.eye(
            self.dim, dtype=torch.float64
        )  # (d, d)
        rhs = self.features.T @ (w * self.targets)  # (d,)
        self.minimizer = torch.linalg.solve(self._hessian, rhs)  # (d,)
        self.min_value = float(self.loss(self.minimizer.unsqueeze(0))[0])
        self.smoothness = float(torch.linalg.eigvalsh(self._hessian)[-1])

    def _residuals(self, x: torch.Tensor) -> torch.Tensor:
        return x @ _cast(self.features, x).T - _cast(self.targets, x)  # (B, n)

    def per_sample_losses(self, x: torch.Tensor) -> torch.Tensor:
        reg_term = 0.5 * self.reg * (x * x).sum(dim=-1, keepdim=True)  # (B, 1)
        return 0.5 * self._residuals(x).square() + reg_term  # (B, n)

    def per_sample_grads(self, x: torch.Tensor) -> torch.Tensor:
        r = self._residuals(x)  # (B, n)
        return r.unsqueeze(-1) * _cast(self.features, x) + self.reg * x.unsqueeze(1)  # (B, n, d)

    def _shard_square_sums(self, x: torch.Tensor) -> torch.Tensor:
        return self._glm_square_sums(x, self._residuals(x), _cast(self.features, x), self.reg)

    def _weighted_grads(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        r = self._residuals(x)  # (B, n)
        feats = _cast(self.features, x)  # (n, d)
        idx = self.shard_index.to(x.device)  # (S, n_max)
        rp = r[:, idx]  # (B, S, n_max); padding has zero weight
        wr = weights.to(x.dtype) * rp  # (B, M, n_max) (M = S, or any number when homogeneous)
        if self.n_workers is None:
            out = wr @ feats  # (B, M, d): one shard in data order
        else:
            out = torch.einsum("bik,ikd->bid", wr, feats[idx])  # (B, N, d)
        return out + self.reg * weights.sum(dim=-1, keepdim=True).to(x.dtype) * x.unsqueeze(1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        data = 0.5 * self._residuals(x).square() @ _cast(self.sample_weights, x)  # (B,)
        return data + 0.5 * self.reg * (x * x).sum(dim=-1)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        r = self._residuals(x) * _cast(self.sample_weights, x)  # (B, n)
        return r @ _cast(self.features, x) + self.reg * x  # (B, d)

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v @ _cast(self._hessian, x)  # (B, d): the Hessian is symmetric and constant

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(design=self.design, reg=self.reg, split=self.split, seed=self.seed)
        if self.design == "gaussian":
            cfg["noise"] = self.noise
        if self.n_workers is not None and self.split == "dirichlet":
            cfg["alpha"] = self.alpha
        return cfg
