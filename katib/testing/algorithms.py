"""Contract tests every suggestion algorithm must pass, in-process or over gRPC.

Use: subclass `AlgorithmContract` in a test module and provide an
`algorithm_name` fixture (tests/contract parametrises it over
suggestion_services.registry.ALGORITHMS, so new algorithms are covered
automatically). Override `call_suggest_with_settings` / `call_validate` to run
the same checks through another transport (the integration tests use a real
server in the test process, so `clear_all_caches` reaches its caches too).

What every algorithm guarantees: exactly current_request_number valid, typed
points inside the space (or fewer only when a finite space runs out, then a
SearchSpaceExhaustedError); no repeat within a batch or of any trial of the
history where the space allows it, also for a batch of 8 in a continuous space
(constant liar); the same answer for the same (random_state, history), whether
the service is fresh, warm, or has served other experiments; per-experiment
caches that notice any edit of the history and stay within their bound. An
algorithm that cannot meet a check by design says so in
`BaseAlgorithm.contract_exemptions` (names in CONTRACT_EXEMPTIONS).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from katib.apis.v1beta1 import api_pb2
from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError
from katib.testing.algorithm_histories import (
    distribution_specs,
    edited_histories,
    finished,
    grow_like_controller,
    sampled_points,
    small_finite_specs,
    synthetic_objective,
)
from suggestion_services.base import (
    ExperimentInfo,
    ObjectiveType,
    TrialCondition,
    TrialRecord,
)
from suggestion_services.experiment_cache import ExperimentCache, clear_all_caches
from suggestion_services.registry import ALGORITHMS, get_algorithm
from suggestion_services.search_space import ParameterSpec, SearchSpace

METRIC = "accuracy"

Assignments = dict[str, str]


def realistic_specs(finite: bool) -> list[ParameterSpec]:
    """double uniform + logUniform + int with step + categorical + discrete.

    `finite` gives the doubles a step, for algorithms that need a grid.
    """
    return [
        ParameterSpec("lr", "double", "0.01", "0.1", "0.01" if finite else ""),
        ParameterSpec("wd", "double", "0.0001", "0.1", "0.0001" if finite else "",
                      distribution="logUniform"),
        ParameterSpec("layers", "int", "1", "9", "2"),
        ParameterSpec("optimizer", "categorical", list=("adam", "sgd", "rmsprop")),
        ParameterSpec("batch", "discrete", list=("32", "64", "128")),
    ]


def tiny_specs() -> list[ParameterSpec]:
    """Six points: small enough to exhaust."""
    return [
        ParameterSpec("a", "int", "1", "3"),
        ParameterSpec("b", "categorical", list=("x", "y")),
    ]


def make_experiment(
    algorithm: str,
    specs: Sequence[ParameterSpec],
    settings: Mapping[str, str] | None = None,
    name: str = "contract-exp",
    max_trial_count: int = 0,
) -> ExperimentInfo:
    """An ExperimentInfo as the server would build it."""
    return ExperimentInfo(
        name=name,
        algorithm_name=algorithm,
        search_space=SearchSpace.from_specs(specs),
        objective_type=ObjectiveType.MAXIMIZE,
        objective_metric_name=METRIC,
        settings=dict(settings or {}),
        parallel_trial_count=3,
        max_trial_count=max_trial_count,
    )


def as_history(
    points: Sequence[Assignments],
    condition: TrialCondition = TrialCondition.SUCCEEDED,
    start: int = 0,
) -> list[TrialRecord]:
    """Trials for given assignments, with a made-up objective value."""
    return [
        TrialRecord(f"trial-{start + i}", dict(p), condition, 0.5 + 0.01 * (i % 7))
        for i, p in enumerate(points)
    ]


def experiment_to_proto(experiment: ExperimentInfo) -> Any:
    """ExperimentInfo → api_pb2.Experiment (the reverse of server.experiment_from_proto)."""
    types = {"double": api_pb2.DOUBLE, "int": api_pb2.INT,
             "discrete": api_pb2.DISCRETE, "categorical": api_pb2.CATEGORICAL}
    dists = {"": api_pb2.DISTRIBUTION_UNSPECIFIED, "uniform": api_pb2.UNIFORM,
             "logUniform": api_pb2.LOG_UNIFORM, "normal": api_pb2.NORMAL,
             "logNormal": api_pb2.LOG_NORMAL}
    objectives = {ObjectiveType.MAXIMIZE: api_pb2.MAXIMIZE,
                  ObjectiveType.MINIMIZE: api_pb2.MINIMIZE}
    out = api_pb2.Experiment(name=experiment.name)
    spec = out.spec
    for s in experiment.search_space.specs:
        p = spec.parameter_specs.parameters.add(name=s.name, parameter_type=types[s.parameter_type])
        fs = p.feasible_space
        fs.min, fs.max, fs.step = s.min, s.max, s.step
        fs.list.extend(s.list)
        fs.distribution = dists[str(s.distribution)]
    spec.objective.type = objectives.get(experiment.objective_type, api_pb2.UNKNOWN)
    spec.objective.objective_metric_name = experiment.objective_metric_name
    spec.algorithm.algorithm_name = experiment.algorithm_name
    for k, v in experiment.settings.items():
        spec.algorithm.algorithm_settings.add(name=k, value=v)
    spec.parallel_trial_count = experiment.parallel_trial_count
    spec.max_trial_count = experiment.max_trial_count
    return out


_CONDITIONS = {
    TrialCondition.CREATED: api_pb2.TrialStatus.CREATED,
    TrialCondition.RUNNING: api_pb2.TrialStatus.RUNNING,
    TrialCondition.SUCCEEDED: api_pb2.TrialStatus.SUCCEEDED,
    TrialCondition.KILLED: api_pb2.TrialStatus.KILLED,
    TrialCondition.FAILED: api_pb2.TrialStatus.FAILED,
    TrialCondition.METRICS_UNAVAILABLE: api_pb2.TrialStatus.METRICSUNAVAILABLE,
    TrialCondition.EARLY_STOPPED: api_pb2.TrialStatus.EARLYSTOPPED,
    TrialCondition.UNKNOWN: api_pb2.TrialStatus.UNKNOWN,
}


def trial_to_proto(trial: TrialRecord, metric: str = METRIC) -> Any:
    """TrialRecord → api_pb2.Trial, with the objective as the only metric."""
    out = api_pb2.Trial(name=trial.name)
    for k, v in trial.assignments.items():
        out.spec.parameter_assignments.assignments.add(name=k, value=v)
    out.status.condition = _CONDITIONS[trial.condition]
    if trial.objective_value is not None:
        out.status.observation.metrics.add(name=metric, value=repr(trial.objective_value))
    return out


def check_point(specs: Sequence[ParameterSpec], point: Assignments) -> None:
    """Assert every parameter is present, typed right, inside bounds and on its step."""
    assert list(point) == [s.name for s in specs], point
    for s in specs:
        text = point[s.name]
        if s.parameter_type in ("categorical", "discrete"):
            assert text in s.list, (s.name, text)
            continue
        if s.parameter_type == "int":
            number = int(text)  # an int must be written as one
            lo_i, hi_i, step_i = int(s.min), int(s.max), int(s.step or 1)
            assert lo_i <= number <= hi_i, (s.name, text)
            assert (number - lo_i) % step_i == 0, (s.name, text)
            continue
        value = float(text)
        lo, hi = float(s.min), float(s.max)
        assert lo <= value <= hi, (s.name, text)
        assert text == repr(float(text)), (s.name, text)  # shortest form, no float noise
        if s.step:
            k = (value - lo) / float(s.step)
            assert math.isclose(k, round(k), abs_tol=1e-6), (s.name, text)


#: Names an algorithm may list in BaseAlgorithm.contract_exemptions (name → reason).
CONTRACT_EXEMPTIONS: dict[str, str] = {
    "exact_count": "replies with exactly current_request_number assignments",
    "finite_spaces": "runs on any small finite space, never repeats a point, then says exhausted",
    "arbitrary_history": "accepts any history: foreign, failed, running trials, any order",
}


def algorithm_caches(algorithm_name: str) -> list[ExperimentCache[Any]]:
    """The ExperimentCaches an algorithm's class (and bases) or module hold."""
    cls = ALGORITHMS[algorithm_name]
    namespaces = [vars(sys.modules[cls.__module__]), *(vars(c) for c in cls.__mro__)]
    found = {id(v): v for ns in namespaces for v in ns.values() if isinstance(v, ExperimentCache)}
    return list(found.values())


