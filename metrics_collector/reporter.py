"""Batched, retrying delivery of parsed metrics to the DBManager over gRPC.

Katib's collector reports once, at the end, and a failure loses everything. Here a
background thread streams batches while the trial runs and retries with backoff, so a
controller restart (possibly on another port, published in an address file) loses
nothing. Whatever cannot be delivered ends up in ``unreported.jsonl`` for the
controller to ingest later. This is the only module of the package that imports gRPC.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import grpc

from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from metrics_collector.parsers import ParsedMetric, format_rfc3339nano
from metrics_collector.result import unreported_record

log = logging.getLogger("metrics_collector.reporter")

#: Codes where resending the same batch can never succeed; the batch goes to the spool.
_PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)

# Keep gRPC's own reconnect backoff in line with ours (its default grows to 120 s).
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5000),
]

_Entry = tuple[str, str, str]  # (metric_name, value, time_stamp RFC3339Nano)


class Reporter:
    """Buffers metrics and ships them in batches from a background thread."""

    def __init__(
        self,
        trial_name: str,
        address: str | None,
        address_file: str | Path | None = None,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_buffer: int = 100_000,
        *,
        spool_path: str | Path | None = None,
        rpc_timeout: float = 5.0,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        self.trial_name = trial_name
        self.batch_size = max(1, batch_size)
        self.flush_interval = max(0.01, flush_interval)
        self.max_buffer = max(self.batch_size, max_buffer)
        self.spool_path = Path(spool_path) if spool_path is not None else Path("unreported.jsonl")
        self.rpc_timeout = rpc_timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._address_file = Path(address_file) if address_file else None
        self._address = self._read_address_file() or (address or "")
        # The server's token (KATIB_TOKEN, set by the executor) when DBManager needs one.
        token = os.environ.get("KATIB_TOKEN", "").strip()
        self._metadata = [("authorization", f"Bearer {token}")] if token else []

        self.delivered = 0
        self.unreported_count = 0

        self._buffer: deque[_Entry] = deque()
        self._inflight: list[_Entry] = []
        self._cond = threading.Condition()
        self._spool_lock = threading.Lock()
        self._closing = False
        self._deadline: float | None = None
        self._channel: grpc.Channel | None = None
        self._stub: api_pb2_grpc.DBManagerStub | None = None
        self._thread = threading.Thread(target=self._run, name="katib-reporter", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """The DBManager address currently in use."""
        return self._address

    @property
    def unreported_path(self) -> Path | None:
        """The spool file, if anything had to be written to it."""
        return self.spool_path if self.unreported_count else None

    def add(self, metrics: Iterable[ParsedMetric]) -> None:
        """Queue metrics; never blocks on the network and never drops anything."""
        entries = [(m.name, m.value, format_rfc3339nano(m.timestamp)) for m in metrics]
        if not entries:
            return
        spill: list[_Entry] = []
        with self._cond:
            self._buffer.extend(entries)
            excess = len(self._buffer) - self.max_buffer
            if excess > 0:
                # Spill a tenth at once so a sustained overflow does not open the file per line.
                n = min(len(self._buffer), max(excess, self.max_buffer // 10))
                spill = [self._buffer.popleft() for _ in range(n)]
            if len(self._buffer) >= self.batch_size:
                self._cond.notify()
        if spill:
            log.warning(
                "buffer over %d entries: spooled %d to %s",
                self.max_buffer,
                len(spill),
                self.spool_path,
            )
            self._spool(spill)

    def close(self, timeout: float = 10.0) -> int:
        """Final flush bounded by ``timeout``; spool whatever is left. Returns the count spooled."""
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + max(0.0, timeout)
            self._cond.notify_all()
        self._thread.join(timeout + 1.0)
        with self._cond:
            leftovers = self._inflight + list(self._buffer)
            self._inflight = []
            self._buffer.clear()
        if leftovers:
            log.warning(
                "%d metric(s) not delivered; written to %s", len(leftovers), self.spool_path
            )
            self._spool(leftovers)
        if self._channel is not None:
            self._channel.close()
        return len(leftovers)

    # -- background thread -------------------------------------------------------

    def _run(self) -> None:
        """Send a full batch at once; send a partial one when flush_interval has passed."""
        next_flush = time.monotonic() + self.flush_interval
        while True:
            with self._cond:
                while not self._closing and len(self._buffer) < self.batch_size:
                    remaining = next_flush - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._closing and (not self._buffer or self._expired()):
                    return
                if not self._buffer:
                    next_flush = time.monotonic() + self.flush_interval
                    continue
                n = min(self.batch_size, len(self._buffer))
                self._inflight = [self._buffer.popleft() for _ in range(n)]
                batch = self._inflight
                if not self._buffer:
                    next_flush = time.monotonic() + self.flush_interval
            if not self._send_with_retry(batch):
                return  # deadline passed; close() spools the in-flight batch
            with self._cond:
                self._inflight = []

    def _expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _send_with_retry(self, batch: list[_Entry]) -> bool:
        """True once the batch is delivered (or spooled as undeliverable)."""
        delay = self.initial_backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                self._send(batch)
                self.delivered += len(batch)
                if attempt > 1:
                    log.info(
                        "delivered %d metric(s) to %s after %d attempts",
                        len(batch),
                        self._address,
                        attempt,
                    )
                return True
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                if code in _PERMANENT:
                    log.error(
                        "DBManager rejected %d metric(s) (%s: %s); spooling them",
                        len(batch),
                        code,
                        detail,
                    )
                    self._spool(batch)
                    return True
                log.warning(
                    "report to %s failed (attempt %d, %s: %s); retry in %.1fs",
                    self._address or "<no address>",
                    attempt,
                    code,
                    detail,
                    delay,
                )
                self._reset_channel()
            except ValueError as exc:  # e.g. a malformed address
                log.warning("report to %r failed: %s", self._address, exc)
                self._reset_channel()
            with self._cond:
                if self._expired():
                    return False
                wait = delay
                if self._deadline is not None:
                    wait = min(wait, max(0.0, self._deadline - time.monotonic()))
                self._cond.wait(wait)
                if self._expired():
                    return False
            delay = min(delay * 2, self.max_backoff)
            new = self._read_address_file()
            if new and new != self._address:
                log.info("DBManager address changed: %s -> %s", self._address, new)
                self._address = new

    def _send(self, batch: list[_Entry]) -> None:
        if not self._address:
            raise ValueError("no DBManager address")
        if self._stub is None:
            self._channel = grpc.insecure_channel(self._address, options=_CHANNEL_OPTIONS)
            self._stub = api_pb2_grpc.DBManagerStub(self._channel)
        timeout = self.rpc_timeout
        if self._deadline is not None:
            timeout = max(0.05, min(timeout, self._deadline - time.monotonic()))
        request = api_pb2.ReportObservationLogRequest(
            trial_name=self.trial_name,
            observation_log=api_pb2.ObservationLog(
                metric_logs=[
                    api_pb2.MetricLog(time_stamp=ts, metric=api_pb2.Metric(name=n, value=v))
                    for n, v, ts in batch
                ]
            ),
        )
        self._stub.ReportObservationLog(request, timeout=timeout, metadata=self._metadata)

    def _reset_channel(self) -> None:
        """Drop the channel so the next attempt reconnects at once (maybe elsewhere)."""
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._stub = None

    def _read_address_file(self) -> str | None:
        if self._address_file is None:
            return None
        try:
            text = self._address_file.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return text.splitlines()[0].strip() if text else None

    def _spool(self, entries: list[_Entry]) -> None:
        with self._spool_lock:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spool_path, "a", encoding="utf-8") as fh:
                fh.write("".join(unreported_record(n, v, ts) + "\n" for n, v, ts in entries))
                fh.flush()
            self.unreported_count += len(entries)
