"""Typed search spaces: parsing Katib parameter specs, sampling, quantising, formatting.

Every point of a search space is handled as a *key*: a tuple with one entry per
parameter. For a parameter with finitely many values (int, double with step,
categorical, discrete) the entry is the value's index, so keys compare by value
("0.10" and "0.1" are the same point) and grids can be walked with plain integer
products. A continuous double's entry is the float it will be written as. A value
that is not a point of the space (off-grid, out of bounds, unparseable, missing)
becomes the `OFF_SPACE` marker, which never equals an entry the space produces.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import math
import operator
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast

import numpy as np

from katib.errors import InvalidArgumentError

# Relative tolerance when deciding whether a double lies on min + k*step.
_GRID_TOLERANCE = 1e-9
# Significant digits kept when writing doubles: enough for any real tuning value,
# few enough to drop float noise such as 0.30000000000000004.
_DOUBLE_DIGITS = 12
# Largest single axis itertools.product may copy into a tuple.
_MATERIALISE_AXIS_LIMIT = 1_000_000


class ParameterType(StrEnum):
    """Parameter kinds, spelled as in the Experiment CRD."""

    DOUBLE = "double"
    INT = "int"
    DISCRETE = "discrete"
    CATEGORICAL = "categorical"


class Distribution(StrEnum):
    """Sampling distributions, spelled as in the Experiment CRD."""

    UNIFORM = "uniform"
    LOG_UNIFORM = "logUniform"
    NORMAL = "normal"
    LOG_NORMAL = "logNormal"


class _OffSpace:
    """Type of OFF_SPACE: the key entry for a value that is not a point of the space."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OFF_SPACE"


OFF_SPACE: Hashable = _OffSpace()


Key = tuple[Hashable, ...]


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter exactly as the wire carries it (all bounds are strings)."""

    name: str
    parameter_type: ParameterType | str
    min: str = ""
    max: str = ""
    step: str = ""
    list: tuple[str, ...] = ()
    distribution: Distribution | str = ""


def format_double(value: float, step: float | None = None) -> str:
    """Write a double as its shortest repr after dropping float noise ("0.3", "1e-05").

    With a step, enough digits are kept to tell neighbouring grid points apart
    even when the step is tiny compared with the value.
    """
    digits = _DOUBLE_DIGITS
    ratio = abs(value) / step if step else 0.0
    if ratio > 0.0 and math.isfinite(ratio):  # 0 also when value/step underflows
        digits = min(17, digits + max(0, math.ceil(math.log10(ratio))))
    rounded = float(f"{value:.{digits}g}")
    if rounded == 0.0:
        rounded = 0.0  # no "-0.0"
    return repr(rounded)


def round_doubles(values: Iterable[float], low: float, high: float) -> list[float]:
    """min(max(float(format_double(v)), low), high) for each value (no step), without
    the repr round trip: the same numbers at a fraction of the cost, for scoring
    many candidates."""
    spec = f".{_DOUBLE_DIGITS}g"
    # + 0.0 turns -0.0 into 0.0, as format_double does, and leaves every other value.
    return [min(max(float(format(v, spec)) + 0.0, low), high) for v in values]


def _parse_float(spec: ParameterSpec, what: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgumentError(
            f"Param {spec.name}: {what} {text!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise InvalidArgumentError(f"Param {spec.name}: {what} {text!r} must be finite")
    return value


def _parse_int(spec: ParameterSpec, what: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        value = _parse_float(spec, what, text)
        if value != int(value):
            raise InvalidArgumentError(
                f"Param {spec.name}: {what} {text!r} is not an integer"
            ) from None
        return int(value)


class Parameter(abc.ABC):
    """Common interface of typed parameters; keys are described in the module doc."""

    name: str
    # Number of distinct values; None for a continuous double.
    size: int | None

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator, m: int) -> list[Hashable]:
        """Draw m key entries according to the parameter's distribution."""

    @abc.abstractmethod
    def key_of(self, text: str | None) -> Hashable:
        """Key entry for an assignment string (OFF_SPACE when not a point)."""

    @abc.abstractmethod
    def format(self, entry: Hashable) -> str:
        """Assignment string for a key entry produced by this parameter."""

    @abc.abstractmethod
    def value(self, entry: Hashable) -> float | int | str:
        """Typed value for a key entry (for model-based algorithms)."""


