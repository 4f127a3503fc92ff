"""The Suggestion derived from an experiment and its trials (katib.sdk.suggestions)."""

from __future__ import annotations

from katib.api.models import (
    AlgorithmSetting,
    Condition,
    EarlyStoppingRule,
    ExperimentStatus,
    Trial,
)
from katib.controller.time_budget import WARM_START_LABEL
from katib.sdk.suggestions import suggestion_of
from katib.testing.storage import make_experiment, make_trial


def labelled(trial: Trial, **labels: str) -> Trial:
    trial.metadata.labels = {**(trial.metadata.labels or {}), **labels}
    return trial


def test_assignments_settings_and_conditions() -> None:
    experiment = make_experiment()  # labels {"team": "ml"}
    experiment.status = ExperimentStatus(
        start_time="2026-11-28T10:00:00Z",
        conditions=[
            Condition(type="Created", reason="ExperimentCreated"),
            Condition(type="Running", reason="ExperimentRunning"),
            Condition(type="Restarting", status="False"),
        ],
        algorithm_settings=[AlgorithmSetting(name="random_state", value="7")],
    )
    first = labelled(make_trial("t1", lr="0.02"), team="ml", **{"hyperband-rung": "0"})
    first.spec.early_stopping_rules = [
        EarlyStoppingRule(name="accuracy", value="0.5", comparison="less")
    ]
    earlier = labelled(make_trial("w1"), **{WARM_START_LABEL: "true"})
    second = make_trial("t2", lr="0.03")

    suggestion = suggestion_of(experiment, [earlier, first, second])

    assert suggestion.to_dict()["kind"] == "Suggestion"
    assert suggestion.metadata.name == "exp" and suggestion.metadata.namespace == "default"
    assert suggestion.spec.algorithm == experiment.spec.algorithm
    assert suggestion.spec.requests == suggestion.status.suggestion_count == 2
    handed_out = suggestion.status.suggestions or []
    assert [a.name for a in handed_out] == ["t1", "t2"]  # warm start is history, not handed out
    assert handed_out[0].parameter_assignments[0].value == "0.02"
    assert handed_out[0].labels == {"hyperband-rung": "0"}  # the algorithm's, not inherited
    assert handed_out[1].labels is None
    assert handed_out[0].early_stopping_rules == first.spec.early_stopping_rules
    assert suggestion.status.algorithm_settings == [
        AlgorithmSetting(name="random_state", value="7")
    ]
    assert [(c.type, c.reason) for c in suggestion.status.conditions] == [
        ("Created", "SuggestionCreated"),
        ("Running", "SuggestionRunning"),
    ]
    assert suggestion.status.start_time == "2026-11-28T10:00:00Z"


def test_a_new_experiment_has_an_empty_suggestion() -> None:
    suggestion = suggestion_of(make_experiment(), [])
    assert suggestion.spec.requests == 0 and suggestion.status.suggestions is None
    assert suggestion.status.conditions == []
    assert suggestion.to_dict()["status"]["suggestionCount"] == 0
