"""What TPE's Parzen estimators are made of: distributions, kernels, parameters, weights.

Fields and formulas are optuna's (`optuna.distributions`, the batched kernels of its
TPE sampler, `default_weights`, `default_gamma`), so that suggestion_services.parzen
can be checked against optuna's estimator bit for bit (tests/unit/test_tpe.py). They
are our own so that the model phase of the TPE service needs numpy only: importing
optuna takes tens of milliseconds, which the first model-based suggestion would wait
for in a freshly started service.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# --- the distributions of modelled dims (see suggestion_services.model_space) ----------


@dataclass(frozen=True)
class FloatDistribution:
    """A continuous dim on [low, high], on the log scale when `log`."""

    low: float
    high: float
    log: bool = False
    step: float | None = None


@dataclass(frozen=True)
class IntDistribution:
    """A grid of integers low..high (grid indices, for ModelSpace)."""

    low: int
    high: int
    log: bool = False
    step: int = 1


@dataclass(frozen=True)
class CategoricalDistribution:
    """A choice among `choices` (indices of list values, for ModelSpace)."""

    choices: tuple[Hashable, ...]


ModelDistribution = FloatDistribution | IntDistribution | CategoricalDistribution


# --- the kernels of one dim, one row per observation plus the prior ----------------------


class CategoricalKernels(NamedTuple):
    weights: np.ndarray  # (kernels, choices)


class TruncNormKernels(NamedTuple):
    mu: np.ndarray
    sigma: np.ndarray
    low: float
    high: float

    @property
    def adapted_low(self) -> float:
        return self.low

    @property
    def adapted_high(self) -> float:
        return self.high

    @property
    def is_log(self) -> bool:
        return False

    @property
    def step(self) -> float:
        return 0.0


class TruncLogNormKernels(NamedTuple):
    mu: np.ndarray
    sigma: np.ndarray
    low: float
    high: float

    @property
    def adapted_low(self) -> float:
        return math.log(self.low)

    @property
    def adapted_high(self) -> float:
        return math.log(self.high)

    @property
    def is_log(self) -> bool:
        return True

    @property
    def step(self) -> float:
        return 0.0


class DiscreteTruncNormKernels(NamedTuple):
    mu: np.ndarray
    sigma: np.ndarray
    low: float
    high: float
    step: float

    @property
    def adapted_low(self) -> float:
        return self.low - self.step / 2

    @property
    def adapted_high(self) -> float:
        return self.high + self.step / 2

    @property
    def is_log(self) -> bool:
        return False


class DiscreteTruncLogNormKernels(NamedTuple):
    mu: np.ndarray
    sigma: np.ndarray
    low: float
    high: float
    step: float

    @property
    def adapted_low(self) -> float:
        return math.log(self.low - self.step / 2)

    @property
    def adapted_high(self) -> float:
        return math.log(self.high + self.step / 2)

    @property
    def is_log(self) -> bool:
        return True


NumericKernels = (
    TruncNormKernels | TruncLogNormKernels | DiscreteTruncNormKernels | DiscreteTruncLogNormKernels
)
Kernels = CategoricalKernels | NumericKernels


# --- how kernels are fitted and weighed ---------------------------------------------------


class ParzenParameters(NamedTuple):
    prior_weight: float
    consider_magic_clip: bool
    consider_endpoints: bool
    weights: Callable[[int], np.ndarray]
    multivariate: bool


def default_weights(n: int) -> np.ndarray:
    """Weights of n observations, oldest first: the last 25 count fully, older ones ramp
    down linearly (optuna's default)."""
    if n == 0:
        return np.asarray([])
    if n < 25:
        return np.ones(n)
    ramp = np.linspace(1.0 / n, 1.0, num=n - 25)
    return np.concatenate([ramp, np.ones(25)], axis=0)


def default_gamma(n: int) -> int:
    """How many of n observed trials are "good" (optuna's default: 10%, at most 25)."""
    return min(math.ceil(0.1 * n), 25)


def checked_weights(weights: Callable[[int], np.ndarray], n: int) -> np.ndarray:
    """A custom weights function's first n values, refused when negative or all zero."""
    w = np.array(weights(n))[:n]
    if np.any(w < 0):
        raise ValueError(f"the weights function returned negative values {w} for n={n}")
    if len(w) > 0 and np.sum(w) <= 0:
        raise ValueError(f"the weights function returned all-zero values {w} for n={n}")
    return w
