"""The bridge between search-space keys and scikit-optimize's model space.

Unlike Katib's skopt service, which turns every double into a log-uniform Real
(NaN for ranges that touch zero), each parameter keeps its declared scale:

* continuous double: uniform/normal → Real on the linear scale; logUniform/
  logNormal → Real "log-uniform" (modelled on the log scale). skopt has no
  normal prior: the declared normal only shapes the initial random points
  (drawn by SearchSpace.sample, clipped to the bounds);
* int, or double with a step, uniform/normal → Integer over the grid index k of
  min + k*step (so every model point is on the step); with a log distribution →
  Real "log-uniform" over the values, snapped to the nearest grid point;
* categorical/discrete → Categorical over the list indices;
* a parameter with a single value is left out of the model (skopt cannot
  represent a zero-width dimension) and written as that value.

Also here: the estimators skopt's `cook_estimator` builds, with the GBRT shim
that scikit-optimize 0.10.2 needs on numpy >= 2.4 and scikit-learn >= 1.6.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from skopt.learning import GradientBoostingQuantileRegressor
from skopt.space import Categorical, Dimension, Integer, Real, Space
from skopt.utils import cook_estimator, normalize_dimensions

from .search_space import (
    OFF_SPACE,
    Distribution,
    Key,
    ListParameter,
    NumericParameter,
    Parameter,
    SearchSpace,
    format_double,
)

_LOG = (Distribution.LOG_UNIFORM, Distribution.LOG_NORMAL)

DimKind = Literal["real", "snap", "index", "category"]


@dataclass(frozen=True)
class ModelDim:
    """One modelled parameter: its position in the key and how entries map to skopt values."""

    position: int
    parameter: Parameter
    kind: DimKind

    def dimension(self) -> Dimension:
        """A fresh skopt dimension (normalize_dimensions mutates the ones it gets)."""
        p = self.parameter
        if self.kind == "category":
            return Categorical(list(range(_size(p))))
        if self.kind == "index":
            return Integer(0, _size(p) - 1)
        assert isinstance(p, NumericParameter)
        prior = "log-uniform" if p.distribution in _LOG else "uniform"
        return Real(p.min, p.max, prior=prior)

    def to_model(self, entry: Hashable) -> float | int:
        """The skopt value of a key entry."""
        if self.kind == "real":
            return float(entry)  # type: ignore[arg-type]
        if self.kind == "snap":
            return float(self.parameter.value(entry))
        return int(entry)  # type: ignore[call-overload]

    def to_entry(self, value: Any) -> Hashable:
        """The key entry for a skopt value (clipped to the bounds, snapped to the step)."""
        p = self.parameter
        if self.kind in ("index", "category"):
            return int(min(max(round(float(value)), 0), _size(p) - 1))
        assert isinstance(p, NumericParameter)
        x = min(max(float(value), p.min), p.max)
        if self.kind == "real":
            return min(max(float(format_double(x)), p.min), p.max)
        k = round((x - p.min) / (p.step or 1))
        return int(min(max(k, 0), _size(p) - 1))


def _size(p: Parameter) -> int:
    if p.size is None:
        raise ValueError(f"parameter {p.name} is continuous")
    return p.size


def _model_dim(position: int, p: Parameter) -> ModelDim | Hashable:
    """The ModelDim for a parameter, or its only key entry when it has a single value."""
    if isinstance(p, ListParameter):
        return ModelDim(position, p, "category") if p.size > 1 else 0
    assert isinstance(p, NumericParameter)
    if p.size is None:
        if p.max > p.min:
            return ModelDim(position, p, "real")
        return p.key_of(format_double(p.min))
    if p.size == 1:
        return 0
    return ModelDim(position, p, "snap" if p.distribution in _LOG else "index")


class ModelSpace:
    """Keys ↔ rows of skopt's transformed space, for one search space.

    `normalize` scales every dimension to [0, 1] (and one-hot encodes categories),
    as skopt does for Gaussian processes; tree models see raw values.
    """

    def __init__(self, space: SearchSpace, normalize: bool) -> None:
        self.search_space = space
        self.dims: list[ModelDim] = []
        self._template: list[Hashable] = []
        for i, p in enumerate(space.parameters):
            dim = _model_dim(i, p)
            if isinstance(dim, ModelDim):
                self.dims.append(dim)
                self._template.append(None)
            else:
                self._template.append(dim)
        dimensions = [d.dimension() for d in self.dims]
        if dimensions and normalize:
            dimensions = list(normalize_dimensions(dimensions).dimensions)
        self.space: Space | None = Space(dimensions) if dimensions else None
        self.is_categorical = bool(self.dims) and all(d.kind == "category" for d in self.dims)

    @property
    def empty(self) -> bool:
        """True when every parameter has a single value (nothing to model)."""
        return self.space is None

    @property
    def bounds(self) -> list[tuple[float, float]]:
        assert self.space is not None
        return list(self.space.transformed_bounds)

    def accepts(self, key: Key) -> bool:
        """Whether a history key can feed the model (a point of the space)."""
        return OFF_SPACE not in key

    def transform(self, keys: Sequence[Key]) -> np.ndarray:
        """Rows of the transformed space for keys that are points of the space."""
        return self.transform_values([[d.to_model(k[d.position]) for d in self.dims] for k in keys])

    def transform_values(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        """Rows of the transformed space for rows of skopt values."""
        assert self.space is not None
        return np.asarray(self.space.transform(rows), dtype=float)

    def keys_from_values(self, rows: Sequence[Sequence[Any]]) -> list[Key]:
        """Keys for rows of skopt values (one value per modelled dimension)."""
        keys: list[Key] = []
        for row in rows:
            entries = list(self._template)
            for d, v in zip(self.dims, row, strict=True):
                entries[d.position] = d.to_entry(v)
            keys.append(tuple(entries))
        return keys

    def keys_from_transformed(self, xt: np.ndarray) -> list[Key]:
        """Keys for rows of the transformed space (e.g. an optimiser's answer)."""
        assert self.space is not None
        return self.keys_from_values(self.space.inverse_transform(np.atleast_2d(xt)))

    def sample_values(self, rs: np.random.RandomState, m: int) -> list[list[Any]]:
        """m rows of skopt values drawn from skopt's priors, snapped to the grid where the
        parameter has a step (candidates for the acquisition; keys are made on demand)."""
        assert self.space is not None
        columns = list(zip(*self.space.rvs(n_samples=m, random_state=rs), strict=True))
        for j, d in enumerate(self.dims):
            if d.kind == "snap":
                p = d.parameter
                assert isinstance(p, NumericParameter)
                step = p.step or 1.0
                k = np.clip(np.rint((np.asarray(columns[j], dtype=float) - p.min) / step),
                            0, _size(p) - 1)
                columns[j] = tuple(np.clip(p.min + k * step, p.min, p.max).tolist())
        return [list(row) for row in zip(*columns, strict=True)]


class ShimmedGBRT(GradientBoostingQuantileRegressor):  # type: ignore[misc]
    """skopt's GBRT made to work on current numpy and scikit-learn.

    scikit-optimize 0.10.2 calls np.in1d (removed in numpy 2.4) in predict, and lists
    its bases so that scikit-learn >= 1.6 does not see a regressor. This subclass
    answers the regressor tag itself and computes the std without np.in1d; nothing
    is patched globally.
    """

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        return tags

    def predict(
        self, X: Any, return_std: bool = False, return_quantiles: bool = False
    ) -> Any:
        if not return_std or return_quantiles:
            return super().predict(X, return_std=False, return_quantiles=return_quantiles)
        quantiles = list(self.quantiles)
        if not all(q in quantiles for q in (0.16, 0.5, 0.84)):
            raise ValueError("return_std needs the quantiles 0.16, 0.5 and 0.84")
        low, mean, high = (
            self.regressors_[quantiles.index(q)].predict(X) for q in (0.16, 0.5, 0.84)
        )
        return mean, (high - low) / 2.0


def make_estimator(kind: str, model_space: ModelSpace, seed: int) -> Any:
    """The surrogate skopt's Optimizer would build for `kind` (GP, RF, ET, GBRT)."""
    if kind == "GBRT":
        gbrt = GradientBoostingRegressor(n_estimators=30, loss="quantile")
        return ShimmedGBRT(base_estimator=gbrt, random_state=seed)
    dimensions = model_space.space.dimensions if model_space.space is not None else None
    return cook_estimator(kind, space=dimensions, random_state=seed)
