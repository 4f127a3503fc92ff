"""CMA-ES: settings, normalised space, convergence, restarts, stateless replay, finite spaces."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import pytest

from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError
from suggestion_services import cmaes_search
from suggestion_services.base import ExperimentInfo, ObjectiveType, TrialCondition, TrialRecord
from suggestion_services.cmaes_search import CMAES, _Axis, _copy_optimizer
from suggestion_services.experiment_cache import ExperimentCache
from suggestion_services.random_search import RandomSearch
from suggestion_services.search_space import NumericParameter, ParameterSpec, SearchSpace

SPHERE = [ParameterSpec(f"x{i}", "double", "-5", "5") for i in range(4)]
UNIT = [ParameterSpec("a", "double", "0", "1"), ParameterSpec("b", "double", "0", "1")]


def experiment(
    specs: Sequence[ParameterSpec],
    settings: Mapping[str, str] | None = None,
    objective: ObjectiveType = ObjectiveType.MINIMIZE,
    name: str = "cma",
) -> ExperimentInfo:
    return ExperimentInfo(
        name=name,
        algorithm_name="cmaes",
        search_space=SearchSpace.from_specs(specs),
        objective_type=objective,
        objective_metric_name="loss",
        settings=dict(settings or {}),
    )


def sphere(point: Mapping[str, str]) -> float:
    return sum((float(point[f"x{i}"]) - 1.234) ** 2 for i in range(4))


def closed_loop(
    algorithm: CMAES | RandomSearch,
    exp: ExperimentInfo,
    objective: Callable[[Mapping[str, str]], float],
    budget: int,
    batch: int = 3,
) -> list[TrialRecord]:
    history: list[TrialRecord] = []
    while len(history) < budget:
        for s in algorithm.suggest(exp, history, batch):
            value = objective(s.assignments)
            history.append(
                TrialRecord(f"t{len(history)}", s.assignments, TrialCondition.SUCCEEDED, value)
            )
    return history


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"restart_strategy": "rand"}, "invalid restart_strategy 'rand'"),
        ({"sigma": "0"}, "sigma should be a finite number greater than zero"),
        ({"sigma": "-0.5"}, "sigma should be a finite number greater than zero"),
        ({"sigma": "inf"}, "sigma should be a finite number greater than zero"),
        ({"sigma": "x"}, "failed to validate sigma(x)"),
        ({"random_state": "-1"}, "random_state should be great or equal than zero"),
        ({"popsize": "8"}, "unknown setting popsize for algorithm cmaes"),
    ],
)
def test_bad_settings_are_rejected(settings: dict[str, str], message: str) -> None:
    exp = experiment(UNIT, settings)
    with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CMAES(ExperimentCache()).validate_settings(exp)
    with pytest.raises(InvalidArgumentError):
        CMAES(ExperimentCache()).suggest(exp, [], 1)


def test_good_settings_are_accepted() -> None:
    for strategy in ("ipop", "bipop", "none", "IPOP"):
        CMAES(ExperimentCache()).validate_settings(
            experiment(UNIT, {"restart_strategy": strategy, "sigma": "0.3", "random_state": "0"})
        )


def test_needs_two_int_or_double_parameters() -> None:
    one = [ParameterSpec("a", "double", "0", "1"), ParameterSpec("c", "categorical", list=("x",)),
           ParameterSpec("d", "discrete", list=("1", "2"))]
    exp = experiment(one)
    message = "CMA-ES only supports two or more dimensional continuous search space."
    with pytest.raises(InvalidArgumentError) as info:
        CMAES(ExperimentCache()).validate_settings(exp)
    assert str(info.value) == message
    with pytest.raises(InvalidArgumentError, match="two or more dimensional"):
        CMAES(ExperimentCache()).suggest(exp, [], 1)
    two_ints = [ParameterSpec("a", "int", "1", "5"), ParameterSpec("b", "int", "0", "10", "5")]
    CMAES(ExperimentCache()).validate_settings(experiment(two_ints))


# --- the normalised space --------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        ParameterSpec("i", "int", "1", "9", "2"),
        ParameterSpec("j", "int", "-3", "3"),
        ParameterSpec("li", "int", "1", "1000", distribution="logUniform"),
        ParameterSpec("s", "double", "0.1", "0.9", "0.2"),
        ParameterSpec("ls", "double", "0.001", "1", "0.001", distribution="logNormal"),
    ],
)
def test_every_grid_point_round_trips_and_ends_are_reachable(spec: ParameterSpec) -> None:
    param = SearchSpace.from_specs([spec]).parameters[0]
    assert isinstance(param, NumericParameter) and param.size is not None
    axis = _Axis.of(0, param)
    for k in range(param.size):
        assert axis.decode(axis.encode(k)) == k
    assert axis.decode(0.0) == 0
    assert axis.decode(1.0) == param.size - 1
    assert axis.decode(-3.0) == 0 and axis.decode(7.0) == param.size - 1  # clipped


def test_continuous_axes_cover_the_bounds_on_their_scale() -> None:
    space = SearchSpace.from_specs([
        ParameterSpec("lr", "double", "0.0001", "0.1", distribution="logUniform"),
        ParameterSpec("m", "double", "-2", "2", distribution="normal"),
    ])
    log_axis, normal_axis = (_Axis.of(i, p) for i, p in enumerate(space.parameters)
                             if isinstance(p, NumericParameter))
    assert log_axis.decode(0.0) == 0.0001 and log_axis.decode(1.0) == 0.1
    assert log_axis.decode(0.5) == pytest.approx(10**-2.5)  # the middle of the log range
    assert normal_axis.decode(0.5) == 0.0  # the normal's mean is the initial mean
    assert normal_axis.encode(1.0) == pytest.approx(0.75)


def test_suggestions_are_valid_with_categorical_and_discrete() -> None:
    specs = [
        ParameterSpec("lr", "double", "0.0001", "0.1", distribution="logUniform"),
        ParameterSpec("layers", "int", "1", "9", "2"),
        ParameterSpec("opt", "categorical", list=("adam", "sgd")),
        ParameterSpec("batch", "discrete", list=("32", "64")),
    ]
    exp = experiment(specs, {"random_state": "3"}, ObjectiveType.MAXIMIZE)
    history = closed_loop(CMAES(ExperimentCache()), exp, lambda p: -float(p["lr"]), 60, batch=5)
    for t in history:
        assert list(t.assignments) == ["lr", "layers", "opt", "batch"]
        assert 0.0001 <= float(t.assignments["lr"]) <= 0.1
        assert t.assignments["layers"] in {"1", "3", "5", "7", "9"}
        assert t.assignments["opt"] in {"adam", "sgd"} and t.assignments["batch"] in {"32", "64"}
    # Categorical values are drawn at random: both appear.
    assert {t.assignments["opt"] for t in history} == {"adam", "sgd"}
    # Maximising -lr: the last generation sits near the lower bound.
    assert np.median([float(t.assignments["lr"]) for t in history[-10:]]) < 0.001


# --- optimisation ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sphere_converges_far_better_than_random(seed: int) -> None:
    exp = experiment(SPHERE, {"random_state": str(seed)})
    cma = min(t.objective_value or 0 for t in closed_loop(CMAES(ExperimentCache()), exp, sphere,
                                                           150))
    random_exp = replace(exp, algorithm_name="random")
    rand = min(t.objective_value or 0 for t in closed_loop(RandomSearch(), random_exp, sphere,
                                                           600))
    # Measured: CMA-ES reaches 0.01-0.08 in 150 trials, random 0.75-2.6 in 600.
    assert cma < rand / 5, (cma, rand)
    assert cma < 0.5


def test_maximize_climbs_and_minimize_descends() -> None:
    up = closed_loop(CMAES(ExperimentCache()), experiment(UNIT, {"random_state": "4"},
                                                          ObjectiveType.MAXIMIZE),
                     lambda p: float(p["a"]) + float(p["b"]), 90)
    down = closed_loop(CMAES(ExperimentCache()), experiment(UNIT, {"random_state": "4"}),
                       lambda p: float(p["a"]) + float(p["b"]), 90)
    assert np.mean([t.objective_value or 0 for t in up[-9:]]) > 1.6
    assert np.mean([t.objective_value or 0 for t in down[-9:]]) < 0.4


# --- restarts ------------------------------------------------------------------------------------


def flat_history(n: int) -> list[TrialRecord]:
    """A constant objective: the library's tolfun criterion stops each run (d=2: 21 gens)."""
    rng = np.random.default_rng(0)
    return [
        TrialRecord(f"t{i}", {"a": repr(float(rng.uniform())), "b": repr(float(rng.uniform()))},
                    TrialCondition.SUCCEEDED, 1.0)
        for i in range(n)
    ]


