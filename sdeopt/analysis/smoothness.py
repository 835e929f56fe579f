r""":math:`(L_0, L_1)`-smoothness measured: Hessian norms against gradient norms at sampled points,
and the envelope :math:`L_0 + L_1 \|\nabla f\|` above them (docs/analysis.md).

f is :math:`(L_0, L_1)`-smooth when :math:`\|\nabla^2 f(x)\|_2 \le L_0 + L_1 \|\nabla f(x)\|_2`
for every x (Zhang, He, Sra, Jadbabaie, ICLR 2020); :math:`L`-smooth is the case
:math:`(L, 0)`. ``smoothness_profile`` measures both norms at given points or along recorded
trajectories and fits the envelope; ``fit_envelope`` fits one to any pairs of norms.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from sdeopt._jsonable import jsonable, to_json
from sdeopt._validation import check_device, check_int, check_nonnegative, check_positive
from sdeopt.analysis.metrics import alive
from sdeopt.problems import Problem
from sdeopt.trajectory import Trajectory

#: How ``fit_envelope`` chooses (L0, L1) when neither is given (stored in the profile's attrs).
FIT_CRITERION = (
    "minimise sum_k (L0 + L1 g_k) subject to L0 + L1 g_k >= h_k for every k, L0, L1 >= 0 "
    "(the envelope lowest at the mean sampled gradient norm)"
)
#: How ``smoothness_profile`` computes Hessian norms.
HESSIAN_METHODS = ("auto", "power", "diagonal")


# --- the envelope ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    r"""An :math:`(L_0, L_1)` envelope :math:`h \le L_0 + L_1 g` of sampled norm pairs.

    Attributes:
        L0, L1: the envelope's intercept and slope, both :math:`\ge 0`. It lies above every
            sampled pair: where rounding left a pair a few ulps above the fitted line, L0 is
            lifted to :math:`\max_k (h_k - L_1 g_k)`.
        L: :math:`\max_k h_k`, the L-smoothness constant over the sampled region (the envelope
            with :math:`L_1 = 0`).
        fit: "mean height" (the linear program of ``fit_envelope``), "given L1" or "given L0".
        n_points: the number of pairs fitted.
    """

    L0: float
    L1: float
    L: float
    fit: str
    n_points: int

    def __call__(self, grad_norm) -> np.ndarray:
        r""":math:`L_0 + L_1 g` at the gradient norms ``grad_norm`` (any shape)."""
        return self.L0 + self.L1 * np.asarray(grad_norm, dtype=np.float64)


def _norm_pairs(grad_norm, hessian_norm) -> tuple[np.ndarray, np.ndarray]:
    try:
        g = np.asarray(grad_norm, dtype=np.float64)
        h = np.asarray(hessian_norm, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            "Invalid grad_norm/hessian_norm: must be arrays of numbers, got "
            f"{type(grad_norm).__name__} and {type(hessian_norm).__name__}"
        ) from None
    for name, a in (("grad_norm", g), ("hessian_norm", h)):
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"Invalid {name}: shape {a.shape} (must be a non-empty 1-D array)")
        if not (np.isfinite(a).all() and (a >= 0).all()):
            raise ValueError(f"Invalid {name}: every entry must be finite and >= 0")
    if g.shape != h.shape:
        raise ValueError(
            f"Invalid hessian_norm: {h.size} values for {g.size} gradient norms (one each)"
        )
    return g, h


def _upper_hull(g: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the upper convex hull of the points that no line of slope >= 0 can ignore,
    by increasing g (and h).

    A point is dropped first when another has g' <= g and h' >= h: a line of slope >= 0 above
    the other is above it too. The rest (strictly increasing g and h, usually few) go through
    Andrew's monotone chain.
    """
    order = np.lexsort((-h, g))  # by g, the largest h first among equal g
    gs, hs = g[order], h[order]
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], hs[:-1]]))
    gs, hs = gs[hs > best_before], hs[hs > best_before]
    hull: list[int] = []
    for k in range(gs.size):
        # pop while the last two vertices and point k make no right turn (collinear included)
        while len(hull) >= 2:
            i, j = hull[-2], hull[-1]
            if (gs[j] - gs[i]) * (hs[k] - hs[i]) - (hs[j] - hs[i]) * (gs[k] - gs[i]) < 0:
                break
            hull.pop()
        hull.append(k)
    return gs[hull], hs[hull]