@dataclass(frozen=True, eq=False)
class NumericParameter(Parameter):
    """An int or double range; with a step it is the finite grid min + k*step <= max."""

    name: str
    is_int: bool
    min: float
    max: float
    step: float | None
    distribution: Distribution
    size: int | None = field(init=False)

    def __post_init__(self) -> None:
        if self.step is None:
            size = None
        elif self.is_int:
            size = int(self.max - self.min) // int(self.step) + 1
        else:
            ratio = (self.max - self.min) / self.step
            size = math.floor(ratio * (1 + _GRID_TOLERANCE) + _GRID_TOLERANCE) + 1
        object.__setattr__(self, "size", size)

    def _grid(self, k: int) -> float:
        if self.is_int:
            return int(self.min) + k * int(self.step or 1)
        return min(self.min + k * (self.step or 0.0), self.max)

    def _continuous(self, rng: np.random.Generator, m: int) -> np.ndarray:
        lo, hi = self.min, self.max
        dist = self.distribution
        if dist is Distribution.LOG_UNIFORM:
            return np.exp(rng.uniform(math.log(lo), math.log(hi), m))
        if dist is Distribution.NORMAL:
            return np.clip(rng.normal((lo + hi) / 2, (hi - lo) / 6, m), lo, hi)
        if dist is Distribution.LOG_NORMAL:
            llo, lhi = math.log(lo), math.log(hi)
            return np.clip(np.exp(rng.normal((llo + lhi) / 2, (lhi - llo) / 6, m)), lo, hi)
        return rng.uniform(lo, hi, m)

    def sample(self, rng: np.random.Generator, m: int) -> list[Hashable]:
        if self.size is None:
            return [self._round(x) for x in self._continuous(rng, m).tolist()]
        if self.distribution is Distribution.UNIFORM:
            return rng.integers(0, self.size, m).tolist()
        step = self.step or 1
        k = np.rint((self._continuous(rng, m) - self.min) / step)
        return np.clip(k, 0, self.size - 1).astype(np.int64).tolist()

    def _round(self, x: float) -> float:
        return min(max(float(format_double(x)), self.min), self.max)

    def key_of(self, text: str | None) -> Hashable:
        if text is None:
            return OFF_SPACE
        try:
            v = float(text)
        except ValueError:
            return OFF_SPACE
        tol = _GRID_TOLERANCE * max(1.0, abs(self.max - self.min))
        if not self.min - tol <= v <= self.max + tol:
            return OFF_SPACE
        if self.size is None:
            return self._round(v)
        k = (v - self.min) / (self.step or 1)
        kr = round(k)
        if 0 <= kr < self.size and abs(k - kr) <= 1e-6:
            return kr
        return OFF_SPACE

    def format(self, entry: Hashable) -> str:
        if self.size is None:
            return format_double(entry)  # type: ignore[arg-type]
        value = self._grid(entry)  # type: ignore[arg-type]
        return str(value) if self.is_int else format_double(value, self.step)

    def value(self, entry: Hashable) -> float | int:
        if self.size is None:
            return float(entry)  # type: ignore[arg-type]
        if self.is_int:
            return int(self._grid(entry))  # type: ignore[arg-type]
        return float(format_double(self._grid(entry), self.step))  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class ListParameter(Parameter):
    """A categorical or discrete list; values are written back exactly as listed."""

    name: str
    values: tuple[str, ...]
    discrete: bool
    size: int = field(init=False)
    _index: dict[str, int] = field(init=False, repr=False)
    _numeric: dict[float, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", len(self.values))
        index: dict[str, int] = {}
        numeric: dict[float, int] = {}
        for i, v in enumerate(self.values):
            index.setdefault(v, i)
            if self.discrete:
                with contextlib.suppress(ValueError):
                    numeric.setdefault(float(v), i)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_numeric", numeric)

    def sample(self, rng: np.random.Generator, m: int) -> list[Hashable]:
        return rng.integers(0, self.size, m).tolist()

    def key_of(self, text: str | None) -> Hashable:
        if text is None:
            return OFF_SPACE
        i = self._index.get(text)
        if i is not None:
            return i
        if self.discrete:
            try:
                i = self._numeric.get(float(text))
            except ValueError:
                i = None
            if i is not None:
                return i
        return OFF_SPACE

    def format(self, entry: Hashable) -> str:
        return self.values[cast(int, entry)]

    def value(self, entry: Hashable) -> float | int | str:
        text = self.values[cast(int, entry)]
        if self.discrete:
            try:
                return int(text)
            except ValueError:
                try:
                    return float(text)
                except ValueError:
                    return text
        return text


def parse_parameter(spec: ParameterSpec) -> Parameter:
    """Validate one spec and build its typed parameter (InvalidArgumentError names it)."""
    name = spec.name
    if not name:
        raise InvalidArgumentError("parameter name must not be empty")
    try:
        ptype = ParameterType(spec.parameter_type)
    except ValueError:
        raise InvalidArgumentError(
            f"Param {name}: unknown parameter type {spec.parameter_type!r}"
        ) from None
    if ptype in (ParameterType.CATEGORICAL, ParameterType.DISCRETE):
        if not spec.list:
            raise InvalidArgumentError(f"Param {name}: feasibleSpace.list must not be empty")
        return ListParameter(name, tuple(spec.list), ptype is ParameterType.DISCRETE)
    try:
        dist = Distribution(spec.distribution) if spec.distribution else Distribution.UNIFORM
    except ValueError:
        raise InvalidArgumentError(
            f"Param {name}: unknown distribution {spec.distribution!r}"
        ) from None
    if not spec.min or not spec.max:
        raise InvalidArgumentError(f"Param {name}: feasibleSpace.min and max are required")
    is_int = ptype is ParameterType.INT
    lo: float
    hi: float
    step: float | None
    if is_int:
        lo, hi = _parse_int(spec, "min", spec.min), _parse_int(spec, "max", spec.max)
        step = _parse_int(spec, "step", spec.step) if spec.step else 1
    else:
        lo, hi = _parse_float(spec, "min", spec.min), _parse_float(spec, "max", spec.max)
        step = _parse_float(spec, "step", spec.step) if spec.step else None
    if lo > hi:
        raise InvalidArgumentError(
            f"Param {name}: min ({spec.min}) must be less than or equal to max ({spec.max})"
        )
    if step is not None and step <= 0:
        raise InvalidArgumentError(f"Param {name}: step ({spec.step}) must be greater than zero")
    if dist in (Distribution.LOG_UNIFORM, Distribution.LOG_NORMAL) and lo <= 0:
        raise InvalidArgumentError(
            f"Param {name}: {dist.value} distribution requires min > 0, got {spec.min}"
        )
    return NumericParameter(name, is_int, lo, hi, step, dist)


@dataclass(frozen=True, eq=False)
class SearchSpace:
    """The parsed parameters, in spec order (which fixes key order and grid order)."""

    specs: tuple[ParameterSpec, ...]
    parameters: tuple[Parameter, ...]

    @classmethod
    def from_specs(cls, specs: Iterable[ParameterSpec]) -> SearchSpace:
        """Parse and validate; raises InvalidArgumentError naming the bad parameter."""
        specs = tuple(specs)
        if not specs:
            raise InvalidArgumentError("search space has no parameters")
        seen: set[str] = set()
        for s in specs:
            if s.name in seen:
                raise InvalidArgumentError(f"Detect duplicated parameter name: {s.name}")
            seen.add(s.name)
        return cls(specs, tuple(parse_parameter(s) for s in specs))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def size(self) -> int | None:
        """Number of points, or None when a continuous double makes it infinite."""
        total = 1
        for p in self.parameters:
            if p.size is None:
                return None
            total *= p.size
        return total

    def key_of(self, assignments: Mapping[str, str]) -> Key:
        """The key of a trial's assignments (OFF_SPACE entries for foreign values)."""
        return tuple(p.key_of(assignments.get(p.name)) for p in self.parameters)

    def contains(self, key: Key) -> bool:
        """Whether a key is a point of this space."""
        return OFF_SPACE not in key

    def used_keys(self, assignments: Iterable[Mapping[str, str]]) -> tuple[set[Key], int]:
        """Distinct keys of many assignments, and how many of them are points of the space.

        One pass; each distinct string is parsed once per parameter (memo dicts), and
        the per-trial work runs in C (map/getitem), which keeps long histories cheap.
        """
        memos = [_Memo(p.key_of) for p in self.parameters]
        names = self.names
        getitem = operator.getitem
        keys = {tuple(map(getitem, memos, map(a.get, names))) for a in assignments}
        valid = sum(1 for k in keys if OFF_SPACE not in k)
        return keys, valid

    def format(self, key: Key) -> dict[str, str]:
        """Assignments (parameter name → string) for a key, in parameter order."""
        return {p.name: p.format(e) for p, e in zip(self.parameters, key, strict=True)}

    def values(self, key: Key) -> dict[str, float | int | str]:
        """Typed values for a key, for algorithms that model the objective."""
        return {p.name: p.value(e) for p, e in zip(self.parameters, key, strict=True)}

    def sample(self, rng: np.random.Generator, m: int) -> list[Key]:
        """m keys drawn independently per parameter (duplicates possible)."""
        columns = [p.sample(rng, m) for p in self.parameters]
        return list(zip(*columns, strict=True))

    def iter_grid(self) -> Iterator[Key]:
        """All keys in grid order (cartesian product in parameter order), lazily.

        Only valid for finite spaces; never materialises the product.
        """
        sizes = [p.size for p in self.parameters]
        if any(s is None for s in sizes):
            raise InvalidArgumentError("the search space is continuous; it has no grid")
        axes = [range(s) for s in sizes if s is not None]
        if max(len(a) for a in axes) <= _MATERIALISE_AXIS_LIMIT:
            # itertools.product copies each axis (not the product): fine when axes are small.
            return itertools.product(*axes)
        return _lazy_product(axes)

    def sample_unique(
        self,
        rng: np.random.Generator,
        n: int,
        exclude: AbstractSet[Key] | None = None,
        max_rounds: int = 32,
    ) -> list[Key]:
        """Up to n distinct keys that are not in `exclude`, deterministic for a given rng.

        Rejection sampling first; for a finite space whose free points are rare it
        falls back to enumerating the free points. Returns fewer than n only when
        fewer than n free points exist.
        """
        excluded: AbstractSet[Key] = exclude if exclude is not None else frozenset()
        chosen: list[Key] = []
        batch: set[Key] = set()
        rounds = 0
        while len(chosen) < n and rounds < max_rounds:
            want = n - len(chosen)
            for key in self.sample(rng, max(2 * want, 8)):
                if key not in excluded and key not in batch:
                    batch.add(key)
                    chosen.append(key)
                    if len(chosen) == n:
                        break
            rounds += 1
        if len(chosen) < n and self.size is not None:
            free = [k for k in self.iter_grid() if k not in excluded and k not in batch]
            if free:
                picks = rng.permutation(len(free))[: n - len(chosen)].tolist()
                chosen.extend(free[i] for i in picks)
        return chosen


class _Memo(dict[str | None, Hashable]):
    """str → key entry, computed on first lookup."""

    __slots__ = ("_compute",)

    def __init__(self, compute: Callable[[str | None], Hashable]) -> None:
        super().__init__()
        self._compute = compute

    def __missing__(self, text: str | None) -> Hashable:
        entry = self[text] = self._compute(text)
        return entry


def _lazy_product(axes: Sequence[range]) -> Iterator[Key]:
    """itertools.product without materialising anything (axes can be huge ranges)."""
    if not axes:
        yield ()
        return
    head, rest = axes[0], axes[1:]
    if not rest:
        for i in head:
            yield (i,)
        return
    for i in head:
        for tail in _lazy_product(rest):
            yield (i, *tail)
