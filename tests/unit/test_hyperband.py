"""Hyperband: schedule, settings, stateless rungs from the history, waiting, the real controller."""

from __future__ import annotations

import itertools
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from katib import errors
from katib.api.loading import load_experiment_dict
from katib.api.models import Experiment, Trial, TrialConditionType
from katib.controller.conversion import experiment_to_pb, trials_for_request
from katib.controller.reconcile import Controller
from katib.controller.suggestion_client import SuggestionReply
from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError
from katib.executors.base import LaunchContext
from katib.executors.fake import FakeExecutor, FakeRun
from katib.storage.sql import SQLStorage
from suggestion_services.base import ExperimentInfo, ObjectiveType, TrialCondition, TrialRecord
from suggestion_services.experiment_cache import clear_all_caches
from suggestion_services.hyperband import BRACKET_LABEL, RUNG_LABEL, Hyperband, Schedule
from suggestion_services.search_space import ParameterSpec, SearchSpace
from suggestion_services.server import experiment_from_proto, trial_from_proto

SPECS = [
    ParameterSpec("lr", "double", "0.001", "0.1", distribution="logUniform"),
    ParameterSpec("epochs", "int", "1", "9"),
    ParameterSpec("opt", "categorical", list=("adam", "sgd")),
]
SETTINGS = {"r_l": "9", "eta": "3", "resource_name": "epochs", "random_state": "1"}


def experiment(
    settings: Mapping[str, str] = SETTINGS,
    specs: Sequence[ParameterSpec] = SPECS,
    parallel: int = 9,
    objective: ObjectiveType = ObjectiveType.MAXIMIZE,
) -> ExperimentInfo:
    return ExperimentInfo(
        name="hb",
        algorithm_name="hyperband",
        search_space=SearchSpace.from_specs(specs),
        objective_type=objective,
        objective_metric_name="acc",
        settings=dict(settings),
        parallel_trial_count=parallel,
    )


def score(point: Mapping[str, str]) -> float:
    """Better with more epochs, best near lr=0.01 with adam."""
    lr = float(point["lr"])
    return round(0.5 + 0.02 * float(point["epochs"]) - abs(lr - 0.01) * 3
                 + (0.05 if point["opt"] == "adam" else 0), 6)


def ask(exp: ExperimentInfo, history: Sequence[TrialRecord], n: int) -> list[dict[str, str]]:
    return [s.assignments for s in Hyperband().suggest(exp, history, n)]


def finish(history: list[TrialRecord], condition: TrialCondition = TrialCondition.SUCCEEDED,
           value: Any = score) -> None:
    for i, t in enumerate(history):
        if t.condition is TrialCondition.RUNNING:
            v = value(t.assignments) if callable(value) else value
            history[i] = replace(t, condition=condition, objective_value=v)


def run(history: list[TrialRecord], points: Sequence[Mapping[str, str]]) -> None:
    history += [TrialRecord(f"t{len(history) + j}", dict(p), TrialCondition.RUNNING)
                for j, p in enumerate(points)]


def config(point: Mapping[str, str]) -> tuple[str, str]:
    return point["lr"], point["opt"]


# --- the schedule ---------------------------------------------------------------------------


def test_schedule_r_l_9_eta_3() -> None:
    schedule = Schedule.of(9, 3)
    assert schedule.s_max == 2
    # Katib's rounding: survivors are ceil(n_i / eta).
    assert dict(schedule.rungs) == {2: (9, 3, 1), 1: (5, 2), 0: (3,)}
    assert [[schedule.resource(s, i) for i in range(s + 1)] for s in schedule.brackets] == [
        [1, 3, 9], [3, 9], [9]]
    assert (schedule.trials, schedule.min_parallel) == (23, 9)


def test_schedule_matches_the_paper_table() -> None:
    """Li et al. (2018), Table 1 (R=81, eta=3): n and r of each bracket, the first one's rungs."""
    schedule = Schedule.of(81, 3)
    assert [schedule.rungs[s][0] for s in schedule.brackets] == [81, 34, 15, 8, 5]
    assert [schedule.resource(s, 0) for s in schedule.brackets] == pytest.approx(
        [1, 3, 9, 27, 81])
    assert schedule.rungs[4] == (81, 27, 9, 3, 1)
    assert Schedule.of(2, 2).rungs == {1: (2, 1), 0: (2,)}  # Katib's own example
    assert Schedule.of(1000, 10).s_max == 3  # no float noise: log(1000)/log(10) < 3


