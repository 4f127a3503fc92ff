"""Parzen estimators for TPE: optuna's kernels, vectorised sampling and densities.

The kernels (bandwidths with optuna's magic clip, the prior kernel, categorical
smoothing, the ramp of weights that favours recent trials) are optuna's
`_ParzenEstimator`'s, computed by the same numpy operations in `_numerical` and
`_categorical` (checked bit for bit against optuna in tests/unit/test_tpe.py):
optuna's class costs tens of microseconds per fit in dict and wrapper work, and
TPE fits twice per suggestion. Drawing candidates and evaluating densities are
re-implemented here, vectorised over kernels and candidates, on the normal CDF of
suggestion_services.normal: optuna's own truncated-normal helpers run a Python
function per element, which costs tens of milliseconds per suggestion at 10,000
trials, and scipy.special would make a new service's first model-based suggestion
wait a fifth of a second for its import. They compute the same quantities (checked
against optuna and scipy in tests/unit/test_tpe.py).

The estimators work in the coordinates of suggestion_services.model_space.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from .model_space import Dim
from .normal import log_ndtr, ndtr, ndtri_exp
from .parzen_types import (
    CategoricalDistribution,
    CategoricalKernels,
    DiscreteTruncLogNormKernels,
    DiscreteTruncNormKernels,
    FloatDistribution,
    IntDistribution,
    Kernels,
    ParzenParameters,
    TruncLogNormKernels,
    TruncNormKernels,
    checked_weights,
    default_weights,
)

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@functools.lru_cache(maxsize=256)
def _mixture_weights(
    weights: Callable[[int], np.ndarray], n: int, prior_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, their logs, their cumulative sums) of n observation kernels plus the
    prior kernel, as optuna's `_ParzenEstimator` weighs them; read-only, shared."""
    if n == 0:
        w = np.array([1.0])
    else:
        w = np.empty(n + 1)  # np.append(observation weights, [prior_weight])
        # optuna's checks of a custom weights function; its default needs none.
        w[:n] = (
            default_weights(n)
            if weights is default_weights
            else checked_weights(weights, n)
        )
        w[n] = prior_weight
    w /= w.sum()
    with np.errstate(divide="ignore"):  # a tiny prior_weight may underflow to 0
        log_w = np.log(w)
    cumulative = np.cumsum(w)
    for array in (w, log_w, cumulative):
        array.setflags(write=False)
    return w, log_w, cumulative


def _numerical(
    observations: np.ndarray,
    distribution: FloatDistribution | IntDistribution,
    parameters: ParzenParameters,
    priors: Sequence[tuple[float, float] | None],
) -> list[Kernels]:
    """optuna's `_calculate_numerical_distributions` for each row of `observations`
    (dims that share `distribution`), operation for operation (so bit for bit), with
    a row's prior kernel replaced when its dim has a declared prior. The rows go
    through each operation together: per element the same arithmetic, and a sort
    per row, for the call overhead of one dim."""
    step = distribution.step
    is_log = distribution.log
    low: float = distribution.low
    high: float = distribution.high
    if step is not None:
        low -= step / 2
        high += step / 2
    if is_log:
        observations = np.log(observations)
        low = np.log(low)
        high = np.log(high)
    k, n = observations.shape
    mus = np.empty((k, n + 1))
    sigmas = np.empty((k, n + 1))
    mus[:, :n] = observations
    if n:
        order = observations.argsort(axis=1)
        rows = np.arange(k)[:, None]
        ends = np.empty((k, n + 2))
        ends[:, 0] = low
        ends[:, 1:-1] = observations[rows, order]
        ends[:, -1] = high
        gaps = ends[:, 1:] - ends[:, :-1]
        sorted_sigmas = np.maximum(gaps[:, :-1], gaps[:, 1:])
        if not parameters.consider_endpoints and n >= 2:
            sorted_sigmas[:, 0] = gaps[:, 1]
            sorted_sigmas[:, -1] = gaps[:, -2]
        sigmas[rows, order] = sorted_sigmas
        if parameters.consider_magic_clip:
            minsigma = (high - low) / min(100.0, (1.0 + (n + 1)))
        else:
            minsigma = 1e-12  # optuna's EPS
        sigmas[:, :n].clip(minsigma, high - low, out=sigmas[:, :n])
    mus[:, n] = 0.5 * (low + high)
    sigmas[:, n] = high - low
    for r, prior in enumerate(priors):
        if prior is not None:
            mus[r, n], sigmas[r, n] = prior
    d = distribution
    if step is None:
        kind = TruncLogNormKernels if is_log else TruncNormKernels
        return [kind(mus[r], sigmas[r], d.low, d.high) for r in range(k)]
    grid = (
        DiscreteTruncLogNormKernels if is_log
        else DiscreteTruncNormKernels
    )
    return [grid(mus[r], sigmas[r], d.low, d.high, step) for r in range(k)]


