"""Katib's Experiment validation (the `/validate-experiment` webhook), without a cluster.

Runs on a *defaulted* Experiment (see katib.api.defaults), returns every problem found
(Katib stops early in a few places; listing everything is more useful to a user).
Paths and messages are Katib's where Katib has the rule. On top of that come the checks
Katib misses and only discovers late, as a stuck or failing Experiment: numeric bounds,
steps, empty lists, duplicate names, parameters no trial parameter references, ...
Cluster-only checks (namespace label, PV, KatibConfig images) are left out; the known
algorithm names stand in for the KatibConfig lookup.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any

from katib.api.defaults import apply_defaults, is_push_collector
from katib.api.models import (
    CollectorKind,
    Distribution,
    Experiment,
    FileFormat,
    FileSystemKind,
    MetricStrategyType,
    ObjectiveType,
    ParameterSpec,
    ParameterType,
    ResumePolicy,
    TrialTemplate,
)
from katib.errors import Problem

KNOWN_ALGORITHMS: frozenset[str] = frozenset(
    {
        "random",
        "grid",
        "tpe",
        "multivariate-tpe",
        "bayesianoptimization",
        "cmaes",
        "sobol",
        "hyperband",
        "pbt",
        "enas",
        "darts",
    }
)
KNOWN_EARLY_STOPPING: frozenset[str] = frozenset({"medianstop"})

ConfigMapLoader = Callable[[str, str, str], str | None]
"""(namespace, configMapName, templatePath) -> template text, or None if it is missing."""

NAME_MAX_LENGTH = 40
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?")  # not end-anchored, as in Katib
NAME_MESSAGE = (
    "name must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name', or "
    "'abc-123', regex used for validation is '^[a-z]([-a-z0-9]*[a-z0-9])?)') and may not "
    "be longer than 40 characters. "
)
RESTART_MESSAGE = (
    "Experiment can be restarted if it is in succeeded state by reaching max trials and "
    "spec.resumePolicy = LongRunning or spec.resumePolicy = FromVolume, when experiment is "
    "completed"
)
EDITABLE_MESSAGE = (
    "only spec.parallelTrialCount, spec.maxTrialCount and spec.maxFailedTrialCount are editable"
)
PLACEHOLDER = "${trialParameters.%s}"
_PLACEHOLDER_RE = re.compile(r"\$\{trialParameters\..+?\}")
_META_REF_RE = re.compile(r"\$\{trialSpec\.(.+?)\}")
_META_KEYS = frozenset({"Name", "Namespace", "Kind", "APIVersion"})
_META_INDEXED_RE = re.compile(r"^(Labels|Annotations)\[(.+)\]$")
_TWO_GROUPS_RE = re.compile(r".*\(.*\).*\(.*\).*")
_PARAMETER_TYPES = {t.value for t in ParameterType}
_DISTRIBUTIONS = {d.value for d in Distribution}
_STRATEGIES = {s.value for s in MetricStrategyType}
_RESUME_POLICIES = {"", *(p.value for p in ResumePolicy)}
_AUTO_INJECTED = (
    CollectorKind.STDOUT,
    CollectorKind.FILE,
    CollectorKind.TENSORFLOW_EVENT,
    CollectorKind.PROMETHEUS,
)
MC = "spec.metricsCollectorSpec"


def _go_list(items: Iterable[object]) -> str:
    """Render a list the way Go's %v does, so messages read like Katib's."""
    return "[" + " ".join(str(i) for i in items) + "]"


def template_text(tt: TrialTemplate) -> str | None:
    """The trialSpec as Katib marshals it (compact JSON, sorted keys); None for configMaps."""
    if tt.trial_spec is None:
        return None
    return json.dumps(tt.trial_spec, sort_keys=True, separators=(",", ":"))


def is_meta_reference(reference: str) -> bool:
    """`${trialSpec.Name}` and friends refer to trial metadata, not to a parameter."""
    return _META_REF_RE.search(reference) is not None


# --- rules 1-6 -----------------------------------------------------------------------


def _validate_counts(exp: Experiment) -> list[Problem]:
    out: list[Problem] = []
    name = exp.metadata.name or ""
    if (name or not exp.metadata.generate_name) and (
        not _NAME_RE.match(name) or len(name) > NAME_MAX_LENGTH
    ):
        out.append(Problem("metadata.name", NAME_MESSAGE))
    s = exp.spec
    if s.max_failed_trial_count is not None and s.max_failed_trial_count < 0:
        out.append(Problem("spec.maxFailedTrialCount", "should not be less than 0"))
    if s.max_trial_count is not None and s.max_trial_count <= 0:
        out.append(Problem("spec.maxTrialCount", "must be greater than 0"))
    if s.parallel_trial_count is not None and s.parallel_trial_count <= 0:
        out.append(Problem("spec.parallelTrialCount", "must be greater than 0"))
    if s.max_trial_count is not None and s.max_trial_count > 0:
        if s.max_failed_trial_count is not None and s.max_failed_trial_count > s.max_trial_count:
            out.append(
                Problem(
                    "spec.maxFailedTrialCount",
                    "should be less than or equal to spec.maxTrialCount",
                )
            )
        if s.parallel_trial_count is not None and s.parallel_trial_count > s.max_trial_count:
            out.append(
                Problem(
                    "spec.parallelTrialCount",
                    "should be less than or equal to spec.maxTrialCount",
                )
            )
    return out


# --- rules 10-13 (+ strategies, goal, duplicates) -----------------------------------------


def _validate_objective(exp: Experiment) -> list[Problem]:
    obj = exp.spec.objective
    if obj is None:
        return [Problem("spec.objective", "must be specified")]
    out: list[Problem] = []
    p = "spec.objective"
    if obj.type not in (ObjectiveType.MINIMIZE, ObjectiveType.MAXIMIZE):
        out.append(Problem(f"{p}.type", "must be minimize or maximize"))
    if obj.goal is not None and not math.isfinite(obj.goal):
        out.append(Problem(f"{p}.goal", f"goal must be a finite number, got {obj.goal}"))
    if not obj.objective_metric_name:
        out.append(Problem(f"{p}.objectiveMetricName", "must be specified"))
    additional = obj.additional_metric_names or []
    if obj.objective_metric_name and obj.objective_metric_name in additional:
        out.append(
            Problem(
                f"{p}.additionalMetricNames",
                "should not contain spec.objective.objectiveMetricName",
            )
        )
    seen: set[str] = set()
    for i, metric in enumerate(additional):
        if not metric:
            out.append(Problem(f"{p}.additionalMetricNames[{i}]", "must not be empty"))
        elif metric in seen:
            out.append(
                Problem(
                    f"{p}.additionalMetricNames[{i}]",
                    f"metric name {metric} is duplicated in spec.objective.additionalMetricNames",
                )
            )
        seen.add(metric)
    known = {obj.objective_metric_name or "", *additional}
    named: set[str] = set()
    for i, strategy in enumerate(obj.metric_strategies or []):
        sp = f"{p}.metricStrategies[{i}]"
        if strategy.name not in known:
            out.append(
                Problem(
                    f"{sp}.name",
                    f"metric {strategy.name} is neither spec.objective.objectiveMetricName "
                    "nor in spec.objective.additionalMetricNames",
                )
            )
        elif strategy.name in named:
            out.append(Problem(f"{sp}.name", f"metric {strategy.name} has more than one strategy"))
        named.add(strategy.name)
        if strategy.value not in _STRATEGIES:
            out.append(
                Problem(
                    f"{sp}.value",
                    f"strategy: {strategy.value} is not supported; must be min, max or latest",
                )
            )
    return out


# --- rules 14-17 -----------------------------------------------------------------------


def _validate_algorithms(
    exp: Experiment, algorithms: Collection[str], early_stoppings: Collection[str]
) -> list[Problem]:
    out: list[Problem] = []
    alg = exp.spec.algorithm
    if alg is None:
        out.append(Problem("spec.algorithm", "must be specified"))
    elif not alg.algorithm_name:
        out.append(Problem("spec.algorithm.algorithmName", "must be specified"))
    elif alg.algorithm_name not in algorithms:
        n = alg.algorithm_name
        out.append(
            Problem(
                "spec.algorithm.algorithmName",
                f"unable to get Suggestion config data for algorithm {n}: failed to find "
                f"suggestion config for algorithm: {n} in ConfigMap: katib-config",
            )
        )
    es = exp.spec.early_stopping
    if es is not None:
        if not es.algorithm_name:
            out.append(Problem("spec.earlyStopping.algorithmName", "must be specified"))
        elif es.algorithm_name not in early_stoppings:
            n = es.algorithm_name
            out.append(
                Problem(
                    "spec.earlyStopping.algorithmName",
                    f"unable to get EarlyStopping config data for algorithm {n}: failed to "
                    f"find early stopping config for algorithm: {n} in ConfigMap: katib-config",
                )
            )
    if (exp.spec.resume_policy or "") not in _RESUME_POLICIES:
        out.append(Problem("spec.resumePolicy", "invalid ResumePolicyType"))
    return out


# --- rules 18-35 (+ unreferenced parameters, meta references) -----------------------------


def _validate_trial_parameters(exp: Experiment, tt: TrialTemplate) -> list[Problem]:
    out: list[Problem] = []
    params = tt.trial_parameters or []
    shown = _go_list(
        f"{{{t.name or ''} {t.description or ''} {t.reference or ''}}}" for t in params
    )
    names: set[str] = set()
    refs: set[str] = set()
    spec_names = [p.name for p in exp.spec.parameters or [] if p.name]
    base = "spec.trialTemplate.trialParameters"
    for i, tp in enumerate(params):
        name, ref = tp.name or "", tp.reference or ""
        if not name or not ref or "{" in name or "}" in name:
            out.append(
                Problem(
                    f"{base}[{i}]",
                    "name and reference must be specified and name must not contain '{' or '}'",
                )
            )
        if name and name in names:
            out.append(
                Problem(
                    f"{base}[{i}].name",
                    f"parameter name {name} can't be duplicated in "
                    f"spec.trialTemplate.trialParameters: {shown}",
                )
            )
        if ref and ref in refs:
            out.append(
                Problem(
                    f"{base}[{i}].reference",
                    f"parameter reference {ref} can't be duplicated in "
                    f"spec.trialTemplate.trialParameters: {shown}",
                )
            )
        names.add(name)
        refs.add(ref)
        meta = _META_REF_RE.search(ref)
        if meta is not None:
            key = meta.group(1)
            if key not in _META_KEYS and not _META_INDEXED_RE.match(key):
                out.append(
                    Problem(f"{base}[{i}].reference", f"illegal reference of trial metadata: {ref}")
                )
        elif ref and spec_names and ref not in spec_names:
            out.append(
                Problem(
                    f"{base}[{i}].reference",
                    f"parameter reference {ref} does not exist in spec.parameters: "
                    f"{_go_list(spec_names)}",
                )
            )
    for i, param in enumerate(exp.spec.parameters or []):
        if param.name and param.name not in refs:
            out.append(
                Problem(
                    f"spec.parameters[{i}].name",
                    f"parameter {param.name} is not referenced by any "
                    "spec.trialTemplate.trialParameters[*].reference; "
                    "Katib would create no trials",
                )
            )
    return out


def _validate_job(rendered: dict[str, Any], tt: TrialTemplate) -> list[Problem]:
    """A light stand-in for Katib's batch/v1 Job conversion check (rule 35)."""
    spec = rendered.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    containers = pod.get("containers") if isinstance(pod, dict) else None
    if (
        not isinstance(containers, list)
        or not containers
        or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in containers)
    ):
        return [
            Problem(
                "spec.trialTemplate.trialSpec",
                "invalid spec.trialTemplate: unable to convert to Job: "
                "spec.template.spec.containers must be a non-empty list of containers with names",
            )
        ]
    wanted = tt.primary_container_name
    if wanted and wanted not in {c["name"] for c in containers}:
        return [
            Problem(
                "spec.trialTemplate.primaryContainerName",
                f"container {wanted} not found in spec.trialTemplate.trialSpec",
            )
        ]
    return []


