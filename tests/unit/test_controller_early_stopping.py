"""The reconcile loop's early-stopping side: rules into trials, EarlyStopped trials, SetTrialStatus.

Real SQLite storage, the fake executor and stub suggestion / early-stopping clients.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from katib import errors
from katib.api.loading import load_experiment_dict
from katib.api.models import EarlyStoppingRule, Experiment, Trial, TrialConditionType
from katib.controller.reconcile import Controller
from katib.controller.suggestion_client import SuggestionReply
from katib.executors.base import LaunchContext, TrialOutcome, TrialPhase
from katib.executors.fake import FakeExecutor, FakeRun
from katib.storage.base import MetricLogEntry
from katib.storage.sql import SQLStorage

MEDIANSTOP = {
    "algorithmName": "medianstop",
    "algorithmSettings": [{"name": "min_trials_required", "value": "2"}],
}


def experiment_doc(**spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "exp"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "earlyStopping": MEDIANSTOP,
            "parallelTrialCount": 1,
            "maxTrialCount": 6,
            "maxFailedTrialCount": 0,
            "parameters": [
                {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}}
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
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
                                        "name": "main",
                                        "image": "python",
                                        "command": ["train", "--x=${trialParameters.x}"],
                                    }
                                ],
                            }
                        }
                    },
                },
            },
        },
    }
    doc["spec"].update(spec)
    return doc


class Suggestions:
    """x = 0.9, 0.8, 0.1, 0.7, ... in order."""

    def __init__(self, values: Sequence[str]) -> None:
        self.values = iter(itertools.cycle(values))

    def validate(self, experiment: Experiment) -> None:
        return None

    def get_suggestions(
        self,
        experiment: Experiment,
        trials: Sequence[Trial],
        count: int,
        total: int,
        settings: Sequence[tuple[str, str]] = (),
        **_: Any,
    ) -> SuggestionReply:
        points = [{"x": next(self.values)} for _ in range(count)]
        return SuggestionReply(points, [None] * count, [{}] * count)


class Rules:
    """Stub EarlyStopping client: a rule once two trials succeeded; records each call."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[list[str], str]] = []
        self.fail = fail

    def get_rules(
        self, experiment: Experiment, trials: Sequence[Trial], db_manager_address: str
    ) -> list[EarlyStoppingRule]:
        if self.fail:
            raise errors.UnavailableError("early-stopping service down")
        self.calls.append(([t.condition.value for t in trials], db_manager_address))
        done = [t for t in trials if t.condition == TrialConditionType.SUCCEEDED]
        if len(done) < 2:
            return []
        return [EarlyStoppingRule(name="accuracy", value="0.5", comparison="less", start_step=2)]


class StoppingExecutor(FakeExecutor):
    """Trials with x < 0.5 and rules are "stopped by their collector" when they finish."""

    def __init__(self, behaviour: Any) -> None:
        super().__init__(behaviour)
        self.stopped: list[str] = []

    def poll(self, trial: Trial) -> TrialOutcome:
        outcome = super().poll(trial)
        if (
            outcome.phase == TrialPhase.FINISHED
            and trial.spec.early_stopping_rules
            and float(trial.assignments["x"]) < 0.5
        ):
            outcome.early_stopped = True
            outcome.exit_code, outcome.signal = None, 15
        return outcome

    def stop(self, trial: Trial) -> None:
        self.stopped.append(trial.name)
        super().stop(trial)


def accuracy(assignments: Mapping[str, str]) -> FakeRun:
    x = assignments["x"]
    metrics = [] if x == "0.2" else [("accuracy", x)]
    return FakeRun(metrics=metrics, polls=2 if x != "0.3" else 10_000)


def make(
    tmp_path: Path, values: Sequence[str], rules: Rules | None, **spec: Any
) -> tuple[Controller, StoppingExecutor, SQLStorage]:
    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    executor = StoppingExecutor(accuracy)
    storage.create_experiment(load_experiment_dict(experiment_doc(**spec)))
    suggestions = Suggestions(values)
    controller = Controller(
        storage,
        executor,
        lambda name: suggestions,  # type: ignore[arg-type,return-value]
        lambda exp: LaunchContext(experiment=exp, db_manager_address="db:6789"),
        early_stopping_client=(lambda name: rules) if rules else None,  # type: ignore[arg-type,return-value]
    )
    return controller, executor, storage


