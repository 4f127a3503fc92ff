"""The search space as TPE's model sees it: one float column per modelled parameter.

See `ModelSpace` for how each parameter kind and distribution is modelled, and
suggestion_services.parzen for the estimators that work in these coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from .parzen_types import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    ModelDistribution,
)
from .search_space import (
    Distribution,
    Key,
    ListParameter,
    NumericParameter,
    Parameter,
    SearchSpace,
    format_double,
    round_doubles,
)

# Relative tolerance for accepting a history value as inside [min, max].
_BOUND_TOLERANCE = 1e-9


class DimKind(Enum):
    """How one parameter is modelled."""

    CATEGORICAL = "categorical"  # categorical/discrete list: index of the value
    INDEX = "index"  # finite numeric on a linear scale: grid index k (value = min + k*step)
    CONTINUOUS = "continuous"  # double without step: the value itself (log scale if log*)
    LOG_GRID = "log_grid"  # finite numeric with a log distribution: value on the log scale


@dataclass(frozen=True)
class Dim:
    """One modelled parameter: its column in the model arrays and its optuna distribution."""

    column: int
    position: int
    name: str
    kind: DimKind
    parameter: Parameter
    distribution: ModelDistribution
    #: (mu, sigma) of the prior kernel on the estimator's internal scale, for normal/logNormal.
    prior: tuple[float, float] | None


class ModelSpace:
    """The search space in model coordinates (one float column per modelled parameter).

    * categorical and discrete: the index of the value (optuna CategoricalDistribution).
    * int, or double with step, on a linear scale (uniform, normal): the grid index k
      (optuna IntDistribution(0, size-1), i.e. optuna's discrete kernels on the grid).
    * double without step: the value (FloatDistribution, log=True for logUniform/logNormal).
    * int or stepped double with logUniform/logNormal: the grid value on the log scale,
      modelled as continuous between the first and last grid point and snapped to the
      nearest grid point before scoring (optuna has no stepped log distribution).
    * normal/logNormal: the prior kernel is the declared distribution, N((min+max)/2,
      (max-min)/6) on the linear or log scale, instead of optuna's flat-ish
      N(mid, max-min); kernels stay truncated to [min, max].

    A parameter with a single value is not modelled. A history value that is missing,
    unparseable, outside [min, max] or not in the list becomes NaN in its column;
    an in-bounds value off the grid is moved to the nearest grid point.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        dims: list[Dim] = []
        fixed: dict[int, Hashable] = {}
        for position, p in enumerate(space.parameters):
            spec = _model_parameter(p)
            if spec is None:
                fixed[position] = 0 if p.size is not None else _continuous_entry(p, 0.0)
                continue
            kind, distribution, prior = spec
            dims.append(Dim(len(dims), position, p.name, kind, p, distribution, prior))
        self.dims: tuple[Dim, ...] = tuple(dims)
        self._fixed = fixed
        self._n_params = len(space.parameters)

    @property
    def width(self) -> int:
        return len(self.dims)

    def coords(self, assignments: Mapping[str, str]) -> tuple[float, ...]:
        """Model coordinates of a trial's assignments (NaN where not usable)."""
        return tuple(_coordinate(d, assignments.get(d.name)) for d in self.dims)

    def key(self, row: np.ndarray) -> Key:
        """The search-space key of a point in model coordinates."""
        entries: list[Hashable] = [None] * self._n_params
        for position, entry in self._fixed.items():
            entries[position] = entry
        for d in self.dims:
            entries[d.position] = _entry(d, float(row[d.column]))
        return tuple(entries)

    def coords_of_key(self, key: Key) -> np.ndarray:
        """Model coordinates of a key produced by `key` (to lie about pending points)."""
        return np.array([_entry_coordinate(d, key[d.position]) for d in self.dims], dtype=float)

    def snap(self, dims: Sequence[Dim], samples: np.ndarray) -> np.ndarray:
        """Move candidates (one column per dim of `dims`) to the values they will be
        written as, so that they are scored where they will be evaluated."""
        out = samples.copy()
        for i, d in enumerate(dims):
            if d.kind is DimKind.CONTINUOUS:
                p = d.parameter
                assert isinstance(p, NumericParameter)
                out[:, i] = round_doubles(out[:, i].tolist(), p.min, p.max)
            elif d.kind is DimKind.LOG_GRID:
                out[:, i] = [_entry_coordinate(d, _entry(d, x)) for x in out[:, i].tolist()]
        return out


def _model_parameter(
    p: Parameter,
) -> tuple[DimKind, ModelDistribution, tuple[float, float] | None] | None:
    if isinstance(p, ListParameter):
        if p.size <= 1:
            return None
        return DimKind.CATEGORICAL, CategoricalDistribution(tuple(range(p.size))), None
    assert isinstance(p, NumericParameter)
    lo, hi = p.min, p.max
    is_log = p.distribution in (Distribution.LOG_UNIFORM, Distribution.LOG_NORMAL)
    is_normal = p.distribution in (Distribution.NORMAL, Distribution.LOG_NORMAL)
    if p.size is None:
        if lo >= hi:
            return None
        prior = None
        if is_normal:
            a, b = (math.log(lo), math.log(hi)) if is_log else (lo, hi)
            prior = ((a + b) / 2, (b - a) / 6)
        return DimKind.CONTINUOUS, FloatDistribution(lo, hi, log=is_log), prior
    if p.size <= 1:
        return None
    step = float(p.step or 1)
    if is_log:
        first, last = float(p.value(0)), float(p.value(p.size - 1))
        prior = None
        if is_normal:
            a, b = math.log(lo), math.log(hi)
            prior = ((a + b) / 2, (b - a) / 6)
        return DimKind.LOG_GRID, FloatDistribution(first, last, log=True), prior
    prior = (((lo + hi) / 2 - lo) / step, (hi - lo) / 6 / step) if is_normal else None
    return DimKind.INDEX, IntDistribution(0, p.size - 1), prior


def _in_bounds(p: NumericParameter, text: str | None) -> float:
    if text is None:
        return math.nan
    try:
        v = float(text)
    except ValueError:
        return math.nan
    tol = _BOUND_TOLERANCE * max(1.0, p.max - p.min)
    if not p.min - tol <= v <= p.max + tol:  # also rejects NaN
        return math.nan
    return min(max(v, p.min), p.max)


def _grid_index(p: NumericParameter, v: float) -> int:
    assert p.size is not None
    k = round((v - p.min) / (p.step or 1))
    return min(max(int(k), 0), p.size - 1)


def _coordinate(d: Dim, text: str | None) -> float:
    p = d.parameter
    if d.kind is DimKind.CATEGORICAL:
        entry = p.key_of(text)
        return float(entry) if isinstance(entry, int) else math.nan
    assert isinstance(p, NumericParameter)
    v = _in_bounds(p, text)
    if math.isnan(v) or d.kind is DimKind.CONTINUOUS:
        return v
    k = _grid_index(p, v)
    return float(k) if d.kind is DimKind.INDEX else float(p.value(k))


def _continuous_entry(p: Parameter, x: float) -> float:
    assert isinstance(p, NumericParameter)
    return min(max(float(format_double(x)), p.min), p.max)


def _entry(d: Dim, x: float) -> Hashable:
    p = d.parameter
    if d.kind is DimKind.CONTINUOUS:
        return _continuous_entry(p, x)
    assert p.size is not None
    if d.kind is DimKind.LOG_GRID:
        assert isinstance(p, NumericParameter)
        return _grid_index(p, x)
    return min(max(round(x), 0), p.size - 1)


def _entry_coordinate(d: Dim, entry: Hashable) -> float:
    if d.kind is DimKind.CONTINUOUS:
        return float(entry)  # type: ignore[arg-type]
    if d.kind is DimKind.LOG_GRID:
        return float(d.parameter.value(entry))
    return float(entry)  # type: ignore[arg-type]
