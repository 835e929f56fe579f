"""Quadratic objectives, diagonal or dense."""

from __future__ import annotations

import torch

from sdeopt.problems.base import (
    PROBLEMS,
    Problem,
    _as_vector,
    _cast,
    _short,
    _tensor_config,
)

# ---------------------------------------------------------------------------------------------
# Quadratic
# ---------------------------------------------------------------------------------------------


@PROBLEMS.register
class Quadratic(Problem):
    r"""Strongly convex quadratic :math:`f(x) = \tfrac12 (x - x^*)^\top H (x - x^*)`.

    :math:`\nabla f(x) = H (x - x^*)`, :math:`\nabla^2 f(x) = H`; minimiser :math:`x^*`,
    minimum 0. The problem is L-smooth, i.e. :math:`(L, 0)`-smooth, with
    :math:`L = \lambda_{\max}(H)` (``smoothness``), and :math:`\mu`-strongly convex with
    :math:`\mu = \lambda_{\min}(H) > 0`. No :math:`(L_0, L_1)` pair does better: the gradient
    vanishes at :math:`x^*`, so :math:`L_0 \ge \|H\|_2 = L`. Homogeneous: every worker sees the
    same f.

    H is given either as its diagonal (``diag``: all entries > 0, so that H is symmetric
    positive definite and :math:`x^*` is the unique minimiser) or as a dense symmetric positive
    definite matrix (``matrix``: symmetric up to a relative 1e-6, then symmetrised exactly;
    positive definiteness checked by a Cholesky factorisation). The diagonal path is
    purely elementwise, O(d) per run with no matrix product, so ``grad`` and ``hvp`` of row b of
    a batch are bitwise equal to evaluating run b alone (``loss`` too, as long as torch does
    not split a single row's sum over threads, i.e. for one thread or moderate d).

    Args:
        diag: (d,) the diagonal of H, every entry > 0. Exactly one of ``diag``/``matrix``.
        matrix: (d, d) a dense symmetric positive definite H.
        center: (d,) the minimiser :math:`x^*`; defaults to 0.

    Attributes:
        diag: (d,) tensor or None; matrix: (d, d) tensor or None; center: (d,) tensor.

    Example:
        >>> prob = Quadratic(diag=[1.0, 4.0])
        >>> prob.grad(torch.ones(3, 2, dtype=torch.float64))
        tensor([[1., 4.],
                [1., 4.],
                [1., 4.]], dtype=torch.float64)

    References:
        Nesterov, *Lectures on Convex Optimization* (2018), §2.1 (the quadratic model class).
    """

    def __init__(self, diag=None, *, matrix=None, center=None) -> None:
        if (diag is None) == (matrix is None):
            raise ValueError(
                f"Invalid diag/matrix: diag={_short(diag)}, matrix={_short(matrix)} (give "
                "exactly one of diag or matrix)"
            )
        self.diag: torch.Tensor | None = None
        self.matrix: torch.Tensor | None = None
        if diag is not None:
            h = _as_vector("diag", diag)  # (d,)
            if not bool((h > 0).all()):
                raise ValueError(
                    f"Invalid diag: {_short(diag)} (all entries must be > 0 so that H is "
                    "positive definite)"
                )
            self.diag = h
            self.dim = h.numel()
        else:
            self.matrix = self._check_matrix(matrix)  # (d, d)
            self.dim = self.matrix.shape[0]
        if center is None:
            self.center = torch.zeros(self.dim, dtype=torch.float64)  # (d,)
        else:
            self.center = _as_vector("center", center, self.dim)  # (d,)
        self.minimizer = self.center
        self._centered = bool((self.center != 0).any())  # skip x - 0 in the hot path
        self.min_value = 0.0

    @property
    def separable(self) -> bool:
        return self.diag is not None or self.dim == 1

    @staticmethod
    def _check_matrix(matrix) -> torch.Tensor:
        try:
            m = (
                torch.as_tensor(
                    matrix.detach() if isinstance(matrix, torch.Tensor) else matrix,
                    dtype=torch.float64,
                )
                .clone()
                .cpu()
            )
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"Invalid matrix: {_short(matrix)} (must be a square array of numbers)"
            ) from None
        if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
            raise ValueError(
                f"Invalid matrix: shape {tuple(m.shape)} (must be a non-empty square (d, d) matrix)"
            )
        if not bool(torch.isfinite(m).all()):
            raise ValueError("Invalid matrix: entries must be finite")
        scale = float(m.abs().max())
        asym = float((m - m.T).abs().max())
        if asym > 1e-6 * max(scale, 1e-300):  # rounding of a float32-built H passes
            raise ValueError(
                f"Invalid matrix: not symmetric (max |H - Hᵀ| = {asym:.3g}, max |H| = {scale:.3g})"
            )
        m = 0.5 * (m + m.T)  # exactly symmetric, so grad = (x - x*) H needs no transpose
        _, info = torch.linalg.cholesky_ex(m)
        if int(info) != 0:
            lam = float(torch.linalg.eigvalsh(m)[0])
            raise ValueError(
                f"Invalid matrix: not positive definite (Cholesky failed; smallest "
                f"eigenvalue {lam:.3g})"
            )
        return m

    @property
    def hessian(self) -> torch.Tensor:
        """:math:`H` as a dense (d, d) tensor."""
        if self.diag is not None:
            return torch.diag(self.diag)
        assert self.matrix is not None  # exactly one of diag/matrix (__init__)
        return self.matrix

    @property
    def eigenvalues(self) -> torch.Tensor:
        """The eigenvalues of :math:`H` in ascending order, (d,)."""
        if self.diag is not None:
            return torch.sort(self.diag).values
        assert self.matrix is not None  # exactly one of diag/matrix (__init__)
        return torch.linalg.eigvalsh(self.matrix)

    @property
    def smoothness(self) -> float:
        r""":math:`L = \lambda_{\max}(H)`."""
        return float(self.eigenvalues[-1])

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return x - _cast(self.center, x) if self._centered else x  # (B, d)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        r = self._residual(x)  # (B, d)
        if self.diag is not None:
            return 0.5 * (_cast(self.diag, x) * r * r).sum(dim=-1)  # (B,)
        assert self.matrix is not None  # exactly one of diag/matrix (__init__)
        return 0.5 * ((r @ _cast(self.matrix, x)) * r).sum(dim=-1)  # (B,)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        r = self._residual(x)  # (B, d)
        if self.diag is not None:
            return _cast(self.diag, x) * r  # (B, d)
        assert self.matrix is not None  # exactly one of diag/matrix (__init__)
        return r @ _cast(self.matrix, x)  # (B, d); H symmetric, so r H = (H r)ᵀ

    def hvp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.diag is not None:
            return _cast(self.diag, v) * v  # (B, d)
        assert self.matrix is not None  # exactly one of diag/matrix (__init__)
        return v @ _cast(self.matrix, v)  # (B, d)

    def config(self) -> dict:
        cfg = super().config()
        if self.diag is not None:
            cfg["diag"] = _tensor_config(self.diag)
        else:
            assert self.matrix is not None  # exactly one of diag/matrix (__init__)
            cfg["matrix"] = _tensor_config(self.matrix)
        cfg["center"] = _tensor_config(self.center)
        return cfg