def _validate_template_text(text: str, tt: TrialTemplate) -> list[Problem]:
    out: list[Problem] = []
    base = "spec.trialTemplate.trialParameters"
    params = tt.trial_parameters or []
    seen: set[str] = set()
    for i, tp in enumerate(params):
        if not tp.name or "{" in tp.name or "}" in tp.name or tp.name in seen:
            continue  # already reported as an invalid or duplicate name
        seen.add(tp.name)
        ph = PLACEHOLDER % tp.name
        if ph not in text:
            out.append(
                Problem(
                    f"{base}[{i}].name",
                    f"parameter name: {tp.name} in spec.trialParameters not found in "
                    f"spec.trialTemplate: {text}",
                )
            )
        text = text.replace(ph, "test-value")
    leftover = _PLACEHOLDER_RE.findall(text)
    if leftover:
        out.append(
            Problem(
                "spec.trialTemplate",
                f"parameters: {_go_list(leftover)} in spec.trialTemplate not found in "
                f"spec.trialParameters: {_go_list(t.name or '' for t in params)}",
            )
        )
        return out
    try:
        rendered: Any = json.loads(text) if tt.trial_spec is not None else _load_yaml(text)
    except ValueError:
        rendered = None
    if not isinstance(rendered, dict):
        out.append(
            Problem(
                "spec.trialTemplate",
                f"unable to convert spec.trialTemplate: {text} to unstructured",
            )
        )
        return out
    meta = rendered.get("metadata")
    if isinstance(meta, dict) and (meta.get("name") or meta.get("namespace")):
        out.append(
            Problem(
                "spec.trialTemplate",
                "metadata.name and metadata.namespace in spec.trialTemplate must be omitted",
            )
        )
    if not rendered.get("apiVersion") or not rendered.get("kind"):
        out.append(
            Problem(
                "spec.trialTemplate", "APIVersion and Kind in spec.trialTemplate must be specified"
            )
        )
    elif rendered.get("kind") == "Job" and rendered.get("apiVersion") == "batch/v1":
        out.extend(_validate_job(rendered, tt))
    return out