def fit_envelope(
    grad_norm, hessian_norm, *, L0: float | None = None, L1: float | None = None
) -> Envelope:
    r"""The :math:`(L_0, L_1)` envelope of pairs :math:`(g_k, h_k) = (\|\nabla f(x_k)\|,
    \|\nabla^2 f(x_k)\|)`.

    The envelopes lying above every pair form the set
    :math:`\{(L_0, L_1) \ge 0 : L_0 + L_1 g_k \ge h_k\ \forall k\}`, whose lower-left boundary
    is a trade-off curve: a smaller :math:`L_1` costs a larger :math:`L_0`. There is no single
    smallest envelope, so one criterion picks one:

    - neither given (the default): the linear program

      .. math::

          \min_{L_0, L_1 \ge 0} \sum_k (L_0 + L_1 g_k) \quad \text{subject to} \quad
          L_0 + L_1 g_k \ge h_k \ \forall k,

      i.e. the envelope lowest at the mean gradient norm :math:`\bar g`. Its solution is the
      edge above :math:`\bar g` of the upper convex hull of the pairs (it passes through two
      sampled pairs), or the horizontal line :math:`L_0 = \max_k h_k` when no pair right of
      :math:`\bar g` rises above that maximum, or the line through 0 and the steepest pair when
      the edge would cross the axis below 0. It is solved exactly (hull, then that edge) rather
      than by an LP solver, whose tolerance is relative to :math:`\max_k h_k` and would swamp
      an :math:`L_0` many orders smaller. When :math:`\bar g` falls on a hull vertex, every
      line through it between its two edges is optimal, and the left edge is returned.
    - ``L1`` given: the smallest :math:`L_0 = \max(0, \max_k (h_k - L_1 g_k))`.
    - ``L0`` given: the smallest :math:`L_1 = \max(0, \max_{g_k > 0} (h_k - L_0)/g_k)`;
      ``ValueError`` when a pair with :math:`g_k = 0` has :math:`h_k > L_0` (no slope helps).

    Sweeping ``L1`` (or ``L0``) traces the trade-off curve.

    Args:
        grad_norm: (n,) gradient norms :math:`g_k \ge 0`.
        hessian_norm: (n,) Hessian norms :math:`h_k \ge 0`.
        L0, L1: fix one of the two constants (at most one); each >= 0.

    Returns:
        ``Envelope`` with ``L0``, ``L1``, ``L`` = :math:`\max_k h_k` and ``fit``.

    Example:
        >>> env = fit_envelope([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])
        >>> (env.L0, env.L1, env.L)
        (1.0, 1.0, 3.0)
    """
    g, h = _norm_pairs(grad_norm, hessian_norm)
    L = float(h.max())
    if L0 is not None and L1 is not None:
        raise ValueError(f"Invalid L0/L1: L0={L0!r}, L1={L1!r} (fix at most one of them)")
    if L1 is not None:
        slope = check_nonnegative("L1", L1)
        return Envelope(
            L0=max(0.0, float((h - slope * g).max())),
            L1=slope,
            L=L,
            fit="given L1",
            n_points=g.size,
        )
    if L0 is not None:
        intercept = check_nonnegative("L0", L0)
        flat = (g == 0) & (h > intercept)
        if flat.any():
            raise ValueError(
                f"Invalid L0: {L0!r} (a pair with zero gradient norm has Hessian norm "
                f"{float(h[flat].max()):.6g} > L0; no L1 makes the envelope hold)"
            )
        moving = g > 0
        slope = float(((h[moving] - intercept) / g[moving]).max()) if moving.any() else 0.0
        return Envelope(L0=intercept, L1=max(0.0, slope), L=L, fit="given L0", n_points=g.size)
    gv, hv = _upper_hull(g, h)
    mean = float(g.mean())
    right = int(np.searchsorted(gv, mean, side="left"))  # first vertex with g >= mean
    if right == 0 or right == gv.size:
        # g_0 = min g >= mean: all g equal; right == size: no vertex at or past the mean
        slope, intercept = 0.0, L
    else:
        slope = float((hv[right] - hv[right - 1]) / (gv[right] - gv[right - 1]))
        intercept = float(hv[right - 1] - slope * gv[right - 1])
        if intercept < 0:  # the constraint L0 >= 0 binds: the line through 0, as steep as needed
            intercept, slope = 0.0, float((h[g > 0] / g[g > 0]).max())
    # rounding of the edge through two pairs may leave a third a few ulps above it
    intercept = max(intercept, float((h - slope * g).max()), 0.0)
    return Envelope(L0=intercept, L1=slope, L=L, fit="mean height", n_points=g.size)


