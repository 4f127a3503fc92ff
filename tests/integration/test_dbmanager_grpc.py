"""The DBManager gRPC service on a real server at 127.0.0.1:0, over every storage backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from katib.errors import UnavailableError
from katib.storage.base import BaseStorage
from katib.storage.dbmanager import serve_dbmanager
from katib.storage.tables import format_rfc3339nano


@pytest.fixture
def channel(storage: BaseStorage) -> Iterator[grpc.Channel]:
    server, port = serve_dbmanager(storage, "127.0.0.1", 0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch
    finally:
        server.stop(None).wait(5)


@pytest.fixture
def stub(channel: grpc.Channel) -> api_pb2_grpc.DBManagerStub:
    return api_pb2_grpc.DBManagerStub(channel)


def log(*entries: tuple[str, str, str]) -> api_pb2.ObservationLog:
    """(time_stamp, name, value) triples as an ObservationLog."""
    return api_pb2.ObservationLog(
        metric_logs=[
            api_pb2.MetricLog(time_stamp=ts, metric=api_pb2.Metric(name=n, value=v))
            for ts, n, v in entries
        ]
    )


def triples(reply: api_pb2.GetObservationLogReply) -> list[tuple[str, str, str]]:
    logs = reply.observation_log.metric_logs
    return [(m.time_stamp, m.metric.name, m.metric.value) for m in logs]


def test_report_get_delete_round_trip(stub: api_pb2_grpc.DBManagerStub) -> None:
    stub.ReportObservationLog(
        api_pb2.ReportObservationLogRequest(
            trial_name="exp-abc",
            observation_log=log(
                ("2024-03-04T17:55:09Z", "accuracy", "0.9"),
                ("2024-03-04T19:55:08.123456789+02:00", "accuracy", "0.8"),
                ("2024-03-04T17:55:08.5Z", "loss", "0.3"),
                ("", "loss", "skipped: no time"),
                ("0001-01-01T00:00:00Z", "accuracy", "unavailable"),
            ),
        ),
        timeout=10,
    )
    reply = stub.GetObservationLog(
        api_pb2.GetObservationLogRequest(trial_name="exp-abc"), timeout=10
    )
    assert triples(reply) == [
        ("0001-01-01T00:00:00Z", "accuracy", "unavailable"),
        ("2024-03-04T17:55:08.123456Z", "accuracy", "0.8"),
        ("2024-03-04T17:55:08.5Z", "loss", "0.3"),
        ("2024-03-04T17:55:09Z", "accuracy", "0.9"),
    ]
    only_acc = stub.GetObservationLog(
        api_pb2.GetObservationLogRequest(
            trial_name="exp-abc",
            metric_name="accuracy",
            start_time="2024-03-04T17:55:08.123456Z",
            end_time="2024-03-04T18:55:09+01:00",
        ),
        timeout=10,
    )
    assert [v for _, _, v in triples(only_acc)] == ["0.8", "0.9"]

    stub.DeleteObservationLog(api_pb2.DeleteObservationLogRequest(trial_name="exp-abc"), timeout=10)
    empty = stub.GetObservationLog(api_pb2.GetObservationLogRequest(trial_name="exp-abc"))
    assert triples(empty) == []


def test_bad_timestamp_is_invalid_argument_and_stores_nothing(
    stub: api_pb2_grpc.DBManagerStub,
) -> None:
    request = api_pb2.ReportObservationLogRequest(
        trial_name="t",
        observation_log=log(("2024-03-04T17:55:09Z", "acc", "1"), ("yesterday", "acc", "2")),
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.ReportObservationLog(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metric_logs[1]" in (info.value.details() or "")
    assert triples(stub.GetObservationLog(api_pb2.GetObservationLogRequest(trial_name="t"))) == []

    with pytest.raises(grpc.RpcError) as info:
        stub.GetObservationLog(
            api_pb2.GetObservationLogRequest(trial_name="t", start_time="2024-13-01T00:00:00Z")
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "start_time" in (info.value.details() or "")


def test_empty_trial_name_is_invalid_argument(stub: api_pb2_grpc.DBManagerStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ReportObservationLog(
            api_pb2.ReportObservationLogRequest(
                observation_log=log(("2024-03-04T17:55:09Z", "a", "1"))
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "api.v1.beta1.DBManager", "grpc.health.v1.Health"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


class _DownStorage:
    """Stands in for a storage whose database is unreachable."""

    def get_observation_log(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise UnavailableError("cannot reach database postgresql://u:***@db/katib")

    def report_observation_log(self, trial_name: str, entries: Any) -> None:
        raise UnavailableError("cannot reach database")


def test_storage_errors_map_to_status_codes() -> None:
    server, port = serve_dbmanager(_DownStorage(), port=0)  # type: ignore[arg-type]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = api_pb2_grpc.DBManagerStub(ch)
            with pytest.raises(grpc.RpcError) as info:
                stub.GetObservationLog(api_pb2.GetObservationLogRequest(trial_name="t"), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "***" in (info.value.details() or "")
    finally:
        server.stop(None).wait(5)


def test_many_entries_in_one_report(stub: api_pb2_grpc.DBManagerStub) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    entries = [
        (format_rfc3339nano(base + timedelta(seconds=i)), "loss", str(i)) for i in range(2000)
    ]
    stub.ReportObservationLog(
        api_pb2.ReportObservationLogRequest(trial_name="big", observation_log=log(*entries)),
        timeout=30,
    )
    reply = stub.GetObservationLog(
        api_pb2.GetObservationLogRequest(trial_name="big", metric_name="loss"), timeout=30
    )
    assert [v for _, _, v in triples(reply)] == [str(i) for i in range(2000)]