def test_restart_strategies() -> None:
    history = flat_history(400)

    def run(strategy: str, k: int) -> cmaes_search._Run:
        exp = experiment(UNIT, {"restart_strategy": strategy, "random_state": "1"})
        return CMAES(ExperimentCache()).replay_state(exp, history[:k])

    # none: the first run (popsize 4 + 3 ln 2 = 6) goes on.
    assert (run("none", 400).restarts, run("none", 400).popsize) == (0, 6)
    # ipop: 21 generations of 6, then of 12: population doubled at each restart.
    assert [(r.restarts, r.popsize) for r in (run("ipop", k) for k in (125, 126, 318, 400))] == [
        (0, 6), (1, 12), (2, 24), (2, 24)]
    first = run("ipop", 126).optimizer
    assert first.generation == 0 and not np.allclose(first.mean, 0.5)  # a random new mean
    # bipop: the first run counts as small, so a large run (12) follows, then a small
    # one (6) with a smaller step size, as in Hansen's BIPOP.
    large, small = run("bipop", 126), run("bipop", 318)
    assert (large.restarts, large.regime, large.popsize) == (1, "large", 12)
    assert (small.restarts, small.regime, small.popsize) == (2, "small", 6)
    assert small.optimizer._sigma < cmaes_search.DEFAULT_SIGMA


