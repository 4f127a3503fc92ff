"""The Experiment and Trial models, field for field as Katib's kubeflow.org/v1beta1 CRDs.

Attribute names are snake_case; the YAML/JSON names are Katib's camelCase aliases
(`model_dump(by_alias=True)` gives back the Katib document). Numeric bounds stay
strings, as in Katib, so a value round-trips exactly as the user wrote it.
Spec models forbid unknown fields: a misspelt field is an error here, not a silent
no-op. Free-form parts (trialSpec, metadata, customCollector) stay free-form.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

API_VERSION = "kubeflow.org/v1beta1"
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        coerce_numbers_to_str=True,
        validate_assignment=False,
    )

    def to_dict(self) -> dict[str, Any]:
        """The Katib (camelCase) document, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class _Open(_Model):
    model_config = ConfigDict(extra="allow")


# --- enums (CRD spellings) -------------------------------------------------------


class ObjectiveType(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"
    UNKNOWN = ""


class ParameterType(StrEnum):
    DOUBLE = "double"
    INT = "int"
    DISCRETE = "discrete"
    CATEGORICAL = "categorical"
    UNKNOWN = "unknown"


class Distribution(StrEnum):
    UNIFORM = "uniform"
    LOG_UNIFORM = "logUniform"
    NORMAL = "normal"
    LOG_NORMAL = "logNormal"
    UNKNOWN = "unknown"


class MetricStrategyType(StrEnum):
    MIN = "min"
    MAX = "max"
    LATEST = "latest"


class CollectorKind(StrEnum):
    STDOUT = "StdOut"
    FILE = "File"
    TENSORFLOW_EVENT = "TensorFlowEvent"
    PROMETHEUS = "PrometheusMetric"
    CUSTOM = "Custom"
    PUSH = "Push"
    NONE = "None"  # pre-v0.18 name of Push


class FileFormat(StrEnum):
    TEXT = "TEXT"
    JSON = "JSON"


class FileSystemKind(StrEnum):
    FILE = "File"
    DIRECTORY = "Directory"


class ResumePolicy(StrEnum):
    NEVER = "Never"
    LONG_RUNNING = "LongRunning"
    FROM_VOLUME = "FromVolume"


class ComparisonType(StrEnum):
    EQUAL = "equal"
    LESS = "less"
    GREATER = "greater"


class ExperimentConditionType(StrEnum):
    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class TrialConditionType(StrEnum):
    CREATED = "Created"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    KILLED = "Killed"
    FAILED = "Failed"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    EARLY_STOPPED = "EarlyStopped"


_TRIAL_CONDITIONS: dict[str, TrialConditionType] = {c.value: c for c in TrialConditionType}


TERMINAL_TRIAL_CONDITIONS = frozenset(
    {
        TrialConditionType.SUCCEEDED,
        TrialConditionType.KILLED,
        TrialConditionType.FAILED,
        TrialConditionType.METRICS_UNAVAILABLE,
        TrialConditionType.EARLY_STOPPED,
    }
)

UNAVAILABLE = "unavailable"


# --- metadata --------------------------------------------------------------------


class ObjectMeta(_Open):
    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    creation_timestamp: str | None = None


# --- experiment spec -------------------------------------------------------------


class MetricStrategy(_Model):
    name: str
    value: MetricStrategyType | str


class ObjectiveSpec(_Model):
    type: ObjectiveType | str | None = None
    goal: float | None = None
    objective_metric_name: str | None = None
    additional_metric_names: list[str] | None = None
    metric_strategies: list[MetricStrategy] | None = None


class AlgorithmSetting(_Model):
    name: str
    value: str = ""


class AlgorithmSpec(_Model):
    algorithm_name: str | None = None
    algorithm_settings: list[AlgorithmSetting] | None = None


class EarlyStoppingSetting(_Model):
    name: str
    value: str = ""


class EarlyStoppingSpec(_Model):
    algorithm_name: str | None = None
    algorithm_settings: list[EarlyStoppingSetting] | None = None


class FeasibleSpace(_Model):
    max: str | None = None
    min: str | None = None
    list_: list[str] | None = Field(default=None, alias="list")
    step: str | None = None
    distribution: Distribution | str | None = None


class ParameterSpec(_Model):
    name: str | None = None
    parameter_type: ParameterType | str | None = None
    feasible_space: FeasibleSpace | None = None


class TrialParameterSpec(_Model):
    name: str | None = None
    description: str | None = None
    reference: str | None = None


class ConfigMapSource(_Model):
    config_map_name: str | None = None
    config_map_namespace: str | None = None
    template_path: str | None = None


class GoTemplate(_Model):
    """v1alpha3's trial template: Go text/template source inline or in a ConfigMap."""

    raw_template: str | None = None
    template_spec: ConfigMapSource | None = None


class TrialTemplate(_Model):
    retain: bool | None = None
    trial_spec: dict[str, Any] | None = None
    config_map: ConfigMapSource | None = None
    go_template: GoTemplate | None = None  # v1alpha3; not in Katib's v1beta1 CRD
    trial_parameters: list[TrialParameterSpec] | None = None
    primary_pod_labels: dict[str, str] | None = None
    primary_container_name: str | None = None
    success_condition: str | None = None
    failure_condition: str | None = None


class FileSystemPath(_Model):
    path: str | None = None
    kind: FileSystemKind | str | None = None
    format: FileFormat | str | None = None


class FilterSpec(_Model):
    metrics_format: list[str] | None = None


class SourceSpec(_Model):
    http_get: dict[str, Any] | None = None
    file_system_path: FileSystemPath | None = None
    filter: FilterSpec | None = None


class CollectorSpec(_Model):
    kind: CollectorKind | str | None = None
    custom_collector: dict[str, Any] | None = None


class MetricsCollectorSpec(_Model):
    source: SourceSpec | None = None
    collector: CollectorSpec | None = None


class GraphConfig(_Model):
    num_layers: int | None = None
    input_sizes: list[int] | None = None
    output_sizes: list[int] | None = None


class Operation(_Model):
    operation_type: str | None = None
    parameters: list[ParameterSpec] | None = None


class NasConfig(_Model):
    graph_config: GraphConfig | None = None
    operations: list[Operation] | None = None


class ExperimentSpec(_Model):
    parameters: list[ParameterSpec] | None = None
    objective: ObjectiveSpec | None = None
    algorithm: AlgorithmSpec | None = None
    early_stopping: EarlyStoppingSpec | None = None
    trial_template: TrialTemplate | None = None
    parallel_trial_count: int | None = None
    max_trial_count: int | None = None
    max_failed_trial_count: int | None = None
    metrics_collector_spec: MetricsCollectorSpec | None = None
    nas_config: NasConfig | None = None
    resume_policy: ResumePolicy | str | None = None


# --- status ----------------------------------------------------------------------


class Condition(_Model):
    type: str
    status: str = "True"
    reason: str | None = None
    message: str | None = None
    last_update_time: str | None = None
    last_transition_time: str | None = None


class ParameterAssignment(_Model):
    name: str
    value: str


class Metric(_Model):
    """One metric of an observation: min, max and latest as strings ('unavailable' if none)."""

    name: str
    min: str = UNAVAILABLE
    max: str = UNAVAILABLE
    latest: str = UNAVAILABLE


class Observation(_Model):
    metrics: list[Metric] = Field(default_factory=list)


class OptimalTrial(_Model):
    best_trial_name: str | None = None
    parameter_assignments: list[ParameterAssignment] = Field(default_factory=list)
    observation: Observation | None = None


class ExperimentStatus(_Model):
    start_time: str | None = None
    completion_time: str | None = None
    last_reconcile_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    current_optimal_trial: OptimalTrial | None = None
    running_trial_list: list[str] | None = None
    pending_trial_list: list[str] | None = None
    failed_trial_list: list[str] | None = None
    succeeded_trial_list: list[str] | None = None
    killed_trial_list: list[str] | None = None
    early_stopped_trial_list: list[str] | None = None
    metrics_unavailable_trial_list: list[str] | None = None
    trials: int | None = None
    trials_succeeded: int | None = None
    trials_failed: int | None = None
    trials_killed: int | None = None
    trials_pending: int | None = None
    trials_running: int | None = None
    trials_early_stopped: int | None = None
    trial_metrics_unavailable: int | None = None
    # Not in Katib's ExperimentStatus: the settings a suggestion service returned for
    # later requests (Katib keeps them in Suggestion.status.algorithmSettings).
    algorithm_settings: list[AlgorithmSetting] | None = None


class Experiment(_Model):
    api_version: str = API_VERSION
    kind: str = "Experiment"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ExperimentSpec = Field(default_factory=ExperimentSpec)
    status: ExperimentStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"


# --- trial -----------------------------------------------------------------------


class EarlyStoppingRule(_Model):
    name: str
    value: str
    comparison: ComparisonType | str
    start_step: int | None = None


class TrialSpec(_Model):
    objective: ObjectiveSpec | None = None
    parameter_assignments: list[ParameterAssignment] = Field(default_factory=list)
    early_stopping_rules: list[EarlyStoppingRule] | None = None
    run_spec: dict[str, Any] | None = None
    retain_run: bool | None = None
    metrics_collector: MetricsCollectorSpec | None = None
    primary_pod_labels: dict[str, str] | None = None
    primary_container_name: str | None = None
    success_condition: str | None = None
    failure_condition: str | None = None
    labels: dict[str, str] | None = None


class TrialStatus(_Model):
    start_time: str | None = None
    completion_time: str | None = None
    last_reconcile_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observation: Observation | None = None


class Trial(_Model):
    api_version: str = API_VERSION
    kind: str = "Trial"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TrialSpec = Field(default_factory=TrialSpec)
    status: TrialStatus = Field(default_factory=TrialStatus)

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def condition(self) -> TrialConditionType:
        """The latest condition, as Katib reads it (the last element; Created if none)."""
        if not self.status.conditions:
            return TrialConditionType.CREATED
        latest = self.status.conditions[-1].type
        # A dict lookup: this runs for every trial on every reconcile pass.
        member = _TRIAL_CONDITIONS.get(latest)
        return member if member is not None else TrialConditionType(latest)

    @property
    def is_completed(self) -> bool:
        return self.condition in TERMINAL_TRIAL_CONDITIONS

    @property
    def assignments(self) -> dict[str, str]:
        return {a.name: a.value for a in self.spec.parameter_assignments}


# --- Suggestion (Katib's CR, derived here from the experiment and its trials) ----------


class TrialAssignment(_Model):
    """One suggestion handed out: the trial it became and its assignments."""

    name: str
    parameter_assignments: list[ParameterAssignment] = Field(default_factory=list)
    early_stopping_rules: list[EarlyStoppingRule] | None = None
    labels: dict[str, str] | None = None


class SuggestionSpec(_Model):
    algorithm: AlgorithmSpec | None = None
    early_stopping: EarlyStoppingSpec | None = None
    requests: int = 0
    resume_policy: ResumePolicy | str | None = None


class SuggestionStatus(_Model):
    algorithm_settings: list[AlgorithmSetting] | None = None
    suggestion_count: int = 0
    suggestions: list[TrialAssignment] | None = None
    start_time: str | None = None
    completion_time: str | None = None
    last_reconcile_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)


class Suggestion(_Model):
    api_version: str = API_VERSION
    kind: str = "Suggestion"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: SuggestionSpec = Field(default_factory=SuggestionSpec)
    status: SuggestionStatus = Field(default_factory=SuggestionStatus)

    @property
    def name(self) -> str:
        return self.metadata.name or ""
