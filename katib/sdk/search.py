"""Search-space helpers: `search.double`, `search.int`, `search.categorical`, `search.discrete`.

Each returns a `katib.api.models.ParameterSpec` without a name; `tune()` (or whoever
builds the Experiment) names it after its key in the `parameters` dict. Bounds are
stored as strings, as in Katib's CRD, written so they parse back to the same number.

Bad bounds are refused here, with the helper and the argument named, rather than
later by the Experiment's validation with a field path the caller never wrote.
`categorical` puts its values in `feasibleSpace.list` (Katib's SDK passes them as
`distribution`, which its own webhook then rejects).

The module shadows the builtin `int` on purpose (Katib's name), so the builtin is
reached as `builtins.int` below.
"""

from __future__ import annotations

import builtins
import math
import numbers
from collections.abc import Sequence

from katib.api.models import Distribution, FeasibleSpace, ParameterSpec, ParameterType
from katib.errors import InvalidArgumentError

__all__ = ["categorical", "discrete", "double", "int"]

_DISTRIBUTIONS = {
    "uniform": Distribution.UNIFORM,
    "loguniform": Distribution.LOG_UNIFORM,
    "normal": Distribution.NORMAL,
    "lognormal": Distribution.LOG_NORMAL,
}
_LOG = (Distribution.LOG_UNIFORM, Distribution.LOG_NORMAL)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _text(value: numbers.Real | float) -> str:
    """A number as Katib stores it: shortest text that parses back to the same value."""
    if isinstance(value, numbers.Integral):
        return str(builtins.int(value))
    return repr(float(value))


def _number(helper: str, what: str, value: object, integer: bool) -> float:
    kind = "an integer" if integer else "a finite number"
    if isinstance(value, str):
        try:
            parsed: float = builtins.int(value) if integer else float(value)
        except ValueError:
            raise InvalidArgumentError(
                f"search.{helper}: {what} must be {kind}, got {value!r}"
            ) from None
        value = parsed
    if not _is_number(value):
        raise InvalidArgumentError(
            f"search.{helper}: {what} must be {kind}, got {type(value).__name__} {value!r}"
        )
    assert isinstance(value, numbers.Real)
    if integer and not (isinstance(value, numbers.Integral) or float(value).is_integer()):
        raise InvalidArgumentError(f"search.{helper}: {what} must be {kind}, got {value!r}")
    if not math.isfinite(float(value)):
        raise InvalidArgumentError(f"search.{helper}: {what} must be finite, got {value!r}")
    if isinstance(value, numbers.Integral):
        return builtins.int(value)  # kept as written: double(0, 1) stores "0" and "1"
    return builtins.int(float(value)) if integer else float(value)


def _distribution(helper: str, value: str | Distribution | None) -> Distribution | None:
    if value is None:
        return None
    key = str(value.value if isinstance(value, Distribution) else value)
    found = _DISTRIBUTIONS.get(key.replace("_", "").replace("-", "").lower())
    if found is None:
        names = ", ".join(d.value for d in _DISTRIBUTIONS.values())
        raise InvalidArgumentError(
            f"search.{helper}: distribution {value!r} is not one of: {names}"
        )
    return found


def _range(
    helper: str,
    ptype: ParameterType,
    low: object,
    high: object,
    step: object,
    distribution: str | Distribution | None,
) -> ParameterSpec:
    integer = ptype == ParameterType.INT
    lo = _number(helper, "min", low, integer)
    hi = _number(helper, "max", high, integer)
    if lo >= hi:
        raise InvalidArgumentError(
            f"search.{helper}: min ({_text(lo)}) must be less than max ({_text(hi)})"
        )
    step_text: str | None = None
    if step is not None:
        st = _number(helper, "step", step, integer)
        if st <= 0:
            raise InvalidArgumentError(
                f"search.{helper}: step must be greater than 0, got {step!r}"
            )
        step_text = _text(st)
    dist = _distribution(helper, distribution)
    if dist in _LOG and lo <= 0:
        raise InvalidArgumentError(
            f"search.{helper}: min ({_text(lo)}) must be greater than 0 for the "
            f"{dist.value if dist else ''} distribution"
        )
    space = FeasibleSpace(min=_text(lo), max=_text(hi), step=step_text, distribution=dist)
    return ParameterSpec(parameter_type=ptype, feasible_space=space)


def double(
    min: float | str,
    max: float | str,
    step: float | str | None = None,
    distribution: str | Distribution | None = None,
) -> ParameterSpec:
    """A real-valued parameter in [min, max] (`distribution`: uniform, logUniform, normal,
    logNormal; the log ones need min > 0)."""
    return _range("double", ParameterType.DOUBLE, min, max, step, distribution)


def int(
    min: builtins.int | str,
    max: builtins.int | str,
    step: builtins.int | str | None = None,
    distribution: str | Distribution | None = None,
) -> ParameterSpec:
    """An integer parameter in [min, max] (both inclusive, as in Katib)."""
    return _range("int", ParameterType.INT, min, max, step, distribution)


def _values(helper: str, values: Sequence[object]) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidArgumentError(
            f"search.{helper}: expected a list of values, got {type(values).__name__} {values!r}"
        )
    if not values:
        raise InvalidArgumentError(f"search.{helper}: the list of values is empty")
    out: list[str] = []
    for i, value in enumerate(values):
        allowed = isinstance(value, str) or _is_number(value)
        if isinstance(value, bool):
            allowed = helper == "categorical"
        if not allowed:
            raise InvalidArgumentError(
                f"search.{helper}: value [{i}] must be a string or a number, "
                f"got {type(value).__name__} {value!r}"
            )
        if isinstance(value, (str, bool)):
            text = str(value)
        else:
            assert isinstance(value, numbers.Real)
            text = _text(value)
        if text in out:
            raise InvalidArgumentError(f"search.{helper}: value [{i}] {value!r} is a duplicate")
        out.append(text)
    return out


def categorical(values: Sequence[object]) -> ParameterSpec:
    """One of a list of values (strings, numbers or booleans; a trial receives its text)."""
    return ParameterSpec(
        parameter_type=ParameterType.CATEGORICAL,
        feasible_space=FeasibleSpace(list=_values("categorical", values)),
    )


def discrete(values: Sequence[float | str]) -> ParameterSpec:
    """One of a list of numbers (Katib's `discrete` type; algorithms may treat it as ordered)."""
    texts = _values("discrete", values)
    for i, text in enumerate(texts):
        _number("discrete", f"value [{i}]", text, integer=False)
    return ParameterSpec(
        parameter_type=ParameterType.DISCRETE, feasible_space=FeasibleSpace(list=texts)
    )