def test_copy_of_the_optimizer_is_exact() -> None:
    exp = experiment(UNIT, {"random_state": "2"})
    run = CMAES(ExperimentCache()).replay_state(exp, flat_history(30))
    clone = _copy_optimizer(run.optimizer)
    rng = np.random.default_rng(5)
    batch = [(rng.uniform(0, 1, 2), float(v)) for v in rng.uniform(0, 1, run.popsize)]
    run.optimizer.tell(list(batch))
    clone.tell(list(batch))
    assert np.array_equal(run.optimizer.mean, clone.mean)
    assert np.array_equal(run.optimizer._C, clone._C)


# --- stateless replay ----------------------------------------------------------------------------


def test_warm_state_equals_fresh_replay_with_out_of_order_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trials finish out of order (some deep), fail or run on; warm == cold at every call."""
    monkeypatch.setattr(cmaes_search, "SNAPSHOT_WINDOW", 16)  # also exercise full rebuilds
    specs = [*UNIT, ParameterSpec("n", "int", "1", "6"),
             ParameterSpec("c", "categorical", list=("x", "y"))]
    exp = experiment(specs, {"restart_strategy": "ipop", "random_state": "9"})
    warm = CMAES(ExperimentCache())
    rng = np.random.default_rng(1)
    history: list[TrialRecord] = []
    for step in range(40):
        running = [i for i, t in enumerate(history) if t.condition is TrialCondition.RUNNING]
        for i in running:
            if rng.uniform() < 0.5 or (step % 13 == 0):  # long runners finish much later
                outcome = rng.choice(4)
                point = history[i].assignments
                value = float(point["a"]) ** 2 + float(point["b"]) + int(point["n"]) / 10
                history[i] = replace(
                    history[i],
                    condition=[TrialCondition.SUCCEEDED, TrialCondition.SUCCEEDED,
                               TrialCondition.FAILED, TrialCondition.EARLY_STOPPED][outcome],
                    objective_value=None if outcome == 2 else value,
                )
        got = [s.assignments for s in warm.suggest(exp, history, 3)]
        cold = [s.assignments for s in CMAES(ExperimentCache()).suggest(exp, history, 3)]
        assert got == cold, step
        history += [TrialRecord(f"t{len(history)}", p, TrialCondition.RUNNING) for p in got]
    assert len({tuple(t.assignments.values()) for t in history}) == len(history)


def test_edits_anywhere_in_the_history_are_noticed() -> None:
    exp = experiment(UNIT, {"random_state": "6"})
    history = closed_loop(CMAES(ExperimentCache()), exp, lambda p: float(p["a"]), 60)
    warm = CMAES(ExperimentCache())
    warm.suggest(exp, history, 2)
    edits = {
        "value": [replace(history[3], objective_value=-5.0), *history[1:3], *history[4:]],
        "removed": history[:10] + history[11:],
        "reordered": history[::-1],
        "appended_foreign": [*history, TrialRecord("user", {"a": "0.5", "b": "0.5"},
                                                   TrialCondition.SUCCEEDED, -1.0)],
    }
    for name, edited in edits.items():
        assert warm.suggest(exp, edited, 2) == CMAES(ExperimentCache()).suggest(exp, edited, 2), (
            name)
        warm.suggest(exp, history, 2)


def test_foreign_and_unusable_trials_do_not_change_the_model() -> None:
    exp = experiment(UNIT, {"random_state": "8"})
    history = closed_loop(CMAES(ExperimentCache()), exp, lambda p: float(p["a"]), 30)
    noise = [
        TrialRecord("nan", {"a": "0.1", "b": "0.2"}, TrialCondition.SUCCEEDED, float("nan")),
        TrialRecord("out", {"a": "7", "b": "0.2"}, TrialCondition.SUCCEEDED, -3.0),
        TrialRecord("garbage", {"a": "x"}, TrialCondition.SUCCEEDED, -3.0),
        TrialRecord("failed", {"a": "0.3", "b": "0.3"}, TrialCondition.FAILED, None),
        TrialRecord("killed", {"a": "0.3", "b": "0.4"}, TrialCondition.KILLED, -9.0),
    ]
    plain = CMAES(ExperimentCache()).replay_state(exp, history)
    noisy = CMAES(ExperimentCache()).replay_state(exp, noise[:3] + history + noise[3:])
    assert np.array_equal(plain.optimizer.mean, noisy.optimizer.mean)
    assert plain.optimizer.generation == noisy.optimizer.generation == 30 // 6


# --- finite spaces ----------------------------------------------------------------------------


def test_finite_space_never_repeats_then_is_exhausted() -> None:
    specs = [ParameterSpec("a", "int", "1", "3"), ParameterSpec("b", "int", "0", "10", "10"),
             ParameterSpec("c", "categorical", list=("x", "y"))]  # 12 points
    exp = experiment(specs, {"random_state": "0"})
    history: list[TrialRecord] = []
    seen: set[tuple[str, ...]] = set()
    while len(history) < 12:
        points = [s.assignments for s in CMAES().suggest(exp, history, 5)]
        assert len(points) == min(5, 12 - len(history))
        for p in points:
            key = tuple(p.values())
            assert key not in seen
            seen.add(key)
        condition = TrialCondition.FAILED if len(history) % 2 else TrialCondition.SUCCEEDED
        history += [TrialRecord(f"t{len(history) + j}", p, condition, float(p["a"]))
                    for j, p in enumerate(points)]
    with pytest.raises(SearchSpaceExhaustedError, match="all 12 points"):
        CMAES().suggest(exp, history, 1)
    rewritten = [replace(t, assignments={**t.assignments, "a": "0" + t.assignments["a"]})
                 for t in history]
    with pytest.raises(SearchSpaceExhaustedError):
        CMAES(ExperimentCache()).suggest(exp, rewritten, 1)
