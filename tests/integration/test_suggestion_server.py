"""The suggestion service over real gRPC: contract, status codes, health, the CLI process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from katib.apis.grpc_errors import error_from_rpc
from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from katib.testing.algorithms import (
    AlgorithmContract,
    experiment_to_proto,
    make_experiment,
    realistic_specs,
    tiny_specs,
    trial_to_proto,
)
from suggestion_services.base import ExperimentInfo, TrialCondition, TrialRecord
from suggestion_services.registry import ALGORITHMS
from suggestion_services.search_space import ParameterSpec
from suggestion_services.server import serve

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server, port = serve(None, "127.0.0.1", 0)
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(ch).result(timeout=10)
    yield ch
    ch.close()
    server.stop(grace=None)


@pytest.fixture
def stub(channel: grpc.Channel) -> api_pb2_grpc.SuggestionStub:
    return api_pb2_grpc.SuggestionStub(channel)


@pytest.fixture(params=sorted(ALGORITHMS))
def algorithm_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestContractOverGrpc(AlgorithmContract):
    """The whole in-process contract, sent through a real server."""

    @pytest.fixture(autouse=True)
    def _stub(self, stub: api_pb2_grpc.SuggestionStub) -> None:
        self.stub = stub

    def call_suggest_with_settings(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> tuple[list[dict[str, str]], dict[str, str]]:
        request = api_pb2.GetSuggestionsRequest(
            experiment=experiment_to_proto(experiment),
            trials=[trial_to_proto(t) for t in trials],
            current_request_number=n,
            total_request_number=n + len(trials),
        )
        try:
            reply = self.stub.GetSuggestions(request, timeout=30)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, "GetSuggestions") from None
        assert reply.algorithm.algorithm_name == experiment.algorithm_name
        points = [{a.name: a.value for a in pa.assignments} for pa in reply.parameter_assignments]
        return points, {s.name: s.value for s in reply.algorithm.algorithm_settings}

    def test_caches_stay_bounded(self, algorithm_name: str) -> None:
        pytest.skip("the caches are the same objects in-process; tests/contract checks them")

    def call_validate(self, experiment: ExperimentInfo) -> None:
        request = api_pb2.ValidateAlgorithmSettingsRequest(
            experiment=experiment_to_proto(experiment))
        try:
            self.stub.ValidateAlgorithmSettings(request, timeout=10)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, "ValidateAlgorithmSettings") from None


def _code(call: grpc.RpcError) -> grpc.StatusCode:
    return call.code()  # type: ignore[attr-defined, no-any-return]


def test_status_codes(stub: api_pb2_grpc.SuggestionStub) -> None:
    exp = make_experiment("nope", realistic_specs(False))
    with pytest.raises(grpc.RpcError) as info:
        stub.ValidateAlgorithmSettings(
            api_pb2.ValidateAlgorithmSettingsRequest(experiment=experiment_to_proto(exp)))
    assert _code(info.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "unknown algorithm name nope"  # type: ignore[attr-defined]

    bad = make_experiment("random", [ParameterSpec("x", "double", "1", "2")])
    proto = experiment_to_proto(bad)
    proto.spec.parameter_specs.parameters[0].feasible_space.min = "3"
    with pytest.raises(grpc.RpcError) as info:
        stub.ValidateAlgorithmSettings(api_pb2.ValidateAlgorithmSettingsRequest(experiment=proto))
    assert _code(info.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "Param x: min (3)" in info.value.details()  # type: ignore[attr-defined]

    proto.spec.parameter_specs.parameters[0].feasible_space.min = "1"
    proto.spec.parameter_specs.parameters[0].parameter_type = api_pb2.UNKNOWN_TYPE
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSuggestions(api_pb2.GetSuggestionsRequest(experiment=proto,
                                                          current_request_number=1))
    assert _code(info.value) == grpc.StatusCode.INVALID_ARGUMENT

    tiny = make_experiment("grid", tiny_specs())
    request = api_pb2.GetSuggestionsRequest(experiment=experiment_to_proto(tiny),
                                            current_request_number=6)
    reply = stub.GetSuggestions(request)
    request.trials.extend(
        api_pb2.Trial(name=f"t{i}", spec=api_pb2.TrialSpec(
            parameter_assignments=api_pb2.TrialSpec.ParameterAssignments(
                assignments=pa.assignments)))
        for i, pa in enumerate(reply.parameter_assignments))
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSuggestions(request)
    assert _code(info.value) == grpc.StatusCode.OUT_OF_RANGE
    assert "grid search space exhausted" in info.value.details()  # type: ignore[attr-defined]


def test_zero_requested_returns_empty_reply(stub: api_pb2_grpc.SuggestionStub) -> None:
    exp = make_experiment("random", realistic_specs(False), {"random_state": "1"})
    reply = stub.GetSuggestions(api_pb2.GetSuggestionsRequest(
        experiment=experiment_to_proto(exp), current_request_number=0))
    assert len(reply.parameter_assignments) == 0
    assert reply.algorithm.algorithm_settings[0].name == "random_state"


def test_unexpected_exception_is_internal(
    stub: api_pb2_grpc.SuggestionStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(ALGORITHMS["random"], "suggest", boom)
    exp = make_experiment("random", realistic_specs(False))
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSuggestions(api_pb2.GetSuggestionsRequest(
            experiment=experiment_to_proto(exp), current_request_number=1), timeout=10)
    assert _code(info.value) == grpc.StatusCode.INTERNAL
    assert "ZeroDivisionError: oops" in info.value.details()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "service", ["", "api.v1.beta1.Suggestion", "manager.v1beta1.Suggestion",
                "grpc.health.v1.Health"])
def test_health(channel: grpc.Channel, service: str) -> None:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_cli_process_serves_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "suggestion_services", "--algorithm", "random", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"suggestion service 'random' listening on (\S+):(\d+)\n", line)
        assert match, line
        with grpc.insecure_channel(f"{match[1]}:{match[2]}") as ch:
            stub = api_pb2_grpc.SuggestionStub(ch)
            exp = make_experiment("random", realistic_specs(False), {"random_state": "1"})
            request = api_pb2.GetSuggestionsRequest(experiment=experiment_to_proto(exp),
                                                    current_request_number=2)
            request.experiment.spec.algorithm.algorithm_name = ""  # the default applies
            assert len(stub.GetSuggestions(request, timeout=10).parameter_assignments) == 2
            for service in ("", "api.v1.beta1.Suggestion", "manager.v1beta1.Suggestion"):
                health = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert health.status == health_pb2.HealthCheckResponse.SERVING, service
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_cli_unknown_algorithm() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "suggestion_services", "--algorithm", "nope", "--port", "0"],
        capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == "error: unknown algorithm name nope"


def test_request_above_grpc_default_4mb_limit(stub: api_pb2_grpc.SuggestionStub) -> None:
    """The whole history comes with every request; a long one must not be refused."""
    exp = make_experiment("grid", tiny_specs())
    request = api_pb2.GetSuggestionsRequest(experiment=experiment_to_proto(exp),
                                            current_request_number=1)
    huge = TrialRecord("huge", {"a": "1", "b": "x" * (5 << 20)}, TrialCondition.FAILED)
    request.trials.append(trial_to_proto(huge))
    assert request.ByteSize() > 4 << 20
    reply = stub.GetSuggestions(request, timeout=30)
    assert len(reply.parameter_assignments) == 1


def test_unparseable_trial_is_invalid_argument(channel: grpc.Channel) -> None:
    """Trials are parsed lazily (only when an algorithm reads them): a broken one is
    still reported as the caller's error, naming the trial."""
    exp = make_experiment("grid", tiny_specs())
    good = api_pb2.GetSuggestionsRequest(experiment=experiment_to_proto(exp),
                                         current_request_number=1)
    broken = good.SerializeToString() + b"\x12\x02\x0a\x05"  # trials[0]: a name cut short
    call = channel.unary_unary(
        "/api.v1.beta1.Suggestion/GetSuggestions",
        request_serializer=lambda raw: raw,
        response_deserializer=api_pb2.GetSuggestionsReply.FromString,
    )
    with pytest.raises(grpc.RpcError) as info:
        call(broken, timeout=10)
    assert _code(info.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "trials[0] cannot be parsed" in info.value.details()  # type: ignore[attr-defined]
