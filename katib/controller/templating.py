"""Render a trial's run spec from the Experiment's trial template (reference 3.1, 3.2).

Three template sources, one result (a dict such as a batch/v1 Job, named after the trial):

* ``trialSpec``: substitution is textual, as in Katib, but values are JSON-escaped first,
  so a value containing a quote or a backslash cannot break the document;
* ``configMap``: the text at ``data[templatePath]`` of a ConfigMap (YAML or JSON),
  substituted as plain text exactly as Katib does, then decoded;
* ``goTemplate`` (v1alpha3): ``rawTemplate`` or a ConfigMap (``templateSpec``) rendered
  with katib.controller.go_template and the data ``{Experiment, Trial, NameSpace,
  HyperParameters}``.

Where ConfigMaps come from (`resolve_trial_spec`): the ``fetch_configmap`` callable the
caller gives (the Kubernetes executor reads the cluster), else the one installed with
`use_configmap_fetcher`, else local files: the ConfigMap documents of the Experiment's
own file and of the YAML/JSON files next to it (recorded at load time, see
katib.api.loading), and of the files and directories listed in ``KATIB_CONFIGMAP_PATH``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from katib.api.models import Experiment, ParameterType
from katib.api.validation import ConfigMapLoader
from katib.errors import InvalidArgumentError, InvalidSpecError, Problem

_META = re.compile(r"^\$\{trialSpec\.(.+?)\}$")
_INDEXED = re.compile(r"^(Labels|Annotations)\[(.+)\]$")
_PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]+)\}")

#: Environment variable: ConfigMap YAML/JSON files or directories, os.pathsep-separated.
CONFIGMAP_PATH_ENV = "KATIB_CONFIGMAP_PATH"
#: Annotation where loading records the ConfigMaps found next to the Experiment file
#: (a JSON object "namespace/name" -> data), so a stored Experiment still renders locally.
LOCAL_CONFIGMAPS_ANNOTATION = "katib.kubeflow.org/local-configmaps"

ConfigMapFetcher = Callable[[str, str], "Mapping[str, str] | None"]
"""(name, namespace) -> the ConfigMap's data, or None when it does not exist."""

_installed_fetcher: ConfigMapFetcher | None = None


def use_configmap_fetcher(fetch: ConfigMapFetcher | None) -> None:
    """Install the fetcher renders use when none is passed (e.g. the Kubernetes executor's)."""
    global _installed_fetcher
    _installed_fetcher = fetch


# --- local ConfigMaps ------------------------------------------------------------------