def _load_yaml(text: str) -> Any:
    import yaml  # local: only configMap templates need it

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(str(err)) from err


def _validate_trial_template(
    exp: Experiment, config_map_loader: ConfigMapLoader | None
) -> list[Problem]:
    tt = exp.spec.trial_template
    if tt is None:
        return [Problem("spec.trialTemplate", "must be specified")]
    if tt.go_template is not None:
        return _validate_conditions(tt) + _validate_go_template(exp, tt, config_map_loader)
    out: list[Problem] = _validate_conditions(tt)
    p = "spec.trialTemplate"
    if not tt.primary_container_name:
        out.append(Problem(f"{p}.primaryContainerName", "must be specified"))
    has_source = tt.trial_spec is not None or tt.config_map is not None
    if has_source and (not tt.success_condition or not tt.failure_condition):
        out.append(Problem(p, "successCondition and failureCondition must be specified"))
    if tt.trial_parameters is None:  # Katib stops here too: nothing to check against
        out.append(Problem(f"{p}.trialParameters", "must be specified"))
        return out
    if tt.trial_spec is None and tt.config_map is None:
        out.append(
            Problem(
                f"{p}.TrialSource",
                "spec.trialTemplate.trialSpec or spec.trialTemplate.configMap must be specified",
            )
        )
        return out
    if tt.trial_spec is not None and tt.config_map is not None:
        out.append(
            Problem(
                p,
                "only one of spec.trialTemplate.trialSpec or spec.trialTemplate.configMap "
                "can be specified",
            )
        )
        return out
    cm = tt.config_map
    if cm is not None and not (cm.config_map_name and cm.config_map_namespace and cm.template_path):
        out.append(
            Problem(
                f"{p}.configMap",
                "configMapName, configMapNamespace and templatePath must be specified",
            )
        )
        return out
    out.extend(_validate_trial_parameters(exp, tt))
    text = template_text(tt)
    if cm is not None and config_map_loader is not None:
        assert cm.config_map_namespace and cm.config_map_name and cm.template_path
        text = config_map_loader(cm.config_map_namespace, cm.config_map_name, cm.template_path)
        if text is None:
            out.append(
                Problem(
                    p,
                    "unable to parse spec.trialTemplate: unable to find trial template in "
                    f"ConfigMap: {cm.config_map_namespace}/{cm.config_map_name} "
                    f"key {cm.template_path}",
                )
            )
    if text is not None:
        out.extend(_validate_template_text(text, tt))
    return out


