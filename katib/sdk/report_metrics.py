"""`report_metrics`: a trial program pushes its metrics straight to DBManager.

Use with `metricsCollectorSpec.collector.kind: Push` (Katib's push collector,
formerly kind `None`). The trial name comes from `KATIB_TRIAL_NAME`, which every
executor sets; the DBManager address from the argument, else the file or address
the executor passes in the environment, else Katib's in-cluster default.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from katib.errors import InvalidArgumentError

#: Katib's in-cluster default (kubeflow namespace).
DEFAULT_DB_MANAGER_ADDRESS = "katib-db-manager.kubeflow:6789"
ENV_TRIAL_NAME = "KATIB_TRIAL_NAME"
ENV_DB_MANAGER_ADDRESS = "KATIB_DB_MANAGER_ADDRESS"
#: A file holding the current address (the embedded runtime rewrites it when it restarts).
ENV_DB_MANAGER_ADDRESS_FILE = "KATIB_DB_MANAGER_ADDRESS_FILE"


def _address(explicit: str | None) -> str:
    if explicit:
        return explicit
    path = os.environ.get(ENV_DB_MANAGER_ADDRESS_FILE)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError:
            text = ""
        if text:
            return text.splitlines()[0].strip()
    return os.environ.get(ENV_DB_MANAGER_ADDRESS) or DEFAULT_DB_MANAGER_ADDRESS


def _timestamp() -> str:
    # Nanosecond-style RFC3339 with microseconds: repeated calls within one second
    # keep their order (Katib's second precision makes them collide).
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def report_metrics(
    metrics: Mapping[str, Any],
    db_manager_address: str | None = None,
    timeout: float = 120,
) -> None:
    """Record one observation per metric for the current trial, all at the same time.

    Raises InvalidArgumentError (a ValueError in Katib) when the trial name is not
    in the environment or a value is not a number, before anything is sent.
    """
    trial_name = os.environ.get(ENV_TRIAL_NAME)
    if not trial_name:
        raise InvalidArgumentError(
            f"The Trial name is not passed to environment variables ({ENV_TRIAL_NAME} is unset)"
        )
    if not metrics:
        raise InvalidArgumentError("report_metrics: no metrics given")
    entries: list[tuple[str, str, str]] = []
    stamp = _timestamp()
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"report_metrics: metric name {name!r} is not a string")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"report_metrics: value of {name} ({value!r}) is not a number"
            ) from None
        text = repr(number) if math.isfinite(number) else str(number)
        entries.append((name, text, stamp))

    from katib.apis.dbmanager_client import report_observation_log  # grpc only when used

    report_observation_log(_address(db_manager_address), trial_name, entries, timeout)
