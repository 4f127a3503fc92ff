"""Parsing, sampling, quantising and formatting of search spaces."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from katib.errors import InvalidArgumentError
from suggestion_services.search_space import (
    OFF_SPACE,
    ListParameter,
    NumericParameter,
    ParameterSpec,
    SearchSpace,
    format_double,
    parse_parameter,
)


def space(*specs: ParameterSpec) -> SearchSpace:
    return SearchSpace.from_specs(specs)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.1 + 0.2, "0.3"), (1e-05, "1e-05"), (3.0, "3.0"), (-0.0, "0.0"),
     (0.30000000000000004, "0.3"), (123.456, "123.456"), (1 / 3, "0.333333333333")],
)
def test_format_double_drops_float_noise(value: float, text: str) -> None:
    assert format_double(value) == text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ParameterSpec("x", "double", "2", "1"), "Param x: min (2) must be less than"),
        (ParameterSpec("x", "int", "1", "a"), "Param x: max 'a' is not a number"),
        (ParameterSpec("x", "int", "1.5", "3"), "Param x: min '1.5' is not an integer"),
        (ParameterSpec("x", "double", "", "3"), "Param x: feasibleSpace.min and max"),
        (ParameterSpec("x", "double", "0", "1", "0"), "Param x: step (0) must be greater"),
        (ParameterSpec("x", "double", "0", "1", "-1"), "step (-1) must be greater"),
        (ParameterSpec("x", "double", "0", "1", distribution="logUniform"), "requires min > 0"),
        (ParameterSpec("x", "double", "0", "1", distribution="bogus"), "unknown distribution"),
        (ParameterSpec("x", "categorical"), "Param x: feasibleSpace.list must not be empty"),
        (ParameterSpec("x", "discrete"), "list must not be empty"),
        (ParameterSpec("x", "type 0", "0", "1"), "unknown parameter type"),
        (ParameterSpec("", "double", "0", "1"), "parameter name must not be empty"),
        (ParameterSpec("x", "double", "0", "inf"), "must be finite"),
    ],
)
def test_invalid_specs_name_the_parameter(spec: ParameterSpec, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_parameter(spec)
    assert message in str(info.value)


def test_space_rejects_empty_and_duplicates() -> None:
    with pytest.raises(InvalidArgumentError, match="no parameters"):
        SearchSpace.from_specs([])
    with pytest.raises(InvalidArgumentError, match="duplicated parameter name: a"):
        space(ParameterSpec("a", "int", "1", "2"), ParameterSpec("a", "int", "1", "2"))


def test_sizes() -> None:
    p = parse_parameter(ParameterSpec("x", "double", "0.1", "0.3", "0.1"))
    assert p.size == 3
    assert [p.format(k) for k in range(3)] == ["0.1", "0.2", "0.3"]
    q = parse_parameter(ParameterSpec("x", "double", "0", "1", "0.3"))
    assert [q.format(k) for k in range(q.size or 0)] == ["0.0", "0.3", "0.6", "0.9"]
    i = parse_parameter(ParameterSpec("n", "int", "1", "10", "3"))
    assert [i.format(k) for k in range(i.size or 0)] == ["1", "4", "7", "10"]
    assert parse_parameter(ParameterSpec("n", "int", "1", "3")).size == 3  # default step 1
    assert parse_parameter(ParameterSpec("x", "double", "0", "1")).size is None
    assert space(ParameterSpec("n", "int", "1", "3"),
                 ParameterSpec("c", "categorical", list=("a", "b"))).size == 6
    assert space(ParameterSpec("x", "double", "0", "1"),
                 ParameterSpec("n", "int", "1", "3")).size is None


def test_key_of_compares_by_value() -> None:
    p = parse_parameter(ParameterSpec("x", "double", "0.1", "0.3", "0.1"))
    assert p.key_of("0.1") == p.key_of("0.10") == 0
    assert p.key_of("0.30000000000000004") == 2
    assert p.key_of("0.15") is OFF_SPACE  # off grid
    assert p.key_of("0.4") is OFF_SPACE  # out of bounds
    assert p.key_of("abc") is OFF_SPACE
    assert p.key_of(None) is OFF_SPACE
    d = parse_parameter(ParameterSpec("d", "discrete", list=("32", "64")))
    assert d.key_of("64") == d.key_of("64.0") == 1
    c = parse_parameter(ParameterSpec("c", "categorical", list=("1", "a")))
    assert c.key_of("1.0") is OFF_SPACE  # categorical compares strings
    n = parse_parameter(ParameterSpec("n", "int", "2", "8", "2"))
    assert n.key_of("4") == n.key_of("4.0") == 1
    assert n.key_of("5") is OFF_SPACE


@pytest.mark.parametrize("dist", ["uniform", "logUniform", "normal", "logNormal", ""])
@pytest.mark.parametrize("step", ["", "0.05"])
def test_double_samples_in_bounds(dist: str, step: str) -> None:
    p = parse_parameter(ParameterSpec("x", "double", "0.01", "1", step, distribution=dist))
    rng = np.random.default_rng(0)
    keys = p.sample(rng, 500)
    values = [float(p.format(k)) for k in keys]
    assert all(0.01 <= v <= 1 for v in values)
    if step:
        assert all(math.isclose((v - 0.01) / 0.05, round((v - 0.01) / 0.05), abs_tol=1e-9)
                   for v in values)


def test_distributions_have_the_right_shape() -> None:
    rng = np.random.default_rng(1)
    log_u = parse_parameter(ParameterSpec("x", "double", "0.001", "1000",
                                          distribution="logUniform"))
    vals = np.array([float(log_u.format(k)) for k in log_u.sample(rng, 4000)])
    assert 0.4 < np.mean(vals < 1) < 0.6  # median at the geometric mean
    normal = parse_parameter(ParameterSpec("x", "double", "0", "6", distribution="normal"))
    vals = np.array([float(normal.format(k)) for k in normal.sample(rng, 4000)])
    assert abs(vals.mean() - 3) < 0.1
    assert 0.8 < vals.std() < 1.1  # sigma = (max - min) / 6, slightly shrunk by clipping
    log_n = parse_parameter(ParameterSpec("x", "double", "1", "10000", distribution="logNormal"))
    vals = np.array([float(log_n.format(k)) for k in log_n.sample(rng, 4000)])
    assert 0.45 < np.mean(vals < 100) < 0.55
    assert vals.min() >= 1 and vals.max() <= 10000


def test_int_uniform_covers_all_values() -> None:
    p = parse_parameter(ParameterSpec("n", "int", "1", "5"))
    rng = np.random.default_rng(2)
    assert sorted({p.format(k) for k in p.sample(rng, 300)}) == ["1", "2", "3", "4", "5"]
    log_int = parse_parameter(ParameterSpec("n", "int", "1", "1000", distribution="logUniform"))
    values = [int(log_int.format(k)) for k in log_int.sample(rng, 500)]
    assert all(1 <= v <= 1000 for v in values)


def test_list_parameter_keeps_strings() -> None:
    p = parse_parameter(ParameterSpec("d", "discrete", list=("0.5", "2", "x")))
    assert isinstance(p, ListParameter)
    assert [p.format(k) for k in range(3)] == ["0.5", "2", "x"]
    assert [p.value(k) for k in range(3)] == [0.5, 2, "x"]


def test_values_are_typed() -> None:
    s = space(ParameterSpec("x", "double", "0.1", "0.3", "0.1"),
              ParameterSpec("n", "int", "1", "3"),
              ParameterSpec("c", "categorical", list=("a",)))
    assert s.values((2, 1, 0)) == {"x": 0.3, "n": 2, "c": "a"}
    assert s.format((2, 1, 0)) == {"x": "0.3", "n": "2", "c": "a"}


def test_iter_grid_is_lazy_for_huge_spaces() -> None:
    s = space(ParameterSpec("x", "double", "0", "1", "1e-9"),
              ParameterSpec("n", "int", "1", "1000000"))
    assert s.size is not None and s.size > 1e14
    it = s.iter_grid()
    assert [next(it) for _ in range(3)] == [(0, 0), (0, 1), (0, 2)]


def test_sample_unique_falls_back_to_enumeration() -> None:
    s = space(ParameterSpec("n", "int", "1", "100"))
    rng = np.random.default_rng(3)
    exclude = {(k,) for k in range(100) if k != 57}
    assert s.sample_unique(rng, 3, exclude) == [(57,)]


@given(lo=st.integers(-1000, 1000), width=st.integers(0, 1000), step=st.integers(1, 50),
       seed=st.integers(0, 2**32 - 1))
def test_int_samples_on_step(lo: int, width: int, step: int, seed: int) -> None:
    p = parse_parameter(ParameterSpec("n", "int", str(lo), str(lo + width), str(step)))
    for k in p.sample(np.random.default_rng(seed), 20):
        v = int(p.format(k))
        assert lo <= v <= lo + width and (v - lo) % step == 0
        assert p.key_of(str(v)) == k


@given(lo=st.floats(-100, 100), width=st.floats(0.001, 100), steps=st.integers(1, 1000))
def test_double_grid_round_trips(lo: float, width: float, steps: int) -> None:
    step = width / steps
    spec = ParameterSpec("x", "double", repr(lo), repr(lo + width), repr(step))
    p = parse_parameter(spec)
    assert isinstance(p, NumericParameter) and p.size is not None
    assert steps <= p.size <= steps + 1
    for k in {0, p.size // 2, p.size - 1}:
        text = p.format(k)
        assert lo - 1e-9 <= float(text) <= lo + width + 1e-9
        assert p.key_of(text) == k


def test_format_double_with_a_step_far_larger_than_the_value() -> None:
    # value/step underflows to 0: found by hypothesis on a fresh machine.
    assert float(format_double(5e-324, 2.0)) == 5e-324
