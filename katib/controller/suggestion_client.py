"""The controller's side of the Suggestion gRPC contract, and the local service process.

Embedded mode starts one suggestion service process per run and talks to it
over 127.0.0.1 like Katib's controller talks to its per-experiment Deployment.
If the process dies, the next call starts a new one: the service is stateless,
so nothing is lost.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from katib import errors
from katib.api.models import Experiment, Trial
from katib.apis.grpc_errors import error_from_rpc
from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from katib.controller.conversion import TrialBytesCache, experiment_to_pb, varint

_LISTENING = re.compile(r"listening on (\S+):(\d+)")
SUGGESTION_TIMEOUT_SECONDS = 60.0
VALIDATE_TIMEOUT_SECONDS = 30.0
GET_SUGGESTIONS_METHOD = "/api.v1.beta1.Suggestion/GetSuggestions"

_EXPERIMENT_TAG = b"\x0a"  # GetSuggestionsRequest.experiment = 1, length-delimited
_CURRENT_TAG = b"\x20"  # current_request_number = 4, varint
_TOTAL_TAG = b"\x28"  # total_request_number = 5, varint


def suggestions_request_bytes(
    experiment: api_pb2.Experiment | bytes,
    trial_records: Sequence[bytes],
    current: int,
    total: int,
) -> bytes:
    """A serialized GetSuggestionsRequest, put together from already serialized parts.

    `trial_records` are framed `trials` fields (`frame_trial`, as `TrialBytesCache`
    keeps them). Protobuf encodes a message as the concatenation of its fields, so the
    request is the experiment record, the trial records and the two numbers (left out
    when zero, like SerializeToString): one join, which keeps a 10,000-trial request
    at a fraction of a millisecond.
    """
    exp = experiment if isinstance(experiment, bytes) else experiment.SerializeToString()
    tail = b""
    if current:
        tail += _CURRENT_TAG + varint(current)
    if total:
        tail += _TOTAL_TAG + varint(total)
    return b"".join((_EXPERIMENT_TAG + varint(len(exp)) + exp, *trial_records, tail))


def _as_is(data: bytes) -> bytes:
    """Request serializer for requests that are bytes already."""
    return data


@dataclass
class SuggestionReply:
    assignments: list[dict[str, str]]
    trial_names: list[str | None]
    labels: list[dict[str, str]]
    settings: list[tuple[str, str]] = field(default_factory=list)


class SuggestionClient:
    """Calls one suggestion service; errors come back as katib.errors types."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", 256 * 1024 * 1024),
                ("grpc.max_send_message_length", 256 * 1024 * 1024),
            ],
        )
        self._stub = api_pb2_grpc.SuggestionStub(self._channel)
        # GetSuggestions with a request that is already serialized (see get_suggestions).
        self._get_suggestions = self._channel.unary_unary(
            GET_SUGGESTIONS_METHOD,
            request_serializer=_as_is,
            response_deserializer=api_pb2.GetSuggestionsReply.FromString,
        )
        self._trial_bytes = TrialBytesCache()
        self._caller = ThreadPoolExecutor(max_workers=1, thread_name_prefix="suggestions")

    def close(self) -> None:
        self._caller.shutdown(wait=False, cancel_futures=True)
        self._channel.close()

    def validate(self, experiment: Experiment) -> None:
        request = api_pb2.ValidateAlgorithmSettingsRequest(experiment=experiment_to_pb(experiment))
        try:
            self._stub.ValidateAlgorithmSettings(
                request, timeout=VALIDATE_TIMEOUT_SECONDS, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return
            if exc.code() == grpc.StatusCode.UNKNOWN:
                raise errors.InvalidArgumentError(
                    f"ValidateAlgorithmSettings Error: {exc.details()}"
                ) from None
            raise error_from_rpc(exc, "ValidateAlgorithmSettings") from None

    def get_suggestions(
        self,
        experiment: Experiment,
        trials: Sequence[Trial],
        count: int,
        total: int,
        settings: Sequence[tuple[str, str]] = (),
        records: Sequence[bytes] | None = None,
        while_waiting: Callable[[], None] | None = None,
    ) -> SuggestionReply:
        """`records`: `trials` as framed records (conversion.frame_trial), when the caller
        keeps them.

        `while_waiting` runs on another thread while the request is in flight, so the
        caller's own work (storing what the last pass saw) overlaps the algorithm's; the
        reply is returned once it has finished, and its error wins over the call's.
        """
        # The whole history goes with every call (the Katib contract); each trial is
        # serialized once and reused while it does not change.
        request = suggestions_request_bytes(
            experiment_to_pb(experiment, settings),
            self._trial_bytes.serialize(experiment, trials) if records is None else records,
            count,
            total,
        )
        try:
            # No wait_for_ready: the service is listening before a client exists, and a
            # service that has died must fail the call now (UNAVAILABLE, retried with a
            # restarted service) instead of holding it until the 60 s deadline.
            if while_waiting is None:
                reply = self._get_suggestions(request, timeout=SUGGESTION_TIMEOUT_SECONDS)
            else:
                # The call goes out from this thread, at once; the caller's work runs on
                # a thread of ours while this one waits in gRPC (without the GIL). The
                # other way round, the call would wait for the GIL the work holds, and
                # grpc's future() starts a thread per call.
                work = self._caller.submit(while_waiting)
                try:
                    reply = self._get_suggestions(request, timeout=SUGGESTION_TIMEOUT_SECONDS)
                finally:
                    work.result()  # its error first: the reply is then not used
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, "GetSuggestions") from None
        if len(reply.parameter_assignments) > count:
            raise errors.InternalError(
                f"GetSuggestions returned {len(reply.parameter_assignments)} assignments "
                f"for a request of {count}"
            )
        return SuggestionReply(
            assignments=[
                {a.name: a.value for a in pa.assignments} for pa in reply.parameter_assignments
            ],
            trial_names=[pa.trial_name or None for pa in reply.parameter_assignments],
            labels=[dict(pa.labels) for pa in reply.parameter_assignments],
            settings=[(s.name, s.value) for s in reply.algorithm.algorithm_settings],
        )