def _validate_conditions(tt: TrialTemplate) -> list[Problem]:
    """Malformed GJSON is caught here, not as a trial that never leaves Running."""
    from katib.controller.conditions import check
    from katib.errors import InvalidArgumentError

    out: list[Problem] = []
    for name, expression in (
        ("successCondition", tt.success_condition),
        ("failureCondition", tt.failure_condition),
    ):
        if not expression:
            continue
        try:
            check(expression)
        except InvalidArgumentError as exc:
            out.append(Problem(f"spec.trialTemplate.{name}", str(exc)))
    return out


def _validate_go_template(
    exp: Experiment, tt: TrialTemplate, config_map_loader: ConfigMapLoader | None
) -> list[Problem]:
    """v1alpha3 `goTemplate`: one source, a template that parses and renders with sample
    values into an object with apiVersion and kind (primaryContainerName and
    trialParameters are not needed: v1alpha3 had neither)."""
    from katib.controller.templating import render_run_spec, sample_assignments
    from katib.errors import KatibError

    p = "spec.trialTemplate"
    go = tt.go_template
    assert go is not None
    if tt.trial_spec is not None or tt.config_map is not None:
        return [
            Problem(
                p,
                "only one of spec.trialTemplate.trialSpec, spec.trialTemplate.configMap or "
                "spec.trialTemplate.goTemplate can be specified",
            )
        ]
    if (go.raw_template is None) == (go.template_spec is None):
        return [
            Problem(
                f"{p}.goTemplate", "exactly one of rawTemplate or templateSpec must be specified"
            )
        ]
    ts = go.template_spec
    if ts is not None and not (ts.config_map_name and ts.config_map_namespace and ts.template_path):
        return [
            Problem(
                f"{p}.goTemplate.templateSpec",
                "configMapName, configMapNamespace and templatePath must be specified",
            )
        ]
    if ts is not None and config_map_loader is None:
        return []  # taken on trust, as configMap templates are
    fetch = None
    if ts is not None and config_map_loader is not None:
        assert ts.config_map_namespace and ts.config_map_name and ts.template_path
        text = config_map_loader(ts.config_map_namespace, ts.config_map_name, ts.template_path)
        key = ts.template_path

        def fetch(name: str, namespace: str) -> dict[str, str] | None:
            return None if text is None else {key: text}

    try:
        rendered = render_run_spec(
            exp,
            f"{exp.name or 'experiment'}-sample",
            sample_assignments(exp),
            fetch_configmap=fetch,
        )
    except KatibError as exc:
        problems = getattr(exc, "problems", None)
        return list(problems) if problems else [Problem(f"{p}.goTemplate", str(exc))]
    out: list[Problem] = []
    if not rendered.get("apiVersion") or not rendered.get("kind"):
        out.append(Problem(p, "APIVersion and Kind in spec.trialTemplate must be specified"))
    elif rendered.get("kind") == "Job" and rendered.get("apiVersion") == "batch/v1":
        out.extend(_validate_job(rendered, tt))
    if not tt.success_condition or not tt.failure_condition:
        out.append(Problem(p, "successCondition and failureCondition must be specified"))
    return out


