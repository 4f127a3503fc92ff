"""The storage queries behind the server's experiment list, on every backend."""

from __future__ import annotations

from katib.api.models import Condition, Experiment, ExperimentStatus, Trial
from katib.storage.sql import SQLStorage


def _experiment(name: str, namespace: str, latest: str | None = None) -> Experiment:
    exp = Experiment.model_validate(
        {"metadata": {"name": name, "namespace": namespace}, "spec": {"maxTrialCount": 9}}
    )
    if latest is not None:
        exp.status = ExperimentStatus(
            conditions=[Condition(type="Created"), Condition(type=latest)], trials_succeeded=2
        )
    return exp


def _trial(name: str, namespace: str, condition: str | None) -> Trial:
    trial = Trial.model_validate({"metadata": {"name": name, "namespace": namespace}})
    if condition is not None:
        trial.status.conditions = [Condition(type="Created"), Condition(type=condition)]
    return trial


def test_counts_by_condition_and_documents(storage: SQLStorage) -> None:
    storage.create_experiment(_experiment("a", "ns1", "Running"))
    storage.create_experiment(_experiment("b", "ns1", "Succeeded"))
    storage.create_experiment(_experiment("c", "ns2"))
    storage.create_experiment(_experiment("empty", "ns2"))
    storage.create_trials(
        "a",
        "ns1",
        [
            _trial("a-1", "ns1", "Succeeded"),
            _trial("a-2", "ns1", "Succeeded"),
            _trial("a-3", "ns1", "Running"),
            _trial("a-4", "ns1", None),
        ],
    )
    storage.create_trials(
        "b", "ns1", [_trial("b-1", "ns1", "Succeeded"), _trial("b-2", "ns1", "Failed")]
    )
    storage.create_trials("c", "ns2", [_trial("c-1", "ns2", "Killed")])

    assert storage.count_trials_by_condition() == {
        ("ns1", "a"): {"Succeeded": 2, "Running": 1, "Created": 1},
        ("ns1", "b"): {"Succeeded": 1, "Failed": 1},
        ("ns2", "c"): {"Killed": 1},
    }
    assert storage.count_trials_by_condition("ns2") == {("ns2", "c"): {"Killed": 1}}
    unfinished = storage.count_trials_by_condition(unfinished_only=True)
    assert set(unfinished) == {("ns1", "a"), ("ns2", "c")}
    assert storage.count_trials_by_condition("ns1", unfinished_only=True) == {
        ("ns1", "a"): {"Succeeded": 2, "Running": 1, "Created": 1}
    }

    docs = storage.list_experiment_documents()
    assert [d["metadata"]["name"] for d in docs] == ["a", "b", "c", "empty"]
    assert docs == [e.to_dict() for e in storage.list_experiments()]
    assert [d["metadata"]["name"] for d in storage.list_experiment_documents("ns2")] == [
        "c",
        "empty",
    ]
    assert docs[1]["status"]["trialsSucceeded"] == 2
