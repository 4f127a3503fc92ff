"""Standard normal CDF, its log and the inverse of its log, without scipy.

Drop-ins for `scipy.special.ndtr`, `log_ndtr` and `ndtri_exp`, which are all the
TPE estimator (suggestion_services.parzen) needs from scipy: importing
scipy.special costs ~170 ms at service start, this module costs only numpy.

The per-element work is done by C functions of the standard library mapped over
a list (`math.erfc`, and statistics' inverse normal CDF, Wichura's AS 241): a
`map` of a builtin into `np.fromiter` is the cheapest way to apply a scalar C
function to a numpy array (faster than `np.frompyfunc` or a list comprehension).
Everything else is vectorised numpy; the tails that those functions cannot reach
(erfc underflows below x = -37.5, exp(y) below y = -708) use the asymptotic
series of Mills' ratio, and only run when an array has elements there.

Each function takes an array-like (any shape, including 0-d and empty, or a
Python float) and returns a float64 ndarray of the same shape, never a scalar.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from itertools import repeat

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["log_ndtr", "ndtr", "ndtri_exp"]

FloatArray = NDArray[np.float64]

_SQRT1_2 = math.sqrt(0.5)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_4PI = math.log(4.0 * math.pi)
_SQRT2 = math.sqrt(2.0)
_LOG_HALF = math.log(0.5)
# Below this, 0.5 * erfc(-x / sqrt 2) leaves the normal floats (x = -37.5 is
# where it turns subnormal); the asymptotic series is then exact to ~1e-21.
_LOG_NDTR_TAIL = -37.0
# Below this, exp(y) is close to (at -708) subnormal: Newton on the tail series.
_NDTRI_EXP_TAIL = -700.0
# Coefficients (-1)^n (2n-1)!! of u^n, n = 8 .. 1, in Mills' ratio's asymptotic
# series Phi(x) ~ phi(x) / |x| * (1 + sum_n (-1)^n (2n-1)!! u^n), u = 1 / x^2.
# At |x| >= 37 (u <= 7.3e-4) the first omitted term is below 3e-21.
_MILLS = (2027025.0, -135135.0, 10395.0, -945.0, 105.0, -15.0, 3.0, -1.0)
# The start is within ~1e-4 of x: one step leaves ~1e-13 relative, two reach rounding.
_NEWTON_STEPS = 2


def _inv_cdf_fallback(p: float, mu: float, sigma: float) -> float:
    """The public (slower) route, if statistics ever loses its private helper."""
    return statistics.NormalDist(mu, sigma).inv_cdf(p)


# statistics' own helper behind NormalDist.inv_cdf (C-accelerated in CPython):
# half the per-call cost of the bound method, which re-checks p and wraps it.
_inv_cdf: Callable[[float, float, float], float] = getattr(
    statistics, "_normal_dist_inv_cdf", _inv_cdf_fallback
)


def _erfc(z: FloatArray) -> FloatArray:
    """math.erfc of each element of a 1-d array (libm's erfc: ~1 ulp)."""
    values = z.tolist()
    return np.fromiter(map(math.erfc, values), np.float64, len(values))


def _inv(p: FloatArray) -> FloatArray:
    """Inverse standard normal CDF of each element of a 1-d array of p in (0, 1)."""
    values = p.tolist()
    return np.fromiter(map(_inv_cdf, values, repeat(0.0), repeat(1.0)), np.float64, len(values))


def _log_ndtr_tail(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(log Phi(x), S - 1) for x <= -37 from the asymptotic series S of Mills' ratio.

    log Phi(x) = -x^2/2 - log|x| - log sqrt(2 pi) + log S, with S - 1 kept apart
    so that log1p keeps its precision and Newton gets phi/Phi = |x| / S cheaply.
    """
    r = 1.0 / x
    u = r * r  # not 1 / x^2: x^2 overflows for |x| > 1.3e154
    s1 = _MILLS[0] * u
    for c in _MILLS[1:]:
        s1 += c
        s1 *= u
    out = 0.5 * x
    with np.errstate(over="ignore"):  # x^2 / 2 > DBL_MAX: log Phi(x) is -inf
        out *= x
    np.negative(out, out=out)
    out -= np.log(-x)
    out -= _LOG_SQRT_2PI
    out += np.log1p(s1)
    return out, s1


def ndtr(x: ArrayLike) -> FloatArray:
    """Standard normal CDF Phi(x) = erfc(-x / sqrt 2) / 2, as scipy.special.ndtr."""
    a = np.asarray(x, dtype=np.float64)
    # scipy's own argument, x * sqrt(1/2) (negated exactly), so the rounding of
    # z (which erfc magnifies by 2 z^2 in the tail) is the same as scipy's.
    w = _erfc((a * -_SQRT1_2).ravel())
    w *= 0.5
    return w.reshape(a.shape)


def log_ndtr(x: ArrayLike) -> FloatArray:
    """log Phi(x), accurate in both tails, as scipy.special.log_ndtr.

    x <= 0: log(erfc(|x| / sqrt 2) / 2); x > 0: log1p(-Phi(-x)), so that values
    near 0 keep their relative precision; x < -37: the asymptotic series.
    """
    a = np.asarray(x, dtype=np.float64)
    flat = a.ravel()
    if flat.size == 0:
        return np.empty(a.shape)
    lo, hi = flat.min(), flat.max()
    if lo >= _LOG_NDTR_TAIL:  # False if any element is NaN: the general path
        # One-signed arrays (TPE's bounds mostly are) skip the |x| and the mask.
        if hi <= 0.0:
            w = _erfc(flat * -_SQRT1_2)
            w *= 0.5
            return np.log(w, out=w).reshape(a.shape)
        if lo > 0.0:
            w = _erfc(flat * _SQRT1_2)
            w *= -0.5
            return np.log1p(w, out=w).reshape(a.shape)
    tail = not lo >= _LOG_NDTR_TAIL
    mid = np.maximum(flat, _LOG_NDTR_TAIL) if tail else flat
    z = np.abs(mid)
    z *= _SQRT1_2
    w = _erfc(z)  # 2 Phi(-|x|)
    w *= -0.5
    out: FloatArray = np.log1p(w)  # right for x > 0
    np.negative(w, out=w)
    np.log(w, out=out, where=mid <= 0.0)
    if tail:
        low = flat < _LOG_NDTR_TAIL
        out[low] = _log_ndtr_tail(flat[low])[0]
    return out.reshape(a.shape)


def _ndtri_exp_tail(y: FloatArray) -> FloatArray:
    """x with log Phi(x) = y for finite y < -700: Newton on the tail series.

    Start from two fixed-point steps on x^2 = -2y - log(x^2) - log 2 pi (the
    series without its correction S), within ~1e-4 of x; Newton converges
    quadratically, with d/dx log Phi = phi / Phi = |x| / S.
    """
    # h = x^2 / 2 solves h = -y - log(4 pi h) / 2 (-2y would overflow at -DBL_MAX).
    h = -y - 0.5 * (np.log(-y) + _LOG_4PI)
    h = -y - 0.5 * (np.log(h) + _LOG_4PI)
    x = np.sqrt(h)
    x *= -_SQRT2
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(_NEWTON_STEPS):
            step, s1 = _log_ndtr_tail(x)
            step -= y
            step *= 1.0 + s1
            step /= x  # (log Phi(x) - y) / (phi/Phi), with phi/Phi = -x / S
            # Near y = -DBL_MAX log Phi(x) may overflow; the start is exact there.
            step[~np.isfinite(step)] = 0.0
            x += step
    return x


def ndtri_exp(y: ArrayLike) -> FloatArray:
    """x with log Phi(x) = y, the inverse of log_ndtr, as scipy.special.ndtri_exp.

    y > log 1/2: x = -Phi^-1(-expm1(y)), keeping the precision of 1 - Phi(x) near
    y = 0; y >= -700: Phi^-1(exp(y)); below, where exp(y) leaves the normal
    floats, Newton on the tail series. 0 -> inf, -inf -> -inf, y > 0 -> NaN.
    """
    a = np.asarray(y, dtype=np.float64)
    flat = a.ravel()
    if flat.size == 0:
        return np.empty(a.shape)
    if flat.min() >= _NDTRI_EXP_TAIL and flat.max() <= _LOG_HALF:  # False on NaN
        return _inv(np.exp(flat)).reshape(a.shape)
    out = np.full(flat.shape, np.nan)
    mid = (flat >= _NDTRI_EXP_TAIL) & (flat <= _LOG_HALF)
    if mid.any():
        out[mid] = _inv(np.exp(flat[mid]))
    upper = (flat > _LOG_HALF) & (flat < 0.0)
    if upper.any():
        out[upper] = -_inv(-np.expm1(flat[upper]))
    out[flat == 0.0] = np.inf
    low = flat < _NDTRI_EXP_TAIL
    if low.any():
        out[low] = -np.inf
        low &= flat != -np.inf
        out[low] = _ndtri_exp_tail(flat[low])
    return out.reshape(a.shape)