def test_whole_run_hands_out_the_schedule() -> None:
    """Asked for many at once: rung 0 of every bracket, then each rung once the last ends."""
    exp = experiment()
    history: list[TrialRecord] = []
    first = ask(exp, history, 100)
    assert Counter(p["epochs"] for p in first) == {"1": 9, "3": 5, "9": 3}
    assert len({config(p) for p in first}) == 17  # distinct configurations
    run(history, first)
    assert ask(exp, history, 100) == []  # everything waits: not exhausted
    finish(history)
    second = ask(exp, history, 100)
    assert Counter(p["epochs"] for p in second) == {"3": 3, "9": 2}
    # The survivors are the best of their rung, copied with eta times the resource.
    rung0 = [t for t in history if t.assignments["epochs"] == "1"]
    best3 = sorted(rung0, key=lambda t: -(t.objective_value or 0))[:3]
    assert {config(p) for p in second if p["epochs"] == "3"} == {config(t.assignments)
                                                                  for t in best3}
    bracket1 = [t for t in history if t.assignments["epochs"] == "3"]
    best2 = sorted(bracket1, key=lambda t: -(t.objective_value or 0))[:2]
    assert {config(p) for p in second if p["epochs"] == "9"} == {config(t.assignments)
                                                                  for t in best2}
    run(history, second)
    finish(history)
    third = ask(exp, history, 100)
    assert len(third) == 1 and third[0]["epochs"] == "9"
    run(history, third)
    # Everything is handed out: finished even while the last trial runs.
    with pytest.raises(SearchSpaceExhaustedError, match="hyperband has finished"):
        ask(exp, history, 1)
    assert len(history) == 23


def test_labels_and_order_one_slot_at_a_time() -> None:
    exp = experiment()
    history: list[TrialRecord] = []
    labels = []
    while True:
        try:
            got = Hyperband().suggest(exp, history, 1)
        except SearchSpaceExhaustedError:
            break
        if not got:
            finish(history)
            continue
        labels.append((got[0].labels[BRACKET_LABEL], got[0].labels[RUNG_LABEL]))
        run(history, [got[0].assignments])
        finish(history)  # sequential: each trial ends before the next call
    assert labels == [("2", "0")] * 9 + [("2", "1")] * 3 + [("2", "2")] + [("1", "0")] * 5 + [
        ("1", "1")] * 2 + [("0", "0")] * 3


def test_failures_rank_last_and_are_not_promoted() -> None:
    exp = experiment(objective=ObjectiveType.MINIMIZE)
    history: list[TrialRecord] = []
    run(history, ask(exp, history, 9))  # bracket 2, rung 0
    for i in range(9):  # only three have values; the others fail in every way
        t = history[i]
        if i < 3:
            history[i] = replace(t, condition=TrialCondition.SUCCEEDED, objective_value=float(i))
        else:
            cond = [TrialCondition.FAILED, TrialCondition.KILLED,
                    TrialCondition.METRICS_UNAVAILABLE][i % 3]
            history[i] = replace(t, condition=cond, objective_value=-100.0)
    promoted = ask(exp, history, 3)
    assert [p["epochs"] for p in promoted] == ["3", "3", "3"]
    assert {config(p) for p in promoted} == {config(history[i].assignments) for i in range(3)}
    run(history, promoted)
    finish(history, TrialCondition.FAILED, None)  # the whole rung fails: bracket 2 ends early
    nxt = ask(exp, history, 1)
    assert nxt[0]["epochs"] == "3" and config(nxt[0]) not in {config(t.assignments)
                                                              for t in history}  # bracket 1


def test_a_running_trial_holds_its_rung() -> None:
    exp = experiment()
    history: list[TrialRecord] = []
    run(history, ask(exp, history, 17))
    finish(history)
    history[4] = replace(history[4], condition=TrialCondition.RUNNING, objective_value=None)
    points = ask(exp, history, 10)
    assert Counter(p["epochs"] for p in points) == {"9": 2}  # bracket 1's rung 1 only


def test_foreign_trials_are_ignored_and_duplicates_count_once() -> None:
    exp = experiment()
    history: list[TrialRecord] = []
    run(history, ask(exp, history, 9))
    finish(history)
    clean = ask(exp, history, 3)
    noisy = [
        TrialRecord("user", {"lr": "0.01", "epochs": "1", "opt": "adam"},
                    TrialCondition.SUCCEEDED, 99.0),
        TrialRecord("odd-epochs", {**history[0].assignments, "epochs": "2"},
                    TrialCondition.SUCCEEDED, 99.0),
        TrialRecord("garbage", {"lr": "x", "epochs": "y"}, TrialCondition.FAILED),
        *history,
        TrialRecord("again", dict(history[0].assignments), TrialCondition.RUNNING),
    ]
    assert ask(exp, noisy, 3) == clean


