"""A small DBManager client for code outside the servers (trial programs, the SDK).

It lives beside the wire format because it is wire code: the SDK and trial
programs call it without importing grpc themselves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import grpc

from katib.apis.grpc_errors import error_from_rpc
from katib.apis.v1beta1 import api_pb2, api_pb2_grpc

#: (metric name, value text, RFC3339Nano timestamp)
LogEntry = tuple[str, str, str]
#: The server's token, when it has one (the local executor gives it to trials).
TOKEN_ENV = "KATIB_TOKEN"


def auth_metadata(token: str | None = None) -> list[tuple[str, str]]:
    """gRPC metadata carrying the token (argument, else $KATIB_TOKEN); empty without one."""
    token = token if token is not None else os.environ.get(TOKEN_ENV, "").strip()
    return [("authorization", f"Bearer {token}")] if token else []


def report_observation_log(
    address: str,
    trial_name: str,
    entries: Sequence[LogEntry],
    timeout: float,
    token: str | None = None,
) -> None:
    """One ReportObservationLog call; failures raise errors from katib.errors."""
    request = api_pb2.ReportObservationLogRequest(
        trial_name=trial_name,
        observation_log=api_pb2.ObservationLog(
            metric_logs=[
                api_pb2.MetricLog(time_stamp=ts, metric=api_pb2.Metric(name=n, value=v))
                for n, v, ts in entries
            ]
        ),
    )
    with grpc.insecure_channel(address) as channel:
        stub = api_pb2_grpc.DBManagerStub(channel)
        try:
            stub.ReportObservationLog(
                request, timeout=timeout, wait_for_ready=True, metadata=auth_metadata(token)
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, f"ReportObservationLog to {address}") from None


def get_observation_log(
    address: str,
    trial_name: str,
    metric_name: str = "",
    timeout: float = 30.0,
    token: str | None = None,
) -> list[LogEntry]:
    """All rows of a trial (optionally one metric), in storage order."""
    request = api_pb2.GetObservationLogRequest(trial_name=trial_name, metric_name=metric_name)
    with grpc.insecure_channel(address) as channel:
        stub = api_pb2_grpc.DBManagerStub(channel)
        try:
            reply = stub.GetObservationLog(
                request, timeout=timeout, wait_for_ready=True, metadata=auth_metadata(token)
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, f"GetObservationLog from {address}") from None
    return [
        (m.metric.name, m.metric.value, m.time_stamp) for m in reply.observation_log.metric_logs
    ]
