"""WorkerPoolExecutor's trial files, which its workers write: result, log, spares."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_worker_pool import _experiment, _trial, behaviour

from katib.executors.base import LaunchContext, TrialOutcome, TrialPhase
from katib.executors.worker_pool import WorkerPoolExecutor


@pytest.fixture
def context() -> LaunchContext:
    return LaunchContext(experiment=_experiment(), db_manager_address="unused")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "trials"


def _pool(root: Path, preload: tuple[str, ...] = ()) -> WorkerPoolExecutor:
    executor = WorkerPoolExecutor(root, size=1, preload=preload)
    executor.register("default", "pool", behaviour)
    return executor


@pytest.fixture
def pool(root: Path) -> Iterator[WorkerPoolExecutor]:
    executor = _pool(root)
    yield executor
    executor.close()


def _finish(pool: WorkerPoolExecutor, name: str, mode: str, context: LaunchContext) -> TrialOutcome:
    trial = _trial(name, mode)
    pool.launch(trial, context)
    deadline = time.monotonic() + 60
    while (outcome := pool.poll(trial)).phase != TrialPhase.FINISHED:
        assert time.monotonic() < deadline, f"{name} did not finish"
        pool.wait(0.1)
    return outcome


def _from_disk(root: Path, name: str) -> TrialOutcome:
    fresh = WorkerPoolExecutor(root, size=1)
    try:
        return fresh.poll(_trial(name, "ok"))
    finally:
        fresh.close()


def test_a_trial_whose_function_never_started_is_launched_again(
    tmp_path: Path, root: Path, context: LaunchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker imports this for 2 s before it reads its first trial.
    (tmp_path / "slow_import.py").write_text("import time\ntime.sleep(2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = _pool(root, preload=("slow_import",))
    trial = _trial("t-queued", "ok")
    first.launch(trial, context)
    first.close()  # killed while the trial waited in its socket

    assert _from_disk(root, "t-queued").phase == TrialPhase.NOT_STARTED
    second = _pool(root)
    try:
        assert _finish(second, "t-queued", "ok", context).succeeded
    finally:
        second.close()


def test_results_on_disk_before_and_after_acknowledge(
    root: Path, pool: WorkerPoolExecutor, context: LaunchContext
) -> None:
    failed = _finish(pool, "t-text", "text", context)
    assert not failed.succeeded and not failed.unreported
    # nothing to store: final at once, no acknowledge needed
    on_disk = _from_disk(root, "t-text")
    assert on_disk.phase == TrialPhase.FINISHED and on_disk.message == failed.message

    first = _finish(pool, "t-first", "ok", context)
    assert first.unreported
    assert _from_disk(root, "t-first").phase == TrialPhase.LOST  # observations not stored
    pool.acknowledge(_trial("t-first", "ok"))
    pool.acknowledge(_trial("t-first", "ok"))  # again: nothing more
    assert pool.poll(_trial("t-first", "ok")).unreported == []
    # the worker writes it before it takes its next trial
    assert _finish(pool, "t-second", "ok", context).succeeded
    on_disk = _from_disk(root, "t-first")
    assert on_disk.phase == TrialPhase.FINISHED and on_disk.succeeded
    assert on_disk.unreported == []


def test_an_acknowledgement_outlives_its_worker(
    root: Path, pool: WorkerPoolExecutor, context: LaunchContext
) -> None:
    assert _finish(pool, "t-acked", "ok", context).succeeded
    pid = int(pool.log_path(_trial("t-acked", "ok")).read_text().split("pid=")[1].split()[0])
    os.kill(pid, 9)  # perhaps before it wrote the result: the pool writes it then
    while os.path.exists(f"/proc/{pid}"):  # until it is a zombie
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.02)
    pool.acknowledge(_trial("t-acked", "ok"))
    assert _finish(pool, "t-after", "ok", context).succeeded  # a new worker
    on_disk = _from_disk(root, "t-acked")
    assert on_disk.phase == TrialPhase.FINISHED and on_disk.unreported == []


def test_trial_directories_only_and_no_spares_left(
    root: Path, pool: WorkerPoolExecutor, context: LaunchContext
) -> None:
    (root / "default" / "t-empty").mkdir(parents=True)  # made by someone, never launched
    assert _finish(pool, "t-empty", "ok", context).succeeded
    assert _finish(pool, "t-crash", "abort", context).signal == 6
    assert _finish(pool, "t-next", "ok", context).succeeded
    assert sorted(os.listdir(root / "default")) == ["t-crash", "t-empty", "t-next"]
    for name in ("t-empty", "t-next"):
        assert "pid=" in (root / "default" / name / "trial.log").read_text()
    pool.close()
    assert sorted(os.listdir(root)) == ["default"]  # the workers' spare directories are gone


def test_spares_of_workers_that_died_with_their_pool_are_swept(
    root: Path, context: LaunchContext
) -> None:
    stale = root / ".spares" / "999999999"  # no such process
    (stale / "x").mkdir(parents=True)
    pool = _pool(root)
    try:
        assert _finish(pool, "t-sweep", "ok", context).succeeded
        assert not stale.exists()
    finally:
        pool.close()
    assert not (root / ".spares").exists()


def test_a_trial_directory_holds_its_log_and_result_only(
    root: Path, pool: WorkerPoolExecutor, context: LaunchContext
) -> None:
    assert _finish(pool, "t-files", "text", context).phase == TrialPhase.FINISHED
    assert sorted(os.listdir(root / "default" / "t-files")) == ["result.json", "trial.log"]


@pytest.mark.parametrize(
    ("files", "phase"),
    [
        ({"result.json": ""}, TrialPhase.LOST),  # made before the call, no outcome yet
        ({"result.json": '{"exit_code": 0, "sig'}, TrialPhase.LOST),  # a write cut short
        ({"launched": "123"}, TrialPhase.LOST),  # the marker of older versions
        ({"trial.log": ""}, TrialPhase.NOT_STARTED),  # neither: the call never started
    ],
)
def test_what_a_restarted_pool_reads_from_a_trial_directory(
    root: Path, files: dict[str, str], phase: TrialPhase
) -> None:
    directory = root / "default" / "t-disk"
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    assert _from_disk(root, "t-disk").phase == phase


def test_a_quick_trial_that_prints_nothing_makes_no_file(
    root: Path, pool: WorkerPoolExecutor, context: LaunchContext
) -> None:
    # A worker's first trial loads the function (imports), which may take long enough
    # on a loaded machine for the trial to get its directory (a live log): warm it.
    _finish(pool, "t-warm", "quiet", context)
    pool.acknowledge(_trial("t-warm", "quiet"))
    quiet = _finish(pool, "t-quiet", "quiet", context)
    assert quiet.succeeded and [(m.metric_name, m.value) for m in quiet.unreported] == [
        ("score", "0.25")
    ]
    pool.acknowledge(_trial("t-quiet", "quiet"))  # stored: storage alone holds it
    pool.close()
    assert not (root / "default" / "t-quiet").exists()
    assert not (root / ".spares").exists()


def test_a_trial_that_runs_long_gets_its_directory_and_log_while_it_runs(
    root: Path, pool: WorkerPoolExecutor, context: LaunchContext
) -> None:
    sleeping = _trial("t-long", "sleep")  # prints its pid, then sleeps
    pool.launch(sleeping, context)
    log = root / "default" / "t-long" / "trial.log"
    deadline = time.monotonic() + 30
    while not (log.exists() and "pid=" in log.read_text()):
        assert time.monotonic() < deadline, "no live log"
        pool.wait(0.05)
    assert pool.poll(sleeping).phase == TrialPhase.RUNNING
    assert (root / "default" / "t-long" / "result.json").read_text() == ""  # launched
    pool.stop(sleeping)
    assert _from_disk(root, "t-long").phase == TrialPhase.FINISHED  # killed: final


_CRASHING_POOL = """
import os, signal, sys, time
sys.path.insert(0, {tests!r})
from test_worker_pool import _experiment, _trial, behaviour
from katib.executors.base import LaunchContext, TrialPhase
from katib.executors.worker_pool import WorkerPoolExecutor