def _categorical(
    observations: np.ndarray,
    distribution: CategoricalDistribution,
    parameters: ParzenParameters,
) -> CategoricalKernels:
    """optuna's `_calculate_categorical_distributions`, operation for operation."""
    n_choices = len(distribution.choices)
    if len(observations) == 0:
        return CategoricalKernels(
            weights=np.full((1, n_choices), fill_value=1.0 / n_choices)
        )
    n_kernels = len(observations) + 1
    weights = np.full((n_kernels, n_choices), fill_value=parameters.prior_weight / n_kernels)
    observed = observations.astype(int)
    weights[np.arange(len(observed)), observed] += 1
    row_sums = weights.sum(axis=1, keepdims=True)
    weights /= np.where(row_sums == 0, 1, row_sums)
    return CategoricalKernels(weights)


class _Truncation:
    """Per-kernel constants of one numeric dim: the kernel's bounds in its own
    standard units and the log of its mass inside them (used by both sampling and
    densities). Computed on the kernels, not on each draw: an elementwise formula
    gives the same bits either way."""

    def __init__(self, d: Kernels) -> None:
        assert not isinstance(d, CategoricalKernels)
        self.a = (d.adapted_low - d.mu) / d.sigma
        self.b = (d.adapted_high - d.mu) / d.sigma
        self.log_mass = log_gauss_mass(self.a, self.b)
        self._sampling: tuple[np.ndarray, np.ndarray, np.ndarray, bool] | None = None

    @classmethod
    def of_rows(cls, distributions: Sequence[Kernels]) -> list[_Truncation]:
        """Those of dims with the same bounds, kernels as rows of one array (what
        `_numerical` returns): computed together, elementwise the same."""
        first = distributions[0]
        assert not isinstance(first, CategoricalKernels)
        mu = np.stack([d.mu for d in distributions])  # type: ignore[union-attr]
        sigma = np.stack([d.sigma for d in distributions])  # type: ignore[union-attr]
        a = (first.adapted_low - mu) / sigma
        b = (first.adapted_high - mu) / sigma
        log_mass = log_gauss_mass(a, b)
        out = []
        for r in range(len(distributions)):
            truncation = cls.__new__(cls)
            truncation.a, truncation.b, truncation.log_mass = a[r], b[r], log_mass[r]
            truncation._sampling = None
            out.append(truncation)
        return out

    def _constants(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """(log Phi(a), log Phi(-b), a < 0, whether a < 0 for every kernel): what
        `_truncnorm_ppf` starts from, per kernel."""
        if self._sampling is None:
            left = self.a < 0
            self._sampling = (log_ndtr(self.a), log_ndtr(-self.b), left, bool(left.all()))
        return self._sampling

    def ppf(self, q: np.ndarray, active: np.ndarray) -> np.ndarray:
        """`_truncnorm_ppf(q, a[active], b[active])`, from the per-kernel constants."""
        log_a, log_minus_b, left_kernels, all_left = self._constants()
        log_mass = self.log_mass[active]
        left = None if all_left else left_kernels[active]
        with np.errstate(divide="ignore"):
            if left is None or left.all():
                phi = np.log(q)
                phi += log_mass
                np.logaddexp(log_a[active], phi, out=phi)
                return np.asarray(ndtri_exp(phi)).clip(self.a[active], self.b[active])
            out = np.empty(q.shape)
            right = ~left
            if left.any():
                kernels = active[left]
                log_phi = np.logaddexp(log_a[kernels], np.log(q[left]) + log_mass[left])
                out[left] = ndtri_exp(log_phi)
            kernels = active[right]
            log_phi = np.logaddexp(log_minus_b[kernels], np.log1p(-q[right]) + log_mass[right])
            out[right] = -ndtri_exp(log_phi)
        return out.clip(self.a[active], self.b[active])


class Parzen:
    """optuna's mixture over some dims of a ModelSpace, fitted to NaN-free rows.

    `sample` and `log_pdf` take the positions (within `dims`) of the dims to use, so
    one joint fit also serves as the 1-D estimators of independent TPE: a 1-D fit to
    the same rows has exactly the kernels and weights of the joint fit's marginal.
    """

    def __init__(
        self,
        dims: Sequence[Dim],
        rows: np.ndarray,
        parameters: ParzenParameters,
    ) -> None:
        self.dims = tuple(dims)
        self.weights, self._log_weights, self._cumulative = _mixture_weights(
            parameters.weights, len(rows), parameters.prior_weight
        )
        columns = np.array(rows, dtype=float).T.copy()  # contiguous columns, as optuna's
        self._observations = rows
        self._truncations: dict[int, _Truncation] = {}
        distributions: dict[int, Kernels] = {}
        numeric: dict[FloatDistribution | IntDistribution, list[int]] = {}
        for i, d in enumerate(self.dims):
            if isinstance(d.distribution, CategoricalDistribution):
                distributions[i] = _categorical(columns[i], d.distribution, parameters)
            else:
                assert isinstance(d.distribution, FloatDistribution | IntDistribution)
                numeric.setdefault(d.distribution, []).append(i)
        for distribution, members in numeric.items():
            priors = [self.dims[i].prior for i in members]
            fitted = _numerical(columns[members], distribution, parameters, priors)
            distributions.update(zip(members, fitted, strict=True))
            if len(members) > 1:  # their truncation constants together too
                truncations = _Truncation.of_rows(fitted)
                self._truncations.update(zip(members, truncations, strict=True))
        self._distributions = [distributions[i] for i in range(len(self.dims))]
        self._kernels: dict[int, _Kernels] = {}
        self._marginals: dict[int, _Kernels] = {}

    def _truncation(self, i: int) -> _Truncation:
        truncation = self._truncations.get(i)
        if truncation is None:
            truncation = self._truncations[i] = _Truncation(self._distributions[i])
        return truncation

    def sample(self, rng: np.random.Generator, size: int, columns: Sequence[int]) -> np.ndarray:
        """`size` draws of the given dims (values on the external scale, on the grid)."""
        cumulative = self._cumulative
        active = cumulative.searchsorted(rng.random(size) * cumulative[-1], side="right")
        np.minimum(active, len(cumulative) - 1, out=active)
        out = np.empty((size, len(columns)))
        for j, i in enumerate(columns):
            d = self._distributions[i]
            if isinstance(d, CategoricalKernels):
                cumulative = np.cumsum(d.weights[active, :], axis=-1)
                cumulative[:, -1] = 1.0
                u = rng.random(size)
                out[:, j] = np.sum(cumulative < u[:, None], axis=-1)
                continue
            x = self._truncation(i).ppf(rng.random(size), active) * d.sigma[active]
            x += d.mu[active]
            if d.is_log:
                x = np.exp(x)
            if d.step != 0.0:
                x = d.low + np.round((x - d.low) / d.step) * d.step
            out[:, j] = x.clip(d.low, d.high)
        return out

    def log_pdf(self, x: np.ndarray, columns: Sequence[int]) -> np.ndarray:
        """Log density of each row of x (one column per entry of `columns`)."""
        if len(columns) == 1:
            marginal = self._marginal(columns[0])
            total = marginal.log_density(x[:, 0], marginal.log_weights)
        else:
            total = self._joint(columns[0]).log_density(x[:, 0])
            for j, i in enumerate(columns[1:], start=1):
                total += self._joint(i).log_density(x[:, j])
            total += self._log_weights
        # The reductions as ndarray.max/sum run them, without their Python wrappers.
        peak = np.maximum.reduce(total, axis=1)
        peak[peak == -np.inf] = 0.0
        total -= peak[:, None]
        # Terms below e^-700 of the largest cannot change the sum, and exp is many times
        # slower on the huge negative values far kernels produce.
        np.maximum(total, -700.0, out=total)
        np.exp(total, out=total)
        with np.errstate(divide="ignore"):
            return np.asarray(np.log(np.add.reduce(total, axis=1)) + peak)

    def _joint(self, i: int) -> _Kernels:
        kernels = self._kernels.get(i)
        if kernels is None:
            d = self._distributions[i]
            truncation = (
                None if isinstance(d, CategoricalKernels) else self._truncation(i)
            )
            kernels = self._kernels[i] = _Kernels(d, self._log_weights, truncation)
        return kernels

    def _marginal(self, i: int) -> _Kernels:
        """Dim i alone, with kernels that coincide in it merged (their weights summed).

        A categorical dim has one distinct kernel per category, an int dim one per
        distinct (value, bandwidth): at 10,000 trials this turns most of the work of
        independent TPE into a few dozen kernels. Continuous dims rarely repeat.
        """
        kernels = self._marginals.get(i)
        if kernels is not None:
            return kernels
        d = self._distributions[i]
        merged: Kernels = d
        if isinstance(d, CategoricalKernels):
            # Kernel k's row is the prior plus its observation's category; the last
            # kernel is the prior alone.
            codes = np.append(self._observations[:, i], -1.0)
            _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
            merged = CategoricalKernels(d.weights[first])
        elif d.step != 0.0:
            _, first, inverse = np.unique(
                d.mu + 1j * d.sigma, return_index=True, return_inverse=True
            )
            merged = d._replace(mu=d.mu[first], sigma=d.sigma[first])
        if merged is d:
            kernels = self._joint(i)
        else:
            weights = np.bincount(inverse.ravel(), weights=self.weights)
            with np.errstate(divide="ignore"):
                kernels = _Kernels(merged, np.log(weights), distinct=True)
        self._marginals[i] = kernels
        return kernels


#: A discrete kernel at least this many steps wide gets the midpoint rule with its
#: second-order term instead of two normal CDFs per candidate (the cost that makes
#: 10,000 trials slow). Relative error of a kernel's mass: below 5e-4 within 3
#: sigma, 3e-3 within 5 sigma, where its contribution is already e^-12 of its peak.
_MIDPOINT_MIN_STEPS = 4.0


class _Kernels:
    """Per-kernel constants of one dim (computed once per fit) and the kernels' log
    weights, for log densities of many candidates at once."""

    def __init__(
        self,
        d: Kernels,
        log_weights: np.ndarray,
        truncation: _Truncation | None = None,
        distinct: bool = False,
    ) -> None:
        """`distinct`: no two kernels share (mu, sigma), so there is nothing to merge;
        `truncation`: the fit's constants for `d`, when it has them already."""
        self.log_weights = log_weights
        self.categorical: np.ndarray | None = None
        if isinstance(d, CategoricalKernels):
            # (choices, kernels), contiguous: a candidate's row is one gather.
            with np.errstate(divide="ignore"):
                self.categorical = np.ascontiguousarray(np.log(d.weights).T)
            return
        assert not (d.is_log and d.step), "stepped log dims are modelled as continuous"
        self.is_log = d.is_log
        self.step = d.step
        self.mu = d.mu
        self.inv_sigma = 1.0 / d.sigma
        if truncation is None:
            truncation = _Truncation(d)
        norm = truncation.log_mass
        # log density = -(quad * z^2 + offset), z = (x - mu) / sigma, truncated to [low, high].
        # A continuous dim's quad is 0.5 for every kernel: a scalar multiplies the same.
        self.quad: np.ndarray | float = 0.5
        self.offset = _LOG_SQRT_2PI + np.log(d.sigma) + norm
        self.narrow = np.empty(0, dtype=np.int64)
        if not d.step:
            return
        # Mass of [x - h, x + h], h = step/2: step * pdf(x) * (1 + (h/sigma)^2 (z^2 - 1)/6),
        # the correction folded into the coefficients (log(1 + e) ~ e for these small e).
        c = (0.5 * d.step / d.sigma) ** 2 / 6.0
        self.quad = 0.5 - c
        self.offset += c - math.log(d.step)
        # Kernels too narrow for that get exact masses, deduplicated: ints with small
        # ranges put many kernels on the same (mu, sigma).
        narrow = np.flatnonzero(d.sigma < _MIDPOINT_MIN_STEPS * d.step)
        self.narrow = narrow
        if distinct:
            self.narrow_of = np.arange(narrow.size)
            self.narrow_mu, self.narrow_sigma = d.mu[narrow], d.sigma[narrow]
        else:
            pairs, self.narrow_of = np.unique(
                d.mu[narrow] + 1j * d.sigma[narrow], return_inverse=True
            )
            self.narrow_mu, self.narrow_sigma = pairs.real, pairs.imag
        self.narrow_norm = norm[narrow]

    def log_density(self, x: np.ndarray, log_weights: np.ndarray | None = None) -> np.ndarray:
        """[c, k]: log density (or mass, for a grid) of x[c] under kernel k, unweighted,
        or plus `log_weights` when given (the same bits as adding them afterwards)."""
        if self.categorical is not None:
            z = np.asarray(self.categorical[x.astype(np.int64)])
        elif self.narrow.size == self.mu.size:
            z = self._exact(x)
        else:
            xs = np.log(x) if self.is_log else x
            z = np.subtract(xs[:, None], self.mu)
            z *= self.inv_sigma
            np.square(z, out=z)
            z *= self.quad
            z += self.offset
            if self.narrow.size:
                np.negative(z, out=z)
                z[:, self.narrow] = self._exact(x)
            elif log_weights is not None:
                # -z + w and w - z are the same IEEE operation.
                return np.subtract(log_weights, z, out=z)
            else:
                return np.negative(z, out=z)
        if log_weights is not None:
            z += log_weights
        return z

    def _exact(self, x: np.ndarray) -> np.ndarray:
        """Exact log masses for the kernels too narrow for the midpoint rule."""
        mu, sigma = self.narrow_mu, self.narrow_sigma
        values, value_of = np.unique(x, return_inverse=True)
        half = self.step / 2
        mass = log_gauss_mass(
            (values[:, None] - half - mu) / sigma, (values[:, None] + half - mu) / sigma
        )
        return np.asarray(mass[np.ix_(value_of.ravel(), self.narrow_of.ravel())] - self.narrow_norm)


def log_gauss_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) for a <= b, elementwise, stable in both tails."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        a, b = np.broadcast_arrays(a, b)
    elif a.size and b.min() > 0 and a.max() <= 0:  # NaN fails both: the general path
        return _central(a, b)
    left = b <= 0
    right = a > 0
    central = ~(left | right)
    if central.all():  # the usual case for kernels inside the range: one formula
        return _central(a, b)
    out = np.empty(a.shape)
    if left.any():
        out[left] = _log_diff(log_ndtr(b[left]), log_ndtr(a[left]))
    if right.any():
        out[right] = _log_diff(log_ndtr(-a[right]), log_ndtr(-b[right]))
    if central.any():
        out[central] = _central(a[central], b[central])
    return out


