"""The reconcile loop with executors that report heartbeats, limit parallelism or defer."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from katib.api.loading import load_experiment_dict
from katib.api.models import Experiment, Trial, TrialConditionType
from katib.controller.reconcile import Controller
from katib.executors.base import LaunchContext, LaunchDeferredError, TrialOutcome, TrialPhase
from katib.executors.fake import FakeExecutor, FakeRun
from katib.storage.sql import SQLStorage

DOC: dict[str, Any] = {
    "metadata": {"name": "exp"},
    "spec": {
        "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
        "algorithm": {"algorithmName": "random"},
        "parallelTrialCount": 3,
        "maxTrialCount": 6,
        "maxFailedTrialCount": 6,
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
                            "containers": [
                                {"name": "main", "command": ["echo", "${trialParameters.x}"]}
                            ]
                        }
                    }
                },
            },
        },
    },
}


class Stub:
    def __init__(self) -> None:
        self.n = 0

    def validate(self, experiment: Experiment) -> None:
        return None

    def get_suggestions(
        self, experiment: Any, trials: Any, count: int, *rest: Any, **_: Any
    ) -> Any:
        from katib.controller.suggestion_client import SuggestionReply

        values = []
        for _ in range(count):
            self.n += 1
            values.append({"x": f"0.{self.n}"})
        return SuggestionReply(values, [None] * count, [{}] * count)


class Beating(FakeExecutor):
    """Reports heartbeats; trials named in `frozen` stop beating; counts kills."""

    def __init__(self, polls: int = 3) -> None:
        super().__init__(lambda a: FakeRun(metrics=[("accuracy", a["x"])], polls=polls))
        self.frozen: set[str] = set()
        self.killed: list[str] = []
        self.limit: int | None = None
        self.deferrals = 0

    def launch(self, trial: Trial, context: LaunchContext) -> None:
        if self.deferrals > 0 and trial.name not in self.trials:
            self.deferrals -= 1
            raise LaunchDeferredError("path busy")
        super().launch(trial, context)

    def poll(self, trial: Trial) -> TrialOutcome:
        outcome = super().poll(trial)
        if outcome.phase == TrialPhase.RUNNING:
            outcome.watch_heartbeat = True
            now = datetime.now(UTC)
            outcome.heartbeat = (
                datetime(2026, 1, 1, tzinfo=UTC) if trial.name in self.frozen else now
            )
        return outcome

    def kill(self, trial: Trial) -> None:
        self.killed.append(trial.name)
        self.stop(trial)

    def max_parallel(self, experiment: Experiment) -> int | None:
        return self.limit


def make(tmp_path: Path, executor: Beating, timeout: float = 0.2) -> tuple[Controller, SQLStorage]:
    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    storage.create_experiment(load_experiment_dict(DOC))
    stub = Stub()
    controller = Controller(
        storage,
        executor,
        lambda name: stub,  # type: ignore[arg-type,return-value]
        lambda exp: LaunchContext(experiment=exp, db_manager_address="unused"),
        heartbeat_timeout_seconds=timeout,
    )
    return controller, storage


def run(controller: Controller, pause: float = 0.0) -> None:
    for _ in range(2000):
        if controller.reconcile("exp").completed:
            return
        time.sleep(pause)
    raise AssertionError("did not complete")


def test_frozen_heartbeat_is_killed_and_failed(tmp_path: Path) -> None:
    executor = Beating(polls=10_000)
    controller, storage = make(tmp_path, executor)
    controller.reconcile("exp")
    frozen = storage.list_trials("exp")[0].name
    executor.frozen.add(frozen)
    deadline = time.monotonic() + 10
    while storage.get_trial(frozen).condition != TrialConditionType.FAILED:
        assert time.monotonic() < deadline
        controller.reconcile("exp")
        time.sleep(0.02)
    trial = storage.get_trial(frozen)
    assert trial.status.conditions[-1].reason == "TrialHeartbeatLost"
    assert "last heartbeat at 2026-01-01T00:00:00.000Z" in (
        trial.status.conditions[-1].message or ""
    )
    assert executor.killed == [frozen]
    others = [t for t in storage.list_trials("exp") if t.name != frozen]
    assert all(t.condition == TrialConditionType.RUNNING for t in others[:2])


def test_beating_trials_are_never_failed(tmp_path: Path) -> None:
    executor = Beating(polls=20)
    controller, storage = make(tmp_path, executor, timeout=0.05)
    run(controller, pause=0.01)
    assert all(t.condition == TrialConditionType.SUCCEEDED for t in storage.list_trials("exp"))
    assert executor.killed == []


def test_lost_trials_have_their_leftovers_killed(tmp_path: Path) -> None:
    executor = Beating()
    executor.behaviour = lambda a: FakeRun(lost=True, polls=1)
    controller, storage = make(tmp_path, executor)
    run(controller)
    trials = storage.list_trials("exp")
    assert sorted(executor.killed) == sorted(t.name for t in trials)
    assert all(t.status.conditions[-1].reason == "TrialLost" for t in trials)


def test_executor_parallel_limit_is_respected(tmp_path: Path) -> None:
    executor = Beating()
    executor.limit = 1
    controller, storage = make(tmp_path, executor)
    run(controller)
    assert executor.max_running == 1
    assert len(storage.list_trials("exp")) == 6


def test_deferred_launch_stays_created_and_runs_later(tmp_path: Path) -> None:
    executor = Beating()
    executor.deferrals = 4
    controller, storage = make(tmp_path, executor)
    controller.reconcile("exp")
    assert [t.condition for t in storage.list_trials("exp")].count(TrialConditionType.CREATED) == 3
    run(controller)
    trials = storage.list_trials("exp")
    assert all(t.condition == TrialConditionType.SUCCEEDED for t in trials)
    assert executor.deferrals == 0