# --- rules 36-43 (+ numeric checks) ----------------------------------------------------------


def _number(value: str, integer: bool) -> float | None:
    """Parse a bound the way the suggestion services will; None if it does not parse."""
    try:
        num = float(int(value.strip())) if integer else float(value.strip())
    except ValueError:
        return None
    return num if math.isfinite(num) else None


def _validate_numeric_space(i: int, param: ParameterSpec, ptype: str) -> list[Problem]:
    fs = param.feasible_space
    assert fs is not None
    p = f"spec.parameters[{i}].feasibleSpace"
    integer = ptype == ParameterType.INT
    kind = "an integer" if integer else "a finite number"
    out: list[Problem] = []
    if fs.list_ is not None:
        out.append(
            Problem(f"{p}.list", f"feasibleSpace.list is not supported for parameterType: {ptype}")
        )
    if not fs.min or not fs.max:
        out.append(
            Problem(
                f"{p}.max",
                f"feasibleSpace.max or feasibleSpace.min must be specified for parameterType: "
                f"{ptype}",
            )
        )
        return out
    bounds: dict[str, float] = {}
    for field in ("min", "max"):
        raw: str = getattr(fs, field)
        num = _number(raw, integer)
        if num is None:
            out.append(Problem(f"{p}.{field}", f"{field}: {raw} must be {kind} for {ptype}"))
        else:
            bounds[field] = num
    if len(bounds) == 2 and bounds["min"] >= bounds["max"]:
        out.append(Problem(p, f"min must be less than max (min: {fs.min}, max: {fs.max})"))
    if fs.step:
        step = _number(fs.step, integer)
        if step is None:
            out.append(Problem(f"{p}.step", f"step: {fs.step} must be {kind} for {ptype}"))
        elif step <= 0:
            out.append(Problem(f"{p}.step", f"step: {fs.step} must be greater than 0"))
    log = fs.distribution in (Distribution.LOG_UNIFORM, Distribution.LOG_NORMAL)
    if log and "min" in bounds and bounds["min"] <= 0:
        out.append(
            Problem(
                f"{p}.min",
                f"min: {fs.min} must be greater than 0 for distribution: {fs.distribution}",
            )
        )
    return out