def point_key(space: SearchSpace, point: Mapping[str, str]) -> tuple[object, ...]:
    """A point as the space compares points ("0.10" and "0.1" are the same)."""
    return space.key_of(point)


RequiredSettings = Mapping[str, str] | Callable[[Sequence[ParameterSpec]], Mapping[str, str]]


def hyperband_settings(specs: Sequence[ParameterSpec]) -> dict[str, str]:
    """hyperband's resource: `layers` if the space has it, else its first int parameter.

    r_l=27 with eta 3 opens with 27 configurations at resource 1, so the contract's
    short histories are never all waiting for a rung to finish (they reach resources
    1 and 3 only). tests/unit/test_hyperband.py checks the schedule itself.
    """
    names = [s.name for s in specs]
    ints = [s.name for s in specs if s.parameter_type == "int"]
    resource = "layers" if "layers" in names else (ints or names)[0]
    return {"r_l": "27", "eta": "3", "resource_name": resource}


class AlgorithmContract:
    """The checks; needs an `algorithm_name` fixture from the subclass's module."""

    #: Settings an algorithm needs to run at all (e.g. hyperband's r_l), by name; a
    #: callable gets the experiment's specs (hyperband's resource must be one of them).
    REQUIRED_SETTINGS: ClassVar[dict[str, RequiredSettings]] = {"hyperband": hyperband_settings}
    #: ExperimentInfo fields an algorithm needs (e.g. parallel_trial_count), by name.
    EXPERIMENT_FIELDS: ClassVar[dict[str, dict[str, Any]]] = {
        "hyperband": {"parallel_trial_count": 27},  # Katib's rule: ceil(eta^s_max)
    }

    # -- transport hooks ------------------------------------------------------

    def call_suggest_with_settings(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> tuple[list[Assignments], dict[str, str]]:
        """Ask for n points and the settings to echo (a fresh instance per call)."""
        algorithm = get_algorithm(experiment.algorithm_name)()
        result = algorithm.suggest_with_settings(experiment, trials, n)
        return [s.assignments for s in result.suggestions], result.settings

    def call_suggest(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> list[Assignments]:
        """Ask for n points."""
        return self.call_suggest_with_settings(experiment, trials, n)[0]

    def call_validate(self, experiment: ExperimentInfo) -> None:
        """Validate settings; raises InvalidArgumentError."""
        get_algorithm(experiment.algorithm_name)().validate_settings(experiment)

    # -- helpers ----------------------------------------------------------------

    def specs_for(self, algorithm_name: str) -> list[ParameterSpec]:
        return realistic_specs(finite=ALGORITHMS[algorithm_name].requires_finite_space)

    def experiment(
        self, algorithm_name: str, specs: Sequence[ParameterSpec] | None = None,
        random_state: int | None = 42, **extra: str,
    ) -> ExperimentInfo:
        specs = list(specs) if specs is not None else self.specs_for(algorithm_name)
        required = self.REQUIRED_SETTINGS.get(algorithm_name, {})
        settings = dict(required(specs) if callable(required) else required)
        has_seed = "random_state" in ALGORITHMS[algorithm_name].settings_schema
        if random_state is not None and has_seed:
            settings["random_state"] = str(random_state)
        settings.update(extra)
        exp = make_experiment(algorithm_name, specs, settings)
        return replace(exp, **self.EXPERIMENT_FIELDS.get(algorithm_name, {}))

    def require(self, algorithm_name: str, check: str) -> None:
        """Skip when the algorithm declares that `check` cannot apply to it."""
        reason = ALGORITHMS[algorithm_name].contract_exemptions.get(check)
        if reason is not None:
            pytest.skip(f"{algorithm_name} is exempt from {check!r}: {reason}")

    def exempt(self, algorithm_name: str, check: str) -> bool:
        return check in ALGORITHMS[algorithm_name].contract_exemptions

    def assert_count(self, algorithm_name: str, points: Sequence[Assignments], n: int) -> None:
        """Exactly n, unless the algorithm sizes its own batches (then at least one)."""
        if self.exempt(algorithm_name, "exact_count"):
            assert points, "an empty reply for a space that is not exhausted"
        else:
            assert len(points) == n, (len(points), n)

    def controller_history(
        self, exp: ExperimentInfo, size: int, batch: int = 3
    ) -> tuple[ExperimentInfo, list[TrialRecord]]:
        """A history of about `size` trials grown as a controller grows it (see
        algorithm_histories.grow_like_controller), feeding echoed settings back.

        Returns the experiment with the settings to send next, and the history. An
        algorithm exempt from "arbitrary_history" gets only its own, successful trials.
        """
        plain = self.exempt(exp.algorithm_name, "arbitrary_history")
        current = [exp]

        def suggest(trials: Sequence[TrialRecord], n: int) -> list[Assignments]:
            points, settings = self.call_suggest_with_settings(current[0], trials, n)
            current[0] = replace(current[0], settings={**current[0].settings, **settings})
            for p in points:
                check_point(exp.search_space.specs, p)
            return points

        history = grow_like_controller(
            suggest, exp.search_space, size, batch,
            foreign_every=0 if plain else 3, all_succeed=plain,
        )
        return current[0], history

    # -- the contract -------------------------------------------------------------

    def test_exemptions_are_known(self, algorithm_name: str) -> None:
        declared = set(ALGORITHMS[algorithm_name].contract_exemptions)
        assert declared <= set(CONTRACT_EXEMPTIONS), declared - set(CONTRACT_EXEMPTIONS)

    @pytest.mark.parametrize("n", [1, 3, 8])
    def test_exactly_n_valid_points(self, algorithm_name: str, n: int) -> None:
        exp = self.experiment(algorithm_name)
        points = self.call_suggest(exp, [], n)
        self.assert_count(algorithm_name, points, n)
        for p in points:
            check_point(exp.search_space.specs, p)

    def test_values_in_bounds_on_step_with_history(self, algorithm_name: str) -> None:
        exp = self.experiment(algorithm_name)
        history: list[TrialRecord] = []
        for _ in range(3):
            points = self.call_suggest(exp, history, 8)
            self.assert_count(algorithm_name, points, 8)
            for p in points:
                check_point(exp.search_space.specs, p)
            history += as_history(points, start=len(history))

    def test_every_distribution_in_bounds(self, algorithm_name: str) -> None:
        """normal and logNormal are unbounded in hyperopt; here they must stay inside."""
        self.require(algorithm_name, "arbitrary_history")
        finite = ALGORITHMS[algorithm_name].requires_finite_space
        exp = self.experiment(algorithm_name, distribution_specs(finite))
        exp, history = self.controller_history(exp, 12)
        points = self.call_suggest(exp, history, 8)
        self.assert_count(algorithm_name, points, 8)
        for p in points:
            check_point(exp.search_space.specs, p)

    def test_deterministic(self, algorithm_name: str) -> None:
        exp = self.experiment(algorithm_name, random_state=7)
        history = as_history(self.call_suggest(exp, [], 5))
        first = self.call_suggest(exp, history, 4)
        assert self.call_suggest(exp, history, 4) == first
        assert self.call_suggest(exp, list(history), 4) == first
        clear_all_caches()
        assert self.call_suggest(exp, history, 4) == first

    def test_stateless(self, algorithm_name: str) -> None:
        exp = self.experiment(algorithm_name, random_state=3)
        history = as_history(self.call_suggest(exp, [], 4))
        fresh = get_algorithm(algorithm_name)()
        expected = [s.assignments for s in fresh.suggest(exp, history, 3)]
        used = get_algorithm(algorithm_name)()
        other = replace(exp, name="another-experiment")
        for i in range(3):  # serve other requests first
            used.suggest(other, as_history(self.call_suggest(other, [], 2), start=100 * i), 2)
            used.suggest(exp, [], 2)
        assert [s.assignments for s in used.suggest(exp, history, 3)] == expected
        assert self.call_suggest(exp, history, 3) == expected

    def test_warm_equals_cold_after_a_real_history(self, algorithm_name: str) -> None:
        """A service that has followed the experiment answers as a fresh one would.

        The history mixes the algorithm's own trials with a user's runs, failed,
        early-stopped, metrics-less, killed and still-running trials.
        """
        exp, history = self.controller_history(self.experiment(algorithm_name), 18)
        warm = self.call_suggest(exp, history, 4)
        self.assert_count(algorithm_name, warm, 4)
        clear_all_caches()
        cold = self.call_suggest(exp, history, 4)
        assert warm == cold
        # A process serving other experiments meanwhile is no different.
        other = replace(exp, name="other-experiment")
        self.controller_history(other, 6)
        assert self.call_suggest(exp, history, 4) == cold

    def test_cache_follows_edited_history(self, algorithm_name: str) -> None:
        """After warming with H, an edited H gets the answer a fresh service gives."""
        exp, history = self.controller_history(self.experiment(algorithm_name), 15)
        failures = []
        for edit, edited in edited_histories(history).items():
            self.call_suggest(exp, history, 2)  # warm with H (grown one batch at a time)
            warm = self.call_suggest(exp, edited, 2)
            clear_all_caches()
            cold = self.call_suggest(exp, edited, 2)
            if warm != cold:
                failures.append(f"{edit}: warm {warm} != cold {cold}")
        assert not failures, "\n".join(failures)

    def test_caches_stay_bounded(self, algorithm_name: str) -> None:
        """3 x max_entries experiments later, each of the algorithm's caches is within bound."""
        caches = algorithm_caches(algorithm_name)
        if not caches:
            pytest.skip(f"{algorithm_name} keeps no per-experiment cache")
        base = self.experiment(algorithm_name)
        plain = self.exempt(algorithm_name, "arbitrary_history")
        rounds = 3 * max(c.max_entries for c in caches)
        self._many_experiments(base, rounds, plain)
        if not any(len(c) for c in caches) and base.search_space.size is None:
            # Some caches serve finite spaces only (random search's used points).
            self._many_experiments(self.experiment(algorithm_name, realistic_specs(True)),
                                   rounds, plain)
        for cache in caches:
            assert len(cache) <= cache.max_entries, (len(cache), cache.max_entries)
        assert any(len(c) for c in caches), "the loop never reached the caches"

    def _many_experiments(self, base: ExperimentInfo, rounds: int, plain: bool) -> None:
        """One call each for `rounds` experiments like `base`, with a short history."""
        space = base.search_space
        for i in range(rounds):
            exp = replace(base, name=f"bounded-{i}")
            if plain:
                history = as_history(self.call_suggest(exp, [], 3))
            else:  # enough observed trials for a model to be fitted and cached
                history = [
                    TrialRecord(f"run-{j}", p, TrialCondition.SUCCEEDED,
                                synthetic_objective(space.specs, p))
                    for j, p in enumerate(sampled_points(space, 12, seed=i))
                ]
            self.call_suggest(exp, history, 1)

    def test_batch_distinct_in_continuous_space_after_history(self, algorithm_name: str) -> None:
        """A model-based algorithm asked for 8 must give 8 distinct new points (constant liar)."""
        if ALGORITHMS[algorithm_name].requires_finite_space:
            pytest.skip(f"{algorithm_name} needs a finite space")
        exp, history = self.controller_history(self.experiment(algorithm_name), 15)
        space = exp.search_space
        assert space.size is None
        batch = self.call_suggest(exp, history, 8)
        self.assert_count(algorithm_name, batch, 8)
        keys = [point_key(space, p) for p in batch]
        assert len(set(keys)) == len(keys), batch
        used = {point_key(space, t.assignments) for t in history}
        assert not used & set(keys), [p for p, k in zip(batch, keys, strict=True) if k in used]

    def test_accepts_foreign_history(self, algorithm_name: str) -> None:
        self.require(algorithm_name, "arbitrary_history")
        exp = self.experiment(algorithm_name)
        specs = exp.search_space.specs
        own = self.call_suggest(exp, [], 6)
        foreign = {"lr": "0.0123456", "wd": "0.05", "layers": "4", "optimizer": "adamw",
                   "batch": "48"}
        history = [
            *as_history(own[:2], TrialCondition.SUCCEEDED),
            *as_history(own[2:3], TrialCondition.FAILED, start=2),
            *as_history(own[3:4], TrialCondition.RUNNING, start=3),
            *as_history(own[4:5], TrialCondition.EARLY_STOPPED, start=4),
            TrialRecord("no-metric", own[5], TrialCondition.SUCCEEDED, None),
            TrialRecord("created", dict(foreign), TrialCondition.CREATED),
            TrialRecord("not-ours", dict(foreign), TrialCondition.SUCCEEDED, 0.9),
            TrialRecord("missing-param", {"lr": "0.05"}, TrialCondition.SUCCEEDED, 0.1),
            TrialRecord("garbage", {"lr": "abc", "layers": "x"}, TrialCondition.FAILED),
            TrialRecord("killed", dict(own[0]), TrialCondition.KILLED, 0.3),
            TrialRecord("unknown", dict(own[1]), TrialCondition.UNKNOWN),
        ]
        points = self.call_suggest(exp, history, 5)
        self.assert_count(algorithm_name, points, 5)
        for p in points:
            check_point(specs, p)

    def test_no_duplicates_small_discrete_space(self, algorithm_name: str) -> None:
        self.require(algorithm_name, "finite_spaces")
        specs = tiny_specs()
        exp = self.experiment(algorithm_name, specs)
        batch = self.call_suggest(exp, [], 4)
        assert len({tuple(p.items()) for p in batch}) == 4
        history = as_history(batch[:2], TrialCondition.FAILED)
        history += as_history(batch[2:3], TrialCondition.RUNNING, start=2)
        seen = {tuple(p.items()) for p in batch[:3]}
        rest = self.call_suggest(exp, history, 3)
        assert len(rest) == 3
        for p in rest:
            check_point(specs, p)
            assert tuple(p.items()) not in seen
            seen.add(tuple(p.items()))

    def test_exhausts_tiny_discrete_space(self, algorithm_name: str) -> None:
        self.require(algorithm_name, "finite_spaces")
        specs = tiny_specs()
        exp = self.experiment(algorithm_name, specs)
        history: list[TrialRecord] = []
        seen: set[tuple[tuple[str, str], ...]] = set()
        while len(history) < 6:
            points = self.call_suggest(exp, history, 4)
            # Short replies are allowed only when fewer points remain than requested.
            assert len(points) == min(4, 6 - len(history))
            for p in points:
                assert tuple(p.items()) not in seen
                seen.add(tuple(p.items()))
            history += as_history(points, start=len(history))
        assert len(seen) == 6
        with pytest.raises(SearchSpaceExhaustedError):
            self.call_suggest(exp, history, 1)
        # Equivalent values written differently ("01") count as used points too.
        rewritten = [replace(t, assignments={**t.assignments, "a": "0" + t.assignments["a"]})
                     for t in history]
        with pytest.raises(SearchSpaceExhaustedError):
            self.call_suggest(exp, rewritten, 1)

    def test_small_finite_space_after_a_model_fits(self, algorithm_name: str) -> None:
        """27 points asked for 8 at a time, with failures and running trials in the
        history: never a repeat, exactly 8 while 8 remain, then exhausted."""
        self.require(algorithm_name, "finite_spaces")
        specs = small_finite_specs()
        exp = self.experiment(algorithm_name, specs)
        space = exp.search_space
        history: list[TrialRecord] = []
        previous: list[int] = []
        while len(history) < 27:
            for i in previous:  # the batch before last finishes; the last one still runs
                history[i] = finished(history[i], i, specs)
            previous = [i for i, t in enumerate(history) if t.condition is TrialCondition.RUNNING]
            points = self.call_suggest(exp, history, 8)
            assert len(points) == min(8, 27 - len(history)), (len(points), len(history))
            keys = {point_key(space, p) for p in points}
            assert len(keys) == len(points), points
            assert not keys & {point_key(space, t.assignments) for t in history}, points
            for p in points:
                check_point(specs, p)
            start = len(history)
            history += [TrialRecord(f"trial-{start + j}", p, TrialCondition.RUNNING)
                        for j, p in enumerate(points)]
        with pytest.raises(SearchSpaceExhaustedError):
            self.call_suggest(exp, history, 1)

    def test_validate_accepts_good_settings(self, algorithm_name: str) -> None:
        self.call_validate(self.experiment(algorithm_name, random_state=11))
        self.call_validate(self.experiment(algorithm_name, random_state=None))

    def test_validate_rejects_unknown_setting(self, algorithm_name: str) -> None:
        exp = self.experiment(algorithm_name, no_such_setting="1")
        with pytest.raises(InvalidArgumentError) as info:
            self.call_validate(exp)
        assert f"unknown setting no_such_setting for algorithm {algorithm_name}" in str(info.value)
        with pytest.raises(InvalidArgumentError):
            self.call_suggest(exp, [], 1)

    @pytest.mark.parametrize("bad", ["-1", "abc", "1.5"])
    def test_validate_rejects_bad_random_state(self, algorithm_name: str, bad: str) -> None:
        if "random_state" not in ALGORITHMS[algorithm_name].settings_schema:
            pytest.skip(f"{algorithm_name} has no random_state setting")
        exp = self.experiment(algorithm_name, random_state=None)
        exp = replace(exp, settings={**exp.settings, "random_state": bad})
        with pytest.raises(InvalidArgumentError) as info:
            self.call_validate(exp)
        assert "random_state" in str(info.value)
