r"""Special functions computed in torch, batched and differentiable where it matters.

``student_t_cdf``: the CDF of Student's t law for every :math:`\nu > 0`, by the continued
fraction of the regularized incomplete beta function (docs/models.md uses it for DSignSGD's sign
probabilities).
"""

from __future__ import annotations

import functools
import math

import torch

from sdeopt import _fuse

# Number of pairs M of continued-fraction terms for the Student-t CDF, by nu (upper bound of a
# range) and precision. Measured against a 100-pair evaluation on |t| in [1e-8, 1e8] plus a
# dense grid around the branch switch, for nu from 0.01 to 1e15: the truncation error stays
# below 1e-15 (float64 table) and 1e-8 (float32 table) with a margin of >= 2 pairs. The count
# saturates as nu grows (about 50 pairs reach 1e-15 for every nu >= 1e3), so every nu > 0 is
# served at a bounded cost.
_T_CDF_PAIRS = {
    torch.float64: (
        (2.0, 14),
        (5.0, 16),
        (12.0, 20),
        (30.0, 25),
        (100.0, 34),
        (200.0, 40),
        (500.0, 46),
        (1000.0, 49),
        (math.inf, 54),
    ),
    torch.float32: ((1.0, 7), (5.0, 8), (12.0, 10), (30.0, 12), (100.0, 14), (math.inf, 16)),
}


def log_beta_half(a: float) -> float:
    r""":math:`\log B(a, 1/2)`, accurate also for huge a (no cancellation between lgamma
    values)."""
    if a < 50.0:
        return math.lgamma(a) + math.lgamma(0.5) - math.lgamma(a + 0.5)
    # lgamma(a) - lgamma(a + 1/2) from the difference of the two Stirling series, with the
    # (a + 1/2) log(a + 1/2) term expanded by log1p; the next Stirling term is < 1e-15 here.
    h = a + 0.5
    series = (
        (1 / (12 * a) - 1 / (12 * h))
        - (1 / (360 * a**3) - 1 / (360 * h**3))
        + (1 / (1260 * a**5) - 1 / (1260 * h**5))
    )
    return math.lgamma(0.5) - 0.5 * math.log(a) - a * math.log1p(0.5 / a) + 0.5 + series


@functools.lru_cache(maxsize=64)
def _beta_cf_pairs(a: float, b: float, n_pairs: int) -> tuple[tuple[float, float, float], ...]:
    """Coefficients of the continued fraction of I_x(a, b), grouped by pairs m = 0 .. M-1.

    I_x(a, b) = x^a (1-x)^b / (a B(a, b)) · 1/(1 + d_1/(1 + d_2/(1 + ...))) with
    d_{2m+1} = c_odd(m) x, d_{2m+2} = c_even(m) x (Numerical Recipes eq. 6.4.5):
        c_odd(m)  = -(a+m)(a+b+m) / ((a+2m)(a+2m+1)),
        c_even(m) = (m+1)(b-m-1) / ((a+2m+1)(a+2m+2)).
    Returns (1 + c_odd(m), c_odd(m), c_even(m)) per pair; 1 + c_odd(m) is given in the
    cancellation-free form (a(2m+1-b) + m(3m+2-b)) / ((a+2m)(a+2m+1)).
    """
    out = []
    for m in range(n_pairs):
        den = (a + 2 * m) * (a + 2 * m + 1)
        c_odd = -(a + m) * (a + b + m) / den
        one_plus_c_odd = (a * (2 * m + 1 - b) + m * (3 * m + 2 - b)) / den
        c_even = (m + 1) * (b - m - 1) / ((a + 2 * m + 1) * (a + 2 * m + 2))
        out.append((one_plus_c_odd, c_odd, c_even))
    return tuple(out)