def configmaps_in_text(text: str) -> dict[str, dict[str, str]]:
    """{"namespace/name": data} for every `kind: ConfigMap` document of a YAML/JSON text."""
    found: dict[str, dict[str, str]] = {}
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return found
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "ConfigMap":
            continue
        raw_meta = doc.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        name = str(meta.get("name") or "")
        if not name:
            continue
        namespace = str(meta.get("namespace") or "default")
        raw_data = doc.get("data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        found[f"{namespace}/{name}"] = {str(k): str(v) for k, v in data.items()}
    return found


def configmaps_in_paths(paths: Iterable[Path]) -> dict[str, dict[str, str]]:
    """ConfigMaps of the given files and of the *.yaml/*.yml/*.json files in directories."""
    found: dict[str, dict[str, str]] = {}
    for path in paths:
        files = (
            sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
            if path.is_dir()
            else [path]
        )
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if "ConfigMap" in text:
                for key, data in configmaps_in_text(text).items():
                    found.setdefault(key, data)
    return found


def env_configmaps() -> dict[str, dict[str, str]]:
    raw = os.environ.get(CONFIGMAP_PATH_ENV, "")
    return configmaps_in_paths(Path(p) for p in raw.split(os.pathsep) if p)


def local_configmap_fetcher(experiment: Experiment) -> ConfigMapFetcher:
    """ConfigMaps recorded on the Experiment at load time, then KATIB_CONFIGMAP_PATH."""
    recorded: dict[str, Any] = {}
    annotation = (experiment.metadata.annotations or {}).get(LOCAL_CONFIGMAPS_ANNOTATION)
    if annotation:
        try:
            recorded = json.loads(annotation)
        except ValueError:
            recorded = {}

    def fetch(name: str, namespace: str) -> Mapping[str, str] | None:
        key = f"{namespace}/{name}"
        data = recorded.get(key)
        if isinstance(data, dict):
            return data
        return env_configmaps().get(key)

    return fetch


# --- resolving the template text ----------------------------------------------------------


@dataclass(frozen=True)
class ResolvedTemplate:
    """The template text and how to read it: "json" (trialSpec), "yaml" (configMap), "go"."""

    text: str
    dialect: str
    path: str  # the field path errors about it are reported at


def resolve_trial_spec(
    experiment: Experiment, fetch_configmap: ConfigMapFetcher | None = None
) -> ResolvedTemplate:
    """The trial template's text, fetching a ConfigMap source when there is one."""
    tt = experiment.spec.trial_template
    base = "spec.trialTemplate"
    if tt is None:
        raise InvalidSpecError([Problem(base, "must be specified")])
    if tt.trial_spec is not None:
        return ResolvedTemplate(json.dumps(tt.trial_spec), "json", f"{base}.trialSpec")
    go = tt.go_template
    if go is not None and go.raw_template is not None:
        return ResolvedTemplate(go.raw_template, "go", f"{base}.goTemplate.rawTemplate")
    source = tt.config_map if tt.config_map is not None else go.template_spec if go else None
    path = f"{base}.configMap" if tt.config_map is not None else f"{base}.goTemplate.templateSpec"
    if source is None:
        raise InvalidSpecError(
            [Problem(base, "trialSpec, configMap or goTemplate must be specified")]
        )
    name, namespace = source.config_map_name or "", source.config_map_namespace or ""
    key = source.template_path or ""
    fetch = fetch_configmap or _installed_fetcher or local_configmap_fetcher(experiment)
    data = fetch(name, namespace)
    if data is None:
        raise InvalidSpecError(
            [
                Problem(
                    path,
                    f"unable to parse spec.trialTemplate: configMap not found: "
                    f"{namespace}/{name} (locally: put the ConfigMap in the Experiment's "
                    f"file or next to it, or list its file in {CONFIGMAP_PATH_ENV})",
                )
            ]
        )
    if key not in data:
        raise InvalidSpecError(
            [
                Problem(
                    path,
                    f"unable to find trial template in ConfigMap: {namespace}/{name} key {key} "
                    f"(keys: {', '.join(sorted(data)) or 'none'})",
                )
            ]
        )
    dialect = "go" if go is not None and tt.config_map is None else "yaml"
    return ResolvedTemplate(data[key], dialect, path)


# --- rendering -----------------------------------------------------------------------------


def _meta_value(key: str, template: Mapping[str, Any], trial_name: str, namespace: str) -> str:
    simple = {
        "Name": trial_name,
        "Namespace": namespace,
        "Kind": str(template.get("kind", "")),
        "APIVersion": str(template.get("apiVersion", "")),
    }
    if key in simple:
        return simple[key]
    indexed = _INDEXED.match(key)
    if indexed:
        section = "labels" if indexed.group(1) == "Labels" else "annotations"
        values = (template.get("metadata") or {}).get(section) or {}
        if indexed.group(2) in values:
            return str(values[indexed.group(2)])
        raise InvalidSpecError(
            [
                Problem(
                    "spec.trialTemplate.trialSpec.metadata." + section,
                    f"{indexed.group(2)} not found in trialSpec metadata {section}",
                )
            ]
        )
    raise InvalidSpecError(
        [
            Problem(
                "spec.trialTemplate.trialParameters", f"illegal reference of trial metadata: {key}"
            )
        ]
    )


def _decode(text: str, dialect: str, path: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if dialect == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (rendered line {mark.line + 1})" if mark is not None else ""
        raise InvalidSpecError(
            [Problem(path, f"the rendered template is not valid YAML/JSON{where}: {exc}")]
        ) from None
    if not isinstance(value, dict):
        raise InvalidSpecError([Problem(path, "the rendered template is not a mapping")])
    return value


def _go_assignments(
    experiment: Experiment, assignments: Mapping[str, str]
) -> list[tuple[str, str]]:
    """The assignments in the Experiment's parameter order (then any others)."""
    order = [p.name for p in experiment.spec.parameters or [] if p.name and p.name in assignments]
    order += [name for name in assignments if name not in order]
    return [(name, str(assignments[name])) for name in order]


def render_run_spec(
    experiment: Experiment,
    trial_name: str,
    assignments: Mapping[str, str],
    *,
    fetch_configmap: ConfigMapFetcher | None = None,
) -> dict[str, Any]:
    """The rendered object (e.g. a batch/v1 Job) for one trial, named after the trial."""
    template = experiment.spec.trial_template
    if template is None:
        raise InvalidSpecError([Problem("spec.trialTemplate", "must be specified")])
    resolved = resolve_trial_spec(experiment, fetch_configmap)
    namespace = experiment.namespace
    if resolved.dialect == "go":
        from katib.controller.go_template import render, trial_data

        data = trial_data(
            experiment.name, trial_name, namespace, _go_assignments(experiment, assignments)
        )
        try:
            text = render(resolved.text, data)
        except InvalidArgumentError as exc:
            raise InvalidSpecError([Problem(resolved.path, str(exc))]) from None
        rendered = _decode(text, "yaml", resolved.path)
    else:
        shape = template.trial_spec or {}
        if resolved.dialect == "yaml":
            shape = _decode(_PLACEHOLDER.sub("x", resolved.text), "yaml", resolved.path)
        values: dict[str, str] = {}
        for param in template.trial_parameters or []:
            reference = param.reference or ""
            meta = _META.match(reference)
            if meta:
                values[param.name or ""] = _meta_value(meta.group(1), shape, trial_name, namespace)
            elif reference in assignments:
                values[param.name or ""] = assignments[reference]
            else:
                raise InvalidSpecError(
                    [
                        Problem(
                            "spec.trialTemplate.trialParameters",
                            f"unable to find parameter {reference} in the trial's assignments",
                        )
                    ]
                )
        escape = resolved.dialect == "json"

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                return match.group(0)
            return json.dumps(values[name])[1:-1] if escape else values[name]

        rendered = _decode(
            _PLACEHOLDER.sub(substitute, resolved.text), resolved.dialect, resolved.path
        )
    metadata = rendered.get("metadata")
    if not isinstance(metadata, dict):
        metadata = rendered["metadata"] = {}
    metadata["name"] = trial_name
    metadata["namespace"] = namespace
    return rendered


# --- sample values (render CLI, validation of go templates) ---------------------------------


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if text not in ("-0",) else "0"


def sample_value(
    parameter_type: str | None, minimum: str | None, maximum: str | None, values: list[str] | None
) -> str:
    """A representative value: the midpoint of a range, the first of a list."""
    if parameter_type in (ParameterType.CATEGORICAL, ParameterType.DISCRETE) or values:
        return str(values[0]) if values else ""
    try:
        low, high = Decimal(str(minimum)), Decimal(str(maximum))
    except (InvalidOperation, ValueError):
        return str(minimum or maximum or "")
    if parameter_type == ParameterType.INT:
        return str(int((low + high) // 2))
    return _plain((low + high) / 2)


def sample_assignments(experiment: Experiment) -> dict[str, str]:
    """One sample value per parameter of the Experiment (see `sample_value`)."""
    out: dict[str, str] = {}
    for param in experiment.spec.parameters or []:
        space = param.feasible_space
        out[param.name or ""] = sample_value(
            str(param.parameter_type or ""),
            space.min if space else None,
            space.max if space else None,
            space.list_ if space else None,
        )
    return out


# --- containers ------------------------------------------------------------------------------


def find_container(run_spec: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The container called `name` anywhere in the object (Job, TFJob replicas, TrainJob...).

    An empty `name` (v1alpha3 goTemplates had no primaryContainerName) means the first
    container in document order.
    """
    if not name:
        return _first_container(run_spec)
    stack: list[Any] = [run_spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            containers = node.get("containers")
            if isinstance(containers, list):
                for container in containers:
                    if isinstance(container, dict) and container.get("name") == name:
                        return container
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _first_container(node: Any) -> dict[str, Any] | None:
    if isinstance(node, dict):
        containers = node.get("containers")
        if isinstance(containers, list):
            for container in containers:
                if isinstance(container, dict):
                    return container
        for value in node.values():
            found = _first_container(value)
            if found is not None:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _first_container(value)
            if found is not None:
                return found
    return None


# --- local ConfigMaps and v1alpha3 defaults, for katib.api.loading ---------------------------


def local_configmaps(text: str, path: Path | None) -> dict[str, dict[str, str]]:
    """ConfigMaps in the Experiment's own text, in the files next to it, then in the files
    KATIB_CONFIGMAP_PATH lists (the first one found under a name wins)."""
    found = configmaps_in_text(text)
    if path is not None:
        directory = path.resolve().parent
        for key, data in configmaps_in_paths([directory]).items():
            found.setdefault(key, data)
    for key, data in env_configmaps().items():
        found.setdefault(key, data)
    return found


def configmap_loader(configmaps: Mapping[str, Mapping[str, str]]) -> ConfigMapLoader:
    """A katib.api.validation.ConfigMapLoader over {"namespace/name": data}."""

    def load(namespace: str, name: str, key: str) -> str | None:
        data = configmaps.get(f"{namespace}/{name}")
        return None if data is None else data.get(key)

    return load


def record_local_configmap(exp: Experiment, configmaps: Mapping[str, Mapping[str, str]]) -> None:
    """Keep the ConfigMap a template names on the Experiment, so it renders once stored."""
    tt = exp.spec.trial_template
    source = tt.config_map if tt is not None else None
    if tt is not None and source is None and tt.go_template is not None:
        source = tt.go_template.template_spec
    if source is None:
        return
    key = f"{source.config_map_namespace}/{source.config_map_name}"
    if key in configmaps:
        annotations = dict(exp.metadata.annotations or {})
        annotations[LOCAL_CONFIGMAPS_ANNOTATION] = json.dumps({key: dict(configmaps[key])})
        exp.metadata.annotations = annotations


def default_go_template(exp: Experiment, config_map_loader: ConfigMapLoader | None) -> None:
    """Katib's per-kind defaults for a goTemplate, from its kind once rendered with sample
    values (a template that does not render is reported by validation instead)."""
    from katib.api.defaults import (
        KUBEFLOW_JOB_KINDS,
        KUBEFLOW_PRIMARY_POD_LABELS,
        TRAINJOB_PRIMARY_POD_LABELS,
    )
    from katib.controller.conditions import default_conditions
    from katib.errors import KatibError

    tt = exp.spec.trial_template
    assert tt is not None

    def fetch(name: str, namespace: str) -> dict[str, str] | None:
        spec = tt.go_template.template_spec if tt.go_template else None
        key = spec.template_path if spec else None
        text = config_map_loader(namespace, name, key or "") if config_map_loader else None
        return None if text is None or key is None else {key: text}

    try:
        rendered = render_run_spec(
            exp, "trial-sample", sample_assignments(exp), fetch_configmap=fetch
        )
    except KatibError:
        return
    kind = str(rendered.get("kind") or "")
    try:
        success, failure = default_conditions(str(rendered.get("apiVersion") or ""), kind)
    except KatibError:
        return
    tt.success_condition = tt.success_condition or success
    tt.failure_condition = tt.failure_condition or failure
    if tt.primary_pod_labels is None and kind in KUBEFLOW_JOB_KINDS:
        tt.primary_pod_labels = dict(KUBEFLOW_PRIMARY_POD_LABELS)
    elif tt.primary_pod_labels is None and kind == "TrainJob":
        tt.primary_pod_labels = dict(TRAINJOB_PRIMARY_POD_LABELS)
