"""TuneResult, its plots and parameter importance, the time budget, on stored-trial models."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from katib.api.models import (
    Condition,
    Experiment,
    ExperimentSpec,
    ExperimentStatus,
    FeasibleSpace,
    Metric,
    ObjectiveSpec,
    ObjectMeta,
    Observation,
    OptimalTrial,
    ParameterAssignment,
    ParameterSpec,
    Trial,
    TrialSpec,
    TrialStatus,
)
from katib.controller import time_budget
from katib.errors import InvalidArgumentError
from katib.sdk import plots
from katib.sdk.importance import param_importances
from katib.sdk.result import TuneResult
from katib.sdk.trial_rows import rows_from_trials, typed_value

OBJECTIVE = ObjectiveSpec(type="maximize", objective_metric_name="acc")
PARAMETERS = [
    ParameterSpec(
        name="lr", parameter_type="double", feasible_space=FeasibleSpace(min="0", max="1")
    ),
    ParameterSpec(
        name="layers", parameter_type="int", feasible_space=FeasibleSpace(min="1", max="5")
    ),
    ParameterSpec(
        name="opt", parameter_type="categorical", feasible_space=FeasibleSpace(list=["a", "<b>"])
    ),
]


def _trial(
    name: str, params: dict[str, str], value: float | None, condition: str = "Succeeded",
    labels: dict[str, str] | None = None, message: str = "",
) -> Trial:
    metrics = [] if value is None else [
        Metric(name="acc", min=str(value), max=str(value), latest=str(value))
    ]
    return Trial(
        metadata=ObjectMeta(name=name, namespace="default", labels=labels),
        spec=TrialSpec(
            parameter_assignments=[ParameterAssignment(name=k, value=v) for k, v in params.items()]
        ),
        status=TrialStatus(
            conditions=[Condition(type=condition, message=message)],
            observation=Observation(metrics=metrics),
        ),
    )


def _trials(count: int = 30, seed: int = 0) -> list[Trial]:
    rng = random.Random(seed)
    trials = []
    for i in range(count):
        lr, layers, opt = rng.random(), rng.randint(1, 5), rng.choice(["a", "<b>"])
        value = 3 * lr + 0.01 * layers
        trials.append(
            _trial(f"t-{i}", {"lr": repr(lr), "layers": str(layers), "opt": opt}, value)
        )
    return trials


def _result(trials: list[Trial], best: str | None = None) -> TuneResult:
    experiment = Experiment(
        metadata=ObjectMeta(name="exp<1>", namespace="default"),
        spec=ExperimentSpec(objective=OBJECTIVE, parameters=PARAMETERS),
        status=ExperimentStatus(
            conditions=[Condition(type="Succeeded", reason="ExperimentMaxTrialsReached")],
            current_optimal_trial=OptimalTrial(best_trial_name=best) if best else None,
        ),
    )
    return TuneResult(experiment, trials)


def test_rows_are_typed_by_the_search_space() -> None:
    row = rows_from_trials(_trials(1), OBJECTIVE, PARAMETERS)[0]
    assert isinstance(row.params["lr"], float)
    assert isinstance(row.params["layers"], int)
    assert isinstance(row.params["opt"], str)
    assert typed_value("3", None) == 3 and typed_value("3.0", None) == 3.0
    assert typed_value("x", None) == "x"


def test_best_follows_the_controller_and_warm_start_is_left_out() -> None:
    trials = _trials(5)
    trials.append(
        _trial("warm", {"lr": "0.9", "layers": "1", "opt": "a"}, 99.0,
               labels={time_budget.WARM_START_LABEL: "true"})
    )
    trials.append(_trial("broken", {"lr": "0.5", "layers": "1", "opt": "a"}, None, "Failed",
                         message="ValueError: boom"))
    result = _result(trials, best="t-2")
    assert len(result.trials) == 6  # the warm-start trial is history, not a result
    assert result.best_trial is not None and result.best_trial.name == "t-2"
    assert result.best_params == result.trials[2].params
    best_of_all = _result(trials).best_value  # no optimal recorded: computed
    assert best_of_all == max(r.value for r in result.trials if r.value is not None)
    frame = result.trials_dataframe()
    assert list(frame["name"]) == [r.name for r in result.trials]
    assert {"params_lr", "params_layers", "params_opt", "value", "acc"} <= set(frame.columns)
    assert frame.loc[frame["name"] == "broken", "message"].item() == "ValueError: boom"


def test_html_repr_escapes_names_and_values() -> None:
    trials = _trials(3)
    trials.append(_trial("bad<script>", {"lr": "0.5", "layers": "1", "opt": "<b>"}, None,
                         "Failed", message="<img src=x>"))
    text = _result(trials, best="t-0")._repr_html_()
    assert "exp&lt;1&gt;" in text and "exp<1>" not in text
    assert "&lt;b&gt;" in text and "<b>" in text  # our bold tag, their value escaped
    assert "<script>" not in text and "<img" not in text
    assert "bad&lt;script&gt;" in text


def test_figures() -> None:
    trials = _trials(20)
    history = plots.history_figure(trials, OBJECTIVE, PARAMETERS)
    values = list(history.data[0].y)
    best = list(history.data[1].y)
    assert len(values) == 20 and best[-1] == max(values)
    assert all(b >= v for b, v in zip(best, values, strict=True))
    coords = plots.parallel_coordinates_figure(trials, OBJECTIVE, PARAMETERS)
    labels = [d.label for d in coords.data[0].dimensions]
    assert labels == ["layers", "lr", "opt", "acc"]
    opt = coords.data[0].dimensions[2]
    assert list(opt.ticktext) == ["<b>", "a"]
    bars = plots.importance_figure(trials, OBJECTIVE, PARAMETERS)
    assert list(bars.data[0].y)[-1] == "lr"  # most important on top


def test_importance_ranks_the_parameter_that_drives_the_value() -> None:
    scores = param_importances(_trials(40), "maximize", "acc", PARAMETERS)
    assert next(iter(scores)) == "lr" and scores["lr"] > 0.8
    assert sum(scores.values()) == pytest.approx(1.0)
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        param_importances(_trials(1), "maximize", "acc", PARAMETERS)


def test_time_budget_annotations() -> None:
    experiment = Experiment(
        metadata=ObjectMeta(
            name="e",
            annotations={
                time_budget.TIMEOUT_ANNOTATION: "10",
                time_budget.ON_TIMEOUT_ANNOTATION: "kill",
            },
        ),
        spec=ExperimentSpec(),
    )
    assert time_budget.time_budget(experiment) == (10.0, "kill")
    started = (datetime.now(UTC) - timedelta(seconds=11)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert time_budget.out_of_time(experiment, ExperimentStatus(start_time=started))
    recent = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert not time_budget.out_of_time(experiment, ExperimentStatus(start_time=recent))
    plain = Experiment(metadata=ObjectMeta(name="p"), spec=ExperimentSpec())
    assert time_budget.time_budget(plain) is None
    assert not time_budget.out_of_time(plain, ExperimentStatus(start_time=started))
    assert "stopped" in time_budget.timeout_message(experiment, True)