def test_katib_state_keys_are_accepted_and_ignored() -> None:
    katib_state = {"s_max": "2", "b_l": "27.0", "r": "1", "n": "9", "current_s": "-1",
                   "current_i": "0", "evaluating_trials": "0"}
    exp = experiment({**SETTINGS, **katib_state})
    Hyperband().validate_settings(exp)
    assert len(ask(exp, [], 9)) == 9


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"r_l": "9"}, "r_l and resource_name must be set."),
        ({"resource_name": "epochs"}, "r_l and resource_name must be set."),
        ({"r_l": "abc", "resource_name": "epochs"}, "r_l must be a positive float number."),
        ({"r_l": "-1", "resource_name": "epochs"}, "r_l must be a positive float number."),
        ({"r_l": "0", "resource_name": "epochs"}, "r_l must be a positive float number."),
        ({"r_l": "9", "resource_name": "steps"},
         "value of resource_name setting must be in parameters."),
        ({"r_l": "9", "resource_name": "opt"}, "must name an int, double or discrete"),
        ({"r_l": "9", "resource_name": "epochs", "eta": "1"}, "eta must be greater than 1"),
        ({"r_l": "9", "resource_name": "epochs", "eta": "x"}, "failed to validate eta"),
        ({"r_l": "9", "resource_name": "epochs", "foo": "1"},
         "unknown setting foo for algorithm hyperband"),
        ({"r_l": "3", "resource_name": "epochs", "eta": "1.2"}, "give two rungs the same epochs"),
        ({"r_l": "1e12", "resource_name": "lr"}, "at most 100000 are supported"),
    ],
)
def test_bad_settings(settings: dict[str, str], message: str) -> None:
    exp = experiment(settings, parallel=1_000_000)
    with pytest.raises(InvalidArgumentError) as info:
        Hyperband().validate_settings(exp)
    assert message in str(info.value)


def test_parallel_trial_count_rule() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Hyperband().validate_settings(experiment(parallel=8))
    assert str(info.value) == "parallelTrialCount must be not less than 9."
    with pytest.raises(InvalidArgumentError):  # unset means Katib's default, 3
        Hyperband().validate_settings(experiment(parallel=0))
    Hyperband().validate_settings(experiment({**SETTINGS, "r_l": "3"}, parallel=0))
    # eta <= 0 means 3 (Katib); suggestions do not check parallelism.
    Hyperband().validate_settings(experiment({**SETTINGS, "eta": "-2"}))
    assert len(ask(experiment(parallel=1), [], 2)) == 2


def test_resource_written_as_declared() -> None:
    double = [ParameterSpec("budget", "double", "0.5", "0.5"), SPECS[0]]
    points = ask(experiment({"r_l": "4", "eta": "2", "resource_name": "budget"}, double), [], 20)
    assert sorted({p["budget"] for p in points}) == ["1.0", "2.0", "4.0"]  # range not applied
    discrete = [ParameterSpec("steps", "discrete", list=("100", "300", "900")), SPECS[0]]
    settings = {"r_l": "900", "eta": "3", "resource_name": "steps"}
    with pytest.raises(InvalidArgumentError, match="give two rungs the same steps"):
        Hyperband().validate_settings(experiment(settings, discrete, parallel=10_000))
    exp = experiment({**settings, "r_l": "9"}, [ParameterSpec("steps", "discrete",
                                                               list=("1", "3", "9")), SPECS[0]])
    assert {p["steps"] for p in ask(exp, [], 17)} == {"1", "3", "9"}


def test_same_history_same_answer_without_random_state() -> None:
    exp = experiment({k: v for k, v in SETTINGS.items() if k != "random_state"})
    history: list[TrialRecord] = []
    run(history, ask(exp, history, 9))
    finish(history)
    first = ask(exp, history, 5)
    clear_all_caches()
    assert ask(exp, history, 5) == first
    assert ask(replace(exp, name="other"), [], 9) != ask(exp, [], 9)
    assert zlib.crc32(b"hb") != zlib.crc32(b"other")


def test_warm_equals_cold_with_out_of_order_results() -> None:
    exp = experiment()
    history: list[TrialRecord] = []
    for step in itertools.count():
        running = [i for i, t in enumerate(history) if t.condition is TrialCondition.RUNNING]
        for i in running[:: 2 if step % 2 else 3]:
            history[i] = replace(history[i], condition=TrialCondition.SUCCEEDED,
                                 objective_value=score(history[i].assignments))
        try:
            warm = ask(exp, history, 4)
        except SearchSpaceExhaustedError:
            break
        clear_all_caches()
        assert ask(exp, list(reversed(history))[::-1], 4) == warm
        if not warm:
            finish(history)
        run(history, warm)
    assert len(history) == 23


