"""gRPC front end: api.v1.beta1.Suggestion and EarlyStopping plus grpc.health.v1.

The only grpc importer of this package. Requests are converted to plain data
(ExperimentInfo, EarlyStoppingExperiment, TrialRecord) and handed to the algorithm
named in the request; errors map to status codes through katib.apis.grpc_errors,
and anything unexpected becomes INTERNAL with a message. Early-stopping algorithms
read observation logs through DBManagerSource, a DBManager gRPC client.
"""

from __future__ import annotations

import itertools
import logging
import operator
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent import futures
from dataclasses import replace
from types import MappingProxyType
from typing import Any, TypeVar, overload

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from katib.apis.dbmanager_client import auth_metadata
from katib.apis.grpc_errors import error_from_rpc, grpc_code_for
from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from katib.errors import InvalidArgumentError, KatibError, UnavailableError

from . import after_reply
from .base import ExperimentInfo, ObjectiveType, TrialCondition, TrialRecord
from .early_stopping import (
    Comparison,
    EarlyStoppingExperiment,
    EarlyStoppingRule,
    LoggedValue,
    get_early_stopping,
)
from .experiment_cache import ExperimentCache
from .registry import get_algorithm
from .search_space import Distribution, ParameterSpec, ParameterType, SearchSpace

log = logging.getLogger(__name__)

#: Health service names answered SERVING: "" (whole server), the proto service,
#: Katib's probe name, and the health service itself.
HEALTH_SERVICE_NAMES = (
    "",
    "api.v1.beta1.Suggestion",
    "manager.v1beta1.Suggestion",
    "api.v1.beta1.EarlyStopping",
    "grpc.health.v1.Health",
)
#: What a server that hosts only EarlyStopping (serve_early_stopping) answers SERVING for.
EARLY_STOPPING_HEALTH_NAMES = ("", "api.v1.beta1.EarlyStopping", "grpc.health.v1.Health")

_PARAMETER_TYPES = {
    api_pb2.DOUBLE: ParameterType.DOUBLE,
    api_pb2.INT: ParameterType.INT,
    api_pb2.DISCRETE: ParameterType.DISCRETE,
    api_pb2.CATEGORICAL: ParameterType.CATEGORICAL,
}
_DISTRIBUTIONS = {
    api_pb2.DISTRIBUTION_UNSPECIFIED: "",
    api_pb2.UNIFORM: Distribution.UNIFORM,
    api_pb2.LOG_UNIFORM: Distribution.LOG_UNIFORM,
    api_pb2.NORMAL: Distribution.NORMAL,
    api_pb2.LOG_NORMAL: Distribution.LOG_NORMAL,
}
_OBJECTIVES = {
    api_pb2.MINIMIZE: ObjectiveType.MINIMIZE,
    api_pb2.MAXIMIZE: ObjectiveType.MAXIMIZE,
}
_CONDITIONS = {
    api_pb2.TrialStatus.CREATED: TrialCondition.CREATED,
    api_pb2.TrialStatus.RUNNING: TrialCondition.RUNNING,
    api_pb2.TrialStatus.SUCCEEDED: TrialCondition.SUCCEEDED,
    api_pb2.TrialStatus.KILLED: TrialCondition.KILLED,
    api_pb2.TrialStatus.FAILED: TrialCondition.FAILED,
    api_pb2.TrialStatus.METRICSUNAVAILABLE: TrialCondition.METRICS_UNAVAILABLE,
    api_pb2.TrialStatus.EARLYSTOPPED: TrialCondition.EARLY_STOPPED,
    api_pb2.TrialStatus.UNKNOWN: TrialCondition.UNKNOWN,
}


def parameter_spec_from_proto(p: Any) -> ParameterSpec:
    """ParameterSpec message → plain spec (an unknown type is rejected when parsed)."""
    fs = p.feasible_space
    ptype = _PARAMETER_TYPES.get(p.parameter_type, f"type {p.parameter_type}")
    dist = _DISTRIBUTIONS.get(fs.distribution, f"distribution {fs.distribution}")
    return ParameterSpec(p.name, ptype, fs.min, fs.max, fs.step, tuple(fs.list), dist)