class SuggestionServiceProcess:
    """A `python -m suggestion_services` child on 127.0.0.1 with an ephemeral port."""

    def __init__(self, algorithm: str, log_path: str | None = None) -> None:
        self.algorithm = algorithm
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._client: SuggestionClient | None = None
        self._lock = threading.Lock()

    def spawn(self) -> None:
        """Start the process without waiting for it: its imports (most of its start-up)
        overlap whatever the caller does until `client()`."""
        with self._lock:
            if self._process is None:
                self._process = self._popen()

    def client(self) -> SuggestionClient:
        """A client to a live service, starting (or restarting) the process if needed."""
        with self._lock:
            if self._alive_locked():
                if self._client is None:
                    self._connect_locked()
                assert self._client is not None
                return self._client
            self._stop_locked()
            self._process = self._popen()
            self._connect_locked()
            assert self._client is not None
            return self._client

    def _popen(self) -> subprocess.Popen[bytes]:
        stderr = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "suggestion_services",
                    "--algorithm",
                    self.algorithm,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--exit-with-parent",
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            if stderr is not subprocess.DEVNULL:
                stderr.close()  # type: ignore[union-attr]

    def _connect_locked(self) -> None:
        """Read the address the started process listens on (it prints it when ready)."""
        process = self._process
        assert process is not None and process.stdout is not None
        line = process.stdout.readline().decode("utf-8", "replace")
        match = _LISTENING.search(line)
        if not match:
            process.kill()
            process.wait()
            process.stdout.close()
            self._process = None
            raise errors.UnavailableError(
                f"suggestion service for algorithm {self.algorithm!r} did not start"
                + (f" (see {self.log_path})" if self.log_path else "")
            )
        self._client = SuggestionClient(f"{match.group(1)}:{match.group(2)}")

    def _stop_locked(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._process is not None:
            if self._process.poll() is None:
                # It keeps no state (every request carries the history), so nothing is
                # lost without a graceful stop, which takes a tenth of a second.
                self._process.kill()
                self._process.wait()
            if self._process.stdout:
                self._process.stdout.close()
            self._process = None

    @property
    def pid(self) -> int | None:
        """The process's id once started (kept services are told apart by it)."""
        with self._lock:
            return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        """Is the process started and not ended?"""
        with self._lock:
            return self._alive_locked()

    def _alive_locked(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill_for_test(self) -> None:
        """Kill the process abruptly (tests of restart behaviour)."""
        with self._lock:
            if self._process is not None:
                self._process.kill()
                self._process.wait()

    def close(self) -> None:
        with self._lock:
            self._stop_locked()