pool = WorkerPoolExecutor({root!r}, size=1)
pool.register("default", "pool", behaviour)
context = LaunchContext(experiment=_experiment(), db_manager_address="unused")
def finish(name, mode):
    trial = _trial(name, mode)
    pool.launch(trial, context)
    while pool.poll(trial).phase != TrialPhase.FINISHED:
        pool.wait(0.05)
finish("t-failed", "text")        # final, nothing to store: journaled
finish("t-quiet-stored", "quiet") # stored by the controller
pool.acknowledge(_trial("t-quiet-stored", "quiet"))
finish("t-quiet-unstored", "quiet")  # its observations died with the controller
sleeping = _trial("t-running", "sleep")
pool.launch(sleeping, context)
log = {log!r}
while not (os.path.exists(log) and "pid=" in open(log).read()):
    pool.wait(0.05)
os.kill(os.getpid(), signal.SIGKILL)  # the controller dies; its workers follow it
"""


def test_a_pool_that_died_leaves_what_a_restart_needs(root: Path) -> None:
    import subprocess
    import sys

    script = _CRASHING_POOL.format(
        tests=str(Path(__file__).parent),
        root=str(root),
        log=str(root / "default" / "t-running" / "trial.log"),
    )
    died = subprocess.run([sys.executable, "-c", script], timeout=120, capture_output=True)
    assert died.returncode == -9, died.stderr.decode()[-2000:]
    deadline = time.monotonic() + 30
    while any(  # the workers die with it (PR_SET_PDEATHSIG)
        n.isdigit() and os.path.exists(f"/proc/{n}") for n in os.listdir(root / ".spares")
    ):
        assert time.monotonic() < deadline, "a worker outlived its pool"
        time.sleep(0.05)
    restarted = WorkerPoolExecutor(root, size=1)  # turns the journal into directories
    try:
        failed = restarted.poll(_trial("t-failed", "text"))
        assert failed.phase == TrialPhase.FINISHED and failed.message.startswith("TypeError")
        assert restarted.poll(_trial("t-quiet-unstored", "quiet")).phase == TrialPhase.LOST
        running = restarted.poll(_trial("t-running", "sleep"))
        assert running.phase == TrialPhase.LOST
        assert "pid=" in (root / "default" / "t-running" / "trial.log").read_text()
    finally:
        restarted.close()
    assert not (root / ".spares").exists()  # the dead worker's files are gone too
