"""gRPC front end: api.v1.beta1.Suggestion plus grpc.health.v1 (the only grpc importer here).

Requests are converted to plain data (ExperimentInfo, TrialRecord) and handed to
the algorithm named in the request; errors map to status codes through
katib.apis.grpc_errors, and anything unexpected becomes INTERNAL with a message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any, TypeVar, overload

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from katib.apis.grpc_errors import grpc_code_for
from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from katib.errors import InvalidArgumentError, KatibError

from .base import ExperimentInfo, ObjectiveType, TrialCondition, TrialRecord
from .registry import get_algorithm
from .search_space import Distribution, ParameterSpec, ParameterType, SearchSpace

log = logging.getLogger(__name__)

#: Health service names answered SERVING: "" (whole server), the proto service,
#: Katib's probe name, and the health service itself.
HEALTH_SERVICE_NAMES = (
    "",
    "api.v1.beta1.Suggestion",
    "manager.v1beta1.Suggestion",
    "grpc.health.v1.Health",
)

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

    Reading protobuf fields from Python costs several microseconds per trial; one
    SerializeToString plus a dict lookup is several times cheaper. Bounded: cleared
    when full (losing it only costs time).
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self._max = max_entries
        self._records: dict[tuple[str, bytes], TrialRecord] = {}

    def convert(self, trials: Sequence[Any], metric_name: str) -> list[TrialRecord]:
        records = self._records
        if len(records) + len(trials) > self._max:
            records.clear()
        out: list[TrialRecord] = []
        append = out.append
        for t in trials:
            key = (metric_name, t.SerializeToString())
            record = records.get(key)
            if record is None:
                record = records[key] = trial_from_proto(t, metric_name)
            append(record)
        return out


class ProtoTrials(Sequence[TrialRecord]):
    """The request's trials, converted on first access only.

    Algorithms that do not need the history (random over a continuous space) then
    cost nothing per trial; the others convert each trial once (or hit the cache).
    """

    def __init__(
        self, trials: Sequence[Any], metric_name: str, cache: TrialCache | None = None
    ) -> None:
        self._trials = trials
        self._metric = metric_name
        self._converter = cache or TrialCache()
        self._cache: list[TrialRecord] | None = None

    def _all(self) -> list[TrialRecord]:
        if self._cache is None:
            self._cache = self._converter.convert(self._trials, self._metric)
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

    def _algorithm_for(self, experiment: ExperimentInfo) -> Any:
        return get_algorithm(experiment.algorithm_name)()

    def GetSuggestions(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Convert, ask the algorithm for current_request_number points, build the reply."""

        def run() -> Any:
            experiment = experiment_from_proto(request.experiment, self._default)
            algorithm = self._algorithm_for(experiment)
            n = request.current_request_number
            if n < 0:
                raise InvalidArgumentError(f"current_request_number must be >= 0, got {n}")
            reply = api_pb2.GetSuggestionsReply()
            reply.algorithm.CopyFrom(request.experiment.spec.algorithm)
            if n == 0:
                return reply
            trials = ProtoTrials(
                request.trials, experiment.objective_metric_name, self._trial_cache
            )
            result = algorithm.suggest_with_settings(experiment, trials, n)
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


def add_health(server: grpc.Server) -> health.HealthServicer:
    """Register grpc.health.v1 answering SERVING for every name a caller may probe."""
    servicer = health.HealthServicer()
    for name in HEALTH_SERVICE_NAMES:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


def serve(
    algorithm_name: str | None, host: str = "127.0.0.1", port: int = 6789, max_workers: int = 8
) -> tuple[grpc.Server, int]:
    """Start a server (port 0 picks a free port); returns it with the bound port.

    Raises InvalidArgumentError for an unknown algorithm name before binding.
    """
    servicer = SuggestionServicer(algorithm_name)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    api_pb2_grpc.add_SuggestionServicer_to_server(servicer, server)
    add_health(server)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return server, bound
