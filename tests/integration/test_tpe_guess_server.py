"""TPE's guessed answers through a real gRPC server: computed once the reply is sent,
used by the next request, equal to the answers computed afresh."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest

from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from katib.testing.algorithms import experiment_to_proto, make_experiment, trial_to_proto
from suggestion_services import tpe_model
from suggestion_services.base import ObjectiveType, TrialCondition, TrialRecord
from suggestion_services.experiment_cache import clear_all_caches
from suggestion_services.search_space import ParameterSpec
from suggestion_services.server import serve
from suggestion_services.tpe import TPE

SPECS = [ParameterSpec("x", "double", "-10", "10"), ParameterSpec("y", "double", "-10", "10")]
EXPERIMENT = replace(
    make_experiment("tpe", SPECS, {"random_state": "7", "n_startup_trials": "5"}),
    objective_type=ObjectiveType.MINIMIZE,
)
STEPS = 60


def loss(point: dict[str, str]) -> float:
    return (float(point["x"]) - 2) ** 2 + (float(point["y"]) + 1) ** 2


def settle() -> None:
    tpe_model._GUESSER.submit(lambda: None).result(timeout=30)


@pytest.fixture
def stub() -> Iterator[api_pb2_grpc.SuggestionStub]:
    clear_all_caches()
    server, port = serve("tpe", "127.0.0.1", 0)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=10)
    yield api_pb2_grpc.SuggestionStub(channel)
    channel.close()
    server.stop(grace=None)
    clear_all_caches()


def afresh() -> list[dict[str, str]]:
    """The sequence a sequential experiment gets when every answer is computed with
    nothing cached (so no guess exists)."""
    history: list[TrialRecord] = []
    for i in range(STEPS):
        clear_all_caches()
        point = TPE().suggest(EXPERIMENT, history, 1)[0].assignments
        settle()
        history.append(TrialRecord(f"t{i}", point, TrialCondition.SUCCEEDED, loss(point)))
    clear_all_caches()
    return [dict(t.assignments) for t in history]


def test_the_server_answers_from_guesses_what_it_computes_afresh(
    stub: api_pb2_grpc.SuggestionStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = afresh()
    outcomes: list[bool] = []
    original = tpe_model._Guess.answers

    def answers(self: tpe_model._Guess, *args: object) -> bool:
        outcomes.append(original(self, *args))  # type: ignore[arg-type]
        return outcomes[-1]

    monkeypatch.setattr(tpe_model._Guess, "answers", answers)
    history: list[TrialRecord] = []
    for i in range(STEPS):
        request = api_pb2.GetSuggestionsRequest(
            experiment=experiment_to_proto(EXPERIMENT),
            trials=[trial_to_proto(t) for t in history],
            current_request_number=1,
            total_request_number=len(history) + 1,
        )
        reply = stub.GetSuggestions(request, timeout=30)
        point = {a.name: a.value for a in reply.parameter_assignments[0].assignments}
        assert point == expected[i], f"request {i}"
        time.sleep(0.02)  # the guess starts once the RPC has ended, on the server's thread
        settle()
        history.append(TrialRecord(f"t{i}", point, TrialCondition.SUCCEEDED, loss(point)))
    assert outcomes.count(True) > 10, outcomes
