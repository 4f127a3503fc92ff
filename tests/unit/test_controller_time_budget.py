"""The reconcile loop's time budget and warm-start trials (katib.controller.time_budget).

Real SQLite storage, the fake executor and a stub suggestion client that records the
history it is given.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from katib.api.loading import load_experiment_dict
from katib.api.models import (
    EXPERIMENT_LABEL,
    Condition,
    Experiment,
    Metric,
    ObjectMeta,
    Observation,
    ParameterAssignment,
    Trial,
    TrialConditionType,
    TrialSpec,
    TrialStatus,
)
from katib.controller import time_budget
from katib.controller.reconcile import Controller
from katib.controller.suggestion_client import SuggestionReply
from katib.executors.base import LaunchContext
from katib.executors.fake import FakeExecutor, FakeRun
from katib.storage.sql import SQLStorage


def _doc(annotations: dict[str, str] | None = None, max_trials: int = 4) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "exp", "annotations": annotations or {}},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 2,
            "maxTrialCount": max_trials,
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
                                        "command": ["python3", "-c", "${trialParameters.x}"],
                                    }
                                ],
                            }
                        }
                    },
                },
            },
        },
    }


class RecordingSuggestions:
    def __init__(self) -> None:
        self.histories: list[list[str]] = []
        self.count = 0

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
        self.histories.append([t.name for t in trials])
        values = []
        for _ in range(count):
            self.count += 1
            values.append({"x": f"{self.count / 100:.2f}"})
        return SuggestionReply(values, [None] * count, [{}] * count)


def _controller(
    tmp_path: Path, behaviour: Any, doc: dict[str, Any]
) -> tuple[Controller, SQLStorage, RecordingSuggestions]:
    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    storage.create_experiment(load_experiment_dict(doc))
    stub = RecordingSuggestions()
    controller = Controller(
        storage,
        FakeExecutor(behaviour),
        lambda name: stub,  # type: ignore[arg-type,return-value]
        lambda exp: LaunchContext(experiment=exp, db_manager_address="unused"),
    )
    return controller, storage, stub


def _run(controller: Controller, limit: int = 2000) -> Experiment:
    for _ in range(limit):
        result = controller.reconcile("exp")
        if result.completed:
            return result.experiment
        time.sleep(0.002)
    raise AssertionError("did not complete")


def _last(experiment: Experiment) -> Condition:
    assert experiment.status is not None
    return [c for c in experiment.status.conditions if c.status == "True"][-1]


def quick(assignments: Mapping[str, str]) -> FakeRun:
    return FakeRun(metrics=[("accuracy", assignments["x"])], polls=1)


def test_warm_start_trials_are_history_only(tmp_path: Path) -> None:
    controller, storage, stub = _controller(tmp_path, quick, _doc())
    warm = Trial(
        metadata=ObjectMeta(
            name="exp-warm-1",
            namespace="default",
            labels={EXPERIMENT_LABEL: "exp", time_budget.WARM_START_LABEL: "true"},
        ),
        spec=TrialSpec(parameter_assignments=[ParameterAssignment(name="x", value="0.99")]),
        status=TrialStatus(
            conditions=[Condition(type="Succeeded", reason="TrialWarmStart")],
            observation=Observation(
                metrics=[Metric(name="accuracy", min="0.99", max="0.99", latest="0.99")]
            ),
        ),
    )
    storage.create_trials("exp", "default", [warm])
    final = _run(controller)
    assert stub.histories[0] == ["exp-warm-1"]  # seen before the first suggestion
    own = [t for t in storage.list_trials("exp") if not time_budget.is_warm_start(t)]
    assert len(own) == 4  # the warm trial does not use up maxTrialCount
    assert final.status is not None and final.status.trials == 4
    optimal = final.status.current_optimal_trial
    assert optimal is not None and optimal.best_trial_name != "exp-warm-1"
    assert _last(final).reason == "ExperimentMaxTrialsReached"


def test_time_budget_wait_stops_creating_then_ends(tmp_path: Path) -> None:
    # each trial outlives the 1 s budget (a pass takes over 2 ms)
    slow = lambda a: FakeRun(metrics=[("accuracy", a["x"])], polls=600)  # noqa: E731
    doc = _doc({time_budget.TIMEOUT_ANNOTATION: "1"}, max_trials=100)
    controller, storage, _ = _controller(tmp_path, slow, doc)
    final = _run(controller)
    trials = storage.list_trials("exp")
    assert len(trials) == 2  # the first two, none after the budget ran out
    assert all(t.condition == TrialConditionType.SUCCEEDED for t in trials)
    last = _last(final)
    assert (last.type, last.reason) == ("Succeeded", time_budget.TIMEOUT_REASON)


def test_time_budget_kill_stops_running_trials(tmp_path: Path) -> None:
    endless = lambda a: FakeRun(polls=10**9)  # noqa: E731
    doc = _doc(
        {time_budget.TIMEOUT_ANNOTATION: "1", time_budget.ON_TIMEOUT_ANNOTATION: "kill"},
        max_trials=100,
    )
    controller, storage, _ = _controller(tmp_path, endless, doc)
    final = _run(controller)
    assert [t.condition for t in storage.list_trials("exp")] == [TrialConditionType.KILLED] * 2
    last = _last(final)
    assert (last.type, last.reason) == ("Failed", time_budget.TIMEOUT_REASON)
    assert "no trial succeeded" in (last.message or "")
