"""Sobol: the scipy sequence mapped per distribution, stateless continuation, finite spaces."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np
import pytest
from scipy.stats import qmc

from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError
from katib.testing.algorithm_histories import distribution_specs
from katib.testing.algorithms import as_history, check_point, make_experiment, tiny_specs
from suggestion_services.base import ExperimentInfo, TrialCondition, TrialRecord
from suggestion_services.experiment_cache import clear_all_caches
from suggestion_services.search_space import ParameterSpec, SearchSpace, format_double
from suggestion_services.sobol import Sobol, sobol_points, unit_to_keys

PLANE = [ParameterSpec("x", "double", "0", "10"), ParameterSpec("y", "double", "-1", "1")]


def suggest(exp: ExperimentInfo, history: Sequence[TrialRecord], n: int) -> list[dict[str, str]]:
    return [s.assignments for s in Sobol().suggest(exp, history, n)]


def reference(seed: int, d: int, count: int) -> np.ndarray:
    """The first `count` points of scipy's scrambled Sobol sequence, drawn the plain way."""
    return qmc.Sobol(d, scramble=True, rng=seed).random(1 << max(0, count - 1).bit_length())[
        :count]


def test_settings() -> None:
    for settings, message in [
        ({"scramble": "1"}, "unknown setting scramble for algorithm sobol"),
        ({"random_state": "-1"}, "random_state should be great or equal than zero"),
        ({"random_state": "x"}, "failed to validate random_state(x)"),
    ]:
        with pytest.raises(InvalidArgumentError) as info:
            Sobol().validate_settings(make_experiment("sobol", PLANE, settings))
        assert message in str(info.value)
    Sobol().validate_settings(make_experiment("sobol", PLANE, {"random_state": "3"}))
    Sobol().validate_settings(make_experiment("sobol", PLANE))


def test_points_are_the_scipy_sequence_mapped() -> None:
    exp = make_experiment("sobol", PLANE, {"random_state": "5"})
    expected = [
        {"x": format_double(10 * u), "y": format_double(-1 + 2 * v)}
        for u, v in reference(5, 2, 12).tolist()
    ]
    assert suggest(exp, [], 8) == expected[:8]
    history = as_history(expected[:8])
    assert suggest(exp, history, 4) == expected[8:]


def test_a_restarted_service_continues_the_sequence() -> None:
    """Point i depends only on i = number of trials in the request, warm or cold."""
    exp = make_experiment("sobol", PLANE, {"random_state": "2"})
    history: list[TrialRecord] = []
    for n in (3, 1, 4):  # as a controller asks, trial by trial
        history += as_history(suggest(exp, history, n), start=len(history))
    clear_all_caches()  # a fresh process
    cold = suggest(exp, [], 8)
    assert [t.assignments for t in history] == cold
    clear_all_caches()
    assert suggest(exp, history[:5], 2) == cold[5:7]
    assert suggest(exp, history, 2) == suggest(exp, history, 2)


def test_seed_comes_from_the_name_without_random_state() -> None:
    a = make_experiment("sobol", PLANE, name="a")
    b = make_experiment("sobol", PLANE, name="b")
    assert suggest(a, [], 4) == suggest(a, [], 4)
    assert suggest(a, [], 4) != suggest(b, [], 4)


class LengthOnly(Sequence[TrialRecord]):
    """A history that may be measured but not read."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, index: int) -> TrialRecord: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[TrialRecord]: ...
    def __getitem__(self, index: int | slice) -> TrialRecord | Sequence[TrialRecord]:
        raise AssertionError("the history was read")

    def __iter__(self) -> Iterator[TrialRecord]:
        raise AssertionError("the history was read")


def test_continuous_space_reads_only_the_history_length() -> None:
    exp = make_experiment("sobol", PLANE, {"random_state": "5"})
    points = suggest(exp, LengthOnly(10_000), 2)
    expected = qmc.Sobol(2, scramble=True, rng=5)
    expected.fast_forward(10_000)
    assert points == [{"x": format_double(10 * u), "y": format_double(-1 + 2 * v)}
                      for u, v in expected.random(2).tolist()]


def test_each_distribution_maps_through_its_inverse_cdf() -> None:
    specs = [
        ParameterSpec("lu", "double", "0.001", "10", distribution="logUniform"),
        ParameterSpec("nm", "double", "-2", "4", distribution="normal"),
        ParameterSpec("ln", "double", "0.01", "100", distribution="logNormal"),
        ParameterSpec("k", "int", "3", "7"),
        ParameterSpec("q", "double", "0", "1", "0.25"),
        ParameterSpec("c", "categorical", list=("a", "b", "c")),
    ]
    space = SearchSpace.from_specs(specs)
    u = np.array([[0.0, 0.5, 0.5, 0.0, 0.0, 0.0],
                  [0.5, 0.0, 0.0, 0.5, 0.5, 0.5],
                  [0.999999, 0.999999, 0.999999, 0.999999, 0.999999, 0.999999]])
    points = [space.format(k) for k in unit_to_keys(space, u)]
    assert points[0] == {"lu": "0.001", "nm": "1.0", "ln": "1.0", "k": "3", "q": "0.0", "c": "a"}
    assert math.isclose(float(points[1]["lu"]), 0.1, rel_tol=1e-9)  # geometric middle
    assert float(points[1]["nm"]) == -2 and float(points[1]["ln"]) == 0.01  # truncated at min
    assert (points[1]["k"], points[1]["q"], points[1]["c"]) == ("5", "0.5", "b")
    top = points[2]
    assert (top["k"], top["q"], top["c"]) == ("7", "1.0", "c")
    assert 3.99 < float(top["nm"]) <= 4 and 99 < float(top["ln"]) <= 100


@pytest.mark.parametrize("finite", [False, True])
def test_every_distribution_in_bounds(finite: bool) -> None:
    specs = distribution_specs(finite)
    exp = make_experiment("sobol", specs, {"random_state": "1"})
    points = suggest(exp, [], 256)
    for p in points:
        check_point(specs, p)
    normal = np.array([float(p["n"]) for p in points])
    assert abs(normal.mean() - 0.5) < 0.1 and 0.7 < normal.std() < 1.0  # sigma 5/6, truncated


def test_finite_space_skips_history_and_exhausts() -> None:
    specs = tiny_specs()
    exp = make_experiment("sobol", specs, {"random_state": "0"})
    history: list[TrialRecord] = []
    while len(history) < 6:
        points = suggest(exp, history, 4)
        assert len(points) == min(4, 6 - len(history))
        history += as_history(points, TrialCondition.FAILED, start=len(history))
    assert len({tuple(t.assignments.values()) for t in history}) == 6
    with pytest.raises(SearchSpaceExhaustedError, match="all 6 points"):
        suggest(exp, history, 1)


def test_finite_space_takes_sequence_points_in_order() -> None:
    specs = [ParameterSpec("n", "int", "0", "999")]
    exp = make_experiment("sobol", specs, {"random_state": "4"})
    u = reference(4, 1, 8)[:, 0]
    expected = [str(int(v * 1000)) for v in u.tolist()]
    assert [p["n"] for p in suggest(exp, [], 8)] == expected


def test_engine_cache_matches_fresh_engines() -> None:
    clear_all_caches()
    late = sobol_points(3, 9, 1000, 3)
    early = sobol_points(3, 9, 10, 3)  # the cached engine must go back
    again = sobol_points(3, 9, 1000, 3)
    fresh = qmc.Sobol(3, scramble=True, rng=9)
    fresh.fast_forward(10)
    np.testing.assert_array_equal(early, fresh.random(3))
    np.testing.assert_array_equal(late, again)
