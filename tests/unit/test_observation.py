"""Metric strategies: observation logs -> min/max/latest -> each trial's value and the optimum."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from katib.api.loading import load_experiment_dict
from katib.api.models import (
    Condition,
    Experiment,
    Metric,
    ObjectMeta,
    Observation,
    Trial,
    TrialSpec,
    TrialStatus,
)
from katib.controller import observation
from katib.controller.reconcile import Controller
from katib.executors.base import LaunchContext
from katib.executors.fake import FakeExecutor, FakeRun
from katib.storage.base import MetricLogEntry
from katib.storage.sql import SQLStorage

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def entries(*rows: tuple[str, str]) -> list[MetricLogEntry]:
    return [
        MetricLogEntry(metric_name=n, value=v, timestamp=T0 + timedelta(seconds=i))
        for i, (n, v) in enumerate(rows)
    ]


def experiment(objective: dict[str, Any]) -> Experiment:
    return load_experiment_dict(
        {
            "apiVersion": "kubeflow.org/v1beta1",
            "kind": "Experiment",
            "metadata": {"name": "exp"},
            "spec": {
                "objective": objective,
                "algorithm": {"algorithmName": "random"},
                "parallelTrialCount": 1,
                "maxTrialCount": 3,
                "parameters": [
                    {
                        "name": "x",
                        "parameterType": "categorical",
                        "feasibleSpace": {"list": ["a", "b", "c"]},
                    }
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
                                            "image": "x",
                                            "command": ["run", "${trialParameters.x}"],
                                        }
                                    ],
                                }
                            }
                        },
                    },
                },
            },
        }
    )


def trial(name: str, condition: str, metrics: list[Metric]) -> Trial:
    return Trial(
        metadata=ObjectMeta(name=name, namespace="default"),
        spec=TrialSpec(),
        status=TrialStatus(
            conditions=[Condition(type=condition, status="True")],
            observation=Observation(metrics=metrics),
        ),
    )


def test_min_max_latest_and_non_finite_values() -> None:
    obs = observation.build_observation(
        entries(
            ("loss", "0.5"),
            ("loss", "0.2"),
            ("loss", "nan"),
            ("loss", "0.9"),
            ("loss", "inf"),
            ("other", "1"),
            ("accuracy", "abc"),
        ),
        ["loss", "accuracy", "never"],
    )
    by = {m.name: m for m in obs.metrics}
    assert (by["loss"].min, by["loss"].max, by["loss"].latest) == ("0.2", "0.9", "inf")
    # a value that is not a number can be latest, never min or max (Katib)
    assert (by["accuracy"].min, by["accuracy"].max, by["accuracy"].latest) == (
        "unavailable",
        "unavailable",
        "abc",
    )
    assert by["never"] == Metric(name="never")
    assert "other" not in by  # only metrics with a strategy are kept


def test_values_keep_their_text() -> None:
    obs = observation.build_observation(entries(("m", "1e-3"), ("m", "0.0010")), ["m"])
    assert (obs.metrics[0].min, obs.metrics[0].max) == ("1e-3", "1e-3")


def test_default_strategies_follow_the_objective_type_for_every_metric() -> None:
    exp = experiment(
        {"type": "maximize", "objectiveMetricName": "accuracy", "additionalMetricNames": ["loss"]}
    )
    assert observation.strategies_of(exp) == {"accuracy": "max", "loss": "max"}
    exp = experiment(
        {
            "type": "minimize",
            "objectiveMetricName": "loss",
            "additionalMetricNames": ["accuracy"],
            "metricStrategies": [{"name": "accuracy", "value": "latest"}],
        }
    )
    assert observation.strategies_of(exp) == {"loss": "min", "accuracy": "latest"}


@pytest.mark.parametrize("strategy,expected", [("min", "0.2"), ("max", "0.9"), ("latest", "0.4")])
def test_the_strategy_picks_the_trials_objective_value(strategy: str, expected: str) -> None:
    exp = experiment(
        {
            "type": "maximize",
            "objectiveMetricName": "accuracy",
            "metricStrategies": [{"name": "accuracy", "value": strategy}],
        }
    )
    obs = observation.build_observation(
        entries(("accuracy", "0.5"), ("accuracy", "0.2"), ("accuracy", "0.9"), ("accuracy", "0.4")),
        ["accuracy"],
    )
    t = trial("t", "Succeeded", obs.metrics)
    assert observation.objective_value(exp, t) == float(expected)


def test_min_and_max_fall_back_to_latest_and_unavailable_is_none() -> None:
    only_text = Observation(metrics=[Metric(name="m", latest="nan")])
    assert observation.metric_value(only_text, "m", "max") == "nan"
    assert observation.metric_value(Observation(metrics=[Metric(name="m")]), "m", "min") is None
    assert observation.metric_value(only_text, "absent", "max") is None
    assert observation.metric_value(None, "m", "max") is None


def test_optimal_trial_uses_strategies_and_only_completed_candidates() -> None:
    exp = experiment(
        {
            "type": "maximize",
            "objectiveMetricName": "accuracy",
            "goal": 0.8,
            "metricStrategies": [{"name": "accuracy", "value": "latest"}],
        }
    )
    trials = [
        # best max (0.99) but its latest is 0.5: with strategy latest it is not the best
        trial(
            "peaked", "Succeeded", [Metric(name="accuracy", min="0.1", max="0.99", latest="0.5")]
        ),
        trial(
            "steady", "EarlyStopped", [Metric(name="accuracy", min="0.1", max="0.7", latest="0.7")]
        ),
        trial("failed", "Failed", [Metric(name="accuracy", latest="0.95", max="0.95")]),
        trial("nan", "MetricsUnavailable", [Metric(name="accuracy", latest="nan")]),
    ]
    best = observation.optimal_trial(exp, trials)
    assert best is not None and best.best_trial_name == "steady"
    assert not observation.goal_reached(exp, best)
    trials.append(trial("good", "Succeeded", [Metric(name="accuracy", latest="0.85", max="0.9")]))
    best = observation.optimal_trial(exp, trials)
    assert best is not None and best.best_trial_name == "good"
    assert observation.goal_reached(exp, best)


def test_controller_marks_trials_by_strategy_value(tmp_path: Path) -> None:
    """Through the reconcile loop: latest strategy, a trial whose latest value is NaN."""
    exp = experiment(
        {
            "type": "minimize",
            "objectiveMetricName": "loss",
            "metricStrategies": [{"name": "loss", "value": "latest"}],
        }
    )
    runs = {
        "a": FakeRun(metrics=[("loss", "0.5"), ("loss", "0.3")]),
        "b": FakeRun(metrics=[("loss", "0.1"), ("loss", "nan")]),
        "c": FakeRun(metrics=[("loss", "0.9"), ("loss", "0.4")]),
    }
    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    storage.create_experiment(exp)

    class Points:
        def validate(self, experiment: Experiment) -> None:
            return None

        def get_suggestions(
            self, experiment: Experiment, trials: Any, count: int, *a: Any, **_: Any
        ) -> Any:
            from katib.controller.suggestion_client import SuggestionReply

            values = [{"x": x} for x in "abc"[len(trials) : len(trials) + count]]
            return SuggestionReply(values, [None] * len(values), [{}] * len(values))

    points = Points()
    controller = Controller(
        storage,
        FakeExecutor(lambda a: runs[a["x"]]),
        lambda name: points,  # type: ignore[arg-type,return-value]
        lambda e: LaunchContext(experiment=e, db_manager_address="unused"),
    )
    for _ in range(100):
        if controller.reconcile("exp").completed:
            break
    by_x = {t.spec.parameter_assignments[0].value: t for t in storage.list_trials("exp")}
    assert by_x["a"].condition == "Succeeded"
    # latest is NaN: min 0.1 exists, but the strategy is latest -> no finite value
    assert by_x["b"].condition == "MetricsUnavailable"
    message = by_x["b"].status.conditions[-1].message or ""
    assert "objective metric loss had no finite value" in message
    best = storage.get_experiment("exp").status
    assert best is not None and best.current_optimal_trial is not None
    assert best.current_optimal_trial.best_trial_name == by_x["a"].name  # 0.3 < 0.4
    storage.close()