def _validate_list_space(i: int, param: ParameterSpec, ptype: str) -> list[Problem]:
    fs = param.feasible_space
    assert fs is not None
    p = f"spec.parameters[{i}].feasibleSpace"
    if fs.min or fs.max or fs.step:
        return [
            Problem(
                p, f"feasibleSpace .max, .min and .step is not supported for parameterType: {ptype}"
            )
        ]
    if not fs.list_:
        return [
            Problem(f"{p}.list", f"feasibleSpace.list must not be empty for parameterType: {ptype}")
        ]
    out: list[Problem] = []
    seen: set[str] = set()
    for j, value in enumerate(fs.list_):
        if ptype == ParameterType.DISCRETE and _number(value, integer=False) is None:
            out.append(Problem(f"{p}.list[{j}]", f"discrete value {value} is not a number"))
        elif value in seen:
            out.append(
                Problem(f"{p}.list[{j}]", f"value {value} is duplicated in feasibleSpace.list")
            )
        seen.add(value)
    return out


def _validate_parameters(exp: Experiment) -> list[Problem]:
    s = exp.spec
    if s.parameters is None and s.nas_config is None:
        return [Problem("spec", "spec.parameters or spec.nasConfig must be specified")]
    if s.parameters is not None and s.nas_config is not None:
        return [Problem("spec", "only one of spec.parameters and spec.nasConfig can be specified")]
    out: list[Problem] = []
    names: set[str] = set()
    for i, param in enumerate(s.parameters or []):
        p = f"spec.parameters[{i}]"
        if not param.name:
            out.append(Problem(f"{p}.name", "must be specified"))
        elif param.name in names:
            out.append(
                Problem(
                    f"{p}.name", f"parameter name {param.name} is duplicated in spec.parameters"
                )
            )
        names.add(param.name or "")
        ptype = param.parameter_type or ""
        if ptype not in _PARAMETER_TYPES:
            out.append(Problem(f"{p}.parameterType", f"parameterType: {ptype} is not supported"))
            continue
        fs = param.feasible_space
        if fs is None or not fs.model_dump(exclude_none=True):
            out.append(Problem(f"{p}.feasibleSpace", "feasibleSpace must be specified"))
            continue
        if fs.distribution and fs.distribution not in _DISTRIBUTIONS:
            out.append(
                Problem(
                    f"{p}.feasibleSpace.distribution",
                    f"distribution: {fs.distribution} is not supported",
                )
            )
        if ptype in (ParameterType.INT, ParameterType.DOUBLE):
            out.extend(_validate_numeric_space(i, param, ptype))
        elif ptype in (ParameterType.CATEGORICAL, ParameterType.DISCRETE):
            out.extend(_validate_list_space(i, param, ptype))
    return out


