"""`python -m suggestion_services --algorithm tpe` answers while its warm-up imports.

The service prints its listening line before TPE's model phase is
imported, then imports it in a background thread. Requests sent at once, model-based
ones included, must wait for that import (no deadlock, no error) and get the
answers an in-process algorithm gives; a stop during the warm-up exits cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from katib.testing.algorithm_histories import finished, sampled_points
from katib.testing.algorithms import experiment_to_proto, make_experiment, trial_to_proto
from suggestion_services.base import TrialCondition, TrialRecord
from suggestion_services.experiment_cache import clear_all_caches
from suggestion_services.registry import get_algorithm
from suggestion_services.search_space import ParameterSpec

LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")
SPECS = [ParameterSpec("x", "double", "0", "1"), ParameterSpec("y", "double", "-1", "1"),
         ParameterSpec("n", "int", "1", "6")]


def spawn(algorithm: str) -> tuple[subprocess.Popen[bytes], str]:
    """The service as the embedded controller starts it; returns it and its address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "suggestion_services", "--algorithm", algorithm,
         "--host", "127.0.0.1", "--port", "0", "--exit-with-parent"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    match = LISTENING.search(process.stdout.readline().decode())
    assert match, "no listening line"
    return process, f"{match.group(1)}:{match.group(2)}"


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def history(n: int, seed: int) -> list[TrialRecord]:
    """n trials with values, mostly Succeeded (the model phase once 10 are observed)."""
    space = make_experiment("tpe", SPECS).search_space
    return [finished(TrialRecord(f"t{i}", p, TrialCondition.RUNNING), i, SPECS, i % 6 != 5)
            for i, p in enumerate(sampled_points(space, n, seed=seed))]


def expected(algorithm: str, trials: list[TrialRecord], n: int) -> list[dict[str, str]]:
    """What the algorithm answers in this process (the caches cleared: a cold answer)."""
    clear_all_caches()
    exp = make_experiment(algorithm, SPECS, {"random_state": "7"}, name=f"warm-{algorithm}")
    return [s.assignments for s in get_algorithm(algorithm)().suggest(exp, trials, n)]


def ask(address: str, algorithm: str, trials: list[TrialRecord], n: int) -> list[dict[str, str]]:
    """Validate, then GetSuggestions, on a channel of its own (as a fresh controller)."""
    exp = make_experiment(algorithm, SPECS, {"random_state": "7"}, name=f"warm-{algorithm}")
    with grpc.insecure_channel(address) as channel:
        stub = api_pb2_grpc.SuggestionStub(channel)
        message = experiment_to_proto(exp)
        stub.ValidateAlgorithmSettings(
            api_pb2.ValidateAlgorithmSettingsRequest(experiment=message), timeout=60)
        request = api_pb2.GetSuggestionsRequest(experiment=message, current_request_number=n)
        request.trials.extend(trial_to_proto(t) for t in trials)
        reply = stub.GetSuggestions(request, timeout=60)
    return [{a.name: a.value for a in pa.assignments} for pa in reply.parameter_assignments]


@pytest.mark.parametrize("algorithm", ["tpe", "multivariate-tpe"])
def test_requests_sent_at_once_wait_for_the_warm_up_and_answer_as_in_process(
    algorithm: str, stop: list[subprocess.Popen[bytes]]
) -> None:
    process, address = spawn(algorithm)
    stop.append(process)
    # Model-based (>10 observed) and start-up requests for the service's algorithm, and
    # requests naming other algorithms whose imports (scipy) overlap the warm-up's.
    calls = [(algorithm, history(14, 1), 3), (algorithm, history(25, 2), 2),
             (algorithm, history(3, 3), 2), (algorithm, [], 4),
             ("bayesianoptimization", history(6, 4), 1), ("sobol", history(4, 5), 2),
             ("random", history(2, 6), 2)]
    with ThreadPoolExecutor(len(calls)) as pool:
        replies = list(pool.map(lambda c: ask(address, *c), calls))
    for (name, trials, n), reply in zip(calls, replies, strict=True):
        assert reply == expected(name, trials, n), name
    assert process.poll() is None


def test_a_stop_during_the_warm_up_exits_cleanly(stop: list[subprocess.Popen[bytes]]) -> None:
    process, _ = spawn("tpe")
    stop.append(process)
    process.send_signal(signal.SIGTERM)  # the warm-up thread is importing by now
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()
    assert b"Traceback" not in err