# --- through the controller ----------------------------------------------------------------


class InProcessSuggestions:
    """The controller's suggestion client, served by Hyperband in-process (wire conversions)."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, int]] = []  # (asked for, got)

    def validate(self, experiment: Experiment) -> None:
        Hyperband().validate_settings(experiment_from_proto(experiment_to_pb(experiment)))

    def get_suggestions(
        self,
        experiment: Experiment,
        trials: Sequence[Trial],
        count: int,
        total: int,
        settings: Sequence[tuple[str, str]] = (),
        **_: Any,
    ) -> SuggestionReply:
        info = experiment_from_proto(experiment_to_pb(experiment, settings))
        records = [trial_from_proto(t, info.objective_metric_name)
                   for t in trials_for_request(experiment, trials)]
        result = Hyperband().suggest_with_settings(info, records, count)
        self.replies.append((count, len(result.suggestions)))
        return SuggestionReply(
            [s.assignments for s in result.suggestions],
            [None] * len(result.suggestions),
            [dict(s.labels) for s in result.suggestions],
            list(result.settings.items()),
        )


def controller_doc(parallel: int) -> dict[str, Any]:
    params = [
        {"name": "lr", "parameterType": "double",
         "feasibleSpace": {"min": "0.001", "max": "0.1", "distribution": "logUniform"}},
        {"name": "epochs", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "9"}},
        {"name": "opt", "parameterType": "categorical", "feasibleSpace": {"list": ["adam", "sgd"]}},
    ]
    command = ["python3", "-c", "print('${trialParameters.lr} ${trialParameters.epochs} "
               "${trialParameters.opt}')"]
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "hb"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "acc"},
            "algorithm": {"algorithmName": "hyperband", "algorithmSettings": [
                {"name": k, "value": v} for k, v in SETTINGS.items()]},
            "parallelTrialCount": parallel,
            "maxTrialCount": 100,
            "maxFailedTrialCount": 100,
            "parameters": params,
            "trialTemplate": {
                "primaryContainerName": "training-container",
                "trialParameters": [{"name": p["name"], "reference": p["name"]} for p in params],
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {
                    "spec": {"restartPolicy": "Never", "containers": [
                        {"name": "training-container", "image": "python:3.11",
                         "command": command}]}}}},
            },
        },
    }


@pytest.mark.parametrize("parallel", [9, 4])
def test_controller_runs_the_whole_schedule_and_ends(tmp_path: Path, parallel: int) -> None:
    """Waiting rungs do not end the experiment; the end of the schedule does, cleanly."""

    def behaviour(point: Mapping[str, str]) -> FakeRun:
        polls = 1 + zlib.crc32(point["lr"].encode()) % 4  # trials end out of order
        if zlib.crc32(point["lr"].encode()) % 7 == 0:
            return FakeRun(exit_code=1, polls=polls)
        return FakeRun(metrics=[("acc", str(score(point)))], polls=polls)

    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    executor = FakeExecutor(behaviour)
    client = InProcessSuggestions()
    experiment_model = load_experiment_dict(controller_doc(parallel))
    if parallel >= 9:
        client.validate(experiment_model)
    storage.create_experiment(experiment_model)
    controller = Controller(
        storage, executor, lambda name: client,  # type: ignore[arg-type,return-value]
        lambda exp: LaunchContext(experiment=exp, db_manager_address="unused"),
    )
    for _ in range(500):
        result = controller.reconcile("hb")
        if result.completed:
            break
    else:
        raise AssertionError("experiment did not complete")
    final = result.experiment
    assert final.status is not None
    last = [c for c in final.status.conditions if c.status == "True"][-1]
    assert (last.type, last.reason) == ("Succeeded", "ExperimentSuggestionEndReached")
    trials = storage.list_trials("hb")
    assert executor.max_running <= parallel
    if parallel == 9:
        # Empty and short replies while rungs waited did not end the experiment early
        # (at parallelism 4 the next bracket's first rung always fills the free slots).
        assert any(got == 0 for _, got in client.replies), client.replies
    epochs = Counter(t.assignments["epochs"] for t in trials)
    failed = sum(t.condition == TrialConditionType.FAILED for t in trials)
    # Rung 0 of every bracket always runs in full; failures shrink the later rungs.
    assert epochs["1"] == 9 and len(trials) <= 23 and len(trials) >= 17
    assert failed < len(trials)
    assert all(t.metadata.labels and t.metadata.labels[BRACKET_LABEL] for t in trials)
    with pytest.raises(errors.SearchSpaceExhaustedError):
        client.get_suggestions(final, trials, 1, len(trials) + 1)
