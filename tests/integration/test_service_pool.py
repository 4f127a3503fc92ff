"""Suggestion services kept between runtimes of one process (tune() in a notebook)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from katib import search
from katib.controller.runtime import Runtime
from katib.controller.service_pool import SHARED_POOL, SuggestionServicePool
from katib.sdk.tune import tune
from katib.testing.storage import make_experiment


def _alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next(line.split()[1] for line in status.splitlines() if line.startswith("State:"))
    return state != "Z"


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_next_runtime_takes_over_the_kept_service(tmp_path: Path) -> None:
    pool = SuggestionServicePool(idle_seconds=60)
    try:
        with Runtime(tmp_path / "a", service_pool=pool) as first:
            first.submit(make_experiment(name="one"))
            pid = first._services["random"].pid
            assert pid is not None
        assert pool.kept() == ["random"] and _alive(pid)  # given back, not killed
        with Runtime(tmp_path / "b", service_pool=pool) as second:
            second.submit(make_experiment(name="two"))
            service = second._services["random"]
            assert service.pid == pid
            reply = service.client().get_suggestions(make_experiment(name="two"), [], 2, 2)
            assert len(reply.assignments) == 2
            assert pool.kept() == []  # taken: a concurrent runtime would start its own
        assert pool.kept() == ["random"]
    finally:
        pool.close()
    assert pool.kept() == [] and _wait_gone(pid)


def test_a_kept_service_that_died_is_replaced(tmp_path: Path) -> None:
    pool = SuggestionServicePool(idle_seconds=60)
    try:
        with Runtime(tmp_path, service_pool=pool) as runtime:
            runtime.submit(make_experiment(name="one"))
            dead = runtime._services["random"].pid
        assert dead is not None
        os.kill(dead, 9)
        assert _wait_gone(dead)
        with Runtime(tmp_path, service_pool=pool) as runtime:
            runtime.submit(make_experiment(name="two"))  # validated by a new service
            fresh = runtime._services["random"].pid
        assert fresh is not None and fresh != dead and _alive(fresh)
    finally:
        pool.close()


def test_an_idle_service_is_killed_after_idle_seconds(tmp_path: Path) -> None:
    pool = SuggestionServicePool(idle_seconds=0.3)
    try:
        with Runtime(tmp_path, service_pool=pool) as runtime:
            runtime.submit(make_experiment())
            pid = runtime._services["random"].pid
        assert pid is not None and pool.kept() == ["random"]
        assert _wait_gone(pid, 10.0)
        assert pool.kept() == []
    finally:
        pool.close()


def test_a_pool_that_keeps_nothing_kills_on_close(tmp_path: Path) -> None:
    pool = SuggestionServicePool(idle_seconds=0)
    with Runtime(tmp_path, service_pool=pool) as runtime:
        runtime.submit(make_experiment())
        pid = runtime._services["random"].pid
    assert pid is not None and pool.kept() == [] and _wait_gone(pid)


def test_only_one_service_per_algorithm_is_kept(tmp_path: Path) -> None:
    pool = SuggestionServicePool(idle_seconds=60)
    try:
        first = Runtime(tmp_path / "a", service_pool=pool)
        second = Runtime(tmp_path / "b", service_pool=pool)
        first.submit(make_experiment(name="one"))
        second.submit(make_experiment(name="two"))
        pids = [first._services["random"].pid, second._services["random"].pid]
        assert None not in pids and pids[0] != pids[1]  # both busy: two services
        first.close()
        second.close()
        assert pool.kept() == ["random"]
        kept = pool._kept["random"].service.pid
        assert kept in pids and _alive(kept)
        (surplus,) = [p for p in pids if p != kept]
        assert surplus is not None and _wait_gone(surplus)  # the second one is closed
    finally:
        pool.close()


def test_consecutive_tune_calls_share_one_service(tmp_path: Path) -> None:
    def objective(params: dict[str, float]) -> float:
        return (params["x"] - 1.0) ** 2

    SHARED_POOL.close()
    try:
        results = []
        pids = []
        for name in ("first", "second"):
            results.append(
                tune(
                    name,
                    objective,
                    {"x": search.double(-3.0, 3.0)},
                    objective_type="minimize",
                    algorithm_name="tpe",
                    max_trial_count=14,  # past TPE's 10 random start-up trials
                    data_dir=tmp_path / name,
                    progress=False,
                )
            )
            assert SHARED_POOL.kept() == ["tpe"]
            kept = SHARED_POOL._kept["tpe"].service.pid
            assert kept is not None and _alive(kept)
            pids.append(kept)
        assert pids[0] == pids[1]
        for result in results:
            assert result.condition == "Succeeded" and len(result.trials) == 14
    finally:
        SHARED_POOL.close()
    assert SHARED_POOL.kept() == [] and all(_wait_gone(p) for p in pids)


def test_a_forked_child_leaves_the_parents_services_alone(tmp_path: Path) -> None:
    pool = SuggestionServicePool(idle_seconds=60)
    try:
        with Runtime(tmp_path, service_pool=pool) as runtime:
            runtime.submit(make_experiment())
            pid = runtime._services["random"].pid
        assert pid is not None
        child = os.fork()
        if child == 0:  # what a forked multiprocessing worker would do at its exit
            pool.close()
            os._exit(0)
        os.waitpid(child, 0)
        assert _alive(pid) and pool.kept() == ["random"]
    finally:
        pool.close()
    assert _wait_gone(pid)