def experiment_from_proto(experiment: Any, default_algorithm: str | None = None) -> ExperimentInfo:
    """Experiment message → ExperimentInfo; validates the search space on the way."""
    spec = experiment.spec
    algo = spec.algorithm
    space = SearchSpace.from_specs(
        parameter_spec_from_proto(p) for p in spec.parameter_specs.parameters
    )
    return ExperimentInfo(
        name=experiment.name,
        algorithm_name=algo.algorithm_name or default_algorithm or "",
        search_space=space,
        objective_type=_OBJECTIVES.get(spec.objective.type, ObjectiveType.UNKNOWN),
        objective_metric_name=spec.objective.objective_metric_name,
        additional_metric_names=tuple(spec.objective.additional_metric_names),
        settings={s.name: s.value for s in algo.algorithm_settings},
        parallel_trial_count=spec.parallel_trial_count,
        max_trial_count=spec.max_trial_count,
    )


def trial_from_proto(trial: Any, metric_name: str) -> TrialRecord:
    """Trial message → TrialRecord; a missing or unparseable objective becomes None."""
    status = trial.status
    value: float | None = None
    for m in status.observation.metrics:
        if m.name == metric_name:
            try:
                value = float(m.value)
            except ValueError:
                value = None
            break
    return TrialRecord(
        trial.name,
        {a.name: a.value for a in trial.spec.parameter_assignments.assignments},
        _CONDITIONS.get(status.condition, TrialCondition.UNKNOWN),
        value,
    )


_T = TypeVar("_T")


class TrialCache:
    """Serialized Trial → TrialRecord, shared by calls: a history mostly repeats.

    Reading protobuf fields from Python costs several microseconds per trial; a
    dict lookup by the trial's bytes costs a tenth of one. The server receives the
    trials as raw bytes already (LazyGetSuggestionsRequest); Trial messages (a
    request built in-process) are serialized first. Bounded: cleared when full
    (losing it only costs time).

    Cheaper still, per `stream` (an experiment): the previous request's bytes and
    records. A controller resends the same history plus a few trials, and comparing
    two lists of bytes (a memcmp per trial) costs a fraction of hashing them, so
    the leading trials that equal the previous request's reuse its records and only
    the rest are looked up.
    """

    def __init__(self, max_entries: int = 200_000, max_streams: int = 16) -> None:
        self._max = max_entries
        self._records: dict[str, dict[bytes, TrialRecord]] = {}
        self._size = 0
        self._lock = threading.Lock()
        self._max_streams = max_streams
        self._last: OrderedDict[Hashable, tuple[list[bytes], list[TrialRecord]]] = OrderedDict()

    def convert(
        self, trials: Sequence[Any], metric_name: str, stream: Hashable = None
    ) -> list[TrialRecord]:
        """The records of `trials` (bytes or Trial messages); equal trials give the
        same record objects while cached."""
        raws: list[bytes]
        if trials and isinstance(trials[0], bytes):
            raws = list(trials)
        else:
            raws = [t.SerializeToString() for t in trials]
        with self._lock:
            if self._size + len(raws) > self._max:
                self._records.clear()
                self._last.clear()
                self._size = 0
            records = self._records.setdefault(metric_name, {})
            key = (stream, metric_name)
            last = self._last.get(key) if stream is not None else None
            start = 0
            if last is not None:
                start = min(len(raws), len(last[0]))
                if raws[:start] != last[0][:start]:
                    start = 0
            found: list[TrialRecord | None] = []
            if last is not None:
                found += last[1][:start]
            found += map(records.get, raws[start:])
            # operator.not_ is True for None only (records have no __bool__): a C-level scan.
            missing = map(operator.not_, found[start:])
            for i in itertools.compress(range(start, len(found)), missing):
                found[i] = records[raws[i]] = _parse_trial(raws[i], metric_name, i)
                self._size += 1
            if stream is not None:
                # The previous bytes objects, not this request's copies: in steady state
                # the kept list then shares its bytes with the dict's keys.
                kept = last[0][:start] + raws[start:] if last is not None else raws
                self._last[key] = (kept, found)  # type: ignore[assignment]  # no None is left
                self._last.move_to_end(key)
                while len(self._last) > self._max_streams:
                    self._last.popitem(last=False)
        return found  # type: ignore[return-value]  # no None is left