def student_t_cdf(t: torch.Tensor, nu: float) -> torch.Tensor:
    r"""CDF of Student's t law with :math:`\nu > 0` degrees of freedom, elementwise, in torch.

    For :math:`t > 0`, :math:`F(t) = 1 - I_x(\nu/2, 1/2) / 2` with :math:`x = \nu/(\nu + t^2)`,
    and :math:`F(-t) = 1 - F(t)` (Abramowitz & Stegun 26.7.1, 26.5.27); :math:`I_x(a, b)` is
    the regularized incomplete beta function. It is evaluated as

    .. math::

        I_x(a, b) &= \frac{x^a (1-x)^b}{a B(a, b)} \cdot \mathrm{CF}_x(a, b)
            \qquad \text{if } 1-x \ge (b+1)/(a+b+2), \\
        I_x(a, b) &= 1 - \frac{x^a (1-x)^b}{b B(a, b)} \cdot \mathrm{CF}_{1-x}(b, a)
            \qquad \text{otherwise},

    where CF is the continued fraction of Numerical Recipes §6.4 (it converges fast on the
    chosen side of the switch point). Numerical details:

    - :math:`x` and :math:`1-x = t^2/(\nu+t^2)` are both formed directly from
      :math:`q = \min(t^2/\nu, \nu/t^2)` (never as :math:`1 - x`), and :math:`\log x`,
      :math:`\log(1-x)` from log1p and :math:`\log|t|`, so nothing overflows or cancels for
      :math:`|t|` up to the largest float;
    - the continued fraction is evaluated backwards (from its M-th pair to the first) with a
      fixed number of pairs M chosen in Python from :math:`\nu` and the dtype
      (``_T_CDF_PAIRS``), so there is no data-dependent loop and no device sync;
    - its odd terms :math:`1 + d_{2m+1}` are computed from :math:`1-x`
      (:math:`(1 + c_\mathrm{odd}) - c_\mathrm{odd} (1-x)` on the :math:`I_x` side), since
      :math:`1 + c_\mathrm{odd}\, x` cancels catastrophically when :math:`x \to 1` and
      :math:`\nu` is large;
    - :math:`\log B(\nu/2, 1/2)` comes from ``log_beta_half`` (no lgamma cancellation for huge
      :math:`\nu`).

    Accuracy (tested against scipy.special.stdtr and mpmath): about 1e-15 absolute in float64
    and a few 1e-7 in float32, for every :math:`\nu > 0` and every t including 0 and
    :math:`\pm\infty`.

    Args:
        t: tensor of any shape, float32 or float64 (half precisions are computed in float32).
        nu: degrees of freedom, a Python float > 0.
    Returns:
        :math:`F(t)`, same shape, dtype and device as t.

    References:
        Abramowitz & Stegun, *Handbook of Mathematical Functions* (1964), 26.5.8, 26.7.1.
        Press et al., *Numerical Recipes*, 3rd ed. (2007), §6.4 (continued fraction of I_x)
        and §5.2 (evaluation of continued fractions).
    """
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.dtype not in (torch.float32, torch.float64):
        return student_t_cdf(t.float(), nu).to(t.dtype)
    a, b = 0.5 * nu, 0.5
    n_pairs = next(m for bound, m in _T_CDF_PAIRS[t.dtype] if nu <= bound)

    # Every tensor below is elementwise, with the shape of t.
    # z = |t|/sqrt(nu), z² = t²/nu. z itself overflows in float32 for |t| near the float
    # range when nu < 1, so z² and 1/z² are formed from |t| separately, each only used on
    # the side where it is <= 1, and log z from log|t|.
    # Branches are blended arithmetically with 0/1 masks rather than torch.where: where with
    # a data-dependent mask was measured ~20x slower than a multiply on CPU. Every blended
    # operand is finite (q in [0, 1], log z clamped), so the blend never makes 0 * inf.
    abs_t = t.abs()
    # 0/1 masks are written as floats directly (out=): a bool mask cast to float costs ~7x more.
    s_small = torch.le(abs_t, math.sqrt(nu), out=torch.empty_like(t))  # 1 where z <= 1
    log_z = (torch.log(abs_t) - 0.5 * math.log(nu)).clamp_(-1e30, 1e30)
    zz = (abs_t * (1.0 / math.sqrt(nu))).square()  # z², overflows harmlessly where z > 1
    izz = (math.sqrt(nu) / abs_t).square()  # 1/z², overflows harmlessly where z <= 1
    # q = min(z², 1/z²) in [0, 1]: x = 1/(1+z²) and 1-x = z²/(1+z²) without overflow.
    q = torch.minimum(zz, izz)
    big_part = torch.reciprocal(1.0 + q)
    small_part = q * big_part
    x = torch.lerp(small_part, big_part, s_small)
    omx = torch.lerp(big_part, small_part, s_small)
    log1p_q = torch.log1p(q)
    two_log_z = 2.0 * log_z
    log_x = (s_small - 1.0).mul_(two_log_z).sub_(log1p_q)  # -log1p(z²) or -2 log z - log1p(1/z²)
    log_omx = (two_log_z * s_small).sub_(log1p_q)  # 2 log z - log1p(z²) or -log1p(1/z²)

    # s1 = 1: evaluate I_{1-x}(b, a) instead of I_x(a, b).
    s1 = torch.lt(omx, (b + 1.0) / (a + b + 2.0), out=torch.empty_like(t))
    s0 = 1.0 - s1
    x0 = x * s0  # even terms, I_x side
    x1 = omx * s1  # even and odd terms, I_{1-x} side
    y0 = omx * s0  # odd terms, I_x side, written with 1-x
    pairs = (
        _beta_cf_pairs.__wrapped__ if _fuse.compiling() else _beta_cf_pairs
    )  # dynamo warns on lru_cache
    coef_a = pairs(a, b, n_pairs)
    coef_b = pairs(b, a, n_pairs)
    f = torch.ones_like(t)
    qq = torch.empty_like(t)
    odd = torch.empty_like(t)
    # Backward recursion on pairs: f <- (1 + d_{2m+1} + q) / (1 + q), q = d_{2m+2} / f,
    # in preallocated buffers (no allocation per pair).
    for m in range(n_pairs - 1, -1, -1):
        pa, ca_odd, ca_even = coef_a[m]
        _, cb_odd, cb_even = coef_b[m]
        torch.mul(x0, ca_even, out=qq).add_(x1, alpha=cb_even).div_(f)
        torch.mul(s0, pa, out=odd).add_(s1).add_(y0, alpha=-ca_odd).add_(x1, alpha=cb_odd).add_(qq)
        torch.div(odd, qq.add_(1.0), out=f)
    a_side = s0 * a + s1 * b  # exact per-element choice of the leading 1/a or 1/b
    log_prefactor = a * log_x + b * log_omx - log_beta_half(a)
    inc = torch.exp(log_prefactor).div_(a_side.mul_(f))  # I_x(a, b) or I_{1-x}(b, a)
    tail = (0.5 - inc).mul_(s1).add_(inc, alpha=0.5)  # P(T > |t|): 0.5 - inc/2 or inc/2
    upper = torch.gt(t, 0.0, out=torch.empty_like(t))
    return (1.0 - 2.0 * tail).mul_(upper).add_(tail)  # 1 - tail for t > 0, else tail


