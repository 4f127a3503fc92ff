"""ExperimentReconciler on SQLite: real trial processes, suggestion services and collectors."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from katib import errors
from katib.api.loading import load_experiment_dict
from katib.api.models import Experiment, Trial
from katib.controller.runtime import Runtime
from katib.executors.base import TrialOutcome
from katib.executors.local import LocalExecutor
from katib.server.reconciler import ExperimentReconciler

pytestmark = pytest.mark.slow

TRIAL_PROGRAM = textwrap.dedent(
    """
    import os, sys, time
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    name = os.environ["KATIB_TRIAL_NAME"]
    with open(os.environ["RUNS_FILE"], "a") as f:
        f.write(f"start {name} {os.getpid()}\\n")
    time.sleep(float(args["sleep"]))
    print(f"accuracy={float(args['x']):.4f}", flush=True)
    with open(os.environ["RUNS_FILE"], "a") as f:
        f.write(f"end {name} {os.getpid()}\\n")
    """
)


def experiment_doc(
    script: Path,
    name: str,
    *,
    max_trials: int = 4,
    parallel: int = 2,
    sleep: float = 0.3,
    namespace: str = "default",
    settings: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A random-search experiment whose trials run `script` (absolute path: no experiment dir)."""
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {
                "algorithmName": "random",
                "algorithmSettings": settings or [{"name": "random_state", "value": "7"}],
            },
            "parallelTrialCount": parallel,
            "maxTrialCount": max_trials,
            "maxFailedTrialCount": 0,
            "parameters": [
                {"name": "x", "parameterType": "double",
                 "feasibleSpace": {"min": "0.0", "max": "1.0"}},
            ],
            "trialTemplate": {
                "primaryContainerName": "training-container",
                "trialParameters": [{"name": "x", "reference": "x"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {"template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{
                            "name": "training-container",
                            "image": "python:3.11",
                            "command": [
                                "python3", str(script), "--x=${trialParameters.x}",
                                f"--sleep={sleep}",
                            ],
                        }],
                    }}},
                },
            },
        },
    }


def make_experiment(tmp_path: Path, name: str, **kwargs: Any) -> Experiment:
    script = tmp_path / "trial.py"
    if not script.exists():
        script.write_text(TRIAL_PROGRAM)
    return load_experiment_dict(experiment_doc(script, name, **kwargs))