def _parse_trial(raw: bytes, metric_name: str, index: int) -> TrialRecord:
    try:
        trial = api_pb2.Trial.FromString(raw)
    except DecodeError as exc:
        raise InvalidArgumentError(f"trials[{index}] cannot be parsed: {exc}") from None
    return trial_from_proto(trial, metric_name)


def _lazy_request_class() -> Any:
    """GetSuggestionsRequest with `trials` kept as raw bytes: the same wire format.

    A Trial field is length-delimited on the wire, exactly like a bytes field, so
    this type parses any GetSuggestionsRequest. It skips building thousands of
    Trial messages (4 ms at 10,000 trials) for algorithms that never read the
    history, and the bytes are what TrialCache looks trials up by.
    """
    name = "katib.suggestion_services.LazyGetSuggestionsRequest"
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(name)
    except KeyError:
        file = descriptor_pb2.FileDescriptorProto(
            name="katib/suggestion_services/lazy_request.proto",
            package="katib.suggestion_services",
            syntax="proto3",
            dependency=[api_pb2.DESCRIPTOR.name],
        )
        message = file.message_type.add(name="LazyGetSuggestionsRequest")
        field = descriptor_pb2.FieldDescriptorProto
        message.field.add(name="experiment", number=1, type=field.TYPE_MESSAGE,
                          type_name=".api.v1.beta1.Experiment", label=field.LABEL_OPTIONAL)
        message.field.add(name="trials", number=2, type=field.TYPE_BYTES,
                          label=field.LABEL_REPEATED)
        for number, field_name in ((4, "current_request_number"), (5, "total_request_number")):
            message.field.add(name=field_name, number=number, type=field.TYPE_INT32,
                              label=field.LABEL_OPTIONAL)
        pool.Add(file)
        descriptor = pool.FindMessageTypeByName(name)
    return message_factory.GetMessageClass(descriptor)


LazyGetSuggestionsRequest = _lazy_request_class()


class ProtoTrials(Sequence[TrialRecord]):
    """The request's trials, converted on first access only.

    Algorithms that do not need the history (random over a continuous space) then
    cost nothing per trial; the others convert each trial once (or hit the cache).
    """

    def __init__(
        self,
        trials: Sequence[Any],
        metric_name: str,
        cache: TrialCache | None = None,
        stream: Hashable = None,
    ) -> None:
        """`stream`: what `cache` files these trials under (the experiment), if anything."""
        self._trials = trials
        self._metric = metric_name
        self._converter = cache or TrialCache()
        self._stream = stream
        self._cache: list[TrialRecord] | None = None

    def _all(self) -> list[TrialRecord]:
        if self._cache is None:
            self._cache = self._converter.convert(self._trials, self._metric, self._stream)
        return self._cache

    def __len__(self) -> int:
        return len(self._trials)

    @overload
    def __getitem__(self, index: int) -> TrialRecord: ...
    @overload
    def __getitem__(self, index: slice) -> list[TrialRecord]: ...
    def __getitem__(self, index: int | slice) -> TrialRecord | list[TrialRecord]:
        return self._all()[index]

    def __iter__(self) -> Iterator[TrialRecord]:
        return iter(self._all())


class _ExperimentCache:
    """Experiment message → ExperimentInfo, by the message's bytes (bounded LRU).

    Every request of an experiment carries the same Experiment; parsing its search
    space costs tens of microseconds, serializing the message back under one. The
    ExperimentInfo is shared by the calls that hit: it is frozen and its settings are
    a read-only view.
    """

    def __init__(self, max_entries: int = 64) -> None:
        self._items: ExperimentCache[ExperimentInfo] = ExperimentCache(max_entries)

    def get(self, message: Any, default_algorithm: str | None) -> ExperimentInfo:
        key = (message.SerializeToString(), default_algorithm)
        info = self._items.get(key)
        if info is None:
            info = experiment_from_proto(message, default_algorithm)
            info = replace(info, settings=MappingProxyType(dict(info.settings)))
            self._items.put(key, info)
        return info
        info = experiment_from_proto(message, default_algorithm)
        info = replace(info, settings=MappingProxyType(dict(info.settings)))
        with self._lock:
            self._items[key] = info
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return info


