"""Trial routes: one trial, its observation log (Katib's observation_logs rows) and its output."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse

from katib import errors
from katib.controller.runtime import Runtime
from katib.server.app import runtime_of
from katib.storage.tables import format_rfc3339nano

router = APIRouter(tags=["trials"])

RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
#: A log larger than this is served from its end (the first bytes are dropped).
MAX_LOG_BYTES = 8 * 1024 * 1024


@router.get("/namespaces/{namespace}/trials/{trial}")
def get_trial(namespace: str, trial: str, runtime: RuntimeDep) -> dict[str, Any]:
    """The trial: metadata, spec (parameter assignments, rendered run spec) and status."""
    return runtime.storage.get_trial(trial, namespace).to_dict()


@router.get("/namespaces/{namespace}/trials/{trial}/observations")
def observations(
    namespace: str,
    trial: str,
    runtime: RuntimeDep,
    metric: Annotated[str | None, Query(description="Only this metric.")] = None,
) -> dict[str, Any]:
    """Every reported value in time order: {metricName, value, timestamp, step}."""
    runtime.storage.get_trial(trial, namespace)  # NotFoundError names the trial
    entries = runtime.storage.get_observation_log(trial, metric or None)
    return {
        "items": [
            {
                "metricName": e.metric_name,
                "value": e.value,
                "timestamp": format_rfc3339nano(e.timestamp),
                "step": e.step,
            }
            for e in entries
        ]
    }


def _read_tail(path: Path, tail: int | None) -> str:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if size > MAX_LOG_BYTES:
            handle.seek(size - MAX_LOG_BYTES)
            handle.readline()  # drop the partial first line
        data = handle.read()
    text = data.decode("utf-8", errors="replace")
    if tail is None:
        return text
    lines = deque(text.splitlines(keepends=True), maxlen=tail)
    return "".join(lines)


@router.get("/namespaces/{namespace}/trials/{trial}/logs", response_class=PlainTextResponse)
def logs(
    namespace: str,
    trial: str,
    runtime: RuntimeDep,
    tail: Annotated[int | None, Query(ge=0, description="Only the last N lines.")] = None,
) -> PlainTextResponse:
    """The trial's stdout and stderr as text (the last 8 MiB at most)."""
    record = runtime.storage.get_trial(trial, namespace)
    log_path = getattr(runtime.executor, "log_path", None)
    if log_path is None:
        raise errors.NotFoundError(
            f"the {getattr(runtime.executor, 'name', '')} executor keeps no trial logs here"
        )
    path = Path(log_path(record))
    if not path.exists():
        if record.is_completed:  # it ended without printing anything
            return PlainTextResponse("")
        raise errors.NotFoundError(f"trial {namespace}/{trial} has no log yet")
    return PlainTextResponse(_read_tail(path, tail))