def run_to_end(controller: Controller) -> Experiment:
    for _ in range(300):
        result = controller.reconcile("exp")
        if result.completed:
            return result.experiment
    raise AssertionError("experiment did not complete")


def test_rules_go_into_new_trials_and_stopped_trials_end_early_stopped(tmp_path: Path) -> None:
    rules = Rules()
    controller, _, storage = make(tmp_path, ["0.9", "0.8", "0.1", "0.7", "0.4", "0.6"], rules)
    final = run_to_end(controller)
    trials = storage.list_trials("exp")
    by_x = {t.assignments["x"]: t for t in trials}
    assert [bool(t.spec.early_stopping_rules) for t in trials] == [False] * 2 + [True] * 4
    assert by_x["0.1"].spec.early_stopping_rules == [
        EarlyStoppingRule(name="accuracy", value="0.5", comparison="less", start_step=2)
    ]
    # GetEarlyStoppingRules saw every trial and the DBManager address of the launch context.
    assert rules.calls[0] == ([], "db:6789")
    assert rules.calls[2] == (["Succeeded", "Succeeded"], "db:6789")
    for x in ("0.1", "0.4"):
        trial = by_x[x]
        last = trial.status.conditions[-1]
        assert (last.type, last.reason, last.message) == (
            "EarlyStopped",
            "TrialEarlyStopped",
            "Trial is early stopped",
        )
        assert trial.status.observation is not None
        assert trial.status.observation.metrics[0].latest == x  # the observation is kept
    assert final.status is not None
    # Early-stopped trials are finished, not failed: the budget of 6 ends the experiment.
    assert final.status.trials_early_stopped == 2
    assert final.status.trials_succeeded == 4
    assert final.status.trials_failed is None
    assert final.status.early_stopped_trial_list == [by_x["0.1"].name, by_x["0.4"].name]
    assert [c.reason for c in final.status.conditions if c.type == "Succeeded"] == [
        "ExperimentMaxTrialsReached"
    ]


def test_early_stopped_without_objective_is_metrics_unavailable(tmp_path: Path) -> None:
    controller, _, storage = make(
        tmp_path, ["0.9", "0.8", "0.2"], Rules(), maxTrialCount=3, maxFailedTrialCount=1
    )
    run_to_end(controller)
    trial = storage.list_trials("exp")[2]
    assert trial.condition == TrialConditionType.METRICS_UNAVAILABLE
    message = trial.status.conditions[-1].message or ""
    assert "early stopped" in message and "accuracy was not reported" in message


def test_no_early_stopping_spec_means_no_rules_call(tmp_path: Path) -> None:
    rules = Rules()
    controller, _, storage = make(tmp_path, ["0.9", "0.1"], rules, earlyStopping=None)
    run_to_end(controller)
    assert rules.calls == []
    assert all(t.spec.early_stopping_rules is None for t in storage.list_trials("exp"))


def test_rules_service_down_creates_no_trial(tmp_path: Path) -> None:
    controller, executor, storage = make(tmp_path, ["0.9"], Rules(fail=True))
    try:
        controller.reconcile("exp")
    except errors.UnavailableError:
        pass
    else:
        raise AssertionError("expected UnavailableError")
    assert storage.list_trials("exp") == [] and executor.launches == []


def test_set_trial_status_stops_a_running_trial(tmp_path: Path) -> None:
    controller, executor, storage = make(tmp_path, ["0.3"], Rules(), maxTrialCount=1)
    controller.lazy_write_seconds = 0.0  # store "Running" on the pass that sees it
    controller.reconcile("exp")
    controller.reconcile("exp")
    (trial,) = storage.list_trials("exp")
    assert trial.condition == TrialConditionType.RUNNING
    # What its collector reported while it ran.
    storage.report_observation_log(
        trial.name, [MetricLogEntry("accuracy", "0.3", datetime.now(UTC))]
    )
    controller.request_early_stop(trial.name)
    final = run_to_end(controller)
    (trial,) = storage.list_trials("exp")
    assert executor.stopped == [trial.name]
    assert trial.condition == TrialConditionType.EARLY_STOPPED
    assert trial.status.observation and trial.status.observation.metrics[0].max == "0.3"
    assert final.status is not None and final.status.trials_early_stopped == 1
