"""Starting a suggestion service early, and storing a pass's results while it computes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from katib import errors
from katib.controller.runtime import Runtime
from katib.controller.suggestion_client import SuggestionServiceProcess
from katib.testing.storage import make_experiment


def test_a_spawned_service_is_connected_on_first_use(tmp_path: Path) -> None:
    service = SuggestionServiceProcess("random", str(tmp_path / "svc.log"))
    try:
        service.spawn()
        service.spawn()  # once is enough
        process = service._process
        assert process is not None
        client = service.client()
        assert service._process is process  # the spawned process, not a second one
        experiment = make_experiment()
        reply = client.get_suggestions(experiment, [], 2, 2)
        assert len(reply.assignments) == 2
    finally:
        service.close()
    assert process.poll() is not None  # killed on close


def test_a_spawned_service_that_fails_to_start_says_so(tmp_path: Path) -> None:
    service = SuggestionServiceProcess("no-such-algorithm", str(tmp_path / "svc.log"))
    try:
        service.spawn()
        with pytest.raises(errors.UnavailableError, match="did not start"):
            service.client()
    finally:
        service.close()


def test_work_while_waiting_runs_between_request_and_reply(tmp_path: Path) -> None:
    service = SuggestionServiceProcess("random", str(tmp_path / "svc.log"))
    try:
        client = service.client()
        experiment = make_experiment()
        seen: list[float] = []
        reply = client.get_suggestions(
            experiment, [], 1, 1, while_waiting=lambda: seen.append(time.monotonic())
        )
        assert seen and len(reply.assignments) == 1

        def fail() -> None:
            raise errors.UnavailableError("database went away")

        with pytest.raises(errors.UnavailableError, match="database went away"):
            client.get_suggestions(experiment, [], 1, 1, while_waiting=fail)
        # The reply of the abandoned call is never read; the client goes on working.
        assert len(client.get_suggestions(experiment, [], 1, 1).assignments) == 1
    finally:
        service.close()


def test_runtime_prestarts_services_before_opening_storage(tmp_path: Path) -> None:
    with Runtime(tmp_path, prestart=["random"]) as runtime:
        process = runtime._services["random"]._process
        assert process is not None and process.poll() is None
        runtime.submit(make_experiment())  # validated by the prestarted service
        assert runtime._services["random"]._process is process


def _service_children(marker: bytes = b"suggestion_services") -> list[int]:
    """Live children of this process whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        state = next(line.split()[1] for line in status.splitlines() if line.startswith("State:"))
        if int(ppid) == os.getpid() and marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_a_runtime_that_cannot_open_storage_stops_its_prestarted_services(
    tmp_path: Path,
) -> None:
    before = set(_service_children())
    with pytest.raises(errors.KatibError):
        Runtime(tmp_path, db_url="nosuchdb://nowhere/katib", prestart=["random"])
    assert set(_service_children()) <= before


def test_a_runtime_that_cannot_open_storage_stops_the_executors_prestarted_workers(
    tmp_path: Path,
) -> None:
    from katib.executors.worker_pool import WorkerPoolExecutor

    workers = b"katib.executors.worker_process"
    before = set(_service_children(workers))
    executor = WorkerPoolExecutor(tmp_path / "trials", size=2)
    with pytest.raises(errors.KatibError):
        Runtime(tmp_path, db_url="nosuchdb://nowhere/katib", executor=executor)
    assert executor._live_workers() == []
    assert set(_service_children(workers)) <= before


def test_a_runtime_prestarts_its_executors_workers(tmp_path: Path) -> None:
    from katib.executors.worker_pool import WorkerPoolExecutor

    executor = WorkerPoolExecutor(tmp_path / "trials", size=2)
    with Runtime(tmp_path, executor=executor):
        workers = executor._live_workers()
        assert len(workers) == 2 and all(w.process.poll() is None for w in workers)
    assert all(w.process.poll() is not None for w in workers)
