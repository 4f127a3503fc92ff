"""The reconcile loop with real SQLite storage, the fake executor and a stub suggestion client."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from katib import errors
from katib.api.loading import load_experiment_dict
from katib.api.models import Experiment, Trial, TrialConditionType
from katib.controller.reconcile import Controller
from katib.controller.suggestion_client import SuggestionReply
from katib.executors.base import LaunchContext
from katib.executors.fake import FakeExecutor, FakeRun
from katib.storage.sql import SQLStorage


def experiment_doc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "exp"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 3,
            "maxTrialCount": 12,
            "maxFailedTrialCount": 3,
            "parameters": [
                {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}}
            ],
            "trialTemplate": {
                "primaryContainerName": "training-container",
                "trialParameters": [{"name": "x", "reference": "x"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [
                                    {
                                        "name": "training-container",
                                        "image": "python:3.11",
                                        "command": [
                                            "python3",
                                            "-c",
                                            "print('x=${trialParameters.x}')",
                                        ],
                                    }
                                ],
                            }
                        }
                    },
                },
            },
        },
    }
    base["spec"].update(spec)
    return base


class StubSuggestions:
    """Hands out x = 0.01, 0.02, ...; optionally runs out after `limit` points."""

    def __init__(self, limit: int | None = None) -> None:
        self.counter = itertools.count(1)
        self.limit = limit
        self.requests: list[int] = []

    def validate(self, experiment: Experiment) -> None:
        return None

    def get_suggestions(
        self,
        experiment: Experiment,
        trials: Sequence[Trial],
        count: int,
        total: int,
        settings: Sequence[tuple[str, str]] = (),
        while_waiting: Any = None,
        **_: Any,
    ) -> SuggestionReply:
        if while_waiting is not None:  # as the real client: between request and reply
            while_waiting()
        self.requests.append(count)
        remaining = count if self.limit is None else min(count, self.limit - len(trials))
        if remaining <= 0:
            raise errors.SearchSpaceExhaustedError("no more points")
        values = [{"x": f"{next(self.counter) / 100:.2f}"} for _ in range(remaining)]
        return SuggestionReply(values, [None] * len(values), [{}] * len(values))


def make(
    tmp_path: Path, behaviour: Any, suggestions: StubSuggestions | None = None, **spec: Any
) -> tuple[Controller, FakeExecutor, SQLStorage, Experiment]:
    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    executor = FakeExecutor(behaviour)
    stub = suggestions or StubSuggestions()
    experiment = load_experiment_dict(experiment_doc(**spec))
    storage.create_experiment(experiment)
    controller = Controller(
        storage,
        executor,
        lambda name: stub,  # type: ignore[arg-type,return-value]
        lambda exp: LaunchContext(experiment=exp, db_manager_address="unused"),
    )
    return controller, executor, storage, experiment


def run_to_end(controller: Controller, limit: int = 500) -> Experiment:
    for _ in range(limit):
        result = controller.reconcile("exp")
        if result.completed:
            return result.experiment
    raise AssertionError("experiment did not complete")


def accuracy(assignments: Mapping[str, str]) -> FakeRun:
    return FakeRun(metrics=[("accuracy", assignments["x"])], polls=2)


def condition(experiment: Experiment) -> tuple[str, str]:
    assert experiment.status is not None
    last = [c for c in experiment.status.conditions if c.status == "True"][-1]
    return last.type, last.reason or ""


def test_exact_trial_count_and_parallelism(tmp_path: Path) -> None:
    controller, executor, storage, _ = make(tmp_path, accuracy)
    final = run_to_end(controller)
    trials = storage.list_trials("exp")
    assert len(trials) == 12
    assert len(executor.launches) == 12
    assert executor.max_running <= 3
    assert condition(final) == ("Succeeded", "ExperimentMaxTrialsReached")
    assert all(t.condition == TrialConditionType.SUCCEEDED for t in trials)
    assert final.status and final.status.current_optimal_trial
    assert final.status.current_optimal_trial.parameter_assignments[0].value == "0.12"
    assert final.status.trials == 12 and final.status.trials_succeeded == 12


def test_goal_reached_stops_running_trials(tmp_path: Path) -> None:
    def slow_accuracy(assignments: Mapping[str, str]) -> FakeRun:
        return FakeRun(
            metrics=[("accuracy", assignments["x"])], polls=1 if assignments["x"] == "0.02" else 50
        )

    controller, _executor, storage, _ = make(
        tmp_path,
        slow_accuracy,
        objective={"type": "maximize", "objectiveMetricName": "accuracy", "goal": 0.02},
    )
    final = run_to_end(controller)
    assert condition(final) == ("Succeeded", "ExperimentGoalReached")
    killed = [t for t in storage.list_trials("exp") if t.condition == TrialConditionType.KILLED]
    assert killed, "trials still running at the goal are stopped"


def test_failed_budget(tmp_path: Path) -> None:
    controller, _, storage, _ = make(tmp_path, lambda a: FakeRun(exit_code=1))
    final = run_to_end(controller)
    assert condition(final) == ("Failed", "ExperimentFailed")
    failed = [t for t in storage.list_trials("exp") if t.condition == TrialConditionType.FAILED]
    assert len(failed) == 3
    assert "exit code 1" in (failed[0].status.conditions[-1].message or "")


def test_metrics_unavailable_counts_as_failure(tmp_path: Path) -> None:
    controller, _, storage, _ = make(tmp_path, lambda a: FakeRun(metrics=[("loss", "1")]))
    final = run_to_end(controller)
    assert condition(final) == ("Failed", "ExperimentFailed")
    trial = storage.list_trials("exp")[0]
    assert trial.condition == TrialConditionType.METRICS_UNAVAILABLE
    assert "accuracy was not reported" in (trial.status.conditions[-1].message or "")


def test_non_finite_objective_is_unavailable(tmp_path: Path) -> None:
    controller, _, storage, _ = make(
        tmp_path, lambda a: FakeRun(metrics=[("accuracy", "nan")]), maxFailedTrialCount=12
    )
    run_to_end(controller)
    trial = storage.list_trials("exp")[0]
    assert trial.condition == TrialConditionType.METRICS_UNAVAILABLE
    assert "no finite value" in (trial.status.conditions[-1].message or "")


def test_exhausted_search_space_ends_successfully(tmp_path: Path) -> None:
    controller, _, storage, _ = make(tmp_path, accuracy, StubSuggestions(limit=5))
    final = run_to_end(controller)
    assert condition(final) == ("Succeeded", "ExperimentSuggestionEndReached")
    assert len(storage.list_trials("exp")) == 5


def test_lost_trial_fails_with_reason(tmp_path: Path) -> None:
    controller, _, storage, _ = make(tmp_path, lambda a: FakeRun(lost=True), maxFailedTrialCount=1)
    final = run_to_end(controller)
    assert condition(final) == ("Failed", "ExperimentFailed")
    trial = storage.list_trials("exp")[0]
    assert trial.status.conditions[-1].reason == "TrialLost"


def test_minimize_picks_lowest(tmp_path: Path) -> None:
    controller, _, _, _ = make(
        tmp_path,
        accuracy,
        objective={"type": "minimize", "objectiveMetricName": "accuracy"},
    )
    final = run_to_end(controller)
    assert final.status and final.status.current_optimal_trial
    assert final.status.current_optimal_trial.parameter_assignments[0].value == "0.01"


def test_restart_of_controller_resumes(tmp_path: Path) -> None:
    controller, executor, storage, _ = make(tmp_path, accuracy)
    for _ in range(5):
        controller.reconcile("exp")
    stub = StubSuggestions()
    stub.counter = itertools.count(100)
    again = Controller(
        storage,
        executor,
        lambda name: stub,  # type: ignore[arg-type,return-value]
        lambda exp: LaunchContext(experiment=exp, db_manager_address="unused"),
    )
    final = run_to_end(again)
    assert condition(final)[0] == "Succeeded"
    assert len(storage.list_trials("exp")) == 12
    assert len(set(executor.launches)) == len(executor.launches) == 12


@pytest.mark.parametrize("max_trials", [1, 2])
def test_small_budgets(tmp_path: Path, max_trials: int) -> None:
    controller, _executor, storage, _ = make(
        tmp_path,
        accuracy,
        maxTrialCount=max_trials,
        parallelTrialCount=max_trials,
        maxFailedTrialCount=0,
    )
    run_to_end(controller)
    assert len(storage.list_trials("exp")) == max_trials


def test_trial_names_are_kubernetes_style_and_random() -> None:
    from katib.controller.reconcile import _NAME_ALPHABET, new_trial_name

    names = [new_trial_name("exp") for _ in range(2000)]
    assert all(n.startswith("exp-") and len(n) == 12 for n in names)
    assert all(set(n[4:]) <= set(_NAME_ALPHABET) for n in names)
    assert len(set(names)) == len(names)
    seen = {c for n in names for c in n[4:]}
    assert seen == set(_NAME_ALPHABET)  # every character is drawn


def test_now_rfc3339_is_the_current_utc_second() -> None:
    import datetime as dt

    from katib.controller import status

    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stamp = dt.datetime.strptime(status.now_rfc3339(), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.UTC
    )
    after = dt.datetime.now(dt.UTC)
    assert before <= stamp <= after