# --- rules 45-56 ------------------------------------------------------------------------------


def _validate_metrics_collector(exp: Experiment) -> list[Problem]:
    mc = exp.spec.metrics_collector_spec
    if mc is None or mc.collector is None:
        return []  # defaulting always sets it
    kind = mc.collector.kind or ""
    src = mc.source
    fsp = src.file_system_path if src is not None else None
    out: list[Problem] = []
    if kind == CollectorKind.STDOUT or is_push_collector(kind):
        pass
    elif kind == CollectorKind.FILE:
        if fsp is None or fsp.kind != FileSystemKind.FILE or not posixpath.isabs(fsp.path or ""):
            out.append(
                Problem(
                    f"{MC}.source.fileSystemPath.path",
                    "file path where metrics file exists is required",
                )
            )
        fmt = fsp.format if fsp is not None else None
        if fmt not in (FileFormat.TEXT, FileFormat.JSON):
            out.append(
                Problem(
                    f"{MC}.source.fileSystemPath.format",
                    "format of metrics file is required for metrics collector",
                )
            )
        elif fmt == FileFormat.JSON and src is not None and src.filter is not None:
            out.append(
                Problem(
                    f"{MC}.source.filter", "filter must be nil when format of metrics file is json"
                )
            )
    elif kind == CollectorKind.TENSORFLOW_EVENT:
        if (
            fsp is None
            or fsp.kind != FileSystemKind.DIRECTORY
            or not posixpath.isabs(fsp.path or "")
        ):
            out.append(
                Problem(
                    f"{MC}.source",
                    "directory path where tensorflow event files exist is required by "
                    ".spec.metricsCollectorSpec.source.fileSystemPath.path",
                )
            )
        if fsp is not None and fsp.format:
            out.append(Problem(f"{MC}.source.fileSystemPath.format", "must be empty"))
    elif kind == CollectorKind.PROMETHEUS:
        http_get = (src.http_get if src is not None else None) or {}
        port = http_get.get("port")
        try:
            port_ok = not isinstance(port, bool) and int(str(port)) > 0
        except ValueError:
            port_ok = False
        if not port_ok:
            out.append(
                Problem(
                    f"{MC}.source.httpGet.port",
                    "must be a positive integer value for metrics collector kind: PrometheusMetric",
                )
            )
        path = http_get.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            out.append(
                Problem(
                    f"{MC}.source.httpGet.path",
                    "path is invalid for metrics collector kind: PrometheusMetric",
                )
            )
    elif kind == CollectorKind.CUSTOM:
        if mc.collector.custom_collector is None:
            out.append(
                Problem(
                    f"{MC}.collector.customCollector", "metrics collector kind: Custom is required"
                )
            )
        if fsp is not None and (
            not posixpath.isabs(fsp.path or "")
            or fsp.kind not in (FileSystemKind.FILE, FileSystemKind.DIRECTORY)
        ):
            out.append(
                Problem(
                    f"{MC}.source.fileSystemPath", ".spec.metricsCollectorSpec.source is invalid"
                )
            )
    else:
        out.append(Problem(f"{MC}.collector.kind", f"invalid metrics collector kind: {kind}"))
    formats = src.filter.metrics_format if src is not None and src.filter is not None else None
    for fmt_re in formats or []:
        try:
            re.compile(fmt_re)
        except re.error as err:
            out.append(Problem(f"{MC}.source.filter.metricsFormat", f"invalid filter: {err}"))
            continue
        if not _TWO_GROUPS_RE.fullmatch(fmt_re):
            out.append(
                Problem(f"{MC}.source.filter.metricsFormat", "two top subexpressions are required")
            )
    return out