# --- Hessian norms by power iteration ----------------------------------------------------------


def _power_iteration(
    problem: Problem, x: torch.Tensor, v: torch.Tensor, n_iter: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`\|\nabla^2 f(x)\|_2` of each row by power iteration on Hessian-vector products.

    Args: x (B, d), v (B, d) unit start vectors. Returns: the norm estimates (B,) and the
    residuals (B,).

    :math:`\sigma_k = \|H v_k\|` with :math:`v_{k+1} = H v_k / \sigma_k`. As
    :math:`\sigma_k^2 = \langle v_k, H^2 v_k\rangle` is the Rayleigh quotient of :math:`H^2`,
    :math:`\sigma_k` never exceeds :math:`\|H\|_2`, grows with k, and converges to the largest
    :math:`|\lambda|` even where H is indefinite with :math:`\pm\lambda` both eigenvalues (where
    :math:`v_k` itself keeps oscillating). The residual is that of :math:`v_k` as an eigenvector
    of :math:`H^2`, :math:`\|H^2 v_k - \sigma_k^2 v_k\| / \sigma_k^2
    = \|H v_{k+1} - \sigma_k v_k\| / \sigma_k`, one Hessian-vector product per iteration.
    """
    w = problem.hvp(x, v)  # (B, d)
    sigma = torch.linalg.vector_norm(w, dim=-1)  # (B,)
    residual = torch.full_like(sigma, math.inf)  # (B,)
    for _ in range(n_iter):
        # H v_0 = 0 for a random v_0 means H = 0 (almost surely): the norm is 0, exactly
        zero = sigma == 0  # (B,)
        safe = torch.where(zero, torch.ones_like(sigma), sigma)  # (B,)
        v_next = torch.where(zero.unsqueeze(-1), v, w / safe.unsqueeze(-1))  # (B, d)
        w_next = problem.hvp(x, v_next)  # (B, d)
        gap = torch.linalg.vector_norm(w_next - sigma.unsqueeze(-1) * v, dim=-1)  # (B,)
        residual = torch.where(zero, torch.zeros_like(sigma), gap / safe)
        v, w = v_next, w_next
        sigma = torch.linalg.vector_norm(w, dim=-1)
        if bool((residual <= tol).all()):  # one sync per iteration, not per point
            break
    return sigma, residual


# --- points ----------------------------------------------------------------------------------


def _given_points(x, dim: int) -> np.ndarray:
    try:
        if isinstance(x, torch.Tensor):
            a = x.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
        else:
            a = np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"Invalid x: {type(x).__name__} (must be an array of numbers, (n, d) or (d,))"
        ) from None
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] != dim:
        raise ValueError(
            f"Invalid x: shape {np.shape(x)} (must be (n, d) or (d,) with d = problem.dim = "
            f"{dim}, n >= 1)"
        )
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise ValueError(
            f"Invalid x: {int(bad.sum())} of {a.shape[0]} points have non-finite entries "
            f"(the first at row {int(np.flatnonzero(bad)[0])})"
        )
    return a


def _recorded_points(trajectory, dim: int) -> tuple[np.ndarray, dict, dict]:
    """The kept iterates (n, d) of a dataset or Trajectory, their coordinates along ``point``,
    and the source's attrs."""
    import xarray as xr

    if isinstance(trajectory, Trajectory):
        if trajectory.x is None:
            raise ValueError(
                "Invalid trajectory: it holds no iterates x (simulate or solve with record_x=True)"
            )
        trajectory = trajectory.to_dataset()
    if not isinstance(trajectory, xr.Dataset):
        raise ValueError(
            f"Invalid trajectory: {type(trajectory).__name__} (must be a Dataset of the schema "
            "of docs/schema.md, e.g. from compare(), or a Trajectory)"
        )
    ds = trajectory
    if "x" not in ds.data_vars or "coord" not in ds["x"].dims:
        raise ValueError(
            "Invalid trajectory: the dataset has no iterates 'x' over 'coord' (run with "
            "record_x=True)"
        )
    xa = ds["x"]
    if xa.sizes["coord"] != dim:
        raise ValueError(
            f"Invalid trajectory: its x has {xa.sizes['coord']} coordinates, the problem "
            f"dim = {dim}"
        )
    dims = [str(d) for d in xa.dims if d != "coord"]
    xa = xa.transpose(*dims, "coord")
    shape = tuple(xa.sizes[d] for d in dims)
    if ("blowup_step" in ds or "diverged" in ds) and "step" in ds.coords:
        # frozen runs repeat their last value from the blow-up on: those are not visited points
        keep = alive(ds).broadcast_like(xa.isel(coord=0, drop=True)).transpose(*dims).values
    else:
        keep = np.ones(shape, dtype=bool)
    flat = np.flatnonzero(np.asarray(keep, dtype=bool).reshape(-1))
    if flat.size == 0:
        raise ValueError("Invalid trajectory: no recorded point is left (every run blew up)")
    values = np.asarray(xa.values, dtype=np.float64).reshape(-1, dim)[flat]  # (n, d)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise ValueError(
            f"Invalid trajectory: {int(bad.sum())} kept points have non-finite entries"
        )
    index = np.unravel_index(flat, shape)
    coords: dict = {}
    for name, c in xa.coords.items():
        if "coord" in c.dims or not c.dims or not set(c.dims) <= set(dims):
            continue
        own = [d for d in dims if d in c.dims]  # e.g. time on step
        coords[str(name)] = (
            "point",
            c.transpose(*own).values[tuple(index[dims.index(d)] for d in own)],
        )
    for i, d in enumerate(dims):
        coords.setdefault(d, ("point", index[i]))
    return values, coords, dict(ds.attrs)