def _lower_side(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi), or its mirror image [-hi, -lo) where lo > 0: the same probability under a
    symmetric law, taken as F(b) - F(a) on the side where both CDF values are the smaller tail
    (no cancellation between two values near 1)."""
    upper = lo > 0
    return torch.where(upper, -hi, lo), torch.where(upper, -lo, hi)


def gaussian_partial_moments(
    lo: torch.Tensor, hi: torch.Tensor, p: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Partial moments of :math:`T \sim \mathcal N(0, 1)` over :math:`[\mathrm{lo}, \mathrm{hi})`:
    :math:`P = \mathbb P(T \in I)`, :math:`M_1 = \mathbb E[T 1_I]`, :math:`M_2 = \mathbb E[T^2 1_I]`.

    .. math::

        P = \Phi(\mathrm{hi}) - \Phi(\mathrm{lo}), \qquad
        M_1 = \varphi(\mathrm{lo}) - \varphi(\mathrm{hi}), \qquad
        M_2 = P + \mathrm{lo}\,\varphi(\mathrm{lo}) - \mathrm{hi}\,\varphi(\mathrm{hi})

    (:math:`\varphi' = -t\varphi` and :math:`(t\varphi)' = \varphi - t^2\varphi`). P is taken
    on the side of the smaller tail (``_lower_side``), so it keeps its relative accuracy
    far out.

    Args:
        lo, hi: finite bounds of the same shape, lo <= hi.
        p: P over the interval when the caller has it already (saves two CDF evaluations).
    """
    if p is None:
        a, b = _lower_side(lo, hi)
        p = torch.special.ndtr(b) - torch.special.ndtr(a)
    c = 1.0 / math.sqrt(2.0 * math.pi)
    phi_lo, phi_hi = c * torch.exp(-0.5 * lo * lo), c * torch.exp(-0.5 * hi * hi)
    return p, phi_lo - phi_hi, p + lo * phi_lo - hi * phi_hi


