"""Parzen estimators for TPE: optuna's kernels, vectorised sampling and densities.

The kernels (bandwidths with optuna's magic clip, the prior kernel, categorical
smoothing, the ramp of weights that favours recent trials) are built by optuna's
`_ParzenEstimator`, so the model is optuna's TPE. Drawing candidates and
evaluating densities are re-implemented here on scipy.special: optuna's own
truncated-normal helpers call a Python function per element, which costs tens of
milliseconds per suggestion at 10,000 trials; these stay in C. They compute the
same quantities (checked against optuna in tests/unit/test_tpe.py).

The estimators work in the coordinates of suggestion_services.model_space.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
from optuna.samplers._tpe.probability_distributions import (
    _BatchedCategoricalDistributions,
    _BatchedDistributions,
    _MixtureOfProductDistribution,
)
from scipy.special import log_ndtr, ndtr, ndtri_exp

from .model_space import Dim

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class _Estimator(_ParzenEstimator):
    """optuna's estimator whose prior kernel may be replaced (normal/logNormal priors)."""

    def __init__(
        self,
        observations: dict[str, np.ndarray],
        search_space: dict[str, BaseDistribution],
        parameters: _ParzenEstimatorParameters,
        priors: Mapping[str, tuple[float, float]],
    ) -> None:
        self._priors = priors
        super().__init__(observations, search_space, parameters)

    def _calculate_distributions(
        self,
        observations: np.ndarray,
        param_name: str,
        search_space: BaseDistribution,
        parameters: _ParzenEstimatorParameters,
    ) -> _BatchedDistributions:
        dist = super()._calculate_distributions(
            observations, param_name, search_space, parameters
        )
        prior = self._priors.get(param_name)
        if prior is None or isinstance(dist, _BatchedCategoricalDistributions):
            return dist
        mu, sigma = dist.mu.copy(), dist.sigma.copy()
        mu[-1], sigma[-1] = prior
        return dist._replace(mu=mu, sigma=sigma)

    @property
    def mixture(self) -> _MixtureOfProductDistribution:
        return self._mixture_distribution


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
        parameters: _ParzenEstimatorParameters,
    ) -> None:
        self.dims = tuple(dims)
        observations = {d.name: rows[:, i] for i, d in enumerate(self.dims)}
        search_space = {d.name: d.distribution for d in self.dims}
        priors = {d.name: d.prior for d in self.dims if d.prior is not None}
        mixture = _Estimator(observations, search_space, parameters, priors).mixture
        self.weights: np.ndarray = mixture.weights
        with np.errstate(divide="ignore"):  # a tiny prior_weight may underflow to 0
            self._log_weights = np.log(mixture.weights)
        self._distributions = mixture.distributions
        self._observations = rows
        self._kernels: dict[int, _Kernels] = {}
        self._marginals: dict[int, _Kernels] = {}

    def sample(self, rng: np.random.Generator, size: int, columns: Sequence[int]) -> np.ndarray:
        """`size` draws of the given dims (values on the external scale, on the grid)."""
        cumulative = np.cumsum(self.weights)
        active = np.minimum(
            np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right"),
            len(cumulative) - 1,
        )
        out = np.empty((size, len(columns)))
        for j, i in enumerate(columns):
            d = self._distributions[i]
            if isinstance(d, _BatchedCategoricalDistributions):
                cumulative = np.cumsum(d.weights[active, :], axis=-1)
                cumulative[:, -1] = 1.0
                u = rng.random(size)
                out[:, j] = np.sum(cumulative < u[:, None], axis=-1)
                continue
            mu, sigma = d.mu[active], d.sigma[active]
            a = (d.adapted_low - mu) / sigma
            b = (d.adapted_high - mu) / sigma
            x = _truncnorm_ppf(rng.random(size), a, b) * sigma + mu
            if d.is_log:
                x = np.exp(x)
            if d.step != 0.0:
                x = d.low + np.round((x - d.low) / d.step) * d.step
            out[:, j] = np.clip(x, d.low, d.high)
        return out

    def log_pdf(self, x: np.ndarray, columns: Sequence[int]) -> np.ndarray:
        """Log density of each row of x (one column per entry of `columns`)."""
        if len(columns) == 1:
            marginal = self._marginal(columns[0])
            total = marginal.log_density(x[:, 0])
            total += marginal.log_weights
        else:
            total = self._joint(columns[0]).log_density(x[:, 0])
            for j, i in enumerate(columns[1:], start=1):
                total += self._joint(i).log_density(x[:, j])
            total += self._log_weights
        peak = total.max(axis=1)
        peak[peak == -np.inf] = 0.0
        total -= peak[:, None]
        # Terms below e^-700 of the largest cannot change the sum, and exp is many times
        # slower on the huge negative values far kernels produce.
        np.maximum(total, -700.0, out=total)
        np.exp(total, out=total)
        with np.errstate(divide="ignore"):
            return np.asarray(np.log(total.sum(axis=1)) + peak)

    def _joint(self, i: int) -> _Kernels:
        kernels = self._kernels.get(i)
        if kernels is None:
            kernels = self._kernels[i] = _Kernels(self._distributions[i], self._log_weights)
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
        merged: _BatchedDistributions = d
        if isinstance(d, _BatchedCategoricalDistributions):
            # Kernel k's row is the prior plus its observation's category; the last
            # kernel is the prior alone.
            codes = np.append(self._observations[:, i], -1.0)
            _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
            merged = _BatchedCategoricalDistributions(d.weights[first])
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
        self, d: _BatchedDistributions, log_weights: np.ndarray, distinct: bool = False
    ) -> None:
        """`distinct`: no two kernels share (mu, sigma), so there is nothing to merge."""
        self.log_weights = log_weights
        self.categorical: np.ndarray | None = None
        if isinstance(d, _BatchedCategoricalDistributions):
            # (choices, kernels), contiguous: a candidate's row is one gather.
            with np.errstate(divide="ignore"):
                self.categorical = np.ascontiguousarray(np.log(d.weights).T)
            return
        assert not (d.is_log and d.step), "stepped log dims are modelled as continuous"
        self.is_log = d.is_log
        self.step = d.step
        self.mu = d.mu
        self.inv_sigma = 1.0 / d.sigma
        norm = log_gauss_mass((d.adapted_low - d.mu) / d.sigma, (d.adapted_high - d.mu) / d.sigma)
        # log density = -(quad * z^2 + offset), z = (x - mu) / sigma, truncated to [low, high].
        self.quad = np.full(d.mu.shape, 0.5)
        self.offset = _LOG_SQRT_2PI + np.log(d.sigma) + norm
        self.narrow = np.empty(0, dtype=np.int64)
        if not d.step:
            return
        # Mass of [x - h, x + h], h = step/2: step * pdf(x) * (1 + (h/sigma)^2 (z^2 - 1)/6),
        # the correction folded into the coefficients (log(1 + e) ~ e for these small e).
        c = (0.5 * d.step / d.sigma) ** 2 / 6.0
        self.quad -= c
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

    def log_density(self, x: np.ndarray) -> np.ndarray:
        """[c, k]: log density (or mass, for a grid) of x[c] under kernel k, unweighted."""
        if self.categorical is not None:
            return np.asarray(self.categorical[x.astype(np.int64)])
        if self.narrow.size == self.mu.size:
            return self._exact(x)
        xs = np.log(x) if self.is_log else x
        z = np.subtract(xs[:, None], self.mu)
        z *= self.inv_sigma
        np.square(z, out=z)
        z *= self.quad
        z += self.offset
        np.negative(z, out=z)
        if self.narrow.size:
            z[:, self.narrow] = self._exact(x)
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
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    left = b <= 0
    right = a > 0
    central = ~(left | right)
    if central.all():  # the usual case for kernels inside the range: one formula
        return np.asarray(np.log1p(-ndtr(a) - ndtr(-b)))
    out = np.empty(a.shape)
    if left.any():
        out[left] = _log_diff(log_ndtr(b[left]), log_ndtr(a[left]))
    if right.any():
        out[right] = _log_diff(log_ndtr(-a[right]), log_ndtr(-b[right]))
    if central.any():
        out[central] = np.log1p(-ndtr(a[central]) - ndtr(-b[central]))
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
