r"""Special functions computed in torch, batched and differentiable where it matters.

``student_t_cdf``: the CDF of Student's t law for every :math:`\nu > 0`, by the continued
fraction of the regularized incomplete beta function (docs/models.md uses it for DSignSGD's sign
probabilities). ``student_t_tail``: its smaller tail :math:`F(-|t|)` by a polynomial fitted to it
once per (nu, dtype) (``StudentTTailFit``), as accurate relative to the tail and ~10x cheaper;
DSignSGD's Binomial shortcut evaluates it every step.
"""

from __future__ import annotations

import dataclasses
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
    r""":math:`\log B(a, 1/2)` to a few ulps for every a > 0: no cancellation between lgamma
    values, whose own rounding (~1e-14 at a = 15, where they are ~26) would show as a step
    where the Student-t CDF switches between its two continued fractions."""
    if a < 4.0:
        return math.lgamma(a) + math.lgamma(0.5) - math.lgamma(a + 0.5)
    if a < 50.0:
        # Shifted up by k: Γ(a)/Γ(a + 1/2) = Γ(a + k)/Γ(a + k + 1/2) Π_{i<k} (a + i + 1/2)/(a + i).
        k = math.ceil(50.0 - a)
        return log_beta_half(a + k) + math.fsum(math.log1p(0.5 / (a + i)) for i in range(k))
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
    log_x, log_omx, denom, s1 = _t_beta_parts(t, nu)
    log_prefactor = a * log_x + b * log_omx - log_beta_half(a)
    inc = torch.exp(log_prefactor).div_(denom)  # I_x(a, b) or I_{1-x}(b, a)
    tail = (0.5 - inc).mul_(s1).add_(inc, alpha=0.5)  # P(T > |t|): 0.5 - inc/2 or inc/2
    upper = torch.gt(t, 0.0, out=torch.empty_like(t))
    return (1.0 - 2.0 * tail).mul_(upper).add_(tail)  # 1 - tail for t > 0, else tail


