"""Katib's DBManager gRPC service (`api.v1.beta1.DBManager`) on top of any BaseStorage.

Wire behaviour follows Katib's db-manager: RFC3339(Nano) times in, microsecond
storage, UTC RFC3339Nano out, values kept as text, entries with an empty
time_stamp skipped. Unlike Katib, errors carry meaningful status codes (through
katib.apis.grpc_errors) instead of UNKNOWN with a driver message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent import futures
from datetime import datetime
from typing import NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from katib.apis.grpc_errors import grpc_code_for
from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from katib.errors import InvalidArgumentError, KatibError
from katib.storage.base import BaseStorage, MetricLogEntry
from katib.storage.tables import format_rfc3339nano, parse_rfc3339

log = logging.getLogger(__name__)

SERVICE_NAME = "api.v1.beta1.DBManager"
HEALTH_SERVICE_NAMES = ("", SERVICE_NAME, "grpc.health.v1.Health")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    context.abort(grpc_code_for(exc), str(exc) or type(exc).__name__)
    raise AssertionError("unreachable")  # context.abort always raises


class DBManagerServicer(api_pb2_grpc.DBManagerServicer):
    """Serves observation logs from `storage`; one storage transaction per call."""

    def __init__(self, storage: BaseStorage) -> None:
        self.storage = storage

    def ReportObservationLog(
        self, request: api_pb2.ReportObservationLogRequest, context: grpc.ServicerContext
    ) -> api_pb2.ReportObservationLogReply:
        try:
            if not request.trial_name:
                raise InvalidArgumentError("trial_name must not be empty")
            entries: list[MetricLogEntry] = []
            for i, ml in enumerate(request.observation_log.metric_logs):
                if not ml.time_stamp:
                    continue  # Katib skips entries without a time
                try:
                    ts = parse_rfc3339(ml.time_stamp)
                except ValueError:
                    raise InvalidArgumentError(
                        f"observation_log.metric_logs[{i}].time_stamp: "
                        f"{ml.time_stamp!r} is not an RFC3339 time"
                    ) from None
                if not ml.metric.name:
                    raise InvalidArgumentError(
                        f"observation_log.metric_logs[{i}].metric.name must not be empty"
                    )
                entries.append(
                    MetricLogEntry(metric_name=ml.metric.name, value=ml.metric.value, timestamp=ts)
                )
            self.storage.report_observation_log(request.trial_name, entries)
        except KatibError as exc:
            _abort(context, exc)
        except Exception as exc:  # a bug: say so, as INTERNAL rather than UNKNOWN
            log.exception("DBManager call failed")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
        return api_pb2.ReportObservationLogReply()

    def GetObservationLog(
        self, request: api_pb2.GetObservationLogRequest, context: grpc.ServicerContext
    ) -> api_pb2.GetObservationLogReply:
        try:
            start = _optional_time("start_time", request.start_time)
            end = _optional_time("end_time", request.end_time)
            entries = self.storage.get_observation_log(
                request.trial_name, request.metric_name or None, start, end
            )
        except KatibError as exc:
            _abort(context, exc)
        except Exception as exc:  # a bug: say so, as INTERNAL rather than UNKNOWN
            log.exception("DBManager call failed")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
        return api_pb2.GetObservationLogReply(
            observation_log=api_pb2.ObservationLog(
                metric_logs=[
                    api_pb2.MetricLog(
                        time_stamp=format_rfc3339nano(e.timestamp),
                        metric=api_pb2.Metric(name=e.metric_name, value=e.value),
                    )
                    for e in entries
                ]
            )
        )

    def DeleteObservationLog(
        self, request: api_pb2.DeleteObservationLogRequest, context: grpc.ServicerContext
    ) -> api_pb2.DeleteObservationLogReply:
        try:
            if not request.trial_name:
                raise InvalidArgumentError("trial_name must not be empty")
            self.storage.delete_observation_log(request.trial_name)
        except KatibError as exc:
            _abort(context, exc)
        except Exception as exc:  # a bug: say so, as INTERNAL rather than UNKNOWN
            log.exception("DBManager call failed")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
        return api_pb2.DeleteObservationLogReply()


def _optional_time(field: str, text: str) -> datetime | None:
    """None for an empty field, else the parsed time; InvalidArgumentError naming the field."""
    if not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise InvalidArgumentError(f"{field}: {text!r} is not an RFC3339 time") from None


def add_health(server: grpc.Server) -> health.HealthServicer:
    """Register grpc.health.v1 answering SERVING for the DBManager and the overall server."""
    servicer = health.HealthServicer()
    for name in HEALTH_SERVICE_NAMES:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


def serve_dbmanager(
    storage: BaseStorage,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_workers: int = 8,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> tuple[grpc.Server, int]:
    """Start a DBManager (plus health) gRPC server; returns it and the bound port.

    Port 0 picks a free port. Stop it with `server.stop(grace)`; the storage stays open.
    `interceptors` run before every call (the server's token check is one).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dbmanager"),
        interceptors=list(interceptors),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    api_pb2_grpc.add_DBManagerServicer_to_server(DBManagerServicer(storage), server)
    add_health(server)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"DBManager could not bind {address}")
    server.start()
    log.info("DBManager serving on %s:%d", host, bound)
    return server, bound