def _guard(context: grpc.ServicerContext, what: str, call: Callable[[], _T]) -> _T:
    """Run `call`; map our errors to their status and anything else to INTERNAL.

    context.abort raises, so it is called outside the except blocks: the handler
    always ends with a reply or a status, never a hung call.
    """
    code: grpc.StatusCode
    try:
        return call()
    except KatibError as exc:
        code, message = grpc_code_for(exc), str(exc)
    except Exception as exc:
        log.exception("%s failed", what)
        code = grpc.StatusCode.INTERNAL
        message = f"{what}: internal error: {type(exc).__name__}: {exc}"
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort always raises


class SuggestionServicer(api_pb2_grpc.SuggestionServicer):
    """Serves every registered algorithm; the request's algorithm_name picks one."""

    def __init__(self, default_algorithm: str | None = None) -> None:
        if default_algorithm is not None:
            get_algorithm(default_algorithm)
        self._default = default_algorithm
        self._trial_cache = TrialCache()
        self._experiments = _ExperimentCache()

    def _algorithm_for(self, experiment: ExperimentInfo) -> Any:
        return get_algorithm(experiment.algorithm_name)()

    def GetSuggestions(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Convert, ask the algorithm for current_request_number points, build the reply."""

        def run() -> Any:
            experiment = self._experiments.get(request.experiment, self._default)
            algorithm = self._algorithm_for(experiment)
            n = request.current_request_number
            if n < 0:
                raise InvalidArgumentError(f"current_request_number must be >= 0, got {n}")
            reply = api_pb2.GetSuggestionsReply()
            reply.algorithm.CopyFrom(request.experiment.spec.algorithm)
            if n == 0:
                return reply
            raw_trials = request.trials
            if raw_trials and isinstance(request, api_pb2.GetSuggestionsRequest):
                # A request built in-process: one serialization of the whole request
                # costs less than one per trial (TrialCache looks trials up by bytes).
                raw_trials = LazyGetSuggestionsRequest.FromString(
                    request.SerializeToString()
                ).trials
            trials = ProtoTrials(
                raw_trials, experiment.objective_metric_name, self._trial_cache, experiment.name
            )
            with after_reply.collecting() as later:
                result = algorithm.suggest_with_settings(experiment, trials, n)
            # Once the RPC has ended; at once if it has already, or if the context
            # (a caller's own, in-process) cannot say when.
            add_callback = getattr(context, "add_callback", None)
            for work in later:
                if add_callback is None or not add_callback(work):
                    work()
            if not reply.algorithm.algorithm_name:
                reply.algorithm.algorithm_name = experiment.algorithm_name
            if result.settings != experiment.settings:
                del reply.algorithm.algorithm_settings[:]
                for key, value in result.settings.items():
                    reply.algorithm.algorithm_settings.add(name=key, value=value)
            for s in result.suggestions:
                out = reply.parameter_assignments.add(trial_name=s.trial_name)
                for key, value in s.assignments.items():
                    out.assignments.add(name=key, value=value)
                out.labels.update(s.labels)
            return reply

        return _guard(context, "GetSuggestions", run)

    def ValidateAlgorithmSettings(self, request: Any, context: grpc.ServicerContext) -> Any:
        """INVALID_ARGUMENT with the message for bad settings or an unusable search space."""

        def run() -> Any:
            experiment = experiment_from_proto(request.experiment, self._default)
            self._algorithm_for(experiment).validate_settings(experiment)
            return api_pb2.ValidateAlgorithmSettingsReply()

        return _guard(context, "ValidateAlgorithmSettings", run)


_COMPARISONS_TO_PROTO = {
    Comparison.EQUAL: api_pb2.EQUAL,
    Comparison.LESS: api_pb2.LESS,
    Comparison.GREATER: api_pb2.GREATER,
}
#: How long one GetObservationLog may take (Katib's medianstop uses 10 s).
DBMANAGER_TIMEOUT_SECONDS = 10.0


def early_stopping_experiment_from_proto(experiment: Any) -> EarlyStoppingExperiment:
    """Experiment message -> what an early-stopping algorithm sees (settings from earlyStopping)."""
    spec = experiment.spec
    return EarlyStoppingExperiment(
        name=experiment.name,
        algorithm_name=spec.early_stopping.algorithm_name,
        objective_type=_OBJECTIVES.get(spec.objective.type, ObjectiveType.UNKNOWN),
        objective_metric_name=spec.objective.objective_metric_name,
        additional_metric_names=tuple(spec.objective.additional_metric_names),
        settings={s.name: s.value for s in spec.early_stopping.algorithm_settings},
    )


def rule_to_proto(rule: EarlyStoppingRule) -> Any:
    return api_pb2.EarlyStoppingRule(
        name=rule.name,
        value=rule.value,
        comparison=_COMPARISONS_TO_PROTO[rule.comparison],
        start_step=rule.start_step,
    )


class DBManagerSource:
    """ObservationSource over a DBManager's GetObservationLog (Katib's or ours)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]
        )
        self._stub = api_pb2_grpc.DBManagerStub(self._channel)

    @property
    def key(self) -> str:
        return self.address

    def observation_log(self, trial_name: str, metric_name: str) -> list[LoggedValue]:
        request = api_pb2.GetObservationLogRequest(trial_name=trial_name, metric_name=metric_name)
        try:
            reply = self._stub.GetObservationLog(
                request, timeout=DBMANAGER_TIMEOUT_SECONDS, metadata=auth_metadata()
            )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise UnavailableError(
                    f"DBManager at {self.address} (GetObservationLog {trial_name}): "
                    f"{exc.details()}"
                ) from None
            raise error_from_rpc(exc, f"DBManager GetObservationLog {trial_name}") from None
        return [
            LoggedValue(m.time_stamp, m.metric.value) for m in reply.observation_log.metric_logs
        ]

    def close(self) -> None:
        self._channel.close()