class Events:
    """Collects the reconciler's events (thread-safe) for assertions."""

    def __init__(self) -> None:
        self.items: list[tuple[float, str, str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, event: str, namespace: str, name: str, detail: str) -> None:
        with self._lock:
            self.items.append((time.monotonic(), event, namespace, name, detail))

    def of(self, name: str) -> list[str]:
        with self._lock:
            return [e for _, e, _, n, _ in self.items if n == name]


def runs(tmp_path: Path) -> list[tuple[str, str, int]]:
    path = tmp_path / "runs.log"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        kind, name, pid = line.split()
        rows.append((kind, name, int(pid)))
    return rows


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def completed(runtime: Runtime, name: str) -> bool:
    exp = runtime.storage.get_experiment(name)
    conditions = exp.status.conditions if exp.status else []
    return any(c.type in ("Succeeded", "Failed") and c.status == "True" for c in conditions)


def assert_finished_exactly(runtime: Runtime, tmp_path: Path, name: str, count: int) -> None:
    """Succeeded with exactly `count` trials, each Succeeded, each run exactly once."""
    exp = runtime.storage.get_experiment(name)
    assert exp.status is not None
    assert exp.status.conditions[-1].type == "Succeeded", exp.status.conditions
    trials = runtime.storage.list_trials(name)
    assert len(trials) == count
    assert all(t.condition == "Succeeded" for t in trials), [t.condition for t in trials]
    started = Counter(n for kind, n, _ in runs(tmp_path) if kind == "start")
    mine = {t.name for t in trials}
    assert {n: c for n, c in started.items() if n in mine} == dict.fromkeys(mine, 1)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNS_FILE", str(tmp_path / "runs.log"))
    return tmp_path


@pytest.fixture
def runtime(env: Path) -> Iterator[Runtime]:
    with Runtime(data_dir=env / "data", db_url=f"sqlite:///{env / 'katib.db'}") as rt:
        yield rt


class SlowPollExecutor(LocalExecutor):
    """Polls of one experiment's trials take `delay` seconds (a slow pass)."""

    def __init__(self, root: Path, slow_experiment: str, delay: float) -> None:
        super().__init__(root)
        self.slow_experiment = slow_experiment
        self.delay = delay

    def poll(self, trial: Trial) -> TrialOutcome:
        if trial.name.startswith(self.slow_experiment + "-"):
            time.sleep(self.delay)
        return super().poll(trial)


def test_runs_several_experiments_concurrently(env: Path) -> None:
    executor = SlowPollExecutor(env / "data" / "trials", "slow", delay=1.0)
    with Runtime(
        data_dir=env / "data", db_url=f"sqlite:///{env / 'katib.db'}", executor=executor
    ) as runtime:
        events = Events()
        reconciler = ExperimentReconciler(runtime, lease_seconds=5, on_event=events)
        runtime.submit(make_experiment(env, "slow", max_trials=3, parallel=1, sleep=0.2))
        reconciler.start()
        try:
            fast = [f"fast{i}" for i in range(3)]
            for name in fast:  # submitted while the server runs
                runtime.submit(make_experiment(env, name, max_trials=4, parallel=2))
            wait_for(lambda: all(completed(runtime, n) for n in fast), 90, "fast experiments")
            # the slow experiment (1 s per poll of each trial) did not hold the others up
            assert not completed(runtime, "slow")
            wait_for(lambda: completed(runtime, "slow"), 90, "slow experiment")
            wait_for(lambda: reconciler.owned() == [], 10, "leases released on completion")
        finally:
            reconciler.stop()
        for name in fast:
            assert_finished_exactly(runtime, env, name, 4)
            assert events.of(name) == ["acquired", "completed"]
            assert runtime.storage.get_ownership(name, "default").owner is None
        assert_finished_exactly(runtime, env, "slow", 3)


def test_lease_is_renewed_while_trials_run(runtime: Runtime, env: Path) -> None:
    reconciler = ExperimentReconciler(runtime, lease_seconds=0.9, poll_interval=0.1)
    runtime.submit(make_experiment(env, "long", max_trials=2, parallel=2, sleep=3.0))
    reconciler.start()
    try:
        wait_for(lambda: reconciler.owned() == [("default", "long")], 20, "ownership")
        beats = set()
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            own = runtime.storage.get_ownership("long", "default")
            assert own.owner == runtime.owner
            beats.add(own.heartbeat)
            # another server, judging staleness by the same lease, may not take it
            assert not runtime.storage.acquire_experiment(
                "long", "default", "other-host:1:1", stale_after_seconds=0.9
            )
            time.sleep(0.1)
        assert len(beats) >= 3, f"heartbeat renewed only {len(beats)} times in 2.5 s"
        wait_for(lambda: completed(runtime, "long"), 60, "completion")
    finally:
        reconciler.stop()
    assert_finished_exactly(runtime, env, "long", 2)


def test_stop_leaves_trials_running_and_next_start_adopts(env: Path) -> None:
    url = f"sqlite:///{env / 'katib.db'}"
    first = Runtime(data_dir=env / "data", db_url=url)
    try:
        first.submit(make_experiment(env, "adopt", max_trials=4, parallel=2, sleep=2.5))
        reconciler = ExperimentReconciler(first, lease_seconds=30)
        reconciler.start()
        wait_for(
            lambda: len([r for r in runs(env) if r[0] == "start"]) == 2, 30, "2 trials started"
        )
        reconciler.stop()
        assert first.storage.get_ownership("adopt", "default").owner is None  # released
    finally:
        first.close()
    # trials keep running without any server
    pids = [pid for kind, _, pid in runs(env) if kind == "start"]
    assert all(alive(pid) for pid in pids)
    assert not [r for r in runs(env) if r[0] == "end"]

    events = Events()
    with Runtime(data_dir=env / "data", db_url=url) as second:
        second.owner = "next-start:1:1"  # another identity than the first runtime's
        reconciler = ExperimentReconciler(second, lease_seconds=30, on_event=events)
        started = time.monotonic()
        reconciler.start()
        try:
            wait_for(lambda: "acquired" in events.of("adopt"), 10, "adoption")
            # a released lease is adopted at once, not after lease_seconds
            assert time.monotonic() - started < 5
            wait_for(lambda: completed(second, "adopt"), 60, "completion")
        finally:
            reconciler.stop()
        assert_finished_exactly(second, env, "adopt", 4)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_dead_or_stale_owner_is_adopted(runtime: Runtime, env: Path) -> None:
    storage = runtime.storage
    runtime.submit(make_experiment(env, "orphan", max_trials=2, parallel=2, sleep=0.2))
    runtime.submit(make_experiment(env, "stale", max_trials=2, parallel=2, sleep=0.2))
    # a dead process on this host: provably dead, adopted at once
    dead = subprocess_pid_that_exited()
    assert storage.acquire_experiment("orphan", "default", f"{socket.gethostname()}:{dead}:1")
    # an owner on another host stops renewing: adopted once its lease is stale
    assert storage.acquire_experiment("stale", "default", "elsewhere:42:42")
    lease = 2.0
    events = Events()
    reconciler = ExperimentReconciler(runtime, lease_seconds=lease, on_event=events)
    started = time.monotonic()
    reconciler.start()
    try:
        wait_for(lambda: "acquired" in events.of("orphan"), 10, "orphan adopted")
        orphan_at = time.monotonic() - started
        wait_for(lambda: "acquired" in events.of("stale"), 20, "stale adopted")
        stale_at = time.monotonic() - started
        assert orphan_at < lease, orphan_at
        assert stale_at >= lease - 0.3, stale_at
        wait_for(lambda: completed(runtime, "orphan") and completed(runtime, "stale"), 60, "done")
    finally:
        reconciler.stop()
    assert_finished_exactly(runtime, env, "orphan", 2)
    assert_finished_exactly(runtime, env, "stale", 2)


def subprocess_pid_that_exited() -> int:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_experiment_deleted_while_running(runtime: Runtime, env: Path) -> None:
    events = Events()
    reconciler = ExperimentReconciler(runtime, lease_seconds=3, on_event=events)
    runtime.submit(make_experiment(env, "doomed", max_trials=2, parallel=2, sleep=60))
    runtime.submit(make_experiment(env, "kept", max_trials=2, parallel=2, sleep=0.2))
    reconciler.start()
    try:
        wait_for(
            lambda: len({n for k, n, _ in runs(env) if k == "start" and "doomed" in n}) == 2,
            30,
            "doomed trials started",
        )
        pids = [pid for kind, n, pid in runs(env) if kind == "start" and "doomed" in n]
        runtime.storage.delete_experiment("doomed")
        wait_for(lambda: "deleted" in events.of("doomed"), 15, "deletion noticed")
        wait_for(lambda: not any(alive(p) for p in pids), 15, "trials of the deleted one killed")
        assert ("default", "doomed") not in reconciler.owned()
        wait_for(lambda: completed(runtime, "kept"), 60, "the other experiment")
    finally:
        reconciler.stop()
    assert_finished_exactly(runtime, env, "kept", 2)


def test_suggestion_failure_marks_experiment_failed(runtime: Runtime, env: Path) -> None:
    bad = make_experiment(env, "bad", settings=[{"name": "no_such_setting", "value": "1"}])
    # stored as another server's API would store it, without the validation call
    runtime.storage.create_experiment(bad)
    events = Events()
    reconciler = ExperimentReconciler(runtime, lease_seconds=3, on_event=events)
    reconciler.start()
    try:
        wait_for(lambda: completed(runtime, "bad"), 30, "failure")
    finally:
        reconciler.stop()
    exp = runtime.storage.get_experiment("bad")
    assert exp.status is not None
    last = exp.status.conditions[-1]
    assert last.type == "Failed" and "Suggestion has failed" in (last.message or "")
    assert "no_such_setting" in (last.message or "")
    assert runtime.storage.list_trials("bad") == []
    assert events.of("bad") == ["acquired", "completed"]


def test_storage_outage_is_retried(
    runtime: Runtime, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the database is unreachable nothing is lost; the run resumes when it is back."""
    storage = runtime.storage
    outage = threading.Event()
    calls = Counter[str]()

    def failing(method_name: str) -> Callable[..., Any]:
        real = getattr(storage, method_name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if outage.is_set():
                calls[method_name] += 1
                raise errors.UnavailableError("cannot reach database (test outage)")
            return real(*args, **kwargs)

        return wrapper

    for method in ("list_unfinished_experiments", "renew_leases", "get_experiment",
                   "experiment_revision", "list_trials", "update_trial_status",
                   "update_experiment_status", "write_batch", "get_observation_log"):
        monkeypatch.setattr(storage, method, failing(method))
    reconciler = ExperimentReconciler(runtime, lease_seconds=3, poll_interval=0.1)
    runtime.submit(make_experiment(env, "flaky", max_trials=4, parallel=2, sleep=0.5))
    reconciler.start()
    try:
        wait_for(lambda: reconciler.owned() == [("default", "flaky")], 10, "ownership")
        outage.set()
        time.sleep(1.5)
        outage.clear()
        assert calls["list_unfinished_experiments"] > 0 and calls["experiment_revision"] > 0
        wait_for(lambda: completed(runtime, "flaky"), 60, "completion after the outage")
    finally:
        reconciler.stop()
    assert_finished_exactly(runtime, env, "flaky", 4)


def test_stale_pass_is_fenced(runtime: Runtime, env: Path) -> None:
    """A pass whose lease was taken over writes no trial and no status."""
    runtime.submit(make_experiment(env, "fenced"))
    runtime.controller.owner = runtime.owner
    assert runtime.storage.acquire_experiment("fenced", "default", "new-owner:1:1")
    with pytest.raises(errors.ConflictError, match="no longer owned"):
        runtime.reconcile_pass("fenced", "default")
    assert runtime.storage.list_trials("fenced") == []
    assert runtime.storage.get_experiment("fenced").status is None
    assert not os.path.exists(env / "runs.log")


def test_budget_edit_restarts_a_completed_experiment(runtime: Runtime, env: Path) -> None:
    """A larger maxTrialCount (Katib's restart) is picked up by the running server."""
    events = Events()
    reconciler = ExperimentReconciler(runtime, lease_seconds=3, on_event=events)
    runtime.submit(make_experiment(env, "grow", max_trials=2, parallel=2, sleep=0.2))
    reconciler.start()
    try:
        wait_for(lambda: completed(runtime, "grow"), 60, "first budget")
        assert len(runtime.storage.list_trials("grow")) == 2
        wait_for(lambda: events.of("grow") == ["acquired", "completed"], 10, "release")
        # the edit, as `katib apply` or PATCH would make it (it may land on any server)
        runtime.submit(make_experiment(env, "grow", max_trials=5, parallel=2, sleep=0.2))
        wait_for(lambda: len(events.of("grow")) >= 3, 10, "restarted experiment picked up")
        wait_for(lambda: completed(runtime, "grow"), 60, "second budget")
    finally:
        reconciler.stop()
    assert_finished_exactly(runtime, env, "grow", 5)
    assert events.of("grow") == ["acquired", "completed", "acquired", "completed"]


@pytest.mark.parametrize("second", ["peer", "looks-dead"])
def test_two_reconcilers_share_one_sqlite_database(env: Path, second: str) -> None:
    """Two servers (two runtimes, two identities) on one SQLite file and trial directory.

    "looks-dead": the second server's identity names this host with a start time that
    does not match, so the first takes over everything the second acquires, at once
    and mid-pass: the second's writes are fenced off, and the counts stay exact.
    """
    url = f"sqlite:///{env / 'katib.db'}"
    events = Events()
    with Runtime(data_dir=env / "data", db_url=url) as one, Runtime(
        data_dir=env / "data", db_url=url
    ) as two:
        if second == "peer":
            two.owner = f"second-{one.owner}"  # a host name owner_is_dead cannot judge
        else:
            two.owner = f"{one.owner}0"  # this host and pid, another start time: "dead"
        reconcilers = [
            ExperimentReconciler(rt, lease_seconds=3, poll_interval=0.1, on_event=events)
            for rt in (one, two)
        ]
        for reconciler in reconcilers:
            reconciler.start()
        names = [f"shared{i}" for i in range(4)]
        try:
            for name in names:
                one.submit(make_experiment(env, name, max_trials=3, parallel=2, sleep=0.2))
            wait_for(lambda: all(completed(one, n) for n in names), 120, "all experiments")
        finally:
            for reconciler in reconcilers:
                reconciler.stop()
        for name in names:
            assert_finished_exactly(one, env, name, 3)
            if second == "peer":
                assert events.of(name) == ["acquired", "completed"], events.of(name)
            else:
                assert events.of(name)[-1] == "completed"


def test_passes_pause_while_leases_cannot_be_renewed(
    runtime: Runtime, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past a lease without a successful renewal, another server may own the experiment."""
    lease = 1.2
    renewals_fail = threading.Event()
    real_renew = runtime.storage.renew_leases
    passes: list[float] = []
    real_pass = runtime.reconcile_pass

    def renew(owner: str) -> list[tuple[str, str]]:
        if renewals_fail.is_set():
            raise errors.UnavailableError("cannot reach database (test outage)")
        return real_renew(owner)

    def counted_pass(name: str, namespace: str) -> Any:
        passes.append(time.monotonic())
        return real_pass(name, namespace)

    monkeypatch.setattr(runtime.storage, "renew_leases", renew)
    monkeypatch.setattr(runtime, "reconcile_pass", counted_pass)
    reconciler = ExperimentReconciler(runtime, lease_seconds=lease, poll_interval=0.05)
    runtime.submit(make_experiment(env, "paused", max_trials=2, parallel=1, sleep=4.0))
    reconciler.start()
    try:
        wait_for(lambda: bool(runs(env)), 30, "first trial started")
        renewals_fail.set()
        failed_at = time.monotonic()
        time.sleep(lease + 1.5)
        # passes ran while the last renewal was recent, none once it was a lease old
        quiet_from = failed_at + lease + 0.3
        assert [t for t in passes if t > quiet_from] == []
        assert [t for t in passes if failed_at < t < failed_at + lease / 3]
        renewals_fail.clear()
        wait_for(lambda: completed(runtime, "paused"), 60, "completion after renewals resume")
    finally:
        reconciler.stop()
    assert_finished_exactly(runtime, env, "paused", 2)
