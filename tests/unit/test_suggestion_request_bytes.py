"""GetSuggestions requests built from cached trial bytes equal the messages built field by field."""

from __future__ import annotations

from typing import Any

import pytest

from katib.api.models import (
    Condition,
    Experiment,
    Metric,
    ObjectMeta,
    Observation,
    ParameterAssignment,
    Trial,
    TrialSpec,
    TrialStatus,
)
from katib.apis.v1beta1 import api_pb2
from katib.controller.conversion import (
    TrialBytesCache,
    experiment_to_pb,
    frame_trial,
    trial_to_pb,
    trials_for_request,
)
from katib.controller.suggestion_client import suggestions_request_bytes


def experiment(name: str = "exp", strategy: str = "latest") -> Experiment:
    doc: dict[str, Any] = {
        "metadata": {"name": name},
        "spec": {
            "objective": {
                "type": "maximize", "objectiveMetricName": "accuracy",
                "additionalMetricNames": ["loss"],
                "metricStrategies": [{"name": "loss", "value": strategy}],
            },
            "algorithm": {"algorithmName": "random",
                          "algorithmSettings": [{"name": "random_state", "value": "3"}]},
            "parameters": [{"name": "x", "parameterType": "double",
                            "feasibleSpace": {"min": "0", "max": "1"}}],
        },
    }
    return Experiment.model_validate(doc)


def trial(i: int, condition: str = "Succeeded", accuracy: str | None = "0.5",
          note: str = "") -> Trial:
    metrics = [] if accuracy is None else [
        Metric(name="accuracy", min="0.1", max=accuracy, latest=accuracy),
        Metric(name="loss", min="0.2", max="0.9", latest="0.3"),
    ]
    return Trial(
        metadata=ObjectMeta(name=f"t{i}", namespace="default"),
        # A long value makes some records longer than 127 bytes (two-byte length).
        spec=TrialSpec(parameter_assignments=[
            ParameterAssignment(name="x", value=f"0.{i}"),
            ParameterAssignment(name="note", value=note),
        ]),
        status=TrialStatus(start_time="2026-01-01T00:00:00Z",
                           conditions=[Condition(type=condition)],
                           observation=Observation(metrics=metrics)),
    )


def old_request(exp: Experiment, trials: list[Trial], current: int, total: int
                ) -> api_pb2.GetSuggestionsRequest:
    return api_pb2.GetSuggestionsRequest(
        experiment=experiment_to_pb(exp), trials=trials_for_request(exp, trials),
        current_request_number=current, total_request_number=total,
    )


HISTORIES = {
    "empty": [],
    "one": [trial(0)],
    "mixed": [trial(0), trial(1, "Running", None), trial(2, "Failed", None),
              trial(3, note="n" * 300), trial(4, "EarlyStopped", "0.7")],
    "many": [trial(i, note="x" * (i % 200)) for i in range(300)],
}


@pytest.mark.parametrize("history", sorted(HISTORIES))
@pytest.mark.parametrize(("current", "total"), [(1, 2), (0, 0), (3, 300), (200, 70000), (-1, 5)])
def test_wire_bytes_parse_to_the_old_message(history: str, current: int, total: int) -> None:
    exp, trials = experiment(), HISTORIES[history]
    expected = old_request(exp, trials, current, total)
    raw = [frame_trial(trial_to_pb(exp, t).SerializeToString()) for t in trials]
    for exp_part in (experiment_to_pb(exp), experiment_to_pb(exp).SerializeToString()):
        wire = suggestions_request_bytes(exp_part, raw, current, total)
        assert api_pb2.GetSuggestionsRequest.FromString(wire) == expected
        assert wire == expected.SerializeToString()


def test_cache_reserializes_only_what_changed() -> None:
    cache = TrialBytesCache()
    exp = experiment()
    trials = HISTORIES["mixed"]
    first = cache.serialize(exp, trials)
    assert first == [frame_trial(trial_to_pb(exp, t).SerializeToString()) for t in trials]
    # Equal trials rebuilt from storage (new objects) give the very same bytes objects.
    again = cache.serialize(exp, [t.model_copy(deep=True) for t in trials])
    assert all(a is b for a, b in zip(again, first, strict=True))
    changed = [
        trial(0, accuracy="0.6"),  # new metric value
        trial(1, "Succeeded", "0.8"),  # a running trial finished
        trial(2, "Failed", None, note="edited"),  # edited assignment
        trials[3],
    ]
    got = cache.serialize(exp, changed)
    assert got == [frame_trial(trial_to_pb(exp, t).SerializeToString()) for t in changed]
    assert got[3] is first[3]


def test_cache_follows_the_objective() -> None:
    """Metric strategies decide which value is sent: another strategy, other bytes."""
    cache = TrialBytesCache()
    trials = HISTORIES["mixed"]
    cache.serialize(experiment(strategy="latest"), trials)
    other = experiment(strategy="max")
    assert cache.serialize(other, trials) == [
        frame_trial(trial_to_pb(other, t).SerializeToString()) for t in trials
    ]


def test_cache_is_bounded() -> None:
    cache = TrialBytesCache(max_experiments=3)
    for i in range(7):
        cache.serialize(experiment(f"exp-{i}"), HISTORIES["one"])
    assert len(cache) == 3