# --- the profile ------------------------------------------------------------------------------


def smoothness_profile(
    problem: Problem,
    x=None,
    *,
    trajectory=None,
    method: str = "auto",
    n_iter: int = 500,
    tol: float = 1e-6,
    seed: int = 0,
    chunk_size: int = 4096,
    device: str | torch.device = "cpu",
):
    r"""Hessian norms against gradient norms at sampled points, and their
    :math:`(L_0, L_1)` envelope.

    At each point :math:`x_k`: :math:`g_k = \|\nabla f(x_k)\|_2` and
    :math:`h_k = \|\nabla^2 f(x_k)\|_2 = \max_i |\lambda_i(\nabla^2 f(x_k))|` (the spectral
    norm; for non-convex f the Hessian may be indefinite and the largest eigenvalue in
    magnitude may be negative). Where the problem is ``separable`` (a diagonal Hessian),
    ``method="auto"`` reads it exactly: :math:`h_k = \max_j |(\nabla^2 f(x_k)\, \mathbf 1)_j|`.
    Otherwise (and with ``method="power"``) :math:`h_k` comes from power iteration on
    ``problem.hvp``, batched over points, from a random unit start vector:
    :math:`\sigma = \|H v\|`, :math:`v \leftarrow H v / \sigma`, for at most ``n_iter``
    iterations or until every point's residual :math:`\|H^2 v - \sigma^2 v\| / \sigma^2` is at
    most ``tol``; :math:`\sigma^2` is then within ``tol`` (relative) of an eigenvalue of
    :math:`H^2`, the largest unless the start vector was nearly orthogonal to its eigenvector
    (probability 0). Iterating on H and measuring :math:`\|Hv\|` targets the largest
    :math:`|\lambda|` whatever its sign, even where :math:`\pm\lambda` are both eigenvalues.
    The estimate never exceeds the true norm (it is a Rayleigh quotient of :math:`H^2`), so a
    point that has not converged is an underestimate: it is flagged (``converged`` False),
    counted in the attrs, reported by a ``RuntimeWarning``, and kept in the fit. With
    :math:`r = |\lambda_2| / |\lambda_1|` the two largest magnitudes, the estimate's relative
    error shrinks like :math:`r^{2k}` after k iterations and the residual like :math:`r^k`:
    slowly where r is near 1 (``n_iter=500`` reaches ``tol=1e-6`` for r up to about 0.97).

    The envelope is ``fit_envelope`` of the pairs: the :math:`(L_0, L_1)` lowest at the mean
    gradient norm among those with :math:`h_k \le L_0 + L_1 g_k` at every point (the linear
    program :math:`\min \sum_k (L_0 + L_1 g_k)`); it is one point of a trade-off curve, not the
    only envelope (``fit_envelope(..., L1=...)`` gives the others). ``L`` is
    :math:`\max_k h_k`, the L-smoothness constant over the sampled region. The constants
    describe the sampled points only: every :math:`(L_0, L_1)` valid for f everywhere is valid
    for the samples, not conversely, and ``L`` never exceeds :math:`\sup_x \|\nabla^2 f(x)\|`.

    Args:
        problem: the objective.
        x: points (n, d) or one point (d,), finite. Exactly one of ``x`` and ``trajectory``.
        trajectory: recorded iterates: a Dataset of docs/schema.md with ``x`` (from
            ``compare(..., record_x=True)`` or ``Trajectory.to_dataset()``, any extra sweep
            dims allowed) or a ``Trajectory`` with ``x``. Every recorded (model, step, run) is
            a point, except those of a run from its blow-up on (``metrics.alive``: a frozen run
            repeats its last value). Select a subset first with ``ds.sel``/``ds.isel``.
        method: "auto" (exact on separable problems, power iteration otherwise), "power", or
            "diagonal" (separable problems only).
        n_iter: the most power iterations, >= 1.
        tol: the residual at which a point counts as converged, > 0.
        seed: seed of the random start vectors (one (n, d) draw, so the result does not depend
            on ``chunk_size``).
        chunk_size: points per batch of Hessian-vector products (memory: that many rows of x,
            times what ``problem.hvp`` needs per row).
        device: where the products are computed, in float64.

    Returns:
        ``xarray.Dataset`` over the dim ``point``: ``grad_norm`` and ``hessian_norm`` (float64),
        ``residual`` and ``converged`` per point; the 0-d variables ``L0``, ``L1`` and ``L``;
        for a trajectory the coordinates ``model``, ``step``, ``run`` (and ``time``,
        ``lr_sum``, any sweep dims) along ``point``, saying where each point came from. attrs:
        ``fit`` (the criterion), ``method`` ("diagonal" or "power"), ``n_iter``, ``tol``,
        ``seed``, ``n_not_converged``, ``problem`` (JSON), and ``source_config`` (a
        trajectory's ``config`` attr).

    Raises:
        ValueError: naming ``x`` or ``trajectory`` for points of the wrong dimension, non-finite
            points, a dataset without ``x``; naming ``problem`` where its gradient or Hessian is
            not finite at a point.

    Example:
        >>> import sdeopt as so
        >>> prof = so.analysis.smoothness_profile(so.problems.ExpSum(1), [[-1.0], [0.0], [2.0]])
        >>> round(float(prof["L0"]), 12), round(float(prof["L1"]), 12)
        (0.0, 1.0)

    References:
        Zhang, He, Sra, Jadbabaie, "Why gradient clipping accelerates training: a theoretical
        justification for adaptivity", ICLR 2020 (the condition, and its measurement along
        training trajectories). Gorbunov et al., "Methods for convex (L0,L1)-smooth
        optimization: clipping, acceleration, and adaptivity", arXiv:2409.14989.
        Golub, Van Loan, *Matrix Computations* (4th ed.), §8.2.1 (the power method).
    """
    import xarray as xr

    if not isinstance(problem, Problem):
        raise ValueError(f"Invalid problem: {type(problem).__name__} (must be a Problem)")
    n_iter = check_int("n_iter", n_iter, minimum=1)
    tol = check_positive("tol", tol)
    seed = check_int("seed", seed, minimum=0)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    device = check_device(device)
    if not isinstance(method, str) or method not in HESSIAN_METHODS:
        raise ValueError(f"Invalid method: {method!r} (use one of {list(HESSIAN_METHODS)})")
    if method == "diagonal" and not problem.separable:
        raise ValueError(
            f"Invalid method: 'diagonal' needs a separable problem (a diagonal Hessian); this "
            f"{type(problem).__name__} is not: use 'power'"
        )
    diagonal = method == "diagonal" or (method == "auto" and problem.separable)
    if (x is None) == (trajectory is None):
        raise ValueError(
            "Invalid x/trajectory: give exactly one, the points x (n, d) or a recorded trajectory"
        )
    coords: dict = {}  # where each point came from, along `point`
    source: dict = {}  # the trajectory's attrs
    if x is not None:
        points = _given_points(x, problem.dim)
    else:
        points, coords, source = _recorded_points(trajectory, problem.dim)
    n = points.shape[0]
    prob = problem.to(device, torch.float64)
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randn(n, problem.dim, generator=gen, dtype=torch.float64)  # (n, d)
    starts = starts / torch.linalg.vector_norm(starts, dim=-1, keepdim=True)
    g, h, r = np.empty(n), np.empty(n), np.empty(n)
    for lo in range(0, n, chunk_size):
        part = slice(lo, min(lo + chunk_size, n))
        xc = torch.as_tensor(points[part], device=device)  # (b, d)
        if diagonal:
            # hvp(x, 1) is the diagonal of a diagonal Hessian, whose norm is its largest |entry|
            sigma = prob.hvp(xc, torch.ones_like(xc)).abs().amax(dim=-1)  # (b,)
            residual = torch.zeros_like(sigma)
        else:
            sigma, residual = _power_iteration(prob, xc, starts[part].to(device), n_iter, tol)
        g[part] = torch.linalg.vector_norm(prob.grad(xc), dim=-1).cpu().numpy()
        h[part], r[part] = sigma.cpu().numpy(), residual.cpu().numpy()
    bad = ~(np.isfinite(g) & np.isfinite(h))
    if bad.any():
        raise ValueError(
            f"Invalid problem: its gradient or Hessian is not finite at {int(bad.sum())} of "
            f"{n} points (the first at point {int(np.flatnonzero(bad)[0])}); drop them first"
        )
    converged = r <= tol
    n_bad = int((~converged).sum())
    if n_bad:
        warnings.warn(
            f"smoothness_profile: power iteration did not converge at {n_bad} of {n} points "
            f"within n_iter={n_iter} (largest residual {float(r.max()):.3g} > tol={tol:g}); "
            "their Hessian norms are underestimates",
            RuntimeWarning,
            stacklevel=2,
        )
    env = fit_envelope(g, h)
    data = {
        "grad_norm": ("point", g, {"long_name": "gradient norm ‖∇f(x)‖₂"}),
        "hessian_norm": (
            "point",
            h,
            {"long_name": "Hessian spectral norm ‖∇²f(x)‖₂ (power iteration)"},
        ),
        "residual": ("point", r, {"long_name": "power-iteration residual ‖H²v − σ²v‖/σ²"}),
        "converged": ("point", converged),
        "L0": ((), env.L0, {"long_name": "envelope intercept L0"}),
        "L1": ((), env.L1, {"long_name": "envelope slope L1"}),
        "L": ((), env.L, {"long_name": "max Hessian norm over the points"}),
    }
    attrs = {
        "fit": FIT_CRITERION,
        "method": "diagonal" if diagonal else "power",
        "n_iter": n_iter,
        "tol": tol,
        "seed": seed,
        "n_not_converged": n_bad,
        "problem": to_json(jsonable(problem.config())),
    }
    if "config" in source:
        attrs["source_config"] = source["config"]
    return xr.Dataset(data, coords={"point": np.arange(n), **coords}, attrs=attrs)
