"""The contract test suite every BaseStorage implementation must pass.

Use it by subclassing in a test module and providing a `storage` fixture that
yields a fresh, empty storage per test::

    from katib.testing.storage import StorageContract

    class TestMyStorage(StorageContract):
        pass  # the `storage` fixture comes from conftest.py

The tests are written against the contract in katib.storage.base only.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from katib.api.models import Condition, Experiment, ExperimentStatus, Trial
from katib.errors import AlreadyExistsError, ConflictError, NotFoundError
from katib.storage.base import BaseStorage, MetricLogEntry, WriteBatch

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 3, 4, 17, 55, 8, 123456, tzinfo=UTC)


def make_experiment(name: str = "exp", namespace: str = "default", **spec: Any) -> Experiment:
    """A small valid-looking Experiment; keyword args override camelCase spec fields."""
    doc: dict[str, Any] = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": "ml"}},
        "spec": {
            "objective": {"type": "maximize", "goal": 0.99, "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 2,
            "maxTrialCount": 6,
            "parameters": [
                {"name": "lr", "parameterType": "double",
                 "feasibleSpace": {"min": "0.01", "max": "0.05"}},
            ],
            **spec,
        },
    }
    return Experiment.model_validate(doc)


def make_trial(name: str, namespace: str = "default", lr: str = "0.01") -> Trial:
    """A Trial with one assignment and a label pointing at its experiment."""
    return Trial.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"katib.kubeflow.org/experiment": "exp"}},
            "spec": {
                "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
                "parameterAssignments": [{"name": "lr", "value": lr}],
            },
        }
    )


def entry(metric: str, value: str, at: datetime, step: int | None = None) -> MetricLogEntry:
    """Shorthand for a MetricLogEntry."""
    return MetricLogEntry(metric_name=metric, value=value, timestamp=at, step=step)


class StorageContract:
    """Tests any BaseStorage must pass; needs a `storage` fixture yielding an empty storage."""

    # --- experiments -------------------------------------------------------------

    def test_create_and_get_experiment_round_trips(self, storage: BaseStorage) -> None:
        exp = make_experiment()
        storage.create_experiment(exp)
        got = storage.get_experiment("exp", "default")
        assert got.to_dict() == exp.to_dict()
        assert got.name == "exp" and got.namespace == "default"

    def test_create_duplicate_experiment_raises(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        with pytest.raises(AlreadyExistsError, match="exp"):
            storage.create_experiment(make_experiment(maxTrialCount=9))
        assert storage.get_experiment("exp").spec.max_trial_count == 6

    def test_same_name_in_other_namespace_is_separate(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment(namespace="a", maxTrialCount=1))
        storage.create_experiment(make_experiment(namespace="b", maxTrialCount=2))
        assert storage.get_experiment("exp", "a").spec.max_trial_count == 1
        assert storage.get_experiment("exp", "b").spec.max_trial_count == 2

    def test_missing_experiment_raises_not_found(self, storage: BaseStorage) -> None:
        with pytest.raises(NotFoundError, match="nope"):
            storage.get_experiment("nope")
        with pytest.raises(NotFoundError):
            storage.update_experiment_spec(make_experiment("nope"))
        with pytest.raises(NotFoundError):
            storage.update_experiment_status("nope", "default", ExperimentStatus())
        with pytest.raises(NotFoundError):
            storage.delete_experiment("nope")
        with pytest.raises(NotFoundError):
            storage.list_trials("nope")
        with pytest.raises(NotFoundError):
            storage.get_ownership("nope", "default")

    def test_list_experiments_filters_namespace_oldest_first(self, storage: BaseStorage) -> None:
        for name, ns in [("b", "x"), ("a", "x"), ("c", "y")]:
            storage.create_experiment(make_experiment(name, ns))
        assert [e.name for e in storage.list_experiments("x")] == ["b", "a"]
        assert [e.name for e in storage.list_experiments("y")] == ["c"]
        assert [e.name for e in storage.list_experiments("z")] == []
        assert [(e.name, e.namespace) for e in storage.list_experiments()] == [
            ("b", "x"), ("a", "x"), ("c", "y")
        ]

    def test_update_spec_keeps_status(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        running = Condition(type="Running", reason="ExperimentRunning")
        status = ExperimentStatus(conditions=[running])
        storage.update_experiment_status("exp", "default", status)
        storage.update_experiment_spec(make_experiment(maxTrialCount=12))
        got = storage.get_experiment("exp")
        assert got.spec.max_trial_count == 12
        assert got.status is not None and got.status.conditions[-1].type == "Running"

    def test_status_round_trip(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        status = ExperimentStatus.model_validate(
            {
                "startTime": "2024-03-04T17:55:08Z",
                "conditions": [
                    {"type": "Created", "status": "True", "reason": "ExperimentCreated"},
                    {"type": "Running", "status": "True", "message": "naïve ✓"},
                ],
                "currentOptimalTrial": {
                    "bestTrialName": "exp-abc",
                    "parameterAssignments": [{"name": "lr", "value": "0.02"}],
                    "observation": {"metrics": [{"name": "accuracy", "min": "0.5",
                                                 "max": "0.9", "latest": "0.9"}]},
                },
                "runningTrialList": ["exp-abc"],
                "trials": 1,
                "trialsRunning": 1,
            }
        )
        storage.update_experiment_status("exp", "default", status)
        got = storage.get_experiment("exp").status
        assert got is not None and got.to_dict() == status.to_dict()

    def test_returned_models_are_copies(self, storage: BaseStorage) -> None:
        exp = make_experiment()
        storage.create_experiment(exp)
        exp.spec.max_trial_count = 100
        got = storage.get_experiment("exp")
        got.spec.max_trial_count = 200
        assert storage.get_experiment("exp").spec.max_trial_count == 6

    def test_delete_cascades_trials_and_logs(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment("exp"))
        storage.create_experiment(make_experiment("other"))
        storage.create_trials("exp", "default", [make_trial("t1"), make_trial("t2")])
        storage.create_trials("other", "default", [make_trial("o1")])
        for t in ("t1", "t2", "o1"):
            storage.report_observation_log(t, [entry("accuracy", "0.5", T0)])
        storage.delete_experiment("exp")
        with pytest.raises(NotFoundError):
            storage.get_experiment("exp")
        with pytest.raises(NotFoundError):
            storage.get_trial("t1")
        assert storage.get_observation_log("t1") == []
        assert storage.get_observation_log("t2") == []
        assert len(storage.get_observation_log("o1")) == 1
        assert [t.name for t in storage.list_trials("other")] == ["o1"]
        # The names are free again.
        storage.create_experiment(make_experiment("exp"))
        storage.create_trials("exp", "default", [make_trial("t1")])

    # --- trials ----------------------------------------------------------------------

    def test_create_and_get_trial(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        trial = make_trial("exp-abc", lr="0.03")
        storage.create_trials("exp", "default", [trial])
        got = storage.get_trial("exp-abc", "default")
        assert got.to_dict() == trial.to_dict()
        assert got.assignments == {"lr": "0.03"}
        with pytest.raises(NotFoundError, match="missing"):
            storage.get_trial("missing")

    def test_create_trials_is_atomic_on_duplicate(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        storage.create_trials("exp", "default", [make_trial("t1")])
        with pytest.raises(AlreadyExistsError, match="t1"):
            storage.create_trials("exp", "default", [make_trial("t2"), make_trial("t1")])
        with pytest.raises(AlreadyExistsError, match="t3"):
            storage.create_trials("exp", "default", [make_trial("t3"), make_trial("t3")])
        assert [t.name for t in storage.list_trials("exp")] == ["t1"]
        with pytest.raises(NotFoundError):
            storage.get_trial("t2")

    def test_trial_names_are_global(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment(namespace="a"))
        storage.create_experiment(make_experiment(namespace="b"))
        storage.create_trials("exp", "a", [make_trial("t1", "a")])
        with pytest.raises(AlreadyExistsError, match="t1"):
            storage.create_trials("exp", "b", [make_trial("t1", "b")])

    def test_create_trials_needs_experiment(self, storage: BaseStorage) -> None:
        with pytest.raises(NotFoundError):
            storage.create_trials("nope", "default", [make_trial("t1")])

    def test_list_trials_in_creation_order(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        storage.create_experiment(make_experiment("other"))
        storage.create_trials("exp", "default", [make_trial("z"), make_trial("a")])
        storage.create_trials("other", "default", [make_trial("o")])
        storage.create_trials("exp", "default", [make_trial("m")])
        assert [t.name for t in storage.list_trials("exp")] == ["z", "a", "m"]
        assert [t.name for t in storage.list_trials("other")] == ["o"]

    def test_update_trial_status(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        storage.create_trials("exp", "default", [make_trial("t1")])
        trial = storage.get_trial("t1")
        trial.status = trial.status.model_validate(
            {
                "startTime": "2024-03-04T17:55:08Z",
                "completionTime": "2024-03-04T17:56:08Z",
                "conditions": [{"type": "Created"}, {"type": "Running"},
                               {"type": "Succeeded", "reason": "TrialSucceeded"}],
                "observation": {"metrics": [{"name": "accuracy", "min": "0.1",
                                             "max": "0.9", "latest": "0.8"}]},
            }
        )
        storage.update_trial_status(trial)
        got = storage.get_trial("t1")
        assert got.status.to_dict() == trial.status.to_dict()
        assert got.is_completed
        assert got.spec.to_dict() == make_trial("t1").spec.to_dict()
        with pytest.raises(NotFoundError):
            storage.update_trial_status(make_trial("ghost"))

    def test_listed_trials_follow_every_stored_change(self, storage: BaseStorage) -> None:
        """Listing twice gives equal trials; a completed trial changed later is seen changed
        (a storage may keep completed trials parsed between calls)."""
        storage.create_experiment(make_experiment())
        storage.create_trials("exp", "default", [make_trial("t1"), make_trial("t2")])
        done = storage.get_trial("t1")
        done.status = done.status.model_validate(
            {"conditions": [{"type": "Succeeded", "status": "True"}],
             "observation": {"metrics": [{"name": "accuracy", "latest": "0.5"}]}}
        )
        storage.update_trial_status(done)
        first = storage.list_trials("exp")
        second = storage.list_trials("exp")
        assert [t.to_dict() for t in first] == [t.to_dict() for t in second]
        assert first[0].is_completed and not first[1].is_completed
        assert first[0].status.observation is not None
        assert first[0].status.observation.metrics[0].latest == "0.5"
        edited = storage.get_trial("t1")
        assert edited.status.observation is not None
        edited.status.observation.metrics[0].latest = "0.7"
        storage.update_trial_status(edited)
        third = storage.list_trials("exp")
        assert third[0].status.observation is not None
        assert third[0].status.observation.metrics[0].latest == "0.7"
        storage.delete_experiment("exp")
        storage.create_experiment(make_experiment())
        storage.create_trials("exp", "default", [make_trial("t1")])
        assert not storage.list_trials("exp")[0].is_completed

    def test_concurrent_create_trials(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        errors: list[BaseException] = []

        def worker(prefix: str) -> None:
            try:
                for i in range(5):
                    batch = [make_trial(f"{prefix}-{i}-{s}") for s in "ab"]
                    storage.create_trials("exp", "default", batch)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(p,)) for p in ("x", "y")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        names = [t.name for t in storage.list_trials("exp")]
        assert len(names) == 20 and len(set(names)) == 20
        for p in ("x", "y"):  # each thread's trials keep their own order
            own = [n for n in names if n.startswith(p)]
            assert own == [f"{p}-{i}-{s}" for i in range(5) for s in "ab"]

    # --- ownership -----------------------------------------------------------------------

    def test_acquire_and_release(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        assert storage.get_ownership("exp", "default").owner is None
        before = datetime.now(UTC) - timedelta(seconds=5)
        assert storage.acquire_experiment("exp", "default", "ctrl-a")
        own = storage.get_ownership("exp", "default")
        assert own.owner == "ctrl-a"
        assert own.heartbeat is not None and own.heartbeat.tzinfo is not None
        assert before <= own.heartbeat <= datetime.now(UTC) + timedelta(seconds=5)
        assert storage.acquire_experiment("exp", "default", "ctrl-a")  # ours: refresh
        assert not storage.acquire_experiment("exp", "default", "ctrl-b")
        storage.release_experiment("exp", "default", "ctrl-b")  # not b's: no effect
        assert storage.get_ownership("exp", "default").owner == "ctrl-a"
        storage.release_experiment("exp", "default", "ctrl-a")
        assert storage.get_ownership("exp", "default").owner is None
        assert storage.acquire_experiment("exp", "default", "ctrl-b")

    def test_acquire_steals_from_dead_owner(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        assert storage.acquire_experiment("exp", "default", "ctrl-a")
        assert not storage.acquire_experiment("exp", "default", "ctrl-b", steal_from=["ctrl-c"])
        assert storage.acquire_experiment("exp", "default", "ctrl-b", steal_from=["ctrl-a"])
        assert storage.get_ownership("exp", "default").owner == "ctrl-b"

    def test_acquire_takes_stale_ownership(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        assert storage.acquire_experiment("exp", "default", "ctrl-a")
        assert not storage.acquire_experiment(
            "exp", "default", "ctrl-b", stale_after_seconds=3600
        )
        time.sleep(0.05)
        assert storage.acquire_experiment("exp", "default", "ctrl-b", stale_after_seconds=0.01)
        assert storage.get_ownership("exp", "default").owner == "ctrl-b"

    def test_acquire_missing_experiment(self, storage: BaseStorage) -> None:
        with pytest.raises(NotFoundError):
            storage.acquire_experiment("nope", "default", "ctrl-a")

    def test_concurrent_acquire_has_one_winner(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        barrier = threading.Barrier(6)
        won: list[str] = []
        failures: list[BaseException] = []

        def worker(owner: str) -> None:
            try:
                barrier.wait(timeout=30)
                if storage.acquire_experiment("exp", "default", owner):
                    won.append(owner)
            except BaseException as exc:  # surfaced below
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(f"ctrl-{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not failures, failures
        assert len(won) == 1, won
        assert storage.get_ownership("exp", "default").owner == won[0]

    def test_renew_leases(self, storage: BaseStorage) -> None:
        for name in ("e1", "e2", "e3"):
            storage.create_experiment(make_experiment(name))
        assert storage.acquire_experiment("e1", "default", "ctrl-a")
        assert storage.acquire_experiment("e3", "default", "ctrl-a")
        assert storage.acquire_experiment("e2", "default", "ctrl-b")
        before = storage.get_ownership("e1", "default").heartbeat
        time.sleep(0.02)
        assert storage.renew_leases("ctrl-a") == [("default", "e1"), ("default", "e3")]
        after = storage.get_ownership("e1", "default").heartbeat
        assert before is not None and after is not None and after > before
        # a lease taken over (here: stale) is no longer renewed by its old holder
        assert storage.acquire_experiment("e3", "default", "ctrl-b", stale_after_seconds=0)
        assert storage.renew_leases("ctrl-a") == [("default", "e1")]
        storage.delete_experiment("e1")
        assert storage.renew_leases("ctrl-a") == []
        assert storage.renew_leases("nobody") == []

    def test_list_unfinished_experiments(self, storage: BaseStorage) -> None:
        def with_condition(name: str, *types: str) -> Experiment:
            exp = make_experiment(name)
            exp.status = ExperimentStatus(
                conditions=[Condition(type=t, status="True", reason="R") for t in types]
            )
            return exp

        storage.create_experiment(make_experiment("new"))
        storage.create_experiment(with_condition("running", "Created", "Running"))
        storage.create_experiment(with_condition("done", "Created", "Running", "Succeeded"))
        storage.create_experiment(with_condition("failed", "Created", "Failed"))
        storage.create_experiment(
            with_condition("restarting", "Created", "Running", "Restarting")
        )
        assert storage.acquire_experiment("running", "default", "ctrl-a")
        leases = storage.list_unfinished_experiments()
        assert [(x.namespace, x.name) for x in leases] == [
            ("default", "new"), ("default", "running"), ("default", "restarting")
        ]
        by_name = {x.name: x for x in leases}
        assert by_name["new"].owner is None and by_name["new"].age_seconds is None
        held = by_name["running"]
        assert held.owner == "ctrl-a" and held.heartbeat is not None
        assert held.age_seconds is not None and -1.0 <= held.age_seconds < 30.0
        # completing an experiment takes it off the list
        storage.update_experiment_status(
            "new", "default", ExperimentStatus(
                conditions=[Condition(type="Succeeded", status="True", reason="R")]
            )
        )
        assert "new" not in {x.name for x in storage.list_unfinished_experiments()}

    def test_create_trials_fenced_by_owner(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        with pytest.raises(ConflictError):  # nobody owns it
            storage.create_trials("exp", "default", [make_trial("t1")], owner="ctrl-a")
        assert storage.acquire_experiment("exp", "default", "ctrl-a")
        with pytest.raises(ConflictError):
            storage.create_trials("exp", "default", [make_trial("t1")], owner="ctrl-b")
        assert storage.list_trials("exp") == []
        storage.create_trials("exp", "default", [make_trial("t1")], owner="ctrl-a")
        assert [t.name for t in storage.list_trials("exp")] == ["t1"]
        with pytest.raises(NotFoundError):
            storage.create_trials("nope", "default", [make_trial("t2")], owner="ctrl-a")

    def test_create_trials_expected_count(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        with pytest.raises(ConflictError):
            storage.create_trials("exp", "default", [make_trial("t1")], expected_count=1)
        storage.create_trials("exp", "default", [make_trial("t1")], expected_count=0)
        with pytest.raises(ConflictError):
            storage.create_trials("exp", "default", [make_trial("t2")], expected_count=0)
        storage.create_trials(
            "exp", "default", [make_trial("t2"), make_trial("t3")], expected_count=1
        )
        assert [t.name for t in storage.list_trials("exp")] == ["t1", "t2", "t3"]

    def test_concurrent_counted_create_trials_never_overshoot(
        self, storage: BaseStorage
    ) -> None:
        """Two writers fill one budget of 12, each planning on the count it last read."""
        storage.create_experiment(make_experiment())
        budget = 12
        conflicts: list[str] = []
        failures: list[BaseException] = []

        def worker(prefix: str) -> None:
            try:
                i = 0
                while True:
                    seen = len(storage.list_trials("exp"))
                    if seen >= budget:
                        return
                    batch = [make_trial(f"{prefix}-{i}-{s}") for s in "ab"][: budget - seen]
                    i += 1
                    try:
                        storage.create_trials("exp", "default", batch, expected_count=seen)
                    except ConflictError:
                        conflicts.append(prefix)
            except BaseException as exc:  # surfaced below
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(p,)) for p in ("x", "y")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not failures, failures
        names = [t.name for t in storage.list_trials("exp")]
        assert len(names) == budget and len(set(names)) == budget

    def test_update_experiment_status_fenced(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        done = ExperimentStatus(conditions=[Condition(type="Running", status="True", reason="R")])
        with pytest.raises(ConflictError):
            storage.update_experiment_status("exp", "default", done, owner="ctrl-a")
        assert storage.get_experiment("exp").status is None
        assert storage.acquire_experiment("exp", "default", "ctrl-a")
        storage.update_experiment_status("exp", "default", done, owner="ctrl-a")
        got = storage.get_experiment("exp").status
        assert got is not None and got.conditions[-1].type == "Running"

    # --- revisions and write batches ---------------------------------------------------

    def test_every_write_bumps_the_revision_by_one(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        r0 = storage.experiment_revision("exp")
        assert storage.create_trials("exp", "default", [make_trial("t1")]) == r0 + 1
        trial = storage.get_trial("t1")
        trial.status.conditions.append(Condition(type="Running", status="True", reason="R"))
        assert storage.update_trial_status(trial) == r0 + 2
        status = ExperimentStatus(conditions=[Condition(type="Running", status="True")])
        assert storage.update_experiment_status("exp", "default", status) == r0 + 3
        exp = storage.get_experiment("exp")
        exp.spec.max_trial_count = 9
        assert storage.update_experiment_spec(exp) == r0 + 4
        assert storage.experiment_revision("exp") == r0 + 4

    def test_reads_leases_and_logs_leave_the_revision(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        storage.create_trials("exp", "default", [make_trial("t1")])
        before = storage.experiment_revision("exp")
        storage.get_experiment("exp")
        storage.list_trials("exp")
        assert storage.acquire_experiment("exp", "default", "ctrl-a")
        storage.renew_leases("ctrl-a")
        storage.report_observation_log("t1", [entry("accuracy", "0.5", T0)])
        storage.release_experiment("exp", "default", "ctrl-a")
        assert storage.experiment_revision("exp") == before
        with pytest.raises(NotFoundError):
            storage.experiment_revision("nope")

    def test_revisions_are_per_experiment(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment("a"))
        storage.create_experiment(make_experiment("b"))
        before = storage.experiment_revision("b")
        storage.create_trials("a", "default", [make_trial("t1")])
        assert storage.experiment_revision("b") == before

    def test_write_batch_stores_everything_in_one_revision(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        storage.create_trials("exp", "default", [make_trial("t1")])
        storage.report_observation_log("t1", [entry("accuracy", "0.1", T0)])
        before = storage.experiment_revision("exp")
        t1 = storage.get_trial("t1")
        t1.status.conditions.append(Condition(type="Succeeded", status="True", reason="R"))
        status = ExperimentStatus(conditions=[Condition(type="Running", status="True")])
        batch = WriteBatch(
            observations={"t1": [entry("accuracy", "0.2", T0 + timedelta(seconds=1))]},
            trial_updates=[t1],
            new_trials=[make_trial("t2")],
            status=status,
        )
        assert batch
        assert not WriteBatch()
        assert storage.write_batch("exp", "default", batch) == before + 1
        assert [t.name for t in storage.list_trials("exp")] == ["t1", "t2"]
        assert storage.get_trial("t1").condition == "Succeeded"
        log = storage.get_observation_log("t1")
        assert [(e.value, e.step) for e in log] == [("0.1", 1), ("0.2", 2)]
        got = storage.get_experiment("exp").status
        assert got is not None and got.conditions[-1].type == "Running"

    def test_write_batch_is_all_or_nothing(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        storage.create_experiment(make_experiment("other"))
        storage.create_trials("exp", "default", [make_trial("t1")])
        storage.create_trials("other", "default", [make_trial("o1")])
        before = storage.experiment_revision("exp")
        t1 = storage.get_trial("t1")
        t1.status.conditions.append(Condition(type="Succeeded", status="True", reason="R"))
        stranger = storage.get_trial("o1")  # another experiment's trial
        bad = [
            (WriteBatch(trial_updates=[t1, stranger]), NotFoundError),
            (WriteBatch(trial_updates=[t1], new_trials=[make_trial("o1")]), AlreadyExistsError),
        ]
        for batch, error in bad:
            batch.observations = {"t1": [entry("accuracy", "0.9", T0)]}
            with pytest.raises(error):
                storage.write_batch("exp", "default", batch)
        with pytest.raises(ConflictError):
            storage.write_batch(
                "exp", "default", WriteBatch(trial_updates=[t1], new_trials=[make_trial("t2")]),
                expected_count=0,
            )
        assert storage.experiment_revision("exp") == before
        assert storage.get_trial("t1").condition == "Created"
        assert storage.get_observation_log("t1") == []
        assert [t.name for t in storage.list_trials("exp")] == ["t1"]

    def test_write_batch_fenced_by_owner(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment())
        storage.create_trials("exp", "default", [make_trial("t1")])
        t1 = storage.get_trial("t1")
        t1.status.conditions.append(Condition(type="Running", status="True", reason="R"))
        with pytest.raises(ConflictError):
            storage.write_batch("exp", "default", WriteBatch(trial_updates=[t1]), owner="a")
        assert storage.get_trial("t1").condition == "Created"
        assert storage.acquire_experiment("exp", "default", "a")
        storage.write_batch("exp", "default", WriteBatch(trial_updates=[t1]), owner="a")
        assert storage.get_trial("t1").condition == "Running"

    # --- observation logs ------------------------------------------------------------------

    def test_observation_log_order_by_time_then_insertion(self, storage: BaseStorage) -> None:
        t1, t2 = T0, T0 + timedelta(seconds=1)
        storage.report_observation_log(
            "t", [entry("acc", "late", t2), entry("acc", "first", t1), entry("loss", "second", t1)]
        )
        storage.report_observation_log("t", [entry("acc", "third", t1)])
        storage.report_observation_log("other", [entry("acc", "x", t1)])
        got = storage.get_observation_log("t")
        assert [e.value for e in got] == ["first", "second", "third", "late"]
        assert all(e.timestamp.tzinfo is not None for e in got)
        assert got[0].timestamp == t1 and got[-1].timestamp == t2

    def test_observation_log_filters(self, storage: BaseStorage) -> None:
        times = [T0 + timedelta(seconds=i) for i in range(5)]
        storage.report_observation_log(
            "t", [entry("acc", str(i), at) for i, at in enumerate(times)]
            + [entry("loss", "9", times[2])]
        )
        assert [e.value for e in storage.get_observation_log("t", "acc")] == list("01234")
        assert [e.value for e in storage.get_observation_log("t", "loss")] == ["9"]
        inclusive = storage.get_observation_log("t", "acc", times[1], times[3])
        assert [e.value for e in inclusive] == ["1", "2", "3"]
        assert [e.value for e in storage.get_observation_log("t", None, times[2], times[2])] == [
            "2", "9"
        ]
        assert [e.value for e in storage.get_observation_log("t", "acc", start_time=times[4])] == [
            "4"
        ]
        assert [e.value for e in storage.get_observation_log("t", "acc", end_time=times[0])] == [
            "0"
        ]
        assert storage.get_observation_log("nobody") == []

    def test_observation_log_steps(self, storage: BaseStorage) -> None:
        storage.report_observation_log(
            "t", [entry("acc", "a", T0), entry("loss", "b", T0), entry("acc", "c", T0)]
        )
        storage.report_observation_log("t", [entry("acc", "d", T0), entry("loss", "e", T0, step=7)])
        storage.report_observation_log("t", [entry("loss", "f", T0)])
        storage.report_observation_log("u", [entry("acc", "g", T0)])
        steps = {(e.metric_name, e.value): e.step for e in storage.get_observation_log("t")}
        assert steps == {
            ("acc", "a"): 1, ("acc", "c"): 2, ("acc", "d"): 3,
            ("loss", "b"): 1, ("loss", "e"): 7, ("loss", "f"): 8,
        }
        assert storage.get_observation_log("u")[0].step == 1

    def test_observation_log_zero_time(self, storage: BaseStorage) -> None:
        storage.report_observation_log(
            "t", [entry("acc", "later", T0), entry("acc", "unavailable", ZERO_TIME)]
        )
        got = storage.get_observation_log("t")
        assert [e.value for e in got] == ["unavailable", "later"]
        assert got[0].timestamp == ZERO_TIME
        assert got[0].timestamp.tzinfo is not None
        assert [e.value for e in storage.get_observation_log("t", end_time=ZERO_TIME)] == [
            "unavailable"
        ]
        assert [e.value for e in storage.get_observation_log("t", start_time=T0)] == ["later"]

    def test_observation_log_keeps_microseconds_and_converts_to_utc(
        self, storage: BaseStorage
    ) -> None:
        plus2 = timezone(timedelta(hours=2))
        local = datetime(2024, 3, 4, 19, 55, 8, 654321, tzinfo=plus2)
        storage.report_observation_log(
            "t", [entry("acc", "0.1", local), entry("acc", "0.2", T0 + timedelta(microseconds=1))]
        )
        got = storage.get_observation_log("t")
        assert got[0].timestamp == T0 + timedelta(microseconds=1)
        assert got[1].timestamp == datetime(2024, 3, 4, 17, 55, 8, 654321, tzinfo=UTC)
        assert got[1].timestamp.utcoffset() == timedelta(0)
        just_after = T0 + timedelta(microseconds=2)
        assert [e.value for e in storage.get_observation_log("t", start_time=just_after)] == ["0.1"]

    def test_observation_log_values_are_text(self, storage: BaseStorage) -> None:
        long_value = "x" * 5000
        storage.report_observation_log(
            "t", [entry("acc", "unavailable", T0), entry("acc", "1e-08", T0),
                  entry("ünï", long_value, T0)]
        )
        assert [e.value for e in storage.get_observation_log("t")] == [
            "unavailable", "1e-08", long_value
        ]
        assert [e.value for e in storage.get_observation_log("t", "ünï")] == [long_value]

    def test_names_are_case_sensitive(self, storage: BaseStorage) -> None:
        storage.create_experiment(make_experiment("exp"))
        storage.create_experiment(make_experiment("Exp"))
        storage.create_trials("exp", "default", [make_trial("t")])
        storage.create_trials("Exp", "default", [make_trial("T")])
        storage.report_observation_log("t", [entry("acc", "lower", T0)])
        storage.report_observation_log("T", [entry("Acc", "upper", T0)])
        assert [e.value for e in storage.get_observation_log("t")] == ["lower"]
        assert storage.get_observation_log("t", "Acc") == []
        assert [t.name for t in storage.list_trials("Exp")] == ["T"]

    def test_delete_observation_log(self, storage: BaseStorage) -> None:
        storage.report_observation_log("t", [entry("acc", "1", T0)])
        storage.report_observation_log("u", [entry("acc", "2", T0)])
        storage.delete_observation_log("t")
        storage.delete_observation_log("never-reported")
        assert storage.get_observation_log("t") == []
        assert [e.value for e in storage.get_observation_log("u")] == ["2"]
        storage.report_observation_log("t", [entry("acc", "3", T0)])
        assert storage.get_observation_log("t")[0].step == 1
