"""The controller's cached view of an experiment: what it reads, when it writes, and that
what it derives equals a full scan of the stored trials."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from test_controller import make, run_to_end

from katib.api.models import ExperimentStatus, TrialConditionType
from katib.controller import observation, status
from katib.controller.conversion import TrialBytesCache
from katib.controller.experiment_view import ExperimentView
from katib.executors.fake import FakeRun
from katib.storage.sql import SQLStorage


class CountingStorage(SQLStorage):
    """SQLStorage that counts the calls the controller makes."""

    calls: dict[str, int]

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in ("list_trials", "get_experiment", "write_batch", "experiment_revision"):
            calls = super().__getattribute__("calls")
            calls[name] = calls.get(name, 0) + 1
        return attr


def counting(tmp_path: Path, behaviour: Any, **spec: Any) -> tuple[Any, Any, CountingStorage]:
    controller, executor, storage, _ = make(tmp_path, behaviour, **spec)
    storage.close()
    counted = CountingStorage(storage.url)
    counted.calls = {}
    controller.storage = counted
    return controller, executor, counted


def accuracy(assignments: Mapping[str, str]) -> FakeRun:
    return FakeRun(metrics=[("accuracy", assignments["x"])], polls=2)


def test_a_pass_reads_the_history_only_after_an_outside_write(tmp_path: Path) -> None:
    controller, _, storage = counting(tmp_path, accuracy)
    controller.view_ttl_seconds = 0.0  # ask for the revision on every pass
    for _ in range(6):
        controller.reconcile("exp")
    assert storage.calls["list_trials"] == 1
    assert storage.calls["get_experiment"] == 1
    assert storage.calls["experiment_revision"] == 6
    # A budget edit (another writer) moves the revision: the next pass reads again.
    experiment = storage.get_experiment("exp")
    experiment.spec.max_trial_count = 20
    storage.update_experiment_spec(experiment)
    controller.reconcile("exp")
    assert storage.calls["list_trials"] == 2
    final = run_to_end(controller)
    assert final.status is not None and final.status.trials == 20


def test_trial_starts_and_counts_are_written_lazily(tmp_path: Path) -> None:
    def first_ends(assignments: Mapping[str, str]) -> FakeRun:
        polls = 1 if assignments["x"] == "0.01" else 1000
        return FakeRun(metrics=[("accuracy", assignments["x"])], polls=polls)

    controller, _, storage = counting(tmp_path, first_ends)
    controller.lazy_write_seconds = 0.5
    controller.reconcile("exp")  # three trials; the experiment's Running condition is written
    while not controller.reconcile("exp").finished:
        pass
    # That pass stored the finished trial and a fourth one, which it then launched.
    writes = storage.calls["write_batch"]
    conditions = [t.condition for t in storage.list_trials("exp")]
    assert conditions[0] == TrialConditionType.SUCCEEDED
    assert conditions[-1] == TrialConditionType.CREATED
    stored = storage.get_experiment("exp").status
    assert stored is not None and stored.trials_succeeded is None  # the counts lag
    controller.reconcile("exp")
    assert storage.calls["write_batch"] == writes  # only a start and counts: held back
    time.sleep(0.55)
    controller.reconcile("exp")
    assert storage.calls["write_batch"] == writes + 1
    assert storage.list_trials("exp")[-1].condition == TrialConditionType.RUNNING
    stored = storage.get_experiment("exp").status
    assert stored is not None and stored.trials_succeeded == 1 and stored.trials_running == 3


def test_a_finished_trial_is_written_by_the_pass_that_sees_it(tmp_path: Path) -> None:
    controller, _, storage = counting(
        tmp_path, accuracy, parallelTrialCount=1, maxTrialCount=2, maxFailedTrialCount=1
    )
    controller.lazy_write_seconds = 3600.0
    names: list[str] = []
    while not names:
        result = controller.reconcile("exp")
        names = result.finished
    # The pass that saw the first trial end also created the next one, in one write.
    trials = storage.list_trials("exp")
    assert [t.condition for t in trials] == [
        TrialConditionType.SUCCEEDED,
        TrialConditionType.CREATED,
    ]
    assert trials[0].status.observation is not None
    final = run_to_end(controller)
    assert final.status is not None and final.status.trials_succeeded == 2
    assert all(t.is_completed for t in storage.list_trials("exp"))


def test_changes_lost_with_a_failed_pass_are_read_back(tmp_path: Path) -> None:
    controller, _, storage = counting(tmp_path, accuracy)
    controller.reconcile("exp")
    real = storage.write_batch

    def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("database went away")

    storage.write_batch = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        for _ in range(10):
            controller.reconcile("exp")
    storage.write_batch = real  # type: ignore[method-assign]
    reads = storage.calls["list_trials"]
    final = run_to_end(controller)
    assert storage.calls["list_trials"] == reads + 1
    assert final.status is not None and final.status.trials == 12
    assert final.status.trials_succeeded == 12


def test_view_derivations_equal_a_full_scan(tmp_path: Path) -> None:
    outcomes = iter(["0.5", "nan", "0.9", "0.9", "0.1", "fail", "0.7", "0.2"] * 3)

    def mixed(assignments: Mapping[str, str]) -> FakeRun:
        value = next(outcomes)
        if value == "fail":
            return FakeRun(exit_code=1, polls=1)
        return FakeRun(metrics=[("accuracy", value)], polls=1)

    controller, _, storage = counting(tmp_path, mixed, maxFailedTrialCount=12)
    for _ in range(5):
        controller.reconcile("exp")
        experiment = storage.get_experiment("exp")
        trials = storage.list_trials("exp")
        view = ExperimentView(storage.experiment_revision("exp"), experiment, trials)
        mine, full = ExperimentStatus(), ExperimentStatus()
        assert view.aggregate(mine) == status.aggregate(full, trials)
        assert mine.to_dict() == full.to_dict()
        assert view.optimal() == observation.optimal_trial(experiment, trials)
        assert view.records() == TrialBytesCache().serialize(experiment, trials)


def test_a_long_lived_views_counts_and_lists_follow_trials_ending_out_of_order(
    tmp_path: Path,
) -> None:
    durations = iter([5, 1, 3, 1, 4, 2, 1, 6, 2, 1, 3, 1] * 3)

    def uneven(assignments: Mapping[str, str]) -> FakeRun:
        polls = next(durations)
        if polls == 4:
            return FakeRun(exit_code=1, polls=polls)
        return FakeRun(metrics=[("accuracy", assignments["x"])], polls=polls)

    controller, _, storage = counting(
        tmp_path, uneven, parallelTrialCount=4, maxTrialCount=24, maxFailedTrialCount=24
    )
    for _ in range(60):
        result = controller.reconcile("exp")
        view = controller._views.get(("default", "exp"))
        if view is None:
            break
        mine, full = ExperimentStatus(), ExperimentStatus()
        counts = status.aggregate(full, view.trials)  # a full scan of the same trials
        assert view.counts() == counts
        assert view.aggregate(mine) == counts
        assert mine.to_dict() == full.to_dict()
        if result.completed:
            break
    final = storage.get_experiment("exp").status
    assert final is not None and final.trials == 24
    assert (final.trials_succeeded or 0) + (final.trials_failed or 0) == 24
    assert final.succeeded_trial_list is not None and final.failed_trial_list is not None
    names = [t.name for t in storage.list_trials("exp")]
    assert final.succeeded_trial_list == [n for n in names if n in final.succeeded_trial_list]


def test_a_recently_confirmed_view_is_used_without_asking(tmp_path: Path) -> None:
    controller, _, storage = counting(
        tmp_path, lambda a: FakeRun(metrics=[("accuracy", a["x"])], polls=1000)
    )
    controller.view_ttl_seconds = 0.3
    controller.reconcile("exp")
    asked = storage.calls["experiment_revision"]
    for _ in range(5):
        controller.reconcile("exp")
    assert storage.calls["experiment_revision"] == asked
    experiment = storage.get_experiment("exp")
    experiment.spec.parallel_trial_count = 4
    storage.update_experiment_spec(experiment)
    time.sleep(0.35)
    result = controller.reconcile("exp")  # asks, sees the edit, reads it
    assert storage.calls["experiment_revision"] == asked + 1
    assert storage.calls["list_trials"] == 2
    assert len(result.trials) == 4