class EarlyStoppingServicer(api_pb2_grpc.EarlyStoppingServicer):
    """Serves every early-stopping algorithm; the request's algorithm_name picks one.

    SetTrialStatus is where a metrics collector reports that it stopped a trial. Katib's
    service patches the Trial object in Kubernetes; here `on_trial_stopped(trial_name)`
    does the equivalent (the embedded runtime passes one that has its controller mark
    the trial EarlyStopped; it raises NotFoundError for an unknown trial). Accepted
    requests are recorded in `stopped_trials` (bounded), which is all a standalone
    service, with no trial store attached, can do.
    """

    def __init__(
        self,
        on_trial_stopped: Callable[[str], None] | None = None,
        max_recorded: int = 10_000,
        max_sources: int = 8,
    ) -> None:
        self._on_trial_stopped = on_trial_stopped
        self.stopped_trials: deque[str] = deque(maxlen=max_recorded)
        self._sources: OrderedDict[str, DBManagerSource] = OrderedDict()
        self._max_sources = max_sources
        self._lock = threading.Lock()

    def _source(self, address: str) -> DBManagerSource:
        """One channel per DBManager address, reused across calls (bounded, LRU)."""
        if not address:
            raise InvalidArgumentError("db_manager_address must be set (host:port of DBManager)")
        with self._lock:
            source = self._sources.get(address)
            if source is None:
                source = self._sources[address] = DBManagerSource(address)
                while len(self._sources) > self._max_sources:
                    self._sources.popitem(last=False)[1].close()
            self._sources.move_to_end(address)
            return source

    def GetEarlyStoppingRules(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Rules for the next trials, computed from the request alone (plus DBManager reads)."""

        def run() -> Any:
            experiment = early_stopping_experiment_from_proto(request.experiment)
            algorithm = get_early_stopping(experiment.algorithm_name)()
            algorithm.validate_settings(experiment.settings)
            source = self._source(request.db_manager_address)
            metric = experiment.objective_metric_name
            trials = [trial_from_proto(t, metric) for t in request.trials]
            rules = algorithm.get_rules(experiment, trials, source)
            log.info("early-stopping rules for %s: %s", experiment.name, rules)
            return api_pb2.GetEarlyStoppingRulesReply(
                early_stopping_rules=[rule_to_proto(r) for r in rules]
            )

        return _guard(context, "GetEarlyStoppingRules", run)

    def SetTrialStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        """A collector stopped `trial_name`: hand it to `on_trial_stopped` and record it."""

        def run() -> Any:
            name = request.trial_name
            if not name:
                raise InvalidArgumentError("trial_name must not be empty")
            if self._on_trial_stopped is not None:
                self._on_trial_stopped(name)
            self.stopped_trials.append(name)
            log.info("trial %s was early stopped", name)
            return api_pb2.SetTrialStatusReply()

        return _guard(context, "SetTrialStatus", run)

    def ValidateEarlyStoppingSettings(self, request: Any, context: grpc.ServicerContext) -> Any:
        """INVALID_ARGUMENT with Katib's message for an unknown algorithm or a bad setting."""

        def run() -> Any:
            spec = request.early_stopping
            algorithm = get_early_stopping(spec.algorithm_name)()
            algorithm.validate_settings({s.name: s.value for s in spec.algorithm_settings})
            return api_pb2.ValidateEarlyStoppingSettingsReply()

        return _guard(context, "ValidateEarlyStoppingSettings", run)

    def close(self) -> None:
        """Close the DBManager channels."""
        with self._lock:
            for source in self._sources.values():
                source.close()
            self._sources.clear()


def add_suggestion_servicer(servicer: SuggestionServicer, server: grpc.Server) -> None:
    """api_pb2_grpc.add_SuggestionServicer_to_server, with GetSuggestions parsed lazily."""
    handlers = {
        "GetSuggestions": grpc.unary_unary_rpc_method_handler(
            servicer.GetSuggestions,
            request_deserializer=LazyGetSuggestionsRequest.FromString,
            response_serializer=api_pb2.GetSuggestionsReply.SerializeToString,
        ),
        "ValidateAlgorithmSettings": grpc.unary_unary_rpc_method_handler(
            servicer.ValidateAlgorithmSettings,
            request_deserializer=api_pb2.ValidateAlgorithmSettingsRequest.FromString,
            response_serializer=api_pb2.ValidateAlgorithmSettingsReply.SerializeToString,
        ),
    }
    service = "api.v1.beta1.Suggestion"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


def add_health(
    server: grpc.Server, names: Sequence[str] = HEALTH_SERVICE_NAMES
) -> health.HealthServicer:
    """Register grpc.health.v1 answering SERVING for every name a caller may probe."""
    servicer = health.HealthServicer()
    for name in names:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


def _bind_and_start(server: grpc.Server, host: str, port: int) -> int:
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return bound


def serve(
    algorithm_name: str | None,
    host: str = "127.0.0.1",
    port: int = 6789,
    max_workers: int = 8,
    *,
    early_stopping: EarlyStoppingServicer | None = None,
) -> tuple[grpc.Server, int]:
    """Start a server (port 0 picks a free port); returns it with the bound port.

    It serves Suggestion and EarlyStopping on the same port (a Katib controller that
    expects EarlyStopping on 6788 can be pointed at a second instance on that port).
    Raises InvalidArgumentError for an unknown algorithm name before binding.
    """
    servicer = SuggestionServicer(algorithm_name)
    # The whole history comes with every request: gRPC's default 4 MB would refuse
    # one of ~20,000 trials. The controller's client allows 256 MB too.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=[("grpc.max_receive_message_length", 256 << 20)])
    add_suggestion_servicer(servicer, server)
    api_pb2_grpc.add_EarlyStoppingServicer_to_server(
        early_stopping or EarlyStoppingServicer(), server
    )
    add_health(server)
    return server, _bind_and_start(server, host, port)


def serve_early_stopping(
    host: str = "127.0.0.1",
    port: int = 6788,
    servicer: EarlyStoppingServicer | None = None,
    max_workers: int = 4,
) -> tuple[grpc.Server, int]:
    """Start a server with only EarlyStopping (and health); returns it with the bound port.

    The embedded runtime uses this in-process, with a servicer whose SetTrialStatus
    reaches its controller. Port 0 picks a free port; 6788 is Katib's.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    api_pb2_grpc.add_EarlyStoppingServicer_to_server(servicer or EarlyStoppingServicer(), server)
    add_health(server, EARLY_STOPPING_HEALTH_NAMES)
    return server, _bind_and_start(server, host, port)