#: Phi(x) is below 1e-17 here: in `_central` it would move a log mass by less than
#: 2e-17, far below anything the densities and draws resolve, so it counts as 0. Most
#: kernels of a long history are narrow and far inside the range, and each CDF costs
#: an erfc call (suggestion_services.normal).
_NEGLIGIBLE = -8.5


def _central(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) for a <= 0 < b: log1p of minus the mass outside [a, b]."""
    return np.asarray(np.log1p(-_lower_tail(a) - _lower_tail(-b)))


def _lower_tail(x: np.ndarray) -> np.ndarray:
    """Phi(x), as 0 where x < _NEGLIGIBLE."""
    near = x >= _NEGLIGIBLE
    if near.all():
        return ndtr(x)
    out = np.zeros(x.shape)
    if near.any():
        out[near] = ndtr(x[near])
    return out


def _log_diff(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(log_p + np.log1p(-np.exp(log_q - log_p)))


def _truncnorm_ppf(q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quantile q of the standard normal truncated to [a, b] (optuna's formulation)."""
    log_mass = log_gauss_mass(a, b)
    left = a < 0
    with np.errstate(divide="ignore"):
        if left.all():  # the usual case: kernels centred above the lower bound
            phi = np.logaddexp(log_ndtr(a), np.log(q) + log_mass)
            return np.clip(ndtri_exp(phi), a, b)
    out = np.empty(q.shape)
    right = ~left
    with np.errstate(divide="ignore"):
        if left.any():
            log_phi = np.logaddexp(log_ndtr(a[left]), np.log(q[left]) + log_mass[left])
            out[left] = ndtri_exp(log_phi)
        if right.any():
            log_phi = np.logaddexp(log_ndtr(-b[right]), np.log1p(-q[right]) + log_mass[right])
            out[right] = -ndtri_exp(log_phi)
    return np.clip(out, a, b)