def student_t_partial_moments(
    lo: torch.Tensor, hi: torch.Tensor, nu: float, p: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Partial moments of :math:`T \sim t_\nu` over :math:`[\mathrm{lo}, \mathrm{hi})`:
    :math:`P`, :math:`M_1 = \mathbb E[T 1_I]`, :math:`M_2 = \mathbb E[T^2 1_I]`, for every
    :math:`\nu > 0` on finite bounds (and on infinite ones where the moment exists).

    With the density f and :math:`G(t) = (\nu + t^2) f(t)`, :math:`G' = (1 - \nu)\, t f` and
    :math:`(t G)' = \nu f + (2 - \nu)\, t^2 f`, so

    .. math::

        M_1 = \frac{G(\mathrm{lo}) - G(\mathrm{hi})}{\nu - 1}, \qquad
        M_2 = \frac{\nu P + \mathrm{lo}\, G(\mathrm{lo}) - \mathrm{hi}\, G(\mathrm{hi})}{\nu - 2}

    (both tend to the Gaussian forms as :math:`\nu \to \infty`). :math:`M_1` is evaluated as
    :math:`\nu k\, e^{-e L_{lo}} \tfrac{\Delta}{2} \operatorname{expm1}(-e\Delta)/(-e\Delta)`
    with :math:`e = (\nu - 1)/2`, :math:`L = \log(1 + t^2/\nu)`, :math:`\Delta = L_{hi} - L_{lo}`,
    :math:`k = 1/(\sqrt\nu B(\nu/2, 1/2))`: no cancellation near :math:`\nu = 1`, where it is
    :math:`(L_{hi} - L_{lo}) / (2\pi)` (Cauchy). At :math:`\nu = 2`,
    :math:`M_2 = [\operatorname{asinh}(t/\sqrt2) - t/\sqrt{2 + t^2}]_{lo}^{hi}`; within
    :math:`10^{-3}` of 2 it is the quadratic through :math:`\nu = 2 - 10^{-3}, 2, 2 + 10^{-3}`
    (measured within 1e-8 relative of quadrature), where the general form would divide a
    cancelled difference by :math:`\nu - 2`. P from ``student_t_cdf``, on the side of the smaller tail.

    Args:
        lo, hi: bounds of the same shape, lo <= hi; finite where :math:`\nu \le 2`.
        nu: degrees of freedom, > 0.
        p: P over the interval when the caller has it already (saves two CDF evaluations).
    """
    if not nu > 0.0:
        raise ValueError(f"Invalid nu: {nu!r} (must be > 0)")
    near = 1e-3
    if p is None:
        p = _t_interval_probability(lo, hi, nu)
    m1 = _t_first_moment(lo, hi, nu)
    if abs(nu - 2.0) >= near:
        return p, m1, _t_second_moment(lo, hi, nu, p)
    at_two = _t_second_moment_nu2(lo, hi)
    if nu == 2.0:
        return p, m1, at_two
    below, above = (
        _t_second_moment(lo, hi, v, _t_interval_probability(lo, hi, v))
        for v in (2.0 - near, 2.0 + near)
    )
    s = (nu - 2.0) / near  # in (-1, 1): the quadratic through 2 - near, 2, 2 + near
    return p, m1, at_two + 0.5 * s * (above - below) + 0.5 * s * s * (above - 2.0 * at_two + below)


def _t_interval_probability(lo: torch.Tensor, hi: torch.Tensor, nu: float) -> torch.Tensor:
    """P(lo <= T < hi) for t_nu, on the side of the smaller tail (``_lower_side``)."""
    a, b = _lower_side(lo, hi)
    return student_t_cdf(b, nu) - student_t_cdf(a, nu)


def _t_first_moment(lo: torch.Tensor, hi: torch.Tensor, nu: float) -> torch.Tensor:
    """M_1 of t_nu over [lo, hi), stable through nu = 1 (see ``student_t_partial_moments``)."""
    k = math.exp(-0.5 * math.log(nu) - log_beta_half(0.5 * nu))
    e = 0.5 * (nu - 1.0)
    l_lo, l_hi = torch.log1p(lo * lo / nu), torch.log1p(hi * hi / nu)
    delta = l_hi - l_lo
    z = -e * delta
    small = z.abs() < 1e-12
    ratio = torch.where(small, 1.0 + 0.5 * z, torch.expm1(z) / torch.where(small, 1.0, z))
    return nu * k * torch.exp(-e * l_lo) * 0.5 * delta * ratio


def _t_second_moment(
    lo: torch.Tensor, hi: torch.Tensor, nu: float, p: torch.Tensor
) -> torch.Tensor:
    """M_2 of t_nu over [lo, hi) for nu != 2, given P over it."""
    log_norm = -0.5 * math.log(nu) - log_beta_half(0.5 * nu)

    def weighted(t: torch.Tensor) -> torch.Tensor:  # t (nu + t²) f(t); 0 at t = ±inf for nu > 2
        g = torch.exp(log_norm + 0.5 * (1.0 - nu) * torch.log1p(t * t / nu)) * nu
        return torch.where(torch.isinf(t), torch.zeros_like(t), t * g)

    return (nu * p + weighted(lo) - weighted(hi)) / (nu - 2.0)


def _t_second_moment_nu2(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """M_2 of t_2 (density (2 + t²)^{-3/2}) over [lo, hi): [asinh(t/√2) - t/√(2+t²)]."""

    def antiderivative(t: torch.Tensor) -> torch.Tensor:
        return torch.asinh(t / math.sqrt(2.0)) - t / torch.sqrt(2.0 + t * t)

    return antiderivative(hi) - antiderivative(lo)


def stable_scale_from_tail(alpha: float, tail_constant: float) -> float:
    r"""The scale :math:`\gamma` of the symmetric :math:`\alpha`-stable limit of
    :math:`n^{-1/\alpha} \sum_{i \le n} X_i` for i.i.d. symmetric :math:`X_i` with
    :math:`P(X > x) \sim P(X < -x) \sim c\, x^{-\alpha}`, :math:`0 < \alpha < 2` (the
    generalised central limit theorem; docs/models.md, "The Lévy model"):

    .. math::

        \gamma^\alpha = \frac{\pi c}{\Gamma(\alpha) \sin(\pi\alpha/2)},

    the stable law of characteristic function :math:`\exp(-\gamma^\alpha |u|^\alpha)`. (Its
    Lévy measure :math:`c\alpha |x|^{-1-\alpha} dx` gives the exponent
    :math:`2c\alpha |u|^\alpha \int_0^\infty (1 - \cos y) y^{-1-\alpha} dy
    = 2c\,\Gamma(1-\alpha) \cos(\pi\alpha/2) |u|^\alpha`, and
    :math:`\Gamma(1-\alpha)\Gamma(\alpha) = \pi / \sin(\pi\alpha)`.) The Cauchy law,
    :math:`c = 1/\pi`, has :math:`\gamma = 1`.

    References:
        Samorodnitsky & Taqqu, *Stable Non-Gaussian Random Processes* (1994), §1.8 and
        Property 1.2.15 (the tail constant :math:`C_\alpha` of a stable law); Nolan,
        *Univariate Stable Distributions* (2020), Thm 1.2 and Thm 3.12.
    """
    if not 0.0 < alpha < 2.0:
        raise ValueError(f"Invalid alpha: {alpha!r} (the stable limit needs 0 < alpha < 2)")
    if not (tail_constant > 0.0 and math.isfinite(tail_constant)):
        raise ValueError(f"Invalid tail_constant: {tail_constant!r} (must be finite and > 0)")
    power = math.pi * tail_constant / (math.gamma(alpha) * math.sin(math.pi * alpha / 2.0))
    return power ** (1.0 / alpha)


def student_t_tail_constant(nu: float) -> float:
    r""":math:`c_\nu` of :math:`P(T > x) \sim c_\nu x^{-\nu}` for :math:`T \sim t_\nu`: the
    density :math:`\frac{\Gamma((\nu+1)/2)}{\sqrt{\nu\pi}\,\Gamma(\nu/2)}
    (1 + t^2/\nu)^{-(\nu+1)/2} \sim \frac{\Gamma((\nu+1)/2)\, \nu^{(\nu+1)/2}}
    {\sqrt{\nu\pi}\,\Gamma(\nu/2)} t^{-\nu-1}`, integrated:
    :math:`c_\nu = \Gamma((\nu+1)/2)\, \nu^{\nu/2 - 1} / (\sqrt\pi\, \Gamma(\nu/2))`
    (:math:`1/\pi` for the Cauchy law, :math:`\nu = 1`)."""
    if not (nu > 0.0 and math.isfinite(nu)):
        raise ValueError(f"Invalid nu: {nu!r} (must be finite and > 0)")
    log_c = (
        math.lgamma((nu + 1.0) / 2.0)
        + (nu / 2.0 - 1.0) * math.log(nu)
        - 0.5 * math.log(math.pi)
        - math.lgamma(nu / 2.0)
    )
    return math.exp(log_c)