def _t_beta_parts(
    t: torch.Tensor, nu: float, n_pairs: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The incomplete-beta part of ``student_t_cdf`` (float32 or float64 t, any shape):
    :math:`\log x`, :math:`\log(1-x)`, the denominator D and the side s1 (1 where
    :math:`I_{1-x}(b, a)` is evaluated), so that :math:`I = x^a (1-x)^b / (B(a, b) D)` is
    :math:`I_x(a, b)` where s1 = 0 and :math:`I_{1-x}(b, a)` where s1 = 1
    (:math:`a = \nu/2`, :math:`b = 1/2`, :math:`x = \nu/(\nu + t^2)`). ``n_pairs``: the
    continued fraction's length, by default from ``_T_CDF_PAIRS``."""
    if n_pairs is None:
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
    return (log_x, log_omx, *_t_beta_cf(x, omx, nu, n_pairs))


def _t_beta_cf(
    x: torch.Tensor, omx: torch.Tensor, nu: float, n_pairs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The continued fraction of ``_t_beta_parts`` from x and 1 - x (both given, each
    accurate): the denominator D and the side s1, shaped like x."""
    a, b = 0.5 * nu, 0.5
    # s1 = 1: evaluate I_{1-x}(b, a) instead of I_x(a, b).
    s1 = torch.lt(omx, (b + 1.0) / (a + b + 2.0), out=torch.empty_like(x))
    s0 = 1.0 - s1
    x0 = x * s0  # even terms, I_x side
    x1 = omx * s1  # even and odd terms, I_{1-x} side
    y0 = omx * s0  # odd terms, I_x side, written with 1-x
    pairs = (
        _beta_cf_pairs.__wrapped__ if _fuse.compiling() else _beta_cf_pairs
    )  # dynamo warns on lru_cache
    coef_a = pairs(a, b, n_pairs)
    coef_b = pairs(b, a, n_pairs)
    f = torch.ones_like(x)
    qq = torch.empty_like(x)
    odd = torch.empty_like(x)
    # Backward recursion on pairs: f <- (1 + d_{2m+1} + q) / (1 + q), q = d_{2m+2} / f,
    # in preallocated buffers (no allocation per pair).
    for m in range(n_pairs - 1, -1, -1):
        pa, ca_odd, ca_even = coef_a[m]
        _, cb_odd, cb_even = coef_b[m]
        torch.mul(x0, ca_even, out=qq).add_(x1, alpha=cb_even).div_(f)
        torch.mul(s0, pa, out=odd).add_(s1).add_(y0, alpha=-ca_odd).add_(x1, alpha=cb_odd).add_(qq)
        torch.div(odd, qq.add_(1.0), out=f)
    a_side = s0 * a + s1 * b  # exact per-element choice of the leading 1/a or 1/b
    return a_side.mul_(f), s1


def _student_t_log_tail(
    t: torch.Tensor, nu: float, *, over_power: bool = False, n_pairs: int | None = None
) -> torch.Tensor:
    r""":math:`\log P(T > |t|)` for :math:`T \sim t_\nu`, elementwise, by the continued fraction of
    ``student_t_cdf`` kept in log space, so that it neither underflows nor loses relative
    accuracy where the tail is below the float range (the reference of ``StudentTTailFit``).

    With ``over_power``: :math:`\log G = \log P(T > |t|) + \tfrac{\nu}{2} \log(1 + t^2/\nu)`,
    formed without the cancellation of :math:`\tfrac{\nu}{2} \log x` against itself in the far
    tail (there :math:`\log G = \tfrac12 \log(1-x) - \log B(\tfrac{\nu}{2}, \tfrac12) - \log D
    - \log 2`, D the continued fraction's denominator).

    Args:
        t: float64 (or float32) tensor of any shape. nu: degrees of freedom > 0.
        n_pairs: the continued fraction's length (default: ``student_t_cdf``'s).
    Returns:
        Same shape and dtype as t.
    """
    return _t_log_tail_parts(*_t_beta_parts(t, nu, n_pairs), nu, over_power)


def _t_log_tail_parts(
    log_x: torch.Tensor,
    log_omx: torch.Tensor,
    denom: torch.Tensor,
    s1: torch.Tensor,
    nu: float,
    over_power: bool,
) -> torch.Tensor:
    """``_student_t_log_tail`` from the parts of ``_t_beta_parts``."""
    a, b = 0.5 * nu, 0.5
    log_b = log_beta_half(a)
    far = b * log_omx - log_b - torch.log(denom) - math.log(2.0)  # I_x side: log(tail / x^a)
    inc = torch.exp(a * log_x + b * log_omx - log_b) / denom  # I_{1-x}(b, a) near t = 0
    near = torch.log(0.5 - 0.5 * inc) - a * log_x
    log_g = torch.where(s1 > 0, near, far)
    return log_g if over_power else log_g + a * log_x


# ---------------------------------------------------------------------------------------------
# The Student-t tail by a per-nu polynomial fit
# ---------------------------------------------------------------------------------------------

#: Target error of the fit in log G (so the relative error it adds to the tail), by dtype: a
#: quarter of float32's epsilon; 1e-14 in float64, ten times the rounding noise of the
#: continued fraction it is fitted to (its two branches meet with a ~1e-15 step).
_TAIL_FIT_TOL = {torch.float32: 3e-8, torch.float64: 1e-14}
#: Largest degree tried, by dtype; a law that needs more is served by ``student_t_cdf``.
_TAIL_FIT_MAX_DEGREE = {torch.float32: 24, torch.float64: 48}
#: Continued-fraction pairs of the fit's reference: twice the most ``_T_CDF_PAIRS`` uses, so
#: that its truncation error is far below float64 rounding for every nu.
_TAIL_FIT_PAIRS = 108
_TAIL_FIT_NODES = 64  # interpolation nodes (first kind); the error is checked on 129 others
#: Candidate parameters c of the map s = (1 + c) v / (1 + c v) (the lowest degree wins).
_TAIL_FIT_MAPS = (0.0, 0.15, 0.25, 0.35, 0.45, 0.6, 0.8, 1.0)
#: Above this nu the prefactor is formed from log1p(w²): relative accuracy as w -> 0, where
#: (nu/2) log(1 + w²) must keep it, and w² overflows only where the tail is below the float
#: range (|t| > 1.8e19: P < 1e-47 in float32; > 1.3e154: P < 1e-384 in float64). At or below
#: it the prefactor is formed from r = 1/w (no overflow up to the largest float), whose log
#: carries an absolute error of ~3 ulps, nu times.
_TAIL_LOG1P_NU = 2.5
#: r = 1/w is clamped here, so that r² is finite: w < 1e-18, where the tail is 1/2 to the last
#: bit in both precisions.
_TAIL_R_MAX = 2.0**60


@dataclasses.dataclass(frozen=True, eq=False)
class StudentTTailFit:
    r"""The tail :math:`P(T > |t|)` of :math:`t_\nu` for one :math:`\nu` and one precision, by a
    polynomial fitted once (``student_t_tail_fit``; ``student_t_tail`` evaluates it).

    With :math:`w = |t|/\sqrt\nu`, :math:`x = 1/(1 + w^2)` and :math:`y = w/\sqrt{1 + w^2}
    \in [0, 1]`,

    .. math::

        P(T > |t|) = \tfrac12 I_x(\tfrac\nu2, \tfrac12) = x^{\nu/2}\, G(y), \qquad
        \log G(y) \approx p(\tau),\quad
        \tau = \frac{2 (1 + c)}{y_{\max}/y + c} - 1 = 2 \frac{(1 + c)\, v}{1 + c v} - 1,\quad
        v = \min(y / y_{\max}, 1),

    p a polynomial of degree K in :math:`\tau \in [-1, 1]`. G is analytic on [0, 1]: near
    y = 0 it is :math:`(\tfrac12 - y\,\phi(y^2))/x^{\nu/2}`, :math:`\phi` a hypergeometric
    series, and near y = 1 it is :math:`{}_2F_1(\tfrac\nu2, \tfrac12; \tfrac\nu2 + 1; x) / (\nu
    B(\tfrac\nu2, \tfrac12))` (Abramowitz & Stegun 26.5.23, 15.1.1), so the far tail
    :math:`\propto |t|^{-\nu}` is carried exactly by the prefactor and the fit keeps *relative*
    accuracy over the whole line. G's nearest singularity is y = -1 (geometric convergence at
    rate :math:`3 + \sqrt8` for c = 0); the Möbius map (c > 0) moves it further from [0, 1]
    (float32, nu <= 3: K = 6 instead of 8 or 9). For large nu the tail underflows before y = 1:
    :math:`y_{\max}` is where it falls below half the smallest subnormal, and beyond it
    :math:`\tau = 1`, so p stays constant while the prefactor keeps falling (the result is 0
    or a subnormal there, as the exact value).

    The fit: p interpolates :math:`\log G` (the continued fraction of ``student_t_cdf`` in log
    space with 108 pairs, float64, evaluated from y directly) at 64 Chebyshev nodes for each
    map parameter in ``_TAIL_FIT_MAPS``; K is the lowest degree whose error on 129
    Chebyshev–Lobatto points (the ends included) is within ``_TAIL_FIT_TOL``, and the map with
    the lowest K is kept. Deterministic, ~5 ms. If no degree up to ``_TAIL_FIT_MAX_DEGREE``
    reaches the tolerance (float64, nu above ~1e3), ``exact`` is True and ``student_t_tail``
    uses ``student_t_cdf``.

    Evaluation (``tail``): 1/y and :math:`\log x` from :math:`r = 1/w` (nu <= 2.5: no overflow
    up to the largest float) or from :math:`\operatorname{log1p}(w^2)` (nu > 2.5: relative
    accuracy as w -> 0, which :math:`(\nu/2) \log x` needs for large nu), then Horner in
    :math:`\tau`, or in :math:`1/(y_{\max}/y + c)` itself where that basis is as well
    conditioned (one pass less), and one exp: 17 elementwise passes for float32, nu <= 3.

    Attributes:
        nu, dtype: the law and the precision the fit serves.
        y_max: the end of the fitted range in y (1: the whole line).
        c: the map parameter.
        coefficients: p's monomial coefficients in :math:`\tau`, lowest degree first.
        in_reciprocal: Horner runs in :math:`1/(y_{\max}/y + c)` with ``horner`` coefficients.
        horner: the coefficients Horner uses (``coefficients``, or re-expanded).
        error: the largest error of p against :math:`\log G` on the check points (float64).
        exact: no fit; the continued fraction is used.

    References:
        Abramowitz & Stegun (1964) 15.1.1, 26.5.23, 26.7.1; Trefethen, *Approximation Theory
        and Approximation Practice* (2013), ch. 3, 8 (Chebyshev interpolation; geometric
        convergence for functions analytic in a Bernstein ellipse).
    """

    nu: float
    dtype: torch.dtype
    y_max: float
    c: float
    coefficients: tuple[float, ...]
    in_reciprocal: bool
    horner: tuple[float, ...]
    error: float
    exact: bool
    _constants: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def tail(self, t: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        r""":math:`P(T > |t| / \mathrm{scale})`, elementwise, t of the fit's dtype (any shape
        and device)."""
        if self.exact:
            return student_t_cdf(t.abs().div_(-scale), self.nu)
        nu, y_max, c = self.nu, self.y_max, self.c
        k_t, c_t, two_1pc, coef, one = self._on(t.device, scale)
        k = scale * math.sqrt(nu)  # w = |t| / k
        # 1/y = sqrt(1 + 1/w²) and the log of the prefactor, by one of two routes.
        # Three buffers, each reused in place: fewer distinct tensors measured faster in a
        # step loop (cache) than the same number of passes over fresh ones.
        if nu > _TAIL_LOG1P_NU:
            w2 = torch.mul(t, 1.0 / k).square_()  # inf beyond the float range: the tail is 0 there
            inv_y = torch.reciprocal(w2).add_(1.0).sqrt_()
            log_power, alpha = w2.log1p_(), -0.5 * nu  # log(1/x), times -nu/2
        else:
            r = torch.div(k_t, t).abs_().clamp_(max=_TAIL_R_MAX)  # 1/w: no overflow as |t| grows
            inv_y = torch.addcmul(one, r, r).sqrt_()
            log_power, alpha = r.div_(inv_y).log_(), nu  # log sqrt(x) = log(r y), times nu
        var = torch.add(c_t, inv_y, alpha=y_max, out=inv_y)  # y_max / y + c
        if y_max < 1.0:
            var.clamp_(min=1.0 + c)  # v <= 1
        if self.in_reciprocal:
            var.reciprocal_()
        else:
            torch.div(two_1pc, var, out=var).sub_(1.0)  # tau
        p = torch.add(coef[-2], var, alpha=self.horner[-1])  # Horner
        for a_k in coef[-3::-1]:
            torch.addcmul(a_k, p, var, out=p)
        return p.add_(log_power, alpha=alpha).exp_()

    def _on(self, device: torch.device, scale: float) -> tuple:
        """The 0-d constants of ``tail`` on ``device`` (cached for up to 16 (device, scale)
        pairs, then made afresh): a 0-d tensor as the ``input`` of addcmul costs one elementwise
        pass less than a Python number added in place."""
        key = (device, scale)
        if key not in self._constants or _fuse.compiling():
            if len(self._constants) >= 16:
                self._constants.clear()

            def const(v: float) -> torch.Tensor:
                return torch.tensor(v, dtype=self.dtype, device=device)

            self._constants[key] = (
                const(scale * math.sqrt(self.nu)),
                const(self.c),
                const(2.0 * (1.0 + self.c)),
                tuple(const(a) for a in self.horner),
                const(1.0),
            )
        return self._constants[key]


#: (nu, dtype) -> StudentTTailFit, filled by ``student_t_tail_fit`` (a plain dict: torch.compile
#: reads it as a constant, where it would trace through an lru_cache).
_TAIL_FITS: dict[tuple[float, torch.dtype], StudentTTailFit] = {}


def student_t_tail_fit(nu: float, dtype: torch.dtype = torch.float64) -> StudentTTailFit:
    """The fit of ``StudentTTailFit`` for this nu and dtype (float32 or float64), made once and
    cached."""
    fit = _TAIL_FITS.get((nu, dtype))
    if fit is None:
        fit = _TAIL_FITS[(nu, dtype)] = _fit_student_t_tail(nu, dtype)
    return fit


@torch.compiler.disable  # under torch.compile (sdeopt._fuse) the fit runs eagerly, once
def _fit_student_t_tail(nu: float, dtype: torch.dtype) -> StudentTTailFit:
    """The body of ``student_t_tail_fit``."""
    if not (nu > 0.0 and math.isfinite(nu)):
        raise ValueError(f"Invalid nu: {nu!r} (must be finite and > 0)")
    if dtype not in _TAIL_FIT_TOL:
        raise ValueError(f"Invalid dtype: {dtype!r} (float32 or float64)")
    f64 = torch.float64
    y_max = _tail_fit_end(nu, dtype)
    n = _TAIL_FIT_NODES
    nodes = torch.cos(math.pi * (torch.arange(n, dtype=f64) + 0.5) / n)  # (n,), first kind
    check = torch.cos(math.pi * torch.arange(2 * n + 1, dtype=f64) / (2 * n))  # (2n+1,), Lobatto
    maps = torch.tensor(_TAIL_FIT_MAPS, dtype=f64).unsqueeze(-1)  # (m, 1)

    def log_g(tau: torch.Tensor) -> torch.Tensor:  # (m, k) -> (m, k), float64
        # x = 1 - y² and 1 - x = y² straight from y (through |t| they would carry the rounding
        # of t, amplified by d log G / d log|t| ~ 10 for nu ~ 30).
        s = 0.5 * (tau + 1.0)
        y = y_max * s / (1.0 + maps - maps * s)
        x, omx = (1.0 - y) * (1.0 + y), y * y
        log_x, log_omx = torch.log1p(-y) + torch.log1p(y), 2.0 * torch.log(y)
        denom, s1 = _t_beta_cf(x, omx, nu, _TAIL_FIT_PAIRS)
        return _t_log_tail_parts(log_x, log_omx, denom, s1, nu, over_power=True)

    values = log_g(nodes.expand(len(_TAIL_FIT_MAPS), -1))  # (m, n)
    truth = log_g(check.expand(len(_TAIL_FIT_MAPS), -1))  # (m, 2n+1)
    # Chebyshev coefficients of the interpolant (a DCT-II of the node values).
    j = torch.arange(n, dtype=f64)
    basis = torch.cos(math.pi * j.unsqueeze(-1) * (j + 0.5) / n)  # (degree, node)
    cheb = values @ basis.T * (2.0 / n)  # (m, n)
    cheb[:, 0] *= 0.5
    t_check = torch.cos(j.unsqueeze(-1) * torch.arccos(check))  # (degree, 2n+1): T_j on checks
    partial = torch.cumsum(cheb.unsqueeze(-1) * t_check, dim=1)  # (m, degree, 2n+1)
    errors = (partial - truth.unsqueeze(1)).abs().amax(dim=-1)  # (m, degree): error of degree K
    tol, top = _TAIL_FIT_TOL[dtype], _TAIL_FIT_MAX_DEGREE[dtype]
    best = None
    for i, c in enumerate(_TAIL_FIT_MAPS):
        ok = torch.nonzero(errors[i, 4 : top + 1] <= tol)
        if len(ok) and (best is None or 4 + int(ok[0]) < best[0]):
            best = (4 + int(ok[0]), i, c)
    if best is None:
        return StudentTTailFit(nu, dtype, y_max, 0.0, (), False, (), math.inf, True)
    degree, i, c = best
    coefficients = _chebyshev_to_monomial(cheb[i, : degree + 1].tolist())
    # p(tau) with tau = 2 (1 + c) v' - 1, v' = 1/(y_max/y + c) in [0, 1/(1 + c)]: kept in v'
    # where its coefficients weigh no more than twice those in tau (the rounding of Horner).
    in_v = _compose_affine(coefficients, 2.0 * (1.0 + c), -1.0)
    weight_v = sum(abs(b) / (1.0 + c) ** k for k, b in enumerate(in_v))
    in_reciprocal = weight_v <= 2.0 * sum(abs(a) for a in coefficients)
    # The error of the monomial form as evaluated (float64 Horner).
    p = torch.zeros_like(check)
    for a_k in reversed(coefficients):
        p = p * check + a_k
    error = float((p - truth[i]).abs().max())
    if error > 2.0 * tol:  # the monomial form lost what the Chebyshev one had
        return StudentTTailFit(nu, dtype, y_max, 0.0, (), False, (), math.inf, True)
    horner = in_v if in_reciprocal else coefficients
    return StudentTTailFit(
        nu, dtype, y_max, c, tuple(coefficients), in_reciprocal, tuple(horner), error, False
    )


def _compose_affine(coefficients: list[float], scale: float, shift: float) -> list[float]:
    """Monomial coefficients (lowest first) of p(scale v + shift), p given by its own."""
    out = [0.0] * len(coefficients)
    power = [1.0]  # (scale v + shift)^k
    for a_k in coefficients:
        for i, v in enumerate(power):
            out[i] += a_k * v
        following = [0.0] * (len(power) + 1)
        for i, v in enumerate(power):
            following[i] += shift * v
            following[i + 1] += scale * v
        power = following
    return out


def _tail_fit_end(nu: float, dtype: torch.dtype) -> float:
    """y_max of ``StudentTTailFit``: 1 if the tail stays above half the smallest subnormal of
    dtype up to the largest float, else y at the |t| where it falls below (found on two nested
    logarithmic grids, 0.1 % apart)."""
    f64 = torch.float64
    info = torch.finfo(dtype)
    floor = math.log(info.smallest_normal * info.eps) - math.log(2.0)  # log(subnormal_min / 2)
    top = float(info.max)
    if float(_student_t_log_tail(torch.tensor([top], dtype=f64), nu)) > floor:
        return 1.0
    lo, hi = 0.0, math.log10(top)
    for _ in range(2):
        grid = torch.logspace(lo, hi, 256, dtype=f64)
        first = int(torch.nonzero(_student_t_log_tail(grid, nu) < floor)[0])
        lo, hi = math.log10(float(grid[max(first - 1, 0)])), math.log10(float(grid[first]))
    w = 10.0**hi / math.sqrt(nu)
    return 1.0 / math.sqrt(1.0 + 1.0 / (w * w))


def _chebyshev_to_monomial(cheb: list[float]) -> list[float]:
    """Monomial coefficients (lowest first) of sum_k cheb[k] T_k(x), by T_{k+1} = 2x T_k - T_{k-1}."""
    basis = [[1.0], [0.0, 1.0]]  # T_0, T_1 as monomial coefficients
    while len(basis) < len(cheb):
        two_x = [0.0] + [2.0 * v for v in basis[-1]]
        older = basis[-2] + [0.0] * (len(two_x) - len(basis[-2]))
        basis.append([u - v for u, v in zip(two_x, older)])
    out = [0.0] * len(cheb)
    for ck, tk in zip(cheb, basis):
        for i, v in enumerate(tk):
            out[i] += ck * v
    return out


def student_t_tail(t: torch.Tensor, nu: float, scale: float = 1.0) -> torch.Tensor:
    r""":math:`P(T > |t| / \mathrm{scale}) = F(-|t|/\mathrm{scale})` for :math:`T \sim t_\nu`,
    elementwise: the smaller tail, computed directly, fast (``StudentTTailFit``: a polynomial
    fitted once per (nu, dtype), degree 5-7 in float32 for nu <= 10, and three
    transcendentals: 17 elementwise passes against ~150 for ``student_t_cdf``).

    Accuracy, relative to the tail P (tests/test_fast_cdf.py: against scipy's t law, closed
    forms and mpmath, :math:`|t|` from 0 to 1e30 and up to the largest float, nu from 0.5 to
    1e4): within :math:`2\,\mathrm{tol} + 4 (8 + |\log P|)\,\epsilon`, tol the fit's
    tolerance (3e-8 in float32, 1e-14 in float64) and :math:`|\log P|\,\epsilon` the roundoff
    of the exponent, the floor of any evaluation that ends with an exp in the working precision
    (``student_t_cdf`` has the same). Measured in float32: at most 6e-7 where
    :math:`P \ge 10^{-2}`, 1.2e-6 (nu <= 3) to 2e-6 (nu = 1e4) where :math:`P \ge 10^{-6}`,
    up to 2e-5 near the bottom of the normal range; in float64: at most 1.2e-14 where
    :math:`P \ge 10^{-6}`. Subnormal results carry the same relative error plus two subnormal
    steps. Float64 with nu above ~1e3 (no fit of degree <= 48 within tolerance) uses
    ``student_t_cdf``, to the bit.

    Args:
        t: tensor of any shape, float32 or float64 (half precisions are computed in float32).
        nu: degrees of freedom, a finite Python float > 0.
        scale: :math:`\sigma > 0`; the tail of :math:`\sigma T` at :math:`|t|`.
    Returns:
        The tail, same shape, dtype and device as t; 1/2 at t = 0, 0 at ±inf.
    """
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.dtype not in (torch.float32, torch.float64):
        return student_t_tail(t.float(), nu, scale).to(t.dtype)
    return student_t_tail_fit(float(nu), t.dtype).tail(t, scale)


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