# --- public -----------------------------------------------------------------------------------


def validate_experiment(
    exp: Experiment,
    *,
    algorithm_names: Collection[str] = KNOWN_ALGORITHMS,
    early_stopping_names: Collection[str] = KNOWN_EARLY_STOPPING,
    config_map_loader: ConfigMapLoader | None = None,
) -> list[Problem]:
    """Every problem with a (defaulted) Experiment on CREATE; empty when it is valid.

    ConfigMap trial templates are only checked for placeholders when `config_map_loader`
    can read them; without it they are taken on trust.
    """
    return [
        *_validate_counts(exp),
        *_validate_objective(exp),
        *_validate_algorithms(exp, algorithm_names, early_stopping_names),
        *_validate_trial_template(exp, config_map_loader),
        *_validate_parameters(exp),
        *_validate_metrics_collector(exp),
    ]


def is_completed(exp: Experiment) -> bool:
    """Succeeded or Failed is set (status True), as Katib's IsCompleted."""
    conds = exp.status.conditions if exp.status is not None else []
    return any(c.type in ("Succeeded", "Failed") and c.status == "True" for c in conds)


def is_restartable(exp: Experiment) -> bool:
    """Succeeded by reaching max trials, with a resumePolicy that keeps the suggestion state."""
    conds = exp.status.conditions if exp.status is not None else []
    max_reached = any(
        c.type == "Succeeded" and c.status == "True" and c.reason == "ExperimentMaxTrialsReached"
        for c in conds
    )
    return max_reached and exp.spec.resume_policy in (
        ResumePolicy.LONG_RUNNING,
        ResumePolicy.FROM_VOLUME,
    )


def validate_update(
    old: Experiment,
    new: Experiment,
    trials_count: int | None = None,
    completed_restartable: bool | None = None,
) -> list[Problem]:
    """Katib's UPDATE rules (1-9): only the three counts may change, and a finished
    Experiment only if it can be restarted.

    `trials_count` defaults to old.status.trials and `completed_restartable` (the old
    Experiment is completed but may be restarted) to what old.status says.
    """
    old_d, new_d = apply_defaults(old), apply_defaults(new)
    out = _validate_counts(new_d)
    old_spec = old_d.spec.to_dict()
    new_spec = new_d.spec.to_dict()
    if old_spec == new_spec:
        return out
    if trials_count is None:
        trials_count = (old.status.trials if old.status is not None else None) or 0
    if completed_restartable is None:
        completed_restartable = is_restartable(old_d)
    if is_completed(old_d) and not completed_restartable:
        out.append(Problem("spec.resumePolicy", RESTART_MESSAGE))
        return out
    if new_d.spec.max_trial_count is not None and new_d.spec.max_trial_count <= trials_count:
        out.append(Problem("spec.maxTrialCount", "must be greater than status.trials count"))
    editable = ("parallelTrialCount", "maxTrialCount", "maxFailedTrialCount")
    if {k: v for k, v in old_spec.items() if k not in editable} != {
        k: v for k, v in new_spec.items() if k not in editable
    }:
        out.append(Problem("spec", EDITABLE_MESSAGE))
    return out
